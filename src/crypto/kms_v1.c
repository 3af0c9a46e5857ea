/* kms_v1.c - KMS v1 envelope provider (wire-format.md §3.6, §4.2).
 *
 * Every write uses a fresh 32-byte DEK that the plugin encrypted: a small pool of pre-encrypted
 * (DEK, EDEK) pairs is refilled in the background on the KMS thread, each pair serves exactly one
 * write (its DEK then lives on only in the read cache, as kube-apiserver caches it on write, and
 * is wiped on eviction; with the cache disabled it is wiped at once). Stored body:
 * BE16(len EDEK) || EDEK || N(12) || AES-GCM(DEK, N, P, A = etcd key). Reads try GCM, then the
 * legacy CBC form (stale). Version is called once before first use (and polled as health check);
 * every request carries version "v1beta1".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "crypto/kms_internal.h"
#include "crypto/provider.h"
#include "kms/v1beta1/api.pb-c.h"

#define M_VERSION "/v1beta1.KeyManagementService/Version"
#define M_ENCRYPT "/v1beta1.KeyManagementService/Encrypt"
#define M_DECRYPT "/v1beta1.KeyManagementService/Decrypt"
#define API_VERSION "v1beta1"
#define POOL_TARGET 16
#define DEK_LEN 32
#define MSG_LEN_PREFIX                                                                             \
    "invalid data encountered by envelope transformer: failed to read uint16 length prefixed data"

static void refill(crypto_kms *k);

void kms_v1_release(crypto_kms *k)
{
    for (size_t i = 0; i < k->pool_n; i++)
        kms_key_unref(k->pool[i]);
    free(k->pool);
}

static void take_waiters_and_wake(crypto_kms *k)
{
    pthread_mutex_lock(&k->mu);
    kms_waiter *w = k->ready_waiters;
    k->ready_waiters = NULL;
    pthread_mutex_unlock(&k->mu);
    kms_wake_list(w);
}

/* ------------------------------------------------------------------ Version (start + health) */

static void version_tick(void *arg);

static void version_done(void *arg, int status, const char *detail, const uint8_t *resp, size_t len)
{
    crypto_kms *k = arg;
    bool ok = false;
    if (status != 0) {
        kms_health_set(k, false, "Version: rpc error: code = %d desc = %s", status, detail);
    } else {
        V1beta1__VersionResponse *vr = v1beta1__version_response__unpack(NULL, len, resp);
        if (!vr || strcmp(vr->version, API_VERSION) != 0)
            kms_health_set(k, false,
                           "Version: KMS provider api version %.32s is not supported, "
                           "only %s is supported now",
                           vr ? vr->version : "(malformed)", API_VERSION);
        else
            ok = true;
        if (vr)
            v1beta1__version_response__free_unpacked(vr, NULL);
    }
    if (ok) {
        atomic_store(&k->version_ok, true);
        kms_health_set(k, true, NULL);
        refill(k);
    } else if (!atomic_load(&k->version_ok)) {
        atomic_store(&k->state_failed, true);
        take_waiters_and_wake(k);
    }
    kms_schedule_poll(k, ok ? k->timing.status_healthy_s : k->timing.status_unhealthy_s,
                      version_tick);
    kms_internal_unref(k);
}

static void version_call(crypto_kms *k)
{
    V1beta1__VersionRequest req = V1BETA1__VERSION_REQUEST__INIT;
    req.version = API_VERSION;
    uint8_t buf[64];
    size_t n = v1beta1__version_request__pack(&req, buf);
    atomic_fetch_add_explicit(&k->refs, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&k->n_version, 1, memory_order_relaxed);
    es_error e = {0};
    if (kms_client_call(k->client, M_VERSION, buf, n, version_done, k, &e) != 0)
        version_done(k, e.code ? e.code : 14, e.msg, NULL, 0);
}

static void version_tick(void *arg)
{
    crypto_kms *k = arg;
    if (!kms_timer_fired(k))
        return;
    version_call(k);
}

int kms_v1_start(crypto_kms *k, es_error *err)
{
    k->pool = calloc(POOL_TARGET, sizeof *k->pool);
    if (!k->pool)
        return es_error_set(err, CRYPTO_ERR_INTERNAL, "kms provider \"%s\": out of memory",
                            k->name);
    k->pool_cap = POOL_TARGET;
    version_call(k);
    return 0;
}

/* ------------------------------------------------------------------ DEK pool */

typedef struct pair_ctx {
    crypto_kms *k;
    secret_t *dek;
} pair_ctx;

static void pair_done(void *arg, int status, const char *detail, const uint8_t *resp, size_t len)
{
    pair_ctx *pc = arg;
    crypto_kms *k = pc->k;
    kms_key *key = NULL;
    char msg[256] = "";
    if (status != 0) {
        snprintf(msg, sizeof msg, "Encrypt: rpc error: code = %d desc = %s", status, detail);
    } else {
        V1beta1__EncryptResponse *er = v1beta1__encrypt_response__unpack(NULL, len, resp);
        const char *why = NULL;
        if (!er)
            why = "malformed EncryptResponse";
        else if (er->cipher.len == 0 || er->cipher.len > 0xffff)
            why = "the encrypted DEK is empty or longer than 65535 bytes";
        else if ((key = kms_key_new(KMS_KEY_V1, pc->dek->bytes, pc->dek->len, &why)) != NULL) {
            key->edek = malloc(er->cipher.len);
            if (key->edek) {
                memcpy(key->edek, er->cipher.data, er->cipher.len);
                key->edek_len = er->cipher.len;
            } else {
                kms_key_unref(key);
                key = NULL;
                why = "out of memory";
            }
        }
        if (why)
            snprintf(msg, sizeof msg, "Encrypt: %s", why);
        if (er)
            v1beta1__encrypt_response__free_unpacked(er, NULL);
    }
    secret_free(pc->dek);
    free(pc);
    pthread_mutex_lock(&k->mu);
    k->pool_inflight--;
    if (key && k->pool_n < k->pool_cap) {
        k->pool[k->pool_n++] = key;
        key = NULL;
        k->fill_failed = false;
    } else if (!key && k->pool_n == 0 && k->pool_inflight == 0) {
        k->fill_failed = true;
    }
    kms_waiter *w = k->ready_waiters;
    k->ready_waiters = NULL;
    pthread_mutex_unlock(&k->mu);
    kms_key_unref(key); /* pool full (cannot happen) */
    if (msg[0])
        kms_health_set(k, false, "%s", msg);
    else
        kms_health_set(k, true, NULL);
    kms_wake_list(w);
    kms_internal_unref(k);
}

static void refill(crypto_kms *k)
{
    pthread_mutex_lock(&k->mu);
    size_t need = 0;
    if (!k->closing && atomic_load(&k->version_ok) && k->pool_n + k->pool_inflight < POOL_TARGET)
        need = POOL_TARGET - k->pool_n - k->pool_inflight;
    k->pool_inflight += need;
    atomic_fetch_add_explicit(&k->refs, (int)need, memory_order_relaxed);
    pthread_mutex_unlock(&k->mu);
    for (size_t i = 0; i < need; i++) {
        pair_ctx *pc = calloc(1, sizeof *pc);
        if (pc)
            pc->k = k;
        if (!pc || !(pc->dek = secret_new(NULL, DEK_LEN)) ||
            RAND_bytes(pc->dek->bytes, DEK_LEN) != 1) {
            if (pc) {
                secret_free(pc->dek);
                free(pc);
            }
            pair_ctx *fake = calloc(1, sizeof *fake);
            if (!fake) { /* give the slot back without a callback */
                pthread_mutex_lock(&k->mu);
                k->pool_inflight--;
                pthread_mutex_unlock(&k->mu);
                kms_internal_unref(k);
                continue;
            }
            fake->k = k;
            pair_done(fake, 13, "cannot generate a DEK", NULL, 0);
            continue;
        }
        V1beta1__EncryptRequest req = V1BETA1__ENCRYPT_REQUEST__INIT;
        req.version = API_VERSION;
        req.plain.data = pc->dek->bytes;
        req.plain.len = DEK_LEN;
        uint8_t buf[128];
        size_t n = v1beta1__encrypt_request__pack(&req, buf);
        atomic_fetch_add_explicit(&k->n_encrypt, 1, memory_order_relaxed);
        es_error e = {0};
        int rc = kms_client_call(k->client, M_ENCRYPT, buf, n, pair_done, pc, &e);
        OPENSSL_cleanse(buf, sizeof buf);
        if (rc != 0)
            pair_done(pc, e.code ? e.code : 14, e.msg, NULL, 0);
    }
}

/* ------------------------------------------------------------------ write */

static int edek_digest(const uint8_t *edek, size_t len, uint8_t out[32])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned int dl = 0;
    int ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(c, "kms-v1:", 7) == 1 && EVP_DigestUpdate(c, edek, len) == 1 &&
             EVP_DigestFinal_ex(c, out, &dl) == 1 && dl == 32;
    EVP_MD_CTX_free(c);
    return ok ? 0 : -1;
}

int kms_v1_encrypt(crypto_kms *k, const uint8_t *aad, size_t aad_len, const uint8_t *in,
                   size_t in_len, buf_t *out, es_error *err)
{
    kms_key *key = NULL;
    bool failed;
    pthread_mutex_lock(&k->mu);
    if (k->pool_n > 0)
        key = k->pool[--k->pool_n];
    failed = atomic_load(&k->version_ok) ? k->fill_failed && k->pool_inflight == 0
                                         : atomic_load(&k->state_failed);
    if (!key && failed)
        es_error_set(err, CRYPTO_ERR_UNAVAILABLE,
                     "kms v1 provider \"%s\": no data key available, writes are refused: %s",
                     k->name, k->last_error);
    pthread_mutex_unlock(&k->mu);
    refill(k); /* replace what was taken (or retry after a failure) */
    if (!key)
        return failed ? -1
                      : es_error_set(err, CRYPTO_ERR_WOULD_BLOCK,
                                     "kms v1 provider \"%s\": waiting for a data key", k->name);
    size_t body = 2 + key->edek_len + crypto_provider_aesgcm.sealed_size(in_len);
    size_t start = out->len;
    if (in_len > SIZE_MAX / 2 || buf_reserve(out, k->prefix_len + body) < 0) {
        kms_key_unref(key);
        return es_error_set(err, CRYPTO_ERR_INTERNAL, "kms v1: out of memory");
    }
    buf_append(out, k->prefix, k->prefix_len);
    uint8_t be[2] = {(uint8_t)(key->edek_len >> 8), (uint8_t)key->edek_len};
    buf_append(out, be, 2);
    buf_append(out, key->edek, key->edek_len);
    const char *why =
        crypto_provider_aesgcm.seal(key->gcm, aad, aad_len, in, in_len, out->data + out->len);
    if (why) {
        OPENSSL_cleanse(out->data + start, k->prefix_len + body);
        out->len = start;
        kms_key_unref(key);
        return es_error_set(err, CRYPTO_ERR_INTERNAL, "kms v1 provider \"%s\": %s", k->name, why);
    }
    out->len += crypto_provider_aesgcm.sealed_size(in_len);
    uint8_t digest[32];
    if (k->cache && edek_digest(key->edek, key->edek_len, digest) == 0)
        kms_cache_put(k->cache, digest, key);
    kms_key_unref(key); /* the pair is used up; without a cache the DEK is wiped here */
    return 0;
}

/* ------------------------------------------------------------------ read */

static int split(const uint8_t *body, size_t len, kms_bytes *edek, kms_bytes *rest)
{
    if (len < 2)
        return -1;
    size_t l = (size_t)body[0] << 8 | body[1];
    if (len - 2 < l)
        return -1;
    edek->p = body + 2;
    edek->len = l;
    rest->p = body + 2 + l;
    rest->len = len - 2 - l;
    return 0;
}

int kms_v1_decrypt(crypto_kms *k, const uint8_t *aad, size_t aad_len, const uint8_t *body,
                   size_t len, buf_t *out, bool *stale, char *why, size_t why_cap, es_error *err)
{
    kms_bytes edek, rest;
    if (split(body, len, &edek, &rest) != 0) {
        snprintf(why, why_cap, "%s", MSG_LEN_PREFIX);
        return -1;
    }
    if (!atomic_load(&k->version_ok)) {
        if (!atomic_load(&k->state_failed))
            return -2;
        pthread_mutex_lock(&k->mu);
        snprintf(why, why_cap, "kms v1 provider \"%s\" is not ready: %s", k->name, k->last_error);
        pthread_mutex_unlock(&k->mu);
        return -1;
    }
    uint8_t digest[32];
    if (edek_digest(edek.p, edek.len, digest) != 0) {
        es_error_set(err, CRYPTO_ERR_INTERNAL, "kms v1: digest failed");
        return -3;
    }
    kms_key *key = NULL;
    int rc = kms_key_lookup(k, digest, &key, why, why_cap);
    if (rc != 0)
        return rc == 1 ? -2 : -1;
    if (buf_reserve(out, rest.len) < 0) {
        kms_key_unref(key);
        es_error_set(err, CRYPTO_ERR_INTERNAL, "kms v1: out of memory");
        return -3;
    }
    size_t n = 0;
    const char *g = crypto_provider_aesgcm.open(key->gcm, aad, aad_len, rest.p, rest.len,
                                                out->data + out->len, &n);
    if (!g) {
        *stale = false;
    } else {
        const char *c = crypto_provider_aescbc.open(key->cbc, NULL, 0, rest.p, rest.len,
                                                    out->data + out->len, &n);
        if (c) {
            kms_key_unref(key);
            snprintf(why, why_cap, "[%s, %s]", g, c);
            return -1;
        }
        *stale = true;
    }
    kms_key_unref(key);
    out->len += n;
    return 0;
}

/* ------------------------------------------------------------------ await */

int kms_v1_await(crypto_kms *k, int kind, const uint8_t *body, size_t len, crypto_ready_fn fn,
                 void *arg, es_error *err)
{
    pthread_mutex_lock(&k->mu);
    bool vok = atomic_load(&k->version_ok);
    int rc = 0;
    if ((!vok && !atomic_load(&k->state_failed)) ||
        (vok && kind == CRYPTO_AWAIT_ENCRYPT && k->pool_n == 0 && k->pool_inflight > 0))
        rc = kms_add_waiter(&k->ready_waiters, fn, arg) == 0 ? 1 : -1;
    pthread_mutex_unlock(&k->mu);
    if (rc < 0)
        return es_error_set(err, CRYPTO_ERR_INTERNAL, "kms: out of memory");
    if (rc == 1 || kind == CRYPTO_AWAIT_ENCRYPT || !vok)
        return rc;
    kms_bytes edek, rest;
    uint8_t digest[32];
    char why[256];
    kms_key *key = NULL;
    if (split(body, len, &edek, &rest) != 0 || edek_digest(edek.p, edek.len, digest) != 0 ||
        kms_key_lookup(k, digest, &key, why, sizeof why) != 1) {
        kms_key_unref(key);
        return 0;
    }
    buf_t req = BUF_INIT;
    int ok = kms_pb_put_bytes(&req, 1, (const uint8_t *)API_VERSION, strlen(API_VERSION)) == 0 &&
             kms_pb_put_bytes(&req, 2, edek.p, edek.len) == 0;
    if (!ok) {
        buf_free(&req);
        return es_error_set(err, CRYPTO_ERR_INTERNAL, "kms: out of memory");
    }
    rc = kms_decrypt_await(k, digest, KMS_KEY_V1, M_DECRYPT, req.data, req.len, fn, arg, err);
    buf_free(&req);
    return rc == 0 ? 1 : -1;
}
