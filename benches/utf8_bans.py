#!/usr/bin/env python3
"""benches/utf8_bans.py MODEL.gguf: the logit_bias that bans every token whose bytes
are not valid UTF-8 on their own, as JSON ({"id": -100, ...}).

Why: llama-server (b10470) fails a stream with a 500 ("does not match the expected
Content-only format") once the generated text holds bytes that are not UTF-8, which a
random-weight model produces within a few tokens. benches/serve.sh sends this
logit_bias to both servers, so both sample from the same valid tokens. Needs gguf-py
(.venv, scripts/setup-python.sh).
"""
import json
import sys

from gguf import GGUFReader


def byte_decoder():
    """GPT-2's byte-level BPE alphabet: the character standing for each byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def main():
    r = GGUFReader(sys.argv[1])
    f = r.fields["tokenizer.ggml.tokens"]
    dec = byte_decoder()
    bans = {}
    for i, idx in enumerate(f.data):
        piece = bytes(f.parts[idx]).decode("utf-8")
        if not all(c in dec for c in piece):
            continue  # an added or special token, written as text
        try:
            bytes(dec[c] for c in piece).decode("utf-8")
        except UnicodeDecodeError:
            bans[str(i)] = -100
    json.dump(bans, sys.stdout)


if __name__ == "__main__":
    main()
