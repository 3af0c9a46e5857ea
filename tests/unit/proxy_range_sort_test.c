/* proxy_range_sort_test.c - Range sorted by VALUE over encrypted keys (intercept_range_sort).
 *
 * The plan (when the proxy sorts, when it refuses and why), the sort itself against an
 * independent oracle (insertion sort on the same total order) with many ties, and the whole
 * path: Range request transformer -> stream_state -> response transformer with a real aesgcm
 * chain, where etcd's order (by ciphertext) differs from the plaintext order. keys_only: the
 * fetch request, the keys_only answer built from etcd's answer with values, and the asynchronous
 * glue against a stand-in transform_async (the relay is not linked into this test).
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>

#include "crypto/chain.h"
#include "etcdserverpb/rpc.pb-c.h"
#include "policy/encryption.h"
#include "proxy/intercept_kv.h"
#include "proxy/intercept_range_sort.h"
#include "proxy/intercept_values.h"
#include "testlib.h"

#define K32 "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
static const char yaml[] = "apiVersion: apiserver.config.k8s.io/v1\n"
                           "kind: EncryptionConfiguration\n"
                           "resources:\n"
                           "- resources: [/app/]\n"
                           "  providers: [{aesgcm: {keys: [{name: k1, secret: " K32 "}]}}]\n";
static policy_encryption *pol;

#define BIN(s) ((ProtobufCBinaryData){sizeof(s) - 1, (uint8_t *)(s)})

static Etcdserverpb__RangeRequest req(const char *key, const char *end, int order, int target)
{
    Etcdserverpb__RangeRequest r = ETCDSERVERPB__RANGE_REQUEST__INIT;
    r.key = (ProtobufCBinaryData){strlen(key), (uint8_t *)key};
    r.range_end = (ProtobufCBinaryData){strlen(end), (uint8_t *)end};
    r.sort_order = (Etcdserverpb__RangeRequest__SortOrder)order;
    r.sort_target = (Etcdserverpb__RangeRequest__SortTarget)target;
    return r;
}

#define NONE ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__NONE
#define ASC ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND
#define DESC ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND
enum { T_KEY = 0, T_MOD = 3, T_VALUE = 4 };

static void test_plan(void)
{
    bool d = true;
    es_error err = {0};
    Etcdserverpb__RangeRequest r = req("/app/", "/app0", NONE, T_VALUE);
    CHECK_EQ_INT(range_sort_plan(pol, &r, false, &d, &err), 1);
    CHECK(!d); /* NONE with target VALUE = ASCEND, as etcd */
    r.sort_order = ASC;
    CHECK_EQ_INT(range_sort_plan(pol, &r, false, &d, &err), 1);
    CHECK(!d);
    r.sort_order = DESC;
    CHECK_EQ_INT(range_sort_plan(pol, &r, false, &d, &err), 1);
    CHECK(d);
    r.sort_order = (Etcdserverpb__RangeRequest__SortOrder)7; /* etcd leaves it unsorted */
    CHECK_EQ_INT(range_sort_plan(pol, &r, false, &d, &err), 0);
    r.sort_order = ASC;
    r.count_only = 1; /* no kvs in the answer */
    CHECK_EQ_INT(range_sort_plan(pol, &r, false, &d, &err), 0);
    r.count_only = 0;
    r.limit = 3;
    CHECK_EQ_INT(range_sort_plan(pol, &r, false, &d, &err), -1);
    CHECK_EQ_INT(err.code, 9);
    CHECK(strstr(err.msg, "with a limit over encrypted keys") != NULL);
    CHECK(strstr(err.msg, "drop the limit") != NULL);
    r.limit = 0;
    /* keys_only: the proxy fetches the values (no refusal); with a limit or in a Txn: refused */
    r.keys_only = 1;
    d = true;
    CHECK_EQ_INT(range_sort_plan(pol, &r, false, &d, &err), RANGE_SORT_FETCH);
    CHECK(!d);
    r.sort_order = DESC;
    CHECK_EQ_INT(range_sort_plan(pol, &r, false, &d, &err), RANGE_SORT_FETCH);
    CHECK(d);
    r.sort_order = NONE;
    CHECK_EQ_INT(range_sort_plan(pol, &r, false, &d, &err), RANGE_SORT_FETCH);
    CHECK(!d);
    r.limit = 2;
    es_error_clear(&err);
    CHECK_EQ_INT(range_sort_plan(pol, &r, false, &d, &err), -1);
    CHECK_EQ_INT(err.code, 9);
    CHECK(strstr(err.msg, "with a limit") != NULL);
    r.limit = 0;
    es_error_clear(&err);
    CHECK_EQ_INT(range_sort_plan(pol, &r, true, &d, &err), -1);
    CHECK_EQ_INT(err.code, 9);
    CHECK(strstr(err.msg, "inside a Txn") != NULL);
    r.count_only = 1;
    CHECK_EQ_INT(range_sort_plan(pol, &r, false, &d, &err), RANGE_SORT_PASS);
    r.count_only = 0;
    r.sort_target = (Etcdserverpb__RangeRequest__SortTarget)T_MOD;
    CHECK_EQ_INT(range_sort_plan(pol, &r, false, &d, &err), RANGE_SORT_PASS);
    r.sort_target = (Etcdserverpb__RangeRequest__SortTarget)T_VALUE;
    r.sort_order = ASC;
    r.keys_only = 0;
    es_error_clear(&err);
    CHECK_EQ_INT(range_sort_plan(pol, &r, true, &d, &err), -1);
    CHECK(strstr(err.msg, "inside a Txn") != NULL);
    /* other targets, ranges without protected keys, no policy: etcd's order stands */
    Etcdserverpb__RangeRequest k = req("/app/", "/app0", DESC, T_MOD);
    CHECK_EQ_INT(range_sort_plan(pol, &k, false, &d, &err), 0);
    Etcdserverpb__RangeRequest o = req("/zzz/", "/zzz0", DESC, T_VALUE);
    o.limit = 5;
    CHECK_EQ_INT(range_sort_plan(pol, &o, false, &d, &err), 0);
    CHECK_EQ_INT(range_sort_plan(NULL, &r, false, &d, &err), 0);
    Etcdserverpb__RangeRequest one = req("/app/x", "", ASC, T_VALUE); /* single key */
    CHECK_EQ_INT(range_sort_plan(pol, &one, false, &d, &err), 1);
}

/* ---------------------------------------------------------------- the sort vs an oracle */

static int oracle_cmp(const Mvccpb__KeyValue *a, const Mvccpb__KeyValue *b, bool desc)
{
    size_t n = a->value.len < b->value.len ? a->value.len : b->value.len;
    int c = memcmp(a->value.data, b->value.data, n);
    if (!c)
        c = (a->value.len > b->value.len) - (a->value.len < b->value.len);
    if (c)
        return desc ? -c : c;
    n = a->key.len < b->key.len ? a->key.len : b->key.len;
    c = memcmp(a->key.data, b->key.data, n);
    return c ? c : (a->key.len > b->key.len) - (a->key.len < b->key.len);
}

static void oracle_sort(Mvccpb__KeyValue **v, size_t n, bool desc)
{
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && oracle_cmp(v[j - 1], v[j], desc) > 0; j--) {
            Mvccpb__KeyValue *t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
}

static void test_sort_vs_oracle(void)
{
    enum { N = 400 };
    static Mvccpb__KeyValue kv[N];
    static char keys[N][16], vals[N][4];
    Mvccpb__KeyValue *a[N], *b[N];
    unsigned seed = 12345;
    for (int round = 0; round < 20; round++) {
        size_t n = (size_t)(round * 20 + 1) % (N + 1);
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            kv[i] = (Mvccpb__KeyValue)MVCCPB__KEY_VALUE__INIT;
            snprintf(keys[i], sizeof keys[i], "/app/%05u", (seed >> 8) % 100000);
            size_t vl = (seed >> 20) % 3; /* 0..2 bytes from a 2-letter alphabet: many ties */
            for (size_t j = 0; j < vl; j++)
                vals[i][j] = (char)('a' + ((seed >> (4 + j)) & 1));
            kv[i].key = (ProtobufCBinaryData){strlen(keys[i]), (uint8_t *)keys[i]};
            kv[i].value = (ProtobufCBinaryData){vl, (uint8_t *)vals[i]};
            a[i] = b[i] = &kv[i];
        }
        for (int desc = 0; desc < 2; desc++) {
            /* start from a scrambled order (etcd sorted by ciphertext) */
            for (size_t i = n; i > 1; i--) {
                seed = seed * 1103515245u + 12345u;
                size_t j = (seed >> 8) % i;
                Mvccpb__KeyValue *t = a[i - 1];
                a[i - 1] = a[j];
                a[j] = t;
            }
            memcpy(b, a, n * sizeof(*a));
            oracle_sort(b, n, desc);
            int rc = range_sort_kvs(a, n, desc);
            CHECK(rc >= 0);
            bool same = true;
            for (size_t i = 0; i < n; i++)
                same &= a[i] == b[i];
            CHECK_MSG(same, "round %d n %zu desc %d", round, n, desc);
            CHECK_EQ_INT(range_sort_kvs(a, n, desc), 0); /* already sorted: unchanged */
        }
    }
}

static void test_sort_ties_by_key(void)
{
    Mvccpb__KeyValue k[4] = {MVCCPB__KEY_VALUE__INIT, MVCCPB__KEY_VALUE__INIT,
                             MVCCPB__KEY_VALUE__INIT, MVCCPB__KEY_VALUE__INIT};
    k[0].key = BIN("/app/d");
    k[0].value = BIN("same");
    k[1].key = BIN("/app/b");
    k[1].value = BIN("same");
    k[2].key = BIN("/app/c");
    k[2].value = BIN("aaa");
    k[3].key = BIN("/app/a");
    k[3].value = BIN("same");
    Mvccpb__KeyValue *v[4] = {&k[0], &k[1], &k[2], &k[3]};
    CHECK_EQ_INT(range_sort_kvs(v, 4, false), 1);
    CHECK(v[0] == &k[2] && v[1] == &k[3] && v[2] == &k[1] && v[3] == &k[0]);
    CHECK_EQ_INT(range_sort_kvs(v, 4, true), 1);
    CHECK(v[0] == &k[3] && v[1] == &k[1] && v[2] == &k[0] && v[3] == &k[2]);
    CHECK_EQ_INT(range_sort_kvs(v, 0, true), 0);
    CHECK_EQ_INT(range_sort_kvs(v, 1, true), 0);
}

/* ---------------------------------------------------------------- the whole path */

static void pack(const ProtobufCMessage *m, buf_t *b)
{
    buf_reset(b);
    size_t n = protobuf_c_message_get_packed_size(m);
    buf_reserve(b, n);
    b->len = protobuf_c_message_pack(m, b->data);
}

/* Runs request then response transformers of one Range call; returns the plaintext values in
 * the order the client would see them, joined by ','. */
static int range_call(Etcdserverpb__RangeRequest *r, const char *const *keys,
                      const char *const *vals, size_t n, char *order, size_t cap, es_error *err)
{
    void *state = NULL;
    transform_ctx ctx = {.dir = TRANSFORM_REQUEST,
                         .method = "/etcdserverpb.KV/Range",
                         .policy = pol,
                         .stream_state = &state};
    buf_t in = BUF_INIT, out = BUF_INIT;
    pack(&r->base, &in);
    int rc = intercept_kv_range_request(&ctx, in.data, in.len, &out, err);
    if (rc == 0)
        CHECK_EQ_MEM(out.data, out.len, in.data, in.len); /* request forwarded unchanged */
    order[0] = '\0';
    Mvccpb__KeyValue kv[16];
    Mvccpb__KeyValue *kvs[16];
    buf_t sealed[16];
    const crypto_chain *c = policy_encryption_chain_for_key(pol, (const uint8_t *)"/app/", 5);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        sealed[i] = (buf_t)BUF_INIT;
        size_t kl = strlen(keys[i]);
        if (strncmp(keys[i], "/app/", 5) == 0)
            crypto_chain_encrypt(c, (const uint8_t *)keys[i], kl, (const uint8_t *)vals[i],
                                 strlen(vals[i]), &sealed[i], err);
        else
            buf_append(&sealed[i], vals[i], strlen(vals[i]));
        kv[i] = (Mvccpb__KeyValue)MVCCPB__KEY_VALUE__INIT;
        kv[i].key = (ProtobufCBinaryData){kl, (uint8_t *)keys[i]};
        kv[i].value = (ProtobufCBinaryData){sealed[i].len, sealed[i].data};
        kvs[i] = &kv[i];
    }
    if (rc == 0) {
        /* etcd returns them ordered by ciphertext */
        for (size_t i = 1; i < n; i++)
            for (size_t j = i; j > 0; j--) {
                ProtobufCBinaryData *x = &kvs[j - 1]->value, *y = &kvs[j]->value;
                size_t m = x->len < y->len ? x->len : y->len;
                int cmp = memcmp(x->data, y->data, m);
                if (cmp < 0 || (cmp == 0 && x->len <= y->len))
                    break;
                Mvccpb__KeyValue *t = kvs[j];
                kvs[j] = kvs[j - 1];
                kvs[j - 1] = t;
            }
        Etcdserverpb__RangeResponse rr = ETCDSERVERPB__RANGE_RESPONSE__INIT;
        rr.n_kvs = n;
        rr.kvs = kvs;
        rr.count = (int64_t)n;
        pack(&rr.base, &in);
        buf_reset(&out);
        ctx.dir = TRANSFORM_RESPONSE;
        rc = intercept_kv_range_response(&ctx, in.data, in.len, &out, err);
        Etcdserverpb__RangeResponse *o =
            rc == 0 ? etcdserverpb__range_response__unpack(NULL, out.len, out.data) : NULL;
        for (size_t i = 0; o && i < o->n_kvs; i++) {
            size_t l = strlen(order);
            snprintf(order + l, cap - l, "%s%.*s", i ? "," : "", (int)o->kvs[i]->value.len,
                     (const char *)o->kvs[i]->value.data);
        }
        if (o) {
            CHECK_EQ_INT(o->count, (int64_t)n);
            etcdserverpb__range_response__free_unpacked(o, NULL);
        }
        for (size_t i = 0; i < n; i++)
            buf_free(&sealed[i]);
    }
    range_sort_state_free(state); /* what the relay's free_state does */
    buf_free(&in);
    buf_free(&out);
    return rc;
}

static void test_range_call_sorted(void)
{
    static const char *const keys[] = {"/app/1", "/app/2", "/app/3", "/app/4", "/app/5", "/b/6"};
    static const char *const vals[] = {"pear", "apple", "zucchini", "fig", "apple", "banana"};
    char order[256];
    es_error err = {0};
    Etcdserverpb__RangeRequest r = req("/app/", "/c", ASC, T_VALUE);
    CHECK_EQ_INT(range_call(&r, keys, vals, 6, order, sizeof order, &err), 0);
    CHECK_EQ_STR(order, "apple,apple,banana,fig,pear,zucchini");
    r.sort_order = NONE;
    CHECK_EQ_INT(range_call(&r, keys, vals, 6, order, sizeof order, &err), 0);
    CHECK_EQ_STR(order, "apple,apple,banana,fig,pear,zucchini");
    r.sort_order = DESC;
    CHECK_EQ_INT(range_call(&r, keys, vals, 6, order, sizeof order, &err), 0);
    CHECK_EQ_STR(order, "zucchini,pear,fig,banana,apple,apple");
    /* limit: refused on the request, nothing forwarded */
    r.limit = 2;
    CHECK_EQ_INT(range_call(&r, keys, vals, 6, order, sizeof order, &err), -1);
    CHECK_EQ_INT(err.code, 9);
}

/* The request transformer records a plan only when the proxy must sort. */
static void test_request_state(void)
{
    static const struct {
        const char *key, *end;
        int order, target, limit;
        int want_rc;
        bool want_state;
    } cases[] = {
        {"/app/", "/app0", ASC, T_VALUE, 0, 0, true},
        {"/app/", "/app0", ASC, T_MOD, 0, 0, false},
        {"/app/", "/app0", NONE, T_KEY, 0, 0, false},
        {"/x/", "/x0", DESC, T_VALUE, 5, 0, false},
        {"/app/", "/app0", DESC, T_VALUE, 5, -1, false},
    };
    /* keys_only needs an internal call: a caller without ctx->async gets the refusal */
    {
        Etcdserverpb__RangeRequest r = req("/app/k\x01", "/app0", ASC, T_VALUE);
        r.keys_only = 1;
        void *state = NULL;
        transform_ctx ctx = {.dir = TRANSFORM_REQUEST, .policy = pol, .stream_state = &state};
        buf_t in = BUF_INIT, out = BUF_INIT;
        es_error err = {0};
        pack(&r.base, &in);
        CHECK_EQ_INT(intercept_kv_range_request(&ctx, in.data, in.len, &out, &err), -1);
        CHECK_EQ_INT(err.code, 9);
        CHECK_MSG(strstr(err.msg, "keys_only") && strstr(err.msg, "\"/app/k\\x01\""), "%s",
                  err.msg);
        CHECK(state == NULL);
        CHECK_EQ_INT(out.len, 0);
        buf_free(&in);
        buf_free(&out);
    }
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Etcdserverpb__RangeRequest r =
            req(cases[i].key, cases[i].end, cases[i].order, cases[i].target);
        r.limit = cases[i].limit;
        void *state = NULL;
        transform_ctx ctx = {.dir = TRANSFORM_REQUEST, .policy = pol, .stream_state = &state};
        buf_t in = BUF_INIT, out = BUF_INIT;
        es_error err = {0};
        pack(&r.base, &in);
        CHECK_EQ_INT(intercept_kv_range_request(&ctx, in.data, in.len, &out, &err),
                     cases[i].want_rc);
        CHECK_MSG((state != NULL) == cases[i].want_state, "case %zu", i);
        if (cases[i].want_rc == 0)
            CHECK_EQ_MEM(out.data, out.len, in.data, in.len);
        else
            CHECK_EQ_INT(out.len, 0);
        range_sort_state_free(state);
        buf_free(&in);
        buf_free(&out);
    }
}

/* Ties: equal plaintexts come out by key ascending in both directions. */
static void test_range_call_ties(void)
{
    static const char *const keys[] = {"/app/c", "/app/a", "/app/d", "/app/b"};
    static const char *const vals[] = {"x", "x", "y", "x"};
    char order[64];
    es_error err = {0};
    /* the values name their keys through a second call with key-tagged values */
    static const char *const tagged[] = {"x-c", "x-a", "y-d", "x-b"};
    Etcdserverpb__RangeRequest r = req("/app/", "/app0", DESC, T_VALUE);
    CHECK_EQ_INT(range_call(&r, keys, vals, 4, order, sizeof order, &err), 0);
    CHECK_EQ_STR(order, "y,x,x,x");
    CHECK_EQ_INT(range_call(&r, keys, tagged, 4, order, sizeof order, &err), 0);
    CHECK_EQ_STR(order, "y-d,x-c,x-b,x-a"); /* distinct values: plain descending */
    /* the tie rule itself is checked on kvs in test_sort_ties_by_key */
}

/* ---------------------------------------------------------------- keys_only: the fetch */

static void test_fetch_request(void)
{
    Etcdserverpb__RangeRequest r = req("/app/", "/app0", DESC, T_VALUE);
    r.keys_only = 1;
    r.revision = 7;
    r.serializable = 1;
    r.min_mod_revision = 2;
    r.max_create_revision = 9;
    buf_t in = BUF_INIT, out = BUF_INIT;
    pack(&r.base, &in);
    es_error err = {0};
    bool d = false;
    CHECK_EQ_INT(range_sort_fetch_request(in.data, in.len, &out, &d, &err), 0);
    CHECK(d);
    Etcdserverpb__RangeRequest *f = etcdserverpb__range_request__unpack(NULL, out.len, out.data);
    CHECK(f != NULL);
    if (f) {
        CHECK_EQ_INT(f->keys_only, 0);
        CHECK_EQ_INT(f->sort_order, NONE);
        CHECK_EQ_INT(f->sort_target, T_KEY);
        CHECK_EQ_MEM(f->key.data, f->key.len, "/app/", 5);
        CHECK_EQ_MEM(f->range_end.data, f->range_end.len, "/app0", 5);
        CHECK_EQ_INT(f->revision, 7);
        CHECK_EQ_INT(f->serializable, 1);
        CHECK_EQ_INT(f->min_mod_revision, 2);
        CHECK_EQ_INT(f->max_create_revision, 9);
        CHECK_EQ_INT(f->limit, 0);
        CHECK_EQ_INT(f->count_only, 0);
        etcdserverpb__range_request__free_unpacked(f, NULL);
    }
    /* malformed request bytes: INVALID_ARGUMENT, nothing appended */
    static const uint8_t bad[] = {0x0a, 0x40, 'x'};
    buf_reset(&out);
    CHECK_EQ_INT(range_sort_fetch_request(bad, sizeof bad, &out, &d, &err), -1);
    CHECK_EQ_INT(err.code, 3);
    CHECK_EQ_INT(out.len, 0);
    buf_free(&in);
    buf_free(&out);
}

/* etcd's answer to the fetch: values sealed (protected keys), kvs in ciphertext order, with
 * per-kv revisions derived from the index and a header/count/more to be kept. */
typedef struct fetched {
    buf_t msg;
    buf_t sealed[16];
    size_t n;
} fetched;

static void fetched_make(fetched *f, const char *const *keys, const char *const *vals, size_t n,
                         int64_t count, int more)
{
    Mvccpb__KeyValue kv[16];
    Mvccpb__KeyValue *kvs[16];
    const crypto_chain *c = policy_encryption_chain_for_key(pol, (const uint8_t *)"/app/", 5);
    es_error err = {0};
    f->n = n;
    f->msg = (buf_t)BUF_INIT;
    for (size_t i = 0; i < n; i++) {
        f->sealed[i] = (buf_t)BUF_INIT;
        size_t kl = strlen(keys[i]);
        if (strncmp(keys[i], "/app/", 5) == 0 && vals[i][0])
            CHECK_EQ_INT(crypto_chain_encrypt(c, (const uint8_t *)keys[i], kl,
                                              (const uint8_t *)vals[i], strlen(vals[i]),
                                              &f->sealed[i], &err),
                         0);
        else
            buf_append(&f->sealed[i], vals[i], strlen(vals[i]));
        kv[i] = (Mvccpb__KeyValue)MVCCPB__KEY_VALUE__INIT;
        kv[i].key = (ProtobufCBinaryData){kl, (uint8_t *)keys[i]};
        kv[i].value = (ProtobufCBinaryData){f->sealed[i].len, f->sealed[i].data};
        kv[i].create_revision = 10 + (int64_t)i;
        kv[i].mod_revision = 100 + (int64_t)i;
        kv[i].version = 1 + (int64_t)i;
        kv[i].lease = (int64_t)i * 1000;
        kvs[i] = &kv[i];
    }
    /* etcd (sort dropped) answers in key order: scramble it to prove the result does not depend
     * on the order received */
    for (size_t i = 0; i + 1 < n; i += 2) {
        Mvccpb__KeyValue *t = kvs[i];
        kvs[i] = kvs[i + 1];
        kvs[i + 1] = t;
    }
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    h.cluster_id = 0x1234;
    h.member_id = 0x5678;
    h.revision = 42;
    h.raft_term = 3;
    Etcdserverpb__RangeResponse rr = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    rr.header = &h;
    rr.n_kvs = n;
    rr.kvs = kvs;
    rr.count = count;
    rr.more = more;
    pack(&rr.base, &f->msg);
}

static void fetched_free(fetched *f)
{
    for (size_t i = 0; i < f->n; i++)
        buf_free(&f->sealed[i]);
    buf_free(&f->msg);
}

/* Checks a keys_only answer and writes its keys (joined by ',') to `order`. */
static void answer_keys(const buf_t *out, const char *const *keys, char *order, size_t cap,
                        int64_t count, int more)
{
    order[0] = '\0';
    Etcdserverpb__RangeResponse *o =
        etcdserverpb__range_response__unpack(NULL, out->len, out->data);
    CHECK(o != NULL);
    if (!o)
        return;
    CHECK(o->header && o->header->revision == 42 && o->header->cluster_id == 0x1234 &&
          o->header->member_id == 0x5678 && o->header->raft_term == 3);
    CHECK_EQ_INT(o->count, count);
    CHECK_EQ_INT(o->more, more);
    for (size_t i = 0; i < o->n_kvs; i++) {
        const Mvccpb__KeyValue *kv = o->kvs[i];
        CHECK_EQ_INT(kv->value.len, 0); /* keys_only: no value, no plaintext, no ciphertext */
        size_t idx = 0;
        while (keys[idx] && (strlen(keys[idx]) != kv->key.len ||
                             memcmp(keys[idx], kv->key.data, kv->key.len) != 0))
            idx++;
        CHECK(keys[idx] != NULL);
        if (keys[idx]) { /* every other field as etcd sent it */
            CHECK_EQ_INT(kv->create_revision, 10 + (int64_t)idx);
            CHECK_EQ_INT(kv->mod_revision, 100 + (int64_t)idx);
            CHECK_EQ_INT(kv->version, 1 + (int64_t)idx);
            CHECK_EQ_INT(kv->lease, (int64_t)idx * 1000);
        }
        size_t l = strlen(order);
        snprintf(order + l, cap - l, "%s%.*s", i ? "," : "", (int)kv->key.len,
                 (const char *)kv->key.data);
    }
    etcdserverpb__range_response__free_unpacked(o, NULL);
}

static void test_keys_only_answer(void)
{
    static const char *const keys[] = {"/app/1", "/app/2", "/app/3", "/app/4",
                                       "/app/5", "/app/6", "/b/7",   NULL};
    /* /app/6 holds an empty stored value (v3lock-like: read as empty, sorts first) */
    static const char *const vals[] = {"pear", "apple", "zucchini", "fig", "apple", "", "banana"};
    transform_ctx base = {.method = "/etcdserverpb.KV/Range", .policy = pol};
    fetched f;
    fetched_make(&f, keys, vals, 7, 7, 0);
    char order[256];
    buf_t out = BUF_INIT;
    es_error err = {0};
    CHECK_EQ_INT(range_sort_keys_only_answer(&base, false, f.msg.data, f.msg.len, &out, &err), 0);
    answer_keys(&out, keys, order, sizeof order, 7, 0);
    CHECK_EQ_STR(order, "/app/6,/app/2,/app/5,/b/7,/app/4,/app/1,/app/3");
    buf_reset(&out);
    CHECK_EQ_INT(range_sort_keys_only_answer(&base, true, f.msg.data, f.msg.len, &out, &err), 0);
    answer_keys(&out, keys, order, sizeof order, 7, 0);
    CHECK_EQ_STR(order, "/app/3,/app/1,/app/4,/b/7,/app/2,/app/5,/app/6"); /* ties: key asc */
    fetched_free(&f);
    /* count/more as etcd returned them (e.g. a count larger than the kvs) */
    fetched_make(&f, keys, vals, 2, 9, 1);
    buf_reset(&out);
    CHECK_EQ_INT(range_sort_keys_only_answer(&base, false, f.msg.data, f.msg.len, &out, &err), 0);
    answer_keys(&out, keys, order, sizeof order, 9, 1);
    CHECK_EQ_STR(order, "/app/2,/app/1");
    fetched_free(&f);
    /* empty answer */
    fetched_make(&f, keys, vals, 0, 0, 0);
    buf_reset(&out);
    CHECK_EQ_INT(range_sort_keys_only_answer(&base, false, f.msg.data, f.msg.len, &out, &err), 0);
    answer_keys(&out, keys, order, sizeof order, 0, 0);
    CHECK_EQ_STR(order, "");
    fetched_free(&f);
    /* a stored value that does not decrypt: INTERNAL naming the key, nothing to answer */
    /* a stored value that does not decrypt: INTERNAL naming the key, nothing to answer */
    {
        buf_t sealed = BUF_INIT;
        const crypto_chain *c = policy_encryption_chain_for_key(pol, (const uint8_t *)"/app/", 5);
        CHECK_EQ_INT(crypto_chain_encrypt(c, (const uint8_t *)"/app/y", 6, (const uint8_t *)"v", 1,
                                          &sealed, &err),
                     0);
        Mvccpb__KeyValue kv = MVCCPB__KEY_VALUE__INIT;
        kv.key = BIN("/app/x"); /* sealed for another key: the AAD check fails */
        kv.value = (ProtobufCBinaryData){sealed.len, sealed.data};
        Mvccpb__KeyValue *kvs[1] = {&kv};
        Etcdserverpb__RangeResponse rr = ETCDSERVERPB__RANGE_RESPONSE__INIT;
        rr.n_kvs = 1;
        rr.kvs = kvs;
        rr.count = 1;
        buf_t msg = BUF_INIT;
        pack(&rr.base, &msg);
        buf_reset(&out);
        es_error_clear(&err);
        CHECK_EQ_INT(range_sort_keys_only_answer(&base, false, msg.data, msg.len, &out, &err), -1);
        CHECK_EQ_INT(err.code, 13);
        CHECK_MSG(strstr(err.msg, "/app/x") != NULL, "%s", err.msg);
        CHECK_EQ_INT(out.len, 0);
        buf_free(&msg);
        buf_free(&sealed);
    }
    /* a response etcd never sends: INTERNAL */
    static const uint8_t junk[] = {0x12, 0x7f, 0x01};
    buf_reset(&out);
    CHECK_EQ_INT(range_sort_keys_only_answer(&base, false, junk, sizeof junk, &out, &err), -1);
    CHECK_EQ_INT(err.code, 13);
    buf_free(&out);
}

/* ---------------------------------------------------------------- keys_only: the async glue
 * A stand-in for the relay's transform_async (src/proxy/relay.c is not linked into this test):
 * records the internal call and how the client call ended. */
struct transform_async {
    transform_ctx ctx;
    int fail_call;
    int calls;
    char path[64];
    buf_t req;
    transform_call_cb cb;
    void *cb_arg;
    int ended; /* 0 open, 1 responded, 2 failed */
    int status;
    char status_msg[512];
    buf_t resp;
    int cancelled;
};

int transform_async_call(transform_async *a, const char *path, const uint8_t *req, size_t len,
                         transform_call_cb cb, void *arg)
{
    if (a->fail_call)
        return -1;
    a->calls++;
    snprintf(a->path, sizeof a->path, "%s", path);
    buf_reset(&a->req);
    buf_append(&a->req, req, len);
    a->cb = cb;
    a->cb_arg = arg;
    return 0;
}

void transform_async_respond(transform_async *a, const uint8_t *msg, size_t len)
{
    CHECK_EQ_INT(a->ended, 0);
    a->ended = 1;
    buf_append(&a->resp, msg, len);
}

void transform_async_fail(transform_async *a, int status, const char *fmt, ...)
{
    CHECK_EQ_INT(a->ended, 0);
    a->ended = 2;
    a->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->status_msg, sizeof a->status_msg, fmt, ap);
    va_end(ap);
}

int transform_async_cancelled(const transform_async *a)
{
    return a->cancelled;
}

const transform_ctx *transform_async_ctx(const transform_async *a)
{
    return &a->ctx;
}

static void async_reset(transform_async *a)
{
    buf_free(&a->req);
    buf_free(&a->resp);
    memset(a, 0, sizeof *a);
    a->ctx = (transform_ctx){.method = "/etcdserverpb.KV/Range", .policy = pol};
    a->ctx.async = a;
}

/* The client's keys_only request through the Range request transformer with ctx->async. */
static int start_keys_only(transform_async *a, int order, es_error *err)
{
    Etcdserverpb__RangeRequest r = req("/app/", "/c", order, T_VALUE);
    r.keys_only = 1;
    void *state = NULL;
    transform_ctx ctx = a->ctx;
    ctx.dir = TRANSFORM_REQUEST;
    ctx.stream_state = &state;
    buf_t in = BUF_INIT, out = BUF_INIT;
    pack(&r.base, &in);
    int rc = intercept_kv_range_request(&ctx, in.data, in.len, &out, err);
    CHECK_EQ_INT(out.len, 0); /* nothing forwarded: the proxy answers itself */
    CHECK(state == NULL);
    buf_free(&in);
    buf_free(&out);
    return rc;
}

static void test_keys_only_async(void)
{
    static const char *const keys[] = {"/app/1", "/app/2", "/app/3", "/b/4", NULL};
    static const char *const vals[] = {"pear", "apple", "zucchini", "fig"};
    static transform_async a;
    es_error err = {0};
    char order[128];
    fetched f;
    fetched_make(&f, keys, vals, 4, 4, 0);

    /* the whole call: one internal Range with values, answered keys_only in value order */
    for (int desc = 0; desc < 2; desc++) {
        async_reset(&a);
        CHECK_EQ_INT(start_keys_only(&a, desc ? DESC : NONE, &err), TRANSFORM_PENDING);
        CHECK_EQ_INT(a.calls, 1);
        CHECK_EQ_STR(a.path, "/etcdserverpb.KV/Range");
        Etcdserverpb__RangeRequest *q =
            etcdserverpb__range_request__unpack(NULL, a.req.len, a.req.data);
        CHECK(q && !q->keys_only && (int)q->sort_order == NONE && (int)q->sort_target == T_KEY);
        if (q)
            etcdserverpb__range_request__free_unpacked(q, NULL);
        CHECK_EQ_INT(a.ended, 0);
        if (a.cb)
            a.cb(a.cb_arg, 0, NULL, f.msg.data, f.msg.len);
        CHECK_EQ_INT(a.ended, 1);
        answer_keys(&a.resp, keys, order, sizeof order, 4, 0);
        CHECK_EQ_STR(order, desc ? "/app/3,/app/1,/b/4,/app/2" : "/app/2,/b/4,/app/1,/app/3");
    }

    /* etcd's error for the fetch reaches the client unchanged */
    async_reset(&a);
    CHECK_EQ_INT(start_keys_only(&a, ASC, &err), TRANSFORM_PENDING);
    if (a.cb)
        a.cb(a.cb_arg, 11, "etcdserver: mvcc: required revision has been compacted", NULL, 0);
    CHECK_EQ_INT(a.ended, 2);
    CHECK_EQ_INT(a.status, 11);
    CHECK_EQ_STR(a.status_msg, "etcdserver: mvcc: required revision has been compacted");

    /* the client went away: the job ends without decrypting */
    async_reset(&a);
    CHECK_EQ_INT(start_keys_only(&a, ASC, &err), TRANSFORM_PENDING);
    a.cancelled = 1;
    if (a.cb)
        a.cb(a.cb_arg, 0, NULL, f.msg.data, f.msg.len);
    CHECK_EQ_INT(a.ended, 2);
    CHECK_EQ_INT(a.status, 1);

    /* a value that does not decrypt: INTERNAL, no answer */
    async_reset(&a);
    CHECK_EQ_INT(start_keys_only(&a, ASC, &err), TRANSFORM_PENDING);
    static const uint8_t junk[] = {0x12, 0x7f, 0x01};
    if (a.cb)
        a.cb(a.cb_arg, 0, NULL, junk, sizeof junk);
    CHECK_EQ_INT(a.ended, 2);
    CHECK_EQ_INT(a.status, 13);
    CHECK_EQ_INT(a.resp.len, 0);

    /* the internal call cannot be sent: the call ends synchronously with UNAVAILABLE */
    async_reset(&a);
    a.fail_call = 1;
    es_error_clear(&err);
    CHECK_EQ_INT(start_keys_only(&a, ASC, &err), -1);
    CHECK_EQ_INT(err.code, 14);
    CHECK_EQ_INT(a.ended, 0);

    async_reset(&a);
    buf_free(&a.req);
    fetched_free(&f);
}

int main(int argc, char **argv)
{
    (void)argc;
    TEST_BEGIN(argv[0]);
    es_error err = {0};
    if (policy_encryption_load_buffer("test", yaml, sizeof yaml - 1, NULL, &pol, &err) != 0) {
        fprintf(stderr, "policy: %s\n", err.msg);
        return 1;
    }
    RUN(test_plan);
    RUN(test_sort_vs_oracle);
    RUN(test_sort_ties_by_key);
    RUN(test_request_state);
    RUN(test_range_call_sorted);
    RUN(test_range_call_ties);
    RUN(test_fetch_request);
    RUN(test_keys_only_answer);
    RUN(test_keys_only_async);
    policy_encryption_unref(pol);
    intercept_thread_release();
    crypto_thread_cleanup();
    return TEST_EXIT();
}
