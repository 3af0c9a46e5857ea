/* it_enc_client.c - integration-test etcd v3 client over h2c (libnghttp2 + protobuf-c types).
 *
 * Sends arbitrary Put/Range/DeleteRange/Txn (nested Txn too) and Watch requests described by
 * small token specs, and prints every answer as one JSON line, so a test can compare what the
 * proxy answers with what etcd answers directly. Used by tests/integration/encrypt_*_test.sh.
 *
 * Usage: it_enc_client -a HOST:PORT [-t SECS] [-f FILE|-] [COMMAND TOKENS...]
 *   -f FILE  one command per line ('-' = stdin; empty lines and lines starting with # skipped)
 * Commands (values and keys: text, hex:HEX, raw:TEXT, fill:N:CHAR, rand:N:SEED, empty:):
 *   put KEY VAL [prev] [ignore_value] [ignore_lease] [lease=ID]
 *   get KEY [end=E|prefix|from] [limit=N] [rev=N] [sort=key|version|create|mod|value]
 *           [order=none|asc|desc] [keys_only] [count_only] [serializable]
 *   del KEY [end=E|prefix|from] [prev]
 *   txn [cmp KEY value|version|create|mod|lease =|!=|>|< OPERAND [end=E|prefix]]...
 *       then OP... else OP... end          (OP = put/get/del/txn as above, nested freely)
 *   watch KEY [end=E|prefix] [rev=N] [prev] [fragment] [noput] [nodelete] [count=N]
 *         [timeout=S]      (prints created, then one line per event, ends after count events)
 *   hash VAL              prints the value the way responses print it
 *   cas KEY N             N compare-and-swap increments (VALUE compare); prints a summary
 *   hammer KEY SECS [stopfile]  rewrites KEY's current value guarded by its mod_revision
 *   mixed SEED N PPREFIX UPREFIX MODELFILE  randomized checked workload, model written to file
 * Values longer than 1024 bytes print as "#<len>:<fnv1a64 hex>". Exit: 0 all RPCs OK, 3 some
 * RPC failed or a check failed, 2 usage or connection error. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "etcdserverpb/rpc.pb-c.h"
#include "mvccpb/kv.pb-c.h"

#define MAX_TOKENS 4096

/* ------------------------------------------------------------------ small utilities */

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "it_enc_client: out of memory\n");
        exit(2);
    }
    return p;
}

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz);
    if (!p) {
        fprintf(stderr, "it_enc_client: out of memory\n");
        exit(2);
    }
    return p;
}

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes a value spec into freshly allocated bytes (caller frees data). -1 on a bad spec. */
static int parse_bytes(const char *spec, ProtobufCBinaryData *out)
{
    out->len = 0;
    out->data = NULL;
    if (strncmp(spec, "hex:", 4) == 0) {
        const char *h = spec + 4;
        size_t n = strlen(h);
        if (n % 2)
            return -1;
        out->data = xmalloc(n / 2);
        for (size_t i = 0; i < n / 2; i++) {
            int a = hexval(h[2 * i]), b = hexval(h[2 * i + 1]);
            if (a < 0 || b < 0) {
                free(out->data);
                out->data = NULL;
                return -1;
            }
            out->data[i] = (uint8_t)(a << 4 | b);
        }
        out->len = n / 2;
        return 0;
    }
    if (strcmp(spec, "empty:") == 0) {
        out->data = xmalloc(1);
        return 0;
    }
    if (strncmp(spec, "fill:", 5) == 0 || strncmp(spec, "rand:", 5) == 0) {
        char *end;
        unsigned long long n = strtoull(spec + 5, &end, 10);
        if (*end != ':' || n > (64ULL << 20))
            return -1;
        out->data = xmalloc((size_t)n);
        out->len = (size_t)n;
        if (spec[0] == 'f') {
            memset(out->data, end[1] ? end[1] : 'x', (size_t)n);
        } else {
            uint64_t s = strtoull(end + 1, NULL, 10) * 2654435761ULL + 88172645463325252ULL;
            for (size_t i = 0; i < (size_t)n; i++)
                out->data[i] = (uint8_t)(xorshift(&s) >> 24);
        }
        return 0;
    }
    if (strncmp(spec, "raw:", 4) == 0)
        spec += 4;
    out->len = strlen(spec);
    out->data = xmalloc(out->len);
    memcpy(out->data, spec, out->len);
    return 0;
}

/* The key just after every key with this prefix (etcd's prefix range_end). */
static void prefix_end(const ProtobufCBinaryData *key, ProtobufCBinaryData *end)
{
    end->data = xmalloc(key->len ? key->len : 1);
    if (key->len)
        memcpy(end->data, key->data, key->len);
    size_t n = key->len;
    while (n > 0) {
        if (end->data[n - 1] < 0xff) {
            end->data[n - 1]++;
            break;
        }
        n--;
    }
    if (n == 0) { /* all 0xff or empty: every key from here on */
        end->data[0] = 0;
        n = 1;
    }
    end->len = n;
}

/* ------------------------------------------------------------------ JSON output */

static void json_bytes(FILE *f, const uint8_t *p, size_t n)
{
    if (n > 1024) {
        fprintf(f, "\"#%zu:%016" PRIx64 "\"", n, fnv1a(p, n));
        return;
    }
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void json_kv(FILE *f, const Mvccpb__KeyValue *kv)
{
    fputs("{\"key\":", f);
    json_bytes(f, kv->key.data, kv->key.len);
    fputs(",\"value\":", f);
    json_bytes(f, kv->value.data, kv->value.len);
    fprintf(
        f, ",\"create\":%" PRId64 ",\"mod\":%" PRId64 ",\"ver\":%" PRId64 ",\"lease\":%" PRId64 "}",
        kv->create_revision, kv->mod_revision, kv->version, kv->lease);
}

static void json_header(FILE *f, const Etcdserverpb__ResponseHeader *h)
{
    if (h)
        fprintf(f, "\"rev\":%" PRId64 ",", h->revision);
}

static void json_range(FILE *f, const Etcdserverpb__RangeResponse *r)
{
    fputs("{\"op\":\"range\",", f);
    json_header(f, r->header);
    fprintf(f, "\"count\":%" PRId64 ",\"more\":%s,\"kvs\":[", r->count, r->more ? "true" : "false");
    for (size_t i = 0; i < r->n_kvs; i++) {
        if (i)
            fputc(',', f);
        json_kv(f, r->kvs[i]);
    }
    fputs("]}", f);
}

static void json_put(FILE *f, const Etcdserverpb__PutResponse *r)
{
    fputs("{\"op\":\"put\",", f);
    json_header(f, r->header);
    fputs("\"prev_kv\":", f);
    if (r->prev_kv)
        json_kv(f, r->prev_kv);
    else
        fputs("null", f);
    fputc('}', f);
}

static void json_del(FILE *f, const Etcdserverpb__DeleteRangeResponse *r)
{
    fputs("{\"op\":\"del\",", f);
    json_header(f, r->header);
    fprintf(f, "\"deleted\":%" PRId64 ",\"prev_kvs\":[", r->deleted);
    for (size_t i = 0; i < r->n_prev_kvs; i++) {
        if (i)
            fputc(',', f);
        json_kv(f, r->prev_kvs[i]);
    }
    fputs("]}", f);
}

static void json_txn(FILE *f, const Etcdserverpb__TxnResponse *r)
{
    fputs("{\"op\":\"txn\",", f);
    json_header(f, r->header);
    fprintf(f, "\"succeeded\":%s,\"responses\":[", r->succeeded ? "true" : "false");
    for (size_t i = 0; i < r->n_responses; i++) {
        const Etcdserverpb__ResponseOp *o = r->responses[i];
        if (i)
            fputc(',', f);
        switch (o->response_case) {
        case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE:
            json_range(f, o->response_range);
            break;
        case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT:
            json_put(f, o->response_put);
            break;
        case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE:
            json_del(f, o->response_delete_range);
            break;
        case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_TXN:
            json_txn(f, o->response_txn);
            break;
        default:
            fputs("{\"op\":\"unset\"}", f);
        }
    }
    fputs("]}", f);
}

/* ------------------------------------------------------------------ h2c connection */

struct call {
    int32_t id;
    uint8_t *tx; /* gRPC-framed request bytes still to send */
    size_t tx_len, tx_off;
    int tx_end;  /* end the stream after tx (unary); else keep it open (watch) */
    uint8_t *rx; /* received DATA, not yet consumed */
    size_t rx_len, rx_cap;
    int closed, http_status, grpc_status;
    char grpc_message[512];
};

static int conn_fd = -1;
static nghttp2_session *h2;
static int conn_dead;
static const char *conn_addr;
static long rpc_timeout_ms = 30000;

static ssize_t send_cb(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *ud)
{
    (void)s;
    (void)flags;
    (void)ud;
    ssize_t n = send(conn_fd, data, len, MSG_NOSIGNAL);
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? NGHTTP2_ERR_WOULDBLOCK
                                                         : NGHTTP2_ERR_CALLBACK_FAILURE;
    return n;
}

static int data_cb(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t len,
                   void *ud)
{
    (void)flags;
    (void)ud;
    struct call *c = nghttp2_session_get_stream_user_data(s, sid);
    if (!c)
        return 0;
    if (c->rx_len + len > c->rx_cap) {
        size_t cap = c->rx_cap ? c->rx_cap : 4096;
        while (cap < c->rx_len + len)
            cap *= 2;
        uint8_t *p = realloc(c->rx, cap);
        if (!p)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        c->rx = p;
        c->rx_cap = cap;
    }
    memcpy(c->rx + c->rx_len, data, len);
    c->rx_len += len;
    return 0;
}

static void percent_decode(char *dst, size_t cap, const uint8_t *src, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        if (src[i] == '%' && i + 2 < n && hexval(src[i + 1]) >= 0 && hexval(src[i + 2]) >= 0) {
            dst[o++] = (char)(hexval(src[i + 1]) << 4 | hexval(src[i + 2]));
            i += 2;
        } else {
            dst[o++] = (char)src[i];
        }
    }
    dst[o] = 0;
}

static int header_cb(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    (void)flags;
    (void)ud;
    struct call *c = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    if (!c)
        return 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0)
        c->http_status = atoi((const char *)value);
    else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0)
        c->grpc_status = atoi((const char *)value);
    else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0)
        percent_decode(c->grpc_message, sizeof c->grpc_message, value, valuelen);
    return 0;
}

static int close_cb(nghttp2_session *s, int32_t sid, uint32_t code, void *ud)
{
    (void)ud;
    struct call *c = nghttp2_session_get_stream_user_data(s, sid);
    if (c) {
        c->closed = 1;
        if (code != NGHTTP2_NO_ERROR && c->grpc_status < 0) {
            snprintf(c->grpc_message, sizeof c->grpc_message, "stream reset: %s",
                     nghttp2_http2_strerror(code));
        }
    }
    return 0;
}

static ssize_t read_cb(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
                       nghttp2_data_source *src, void *ud)
{
    (void)s;
    (void)sid;
    (void)ud;
    struct call *c = src->ptr;
    if (c->tx_off >= c->tx_len) {
        if (c->tx_end) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            return 0;
        }
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = c->tx_len - c->tx_off < len ? c->tx_len - c->tx_off : len;
    memcpy(buf, c->tx + c->tx_off, n);
    c->tx_off += n;
    if (c->tx_off >= c->tx_len && c->tx_end)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int conn_open(const char *addr)
{
    char host[64];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof host)
        return -1;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return -1;
    conn_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (conn_fd < 0)
        return -1;
    if (connect(conn_fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        return -1;
    int one = 1;
    setsockopt(conn_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(conn_fd, F_SETFL, fcntl(conn_fd, F_GETFL) | O_NONBLOCK);
    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_send_callback(cbs, send_cb);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, data_cb);
    nghttp2_session_callbacks_set_on_header_callback(cbs, header_cb);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, close_cb);
    nghttp2_session_client_new(&h2, cbs, NULL);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 16 << 20},
                                   {NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
    nghttp2_submit_settings(h2, NGHTTP2_FLAG_NONE, iv, 2);
    nghttp2_session_set_local_window_size(h2, NGHTTP2_FLAG_NONE, 0, 64 << 20);
    conn_addr = addr;
    return 0;
}

/* One round of I/O, waiting up to wait_ms for the socket. */
static void pump(int wait_ms)
{
    if (conn_dead)
        return;
    struct pollfd pfd = {.fd = conn_fd, .events = POLLIN};
    if (nghttp2_session_want_write(h2))
        pfd.events |= POLLOUT;
    if (poll(&pfd, 1, wait_ms) < 0)
        return;
    if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
        uint8_t buf[65536];
        for (;;) {
            ssize_t n = recv(conn_fd, buf, sizeof buf, 0);
            if (n > 0) {
                if (nghttp2_session_mem_recv(h2, buf, (size_t)n) < 0) {
                    conn_dead = 1;
                    return;
                }
                continue;
            }
            if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
                conn_dead = 1;
            break;
        }
    }
    if (!conn_dead && nghttp2_session_send(h2) != 0)
        conn_dead = 1;
}

static void frame_message(struct call *c, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    c->tx = xmalloc(n + 5);
    c->tx[0] = 0;
    c->tx[1] = (uint8_t)(n >> 24);
    c->tx[2] = (uint8_t)(n >> 16);
    c->tx[3] = (uint8_t)(n >> 8);
    c->tx[4] = (uint8_t)n;
    protobuf_c_message_pack(m, c->tx + 5);
    c->tx_len = n + 5;
    c->tx_off = 0;
}

static int call_start(struct call *c, const char *path)
{
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}
    nghttp2_nv hdrs[] = {NV(":method", "POST"),
                         NV(":scheme", "http"),
                         NV(":path", path),
                         NV(":authority", conn_addr),
                         NV("content-type", "application/grpc"),
                         NV("te", "trailers"),
                         NV("user-agent", "it_enc_client")};
#undef NV
    c->grpc_status = -1;
    nghttp2_data_provider prd = {.source.ptr = c, .read_callback = read_cb};
    c->id = nghttp2_submit_request(h2, NULL, hdrs, sizeof hdrs / sizeof *hdrs, &prd, c);
    return c->id < 0 ? -1 : 0;
}

/* Takes the next complete gRPC message out of c->rx; 1 if one was taken. */
static int next_message(struct call *c, size_t *off, const uint8_t **msg, size_t *len)
{
    if (c->rx_len - *off < 5)
        return 0;
    const uint8_t *h = c->rx + *off;
    size_t n = (size_t)h[1] << 24 | (size_t)h[2] << 16 | (size_t)h[3] << 8 | h[4];
    if (c->rx_len - *off - 5 < n)
        return 0;
    *msg = h + 5;
    *len = n;
    *off += 5 + n;
    return 1;
}

static void call_free(struct call *c)
{
    free(c->tx);
    free(c->rx);
    memset(c, 0, sizeof *c);
}

/* A unary call: returns the unpacked response (NULL on error; then st and msg say why). */
static ProtobufCMessage *unary(const char *path, const ProtobufCMessage *req,
                               const ProtobufCMessageDescriptor *resp_desc, int *st, char *msg,
                               size_t msgcap)
{
    struct call c = {0};
    frame_message(&c, req);
    c.tx_end = 1;
    ProtobufCMessage *out = NULL;
    *st = -1;
    msg[0] = 0;
    if (call_start(&c, path) != 0) {
        snprintf(msg, msgcap, "submit failed");
        call_free(&c);
        return NULL;
    }
    long deadline = now_ms() + rpc_timeout_ms;
    while (!c.closed && !conn_dead && now_ms() < deadline)
        pump(100);
    if (!c.closed) {
        snprintf(msg, msgcap, conn_dead ? "connection closed" : "timeout");
        nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, c.id, NGHTTP2_CANCEL);
        nghttp2_session_set_stream_user_data(h2, c.id, NULL);
        call_free(&c);
        return NULL;
    }
    *st = c.grpc_status;
    snprintf(msg, msgcap, "%s", c.grpc_message);
    size_t off = 0, len;
    const uint8_t *m;
    if (c.grpc_status == 0 && next_message(&c, &off, &m, &len)) {
        out = protobuf_c_message_unpack(resp_desc, NULL, len, m);
        if (!out) {
            *st = -2;
            snprintf(msg, msgcap, "unparsable response (%zu bytes)", len);
        }
    } else if (c.grpc_status == 0) {
        *st = -2;
        snprintf(msg, msgcap, "no response message");
    }
    call_free(&c);
    return out;
}

/* ------------------------------------------------------------------ request building */

struct toks {
    char **v;
    size_t n, i;
};

static const char *peek(struct toks *t)
{
    return t->i < t->n ? t->v[t->i] : NULL;
}

static int bad(const char *what, const char *tok)
{
    fprintf(stderr, "it_enc_client: %s: %s\n", what, tok ? tok : "(end of command)");
    return -1;
}

static int take_bytes(struct toks *t, ProtobufCBinaryData *out, const char *what)
{
    const char *s = peek(t);
    if (!s || parse_bytes(s, out) != 0)
        return bad(what, s);
    t->i++;
    return 0;
}

static int is_op_word(const char *s)
{
    return s &&
           (!strcmp(s, "put") || !strcmp(s, "get") || !strcmp(s, "del") || !strcmp(s, "txn") ||
            !strcmp(s, "then") || !strcmp(s, "else") || !strcmp(s, "end") || !strcmp(s, "cmp"));
}

/* Range options shared by get/del/watch/cmp: end=, prefix, from. 1 if consumed. */
static int range_opt(const char *s, const ProtobufCBinaryData *key, ProtobufCBinaryData *end)
{
    if (!strcmp(s, "prefix")) {
        prefix_end(key, end);
        return 1;
    }
    if (!strcmp(s, "from")) {
        end->data = xmalloc(1);
        end->data[0] = 0;
        end->len = 1;
        return 1;
    }
    if (!strncmp(s, "end=", 4))
        return parse_bytes(s + 4, end) == 0 ? 1 : -1;
    return 0;
}

static int parse_put(struct toks *t, Etcdserverpb__PutRequest *r)
{
    etcdserverpb__put_request__init(r);
    if (take_bytes(t, &r->key, "put: key") || take_bytes(t, &r->value, "put: value"))
        return -1;
    for (const char *s; (s = peek(t)) && !is_op_word(s); t->i++) {
        if (!strcmp(s, "prev"))
            r->prev_kv = 1;
        else if (!strcmp(s, "ignore_value"))
            r->ignore_value = 1;
        else if (!strcmp(s, "ignore_lease"))
            r->ignore_lease = 1;
        else if (!strncmp(s, "lease=", 6))
            r->lease = strtoll(s + 6, NULL, 0);
        else
            return bad("put: unknown option", s);
    }
    return 0;
}

static int parse_get(struct toks *t, Etcdserverpb__RangeRequest *r)
{
    etcdserverpb__range_request__init(r);
    if (take_bytes(t, &r->key, "get: key"))
        return -1;
    for (const char *s; (s = peek(t)) && !is_op_word(s); t->i++) {
        int ro = range_opt(s, &r->key, &r->range_end);
        if (ro < 0)
            return bad("get: bad range end", s);
        if (ro)
            continue;
        if (!strncmp(s, "limit=", 6))
            r->limit = strtoll(s + 6, NULL, 10);
        else if (!strncmp(s, "rev=", 4))
            r->revision = strtoll(s + 4, NULL, 10);
        else if (!strcmp(s, "keys_only"))
            r->keys_only = 1;
        else if (!strcmp(s, "count_only"))
            r->count_only = 1;
        else if (!strcmp(s, "serializable"))
            r->serializable = 1;
        else if (!strncmp(s, "sort=", 5)) {
            static const char *names[] = {"key", "version", "create", "mod", "value"};
            int k = -1;
            for (int j = 0; j < 5; j++)
                if (!strcmp(s + 5, names[j]))
                    k = j;
            if (k < 0)
                return bad("get: sort target", s);
            r->sort_target = (Etcdserverpb__RangeRequest__SortTarget)k;
        } else if (!strncmp(s, "order=", 6)) {
            const char *o = s + 6;
            if (!strcmp(o, "none"))
                r->sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__NONE;
            else if (!strcmp(o, "asc"))
                r->sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND;
            else if (!strcmp(o, "desc"))
                r->sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND;
            else
                return bad("get: order", s);
        } else
            return bad("get: unknown option", s);
    }
    return 0;
}

static int parse_del(struct toks *t, Etcdserverpb__DeleteRangeRequest *r)
{
    etcdserverpb__delete_range_request__init(r);
    if (take_bytes(t, &r->key, "del: key"))
        return -1;
    for (const char *s; (s = peek(t)) && !is_op_word(s); t->i++) {
        int ro = range_opt(s, &r->key, &r->range_end);
        if (ro < 0)
            return bad("del: bad range end", s);
        if (ro)
            continue;
        if (!strcmp(s, "prev"))
            r->prev_kv = 1;
        else
            return bad("del: unknown option", s);
    }
    return 0;
}

static int parse_cmp(struct toks *t, Etcdserverpb__Compare *c)
{
    etcdserverpb__compare__init(c);
    if (take_bytes(t, &c->key, "cmp: key"))
        return -1;
    const char *target = peek(t);
    if (!target)
        return bad("cmp: target", NULL);
    t->i++;
    const char *op = peek(t);
    if (!op)
        return bad("cmp: operator", NULL);
    t->i++;
    if (!strcmp(op, "="))
        c->result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
    else if (!strcmp(op, "!="))
        c->result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__NOT_EQUAL;
    else if (!strcmp(op, ">"))
        c->result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__GREATER;
    else if (!strcmp(op, "<"))
        c->result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__LESS;
    else
        return bad("cmp: operator", op);
    const char *v = peek(t);
    if (!v)
        return bad("cmp: operand", NULL);
    if (!strcmp(target, "value")) {
        c->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE;
        c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
        if (take_bytes(t, &c->value, "cmp: value"))
            return -1;
    } else {
        int64_t n = strtoll(v, NULL, 10);
        t->i++;
        if (!strcmp(target, "version")) {
            c->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION;
            c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION;
            c->version = n;
        } else if (!strcmp(target, "create")) {
            c->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE;
            c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
            c->create_revision = n;
        } else if (!strcmp(target, "mod")) {
            c->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
            c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
            c->mod_revision = n;
        } else if (!strcmp(target, "lease")) {
            c->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__LEASE;
            c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_LEASE;
            c->lease = n;
        } else
            return bad("cmp: target", target);
    }
    for (const char *s; (s = peek(t)) && !is_op_word(s); t->i++) {
        int ro = range_opt(s, &c->key, &c->range_end);
        if (ro <= 0)
            return bad("cmp: unknown option", s);
    }
    return 0;
}

static int parse_txn(struct toks *t, Etcdserverpb__TxnRequest *r);

static int parse_op(struct toks *t, Etcdserverpb__RequestOp *op)
{
    etcdserverpb__request_op__init(op);
    const char *w = peek(t);
    if (!w)
        return bad("txn: operation expected", NULL);
    t->i++;
    if (!strcmp(w, "put")) {
        op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
        op->request_put = xmalloc(sizeof *op->request_put);
        return parse_put(t, op->request_put);
    }
    if (!strcmp(w, "get")) {
        op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
        op->request_range = xmalloc(sizeof *op->request_range);
        return parse_get(t, op->request_range);
    }
    if (!strcmp(w, "del")) {
        op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
        op->request_delete_range = xmalloc(sizeof *op->request_delete_range);
        return parse_del(t, op->request_delete_range);
    }
    if (!strcmp(w, "txn")) {
        op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN;
        op->request_txn = xmalloc(sizeof *op->request_txn);
        return parse_txn(t, op->request_txn);
    }
    return bad("txn: unknown operation", w);
}

static int parse_ops(struct toks *t, Etcdserverpb__RequestOp ***ops, size_t *n, const char *stop)
{
    size_t cap = 4;
    *ops = xcalloc(cap, sizeof **ops);
    *n = 0;
    for (const char *s; (s = peek(t)) && strcmp(s, stop) != 0 && strcmp(s, "end") != 0;) {
        if (*n == cap) {
            cap *= 2;
            Etcdserverpb__RequestOp **p = realloc(*ops, cap * sizeof **ops);
            if (!p)
                return bad("out of memory", NULL);
            *ops = p;
        }
        (*ops)[*n] = xmalloc(sizeof ***ops);
        etcdserverpb__request_op__init((*ops)[*n]);
        (*n)++;
        if (parse_op(t, (*ops)[*n - 1]) != 0)
            return -1;
    }
    return 0;
}

/* txn [cmp ...]* then OP* [else OP*] end */
static int parse_txn(struct toks *t, Etcdserverpb__TxnRequest *r)
{
    etcdserverpb__txn_request__init(r);
    size_t cap = 0;
    while (peek(t) && !strcmp(peek(t), "cmp")) {
        t->i++;
        if (r->n_compare == cap) {
            cap = cap ? cap * 2 : 4;
            Etcdserverpb__Compare **p = realloc(r->compare, cap * sizeof *p);
            if (!p)
                return bad("out of memory", NULL);
            r->compare = p;
        }
        r->compare[r->n_compare] = xmalloc(sizeof **r->compare);
        etcdserverpb__compare__init(r->compare[r->n_compare]);
        r->n_compare++;
        if (parse_cmp(t, r->compare[r->n_compare - 1]) != 0)
            return -1;
    }
    if (!peek(t) || strcmp(peek(t), "then") != 0)
        return bad("txn: 'then' expected", peek(t));
    t->i++;
    if (parse_ops(t, &r->success, &r->n_success, "else") != 0)
        return -1;
    if (peek(t) && !strcmp(peek(t), "else")) {
        t->i++;
        if (parse_ops(t, &r->failure, &r->n_failure, "end") != 0)
            return -1;
    }
    if (!peek(t) || strcmp(peek(t), "end") != 0)
        return bad("txn: 'end' expected", peek(t));
    t->i++;
    return 0;
}

/* Frees a request built by the parsers (they allocate with malloc; protobuf-c's free_unpacked
 * uses the same allocator, so it walks and frees the whole tree). */
static void free_request(ProtobufCMessage *m)
{
    protobuf_c_message_free_unpacked(m, NULL);
}

/* ------------------------------------------------------------------ KV calls */

static int rpc_failures;

static void print_error(const char *op, int st, const char *msg)
{
    printf("{\"op\":\"%s\",\"error\":{\"code\":%d,\"message\":", op, st);
    json_bytes(stdout, (const uint8_t *)msg, strlen(msg));
    printf("}}\n");
    rpc_failures++;
}

static void *kv_call(const char *method, const ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *d, const char *op, int quiet_errors,
                     int *st_out)
{
    char path[64], msg[512];
    int st;
    snprintf(path, sizeof path, "/etcdserverpb.KV/%s", method);
    ProtobufCMessage *resp = unary(path, req, d, &st, msg, sizeof msg);
    if (st_out)
        *st_out = st;
    if (!resp && !quiet_errors)
        print_error(op, st, msg);
    return resp;
}

static int run_kv_command(struct toks *t)
{
    const char *w = peek(t);
    t->i++;
    int rc = -1;
    if (!strcmp(w, "put")) {
        Etcdserverpb__PutRequest *r = xmalloc(sizeof *r);
        if (parse_put(t, r) == 0) {
            Etcdserverpb__PutResponse *p =
                kv_call("Put", &r->base, &etcdserverpb__put_response__descriptor, "put", 0, NULL);
            if (p) {
                json_put(stdout, p);
                putchar('\n');
                protobuf_c_message_free_unpacked(&p->base, NULL);
            }
            rc = 0;
        }
        free_request(&r->base);
    } else if (!strcmp(w, "get")) {
        Etcdserverpb__RangeRequest *r = xmalloc(sizeof *r);
        if (parse_get(t, r) == 0) {
            Etcdserverpb__RangeResponse *p = kv_call(
                "Range", &r->base, &etcdserverpb__range_response__descriptor, "range", 0, NULL);
            if (p) {
                json_range(stdout, p);
                putchar('\n');
                protobuf_c_message_free_unpacked(&p->base, NULL);
            }
            rc = 0;
        }
        free_request(&r->base);
    } else if (!strcmp(w, "del")) {
        Etcdserverpb__DeleteRangeRequest *r = xmalloc(sizeof *r);
        if (parse_del(t, r) == 0) {
            Etcdserverpb__DeleteRangeResponse *p =
                kv_call("DeleteRange", &r->base, &etcdserverpb__delete_range_response__descriptor,
                        "del", 0, NULL);
            if (p) {
                json_del(stdout, p);
                putchar('\n');
                protobuf_c_message_free_unpacked(&p->base, NULL);
            }
            rc = 0;
        }
        free_request(&r->base);
    } else if (!strcmp(w, "txn")) {
        Etcdserverpb__TxnRequest *r = xmalloc(sizeof *r);
        if (parse_txn(t, r) == 0) {
            Etcdserverpb__TxnResponse *p =
                kv_call("Txn", &r->base, &etcdserverpb__txn_response__descriptor, "txn", 0, NULL);
            if (p) {
                json_txn(stdout, p);
                putchar('\n');
                protobuf_c_message_free_unpacked(&p->base, NULL);
            }
            rc = 0;
        }
        free_request(&r->base);
    }
    if (rc == 0 && peek(t))
        return bad("trailing tokens", peek(t));
    return rc;
}

/* ------------------------------------------------------------------ watch */

static int run_watch(struct toks *t)
{
    Etcdserverpb__WatchCreateRequest *cr = xmalloc(sizeof *cr);
    etcdserverpb__watch_create_request__init(cr);
    long count = -1, timeout_s = 30;
    Etcdserverpb__WatchCreateRequest__FilterType filters[2];
    int rc = -1;
    if (take_bytes(t, &cr->key, "watch: key"))
        goto out;
    for (const char *s; (s = peek(t)); t->i++) {
        int ro = range_opt(s, &cr->key, &cr->range_end);
        if (ro < 0) {
            bad("watch: bad range end", s);
            goto out;
        }
        if (ro)
            continue;
        if (!strncmp(s, "rev=", 4))
            cr->start_revision = strtoll(s + 4, NULL, 10);
        else if (!strcmp(s, "prev"))
            cr->prev_kv = 1;
        else if (!strcmp(s, "fragment"))
            cr->fragment = 1;
        else if (!strcmp(s, "noput") && cr->n_filters < 2)
            filters[cr->n_filters++] = ETCDSERVERPB__WATCH_CREATE_REQUEST__FILTER_TYPE__NOPUT;
        else if (!strcmp(s, "nodelete") && cr->n_filters < 2)
            filters[cr->n_filters++] = ETCDSERVERPB__WATCH_CREATE_REQUEST__FILTER_TYPE__NODELETE;
        else if (!strncmp(s, "count=", 6))
            count = strtol(s + 6, NULL, 10);
        else if (!strncmp(s, "timeout=", 8))
            timeout_s = strtol(s + 8, NULL, 10);
        else {
            bad("watch: unknown option", s);
            goto out;
        }
    }
    cr->filters = cr->n_filters ? filters : NULL;
    Etcdserverpb__WatchRequest wr = ETCDSERVERPB__WATCH_REQUEST__INIT;
    wr.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    wr.create_request = cr;
    struct call c = {0};
    frame_message(&c, &wr.base);
    cr->filters = NULL; /* stack array: not for free_unpacked */
    cr->n_filters = 0;
    if (call_start(&c, "/etcdserverpb.Watch/Watch") != 0) {
        call_free(&c);
        goto out;
    }
    long deadline = now_ms() + timeout_s * 1000, events = 0, responses = 0, fragments = 0;
    int created = 0, canceled = 0;
    size_t off = 0;
    /* trailers end the call even while our side of the stream is still open */
    while (!c.closed && c.grpc_status < 0 && !conn_dead && now_ms() < deadline && !canceled &&
           (count < 0 || events < count)) {
        pump(50);
        const uint8_t *m;
        size_t len;
        while (next_message(&c, &off, &m, &len)) {
            Etcdserverpb__WatchResponse *r = etcdserverpb__watch_response__unpack(NULL, len, m);
            if (!r) {
                printf("{\"op\":\"watch\",\"error\":{\"code\":-2,\"message\":\"unparsable\"}}\n");
                rpc_failures++;
                continue;
            }
            responses++;
            if (r->created) {
                created = 1;
                printf("{\"op\":\"watch\",\"created\":true,\"watch_id\":%" PRId64 "}\n",
                       r->watch_id);
            }
            if (r->canceled) {
                canceled = 1;
                printf("{\"op\":\"watch\",\"canceled\":true,\"compact_revision\":%" PRId64
                       ",\"reason\":",
                       r->compact_revision);
                json_bytes(stdout, (const uint8_t *)r->cancel_reason, strlen(r->cancel_reason));
                printf("}\n");
            }
            if (r->n_events || r->fragment) {
                fragments += r->fragment != 0;
                printf("{\"op\":\"watch_response\",");
                json_header(stdout, r->header);
                printf("\"fragment\":%s,\"events\":%zu}\n", r->fragment ? "true" : "false",
                       r->n_events);
            }
            for (size_t i = 0; i < r->n_events; i++) {
                Mvccpb__Event *e = r->events[i];
                printf("{\"ev\":\"%s\",\"kv\":",
                       e->type == MVCCPB__EVENT__EVENT_TYPE__DELETE ? "DELETE" : "PUT");
                if (e->kv)
                    json_kv(stdout, e->kv);
                else
                    fputs("null", stdout);
                fputs(",\"prev_kv\":", stdout);
                if (e->prev_kv)
                    json_kv(stdout, e->prev_kv);
                else
                    fputs("null", stdout);
                printf("}\n");
                events++;
            }
            fflush(stdout);
            etcdserverpb__watch_response__free_unpacked(r, NULL);
        }
        if (off > 0) {
            memmove(c.rx, c.rx + off, c.rx_len - off);
            c.rx_len -= off;
            off = 0;
        }
    }
    if (c.grpc_status > 0)
        print_error("watch", c.grpc_status, c.grpc_message);
    printf("{\"op\":\"watch_done\",\"created\":%s,\"events\":%ld,\"responses\":%ld,"
           "\"fragments\":%ld,\"closed\":%s,\"timed_out\":%s}\n",
           created ? "true" : "false", events, responses, fragments,
           c.closed || c.grpc_status >= 0 ? "true" : "false",
           now_ms() >= deadline ? "true" : "false");
    if (!c.closed) {
        nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, c.id, NGHTTP2_CANCEL);
        nghttp2_session_set_stream_user_data(h2, c.id, NULL);
        pump(0);
    }
    call_free(&c);
    rc = (created && (count < 0 || events >= count)) ? 0 : 1;
    if (rc)
        rpc_failures++;
out:
    free_request(&cr->base);
    return rc < 0 ? -1 : 0;
}

/* ------------------------------------------------------------------ programmatic helpers */

/* Range of one key; returns 1 found, 0 absent, -1 error. Value copied to *val (malloc'd). */
static int get_one(const ProtobufCBinaryData *key, ProtobufCBinaryData *val, int64_t *mod)
{
    Etcdserverpb__RangeRequest r = ETCDSERVERPB__RANGE_REQUEST__INIT;
    r.key = *key;
    int st;
    Etcdserverpb__RangeResponse *p =
        kv_call("Range", &r.base, &etcdserverpb__range_response__descriptor, "range", 1, &st);
    if (!p)
        return -1;
    int found = p->n_kvs == 1;
    if (found) {
        val->len = p->kvs[0]->value.len;
        val->data = xmalloc(val->len);
        if (val->len) /* protobuf-c leaves data NULL for an empty value */
            memcpy(val->data, p->kvs[0]->value.data, val->len);
        if (mod)
            *mod = p->kvs[0]->mod_revision;
    }
    protobuf_c_message_free_unpacked(&p->base, NULL);
    return found;
}

static Etcdserverpb__RequestOp *op_put(ProtobufCBinaryData k, ProtobufCBinaryData v,
                                       Etcdserverpb__PutRequest *pr, Etcdserverpb__RequestOp *op)
{
    etcdserverpb__put_request__init(pr);
    pr->key = k;
    pr->value = v;
    etcdserverpb__request_op__init(op);
    op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    op->request_put = pr;
    return op;
}

static Etcdserverpb__RequestOp *op_get(ProtobufCBinaryData k, Etcdserverpb__RangeRequest *rr,
                                       Etcdserverpb__RequestOp *op)
{
    etcdserverpb__range_request__init(rr);
    rr->key = k;
    etcdserverpb__request_op__init(op);
    op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
    op->request_range = rr;
    return op;
}

static ProtobufCBinaryData text(char *s)
{
    ProtobufCBinaryData b = {strlen(s), (uint8_t *)s};
    return b;
}

/* cas KEY N: read value v (a decimal number), txn if value(KEY) == v then put v+1 else get KEY.
 * Counts ok / conflict / aborted / other; a conflict whose get returns v again is "bad" (the
 * compare was false although the value in the same atomic step equals the operand). */
static int run_cas(struct toks *t)
{
    ProtobufCBinaryData key;
    if (take_bytes(t, &key, "cas: key") || !peek(t))
        return bad("cas: usage: cas KEY N", peek(t));
    long n = strtol(peek(t), NULL, 10);
    t->i++;
    long ok = 0, conflict = 0, aborted = 0, other = 0, badv = 0, readerr = 0;
    char first_err[512] = "";
    for (long i = 0; i < n; i++) {
        ProtobufCBinaryData cur;
        if (get_one(&key, &cur, NULL) != 1) {
            readerr++;
            continue;
        }
        char vbuf[32], nbuf[32];
        size_t vl = cur.len < sizeof vbuf - 1 ? cur.len : sizeof vbuf - 1;
        if (vl)
            memcpy(vbuf, cur.data, vl);
        vbuf[vl] = 0;
        free(cur.data);
        snprintf(nbuf, sizeof nbuf, "%ld", strtol(vbuf, NULL, 10) + 1);
        Etcdserverpb__Compare cmp = ETCDSERVERPB__COMPARE__INIT, *cmps[1] = {&cmp};
        cmp.key = key;
        cmp.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE;
        cmp.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
        cmp.value = text(vbuf);
        Etcdserverpb__PutRequest pr;
        Etcdserverpb__RangeRequest rr;
        Etcdserverpb__RequestOp so, fo, *sops[1], *fops[1];
        sops[0] = op_put(key, text(nbuf), &pr, &so);
        fops[0] = op_get(key, &rr, &fo);
        Etcdserverpb__TxnRequest txn = ETCDSERVERPB__TXN_REQUEST__INIT;
        txn.n_compare = 1;
        txn.compare = cmps;
        txn.n_success = 1;
        txn.success = sops;
        txn.n_failure = 1;
        txn.failure = fops;
        int st;
        char path[] = "/etcdserverpb.KV/Txn", msg[512];
        Etcdserverpb__TxnResponse *p = (Etcdserverpb__TxnResponse *)unary(
            path, &txn.base, &etcdserverpb__txn_response__descriptor, &st, msg, sizeof msg);
        if (!p) {
            if (st == 10)
                aborted++;
            else
                other++;
            if (!first_err[0])
                snprintf(first_err, sizeof first_err, "code %d: %s", st, msg);
            continue;
        }
        if (p->succeeded) {
            ok++;
        } else {
            conflict++;
            if (p->n_responses != 1 ||
                p->responses[0]->response_case !=
                    ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE ||
                p->responses[0]->response_range->n_kvs != 1) {
                badv++;
            } else {
                ProtobufCBinaryData *v = &p->responses[0]->response_range->kvs[0]->value;
                if (v->len == strlen(vbuf) && memcmp(v->data, vbuf, v->len) == 0)
                    badv++;
            }
        }
        protobuf_c_message_free_unpacked(&p->base, NULL);
    }
    printf("{\"op\":\"cas\",\"n\":%ld,\"ok\":%ld,\"conflict\":%ld,\"aborted\":%ld,\"other\":%ld,"
           "\"bad\":%ld,\"readerr\":%ld,\"first_error\":",
           n, ok, conflict, aborted, other, badv, readerr);
    json_bytes(stdout, (const uint8_t *)first_err, strlen(first_err));
    printf("}\n");
    free(key.data);
    return 0;
}

/* hammer KEY SECS [STOPFILE]: read KEY (value v, mod m), txn if mod(KEY) == m then put KEY v. */
static int run_hammer(struct toks *t)
{
    ProtobufCBinaryData key;
    if (take_bytes(t, &key, "hammer: key") || !peek(t))
        return bad("hammer: usage: hammer KEY SECS [STOPFILE]", peek(t));
    long secs = strtol(peek(t), NULL, 10);
    t->i++;
    const char *stop = peek(t);
    if (stop)
        t->i++;
    long writes = 0, misses = 0, errors = 0, deadline = now_ms() + secs * 1000;
    struct stat sb;
    while (now_ms() < deadline && !(stop && stat(stop, &sb) == 0)) {
        ProtobufCBinaryData cur;
        int64_t mod = 0;
        if (get_one(&key, &cur, &mod) != 1) {
            errors++;
            continue;
        }
        Etcdserverpb__Compare cmp = ETCDSERVERPB__COMPARE__INIT, *cmps[1] = {&cmp};
        cmp.key = key;
        cmp.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
        cmp.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
        cmp.mod_revision = mod;
        Etcdserverpb__PutRequest pr;
        Etcdserverpb__RequestOp so, *sops[1];
        sops[0] = op_put(key, cur, &pr, &so);
        Etcdserverpb__TxnRequest txn = ETCDSERVERPB__TXN_REQUEST__INIT;
        txn.n_compare = 1;
        txn.compare = cmps;
        txn.n_success = 1;
        txn.success = sops;
        int st;
        Etcdserverpb__TxnResponse *p =
            kv_call("Txn", &txn.base, &etcdserverpb__txn_response__descriptor, "txn", 1, &st);
        free(cur.data);
        if (!p) {
            errors++;
            continue;
        }
        if (p->succeeded)
            writes++;
        else
            misses++;
        protobuf_c_message_free_unpacked(&p->base, NULL);
    }
    printf("{\"op\":\"hammer\",\"writes\":%ld,\"misses\":%ld,\"errors\":%ld}\n", writes, misses,
           errors);
    free(key.data);
    return 0;
}

/* ------------------------------------------------------------------ mixed workload */

#define MIX_KEYS 64

struct mslot {
    int present;
    ProtobufCBinaryData v;
};

static long mix_mismatch;

static void mix_fail(long opno, const char *what, const ProtobufCBinaryData *key)
{
    if (++mix_mismatch <= 10) {
        fprintf(stderr, "mixed: op %ld: %s on ", opno, what);
        fwrite(key->data, 1, key->len, stderr);
        fputc('\n', stderr);
    }
}

static int same(const ProtobufCBinaryData *a, const ProtobufCBinaryData *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

static void rand_value(uint64_t *s, ProtobufCBinaryData *v)
{
    uint64_t r = xorshift(s);
    size_t n = r % 16 == 0 ? 3000 + r % 5000 : (size_t)(r >> 8) % 300;
    if (r % 29 == 0)
        n = 0;
    v->data = xmalloc(n);
    v->len = n;
    for (size_t i = 0; i < n; i++)
        v->data[i] = (uint8_t)(xorshift(s) >> 32);
}

static void mkey(char *buf, size_t cap, const char *pfx, int slot, ProtobufCBinaryData *k)
{
    snprintf(buf, cap, "%sk%02d", pfx, slot);
    k->data = (uint8_t *)buf;
    k->len = strlen(buf);
}

static int kv_matches_model(const Mvccpb__KeyValue *kv, struct mslot *m, const char *pp,
                            const char *up)
{
    size_t lp = strlen(pp), lu = strlen(up);
    const char *pfx = NULL;
    int base = 0;
    if (kv->key.len == lp + 3 && memcmp(kv->key.data, pp, lp) == 0)
        pfx = pp;
    else if (kv->key.len == lu + 3 && memcmp(kv->key.data, up, lu) == 0) {
        pfx = up;
        base = MIX_KEYS;
    }
    if (!pfx)
        return 0;
    const uint8_t *d = kv->key.data + strlen(pfx) + 1;
    int slot = base + (d[0] - '0') * 10 + (d[1] - '0');
    return slot >= 0 && slot < 2 * MIX_KEYS && m[slot].present && same(&m[slot].v, &kv->value);
}

static int run_mixed(struct toks *t)
{
    if (t->n - t->i < 5)
        return bad("mixed: usage: mixed SEED N PPREFIX UPREFIX MODELFILE", NULL);
    uint64_t seed = strtoull(t->v[t->i], NULL, 10) * 0x9E3779B97F4A7C15ULL + 1;
    long n = strtol(t->v[t->i + 1], NULL, 10);
    const char *pp = t->v[t->i + 2], *up = t->v[t->i + 3], *model = t->v[t->i + 4];
    t->i += 5;
    struct mslot m[2 * MIX_KEYS];
    memset(m, 0, sizeof m);
    long counts[8] = {0}, errors = 0;
    char kb[256], kb2[256];
    for (long op = 0; op < n; op++) {
        int slot = (int)(xorshift(&seed) % (2 * MIX_KEYS));
        int prot = slot < MIX_KEYS;
        const char *pfx = prot ? pp : up;
        ProtobufCBinaryData key;
        mkey(kb, sizeof kb, pfx, slot % MIX_KEYS, &key);
        int kind = (int)(xorshift(&seed) % 100);
        int st;
        if (kind < 35) { /* put, sometimes with prev_kv */
            counts[0]++;
            Etcdserverpb__PutRequest r = ETCDSERVERPB__PUT_REQUEST__INIT;
            r.key = key;
            rand_value(&seed, &r.value);
            r.prev_kv = kind % 2;
            Etcdserverpb__PutResponse *p =
                kv_call("Put", &r.base, &etcdserverpb__put_response__descriptor, "put", 1, &st);
            if (!p) {
                errors++;
                mix_fail(op, "put error", &key);
                free(r.value.data);
                continue;
            }
            if (r.prev_kv) {
                int had = p->prev_kv != NULL;
                if (had != m[slot].present || (had && !same(&p->prev_kv->value, &m[slot].v)))
                    mix_fail(op, "put prev_kv differs from model", &key);
            }
            protobuf_c_message_free_unpacked(&p->base, NULL);
            free(m[slot].v.data);
            m[slot].v = r.value;
            m[slot].present = 1;
        } else if (kind < 60) { /* get one key */
            counts[1]++;
            ProtobufCBinaryData v = {0, NULL};
            int f = get_one(&key, &v, NULL);
            if (f < 0) {
                errors++;
                mix_fail(op, "get error", &key);
            } else if (f != m[slot].present || (f && !same(&v, &m[slot].v))) {
                mix_fail(op, "get differs from model", &key);
            }
            free(v.data);
        } else if (kind < 70) { /* delete one key with prev_kv */
            counts[2]++;
            Etcdserverpb__DeleteRangeRequest r = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
            r.key = key;
            r.prev_kv = 1;
            Etcdserverpb__DeleteRangeResponse *p =
                kv_call("DeleteRange", &r.base, &etcdserverpb__delete_range_response__descriptor,
                        "del", 1, &st);
            if (!p) {
                errors++;
                mix_fail(op, "del error", &key);
                continue;
            }
            if (p->deleted != m[slot].present || p->n_prev_kvs != (size_t)m[slot].present ||
                (p->n_prev_kvs && !same(&p->prev_kvs[0]->value, &m[slot].v)))
                mix_fail(op, "del differs from model", &key);
            protobuf_c_message_free_unpacked(&p->base, NULL);
            free(m[slot].v.data);
            m[slot].v.data = NULL;
            m[slot].v.len = 0;
            m[slot].present = 0;
        } else if (kind < 88) { /* txn: VALUE compare, then put, else put other key + get */
            counts[3]++;
            int slot2 = (slot / MIX_KEYS) * MIX_KEYS + (int)(xorshift(&seed) % MIX_KEYS);
            ProtobufCBinaryData key2;
            mkey(kb2, sizeof kb2, pfx, slot2 % MIX_KEYS, &key2);
            ProtobufCBinaryData operand, nv, nv2;
            int use_model = xorshift(&seed) % 3 != 0;
            if (use_model && m[slot].present) {
                operand.len = m[slot].v.len;
                operand.data = xmalloc(operand.len);
                if (operand.len)
                    memcpy(operand.data, m[slot].v.data, operand.len);
            } else {
                rand_value(&seed, &operand);
            }
            int expect = m[slot].present && same(&operand, &m[slot].v);
            rand_value(&seed, &nv);
            rand_value(&seed, &nv2);
            Etcdserverpb__Compare cmp = ETCDSERVERPB__COMPARE__INIT, *cmps[1] = {&cmp};
            cmp.key = key;
            cmp.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE;
            cmp.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
            cmp.value = operand;
            Etcdserverpb__PutRequest pr, pr2;
            Etcdserverpb__RangeRequest rr;
            Etcdserverpb__RequestOp so, fo1, fo2, *sops[1], *fops[2];
            sops[0] = op_put(key, nv, &pr, &so);
            fops[0] = op_put(key2, nv2, &pr2, &fo1);
            fops[1] = op_get(key, &rr, &fo2);
            Etcdserverpb__TxnRequest txn = ETCDSERVERPB__TXN_REQUEST__INIT;
            txn.n_compare = 1;
            txn.compare = cmps;
            txn.n_success = 1;
            txn.success = sops;
            txn.n_failure = 2;
            txn.failure = fops;
            Etcdserverpb__TxnResponse *p =
                kv_call("Txn", &txn.base, &etcdserverpb__txn_response__descriptor, "txn", 1, &st);
            free(operand.data);
            if (!p) {
                errors++;
                mix_fail(op, "txn error", &key);
                free(nv.data);
                free(nv2.data);
                continue;
            }
            if (p->succeeded != expect)
                mix_fail(op, "txn succeeded flag differs from model", &key);
            if (p->succeeded) {
                free(m[slot].v.data);
                m[slot].v = nv;
                m[slot].present = 1;
                free(nv2.data);
            } else {
                free(m[slot2].v.data);
                m[slot2].v = nv2;
                m[slot2].present = 1;
                free(nv.data);
                const Etcdserverpb__RangeResponse *g =
                    p->n_responses == 2 ? p->responses[1]->response_range : NULL;
                if (!g || g->n_kvs != (size_t)m[slot].present ||
                    (g->n_kvs && !same(&g->kvs[0]->value, &m[slot].v)))
                    mix_fail(op, "txn failure-branch get differs from model", &key);
            }
            protobuf_c_message_free_unpacked(&p->base, NULL);
        } else if (kind < 95) { /* range over the whole prefix */
            counts[4]++;
            Etcdserverpb__RangeRequest r = ETCDSERVERPB__RANGE_REQUEST__INIT;
            ProtobufCBinaryData pk = text((char *)pfx);
            r.key = pk;
            prefix_end(&pk, &r.range_end);
            Etcdserverpb__RangeResponse *p = kv_call(
                "Range", &r.base, &etcdserverpb__range_response__descriptor, "range", 1, &st);
            free(r.range_end.data);
            if (!p) {
                errors++;
                mix_fail(op, "range error", &key);
                continue;
            }
            long want = 0;
            for (int i = 0; i < MIX_KEYS; i++)
                want += m[(slot / MIX_KEYS) * MIX_KEYS + i].present;
            if ((long)p->n_kvs != want)
                mix_fail(op, "range count differs from model", &key);
            for (size_t i = 0; i < p->n_kvs; i++)
                if (!kv_matches_model(p->kvs[i], m, pp, up)) {
                    mix_fail(op, "range value differs from model", &p->kvs[i]->key);
                    break;
                }
            protobuf_c_message_free_unpacked(&p->base, NULL);
        } else { /* delete a sub-range kNx with prev_kv */
            counts[5]++;
            char sub[256];
            snprintf(sub, sizeof sub, "%sk%d", pfx, (int)(xorshift(&seed) % 7));
            Etcdserverpb__DeleteRangeRequest r = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
            ProtobufCBinaryData sk = text(sub);
            r.key = sk;
            prefix_end(&sk, &r.range_end);
            r.prev_kv = 1;
            Etcdserverpb__DeleteRangeResponse *p =
                kv_call("DeleteRange", &r.base, &etcdserverpb__delete_range_response__descriptor,
                        "del", 1, &st);
            free(r.range_end.data);
            if (!p) {
                errors++;
                mix_fail(op, "del range error", &sk);
                continue;
            }
            for (size_t i = 0; i < p->n_prev_kvs; i++)
                if (!kv_matches_model(p->prev_kvs[i], m, pp, up))
                    mix_fail(op, "del range prev_kv differs from model", &p->prev_kvs[i]->key);
            long want = 0;
            int d = sub[strlen(sub) - 1] - '0';
            for (int i = 0; i < 10; i++) {
                int s = (slot / MIX_KEYS) * MIX_KEYS + d * 10 + i;
                if (d * 10 + i < MIX_KEYS && m[s].present) {
                    want++;
                    free(m[s].v.data);
                    m[s].v.data = NULL;
                    m[s].v.len = 0;
                    m[s].present = 0;
                }
            }
            if (p->deleted != want || (long)p->n_prev_kvs != want)
                mix_fail(op, "del range count differs from model", &sk);
            protobuf_c_message_free_unpacked(&p->base, NULL);
        }
    }
    FILE *f = fopen(model, "w");
    if (!f)
        return bad("mixed: cannot write model file", model);
    for (int s = 0; s < 2 * MIX_KEYS; s++) {
        if (!m[s].present)
            continue;
        char k[256];
        snprintf(k, sizeof k, "%sk%02d", s < MIX_KEYS ? pp : up, s % MIX_KEYS);
        for (const char *c = k; *c; c++)
            fprintf(f, "%02x", (unsigned char)*c);
        fputc(' ', f);
        for (size_t i = 0; i < m[s].v.len; i++)
            fprintf(f, "%02x", m[s].v.data[i]);
        fputc('\n', f);
        free(m[s].v.data);
    }
    fclose(f);
    printf("{\"op\":\"mixed\",\"n\":%ld,\"puts\":%ld,\"gets\":%ld,\"dels\":%ld,\"txns\":%ld,"
           "\"ranges\":%ld,\"delranges\":%ld,\"errors\":%ld,\"mismatches\":%ld}\n",
           n, counts[0], counts[1], counts[2], counts[3], counts[4], counts[5], errors,
           mix_mismatch);
    if (errors || mix_mismatch)
        rpc_failures++;
    return 0;
}

/* ------------------------------------------------------------------ driver */

static int run_command(char **v, size_t n)
{
    struct toks t = {v, n, 0};
    if (n == 0)
        return 0;
    const char *w = v[0];
    if (!strcmp(w, "put") || !strcmp(w, "get") || !strcmp(w, "del") || !strcmp(w, "txn"))
        return run_kv_command(&t);
    t.i = 1;
    if (!strcmp(w, "watch"))
        return run_watch(&t);
    if (!strcmp(w, "cas"))
        return run_cas(&t);
    if (!strcmp(w, "hammer"))
        return run_hammer(&t);
    if (!strcmp(w, "mixed"))
        return run_mixed(&t);
    if (!strcmp(w, "hash")) {
        ProtobufCBinaryData b;
        if (take_bytes(&t, &b, "hash: value"))
            return -1;
        json_bytes(stdout, b.data, b.len);
        putchar('\n');
        free(b.data);
        return 0;
    }
    return bad("unknown command", w);
}

static int run_file(FILE *f)
{
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    char **tok = xcalloc(MAX_TOKENS, sizeof *tok);
    while (getline(&line, &cap, f) >= 0) {
        size_t n = 0;
        for (char *s = strtok(line, " \t\r\n"); s && n < MAX_TOKENS; s = strtok(NULL, " \t\r\n"))
            tok[n++] = s;
        if (n == 0 || tok[0][0] == '#')
            continue;
        if (run_command(tok, n) != 0) {
            rc = -1;
            break;
        }
        fflush(stdout);
    }
    free(tok);
    free(line);
    return rc;
}

static void usage(void)
{
    fprintf(stderr, "usage: it_enc_client -a HOST:PORT [-t SECS] [-f FILE|-] [COMMAND...]\n");
}

int main(int argc, char **argv)
{
    const char *addr = NULL, *file = NULL;
    int i = 1;
    for (; i < argc; i++) {
        if (!strcmp(argv[i], "-a") && i + 1 < argc)
            addr = argv[++i];
        else if (!strcmp(argv[i], "-t") && i + 1 < argc)
            rpc_timeout_ms = strtol(argv[++i], NULL, 10) * 1000;
        else if (!strcmp(argv[i], "-f") && i + 1 < argc)
            file = argv[++i];
        else
            break;
    }
    if (i < argc && !strcmp(argv[i], "hash")) /* no connection needed */
        return run_command(argv + i, (size_t)(argc - i)) == 0 ? 0 : 2;
    if (!addr || (!file && i >= argc)) {
        usage();
        return 2;
    }
    if (conn_open(addr) != 0) {
        fprintf(stderr, "it_enc_client: cannot connect to %s: %s\n", addr, strerror(errno));
        return 2;
    }
    int rc = 0;
    if (file) {
        FILE *f = strcmp(file, "-") ? fopen(file, "r") : stdin;
        if (!f) {
            fprintf(stderr, "it_enc_client: %s: %s\n", file, strerror(errno));
            return 2;
        }
        rc = run_file(f);
        if (f != stdin)
            fclose(f);
    }
    if (rc == 0 && i < argc)
        rc = run_command(argv + i, (size_t)(argc - i));
    fflush(stdout);
    nghttp2_session_del(h2);
    close(conn_fd);
    if (rc != 0)
        return 2;
    return rpc_failures ? 3 : 0;
}
