#!/usr/bin/env bash
# tls_test.sh - TLS on both sides of the proxy.
#
# Runbook: make a test PKI (tests/tools/certs.sh: CA 1 with server and client certs, CA 2 with a
# client cert). Then:
#   A  TLS listener (server cert of CA 1) in front of a plain etcd: etcdctl --cacert works,
#      without the CA or in plaintext it fails; the handshake negotiates ALPN h2.
#   B  mTLS listener (--trusted-ca-file CA 1 --client-cert-auth): no client cert refused, a client
#      cert of CA 2 refused, the CA 1 client cert accepted.
#   etcd e1 serves https and requires client certs of CA 1 (control: etcdctl without a cert fails).
#   C  plain listener, upstream https://e1 with --cacert/--cert/--key: works.
#   D  upstream without a client cert: requests fail, /readyz not 200.
#   E  upstream with the wrong CA (CA 2): requests fail (the proxy verifies etcd's certificate);
#   F  E plus --insecure-skip-tls-verify: works.
#   G  mTLS listener and mTLS upstream together: works.
source "$(dirname "$0")/lib.sh"
require_proxy
P=$T/pki
tests/tools/certs.sh "$P" >"$T/certs.log" 2>&1 || {
  cat "$T/certs.log"
  die "certs.sh failed"
}
if [ "$(stat -c %a "$P/server.key")" = 600 ] && [ "$(stat -c %a "$P/client.key")" = 600 ]; then
  pass "test PKI generated (keys 0600)"
else
  fail "test PKI generated" "key modes $(stat -c %a "$P"/*.key | tr '\n' ' ')"
fi
CA=(--cacert "$P/ca.pem")
GOOD=(--cacert "$P/ca.pem" --cert "$P/client.pem" --key "$P/client.key")
OTHER=(--cacert "$P/ca.pem" --cert "$P/client2.pem" --key "$P/client2.key")
SRV=(--cert-file "$P/server.pem" --key-file "$P/server.key")
MTLS=("${SRV[@]}" --trusted-ca-file "$P/ca.pem" --client-cert-auth)
export ECTL_CMD_TIMEOUT=5s

start_etcd e0
DIRECT=$ETCD_EP_e0
ETCD_SCHEME=https ETCD_HEALTH_ARGS="${GOOD[*]}" start_etcd e1 \
  --cert-file "$P/server.pem" --key-file "$P/server.key" --trusted-ca-file "$P/ca.pem" \
  --client-cert-auth
SECURE=https://$ETCD_EP_e1

# put_get NAME EP [etcdctl TLS args]: a put then a get of the same value must succeed.
put_get() {
  local name=$1 ep=$2 v
  shift 2
  v="v-$RANDOM"
  if ectl "$ep" "$@" put "/tls/$name" "$v" >"$T/pg.out" 2>&1 &&
    [ "$(ectl "$ep" "$@" get "/tls/$name" --print-value-only 2>&1)" = "$v" ]; then
    return 0
  fi
  return 1
}
# refused NAME EP [args]: the put must fail (bounded by the command timeout).
refused() {
  local name=$1 ep=$2
  shift 2
  ! ECTL_CMD_TIMEOUT=3s ectl "$ep" "$@" put "/tls/refused-$name" x >"$T/ref.out" 2>&1
}
# start_proxy_on NAME ARGS...: proxy on a fresh port; sets ep_<NAME> (host:port), admin_<NAME>
start_proxy_on() {
  local name=$1
  shift
  ports 2
  if start_proxy --listen-addr "127.0.0.1:${PORTS[0]}" --metrics-addr "127.0.0.1:${PORTS[1]}" "$@"; then
    printf -v "ep_$name" %s "127.0.0.1:${PORTS[0]}"
    printf -v "admin_$name" %s "127.0.0.1:${PORTS[1]}"
    printf -v "pid_$name" %s "$PROXY_PID"
    return 0
  fi
  fail "proxy $name started" "$*"
  return 1
}
# still_alive NAME PID: refused handshakes and failing upstreams must not take the proxy down.
still_alive() {
  if alive "$2"; then
    pass "$1: proxy still running after the refused connections"
  else
    fail "$1: proxy still running" "it exited"
    show_log "$PROXY_LOG" 10
  fi
}
# check_mtls NAME EP: the three client-certificate cases against an mTLS endpoint.
check_mtls() {
  local name=$1 ep=$2
  if refused nocert "$ep" "${CA[@]}"; then
    pass "$name: no client certificate refused"
  else
    fail "$name: no client certificate refused" "put succeeded"
  fi
  if refused othercert "$ep" "${OTHER[@]}"; then
    pass "$name: client certificate of another CA refused"
  else
    fail "$name: client certificate of another CA refused" "put succeeded"
  fi
  if put_get "$name-good" "$ep" "${GOOD[@]}"; then
    pass "$name: good client certificate accepted"
  else
    fail "$name: good client certificate accepted" "$(head -c 300 "$T/pg.out")"
  fi
}

# control: etcd e1 itself enforces mTLS with these certificates
check_mtls "control (etcd direct)" "$SECURE"

if [ -n "${IT_NO_PROXY:-}" ]; then
  skip "proxy TLS cases" "IT_NO_PROXY set"
  exit 0
fi

# ---------------------------------------------------------------- A: TLS listener
if start_proxy_on A --endpoints "$DIRECT" "${SRV[@]}"; then
  if put_get A "https://$ep_A" "${CA[@]}"; then
    pass "A: TLS listener, etcdctl --cacert works"
  else
    fail "A: TLS listener, etcdctl --cacert" "$(head -c 300 "$T/pg.out")"
  fi
  if refused noca "https://$ep_A"; then
    pass "A: client without the CA refuses the proxy's certificate"
  else
    fail "A: client without the CA" "put succeeded"
  fi
  if refused plain "http://$ep_A"; then
    pass "A: plaintext client on the TLS port fails"
  else
    fail "A: plaintext client on the TLS port" "put succeeded"
  fi
  out=$(timeout 10 openssl s_client -connect "$ep_A" -CAfile "$P/ca.pem" -alpn h2 \
    -verify_return_error </dev/null 2>&1)
  if grep -q 'Verify return code: 0' <<<"$out" && grep -q 'ALPN protocol: h2' <<<"$out"; then
    pass "A: handshake verifies against CA 1 and negotiates ALPN h2"
  else
    fail "A: handshake" "$(grep -E 'Verify return|ALPN|error' <<<"$out" | tr '\n' '|')"
  fi
  still_alive A "$pid_A"
  stop_pid "$pid_A" 5
fi

# ---------------------------------------------------------------- B: mTLS listener
if start_proxy_on B --endpoints "$DIRECT" "${MTLS[@]}"; then
  check_mtls "B: mTLS listener" "https://$ep_B"
  still_alive B "$pid_B"
  stop_pid "$pid_B" 5
fi

# ---------------------------------------------------------------- C-F: TLS to etcd
if start_proxy_on C --endpoints "$SECURE" --cacert "$P/ca.pem" --cert "$P/client.pem" \
  --key "$P/client.key"; then
  if wait_ready "$admin_C" 15 && put_get C "$ep_C"; then
    pass "C: upstream https with client certificate: ready, put/get work"
  else
    fail "C: upstream https with client certificate" "readyz $(http_code "http://$admin_C/readyz"); $(head -c 300 "$T/pg.out")"
    show_log "$PROXY_LOG" 8
  fi
  out=$(ectl "$ep_C" get /tls/C --print-value-only 2>&1)
  if [ "$(ectl "$SECURE" "${GOOD[@]}" get /tls/C --print-value-only 2>&1)" = "$out" ] && [ -n "$out" ]; then
    pass "C: value written through the proxy is in the TLS etcd"
  else
    fail "C: value in the TLS etcd" "via proxy '$out'"
  fi
  stop_pid "$pid_C" 5
fi

if start_proxy_on D --endpoints "$SECURE" --cacert "$P/ca.pem"; then
  if refused D "$ep_D"; then
    pass "D: upstream without a client certificate: requests fail"
  else
    fail "D: upstream without a client certificate" "put succeeded (etcd requires client certs)"
  fi
  code=$(http_code "http://$admin_D/readyz")
  if [ "$code" = 503 ]; then
    pass "D: /readyz is 503"
  else
    fail "D: /readyz" "200 although etcd refuses the proxy"
  fi
  still_alive D "$pid_D"
  stop_pid "$pid_D" 5
fi

if start_proxy_on E --endpoints "$SECURE" --cacert "$P/ca2.pem" --cert "$P/client.pem" \
  --key "$P/client.key"; then
  if refused E "$ep_E"; then
    pass "E: upstream certificate not signed by --cacert: requests fail"
  else
    fail "E: upstream certificate verification" "put succeeded with the wrong CA"
  fi
  code=$(http_code "http://$admin_E/readyz")
  if [ "$code" = 503 ]; then
    pass "E: /readyz is 503"
  else
    fail "E: /readyz" "200 although etcd's certificate does not verify"
  fi
  still_alive E "$pid_E"
  stop_pid "$pid_E" 5
fi

if start_proxy_on F --endpoints "$SECURE" --cacert "$P/ca2.pem" --cert "$P/client.pem" \
  --key "$P/client.key" --insecure-skip-tls-verify; then
  if wait_ready "$admin_F" 15 && put_get F "$ep_F"; then
    pass "F: --insecure-skip-tls-verify accepts the unverified upstream"
  else
    fail "F: --insecure-skip-tls-verify" "$(head -c 300 "$T/pg.out")"
  fi
  stop_pid "$pid_F" 5
fi

# ---------------------------------------------------------------- G: mTLS both sides
if start_proxy_on G --endpoints "$SECURE" --cacert "$P/ca.pem" --cert "$P/client.pem" \
  --key "$P/client.key" "${MTLS[@]}"; then
  wait_ready "$admin_G" 15
  check_mtls "G: mTLS both sides" "https://$ep_G"
  expect_same_tls() {
    run_ctl "$T/gd" "$SECURE" "${GOOD[@]}" get /tls/ --prefix -w json
    run_ctl "$T/gv" "https://$ep_G" "${GOOD[@]}" get /tls/ --prefix -w json
    cmp -s "$T/gd" "$T/gv" && grep -qx rc=0 "$T/gd"
  }
  if expect_same_tls; then
    pass "G: get --prefix -w json identical direct vs proxy"
  else
    fail "G: get --prefix -w json" "$(diff "$T/gd" "$T/gv" | head -5 | tr '\n' '|')"
  fi
  stop_pid "$pid_G" 5
fi
