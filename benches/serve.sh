#!/usr/bin/env bash
# benches/serve.sh MODEL.gguf [LLAMA_SERVER]: phiq serve under load, in one run.
#   - aggregate generated tok/s with 1, 2, 4 and 8 concurrent streams (64 tokens
#     each, one server with -np 8), and the ratio to one stream;
#   - time to first token of a 512-token prompt while 3 streams generate (-np 4
#     --ctx 4096: llama-server splits its context evenly, and a 512-token prompt
#     needs more than 2048 / 4 per slot there);
#   - the server's peak RSS (VmHWM) with -np 4 --ctx 2048, after 4 streams of 64.
# ROUNDS (default 2) rounds of all of it, each phiq then llama-server, reported apart.
# With LLAMA_SERVER (llama.cpp's llama-server, built from source outside this repo),
# the same load against it on the same file, run right after phiq's, and the ratios.
# THREADS (default 2) threads each. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?usage: benches/serve.sh MODEL.gguf [LLAMA_SERVER]}
llama=${2:-}
threads=${THREADS:-2}
port=${PORT:-18431}
cargo build -q --release --bin phiq
phiq=$PWD/target/release/phiq
load=benches/serve_load.py
work=$(mktemp -d)
# Both servers sample from the tokens that are valid UTF-8 alone (see benches/utf8_bans.py).
scripts/setup-python.sh
.venv/bin/python benches/utf8_bans.py "$model" > "$work/bias.json"
export BIAS="$work/bias.json"
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# start NAME ARGS...: runs a server in the background and waits for /health.
start() {
    local name=$1
    shift
    "$@" > "$work/$name.log" 2>&1 &
    pid=$!
    for _ in $(seq 600); do
        if curl -sf "http://127.0.0.1:$port/health" > /dev/null; then return; fi
        kill -0 "$pid" 2>/dev/null || { cat "$work/$name.log" >&2; exit 1; }
        sleep 0.5
    done
    echo "benches/serve.sh: $name did not become ready" >&2
    exit 1
}
stop() {
    grep VmHWM "/proc/$pid/status" | awk '{print $2}' > "$work/rss"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=
}

# measure TOOL SERVER_COMMAND: fills $work/TOOL-*; the command takes -np and the context next.
measure() {
    local tool=$1 cmd=$2 ctx=$3
    start "$tool-np8" $cmd -np 8 $ctx 8192
    # One short answer first, not counted: whatever the first request costs a
    # server (pages of the weights, lazy set-up) is not a stream's rate.
    python3 "$load" "http://127.0.0.1:$port" streams 1 8 > /dev/null
    for n in 1 2 4 8; do
        python3 "$load" "http://127.0.0.1:$port" streams "$n" 64 > "$work/$tool-streams-$n.json"
    done
    stop
    start "$tool-np4" $cmd -np 4 $ctx 4096
    for run in 1 2 3; do
        RUN=$run python3 "$load" "http://127.0.0.1:$port" ttft 512 3 >> "$work/$tool-ttft.json"
    done
    stop
    start "$tool-rss" $cmd -np 4 $ctx 2048
    python3 "$load" "http://127.0.0.1:$port" streams 4 64 > /dev/null
    stop
    mv "$work/rss" "$work/$tool-rss"
}

# ROUNDS rounds (default 2), each phiq then llama-server: every ratio is taken
# within one round, the two servers minutes apart, and the rounds are reported
# apart (this host's speed drifts between runs by up to 2x).
rounds=${ROUNDS:-2}
for round in $(seq "$rounds"); do
    measure "phiq-r$round" "$phiq serve -m $model --port $port -t $threads" --ctx
    if [ -n "$llama" ]; then
        measure "llama-r$round" "$llama -m $model --port $port -t $threads --no-warmup" -c
    fi
done

python3 - "$work" "$llama" "$rounds" <<'PY'
import json, statistics, sys
work, llama, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
def streams(tool, n):
    return json.load(open(f"{work}/{tool}-streams-{n}.json"))["tok_per_s"]
def ttfts(tool):
    return [json.loads(l)["ttft_s"] for l in open(f"{work}/{tool}-ttft.json")]
def ttft(tool):
    return statistics.median(ttfts(tool))
def rss(tool):
    return int(open(f"{work}/{tool}-rss").read()) / 1024
summary = {"x1": [], "vs_llama": [], "ttft": []}
for r in range(1, rounds + 1):
    p_, l_ = f"phiq-r{r}", f"llama-r{r}"
    print(f"\nround {r}\n")
    print("| streams | phiq tok/s | x 1 stream |" + (" llama-server tok/s | phiq / llama |" if llama else ""))
    print("|---|---|---|" + ("---|---|" if llama else ""))
    for n in (1, 2, 4, 8):
        p = streams(p_, n)
        row = f"| {n} | {p:.2f} | {p / streams(p_, 1):.2f} |"
        if llama:
            l = streams(l_, n)
            row += f" {l:.2f} | {p / l:.2f} |"
        print(row)
    summary["x1"].append(streams(p_, 4) / streams(p_, 1))
    line = f"\nmedian time to first token, 512-token prompt, 3 streams generating: phiq {ttft(p_):.2f} s ({', '.join(f'{t:.2f}' for t in ttfts(p_))})"
    if llama:
        summary["vs_llama"].append(streams(p_, 4) / streams(l_, 4))
        summary["ttft"].append(ttft(p_) / ttft(l_))
        line += f", llama-server {ttft(l_):.2f} s ({', '.join(f'{t:.2f}' for t in ttfts(l_))}; ratio {ttft(p_) / ttft(l_):.2f})"
    print(line)
    line = f"peak RSS, -np 4 --ctx 2048: phiq {rss(p_):.0f} MiB"
    if llama:
        line += f", llama-server {rss(l_):.0f} MiB"
    print(line)
fmt = lambda v: ", ".join(f"{x:.2f}" for x in v)
print(f"\nper round: 4 streams / 1 stream {fmt(summary['x1'])}", end="")
if llama:
    print(f"; 4 streams phiq / llama {fmt(summary['vs_llama'])}; TTFT phiq / llama {fmt(summary['ttft'])}")
else:
    print()
PY
