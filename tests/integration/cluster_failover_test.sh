#!/usr/bin/env bash
# cluster_failover_test.sh - the proxy fails over between members and loses no acknowledged put.
#
# Runbook: a 3-member etcd cluster, one proxy given all three endpoints. A put loop runs through
# the proxy the whole time and records every acknowledged key with the time its put started and
# ended. Three rounds, each against the member the proxy is connected to at that moment (found
# with `ss -tnp` on the proxy's established connections):
#   1. SIGKILL it: a put that starts after the kill is acknowledged within 5 s; restart it.
#   2. the same again, now against the member the proxy failed over to.
#   3. SIGSTOP it (a hung member: the socket stays open, only keepalive PINGs notice):
#      puts resume within 5 s; SIGCONT.
# Afterwards every acknowledged key is read back directly from a live member.
# Env: RESUME_MS (5000), IT_NO_PROXY=1 (etcdctl's own balancer over the three members instead).
source "$(dirname "$0")/lib.sh"
require_proxy
RESUME_MS=${RESUME_MS:-5000}
start_etcd_cluster 3
note "members: $CLUSTER_EPS"
setup_via "$CLUSTER_EPS" --upstream-keepalive-time 1s --upstream-keepalive-timeout 1s
[ -n "${IT_NO_PROXY:-}" ] && VIA=$CLUSTER_EPS

# connected_member: prints the name of the member with the most established connections from
# the proxy (empty if none).
connected_member() {
  local name ep n best="" bestn=0
  [ -n "${PROXY_PID:-}" ] || return 0
  for name in "${CLUSTER_NAMES[@]}"; do
    ep=$(eval echo "\$ETCD_EP_$name")
    n=$(ss -tnpH state established "( dport = :${ep##*:} )" 2>/dev/null | grep -c "pid=$PROXY_PID,")
    if [ "$n" -gt "$bestn" ]; then
      best=$name
      bestn=$n
    fi
  done
  echo "$best"
}
# live_member_except NAME: a member other than NAME that answers.
live_member_except() {
  local name ep
  for name in "${CLUSTER_NAMES[@]}"; do
    [ "$name" = "$1" ] && continue
    ep=$(eval echo "\$ETCD_EP_$name")
    etcd_healthy "$ep" && { echo "$ep"; return 0; }
  done
  return 1
}
# acked_after MS: true once an acknowledged put started after MS (epoch ms).
acked_after() { awk -v t="$1" '$2 > t {f = 1} END {exit !f}' "$ACKS"; }
first_ack_after() { awk -v t="$1" '$2 > t {print $3 - t; exit}' "$ACKS"; }

ACKS=$T/acks
# put loop: "<i> <start ms> <end ms>" per acknowledged put of /fo/<i>
(
  end=$(($(now_ms) + 240000))
  for ((i = 1; i < 1000000; i++)); do
    [ -e "$T/stop-loop" ] && break
    [ "$(now_ms)" -lt "$end" ] || break
    s=$(now_ms)
    if ECTL_TIMEOUT=10 ECTL_CMD_TIMEOUT=2s ectl "$VIA" put "/fo/$i" "v$i" >/dev/null 2>"$T/put.err"; then
      echo "$i $s $(now_ms)" >>"$ACKS"
    else
      echo "$i $s $(now_ms) $(tail -1 "$T/put.err" | head -c 200)" >>"$ACKS.errors"
    fi
  done
) &
LOOP=$!
track $LOOP
touch "$ACKS"
if ! wait_until 20 sh -c "[ \$(wc -l <'$ACKS') -ge 20 ]"; then
  fail "put loop through the proxy" "only $(wc -l <"$ACKS") puts acknowledged in 20 s"
  show_log "$ACKS.errors" 5
  exit 1
fi
pass "put loop through the proxy running"

round() { # round N MODE(kill|term|stop): SIGKILL, graceful SIGTERM (etcd sends GOAWAY), SIGSTOP
  local n=$1 mode=$2 victim t_kill gap
  victim=$(connected_member)
  if [ -z "$victim" ]; then
    if [ -n "${IT_NO_PROXY:-}" ]; then
      victim=c$(((n - 1) % 3))
    else
      fail "round $n: find the member the proxy uses" "no established connection from pid $PROXY_PID to a member"
      victim=c$(((n - 1) % 3))
    fi
  fi
  local pid
  pid=$(eval echo "\$ETCD_PID_$victim")
  t_kill=$(now_ms)
  case $mode in
    kill) kill -KILL "$pid" ;;
    term) kill -TERM "$pid" ;;
    *) kill -STOP "$pid" ;;
  esac
  if wait_until $((RESUME_MS / 1000 + 1)) acked_after "$t_kill" &&
    gap=$(first_ack_after "$t_kill") && [ "$gap" -le "$RESUME_MS" ]; then
    pass "round $n: SIG${mode^^} of $victim (the member in use): puts resumed after $gap ms"
  else
    fail "round $n: SIG${mode^^} of $victim" "no put that started after the failure was acknowledged within $RESUME_MS ms (first: $(first_ack_after "$t_kill") ms)"
    awk -v t="$t_kill" '$2 > t' "$ACKS.errors" 2>/dev/null | head -3 | sed 's/^/  | /'
  fi
  # a few more seconds of progress on the surviving members
  local before
  before=$(wc -l <"$ACKS")
  nap 2
  if [ "$(wc -l <"$ACKS")" -gt "$before" ]; then
    pass "round $n: puts keep flowing with $victim down"
  else
    fail "round $n: puts keep flowing with $victim down" "no acknowledged put in 2 s"
  fi
  if [ "$mode" != stop ]; then
    wait_exit "$pid" 15 || kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    if restart_member "$victim"; then
      pass "round $n: $victim restarted"
    else
      fail "round $n: $victim restarted" "not healthy within 30 s"
      show_log "$T/etcd-$victim/log" 5
    fi
  else
    kill -CONT "$pid"
    wait_until 15 etcd_healthy "$(eval echo "\$ETCD_EP_$victim")" ||
      fail "round $n: $victim resumed" "not healthy 15 s after SIGCONT"
  fi
  wait_until 10 sh -c "[ \$(wc -l <'$ACKS') -gt $(($(wc -l <"$ACKS") + 3)) ]"
}

round 1 kill
round 2 term
round 3 kill
round 4 stop

touch "$T/stop-loop"
stop_pid $LOOP 15
total=$(wc -l <"$ACKS")
errors=$(wc -l <"$ACKS.errors" 2>/dev/null || echo 0)
note "acknowledged puts: $total, failed puts: $errors"

# every acknowledged put is there, read from a member directly (linearizable)
reader=$(live_member_except none) || die "no live member to read from"
ectl "$reader" get /fo/ --prefix --keys-only | grep -v '^$' | sort >"$T/present"
awk '{print "/fo/" $1}' "$ACKS" | sort >"$T/acked"
missing=$(comm -23 "$T/acked" "$T/present" | wc -l)
if [ "$total" -ge 50 ] && [ "$missing" = 0 ]; then
  pass "all $total acknowledged puts present (read directly from $reader)"
else
  fail "acknowledged puts present" "$total acknowledged, $missing missing: $(comm -23 "$T/acked" "$T/present" | head -5 | tr '\n' ' ')"
fi
# every member agrees (the restarted ones caught up); serializable reads, each member's own view
members_agree() {
  local name ep
  for name in "${CLUSTER_NAMES[@]}"; do
    ep=$(eval echo "\$ETCD_EP_$name")
    ectl "$ep" get /fo/ --prefix --keys-only --consistency=s | grep -v '^$' | sort >"$T/present-$name"
    cmp -s "$T/present-$name" "$T/present" || return 1
  done
}
if wait_until 15 members_agree; then
  pass "all three members hold the same keys"
else
  fail "all three members hold the same keys" "$(wc -l "$T"/present-c* | tr '\n' ' ')"
fi

if [ -n "${ADMIN:-}" ]; then
  fo=$(metric_sum "$ADMIN" '^etcdseal_upstream_failovers_total')
  if [ -z "$fo" ]; then
    skip "failover metric" "no etcdseal_upstream_failovers_total on $ADMIN"
  elif [ "$fo" -ge 2 ]; then
    pass "etcdseal_upstream_failovers_total = $fo"
  else
    fail "failover metric" "etcdseal_upstream_failovers_total = $fo after 3 failovers"
  fi
  if [ "$(http_code "http://$ADMIN/readyz")" = 200 ]; then
    pass "/readyz 200 after the failovers"
  else
    fail "/readyz after the failovers" "$(http_code "http://$ADMIN/readyz")"
  fi
fi
