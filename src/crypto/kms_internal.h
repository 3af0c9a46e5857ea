/* kms_internal.h - shared state of the KMS providers (kms_provider.c common part, kms_v1.c,
 * kms_v2.c) and the hooks chain.c calls. Not part of the public API.
 *
 * Locking: k->mu guards ops, waiters, pool and health text; the v2 write state is published
 * through an atomic pointer and never freed before the provider (retired list), so writers read
 * it without a lock. Decrypted DEKs/seeds are refcounted kms_key objects (guarded memory) shared
 * by the cache, pending operations and readers. Callbacks of KMS calls and timers run on the KMS
 * thread and hold a provider reference (refs); `users` counts chains/creators and reaching 0
 * stops polling and cancels calls.
 */
#ifndef ETCDSEAL_CRYPTO_KMS_INTERNAL_H
#define ETCDSEAL_CRYPTO_KMS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "base/metrics.h"
#include "base/secret.h"
#include "crypto/kms.h"
#include "crypto/kms_client.h"
#include "crypto/kms_object.h"

#define KMS_KEY_V1 2 /* mode of a v1 DEK (beside KMS_MODE_AES_GCM_KEY, KMS_MODE_HKDF_SEED) */

typedef struct kms_key {
    atomic_int refs;
    int mode;
    secret_t *secret;                        /* DEK or seed */
    void *gcm, *cbc;                         /* prepared provider states (DEK modes) */
    _Atomic(metrics_counter *) from_storage; /* v2: key_id_hash_total{from_storage,...} */
    uint8_t *edek;                           /* v1 pool pair: the plugin's ciphertext of the DEK */
    size_t edek_len;
} kms_key;

kms_key *kms_key_new(int mode, const uint8_t *bytes, size_t len, const char **why);
kms_key *kms_key_ref(kms_key *key);
void kms_key_unref(kms_key *key);

typedef struct kms_cache kms_cache;
kms_cache *kms_cache_new(size_t capacity, bool fill_metric);
void kms_cache_free(kms_cache *c);
kms_key *kms_cache_get(kms_cache *c, const uint8_t digest[32]);           /* ref'd or NULL */
void kms_cache_put(kms_cache *c, const uint8_t digest[32], kms_key *key); /* takes a ref */

typedef struct kms_waiter {
    crypto_ready_fn fn;
    void *arg;
    struct kms_waiter *next;
} kms_waiter;

enum { KMS_OP_PENDING = 0, KMS_OP_DONE, KMS_OP_FAILED };

typedef struct kms_op {
    crypto_kms *k;
    uint8_t digest[32];
    int state, mode;
    kms_key *key;  /* DONE */
    char msg[256]; /* FAILED: final error text */
    double expires;
    kms_waiter *waiters;
    struct kms_op *next;
} kms_op;

typedef struct v2_ws {
    kms_key *seed;
    buf_t tail; /* EncryptedObject fields 2..5 of every value written with this seed */
    char *key_id;
    uint8_t digest[32];
    metrics_counter *to_storage;
    struct v2_ws *older;
} v2_ws;

struct crypto_kms {
    atomic_int refs, users;
    enum crypto_provider_type type;
    char *name, *prefix;
    size_t prefix_len;
    kms_client *client;
    crypto_kms_timing timing;
    kms_cache *cache;
    pthread_mutex_t mu;
    kms_op *ops;
    size_t n_ops;
    kms_waiter *ready_waiters;
    bool closing;
    kms_timer timer;
    bool timer_ref; /* the scheduled timer holds a reference */
    /* health (mu) */
    bool healthy;
    char last_error[256];
    double last_ok;
    /* v2 */
    _Atomic(v2_ws *) ws;
    atomic_llong ws_expires_ms;
    atomic_bool state_failed;
    v2_ws *retired;
    bool status_inflight;
    char version[16];
    /* v1 */
    kms_key **pool;
    size_t pool_n, pool_cap, pool_inflight;
    atomic_bool version_ok;
    bool fill_failed; /* last pool refill failed and nothing is in flight */
    /* stats */
    atomic_ullong n_status, n_version, n_encrypt, n_decrypt, n_hits, n_misses;
    struct crypto_kms *reg_next;
};

/* common (kms_provider.c) */
void kms_health_set(crypto_kms *k, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void kms_wake_list(kms_waiter *w); /* runs every fn (caller holds no lock) */
int kms_add_waiter(kms_waiter **list, crypto_ready_fn fn, void *arg);
/* The DEK/seed for digest: 0 (*key ref'd), 1 (not known yet: await), -1 (final error in msg). */
int kms_key_lookup(crypto_kms *k, const uint8_t digest[32], kms_key **key, char *msg, size_t cap);
/* Starts (or joins) the Decrypt for digest with an encoded request; mode validates the answer. */
int kms_decrypt_await(crypto_kms *k, const uint8_t digest[32], int mode, const char *method,
                      const uint8_t *req, size_t req_len, crypto_ready_fn fn, void *arg,
                      es_error *err);
void kms_post_ready(crypto_ready_fn fn, void *arg); /* fn(arg) soon on the KMS thread */
double kms_timing_now(void);
int kms_key_id_hash(const uint8_t *id, size_t len, char out[80]);
metrics_counter *kms_key_id_counter(const char *provider, const char *type, const uint8_t *id,
                                    size_t len);
/* Schedules the provider's poll timer (taking a reference for it). */
void kms_schedule_poll(crypto_kms *k, double delay_s, kms_fn fn);
bool kms_timer_fired(crypto_kms *k); /* in a timer callback: false when closing (ref dropped) */
void kms_internal_unref(crypto_kms *k);

/* HKDF-SHA256 expand-only, 32 bytes (EVP_KDF "HKDF", EXPAND_ONLY). 0 or -1. */
int kms_hkdf_expand(const uint8_t *seed, size_t seed_len, const uint8_t *info, size_t info_len,
                    uint8_t out[32]);
/* One-shot AES-256-GCM with a per-value key (calling thread's context). NULL or reason. */
const char *kms_gcm_seal_oneshot(const uint8_t key[32], const uint8_t nonce[12], const uint8_t *aad,
                                 size_t aad_len, const uint8_t *in, size_t len, uint8_t *dst);
const char *kms_gcm_open_oneshot(const uint8_t key[32], const uint8_t nonce[12], const uint8_t *aad,
                                 size_t aad_len, const uint8_t *in, size_t len, uint8_t *dst,
                                 size_t *out_len);

/* per version (kms_v1.c / kms_v2.c) */
int kms_v2_start(crypto_kms *k, es_error *err);
void kms_v2_release(crypto_kms *k);
int kms_v2_encrypt(crypto_kms *k, const uint8_t *aad, size_t aad_len, const uint8_t *in,
                   size_t in_len, buf_t *out, es_error *err);
int kms_v2_decrypt(crypto_kms *k, const uint8_t *aad, size_t aad_len, const uint8_t *body,
                   size_t len, buf_t *out, bool *stale, char *why, size_t why_cap, es_error *err);
int kms_v2_await(crypto_kms *k, int kind, const uint8_t *body, size_t len, crypto_ready_fn fn,
                 void *arg, es_error *err);
int kms_v1_start(crypto_kms *k, es_error *err);
void kms_v1_release(crypto_kms *k);
int kms_v1_encrypt(crypto_kms *k, const uint8_t *aad, size_t aad_len, const uint8_t *in,
                   size_t in_len, buf_t *out, es_error *err);
int kms_v1_decrypt(crypto_kms *k, const uint8_t *aad, size_t aad_len, const uint8_t *body,
                   size_t len, buf_t *out, bool *stale, char *why, size_t why_cap, es_error *err);
int kms_v1_await(crypto_kms *k, int kind, const uint8_t *body, size_t len, crypto_ready_fn fn,
                 void *arg, es_error *err);

/* chain hooks: decrypt returns 0 ok, -1 read error (why filled), -2 would block, -3 err set */
int crypto_kms_encrypt(crypto_kms *k, const uint8_t *aad, size_t aad_len, const uint8_t *in,
                       size_t in_len, buf_t *out, es_error *err);
int crypto_kms_decrypt(crypto_kms *k, const uint8_t *aad, size_t aad_len, const uint8_t *body,
                       size_t len, buf_t *out, bool *stale, char *why, size_t why_cap,
                       es_error *err);
/* 1 armed (fn runs later), 0 nothing to wait for, -1 err */
int crypto_kms_await(crypto_kms *k, int kind, const uint8_t *body, size_t len, crypto_ready_fn fn,
                     void *arg, es_error *err);
const char *crypto_kms_prefix(const crypto_kms *k, size_t *len);

#endif
