#!/usr/bin/env bash
# taskhub against the seed pattern (Python multiprocessing.managers), same N and W, same machine,
# one run; then taskhub as users run it: real processes (`taskhub serve`, W `taskhub-worker`, one
# `taskhub submit` of N `square` tasks) with default flags, next to the same with a hand-tuned
# `--prefetch 256` and with `--prefetch 4` (the fixed default before the adaptive window, for
# 2 CPUs), and the strongest peers running the same job with their own Rust clients
# (bench/peers: NATS core request/reply, NATS JetStream work queue, a Redis reliable queue;
# Debian's nats-server and redis-server on free ports), ROUNDS interleaved rounds.
# Usage: bench/compare.sh [N] [W] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
W=${2:-2}
ROUNDS=${3:-3}

cargo build --release --quiet --bin taskhub --bin taskhub-worker
# The peers' clients live in their own workspace, built into the same target directory.
CARGO_TARGET_DIR=$PWD/target cargo build --release --quiet --manifest-path bench/peers/Cargo.toml
if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ] || ! command -v redis-server >/dev/null; then
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y nats-server redis-server
fi
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), $(date -u +%F)"

seed=$(python3 bench/seed.py "$N" "$W")
hub=$(target/release/taskhub bench --tasks "$N" --workers "$W" --json)
target/release/taskhub bench --tasks "$N" --workers "$W"

python3 - "$seed" "$hub" <<'PY'
import json, sys
seed, hub = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print()
print(f"{'':24}{'seed (managers)':>18}{'taskhub':>14}{'ratio':>10}")
s, t = seed["tasks_per_sec"], hub["tasks_per_sec"]
print(f"{'tasks/s, end to end':24}{s:>18,.0f}{t:>14,.0f}{t / s:>9.1f}x")
for label, key in [("sequential p50 (us)", "sequential_latency"), ("connect+auth p50 (us)", "connect_auth")]:
    a, b = seed[key]["p50_us"], hub[key]["p50_us"]
    print(f"{label:24}{a:>18,.0f}{b:>14,.0f}{a / b:>9.1f}x")
for label, key in [("sequential p99 (us)", "sequential_latency")]:
    a, b = seed[key]["p99_us"], hub[key]["p99_us"]
    print(f"{label:24}{a:>18,.0f}{b:>14,.0f}{a / b:>9.1f}x")
print(f"{'hub CPU per task (us)':24}{'':>18}{hub['hub_cpu_us_per_task']:>14.2f}")
print(f"{'hub peak RSS (MiB)':24}{'':>18}{hub['hub_peak_rss_kib'] / 1024:>14.1f}")
PY

# Real processes. One hub for all rounds; each round starts W workers with the given flags, warms
# them up, times one `taskhub submit` of N tasks (results back at the producer), and stops them.
export TASKHUB_KEY=bench-key-$$ RUST_LOG=warn
. bench/lib.sh
start_hub
round() { # worker flags...
  local ws=()
  for _ in $(seq 1 "$W"); do $bin/taskhub-worker --queue real "$@" >/dev/null 2>&1 & ws+=($!); done
  submit_rate real square squares "$N" 1000
  kill -TERM "${ws[@]}"; wait "${ws[@]}" 2>/dev/null || true
}

# The peers' servers, as installed, on free ports.
start_nats "$(mktemp -d)"
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" >/dev/null 2>&1 &
pids+=($!)
sleep 1
peer() { # system url
  target/release/peers "$1" --url "$2" --tasks "$N" --workers "$W" \
    | python3 -c 'import json, sys; print(round(json.load(sys.stdin)["tasks_per_sec"]))'
}

echo
echo "real processes, $W workers, $N square tasks, results back at the producer (tasks/s)"
printf '%-6s %12s %14s %12s %12s %12s %12s %9s %9s\n' round "taskhub" "--prefetch 256" "--prefetch 4" \
  "NATS core" "JetStream" "Redis" "th/256" "th/NATS"
for r in $(seq 1 "$ROUNDS"); do
  d=$(round)
  nc=$(peer nats-core "nats://127.0.0.1:$nats_port")
  t=$(round --prefetch 256)
  js=$(peer jetstream "nats://127.0.0.1:$nats_port")
  f=$(round --prefetch 4)
  rd=$(peer redis "redis://127.0.0.1:$redis_port")
  printf '%-6s %12s %14s %12s %12s %12s %12s %8.2fx %8.2fx\n' "$r" "$d" "$t" "$f" "$nc" "$js" "$rd" \
    "$(python3 -c "print($d / $t)")" "$(python3 -c "print($d / $nc)")"
done
echo "(taskhub: default flags unless named; peers: bench/peers with their own Rust clients)"

# One-at-a-time round trips: taskhub's from `taskhub bench` above, NATS core request/reply here.
nats_p50=$(target/release/peers nats-core --url "nats://127.0.0.1:$nats_port" --tasks 1000 --workers "$W" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["sequential_p50_us"])')
floor_p50=$(target/release/peers pingpong --sequential 2000 \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["sequential_p50_us"])')
python3 - "$hub" "$nats_p50" "$floor_p50" <<'PY'
import json, sys
hub, nats, floor = json.loads(sys.argv[1])["sequential_latency"]["p50_us"], float(sys.argv[2]), float(sys.argv[3])
print(f"\none at a time, p50: taskhub {hub:.0f} us, NATS core request/reply {nats:.0f} us ({hub / nats:.2f}x);")
print(f"floor: a blocking TCP ping-pong on loopback, {floor:.0f} us (a task is two hops: producer-hub-worker and back)")
PY
