/* intercept_values.c - the per-value hook, the per-thread decode arena and the shared
 * decode -> walk -> re-encode driver used by intercept_kv/watch/election/cluster.
 *
 * The arena: protobuf-c allocates every decoded struct, repeated array, bytes copy and unknown
 * field through a ProtobufCAllocator. Ours bumps a pointer inside per-thread chunks and never
 * frees individually; after each message the used bytes are wiped (they held plaintext values)
 * and the chunks collapse into one chunk big enough for the largest recent message (capped), so
 * a worker that keeps relaying messages of similar size calls malloc only while warming up.
 */
#include "proxy/intercept_values.h"
#include "proxy/grpc_wire.h"

#include <pthread.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "base/error.h"
#include "crypto/chain.h"
#include "policy/encryption.h"


/* ---------------------------------------------------------------- arena */

#define ARENA_ALIGN 16
#define ARENA_FIRST_CHUNK (64u * 1024u)
#define ARENA_RETAIN_MAX (8u * 1024u * 1024u)

typedef struct arena_chunk {
    struct arena_chunk *next;
    size_t cap;
    size_t used;
    _Alignas(ARENA_ALIGN) unsigned char data[];
} arena_chunk;

typedef struct arena {
    arena_chunk *head; /* chunk being filled; older chunks follow via next */
    buf_t scratch;     /* crypto output before it is copied into the arena; wiped after use */
    uint64_t chunk_mallocs;
    bool registered;
} arena;

static _Thread_local arena tls_arena;
static pthread_key_t arena_key;
static pthread_once_t arena_key_once = PTHREAD_ONCE_INIT;

static void arena_free_chunks(arena *a)
{
    arena_chunk *c = a->head;
    while (c) {
        arena_chunk *next = c->next;
        explicit_bzero(c->data, c->used);
        free(c);
        c = next;
    }
    a->head = NULL;
}

static void arena_release(arena *a)
{
    arena_free_chunks(a);
    buf_wipe_free(&a->scratch);
}

static void arena_thread_exit(void *p)
{
    arena_release(p);
}

static void arena_key_create(void)
{
    (void)pthread_key_create(&arena_key, arena_thread_exit);
}

static arena_chunk *arena_chunk_new(arena *a, size_t cap)
{
    arena_chunk *c = malloc(sizeof(*c) + cap);
    if (!c)
        return NULL;
    c->next = NULL;
    c->cap = cap;
    c->used = 0;
    a->chunk_mallocs++;
    return c;
}

static arena *arena_get(void)
{
    arena *a = &tls_arena;
    if (!a->registered) {
        pthread_once(&arena_key_once, arena_key_create);
        if (pthread_setspecific(arena_key, a) != 0)
            return NULL;
        a->registered = true;
    }
    return a;
}

static void *arena_alloc(arena *a, size_t n)
{
    size_t need = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (need < n)
        return NULL;
    arena_chunk *c = a->head;
    if (!c || c->cap - c->used < need) {
        size_t cap = c ? c->cap * 2 : ARENA_FIRST_CHUNK;
        if (cap < need)
            cap = need;
        arena_chunk *nc = arena_chunk_new(a, cap);
        if (!nc)
            return NULL;
        nc->next = c;
        a->head = c = nc;
    }
    void *p = c->data + c->used;
    c->used += need;
    return p;
}

/* Wipes what the message used; keeps one chunk sized for what it needed (capped). */
static void arena_reset(arena *a)
{
    if (a->scratch.cap > ARENA_RETAIN_MAX)
        buf_wipe_free(&a->scratch);
    arena_chunk *c = a->head;
    if (!c)
        return;
    if (!c->next) {
        explicit_bzero(c->data, c->used);
        c->used = 0;
        return;
    }
    size_t total = 0;
    for (arena_chunk *i = c; i; i = i->next)
        total += i->cap;
    arena_free_chunks(a);
    if (total > ARENA_RETAIN_MAX)
        total = ARENA_RETAIN_MAX;
    a->head = arena_chunk_new(a, total); /* NULL is fine: the next alloc retries */
}

static void *pb_arena_alloc(void *data, size_t n)
{
    return arena_alloc(data, n ? n : 1);
}

static void pb_arena_free(void *data, void *p)
{
    (void)data;
    (void)p; /* released all at once by arena_reset */
}

void *intercept_alloc(size_t n)
{
    arena *a = arena_get();
    return a ? arena_alloc(a, n ? n : 1) : NULL;
}

void intercept_arena_get_stats(intercept_arena_stats *st)
{
    arena *a = &tls_arena;
    st->chunk_mallocs = a->chunk_mallocs;
    st->retained = 0;
    for (arena_chunk *c = a->head; c; c = c->next)
        st->retained += c->cap;
}

void intercept_thread_release(void)
{
    arena_release(&tls_arena);
}

/* ---------------------------------------------------------------- the value hook */

static const char *const site_names[INTERCEPT_SITE_COUNT] = {
    [INTERCEPT_SITE_PUT_VALUE] = "put_value",
    [INTERCEPT_SITE_COMPARE_VALUE] = "compare_value",
    [INTERCEPT_SITE_ELECTION_VALUE] = "election_value",
    [INTERCEPT_SITE_KV] = "kv",
    [INTERCEPT_SITE_PREV_KV] = "prev_kv",
    [INTERCEPT_SITE_EVENT_KV] = "event_kv",
    [INTERCEPT_SITE_EVENT_PREV_KV] = "event_prev_kv",
    [INTERCEPT_SITE_ELECTION_KV] = "election_kv",
};

const char *intercept_site_name(enum intercept_site site)
{
    return (unsigned)site < INTERCEPT_SITE_COUNT ? site_names[site] : "unknown";
}

/* ---------------------------------------------------------------- metrics of the hook */

/* kube-apiserver's label values (k8s.io/apiserver pkg/storage/value/metrics.go): status is the
 * gRPC code name of a KMS error, "unknown-non-grpc" for every local provider error; the prefix
 * of a value no provider matched is "unknown". */
enum { XF_TO = 0, XF_FROM = 1, XF_TYPES };
enum { ST_OK = 0, ST_FAIL = 1, ST_COUNT };
static const char *const xf_type_names[XF_TYPES] = {"to_storage", "from_storage"};
static const char *const xf_status_names[ST_COUNT] = {"OK", "unknown-non-grpc"};
static const char *const xf_prefixes[] = {
    "identity",
    "k8s:enc:aescbc:v1:",
    "k8s:enc:aesgcm:v1:",
    "k8s:enc:secretbox:v1:",
    "k8s:enc:kms:v1:",
    "k8s:enc:kms:v2:",
    "unknown",
};
#define XF_N_PREFIX (sizeof(xf_prefixes) / sizeof(xf_prefixes[0]))
#define XF_UNKNOWN (XF_N_PREFIX - 1)
#define XF_BUCKETS 25 /* ExponentialBuckets(5e-6, 2, 25) */

static _Atomic(metrics_counter *) xf_ops[XF_TYPES][XF_N_PREFIX][ST_COUNT];
static _Atomic(metrics_histogram *) xf_dur[XF_TYPES][XF_N_PREFIX];
static _Atomic(metrics_counter *) xf_stale[XF_N_PREFIX];

static size_t xf_prefix_index(const char *label)
{
    if (!label)
        return XF_UNKNOWN;
    for (size_t i = 0; i < XF_UNKNOWN; i++)
        if (strcmp(label, xf_prefixes[i]) == 0)
            return i;
    return XF_UNKNOWN;
}

/* The provider prefix a stored value starts with ("k8s:enc:<p>:v<n>:"), for the label of a
 * failed read; XF_UNKNOWN when it names no known provider. */
static size_t xf_value_prefix(const uint8_t *v, size_t len)
{
    for (size_t i = 1; i < XF_UNKNOWN; i++) {
        size_t n = strlen(xf_prefixes[i]);
        if (len >= n && memcmp(v, xf_prefixes[i], n) == 0)
            return i;
    }
    return XF_UNKNOWN;
}

static metrics_counter *xf_ops_series(int type, size_t prefix, int status)
{
    _Atomic(metrics_counter *) *slot = &xf_ops[type][prefix][status];
    metrics_counter *c = atomic_load_explicit(slot, memory_order_acquire);
    if (c)
        return c;
    char labels[160];
    snprintf(labels, sizeof(labels),
             "transformation_type=\"%s\",transformer_prefix=\"%s\",status=\"%s\"",
             xf_type_names[type], xf_prefixes[prefix], xf_status_names[status]);
    c = metrics_counter_get("apiserver_storage_transformation_operations_total",
                            "Total number of transformations.", labels);
    atomic_store_explicit(slot, c, memory_order_release);
    return c;
}

static metrics_histogram *xf_dur_series(int type, size_t prefix)
{
    _Atomic(metrics_histogram *) *slot = &xf_dur[type][prefix];
    metrics_histogram *h = atomic_load_explicit(slot, memory_order_acquire);
    if (h)
        return h;
    double bounds[XF_BUCKETS];
    double b = 5e-6;
    for (size_t i = 0; i < XF_BUCKETS; i++, b *= 2)
        bounds[i] = b;
    char labels[128];
    snprintf(labels, sizeof(labels), "transformation_type=\"%s\",transformer_prefix=\"%s\"",
             xf_type_names[type], xf_prefixes[prefix]);
    h = metrics_histogram_get("apiserver_storage_transformation_duration_seconds",
                              "Latencies in seconds of value transformation operations.", labels,
                              bounds, XF_BUCKETS);
    atomic_store_explicit(slot, h, memory_order_release);
    return h;
}

static metrics_counter *xf_stale_series(size_t prefix)
{
    _Atomic(metrics_counter *) *slot = &xf_stale[prefix];
    metrics_counter *c = atomic_load_explicit(slot, memory_order_acquire);
    if (c)
        return c;
    char labels[96];
    snprintf(labels, sizeof(labels), "transformer_prefix=\"%s\"", xf_prefixes[prefix]);
    c = metrics_counter_get("etcdseal_stale_reads_total",
                            "Values read with a provider or key other than the first of their "
                            "rule (rewrite them with etcdseal rewrap).",
                            labels);
    atomic_store_explicit(slot, c, memory_order_release);
    return c;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Like kube-apiserver: every operation counted, durations of successful ones only. */
static void xf_record(int type, size_t prefix, int ok, double start)
{
    metrics_counter_add(xf_ops_series(type, prefix, ok ? ST_OK : ST_FAIL), 1);
    if (ok)
        metrics_histogram_observe(xf_dur_series(type, prefix), now_seconds() - start);
}

/* ---------------------------------------------------------------- the value hook */

size_t intercept_format_key(char *out, size_t cap, const uint8_t *key, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (cap == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = key[i];
        char tmp[4];
        size_t n = 0;
        if (c == '"' || c == '\\') {
            tmp[n++] = '\\';
            tmp[n++] = (char)c;
        } else if (c >= 0x20 && c < 0x7f) {
            tmp[n++] = (char)c;
        } else {
            tmp[0] = '\\';
            tmp[1] = 'x';
            tmp[2] = hex[c >> 4];
            tmp[3] = hex[c & 15];
            n = 4;
        }
        if (o + n + 4 > cap) { /* room for "..." and the NUL */
            if (o + 4 <= cap) {
                memcpy(out + o, "...", 3);
                o += 3;
            }
            break;
        }
        memcpy(out + o, tmp, n);
        o += n;
    }
    out[o] = '\0';
    return o;
}

/* ---------------------------------------------------------------- protected ranges */

/* Go's bytes.Compare. */
static int bytes_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return al < bl ? -1 : al > bl;
}

/* Compares k with the end of prefix p's key range: p[0..n-1) followed by p[n-1] + 1, where n is
 * p's length without trailing 0xff bytes (n == 0: the range has no end, k is always below). */
static int cmp_prefix_end(const uint8_t *k, size_t kl, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (i == kl)
            return -1;
        unsigned pe = i == n - 1 ? (unsigned)p[i] + 1u : p[i];
        if (k[i] != pe)
            return k[i] < pe ? -1 : 1;
    }
    return n == 0 ? -1 : kl > n;
}

/* Does [k, e) (e_inf: no upper bound) meet [p, end of prefix p)? */
static int range_meets_prefix(const uint8_t *k, size_t kl, const uint8_t *e, size_t el, int e_inf,
                              const uint8_t *p, size_t pl)
{
    size_t n = pl;
    while (n > 0 && p[n - 1] == 0xff)
        n--;
    if (cmp_prefix_end(k, kl, p, n) >= 0)
        return 0;
    return e_inf || bytes_cmp(p, pl, e, el) < 0;
}

int intercept_range_protected(const struct policy_encryption *policy, const uint8_t *key,
                              size_t key_len, const uint8_t *range_end, size_t range_end_len)
{
    if (!policy)
        return 0;
    static const uint8_t none[1];
    if (!key)
        key = none;
    if (range_end_len == 0)
        return policy_encryption_chain_for_key(policy, key, key_len) != NULL;
    int e_inf = range_end_len == 1 && range_end[0] == 0;
    const policy_keymap *m = policy_encryption_keymap(policy);
    size_t nt = policy_keymap_target_count(m);
    int resource_rules = 0;
    for (size_t i = 0; i < nt; i++) {
        const policy_target *t = policy_keymap_target(m, i);
        if (t->kind != POLICY_RES_LITERAL) {
            resource_rules = 1;
            continue;
        }
        if (range_meets_prefix(key, key_len, range_end, range_end_len, e_inf,
                               (const uint8_t *)t->group, strlen(t->group)))
            return 1;
    }
    if (resource_rules) {
        const char *sp = policy_keymap_storage_prefix(m);
        if (range_meets_prefix(key, key_len, range_end, range_end_len, e_inf, (const uint8_t *)sp,
                               strlen(sp)))
            return 1;
    }
    return 0;
}

/* Copies bytes into the current message's arena. */
static int arena_copy(ProtobufCBinaryData *value, const uint8_t *p, size_t n)
{
    uint8_t *dst = intercept_alloc(n);
    if (!dst)
        return -1;
    if (n)
        memcpy(dst, p, n);
    value->data = dst;
    value->len = n;
    return 0;
}

/* A KMS provider needs a plugin call before this value can be transformed: arm the worker's
 * wake-up and tell the relay to re-run the message (TRANSFORM_WOULD_BLOCK). Where no wake-up is
 * available (nested use) the call fails with UNAVAILABLE. */
static int await_kms(const transform_ctx *ctx, const crypto_chain *chain,
                     enum crypto_await_kind kind, const ProtobufCBinaryData *key,
                     const ProtobufCBinaryData *value, es_error *err)
{
    es_error aerr = {0};
    char shown[INTERCEPT_KEY_SHOWN_MAX];
    if (ctx->ready_fn && crypto_chain_await(chain, kind, value->data, value->len, ctx->ready_fn,
                                            ctx->ready_arg, &aerr) == 0)
        return es_error_set(err, TRANSFORM_WOULD_BLOCK, "waiting for the KMS plugin");
    intercept_format_key(shown, sizeof shown, key->data, key->len);
    return es_error_set(err, GRPC_UNAVAILABLE,
                        "etcdseal: KMS plugin result not available for key \"%s\"%s%s", shown,
                        aerr.msg[0] ? ": " : "", aerr.msg);
}

static int encrypt_value(const transform_ctx *ctx, const crypto_chain *chain,
                         const ProtobufCBinaryData *key, ProtobufCBinaryData *value, es_error *err)
{
    double start = now_seconds();
    size_t prefix = xf_prefix_index(crypto_chain_write_prefix(chain));
    if (prefix == 0) { /* identity writes: stored as they are, no re-encoding */
        xf_record(XF_TO, prefix, 1, start);
        return 0;
    }
    arena *a = arena_get();
    es_error cerr = {0};
    char shown[INTERCEPT_KEY_SHOWN_MAX];
    if (!a) {
        es_error_set(&cerr, CRYPTO_ERR_INTERNAL, "out of memory");
    } else {
        a->scratch.len = 0;
        if (crypto_chain_encrypt(chain, key->data, key->len, value->data, value->len, &a->scratch,
                                 &cerr) == 0) {
            int rc = arena_copy(value, a->scratch.data, a->scratch.len);
            if (rc == 0) {
                xf_record(XF_TO, prefix, 1, start);
                return 1;
            }
            es_error_set(&cerr, CRYPTO_ERR_INTERNAL, "out of memory");
        } else if (cerr.code == CRYPTO_ERR_WOULD_BLOCK) {
            return await_kms(ctx, chain, CRYPTO_AWAIT_ENCRYPT, key, value, err);
        }
    }
    xf_record(XF_TO, prefix, 0, start);
    intercept_format_key(shown, sizeof shown, key->data, key->len);
    /* fail closed: nothing is forwarded; a KMS outage is UNAVAILABLE so clients retry */
    return es_error_set(err, cerr.code == CRYPTO_ERR_UNAVAILABLE ? GRPC_UNAVAILABLE : GRPC_INTERNAL,
                        "etcdseal: cannot encrypt value of key \"%s\": %s", shown, cerr.msg);
}

static int decrypt_failed(const ProtobufCBinaryData *key, const char *why, es_error *err)
{
    char shown[INTERCEPT_KEY_SHOWN_MAX];
    intercept_format_key(shown, sizeof shown, key->data, key->len);
    return es_error_set(err, GRPC_INTERNAL, "etcdseal: cannot decrypt value of key \"%s\": %s",
                        shown, why);
}

static int decrypt_value(const transform_ctx *ctx, const crypto_chain *chain,
                         const ProtobufCBinaryData *key, ProtobufCBinaryData *value, es_error *err)
{
    double start = now_seconds();
    arena *a = arena_get();
    es_error cerr = {0};
    crypto_read_info info = {false, NULL};
    if (!a)
        return decrypt_failed(key, "out of memory", err);
    a->scratch.len = 0;
    if (crypto_chain_decrypt(chain, key->data, key->len, value->data, value->len, &a->scratch,
                             &info, &cerr) != 0) {
        if (cerr.code == CRYPTO_ERR_WOULD_BLOCK)
            return await_kms(ctx, chain, CRYPTO_AWAIT_DECRYPT, key, value, err);
        size_t prefix = cerr.code == CRYPTO_ERR_NO_MATCH ? XF_UNKNOWN
                                                         : xf_value_prefix(value->data, value->len);
        xf_record(XF_FROM, prefix, 0, start);
        return decrypt_failed(key, cerr.msg, err);
    }
    size_t prefix = xf_prefix_index(info.prefix);
    int rc = 0;
    if (prefix != 0) { /* identity reads return the stored bytes: nothing to re-encode */
        rc = arena_copy(value, a->scratch.data, a->scratch.len) == 0 ? 1 : -1;
    }
    sodium_memzero(a->scratch.data, a->scratch.len);
    a->scratch.len = 0;
    if (rc < 0) {
        xf_record(XF_FROM, prefix, 0, start);
        return decrypt_failed(key, "out of memory", err);
    }
    xf_record(XF_FROM, prefix, 1, start);
    if (info.stale)
        metrics_counter_add(xf_stale_series(prefix), 1);
    return rc;
}

/* The production hook: request sites encrypt with the key's chain (AAD = the key), response
 * sites decrypt; keys no rule covers pass unchanged, except that reading a value that looks
 * encrypted under such a key fails like kube-apiserver's identity encrypt-check. */
static int value_hook(transform_ctx *ctx, enum intercept_site site, const ProtobufCBinaryData *key,
                      ProtobufCBinaryData *value, es_error *err)
{
    if (!ctx || !ctx->policy)
        return 0;
    const crypto_chain *chain = policy_encryption_chain_for_key(ctx->policy, key->data, key->len);
    switch (site) {
    case INTERCEPT_SITE_PUT_VALUE:
    case INTERCEPT_SITE_ELECTION_VALUE:
        return chain ? encrypt_value(ctx, chain, key, value, err) : 0;
    case INTERCEPT_SITE_COMPARE_VALUE:
        if (!chain)
            return 0;
        /* the Txn transformer hands such compares to txn_compare or refuses them first */
        {
            char shown[INTERCEPT_KEY_SHOWN_MAX];
            intercept_format_key(shown, sizeof shown, key->data, key->len);
            return es_error_set(err, GRPC_FAILED_PRECONDITION,
                                "etcdseal: Txn compare on VALUE of encrypted key \"%s\" cannot "
                                "be evaluated here",
                                shown);
        }
    default:
        break;
    }
    if (chain)
        return decrypt_value(ctx, chain, key, value, err);
    es_error ierr = {0};
    if (crypto_identity_read_check(value->data, value->len, &ierr) != 0)
        return decrypt_failed(key, ierr.msg, err);
    return 0;
}

static intercept_value_hook_fn active_hook = value_hook;

void intercept_set_value_hook(intercept_value_hook_fn fn)
{
    active_hook = fn ? fn : value_hook;
}

int intercept_value(transform_ctx *ctx, enum intercept_site site, const ProtobufCBinaryData *key,
                    ProtobufCBinaryData *value, unsigned *changed, es_error *err)
{
    int rc = active_hook(ctx, site, key, value, err);
    if (rc < 0) {
        if (err && err->code == 0)
            err->code = GRPC_INTERNAL;
        return -1;
    }
    if (rc > 0)
        (*changed)++;
    return 0;
}

int intercept_walk_kv(transform_ctx *ctx, enum intercept_site site, Mvccpb__KeyValue *kv,
                      unsigned *changed, es_error *err)
{
    if (!kv || kv->value.len == 0)
        return 0;
    return intercept_value(ctx, site, &kv->key, &kv->value, changed, err);
}

/* ---------------------------------------------------------------- driver */

static metrics_counter *stat_counter(intercept_stat *stat)
{
    metrics_counter *c = atomic_load_explicit(&stat->counter, memory_order_acquire);
    if (c)
        return c;
    char labels[128];
    snprintf(labels, sizeof(labels), "method=\"%s\",direction=\"%s\"", stat->method,
             stat->dir == TRANSFORM_REQUEST ? "request" : "response");
    /* Racing workers get the same series back: storing it twice is harmless. */
    c = metrics_counter_get("etcdseal_transformer_messages_total",
                            "etcd messages decoded and walked by the value interceptors.", labels);
    atomic_store_explicit(&stat->counter, c, memory_order_release);
    return c;
}

void intercept_stat_count(intercept_stat *stat)
{
    metrics_counter *ctr = stat_counter(stat);
    if (ctr)
        metrics_counter_add(ctr, 1);
}

int intercept_run(transform_ctx *ctx, intercept_stat *stat, const ProtobufCMessageDescriptor *desc,
                  intercept_check_fn check, intercept_walk_fn walk, const uint8_t *msg, size_t len,
                  buf_t *out, es_error *err)
{
    intercept_stat_count(stat);
    const char *method = ctx->method ? ctx->method : stat->method;
    bool request = ctx->dir == TRANSFORM_REQUEST;
    if (check && check(ctx, msg, len, err) != 0)
        return -1;
    arena *a = arena_get();
    if (!a)
        return es_error_set(err, GRPC_RESOURCE_EXHAUSTED, "%s: no decode arena", method);
    ProtobufCAllocator alloc = {pb_arena_alloc, pb_arena_free, a};
    static const uint8_t empty[1];
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, &alloc, len, msg ? msg : empty);
    int rc = -1;
    if (!m) {
        es_error_set(err, request ? GRPC_INVALID_ARGUMENT : GRPC_INTERNAL,
                     "%s: cannot decode %s %s (%zu bytes)", method, desc->name,
                     request ? "request" : "response", len);
        goto done;
    }
    unsigned changed = 0;
    if (walk(ctx, m, &changed, err) != 0)
        goto done;
    if (changed == 0) {
        if (buf_append(out, msg, len) != 0) {
            es_error_set(err, GRPC_RESOURCE_EXHAUSTED, "%s: out of memory", method);
            goto done;
        }
    } else {
        size_t sz = protobuf_c_message_get_packed_size(m);
        if (buf_reserve(out, sz) != 0) {
            es_error_set(err, GRPC_RESOURCE_EXHAUSTED, "%s: out of memory", method);
            goto done;
        }
        out->len += protobuf_c_message_pack(m, out->data + out->len);
    }
    rc = 0;
done:
    arena_reset(a);
    return rc;
}
