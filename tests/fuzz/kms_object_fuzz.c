/* kms_object_fuzz.c - libFuzzer target over the KMS v2 EncryptedObject decoder/validator.
 * Invariants: decode never reads out of bounds; a decoded+validated object re-encodes (tail) and
 * its cache key is computable; decoded fields point inside the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "crypto/kms_object.h"

static int inside(const uint8_t *in, size_t len, kms_bytes b)
{
    return b.len == 0 || (b.p >= in && b.p + b.len <= in + len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kms_object o;
    if (kms_object_decode(&o, data, size) != NULL)
        return 0;
    if (!inside(data, size, o.data) || !inside(data, size, o.key_id) || !inside(data, size, o.edek))
        abort();
    for (size_t i = 0; i < o.n_ann; i++)
        if (!inside(data, size, o.ann_key[i]) || !inside(data, size, o.ann_val[i]))
            abort();
    if (kms_object_validate(&o) != NULL)
        return 0;
    buf_t out = BUF_INIT;
    uint8_t d[32];
    if (kms_object_encode_data_header(&out, o.data.len) != 0 ||
        buf_append(&out, o.data.p, o.data.len) != 0 || kms_object_encode_tail(&out, &o) != 0 ||
        kms_object_cache_key(&o, d) != 0)
        abort();
    kms_object o2; /* the re-encoding reads back to the same fields */
    if (kms_object_decode(&o2, out.data, out.len) != NULL || o2.data.len != o.data.len ||
        o2.key_id.len != o.key_id.len || o2.edek.len != o.edek.len || o2.n_ann != o.n_ann ||
        o2.type != o.type)
        abort();
    uint8_t d2[32];
    if (kms_object_cache_key(&o2, d2) != 0 || memcmp(d, d2, 32) != 0)
        abort();
    buf_free(&out);
    return 0;
}
