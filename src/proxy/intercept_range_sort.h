/* intercept_range_sort.h - Range requests sorted by VALUE over encrypted keys.
 *
 * etcd would order ciphertext. When a RangeRequest has sort_target VALUE and its range may hold
 * protected keys (intercept_range_protected), the proxy sorts the decrypted kvs of the response
 * itself, like etcd's applier: sort_order NONE means ASCEND for non-KEY targets; values compare
 * as bytes (Go bytes.Compare); ties (equal values) keep key order ascending in both directions.
 * A `limit` (etcd sorts everything, then truncates: the proxy would need every kv) and
 * `keys_only` (no values reach the proxy) are refused with FAILED_PRECONDITION saying why;
 * count_only answers carry no kvs and pass. Inside a Txn such a range is refused as well.
 * The plan is made on the request and carried to the response in ctx->stream_state (a
 * malloc'd range_sort_state freed by range_sort_state_free, the Range method's free_state).
 */
#ifndef ETCDSEAL_PROXY_INTERCEPT_RANGE_SORT_H
#define ETCDSEAL_PROXY_INTERCEPT_RANGE_SORT_H

#include <stdbool.h>
#include <stddef.h>

#include "base/error.h"
#include "etcdserverpb/rpc.pb-c.h"
#include "mvccpb/kv.pb-c.h"
#include "proxy/transform.h"

typedef struct range_sort_state {
    bool descend;
} range_sort_state;

/* 0: etcd's answer needs no re-sorting; 1: the proxy sorts (*descend set); -1: refused (err:
 * gRPC 9 FAILED_PRECONDITION). `in_txn` selects the Txn wording and refuses case 1 too. */
int range_sort_plan(const struct policy_encryption *policy, const Etcdserverpb__RangeRequest *r,
                    bool in_txn, bool *descend, es_error *err);

/* Sorts kvs by value (ascending or descending), ties by key ascending; temporary memory from
 * intercept_alloc. Returns 1 (order changed), 0 (unchanged) or -1 (out of memory). */
int range_sort_kvs(Mvccpb__KeyValue **kvs, size_t n, bool descend);

void range_sort_state_free(void *state);

#endif
