#!/usr/bin/env bash
# targets/test.sh TARGET: the test suite for TARGET.
#   x86_64-unknown-linux-gnu   natively (same as scripts/test.sh)
#   aarch64-unknown-linux-gnu  cross-built with Debian's rustc, run under qemu-user once
#                              per CPU model: cortex-a53 (Pi 3), cortex-a72 (Pi 4),
#                              cortex-a76 (Pi 5, dotprod), max (i8mm). An instruction a
#                              model lacks dies with SIGILL, which proves run-time dispatch.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: targets/test.sh TARGET}

case "$target" in
x86_64-unknown-linux-gnu)
    exec scripts/test.sh --target "$target"
    ;;
aarch64-unknown-linux-gnu)
    targets/setup-aarch64.sh
    scripts/setup-python.sh
    export PHIQ_PYTHON="$PWD/.venv/bin/python"
    # Debian's toolchain, not rustup's (which has no aarch64 standard library here).
    export RUSTC=/usr/bin/rustc
    export CARGO_TARGET_DIR="$PWD/target/debian"
    cargo=/usr/bin/cargo
    # Under emulation (10-50x slower) the suite is what can differ by CPU: unit tests
    # (block formats, every kernel path against scalar, model ops), the independent
    # references (gguf-py, transformers) and greedy generation on every kernel path
    # against the x86 run. The converter's heavy integration tests run natively only.
    tests=(-p phiq -p phiq-quantize --lib
        --test quant_gguf_py --test k_quants_gguf_py --test gguf_interop
        --test llama_types --test oracle_logits --test tokenizer --test e2e_greedy)
    $cargo test --target "$target" "${tests[@]}" --no-run
    for cpu in ${PHIQ_QEMU_CPUS:-cortex-a53 cortex-a72 cortex-a76 max}; do
        echo "=== aarch64 tests under QEMU_CPU=$cpu"
        start=$(date +%s)
        # The paths this CPU model must offer: a path that silently disappeared
        # (detection broken, a table not built) fails the kernel tests.
        case $cpu in
        cortex-a76) require=neon,dotprod ;;
        max) require=neon,dotprod,i8mm ;;
        *) require=neon ;;
        esac
        QEMU_CPU=$cpu PHIQ_REQUIRE_PATHS=$require $cargo test --target "$target" "${tests[@]}"
        echo "=== QEMU_CPU=$cpu: $(( $(date +%s) - start )) s"
    done
    ;;
*)
    echo "targets/test.sh: unknown target $target (see targets/README.md)" >&2
    exit 2
    ;;
esac
