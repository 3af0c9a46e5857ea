/* proto_roundtrip_test.c - unknown fields survive every transformer.
 *
 * A newer etcd or client may send fields this proxy's .proto files do not know. protobuf-c keeps
 * unknown fields on unpack and re-emits them on pack; this test proves it for each transformer
 * and at every nesting level that carries values. Each message is assembled by hand: the known
 * part packed by protobuf-c, then a block of hand-made unknown fields (varint, fixed32, fixed64
 * and length-delimited, field numbers etcd does not use) appended to the top-level message and
 * to nested messages, which are wrapped into their parents byte by byte. A hook that reports
 * "changed" forces re-encoding; the output must contain every unknown block verbatim, decode
 * with the same unknown fields, and equal the input once unknown fields are ignored.
 */
#include <stdbool.h>
#include <stdlib.h>

#include "etcdserverpb/rpc.pb-c.h"
#include "mvccpb/kv.pb-c.h"
#include "proxy/intercept_cluster.h"
#include "proxy/intercept_election.h"
#include "proxy/intercept_kv.h"
#include "proxy/intercept_values.h"
#include "proxy/intercept_watch.h"
#include "testlib.h"
#include "v3electionpb/v3election.pb-c.h"

/* field 15 varint 150; field 100 fixed32; field 101 fixed64; field 2047 bytes "UNKNOWN!" */
static const uint8_t UNK[] = {0x78, 0x96, 0x01, 0xa5, 0x06, 0xde, 0xad, 0xbe, 0xef, 0xa9,
                              0x06, 1,    2,    3,    4,    5,    6,    7,    8,    0xfa,
                              0x7f, 0x08, 'U',  'N',  'K',  'N',  'O',  'W',  'N',  '!'};
#define UNK_FIELDS 4

static int touch_hook(transform_ctx *ctx, enum intercept_site site, const ProtobufCBinaryData *key,
                      ProtobufCBinaryData *value, es_error *err)
{
    (void)ctx;
    (void)site;
    (void)key;
    (void)value;
    (void)err;
    return 1;
}

/* ---------------------------------------------------------------- wire assembly */

static void put_varint(buf_t *b, uint64_t v)
{
    while (v >= 0x80) {
        buf_append_byte(b, (uint8_t)(v | 0x80));
        v >>= 7;
    }
    buf_append_byte(b, (uint8_t)v);
}

/* packed(m) followed by the unknown block */
static void packed_unk(buf_t *b, const ProtobufCMessage *m)
{
    buf_reset(b);
    size_t n = protobuf_c_message_get_packed_size(m);
    buf_reserve(b, n);
    b->len = protobuf_c_message_pack(m, b->data);
    buf_append(b, UNK, sizeof(UNK));
}

/* appends field `field` (length-delimited) holding `inner` to b */
static void embed(buf_t *b, uint32_t field, const buf_t *inner)
{
    put_varint(b, ((uint64_t)field << 3) | 2);
    put_varint(b, inner->len);
    buf_append(b, inner->data, inner->len);
}

static size_t count_unk(const buf_t *b)
{
    size_t n = 0;
    for (size_t i = 0; i + sizeof(UNK) <= b->len; i++)
        if (memcmp(b->data + i, UNK, sizeof(UNK)) == 0)
            n++;
    return n;
}

/* Counts messages in the tree whose unknown fields are exactly the UNK block's. */
static size_t count_unknown_msgs(const ProtobufCMessage *m, bool *bad)
{
    if (!m)
        return 0;
    size_t n = 0;
    if (m->n_unknown_fields) {
        static const uint32_t tags[UNK_FIELDS] = {15, 100, 101, 2047};
        static const ProtobufCWireType wt[UNK_FIELDS] = {
            PROTOBUF_C_WIRE_TYPE_VARINT, PROTOBUF_C_WIRE_TYPE_32BIT, PROTOBUF_C_WIRE_TYPE_64BIT,
            PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED};
        if (m->n_unknown_fields != UNK_FIELDS)
            *bad = true;
        for (unsigned i = 0; i < m->n_unknown_fields && i < UNK_FIELDS; i++)
            if (m->unknown_fields[i].tag != tags[i] || m->unknown_fields[i].wire_type != wt[i])
                *bad = true;
        n++;
    }
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const char *base = (const char *)m;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t cnt = *(const size_t *)(base + f->quantifier_offset);
            ProtobufCMessage *const *arr = *(ProtobufCMessage *const *const *)(base + f->offset);
            for (size_t k = 0; k < cnt; k++)
                n += count_unknown_msgs(arr[k], bad);
        } else {
            if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
                *(const uint32_t *)(base + f->quantifier_offset) != f->id)
                continue;
            n += count_unknown_msgs(*(ProtobufCMessage *const *)(base + f->offset), bad);
        }
    }
    return n;
}

/* Runs fn on `in` (which holds `blocks` unknown blocks) with re-encoding forced and without. */
static void check_survives(const char *what, transform_fn fn, enum transform_dir dir,
                           const ProtobufCMessageDescriptor *desc, const buf_t *in, size_t blocks,
                           const char *const *urls, size_t n_urls)
{
    void *state = NULL;
    transform_ctx ctx = {.dir = dir, .method = what, .advertise_urls = urls, .n_advertise_urls = n_urls, .stream_state = &state};
    buf_t out = BUF_INIT;
    es_error err = {0};
    CHECK_EQ_INT(count_unk(in), blocks);
    ProtobufCMessage *orig = protobuf_c_message_unpack(desc, NULL, in->len, in->data);
    CHECK_MSG(orig != NULL, "%s: hand-made input does not decode", what);
    bool bad = false;
    if (orig)
        CHECK_EQ_INT(count_unknown_msgs(orig, &bad), blocks);

    intercept_set_value_hook(touch_hook);
    CHECK_MSG(fn(&ctx, in->data, in->len, &out, &err) == 0, "%s: %s", what, err.msg);
    intercept_set_value_hook(NULL);
    CHECK_MSG(count_unk(&out) == blocks, "%s: %zu unknown blocks after re-encoding, want %zu", what,
              count_unk(&out), blocks);
    CHECK_MSG(out.len == in->len || n_urls > 0, "%s: length %zu -> %zu", what, in->len, out.len);
    ProtobufCMessage *got = protobuf_c_message_unpack(desc, NULL, out.len, out.data);
    CHECK(got != NULL);
    if (got) {
        CHECK_EQ_INT(count_unknown_msgs(got, &bad), blocks);
        CHECK_MSG(!bad, "%s: unknown fields changed", what);
        protobuf_c_message_free_unpacked(got, NULL);
    }

    /* values unchanged and no re-encode needed: the very same bytes */
    buf_reset(&out);
    if (n_urls == 0) {
        CHECK(fn(&ctx, in->data, in->len, &out, &err) == 0);
        CHECK_EQ_MEM(out.data, out.len, in->data, in->len);
    }
    if (orig)
        protobuf_c_message_free_unpacked(orig, NULL);
    buf_free(&out);
}

static Etcdserverpb__ResponseHeader header = {
    PROTOBUF_C_MESSAGE_INIT(&etcdserverpb__response_header__descriptor), 1, 2, 3, 4};

static Mvccpb__KeyValue mkkv(const char *k, const char *v)
{
    Mvccpb__KeyValue kv = MVCCPB__KEY_VALUE__INIT;
    kv.key = (ProtobufCBinaryData){strlen(k), (uint8_t *)k};
    kv.value = (ProtobufCBinaryData){strlen(v), (uint8_t *)v};
    kv.mod_revision = 9;
    return kv;
}

/* ---------------------------------------------------------------- cases */

static void test_range_response(void)
{
    Mvccpb__KeyValue kv = mkkv("/a", "va");
    buf_t kvb = BUF_INIT, hb = BUF_INIT, in = BUF_INIT;
    packed_unk(&kvb, &kv.base);
    packed_unk(&hb, &header.base);
    Etcdserverpb__RangeResponse r = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    r.count = 1;
    packed_unk(&in, &r.base);
    embed(&in, 1, &hb);  /* header with unknowns */
    embed(&in, 2, &kvb); /* kvs[0] with unknowns */
    embed(&in, 2, &kvb); /* kvs[1] */
    check_survives("Range", intercept_kv_range_response, TRANSFORM_RESPONSE,
                   &etcdserverpb__range_response__descriptor, &in, 4, NULL, 0);
    buf_free(&kvb);
    buf_free(&hb);
    buf_free(&in);
}

static void test_put(void)
{
    Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
    p.key = (ProtobufCBinaryData){2, (uint8_t *)"/p"};
    p.value = (ProtobufCBinaryData){1, (uint8_t *)"v"};
    buf_t in = BUF_INIT, kvb = BUF_INIT;
    packed_unk(&in, &p.base);
    check_survives("Put req", intercept_kv_put_request, TRANSFORM_REQUEST,
                   &etcdserverpb__put_request__descriptor, &in, 1, NULL, 0);

    Mvccpb__KeyValue kv = mkkv("/p", "old");
    packed_unk(&kvb, &kv.base);
    Etcdserverpb__PutResponse r = ETCDSERVERPB__PUT_RESPONSE__INIT;
    r.header = &header;
    packed_unk(&in, &r.base);
    embed(&in, 2, &kvb);
    check_survives("Put resp", intercept_kv_put_response, TRANSFORM_RESPONSE,
                   &etcdserverpb__put_response__descriptor, &in, 2, NULL, 0);
    buf_free(&in);
    buf_free(&kvb);
}

static void test_delete_range_response(void)
{
    Mvccpb__KeyValue kv = mkkv("/d", "gone");
    buf_t kvb = BUF_INIT, in = BUF_INIT;
    packed_unk(&kvb, &kv.base);
    Etcdserverpb__DeleteRangeResponse r = ETCDSERVERPB__DELETE_RANGE_RESPONSE__INIT;
    r.deleted = 1;
    packed_unk(&in, &r.base);
    embed(&in, 3, &kvb);
    check_survives("DeleteRange", intercept_kv_delete_range_response, TRANSFORM_RESPONSE,
                   &etcdserverpb__delete_range_response__descriptor, &in, 2, NULL, 0);
    buf_free(&kvb);
    buf_free(&in);
}

static void test_txn_request(void)
{
    /* TxnRequest{compare[0]+U, success[0]=RequestOp+U{put+U}, failure[0]=RequestOp+U{
     *   txn+U{success[0]=RequestOp+U{put+U}}}} + U */
    Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
    p.key = (ProtobufCBinaryData){2, (uint8_t *)"/t"};
    p.value = (ProtobufCBinaryData){1, (uint8_t *)"v"};
    Etcdserverpb__Compare c = ETCDSERVERPB__COMPARE__INIT;
    c.key = (ProtobufCBinaryData){2, (uint8_t *)"/t"};
    c.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE;
    c.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
    c.value = (ProtobufCBinaryData){1, (uint8_t *)"x"};
    Etcdserverpb__RequestOp empty_op = ETCDSERVERPB__REQUEST_OP__INIT;
    Etcdserverpb__TxnRequest empty_txn = ETCDSERVERPB__TXN_REQUEST__INIT;
    buf_t pb = BUF_INIT, cb = BUF_INIT, op = BUF_INIT, inner = BUF_INIT, op2 = BUF_INIT,
          in = BUF_INIT;
    packed_unk(&pb, &p.base);
    packed_unk(&cb, &c.base);
    packed_unk(&op, &empty_op.base);
    embed(&op, 2, &pb); /* RequestOp.request_put */
    packed_unk(&inner, &empty_txn.base);
    embed(&inner, 2, &op); /* nested Txn success */
    packed_unk(&op2, &empty_op.base);
    embed(&op2, 4, &inner); /* RequestOp.request_txn */
    packed_unk(&in, &empty_txn.base);
    embed(&in, 1, &cb);
    embed(&in, 2, &op);
    embed(&in, 3, &op2);
    /* top, compare, op+put (x2), op2, inner txn = 1 + 1 + 2 + 1 + 1 + 2 (op+put inside) */
    check_survives("Txn req", intercept_kv_txn_request, TRANSFORM_REQUEST,
                   &etcdserverpb__txn_request__descriptor, &in, 8, NULL, 0);
    buf_free(&pb);
    buf_free(&cb);
    buf_free(&op);
    buf_free(&inner);
    buf_free(&op2);
    buf_free(&in);
}

static void test_txn_response(void)
{
    /* TxnResponse+U{responses[0]=ResponseOp+U{txn+U{responses[0]=ResponseOp+U{
     *   range+U{kvs[0]=KV+U}}}}} */
    Mvccpb__KeyValue kv = mkkv("/tr", "val");
    Etcdserverpb__RangeResponse rr = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    Etcdserverpb__ResponseOp empty_op = ETCDSERVERPB__RESPONSE_OP__INIT;
    Etcdserverpb__TxnResponse empty_txn = ETCDSERVERPB__TXN_RESPONSE__INIT;
    buf_t kvb = BUF_INIT, rrb = BUF_INIT, op = BUF_INIT, inner = BUF_INIT, op2 = BUF_INIT,
          in = BUF_INIT;
    packed_unk(&kvb, &kv.base);
    packed_unk(&rrb, &rr.base);
    embed(&rrb, 2, &kvb);
    packed_unk(&op, &empty_op.base);
    embed(&op, 1, &rrb);
    packed_unk(&inner, &empty_txn.base);
    embed(&inner, 3, &op);
    packed_unk(&op2, &empty_op.base);
    embed(&op2, 4, &inner);
    packed_unk(&in, &empty_txn.base);
    embed(&in, 3, &op2);
    check_survives("Txn resp", intercept_kv_txn_response, TRANSFORM_RESPONSE,
                   &etcdserverpb__txn_response__descriptor, &in, 6, NULL, 0);
    buf_free(&kvb);
    buf_free(&rrb);
    buf_free(&op);
    buf_free(&inner);
    buf_free(&op2);
    buf_free(&in);
}

static void test_watch_response(void)
{
    Mvccpb__KeyValue kv = mkkv("/w", "new"), prev = mkkv("/w", "old");
    Mvccpb__Event ev = MVCCPB__EVENT__INIT;
    Etcdserverpb__WatchResponse w = ETCDSERVERPB__WATCH_RESPONSE__INIT;
    w.watch_id = 4;
    buf_t kvb = BUF_INIT, pvb = BUF_INIT, evb = BUF_INIT, in = BUF_INIT;
    packed_unk(&kvb, &kv.base);
    packed_unk(&pvb, &prev.base);
    packed_unk(&evb, &ev.base);
    embed(&evb, 2, &kvb);
    embed(&evb, 3, &pvb);
    packed_unk(&in, &w.base);
    embed(&in, 11, &evb);
    check_survives("Watch", intercept_watch_response, TRANSFORM_RESPONSE,
                   &etcdserverpb__watch_response__descriptor, &in, 4, NULL, 0);
    buf_free(&kvb);
    buf_free(&pvb);
    buf_free(&evb);
    buf_free(&in);
}

static void test_election(void)
{
    V3electionpb__CampaignRequest c = V3ELECTIONPB__CAMPAIGN_REQUEST__INIT;
    c.name = (ProtobufCBinaryData){2, (uint8_t *)"/e"};
    c.lease = 7;
    c.value = (ProtobufCBinaryData){1, (uint8_t *)"v"};
    buf_t in = BUF_INIT, lk = BUF_INIT, kvb = BUF_INIT;
    packed_unk(&in, &c.base);
    check_survives("Campaign", intercept_election_campaign_request, TRANSFORM_REQUEST,
                   &v3electionpb__campaign_request__descriptor, &in, 1, NULL, 0);

    V3electionpb__LeaderKey leader = V3ELECTIONPB__LEADER_KEY__INIT;
    leader.key = (ProtobufCBinaryData){4, (uint8_t *)"/e/7"};
    V3electionpb__ProclaimRequest p = V3ELECTIONPB__PROCLAIM_REQUEST__INIT;
    p.value = (ProtobufCBinaryData){1, (uint8_t *)"w"};
    packed_unk(&lk, &leader.base);
    packed_unk(&in, &p.base);
    embed(&in, 1, &lk);
    check_survives("Proclaim", intercept_election_proclaim_request, TRANSFORM_REQUEST,
                   &v3electionpb__proclaim_request__descriptor, &in, 2, NULL, 0);

    Mvccpb__KeyValue kv = mkkv("/e/7", "w");
    V3electionpb__LeaderResponse l = V3ELECTIONPB__LEADER_RESPONSE__INIT;
    packed_unk(&kvb, &kv.base);
    packed_unk(&in, &l.base);
    embed(&in, 2, &kvb);
    check_survives("Leader", intercept_election_leader_response, TRANSFORM_RESPONSE,
                   &v3electionpb__leader_response__descriptor, &in, 2, NULL, 0);
    check_survives("Observe", intercept_election_observe_response, TRANSFORM_RESPONSE,
                   &v3electionpb__leader_response__descriptor, &in, 2, NULL, 0);
    buf_free(&in);
    buf_free(&lk);
    buf_free(&kvb);
}

static void test_member_list(void)
{
    char *urls[] = {"http://10.0.0.1:2379"};
    Etcdserverpb__Member m = ETCDSERVERPB__MEMBER__INIT;
    m.id = 1;
    m.name = "m1";
    m.clienturls = urls;
    m.n_clienturls = 1;
    Etcdserverpb__MemberListResponse r = ETCDSERVERPB__MEMBER_LIST_RESPONSE__INIT;
    buf_t mb = BUF_INIT, in = BUF_INIT;
    packed_unk(&mb, &m.base);
    packed_unk(&in, &r.base);
    embed(&in, 2, &mb);
    embed(&in, 2, &mb);
    static const char *const adv[] = {"https://proxy:2379"};
    check_survives("MemberList", intercept_cluster_member_list_response, TRANSFORM_RESPONSE,
                   &etcdserverpb__member_list_response__descriptor, &in, 3, adv, 1);
    buf_free(&mb);
    buf_free(&in);
}

int main(int argc, char **argv)
{
    (void)argc;
    TEST_BEGIN(argv[0]);
    RUN(test_range_response);
    RUN(test_put);
    RUN(test_delete_range_response);
    RUN(test_txn_request);
    RUN(test_txn_response);
    RUN(test_watch_response);
    RUN(test_election);
    RUN(test_member_list);
    intercept_thread_release();
    return TEST_EXIT();
}
