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
for label, key in [("sequential p50 (us)", "sequential_latency"), ("connect+auth p50 (us)", "connect_auth")]:
    a, b = seed[key]["p50_us"], hub[key]["p50_us"]
    print(f"{label:24}{a:>18,.0f}{b:>14,.0f}{a / b:>9.1f}x")
for label, key in [("sequential p99 (us)", "sequential_latency")]:
    a, b = seed[key]["p99_us"], hub[key]["p99_us"]
    print(f"{label:24}{a:>18,.0f}{b:>14,.0f}{a / b:>9.1f}x")
print(f"{'hub CPU per task (us)':24}{'':>18}{hub['hub_cpu_us_per_task']:>14.2f}")
print(f"{'hub peak RSS (MiB)':24}{'':>18}{hub['hub_peak_rss_kib'] / 1024:>14.1f}")
PY
