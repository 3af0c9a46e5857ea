/* worker.c - the proxy's threads: one event loop per worker with its own SO_REUSEPORT listener
 * and upstream pool, graceful shutdown driven through an eventfd, and per-call metrics. */
#include "proxy/worker.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "base/log.h"
#include "proxy/methods.h"
#include "proxy/relay.h"

struct proxy {
    const proxy_runtime *rt;
    worker *workers;
    int n;
    bool joined;
};

uint64_t worker_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t worker_now_ms(void)
{
    return worker_now_ns() / 1000000u;
}

void worker_record_call(worker *w, unsigned method_index, int status, uint64_t start_ns)
{
    if (method_index >= method_count())
        return;
    if (status < 0 || status >= GRPC_STATUS_COUNT)
        status = GRPC_UNKNOWN;
    struct method_metrics *mm = &w->mm[method_index];
    const method_desc *m = method_at(method_index);
    if (!mm->by_code[status]) {
        char labels[192];
        snprintf(labels, sizeof labels, "service=\"%s\",method=\"%s\",grpc_code=\"%s\"", m->service,
                 m->name, grpc_status_name(status));
        mm->by_code[status] = metrics_counter_get(
            "etcdseal_requests_total", "gRPC calls relayed, by method and final status", labels);
    }
    if (!mm->latency) {
        char labels[160];
        snprintf(labels, sizeof labels, "service=\"%s\",method=\"%s\"", m->service, m->name);
        mm->latency = metrics_histogram_get(
            "etcdseal_request_duration_seconds",
            "Time from request headers to the end of the call (streams: their lifetime)", labels,
            metrics_latency_buckets, metrics_latency_buckets_len);
    }
    metrics_counter_add(mm->by_code[status], 1);
    metrics_histogram_observe(mm->latency, (double)(worker_now_ns() - start_ns) / 1e9);
}

/* ------------------------------------------------------------------ KMS wake-ups */
void worker_wake_stream(void *arg)
{
    relay_stream *rs = arg;
    worker *w = rs->w;
    pthread_mutex_lock(&w->wake_mu);
    if (w->wake_n == w->wake_cap) {
        size_t cap = w->wake_cap ? w->wake_cap * 2 : 64;
        void **q = realloc(w->wake_q, cap * sizeof *q);
        if (!q) {
            pthread_mutex_unlock(&w->wake_mu);
            log_error("cannot queue a KMS wake-up: out of memory");
            return;
        }
        w->wake_q = q;
        w->wake_cap = cap;
    }
    w->wake_q[w->wake_n++] = rs;
    pthread_mutex_unlock(&w->wake_mu);
    uint64_t one = 1;
    if (write(w->wake_fd, &one, sizeof one) < 0)
        log_warn("cannot signal worker wake-up|id=%u", w->id);
}

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    worker *w = arg;
    uint64_t v;
    if (read(fd, &v, sizeof v) < 0)
        return;
    for (;;) {
        pthread_mutex_lock(&w->wake_mu);
        size_t n = w->wake_n;
        void *batch[64];
        if (n > 64)
            n = 64;
        memcpy(batch, w->wake_q, n * sizeof *batch);
        memmove(w->wake_q, w->wake_q + n, (w->wake_n - n) * sizeof *batch);
        w->wake_n -= n;
        pthread_mutex_unlock(&w->wake_mu);
        if (n == 0)
            break;
        for (size_t i = 0; i < n; i++)
            relay_resume_parked(batch[i]);
    }
}

/* ------------------------------------------------------------------ accept */
static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int socklen, void *arg)
{
    (void)l;
    (void)socklen;
    worker *w = arg;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    char host[INET6_ADDRSTRLEN] = "?", peer[64];
    int port = 0;
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        port = ntohs(in6->sin6_port);
    }
    snprintf(peer, sizeof peer, "%s:%d", host, port);
    if (downstream_accept(w, fd, peer) < 0) {
        log_warn("cannot set up client connection|peer=%s", peer);
        evutil_closesocket(fd);
    }
}

/* ------------------------------------------------------------------ shutdown */
static size_t worker_stream_count(const worker *w)
{
    size_t n = 0;
    for (const h2conn *c = w->ds_conns; c; c = c->next)
        n += c->streams.count;
    return n;
}

static void shutdown_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    worker *w = arg;
    static const struct timeval tick = {0, 50000};
    if (worker_stream_count(w) == 0 || worker_now_ms() >= (uint64_t)w->shutdown_deadline_ms) {
        event_base_loopbreak(w->base);
        return;
    }
    evtimer_add(w->shutdown_timer, &tick);
}

static void notify_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    worker *w = arg;
    uint64_t v;
    if (read(fd, &v, sizeof v) < 0)
        return;
    if (w->shutting_down)
        return;
    w->shutting_down = true;
    if (w->listener)
        evconnlistener_disable(w->listener);
    /* streaming calls (Watch, LeaseKeepAlive, Observe...) never end by themselves: end them
     * with UNAVAILABLE so clients reconnect elsewhere; unary calls may finish */
    for (h2conn *c = w->ds_conns; c; c = c->next)
        for (relay_stream *rs = c->streams.head; rs; rs = rs->ds_link.next)
            if (rs->method && (rs->method->client_streaming || rs->method->server_streaming))
                relay_finish_local(rs, GRPC_UNAVAILABLE, "etcdseal: proxy shutting down");
    downstream_shutdown_all(w);
    w->shutdown_deadline_ms = worker_now_ms() + (uint64_t)(w->rt->shutdown_timeout * 1000);
    shutdown_tick(-1, 0, w);
}

/* ------------------------------------------------------------------ lifecycle */
static void *worker_main(void *arg)
{
    worker *w = arg;
    metrics_set_shard(w->id);
    event_base_dispatch(w->base);
    /* teardown on the worker's own thread: clients first, then upstream */
    while (w->ds_conns) {
        h2conn *c = w->ds_conns;
        c->closing = true;
        downstream_conn_teardown(c);
    }
    upstream_pool_free(w->pool);
    w->pool = NULL;
    return NULL;
}

static struct evconnlistener *bind_listener(worker *w, const struct addrinfo *ai, es_error *err)
{
    unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT |
                     LEV_OPT_CLOSE_ON_EXEC;
    struct evconnlistener *l = evconnlistener_new_bind(w->base, accept_cb, w, flags, 4096,
                                                       ai->ai_addr, (int)ai->ai_addrlen);
    if (!l)
        es_error_set(err, 0, "cannot listen on %s:%s: %s", w->rt->listen_host, w->rt->listen_port,
                     strerror(errno));
    return l;
}

proxy *proxy_start(const proxy_runtime *rt, es_error *err)
{
    proxy *p = calloc(1, sizeof *p);
    if (!p) {
        es_error_set(err, 0, "out of memory");
        return NULL;
    }
    p->rt = rt;
    p->n = rt->workers > 0 ? rt->workers : 1;
    p->workers = calloc((size_t)p->n, sizeof *p->workers);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int rv = getaddrinfo(rt->listen_host[0] ? rt->listen_host : NULL, rt->listen_port, &hints, &ai);
    if (!p->workers || rv != 0) {
        es_error_set(err, 0, "--listen-addr %s:%s: %s", rt->listen_host, rt->listen_port,
                     rv ? gai_strerror(rv) : "out of memory");
        if (ai)
            freeaddrinfo(ai);
        free(p->workers);
        free(p);
        return NULL;
    }
    int started = 0;
    for (int i = 0; i < p->n; i++) {
        worker *w = &p->workers[i];
        w->id = (unsigned)i;
        w->rt = rt;
        struct event_config *cfg = event_config_new();
        event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
        w->base = event_base_new_with_config(cfg);
        event_config_free(cfg);
        w->mm = calloc(method_count(), sizeof *w->mm);
        w->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        pthread_mutex_init(&w->wake_mu, NULL);
        if (!w->base || !w->mm || w->notify_fd < 0 || w->wake_fd < 0) {
            es_error_set(err, 0, "cannot create worker %d", i);
            goto fail;
        }
        w->listener = bind_listener(w, ai, err);
        if (!w->listener)
            goto fail;
        w->notify_ev = event_new(w->base, w->notify_fd, EV_READ | EV_PERSIST, notify_cb, w);
        w->shutdown_timer = evtimer_new(w->base, shutdown_tick, w);
        w->wake_ev = event_new(w->base, w->wake_fd, EV_READ | EV_PERSIST, wake_cb, w);
        if (!w->wake_ev || event_add(w->wake_ev, NULL) != 0) {
            es_error_set(err, 0, "cannot create worker %d wake-up event", i);
            goto fail;
        }
        char labels[32];
        snprintf(labels, sizeof labels, "worker=\"%d\"", i);
        w->open_streams =
            metrics_gauge_get("etcdseal_open_streams", "Client streams currently open", labels);
        if (!w->notify_ev || !w->shutdown_timer || event_add(w->notify_ev, NULL) != 0) {
            es_error_set(err, 0, "cannot create worker %d events", i);
            goto fail;
        }
        w->pool = upstream_pool_new(w);
        if (!w->pool) {
            es_error_set(err, 0, "cannot create upstream pool");
            goto fail;
        }
    }
    freeaddrinfo(ai);
    ai = NULL;
    for (int i = 0; i < p->n; i++) {
        if (pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i]) != 0) {
            es_error_set(err, 0, "cannot start worker thread %d", i);
            proxy_request_shutdown(p);
            for (int j = 0; j < started; j++)
                pthread_join(p->workers[j].thread, NULL);
            p->joined = true;
            goto fail;
        }
        started++;
    }
    return p;
fail:
    if (ai)
        freeaddrinfo(ai);
    if (started == 0)
        p->joined = true;
    proxy_free(p);
    return NULL;
}

void proxy_request_shutdown(proxy *p)
{
    for (int i = 0; i < p->n; i++) {
        uint64_t one = 1;
        if (p->workers[i].notify_fd >= 0 && write(p->workers[i].notify_fd, &one, sizeof one) < 0)
            log_warn("cannot notify worker|id=%d", i);
    }
}

void proxy_wait(proxy *p)
{
    if (p->joined)
        return;
    for (int i = 0; i < p->n; i++)
        pthread_join(p->workers[i].thread, NULL);
    p->joined = true;
}

bool proxy_upstream_ready(const proxy *p)
{
    for (int i = 0; i < p->n; i++)
        if (atomic_load(&p->workers[i].upstream_ready))
            return true;
    return false;
}

void proxy_free(proxy *p)
{
    if (!p)
        return;
    proxy_wait(p);
    for (int i = 0; i < p->n; i++) {
        worker *w = &p->workers[i];
        if (w->pool) { /* never started: tear down here */
            upstream_pool_free(w->pool);
        }
        while (w->ds_conns) {
            h2conn *c = w->ds_conns;
            c->closing = true;
            downstream_conn_teardown(c);
        }
        if (w->listener)
            evconnlistener_free(w->listener);
        if (w->notify_ev)
            event_free(w->notify_ev);
        if (w->shutdown_timer)
            event_free(w->shutdown_timer);
        if (w->notify_fd > 0)
            close(w->notify_fd);
        if (w->wake_ev)
            event_free(w->wake_ev);
        if (w->wake_fd > 0)
            close(w->wake_fd);
        pthread_mutex_destroy(&w->wake_mu);
        free(w->wake_q);
        if (w->base)
            event_base_free(w->base);
        buf_wipe_free(&w->scratch);
        relay_stream_cache_free(w);
        free(w->mm);
    }
    free(p->workers);
    free(p);
}
