/* kms_client.h - KMS plugin gRPC client on gRPC core, driven by one process-wide KMS thread.
 *
 * The KMS thread owns one completion queue; every call completion, posted function and timer
 * callback runs on it (never on the caller's thread). Calls are started from any thread without
 * blocking and finish with `cb` on the KMS thread. A client holds one channel per endpoint
 * (`unix:///path`, `unix:///@abstract`); each call goes to the first healthy endpoint and moves on
 * to the next one when an endpoint is unavailable or times out (an endpoint marked down is tried
 * again after a while). Per-call deadline = the client's timeout. Latency is recorded as
 * apiserver_envelope_encryption_kms_operations_latency_seconds{provider_name,method_name,
 * grpc_status_code}. kms_client_free may be called with calls in flight: they are cancelled and
 * their callbacks still run once. Timers are one-shot, owned by the caller, and may be cancelled.
 */
#ifndef ETCDSEAL_CRYPTO_KMS_CLIENT_H
#define ETCDSEAL_CRYPTO_KMS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/error.h"

typedef struct kms_client kms_client;

/* status: gRPC status code (0 OK, 4 DEADLINE_EXCEEDED, 14 UNAVAILABLE, ...); detail: the
 * grpc-message text (never NULL); resp: the response message (NULL unless status == 0). */
typedef void (*kms_call_cb)(void *arg, int status, const char *detail, const uint8_t *resp,
                            size_t resp_len);
typedef void (*kms_fn)(void *arg);

/* A one-shot timer; zero-initialise, then schedule. Not to be freed while scheduled. */
typedef struct kms_timer {
    double due; /* monotonic seconds */
    kms_fn fn;
    void *arg;
    struct kms_timer *next;
    bool scheduled;
} kms_timer;

/* Endpoint URL -> gRPC core target ("unix:///@n" -> "unix-abstract:n"). -1 when not unix. */
int kms_endpoint_target(const char *endpoint, char *out, size_t cap);

int kms_client_new(const char *provider_name, const char *const *endpoints, size_t n_endpoints,
                   double timeout_s, kms_client **out, es_error *err);
void kms_client_free(kms_client *c);
/* Starts a unary call of `method` ("/v2.KeyManagementService/Status"); `req` is copied.
 * Returns 0 (cb will run exactly once) or -1 (err set, cb will not run). */
int kms_client_call(kms_client *c, const char *method, const uint8_t *req, size_t len,
                    kms_call_cb cb, void *arg, es_error *err);
/* Blocking wrapper for tools and tests (never on a proxy worker): 0 with resp filled, or -1 with
 * err->code = the gRPC status and the detail. */
int kms_client_call_blocking(kms_client *c, const char *method, const uint8_t *req, size_t len,
                             buf_t *resp, es_error *err);
/* Index of the endpoint calls go to now, and whether any endpoint answered recently. */
size_t kms_client_current_endpoint(const kms_client *c);

/* Runs fn(arg) on the KMS thread soon. Returns 0 or -1 (no memory / thread not started). */
int kms_loop_post(kms_fn fn, void *arg);
/* Schedules t to run fn(arg) on the KMS thread after delay_s (replacing an earlier schedule). */
int kms_timer_schedule(kms_timer *t, double delay_s, kms_fn fn, void *arg);
/* Returns true when t was scheduled and is now cancelled (fn will not run). */
bool kms_timer_cancel(kms_timer *t);
/* Monotonic clock in seconds. */
double kms_now(void);
/* True on the KMS thread. */
bool kms_on_loop_thread(void);

#endif
