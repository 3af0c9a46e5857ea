/* intercept_range_sort.c - plan and perform the proxy-side sort of Range results by VALUE.
 *
 * The sort is a bottom-up merge sort over the KeyValue pointer array with a total order (value,
 * then key), so the result does not depend on the order etcd returned (etcd sorted ciphertext).
 */
#include "proxy/intercept_range_sort.h"
#include "proxy/grpc_wire.h"

#include <stdlib.h>
#include <string.h>

#include "proxy/intercept_values.h"


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
        return 0;
    if (!intercept_range_protected(policy, r->key.data, r->key.len, r->range_end.data,
                                   r->range_end.len))
        return 0;
    char shown[INTERCEPT_KEY_SHOWN_MAX];
    intercept_format_key(shown, sizeof shown, r->key.data, r->key.len);
    if (in_txn)
        return es_error_set(err, GRPC_FAILED_PRECONDITION,
                            "etcdseal: Range sorted by VALUE inside a Txn over encrypted keys "
                            "(key \"%s\") cannot be evaluated: etcd would order ciphertext; sort "
                            "by another target or use a plain Range",
                            shown);
    if (r->keys_only)
        return es_error_set(err, GRPC_FAILED_PRECONDITION,
                            "etcdseal: Range sorted by VALUE with keys_only over encrypted keys "
                            "(key \"%s\") cannot be evaluated: etcd would order ciphertext and "
                            "the proxy gets no values to sort; drop keys_only or sort by another "
                            "target",
                            shown);
    if (r->limit > 0)
        return es_error_set(err, GRPC_FAILED_PRECONDITION,
                            "etcdseal: Range sorted by VALUE with a limit over encrypted keys "
                            "(key \"%s\") cannot be evaluated: etcd would order ciphertext before "
                            "applying the limit; drop the limit (the proxy then sorts the "
                            "plaintext) or sort by another target",
                            shown);
    *descend = r->sort_order == ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND;
    return 1;
}

void range_sort_state_free(void *state)
{
    free(state);
}
