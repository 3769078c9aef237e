#!/usr/bin/env bash
# Delayed tasks, as users run them: `taskhub serve` with default flags, the Python client putting
# and taking. What N waiting tasks cost the hub's CPU (against the same hub idle), and how late
# delayed tasks arrive (against tasks with no delay, timed the same way). bench/schedule.py says
# how.
#
# Usage: bench/schedule.sh [N] [M] [WINDOW_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
KEY=bench-key-$$
export TASKHUB_KEY=$KEY RUST_LOG=warn

cargo build --release --quiet --bin taskhub
. bench/lib.sh
python_client
echo "machine: $(nproc) cores, $(uname -sr), $(date -u +%F)"
start_hub
"$venv/bin/python" bench/schedule.py "$TASKHUB_URL" "${pids[-1]}" "${1:-100000}" "${2:-300}" "${3:-10}"
