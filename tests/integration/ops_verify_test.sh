#!/usr/bin/env bash
# ops_verify_test.sh - `etcdseal verify`: counts per class (plaintext, current, stale,
# undecryptable, empty, not protected) and per provider/key on planted data, the JSON schema,
# exit codes 0/1/2/3, page sizes that do not change the result, and the backup runbook:
# `etcdctl snapshot save` through the proxy -> `verify --snapshot` reports all encrypted ->
# the restored values do not decrypt without the key.
#
# Runbook data: rule 0 secrets (aesgcm k2 first, k1 read, identity read), rule 1 /app/
# (secretbox s1). Planted directly in etcd: 3 plaintext secrets, 4 written with k1 (stale),
# 5 with k2 (current), 2 undecryptable, 1 empty, 3 keys outside every protected prefix (/other/, not scanned), 1 key under the storage prefix
# that no rule covers (/registry/pods/, scanned, "unprotected"), 6 current /app/ values.
source "$(dirname "$0")/lib.sh"
start_etcd e0
DIRECT=$ETCD_EP_e0
K1=$(openssl rand -base64 32)
K2=$(openssl rand -base64 32)
S1=$(openssl rand -base64 32)
cfg() { # cfg FILE SECRETS-KEYS... (rule 0 keys as "name:secret")
  local f=$1 k
  shift
  {
    printf 'apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n'
    printf '  - resources: [secrets]\n    providers:\n      - aesgcm:\n          keys:\n'
    for k in "$@"; do printf '            - {name: %s, secret: %s}\n' "${k%%:*}" "${k#*:}"; done
    printf '      - identity: {}\n'
    printf '  - resources: ["/app/"]\n    providers:\n      - secretbox:\n          keys:\n'
    printf '            - {name: s1, secret: %s}\n' "$S1"
  } >"$f"
  chmod 600 "$f"
}
cfg "$T/enc.yaml" "k2:$K2" "k1:$K1"
cfg "$T/old.yaml" "k1:$K1"
cfg "$T/wrongkeys.yaml" "k2:$(openssl rand -base64 32)" "k1:$(openssl rand -base64 32)"
sed -i "s#secret: $S1#secret: $(openssl rand -base64 32)#" "$T/wrongkeys.yaml"

# seal CONFIG KEY VALUE: stores VALUE at KEY directly in etcd, encrypted as CONFIG writes
seal() { printf '%s' "$3" | "$ES_BIN" encrypt --encryption-provider-config "$1" --key "$2" | ectl "$DIRECT" put "$2" >/dev/null; }
for i in 1 2 3; do ectl "$DIRECT" put "/registry/secrets/ns/plain$i" "secret-$i" >/dev/null; done
for i in 1 2 3 4; do seal "$T/old.yaml" "/registry/secrets/ns/stale$i" "old-$i"; done
for i in 1 2 3 4 5; do seal "$T/enc.yaml" "/registry/secrets/ns/cur$i" "cur-$i"; done
ectl "$DIRECT" put /registry/secrets/ns/bad1 'k8s:enc:aesgcm:v1:k2:0123456789abcdefghijklmnopqrstuvwxyz' >/dev/null
ectl "$DIRECT" put /registry/secrets/ns/bad2 'k8s:enc:aesgcm:v1:nokey:0123456789abcdefghijklmnop' >/dev/null
ectl "$DIRECT" put /registry/secrets/ns/empty '' >/dev/null
for i in 1 2 3; do ectl "$DIRECT" put "/other/$i" "x$i" >/dev/null; done
ectl "$DIRECT" put /registry/pods/ns/p1 pod >/dev/null
for i in 1 2 3 4 5 6; do seal "$T/enc.yaml" "/app/v$i" "app-$i"; done

V=("$ES_BIN" verify --encryption-provider-config "$T/enc.yaml")

# json_check FILE PY-EXPR...: every python expression over `d` (the parsed JSON) must be true
json_check() {
  python3 - "$@" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
bad = [e for e in sys.argv[2:] if not eval(e, {"d": d, "json": json})]
for e in bad: print("  false:", e)
sys.exit(1 if bad else 0)
EOF
}

# ---------------------------------------------------------------- counts and schema
"${V[@]}" --endpoints "$DIRECT" -o json >"$T/v1.json" 2>"$T/v1.err"
rc=$?
[ "$rc" = 1 ] && pass "verify exits 1 with plaintext and undecryptable values present" ||
  fail "verify exit code" "rc=$rc $(head -3 "$T/v1.err")"
if json_check "$T/v1.json" \
  'd["schema"] == "etcdseal.verify/v1"' \
  'set(d) >= {"source","snapshot","revision","storage_prefix","clean","scanned","unprotected","totals","rules","problems"}' \
  'd["clean"] is False and d["snapshot"] is False and d["revision"] > 0' \
  'd["storage_prefix"] == "/registry/"' \
  'set(d["totals"]) == {"keys","empty","plaintext","current","stale","undecryptable"}' \
  'all(set(p) == {"prefix","keys","empty","plaintext","current","stale","undecryptable","read_by"} for r in d["rules"] for p in r["prefixes"])' \
  'all(set(r) == {"rule","resources","providers","prefixes"} for r in d["rules"])' \
  'all(set(p) == {"key","class","reason"} for p in d["problems"])'; then
  pass "verify -o json: schema keys present (document, totals, rules, prefixes, problems)"
else
  fail "verify JSON schema" "$(head -c 600 "$T/v1.json")"
fi
if json_check "$T/v1.json" \
  'd["totals"] == {"keys": 21, "empty": 1, "plaintext": 3, "current": 11, "stale": 4, "undecryptable": 2}' \
  'd["unprotected"] == 1 and d["scanned"] == 22' \
  '[p["prefix"] for p in d["rules"][0]["prefixes"]] == ["/registry/secrets/"]' \
  'd["rules"][0]["prefixes"][0]["read_by"] == {"k8s:enc:aesgcm:v1:k1": 4, "k8s:enc:aesgcm:v1:k2": 5}' \
  'd["rules"][1]["prefixes"][0] == {"prefix": "/app/", "keys": 6, "empty": 0, "plaintext": 0, "current": 6, "stale": 0, "undecryptable": 0, "read_by": {"k8s:enc:secretbox:v1:s1": 6}}' \
  'sorted(p["key"] for p in d["problems"] if p["class"] == "plaintext") == ["/registry/secrets/ns/plain%d" % i for i in (1,2,3)]' \
  'sorted(p["key"] for p in d["problems"] if p["class"] == "undecryptable") == ["/registry/secrets/ns/bad1","/registry/secrets/ns/bad2"]' \
  'all("secret-" not in p["reason"] for p in d["problems"])'; then
  pass "verify counts: 3 plaintext, 4 stale (k1), 11 current (5 k2 + 6 s1), 2 undecryptable, 1 empty, 1 unprotected, /other/ not scanned"
else
  fail "verify counts" "$(head -c 1500 "$T/v1.json")"
fi
# /registry/pods/ is not covered (only secrets is a resource rule): counted as unprotected
"${V[@]}" --endpoints "$DIRECT" -o json --limit 1 >"$T/v1b.json" 2>/dev/null
"${V[@]}" --endpoints "$DIRECT" -o json --limit 7 >"$T/v1c.json" 2>/dev/null
if python3 -c 'import json,sys; a,b,c=[json.load(open(f)) for f in sys.argv[1:]]; sys.exit(0 if a["totals"]==b["totals"]==c["totals"] and a["rules"]==b["rules"]==c["rules"] else 1)' \
    "$T/v1.json" "$T/v1b.json" "$T/v1c.json"; then
  pass "verify --limit 1 / 7 / 500: same inventory (pagination)"
else
  fail "verify pagination" "$(head -c 400 "$T/v1b.json")"
fi
"${V[@]}" --endpoints "$DIRECT" >"$T/table.out" 2>&1
rc=$?
if [ "$rc" = 1 ] && grep -q '^NOT CLEAN: 3 plaintext, 2 undecryptable, 4 stale' "$T/table.out" &&
  grep -qE '^0 +secrets +/registry/secrets/ +15 +3 +4 +2 +1  k8s:enc:aesgcm:v1:k1: 4, k8s:enc:aesgcm:v1:k2: 5' "$T/table.out"; then
  pass "verify table: per rule/prefix row with keys, plaintext, stale, undecryptable, empty, read-by"
else
  fail "verify table" "rc=$rc"
  show_log "$T/table.out" 20
fi

# ---------------------------------------------------------------- exit 0 once clean (stale is not a failure)
for k in plain1 plain2 plain3 bad1 bad2; do ectl "$DIRECT" del "/registry/secrets/ns/$k" >/dev/null; done
"${V[@]}" --endpoints "$DIRECT" -o json >"$T/v2.json" 2>"$T/v2.err"
rc=$?
if [ "$rc" = 0 ] && json_check "$T/v2.json" 'd["clean"] is True' 'd["totals"]["stale"] == 4' 'd["problems"] == []'; then
  pass "verify exits 0 when only current/stale values remain (4 stale reported)"
else
  fail "verify clean exit" "rc=$rc $(head -c 300 "$T/v2.json") $(head -3 "$T/v2.err")"
fi

# ---------------------------------------------------------------- usage and unreachable
"${V[@]}" >/dev/null 2>&1
rc1=$?
"$ES_BIN" verify --endpoints "$DIRECT" >/dev/null 2>&1
rc2=$?
"${V[@]}" --endpoints "$DIRECT" -o yaml >/dev/null 2>&1
rc3=$?
ports 1
"${V[@]}" --endpoints "127.0.0.1:${PORTS[0]}" >/dev/null 2>"$T/unreach.err"
rc4=$?
if [ "$rc1$rc2$rc3" = 222 ] && [ "$rc4" = 3 ] && grep -q "127.0.0.1:${PORTS[0]}" "$T/unreach.err"; then
  pass "verify exit 2 on usage errors, 3 (naming the endpoint) when etcd is unreachable"
else
  fail "verify usage/unreachable" "rc=$rc1 $rc2 $rc3 $rc4: $(cat "$T/unreach.err")"
fi

# ---------------------------------------------------------------- backup runbook: snapshot through the proxy
if proxy_available; then
  setup_via "$DIRECT" --encryption-provider-config "$T/enc.yaml"
  for i in $(seq 1 20); do ectl "$VIA" put "/registry/secrets/bk/s$i" "backup-secret-$i" >/dev/null; done
  ectl "$VIA" put /app/bk "app-backup" >/dev/null
  if ECTL_TIMEOUT=60 ECTL_CMD_TIMEOUT=50s ectl "$VIA" snapshot save "$T/backup.db" >"$T/save.out" 2>&1; then
    pass "backup: etcdctl snapshot save through the proxy"
  else
    fail "snapshot save through the proxy" "$(tail -3 "$T/save.out")"
  fi
  mkdir -p "$T/tmpv"
  TMPDIR=$T/tmpv "${V[@]}" --snapshot "$T/backup.db" -o json >"$T/snap.json" 2>"$T/snap.err"
  rc=$?
  left=$(ls -A "$T/tmpv" | wc -l)
  if [ "$rc" = 0 ] && json_check "$T/snap.json" 'd["snapshot"] is True' 'd["clean"] is True' \
    'd["totals"]["plaintext"] == 0 and d["totals"]["undecryptable"] == 0' \
    'd["totals"]["keys"] == 37' 'd["totals"]["current"] == 32' 'd["totals"]["stale"] == 4'; then
    pass "verify --snapshot: 37 protected keys in the backup, all encrypted (32 current, 4 stale, 1 empty)"
  else
    fail "verify --snapshot" "rc=$rc $(head -c 400 "$T/snap.json") $(head -5 "$T/snap.err")"
  fi
  [ "$left" = 0 ] && ! pgrep -f "$T/tmpv" >/dev/null &&
    pass "verify --snapshot: temporary etcd stopped and its directory removed" ||
    fail "snapshot cleanup" "left=$left; $(pgrep -af "$T/tmpv" | head -2)"
  "$ES_BIN" verify --encryption-provider-config "$T/wrongkeys.yaml" --snapshot "$T/backup.db" -o json >"$T/snapw.json" 2>/dev/null
  rc=$?
  if [ "$rc" = 1 ] && json_check "$T/snapw.json" 'd["totals"]["undecryptable"] == 36' 'd["totals"]["plaintext"] == 0' \
    '"backup-secret" not in json.dumps(d)'; then
    pass "restored backup values do not decrypt without the key (36 undecryptable, exit 1)"
  else
    fail "backup without the key" "rc=$rc $(head -c 400 "$T/snapw.json")"
  fi
  if ! grep -rqs 'backup-secret-1' "$T/backup.db"; then
    pass "the snapshot file holds no plaintext of the values written through the proxy"
  else
    fail "snapshot plaintext" "backup-secret-1 found in the snapshot file"
  fi
else
  skip "backup runbook" "$ES_BIN proxy is not available"
fi
"${V[@]}" --snapshot "$T/missing.db" >/dev/null 2>"$T/miss.err"
rc=$?
[ "$rc" = 3 ] && grep -q missing.db "$T/miss.err" && pass "verify --snapshot of a missing file: exit 3 naming it" ||
  fail "snapshot missing file" "rc=$rc $(cat "$T/miss.err")"
