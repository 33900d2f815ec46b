#!/usr/bin/env bash
# The run analyser's CPU per observed run: one daemon (run_settle 5s) is loaded with the
# generated pool (unique IDs) for LOAD seconds over 4 connections, then left idle. Once the
# load has stopped, the daemon's CPU time (utime + stime, /proc) and the runs the analyser
# observed (the sum of flightrec_agent_runs_total) are read twice, WINDOW seconds apart: the
# idle daemon's CPU is then the analyser's (and a checkpoint timer's), so CPU over runs is
# its cost per run. The analyser is throttled to its CPU share, so runs per second here is
# not its capacity; CPU per run is what changes with its code. Last, the average size of a
# run's row in stats.db.
#
#   Bench/analyser-cost.sh [DAEMON] [LOADGEN]
#   LOAD=20 WINDOW=20 PORT=25318 Bench/analyser-cost.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
daemon=${1:-$here/.build/release/flightrec}
loadgen=${2:-$here/.build/release/flightrec-loadgen}
load=${LOAD:-20}
window=${WINDOW:-20}
port=${PORT:-25318}
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
cat >"$dir/config.yaml" <<EOF
data_dir: $dir/data
listeners:
  otlp_http: 127.0.0.1:$port
  api: 127.0.0.1:$((port + 1))
  otlp_grpc: 127.0.0.1:$((port + 2))
metrics:
  run_settle: 5s
EOF
"$daemon" serve --config "$dir/config.yaml" >"$dir/daemon.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
    curl -fs "127.0.0.1:$((port + 1))/metrics" >/dev/null 2>&1 && break
    sleep 0.1
done
"$loadgen" --url "http://127.0.0.1:$port/v1/traces" --duration "$load" --connections 4 | grep throughput
sleep 3
ticks=$(getconf CLK_TCK)
sample() {
    local cpu runs waiting
    cpu=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    runs=$(curl -fs "127.0.0.1:$((port + 1))/metrics" |
        awk '/^flightrec_agent_runs_total/ {s += $2} END {printf "%d", s}')
    waiting=$(curl -fs "127.0.0.1:$((port + 1))/metrics" | awk '/^flightrec_runs_waiting / {printf "%d", $2}')
    echo "$cpu $runs $waiting"
}
read -r cpu0 runs0 waiting0 < <(sample)
sleep "$window"
read -r cpu1 runs1 waiting1 < <(sample)
runs=$((runs1 - runs0))
echo "runs waiting: $waiting0 -> $waiting1; observed in ${window} s: $runs"
awk -v c=$((cpu1 - cpu0)) -v t="$ticks" -v r="$runs" -v w="$window" \
    'BEGIN {printf "analyser: %.3f ms of CPU a run, %.0f runs/s, %.1f%% of a core\n", (r ? c / t * 1000 / r : 0), r / w, c / t / w * 100}'
# What the observed runs' rows take (the runs' aggregates with the span families' counters
# they hold), read with Python's sqlite3 while the daemon runs (WAL: readers see the last commit).
python3 - "$dir/data/stats.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
n, avg = db.execute("SELECT count(*), avg(length(data)) FROM run_stats").fetchone()
print(f"stats.db: {n} run rows, {avg or 0:.1f} bytes of data a row")
PY
