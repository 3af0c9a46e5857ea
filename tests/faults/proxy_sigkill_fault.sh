#!/usr/bin/env bash
# proxy_sigkill_fault.sh - etcdseal is SIGKILLed under load (two checkers plus a bulk writer) and
# restarted on the same ports, three times. Asserts: the restarted proxy is ready within 15 s and
# the checkers' puts resume within 10 s; their reads never went back in time; no acknowledged write
# lost; zero plaintext under the protected prefix.
source "$(dirname "$0")/../integration/lib.sh"
source tests/faults/lib_faults.sh
require_checker
ROUNDS=${ROUNDS:-3}
start_etcd e0
DIRECT=$ETCD_EP_e0
fault_config "$T/enc.yaml" "$FAULT_PREFIX"
setup_via "$DIRECT" --encryption-provider-config "$T/enc.yaml"
ARGS=(--endpoints "$DIRECT" --listen-addr "$VIA" --metrics-addr "$ADMIN" --encryption-provider-config "$T/enc.yaml")
checker_start sa "$VIA" "${FAULT_PREFIX}sa/" 120
checker_start sb "$VIA" "${FAULT_PREFIX}sb/" 120 -z 4096
wait_acks sa 200 15 && wait_acks sb 100 15 || fail "checkers running" "$(cat "$T"/s?.status 2>/dev/null)"
for r in $(seq 1 "$ROUNDS"); do
  kill -KILL "$PROXY_PID"
  wait "$PROXY_PID" 2>/dev/null
  nap 0.5
  if start_proxy "${ARGS[@]}" && wait_ready "$ADMIN" 15; then
    pass "round $r: proxy SIGKILLed under load and restarted (ready)"
  else
    fail "round $r: proxy restart" "not ready within 15 s"
    continue
  fi
  if wait_acks sa 50 10 && wait_acks sb 20 10; then pass "round $r: checkers' puts resumed within 10 s"; else fail "round $r: puts resumed" "$(cat "$T"/s?.status)"; fi
  nap 1
done
checker_finish sa
checker_finish sb
checker_verify sa "$VIA" "${FAULT_PREFIX}sa/"
checker_verify sb "$VIA" "${FAULT_PREFIX}sb/"
raw_scan_check "$DIRECT" "$FAULT_PREFIX"
