/* worker.h - proxy runtime: N worker threads, each with its own libevent base, SO_REUSEPORT
 * listener, upstream pool and caches; a call lives on one worker from start to end.
 *
 * proxy_runtime holds what all workers share read-only (settings, TLS contexts, endpoints);
 * it is built by src/cmd/proxy.c before proxy_start and outlives the workers.
 * proxy_start binds every worker's listener before returning (errors reported then),
 * proxy_request_shutdown may be called from any thread (signal handling thread), and
 * proxy_wait joins the workers. Worker-local metric series are cached per worker.
 */
#ifndef ETCDSEAL_PROXY_WORKER_H
#define ETCDSEAL_PROXY_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/ssl.h>

#include "base/buf.h"
#include "base/error.h"
#include "base/metrics.h"
#include "proxy/endpoint.h"
#include "proxy/grpc_wire.h"

struct h2conn;
struct upstream_pool;
struct policy_encryption;

typedef struct proxy_runtime {
    char listen_host[256];
    char listen_port[8];
    /* Swapped by a reload: read with atomic_load. A reload retires the old object and frees it
     * only after a grace period, so a worker that loaded the pointer can still take its
     * reference (SSL_new / policy_encryption_ref). NULL server_tls: cleartext h2. */
    _Atomic(SSL_CTX *) server_tls;
    SSL_CTX *client_tls; /* NULL: upstream cleartext */
    bool upstream_verify;
    endpoint *endpoints;
    size_t n_endpoints;
    const char *const *advertise_urls;
    size_t n_advertise_urls;
    int workers;
    double shutdown_timeout;
    double dial_timeout;
    double keepalive_time;
    double keepalive_timeout;
    size_t max_message_bytes;
    size_t max_header_list_bytes;   /* request header block limit (client side) */
    int max_concurrent_streams;     /* SETTINGS_MAX_CONCURRENT_STREAMS to clients */
    int max_connections_per_worker; /* 0 = no limit */
    bool map_identity_to_etcd_user;
    _Atomic(struct policy_encryption *) policy; /* may be NULL; see server_tls */
    _Atomic(struct access_policy *) access;     /* NULL = all allowed; swapped like policy */
} proxy_runtime;

struct method_metrics {
    metrics_counter *by_code[GRPC_STATUS_COUNT];
    metrics_histogram *latency;
};

typedef struct worker {
    unsigned id;
    const proxy_runtime *rt;
    pthread_t thread;
    struct event_base *base;
    struct evconnlistener *listener;
    struct upstream_pool *pool;
    struct h2conn *ds_conns;
    size_t n_ds_conns;
    int notify_fd;
    struct event *notify_ev;
    struct event *shutdown_timer;
    bool shutting_down;
    uint64_t shutdown_deadline_ms;
    struct method_metrics *mm; /* per method index, series looked up lazily */
    metrics_gauge *open_streams;
    buf_t scratch; /* transformer output, reused per message */
    struct relay_stream *stream_cache; /* finished streams kept for reuse (relay.c) */
    unsigned n_stream_cache;
    /* streams woken by KMS results (other threads push, the worker drains) */
    pthread_mutex_t wake_mu;
    void **wake_q;
    size_t wake_n, wake_cap;
    int wake_fd;
    struct event *wake_ev;
    _Atomic int upstream_ready;
} worker;

typedef struct proxy proxy;

proxy *proxy_start(const proxy_runtime *rt, es_error *err);
void proxy_request_shutdown(proxy *p);
void proxy_wait(proxy *p);
void proxy_free(proxy *p);
/* True when at least one worker has a ready upstream connection (for /readyz). */
bool proxy_upstream_ready(const proxy *p);

uint64_t worker_now_ms(void);
uint64_t worker_now_ns(void);
/* Called by the relay when a stream finishes, for metrics. */
void worker_record_call(worker *w, unsigned method_index, int status, uint64_t start_ns);

#endif
