#!/usr/bin/env bash
# partition_fault.sh - the proxy is cut off from one member of a 3-member cluster while the
# checker runs. iptables is not used when missing (SKIP with the reason; only loopback rules would
# ever be added). The partition is made in user space instead: the proxy reaches every member
# through its own loopback TCP forwarder (python3, one process per member); SIGSTOPping the
# forwarder of the member the proxy uses blackholes that link (connections stay open, no byte
# passes, the member itself stays healthy for the others), SIGCONT heals it.
# Asserts per round (2): puts resume within 10 s of the cut; after healing, the checker's reads
# never went back in time, no acknowledged write lost, zero plaintext under the protected prefix.
source "$(dirname "$0")/../integration/lib.sh"
source tests/faults/lib_faults.sh
require_checker
if ! command -v iptables >/dev/null 2>&1; then
  skip "iptables loopback partition" "iptables not installed; using the user-space forwarder partition below"
fi
start_etcd_cluster 3
ports 3
FWD_PORTS=("${PORTS[@]}")
FWD_EPS=""
cat >"$T/fwd.py" <<'PY'
import socket, sys, threading
lp, tp = int(sys.argv[1]), int(sys.argv[2])
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", lp)); ls.listen(64)
def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d: break
            b.sendall(d)
    except OSError: pass
    for s in (a, b):
        try: s.shutdown(socket.SHUT_RDWR)
        except OSError: pass
while True:
    c, _ = ls.accept()
    try: u = socket.create_connection(("127.0.0.1", tp), timeout=3); u.settimeout(None)
    except OSError: c.close(); continue
    threading.Thread(target=pipe, args=(c, u), daemon=True).start()
    threading.Thread(target=pipe, args=(u, c), daemon=True).start()
PY
i=0
for name in "${CLUSTER_NAMES[@]}"; do
  ep=$(eval echo "\$ETCD_EP_$name")
  bg python3 "$T/fwd.py" "${FWD_PORTS[i]}" "${ep##*:}"
  eval "FWD_PID_$name=$BG_PID"
  FWD_EPS+="${FWD_EPS:+,}127.0.0.1:${FWD_PORTS[i]}"
  i=$((i + 1))
done
for p in "${FWD_PORTS[@]}"; do wait_until 5 tcp_open "127.0.0.1:$p" || die "forwarder on $p not listening"; done
fault_config "$T/enc.yaml" "$FAULT_PREFIX"
setup_via "$FWD_EPS" --encryption-provider-config "$T/enc.yaml" \
  --upstream-keepalive-time 1s --upstream-keepalive-timeout 1s
# used_member: the member whose forwarder port carries the most proxy connections
used_member() {
  local j best="" bestn=0 n
  for ((j = 0; j < ${#CLUSTER_NAMES[@]}; j++)); do
    n=$(ss -tnpH state established "( dport = :${FWD_PORTS[j]} )" 2>/dev/null | grep -c "pid=$PROXY_PID,")
    [ "$n" -gt "$bestn" ] && best=${CLUSTER_NAMES[j]} bestn=$n
  done
  echo "$best"
}
checker_start pt "$VIA" "${FAULT_PREFIX}pt/" 120
wait_acks pt 200 15 || fail "checker running" "$(cat "$T/pt.status" 2>/dev/null)"
for round in 1 2; do
  victim=$(used_member)
  [ -n "$victim" ] || { fail "round $round: member in use" "no proxy connection through a forwarder"; victim=c0; }
  fpid=$(eval echo "\$FWD_PID_$victim")
  kill -STOP "$fpid"
  if wait_acks pt 50 10; then
    pass "round $round: proxy cut off from $victim (link blackholed): puts resumed within 10 s"
  else
    fail "round $round: partition from $victim" "puts did not resume within 10 s: $(cat "$T/pt.status")"
  fi
  etcd_healthy "$(eval echo "\$ETCD_EP_$victim")" && note "$victim itself stayed healthy"
  nap 2
  kill -CONT "$fpid"
  wait_acks pt 50 10 || fail "round $round: progress after healing" "$(cat "$T/pt.status")"
done
checker_finish pt
checker_verify pt "$VIA" "${FAULT_PREFIX}pt/"
raw_scan_check "${CLUSTER_EPS%%,*}" "$FAULT_PREFIX"
