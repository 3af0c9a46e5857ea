/* provider.h - internal vtable of the keyed local providers (aescbc, aesgcm, secretbox).
 *
 * chain.c owns the key list and prefixes; a provider module only turns one key into prepared
 * per-key state (key_new, at chain build time) and seals/opens one body (the bytes after
 * `<provider prefix><key name>:`). seal writes exactly sealed_size(in_len) bytes to dst.
 * open writes at most in_len bytes of plaintext to dst and returns NULL, or returns a static
 * kube-apiserver error text (wire-format.md §3) after wiping whatever it wrote to dst.
 * State is immutable after key_new; seal/open may run on any number of threads at once.
 * Not part of the public API: only chain.c and the provider modules include this.
 */
#ifndef ETCDSEAL_CRYPTO_PROVIDER_H
#define ETCDSEAL_CRYPTO_PROVIDER_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "base/secret.h"
#include "crypto/chain.h"

typedef struct crypto_provider_ops {
    enum crypto_provider_type type;
    const char *name;       /* "aesgcm" */
    const char *prefix;     /* "k8s:enc:aesgcm:v1:" */
    const char *no_key_msg; /* kube-apiserver's key-level "no match" text */
    /* Validates the key and prepares per-key state; `key` outlives the state. */
    int (*key_new)(void **state, const secret_t *key, es_error *err);
    void (*key_free)(void *state);
    size_t (*sealed_size)(size_t in_len);
    /* Returns NULL or a static reason (CSPRNG or library failure). */
    const char *(*seal)(const void *state, const uint8_t *aad, size_t aad_len, const uint8_t *in,
                        size_t in_len, uint8_t *dst);
    const char *(*open)(const void *state, const uint8_t *aad, size_t aad_len, const uint8_t *in,
                        size_t in_len, uint8_t *dst, size_t *out_len);
} crypto_provider_ops;

extern const crypto_provider_ops crypto_provider_aescbc;
extern const crypto_provider_ops crypto_provider_aesgcm;
extern const crypto_provider_ops crypto_provider_secretbox;

/* kube-apiserver error texts shared by several providers. */
#define CRYPTO_MSG_SHORT "the stored data was shorter than the required size"
#define CRYPTO_MSG_RANDOM "the random number generator failed"
#define CRYPTO_MSG_CIPHER "the cipher library failed"

#endif
