#!/usr/bin/env bash
# streams_5000_fault.sh - 5,000 concurrent watch streams on 10 connections (it_watchers) on a
# protected key while the checker runs, twice: once ending normally (every stream gets the event),
# once with the watcher process SIGKILLed with all streams open. Asserts: all 5,000 streams are
# created and each receives the event, the open-streams gauge drops back below 10 after the
# clients go, the proxy stays ready with fds back near the baseline, the checker's reads never went
# back in time, no acknowledged write lost, zero plaintext under the protected prefix.
source "$(dirname "$0")/../integration/lib.sh"
source tests/faults/lib_faults.sh
require_checker
WT=$ES_TOOLS/it_watchers
N=${STREAMS:-5000}
[ -x "$WT" ] || die "$WT missing (make)"
start_etcd e0
DIRECT=$ETCD_EP_e0
fault_config "$T/enc.yaml" "$FAULT_PREFIX"
setup_via "$DIRECT" --encryption-provider-config "$T/enc.yaml"
nfds() { ls "/proc/$PROXY_PID/fd" 2>/dev/null | wc -l; }
open_streams_below() { [ "$(metric_sum "$ADMIN" '^etcdseal_open_streams')" -lt "$1" ]; }
checker_start st "$VIA" "${FAULT_PREFIX}st/" 180
wait_acks st 200 15 || fail "checker running" "$(cat "$T/st.status" 2>/dev/null)"
fd0=$(nfds)
for round in normal killed; do
  "$WT" -a "$VIA" -n "$N" -c 10 -k "${FAULT_PREFIX}watched" -t 60 >"$T/wt-$round.out" 2>"$T/wt-$round.err" &
  wt=$!
  track "$wt"
  disown "$wt"
  if ! wait_until 60 grep -q '^READY' "$T/wt-$round.out"; then
    fail "$round: $N streams" "no READY within 60 s: $(head -c 300 "$T/wt-$round.err")"
    stop_pid "$wt" 1 KILL
    continue
  fi
  during=$(metric_sum "$ADMIN" '^etcdseal_open_streams')
  if [ "$round" = normal ]; then
    ectl "$VIA" put "${FAULT_PREFIX}watched" "fired" >/dev/null 2>&1
    if wait_exit "$wt" 60 && [ "$EXIT_RC" = 0 ]; then
      pass "$N concurrent streams on 10 connections all created and got the event ($(tr '\n' ' ' <"$T/wt-$round.out"))"
    else
      fail "$N concurrent streams" "rc=${EXIT_RC:-timeout} $(tr '\n' ' ' <"$T/wt-$round.out")"
    fi
  else
    grep -q "^READY created=$N/$N" "$T/wt-$round.out" || fail "killed round: streams created" "$(head -1 "$T/wt-$round.out")"
    stop_pid "$wt" 0 KILL
    pass "watcher process with $N open streams SIGKILLed"
  fi
  if [ "${during:-0}" -ge "$N" ] && wait_until 15 open_streams_below 10; then
    pass "$round: open streams gauge $during while open, below 10 after the client left"
  else
    fail "$round: open streams gauge" "$during while open, $(metric_sum "$ADMIN" '^etcdseal_open_streams') 15 s after"
  fi
  wait_acks st 50 10 || fail "$round: checker progress" "$(cat "$T/st.status")"
done
alive "$PROXY_PID" && [ "$(http_code "http://$ADMIN/readyz")" = 200 ] && pass "proxy up and ready" || fail "proxy after the streams" "down or not ready"
fdok() { [ "$(nfds)" -le $((fd0 + 8)) ]; }
if wait_until 10 fdok; then pass "proxy fds back to baseline ($fd0 -> $(nfds))"; else fail "proxy fds" "$fd0 -> $(nfds)"; fi
checker_finish st
checker_verify st "$VIA" "${FAULT_PREFIX}st/"
raw_scan_check "$DIRECT" "$FAULT_PREFIX"
