#!/usr/bin/env bash
# all_down_fault.sh - every member of a 3-member cluster is SIGKILLed at once while the checker
# runs through the proxy, stays down 3 s, and all are restarted. Asserts: puts fail while the
# cluster is down (nothing is acknowledged without etcd), resume within 15 s of the restart, the
# checker's reads never went back in time, no acknowledged write lost, zero plaintext.
source "$(dirname "$0")/../integration/lib.sh"
source tests/faults/lib_faults.sh
require_checker
start_etcd_cluster 3
fault_config "$T/enc.yaml" "$FAULT_PREFIX"
setup_via "$CLUSTER_EPS" --encryption-provider-config "$T/enc.yaml" \
  --upstream-keepalive-time 1s --upstream-keepalive-timeout 1s
checker_start ad "$VIA" "${FAULT_PREFIX}ad/" 120
wait_acks ad 200 15 || fail "checker running" "$(cat "$T/ad.status" 2>/dev/null)"
for name in "${CLUSTER_NAMES[@]}"; do kill_member "$name"; done
nap 1
a0=$(checker_acked ad)
nap 2
a1=$(checker_acked ad)
if [ "$a0" = "$a1" ]; then pass "all members down: no put acknowledged (acked stays $a1)"; else fail "all members down" "acked moved $a0 -> $a1 with no etcd"; fi
for name in "${CLUSTER_NAMES[@]}"; do
  ep=$(eval echo "\$ETCD_EP_$name")
  peer=$(eval echo "\$ETCD_PEER_$name")
  _etcd_launch "$name" "${ep##*:}" "${peer##*:}" "$(cat "$T/etcd-$name/ic")" existing
done
for name in "${CLUSTER_NAMES[@]}"; do
  wait_until 30 etcd_healthy "$(eval echo "\$ETCD_EP_$name")" || fail "$name back" "not healthy in 30 s"
done
if wait_acks ad 100 15; then pass "all members restarted: puts resumed within 15 s"; else fail "puts after the restart" "$(cat "$T/ad.status")"; fi
[ "$(http_code "http://$ADMIN/readyz")" = 200 ] && pass "/readyz 200 after the outage" || fail "/readyz after the outage" "$(http_code "http://$ADMIN/readyz")"
checker_finish ad
checker_verify ad "$VIA" "${FAULT_PREFIX}ad/"
raw_scan_check "${CLUSTER_EPS%%,*}" "$FAULT_PREFIX"
