#!/usr/bin/env bash
# taskhub on NATS JetStream (`serve --backend`) as users run it: real processes with default flags,
# W `taskhub-worker`s, one `taskhub submit` of N `square` tasks (results back at the producer),
# next to the same job on an embedded hub, on two hubs sharing the NATS (producer on one, workers
# split over both), and on JetStream driven directly by its own Rust client (bench/peers
# jetstream: work-queue stream, pull consumer, explicit ack). One nats-server -js for all, ROUNDS
# interleaved rounds.
# Usage: bench/nats.sh [N] [W] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-50000}
W=${2:-2}
ROUNDS=${3:-3}

cargo build --release --quiet --bin taskhub --bin taskhub-worker
CARGO_TARGET_DIR=$PWD/target cargo build --release --quiet --manifest-path bench/peers/Cargo.toml
if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y nats-server
fi
echo "machine: $(nproc) cores, $(uname -sr), $(date -u +%F); $(PATH=$PATH:/usr/sbin nats-server --version)"

export TASKHUB_KEY=bench-key-$$ RUST_LOG=warn
. bench/lib.sh
start_nats "$(mktemp -d)"
nats=$NATS_URL

start_hub; embedded=$TASKHUB_URL
start_hub --backend "$nats"; on_nats=$TASKHUB_URL
start_hub --backend "$nats"; second=$TASKHUB_URL

# round PRODUCER_HUB WORKER_HUB...: W workers, spread over the worker hubs in turn; one submit
# through the producer's hub; prints tasks/s.
round() {
  local producer=$1; shift
  local hubs=("$@") ws=()
  for i in $(seq 0 $((W - 1))); do
    $bin/taskhub-worker --hub "${hubs[$((i % ${#hubs[@]}))]}" --queue real >/dev/null 2>&1 & ws+=($!)
  done
  TASKHUB_URL=$producer submit_rate real square squares "$N" 1000
  kill -TERM "${ws[@]}"; wait "${ws[@]}" 2>/dev/null || true
}
jetstream() {
  target/release/peers jetstream --url "$nats" --tasks "$N" --workers "$W" \
    | python3 -c 'import json, sys; print(round(json.load(sys.stdin)["tasks_per_sec"]))'
}

echo
echo "real processes, $W workers, $N square tasks, results back at the producer (tasks/s)"
printf '%-6s %10s %12s %12s %12s %12s %12s\n' round embedded "on NATS" "two hubs" JetStream \
  "NATS/JS" "NATS/emb"
for r in $(seq 1 "$ROUNDS"); do
  e=$(round "$embedded" "$embedded")
  n=$(round "$on_nats" "$on_nats")
  two=$(round "$on_nats" "$on_nats" "$second")
  js=$(jetstream)
  printf '%-6s %10s %12s %12s %12s %11.2fx %11.2fx\n' "$r" "$e" "$n" "$two" "$js" \
    "$(python3 -c "print($n / $js)")" "$(python3 -c "print($n / $e)")"
done
echo "(taskhub: serve and taskhub-worker with default flags; JetStream: bench/peers with async-nats)"
