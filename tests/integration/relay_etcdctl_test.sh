#!/usr/bin/env bash
# relay_etcdctl_test.sh - etcdctl through the proxy answers exactly as etcd does directly.
#
# Runbook: one etcd, one proxy in front of it (no encryption configured, so every value passes
# through). Read-only commands run against etcd ($DIRECT) and the proxy ($VIA) in turn and the
# outputs must be byte-identical (headers and revisions included). Writes run through the proxy
# and are checked directly, or run both ways from the same starting state and compared.
# Env: IT_NO_PROXY=1 runs everything against etcd itself; IT_SKIP_PERF=1 skips `check perf`.
source "$(dirname "$0")/lib.sh"
require_proxy
start_etcd e0
DIRECT=$ETCD_EP_e0
setup_via "$DIRECT"
note "direct=$DIRECT via=$VIA admin=${ADMIN:-none}"

# ---------------------------------------------------------------- put / get
put_ok=1
for i in 1 2 3 4 5; do
  out=$(ectl "$VIA" put "/r/k$i" "value-$i" 2>&1)
  [ "$out" = OK ] || { put_ok=0; note "put /r/k$i via proxy: $out"; }
done
direct_vals=$(ectl "$DIRECT" get /r/ --prefix --print-value-only 2>&1 | tr '\n' ' ')
if [ $put_ok = 1 ] && [ "$direct_vals" = "value-1 value-2 value-3 value-4 value-5 " ]; then
  pass "put via proxy, read directly"
else
  fail "put via proxy, read directly" "direct read gave: $direct_vals"
fi
rev_mid=$(ectl "$DIRECT" get /r/k3 -w fields | awk -F' : ' '/"ModRevision"/ {print $2}')
ectl "$VIA" put /r/k3 value-3b >/dev/null 2>&1
expect_same "get" get /r/k1
expect_same "get --prefix" get /r/ --prefix
expect_same "get --prefix --limit 2" get /r/ --prefix --limit 2
expect_same "get --rev (older revision)" get /r/k3 --rev "$rev_mid"
expect_same "get -w json" get /r/ --prefix -w json
expect_same "get --keys-only --sort-by=MODIFY --order=DESCEND" get /r/ --prefix --keys-only \
  --sort-by=MODIFY --order=DESCEND
expect_same "get --limit 1 -w json (count of all)" get /r/ --prefix --limit 1 -w json
expect_same "get missing key -w json" get /r/none -w json

# ---------------------------------------------------------------- writes compared both ways
# same_write NAME SETUP_FN ARGS...: SETUP_FN; etcdctl ARGS via the proxy; SETUP_FN; etcdctl ARGS
# directly; the outputs (stdin from $STDIN_FILE if set) must be identical and successful.
same_write() {
  local name=$1 setup=$2 in=${STDIN_FILE:-/dev/null}
  shift 2
  $setup
  run_ctl "$T/v.out" "$VIA" "$@" <"$in"
  $setup
  run_ctl "$T/d.out" "$DIRECT" "$@" <"$in"
  if ! diff <(normalise "$T/d.out") <(normalise "$T/v.out") >"$T/diff.out"; then
    fail "$name" "etcdctl $* differs direct vs proxy"
    sed 's/^/  | /' "$T/diff.out" | head -20
  elif ! grep -qx 'rc=0' "$T/d.out"; then
    fail "$name" "etcdctl $* failed directly too"
    show_log "$T/d.out" 5
  else
    pass "$name"
  fi
}
setup_del() {
  ectl "$DIRECT" put /d/x 1 >/dev/null 2>&1
  ectl "$DIRECT" put /d/y 2 >/dev/null 2>&1
}
same_write "del --prev-kv --prefix" setup_del del /d/ --prefix --prev-kv
same_write "del --prev-kv one key" setup_del del /d/x --prev-kv
if [ -z "$(ectl "$DIRECT" get /d/x --print-value-only 2>&1)" ]; then
  pass "del via proxy removed the key"
else
  fail "del via proxy removed the key" "/d/x still present"
fi

setup_txn() { ectl "$DIRECT" put /t/k v1 >/dev/null 2>&1; }
printf 'value("/t/k") = "v1"\n\nput /t/k v2\nget /t/k\n\nget /t/k\n\n' >"$T/txn-success"
printf 'value("/t/k") = "nope"\n\nput /t/k v2\n\nget /t/k\nput /t/other o\n\n' >"$T/txn-failure"
STDIN_FILE=$T/txn-success same_write "txn -i (success branch)" setup_txn txn -i
if grep -q '^SUCCESS' "$T/v.out" && grep -qx v2 "$T/v.out"; then
  pass "txn -i success branch applied"
else
  fail "txn -i success branch applied" "$(tr '\n' '|' <"$T/v.out")"
fi
STDIN_FILE=$T/txn-failure same_write "txn -i (failure branch)" setup_txn txn -i
STDIN_FILE=$T/txn-success same_write "txn (non-interactive stdin form)" setup_txn txn

# ---------------------------------------------------------------- watch
# Two live watchers (direct and via the proxy) see the same >= 100 events in the same order.
ectl_bg "$T/watch-d" "$DIRECT" watch --prefix /w/
wd=$BG_PID
ectl_bg "$T/watch-v" "$VIA" watch --prefix /w/
wv=$BG_PID
# a sentinel put, repeated until both watchers show it, proves both watches are established
for ((i = 0; i < 50; i++)); do
  ectl "$DIRECT" put /w/0 "sentinel-$i" >/dev/null 2>&1
  grep -q "sentinel-$i" "$T/watch-d" && grep -q "sentinel-$i" "$T/watch-v" && break
  sleep 0.2
done
if ! grep -q "sentinel-$i" "$T/watch-v"; then
  fail "watch via proxy established" "no event through the proxy after $i sentinel puts"
  show_log "$T/watch-v.err" 5
else
  pass "watch via proxy established"
  NW=150
  for ((k = 1; k <= NW; k++)); do
    # alternate puts and deletes, some through the proxy
    if ((k % 10 == 0)); then
      ectl "$VIA" del "/w/$((k - 1))" >/dev/null 2>&1
    else
      ectl "$VIA" put "/w/$k" "event-$k" >/dev/null 2>&1
    fi
  done
  ectl "$DIRECT" put /w/end end >/dev/null 2>&1
  wait_until 15 grep -qx end "$T/watch-v"
  wait_until 5 grep -qx end "$T/watch-d"
  # compare from the sentinel both saw (earlier sentinels may predate the proxied watch)
  sed -n "/^sentinel-$i\$/,\$p" "$T/watch-d" >"$T/watch-d2"
  sed -n "/^sentinel-$i\$/,\$p" "$T/watch-v" >"$T/watch-v2"
  nd=$(grep -cE '^(PUT|DELETE)$' "$T/watch-d2")
  nv=$(grep -cE '^(PUT|DELETE)$' "$T/watch-v2")
  if [ "$nv" -ge 100 ] && cmp -s "$T/watch-d2" "$T/watch-v2"; then
    pass "watch --prefix: $nv events identical direct vs proxy"
  else
    fail "watch --prefix" "events direct=$nd via proxy=$nv, outputs $(cmp -s "$T/watch-d2" "$T/watch-v2" && echo equal || echo differ)"
    diff "$T/watch-d2" "$T/watch-v2" | head -10 | sed 's/^/  | /'
  fi
fi
stop_pid "$wd" 2
stop_pid "$wv" 2

# replay from a revision: both ways see the same history
first_rev=$(ectl "$DIRECT" get /w/1 -w fields | awk -F' : ' '/"CreateRevision"/ {print $2}')
if [ -n "$first_rev" ]; then
  ectl_bg "$T/replay-d" "$DIRECT" watch --prefix /w/ --rev "$first_rev" --prev-kv
  rd=$BG_PID
  ectl_bg "$T/replay-v" "$VIA" watch --prefix /w/ --rev "$first_rev" --prev-kv
  rv=$BG_PID
  wait_until 10 grep -qx end "$T/replay-d"
  wait_until 10 grep -qx end "$T/replay-v"
  stop_pid "$rd" 2
  stop_pid "$rv" 2
  n=$(grep -cE '^(PUT|DELETE)$' "$T/replay-v")
  if [ "$n" -ge 100 ] && cmp -s "$T/replay-d" "$T/replay-v"; then
    pass "watch --rev replay --prev-kv: $n events identical"
  else
    fail "watch --rev replay --prev-kv" "via proxy $n events; outputs differ or too few"
    diff "$T/replay-d" "$T/replay-v" | head -10 | sed 's/^/  | /'
  fi
else
  fail "watch --rev replay" "could not read the create revision of /w/1"
fi

# ---------------------------------------------------------------- compaction + watch across it
for v in a b c; do ectl "$VIA" put /c/k "$v" >/dev/null 2>&1; done
old_rev=$(ectl "$DIRECT" get /c/k -w fields | awk -F' : ' '/"CreateRevision"/ {print $2}')
cur_rev=$(ectl "$DIRECT" get /c/k -w fields | awk -F' : ' '/"Revision"/ {print $2}')
out=$(ectl "$VIA" compaction "$cur_rev" 2>&1)
if [ "$out" = "compacted revision $cur_rev" ]; then
  pass "compaction via proxy"
else
  fail "compaction via proxy" "$out"
fi
out=$(ectl "$DIRECT" get /c/k --rev "$old_rev" 2>&1)
if grep -q 'required revision has been compacted' <<<"$out"; then
  pass "compaction via proxy took effect"
else
  fail "compaction via proxy took effect" "direct get --rev $old_rev: $out"
fi
expect_same_error "get --rev of a compacted revision (error)" 'required revision has been compacted' \
  get /c/k --rev "$old_rev"
expect_same_error "get --rev of a future revision (error)" 'future revision' \
  get /c/k --rev $((cur_rev + 1000))
# `watch --rev` older than the compaction: canceled with the compaction error, exit code 5
ECTL_TIMEOUT=10 run_ctl "$T/wc-d" "$DIRECT" watch /c/k --rev "$old_rev"
ECTL_TIMEOUT=10 run_ctl "$T/wc-v" "$VIA" watch /c/k --rev "$old_rev"
if grep -q 'required revision has been compacted' "$T/wc-v" && cmp -s "$T/wc-d" "$T/wc-v"; then
  pass "watch --rev older than the compaction gets the compaction error"
else
  fail "watch --rev across a compaction" "via proxy: $(tr '\n' '|' <"$T/wc-v")"
  note "direct: $(tr '\n' '|' <"$T/wc-d")"
fi

# ---------------------------------------------------------------- lease
lease=$(ectl "$VIA" lease grant 6 2>&1)
lid=$(awk '/granted/ {print $2}' <<<"$lease")
if [[ "$lease" =~ ^lease\ [0-9a-f]+\ granted\ with\ TTL\(6s\)$ ]]; then
  pass "lease grant via proxy"
else
  fail "lease grant via proxy" "$lease"
fi
if [ -n "$lid" ]; then
  ectl "$VIA" put --lease "$lid" /l/k leased >/dev/null 2>&1
  # keep-alive for 8 s, longer than the 6 s TTL: the lease must still be alive afterwards
  timeout 8 "$ETCDCTL" --endpoints "$VIA" lease keep-alive "$lid" >"$T/ka" 2>&1
  nka=$(grep -c "^lease $lid keepalived with TTL(6)$" "$T/ka")
  if [ "$nka" -ge 3 ]; then
    pass "lease keep-alive via proxy ($nka keepalives in 8 s)"
  else
    fail "lease keep-alive via proxy" "$nka keepalive responses in 8 s"
    show_log "$T/ka" 5
  fi
  ttl_v=$(ectl "$VIA" lease timetolive "$lid" --keys 2>&1)
  ttl_d=$(ectl "$DIRECT" lease timetolive "$lid" --keys 2>&1)
  # remaining seconds tick between the two calls; everything else must be identical
  strip_rem() { sed -E 's/remaining\([0-9]+s\)/remaining(Ns)/' <<<"$1"; }
  if [[ "$ttl_v" =~ remaining\(([0-9]+)s\),\ attached\ keys\(\[/l/k\]\)$ ]] &&
    [ "${BASH_REMATCH[1]}" -gt 0 ] && [ "$(strip_rem "$ttl_v")" = "$(strip_rem "$ttl_d")" ]; then
    pass "lease timetolive --keys via proxy (alive after keep-alive)"
  else
    fail "lease timetolive --keys via proxy" "via: $ttl_v / direct: $ttl_d"
  fi
  out=$(ectl "$VIA" lease revoke "$lid" 2>&1)
  left=$(ectl "$DIRECT" get /l/k --print-value-only 2>&1)
  if [ "$out" = "lease $lid revoked" ] && [ -z "$left" ]; then
    pass "lease revoke via proxy (attached key deleted)"
  else
    fail "lease revoke via proxy" "$out; /l/k=$left"
  fi
  expect_same "lease timetolive of a revoked lease" lease timetolive "$lid"
  expect_same "lease list -w json" lease list -w json
fi

# ---------------------------------------------------------------- cluster / maintenance
# without --advertise-client-url MemberList answers pass unchanged (the rewrite with the flag is
# covered by relay_misc_test.sh)
out=$(ectl "$VIA" member list 2>&1)
if grep -qE "^[0-9a-f]+, started, e0, http://127\.0\.0\.1:[0-9]+, http://$DIRECT, false$" <<<"$out"; then
  pass "member list via the proxy without --advertise-client-url lists etcd's own client URL"
else
  fail "member list via the proxy without --advertise-client-url" "$out"
fi
expect_same "member list" member list
expect_same "member list -w json" member list -w json
expect_same "endpoint status -w json" endpoint status -w json
out=$(ectl "$VIA" endpoint health 2>&1)
if [[ "$out" == "$VIA is healthy: successfully committed proposal"* ]]; then
  pass "endpoint health via proxy"
else
  fail "endpoint health via proxy" "$out"
fi
expect_same "endpoint hashkv" endpoint hashkv -w json
expect_same "alarm list" alarm list
out=$(ectl "$VIA" defrag 2>&1)
if [ "$out" = "Finished defragmenting etcd member[$VIA]" ]; then
  pass "defrag via proxy"
else
  fail "defrag via proxy" "$out"
fi

# snapshot save through the proxy, restore it, start an etcd on it, read a key back
ectl "$VIA" put /snap/k snapshot-value >/dev/null 2>&1
out=$(ECTL_TIMEOUT=60 ectl "$VIA" snapshot save "$T/snap.db" 2>&1)
if [ -s "$T/snap.db" ] && grep -q 'Snapshot saved' <<<"$out"; then
  pass "snapshot save via proxy ($(stat -c %s "$T/snap.db") bytes)"
  ports 2
  rs_cp=${PORTS[0]} rs_pp=${PORTS[1]}
  if "$ETCDCTL" snapshot restore "$T/snap.db" --name rs --data-dir "$T/etcd-rs/data" \
    --initial-cluster "rs=http://127.0.0.1:$rs_pp" \
    --initial-advertise-peer-urls "http://127.0.0.1:$rs_pp" >"$T/restore.log" 2>&1; then
    _etcd_launch rs "$rs_cp" "$rs_pp" "rs=http://127.0.0.1:$rs_pp" new
    if wait_until 20 etcd_healthy "127.0.0.1:$rs_cp" &&
      [ "$(ectl "127.0.0.1:$rs_cp" get /snap/k --print-value-only 2>&1)" = snapshot-value ]; then
      pass "snapshot restore: restored member serves the snapshot's data"
    else
      fail "snapshot restore" "restored etcd unhealthy or /snap/k missing"
      show_log "$T/etcd-rs/log" 5
    fi
    stop_pid "$ETCD_PID_rs" 5
  else
    fail "snapshot restore" "etcdctl snapshot restore failed"
    show_log "$T/restore.log" 5
  fi
else
  fail "snapshot save via proxy" "$out"
fi

# ---------------------------------------------------------------- auth
auth_steps=(
  "user add root:rootpw"
  "user add alice:alicepw"
  "role add app"
  "role grant-permission app readwrite /auth/ --prefix=true"
  "user grant-role alice app"
  "auth enable"
)
auth_ok=1
for s in "${auth_steps[@]}"; do
  # shellcheck disable=SC2086
  if ! out=$(ectl "$VIA" $s 2>&1); then
    auth_ok=0
    fail "auth setup via proxy" "etcdctl $s: $out"
    break
  fi
done
if [ $auth_ok = 1 ]; then
  pass "auth setup via proxy (users, role, permission, auth enable)"
  out=$(ectl "$VIA" --user alice:alicepw put /auth/x 1 2>&1)
  if [ "$out" = OK ]; then pass "auth: permitted put via proxy"; else fail "auth: permitted put via proxy" "$out"; fi
  out=$(ectl "$VIA" --user alice:alicepw put /other/x 1 2>&1)
  if grep -q 'permission denied' <<<"$out"; then
    pass "auth: put outside the role's range refused via proxy"
  else
    fail "auth: put outside the role's range refused via proxy" "$out"
  fi
  expect_same "auth: get with a user" --user alice:alicepw get /auth/x -w json
  run_ctl "$T/anon-d" "$DIRECT" get /auth/x
  run_ctl "$T/anon-v" "$VIA" get /auth/x
  if grep -q 'user name is empty' "$T/anon-v" && cmp -s "$T/anon-d" "$T/anon-v"; then
    pass "auth: anonymous get refused as directly"
  else
    fail "auth: anonymous get refused as directly" "$(tr '\n' '|' <"$T/anon-v")"
  fi
  run_ctl "$T/bad-d" "$DIRECT" --user alice:wrong get /auth/x
  run_ctl "$T/bad-v" "$VIA" --user alice:wrong get /auth/x
  if grep -q 'authentication failed' "$T/bad-v" && cmp -s "$T/bad-d" "$T/bad-v"; then
    pass "auth: wrong password refused as directly"
  else
    fail "auth: wrong password refused as directly" "$(tr '\n' '|' <"$T/bad-v")"
  fi
  expect_same "auth: role get" --user root:rootpw role get app
fi
out=$(ectl "$VIA" --user root:rootpw auth disable 2>&1)
if [ $auth_ok = 1 ] && [ "$out" = "Authentication Disabled" ]; then
  pass "auth disable via proxy"
else
  [ $auth_ok = 1 ] && fail "auth disable via proxy" "$out"
  ectl "$DIRECT" --user root:rootpw auth disable >/dev/null 2>&1 # leave etcd usable
fi

# ---------------------------------------------------------------- lock
ectl_bg "$T/lock1" "$VIA" lock it-lock
l1=$BG_PID
if wait_until 10 grep -q '^it-lock/' "$T/lock1"; then
  pass "lock acquired via proxy"
  timeout 3 "$ETCDCTL" --endpoints "$VIA" lock it-lock -- echo second-holder >"$T/lock2" 2>&1
  rc=$?
  if [ $rc = 124 ] && ! grep -q second-holder "$T/lock2"; then
    pass "lock: second locker waits while the lock is held"
  else
    fail "lock: second locker waits while the lock is held" "rc=$rc $(tr '\n' '|' <"$T/lock2")"
  fi
  stop_pid "$l1" 5 # etcdctl releases the lock on SIGTERM
  out=$(timeout 10 "$ETCDCTL" --endpoints "$VIA" lock it-lock -- echo second-holder 2>&1)
  if [ "$out" = second-holder ]; then
    pass "lock: acquired after release, command run"
  else
    fail "lock: acquired after release" "$out"
  fi
else
  fail "lock acquired via proxy" "$(tr '\n' '|' <"$T/lock1.err")"
fi
stop_pid "$l1" 2

# ---------------------------------------------------------------- elect
ectl_bg "$T/elect1" "$VIA" elect it-elect leader-one
e1=$BG_PID
if wait_until 10 grep -qx leader-one "$T/elect1"; then
  pass "elect: campaign via proxy won"
  timeout 3 "$ETCDCTL" --endpoints "$VIA" elect --listen it-elect >"$T/listen-v" 2>&1
  timeout 3 "$ETCDCTL" --endpoints "$DIRECT" elect --listen it-elect >"$T/listen-d" 2>&1
  if grep -qx leader-one "$T/listen-v" && cmp -s "$T/listen-d" "$T/listen-v"; then
    pass "elect --listen via proxy sees the leader"
  else
    fail "elect --listen via proxy" "via: $(tr '\n' '|' <"$T/listen-v") direct: $(tr '\n' '|' <"$T/listen-d")"
  fi
  # a second candidate takes over when the first resigns
  ectl_bg "$T/elect2" "$VIA" elect it-elect leader-two
  e2=$BG_PID
  sleep 1
  if grep -qx leader-two "$T/elect2"; then
    fail "elect: second candidate waits" "won while the first leader holds"
  else
    stop_pid "$e1" 5
    if wait_until 10 grep -qx leader-two "$T/elect2"; then
      pass "elect: second candidate wins after the leader resigns"
    else
      fail "elect: second candidate wins after the leader resigns" "$(tr '\n' '|' <"$T/elect2.err")"
    fi
  fi
  stop_pid "$e2" 3
else
  fail "elect: campaign via proxy" "$(tr '\n' '|' <"$T/elect1.err")"
fi
stop_pid "$e1" 2

# ---------------------------------------------------------------- check perf (about 60 s)
if [ -n "${IT_SKIP_PERF:-}" ]; then
  skip "check perf --load=s" "IT_SKIP_PERF set"
else
  ECTL_TIMEOUT=150 ECTL_CMD_TIMEOUT=120s run_ctl "$T/perf" "$VIA" check perf --load=s
  if grep -qx 'rc=0' "$T/perf" && ! grep -q FAIL "$T/perf" && grep -q '^PASS' "$T/perf"; then
    pass "check perf --load=s via proxy ($(grep -o 'Throughput is [0-9]* writes/s' "$T/perf"))"
  else
    fail "check perf --load=s via proxy" "$(grep -E 'PASS|FAIL|rc=|Error' "$T/perf" | tr '\n' '|')"
  fi
fi

if [ -n "$ADMIN" ]; then
  if alive "$PROXY_PID"; then pass "proxy still running at the end"; else fail "proxy still running at the end" "it exited"; show_log "$PROXY_LOG"; fi
fi
