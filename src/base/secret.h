/* secret.h - key material in libsodium guarded memory.
 *
 * A secret_t holds `len` bytes in sodium_malloc'ed pages (guard pages, mlock'ed, canary) that
 * are wiped by secret_free. Call sodium_init() (secret_init) once before use. The bytes are
 * readable by any thread; never copy them into ordinary heap memory, logs or error messages.
 */
#ifndef ETCDSEAL_BASE_SECRET_H
#define ETCDSEAL_BASE_SECRET_H

#include <stddef.h>
#include <stdint.h>

typedef struct secret {
    uint8_t *bytes; /* sodium_malloc'ed; NULL when empty */
    size_t len;
} secret_t;

/* sodium_init(); returns 0 or -1. Idempotent. */
int secret_init(void);
/* Allocates guarded memory for len bytes and copies src (src may be NULL: zero-filled).
 * Returns NULL on allocation failure. */
secret_t *secret_new(const uint8_t *src, size_t len);
/* Decodes standard base64 (with padding, as kube-apiserver's config) into a new secret.
 * Returns NULL when the text is not valid base64 or on allocation failure. */
secret_t *secret_from_base64(const char *b64, size_t b64_len);
void secret_free(secret_t *s);

#endif
