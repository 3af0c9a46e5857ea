#!/usr/bin/env bash
# tls_hardening_test.sh - the listener's TLS settings (issue 8 part 2), checked from the client
# side with openssl s_client and etcdctl: TLS 1.0/1.1 refused; TLS 1.2 only with ECDHE + AEAD
# suites (static RSA, DHE and CBC suites refused); TLS 1.3 with the AES-GCM/ChaCha20 suites only;
# no compression; no renegotiation; with --client-cert-auth a client without a certificate, with
# an expired one, or with one from another CA is refused (TLS 1.2 and TLS 1.3), a good one works.
#
# Runbook: an openssl CA with an RSA server certificate (so static-RSA suites could be chosen if
# the server allowed them), client certificates "good" and "expired" (2020) from it and "stranger"
# from a second CA; one etcd; one proxy with --client-cert-auth.
source "$(dirname "$0")/lib.sh"
require_proxy
command -v openssl >/dev/null || die "openssl not installed"
P=$T/pki
mkdir -p "$P/db"
umask 077
(
  cd "$P" || exit 1
  touch db/index.txt
  echo 1000 >db/serial
  cat >ca.cnf <<'CNF'
[ ca ]
default_ca = CA_default
[ CA_default ]
dir = .
database = ./db/index.txt
serial = ./db/serial
new_certs_dir = ./db
certificate = ./ca.pem
private_key = ./ca.key
default_md = sha256
default_days = 2
policy = policy_any
unique_subject = no
[ policy_any ]
commonName = supplied
[ client_ext ]
basicConstraints = CA:FALSE
extendedKeyUsage = clientAuth
[ server_ext ]
basicConstraints = CA:FALSE
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
CNF
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key
  openssl req -x509 -new -key ca.key -out ca.pem -days 2 -subj "/CN=hardening-ca" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out server.key
  openssl req -new -key server.key -out server.csr -subj "/CN=hardening-server"
  openssl ca -batch -config ca.cnf -extensions server_ext -in server.csr -out server.pem
  for n in good expired; do
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$n.key"
    openssl req -new -key "$n.key" -out "$n.csr" -subj "/CN=hardening-$n"
  done
  openssl ca -batch -config ca.cnf -extensions client_ext -in good.csr -out good.pem
  openssl ca -batch -config ca.cnf -extensions client_ext -in expired.csr -out expired.pem \
    -startdate 20200101000000Z -enddate 20200102000000Z
  # a second CA and a client certificate from it (same subject style, valid dates)
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout other-ca.key \
    -out other-ca.pem -days 2 -subj "/CN=other-ca" -addext basicConstraints=critical,CA:TRUE
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout stranger.key \
    -out stranger.csr -subj "/CN=hardening-good"
  openssl x509 -req -in stranger.csr -CA other-ca.pem -CAkey other-ca.key -CAcreateserial \
    -out stranger.pem -days 2
) >"$T/pki.log" 2>&1 || die "cannot build the test PKI: $(tail -3 "$T/pki.log")"
openssl x509 -in "$P/expired.pem" -noout -checkend 0 >/dev/null 2>&1 &&
  die "the 'expired' test certificate is not expired"

start_etcd e0
DIRECT=$ETCD_EP_e0
ports 1
start_proxy --endpoints "$DIRECT" --listen-addr "127.0.0.1:${PORTS[0]}" \
  --cert-file "$P/server.pem" --key-file "$P/server.key" --trusted-ca-file "$P/ca.pem" \
  --client-cert-auth || die "proxy did not start"
VIA=$PROXY_EP

# sc NAME ARGS...: one s_client handshake with client certificate NAME ("-" = none); output in
# $T/sc.out, exit status of s_client (1 when the handshake failed)
sc() {
  local n=$1 cert=()
  shift
  [ "$n" != - ] && cert=(-cert "$P/$n.pem" -key "$P/$n.key")
  timeout -k 2 10 openssl s_client -connect "$VIA" -CAfile "$P/ca.pem" -alpn h2 "${cert[@]}" "$@" \
    </dev/null >"$T/sc.out" 2>&1
}
negotiated() { sed -n 's/^.*Cipher is \([^ ]*\).*$/\1/p' "$T/sc.out" | head -1; }

# ---------------------------------------------------------------- controls
if sc good -tls1_2 -cipher ECDHE-RSA-AES128-GCM-SHA256 && [ "$(negotiated)" = ECDHE-RSA-AES128-GCM-SHA256 ]; then
  pass "TLS 1.2 ECDHE-RSA-AES128-GCM-SHA256 with a good client certificate: handshake completes"
else
  fail "TLS 1.2 control handshake" "$(tail -5 "$T/sc.out")"
fi
sc good -tls1_2 -cipher ECDHE-RSA-CHACHA20-POLY1305 && [ "$(negotiated)" = ECDHE-RSA-CHACHA20-POLY1305 ] &&
  pass "TLS 1.2 ECDHE-RSA-CHACHA20-POLY1305 accepted" || fail "TLS 1.2 ChaCha20" "$(tail -3 "$T/sc.out")"
if sc good -tls1_3 && grep -q 'TLSv1.3' "$T/sc.out"; then
  pass "TLS 1.3 handshake completes ($(negotiated))"
else
  fail "TLS 1.3 control handshake" "$(tail -5 "$T/sc.out")"
fi
grep -q '^Compression: NONE' "$T/sc.out" && pass "no TLS compression" ||
  fail "compression" "$(grep -i compression "$T/sc.out")"

# ---------------------------------------------------------------- refused protocol versions / suites
# control: this s_client can offer TLS 1.0 and AES128-SHA at all (a permissive s_server takes
# them), so a refusal below comes from the proxy
ports 1
timeout -k 2 15 openssl s_server -accept "127.0.0.1:${PORTS[0]}" -cert "$P/server.pem" \
  -key "$P/server.key" -cipher 'ALL:@SECLEVEL=0' -www >/dev/null 2>&1 &
SS_PID=$!
track "$SS_PID"
wait_until 5 tcp_open "127.0.0.1:${PORTS[0]}"
weak_ok=""
timeout -k 2 5 openssl s_client -connect "127.0.0.1:${PORTS[0]}" -tls1 -cipher 'DEFAULT:@SECLEVEL=0' \
  </dev/null 2>&1 | grep -q 'TLSv1.0, Cipher is' &&
  timeout -k 2 5 openssl s_client -connect "127.0.0.1:${PORTS[0]}" -tls1_2 -cipher 'AES128-SHA:@SECLEVEL=0' \
    </dev/null 2>&1 | grep -q 'Cipher is AES128-SHA' && weak_ok=1
stop_pid "$SS_PID"
if [ -n "$weak_ok" ]; then
  pass "control: this openssl client negotiates TLS 1.0 and AES128-SHA with a permissive server"
else
  note "this openssl client cannot offer TLS 1.0 or AES128-SHA: the refusals below prove less"
fi
for v in tls1 tls1_1; do
  # SECLEVEL=0 so the refusal comes from the proxy, not from this OpenSSL's client defaults
  if sc good "-$v" -cipher 'DEFAULT:@SECLEVEL=0'; then
    fail "$v refused" "handshake completed: $(grep -E 'Protocol|Cipher is' "$T/sc.out" | head -2)"
  else
    pass "$v is refused"
  fi
done
for c in AES128-SHA AES128-GCM-SHA256 AES256-SHA256 ECDHE-RSA-AES128-SHA ECDHE-RSA-AES256-SHA384 \
  DHE-RSA-AES128-GCM-SHA256 DES-CBC3-SHA; do
  if sc good -tls1_2 -cipher "$c:@SECLEVEL=0"; then
    fail "TLS 1.2 $c refused" "handshake completed with $(negotiated)"
  else
    pass "TLS 1.2 suite $c (not ECDHE+AEAD) is refused"
  fi
done
if sc good -tls1_3 -ciphersuites TLS_AES_128_CCM_SHA256; then
  fail "TLS 1.3 CCM suite refused" "handshake completed with $(negotiated)"
else
  pass "TLS 1.3 suite TLS_AES_128_CCM_SHA256 (not configured) is refused"
fi

# ---------------------------------------------------------------- renegotiation
# s_client renegotiates on an "R" line; the proxy answers with a no_renegotiation alert. The
# pause first lets s_client read the proxy's HTTP/2 SETTINGS (application data arriving during
# the renegotiation would fail it for another reason).
(
  sleep 1
  echo R
  sleep 2
) | timeout -k 2 10 openssl s_client -connect "$VIA" -CAfile "$P/ca.pem" -alpn h2 -tls1_2 \
  -cert "$P/good.pem" -key "$P/good.key" >"$T/reneg.out" 2>&1
if grep -q 'RENEGOTIATING' "$T/reneg.out" &&
  grep -q 'no renegotiation' "$T/reneg.out"; then
  pass "TLS 1.2 renegotiation is refused"
elif ! grep -q 'RENEGOTIATING' "$T/reneg.out"; then
  skip "renegotiation" "this s_client did not try to renegotiate"
else
  fail "renegotiation refused" "$(tail -5 "$T/reneg.out")"
fi

# ---------------------------------------------------------------- client certificates
for n in - expired stranger; do
  what=$n
  [ "$n" = - ] && what=no
  if sc "$n" -tls1_2; then
    fail "TLS 1.2 with $what client certificate refused" "handshake completed"
  else
    pass "TLS 1.2 with $what client certificate: handshake refused"
  fi
done
grep -q 'certificate has expired' "$PROXY_LOG" && pass "the expired certificate refusal is logged with its reason" ||
  fail "expired certificate log" "$(grep -i 'tls' "$PROXY_LOG" | tail -3)"
as() { # as NAME ARGS...: etcdctl (TLS 1.3) through the proxy with client certificate NAME
  local n=$1
  shift
  ECTL_TIMEOUT=10 ectl "$VIA" --cacert "$P/ca.pem" --cert "$P/$n.pem" --key "$P/$n.key" --command-timeout 3s "$@"
}
as good put /hard/good v >/dev/null 2>&1 && pass "etcdctl with the good certificate works" ||
  fail "etcdctl good certificate" "$(as good put /hard/good v 2>&1 | tail -1)"
for n in expired stranger; do
  if as "$n" put "/hard/$n" v >/dev/null 2>&1; then
    fail "etcdctl with the $n certificate refused" "the put succeeded"
  elif [ -n "$(ectl "$DIRECT" get "/hard/$n" --print-value-only)" ]; then
    fail "etcdctl with the $n certificate refused" "the value reached etcd"
  else
    pass "etcdctl (TLS 1.3) with the $n certificate is refused and nothing is written"
  fi
done
if ECTL_TIMEOUT=10 ectl "$VIA" --cacert "$P/ca.pem" --command-timeout 3s put /hard/none v >/dev/null 2>&1; then
  fail "etcdctl without a certificate refused" "the put succeeded"
else
  pass "etcdctl (TLS 1.3) without a client certificate is refused"
fi
alive "$PROXY_PID" && pass "proxy still running after the refused handshakes" || fail "proxy alive" "it exited"
