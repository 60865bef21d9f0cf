#!/usr/bin/env python3
"""Records tests/fixtures/chat_templates/cases.json: chat templates rendered by
transformers' own `apply_chat_template`, the reference `phiq` renders against.

Run once, by hand, in a venv with transformers (not needed by the tests):
    python3 -m venv /tmp/tf && /tmp/tf/bin/pip install transformers==4.57.1 jinja2
    /tmp/tf/bin/python tests/py/record_chat_templates.py
The tokenizer is the dev checkpoint's (its special tokens are what bos_token and
eos_token render as).
"""
import json
import pathlib

import transformers
from transformers import AutoTokenizer

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "tests/fixtures/oracle/dev/checkpoint"
OUT = ROOT / "tests/fixtures/chat_templates/cases.json"

TEMPLATES = {
    # ChatML as Phi-2 fine-tunes ship it (cognitivecomputations/dolphin-2_6-phi-2).
    "chatml": "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    # Phi-2's own Instruct/Output format written as a template, block tags on
    # their own lines (trim_blocks and lstrip_blocks at work).
    "phi2": """{% for message in messages %}
    {% if message['role'] == 'system' %}
{{ message['content'] | trim }}
    {% elif message['role'] == 'user' %}
Instruct: {{ message['content'].strip() }}
    {% elif message['role'] == 'assistant' %}
Output: {{ message['content'] | trim }}{{ eos_token }}
    {% endif %}
{% endfor %}
{% if add_generation_prompt %}
Output:{% endif %}""",
    # Zephyr's: eos_token after every turn, loop.last, role alternation checked
    # with raise_exception, a namespace.
    "zephyr": """{% set ns = namespace(n=0) %}
{% for message in messages %}
{% if message['role'] != 'system' %}{% set ns.n = ns.n + 1 %}{% endif %}
{% if message['role'] == 'user' %}
{{ '<|user|>\n' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>\n' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>\n'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}
{% if ns.n == 0 %}{{ raise_exception('no user or assistant message') }}{% endif %}""",
    # What tool-less function-calling templates do with tojson and Python methods.
    "json": """{{ bos_token }}{% for m in messages %}{{ m | tojson }}
{% if m.content.startswith('Hi') %}[greeting]{% endif %}{{ m['role'].upper() }}: {{ m.content.replace('\\n', ' ') }}
{% endfor %}{% if add_generation_prompt %}{{ {'role': 'assistant', 'n': messages | length} | tojson(indent=2) }}{% endif %}""",
}

CONVERSATIONS = [
    [{"role": "user", "content": "Write a haiku about the sea."}],
    [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": " And 3+3? "},
    ],
    [
        {"role": "user", "content": "Hi! \"Quotes\", naïve café,\nand a new line\ttab"},
        {"role": "assistant", "content": "Héllo <b>there</b> {x}"},
        {"role": "user", "content": "Ünïcode: 日本語 🙂"},
    ],
]


def main():
    tok = AutoTokenizer.from_pretrained(CHECKPOINT)
    cases = []
    for name, template in TEMPLATES.items():
        for i, messages in enumerate(CONVERSATIONS):
            for gen in (True, False):
                text = tok.apply_chat_template(
                    messages, chat_template=template, tokenize=False, add_generation_prompt=gen
                )
                cases.append(
                    {"template": name, "conversation": i, "add_generation_prompt": gen, "rendered": text}
                )
    out = {
        "made_by": f"transformers {transformers.__version__} apply_chat_template, tests/py/record_chat_templates.py",
        "bos_token": tok.bos_token,
        "eos_token": tok.eos_token,
        "templates": TEMPLATES,
        "conversations": CONVERSATIONS,
        "cases": cases,
    }
    OUT.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"{OUT}: {len(cases)} cases")


if __name__ == "__main__":
    main()
