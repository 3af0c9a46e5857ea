#!/usr/bin/env bash
# encrypt_node_test.sh - a second client library, the npm etcd3 package (Node.js, @grpc/grpc-js),
# works unchanged through the proxy on encrypted keys.
#
# Runbook: one etcd behind the proxy (fixtures/encrypt/protected.yaml protects /node/ with
# aesgcm). tests/integration/node/ (package.json + package-lock.json, etcd3 pinned) is copied to
# the temp dir and installed with `npm ci` (npm's cache makes later runs offline-fast; no registry
# -> SKIP with npm's reason). etcd3_test.js runs put/get, prev_kv, getAll, count, Txn with VALUE
# and VERSION compares, watch with prev_kv, delete with prev_kv, lock and election through the
# proxy and checks plaintext comes back (the election value also read raw); then etcd is read raw: every value under /node/ is
# aesgcm ciphertext holding none of the plaintexts. Env: NPM (default npm), NODE (default node).
source "$(dirname "$0")/lib.sh"
source tests/integration/fixtures/encrypt/enc_helpers.sh
require_proxy
NODE=${NODE:-node}
NPM=${NPM:-npm}
if ! command -v "$NODE" >/dev/null || ! command -v "$NPM" >/dev/null; then
  skip "$TEST_NAME" "node/npm not installed"
  exit 0
fi
mkdir -p "$T/node"
cp tests/integration/node/package.json tests/integration/node/package-lock.json \
  tests/integration/node/etcd3_test.js "$T/node/"
if ! (cd "$T/node" && timeout -k 5 180 "$NPM" ci --no-audit --no-fund --loglevel=error) >"$T/npm.log" 2>&1; then
  if grep -qiE 'ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ETIMEDOUT|ECONNRESET|network|proxy|registry' "$T/npm.log"; then
    skip "$TEST_NAME" "npm cannot reach the registry: $(grep -m1 -iE 'err' "$T/npm.log" | cut -c1-200)"
    exit 0
  fi
  die "npm ci failed: $(tail -3 "$T/npm.log" | tr '\n' ' ' | cut -c1-300)"
fi
pass "npm ci etcd3@$(cd "$T/node" && "$NODE" -p 'require("etcd3/package.json").version')"

start_etcd e0
DIRECT=$ETCD_EP_e0
CONF=$(enc_config protected.yaml) || die "cannot copy protected.yaml"
setup_via "$DIRECT" --encryption-provider-config "$CONF"
note "direct=$DIRECT via=$VIA admin=${ADMIN:-none}"

(cd "$T/node" && timeout -k 5 90 "$NODE" etcd3_test.js "$VIA" "$DIRECT") >"$T/node.out" 2>"$T/node.err"
rc=$?
while IFS= read -r line; do
  case $line in
  "PASS "*) pass "${line#PASS }" ;;
  "FAIL "*) fail "${line#FAIL }" "" ;;
  *) echo "  $line" ;;
  esac
done <"$T/node.out"
n=$(grep -c '^PASS ' "$T/node.out")
if [ $rc != 0 ] && ! grep -q '^FAIL ' "$T/node.out"; then
  fail "node etcd3 run" "exit $rc: $(tail -5 "$T/node.err" | tr '\n' ' ' | cut -c1-400)"
fi
check "node etcd3: all 13 checks ran" test "$(grep -c '^[PF]' "$T/node.out")" -ge 13

# raw: every value the client wrote under /node/ is ciphertext without the plaintext
raw_scan "$T/raw" "$DIRECT" /node/
nraw=$(wc -l <"$T/raw")
enc=$(printf 'k8s:enc:aesgcm:v1:gcm-it:' | xxd -p)
nenc=$(awk -v p="$enc" 'index($2, p) == 1' "$T/raw" | wc -l)
nplain=0
for s in node-secret-3 w3 node-leader-1; do
  h=$(printf '%s' "$s" | xxd -p)
  awk '{print $2}' "$T/raw" | grep -q "$h" && nplain=$((nplain + 1))
done
check "raw: $nraw values under /node/ in etcd are aesgcm ciphertext ($nenc), no plaintext found ($nplain)" \
  test "$nraw" -ge 3 -a "$nenc" = "$nraw" -a $nplain = 0
raw_value "$T/k1" "$DIRECT" /node/k1
out=$("$ES_BIN" decrypt --encryption-provider-config "$CONF" --key /node/k1 <"$T/k1" 2>/dev/null)
check "raw: /node/k1 decrypts to the last value etcd3 wrote" test "$out" = node-secret-3
