#!/usr/bin/env bash
# taskhub against the seed pattern (Python multiprocessing.managers), same N and W, same machine,
# one run. Usage: bench/compare.sh [N] [W]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
W=${2:-2}

cargo build --release --quiet --bin taskhub
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
PY
