/* upstream.c - a worker's connections to etcd: connect (TCP or TLS with ALPN h2), the nghttp2
 * client session and its callbacks, failover across --endpoints, capped reconnect backoff, and
 * HTTP/2 PING keepalive that detects dead connections.
 *
 * One active connection per worker carries every new call. A connection that gets GOAWAY drains
 * (its calls finish) while a new one is opened to the next endpoint. Calls etcd never processed
 * (REFUSED_STREAM, above GOAWAY's last stream id) are re-sent by the relay; calls on a connection
 * that died end with UNAVAILABLE so clients retry as they do against etcd.
 */
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>

#include "base/log.h"
#include "proxy/relay.h"
#include "proxy/tls.h"
#include "proxy/worker.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 3000

typedef struct upstream_pool {
    worker *w;
    h2conn *active;  /* carries new calls; NULL while none */
    h2conn *conns;   /* every live connection, incl. draining ones */
    rs_list pending; /* calls waiting for a connection */
    size_t next_endpoint;
    size_t failures_in_row;
    uint64_t backoff_ms;
    bool in_backoff;
    struct event *retry_ev;
    char last_error[256];
    metrics_gauge *connected;
    metrics_counter *failovers;
    metrics_counter *connect_failures;
} upstream_pool;

static void connect_next(upstream_pool *p);

bool upstream_pool_ready(const upstream_pool *p)
{
    return p->active && p->active->state == US_READY;
}

static void set_ready(upstream_pool *p, bool ready)
{
    atomic_store(&p->w->upstream_ready, ready ? 1 : 0);
    metrics_gauge_set(p->connected, ready ? 1 : 0);
}

void upstream_pool_unlink_pending(upstream_pool *p, relay_stream *rs)
{
    if (!rs->pending)
        return;
    h2conn_list_remove(&p->pending, rs, &rs->us_link);
    rs->pending = false;
}

static void fail_pending(upstream_pool *p)
{
    while (p->pending.head) {
        relay_stream *rs = p->pending.head;
        upstream_pool_unlink_pending(p, rs);
        relay_finish_local(rs, GRPC_UNAVAILABLE,
                           "etcdseal: no etcd endpoint reachable (last error: %s)", p->last_error);
    }
}

static void submit_pending(upstream_pool *p)
{
    while (p->pending.head && upstream_pool_ready(p)) {
        relay_stream *rs = p->pending.head;
        upstream_pool_unlink_pending(p, rs);
        if (relay_submit_upstream(rs, p->active) < 0) {
            /* this connection cannot take more streams: drain it, queue the call again */
            p->active->state = US_DRAINING;
            p->active = NULL;
            set_ready(p, false);
            h2conn_list_add(&p->pending, rs, &rs->us_link);
            rs->pending = true;
            connect_next(p);
            return;
        }
    }
}

void upstream_pool_submit(upstream_pool *p, relay_stream *rs)
{
    if (upstream_pool_ready(p)) {
        if (relay_submit_upstream(rs, p->active) == 0)
            return;
        p->active->state = US_DRAINING;
        p->active = NULL;
        set_ready(p, false);
    }
    if (!p->active && p->in_backoff) {
        relay_finish_local(rs, GRPC_UNAVAILABLE,
                           "etcdseal: no etcd endpoint reachable (last error: %s)", p->last_error);
        return;
    }
    h2conn_list_add(&p->pending, rs, &rs->us_link);
    rs->pending = true;
    if (!p->active)
        connect_next(p);
}

/* ------------------------------------------------------------------ nghttp2 client callbacks */
static int on_header(nghttp2_session *session, const nghttp2_frame *frame, nghttp2_rcbuf *name,
                     nghttp2_rcbuf *value, uint8_t flags, void *user_data)
{
    (void)flags;
    (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    relay_stream *rs = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (!rs)
        return 0;
    if (frame->headers.cat == NGHTTP2_HCAT_RESPONSE)
        hdr_list_add(&rs->resp_hdrs, name, value);
    else if (frame->headers.cat == NGHTTP2_HCAT_HEADERS)
        hdr_list_add(&rs->trailers, name, value);
    return 0;
}

static void conn_lost(h2conn *c, const char *why);

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    h2conn *c = user_data;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS: {
        relay_stream *rs = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
        if (!rs)
            return 0;
        bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
        if (frame->headers.cat == NGHTTP2_HCAT_RESPONSE)
            relay_on_upstream_headers(rs, end);
        else if (frame->headers.cat == NGHTTP2_HCAT_HEADERS && end)
            relay_on_upstream_trailers(rs);
        return 0;
    }
    case NGHTTP2_DATA:
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            relay_stream *rs = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
            if (rs)
                relay_on_upstream_eof(rs);
        }
        return 0;
    case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK)
            c->ping_outstanding = false;
        return 0;
    case NGHTTP2_SETTINGS:
        /* ready only once etcd has spoken HTTP/2: with TLS 1.3 a server that rejects our
         * client certificate does so after our handshake has completed */
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK) && !c->settings_received) {
            c->settings_received = true;
            c->pool->failures_in_row = 0;
            c->pool->backoff_ms = 0;
            if (c->pool->active == c)
                set_ready(c->pool, true);
        }
        return 0;
    case NGHTTP2_GOAWAY: {
        upstream_pool *p = c->pool;
        log_warn("upstream sent GOAWAY|endpoint=%s last_stream=%d error=%u",
                 c->w->rt->endpoints[c->endpoint_index].authority, frame->goaway.last_stream_id,
                 frame->goaway.error_code);
        c->goaway_received = true;
        c->state = US_DRAINING;
        if (p->active == c) {
            p->active = NULL;
            set_ready(p, false);
            metrics_counter_add(p->failovers, 1);
            snprintf(p->last_error, sizeof p->last_error, "GOAWAY from %s",
                     c->w->rt->endpoints[c->endpoint_index].authority);
            connect_next(p);
        }
        return 0;
    }
    default:
        return 0;
    }
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *user_data)
{
    (void)flags;
    (void)user_data;
    relay_stream *rs = nghttp2_session_get_stream_user_data(session, stream_id);
    if (!rs) {
        nghttp2_session_consume(session, stream_id, len);
        return 0;
    }
    relay_on_upstream_data(rs, data, len);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
    h2conn *c = user_data;
    relay_stream *rs = nghttp2_session_get_stream_user_data(session, stream_id);
    if (rs) {
        nghttp2_session_set_stream_user_data(session, stream_id, NULL);
        relay_on_upstream_closed(rs, error_code, false);
    }
    if (c->state == US_DRAINING && c->streams.count == 0)
        h2conn_close(c, "drained");
    return 0;
}

/* Read-only after the first call; shared by every worker (process-wide, set up once). */
static nghttp2_session_callbacks *client_callbacks_shared;
static void client_callbacks_init(void)
{
    if (nghttp2_session_callbacks_new(&client_callbacks_shared) != 0)
        return;
    nghttp2_session_callbacks *cbs = client_callbacks_shared;
    nghttp2_session_callbacks_set_on_header_callback2(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
}

static nghttp2_session_callbacks *client_callbacks(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, client_callbacks_init);
    return client_callbacks_shared;
}

/* ------------------------------------------------------------------ keepalive */
static void schedule_ping(h2conn *c, double seconds)
{
    struct timeval tv = {(time_t)seconds, (suseconds_t)((seconds - (time_t)seconds) * 1e6)};
    evtimer_add(c->ping_ev, &tv);
}

static void ping_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    h2conn *c = arg;
    const proxy_runtime *rt = c->w->rt;
    if (c->closing || c->state == US_CONNECTING)
        return;
    if (c->ping_outstanding) {
        conn_lost(c, "keepalive PING not answered");
        return;
    }
    uint64_t idle_ms = worker_now_ms() - c->last_recv_ms;
    if (idle_ms + 5 < (uint64_t)(rt->keepalive_time * 1000)) {
        schedule_ping(c, rt->keepalive_time - idle_ms / 1000.0);
        return;
    }
    nghttp2_submit_ping(c->session, NGHTTP2_FLAG_NONE, NULL);
    c->ping_outstanding = true;
    h2conn_schedule_flush(c);
    schedule_ping(c, rt->keepalive_timeout);
}

/* ------------------------------------------------------------------ connect */
static void conn_lost(h2conn *c, const char *why)
{
    upstream_pool *p = c->pool;
    snprintf(p->last_error, sizeof p->last_error, "%s: %s",
             c->w->rt->endpoints[c->endpoint_index].authority, why);
    log_warn("upstream connection failed|endpoint=%s reason=\"%s\"",
             c->w->rt->endpoints[c->endpoint_index].authority, why);
    h2conn_close(c, why);
}

static int start_session(h2conn *c)
{
    nghttp2_option *opt = NULL;
    if (nghttp2_option_new(&opt) != 0)
        return -1;
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_no_http_messaging(opt, 1);
    nghttp2_option_set_peer_max_concurrent_streams(opt, 100000);
    int rv = nghttp2_session_client_new2(&c->session, client_callbacks(), c, opt);
    nghttp2_option_del(opt);
    if (rv != 0)
        return -1;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, RELAY_STREAM_WINDOW},
    };
    if (nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, 2) != 0 ||
        nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0,
                                              RELAY_CONN_WINDOW) != 0)
        return -1;
    return 0;
}

static void event_cb(struct bufferevent *bev, short events, void *arg)
{
    h2conn *c = arg;
    upstream_pool *p = c->pool;
    const proxy_runtime *rt = c->w->rt;
    if (events & BEV_EVENT_CONNECTED) {
        int fd = bufferevent_getfd(bev);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        bufferevent_set_timeouts(bev, NULL, NULL);
        if (start_session(c) < 0) {
            conn_lost(c, "cannot start HTTP/2 session");
            return;
        }
        c->state = US_READY;
        c->last_recv_ms = worker_now_ms();
        log_info("upstream connected|endpoint=%s worker=%u",
                 rt->endpoints[c->endpoint_index].authority, c->w->id);
        if (p->active == c)
            submit_pending(p); /* nghttp2 queues them until the preface is out */
        schedule_ping(c, rt->keepalive_time);
        h2conn_schedule_flush(c);
        return;
    }
    char why[200];
    if (events & BEV_EVENT_TIMEOUT) {
        snprintf(why, sizeof why, "%s",
                 c->state == US_CONNECTING ? "connect timed out" : "timeout");
    } else if (events & BEV_EVENT_EOF) {
        snprintf(why, sizeof why, "connection closed by etcd");
    } else {
        unsigned long e = bufferevent_get_openssl_error(bev);
        int err = EVUTIL_SOCKET_ERROR();
        if (e) {
            char text[160];
            ERR_error_string_n(e, text, sizeof text);
            snprintf(why, sizeof why, "TLS: %s", text);
        } else {
            snprintf(why, sizeof why, "%s", err ? evutil_socket_error_to_string(err) : "error");
        }
    }
    conn_lost(c, why);
}

static h2conn *conn_open(upstream_pool *p, size_t index)
{
    worker *w = p->w;
    const proxy_runtime *rt = w->rt;
    const endpoint *ep = &rt->endpoints[index];
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int rv = getaddrinfo(ep->host, ep->port, &hints, &ai);
    if (rv != 0) {
        snprintf(p->last_error, sizeof p->last_error, "%s: %s", ep->authority, gai_strerror(rv));
        return NULL;
    }
    struct bufferevent *bev = NULL;
    if (ep->tls) {
        SSL *ssl = rt->client_tls ? SSL_new(rt->client_tls) : NULL;
        es_error err = {0};
        if (!ssl || tls_client_prepare(ssl, ep->host, rt->upstream_verify, &err) < 0) {
            snprintf(p->last_error, sizeof p->last_error, "%s: TLS setup failed %s", ep->authority,
                     err.msg);
            if (ssl)
                SSL_free(ssl);
            freeaddrinfo(ai);
            return NULL;
        }
        bev = bufferevent_openssl_socket_new(w->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                             BEV_OPT_CLOSE_ON_FREE);
        if (!bev)
            SSL_free(ssl);
        else
            bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    } else {
        bev = bufferevent_socket_new(w->base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!bev) {
        freeaddrinfo(ai);
        return NULL;
    }
    h2conn *c = calloc(1, sizeof *c);
    if (!c || h2conn_setup(c, w, H2CONN_UPSTREAM, bev) < 0 ||
        !(c->ping_ev = evtimer_new(w->base, ping_cb, c))) {
        if (c) {
            c->bev = bev;
            h2conn_release(c);
        } else {
            bufferevent_free(bev);
        }
        freeaddrinfo(ai);
        return NULL;
    }
    c->pool = p;
    c->tls = ep->tls;
    c->state = US_CONNECTING;
    c->endpoint_index = index;
    snprintf(c->peer, sizeof c->peer, "%s", ep->authority);
    bufferevent_setcb(bev, h2conn_read_cb, h2conn_write_cb, event_cb, c);
    struct timeval tmo = {(time_t)rt->dial_timeout,
                          (suseconds_t)((rt->dial_timeout - (time_t)rt->dial_timeout) * 1e6)};
    bufferevent_set_timeouts(bev, &tmo, &tmo);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    c->next = p->conns;
    if (p->conns)
        p->conns->prev = c;
    p->conns = c;
    /* a synchronous failure reaches event_cb later (deferred): one failure path */
    if (bufferevent_socket_connect(bev, ai->ai_addr, (int)ai->ai_addrlen) < 0)
        conn_lost(c, "connect failed");
    freeaddrinfo(ai);
    return c;
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    upstream_pool *p = arg;
    p->in_backoff = false;
    p->failures_in_row = 0;
    if (!p->active)
        connect_next(p);
}

static void enter_backoff(upstream_pool *p)
{
    p->backoff_ms = p->backoff_ms ? p->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (p->backoff_ms > BACKOFF_MAX_MS)
        p->backoff_ms = BACKOFF_MAX_MS;
    p->in_backoff = true;
    log_warn("no etcd endpoint reachable, retrying|in_ms=%llu last_error=\"%s\"",
             (unsigned long long)p->backoff_ms, p->last_error);
    fail_pending(p);
    struct timeval tv = {(time_t)(p->backoff_ms / 1000),
                         (suseconds_t)(p->backoff_ms % 1000) * 1000};
    evtimer_add(p->retry_ev, &tv);
}

static void connect_next(upstream_pool *p)
{
    size_t n = p->w->rt->n_endpoints;
    if (p->w->shutting_down && !p->pending.head)
        return;
    while (!p->active && !p->in_backoff) {
        if (p->failures_in_row >= n) {
            enter_backoff(p);
            return;
        }
        size_t index = p->next_endpoint;
        p->next_endpoint = (p->next_endpoint + 1) % n;
        p->active = conn_open(p, index);
        if (!p->active) {
            p->failures_in_row++;
            metrics_counter_add(p->connect_failures, 1);
        }
    }
}

void upstream_conn_teardown(h2conn *c)
{
    upstream_pool *p = c->pool;
    bool was_active = (p->active == c);
    bool was_ready = c->state == US_READY && c->settings_received;
    c->state = US_DEAD;
    if (was_active) {
        p->active = NULL;
        set_ready(p, false);
        if (was_ready)
            metrics_counter_add(p->failovers, 1);
        else {
            p->failures_in_row++;
            metrics_counter_add(p->connect_failures, 1);
        }
    }
    while (c->streams.head) {
        relay_stream *rs = c->streams.head;
        if (c->session)
            nghttp2_session_set_stream_user_data(c->session, rs->us_id, NULL);
        relay_on_upstream_closed(rs, NGHTTP2_INTERNAL_ERROR, true);
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        p->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    h2conn_release(c);
    if (was_active)
        connect_next(p);
}

upstream_pool *upstream_pool_new(worker *w)
{
    upstream_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->w = w;
    p->retry_ev = evtimer_new(w->base, retry_cb, p);
    char labels[64];
    snprintf(labels, sizeof labels, "worker=\"%u\"", w->id);
    p->connected = metrics_gauge_get("etcdseal_upstream_connected",
                                     "1 when the worker has a ready connection to etcd", labels);
    p->failovers = metrics_counter_get(
        "etcdseal_upstream_failovers_total",
        "Ready upstream connections lost (GOAWAY, error, dead keepalive) and replaced", labels);
    p->connect_failures =
        metrics_counter_get("etcdseal_upstream_connect_failures_total",
                            "Failed attempts to connect to an etcd endpoint", labels);
    if (!p->retry_ev) {
        free(p);
        return NULL;
    }
    connect_next(p); /* connect eagerly so the first call does not wait */
    return p;
}

void upstream_pool_free(upstream_pool *p)
{
    if (!p)
        return;
    p->w->shutting_down = true;
    while (p->pending.head) {
        relay_stream *rs = p->pending.head;
        upstream_pool_unlink_pending(p, rs);
        relay_finish_local(rs, GRPC_UNAVAILABLE, "etcdseal: shutting down");
    }
    p->active = NULL;
    while (p->conns) {
        h2conn *c = p->conns;
        c->closing = true;
        upstream_conn_teardown(c);
    }
    event_free(p->retry_ev);
    free(p);
}
