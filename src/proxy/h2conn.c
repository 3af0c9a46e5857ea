/* h2conn.c - what both kinds of HTTP/2 connection share: feeding received bytes to nghttp2,
 * batching frames into one socket write per event-loop turn, and deferred teardown (an nghttp2
 * session must never be freed from inside its own callbacks). */
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "proxy/relay.h"
#include "proxy/worker.h"

void h2conn_list_add(rs_list *l, relay_stream *rs, rs_link *link)
{
    link->prev = NULL;
    link->next = l->head;
    if (l->head) {
        rs_link *hl = (link == &rs->ds_link) ? &l->head->ds_link : &l->head->us_link;
        hl->prev = rs;
    }
    l->head = rs;
    l->count++;
}

void h2conn_list_remove(rs_list *l, relay_stream *rs, rs_link *link)
{
    bool ds = (link == &rs->ds_link);
    if (link->prev)
        (ds ? &link->prev->ds_link : &link->prev->us_link)->next = link->next;
    else
        l->head = link->next;
    if (link->next)
        (ds ? &link->next->ds_link : &link->next->us_link)->prev = link->prev;
    link->prev = link->next = NULL;
    l->count--;
}

/* Produces pending frames and writes them. Cleartext connections with nothing queued in the
 * bufferevent write the frames straight to the socket (one writev): the bufferevent would add
 * and remove a write event (two epoll_ctl calls) per write; only what the socket does not take
 * goes the bufferevent way. */
static void h2conn_flush(h2conn *c)
{
    c->flush_pending = false;
    if (c->closing || !c->session)
        return;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    bool direct = !c->tls && c->stage && evbuffer_get_length(out) == 0;
    struct evbuffer *dst = direct ? c->stage : out;
    while (evbuffer_get_length(dst) < RELAY_OUTPUT_HIGH) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->session, &data);
        if (n < 0) {
            log_warn("http2 send failed|peer=%s err=%s", c->peer, nghttp2_strerror((int)n));
            h2conn_close(c, "http2 send error");
            return;
        }
        if (n == 0)
            break;
        if (evbuffer_add(dst, data, (size_t)n) != 0) {
            h2conn_close(c, "out of memory");
            return;
        }
    }
    if (direct && evbuffer_get_length(dst) > 0) {
        evutil_socket_t fd = bufferevent_getfd(c->bev);
        while (evbuffer_get_length(dst) > 0 && evbuffer_write(dst, fd) > 0)
            ;
        if (evbuffer_get_length(dst) > 0 && evbuffer_add_buffer(out, dst) != 0) {
            h2conn_close(c, "out of memory");
            return;
        }
        if (evbuffer_get_length(dst) == 0 && nghttp2_session_want_write(c->session)) {
            h2conn_schedule_flush(c); /* more frames than one round took */
            return;
        }
    }
    if (!nghttp2_session_want_read(c->session) && !nghttp2_session_want_write(c->session) &&
        evbuffer_get_length(out) == 0)
        h2conn_close(c, "session finished");
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    h2conn_flush(arg);
}

void h2conn_schedule_flush(h2conn *c)
{
    if (c->flush_pending || c->closing)
        return;
    c->flush_pending = true;
    event_active(c->flush_ev, EV_WRITE, 0);
}

static void free_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    h2conn *c = arg;
    if (c->kind == H2CONN_DOWNSTREAM)
        downstream_conn_teardown(c);
    else
        upstream_conn_teardown(c);
}

void h2conn_close(h2conn *c, const char *why)
{
    if (c->closing)
        return;
    c->closing = true;
    log_debug("connection closing|peer=%s kind=%s reason=\"%s\"", c->peer,
              c->kind == H2CONN_DOWNSTREAM ? "client" : "upstream", why);
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    event_active(c->free_ev, EV_TIMEOUT, 0);
}

void h2conn_read_cb(struct bufferevent *bev, void *arg)
{
    h2conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (c->closing)
        return;
    c->last_recv_ms = worker_now_ms();
    struct evbuffer_iovec vec[8];
    while (evbuffer_get_length(in) > 0) {
        int n = evbuffer_peek(in, -1, NULL, vec, 8);
        if (n > 8)
            n = 8;
        size_t total = 0;
        for (int i = 0; i < n; i++) {
            ssize_t r = nghttp2_session_mem_recv(c->session, vec[i].iov_base, vec[i].iov_len);
            if (r < 0) {
                log_info("http2 protocol error|peer=%s err=%s", c->peer,
                         nghttp2_strerror((int)r));
                evbuffer_drain(in, total);
                /* let nghttp2 send its GOAWAY before we go */
                h2conn_flush(c);
                h2conn_close(c, "protocol error");
                return;
            }
            total += (size_t)r;
            if (c->closing)
                break;
        }
        evbuffer_drain(in, total);
        if (c->closing)
            return;
    }
    h2conn_schedule_flush(c);
}

void h2conn_write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    h2conn *c = arg;
    /* the socket drained below the low watermark: produce more frames */
    h2conn_schedule_flush(c);
}

void h2conn_release(h2conn *c)
{
    if (c->session)
        nghttp2_session_del(c->session);
    if (c->flush_ev)
        event_free(c->flush_ev);
    if (c->free_ev)
        event_free(c->free_ev);
    if (c->ping_ev)
        event_free(c->ping_ev);
    if (c->stage)
        evbuffer_free(c->stage);
    if (c->bev)
        bufferevent_free(c->bev);
    free(c);
}

int h2conn_setup(h2conn *c, struct worker *w, enum h2conn_kind kind, struct bufferevent *bev)
{
    c->kind = kind;
    c->w = w;
    c->bev = bev;
    c->flush_ev = event_new(w->base, -1, 0, flush_cb, c);
    c->free_ev = event_new(w->base, -1, 0, free_cb, c);
    if (!c->flush_ev || !c->free_ev)
        return -1;
    c->last_recv_ms = worker_now_ms();
    c->stage = evbuffer_new();
    if (!c->stage)
        return -1;
    /* write callback fires when output drains to 256 KiB: keeps the pipe full */
    bufferevent_setwatermark(bev, EV_WRITE, 256u << 10, 0);
    return 0;
}
