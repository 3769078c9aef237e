# Shared by the bench scripts (sourced, from the repository root): the release binaries, a hub on
# a free port, timing one `taskhub submit`, and a headless Chromium tab on the join link.

bin=target/release
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# start_hub [serve flags...]: `taskhub serve` on a free port, stopped on exit; exports TASKHUB_URL
# (from the hub's --ready-json line).
start_hub() {
  local fifo
  fifo=$(mktemp -u); mkfifo "$fifo"
  $bin/taskhub serve --listen 127.0.0.1:0 --ready-json "$@" >"$fifo" &
  pids+=($!)
  TASKHUB_URL=$(head -1 "$fifo" | python3 -c 'import json, sys; print(json.load(sys.stdin)["url"])')
  rm -f "$fifo"
  export TASKHUB_URL
}

# submit_rate QUEUE KIND GENERATOR N WARMUP: submit WARMUP tasks, then time N (payloads from
# `GENERATOR COUNT`, one per line, results back at the producer); prints tasks/s.
submit_rate() {
  local queue=$1 kind=$2 gen=$3 n=$4 warmup=$5 payloads t0 t1
  payloads=$($gen "$n")
  # shellcheck disable=SC2046
  $bin/taskhub submit "$queue" $($gen "$warmup") --kind "$kind" --timeout 60 >/dev/null
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086
  $bin/taskhub submit "$queue" $payloads --kind "$kind" --timeout 600 >/dev/null
  t1=$(date +%s.%N)
  python3 -c "print(round($n / ($t1 - $t0)))"
}
squares() { seq 1 "$1"; }

# python_client: this checkout's Python client in target/python-venv (made when missing); sets
# venv and py.
python_client() {
  venv=target/python-venv
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade ./python
  py=$PWD/$venv/bin/python
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_nats DIR: Debian's `nats-server -js` on a free port with its store in DIR, stopped on
# exit; sets NATS_URL and nats_port.
start_nats() {
  nats_port=$(free_port)
  PATH=$PATH:/usr/sbin nats-server -a 127.0.0.1 -p "$nats_port" -js -sd "$1" >/dev/null 2>&1 &
  pids+=($!)
  NATS_URL=nats://127.0.0.1:$nats_port
  sleep 1
}

# open_tab FRAGMENT: a headless Chromium tab on the hub's join link with `#token=…&FRAGMENT` (a
# token that may consume any queue); waits until the hub counts it. Sets tab_pid and tab_profile
# for close_tab.
open_tab() {
  tab_profile=$(mktemp -d)
  local token
  token=$($bin/taskhub token create --queue '>' --consume --ttl 1h 2>/dev/null)
  chromium --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage \
    --disable-background-networking --disable-component-update --disable-sync --no-first-run \
    --disable-quic --user-data-dir="$tab_profile" \
    "${TASKHUB_URL/ws:/http:}/#token=$token&$1" >/dev/null 2>&1 &
  tab_pid=$!
  for _ in $(seq 1 100); do
    [ "$($bin/taskhub stats --json | grep -c '"browser": 1')" -gt 0 ] && break
    sleep 0.1
  done
}
close_tab() {
  kill "$tab_pid"; wait "$tab_pid" 2>/dev/null || true
  sleep 0.5; rm -rf "$tab_profile" 2>/dev/null || true
}
