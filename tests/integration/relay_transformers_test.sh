#!/usr/bin/env bash
# relay_transformers_test.sh - with an EncryptionConfiguration loaded, every message of a
# value-carrying method passes through its transformer (counted in
# etcdseal_transformer_messages_total), methods without values are never decoded, and a
# compressed message on a transformed method is refused with a clear status. Without an
# EncryptionConfiguration the value transformers are skipped (they could change nothing).
#
# Runbook: one etcd, one proxy with an advertise URL and a config encrypting only /enc/ (the
# /t/ keys used here stay plaintext, but their messages are still decoded to find out); drive
# each value-carrying method with etcdctl and read the counters before/after; send raw gRPC with
# curl (h2c) for the compressed and empty-body cases; then a second proxy without a config.
source "$(dirname "$0")/lib.sh"
require_proxy
start_etcd e0
DIRECT=$ETCD_EP_e0
ports 1
ADV=http://127.0.0.1:${PORTS[0]}
cat >"$T/enc.yaml" <<YAML
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: ['/enc/']
    providers:
      - aesgcm: {keys: [{name: k1, secret: $(head -c 32 /dev/urandom | base64)}]}
YAML
chmod 600 "$T/enc.yaml"
setup_via "$DIRECT" --advertise-client-url "$ADV" --encryption-provider-config "$T/enc.yaml"

count() { # METHOD DIRECTION
  local v
  v=$(metric_sum "$ADMIN" "etcdseal_transformer_messages_total\\{method=\"$1\",direction=\"$2\"\\}")
  echo "${v:-0}"
}
# expect_counted NAME METHOD DIRECTION MIN -- command...: the counter grows by >= MIN
expect_counted() {
  local name=$1 m=$2 d=$3 min=$4 before after
  shift 5
  before=$(count "$m" "$d")
  "$@" >"$T/out" 2>&1
  after=$(count "$m" "$d")
  if [ $((after - before)) -ge "$min" ]; then
    pass "$name: $m $d messages went through the transformer (+$((after - before)))"
  else
    fail "$name: $m $d transformer count" "before=$before after=$after; $(head -c 300 "$T/out")"
  fi
}

expect_counted "put" Put request 1 -- ectl "$VIA" put /t/a 1
expect_counted "put --prev-kv" Put response 1 -- ectl "$VIA" put --prev-kv /t/a 2
expect_counted "get" Range response 1 -- ectl "$VIA" get /t/a
expect_counted "del --prev-kv" DeleteRange response 1 -- ectl "$VIA" del --prev-kv /t/a
printf '\nput /t/b x\n\n\n' >"$T/txn" # no compares, success: one put
expect_counted "txn request" Txn request 1 -- ectl "$VIA" txn <"$T/txn"
expect_counted "txn response" Txn response 1 -- ectl "$VIA" txn <"$T/txn"
expect_counted "member list" MemberList response 1 -- ectl "$VIA" member list

# watch: 20 events, each response message counted
before=$(count Watch response)
ectl_bg "$T/w" "$VIA" watch /t/w
for i in $(seq 1 20); do ectl "$DIRECT" put /t/w "v$i" >/dev/null; done
wait_until 10 grep -qx v20 "$T/w"
after=$(count Watch response)
# the created response plus at least one event message (etcd may batch events per message)
if [ $((after - before)) -ge 2 ] && grep -qx v20 "$T/w"; then
  pass "watch: every response message went through the transformer (+$((after - before)))"
else
  fail "watch transformer count" "before=$before after=$after"
fi

# election: etcdctl's elect uses KV calls (clientv3/concurrency), so the Election service is
# driven with raw gRPC: Leader of the election etcdctl campaigns in
ectl_bg "$T/elect" "$VIA" elect /t/el leader-1
wait_until 10 grep -q 'leader-1' "$T/elect" || show_log "$T/elect.err" 5
printf '\x00\x00\x00\x00\x07\x0a\x05/t/el' >"$T/leader.bin" # LeaderRequest{name:"/t/el"}
before=$(count Leader response)
out=$(curl -s -v -m 5 --http2-prior-knowledge -H 'content-type: application/grpc' -H 'te: trailers' \
  --data-binary @"$T/leader.bin" "http://$VIA/v3electionpb.Election/Leader" -o "$T/leader.out" 2>&1 |
  grep -i '^< grpc-status')
after=$(count Leader response)
if grep -q 'grpc-status: 0' <<<"$out" && grep -q 'leader-1' "$T/leader.out" && [ $((after - before)) -ge 1 ]; then
  pass "election Leader response went through the transformer and carries the value"
else
  fail "election Leader" "$out; count $before -> $after"
fi

# methods without values are never decoded: no series for them
if ! curl -s "http://$ADMIN/metrics" | grep -q 'etcdseal_transformer_messages_total{method="\(Status\|LeaseGrant\|Compact\)"'; then
  pass "methods without values have no transformer series"
else
  fail "methods without values" "found a transformer series for a value-free method"
fi

# compressed flag on a transformed method: refused, not relayed
grpc_call() { # PATH FILE -> prints grpc-status and grpc-message lines
  curl -s -v -m 5 --http2-prior-knowledge -H 'content-type: application/grpc' -H 'te: trailers' \
    "${@:3}" --data-binary @"$2" "http://$VIA$1" -o /dev/null 2>&1 | grep -i '^< grpc-'
}
printf '\x01\x00\x00\x00\x06\x0a\x01\x6b\x12\x01\x76' >"$T/comp.bin" # PutRequest{key:k,value:v}, flag 1
out=$(grpc_call /etcdserverpb.KV/Put "$T/comp.bin" -H 'grpc-encoding: gzip')
if grep -q 'grpc-status: 12' <<<"$out" && grep -q 'compressed request messages are not supported' <<<"$out" &&
  [ -z "$(ectl "$DIRECT" get k --print-value-only)" ]; then
  pass "compressed Put message refused with UNIMPLEMENTED and a clear message; nothing written"
else
  fail "compressed Put message" "$out"
fi
printf '\x00\x00\x00\x00\x06\x0a\x01\x6b\x12\x01\x76' >"$T/plain.bin"
out=$(grpc_call /etcdserverpb.KV/Put "$T/plain.bin")
if grep -q 'grpc-status: 0' <<<"$out" && [ "$(ectl "$DIRECT" get k --print-value-only)" = v ]; then
  pass "the same Put uncompressed is relayed"
else
  fail "uncompressed raw Put" "$out"
fi
# a message cut short: the request ends inside the message
printf '\x00\x00\x00\x00\x10\x0a\x01\x6b' >"$T/short.bin"
out=$(grpc_call /etcdserverpb.KV/Put "$T/short.bin")
if grep -q 'grpc-status: 13' <<<"$out"; then
  pass "a request ending inside a gRPC message is refused (INTERNAL)"
else
  fail "truncated request message" "$out"
fi

# without an EncryptionConfiguration nothing could change a value: the value transformers are
# skipped (no reassembly, no decoding), the values still arrive intact
ports 2
start_proxy --endpoints "$DIRECT" --listen-addr "127.0.0.1:${PORTS[0]}" \
  --metrics-addr "127.0.0.1:${PORTS[1]}" || die "second proxy did not start"
VIA2=127.0.0.1:${PORTS[0]}
ADMIN2=127.0.0.1:${PORTS[1]}
wait_ready "$ADMIN2" 15 || die "second proxy not ready"
ectl "$VIA2" put /t/plain value-through-no-config >/dev/null
got=$(ectl "$VIA2" get /t/plain --print-value-only)
pattern='etcdseal_transformer_messages_total\{method="(Put|Range)"'
n=$(metric_sum "$ADMIN2" "$pattern")
n1=$(metric_sum "$ADMIN" "$pattern") # the same series on the first proxy: the pattern matches
if [ "$got" = value-through-no-config ] && [ "${n:-0}" -eq 0 ] && [ "${n1:-0}" -gt 0 ]; then
  pass "no EncryptionConfiguration: Put and Range relayed without decoding (transformer count 0)"
else
  fail "no EncryptionConfiguration skips the value transformers" "value=$got count=${n:-0} (with config: ${n1:-0})"
fi
