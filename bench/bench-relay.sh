#!/usr/bin/env bash
# bench-relay.sh - `make bench-relay`: the relay micro-benchmark (build/tools/bench_relay, no etcd)
# natively (ns per relayed Put at 1 and 16 calls in flight) and under callgrind (instructions
# per relayed Put executed by the proxy worker thread: --toggle-collect=worker_main, counters
# zeroed after the warm-up, so the figure is per request and does not depend on the count).
#
# Usage: bench/bench-relay.sh [--quick]
#   full:  native 20,000 requests per line; callgrind 20,000 requests, plain and aesgcm
#   quick: native 5,000; callgrind 1,000, aesgcm only (for `make bench-quick`)
# Env: MODES ("plain aesgcm"), CG_REQUESTS, NATIVE_REQUESTS, VALUE_BYTES (256).
# Prints one line per measurement; exit 1 if any run fails its checks.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/tools/bench_relay
[ -x "$BIN" ] || { echo "bench-relay: $BIN missing (run make first)" >&2; exit 2; }
quick=0
[ "${1:-}" = --quick ] && quick=1
modes=${MODES:-plain aesgcm}
vsize=${VALUE_BYTES:-256}
if [ $quick = 1 ]; then
  native_n=${NATIVE_REQUESTS:-5000}; cg_n=${CG_REQUESTS:-1000}; cg_modes=${CG_MODES:-aesgcm}
else
  native_n=${NATIVE_REQUESTS:-20000}; cg_n=${CG_REQUESTS:-20000}; cg_modes=${CG_MODES:-$modes}
fi
tmp=$(mktemp -d /tmp/etcdseal-bench-relay.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cp "$BIN" "$tmp/bench_relay" # a rebuild during the run must not change the binary

echo "native (ns per relayed Put, wall clock, one proxy worker; other_pct = CPU of other processes meanwhile, % of a core):"
for mode in $modes; do
  for c in 1 16; do
    timeout 300 "$tmp/bench_relay" -m "$mode" -c "$c" -n "$native_n" -w 1000 -s "$vsize"
  done
done
if ! command -v valgrind >/dev/null; then
  echo "callgrind: skipped (valgrind is not installed)"
  exit 0
fi
echo "callgrind (instructions per relayed Put in the proxy worker thread; 1 in flight; value $vsize B):"
for mode in $cg_modes; do
  out=$tmp/cg.$mode.out
  if ! timeout 900 valgrind --tool=callgrind --toggle-collect=worker_main --callgrind-out-file="$out" \
      "$tmp/bench_relay" -m "$mode" -c 1 -n "$cg_n" -w 500 -s "$vsize" >"$tmp/cg.$mode.log" 2>&1; then
    cat "$tmp/cg.$mode.log" >&2
    echo "bench-relay: callgrind run ($mode) failed" >&2
    exit 1
  fi
  # the dump triggered by CALLGRIND_DUMP_STATS_AT("measured") holds exactly the measured calls
  dump=$(grep -l '^desc: Trigger: Client Request: measured' "$out".* 2>/dev/null | head -1)
  [ -n "$dump" ] || { echo "bench-relay: no 'measured' callgrind dump for $mode" >&2; exit 1; }
  awk -v mode="$mode" -v n="$cg_n" '/^totals:/ { printf "callgrind mode=%s requests=%d instructions_per_req=%.0f\n", mode, n, $2 / n }' "$dump"
done
