#!/usr/bin/env bash
# kms_proxy_test.sh - KMS v2 end to end through the proxy with the bundled plugin
# (`etcdseal kms-plugin`), once with the file backend and once with the pkcs11 backend on a
# SoftHSM2 token this test sets up, then with two plugin endpoints whose first one is down.
#
# Per backend (one etcd, one prefix and one plugin per backend; proxies restarted as needed):
#   put/get through the proxy; raw value starts with k8s:enc:kms:v2:<name>: and holds the key_id,
#   no plaintext; 10,000 puts (it_enc_client -f) cost exactly ONE plugin Encrypt (the plugin's own
#   counters, read on SIGUSR1); proxy restart: reading every old value costs exactly one Decrypt
#   per seed (seeds counted independently from the raw EncryptedObjects); plugin SIGKILLed: reads
#   under cached seeds go on, writes go on until the shortened expiry (ETCDSEAL_KMS_TIMING
#   expiry=3) then fail UNAVAILABLE, /healthz/kms-providers 503 naming the provider, no plaintext
#   in etcd (raw scan); plugin back: writes resume in the same proxy process; KEK rotation in the
#   plugin (new key file / key label, old key kept): next Status -> new seed (one more Encrypt),
#   old values read fine and count in etcdseal_stale_reads_total, fresh ones do not; proxy restart
#   after rotation: every value reads, one Decrypt per seed under both key ids.
# Failover: `endpoint:` a dead socket, `endpoints: [live]`: put/get, one Encrypt, restart + read
# costs one Decrypt, all through the second endpoint; health 200.
# Every value written is MARKER + (key without the prefix), so reads are checked exactly.
source "$(dirname "$0")/lib.sh"
source tests/integration/fixtures/encrypt/enc_helpers.sh
require_proxy
require_enc_client
KC=$ES_TOOLS/it_kms_client
KFIX=tests/integration/fixtures/kms
MODULE=${ETCDSEAL_PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
[ -x "$KC" ] || die "$KC missing (make)"
"$ES_BIN" kms-plugin --help >/dev/null 2>&1 || die "etcdseal kms-plugin --help failed"
export ETCDSEAL_KMS_TIMING="healthy=1,unhealthy=0.5,expiry=3,negative=1"
EXPIRY_MS=3000
MARKER="plaintext-marker-$$-"
start_etcd e0
DIRECT=$ETCD_EP_e0

# ------------------------------------------------------------------ helpers
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p"; } # field NAME < line (unique names only)
fieldv() { echo "$2" | sed -n "s/.*\(^\| \)$1=\([^ ]*\).*/\2/p"; }

_PN=0
# start_plugin ADDR ARGS...: the bundled plugin on ADDR, up to 10 s for Status; PLUGIN_PID/LOG.
start_plugin() {
  local addr=$1
  shift
  _PN=$((_PN + 1))
  PLUGIN_LOG=$T/plugin-$_PN.log
  bg "$ES_BIN" kms-plugin --listen "$addr" "$@" 2>"$PLUGIN_LOG"
  PLUGIN_PID=$BG_PID
  disown "$PLUGIN_PID" # no "Killed" job notice when the test SIGKILLs it
  if ! wait_until 10 "$KC" --addr "$addr" --timeout-ms 500 status; then
    note "plugin did not answer Status:"
    show_log "$PLUGIN_LOG"
    return 1
  fi
}
# plugin_counts: SIGUSR1 to PLUGIN_PID, waits (3 s) for the new counts line; sets P_ENC P_DEC and
# P_LINE (the counts as logged).
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
# kms_config FILE NAME ENDPOINT [MORE_ENDPOINT]: EncryptionConfiguration, prefix /NAME/ -> kms v2.
kms_config() {
  local f=$1 name=$2 ep=$3 more=${4:-}
  {
    echo "apiVersion: apiserver.config.k8s.io/v1"
    echo "kind: EncryptionConfiguration"
    echo "resources:"
    echo "  - resources: [/$name/]"
    echo "    providers:"
    echo "      - kms:"
    echo "          apiVersion: v2"
    echo "          name: $name"
    echo "          endpoint: $ep"
    [ -n "$more" ] && echo "          endpoints: ['$more']"
    echo "          timeout: 3s"
  } >"$f"
  chmod 600 "$f"
}
kms_healthz() { http_code "http://$ADMIN/healthz/kms-providers"; }
kms_healthz_is() { [ "$(kms_healthz)" = "$1" ]; } # for wait_until (re-evaluated every poll)
usr1_lines_above() { [ "$(grep -c 'when=usr1' "$PLUGIN_LOG")" -gt "$1" ]; }
# proxy_up CONF: a proxy on new ports in front of $DIRECT; VIA, ADMIN; ready and KMS healthy.
proxy_up() {
  ports 2
  start_proxy --endpoints "$DIRECT" --listen-addr "127.0.0.1:${PORTS[0]}" \
    --metrics-addr "127.0.0.1:${PORTS[1]}" --encryption-provider-config "$1" || return 1
  VIA=127.0.0.1:${PORTS[0]}
  ADMIN=127.0.0.1:${PORTS[1]}
  wait_ready "$ADMIN" 15 || { note "/readyz not 200"; show_log "$PROXY_LOG"; return 1; }
  wait_until 10 kms_healthz_is 200 || { note "/healthz/kms-providers not 200"; show_log "$PROXY_LOG"; return 1; }
}
ec() { "$ENC_CLIENT" -a "$VIA" -t 10 "$@"; }
# puts FILE PFX NAME FROM TO: command file putting PFX/NAME/i = MARKER NAME/i
puts_file() {
  awk -v p="$2" -v n="$3" -v m="$MARKER" -v a="$4" -v b="$5" \
    'BEGIN { for (i = a; i <= b; i++) printf "put %s/%s/%d %s%s/%d\n", p, n, i, m, n, i }' >"$1"
}
gets_file() { # FILE PFX NAME FROM TO STEP
  awk -v p="$2" -v n="$3" -v a="$4" -v b="$5" -v s="$6" \
    'BEGIN { for (i = a; i <= b; i += s) printf "get %s/%s/%d\n", p, n, i }' >"$1"
}
# read_check NAME PFX WANT CMDFILE|-- ARGS: runs the gets through the proxy and checks every value.
read_check() {
  local name=$1 pfx=$2 want=$3 res
  shift 3
  if [ "$1" = -- ]; then
    shift
    ec "$@" >"$T/rc.out" 2>&1
  else
    ec -f "$1" >"$T/rc.out" 2>&1
  fi
  res=$(python3 "$KFIX/kms_check_range.py" "$pfx/" "$MARKER" "$want" <"$T/rc.out")
  if [ $? = 0 ]; then pass "$name ($res)"; else fail "$name" "$res; want $want kvs"; fi
}
# raw_summary PFX NAME: RAW = kms_raw.py line for every key under PFX/ straight from etcd.
raw_summary() {
  RAW=$(ECTL_TIMEOUT=60 ectl "$DIRECT" get "$1/" --prefix -w json 2>/dev/null |
    python3 "$KFIX/kms_raw.py" "$2" "$MARKER")
}
stale_total() { local s; s=$(metric_sum "$ADMIN" '^etcdseal_stale_reads_total'); echo "${s:-0}"; }

# ------------------------------------------------------------------ one backend, end to end
# run_backend LABEL NAME: plugin flags in ARGS_A (first key) and ARGS_B (rotated key + old key).
run_backend() {
  local b=$1 name=$2 pfx=/$2 addr conf out got kid_a kid_b i t_kill t_fail nput nstale d0 e0 s0 s1 s2 seeds ok
  addr=unix://$T/$b.sock
  conf=$T/$b.yaml
  start_plugin "$addr" "${ARGS_A[@]}" || {
    fail "$b: plugin start" "see log above"
    return
  }
  kid_a=$("$KC" --addr "$addr" status | field key_id)
  kms_config "$conf" "$name" "$addr"
  proxy_up "$conf" || {
    fail "$b: proxy with kms v2 start" "see log above"
    return
  }

  # --- put/get, raw format
  out=$(ectl "$VIA" put "$pfx/one" "${MARKER}one" 2>&1)
  got=$(ectl "$VIA" get "$pfx/one" --print-value-only 2>&1)
  if [ "$out" = OK ] && [ "$got" = "${MARKER}one" ]; then pass "$b: put/get through the proxy"; else fail "$b: put/get through the proxy" "put: $out; get: $got"; fi
  if raw_value "$T/raw" "$DIRECT" "$pfx/one" && starts_with "$T/raw" "k8s:enc:kms:v2:$name:"; then
    pass "$b: raw value starts with k8s:enc:kms:v2:$name:"
  else
    fail "$b: raw value prefix" "starts with: $(head -c 40 "$T/raw" | od -An -c | head -2 | tr -s ' ')"
  fi
  if grep -qF "$kid_a" "$T/raw" && ! grep -qF "$MARKER" "$T/raw"; then
    pass "$b: raw value names key_id $kid_a and holds no plaintext"
  else
    fail "$b: raw value key_id/plaintext" "key_id $kid_a present: $(grep -cF "$kid_a" "$T/raw"); plaintext present: $(grep -cF "$MARKER" "$T/raw")"
  fi

  # --- 10,000 puts, one Encrypt
  puts_file "$T/bulk.cmd" "$pfx" bulk 1 10000
  local t0
  t0=$(now_ms)
  ec -t 60 -f "$T/bulk.cmd" >"$T/bulk.out" 2>&1
  local rc=$? ms=$(($(now_ms) - t0))
  local nok
  nok=$(grep -c '^{"op":"put","rev":' "$T/bulk.out")
  if [ $rc = 0 ] && [ "$nok" = 10000 ]; then
    pass "$b: 10,000 puts through the proxy acknowledged ($ms ms)"
  else
    fail "$b: 10,000 puts" "rc=$rc ok=$nok $(grep -m1 error "$T/bulk.out" | head -c 300)"
  fi
  plugin_counts
  if [ "$P_ENC" = 1 ]; then
    pass "$b: 10,001 puts cost exactly one plugin Encrypt ($P_LINE)"
  else
    fail "$b: 10,001 puts cost exactly one plugin Encrypt" "plugin: $P_LINE"
  fi
  read_check "$b: the 10,000 values read back through the same proxy" "$pfx" 10000 -- get "$pfx/bulk/" prefix

  # --- restart etcdseal: one Decrypt per seed
  stop_pid "$PROXY_PID" 10
  proxy_up "$conf" || {
    fail "$b: proxy restart" "see log above"
    return
  }
  plugin_counts
  d0=$P_DEC e0=$P_ENC
  gets_file "$T/gets.cmd" "$pfx" bulk 1 10000 50
  read_check "$b: restart: 200 old values, one get each" "$pfx" 200 "$T/gets.cmd"
  read_check "$b: restart: all 10,000 old values in one range" "$pfx" 10000 -- get "$pfx/bulk/" prefix
  plugin_counts
  if [ $((P_DEC - d0)) = 1 ] && [ "$P_ENC" = "$e0" ]; then
    pass "$b: restart: reading 10,200 old values cost exactly one Decrypt ($P_LINE)"
  else
    fail "$b: restart: one Decrypt for one seed" "decrypts $((P_DEC - d0)), encrypts $((P_ENC - e0)); plugin: $P_LINE"
  fi
  # a second seed (this proxy's), then a cold proxy reads both
  puts_file "$T/s2.cmd" "$pfx" s2 1 100
  ec -f "$T/s2.cmd" >"$T/s2.out" 2>&1 || fail "$b: 100 puts under the second seed" "$(grep -m1 error "$T/s2.out")"
  stop_pid "$PROXY_PID" 10
  proxy_up "$conf" || {
    fail "$b: proxy restart" "see log above"
    return
  }
  raw_summary "$pfx" "$name"
  seeds=$(fieldv seeds "$RAW")
  plugin_counts
  d0=$P_DEC
  read_check "$b: cold proxy: every value under two seeds" "$pfx" 10101 -- get "$pfx/" prefix
  plugin_counts
  if [ "$seeds" = 2 ] && [ $((P_DEC - d0)) = 2 ]; then
    pass "$b: cold proxy: 10,101 values under 2 seeds cost exactly 2 Decrypts (raw: $RAW)"
  else
    fail "$b: cold proxy: one Decrypt per seed" "decrypts $((P_DEC - d0)) for raw $RAW"
  fi

  # --- plugin killed
  kill -KILL "$PLUGIN_PID"
  t_kill=$(now_ms)
  wait_exit "$PLUGIN_PID" 5
  out=$(ec put "$pfx/down/0" "${MARKER}down/0" 2>&1)
  if [[ "$out" == '{"op":"put","rev":'* ]]; then
    pass "$b: plugin killed: a write right after still works ($(($(now_ms) - t_kill)) ms after the kill)"
  else
    fail "$b: plugin killed: write right after" "$out"
  fi
  gets_file "$T/down-gets.cmd" "$pfx" bulk 7 10000 500
  gets_file "$T/down-gets2.cmd" "$pfx" s2 3 100 10
  cat "$T/down-gets2.cmd" >>"$T/down-gets.cmd"
  read_check "$b: plugin killed: reads under both cached seeds work" "$pfx" 30 "$T/down-gets.cmd"
  nput=1 t_fail=""
  for ((i = 1; i <= 200; i++)); do
    out=$(ec put "$pfx/down/$i" "${MARKER}down/$i" 2>&1)
    if [[ "$out" != '{"op":"put","rev":'* ]]; then
      t_fail=$(now_ms)
      break
    fi
    nput=$((nput + 1))
    [ $(($(now_ms) - t_kill)) -gt 20000 ] && break
    nap 0.1
  done
  local lived=$((${t_fail:-$(now_ms)} - t_kill))
  if [ -n "$t_fail" ] && [[ "$out" == *'"code":14,'* ]] && [ "$lived" -ge $((EXPIRY_MS - 1300)) ] &&
    [ "$lived" -le $((EXPIRY_MS + 4000)) ]; then
    pass "$b: plugin killed: writes kept working $lived ms ($nput puts), then UNAVAILABLE (expiry ${EXPIRY_MS} ms)"
  else
    fail "$b: plugin killed: writes until the expiry, then UNAVAILABLE" "after $lived ms and $nput puts: $out"
  fi
  if [[ "$out" == *"$name"* ]] && [[ "$out" == *"$pfx/down/$i"* ]] && [[ "$out" != *"$MARKER"* ]]; then
    pass "$b: refused write names the provider and the key, no plaintext"
  else
    fail "$b: refused write message" "$out"
  fi
  if ! raw_value "$T/raw" "$DIRECT" "$pfx/down/$i"; then pass "$b: refused write not in etcd"; else fail "$b: refused write not in etcd" "$pfx/down/$i exists"; fi
  read_check "$b: plugin down past the expiry: reads under cached seeds still work" "$pfx" 30 "$T/down-gets.cmd"
  wait_until 5 kms_healthz_is 503
  out=$(curl -s -m 3 "http://$ADMIN/healthz/kms-providers")
  if [ "$(kms_healthz)" = 503 ] && [[ "$out" == *"$name"* ]]; then
    pass "$b: /healthz/kms-providers 503 naming the provider"
  else
    fail "$b: /healthz/kms-providers 503 naming the provider" "code $(kms_healthz): $out"
  fi
  raw_summary "$pfx" "$name"
  local want_n=$((1 + 10000 + 100 + nput))
  if [ "$RAW" != "" ] && [ "$(fieldv count "$RAW")" = "$want_n" ] && [ "$(fieldv bad_prefix "$RAW")" = 0 ] &&
    [ "$(fieldv marker_hits "$RAW")" = 0 ] && [ "$(fieldv bad_proto "$RAW")" = 0 ]; then
    pass "$b: raw scan after the outage: $want_n values, all k8s:enc:kms:v2:$name:, no plaintext ($RAW)"
  else
    fail "$b: raw scan after the outage" "want count=$want_n, 0 bad; got $RAW"
  fi

  # --- plugin back, same proxy process
  local proxy_pid=$PROXY_PID
  start_plugin "$addr" "${ARGS_A[@]}" || fail "$b: plugin restart" "see log"
  t0=$(now_ms)
  if wait_until 10 ec put "$pfx/back/1" "${MARKER}back/1"; then
    pass "$b: plugin back: writes resume in the same proxy ($(($(now_ms) - t0)) ms after the plugin answered)"
  else
    fail "$b: plugin back: writes resume" "$(ec put "$pfx/back/1" "${MARKER}back/1" 2>&1)"
  fi
  if alive "$proxy_pid" && [ "$PROXY_PID" = "$proxy_pid" ] && wait_until 5 kms_healthz_is 200; then
    pass "$b: plugin back: same proxy process, /healthz/kms-providers 200"
  else
    fail "$b: plugin back: proxy health" "alive=$(alive "$proxy_pid" && echo yes) healthz=$(kms_healthz)"
  fi
  read_check "$b: plugin back: old values read" "$pfx" 30 "$T/down-gets.cmd"

  # --- KEK rotation in the plugin
  stop_pid "$PLUGIN_PID" 5
  start_plugin "$addr" "${ARGS_B[@]}" || fail "$b: plugin start with the rotated key" "see log"
  kid_b=$("$KC" --addr "$addr" status | field key_id)
  if [ -n "$kid_b" ] && [ "$kid_b" != "$kid_a" ]; then pass "$b: rotated plugin reports a new key_id ($kid_b)"; else fail "$b: rotated key_id" "a=$kid_a b=$kid_b"; fi
  ok=""
  t0=$(now_ms)
  for ((i = 1; i <= 60; i++)); do
    ec put "$pfx/rot/$i" "${MARKER}rot/$i" >/dev/null 2>&1
    if raw_value "$T/raw" "$DIRECT" "$pfx/rot/$i" && grep -qF "$kid_b" "$T/raw"; then
      ok=$i
      break
    fi
    nap 0.2
  done
  if [ -n "$ok" ]; then pass "$b: rotation: writes use the new key_id $(($(now_ms) - t0)) ms after the plugin restart"; else fail "$b: rotation: writes use the new key_id" "none of 60 puts within $(($(now_ms) - t0)) ms"; fi
  puts_file "$T/rot.cmd" "$pfx" rotb 1 100
  ec -f "$T/rot.cmd" >"$T/rot.out" 2>&1 || fail "$b: 100 puts after rotation" "$(grep -m1 error "$T/rot.out")"
  plugin_counts
  if [ "$P_ENC" = 1 ]; then
    pass "$b: rotation: a new seed, exactly one more Encrypt for $((ok + 100)) puts ($P_LINE)"
  else
    fail "$b: rotation: exactly one Encrypt" "plugin: $P_LINE"
  fi
  s0=$(stale_total)
  gets_file "$T/old.cmd" "$pfx" bulk 11 10000 500
  read_check "$b: rotation: 20 values under the old key read" "$pfx" 20 "$T/old.cmd"
  s1=$(stale_total)
  gets_file "$T/new.cmd" "$pfx" rotb 1 100 5
  read_check "$b: rotation: 20 values under the new key read" "$pfx" 20 "$T/new.cmd"
  s2=$(stale_total)
  if [ $((s1 - s0)) = 20 ] && [ $((s2 - s1)) = 0 ]; then
    pass "$b: rotation: etcdseal_stale_reads_total +20 for 20 old values, +0 for 20 new ($s0 -> $s1 -> $s2)"
  else
    fail "$b: rotation: stale reads counted" "old reads +$((s1 - s0)) (want 20), new reads +$((s2 - s1)) (want 0)"
  fi
  nstale=$s2

  # --- cold proxy after rotation: old key still decryptable in the plugin
  stop_pid "$PROXY_PID" 10
  proxy_up "$conf" || {
    fail "$b: proxy restart after rotation" "see log above"
    return
  }
  raw_summary "$pfx" "$name"
  seeds=$(fieldv seeds "$RAW")
  plugin_counts
  d0=$P_DEC
  read_check "$b: cold proxy after rotation: every value reads" "$pfx" "$(fieldv count "$RAW")" -- get "$pfx/" prefix
  plugin_counts
  if [ -n "$seeds" ] && [ "$seeds" -ge 3 ] && [ $((P_DEC - d0)) = "$seeds" ] && [[ "$(fieldv key_ids "$RAW")" == *"$kid_a"* ]] &&
    [[ "$(fieldv key_ids "$RAW")" == *"$kid_b"* ]]; then
    pass "$b: cold proxy after rotation: one Decrypt per seed, $seeds seeds under both key ids"
  else
    fail "$b: cold proxy after rotation: one Decrypt per seed" "decrypts $((P_DEC - d0)); raw $RAW"
  fi
  note "$b: stale reads counted before the restart: $nstale"
  stop_pid "$PROXY_PID" 10
  stop_pid "$PLUGIN_PID" 5
}

# ================================================================== file backend
head -c 32 /dev/urandom >"$T/key-a"
head -c 32 /dev/urandom | base64 >"$T/key-b"
chmod 600 "$T/key-a" "$T/key-b"
ARGS_A=(--backend file --key-file "$T/key-a")
ARGS_B=(--backend file --key-file "$T/key-b" --old-key-file "$T/key-a")
run_backend file kmsfile

# ================================================================== pkcs11 backend (SoftHSM2)
if ! command -v softhsm2-util >/dev/null 2>&1 || [ ! -r "$MODULE" ]; then
  fail "pkcs11 backend" "SoftHSM2 not installed (apt-get install softhsm2; module $MODULE)"
else
  mkdir -p "$T/tokens"
  printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$T" \
    >"$T/softhsm2.conf"
  export SOFTHSM2_CONF=$T/softhsm2.conf
  softhsm2-util --init-token --free --label etcdseal-kp --pin 3579 --so-pin 86420 >"$T/init.log" 2>&1 ||
    die "softhsm2-util --init-token failed: $(cat "$T/init.log")"
  echo 3579 >"$T/pin"
  chmod 600 "$T/pin"
  P11=(--backend pkcs11 --pkcs11-module "$MODULE" --token-label etcdseal-kp --pin-file "$T/pin")
  for k in kek-1 kek-2; do
    "$ES_BIN" kms-plugin "${P11[@]}" --key-label "$k" --generate-key >"$T/$k.id" 2>"$T/gen.err" ||
      die "kms-plugin --generate-key $k failed: $(cat "$T/gen.err")"
  done
  ARGS_A=("${P11[@]}" --key-label kek-1)
  ARGS_B=("${P11[@]}" --key-label kek-2)
  run_backend pkcs11 kmshsm
fi

# ================================================================== two endpoints, first down
head -c 32 /dev/urandom >"$T/key-f"
chmod 600 "$T/key-f"
FADDR=unix://$T/second.sock
if start_plugin "$FADDR" --backend file --key-file "$T/key-f"; then
  kms_config "$T/failover.yaml" kmsfo "unix://$T/first-down.sock" "$FADDR"
  if proxy_up "$T/failover.yaml"; then
    pass "failover: proxy ready and /healthz/kms-providers 200 with the first endpoint down"
    puts_file "$T/fo.cmd" /kmsfo fo 1 500
    ec -f "$T/fo.cmd" >"$T/fo.out" 2>&1
    n=$(grep -c '^{"op":"put","rev":' "$T/fo.out")
    check "failover: 500 puts through the second endpoint ($n ok)" test "$n" = 500
    read_check "failover: 500 values read" /kmsfo 500 -- get /kmsfo/fo/ prefix
    raw_summary /kmsfo kmsfo
    check "failover: raw values k8s:enc:kms:v2:kmsfo:, no plaintext ($RAW)" \
      test "$(fieldv count "$RAW")" = 500 -a "$(fieldv bad_prefix "$RAW")" = 0 -a "$(fieldv marker_hits "$RAW")" = 0
    plugin_counts
    check "failover: the second endpoint served exactly one Encrypt ($P_LINE)" test "$P_ENC" = 1
    stop_pid "$PROXY_PID" 10
    if proxy_up "$T/failover.yaml"; then
      plugin_counts
      d0=$P_DEC
      # the first reads come from 4 clients at once (4 connections, spread over the workers)
      for c in 0 1 2 3; do
        gets_file "$T/fo-$c.cmd" /kmsfo fo $((c + 1)) 500 4
        ec -f "$T/fo-$c.cmd" >"$T/fo-$c.out" 2>&1 &
        FO_PIDS[c]=$!
      done
      for c in 0 1 2 3; do wait "${FO_PIDS[c]}"; done
      cat "$T"/fo-[0-3].out >"$T/fo-all.out"
      res=$(python3 "$KFIX/kms_check_range.py" /kmsfo/ "$MARKER" 500 <"$T/fo-all.out")
      check "failover: cold proxy, 4 concurrent clients read every value ($res)" test $? = 0
      read_check "failover: cold proxy reads every value in one range" /kmsfo 500 -- get /kmsfo/fo/ prefix
      plugin_counts
      check "failover: cold concurrent reads cost one Decrypt at the second endpoint ($P_LINE)" test $((P_DEC - d0)) = 1
    else
      fail "failover: proxy restart" "see log above"
    fi
    stop_pid "$PROXY_PID" 10
  else
    fail "failover: proxy with the first endpoint down" "see log above"
  fi
  stop_pid "$PLUGIN_PID" 5
else
  fail "failover: plugin start" "see log above"
fi

# the plugins are this build's binary too: sanitizer reports (ASan build) and leaked secrets
if grep -lE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$T"/plugin-*.log >"$T/san" 2>/dev/null; then
  fail "plugins sanitizer clean" "$(tr '\n' ' ' <"$T/san")"
else
  pass "plugins sanitizer clean ($_PN plugin runs)"
fi
if grep -qF "$MARKER" "$T"/plugin-*.log "$T"/proxy-*.log; then
  fail "no plaintext in plugin or proxy logs" "$(grep -lF "$MARKER" "$T"/plugin-*.log "$T"/proxy-*.log | tr '\n' ' ')"
else
  pass "no plaintext in plugin or proxy logs"
fi
exit 0
