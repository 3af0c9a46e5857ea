/* encryption.h - the loaded encryption policy: etcd key -> provider chain (public API).
 *
 * policy_encryption_load parses + validates an EncryptionConfiguration (encryption_config.h),
 * builds one crypto_chain per distinct resource selector (providers of entries naming the same
 * selector concatenated in file order), and the key map (key_map.h; lookup order documented in
 * docs/encryption-config.md). Keys go from the YAML into guarded memory, then into the chains;
 * the parsed copies are wiped once the chains are built. A configuration whose chain needs a
 * kms provider fails to load (KMS support comes later) with the rule and provider named.
 * The object is immutable after load and reference-counted (atomic): share it between threads,
 * swap it on reload; the last unref frees chains and keys. chain_for_key does no allocation.
 */
#ifndef ETCDSEAL_POLICY_ENCRYPTION_H
#define ETCDSEAL_POLICY_ENCRYPTION_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "crypto/chain.h"
#include "policy/key_map.h"

typedef struct policy_encryption policy_encryption; /* tag matches src/proxy/transform.h */

#define POLICY_DEFAULT_STORAGE_PREFIX "/registry"

/* storage_prefix NULL = "/registry". Returns 0 (*out has one reference) or -1 with err. */
int policy_encryption_load(const char *path, const char *storage_prefix, policy_encryption **out,
                           es_error *err);
/* Same from bytes in memory (`name` appears in messages): tests and fuzzing. */
int policy_encryption_load_buffer(const char *name, const char *data, size_t len,
                                  const char *storage_prefix, policy_encryption **out,
                                  es_error *err);

policy_encryption *policy_encryption_ref(policy_encryption *p);
void policy_encryption_unref(policy_encryption *p); /* NULL-safe */

/* The chain that protects `key`, or NULL when no rule covers it (identity pass-through). */
const crypto_chain *policy_encryption_chain_for_key(const policy_encryption *p, const uint8_t *key,
                                                    size_t key_len);

/* Descriptions for check-config / verify (never key bytes). */
size_t policy_encryption_rule_count(const policy_encryption *p);
const policy_rule_view *policy_encryption_rule(const policy_encryption *p, size_t i);
const policy_keymap *policy_encryption_keymap(const policy_encryption *p);
const char *policy_encryption_storage_prefix(const policy_encryption *p);

#endif
