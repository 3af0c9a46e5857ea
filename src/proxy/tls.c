/* tls.c - OpenSSL server/client contexts (see tls.h). */
#include "proxy/tls.h"

#include <arpa/inet.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

/* TLS 1.2: forward-secret (ECDHE) AEAD suites only, no CBC/SHA1, no static RSA, no DHE. */
static const char tls12_ciphers[] = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                                    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                                    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
/* TLS 1.3: stated explicitly rather than inherited from the OpenSSL build's defaults (which
 * may be changed by a system-wide openssl.cnf). */
static const char tls13_suites[] =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
static const char ecdh_groups[] = "X25519:P-256:P-384";

void tls_error_append(es_error *err)
{
    unsigned long e;
    char text[256];
    while ((e = ERR_get_error()) != 0) {
        ERR_error_string_n(e, text, sizeof text);
        if (err) {
            size_t n = strlen(err->msg);
            snprintf(err->msg + n, sizeof err->msg - n, "%s%s", n ? ": " : "", text);
        }
    }
}

static int alpn_select_h2(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    for (unsigned int i = 0; i < inlen;) {
        unsigned int n = in[i];
        if (i + 1 + n > inlen)
            break;
        if (n == 2 && memcmp(in + i + 1, "h2", 2) == 0) {
            *out = in + i + 1;
            *outlen = 2;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    /* gRPC requires HTTP/2: refuse clients that only offer http/1.1 */
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static SSL_CTX *ctx_common(const SSL_METHOD *method, es_error *err)
{
    SSL_CTX *ctx = SSL_CTX_new(method);
    if (!ctx) {
        es_error_set(err, 0, "SSL_CTX_new failed");
        tls_error_append(err);
        return NULL;
    }
    /* TLS 1.0/1.1 refused; no compression (CRIME); no renegotiation (client-initiated
     * renegotiation is a cheap CPU DoS and nothing here needs it); server cipher order */
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        es_error_set(err, 0, "cannot set the minimum TLS version");
        tls_error_append(err);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_clear_options(ctx, SSL_OP_ALLOW_CLIENT_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_set_cipher_list(ctx, tls12_ciphers) != 1 ||
        SSL_CTX_set_ciphersuites(ctx, tls13_suites) != 1 ||
        SSL_CTX_set1_groups_list(ctx, ecdh_groups) != 1) {
        es_error_set(err, 0, "cannot set the TLS cipher lists or key exchange groups");
        tls_error_append(err);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static int load_pair(SSL_CTX *ctx, const char *cert_file, const char *key_file, const char *what,
                     es_error *err)
{
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        es_error_set(err, 0, "%s: cannot load certificate %s", what, cert_file);
        tls_error_append(err);
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        es_error_set(err, 0, "%s: cannot load private key %s", what, key_file);
        tls_error_append(err);
        return -1;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        es_error_set(err, 0, "%s: private key %s does not match certificate %s", what, key_file,
                     cert_file);
        tls_error_append(err);
        return -1;
    }
    return 0;
}

SSL_CTX *tls_server_ctx_new(const char *cert_file, const char *key_file, const char *ca_file,
                            bool client_cert_auth, const char *crl_file, es_error *err)
{
    SSL_CTX *ctx = ctx_common(TLS_server_method(), err);
    if (!ctx)
        return NULL;
    if (load_pair(ctx, cert_file, key_file, "--cert-file/--key-file", err) < 0)
        goto fail;
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select_h2, NULL);
    if (ca_file && *ca_file) {
        if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
            es_error_set(err, 0, "--trusted-ca-file: cannot load %s", ca_file);
            tls_error_append(err);
            goto fail;
        }
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca_file);
        if (names)
            SSL_CTX_set_client_CA_list(ctx, names);
    }
    if (crl_file && *crl_file) {
        X509_STORE *store = SSL_CTX_get_cert_store(ctx);
        X509_LOOKUP *lookup = X509_STORE_add_lookup(store, X509_LOOKUP_file());
        if (!lookup || X509_load_crl_file(lookup, crl_file, X509_FILETYPE_PEM) <= 0) {
            es_error_set(err, 0, "--client-crl-file: cannot load CRLs from %s", crl_file);
            tls_error_append(err);
            goto fail;
        }
        X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
    }
    if (client_cert_auth)
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    /* session tickets make reconnecting clients cheap */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

SSL_CTX *tls_client_ctx_new(const char *ca_file, const char *cert_file, const char *key_file,
                            bool insecure_skip_verify, es_error *err)
{
    SSL_CTX *ctx = ctx_common(TLS_client_method(), err);
    if (!ctx)
        return NULL;
    if (ca_file && *ca_file) {
        if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
            es_error_set(err, 0, "--cacert: cannot load %s", ca_file);
            tls_error_append(err);
            goto fail;
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        es_error_set(err, 0, "cannot load the system CA certificates");
        tls_error_append(err);
        goto fail;
    }
    if (cert_file && *cert_file && load_pair(ctx, cert_file, key_file, "--cert/--key", err) < 0)
        goto fail;
    static const unsigned char alpn[] = {2, 'h', '2'};
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn);
    SSL_CTX_set_verify(ctx, insecure_skip_verify ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

int tls_client_prepare(SSL *ssl, const char *host, bool verify, es_error *err)
{
    unsigned char addr[16];
    bool is_ip = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
    if (!is_ip && SSL_set_tlsext_host_name(ssl, host) != 1)
        return es_error_set(err, 0, "cannot set SNI %s", host);
    if (!verify)
        return 0;
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, host)
                   : X509_VERIFY_PARAM_set1_host(param, host, 0);
    if (ok != 1)
        return es_error_set(err, 0, "cannot set expected peer name %s", host);
    return 0;
}
