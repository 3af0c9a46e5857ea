#!/usr/bin/env bash
# kms_plugin_test.sh - the bundled KMS v2 plugin (`etcdseal kms-plugin`) as an operator runs it,
# driven over its unix socket by tests/tools/it_kms_client (gRPC core, the v2 API):
#   file backend:   Status / Encrypt / Decrypt round trip, tampered ciphertext and unknown key_id
#                   refused, UNIMPLEMENTED for other methods, exact call counts on SIGUSR1 and at
#                   exit, clean SIGTERM (socket removed), rotation with --old-key-file, key file
#                   mode refusal, abstract socket, stale socket file, parallel clients
#   pkcs11 backend: a SoftHSM2 token made by this test; key made by `kms-plugin --generate-key`,
#                   round trip, tamper/unknown key_id, rotation to a new --key-label (a key made by
#                   pkcs11-tool when installed) with old ciphertext still decrypting, PIN file mode
#                   refusal, wrong PIN refusal
#   everywhere:     no plaintext or key bytes in any plugin log; per-call latency from the logs
set -u
. "$(dirname "$0")/lib.sh"
KC="$ES_TOOLS/it_kms_client"
MODULE=${ETCDSEAL_PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
[ -x "$ES_BIN" ] || die "$ES_BIN missing (make)"
[ -x "$KC" ] || die "$KC missing (make)"
"$ES_BIN" kms-plugin --help >/dev/null 2>&1 || die "etcdseal kms-plugin --help failed"
pass kms_plugin_help

_N=0
# start_plugin ADDR ARGS...: starts the plugin on ADDR, waits (10 s) until Status answers.
# Sets PLUGIN_PID, PLUGIN_LOG. Returns 1 (log shown) if it exits or never answers.
start_plugin() {
  local addr=$1
  shift
  _N=$((_N + 1))
  PLUGIN_LOG=$T/plugin-$_N.log
  bg "$ES_BIN" kms-plugin --listen "$addr" "$@" 2>"$PLUGIN_LOG"
  PLUGIN_PID=$BG_PID
  if ! wait_until 10 "$KC" --addr "$addr" --timeout-ms 500 status; then
    note "plugin did not answer Status:"
    show_log "$PLUGIN_LOG"
    return 1
  fi
}
kc() { "$KC" --addr "$ADDR" "$@"; }
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p"; } # field NAME < line
rand_hex() { head -c "$1" /dev/urandom | od -An -tx1 -v | tr -d ' \n'; }
flip_byte() { # HEX POS: flips the low bit of byte POS
  local h=$1 p=$(($2 * 2)) b
  b=$(printf '%02x' $((0x${h:p:2} ^ 1)))
  echo "${h:0:p}$b${h:p+2}"
}
PLAINTEXTS=()
# roundtrip NAME: Encrypt 32 random bytes, Decrypt them back; sets CT, CT_KEY_ID.
roundtrip() {
  local name=$1 pt out back status_id
  pt=$(rand_hex 32)
  PLAINTEXTS+=("$pt")
  status_id=$(kc status | field key_id)
  out=$(kc encrypt "$pt")
  CT=$(echo "$out" | field ciphertext)
  CT_KEY_ID=$(echo "$out" | field key_id)
  back=$(kc decrypt "$CT_KEY_ID" "$CT" | field plaintext)
  if [ -n "$CT" ] && [ "$back" = "$pt" ] && [ "$CT_KEY_ID" = "$status_id" ] &&
    [ ${#CT} -le 2048 ] && [ "$CT" != "$pt" ]; then
    pass "$name"
  else
    fail "$name" "encrypt: $out; status key_id $status_id; decrypt gave ${back:-nothing}"
  fi
}
# expect_code NAME CODE ARGS...: the call fails with gRPC status CODE.
expect_code() {
  local name=$1 code=$2 out
  shift 2
  out=$(kc "$@")
  if [ "$(echo "$out" | field code)" = "$code" ]; then pass "$name"; else fail "$name" "got: $out"; fi
}
# counts_line PID LOG WHEN: the last "kms-plugin calls" line for WHEN (usr1 waits up to 3 s).
counts_line() {
  local pid=$1 log=$2 when=$3 n
  if [ "$when" = usr1 ]; then
    n=$(grep -c 'when=usr1' "$log")
    kill -USR1 "$pid"
    wait_until 3 test "$(grep -c 'when=usr1' "$log")" -gt "$n"
  fi
  grep "msg=\"kms-plugin calls\" when=$when" "$log" | tail -1
}
# stop_plugin NAME: SIGTERM; PASS NAME if it exits 0 within 5 s with an exit counts line.
stop_plugin() {
  local name=$1
  kill -TERM "$PLUGIN_PID"
  if wait_exit "$PLUGIN_PID" 5 && [ "$EXIT_RC" = 0 ] && grep -q 'when=exit' "$PLUGIN_LOG"; then
    pass "$name"
  else
    fail "$name" "rc=${EXIT_RC:-timeout}"
    show_log "$PLUGIN_LOG"
    stop_pid "$PLUGIN_PID" 1 KILL
  fi
}

# ================================================================== file backend
head -c 32 /dev/urandom >"$T/key-a"
chmod 600 "$T/key-a"
ADDR=unix://$T/file.sock
start_plugin "$ADDR" --backend file --key-file "$T/key-a" || die "file plugin did not start"
st=$(kc status)
if [[ "$st" =~ ^version=v2\ healthz=ok\ key_id=file:sha256:[0-9a-f]{32}$ ]]; then
  pass file_status
else
  fail file_status "$st"
fi
KEY_A_ID=$(echo "$st" | field key_id)
roundtrip file_roundtrip
CT_A=$CT
expect_code file_tampered_ciphertext_invalid_argument 3 decrypt "$KEY_A_ID" "$(flip_byte "$CT" 20)"
expect_code file_tampered_tag_invalid_argument 3 decrypt "$KEY_A_ID" "$(flip_byte "$CT" 60)"
expect_code file_truncated_invalid_argument 3 decrypt "$KEY_A_ID" "${CT:0:40}"
expect_code file_unknown_key_id_not_found 5 decrypt "file:sha256:00000000000000000000000000000000" "$CT"
expect_code file_empty_plaintext_refused 3 encrypt ""
expect_code unknown_method_unimplemented 12 raw /v2.KeyManagementService/Rotate
expect_code v1_method_unimplemented 12 raw /v1beta1.KeyManagementService/Version
# calls so far: Status = start_plugin's (>=1) + file_status + roundtrip(1); Encrypt 1;
# Decrypt 1 + 4 failed; Encrypt failed 1; unimplemented 2 (failed too).
line=$(counts_line "$PLUGIN_PID" "$PLUGIN_LOG" usr1)
st_n=$(grep -c 'method=Status' "$PLUGIN_LOG")
want="status=$st_n encrypt=2 decrypt=5 failed=7 unimplemented=2"
if [[ "$line" == *"$want"* ]] && [ "$st_n" -ge 3 ]; then pass file_counts_on_usr1; else fail file_counts_on_usr1 "want $want; got $line"; fi
# the exact-count property the proxy tests rely on: N Encrypts are counted as N
for i in 1 2 3 4 5; do kc encrypt "$(rand_hex 32)" >/dev/null; done
line=$(counts_line "$PLUGIN_PID" "$PLUGIN_LOG" usr1)
if [[ "$line" == *" encrypt=7 "* ]]; then pass file_counts_exact; else fail file_counts_exact "$line"; fi
# parallel clients: all 16 answered correctly
for i in $(seq 1 16); do
  (pt=$(rand_hex 32); o=$(kc encrypt "$pt"); c=$(echo "$o" | field ciphertext)
   [ "$(kc decrypt "$KEY_A_ID" "$c" | field plaintext)" = "$pt" ] && touch "$T/par-$i") &
done
wait_until 20 test "$(ls "$T"/par-* 2>/dev/null | wc -l)" -ge 16
n=$(ls "$T"/par-* 2>/dev/null | wc -l)
if [ "$n" = 16 ]; then pass file_parallel_clients_16; else fail file_parallel_clients_16 "$n/16"; fi
stop_plugin file_sigterm_clean_exit
line=$(grep 'when=exit' "$PLUGIN_LOG" | tail -1)
if [[ "$line" == *" encrypt=23 decrypt=21 "* ]]; then pass file_counts_at_exit; else fail file_counts_at_exit "$line"; fi
if [ ! -e "$T/file.sock" ]; then pass file_socket_removed_on_exit; else fail file_socket_removed_on_exit; fi

# rotation: new key file, the old one kept for Decrypt
head -c 32 /dev/urandom | base64 >"$T/key-b"
chmod 600 "$T/key-b"
start_plugin "$ADDR" --backend file --key-file "$T/key-b" --old-key-file "$T/key-a" ||
  fail file_rotation_start
KEY_B_ID=$(kc status | field key_id)
back=$(kc decrypt "$KEY_A_ID" "$CT_A" | field plaintext)
if [ -n "$KEY_B_ID" ] && [ "$KEY_B_ID" != "$KEY_A_ID" ] && [ "$back" = "${PLAINTEXTS[0]}" ]; then
  pass file_rotation_new_key_id_old_ciphertext_decrypts
else
  fail file_rotation_new_key_id_old_ciphertext_decrypts "a=$KEY_A_ID b=$KEY_B_ID back=$back"
fi
roundtrip file_rotated_roundtrip
# SIGKILL leaves a stale socket file; the next start must take the path over
kill -KILL "$PLUGIN_PID"
wait_exit "$PLUGIN_PID" 5 2>/dev/null
start_plugin "$ADDR" --backend file --key-file "$T/key-b" && pass file_stale_socket_reused ||
  fail file_stale_socket_reused
# without the old key: old ciphertext is refused, not garbage
expect_code file_without_old_key_not_found 5 decrypt "$KEY_A_ID" "$CT_A"
stop_plugin file_second_sigterm

# refusals at start: key file readable by others, missing flags, bad listen address
chmod 644 "$T/key-b"
timeout 10 "$ES_BIN" kms-plugin --listen "unix://$T/x.sock" --backend file --key-file "$T/key-b" \
  >"$T/out" 2>"$T/err"
rc=$?
if [ $rc = 1 ] && grep -q '0644' "$T/err" && grep -q 'chmod 0600' "$T/err" && [ ! -e "$T/x.sock" ]; then
  pass file_key_mode_0644_refused
else
  fail file_key_mode_0644_refused "rc=$rc $(cat "$T/err")"
fi
chmod 600 "$T/key-b"
i=0
for args in "--backend file" "--listen unix://$T/y.sock --backend file" \
  "--listen tcp://127.0.0.1:1 --backend file --key-file $T/key-b" \
  "--listen unix://$T/y.sock --backend vault --key-file $T/key-b" \
  "--listen unix://$T/y.sock --backend file --key-file $T/key-b --key-label x"; do
  # shellcheck disable=SC2086
  timeout 10 "$ES_BIN" kms-plugin $args >/dev/null 2>"$T/err"
  rc=$?
  i=$((i + 1))
  if [ $rc != 0 ] && [ -s "$T/err" ]; then pass "bad_flags_refused_$i"; else fail "bad_flags_refused_$i" "rc=$rc: $args"; fi
done

# abstract socket, kube style unix:///@name
ADDR="unix:///@etcdseal-it-kms-$$"
if start_plugin "$ADDR" --backend file --key-file "$T/key-b" --key-id team-kek-b; then
  st=$(kc status)
  if [ "$(echo "$st" | field key_id)" = team-kek-b ]; then pass file_abstract_socket_custom_key_id; else fail file_abstract_socket_custom_key_id "$st"; fi
  roundtrip file_abstract_roundtrip
  stop_plugin file_abstract_sigterm
else
  fail file_abstract_socket_custom_key_id "did not start"
fi

# ================================================================== pkcs11 backend
if ! command -v softhsm2-util >/dev/null 2>&1 || [ ! -r "$MODULE" ]; then
  skip pkcs11_backend "SoftHSM2 not installed (apt-get install softhsm2; module $MODULE)"
else
  mkdir -p "$T/tokens"
  printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$T" \
    >"$T/softhsm2.conf"
  export SOFTHSM2_CONF=$T/softhsm2.conf
  softhsm2-util --init-token --free --label etcdseal-it --pin 2468 --so-pin 97531 >"$T/init.log" 2>&1 ||
    die "softhsm2-util --init-token failed: $(cat "$T/init.log")"
  echo 2468 >"$T/pin"
  chmod 600 "$T/pin"
  P11=(--backend pkcs11 --pkcs11-module "$MODULE" --token-label etcdseal-it --pin-file "$T/pin")
  KID1=$("$ES_BIN" kms-plugin "${P11[@]}" --key-label kek-1 --generate-key 2>"$T/err")
  if [[ "$KID1" =~ ^pkcs11:etcdseal-it/kek-1/[0-9a-f]{16}$ ]]; then pass pkcs11_generate_key; else fail pkcs11_generate_key "$KID1 $(cat "$T/err")"; fi
  "$ES_BIN" kms-plugin "${P11[@]}" --key-label kek-1 --generate-key >/dev/null 2>"$T/err"
  if [ $? = 1 ] && grep -q 'already exists' "$T/err"; then pass pkcs11_generate_key_twice_refused; else fail pkcs11_generate_key_twice_refused; fi

  ADDR=unix://$T/p11.sock
  start_plugin "$ADDR" "${P11[@]}" --key-label kek-1 || die "pkcs11 plugin did not start"
  st=$(kc status)
  if [ "$st" = "version=v2 healthz=ok key_id=$KID1" ]; then pass pkcs11_status; else fail pkcs11_status "$st"; fi
  roundtrip pkcs11_roundtrip
  CT1=$CT
  PT1=${PLAINTEXTS[${#PLAINTEXTS[@]} - 1]}
  expect_code pkcs11_tampered_ciphertext_invalid_argument 3 decrypt "$KID1" "$(flip_byte "$CT" 30)"
  expect_code pkcs11_tampered_iv_invalid_argument 3 decrypt "$KID1" "$(flip_byte "$CT" 5)"
  expect_code pkcs11_unknown_key_id_not_found 5 decrypt "pkcs11:etcdseal-it/kek-9/0011" "$CT"
  expect_code pkcs11_foreign_key_id_not_found 5 decrypt "$KEY_A_ID" "$CT"
  roundtrip pkcs11_roundtrip_after_errors
  stop_plugin pkcs11_sigterm_clean_exit

  # rotation: a second key (made by opensc's pkcs11-tool when present), new label -> new key_id
  if command -v pkcs11-tool >/dev/null 2>&1; then
    pkcs11-tool --module "$MODULE" --token-label etcdseal-it --login --pin 2468 --keygen \
      --key-type AES:32 --label kek-2 --id 0b0b >/dev/null 2>"$T/err" || fail pkcs11_tool_keygen "$(cat "$T/err")"
  else
    note "pkcs11-tool not installed; second key made with --generate-key"
    "$ES_BIN" kms-plugin "${P11[@]}" --key-label kek-2 --generate-key >/dev/null
  fi
  start_plugin "$ADDR" "${P11[@]}" --key-label kek-2 || fail pkcs11_rotation_start
  KID2=$(kc status | field key_id)
  back=$(kc decrypt "$KID1" "$CT1" | field plaintext)
  if [[ "$KID2" == pkcs11:etcdseal-it/kek-2/* ]] && [ "$back" = "$PT1" ]; then
    pass pkcs11_rotation_new_key_id_old_ciphertext_decrypts
  else
    fail pkcs11_rotation_new_key_id_old_ciphertext_decrypts "kid2=$KID2 back=$back"
  fi
  roundtrip pkcs11_rotated_roundtrip
  CT2=$CT
  KID2_CT=$CT_KEY_ID
  # old key_id with the new key's ciphertext: the key_id is bound to the ciphertext
  expect_code pkcs11_key_id_bound_to_ciphertext 3 decrypt "$KID1" "$CT2"
  stop_plugin pkcs11_rotation_sigterm
  # explicit --decrypt-key-label and a restart: both generations decrypt
  start_plugin "$ADDR" "${P11[@]}" --key-label kek-2 --decrypt-key-label kek-1 ||
    fail pkcs11_decrypt_key_label_start
  b1=$(kc decrypt "$KID1" "$CT1" | field plaintext)
  b2=$(kc decrypt "$KID2_CT" "$CT2" | field plaintext)
  if [ "$b1" = "$PT1" ] && [ -n "$b2" ] && [ "$(kc status | field key_id)" = "$KID2" ]; then
    pass pkcs11_restart_both_generations_decrypt
  else
    fail pkcs11_restart_both_generations_decrypt "b1=$b1 b2=$b2"
  fi
  stop_plugin pkcs11_third_sigterm

  # PIN file readable by others / wrong PIN: refused at start, PIN never printed
  chmod 640 "$T/pin"
  timeout 10 "$ES_BIN" kms-plugin --listen "unix://$T/z.sock" "${P11[@]}" --key-label kek-1 \
    >/dev/null 2>"$T/err"
  rc=$?
  if [ $rc = 1 ] && grep -q -- '--pin-file' "$T/err" && grep -q 0640 "$T/err" && [ ! -e "$T/z.sock" ]; then
    pass pkcs11_pin_file_mode_refused
  else
    fail pkcs11_pin_file_mode_refused "rc=$rc $(cat "$T/err")"
  fi
  echo 1111 >"$T/badpin"
  chmod 600 "$T/badpin"
  timeout 10 "$ES_BIN" kms-plugin --listen "unix://$T/z.sock" --backend pkcs11 --pkcs11-module "$MODULE" \
    --token-label etcdseal-it --pin-file "$T/badpin" --key-label kek-1 >/dev/null 2>"$T/err"
  rc=$?
  if [ $rc = 1 ] && grep -q CKR_PIN_INCORRECT "$T/err" && ! grep -q 1111 "$T/err"; then
    pass pkcs11_wrong_pin_refused
  else
    fail pkcs11_wrong_pin_refused "rc=$rc $(cat "$T/err")"
  fi
fi

# ================================================================== every log
leak=0
for pt in "${PLAINTEXTS[@]}"; do
  grep -qi "$pt" "$T"/plugin-*.log && leak=1
done
# key-a is raw, key-b base64 text: look for both keys' bytes in hex and in base64
base64 -d <"$T/key-b" >"$T/key-b.raw"
for k in key-a key-b.raw; do
  kh=$(od -An -tx1 -v "$T/$k" | tr -d ' \n')
  grep -qi "$kh" "$T"/plugin-*.log && leak=1
  grep -qF "$(base64 -w0 <"$T/$k")" "$T"/plugin-*.log && leak=1
done
if [ $leak = 0 ] && [ ${#PLAINTEXTS[@]} -gt 0 ]; then pass no_plaintext_or_key_in_logs; else fail no_plaintext_or_key_in_logs; fi
if grep -lE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$T"/plugin-*.log >"$T/san" 2>/dev/null; then
  fail plugin_sanitizer_clean "$(cat "$T/san")"
else
  pass plugin_sanitizer_clean
fi
# one log line per call, with latency: report the median Encrypt/Decrypt per backend
for b in file pkcs11; do
  files=$(grep -l "backend=$b" "$T"/plugin-*.log 2>/dev/null)
  [ -n "$files" ] || continue
  for m in Encrypt Decrypt; do
    # shellcheck disable=SC2086
    med=$(grep -h "method=$m .*code=0 " $files | field ms | sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]}')
    note "median $b $m: ${med:-n/a} ms"
  done
done
exit 0
