#!/usr/bin/env bash
# access_policy_test.sh - the mTLS gateway access policy against a real etcd with real etcdctl.
#
# Runbook: make a test PKI (tests/tools/certs.sh) plus three client certificates of CA 1:
#   app    CN=app-1,   SAN DNS:one.apps.example   -> read/write /app/, read /shared/, lease
#   ops    CN=ops-1,   SAN URI:spiffe://test/ops  -> read/write everything, admin, lease
#   client CN=it-client (certs.sh)                -> no rule names it: everything denied
# Start an mTLS proxy with --access-policy and check the allow/deny matrix: get/put/del, ranges
# (--prefix, --from-key), txn with the denied key only in the failure branch, watch inside and
# outside the prefix, lease grant (lease verb), member list (admin), compaction (write on the
# whole keyspace). A denial is PERMISSION_DENIED naming identity and key (a denied watch: that
# watch canceled with the reason, the stream goes on), is counted in /metrics and logged once as
# an audit line without the value. A cleartext proxy with the same policy
# serves anonymous callers only what the `anonymous` rule grants. Reload: SIGHUP with a changed
# policy flips a verdict; SIGHUP with a broken file keeps the running policy.
source "$(dirname "$0")/lib.sh"
require_proxy
P=$T/pki
tests/tools/certs.sh "$P" >"$T/certs.log" 2>&1 || {
  cat "$T/certs.log"
  die "certs.sh failed"
}
# leaf NAME CN SAN: a client certificate of CA 1
leaf() {
  (
    cd "$P" && umask 077 &&
      openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null &&
      openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null &&
      printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=clientAuth" "subjectAltName=$3" >"$1.ext" &&
      openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -out "$1.pem" -extfile "$1.ext" 2>/dev/null
  )
}
leaf app app-1 "DNS:one.apps.example" || die "app certificate"
leaf ops ops-1 "URI:spiffe://test/ops" || die "ops certificate"
APP=(--cacert "$P/ca.pem" --cert "$P/app.pem" --key "$P/app.key")
OPS=(--cacert "$P/ca.pem" --cert "$P/ops.pem" --key "$P/ops.key")
NOBODY=(--cacert "$P/ca.pem" --cert "$P/client.pem" --key "$P/client.key")
export ECTL_CMD_TIMEOUT=5s

POLICY=$T/access-policy.yaml
write_policy() { # write_policy EXTRA_APP_PREFIX
  cat >"$POLICY.tmp" <<EOF
apiVersion: etcdseal.io/v1
kind: AccessPolicy
rules:
  - name: app
    subjects: ["DNS:*.apps.example"]
    verbs: [read, write]
    keyPrefixes: ["/app/"$1]
  - name: app-extras
    subjects: ["CN=app-*"]
    verbs: [lease]
  - name: app-shared
    subjects: ["CN=app-*"]
    verbs: [read]
    keyPrefixes: ["/shared/"]
  - name: ops
    subjects: ["URI:spiffe://test/ops"]
    verbs: [read, write, lease, admin]
    keyPrefixes: [""]
  - name: anonymous-public
    subjects: [anonymous]
    verbs: [read]
    keyPrefixes: ["/public/"]
EOF
  mv "$POLICY.tmp" "$POLICY"
}
write_policy ""

start_etcd e0
ports 4
start_proxy --listen-addr "127.0.0.1:${PORTS[0]}" --metrics-addr "127.0.0.1:${PORTS[1]}" \
  --endpoints "$ETCD_EP_e0" --cert-file "$P/server.pem" --key-file "$P/server.key" \
  --trusted-ca-file "$P/ca.pem" --client-cert-auth --access-policy "$POLICY" ||
  die "mTLS proxy with --access-policy did not start"
VIA=127.0.0.1:${PORTS[0]}
ADMIN=127.0.0.1:${PORTS[1]}
MTLS_PID=$PROXY_PID
MTLS_LOG=$PROXY_LOG
wait_ready "$ADMIN" || die "proxy not ready"

# ok NAME CTLARGS...: the etcdctl command must succeed
ok() {
  local name=$1
  shift
  if ectl "$VIA" "$@" >"$T/ok.out" 2>&1; then
    pass "$name"
  else
    fail "$name" "$(head -c 300 "$T/ok.out")"
  fi
}
# denied NAME NEEDLE CTLARGS...: must fail with PermissionDenied and NEEDLE in the message
denied() {
  local name=$1 needle=$2
  shift 2
  if ectl "$VIA" "$@" >"$T/den.out" 2>&1; then
    fail "$name" "allowed: $(head -c 200 "$T/den.out")"
  elif grep -q "PermissionDenied" "$T/den.out" && grep -qF -- "$needle" "$T/den.out"; then
    pass "$name"
  else
    fail "$name" "$(head -c 300 "$T/den.out")"
  fi
}

# ------------------------------------------------------------------ key verbs
ok "app: put /app/a" "${APP[@]}" put /app/a v1
ok "app: get /app/a" "${APP[@]}" get /app/a
denied "app: put /other/x denied, message names identity and key" \
  'identity "CN=app-1" may not write "/other/x"' "${APP[@]}" put /other/x SECRETVALUE-7f3a
ok "app: get /shared/x (read-only rule)" "${APP[@]}" get /shared/x
denied "app: put /shared/x denied (read-only)" 'may not write "/shared/x"' "${APP[@]}" put /shared/x v
ok "app: get --prefix /app/" "${APP[@]}" get --prefix /app/
denied "app: get --prefix /ap denied (range leaves /app/)" 'may not read "/ap"' \
  "${APP[@]}" get --prefix /ap
denied "app: get --from-key /app/ denied (to the end of the keyspace)" '(end of keyspace)' \
  "${APP[@]}" get --from-key /app/
ok "app: get /app/a /app/z (explicit range inside)" "${APP[@]}" get /app/a /app/z
denied "app: get /app/a /b (range_end outside)" 'may not read "/app/a"' "${APP[@]}" get /app/a /b
ok "app: del /app/a" "${APP[@]}" del /app/a
denied "app: del /other/x denied" 'may not write "/other/x"' "${APP[@]}" del /other/x
ok "app: del --prefix /app/" "${APP[@]}" del --prefix /app/
denied "nobody: get /app/a denied (no rule names CN=it-client)" \
  'identity "CN=it-client" may not read "/app/a"' "${NOBODY[@]}" get /app/a

# Txn: the denied key sits only in the failure branch (etcd would take the success branch)
printf '%s\n' 'value("/app/t") = "nope"' '' 'put /app/t ok' '' 'put /other/f bad' '' >"$T/txn-bad"
printf '%s\n' 'value("/app/t") = "nope"' '' 'put /app/t ok' '' 'put /app/f fine' '' >"$T/txn-good"
printf '%s\n' 'value("/other/c") = "x"' '' 'put /app/t ok' '' '' >"$T/txn-cmp"
if ectl "$VIA" "${APP[@]}" txn <"$T/txn-bad" >"$T/txn.out" 2>&1; then
  fail "app: txn with a denied key only in the failure branch" "allowed"
elif grep -q 'may not write "/other/f"' "$T/txn.out"; then
  pass "app: txn with a denied key only in the failure branch is denied"
else
  fail "app: txn failure-branch denial" "$(head -c 300 "$T/txn.out")"
fi
if ectl "$VIA" "${APP[@]}" txn <"$T/txn-good" >"$T/txn.out" 2>&1; then
  pass "app: txn inside /app/ in both branches allowed"
else
  fail "app: txn inside /app/" "$(head -c 300 "$T/txn.out")"
fi
if ! ectl "$VIA" "${APP[@]}" txn <"$T/txn-cmp" >"$T/txn.out" 2>&1 &&
  grep -q 'may not read "/other/c"' "$T/txn.out"; then
  pass "app: txn comparing a key outside its prefixes denied (compare = read)"
else
  fail "app: txn compare denial" "$(head -c 300 "$T/txn.out")"
fi
if [ -z "$(ectl "$ETCD_EP_e0" get /other/f --print-value-only)" ]; then
  pass "denied calls never reached etcd (/other/f absent)"
else
  fail "denied calls never reached etcd" "/other/f exists"
fi

# ------------------------------------------------------------------ watch
ectl_bg "$T/w-in" "$VIA" "${APP[@]}" watch --prefix /app/w
W_IN=$BG_PID
ectl_bg "$T/w-out" "$VIA" "${APP[@]}" watch /other/w
W_OUT=$BG_PID
ectl_bg "$T/w-pfx" "$VIA" "${APP[@]}" watch --prefix /ap
W_PFX=$BG_PID
nap 1
ectl "$VIA" "${OPS[@]}" put /app/w1 hello >/dev/null 2>&1
if wait_until 5 grep -q hello "$T/w-in"; then
  pass "app: watch --prefix /app/w receives events"
else
  fail "app: watch --prefix /app/w" "$(cat "$T/w-in" "$T/w-in.err" | head -c 300)"
fi
# a denied create is answered as etcd answers one its own auth refuses: that watch is canceled
# with the reason, the stream (and other watches on it) goes on
for w in w-out w-pfx; do
  if wait_until 5 grep -q 'watch was canceled (etcdseal: access denied: identity "CN=app-1"' \
    "$T/$w" "$T/$w.err"; then
    pass "app: $w watch outside the allowed prefix canceled with the denial"
  else
    fail "app: $w watch outside denied" "$(cat "$T/$w" "$T/$w.err" | head -c 300)"
  fi
done
grep -q 'may not read "/other/w"' "$T/w-out" "$T/w-out.err" &&
  pass "app: denied watch message names the key" ||
  fail "denied watch message names the key" "$(cat "$T/w-out" "$T/w-out.err" | head -c 300)"
# two watches on one gRPC stream (etcdctl watch -i): the denied one does not end the other
mkfifo "$T/w-multi.in"
"$ETCDCTL" --endpoints "$VIA" --dial-timeout 3s "${APP[@]}" watch -i <"$T/w-multi.in" \
  >"$T/w-multi" 2>&1 &
W_MULTI=$!
track "$W_MULTI"
exec 7>"$T/w-multi.in"
echo "watch /other/iw" >&7
nap 1
echo "watch /app/iw" >&7
nap 2
ectl "$VIA" "${OPS[@]}" put /app/iw on-the-same-stream >/dev/null 2>&1
if wait_until 5 grep -q on-the-same-stream "$T/w-multi" &&
  grep -q 'may not read "/other/iw"' "$T/w-multi"; then
  pass "app: a denied watch leaves the other watch of the same stream running"
else
  fail "app: denied watch on a shared stream" "$(head -c 300 "$T/w-multi")"
fi
exec 7>&-
stop_pid "$W_MULTI"
stop_pid "$W_IN"
stop_pid "$W_OUT"
stop_pid "$W_PFX"

# ------------------------------------------------------------------ election and lock
# etcdctl lock/elect use clientv3/concurrency: plain KV calls (Txn, Range, Watch) on the keys
# "<name>/<lease>", checked like any other keys (the v3lock/v3election services are checked by
# name prefix: unit test)
if ectl "$VIA" "${APP[@]}" lock /app/lk echo lock-held >"$T/lk.out" 2>&1 && grep -q lock-held "$T/lk.out"; then
  pass "app: lock /app/lk (Lock + Unlock inside /app/)"
else
  fail "app: lock /app/lk" "$(head -c 300 "$T/lk.out")"
fi
denied "app: lock /other/lk denied" '"CN=app-1" may not read "/other/lk/' "${APP[@]}" lock /other/lk echo x
denied "app: elect /other/el denied" '"CN=app-1" may not read "/other/el/' \
  "${APP[@]}" elect /other/el proposal
ectl_bg "$T/el" "$VIA" "${APP[@]}" elect -l /other/el
EL=$BG_PID
# (etcdctl logs the status as JSON: quotes come escaped)
if wait_until 5 grep -qE 'may not read \\?"/other/el' "$T/el" "$T/el.err"; then
  pass "app: elect -l /other/el denied (observing needs read)"
else
  fail "app: elect -l /other/el" "$(grep -ho 'desc = .*' "$T/el" "$T/el.err" | head -c 300)"
fi
stop_pid "$EL"

# ------------------------------------------------------------------ method verbs
ok "app: lease grant (lease verb)" "${APP[@]}" lease grant 60
denied "app: member list denied (admin)" 'may not call /etcdserverpb.Cluster/MemberList' \
  "${APP[@]}" member list
ok "ops: member list (admin)" "${OPS[@]}" member list
ok "ops: get --from-key \"\" (whole keyspace)" "${OPS[@]}" get --from-key ""
denied "nobody: lease grant denied" 'may not call /etcdserverpb.Lease/LeaseGrant' \
  "${NOBODY[@]}" lease grant 60
REV=$(ectl "$VIA" "${OPS[@]}" put /app/c x -w json 2>/dev/null | grep -o '"revision":[0-9]*' | cut -d: -f2)
denied "app: compaction denied (write on the whole keyspace)" '(end of keyspace)' \
  "${APP[@]}" compaction "${REV:-1}"
ok "ops: compaction" "${OPS[@]}" compaction "${REV:-1}"

# ------------------------------------------------------------------ metrics and audit
n=$(metric_sum "$ADMIN" '^etcdseal_access_denied_total\{.*method="Put"')
if [ "${n:-0}" -ge 2 ]; then
  pass "denials counted in etcdseal_access_denied_total{method=\"Put\"} ($n)"
else
  fail "denials counted" "Put denials: '${n:-none}'"
fi
a=$(metric_sum "$ADMIN" '^etcdseal_access_allowed_total')
[ "${a:-0}" -gt 0 ] && pass "allowed calls counted ($a)" || fail "allowed counted" "'${a:-none}'"
if grep 'msg="access denied"' "$MTLS_LOG" | grep 'identity="CN=app-1"' |
  grep 'method=/etcdserverpb.KV/Put' | grep -q 'key="/other/x"'; then
  pass "audit line: identity, method and key of the denied put"
else
  fail "audit line" "$(grep 'access denied' "$MTLS_LOG" | head -3)"
fi
if grep -q 'SECRETVALUE-7f3a' "$MTLS_LOG"; then
  fail "audit lines never hold values" "the denied put's value is in the log"
else
  pass "audit lines never hold values"
fi

# ------------------------------------------------------------------ anonymous (cleartext)
start_proxy --listen-addr "127.0.0.1:${PORTS[2]}" --endpoints "$ETCD_EP_e0" \
  --access-policy "$POLICY" || die "cleartext proxy with --access-policy did not start"
ANON=127.0.0.1:${PORTS[2]}
ectl "$ETCD_EP_e0" put /public/p pub >/dev/null
if [ "$(ectl "$ANON" get /public/p --print-value-only 2>&1)" = pub ]; then
  pass "anonymous: get /public/p (anonymous rule)"
else
  fail "anonymous: get /public/p" "$(ectl "$ANON" get /public/p 2>&1 | head -c 200)"
fi
if ! ectl "$ANON" get /app/a >"$T/anon.out" 2>&1 &&
  grep -q 'identity "anonymous" may not read "/app/a"' "$T/anon.out"; then
  pass "anonymous: get /app/a denied"
else
  fail "anonymous: get /app/a denied" "$(head -c 300 "$T/anon.out")"
fi
stop_pid "$PROXY_PID"

# ------------------------------------------------------------------ reload
write_policy ', "/other/"'
kill -HUP "$MTLS_PID"
if wait_until 10 grep -q 'access policy reloaded' "$MTLS_LOG" &&
  ectl "$VIA" "${APP[@]}" put /other/x after-reload >/dev/null 2>&1; then
  pass "reload: SIGHUP with /other/ added lets app write /other/x"
else
  fail "reload flips the verdict" "$(tail -3 "$MTLS_LOG")"
fi
printf 'apiVersion: etcdseal.io/v1\nkind: AccessPolicy\nrules:\n  - subjects: [bogus]\n' >"$POLICY"
kill -HUP "$MTLS_PID"
if wait_until 10 grep -q 'access policy reload failed' "$MTLS_LOG"; then
  pass "reload: broken policy logged ($(grep -o 'access-policy.yaml:[0-9]*: [^"]*' "$MTLS_LOG" | tail -1))"
else
  fail "reload: broken policy logged" "$(tail -3 "$MTLS_LOG")"
fi
if ectl "$VIA" "${APP[@]}" put /other/y still >/dev/null 2>&1 &&
  ! ectl "$VIA" "${APP[@]}" put /elsewhere/z v >/dev/null 2>&1; then
  pass "reload: broken policy keeps the running one (same verdicts)"
else
  fail "reload keeps the old policy" "verdicts changed"
fi
alive "$MTLS_PID" && pass "proxy still running" || fail "proxy still running" "exited"

# ------------------------------------------------------------------ start-up errors
"$ES_BIN" proxy --listen-addr "127.0.0.1:${PORTS[3]}" --endpoints "$ETCD_EP_e0" \
  --access-policy "$POLICY" >"$T/bad-start.out" 2>&1 &
BAD=$!
track "$BAD"
if wait_exit "$BAD" 10 && grep -q 'access-policy.yaml:4: rules\[0\].subjects\[0\]' "$T/bad-start.out"; then
  pass "start with a broken policy exits naming file:line and setting"
else
  fail "start with a broken policy" "$(head -c 300 "$T/bad-start.out")"
fi

# ------------------------------------------------------------------ --map-identity-to-etcd-user
# etcd e1 with auth enabled: user appuser may read/write /app/ only (etcd RBAC). The proxy's
# policy lets app write /app/ and /other/ and maps it to appuser: etcd's RBAC then still refuses
# /other/ (the mapped user's permissions apply), while the client itself sends no credentials.
start_etcd e1 --auth-token simple --auth-token-ttl 3
E1=$ETCD_EP_e1
setup_auth() {
  ectl "$E1" user add root:rootpw-1 &&
    ectl "$E1" user add appuser:apppw-1 &&
    ectl "$E1" role add approle &&
    ectl "$E1" role grant-permission approle readwrite /app/ --prefix=true &&
    ectl "$E1" user grant-role appuser approle &&
    ectl "$E1" auth enable
}
if setup_auth >"$T/auth.log" 2>&1; then
  pass "etcd e1: auth enabled, appuser limited to /app/ by etcd RBAC"
else
  die "etcd auth setup failed: $(tail -3 "$T/auth.log")"
fi
if ! ectl "$E1" put /app/direct v >"$T/direct.out" 2>&1; then
  pass "control: a put to e1 without credentials fails ($(tail -1 "$T/direct.out" | head -c 80))"
else
  fail "control: auth is enforced by e1" "anonymous put succeeded"
fi
printf 'apppw-1\n' >"$T/appuser.pw"
chmod 600 "$T/appuser.pw"
MAPPOL=$T/map-policy.yaml
cat >"$MAPPOL" <<EOF2
apiVersion: etcdseal.io/v1
kind: AccessPolicy
rules:
  - subjects: ["CN=app-*"]
    verbs: [read, write]
    keyPrefixes: ["/app/", "/other/"]
    etcdUser: appuser
    etcdPasswordFile: $T/appuser.pw
  - subjects: ["CN=app-*"]
    verbs: [lease]
EOF2
ports 1
start_proxy --listen-addr "127.0.0.1:${PORTS[0]}" --endpoints "$E1" \
  --cert-file "$P/server.pem" --key-file "$P/server.key" --trusted-ca-file "$P/ca.pem" \
  --client-cert-auth --access-policy "$MAPPOL" --map-identity-to-etcd-user --workers 1 ||
  die "proxy with --map-identity-to-etcd-user did not start"
MAP=127.0.0.1:${PORTS[0]}
MAP_LOG=$PROXY_LOG
# the first call (a Watch stream) finds no cached token: it waits, input held, for the login
ectl_bg "$T/mw" "$MAP" "${APP[@]}" watch /app/mw
MW=$BG_PID
nap 1
ectl "$E1" --user root:rootpw-1 put /app/mw streamed >/dev/null 2>&1
if wait_until 5 grep -q streamed "$T/mw"; then
  pass "mapped: watch as appuser receives events"
else
  fail "mapped: watch as appuser" "$(cat "$T/mw" "$T/mw.err" | head -c 300)"
fi
stop_pid "$MW"
if ectl "$MAP" "${APP[@]}" put /app/mapped v-mapped >"$T/m.out" 2>&1 &&
  [ "$(ectl "$MAP" "${APP[@]}" get /app/mapped --print-value-only 2>&1)" = v-mapped ]; then
  pass "mapped: app's put/get of /app/ succeed as etcd user appuser (no client credentials)"
else
  fail "mapped: put/get /app/" "$(head -c 300 "$T/m.out")"
fi
if ! ectl "$MAP" "${APP[@]}" put /other/mapped v >"$T/m.out" 2>&1 &&
  grep -q 'etcdserver: permission denied' "$T/m.out"; then
  pass "mapped: /other/ allowed by the proxy policy but refused by etcd RBAC for appuser"
else
  fail "mapped: etcd RBAC applies to the mapped user" "$(head -c 300 "$T/m.out")"
fi
if ectl "$MAP" "${APP[@]}" --user root:rootpw-1 get /app/mapped --print-value-only 2>&1 |
  grep -q v-mapped && ! ectl "$MAP" "${APP[@]}" --user root:rootpw-1 put /other/as-root v \
  >/dev/null 2>&1; then
  pass "mapped: a client's own token is replaced (root's login does not lift appuser's limits)"
else
  fail "mapped: client token replaced" "root credentials changed the verdict"
fi
if ectl "$MAP" "${APP[@]}" lease grant 30 >"$T/m.out" 2>&1; then
  pass "mapped: lease grant as appuser"
else
  fail "mapped: lease grant" "$(head -c 300 "$T/m.out")"
fi
# simple tokens expire after --auth-token-ttl idle seconds: etcd answers "invalid auth token",
# the proxy drops the cached token, and the next call logs in again
nap 5
ectl "$MAP" "${APP[@]}" get /app/mapped >"$T/m1.out" 2>&1
if grep -q 'invalid auth token' "$T/m1.out" && grep -q "token; it is dropped" "$MAP_LOG" &&
  ectl "$MAP" "${APP[@]}" get /app/mapped --print-value-only 2>&1 | grep -q v-mapped; then
  pass "mapped: an expired token is dropped and the next call re-authenticates"
else
  fail "mapped: expired token dropped, re-authentication" \
    "$(head -c 200 "$T/m1.out") | $(grep -c 'it is dropped' "$MAP_LOG") drops logged"
fi
if grep -q 'apppw-1' "$MAP_LOG"; then
  fail "mapped: the password never appears in the log" "found"
else
  pass "mapped: the password never appears in the log"
fi
