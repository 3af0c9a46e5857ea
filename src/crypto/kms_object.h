/* kms_object.h - KMS v2 EncryptedObject: decode (zero-copy), validate, encode, cache key.
 *
 * Decoding follows the gogo/protobuf table unmarshaler kube-apiserver 1.31 uses
 * (wire-format.md §3.7): fields in any order, last occurrence wins, map entries merge, unknown
 * fields and known fields with an unexpected wire type skipped (groups to their end), enum
 * truncated to int32; errors on field 0, truncation, wire types 6/7, a stray end-group, field 4
 * with a wire type other than 2, invalid UTF-8 in keyID or an annotation key.
 * Validation is ValidateEncryptedObject (type, sizes, FQDN annotation keys, 32 KiB total).
 * Decoded fields point into the input buffer; nothing is allocated. Pure functions, any thread.
 */
#ifndef ETCDSEAL_CRYPTO_KMS_OBJECT_H
#define ETCDSEAL_CRYPTO_KMS_OBJECT_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

#define KMS_OBJ_MAX_ANNOTATIONS 64
#define KMS_OBJ_MAX_EDEK 1024
#define KMS_OBJ_MAX_KEYID 1024
#define KMS_OBJ_MAX_ANNOTATION_BYTES 32768
#define KMS_MODE_AES_GCM_KEY 0
#define KMS_MODE_HKDF_SEED 1

typedef struct kms_bytes {
    const uint8_t *p;
    size_t len;
} kms_bytes;

typedef struct kms_object {
    kms_bytes data;   /* encryptedData (1) */
    kms_bytes key_id; /* keyID (2) */
    kms_bytes edek;   /* encryptedDEKSource (3) */
    size_t n_ann;     /* annotations (4), unique keys, in order of first appearance */
    kms_bytes ann_key[KMS_OBJ_MAX_ANNOTATIONS];
    kms_bytes ann_val[KMS_OBJ_MAX_ANNOTATIONS];
    int64_t type; /* encryptedDEKSourceType (5), as int32 */
} kms_object;

/* Returns NULL or a static reason. */
const char *kms_object_decode(kms_object *o, const uint8_t *in, size_t len);
/* ValidateEncryptedObject; returns NULL or a static reason. */
const char *kms_object_validate(const kms_object *o);
/* Validates annotations alone (plugin Encrypt responses). */
const char *kms_annotations_validate(const kms_bytes *keys, const kms_bytes *vals, size_t n);
/* Appends fields 2..5 (keyID, encryptedDEKSource, annotations, type when != 0): the part of
 * every value written under one write state. Returns 0 or -1 (no memory). */
int kms_object_encode_tail(buf_t *out, const kms_object *o);
/* Appends field 1 header (tag + length) for encryptedData of `len` bytes. */
int kms_object_encode_data_header(buf_t *out, size_t len);
/* Protobuf writers for the plugin requests: a bytes/string field, a map<string,bytes> entry. */
int kms_pb_put_bytes(buf_t *out, unsigned field, const uint8_t *p, size_t n);
int kms_pb_put_entry(buf_t *out, unsigned field, kms_bytes key, kms_bytes val);
/* generateCacheKey then SHA-256: 32 bytes. Returns 0 or -1. */
int kms_object_cache_key(const kms_object *o, uint8_t out[32]);

#endif
