/* chain_read_fuzz.c - arbitrary stored values through provider chains (src/crypto/chain.c).
 *
 * Input: byte 0 selects one of the chain layouts below (the rules of the Kubernetes vectors'
 * EncryptionConfiguration, local providers only, with the same public test keys, so the seed
 * corpus holds real values); byte 1 = AAD length; then the AAD (etcd key); the rest is the value.
 * Checks: a failed read appends nothing and names a reason; a successful read re-encrypts and
 * reads back to the same plaintext. Chains are built once and shared (as in the proxy).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "crypto/chain.h"

typedef struct fkey {
    const char *name, *b64;
} fkey;

typedef struct fprov {
    enum crypto_provider_type t;
    fkey keys[2];
} fprov;

typedef struct flayout {
    size_t n;
    fprov p[3];
} flayout;

#define ID                                                                                         \
    {                                                                                              \
        CRYPTO_PROVIDER_IDENTITY,                                                                  \
        {                                                                                          \
            {                                                                                      \
                NULL, NULL                                                                         \
            }                                                                                      \
        }                                                                                          \
    }
static const flayout layouts[] = {
    /* secrets: aescbc(2 keys), secretbox, identity */
    {3,
     {{CRYPTO_PROVIDER_AESCBC,
       {{"cbc-key-2", "WWsOx8Jd3dA92HCcUup79VX+Lm1Xk9de0POCEIcHv/g="},
        {"cbc-key-1", "I3UNn+IG5ih4PIag/9a6lshwyxMi7R+wmGNaeiAaEVo="}}},
      {CRYPTO_PROVIDER_SECRETBOX, {{"sb-legacy", "7Xuh7MGouFrlCMfrO/Z+/FkQzh8jtHByum+xNfe3/iM="}}},
      ID}},
    /* configmaps: two aesgcm providers sharing a prefix */
    {2,
     {{CRYPTO_PROVIDER_AESGCM, {{"gcm16", "+VITNDtjeWZZw3tBNxQXRQ=="}}},
      {CRYPTO_PROVIDER_AESGCM, {{"gcm32-old", "o9RIBOLQfwvtWGD7h7GMDe3uD4h02zPVjZ7IiBy0s4A="}}}}},
    /* custom resource: secretbox(2 keys) */
    {1,
     {{CRYPTO_PROVIDER_SECRETBOX,
       {{"sb-1", "wDoVXWWYvYctlqnhtnOgX9x1/zfDWChzGt+NQJKiAGc="},
        {"sb-0", "zY28OOnXLZoHovQnBc2QcSZucydArHjgO5d6GTJO+Fw="}}}}},
    /* *.apps */
    {1, {{CRYPTO_PROVIDER_AESGCM, {{"gcm-apps", "DyCmavhHrpPgV0QQgZzvWsA4x6yr6aAarjOPoFRHEBM="}}}}},
    /* *. (local part): aescbc with a 16-byte key */
    {1, {{CRYPTO_PROVIDER_AESCBC, {{"cbc-core-16", "Afaat/3HE/ZmMpwpqAlKjQ=="}}}}},
    /* *.*: identity first */
    {2,
     {ID,
      {CRYPTO_PROVIDER_AESGCM, {{"gcm-all-old", "Nh7ussyxcmp/KGZgcaYRE7o6A45SNF0VvcrkYdRlEWU="}}}}},
};
#define N_LAYOUTS (sizeof layouts / sizeof layouts[0])

static crypto_chain *chains[N_LAYOUTS];

static crypto_chain *build(const flayout *l)
{
    crypto_chain *c = crypto_chain_new();
    es_error err;
    for (size_t i = 0; c && i < l->n; i++) {
        const fprov *p = &l->p[i];
        if (p->t == CRYPTO_PROVIDER_IDENTITY) {
            if (crypto_chain_add_identity(c, &err) < 0)
                abort();
            continue;
        }
        crypto_key_spec ks[2];
        uint8_t raw[2][32];
        size_t n = 0;
        for (; n < 2 && p->keys[n].name; n++) {
            size_t len = 0;
            if (sodium_base642bin(raw[n], sizeof raw[n], p->keys[n].b64, strlen(p->keys[n].b64),
                                  NULL, &len, NULL, sodium_base64_VARIANT_ORIGINAL) != 0)
                abort();
            ks[n] = (crypto_key_spec){p->keys[n].name, raw[n], len};
        }
        if (crypto_chain_add_keyed(c, p->t, ks, n, &err) < 0)
            abort();
        sodium_memzero(raw, sizeof raw);
    }
    return c;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (sodium_init() < 0)
        abort();
    for (size_t i = 0; i < N_LAYOUTS; i++)
        if (!(chains[i] = build(&layouts[i])))
            abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    const crypto_chain *c = chains[data[0] % N_LAYOUTS];
    size_t aad_len = data[1];
    if (aad_len > size - 2)
        aad_len = size - 2;
    const uint8_t *aad = data + 2, *val = aad + aad_len;
    size_t val_len = size - 2 - aad_len;
    buf_t out = BUF_INIT, enc = BUF_INIT, back = BUF_INIT;
    es_error err = {0, ""};
    crypto_read_info info = {false, NULL};
    if (crypto_chain_decrypt(c, aad, aad_len, val, val_len, &out, &info, &err) < 0) {
        if (out.len != 0 || err.msg[0] == '\0' || err.code == 0)
            abort();
    } else if (crypto_chain_provider_type(c, 0) == CRYPTO_PROVIDER_IDENTITY &&
               crypto_identity_read_check(out.data, out.len, NULL) < 0) {
        /* identity-first chain: a plaintext starting with k8s:enc: is stored as is and then
         * refused on read, exactly as kube-apiserver does; no round trip to check */
    } else {
        if (!info.prefix || out.len > val_len)
            abort();
        if (crypto_chain_encrypt(c, aad, aad_len, out.data, out.len, &enc, &err) < 0 ||
            crypto_chain_decrypt(c, aad, aad_len, enc.data, enc.len, &back, &info, &err) < 0 ||
            back.len != out.len || (out.len && memcmp(back.data, out.data, out.len) != 0) ||
            info.stale)
            abort();
    }
    buf_free(&out);
    buf_free(&enc);
    buf_free(&back);
    return 0;
}
