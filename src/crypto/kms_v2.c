/* kms_v2.c - KMS v2 envelope provider (wire-format.md §3.7, §4.1).
 *
 * Write state: a 32-byte seed Encrypt'ed once by the plugin, regenerated when Status.key_id
 * changes; every write derives K = HKDF-Expand(SHA-256, seed, info) from 32 random info bytes and
 * stores EncryptedObject{info || N || AES-256-GCM(K, N, P, A = etcd key), keyID, EDEK,
 * annotations, HKDF_SHA256_XNONCE_AES_GCM_SEED}. The fields after encryptedData are encoded once
 * per write state. Status is polled on the KMS thread (healthy/unhealthy intervals); each healthy
 * answer extends the write state's expiry; writes fail once it has passed. Reads accept both
 * modes; the decrypted seed/DEK is cached under kube-apiserver's generateCacheKey digest.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "crypto/kms_internal.h"
#include "crypto/nonce.h"
#include "crypto/provider.h"
#include "kms/v2/api.pb-c.h"

#define M_STATUS "/v2.KeyManagementService/Status"
#define M_ENCRYPT "/v2.KeyManagementService/Encrypt"
#define M_DECRYPT "/v2.KeyManagementService/Decrypt"
#define SEED_LEN 32
#define INFO_LEN 32
#define NONCE_LEN 12
#define TAG_LEN 16

static void make_uid(char out[37])
{
    uint8_t u[16];
    if (RAND_bytes(u, sizeof u) != 1)
        memset(u, 0, sizeof u);
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0],
             u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13],
             u[14], u[15]);
}

static long long now_ms(void)
{
    return (long long)(kms_now() * 1000.0);
}

static void ws_free(v2_ws *ws)
{
    while (ws) {
        v2_ws *older = ws->older;
        kms_key_unref(ws->seed);
        buf_free(&ws->tail);
        free(ws->key_id);
        free(ws);
        ws = older;
    }
}

void kms_v2_release(crypto_kms *k)
{
    ws_free(atomic_load(&k->ws));
}

/* ------------------------------------------------------------------ Status and rotation */

static void status_tick(void *arg);

/* Ends one Status round: wakes waiters and schedules the next poll. */
static void round_end(crypto_kms *k, bool ok)
{
    pthread_mutex_lock(&k->mu);
    k->status_inflight = false;
    if (!ok && !atomic_load(&k->ws))
        atomic_store(&k->state_failed, true);
    kms_waiter *w = k->ready_waiters;
    k->ready_waiters = NULL;
    pthread_mutex_unlock(&k->mu);
    kms_wake_list(w);
    kms_schedule_poll(k, ok ? k->timing.status_healthy_s : k->timing.status_unhealthy_s,
                      status_tick);
    kms_internal_unref(k); /* the round's reference */
}

typedef struct rotation {
    crypto_kms *k;
    secret_t *seed;
    char *status_key_id;
} rotation;

static void encrypt_done(void *arg, int status, const char *detail, const uint8_t *resp, size_t len)
{
    rotation *r = arg;
    crypto_kms *k = r->k;
    V2__EncryptResponse *er = NULL;
    v2_ws *ws = NULL;
    const char *why = NULL;
    char msg[256] = "";
    if (status != 0) {
        snprintf(msg, sizeof msg, "Encrypt: rpc error: code = %d desc = %s", status, detail);
        goto fail;
    }
    er = v2__encrypt_response__unpack(NULL, len, resp);
    if (!er) {
        why = "malformed EncryptResponse";
    } else if (er->ciphertext.len == 0 || er->ciphertext.len > KMS_OBJ_MAX_EDEK) {
        why = "encrypted DEK source from the plugin is empty or larger than 1024 bytes";
    } else if (strcmp(er->key_id, r->status_key_id) != 0) {
        why = "keyID returned from Encrypt and Status do not match";
    }
    kms_object o;
    memset(&o, 0, sizeof o);
    if (!why) {
        if (er->n_annotations > KMS_OBJ_MAX_ANNOTATIONS) {
            why = "too many annotations";
        } else {
            for (size_t i = 0; i < er->n_annotations; i++) {
                o.ann_key[i].p = (const uint8_t *)er->annotations[i]->key;
                o.ann_key[i].len = strlen(er->annotations[i]->key);
                o.ann_val[i].p = er->annotations[i]->value.data;
                o.ann_val[i].len = er->annotations[i]->value.len;
            }
            o.n_ann = er->n_annotations;
            why = kms_annotations_validate(o.ann_key, o.ann_val, o.n_ann);
        }
    }
    if (why) {
        snprintf(msg, sizeof msg, "Encrypt: %s", why);
        goto fail;
    }
    o.key_id.p = (const uint8_t *)er->key_id;
    o.key_id.len = strlen(er->key_id);
    o.edek.p = er->ciphertext.data;
    o.edek.len = er->ciphertext.len;
    o.type = KMS_MODE_HKDF_SEED;
    o.data.p = (const uint8_t *)"x";
    o.data.len = 1;
    ws = calloc(1, sizeof *ws);
    if (!ws || !(ws->key_id = strdup(er->key_id)) || kms_object_encode_tail(&ws->tail, &o) != 0 ||
        kms_object_cache_key(&o, ws->digest) != 0 ||
        !(ws->seed = kms_key_new(KMS_MODE_HKDF_SEED, r->seed->bytes, r->seed->len, &why))) {
        snprintf(msg, sizeof msg, "Encrypt: %s", why ? why : "out of memory");
        goto fail;
    }
    ws->to_storage = kms_key_id_counter(k->name, "to_storage", o.key_id.p, o.key_id.len);
    atomic_store(&ws->seed->from_storage,
                 kms_key_id_counter(k->name, "from_storage", o.key_id.p, o.key_id.len));
    if (k->cache)
        kms_cache_put(k->cache, ws->digest, ws->seed); /* reads of our own writes: no Decrypt */
    pthread_mutex_lock(&k->mu);
    ws->older = atomic_load(&k->ws);
    atomic_store_explicit(&k->ws, ws, memory_order_release);
    atomic_store(&k->ws_expires_ms, now_ms() + (long long)(k->timing.write_expiry_s * 1000));
    atomic_store(&k->state_failed, false);
    pthread_mutex_unlock(&k->mu);
    kms_health_set(k, true, NULL);
    v2__encrypt_response__free_unpacked(er, NULL);
    secret_free(r->seed);
    free(r->status_key_id);
    free(r);
    round_end(k, true);
    return;
fail:
    if (ws)
        ws_free(ws);
    if (er)
        v2__encrypt_response__free_unpacked(er, NULL);
    kms_health_set(k, false, "%s", msg);
    secret_free(r->seed);
    free(r->status_key_id);
    free(r);
    round_end(k, false);
}

static void rotate(crypto_kms *k, const char *status_key_id)
{
    rotation *r = calloc(1, sizeof *r);
    if (!r || !(r->seed = secret_new(NULL, SEED_LEN)) ||
        !(r->status_key_id = strdup(status_key_id)) || RAND_bytes(r->seed->bytes, SEED_LEN) != 1) {
        if (r) {
            secret_free(r->seed);
            free(r->status_key_id);
        }
        free(r);
        kms_health_set(k, false, "cannot generate a seed");
        round_end(k, false);
        return;
    }
    r->k = k;
    char uid[37];
    make_uid(uid);
    V2__EncryptRequest req = V2__ENCRYPT_REQUEST__INIT;
    req.plaintext.data = r->seed->bytes;
    req.plaintext.len = SEED_LEN;
    req.uid = uid;
    size_t n = v2__encrypt_request__get_packed_size(&req);
    uint8_t *bytes = malloc(n ? n : 1);
    es_error e = {0};
    atomic_fetch_add_explicit(&k->n_encrypt, 1, memory_order_relaxed);
    if (!bytes) {
        encrypt_done(r, 13, "out of memory", NULL, 0);
        return;
    }
    v2__encrypt_request__pack(&req, bytes);
    int rc = kms_client_call(k->client, M_ENCRYPT, bytes, n, encrypt_done, r, &e);
    OPENSSL_cleanse(bytes, n); /* it held the seed */
    free(bytes);
    if (rc != 0)
        encrypt_done(r, e.code, e.msg, NULL, 0);
}

static void status_done(void *arg, int status, const char *detail, const uint8_t *resp, size_t len)
{
    crypto_kms *k = arg;
    if (status != 0) {
        kms_health_set(k, false, "Status: rpc error: code = %d desc = %s", status, detail);
        round_end(k, false);
        return;
    }
    V2__StatusResponse *sr = v2__status_response__unpack(NULL, len, resp);
    const char *why = NULL;
    if (!sr)
        why = "malformed StatusResponse";
    else if (strcmp(sr->version, "v2") != 0 && strcmp(sr->version, "v2beta1") != 0)
        why = "unsupported KMS API version (want v2 or v2beta1)";
    else if (k->version[0] && strcmp(k->version, sr->version) != 0)
        why = "KMS API version changed";
    else if (strcmp(sr->healthz, "ok") != 0)
        why = "plugin reports unhealthy";
    else if (!sr->key_id[0] || strlen(sr->key_id) > KMS_OBJ_MAX_KEYID)
        why = "keyID from Status is empty or longer than 1024 bytes";
    if (why) {
        kms_health_set(k, false, "Status: %s%s%.64s%s", why, sr ? " (healthz \"" : "",
                       sr ? sr->healthz : "", sr ? "\")" : "");
        if (sr)
            v2__status_response__free_unpacked(sr, NULL);
        round_end(k, false);
        return;
    }
    if (!k->version[0])
        snprintf(k->version, sizeof k->version, "%s", sr->version);
    v2_ws *ws = atomic_load_explicit(&k->ws, memory_order_acquire);
    if (ws && strcmp(ws->key_id, sr->key_id) == 0) {
        atomic_store(&k->ws_expires_ms, now_ms() + (long long)(k->timing.write_expiry_s * 1000));
        v2__status_response__free_unpacked(sr, NULL);
        kms_health_set(k, true, NULL);
        round_end(k, true);
        return;
    }
    rotate(k, sr->key_id); /* new key id (or first state): new seed, one Encrypt */
    v2__status_response__free_unpacked(sr, NULL);
}

static void start_status(crypto_kms *k)
{
    pthread_mutex_lock(&k->mu);
    if (k->status_inflight || k->closing) {
        pthread_mutex_unlock(&k->mu);
        return;
    }
    k->status_inflight = true;
    atomic_fetch_add_explicit(&k->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&k->mu);
    atomic_fetch_add_explicit(&k->n_status, 1, memory_order_relaxed);
    es_error e = {0};
    if (kms_client_call(k->client, M_STATUS, NULL, 0, status_done, k, &e) != 0)
        status_done(k, e.code ? e.code : 14, e.msg, NULL, 0);
}

static void status_tick(void *arg)
{
    crypto_kms *k = arg;
    if (kms_timer_fired(k))
        start_status(k);
}

int kms_v2_start(crypto_kms *k, es_error *err)
{
    (void)err;
    start_status(k);
    return 0;
}

/* ------------------------------------------------------------------ write */

static size_t vlen(size_t v)
{
    size_t n = 1;
    while (v >= 0x80)
        v >>= 7, n++;
    return n;
}

int kms_v2_encrypt(crypto_kms *k, const uint8_t *aad, size_t aad_len, const uint8_t *in,
                   size_t in_len, buf_t *out, es_error *err)
{
    v2_ws *ws = atomic_load_explicit(&k->ws, memory_order_acquire);
    if (!ws) {
        if (!atomic_load(&k->state_failed))
            return es_error_set(err, CRYPTO_ERR_WOULD_BLOCK,
                                "kms v2 provider \"%s\": waiting for the first seed", k->name);
        pthread_mutex_lock(&k->mu);
        es_error_set(err, CRYPTO_ERR_UNAVAILABLE,
                     "kms v2 provider \"%s\": no write state, writes are refused: %s", k->name,
                     k->last_error);
        pthread_mutex_unlock(&k->mu);
        return -1;
    }
    long long exp = atomic_load(&k->ws_expires_ms), now = now_ms();
    if (now > exp) {
        pthread_mutex_lock(&k->mu);
        es_error_set(err, CRYPTO_ERR_UNAVAILABLE,
                     "kms v2 provider \"%s\": no healthy Status for more than %gs, writes are "
                     "refused (last error: %s)",
                     k->name, k->timing.write_expiry_s, k->last_error);
        pthread_mutex_unlock(&k->mu);
        return -1;
    }
    if (in_len > SIZE_MAX / 2)
        return es_error_set(err, CRYPTO_ERR_INTERNAL, "kms v2: value too large");
    size_t data_len = INFO_LEN + NONCE_LEN + in_len + TAG_LEN;
    size_t total = k->prefix_len + 1 + vlen(data_len) + data_len + ws->tail.len;
    if (buf_reserve(out, total) < 0)
        return es_error_set(err, CRYPTO_ERR_INTERNAL, "kms v2: out of memory");
    size_t start = out->len;
    buf_append(out, k->prefix, k->prefix_len);
    kms_object_encode_data_header(out, data_len);
    uint8_t *d = out->data + out->len;
    uint8_t key[32];
    const char *why = NULL;
    if (crypto_nonce(d, INFO_LEN + NONCE_LEN) < 0)
        why = CRYPTO_MSG_RANDOM;
    else if (kms_hkdf_expand(ws->seed->secret->bytes, ws->seed->secret->len, d, INFO_LEN, key) != 0)
        why = "HKDF failed";
    else
        why = kms_gcm_seal_oneshot(key, d + INFO_LEN, aad, aad_len, in, in_len,
                                   d + INFO_LEN + NONCE_LEN);
    OPENSSL_cleanse(key, sizeof key);
    if (why) {
        OPENSSL_cleanse(out->data + start, total);
        out->len = start;
        return es_error_set(err, CRYPTO_ERR_INTERNAL, "kms v2 provider \"%s\": %s", k->name, why);
    }
    out->len += data_len;
    buf_append(out, ws->tail.data, ws->tail.len);
    metrics_counter_add(ws->to_storage, 1);
    return 0;
}

/* ------------------------------------------------------------------ read */

static int parse(const uint8_t *body, size_t len, kms_object *o, uint8_t digest[32], char *why,
                 size_t cap)
{
    const char *r = kms_object_decode(o, body, len);
    if (!r)
        r = kms_object_validate(o);
    if (r) {
        snprintf(why, cap, "%s", r);
        return -1;
    }
    if (kms_object_cache_key(o, digest) != 0) {
        snprintf(why, cap, "%s", CRYPTO_MSG_CIPHER);
        return -1;
    }
    return 0;
}

int kms_v2_decrypt(crypto_kms *k, const uint8_t *aad, size_t aad_len, const uint8_t *body,
                   size_t len, buf_t *out, bool *stale, char *why, size_t why_cap, es_error *err)
{
    kms_object o;
    uint8_t digest[32];
    if (parse(body, len, &o, digest, why, why_cap) != 0)
        return -1;
    v2_ws *ws = atomic_load_explicit(&k->ws, memory_order_acquire);
    if (!ws) {
        if (!atomic_load(&k->state_failed))
            return -2;
        pthread_mutex_lock(&k->mu);
        snprintf(why, why_cap, "kms v2 provider \"%s\" is not ready: %s", k->name, k->last_error);
        pthread_mutex_unlock(&k->mu);
        return -1;
    }
    kms_key *key = NULL;
    int rc = kms_key_lookup(k, digest, &key, why, why_cap);
    if (rc != 0)
        return rc == 1 ? -2 : -1;
    const uint8_t *data = o.data.p;
    size_t dlen = o.data.len;
    if (buf_reserve(out, dlen) < 0) {
        kms_key_unref(key);
        es_error_set(err, CRYPTO_ERR_INTERNAL, "kms v2: out of memory");
        return -3;
    }
    size_t n = 0;
    const char *r;
    if (key->mode == KMS_MODE_HKDF_SEED) {
        uint8_t dk[32];
        if (dlen < INFO_LEN + NONCE_LEN)
            r = CRYPTO_MSG_SHORT;
        else if (kms_hkdf_expand(key->secret->bytes, key->secret->len, data, INFO_LEN, dk) != 0)
            r = CRYPTO_MSG_CIPHER;
        else
            r = kms_gcm_open_oneshot(dk, data + INFO_LEN, aad, aad_len, data + INFO_LEN + NONCE_LEN,
                                     dlen - INFO_LEN - NONCE_LEN, out->data + out->len, &n);
        OPENSSL_cleanse(dk, sizeof dk);
    } else {
        r = crypto_provider_aesgcm.open(key->gcm, aad, aad_len, data, dlen, out->data + out->len,
                                        &n);
    }
    if (r) {
        kms_key_unref(key);
        snprintf(why, why_cap, "%s", r);
        return -1;
    }
    out->len += n;
    metrics_counter *c = atomic_load_explicit(&key->from_storage, memory_order_relaxed);
    if (!c) {
        c = kms_key_id_counter(k->name, "from_storage", o.key_id.p, o.key_id.len);
        atomic_store_explicit(&key->from_storage, c, memory_order_relaxed);
    }
    metrics_counter_add(c, 1);
    kms_key_unref(key);
    *stale = o.type != KMS_MODE_HKDF_SEED || o.key_id.len != strlen(ws->key_id) ||
             memcmp(o.key_id.p, ws->key_id, o.key_id.len) != 0;
    return 0;
}

/* ------------------------------------------------------------------ await */

int kms_v2_await(crypto_kms *k, int kind, const uint8_t *body, size_t len, crypto_ready_fn fn,
                 void *arg, es_error *err)
{
    if (!atomic_load_explicit(&k->ws, memory_order_acquire)) {
        pthread_mutex_lock(&k->mu);
        int rc = 0;
        if (!atomic_load(&k->ws) && !atomic_load(&k->state_failed))
            rc = kms_add_waiter(&k->ready_waiters, fn, arg) == 0 ? 1 : -1;
        pthread_mutex_unlock(&k->mu);
        if (rc < 0)
            return es_error_set(err, CRYPTO_ERR_INTERNAL, "kms: out of memory");
        if (rc == 1 || kind == CRYPTO_AWAIT_ENCRYPT)
            return rc;
    }
    if (kind == CRYPTO_AWAIT_ENCRYPT)
        return 0;
    kms_object o;
    uint8_t digest[32];
    char why[256];
    if (parse(body, len, &o, digest, why, sizeof why) != 0)
        return 0; /* the read fails for good */
    kms_key *key = NULL;
    if (kms_key_lookup(k, digest, &key, why, sizeof why) != 1) {
        kms_key_unref(key);
        return 0;
    }
    buf_t req = BUF_INIT;
    char uid[37];
    make_uid(uid);
    int ok = kms_pb_put_bytes(&req, 1, o.edek.p, o.edek.len) == 0 &&
             kms_pb_put_bytes(&req, 2, (const uint8_t *)uid, strlen(uid)) == 0 &&
             kms_pb_put_bytes(&req, 3, o.key_id.p, o.key_id.len) == 0;
    for (size_t i = 0; ok && i < o.n_ann; i++)
        ok = kms_pb_put_entry(&req, 4, o.ann_key[i], o.ann_val[i]) == 0;
    if (!ok) {
        buf_free(&req);
        return es_error_set(err, CRYPTO_ERR_INTERNAL, "kms: out of memory");
    }
    int rc = kms_decrypt_await(k, digest, (int)o.type, M_DECRYPT, req.data, req.len, fn, arg, err);
    buf_free(&req);
    return rc == 0 ? 1 : -1;
}
