#!/usr/bin/env bash
# encrypt_compare_test.sh - Txn compares on VALUE and Range sorted by VALUE over encrypted keys,
# against a direct-etcd oracle.
#
# Runbook: etcd e0 behind the proxy ($VIA; fixtures/encrypt/protected.yaml protects /cmpP/ with
# aesgcm) and an independent etcd e1 used directly ($ORACLE) with the unprotected prefix /cmpU/.
# The same operations (K = /cmpP/ through the proxy, /cmpU/ directly) run from the same empty
# state: >= 20 VALUE-compare cases (absent keys, = != > <, both branches, mixed with VERSION/
# CREATE/MOD/LEASE compares, several keys, nested Txn, binary and empty values) and Range sorted by
# VALUE. Every answer (succeeded, responses, values, header revisions) must be identical once the
# prefix is normalised. Then concurrency: CAS increments (VALUE compare) race a writer that keeps
# rewriting the same key (guarded by mod_revision, value unchanged), through the proxy and
# directly: no lost or phantom update, no false "compare failed", and the counter ends equal to the
# successful increments. Refusals: a VALUE compare with range_end on protected keys and a VALUE
# sort with a limit both get FAILED_PRECONDITION through the proxy (etcd answers them directly).
source "$(dirname "$0")/lib.sh"
source tests/integration/fixtures/encrypt/enc_helpers.sh
require_proxy
require_enc_client
start_etcd e0
start_etcd e1
DIRECT=$ETCD_EP_e0
ORACLE=$ETCD_EP_e1
CONF=$(enc_config protected.yaml) || die "cannot copy protected.yaml"
setup_via "$DIRECT" --encryption-provider-config "$CONF"
note "direct=$DIRECT via=$VIA oracle=$ORACLE admin=${ADMIN:-none}"
C() { "$ENC_CLIENT" -t 30 "$@"; }

# run_both NAME FILE: FILE's commands ($K = key prefix) via the proxy on /cmpP/ and directly on
# /cmpU/; outputs go to $T/NAME.via and $T/NAME.dir with the prefixes replaced by /cmpX/.
run_both() {
  local name=$1 file=$2
  sed 's#\$K#/cmpP/#g' "$file" >"$T/$name.pcmd"
  sed 's#\$K#/cmpU/#g' "$file" >"$T/$name.ucmd"
  C -a "$VIA" -f "$T/$name.pcmd" 2>"$T/$name.via.err" | sed 's#/cmpP/#/cmpX/#g' >"$T/$name.via"
  C -a "$ORACLE" -f "$T/$name.ucmd" 2>"$T/$name.dir.err" | sed 's#/cmpU/#/cmpX/#g' >"$T/$name.dir"
}
# align_revisions: puts to /pad (outside every compared range) on the side that is behind.
current_rev() { C -a "$1" get /pad | jq -r .rev; }
align_revisions() {
  local rv rd k
  rv=$(current_rev "$VIA")
  rd=$(current_rev "$ORACLE")
  case "$rv$rd" in *[!0-9]*|"") return 1 ;; esac
  for ((k = 0; k < 50 && rv < rd; k++, rv++)); do C -a "$DIRECT" put /pad x >/dev/null; done
  for ((k = 0; k < 50 && rd < rv; k++, rd++)); do C -a "$ORACLE" put /pad x >/dev/null; done
}

# ---------------------------------------------------------------- VALUE compare cases
# Lines starting "put/get/del/txn" are commands; "#" lines before a command label its answer.
cat >"$T/cases" <<'EOF'
# setup: values incl. empty, binary, numbers as text
put $Ka apple
put $Kb banana
put $Ke empty:
put $Kbin hex:00ff10
put $Kn 10
put $Kbig rand:100000:7
# =, true: success branch with prev_kv
txn cmp $Ka value = apple then put $Ka apple2 prev else get $Ka end
# =, now false: failure branch
txn cmp $Ka value = apple then put $Ka wrong prev else get $Ka end
# !=, true
txn cmp $Ka value != apple then get $Ka else get $Kb end
# !=, false
txn cmp $Ka value != apple2 then get $Ka else get $Kb end
# >, true (apple2 > apple)
txn cmp $Ka value > apple then get $Ka else end
# <, false
txn cmp $Ka value < apple then get $Ka else get $Kb end
# <, true
txn cmp $Ka value < b then put $Kc cherry prev else end
# absent key, value = "" (etcd: always false)
txn cmp $Knone value = empty: then put $Kx 1 else get $Knone end
# absent key, value != x (etcd: always false)
txn cmp $Knone value != x then put $Kx 1 else get $Ka end
# absent key, value < zz (false)
txn cmp $Knone value < zz then put $Kx 1 else end
# absent key by VERSION = 0 mixed with a true VALUE compare
txn cmp $Knone version = 0 cmp $Ka value = apple2 then put $Knew created prev else end
# CREATE = 0 on absent key and VALUE on existing key, false VALUE
txn cmp $Knone2 create = 0 cmp $Ka value = nope then put $Kx 1 else get $Ka get $Kb end
# VALUE true but MOD false
txn cmp $Ka value = apple2 cmp $Ka mod = 999 then put $Kx 1 else get $Ka end
# VALUE true and VERSION true
txn cmp $Ka value = apple2 cmp $Ka version = 2 then put $Ka apple3 prev else end
# VALUE compares on two keys, both true: writes to both
txn cmp $Ka value = apple3 cmp $Kb value = banana then put $Kb banana2 prev put $Ka apple4 prev else end
# two keys, one false
txn cmp $Ka value = apple4 cmp $Kb value = banana then put $Kx 1 else get $Ka get $Kb end
# empty value exists: = empty is true
txn cmp $Ke value = empty: then get $Ke put $Ke now-full prev else end
# empty operand, > on non-empty value
txn cmp $Ke value > empty: then get $Ke else end
# binary: = exact bytes
txn cmp $Kbin value = hex:00ff10 then get $Kbin else end
# binary ordering: 00ff10 < 01
txn cmp $Kbin value < hex:01 then get $Kbin else end
# byte order, not numeric: "10" > "9" is false
txn cmp $Kn value > 9 then get $Kn else put $Kn 11 prev end
# byte order: "11" < "9"
txn cmp $Kn value < 9 then get $Kn else end
# 100 KB value compared exactly
txn cmp $Kbig value = rand:100000:7 then put $Kbig rand:100000:8 prev else end
# 100 KB value, one byte different
txn cmp $Kbig value = rand:100000:7 then get $Kbig else get $Kbig end
# LEASE compare mixed with VALUE
txn cmp $Ka lease = 0 cmp $Ka value != zzz then get $Ka else end
# compare then delete with prev_kv, then the key is absent
txn cmp $Kc value = cherry then del $Kc prev else end
# deleted key: value = cherry is now false
txn cmp $Kc value = cherry then get $Kc else get $Kc end
# no compares at all: success branch
txn then get $Ka else get $Kb end
# same key compared twice, both true, read in the failure branch too
txn cmp $Ka value = apple4 cmp $Ka value > apple then get $Ka prefix else get $Kb end
# read-your-writes inside the success branch (put then range)
txn cmp $Ka value = apple4 then put $Ka apple5 prev get $Ka else end
# nested Txn with its own VALUE compare (true inside true)
txn cmp $Ka value = apple5 then txn cmp $Kb value = banana2 then put $Kb banana3 prev get $Kb else get $Ka end else end
# nested Txn, inner false
txn cmp $Ka value = apple5 then txn cmp $Kb value = banana2 then put $Kx 1 else get $Kb end get $Ka else end
EOF
# labels: the comment line before each command; setup puts labelled too
CASE_LABEL=()
prev=""
while IFS= read -r line; do
  case $line in
  "# "*) prev=${line#\# } ;;
  put* | get* | del* | txn*)
    CASE_LABEL+=("${prev:-setup}: ${line:0:80}")
    case $prev in setup*) ;; *) prev="" ;; esac
    ;;
  esac
done <"$T/cases"
# Each command runs on both sides, then the two etcds are brought to the same revision (a
# failed case must not shift the revisions every later answer shows).
: >"$T/cmp.dir"
: >"$T/cmp.via"
i=0
while IFS= read -r line; do
  case $line in put* | get* | del* | txn*) ;; *) continue ;; esac
  printf '%s\n' "$line" >"$T/one"
  run_both one "$T/one"
  cat "$T/one.dir" >>"$T/cmp.dir"
  cat "$T/one.via" >>"$T/cmp.via"
  [ -s "$T/one.dir" ] || echo "<no answer>" >>"$T/cmp.dir"
  [ -s "$T/one.via" ] || echo "<no answer>" >>"$T/cmp.via"
  align_revisions
  i=$((i + 1))
done <"$T/cases"
ncases=$(grep -c '^txn' "$T/cases")
if [ "$(grep -c . "$T/cmp.dir")" != "${#CASE_LABEL[@]}" ] || grep -q '"error"' "$T/cmp.dir"; then
  fail "compare: oracle run directly against etcd" "$(grep -m2 error "$T/cmp.dir") $(head -c 300 "$T/cmp.dir.err")"
fi
mapfile -t dlines <"$T/cmp.dir"
mapfile -t vlines <"$T/cmp.via"
for ((i = 0; i < ${#CASE_LABEL[@]}; i++)); do
  dl=${dlines[i]:-<none>}
  vl=${vlines[i]:-<none>}
  if [ "$dl" = "$vl" ]; then
    pass "compare: ${CASE_LABEL[i]}"
  else
    fail "compare: ${CASE_LABEL[i]}" "differs from etcd"
    note "etcd : ${dl:0:300}"
    note "proxy: ${vl:0:300}"
  fi
done
nt=$(grep -c '"succeeded":true' "$T/cmp.dir")
nf=$(grep -c '"succeeded":false' "$T/cmp.dir")
check "compare: $ncases VALUE-compare txns, etcd took both branches ($nt success, $nf failure)" \
  test "$ncases" -ge 20 -a "$nt" -ge 5 -a "$nf" -ge 5

# the values compared through the proxy are stored encrypted
raw_scan "$T/raw" "$DIRECT" /cmpP/
raw_scan "$T/rawu" "$ORACLE" /cmpU/
nraw=$(wc -l <"$T/raw")
nenc=$(awk '{print $2}' "$T/raw" | grep -c "^$(printf 'k8s:enc:aesgcm:v1:gcm-it:' | xxd -p)")
check "compare: all $nraw keys under /cmpP/ are stored as aesgcm ciphertext ($nenc)" \
  test "$nraw" -ge 6 -a "$nenc" = "$nraw" -a "$nraw" = "$(wc -l <"$T/rawu")"

# ---------------------------------------------------------------- refusals
C -a "$VIA" txn cmp /cmpP/a value = apple5 end=/cmpP/z then get /cmpP/a else end >"$T/r1.out" 2>&1
if grep -q '"error":{"code":9,' "$T/r1.out"; then
  pass "compare with range_end on protected keys: FAILED_PRECONDITION ($(jq -r .error.message "$T/r1.out" | head -c 120))"
else
  fail "compare with range_end on protected keys" "want FAILED_PRECONDITION, got $(head -c 300 "$T/r1.out")"
fi
C -a "$ORACLE" txn cmp /cmpU/a value = apple5 end=/cmpU/z then get /cmpU/a else end >"$T/r1d.out" 2>&1
check "compare with range_end directly on etcd is answered (the refusal is the proxy's)" grep -q '"succeeded"' "$T/r1d.out"

# ---------------------------------------------------------------- Range sorted by VALUE
# <= 12 keys with duplicate values: etcd's sort is then an insertion sort, stable, ties by key.
{
  i=0
  for v in pear apple fig apple kiwi hex:00 empty: zebra fig banana hex:ff01 apple; do
    echo "put \$Ks/k$(printf %02d $i) $v"
    i=$((i + 1))
  done
  echo "get \$Ks/ prefix sort=value order=asc"
  echo "get \$Ks/ prefix sort=value order=desc"
  echo "get \$Ks/ prefix sort=value order=none"
  echo "get \$Ks/ prefix sort=value order=asc keys_only"
  echo "get \$Ks/k0 prefix sort=value order=desc"
  # 40 distinct values: order fully determined
  for ((i = 0; i < 40; i++)); do echo "put \$Kt/k$(printf %02d $i) v$(((i * 37) % 101))"; done
  echo "get \$Kt/ prefix sort=value order=asc"
  echo "get \$Kt/ prefix sort=value order=desc"
} >"$T/sort"
align_revisions
run_both sort "$T/sort"
mapfile -t sd < <(grep '"op":"range"' "$T/sort.dir")
mapfile -t sv < <(grep '"op":"range"' "$T/sort.via")
names=("12 keys with ties, ASCEND" "12 keys with ties, DESCEND" "sort target VALUE, order NONE" \
  "ASCEND keys_only" "sub-prefix DESCEND" "40 distinct values, ASCEND" "40 distinct values, DESCEND")
for ((i = 0; i < ${#names[@]}; i++)); do
  if [ -n "${sd[i]:-}" ] && [ "${sd[i]}" = "${sv[i]:-}" ]; then
    pass "Range sort=VALUE without limit: ${names[i]} as etcd orders the same plaintexts"
  else
    fail "Range sort=VALUE without limit: ${names[i]}" "differs from etcd"
    note "etcd : ${sd[i]:0:300}"
    note "proxy: ${sv[i]:0:300}"
  fi
done
C -a "$VIA" get /cmpP/s/ prefix sort=value order=asc limit=3 >"$T/s1.out" 2>&1
if grep -q '"error":{"code":9,' "$T/s1.out"; then
  pass "Range sort=VALUE with limit on protected keys: FAILED_PRECONDITION ($(jq -r .error.message "$T/s1.out" | head -c 120))"
else
  fail "Range sort=VALUE with limit on protected keys" "want FAILED_PRECONDITION, got $(head -c 300 "$T/s1.out")"
fi
align_revisions
C -a "$VIA" get /cmpP/s/ prefix sort=mod order=desc limit=3 >"$T/s2.out" 2>&1
C -a "$ORACLE" get /cmpU/s/ prefix sort=mod order=desc limit=3 2>&1 | sed 's#/cmpU/#/cmpP/#g' >"$T/s2d.out"
check "Range sort=MOD with limit passes through (as etcd)" cmp -s "$T/s2.out" "$T/s2d.out"

# ---------------------------------------------------------------- concurrent writer
# cas: read v, txn if value == v then put v+1 else get. hammer: read (v, mod), txn if mod == m
# then put v (same value). The hammer never changes the value, so a correct VALUE compare can only
# fail because another CAS incremented it; 3 CAS clients x 60 increments race one hammer.
concurrent() { # EP KEY LABEL
  local ep=$1 key=$2 label=$3 pids=() i hp
  C -a "$ep" put "$key" 0 >/dev/null
  rm -f "$T/stop-hammer"
  C -a "$ep" hammer "$key" 60 "$T/stop-hammer" >"$T/hammer.$label" 2>&1 &
  hp=$!
  track $hp
  for i in 1 2 3; do
    C -a "$ep" cas "$key" 60 >"$T/cas.$label.$i" 2>&1 &
    pids+=($!)
    track $!
  done
  for i in "${pids[@]}"; do wait_exit "$i" 120; done
  touch "$T/stop-hammer"
  wait_exit "$hp" 30
  final=$(C -a "$ep" get "$key" | jq -r '.kvs[0].value')
  python3 - "$final" "$T/hammer.$label" "$T"/cas."$label".* <<'EOF'
import json, sys
final = sys.argv[1]
ham = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
tot = {"ok": 0, "conflict": 0, "aborted": 0, "other": 0, "bad": 0, "readerr": 0}
errs = []
for f in sys.argv[3:]:
    d = json.loads(open(f).read().strip().splitlines()[-1])
    for k in tot:
        tot[k] += d[k]
    if d["first_error"] and d["aborted"] + d["other"] > 0:
        errs.append(d["first_error"])
ok = str(tot["ok"]) == final and tot["bad"] == 0 and tot["other"] == 0 and tot["readerr"] == 0 \
    and tot["ok"] > 0 and ham["writes"] > 0
print("final=%s %s hammer=%s %s" % (final, json.dumps(tot), json.dumps(ham), "; ".join(errs)[:300]))
sys.exit(0 if ok else 1)
EOF
}
# (not in $(...): the workers must stay children of this shell, tracked for cleanup)
if concurrent "$ORACLE" /cmpU/ctr direct >"$T/conc.direct"; then
  note "direct etcd: $(cat "$T/conc.direct")"
  if concurrent "$VIA" /cmpP/ctr proxy >"$T/conc.proxy"; then
    pass "concurrent writer: VALUE-compare CAS through the proxy loses no update and never fails falsely ($(cat "$T/conc.proxy"))"
  else
    fail "concurrent writer through the proxy" "$(cat "$T/conc.proxy")"
  fi
else
  fail "concurrent writer: oracle run directly against etcd" "$(cat "$T/conc.direct")"
fi
