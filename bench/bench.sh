#!/usr/bin/env bash
# bench.sh - `make bench` / `make bench-quick`: etcd direct vs etcd's grpc-proxy vs etcdseal, with
# etcd's own `benchmark` tool, through ../shared/bench/anchor.sh (which alternates endpoints round
# by round so drift is shared, and reruns runs that other processes disturbed).
#
# etcdseal runs in three modes, one anchor run each (every run measures direct and grpc-proxy
# again, so ratios are always from the same run):
#   plain   no encryption rules (pass-through relay)
#   aesgcm  aesgcm on every key (the '*' rule; identity as read fallback for seeded plaintext)
#   kmsv2   KMS v2 on every key through the bundled plugin (file backend)
# Output: the tables, also written to bench/results/<date>-<cpu>.md.
# Env: QUICK=1 (short run), MODES="plain aesgcm kmsv2", WORKLOADS (anchor's names), SHARED.
set -u
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
ANCHOR=$SHARED/bench/anchor.sh
MODES=${MODES:-plain aesgcm kmsv2}
[ -f "$ANCHOR" ] || { echo "bench: $ANCHOR not found (set SHARED)" >&2; exit 2; }
[ -x build/etcdseal ] || { echo "bench: build/etcdseal missing (make first)" >&2; exit 2; }
WORK=$(mktemp -d /tmp/etcdseal-bench.XXXXXX)
PLUGIN_PID=""
cleanup() {
  [ -n "$PLUGIN_PID" ] && kill "$PLUGIN_PID" 2>/dev/null && wait "$PLUGIN_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
umask 077
cp build/etcdseal "$WORK/etcdseal" # a rebuild during the run must not change the binary
key=$(openssl rand -base64 32)
cat >"$WORK/aesgcm.yaml" <<YAML
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: ['*']
    providers:
      - aesgcm:
          keys:
            - name: bench
              secret: $key
      - identity: {}
YAML
head -c 32 /dev/urandom >"$WORK/kek.bin"
cat >"$WORK/kmsv2.yaml" <<YAML
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: ['*']
    providers:
      - kms:
          apiVersion: v2
          name: bench
          endpoint: unix://$WORK/kms.sock
          timeout: 3s
      - identity: {}
YAML
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//; s/[^A-Za-z0-9]\+/-/g' | cut -c1-40)
mkdir -p bench/results
out=bench/results/$(date -u +%Y%m%d-%H%M)-${cpu}.md
{
  echo "# etcdseal benchmark $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "$(nproc) cores, $cpu; $(etcd --version | head -1); QUICK=${QUICK:-0}; commit $(git rev-parse --short HEAD 2>/dev/null)"
} >"$out"
for mode in $MODES; do
  extra=""
  case $mode in
    plain) ;;
    aesgcm) extra="--encryption-provider-config $WORK/aesgcm.yaml" ;;
    kmsv2)
      "$WORK/etcdseal" kms-plugin --listen "unix://$WORK/kms.sock" --backend file \
        --key-file "$WORK/kek.bin" >"$WORK/plugin.log" 2>&1 &
      PLUGIN_PID=$!
      for _ in $(seq 1 50); do [ -S "$WORK/kms.sock" ] && break; sleep 0.1; done
      extra="--encryption-provider-config $WORK/kmsv2.yaml"
      ;;
    *) echo "bench: unknown mode $mode" >&2; exit 2 ;;
  esac
  echo "== mode $mode" >&2
  TARGET_ENDPOINT=127.0.0.1:23794 TARGET_NAME=es-$mode \
    TARGET_CMD="exec $WORK/etcdseal proxy --endpoints \"\$ETCD_ENDPOINT\" --listen-addr 127.0.0.1:23794 $extra" \
    bash "$ANCHOR" >"$WORK/$mode.out" 2>"$WORK/$mode.err"
  rc=$?
  {
    echo
    echo "## etcdseal mode: $mode (anchor exit $rc)"
    echo
    echo '```'
    sed -n '/^== etcd direct/,/^Columns:/p' "$WORK/$mode.out" | grep -v '^Columns:'
    grep -E '^WARNING|shared-machine guard' "$WORK/$mode.out"
    echo '```'
  } >>"$out"
  if [ "$mode" = kmsv2 ]; then
    echo "KMS plugin calls during the run: Encrypt=$(grep -c 'method=Encrypt' "$WORK/plugin.log"), Decrypt=$(grep -c 'method=Decrypt' "$WORK/plugin.log")" >>"$out"
    kill "$PLUGIN_PID" 2>/dev/null
    wait "$PLUGIN_PID" 2>/dev/null
    PLUGIN_PID=""
  fi
done
cat "$out"
echo
echo "written to $out"
