/* secret.c - guarded key memory (see secret.h). */
#include "base/secret.h"

#include <string.h>

#include <sodium.h>

int secret_init(void)
{
    return sodium_init() < 0 ? -1 : 0;
}

secret_t *secret_new(const uint8_t *src, size_t len)
{
    secret_t *s = sodium_malloc(sizeof *s);
    if (!s)
        return NULL;
    s->len = len;
    s->bytes = sodium_malloc(len ? len : 1);
    if (!s->bytes) {
        sodium_free(s);
        return NULL;
    }
    if (src && len)
        memcpy(s->bytes, src, len);
    else
        sodium_memzero(s->bytes, len ? len : 1);
    return s;
}

secret_t *secret_from_base64(const char *b64, size_t b64_len)
{
    size_t max = b64_len / 4 * 3 + 3;
    uint8_t *tmp = sodium_malloc(max ? max : 1);
    if (!tmp)
        return NULL;
    size_t out_len = 0;
    const char *end = NULL;
    secret_t *s = NULL;
    if (sodium_base642bin(tmp, max, b64, b64_len, NULL, &out_len, &end,
                          sodium_base64_VARIANT_ORIGINAL) == 0 &&
        end == b64 + b64_len)
        s = secret_new(tmp, out_len);
    sodium_free(tmp); /* sodium_free wipes */
    return s;
}

void secret_free(secret_t *s)
{
    if (!s)
        return;
    sodium_free(s->bytes); /* zeroes before unmapping */
    sodium_free(s);
}

