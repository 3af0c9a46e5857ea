# shellcheck shell=bash disable=SC2034
# lib.sh - shared harness for the integration tests (sourced by tests/integration/*_test.sh).
#
# What it gives a test:
#   T                       per-test temp dir (under /dev/shm when writable), removed on exit
#   free_port               prints a free loopback port, reserved for this test until it exits
#   start_etcd NAME         single-member etcd on loopback; sets ETCD_EP_<NAME>, ETCD_PID_<NAME>
#   start_etcd_cluster N    N-member cluster c0..c(N-1); sets CLUSTER_EPS (comma list) and the
#                           per-member variables above; restart_member NAME restarts one member
#   start_proxy ARGS...     starts "$ES_BIN proxy ARGS..." (stderr to $T/proxy-<n>.log) and waits
#                           (bounded) until its --listen-addr accepts TCP; sets PROXY_PID,
#                           PROXY_LOG, PROXY_EP; wait_ready ADDR waits for /readyz 200
#   stop_pid PID [SECS]     TERM, bounded wait, then KILL; reaps the process
#   bg CMD...               runs CMD in the background, tracked for cleanup; sets BG_PID
#   ectl EP ARGS...         etcdctl (API 3) against EP with short timeouts
#   expect_same NAME ARGS   runs "etcdctl ARGS" against $DIRECT and $VIA, PASS if outputs and exit
#                           codes are identical (read-only commands only: revisions must match)
#   pass NAME / fail NAME REASON / skip NAME REASON   print PASS/FAIL/SKIP lines for the runner
#   wait_until SECS CMD...  polls CMD every 0.1 s until it succeeds or SECS elapse
# Every started process is recorded by PID and killed by the EXIT/INT/TERM trap.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
export ETCDCTL_API=3
ES_BIN=${ETCDSEAL_BIN:-build/etcdseal}
ES_TOOLS=${ETCDSEAL_TOOLS:-build/tools}
ETCD=${ETCD:-etcd}
ETCDCTL=${ETCDCTL:-etcdctl}
TEST_NAME=$(basename "$0" .sh)

if [ -w /dev/shm ]; then TMP_ROOT=/dev/shm; else TMP_ROOT=${TMPDIR:-/tmp}; fi
T=$(mktemp -d "$TMP_ROOT/etcdseal-it-$TEST_NAME.XXXXXX") || exit 1
PORT_LOCKS=$TMP_ROOT/etcdseal-it-ports
mkdir -p "$PORT_LOCKS"
_PIDS=()
_PORTS=()
_FAILS=0
_PROXY_N=0

# ------------------------------------------------------------------ results
pass() { echo "PASS $1"; }
fail() {
  echo "FAIL $1: ${2:-}"
  _FAILS=$((_FAILS + 1))
}
skip() { echo "SKIP $1: ${2:-}"; }
note() { echo "  $*"; }
# show_log FILE [N]: last N lines of FILE, indented so the runner shows them under the FAIL line.
show_log() { [ -f "$1" ] && tail -n "${2:-15}" "$1" | sed 's/^/  | /'; }
die() { # fatal setup problem: one FAIL line and stop this file
  fail "${TEST_NAME} setup" "$1"
  exit 1
}

# ------------------------------------------------------------------ processes
now_ms() { date +%s%3N; }
# wait_until SECS CMD...: true once CMD succeeds, false after SECS seconds (polls every 0.1 s).
wait_until() {
  local secs=$1 deadline
  shift
  deadline=$(($(now_ms) + secs * 1000))
  while [ "$(now_ms)" -lt "$deadline" ]; do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  "$@" >/dev/null 2>&1
}
alive() { kill -0 "$1" 2>/dev/null; }
track() { _PIDS+=("$1"); }
bg() {
  "$@" &
  BG_PID=$!
  track "$BG_PID"
}
# stop_pid PID [SECS] [SIGNAL]: signal (TERM), wait up to SECS (5), then KILL; reaps the child.
stop_pid() {
  local pid=$1 secs=${2:-5} sig=${3:-TERM} i
  [ -n "$pid" ] || return 0
  if alive "$pid"; then
    kill "-$sig" "$pid" 2>/dev/null
    for ((i = 0; i < secs * 10; i++)); do
      alive "$pid" || break
      # a zombie child of ours counts as gone
      [ "$(ps -o stat= -p "$pid" 2>/dev/null | cut -c1)" = Z ] && break
      sleep 0.1
    done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null
  return 0
}
# wait_exit PID SECS: waits for PID (our child) to exit; sets EXIT_RC; false on timeout.
wait_exit() {
  local pid=$1 secs=$2 i
  for ((i = 0; i < secs * 20; i++)); do
    if ! alive "$pid" || [ "$(ps -o stat= -p "$pid" 2>/dev/null | cut -c1)" = Z ]; then
      wait "$pid" 2>/dev/null
      EXIT_RC=$?
      return 0
    fi
    sleep 0.05
  done
  EXIT_RC=
  return 1
}

_cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  touch "$T/stop" 2>/dev/null
  for ((i = ${#_PIDS[@]} - 1; i >= 0; i--)); do
    alive "${_PIDS[i]}" && kill -TERM "${_PIDS[i]}" 2>/dev/null
  done
  for ((i = ${#_PIDS[@]} - 1; i >= 0; i--)); do
    stop_pid "${_PIDS[i]}" 3 TERM
  done
  # sanitizer reports from any proxy this file ran (make sanitize runs the ASan build here)
  for f in "$T"/proxy-*.log; do
    [ -f "$f" ] || continue
    if grep -qE 'ERROR: (Address|Leak|Thread)Sanitizer|runtime error:' "$f"; then
      fail "$TEST_NAME: sanitizer report in $(basename "$f")" \
        "$(grep -m1 -E 'ERROR: (Address|Leak|Thread)Sanitizer|runtime error:' "$f")"
      grep -m8 -E '^ +#[0-9]+ ' "$f" | sed 's/^/  | /'
      [ "$rc" -eq 0 ] && rc=1
    fi
  done
  for p in "${_PORTS[@]}"; do rm -rf "${PORT_LOCKS:?}/${p:?}"; done
  if [ -n "${KEEP_TMP:-}" ]; then echo "  (kept $T)"; else rm -rf "${T:?}"; fi
  [ "$_FAILS" -gt 0 ] && [ "$rc" -eq 0 ] && rc=1
  exit "$rc"
}
trap _cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# ------------------------------------------------------------------ ports
# A port is free when a lock dir can be made for it (no other concurrent test holds it; stale
# locks of dead owners are reclaimed) and a bind() on 127.0.0.1 succeeds. Ports come from
# 20000-32767, below the kernel's ephemeral range, so outgoing connections do not take them.
_port_bindable() {
  python3 - "$1" <<'EOF' 2>/dev/null
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
EOF
}
free_port() {
  local i p owner
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 12700))
    if ! mkdir "$PORT_LOCKS/$p" 2>/dev/null; then
      owner=$(cat "$PORT_LOCKS/$p/pid" 2>/dev/null)
      if [ -n "$owner" ] && ! alive "$owner"; then rm -rf "${PORT_LOCKS:?}/${p:?}"; fi
      continue
    fi
    echo $$ >"$PORT_LOCKS/$p/pid"
    if _port_bindable "$p"; then
      echo "$p"
      return 0
    fi
    rm -rf "${PORT_LOCKS:?}/${p:?}"
  done
  return 1
}
# ports N: sets PORTS=(p1 .. pN), all reserved (free_port runs in a subshell, so record here).
ports() {
  local n=$1 p
  PORTS=()
  while [ ${#PORTS[@]} -lt "$n" ]; do
    p=$(free_port) || die "no free port"
    PORTS+=("$p")
    _PORTS+=("$p")
  done
}
tcp_open() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

# ------------------------------------------------------------------ etcd
# ectl EP [etcdctl args]: EP is host:port or a URL; TLS flags may follow in the args.
ectl() {
  local ep=$1
  shift
  timeout -k 2 "${ECTL_TIMEOUT:-30}" "$ETCDCTL" --endpoints "$ep" --dial-timeout 3s \
    --command-timeout "${ECTL_CMD_TIMEOUT:-10s}" "$@"
}

# ectl_bg OUT EP ARGS...: a long-running etcdctl (watch, lock, elect) in the background,
# stdout to OUT and stderr to OUT.err; tracked for cleanup; sets BG_PID.
ectl_bg() {
  local out=$1 ep=$2
  shift 2
  "$ETCDCTL" --endpoints "$ep" --dial-timeout 3s "$@" >"$out" 2>"$out.err" &
  BG_PID=$!
  track "$BG_PID"
}
# put_loop EP PREFIX ACKS [SECS]: background loop of `etcdctl put PREFIX<i> v<i>` through EP until
# $T/stop-<name> exists (name = basename of ACKS) or SECS (300) pass; every acknowledged put is
# appended to ACKS as "<i> <ms since epoch>". Sets BG_PID; stop it with stop_loop ACKS.
put_loop() {
  local ep=$1 prefix=$2 acks=$3 secs=${4:-300}
  : >"$acks"
  (
    end=$(($(now_ms) + secs * 1000))
    for ((i = 1; i < 1000000; i++)); do
      [ -e "$T/stop-$(basename "$acks")" ] && break
      [ "$(now_ms)" -lt "$end" ] || break
      if ECTL_TIMEOUT=10 ECTL_CMD_TIMEOUT=3s ectl "$ep" put "$prefix$i" "v$i" >/dev/null 2>&1; then
        echo "$i $(now_ms)" >>"$acks"
      else
        echo "$(now_ms)" >>"$acks.errors"
      fi
    done
  ) &
  BG_PID=$!
  track "$BG_PID"
}
# stop_loop ACKS PID: asks the put loop to finish its current put and waits (bounded).
stop_loop() {
  touch "$T/stop-$(basename "$1")"
  stop_pid "$2" 15
}

# _etcd_launch NAME CLIENT_PORT PEER_PORT INITIAL_CLUSTER STATE [extra etcd flags]
_etcd_launch() {
  local name=$1 cp=$2 pp=$3 ic=$4 state=$5 scheme=${ETCD_SCHEME:-http}
  shift 5
  mkdir -p "$T/etcd-$name"
  "$ETCD" --name "$name" --data-dir "$T/etcd-$name/data" \
    --listen-client-urls "$scheme://127.0.0.1:$cp" --advertise-client-urls "$scheme://127.0.0.1:$cp" \
    --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
    --initial-cluster "$ic" --initial-cluster-state "$state" --initial-cluster-token "it-$$" \
    --logger zap --log-level warn --log-outputs stderr "$@" \
    >>"$T/etcd-$name/log" 2>&1 &
  local pid=$!
  disown "$pid" # no "Killed" job notices when a test crashes a member on purpose
  track "$pid"
  printf -v "ETCD_PID_$name" %s "$pid"
  printf -v "ETCD_EP_$name" %s "127.0.0.1:$cp"
  printf -v "ETCD_PEER_$name" %s "127.0.0.1:$pp"
  echo "$*" >"$T/etcd-$name/extra"
  echo "$ic" >"$T/etcd-$name/ic"
}

# etcd_healthy EP [etcdctl TLS args]
etcd_healthy() {
  local ep=$1
  shift
  ECTL_TIMEOUT=5 ECTL_CMD_TIMEOUT=3s ectl "$ep" "$@" endpoint health >/dev/null 2>&1
}

# start_etcd NAME [extra etcd flags]: a single-member etcd; waits up to 20 s for health.
# With ETCD_SCHEME=https the client URL is TLS (pass --cert-file etc. as extra flags and set
# ETCD_HEALTH_ARGS to the etcdctl TLS flags the health check needs).
start_etcd() {
  local name=$1
  shift
  ports 2
  _etcd_launch "$name" "${PORTS[0]}" "${PORTS[1]}" "$name=http://127.0.0.1:${PORTS[1]}" new "$@"
  local ep pid
  ep=$(eval echo "\$ETCD_EP_$name")
  pid=$(eval echo "\$ETCD_PID_$name")
  local url=$ep
  [ "${ETCD_SCHEME:-http}" = https ] && url=https://$ep
  # shellcheck disable=SC2086
  if ! wait_until 20 etcd_healthy "$url" ${ETCD_HEALTH_ARGS:-}; then
    show_log "$T/etcd-$name/log"
    alive "$pid" || die "etcd $name exited during start"
    die "etcd $name not healthy within 20 s"
  fi
}

# start_etcd_cluster N: members c0..c(N-1); CLUSTER_EPS, CLUSTER_NAMES.
start_etcd_cluster() {
  local n=$1 i ic=""
  ports $((2 * n))
  local all=("${PORTS[@]}")
  for ((i = 0; i < n; i++)); do
    ic+="${ic:+,}c$i=http://127.0.0.1:${all[2 * i + 1]}"
  done
  CLUSTER_EPS=""
  CLUSTER_NAMES=()
  for ((i = 0; i < n; i++)); do
    _etcd_launch "c$i" "${all[2 * i]}" "${all[2 * i + 1]}" "$ic" new
    CLUSTER_EPS+="${CLUSTER_EPS:+,}127.0.0.1:${all[2 * i]}"
    CLUSTER_NAMES+=("c$i")
  done
  for ((i = 0; i < n; i++)); do
    if ! wait_until 30 etcd_healthy "127.0.0.1:${all[2 * i]}"; then
      show_log "$T/etcd-c$i/log"
      die "cluster member c$i not healthy within 30 s"
    fi
  done
}

# kill_member NAME: SIGKILL (a crash, not a clean stop).
kill_member() {
  local pid
  pid=$(eval echo "\$ETCD_PID_$1")
  stop_pid "$pid" 0 KILL
}
# restart_member NAME: same data dir, ports and flags; waits up to 30 s for health.
restart_member() {
  local name=$1 ep peer ic
  ep=$(eval echo "\$ETCD_EP_$name")
  peer=$(eval echo "\$ETCD_PEER_$name")
  ic=$(cat "$T/etcd-$name/ic")
  # shellcheck disable=SC2046
  _etcd_launch "$name" "${ep##*:}" "${peer##*:}" "$ic" existing $(cat "$T/etcd-$name/extra")
  wait_until 30 etcd_healthy "$ep"
}

# ------------------------------------------------------------------ proxy
proxy_available() { "$ES_BIN" proxy --help >/dev/null 2>&1; }
# start_proxy ARGS...: "$ES_BIN proxy ARGS"; waits up to 15 s until --listen-addr accepts TCP.
# Returns 1 (with the log shown) if the proxy exits or never listens.
start_proxy() {
  local listen="" a prev=""
  for a in "$@"; do
    [ "$prev" = --listen-addr ] && listen=$a
    case $a in --listen-addr=*) listen=${a#--listen-addr=} ;; esac
    prev=$a
  done
  listen=${listen#*://}
  _PROXY_N=$((_PROXY_N + 1))
  PROXY_LOG=$T/proxy-$_PROXY_N.log
  "$ES_BIN" proxy "$@" >"$PROXY_LOG" 2>&1 &
  PROXY_PID=$!
  track "$PROXY_PID"
  PROXY_EP=$listen
  local deadline=$(($(now_ms) + 15000))
  while [ "$(now_ms)" -lt "$deadline" ]; do
    if ! alive "$PROXY_PID"; then
      note "proxy exited during start:"
      show_log "$PROXY_LOG"
      return 1
    fi
    tcp_open "$listen" && return 0
    sleep 0.1
  done
  note "proxy not listening on $listen within 15 s:"
  show_log "$PROXY_LOG"
  return 1
}
# http_code URL: prints the HTTP status code (000 when unreachable).
http_code() { curl -s -o /dev/null -m 3 -w '%{http_code}' "$1" 2>/dev/null; }
# wait_ready ADMIN_ADDR [SECS]: /readyz answers 200 within SECS (15).
wait_ready() {
  local deadline=$(($(now_ms) + ${2:-15} * 1000))
  while [ "$(now_ms)" -lt "$deadline" ]; do
    [ "$(http_code "http://$1/readyz")" = 200 ] && return 0
    sleep 0.2
  done
  return 1
}
# metric_sum ADMIN_ADDR REGEX: sum of the samples whose line matches REGEX; prints nothing when
# no sample matches (so a missing metric is told apart from a zero).
metric_sum() {
  curl -s -m 3 "http://$1/metrics" 2>/dev/null | grep -v '^#' | grep -E "$2" |
    awk '{s += $NF; n++} END {if (n) printf "%d\n", s}'
}
# nap SECS: a sleep the TERM trap can interrupt.
nap() {
  sleep "$1" &
  wait $!
}
# setup_via ENDPOINTS [proxy args]: starts the proxy in front of ENDPOINTS and sets VIA (its
# client address) and ADMIN (its metrics address), then checks /readyz. With IT_NO_PROXY=1 VIA is
# the first endpoint itself (for developing the tests without a proxy) and ADMIN is empty.
setup_via() {
  local eps=$1
  shift
  if [ -n "${IT_NO_PROXY:-}" ]; then
    VIA=${eps%%,*}
    VIA=${VIA#*://}
    ADMIN=""
    return 0
  fi
  ports 2
  start_proxy --endpoints "$eps" --listen-addr "127.0.0.1:${PORTS[0]}" \
    --metrics-addr "127.0.0.1:${PORTS[1]}" "$@" || die "proxy did not start"
  VIA=127.0.0.1:${PORTS[0]}
  ADMIN=127.0.0.1:${PORTS[1]}
  if wait_ready "$ADMIN" 15; then
    pass "$TEST_NAME proxy ready (/readyz 200)"
  else
    fail "$TEST_NAME proxy ready" "/readyz on $ADMIN not 200 within 15 s (got $(http_code "http://$ADMIN/readyz"))"
  fi
}
# require_proxy: without a proxy binary every test in the file is a SKIP, unless VIA is set
# IT_NO_PROXY=1 (harness development: VIA is then etcd itself).
require_proxy() {
  if [ -n "${IT_NO_PROXY:-}" ]; then return 0; fi
  if ! proxy_available; then
    skip "$TEST_NAME" "$ES_BIN proxy is not available (IT_NO_PROXY=1 runs the tests against etcd directly)"
    exit 0
  fi
}

# ------------------------------------------------------------------ comparisons
# run_ctl OUT EP ARGS...: etcdctl stdout, then stderr without the client library's JSON log
# lines (they carry timestamps and random client ids), then "rc=<exit code>", into OUT.
# Stdin is passed through.
run_ctl() {
  local out=$1 ep=$2 rc
  shift 2
  ectl "$ep" "$@" >"$out" 2>"$out.err"
  rc=$?
  grep -v '^{"level":' "$out.err" >>"$out"
  echo "rc=$rc" >>"$out"
}
# normalise FILE: replace the two endpoint strings so direct and proxied outputs compare.
normalise() {
  sed -e "s#${DIRECT}\b#ENDPOINT#g" -e "s#${VIA}\b#ENDPOINT#g" "$1"
}
# expect_same NAME ARGS...: etcdctl ARGS against $DIRECT then $VIA; outputs must be identical
# (after replacing the endpoint strings) and the command must succeed both ways.
expect_same() {
  local name=$1
  shift
  run_ctl "$T/d.out" "$DIRECT" "$@"
  run_ctl "$T/v.out" "$VIA" "$@"
  if ! diff <(normalise "$T/d.out") <(normalise "$T/v.out") >"$T/diff.out"; then
    fail "$name" "etcdctl $* differs direct vs proxy"
    head -20 "$T/diff.out" | sed 's/^/  | /'
    return 1
  fi
  if ! grep -qx 'rc=0' "$T/d.out"; then
    fail "$name" "etcdctl $* failed directly too"
    show_log "$T/d.out" 5
    return 1
  fi
  pass "$name"
}
# expect_same_error NAME REGEX ARGS...: like expect_same, but the command must fail both ways
# with output matching REGEX.
expect_same_error() {
  local name=$1 re=$2
  shift 2
  run_ctl "$T/d.out" "$DIRECT" "$@"
  run_ctl "$T/v.out" "$VIA" "$@"
  if ! diff <(normalise "$T/d.out") <(normalise "$T/v.out") >"$T/diff.out"; then
    fail "$name" "etcdctl $* differs direct vs proxy"
    head -20 "$T/diff.out" | sed 's/^/  | /'
    return 1
  fi
  if grep -qx 'rc=0' "$T/d.out" || ! grep -qE "$re" "$T/d.out"; then
    fail "$name" "etcdctl $* did not fail with /$re/ directly"
    show_log "$T/d.out" 5
    return 1
  fi
  pass "$name"
}
# same_files NAME A B: PASS if files are identical.
same_files() {
  if cmp -s "$2" "$3"; then
    pass "$1"
  else
    fail "$1" "outputs differ"
    diff "$2" "$3" | head -20 | sed 's/^/  | /'
    return 1
  fi
}
