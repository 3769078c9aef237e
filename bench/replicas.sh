#!/usr/bin/env bash
# Redundant tasks as users run them: `taskhub serve` with default flags, W `taskhub-worker`s, one
# `taskhub submit` of N `square` tasks per round (results back at the producer), ROUNDS
# interleaved rounds of:
#   plain        the tasks run once (the baseline);
#   replicas 2   `--replicas 2` (both runs must agree): twice the runs, one result per task;
#   replicas 3   `--replicas 3 --quorum 2`, with a third worker.
# With BASE=<commit>, the same plain rounds on a hub built from that commit (in its own target
# directory), interleaved: what the dispatch path's replica check costs tasks put without it.
#
# Usage: bench/replicas.sh [N] [ROUNDS]      (BASE=3c79cbd bench/replicas.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
ROUNDS=${2:-3}
W=2
export TASKHUB_KEY=bench-key-$$ RUST_LOG=warn

cargo build --release --quiet --bin taskhub --bin taskhub-worker
. bench/lib.sh
echo "machine: $(nproc) cores, $(uname -sr), $(date -u +%F)"

base_bin=
if [ -n "${BASE:-}" ]; then
  base_dir=target/bench-base
  rm -rf "$base_dir/src" && mkdir -p "$base_dir"
  git worktree add --force --detach "$base_dir/src" "$BASE" >/dev/null 2>&1 ||
    git -C "$base_dir/src" checkout --quiet --detach "$BASE"
  CARGO_TARGET_DIR=$PWD/$base_dir/target cargo build --release --quiet \
    --manifest-path "$base_dir/src/Cargo.toml" --bin taskhub
  git worktree remove --force "$base_dir/src" >/dev/null 2>&1 || true
  base_bin=$base_dir/target/release/taskhub
fi

# rate HUB_BIN WORKERS [submit flags...]: a fresh hub from HUB_BIN, WORKERS workers, a warm-up,
# then N timed; prints tasks/s (tasks answered, not runs).
rate() {
  local hub_bin=$1 workers=$2; shift 2
  local saved=$bin ws=() t0 t1 payloads
  bin=$(dirname "$hub_bin") start_hub 2>/dev/null
  bin=$saved
  for i in $(seq 1 "$workers"); do
    $bin/taskhub-worker --queue rep --name "w$i" >/dev/null 2>&1 & ws+=($!)
  done
  payloads=$(seq 1 "$N")
  $bin/taskhub submit rep $(seq 1 1000) --kind square --timeout 60 "$@" >/dev/null
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086
  $bin/taskhub submit rep $payloads --kind square --timeout 600 "$@" >/dev/null
  t1=$(date +%s.%N)
  kill -TERM "${ws[@]}" "${pids[-1]}"; wait "${ws[@]}" "${pids[-1]}" 2>/dev/null || true
  python3 -c "print(round($N / ($t1 - $t0)))"
}

printf '%-6s%12s%12s%14s%14s\n' round plain base replicas-2 replicas-3
for r in $(seq 1 "$ROUNDS"); do
  plain=$(rate $bin/taskhub $W)
  base=-
  [ -n "$base_bin" ] && base=$(rate "$base_bin" $W)
  two=$(rate $bin/taskhub $W --replicas 2)
  three=$(rate $bin/taskhub 3 --replicas 3 --quorum 2)
  printf '%-6s%12s%12s%14s%14s\n' "$r" "$plain" "$base" "$two" "$three"
done
