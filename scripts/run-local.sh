#!/usr/bin/env bash
# run-local.sh - what `make run` runs after building: a throw-away local etcd and etcdseal in
# front of it, both on 127.0.0.1 only.
#
#   etcd      client 127.0.0.1:23799, peer 127.0.0.1:23798, data in run/etcd, log run/etcd.log
#   etcdseal  build/etcdseal proxy --config conf/etcdseal.yaml (listen 127.0.0.1:23790,
#             metrics 127.0.0.1:23789), with conf/encryption-config.yaml copied to
#             run/encryption-config.yaml (mode 0600)
#
# Usage: scripts/run-local.sh [extra etcdseal proxy flags...]
# Env:   ETCDSEAL_BIN (default build/etcdseal), ETCDSEAL_CONF (default conf/etcdseal.yaml),
#        ETCD_STARTUP_TIMEOUT / PROXY_STARTUP_TIMEOUT (seconds, default 15 / 15)
# Ctrl-C or SIGTERM stops both processes (by PID). A port already in use is an error.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${ETCDSEAL_BIN:-build/etcdseal}
CONF=${ETCDSEAL_CONF:-conf/etcdseal.yaml}
RUN_DIR=run
ETCD_CLIENT_PORT=23799
ETCD_PEER_PORT=23798
ETCD_STARTUP_TIMEOUT=${ETCD_STARTUP_TIMEOUT:-15}
PROXY_STARTUP_TIMEOUT=${PROXY_STARTUP_TIMEOUT:-15}
ETCD_PID=""
PROXY_PID=""

say() { echo "run-local: $*" >&2; }
die() { say "error: $*"; exit 1; }

# Port of `key: host:port` in the proxy config (empty if the key is absent or commented out).
conf_port() {
  sed -n "s/^$1:[[:space:]]*[\"']\{0,1\}\([^\"' #]*\).*/\1/p" "$CONF" | head -1 | sed 's/.*://'
}

# Fails if something already listens on (or holds) 127.0.0.1:$1.
require_free_port() {
  local port=$1 what=$2
  if ! python3 - "$port" <<'EOF' 2>/dev/null; then
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.close()
EOF
    local owner
    owner=$(ss -Hltnp "sport = :$port" 2>/dev/null | sed -n 's/.*users:((\("[^"]*"\),pid=\([0-9]*\).*/\1 (pid \2)/p' | head -1)
    die "port $port ($what) on 127.0.0.1 is already in use${owner:+ by $owner}; stop that process (an earlier \`make run\`?) or free the port"
  fi
}

# Stops one process we started: SIGTERM, up to 10 s, then SIGKILL.
stop_pid() {
  local pid=$1 name=$2
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  say "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "$name (pid $pid) did not stop in 10 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  trap - INT TERM EXIT
  stop_pid "$PROXY_PID" etcdseal
  PROXY_PID=""
  stop_pid "$ETCD_PID" etcd
  ETCD_PID=""
}
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap cleanup EXIT

# ---------------------------------------------------------------- checks
command -v etcd >/dev/null || die "etcd not found (Debian package etcd-server; run scripts/install-deps.sh)"
command -v etcdctl >/dev/null || die "etcdctl not found (Debian package etcd-client)"
[ -x "$BIN" ] || die "$BIN not found; run \`make\` first"
[ -f "$CONF" ] || die "config $CONF not found"
PROXY_PORT=$(conf_port listen-addr)
METRICS_PORT=$(conf_port metrics-addr)
PROXY_PORT=${PROXY_PORT:-23790}

require_free_port "$ETCD_CLIENT_PORT" "etcd client"
require_free_port "$ETCD_PEER_PORT" "etcd peer"
require_free_port "$PROXY_PORT" "etcdseal listen-addr"
[ -z "$METRICS_PORT" ] || require_free_port "$METRICS_PORT" "etcdseal metrics-addr"

mkdir -p "$RUN_DIR"
chmod 0700 "$RUN_DIR"
# Git cannot store mode 0600; the proxy refuses key files others can read.
install -m 0600 conf/encryption-config.yaml "$RUN_DIR/encryption-config.yaml"

# ---------------------------------------------------------------- etcd
[ "$(uname -m)" = aarch64 ] && export ETCD_UNSUPPORTED_ARCH=arm64
say "starting etcd on 127.0.0.1:$ETCD_CLIENT_PORT (data $RUN_DIR/etcd, log $RUN_DIR/etcd.log)"
etcd --name etcdseal-local --data-dir "$RUN_DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "etcdseal-local=http://127.0.0.1:$ETCD_PEER_PORT" \
  >"$RUN_DIR/etcd.log" 2>&1 &
ETCD_PID=$!

deadline=$((SECONDS + ETCD_STARTUP_TIMEOUT))
until ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$ETCD_CLIENT_PORT" --dial-timeout=1s \
  --command-timeout=2s endpoint health >/dev/null 2>&1; do
  if ! kill -0 "$ETCD_PID" 2>/dev/null; then
    tail -n 20 "$RUN_DIR/etcd.log" >&2
    die "etcd exited during startup (log above, full log $RUN_DIR/etcd.log)"
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    tail -n 20 "$RUN_DIR/etcd.log" >&2
    die "etcd did not become healthy within ${ETCD_STARTUP_TIMEOUT}s"
  fi
  sleep 0.2
done
say "etcd is healthy (pid $ETCD_PID)"

# ---------------------------------------------------------------- etcdseal
say "starting $BIN proxy --config $CONF $*"
"$BIN" proxy --config "$CONF" "$@" &
PROXY_PID=$!

deadline=$((SECONDS + PROXY_STARTUP_TIMEOUT))
until ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$PROXY_PORT" --dial-timeout=1s \
  --command-timeout=2s endpoint health >/dev/null 2>&1; do
  if ! kill -0 "$PROXY_PID" 2>/dev/null; then
    rc=0
    wait "$PROXY_PID" || rc=$?
    PROXY_PID=""
    die "etcdseal exited during startup with status $rc (its messages are above)"
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    die "etcdseal did not answer on 127.0.0.1:$PROXY_PORT within ${PROXY_STARTUP_TIMEOUT}s"
  fi
  sleep 0.2
done

cat >&2 <<EOF

run-local: etcdseal (pid $PROXY_PID) on 127.0.0.1:$PROXY_PORT -> etcd (pid $ETCD_PID) on 127.0.0.1:$ETCD_CLIENT_PORT
  write and read through the proxy:
    ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:$PROXY_PORT put foo bar
    ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:$PROXY_PORT put /app/secrets/db-password hunter2
    ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:$PROXY_PORT get /app/secrets/db-password
  see what etcd stores (sealed: k8s:enc:secretbox:v1:...):
    ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:$ETCD_CLIENT_PORT get /app/secrets/db-password
EOF
[ -z "$METRICS_PORT" ] || echo "  metrics: curl -s http://127.0.0.1:$METRICS_PORT/metrics" >&2
echo "  Ctrl-C stops both." >&2

rc=0
wait "$PROXY_PID" || rc=$?
PROXY_PID=""
say "etcdseal exited with status $rc"
exit "$rc"
