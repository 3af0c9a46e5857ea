#!/usr/bin/env bash
# encrypt_semantics_test.sh - etcd semantics unchanged by encryption: nested Txn, prev_kv
# everywhere, DeleteRange of a prefix with prev_kv, keys_only/count_only, watches (prev_kv across
# 1,000 puts, from an old revision, fragmented), election, lock, empty and undecryptable values.
#
# Runbook: etcd e0 behind the proxy ($VIA, fixtures/encrypt/protected.yaml protects /sem/,
# /elect/, /lockp/ with aesgcm) and a second, independent etcd e1 used directly ($ORACLE, no
# proxy, nothing encrypted). The same command file (tests/tools/it_enc_client specs) runs against
# both from the same empty state: every answer (values, revisions, prev_kvs, nested responses)
# must be identical. Then e0 is read raw: every value under /sem/ is aesgcm ciphertext that
# `etcdseal decrypt` turns into e1's plaintext. Watches, election and lock run through the proxy
# only and are checked against what was written.
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

# ---------------------------------------------------------------- oracle: same answers as etcd
cat >"$T/ops" <<'EOF'
put /sem/a alpha
put /sem/b beta prev
put /sem/a alpha2 prev
put /sem/c empty: prev
put /sem/bin hex:00ff000a prev
put /sem/big rand:300000:1 prev
put /sem/big rand:300001:2 prev
put /sem/a empty: prev ignore_value
get /sem/a
get /sem/ prefix
get /sem/ prefix keys_only
get /sem/ prefix count_only
get /sem/ prefix limit=2
get /sem/ prefix sort=mod order=desc
get /sem/a rev=2
txn then put /sem/n1 v1 prev txn then put /sem/n2 v2 prev get /sem/ prefix else end del /sem/c prev else end
txn cmp /sem/a version > 0 then txn cmp /sem/zz create = 0 then get /sem/a txn then get /sem/n1 put /sem/n1 v1b prev else end else end else end
txn cmp /sem/a mod = 1 then get /sem/a else get /sem/b put /sem/b beta2 prev txn then get /sem/n prefix keys_only get /sem/n prefix count_only end end
txn then put /sem/t1 one prev put /sem/t2 two prev put /sem/t3 three prev end
del /sem/n prefix prev
del /sem/t prefix prev
del /sem/none prev
put /sem/n3 three prev
del /sem/n3 prev
get /sem/ prefix
EOF
C -a "$VIA" -f "$T/ops" >"$T/via.out" 2>"$T/via.err"
rc_v=$?
C -a "$ORACLE" -f "$T/ops" >"$T/dir.out" 2>"$T/dir.err"
rc_d=$?
if [ $rc_d != 0 ] || [ "$(wc -l <"$T/dir.out")" -lt 25 ]; then
  fail "oracle run directly against etcd" "rc=$rc_d $(head -c 300 "$T/dir.err")"
elif diff "$T/dir.out" "$T/via.out" >"$T/diff"; then
  pass "nested Txn, prev_kv (put, del prefix, txn), keys_only/count_only, old revision: answers identical to etcd's ($(wc -l <"$T/dir.out") RPCs)"
else
  fail "answers through the proxy differ from etcd's" "rc=$rc_v; first differences:"
  head -12 "$T/diff" | cut -c1-400 | sed 's/^/  | /'
fi
check "prev_kv values seen through the proxy are plaintext" grep -q '"prev_kv":{"key":"/sem/a","value":"alpha"' "$T/via.out"

# raw: e0 holds ciphertext that decrypts to e1's plaintext, key by key
raw_scan "$T/raw0" "$DIRECT" /sem/
raw_scan "$T/raw1" "$ORACLE" /sem/
n=0 bad=0
while read -r khex vhex; do
  n=$((n + 1))
  key=$(printf '%s' "$khex" | xxd -r -p)
  printf '%s' "$vhex" | xxd -r -p >"$T/rv"
  want=$(awk -v k="$khex" '$1 == k {print $2}' "$T/raw1")
  if ! starts_with "$T/rv" "k8s:enc:aesgcm:v1:gcm-it:"; then
    bad=$((bad + 1)); note "$key: stored value is not aesgcm ciphertext"; continue
  fi
  got=$("$ES_BIN" decrypt --encryption-provider-config "$CONF" --key "$key" <"$T/rv" 2>/dev/null | xxd -p | tr -d '\n')
  [ "$got" = "$want" ] || { bad=$((bad + 1)); note "$key: decrypts to something else than etcd's plaintext"; }
done <"$T/raw0"
check "raw: $n values under /sem/ are aesgcm ciphertext of exactly etcd's plaintext" \
  test $bad = 0 -a $n -ge 4 -a "$n" = "$(wc -l <"$T/raw1")"

# ---------------------------------------------------------------- watch with prev_kv, 1,000 puts
bg C -a "$VIA" watch /sem/w/ prefix prev count=1000 timeout=90 >"$T/w1.out" 2>"$T/w1.err"
W1=$BG_PID
wait_until 10 grep -q '"created":true' "$T/w1.out" || fail "watch created" "$(head -c 300 "$T/w1.err")"
for ((i = 0; i < 1000; i++)); do echo "put /sem/w/k$((i % 10)) v$i"; done >"$T/wputs"
C -a "$VIA" -f "$T/wputs" >"$T/wputs.out" 2>&1 || fail "1,000 puts through the proxy" "$(tail -2 "$T/wputs.out")"
wait_exit "$W1" 60 || note "watcher still running after 60 s"
check_events() { # FILE: 1,000 PUT events in order, plaintext values and prev_kvs
  python3 - "$1" <<'EOF'
import json, sys
evs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{"ev"')]
errs = []
if len(evs) != 1000:
    errs.append("%d events" % len(evs))
last = 0
for i, e in enumerate(evs):
    kv, pk = e["kv"], e["prev_kv"]
    if e["ev"] != "PUT" or kv["key"] != "/sem/w/k%d" % (i % 10) or kv["value"] != "v%d" % i:
        errs.append("event %d: %s" % (i, json.dumps(e)[:200])); break
    if (i < 10 and pk is not None) or (i >= 10 and (pk is None or pk["value"] != "v%d" % (i - 10))):
        errs.append("event %d prev_kv: %s" % (i, json.dumps(pk)[:200])); break
    if kv["mod"] <= last:
        errs.append("event %d out of order" % i); break
    last = kv["mod"]
print("; ".join(errs))
sys.exit(1 if errs else 0)
EOF
}
if out=$(check_events "$T/w1.out"); then
  pass "watch with prev_kv across 1,000 puts: all events plaintext, prev_kv plaintext, in order"
else
  fail "watch with prev_kv across 1,000 puts" "$out $(grep -m1 error "$T/w1.out")"
fi
first=$(grep -m1 '^{"ev"' "$T/w1.out" | jq -r .kv.mod)
C -a "$VIA" watch /sem/w/ prefix prev rev="${first:-1}" count=1000 timeout=60 >"$T/w2.out" 2>"$T/w2.err"
if out=$(check_events "$T/w2.out") && diff <(grep '^{"ev"' "$T/w1.out") <(grep '^{"ev"' "$T/w2.out") >/dev/null; then
  pass "watch started from an old revision ($first) replays the same 1,000 plaintext events"
else
  fail "watch started from an old revision" "$out $(grep -m1 error "$T/w2.out")"
fi

# ---------------------------------------------------------------- fragmented watch responses
# 7 keys of 200 KiB, then one Txn overwriting all 7 in one revision: with prev_kv the watch
# response is ~2.8 MB, above etcd's 1.5 MiB request limit, so fragment=true splits it.
NF=7
for ((i = 0; i < NF; i++)); do echo "put /sem/f/k$i rand:204800:$i"; done >"$T/fput"
C -a "$VIA" -f "$T/fput" >/dev/null 2>"$T/fput.err" || fail "fragment setup puts" "$(head -c 300 "$T/fput.err")"
bg C -a "$VIA" watch /sem/f/ prefix prev fragment count=$NF timeout=60 >"$T/wf.out" 2>&1
WF=$BG_PID
bg C -a "$DIRECT" watch /sem/f/ prefix prev fragment count=$NF timeout=60 >"$T/wfd.out" 2>&1
WFD=$BG_PID
wait_until 10 grep -q '"created":true' "$T/wf.out"
wait_until 10 grep -q '"created":true' "$T/wfd.out"
txn="txn then"
for ((i = 0; i < NF; i++)); do txn+=" put /sem/f/k$i rand:204800:$((100 + i))"; done
C -a "$VIA" $txn end >"$T/ftxn.out" 2>&1 || fail "one Txn of $NF x 200 KiB through the proxy" "$(head -c 300 "$T/ftxn.out")"
wait_exit "$WF" 60
wait_exit "$WFD" 60
frag_d=$(jq -r 'select(.op == "watch_done") | .fragments' "$T/wfd.out")
frag_v=$(jq -r 'select(.op == "watch_done") | .fragments' "$T/wf.out")
if [ "${frag_d:-0}" -lt 1 ]; then
  fail "fragmented watch: etcd itself did not fragment (test setup)" "$(tail -2 "$T/wfd.out")"
else
  okv=1
  for ((i = 0; i < NF; i++)); do
    want=$(C hash "rand:204800:$((100 + i))")
    wantp=$(C hash "rand:204800:$i")
    jq -s -e --arg k "/sem/f/k$i" --argjson v "$want" --argjson p "$wantp" \
      'any(.[]; .ev == "PUT" and .kv.key == $k and .kv.value == $v and .prev_kv.value == $p)' \
      "$T/wf.out" >/dev/null || okv=0
  done
  revs=$(jq -r 'select(.ev) | .kv.mod' "$T/wf.out" | sort -u | wc -l)
  if [ $okv = 1 ] && [ "$revs" = 1 ] && [ "${frag_v:-0}" -ge 1 ]; then
    pass "fragmented watch: $NF x 200 KiB events of one revision in $frag_v fragments, plaintext kv and prev_kv"
  else
    fail "fragmented watch" "values ok=$okv revisions=$revs fragments via proxy=${frag_v:-none} (direct $frag_d): $(grep -v '^{"ev"' "$T/wf.out" | tail -3 | cut -c1-300)"
  fi
fi

# ---------------------------------------------------------------- fail closed
ectl "$DIRECT" put /sem/direct-empty "" >/dev/null 2>&1
ectl "$VIA" get /sem/direct-empty -w json >"$T/e.out" 2>"$T/e.err"
rc=$?
n=$(jq '.kvs | length' "$T/e.out" 2>/dev/null)
v=$(jq -r '.kvs[0].value // ""' "$T/e.out" 2>/dev/null)
if [ $rc = 0 ] && [ "$n" = 1 ] && [ -z "$v" ]; then
  pass "empty value written straight to etcd under /sem/ reads as empty through the proxy"
else
  fail "empty value written straight to etcd under /sem/" "rc=$rc kvs=$n value=$v $(grep -v '^{' "$T/e.err" | head -c 300)"
fi
ectl "$DIRECT" put /sem/direct-plain leaked-plaintext >/dev/null 2>&1
ectl "$VIA" get /sem/direct-plain >"$T/p.out" 2>"$T/p.err"
rc=$?
if [ $rc != 0 ] && grep -q 'code = Internal' "$T/p.err" && grep -qF /sem/direct-plain "$T/p.err" &&
  ! grep -q leaked-plaintext "$T/p.out" "$T/p.err"; then
  pass "plaintext stored under /sem/ (no identity provider): INTERNAL naming the key, value not shown"
else
  fail "plaintext stored under /sem/ must fail closed" "rc=$rc out=$(head -c 200 "$T/p.out") err=$(grep -v '^{' "$T/p.err" | head -c 300)"
fi
bg C -a "$VIA" watch /sem/bad/ prefix timeout=20 >"$T/wb.out" 2>&1
WB=$BG_PID
wait_until 10 grep -q '"created":true' "$T/wb.out"
ectl "$VIA" put /sem/bad/a fine >/dev/null 2>&1
ectl "$DIRECT" put /sem/bad/b not-ciphertext >/dev/null 2>&1
wait_exit "$WB" 30
if grep -q '"ev":"PUT","kv":{"key":"/sem/bad/a","value":"fine"' "$T/wb.out" &&
  grep -q '"error":{"code":13,"message":.*/sem/bad/b' "$T/wb.out" && ! grep -q not-ciphertext "$T/wb.out"; then
  pass "watch: a value that does not decrypt ends the stream with INTERNAL naming the key"
else
  fail "watch with an undecryptable value" "$(tail -3 "$T/wb.out" | cut -c1-300)"
fi

# ---------------------------------------------------------------- election
ectl_bg "$T/elect.out" "$VIA" elect /elect/e1 leader-secret-1
EL=$BG_PID
if wait_until 15 grep -q leader-secret-1 "$T/elect.out"; then
  pass "etcdctl elect through the proxy: elected, prints the plaintext proposal"
else
  fail "etcdctl elect through the proxy" "$(head -c 300 "$T/elect.out.err")"
fi
raw_scan "$T/eraw" "$DIRECT" /elect/e1/
if [ "$(wc -l <"$T/eraw")" = 1 ]; then
  read -r khex vhex <"$T/eraw"
  ekey=$(printf '%s' "$khex" | xxd -r -p)
  printf '%s' "$vhex" | xxd -r -p >"$T/ev"
  dec=$("$ES_BIN" decrypt --encryption-provider-config "$CONF" --key "$ekey" <"$T/ev" 2>/dev/null)
  if starts_with "$T/ev" "k8s:enc:aesgcm:v1:gcm-it:" && [ "$dec" = leader-secret-1 ]; then
    pass "election key $ekey stores aesgcm ciphertext bound to the key etcd stores it under"
  else
    fail "election key raw value" "$(head -c 40 "$T/ev" | tr -c '[:print:]' .) decrypts to '$dec'"
  fi
else
  fail "election key raw value" "expected one key under /elect/e1/, got $(wc -l <"$T/eraw")"
fi
ectl_bg "$T/listen.out" "$VIA" elect --listen /elect/e1
LI=$BG_PID
if wait_until 15 grep -q leader-secret-1 "$T/listen.out" && ! grep -q k8s:enc "$T/listen.out"; then
  pass "etcdctl elect --listen (Observe) through the proxy shows the plaintext"
else
  fail "etcdctl elect --listen through the proxy" "$(head -c 300 "$T/listen.out") $(head -c 300 "$T/listen.out.err")"
fi
stop_pid "$LI" 3 INT
stop_pid "$EL" 3 INT

# ---------------------------------------------------------------- lock
out=$(ectl "$VIA" lock /lockp/l1 echo lock-acquired 2>&1)
check "etcdctl lock through the proxy runs the command under the lock" test "$out" = lock-acquired
ectl_bg "$T/lock.out" "$VIA" lock /lockp/l2
LK=$BG_PID
if wait_until 15 grep -q '^/lockp/l2/' "$T/lock.out"; then
  ectl "$VIA" get /lockp/l2/ --prefix -w json >"$T/lg.out" 2>"$T/lg.err"
  rc=$?
  n=$(jq '.kvs | length' "$T/lg.out" 2>/dev/null)
  v=$(jq -r '.kvs[0].value // ""' "$T/lg.out" 2>/dev/null)
  lkey=$(head -1 "$T/lock.out")
  raw_value "$T/lraw" "$DIRECT" "$lkey"
  # etcdctl 3.4's lock writes the empty value with a Txn (through the proxy: encrypted); a
  # server-side v3lock write stores it empty. Either way the stored value holds nothing else.
  lraw_ok=0
  if [ -f "$T/lraw" ] && [ ! -s "$T/lraw" ]; then
    lraw_ok=1
  elif starts_with "$T/lraw" "k8s:enc:aesgcm:v1:gcm-it:" &&
    "$ES_BIN" decrypt --encryption-provider-config "$CONF" --key "$lkey" <"$T/lraw" >"$T/ldec" 2>/dev/null &&
    [ ! -s "$T/ldec" ]; then
    lraw_ok=1
  fi
  if [ $rc = 0 ] && [ "$n" = 1 ] && [ -z "$v" ] && [ $lraw_ok = 1 ]; then
    pass "held lock: its key reads as empty through the proxy (stored empty or as ciphertext of empty)"
  else
    fail "held lock: its key should read as empty" "rc=$rc kvs=$n value=$v raw=$(head -c 40 "$T/lraw" | tr -c '[:print:]' .) $(grep -v '^{' "$T/lg.err" | head -c 300)"
  fi
else
  fail "etcdctl lock (held) through the proxy" "$(head -c 300 "$T/lock.out.err")"
fi
stop_pid "$LK" 3 INT
