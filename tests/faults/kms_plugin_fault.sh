#!/usr/bin/env bash
# kms_plugin_fault.sh - the KMS v2 plugin fails under a running checker: the bundled plugin
# (`etcdseal kms-plugin --backend file`) is SIGKILLed for longer than the write-state expiry and
# restarted, then SIGSTOPped past the 1 s call timeout and continued; the fake plugin
# (kms_fake_plugin --control) answers errors, then sleeps past the timeout, then recovers.
# Per phase: writes resume within 10 s of the plugin's return; at the end the checker's reads never
# went back in time, no acknowledged write is lost, zero plaintext under the prefix in etcd.
# KMS_ONLY=kill limits the run to the kill phase (the fast subset).
source "$(dirname "$0")/../integration/lib.sh"
source tests/faults/lib_faults.sh
require_checker
export ETCDSEAL_KMS_TIMING="healthy=1,unhealthy=0.5,expiry=3,negative=1"
KC=$ES_TOOLS/it_kms_client
FAKE=$ES_TOOLS/kms_fake_plugin
[ -x "$KC" ] && [ -x "$FAKE" ] || die "$KC or $FAKE missing (make)"
start_etcd e0
DIRECT=$ETCD_EP_e0

kms_config() { # FILE NAME ENDPOINT PREFIX
  {
    printf 'apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n'
    printf '  - resources: ["%s"]\n    providers:\n      - kms:\n' "$4"
    printf '          apiVersion: v2\n          name: %s\n          endpoint: %s\n          timeout: 1s\n' "$2" "$3"
  } >"$1"
  chmod 600 "$1"
}
start_bundled() { # ADDR
  bg "$ES_BIN" kms-plugin --listen "$1" --backend file --key-file "$T/kek" 2>>"$T/plugin.log"
  PLUGIN_PID=$BG_PID
  disown "$PLUGIN_PID"
  wait_until 10 "$KC" --addr "$1" --timeout-ms 500 status
}
kms_healthz_is() { [ "$(http_code "http://$ADMIN/healthz/kms-providers")" = "$1" ]; }
put_fail() { sed -n 's/.*put_fail=\([0-9]*\).*/\1/p' "$T/$1.status" | head -1; }
_fails_above() { [ "$(put_fail "$1")" -gt "$2" ] 2>/dev/null; }

# ------------------------------------------------------------------ bundled plugin
head -c 32 /dev/urandom >"$T/kek"
chmod 600 "$T/kek"
PADDR=unix://$T/kms.sock
start_bundled "$PADDR" || die "bundled kms plugin did not answer Status"
kms_config "$T/kms.yaml" kmsfault "$PADDR" "${FAULT_PREFIX}"
setup_via "$DIRECT" --encryption-provider-config "$T/kms.yaml"
wait_until 10 kms_healthz_is 200 || fail "kms provider healthy" "/healthz/kms-providers not 200"
checker_start kb "$VIA" "${FAULT_PREFIX}kb/" 120
wait_acks kb 200 15 || fail "checker running" "$(cat "$T/kb.status" 2>/dev/null)"

# kill past the expiry: writes must fail (never fall back to plaintext), then resume
f0=$(put_fail kb)
kill -KILL "$PLUGIN_PID"
wait "$PLUGIN_PID" 2>/dev/null
if wait_until 10 _fails_above kb "$f0"; then
  pass "plugin SIGKILLed: writes fail once the write state expires ($(cat "$T/kb.status"))"
else
  fail "plugin SIGKILLed" "no put failed within 10 s (expiry 3 s): $(cat "$T/kb.status")"
fi
wait_until 5 kms_healthz_is 503 && pass "plugin down: /healthz/kms-providers 503" ||
  fail "plugin down: health" "$(http_code "http://$ADMIN/healthz/kms-providers")"
nap 2
start_bundled "$PADDR" || fail "plugin restart" "no Status"
if wait_acks kb 50 10; then pass "plugin restarted: writes resumed within 10 s"; else fail "plugin restarted: writes resumed" "$(cat "$T/kb.status")"; fi

if [ "${KMS_ONLY:-}" != kill ]; then
  # SIGSTOP past the 1 s timeout and the expiry: calls hang, then resume on SIGCONT
  f0=$(put_fail kb)
  kill -STOP "$PLUGIN_PID"
  if wait_until 12 _fails_above kb "$f0"; then pass "plugin SIGSTOPped: writes fail after the expiry"; else fail "plugin SIGSTOPped" "no put failed within 12 s: $(cat "$T/kb.status")"; fi
  kill -CONT "$PLUGIN_PID"
  if wait_acks kb 50 10; then pass "plugin SIGCONT: writes resumed within 10 s"; else fail "plugin SIGCONT: writes resumed" "$(cat "$T/kb.status")"; fi
fi
checker_finish kb
checker_verify kb "$VIA" "${FAULT_PREFIX}kb/"
stop_pid "$PROXY_PID" 10

if [ "${KMS_ONLY:-}" != kill ]; then
  # ---------------------------------------------------------------- fake plugin: errors, slow
  FADDR=unix://$T/fake.sock
  : >"$T/control"
  bg "$FAKE" --listen "$FADDR" --v2 --key "f1=$(head -c 32 /dev/urandom | base64)" --current f1 \
    --control "$T/control" 2>"$T/fake.log"
  wait_until 10 "$KC" --addr "$FADDR" --timeout-ms 500 status || die "fake plugin did not answer"
  kms_config "$T/fake.yaml" kmsfake "$FADDR" "${FAULT_PREFIX}"
  setup_via "$DIRECT" --encryption-provider-config "$T/fake.yaml"
  wait_until 10 kms_healthz_is 200 || fail "fake kms provider healthy" "not 200"
  checker_start kf "$VIA" "${FAULT_PREFIX}kf/" 120
  wait_acks kf 200 15 || fail "checker running (fake plugin)" "$(cat "$T/kf.status" 2>/dev/null)"
  for mode in error unavailable sleep:3000; do
    f0=$(put_fail kf)
    echo "fail=$mode" >"$T/control"
    if wait_until 12 _fails_above kf "$f0"; then pass "fake plugin fail=$mode: writes fail after the expiry"; else fail "fake plugin fail=$mode" "no put failed in 12 s: $(cat "$T/kf.status")"; fi
    echo "fail=none" >"$T/control"
    if wait_acks kf 50 15; then pass "fake plugin recovered from $mode: writes resumed within 15 s"; else fail "fake plugin recovered from $mode" "$(cat "$T/kf.status")"; fi
  done
  checker_finish kf
  checker_verify kf "$VIA" "${FAULT_PREFIX}kf/"
fi
raw_scan_check "$DIRECT" "$FAULT_PREFIX"
