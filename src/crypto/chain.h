/* chain.h - the provider chain of one encryption rule, byte-compatible with kube-apiserver.
 *
 * A chain is an ordered list of providers (identity, aescbc, aesgcm, secretbox, kms v1/v2),
 * each keyed providers holding an ordered key list. Write: first provider, first key.
 * Read: every provider whose prefix matches, in order (wire-format.md §2.3); `stale` is set when
 * the value was read by anything but the first provider/key.
 * Ownership: a chain owns its providers and their keys (guarded memory). Once built it is
 * immutable and may be used by any number of threads at once without locks; per-key cipher
 * state is prepared at build time (crypto_chain_add_*), never per value.
 * Errors never contain key bytes or plaintext; they name the provider and the reason.
 */
#ifndef ETCDSEAL_CRYPTO_CHAIN_H
#define ETCDSEAL_CRYPTO_CHAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/error.h"

enum crypto_provider_type {
    CRYPTO_PROVIDER_IDENTITY = 0,
    CRYPTO_PROVIDER_AESCBC,
    CRYPTO_PROVIDER_AESGCM,
    CRYPTO_PROVIDER_SECRETBOX,
    CRYPTO_PROVIDER_KMS_V1,
    CRYPTO_PROVIDER_KMS_V2,
};

/* One named key as configured (name verbatim, raw key bytes already base64-decoded). */
typedef struct crypto_key_spec {
    const char *name;
    const uint8_t *key;
    size_t key_len;
} crypto_key_spec;

typedef struct crypto_chain crypto_chain;

/* es_error codes set by this module. Decrypt errors: err->msg starts with kube-apiserver's exact
 * text (several errors as Go's aggregate "[a, b]", flattened and de-duplicated), followed by
 * " (" context naming the providers/keys tried ")". */
enum crypto_error_code {
    CRYPTO_ERR_CONFIG = 1,      /* bad provider/key at build time */
    CRYPTO_ERR_NO_MATCH = 2,    /* no provider prefix matched ("no matching prefix found") */
    CRYPTO_ERR_DECRYPT = 3,     /* a provider matched but could not read the value */
    CRYPTO_ERR_INTERNAL = 4,    /* out of memory, CSPRNG or cipher library failure */
    CRYPTO_ERR_WOULD_BLOCK = 5, /* a KMS call is needed first: see crypto_chain_await */
    CRYPTO_ERR_UNAVAILABLE =
        6, /* KMS plugin unavailable/unhealthy: writes refused (-> UNAVAILABLE) */
};

/* What a successful read reports. `prefix` points to static text such as
 * "k8s:enc:aesgcm:v1:" ("identity" for identity) for metrics labels. */
typedef struct crypto_read_info {
    bool stale;
    const char *prefix;
} crypto_read_info;

crypto_chain *crypto_chain_new(void);
void crypto_chain_free(crypto_chain *c);

/* Appends a provider. Keyed providers copy the key bytes into guarded memory and validate sizes
 * (aescbc/aesgcm: 16/24/32, secretbox: 32); n_keys >= 1. Returns 0 or -1 with err set. */
int crypto_chain_add_identity(crypto_chain *c, es_error *err);
int crypto_chain_add_keyed(crypto_chain *c, enum crypto_provider_type type,
                           const crypto_key_spec *keys, size_t n_keys, es_error *err);

size_t crypto_chain_provider_count(const crypto_chain *c);
enum crypto_provider_type crypto_chain_provider_type(const crypto_chain *c, size_t i);
const char *crypto_provider_type_name(enum crypto_provider_type t); /* "aesgcm", ... */

/* Encrypts `in` for etcd key `aad` with the first provider/key; appends the complete stored value
 * (prefix included) to `out`. Returns 0 or -1 (err set; nothing appended). */
int crypto_chain_encrypt(const crypto_chain *c, const uint8_t *aad, size_t aad_len,
                         const uint8_t *in, size_t in_len, buf_t *out, es_error *err);

/* Decrypts a stored value read from etcd key `aad`; appends the plaintext to `out`.
 * Returns 0 (info filled) or -1 (err names provider + reason; nothing appended). */
int crypto_chain_decrypt(const crypto_chain *c, const uint8_t *aad, size_t aad_len,
                         const uint8_t *in, size_t in_len, buf_t *out, crypto_read_info *info,
                         es_error *err);

/* ---- KMS providers (crypto/kms.h): non-blocking use ----
 * With a kms provider in the chain, crypto_chain_encrypt/decrypt may fail with
 * err->code == CRYPTO_ERR_WOULD_BLOCK (nothing appended): the DEK/seed is not known yet. The caller
 * then calls crypto_chain_await with the same input; it starts or joins the KMS work that value
 * needs and calls fn(arg) exactly once when that work is done (success or failure) - always later,
 * from the KMS thread, never from inside crypto_chain_await. The caller then repeats the same
 * encrypt/decrypt, which succeeds from cache or returns the final error (a value may need more than
 * one round when several kms providers match). Returns 0 (fn will run) or -1 (err set: nothing to
 * wait for, fn will not run). */
enum crypto_await_kind { CRYPTO_AWAIT_ENCRYPT = 0, CRYPTO_AWAIT_DECRYPT = 1 };
typedef void (*crypto_ready_fn)(void *arg);
int crypto_chain_await(const crypto_chain *c, enum crypto_await_kind kind, const uint8_t *in,
                       size_t in_len, crypto_ready_fn fn, void *arg, es_error *err);
/* Blocking forms for commands and tests (never on a proxy worker): try, await, retry (bounded). */
int crypto_chain_encrypt_blocking(const crypto_chain *c, const uint8_t *aad, size_t aad_len,
                                  const uint8_t *in, size_t in_len, buf_t *out, es_error *err);
int crypto_chain_decrypt_blocking(const crypto_chain *c, const uint8_t *aad, size_t aad_len,
                                  const uint8_t *in, size_t in_len, buf_t *out,
                                  crypto_read_info *info, es_error *err);
/* True when the chain holds a kms provider (its calls may return CRYPTO_ERR_WOULD_BLOCK). */
bool crypto_chain_has_kms(const crypto_chain *c);

/* Metrics label of the provider that writes: "k8s:enc:aesgcm:v1:" ... or "identity"; NULL for
 * an empty chain. */
const char *crypto_chain_write_prefix(const crypto_chain *c);

/* kube-apiserver's read check for resources no rule covers (identity encrypt-check): -1 with
 * "identity transformer tried to read encrypted data" when the value starts with "k8s:enc:". */
int crypto_identity_read_check(const uint8_t *in, size_t in_len, es_error *err);

/* Frees the calling thread's cached cipher contexts (they are freed at thread exit anyway);
 * the next crypto call on this thread re-creates them. */
void crypto_thread_cleanup(void);

#endif
