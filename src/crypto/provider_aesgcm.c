/* provider_aesgcm.c - kube-apiserver's aesgcm provider body: N(12) || AES-GCM(K, N, P, A) || tag.
 *
 * A = the full etcd key. Nonces are 12 random bytes per value (keys should be rotated before
 * ~2^32 writes, as aes.go notes). Read errors use Go's texts (aes.go `gcm`, crypto/cipher).
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include "crypto/nonce.h"

#include "crypto/evp_key.h"
#include "crypto/provider.h"

#define GCM_NONCE 12
#define GCM_TAG 16

#define MSG_AUTH "cipher: message authentication failed"

static int gcm_key_new(void **state, const secret_t *key, es_error *err)
{
    if (key->len != 16 && key->len != 24 && key->len != 32)
        return es_error_set(err, 1, "aesgcm: key must be 16, 24 or 32 bytes, got %zu", key->len);
    crypto_evp_key *k = calloc(1, sizeof *k);
    if (!k)
        return es_error_set(err, 4, "aesgcm: out of memory");
    if (crypto_evp_key_init(k, "GCM", key->bytes, key->len, false) < 0) {
        free(k);
        return es_error_set(err, 4, "aesgcm: OpenSSL could not prepare the AES-GCM key");
    }
    *state = k;
    return 0;
}

static void gcm_key_free(void *state)
{
    if (!state)
        return;
    crypto_evp_key_release(state);
    free(state);
}

static size_t gcm_sealed_size(size_t in_len)
{
    return GCM_NONCE + in_len + GCM_TAG;
}

static const char *gcm_seal(const void *state, const uint8_t *aad, size_t aad_len,
                            const uint8_t *in, size_t in_len, uint8_t *dst)
{
    if (crypto_nonce(dst, GCM_NONCE) < 0)
        return CRYPTO_MSG_RANDOM;
    EVP_CIPHER_CTX *c = crypto_evp_working(state, 1, dst);
    size_t n = 0;
    int fin = 0;
    if (!c || crypto_evp_update(c, NULL, aad, aad_len, NULL) < 0 ||
        crypto_evp_update(c, dst + GCM_NONCE, in, in_len, &n) < 0 || n != in_len ||
        !EVP_EncryptFinal_ex(c, dst + GCM_NONCE + n, &fin) || fin != 0 ||
        !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, GCM_TAG, dst + GCM_NONCE + in_len))
        return CRYPTO_MSG_CIPHER;
    return NULL;
}

static const char *gcm_open(const void *state, const uint8_t *aad, size_t aad_len,
                            const uint8_t *in, size_t in_len, uint8_t *dst, size_t *out_len)
{
    if (in_len < GCM_NONCE)
        return CRYPTO_MSG_SHORT;
    if (in_len < GCM_NONCE + GCM_TAG)
        return MSG_AUTH; /* Go's Open: ciphertext shorter than the tag */
    size_t clen = in_len - GCM_NONCE - GCM_TAG;
    const uint8_t *ct = in + GCM_NONCE;
    uint8_t tag[GCM_TAG];
    memcpy(tag, ct + clen, GCM_TAG);
    EVP_CIPHER_CTX *c = crypto_evp_working(state, 0, in);
    if (!c)
        return CRYPTO_MSG_CIPHER;
    size_t n = 0;
    int fin = 0;
    if (crypto_evp_update(c, NULL, aad, aad_len, NULL) < 0 ||
        crypto_evp_update(c, dst, ct, clen, &n) < 0 || n != clen ||
        !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, GCM_TAG, tag)) {
        OPENSSL_cleanse(dst, clen);
        return CRYPTO_MSG_CIPHER;
    }
    if (EVP_DecryptFinal_ex(c, dst + n, &fin) <= 0) {
        OPENSSL_cleanse(dst, clen);
        return MSG_AUTH;
    }
    *out_len = clen;
    return NULL;
}

const crypto_provider_ops crypto_provider_aesgcm = {
    .type = CRYPTO_PROVIDER_AESGCM,
    .name = "aesgcm",
    .prefix = "k8s:enc:aesgcm:v1:",
    .no_key_msg = "no matching key was found for the provided AES transformer",
    .key_new = gcm_key_new,
    .key_free = gcm_key_free,
    .sealed_size = gcm_sealed_size,
    .seal = gcm_seal,
    .open = gcm_open,
};
