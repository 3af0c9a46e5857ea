/* evp_key.h - one AES key prepared once for OpenSSL 3 EVP, used per value without re-keying.
 *
 * crypto_evp_key_init fetches the EVP_CIPHER and keeps one template EVP_CIPHER_CTX per direction
 * holding the key schedule. crypto_evp_working returns the calling thread's working context for
 * that direction, ready for a new value with `iv`: when the thread last used the same key it is
 * only re-IV'd, otherwise the template is copied in (no key schedule per value, no locks).
 * Working contexts belong to the thread and are freed at thread exit or by
 * crypto_thread_cleanup(); templates are cleansed and freed by crypto_evp_key_release.
 */
#ifndef ETCDSEAL_CRYPTO_EVP_KEY_H
#define ETCDSEAL_CRYPTO_EVP_KEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

typedef struct crypto_evp_key {
    uint64_t id; /* process-unique, never reused: identifies the key in thread slots */
    EVP_CIPHER *cipher;
    EVP_CIPHER_CTX *tmpl[2]; /* [0] decrypt, [1] encrypt */
} crypto_evp_key;

/* `mode` is "CBC" or "GCM"; key_len selects AES-128/192/256. padding applies to CBC encrypt
 * only (decrypt never pads: chain code checks PKCS#7 itself). Returns 0 or -1. */
int crypto_evp_key_init(crypto_evp_key *k, const char *mode, const uint8_t *key, size_t key_len,
                        bool padding);
void crypto_evp_key_release(crypto_evp_key *k);
/* enc: 1 encrypt, 0 decrypt. Returns NULL on library failure. */
EVP_CIPHER_CTX *crypto_evp_working(const crypto_evp_key *k, int enc, const uint8_t *iv);
/* EVP_CipherUpdate for any length (chunks below INT_MAX); out may be NULL for AAD; *written
 * (may be NULL) gets the bytes output. Returns 0 or -1. */
int crypto_evp_update(EVP_CIPHER_CTX *ctx, uint8_t *out, const uint8_t *in, size_t len,
                      size_t *written);

#endif
