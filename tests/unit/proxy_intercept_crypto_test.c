/* proxy_intercept_crypto_test.c - the production value hook with real chains built from YAML.
 *
 * Every value site of every intercepted message: writes come out in kube-apiserver's format and
 * decrypt with the key's own chain and the key as AAD; reads come out as plaintext; uncovered
 * keys, keys_only answers, DELETE events and empty stored values pass byte-identical; errors name
 * the key (escaped) and the reason and never contain the value; Txn VALUE compares are handed
 * over or refused; metrics series move as kube-apiserver's would. Ends with a timing figure
 * (per Put request / per single-kv Range response) for comparison with pass-through.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "base/metrics.h"
#include "crypto/chain.h"
#include "etcdserverpb/rpc.pb-c.h"
#include "mvccpb/kv.pb-c.h"
#include "policy/encryption.h"
#include "proxy/intercept_election.h"
#include "proxy/intercept_kv.h"
#include "proxy/intercept_values.h"
#include "proxy/intercept_watch.h"
#include "testlib.h"
#include "v3electionpb/v3election.pb-c.h"

#define K32A "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" /* 32 bytes */
#define K32B "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="
#define K16 "MDEyMzQ1Njc4OWFiY2RlZg=="

/* Literal prefixes for each local provider, a rotated rule, and a Kubernetes resource. */
static const char config_yaml[] =
    "apiVersion: apiserver.config.k8s.io/v1\n"
    "kind: EncryptionConfiguration\n"
    "resources:\n"
    "- resources: [/app/]\n"
    "  providers: [{aesgcm: {keys: [{name: k1, secret: " K32A "}]}}]\n"
    "- resources: [/sb/]\n"
    "  providers: [{secretbox: {keys: [{name: s1, secret: " K32A "}]}}]\n"
    "- resources: [/cbc/]\n"
    "  providers: [{aescbc: {keys: [{name: c1, secret: " K16 "}]}}]\n"
    "- resources: [/rot/]\n"
    "  providers: [{aesgcm: {keys: [{name: new, secret: " K32A "}, {name: old, secret: " K32B
    "}]}}]\n"
    "- resources: [/id/]\n"
    "  providers: [{identity: {}}, {aesgcm: {keys: [{name: k1, secret: " K32A "}]}}]\n"
    "- resources: [secrets]\n"
    "  providers: [{aesgcm: {keys: [{name: sec, secret: " K32B "}]}}, {identity: {}}]\n";

/* The same /rot/ rule with the old key first: writes what a not yet rotated writer stored. */
static const char old_yaml[] = "apiVersion: apiserver.config.k8s.io/v1\n"
                               "kind: EncryptionConfiguration\n"
                               "resources:\n"
                               "- resources: [/rot/]\n"
                               "  providers: [{aesgcm: {keys: [{name: old, secret: " K32B "}]}}]\n";

static policy_encryption *pol, *pol_old;
static void *stream_state;

#define BIN(s) ((ProtobufCBinaryData){sizeof(s) - 1, (uint8_t *)(s)})

static transform_ctx make_ctx(enum transform_dir dir, const char *method, policy_encryption *p)
{
    transform_ctx c = {.dir = dir, .method = method, .policy = p, .stream_state = &stream_state};
    return c;
}

static void pack(const ProtobufCMessage *m, buf_t *b)
{
    buf_reset(b);
    size_t n = protobuf_c_message_get_packed_size(m);
    buf_reserve(b, n);
    b->len = protobuf_c_message_pack(m, b->data);
}

static bool has_prefix(ProtobufCBinaryData v, const char *p)
{
    size_t n = strlen(p);
    return v.len >= n && memcmp(v.data, p, n) == 0;
}

static bool bin_eq(ProtobufCBinaryData v, const char *s)
{
    return v.len == strlen(s) && (v.len == 0 || memcmp(v.data, s, v.len) == 0);
}

/* Stored value as etcd would hold it (written by `p`'s chain for `key`), in a heap buffer the
 * caller frees. */
static ProtobufCBinaryData seal(policy_encryption *p, const char *key, const char *plain)
{
    const crypto_chain *c = policy_encryption_chain_for_key(p, (const uint8_t *)key, strlen(key));
    buf_t b = BUF_INIT;
    es_error err = {0};
    CHECK(c != NULL);
    if (c)
        CHECK(crypto_chain_encrypt(c, (const uint8_t *)key, strlen(key), (const uint8_t *)plain,
                                   strlen(plain), &b, &err) == 0);
    return (ProtobufCBinaryData){b.len, b.data};
}

/* Decrypts a value the proxy wrote for `key` with the policy's chain; checks it equals `want`. */
static void check_opens(ProtobufCBinaryData v, const char *key, const char *want)
{
    const crypto_chain *c = policy_encryption_chain_for_key(pol, (const uint8_t *)key, strlen(key));
    buf_t b = BUF_INIT;
    es_error err = {0};
    crypto_read_info info;
    CHECK_MSG(c != NULL, "no chain for %s", key);
    if (!c)
        return;
    int rc =
        crypto_chain_decrypt(c, (const uint8_t *)key, strlen(key), v.data, v.len, &b, &info, &err);
    CHECK_MSG(rc == 0, "decrypt %s: %s", key, err.msg);
    if (rc == 0)
        CHECK_EQ_MEM(b.data, b.len, want, strlen(want));
    buf_free(&b);
}

static Mvccpb__KeyValue make_kv(const char *key, ProtobufCBinaryData value, int64_t rev)
{
    Mvccpb__KeyValue kv = MVCCPB__KEY_VALUE__INIT;
    kv.key = (ProtobufCBinaryData){strlen(key), (uint8_t *)key};
    kv.value = value;
    kv.create_revision = rev;
    kv.mod_revision = rev + 1;
    kv.version = 2;
    kv.lease = 7;
    return kv;
}

/* ---------------------------------------------------------------- writes */

static void put_case(const char *key, const char *prefix)
{
    Etcdserverpb__PutRequest r = ETCDSERVERPB__PUT_REQUEST__INIT;
    r.key = (ProtobufCBinaryData){strlen(key), (uint8_t *)key};
    r.value = BIN("the plaintext value");
    r.lease = 42;
    r.prev_kv = 1;
    buf_t in = BUF_INIT, out = BUF_INIT;
    pack(&r.base, &in);
    transform_ctx ctx = make_ctx(TRANSFORM_REQUEST, "/etcdserverpb.KV/Put", pol);
    es_error err = {0};
    CHECK_EQ_INT(intercept_kv_put_request(&ctx, in.data, in.len, &out, &err), 0);
    Etcdserverpb__PutRequest *o = etcdserverpb__put_request__unpack(NULL, out.len, out.data);
    CHECK(o != NULL);
    if (o) {
        CHECK_MSG(has_prefix(o->value, prefix), "%s: stored prefix", key);
        CHECK(memmem(o->value.data, o->value.len, "plaintext", 9) == NULL);
        CHECK(bin_eq(o->key, key));
        CHECK_EQ_INT(o->lease, 42);
        CHECK_EQ_INT(o->prev_kv, 1);
        check_opens(o->value, key, "the plaintext value");
        etcdserverpb__put_request__free_unpacked(o, NULL);
    }
    buf_free(&in);
    buf_free(&out);
}

static void test_put_every_provider(void)
{
    put_case("/app/x", "k8s:enc:aesgcm:v1:k1:");
    put_case("/sb/x", "k8s:enc:secretbox:v1:s1:");
    put_case("/cbc/x", "k8s:enc:aescbc:v1:c1:");
    put_case("/rot/x", "k8s:enc:aesgcm:v1:new:");
    put_case("/registry/secrets/default/db", "k8s:enc:aesgcm:v1:sec:");
}

/* AES-GCM binds the key: the value written for /app/a does not open as /app/b. */
static void test_put_aad_is_key(void)
{
    Etcdserverpb__PutRequest r = ETCDSERVERPB__PUT_REQUEST__INIT;
    r.key = BIN("/app/a");
    r.value = BIN("v");
    buf_t in = BUF_INIT, out = BUF_INIT, pt = BUF_INIT;
    pack(&r.base, &in);
    transform_ctx ctx = make_ctx(TRANSFORM_REQUEST, "/etcdserverpb.KV/Put", pol);
    es_error err = {0};
    CHECK_EQ_INT(intercept_kv_put_request(&ctx, in.data, in.len, &out, &err), 0);
    Etcdserverpb__PutRequest *o = etcdserverpb__put_request__unpack(NULL, out.len, out.data);
    CHECK(o != NULL);
    if (o) {
        const crypto_chain *c = policy_encryption_chain_for_key(pol, (const uint8_t *)"/app/b", 6);
        CHECK(crypto_chain_decrypt(c, (const uint8_t *)"/app/b", 6, o->value.data, o->value.len,
                                   &pt, NULL, &err) != 0);
        check_opens(o->value, "/app/a", "v");
        etcdserverpb__put_request__free_unpacked(o, NULL);
    }
    buf_free(&in);
    buf_free(&out);
    buf_free(&pt);
}

static void check_passthrough(transform_fn fn, enum transform_dir dir, const char *method,
                              const ProtobufCMessage *m, policy_encryption *p)
{
    buf_t in = BUF_INIT, out = BUF_INIT;
    pack(m, &in);
    transform_ctx ctx = make_ctx(dir, method, p);
    es_error err = {0};
    CHECK_EQ_INT(fn(&ctx, in.data, in.len, &out, &err), 0);
    CHECK_EQ_MEM(out.data, out.len, in.data, in.len);
    buf_free(&in);
    buf_free(&out);
}

static void test_uncovered_byte_identical(void)
{
    Etcdserverpb__PutRequest r = ETCDSERVERPB__PUT_REQUEST__INIT;
    r.key = BIN("/other/x");
    r.value = BIN("plain");
    check_passthrough(intercept_kv_put_request, TRANSFORM_REQUEST, "Put", &r.base, pol);
    r.key = BIN("/registry/configmaps/default/c"); /* a resource no rule names */
    check_passthrough(intercept_kv_put_request, TRANSFORM_REQUEST, "Put", &r.base, pol);
    r.key = BIN("/app/x"); /* no policy at all */
    check_passthrough(intercept_kv_put_request, TRANSFORM_REQUEST, "Put", &r.base, NULL);
    r.key = BIN("/id/x"); /* identity writes */
    check_passthrough(intercept_kv_put_request, TRANSFORM_REQUEST, "Put", &r.base, pol);
    /* ignore_value: nothing to encrypt */
    Etcdserverpb__PutRequest iv = ETCDSERVERPB__PUT_REQUEST__INIT;
    iv.key = BIN("/app/x");
    iv.ignore_value = 1;
    check_passthrough(intercept_kv_put_request, TRANSFORM_REQUEST, "Put", &iv.base, pol);

    Mvccpb__KeyValue kv = make_kv("/other/y", BIN("plain"), 5);
    Mvccpb__KeyValue *kvs[] = {&kv};
    Etcdserverpb__RangeResponse rr = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    rr.n_kvs = 1;
    rr.kvs = kvs;
    rr.count = 1;
    check_passthrough(intercept_kv_range_response, TRANSFORM_RESPONSE, "Range", &rr.base, pol);
}

/* An empty Put value under a protected key is still encrypted (kube-apiserver does too). */
static void test_put_empty_value_encrypted(void)
{
    Etcdserverpb__PutRequest r = ETCDSERVERPB__PUT_REQUEST__INIT;
    r.key = BIN("/app/empty");
    buf_t in = BUF_INIT, out = BUF_INIT;
    pack(&r.base, &in);
    transform_ctx ctx = make_ctx(TRANSFORM_REQUEST, "Put", pol);
    es_error err = {0};
    CHECK_EQ_INT(intercept_kv_put_request(&ctx, in.data, in.len, &out, &err), 0);
    Etcdserverpb__PutRequest *o = etcdserverpb__put_request__unpack(NULL, out.len, out.data);
    CHECK(o && has_prefix(o->value, "k8s:enc:aesgcm:v1:k1:"));
    if (o) {
        check_opens(o->value, "/app/empty", "");
        etcdserverpb__put_request__free_unpacked(o, NULL);
    }
    buf_free(&in);
    buf_free(&out);
}

/* ---------------------------------------------------------------- reads */

static void test_range_response_decrypts(void)
{
    ProtobufCBinaryData v1 = seal(pol, "/app/a", "alpha"), v2 = seal(pol, "/sb/b", "bravo"),
                        v3 = seal(pol, "/cbc/c", "charlie"),
                        v4 = seal(pol, "/registry/secrets/ns/d", "delta");
    Mvccpb__KeyValue kv[] = {make_kv("/app/a", v1, 10),
                             make_kv("/sb/b", v2, 11),
                             make_kv("/cbc/c", v3, 12),
                             make_kv("/registry/secrets/ns/d", v4, 13),
                             make_kv("/other/e", BIN("echo"), 14),
                             make_kv("/app/empty", (ProtobufCBinaryData){0, NULL}, 15),
                             make_kv("/registry/secrets/ns/old", BIN("{\"plain\":1}"), 16)};
    Mvccpb__KeyValue *kvs[7];
    for (int i = 0; i < 7; i++)
        kvs[i] = &kv[i];
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    h.revision = 99;
    Etcdserverpb__RangeResponse rr = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    rr.header = &h;
    rr.n_kvs = 7;
    rr.kvs = kvs;
    rr.count = 7;
    rr.more = 1;
    buf_t in = BUF_INIT, out = BUF_INIT;
    pack(&rr.base, &in);
    transform_ctx ctx = make_ctx(TRANSFORM_RESPONSE, "Range", pol);
    es_error err = {0};
    CHECK_EQ_INT(intercept_kv_range_response(&ctx, in.data, in.len, &out, &err), 0);
    Etcdserverpb__RangeResponse *o = etcdserverpb__range_response__unpack(NULL, out.len, out.data);
    CHECK(o && o->n_kvs == 7);
    if (o && o->n_kvs == 7) {
        static const char *const want[] = {"alpha", "bravo", "charlie",      "delta",
                                           "echo",  "",      "{\"plain\":1}"};
        for (int i = 0; i < 7; i++) {
            CHECK_MSG(bin_eq(o->kvs[i]->value, want[i]), "kv %d", i);
            CHECK_EQ_INT(o->kvs[i]->create_revision, 10 + i);
            CHECK_EQ_INT(o->kvs[i]->mod_revision, 11 + i);
            CHECK_EQ_INT(o->kvs[i]->lease, 7);
        }
        CHECK_EQ_INT(o->header->revision, 99);
        CHECK_EQ_INT(o->count, 7);
        CHECK_EQ_INT(o->more, 1);
        etcdserverpb__range_response__free_unpacked(o, NULL);
    }
    free(v1.data);
    free(v2.data);
    free(v3.data);
    free(v4.data);
    buf_free(&in);
    buf_free(&out);
}

static void test_keys_only_and_empty_untouched(void)
{
    Mvccpb__KeyValue kv[] = {make_kv("/app/a", (ProtobufCBinaryData){0, NULL}, 1),
                             make_kv("/sb/b", (ProtobufCBinaryData){0, NULL}, 2)};
    Mvccpb__KeyValue *kvs[] = {&kv[0], &kv[1]};
    Etcdserverpb__RangeResponse rr = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    rr.n_kvs = 2;
    rr.kvs = kvs;
    check_passthrough(intercept_kv_range_response, TRANSFORM_RESPONSE, "Range", &rr.base, pol);
    Etcdserverpb__RangeResponse count_only = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    count_only.count = 12;
    check_passthrough(intercept_kv_range_response, TRANSFORM_RESPONSE, "Range", &count_only.base,
                      pol);
}

static void test_prev_kvs(void)
{
    ProtobufCBinaryData v1 = seal(pol, "/app/p", "prev-one"), v2 = seal(pol, "/app/q", "prev-two");
    Mvccpb__KeyValue kp = make_kv("/app/p", v1, 3), kq = make_kv("/app/q", v2, 4);
    Etcdserverpb__PutResponse pr = ETCDSERVERPB__PUT_RESPONSE__INIT;
    pr.prev_kv = &kp;
    buf_t in = BUF_INIT, out = BUF_INIT;
    pack(&pr.base, &in);
    transform_ctx ctx = make_ctx(TRANSFORM_RESPONSE, "Put", pol);
    es_error err = {0};
    CHECK_EQ_INT(intercept_kv_put_response(&ctx, in.data, in.len, &out, &err), 0);
    Etcdserverpb__PutResponse *po = etcdserverpb__put_response__unpack(NULL, out.len, out.data);
    CHECK(po && po->prev_kv && bin_eq(po->prev_kv->value, "prev-one"));
    if (po)
        etcdserverpb__put_response__free_unpacked(po, NULL);

    Mvccpb__KeyValue *pk[] = {&kp, &kq};
    Etcdserverpb__DeleteRangeResponse dr = ETCDSERVERPB__DELETE_RANGE_RESPONSE__INIT;
    dr.deleted = 2;
    dr.n_prev_kvs = 2;
    dr.prev_kvs = pk;
    pack(&dr.base, &in);
    buf_reset(&out);
    CHECK_EQ_INT(intercept_kv_delete_range_response(&ctx, in.data, in.len, &out, &err), 0);
    Etcdserverpb__DeleteRangeResponse *d =
        etcdserverpb__delete_range_response__unpack(NULL, out.len, out.data);
    CHECK(d && d->n_prev_kvs == 2 && d->deleted == 2);
    if (d && d->n_prev_kvs == 2) {
        CHECK(bin_eq(d->prev_kvs[0]->value, "prev-one"));
        CHECK(bin_eq(d->prev_kvs[1]->value, "prev-two"));
    }
    if (d)
        etcdserverpb__delete_range_response__free_unpacked(d, NULL);
    free(v1.data);
    free(v2.data);
    buf_free(&in);
    buf_free(&out);
}

/* ---------------------------------------------------------------- Txn */

/* A Txn three levels deep with a Put at each level (one uncovered). */
static void test_txn_request_nested_three_deep(void)
{
    Etcdserverpb__PutRequest p[4] = {
        ETCDSERVERPB__PUT_REQUEST__INIT, ETCDSERVERPB__PUT_REQUEST__INIT,
        ETCDSERVERPB__PUT_REQUEST__INIT, ETCDSERVERPB__PUT_REQUEST__INIT};
    static const char *const keys[4] = {"/app/l1", "/sb/l2", "/registry/secrets/a/l3", "/other/l3"};
    static const char *const vals[4] = {"one", "two", "three", "free"};
    Etcdserverpb__RequestOp op[4] = {ETCDSERVERPB__REQUEST_OP__INIT, ETCDSERVERPB__REQUEST_OP__INIT,
                                     ETCDSERVERPB__REQUEST_OP__INIT,
                                     ETCDSERVERPB__REQUEST_OP__INIT};
    for (int i = 0; i < 4; i++) {
        p[i].key = (ProtobufCBinaryData){strlen(keys[i]), (uint8_t *)keys[i]};
        p[i].value = (ProtobufCBinaryData){strlen(vals[i]), (uint8_t *)vals[i]};
        op[i].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
        op[i].request_put = &p[i];
    }
    /* level 3: failure = [put l3, put other] */
    Etcdserverpb__RequestOp *l3ops[] = {&op[2], &op[3]};
    Etcdserverpb__TxnRequest t3 = ETCDSERVERPB__TXN_REQUEST__INIT;
    t3.n_failure = 2;
    t3.failure = l3ops;
    Etcdserverpb__RequestOp t3op = ETCDSERVERPB__REQUEST_OP__INIT;
    t3op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN;
    t3op.request_txn = &t3;
    /* level 2: success = [put l2, txn3] */
    Etcdserverpb__RequestOp *l2ops[] = {&op[1], &t3op};
    Etcdserverpb__TxnRequest t2 = ETCDSERVERPB__TXN_REQUEST__INIT;
    t2.n_success = 2;
    t2.success = l2ops;
    Etcdserverpb__RequestOp t2op = ETCDSERVERPB__REQUEST_OP__INIT;
    t2op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN;
    t2op.request_txn = &t2;
    /* level 1: a non-VALUE compare, success = [put l1], failure = [txn2] */
    Etcdserverpb__Compare cmp = ETCDSERVERPB__COMPARE__INIT;
    cmp.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
    cmp.key = BIN("/app/l1");
    cmp.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
    cmp.mod_revision = 5;
    Etcdserverpb__Compare *cmps[] = {&cmp};
    Etcdserverpb__RequestOp *l1s[] = {&op[0]}, *l1f[] = {&t2op};
    Etcdserverpb__TxnRequest t1 = ETCDSERVERPB__TXN_REQUEST__INIT;
    t1.n_compare = 1;
    t1.compare = cmps;
    t1.n_success = 1;
    t1.success = l1s;
    t1.n_failure = 1;
    t1.failure = l1f;

    buf_t in = BUF_INIT, out = BUF_INIT;
    pack(&t1.base, &in);
    transform_ctx ctx = make_ctx(TRANSFORM_REQUEST, "Txn", pol);
    es_error err = {0};
    CHECK_EQ_INT(intercept_kv_txn_request(&ctx, in.data, in.len, &out, &err), 0);
    Etcdserverpb__TxnRequest *o = etcdserverpb__txn_request__unpack(NULL, out.len, out.data);
    CHECK(o != NULL);
    if (o) {
        CHECK_EQ_INT(o->compare[0]->mod_revision, 5);
        Etcdserverpb__PutRequest *g1 = o->success[0]->request_put;
        Etcdserverpb__TxnRequest *o2 = o->failure[0]->request_txn;
        Etcdserverpb__PutRequest *g2 = o2->success[0]->request_put;
        Etcdserverpb__TxnRequest *o3 = o2->success[1]->request_txn;
        Etcdserverpb__PutRequest *g3 = o3->failure[0]->request_put;
        Etcdserverpb__PutRequest *g4 = o3->failure[1]->request_put;
        CHECK(has_prefix(g1->value, "k8s:enc:aesgcm:v1:k1:"));
        CHECK(has_prefix(g2->value, "k8s:enc:secretbox:v1:s1:"));
        CHECK(has_prefix(g3->value, "k8s:enc:aesgcm:v1:sec:"));
        check_opens(g1->value, keys[0], vals[0]);
        check_opens(g2->value, keys[1], vals[1]);
        check_opens(g3->value, keys[2], vals[2]);
        CHECK(bin_eq(g4->value, "free"));
        etcdserverpb__txn_request__free_unpacked(o, NULL);
    }
    buf_free(&in);
    buf_free(&out);
}

static void test_txn_response_nested_three_deep(void)
{
    ProtobufCBinaryData v1 = seal(pol, "/app/r1", "r-one"), v2 = seal(pol, "/sb/r2", "r-two"),
                        v3 = seal(pol, "/app/r3", "r-three");
    Mvccpb__KeyValue k1 = make_kv("/app/r1", v1, 1), k2 = make_kv("/sb/r2", v2, 2),
                     k3 = make_kv("/app/r3", v3, 3), k4 = make_kv("/other/r4", BIN("r-four"), 4);
    /* level 3: a delete with prev_kvs [k3, k4] */
    Mvccpb__KeyValue *dk[] = {&k3, &k4};
    Etcdserverpb__DeleteRangeResponse del = ETCDSERVERPB__DELETE_RANGE_RESPONSE__INIT;
    del.deleted = 2;
    del.n_prev_kvs = 2;
    del.prev_kvs = dk;
    Etcdserverpb__ResponseOp delop = ETCDSERVERPB__RESPONSE_OP__INIT;
    delop.response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE;
    delop.response_delete_range = &del;
    Etcdserverpb__ResponseOp *r3[] = {&delop};
    Etcdserverpb__TxnResponse t3 = ETCDSERVERPB__TXN_RESPONSE__INIT;
    t3.n_responses = 1;
    t3.responses = r3;
    Etcdserverpb__ResponseOp t3op = ETCDSERVERPB__RESPONSE_OP__INIT;
    t3op.response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_TXN;
    t3op.response_txn = &t3;
    /* level 2: put with prev_kv k2, then txn3 */
    Etcdserverpb__PutResponse put = ETCDSERVERPB__PUT_RESPONSE__INIT;
    put.prev_kv = &k2;
    Etcdserverpb__ResponseOp putop = ETCDSERVERPB__RESPONSE_OP__INIT;
    putop.response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT;
    putop.response_put = &put;
    Etcdserverpb__ResponseOp *r2[] = {&putop, &t3op};
    Etcdserverpb__TxnResponse t2 = ETCDSERVERPB__TXN_RESPONSE__INIT;
    t2.n_responses = 2;
    t2.responses = r2;
    t2.succeeded = 1;
    Etcdserverpb__ResponseOp t2op = ETCDSERVERPB__RESPONSE_OP__INIT;
    t2op.response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_TXN;
    t2op.response_txn = &t2;
    /* level 1: range [k1], txn2 */
    Mvccpb__KeyValue *rk[] = {&k1};
    Etcdserverpb__RangeResponse rng = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    rng.n_kvs = 1;
    rng.kvs = rk;
    rng.count = 1;
    Etcdserverpb__ResponseOp rop = ETCDSERVERPB__RESPONSE_OP__INIT;
    rop.response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE;
    rop.response_range = &rng;
    Etcdserverpb__ResponseOp *r1[] = {&rop, &t2op};
    Etcdserverpb__TxnResponse t1 = ETCDSERVERPB__TXN_RESPONSE__INIT;
    t1.n_responses = 2;
    t1.responses = r1;
    t1.succeeded = 1;

    buf_t in = BUF_INIT, out = BUF_INIT;
    pack(&t1.base, &in);
    transform_ctx ctx = make_ctx(TRANSFORM_RESPONSE, "Txn", pol);
    es_error err = {0};
    CHECK_EQ_INT(intercept_kv_txn_response(&ctx, in.data, in.len, &out, &err), 0);
    Etcdserverpb__TxnResponse *o = etcdserverpb__txn_response__unpack(NULL, out.len, out.data);
    CHECK(o != NULL);
    if (o) {
        CHECK(bin_eq(o->responses[0]->response_range->kvs[0]->value, "r-one"));
        Etcdserverpb__TxnResponse *o2 = o->responses[1]->response_txn;
        CHECK(bin_eq(o2->responses[0]->response_put->prev_kv->value, "r-two"));
        Etcdserverpb__DeleteRangeResponse *od =
            o2->responses[1]->response_txn->responses[0]->response_delete_range;
        CHECK(bin_eq(od->prev_kvs[0]->value, "r-three"));
        CHECK(bin_eq(od->prev_kvs[1]->value, "r-four"));
        etcdserverpb__txn_response__free_unpacked(o, NULL);
    }
    free(v1.data);
    free(v2.data);
    free(v3.data);
    buf_free(&in);
    buf_free(&out);
}

static int run_txn(const Etcdserverpb__TxnRequest *t, buf_t *out, es_error *err)
{
    buf_t in = BUF_INIT;
    pack(&t->base, &in);
    buf_reset(out);
    transform_ctx ctx = make_ctx(TRANSFORM_REQUEST, "Txn", pol);
    memset(err, 0, sizeof(*err));
    int rc = intercept_kv_txn_request(&ctx, in.data, in.len, out, err);
    buf_free(&in);
    return rc;
}

static void test_txn_value_compares(void)
{
    Etcdserverpb__Compare c = ETCDSERVERPB__COMPARE__INIT;
    c.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE;
    c.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
    c.value = BIN("secret-guess");
    Etcdserverpb__Compare *cs[] = {&c};
    Etcdserverpb__TxnRequest t = ETCDSERVERPB__TXN_REQUEST__INIT;
    t.n_compare = 1;
    t.compare = cs;
    buf_t out = BUF_INIT, in = BUF_INIT;
    es_error err;

    /* uncovered key: passes to etcd unchanged */
    c.key = BIN("/other/k");
    CHECK_EQ_INT(run_txn(&t, &out, &err), 0);
    pack(&t.base, &in);
    CHECK_EQ_MEM(out.data, out.len, in.data, in.len);
    /* uncovered range */
    c.range_end = BIN("/other0");
    CHECK_EQ_INT(run_txn(&t, &out, &err), 0);

    /* protected range: refused, nothing written */
    c.key = BIN("/app/");
    c.range_end = BIN("/app0");
    CHECK_EQ_INT(run_txn(&t, &out, &err), -1);
    CHECK_EQ_INT(err.code, 9);
    CHECK(strstr(err.msg, "Txn compare on VALUE with range_end over encrypted keys cannot be "
                          "evaluated") != NULL);
    CHECK(strstr(err.msg, "secret-guess") == NULL);
    CHECK_EQ_INT(out.len, 0);
    /* a range that only overlaps a protected prefix (from-key: "\0") */
    c.key = BIN("/a");
    c.range_end = (ProtobufCBinaryData){1, (uint8_t *)"\0"};
    CHECK_EQ_INT(run_txn(&t, &out, &err), -1);
    CHECK_EQ_INT(err.code, 9);
    /* the storage prefix counts as protected when any resource rule exists */
    c.key = BIN("/registry/configmaps/");
    c.range_end = BIN("/registry/configmaps0");
    CHECK_EQ_INT(run_txn(&t, &out, &err), -1);

    /* single protected key at the top level: handed to txn_compare (which, without an async
     * handle, refuses: proves the hand-over happened and nothing was forwarded) */
    c.key = BIN("/app/k");
    c.range_end = (ProtobufCBinaryData){0, NULL};
    CHECK_EQ_INT(run_txn(&t, &out, &err), -1);
    CHECK_EQ_INT(err.code, 9);
    CHECK(strstr(err.msg, "cannot be emulated") != NULL);
    CHECK_EQ_INT(out.len, 0);

    /* the same compare in a nested Txn: also handed over to the emulation (every level is
     * emulated; without an async handle the hand-over refuses, so nothing is forwarded) */
    Etcdserverpb__TxnRequest inner = t;
    c.key = (ProtobufCBinaryData){7, (uint8_t *)"/app/\x01\""};
    Etcdserverpb__RequestOp op = ETCDSERVERPB__REQUEST_OP__INIT;
    op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN;
    op.request_txn = &inner;
    Etcdserverpb__RequestOp *ops[] = {&op};
    Etcdserverpb__TxnRequest outer = ETCDSERVERPB__TXN_REQUEST__INIT;
    outer.n_failure = 1;
    outer.failure = ops;
    CHECK_EQ_INT(run_txn(&outer, &out, &err), -1);
    CHECK_EQ_INT(err.code, 9);
    CHECK_MSG(strstr(err.msg, "cannot be emulated") != NULL, "%s", err.msg);
    CHECK_EQ_INT(out.len, 0);

    /* a Range sorted by VALUE over protected keys inside a Txn: refused */
    Etcdserverpb__RangeRequest rr = ETCDSERVERPB__RANGE_REQUEST__INIT;
    rr.key = BIN("/app/");
    rr.range_end = BIN("/app0");
    rr.sort_target = ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VALUE;
    Etcdserverpb__RequestOp rop = ETCDSERVERPB__REQUEST_OP__INIT;
    rop.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
    rop.request_range = &rr;
    Etcdserverpb__RequestOp *rops[] = {&rop};
    Etcdserverpb__TxnRequest rt = ETCDSERVERPB__TXN_REQUEST__INIT;
    rt.n_success = 1;
    rt.success = rops;
    CHECK_EQ_INT(run_txn(&rt, &out, &err), -1);
    CHECK_EQ_INT(err.code, 9);
    CHECK(strstr(err.msg, "inside a Txn") != NULL);
    rr.sort_target = ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__MOD;
    CHECK_EQ_INT(run_txn(&rt, &out, &err), 0);
    buf_free(&out);
    buf_free(&in);
}

/* ---------------------------------------------------------------- Watch */

static void test_watch_fragmented_and_delete(void)
{
    ProtobufCBinaryData a1 = seal(pol, "/app/w", "w-new"), a0 = seal(pol, "/app/w", "w-old"),
                        b0 = seal(pol, "/sb/gone", "gone-value");
    Mvccpb__KeyValue kv1 = make_kv("/app/w", a1, 20), pkv1 = make_kv("/app/w", a0, 19);
    Mvccpb__KeyValue kvdel = make_kv("/sb/gone", (ProtobufCBinaryData){0, NULL}, 21),
                     pkvdel = make_kv("/sb/gone", b0, 18);
    Mvccpb__Event e1 = MVCCPB__EVENT__INIT, e2 = MVCCPB__EVENT__INIT;
    e1.type = MVCCPB__EVENT__EVENT_TYPE__PUT;
    e1.kv = &kv1;
    e1.prev_kv = &pkv1;
    e2.type = MVCCPB__EVENT__EVENT_TYPE__DELETE;
    e2.kv = &kvdel;
    e2.prev_kv = &pkvdel;
    Mvccpb__Event *ev1[] = {&e1}, *ev2[] = {&e2};
    Etcdserverpb__WatchResponse frag[2] = {ETCDSERVERPB__WATCH_RESPONSE__INIT,
                                           ETCDSERVERPB__WATCH_RESPONSE__INIT};
    frag[0].watch_id = frag[1].watch_id = 3;
    frag[0].fragment = 1; /* more follows */
    frag[0].n_events = 1;
    frag[0].events = ev1;
    frag[1].n_events = 1;
    frag[1].events = ev2;
    transform_ctx ctx = make_ctx(TRANSFORM_RESPONSE, "Watch", pol);
    for (int f = 0; f < 2; f++) {
        buf_t in = BUF_INIT, out = BUF_INIT;
        es_error err = {0};
        pack(&frag[f].base, &in);
        CHECK_EQ_INT(intercept_watch_response(&ctx, in.data, in.len, &out, &err), 0);
        Etcdserverpb__WatchResponse *o =
            etcdserverpb__watch_response__unpack(NULL, out.len, out.data);
        CHECK(o && o->n_events == 1 && o->watch_id == 3);
        if (o && o->n_events == 1) {
            CHECK_EQ_INT(o->fragment, f == 0);
            if (f == 0) {
                CHECK(bin_eq(o->events[0]->kv->value, "w-new"));
                CHECK(bin_eq(o->events[0]->prev_kv->value, "w-old"));
            } else {
                CHECK_EQ_INT(o->events[0]->type, MVCCPB__EVENT__EVENT_TYPE__DELETE);
                CHECK_EQ_INT(o->events[0]->kv->value.len, 0);
                CHECK_EQ_INT(o->events[0]->kv->mod_revision, 22);
                CHECK(bin_eq(o->events[0]->prev_kv->value, "gone-value"));
            }
        }
        if (o)
            etcdserverpb__watch_response__free_unpacked(o, NULL);
        buf_free(&in);
        buf_free(&out);
    }
    /* a DELETE event without prev_kv leaves the message byte-identical */
    e2.prev_kv = NULL;
    check_passthrough(intercept_watch_response, TRANSFORM_RESPONSE, "Watch", &frag[1].base, pol);
    free(a1.data);
    free(a0.data);
    free(b0.data);
}

/* ---------------------------------------------------------------- Election */

static void test_election_sites(void)
{
    V3electionpb__CampaignRequest cr = V3ELECTIONPB__CAMPAIGN_REQUEST__INIT;
    cr.name = BIN("/app/elect");
    cr.lease = 0x694d6a14c23d6708;
    cr.value = BIN("leader-one");
    buf_t in = BUF_INIT, out = BUF_INIT;
    es_error err = {0};
    transform_ctx ctx = make_ctx(TRANSFORM_REQUEST, "Campaign", pol);
    pack(&cr.base, &in);
    CHECK_EQ_INT(intercept_election_campaign_request(&ctx, in.data, in.len, &out, &err), 0);
    V3electionpb__CampaignRequest *co =
        v3electionpb__campaign_request__unpack(NULL, out.len, out.data);
    CHECK(co && has_prefix(co->value, "k8s:enc:aesgcm:v1:k1:"));
    if (co) {
        /* etcd stores it under "<name>/<lease %x>": that key is the AAD */
        check_opens(co->value, "/app/elect/694d6a14c23d6708", "leader-one");
        v3electionpb__campaign_request__free_unpacked(co, NULL);
    }
    /* a negative lease prints like Go's %x of an int64 */
    cr.lease = -0x10;
    pack(&cr.base, &in);
    buf_reset(&out);
    CHECK_EQ_INT(intercept_election_campaign_request(&ctx, in.data, in.len, &out, &err), 0);
    co = v3electionpb__campaign_request__unpack(NULL, out.len, out.data);
    if (co) {
        check_opens(co->value, "/app/elect/-10", "leader-one");
        v3electionpb__campaign_request__free_unpacked(co, NULL);
    }
    /* lease 0: the server would grant one, the key is unknown: refused on protected names */
    cr.lease = 0;
    pack(&cr.base, &in);
    buf_reset(&out);
    CHECK_EQ_INT(intercept_election_campaign_request(&ctx, in.data, in.len, &out, &err), -1);
    CHECK_EQ_INT(err.code, 9);
    CHECK(strstr(err.msg, "\"/app/elect\" needs a lease") != NULL);
    cr.name = BIN("plain-election"); /* unprotected: passes */
    check_passthrough(intercept_election_campaign_request, TRANSFORM_REQUEST, "Campaign", &cr.base,
                      pol);

    V3electionpb__LeaderKey lk = V3ELECTIONPB__LEADER_KEY__INIT;
    lk.name = BIN("/sb/e");
    lk.key = BIN("/sb/e/1234");
    lk.lease = 0x1234;
    V3electionpb__ProclaimRequest pr = V3ELECTIONPB__PROCLAIM_REQUEST__INIT;
    pr.leader = &lk;
    pr.value = BIN("proclaimed");
    pack(&pr.base, &in);
    buf_reset(&out);
    CHECK_EQ_INT(intercept_election_proclaim_request(&ctx, in.data, in.len, &out, &err), 0);
    V3electionpb__ProclaimRequest *po =
        v3electionpb__proclaim_request__unpack(NULL, out.len, out.data);
    CHECK(po && has_prefix(po->value, "k8s:enc:secretbox:v1:s1:"));
    if (po) {
        check_opens(po->value, "/sb/e/1234", "proclaimed");
        v3electionpb__proclaim_request__free_unpacked(po, NULL);
    }

    ProtobufCBinaryData sealed = seal(pol, "/sb/e/1234", "the-leader");
    Mvccpb__KeyValue kv = make_kv("/sb/e/1234", sealed, 5);
    V3electionpb__LeaderResponse lr = V3ELECTIONPB__LEADER_RESPONSE__INIT;
    lr.kv = &kv;
    pack(&lr.base, &in);
    ctx.dir = TRANSFORM_RESPONSE;
    for (int observe = 0; observe < 2; observe++) {
        buf_reset(&out);
        transform_fn fn =
            observe ? intercept_election_observe_response : intercept_election_leader_response;
        CHECK_EQ_INT(fn(&ctx, in.data, in.len, &out, &err), 0);
        V3electionpb__LeaderResponse *lo =
            v3electionpb__leader_response__unpack(NULL, out.len, out.data);
        CHECK(lo && lo->kv && bin_eq(lo->kv->value, "the-leader"));
        if (lo)
            v3electionpb__leader_response__free_unpacked(lo, NULL);
    }
    free(sealed.data);
    buf_free(&in);
    buf_free(&out);
}

/* ---------------------------------------------------------------- errors */

static int range_one(const char *key, size_t key_len, ProtobufCBinaryData value, buf_t *out,
                     es_error *err)
{
    Mvccpb__KeyValue kv = MVCCPB__KEY_VALUE__INIT;
    kv.key = (ProtobufCBinaryData){key_len, (uint8_t *)key};
    kv.value = value;
    Mvccpb__KeyValue *kvs[] = {&kv};
    Etcdserverpb__RangeResponse rr = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    rr.n_kvs = 1;
    rr.kvs = kvs;
    buf_t in = BUF_INIT;
    pack(&rr.base, &in);
    buf_reset(out);
    memset(err, 0, sizeof(*err));
    transform_ctx ctx = make_ctx(TRANSFORM_RESPONSE, "Range", pol);
    int rc = intercept_kv_range_response(&ctx, in.data, in.len, out, err);
    buf_free(&in);
    return rc;
}

static void test_decrypt_errors(void)
{
    buf_t out = BUF_INIT;
    es_error err;
    /* tampered GCM tag */
    ProtobufCBinaryData v = seal(pol, "/app/x", "TOPSECRETPLAINTEXT");
    v.data[v.len - 1] ^= 1;
    CHECK_EQ_INT(range_one("/app/x", 6, v, &out, &err), -1);
    CHECK_EQ_INT(err.code, 13);
    CHECK_MSG(strstr(err.msg, "etcdseal: cannot decrypt value of key \"/app/x\": cipher: message "
                              "authentication failed") != NULL,
              "%s", err.msg);
    CHECK(strstr(err.msg, "TOPSECRET") == NULL);
    CHECK(strstr(err.msg, "k8s:enc:aesgcm:v1:k1:") == NULL);
    CHECK_EQ_INT(out.len, 0);
    v.data[v.len - 1] ^= 1;
    /* value moved to another key (AAD mismatch) */
    CHECK_EQ_INT(range_one("/app/y", 6, v, &out, &err), -1);
    CHECK(strstr(err.msg, "\"/app/y\"") != NULL);
    /* binary key: escaped, never raw */
    static const char bkey[] = "/app/\x00\xff\"\\\n";
    CHECK_EQ_INT(range_one(bkey, sizeof bkey - 1, v, &out, &err), -1);
    CHECK_MSG(strstr(err.msg, "\"/app/\\x00\\xff\\\"\\\\\\x0a\"") != NULL, "%s", err.msg);
    CHECK(memchr(err.msg, 0xff, strlen(err.msg)) == NULL);
    /* plaintext under a protected key whose chain has no identity: no matching prefix */
    CHECK_EQ_INT(range_one("/app/plain", 10, BIN("TOPSECRETPLAIN"), &out, &err), -1);
    CHECK(strstr(err.msg, "no matching prefix found") != NULL);
    CHECK(strstr(err.msg, "TOPSECRET") == NULL);
    /* encrypted-looking data under a key no rule covers: kube's identity check */
    CHECK_EQ_INT(range_one("/other/x", 8, BIN("k8s:enc:aesgcm:v1:k1:xxxxxxxx"), &out, &err), -1);
    CHECK(strstr(err.msg, "identity transformer tried to read encrypted data") != NULL);
    /* plaintext under a chain that lists identity: readable */
    CHECK_EQ_INT(range_one("/registry/secrets/a/b", 21, BIN("{}"), &out, &err), 0);
    /* a very long key is shortened */
    char longkey[600];
    memset(longkey, 'k', sizeof longkey);
    memcpy(longkey, "/app/", 5);
    CHECK_EQ_INT(range_one(longkey, sizeof longkey, BIN("garbage"), &out, &err), -1);
    CHECK(strstr(err.msg, "...\"") != NULL);
    CHECK(strlen(err.msg) < ES_ERROR_MSG_MAX);
    /* an error in the second kv: the first kv's plaintext never appears anywhere */
    ProtobufCBinaryData good = seal(pol, "/app/a", "FIRSTPLAIN");
    Mvccpb__KeyValue k1 = make_kv("/app/a", good, 1), k2 = make_kv("/app/b", BIN("bad"), 2);
    Mvccpb__KeyValue *kvs[] = {&k1, &k2};
    Etcdserverpb__RangeResponse rr = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    rr.n_kvs = 2;
    rr.kvs = kvs;
    buf_t in = BUF_INIT;
    pack(&rr.base, &in);
    buf_reset(&out);
    transform_ctx ctx = make_ctx(TRANSFORM_RESPONSE, "Range", pol);
    CHECK_EQ_INT(intercept_kv_range_response(&ctx, in.data, in.len, &out, &err), -1);
    CHECK_EQ_INT(out.len, 0);
    CHECK(strstr(err.msg, "FIRSTPLAIN") == NULL && strstr(err.msg, "\"/app/b\"") != NULL);
    /* watch: the transformer fails (the relay then ends the stream with this status) */
    Mvccpb__Event e = MVCCPB__EVENT__INIT;
    e.kv = &k2;
    Mvccpb__Event *evs[] = {&e};
    Etcdserverpb__WatchResponse wr = ETCDSERVERPB__WATCH_RESPONSE__INIT;
    wr.n_events = 1;
    wr.events = evs;
    pack(&wr.base, &in);
    buf_reset(&out);
    CHECK_EQ_INT(intercept_watch_response(&ctx, in.data, in.len, &out, &err), -1);
    CHECK_EQ_INT(err.code, 13);
    CHECK_EQ_INT(out.len, 0);
    free(v.data);
    free(good.data);
    buf_free(&in);
    buf_free(&out);
}

static void test_format_key(void)
{
    char s[16];
    CHECK_EQ_INT(intercept_format_key(s, sizeof s, (const uint8_t *)"/a\"b", 4), 5);
    CHECK_EQ_STR(s, "/a\\\"b");
    intercept_format_key(s, sizeof s, (const uint8_t *)"\x7f\x80", 2);
    CHECK_EQ_STR(s, "\\x7f\\x80");
    intercept_format_key(s, sizeof s, (const uint8_t *)"0123456789abcdefghij", 20);
    CHECK_EQ_STR(s, "0123456789ab...");
    intercept_format_key(s, 8, (const uint8_t *)"\x01\x02", 2);
    CHECK_EQ_STR(s, "\\x01...");
}

/* ---------------------------------------------------------------- protected ranges */

static int prot(const char *k, size_t kl, const char *e, size_t el)
{
    return intercept_range_protected(pol, (const uint8_t *)k, kl, (const uint8_t *)e, el);
}
#define PROT(k, e) prot(k, sizeof(k) - 1, e, sizeof(e) - 1)

static void test_range_protected(void)
{
    CHECK_EQ_INT(PROT("/app/x", ""), 1);
    CHECK_EQ_INT(PROT("/ap", ""), 0);
    CHECK_EQ_INT(PROT("/app/", "/app0"), 1);        /* the prefix itself */
    CHECK_EQ_INT(PROT("/aa", "/app/"), 0);          /* ends right before it */
    CHECK_EQ_INT(PROT("/aa", "/app/\x01"), 1);      /* includes "/app/" */
    CHECK_EQ_INT(PROT("/app0", "/b"), 0);           /* starts right after it */
    CHECK_EQ_INT(PROT("/app/zzz", "/app/zzzz"), 1); /* inside */
    CHECK_EQ_INT(prot("/z", 2, "\0", 1), 0);        /* from "/z" on: nothing protected there */
    CHECK_EQ_INT(prot("/a", 2, "\0", 1), 1);        /* from "/a" on: /app/ and more */
    CHECK_EQ_INT(prot("\0", 1, "\0", 1), 1);        /* everything */
    CHECK_EQ_INT(PROT("/registry/pods/", "/registry/pods0"), 1); /* conservative */
    CHECK_EQ_INT(PROT("/registry/pods/a", ""), 0);               /* single key: exact answer */
    CHECK_EQ_INT(PROT("/reg", "/registry/"), 0);
    CHECK_EQ_INT(intercept_range_protected(NULL, (const uint8_t *)"/app/x", 6, NULL, 0), 0);
    CHECK_EQ_INT(intercept_range_protected(pol_old, (const uint8_t *)"/registry/", 10,
                                           (const uint8_t *)"/registry0", 10),
                 0); /* only literal rules: the storage prefix is free */
}

/* ---------------------------------------------------------------- metrics */

static uint64_t ops_value(const char *type, const char *prefix, const char *status)
{
    char labels[200];
    snprintf(labels, sizeof labels,
             "transformation_type=\"%s\",transformer_prefix=\"%s\",status=\"%s\"", type, prefix,
             status);
    return metrics_counter_value(
        metrics_counter_get("apiserver_storage_transformation_operations_total",
                            "Total number of transformations.", labels));
}

static uint64_t dur_count(const char *type, const char *prefix)
{
    double b[25];
    double x = 5e-6;
    for (int i = 0; i < 25; i++, x *= 2)
        b[i] = x;
    char labels[160];
    snprintf(labels, sizeof labels, "transformation_type=\"%s\",transformer_prefix=\"%s\"", type,
             prefix);
    return metrics_histogram_count(metrics_histogram_get(
        "apiserver_storage_transformation_duration_seconds",
        "Latencies in seconds of value transformation operations.", labels, b, 25));
}

static uint64_t stale_value(const char *prefix)
{
    char labels[96];
    snprintf(labels, sizeof labels, "transformer_prefix=\"%s\"", prefix);
    return metrics_counter_value(metrics_counter_get(
        "etcdseal_stale_reads_total",
        "Values read with a provider or key other than the first of their rule (rewrite them "
        "with etcdseal rewrap).",
        labels));
}

static void test_metrics(void)
{
    const char *gcm = "k8s:enc:aesgcm:v1:";
    uint64_t to0 = ops_value("to_storage", gcm, "OK"), from0 = ops_value("from_storage", gcm, "OK"),
             fail0 = ops_value("from_storage", gcm, "unknown-non-grpc"),
             unk0 = ops_value("from_storage", "unknown", "unknown-non-grpc"),
             dto0 = dur_count("to_storage", gcm), dfrom0 = dur_count("from_storage", gcm),
             sb0 = ops_value("to_storage", "k8s:enc:secretbox:v1:", "OK"), st0 = stale_value(gcm),
             idf0 = ops_value("from_storage", "identity", "OK");
    put_case("/app/m1", "k8s:enc:aesgcm:v1:k1:");
    put_case("/app/m2", "k8s:enc:aesgcm:v1:k1:");
    put_case("/sb/m3", "k8s:enc:secretbox:v1:s1:");
    buf_t out = BUF_INIT;
    es_error err;
    ProtobufCBinaryData v = seal(pol, "/app/m1", "x");
    CHECK_EQ_INT(range_one("/app/m1", 7, v, &out, &err), 0);
    v.data[v.len - 1] ^= 1;
    CHECK_EQ_INT(range_one("/app/m1", 7, v, &out, &err), -1);
    CHECK_EQ_INT(range_one("/app/m1", 7, BIN("plain"), &out, &err), -1);
    /* stale: written by the old key of /rot/ */
    ProtobufCBinaryData old = seal(pol_old, "/rot/s", "rotated");
    CHECK(has_prefix(old, "k8s:enc:aesgcm:v1:old:"));
    CHECK_EQ_INT(range_one("/rot/s", 6, old, &out, &err), 0);
    /* identity read (plaintext under a chain with identity) */
    CHECK_EQ_INT(range_one("/registry/secrets/a/b", 21, BIN("{}"), &out, &err), 0);

    CHECK_EQ_INT(ops_value("to_storage", gcm, "OK") - to0, 2);
    CHECK_EQ_INT(ops_value("to_storage", "k8s:enc:secretbox:v1:", "OK") - sb0, 1);
    CHECK_EQ_INT(dur_count("to_storage", gcm) - dto0, 2);
    CHECK_EQ_INT(ops_value("from_storage", gcm, "OK") - from0, 2);
    CHECK_EQ_INT(dur_count("from_storage", gcm) - dfrom0, 2); /* failures have no duration */
    CHECK_EQ_INT(ops_value("from_storage", gcm, "unknown-non-grpc") - fail0, 1);
    CHECK_EQ_INT(ops_value("from_storage", "unknown", "unknown-non-grpc") - unk0, 1);
    CHECK_EQ_INT(stale_value(gcm) - st0, 1);
    CHECK_EQ_INT(ops_value("from_storage", "identity", "OK") - idf0, 1);
    buf_t text = BUF_INIT;
    CHECK(metrics_render(&text) == 0);
    CHECK(text.data && strstr((char *)text.data,
                              "apiserver_storage_transformation_duration_seconds_bucket{"
                              "transformation_type=\"to_storage\",transformer_prefix=\"k8s:enc:"
                              "aesgcm:v1:\",le=\"5e-06\"}") != NULL);
    buf_free(&text);
    free(v.data);
    free(old.data);
    buf_free(&out);
}

/* ---------------------------------------------------------------- timing */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double time_fn(transform_fn fn, enum transform_dir dir, policy_encryption *p,
                      const buf_t *in, int iters)
{
    buf_t out = BUF_INIT;
    es_error err = {0};
    transform_ctx ctx = make_ctx(dir, "bench", p);
    double best = 1e9;
    for (int trial = 0; trial < 3; trial++) {
        double t0 = now();
        for (int i = 0; i < iters; i++) {
            buf_reset(&out);
            if (fn(&ctx, in->data, in->len, &out, &err) != 0) {
                CHECK_MSG(0, "timing run failed: %s", err.msg);
                buf_free(&out);
                return 0;
            }
        }
        double per = (now() - t0) / iters;
        if (per < best)
            best = per;
    }
    buf_free(&out);
    return best * 1e6;
}

static void test_timing(void)
{
    enum { ITERS = 10000 };
    uint8_t val[256];
    for (size_t i = 0; i < sizeof val; i++)
        val[i] = (uint8_t)('a' + i % 26);
    Etcdserverpb__PutRequest r = ETCDSERVERPB__PUT_REQUEST__INIT;
    r.key = BIN("/app/bench/key-000001");
    r.value = (ProtobufCBinaryData){sizeof val, val};
    buf_t put_in = BUF_INIT, put_other = BUF_INIT, rng_in = BUF_INIT, rng_plain = BUF_INIT;
    pack(&r.base, &put_in);
    r.key = BIN("/other/bench/key-000001");
    pack(&r.base, &put_other);

    char plain[257];
    memcpy(plain, val, 256);
    plain[256] = '\0';
    ProtobufCBinaryData sealed = seal(pol, "/app/bench/key-000001", plain);
    Mvccpb__KeyValue kv = make_kv("/app/bench/key-000001", sealed, 100);
    Mvccpb__KeyValue *kvs[] = {&kv};
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    h.cluster_id = 1;
    h.member_id = 2;
    h.revision = 101;
    h.raft_term = 3;
    Etcdserverpb__RangeResponse rr = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    rr.header = &h;
    rr.n_kvs = 1;
    rr.kvs = kvs;
    rr.count = 1;
    pack(&rr.base, &rng_in);
    kv.value = (ProtobufCBinaryData){sizeof val, val};
    pack(&rr.base, &rng_plain);

    double put_none = time_fn(intercept_kv_put_request, TRANSFORM_REQUEST, NULL, &put_in, ITERS);
    double put_unc = time_fn(intercept_kv_put_request, TRANSFORM_REQUEST, pol, &put_other, ITERS);
    double put_gcm = time_fn(intercept_kv_put_request, TRANSFORM_REQUEST, pol, &put_in, ITERS);
    double rng_none =
        time_fn(intercept_kv_range_response, TRANSFORM_RESPONSE, NULL, &rng_plain, ITERS);
    double rng_gcm = time_fn(intercept_kv_range_response, TRANSFORM_RESPONSE, pol, &rng_in, ITERS);
    printf("timing (256 B value, %d iterations, best of 3): Put request: no policy %.2f us, "
           "uncovered key %.2f us, aesgcm %.2f us (+%.2f); Range response 1 kv: no policy "
           "%.2f us, aesgcm %.2f us (+%.2f)\n",
           ITERS, put_none, put_unc, put_gcm, put_gcm - put_none, rng_none, rng_gcm,
           rng_gcm - rng_none);
    CHECK(put_gcm > 0 && rng_gcm > 0);
    free(sealed.data);
    buf_free(&put_in);
    buf_free(&put_other);
    buf_free(&rng_in);
    buf_free(&rng_plain);
}

int main(int argc, char **argv)
{
    (void)argc;
    TEST_BEGIN(argv[0]);
    es_error err = {0};
    if (policy_encryption_load_buffer("test", config_yaml, sizeof config_yaml - 1, NULL, &pol,
                                      &err) != 0 ||
        policy_encryption_load_buffer("old", old_yaml, sizeof old_yaml - 1, NULL, &pol_old, &err) !=
            0) {
        fprintf(stderr, "policy: %s\n", err.msg);
        return 1;
    }
    RUN(test_put_every_provider);
    RUN(test_put_aad_is_key);
    RUN(test_uncovered_byte_identical);
    RUN(test_put_empty_value_encrypted);
    RUN(test_range_response_decrypts);
    RUN(test_keys_only_and_empty_untouched);
    RUN(test_prev_kvs);
    RUN(test_txn_request_nested_three_deep);
    RUN(test_txn_response_nested_three_deep);
    RUN(test_txn_value_compares);
    RUN(test_watch_fragmented_and_delete);
    RUN(test_election_sites);
    RUN(test_decrypt_errors);
    RUN(test_format_key);
    RUN(test_range_protected);
    RUN(test_metrics);
    RUN(test_timing);
    policy_encryption_unref(pol);
    policy_encryption_unref(pol_old);
    intercept_thread_release();
    crypto_thread_cleanup();
    return TEST_EXIT();
}
