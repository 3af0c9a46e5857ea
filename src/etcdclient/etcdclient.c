/* etcdclient.c - blocking etcd v3 unary calls over gRPC/HTTP/2 (see etcdclient.h).
 *
 * Layers, bottom up: endpoint parsing; a connection (non-blocking socket + optional OpenSSL
 * session, every wait a poll() bounded by the call's deadline); an nghttp2 client session fed
 * with nghttp2_session_mem_recv / drained with nghttp2_session_mem_send; one call at a time
 * (struct call: the framed request, the reassembled response, headers and trailers seen);
 * and the retry policy across endpoints. Nothing here prints.
 */
#include "etcdclient/etcdclient.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"

enum {
    ST_OK = 0,
    ST_CANCELLED = 1,
    ST_UNKNOWN = 2,
    ST_DEADLINE = 4,
    ST_RESOURCE_EXHAUSTED = 8,
    ST_INTERNAL = 13,
    ST_UNAVAILABLE = 14,
};

#define GRPC_MSG_SHOWN 300
#define READ_CHUNK 65536

typedef struct endpoint {
    char *text;      /* as configured */
    char *host;      /* without brackets */
    char *port;      /* service string for getaddrinfo */
    char *authority; /* host:port ([v6]:port) */
    bool tls;
} endpoint;

/* One unary call in flight. */
typedef struct call {
    int32_t sid;
    buf_t req; /* gRPC-framed request message */
    size_t req_off;
    buf_t resp; /* DATA payload: gRPC-framed response */
    int http_status;
    int grpc_status; /* -1 until seen */
    char grpc_msg[GRPC_MSG_SHOWN];
    bool headers_sent;
    bool closed;
    uint32_t rst_code;
    bool too_big;
} call;

struct etcdc {
    endpoint eps[ETCDC_MAX_ENDPOINTS];
    size_t n_eps;
    size_t cur;
    SSL_CTX *tls;
    int dial_ms, req_ms;
    size_t max_recv;
    /* current connection */
    int fd;
    SSL *ssl;
    nghttp2_session *h2;
    bool goaway;
    int32_t goaway_last_sid;
    call *active;
    char why[256]; /* last transport problem (for messages) */
};

static const char *const status_names[] = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

const char *etcdc_status_name(int code)
{
    if (code < 0 || code >= (int)(sizeof status_names / sizeof *status_names))
        return "UNKNOWN";
    return status_names[code];
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------ endpoints */

static void endpoint_free(endpoint *e)
{
    free(e->text);
    free(e->host);
    free(e->port);
    free(e->authority);
    memset(e, 0, sizeof *e);
}

static int endpoint_parse(endpoint *e, const char *s, size_t n, bool tls_default, es_error *err)
{
    memset(e, 0, sizeof *e);
    e->text = strndup(s, n);
    if (!e->text)
        return es_error_set(err, ST_INTERNAL, "out of memory");
    const char *p = e->text;
    e->tls = tls_default;
    if (strncmp(p, "https://", 8) == 0) {
        e->tls = true;
        p += 8;
    } else if (strncmp(p, "http://", 7) == 0) {
        e->tls = false;
        p += 7;
    } else if (strstr(p, "://")) {
        es_error_set(err, 3, "--endpoints: \"%s\": only http:// and https:// are supported",
                     e->text);
        goto fail;
    }
    size_t plen = strcspn(p, "/");
    if (p[plen] == '/' && p[plen + 1] != '\0') {
        es_error_set(err, 3, "--endpoints: \"%s\": unexpected path", e->text);
        goto fail;
    }
    const char *hs = p, *he, *colon;
    if (*p == '[') {
        he = memchr(p, ']', plen);
        if (!he || he[1] != ':')
            goto bad;
        hs = p + 1;
        colon = he + 1;
    } else {
        colon = NULL;
        for (const char *q = p; q < p + plen; q++)
            if (*q == ':')
                colon = q;
        if (!colon)
            goto bad;
        he = colon;
    }
    if (he == hs || colon + 1 >= p + plen)
        goto bad;
    e->host = strndup(hs, (size_t)(he - hs));
    e->port = strndup(colon + 1, (size_t)(p + plen - colon - 1));
    e->authority = strndup(p, plen);
    if (!e->host || !e->port || !e->authority) {
        es_error_set(err, ST_INTERNAL, "out of memory");
        goto fail;
    }
    for (const char *q = e->port; *q; q++)
        if (*q < '0' || *q > '9')
            goto bad;
    return 0;
bad:
    es_error_set(err, 3,
                 "--endpoints: \"%s\": expected host:port, http://host:port or "
                 "https://host:port",
                 e->text);
fail:
    endpoint_free(e);
    return -1;
}

/* ------------------------------------------------------------------ TLS context */

static void ssl_reason(char *out, size_t n)
{
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, out, n);
    else
        snprintf(out, n, "unknown TLS error");
    ERR_clear_error();
}

static SSL_CTX *tls_ctx_new(const etcdc_options *o, es_error *err)
{
    char why[200];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        return es_error_set(err, ST_INTERNAL, "SSL_CTX_new failed"), NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (o->cacert && *o->cacert) {
        if (SSL_CTX_load_verify_locations(ctx, o->cacert, NULL) != 1) {
            ssl_reason(why, sizeof why);
            es_error_set(err, 3, "--cacert %s: %s", o->cacert, why);
            goto fail;
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        ssl_reason(why, sizeof why);
        es_error_set(err, 3, "system CA certificates: %s", why);
        goto fail;
    }
    if (o->cert && *o->cert) {
        if (SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1) {
            ssl_reason(why, sizeof why);
            es_error_set(err, 3, "--cert %s: %s", o->cert, why);
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, o->key, SSL_FILETYPE_PEM) != 1) {
            ssl_reason(why, sizeof why);
            es_error_set(err, 3, "--key %s: %s", o->key, why);
            goto fail;
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
            es_error_set(err, 3, "--key %s does not match --cert %s", o->key, o->cert);
            goto fail;
        }
    }
    static const unsigned char alpn[] = {2, 'h', '2'};
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn);
    SSL_CTX_set_verify(ctx, o->insecure_skip_tls_verify ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

/* ------------------------------------------------------------------ raw I/O */

/* Waits for `events` on the socket until the deadline. 0 ready, -1 timeout/error (c->why). */
static int wait_fd(etcdc *c, short events, long long deadline)
{
    for (;;) {
        long long left = deadline - now_ms();
        if (left <= 0) {
            snprintf(c->why, sizeof c->why, "timed out");
            return -1;
        }
        struct pollfd pfd = {.fd = c->fd, .events = events};
        int r = poll(&pfd, 1, left > 1000000 ? 1000000 : (int)left);
        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR) {
            snprintf(c->why, sizeof c->why, "poll: %s", strerror(errno));
            return -1;
        }
    }
}

static int wait_ssl(etcdc *c, int ssl_rc, long long deadline, const char *what)
{
    int e = SSL_get_error(c->ssl, ssl_rc);
    if (e == SSL_ERROR_WANT_READ)
        return wait_fd(c, POLLIN, deadline);
    if (e == SSL_ERROR_WANT_WRITE)
        return wait_fd(c, POLLOUT, deadline);
    if (e == SSL_ERROR_ZERO_RETURN) {
        snprintf(c->why, sizeof c->why, "%s: connection closed by peer", what);
        return -1;
    }
    char r[200];
    if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
        snprintf(r, sizeof r, "%s", errno ? strerror(errno) : "connection closed by peer");
    else
        ssl_reason(r, sizeof r);
    snprintf(c->why, sizeof c->why, "%s: %s", what, r);
    return -1;
}

static int io_write(etcdc *c, const uint8_t *p, size_t n, long long deadline)
{
    while (n > 0) {
        if (c->ssl) {
            ERR_clear_error();
            int r = SSL_write(c->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
            if (r > 0) {
                p += r;
                n -= (size_t)r;
            } else if (wait_ssl(c, r, deadline, "TLS write") != 0) {
                return -1;
            }
            continue;
        }
        ssize_t r = send(c->fd, p, n, MSG_NOSIGNAL);
        if (r > 0) {
            p += r;
            n -= (size_t)r;
        } else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(c, POLLOUT, deadline) != 0)
                return -1;
        } else if (!(r < 0 && errno == EINTR)) {
            snprintf(c->why, sizeof c->why, "send: %s", strerror(errno));
            return -1;
        }
    }
    return 0;
}

/* Reads what is available (waiting until the deadline for the first byte) into nghttp2. */
static int io_read(etcdc *c, long long deadline)
{
    uint8_t b[READ_CHUNK];
    for (;;) {
        ssize_t n;
        if (c->ssl) {
            ERR_clear_error();
            int r = SSL_read(c->ssl, b, sizeof b);
            if (r <= 0) {
                if (wait_ssl(c, r, deadline, "TLS read") != 0)
                    return -1;
                continue;
            }
            n = r;
        } else {
            n = recv(c->fd, b, sizeof b, 0);
            if (n == 0) {
                snprintf(c->why, sizeof c->why, "connection closed by peer");
                return -1;
            }
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    if (wait_fd(c, POLLIN, deadline) != 0)
                        return -1;
                    continue;
                }
                snprintf(c->why, sizeof c->why, "recv: %s", strerror(errno));
                return -1;
            }
        }
        ssize_t used = nghttp2_session_mem_recv(c->h2, b, (size_t)n);
        if (used < 0) {
            snprintf(c->why, sizeof c->why, "HTTP/2: %s", nghttp2_strerror((int)used));
            return -1;
        }
        if (!c->ssl || SSL_pending(c->ssl) == 0)
            return 0;
    }
}

static int flush(etcdc *c, long long deadline)
{
    for (;;) {
        const uint8_t *d;
        ssize_t n = nghttp2_session_mem_send(c->h2, &d);
        if (n < 0) {
            snprintf(c->why, sizeof c->why, "HTTP/2: %s", nghttp2_strerror((int)n));
            return -1;
        }
        if (n == 0)
            return 0;
        if (io_write(c, d, (size_t)n, deadline) != 0)
            return -1;
    }
}

/* ------------------------------------------------------------------ nghttp2 callbacks */

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
    (void)flags;
    (void)ud;
    call *k = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (!k || f->hd.type != NGHTTP2_HEADERS)
        return 0;
    if (nlen == 7 && memcmp(name, ":status", 7) == 0) {
        k->http_status = 0;
        for (size_t i = 0; i < vlen && i < 4; i++)
            k->http_status = k->http_status * 10 + (value[i] - '0');
    } else if (nlen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        k->grpc_status = 0;
        for (size_t i = 0; i < vlen && i < 4; i++)
            k->grpc_status =
                k->grpc_status * 10 + (value[i] >= '0' && value[i] <= '9' ? value[i] - '0' : 0);
    } else if (nlen == 12 && memcmp(name, "grpc-message", 12) == 0) {
        /* percent-decoded, truncated */
        size_t o = 0;
        for (size_t i = 0; i < vlen && o + 1 < sizeof k->grpc_msg; i++) {
            char ch = (char)value[i];
            if (ch == '%' && i + 2 < vlen) {
                char hex[3] = {(char)value[i + 1], (char)value[i + 2], 0};
                char *end;
                long v = strtol(hex, &end, 16);
                if (*end == '\0') {
                    ch = (char)v;
                    i += 2;
                }
            }
            k->grpc_msg[o++] = ch;
        }
        k->grpc_msg[o] = '\0';
    }
    return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t len,
                   void *ud)
{
    (void)flags;
    etcdc *c = ud;
    call *k = nghttp2_session_get_stream_user_data(s, sid);
    if (!k || k->too_big)
        return 0;
    if (k->resp.len + len > c->max_recv + 5 || buf_append(&k->resp, data, len) != 0) {
        k->too_big = true;
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, sid, NGHTTP2_CANCEL);
    }
    return 0;
}

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    (void)ud;
    if (f->hd.type == NGHTTP2_HEADERS) {
        call *k = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
        if (k)
            k->headers_sent = true;
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    (void)s;
    etcdc *c = ud;
    if (f->hd.type == NGHTTP2_GOAWAY) {
        c->goaway = true;
        c->goaway_last_sid = f->goaway.last_stream_id;
    }
    return 0;
}

static int on_close(nghttp2_session *s, int32_t sid, uint32_t code, void *ud)
{
    (void)ud;
    call *k = nghttp2_session_get_stream_user_data(s, sid);
    if (k) {
        k->closed = true;
        k->rst_code = code;
    }
    return 0;
}

static ssize_t req_read(nghttp2_session *s, int32_t sid, uint8_t *b, size_t len, uint32_t *flags,
                        nghttp2_data_source *src, void *ud)
{
    (void)s;
    (void)sid;
    (void)ud;
    call *k = src->ptr;
    size_t left = k->req.len - k->req_off;
    size_t n = left < len ? left : len;
    if (n)
        memcpy(b, k->req.data + k->req_off, n);
    k->req_off += n;
    if (k->req_off == k->req.len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* ------------------------------------------------------------------ connection */

static void conn_close(etcdc *c)
{
    if (c->h2) {
        nghttp2_session_del(c->h2);
        c->h2 = NULL;
    }
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    c->goaway = false;
    c->goaway_last_sid = 0;
}

static int tcp_connect(etcdc *c, const endpoint *e, long long deadline)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC}, *res = NULL;
    int gr = getaddrinfo(e->host, e->port, &hints, &res);
    if (gr != 0) {
        snprintf(c->why, sizeof c->why, "resolve %s: %s", e->host, gai_strerror(gr));
        return -1;
    }
    int rc = -1;
    for (struct addrinfo *a = res; a && rc != 0; a = a->ai_next) {
        c->fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (c->fd < 0) {
            snprintf(c->why, sizeof c->why, "socket: %s", strerror(errno));
            continue;
        }
        if (connect(c->fd, a->ai_addr, a->ai_addrlen) == 0) {
            rc = 0;
        } else if (errno == EINPROGRESS && wait_fd(c, POLLOUT, deadline) == 0) {
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
            if (soerr == 0)
                rc = 0;
            else
                snprintf(c->why, sizeof c->why, "connect: %s", strerror(soerr));
        } else if (errno != EINPROGRESS) {
            snprintf(c->why, sizeof c->why, "connect: %s", strerror(errno));
        }
        if (rc != 0) {
            close(c->fd);
            c->fd = -1;
        }
    }
    freeaddrinfo(res);
    if (rc == 0) {
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return rc;
}

static int tls_handshake(etcdc *c, const endpoint *e, long long deadline)
{
    c->ssl = SSL_new(c->tls);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
        snprintf(c->why, sizeof c->why, "TLS: SSL_new failed");
        return -1;
    }
    unsigned char tmp[16];
    bool is_ip = inet_pton(AF_INET, e->host, tmp) == 1 || inet_pton(AF_INET6, e->host, tmp) == 1;
    X509_VERIFY_PARAM *param = SSL_get0_param(c->ssl);
    if (is_ip) {
        X509_VERIFY_PARAM_set1_ip_asc(param, e->host);
    } else {
        SSL_set_tlsext_host_name(c->ssl, e->host);
        X509_VERIFY_PARAM_set1_host(param, e->host, 0);
    }
    for (;;) {
        ERR_clear_error();
        int r = SSL_connect(c->ssl);
        if (r == 1)
            break;
        long vr = SSL_get_verify_result(c->ssl);
        if (vr != X509_V_OK) {
            snprintf(c->why, sizeof c->why, "TLS handshake: certificate verify failed: %s",
                     X509_verify_cert_error_string(vr));
            return -1;
        }
        if (wait_ssl(c, r, deadline, "TLS handshake") != 0)
            return -1;
    }
    return 0;
}

static int conn_open(etcdc *c, const endpoint *e)
{
    long long deadline = now_ms() + c->dial_ms;
    c->why[0] = '\0';
    if (tcp_connect(c, e, deadline) != 0)
        return -1;
    if (e->tls && tls_handshake(c, e, deadline) != 0)
        goto fail;
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        goto oom;
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_close);
    int r = nghttp2_session_client_new(&c->h2, cbs, c);
    nghttp2_session_callbacks_del(cbs);
    if (r != 0)
        goto oom;
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                   {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 16u << 20},
                                   {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 1u << 20}};
    if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof *iv) != 0 ||
        nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, 64 << 20) != 0)
        goto oom;
    if (flush(c, deadline) != 0)
        goto fail;
    return 0;
oom:
    snprintf(c->why, sizeof c->why, "out of memory");
fail:
    conn_close(c);
    return -1;
}

/* ------------------------------------------------------------------ calls */

enum outcome { OUT_DONE, OUT_RETRY_SAFE, OUT_RETRY_IF_IDEMPOTENT, OUT_FAIL };

static int frame_request(buf_t *out, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    if (n > UINT32_MAX || buf_reserve(out, n + 5) != 0)
        return -1;
    out->data[0] = 0;
    out->data[1] = (uint8_t)(n >> 24);
    out->data[2] = (uint8_t)(n >> 16);
    out->data[3] = (uint8_t)(n >> 8);
    out->data[4] = (uint8_t)n;
    protobuf_c_message_pack(m, out->data + 5);
    out->len = n + 5;
    return 0;
}

#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE             \
    }

/* One attempt on the current connection. */
static enum outcome attempt(etcdc *c, const endpoint *e, const char *path, call *k, es_error *err)
{
    long long deadline = now_ms() + c->req_ms;
    char timeout[32];
    snprintf(timeout, sizeof timeout, "%dm", c->req_ms);
    nghttp2_nv hdrs[] = {NV(":method", "POST"),
                         NV(":scheme", e->tls ? "https" : "http"),
                         NV(":path", path),
                         NV(":authority", e->authority),
                         NV("content-type", "application/grpc"),
                         NV("te", "trailers"),
                         NV("grpc-timeout", timeout),
                         NV("user-agent", "etcdseal-etcdclient")};
    nghttp2_data_provider prd = {.source.ptr = k, .read_callback = req_read};
    k->req_off = 0;
    k->sid = nghttp2_submit_request(c->h2, NULL, hdrs, sizeof hdrs / sizeof *hdrs, &prd, k);
    if (k->sid < 0) {
        snprintf(c->why, sizeof c->why, "HTTP/2: %s", nghttp2_strerror(k->sid));
        return OUT_RETRY_SAFE;
    }
    c->active = k;
    int io = 0;
    while (!k->closed) {
        if ((io = flush(c, deadline)) != 0)
            break;
        if (k->closed)
            break;
        if (c->goaway && k->sid > c->goaway_last_sid) {
            snprintf(c->why, sizeof c->why, "server sent GOAWAY before processing the call");
            io = -1;
            break;
        }
        if (!nghttp2_session_want_read(c->h2)) {
            snprintf(c->why, sizeof c->why, "HTTP/2 session ended");
            io = -1;
            break;
        }
        if ((io = io_read(c, deadline)) != 0)
            break;
    }
    c->active = NULL;
    if (io != 0 || !k->closed) {
        bool timed_out = now_ms() >= deadline;
        bool unprocessed = !k->headers_sent || (c->goaway && k->sid > c->goaway_last_sid);
        conn_close(c);
        if (timed_out) {
            es_error_set(err, ST_DEADLINE, "%s on %s: no answer within %d ms", path, e->text,
                         c->req_ms);
            return OUT_FAIL;
        }
        return unprocessed ? OUT_RETRY_SAFE : OUT_RETRY_IF_IDEMPOTENT;
    }
    if (c->goaway)
        conn_close(c); /* the call finished; the next one reconnects */
    if (k->too_big) {
        es_error_set(err, ST_RESOURCE_EXHAUSTED,
                     "%s on %s: response larger than %zu bytes (use a smaller page --limit)", path,
                     e->text, c->max_recv);
        return OUT_FAIL;
    }
    if (k->grpc_status < 0 && k->rst_code == NGHTTP2_REFUSED_STREAM) {
        snprintf(c->why, sizeof c->why, "stream refused");
        return OUT_RETRY_SAFE;
    }
    if (k->grpc_status < 0) {
        if (k->rst_code != NGHTTP2_NO_ERROR)
            snprintf(c->why, sizeof c->why, "stream reset (%s)",
                     nghttp2_http2_strerror(k->rst_code));
        else
            snprintf(c->why, sizeof c->why, "no grpc-status (HTTP status %d)", k->http_status);
        return OUT_RETRY_IF_IDEMPOTENT;
    }
    if (k->grpc_status != ST_OK) {
        es_error_set(err, k->grpc_status, "%s on %s: %s: %s", path, e->text,
                     etcdc_status_name(k->grpc_status), k->grpc_msg[0] ? k->grpc_msg : "(none)");
        return OUT_FAIL;
    }
    if (k->resp.len < 5 || k->resp.data[0] != 0) {
        es_error_set(err, ST_INTERNAL, "%s on %s: malformed or compressed gRPC response", path,
                     e->text);
        return OUT_FAIL;
    }
    uint32_t mlen = (uint32_t)k->resp.data[1] << 24 | (uint32_t)k->resp.data[2] << 16 |
                    (uint32_t)k->resp.data[3] << 8 | k->resp.data[4];
    if ((size_t)mlen + 5 != k->resp.len) {
        es_error_set(err, ST_INTERNAL, "%s on %s: expected one gRPC message, got %zu bytes", path,
                     e->text, k->resp.len);
        return OUT_FAIL;
    }
    return OUT_DONE;
}

static void call_reset(call *k)
{
    buf_reset(&k->resp);
    k->sid = 0;
    k->http_status = 0;
    k->grpc_status = -1;
    k->grpc_msg[0] = '\0';
    k->headers_sent = k->closed = k->too_big = false;
    k->rst_code = 0;
}

static void *do_call(etcdc *c, const char *path, const ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *rdesc, bool idempotent, es_error *err)
{
    call k = {.req = BUF_INIT, .resp = BUF_INIT};
    void *out = NULL;
    if (frame_request(&k.req, req) != 0) {
        es_error_set(err, ST_INTERNAL, "%s: out of memory", path);
        return NULL;
    }
    size_t max_attempts = c->n_eps + 1;
    enum outcome o = OUT_FAIL;
    for (size_t a = 0; a < max_attempts; a++) {
        const endpoint *e = &c->eps[c->cur];
        if (!c->h2 && conn_open(c, e) != 0) {
            o = OUT_RETRY_SAFE;
        } else {
            call_reset(&k);
            o = attempt(c, e, path, &k, err);
        }
        if (o == OUT_DONE || o == OUT_FAIL || (o == OUT_RETRY_IF_IDEMPOTENT && !idempotent))
            break;
        c->cur = (c->cur + 1) % c->n_eps; /* next endpoint */
    }
    if (o == OUT_DONE) {
        out = protobuf_c_message_unpack(rdesc, NULL, k.resp.len - 5, k.resp.data + 5);
        if (!out)
            es_error_set(err, ST_INTERNAL, "%s on %s: cannot decode the response", path,
                         etcdc_endpoint(c));
    } else if (o == OUT_RETRY_IF_IDEMPOTENT) {
        es_error_set(err, ST_UNAVAILABLE,
                     "%s on %s: %s (the request may have been applied; not retried)", path,
                     etcdc_endpoint(c), c->why);
    } else if (o == OUT_RETRY_SAFE) {
        es_error_set(err, ST_UNAVAILABLE, "%s: no endpoint reachable (last: %s: %s)", path,
                     c->eps[(c->cur + c->n_eps - 1) % c->n_eps].text, c->why);
    }
    buf_free(&k.req);
    buf_wipe_free(&k.resp);
    return out;
}

/* ------------------------------------------------------------------ public */

int etcdc_open(const etcdc_options *o, etcdc **out, es_error *err)
{
    *out = NULL;
    if (!o->endpoints || !*o->endpoints)
        return es_error_set(err, 3, "--endpoints is required");
    if ((o->cert && *o->cert) != (o->key && *o->key))
        return es_error_set(err, 3, "--cert and --key go together");
    etcdc *c = calloc(1, sizeof *c);
    if (!c)
        return es_error_set(err, ST_INTERNAL, "out of memory");
    c->fd = -1;
    c->dial_ms = o->dial_timeout_ms > 0 ? o->dial_timeout_ms : ETCDC_DEFAULT_DIAL_TIMEOUT_MS;
    c->req_ms =
        o->request_timeout_ms > 0 ? o->request_timeout_ms : ETCDC_DEFAULT_REQUEST_TIMEOUT_MS;
    c->max_recv = o->max_recv_bytes ? o->max_recv_bytes : ETCDC_DEFAULT_MAX_RECV_BYTES;
    bool tls_default =
        (o->cacert && *o->cacert) || (o->cert && *o->cert) || o->insecure_skip_tls_verify;
    bool any_tls = false;
    for (const char *s = o->endpoints; *s;) {
        size_t n = strcspn(s, ",");
        if (n > 0) {
            if (c->n_eps == ETCDC_MAX_ENDPOINTS) {
                es_error_set(err, 3, "--endpoints: more than %d endpoints", ETCDC_MAX_ENDPOINTS);
                goto fail;
            }
            if (endpoint_parse(&c->eps[c->n_eps], s, n, tls_default, err) != 0)
                goto fail;
            any_tls |= c->eps[c->n_eps++].tls;
        }
        s += n;
        if (*s == ',')
            s++;
    }
    if (c->n_eps == 0) {
        es_error_set(err, 3, "--endpoints is empty");
        goto fail;
    }
    if (any_tls && !(c->tls = tls_ctx_new(o, err)))
        goto fail;
    for (size_t i = 0; i < c->n_eps; i++) {
        c->cur = i;
        if (conn_open(c, &c->eps[i]) == 0) {
            *out = c;
            return 0;
        }
    }
    es_error_set(err, ST_UNAVAILABLE, "cannot connect to any endpoint (last: %s: %s)",
                 c->eps[c->n_eps - 1].text, c->why);
fail:
    etcdc_close(c);
    return -1;
}

void etcdc_close(etcdc *c)
{
    if (!c)
        return;
    conn_close(c);
    for (size_t i = 0; i < c->n_eps; i++)
        endpoint_free(&c->eps[i]);
    SSL_CTX_free(c->tls);
    free(c);
}

const char *etcdc_endpoint(const etcdc *c)
{
    return c->n_eps ? c->eps[c->cur].text : "";
}

int etcdc_range(etcdc *c, const Etcdserverpb__RangeRequest *req, Etcdserverpb__RangeResponse **resp,
                es_error *err)
{
    *resp = do_call(c, "/etcdserverpb.KV/Range", &req->base,
                    &etcdserverpb__range_response__descriptor, true, err);
    return *resp ? 0 : -1;
}

int etcdc_put(etcdc *c, const Etcdserverpb__PutRequest *req, Etcdserverpb__PutResponse **resp,
              es_error *err)
{
    *resp = do_call(c, "/etcdserverpb.KV/Put", &req->base, &etcdserverpb__put_response__descriptor,
                    false, err);
    return *resp ? 0 : -1;
}

int etcdc_txn(etcdc *c, const Etcdserverpb__TxnRequest *req, Etcdserverpb__TxnResponse **resp,
              es_error *err)
{
    *resp = do_call(c, "/etcdserverpb.KV/Txn", &req->base, &etcdserverpb__txn_response__descriptor,
                    false, err);
    return *resp ? 0 : -1;
}
