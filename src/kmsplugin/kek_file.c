/* kek_file.c - the development KEK backend: AES-256-GCM (OpenSSL) under a 32-byte key read from a
 * private file. The current key wraps; it and every --old-key-file key unwrap. Keys live in
 * guarded memory for the whole run; a default key_id is a truncated domain-separated SHA-256 of
 * the key, so it is stable across restarts and changes with the key. */
#include "kmsplugin/kek.h"

#include <stdlib.h>
#include <string.h>

#include <grpc/status.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sodium.h>

#define KEY_ID_DOMAIN "etcdseal kms-plugin file key id v1"
#define KEY_ID_HASH_BYTES 16

struct file_key {
    secret_t *key;
    char key_id[KMSPLUGIN_KEY_ID_MAX + 1];
};

struct kek_file {
    kmsplugin_kek base;    /* first: the public part */
    struct file_key *keys; /* keys[0] is current */
    size_t n_keys;
};

static int load_key(struct file_key *fk, const char *path, const char *what, es_error *err)
{
    secret_t *raw = NULL;
    if (kmsplugin_read_private_file(&raw, path, what, err) != 0)
        return -1;
    if (raw->len == KMSPLUGIN_KEY_BYTES) {
        fk->key = raw;
    } else {
        size_t n = raw->len;
        while (n > 0 && (raw->bytes[n - 1] == '\n' || raw->bytes[n - 1] == '\r' ||
                         raw->bytes[n - 1] == ' ' || raw->bytes[n - 1] == '\t'))
            n--;
        fk->key = secret_from_base64((const char *)raw->bytes, n);
        secret_free(raw);
        if (!fk->key || fk->key->len != KMSPLUGIN_KEY_BYTES) {
            secret_free(fk->key);
            fk->key = NULL;
            return es_error_set(err, GRPC_STATUS_FAILED_PRECONDITION,
                                "%s %s: must hold %d raw bytes or their base64", what, path,
                                KMSPLUGIN_KEY_BYTES);
        }
    }
    uint8_t h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, (const uint8_t *)KEY_ID_DOMAIN, sizeof KEY_ID_DOMAIN);
    crypto_hash_sha256_update(&st, fk->key->bytes, fk->key->len);
    crypto_hash_sha256_final(&st, h);
    char hex[2 * KEY_ID_HASH_BYTES + 1];
    sodium_bin2hex(hex, sizeof hex, h, KEY_ID_HASH_BYTES);
    snprintf(fk->key_id, sizeof fk->key_id, "file:sha256:%s", hex);
    sodium_memzero(&st, sizeof st);
    return 0;
}

/* AES-256-GCM, one shot. enc: out = iv||ct||tag appended after the version byte. */
static int gcm(int enc, const secret_t *key, const uint8_t *iv, const char *aad, const uint8_t *in,
               size_t in_len, uint8_t *out, uint8_t *tag)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int ok = c != NULL, n = 0;
    ok = ok && EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) == 1;
    ok = ok && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, KMSPLUGIN_IV_BYTES, NULL) == 1;
    ok = ok && EVP_CipherInit_ex(c, NULL, NULL, key->bytes, iv, enc) == 1;
    ok = ok && EVP_CipherUpdate(c, NULL, &n, (const uint8_t *)aad, (int)strlen(aad)) == 1;
    ok = ok && EVP_CipherUpdate(c, out, &n, in, (int)in_len) == 1;
    if (!enc)
        ok = ok && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, KMSPLUGIN_TAG_BYTES, tag) == 1;
    ok = ok && EVP_CipherFinal_ex(c, out + n, &n) == 1;
    if (enc)
        ok = ok && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, KMSPLUGIN_TAG_BYTES, tag) == 1;
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : -1;
}

static int file_encrypt(kmsplugin_kek *k, buf_t *out, const uint8_t *pt, size_t pt_len,
                        es_error *err)
{
    struct kek_file *f = (struct kek_file *)k;
    size_t total = KMSPLUGIN_CT_OVERHEAD + pt_len;
    if (buf_reserve(out, total) != 0)
        return es_error_set(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "file backend: out of memory");
    uint8_t *p = out->data + out->len;
    p[0] = KMSPLUGIN_CT_VERSION;
    if (RAND_bytes(p + 1, KMSPLUGIN_IV_BYTES) != 1)
        return es_error_set(err, GRPC_STATUS_UNAVAILABLE, "file backend: no random IV");
    if (gcm(1, f->keys[0].key, p + 1, k->key_id, pt, pt_len, p + 1 + KMSPLUGIN_IV_BYTES,
            p + 1 + KMSPLUGIN_IV_BYTES + pt_len) != 0)
        return es_error_set(err, GRPC_STATUS_INTERNAL, "file backend: AES-GCM encrypt failed");
    out->len += total;
    return 0;
}

static int try_key(const struct file_key *fk, buf_t *out, const char *key_id, const uint8_t *ct,
                   size_t ct_len)
{
    size_t n = ct_len - KMSPLUGIN_CT_OVERHEAD;
    if (buf_reserve(out, n) != 0)
        return -1;
    uint8_t tag[KMSPLUGIN_TAG_BYTES];
    memcpy(tag, ct + ct_len - KMSPLUGIN_TAG_BYTES, sizeof tag);
    if (gcm(0, fk->key, ct + 1, key_id, ct + 1 + KMSPLUGIN_IV_BYTES, n, out->data + out->len,
            tag) != 0) {
        sodium_memzero(out->data + out->len, n);
        return -1;
    }
    out->len += n;
    return 0;
}

static int file_decrypt(kmsplugin_kek *k, buf_t *out, const char *key_id, const uint8_t *ct,
                        size_t ct_len, es_error *err)
{
    struct kek_file *f = (struct kek_file *)k;
    /* the current key under its configured id, then every key under its default id */
    for (size_t i = 0; i <= f->n_keys; i++) {
        const struct file_key *fk = &f->keys[i == 0 ? 0 : i - 1];
        if (strcmp(i == 0 ? k->key_id : fk->key_id, key_id) != 0)
            continue;
        if (try_key(fk, out, key_id, ct, ct_len) == 0)
            return 0;
        return es_error_set(err, GRPC_STATUS_INVALID_ARGUMENT,
                            "ciphertext failed authentication under key_id %s", key_id);
    }
    /* A key_id we did not name (an old key that ran under a custom --key-id): the key that
     * authenticates the ciphertext with this key_id as AAD is the right one. */
    for (size_t i = 0; i < f->n_keys; i++)
        if (try_key(&f->keys[i], out, key_id, ct, ct_len) == 0)
            return 0;
    return es_error_set(err, GRPC_STATUS_NOT_FOUND, "no key for key_id %s", key_id);
}

static int file_health(kmsplugin_kek *k, es_error *err)
{
    (void)k;
    (void)err;
    return 0;
}

static void file_destroy(kmsplugin_kek *k)
{
    struct kek_file *f = (struct kek_file *)k;
    for (size_t i = 0; i < f->n_keys; i++)
        secret_free(f->keys[i].key);
    free(f->keys);
    free(f);
}

static const struct kmsplugin_kek_ops file_ops = {file_encrypt, file_decrypt, file_health,
                                                  file_destroy};

int kmsplugin_kek_file_new(kmsplugin_kek **out, const char *key_file, const char *key_id,
                           const char *const *old_files, size_t n_old, es_error *err)
{
    *out = NULL;
    if (key_id && (!*key_id || strlen(key_id) > KMSPLUGIN_KEY_ID_MAX))
        return es_error_set(err, GRPC_STATUS_INVALID_ARGUMENT, "--key-id must be 1..%d bytes",
                            KMSPLUGIN_KEY_ID_MAX);
    struct kek_file *f = calloc(1, sizeof *f);
    if (f)
        f->keys = calloc(1 + n_old, sizeof *f->keys);
    if (!f || !f->keys) {
        free(f);
        return es_error_set(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "file backend: out of memory");
    }
    f->base.ops = &file_ops;
    f->base.backend = "file";
    for (size_t i = 0; i < 1 + n_old; i++) {
        const char *path = i == 0 ? key_file : old_files[i - 1];
        if (load_key(&f->keys[i], path, i == 0 ? "--key-file" : "--old-key-file", err) != 0) {
            file_destroy(&f->base);
            return -1;
        }
        f->n_keys++;
    }
    snprintf(f->base.key_id, sizeof f->base.key_id, "%s", key_id ? key_id : f->keys[0].key_id);
    *out = &f->base;
    return 0;
}
