/* tls.h - OpenSSL contexts for both sides of the proxy.
 *
 * Both sides: TLS >= 1.2; TLS 1.2 only with ECDHE + AES-GCM/ChaCha20-Poly1305; TLS 1.3 with
 * AES-GCM and ChaCha20-Poly1305; groups X25519, P-256, P-384; no compression, no
 * renegotiation; the server's cipher order wins.
 * Server side: certificate + key, ALPN "h2", and (client_cert_auth) verification of client
 * certificates against a CA bundle (expired or not-yet-valid certificates fail verification).
 * Client side (upstream etcd): CA bundle or system default, optional client certificate, optional
 * skip-verify; tls_client_prepare() sets SNI and host/IP verification on a new SSL for one
 * endpoint. Contexts are built once at start and shared by all workers (SSL_CTX is thread-safe for
 * SSL_new); free with SSL_CTX_free.
 */
#ifndef ETCDSEAL_PROXY_TLS_H
#define ETCDSEAL_PROXY_TLS_H

#include <stdbool.h>

#include <openssl/ssl.h>

#include "base/error.h"

/* crl_file (may be NULL/""): client certificates listed there are refused (every chain
 * element is checked against the CRLs of the file). */
SSL_CTX *tls_server_ctx_new(const char *cert_file, const char *key_file, const char *ca_file,
                            bool client_cert_auth, const char *crl_file, es_error *err);
SSL_CTX *tls_client_ctx_new(const char *ca_file, const char *cert_file, const char *key_file,
                            bool insecure_skip_verify, es_error *err);
/* Sets SNI (host names only) and the expected host name or IP address on `ssl`. */
int tls_client_prepare(SSL *ssl, const char *host, bool verify, es_error *err);
/* Appends OpenSSL's queued error text to err (and clears the queue). */
void tls_error_append(es_error *err);

#endif
