#!/usr/bin/env python3
"""Records tests/fixtures/lora/: two PEFT LoRA adapters over the dev checkpoint,
saved by PEFT itself, and the logits transformers computes after PEFT's
`merge_and_unload` of each and of both stacked: the reference `phiq-quantize --lora`
is checked against (quantize/tests/lora.rs).

Run once, by hand, in a venv with torch, transformers and peft (not needed by the
tests):
    python3 -m venv /tmp/tf && /tmp/tf/bin/pip install transformers==4.57.1 torch==2.15.0 peft==0.21.2
    /tmp/tf/bin/python tests/py/record_lora.py

- hub_a: r 4, lora_alpha 8, every linear module (q_proj k_proj v_proj dense fc1 fc2
  and lm_head), lora_B.bias trained too (lora_bias).
- hub_b: rank-stabilised (use_rslora), r 2 with rank_pattern fc2: 3 and
  alpha_pattern q_proj: 5, on q_proj, fc2 and embed_tokens (lora_embedding_A/B),
  and fc1 saved whole (modules_to_save).
PEFT initialises lora_B (and the embedding's A) to zero; every factor is set to
random values here so that each changes the logits. Logits are float32, rows x
51200, for the dev reference's 6-token sequence: all rows for a+b, the last row for
each alone.
"""
import json
import pathlib
import shutil

import numpy as np
import peft
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PhiForCausalLM

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "tests/fixtures/oracle/dev/checkpoint"
OUT = ROOT / "tests/fixtures/lora"
IDS = [464, 3290, 318, 50285, 50256, 51000]


def base():
    return PhiForCausalLM.from_pretrained(CHECKPOINT, torch_dtype=torch.float32).eval()


def make(name, config, seed):
    torch.manual_seed(seed)
    model = get_peft_model(base(), config)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n or "modules_to_save" in n:
                p.copy_(torch.randn_like(p) * 0.2)
    path = OUT / name
    if path.exists():
        shutil.rmtree(path)
    # Without save_embedding_layers PEFT would also store the whole base embedding
    # (as embed_tokens.base_layer.weight), 6.5 MB of unchanged weights here.
    model.save_pretrained(path, safe_serialization=True, save_embedding_layers=False)
    return path


def logits(model):
    with torch.no_grad():
        return model(torch.tensor([IDS])).logits[0].float().numpy()


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    a = make(
        "hub_a",
        LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2", "lm_head"],
            lora_dropout=0.0,
            lora_bias=True,
        ),
        1,
    )
    b = make(
        "hub_b",
        LoraConfig(
            r=2,
            lora_alpha=3,
            use_rslora=True,
            rank_pattern={"fc2": 3},
            alpha_pattern={"q_proj": 5},
            target_modules=["q_proj", "fc2", "embed_tokens"],
            modules_to_save=["fc1"],
            lora_dropout=0.0,
        ),
        2,
    )
    merged_a = PeftModel.from_pretrained(base(), a).merge_and_unload()
    merged_b = PeftModel.from_pretrained(base(), b).merge_and_unload()
    merged_ab = PeftModel.from_pretrained(
        PeftModel.from_pretrained(base(), a).merge_and_unload(), b
    ).merge_and_unload()
    np.save(OUT / "logits_a_last.npy", logits(merged_a)[-1:])
    np.save(OUT / "logits_b_last.npy", logits(merged_b)[-1:])
    np.save(OUT / "logits_ab.npy", logits(merged_ab))
    versions = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }
    (OUT / "reference.json").write_text(
        json.dumps({"ids": IDS, "made_with": versions}, indent=1) + "\n"
    )


if __name__ == "__main__":
    main()
