/* intercept_msgs_fuzz.c - arbitrary bytes into every value transformer.
 *
 * Byte 0 selects the transformer (and so the method and direction); byte 1 selects the value
 * hook: 0 the production one without a policy (values unchanged), 1 one that rewrites every
 * value (forces re-encoding and arena allocations), 2 one that fails on the first value, 3 the
 * production one with a real encryption policy loaded (aesgcm, secretbox, aescbc literal
 * prefixes and Kubernetes secrets). The rest is the message. Invariants: no crash/leak/UB;
 * success without a policy forwards the input unchanged; success with the rewriting hook yields
 * bytes that decode again; with the policy, a successful response never carries a value that
 * starts with "k8s:enc:" (no ciphertext reaches a client) and a successful request never
 * carries a Put value under a protected key that is not in the stored format; failure sets a
 * gRPC code and writes nothing.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "etcdserverpb/rpc.pb-c.h"
#include "proxy/intercept_cluster.h"
#include "proxy/intercept_election.h"
#include "policy/encryption.h"
#include "proxy/intercept_kv.h"
#include "proxy/intercept_range_sort.h"
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
    {intercept_kv_range_request, TRANSFORM_REQUEST, "/etcdserverpb.KV/Range",
     &etcdserverpb__range_request__descriptor},
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

/* ---------------------------------------------------------------- policy mode */

#define FZ_K32 "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
static const char fuzz_yaml[] =
    "apiVersion: apiserver.config.k8s.io/v1\n"
    "kind: EncryptionConfiguration\n"
    "resources:\n"
    "- resources: [/a]\n"
    "  providers: [{aesgcm: {keys: [{name: k, secret: " FZ_K32 "}]}}]\n"
    "- resources: [/s]\n"
    "  providers: [{secretbox: {keys: [{name: k, secret: " FZ_K32 "}]}}, {identity: {}}]\n"
    "- resources: [/c]\n"
    "  providers: [{aescbc: {keys: [{name: k, secret: " FZ_K32 "}]}}]\n"
    "- resources: [secrets]\n"
    "  providers: [{aesgcm: {keys: [{name: s, secret: " FZ_K32 "}]}}]\n";

static policy_encryption *fuzz_policy(void)
{
    static policy_encryption *p;
    static int tried;
    if (!tried) {
        tried = 1;
        es_error err = {0};
        if (policy_encryption_load_buffer("fuzz", fuzz_yaml, sizeof fuzz_yaml - 1, NULL, &p,
                                          &err) != 0)
            abort();
    }
    return p;
}

static int starts_enc(const ProtobufCBinaryData *v)
{
    return v->len >= 8 && memcmp(v->data, "k8s:enc:", 8) == 0;
}

/* Walks every sub-message: -1 when a KeyValue value looks encrypted (responses) or a Put value
 * under a protected key does not (requests). */
static int policy_violation(const ProtobufCMessage *m, const policy_encryption *p)
{
    if (!m)
        return 0;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (d == &mvccpb__key_value__descriptor && starts_enc(&((const Mvccpb__KeyValue *)m)->value))
        return -1;
    if (d == &etcdserverpb__put_request__descriptor) {
        const Etcdserverpb__PutRequest *r = (const Etcdserverpb__PutRequest *)m;
        if (!(r->ignore_value && r->value.len == 0) &&
            policy_encryption_chain_for_key(p, r->key.data, r->key.len) && !starts_enc(&r->value))
            return -1;
    }
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const char *base = (const char *)m;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            ProtobufCMessage *const *arr = *(ProtobufCMessage *const *const *)(base + f->offset);
            for (size_t k = 0; k < n; k++)
                if (policy_violation(arr[k], p))
                    return -1;
        } else if (!(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) ||
                   *(const uint32_t *)(base + f->quantifier_offset) == f->id) {
            if (policy_violation(*(ProtobufCMessage *const *)(base + f->offset), p))
                return -1;
        }
    }
    return 0;
}

static void check_policy_output(const ProtobufCMessageDescriptor *d, const buf_t *out,
                                const uint8_t *msg, size_t len, const policy_encryption *p)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, out->len, out->data);
    if (!m) {
        /* a transformer that re-encoded must produce decodable bytes; ones that forwarded the
         * input untouched (e.g. MemberList without URLs to rewrite) need not have decoded it */
        bool same = out->len == len && (len == 0 || memcmp(out->data, msg, len) == 0);
        if (!same && !input_has_field_zero(d, msg, len))
            abort();
        return;
    }
    if (policy_violation(m, p))
        abort();
    protobuf_c_message_free_unpacked(m, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t t = data[0] % N_TARGETS;
    int hook = data[1] % 4;
    const uint8_t *msg = data + 2;
    size_t len = size - 2;
    intercept_set_value_hook(hook == 1 ? rewrite_hook : hook == 2 ? fail_hook : NULL);
    policy_encryption *pol = hook == 3 ? fuzz_policy() : NULL;
    static const char *const urls[] = {"https://proxy:2379"};
    void *state = NULL;
    transform_ctx ctx = {.dir = targets[t].dir,
                         .method = targets[t].method,
                         .advertise_urls = urls,
                         .n_advertise_urls = hook == 1 ? 1 : 0,
                         .stream_state = &state,
                         .policy = pol};
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
        if (hook == 3)
            check_policy_output(targets[t].desc, &out, msg, len, pol);
    } else {
        if (err.code == 0 || out.len != 0)
            abort();
    }
    range_sort_state_free(state); /* only the Range request transformer sets it */
    buf_free(&out);
    intercept_set_value_hook(NULL);
    return 0;
}
