#!/usr/bin/env bash
# benches/arm_icount.sh LLAMA_DIR MODEL.gguf... : guest instructions per prompt token
# and per generated token of phiq and llama.cpp under qemu-aarch64, one thread, for
# the cores of a Pi 4 (cortex-a72), a Pi 5 (cortex-a76) and the newest (max, i8mm),
# counted by the TCG plugin in benches/qemu-icount/ (exact and repeatable; qemu's
# times mean nothing). Per prompt token = (-p 48 minus -p 16) / 32, per generated
# token = (-n 5 minus -n 1) / 4: loading, repacking and warm-up cancel. Also prints
# the bytes of weights a generated token reads (the bound on a board: 4-5 GB/s on a
# Pi 4, 9-10 GB/s on a Pi 5).
#
# LLAMA_DIR holds llama.cpp's llama-bench cross-built statically for each core, as
# LLAMA_DIR/build-a72/bin/llama-bench (-DGGML_CPU_ARM_ARCH=armv8-a),
# build-a76 (armv8.2-a+dotprod+fp16) and build-max (armv8.6-a+dotprod+i8mm+fp16);
# README "Speed on aarch64" says how. Build it yourself: nothing of llama.cpp is part
# of this repository. LLAMA_DIR=- measures phiq alone.
#
# Environment: CPUS="cortex-a72 cortex-a76 max" narrows the cores; JOBS=2 runs that
# many qemu processes at once (each is one guest thread, so counts stay exact);
# CACHE=file keeps llama.cpp's counts between runs (keyed by binary, core, file and
# arguments), since only phiq changes while it is being worked on.
set -euo pipefail
cd "$(dirname "$0")/.."
llama=${1:?usage: benches/arm_icount.sh LLAMA_DIR MODEL.gguf...}
shift
[ $# -gt 0 ] || { echo "benches/arm_icount.sh: no model files" >&2; exit 2; }
cpus=${CPUS:-cortex-a72 cortex-a76 max}
jobs=${JOBS:-2}
cache=${CACHE:-}
command -v qemu-aarch64 >/dev/null || { echo "benches/arm_icount.sh: qemu-aarch64 missing (targets/setup-aarch64.sh installs it)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
plugin=$work/icount.so
gcc -shared -fPIC -O2 -o "$plugin" benches/qemu-icount/icount.c
targets/build.sh aarch64-unknown-linux-gnu >/dev/null
phiq=$PWD/target/debian/aarch64-unknown-linux-gnu/release/phiq

llama_bin() {
    case $1 in
    cortex-a72) echo "$llama/build-a72/bin/llama-bench" ;;
    cortex-a76) echo "$llama/build-a76/bin/llama-bench" ;;
    max) echo "$llama/build-max/bin/llama-bench" ;;
    esac
}

# count CPU OUT BINARY ARGS...: guest instructions of one run into OUT.
count() {
    local cpu=$1 out=$2
    shift 2
    local key=""
    if [ -n "$cache" ] && [ "$1" != "$phiq" ]; then
        key="$(sha1sum "$1" | cut -c1-12) $cpu $*"
        local hit
        hit=$(grep -F "$key	" "$cache" 2>/dev/null | tail -1 | cut -f2 || true)
        if [ -n "$hit" ]; then echo "$hit" > "$out"; return; fi
    fi
    QEMU_CPU=$cpu qemu-aarch64 -plugin "$plugin" -d plugin -D "$out.log" "$@" >"$out.stdout" 2>&1 \
        || { echo "benches/arm_icount.sh: failed under $cpu: $*" >&2; exit 1; }
    grep -o 'insns [0-9]*' "$out.log" | awk '{print $2}' > "$out"
    [ -s "$out" ] || { echo "benches/arm_icount.sh: no count from $*" >&2; exit 1; }
    if [ -n "$key" ]; then printf '%s\t%s\n' "$key" "$(cat "$out")" >> "$cache"; fi
}

# The four runs per tool, core and file, JOBS at a time.
runs=()
for cpu in $cpus; do
    for m in "$@"; do
        tag=$(basename "$m" .gguf)-$cpu
        for a in "p48:-p 48 -n 0" "p16:-p 16 -n 0" "n5:-p 0 -n 5" "n1:-p 0 -n 1"; do
            name=${a%%:*} args=${a#*:}
            runs+=("$cpu|$work/phiq-$tag-$name|$phiq bench -m $m -t 1 -r 1 --json $args")
            if [ "$llama" != "-" ]; then
                runs+=("$cpu|$work/llama-$tag-$name|$(llama_bin "$cpu") -m $m -t 1 -r 1 --no-warmup $args")
            fi
        done
    done
done
for r in "${runs[@]}"; do
    IFS='|' read -r cpu out cmd <<< "$r"
    # shellcheck disable=SC2086
    count "$cpu" "$out" $cmd &
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
done
wait

printf '| core | file | phiq M insn / prompt token | llama.cpp | ratio | phiq M insn / generated token | llama.cpp | ratio | MB read / generated token |\n'
printf '|---|---|---|---|---|---|---|---|---|\n'
for cpu in $cpus; do
    for m in "$@"; do
        tag=$(basename "$m" .gguf)-$cpu
        python3 - "$cpu" "$(basename "$m")" "$work" "$tag" "$llama" <<'PY'
import json, sys, os
cpu, name, work, tag, llama = sys.argv[1:]
out = open(os.path.join(work, f"phiq-{tag}-n1.stdout")).read()
nbytes = json.loads(out[out.index("{"):])["weight_bytes_per_token"]
def per(tool):
    c = {}
    for k in ("p48", "p16", "n5", "n1"):
        f = os.path.join(work, f"{tool}-{tag}-{k}")
        if not os.path.exists(f):
            return None
        c[k] = int(open(f).read().split()[0])
    return (c["p48"] - c["p16"]) / 32 / 1e6, (c["n5"] - c["n1"]) / 4 / 1e6
p = per("phiq")
l = per("llama") if llama != "-" else None
fmt = lambda v: f"{v:.0f}" if v is not None else "-"
pp_r = f"**{p[0] / l[0]:.2f}**" if l else "-"
tg_r = f"**{p[1] / l[1]:.2f}**" if l else "-"
mb = f"{nbytes / 1e6:.0f}"
print(f"| {cpu} | {name} | {fmt(p[0])} | {fmt(l[0] if l else None)} | {pp_r} | {fmt(p[1])} | {fmt(l[1] if l else None)} | {tg_r} | {mb} |")
PY
    done
done
