#!/usr/bin/env bash
# benches/quantize_vs_llama.sh LLAMA_QUANTIZE HF_DIR F16_GGUF TYPE [IMATRIX]:
# phiq-quantize from the Hugging Face checkpoint against llama.cpp's llama-quantize
# from the same weights as an F16 GGUF, in turns (phiq, llama, phiq, llama, ...),
# THREADS threads (default 2), ROUNDS rounds (default 3), with the importance matrix
# when given (both tools read its GGUF format). Prints each run's wall and CPU
# seconds and peak anonymous memory (benches/peak_mem.sh), then the median of the
# per-round ratios, and whether the two files' tensors are identical (gguf-py in .venv,
# or PHIQ_PYTHON). Build llama.cpp yourself; nothing of it is in this repository.
set -euo pipefail
cd "$(dirname "$0")/.."
llama=${1:?usage: benches/quantize_vs_llama.sh LLAMA_QUANTIZE HF_DIR F16_GGUF TYPE [IMATRIX]}
hf=${2:?HF_DIR}
f16=${3:?F16_GGUF}
ty=${4:?TYPE}
im=${5:-}
phiq=${PHIQ_QUANTIZE:-target/release/phiq-quantize}
t=${THREADS:-2}
rounds=${ROUNDS:-3}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
p_args=("$hf" -o "$out/phiq.gguf" --type "$ty" --threads "$t")
l_args=()
if [ -n "$im" ]; then
    p_args+=(--imatrix "$im")
    l_args+=(--imatrix "$im")
fi
l_args+=("$f16" "$out/llama.gguf" "$(echo "$ty" | tr a-z A-Z)" "$t")
run() { # NAME CMD...: one timed run; prints "wall cpu anon_mib"
    local name=$1
    shift
    /usr/bin/time -f '%e %U %S' -o "$out/time" benches/peak_mem.sh "$@" >"$out/$name.log" 2>&1 ||
        { cat "$out/$name.log" >&2; exit 1; }
    local anon
    anon=$(sed -n 's/.*peak RssAnon \([0-9]*\) MiB.*/\1/p' "$out/$name.log")
    read -r wall user sys <"$out/time"
    echo "$wall $(echo "$user + $sys" | bc) $anon"
}
ratios=()
printf 'round  phiq wall/cpu s  anon MiB | llama wall/cpu s  anon MiB | wall ratio  cpu ratio\n'
for r in $(seq "$rounds"); do
    read -r pw pc pa < <(run phiq "$phiq" "${p_args[@]}")
    read -r lw lc la < <(run llama "$llama" "${l_args[@]}")
    rw=$(echo "scale=3; $pw / $lw" | bc)
    rc=$(echo "scale=3; $pc / $lc" | bc)
    printf '%5d  %7.1f/%7.1f  %6d | %7.1f/%7.1f  %6d | %10.3f %10.3f\n' \
        "$r" "$pw" "$pc" "$pa" "$lw" "$lc" "$la" "$rw" "$rc"
    ratios+=("$rw $rc")
done
printf '%s\n' "${ratios[@]}" | python3 -c '
import sys, statistics as s
rows = [tuple(map(float, l.split())) for l in sys.stdin if l.strip()]
print(f"median ratio phiq/llama: wall {s.median(r[0] for r in rows):.3f}, cpu {s.median(r[1] for r in rows):.3f}")'
# The two files' tensors, by name: type, shape and data bytes (the metadata differs:
# one was converted from the checkpoint, the other from the F16 GGUF).
"${PHIQ_PYTHON:-.venv/bin/python}" - "$out/phiq.gguf" "$out/llama.gguf" <<'PY'
import sys
from gguf import GGUFReader
a, b = ({t.name: t for t in GGUFReader(f).tensors} for f in sys.argv[1:3])
differ = [n for n in a if n not in b or a[n].tensor_type != b[n].tensor_type
          or list(a[n].shape) != list(b[n].shape) or a[n].data.tobytes() != b[n].data.tobytes()]
differ += [n for n in b if n not in a]
print(f"tensors: {len(a)} and {len(b)}, {len(differ)} differ" + (f": {differ[:5]}" if differ else " (identical type, shape and bytes)"))
sys.exit(1 if differ else 0)
PY
