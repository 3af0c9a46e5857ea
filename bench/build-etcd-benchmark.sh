#!/usr/bin/env bash
# build-etcd-benchmark.sh - build etcd's own load generator (tools/benchmark in the etcd source)
# from Debian's etcd source package of the installed etcd version, cached as
# build/etcd-benchmark/benchmark. Prints the binary's path on stdout; logs go to stderr.
#
# Why from Debian's source package: the benchmark must be the one etcd ships for the etcd we
# test against, built offline-capable with the Go packages Debian already has
# (golang-etcd-server-dev provides the etcd client/proto packages in GOPATH layout).
# Everything is written under build/etcd-benchmark/ (apt state included); nothing system-wide
# except installing the two build packages when they are missing (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${BENCH_TOOL_DIR:-$PWD/build/etcd-benchmark}
BIN=$DIR/benchmark
log() { echo "[build-etcd-benchmark] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [ -x "$BIN" ] && "$BIN" --help >/dev/null 2>&1; then echo "$BIN"; exit 0; fi

missing=()
for p in golang-go golang-etcd-server-dev; do
  dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing Debian packages: ${missing[*]} (need root to install)"
  log "installing ${missing[*]}"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
fi

b=$DIR/src
dst=$b/gopath/src/go.etcd.io/etcd/tools
rm -rf "$b"; mkdir -p "$dst"
gocode=/usr/share/gocode/src/go.etcd.io/etcd
if [ -d "$gocode/tools/benchmark" ]; then
  cp -r "$gocode/tools/benchmark" "$dst/"
else
  srcpkg=$(dpkg-query -W -f '${source:Package}' golang-etcd-server-dev)
  srcver=$(dpkg-query -W -f '${source:Version}' golang-etcd-server-dev)
  log "fetching Debian source package $srcpkg=$srcver (tools/benchmark only is used)"
  a=$b/apt
  mkdir -p "$a/parts" "$a/lists/partial" "$a/cache/archives/partial" "$b/dl"
  # deb-src entries derived from this machine's own apt sources, in a private apt state
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && sed -n 's/^deb \(.*\)$/deb-src \1/p' "$f"
  done >"$a/parts/bench-src.list"
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && sed 's/^Types:.*$/Types: deb-src/' "$f" >"$a/parts/$(basename "$f")"
  done
  apto=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$a/parts"
        -o "Dir::State::Lists=$a/lists" -o "Dir::Cache=$a/cache" -o "APT::Sandbox::User=root")
  apt-get "${apto[@]}" update -qq >"$b/apt-update.log" 2>&1 || die "apt-get update (deb-src) failed: $b/apt-update.log"
  (cd "$b/dl" && apt-get "${apto[@]}" source --download-only "$srcpkg=$srcver") >"$b/apt-source.log" 2>&1 \
    || die "apt-get source $srcpkg=$srcver failed: $b/apt-source.log"
  orig=$(ls "$b"/dl/"${srcpkg}"_*.orig.tar.* 2>/dev/null | head -1)
  [ -n "$orig" ] || die "no orig tarball downloaded for $srcpkg"
  mkdir -p "$b/x"
  tar -xf "$orig" -C "$b/x" --wildcards '*/tools/benchmark/*' || die "tools/benchmark not found in $orig"
  cp -r "$b"/x/*/tools/benchmark "$dst/"
fi
log "building tools/benchmark (GOPATH mode, $(go version | cut -d' ' -f3))"
(cd "$dst/benchmark" && GO111MODULE=off GOFLAGS='' GOPROXY=off CGO_ENABLED=0 \
   GOPATH="$b/gopath:/usr/share/gocode" GOCACHE="$DIR/gocache" \
   go build -o "$BIN.tmp" go.etcd.io/etcd/tools/benchmark) >"$b/go-build.log" 2>&1 \
   || { cat "$b/go-build.log" >&2; die "go build of tools/benchmark failed"; }
mv "$BIN.tmp" "$BIN"
log "built $BIN"
echo "$BIN"
