#!/usr/bin/env bash
# benches/memory_table.sh DIR: peak RSS of `phiq run` (one prompt token, one generated)
# for every phi2-TYPE.gguf in DIR, at ctx 512 and 2048 with f16 and q8_0 KV caches,
# as a Markdown table with the Raspberry Pi models each fits at ctx 2048 (leaving 400 MB
# for the OS, phiq-quantize --fit-ram's default reserve), with each KV type. The KV cache is committed at start, so the figures hold for a full context.
set -euo pipefail
dir=${1:?usage: benches/memory_table.sh DIR_WITH_phi2-TYPE.gguf}
phiq=${PHIQ:-target/release/phiq}
echo "| type | file GB | RSS ctx 512 f16 KV | 512 q8_0 | 2048 f16 | 2048 q8_0 | fits (ctx 2048, f16 KV) | fits (q8_0 KV) |"
echo "|---|---|---|---|---|---|---|---|"
for t in fit2g q2_k q3_k_s q3_k_m iq4_xs q3_k_l iq4_nl q4_0 q4_k_s q4_k_m q4_1 q5_0 q5_k_m q5_1 q6_k q8_0 f16; do
    f=$dir/phi2-$t.gguf
    [ -f "$f" ] || continue
    row="| $t | $(awk -v b="$(stat -L -c %s "$f")" 'BEGIN { printf "%.2f", b / 1e9 }')"
    last=0
    last_q8=0
    for ctx in 512 2048; do
        for kv in f16 q8_0; do
            # GNU time's %M: peak resident set in KiB, its last line on stderr.
            /usr/bin/time -f '%M' "$phiq" run -m "$f" -p Hello -n 1 --ctx $ctx --kv-type $kv >/dev/null 2>/tmp/phiq-mem.err
            kb=$(tail -1 /tmp/phiq-mem.err)
            row="$row | $(awk -v k="$kb" 'BEGIN { printf "%.2f GB", k * 1024 / 1e9 }')"
            [ $ctx = 2048 ] && [ $kv = f16 ] && last=$kb
            [ $ctx = 2048 ] && [ $kv = q8_0 ] && last_q8=$kb
        done
    done
    fits() { awk -v k="$1" 'BEGIN { n = k * 1024 / 1e9 + 0.4; s = ""; if (n <= 2) s = "2, 4, 8 GB"; else if (n <= 4) s = "4, 8 GB"; else if (n <= 8) s = "8 GB"; else s = "none"; print s }'; }
    echo "$row | $(fits "$last") | $(fits "$last_q8") |"
done
