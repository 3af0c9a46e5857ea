#!/usr/bin/env bash
# bench-crypto.sh - cost per value of the provider chain beside OpenSSL's raw cipher speed.
#
# For each size (256 B, 4 KiB, 64 KiB, 1 MiB) and provider, runs build/tools/bench_crypto
# (chain encrypt/decrypt: prefix, random nonce, AAD, tag, buffer; fastest of 3 trials) between
# two runs of `openssl speed -seconds 1 -bytes N -evp <cipher>` (encrypt, and -decrypt) for the
# matching cipher (the better OpenSSL figure is kept), and prints the ratio. openssl speed
# measures the bare cipher on N-byte updates (it need not set a new IV or tag per update); the
# chain's figure includes everything one stored value costs: prefix, fresh nonce/IV, AAD, tag,
# padding check, output buffer. Small-N ratios therefore show the per-value overhead.
# The issue's target: aesgcm (AES-256-GCM) >= 0.7x OpenSSL's figure at 4 KiB.
# Env: ETCDSEAL_TOOLS (default build/tools), BENCH_SECONDS per chain measurement (0.5),
#      SIZES (default "256 4096 65536 1048576"), STRICT=1 exits 1 when the target is missed.
set -u
cd "$(dirname "$0")/.."
TOOL=${ETCDSEAL_TOOLS:-build/tools}/bench_crypto
SECS=${BENCH_SECONDS:-0.5}
SIZES=${SIZES:-"256 4096 65536 1048576"}
[ -x "$TOOL" ] || { echo "bench-crypto: $TOOL missing (run make)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "bench-crypto: openssl not found" >&2; exit 1; }

# provider label of bench_crypto -> openssl cipher ("-" = no OpenSSL counterpart)
declare -A CIPHER=([aesgcm-256]=aes-256-gcm [aesgcm-128]=aes-128-gcm [aescbc-256]=aes-256-cbc
                   [secretbox]=- [identity]=-)
PROVIDERS="aesgcm-256 aesgcm-128 aescbc-256 secretbox identity"

openssl_mbs() { # $1 cipher, $2 bytes, $3 "" or -decrypt -> MB/s (10^6 bytes/s)
  openssl speed -mr $3 -seconds 1 -bytes "$2" -evp "$1" 2>/dev/null |
    awk -F: '/^\+F:/ {printf "%.1f", $NF / 1e6}'
}

max() { awk -v a="${1:-0}" -v b="${2:-0}" 'BEGIN {printf "%.1f", (a > b ? a : b)}'; }

echo "bench-crypto: $(openssl version), $(nproc) CPU(s), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-11s %-7s %8s %11s %9s %13s %6s\n' provider op bytes ns/value MB/s openssl_MB/s ratio
target=""
for n in $SIZES; do
  for p in $PROVIDERS; do
    c=${CIPHER[$p]}
    ref_enc=""; ref_dec=""
    [ "$c" != - ] && ref_enc=$(openssl_mbs "$c" "$n" "") && ref_dec=$(openssl_mbs "$c" "$n" -decrypt)
    out=$("$TOOL" -t "$SECS" -p "$p" -s "$n" | grep -v '^#') || { echo "bench_crypto failed" >&2; exit 1; }
    if [ "$c" != - ]; then # OpenSSL again after ours: keep its better figure (shared machine)
      ref_enc=$(max "$ref_enc" "$(openssl_mbs "$c" "$n" "")")
      ref_dec=$(max "$ref_dec" "$(openssl_mbs "$c" "$n" -decrypt)")
    fi
    while IFS=$'\t' read -r prov op bytes ns mbs; do
      ref=$ref_enc; [ "$op" = decrypt ] && ref=$ref_dec
      if [ -n "$ref" ] && [ "$ref" != 0.0 ]; then
        ratio=$(awk -v a="$mbs" -v b="$ref" 'BEGIN {printf "%.2f", a / b}')
      else
        ratio=-
      fi
      printf '%-11s %-7s %8s %11s %9s %13s %6s\n' "$prov" "$op" "$bytes" "$ns" "$mbs" "${ref:--}" "$ratio"
      if [ "$prov" = aesgcm-256 ] && [ "$bytes" = 4096 ]; then
        target="$target $op=$ratio"
      fi
    done <<<"$out"
  done
done
echo "(MB/s = 10^6 plaintext bytes per second, one thread; openssl column = openssl speed -evp for the same cipher and size, measured just before/after)"
if [ -n "$target" ]; then
  miss=$(for t in $target; do echo "${t#*=}"; done | awk '$1 < 0.7 {m=1} END {print m+0}')
  if [ "$miss" = 0 ]; then
    echo "target aesgcm >= 0.7x OpenSSL at 4 KiB: met ($target )"
  else
    echo "target aesgcm >= 0.7x OpenSSL at 4 KiB: NOT met ($target )"
    [ "${STRICT:-0}" = 1 ] && exit 1
  fi
fi
exit 0
