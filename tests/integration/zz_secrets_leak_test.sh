#!/usr/bin/env bash
# shellcheck disable=SC2154,SC2317 # ETCD_EP_e0 is set by lib.sh; helpers are called indirectly
# zz_secrets_leak_test.sh - "secrets never leak" (issue 8, item 6). Named zz_ so the runner
# (tests/run-tests.sh --integration, alphabetical) runs it after every other integration file.
#
# Part 1, own workload: fresh keys (etcdseal keygen for aescbc/aesgcm/secretbox, 32 random bytes
# for the KMS v2 plugin's file KEK), a proxy with --log-level debug and the bundled plugin with
# --log-level debug; puts/gets/sorted gets/VALUE-compare txns/deletes with prev/watches with prev
# of unique marker plaintexts, then errors: plaintext, garbage, wrong-key and corrupted-KMS values
# stored straight in etcd and read through the proxy (Range, Txn, Watch), reloads (SIGHUP) of
# broken configurations that carry key bytes (wrong length, bad base64, YAML syntax error, unknown
# provider) then a good rotation, and etcdseal check-config/encrypt/decrypt/verify/rewrap on good
# and bad input. Every product output is collected: proxy and plugin logs, /metrics and health
# bodies, the commands' stderr (and stdout where it must not carry plaintext), and the error
# messages returned to clients (etcdctl stderr, it_enc_client error lines). Then every key's bytes
# (raw, base64, base64url, hex; the config text), the KEK file bytes and the marker plaintexts are
# searched for in all of it: 0 hits = PASS. A positive control proves the scanner finds them.
# Part 2, the suite: every base64 secret in tests/**/*.yaml, conf/**/*.yaml and literal
# "secret: <base64>" lines of tests/**/*.sh is searched for in $TEST_LOG_DIR/*.log (each earlier
# test file's stdout+stderr, kept by the runner) and, when the run kept the temp dirs (KEEP_TMP),
# in every kept proxy/plugin log under /dev/shm/etcdseal-it-*/. Hits are reported as file:line.
source "$(dirname "$0")/lib.sh"
source tests/integration/fixtures/encrypt/enc_helpers.sh
SCAN=tests/integration/fixtures/leak/scan.py
LOG_DIR=${TEST_LOG_DIR:-build/test-logs}
KC=$ES_TOOLS/it_kms_client

# ================================================================== part 2 first (cheap, no proxy)
NEEDLES_SUITE=$T/needles-suite.tsv
{
  grep -rhoE "secret: *['\"]?[A-Za-z0-9+/=_-]{16,}" --include='*.yaml' tests conf 2>/dev/null
  grep -rhoE "secret: *['\"]?[A-Za-z0-9+/=_-]{16,}" --include='*.sh' tests 2>/dev/null
} | sed -E "s/secret: *['\"]?//" | sort -u | awk '{printf "repo-key-%d\tb64\t%s\n", NR, $0}' >"$NEEDLES_SUITE"
nkeys=$(wc -l <"$NEEDLES_SUITE")
if [ "$nkeys" -lt 10 ]; then
  fail "suite: repo test keys found" "only $nkeys 'secret:' values in tests/ and conf/"
else
  pass "suite: $nkeys distinct repo test keys to look for"
fi
suite_files=()
for f in "$LOG_DIR"/*.log; do
  [ -f "$f" ] || continue
  case $f in *zz_secrets_leak_test*) continue ;; esac
  suite_files+=("$f")
done
if [ -n "${KEEP_TMP:-}" ]; then
  for f in "$TMP_ROOT"/etcdseal-it-*/proxy-*.log "$TMP_ROOT"/etcdseal-it-*/plugin*.log; do
    [ -f "$f" ] && [[ $f != "$T"/* ]] && suite_files+=("$f")
  done
fi
if [ ${#suite_files[@]} -eq 0 ]; then
  skip "suite: earlier test logs" "no $LOG_DIR/*.log (run the integration suite first, e.g. make test)"
else
  if python3 "$SCAN" "$NEEDLES_SUITE" "${suite_files[@]}" >"$T/suite-scan.out" 2>&1; then
    pass "suite: 0 repo key bytes in ${#suite_files[@]} earlier test logs ($(tail -1 "$T/suite-scan.out"))"
  else
    fail "suite: repo key bytes in earlier test logs" "$(tail -1 "$T/suite-scan.out")"
    grep '^HIT' "$T/suite-scan.out" | head -40 | sed 's/^/  | /'
  fi
fi

# ================================================================== part 1: own workload
require_proxy
require_enc_client
[ -x "$KC" ] || die "$KC missing (make)"
"$ES_BIN" kms-plugin --help >/dev/null 2>&1 || die "etcdseal kms-plugin --help failed"
export ETCDSEAL_KMS_TIMING="healthy=1,unhealthy=0.5,expiry=30,negative=1"
S=$T/scan # everything that lands here is scanned
mkdir -p "$S"
NEEDLES=$T/needles.tsv
: >"$NEEDLES"
need() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$NEEDLES"; }
R=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
M="LeakMarker-$R" # every plaintext value starts with this; $M-<provider>-<i>
need marker text "$M"
for n in cbc gcm sb gcm2 wrong; do
  k=$("$ES_BIN" keygen 2>"$S/keygen.err") || die "etcdseal keygen failed"
  printf -v "K_$n" %s "$k"
  need "key-$n" b64 "$k"
done
KEK=$T/kek.bin
head -c 32 /dev/urandom >"$KEK"
chmod 600 "$KEK"
need kek-file hex "$(od -An -tx1 "$KEK" | tr -d ' \n')"
# key bytes that only broken configurations carry (a reload or check-config must not echo them)
BAD_SHORT=$(head -c 31 /dev/urandom | base64 -w0)
need bad-short-key b64 "$BAD_SHORT"
BAD_B64="Qk${R}Zz!!notb64*${R}zQ"
need bad-base64-key text "$BAD_B64"
BAD_YAML_KEY=$(head -c 32 /dev/urandom | base64 -w0)
need bad-yaml-key b64 "$BAD_YAML_KEY"
BAD_PROV_KEY=$(head -c 32 /dev/urandom | base64 -w0)
need bad-provider-key b64 "$BAD_PROV_KEY"

start_etcd e0
DIRECT=$ETCD_EP_e0
SOCK=unix://$T/kms.sock
bg "$ES_BIN" kms-plugin --listen "$SOCK" --backend file --key-file "$KEK" --log-level debug \
  2>"$S/plugin.log"
PLUGIN_PID=$BG_PID
wait_until 10 "$KC" --addr "$SOCK" --timeout-ms 500 status || {
  show_log "$S/plugin.log"
  die "kms plugin did not answer Status"
}

# enc_cfg FILE GCM_KEYS_YAML [EXTRA_RULES]: the workload's EncryptionConfiguration.
enc_cfg() {
  cat >"$1" <<EOC
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [/leak/cbc/]
    providers:
      - aescbc:
          keys:
            - name: cbc-a
              secret: $K_cbc
  - resources: [/leak/gcm/]
    providers:
      - aesgcm:
          keys:
$2
  - resources: [/leak/sb/]
    providers:
      - secretbox:
          keys:
            - name: sb-a
              secret: $K_sb
  - resources: [/leak/kms/]
    providers:
      - kms:
          apiVersion: v2
          name: leakkms
          endpoint: $SOCK
          timeout: 3s
${3:-}
EOC
  chmod 600 "$1"
}
GCM1="            - name: gcm-a
              secret: $K_gcm"
GCM2="            - name: gcm-b
              secret: $K_gcm2
            - name: gcm-a
              secret: $K_gcm"
CFG=$T/enc.yaml
enc_cfg "$CFG" "$GCM1"
# the same rules, but gcm-a is another key: values written with it are "wrong key" values
WRONG=$T/wrong.yaml
enc_cfg "$WRONG" "            - name: gcm-a
              secret: $K_wrong"
# broken variants (each must fail to load without echoing its key bytes)
enc_cfg "$T/bad-short.yaml" "            - name: gcm-a
              secret: $BAD_SHORT"
enc_cfg "$T/bad-b64.yaml" "            - name: gcm-a
              secret: '$BAD_B64'"
enc_cfg "$T/bad-yaml.yaml" "            - name: gcm-a
              secret: $BAD_YAML_KEY
             bad: [indent: {"
enc_cfg "$T/bad-provider.yaml" "$GCM1" "  - resources: [/leak/x/]
    providers:
      - aesfoo:
          keys:
            - name: foo
              secret: $BAD_PROV_KEY"
BADS=(bad-short bad-b64 bad-yaml bad-provider)

ports 2
start_proxy --endpoints "$DIRECT" --listen-addr "127.0.0.1:${PORTS[0]}" \
  --metrics-addr "127.0.0.1:${PORTS[1]}" --encryption-provider-config "$CFG" --log-level debug ||
  die "proxy did not start"
VIA=127.0.0.1:${PORTS[0]}
ADMIN=127.0.0.1:${PORTS[1]}
PLOG=$PROXY_LOG
wait_ready "$ADMIN" 15 || die "proxy /readyz not 200"
kms_ok() { [ "$(http_code "http://$ADMIN/healthz/kms-providers")" = 200 ]; }
wait_until 10 kms_ok || die "/healthz/kms-providers not 200"
NDUMP=0
dump_admin() {
  local p
  NDUMP=$((NDUMP + 1))
  for p in metrics healthz readyz healthz/kms-providers; do
    curl -s -m 3 "http://$ADMIN/$p" >"$S/admin-$NDUMP-${p//\//_}.txt" 2>&1
  done
}
# ec NAME ARGS...: it_enc_client through the proxy; its error lines (what clients are told) are
# scanned, its successful answers (which carry the plaintext by design) are not.
ec() {
  local name=$1
  shift
  "$ENC_CLIENT" -a "$VIA" -t 30 "$@" >"$T/ec-$name.out" 2>"$S/ec-$name.err"
  grep '"error"' "$T/ec-$name.out" >"$S/ec-$name.errors"
  return 0
}
# ctl NAME ARGS...: etcdctl through the proxy; stderr (error messages) scanned.
ctl() {
  local name=$1
  shift
  ectl "$VIA" "$@" >"$T/ctl-$name.out" 2>"$S/ctl-$name.err"
}

# ------------------------------------------------------------------ good traffic
ectl_bg "$T/watch1.out" "$VIA" watch /leak/ --prefix --prev-kv
W1=$BG_PID
"$ENC_CLIENT" -a "$VIA" -t 60 watch /leak/ prefix prev count=100000 timeout=40 \
  >"$T/ec-watch.out" 2>"$S/ec-watch.err" &
W2=$!
track "$W2"
sleep 0.5
N=15
{
  for p in cbc gcm sb kms; do
    for ((i = 1; i <= N; i++)); do echo "put /leak/$p/k$i $M-$p-$i prev"; done
    echo "get /leak/$p/ prefix"
    echo "get /leak/$p/ prefix sort=value order=desc"
    echo "txn cmp /leak/$p/k1 value = $M-$p-1 then put /leak/$p/k1 $M-$p-1b get /leak/$p/k2 else get /leak/$p/k1 end"
    echo "txn cmp /leak/$p/k3 value = $M-$p-nope then get /leak/$p/k3 else put /leak/$p/k3 $M-$p-3b prev end"
    echo "del /leak/$p/k$N prev"
  done
} >"$T/good.cmds"
ec good -f "$T/good.cmds"
gerr=$(wc -l <"$S/ec-good.errors")
gok=$(grep -o "$M" "$T/ec-good.out" | wc -l)
if [ "$gerr" -eq 0 ] && [ "$gok" -gt $((4 * N)) ]; then
  pass "workload: good traffic on aescbc/aesgcm/secretbox/kms v2 ($gok answers carry markers, 0 errors)"
else
  fail "workload: good traffic" "$gerr error lines, $gok marker answers"
  head -5 "$S/ec-good.errors" | sed 's/^/  | /'
fi
for p in cbc gcm sb kms; do ctl "get-$p" get /leak/$p/k2; done
if grep -q "$M-kms-2" "$T/ctl-get-kms.out"; then pass "workload: etcdctl reads a KMS v2 value"; else
  fail "workload: etcdctl reads a KMS v2 value" "$(head -c 200 "$S/ctl-get-kms.err")"; fi
dump_admin

# ------------------------------------------------------------------ bad stored values
# plaintext, garbage, wrong-key and corrupted-KMS values written straight into etcd
ectl "$DIRECT" put /leak/gcm/plain "$M-direct-plain" >/dev/null
printf 'k8s:enc:aesgcm:v1:gcm-a:%s' "$(head -c 40 /dev/urandom | base64 -w0)" |
  ectl "$DIRECT" put /leak/gcm/garbage >/dev/null
printf '%s' "$M-wrongkey" | "$ES_BIN" encrypt --encryption-provider-config "$WRONG" --key /leak/gcm/wrong \
  >"$T/wrong.bin" 2>"$S/encrypt-wrong.err"
ectl "$DIRECT" put /leak/gcm/wrong <"$T/wrong.bin" >/dev/null
raw_value "$T/kmsraw.bin" "$DIRECT" /leak/kms/k2
python3 - "$T/kmsraw.bin" "$T/kmsbad.bin" <<'PY'
import sys
v = open(sys.argv[1], "rb").read()
pre_end = v.index(b":", len(b"k8s:enc:kms:v2:")) + 1  # k8s:enc:kms:v2:<name>:
pre, b = v[:pre_end], bytearray(v[pre_end:])
def varint(i):
    x = s = 0
    while True:
        c = b[i]; i += 1; x |= (c & 0x7F) << s; s += 7
        if not c & 0x80: return x, i
i = 0
while i < len(b):  # flip a byte in field 3 (encryptedDEKSource): the plugin's Decrypt fails
    tag, i = varint(i)
    if tag & 7 == 0: _, i = varint(i); continue
    n, i = varint(i)
    if tag >> 3 == 3: b[i + n // 2] ^= 0x5A
    i += n
open(sys.argv[2], "wb").write(pre + bytes(b))
PY
ectl "$DIRECT" put /leak/kms/corrupt <"$T/kmsbad.bin" >/dev/null
BADKEYS=(gcm/plain gcm/garbage gcm/wrong kms/corrupt)
{
  for k in "${BADKEYS[@]}"; do
    echo "get /leak/$k"
    echo "txn cmp /leak/$k value = $M-x then get /leak/$k else get /leak/$k end"
  done
  echo "get /leak/ prefix"
  echo "get /leak/gcm/ prefix sort=value"
} >"$T/bad.cmds"
ec bad -f "$T/bad.cmds"
for k in "${BADKEYS[@]}"; do ctl "bad-${k//\//_}" get "/leak/$k"; done
berr=$(wc -l <"$S/ec-bad.errors")
bctl=$(cat "$S"/ctl-bad-*.err | grep -c .)
if [ "$berr" -ge $((2 * ${#BADKEYS[@]} + 2)) ] && [ "$bctl" -ge ${#BADKEYS[@]} ]; then
  pass "workload: undecryptable/plaintext/wrong-key/corrupt-KMS values refused ($berr client errors, $bctl etcdctl error lines)"
else
  fail "workload: bad values refused" "$berr it_enc_client error lines (want >= $((2 * ${#BADKEYS[@]} + 2))), $bctl etcdctl error lines"
fi
dump_admin

# ------------------------------------------------------------------ commands, good and bad input
# cmd NAME [--stdin FILE] ARGS...: etcdseal ARGS, stdout and stderr both scanned.
cmd() {
  local name=$1 in=/dev/null
  shift
  if [ "$1" = --stdin ]; then
    in=$2
    shift 2
  fi
  timeout -k 2 60 "$ES_BIN" "$@" <"$in" >"$S/cmd-$name.out" 2>"$S/cmd-$name.err"
  echo $? >"$T/cmd-$name.rc"
}
rc_of() { cat "$T/cmd-$1.rc"; }
cmd cc-good check-config --encryption-provider-config "$CFG"
for b in "${BADS[@]}"; do cmd "cc-$b" check-config --encryption-provider-config "$T/$b.yaml"; done
cmd cc-parse check-config --encryption-provider-config "$T/bad-short.yaml" --parse-only
printf '%s' "$M-cmd-enc" >"$T/pt.txt"
cmd enc-good --stdin "$T/pt.txt" encrypt --encryption-provider-config "$CFG" --key /leak/gcm/cmd
cmd enc-nokey --stdin "$T/pt.txt" encrypt --encryption-provider-config "$CFG" --key /other/x
for b in "${BADS[@]}"; do
  cmd "enc-$b" --stdin "$T/pt.txt" encrypt --encryption-provider-config "$T/$b.yaml" --key /leak/gcm/x
done
# decrypt: success (stdout is the plaintext by design: only stderr scanned), then bad input
timeout 30 "$ES_BIN" decrypt --encryption-provider-config "$CFG" --key /leak/gcm/cmd \
  <"$S/cmd-enc-good.out" >"$T/dec-good.out" 2>"$S/dec-good.err"
if cmp -s "$T/dec-good.out" "$T/pt.txt"; then pass "commands: encrypt | decrypt round trip"; else
  fail "commands: encrypt | decrypt round trip" "$(head -c 200 "$S/dec-good.err")"; fi
cmd dec-wrong --stdin "$T/wrong.bin" decrypt --encryption-provider-config "$CFG" --key /leak/gcm/wrong
cmd dec-plain --stdin "$T/pt.txt" decrypt --encryption-provider-config "$CFG" --key /leak/gcm/x
cmd dec-aad --stdin "$S/cmd-enc-good.out" decrypt --encryption-provider-config "$CFG" --key /leak/gcm/other
cmd dec-kms --stdin "$T/kmsbad.bin" decrypt --encryption-provider-config "$CFG" --key /leak/kms/corrupt
head -c 300 /dev/urandom >"$T/junk.bin"
cmd dec-junk --stdin "$T/junk.bin" decrypt --encryption-provider-config "$CFG" --key /leak/cbc/x
cmd dec-b64 --stdin "$T/pt.txt" decrypt --encryption-provider-config "$CFG" --key /leak/cbc/x --base64
cmd verify-table verify --endpoints "$DIRECT" --encryption-provider-config "$CFG"
cmd verify-json verify --endpoints "$DIRECT" --encryption-provider-config "$CFG" -o json
cmd verify-badcfg verify --endpoints "$DIRECT" --encryption-provider-config "$T/bad-short.yaml"
cmd rewrap-dry rewrap --endpoints "$DIRECT" --encryption-provider-config "$CFG" --dry-run
cmd rewrap rewrap --endpoints "$DIRECT" --encryption-provider-config "$CFG"
cmd rewrap-wrong rewrap --endpoints "$DIRECT" --encryption-provider-config "$WRONG" --prefix /leak/gcm/
crashed=$(grep -lE '^(1[3-9][0-9]|2[0-9][0-9])$' "$T"/cmd-*.rc 2>/dev/null | sed 's#.*/cmd-##; s#\.rc$##' | tr '\n' ' ')
if [ -z "$crashed" ]; then pass "commands: none killed by a signal"; else
  fail "commands: killed by a signal (exit >= 128)" "$crashed"
  for c in $crashed; do note "$c: exit $(rc_of "$c")"; done
fi
bad_rc=0
for c in cc-bad-short cc-bad-b64 cc-bad-yaml cc-bad-provider enc-nokey enc-bad-short dec-wrong \
  dec-plain dec-aad dec-kms dec-junk verify-table verify-json verify-badcfg rewrap; do
  [ "$(rc_of "$c")" != 0 ] || { bad_rc=1; note "etcdseal $c exited 0"; }
done
if [ "$(rc_of cc-good)" = 0 ] && [ "$(rc_of enc-good)" = 0 ] && [ "$bad_rc" = 0 ]; then
  pass "commands: good input exits 0, every bad input exits non-zero (check-config/encrypt/decrypt/verify/rewrap)"
else
  fail "commands: exit codes" "cc-good=$(rc_of cc-good) enc-good=$(rc_of enc-good), see notes"
fi

# ------------------------------------------------------------------ reloads
reloads_failed() { grep -c 'reload failed' "$PLOG"; }
failed_above() { [ "$(reloads_failed)" -gt "$1" ]; }
nfail0=$(reloads_failed)
for b in "${BADS[@]}"; do
  cp "$T/$b.yaml" "$CFG"
  chmod 600 "$CFG"
  n=$(reloads_failed)
  kill -HUP "$PROXY_PID"
  wait_until 5 failed_above "$n"
done
nfail=$(($(reloads_failed) - nfail0))
enc_cfg "$CFG" "$GCM2" # rotation: gcm-b writes, gcm-a reads
kill -HUP "$PROXY_PID"
reloaded() { grep -q 'encryption configuration reloaded' "$PLOG"; }
wait_until 5 reloaded
ec after -f - <<EOC
put /leak/gcm/rot $M-gcm-rot prev
get /leak/gcm/k2
get /leak/gcm/rot
EOC
if [ "$nfail" -eq ${#BADS[@]} ] && reloaded && alive "$PROXY_PID" &&
  [ "$(grep -c "$M-gcm" "$T/ec-after.out")" -ge 2 ] && [ ! -s "$S/ec-after.errors" ]; then
  pass "workload: ${#BADS[@]} broken reloads refused, rotation reload applied, traffic goes on"
else
  fail "workload: reloads" "$nfail of ${#BADS[@]} failures logged, reloaded=$(reloaded && echo yes || echo no)"
  show_log "$PLOG" 5
fi
# overwrite/delete the remaining bad values with prev (watchers see prev of undecryptable values)
ec overwrite -f - <<EOC
put /leak/gcm/wrong $M-over-1 prev
put /leak/gcm/garbage $M-over-2 prev
del /leak/kms/corrupt prev
EOC
dump_admin

# ------------------------------------------------------------------ stop everything, collect
kill -USR1 "$PLUGIN_PID" 2>/dev/null
sleep 0.3
stop_pid "$W1" 3
stop_pid "$W2" 3
cp "$T/watch1.out.err" "$S/ctl-watch.err" 2>/dev/null
grep -i 'error' "$T/ec-watch.out" >"$S/ec-watch.errors"
stop_pid "$PROXY_PID" 10
stop_pid "$PLUGIN_PID" 5
cp "$PLOG" "$S/proxy.log"
nwatch=$(grep -c "$M" "$T/ec-watch.out")
if [ "$nwatch" -gt $((4 * N)) ]; then pass "workload: watch with prev saw $nwatch marker events"; else
  fail "workload: watch" "$nwatch marker events"; fi
plines=$(wc -l <"$S/proxy.log")
dbg=$(grep -c 'level=debug' "$S/proxy.log")
klines=$(wc -l <"$S/plugin.log")
if [ "$dbg" -gt 0 ] && [ "$klines" -gt 0 ]; then
  pass "collected: proxy log $plines lines ($dbg debug), plugin log $klines lines, $(find "$S" -type f | wc -l) files"
else
  fail "collected logs" "proxy log $plines lines ($dbg debug), plugin log $klines lines"
fi

# positive control: the scanner finds each needle form it claims to look for
python3 - "$NEEDLES" "$T/control.txt" <<'PY'
import base64, sys
out = open(sys.argv[2], "w")
for line in open(sys.argv[1]):
    label, kind, value = line.rstrip("\n").split("\t", 2)
    if kind == "b64":
        raw = base64.b64decode(value + "=" * (-len(value) % 4))
        out.write("x=%s\n" % base64.urlsafe_b64encode(raw).decode())
    elif kind == "hex":
        out.write("x=%s\n" % value)
    else:
        out.write("x=%s\n" % base64.b64encode(value.encode()).decode())
PY
nneed=$(wc -l <"$NEEDLES")
nctl=$(python3 "$SCAN" "$NEEDLES" "$T/control.txt" | awk '/^HIT/ {print $2}' | sort -u | wc -l)
if [ "$nctl" -eq "$nneed" ]; then pass "scanner control: each of the $nneed needles found when planted (in another encoding)"; else
  fail "scanner control" "$nctl of $nneed planted needles found"; fi

mapfile -t files < <(find "$S" -type f | sort)
if python3 "$SCAN" "$NEEDLES" "${files[@]}" >"$T/scan.out" 2>&1; then
  pass "no key bytes, KEK bytes or plaintext markers in ${#files[@]} product outputs ($(tail -1 "$T/scan.out"))"
else
  fail "secrets in product output" "$(tail -1 "$T/scan.out")"
  grep '^HIT' "$T/scan.out" | sed "s#$S/##" | head -40 | sed 's/^/  | /'
fi
# the repo's keys must not show up in this file's outputs either
if python3 "$SCAN" "$NEEDLES_SUITE" "${files[@]}" >"$T/scan2.out" 2>&1; then
  pass "no repo test key in this workload's outputs"
else
  fail "repo test keys in this workload's outputs" "$(tail -1 "$T/scan2.out")"
  grep '^HIT' "$T/scan2.out" | head -20 | sed 's/^/  | /'
fi
