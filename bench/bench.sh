#!/usr/bin/env bash
# bench.sh - `make bench` / `make bench-quick`: etcd direct vs etcd's grpc-proxy vs etcdseal in
# three modes (plain, aesgcm on every key, kmsv2 through the bundled plugin), all started in ONE
# run and driven round by round with etcd's own `benchmark` tool (bench/harness.py does the
# work), plus the relay micro-benchmark (bench/bench-relay.sh). The report is written to
# bench/results/<YYYYMMDD-HHMM>-<cpu>.md and printed; see docs/benchmarks.md.
#
# Env: QUICK=1 (under 2 minutes: tmpfs only, fewer workloads, short rounds), ROUNDS (3),
#      SCALE (multiplies request totals), WORKLOADS (subset of names), PROXY_ARGS (extra
#      etcdseal proxy flags, e.g. "--workers 2"), IDLE_WATCH_STREAMS (10000; 0 = skip),
#      BENCH_ALLOW_NOISE=1 (write the report even when other processes disturbed runs; it is
#      marked NOISY), RELAY=0 (skip the relay micro-benchmark).
# Exit: 0 written, 2 setup error, 3 refused because the machine was busy.
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=${QUICK:-0}
[ -x build/etcdseal ] || { echo "bench: build/etcdseal missing (run make first)" >&2; exit 2; }
command -v etcd >/dev/null && command -v etcdctl >/dev/null || { echo "bench: etcd/etcdctl not installed" >&2; exit 2; }
BENCH_BIN=$(bash bench/build-etcd-benchmark.sh)

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//; s/[^A-Za-z0-9]\+/-/g; s/-$//' | cut -c1-40)
stamp=$(date -u +%Y%m%d-%H%M)
mkdir -p bench/results
out=bench/results/$stamp-$cpu.md
relay_out=$(mktemp /tmp/etcdseal-bench-relay.XXXXXX)
trap 'rm -f "$relay_out"' EXIT

if [ "${RELAY:-1}" = 1 ] && [ -f bench/bench-relay.sh ]; then
  # Relay micro-benchmark first: it needs no etcd and is the least noisy figure.
  if [ "$QUICK" = 1 ]; then
    bash bench/bench-relay.sh --quick >"$relay_out" || { echo "bench: relay micro-benchmark failed" >&2; exit 2; }
  else
    bash bench/bench-relay.sh >"$relay_out" || { echo "bench: relay micro-benchmark failed" >&2; exit 2; }
  fi
fi

args=(--benchmark "$BENCH_BIN" --out "$out" --rounds "${ROUNDS:-3}" --scale "${SCALE:-1}"
      --idle-watch-streams "${IDLE_WATCH_STREAMS:-10000}" --relay-results "$relay_out"
      --meta "$(date -u +%Y-%m-%dT%H:%MZ)" "$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
             "$(etcd --version | head -1)" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src 2>/dev/null || echo '+dirty src')")
[ "$QUICK" = 1 ] && args+=(--quick --run-timeout 20 --rerun-budget 35)
[ -n "${WORKLOADS:-}" ] && args+=(--workloads "$WORKLOADS")
[ -n "${PROXY_ARGS:-}" ] && args+=(--proxy-args "$PROXY_ARGS")
set +e
python3 bench/harness.py "${args[@]}"
rc=$?
set -e
exit $rc
