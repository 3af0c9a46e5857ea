#!/usr/bin/env bash
# reload_broken_fault.sh - configuration reloads (SIGHUP) that hit a broken file while the checker
# runs: the file truncated mid-write (half a key line), garbage YAML, a key of the wrong length, an
# empty file; each followed by a good file rotating to a new key. 8 rounds.
# Asserts: the proxy stays up, every broken reload is refused and counted, every good one applies
# (new writes use the newest key, read straight from etcd), the checker's reads never went back in
# time, no acknowledged write lost, zero plaintext under the protected prefix.
source "$(dirname "$0")/../integration/lib.sh"
source tests/faults/lib_faults.sh
require_checker
ROUNDS=${ROUNDS:-8}
start_etcd e0
DIRECT=$ETCD_EP_e0
CFG=$T/enc.yaml
KEYS=()
good_cfg() { # the current key first, the older ones kept for reads
  local i
  {
    printf 'apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n'
    printf '  - resources: ["%s"]\n    providers:\n      - aesgcm:\n          keys:\n' "$FAULT_PREFIX"
    for ((i = ${#KEYS[@]} - 1; i >= 0; i--)); do printf '            - {name: k%d, secret: %s}\n' "$i" "${KEYS[i]}"; done
  }
}
KEYS+=("$(openssl rand -base64 32)")
good_cfg >"$CFG"
chmod 600 "$CFG"
setup_via "$DIRECT" --encryption-provider-config "$CFG"
reload_fails() { local v; v=$(metric_sum "$ADMIN" 'apiserver_encryption_config_controller_automatic_reload_failures_total'); echo "${v:-0}"; }
raw_head() { ectl "$DIRECT" get "$1" --print-value-only 2>/dev/null | head -c "$2"; }
checker_start rl "$VIA" "${FAULT_PREFIX}rl/" 120
wait_acks rl 200 15 || fail "checker running" "$(cat "$T/rl.status" 2>/dev/null)"
bad_ok=0 good_ok=0
for r in $(seq 1 "$ROUNDS"); do
  f0=$(reload_fails)
  KEYS+=("$(openssl rand -base64 32)")
  case $((r % 4)) in
    1) good_cfg | head -c $(($(good_cfg | wc -c) - 30)) >"$CFG" ;;  # truncated mid-key (no rename)
    2) printf 'kind: EncryptionConfiguration\nresources: [\n  - {' >"$CFG" ;;
    3) good_cfg | sed "s#secret: ${KEYS[-1]}#secret: $(openssl rand -base64 20)#" >"$CFG" ;;
    0) : >"$CFG" ;;
  esac
  kill -HUP "$PROXY_PID"
  if wait_until 5 sh -c "[ \$(curl -s -m 2 http://$ADMIN/metrics | grep -v '^#' | grep apiserver_encryption_config_controller_automatic_reload_failures_total | awk '{s+=\$NF} END {print s+0}') -gt $f0 ]" &&
    alive "$PROXY_PID" && wait_acks rl 20 5; then
    bad_ok=$((bad_ok + 1))
  else
    fail "round $r: broken file (kind $((r % 4)))" "failures $f0 -> $(reload_fails), alive=$(alive "$PROXY_PID" && echo y || echo n), $(cat "$T/rl.status")"
  fi
  good_cfg >"$CFG"
  kill -HUP "$PROXY_PID"
  want="k8s:enc:aesgcm:v1:k$((${#KEYS[@]} - 1)):"
  if wait_until 5 sh -c "ETCDCTL_API=3 etcdctl --endpoints $VIA put ${FAULT_PREFIX}probe/$r x >/dev/null 2>&1 && ETCDCTL_API=3 etcdctl --endpoints $DIRECT get ${FAULT_PREFIX}probe/$r --print-value-only | head -c ${#want} | grep -qx '$want'"; then
    good_ok=$((good_ok + 1))
  else
    fail "round $r: good file after the broken one" "new writes not under ${want} (raw $(raw_head "${FAULT_PREFIX}probe/$r" ${#want}))"
  fi
done
[ "$bad_ok" = "$ROUNDS" ] && pass "$ROUNDS broken reloads refused and counted, proxy up, puts flowing"
[ "$good_ok" = "$ROUNDS" ] && pass "$ROUNDS good reloads after broken ones: new writes use the newest key"
grep -q 'reload failed' "$PROXY_LOG" && pass "failed reloads logged" || fail "failed reloads logged" "no 'reload failed' line"
checker_finish rl
checker_verify rl "$VIA" "${FAULT_PREFIX}rl/"
raw_scan_check "$DIRECT" "$FAULT_PREFIX"
