/* intercept_values.h - what every value-carrying interceptor shares: the ONE per-value hook, the
 * per-thread decode arena, and the decode -> walk -> re-encode driver.
 *
 * The production hook maps each value's key to its chain (ctx->policy; NULL = encrypt nothing):
 * request sites (Put, Campaign, Proclaim) encrypt with the chain's first provider, AAD = the key
 * etcd stores the value under; response sites decrypt with the kv's own key. Keys no rule covers
 * pass unchanged, but reading "k8s:enc:" data under one fails (kube's identity check). EMPTY
 * stored values are never transformed: keys_only answers, DELETE events and server-side writes
 * (v3lock keys) are empty and read as empty under protected prefixes too (nothing to protect).
 * Failures: grpc-status 13 naming the key (intercept_format_key) and the reason, never the value.
 * Counted in apiserver_storage_transformation_{operations_total,duration_seconds} (kube's names
 * and labels) and etcdseal_stale_reads_total. Decoding uses a per-thread bump arena wiped after
 * every message; unchanged messages are forwarded as they came, changed ones re-encoded.
 * intercept_set_value_hook is for tests/fuzzing only: call before any worker thread runs.
 */
#ifndef ETCDSEAL_PROXY_INTERCEPT_VALUES_H
#define ETCDSEAL_PROXY_INTERCEPT_VALUES_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "base/metrics.h"
#include "mvccpb/kv.pb-c.h"
#include "proxy/transform.h"

/* Deepest Txn nesting accepted (RequestOp.request_txn / ResponseOp.response_txn levels). */
#define INTERCEPT_MAX_TXN_DEPTH 64

/* Where a value was found: lets the hook treat writes, compares and reads differently. */
enum intercept_site {
    INTERCEPT_SITE_PUT_VALUE = 0,  /* request: PutRequest.value (top level or in a Txn) */
    INTERCEPT_SITE_COMPARE_VALUE,  /* request: Txn Compare.value (target VALUE) */
    INTERCEPT_SITE_ELECTION_VALUE, /* request: Campaign/Proclaim value */
    INTERCEPT_SITE_KV,             /* response: RangeResponse.kvs[] (top level or in a Txn) */
    INTERCEPT_SITE_PREV_KV,        /* response: PutResponse.prev_kv, DeleteRangeResponse.prev_kvs */
    INTERCEPT_SITE_EVENT_KV,       /* response: WatchResponse.events[].kv (PUT events) */
    INTERCEPT_SITE_EVENT_PREV_KV,  /* response: WatchResponse.events[].prev_kv */
    INTERCEPT_SITE_ELECTION_KV,    /* response: LeaderResponse.kv (Leader, Observe) */
    INTERCEPT_SITE_COUNT
};

const char *intercept_site_name(enum intercept_site site);

/* key = the etcd key the value is (or will be) stored under. */
typedef int (*intercept_value_hook_fn)(transform_ctx *ctx, enum intercept_site site,
                                       const ProtobufCBinaryData *key, ProtobufCBinaryData *value,
                                       es_error *err);

/* Longest escaped key (with NUL) that error messages show; longer keys end in "...". */
#define INTERCEPT_KEY_SHOWN_MAX 200

/* Writes `key` for a message: printable ASCII as is, '"' and '\\' backslash-escaped, other bytes
 * as \xNN; truncated with "..." to fit `cap` (NUL included). Returns the length written. */
size_t intercept_format_key(char *out, size_t cap, const uint8_t *key, size_t len);

/* 1 when [key, range_end) may contain a key some rule protects (range_end empty: just `key`;
 * "\0": every key >= key), 0 when it provably contains none or policy is NULL. Conservative:
 * every key under the storage prefix counts as protected when any resource rule exists. */
int intercept_range_protected(const struct policy_encryption *policy, const uint8_t *key,
                              size_t key_len, const uint8_t *range_end, size_t range_end_len);

/* Tests/fuzzing only: replaces the production hook (NULL restores it). */
void intercept_set_value_hook(intercept_value_hook_fn fn);

/* Calls the hook for one value; on 1 increments *changed. Returns 0 or -1 (err filled). */
int intercept_value(transform_ctx *ctx, enum intercept_site site, const ProtobufCBinaryData *key,
                    ProtobufCBinaryData *value, unsigned *changed, es_error *err);

/* Visits kv->value (skipped when NULL or the value is empty: keys_only, DELETE events). */
int intercept_walk_kv(transform_ctx *ctx, enum intercept_site site, Mvccpb__KeyValue *kv,
                      unsigned *changed, es_error *err);

/* Memory from the calling thread's arena, valid until the current message is done. NULL on
 * allocation failure. */
void *intercept_alloc(size_t n);

/* Arena statistics of the calling thread (tests, benchmarks). */
typedef struct intercept_arena_stats {
    uint64_t chunk_mallocs; /* chunks ever malloc'd by this thread's arena */
    size_t retained;        /* bytes kept between messages */
} intercept_arena_stats;
void intercept_arena_get_stats(intercept_arena_stats *st);
void intercept_thread_release(void);

/* One (method, direction) counter of etcdseal_transformer_messages_total, looked up once. */
typedef struct intercept_stat {
    const char *method; /* short name, e.g. "Put" */
    enum transform_dir dir;
    _Atomic(metrics_counter *) counter;
} intercept_stat;
#define INTERCEPT_STAT(name, dir)                                                                  \
    {                                                                                              \
        name, dir, NULL                                                                            \
    }
/* Adds one to the stat's counter (intercept_run does this itself). */
void intercept_stat_count(intercept_stat *stat);

typedef int (*intercept_walk_fn)(transform_ctx *ctx, ProtobufCMessage *msg, unsigned *changed,
                                 es_error *err);
/* Optional check of the raw bytes before decoding (e.g. Txn nesting depth); 0 or -1 + err. */
typedef int (*intercept_check_fn)(transform_ctx *ctx, const uint8_t *msg, size_t len,
                                  es_error *err);

/* The whole transform for one message: counts it, unpacks `msg` as `desc` into the arena,
 * runs `walk`, writes the original bytes (nothing changed) or the re-encoded message to out,
 * resets the arena. `check` may be NULL. Decode failure: err code 3 (request) or 13 (response)
 * naming the method. */
int intercept_run(transform_ctx *ctx, intercept_stat *stat, const ProtobufCMessageDescriptor *desc,
                  intercept_check_fn check, intercept_walk_fn walk, const uint8_t *msg, size_t len,
                  buf_t *out, es_error *err);

#endif
