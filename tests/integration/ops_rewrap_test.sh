#!/usr/bin/env bash
# ops_rewrap_test.sh - `etcdseal rewrap` following the runbooks:
#   enable encryption on 5,000 plaintext keys: config with aesgcm k1 first and identity as read
#   fallback -> reload (SIGHUP) -> rewrap (with a concurrent writer through the proxy: 0 lost
#   updates, every key current afterwards, leases kept) -> verify clean -> identity removed ->
#   reload -> all reads work, a planted plaintext value now fails to read;
#   rotate: k2 first -> reload -> verify 5,000 stale -> rewrap resumed with --from-key ->
#   rewrap the rest -> verify 0 stale -> k1 removed -> reload -> all reads work.
# Also --dry-run writes nothing, --qps paces, progress lines on a non-terminal.
source "$(dirname "$0")/lib.sh"
require_proxy
[ -x "$ES_TOOLS/it_enc_client" ] || die "$ES_TOOLS/it_enc_client missing (make tools)"
start_etcd e0
DIRECT=$ETCD_EP_e0
N=5000
K1=$(openssl rand -base64 32)
K2=$(openssl rand -base64 32)
CFG=$T/enc.yaml
write_cfg() { # write_cfg PROVIDER-LINES (yaml, already indented)
  {
    printf 'apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n'
    printf '  - resources: ["/app/"]\n    providers:\n%s\n' "$1"
  } >"$CFG.tmp"
  chmod 600 "$CFG.tmp"
  mv "$CFG.tmp" "$CFG"
}
IDENTITY='      - identity: {}'
aes() { # aes name:secret...
  local k
  printf '      - aesgcm:\n          keys:\n'
  for k in "$@"; do printf '            - {name: %s, secret: %s}\n' "${k%%:*}" "${k#*:}"; done
}
# reload: SIGHUP, then wait (bounded) until the proxy counts one more successful reload
RELOADS=0
reload_count() { [ "$(metric_sum "$ADMIN" 'apiserver_encryption_config_controller_automatic_reload_success_total')" -ge "$1" ]; }
reload() {
  RELOADS=$((RELOADS + 1))
  kill -HUP "$PROXY_PID"
  wait_until 10 reload_count "$RELOADS" || fail "reload $RELOADS" "not counted within 10 s"
}
json_check() {
  python3 - "$@" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
bad = [e for e in sys.argv[2:] if not eval(e, {"d": d})]
for e in bad: print("  false:", e)
sys.exit(1 if bad else 0)
EOF
}
verify_json() { "$ES_BIN" verify --endpoints "$DIRECT" --encryption-provider-config "$CFG" -o json >"$1" 2>"$1.err"; }
rewrap() { "$ES_BIN" rewrap --endpoints "$DIRECT" --encryption-provider-config "$CFG" "$@"; }
# summary FIELD FILE: the number after "FIELD " in rewrap's summary line
summary() { grep -oE "$1 [0-9]+" "$2" | tail -1 | grep -oE '[0-9]+$'; }
# check_all_values PREFIX EXPECTED-FILE: every key reads through the proxy with the expected value
check_all_values() {
  ECTL_TIMEOUT=120 ECTL_CMD_TIMEOUT=100s ectl "$VIA" get "$1" --prefix -w json >"$T/all.json" 2>"$T/all.err" || return 1
  python3 - "$T/all.json" "$2" <<'EOF'
import base64, json, sys
kvs = json.load(open(sys.argv[1])).get("kvs", [])
got = {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode() for kv in kvs}
want = dict(l.rstrip("\n").split(" ", 1) for l in open(sys.argv[2]))
bad = [k for k in want if got.get(k) != want[k]]
extra = [k for k in got if k not in want]
for k in bad[:5]: print("  %s: got %r want %r" % (k, got.get(k), want[k]))
print("  %d keys, %d wrong, %d unexpected" % (len(got), len(bad), len(extra)))
sys.exit(1 if bad or extra else 0)
EOF
}

# ---------------------------------------------------------------- a cluster with 5,000 plaintext keys
for i in $(seq 1 $N); do echo "put /app/data/$i orig-$i"; done >"$T/load.cmds"
"$ES_TOOLS/it_enc_client" -a "$DIRECT" -t 60 -f "$T/load.cmds" >/dev/null 2>"$T/load.err" ||
  die "loading $N keys failed: $(head -3 "$T/load.err")"
LEASE=$(ectl "$DIRECT" lease grant 3600 | grep -oE '[0-9a-f]{16}')
for i in 1 2 3; do ectl "$DIRECT" put "/app/data/$i" "orig-$i" --lease "$LEASE" >/dev/null; done
for i in $(seq 1 $N); do echo "/app/data/$i orig-$i"; done >"$T/expected"

write_cfg "$IDENTITY"
setup_via "$DIRECT" --encryption-provider-config "$CFG"

# ---------------------------------------------------------------- enable: aesgcm k1 first, identity reads
write_cfg "$(aes "k1:$K1")
$IDENTITY"
reload
[ "$(ectl "$VIA" get /app/data/42 --print-value-only)" = orig-42 ] &&
  pass "after reload: plaintext values still read through identity" || fail "identity fallback read" ""
verify_json "$T/v0.json"
rc=$?
[ "$rc" = 1 ] && json_check "$T/v0.json" "d['totals']['plaintext'] == $N" &&
  pass "verify before rewrap: $N plaintext, exit 1" || fail "verify before rewrap" "rc=$rc $(head -c 300 "$T/v0.json")"

rev0=$(ectl "$DIRECT" get /app/data/1 -w json | grep -oE '"revision":[0-9]+' | head -1)
rewrap --dry-run >"$T/dry.out" 2>"$T/dry.err"
rc=$?
rev1=$(ectl "$DIRECT" get /app/data/1 -w json | grep -oE '"revision":[0-9]+' | head -1)
if [ "$rc" = 0 ] && [ "$(summary 'would rewrite' "$T/dry.out")" = $N ] && [ "$rev0" = "$rev1" ]; then
  pass "rewrap --dry-run: would rewrite $N, wrote nothing (revision unchanged)"
else
  fail "rewrap --dry-run" "rc=$rc $(cat "$T/dry.out") $rev0 $rev1"
fi

# rewrap paced at 800 Txn/s while a writer rewrites every key through the proxy in key order
# (slow enough that the writer overtakes it also through an ASan-built proxy, so some keys are
# skipped as changed)
sort "$T/load.cmds" -k2,2 | sed 's/ orig-/ new-/' >"$T/writer.cmds"
t0=$(now_ms)
rewrap --qps 800 --limit 500 >"$T/rw1.out" 2>"$T/rw1.err" &
RW=$!
track "$RW"
nap 0.7
"$ES_TOOLS/it_enc_client" -a "$VIA" -t 60 -f "$T/writer.cmds" >/dev/null 2>"$T/writer.err"
wrc=$?
wait_exit "$RW" 120
rc=$EXIT_RC
t1=$(now_ms)
sed 's/ orig-/ new-/' "$T/expected" >"$T/expected.new"
rewritten=$(summary rewritten "$T/rw1.out")
skipped=$(summary 'skipped \(changed\)' "$T/rw1.out")
current=$(summary 'already current' "$T/rw1.out")
note "rewrap with a concurrent writer: $(cat "$T/rw1.out") in $((t1 - t0)) ms"
if [ "$rc" = 0 ] && [ "$wrc" = 0 ] && [ "$((rewritten + skipped + current))" = $N ] && [ "${skipped:-0}" -gt 0 ]; then
  pass "rewrap under a concurrent writer: rewritten $rewritten + skipped (changed) $skipped + already current $current = $N"
else
  fail "rewrap under a concurrent writer" "rc=$rc writer=$wrc $(cat "$T/rw1.out") $(head -3 "$T/rw1.err") $(head -3 "$T/writer.err")"
fi
if check_all_values /app/data/ "$T/expected.new" >"$T/check1.out"; then
  pass "0 lost updates: all $N keys hold the concurrent writer's value"
else
  fail "lost updates" "$(cat "$T/check1.out")"
fi
grep -q '^rewrap: [0-9]*/[0-9]* keys' "$T/rw1.err" && pass "rewrap progress: plain lines on a non-terminal" ||
  fail "rewrap progress lines" "$(head -3 "$T/rw1.err")"
# the leased keys were overwritten by the writer (no lease): put them back with the lease, rewrap
for i in 1 2 3; do ectl "$DIRECT" put "/app/data/$i" "new-$i" --lease "$LEASE" >/dev/null; done
rewrap >"$T/rw2.out" 2>&1
lease_ok=0
for i in 1 2 3; do
  ectl "$DIRECT" get "/app/data/$i" -w json | grep -q "\"lease\":$((16#$LEASE))" && lease_ok=$((lease_ok + 1))
done
[ "$(summary rewritten "$T/rw2.out")" = 3 ] && [ "$lease_ok" = 3 ] &&
  pass "rewrap keeps each key's lease (3 leased keys rewritten, lease kept)" ||
  fail "rewrap leases" "$(cat "$T/rw2.out") lease_ok=$lease_ok"

verify_json "$T/v1.json"
rc=$?
[ "$rc" = 0 ] && json_check "$T/v1.json" "d['clean'] is True" "d['totals']['current'] == $N" \
  "d['rules'][0]['prefixes'][0]['read_by'] == {'k8s:enc:aesgcm:v1:k1': $N}" &&
  pass "verify after rewrap: clean, $N current (aesgcm k1)" || fail "verify after rewrap" "rc=$rc $(head -c 300 "$T/v1.json")"

# ---------------------------------------------------------------- identity removed
write_cfg "$(aes "k1:$K1")"
reload
check_all_values /app/data/ "$T/expected.new" >"$T/check2.out" &&
  pass "identity removed + reload: all $N keys read through the proxy" || fail "reads without identity" "$(cat "$T/check2.out")"
ectl "$DIRECT" put /app/planted plain-planted >/dev/null
if ! ectl "$VIA" get /app/planted >"$T/planted.out" 2>&1; then
  pass "a planted plaintext value now fails to read"
else
  fail "planted plaintext" "read succeeded: $(head -2 "$T/planted.out")"
fi
ectl "$DIRECT" del /app/planted >/dev/null

# ---------------------------------------------------------------- rotation: k2 first
write_cfg "$(aes "k2:$K2" "k1:$K1")"
reload
verify_json "$T/v2.json"
rc=$?
[ "$rc" = 0 ] && json_check "$T/v2.json" "d['totals']['stale'] == $N" &&
  pass "rotation: verify counts $N stale (exit 0)" || fail "verify stale" "rc=$rc $(head -c 300 "$T/v2.json")"
# resumable: first only keys >= /app/data/5 (5, 50-59, 500-599, 5000..: 5*111+1 = 556 keys)
rewrap --from-key /app/data/5 >"$T/rw3.out" 2>&1
verify_json "$T/v3.json"
[ "$(summary rewritten "$T/rw3.out")" = $((5 * 111 + 1)) ] && json_check "$T/v3.json" "d['totals']['stale'] == $N - 556" &&
  pass "rewrap --from-key /app/data/5: 556 keys rewritten, the rest still stale" ||
  fail "rewrap --from-key" "$(cat "$T/rw3.out")"
rewrap --prefix /app/data/ >"$T/rw4.out" 2>&1
verify_json "$T/v4.json"
rc=$?
[ "$rc" = 0 ] && [ "$(summary rewritten "$T/rw4.out")" = $((N - 556)) ] &&
  [ "$(summary 'already current' "$T/rw4.out")" = 556 ] &&
  json_check "$T/v4.json" "d['totals']['stale'] == 0" "d['rules'][0]['prefixes'][0]['read_by'] == {'k8s:enc:aesgcm:v1:k2': $N}" &&
  pass "rotation: rewrap the rest ($((N - 556))), verify 0 stale, all read by k2" ||
  fail "rotation rewrap" "rc=$rc $(cat "$T/rw4.out") $(head -c 300 "$T/v4.json")"
write_cfg "$(aes "k2:$K2")"
reload
check_all_values /app/data/ "$T/expected.new" >"$T/check3.out" &&
  pass "old key removed + reload: all $N keys read through the proxy" || fail "reads after rotation" "$(cat "$T/check3.out")"

# ---------------------------------------------------------------- usage, pacing
rewrap --qps abc >/dev/null 2>&1
rc1=$?
"$ES_BIN" rewrap --encryption-provider-config "$CFG" >/dev/null 2>&1
rc2=$?
[ "$rc1$rc2" = 22 ] && pass "rewrap usage errors exit 2" || fail "rewrap usage" "rc=$rc1 $rc2"
write_cfg "$(aes "k3:$(openssl rand -base64 32)" "k2:$K2")"
for i in $(seq 1 40); do echo "put /app/q/$i v$i"; done >"$T/q.cmds"
"$ES_TOOLS/it_enc_client" -a "$DIRECT" -f "$T/q.cmds" >/dev/null 2>&1
t0=$(now_ms)
rewrap --prefix /app/q/ --qps 20 >"$T/rw5.out" 2>&1
dt=$(($(now_ms) - t0))
[ "$(summary rewritten "$T/rw5.out")" = 40 ] && [ "$dt" -ge 1700 ] && [ "$dt" -lt 8000 ] &&
  pass "rewrap --qps 20: 40 rewrites took $dt ms (>= 1.95 s expected)" || fail "rewrap --qps" "dt=$dt $(cat "$T/rw5.out")"
