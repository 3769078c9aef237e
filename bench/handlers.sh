#!/usr/bin/env bash
# Users' handlers against the built-ins, with real processes and default flags, in one run.
#
# 1. A custom Rust handler costs what a built-in does: the mandelbrot example's worker running its
#    own light kind `mandelbrot_point` (payload [0.5,0.5,1]: one point, one iteration) against
#    `taskhub-worker` running the built-in `echo` on the same payload, and `square` on integers
#    for scale. One worker process at a time, default flags, N tasks through `taskhub submit`,
#    ROUNDS alternating rounds.
# 2. Tiles/s of one browser tab (headless Chromium on the join link) against one native worker,
#    each rendering the full 1920x1080 image with `mandelbrot render`.
#
# Usage: bench/handlers.sh [N] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-50000}
ROUNDS=${2:-3}
KEY=bench-key-$$
export TASKHUB_KEY=$KEY RUST_LOG=warn

cargo build --release --quiet -p taskhub-cli -p taskhub-native-worker -p mandelbrot
. bench/lib.sh
bundle=target/bench-mandelbrot-bundle
$bin/mandelbrot bundle "$bundle" >/dev/null
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), $(date -u +%F)"

start_hub --worker-bundle "$bundle"
url=$TASKHUB_URL
echo "hub: $url"

# One round: start the worker, warm it up, time N tasks, stop it. Prints tasks/s.
round() { # kind payload-generator worker-command...
  local kind=$1 gen=$2; shift 2
  "$@" >/dev/null 2>&1 &
  local w=$!
  submit_rate "q-$kind" "$kind" "$gen" "$N" 100
  kill -TERM "$w"; wait "$w" 2>/dev/null || true
}
points() { yes '[0.5,0.5,1]' | head -n "$1"; }

echo
echo "1. custom handler vs built-in, $N tasks per round, default worker flags (tasks/s)"
printf '%-6s %14s %14s %18s %16s\n' round "square (int)" "echo [..]" "mandelbrot_point" "point/echo"
for r in $(seq 1 "$ROUNDS"); do
  a=$(round square squares $bin/taskhub-worker --queue q-square)
  e=$(round echo points $bin/taskhub-worker --queue q-echo)
  b=$(round mandelbrot_point points $bin/mandelbrot worker --queue q-mandelbrot_point)
  printf '%-6s %14s %14s %18s %15.2fx\n' "$r" "$a" "$e" "$b" "$(python3 -c "print($b / $e)")"
done

echo
echo "2. tiles/s, full 1920x1080 image (144 tiles, max_iter 1000): one tab vs one native worker"
render() { local out; out=$($bin/mandelbrot render --queue tiles --out target/bench-mandelbrot.png); echo "${out%%$'\n'*}"; }
for threads in ${THREADS:-1 2}; do
  open_tab "queue=tiles&bundle=mandelbrot&workers=$threads"
  render >/dev/null # warm-up: wasm tier-up
  echo "tab, $threads compute thread(s):      $(render)"
  close_tab
  $bin/mandelbrot worker --queue tiles --concurrency "$threads" >/dev/null 2>&1 &
  w=$!
  render >/dev/null
  echo "native, --concurrency $threads:          $(render)"
  kill -TERM "$w"; wait "$w" 2>/dev/null || true
done
