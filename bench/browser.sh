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
. bench/lib.sh
start_hub

echo "$N square tasks, one tab with $T compute threads vs one native worker --concurrency $T (tasks/s)"
printf '%-6s %10s %10s\n' round tab native
for r in $(seq 1 "$ROUNDS"); do
  open_tab "queue=tab&workers=$T"
  tab=$(submit_rate tab square squares "$N" 500)
  close_tab
  $bin/taskhub-worker --queue native --concurrency "$T" >/dev/null 2>&1 &
  w=$!
  native=$(submit_rate native square squares "$N" 500)
  kill -TERM "$w"; wait "$w" 2>/dev/null || true
  printf '%-6s %10s %10s\n' "$r" "$tab" "$native"
done
