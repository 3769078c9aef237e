#!/usr/bin/env bash
# Where the machine's CPU goes per task, for the same job three ways in one run: an embedded hub,
# a hub on NATS JetStream (`serve --backend`), and JetStream driven directly by its own Rust client
# (bench/peers jetstream). One fresh `nats-server -js`; W `taskhub-worker`s and one `taskhub
# submit` of N `square` tasks (after a warm-up of 1,000) with default flags. Per system and
# round: the rate, the CPU per task of each process (from their counters) and of the whole
# machine (/proc/stat), so the rate can be read as CPU: on a CPU-bound machine, rate = busy cores
# / CPU per task. With PERF=1 the hub on NATS is also recorded with perf (call graphs) to
# /tmp/hub.perf; NO_BUILD=1 measures the binaries in place.
# Usage: bench/nats_cpu.sh [N] [W] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-50000}
W=${2:-2}
ROUNDS=${3:-3}
if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release --quiet --bin taskhub --bin taskhub-worker
  CARGO_TARGET_DIR=$PWD/target cargo build --release --quiet --manifest-path bench/peers/Cargo.toml
fi
export TASKHUB_KEY=bench-key-$$ RUST_LOG=warn
. bench/lib.sh
start_nats "$(mktemp -d)"
nats_pid=${pids[-1]}
start_hub; embedded=$TASKHUB_URL; embedded_pid=${pids[-1]}
start_hub --backend "$NATS_URL"; on_nats=$TASKHUB_URL; on_nats_pid=${pids[-1]}
# cpu PID...: user + system clock ticks of the processes, added up.
cpu() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
# busy: clock ticks the whole machine spent busy (user, nice, system, irq, softirq).
busy() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
tick=$(getconf CLK_TCK)
payloads=$(squares "$N")
out=$(mktemp)

# hub_round NAME URL PID: W workers on the hub, one submit; a line of figures to $out.
hub_round() {
  local name=$1 url=$2 hub_pid=$3 ws=() h0 h1 n0 n1 w0 w1 b0 b1 t0 t1 su ss perf_pid=
  for _ in $(seq 1 "$W"); do
    $bin/taskhub-worker --hub "$url" --queue real >/dev/null 2>&1 & ws+=($!)
  done
  # shellcheck disable=SC2046
  TASKHUB_URL=$url $bin/taskhub submit real $(squares 1000) --kind square --timeout 60 >/dev/null
  if [ "${PERF:-0}" = 1 ] && [ "$name" = on_nats ]; then
    perf record -F 2999 --call-graph dwarf,16384 -o /tmp/hub.perf -p "$hub_pid" 2>/dev/null & perf_pid=$!
    sleep 0.3
  fi
  h0=$(cpu "$hub_pid"); n0=$(cpu "$nats_pid"); w0=$(cpu "${ws[@]}"); b0=$(busy)
  t0=$(date +%s.%N)
  TIMEFORMAT='%U %S'
  # shellcheck disable=SC2086
  { time TASKHUB_URL=$url $bin/taskhub submit real $payloads --kind square --timeout 600 >/dev/null; } \
    2>"$out.time"
  t1=$(date +%s.%N)
  h1=$(cpu "$hub_pid"); n1=$(cpu "$nats_pid"); w1=$(cpu "${ws[@]}"); b1=$(busy)
  if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
  kill -TERM "${ws[@]}"; wait "${ws[@]}" 2>/dev/null || true
  read -r su ss < <(tail -1 "$out.time")
  python3 - "$name" "$N" "$t0" "$t1" "$tick" "$((h1 - h0))" "$((n1 - n0))" "$((w1 - w0))" "$su" "$ss" \
    "$((b1 - b0))" >>"$out" <<'PY'
import sys
name = sys.argv[1]
n, t0, t1, tick, hub, nats, workers, su, ss, busy = map(float, sys.argv[2:])
us = lambda ticks: ticks / tick * 1e6 / n
print(name, round(n / (t1 - t0)), us(hub), us(nats), us(workers) + (su + ss) * 1e6 / n,
      us(busy), busy / tick / (t1 - t0))
PY
}

# js_round: bench/peers jetstream (it starts its own W workers); its clients' CPU is the
# machine's less nats-server's.
js_round() {
  local n0 n1 b0 b1 t0 t1 rate
  n0=$(cpu "$nats_pid"); b0=$(busy); t0=$(date +%s.%N)
  rate=$(target/release/peers jetstream --url "$NATS_URL" --tasks "$N" --workers "$W" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["tasks_per_sec"])')
  t1=$(date +%s.%N); n1=$(cpu "$nats_pid"); b1=$(busy)
  # The peer also runs 1,000 warm-up tasks and sets up its stream: counted per N + 1,000.
  python3 - "$N" "$rate" "$tick" "$((n1 - n0))" "$((b1 - b0))" "$t0" "$t1" >>"$out" <<'PY'
import sys
n, rate, tick, nats, busy, t0, t1 = map(float, sys.argv[1:])
us = lambda ticks: ticks / tick * 1e6 / (n + 1000)
print("jetstream", round(rate), 0.0, us(nats), us(busy) - us(nats), us(busy), busy / tick / (t1 - t0))
PY
}

for _ in $(seq 1 "$ROUNDS"); do
  hub_round embedded "$embedded" "$embedded_pid"
  hub_round on_nats "$on_nats" "$on_nats_pid"
  js_round
done
python3 - "$out" "$(nproc)" <<'PY'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r[0], []).append([float(x) for x in r[1:]])
print(f"{'system':10} {'tasks/s':>8} {'hub':>6} {'nats':>6} {'clients':>8} {'machine':>8} {'busy':>5}   (CPU µs per task; busy in cores of {sys.argv[2]})")
for name, rs in by.items():
    for r in rs:
        print(f"{name:10} {r[0]:8.0f} {r[1]:6.1f} {r[2]:6.1f} {r[3]:8.1f} {r[4]:8.1f} {r[5]:5.2f}")
med = {name: [st.median(c) for c in zip(*rs)] for name, rs in by.items()}
e, h, j = med["embedded"], med["on_nats"], med["jetstream"]
print(f"medians: hub on NATS / JetStream {h[0] / j[0]:.2f}x; hub CPU per task: on NATS {h[1]:.1f} µs, embedded {e[1]:.1f} µs")
# If the hub's work for NATS cost nothing (its CPU as the embedded hub's), the machine would
# spend this much per task through it; at JetStream's busy cores that is this rate.
floor = h[4] - (h[1] - e[1])
print(f"ceiling on this machine: hub's NATS work free -> {floor:.1f} µs of machine per task against "
      f"JetStream's {j[4]:.1f}: at most {j[4] / floor:.2f}x")
PY
rm -f "$out" "$out.time"
