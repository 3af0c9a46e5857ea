/* listener_h2_fuzz.c - arbitrary client bytes into a real downstream connection.
 *
 * Each input runs one worker-like setup on its own event_base: an upstream pool connected over
 * loopback TCP to an in-process fake etcd (an nghttp2 server), and one client connection made by
 * downstream_accept on one end of a socketpair whose other end receives the input. The whole
 * listener path runs: HTTP/2 framing and HPACK (nghttp2 server session), the header-list,
 * stream and message limits, gRPC framing and reassembly, the request and response transformers
 * under a real encryption policy (aesgcm /a/, secretbox /s/, aescbc /c/, Kubernetes secrets),
 * upstream submission, retries and failover. The loop runs a bounded number of non-blocking
 * turns, the client side is then half-closed, and everything is torn down and freed (leaks of
 * events, sessions or streams show up in LeakSanitizer).
 *
 * Byte 0 of the input is a control byte, the rest goes to the proxy as client bytes:
 *   bit 0: prefix the client connection preface and an empty SETTINGS frame (so mutations of
 *          the frames after it are not lost on a broken preface); captured traffic has bit 0
 *          clear (it carries its own preface);
 *   bits 1-2: what the fake etcd does with each request: 0 echo the request body back as the
 *          response body (so response transformers parse request-shaped bytes) with status 0,
 *          1 answer UNAVAILABLE at once (trailers only), 2 reset the stream with REFUSED_STREAM
 *          (the relay's retry path), 3 echo, and send GOAWAY after the first response (the
 *          pool's drain and reconnect path).
 * Limits are small so that they are reachable: --max-header-list-bytes 2048,
 * --max-concurrent-streams 8, --max-message-bytes 4096.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <nghttp2/nghttp2.h>

#include "base/log.h"
#include "base/secret.h"
#include "policy/encryption.h"
#include "proxy/methods.h"
#include "proxy/relay.h"
#include "proxy/worker.h"

#define LOOP_TURNS 96      /* non-blocking event-loop turns while the client is connected */
#define EOF_TURNS 16       /* turns after the client half-closed */
#define UP_BODY_MAX 65536u /* bytes of request body the fake etcd keeps per stream */

/* ---------------------------------------------------------------- fake etcd (nghttp2 server) */
enum up_mode { UP_ECHO = 0, UP_FAIL = 1, UP_REFUSE = 2, UP_GOAWAY = 3 };

typedef struct up_stream {
    struct evbuffer *body;
    bool eof;
} up_stream;

typedef struct up_conn {
    struct bufferevent *bev;
    nghttp2_session *session;
    bool goaway_sent;
    struct up_conn *next;
} up_conn;

static struct {
    enum up_mode mode;
    up_conn *conns;
    unsigned long requests;     /* request HEADERS the fake etcd received (trace) */
    unsigned long client_bytes; /* bytes the proxy sent to the client (trace) */
} fake;

static void up_flush(up_conn *u)
{
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(u->session, &data);
        if (n <= 0)
            break;
        bufferevent_write(u->bev, data, (size_t)n);
    }
}

static ssize_t up_read_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                            size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                            void *user_data)
{
    (void)user_data;
    up_stream *st = source->ptr;
    int n = evbuffer_remove(st->body, buf, length);
    if (n > 0)
        return n;
    if (!st->eof)
        return NGHTTP2_ERR_DEFERRED;
    *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    nghttp2_nv trailers[] = {
        {(uint8_t *)"grpc-status", (uint8_t *)"0", 11, 1, NGHTTP2_NV_FLAG_NONE},
    };
    nghttp2_submit_trailer(session, stream_id, trailers, 1);
    return 0;
}

static int up_on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame,
                               void *user_data)
{
    (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    up_stream *st = calloc(1, sizeof *st);
    if (!st || !(st->body = evbuffer_new())) {
        free(st);
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, st);
    return 0;
}

static int up_on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                            const uint8_t *data, size_t len, void *user_data)
{
    (void)flags;
    (void)user_data;
    up_stream *st = nghttp2_session_get_stream_user_data(session, stream_id);
    if (st && evbuffer_get_length(st->body) + len <= UP_BODY_MAX) {
        evbuffer_add(st->body, data, len);
        nghttp2_session_resume_data(session, stream_id);
    }
    return 0;
}

static int up_on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    up_conn *u = user_data;
    int32_t id = frame->hd.stream_id;
    up_stream *st = id ? nghttp2_session_get_stream_user_data(session, id) : NULL;
    if (!st)
        return 0;
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
        st->eof = true;
        nghttp2_session_resume_data(session, id);
    }
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    fake.requests++;
    nghttp2_nv hdrs[] = {
        {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"grpc-status", (uint8_t *)"14", 11, 2, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"grpc-message", (uint8_t *)"fake etcd unavailable", 12, 21,
         NGHTTP2_NV_FLAG_NONE},
    };
    switch (fake.mode) {
    case UP_FAIL:
        nghttp2_submit_response(session, id, hdrs, 4, NULL);
        break;
    case UP_REFUSE:
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, id, NGHTTP2_REFUSED_STREAM);
        break;
    case UP_ECHO:
    case UP_GOAWAY: {
        nghttp2_data_provider body = {.source.ptr = st, .read_callback = up_read_body};
        nghttp2_submit_response(session, id, hdrs, 2, &body);
        if (fake.mode == UP_GOAWAY && !u->goaway_sent) {
            nghttp2_submit_goaway(session, NGHTTP2_FLAG_NONE, id, NGHTTP2_NO_ERROR, NULL, 0);
            u->goaway_sent = true;
        }
        break;
    }
    }
    return 0;
}

static int up_on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                              void *user_data)
{
    (void)error_code;
    (void)user_data;
    up_stream *st = nghttp2_session_get_stream_user_data(session, stream_id);
    if (st) {
        nghttp2_session_set_stream_user_data(session, stream_id, NULL);
        evbuffer_free(st->body);
        free(st);
    }
    return 0;
}

static void up_conn_free(up_conn *u)
{
    /* streams still open hold up_stream objects: deleting the session does not call
     * on_stream_close, so close them first */
    nghttp2_session_terminate_session(u->session, NGHTTP2_NO_ERROR);
    for (int32_t id = 1; id > 0 && id <= nghttp2_session_get_last_proc_stream_id(u->session);
         id += 2) {
        up_stream *st = nghttp2_session_get_stream_user_data(u->session, id);
        if (st) {
            nghttp2_session_set_stream_user_data(u->session, id, NULL);
            evbuffer_free(st->body);
            free(st);
        }
    }
    nghttp2_session_del(u->session);
    bufferevent_free(u->bev); /* SO_LINGER 0: RST, no TIME_WAIT left per execution */
    free(u);
}

static void up_read_cb(struct bufferevent *bev, void *arg)
{
    up_conn *u = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len = evbuffer_get_length(in);
    const uint8_t *data = evbuffer_pullup(in, (ssize_t)len);
    if (len && nghttp2_session_mem_recv(u->session, data, len) < 0) {
        evbuffer_drain(in, len);
        bufferevent_disable(bev, EV_READ);
        return;
    }
    evbuffer_drain(in, len);
    up_flush(u);
}

static void up_event_cb(struct bufferevent *bev, short events, void *arg)
{
    (void)arg;
    if (events & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        bufferevent_disable(bev, EV_READ | EV_WRITE); /* freed at the end of the input */
}

static nghttp2_session_callbacks *up_callbacks(void)
{
    static nghttp2_session_callbacks *cbs;
    if (!cbs) {
        if (nghttp2_session_callbacks_new(&cbs) != 0)
            abort();
        nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, up_on_begin_headers);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, up_on_data_chunk);
        nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, up_on_frame_recv);
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs, up_on_stream_close);
    }
    return cbs;
}

static void up_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                         int socklen, void *arg)
{
    (void)sa;
    (void)socklen;
    struct event_base *base = arg;
    (void)l;
    struct linger no_linger = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &no_linger, sizeof no_linger);
    up_conn *u = calloc(1, sizeof *u);
    if (!u) {
        close(fd);
        return;
    }
    u->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!u->bev || nghttp2_session_server_new(&u->session, up_callbacks(), u) != 0) {
        if (u->bev)
            bufferevent_free(u->bev);
        else
            close(fd);
        free(u);
        return;
    }
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100}};
    nghttp2_submit_settings(u->session, NGHTTP2_FLAG_NONE, iv, 1);
    bufferevent_setcb(u->bev, up_read_cb, NULL, up_event_cb, u);
    bufferevent_enable(u->bev, EV_READ | EV_WRITE);
    u->next = fake.conns;
    fake.conns = u;
    up_flush(u);
}

/* ---------------------------------------------------------------- the proxy under test */
#define FZ_K32 "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
static const char policy_yaml[] =
    "apiVersion: apiserver.config.k8s.io/v1\n"
    "kind: EncryptionConfiguration\n"
    "resources:\n"
    "- resources: [/a/]\n"
    "  providers: [{aesgcm: {keys: [{name: k, secret: " FZ_K32 "}]}}]\n"
    "- resources: [/s/]\n"
    "  providers: [{secretbox: {keys: [{name: k, secret: " FZ_K32 "}]}}, {identity: {}}]\n"
    "- resources: [/c/]\n"
    "  providers: [{aescbc: {keys: [{name: k, secret: " FZ_K32 "}]}}]\n"
    "- resources: [secrets]\n"
    "  providers: [{aesgcm: {keys: [{name: s, secret: " FZ_K32 "}]}}]\n";

static const char *const advertise[] = {"http://127.0.0.1:2379"};
static policy_encryption *policy;

static void init_once(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    log_set_level(LOG_ERROR);
    if (secret_init() != 0)
        abort();
    es_error err = {0};
    if (policy_encryption_load_buffer("fuzz", policy_yaml, sizeof policy_yaml - 1, NULL, &policy,
                                      &err) != 0) {
        fprintf(stderr, "policy: %s\n", err.msg);
        abort();
    }
}

static void client_read_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    (void)arg;
    char sink[16384];
    for (int i = 0; i < 64; i++) {
        ssize_t n = read(fd, sink, sizeof sink);
        if (n <= 0)
            break;
        fake.client_bytes += (size_t)n;
    }
}

static void write_all(struct event_base *base, int fd, const uint8_t *p, size_t n)
{
    for (int turns = 0; n > 0 && turns < 256; turns++) {
        ssize_t w = write(fd, p, n);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else {
            event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK); /* let the proxy read */
        }
    }
}

static const uint8_t preface_settings[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                                          "\x00\x00\x00\x04\x00\x00\x00\x00\x00";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    init_once();
    uint8_t ctl = data[0];
    data++;
    size--;
    fake.mode = (enum up_mode)((ctl >> 1) & 3);
    fake.conns = NULL;
    fake.requests = fake.client_bytes = 0;

    struct event_config *cfg = event_config_new();
    event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
    struct event_base *base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (!base)
        abort();
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct evconnlistener *l = evconnlistener_new_bind(
        base, up_accept_cb, base, LEV_OPT_CLOSE_ON_FREE, 16, (struct sockaddr *)&sin, sizeof sin);
    socklen_t slen = sizeof sin;
    if (!l || getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&sin, &slen) != 0)
        abort();

    proxy_runtime rt = {
        .workers = 1,
        .shutdown_timeout = 1,
        .dial_timeout = 1,
        .keepalive_time = 30,
        .keepalive_timeout = 5,
        .max_message_bytes = 4096,
        .max_header_list_bytes = 2048,
        .max_concurrent_streams = 8,
        .advertise_urls = advertise,
        .n_advertise_urls = 1,
    };
    atomic_store(&rt.policy, policy);
    endpoint ep = {.host = "127.0.0.1", .tls = false};
    snprintf(ep.port, sizeof ep.port, "%u", ntohs(sin.sin_port));
    snprintf(ep.authority, sizeof ep.authority, "127.0.0.1:%s", ep.port);
    rt.endpoints = &ep;
    rt.n_endpoints = 1;

    worker w = {.id = 0, .rt = &rt, .base = base, .notify_fd = -1, .wake_fd = -1};
    pthread_mutex_init(&w.wake_mu, NULL);
    w.mm = calloc(method_count(), sizeof *w.mm);
    w.pool = upstream_pool_new(&w);
    int sv[2];
    if (!w.mm || !w.pool || socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0)
        abort();
    if (downstream_accept(&w, sv[0], "fuzz-client") != 0)
        close(sv[0]);
    struct event *client_ev = event_new(base, sv[1], EV_READ | EV_PERSIST, client_read_cb, NULL);
    if (!client_ev || event_add(client_ev, NULL) != 0)
        abort();

    /* let the upstream connection come up first, as it would on a running worker */
    for (int i = 0; i < 4; i++)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    if (ctl & 1)
        write_all(base, sv[1], preface_settings, sizeof preface_settings - 1);
    write_all(base, sv[1], data, size);
    for (int i = 0; i < LOOP_TURNS && w.ds_conns; i++)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    shutdown(sv[1], SHUT_WR);
    for (int i = 0; i < EOF_TURNS && w.ds_conns; i++)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);

    /* teardown in the order a worker uses (clients, then upstream); the fake etcd first so its
     * RSTs leave no TIME_WAIT sockets behind */
    event_free(client_ev);
    while (fake.conns) {
        up_conn *u = fake.conns;
        fake.conns = u->next;
        up_conn_free(u);
    }
    while (w.ds_conns) {
        h2conn *c = w.ds_conns;
        c->closing = true;
        downstream_conn_teardown(c);
    }
    upstream_pool_free(w.pool);
    relay_stream_cache_free(&w); /* finished streams the worker keeps for reuse */
    evconnlistener_free(l);
    close(sv[1]);
    free(w.mm);
    free(w.wake_q);
    pthread_mutex_destroy(&w.wake_mu);
    buf_wipe_free(&w.scratch);
    event_base_free(base);
    /* LISTENER_FUZZ_TRACE=1: shows that inputs get through to the fake etcd and back (a
     * harness whose calls never reach upstream would fuzz only the preface) */
    if (getenv("LISTENER_FUZZ_TRACE"))
        fprintf(stderr, "trace: mode=%d input=%zu upstream_requests=%lu client_bytes=%lu\n",
                (int)fake.mode, size, fake.requests, fake.client_bytes);
    return 0;
}
