#!/usr/bin/env bash
# benches/kld_vs_llama.sh LLAMA_BIN F16_GGUF TEXT [IMATRIX]: does phiq's runtime add
# error of its own? llama-perplexity writes the F16 model's base (--kl-divergence-base,
# CTX tokens per chunk, CHUNKS chunks); then, for each of TYPES, llama-quantize makes
# llama.cpp's file of that type (with the importance matrix when given) and both
# llama-perplexity and `phiq perplexity` compare that same file against that same base.
# Prints each type's mean KLD, 99% KLD and same-top-p from both runtimes and the ratio
# of the means: above 1, phiq's kernels lose more than llama.cpp's. LLAMA_BIN is the
# folder holding llama-quantize and llama-perplexity (build llama.cpp yourself; nothing
# of it is in this repository). THREADS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:?usage: benches/kld_vs_llama.sh LLAMA_BIN F16_GGUF TEXT [IMATRIX]}
f16=${2:?F16_GGUF}
text=${3:?TEXT}
im=${4:-}
types=${TYPES:-q8_0 q6_k q5_k_m q5_k_s q5_1 q5_0 q4_k_m q4_k_s q4_1 q4_0}
ctx=${CTX:-512}
chunks=${CHUNKS:-4}
t=${THREADS:-2}
phiq=${PHIQ:-target/release/phiq}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$bin/llama-perplexity" -m "$f16" -f "$text" -c "$ctx" --chunks "$chunks" -t "$t" \
    --kl-divergence-base "$out/base.kld" >"$out/base.log" 2>&1 || { cat "$out/base.log" >&2; exit 1; }
printf '%-8s | %-30s | %-30s | %s\n' type 'llama: mean KLD  99% KLD  top' 'phiq: mean KLD  99% KLD  top' 'ratio'
for ty in $types; do
    q_args=()
    [ -n "$im" ] && q_args+=(--imatrix "$im")
    "$bin/llama-quantize" "${q_args[@]}" "$f16" "$out/$ty.gguf" "$(echo "$ty" | tr a-z A-Z)" "$t" \
        >"$out/q.log" 2>&1 || { cat "$out/q.log" >&2; exit 1; }
    "$bin/llama-perplexity" -m "$out/$ty.gguf" -c "$ctx" --chunks "$chunks" -t "$t" \
        --kl-divergence-base "$out/base.kld" --kl-divergence >"$out/l.log" 2>&1 ||
        { cat "$out/l.log" >&2; exit 1; }
    "$phiq" perplexity -m "$out/$ty.gguf" -t "$t" --kl-divergence-base "$out/base.kld" \
        --kl-divergence --json >"$out/p.json" 2>"$out/p.log" || { cat "$out/p.log" >&2; exit 1; }
    python3 - "$ty" "$out/l.log" "$out/p.json" <<'PY'
import json, re, sys
ty, log, js = sys.argv[1], open(sys.argv[2]).read(), json.load(open(sys.argv[3]))
l_mean = float(re.search(r"Mean    KLD:\s*([-0-9.e]+)", log).group(1))
l_99 = float(re.search(r"99\.0%   KLD:\s*([-0-9.e]+)", log).group(1))
l_top = float(re.search(r"Same top p:\s*([0-9.]+)", log).group(1))
p_mean, p_99, p_top = js["kld"]["value"], js["kld_99"], 100 * js["same_top"]["value"]
print(f"{ty:<8} | {l_mean:10.6f} {l_99:10.6f} {l_top:6.2f}% | {p_mean:10.6f} {p_99:10.6f} {p_top:6.2f}% | {p_mean / l_mean:.4f}")
PY
    rm -f "$out/$ty.gguf"
done
