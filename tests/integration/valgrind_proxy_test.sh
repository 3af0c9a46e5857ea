#!/usr/bin/env bash
# shellcheck disable=SC2154 # ETCD_EP_e0 is set by lib.sh
# valgrind_proxy_test.sh - the proxy under valgrind memcheck on a short integration run (issue 8,
# item 5): etcd + `etcdseal proxy` with aesgcm on /vg/, KMS v2 on /vgk/ (the bundled plugin, file
# backend, not under valgrind) and a pass-through prefix, run as
#   valgrind --tool=memcheck --leak-check=full --errors-for-leak-kinds=definite
#            --error-exitcode=99
# Workload: VG_N puts + VG_N gets on /vg/, VG_K on /vgk/ (one it_enc_client connection), puts and
# gets with etcdctl (a connection each), a prefix Range sorted by value, a Txn with a VALUE compare
# (both branches), deletes with prev, a Watch with prev (it_enc_client, events checked) and an
# etcdctl watch left open at shutdown, an undecryptable value read (error path), a SIGHUP reload,
# then SIGTERM; then a second proxy with an mTLS listener (tests/tools/certs.sh PKI): puts/gets with
# the good client cert, no cert and another CA's cert refused, SIGHUP (certificate reload),
# SIGTERM. Asserts for each: the answers are right, the proxy exits 0 (not 99), the report has
# "ERROR SUMMARY: 0 errors" and "definitely lost: 0 bytes" (or no leak at all); "possibly lost" and
# "still reachable" are printed as figures only. Skipped when valgrind is not installed.
source "$(dirname "$0")/lib.sh"
source tests/integration/fixtures/encrypt/enc_helpers.sh
require_proxy
require_enc_client
VG=${VALGRIND:-valgrind}
command -v "$VG" >/dev/null 2>&1 || {
  skip "$TEST_NAME" "valgrind not installed"
  exit 0
}
# valgrind cannot run a sanitizer build (make sanitize points ES_BIN at build-asan/etcdseal)
if ldd "$ES_BIN" 2>/dev/null | grep -q 'libasan'; then
  skip "$TEST_NAME" "$ES_BIN is an ASan build; valgrind runs on the release build (make test)"
  exit 0
fi
VG_N=${VG_N:-400}
VG_K=${VG_K:-50}
VGLOG=$T/valgrind.log
# the wrapper execs valgrind, so start_proxy's PID is valgrind's (= the proxy's) PID
cat >"$T/etcdseal-vg" <<EOW
#!/bin/sh
exec "$VG" --tool=memcheck --leak-check=full --errors-for-leak-kinds=definite \\
  --error-exitcode=99 --num-callers=30 \\
  --log-file="$VGLOG" "$PWD/$ES_BIN" "\$@"
EOW
chmod +x "$T/etcdseal-vg"
KEY=$("$ES_BIN" keygen) || die "etcdseal keygen failed"
CFG=$T/enc.yaml
cat >"$CFG" <<EOC
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [/vg/]
    providers:
      - aesgcm:
          keys:
            - name: vg-a
              secret: $KEY
  - resources: [/vgk/]
    providers:
      - kms:
          apiVersion: v2
          name: vgkms
          endpoint: unix://$T/kms.sock
          timeout: 5s
EOC
chmod 600 "$CFG"
M="vgmark-$$"
T0=$(now_ms)
start_etcd e0
DIRECT=$ETCD_EP_e0
# the bundled KMS v2 plugin (not under valgrind), file backend
head -c 32 /dev/urandom >"$T/kek.bin"
chmod 600 "$T/kek.bin"
bg "$ES_BIN" kms-plugin --listen "unix://$T/kms.sock" --backend file --key-file "$T/kek.bin" \
  2>"$T/plugin.log"
wait_until 10 "$ES_TOOLS/it_kms_client" --addr "unix://$T/kms.sock" --timeout-ms 500 status ||
  die "kms plugin did not answer Status"
ports 2
ES_BIN_REAL=$ES_BIN
ES_BIN=$T/etcdseal-vg
start_proxy --endpoints "$DIRECT" --listen-addr "127.0.0.1:${PORTS[0]}" \
  --metrics-addr "127.0.0.1:${PORTS[1]}" --encryption-provider-config "$CFG" --workers 2 \
  --shutdown-timeout 3s || die "proxy under valgrind did not start"
ES_BIN=$ES_BIN_REAL
VIA=127.0.0.1:${PORTS[0]}
ADMIN=127.0.0.1:${PORTS[1]}
wait_ready "$ADMIN" 30 || die "proxy under valgrind: /readyz not 200 within 30 s"
pass "proxy under valgrind ready in $(($(now_ms) - T0)) ms"

ec() { "$ENC_CLIENT" -a "$VIA" -t 120 "$@"; }
ec watch /vg/w/ prefix prev count=4 timeout=60 >"$T/watch.out" 2>&1 &
WPID=$!
track "$WPID"
ectl_bg "$T/ctlwatch.out" "$VIA" watch /vg/ --prefix
sleep 1
{
  for ((i = 1; i <= VG_N; i++)); do echo "put /vg/k$i $M-$i"; done
  for ((i = 1; i <= VG_N; i++)); do echo "get /vg/k$i"; done
  echo "get /vg/k1 end=/vg/k2 sort=value order=desc"
  for ((i = 1; i <= VG_K; i++)); do echo "put /vgk/k$i $M-$i"; done
  for ((i = 1; i <= VG_K; i++)); do echo "get /vgk/k$i"; done
  echo "get /vgk/ prefix"
  echo "txn cmp /vg/k1 value = $M-1 then put /vg/k1 $M-1b else get /vg/k1 end"
  echo "txn cmp /vg/k2 value = nope then get /vg/k2 else put /vg/k2 $M-2b prev end"
  echo "put /vg/w/a $M-wa"
  echo "put /vg/w/a $M-wa2 prev"
  echo "del /vg/w/a prev"
  echo "put /vg/w/b $M-wb"
  echo "del /vg/k3 prev"
  echo "put /plain/x plainvalue"
  echo "get /plain/x"
} >"$T/load.cmds"
ec -f "$T/load.cmds" >"$T/load.out" 2>&1
lrc=$?
nerr=$(grep -c '"error"' "$T/load.out")
nput=$(grep -c '"op":"put"' "$T/load.out")
ngot=$(grep -oE "\"value\":\"$M-[0-9]+\"" "$T/load.out" | wc -l)
if [ "$lrc" -eq 0 ] && [ "$nerr" -eq 0 ] && [ "$nput" -ge $((VG_N + VG_K)) ] && [ "$ngot" -ge $((VG_N + 2 * VG_K)) ]; then
  pass "workload: $nput puts, $ngot marker values read (aesgcm and KMS v2), txn/sort/del-prev, 0 errors"
else
  fail "workload" "rc=$lrc errors=$nerr puts=$nput reads=$ngot"
  grep '"error"' "$T/load.out" | head -3 | sed 's/^/  | /'
fi
txn1=$(grep '"op":"txn"' "$T/load.out" | head -1)
txn2=$(grep '"op":"txn"' "$T/load.out" | sed -n 2p)
if [[ $txn1 == *'"succeeded":true'* ]] && [[ $txn2 == *'"succeeded":false'* ]]; then
  pass "txn VALUE compare: equal -> then, different -> else"
else
  fail "txn VALUE compare" "$txn1 / $txn2"
fi
for ((i = 1; i <= 10; i++)); do
  ECTL_TIMEOUT=60 ECTL_CMD_TIMEOUT=30s ectl "$VIA" put "/vg/c$i" "$M-c$i" >/dev/null 2>&1 || break
done
cget=$(ECTL_TIMEOUT=60 ECTL_CMD_TIMEOUT=30s ectl "$VIA" get /vg/c --prefix --print-value-only 2>&1 | grep -c "$M-c")
if [ "$cget" -eq 10 ]; then pass "etcdctl: 10 puts and a prefix get on new connections"; else
  fail "etcdctl puts/get" "$cget of 10 values read"; fi
# error path: a value no provider can read
ectl "$DIRECT" put /vg/bad "k8s:enc:aesgcm:v1:vg-a:notaciphertextnotaciphertext" >/dev/null
if ec get /vg/bad 2>&1 | grep -q '"error"'; then pass "undecryptable value refused"; else
  fail "undecryptable value refused" "no error"; fi
ectl "$DIRECT" del /vg/bad >/dev/null
kill -HUP "$PROXY_PID"
reloaded() { grep -q 'encryption configuration reloaded' "$PROXY_LOG"; }
if wait_until 30 reloaded; then pass "SIGHUP reload under valgrind"; else fail "SIGHUP reload" "no reloaded line"; fi
if wait_exit "$WPID" 30 && [ "$(grep -c "$M-w" "$T/watch.out")" -ge 4 ]; then
  pass "watch with prev: 4 events with plaintext values"
else
  fail "watch with prev" "$(head -c 300 "$T/watch.out")"
fi

# ------------------------------------------------------------------ SIGTERM, valgrind's verdict
# vg_verdict LABEL PID LOG: SIGTERM to the proxy under valgrind, then its exit status (99 = memcheck
# errors), the ERROR SUMMARY and the definite leaks; possibly lost/still reachable as figures.
vg_verdict() {
  local label=$1 pid=$2 log=$3 prc errs def poss reach supp
  kill -TERM "$pid"
  if wait_exit "$pid" 60; then prc=$EXIT_RC; else
    prc=timeout
    stop_pid "$pid" 1 KILL
  fi
  note "$label: valgrind report $log"
  grep -E '(in use at exit|total heap usage|lost:|reachable:|suppressed:|ERROR SUMMARY)' "$log" |
    sed 's/^==[0-9]*== */  | /'
  errs=$(grep -oE 'ERROR SUMMARY: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+$')
  def=$(grep -oE 'definitely lost: [0-9,]+ bytes' "$log" | tail -1 | grep -oE '[0-9,]+' | tr -d ,)
  [ -z "$def" ] && grep -q 'All heap blocks were freed' "$log" && def=0
  poss=$(grep -oE 'possibly lost: [0-9,]+ bytes' "$log" | tail -1 | grep -oE '[0-9,]+' | tr -d ,)
  reach=$(grep -oE 'still reachable: [0-9,]+ bytes' "$log" | tail -1 | grep -oE '[0-9,]+' | tr -d ,)
  supp=$(grep -oE 'suppressed: [0-9,]+ bytes in [0-9,]+ blocks' "$log" | tail -1 | sed 's/suppressed: //')
  if [ "$prc" = 0 ]; then pass "$label: proxy exited 0 under valgrind after SIGTERM"; else
    fail "$label: proxy exit under valgrind" "status $prc (99 = valgrind found errors)"; fi
  if [ "${errs:-x}" = 0 ]; then
    pass "$label: memcheck 0 errors (invalid reads/writes, uninitialised use, definite leaks)"
  else
    fail "$label: memcheck errors" "ERROR SUMMARY: ${errs:-missing}"
    grep -E -A12 '^==[0-9]+== (Invalid|Conditional|Use of|Syscall|Mismatched|[0-9,]+ bytes in [0-9,]+ blocks are definitely)' "$log" |
      head -60 | sed 's/^/  | /'
  fi
  if [ "${def:-x}" = 0 ]; then
    pass "$label: memcheck 0 bytes definitely lost (possibly lost ${poss:-0} B, still reachable ${reach:-0} B, suppressed ${supp:-none}; figures only)"
  else
    fail "$label: memcheck definite leaks" "definitely lost: ${def:-missing} bytes"
  fi
}
vg_verdict "aesgcm+kms" "$PROXY_PID" "$VGLOG"

# ------------------------------------------------------------------ phase 2: mTLS listener
P=$T/pki
if ! tests/tools/certs.sh "$P" >"$T/certs.log" 2>&1; then
  skip "mTLS phase" "tests/tools/certs.sh failed: $(tail -1 "$T/certs.log")"
else
  VGLOG=$T/valgrind-tls.log
  sed -i "s#--log-file=[^ ]*#--log-file=$VGLOG#" "$T/etcdseal-vg"
  ports 2
  ES_BIN=$T/etcdseal-vg
  start_proxy --endpoints "$DIRECT" --listen-addr "127.0.0.1:${PORTS[0]}" \
    --metrics-addr "127.0.0.1:${PORTS[1]}" --encryption-provider-config "$CFG" --workers 2 \
    --shutdown-timeout 3s --cert-file "$P/server.pem" --key-file "$P/server.key" \
    --trusted-ca-file "$P/ca.pem" --client-cert-auth || die "mTLS proxy under valgrind did not start"
  ES_BIN=$ES_BIN_REAL
  VIA=127.0.0.1:${PORTS[0]}
  wait_ready "127.0.0.1:${PORTS[1]}" 30 || die "mTLS proxy under valgrind: /readyz not 200"
  GOOD=(--cacert "$P/ca.pem" --cert "$P/client.pem" --key "$P/client.key")
  ok=0
  for ((i = 1; i <= 10; i++)); do
    ECTL_TIMEOUT=60 ECTL_CMD_TIMEOUT=30s ectl "$VIA" "${GOOD[@]}" put "/vg/t$i" "$M-t$i" >/dev/null 2>&1 && ok=$((ok + 1))
  done
  tget=$(ECTL_TIMEOUT=60 ECTL_CMD_TIMEOUT=30s ectl "$VIA" "${GOOD[@]}" get /vg/t --prefix --print-value-only 2>&1 | grep -c "$M-t")
  if [ "$ok" -eq 10 ] && [ "$tget" -eq 10 ]; then pass "mTLS: 10 puts and a prefix get with the CA 1 client cert"; else
    fail "mTLS puts/get" "$ok puts, $tget values read"; fi
  refused=0
  ECTL_CMD_TIMEOUT=5s ectl "$VIA" --cacert "$P/ca.pem" put /vg/nocert x >/dev/null 2>&1 || refused=$((refused + 1))
  ECTL_CMD_TIMEOUT=5s ectl "$VIA" --cacert "$P/ca.pem" --cert "$P/client2.pem" --key "$P/client2.key" \
    put /vg/othercert x >/dev/null 2>&1 || refused=$((refused + 1))
  if [ "$refused" -eq 2 ]; then pass "mTLS: no client cert and a CA 2 client cert refused"; else
    fail "mTLS refusals" "$refused of 2 refused"; fi
  kill -HUP "$PROXY_PID"
  tls_reloaded() { grep -q 'TLS certificate reloaded' "$PROXY_LOG"; }
  if wait_until 30 tls_reloaded; then pass "mTLS: SIGHUP certificate reload under valgrind"; else
    fail "mTLS: SIGHUP certificate reload" "no reloaded line"; fi
  vg_verdict "mTLS" "$PROXY_PID" "$VGLOG"
fi
note "run took $(($(now_ms) - T0)) ms"
