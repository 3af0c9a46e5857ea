/* nonce.c - per-thread buffered CSPRNG output for nonces (see nonce.h). */
#include "crypto/nonce.h"

#include <pthread.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#define NONCE_POOL 1024

static _Thread_local uint8_t tl_pool[NONCE_POOL];
static _Thread_local size_t tl_left; /* unused bytes at the end of tl_pool */
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void forget_pool(void)
{
    /* runs in the child, on the only thread left: its inherited bytes are the parent's too */
    OPENSSL_cleanse(tl_pool, sizeof tl_pool);
    tl_left = 0;
}

static void register_fork_handler(void)
{
    pthread_atfork(NULL, NULL, forget_pool);
}

int crypto_nonce(uint8_t *dst, size_t n)
{
    if (n > NONCE_POOL / 4)
        return RAND_bytes(dst, (int)n) == 1 ? 0 : -1;
    if (tl_left < n) {
        pthread_once(&fork_once, register_fork_handler);
        if (RAND_bytes(tl_pool, NONCE_POOL) != 1) {
            tl_left = 0;
            return -1;
        }
        tl_left = NONCE_POOL;
    }
    uint8_t *src = tl_pool + NONCE_POOL - tl_left;
    memcpy(dst, src, n);
    memset(src, 0, n); /* handed out once */
    tl_left -= n;
    return 0;
}
