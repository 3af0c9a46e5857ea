/* peer_identity.c - client certificate names for the access policy (see peer_identity.h). */
#include "proxy/peer_identity.h"

#include <stdio.h>
#include <string.h>

#include <event2/bufferevent_ssl.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* Copies a name into pi->text; NULL when it has NUL/control bytes or does not fit. */
static const char *keep(peer_identity *pi, const unsigned char *s, int len)
{
    if (len <= 0)
        return NULL;
    for (int i = 0; i < len; i++)
        if (s[i] < 0x20 || s[i] == 0x7f)
            return NULL;
    if (pi->text_used + (size_t)len + 1 > sizeof pi->text)
        return NULL;
    char *dst = pi->text + pi->text_used;
    memcpy(dst, s, (size_t)len);
    dst[len] = '\0';
    pi->text_used += (size_t)len + 1;
    return dst;
}

/* "CN=..." with '"' and '\\' escaped and non-ASCII as \xNN, truncated with "...". */
static void set_shown(peer_identity *pi, const char *tag, const char *name)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = (size_t)snprintf(pi->shown, sizeof pi->shown, "%s", tag);
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        char tmp[4];
        size_t n = 0;
        if (*p == '"' || *p == '\\') {
            tmp[n++] = '\\';
            tmp[n++] = (char)*p;
        } else if (*p >= 0x20 && *p < 0x7f) {
            tmp[n++] = (char)*p;
        } else {
            tmp[0] = '\\', tmp[1] = 'x', tmp[2] = hex[*p >> 4], tmp[3] = hex[*p & 15];
            n = 4;
        }
        if (o + n + 4 > sizeof pi->shown) {
            memcpy(pi->shown + o, "...", 4);
            return;
        }
        memcpy(pi->shown + o, tmp, n);
        o += n;
    }
    pi->shown[o] = '\0';
}

void peer_identity_from_cert(peer_identity *pi, X509 *cert)
{
    memset(pi, 0, sizeof *pi);
    pi->computed = true;
    snprintf(pi->shown, sizeof pi->shown, "anonymous");
    if (!cert)
        return;
    pi->has_cert = true;
    X509_NAME *subject = X509_get_subject_name(cert);
    int idx = subject ? X509_NAME_get_index_by_NID(subject, NID_commonName, -1) : -1;
    if (idx >= 0) {
        ASN1_STRING *data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx));
        unsigned char *utf8 = NULL;
        int len = data ? ASN1_STRING_to_UTF8(&utf8, data) : -1;
        if (len > 0 && memchr(utf8, 0, (size_t)len) == NULL)
            pi->cn = keep(pi, utf8, len);
        OPENSSL_free(utf8);
    }
    GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type != GEN_DNS && g->type != GEN_URI)
            continue;
        const ASN1_IA5STRING *s =
            g->type == GEN_DNS ? g->d.dNSName : g->d.uniformResourceIdentifier;
        const unsigned char *bytes = ASN1_STRING_get0_data(s);
        int len = ASN1_STRING_length(s);
        if (!bytes || len <= 0 || memchr(bytes, 0, (size_t)len))
            continue;
        if (g->type == GEN_DNS && pi->n_dns < PEER_IDENTITY_MAX_NAMES) {
            const char *k = keep(pi, bytes, len);
            if (k)
                pi->dns[pi->n_dns++] = k;
        } else if (g->type == GEN_URI && pi->n_uris < PEER_IDENTITY_MAX_NAMES) {
            const char *k = keep(pi, bytes, len);
            if (k)
                pi->uris[pi->n_uris++] = k;
        }
    }
    GENERAL_NAMES_free(sans);
    if (pi->cn)
        set_shown(pi, "CN=", pi->cn);
    else if (pi->n_dns)
        set_shown(pi, "DNS:", pi->dns[0]);
    else if (pi->n_uris)
        set_shown(pi, "URI:", pi->uris[0]);
    else
        snprintf(pi->shown, sizeof pi->shown, "certificate without names");
}

void peer_identity_compute(peer_identity *pi, struct bufferevent *bev)
{
    SSL *ssl = bev ? bufferevent_openssl_get_ssl(bev) : NULL;
    X509 *cert = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
    if (cert && SSL_get_verify_result(ssl) != X509_V_OK)
        cert = NULL; /* presented but not verified: no identity from it */
    peer_identity_from_cert(pi, cert);
}

void peer_identity_view(const peer_identity *pi, access_identity *out)
{
    out->has_cert = pi->has_cert;
    out->cn = pi->cn;
    out->dns = pi->dns;
    out->n_dns = pi->n_dns;
    out->uris = pi->uris;
    out->n_uris = pi->n_uris;
}
