/* bench_relay.c - relay micro-benchmark that needs no etcd: ns (and, under callgrind,
 * instructions) per relayed etcd Put.
 *
 * In one process: a real etcdseal proxy (proxy_start with one worker, set up the way
 * src/cmd/proxy.c does: endpoints, limits, and optionally an EncryptionConfiguration with an
 * aesgcm '*' rule), a fake etcd upstream (nghttp2 server answering every /etcdserverpb.KV/Put with
 * a PutResponse and grpc-status 0) and a client driving Put calls through the proxy over one
 * HTTP/2 connection with a fixed number in flight. Client and fake upstream share the main
 * thread's poll loop; the proxy worker runs in its own thread, all over loopback TCP.
 *
 * Every request is checked: the upstream verifies the value it receives (plaintext in plain
 * mode, a "k8s:enc:aesgcm:v1:bench:" envelope in aesgcm mode) and the client checks each answer
 * (HTTP 200, a gRPC message, grpc-status 0). Any failure exits 1.
 *
 * Under valgrind --tool=callgrind --toggle-collect=worker_main (bench/bench-relay.sh) the
 * counters are zeroed after the warm-up and dumped ("measured") after the last measured call, so
 * the dump holds only the proxy worker's instructions for exactly -n requests.
 *
 * Usage: bench_relay [-n REQUESTS] [-w WARMUP] [-c IN_FLIGHT] [-s VALUE_BYTES] [-m plain|aesgcm]
 * Prints: "relay mode=.. requests=.. in_flight=.. value_bytes=.. ns_per_req=.. req_per_s=..
 * process_cpu_ns_per_req=.. other_pct=.." (CPU of this whole process per call, and the CPU other
 * processes took meanwhile as % of one core: the wall-clock figure means little when it is high).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <valgrind/callgrind.h>

#include "base/error.h"
#include "base/log.h"
#include "policy/encryption.h"
#include "proxy/endpoint.h"
#include "proxy/worker.h"

#define PUT_PATH "/etcdserverpb.KV/Put"
#define REQ_KEY "/bench/relay/key"
#define AESGCM_PREFIX "k8s:enc:aesgcm:v1:bench:"
#define MAX_VALUE 65536
#define TIMEOUT_MS 600000

static int encrypting;         /* aesgcm mode: the upstream must see ciphertext */
static unsigned char *req_msg; /* the gRPC-framed PutRequest, the same for every call */
static size_t req_len;
static size_t value_len;
static long failures;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* CPU seconds of this whole process (proxy worker, client and fake etcd together). */
static double self_cpu_s(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* user+nice+system seconds of the whole machine (/proc/stat), -1 when unreadable. */
static double machine_busy_s(void)
{
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long user = 0, nice = 0, sys = 0;
    int n = f ? fscanf(f, "cpu %llu %llu %llu", &user, &nice, &sys) : 0;
    if (f)
        fclose(f);
    long hz = sysconf(_SC_CLK_TCK);
    return n == 3 && hz > 0 ? (double)(user + nice + sys) / (double)hz : -1;
}

static void fail(const char *what)
{
    if (failures++ < 5)
        fprintf(stderr, "bench_relay: %s\n", what);
}

static size_t put_varint(unsigned char *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (unsigned char)v;
    return n;
}

static int get_varint(const unsigned char *p, size_t len, size_t *off, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64 && *off < len; shift += 7) {
        unsigned char b = p[(*off)++];
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return 0;
    }
    return -1;
}

static void put_grpc_prefix(unsigned char *p, size_t len)
{
    p[0] = 0;
    p[1] = (unsigned char)(len >> 24);
    p[2] = (unsigned char)(len >> 16);
    p[3] = (unsigned char)(len >> 8);
    p[4] = (unsigned char)len;
}

/* Builds the gRPC-framed PutRequest{key=REQ_KEY, value='v' x value_bytes}. */
static int build_request(size_t value_bytes)
{
    size_t klen = strlen(REQ_KEY);
    req_msg = malloc(5 + 16 + klen + value_bytes);
    if (!req_msg)
        return -1;
    unsigned char *p = req_msg + 5;
    size_t n = 0;
    p[n++] = 0x0a; /* key, field 1 */
    n += put_varint(p + n, klen);
    memcpy(p + n, REQ_KEY, klen);
    n += klen;
    p[n++] = 0x12; /* value, field 2 */
    n += put_varint(p + n, value_bytes);
    memset(p + n, 'v', value_bytes);
    n += value_bytes;
    put_grpc_prefix(req_msg, n);
    req_len = 5 + n;
    value_len = value_bytes;
    return 0;
}

/* ------------------------------------------------------------------ socket plumbing */
struct peer {
    int fd;
    nghttp2_session *h2;
    int blocked; /* the last write hit EAGAIN: poll for POLLOUT */
};

static ssize_t send_cb(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *ud)
{
    (void)s;
    (void)flags;
    struct peer *p = ud;
    ssize_t n = send(p->fd, data, len, MSG_NOSIGNAL);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            p->blocked = 1;
            return NGHTTP2_ERR_WOULDBLOCK;
        }
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return n;
}

static int set_nonblock_nodelay(int fd)
{
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
        return -1;
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Reads what is there and feeds it to the session; -1 on EOF or error. */
static int pump_read(struct peer *p)
{
    unsigned char buf[65536];
    for (;;) {
        ssize_t n = recv(p->fd, buf, sizeof buf, 0);
        if (n == 0)
            return -1;
        if (n < 0)
            return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
        ssize_t used = nghttp2_session_mem_recv(p->h2, buf, (size_t)n);
        if (used < 0 || (size_t)used != (size_t)n)
            return -1;
        if ((size_t)n < sizeof buf)
            return 0;
    }
}

static int pump_write(struct peer *p)
{
    p->blocked = 0;
    return nghttp2_session_send(p->h2) == 0 ? 0 : -1;
}

static int listen_loopback(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 16) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

/* ------------------------------------------------------------------ fake etcd upstream */
struct up_call {
    unsigned char *body; /* request bytes received (gRPC framed) */
    size_t len, cap;
    int path_ok;
    unsigned char resp[64]; /* gRPC-framed PutResponse */
    size_t resp_len, resp_sent;
};

static uint64_t up_revision = 1000000; /* three-byte varint for the whole run: stable sizes */

static int up_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    (void)ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct up_call *c = calloc(1, sizeof *c);
    if (!c)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return nghttp2_session_set_stream_user_data(s, f->hd.stream_id, c) == 0
               ? 0
               : NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int up_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
    (void)flags;
    (void)ud;
    struct up_call *c = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (c && nl == 5 && memcmp(name, ":path", 5) == 0)
        c->path_ok = vl == strlen(PUT_PATH) && memcmp(value, PUT_PATH, vl) == 0;
    return 0;
}

static int up_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t len,
                   void *ud)
{
    (void)flags;
    (void)ud;
    struct up_call *c = nghttp2_session_get_stream_user_data(s, sid);
    if (!c)
        return 0;
    if (c->len + len > c->cap) {
        size_t cap = (c->len + len) * 2;
        unsigned char *b = realloc(c->body, cap);
        if (!b)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        c->body = b;
        c->cap = cap;
    }
    memcpy(c->body + c->len, data, len);
    c->len += len;
    return 0;
}

/* Checks the PutRequest the proxy forwarded: right key, value transformed as the mode says. */
static void up_check_request(const struct up_call *c)
{
    if (!c->path_ok) {
        fail("upstream: request path is not " PUT_PATH);
        return;
    }
    if (c->len < 5 || c->body[0] != 0) {
        fail("upstream: no gRPC message in the request");
        return;
    }
    const unsigned char *p = c->body + 5;
    size_t len = c->len - 5, off = 0;
    const unsigned char *key = NULL, *val = NULL;
    size_t klen = 0, vlen = 0;
    while (off < len) {
        uint64_t tag, l;
        if (get_varint(p, len, &off, &tag) < 0 || (tag & 7) != 2 ||
            get_varint(p, len, &off, &l) < 0 || l > len - off) {
            fail("upstream: PutRequest does not parse");
            return;
        }
        if (tag >> 3 == 1) {
            key = p + off;
            klen = (size_t)l;
        } else if (tag >> 3 == 2) {
            val = p + off;
            vlen = (size_t)l;
        }
        off += (size_t)l;
    }
    if (!key || klen != strlen(REQ_KEY) || memcmp(key, REQ_KEY, klen) != 0) {
        fail("upstream: wrong key in PutRequest");
        return;
    }
    if (encrypting) {
        size_t pl = strlen(AESGCM_PREFIX);
        if (!val || vlen < pl + value_len + 12 || memcmp(val, AESGCM_PREFIX, pl) != 0)
            fail("upstream: value is not an aesgcm envelope (was it encrypted?)");
    } else if (!val || vlen != value_len || (vlen && val[0] != 'v')) {
        fail("upstream: value changed in plain mode");
    }
}

static ssize_t up_read_body(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len,
                            uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)ud;
    struct up_call *c = src->ptr;
    size_t n = c->resp_len - c->resp_sent;
    if (n > len)
        n = len;
    memcpy(buf, c->resp + c->resp_sent, n);
    c->resp_sent += n;
    if (c->resp_sent == c->resp_len) {
        *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        nghttp2_nv tr[] = {{(uint8_t *)"grpc-status", (uint8_t *)"0", 11, 1, NGHTTP2_NV_FLAG_NONE}};
        if (nghttp2_submit_trailer(s, sid, tr, 1) != 0)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return (ssize_t)n;
}

static int up_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    (void)ud;
    if (!(f->hd.flags & NGHTTP2_FLAG_END_STREAM) ||
        (f->hd.type != NGHTTP2_DATA && f->hd.type != NGHTTP2_HEADERS))
        return 0;
    struct up_call *c = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (!c)
        return 0;
    up_check_request(c);
    /* PutResponse{header{cluster_id, member_id, revision, raft_term}} */
    unsigned char hdr[40];
    size_t h = 0;
    hdr[h++] = 0x08;
    h += put_varint(hdr + h, 0x1234567890abcdefull >> 1);
    hdr[h++] = 0x10;
    h += put_varint(hdr + h, 0x0fedcba987654321ull);
    hdr[h++] = 0x18;
    h += put_varint(hdr + h, up_revision++);
    hdr[h++] = 0x20;
    h += put_varint(hdr + h, 2);
    unsigned char *m = c->resp + 5;
    size_t n = 0;
    m[n++] = 0x0a;
    n += put_varint(m + n, h);
    memcpy(m + n, hdr, h);
    n += h;
    put_grpc_prefix(c->resp, n);
    c->resp_len = 5 + n;
    nghttp2_nv nv[] = {
        {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE},
    };
    nghttp2_data_provider dp = {.source.ptr = c, .read_callback = up_read_body};
    return nghttp2_submit_response(s, f->hd.stream_id, nv, 2, &dp) == 0
               ? 0
               : NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int up_stream_close(nghttp2_session *s, int32_t sid, uint32_t code, void *ud)
{
    (void)code;
    (void)ud;
    struct up_call *c = nghttp2_session_get_stream_user_data(s, sid);
    if (c) {
        free(c->body);
        free(c);
    }
    return 0;
}

static nghttp2_session *upstream_session(struct peer *p)
{
    nghttp2_session_callbacks *cb;
    nghttp2_session *s = NULL;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return NULL;
    nghttp2_session_callbacks_set_send_callback(cb, send_cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, up_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, up_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, up_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, up_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, up_stream_close);
    int rv = nghttp2_session_server_new(&s, cb, p);
    nghttp2_session_callbacks_del(cb);
    if (rv != 0)
        return NULL;
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100000}};
    if (nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, iv, 1) != 0) {
        nghttp2_session_del(s);
        return NULL;
    }
    return s;
}

/* ------------------------------------------------------------------ client */
struct cl_call {
    size_t sent;
    int http_status, grpc_status, got_message;
};

static long completed, in_flight;

static ssize_t cl_read_body(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len,
                            uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)s;
    (void)sid;
    (void)ud;
    struct cl_call *c = src->ptr;
    size_t n = req_len - c->sent;
    if (n > len)
        n = len;
    memcpy(buf, req_msg + c->sent, n);
    c->sent += n;
    if (c->sent == req_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int cl_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
    (void)flags;
    (void)ud;
    struct cl_call *c = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (!c)
        return 0;
    if (nl == 7 && memcmp(name, ":status", 7) == 0)
        c->http_status = (vl == 3 && memcmp(value, "200", 3) == 0) ? 200 : 1;
    else if (nl == 11 && memcmp(name, "grpc-status", 11) == 0)
        c->grpc_status = (vl == 1 && value[0] == '0') ? 0 : 1;
    return 0;
}

static int cl_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t len,
                   void *ud)
{
    (void)flags;
    (void)data;
    (void)ud;
    struct cl_call *c = nghttp2_session_get_stream_user_data(s, sid);
    if (c && len > 0)
        c->got_message = 1;
    return 0;
}

static int cl_stream_close(nghttp2_session *s, int32_t sid, uint32_t code, void *ud)
{
    (void)ud;
    struct cl_call *c = nghttp2_session_get_stream_user_data(s, sid);
    if (!c)
        return 0;
    if (code != NGHTTP2_NO_ERROR || c->http_status != 200 || c->grpc_status != 0 || !c->got_message)
        fail("client: a Put did not end with HTTP 200, a PutResponse and grpc-status 0");
    free(c);
    completed++;
    in_flight--;
    return 0;
}

static nghttp2_session *client_session(struct peer *p)
{
    nghttp2_session_callbacks *cb;
    nghttp2_session *s = NULL;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return NULL;
    nghttp2_session_callbacks_set_send_callback(cb, send_cb);
    nghttp2_session_callbacks_set_on_header_callback(cb, cl_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, cl_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, cl_stream_close);
    int rv = nghttp2_session_client_new(&s, cb, p);
    nghttp2_session_callbacks_del(cb);
    if (rv != 0)
        return NULL;
    if (nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, NULL, 0) != 0) {
        nghttp2_session_del(s);
        return NULL;
    }
    return s;
}

static int submit_put(nghttp2_session *s, const char *authority)
{
    struct cl_call *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    c->http_status = c->grpc_status = -1;
    nghttp2_nv nv[] = {
        {(uint8_t *)":method", (uint8_t *)"POST", 7, 4, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)":path", (uint8_t *)PUT_PATH, 5, strlen(PUT_PATH), NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)":authority", (uint8_t *)authority, 10, strlen(authority),
         NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"te", (uint8_t *)"trailers", 2, 8, NGHTTP2_NV_FLAG_NONE},
    };
    nghttp2_data_provider dp = {.source.ptr = c, .read_callback = cl_read_body};
    int32_t sid = nghttp2_submit_request(s, NULL, nv, sizeof nv / sizeof nv[0], &dp, c);
    if (sid < 0) {
        free(c);
        return -1;
    }
    in_flight++;
    return 0;
}

/* ------------------------------------------------------------------ proxy under test */
static const char aesgcm_config[] = "apiVersion: apiserver.config.k8s.io/v1\n"
                                    "kind: EncryptionConfiguration\n"
                                    "resources:\n"
                                    "  - resources: ['*']\n"
                                    "    providers:\n"
                                    "      - aesgcm:\n"
                                    "          keys:\n"
                                    "            - name: bench\n"
                                    "              secret: %s\n"
                                    "      - identity: {}\n";

static int load_aesgcm_policy(policy_encryption **out, es_error *err)
{
    /* a fixed key: the figures must not depend on it, and nothing real is protected */
    static const char key_b64[] = "YmVuY2hfcmVsYXlfa2V5X25vdF9hX3NlY3JldF8zMmI=";
    char doc[sizeof aesgcm_config + sizeof key_b64];
    int n = snprintf(doc, sizeof doc, aesgcm_config, key_b64);
    if (n < 0 || (size_t)n >= sizeof doc)
        return es_error_set(err, 0, "config too long");
    return policy_encryption_load_buffer("bench_relay", doc, (size_t)n, NULL, out, err);
}

/* Set up as build_runtime in src/cmd/proxy.c does, with one worker and cleartext both ways. */
static int runtime_init(proxy_runtime *rt, endpoint *ep, uint16_t listen_port,
                        uint16_t upstream_port, es_error *err)
{
    memset(rt, 0, sizeof *rt);
    snprintf(rt->listen_host, sizeof rt->listen_host, "127.0.0.1");
    snprintf(rt->listen_port, sizeof rt->listen_port, "%u", listen_port);
    char up[32];
    snprintf(up, sizeof up, "127.0.0.1:%u", upstream_port);
    if (endpoint_parse(up, false, ep, err) < 0)
        return -1;
    rt->endpoints = ep;
    rt->n_endpoints = 1;
    rt->workers = 1;
    rt->shutdown_timeout = 1;
    rt->dial_timeout = 5;
    rt->keepalive_time = 3600; /* no PINGs inside the measurement */
    rt->keepalive_timeout = 5;
    rt->max_message_bytes = 64u << 20;
    rt->max_header_list_bytes = 65536;
    rt->max_concurrent_streams = 100000;
    if (encrypting) {
        policy_encryption *pol = NULL;
        if (load_aesgcm_policy(&pol, err) < 0)
            return -1;
        atomic_store(&rt->policy, pol);
    }
    return 0;
}

static uint16_t free_port(void)
{
    uint16_t port = 0;
    int fd = listen_loopback(&port);
    if (fd < 0)
        return 0;
    close(fd);
    return port;
}

static int connect_loopback(uint16_t port)
{
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    for (int i = 0; i < 100; i++) { /* the listener exists once proxy_start returned */
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -1;
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
            return fd;
        close(fd);
        usleep(10000);
    }
    return -1;
}

/* Drives calls until `target` have completed; 0 or -1 on a connection error / timeout. */
static int drive(struct peer *cl, struct peer *up, int up_listen, long target, long max_in_flight,
                 long total_limit, long *submitted, const char *authority)
{
    uint64_t deadline = now_ns() + (uint64_t)TIMEOUT_MS * 1000000ull;
    while (completed < target) {
        while (in_flight < max_in_flight && *submitted < total_limit) {
            if (submit_put(cl->h2, authority) < 0)
                return -1;
            (*submitted)++;
        }
        if (pump_write(cl) < 0 || (up->h2 && pump_write(up) < 0))
            return -1;
        struct pollfd fds[3] = {
            {cl->fd, (short)(POLLIN | (cl->blocked ? POLLOUT : 0)), 0},
            {up_listen, POLLIN, 0},
            {up->fd, (short)(POLLIN | (up->blocked ? POLLOUT : 0)), 0},
        };
        int n = poll(fds, up->fd >= 0 ? 3 : 2, 1000);
        if (n < 0 && errno != EINTR)
            return -1;
        if (now_ns() > deadline) {
            fprintf(stderr, "bench_relay: timed out (%ld of %ld calls done)\n", completed, target);
            return -1;
        }
        if (n <= 0)
            continue;
        if ((fds[1].revents & POLLIN) && up->fd < 0) {
            up->fd = accept(up_listen, NULL, NULL);
            if (up->fd < 0 || set_nonblock_nodelay(up->fd) < 0 || !(up->h2 = upstream_session(up)))
                return -1;
        }
        if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) && pump_read(cl) < 0) {
            fprintf(stderr, "bench_relay: the proxy closed the client connection\n");
            return -1;
        }
        if (up->fd >= 0 && (fds[2].revents & (POLLIN | POLLHUP | POLLERR)) && pump_read(up) < 0) {
            fprintf(stderr, "bench_relay: the proxy closed the upstream connection\n");
            return -1;
        }
    }
    return 0;
}

static long parse_long(const char *s, long lo, long hi, const char *what)
{
    char *end;
    long v = strtol(s ? s : "", &end, 10);
    if (!s || *end || v < lo || v > hi) {
        fprintf(stderr, "bench_relay: %s must be %ld..%ld\n", what, lo, hi);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    long n = 20000, warmup = 1000, conc = 1, vsize = 256;
    const char *mode = "plain";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-n") == 0)
            n = parse_long(v, 1, 100000000, "-n");
        else if (strcmp(a, "-w") == 0)
            warmup = parse_long(v, 0, 100000000, "-w");
        else if (strcmp(a, "-c") == 0)
            conc = parse_long(v, 1, 10000, "-c");
        else if (strcmp(a, "-s") == 0)
            vsize = parse_long(v, 0, MAX_VALUE, "-s");
        else if (strcmp(a, "-m") == 0 && v && (strcmp(v, "plain") == 0 || strcmp(v, "aesgcm") == 0))
            mode = v;
        else {
            fprintf(stderr, "usage: bench_relay [-n REQUESTS] [-w WARMUP] [-c IN_FLIGHT] "
                            "[-s VALUE_BYTES] [-m plain|aesgcm]\n");
            return 2;
        }
        i++;
    }
    encrypting = strcmp(mode, "aesgcm") == 0;
    log_set_level(LOG_ERROR);
    if (build_request((size_t)vsize) < 0)
        return 1;

    int rc = 1;
    es_error err = {0};
    proxy_runtime rt;
    memset(&rt, 0, sizeof rt);
    endpoint ep;
    proxy *px = NULL;
    struct peer cl = {.fd = -1}, up = {.fd = -1};
    uint16_t up_port = 0, px_port = free_port();
    int up_listen = listen_loopback(&up_port);
    char authority[32];
    snprintf(authority, sizeof authority, "127.0.0.1:%u", px_port);
    if (up_listen < 0 || px_port == 0) {
        fprintf(stderr, "bench_relay: cannot bind loopback ports\n");
        goto out_free;
    }
    if (runtime_init(&rt, &ep, px_port, up_port, &err) < 0) {
        fprintf(stderr, "bench_relay: %s\n", err.msg);
        goto out;
    }
    px = proxy_start(&rt, &err);
    if (!px) {
        fprintf(stderr, "bench_relay: proxy_start: %s\n", err.msg);
        goto out;
    }
    cl.fd = connect_loopback(px_port);
    if (cl.fd < 0 || set_nonblock_nodelay(cl.fd) < 0 || !(cl.h2 = client_session(&cl))) {
        fprintf(stderr, "bench_relay: cannot connect to the proxy\n");
        goto out;
    }
    long submitted = 0;
    if (drive(&cl, &up, up_listen, warmup, conc, warmup, &submitted, authority) < 0)
        goto out;
    CALLGRIND_ZERO_STATS;
    double cpu0 = self_cpu_s(), busy0 = machine_busy_s();
    uint64_t t0 = now_ns();
    if (drive(&cl, &up, up_listen, warmup + n, conc, warmup + n, &submitted, authority) < 0)
        goto out;
    uint64_t t1 = now_ns();
    double cpu1 = self_cpu_s(), busy1 = machine_busy_s();
    CALLGRIND_DUMP_STATS_AT("measured");
    if (failures) {
        fprintf(stderr, "bench_relay: %ld failed checks\n", failures);
        goto out;
    }
    double ns = (double)(t1 - t0) / (double)n, wall_s = (double)(t1 - t0) / 1e9;
    /* other_pct: CPU other processes took meanwhile, % of one core (the wall-clock figure is only
     * meaningful when this is small) */
    double other = busy0 < 0 ? 0 : ((busy1 - busy0) - (cpu1 - cpu0)) / wall_s * 100;
    printf(
        "relay mode=%s requests=%ld in_flight=%ld value_bytes=%ld ns_per_req=%.0f req_per_s=%.0f "
        "process_cpu_ns_per_req=%.0f other_pct=%.0f\n",
        mode, n, conc, vsize, ns, 1e9 / ns, (cpu1 - cpu0) * 1e9 / (double)n, other < 0 ? 0 : other);
    rc = 0;
out:
    if (cl.h2)
        nghttp2_session_del(cl.h2);
    if (cl.fd >= 0)
        close(cl.fd); /* the proxy sees its client go away before it shuts down */
    if (px) {
        proxy_request_shutdown(px);
        proxy_wait(px);
        proxy_free(px);
    }
    policy_encryption_unref(atomic_load(&rt.policy));
    if (up.h2)
        nghttp2_session_del(up.h2);
    if (up.fd >= 0)
        close(up.fd);
out_free:
    if (up_listen >= 0)
        close(up_listen);
    free(req_msg);
    return rc;
}
