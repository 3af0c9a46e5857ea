#!/usr/bin/env bash
# certs.sh DIR - test PKI for the TLS integration tests (openssl, EC P-256, valid 2 days).
#   ca.pem ca.key           CA 1
#   server.pem server.key   signed by CA 1; SAN IP:127.0.0.1, DNS:localhost; server+client auth
#   client.pem client.key   signed by CA 1; CN it-client; client auth
#   ca2.pem ca2.key         CA 2 (unrelated)
#   client2.pem client2.key signed by CA 2; CN it-client2; client auth
# Private keys are created mode 0600. Exit status non-zero on any openssl failure.
set -eu
dir=${1:?usage: certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
umask 077

newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

ca() { # ca NAME CN
  newkey "$1.key"
  openssl req -x509 -new -key "$1.key" -out "$1.pem" -days 2 -subj "/CN=$2" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}

leaf() { # leaf NAME CA CN EXT
  newkey "$1.key"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$3"
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" "$4" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days 2 \
    -out "$1.pem" -extfile "$1.ext" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

ca ca it-ca-1
ca ca2 it-ca-2
leaf server ca 127.0.0.1 \
  "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth,clientAuth"
leaf client ca it-client "extendedKeyUsage=clientAuth"
leaf client2 ca2 it-client2 "extendedKeyUsage=clientAuth"
chmod 600 ./*.key
chmod 644 ./*.pem
openssl verify -CAfile ca.pem server.pem client.pem >/dev/null
openssl verify -CAfile ca2.pem client2.pem >/dev/null
