#!/usr/bin/env bash
# Tiny tasks through one browser tab: headless Chromium on the join link with `workers=T` compute
# threads, against one native worker with `--concurrency T`, same hub, same N `square` tasks
# through `taskhub submit`, ROUNDS alternating rounds. Issue 9's target for the tab: 30,000/s.
#
# Usage: bench/browser.sh [N] [ROUNDS] [T]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
ROUNDS=${2:-3}
T=${3:-2}
export TASKHUB_KEY=bench-key-$$ RUST_LOG=warn

cargo build --release --quiet --bin taskhub --bin taskhub-worker
bin=target/release
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
fifo=$(mktemp -u); mkfifo "$fifo"
$bin/taskhub serve --listen 127.0.0.1:0 >"$fifo" &
pids+=($!)
url=$(head -1 "$fifo" | awk '{print $NF}'); rm -f "$fifo"
export TASKHUB_URL=$url
payloads=$(seq 1 "$N")

timed() { # queue
  $bin/taskhub submit "$1" $(seq 1 500) --kind square --timeout 60 >/dev/null
  local t0 t1
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086
  $bin/taskhub submit "$1" $payloads --kind square --timeout 600 >/dev/null
  t1=$(date +%s.%N)
  python3 -c "print(round($N / ($t1 - $t0)))"
}

echo "$N square tasks, one tab with $T compute threads vs one native worker --concurrency $T (tasks/s)"
printf '%-6s %10s %10s\n' round tab native
for r in $(seq 1 "$ROUNDS"); do
  profile=$(mktemp -d)
  chromium --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage \
    --disable-background-networking --disable-component-update --disable-sync --no-first-run \
    --user-data-dir="$profile" "${url/ws:/http:}/#key=$TASKHUB_KEY&queue=tab&workers=$T" \
    >/dev/null 2>&1 &
  chrome=$!
  for _ in $(seq 1 100); do
    $bin/taskhub stats --json | grep -q '"browser": 1' && break
    sleep 0.1
  done
  tab=$(timed tab)
  kill "$chrome"; wait "$chrome" 2>/dev/null || true; sleep 0.5; rm -rf "$profile" 2>/dev/null || true
  $bin/taskhub-worker --queue native --concurrency "$T" >/dev/null 2>&1 &
  w=$!
  native=$(timed native)
  kill -TERM "$w"; wait "$w" 2>/dev/null || true
  printf '%-6s %10s %10s\n' "$r" "$tab" "$native"
done
