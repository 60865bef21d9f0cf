#!/usr/bin/env bash
# benches/peak_mem.sh CMD ARGS...: runs a command and reports its wall time and the
# peak of RssAnon (anonymous memory: what is not the mapped input's page cache) and
# VmHWM (peak resident set), sampled from /proc every 50 ms.
set -euo pipefail
start=$(date +%s.%N)
"$@" &
pid=$!
peak_anon=0
peak_rss=0
while kill -0 "$pid" 2>/dev/null; do
    if [ -r "/proc/$pid/status" ]; then
        anon=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        [ -n "$anon" ] && [ "$anon" -gt "$peak_anon" ] && peak_anon=$anon
        [ -n "$hwm" ] && [ "$hwm" -gt "$peak_rss" ] && peak_rss=$hwm
    fi
    sleep 0.05
done
wait "$pid"
rc=$?
end=$(date +%s.%N)
printf 'peak_mem: %.1f s, peak RssAnon %d MiB, peak RSS %d MiB, exit %d\n' \
    "$(echo "$end - $start" | bc)" $((peak_anon / 1024)) $((peak_rss / 1024)) "$rc" >&2
exit "$rc"
