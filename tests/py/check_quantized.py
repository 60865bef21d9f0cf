"""Checks a phiq-quantize output against gguf-py, independently of phiq.

    check_quantized.py CHECKPOINT_DIR FILE.gguf OUT_DIR

Reads the Hugging Face weights with numpy (today's tensor names), reads the GGUF with
gguf-py's GGUFReader, and for every tensor:
  - types gguf-py can quantize (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): quantizes the
    source weights with gguf.quants.quantize and compares the bytes;
  - K-quants: dequantizes the GGUF's bytes with gguf.quants.dequantize and writes the f32 values
    to OUT_DIR/NAME.f32, for the caller to compare with phiq's own dequantization.
Prints a JSON list: {"name", "type", "shape", "equal"} or {"name", "type", "shape", "dequantized"}.
"""

import json
import os
import struct
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

QUANTIZABLE = {T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0}


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        buf = np.frombuffer(raw[base + a:base + b], dtype=np.uint8)
        if info["dtype"] == "F32":
            x = buf.view(np.float32)
        elif info["dtype"] == "F16":
            x = buf.view(np.float16).astype(np.float32)
        elif info["dtype"] == "BF16":
            x = (buf.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f"{name}: dtype {info['dtype']}")
        out[name] = x.reshape(info["shape"])
    return out


def read_checkpoint(folder):
    weights = {}
    for f in sorted(os.listdir(folder)):
        if f.endswith(".safetensors"):
            weights.update(read_safetensors(os.path.join(folder, f)))
    return weights


GLOBAL = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.final_layernorm",
    "output": "lm_head",
}
PER_LAYER = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.dense",
    "ffn_up": "mlp.fc1",
    "ffn_down": "mlp.fc2",
}


def hf_name(gguf_name):
    stem, suffix = gguf_name.rsplit(".", 1)
    if stem.startswith("blk."):
        _, layer, base = stem.split(".", 2)
        return f"model.layers.{layer}.{PER_LAYER[base]}.{suffix}"
    return f"{GLOBAL[stem]}.{suffix}"


def main(folder, gguf_path, out_dir):
    weights = read_checkpoint(folder)
    reader = gguf.GGUFReader(gguf_path)
    results = []
    for t in reader.tensors:
        qtype = T(t.tensor_type)
        shape = [int(d) for d in t.shape]
        entry = {"name": t.name, "type": qtype.name, "shape": shape}
        if qtype in QUANTIZABLE:
            src = weights[hf_name(t.name)].astype(np.float32)
            src = src.reshape(-1, shape[0])
            expected = gguf.quants.quantize(src, qtype)
            entry["equal"] = bytes(np.ascontiguousarray(expected).tobytes()) == bytes(t.data.tobytes())
        else:
            values = gguf.quants.dequantize(t.data, qtype).astype(np.float32)
            path = os.path.join(out_dir, t.name + ".f32")
            values.tofile(path)
            entry["dequantized"] = path
        results.append(entry)
    print(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:4])
