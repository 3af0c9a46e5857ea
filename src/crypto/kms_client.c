/* kms_client.c - the KMS thread (one gRPC core completion queue, posted functions, timers) and
 * unary calls to KMS plugins with endpoint failover.
 *
 * The thread is started on first use and lives for the process. It sleeps in
 * grpc_completion_queue_next until the next timer is due; other threads wake it by starting an
 * empty batch on a dummy call of a lame channel, which gRPC core completes at once on the queue.
 * A call copies its request so that it can be re-sent to the next endpoint: an endpoint that
 * answers UNAVAILABLE or DEADLINE_EXCEEDED is marked down (tried again after EP_RETRY_S) and the
 * call moves on while endpoints remain untried.
 */
#include "crypto/kms_client.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include "base/log.h"
#include "base/metrics.h"

#define EP_MAX 32
#define EP_RETRY_S 10.0 /* a down endpoint is preferred again after this long */
#define IDLE_WAIT_S 1.0

enum { TAG_WAKE = 1, TAG_CALL = 2 };

typedef struct post_item {
    kms_fn fn;
    void *arg;
    struct post_item *next;
} post_item;

static struct {
    pthread_once_t once;
    bool ok;
    pthread_t thread;
    grpc_completion_queue *cq;
    grpc_channel *lame;
    grpc_call *wake_call;
    bool wake_pending;
    pthread_mutex_t mu;
    post_item *posts, **posts_tail;
    kms_timer *timers; /* sorted by due */
} L = {.once = PTHREAD_ONCE_INIT, .mu = PTHREAD_MUTEX_INITIALIZER};

static const int wake_tag = TAG_WAKE;
static _Thread_local bool on_loop;

typedef struct kms_ep {
    char *target;
    grpc_channel *ch;
    atomic_llong down_ms; /* 0 = up; else monotonic ms when marked down */
} kms_ep;

typedef struct kms_call kms_call;

struct kms_client {
    atomic_int refs;
    char *name;
    double timeout;
    size_t n;
    kms_ep *eps;
    pthread_mutex_t mu;
    kms_call *inflight;
    bool closed;
};

struct kms_call {
    int kind; /* TAG_CALL: first member, the completion tag points here */
    kms_client *client;
    char *method;
    uint8_t *req;
    size_t req_len;
    kms_call_cb cb;
    void *arg;
    size_t ep;
    uint32_t tried;
    double started;
    grpc_call *call;
    grpc_metadata_array md_init, md_trail;
    grpc_byte_buffer *send, *recv;
    grpc_status_code status;
    grpc_slice details;
    kms_call *prev, *next;
};

double kms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

bool kms_on_loop_thread(void)
{
    return on_loop;
}

static gpr_timespec deadline_in(double s)
{
    if (!(s > 0))
        s = 0;
    if (s > 1e9) /* ~31 years: beyond any useful deadline, and int64 microseconds stay exact */
        s = 1e9;
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_micros((int64_t)(s * 1e6), GPR_TIMESPAN));
}

/* ------------------------------------------------------------------ loop */

static void wake_locked(void)
{
    if (L.wake_pending || !L.wake_call)
        return;
    if (grpc_call_start_batch(L.wake_call, NULL, 0, (void *)&wake_tag, NULL) == GRPC_CALL_OK)
        L.wake_pending = true;
}

static void call_done(kms_call *kc, int success);

static void run_posts(void)
{
    pthread_mutex_lock(&L.mu);
    post_item *p = L.posts;
    L.posts = NULL;
    L.posts_tail = &L.posts;
    pthread_mutex_unlock(&L.mu);
    while (p) {
        post_item *next = p->next;
        p->fn(p->arg);
        free(p);
        p = next;
    }
}

static void run_timers(void)
{
    for (;;) {
        double now = kms_now();
        pthread_mutex_lock(&L.mu);
        kms_timer *t = L.timers;
        if (!t || t->due > now) {
            pthread_mutex_unlock(&L.mu);
            return;
        }
        L.timers = t->next;
        t->next = NULL;
        t->scheduled = false;
        kms_fn fn = t->fn;
        void *arg = t->arg;
        pthread_mutex_unlock(&L.mu);
        fn(arg); /* may reschedule t, or free it */
    }
}

static void *loop_main(void *unused)
{
    (void)unused;
    on_loop = true;
    for (;;) {
        double wait = IDLE_WAIT_S;
        pthread_mutex_lock(&L.mu);
        if (L.posts)
            wait = 0;
        else if (L.timers && L.timers->due - kms_now() < wait)
            wait = L.timers->due - kms_now();
        pthread_mutex_unlock(&L.mu);
        grpc_event ev = grpc_completion_queue_next(L.cq, deadline_in(wait), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type == GRPC_OP_COMPLETE) {
            int kind = *(const int *)ev.tag;
            if (kind == TAG_WAKE) {
                pthread_mutex_lock(&L.mu);
                L.wake_pending = false;
                pthread_mutex_unlock(&L.mu);
            } else {
                call_done((kms_call *)ev.tag, ev.success);
            }
        }
        run_posts();
        run_timers();
    }
    return NULL;
}

static void loop_start(void)
{
    grpc_init();
    L.posts_tail = &L.posts;
    L.cq = grpc_completion_queue_create_for_next(NULL);
    L.lame = grpc_lame_client_channel_create("etcdseal-kms-wake", GRPC_STATUS_UNAVAILABLE, "wake");
    if (!L.cq || !L.lame)
        return;
    grpc_slice m = grpc_slice_from_static_string("/etcdseal.Wake/Wake");
    L.wake_call = grpc_channel_create_call(L.lame, NULL, 0, L.cq, m, NULL,
                                           gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (!L.wake_call)
        return;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&L.thread, &at, loop_main, NULL) == 0)
        L.ok = true;
    pthread_attr_destroy(&at);
    if (!L.ok)
        log_error("kms: cannot start the KMS thread");
}

static bool loop_ready(void)
{
    pthread_once(&L.once, loop_start);
    return L.ok;
}

int kms_loop_post(kms_fn fn, void *arg)
{
    if (!loop_ready())
        return -1;
    post_item *p = malloc(sizeof *p);
    if (!p)
        return -1;
    p->fn = fn;
    p->arg = arg;
    p->next = NULL;
    pthread_mutex_lock(&L.mu);
    *L.posts_tail = p;
    L.posts_tail = &p->next;
    wake_locked();
    pthread_mutex_unlock(&L.mu);
    return 0;
}

static void timer_unlink_locked(kms_timer *t)
{
    for (kms_timer **pp = &L.timers; *pp; pp = &(*pp)->next)
        if (*pp == t) {
            *pp = t->next;
            t->next = NULL;
            t->scheduled = false;
            return;
        }
}

int kms_timer_schedule(kms_timer *t, double delay_s, kms_fn fn, void *arg)
{
    if (!loop_ready())
        return -1;
    pthread_mutex_lock(&L.mu);
    if (t->scheduled)
        timer_unlink_locked(t);
    t->due = kms_now() + (delay_s > 0 ? delay_s : 0);
    t->fn = fn;
    t->arg = arg;
    kms_timer **pp = &L.timers;
    while (*pp && (*pp)->due <= t->due)
        pp = &(*pp)->next;
    t->next = *pp;
    *pp = t;
    t->scheduled = true;
    if (L.timers == t)
        wake_locked();
    pthread_mutex_unlock(&L.mu);
    return 0;
}

bool kms_timer_cancel(kms_timer *t)
{
    pthread_mutex_lock(&L.mu);
    bool was = t->scheduled;
    if (was)
        timer_unlink_locked(t);
    pthread_mutex_unlock(&L.mu);
    return was;
}

/* ------------------------------------------------------------------ client */

int kms_endpoint_target(const char *endpoint, char *out, size_t cap)
{
    if (strncasecmp(endpoint, "unix://", 7) != 0)
        return -1;
    const char *path = endpoint + 7;
    int n;
    if (path[0] == '/' && path[1] == '@')
        n = snprintf(out, cap, "unix-abstract:%s", path + 2);
    else if (path[0] == '/')
        n = snprintf(out, cap, "unix://%s", path);
    else
        return -1;
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

static void client_unref(kms_client *c)
{
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < c->n; i++) {
        if (c->eps[i].ch)
            grpc_channel_destroy(c->eps[i].ch);
        free(c->eps[i].target);
    }
    free(c->eps);
    free(c->name);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

int kms_client_new(const char *provider_name, const char *const *endpoints, size_t n_endpoints,
                   double timeout_s, kms_client **out, es_error *err)
{
    *out = NULL;
    if (n_endpoints == 0 || n_endpoints > EP_MAX)
        return es_error_set(err, 1, "kms provider \"%s\": 1 to %d endpoints are needed",
                            provider_name, EP_MAX);
    if (!loop_ready())
        return es_error_set(err, 1, "kms provider \"%s\": cannot start the KMS thread",
                            provider_name);
    kms_client *c = calloc(1, sizeof *c);
    if (!c)
        return es_error_set(err, 1, "kms provider \"%s\": out of memory", provider_name);
    atomic_init(&c->refs, 1);
    pthread_mutex_init(&c->mu, NULL);
    c->timeout = timeout_s > 0 ? timeout_s : 3;
    c->name = strdup(provider_name);
    c->eps = calloc(n_endpoints, sizeof *c->eps);
    if (!c->name || !c->eps) {
        client_unref(c);
        return es_error_set(err, 1, "kms provider \"%s\": out of memory", provider_name);
    }
    c->n = n_endpoints;
    grpc_arg args[4];
    args[0].type = GRPC_ARG_STRING;
    args[0].key = GRPC_ARG_DEFAULT_AUTHORITY;
    args[0].value.string = "localhost"; /* as kube-apiserver >= 1.32 */
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS;
    args[1].value.integer = 200;
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_MIN_RECONNECT_BACKOFF_MS;
    args[2].value.integer = 200;
    args[3].type = GRPC_ARG_INTEGER;
    args[3].key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
    args[3].value.integer = 2000; /* a restarted plugin is found again quickly */
    grpc_channel_args cargs = {.num_args = 4, .args = args};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    for (size_t i = 0; i < n_endpoints; i++) {
        char target[512];
        if (kms_endpoint_target(endpoints[i], target, sizeof target) != 0) {
            es_error_set(err, 1,
                         "kms provider \"%s\": endpoint \"%s\" is not unix:///<path> or "
                         "unix:///@<name>",
                         provider_name, endpoints[i]);
            grpc_channel_credentials_release(creds);
            client_unref(c);
            return -1;
        }
        atomic_init(&c->eps[i].down_ms, 0);
        c->eps[i].target = strdup(target);
        c->eps[i].ch = c->eps[i].target ? grpc_channel_create(target, creds, &cargs) : NULL;
        if (!c->eps[i].ch) {
            es_error_set(err, 1, "kms provider \"%s\": cannot create a channel for %s",
                         provider_name, endpoints[i]);
            grpc_channel_credentials_release(creds);
            client_unref(c);
            return -1;
        }
    }
    grpc_channel_credentials_release(creds);
    *out = c;
    return 0;
}

void kms_client_free(kms_client *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->closed = true;
    for (kms_call *k = c->inflight; k; k = k->next)
        if (k->call)
            grpc_call_cancel(k->call, NULL);
    pthread_mutex_unlock(&c->mu);
    client_unref(c);
}

static bool ep_usable(const kms_client *c, size_t i, double now)
{
    long long d = atomic_load_explicit(&c->eps[i].down_ms, memory_order_relaxed);
    return d == 0 || now * 1000.0 - (double)d > EP_RETRY_S * 1000.0;
}

size_t kms_client_current_endpoint(const kms_client *c)
{
    double now = kms_now();
    for (size_t i = 0; i < c->n; i++)
        if (ep_usable(c, i, now))
            return i;
    return 0;
}

/* Next endpoint for kc: first usable untried one, else first untried one; -1 when none. */
static long pick_endpoint(const kms_call *kc)
{
    const kms_client *c = kc->client;
    double now = kms_now();
    for (size_t i = 0; i < c->n; i++)
        if (!(kc->tried & (1u << i)) && ep_usable(c, i, now))
            return (long)i;
    for (size_t i = 0; i < c->n; i++)
        if (!(kc->tried & (1u << i)))
            return (long)i;
    return -1;
}

static void attempt_reset(kms_call *kc)
{
    if (kc->call)
        grpc_call_unref(kc->call);
    kc->call = NULL;
    grpc_metadata_array_destroy(&kc->md_init);
    grpc_metadata_array_destroy(&kc->md_trail);
    grpc_metadata_array_init(&kc->md_init);
    grpc_metadata_array_init(&kc->md_trail);
    if (kc->send)
        grpc_byte_buffer_destroy(kc->send);
    if (kc->recv)
        grpc_byte_buffer_destroy(kc->recv);
    kc->send = kc->recv = NULL;
    grpc_slice_unref(kc->details);
    kc->details = grpc_empty_slice();
}

static int attempt_start(kms_call *kc)
{
    kms_client *c = kc->client;
    long ep = pick_endpoint(kc);
    if (ep < 0)
        return -1;
    kc->ep = (size_t)ep;
    kc->tried |= 1u << ep;
    grpc_slice method = grpc_slice_from_static_string(kc->method);
    kc->call = grpc_channel_create_call(c->eps[ep].ch, NULL, 0, L.cq, method, NULL,
                                        deadline_in(c->timeout), NULL);
    if (!kc->call)
        return -1;
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)kc->req, kc->req_len);
    kc->send = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (c->n == 1) /* kube-apiserver: WaitForReady(true); with failover, fail fast instead */
        ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY |
                       GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = kc->send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &kc->md_init;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &kc->recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &kc->md_trail;
    ops[5].data.recv_status_on_client.status = &kc->status;
    ops[5].data.recv_status_on_client.status_details = &kc->details;
    if (grpc_call_start_batch(kc->call, ops, 6, kc, NULL) != GRPC_CALL_OK)
        return -1;
    return 0;
}

static void call_release(kms_call *kc)
{
    kms_client *c = kc->client;
    pthread_mutex_lock(&c->mu);
    if (kc->prev)
        kc->prev->next = kc->next;
    else
        c->inflight = kc->next;
    if (kc->next)
        kc->next->prev = kc->prev;
    pthread_mutex_unlock(&c->mu);
    attempt_reset(kc);
    grpc_metadata_array_destroy(&kc->md_init);
    grpc_metadata_array_destroy(&kc->md_trail);
    grpc_slice_unref(kc->details);
    free(kc->method);
    free(kc->req);
    free(kc);
    client_unref(c);
}

static const char *status_name(int s)
{
    static const char *const names[] = {
        "OK",       "Canceled",       "Unknown",          "InvalidArgument",   "DeadlineExceeded",
        "NotFound", "AlreadyExists",  "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
        "Aborted",  "OutOfRange",     "Unimplemented",    "Internal",          "Unavailable",
        "DataLoss", "Unauthenticated"};
    return s >= 0 && s < 17 ? names[s] : "Unknown";
}

static void record_latency(const kms_client *c, const char *method, int status, double secs)
{
    static const double bounds[20] = {0.0001, 0.0002, 0.0004, 0.0008,  0.0016,  0.0032, 0.0064,
                                      0.0128, 0.0256, 0.0512, 0.1024,  0.2048,  0.4096, 0.8192,
                                      1.6384, 3.2768, 6.5536, 13.1072, 26.2144, 52.4288};
    buf_t labels = BUF_INIT;
    if (metrics_labels_add(&labels, "provider_name", c->name) == 0 &&
        metrics_labels_add(&labels, "method_name", method) == 0 &&
        metrics_labels_add(&labels, "grpc_status_code", status_name(status)) == 0) {
        metrics_histogram *h =
            metrics_histogram_get("apiserver_envelope_encryption_kms_operations_latency_seconds",
                                  "KMS operation duration with gRPC error code status total.",
                                  (const char *)labels.data, bounds, 20);
        metrics_histogram_observe(h, secs);
    }
    buf_free(&labels);
}

static void call_done(kms_call *kc, int success)
{
    kms_client *c = kc->client;
    int status = success ? (int)kc->status : GRPC_STATUS_UNKNOWN;
    record_latency(c, kc->method, status, kms_now() - kc->started);
    if (status == GRPC_STATUS_UNAVAILABLE || status == GRPC_STATUS_DEADLINE_EXCEEDED) {
        long long ms = (long long)(kms_now() * 1000.0);
        atomic_store_explicit(&c->eps[kc->ep].down_ms, ms ? ms : 1, memory_order_relaxed);
        pthread_mutex_lock(&c->mu);
        if (!c->closed && pick_endpoint(kc) >= 0) {
            log_warn("kms endpoint down, trying the next one|provider=%s endpoint=%s status=%s",
                     c->name, c->eps[kc->ep].target, status_name(status));
            attempt_reset(kc);
            kc->started = kms_now();
            if (attempt_start(kc) == 0) {
                pthread_mutex_unlock(&c->mu);
                return;
            }
            status = GRPC_STATUS_UNAVAILABLE;
        }
        pthread_mutex_unlock(&c->mu);
    } else if (status == GRPC_STATUS_OK) {
        atomic_store_explicit(&c->eps[kc->ep].down_ms, 0, memory_order_relaxed);
    }
    char detail[256];
    size_t dl = GRPC_SLICE_LENGTH(kc->details);
    if (dl >= sizeof detail)
        dl = sizeof detail - 1;
    memcpy(detail, GRPC_SLICE_START_PTR(kc->details), dl);
    detail[dl] = '\0';
    if (status == GRPC_STATUS_OK && !kc->recv) {
        status = GRPC_STATUS_INTERNAL;
        snprintf(detail, sizeof detail, "no response message");
    }
    if (status != GRPC_STATUS_OK) {
        kc->cb(kc->arg, status, detail, NULL, 0);
    } else {
        grpc_byte_buffer_reader rd;
        if (!grpc_byte_buffer_reader_init(&rd, kc->recv)) {
            kc->cb(kc->arg, GRPC_STATUS_INTERNAL, "bad response buffer", NULL, 0);
        } else {
            grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
            grpc_byte_buffer_reader_destroy(&rd);
            kc->cb(kc->arg, 0, "", GRPC_SLICE_START_PTR(all), GRPC_SLICE_LENGTH(all));
            grpc_slice_unref(all);
        }
    }
    call_release(kc);
}

int kms_client_call(kms_client *c, const char *method, const uint8_t *req, size_t len,
                    kms_call_cb cb, void *arg, es_error *err)
{
    kms_call *kc = calloc(1, sizeof *kc);
    if (!kc)
        return es_error_set(err, 13, "kms provider \"%s\": out of memory", c->name);
    kc->kind = TAG_CALL;
    kc->client = c;
    kc->cb = cb;
    kc->arg = arg;
    kc->method = strdup(method);
    kc->req = malloc(len ? len : 1);
    kc->details = grpc_empty_slice();
    grpc_metadata_array_init(&kc->md_init);
    grpc_metadata_array_init(&kc->md_trail);
    if (!kc->method || !kc->req) {
        free(kc->method);
        free(kc->req);
        free(kc);
        return es_error_set(err, 13, "kms provider \"%s\": out of memory", c->name);
    }
    if (len)
        memcpy(kc->req, req, len);
    kc->req_len = len;
    kc->started = kms_now();
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    pthread_mutex_lock(&c->mu);
    bool closed = c->closed;
    if (!closed) {
        kc->next = c->inflight;
        if (c->inflight)
            c->inflight->prev = kc;
        c->inflight = kc;
        /* started under the lock so kms_client_free sees kc->call */
        if (attempt_start(kc) == 0) {
            pthread_mutex_unlock(&c->mu);
            return 0;
        }
        c->inflight = kc->next;
        if (kc->next)
            kc->next->prev = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    kc->next = kc->prev = NULL;
    attempt_reset(kc);
    grpc_metadata_array_destroy(&kc->md_init);
    grpc_metadata_array_destroy(&kc->md_trail);
    grpc_slice_unref(kc->details);
    free(kc->method);
    free(kc->req);
    free(kc);
    client_unref(c);
    return es_error_set(err, 14, "kms provider \"%s\": %s", c->name,
                        closed ? "client closed" : "cannot start the call");
}

typedef struct blocking_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int status;
    char detail[256];
    buf_t *resp;
    bool oom;
} blocking_wait;

static void blocking_cb(void *arg, int status, const char *detail, const uint8_t *resp,
                        size_t resp_len)
{
    blocking_wait *w = arg;
    pthread_mutex_lock(&w->mu);
    w->status = status;
    snprintf(w->detail, sizeof w->detail, "%s", detail);
    if (status == 0 && buf_append(w->resp, resp, resp_len) < 0)
        w->oom = true;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int kms_client_call_blocking(kms_client *c, const char *method, const uint8_t *req, size_t len,
                             buf_t *resp, es_error *err)
{
    if (on_loop)
        return es_error_set(err, 13, "kms: blocking call on the KMS thread");
    blocking_wait w = {.mu = PTHREAD_MUTEX_INITIALIZER, .resp = resp};
    pthread_cond_init(&w.cv, NULL);
    if (kms_client_call(c, method, req, len, blocking_cb, &w, err) != 0) {
        pthread_cond_destroy(&w.cv);
        return -1;
    }
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    pthread_cond_destroy(&w.cv);
    if (w.status != 0)
        return es_error_set(err, w.status, "%s: %s (%s)", method, w.detail, status_name(w.status));
    if (w.oom)
        return es_error_set(err, 13, "%s: out of memory", method);
    return 0;
}
