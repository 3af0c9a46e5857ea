/* kek.h - the key-encryption-key backends of the bundled KMS v2 plugin (`etcdseal kms-plugin`).
 *
 * A kmsplugin_kek wraps (Encrypt) and unwraps (Decrypt) small secrets - kube-apiserver's and
 * etcdseal's 32-byte seeds/DEKs - with AES-256-GCM under a key it never exports. Every ciphertext
 * is `0x01 || iv(12) || ct || tag(16)`, the AAD is the key_id's bytes, the IV is fresh per call.
 * key_id names the current key version; decrypt also accepts the key_ids of older keys the
 * backend was told about (or can find), and fails with es_error.code = a gRPC status code:
 * NOT_FOUND (unknown key_id), INVALID_ARGUMENT (malformed or unauthentic ciphertext),
 * UNAVAILABLE (token/backend failure). Backends: file (development: raw key in a 0600 file) and
 * pkcs11 (AES key object in a token; CKM_AES_GCM runs inside the token).
 * Not thread-safe: one kek is used by one thread at a time (the plugin's server loop).
 * Plaintext outputs go into caller-owned buffers the caller must release with buf_wipe_free.
 */
#ifndef ETCDSEAL_KMSPLUGIN_KEK_H
#define ETCDSEAL_KMSPLUGIN_KEK_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/error.h"
#include "base/secret.h"

#define KMSPLUGIN_CT_VERSION 0x01
#define KMSPLUGIN_IV_BYTES 12
#define KMSPLUGIN_TAG_BYTES 16
#define KMSPLUGIN_CT_OVERHEAD (1 + KMSPLUGIN_IV_BYTES + KMSPLUGIN_TAG_BYTES)
#define KMSPLUGIN_PLAINTEXT_MAX 512   /* kube-apiserver wraps 32 bytes */
#define KMSPLUGIN_CIPHERTEXT_MAX 1024 /* kube-apiserver's limit on EncryptResponse.ciphertext */
#define KMSPLUGIN_KEY_ID_MAX 1024     /* kube-apiserver's limit on key_id */
#define KMSPLUGIN_KEY_BYTES 32        /* file backend: AES-256 */

typedef struct kmsplugin_kek kmsplugin_kek;

struct kmsplugin_kek_ops {
    int (*encrypt)(kmsplugin_kek *k, buf_t *out, const uint8_t *pt, size_t pt_len, es_error *err);
    int (*decrypt)(kmsplugin_kek *k, buf_t *out, const char *key_id, const uint8_t *ct,
                   size_t ct_len, es_error *err);
    /* A cheap liveness check (pkcs11: the session still works). */
    int (*health)(kmsplugin_kek *k, es_error *err);
    void (*destroy)(kmsplugin_kek *k);
};

struct kmsplugin_kek {
    const struct kmsplugin_kek_ops *ops;
    const char *backend; /* "file" or "pkcs11" */
    char key_id[KMSPLUGIN_KEY_ID_MAX + 1];
};

/* File backend. key_file holds 32 raw bytes or their base64 and must not be readable by group
 * or others; key_id NULL = "file:sha256:<first 16 bytes of SHA-256(domain || key), hex>".
 * old_files (n_old entries) stay usable for decrypt under their default key_ids; a key_id that
 * matches none is tried against every key (AES-GCM's tag decides). */
int kmsplugin_kek_file_new(kmsplugin_kek **out, const char *key_file, const char *key_id,
                           const char *const *old_files, size_t n_old, es_error *err);

struct kmsplugin_pkcs11_opts {
    const char *module;                /* path of the PKCS#11 module (.so) */
    const char *token_label;           /* token label, or NULL to use slot */
    long slot;                         /* slot id when token_label is NULL (-1: unset) */
    const char *pin_file;              /* user PIN; must not be readable by group or others */
    const char *key_label;             /* CKA_LABEL of the current AES key */
    const char *const *decrypt_labels; /* older keys, preloaded (any key is also found by the */
    size_t n_decrypt_labels;           /* label recorded in its key_id) */
};
#define KMSPLUGIN_PKCS11_DEFAULT_MODULE "/usr/lib/softhsm/libsofthsm2.so"

/* PKCS#11 backend: key_id = "pkcs11:<token label>/<key label>/<CKA_ID hex | kcv-<CKA_CHECK_VALUE
 * hex>>" with '/', '%' and non-printable bytes of the labels percent-encoded. */
int kmsplugin_kek_pkcs11_new(kmsplugin_kek **out, const struct kmsplugin_pkcs11_opts *o,
                             es_error *err);

/* Creates an AES-256 key labelled o->key_label (random 8-byte CKA_ID; token, private, sensitive,
 * not extractable, encrypt/decrypt) in the token; fails if that label exists. Writes its key_id. */
int kmsplugin_pkcs11_generate_key(char *key_id_out, size_t cap,
                                  const struct kmsplugin_pkcs11_opts *o, es_error *err);

int kmsplugin_kek_encrypt(kmsplugin_kek *k, buf_t *out, const uint8_t *pt, size_t pt_len,
                          es_error *err);
int kmsplugin_kek_decrypt(kmsplugin_kek *k, buf_t *out, const char *key_id, const uint8_t *ct,
                          size_t ct_len, es_error *err);
int kmsplugin_kek_health(kmsplugin_kek *k, es_error *err);
const char *kmsplugin_kek_key_id(const kmsplugin_kek *k);
void kmsplugin_kek_free(kmsplugin_kek *k);

/* Shared helpers of the backends. Reads a small file that must be a regular file with no group
 * or other permission bits (`what` names it in errors) into guarded memory. */
int kmsplugin_read_private_file(secret_t **out, const char *path, const char *what, es_error *err);
/* Appends s percent-encoded ('/', '%', bytes outside 0x21..0x7e) to b. */
int kmsplugin_append_escaped(buf_t *b, const uint8_t *s, size_t n);
/* Decodes a percent-encoded field of n bytes into out (NUL-terminated, cap includes NUL). */
int kmsplugin_unescape(char *out, size_t cap, const char *s, size_t n);

#endif
