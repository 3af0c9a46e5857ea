/* txn_compare.c - Txn compares on VALUE over encrypted keys (see txn_compare.h).
 *
 * Steps, each one internal etcd call on behalf of the client's Txn:
 *  1. read: one Txn of Range ops (one per protected key compared on VALUE): a consistent
 *     snapshot of the keys' values and revisions;
 *  2. decide: decrypt, evaluate the VALUE compares as etcd would (bytes.Compare; a missing key
 *     fails any VALUE compare);
 *  3. write: a Txn guarded by mod_revision == seen (create_revision == 0 when absent) whose only
 *     success op is the client's Txn rewritten level by level: a level whose VALUE compares
 *     hold keeps its other compares and both branches; a level whose VALUE compares fail runs
 *     its failure branch unconditionally (its "succeeded" is flipped back in the answer). etcd
 *     evaluates the compares of every nesting level against the state before the Txn, which is
 *     the snapshot read in step 1, so the decisions are exactly etcd's. An empty failure branch
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
    /* levels (client TxnRequest nodes) whose VALUE compares failed in the current try */
    const Etcdserverpb__TxnRequest **forced;
    size_t n_forced, cap_forced;
    /* memory of the rewritten request of the current try */
    void **allocs;
    size_t n_allocs, cap_allocs;
} txn_job;

static void *job_alloc(txn_job *j, size_t n)
{
    if (j->n_allocs == j->cap_allocs) {
        size_t cap = j->cap_allocs ? j->cap_allocs * 2 : 16;
        void **a = realloc(j->allocs, cap * sizeof *a);
        if (!a)
            return NULL;
        j->allocs = a;
        j->cap_allocs = cap;
    }
    void *p = calloc(1, n ? n : 1);
    if (p)
        j->allocs[j->n_allocs++] = p;
    return p;
}

static void job_release_rewrite(txn_job *j)
{
    for (size_t i = 0; i < j->n_allocs; i++)
        free(j->allocs[i]);
    j->n_allocs = 0;
    j->n_forced = 0;
}

static bool is_forced(const txn_job *j, const Etcdserverpb__TxnRequest *t)
{
    for (size_t i = 0; i < j->n_forced; i++)
        if (j->forced[i] == t)
            return true;
    return false;
}

static void kms_prefetch_done(void *arg)
{
    (void)arg; /* the result is cached by the crypto layer; nothing to do here */
}

static void job_free(txn_job *j)
{
    job_release_rewrite(j);
    free(j->allocs);
    free(j->forced);
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
static void restore_response(const txn_job *j, const Etcdserverpb__TxnRequest *t,
                             Etcdserverpb__TxnResponse *resp);

/* The common head of both callbacks: etcd's own error goes to the client unchanged (e.g.
 * request too large, permission denied); otherwise the decoded TxnResponse (NULL: the job is
 * already failed and freed). */
static Etcdserverpb__TxnResponse *job_response(txn_job *j, int status, const char *status_msg,
                                               const uint8_t *msg, size_t len)
{
    if (status != GRPC_OK) {
        transform_async_fail(j->async, status, "%s", status_msg ? status_msg : "");
        job_free(j);
        return NULL;
    }
    Etcdserverpb__TxnResponse *resp = etcdserverpb__txn_response__unpack(NULL, len, msg);
    if (!resp)
        job_fail(j, GRPC_INTERNAL, "etcdseal: cannot decode etcd's Txn response");
    return resp;
}

/* ------------------------------------------------------------------ step 3: write */
static void on_write_done(void *arg, int status, const char *status_msg, const uint8_t *msg,
                          size_t len)
{
    txn_job *j = arg;
    Etcdserverpb__TxnResponse *resp = job_response(j, status, status_msg, msg, len);
    if (!resp)
        return;
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
    Etcdserverpb__TxnResponse *inner =
        resp->n_responses == 1 &&
                resp->responses[0]->response_case == ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_TXN
            ? resp->responses[0]->response_txn
            : NULL;
    if (!inner) {
        etcdserverpb__txn_response__free_unpacked(resp, NULL);
        job_fail(j, GRPC_INTERNAL, "etcdseal: unexpected Txn response shape");
        return;
    }
    restore_response(j, j->req, inner);
    Etcdserverpb__TxnResponse out = ETCDSERVERPB__TXN_RESPONSE__INIT;
    out.header = resp->header;
    out.succeeded = inner->succeeded;
    out.n_responses = inner->n_responses;
    out.responses = inner->responses;
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

/* The VALUE compares of one level (etcd's applyCompare + compareKV on the snapshot). */
static bool evaluate_level(const txn_job *j, const transform_ctx *ctx,
                           const Etcdserverpb__TxnRequest *t)
{
    for (size_t i = 0; i < t->n_compare; i++) {
        const Etcdserverpb__Compare *c = t->compare[i];
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
            size_t m = a < b ? a : b;
            int d = m ? memcmp(g->value.data, c->value.data, m) : 0;
            r = d != 0 ? d : (a < b ? -1 : (a > b ? 1 : 0));
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

static Etcdserverpb__TxnRequest *rewrite_level(txn_job *j, const transform_ctx *ctx,
                                               const Etcdserverpb__TxnRequest *t);

/* Copies a branch, rewriting nested Txns; other ops are shared with the client's request. */
static Etcdserverpb__RequestOp **rewrite_ops(txn_job *j, const transform_ctx *ctx,
                                             Etcdserverpb__RequestOp **ops, size_t n)
{
    Etcdserverpb__RequestOp **out = job_alloc(j, n * sizeof *out);
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (ops[i]->request_case != ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN) {
            out[i] = ops[i];
            continue;
        }
        Etcdserverpb__RequestOp *op = job_alloc(j, sizeof *op);
        Etcdserverpb__RequestOp init = ETCDSERVERPB__REQUEST_OP__INIT;
        if (!op)
            return NULL;
        *op = init;
        op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN;
        op->request_txn = rewrite_level(j, ctx, ops[i]->request_txn);
        if (!op->request_txn)
            return NULL;
        out[i] = op;
    }
    return out;
}

static Etcdserverpb__TxnRequest *rewrite_level(txn_job *j, const transform_ctx *ctx,
                                               const Etcdserverpb__TxnRequest *t)
{
    Etcdserverpb__TxnRequest *r = job_alloc(j, sizeof *r);
    Etcdserverpb__TxnRequest init = ETCDSERVERPB__TXN_REQUEST__INIT;
    if (!r)
        return NULL;
    *r = init;
    if (!evaluate_level(j, ctx, t)) {
        /* the level fails whatever its other compares say: run its failure branch */
        if (j->n_forced == j->cap_forced) {
            size_t cap = j->cap_forced ? j->cap_forced * 2 : 8;
            const Etcdserverpb__TxnRequest **f = realloc(j->forced, cap * sizeof *f);
            if (!f)
                return NULL;
            j->forced = f;
            j->cap_forced = cap;
        }
        j->forced[j->n_forced++] = t;
        r->n_success = t->n_failure;
        r->success = rewrite_ops(j, ctx, t->failure, t->n_failure);
        return r->success || !t->n_failure ? r : NULL;
    }
    r->compare = job_alloc(j, (t->n_compare ? t->n_compare : 1) * sizeof *r->compare);
    if (!r->compare)
        return NULL;
    for (size_t i = 0; i < t->n_compare; i++)
        if (!is_protected_value_compare(ctx, t->compare[i]))
            r->compare[r->n_compare++] = t->compare[i];
    r->n_success = t->n_success;
    r->success = rewrite_ops(j, ctx, t->success, t->n_success);
    r->n_failure = t->n_failure;
    r->failure = rewrite_ops(j, ctx, t->failure, t->n_failure);
    if ((!r->success && t->n_success) || (!r->failure && t->n_failure))
        return NULL;
    return r;
}

/* Puts the client's view back into a response of the rewritten request: forced levels report
 * succeeded=false; nested responses follow the branch the client's request took. */
static void restore_response(const txn_job *j, const Etcdserverpb__TxnRequest *t,
                             Etcdserverpb__TxnResponse *resp)
{
    if (!t || !resp)
        return;
    if (is_forced(j, t))
        resp->succeeded = 0;
    Etcdserverpb__RequestOp **ops = resp->succeeded ? t->success : t->failure;
    size_t n = resp->succeeded ? t->n_success : t->n_failure;
    for (size_t i = 0; i < n && i < resp->n_responses; i++)
        if (ops[i]->request_case == ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN &&
            resp->responses[i]->response_case == ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_TXN)
            restore_response(j, ops[i]->request_txn, resp->responses[i]->response_txn);
}

static void send_guarded(txn_job *j)
{
    const transform_ctx *actx = transform_async_ctx(j->async);
    job_release_rewrite(j);
    size_t ng = j->n_keys;
    Etcdserverpb__Compare *guards = job_alloc(j, ng * sizeof *guards);
    Etcdserverpb__Compare **gp = job_alloc(j, ng * sizeof *gp);
    Etcdserverpb__TxnRequest *client = rewrite_level(j, actx, j->req);
    Etcdserverpb__RequestOp *op = job_alloc(j, sizeof *op);
    if (!guards || !gp || !client || !op) {
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
    Etcdserverpb__RequestOp op_init = ETCDSERVERPB__REQUEST_OP__INIT;
    *op = op_init;
    op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN;
    op->request_txn = client;
    Etcdserverpb__TxnRequest outer = ETCDSERVERPB__TXN_REQUEST__INIT;
    outer.n_compare = ng;
    outer.compare = gp;
    outer.n_success = 1;
    outer.success = &op;
    size_t n = etcdserverpb__txn_request__get_packed_size(&outer);
    uint8_t *packed = malloc(n ? n : 1);
    if (!packed) {
        job_fail(j, GRPC_RESOURCE_EXHAUSTED, "etcdseal: out of memory");
        return;
    }
    etcdserverpb__txn_request__pack(&outer, packed);
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
        job_fail(j, err.code && err.code != TRANSFORM_WOULD_BLOCK ? err.code : GRPC_UNAVAILABLE,
                 err.msg);
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
    Etcdserverpb__TxnResponse *resp = job_response(j, status, status_msg, msg, len);
    if (!resp)
        return;
    if (resp->n_responses != j->n_keys) {
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

/* Every distinct key compared on VALUE (protected, no range_end) at any nesting level. */
static int collect_keys(txn_job *j, const transform_ctx *ctx, const Etcdserverpb__TxnRequest *t)
{
    for (size_t i = 0; i < t->n_compare; i++) {
        const Etcdserverpb__Compare *c = t->compare[i];
        if (!is_protected_value_compare(ctx, c))
            continue;
        bool seen = false;
        for (size_t k = 0; k < j->n_keys; k++)
            seen |= same_key(j->keys[k].key, c->key);
        if (seen)
            continue;
        struct guarded_key *keys = realloc(j->keys, (j->n_keys + 1) * sizeof *keys);
        if (!keys)
            return -1;
        j->keys = keys;
        memset(&j->keys[j->n_keys], 0, sizeof j->keys[j->n_keys]);
        j->keys[j->n_keys++].key = c->key; /* points into j->req */
    }
    for (int branch = 0; branch < 2; branch++) {
        Etcdserverpb__RequestOp **ops = branch ? t->failure : t->success;
        size_t n = branch ? t->n_failure : t->n_success;
        for (size_t i = 0; i < n; i++)
            if (ops[i]->request_case == ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN &&
                ops[i]->request_txn && collect_keys(j, ctx, ops[i]->request_txn) != 0)
                return -1;
    }
    return 0;
}

int txn_compare_start(transform_ctx *ctx, const uint8_t *msg, size_t len, es_error *err)
{
    if (!ctx->async)
        return es_error_set(err, GRPC_FAILED_PRECONDITION,
                            "etcdseal: Txn compare on VALUE of an encrypted key cannot be emulated "
                            "in this context (no asynchronous call available)");
    txn_job *j = calloc(1, sizeof *j);
    if (!j)
        return es_error_set(err, GRPC_RESOURCE_EXHAUSTED, "etcdseal: out of memory");
    j->async = ctx->async;
    j->req = etcdserverpb__txn_request__unpack(NULL, len, msg);
    if (!j->req) {
        job_free(j);
        return es_error_set(err, GRPC_INVALID_ARGUMENT, "etcdseal: cannot decode TxnRequest");
    }
    if (collect_keys(j, ctx, j->req) != 0) {
        job_free(j);
        return es_error_set(err, GRPC_RESOURCE_EXHAUSTED, "etcdseal: out of memory");
    }
    if (j->n_keys == 0) {
        job_free(j);
        return es_error_set(err, GRPC_INTERNAL, "etcdseal: no encrypted VALUE compare found");
    }
    start_read(j);
    return TRANSFORM_PENDING;
}
