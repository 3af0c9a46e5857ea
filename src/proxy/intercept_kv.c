/* intercept_kv.c - walks etcdserverpb.KV messages to every value-bearing field (see header).
 *
 * The walkers mirror the message shapes: a Txn request is compares + two lists of RequestOp, a
 * RequestOp is a oneof whose put and txn arms carry values; a Txn response is a list of
 * ResponseOp whose range/put/delete/txn arms carry KeyValues. Before a Txn is decoded, a cheap
 * scan of the wire bytes bounds its nesting depth, because protobuf-c's decoder recurses once per
 * level and a 1.5 MiB request could otherwise nest hundreds of thousands of levels.
 */
#include "proxy/intercept_kv.h"
#include "proxy/grpc_wire.h"

#include <stdbool.h>
#include <stdlib.h>

#include "etcdserverpb/rpc.pb-c.h"
#include "policy/encryption.h"
#include "proxy/intercept_range_sort.h"
#include "proxy/intercept_values.h"
#include "proxy/txn_compare.h"

/* err->code of the walk that found a VALUE compare for txn_compare (never leaves this file) */
#define TXN_NEEDS_EMULATION (TRANSFORM_WOULD_BLOCK + 1)
/* err->code of the Range walk that found a keys_only sort by VALUE (never leaves this file) */
#define RANGE_NEEDS_FETCH (TRANSFORM_WOULD_BLOCK + 2)

/* ---------------------------------------------------------------- Txn depth scan */

/* Reads one varint; returns bytes used or 0 when malformed/truncated. */
static size_t wire_varint(const uint8_t *p, const uint8_t *end, uint64_t *v)
{
    uint64_t x = 0;
    for (size_t i = 0; i < 10 && p + i < end; i++) {
        x |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            *v = x;
            return i + 1;
        }
    }
    return 0;
}

/* Scans a Txn (in_op 0) or an op (in_op 1) in [p, end) at nesting `depth`. Returns the deepest
 * Txn level found, or -1 on malformed bytes or nesting beyond INTERCEPT_MAX_TXN_DEPTH. */
static int wire_txn_depth(const uint8_t *p, const uint8_t *end, int depth, int in_op);

static int wire_scan(const uint8_t *p, const uint8_t *end, int depth, int in_op)
{
    int deepest = depth;
    while (p < end) {
        uint64_t tag, n;
        size_t k = wire_varint(p, end, &tag);
        if (!k)
            return -1;
        p += k;
        uint32_t field = (uint32_t)(tag >> 3);
        switch (tag & 7) {
        case 0:
            if (!(k = wire_varint(p, end, &n)))
                return -1;
            p += k;
            break;
        case 1:
            if (end - p < 8)
                return -1;
            p += 8;
            break;
        case 5:
            if (end - p < 4)
                return -1;
            p += 4;
            break;
        case 2: {
            if (!(k = wire_varint(p, end, &n)))
                return -1;
            p += k;
            if (n > (uint64_t)(end - p))
                return -1;
            int d = depth;
            /* In a Txn: fields 2/3 (requests) or 3 (responses) are ops; in an op, field 4 is
             * a nested Txn. Other fields are skipped unread. */
            if (!in_op && (field == 2 || field == 3))
                d = wire_scan(p, p + n, depth, 1);
            else if (in_op && field == 4)
                d = wire_txn_depth(p, p + n, depth + 1, 0);
            if (d < 0)
                return -1;
            if (d > deepest)
                deepest = d;
            p += n;
            break;
        }
        default:
            return -1; /* groups (3, 4) and reserved wire types: protobuf-c rejects them too */
        }
    }
    return deepest;
}

static int wire_txn_depth(const uint8_t *p, const uint8_t *end, int depth, int in_op)
{
    if (depth > INTERCEPT_MAX_TXN_DEPTH)
        return -1;
    return wire_scan(p, end, depth, in_op);
}

/* TxnRequest ops are fields 2 and 3, TxnResponse ops field 3: scanning 2 in a response is
 * harmless (field 2 is `succeeded`, a varint, never length-delimited in valid input; if it is,
 * protobuf-c rejects the message anyway). */
int intercept_txn_depth(const uint8_t *msg, size_t len)
{
    return len ? wire_txn_depth(msg, msg + len, 1, 0) : 0;
}

static int check_txn_depth(transform_ctx *ctx, const uint8_t *msg, size_t len, es_error *err)
{
    if (len == 0)
        return 0;
    if (wire_txn_depth(msg, msg + len, 1, 0) >= 0)
        return 0;
    int request = ctx->dir == TRANSFORM_REQUEST;
    return es_error_set(err, request ? GRPC_INVALID_ARGUMENT : GRPC_INTERNAL,
                        "%s: malformed Txn %s or nested deeper than %d levels",
                        ctx->method ? ctx->method : "Txn", request ? "request" : "response",
                        INTERCEPT_MAX_TXN_DEPTH);
}

/* ---------------------------------------------------------------- walkers */

static int walk_kvs(transform_ctx *ctx, enum intercept_site site, Mvccpb__KeyValue **kvs, size_t n,
                    unsigned *changed, es_error *err)
{
    for (size_t i = 0; i < n; i++)
        if (intercept_walk_kv(ctx, site, kvs[i], changed, err) != 0)
            return -1;
    return 0;
}

static int walk_put_request(transform_ctx *ctx, Etcdserverpb__PutRequest *r, unsigned *changed,
                            es_error *err)
{
    /* ignore_value keeps the stored value; etcd refuses a value sent with it, but a non-empty
     * one still goes through the hook so nothing is ever forwarded unexamined. */
    if (!r || (r->ignore_value && r->value.len == 0))
        return 0;
    return intercept_value(ctx, INTERCEPT_SITE_PUT_VALUE, &r->key, &r->value, changed, err);
}

/* ---------------------------------------------------------------- Txn policy checks */

/* What etcd cannot evaluate on ciphertext, anywhere in a Txn request: VALUE compares on protected
 * keys (any level, without range_end: *emulate; with range_end: refused) and
 * Range ops sorted by VALUE over protected keys (refused). Runs before any value is encrypted. */
static int txn_check(transform_ctx *ctx, const Etcdserverpb__TxnRequest *t, int depth,
                     bool *emulate, es_error *err)
{
    if (!t || !ctx->policy)
        return 0;
    char shown[INTERCEPT_KEY_SHOWN_MAX], shown_end[INTERCEPT_KEY_SHOWN_MAX];
    for (size_t i = 0; i < t->n_compare; i++) {
        const Etcdserverpb__Compare *c = t->compare[i];
        if (c->target != ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE ||
            !intercept_range_protected(ctx->policy, c->key.data, c->key.len, c->range_end.data,
                                       c->range_end.len))
            continue;
        intercept_format_key(shown, sizeof shown, c->key.data, c->key.len);
        if (c->range_end.len) {
            intercept_format_key(shown_end, sizeof shown_end, c->range_end.data, c->range_end.len);
            return es_error_set(err, GRPC_FAILED_PRECONDITION,
                                "etcdseal: Txn compare on VALUE with range_end over encrypted "
                                "keys cannot be evaluated; compare each key on its own (key "
                                "\"%s\", range_end \"%s\")",
                                shown, shown_end);
        }
        (void)depth; /* nested levels are emulated too: etcd evaluates every level up front */
        *emulate = true;
    }
    for (int branch = 0; branch < 2; branch++) {
        Etcdserverpb__RequestOp **ops = branch ? t->failure : t->success;
        size_t n = branch ? t->n_failure : t->n_success;
        for (size_t i = 0; i < n; i++) {
            const Etcdserverpb__RequestOp *op = ops[i];
            bool descend;
            if (op->request_case == ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE &&
                op->request_range &&
                range_sort_plan(ctx->policy, op->request_range, true, &descend, err) != 0)
                return -1;
            if (op->request_case == ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN &&
                txn_check(ctx, op->request_txn, depth + 1, emulate, err) != 0)
                return -1;
        }
    }
    return 0;
}

static int walk_txn_request(transform_ctx *ctx, Etcdserverpb__TxnRequest *t, int depth,
                            unsigned *changed, es_error *err);

static int walk_request_ops(transform_ctx *ctx, Etcdserverpb__RequestOp **ops, size_t n, int depth,
                            unsigned *changed, es_error *err)
{
    for (size_t i = 0; i < n; i++) {
        Etcdserverpb__RequestOp *op = ops[i];
        int rc = 0;
        if (op->request_case == ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT)
            rc = walk_put_request(ctx, op->request_put, changed, err);
        else if (op->request_case == ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN)
            rc = walk_txn_request(ctx, op->request_txn, depth + 1, changed, err);
        if (rc != 0)
            return -1;
    }
    return 0;
}

static int walk_txn_request(transform_ctx *ctx, Etcdserverpb__TxnRequest *t, int depth,
                            unsigned *changed, es_error *err)
{
    if (!t)
        return 0;
    if (depth > INTERCEPT_MAX_TXN_DEPTH)
        return es_error_set(err, GRPC_INVALID_ARGUMENT, "Txn nested deeper than %d levels",
                            INTERCEPT_MAX_TXN_DEPTH);
    for (size_t i = 0; i < t->n_compare; i++) {
        Etcdserverpb__Compare *c = t->compare[i];
        if (c->target_union_case == ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE &&
            intercept_value(ctx, INTERCEPT_SITE_COMPARE_VALUE, &c->key, &c->value, changed, err) !=
                0)
            return -1;
    }
    if (walk_request_ops(ctx, t->success, t->n_success, depth, changed, err) != 0)
        return -1;
    return walk_request_ops(ctx, t->failure, t->n_failure, depth, changed, err);
}

static int walk_txn_response(transform_ctx *ctx, Etcdserverpb__TxnResponse *t, int depth,
                             unsigned *changed, es_error *err)
{
    if (!t)
        return 0;
    if (depth > INTERCEPT_MAX_TXN_DEPTH)
        return es_error_set(err, GRPC_INTERNAL, "Txn response nested deeper than %d levels",
                            INTERCEPT_MAX_TXN_DEPTH);
    for (size_t i = 0; i < t->n_responses; i++) {
        Etcdserverpb__ResponseOp *op = t->responses[i];
        int rc = 0;
        switch (op->response_case) {
        case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE:
            if (op->response_range)
                rc = walk_kvs(ctx, INTERCEPT_SITE_KV, op->response_range->kvs,
                              op->response_range->n_kvs, changed, err);
            break;
        case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT:
            if (op->response_put)
                rc = intercept_walk_kv(ctx, INTERCEPT_SITE_PREV_KV, op->response_put->prev_kv,
                                       changed, err);
            break;
        case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE:
            if (op->response_delete_range)
                rc = walk_kvs(ctx, INTERCEPT_SITE_PREV_KV, op->response_delete_range->prev_kvs,
                              op->response_delete_range->n_prev_kvs, changed, err);
            break;
        case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_TXN:
            rc = walk_txn_response(ctx, op->response_txn, depth + 1, changed, err);
            break;
        default:
            break;
        }
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- message-level walks */

static int walk_range_response_msg(transform_ctx *ctx, ProtobufCMessage *m, unsigned *changed,
                                   es_error *err)
{
    Etcdserverpb__RangeResponse *r = (Etcdserverpb__RangeResponse *)m;
    if (walk_kvs(ctx, INTERCEPT_SITE_KV, r->kvs, r->n_kvs, changed, err) != 0)
        return -1;
    const range_sort_state *st = ctx->stream_state ? *ctx->stream_state : NULL;
    if (!st)
        return 0;
    int rc = range_sort_kvs(r->kvs, r->n_kvs, st->descend);
    if (rc < 0)
        return es_error_set(err, GRPC_RESOURCE_EXHAUSTED, "Range: out of memory sorting by value");
    *changed += (unsigned)rc;
    if (!st->clear_values)
        return 0;
    /* a keys_only answer built from fetched values: etcd sends keys_only kvs without values */
    for (size_t i = 0; i < r->n_kvs; i++)
        if (r->kvs[i]->value.len) {
            r->kvs[i]->value.len = 0;
            r->kvs[i]->value.data = NULL; /* arena memory, wiped with the arena */
            (*changed)++;
        }
    return 0;
}

/* Forwards the request unchanged; records in stream_state when the response must be sorted, or
 * asks for the values to be fetched (keys_only, see intercept_kv_range_request). */
static int walk_range_request_msg(transform_ctx *ctx, ProtobufCMessage *m, unsigned *changed,
                                  es_error *err)
{
    (void)changed;
    bool descend = false;
    int plan = range_sort_plan(ctx->policy, (Etcdserverpb__RangeRequest *)m, false, &descend, err);
    if (plan == RANGE_SORT_FETCH)
        return es_error_set(err, RANGE_NEEDS_FETCH, "Range keys_only sorted by VALUE");
    if (plan <= 0)
        return plan;
    if (!ctx->stream_state)
        return es_error_set(err, GRPC_INTERNAL, "Range: no stream state for sorting by value");
    range_sort_state *st = *ctx->stream_state;
    if (!st && !(st = malloc(sizeof(*st))))
        return es_error_set(err, GRPC_RESOURCE_EXHAUSTED, "Range: out of memory");
    st->descend = descend;
    st->clear_values = false;
    *ctx->stream_state = st;
    return 0;
}

static int walk_put_request_msg(transform_ctx *ctx, ProtobufCMessage *m, unsigned *changed,
                                es_error *err)
{
    return walk_put_request(ctx, (Etcdserverpb__PutRequest *)m, changed, err);
}

static int walk_put_response_msg(transform_ctx *ctx, ProtobufCMessage *m, unsigned *changed,
                                 es_error *err)
{
    Etcdserverpb__PutResponse *r = (Etcdserverpb__PutResponse *)m;
    return intercept_walk_kv(ctx, INTERCEPT_SITE_PREV_KV, r->prev_kv, changed, err);
}

static int walk_delete_range_response_msg(transform_ctx *ctx, ProtobufCMessage *m,
                                          unsigned *changed, es_error *err)
{
    Etcdserverpb__DeleteRangeResponse *r = (Etcdserverpb__DeleteRangeResponse *)m;
    return walk_kvs(ctx, INTERCEPT_SITE_PREV_KV, r->prev_kvs, r->n_prev_kvs, changed, err);
}

static int walk_txn_request_msg(transform_ctx *ctx, ProtobufCMessage *m, unsigned *changed,
                                es_error *err)
{
    Etcdserverpb__TxnRequest *t = (Etcdserverpb__TxnRequest *)m;
    bool emulate = false;
    if (txn_check(ctx, t, 1, &emulate, err) != 0)
        return -1;
    if (emulate)
        return es_error_set(err, TXN_NEEDS_EMULATION, "Txn compares on VALUE of encrypted keys");
    return walk_txn_request(ctx, t, 1, changed, err);
}

static int walk_txn_response_msg(transform_ctx *ctx, ProtobufCMessage *m, unsigned *changed,
                                 es_error *err)
{
    return walk_txn_response(ctx, (Etcdserverpb__TxnResponse *)m, 1, changed, err);
}

/* ---------------------------------------------------------------- transformers */

static intercept_stat stat_range_req = INTERCEPT_STAT("Range", TRANSFORM_REQUEST);
static intercept_stat stat_range_resp = INTERCEPT_STAT("Range", TRANSFORM_RESPONSE);
static intercept_stat stat_put_req = INTERCEPT_STAT("Put", TRANSFORM_REQUEST);
static intercept_stat stat_put_resp = INTERCEPT_STAT("Put", TRANSFORM_RESPONSE);
static intercept_stat stat_delete_resp = INTERCEPT_STAT("DeleteRange", TRANSFORM_RESPONSE);
static intercept_stat stat_txn_req = INTERCEPT_STAT("Txn", TRANSFORM_REQUEST);
static intercept_stat stat_txn_resp = INTERCEPT_STAT("Txn", TRANSFORM_RESPONSE);

int intercept_kv_range_request(transform_ctx *ctx, const uint8_t *msg, size_t len, buf_t *out,
                               es_error *err)
{
    es_error local = {0};
    if (!err)
        err = &local;
    int rc = intercept_run(ctx, &stat_range_req, &etcdserverpb__range_request__descriptor, NULL,
                           walk_range_request_msg, msg, len, out, err);
    if (rc == 0 || err->code != RANGE_NEEDS_FETCH)
        return rc;
    es_error_clear(err);
    return range_sort_fetch_start(ctx, msg, len, err);
}

int intercept_kv_range_response(transform_ctx *ctx, const uint8_t *msg, size_t len, buf_t *out,
                                es_error *err)
{
    return intercept_run(ctx, &stat_range_resp, &etcdserverpb__range_response__descriptor, NULL,
                         walk_range_response_msg, msg, len, out, err);
}

int intercept_kv_put_request(transform_ctx *ctx, const uint8_t *msg, size_t len, buf_t *out,
                             es_error *err)
{
    return intercept_run(ctx, &stat_put_req, &etcdserverpb__put_request__descriptor, NULL,
                         walk_put_request_msg, msg, len, out, err);
}

int intercept_kv_put_response(transform_ctx *ctx, const uint8_t *msg, size_t len, buf_t *out,
                              es_error *err)
{
    return intercept_run(ctx, &stat_put_resp, &etcdserverpb__put_response__descriptor, NULL,
                         walk_put_response_msg, msg, len, out, err);
}

int intercept_kv_delete_range_response(transform_ctx *ctx, const uint8_t *msg, size_t len,
                                       buf_t *out, es_error *err)
{
    return intercept_run(ctx, &stat_delete_resp, &etcdserverpb__delete_range_response__descriptor,
                         NULL, walk_delete_range_response_msg, msg, len, out, err);
}

int intercept_kv_txn_request(transform_ctx *ctx, const uint8_t *msg, size_t len, buf_t *out,
                             es_error *err)
{
    es_error local = {0};
    if (!err)
        err = &local;
    int rc = intercept_run(ctx, &stat_txn_req, &etcdserverpb__txn_request__descriptor,
                           check_txn_depth, walk_txn_request_msg, msg, len, out, err);
    if (rc == 0 || err->code != TXN_NEEDS_EMULATION)
        return rc;
    es_error_clear(err);
    return txn_compare_start(ctx, msg, len, err);
}

int intercept_kv_txn_response(transform_ctx *ctx, const uint8_t *msg, size_t len, buf_t *out,
                              es_error *err)
{
    return intercept_run(ctx, &stat_txn_resp, &etcdserverpb__txn_response__descriptor,
                         check_txn_depth, walk_txn_response_msg, msg, len, out, err);
}
