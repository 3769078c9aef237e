#!/usr/bin/env bash
# taskhub with a data dir, as users run it: real processes with default flags (`taskhub serve
# --data-dir`, W `taskhub-worker`, one `taskhub submit` of N `square` tasks), in memory, with
# `--fsync always` (the default) and `--fsync interval=100ms`, next to a NATS JetStream work queue
# with file storage driven by its own Rust client (bench/peers), ROUNDS interleaved rounds on one
# machine. Then the restart figures: M queued 16-byte tasks, a clean stop, and the time until the
# restarted hub answers; and the disk bytes each queued task takes.
# Usage: bench/durable.sh [N] [W] [ROUNDS] [M]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
W=${2:-2}
ROUNDS=${3:-3}
M=${4:-1000000}

cargo build --release --quiet --bin taskhub --bin taskhub-worker
CARGO_TARGET_DIR=$PWD/target cargo build --release --quiet --manifest-path bench/peers/Cargo.toml
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), $(date -u +%F)"
echo "data dirs on: $(df --output=source,fstype "${TMPDIR:-/tmp}" | tail -1)"

export TASKHUB_KEY=bench-key-$$ RUST_LOG=warn
. bench/lib.sh
work=$(mktemp -d)
trap 'cleanup; rm -rf "$work"' EXIT

start_nats "$work/nats"

# One hub per mode, each with its own data dir; URLs by mode.
declare -A url
start_hub; url[memory]=$TASKHUB_URL
start_hub --data-dir "$work/always"; url[always]=$TASKHUB_URL
start_hub --data-dir "$work/interval" --fsync interval=100ms; url[interval]=$TASKHUB_URL
sleep 1

round() { # mode
  local ws=()
  export TASKHUB_URL=${url[$1]}
  for _ in $(seq 1 "$W"); do $bin/taskhub-worker --queue real >/dev/null 2>&1 & ws+=($!); done
  submit_rate real square squares "$N" 1000
  kill -TERM "${ws[@]}"; wait "${ws[@]}" 2>/dev/null || true
}
jetstream() {
  target/release/peers jetstream --url "nats://127.0.0.1:$nats_port" --tasks "$N" --workers "$W" \
    | python3 -c 'import json, sys; print(round(json.load(sys.stdin)["tasks_per_sec"]))'
}

echo
echo "real processes, $W workers, $N square tasks, results back at the producer (tasks/s)"
printf '%-6s %10s %10s %10s %12s %10s %10s\n' round memory always interval "JetStream" "always/JS" "intv/mem"
for r in $(seq 1 "$ROUNDS"); do
  m=$(round memory); a=$(round always); i=$(round interval); js=$(jetstream)
  printf '%-6s %10s %10s %10s %12s %9.2fx %9.2fx\n' "$r" "$m" "$a" "$i" "$js" \
    "$(python3 -c "print($a / $js)")" "$(python3 -c "print($i / $m)")"
done
echo "(taskhub: default flags but the storage ones; JetStream: work-queue stream, file storage, as installed)"

# Restart: a fresh hub, M queued 16-byte tasks (JSON strings of 14 characters) put 20,000 per
# CLI call, a clean stop, and a start on the same dir.
start_hub --data-dir "$work/restart"
hub_pid=${pids[-1]}
t0=$(date +%s.%N)
seq 1 "$M" | awk '{printf "\"%014d\"\n", $1}' | xargs -d '\n' -n 20000 $bin/taskhub put restart >/dev/null
t1=$(date +%s.%N)
bytes=$(du -sb "$work/restart/journal" | cut -f1)
echo
python3 -c "print(f'put $M 16-byte tasks with --fsync always: {$M / ($t1 - $t0):,.0f} tasks/s (20,000 per CLI call)')"
python3 -c "print(f'journal on disk: {$bytes / 1e6:.1f} MB, {$bytes / $M:.1f} bytes per queued task')"
kill -TERM "$hub_pid"; wait "$hub_pid" 2>/dev/null || true
port=${TASKHUB_URL##*:}
t0=$(date +%s.%N)
$bin/taskhub serve --listen "127.0.0.1:$port" --data-dir "$work/restart" >"$work/serve.out" &
pids+=($!)
until $bin/taskhub stats --json >/dev/null 2>&1; do sleep 0.01; done
t1=$(date +%s.%N)
depth=$($bin/taskhub stats --json | python3 -c 'import json, sys; print(next(q["depth"] for q in json.load(sys.stdin)["queues"] if q["name"] == "restart"))')
python3 -c "print(f'restart to first answer: {$t1 - $t0:.2f} s with {$depth:,} tasks queued')"
grep storage: "$work/serve.out"
