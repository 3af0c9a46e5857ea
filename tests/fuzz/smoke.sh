#!/usr/bin/env bash
# smoke.sh - runs every libFuzzer target in build-fuzz/ for FUZZ_TIME seconds (default 20) on
# its seed corpus under tests/fuzz/corpus/<target>/, printing PASS/FAIL/SKIP lines.
# FUZZ_RUNS=N with FUZZ_SEED=S makes the run a deterministic regression run (`make test`: the same
# N mutations every time, so a green tree stays green); without them it explores (`make fuzz`).
set -u
cd "$(dirname "$0")/../.."
T=${FUZZ_TIME:-20}
found=0
for bin in build-fuzz/*_fuzz; do
  [ -x "$bin" ] || continue
  found=1
  name=$(basename "$bin")
  corpus=tests/fuzz/corpus/${name%_fuzz}
  work=$(mktemp -d)
  [ -d "$corpus" ] && cp -r "$corpus"/. "$work"/ 2>/dev/null
  det=()
  [ -n "${FUZZ_RUNS:-}" ] && det=(-runs="$FUZZ_RUNS" -seed="${FUZZ_SEED:-1}")
  if "$bin" "${det[@]}" -max_total_time="$T" -print_final_stats=1 -rss_limit_mb=2048 -artifact_prefix="build-fuzz/$name-" "$work" \
      >"build-fuzz/$name.log" 2>&1; then
    execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "build-fuzz/$name.log" | awk '{print $2}')
    cov=$(grep -o 'cov: [0-9]*' "build-fuzz/$name.log" | tail -1 | awk '{print $2}')
    echo "PASS fuzz $name (${execs:-?} execs${FUZZ_RUNS:+, seed ${FUZZ_SEED:-1}} in <= ${T}s, coverage ${cov:-?} edges)"
  else
    echo "FAIL fuzz $name (see build-fuzz/$name.log)"
    tail -30 "build-fuzz/$name.log" | sed 's/^/  /'
  fi
  rm -rf "$work"
done
[ $found = 1 ] || echo "SKIP fuzz: no targets built (build-fuzz/*_fuzz missing)"
exit 0
