"""Small fuzz seeds written by gguf-py (llama.cpp's own GGUF library), beside the ones
phiq's writer makes (`cargo run --example fuzz_seeds -- fuzz/seeds`).

    .venv/bin/python fuzz/gguf_py_seeds.py fuzz/seeds
"""

import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T, GGUFValueType as V


def small(path, alignment):
    rng = np.random.default_rng(11)
    w = gguf.GGUFWriter(path, arch="phi2")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    w.add_name("gguf-py seed")
    w.add_context_length(2048)
    w.add_block_count(2)
    w.add_layer_norm_eps(1e-5)
    w.add_bool("t.bool", True)
    w.add_key_value("t.arr_i64", [-1, 2**40], V.ARRAY, sub_type=V.INT64)
    w.add_array("t.nested", [["a", "b"], ["c"]])
    w.add_array("tokenizer.ggml.tokens", ["<|endoftext|>", "a", "b", "Ġthe"])
    w.add_tensor("token_embd.weight", rng.standard_normal((4, 32)).astype(np.float16))
    x = rng.standard_normal((2, 64)).astype(np.float32)
    w.add_tensor("blk.0.attn_qkv.weight", gguf.quants.quantize(x, T.Q8_0), raw_dtype=T.Q8_0)
    w.add_tensor("blk.0.attn_qkv.bias", rng.standard_normal(5).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def metadata_only(path):
    w = gguf.GGUFWriter(path, arch="phi2")
    w.add_uint8("t.u8", 1)
    w.add_int16("t.i16", -2)
    w.add_float64("t.f64", 0.1)
    w.add_string("t.s", "")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    out = sys.argv[1]
    small(os.path.join(out, "gguf_py_align64.gguf"), 64)
    small(os.path.join(out, "gguf_py_align32.gguf"), None)
    metadata_only(os.path.join(out, "gguf_py_metadata.gguf"))
