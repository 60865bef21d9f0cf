#!/usr/bin/env python3
"""gguf-py as an independent reference for phiq's quantizers and dequantizers.

Usage:
    quant_ref.py quantize   NAME in.f32 out.bin   [more jobs ...]
    quant_ref.py dequantize NAME in.bin out.f32   [more jobs ...]

NAME is a ggml type name as gguf-py spells it (F16, BF16, Q4_0, Q6_K, ...). in.f32 and
out.f32 are raw little-endian float32; in.bin and out.bin are the type's raw row bytes.
The input is one row: blocks are independent, so callers concatenate all their cases.
Several jobs may follow each other in one call, to pay numpy's import only once.
"""

import sys

import numpy as np
from gguf import GGMLQuantizationType
from gguf.quants import dequantize, quantize

JOB_ARGS = 4


def qtype(name: str) -> GGMLQuantizationType:
    try:
        return GGMLQuantizationType[name]
    except KeyError:
        sys.exit(f"quant_ref.py: unknown type {name!r}")


def run_job(op: str, name: str, src: str, dst: str) -> None:
    ty = qtype(name)
    # Casting NaN or infinity to integers is what ggml does in the cases tested; numpy
    # would warn about every one of them.
    with np.errstate(all="ignore"):
        if op == "quantize":
            data = np.fromfile(src, dtype="<f4")
            out = quantize(data, ty)
        elif op == "dequantize":
            data = np.fromfile(src, dtype=np.uint8)
            out = dequantize(data, ty).astype("<f4", copy=False)
        else:
            sys.exit(f"quant_ref.py: unknown operation {op!r}")
    np.ascontiguousarray(out).tofile(dst)


def main(argv: list[str]) -> None:
    if not argv or len(argv) % JOB_ARGS != 0:
        sys.exit(__doc__)
    for i in range(0, len(argv), JOB_ARGS):
        job = argv[i : i + JOB_ARGS]
        try:
            run_job(*job)
        except (ValueError, NotImplementedError) as e:
            # gguf-py's refusals (wrong length, no quantizer for the type) as one line.
            sys.exit(f"quant_ref.py: {' '.join(job[:2])}: {type(e).__name__} {e}")


if __name__ == "__main__":
    main(sys.argv[1:])
