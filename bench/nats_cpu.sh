#!/usr/bin/env bash
# CPU time per task of each process when one hub on NATS JetStream serves a submit: a fresh
# `nats-server -js`, `taskhub serve --backend` and W `taskhub-worker`s with default flags, one
# `taskhub submit` of N `square` tasks (after a warm-up of 1,000). Steadier than the rate on a
# shared machine; with PERF=1 the hub is also recorded with perf (call graphs) to /tmp/hub.perf.
# Usage: bench/nats_cpu.sh [N] [W]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-50000}
W=${2:-2}
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet --bin taskhub --bin taskhub-worker
export TASKHUB_KEY=bench-key-$$ RUST_LOG=warn
. bench/lib.sh
start_nats "$(mktemp -d)"
nats_pid=${pids[-1]}
start_hub --backend "$NATS_URL"
hub_pid=${pids[-1]}
workers=()
for _ in $(seq 1 "$W"); do
  $bin/taskhub-worker --hub "$TASKHUB_URL" --queue real >/dev/null 2>&1 &
  workers+=($!); pids+=($!)
done
# cpu PID...: user + system clock ticks of the processes, added up.
cpu() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
# shellcheck disable=SC2046
$bin/taskhub submit real $(squares 1000) --kind square --timeout 60 >/dev/null
payloads=$(squares "$N")
h0=$(cpu "$hub_pid"); n0=$(cpu "$nats_pid"); w0=$(cpu "${workers[@]}")
if [ "${PERF:-0}" = 1 ]; then
  perf record -F 2999 --call-graph dwarf,16384 -o /tmp/hub.perf -p "$hub_pid" 2>/dev/null & perf_pid=$!
  sleep 0.3
fi
t0=$(date +%s.%N)
TIMEFORMAT='%U %S'
# shellcheck disable=SC2086
{ time $bin/taskhub submit real $payloads --kind square --timeout 600 >/dev/null; } \
  2>"${TMPDIR:-/tmp}/submit.$$"
t1=$(date +%s.%N)
if [ "${PERF:-0}" = 1 ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
h1=$(cpu "$hub_pid"); n1=$(cpu "$nats_pid"); w1=$(cpu "${workers[@]}")
read -r su ss < <(tail -1 "${TMPDIR:-/tmp}/submit.$$"); rm -f "${TMPDIR:-/tmp}/submit.$$"
tick=$(getconf CLK_TCK)
python3 - "$N" "$t0" "$t1" "$tick" "$h0" "$h1" "$n0" "$n1" "$w0" "$w1" "$su" "$ss" <<'PY'
import sys
n, t0, t1, tick, h0, h1, n0, n1, w0, w1, su, ss = map(float, sys.argv[1:])
us = lambda ticks: ticks / tick * 1e6 / n
print(f"{n / (t1 - t0):.0f} tasks/s; CPU per task: hub {us(h1 - h0):.1f} us, nats-server "
      f"{us(n1 - n0):.1f} us, workers {us(w1 - w0):.1f} us, producer {(su + ss) * 1e6 / n:.1f} us")
PY
