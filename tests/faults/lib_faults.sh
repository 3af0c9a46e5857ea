# shellcheck shell=bash
# lib_faults.sh - helpers for tests/faults/*_fault.sh (sourced after tests/integration/lib.sh).
#
#   FC                        path of the it_fault_checker tool (require_checker fails without it)
#   fault_config FILE PREFIX  aesgcm EncryptionConfiguration (random key, 0600) for PREFIX
#   checker_start NAME ADDR PREFIX [SECS] [extra checker args]: background checker run writing and
#                             reading PREFIXk<j> through ADDR; state/status under $T/NAME.*
#   checker_acked NAME        acknowledged puts so far (from the status file)
#   wait_acks NAME N SECS     true once N more puts than now are acknowledged within SECS
#   checker_finish NAME       stops the run; PASS/FAIL on its own read checks (no going back,
#                             well-formed values) and on having acknowledged puts
#   checker_verify NAME ADDR  every key read through ADDR: no acknowledged write lost
#   raw_scan_check EP PREFIX  raw Range of PREFIX on etcd EP: zero plaintext values
#   leader_member             name of the current leader among CLUSTER_NAMES
FC=$ES_TOOLS/it_fault_checker
FAULT_PREFIX=/secret/

require_checker() {
  [ -x "$FC" ] || die "$FC missing (run make)"
  require_proxy
}

fault_config() {
  local f=$1 pfx=$2
  {
    printf 'apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n'
    printf '  - resources: ["%s"]\n    providers:\n      - aesgcm:\n          keys:\n' "$pfx"
    printf '            - {name: k1, secret: %s}\n' "$(openssl rand -base64 32)"
  } >"$f.tmp"
  chmod 600 "$f.tmp"
  mv "$f.tmp" "$f"
}

checker_start() {
  local name=$1 addr=$2 pfx=$3 secs=${4:-240}
  shift 4 2>/dev/null || shift $#
  rm -f "$T/$name.stop" "$T/$name.status" "$T/$name.state"
  printf '%s\n' "$@" >"$T/$name.args" # extra args (-z, -t) are reused by checker_verify
  "$FC" run -a "$addr" -p "$pfx" -k 64 -d "$secs" -s "$T/$name.stop" -o "$T/$name.state" \
    -S "$T/$name.status" "$@" >"$T/$name.out" 2>"$T/$name.err" &
  eval "CHECKER_PID_$name=$!"
  track "$!"
}
checker_acked() { sed -n 's/.*acked=\([0-9]*\).*/\1/p' "$T/$1.status" 2>/dev/null | head -1; }
_acked_ge() { [ "$(checker_acked "$1")" -ge "$2" ] 2>/dev/null; }
wait_acks() {
  local name=$1 n=$2 secs=$3 base
  base=$(checker_acked "$name")
  wait_until "$secs" _acked_ge "$name" $((${base:-0} + n))
}
checker_finish() {
  local name=$1 pid rc
  pid=$(eval echo "\$CHECKER_PID_$name")
  touch "$T/$name.stop"
  if ! wait_exit "$pid" 30; then
    fail "$name checker" "did not stop within 30 s"
    return 1
  fi
  rc=$EXIT_RC
  if [ "$rc" = 0 ] && ! grep -q VIOLATION "$T/$name.err"; then
    pass "$name: reads never went back in time, all values well-formed ($(cat "$T/$name.out"))"
  else
    fail "$name: checker read checks" "rc=$rc $(cat "$T/$name.out")"
    grep VIOLATION "$T/$name.err" | head -10 | sed 's/^/  | /'
    return 1
  fi
}
checker_verify() {
  local name=$1 addr=$2 pfx=$3 out extra=()
  [ -s "$T/$name.args" ] && mapfile -t extra <"$T/$name.args"
  out=$("$FC" verify -a "$addr" -p "$pfx" -k 64 -d 30 -o "$T/$name.state" "${extra[@]}" 2>"$T/$name.verr")
  if [ $? = 0 ]; then
    pass "$name: no acknowledged write lost ($out)"
  else
    fail "$name: acknowledged writes" "$out"
    grep -E 'VIOLATION|it_fault' "$T/$name.verr" | head -10 | sed 's/^/  | /'
  fi
}
raw_scan_check() {
  local ep=$1 pfx=$2 out
  out=$("$FC" scan -a "$ep" -p "$pfx" -d 30 2>"$T/scan.err")
  if [ $? = 0 ] && ! echo "$out" | grep -q ' total=0 '; then
    pass "raw scan of $pfx on $ep: zero plaintext ($out)"
  else
    fail "raw scan of $pfx on $ep" "$out"
    head -10 "$T/scan.err" | sed 's/^/  | /'
  fi
}
leader_member() {
  local name ep
  for name in "${CLUSTER_NAMES[@]}"; do
    ep=$(eval echo "\$ETCD_EP_$name")
    if ECTL_TIMEOUT=5 ectl "$ep" endpoint status -w fields 2>/dev/null |
      awk -F' : ' '/"MemberID"/ {m = $2} /"Leader"/ {l = $2} END {exit !(m != "" && m == l)}'; then
      echo "$name"
      return 0
    fi
  done
  return 1
}
