/* intercept_range_sort.h - Range requests sorted by VALUE over encrypted keys.
 *
 * etcd would order ciphertext. When a RangeRequest has sort_target VALUE and its range may hold
 * protected keys (intercept_range_protected), the proxy orders the decrypted kvs itself, like
 * etcd's applier: sort_order NONE means ASCEND for non-KEY targets; values compare as bytes (Go
 * bytes.Compare); ties (equal values) keep key order ascending in both directions. Plain requests
 * pass and the response is sorted (the plan travels in ctx->stream_state, a malloc'd
 * range_sort_state freed by range_sort_state_free, the Range method's free_state). keys_only
 * requests get no values from etcd: the proxy fetches them asynchronously (range_sort_fetch_start:
 * the same Range without keys_only and sort), decrypts, sorts, clears the values and answers the
 * client with etcd's count/more/header. A `limit` (etcd sorts everything, then truncates) is
 * refused with FAILED_PRECONDITION saying why, and so is any such range inside a Txn (no async
 * path there); count_only answers carry no kvs and pass. A KMS key not cached yet: its fetch is
 * started and the call ends UNAVAILABLE (retry). Runs on the worker thread.
 */
#ifndef ETCDSEAL_PROXY_INTERCEPT_RANGE_SORT_H
#define ETCDSEAL_PROXY_INTERCEPT_RANGE_SORT_H

#include <stdbool.h>
#include <stddef.h>

#include "base/buf.h"
#include "base/error.h"
#include "etcdserverpb/rpc.pb-c.h"
#include "mvccpb/kv.pb-c.h"
#include "proxy/transform.h"

typedef struct range_sort_state {
    bool descend;
    bool clear_values; /* keys_only answer built from a fetch: values emptied after the sort */
} range_sort_state;

enum range_sort_plan_result {
    RANGE_SORT_PASS = 0,     /* etcd's answer needs no re-sorting */
    RANGE_SORT_RESPONSE = 1, /* the proxy sorts the response (*descend set) */
    RANGE_SORT_FETCH = 2,    /* keys_only: the proxy fetches the values (*descend set) */
};

/* RANGE_SORT_* or -1: refused (err: gRPC 9 FAILED_PRECONDITION). `in_txn` selects the Txn
 * wording and refuses RANGE_SORT_RESPONSE/FETCH too. */
int range_sort_plan(const struct policy_encryption *policy, const Etcdserverpb__RangeRequest *r,
                    bool in_txn, bool *descend, es_error *err);

/* Sorts kvs by value (ascending or descending), ties by key ascending; temporary memory from
 * intercept_alloc. Returns 1 (order changed), 0 (unchanged) or -1 (out of memory). */
int range_sort_kvs(Mvccpb__KeyValue **kvs, size_t n, bool descend);

void range_sort_state_free(void *state);

/* ---- keys_only (RANGE_SORT_FETCH) ----
 * Starts the fetch for the client's encoded RangeRequest `msg`: TRANSFORM_PENDING (the call is
 * answered later through ctx->async), or -1 with err (no ctx->async: FAILED_PRECONDITION). */
int range_sort_fetch_start(transform_ctx *ctx, const uint8_t *msg, size_t len, es_error *err);
/* The two steps, exposed for tests. Appends to out the fetch request (the client's request with
 * keys_only, sort_order and sort_target cleared); *descend from the client's request. */
int range_sort_fetch_request(const uint8_t *msg, size_t len, buf_t *out, bool *descend,
                             es_error *err);
/* Appends to out the client's keys_only answer built from etcd's answer `msg` to the fetch:
 * values decrypted by intercept_kv_range_response (a copy of `base` without async), sorted,
 * then emptied. KMS wait: prefetch started, err code GRPC_UNAVAILABLE. */
int range_sort_keys_only_answer(const transform_ctx *base, bool descend, const uint8_t *msg,
                                size_t len, buf_t *out, es_error *err);

#endif
