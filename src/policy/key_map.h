/* key_map.h - etcd key -> encryption rule, built once from a parsed EncryptionConfiguration.
 *
 * A "target" is one distinct resource selector (exact resource, *.group, *.*, or literal etcd
 * prefix) with the providers of every entry naming it, concatenated in file order (config.go).
 * policy_keymap_lookup answers which target protects a key (docs/encryption-config.md):
 *   1. literal prefixes (entries starting with '/'): longest matching prefix, which equals first
 *      in file order because an earlier shorter prefix masking a later one is a load error;
 *   2. otherwise keys under the storage prefix: first segment -> GroupResource (built-in table,
 *      special prefixes, "<group>/<resource>" when the segment contains a dot), then exact ->
 *      (group, *) -> (*, *);
 *   3. otherwise -1 (not protected).
 * Lookups use prebuilt hash tables and a sorted prefix array: no allocation, any thread.
 * The map borrows `doc` (its providers/resources) and must not outlive it. It also renders the
 * human-readable per-rule view (prefixes, provider chain, warnings) used by check-config.
 */
#ifndef ETCDSEAL_POLICY_KEY_MAP_H
#define ETCDSEAL_POLICY_KEY_MAP_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "policy/encryption_config.h"

typedef struct policy_keymap policy_keymap;

typedef struct policy_target {
    enum policy_res_kind kind;
    const char *group;                    /* literal: the prefix */
    const char *resource;                 /* "*" for wildcards, "" for literals */
    const policy_ec_provider **providers; /* concatenated, file order */
    size_t n_providers;
    size_t *rules; /* indices of the entries that contributed, ascending */
    size_t n_rules;
} policy_target;

/* What check-config prints for one `resources[i]` entry. Strings never contain key bytes. */
typedef struct policy_rule_view {
    size_t index;
    const policy_ec_rule *rule;  /* as parsed (resources, providers, key names) */
    const char *const *prefixes; /* e.g. "/registry/secrets/", "/app/credentials/" */
    size_t n_prefixes;
    const char *providers; /* "aescbc[cbc-key-2,cbc-key-1], secretbox[sb-legacy], identity" */
    const char *const *warnings;
    size_t n_warnings;
} policy_rule_view;

/* Normalises a storage prefix like kube-apiserver: leading and trailing '/', no empty segments
 * ("registry" -> "/registry/", "" -> "/"). Returns a malloc'ed string or NULL (OOM). */
char *policy_storage_prefix_normalize(const char *prefix);

int policy_keymap_build(const policy_ec_doc *doc, const char *storage_prefix, policy_keymap **out,
                        es_error *err);
void policy_keymap_free(policy_keymap *m);

/* Target index protecting `key`, or -1. */
int policy_keymap_lookup(const policy_keymap *m, const uint8_t *key, size_t key_len);
size_t policy_keymap_target_count(const policy_keymap *m);
const policy_target *policy_keymap_target(const policy_keymap *m, size_t i);
const char *policy_keymap_storage_prefix(const policy_keymap *m);

size_t policy_keymap_rule_count(const policy_keymap *m);
const policy_rule_view *policy_keymap_rule(const policy_keymap *m, size_t i);
/* File-level warnings (e.g. mode readable by group/others). */
const char *const *policy_keymap_file_warnings(const policy_keymap *m, size_t *n);

#endif
