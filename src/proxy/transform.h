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
} transform_ctx;

typedef int (*transform_fn)(transform_ctx *ctx, const uint8_t *msg, size_t len, buf_t *out,
                            es_error *err);
typedef void (*transform_free_state_fn)(void *state);

#endif
