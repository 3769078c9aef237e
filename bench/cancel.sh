#!/usr/bin/env bash
# `cancel` of a running `sleep 10000` as users run it: `taskhub serve` with default flags, then a
# `taskhub-worker --concurrency 1` and a headless Chromium tab with one compute thread, each
# measured by bench/cancel.py (time from the cancel to the next task's result, next to the same
# worker's plain round trip). Issue 15's target: the worker is free in under 100 ms.
#
# Usage: bench/cancel.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
export TASKHUB_KEY=bench-key-$$ RUST_LOG=warn

cargo build --release --quiet --bin taskhub --bin taskhub-worker
. bench/lib.sh
python_client
echo "machine: $(nproc) cores, $(uname -sr), $(date -u +%F)"
start_hub

echo "== native: taskhub-worker --concurrency 1"
$bin/taskhub-worker --queue native --concurrency 1 >/dev/null 2>&1 &
pids+=($!)
"$venv/bin/python" bench/cancel.py "$TASKHUB_URL" native "${1:-30}"

echo "== browser: one tab, workers=1, the built-in (Rust) handlers"
open_tab "queue=tab&workers=1"
"$venv/bin/python" bench/cancel.py "$TASKHUB_URL" tab "${1:-30}"
close_tab
