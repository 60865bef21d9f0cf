#!/usr/bin/env bash
# The project's test command: sets up the Python reference (gguf-py, llama.cpp's own GGUF
# library) in .venv, then runs the whole Rust test suite against it. Extra arguments go
# to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-python.sh
scripts/setup-browser.sh
export PHIQ_PYTHON="$PWD/.venv/bin/python"
cargo test --workspace --all-targets "$@"
