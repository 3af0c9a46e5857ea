#!/usr/bin/env bash
# encrypt_mixed_test.sh - 10,000 mixed operations through the proxy, then a raw scan of etcd.
#
# Runbook: one etcd behind the proxy (fixtures/encrypt/protected.yaml: /mixG/ aesgcm, /mixS/
# secretbox, /mixC/ aescbc; /mixU/ is not covered). Four it_enc_client workers run at the same
# time, 2,500 operations each (puts with and without prev_kv, gets, deletes with prev_kv, VALUE-
# compare Txns with a put or a put+get branch, prefix ranges, prefix deletes with prev_kv; random
# binary values 0..8 KB) over 64 protected and 64 unprotected keys of their own; each checks every
# answer against its own model of the keys and writes the final model. Then etcd is read raw:
# every key under a protected prefix holds k8s:enc:<provider>:v1:<key name>: ciphertext that
# `etcdseal decrypt` turns into the model's plaintext (zero plaintext values), every unprotected
# key is byte-identical to what was written, and no key is missing or extra.
source "$(dirname "$0")/lib.sh"
source tests/integration/fixtures/encrypt/enc_helpers.sh
require_proxy
require_enc_client
start_etcd e0
DIRECT=$ETCD_EP_e0
CONF=$(enc_config protected.yaml) || die "cannot copy protected.yaml"
setup_via "$DIRECT" --encryption-provider-config "$CONF"
note "direct=$DIRECT via=$VIA admin=${ADMIN:-none}"

N=${MIXED_OPS:-10000}
PROT=(/mixG/w0/ /mixS/w1/ /mixC/w2/ /mixG/w3/)
pids=()
t0=$(now_ms)
for w in 0 1 2 3; do
  "$ENC_CLIENT" -t 30 -a "$VIA" mixed $((w + 11)) $((N / 4)) "${PROT[w]}" "/mixU/w$w/" "$T/model.$w" \
    >"$T/mixed.$w" 2>"$T/mixed.$w.err" &
  pids+=($!)
  track $!
done
for w in 0 1 2 3; do
  wait_exit "${pids[w]}" 150 || fail "mixed worker $w" "still running after 150 s"
done
ms=$(($(now_ms) - t0))
total=0 bad=0
for w in 0 1 2 3; do
  line=$(grep '"op":"mixed"' "$T/mixed.$w")
  [ -n "$line" ] || line='{}'
  n=$(jq -r '.n // 0' <<<"$line")
  e=$(jq -r '(.errors // 1) + (.mismatches // 1)' <<<"$line")
  total=$((total + n))
  if [ "$e" != 0 ] || [ "$n" = 0 ]; then
    bad=1
    note "worker $w: ${line:-no summary} $(head -5 "$T/mixed.$w.err" | tr '\n' ' ')"
  fi
done
note "$total operations in $ms ms ($(head -c 300 "$T/mixed.0"))"
check "mixed workload: $total operations through the proxy, every answer matches the model" \
  test $bad = 0 -a $total = "$N"

ectl "$DIRECT" get /mix --prefix -w json >"$T/scan.json" 2>"$T/scan.err" || fail "raw scan" "$(head -c 300 "$T/scan.err")"
python3 - "$T" "$ES_BIN" "$CONF" >"$T/verdict" <<'EOF'
import base64, json, subprocess, sys
T, BIN, CONF = sys.argv[1:4]
PROVIDER = {"/mixG/": "k8s:enc:aesgcm:v1:gcm-it:", "/mixS/": "k8s:enc:secretbox:v1:sb-it:",
            "/mixC/": "k8s:enc:aescbc:v1:cbc-it:"}
model = {}
for w in range(4):
    for line in open("%s/model.%d" % (T, w)):
        k, _, v = line.rstrip("\n").partition(" ")
        model[bytes.fromhex(k)] = bytes.fromhex(v)
raw = {}
for kv in json.load(open(T + "/scan.json")).get("kvs") or []:
    raw[base64.b64decode(kv["key"])] = base64.b64decode(kv.get("value", ""))
def report(name, errs, n):
    if errs:
        print("FAIL %s: %d of %d" % (name, len(errs), n))
        for e in errs[:8]:
            print("  " + e)
    else:
        print("PASS %s (%d keys)" % (name, n))
prot = [k for k in model if not k.startswith(b"/mixU/")]
unprot = [k for k in model if k.startswith(b"/mixU/")]
raw_prot = [k for k in raw if not k.startswith(b"/mixU/")]
errs = []
for k in sorted(set(model) ^ set(raw)):
    errs.append("%r: %s" % (k, "missing in etcd" if k in model else "in etcd but deleted in the model"))
report("raw scan: the keys in etcd are exactly the model's", errs, len(raw))
errs = []
for k in raw_prot:
    want = PROVIDER[k[:6].decode()].encode()
    if not raw[k].startswith(want):
        errs.append("%r: stored value starts with %r" % (k, raw[k][:30]))
report("raw scan: zero plaintext values under protected prefixes (each starts with its provider's k8s:enc:)",
       errs, len(raw_prot))
errs = []
for k in prot:
    if k not in raw:
        continue
    p = subprocess.run([BIN, "decrypt", "--encryption-provider-config", CONF, "--key", k.decode()],
                       input=raw[k], capture_output=True)
    if p.returncode != 0 or p.stdout != model[k]:
        errs.append("%r: decrypts (rc %d) to something else than what was written" % (k, p.returncode))
report("raw scan: every protected value decrypts to exactly what was written", errs, len(prot))
errs = [("%r: stored bytes differ from what was written" % k) for k in unprot if k in raw and raw[k] != model[k]]
report("raw scan: unprotected keys byte-identical to what was written", errs, len(unprot))
EOF
while IFS= read -r line; do
  case $line in
  "PASS "*) pass "${line#PASS }" ;;
  "FAIL "*) fail "${line#FAIL }" "" ;;
  *) echo "$line" ;;
  esac
done <"$T/verdict"
check "raw scan: verdicts printed" test "$(grep -c '^[PF]' "$T/verdict")" = 4
