#!/usr/bin/env python3
"""Load for benches/serve.sh: concurrent streaming completions against an
OpenAI-compatible server (phiq serve or llama-server), standard library only.

  serve_load.py URL streams N_STREAMS MAX_TOKENS   -> aggregate generated tok/s
  serve_load.py URL ttft PROMPT_TOKENS BACKGROUND  -> time to first token of a long
                                                      prompt while BACKGROUND streams run
Prints one JSON object. With BIAS=FILE, every request carries that JSON as its
logit_bias (benches/utf8_bans.py). A stream that fails stops the run with its error.
"""
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse


BIAS = json.load(open(os.environ["BIAS"])) if os.environ.get("BIAS") else None


def fail(why):
    print(f"serve_load.py: {why}", file=sys.stderr, flush=True)
    os._exit(1)


def stream(url, body, on_first=None):
    """Streams one completion; returns (tokens counted from usage, first-token time)."""
    u = urllib.parse.urlparse(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=3600)
    body = dict(body, stream=True, stream_options={"include_usage": True})
    if BIAS:
        body["logit_bias"] = BIAS
    c.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        fail(f"HTTP {r.status}: {r.read()[:300]!r}")
    first, tokens, buf = None, 0, b""
    while True:
        line = r.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data: "):
            continue
        data = line[6:]
        if data == b"[DONE]":
            break
        v = json.loads(data)
        if "error" in v:
            fail(f"the stream failed: {v['error']}")
        if v.get("usage"):
            tokens = v["usage"]["completion_tokens"]
        for ch in v.get("choices", []):
            if first is None and (ch.get("text") or (ch.get("delta") or {}).get("content")):
                first = time.perf_counter()
                if on_first:
                    on_first()
    c.close()
    return tokens, first


def streams(url, n, max_tokens):
    results = [None] * n
    def run(i):
        prompt = f"Story {i}: once upon a time"
        results[i] = stream(url, {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.8, "seed": i})
    start = time.perf_counter()
    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - start
    total = sum(r[0] for r in results)
    return {"streams": n, "tokens": total, "seconds": wall, "tok_per_s": total / wall}


def ttft(url, prompt_tokens, background):
    stop = threading.Event()
    started = threading.Barrier(background + 1)
    def bg(i):
        stream(url, {"prompt": f"Background {i}:", "max_tokens": 100000, "temperature": 0.8, "seed": i},
               on_first=started.wait)
    ts = [threading.Thread(target=bg, args=(i,), daemon=True) for i in range(background)]
    for t in ts:
        t.start()
    if background:
        started.wait()
    # "the" is one token in GPT-2's vocabulary, " the" too: prompt_tokens tokens,
    # the first one different in every run (RUN) so no server reuses a cached one.
    first = ["the", "a", "an", "one", "two", "three", "four", "five"][int(os.environ.get("RUN", "0")) % 8]
    prompt = first + " the" * (prompt_tokens - 1)
    t0 = time.perf_counter()
    _, first = stream(url, {"prompt": prompt, "max_tokens": 4, "temperature": 0})
    stop.set()
    return {"prompt_tokens": prompt_tokens, "background": background, "ttft_s": first - t0}


if __name__ == "__main__":
    url, mode, a, b = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    out = streams(url, a, b) if mode == "streams" else ttft(url, a, b)
    print(json.dumps(out))
    sys.stdout.flush()
    import os
    os._exit(0)  # background streams of the ttft mode end with the server
