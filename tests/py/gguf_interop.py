"""GGUF interoperability with gguf-py, llama.cpp's own Python GGUF library.

    gguf_interop.py write OUT.gguf     write a GGUF with every metadata type and tensors of
                                       many ggml types; print what was written as JSON
    gguf_interop.py read IN.gguf       read a GGUF with gguf-py's GGUFReader; print it as JSON

The JSON both ways: {"alignment", "metadata": {key: {"types": [...], "value": ...}},
"tensors": [{"name", "type", "shape", "data": hex}]}. Metadata types are the chain gguf-py
reports (["array", "array", "int32"] for a nested array) and array values are flattened, as
GGUFReader.contents() gives them. Floats are printed as their bit patterns, so the comparison
is exact.
"""

import json
import struct
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T, GGUFValueType as V

TYPE_NAMES = {
    V.UINT8: "uint8", V.INT8: "int8", V.UINT16: "uint16", V.INT16: "int16",
    V.UINT32: "uint32", V.INT32: "int32", V.FLOAT32: "float32", V.BOOL: "bool",
    V.STRING: "string", V.ARRAY: "array", V.UINT64: "uint64", V.INT64: "int64",
    V.FLOAT64: "float64",
}


def scalar_json(v, vtype):
    # Floats as bit patterns: exact, and NaN-safe.
    if vtype == V.FLOAT32:
        return "f32:%08x" % struct.unpack("<I", struct.pack("<f", v))[0]
    if vtype == V.FLOAT64:
        return "f64:%016x" % struct.unpack("<Q", struct.pack("<d", v))[0]
    if vtype == V.BOOL:
        return bool(v)
    return v


def write(path):
    rng = np.random.default_rng(7)
    w = gguf.GGUFWriter(path, arch="phi2")  # adds general.architecture first
    w.add_uint8("test.u8", 255)
    w.add_int8("test.i8", -128)
    w.add_uint16("test.u16", 65535)
    w.add_int16("test.i16", -32768)
    w.add_uint32("test.u32", 4294967295)
    w.add_int32("test.i32", -2147483648)
    w.add_float32("test.f32", -1.25e-7)
    w.add_uint64("test.u64", 18446744073709551615)
    w.add_int64("test.i64", -9223372036854775808)
    w.add_float64("test.f64", 3.141592653589793)
    w.add_bool("test.bool_true", True)
    w.add_bool("test.bool_false", False)
    w.add_string("test.string", "héllo wörld ✓ \u0000 nul inside")
    w.add_array("test.arr_i32", [1, -2, 3])
    w.add_key_value("test.arr_u8", [0, 1, 255], V.ARRAY, sub_type=V.UINT8)
    w.add_key_value("test.arr_f64", [0.5, -1e300], V.ARRAY, sub_type=V.FLOAT64)
    w.add_key_value("test.arr_f32", [0.25, -3.5], V.ARRAY, sub_type=V.FLOAT32)
    w.add_key_value("test.arr_bool", [True, False, True], V.ARRAY, sub_type=V.BOOL)
    w.add_array("test.arr_str", ["a", "", "ünïcode", "Ġthe"])
    w.add_array("test.nested", [[1, 2], [3, 4, 5]])
    w.add_uint32("phi2.context_length", 2048)
    w.add_float32("phi2.attention.layer_norm_epsilon", 1e-5)
    w.add_array("tokenizer.ggml.tokens", ["tok%d" % i for i in range(100)])

    rows = 3
    tensors = []

    def add(name, arr, raw_dtype=None):
        w.add_tensor(name, arr, raw_dtype=raw_dtype)
        tensors.append(name)

    add("f32", rng.standard_normal((rows, 64)).astype(np.float32))
    add("f16", rng.standard_normal((rows, 64)).astype(np.float16))
    add("i8", rng.integers(-128, 127, (5,), dtype=np.int8))
    add("i16", rng.integers(-30000, 30000, (2, 3), dtype=np.int16))
    add("i32", rng.integers(-2**31, 2**31 - 1, (7,), dtype=np.int32))
    add("i64", rng.integers(-2**62, 2**62, (3,), dtype=np.int64))
    add("f64", rng.standard_normal((2, 2, 2)).astype(np.float64))
    x = rng.standard_normal((rows, 256)).astype(np.float32)
    for qt in (T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0):
        add("q_" + qt.name.lower(), gguf.quants.quantize(x, qt), raw_dtype=qt)
    # Types gguf-py cannot quantize: random blocks, which a container must carry untouched.
    for qt in (T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_NL, T.IQ4_XS, T.TQ2_0, T.MXFP4):
        block, size = gguf.GGML_QUANT_SIZES[qt]
        raw = rng.integers(0, 256, (rows, 256 // block * size), dtype=np.uint8)
        add("q_" + qt.name.lower(), raw, raw_dtype=qt)
    # A 4-D tensor and a scalar-like one.
    add("four_d", rng.standard_normal((2, 3, 1, 32)).astype(np.float32))
    add("one", np.array([42.0], dtype=np.float32))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    read(path)


def field_json(field):
    types = [TYPE_NAMES[t] for t in field.types]
    main = field.types[0]
    if main == V.ARRAY:
        sub = field.types[-1]
        values = field.contents()
        value = [scalar_json(v, sub) for v in values] if sub != V.ARRAY else values
    else:
        value = scalar_json(field.contents(), main)
    return {"types": types, "value": value}


def read(path):
    r = gguf.GGUFReader(path)
    metadata = {}
    for name, field in r.fields.items():
        if name.startswith("GGUF."):  # the reader's own pseudo-fields
            continue
        metadata[name] = field_json(field)
    tensors = []
    for t in r.tensors:
        tensors.append({
            "name": t.name,
            "type": T(t.tensor_type).name,
            "shape": [int(d) for d in t.shape],
            "data": np.ascontiguousarray(t.data).tobytes().hex(),
        })
    print(json.dumps({"alignment": int(r.alignment), "metadata": metadata, "tensors": tensors}))


if __name__ == "__main__":
    cmd, path = sys.argv[1], sys.argv[2]
    {"write": write, "read": read}[cmd](path)
