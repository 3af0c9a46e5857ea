/* downstream.c - client-facing HTTP/2 connections: accept (cleartext prior-knowledge h2 or TLS
 * with ALPN h2), the nghttp2 server session, and its callbacks, which only translate frames into
 * relay_* calls. HTTP messaging checks are off (nghttp2_option_set_no_http_messaging): etcd's Go
 * client sends endpoint strings such as "unix://host:1234" as :authority, which etcd accepts; the
 * relay checks what gRPC needs itself (relay_on_request_headers).
 *
 * Client limits enforced here:
 *  - --max-header-list-bytes: advertised as SETTINGS_MAX_HEADER_LIST_SIZE and counted per request
 *    header block (name + value + 32 per field, RFC 9113 6.5.2); a block over it ends that call
 *    with RESOURCE_EXHAUSTED before anything goes upstream; the connection stays usable.
 *  - --max-concurrent-streams: advertised as SETTINGS_MAX_CONCURRENT_STREAMS and enforced by
 *    nghttp2 before any callback: a stream above it is reset with REFUSED_STREAM while our
 *    SETTINGS are unacknowledged; after the ACK nghttp2 (1.52) ends the whole connection with
 *    GOAWAY PROTOCOL_ERROR (RFC 9113 5.1.2 asks for a stream error; clients that honour the
 *    setting, as grpc-go does, never get there).
 *  - --max-connections-per-worker: a connection beyond it gets SETTINGS and a GOAWAY
 *    (ENHANCE_YOUR_CALM, debug data naming the limit) and is closed; counted in
 *    etcdseal_connections_refused_total, logged at most once per second per worker. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>

#include "base/log.h"
#include "base/metrics.h"
#include "proxy/relay.h"
#include "proxy/worker.h"

/* A client connection: the h2conn first, so h2conn_release's free(c) frees the whole object
 * (the session's user data is the h2conn; downstream callbacks widen it back). */
typedef struct ds_conn {
    h2conn c;
    /* the request header block being received: HTTP/2 never interleaves header blocks on a
     * connection, so one counter per connection is enough */
    int32_t hdr_stream_id;
    size_t hdr_bytes;
    bool hdr_over_limit;
    bool refused; /* over --max-connections-per-worker: GOAWAY, then closed */
} ds_conn;

static ds_conn *as_ds(h2conn *c)
{
    return (ds_conn *)c;
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    h2conn *c = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    if (c->w->shutting_down) {
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                  NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    ds_conn *d = as_ds(c);
    d->hdr_stream_id = frame->hd.stream_id;
    d->hdr_bytes = 0;
    d->hdr_over_limit = false;
    relay_stream *rs = relay_stream_new(c, frame->hd.stream_id);
    if (!rs)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST_STREAM INTERNAL_ERROR */
    nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, rs);
    return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, nghttp2_rcbuf *name,
                     nghttp2_rcbuf *value, uint8_t flags, void *user_data)
{
    (void)flags;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* client trailers carry nothing gRPC uses */
    relay_stream *rs = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (!rs)
        return 0;
    ds_conn *d = as_ds(user_data);
    if (d->hdr_stream_id != frame->hd.stream_id)
        return 0;
    /* counted to the end of the block so the error gives the full size; once over the limit
     * the rest is still decoded (HPACK state must stay in step) but not kept */
    d->hdr_bytes += nghttp2_rcbuf_get_buf(name).len + nghttp2_rcbuf_get_buf(value).len + 32;
    if (d->hdr_over_limit)
        return 0;
    if (d->hdr_bytes > d->c.w->rt->max_header_list_bytes) {
        d->hdr_over_limit = true;
        hdr_list_clear(&rs->req_hdrs); /* what the call had is not kept either */
        return 0;
    }
    hdr_list_add(&rs->req_hdrs, name, value);
    return 0;
}

/* Ends a call whose header block went over --max-header-list-bytes. The block is decoded to
 * its end before (HPACK state must stay in step), so the size reported is the full one. */
static void refuse_large_headers(ds_conn *d, relay_stream *rs)
{
    size_t limit = d->c.w->rt->max_header_list_bytes;
    log_info("request headers over the limit|peer=%s bytes=%zu limit=%zu", d->c.peer, d->hdr_bytes,
             limit);
    relay_finish_local(
        rs, GRPC_RESOURCE_EXHAUSTED,
        "etcdseal: request headers of %zu bytes exceed --max-header-list-bytes (%zu)", d->hdr_bytes,
        limit);
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
        return 0;
    relay_stream *rs = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (!rs)
        return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        ds_conn *d = as_ds(user_data);
        if (d->hdr_stream_id == frame->hd.stream_id && d->hdr_over_limit)
            refuse_large_headers(d, rs);
        else
            relay_on_request_headers(rs);
    }
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
        rs = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
        if (rs)
            relay_on_client_eof(rs);
    }
    return 0;
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
    relay_on_client_data(rs, data, len);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
    (void)user_data;
    relay_stream *rs = nghttp2_session_get_stream_user_data(session, stream_id);
    if (rs) {
        nghttp2_session_set_stream_user_data(session, stream_id, NULL);
        relay_on_client_closed(rs, error_code);
    }
    return 0;
}

/* Read-only after the first call; shared by every worker (process-wide, set up once). */
static nghttp2_session_callbacks *server_callbacks_shared;
static void server_callbacks_init(void)
{
    if (nghttp2_session_callbacks_new(&server_callbacks_shared) != 0)
        return;
    nghttp2_session_callbacks *cbs = server_callbacks_shared;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback2(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
}

static nghttp2_session_callbacks *server_callbacks(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, server_callbacks_init);
    return server_callbacks_shared;
}

static void event_cb(struct bufferevent *bev, short events, void *arg)
{
    h2conn *c = arg;
    if (events & BEV_EVENT_CONNECTED)
        return;
    if (events & BEV_EVENT_ERROR) {
        unsigned long e = bufferevent_get_openssl_error(bev);
        if (e) {
            char text[256];
            ERR_error_string_n(e, text, sizeof text);
            /* "certificate verify failed" alone does not say why: add the X.509 reason
             * (expired, unknown CA, revoked...) */
            SSL *ssl = bufferevent_openssl_get_ssl(bev);
            long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
            if (vr != X509_V_OK)
                log_info("client TLS error|peer=%s err=\"%s\" verify=\"%s\"", c->peer, text,
                         X509_verify_cert_error_string(vr));
            else
                log_info("client TLS error|peer=%s err=\"%s\"", c->peer, text);
        }
    }
    h2conn_close(c, (events & BEV_EVENT_EOF) ? "client closed" : "client connection error");
}

/* Counts a connection refused for --max-connections-per-worker and logs at most once a
 * second per worker thread (a flood of connections must not flood the log). */
static void note_refused_connection(worker *w, const char *peer)
{
    static _Thread_local metrics_counter *refused;
    static _Thread_local uint64_t last_log_ms;
    static _Thread_local unsigned long unlogged;
    if (!refused) {
        char labels[32];
        snprintf(labels, sizeof labels, "worker=\"%u\"", w->id);
        refused = metrics_counter_get(
            "etcdseal_connections_refused_total",
            "Client connections refused because the worker had --max-connections-per-worker",
            labels);
    }
    metrics_counter_add(refused, 1);
    unlogged++;
    uint64_t now = worker_now_ms();
    if (last_log_ms && now - last_log_ms < 1000)
        return;
    last_log_ms = now;
    log_warn("client connection refused: worker at --max-connections-per-worker|peer=%s "
             "worker=%u limit=%d refused_since_last_log=%lu",
             peer, w->id, w->rt->max_connections_per_worker, unlogged);
    unlogged = 0;
}

int downstream_accept(worker *w, int fd, const char *peer)
{
    const proxy_runtime *rt = w->rt;
    bool refuse = rt->max_connections_per_worker > 0 &&
                  w->n_ds_conns >= (size_t)rt->max_connections_per_worker;
    struct bufferevent *bev;
    int opts = BEV_OPT_CLOSE_ON_FREE;
    SSL_CTX *tls = atomic_load((_Atomic(SSL_CTX *) *)&rt->server_tls);
    if (tls) {
        SSL *ssl = SSL_new(tls); /* the SSL holds its own reference to the context */
        if (!ssl)
            return -1;
        bev = bufferevent_openssl_socket_new(w->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING, opts);
        if (bev)
            bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
        else
            SSL_free(ssl);
    } else {
        bev = bufferevent_socket_new(w->base, fd, opts);
    }
    if (!bev)
        return -1;
    ds_conn *d = calloc(1, sizeof *d);
    h2conn *c = d ? &d->c : NULL;
    if (!c || h2conn_setup(c, w, H2CONN_DOWNSTREAM, bev) < 0)
        goto fail;
    snprintf(c->peer, sizeof c->peer, "%s", peer);
    c->tls = tls != NULL;
    d->refused = refuse;
    nghttp2_option *opt = NULL;
    if (nghttp2_option_new(&opt) != 0)
        goto fail;
    nghttp2_option_set_no_http_messaging(opt, 1);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_send_header_block_length(opt, 1u << 20);
    int rv = nghttp2_session_server_new2(&c->session, server_callbacks(), c, opt);
    nghttp2_option_del(opt);
    if (rv != 0)
        goto fail;
    /* SETTINGS_MAX_HEADER_LIST_SIZE is a 32-bit field */
    size_t hdr_limit =
        rt->max_header_list_bytes < UINT32_MAX ? rt->max_header_list_bytes : UINT32_MAX;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
         refuse ? 0 : (uint32_t)rt->max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, RELAY_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)hdr_limit},
    };
    if (nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) ||
        nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0, RELAY_CONN_WINDOW))
        goto fail;
    if (refuse) {
        /* the server preface (SETTINGS) and a GOAWAY saying why; with no stream open, nghttp2
         * then wants neither to read nor to write and the flush closes the connection */
        char why[128];
        int n = snprintf(why, sizeof why,
                         "etcdseal: worker connection limit reached (--max-connections-per-worker "
                         "%d)",
                         rt->max_connections_per_worker);
        if (nghttp2_submit_goaway(c->session, NGHTTP2_FLAG_NONE, 0, NGHTTP2_ENHANCE_YOUR_CALM,
                                  (const uint8_t *)why, (size_t)n) != 0)
            goto fail;
        note_refused_connection(w, peer);
    }
    bufferevent_setcb(bev, h2conn_read_cb, h2conn_write_cb, event_cb, c);
    if (bufferevent_enable(bev, EV_READ | EV_WRITE) != 0)
        goto fail;
    c->next = w->ds_conns;
    if (w->ds_conns)
        w->ds_conns->prev = c;
    w->ds_conns = c;
    w->n_ds_conns++;
    h2conn_schedule_flush(c);
    return 0;
fail:
    if (c) {
        c->bev = bev;
        h2conn_release(c);
    } else {
        bufferevent_free(bev);
    }
    return -1;
}

/* A refused connection is closed right after its GOAWAY is written; unread client bytes (its
 * preface) would make close() send a RST, which can discard the GOAWAY before the client reads
 * it. Reading them first lets the close be an orderly FIN. */
static void drain_unread_input(h2conn *c)
{
    evutil_socket_t fd = c->bev ? bufferevent_getfd(c->bev) : -1;
    if (fd < 0)
        return;
    char sink[4096];
    for (int i = 0; i < 16; i++)
        if (recv(fd, sink, sizeof sink, MSG_DONTWAIT) <= 0)
            break;
}

void downstream_conn_teardown(h2conn *c)
{
    worker *w = c->w;
    /* detach every stream: each cancels its upstream half */
    while (c->streams.head)
        relay_on_client_closed(c->streams.head, NGHTTP2_CANCEL);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->ds_conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->n_ds_conns--;
    if (as_ds(c)->refused && !c->tls)
        drain_unread_input(c);
    h2conn_release(c);
}

void downstream_shutdown_all(worker *w)
{
    for (h2conn *c = w->ds_conns; c; c = c->next) {
        if (c->closing)
            continue;
        /* a GOAWAY with the last stream id seen: clients reconnect elsewhere, in-flight calls
         * finish */
        nghttp2_submit_goaway(c->session, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(c->session), NGHTTP2_NO_ERROR,
                              (const uint8_t *)"etcdseal shutting down", 22);
        c->shutdown_notice_sent = true;
        h2conn_schedule_flush(c);
    }
}
