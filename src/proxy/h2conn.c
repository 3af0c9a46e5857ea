/* h2conn.c - what both kinds of HTTP/2 connection share: feeding received bytes to nghttp2,
 * batching frames into one socket write per event-loop turn, and deferred teardown (an nghttp2
 * session must never be freed from inside its own callbacks). */
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
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

/* PING ACKs to etcd are held back briefly (grpc-go pings on every DATA it receives, for its BDP
 * estimator): written alone they cost a writev here and a wake-up in etcd per request; held, they
 * go out with the next request, or when the timer fires. Measured at 1 client: etcd context
 * switches per request 6.0-6.9 -> 5.3-5.8. Not done toward clients: holding those made etcd
 * switch more (8.2-8.4 per request), the grpc-go client then answers in more, smaller writes. */
#define H2CONN_ACK_DELAY_US 1000
#define H2_FRAME_HEADER 9
#define H2_PING_FRAME (H2_FRAME_HEADER + 8)

/* True when `b` holds nothing but whole PING frames with the ACK flag. */
static bool only_ping_acks(struct evbuffer *b)
{
    size_t len = evbuffer_get_length(b);
    if (len == 0 || len % H2_PING_FRAME != 0 || len > 8 * H2_PING_FRAME)
        return false;
    uint8_t frames[8 * H2_PING_FRAME];
    if (evbuffer_copyout(b, frames, len) != (ev_ssize_t)len)
        return false;
    for (size_t off = 0; off < len; off += H2_PING_FRAME) {
        const uint8_t *f = frames + off;
        if (f[0] != 0 || f[1] != 0 || f[2] != 8 || f[3] != NGHTTP2_PING ||
            (f[4] & NGHTTP2_FLAG_ACK) == 0)
            return false;
    }
    return true;
}

/* Produces pending frames into c->stage, then writes them. Cleartext connections with nothing
 * queued in the bufferevent write the frames straight to the socket (one writev): the
 * bufferevent would add and remove a write event (two epoll_ctl calls) per write; only what the
 * socket does not take goes the bufferevent way. `force`: write held PING ACKs now. */
static void h2conn_flush(h2conn *c, bool force)
{
    c->flush_pending = false;
    if (c->closing || !c->session)
        return;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    struct evbuffer *stage = c->stage;
    while (evbuffer_get_length(stage) + evbuffer_get_length(out) < RELAY_OUTPUT_HIGH) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->session, &data);
        if (n < 0) {
            log_warn("http2 send failed|peer=%s err=%s", c->peer, nghttp2_strerror((int)n));
            h2conn_close(c, "http2 send error");
            return;
        }
        if (n == 0)
            break;
        if (evbuffer_add(stage, data, (size_t)n) != 0) {
            h2conn_close(c, "out of memory");
            return;
        }
    }
    if (!force && c->kind == H2CONN_UPSTREAM && only_ping_acks(stage)) {
        if (!event_pending(c->ack_ev, EV_TIMEOUT, NULL)) {
            struct timeval tv = {0, H2CONN_ACK_DELAY_US};
            event_add(c->ack_ev, &tv);
        }
        return;
    }
    if (evbuffer_get_length(stage) > 0 && event_pending(c->ack_ev, EV_TIMEOUT, NULL))
        event_del(c->ack_ev);
    bool direct = !c->tls && evbuffer_get_length(out) == 0;
    if (direct && evbuffer_get_length(stage) > 0) {
        evutil_socket_t fd = bufferevent_getfd(c->bev);
        while (evbuffer_get_length(stage) > 0 && evbuffer_write(stage, fd) > 0)
            ;
        if (evbuffer_get_length(stage) == 0 && nghttp2_session_want_write(c->session)) {
            h2conn_schedule_flush(c); /* more frames than one round took */
            return;
        }
    }
    if (evbuffer_get_length(stage) > 0 && evbuffer_add_buffer(out, stage) != 0) {
        h2conn_close(c, "out of memory");
        return;
    }
    if (!nghttp2_session_want_read(c->session) && !nghttp2_session_want_write(c->session) &&
        evbuffer_get_length(out) == 0)
        h2conn_close(c, "session finished");
}

static void ack_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    h2conn_flush(arg, true);
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    h2conn_flush(arg, false);
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
    if (c->read_ev)
        event_del(c->read_ev);
    event_active(c->free_ev, EV_TIMEOUT, 0);
}

/* Feeds received bytes to nghttp2. Returns 0, or -1 when the connection is closing (a protocol
 * error: nghttp2's GOAWAY is flushed first). */
static int h2conn_feed(h2conn *c, const uint8_t *data, size_t len)
{
    while (len > 0) {
        ssize_t r = nghttp2_session_mem_recv(c->session, data, len);
        if (r < 0) {
            log_info("http2 protocol error|peer=%s err=%s", c->peer, nghttp2_strerror((int)r));
            /* let nghttp2 send its GOAWAY before we go */
            h2conn_flush(c, true);
            h2conn_close(c, "protocol error");
            return -1;
        }
        if (c->closing)
            return -1;
        data += r;
        len -= (size_t)r;
    }
    return 0;
}

/* Cleartext connections read the socket themselves once the first bytes arrived: the
 * bufferevent asks the kernel how much is readable (an ioctl) and allocates a buffer chain per
 * read; here one recv() lands in a stack buffer that nghttp2 reads directly. EOF and errors go to
 * the bufferevent's event callback, as if the bufferevent had seen them. */
#define H2CONN_READ_CHUNK (64u << 10)
#define H2CONN_READS_PER_EVENT 4

static void report_read_end(h2conn *c, short what)
{
    bufferevent_event_cb eventcb = NULL;
    void *cbarg = NULL;
    bufferevent_getcb(c->bev, NULL, NULL, &eventcb, &cbarg);
    if (c->read_ev)
        event_del(c->read_ev);
    if (eventcb)
        eventcb(c->bev, (short)(BEV_EVENT_READING | what), cbarg);
}

static void direct_read_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    h2conn *c = arg;
    uint8_t buf[H2CONN_READ_CHUNK];
    if (c->closing)
        return;
    c->last_recv_ms = worker_now_ms();
    for (int i = 0; i < H2CONN_READS_PER_EVENT; i++) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n > 0) {
            if (h2conn_feed(c, buf, (size_t)n) != 0)
                return;
            if ((size_t)n < sizeof buf)
                break;
            continue;
        }
        if (n == 0) {
            report_read_end(c, BEV_EVENT_EOF);
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
        report_read_end(c, BEV_EVENT_ERROR);
        return;
    }
    h2conn_schedule_flush(c);
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
            if (h2conn_feed(c, vec[i].iov_base, vec[i].iov_len) != 0)
                return;
            total += vec[i].iov_len;
        }
        evbuffer_drain(in, total);
    }
    if (!c->tls && !c->read_ev) {
        evutil_socket_t fd = bufferevent_getfd(bev);
        c->read_ev = fd >= 0 ? event_new(c->w->base, fd, EV_READ | EV_PERSIST, direct_read_cb, c)
                             : NULL;
        if (c->read_ev && event_add(c->read_ev, NULL) == 0)
            bufferevent_disable(bev, EV_READ);
        else if (c->read_ev) {
            event_free(c->read_ev);
            c->read_ev = NULL;
        }
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
    if (c->ack_ev)
        event_free(c->ack_ev);
    if (c->read_ev)
        event_free(c->read_ev);
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
    c->ack_ev = evtimer_new(w->base, ack_timer_cb, c);
    if (!c->flush_ev || !c->free_ev || !c->ack_ev)
        return -1;
    c->last_recv_ms = worker_now_ms();
    c->stage = evbuffer_new();
    if (!c->stage)
        return -1;
    /* write callback fires when output drains to 256 KiB: keeps the pipe full */
    bufferevent_setwatermark(bev, EV_WRITE, 256u << 10, 0);
    return 0;
}
