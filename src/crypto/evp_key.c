/* evp_key.c - AES keys prepared once, per-thread working contexts (see evp_key.h).
 *
 * Each thread keeps one working EVP_CIPHER_CTX per direction plus the id of the key it holds.
 * The common case (same key as the thread's previous value) costs one EVP re-init with a new IV;
 * switching keys costs one EVP_CIPHER_CTX_copy from the key's template. Thread slots are freed by
 * a pthread key destructor at thread exit, or explicitly by crypto_thread_cleanup().
 */
#include "crypto/evp_key.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "crypto/chain.h"

typedef struct evp_slots {
    EVP_CIPHER_CTX *ctx[2];
    uint64_t id[2]; /* 0 = empty */
} evp_slots;

static atomic_uint_fast64_t next_key_id = 1;
static pthread_once_t slots_once = PTHREAD_ONCE_INIT;
static pthread_key_t slots_key;
static bool slots_key_ok;
static _Thread_local evp_slots *tl_slots;

static void slots_free(void *p)
{
    evp_slots *s = p;
    if (!s)
        return;
    for (int i = 0; i < 2; i++)
        EVP_CIPHER_CTX_free(s->ctx[i]); /* cleanses the copied key schedule */
    free(s);
    if (tl_slots == s)
        tl_slots = NULL;
}

static void slots_key_create(void)
{
    slots_key_ok = pthread_key_create(&slots_key, slots_free) == 0;
}

static evp_slots *slots_get(void)
{
    if (tl_slots)
        return tl_slots;
    pthread_once(&slots_once, slots_key_create);
    evp_slots *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    if (slots_key_ok)
        pthread_setspecific(slots_key, s);
    tl_slots = s;
    return s;
}

void crypto_thread_cleanup(void)
{
    evp_slots *s = tl_slots;
    if (!s)
        return;
    pthread_once(&slots_once, slots_key_create);
    if (slots_key_ok)
        pthread_setspecific(slots_key, NULL);
    slots_free(s);
}

int crypto_evp_key_init(crypto_evp_key *k, const char *mode, const uint8_t *key, size_t key_len,
                        bool padding)
{
    char name[32];
    k->cipher = NULL;
    k->tmpl[0] = k->tmpl[1] = NULL;
    if (key_len != 16 && key_len != 24 && key_len != 32)
        return -1;
    snprintf(name, sizeof name, "AES-%zu-%s", key_len * 8, mode);
    k->cipher = EVP_CIPHER_fetch(NULL, name, NULL);
    if (!k->cipher)
        goto fail;
    for (int enc = 0; enc < 2; enc++) {
        EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
        k->tmpl[enc] = c;
        if (!c || !EVP_CipherInit_ex2(c, k->cipher, key, NULL, enc, NULL))
            goto fail;
        if (EVP_CIPHER_CTX_set_padding(c, enc && padding) != 1)
            goto fail;
    }
    k->id = atomic_fetch_add(&next_key_id, 1);
    return 0;
fail:
    crypto_evp_key_release(k);
    return -1;
}

void crypto_evp_key_release(crypto_evp_key *k)
{
    for (int i = 0; i < 2; i++) {
        EVP_CIPHER_CTX_free(k->tmpl[i]);
        k->tmpl[i] = NULL;
    }
    EVP_CIPHER_free(k->cipher);
    k->cipher = NULL;
    k->id = 0;
}

EVP_CIPHER_CTX *crypto_evp_working(const crypto_evp_key *k, int enc, const uint8_t *iv)
{
    evp_slots *s = slots_get();
    if (!s)
        return NULL;
    enc = enc ? 1 : 0;
    if (!s->ctx[enc]) {
        s->ctx[enc] = EVP_CIPHER_CTX_new();
        if (!s->ctx[enc])
            return NULL;
    }
    EVP_CIPHER_CTX *c = s->ctx[enc];
    if (s->id[enc] != k->id) {
        s->id[enc] = 0;
        if (!EVP_CIPHER_CTX_copy(c, k->tmpl[enc]))
            return NULL;
        s->id[enc] = k->id;
    }
    if (!EVP_CipherInit_ex(c, NULL, NULL, NULL, iv, enc)) {
        s->id[enc] = 0; /* unknown state: re-copy next time */
        return NULL;
    }
    return c;
}

int crypto_evp_update(EVP_CIPHER_CTX *ctx, uint8_t *out, const uint8_t *in, size_t len,
                      size_t *written)
{
    size_t total = 0;
    while (len > 0) {
        int n = len > (size_t)(INT_MAX - 32) ? INT_MAX - 32 : (int)len;
        int outl = 0;
        if (!EVP_CipherUpdate(ctx, out, &outl, in, n))
            return -1;
        if (out)
            out += outl;
        total += (size_t)outl;
        in += n;
        len -= (size_t)n;
    }
    if (written)
        *written = total;
    return 0;
}
