#!/usr/bin/env bash
# relay_misc_test.sh - the relay's limits: large messages, many streams, idle streams, unknown
# methods, member list advertisement, and a graceful SIGTERM under load.
#
# Runbook: one etcd; proxy A carries the size/stream/method tests and is SIGTERMed at the end
# under a put load; proxy B carries nothing but one idle watch (IDLE_WATCH_S seconds, default 70,
# so its connections really are idle) and runs alongside; proxy C advertises its own client URL.
# Env: IDLE_WATCH_S, WATCHERS (default 1000), IT_NO_PROXY=1 (against etcd, partly skipped).
source "$(dirname "$0")/lib.sh"
require_proxy
IDLE_WATCH_S=${IDLE_WATCH_S:-70}
WATCHERS=${WATCHERS:-1000}
SHUTDOWN_S=3
start_etcd e0
DIRECT=$ETCD_EP_e0
setup_via "$DIRECT" --shutdown-timeout ${SHUTDOWN_S}s
PROXY_A=${PROXY_PID:-}
note "direct=$DIRECT via=$VIA admin=${ADMIN:-none}"

# ---------------------------------------------------------------- idle watch (in the background)
# Its own proxy, so nothing else keeps its client or upstream connection busy.
if [ -n "${IT_NO_PROXY:-}" ]; then
  IDLE_VIA=$DIRECT
else
  ports 1
  if start_proxy --endpoints "$DIRECT" --listen-addr "127.0.0.1:${PORTS[0]}"; then
    IDLE_VIA=127.0.0.1:${PORTS[0]}
  else
    IDLE_VIA=""
  fi
fi
idle_started=""
if [ -n "$IDLE_VIA" ]; then
  ectl_bg "$T/idle" "$IDLE_VIA" watch /idle/k
  idle_pid=$BG_PID
  for ((i = 0; i < 50; i++)); do
    ectl "$DIRECT" put /idle/k "start-$i" >/dev/null 2>&1
    grep -qx "start-$i" "$T/idle" && break
    sleep 0.2
  done
  if grep -qx "start-$i" "$T/idle"; then
    idle_started=$(now_ms)
  else
    fail "idle watch established" "no event through the idle proxy"
    show_log "$T/idle.err" 5
  fi
else
  fail "idle watch proxy" "second proxy did not start"
fi

# ---------------------------------------------------------------- 1.4 MiB value
head -c 1468006 /dev/urandom >"$T/big"
out=$(ectl "$VIA" put /big/k <"$T/big" 2>&1)
ectl "$VIA" get /big/k --print-value-only >"$T/big-v" 2>"$T/big-v.err"
ectl "$DIRECT" get /big/k --print-value-only >"$T/big-d" 2>/dev/null
# etcdctl prints the value and a newline
if [ "$out" = OK ] && [ "$(stat -c %s "$T/big-v")" = 1468007 ] &&
  cmp -s <(head -c 1468006 "$T/big-v") "$T/big" && cmp -s "$T/big-v" "$T/big-d"; then
  pass "1.4 MiB value: put and get through the proxy, bytes identical"
else
  fail "1.4 MiB value" "put: $out; got $(stat -c %s "$T/big-v") bytes via proxy; $(head -c 200 "$T/big-v.err")"
fi
# over etcd's --max-request-bytes (1.5 MiB): refused by etcd, and the same error via the proxy
head -c 1700000 /dev/urandom >"$T/toobig"
run_ctl "$T/tb-d" "$DIRECT" put /big/too <"$T/toobig"
run_ctl "$T/tb-v" "$VIA" put /big/too <"$T/toobig"
# (the proxy may also refuse it itself, as long as it is an error that says why)
if grep -q 'request is too large' "$T/tb-d" && ! grep -qx 'rc=0' "$T/tb-v" &&
  { cmp -s "$T/tb-d" "$T/tb-v" || grep -qiE 'too large|exceed|ResourceExhausted|resource exhausted' "$T/tb-v"; }; then
  pass "1.7 MiB put refused as too large through the proxy ($(grep -m1 Error "$T/tb-v"))"
else
  fail "1.7 MiB put error" "via: $(tr '\n' '|' <"$T/tb-v" | head -c 300) direct: $(tr '\n' '|' <"$T/tb-d" | head -c 300)"
fi

# ---------------------------------------------------------------- Range response > 20 MiB
head -c $((900 * 1024)) /dev/urandom >"$T/chunk"
put_fail=0
for i in $(seq -w 1 25); do
  # each value differs (index prefix) so a reordered or repeated chunk shows in the hash
  { echo "$i"; cat "$T/chunk"; } | ectl "$DIRECT" put "/range/$i" >/dev/null 2>&1 || put_fail=1
done
ECTL_TIMEOUT=60 ectl "$DIRECT" get /range/ --prefix >"$T/range-d" 2>/dev/null
ECTL_TIMEOUT=60 ectl "$VIA" get /range/ --prefix >"$T/range-v" 2>"$T/range-v.err"
sd=$(stat -c %s "$T/range-d")
sv=$(stat -c %s "$T/range-v")
if [ $put_fail = 0 ] && [ "$sd" -gt $((20 * 1024 * 1024)) ] &&
  [ "$(sha256sum <"$T/range-d")" = "$(sha256sum <"$T/range-v")" ]; then
  pass "Range response of $sd bytes through the proxy, sha256 identical"
else
  fail "Range response > 20 MiB" "direct $sd bytes, via proxy $sv bytes; $(head -c 300 "$T/range-v.err")"
fi
ectl "$DIRECT" del /range/ --prefix >/dev/null 2>&1
rm -f "$T/range-d" "$T/range-v" "$T/big"* "$T/toobig"

# ---------------------------------------------------------------- many watch streams
WT=$ES_TOOLS/it_watchers
open_streams_below() { [ "$(metric_sum "$1" '^etcdseal_open_streams')" -lt "$2" ]; }
if [ ! -x "$WT" ]; then
  fail "$WATCHERS concurrent watch streams" "$WT not built (make tools)"
else
  "$WT" -a "$VIA" -n "$WATCHERS" -c 4 -k /many/key -t 30 >"$T/wt.out" 2>"$T/wt.err" &
  wt_pid=$!
  track $wt_pid
  wait_until 35 grep -q '^READY' "$T/wt.out"
  open_during=""
  [ -n "$ADMIN" ] && open_during=$(metric_sum "$ADMIN" '^etcdseal_open_streams')
  ectl "$VIA" put /many/other x >/dev/null 2>&1 # a key nobody watches
  ectl "$VIA" put /many/key fired >/dev/null 2>&1
  if wait_exit "$wt_pid" 40 && [ "$EXIT_RC" = 0 ]; then
    pass "$WATCHERS concurrent watch streams on 4 connections each got the event ($(tr '\n' ' ' <"$T/wt.out"))"
  else
    fail "$WATCHERS concurrent watch streams" "rc=${EXIT_RC:-timeout} $(tr '\n' ' ' <"$T/wt.out") $(head -c 300 "$T/wt.err")"
  fi
  stop_pid "$wt_pid" 2
  # the proxy counts the streams while open and forgets them once the client is gone
  if [ -z "$ADMIN" ]; then
    :
  elif [ -z "$open_during" ]; then
    skip "open streams gauge" "no etcdseal_open_streams metric on $ADMIN"
  elif [ "$open_during" -lt "$WATCHERS" ]; then
    fail "open streams gauge" "etcdseal_open_streams=$open_during with $WATCHERS watches open"
  elif wait_until 10 open_streams_below "$ADMIN" 10; then
    pass "open streams gauge: $open_during while open, back below 10 after disconnect"
  else
    fail "open streams gauge" "still $(metric_sum "$ADMIN" '^etcdseal_open_streams') 10 s after the watchers disconnected"
  fi
fi

# all on one HTTP/2 connection, as clients that multiplex do
if [ -x "$WT" ]; then
  "$WT" -a "$VIA" -n "$WATCHERS" -c 1 -k /many/one -t 30 >"$T/wt1.out" 2>"$T/wt1.err" &
  wt_pid=$!
  track $wt_pid
  wait_until 35 grep -q '^READY' "$T/wt1.out"
  ectl "$VIA" put /many/one fired >/dev/null 2>&1
  if wait_exit "$wt_pid" 40 && [ "$EXIT_RC" = 0 ]; then
    pass "$WATCHERS watch streams on one connection each got the event ($(tr '\n' ' ' <"$T/wt1.out"))"
  else
    fail "$WATCHERS watch streams on one connection" "rc=${EXIT_RC:-timeout} $(tr '\n' ' ' <"$T/wt1.out") $(head -c 300 "$T/wt1.err")"
  fi
  stop_pid "$wt_pid" 2
fi

# ---------------------------------------------------------------- unknown methods
if [ ! -x "$WT" ]; then
  fail "unknown method" "$WT not built"
else
  for path in /etcdserverpb.KV/Nope /etcdserverpb.Fancy/NewThing; do
    out=$("$WT" -a "$VIA" --call "$path" -t 10 2>&1)
    method=${path##*/}
    svc=${path#/}
    svc=${svc%%/*}
    # etcd itself names only the service for an unknown service; the proxy must name the path
    need=$method
    [ -n "${IT_NO_PROXY:-}" ] && [ "$svc" != etcdserverpb.KV ] && need=$svc
    if grep -q 'grpc-status=12 ' <<<"$out" && grep -q "$svc" <<<"$out" && grep -q "$need" <<<"$out"; then
      pass "unknown method $path -> UNIMPLEMENTED naming it"
    else
      fail "unknown method $path" "$out"
    fi
  done
fi
# a gRPC call with a broken (non-protobuf) body to a known method: an error status, no crash
if curl -V 2>/dev/null | grep -q HTTP2; then
  printf '\0\0\0\0\3\377\377\377' >"$T/garbage"
  hdr=$(curl -s -m 10 --http2-prior-knowledge -X POST -H 'content-type: application/grpc' \
    -H 'te: trailers' --data-binary @"$T/garbage" -D - -o /dev/null "http://$VIA/etcdserverpb.KV/Range" 2>&1)
  st=$(grep -i '^grpc-status:' <<<"$hdr" | tr -d '\r' | awk '{print $2}')
  if [ -n "$st" ] && [ "$st" != 0 ] && ectl "$VIA" get /nothing >/dev/null 2>&1; then
    pass "malformed Range body -> grpc-status $st, proxy still serving"
  else
    fail "malformed Range body" "$(tr '\r\n' '  ' <<<"$hdr")"
  fi
else
  skip "malformed Range body" "curl without HTTP/2"
fi

# ---------------------------------------------------------------- member list advertisement
if [ -z "${IT_NO_PROXY:-}" ]; then
  ports 1
  adv=http://127.0.0.1:${PORTS[0]}
  if start_proxy --endpoints "$DIRECT" --listen-addr "127.0.0.1:${PORTS[0]}" --advertise-client-url "$adv"; then
    out=$(ectl "127.0.0.1:${PORTS[0]}" member list 2>&1)
    if grep -q ", $adv," <<<"$out" && ! grep -q "http://$DIRECT" <<<"$out"; then
      pass "member list via a proxy with --advertise-client-url shows the proxy's URL"
    else
      fail "member list with --advertise-client-url" "$out"
    fi
    stop_pid "$PROXY_PID" 5
  else
    fail "member list with --advertise-client-url" "proxy did not start"
  fi
fi

# ---------------------------------------------------------------- idle watch: wait, then fire
if [ -n "$idle_started" ]; then
  left=$((IDLE_WATCH_S * 1000 - ($(now_ms) - idle_started)))
  [ "$left" -gt 0 ] && nap "$(awk -v m="$left" 'BEGIN {printf "%.1f", m / 1000}')"
  ectl "$DIRECT" put /idle/k after-idle >/dev/null 2>&1
  if wait_until 5 grep -qx after-idle "$T/idle"; then
    pass "watch idle for ${IDLE_WATCH_S} s still delivers its event"
  else
    fail "watch idle for ${IDLE_WATCH_S} s" "no event within 5 s; watcher $(alive "$idle_pid" && echo alive || echo exited): $(tail -3 "$T/idle.err" | tr '\n' '|')"
  fi
  stop_pid "$idle_pid" 2
fi

# ---------------------------------------------------------------- SIGTERM under load
if [ -z "${IT_NO_PROXY:-}" ]; then
  put_loop "$VIA" /term/ "$T/acks1"
  l1=$BG_PID
  put_loop "$VIA" /term/b "$T/acks2"
  l2=$BG_PID
  ectl_bg "$T/term-watch" "$VIA" watch --prefix /term/ # a stream that never ends by itself
  tw=$BG_PID
  wait_until 20 sh -c "[ \$(wc -l <'$T/acks1') -ge 10 ]"
  t0=$(now_ms)
  kill -TERM "$PROXY_A"
  if wait_exit "$PROXY_A" $((SHUTDOWN_S + 5)); then
    took=$(($(now_ms) - t0))
    if [ "$EXIT_RC" = 0 ] && [ "$took" -le $((SHUTDOWN_S * 1000 + 1500)) ]; then
      pass "SIGTERM under load: exit 0 after $took ms (shutdown timeout ${SHUTDOWN_S}s)"
    else
      fail "SIGTERM under load" "exit code $EXIT_RC after $took ms (shutdown timeout ${SHUTDOWN_S}s)"
      show_log "$PROXY_LOG" 10
    fi
  else
    fail "SIGTERM under load" "still running $((SHUTDOWN_S + 5)) s after SIGTERM"
  fi
  stop_loop "$T/acks1" "$l1"
  stop_loop "$T/acks2" "$l2"
  stop_pid "$tw" 2
  # every put the proxy acknowledged is in etcd
  missing=0
  acked=$(cat "$T/acks1" "$T/acks2" | wc -l)
  ectl "$DIRECT" get /term/ --prefix --keys-only | grep -v '^$' | sort >"$T/term-keys"
  awk '{print "/term/" $1}' "$T/acks1" >"$T/term-acked"
  awk '{print "/term/b" $1}' "$T/acks2" >>"$T/term-acked"
  missing=$(sort "$T/term-acked" | comm -23 - "$T/term-keys" | wc -l)
  if [ "$acked" -ge 10 ] && [ "$missing" = 0 ]; then
    pass "SIGTERM under load: all $acked acknowledged puts are in etcd"
  else
    fail "SIGTERM under load: acknowledged puts" "$acked acknowledged, $missing missing"
  fi
  if ! tcp_open "$VIA"; then
    pass "listener closed after exit"
  else
    fail "listener closed after exit" "$VIA still accepts connections"
  fi
fi
