/* provider_aescbc.c - kube-apiserver's aescbc provider body: IV(16) || AES-CBC(K, IV, PKCS7(P)).
 *
 * Read checks follow aes.go `cbc` exactly, including its quirk that a padding byte larger than a
 * block is accepted when it fits the body; an IV-only value (which panics kube-apiserver) is an
 * error here. The AAD is not used (a value copied to another etcd key still decrypts).
 */
#include <stdlib.h>

#include <openssl/crypto.h>
#include "crypto/nonce.h"

#include "crypto/evp_key.h"
#include "crypto/provider.h"

#define CBC_BLOCK 16

#define MSG_NOT_BLOCKS "the stored data is not a multiple of the block size"
#define MSG_PKCS7_DATA "invalid PKCS7 data (empty or not padded)"
#define MSG_PKCS7_PAD "invalid padding on input"

static int cbc_key_new(void **state, const secret_t *key, es_error *err)
{
    if (key->len != 16 && key->len != 24 && key->len != 32)
        return es_error_set(err, 1, "aescbc: key must be 16, 24 or 32 bytes, got %zu", key->len);
    crypto_evp_key *k = calloc(1, sizeof *k);
    if (!k)
        return es_error_set(err, 4, "aescbc: out of memory");
    if (crypto_evp_key_init(k, "CBC", key->bytes, key->len, true) < 0) {
        free(k);
        return es_error_set(err, 4, "aescbc: OpenSSL could not prepare the AES-CBC key");
    }
    *state = k;
    return 0;
}

static void cbc_key_free(void *state)
{
    if (!state)
        return;
    crypto_evp_key_release(state);
    free(state);
}

static size_t cbc_sealed_size(size_t in_len)
{
    return CBC_BLOCK + (in_len / CBC_BLOCK + 1) * CBC_BLOCK;
}

static const char *cbc_seal(const void *state, const uint8_t *aad, size_t aad_len,
                            const uint8_t *in, size_t in_len, uint8_t *dst)
{
    (void)aad;
    (void)aad_len;
    if (crypto_nonce(dst, CBC_BLOCK) < 0)
        return CRYPTO_MSG_RANDOM;
    EVP_CIPHER_CTX *c = crypto_evp_working(state, 1, dst);
    size_t n = 0;
    int fin = 0;
    if (!c || crypto_evp_update(c, dst + CBC_BLOCK, in, in_len, &n) < 0 ||
        !EVP_EncryptFinal_ex(c, dst + CBC_BLOCK + n, &fin) ||
        n + (size_t)fin != cbc_sealed_size(in_len) - CBC_BLOCK)
        return CRYPTO_MSG_CIPHER;
    return NULL;
}

static const char *cbc_open(const void *state, const uint8_t *aad, size_t aad_len,
                            const uint8_t *in, size_t in_len, uint8_t *dst, size_t *out_len)
{
    (void)aad;
    (void)aad_len;
    if (in_len < CBC_BLOCK)
        return CRYPTO_MSG_SHORT;
    const uint8_t *iv = in;
    in += CBC_BLOCK;
    in_len -= CBC_BLOCK;
    if (in_len % CBC_BLOCK != 0)
        return MSG_NOT_BLOCKS;
    if (in_len == 0)
        return MSG_PKCS7_DATA; /* kube-apiserver panics here (index -1) */
    EVP_CIPHER_CTX *c = crypto_evp_working(state, 0, iv);
    size_t n = 0;
    if (!c || crypto_evp_update(c, dst, in, in_len, &n) < 0 || n != in_len) {
        OPENSSL_cleanse(dst, in_len);
        return CRYPTO_MSG_CIPHER;
    }
    uint8_t pad = dst[in_len - 1];
    const char *why = NULL;
    if (pad == 0 || pad > in_len) {
        why = MSG_PKCS7_DATA;
    } else {
        for (size_t i = in_len - pad; i < in_len; i++)
            if (dst[i] != pad) {
                why = MSG_PKCS7_PAD;
                break;
            }
    }
    if (why) {
        OPENSSL_cleanse(dst, in_len);
        return why;
    }
    OPENSSL_cleanse(dst + in_len - pad, pad);
    *out_len = in_len - pad;
    return NULL;
}

const crypto_provider_ops crypto_provider_aescbc = {
    .type = CRYPTO_PROVIDER_AESCBC,
    .name = "aescbc",
    .prefix = "k8s:enc:aescbc:v1:",
    .no_key_msg = "no matching key was found for the provided AES transformer",
    .key_new = cbc_key_new,
    .key_free = cbc_key_free,
    .sealed_size = cbc_sealed_size,
    .seal = cbc_seal,
    .open = cbc_open,
};
