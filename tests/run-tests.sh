#!/usr/bin/env bash
# run-tests.sh - runs unit test binaries and integration scripts, counts PASS/FAIL/SKIP lines,
# and prints the closing line "N passed, N failed, N skipped". Exit 1 on any failure.
#
# Usage: tests/run-tests.sh [--unit DIR]... [--script FILE]... [--integration] [--only PATTERN]
#   --unit DIR      run every executable DIR/*_test (repeatable)
#   --script FILE   run one bash script that prints PASS/FAIL/SKIP lines (repeatable)
#   --integration   run tests/integration/*.sh (each prints PASS/FAIL/SKIP lines)
# Env: ETCDSEAL_BIN (binary under test, default build/etcdseal), TEST_TIMEOUT (s per file, 900)
set -u
cd "$(dirname "$0")/.."
UNIT_DIRS=(); SCRIPTS=(); INTEG=0; ONLY=""
while [ $# -gt 0 ]; do
  case $1 in
    --unit) UNIT_DIRS+=("$2"); shift 2 ;;
    --script) SCRIPTS+=("$2"); shift 2 ;;
    --integration) INTEG=1; shift ;;
    --only) ONLY=$2; shift 2 ;;
    *) echo "usage: $0 [--unit DIR]... [--script FILE]... [--integration] [--only PATTERN]" >&2; exit 2 ;;
  esac
done
LOG_DIR=${TEST_LOG_DIR:-build/test-logs}
mkdir -p "$LOG_DIR"
TIMEOUT=${TEST_TIMEOUT:-900}
pass=0; fail=0; skip=0; failed_names=()

run_file() { # $1 = executable, rest = command
  local name=$1; shift
  local log="$LOG_DIR/$(echo "$name" | tr '/' '_').log" rc
  local t0=$SECONDS
  timeout -k 10 "$TIMEOUT" "$@" >"$log" 2>&1; rc=$?
  local p f s
  p=$(grep -c '^PASS ' "$log"); f=$(grep -c '^FAIL ' "$log"); s=$(grep -c '^SKIP ' "$log")
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    f=1; echo "FAIL $(basename "$name") exited with status $rc (no FAIL line)" >>"$log"
  fi
  if [ "$p" -eq 0 ] && [ "$f" -eq 0 ] && [ "$s" -eq 0 ]; then
    f=1; echo "FAIL $(basename "$name") printed no test result" >>"$log"
  fi
  pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
  printf '%-40s %3d passed %3d failed %3d skipped  (%ds)\n' "$name" "$p" "$f" "$s" $((SECONDS - t0))
  if [ "$f" -gt 0 ]; then
    failed_names+=("$name")
    grep -E '^(FAIL|  )' "$log" | head -40 | sed 's/^/    /'
    echo "    (full log: $log)"
  fi
  grep '^SKIP ' "$log" | sed 's/^/    /'
}

for d in "${UNIT_DIRS[@]}"; do
  for t in "$d"/*_test; do
    [ -x "$t" ] || continue
    [ -n "$ONLY" ] && [[ "$t" != *$ONLY* ]] && continue
    run_file "$d/$(basename "$t")" "$t"
  done
done
for t in "${SCRIPTS[@]}"; do
  run_file "$t" bash "$t"
done
if [ "$INTEG" = 1 ]; then
  for t in tests/integration/*_test.sh; do
    [ -f "$t" ] || continue
    [ -n "$ONLY" ] && [[ "$t" != *$ONLY* ]] && continue
    run_file "$t" bash "$t"
  done
fi
echo
[ ${#failed_names[@]} -gt 0 ] && echo "failed: ${failed_names[*]}"
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
