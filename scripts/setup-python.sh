#!/usr/bin/env bash
# Creates .venv with the test suite's Python reference (gguf-py, llama.cpp's own GGUF
# library, and numpy; the openai client and selenium for the server tests) unless it is already there.
# Fails loudly without python3.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v python3 >/dev/null; then
    echo "scripts/setup-python.sh: python3 is required for the gguf-py reference tests" >&2
    exit 1
fi
if ! .venv/bin/python -c 'import gguf, numpy, openai, selenium' 2>/dev/null; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r tests/py/requirements.txt
fi
