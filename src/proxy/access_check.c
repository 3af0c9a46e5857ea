/* access_check.c - which keys a call touches, and the verdict (see access_check.h).
 *
 * Every request message of a KEYS-class method is decoded with the protobuf-c types and each
 * key or range it names is checked with the verb the operation needs: reads for Range, Watch
 * creates, Election Leader/Observe and Txn compares; writes for Put, DeleteRange, Compact (on
 * the whole keyspace: it removes history of every key), Election Campaign/Proclaim/Resign and
 * Lock/Unlock; Put and DeleteRange with prev_kv also need read (they return old values). A Txn
 * is checked in its compares and both branches at every nesting level, whatever branch etcd
 * would take. Election and Lock names are checked as prefixes: etcd stores their keys under
 * "<name>/<lease>". The first denied key ends the check.
 */
#include "proxy/access_check.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/metrics.h"
#include "etcdserverpb/rpc.pb-c.h"
#include "proxy/grpc_wire.h"
#include "proxy/intercept_kv.h"
#include "proxy/intercept_values.h"
#include "v3electionpb/v3election.pb-c.h"
#include "v3lockpb/v3lock.pb-c.h"

#define MAX_METHODS 128

/* ------------------------------------------------------------------ metrics */

static _Atomic(metrics_counter *) denied_ctr[MAX_METHODS], allowed_ctr[MAX_METHODS];

static metrics_counter *counter(_Atomic(metrics_counter *) *slot, bool denied, const method_desc *m)
{
    metrics_counter *c = atomic_load_explicit(slot, memory_order_acquire);
    if (c)
        return c;
    char labels[160];
    snprintf(labels, sizeof labels, "service=\"%s\",method=\"%s\"", m->service, m->name);
    c = denied
            ? metrics_counter_get("etcdseal_access_denied_total",
                                  "Calls refused by the access policy (PERMISSION_DENIED)", labels)
            : metrics_counter_get("etcdseal_access_allowed_total",
                                  "Calls the access policy let through", labels);
    /* racing workers get the same series back: storing it twice is harmless */
    atomic_store_explicit(slot, c, memory_order_release);
    return c;
}

static void count(const method_desc *m, bool denied)
{
    if (m->index >= MAX_METHODS)
        return;
    metrics_counter_add(counter(denied ? &denied_ctr[m->index] : &allowed_ctr[m->index], denied, m),
                        1);
}

/* ------------------------------------------------------------------ classes */

enum access_call_class access_method_class(const method_desc *m)
{
    const char *s = m->service;
    if (!strcmp(s, "grpc.health.v1.Health"))
        return ACCESS_CALL_FREE;
    if (!strcmp(s, "etcdserverpb.KV") || !strcmp(s, "etcdserverpb.Watch") ||
        !strcmp(s, "v3electionpb.Election") || !strcmp(s, "v3lockpb.Lock"))
        return ACCESS_CALL_KEYS;
    return ACCESS_CALL_METHOD;
}

/* 0 = any caller some rule names (Authenticate: needed to use etcd's own auth at all) */
static unsigned method_verb(const method_desc *m)
{
    const char *s = m->service;
    if (!strcmp(s, "etcdserverpb.Lease"))
        return ACCESS_VERB_LEASE;
    if (!strcmp(s, "etcdserverpb.Auth") && !strcmp(m->name, "Authenticate"))
        return 0;
    if (!strcmp(s, "etcdserverpb.Auth") || !strcmp(s, "etcdserverpb.Cluster") ||
        !strcmp(s, "etcdserverpb.Maintenance"))
        return ACCESS_VERB_ADMIN;
    return ~0u; /* a service this table does not know: nobody */
}

int access_check_method(const access_policy *p, const peer_identity *pi, const method_desc *m,
                        es_error *err)
{
    access_identity id;
    peer_identity_view(pi, &id);
    unsigned verb = method_verb(m);
    bool ok = verb == 0     ? access_policy_known(p, &id)
              : verb == ~0u ? false
                            : access_policy_check(p, &id, verb, NULL, 0, NULL, 0);
    count(m, !ok);
    if (ok)
        return 0;
    const char *need = verb == 0 ? "a matching rule" : verb == ~0u ? "-" : access_verb_name(verb);
    log_warn("access denied|identity=\"%s\" method=%s verb=%s verdict=deny", pi->shown, m->path,
             need);
    return es_error_set(err, GRPC_PERMISSION_DENIED,
                        "etcdseal: access denied: identity \"%s\" may not call %s (needs %s)",
                        pi->shown, m->path, need);
}

/* ------------------------------------------------------------------ key checks */

typedef struct check {
    const access_policy *p;
    access_identity id;
    const peer_identity *pi;
    const method_desc *m;
    es_error *err;
} check;

static int deny(check *c, unsigned verb, const uint8_t *key, size_t key_len,
                const uint8_t *range_end, size_t range_end_len)
{
    char shown[INTERCEPT_KEY_SHOWN_MAX], shown_end[INTERCEPT_KEY_SHOWN_MAX];
    intercept_format_key(shown, sizeof shown, key, key_len);
    if (range_end_len == 1 && range_end[0] == 0)
        snprintf(shown_end, sizeof shown_end, "(end of keyspace)");
    else
        intercept_format_key(shown_end, sizeof shown_end, range_end, range_end_len);
    const char *verb_name = access_verb_name(verb);
    count(c->m, true);
    if (range_end_len == 0) {
        log_warn("access denied|identity=\"%s\" method=%s verb=%s key=\"%s\" verdict=deny",
                 c->pi->shown, c->m->path, verb_name, shown);
        return es_error_set(c->err, GRPC_PERMISSION_DENIED,
                            "etcdseal: access denied: identity \"%s\" may not %s \"%s\"",
                            c->pi->shown, verb_name, shown);
    }
    log_warn("access denied|identity=\"%s\" method=%s verb=%s key=\"%s\" range_end=\"%s\" "
             "verdict=deny",
             c->pi->shown, c->m->path, verb_name, shown, shown_end);
    return es_error_set(c->err, GRPC_PERMISSION_DENIED,
                        "etcdseal: access denied: identity \"%s\" may not %s \"%s\" (range to "
                        "\"%s\")",
                        c->pi->shown, verb_name, shown, shown_end);
}

static int need(check *c, unsigned verb, const ProtobufCBinaryData *key,
                const ProtobufCBinaryData *range_end)
{
    size_t rel = range_end ? range_end->len : 0;
    const uint8_t *re = range_end ? range_end->data : NULL;
    if (access_policy_check(c->p, &c->id, verb, key->data, key->len, re, rel))
        return 0;
    return deny(c, verb, key->data, key->len, re, rel);
}

/* Every key under `name` (Election and Lock keys are "<name>/<lease id>"). */
static int need_prefix(check *c, unsigned verb, const ProtobufCBinaryData *name)
{
    uint8_t stack[256];
    uint8_t *end = name->len < sizeof stack ? stack : malloc(name->len + 1);
    if (!end)
        return es_error_set(c->err, GRPC_RESOURCE_EXHAUSTED, "etcdseal: out of memory");
    ProtobufCBinaryData range_end = {access_prefix_end(name->data, name->len, end), end};
    int rc = need(c, verb, name, &range_end);
    if (end != stack)
        free(end);
    return rc;
}

static int check_range(check *c, const Etcdserverpb__RangeRequest *r)
{
    return need(c, ACCESS_VERB_READ, &r->key, &r->range_end);
}

static int check_put(check *c, const Etcdserverpb__PutRequest *r)
{
    if (need(c, ACCESS_VERB_WRITE, &r->key, NULL) != 0)
        return -1;
    return r->prev_kv ? need(c, ACCESS_VERB_READ, &r->key, NULL) : 0;
}

static int check_delete(check *c, const Etcdserverpb__DeleteRangeRequest *r)
{
    if (need(c, ACCESS_VERB_WRITE, &r->key, &r->range_end) != 0)
        return -1;
    return r->prev_kv ? need(c, ACCESS_VERB_READ, &r->key, &r->range_end) : 0;
}

static int check_txn(check *c, const Etcdserverpb__TxnRequest *t)
{
    for (size_t i = 0; i < t->n_compare; i++)
        if (need(c, ACCESS_VERB_READ, &t->compare[i]->key, &t->compare[i]->range_end) != 0)
            return -1;
    for (int branch = 0; branch < 2; branch++) {
        Etcdserverpb__RequestOp **ops = branch ? t->failure : t->success;
        size_t n = branch ? t->n_failure : t->n_success;
        for (size_t i = 0; i < n; i++) {
            const Etcdserverpb__RequestOp *op = ops[i];
            int rc = 0;
            switch (op->request_case) {
            case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE:
                rc = check_range(c, op->request_range);
                break;
            case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT:
                rc = check_put(c, op->request_put);
                break;
            case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
                rc = check_delete(c, op->request_delete_range);
                break;
            case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN:
                rc = check_txn(c, op->request_txn);
                break;
            default:
                break; /* an empty op touches nothing (etcd rejects it) */
            }
            if (rc != 0)
                return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ per method */

typedef int (*check_fn)(check *c, const ProtobufCMessage *msg);

static int c_range(check *c, const ProtobufCMessage *m)
{
    return check_range(c, (const Etcdserverpb__RangeRequest *)m);
}
static int c_put(check *c, const ProtobufCMessage *m)
{
    return check_put(c, (const Etcdserverpb__PutRequest *)m);
}
static int c_delete(check *c, const ProtobufCMessage *m)
{
    return check_delete(c, (const Etcdserverpb__DeleteRangeRequest *)m);
}
static int c_txn(check *c, const ProtobufCMessage *m)
{
    return check_txn(c, (const Etcdserverpb__TxnRequest *)m);
}
static int c_compact(check *c, const ProtobufCMessage *m)
{
    (void)m; /* compaction drops old revisions of every key: needs write on all of them */
    static const uint8_t nul[1] = {0};
    ProtobufCBinaryData key = {0, (uint8_t *)nul}, end = {1, (uint8_t *)nul};
    return need(c, ACCESS_VERB_WRITE, &key, &end);
}
static int c_watch(check *c, const ProtobufCMessage *m)
{
    const Etcdserverpb__WatchRequest *w = (const Etcdserverpb__WatchRequest *)m;
    if (w->request_union_case != ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST ||
        !w->create_request)
        return 0; /* cancel / progress requests touch no key */
    return need(c, ACCESS_VERB_READ, &w->create_request->key, &w->create_request->range_end);
}
static int c_campaign(check *c, const ProtobufCMessage *m)
{
    return need_prefix(c, ACCESS_VERB_WRITE, &((const V3electionpb__CampaignRequest *)m)->name);
}
static int c_leader_key(check *c, const V3electionpb__LeaderKey *k)
{
    if (!k)
        return 0; /* etcd answers a request without leader key with an error */
    return need(c, ACCESS_VERB_WRITE, &k->key, NULL);
}
static int c_proclaim(check *c, const ProtobufCMessage *m)
{
    return c_leader_key(c, ((const V3electionpb__ProclaimRequest *)m)->leader);
}
static int c_resign(check *c, const ProtobufCMessage *m)
{
    return c_leader_key(c, ((const V3electionpb__ResignRequest *)m)->leader);
}
static int c_leader(check *c, const ProtobufCMessage *m)
{
    return need_prefix(c, ACCESS_VERB_READ, &((const V3electionpb__LeaderRequest *)m)->name);
}
static int c_lock(check *c, const ProtobufCMessage *m)
{
    return need_prefix(c, ACCESS_VERB_WRITE, &((const V3lockpb__LockRequest *)m)->name);
}
static int c_unlock(check *c, const ProtobufCMessage *m)
{
    return need(c, ACCESS_VERB_WRITE, &((const V3lockpb__UnlockRequest *)m)->key, NULL);
}

static const struct {
    const char *path;
    const ProtobufCMessageDescriptor *desc;
    check_fn fn;
} table[] = {
    {"/etcdserverpb.KV/Compact", &etcdserverpb__compaction_request__descriptor, c_compact},
    {"/etcdserverpb.KV/DeleteRange", &etcdserverpb__delete_range_request__descriptor, c_delete},
    {"/etcdserverpb.KV/Put", &etcdserverpb__put_request__descriptor, c_put},
    {"/etcdserverpb.KV/Range", &etcdserverpb__range_request__descriptor, c_range},
    {"/etcdserverpb.KV/Txn", &etcdserverpb__txn_request__descriptor, c_txn},
    {"/etcdserverpb.Watch/Watch", &etcdserverpb__watch_request__descriptor, c_watch},
    {"/v3electionpb.Election/Campaign", &v3electionpb__campaign_request__descriptor, c_campaign},
    {"/v3electionpb.Election/Leader", &v3electionpb__leader_request__descriptor, c_leader},
    {"/v3electionpb.Election/Observe", &v3electionpb__leader_request__descriptor, c_leader},
    {"/v3electionpb.Election/Proclaim", &v3electionpb__proclaim_request__descriptor, c_proclaim},
    {"/v3electionpb.Election/Resign", &v3electionpb__resign_request__descriptor, c_resign},
    {"/v3lockpb.Lock/Lock", &v3lockpb__lock_request__descriptor, c_lock},
    {"/v3lockpb.Lock/Unlock", &v3lockpb__unlock_request__descriptor, c_unlock},
};

int access_check_message(const access_policy *p, const peer_identity *pi, const method_desc *m,
                         const uint8_t *msg, size_t len, es_error *err)
{
    size_t i = 0;
    while (i < sizeof table / sizeof table[0] && strcmp(table[i].path, m->path) != 0)
        i++;
    if (i == sizeof table / sizeof table[0]) { /* not a KEYS method: never expected here */
        count(m, true);
        return es_error_set(err, GRPC_PERMISSION_DENIED,
                            "etcdseal: access denied: %s has no access rule", m->path);
    }
    if (table[i].fn == c_txn && len && intercept_txn_depth(msg, len) < 0)
        return es_error_set(err, GRPC_INVALID_ARGUMENT,
                            "%s: malformed Txn request or nested deeper than %d levels", m->path,
                            INTERCEPT_MAX_TXN_DEPTH);
    static const uint8_t empty[1];
    ProtobufCMessage *decoded =
        protobuf_c_message_unpack(table[i].desc, NULL, len, len ? msg : empty);
    if (!decoded)
        return es_error_set(err, GRPC_INVALID_ARGUMENT, "%s: cannot decode %s request (%zu bytes)",
                            m->path, table[i].desc->name, len);
    check c = {.p = p, .pi = pi, .m = m, .err = err};
    peer_identity_view(pi, &c.id);
    int rc = table[i].fn(&c, decoded);
    protobuf_c_message_free_unpacked(decoded, NULL);
    if (rc == 0)
        count(m, false);
    return rc;
}

int access_watch_denied_response(const char *reason, buf_t *out)
{
    Etcdserverpb__ResponseHeader header = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    Etcdserverpb__WatchResponse r = ETCDSERVERPB__WATCH_RESPONSE__INIT;
    r.header = &header; /* clientv3 dereferences it */
    r.watch_id = -1;
    r.created = 1;
    r.canceled = 1;
    r.cancel_reason = (char *)reason;
    size_t n = etcdserverpb__watch_response__get_packed_size(&r);
    if (buf_reserve(out, n) != 0)
        return -1;
    out->len += etcdserverpb__watch_response__pack(&r, out->data + out->len);
    return 0;
}
