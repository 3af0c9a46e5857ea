#!/usr/bin/env bash
# ops_reload_test.sh - hot reload: a put loop through the proxy sees no error during 20 reloads,
# a broken configuration changes nothing, automatic reload picks up a key rotation, a new TLS
# certificate is served to new connections after SIGHUP, and key files readable by others are
# refused (unless --allow-insecure-key-file).
#
# Runbook: one etcd; proxy A (cleartext, encryption on /app/, automatic reload) takes the put
# loop and the reloads; proxy B (TLS listener) takes the certificate rotation.
source "$(dirname "$0")/lib.sh"
require_proxy
start_etcd e0
DIRECT=$ETCD_EP_e0
K1=$(openssl rand -base64 32)
K2=$(openssl rand -base64 32)
CFG=$T/enc.yaml
# write_cfg KEYLINES...: atomically replaces the EncryptionConfiguration (0600, then rename)
write_cfg() {
  {
    printf 'apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n'
    printf '  - resources: ["/app/"]\n    providers:\n      - aesgcm:\n          keys:\n'
    for k in "$@"; do printf '            - %s\n' "$k"; done
  } >"$CFG.tmp"
  chmod 600 "$CFG.tmp"
  mv "$CFG.tmp" "$CFG"
}
raw_prefix() { ectl "$DIRECT" get "$1" --print-value-only 2>/dev/null | head -c 21; }
write_cfg "{name: k1, secret: $K1}"
setup_via "$DIRECT" --encryption-provider-config "$CFG" --encryption-provider-config-automatic-reload
PROXY_A=$PROXY_PID

# ---------------------------------------------------------------- 20 reloads under a put loop
put_loop "$VIA" /app/loop/ "$T/acks" 60
LOOP=$BG_PID
wait_until 10 test -s "$T/acks"
for i in $(seq 1 20); do
  if [ $((i % 2)) = 1 ]; then write_cfg "{name: k2, secret: $K2}" "{name: k1, secret: $K1}"; else write_cfg "{name: k1, secret: $K1}" "{name: k2, secret: $K2}"; fi
  kill -HUP "$PROXY_A"
  nap 0.3
done
touch "$T/stop-acks"
stop_pid "$LOOP" 15
reloads=$(metric_sum "$ADMIN" 'apiserver_encryption_config_controller_automatic_reload_success_total')
errors=$(wc -l <"$T/acks.errors" 2>/dev/null || echo 0)
acked=$(wc -l <"$T/acks")
if [ "${errors:-0}" -eq 0 ] && [ "$acked" -gt 20 ] && [ "${reloads:-0}" -ge 20 ]; then
  pass "20 reloads under a put loop: $acked puts acknowledged, 0 errors ($reloads successful reloads)"
else
  fail "reloads under a put loop" "acked=$acked errors=$errors reloads=$reloads"
fi
bad=0
while read -r n _; do
  v=$(ectl "$VIA" get "/app/loop/$n" --print-value-only 2>&1)
  [ "$v" = "v$n" ] || bad=$((bad + 1))
  case $(raw_prefix "/app/loop/$n") in k8s:enc:aesgcm:v1:k[12]:) ;; *) bad=$((bad + 1)) ;; esac
done < <(awk 'NR % 10 == 1' "$T/acks")
[ "$bad" = 0 ] && pass "every sampled key reads back through the proxy and is stored encrypted" ||
  fail "values after reloads" "$bad bad samples"

# ---------------------------------------------------------------- automatic reload: rotation
write_cfg "{name: k2, secret: $K2}" "{name: k1, secret: $K1}"
nap 0.5
ectl "$VIA" put /app/rot/1 one >/dev/null
write_cfg "{name: k3, secret: $(openssl rand -base64 32)}" "{name: k2, secret: $K2}" "{name: k1, secret: $K1}"
if wait_until 5 sh -c "ETCDCTL_API=3 etcdctl --endpoints $VIA put /app/rot/2 two >/dev/null 2>&1 && ETCDCTL_API=3 etcdctl --endpoints $DIRECT get /app/rot/2 --print-value-only | head -c 21 | grep -q 'k8s:enc:aesgcm:v1:k3:'"; then
  pass "automatic reload: a rotated key file is used for new writes within 5 s"
else
  fail "automatic reload rotation" "raw=$(raw_prefix /app/rot/2)"
fi
[ "$(ectl "$VIA" get /app/rot/1 --print-value-only)" = one ] &&
  pass "values under the previous key still read after rotation" || fail "old value after rotation" ""

# ---------------------------------------------------------------- a broken file changes nothing
fails0=$(metric_sum "$ADMIN" 'apiserver_encryption_config_controller_automatic_reload_failures_total')
printf 'kind: EncryptionConfiguration\nresources: [\n' >"$CFG.tmp"
chmod 600 "$CFG.tmp"
mv "$CFG.tmp" "$CFG"
nap 1
kill -HUP "$PROXY_A"
nap 0.5
fails1=$(metric_sum "$ADMIN" 'apiserver_encryption_config_controller_automatic_reload_failures_total')
ectl "$VIA" put /app/after-broken x >/dev/null 2>&1
if alive "$PROXY_A" && [ "$(ectl "$VIA" get /app/after-broken --print-value-only 2>&1)" = x ] &&
  [ "$(raw_prefix /app/after-broken)" = "k8s:enc:aesgcm:v1:k3:" ] && [ "${fails1:-0}" -gt "${fails0:-0}" ]; then
  pass "broken configuration: reload refused and counted ($fails0 -> $fails1), service intact, still k3"
else
  fail "broken configuration reload" "fails $fails0 -> $fails1; raw=$(raw_prefix /app/after-broken)"
fi
grep -q 'reload failed; the running configuration stays' "$PROXY_LOG" &&
  pass "the failed reload is logged with its reason" || fail "failed reload log line" ""

# ---------------------------------------------------------------- key file permissions
chmod 644 "$CFG"
write_cfg "{name: k1, secret: $K1}"
chmod 644 "$CFG"
ports 1
"$ES_BIN" proxy --endpoints "$DIRECT" --listen-addr "127.0.0.1:${PORTS[0]}" --encryption-provider-config "$CFG" >"$T/insecure.log" 2>&1 &
ipid=$!
track "$ipid"
if wait_exit "$ipid" 10 && [ "$EXIT_RC" != 0 ] && grep -q 'readable by group or others' "$T/insecure.log"; then
  pass "a key file readable by others is refused at start"
else
  fail "insecure key file refused" "$(head -c 300 "$T/insecure.log")"
fi
ports 1
if start_proxy --endpoints "$DIRECT" --listen-addr "127.0.0.1:${PORTS[0]}" --encryption-provider-config "$CFG" --allow-insecure-key-file &&
  grep -q 'INSECURE' "$PROXY_LOG"; then
  pass "--allow-insecure-key-file starts and logs the warning"
else
  fail "--allow-insecure-key-file" "$(head -c 300 "$PROXY_LOG")"
fi
chmod 600 "$CFG"

# ---------------------------------------------------------------- TLS certificate rotation
bash tests/tools/certs.sh "$T/pki1" >/dev/null 2>&1 && bash tests/tools/certs.sh "$T/pki2" >/dev/null 2>&1 ||
  die "cannot make test certificates"
mkdir -p "$T/live"
cp "$T/pki1/server.pem" "$T/live/server.pem"
cp "$T/pki1/server.key" "$T/live/server.key"
ports 1
start_proxy --endpoints "$DIRECT" --listen-addr "127.0.0.1:${PORTS[0]}" \
  --cert-file "$T/live/server.pem" --key-file "$T/live/server.key" || die "TLS proxy did not start"
TLS_PID=$PROXY_PID
TLS_EP=$PROXY_EP
served() { echo | timeout 5 openssl s_client -connect "$TLS_EP" -alpn h2 2>/dev/null | openssl x509 -noout -fingerprint -sha256 2>/dev/null; }
fp1=$(openssl x509 -in "$T/pki1/server.pem" -noout -fingerprint -sha256)
fp2=$(openssl x509 -in "$T/pki2/server.pem" -noout -fingerprint -sha256)
[ "$(served)" = "$fp1" ] && pass "TLS listener serves the first certificate" || fail "first certificate" "$(served)"
cp "$T/pki2/server.pem" "$T/live/server.pem"
cp "$T/pki2/server.key" "$T/live/server.key"
kill -HUP "$TLS_PID"
if wait_until 5 sh -c "[ \"\$(echo | timeout 5 openssl s_client -connect $TLS_EP -alpn h2 2>/dev/null | openssl x509 -noout -fingerprint -sha256 2>/dev/null)\" = '$fp2' ]"; then
  pass "after SIGHUP new connections get the rotated certificate (no restart)"
else
  fail "certificate rotation" "served $(served), want $fp2"
fi
if ectl "$TLS_EP" --cacert "$T/pki2/ca.pem" put /tls/k v >/dev/null 2>&1; then
  pass "etcdctl works through the rotated certificate"
else
  fail "etcdctl with the rotated certificate" "$(ectl "$TLS_EP" --cacert "$T/pki2/ca.pem" put /tls/k v 2>&1 | tail -1)"
fi
