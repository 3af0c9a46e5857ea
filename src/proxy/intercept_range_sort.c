/* intercept_range_sort.c - plan and perform the proxy-side sort of Range results by VALUE.
 *
 * The sort is a bottom-up merge sort over the KeyValue pointer array with a total order (value,
 * then key), so the result does not depend on the order etcd returned (etcd sorted ciphertext).
 * keys_only requests: one internal Range (the client's, with values and without sort) through
 * ctx->async; its answer goes through the regular Range response transformer with a plan that
 * sorts and then empties the values, so plaintext never leaves the decode arena.
 */
#include "proxy/intercept_range_sort.h"
#include "proxy/grpc_wire.h"

#include <stdlib.h>
#include <string.h>

#include "proxy/intercept_kv.h"
#include "proxy/intercept_values.h"

#define PATH_RANGE "/etcdserverpb.KV/Range"

static int bytes_cmp(const ProtobufCBinaryData *a, const ProtobufCBinaryData *b)
{
    size_t n = a->len < b->len ? a->len : b->len;
    int c = n ? memcmp(a->data, b->data, n) : 0;
    if (c)
        return c;
    return a->len < b->len ? -1 : a->len > b->len;
}

static int kv_cmp(const Mvccpb__KeyValue *a, const Mvccpb__KeyValue *b, bool descend)
{
    int c = bytes_cmp(&a->value, &b->value);
    if (c)
        return descend ? -c : c;
    return bytes_cmp(&a->key, &b->key);
}

int range_sort_kvs(Mvccpb__KeyValue **kvs, size_t n, bool descend)
{
    if (n < 2)
        return 0;
    bool sorted = true;
    for (size_t i = 1; i < n && sorted; i++)
        sorted = kv_cmp(kvs[i - 1], kvs[i], descend) <= 0;
    if (sorted)
        return 0;
    if (n > SIZE_MAX / sizeof(*kvs))
        return -1;
    Mvccpb__KeyValue **tmp = intercept_alloc(n * sizeof(*kvs));
    if (!tmp)
        return -1;
    Mvccpb__KeyValue **src = kvs, **dst = tmp;
    for (size_t width = 1; width < n; width *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * width) {
            size_t mid = lo + width < n ? lo + width : n;
            size_t hi = lo + 2 * width < n ? lo + 2 * width : n;
            size_t i = lo, j = mid, o = lo;
            while (i < mid && j < hi)
                dst[o++] = kv_cmp(src[j], src[i], descend) < 0 ? src[j++] : src[i++];
            while (i < mid)
                dst[o++] = src[i++];
            while (j < hi)
                dst[o++] = src[j++];
        }
        Mvccpb__KeyValue **t = src;
        src = dst;
        dst = t;
        if (width > SIZE_MAX / 4)
            break;
    }
    if (src != kvs)
        memcpy(kvs, src, n * sizeof(*kvs));
    return 1;
}

int range_sort_plan(const struct policy_encryption *policy, const Etcdserverpb__RangeRequest *r,
                    bool in_txn, bool *descend, es_error *err)
{
    /* etcd leaves an unknown sort_order unsorted (key order): nothing to redo then */
    if (r->sort_target != ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VALUE || r->count_only ||
        (unsigned)r->sort_order > ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND)
        return RANGE_SORT_PASS;
    if (!intercept_range_protected(policy, r->key.data, r->key.len, r->range_end.data,
                                   r->range_end.len))
        return RANGE_SORT_PASS;
    char shown[INTERCEPT_KEY_SHOWN_MAX];
    intercept_format_key(shown, sizeof shown, r->key.data, r->key.len);
    if (in_txn)
        return es_error_set(err, GRPC_FAILED_PRECONDITION,
                            "etcdseal: Range sorted by VALUE inside a Txn over encrypted keys "
                            "(key \"%s\") cannot be evaluated: etcd would order ciphertext; sort "
                            "by another target or use a plain Range",
                            shown);
    if (r->limit > 0)
        return es_error_set(err, GRPC_FAILED_PRECONDITION,
                            "etcdseal: Range sorted by VALUE with a limit over encrypted keys "
                            "(key \"%s\") cannot be evaluated: etcd would order ciphertext before "
                            "applying the limit; drop the limit (the proxy then sorts the "
                            "plaintext) or sort by another target",
                            shown);
    *descend = r->sort_order == ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND;
    return r->keys_only ? RANGE_SORT_FETCH : RANGE_SORT_RESPONSE;
}

void range_sort_state_free(void *state)
{
    free(state);
}

/* ---------------------------------------------------------------- keys_only: fetch the values */

typedef struct fetch_job {
    transform_async *async;
    bool descend;
} fetch_job;

int range_sort_fetch_request(const uint8_t *msg, size_t len, buf_t *out, bool *descend,
                             es_error *err)
{
    static const uint8_t empty[1];
    Etcdserverpb__RangeRequest *r =
        etcdserverpb__range_request__unpack(NULL, len, msg ? msg : empty);
    if (!r)
        return es_error_set(err, GRPC_INVALID_ARGUMENT,
                            "%s: cannot decode RangeRequest (%zu bytes)", PATH_RANGE, len);
    *descend = r->sort_order == ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND;
    /* etcd would sort ciphertext: no sort at all (key order), the proxy sorts the plaintext */
    r->keys_only = 0;
    r->sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__NONE;
    r->sort_target = ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__KEY;
    size_t n = etcdserverpb__range_request__get_packed_size(r);
    int rc = buf_reserve(out, n);
    if (rc == 0)
        out->len += etcdserverpb__range_request__pack(r, out->data + out->len);
    etcdserverpb__range_request__free_unpacked(r, NULL);
    if (rc != 0)
        return es_error_set(err, GRPC_RESOURCE_EXHAUSTED, "%s: out of memory", PATH_RANGE);
    return 0;
}

static void kms_prefetch_done(void *arg)
{
    (void)arg; /* the crypto layer caches the result; a retried call finds it */
}

int range_sort_keys_only_answer(const transform_ctx *base, bool descend, const uint8_t *msg,
                                size_t len, buf_t *out, es_error *err)
{
    range_sort_state plan = {.descend = descend, .clear_values = true};
    void *state = &plan;
    transform_ctx ctx = *base;
    ctx.dir = TRANSFORM_RESPONSE;
    ctx.method = PATH_RANGE;
    ctx.stream_state = &state; /* read only by the response walker, never freed */
    ctx.async = NULL;
    /* no parking here: a KMS wait starts the fetch and the call ends UNAVAILABLE */
    ctx.ready_fn = kms_prefetch_done;
    ctx.ready_arg = NULL;
    if (intercept_kv_range_response(&ctx, msg, len, out, err) == 0)
        return 0;
    if (err->code == TRANSFORM_WOULD_BLOCK)
        return es_error_set(err, GRPC_UNAVAILABLE,
                            "etcdseal: Range sorted by VALUE with keys_only: the KMS key of a "
                            "value in the range is being fetched; retry");
    return -1;
}

static void on_fetch_done(void *arg, int status, const char *status_msg, const uint8_t *msg,
                          size_t len)
{
    fetch_job *j = arg;
    if (status != GRPC_OK) {
        /* etcd's own error (compacted revision, permission...) reaches the client unchanged */
        transform_async_fail(j->async, status, "%s", status_msg ? status_msg : "");
    } else if (transform_async_cancelled(j->async)) {
        transform_async_fail(j->async, GRPC_CANCELLED, "etcdseal: client went away");
    } else {
        buf_t out = BUF_INIT;
        es_error err = {0};
        if (range_sort_keys_only_answer(transform_async_ctx(j->async), j->descend, msg, len, &out,
                                        &err) == 0)
            transform_async_respond(j->async, out.data, out.len);
        else
            transform_async_fail(
                j->async, err.code > 0 && err.code < GRPC_STATUS_COUNT ? err.code : GRPC_INTERNAL,
                "%s", err.msg);
        buf_free(&out); /* keys, revisions, no values */
    }
    free(j);
}

/* Where no internal call can be made (a caller without ctx->async): the old refusal. */
static int refuse_no_async(const uint8_t *msg, size_t len, es_error *err)
{
    static const uint8_t empty[1];
    Etcdserverpb__RangeRequest *r =
        etcdserverpb__range_request__unpack(NULL, len, msg ? msg : empty);
    char shown[INTERCEPT_KEY_SHOWN_MAX] = "";
    if (r)
        intercept_format_key(shown, sizeof shown, r->key.data, r->key.len);
    etcdserverpb__range_request__free_unpacked(r, NULL);
    return es_error_set(err, GRPC_FAILED_PRECONDITION,
                        "etcdseal: Range sorted by VALUE with keys_only over encrypted keys "
                        "(key \"%s\") cannot be evaluated here: etcd would order ciphertext and "
                        "the proxy cannot fetch the values; drop keys_only or sort by another "
                        "target",
                        shown);
}

int range_sort_fetch_start(transform_ctx *ctx, const uint8_t *msg, size_t len, es_error *err)
{
    if (!ctx->async)
        return refuse_no_async(msg, len, err);
    fetch_job *j = calloc(1, sizeof *j);
    if (!j)
        return es_error_set(err, GRPC_RESOURCE_EXHAUSTED, "%s: out of memory", PATH_RANGE);
    j->async = ctx->async;
    buf_t req = BUF_INIT;
    if (range_sort_fetch_request(msg, len, &req, &j->descend, err) != 0) {
        buf_free(&req);
        free(j);
        return -1;
    }
    int rc = transform_async_call(j->async, PATH_RANGE, req.data, req.len, on_fetch_done, j);
    buf_free(&req);
    if (rc != 0) {
        free(j);
        return es_error_set(err, GRPC_UNAVAILABLE,
                            "etcdseal: cannot send the Range that fetches values to sort");
    }
    return TRANSFORM_PENDING;
}
