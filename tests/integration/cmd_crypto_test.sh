#!/usr/bin/env bash
# cmd_crypto_test.sh - the offline crypto commands of the built binary, as an operator uses them:
# keygen sizes, check-config output / exit codes / warnings, encrypt|decrypt round trips
# (binary-safe and --base64), and decrypting the Kubernetes vectors with their configuration
# (non-KMS rules; tests/config/vectors-placeholder.yaml). Prints PASS/FAIL/SKIP lines.
set -u
cd "$(dirname "$0")/../.."
BIN=${ETCDSEAL_BIN:-build/etcdseal}
VEC=${ETCDSEAL_VECTORS:-build/vectors.tsv}
SHARED=${ETCDSEAL_SHARED:-../shared}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
ok() { echo "PASS cmd_crypto $1"; }
ko() { echo "FAIL cmd_crypto $1"; [ $# -gt 1 ] && echo "  $2"; }
check() { # name, command...
  local name=$1; shift
  if "$@"; then ok "$name"; else ko "$name"; fi
}

if [ ! -x "$BIN" ]; then echo "FAIL cmd_crypto binary $BIN missing"; exit 1; fi

# ------------------------------------------------------------------ keygen
for spec in aesgcm:16 aesgcm:24 aesgcm:32 aescbc:16 aescbc:32 secretbox:32; do
  p=${spec%%:*}; n=${spec##*:}
  k=$("$BIN" keygen --provider "$p" --bytes "$n" 2>"$T/err"); rc=$?
  len=$(printf '%s' "$k" | base64 -d 2>/dev/null | wc -c)
  if [ $rc = 0 ] && [ "$len" = "$n" ]; then ok "keygen_${p}_$n"; else ko "keygen_${p}_$n" "rc=$rc len=$len"; fi
done
k1=$("$BIN" keygen); k2=$("$BIN" keygen)
check keygen_default_32_random test "$(printf '%s' "$k1" | base64 -d | wc -c)" = 32 -a "$k1" != "$k2"
for bad in "secretbox --bytes 16" "aesgcm --bytes 20" "aescbc --bytes 0" "kms --bytes 32" "aesgcm --bytes x"; do
  # shellcheck disable=SC2086
  "$BIN" keygen --provider $bad >"$T/out" 2>"$T/err"; rc=$?
  if [ $rc = 2 ] && [ ! -s "$T/out" ] && [ -s "$T/err" ]; then ok "keygen_rejects_${bad// /_}"; else ko "keygen_rejects_${bad// /_}" "rc=$rc"; fi
done
check keygen_help "$BIN" keygen --help >/dev/null

# ------------------------------------------------------------------ check-config
mk_conf() { # file, provider yaml for secrets
  cat >"$1" <<EOF
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets, /app/credentials/]
    providers:
$2
  - resources: ['*.*']
    providers:
      - identity: {}
EOF
  chmod 600 "$1"
}
SB=$("$BIN" keygen --provider secretbox)
GCM=$("$BIN" keygen --provider aesgcm --bytes 16)
mk_conf "$T/good.yaml" "      - secretbox: {keys: [{name: sb1, secret: $SB}]}
      - aesgcm: {keys: [{name: old, secret: $GCM}]}"
"$BIN" check-config --encryption-provider-config "$T/good.yaml" >"$T/out" 2>&1; rc=$?
check check_config_valid_exit0 test $rc = 0
check check_config_prints_prefixes grep -q 'prefix: /registry/secrets/' "$T/out"
check check_config_prints_literal grep -q 'prefix: /app/credentials/' "$T/out"
check check_config_prints_chain grep -q 'secretbox\[sb1\], aesgcm\[old\]' "$T/out"
check check_config_no_key_bytes bash -c "! grep -qF -e '$SB' -e '$GCM' '$T/out'"
check check_config_warns_identity_first grep -q 'identity is the first provider' "$T/out"
check check_config_warns_aesgcm grep -q 'rotate the key before about 2^32 writes' "$T/out"
check check_config_no_mode_warning_600 bash -c "! grep -q 'readable by group/others' '$T/out'"
chmod 644 "$T/good.yaml"
"$BIN" check-config --encryption-provider-config "$T/good.yaml" >"$T/out" 2>&1
check check_config_warns_mode_644 grep -q 'readable by group/others (mode 0644)' "$T/out"
chmod 600 "$T/good.yaml"
mk_conf "$T/cbc.yaml" "      - aescbc: {keys: [{name: c, secret: $SB}]}"
"$BIN" check-config --encryption-provider-config "$T/cbc.yaml" >"$T/out" 2>&1
check check_config_warns_aescbc grep -q 'aescbc has no integrity protection' "$T/out"
"$BIN" check-config --encryption-provider-config "$T/good.yaml" --storage-prefix /k8s >"$T/out" 2>&1
check check_config_storage_prefix grep -q 'prefix: /k8s/secrets/' "$T/out"

fails=0; n=0
for f in tests/config/invalid/*.yaml; do
  n=$((n + 1))
  "$BIN" check-config --parse-only --encryption-provider-config "$f" >"$T/out" 2>"$T/err"; rc=$?
  want=$(cat "${f%.yaml}.expect")
  if [ $rc != 1 ] || ! grep -qF -- "$want" "$T/err"; then
    fails=$((fails + 1)); echo "  $f: rc=$rc $(head -c 300 "$T/err")"
  fi
done
if [ $fails = 0 ] && [ $n -ge 25 ]; then ok "check_config_rejects_${n}_invalid_fixtures"; else ko check_config_invalid_fixtures "$fails of $n"; fi
"$BIN" check-config --encryption-provider-config "$T/missing.yaml" >/dev/null 2>"$T/err"
check check_config_missing_file_exit1 test $? = 1
"$BIN" check-config >/dev/null 2>&1
check check_config_usage_exit2 test $? = 2
check check_config_help "$BIN" check-config --help >/dev/null
if [ -f "$SHARED/vectors/encryption-config.yaml" ]; then
  "$BIN" check-config --encryption-provider-config "$SHARED/vectors/encryption-config.yaml" >"$T/out" 2>"$T/err"; rc=$?
  # kms providers load (their plugins are contacted in the background; check-config does not wait)
  check check_config_kms_loads_exit0 test $rc = 0
  check check_config_kms_rule_listed grep -q 'kms v2 "kms2-b"' "$T/out"
  "$BIN" check-config --parse-only --encryption-provider-config "$SHARED/vectors/encryption-config.yaml" >"$T/out" 2>&1
  check check_config_kms_parse_only_exit0 test $? = 0
  check check_config_kms_described grep -q 'kms v2 "kms2-b" (unix:///@k8senc-fake-kms2-b, timeout 3s)' "$T/out"
else
  echo "SKIP cmd_crypto check_config_kms: $SHARED/vectors missing"
fi

# ------------------------------------------------------------------ encrypt / decrypt
C=(--encryption-provider-config "$T/good.yaml")
head -c 70000 /dev/urandom >"$T/plain.bin"
printf '\x00k8s\x00\xff' >>"$T/plain.bin"
"$BIN" encrypt "${C[@]}" --key /registry/secrets/ns/s1 <"$T/plain.bin" >"$T/enc.bin" 2>"$T/err"
check encrypt_binary_exit0 test $? = 0
check encrypt_secretbox_prefix bash -c "head -c 26 '$T/enc.bin' | grep -q '^k8s:enc:secretbox:v1:sb1:'"
"$BIN" decrypt "${C[@]}" --key /registry/secrets/ns/s1 <"$T/enc.bin" >"$T/dec.bin" 2>"$T/err"
check decrypt_binary_roundtrip cmp -s "$T/plain.bin" "$T/dec.bin"
check decrypt_reports_fresh grep -q '^stale=false provider=k8s:enc:secretbox:v1:' "$T/err"
# empty value
"$BIN" encrypt "${C[@]}" --key /registry/secrets/ns/e </dev/null >"$T/e.enc" &&
  "$BIN" decrypt "${C[@]}" --key /registry/secrets/ns/e <"$T/e.enc" >"$T/e.dec" 2>/dev/null
check roundtrip_empty_value test $? = 0 -a ! -s "$T/e.dec" -a -s "$T/e.enc"
# --base64 both ways; literal prefix rule
b=$(printf 'hunter2' | base64 | "$BIN" encrypt "${C[@]}" --key /app/credentials/db --base64)
p=$(printf '%s\n' "$b" | "$BIN" decrypt "${C[@]}" --key /app/credentials/db --base64 2>/dev/null | base64 -d)
check roundtrip_base64_literal_prefix test "$p" = hunter2
# the AAD is not checked by secretbox, but a value under the old aesgcm key is stale
mk_conf "$T/gcm-first.yaml" "      - aesgcm: {keys: [{name: old, secret: $GCM}]}"
printf 'old data' | "$BIN" encrypt --encryption-provider-config "$T/gcm-first.yaml" --key /registry/secrets/a/b >"$T/old.enc"
"$BIN" decrypt "${C[@]}" --key /registry/secrets/a/b <"$T/old.enc" >"$T/old.dec" 2>"$T/err"
check decrypt_stale_second_provider grep -q '^stale=true provider=k8s:enc:aesgcm:v1:' "$T/err"
check decrypt_stale_plaintext test "$(cat "$T/old.dec")" = 'old data'
# aesgcm binds the etcd key: moving the value fails, with a non-zero exit and nothing on stdout
"$BIN" decrypt --encryption-provider-config "$T/gcm-first.yaml" --key /registry/secrets/a/OTHER <"$T/old.enc" >"$T/x" 2>"$T/err"; rc=$?
check decrypt_wrong_key_fails test $rc = 1 -a ! -s "$T/x" -a -s "$T/err"
# tampered value
cp "$T/enc.bin" "$T/bad.bin"; printf '\x01' | dd of="$T/bad.bin" bs=1 seek=100 conv=notrunc 2>/dev/null
"$BIN" decrypt "${C[@]}" --key /registry/secrets/ns/s1 <"$T/bad.bin" >"$T/x" 2>"$T/err"; rc=$?
check decrypt_tampered_fails test $rc = 1 -a ! -s "$T/x"
check errors_do_not_print_plaintext bash -c "! grep -q hunter2 '$T/err'"
# keys no rule covers: encrypt refuses (exit 3) unless --allow-plaintext; decrypt passes through
mk_conf "$T/nostar.yaml" "      - secretbox: {keys: [{name: sb1, secret: $SB}]}"
sed -i '/\*\.\*/,$d' "$T/nostar.yaml"
printf 'x' | "$BIN" encrypt --encryption-provider-config "$T/nostar.yaml" --key /other/key >"$T/x" 2>"$T/err"; rc=$?
check encrypt_uncovered_refused test $rc = 3 -a ! -s "$T/x"
check encrypt_uncovered_message grep -q 'covers key "/other/key"' "$T/err"
out=$(printf 'x' | "$BIN" encrypt --encryption-provider-config "$T/nostar.yaml" --key /other/key --allow-plaintext 2>/dev/null)
check encrypt_allow_plaintext test "$out" = x
out=$(printf 'plain' | "$BIN" decrypt --encryption-provider-config "$T/nostar.yaml" --key /other/key 2>/dev/null)
check decrypt_uncovered_passthrough test "$out" = plain
printf 'k8s:enc:aesgcm:v1:x:yyyy' | "$BIN" decrypt --encryption-provider-config "$T/nostar.yaml" --key /other/key >/dev/null 2>"$T/err"
check decrypt_uncovered_refuses_encrypted test $? = 1
"$BIN" decrypt --encryption-provider-config "$T/good.yaml" >/dev/null 2>&1
check decrypt_usage_exit2 test $? = 2
check encrypt_help "$BIN" encrypt --help >/dev/null
check decrypt_help "$BIN" decrypt --help >/dev/null

# ------------------------------------------------------------------ Kubernetes vectors
VC=tests/config/vectors-placeholder.yaml
if [ -f "$VEC" ]; then
  pos=0; neg=0; bad=0; skip=0
  # tabs -> \x1f: a non-white-space IFS keeps empty fields (empty plaintexts)
  while IFS=$'\x1f' read -r id prov key_b64 gr plain_b64 stored_b64 expected stale _rest; do
    case $prov in kms-*) skip=$((skip + 1)); echo "SKIP cmd_crypto vector $id: KMS vectors need the fake plugins; covered by policy_vectors_test and kms_vectors_proxy_test"; continue ;; esac
    case $id in neg-kmsv1-bad-length|neg-kmsv2-not-protobuf) skip=$((skip + 1)); echo "SKIP cmd_crypto vector $id: KMS rule"; continue ;; esac
    key=$(printf '%s' "$key_b64" | base64 -d)
    got=$(printf '%s' "$stored_b64" | "$BIN" decrypt --encryption-provider-config "$VC" --key "$key" --base64 2>"$T/verr"); rc=$?
    if [ "$expected" = error ]; then
      if [ $rc != 0 ]; then neg=$((neg + 1)); else bad=$((bad + 1)); echo "  $id: negative vector decrypted"; fi
      continue
    fi
    want_stale=false; [ "$stale" = 1 ] && want_stale=true
    if [ $rc = 0 ] && [ "$got" = "$plain_b64" ] && grep -q "^stale=$want_stale " "$T/verr"; then
      pos=$((pos + 1))
    else
      bad=$((bad + 1)); echo "  $id: rc=$rc stale: $(cat "$T/verr")"
    fi
  done < <(tr '\t' '\037' <"$VEC")
  echo "  vectors via decrypt: $pos positive ok, $neg negative rejected, $bad bad, $skip KMS skipped"
  if [ $bad = 0 ] && [ $pos -gt 0 ] && [ $neg -gt 0 ]; then ok "vectors_decrypt_${pos}_positive_${neg}_negative"; else ko vectors_decrypt "$bad bad"; fi
else
  echo "SKIP cmd_crypto vectors: $VEC missing (run make)"
fi
exit 0
