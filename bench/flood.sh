#!/usr/bin/env bash
# A client with the key against a flood of idle sockets: `taskhub serve` with default flags (or
# the flags given), N sockets from one Python process on another loopback address (half plain
# TCP, half upgraded to WebSocket and then silent) reopened as soon as the hub drops any, and 40
# `taskhub stats` with the key, each timed. Needs `ulimit -n` above N.
# Usage: bench/flood.sh [N] [serve flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-11000}; shift || true
cargo build --release --quiet --bin taskhub
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
key=$(mktemp); echo "flood-bench-key" > "$key"; chmod 600 "$key"
target/release/taskhub serve --listen "127.0.0.1:$port" --key-file "$key" "$@" >/dev/null 2>&1 &
hub=$!
trap 'kill $hub $flood 2>/dev/null; rm -f "$key"' EXIT
sleep 0.5
# From 127.0.0.2: another host, as a flood usually is (FLOOD_FROM=127.0.0.1 floods from the
# clients' own address, which the hub cannot tell apart from them).
python3 bench/flood.py 127.0.0.1 "$port" "$N" 3600 "${FLOOD_FROM:-127.0.0.2}" &
flood=$!
sleep 10
echo "established to the hub after 10 s of flood: $(ss -Htn state established "( sport = :$port )" | wc -l)"
ok=0; worst=0
for _ in $(seq 1 40); do
  t0=$(date +%s%N)
  if timeout 5 target/release/taskhub --hub "ws://127.0.0.1:$port" --key-file "$key" stats >/dev/null 2>&1; then
    ok=$((ok + 1))
  fi
  t=$(( ($(date +%s%N) - t0) / 1000000 ))
  [ "$t" -gt "$worst" ] && worst=$t
done
echo "$N idle sockets${*:+ ($*)}: $ok of 40 clients with the key got in; slowest $worst ms (CLI start included)"
