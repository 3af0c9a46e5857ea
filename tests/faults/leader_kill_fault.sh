#!/usr/bin/env bash
# leader_kill_fault.sh - the etcd leader of a 3-member cluster is SIGKILLed and restarted (twice)
# while the checker writes and reads through the proxy. Asserts: puts resume within 10 s of each
# kill, the checker's reads never go back in time, no acknowledged write is lost, zero plaintext
# in etcd under the protected prefix.
source "$(dirname "$0")/../integration/lib.sh"
source tests/faults/lib_faults.sh
require_checker
start_etcd_cluster 3
fault_config "$T/enc.yaml" "$FAULT_PREFIX"
setup_via "$CLUSTER_EPS" --encryption-provider-config "$T/enc.yaml" \
  --upstream-keepalive-time 1s --upstream-keepalive-timeout 1s
checker_start lk "$VIA" "${FAULT_PREFIX}lk/" 120
wait_acks lk 200 15 || fail "checker running" "fewer than 200 acks in 15 s: $(cat "$T/lk.status" 2>/dev/null)"
for round in 1 2; do
  leader=$(leader_member) || { fail "round $round: find the leader" "no member reports itself leader"; break; }
  pid=$(eval echo "\$ETCD_PID_$leader")
  kill_member "$leader"
  if wait_acks lk 50 10; then
    pass "round $round: leader $leader SIGKILLed, puts resumed within 10 s"
  else
    fail "round $round: leader $leader SIGKILLed" "puts did not resume within 10 s: $(cat "$T/lk.status")"
  fi
  if restart_member "$leader"; then pass "round $round: $leader restarted"; else fail "round $round: $leader restarted" "not healthy in 30 s"; fi
  wait_acks lk 100 10 || fail "round $round: progress after restart" "$(cat "$T/lk.status")"
done
checker_finish lk
checker_verify lk "$VIA" "${FAULT_PREFIX}lk/"
raw_scan_check "${CLUSTER_EPS%%,*}" "$FAULT_PREFIX"
