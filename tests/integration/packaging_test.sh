#!/usr/bin/env bash
# packaging_test.sh - what ships besides the binary: the manual, the example configurations,
# the systemd units and the container image.
#
# Runbook:
#   manual   man/etcdseal.1 is exactly `etcdseal help --roff` (one source: src/cmd/help.c);
#            groff -man -ww reports no warning; man -l renders it without warnings; every
#            command that `etcdseal --help` lists has a .SS section in the man page and a
#            `help` topic whose OPTIONS are exactly the flags its own `--help` defines.
#   examples every conf/examples/*/encryption-config.yaml passes check-config (installed 0600);
#            every conf/examples/*/etcdseal.yaml drives a real proxy (file loaded as is; only
#            addresses and file paths overridden by flags) in front of an etcd that requires
#            mTLS, as the examples do: app-secretbox seals /app/credentials/ (raw value
#            k8s:enc:secretbox:v1:app-2026-01:), mtls-gateway refuses clients without a
#            certificate and seals /teams/payments/ with aesgcm, kube-apiserver-kms-v2 writes
#            Secrets as k8s:enc:kms:v2:hsm-kek: through the bundled plugin with the pkcs11
#            backend (SoftHSM2) listening on the example's second (`endpoints:`) socket only,
#            and still reads a plaintext Secret planted in etcd (identity fallback).
#   systemd  systemd-analyze verify on conf/etcdseal.service and the example plugin unit
#            (ExecStart pointed at build/etcdseal); required hardening directives present;
#            systemd-analyze security exposure <= 2.5; the system calls the proxy makes (strace
#            over start, put/get, SIGHUP, SIGTERM) are all allowed by the unit's
#            SystemCallFilter.
#   docker   Dockerfile: two stages on debian:bookworm-slim, final stage installs no -dev
#            package, every package exists in bookworm (apt-cache) and the final packages
#            cover every shared library build/etcdseal links; non-root numeric USER;
#            ENTRYPOINT/CMD; EXPOSE = the proxy's default ports; the build stage's COPY set
#            (Makefile proto src) builds build/etcdseal on its own. `docker build` only when a
#            Docker daemon answers (else SKIP with the reason).
source "$(dirname "$0")/lib.sh"
EX=conf/examples
UNIT=conf/etcdseal.service
DOCKERFILE=docker/Dockerfile
[ -x "$ES_BIN" ] || die "$ES_BIN missing (make)"

# ================================================================== manual
if "$ES_BIN" help --roff >"$T/roff.1" 2>"$T/roff.err" && cmp -s "$T/roff.1" man/etcdseal.1; then
  pass "man/etcdseal.1 is exactly \`etcdseal help --roff\`"
else
  fail "man/etcdseal.1 up to date" "differs from \`etcdseal help --roff\` (regenerate: build/etcdseal help --roff > man/etcdseal.1)"
  diff "$T/roff.1" man/etcdseal.1 | head -10 | sed 's/^/  | /'
fi
if command -v groff >/dev/null; then
  groff -man -ww -z man/etcdseal.1 >"$T/groff.out" 2>&1
  rc=$?
  if [ $rc = 0 ] && [ ! -s "$T/groff.out" ]; then
    pass "groff -man -ww -z: no warnings"
  else
    fail "groff -man -ww -z" "rc=$rc: $(head -3 "$T/groff.out")"
  fi
else
  skip "groff warnings" "groff not installed"
fi
if command -v man >/dev/null; then
  MANWIDTH=80 man -l man/etcdseal.1 >"$T/man.txt" 2>"$T/man.err"
  rc=$?
  if [ $rc = 0 ] && [ ! -s "$T/man.err" ] && grep -q '^COMMANDS' "$T/man.txt"; then
    pass "man -l renders without warnings ($(wc -l <"$T/man.txt") lines)"
  else
    fail "man -l renders" "rc=$rc: $(head -3 "$T/man.err")"
  fi
else
  skip "man -l" "man not installed"
fi

# flags_of_help: the flags a command's --help defines: on every indented line that starts with
# "-", the words starting with "-" before the first run of two spaces (the description), e.g.
# "  --cacert FILE --cert FILE --key FILE  TLS", "  -o, --output F  ...", "  --a X | --b Y text";
# one per line, sorted, trailing commas dropped, --help/-h left out.
flags_of_help() {
  grep -E '^[[:space:]]+-' | sed -E 's/^[[:space:]]+//; s/  .*//' |
    awk '{for (i = 1; i <= NF; i++) if ($i ~ /^-/) {sub(/,$/, "", $i); print $i}}' |
    grep -vxE -- '--help|-h' | sort -u
}
# flags_of_topic: the tags of the OPTIONS block of `etcdseal help CMD` (4-space indented lines).
flags_of_topic() {
  awk '/^OPTIONS$/ {on = 1; next} /^[A-Z]/ {on = 0} on && /^    -/ {for (i = 1; i <= NF; i++) if ($i ~ /^-/) {sub(/,$/, "", $i); print $i}}' |
    grep -vxE -- '--help|-h' | sort -u
}
"$ES_BIN" --help >"$T/usage.txt" 2>&1
mapfile -t CMDS < <(awk '/^commands:/ {on = 1; next} on && /^  [a-z]/ {print $1} on && /^$/ {on = 0}' "$T/usage.txt")
[ ${#CMDS[@]} -ge 7 ] || fail "etcdseal --help lists the commands" "found ${#CMDS[@]}: ${CMDS[*]}"
n_ok=0
for c in "${CMDS[@]}"; do
  problems=()
  grep -qxF ".SS \"etcdseal $c\"" man/etcdseal.1 || problems+=("no .SS section in man/etcdseal.1")
  if "$ES_BIN" help "$c" >"$T/topic.txt" 2>&1 && head -1 "$T/topic.txt" | grep -q "^etcdseal $c - "; then
    "$ES_BIN" "$c" --help >"$T/cmdhelp.txt" 2>&1
    if [ "$c" = version ]; then : >"$T/want"; else flags_of_help <"$T/cmdhelp.txt" >"$T/want"; fi
    flags_of_topic <"$T/topic.txt" >"$T/got"
    if ! cmp -s "$T/want" "$T/got"; then
      problems+=("help topic OPTIONS differ from \`$c --help\`: missing [$(comm -23 "$T/want" "$T/got" | tr '\n' ' ')] extra [$(comm -13 "$T/want" "$T/got" | tr '\n' ' ')]")
    fi
  else
    problems+=("\`etcdseal help $c\` failed: $(head -1 "$T/topic.txt")")
  fi
  if [ ${#problems[@]} = 0 ]; then
    n_ok=$((n_ok + 1))
  else
    fail "manual documents \`etcdseal $c\`" "${problems[*]}"
  fi
done
[ "$n_ok" -gt 0 ] && [ "$n_ok" = ${#CMDS[@]} ] &&
  pass "all $n_ok commands of \`etcdseal --help\` (${CMDS[*]}) have a man section and a help topic matching their --help flags"
# documented ahead of the build (topics whose command is not in this binary yet)
for c in $(grep -oE '^\.SS "etcdseal [a-z-]+"' man/etcdseal.1 | sed -E 's/.* ([a-z-]+)"$/\1/'); do
  printf '%s\n' "${CMDS[@]}" | grep -qxF "$c" ||
    skip "manual section etcdseal $c" "documented, but this build has no \`$c\` command yet"
done
if "$ES_BIN" help no-such-topic >/dev/null 2>&1; then
  fail "help with an unknown topic" "exit 0"
else
  pass "help with an unknown topic fails"
fi

# ================================================================== example configurations
P=$T/pki
tests/tools/certs.sh "$P" >"$T/certs.log" 2>&1 || die "tests/tools/certs.sh failed: $(tail -3 "$T/certs.log")"
for d in "$EX"/*/; do
  ec=$d/encryption-config.yaml
  [ -f "$ec" ] || continue
  name=$(basename "$d")
  install -m 0600 "$ec" "$T/$name.ec.yaml"
  if grep -q 'kms:' "$ec"; then extra=(--parse-only); else extra=(); fi
  if "$ES_BIN" check-config --encryption-provider-config "$T/$name.ec.yaml" "${extra[@]}" >"$T/cc.out" 2>&1; then
    pass "check-config $name/encryption-config.yaml ${extra[*]}($(grep -c '^rule ' "$T/cc.out") rules)"
  else
    fail "check-config $name/encryption-config.yaml" "$(grep -m2 -iE 'error|invalid' "$T/cc.out")"
  fi
  if grep -qE '^[[:space:]]+secret:' "$ec"; then
    # every key in the examples must be an obvious placeholder: it decodes to "replace me..."
    bad=$(grep -oE 'secret: [A-Za-z0-9+/=]+' "$ec" | awk '{print $2}' | while read -r k; do
      printf '%s' "$k" | base64 -d 2>/dev/null | grep -q '^replace me' || echo "$k"
    done)
    if [ -z "$bad" ] && grep -q '0600' "$ec"; then
      pass "$name: keys are 'replace me' placeholders, the file says 0600"
    else
      fail "$name: placeholder keys" "keys not decoding to 'replace me': $bad; mentions 0600: $(grep -c 0600 "$ec")"
    fi
  fi
done

# etcd with mTLS, as the examples' upstreams
CLI=(--cacert "$P/ca.pem" --cert "$P/client.pem" --key "$P/client.key")
ETCD_SCHEME=https ETCD_HEALTH_ARGS="${CLI[*]}" start_etcd e0 \
  --cert-file "$P/server.pem" --key-file "$P/server.key" --trusted-ca-file "$P/ca.pem" \
  --client-cert-auth
# shellcheck disable=SC2154 # set by start_etcd (printf -v)
DIRECT=https://$ETCD_EP_e0
UP=(--endpoints "$DIRECT" --cacert "$P/ca.pem" --cert "$P/client.pem" --key "$P/client.key")
# example_proxy NAME [flags]: proxy with --config <example>/etcdseal.yaml (unchanged), on fresh
# loopback ports, the EncryptionConfiguration $T/NAME.ec.yaml; VIA, ADMIN.
example_proxy() {
  local name=$1
  shift
  ports 2
  VIA=127.0.0.1:${PORTS[0]}
  ADMIN=127.0.0.1:${PORTS[1]}
  start_proxy --config "$EX/$name/etcdseal.yaml" --listen-addr "$VIA" --metrics-addr "$ADMIN" \
    "${UP[@]}" --encryption-provider-config "$T/$name.ec.yaml" "$@" || return 1
  wait_ready "$ADMIN" 15 || {
    note "/readyz not 200"
    show_log "$PROXY_LOG"
    return 1
  }
}
# sealed NAME EP_ARGS KEY PREFIX: put KEY through the proxy, read it back, raw value in etcd
# starts with PREFIX and does not hold the plaintext.
sealed() {
  local name=$1 key=$3 want=$4 v got
  local -a args
  read -r -a args <<<"$2"
  v="plain-$name-$RANDOM$RANDOM"
  ectl "${args[@]}" put "$key" "$v" >"$T/put.out" 2>&1
  got=$(ectl "${args[@]}" get "$key" --print-value-only 2>&1)
  if [ "$got" != "$v" ]; then
    fail "$name: put/get $key through the proxy" "$(head -c 300 "$T/put.out") / got: $got"
    return 1
  fi
  if raw_value_tls "$T/raw" "$key" && starts_with "$T/raw" "$want" && ! grep -qF "$v" "$T/raw"; then
    pass "$name: $key read back through the proxy, stored as $want..."
  else
    fail "$name: $key stored encrypted" "raw starts: $(head -c 40 "$T/raw" | tr -c '[:print:]' .)"
  fi
}
raw_value_tls() {
  ectl "$DIRECT" "${CLI[@]}" get "$2" -w json 2>/dev/null | python3 -c '
import base64, json, sys
kvs = json.load(sys.stdin).get("kvs") or []
sys.exit(3) if len(kvs) != 1 else sys.stdout.buffer.write(base64.b64decode(kvs[0].get("value", "")))
' >"$1"
}
starts_with() {
  local n
  n=$(printf '%s' "$2" | wc -c)
  [ "$(head -c "$n" "$1")" = "$2" ]
}

# --- app-secretbox: loopback cleartext listener, TLS upstream
if example_proxy app-secretbox; then
  pass "app-secretbox/etcdseal.yaml: proxy started with it, ready"
  sealed app-secretbox "$VIA" /app/credentials/db 'k8s:enc:secretbox:v1:app-2026-01:'
  ectl "$VIA" put /app/public/motd hello >/dev/null 2>&1
  if raw_value_tls "$T/raw" /app/public/motd && [ "$(cat "$T/raw")" = hello ]; then
    pass "app-secretbox: keys outside the protected prefixes stay plaintext"
  else
    fail "app-secretbox: unprotected key" "raw: $(head -c 40 "$T/raw")"
  fi
  APP_PID=$PROXY_PID
else
  fail "app-secretbox/etcdseal.yaml drives a proxy" "see log above"
fi

# --- mtls-gateway: TLS listener requiring client certificates
if example_proxy mtls-gateway --cert-file "$P/server.pem" --key-file "$P/server.key" \
  --trusted-ca-file "$P/ca.pem"; then
  pass "mtls-gateway/etcdseal.yaml: proxy started with it, ready"
  sealed mtls-gateway "https://$VIA ${CLI[*]}" /teams/payments/db 'k8s:enc:aesgcm:v1:payments-2026-02:'
  sealed mtls-gateway "https://$VIA ${CLI[*]}" /teams/search/token 'k8s:enc:secretbox:v1:shared-2026-01:'
  if ECTL_CMD_TIMEOUT=3s ectl "https://$VIA" --cacert "$P/ca.pem" put /teams/x y >"$T/nocert.out" 2>&1; then
    fail "mtls-gateway: client without a certificate refused" "put succeeded"
  else
    pass "mtls-gateway: client without a certificate refused"
  fi
  if ECTL_CMD_TIMEOUT=3s ectl "https://$VIA" --cacert "$P/ca.pem" --cert "$P/client2.pem" \
    --key "$P/client2.key" put /teams/x y >"$T/othercert.out" 2>&1; then
    fail "mtls-gateway: certificate of another CA refused" "put succeeded"
  else
    pass "mtls-gateway: certificate of another CA refused"
  fi
  stop_pid "$PROXY_PID" 10
else
  fail "mtls-gateway/etcdseal.yaml drives a proxy" "see log above"
fi

# --- kube-apiserver-kms-v2: the bundled plugin, pkcs11 backend, on the example's standby socket
MODULE=${ETCDSEAL_PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
KEC=$EX/kube-apiserver-kms-v2/encryption-config.yaml
primary=$(sed -n 's/^ *endpoint: unix:\/\/\(.*\)$/\1/p' "$KEC")
standby=$(awk '/endpoints:/ {on = 1; next} on && /- unix:/ {sub(/.*unix:\/\//, ""); print; exit}' "$KEC")
if [ -z "$primary" ] || [ -z "$standby" ]; then
  fail "kube-apiserver-kms-v2: endpoint and endpoints: in the example" "primary=$primary standby=$standby"
elif ! command -v softhsm2-util >/dev/null || [ ! -r "$MODULE" ]; then
  skip "kube-apiserver-kms-v2 end to end" "SoftHSM2 not installed (module $MODULE)"
else
  # the example's sockets, moved into $T: the file is otherwise unchanged
  sed -e "s#unix://$primary#unix://$T/kms-primary.sock#" -e "s#unix://$standby#unix://$T/kms-standby.sock#" \
    "$KEC" >"$T/kube-apiserver-kms-v2.ec.yaml"
  chmod 600 "$T/kube-apiserver-kms-v2.ec.yaml"
  mkdir -p "$T/tokens"
  printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$T" >"$T/softhsm2.conf"
  export SOFTHSM2_CONF=$T/softhsm2.conf
  softhsm2-util --init-token --free --label etcdseal --pin 2468 --so-pin 13579 >"$T/init.log" 2>&1 ||
    die "softhsm2-util --init-token: $(cat "$T/init.log")"
  echo 2468 >"$T/pin"
  chmod 600 "$T/pin"
  P11=(--backend pkcs11 --pkcs11-module "$MODULE" --token-label etcdseal --pin-file "$T/pin" --key-label kek-2026-01)
  "$ES_BIN" kms-plugin "${P11[@]}" --generate-key >"$T/kid" 2>"$T/gen.err" || die "kms-plugin --generate-key: $(cat "$T/gen.err")"
  bg "$ES_BIN" kms-plugin --listen "unix://$T/kms-standby.sock" "${P11[@]}" 2>"$T/plugin.log"
  PLUGIN_PID=$BG_PID
  wait_until 10 test -S "$T/kms-standby.sock" || note "plugin socket not there after 10 s"
  if "$ES_BIN" check-config --encryption-provider-config "$T/kube-apiserver-kms-v2.ec.yaml" >"$T/cc.out" 2>&1; then
    pass "check-config kube-apiserver-kms-v2 (chains built, plugin up)"
  else
    fail "check-config kube-apiserver-kms-v2" "$(tail -3 "$T/cc.out")"
  fi
  if example_proxy kube-apiserver-kms-v2 --cert-file "$P/server.pem" --key-file "$P/server.key" \
    --trusted-ca-file "$P/ca.pem"; then
    pass "kube-apiserver-kms-v2/etcdseal.yaml: proxy started with it, ready"
    kms_healthy() { [ "$(http_code "http://$ADMIN/healthz/kms-providers")" = 200 ]; }
    if wait_until 15 kms_healthy; then
      pass "kube-apiserver-kms-v2: /healthz/kms-providers 200 through the standby endpoint"
    else
      fail "kube-apiserver-kms-v2: kms health" "/healthz/kms-providers $(http_code "http://$ADMIN/healthz/kms-providers")"
    fi
    sealed kube-apiserver-kms-v2 "https://$VIA ${CLI[*]}" /registry/secrets/default/db 'k8s:enc:kms:v2:hsm-kek:'
    # identity read fallback: a Secret written before encryption was on
    ectl "$DIRECT" "${CLI[@]}" put /registry/secrets/default/legacy legacy-plaintext >/dev/null 2>&1
    got=$(ectl "https://$VIA" "${CLI[@]}" get /registry/secrets/default/legacy --print-value-only 2>&1)
    if [ "$got" = legacy-plaintext ]; then
      pass "kube-apiserver-kms-v2: a plaintext Secret from before still reads (identity fallback)"
    else
      fail "kube-apiserver-kms-v2: identity fallback" "got: $(echo "$got" | head -c 200)"
    fi
    stop_pid "$PROXY_PID" 10
  else
    fail "kube-apiserver-kms-v2/etcdseal.yaml drives a proxy" "see log above"
  fi
  stop_pid "$PLUGIN_PID" 5
fi

# ================================================================== systemd
# unit_copy SRC DST: the unit with /usr/local/bin/etcdseal replaced by the built binary.
unit_copy() { sed "s#/usr/local/bin/etcdseal#$PWD/$ES_BIN#g" "$1" >"$2"; }
if command -v systemd-analyze >/dev/null; then
  mkdir -p "$T/man/man1" "$T/units"
  cp man/etcdseal.1 "$T/man/man1/"
  for u in "$UNIT" "$EX"/*/*.service; do
    [ -f "$u" ] || continue
    unit_copy "$u" "$T/units/$(basename "$u")"
    if MANPATH=$T/man systemd-analyze verify "$T/units/$(basename "$u")" >"$T/verify.out" 2>&1 && [ ! -s "$T/verify.out" ]; then
      pass "systemd-analyze verify $u"
    else
      fail "systemd-analyze verify $u" "$(head -3 "$T/verify.out")"
    fi
  done
  exposure=$(systemd-analyze security --offline=true "$T/units/etcdseal.service" 2>/dev/null |
    sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
  if [ -n "$exposure" ] && awk -v e="$exposure" 'BEGIN {exit !(e <= 2.5)}'; then
    pass "systemd-analyze security: exposure $exposure (<= 2.5)"
  elif [ -z "$exposure" ]; then
    skip "systemd-analyze security" "this systemd-analyze has no --offline mode"
  else
    fail "systemd-analyze security" "exposure $exposure > 2.5"
  fi
else
  skip "systemd-analyze verify" "systemd-analyze not installed"
fi
missing=()
for want in NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes LimitCORE=0 \
  MemoryDenyWriteExecute=yes ReadOnlyPaths=/etc/etcdseal 'ExecReload=/bin/kill -HUP $MAINPID' \
  Restart=on-failure CapabilityBoundingSet= SystemCallFilter=@system-service \
  'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6' LockPersonality=yes ProtectKernelTunables=yes \
  ProtectKernelModules=yes ProtectKernelLogs=yes ProtectControlGroups=yes User=etcdseal; do
  grep -qxF -- "$want" "$UNIT" || missing+=("$want")
done
if [ ${#missing[@]} = 0 ]; then pass "$UNIT: hardening directives present"; else fail "$UNIT: hardening" "missing: ${missing[*]}"; fi

# The proxy's system calls against the unit's filter (@system-service minus what ~ removes).
syscall_set() { # GROUP... -> the syscalls, groups expanded recursively
  local g
  for g in "$@"; do
    systemd-analyze syscall-filter "$g" 2>/dev/null | tail -n +2 | sed 's/^ *//' | grep -v '^#' | grep -v '^$' |
      while read -r s; do
        case $s in @*) syscall_set "$s" ;; *) echo "$s" ;; esac
      done
  done
}
if command -v strace >/dev/null && command -v systemd-analyze >/dev/null && [ -n "${APP_PID:-}" ]; then
  allow=$(grep '^SystemCallFilter=[^~]' "$UNIT" | sed 's/^SystemCallFilter=//')
  deny=$(grep '^SystemCallFilter=~' "$UNIT" | sed 's/^SystemCallFilter=~//')
  # shellcheck disable=SC2086
  syscall_set $allow | sort -u >"$T/allow.txt"
  # shellcheck disable=SC2086
  syscall_set $deny | sort -u >"$T/deny.txt"
  comm -23 "$T/allow.txt" "$T/deny.txt" >"$T/allowed.txt"
  stop_pid "$APP_PID" 10
  ports 2
  SVIA=127.0.0.1:${PORTS[0]}
  SADMIN=127.0.0.1:${PORTS[1]}
  strace -f -qq -o "$T/strace.out" "$ES_BIN" proxy --config "$EX/app-secretbox/etcdseal.yaml" \
    --listen-addr "$SVIA" --metrics-addr "$SADMIN" "${UP[@]}" \
    --encryption-provider-config "$T/app-secretbox.ec.yaml" >"$T/strace-proxy.log" 2>&1 &
  SPID=$!
  track "$SPID"
  if wait_ready "$SADMIN" 30; then
    # SIGTERM to strace only detaches it: stop (and track) the traced proxy itself
    PROXY_UNDER_STRACE=$(pgrep -P "$SPID" | head -1)
    [ -n "$PROXY_UNDER_STRACE" ] && track "$PROXY_UNDER_STRACE"
    ectl "$SVIA" put /app/credentials/s1 v1 >/dev/null 2>&1
    ectl "$SVIA" get /app/credentials/s1 >/dev/null 2>&1
    ectl "$SVIA" watch /app/credentials/ --prefix >/dev/null 2>&1 &
    wp=$!
    nap 1
    kill "$wp" 2>/dev/null
    wait "$wp" 2>/dev/null
    curl -s -m 3 "http://$SADMIN/metrics" >/dev/null
    kill -HUP "${PROXY_UNDER_STRACE:-$SPID}"
    nap 1
    [ -n "$PROXY_UNDER_STRACE" ] && stop_pid "$PROXY_UNDER_STRACE" 15
    stop_pid "$SPID" 15
    awk '{sub(/^[0-9]+ +/, ""); if (match($0, /^[a-z_0-9]+\(/)) print substr($0, 1, RLENGTH - 1)}' "$T/strace.out" |
      sort -u >"$T/used.txt"
    notallowed=$(comm -23 "$T/used.txt" "$T/allowed.txt" | tr '\n' ' ')
    if [ "$(wc -l <"$T/used.txt")" -gt 20 ] && [ -z "$notallowed" ]; then
      pass "all $(wc -l <"$T/used.txt") system calls of the proxy (start, put/get/watch, metrics, SIGHUP, SIGTERM) are allowed by the unit's SystemCallFilter"
    else
      fail "proxy system calls vs SystemCallFilter" "not allowed: [$notallowed] (used $(wc -l <"$T/used.txt"))"
    fi
  else
    fail "proxy under strace" "not ready: $(tail -3 "$T/strace-proxy.log")"
  fi
else
  skip "system calls vs SystemCallFilter" "needs strace, systemd-analyze and the app-secretbox proxy"
fi

# ================================================================== docker
if [ -f "$DOCKERFILE" ]; then
  froms=$(grep -cE '^FROM ' "$DOCKERFILE")
  base=$(sed -n 's/^ARG DEBIAN_IMAGE=//p' "$DOCKERFILE")
  if [ "$froms" = 2 ] && [ "$base" = debian:bookworm-slim ] &&
    [ "$(grep -cE '^FROM \$\{DEBIAN_IMAGE\}' "$DOCKERFILE")" = 2 ]; then
    pass "Dockerfile: two stages, both on debian:bookworm-slim"
  else
    fail "Dockerfile stages" "FROM lines: $froms, base: $base"
  fi
  # packages of the apt-get install in stage N (1 = build, 2 = runtime)
  stage_pkgs() {
    awk -v want="$1" '/^FROM / {s++} s == want' "$DOCKERFILE" |
      sed -n '/apt-get install/,/rm -rf/p' | tr ' \\' '\n\n' |
      grep -E '^[a-z0-9][a-z0-9.+-]+$' | grep -vxE 'apt-get|install|rm|-rf|DEBIAN_FRONTEND.*' | sort -u
  }
  stage_pkgs 1 >"$T/build.pkgs"
  stage_pkgs 2 >"$T/run.pkgs"
  bad=""
  while read -r p; do apt-cache show "$p" >/dev/null 2>&1 || bad+="$p "; done < <(cat "$T/build.pkgs" "$T/run.pkgs")
  if [ -z "$bad" ] && [ -s "$T/run.pkgs" ]; then
    pass "Dockerfile: all $(cat "$T/build.pkgs" "$T/run.pkgs" | wc -l) packages exist in this Debian's archive"
  else
    fail "Dockerfile packages exist" "unknown to apt-cache: $bad"
  fi
  if grep -qE -- '-dev$|^build-essential$|compiler' "$T/run.pkgs"; then
    fail "Dockerfile: runtime stage has no build packages" "$(grep -E -- '-dev$|build-essential|compiler' "$T/run.pkgs" | tr '\n' ' ')"
  else
    pass "Dockerfile: runtime stage installs no -dev/compiler package ($(tr '\n' ' ' <"$T/run.pkgs"))"
  fi
  # every shared library of the binary comes from a runtime package or one of its dependencies
  # shellcheck disable=SC2046 # one package per word
  apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances $(cat "$T/run.pkgs") 2>/dev/null |
    grep -vE '^ ' | sed 's/:.*//' | sort -u >"$T/closure.pkgs"
  uncovered=""
  # the image ships the release build (make sanitize points ES_BIN at the ASan one)
  rel_bin=build/etcdseal
  [ -x "$rel_bin" ] || rel_bin=$ES_BIN
  for lib in $(ldd "$rel_bin" | awk '$3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
    real=$(readlink -f "$lib")
    pkg=$(dpkg -S "$lib" 2>/dev/null || dpkg -S "$real" 2>/dev/null)
    pkg=${pkg%%:*}
    [ -n "$pkg" ] && grep -qxF "$pkg" "$T/closure.pkgs" || uncovered+="$(basename "$lib")(${pkg:-?}) "
  done
  if [ -z "$uncovered" ]; then
    pass "Dockerfile: the runtime packages provide every library build/etcdseal links ($(ldd "$rel_bin" | grep -c '=>') libraries)"
  else
    fail "Dockerfile runtime libraries" "not provided: $uncovered"
  fi
  user=$(sed -n 's/^USER //p' "$DOCKERFILE" | tail -1)
  if [[ $user =~ ^[1-9][0-9]*(:[0-9]+)?$ ]]; then pass "Dockerfile: non-root numeric USER $user"; else fail "Dockerfile USER" "USER '$user'"; fi
  if grep -qxF 'ENTRYPOINT ["etcdseal"]' "$DOCKERFILE" &&
    grep -qxF 'CMD ["proxy", "--config", "/etc/etcdseal/etcdseal.yaml"]' "$DOCKERFILE"; then
    pass "Dockerfile: ENTRYPOINT etcdseal, CMD proxy --config /etc/etcdseal/etcdseal.yaml"
  else
    fail "Dockerfile ENTRYPOINT/CMD" "$(grep -E '^(ENTRYPOINT|CMD)' "$DOCKERFILE" | tr '\n' ' ')"
  fi
  lport=$("$ES_BIN" proxy --help | sed -n 's/.*--listen-addr.*default "[^"]*:\([0-9]*\)").*/\1/p')
  if grep -qE "^EXPOSE .*\b$lport\b" "$DOCKERFILE" && grep -qE '^EXPOSE .*\b23789\b' "$DOCKERFILE"; then
    pass "Dockerfile: EXPOSE the client port $lport (proxy default) and the metrics port 23789"
  else
    fail "Dockerfile EXPOSE" "$(grep '^EXPOSE' "$DOCKERFILE") vs default listen port $lport"
  fi
  # the build stage copies only Makefile, proto and src: that must be enough for the binary
  mkdir -p "$T/ctx"
  cp -r Makefile proto src "$T/ctx/"
  if timeout 600 make -C "$T/ctx" -j2 OPT=-O0 build/etcdseal >"$T/ctx-make.log" 2>&1 &&
    "$T/ctx/build/etcdseal" version >/dev/null; then
    pass "Dockerfile: Makefile + proto + src alone build build/etcdseal (the build stage's COPY set)"
  else
    fail "Dockerfile COPY set builds" "$(tail -3 "$T/ctx-make.log")"
  fi
  rm -rf "$T/ctx"
  if command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; then
    if timeout 900 docker build -q -f "$DOCKERFILE" -t "etcdseal-packaging-test:$$" . >"$T/docker.log" 2>&1; then
      out=$(timeout 60 docker run --rm "etcdseal-packaging-test:$$" version 2>&1)
      uid=$(timeout 60 docker run --rm --entrypoint /usr/bin/id "etcdseal-packaging-test:$$" -u 2>&1)
      if [ "$out" = "$("$ES_BIN" version)" ] && [ "$uid" != 0 ]; then
        pass "docker build + run: $out as uid $uid"
      else
        fail "docker run" "version: $out; uid: $uid"
      fi
      docker rmi "etcdseal-packaging-test:$$" >/dev/null 2>&1
    else
      skip "docker build" "failed (no registry access to pull debian:bookworm-slim?): $(tail -2 "$T/docker.log" | tr '\n' ' ')"
    fi
  else
    skip "docker build" "no Docker daemon reachable here (docker CLI $(command -v docker >/dev/null && docker --version | awk '{print $3}' | tr -d , || echo absent), no dockerd)"
  fi
else
  fail "docker/Dockerfile" "missing"
fi
exit 0
