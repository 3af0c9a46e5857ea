/* transform.h - the contract between the HTTP/2 relay and the per-service message interceptors.
 *
 * The relay reassembles each complete gRPC message (the 5-byte length prefix stripped, compressed
 * flag already refused) of a method whose table entry names a transformer, and calls it once per
 * message and direction. The transformer writes the message to forward into `out` (it may copy
 * `msg` unchanged) and returns 0, or returns -1 with err->code = a gRPC status code (e.g. 13
 * INTERNAL) and err->msg naming the key/reason: the relay then ends the call with that status.
 * Transformers run on the worker thread that owns the stream; they must not block.
 * `stream_state` is a per-stream slot (NULL at start) a transformer may use to carry request
 * facts to the response side; the relay calls `free_state` on it when the stream ends.
 */
#ifndef ETCDSEAL_PROXY_TRANSFORM_H
#define ETCDSEAL_PROXY_TRANSFORM_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/error.h"

enum transform_dir { TRANSFORM_REQUEST = 0, TRANSFORM_RESPONSE = 1 };

struct policy_encryption; /* src/policy: key -> chain; NULL = no encryption configured */

typedef struct transform_ctx {
    enum transform_dir dir;
    const char *method;                /* full :path, e.g. "/etcdserverpb.KV/Put" */
    struct policy_encryption *policy;  /* read-only, may be NULL */
    const char *const *advertise_urls; /* --advertise-client-url values (MemberList rewrite) */
    size_t n_advertise_urls;
    void **stream_state;               /* per-stream slot, see above */
    unsigned worker_id;
    struct transform_async *async; /* non-NULL where a transformer may go asynchronous */
    /* A transformer that must wait for a KMS result arms the wait itself (crypto_chain_await
     * with ready_fn/ready_arg as the callback) and returns -1 with err->code =
     * TRANSFORM_WOULD_BLOCK; the relay parks the stream's direction and calls the transformer
     * again with the same message once ready_fn has run (any thread). NULL: not available. */
    void (*ready_fn)(void *arg);
    void *ready_arg;
} transform_ctx;

#define TRANSFORM_WOULD_BLOCK 1000 /* es_error.code, see ready_fn */

/* ---- asynchronous completion (implemented by the relay) ----
 * A transform_async handle stays valid until exactly one of forward/respond/fail is called; if
 * the client goes away meanwhile, those calls do nothing but release the handle. */
typedef struct transform_async transform_async;
/* Result of an internal unary call: status is the gRPC status (0 = OK); msg/len the response
 * message (NULL on error); status_msg the grpc-message (may be NULL). */
typedef void (*transform_call_cb)(void *arg, int status, const char *status_msg,
                                  const uint8_t *msg, size_t len);
/* Sends a unary call of `path` with the encoded request to etcd on behalf of the client call.
 * The callback runs later on the same worker thread (also when the client has gone away, with
 * status CANCELLED). Returns 0 or -1. */
int transform_async_call(transform_async *a, const char *path, const uint8_t *req, size_t len,
                         transform_call_cb cb, void *arg);
/* Answers the client locally with one response message and grpc-status 0. */
void transform_async_respond(transform_async *a, const uint8_t *msg, size_t len);
/* Ends the client call with a status. */
void transform_async_fail(transform_async *a, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* True when the client call is gone (the transformer should stop and release). */
int transform_async_cancelled(const transform_async *a);
/* Per-worker settings the async code needs. */
const transform_ctx *transform_async_ctx(const transform_async *a);

/* Returns 0 (out holds the message to forward), -1 (err: end the call), or TRANSFORM_PENDING:
 * the transformer took the call over asynchronously through ctx->async (request direction of
 * unary methods only) and will finish it with one of the transform_async_* calls below. */
#define TRANSFORM_PENDING 1
typedef int (*transform_fn)(transform_ctx *ctx, const uint8_t *msg, size_t len, buf_t *out,
                            es_error *err);
typedef void (*transform_free_state_fn)(void *state);

#endif
