/* it_h2_limits.c - an HTTP/2 (prior knowledge, cleartext) gRPC client with precise control over
 * headers, streams and connections, for the proxy's limit tests (tests/integration/limits_test.sh).
 *
 *   it_h2_limits headers HOST PORT BYTES
 *       prints the server's SETTINGS (max_header_list_size, max_concurrent_streams), then sends
 *       a KV/Range call whose header list (RFC 9113 size: name + value + 32 per field) is about
 *       BYTES, then a normal KV/Range call on the same connection; prints one line per call:
 *       `call N grpc-status=S grpc-message=M` (or `call N reset=CODE`).
 *   it_h2_limits streams HOST PORT N
 *       opens N Watch streams on one connection at once, before reading the server's SETTINGS
 *       (each sends a WatchCreateRequest and stays open), waits 3 s, prints `streams open=A reset=B
 * refused=C` where refused counts RST_STREAM REFUSED_STREAM and reset every other RST_STREAM.
 *   it_h2_limits conns HOST PORT N
 *       opens N connections one after another and keeps them all open; for each prints
 *       `conn I ok` (server SETTINGS and no GOAWAY within 1 s) or
 *       `conn I goaway code=C debug="..."` (and whether the server then closed it).
 * Every wait is bounded (3 s per step); exit status 0 unless the tool itself failed.
 */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#define MAX_CALLS 4096

typedef struct call {
    int32_t id;
    char status[16];
    char message[512];
    uint32_t reset_code;
    bool reset, closed, headers;
} call;

typedef struct conn {
    int fd;
    nghttp2_session *s;
    bool settings_seen, goaway, eof;
    uint32_t goaway_code;
    char goaway_debug[256];
    uint32_t max_header_list, max_streams;
    call calls[MAX_CALLS];
    int n_calls;
} conn;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static call *find_call(conn *c, int32_t id)
{
    for (int i = 0; i < c->n_calls; i++)
        if (c->calls[i].id == id)
            return &c->calls[i];
    return NULL;
}

static ssize_t send_cb(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *ud)
{
    (void)s;
    (void)flags;
    conn *c = ud;
    ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
    if (n < 0)
        return errno == EAGAIN ? NGHTTP2_ERR_WOULDBLOCK : NGHTTP2_ERR_CALLBACK_FAILURE;
    return n;
}

static int frame_recv_cb(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    (void)s;
    conn *c = ud;
    if (f->hd.type == NGHTTP2_SETTINGS && !(f->hd.flags & NGHTTP2_FLAG_ACK)) {
        c->settings_seen = true;
        for (size_t i = 0; i < f->settings.niv; i++) {
            if (f->settings.iv[i].settings_id == NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE)
                c->max_header_list = f->settings.iv[i].value;
            if (f->settings.iv[i].settings_id == NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS)
                c->max_streams = f->settings.iv[i].value;
        }
    } else if (f->hd.type == NGHTTP2_GOAWAY) {
        c->goaway = true;
        c->goaway_code = f->goaway.error_code;
        size_t n = f->goaway.opaque_data_len < sizeof c->goaway_debug - 1
                       ? f->goaway.opaque_data_len
                       : sizeof c->goaway_debug - 1;
        memcpy(c->goaway_debug, f->goaway.opaque_data, n);
        c->goaway_debug[n] = 0;
    } else if (f->hd.type == NGHTTP2_RST_STREAM) {
        call *k = find_call(c, f->hd.stream_id);
        if (k) {
            k->reset = true;
            k->reset_code = f->rst_stream.error_code;
        }
    } else if (f->hd.type == NGHTTP2_HEADERS) {
        call *k = find_call(c, f->hd.stream_id);
        if (k)
            k->headers = true;
    }
    return 0;
}

static int header_cb(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    (void)s;
    (void)flags;
    call *k = find_call(ud, f->hd.stream_id);
    if (!k)
        return 0;
    if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0)
        snprintf(k->status, sizeof k->status, "%.*s", (int)valuelen, (const char *)value);
    if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0)
        snprintf(k->message, sizeof k->message, "%.*s", (int)valuelen, (const char *)value);
    return 0;
}

static int stream_close_cb(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
    (void)s;
    (void)code;
    call *k = find_call(ud, id);
    if (k)
        k->closed = true;
    return 0;
}

static int conn_open(conn *c, const char *host, const char *port)
{
    memset(c, 0, sizeof *c);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(host, port, &hints, &ai) != 0)
        return -1;
    c->fd = socket(ai->ai_family, SOCK_STREAM, 0);
    int rc = c->fd < 0 ? -1 : connect(c->fd, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    if (rc != 0)
        return -1;
    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_send_callback(cbs, send_cb);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, frame_recv_cb);
    nghttp2_session_callbacks_set_on_header_callback(cbs, header_cb);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, stream_close_cb);
    /* nghttp2 would hold back requests above the server's advertised stream limit (and 100
     * before its SETTINGS arrive): the limit test needs them on the wire */
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    nghttp2_option_set_peer_max_concurrent_streams(opt, 0xffffffffu);
    rc = nghttp2_session_client_new2(&c->s, cbs, c, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    if (rc != 0)
        return -1;
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
    nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, iv, 1);
    /* a server refusing the connection may have closed it already: what it sent before is
     * still read by conn_run, so a failed send is not an error here */
    nghttp2_session_send(c->s);
    return 0;
}

/* Runs the connection until done(c) or `seconds` pass or the server closes it. */
static void conn_run(conn *c, double seconds, bool (*done)(conn *))
{
    double end = now_s() + seconds;
    while (!(done && done(c)) && !c->eof) {
        double left = end - now_s();
        if (left <= 0)
            break;
        struct pollfd p = {c->fd, POLLIN, 0};
        int n = poll(&p, 1, (int)(left * 1000) + 1);
        if (n <= 0)
            continue;
        uint8_t buf[65536];
        ssize_t r = recv(c->fd, buf, sizeof buf, 0);
        if (r <= 0) {
            c->eof = true;
            break;
        }
        if (nghttp2_session_mem_recv(c->s, buf, (size_t)r) < 0) {
            c->eof = true;
            break;
        }
        nghttp2_session_send(c->s);
    }
}

static void conn_close(conn *c)
{
    nghttp2_session_del(c->s);
    close(c->fd);
}

static bool settings_done(conn *c)
{
    return c->settings_seen;
}

/* gRPC body source: a fixed message, sent once, with or without END_STREAM. */
typedef struct body {
    uint8_t bytes[64];
    size_t len, off;
    bool end_stream;
} body;

static ssize_t body_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    (void)s;
    (void)id;
    (void)ud;
    body *b = src->ptr;
    size_t n = b->len - b->off < len ? b->len - b->off : len;
    memcpy(buf, b->bytes + b->off, n);
    b->off += n;
    if (b->off == b->len) {
        if (b->end_stream)
            *flags |= NGHTTP2_DATA_FLAG_EOF;
        else if (n == 0)
            return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

static void grpc_body(body *b, const uint8_t *msg, size_t len, bool end_stream)
{
    b->bytes[0] = 0;
    b->bytes[1] = b->bytes[2] = b->bytes[3] = 0;
    b->bytes[4] = (uint8_t)len;
    memcpy(b->bytes + 5, msg, len);
    b->len = 5 + len;
    b->off = 0;
    b->end_stream = end_stream;
}

#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE                 \
    }

static call *submit_call(conn *c, const char *path, body *b, const char *pad_value, int n_pad)
{
    nghttp2_nv nva[8 + 64];
    size_t n = 0;
    nghttp2_nv base[] = {NV(":method", "POST"),
                         NV(":scheme", "http"),
                         NV(":path", path),
                         NV(":authority", "etcdseal-test"),
                         NV("content-type", "application/grpc"),
                         NV("te", "trailers")};
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++)
        nva[n++] = base[i];
    for (int i = 0; i < n_pad && i < 64; i++) {
        static char names[64][16];
        snprintf(names[i], sizeof names[i], "x-pad-%d", i);
        nghttp2_nv pad = NV(names[i], pad_value);
        nva[n++] = pad;
    }
    nghttp2_data_provider dp = {.source.ptr = b, .read_callback = body_read};
    int32_t id = nghttp2_submit_request(c->s, NULL, nva, n, &dp, NULL);
    if (id < 0 || c->n_calls == MAX_CALLS)
        return NULL;
    call *k = &c->calls[c->n_calls++];
    memset(k, 0, sizeof *k);
    k->id = id;
    nghttp2_session_send(c->s);
    return k;
}

static call *wait_call;
static bool call_done(conn *c)
{
    (void)c;
    return wait_call->closed;
}

static void print_call(int n, const call *k)
{
    if (k->status[0])
        printf("call %d grpc-status=%s grpc-message=%s\n", n, k->status, k->message);
    else if (k->reset)
        printf("call %d reset=%u\n", n, k->reset_code);
    else
        printf("call %d no-answer\n", n);
}

static int cmd_headers(const char *host, const char *port, long bytes)
{
    conn c;
    if (conn_open(&c, host, port) != 0)
        return fprintf(stderr, "cannot connect\n"), 1;
    conn_run(&c, 3, settings_done);
    printf("settings max_header_list_size=%u max_concurrent_streams=%u\n", c.max_header_list,
           c.max_streams);
    static const uint8_t range_a[] = {0x0a, 0x01, 'a'};
    /* padding headers of at most 8000 bytes each (nghttp2's 64 KiB per-field bound stays far) */
    long per = 8000, n_pad = bytes / (per + 32 + 8) + 1;
    if (n_pad > 64)
        n_pad = 64;
    static char pad[8001];
    memset(pad, 'p', (size_t)per);
    pad[per] = 0;
    body b1, b2;
    grpc_body(&b1, range_a, sizeof range_a, true);
    wait_call = submit_call(&c, "/etcdserverpb.KV/Range", &b1, pad, (int)n_pad);
    if (!wait_call)
        return 1;
    conn_run(&c, 3, call_done);
    print_call(1, wait_call);
    grpc_body(&b2, range_a, sizeof range_a, true);
    wait_call = submit_call(&c, "/etcdserverpb.KV/Range", &b2, "", 0);
    if (!wait_call)
        return 1;
    conn_run(&c, 3, call_done);
    print_call(2, wait_call);
    printf("connection %s\n", c.eof || c.goaway ? "closed" : "open");
    conn_close(&c);
    return 0;
}

static int cmd_streams(const char *host, const char *port, int n)
{
    if (n < 1 || n > MAX_CALLS)
        return 1;
    conn c;
    if (conn_open(&c, host, port) != 0)
        return fprintf(stderr, "cannot connect\n"), 1;
    /* all streams go out before the server's SETTINGS are read (and so before they are
     * acknowledged): the server has to enforce its limit itself */
    /* WatchCreateRequest{key: "limits-test"}: etcd keeps the stream open */
    static const uint8_t watch[] = {0x0a, 0x0d, 0x0a, 0x0b, 'l', 'i', 'm', 'i',
                                    't',  's',  '-',  't',  'e', 's', 't'};
    static body bodies[MAX_CALLS];
    for (int i = 0; i < n; i++) {
        grpc_body(&bodies[i], watch, sizeof watch, false);
        if (!submit_call(&c, "/etcdserverpb.Watch/Watch", &bodies[i], "", 0))
            return fprintf(stderr, "cannot submit stream %d\n", i), 1;
    }
    conn_run(&c, 3, NULL);
    int open = 0, reset = 0, refused = 0;
    for (int i = 0; i < c.n_calls; i++) {
        const call *k = &c.calls[i];
        if (k->reset && k->reset_code == NGHTTP2_REFUSED_STREAM)
            refused++;
        else if (k->reset || (k->closed && !k->headers))
            reset++;
        else if (k->headers && !k->closed)
            open++;
    }
    printf("settings max_concurrent_streams=%u\n", c.max_streams);
    printf("streams open=%d reset=%d refused=%d\n", open, reset, refused);
    conn_close(&c);
    return 0;
}

static int cmd_conns(const char *host, const char *port, int n)
{
    if (n < 1 || n > 256)
        return 1;
    conn *cs = calloc((size_t)n, sizeof *cs);
    if (!cs)
        return 1;
    for (int i = 0; i < n; i++) {
        if (conn_open(&cs[i], host, port) != 0)
            return fprintf(stderr, "cannot connect %d\n", i), 1;
        conn_run(&cs[i], 1, NULL); /* SETTINGS, and a GOAWAY if the server refuses */
        if (cs[i].goaway)
            printf("conn %d goaway code=%u debug=\"%s\" closed=%s\n", i, cs[i].goaway_code,
                   cs[i].goaway_debug, cs[i].eof ? "yes" : "no");
        else
            printf("conn %d %s\n", i, cs[i].settings_seen ? "ok" : "no-settings");
        fflush(stdout);
    }
    for (int i = 0; i < n; i++)
        conn_close(&cs[i]);
    free(cs);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: it_h2_limits headers|streams|conns HOST PORT N\n");
        return 2;
    }
    long n = strtol(argv[4], NULL, 10);
    if (strcmp(argv[1], "headers") == 0)
        return cmd_headers(argv[2], argv[3], n);
    if (strcmp(argv[1], "streams") == 0)
        return cmd_streams(argv[2], argv[3], (int)n);
    if (strcmp(argv[1], "conns") == 0)
        return cmd_conns(argv[2], argv[3], (int)n);
    fprintf(stderr, "unknown command %s\n", argv[1]);
    return 2;
}
