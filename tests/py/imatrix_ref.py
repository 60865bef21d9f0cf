#!/usr/bin/env python3
"""An independent check of `phiq imatrix` for tests/imatrix.rs: the importance matrix
re-derived with numpy from activations dumped by the test's f64 reference model, and
both of llama.cpp's file formats read here (GGUF with gguf-py, the legacy .dat by hand,
after llama.cpp's common/imatrix-loader.cpp).

    imatrix_ref.py check IM.gguf IM.dat DUMP_DIR CHUNK DATASET
        DUMP_DIR holds `<layer>.<kind>.f64`: float64 rows [tokens][columns] of the inputs
        of layer <layer>'s products, kind qkv_up (attn_q/k/v and ffn_up read it),
        attn_output, ffn_down; CHUNK is the tokens per chunk.
"""
import pathlib
import struct
import sys

import numpy as np
from gguf import GGUFReader

READERS = {
    "qkv_up": ["attn_q", "attn_k", "attn_v", "ffn_up"],
    "attn_output": ["attn_output"],
    "ffn_down": ["ffn_down"],
}


def close(got, want, what):
    got = np.asarray(got, dtype=np.float64)
    tol = 2e-5 * np.abs(want) + 1e-7 * np.abs(want).max()
    bad = np.abs(got - want) > tol
    if bad.any():
        i = int(np.argmax(np.abs(got - want) - tol))
        sys.exit(f"{what}: column {i}: {got[i]!r} vs numpy {want[i]!r} ({bad.sum()} columns off)")


def read_dat(path):
    """llama.cpp's legacy reader: entries, chunk count, dataset."""
    b = pathlib.Path(path).read_bytes()
    at = 0

    def i32():
        nonlocal at
        (v,) = struct.unpack_from("<i", b, at)
        at += 4
        return v

    entries = {}
    for _ in range(i32()):
        n = i32()
        name = b[at:at + n].decode()
        at += n
        ncall, nval = i32(), i32()
        vals = np.frombuffer(b, dtype="<f4", count=nval, offset=at)
        at += 4 * nval
        entries[name] = (ncall, vals)
    chunks = i32()
    n = i32()
    dataset = b[at:at + n].decode()
    at += n
    assert at == len(b), f"{path}: {len(b) - at} trailing bytes"
    return entries, chunks, dataset


def main():
    cmd, gguf_path, dat_path, dump_dir, chunk, dataset = sys.argv[1:]
    assert cmd == "check"
    chunk = int(chunk)
    want = {}
    for f in sorted(pathlib.Path(dump_dir).glob("*.f64")):
        layer, kind = f.stem.split(".")
        raw = np.fromfile(f, dtype="<f8")
        for name in READERS[kind]:
            want[f"blk.{layer}.{name}.weight"] = raw
    r = GGUFReader(gguf_path)
    meta = {f.name: f.contents() for f in r.fields.values() if not f.name.startswith("GGUF.")}
    assert meta["general.type"] == "imatrix", meta
    assert meta["imatrix.chunk_size"] == chunk, meta
    assert meta["imatrix.datasets"] == [dataset], meta
    tensors = {t.name: np.array(t.data, dtype=np.float64).reshape(-1) for t in r.tensors}
    names = sorted({n.rsplit(".", 1)[0] for n in tensors})
    assert names == sorted(want), f"entries {names} vs {sorted(want)}"
    tokens = None
    sums = {}
    for name in names:
        counts = tensors[f"{name}.counts"]
        cols = tensors[f"{name}.in_sum2"].size
        x = want[name].reshape(-1, cols)
        assert counts.tolist() == [x.shape[0]], f"{name}: counts {counts} vs {x.shape[0]} rows"
        tokens = x.shape[0]
        sums[name] = (x * x).sum(axis=0)
        close(tensors[f"{name}.in_sum2"], sums[name], f"{gguf_path}: {name}")
    assert meta["imatrix.chunk_count"] == tokens // chunk, meta
    entries, chunks, ds = read_dat(dat_path)
    assert chunks == tokens // chunk and ds == dataset, (chunks, ds)
    assert sorted(entries) == names, sorted(entries)
    for name in names:
        ncall, vals = entries[name]
        assert ncall == -(-tokens // chunk), f"{name}: ncall {ncall}"
        close(vals, sums[name] / tokens * ncall, f"{dat_path}: {name}")
    print(f"{len(names)} entries over {tokens} tokens agree")


if __name__ == "__main__":
    main()
