#!/usr/bin/env bash
# limits_test.sh - the client limits (issue 8 part 2): --max-header-list-bytes,
# --max-concurrent-streams, --max-connections-per-worker and --max-message-bytes, each exceeded
# on purpose, with the error the client gets, what reaches etcd, and that the proxy (and, where
# the limit is per call, the connection) keeps working.
#
# Runbook: one etcd; one proxy with one worker and small limits (header list 16 KiB, 5 streams
# per connection, 3 connections per worker, 4 KiB messages, aesgcm under /a/ so Put and Range
# messages are reassembled). tests/tools/it_h2_limits (nghttp2 client) drives headers, streams
# and connections precisely; etcdctl drives the message size.
source "$(dirname "$0")/lib.sh"
require_proxy
TOOL=$ES_TOOLS/it_h2_limits
[ -x "$TOOL" ] || die "$TOOL not built (make tools)"
start_etcd e0
DIRECT=$ETCD_EP_e0
umask 077
cat >"$T/enc.yaml" <<'EOF'
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources: [/a/]
  providers:
  - aesgcm:
      keys: [{name: k1, secret: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=}]
  - identity: {}
EOF
setup_via "$DIRECT" --workers 1 --max-header-list-bytes 16384 --max-concurrent-streams 5 \
  --max-connections-per-worker 3 --max-message-bytes 4096 \
  --encryption-provider-config "$T/enc.yaml"
HOST=${VIA%:*}
PORT=${VIA##*:}

# ---------------------------------------------------------------- header list
out=$(timeout 20 "$TOOL" headers "$HOST" "$PORT" 30000 2>&1)
note "$(echo "$out" | tr '\n' ';')"
echo "$out" | grep -q '^settings max_header_list_size=16384 ' &&
  pass "SETTINGS_MAX_HEADER_LIST_SIZE advertises --max-header-list-bytes" ||
  fail "advertised header list size" "$out"
if echo "$out" | grep -Eq '^call 1 grpc-status=8 grpc-message=etcdseal: request headers of [0-9]+ bytes exceed --max-header-list-bytes \(16384\)$'; then
  pass "a header block over the limit ends the call: RESOURCE_EXHAUSTED naming the size, flag and limit"
else
  fail "header block over the limit" "$out"
fi
echo "$out" | grep -q '^call 2 grpc-status=0 ' && echo "$out" | grep -q '^connection open' &&
  pass "the same connection then serves a normal call (status 0 from etcd)" ||
  fail "connection after the header refusal" "$out"
grep -q 'request headers over the limit' "$PROXY_LOG" &&
  pass "the refusal is logged" || fail "header refusal log line" "$(tail -3 "$PROXY_LOG")"
out=$(timeout 20 "$TOOL" headers "$HOST" "$PORT" 12000 2>&1)
echo "$out" | grep -q '^call 1 grpc-status=0 ' &&
  pass "a header block under the limit (about 12 KB) is relayed" || fail "header block under the limit" "$out"

# ---------------------------------------------------------------- concurrent streams
out=$(timeout 20 "$TOOL" streams "$HOST" "$PORT" 9 2>&1)
note "$(echo "$out" | tr '\n' ';')"
if echo "$out" | grep -q '^settings max_concurrent_streams=5$' &&
  echo "$out" | grep -q '^streams open=5 reset=0 refused=4$'; then
  pass "9 watch streams on one connection with --max-concurrent-streams 5: 5 open, 4 REFUSED_STREAM"
else
  fail "concurrent stream limit" "$out"
fi
ectl "$VIA" put /s/after-streams v >/dev/null 2>&1 && pass "the proxy serves calls after the stream refusals" ||
  fail "calls after the stream refusals" ""

# ---------------------------------------------------------------- connections per worker
before=$(metric_sum "$ADMIN" '^etcdseal_connections_refused_total')
out=$(timeout 30 "$TOOL" conns "$HOST" "$PORT" 5 2>&1)
note "$(echo "$out" | tr '\n' ';')"
n_ok=$(echo "$out" | grep -c '^conn [0-9]* ok$')
n_goaway=$(echo "$out" | grep -c '^conn [0-9]* goaway code=11 debug="etcdseal: worker connection limit reached (--max-connections-per-worker 3)" closed=yes$')
if [ "$n_ok" = 3 ] && [ "$n_goaway" = 2 ]; then
  pass "5 connections to a worker limited to 3: 3 served, 2 get GOAWAY ENHANCE_YOUR_CALM naming the limit and are closed"
else
  fail "connection limit" "$out"
fi
after=$(metric_sum "$ADMIN" '^etcdseal_connections_refused_total')
[ "$((${after:-0} - ${before:-0}))" = 2 ] &&
  pass "etcdseal_connections_refused_total counts the 2 refusals" ||
  fail "refused connections metric" "before=${before:-none} after=${after:-none}"
n_log=$(grep -c 'client connection refused: worker at --max-connections-per-worker' "$PROXY_LOG")
[ "$n_log" = 1 ] && pass "two refusals within a second are logged once" ||
  fail "refusal log rate limit" "$n_log log lines"
ectl "$VIA" put /s/after-conns v >/dev/null 2>&1 &&
  pass "once those connections are gone new ones are served again" || fail "connection after the limit" ""

# ---------------------------------------------------------------- message size
big=$(head -c 6000 /dev/zero | tr '\0' x)
err=$(ectl "$VIA" put /a/big "$big" 2>&1)
if echo "$err" | grep -q 'larger than --max-message-bytes (4096)'; then
  pass "a Put over --max-message-bytes fails with a message naming the flag and limit"
else
  fail "Put over the message limit" "$err"
fi
[ -z "$(ectl "$DIRECT" get /a/big --print-value-only 2>&1)" ] &&
  pass "the oversized Put did not reach etcd" || fail "oversized Put" "the value is in etcd"
echo "$err" | grep -q 'ResourceExhausted\|code = ResourceExhausted\|resource exhausted' &&
  pass "the status is RESOURCE_EXHAUSTED" || note "etcdctl error text: $err"
# response direction: values written straight to etcd, read back together through the proxy
v=$(head -c 3000 /dev/zero | tr '\0' y)
ectl "$DIRECT" put /a/r1 "$v" >/dev/null && ectl "$DIRECT" put /a/r2 "$v" >/dev/null
err=$(ectl "$VIA" get --prefix /a/r 2>&1)
echo "$err" | grep -q 'larger than --max-message-bytes (4096)' &&
  pass "a Range response over --max-message-bytes fails with a message naming the flag" ||
  fail "Range response over the message limit" "$(echo "$err" | head -c 300)"
[ "$(ectl "$VIA" get /a/r1 --print-value-only 2>&1)" = "$v" ] &&
  pass "a Range response under the limit still works" || fail "Range under the limit" ""
alive "$PROXY_PID" && pass "proxy still running after every limit was hit" || fail "proxy alive" "it exited"
