#!/usr/bin/env bash
# shellcheck disable=SC2154,SC2317 # ETCD_EP_e0 is set by lib.sh; wait_until calls helpers indirectly
# ops_kms_rotation_test.sh - the KMS v2 key-rotation runbook end to end (issue 6, item 4), with
# the bundled plugin's file backend (`etcdseal kms-plugin --backend file`):
#   plugin with key A, proxy with a KMS v2 rule on /app/, 2,000 values through the proxy (one
#   plugin Encrypt) -> verify: 2,000 current, 0 stale (one Decrypt) -> plugin restarted with
#   --key-file B --old-key-file A -> the proxy's next Status picks key B: new writes carry B's
#   key_id (one more Encrypt) -> reading the old values through the proxy counts 2,000 in
#   etcdseal_stale_reads_total, new values 0 -> verify: 2,000 stale, exit 0 (stale alone is not a
#   failure, docs/operations.md) -> rewrap while a writer rewrites half of the keys through the
#   proxy: 0 lost updates, one Encrypt for the rewrap process (not one per value), one Decrypt
#   per seed -> verify: 0 stale, 0 plaintext, every raw value under B's key_id -> plugin
#   restarted with key B only: a fresh proxy reads every value (one Decrypt per seed, 0 stale
#   reads), verify clean, and a value saved under key A is now undecryptable (proves A is gone).
# Every value is MARKER + (key without /app/), or MARKER + ... + "-upd" for the writer's keys.
source "$(dirname "$0")/lib.sh"
source tests/integration/fixtures/encrypt/enc_helpers.sh
require_proxy
require_enc_client
KC=$ES_TOOLS/it_kms_client
[ -x "$KC" ] || die "$KC missing (make)"
"$ES_BIN" kms-plugin --help >/dev/null 2>&1 || die "etcdseal kms-plugin --help failed"
# short Status polling for the proxy AND for the verify/rewrap processes (read at provider creation)
export ETCDSEAL_KMS_TIMING="healthy=1,unhealthy=0.5,expiry=30,negative=1"
N=2000
NNEW=100
NAME=kmsrot
MARKER="kmsrot-marker-$$-"
T_START=$(now_ms)
start_etcd e0
DIRECT=$ETCD_EP_e0
ADDR=unix://$T/kms.sock
CFG=$T/enc.yaml

# ------------------------------------------------------------------ helpers
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p"; }
fieldv() { echo "$2" | sed -n "s/.*\(^\| \)$1=\([^ ]*\).*/\2/p"; }
_PN=0
# start_plugin ARGS...: the bundled plugin on $ADDR, up to 10 s for Status; PLUGIN_PID/LOG.
start_plugin() {
  _PN=$((_PN + 1))
  PLUGIN_LOG=$T/plugin-$_PN.log
  bg "$ES_BIN" kms-plugin --listen "$ADDR" "$@" 2>"$PLUGIN_LOG"
  PLUGIN_PID=$BG_PID
  if ! wait_until 10 "$KC" --addr "$ADDR" --timeout-ms 500 status; then
    note "plugin did not answer Status:"
    show_log "$PLUGIN_LOG"
    return 1
  fi
}
usr1_lines_above() { [ "$(grep -c 'when=usr1' "$PLUGIN_LOG")" -gt "$1" ]; }
# plugin_counts: SIGUSR1, waits (3 s) for the new counts line; P_ENC, P_DEC, P_LINE.
plugin_counts() {
  local n line
  n=$(grep -c 'when=usr1' "$PLUGIN_LOG")
  kill -USR1 "$PLUGIN_PID" 2>/dev/null
  wait_until 3 usr1_lines_above "$n"
  line=$(grep 'msg="kms-plugin calls" when=usr1' "$PLUGIN_LOG" | tail -1)
  P_ENC=$(fieldv encrypt "$line")
  P_DEC=$(fieldv decrypt "$line")
  P_LINE=${line#*when=usr1 }
}
kms_healthz_is() { [ "$(http_code "http://$ADMIN/healthz/kms-providers")" = "$1" ]; }
# proxy_up: a proxy on new ports in front of $DIRECT; VIA, ADMIN; ready and KMS healthy.
proxy_up() {
  ports 2
  start_proxy --endpoints "$DIRECT" --listen-addr "127.0.0.1:${PORTS[0]}" \
    --metrics-addr "127.0.0.1:${PORTS[1]}" --encryption-provider-config "$CFG" || return 1
  VIA=127.0.0.1:${PORTS[0]}
  ADMIN=127.0.0.1:${PORTS[1]}
  wait_ready "$ADMIN" 15 || { note "/readyz not 200"; show_log "$PROXY_LOG"; return 1; }
  wait_until 10 kms_healthz_is 200 || { note "/healthz/kms-providers not 200"; show_log "$PROXY_LOG"; return 1; }
}
ec() { "$ENC_CLIENT" -a "$VIA" -t 30 "$@"; }
stale_total() { local s; s=$(metric_sum "$ADMIN" '^etcdseal_stale_reads_total'); echo "${s:-0}"; }
verify_json() { "$ES_BIN" verify --endpoints "$DIRECT" --encryption-provider-config "$CFG" -o json >"$1" 2>"$1.err"; }
json_check() {
  python3 - "$@" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
bad = [e for e in sys.argv[2:] if not eval(e, {"d": d})]
for e in bad: print("false:", e)
sys.exit(1 if bad else 0)
EOF
}
summary() { grep -oE "$1 [0-9]+" "$2" | tail -1 | grep -oE '[0-9]+$'; }
# raw_kids: RAW = "count=N marker_hits=N bad=N seeds=N <key_id>=<values>..." for every key under
# /app/ read straight from etcd (bad: not k8s:enc:kms:v2:NAME: + EncryptedObject with a keyID).
raw_kids() {
  RAW=$(ECTL_TIMEOUT=30 ectl "$DIRECT" get /app/ --prefix -w json 2>/dev/null | python3 -c '
import base64, json, sys
name, marker = sys.argv[1], sys.argv[2].encode()
pre = b"k8s:enc:kms:v2:" + name.encode() + b":"
def varint(b, i):
    v = s = 0
    while True:
        c = b[i]; i += 1; v |= (c & 0x7F) << s; s += 7
        if not c & 0x80: return v, i
kvs = json.load(sys.stdin).get("kvs") or []
hits = bad = 0; kids = {}; seeds = set()
for kv in kvs:
    v = base64.b64decode(kv.get("value", ""))
    hits += marker in v
    if not v.startswith(pre): bad += 1; continue
    b, i, f = v[len(pre):], 0, {}
    try:
        while i < len(b):
            tag, i = varint(b, i)
            if tag & 7 == 0: _, i = varint(b, i)
            elif tag & 7 == 2:
                n, i = varint(b, i); f.setdefault(tag >> 3, b[i:i + n]); i += n
            else: raise ValueError
        kid, edek = f[2].decode(), f[3]
    except (ValueError, KeyError, IndexError):
        bad += 1; continue
    kids[kid] = kids.get(kid, 0) + 1; seeds.add((kid, edek))
print("count=%d marker_hits=%d bad=%d seeds=%d %s" % (len(kvs), hits, bad, len(seeds),
      " ".join("%s=%d" % kv for kv in sorted(kids.items()))))
' "$NAME" "$MARKER")
}
# kid_n KEY_ID: values under KEY_ID in $RAW (0 when none)
kid_n() { local n; n=$(echo "$RAW" | tr ' ' '\n' | grep -F "$1=" | tail -1); echo "${n##*=}" | grep -E '^[0-9]+$' || echo 0; }
# check_values EXPECTED: every key under /app/ read through the proxy (one Range) is exactly as
# in EXPECTED ("key value" lines), no key missing or extra.
check_values() {
  ec get /app/ prefix >"$T/all.out" 2>&1
  python3 - "$T/all.out" "$1" <<'EOF'
import json, sys
got, errs = {}, 0
for line in open(sys.argv[1]):
    line = line.strip()
    if not line:
        continue
    try:
        d = json.loads(line)
    except ValueError:
        errs += 1; continue
    if "error" in d:
        errs += 1; print("error:", line[:200]); continue
    for kv in d.get("kvs") or []:
        got[kv["key"]] = kv.get("value")
want = dict(l.rstrip("\n").split(" ", 1) for l in open(sys.argv[2]))
bad = [k for k in want if got.get(k) != want[k]]
extra = [k for k in got if k not in want]
for k in bad[:3]: print("%s: got %r want %r" % (k, got.get(k), want[k]))
print("%d kvs, %d wrong or missing, %d unexpected, %d errors" % (len(got), len(bad), len(extra), errs))
sys.exit(1 if bad or extra or errs else 0)
EOF
}

# ------------------------------------------------------------------ plugin with key A, proxy
head -c 32 /dev/urandom >"$T/key-a"
head -c 32 /dev/urandom | base64 >"$T/key-b"
chmod 600 "$T/key-a" "$T/key-b"
{
  printf 'apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n'
  printf '  - resources: ["/app/"]\n    providers:\n      - kms:\n          apiVersion: v2\n'
  printf '          name: %s\n          endpoint: %s\n          timeout: 3s\n' "$NAME" "$ADDR"
} >"$CFG"
chmod 600 "$CFG"
start_plugin --backend file --key-file "$T/key-a" || die "plugin with key A did not start"
KID_A=$("$KC" --addr "$ADDR" status | field key_id)
[ -n "$KID_A" ] || die "plugin Status has no key_id"
proxy_up || die "proxy with the KMS v2 rule did not start"

# ------------------------------------------------------------------ 2,000 values under key A
awk -v n=$N -v m="$MARKER" 'BEGIN { for (i = 1; i <= n; i++) printf "put /app/old/%d %sold/%d\n", i, m, i }' >"$T/old.cmd"
awk -v n=$N -v m="$MARKER" 'BEGIN { for (i = 1; i <= n; i++) printf "/app/old/%d %sold/%d\n", i, m, i }' >"$T/expected"
t0=$(now_ms)
ec -t 60 -f "$T/old.cmd" >"$T/old.out" 2>&1
rc=$?
nok=$(grep -c '^{"op":"put","rev":' "$T/old.out")
if [ $rc = 0 ] && [ "$nok" = $N ]; then
  pass "$N puts through the proxy acknowledged ($(($(now_ms) - t0)) ms)"
else
  fail "$N puts through the proxy" "rc=$rc ok=$nok $(grep -m1 error "$T/old.out" | head -c 300)"
fi
plugin_counts
check "$N puts cost exactly one plugin Encrypt ($P_LINE)" test "$P_ENC" = 1
raw_kids
if [ "$(fieldv count "$RAW")" = $N ] && [ "$(kid_n "$KID_A")" = $N ] && [ "$(fieldv bad "$RAW")" = 0 ] &&
  [ "$(fieldv marker_hits "$RAW")" = 0 ]; then
  pass "raw: $N values k8s:enc:kms:v2:$NAME: under key A, no plaintext ($RAW)"
else
  fail "raw values under key A" "$RAW (key A = $KID_A)"
fi
e0=$P_ENC d0=$P_DEC
verify_json "$T/v1.json"
rc=$?
plugin_counts
if [ $rc = 0 ] && json_check "$T/v1.json" "d['clean'] is True" "d['totals']['current'] == $N" \
  "d['totals']['stale'] == 0" "d['totals']['plaintext'] == 0" "d['totals']['undecryptable'] == 0" \
  "d['rules'][0]['prefixes'][0]['read_by'] == {'k8s:enc:kms:v2:$NAME': $N}" >"$T/v1.chk"; then
  pass "verify before rotation: $N current, 0 stale, exit 0"
else
  fail "verify before rotation" "rc=$rc $(cat "$T/v1.chk") $(head -c 300 "$T/v1.json") $(head -3 "$T/v1.json.err")"
fi
V1_ENC=$((P_ENC - e0)) V1_DEC=$((P_DEC - d0))
check "verify of $N values under one seed: one Decrypt, at most one Encrypt (decrypt +$V1_DEC, encrypt +$V1_ENC)" \
  test "$V1_DEC" = 1 -a "$V1_ENC" -le 1
raw_value "$T/raw.a" "$DIRECT" /app/old/7 || fail "save a raw value under key A" "read failed"

# ------------------------------------------------------------------ rotate the plugin: B, A kept
stop_pid "$PLUGIN_PID" 5
start_plugin --backend file --key-file "$T/key-b" --old-key-file "$T/key-a" || die "plugin with key B did not start"
KID_B=$("$KC" --addr "$ADDR" status | field key_id)
if [ -n "$KID_B" ] && [ "$KID_B" != "$KID_A" ]; then pass "rotated plugin reports a new key_id ($KID_B)"; else fail "rotated key_id" "a=$KID_A b=$KID_B"; fi
t0=$(now_ms)
ok=""
for ((i = 1; i <= 60; i++)); do
  ec put "/app/probe/$i" "${MARKER}probe/$i" >/dev/null 2>&1
  if raw_value "$T/raw" "$DIRECT" "/app/probe/$i" && grep -qF "$KID_B" "$T/raw"; then
    ok=$i
    break
  fi
  [ $(($(now_ms) - t0)) -gt 12000 ] && break
  nap 0.2
done
if [ -n "$ok" ]; then
  pass "the proxy's next Status picked key B: writes carry it $(($(now_ms) - t0)) ms after the plugin restart"
else
  fail "proxy picks the new key_id" "no put under $KID_B within $(($(now_ms) - t0)) ms"
fi
# the probes (some under A, written before the Status poll) are not part of the runbook's data
ectl "$DIRECT" del /app/probe/ --prefix >/dev/null
awk -v n=$NNEW -v m="$MARKER" 'BEGIN { for (i = 1; i <= n; i++) printf "put /app/new/%d %snew/%d\n", i, m, i }' >"$T/new.cmd"
awk -v n=$NNEW -v m="$MARKER" 'BEGIN { for (i = 1; i <= n; i++) printf "/app/new/%d %snew/%d\n", i, m, i }' >>"$T/expected"
ec -f "$T/new.cmd" >"$T/new.out" 2>&1
nok=$(grep -c '^{"op":"put","rev":' "$T/new.out")
raw_kids
if [ "$nok" = $NNEW ] && [ "$(kid_n "$KID_B")" = $NNEW ] && [ "$(kid_n "$KID_A")" = $N ] && [ "$(fieldv bad "$RAW")" = 0 ]; then
  pass "$NNEW new writes carry key B's key_id, the $N old values key A's ($RAW)"
else
  fail "new writes under key B" "acked $nok; $RAW"
fi
plugin_counts
check "rotation: one new seed, exactly one Encrypt for $((ok + NNEW)) puts ($P_LINE)" test "$P_ENC" = 1
s0=$(stale_total)
ec get /app/old/ prefix >"$T/r-old.out" 2>&1
res=$(python3 tests/integration/fixtures/kms/kms_check_range.py /app/ "$MARKER" $N <"$T/r-old.out")
check "the $N old values read through the proxy after rotation ($res)" test $? = 0
s1=$(stale_total)
ec get /app/new/ prefix >"$T/r-new.out" 2>&1
res=$(python3 tests/integration/fixtures/kms/kms_check_range.py /app/ "$MARKER" $NNEW <"$T/r-new.out")
check "the $NNEW new values read through the proxy ($res)" test $? = 0
s2=$(stale_total)
if [ $((s1 - s0)) = $N ] && [ $((s2 - s1)) = 0 ]; then
  pass "etcdseal_stale_reads_total +$N for the old values, +0 for the new ($s0 -> $s1 -> $s2)"
else
  fail "stale reads counted" "old reads +$((s1 - s0)) (want $N), new reads +$((s2 - s1)) (want 0)"
fi

plugin_counts
e0=$P_ENC d0=$P_DEC
verify_json "$T/v2.json"
rc=$?
plugin_counts
if [ $rc = 0 ] && json_check "$T/v2.json" "d['clean'] is True" "d['totals']['stale'] == $N" \
  "d['totals']['current'] == $NNEW" "d['totals']['plaintext'] == 0" "d['totals']['undecryptable'] == 0" \
  "d['totals']['keys'] == $((N + NNEW))" >"$T/v2.chk"; then
  pass "verify after rotation: $N stale, $NNEW current, exit 0 (stale alone is not a failure)"
else
  fail "verify after rotation" "rc=$rc (want 0) $(cat "$T/v2.chk") $(head -c 400 "$T/v2.json") $(head -3 "$T/v2.json.err")"
fi
check "verify of values under 2 seeds: 2 Decrypts, at most one Encrypt (decrypt +$((P_DEC - d0)), encrypt +$((P_ENC - e0)))" \
  test $((P_DEC - d0)) = 2 -a $((P_ENC - e0)) -le 1

# ------------------------------------------------------------------ rewrap with a concurrent writer
# the writer rewrites every odd old key through the proxy, in key order, while rewrap runs
awk -v n=$N -v m="$MARKER" 'BEGIN { for (i = 1; i <= n; i += 2) printf "/app/old/%d %sold/%d-upd\n", i, m, i }' |
  sort >"$T/upd"
sed 's/^/put /' "$T/upd" >"$T/writer.cmd"
python3 - "$T/expected" "$T/upd" <<'EOF'
import sys
want = dict(l.rstrip("\n").split(" ", 1) for l in open(sys.argv[1]))
want.update(dict(l.rstrip("\n").split(" ", 1) for l in open(sys.argv[2])))
with open(sys.argv[1], "w") as f:
    for k in sorted(want): f.write("%s %s\n" % (k, want[k]))
EOF
raw_kids
SEEDS_BEFORE=$(fieldv seeds "$RAW")
plugin_counts
e0=$P_ENC d0=$P_DEC
t0=$(now_ms)
"$ES_BIN" rewrap --endpoints "$DIRECT" --encryption-provider-config "$CFG" --qps 1000 --limit 500 \
  >"$T/rw.out" 2>"$T/rw.err" &
RW=$!
track "$RW"
nap 0.7
ec -f "$T/writer.cmd" >"$T/writer.out" 2>&1
wrc=$?
wait_exit "$RW" 60
rc=$EXIT_RC
t1=$(now_ms)
plugin_counts
RW_ENC=$((P_ENC - e0)) RW_DEC=$((P_DEC - d0))
rewritten=$(summary rewritten "$T/rw.out")
skipped=$(summary 'skipped \(changed\)' "$T/rw.out")
current=$(summary 'already current' "$T/rw.out")
errors=$(summary errors "$T/rw.out")
note "rewrap with a concurrent writer ($((t1 - t0)) ms): $(cat "$T/rw.out")"
if [ "$rc" = 0 ] && [ "$wrc" = 0 ] && [ "${errors:-x}" = 0 ] &&
  [ "$((${rewritten:-0} + ${skipped:-0} + ${current:-0}))" = $((N + NNEW)) ] &&
  [ "${skipped:-0}" -gt 0 ] && [ "${rewritten:-0}" -gt 0 ]; then
  pass "rewrap under a concurrent writer: rewritten $rewritten + skipped (changed) $skipped + already current $current = $((N + NNEW))"
else
  fail "rewrap under a concurrent writer" "rc=$rc writer=$wrc $(cat "$T/rw.out") $(head -3 "$T/rw.err") $(grep -m1 error "$T/writer.out")"
fi
if [ "$RW_ENC" = 1 ] && [ "$RW_DEC" -ge 1 ] && [ "$RW_DEC" -le "$SEEDS_BEFORE" ]; then
  pass "rewrap of ${rewritten:-?} values: one Encrypt (one seed for the process), $RW_DEC Decrypts for $SEEDS_BEFORE seeds ($P_LINE)"
else
  fail "rewrap plugin calls" "encrypt +$RW_ENC (want 1), decrypt +$RW_DEC (want 1..$SEEDS_BEFORE seeds); $P_LINE"
fi
if check_values "$T/expected" >"$T/chk1.out"; then
  pass "0 lost updates: every key holds the writer's value or its original one ($(cat "$T/chk1.out"))"
else
  fail "lost updates" "$(cat "$T/chk1.out")"
fi
verify_json "$T/v3.json"
rc=$?
if [ $rc = 0 ] && json_check "$T/v3.json" "d['clean'] is True" "d['totals']['stale'] == 0" \
  "d['totals']['plaintext'] == 0" "d['totals']['undecryptable'] == 0" "d['totals']['current'] == $((N + NNEW))" \
  "d['rules'][0]['prefixes'][0]['read_by'] == {'k8s:enc:kms:v2:$NAME': $((N + NNEW))}" >"$T/v3.chk"; then
  pass "verify after rewrap: 0 stale, 0 plaintext, $((N + NNEW)) current, exit 0"
else
  fail "verify after rewrap" "rc=$rc $(cat "$T/v3.chk") $(head -c 400 "$T/v3.json")"
fi
raw_kids
if [ "$(kid_n "$KID_B")" = $((N + NNEW)) ] && [ "$(kid_n "$KID_A")" = 0 ] && [ "$(fieldv bad "$RAW")" = 0 ] &&
  [ "$(fieldv marker_hits "$RAW")" = 0 ]; then
  pass "raw after rewrap: all $((N + NNEW)) values under key B, none under A, no plaintext ($RAW)"
else
  fail "raw after rewrap" "$RAW (A=$KID_A B=$KID_B)"
fi

# ------------------------------------------------------------------ key A dropped
stop_pid "$PROXY_PID" 10
stop_pid "$PLUGIN_PID" 5
start_plugin --backend file --key-file "$T/key-b" || die "plugin with key B only did not start"
check "plugin with key B only reports key B" test "$("$KC" --addr "$ADDR" status | field key_id)" = "$KID_B"
proxy_up || die "fresh proxy did not start"
raw_kids
SEEDS=$(fieldv seeds "$RAW")
plugin_counts # baseline after start: a proxy makes its own write seed (one Encrypt) when it starts
e0=$P_ENC d0=$P_DEC
if check_values "$T/expected" >"$T/chk2.out"; then
  pass "key A dropped: a fresh proxy reads every value ($(cat "$T/chk2.out"))"
else
  fail "key A dropped: fresh proxy reads" "$(cat "$T/chk2.out")"
fi
plugin_counts
if [ $((P_DEC - d0)) = "$SEEDS" ] && [ "$P_ENC" = "$e0" ]; then
  pass "fresh proxy: reading $((N + NNEW)) values under $SEEDS seeds cost exactly $SEEDS Decrypts, no Encrypt ($P_LINE)"
else
  fail "fresh proxy: one Decrypt per seed" "seeds $SEEDS; $P_LINE"
fi
check "fresh proxy: 0 stale reads ($(stale_total))" test "$(stale_total)" = 0
verify_json "$T/v4.json"
rc=$?
if [ $rc = 0 ] && json_check "$T/v4.json" "d['clean'] is True" "d['totals']['stale'] == 0" \
  "d['totals']['current'] == $((N + NNEW))" "d['totals']['undecryptable'] == 0" >"$T/v4.chk"; then
  pass "verify with key B only: clean, $((N + NNEW)) current"
else
  fail "verify with key B only" "rc=$rc $(cat "$T/v4.chk") $(head -c 400 "$T/v4.json")"
fi
# a value saved under key A before the rewrap, planted back: nothing can decrypt it any more
"$ENC_CLIENT" -a "$DIRECT" put /app/planted "hex:$(od -An -v -tx1 "$T/raw.a" | tr -d ' \n')" >/dev/null 2>&1 ||
  fail "plant the old value" "put failed"
if ! ec get /app/planted >"$T/planted.out" 2>&1 && ! grep -qF "$MARKER" "$T/planted.out"; then
  pass "a value under the dropped key A fails to read through the proxy ($(head -c 160 "$T/planted.out"))"
else
  fail "value under the dropped key A" "read: $(head -c 300 "$T/planted.out")"
fi
verify_json "$T/v5.json"
rc=$?
if [ $rc = 1 ] && json_check "$T/v5.json" "d['clean'] is False" "d['totals']['undecryptable'] == 1" \
  "d['problems'][0]['key'] == '/app/planted'" "d['problems'][0]['class'] == 'undecryptable'" >"$T/v5.chk"; then
  pass "verify finds the value under the dropped key undecryptable (exit 1)"
else
  fail "verify with a value under the dropped key" "rc=$rc $(cat "$T/v5.chk") $(head -c 400 "$T/v5.json")"
fi
ectl "$DIRECT" del /app/planted >/dev/null

stop_pid "$PROXY_PID" 10
stop_pid "$PLUGIN_PID" 5
if grep -lE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$T"/plugin-*.log "$T"/*.json.err "$T/rw.err" >"$T/san" 2>/dev/null; then
  fail "plugin/verify/rewrap sanitizer clean" "$(tr '\n' ' ' <"$T/san")"
else
  pass "plugin/verify/rewrap sanitizer clean"
fi
if grep -qF "$MARKER" "$T"/plugin-*.log "$T"/proxy-*.log "$T"/*.json.err "$T/rw.err" "$T/rw.out"; then
  fail "no plaintext in plugin, proxy, verify or rewrap output" "$(grep -lF "$MARKER" "$T"/plugin-*.log "$T"/proxy-*.log "$T"/*.err "$T/rw.out" | tr '\n' ' ')"
else
  pass "no plaintext in plugin, proxy, verify or rewrap output"
fi
note "total $(($(now_ms) - T_START)) ms"
exit 0
