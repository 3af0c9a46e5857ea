#!/usr/bin/env bash
# client_disconnect_fault.sh - clients vanish mid-stream and mid-message while the checker runs:
# 20 it_enc_client watchers on the protected prefix SIGKILLed while events flow, 20 clients
# SIGKILLed 0-150 ms into a 16 MiB put (mid-message), 20 raw TCP clients that send the HTTP/2
# preface and half a frame, then close. Asserts: the proxy stays up and ready, its open fds
# return to within 8 of the baseline, the big key reads either absent or whole (never partial),
# the checker's reads never went back in time, no acknowledged write lost, zero plaintext.
source "$(dirname "$0")/../integration/lib.sh"
source tests/faults/lib_faults.sh
require_checker
EC=$ES_TOOLS/it_enc_client
[ -x "$EC" ] || die "$EC missing (make)"
start_etcd e0 --max-request-bytes 33554432
DIRECT=$ETCD_EP_e0
fault_config "$T/enc.yaml" "$FAULT_PREFIX"
setup_via "$DIRECT" --encryption-provider-config "$T/enc.yaml"
nfds() { ls "/proc/$PROXY_PID/fd" 2>/dev/null | wc -l; }
checker_start cd "$VIA" "${FAULT_PREFIX}cd/" 120
wait_acks cd 200 15 || fail "checker running" "$(cat "$T/cd.status" 2>/dev/null)"
fd0=$(nfds)

# watchers killed while events flow (the checker's puts are the events)
for i in $(seq 1 20); do
  "$EC" -a "$VIA" -t 30 watch "${FAULT_PREFIX}cd/" prefix count=1000000 >"$T/w$i.out" 2>&1 &
  wp=$!
  disown "$wp"
  track "$wp"
  nap 0.$((RANDOM % 3 + 1))
  kill -KILL "$wp" 2>/dev/null
done
wgot=$(cat "$T"/w*.out | grep -c '"events"\|"kv"' || true)
alive "$PROXY_PID" && pass "20 watchers SIGKILLed mid-stream: proxy up ($wgot event lines seen before the kills)" ||
  fail "watchers killed mid-stream" "proxy exited"

# 16 MiB puts killed mid-message
BIG=fill:16777216:S
want=$("$EC" hash "$BIG" | tr -d '"')
for i in $(seq 1 20); do
  "$EC" -a "$VIA" -t 30 put "${FAULT_PREFIX}big" "$BIG" >/dev/null 2>&1 &
  bp=$!
  disown "$bp"
  track "$bp"
  nap "0.$(printf '%03d' $((RANDOM % 150)))"
  kill -KILL "$bp" 2>/dev/null
done
alive "$PROXY_PID" && pass "20 clients SIGKILLed inside a 16 MiB put: proxy up" || fail "big puts killed" "proxy exited"

# raw clients: preface, SETTINGS, then half a HEADERS frame, then close
for i in $(seq 1 20); do
  python3 - "${VIA%:*}" "${VIA##*:}" <<'PY' 2>/dev/null
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
s.sendall(b"\x00\x00\x40\x01\x04\x00\x00\x00\x01" + b"\x83\x86")  # HEADERS of 64 bytes, 2 sent
s.close()
PY
done
alive "$PROXY_PID" && pass "20 raw clients closed mid-frame: proxy up" || fail "raw clients mid-frame" "proxy exited"

got=$("$EC" -a "$VIA" -t 30 get "${FAULT_PREFIX}big" 2>&1)
if ! echo "$got" | grep -q '"kvs":\[{' ; then
  pass "big key after the killed puts: absent (no put completed)"
elif echo "$got" | grep -qF "$want"; then
  pass "big key after the killed puts: whole 16 MiB value"
else
  fail "big key after the killed puts" "neither absent nor whole: $(echo "$got" | head -c 300)"
fi
"$EC" -a "$VIA" -t 30 put "${FAULT_PREFIX}big" "$BIG" >/dev/null 2>&1
if "$EC" -a "$VIA" -t 30 get "${FAULT_PREFIX}big" 2>&1 | grep -qF "$want"; then
  pass "a 16 MiB put that is not interrupted completes and reads back whole"
else
  fail "uninterrupted 16 MiB put" "not read back whole"
fi
wait_acks cd 100 10 && pass "checker's puts keep flowing after the disconnects" || fail "checker progress" "$(cat "$T/cd.status")"
[ "$(http_code "http://$ADMIN/readyz")" = 200 ] && pass "/readyz 200" || fail "/readyz" "$(http_code "http://$ADMIN/readyz")"
fdok() { [ "$(nfds)" -le $((fd0 + 8)) ]; }
if wait_until 10 fdok; then pass "proxy fds back to baseline ($fd0 -> $(nfds))"; else fail "proxy fds after the disconnects" "$fd0 -> $(nfds)"; fi
checker_finish cd
checker_verify cd "$VIA" "${FAULT_PREFIX}cd/"
raw_scan_check "$DIRECT" "$FAULT_PREFIX"
