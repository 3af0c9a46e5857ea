/* peer_identity.h - the identity of a client connection, from its verified TLS certificate.
 *
 * Computed once per downstream connection, lazily on its first call while an access policy is
 * loaded (peer_identity_compute; the handshake is over by then). Only a certificate that
 * OpenSSL verified (SSL_get_verify_result == X509_V_OK) gives names: the subject CN and the DNS
 * and URI SANs. Names with NUL or control bytes are ignored, and so are names beyond the fixed
 * capacity: ignoring a name can only take permissions away (rules grant, never deny), so the
 * limits fail closed. The struct is plain data embedded in the h2conn (no allocation, no free);
 * its pointers point into its own text and stay valid while it does not move.
 */
#ifndef ETCDSEAL_PROXY_PEER_IDENTITY_H
#define ETCDSEAL_PROXY_PEER_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/bufferevent.h>

#include "policy/access_policy.h"

#define PEER_IDENTITY_MAX_NAMES 16  /* DNS and URI SANs kept, each */
#define PEER_IDENTITY_TEXT_MAX 1536 /* bytes for all names */
#define PEER_IDENTITY_SHOWN_MAX 160 /* identity text in messages and logs */

typedef struct peer_identity {
    bool computed;
    bool has_cert; /* a verified client certificate */
    const char *cn;
    const char *dns[PEER_IDENTITY_MAX_NAMES];
    size_t n_dns;
    const char *uris[PEER_IDENTITY_MAX_NAMES];
    size_t n_uris;
    char shown[PEER_IDENTITY_SHOWN_MAX]; /* "CN=x", "DNS:x", "URI:x" or "anonymous", escaped */
    size_t text_used;
    char text[PEER_IDENTITY_TEXT_MAX];
} peer_identity;

/* Fills pi from the connection's TLS session (bev from bufferevent_openssl_socket_new), or as
 * anonymous when bev is not a TLS bufferevent or no verified certificate was presented. */
void peer_identity_compute(peer_identity *pi, struct bufferevent *bev);
/* Fills pi from a certificate already verified by the caller (tests). cert NULL: anonymous. */
struct x509_st;
void peer_identity_from_cert(peer_identity *pi, struct x509_st *cert);
/* The view the access policy takes (pointers into pi). */
void peer_identity_view(const peer_identity *pi, access_identity *out);

#endif
