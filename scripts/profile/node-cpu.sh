#!/usr/bin/env bash
# The node's CPU per request, A/B: each binary in turn runs `cloister node run --upstream` in front
# of a minimal keep-alive upstream (fast_upstream.py) and takes wrk's load (chat.lua: a plain chat
# completion, 8 connections); the node's CPU time comes from /proc. With PERF=1 it also records a
# perf profile of each binary's last round (perf-<name>.data).
# Usage: scripts/profile/node-cpu.sh ROUNDS BINARY [BINARY ...]   (needs wrk: apt-get install wrk)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
rounds=$1; shift
command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)" >&2; exit 1; }
up_port=18300; node_port=18301
python3 "$here/fast_upstream.py" "$up_port" & up=$!
trap 'kill $up 2>/dev/null || true' EXIT
sleep 1
tick=$(getconf CLK_TCK)
for r in $(seq "$rounds"); do
  for bin in "$@"; do
    "$bin" node run --upstream "http://127.0.0.1:$up_port/v1" --upstream-model m --dev-simulated-tee \
      --listen "127.0.0.1:$node_port" --log warn >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -sf "127.0.0.1:$node_port/v1/models" >/dev/null && break; sleep 0.1; done
    wrk -t1 -c8 -d2s -s "$here/chat.lua" "http://127.0.0.1:$node_port/v1/chat/completions" >/dev/null
    if [ "${PERF:-0}" = 1 ] && [ "$r" = "$rounds" ]; then
      perf record -q -F 2000 -g -p "$pid" -o "perf-$(basename "$bin").data" -- sleep 8 >/dev/null 2>&1 &
    fi
    t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
    out=$(wrk -t1 -c8 -d8s -s "$here/chat.lua" "http://127.0.0.1:$node_port/v1/chat/completions")
    t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
    sleep 0.5  # perf (PERF=1) records for 8 s, as long as the measured run
    n=$(echo "$out" | awk '/requests in/{print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
    lat=$(echo "$out" | awk '/Latency/{print $2}')
    echo "round $r $bin: $rps req/s, mean latency $lat, node CPU $(( (t1 - t0) * 1000000 / tick / n )) us/request ($n requests)"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
