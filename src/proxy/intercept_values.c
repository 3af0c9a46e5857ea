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

#include <pthread.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/error.h"

#define GRPC_INVALID_ARGUMENT 3
#define GRPC_RESOURCE_EXHAUSTED 8
#define GRPC_INTERNAL 13

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

static void arena_thread_exit(void *p)
{
    arena_free_chunks(p);
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
    arena_free_chunks(&tls_arena);
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

/* The production hook. This issue relays every value unchanged; the encryption issue maps
 * `key` to a chain with ctx->policy here and encrypts (request sites) or decrypts (response
 * sites) into intercept_alloc'd memory. */
static int value_hook(transform_ctx *ctx, enum intercept_site site, const ProtobufCBinaryData *key,
                      ProtobufCBinaryData *value, es_error *err)
{
    (void)ctx;
    (void)site;
    (void)key;
    (void)value;
    (void)err;
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
