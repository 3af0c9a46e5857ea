/* downstream.c - client-facing HTTP/2 connections: accept (cleartext prior-knowledge h2 or TLS
 * with ALPN h2), the nghttp2 server session, and its callbacks, which only translate frames into
 * relay_* calls. HTTP messaging checks are off (nghttp2_option_set_no_http_messaging): etcd's Go
 * client sends endpoint strings such as "unix://host:1234" as :authority, which etcd accepts; the
 * relay checks what gRPC needs itself (relay_on_request_headers). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>

#include "base/log.h"
#include "proxy/relay.h"
#include "proxy/worker.h"

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
    (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* client trailers carry nothing gRPC uses */
    relay_stream *rs = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (rs)
        hdr_list_add(&rs->req_hdrs, name, value);
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
        return 0;
    relay_stream *rs = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (!rs)
        return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
        relay_on_request_headers(rs);
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
            log_info("client TLS error|peer=%s err=\"%s\"", c->peer, text);
        }
    }
    h2conn_close(c, (events & BEV_EVENT_EOF) ? "client closed" : "client connection error");
}

int downstream_accept(worker *w, int fd, const char *peer)
{
    const proxy_runtime *rt = w->rt;
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
    h2conn *c = calloc(1, sizeof *c);
    if (!c || h2conn_setup(c, w, H2CONN_DOWNSTREAM, bev) < 0)
        goto fail;
    snprintf(c->peer, sizeof c->peer, "%s", peer);
    c->tls = tls != NULL;
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
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)w->rt->max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, RELAY_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 1u << 20},
    };
    if (nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) ||
        nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0, RELAY_CONN_WINDOW))
        goto fail;
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
