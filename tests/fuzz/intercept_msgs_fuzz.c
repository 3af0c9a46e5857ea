/* intercept_msgs_fuzz.c - arbitrary bytes into every value transformer.
 *
 * Byte 0 selects the transformer (and so the method and direction); byte 1 selects the value
 * hook: 0 the production one (values unchanged), 1 one that rewrites every value (forces
 * re-encoding and arena allocations), 2 one that fails on the first value. The rest is the
 * message. Invariants: no crash/leak/UB; success with the production hook forwards the input
 * unchanged; success with the rewriting hook yields bytes that decode again; failure sets a
 * gRPC code (3 for requests, 13 for responses on decode errors) and writes nothing.
 */
#include <stdlib.h>
#include <string.h>

#include "etcdserverpb/rpc.pb-c.h"
#include "proxy/intercept_cluster.h"
#include "proxy/intercept_election.h"
#include "proxy/intercept_kv.h"
#include "proxy/intercept_values.h"
#include "proxy/intercept_watch.h"
#include "v3electionpb/v3election.pb-c.h"

static const struct {
    transform_fn fn;
    enum transform_dir dir;
    const char *method;
    const ProtobufCMessageDescriptor *desc;
} targets[] = {
    {intercept_kv_range_response, TRANSFORM_RESPONSE, "/etcdserverpb.KV/Range",
     &etcdserverpb__range_response__descriptor},
    {intercept_kv_put_request, TRANSFORM_REQUEST, "/etcdserverpb.KV/Put",
     &etcdserverpb__put_request__descriptor},
    {intercept_kv_put_response, TRANSFORM_RESPONSE, "/etcdserverpb.KV/Put",
     &etcdserverpb__put_response__descriptor},
    {intercept_kv_delete_range_response, TRANSFORM_RESPONSE, "/etcdserverpb.KV/DeleteRange",
     &etcdserverpb__delete_range_response__descriptor},
    {intercept_kv_txn_request, TRANSFORM_REQUEST, "/etcdserverpb.KV/Txn",
     &etcdserverpb__txn_request__descriptor},
    {intercept_kv_txn_response, TRANSFORM_RESPONSE, "/etcdserverpb.KV/Txn",
     &etcdserverpb__txn_response__descriptor},
    {intercept_watch_response, TRANSFORM_RESPONSE, "/etcdserverpb.Watch/Watch",
     &etcdserverpb__watch_response__descriptor},
    {intercept_election_campaign_request, TRANSFORM_REQUEST, "/v3electionpb.Election/Campaign",
     &v3electionpb__campaign_request__descriptor},
    {intercept_election_proclaim_request, TRANSFORM_REQUEST, "/v3electionpb.Election/Proclaim",
     &v3electionpb__proclaim_request__descriptor},
    {intercept_election_leader_response, TRANSFORM_RESPONSE, "/v3electionpb.Election/Leader",
     &v3electionpb__leader_response__descriptor},
    {intercept_election_observe_response, TRANSFORM_RESPONSE, "/v3electionpb.Election/Observe",
     &v3electionpb__leader_response__descriptor},
    {intercept_cluster_member_list_response, TRANSFORM_RESPONSE, "/etcdserverpb.Cluster/MemberList",
     &etcdserverpb__member_list_response__descriptor},
};
#define N_TARGETS (sizeof(targets) / sizeof(targets[0]))

static int rewrite_hook(transform_ctx *ctx, enum intercept_site site,
                        const ProtobufCBinaryData *key, ProtobufCBinaryData *value, es_error *err)
{
    (void)ctx;
    (void)site;
    (void)err;
    size_t n = value->len + key->len + 1;
    uint8_t *p = intercept_alloc(n);
    if (!p)
        return -1;
    if (value->len)
        memcpy(p, value->data, value->len);
    p[value->len] = '|';
    if (key->len)
        memcpy(p + value->len + 1, key->data, key->len);
    value->data = p;
    value->len = n;
    return 1;
}

static int fail_hook(transform_ctx *ctx, enum intercept_site site, const ProtobufCBinaryData *key,
                     ProtobufCBinaryData *value, es_error *err)
{
    (void)ctx;
    (void)site;
    (void)key;
    (void)value;
    return es_error_set(err, 7, "denied");
}

/* protobuf-c accepts an over-long encoded field number 0 (e.g. 80 00) as an unknown field but
 * rejects the canonical tag 00 it re-encodes it to; etcd rejects both. Such inputs are exempt
 * from the "output decodes again" invariant. */
static int has_field_zero(const ProtobufCMessage *m)
{
    if (!m)
        return 0;
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        if (m->unknown_fields[i].tag == 0)
            return 1;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const char *base = (const char *)m;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            ProtobufCMessage *const *arr = *(ProtobufCMessage *const *const *)(base + f->offset);
            for (size_t k = 0; k < n; k++)
                if (has_field_zero(arr[k]))
                    return 1;
        } else if (!(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) ||
                   *(const uint32_t *)(base + f->quantifier_offset) == f->id) {
            if (has_field_zero(*(ProtobufCMessage *const *)(base + f->offset)))
                return 1;
        }
    }
    return 0;
}

static int input_has_field_zero(const ProtobufCMessageDescriptor *d, const uint8_t *msg, size_t len)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, len, msg);
    int r = has_field_zero(m);
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t t = data[0] % N_TARGETS;
    int hook = data[1] % 3;
    const uint8_t *msg = data + 2;
    size_t len = size - 2;
    intercept_set_value_hook(hook == 1 ? rewrite_hook : hook == 2 ? fail_hook : NULL);
    static const char *const urls[] = {"https://proxy:2379"};
    void *state = NULL;
    transform_ctx ctx = {.dir = targets[t].dir,
                         .method = targets[t].method,
                         .advertise_urls = urls,
                         .n_advertise_urls = hook == 1 ? 1 : 0,
                         .stream_state = &state};
    buf_t out = BUF_INIT;
    es_error err = {0};
    int rc = targets[t].fn(&ctx, msg, len, &out, &err);
    if (rc == 0) {
        if (hook == 0 && (out.len != len || (len && memcmp(out.data, msg, len) != 0)))
            abort(); /* values unchanged must mean bytes unchanged */
        if (hook == 1) {
            /* the output must itself be acceptable input */
            buf_t again = BUF_INIT;
            es_error err2 = {0};
            intercept_set_value_hook(NULL);
            if (targets[t].fn(&ctx, out.data, out.len, &again, &err2) != 0 &&
                !input_has_field_zero(targets[t].desc, msg, len))
                abort();
            buf_free(&again);
        }
    } else {
        if (err.code == 0 || out.len != 0)
            abort();
    }
    buf_free(&out);
    intercept_set_value_hook(NULL);
    return 0;
}
