#!/usr/bin/env bash
# faults_subset_test.sh - the fast subset of the fault suite (make test-faults runs all of
# tests/faults/*_fault.sh): the checker's own negative checks, then etcd leader kill, KMS plugin
# kill, etcdseal SIGKILL restart under load and broken reloads. Each scenario's PASS/FAIL lines are
# passed through. Under ~1 minute.
source "$(dirname "$0")/lib.sh"
source tests/faults/lib_faults.sh
require_checker

# the checker must be able to fail: a lost acknowledged write, a value from the past and
# plaintext under a protected prefix are all reported
start_etcd e0
DIRECT=$ETCD_EP_e0
"$FC" run -a "$DIRECT" -p /self/ -k 8 -d 1 -o "$T/self.state" >/dev/null 2>&1
awk '{print $1, $2 + 5, $3 + 5}' "$T/self.state" >"$T/ahead.state"
if "$FC" verify -a "$DIRECT" -p /self/ -k 8 -d 5 -o "$T/ahead.state" 2>"$T/self.err" >/dev/null; then
  fail "checker self-test: an acknowledged write newer than the stored value" "not reported"
else
  grep -q 'went back in time' "$T/self.err" && pass "checker self-test: a lost acknowledged write is reported" ||
    fail "checker self-test" "$(head -2 "$T/self.err")"
fi
ectl "$DIRECT" del /self/k3 >/dev/null
if "$FC" verify -a "$DIRECT" -p /self/ -k 8 -d 5 -o "$T/self.state" 2>"$T/self.err" >/dev/null ||
  ! grep -q 'k3 missing' "$T/self.err"; then
  fail "checker self-test: a deleted acknowledged key" "not reported: $(head -2 "$T/self.err")"
else
  pass "checker self-test: a missing acknowledged key is reported"
fi
if "$FC" scan -a "$DIRECT" -p /self/ -d 5 >/dev/null 2>"$T/scan.err"; then
  fail "checker self-test: plaintext in a raw scan" "not reported"
else
  pass "checker self-test: plaintext in a raw scan is reported"
fi
stop_pid "$ETCD_PID_e0" 5

# run_scenario NAME [ENV=VALUE...]: one tests/faults script; its result lines pass through, and an
# exit status without a FAIL line is a FAIL of its own
run_scenario() {
  local s=$1 rc
  shift
  env "$@" bash "tests/faults/${s}_fault.sh" >"$T/$s.log" 2>&1
  rc=$?
  grep -E '^(PASS|FAIL|SKIP|  )' "$T/$s.log"
  if [ "$rc" != 0 ] && ! grep -q '^FAIL' "$T/$s.log"; then
    fail "$s scenario" "exited $rc without a FAIL line"
    show_log "$T/$s.log"
  fi
}
run_scenario leader_kill
run_scenario proxy_sigkill
run_scenario reload_broken
run_scenario kms_plugin KMS_ONLY=kill
