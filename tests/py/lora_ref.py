#!/usr/bin/env python3
"""An independent LoRA reference for quantize/tests/lora.rs, numpy only (the
safetensors format is read and written here by hand, not by phiq's reader).

    lora_ref.py make BASE_DIR OUT_DIR SPEC_JSON
        a PEFT-format adapter with random factors for the Phi-2 checkpoint in
        BASE_DIR; SPEC_JSON: {"layout": "hub"|"msft", "modules": [...], "r": R,
        "alpha": A, "rslora": bool, "bias": bool, "seed": N, "save": [...]}
        ("save": modules stored whole, PEFT's modules_to_save)
    lora_ref.py merge BASE_DIR OUT_DIR ADAPTER_DIR:SCALE...
        BASE_DIR's checkpoint with the adapters merged in order, W + s * B @ A in
        float32 (a fused Wqkv and split q/k/v meet by rows), written as one float32
        model.safetensors beside copies of the other files.
"""
import json
import pathlib
import shutil
import sys

import numpy as np

HUB = {
    "q_proj": "model.layers.{}.self_attn.q_proj",
    "k_proj": "model.layers.{}.self_attn.k_proj",
    "v_proj": "model.layers.{}.self_attn.v_proj",
    "dense": "model.layers.{}.self_attn.dense",
    "fc1": "model.layers.{}.mlp.fc1",
    "fc2": "model.layers.{}.mlp.fc2",
}
MSFT = {
    "Wqkv": "transformer.h.{}.mixer.Wqkv",
    "out_proj": "transformer.h.{}.mixer.out_proj",
    "fc1": "transformer.h.{}.mlp.fc1",
    "fc2": "transformer.h.{}.mlp.fc2",
}
GLOBAL = {
    "hub": {"lm_head": "lm_head", "embed_tokens": "model.embed_tokens"},
    "msft": {"lm_head": "lm_head.linear", "wte": "transformer.embd.wte"},
}


def read_safetensors(path):
    raw = pathlib.Path(path).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        data = raw[8 + n + a : 8 + n + b]
        dt = info["dtype"]
        if dt == "F32":
            x = np.frombuffer(data, "<f4")
        elif dt == "F16":
            x = np.frombuffer(data, "<f2").astype(np.float32)
        elif dt == "BF16":
            x = (np.frombuffer(data, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise SystemExit(f"{path}: {name}: dtype {dt}")
        out[name] = x.reshape(info["shape"]).astype(np.float32)
    return out


def write_safetensors(path, tensors):
    header, blobs, at = {}, [], 0
    for name, x in tensors.items():
        b = np.ascontiguousarray(x, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(x.shape), "data_offsets": [at, at + len(b)]}
        blobs.append(b)
        at += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    pathlib.Path(path).write_bytes(len(h).to_bytes(8, "little") + h + b"".join(blobs))


def base_tensors(base):
    base = pathlib.Path(base)
    index = base / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    out = {}
    for f in files:
        out.update(read_safetensors(base / f))
    return out


def module_names(spec, n_layers):
    layout = spec["layout"]
    per_layer = HUB if layout == "hub" else MSFT
    names = []
    for m in spec["modules"]:
        if m in GLOBAL[layout]:
            names.append(GLOBAL[layout][m])
        elif m in HUB or m in MSFT:
            table = HUB if m in HUB and (layout == "hub" or m not in MSFT) else MSFT
            names += [table[m].format(l) for l in range(n_layers)]
        else:
            raise SystemExit(f"unknown module {m}")
    return names


def dims(base):
    """(layers, hidden, heads, kv heads) from either layout's config.json."""
    c = json.loads((pathlib.Path(base) / "config.json").read_text())
    get = lambda *keys: next(c[k] for k in keys if c.get(k) is not None)
    heads = get("num_attention_heads", "n_head")
    kv = c.get("num_key_value_heads") or c.get("n_head_kv") or heads
    return get("num_hidden_layers", "n_layer"), get("hidden_size", "n_embd"), heads, kv


def shape_of(base, module):
    """[out, in] of a module, from config.json (the weights are not read: a full-size
    base is 5.6 GB)."""
    c = json.loads((pathlib.Path(base) / "config.json").read_text())
    _, d, heads, kv = dims(base)
    ffn = c.get("intermediate_size") or c.get("n_inner") or 4 * d
    kv_rows = d // heads * kv
    leaf = module.rsplit(".", 1)[-1]
    shapes = {
        "Wqkv": (d + 2 * kv_rows, d), "q_proj": (d, d), "k_proj": (kv_rows, d),
        "v_proj": (kv_rows, d), "dense": (d, d), "out_proj": (d, d),
        "fc1": (ffn, d), "fc2": (d, ffn), "lm_head": (c["vocab_size"], d),
        "linear": (c["vocab_size"], d), "embed_tokens": (c["vocab_size"], d),
        "wte": (c["vocab_size"], d),
    }
    return shapes[leaf]


def make(base, out, spec):
    rng = np.random.default_rng(spec["seed"])
    r = spec["r"]
    adapter = {}
    for m in module_names(spec, dims(base)[0]):
        n_out, n_in = shape_of(base, m)
        p = "base_model.model." + m
        if m.endswith(("embed_tokens", "wte")):
            adapter[p + ".lora_embedding_A"] = rng.standard_normal((r, n_out)) * 0.2
            adapter[p + ".lora_embedding_B"] = rng.standard_normal((n_in, r)) * 0.2
            continue
        adapter[p + ".lora_A.weight"] = rng.standard_normal((r, n_in)) * 0.2
        adapter[p + ".lora_B.weight"] = rng.standard_normal((n_out, r)) * 0.2
        if spec.get("bias"):
            adapter[p + ".lora_B.bias"] = rng.standard_normal(n_out) * 0.2
    saved = []
    tensors = base_tensors(base) if spec.get("save") else {}
    for m in spec.get("save", []):
        for name in [n for n in tensors if n.rsplit(".", 1)[0].endswith(m)]:
            adapter["base_model.model." + name] = rng.standard_normal(tensors[name].shape) * 0.2
            saved.append(m)
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / "adapter_model.safetensors", adapter)
    config = {
        "peft_type": "LORA",
        "r": r,
        "lora_alpha": spec["alpha"],
        "use_rslora": spec.get("rslora", False),
        "use_dora": False,
        "fan_in_fan_out": False,
        # As PEFT matches them: a module's name or a dotted suffix of it.
        "target_modules": [GLOBAL[spec["layout"]].get(m, m) for m in spec["modules"]],
        "modules_to_save": sorted(set(saved)) or None,
        "lora_bias": bool(spec.get("bias")),
        "base_model_name_or_path": "microsoft/phi-2",
    }
    (out / "adapter_config.json").write_text(json.dumps(config, indent=1))


def merge(base, out, adapters):
    base, out = pathlib.Path(base), pathlib.Path(out)
    tensors = base_tensors(base)
    _, d, heads, kv = dims(base)
    kv_rows = d // heads * kv
    offsets = {"q_proj": (0, d), "k_proj": (d, kv_rows), "v_proj": (d + kv_rows, kv_rows)}

    # The same modules' names in the two layouts, beyond the attention projections.
    renames = [
        ("transformer.h.", "model.layers."),
        (".mixer.out_proj", ".self_attn.dense"),
        ("lm_head.linear", "lm_head"),
        ("transformer.embd.wte", "model.embed_tokens"),
    ]

    def in_base(module, suffix):
        to_hub, to_msft = module, module
        for a, b in renames:
            to_hub, to_msft = to_hub.replace(a, b), to_msft.replace(b, a)
        return next((m for m in (module, to_hub, to_msft) if m + suffix in tensors), module)

    def add(module, suffix, delta):
        """Adds `delta` (rows of `module`) to the base, in whichever layout it has."""
        module = in_base(module, suffix)
        name = module + suffix
        if name in tensors:
            tensors[name] = tensors[name] + delta
            return
        leaf = module.rsplit(".", 1)[1]
        layer = module.split(".")[2]  # model.layers.N... or transformer.h.N...
        if leaf in offsets:  # split adapter, fused base
            at, n = offsets[leaf]
            fused = f"transformer.h.{layer}.mixer.Wqkv" + suffix
            tensors[fused][at : at + n] += delta
        elif leaf == "Wqkv":  # fused adapter, split base
            for part, (at, n) in offsets.items():
                split = f"model.layers.{layer}.self_attn.{part}" + suffix
                tensors[split] = tensors[split] + delta[at : at + n]
        else:
            raise SystemExit(f"the base has no {name}")

    for spec in adapters:
        path, scale = spec.rsplit(":", 1)
        path, scale = pathlib.Path(path), np.float32(scale)
        acfg = json.loads((path / "adapter_config.json").read_text())
        r, alpha = acfg["r"], acfg["lora_alpha"]
        s = np.float32(alpha / (np.sqrt(r) if acfg.get("use_rslora") else r)) * scale
        lora = read_safetensors(path / "adapter_model.safetensors")
        for name, x in lora.items():
            if "lora_" not in name:
                tensors[name.removeprefix("base_model.model.")] = x.copy()
        for name in lora:
            module = name.removeprefix("base_model.model.")
            if name.endswith(".lora_A.weight"):
                module = module.removesuffix(".lora_A.weight")
                a, b = lora[name], lora[name.replace("lora_A", "lora_B")]
                add(module, ".weight", (b @ a) * s)
                bias = name.replace("lora_A.weight", "lora_B.bias")
                if bias in lora:
                    add(module, ".bias", lora[bias] * s)
            elif name.endswith(".lora_embedding_A"):
                module = module.removesuffix(".lora_embedding_A")
                a, b = lora[name], lora[name.replace("_A", "_B")]
                add(module, ".weight", (b @ a).T * s)
    out.mkdir(parents=True, exist_ok=True)
    for f in base.iterdir():
        if not f.name.endswith(".safetensors") and f.name != "model.safetensors.index.json":
            shutil.copy(f, out / f.name)
    write_safetensors(out / "model.safetensors", tensors)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "make":
        make(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
    elif cmd == "merge":
        merge(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        raise SystemExit(__doc__)
