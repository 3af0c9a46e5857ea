/* txn_compare.c - Txn compares on VALUE over encrypted keys (see txn_compare.h).
 *
 * Steps, each one internal etcd call on behalf of the client's Txn:
 *  1. read: one Txn of Range ops (one per protected key compared on VALUE): a consistent
 *     snapshot of the keys' values and revisions;
 *  2. decide: decrypt, evaluate the VALUE compares as etcd would (bytes.Compare; a missing key
 *     fails any VALUE compare);
 *  3. write: a Txn guarded by mod_revision == seen (create_revision == 0 when absent) whose
 *     success branch is either the client's Txn without those compares (nested one level) or,
 *     when the VALUE compares failed, the client's failure branch; an empty failure branch
 *     means a guard failed: someone wrote meanwhile, so go back to 1 (bounded).
 * The answer given to the client is built from the committed Txn's response and decrypted by
 * the regular Txn response transformer.
 */
#include "proxy/txn_compare.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "crypto/chain.h"
#include "etcdserverpb/rpc.pb-c.h"
#include "policy/encryption.h"
#include "proxy/grpc_wire.h"
#include "proxy/intercept_kv.h"
#include "proxy/intercept_values.h"

#define PATH_TXN "/etcdserverpb.KV/Txn"

struct guarded_key {
    ProtobufCBinaryData key;
    bool exists;
    int64_t mod_revision;
    buf_t value; /* plaintext (wiped on free) */
};

typedef struct txn_job {
    transform_async *async;
    Etcdserverpb__TxnRequest *req; /* the client's request, plaintext values */
    struct guarded_key *keys;
    size_t n_keys;
    int tries;
    bool local_ok; /* result of the VALUE compares in the current try */
} txn_job;

static void kms_prefetch_done(void *arg)
{
    (void)arg; /* the result is cached by the crypto layer; nothing to do here */
}

static void job_free(txn_job *j)
{
    for (size_t i = 0; i < j->n_keys; i++)
        buf_wipe_free(&j->keys[i].value);
    free(j->keys);
    if (j->req)
        etcdserverpb__txn_request__free_unpacked(j->req, NULL);
    free(j);
}

static void job_fail(txn_job *j, int status, const char *text)
{
    transform_async_fail(j->async, status, "%s", text);
    job_free(j);
}

static const crypto_chain *chain_for(const transform_ctx *ctx, ProtobufCBinaryData key)
{
    return ctx->policy ? policy_encryption_chain_for_key(ctx->policy, key.data, key.len) : NULL;
}

static bool is_protected_value_compare(const transform_ctx *ctx, const Etcdserverpb__Compare *c)
{
    return c->target == ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE && c->range_end.len == 0 &&
           chain_for(ctx, c->key) != NULL;
}

static bool same_key(ProtobufCBinaryData a, ProtobufCBinaryData b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0);
}

static void start_read(txn_job *j);

/* ------------------------------------------------------------------ step 3: write */
static void on_write_done(void *arg, int status, const char *status_msg, const uint8_t *msg,
                          size_t len)
{
    txn_job *j = arg;
    if (status != GRPC_OK) {
        /* etcd's own error (e.g. request too large, permission) goes to the client unchanged */
        transform_async_fail(j->async, status, "%s", status_msg ? status_msg : "");
        job_free(j);
        return;
    }
    Etcdserverpb__TxnResponse *resp = etcdserverpb__txn_response__unpack(NULL, len, msg);
    if (!resp) {
        job_fail(j, GRPC_INTERNAL, "etcdseal: cannot decode etcd's Txn response");
        return;
    }
    if (!resp->succeeded) { /* a guard failed: a concurrent write; read again */
        etcdserverpb__txn_response__free_unpacked(resp, NULL);
        if (j->tries >= TXN_COMPARE_MAX_TRIES) {
            job_fail(j, GRPC_ABORTED,
                     "etcdseal: Txn compare on encrypted VALUE aborted: the compared keys kept "
                     "changing during evaluation (retry the transaction)");
            return;
        }
        start_read(j);
        return;
    }
    /* the client sees what etcd would have answered to its own Txn */
    Etcdserverpb__TxnResponse out = ETCDSERVERPB__TXN_RESPONSE__INIT;
    out.header = resp->header;
    if (j->local_ok) {
        Etcdserverpb__TxnResponse *inner =
            resp->n_responses == 1 && resp->responses[0]->response_case ==
                                          ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_TXN
                ? resp->responses[0]->response_txn
                : NULL;
        if (!inner) {
            etcdserverpb__txn_response__free_unpacked(resp, NULL);
            job_fail(j, GRPC_INTERNAL, "etcdseal: unexpected Txn response shape");
            return;
        }
        out.succeeded = inner->succeeded;
        out.n_responses = inner->n_responses;
        out.responses = inner->responses;
    } else {
        out.succeeded = 0;
        out.n_responses = resp->n_responses;
        out.responses = resp->responses;
    }
    size_t n = etcdserverpb__txn_response__get_packed_size(&out);
    uint8_t *packed = malloc(n ? n : 1);
    if (!packed) {
        etcdserverpb__txn_response__free_unpacked(resp, NULL);
        job_fail(j, GRPC_RESOURCE_EXHAUSTED, "etcdseal: out of memory");
        return;
    }
    etcdserverpb__txn_response__pack(&out, packed);
    etcdserverpb__txn_response__free_unpacked(resp, NULL);
    /* decrypt every value in it with the regular response transformer */
    transform_ctx ctx = *transform_async_ctx(j->async);
    void *state = NULL;
    ctx.dir = TRANSFORM_RESPONSE;
    ctx.async = NULL;
    ctx.ready_fn = NULL; /* no parking here: a KMS wait becomes UNAVAILABLE */
    ctx.stream_state = &state;
    buf_t dec = BUF_INIT;
    es_error err = {0};
    if (intercept_kv_txn_response(&ctx, packed, n, &dec, &err) != 0) {
        free(packed);
        buf_wipe_free(&dec);
        job_fail(j, err.code ? err.code : GRPC_INTERNAL, err.msg);
        return;
    }
    free(packed);
    transform_async_respond(j->async, dec.data, dec.len);
    buf_wipe_free(&dec);
    job_free(j);
}

static bool evaluate_value_compares(txn_job *j, const transform_ctx *ctx)
{
    for (size_t i = 0; i < j->req->n_compare; i++) {
        const Etcdserverpb__Compare *c = j->req->compare[i];
        if (!is_protected_value_compare(ctx, c))
            continue;
        const struct guarded_key *g = NULL;
        for (size_t k = 0; k < j->n_keys; k++)
            if (same_key(j->keys[k].key, c->key))
                g = &j->keys[k];
        if (!g || !g->exists)
            return false; /* etcd: a VALUE compare on a missing key always fails */
        int r = 0;
        if (c->target_union_case == ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE) {
            size_t a = g->value.len, b = c->value.len;
            int m = memcmp(g->value.data ? g->value.data : (uint8_t *)"", c->value.data ? c->value.data : (uint8_t *)"", a < b ? a : b);
            r = m != 0 ? m : (a < b ? -1 : (a > b ? 1 : 0));
        }
        bool ok;
        switch (c->result) {
        case ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL:
            ok = r == 0;
            break;
        case ETCDSERVERPB__COMPARE__COMPARE_RESULT__NOT_EQUAL:
            ok = r != 0;
            break;
        case ETCDSERVERPB__COMPARE__COMPARE_RESULT__GREATER:
            ok = r > 0;
            break;
        case ETCDSERVERPB__COMPARE__COMPARE_RESULT__LESS:
            ok = r < 0;
            break;
        default:
            ok = false;
        }
        if (!ok)
            return false;
    }
    return true;
}

static void send_guarded(txn_job *j)
{
    const transform_ctx *actx = transform_async_ctx(j->async);
    j->local_ok = evaluate_value_compares(j, actx);
    size_t ng = j->n_keys;
    Etcdserverpb__Compare *guards = calloc(ng, sizeof *guards);
    Etcdserverpb__Compare **gp = calloc(ng, sizeof *gp);
    Etcdserverpb__Compare **rest = calloc(j->req->n_compare + 1, sizeof *rest);
    if (!guards || !gp || !rest) {
        free(guards);
        free(gp);
        free(rest);
        job_fail(j, GRPC_RESOURCE_EXHAUSTED, "etcdseal: out of memory");
        return;
    }
    for (size_t i = 0; i < ng; i++) {
        Etcdserverpb__Compare init = ETCDSERVERPB__COMPARE__INIT;
        guards[i] = init;
        guards[i].key = j->keys[i].key;
        guards[i].result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
        if (j->keys[i].exists) {
            guards[i].target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
            guards[i].target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
            guards[i].mod_revision = j->keys[i].mod_revision;
        } else {
            guards[i].target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE;
            guards[i].target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
            guards[i].create_revision = 0;
        }
        gp[i] = &guards[i];
    }
    size_t nrest = 0;
    for (size_t i = 0; i < j->req->n_compare; i++)
        if (!is_protected_value_compare(actx, j->req->compare[i]))
            rest[nrest++] = j->req->compare[i];
    Etcdserverpb__TxnRequest inner = ETCDSERVERPB__TXN_REQUEST__INIT;
    inner.n_compare = nrest;
    inner.compare = rest;
    inner.n_success = j->req->n_success;
    inner.success = j->req->success;
    inner.n_failure = j->req->n_failure;
    inner.failure = j->req->failure;
    Etcdserverpb__RequestOp inner_op = ETCDSERVERPB__REQUEST_OP__INIT;
    inner_op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN;
    inner_op.request_txn = &inner;
    Etcdserverpb__RequestOp *inner_ops[1] = {&inner_op};
    Etcdserverpb__TxnRequest outer = ETCDSERVERPB__TXN_REQUEST__INIT;
    outer.n_compare = ng;
    outer.compare = gp;
    if (j->local_ok) {
        outer.n_success = 1;
        outer.success = inner_ops;
    } else {
        outer.n_success = j->req->n_failure;
        outer.success = j->req->failure;
    }
    size_t n = etcdserverpb__txn_request__get_packed_size(&outer);
    uint8_t *packed = malloc(n ? n : 1);
    if (packed)
        etcdserverpb__txn_request__pack(&outer, packed);
    free(guards);
    free(gp);
    free(rest);
    if (!packed) {
        job_fail(j, GRPC_RESOURCE_EXHAUSTED, "etcdseal: out of memory");
        return;
    }
    /* encrypt the Puts of the branches with the regular request transformer */
    transform_ctx ctx = *actx;
    void *state = NULL;
    ctx.async = NULL;
    ctx.ready_fn = NULL; /* no parking here: a KMS wait becomes UNAVAILABLE */
    ctx.dir = TRANSFORM_REQUEST;
    ctx.stream_state = &state;
    buf_t enc = BUF_INIT;
    es_error err = {0};
    int rc = intercept_kv_txn_request(&ctx, packed, n, &enc, &err);
    free(packed);
    if (rc != 0) {
        buf_free(&enc);
        job_fail(j, err.code ? err.code : GRPC_INTERNAL, err.msg);
        return;
    }
    j->tries++;
    if (transform_async_call(j->async, PATH_TXN, enc.data, enc.len, on_write_done, j) != 0) {
        buf_free(&enc);
        job_fail(j, GRPC_UNAVAILABLE, "etcdseal: cannot send the guarded Txn");
        return;
    }
    buf_free(&enc);
}

/* ------------------------------------------------------------------ step 1-2: read */
static void on_read_done(void *arg, int status, const char *status_msg, const uint8_t *msg,
                         size_t len)
{
    txn_job *j = arg;
    if (status != GRPC_OK) {
        transform_async_fail(j->async, status, "%s", status_msg ? status_msg : "");
        job_free(j);
        return;
    }
    Etcdserverpb__TxnResponse *resp = etcdserverpb__txn_response__unpack(NULL, len, msg);
    if (!resp || resp->n_responses != j->n_keys) {
        if (resp)
            etcdserverpb__txn_response__free_unpacked(resp, NULL);
        job_fail(j, GRPC_INTERNAL, "etcdseal: unexpected response to the compare read");
        return;
    }
    const transform_ctx *ctx = transform_async_ctx(j->async);
    for (size_t i = 0; i < j->n_keys; i++) {
        struct guarded_key *g = &j->keys[i];
        Etcdserverpb__ResponseOp *op = resp->responses[i];
        Etcdserverpb__RangeResponse *rr =
            op->response_case == ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE
                ? op->response_range
                : NULL;
        buf_reset(&g->value);
        g->exists = rr && rr->n_kvs > 0;
        g->mod_revision = g->exists ? rr->kvs[0]->mod_revision : 0;
        if (!g->exists || rr->kvs[0]->value.len == 0)
            continue; /* empty stored values read as empty (v3lock writes them) */
        const crypto_chain *chain = chain_for(ctx, g->key);
        crypto_read_info info;
        es_error err = {0};
        if (crypto_chain_decrypt(chain, g->key.data, g->key.len, rr->kvs[0]->value.data,
                                 rr->kvs[0]->value.len, &g->value, &info, &err) != 0) {
            if (err.code == CRYPTO_ERR_WOULD_BLOCK) {
                /* the seed/DEK is not cached yet: start fetching it so a retry finds it, and
                 * answer UNAVAILABLE now (this path does not park; it is rare: first use) */
                es_error aerr = {0};
                crypto_chain_await(chain, CRYPTO_AWAIT_DECRYPT, rr->kvs[0]->value.data,
                                   rr->kvs[0]->value.len, kms_prefetch_done, NULL, &aerr);
                etcdserverpb__txn_response__free_unpacked(resp, NULL);
                job_fail(j, GRPC_UNAVAILABLE,
                         "etcdseal: the KMS key of a compared value is being fetched; retry");
                return;
            }
            char k[INTERCEPT_KEY_SHOWN_MAX * 4 + 8];
            intercept_format_key(k, sizeof k, g->key.data, g->key.len);
            char text[ES_ERROR_MSG_MAX];
            snprintf(text, sizeof text, "etcdseal: cannot decrypt value of key \"%s\": %s", k,
                     err.msg);
            etcdserverpb__txn_response__free_unpacked(resp, NULL);
            job_fail(j, GRPC_INTERNAL, text);
            return;
        }
    }
    etcdserverpb__txn_response__free_unpacked(resp, NULL);
    send_guarded(j);
}

static void start_read(txn_job *j)
{
    size_t n = j->n_keys;
    Etcdserverpb__RangeRequest *ranges = calloc(n, sizeof *ranges);
    Etcdserverpb__RequestOp *ops = calloc(n, sizeof *ops);
    Etcdserverpb__RequestOp **opp = calloc(n, sizeof *opp);
    uint8_t *packed = NULL;
    size_t plen = 0;
    if (ranges && ops && opp) {
        for (size_t i = 0; i < n; i++) {
            Etcdserverpb__RangeRequest ri = ETCDSERVERPB__RANGE_REQUEST__INIT;
            ranges[i] = ri;
            ranges[i].key = j->keys[i].key;
            Etcdserverpb__RequestOp oi = ETCDSERVERPB__REQUEST_OP__INIT;
            ops[i] = oi;
            ops[i].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
            ops[i].request_range = &ranges[i];
            opp[i] = &ops[i];
        }
        Etcdserverpb__TxnRequest t = ETCDSERVERPB__TXN_REQUEST__INIT;
        t.n_success = n;
        t.success = opp;
        plen = etcdserverpb__txn_request__get_packed_size(&t);
        packed = malloc(plen ? plen : 1);
        if (packed)
            etcdserverpb__txn_request__pack(&t, packed);
    }
    free(ranges);
    free(ops);
    free(opp);
    if (!packed) {
        job_fail(j, GRPC_RESOURCE_EXHAUSTED, "etcdseal: out of memory");
        return;
    }
    int rc = transform_async_call(j->async, PATH_TXN, packed, plen, on_read_done, j);
    free(packed);
    if (rc != 0)
        job_fail(j, GRPC_UNAVAILABLE, "etcdseal: cannot read the compared keys");
}

int txn_compare_start(transform_ctx *ctx, const uint8_t *msg, size_t len, es_error *err)
{
    if (!ctx->async)
        return es_error_set(err, GRPC_FAILED_PRECONDITION,
                            "etcdseal: Txn compare on VALUE of an encrypted key is only supported "
                            "at the top level of a Txn");
    txn_job *j = calloc(1, sizeof *j);
    if (!j)
        return es_error_set(err, GRPC_RESOURCE_EXHAUSTED, "etcdseal: out of memory");
    j->async = ctx->async;
    j->req = etcdserverpb__txn_request__unpack(NULL, len, msg);
    if (!j->req) {
        job_free(j);
        return es_error_set(err, GRPC_INVALID_ARGUMENT, "etcdseal: cannot decode TxnRequest");
    }
    j->keys = calloc(j->req->n_compare ? j->req->n_compare : 1, sizeof *j->keys);
    if (!j->keys) {
        job_free(j);
        return es_error_set(err, GRPC_RESOURCE_EXHAUSTED, "etcdseal: out of memory");
    }
    for (size_t i = 0; i < j->req->n_compare; i++) {
        const Etcdserverpb__Compare *c = j->req->compare[i];
        if (!is_protected_value_compare(ctx, c))
            continue;
        bool seen = false;
        for (size_t k = 0; k < j->n_keys; k++)
            seen |= same_key(j->keys[k].key, c->key);
        if (!seen)
            j->keys[j->n_keys++].key = c->key; /* points into j->req */
    }
    if (j->n_keys == 0) {
        job_free(j);
        return es_error_set(err, GRPC_INTERNAL, "etcdseal: no encrypted VALUE compare found");
    }
    start_read(j);
    return TRANSFORM_PENDING;
}
