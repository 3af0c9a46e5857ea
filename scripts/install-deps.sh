#!/usr/bin/env bash
# Installs (idempotently) exactly the Debian packages etcdseal needs to build, run and test.
# Usage: scripts/install-deps.sh [--check]   (--check: exit 1 if something is missing, install nothing)
set -euo pipefail
PKGS=(
  build-essential pkg-config clang llvm libclang-rt-14-dev
  libnghttp2-dev libevent-dev libssl-dev libsodium-dev libyaml-dev
  libprotobuf-c-dev protobuf-c-compiler libgrpc-dev libp11-kit-dev softhsm2 opensc
  etcd-server etcd-client openssl ca-certificates
  python3 curl procps iptables valgrind
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "${1:-}" = "--check" ]; then echo "missing: ${missing[*]}"; exit 1; fi
echo "install-deps: installing ${missing[*]}" >&2
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
