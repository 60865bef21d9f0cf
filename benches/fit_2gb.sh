#!/usr/bin/env bash
# benches/fit_2gb.sh LLAMA_BIN F16_GGUF IMATRIX TEXT: Phi-2 on a 2 GB board, measured.
# Makes, from one F16 GGUF and one importance matrix:
#   fit2g   phiq-quantize --fit-ram 2G --ctx 2048 --kv-type q8_0 (the 2 GB file)
#   q3_k_m q4_k_s iq4_xs q4_k_m   llama-quantize's files of those types
# then, for each: file size, mean/99% KLD and same top token against the F16 model on
# TEXT (`phiq perplexity --kl-divergence`, CTX tokens per chunk, CHUNKS chunks, base
# written by phiq from F16_GGUF), generation speed and the bytes a token reads
# (`phiq bench -p 0 -n NGEN`, REPS repetitions; bytes x tok/s = GB/s read, compared
# with Q4_K_M's), and for fit2g the peak RSS of `phiq run --ctx 2048 --kv-type q8_0`
# over a prompt that fills the context (benches/peak_mem.sh). LLAMA_BIN holds
# llama-quantize (build llama.cpp yourself; none of it is in this repository).
# KEEP=DIR keeps the files there (and reuses llama-quantize's files and the base
# found there on the next run). THREADS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:?usage: benches/fit_2gb.sh LLAMA_BIN F16_GGUF IMATRIX TEXT}
f16=${2:?F16_GGUF}
im=${3:?IMATRIX}
text=${4:?TEXT}
ctx=${CTX:-512}
chunks=${CHUNKS:-4}
t=${THREADS:-2}
ngen=${NGEN:-32}
reps=${REPS:-3}
phiq=${PHIQ:-target/release/phiq}
quant=${PHIQ_QUANTIZE:-target/release/phiq-quantize}
out=${KEEP:-$(mktemp -d)}
mkdir -p "$out"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$out"' EXIT

"$quant" "$f16" -o "$out/fit2g.gguf" --imatrix "$im" --fit-ram 2G --ctx 2048 --kv-type q8_0 \
    --threads "$t" --quiet 2>"$out/fit2g.log" || { cat "$out/fit2g.log" >&2; exit 1; }
cat "$out/fit2g.log" >&2
for ty in q3_k_m q4_k_s iq4_xs q4_k_m; do
    [ -f "$out/$ty.gguf" ] && continue
    "$bin/llama-quantize" --imatrix "$im" "$f16" "$out/$ty.gguf" "$(echo "$ty" | tr a-z A-Z)" "$t" \
        >"$out/q.log" 2>&1 || { cat "$out/q.log" >&2; exit 1; }
done
[ -f "$out/base.kld" ] || "$phiq" perplexity -m "$f16" -f "$text" -c "$ctx" --chunks "$chunks" -t "$t" \
    --kl-divergence-base "$out/base.kld" >"$out/base.log" 2>&1 || { cat "$out/base.log" >&2; exit 1; }

# Peak RSS of the 2 GB file at ctx 2048 with a q8_0 cache, over a prompt that fills
# most of the context, then a few generated tokens.
python3 -c "import sys; t=open(sys.argv[1]).read(); print((t*4)[:7000])" "$text" >"$out/prompt.txt"
benches/peak_mem.sh "$phiq" run -m "$out/fit2g.gguf" -f "$out/prompt.txt" -n 8 --ctx 2048 \
    --kv-type q8_0 -t "$t" >/dev/null 2>"$out/rss.log" || { cat "$out/rss.log" >&2; exit 1; }
grep -E "prompt|peak_mem|memory|needs" "$out/rss.log" >&2 || true

printf '%-7s | %8s | %9s %9s %7s | %7s %8s %7s\n' file 'size MB' 'mean KLD' '99% KLD' top 'tg t/s' 'MB/token' 'GB/s'
for f in fit2g q3_k_m q4_k_s iq4_xs q4_k_m; do
    "$phiq" perplexity -m "$out/$f.gguf" -t "$t" --kl-divergence-base "$out/base.kld" \
        --kl-divergence --json >"$out/$f.kld.json" 2>"$out/p.log" || { cat "$out/p.log" >&2; exit 1; }
    "$phiq" bench -m "$out/$f.gguf" -t "$t" -p 0 -n "$ngen" -r "$reps" --json >"$out/$f.bench.json" \
        2>"$out/b.log" || { cat "$out/b.log" >&2; exit 1; }
    python3 - "$f" "$out/$f.gguf" "$out/$f.kld.json" "$out/$f.bench.json" <<'PY'
import json, os, sys
name, path, kld, bench = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3])), json.load(open(sys.argv[4]))
size = os.path.getsize(path)
bpt, tg = bench["weight_bytes_per_token"], bench["tg_tok_s"]
print(f"{name:<7} | {size / 1e6:8.1f} | {kld['kld']['value']:9.5f} "
      f"{kld['kld_99']:9.5f} {100 * kld['same_top']['value']:6.2f}% | {tg:7.2f} {bpt / 1e6:8.1f} {tg * bpt / 1e9:7.2f}")
PY
done
