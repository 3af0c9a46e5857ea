#!/usr/bin/env bash
# tls_revocation_test.sh - mTLS negatives beyond tls_test.sh: an expired client certificate and
# a revoked one (--client-crl-file) are refused; a valid one from the same CA is accepted; the
# CRL reloads with SIGHUP (a newly revoked certificate is refused without a restart).
#
# Runbook: an openssl CA with an index database (revocation needs one), certificates for
# "good", "expired" (validity in 2020) and "revoked"; one etcd; one proxy with
# --client-cert-auth --trusted-ca-file --client-crl-file.
source "$(dirname "$0")/lib.sh"
require_proxy
P=$T/pki
mkdir -p "$P/db"
umask 077
newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
(
  cd "$P" || exit 1
  touch db/index.txt
  echo 1000 >db/serial
  echo 1000 >db/crlnumber
  cat >ca.cnf <<'CNF'
[ ca ]
default_ca = CA_default
[ CA_default ]
dir = .
database = ./db/index.txt
serial = ./db/serial
crlnumber = ./db/crlnumber
new_certs_dir = ./db
certificate = ./ca.pem
private_key = ./ca.key
default_md = sha256
default_days = 2
default_crl_days = 2
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
  newkey ca.key
  openssl req -x509 -new -key ca.key -out ca.pem -days 2 -subj "/CN=it-ca" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
  for n in server good expired revoked later; do
    newkey "$n.key"
    openssl req -new -key "$n.key" -out "$n.csr" -subj "/CN=it-$n"
  done
  openssl ca -batch -config ca.cnf -extensions server_ext -in server.csr -out server.pem
  openssl ca -batch -config ca.cnf -extensions client_ext -in good.csr -out good.pem
  openssl ca -batch -config ca.cnf -extensions client_ext -in later.csr -out later.pem
  openssl ca -batch -config ca.cnf -extensions client_ext -in revoked.csr -out revoked.pem
  openssl ca -batch -config ca.cnf -extensions client_ext -in expired.csr -out expired.pem \
    -startdate 20200101000000Z -enddate 20200102000000Z
  openssl ca -config ca.cnf -revoke revoked.pem
  openssl ca -config ca.cnf -gencrl -out crl.pem
) >"$T/pki.log" 2>&1 || die "cannot build the test PKI: $(tail -3 "$T/pki.log")"

start_etcd e0
DIRECT=$ETCD_EP_e0
ports 1
start_proxy --endpoints "$DIRECT" --listen-addr "127.0.0.1:${PORTS[0]}" \
  --cert-file "$P/server.pem" --key-file "$P/server.key" --trusted-ca-file "$P/ca.pem" \
  --client-cert-auth --client-crl-file "$P/crl.pem" || die "proxy did not start"
VIA=$PROXY_EP
as() { # as NAME ARGS...: etcdctl through the proxy with client certificate NAME
  local n=$1
  shift
  ECTL_TIMEOUT=10 ectl "$VIA" --cacert "$P/ca.pem" --cert "$P/$n.pem" --key "$P/$n.key" "$@"
}
if as good put /crl/k v >/dev/null 2>&1 && [ "$(as good get /crl/k --print-value-only 2>/dev/null)" = v ]; then
  pass "a valid client certificate is accepted"
else
  fail "valid client certificate" "$(as good put /crl/k v 2>&1 | tail -1)"
fi
for n in expired revoked; do
  if as "$n" --command-timeout 3s put /crl/$n v >/dev/null 2>&1; then
    fail "$n client certificate refused" "the put succeeded"
  elif [ -n "$(ectl "$DIRECT" get /crl/$n --print-value-only)" ]; then
    fail "$n client certificate refused" "the value reached etcd"
  else
    pass "an $n client certificate is refused and nothing is written"
  fi
done
grep -q 'certificate revoked\|certificate has expired\|TLS error' "$PROXY_LOG" &&
  pass "the refusals are logged with the TLS reason" || fail "TLS refusal log lines" "$(tail -3 "$PROXY_LOG")"

# revoke "later" and reload the CRL without a restart
(cd "$P" && openssl ca -config ca.cnf -revoke later.pem && openssl ca -config ca.cnf -gencrl -out crl.pem) >>"$T/pki.log" 2>&1
as later put /crl/later-before v >/dev/null 2>&1 && pass "before the reload the newly revoked certificate still works" ||
  fail "certificate before CRL reload" ""
kill -HUP "$PROXY_PID"
if wait_until 5 sh -c "! ETCDCTL_API=3 etcdctl --endpoints $VIA --cacert $P/ca.pem --cert $P/later.pem --key $P/later.key --dial-timeout 2s --command-timeout 2s put /crl/later-after v >/dev/null 2>&1"; then
  pass "after SIGHUP the reloaded CRL refuses the newly revoked certificate (no restart)"
else
  fail "CRL reload" "the revoked certificate still works after SIGHUP"
fi
as good get /crl/k --print-value-only >/dev/null 2>&1 && pass "the valid certificate keeps working after the reload" ||
  fail "valid certificate after the reload" ""
