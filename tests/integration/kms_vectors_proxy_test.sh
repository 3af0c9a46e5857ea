#!/usr/bin/env bash
# kms_vectors_proxy_test.sh - every Kubernetes vector (../shared/vectors/k8s-vectors.json, KMS v1
# and v2 included) read through the proxy configured with the vectors' own EncryptionConfiguration.
#
# Runbook: one tests/tools/kms_fake_plugin per fake KMS of the vectors (the fake of
# ../shared/vectors/README.md, flags from the JSON's "fake_kms"), each on a Linux abstract socket;
# the proxy runs with a mode-0600 copy of ../shared/vectors/encryption-config.yaml that differs
# from the original ONLY in the abstract socket names (a per-run suffix, so this test never
# collides with tests/unit/policy_vectors_test, which binds the original names); the copy is
# diffed against the original to prove it. Then, vector by vector (several share an etcd key):
# the stored value is written straight into etcd under its etcd_key and read back through the
# proxy with etcdctl: positive vectors give exactly their plaintext (and etcdseal_stale_reads_total
# grows exactly for the vectors Kubernetes read as stale), negative vectors fail with INTERNAL
# and a message naming the key, without plaintext. KMS vectors first, then every other vector
# through the same proxy: all of the file's vectors in one place, the count reported.
# Env: ETCDSEAL_SHARED (default ../shared).
source "$(dirname "$0")/lib.sh"
source tests/integration/fixtures/encrypt/enc_helpers.sh
require_proxy
require_enc_client
SHARED=${ETCDSEAL_SHARED:-../shared}
VJSON=$SHARED/vectors/k8s-vectors.json
VYAML=$SHARED/vectors/encryption-config.yaml
FAKE=$ES_TOOLS/kms_fake_plugin
KFIX=tests/integration/fixtures/kms
[ -x "$FAKE" ] || die "$FAKE missing (make)"
if [ ! -f "$VJSON" ] || [ ! -f "$VYAML" ]; then
  skip "$TEST_NAME" "$VJSON or $VYAML missing (set ETCDSEAL_SHARED)"
  exit 0
fi
mkdir -p "$T/vec"
python3 "$KFIX/vectors_prepare.py" "$VJSON" "$T/vec" || die "cannot read $VJSON"
TOTAL=$(wc -l <"$T/vec/list")

# ------------------------------------------------------------------ fake plugins, renamed sockets
SUF="-it$$-$RANDOM"
cp "$VYAML" "$T/vectors.yaml"
chmod 600 "$T/vectors.yaml"
mapfile -t PLUGINS <"$T/vec/plugins"
for n in "${PLUGINS[@]}"; do
  grep -qx "  *endpoint: unix:///@k8senc-fake-$n" "$T/vectors.yaml" ||
    die "$VYAML has no endpoint unix:///@k8senc-fake-$n for fake KMS $n"
  sed -i "s#^\( *endpoint: unix:///@k8senc-fake-$n\)\$#\1$SUF#" "$T/vectors.yaml"
done
# the copy differs from the original in exactly the endpoint lines, by the suffix only
changed=$(diff "$VYAML" "$T/vectors.yaml" | grep -c '^>')
bad=$(diff <(sed "s#\(endpoint: unix:///@k8senc-fake-[a-z0-9-]*\)$SUF\$#\1#" "$T/vectors.yaml") "$VYAML" | wc -l)
if [ "$changed" = "${#PLUGINS[@]}" ] && [ "$bad" = 0 ] && [ "$(stat -c %a "$T/vectors.yaml")" = 600 ]; then
  pass "vectors' EncryptionConfiguration copied unchanged apart from ${#PLUGINS[@]} socket names (mode 0600)"
else
  fail "vectors' EncryptionConfiguration copy" "changed lines $changed, other differences $bad"
  diff "$VYAML" "$T/vectors.yaml" | head -20 | sed 's/^/  | /'
fi
grep -E 'endpoint(s)?:' "$VYAML" | grep -v 'k8senc-fake-' && die "$VYAML names endpoints this test does not start"

for n in "${PLUGINS[@]}"; do
  mapfile -t args <"$T/vec/plugin-$n.args"
  bg "$FAKE" --listen "unix:///@k8senc-fake-$n$SUF" --counts "$T/fake-$n.counts" \
    --control "$T/fake-$n.control" "${args[@]}" 2>"$T/fake-$n.log"
  if wait_until 5 test -f "$T/fake-$n.counts"; then
    pass "fake KMS $n serves on @k8senc-fake-$n$SUF"
  else
    fail "fake KMS $n start" "$(tail -3 "$T/fake-$n.log")"
  fi
done

# ------------------------------------------------------------------ proxy
start_etcd e0
DIRECT=$ETCD_EP_e0
setup_via "$DIRECT" --encryption-provider-config "$T/vectors.yaml"
kms_healthz_ok() { [ "$(http_code "http://$ADMIN/healthz/kms-providers")" = 200 ]; }
if wait_until 15 kms_healthz_ok; then
  pass "/healthz/kms-providers 200 with the fake plugins"
else
  fail "/healthz/kms-providers" "$(curl -s -m 3 "http://$ADMIN/healthz/kms-providers")"
fi
stale_total() { local s; s=$(metric_sum "$ADMIN" '^etcdseal_stale_reads_total'); echo "${s:-0}"; }

# ------------------------------------------------------------------ vectors, one at a time
# check_vector ID EXPECTED STALE KEY: raw put, read through the proxy; sets OK=1 on success.
check_vector() {
  local id=$1 expected=$2 stale=$3 key=$4 rc got want s0 s1 code
  OK=0
  if ! "$ENC_CLIENT" -a "$DIRECT" -f "$T/vec/$id.put" >/dev/null 2>"$T/put.err"; then
    fail "vector $id: raw put into etcd" "$(head -c 300 "$T/put.err")"
    return
  fi
  s0=$(stale_total)
  ectl "$VIA" get "$key" -w json >"$T/out" 2>"$T/err"
  rc=$?
  s1=$(stale_total)
  if [ "$expected" = ok ]; then
    got=$(python3 -c '
import json, sys
kvs = json.load(open(sys.argv[1])).get("kvs") or []
print(kvs[0].get("value", "") if len(kvs) == 1 else "<missing>")' "$T/out" 2>/dev/null)
    want=$(base64 -w0 <"$T/vec/$id.plain")
    if [ $rc = 0 ] && [ "$got" = "$want" ]; then
      pass "vector $id: exact plaintext through the proxy ($(stat -c %s "$T/vec/$id.plain") bytes)"
      OK=1
    else
      fail "vector $id: plaintext through the proxy" "rc=$rc got ${got:0:60}... want ${want:0:60}... $(grep -v '^{' "$T/err" | head -c 300)"
    fi
    if [ $((s1 - s0)) != "$([ "$stale" = true ] && echo 1 || echo 0)" ]; then
      STALE_BAD+=" $id(k8s stale=$stale, counted $((s1 - s0)))"
    fi
  else
    # the proxy's status is the first on etcdctl's Error line (a plugin's status may follow)
    code=$(grep '^Error:' "$T/err" | grep -o 'code = [A-Za-z]*' | head -1)
    if [ $rc != 0 ] && [ "$code" = "code = Internal" ] && grep -qF -- "\"$key\"" "$T/err" &&
      ! grep -qE '"kvs"' "$T/out"; then
      pass "vector $id: error naming the key ($code)"
      OK=1
    else
      fail "vector $id: error naming the key" "rc=$rc ${code:-no code} stdout=$(head -c 200 "$T/out") stderr=$(grep -v '^{' "$T/err" | head -c 300)"
    fi
  fi
}

STALE_BAD=""
declare -A N_OK N_ALL
for pass_kind in kms local; do
  N_OK[$pass_kind]=0
  N_ALL[$pass_kind]=0
  while read -r id expected kind stale key; do
    [ "$kind" = "$pass_kind" ] || continue
    N_ALL[$kind]=$((N_ALL[$kind] + 1))
    check_vector "$id" "$expected" "$stale" "$key"
    N_OK[$kind]=$((N_OK[$kind] + OK))
  done <"$T/vec/list"
done
kms_pos=$(awk '$3 == "kms" && $2 == "ok"' "$T/vec/list" | wc -l)
kms_neg=$(awk '$3 == "kms" && $2 != "ok"' "$T/vec/list" | wc -l)
if [ "${N_ALL[kms]}" -gt 0 ] && [ "${N_OK[kms]}" = "${N_ALL[kms]}" ]; then
  pass "KMS vectors through the proxy: ${N_OK[kms]}/${N_ALL[kms]} ($kms_pos positive, $kms_neg negative)"
else
  fail "KMS vectors through the proxy" "${N_OK[kms]}/${N_ALL[kms]} correct"
fi
all_ok=$((N_OK[kms] + N_OK[local]))
all_n=$((N_ALL[kms] + N_ALL[local]))
if [ "$all_n" = "$TOTAL" ] && [ "$all_ok" = "$TOTAL" ]; then
  pass "all vectors of k8s-vectors.json through one proxy: $all_ok/$TOTAL"
else
  fail "all vectors through one proxy" "$all_ok/$TOTAL correct ($all_n read)"
fi
if [ -z "$STALE_BAD" ]; then
  pass "etcdseal_stale_reads_total grew exactly for the vectors Kubernetes read as stale ($(awk '$2 == "ok" && $4 == "true"' "$T/vec/list" | wc -l) of them)"
else
  fail "stale reads counted as Kubernetes flags them" "$STALE_BAD"
fi
for n in "${PLUGINS[@]}"; do note "fake $n: $(cat "$T/fake-$n.counts" 2>/dev/null)"; done
exit 0
