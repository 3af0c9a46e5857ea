/* kms_object.c - KMS v2 EncryptedObject codec with kube-apiserver's leniency and validation.
 * See kms_object.h; reasons are kube-apiserver's texts where it has one.
 */
#include "crypto/kms_object.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

static const char *read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t x = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*p >= end)
            return "unexpected EOF";
        uint8_t b = *(*p)++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return NULL;
        }
    }
    return "proto: integer overflow";
}

static const char *read_len(const uint8_t **p, const uint8_t *end, kms_bytes *out)
{
    uint64_t n;
    const char *why = read_varint(p, end, &n);
    if (why)
        return why;
    if (n > (uint64_t)(end - *p))
        return "unexpected EOF";
    out->p = *p;
    out->len = (size_t)n;
    *p += n;
    return NULL;
}

/* Skips one field of wire type wt (the tag already read). depth bounds nested groups. */
static const char *skip_field(const uint8_t **p, const uint8_t *end, unsigned wt, int depth)
{
    uint64_t v;
    kms_bytes b;
    switch (wt) {
    case 0:
        return read_varint(p, end, &v);
    case 1:
        if (end - *p < 8)
            return "unexpected EOF";
        *p += 8;
        return NULL;
    case 2:
        return read_len(p, end, &b);
    case 5:
        if (end - *p < 4)
            return "unexpected EOF";
        *p += 4;
        return NULL;
    case 3:
        if (depth > 64)
            return "proto: too many nested groups";
        for (;;) {
            const char *why = read_varint(p, end, &v);
            if (why)
                return why;
            if ((v & 7) == 4)
                return NULL; /* end of this group */
            if ((v >> 3) == 0)
                return "proto: illegal tag 0";
            why = skip_field(p, end, (unsigned)(v & 7), depth + 1);
            if (why)
                return why;
        }
    case 4:
        return "proto: can't skip unknown wire type 4"; /* gogo's text for a stray end-group */
    default:
        return "proto: can't skip unknown wire type";
    }
}

static bool utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf)
            k = 1, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
            k = 2, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
            k = 3, cp = c & 0x07;
        else
            return false;
        if (n - i <= k)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += k + 1;
    }
    return true;
}

static const char *decode_entry(kms_object *o, kms_bytes entry)
{
    const uint8_t *p = entry.p, *end = entry.p + entry.len;
    kms_bytes key = {(const uint8_t *)"", 0}, val = {(const uint8_t *)"", 0};
    while (p < end) {
        uint64_t tag;
        const char *why = read_varint(&p, end, &tag);
        if (why)
            return why;
        unsigned field = (unsigned)(tag >> 3), wt = (unsigned)(tag & 7);
        if (tag >> 3 == 0)
            return "proto: illegal tag 0";
        if ((field == 1 || field == 2) && wt == 2) {
            kms_bytes b;
            if ((why = read_len(&p, end, &b)) != NULL)
                return why;
            if (field == 1) {
                if (!utf8_valid(b.p, b.len))
                    return "proto: invalid UTF-8 in an annotation key";
                key = b;
            } else {
                val = b;
            }
        } else if ((why = skip_field(&p, end, wt, 0)) != NULL) {
            return why;
        }
    }
    for (size_t i = 0; i < o->n_ann; i++)
        if (o->ann_key[i].len == key.len && memcmp(o->ann_key[i].p, key.p, key.len) == 0) {
            o->ann_val[i] = val;
            return NULL;
        }
    if (o->n_ann == KMS_OBJ_MAX_ANNOTATIONS)
        return "too many annotations";
    o->ann_key[o->n_ann] = key;
    o->ann_val[o->n_ann] = val;
    o->n_ann++;
    return NULL;
}

const char *kms_object_decode(kms_object *o, const uint8_t *in, size_t len)
{
    memset(o, 0, sizeof *o);
    static const uint8_t empty[1];
    o->data.p = o->key_id.p = o->edek.p = empty;
    const uint8_t *p = in, *end = in + len;
    while (p < end) {
        uint64_t tag;
        const char *why = read_varint(&p, end, &tag);
        if (why)
            return why;
        uint64_t field = tag >> 3;
        unsigned wt = (unsigned)(tag & 7);
        if (field == 0)
            return "proto: illegal tag 0";
        if (field == 4 && wt != 2)
            return "proto: wrong wireType for field Annotations";
        if ((field >= 1 && field <= 4 && wt == 2) || (field == 5 && wt == 0)) {
            if (field == 5) {
                uint64_t v;
                if ((why = read_varint(&p, end, &v)) != NULL)
                    return why;
                o->type = (int32_t)(uint32_t)v;
                continue;
            }
            kms_bytes b;
            if ((why = read_len(&p, end, &b)) != NULL)
                return why;
            if (field == 1)
                o->data = b;
            else if (field == 2) {
                if (!utf8_valid(b.p, b.len))
                    return "proto: invalid UTF-8 in keyID";
                o->key_id = b;
            } else if (field == 3)
                o->edek = b;
            else if ((why = decode_entry(o, b)) != NULL)
                return why;
            continue;
        }
        if ((why = skip_field(&p, end, wt, 0)) != NULL)
            return why;
    }
    return NULL;
}

/* apimachinery IsFullyQualifiedDomainName */
static bool is_fqdn(const uint8_t *s, size_t n)
{
    if (n > 0 && s[n - 1] == '.')
        n--;
    if (n == 0 || n > 253)
        return false;
    size_t labels = 0, i = 0;
    while (i <= n) {
        size_t start = i;
        while (i < n && s[i] != '.')
            i++;
        size_t l = i - start;
        if (l == 0 || l > 63)
            return false;
        for (size_t j = start; j < i; j++) {
            uint8_t c = s[j];
            bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
            if (!alnum && !(c == '-' && j != start && j != i - 1))
                return false;
        }
        labels++;
        i++; /* past '.' (or end) */
    }
    return labels >= 2;
}

const char *kms_annotations_validate(const kms_bytes *keys, const kms_bytes *vals, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_fqdn(keys[i].p, keys[i].len))
            return "annotations: Invalid value: should be a domain with at least two segments "
                   "separated by dots";
        total += keys[i].len + vals[i].len;
    }
    if (total > KMS_OBJ_MAX_ANNOTATION_BYTES)
        return "annotations: Too long: must have at most 32768 bytes";
    return NULL;
}

const char *kms_object_validate(const kms_object *o)
{
    if (o->type != KMS_MODE_AES_GCM_KEY && o->type != KMS_MODE_HKDF_SEED)
        return "unknown encryptedDEKSourceType";
    if (o->data.len == 0)
        return "encrypted data is empty";
    if (o->edek.len == 0)
        return "encryptedDEKSource is empty";
    if (o->edek.len > KMS_OBJ_MAX_EDEK)
        return "encryptedDEKSource is larger than 1024 bytes";
    if (o->key_id.len == 0)
        return "keyID is empty";
    if (o->key_id.len > KMS_OBJ_MAX_KEYID)
        return "keyID is larger than 1024 bytes";
    return kms_annotations_validate(o->ann_key, o->ann_val, o->n_ann);
}

static int put_varint(buf_t *out, uint64_t v)
{
    uint8_t tmp[10];
    size_t n = 0;
    do {
        tmp[n] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v)
            tmp[n] |= 0x80;
        n++;
    } while (v);
    return buf_append(out, tmp, n);
}

int kms_pb_put_bytes(buf_t *out, unsigned field, const uint8_t *p, size_t n)
{
    if (put_varint(out, (uint64_t)field << 3 | 2) < 0 || put_varint(out, n) < 0)
        return -1;
    return n ? buf_append(out, p, n) : 0;
}

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80)
        v >>= 7, n++;
    return n;
}

int kms_pb_put_entry(buf_t *out, unsigned field, kms_bytes key, kms_bytes val)
{
    size_t el = 1 + varint_len(key.len) + key.len + 1 + varint_len(val.len) + val.len;
    if (put_varint(out, (uint64_t)field << 3 | 2) < 0 || put_varint(out, el) < 0 ||
        kms_pb_put_bytes(out, 1, key.p, key.len) < 0 ||
        kms_pb_put_bytes(out, 2, val.p, val.len) < 0)
        return -1;
    return 0;
}

int kms_object_encode_data_header(buf_t *out, size_t len)
{
    if (put_varint(out, 1 << 3 | 2) < 0)
        return -1;
    return put_varint(out, len);
}

int kms_object_encode_tail(buf_t *out, const kms_object *o)
{
    if (o->key_id.len && kms_pb_put_bytes(out, 2, o->key_id.p, o->key_id.len) < 0)
        return -1;
    if (o->edek.len && kms_pb_put_bytes(out, 3, o->edek.p, o->edek.len) < 0)
        return -1;
    for (size_t i = 0; i < o->n_ann; i++)
        if (kms_pb_put_entry(out, 4, o->ann_key[i], o->ann_val[i]) < 0)
            return -1;
    if (o->type != 0 && (put_varint(out, 5 << 3) < 0 || put_varint(out, (uint64_t)o->type) < 0))
        return -1;
    return 0;
}

static int add_l16(EVP_MD_CTX *c, const uint8_t *p, size_t n)
{
    uint8_t h[2] = {(uint8_t)(n >> 8), (uint8_t)n};
    if (n > 0xffff)
        return -1;
    return EVP_DigestUpdate(c, h, 2) == 1 && (n == 0 || EVP_DigestUpdate(c, p, n) == 1) ? 0 : -1;
}

static int cmp_keys(const kms_bytes *a, const kms_bytes *b)
{
    size_t n = a->len < b->len ? a->len : b->len;
    int r = n ? memcmp(a->p, b->p, n) : 0;
    if (r)
        return r;
    return a->len < b->len ? -1 : a->len > b->len;
}

int kms_object_cache_key(const kms_object *o, uint8_t out[32])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (!c)
        return -1;
    uint32_t t = (uint32_t)o->type;
    uint8_t be[4] = {(uint8_t)(t >> 24), (uint8_t)(t >> 16), (uint8_t)(t >> 8), (uint8_t)t};
    int ok = EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1 && EVP_DigestUpdate(c, be, 4) == 1 &&
             add_l16(c, o->edek.p, o->edek.len) == 0 && add_l16(c, o->key_id.p, o->key_id.len) == 0;
    if (ok && o->n_ann) {
        uint32_t n = (uint32_t)o->n_ann;
        uint8_t bn[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
        ok = EVP_DigestUpdate(c, bn, 4) == 1;
        /* sorted key order: selection over the (small) annotation set */
        const kms_bytes *last = NULL;
        for (size_t done = 0; ok && done < o->n_ann; done++) {
            size_t best = o->n_ann;
            for (size_t i = 0; i < o->n_ann; i++) {
                if (last && cmp_keys(&o->ann_key[i], last) <= 0)
                    continue;
                if (best == o->n_ann || cmp_keys(&o->ann_key[i], &o->ann_key[best]) < 0)
                    best = i;
            }
            if (best == o->n_ann)
                break;
            ok = add_l16(c, o->ann_key[best].p, o->ann_key[best].len) == 0 &&
                 add_l16(c, o->ann_val[best].p, o->ann_val[best].len) == 0;
            last = &o->ann_key[best];
        }
    }
    unsigned int dl = 0;
    ok = ok && EVP_DigestFinal_ex(c, out, &dl) == 1 && dl == 32;
    EVP_MD_CTX_free(c);
    return ok ? 0 : -1;
}
