#!/usr/bin/env bash
# The node's issue-14 goals, measured the way the issue measured them: the node pinned to one core
# (core 0) in front of the zero-work reference upstream (`cloister bench upstream`, core 1), driven by
# wrk (core 1) at 1 and 32 connections, plain and streamed; the upstream called directly by wrk from
# the other core in the same round. Prints one line per cell and a summary of medians.
# Usage: scripts/profile/node-goals.sh [BINARY]   (ROUNDS=2 SECS=10 by default; needs wrk and taskset)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-target/release/cloister}
rounds=${ROUNDS:-2}; secs=${SECS:-10}
command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)" >&2; exit 1; }
up_port=18400; node_port=18401
taskset -c 1 "$bin" --log warn bench upstream --listen "127.0.0.1:$up_port" 2>/dev/null & up=$!
taskset -c 0 "$bin" --log warn node run --upstream "http://127.0.0.1:$up_port/v1" --upstream-model ref-model \
  --dev-simulated-tee --listen "127.0.0.1:$node_port" >/dev/null 2>&1 & node=$!
trap 'kill $up $node 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "127.0.0.1:$node_port/v1/models" >/dev/null && break; sleep 0.1; done
results=$(mktemp)
# cell NAME CORE URL CONNS STREAM -> "NAME rps p50_ms"
cell() {
  local out rps p50
  out=$(STREAM=$5 taskset -c "$2" wrk -t1 -c"$4" -d"${secs}s" --latency -s "$here/goals.lua" "$3")
  rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  p50=$(echo "$out" | awk '$1=="50%"{v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}')
  echo "$1 $rps $p50" | tee -a "$results"
}
direct="http://127.0.0.1:$up_port/v1/chat/completions"
via="http://127.0.0.1:$node_port/v1/chat/completions"
for r in $(seq "$rounds"); do
  for stream in 0 1; do
    mode=$([ "$stream" = 1 ] && echo streamed || echo plain)
    for c in 1 32; do
      # Warm both paths, then measure direct and via the node back to back.
      STREAM=$stream taskset -c 1 wrk -t1 -c"$c" -d1s -s "$here/goals.lua" "$via" >/dev/null
      echo -n "round $r: "; cell "$mode-c$c-direct" 0 "$direct" "$c" "$stream"
      echo -n "round $r: "; cell "$mode-c$c-node" 1 "$via" "$c" "$stream"
    done
  done
done
echo
echo "medians over $rounds rounds (req/s, p50 ms):"
awk '{rps[$1]=rps[$1]" "$2; p50[$1]=p50[$1]" "$3}
  function med(s,  a,n,i,j,t){n=split(s,a," "); for(i=1;i<=n;i++)for(j=i+1;j<=n;j++)if(a[j]+0<a[i]+0){t=a[i];a[i]=a[j];a[j]=t}; return n%2?a[(n+1)/2]:(a[n/2]+a[n/2+1])/2}
  END{for(k in rps) printf "%-22s %10.0f req/s  p50 %.3f ms\n", k, med(rps[k]), med(p50[k])}' "$results" | sort
for mode in plain streamed; do
  awk -v m="$mode" '{rps[$1]=rps[$1]" "$2; p50[$1]=p50[$1]" "$3}
    function med(s,  a,n,i,j,t){n=split(s,a," "); for(i=1;i<=n;i++)for(j=i+1;j<=n;j++)if(a[j]+0<a[i]+0){t=a[i];a[i]=a[j];a[j]=t}; return n%2?a[(n+1)/2]:(a[n/2]+a[n/2+1])/2}
    END{printf "%s: added p50 at c=1 %+.3f ms; c=32 node %.0f req/s = %.2fx the upstream direct\n", m,
      med(p50[m"-c1-node"])-med(p50[m"-c1-direct"]), med(rps[m"-c32-node"]), med(rps[m"-c32-node"])/med(rps[m"-c32-direct"])}' "$results"
done
rm -f "$results"
