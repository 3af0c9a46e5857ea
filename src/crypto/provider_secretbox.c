/* provider_secretbox.c - kube-apiserver's secretbox provider body: N(24) || tag(16) || XSalsa20.
 *
 * The layout after the nonce is libsodium's crypto_secretbox_easy output, identical to Go's
 * nacl/secretbox.Seal. The key stays in the chain's guarded memory; no per-key state beyond a
 * pointer to it. The AAD is not used. Error texts follow secretbox.go (including its "sic").
 */
#include "crypto/nonce.h"
#include <sodium.h>

#include "crypto/provider.h"

#define SB_NONCE crypto_secretbox_NONCEBYTES
#define SB_TAG crypto_secretbox_MACBYTES

#define MSG_OPEN "output array was not large enough for encryption"

static int sb_key_new(void **state, const secret_t *key, es_error *err)
{
    if (key->len != crypto_secretbox_KEYBYTES)
        return es_error_set(err, 1, "secretbox: key must be %d bytes, got %zu",
                            (int)crypto_secretbox_KEYBYTES, key->len);
    *state = (void *)key;
    return 0;
}

static void sb_key_free(void *state)
{
    (void)state; /* the key belongs to the chain */
}

static size_t sb_sealed_size(size_t in_len)
{
    return SB_NONCE + SB_TAG + in_len;
}

static const char *sb_seal(const void *state, const uint8_t *aad, size_t aad_len, const uint8_t *in,
                           size_t in_len, uint8_t *dst)
{
    const secret_t *key = state;
    (void)aad;
    (void)aad_len;
    if (crypto_nonce(dst, SB_NONCE) < 0)
        return CRYPTO_MSG_RANDOM;
    if (crypto_secretbox_easy(dst + SB_NONCE, in, in_len, dst, key->bytes) != 0)
        return CRYPTO_MSG_CIPHER;
    return NULL;
}

static const char *sb_open(const void *state, const uint8_t *aad, size_t aad_len, const uint8_t *in,
                           size_t in_len, uint8_t *dst, size_t *out_len)
{
    const secret_t *key = state;
    (void)aad;
    (void)aad_len;
    if (in_len < SB_NONCE + SB_TAG)
        return CRYPTO_MSG_SHORT;
    if (crypto_secretbox_open_easy(dst, in + SB_NONCE, in_len - SB_NONCE, in, key->bytes) != 0)
        return MSG_OPEN; /* libsodium writes nothing when the tag does not verify */
    *out_len = in_len - SB_NONCE - SB_TAG;
    return NULL;
}

const crypto_provider_ops crypto_provider_secretbox = {
    .type = CRYPTO_PROVIDER_SECRETBOX,
    .name = "secretbox",
    .prefix = "k8s:enc:secretbox:v1:",
    .no_key_msg = "no matching key was found for the provided Secretbox transformer",
    .key_new = sb_key_new,
    .key_free = sb_key_free,
    .sealed_size = sb_sealed_size,
    .seal = sb_seal,
    .open = sb_open,
};
