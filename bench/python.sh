#!/usr/bin/env bash
# Python workers on `square` beside taskhub-worker and the seed's pattern, real processes, default
# flags, one run, ROUNDS interleaved rounds. W worker processes each (the seed: W processes doing
# get/put on the managers server; taskhub: W worker processes on one `taskhub serve`).
#
#   worker  the worker alone: N tasks from one `taskhub submit` (the Rust CLI), results back to it;
#   python  the whole job in Python: N tasks from bench/python_submit.py (taskhub's Python client)
#           to W `python -m taskhub worker`, next to the seed (bench/seed.py: its master puts N and
#           gets N results) - the seed's users' job, both ends in Python.
#
# Usage: bench/python.sh [N] [W] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-50000}
W=${2:-1}
ROUNDS=${3:-3}
KEY=bench-key-$$
export TASKHUB_KEY=$KEY RUST_LOG=warn

cargo build --release --quiet --bin taskhub --bin taskhub-worker
. bench/lib.sh
python_client
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), $(date -u +%F), $("$py" --version)"
start_hub
echo "hub: $TASKHUB_URL; N=$N, W=$W worker process(es), default flags"

# workers QUEUE COMMAND...: W copies of COMMAND in the background; sets wpids.
workers() {
  wpids=()
  for _ in $(seq 1 "$W"); do (cd bench && exec "$@") >/dev/null 2>&1 & wpids+=($!); done
}
stop_workers() { kill -TERM "${wpids[@]}"; wait "${wpids[@]}" 2>/dev/null || true; }
pyworker=("$py" -m taskhub worker --queue)

printf '%-6s %16s %16s | %16s %16s %8s\n' round "taskhub-worker" "python worker" "python, both" "seed (managers)" ratio
for r in $(seq 1 "$ROUNDS"); do
  workers "$PWD/$bin/taskhub-worker" --queue q-native
  native=$(submit_rate q-native square squares "$N" 100)
  stop_workers
  workers "${pyworker[@]}" q-py square=pyhandlers:square
  python=$(submit_rate q-py square squares "$N" 100)
  both=$("$py" bench/python_submit.py q-py "$N")
  stop_workers
  seed=$(python3 bench/seed.py "$N" "$W" 10 | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["tasks_per_sec"]))')
  printf '%-6s %16s %16s | %16s %16s %7.1fx\n' "$r" "$native" "$python" "$both" "$seed" "$(python3 -c "print($both / $seed)")"
done
