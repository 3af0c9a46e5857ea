/* proxy_intercept_walk_test.c - the value interceptors visit EVERY value-bearing field of every
 * intercepted message type, exactly once, with the right key and site, and change nothing else.
 *
 * The oracle is independent of the walkers: it walks any decoded message generically through
 * protobuf-c descriptors and upper-cases every bytes field named "value" (KeyValue, PutRequest,
 * Compare, Campaign, Proclaim), recording what the hook must see. The test hook upper-cases
 * each value it is given. Output and oracle are then compared field by field (descriptor-driven
 * deep comparison, unknown fields included). Also: skips (keys_only, ignore_value, DELETE
 * events), the default hook forwarding bytes untouched, decode errors, hook errors, Txn depth
 * limit, MemberList rewrite, metrics counters, the arena's steady state, and a timing figure.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "base/metrics.h"
#include "etcdserverpb/rpc.pb-c.h"
#include "mvccpb/kv.pb-c.h"
#include "proxy/intercept_cluster.h"
#include "proxy/intercept_election.h"
#include "proxy/intercept_kv.h"
#include "proxy/intercept_values.h"
#include "proxy/intercept_watch.h"
#include "testlib.h"
#include "v3electionpb/v3election.pb-c.h"

#define BIN(s) ((ProtobufCBinaryData){sizeof(s) - 1, (uint8_t *)(s)})

/* ---------------------------------------------------------------- visit records */

typedef struct visit {
    enum intercept_site site;
    char key[64];
    char value[64];
} visit;

#define MAX_VISITS 64
static visit seen[MAX_VISITS];
static size_t n_seen;
static visit expected[MAX_VISITS];
static size_t n_expected;

static void record(visit *v, size_t *n, enum intercept_site site, const ProtobufCBinaryData *key,
                   const ProtobufCBinaryData *value)
{
    if (*n >= MAX_VISITS)
        return;
    visit *r = &v[(*n)++];
    r->site = site;
    snprintf(r->key, sizeof(r->key), "%.*s", (int)key->len, (const char *)key->data);
    snprintf(r->value, sizeof(r->value), "%.*s", (int)value->len, (const char *)value->data);
}

/* ---------------------------------------------------------------- test hooks */

static int upper_hook(transform_ctx *ctx, enum intercept_site site, const ProtobufCBinaryData *key,
                      ProtobufCBinaryData *value, es_error *err)
{
    (void)ctx;
    (void)err;
    record(seen, &n_seen, site, key, value);
    uint8_t *p = intercept_alloc(value->len);
    if (!p)
        return -1;
    for (size_t i = 0; i < value->len; i++)
        p[i] = (uint8_t)toupper(value->data[i]);
    value->data = p;
    return 1;
}

static int record_only_hook(transform_ctx *ctx, enum intercept_site site,
                            const ProtobufCBinaryData *key, ProtobufCBinaryData *value,
                            es_error *err)
{
    (void)ctx;
    (void)err;
    record(seen, &n_seen, site, key, value);
    return 0;
}

static int touch_hook(transform_ctx *ctx, enum intercept_site site, const ProtobufCBinaryData *key,
                      ProtobufCBinaryData *value, es_error *err)
{
    (void)ctx;
    (void)site;
    (void)key;
    (void)value;
    (void)err;
    return 1; /* "changed": forces re-encoding of an identical message */
}

static int failing_hook(transform_ctx *ctx, enum intercept_site site,
                        const ProtobufCBinaryData *key, ProtobufCBinaryData *value, es_error *err)
{
    (void)ctx;
    (void)site;
    (void)value;
    return es_error_set(err, 9, "refused key %.*s", (int)key->len, (const char *)key->data);
}

/* ---------------------------------------------------------------- descriptor helpers */

static size_t elem_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_ENUM:
    case PROTOBUF_C_TYPE_FLOAT:
        return 4;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    default:
        return 8;
    }
}

/* Pointer to the field's storage and element count (0 when an unset oneof arm/NULL message). */
static void *field_at(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, size_t *n)
{
    char *base = (char *)m;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        *n = *(size_t *)(base + f->quantifier_offset);
        return *(void **)(base + f->offset);
    }
    *n = 1;
    if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
        *(uint32_t *)(base + f->quantifier_offset) != f->id)
        *n = 0;
    if (f->type == PROTOBUF_C_TYPE_MESSAGE && *n && !*(void **)(base + f->offset))
        *n = 0;
    return base + f->offset;
}

static bool unknown_equal(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
    if (a->n_unknown_fields != b->n_unknown_fields)
        return false;
    for (unsigned i = 0; i < a->n_unknown_fields; i++) {
        const ProtobufCMessageUnknownField *x = &a->unknown_fields[i], *y = &b->unknown_fields[i];
        if (x->tag != y->tag || x->wire_type != y->wire_type || x->len != y->len ||
            memcmp(x->data, y->data, x->len) != 0)
            return false;
    }
    return true;
}

static bool msg_equal(const ProtobufCMessage *a, const ProtobufCMessage *b, const char **where)
{
    if (!a || !b)
        return a == b;
    if (a->descriptor != b->descriptor) {
        *where = "descriptor";
        return false;
    }
    const ProtobufCMessageDescriptor *d = a->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        size_t na, nb;
        char *pa = field_at(a, f, &na), *pb = field_at(b, f, &nb);
        if (na != nb) {
            *where = f->name;
            return false;
        }
        for (size_t k = 0; k < na; k++) {
            bool eq;
            size_t es = elem_size(f->type);
            char *ea = pa + k * es, *eb = pb + k * es;
            switch (f->type) {
            case PROTOBUF_C_TYPE_STRING:
                eq =
                    strcmp(*(char **)ea ? *(char **)ea : "", *(char **)eb ? *(char **)eb : "") == 0;
                break;
            case PROTOBUF_C_TYPE_BYTES: {
                ProtobufCBinaryData *x = (ProtobufCBinaryData *)ea, *y = (ProtobufCBinaryData *)eb;
                eq = x->len == y->len && (x->len == 0 || memcmp(x->data, y->data, x->len) == 0);
                break;
            }
            case PROTOBUF_C_TYPE_MESSAGE:
                eq = msg_equal(*(ProtobufCMessage **)ea, *(ProtobufCMessage **)eb, where);
                if (!eq)
                    return false;
                break;
            default:
                eq = memcmp(ea, eb, es) == 0;
            }
            if (!eq) {
                *where = f->name;
                return false;
            }
        }
    }
    if (!unknown_equal(a, b)) {
        *where = "unknown fields";
        return false;
    }
    return true;
}

/* ---------------------------------------------------------------- the oracle */

static const ProtobufCBinaryData *bytes_field(const ProtobufCMessage *m, const char *name)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(m->descriptor, name);
    if (!f || f->type != PROTOBUF_C_TYPE_BYTES)
        return NULL;
    return (const ProtobufCBinaryData *)((const char *)m + f->offset);
}

static bool is(const ProtobufCMessage *m, const ProtobufCMessageDescriptor *d)
{
    return m && m->descriptor == d;
}

/* Which site a "value" field of `m` is, given the parent message and the field holding m. */
static int oracle_site(const ProtobufCMessage *m, const ProtobufCMessage *parent, const char *via)
{
    if (is(m, &etcdserverpb__put_request__descriptor))
        return INTERCEPT_SITE_PUT_VALUE;
    if (is(m, &etcdserverpb__compare__descriptor))
        return INTERCEPT_SITE_COMPARE_VALUE;
    if (is(m, &v3electionpb__campaign_request__descriptor) ||
        is(m, &v3electionpb__proclaim_request__descriptor))
        return INTERCEPT_SITE_ELECTION_VALUE;
    if (is(m, &mvccpb__key_value__descriptor)) {
        if (is(parent, &mvccpb__event__descriptor))
            return strcmp(via, "kv") == 0 ? INTERCEPT_SITE_EVENT_KV : INTERCEPT_SITE_EVENT_PREV_KV;
        if (is(parent, &v3electionpb__leader_response__descriptor))
            return INTERCEPT_SITE_ELECTION_KV;
        return strcmp(via, "kvs") == 0 ? INTERCEPT_SITE_KV : INTERCEPT_SITE_PREV_KV;
    }
    return -1;
}

static void oracle_walk(ProtobufCMessage *m, const ProtobufCMessage *parent, const char *via)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        size_t n;
        char *p = field_at(m, f, &n);
        if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
            for (size_t k = 0; k < n; k++)
                oracle_walk(((ProtobufCMessage **)p)[k], m, f->name);
            continue;
        }
        if (f->type != PROTOBUF_C_TYPE_BYTES || strcmp(f->name, "value") != 0 || n == 0)
            continue;
        ProtobufCBinaryData *v = (ProtobufCBinaryData *)p;
        int site = oracle_site(m, parent, via);
        if (site < 0)
            continue;
        bool visit = true;
        if (is(m, &mvccpb__key_value__descriptor))
            visit = v->len > 0; /* absent values: keys_only, DELETE events */
        if (is(m, &etcdserverpb__put_request__descriptor) &&
            ((Etcdserverpb__PutRequest *)m)->ignore_value)
            visit = v->len > 0;
        if (!visit)
            continue;
        char keybuf[64];
        ProtobufCBinaryData key = {0, (uint8_t *)keybuf};
        if (is(m, &v3electionpb__campaign_request__descriptor)) {
            V3electionpb__CampaignRequest *c = (V3electionpb__CampaignRequest *)m;
            key.len = (size_t)snprintf(keybuf, sizeof(keybuf), "%.*s/%" PRIx64, (int)c->name.len,
                                       (char *)c->name.data, (uint64_t)c->lease);
        } else if (is(m, &v3electionpb__proclaim_request__descriptor)) {
            V3electionpb__ProclaimRequest *pr = (V3electionpb__ProclaimRequest *)m;
            if (pr->leader)
                key = pr->leader->key;
        } else {
            key = *bytes_field(m, "key");
        }
        record(expected, &n_expected, (enum intercept_site)site, &key, v);
        for (size_t k = 0; k < v->len; k++)
            v->data[k] = (uint8_t)toupper(v->data[k]);
    }
}

/* ---------------------------------------------------------------- the driver */

static transform_ctx make_ctx(enum transform_dir dir, const char *method)
{
    static void *state;
    transform_ctx c = {.dir = dir, .method = method, .stream_state = &state};
    return c;
}

static void pack(const ProtobufCMessage *m, buf_t *b)
{
    buf_reset(b);
    size_t n = protobuf_c_message_get_packed_size(m);
    buf_reserve(b, n);
    b->len = protobuf_c_message_pack(m, b->data);
}

/* Runs `fn` on the packed `orig` three ways and checks each result. Returns the visit count. */
static size_t check_case(const char *what, transform_fn fn, enum transform_dir dir,
                         const ProtobufCMessage *orig)
{
    buf_t in = BUF_INIT, want = BUF_INIT, out = BUF_INIT;
    es_error err = {0};
    transform_ctx ctx = make_ctx(dir, what);
    pack(orig, &in);

    /* oracle: decode a private copy, upper-case every value, re-encode */
    n_expected = 0;
    ProtobufCMessage *oracle = protobuf_c_message_unpack(orig->descriptor, NULL, in.len, in.data);
    CHECK(oracle != NULL);
    if (!oracle)
        return 0;
    oracle_walk(oracle, NULL, "");
    pack(oracle, &want);

    /* 1. upper-casing hook: every value visited once, output == oracle field by field */
    n_seen = 0;
    intercept_set_value_hook(upper_hook);
    int rc = fn(&ctx, in.data, in.len, &out, &err);
    CHECK_MSG(rc == 0, "%s: %s", what, err.msg);
    ProtobufCMessage *got = protobuf_c_message_unpack(orig->descriptor, NULL, out.len, out.data);
    ProtobufCMessage *exp = protobuf_c_message_unpack(orig->descriptor, NULL, want.len, want.data);
    CHECK_MSG(got != NULL, "%s: output does not decode", what);
    const char *where = "";
    CHECK_MSG(got && exp && msg_equal(got, exp, &where), "%s: output differs at %s", what, where);
    CHECK_MSG(n_seen == n_expected, "%s: %zu visits, expected %zu", what, n_seen, n_expected);
    for (size_t i = 0; i < n_seen && i < n_expected; i++) {
        CHECK_MSG(seen[i].site == expected[i].site, "%s visit %zu: site %s, expected %s", what, i,
                  intercept_site_name(seen[i].site), intercept_site_name(expected[i].site));
        CHECK_EQ_STR(seen[i].key, expected[i].key);
        CHECK_EQ_STR(seen[i].value, expected[i].value);
    }
    if (got)
        protobuf_c_message_free_unpacked(got, NULL);
    if (exp)
        protobuf_c_message_free_unpacked(exp, NULL);

    /* 2. a hook that changes nothing: the original bytes are forwarded as they are */
    size_t visits = n_seen;
    n_seen = 0;
    buf_reset(&out);
    intercept_set_value_hook(record_only_hook);
    CHECK(fn(&ctx, in.data, in.len, &out, &err) == 0);
    CHECK_EQ_INT(n_seen, visits);
    CHECK_EQ_MEM(out.data, out.len, in.data, in.len);

    /* 3. the production hook (this issue: values unchanged) */
    buf_reset(&out);
    intercept_set_value_hook(NULL);
    CHECK(fn(&ctx, in.data, in.len, &out, &err) == 0);
    CHECK_EQ_MEM(out.data, out.len, in.data, in.len);

    protobuf_c_message_free_unpacked(oracle, NULL);
    buf_free(&in);
    buf_free(&want);
    buf_free(&out);
    return visits;
}

/* ---------------------------------------------------------------- message builders */

static Etcdserverpb__ResponseHeader header = {
    PROTOBUF_C_MESSAGE_INIT(&etcdserverpb__response_header__descriptor), 0x1234, 0x99, 42, 7};

static Mvccpb__KeyValue kv(const char *key, const char *value, int64_t rev)
{
    Mvccpb__KeyValue k = MVCCPB__KEY_VALUE__INIT;
    k.key = (ProtobufCBinaryData){strlen(key), (uint8_t *)key};
    k.value = (ProtobufCBinaryData){strlen(value), (uint8_t *)value};
    k.create_revision = rev - 1;
    k.mod_revision = rev;
    k.version = 3;
    k.lease = 0x77;
    return k;
}

static Etcdserverpb__PutRequest put(const char *key, const char *value)
{
    Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
    p.key = (ProtobufCBinaryData){strlen(key), (uint8_t *)key};
    p.value = (ProtobufCBinaryData){strlen(value), (uint8_t *)value};
    p.lease = 5;
    p.prev_kv = 1;
    return p;
}

/* ---------------------------------------------------------------- KV */

static void test_range_response(void)
{
    Mvccpb__KeyValue a = kv("/registry/secrets/a", "secret-a", 10),
                     b = kv("/registry/secrets/b", "", 11), /* empty stored value: skipped */
        c = kv("/app/c", "value-c", 12);
    Mvccpb__KeyValue *kvs[] = {&a, &b, &c};
    Etcdserverpb__RangeResponse r = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    r.header = &header;
    r.kvs = kvs;
    r.n_kvs = 3;
    r.more = 1;
    r.count = 17;
    CHECK_EQ_INT(check_case("Range", intercept_kv_range_response, TRANSFORM_RESPONSE, &r.base), 2);
}

static void test_range_response_keys_only(void)
{
    Mvccpb__KeyValue a = kv("/k/a", "", 10), b = kv("/k/b", "", 11);
    Mvccpb__KeyValue *kvs[] = {&a, &b};
    Etcdserverpb__RangeResponse r = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    r.header = &header;
    r.kvs = kvs;
    r.n_kvs = 2;
    CHECK_EQ_INT(
        check_case("Range keys_only", intercept_kv_range_response, TRANSFORM_RESPONSE, &r.base), 0);
    Etcdserverpb__RangeResponse count_only = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    count_only.header = &header;
    count_only.count = 99;
    CHECK_EQ_INT(check_case("Range count_only", intercept_kv_range_response, TRANSFORM_RESPONSE,
                            &count_only.base),
                 0);
}

static void test_put_request(void)
{
    Etcdserverpb__PutRequest p = put("/registry/secrets/ns/x", "plain");
    CHECK_EQ_INT(check_case("Put", intercept_kv_put_request, TRANSFORM_REQUEST, &p.base), 1);
    /* an empty value is still a value to protect */
    Etcdserverpb__PutRequest e = put("/registry/secrets/ns/empty", "");
    CHECK_EQ_INT(check_case("Put empty", intercept_kv_put_request, TRANSFORM_REQUEST, &e.base), 1);
    /* ignore_value: no value travels, nothing to visit */
    Etcdserverpb__PutRequest iv = put("/registry/secrets/ns/iv", "");
    iv.ignore_value = 1;
    iv.ignore_lease = 1;
    CHECK_EQ_INT(
        check_case("Put ignore_value", intercept_kv_put_request, TRANSFORM_REQUEST, &iv.base), 0);
    /* ignore_value with a value anyway (etcd refuses it): still examined, never forwarded raw */
    Etcdserverpb__PutRequest ivv = put("/registry/secrets/ns/iv", "sneaky");
    ivv.ignore_value = 1;
    CHECK_EQ_INT(check_case("Put ignore_value+value", intercept_kv_put_request, TRANSFORM_REQUEST,
                            &ivv.base),
                 1);
}

static void test_put_response(void)
{
    Mvccpb__KeyValue prev = kv("/registry/secrets/ns/x", "old", 9);
    Etcdserverpb__PutResponse r = ETCDSERVERPB__PUT_RESPONSE__INIT;
    r.header = &header;
    r.prev_kv = &prev;
    CHECK_EQ_INT(check_case("Put resp", intercept_kv_put_response, TRANSFORM_RESPONSE, &r.base), 1);
    r.prev_kv = NULL;
    CHECK_EQ_INT(
        check_case("Put resp no prev", intercept_kv_put_response, TRANSFORM_RESPONSE, &r.base), 0);
}

static void test_delete_range_response(void)
{
    Mvccpb__KeyValue a = kv("/d/a", "va", 3), b = kv("/d/b", "vb", 4);
    Mvccpb__KeyValue *prev[] = {&a, &b};
    Etcdserverpb__DeleteRangeResponse r = ETCDSERVERPB__DELETE_RANGE_RESPONSE__INIT;
    r.header = &header;
    r.deleted = 2;
    r.prev_kvs = prev;
    r.n_prev_kvs = 2;
    CHECK_EQ_INT(check_case("DeleteRange resp", intercept_kv_delete_range_response,
                            TRANSFORM_RESPONSE, &r.base),
                 2);
}

static void test_txn_request_three_levels(void)
{
    /* level 3 */
    Etcdserverpb__PutRequest p3 = put("/l3/put", "three");
    Etcdserverpb__DeleteRangeRequest d3 = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    d3.key = BIN("/l3/del");
    d3.prev_kv = 1;
    Etcdserverpb__RequestOp op3a = ETCDSERVERPB__REQUEST_OP__INIT,
                            op3b = ETCDSERVERPB__REQUEST_OP__INIT;
    op3a.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    op3a.request_put = &p3;
    op3b.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
    op3b.request_delete_range = &d3;
    Etcdserverpb__RequestOp *s3[] = {&op3a, &op3b};
    Etcdserverpb__TxnRequest t3 = ETCDSERVERPB__TXN_REQUEST__INIT;
    t3.success = s3;
    t3.n_success = 2;
    /* level 2 */
    Etcdserverpb__Compare c2 = ETCDSERVERPB__COMPARE__INIT;
    c2.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE;
    c2.key = BIN("/l2/cmp");
    c2.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
    c2.value = BIN("expected-two");
    Etcdserverpb__Compare *cmp2[] = {&c2};
    Etcdserverpb__PutRequest p2 = put("/l2/put", "two");
    Etcdserverpb__RequestOp op2a = ETCDSERVERPB__REQUEST_OP__INIT,
                            op2b = ETCDSERVERPB__REQUEST_OP__INIT;
    op2a.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    op2a.request_put = &p2;
    op2b.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN;
    op2b.request_txn = &t3;
    Etcdserverpb__RequestOp *s2[] = {&op2a}, *f2[] = {&op2b};
    Etcdserverpb__TxnRequest t2 = ETCDSERVERPB__TXN_REQUEST__INIT;
    t2.compare = cmp2;
    t2.n_compare = 1;
    t2.success = s2;
    t2.n_success = 1;
    t2.failure = f2;
    t2.n_failure = 1;
    /* level 1 */
    Etcdserverpb__Compare c1a = ETCDSERVERPB__COMPARE__INIT, c1b = ETCDSERVERPB__COMPARE__INIT;
    c1a.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE;
    c1a.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__NOT_EQUAL;
    c1a.key = BIN("/l1/cmp");
    c1a.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
    c1a.value = BIN("expected-one");
    c1b.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
    c1b.key = BIN("/l1/mod");
    c1b.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
    c1b.mod_revision = 77;
    c1b.range_end = BIN("/l1/moe");
    Etcdserverpb__Compare *cmp1[] = {&c1a, &c1b};
    Etcdserverpb__PutRequest p1 = put("/l1/put", "one"), p1f = put("/l1/fail", "one-f");
    Etcdserverpb__RangeRequest r1 = ETCDSERVERPB__RANGE_REQUEST__INIT;
    r1.key = BIN("/l1/range");
    r1.range_end = BIN("/l1/rangf");
    r1.keys_only = 1;
    Etcdserverpb__RequestOp op1a = ETCDSERVERPB__REQUEST_OP__INIT,
                            op1b = ETCDSERVERPB__REQUEST_OP__INIT,
                            op1c = ETCDSERVERPB__REQUEST_OP__INIT,
                            op1f = ETCDSERVERPB__REQUEST_OP__INIT;
    op1a.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    op1a.request_put = &p1;
    op1b.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
    op1b.request_range = &r1;
    op1c.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN;
    op1c.request_txn = &t2;
    op1f.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    op1f.request_put = &p1f;
    Etcdserverpb__RequestOp *s1[] = {&op1a, &op1b, &op1c}, *f1[] = {&op1f};
    Etcdserverpb__TxnRequest t1 = ETCDSERVERPB__TXN_REQUEST__INIT;
    t1.compare = cmp1;
    t1.n_compare = 2;
    t1.success = s1;
    t1.n_success = 3;
    t1.failure = f1;
    t1.n_failure = 1;
    /* values: c1a, p1, c2, p2, p3, p1f = 6 */
    CHECK_EQ_INT(check_case("Txn req", intercept_kv_txn_request, TRANSFORM_REQUEST, &t1.base), 6);
}

static void test_txn_response_three_levels(void)
{
    Mvccpb__KeyValue k3 = kv("/l3/prev", "p3", 30);
    Etcdserverpb__PutResponse pr3 = ETCDSERVERPB__PUT_RESPONSE__INIT;
    pr3.header = &header;
    pr3.prev_kv = &k3;
    Etcdserverpb__ResponseOp o3 = ETCDSERVERPB__RESPONSE_OP__INIT;
    o3.response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT;
    o3.response_put = &pr3;
    Etcdserverpb__ResponseOp *ops3[] = {&o3};
    Etcdserverpb__TxnResponse t3 = ETCDSERVERPB__TXN_RESPONSE__INIT;
    t3.header = &header;
    t3.succeeded = 1;
    t3.responses = ops3;
    t3.n_responses = 1;

    Mvccpb__KeyValue k2a = kv("/l2/a", "range-two-a", 20), k2b = kv("/l2/b", "", 21);
    Mvccpb__KeyValue *kvs2[] = {&k2a, &k2b};
    Etcdserverpb__RangeResponse rr2 = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    rr2.header = &header;
    rr2.kvs = kvs2;
    rr2.n_kvs = 2;
    Etcdserverpb__ResponseOp o2a = ETCDSERVERPB__RESPONSE_OP__INIT,
                             o2b = ETCDSERVERPB__RESPONSE_OP__INIT;
    o2a.response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE;
    o2a.response_range = &rr2;
    o2b.response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_TXN;
    o2b.response_txn = &t3;
    Etcdserverpb__ResponseOp *ops2[] = {&o2a, &o2b};
    Etcdserverpb__TxnResponse t2 = ETCDSERVERPB__TXN_RESPONSE__INIT;
    t2.header = &header;
    t2.responses = ops2;
    t2.n_responses = 2;

    Mvccpb__KeyValue k1 = kv("/l1/range", "range-one", 10), k1p = kv("/l1/put", "prev-one", 11),
                     k1d1 = kv("/l1/del1", "del-one", 12), k1d2 = kv("/l1/del2", "del-two", 13);
    Mvccpb__KeyValue *kvs1[] = {&k1}, *dels[] = {&k1d1, &k1d2};
    Etcdserverpb__RangeResponse rr1 = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    rr1.header = &header;
    rr1.kvs = kvs1;
    rr1.n_kvs = 1;
    Etcdserverpb__PutResponse pr1 = ETCDSERVERPB__PUT_RESPONSE__INIT;
    pr1.header = &header;
    pr1.prev_kv = &k1p;
    Etcdserverpb__DeleteRangeResponse dr1 = ETCDSERVERPB__DELETE_RANGE_RESPONSE__INIT;
    dr1.header = &header;
    dr1.deleted = 2;
    dr1.prev_kvs = dels;
    dr1.n_prev_kvs = 2;
    Etcdserverpb__ResponseOp o1a = ETCDSERVERPB__RESPONSE_OP__INIT,
                             o1b = ETCDSERVERPB__RESPONSE_OP__INIT,
                             o1c = ETCDSERVERPB__RESPONSE_OP__INIT,
                             o1d = ETCDSERVERPB__RESPONSE_OP__INIT;
    o1a.response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE;
    o1a.response_range = &rr1;
    o1b.response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT;
    o1b.response_put = &pr1;
    o1c.response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE;
    o1c.response_delete_range = &dr1;
    o1d.response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_TXN;
    o1d.response_txn = &t2;
    Etcdserverpb__ResponseOp *ops1[] = {&o1a, &o1b, &o1c, &o1d};
    Etcdserverpb__TxnResponse t1 = ETCDSERVERPB__TXN_RESPONSE__INIT;
    t1.header = &header;
    t1.succeeded = 1;
    t1.responses = ops1;
    t1.n_responses = 4;
    /* k1, k1p, k1d1, k1d2, k2a, k3 = 6 (k2b empty) */
    CHECK_EQ_INT(check_case("Txn resp", intercept_kv_txn_response, TRANSFORM_RESPONSE, &t1.base),
                 6);
}

/* ---------------------------------------------------------------- Watch */

static void test_watch_fragmented(void)
{
    /* etcd splits a large revision into several WatchResponse messages, fragment=true on all
     * but the last; each is a whole message and is transformed on its own. */
    Mvccpb__KeyValue k[6] = {kv("/w/a", "new-a", 50), kv("/w/a", "old-a", 49),
                             kv("/w/b", "", 50), /* DELETE: empty kv value */
                             kv("/w/b", "old-b", 48), kv("/w/c", "new-c", 50),
                             kv("/w/d", "", 50)};
    Mvccpb__Event e[4] = {MVCCPB__EVENT__INIT, MVCCPB__EVENT__INIT, MVCCPB__EVENT__INIT,
                          MVCCPB__EVENT__INIT};
    e[0].kv = &k[0];
    e[0].prev_kv = &k[1];
    e[1].type = MVCCPB__EVENT__EVENT_TYPE__DELETE;
    e[1].kv = &k[2];
    e[1].prev_kv = &k[3];
    e[2].kv = &k[4];
    e[3].type = MVCCPB__EVENT__EVENT_TYPE__DELETE;
    e[3].kv = &k[5];
    Mvccpb__Event *frag1[] = {&e[0]}, *frag2[] = {&e[1]}, *frag3[] = {&e[2], &e[3]};
    Mvccpb__Event **frags[] = {frag1, frag2, frag3};
    size_t nfrag[] = {1, 1, 2}, want_visits[] = {2, 1, 1};
    for (int i = 0; i < 3; i++) {
        Etcdserverpb__WatchResponse w = ETCDSERVERPB__WATCH_RESPONSE__INIT;
        w.header = &header;
        w.watch_id = 3;
        w.fragment = i < 2;
        w.events = frags[i];
        w.n_events = nfrag[i];
        CHECK_EQ_INT(
            check_case("Watch resp", intercept_watch_response, TRANSFORM_RESPONSE, &w.base),
            want_visits[i]);
    }
    /* control messages (created, canceled, progress) carry no events */
    Etcdserverpb__WatchResponse ctl = ETCDSERVERPB__WATCH_RESPONSE__INIT;
    ctl.header = &header;
    ctl.created = 1;
    ctl.canceled = 1;
    ctl.cancel_reason = "compacted";
    ctl.compact_revision = 12;
    CHECK_EQ_INT(check_case("Watch ctl", intercept_watch_response, TRANSFORM_RESPONSE, &ctl.base),
                 0);
}

/* ---------------------------------------------------------------- Election */

static void test_election(void)
{
    V3electionpb__CampaignRequest c = V3ELECTIONPB__CAMPAIGN_REQUEST__INIT;
    c.name = BIN("/election/leader");
    c.lease = 0x694d7a1b2c3d4e5fLL;
    c.value = BIN("candidate-1");
    CHECK_EQ_INT(
        check_case("Campaign", intercept_election_campaign_request, TRANSFORM_REQUEST, &c.base), 1);
    CHECK_EQ_STR(seen[0].key, "/election/leader/694d7a1b2c3d4e5f");

    V3electionpb__LeaderKey lk = V3ELECTIONPB__LEADER_KEY__INIT;
    lk.name = BIN("/election/leader");
    lk.key = BIN("/election/leader/694d7a1b2c3d4e5f");
    lk.rev = 5;
    lk.lease = 0x694d7a1b2c3d4e5fLL;
    V3electionpb__ProclaimRequest p = V3ELECTIONPB__PROCLAIM_REQUEST__INIT;
    p.leader = &lk;
    p.value = BIN("proclaimed");
    CHECK_EQ_INT(
        check_case("Proclaim", intercept_election_proclaim_request, TRANSFORM_REQUEST, &p.base), 1);
    CHECK_EQ_STR(seen[0].key, "/election/leader/694d7a1b2c3d4e5f");

    Mvccpb__KeyValue k = kv("/election/leader/694d7a1b2c3d4e5f", "proclaimed", 8);
    V3electionpb__LeaderResponse l = V3ELECTIONPB__LEADER_RESPONSE__INIT;
    l.header = &header;
    l.kv = &k;
    CHECK_EQ_INT(
        check_case("Leader", intercept_election_leader_response, TRANSFORM_RESPONSE, &l.base), 1);
    CHECK_EQ_INT(
        check_case("Observe", intercept_election_observe_response, TRANSFORM_RESPONSE, &l.base), 1);
    l.kv = NULL; /* no leader yet */
    CHECK_EQ_INT(
        check_case("Leader none", intercept_election_leader_response, TRANSFORM_RESPONSE, &l.base),
        0);
}

static void test_campaign_key_negative_lease(void)
{
    V3electionpb__CampaignRequest c = V3ELECTIONPB__CAMPAIGN_REQUEST__INIT;
    c.name = BIN("e");
    c.lease = -0x1f;
    c.value = BIN("v");
    buf_t in = BUF_INIT, out = BUF_INIT;
    pack(&c.base, &in);
    es_error err = {0};
    transform_ctx ctx = make_ctx(TRANSFORM_REQUEST, "/v3electionpb.Election/Campaign");
    n_seen = 0;
    intercept_set_value_hook(record_only_hook);
    CHECK(intercept_election_campaign_request(&ctx, in.data, in.len, &out, &err) == 0);
    intercept_set_value_hook(NULL);
    CHECK_EQ_INT(n_seen, 1);
    CHECK_EQ_STR(seen[0].key, "e/-1f"); /* Go's %x of a negative int64 */
    buf_free(&in);
    buf_free(&out);
}

/* ---------------------------------------------------------------- errors */

static void test_decode_errors(void)
{
    static const uint8_t garbage[] = {0x12, 0x40, 0x01}; /* field 2, length 64, 1 byte left */
    struct {
        transform_fn fn;
        enum transform_dir dir;
        const char *method;
        int code;
    } cases[] = {
        {intercept_kv_put_request, TRANSFORM_REQUEST, "/etcdserverpb.KV/Put", 3},
        {intercept_kv_txn_request, TRANSFORM_REQUEST, "/etcdserverpb.KV/Txn", 3},
        {intercept_election_campaign_request, TRANSFORM_REQUEST, "/v3electionpb.Election/Campaign",
         3},
        {intercept_election_proclaim_request, TRANSFORM_REQUEST, "/v3electionpb.Election/Proclaim",
         3},
        {intercept_kv_range_response, TRANSFORM_RESPONSE, "/etcdserverpb.KV/Range", 13},
        {intercept_kv_put_response, TRANSFORM_RESPONSE, "/etcdserverpb.KV/Put", 13},
        {intercept_kv_delete_range_response, TRANSFORM_RESPONSE, "/etcdserverpb.KV/DeleteRange",
         13},
        {intercept_kv_txn_response, TRANSFORM_RESPONSE, "/etcdserverpb.KV/Txn", 13},
        {intercept_watch_response, TRANSFORM_RESPONSE, "/etcdserverpb.Watch/Watch", 13},
        {intercept_election_leader_response, TRANSFORM_RESPONSE, "/v3electionpb.Election/Leader",
         13},
        {intercept_election_observe_response, TRANSFORM_RESPONSE, "/v3electionpb.Election/Observe",
         13},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        transform_ctx ctx = make_ctx(cases[i].dir, cases[i].method);
        buf_t out = BUF_INIT;
        es_error err = {0};
        CHECK_EQ_INT(cases[i].fn(&ctx, garbage, sizeof(garbage), &out, &err), -1);
        CHECK_EQ_INT(err.code, cases[i].code);
        CHECK_MSG(strstr(err.msg, cases[i].method) != NULL, "message '%s' names no method",
                  err.msg);
        CHECK_EQ_INT(out.len, 0);
        buf_free(&out);
    }
    /* an empty message is a valid (all-default) message */
    transform_ctx ctx = make_ctx(TRANSFORM_RESPONSE, "/etcdserverpb.KV/Range");
    buf_t out = BUF_INIT;
    es_error err = {0};
    CHECK_EQ_INT(intercept_kv_range_response(&ctx, NULL, 0, &out, &err), 0);
    CHECK_EQ_INT(out.len, 0);
    buf_free(&out);
}

static void test_hook_error_propagates(void)
{
    Etcdserverpb__PutRequest p = put("/registry/secrets/denied", "x");
    buf_t in = BUF_INIT, out = BUF_INIT;
    pack(&p.base, &in);
    transform_ctx ctx = make_ctx(TRANSFORM_REQUEST, "/etcdserverpb.KV/Put");
    es_error err = {0};
    intercept_set_value_hook(failing_hook);
    CHECK_EQ_INT(intercept_kv_put_request(&ctx, in.data, in.len, &out, &err), -1);
    intercept_set_value_hook(NULL);
    CHECK_EQ_INT(err.code, 9);
    CHECK(strstr(err.msg, "/registry/secrets/denied") != NULL);
    CHECK_EQ_INT(out.len, 0);
    buf_free(&in);
    buf_free(&out);
}

/* Builds a Txn nested `depth` levels (each level's only success op is the next Txn, the deepest
 * holds one Put) and runs the request or response transformer on it. */
static int nested_txn(int depth, enum transform_dir dir, es_error *err, size_t *visits)
{
    buf_t in = BUF_INIT, out = BUF_INIT;
    if (dir == TRANSFORM_REQUEST) {
        Etcdserverpb__TxnRequest *t = calloc((size_t)depth, sizeof(*t));
        Etcdserverpb__RequestOp *op = calloc((size_t)depth, sizeof(*op));
        Etcdserverpb__RequestOp **ptr = calloc((size_t)depth, sizeof(*ptr));
        Etcdserverpb__PutRequest p = put("/deep/key", "deep");
        for (int i = 0; i < depth; i++) {
            etcdserverpb__txn_request__init(&t[i]);
            etcdserverpb__request_op__init(&op[i]);
            ptr[i] = &op[i];
            t[i].success = &ptr[i];
            t[i].n_success = 1;
            if (i + 1 < depth) {
                op[i].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN;
                op[i].request_txn = &t[i + 1];
            } else {
                op[i].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
                op[i].request_put = &p;
            }
        }
        pack(&t[0].base, &in);
        free(t);
        free(op);
        free(ptr);
    } else {
        Etcdserverpb__TxnResponse *t = calloc((size_t)depth, sizeof(*t));
        Etcdserverpb__ResponseOp *op = calloc((size_t)depth, sizeof(*op));
        Etcdserverpb__ResponseOp **ptr = calloc((size_t)depth, sizeof(*ptr));
        Mvccpb__KeyValue k = kv("/deep/key", "deep", 3);
        Etcdserverpb__PutResponse pr = ETCDSERVERPB__PUT_RESPONSE__INIT;
        pr.prev_kv = &k;
        for (int i = 0; i < depth; i++) {
            etcdserverpb__txn_response__init(&t[i]);
            etcdserverpb__response_op__init(&op[i]);
            ptr[i] = &op[i];
            t[i].responses = &ptr[i];
            t[i].n_responses = 1;
            if (i + 1 < depth) {
                op[i].response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_TXN;
                op[i].response_txn = &t[i + 1];
            } else {
                op[i].response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT;
                op[i].response_put = &pr;
            }
        }
        pack(&t[0].base, &in);
        free(t);
        free(op);
        free(ptr);
    }
    transform_ctx ctx = make_ctx(dir, "/etcdserverpb.KV/Txn");
    n_seen = 0;
    intercept_set_value_hook(record_only_hook);
    int rc = (dir == TRANSFORM_REQUEST ? intercept_kv_txn_request : intercept_kv_txn_response)(
        &ctx, in.data, in.len, &out, err);
    intercept_set_value_hook(NULL);
    *visits = n_seen;
    if (rc == 0 && (out.len != in.len || memcmp(out.data, in.data, in.len) != 0))
        rc = -2;
    buf_free(&in);
    buf_free(&out);
    return rc;
}

static void test_txn_depth_limit(void)
{
    es_error err = {0};
    size_t visits;
    CHECK_EQ_INT(nested_txn(INTERCEPT_MAX_TXN_DEPTH, TRANSFORM_REQUEST, &err, &visits), 0);
    CHECK_EQ_INT(visits, 1);
    CHECK_EQ_INT(nested_txn(INTERCEPT_MAX_TXN_DEPTH, TRANSFORM_RESPONSE, &err, &visits), 0);
    CHECK_EQ_INT(visits, 1);
    CHECK_EQ_INT(nested_txn(INTERCEPT_MAX_TXN_DEPTH + 1, TRANSFORM_REQUEST, &err, &visits), -1);
    CHECK_EQ_INT(err.code, 3);
    CHECK_EQ_INT(visits, 0);
    CHECK_EQ_INT(nested_txn(INTERCEPT_MAX_TXN_DEPTH + 1, TRANSFORM_RESPONSE, &err, &visits), -1);
    CHECK_EQ_INT(err.code, 13);
    /* far deeper than any stack could take if decoded blindly */
    CHECK_EQ_INT(nested_txn(20000, TRANSFORM_REQUEST, &err, &visits), -1);
    CHECK_EQ_INT(err.code, 3);
}

/* ---------------------------------------------------------------- MemberList */

static void test_member_list(void)
{
    char *peer1[] = {"https://10.0.0.1:2380"}, *client1[] = {"https://10.0.0.1:2379"};
    char *peer2[] = {"https://10.0.0.2:2380"},
         *client2[] = {"https://10.0.0.2:2379", "unix:///run/etcd.sock"};
    Etcdserverpb__Member m1 = ETCDSERVERPB__MEMBER__INIT, m2 = ETCDSERVERPB__MEMBER__INIT,
                         m3 = ETCDSERVERPB__MEMBER__INIT;
    m1.id = 0x8e9e05c52164694dULL;
    m1.name = "infra1";
    m1.peerurls = peer1;
    m1.n_peerurls = 1;
    m1.clienturls = client1;
    m1.n_clienturls = 1;
    m2.id = 2;
    m2.name = "infra2";
    m2.peerurls = peer2;
    m2.n_peerurls = 1;
    m2.clienturls = client2;
    m2.n_clienturls = 2;
    m2.islearner = 1;
    m3.id = 3; /* not started yet: no name, no client URLs */
    m3.peerurls = peer2;
    m3.n_peerurls = 1;
    Etcdserverpb__Member *members[] = {&m1, &m2, &m3};
    Etcdserverpb__MemberListResponse r = ETCDSERVERPB__MEMBER_LIST_RESPONSE__INIT;
    r.header = &header;
    r.members = members;
    r.n_members = 3;
    buf_t in = BUF_INIT, out = BUF_INIT;
    pack(&r.base, &in);
    es_error err = {0};

    /* no advertise URLs: byte for byte */
    transform_ctx ctx = make_ctx(TRANSFORM_RESPONSE, "/etcdserverpb.Cluster/MemberList");
    CHECK_EQ_INT(intercept_cluster_member_list_response(&ctx, in.data, in.len, &out, &err), 0);
    CHECK_EQ_MEM(out.data, out.len, in.data, in.len);

    /* with URLs: every member's clientURLs replaced, everything else identical */
    static const char *const adv[] = {"https://proxy-a:2379", "https://proxy-b:2379"};
    ctx.advertise_urls = adv;
    ctx.n_advertise_urls = 2;
    buf_reset(&out);
    CHECK_EQ_INT(intercept_cluster_member_list_response(&ctx, in.data, in.len, &out, &err), 0);
    Etcdserverpb__MemberListResponse *got =
        etcdserverpb__member_list_response__unpack(NULL, out.len, out.data);
    CHECK(got != NULL);
    if (got) {
        char **saved[3] = {NULL, NULL, NULL};
        CHECK_EQ_INT(got->n_members, 3);
        for (size_t i = 0; i < got->n_members && i < 3; i++) {
            Etcdserverpb__Member *g = got->members[i];
            CHECK_EQ_INT(g->n_clienturls, 2);
            if (g->n_clienturls == 2) {
                CHECK_EQ_STR(g->clienturls[0], adv[0]);
                CHECK_EQ_STR(g->clienturls[1], adv[1]);
            }
            /* the rest equals the original: put the original URLs back and compare */
            saved[i] = g->clienturls;
            g->clienturls = members[i]->clienturls;
            g->n_clienturls = members[i]->n_clienturls;
        }
        const char *where = "";
        Etcdserverpb__MemberListResponse *orig =
            etcdserverpb__member_list_response__unpack(NULL, in.len, in.data);
        CHECK_MSG(msg_equal(&got->base, &orig->base, &where), "differs at %s", where);
        for (size_t i = 0; i < got->n_members && i < 3; i++) {
            got->members[i]->clienturls = saved[i]; /* give `got` its own arrays back */
            got->members[i]->n_clienturls = 2;
        }
        etcdserverpb__member_list_response__free_unpacked(orig, NULL);
        etcdserverpb__member_list_response__free_unpacked(got, NULL);
    }
    /* malformed upstream answer: INTERNAL */
    static const uint8_t bad[] = {0x12, 0x05, 0x0a};
    buf_reset(&out);
    CHECK_EQ_INT(intercept_cluster_member_list_response(&ctx, bad, sizeof(bad), &out, &err), -1);
    CHECK_EQ_INT(err.code, 13);
    buf_free(&in);
    buf_free(&out);
}

/* ---------------------------------------------------------------- metrics, arena, timing */

static uint64_t counter(const char *method, const char *dir)
{
    char labels[96];
    snprintf(labels, sizeof(labels), "method=\"%s\",direction=\"%s\"", method, dir);
    return metrics_counter_value(
        metrics_counter_get("etcdseal_transformer_messages_total",
                            "etcd messages decoded and walked by the value interceptors.", labels));
}

static void test_metrics_counted(void)
{
    Etcdserverpb__PutRequest p = put("/m/k", "v");
    buf_t in = BUF_INIT, out = BUF_INIT;
    pack(&p.base, &in);
    uint64_t req0 = counter("Put", "request"), resp0 = counter("Put", "response");
    uint64_t watch0 = counter("Watch", "response");
    transform_ctx ctx = make_ctx(TRANSFORM_REQUEST, "/etcdserverpb.KV/Put");
    es_error err = {0};
    for (int i = 0; i < 5; i++)
        CHECK(intercept_kv_put_request(&ctx, in.data, in.len, &out, &err) == 0);
    static const uint8_t bad[] = {0xff};
    CHECK(intercept_kv_put_request(&ctx, bad, 1, &out, &err) == -1); /* counted too */
    CHECK_EQ_INT(counter("Put", "request") - req0, 6);
    CHECK_EQ_INT(counter("Put", "response") - resp0, 0);
    CHECK_EQ_INT(counter("Watch", "response") - watch0, 0);
    buf_free(&in);
    buf_free(&out);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_arena_steady_state(void)
{
    enum { NKV = 200 };
    static Mvccpb__KeyValue kvs[NKV];
    static Mvccpb__KeyValue *ptrs[NKV];
    static char keys[NKV][32];
    static char value[1024];
    memset(value, 'v', sizeof(value) - 1);
    for (int i = 0; i < NKV; i++) {
        snprintf(keys[i], sizeof(keys[i]), "/registry/secrets/k%04d", i);
        kvs[i] = kv(keys[i], value, i + 10);
        ptrs[i] = &kvs[i];
    }
    Etcdserverpb__RangeResponse r = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    r.header = &header;
    r.kvs = ptrs;
    r.n_kvs = NKV;
    buf_t in = BUF_INIT, out = BUF_INIT;
    pack(&r.base, &in);
    transform_ctx ctx = make_ctx(TRANSFORM_RESPONSE, "/etcdserverpb.KV/Range");
    es_error err = {0};
    intercept_set_value_hook(touch_hook); /* forces re-encoding */
    for (int i = 0; i < 3; i++) {
        buf_reset(&out);
        CHECK(intercept_kv_range_response(&ctx, in.data, in.len, &out, &err) == 0);
    }
    intercept_arena_stats before, after;
    intercept_arena_get_stats(&before);
    int iters = 300;
    double t0 = now_s();
    for (int i = 0; i < iters; i++) {
        buf_reset(&out);
        CHECK(intercept_kv_range_response(&ctx, in.data, in.len, &out, &err) == 0);
    }
    double arena_s = (now_s() - t0) / iters;
    intercept_arena_get_stats(&after);
    CHECK_EQ_INT(after.chunk_mallocs, before.chunk_mallocs); /* no malloc in steady state */
    CHECK(after.retained >= in.len);
    intercept_set_value_hook(NULL);

    /* the same decode/encode with protobuf-c's default malloc allocator, for comparison */
    t0 = now_s();
    for (int i = 0; i < iters; i++) {
        ProtobufCMessage *m = protobuf_c_message_unpack(&etcdserverpb__range_response__descriptor,
                                                        NULL, in.len, in.data);
        buf_reset(&out);
        size_t n = protobuf_c_message_get_packed_size(m);
        buf_reserve(&out, n);
        out.len = protobuf_c_message_pack(m, out.data);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    double malloc_s = (now_s() - t0) / iters;
    /* default hook: decode + walk + copy of the original bytes */
    t0 = now_s();
    for (int i = 0; i < iters; i++) {
        buf_reset(&out);
        CHECK(intercept_kv_range_response(&ctx, in.data, in.len, &out, &err) == 0);
    }
    double pass_s = (now_s() - t0) / iters;
    printf("# Range response %zu bytes, %d kvs: arena decode+walk+re-encode %.1f us, malloc "
           "decode+encode "
           "%.1f us, walk+copy (values unchanged) %.1f us; arena retained %zu bytes, %" PRIu64
           " chunk mallocs total\n",
           in.len, NKV, arena_s * 1e6, malloc_s * 1e6, pass_s * 1e6, after.retained,
           after.chunk_mallocs);

    /* a small Put (256-byte value), the common case on the request side */
    static char v256[257];
    memset(v256, 'p', 256);
    Etcdserverpb__PutRequest p = put("/registry/secrets/default/token-abc12", v256);
    pack(&p.base, &in);
    ctx = make_ctx(TRANSFORM_REQUEST, "/etcdserverpb.KV/Put");
    iters = 200000;
    intercept_set_value_hook(touch_hook);
    t0 = now_s();
    for (int i = 0; i < iters; i++) {
        buf_reset(&out);
        CHECK(intercept_kv_put_request(&ctx, in.data, in.len, &out, &err) == 0);
    }
    double put_reencode = (now_s() - t0) / iters;
    intercept_set_value_hook(NULL);
    t0 = now_s();
    for (int i = 0; i < iters; i++) {
        buf_reset(&out);
        CHECK(intercept_kv_put_request(&ctx, in.data, in.len, &out, &err) == 0);
    }
    double put_copy = (now_s() - t0) / iters;
    intercept_arena_get_stats(&after);
    CHECK_EQ_INT(after.chunk_mallocs, before.chunk_mallocs);
    printf("# Put request %zu bytes: decode+walk+re-encode %.2f us, decode+walk+copy %.2f us\n",
           in.len, put_reencode * 1e6, put_copy * 1e6);
    buf_free(&in);
    buf_free(&out);
}

int main(int argc, char **argv)
{
    (void)argc;
    TEST_BEGIN(argv[0]);
    RUN(test_range_response);
    RUN(test_range_response_keys_only);
    RUN(test_put_request);
    RUN(test_put_response);
    RUN(test_delete_range_response);
    RUN(test_txn_request_three_levels);
    RUN(test_txn_response_three_levels);
    RUN(test_watch_fragmented);
    RUN(test_election);
    RUN(test_campaign_key_negative_lease);
    RUN(test_decode_errors);
    RUN(test_hook_error_propagates);
    RUN(test_txn_depth_limit);
    RUN(test_member_list);
    RUN(test_metrics_counted);
    RUN(test_arena_steady_state);
    intercept_thread_release();
    return TEST_EXIT();
}
