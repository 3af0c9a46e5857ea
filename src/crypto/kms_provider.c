/* kms_provider.c - what KMS v1 and v2 providers share: lifecycle and registry, health, refcounted
 * DEK/seed objects, pending Decrypt operations (one call per DEK however many readers wait, and a
 * short-lived final answer so that retries end), timings, HKDF and one-shot AES-GCM, and the
 * hooks chain.c calls. Version-specific parts live in kms_v1.c and kms_v2.c.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include "base/log.h"
#include "crypto/evp_key.h"
#include "crypto/kms_internal.h"
#include "crypto/provider.h"

#define OPS_MAX 4096

/* ------------------------------------------------------------------ timing */

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static crypto_kms_timing g_timing;
static bool g_timing_set;
static crypto_kms *g_registry;

static crypto_kms_timing default_timing(void)
{
    crypto_kms_timing t = {60, 10, 180, 2};
    const char *env = getenv("ETCDSEAL_KMS_TIMING");
    if (!env)
        return t;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", env);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq)
            continue;
        *eq = '\0';
        double v = strtod(eq + 1, NULL);
        if (!(v > 0))
            continue;
        if (strcmp(tok, "healthy") == 0)
            t.status_healthy_s = v;
        else if (strcmp(tok, "unhealthy") == 0)
            t.status_unhealthy_s = v;
        else if (strcmp(tok, "expiry") == 0)
            t.write_expiry_s = v;
        else if (strcmp(tok, "negative") == 0)
            t.negative_s = v;
    }
    return t;
}

void crypto_kms_set_timing(const crypto_kms_timing *t)
{
    pthread_mutex_lock(&g_mu);
    g_timing_set = t != NULL;
    if (t)
        g_timing = *t;
    pthread_mutex_unlock(&g_mu);
}

double kms_timing_now(void)
{
    return kms_now();
}

/* ------------------------------------------------------------------ keys */

kms_key *kms_key_new(int mode, const uint8_t *bytes, size_t len, const char **why)
{
    *why = NULL;
    if (mode == KMS_MODE_HKDF_SEED && len < 32) {
        *why = "invalid seed length: expected at least 32 bytes";
        return NULL;
    }
    if (mode != KMS_MODE_HKDF_SEED && len != 16 && len != 24 && len != 32) {
        *why = "crypto/aes: invalid key size";
        return NULL;
    }
    kms_key *k = calloc(1, sizeof *k);
    if (!k || !(k->secret = secret_new(bytes, len))) {
        free(k);
        *why = "out of memory";
        return NULL;
    }
    atomic_init(&k->refs, 1);
    k->mode = mode;
    es_error e;
    if (mode != KMS_MODE_HKDF_SEED &&
        (crypto_provider_aesgcm.key_new(&k->gcm, k->secret, &e) != 0 ||
         (mode == KMS_KEY_V1 && crypto_provider_aescbc.key_new(&k->cbc, k->secret, &e) != 0))) {
        kms_key_unref(k);
        *why = "the cipher library failed";
        return NULL;
    }
    return k;
}

kms_key *kms_key_ref(kms_key *key)
{
    if (key)
        atomic_fetch_add_explicit(&key->refs, 1, memory_order_relaxed);
    return key;
}

void kms_key_unref(kms_key *key)
{
    if (!key || atomic_fetch_sub_explicit(&key->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (key->gcm)
        crypto_provider_aesgcm.key_free(key->gcm);
    if (key->cbc)
        crypto_provider_aescbc.key_free(key->cbc);
    secret_free(key->secret);
    free(key->edek);
    free(key);
}

/* ------------------------------------------------------------------ HKDF and one-shot GCM */

static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;
static EVP_KDF *g_hkdf;

typedef struct kms_tls {
    EVP_KDF_CTX *kdf;
    EVP_CIPHER_CTX *gcm;
} kms_tls;

static void tls_free(void *p)
{
    kms_tls *t = p;
    if (!t)
        return;
    EVP_KDF_CTX_free(t->kdf);
    EVP_CIPHER_CTX_free(t->gcm);
    free(t);
}

static void tls_init(void)
{
    pthread_key_create(&tls_key, tls_free);
    g_hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
}

static kms_tls *tls_get(void)
{
    pthread_once(&tls_once, tls_init);
    kms_tls *t = pthread_getspecific(tls_key);
    if (t)
        return t;
    t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->gcm = EVP_CIPHER_CTX_new();
    if (g_hkdf && (t->kdf = EVP_KDF_CTX_new(g_hkdf)) != NULL) {
        int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
        OSSL_PARAM ps[] = {
            OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0),
            OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode), OSSL_PARAM_construct_end()};
        if (EVP_KDF_CTX_set_params(t->kdf, ps) != 1) {
            EVP_KDF_CTX_free(t->kdf);
            t->kdf = NULL;
        }
    }
    if (!t->gcm || !t->kdf ||
        EVP_CipherInit_ex(t->gcm, EVP_aes_256_gcm(), NULL, NULL, NULL, 1) != 1) {
        tls_free(t);
        return NULL;
    }
    pthread_setspecific(tls_key, t);
    return t;
}

int kms_hkdf_expand(const uint8_t *seed, size_t seed_len, const uint8_t *info, size_t info_len,
                    uint8_t out[32])
{
    kms_tls *t = tls_get();
    if (!t)
        return -1;
    OSSL_PARAM ps[] = {
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)seed, seed_len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, info_len),
        OSSL_PARAM_construct_end()};
    return EVP_KDF_derive(t->kdf, out, 32, ps) == 1 ? 0 : -1;
}

const char *kms_gcm_seal_oneshot(const uint8_t key[32], const uint8_t nonce[12], const uint8_t *aad,
                                 size_t aad_len, const uint8_t *in, size_t len, uint8_t *dst)
{
    kms_tls *t = tls_get();
    if (!t)
        return CRYPTO_MSG_CIPHER;
    EVP_CIPHER_CTX *c = t->gcm;
    size_t n = 0;
    int fin = 0;
    if (EVP_CipherInit_ex(c, NULL, NULL, key, nonce, 1) != 1 ||
        crypto_evp_update(c, NULL, aad, aad_len, NULL) < 0 ||
        crypto_evp_update(c, dst, in, len, &n) < 0 || n != len ||
        EVP_EncryptFinal_ex(c, dst + n, &fin) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, dst + len) != 1)
        return CRYPTO_MSG_CIPHER;
    return NULL;
}

const char *kms_gcm_open_oneshot(const uint8_t key[32], const uint8_t nonce[12], const uint8_t *aad,
                                 size_t aad_len, const uint8_t *in, size_t len, uint8_t *dst,
                                 size_t *out_len)
{
    if (len < 16)
        return "cipher: message authentication failed";
    kms_tls *t = tls_get();
    if (!t)
        return CRYPTO_MSG_CIPHER;
    EVP_CIPHER_CTX *c = t->gcm;
    size_t clen = len - 16, n = 0;
    int fin = 0;
    uint8_t tag[16];
    memcpy(tag, in + clen, 16);
    if (EVP_CipherInit_ex(c, NULL, NULL, key, nonce, 0) != 1 ||
        crypto_evp_update(c, NULL, aad, aad_len, NULL) < 0 ||
        crypto_evp_update(c, dst, in, clen, &n) < 0 || n != clen ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, tag) != 1) {
        OPENSSL_cleanse(dst, clen);
        return CRYPTO_MSG_CIPHER;
    }
    if (EVP_DecryptFinal_ex(c, dst + n, &fin) <= 0) {
        OPENSSL_cleanse(dst, clen);
        return "cipher: message authentication failed";
    }
    *out_len = clen;
    return NULL;
}

/* ------------------------------------------------------------------ metrics helpers */

int kms_key_id_hash(const uint8_t *id, size_t len, char out[80])
{
    uint8_t d[32];
    unsigned int dl = 0;
    if (EVP_Digest(id, len, d, &dl, EVP_sha256(), NULL) != 1 || dl != 32)
        return -1;
    memcpy(out, "sha256:", 7);
    for (int i = 0; i < 32; i++)
        snprintf(out + 7 + 2 * i, 3, "%02x", d[i]);
    return 0;
}

metrics_counter *kms_key_id_counter(const char *provider, const char *type, const uint8_t *id,
                                    size_t len)
{
    char hash[80];
    if (kms_key_id_hash(id, len, hash) != 0)
        return NULL;
    buf_t l = BUF_INIT;
    metrics_counter *c = NULL;
    if (metrics_labels_add(&l, "transformation_type", type) == 0 &&
        metrics_labels_add(&l, "provider_name", provider) == 0 &&
        metrics_labels_add(&l, "key_id_hash", hash) == 0)
        c = metrics_counter_get("apiserver_envelope_encryption_key_id_hash_total",
                                "Number of times a keyID is used split by transformation type "
                                "and provider.",
                                (const char *)l.data);
    buf_free(&l);
    return c;
}

/* ------------------------------------------------------------------ waiters, health */

int kms_add_waiter(kms_waiter **list, crypto_ready_fn fn, void *arg)
{
    kms_waiter *w = malloc(sizeof *w);
    if (!w)
        return -1;
    w->fn = fn;
    w->arg = arg;
    w->next = *list;
    *list = w;
    return 0;
}

void kms_wake_list(kms_waiter *w)
{
    while (w) {
        kms_waiter *next = w->next;
        w->fn(w->arg);
        free(w);
        w = next;
    }
}

typedef struct ready_post {
    crypto_ready_fn fn;
    void *arg;
} ready_post;

static void run_ready_post(void *p)
{
    ready_post *r = p;
    r->fn(r->arg);
    free(r);
}

void kms_post_ready(crypto_ready_fn fn, void *arg)
{
    ready_post *r = malloc(sizeof *r);
    if (r) {
        r->fn = fn;
        r->arg = arg;
        if (kms_loop_post(run_ready_post, r) == 0)
            return;
        free(r);
    }
    fn(arg); /* cannot post: run it here rather than lose the wake-up */
}

void kms_health_set(crypto_kms *k, bool ok, const char *fmt, ...)
{
    pthread_mutex_lock(&k->mu);
    bool was = k->healthy;
    k->healthy = ok;
    if (ok) {
        k->last_error[0] = '\0';
        k->last_ok = kms_now();
    } else if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(k->last_error, sizeof k->last_error, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&k->mu);
    if (was != ok || !ok)
        log_msg(ok ? LOG_INFO : LOG_WARN, "kms provider %s|provider=%s error=\"%s\"",
                ok ? "healthy" : "unhealthy", k->name, ok ? "" : k->last_error);
}

/* ------------------------------------------------------------------ lifecycle */

void kms_internal_unref(crypto_kms *k)
{
    if (atomic_fetch_sub_explicit(&k->refs, 1, memory_order_acq_rel) != 1)
        return;
    pthread_mutex_lock(&g_mu);
    for (crypto_kms **pp = &g_registry; *pp; pp = &(*pp)->reg_next)
        if (*pp == k) {
            *pp = k->reg_next;
            break;
        }
    pthread_mutex_unlock(&g_mu);
    if (k->type == CRYPTO_PROVIDER_KMS_V2)
        kms_v2_release(k);
    else
        kms_v1_release(k);
    while (k->ops) {
        kms_op *op = k->ops;
        k->ops = op->next;
        kms_key_unref(op->key);
        kms_wake_list(op->waiters);
        free(op);
    }
    kms_wake_list(k->ready_waiters);
    kms_cache_free(k->cache);
    kms_client_free(k->client);
    pthread_mutex_destroy(&k->mu);
    free(k->name);
    free(k->prefix);
    free(k);
}

int crypto_kms_new(const crypto_kms_config *cfg, crypto_kms **out, es_error *err)
{
    *out = NULL;
    bool v2 = cfg->type == CRYPTO_PROVIDER_KMS_V2;
    if (!v2 && cfg->type != CRYPTO_PROVIDER_KMS_V1)
        return es_error_set(err, CRYPTO_ERR_CONFIG, "kms provider: bad type");
    if (!cfg->name || !cfg->name[0])
        return es_error_set(err, CRYPTO_ERR_CONFIG, "kms provider: name is required");
    if (secret_init() < 0)
        return es_error_set(err, CRYPTO_ERR_INTERNAL, "kms provider \"%s\": libsodium init",
                            cfg->name);
    crypto_kms *k = calloc(1, sizeof *k);
    if (!k)
        return es_error_set(err, CRYPTO_ERR_INTERNAL, "kms provider \"%s\": out of memory",
                            cfg->name);
    atomic_init(&k->refs, 1); /* released when users reaches 0 */
    atomic_init(&k->users, 1);
    pthread_mutex_init(&k->mu, NULL);
    k->type = cfg->type;
    pthread_mutex_lock(&g_mu);
    k->timing = g_timing_set ? g_timing : default_timing();
    pthread_mutex_unlock(&g_mu);
    k->last_ok = -1;
    snprintf(k->last_error, sizeof k->last_error, "no answer from the plugin yet");
    size_t plen = strlen(cfg->name) + 32;
    k->name = strdup(cfg->name);
    k->prefix = malloc(plen);
    int capacity = v2 ? 4096 : cfg->cachesize;
    k->cache = capacity > 0 ? kms_cache_new((size_t)capacity, !v2) : NULL;
    if (!k->name || !k->prefix || (capacity > 0 && !k->cache)) {
        es_error_set(err, CRYPTO_ERR_INTERNAL, "kms provider \"%s\": out of memory", cfg->name);
        goto fail;
    }
    snprintf(k->prefix, plen, "k8s:enc:kms:%s:%s:", v2 ? "v2" : "v1", cfg->name);
    k->prefix_len = strlen(k->prefix);
    if (kms_client_new(cfg->name, cfg->endpoints, cfg->n_endpoints, cfg->timeout_s, &k->client,
                       err) != 0)
        goto fail;
    pthread_mutex_lock(&g_mu);
    crypto_kms **pp = &g_registry;
    while (*pp)
        pp = &(*pp)->reg_next;
    *pp = k;
    pthread_mutex_unlock(&g_mu);
    if ((v2 ? kms_v2_start(k, err) : kms_v1_start(k, err)) != 0) {
        crypto_kms_unref(k);
        return -1;
    }
    *out = k;
    return 0;
fail:
    kms_internal_unref(k);
    return -1;
}

crypto_kms *crypto_kms_ref(crypto_kms *k)
{
    if (k)
        atomic_fetch_add_explicit(&k->users, 1, memory_order_relaxed);
    return k;
}

void crypto_kms_unref(crypto_kms *k)
{
    if (!k || atomic_fetch_sub_explicit(&k->users, 1, memory_order_acq_rel) != 1)
        return;
    pthread_mutex_lock(&k->mu);
    k->closing = true;
    bool drop_timer = k->timer_ref && kms_timer_cancel(&k->timer);
    if (drop_timer)
        k->timer_ref = false;
    pthread_mutex_unlock(&k->mu);
    if (drop_timer)
        kms_internal_unref(k);
    kms_internal_unref(k);
}

void kms_schedule_poll(crypto_kms *k, double delay_s, kms_fn fn)
{
    pthread_mutex_lock(&k->mu);
    if (!k->closing) {
        if (!k->timer_ref) {
            atomic_fetch_add_explicit(&k->refs, 1, memory_order_relaxed);
            k->timer_ref = true;
        }
        kms_timer_schedule(&k->timer, delay_s, fn, k);
    }
    pthread_mutex_unlock(&k->mu);
}

bool kms_timer_fired(crypto_kms *k)
{
    pthread_mutex_lock(&k->mu);
    bool had = k->timer_ref;
    k->timer_ref = false;
    bool closing = k->closing;
    pthread_mutex_unlock(&k->mu);
    if (closing) {
        if (had)
            kms_internal_unref(k);
        return false;
    }
    if (had) /* the timer's reference is dropped; the caller's work takes its own */
        kms_internal_unref(k);
    return true;
}

const char *crypto_kms_name(const crypto_kms *k)
{
    return k->name;
}

const char *crypto_kms_prefix(const crypto_kms *k, size_t *len)
{
    *len = k->prefix_len;
    return k->prefix;
}

void crypto_kms_get_stats(const crypto_kms *k, crypto_kms_stats *s)
{
    s->status = atomic_load(&k->n_status);
    s->version = atomic_load(&k->n_version);
    s->encrypt = atomic_load(&k->n_encrypt);
    s->decrypt = atomic_load(&k->n_decrypt);
    s->cache_hits = atomic_load(&k->n_hits);
    s->cache_misses = atomic_load(&k->n_misses);
}

static void fill_health(crypto_kms *k, crypto_kms_health *h)
{
    memset(h, 0, sizeof *h);
    snprintf(h->name, sizeof h->name, "%s", k->name);
    h->type = k->type;
    pthread_mutex_lock(&k->mu);
    h->healthy = k->healthy;
    snprintf(h->last_error, sizeof h->last_error, "%s", k->healthy ? "" : k->last_error);
    h->since_ok_s = k->last_ok < 0 ? -1 : kms_now() - k->last_ok;
    pthread_mutex_unlock(&k->mu);
    if (k->type == CRYPTO_PROVIDER_KMS_V2) {
        v2_ws *ws = atomic_load_explicit(&k->ws, memory_order_acquire);
        if (ws)
            kms_key_id_hash((const uint8_t *)ws->key_id, strlen(ws->key_id), h->key_id_hash);
    }
}

int crypto_kms_health_check(const crypto_kms *k, buf_t *detail)
{
    crypto_kms_health h;
    fill_health((crypto_kms *)k, &h);
    if (h.healthy)
        return 0;
    if (detail)
        buf_appendf(detail, "%s: %s", h.name, h.last_error);
    return -1;
}

size_t crypto_kms_health_list(crypto_kms_health *out, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&g_mu);
    for (crypto_kms *k = g_registry; k; k = k->reg_next, n++)
        if (n < max)
            fill_health(k, &out[n]);
    pthread_mutex_unlock(&g_mu);
    return n;
}

/* ------------------------------------------------------------------ pending decrypts */

/* Drops expired final answers; caller holds k->mu. */
static void ops_prune_locked(crypto_kms *k, double now)
{
    for (kms_op **pp = &k->ops; *pp;) {
        kms_op *op = *pp;
        if (op->state != KMS_OP_PENDING && op->expires < now) {
            *pp = op->next;
            kms_key_unref(op->key);
            free(op);
            k->n_ops--;
        } else {
            pp = &op->next;
        }
    }
}

static kms_op *op_find_locked(crypto_kms *k, const uint8_t digest[32])
{
    for (kms_op *op = k->ops; op; op = op->next)
        if (memcmp(op->digest, digest, 32) == 0)
            return op;
    return NULL;
}

int kms_key_lookup(crypto_kms *k, const uint8_t digest[32], kms_key **key, char *msg, size_t cap)
{
    *key = k->cache ? kms_cache_get(k->cache, digest) : NULL;
    if (*key) {
        atomic_fetch_add_explicit(&k->n_hits, 1, memory_order_relaxed);
        return 0;
    }
    int rc = 1;
    pthread_mutex_lock(&k->mu);
    if (k->ops) {
        double now = kms_now();
        kms_op *op = op_find_locked(k, digest);
        if (op && op->state != KMS_OP_PENDING && op->expires < now)
            op = NULL;
        if (op && op->state == KMS_OP_DONE) {
            *key = kms_key_ref(op->key);
            rc = 0;
        } else if (op && op->state == KMS_OP_FAILED) {
            snprintf(msg, cap, "%s", op->msg);
            rc = -1;
        }
    }
    pthread_mutex_unlock(&k->mu);
    if (rc == 1)
        atomic_fetch_add_explicit(&k->n_misses, 1, memory_order_relaxed);
    return rc;
}

static void decrypt_done(void *arg, int status, const char *detail, const uint8_t *resp,
                         size_t len);

int kms_decrypt_await(crypto_kms *k, const uint8_t digest[32], int mode, const char *method,
                      const uint8_t *req, size_t req_len, crypto_ready_fn fn, void *arg,
                      es_error *err)
{
    pthread_mutex_lock(&k->mu);
    double now = kms_now();
    ops_prune_locked(k, now);
    kms_op *op = op_find_locked(k, digest);
    if (op && op->state != KMS_OP_PENDING) {
        pthread_mutex_unlock(&k->mu); /* answered meanwhile */
        kms_post_ready(fn, arg);
        return 0;
    }
    if (op) {
        int rc = kms_add_waiter(&op->waiters, fn, arg);
        pthread_mutex_unlock(&k->mu);
        return rc == 0 ? 0 : es_error_set(err, CRYPTO_ERR_INTERNAL, "kms: out of memory");
    }
    if (k->n_ops >= OPS_MAX || k->closing) {
        pthread_mutex_unlock(&k->mu);
        return es_error_set(err, CRYPTO_ERR_UNAVAILABLE,
                            "kms provider \"%s\": too many pending Decrypt calls", k->name);
    }
    op = calloc(1, sizeof *op);
    if (!op || kms_add_waiter(&op->waiters, fn, arg) != 0) {
        free(op);
        pthread_mutex_unlock(&k->mu);
        return es_error_set(err, CRYPTO_ERR_INTERNAL, "kms: out of memory");
    }
    op->k = k;
    memcpy(op->digest, digest, 32);
    op->mode = mode;
    op->next = k->ops;
    k->ops = op;
    k->n_ops++;
    atomic_fetch_add_explicit(&k->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&k->mu);
    atomic_fetch_add_explicit(&k->n_decrypt, 1, memory_order_relaxed);
    es_error cerr;
    if (kms_client_call(k->client, method, req, req_len, decrypt_done, op, &cerr) != 0)
        decrypt_done(op, cerr.code ? cerr.code : 14, cerr.msg, NULL, 0);
    return 0;
}

static const char *grpc_code_name(int s)
{
    static const char *const n[] = {
        "OK",       "Canceled",       "Unknown",          "InvalidArgument",   "DeadlineExceeded",
        "NotFound", "AlreadyExists",  "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
        "Aborted",  "OutOfRange",     "Unimplemented",    "Internal",          "Unavailable",
        "DataLoss", "Unauthenticated"};
    return s >= 0 && s < 17 ? n[s] : "Unknown";
}

/* v1: DecryptResponse.plain (1); v2: DecryptResponse.plaintext (1): both field 1 bytes. */
static int response_field1(const uint8_t *p, size_t len, kms_bytes *out)
{
    kms_object o; /* reuse the lenient decoder: field 1 wire type 2 = "encryptedData" */
    if (kms_object_decode(&o, p, len) != NULL)
        return -1;
    *out = o.data;
    return 0;
}

static void decrypt_done(void *arg, int status, const char *detail, const uint8_t *resp, size_t len)
{
    kms_op *op = arg;
    crypto_kms *k = op->k;
    kms_key *key = NULL;
    char msg[256] = "";
    bool v2 = k->type == CRYPTO_PROVIDER_KMS_V2;
    const char *what = v2 ? "failed to decrypt DEK, error: " : "error while decrypting key: ";
    if (status != 0) {
        snprintf(msg, sizeof msg, "%srpc error: code = %s desc = %s", what, grpc_code_name(status),
                 detail);
        if (status == 14 || status == 4)
            kms_health_set(k, false, "Decrypt: %s", msg);
    } else {
        kms_bytes plain = {NULL, 0};
        const char *why = NULL;
        if (response_field1(resp, len, &plain) != 0)
            why = "malformed DecryptResponse";
        else
            key = kms_key_new(op->mode, plain.p, plain.len, &why);
        if (!key)
            snprintf(msg, sizeof msg, "%s%s", what, why);
    }
    if (key && k->cache)
        kms_cache_put(k->cache, op->digest, key);
    pthread_mutex_lock(&k->mu);
    op->state = key ? KMS_OP_DONE : KMS_OP_FAILED;
    op->key = key;
    snprintf(op->msg, sizeof op->msg, "%s", msg);
    op->expires = kms_now() + k->timing.negative_s;
    kms_waiter *w = op->waiters;
    op->waiters = NULL;
    pthread_mutex_unlock(&k->mu);
    kms_wake_list(w);
    kms_internal_unref(k);
}

/* ------------------------------------------------------------------ chain hooks */

int crypto_kms_encrypt(crypto_kms *k, const uint8_t *aad, size_t aad_len, const uint8_t *in,
                       size_t in_len, buf_t *out, es_error *err)
{
    return k->type == CRYPTO_PROVIDER_KMS_V2
               ? kms_v2_encrypt(k, aad, aad_len, in, in_len, out, err)
               : kms_v1_encrypt(k, aad, aad_len, in, in_len, out, err);
}

int crypto_kms_decrypt(crypto_kms *k, const uint8_t *aad, size_t aad_len, const uint8_t *body,
                       size_t len, buf_t *out, bool *stale, char *why, size_t why_cap,
                       es_error *err)
{
    return k->type == CRYPTO_PROVIDER_KMS_V2
               ? kms_v2_decrypt(k, aad, aad_len, body, len, out, stale, why, why_cap, err)
               : kms_v1_decrypt(k, aad, aad_len, body, len, out, stale, why, why_cap, err);
}

int crypto_kms_await(crypto_kms *k, int kind, const uint8_t *body, size_t len, crypto_ready_fn fn,
                     void *arg, es_error *err)
{
    return k->type == CRYPTO_PROVIDER_KMS_V2 ? kms_v2_await(k, kind, body, len, fn, arg, err)
                                             : kms_v1_await(k, kind, body, len, fn, arg, err);
}

/* ------------------------------------------------------------------ blocking readiness */

typedef struct ready_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
} ready_wait;

static void ready_wait_fn(void *arg)
{
    ready_wait *w = arg;
    pthread_mutex_lock(&w->mu);
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int crypto_kms_wait_ready(crypto_kms *k, double timeout_s, es_error *err)
{
    double end = kms_now() + timeout_s;
    while (kms_now() < end) {
        buf_t out = BUF_INIT;
        es_error e = {0};
        int rc = crypto_kms_encrypt(k, (const uint8_t *)"/", 1, (const uint8_t *)"", 0, &out, &e);
        buf_wipe_free(&out);
        if (rc == 0)
            return 0;
        if (e.code != CRYPTO_ERR_WOULD_BLOCK) {
            if (err)
                *err = e;
            return -1;
        }
        ready_wait w = {.mu = PTHREAD_MUTEX_INITIALIZER};
        pthread_cond_init(&w.cv, NULL);
        int rc2 = crypto_kms_await(k, CRYPTO_AWAIT_ENCRYPT, NULL, 0, ready_wait_fn, &w, err);
        if (rc2 < 0) {
            pthread_cond_destroy(&w.cv);
            return -1;
        }
        pthread_mutex_lock(&w.mu);
        while (rc2 == 1 && !w.done)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        pthread_cond_destroy(&w.cv);
        if (rc2 == 0) { /* nothing armed (e.g. a v1 refill between calls): poll */
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    return es_error_set(err, CRYPTO_ERR_UNAVAILABLE, "kms provider \"%s\": not ready after %gs",
                        k->name, timeout_s);
}
