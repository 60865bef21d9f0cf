#!/usr/bin/env bash
# benches/compare_llama.sh LLAMA_BENCH MODEL.gguf... : phiq bench and llama.cpp's
# llama-bench on the same files, one after the other in the same run, 2 threads,
# pp512 and tg64, 3 repetitions (REPS=N for another count); prints the ratios phiq/llama.cpp and phiq's share of
# the bandwidth bound (read bandwidth measured in the same run). Build llama.cpp
# yourself from its source; nothing of it is part of this repository.
set -euo pipefail
llama=${1:?usage: benches/compare_llama.sh path/to/llama-bench MODEL.gguf...}
shift
phiq=${PHIQ:-target/release/phiq}
t=${THREADS:-2}
r=${REPS:-3}
printf '| file | phiq pp512 | llama.cpp pp512 | ratio | phiq tg64 | llama.cpp tg64 | ratio | tg bound | phiq share |\n'
printf '|---|---|---|---|---|---|---|---|---|\n'
for m in "$@"; do
    p=$("$phiq" bench -m "$m" -t "$t" -p 512 -n 64 -r "$r" --bandwidth --json 2>/dev/null)
    l=$("$llama" -m "$m" -t "$t" -p 512 -n 64 -r "$r" -o json 2>/dev/null)
    python3 - "$m" "$p" "$l" <<'PY'
import json, sys
m, p, l = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
lpp = next(r["avg_ts"] for r in l if r["n_prompt"] > 0 and r["n_gen"] == 0)
ltg = next(r["avg_ts"] for r in l if r["n_gen"] > 0 and r["n_prompt"] == 0)
print(f"| {m.split('/')[-1]} | {p['pp_tok_s']:.1f} | {lpp:.1f} | {p['pp_tok_s']/lpp:.2f} | {p['tg_tok_s']:.1f} | {ltg:.1f} | "
      f"{p['tg_tok_s']/ltg:.2f} | {p['tg_bound_tok_s']:.1f} | {p['tg_share_of_bound']*100:.0f}% |")
PY
done
