/* kms_cache.c - LRU of decrypted DEKs/seeds keyed by a 32-byte digest (kms_internal.h).
 *
 * A chained hash table (power-of-two buckets, twice the capacity) plus a doubly linked recency
 * list, under one mutex held only for the lookup itself. Values are refcounted kms_key objects:
 * an evicted key stays alive while a reader still uses it. v1 caches report
 * apiserver_envelope_encryption_dek_cache_fill_percent (integer percent: the registry's gauges
 * are integers; kube-apiserver reports the fraction 0..1).
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/kms_internal.h"

typedef struct centry {
    uint8_t digest[32];
    kms_key *key;
    struct centry *hnext, *prev, *next;
} centry;

struct kms_cache {
    pthread_mutex_t mu;
    size_t cap, n, mask;
    centry **buckets;
    centry *head, *tail; /* head = most recent */
    metrics_gauge *fill;
};

static size_t bucket_of(const kms_cache *c, const uint8_t d[32])
{
    size_t h;
    memcpy(&h, d, sizeof h); /* digests are uniformly distributed */
    return h & c->mask;
}

kms_cache *kms_cache_new(size_t capacity, bool fill_metric)
{
    kms_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    size_t nb = 16;
    while (nb < capacity * 2 && nb < ((size_t)1 << 30))
        nb <<= 1;
    c->buckets = calloc(nb, sizeof *c->buckets);
    if (!c->buckets) {
        free(c);
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    c->cap = capacity;
    c->mask = nb - 1;
    if (fill_metric)
        c->fill = metrics_gauge_get("apiserver_envelope_encryption_dek_cache_fill_percent",
                                    "Percent of the cache slots currently occupied by cached "
                                    "DEKs.",
                                    "");
    return c;
}

static void list_unlink(kms_cache *c, centry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void list_push_front(kms_cache *c, centry *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head)
        c->head->prev = e;
    c->head = e;
    if (!c->tail)
        c->tail = e;
}

static void hash_remove(kms_cache *c, centry *e)
{
    for (centry **pp = &c->buckets[bucket_of(c, e->digest)]; *pp; pp = &(*pp)->hnext)
        if (*pp == e) {
            *pp = e->hnext;
            return;
        }
}

void kms_cache_free(kms_cache *c)
{
    if (!c)
        return;
    for (centry *e = c->head; e;) {
        centry *next = e->next;
        kms_key_unref(e->key);
        free(e);
        e = next;
    }
    free(c->buckets);
    pthread_mutex_destroy(&c->mu);
    if (c->fill)
        metrics_gauge_set(c->fill, 0);
    free(c);
}

kms_key *kms_cache_get(kms_cache *c, const uint8_t digest[32])
{
    kms_key *k = NULL;
    pthread_mutex_lock(&c->mu);
    for (centry *e = c->buckets[bucket_of(c, digest)]; e; e = e->hnext)
        if (memcmp(e->digest, digest, 32) == 0) {
            if (c->head != e) {
                list_unlink(c, e);
                list_push_front(c, e);
            }
            k = kms_key_ref(e->key);
            break;
        }
    pthread_mutex_unlock(&c->mu);
    return k;
}

void kms_cache_put(kms_cache *c, const uint8_t digest[32], kms_key *key)
{
    centry *ne = calloc(1, sizeof *ne);
    if (!ne)
        return; /* not cached: the next read asks the plugin again */
    memcpy(ne->digest, digest, 32);
    ne->key = kms_key_ref(key);
    kms_key *drop = NULL;
    centry *evicted = NULL;
    pthread_mutex_lock(&c->mu);
    size_t b = bucket_of(c, digest);
    for (centry *e = c->buckets[b]; e; e = e->hnext)
        if (memcmp(e->digest, digest, 32) == 0) { /* replace */
            drop = e->key;
            e->key = ne->key;
            ne->key = NULL;
            list_unlink(c, e);
            list_push_front(c, e);
            break;
        }
    if (ne->key) {
        ne->hnext = c->buckets[b];
        c->buckets[b] = ne;
        list_push_front(c, ne);
        c->n++;
        if (c->n > c->cap) {
            evicted = c->tail;
            list_unlink(c, evicted);
            hash_remove(c, evicted);
            c->n--;
        }
    }
    if (c->fill)
        metrics_gauge_set(c->fill, (int64_t)(c->n * 100 / c->cap));
    pthread_mutex_unlock(&c->mu);
    if (!ne->key)
        free(ne);
    kms_key_unref(drop);
    if (evicted) {
        kms_key_unref(evicted->key);
        free(evicted);
    }
}
