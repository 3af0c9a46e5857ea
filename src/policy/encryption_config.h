/* encryption_config.h - parse and validate a kube-apiserver EncryptionConfiguration (YAML).
 *
 * policy_encryption_parse reads the file (strict: unknown and duplicate fields, aliases and extra
 * documents are rejected), applies the defaults and the validation rules of kube-apiserver 1.31
 * (../shared/research/wire-format.md §5, §2.1 masking) for every provider type including kms, and
 * returns a plain-data document. It builds no chains, so KMS configurations validate here too.
 * Keys are base64-decoded straight into guarded memory (secret_t); nothing here prints or logs.
 * Every error reads `<file>: <field path>: <reason>`, e.g.
 * `conf.yaml: resources[2].providers[0].aesgcm.keys[1].secret: key must be 16, 24 or 32 bytes, got
 * 20`. A `resources:` entry starting with '/' is a literal etcd key prefix (etcdseal extension).
 * The document is owned by the caller (policy_ec_doc_free wipes keys); read-only once returned.
 */
#ifndef ETCDSEAL_POLICY_ENCRYPTION_CONFIG_H
#define ETCDSEAL_POLICY_ENCRYPTION_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "base/secret.h"
#include "crypto/chain.h"

#define POLICY_EC_MAX_FILE_BYTES (4u << 20)
#define POLICY_EC_MAX_KMS_ENDPOINTS 32 /* endpoint + endpoints: */

enum policy_res_kind {
    POLICY_RES_EXACT = 0, /* resource[.group] */
    POLICY_RES_GROUP,     /* *.group ("" = core, written "*.") */
    POLICY_RES_ALL,       /* *.* */
    POLICY_RES_LITERAL,   /* /etcd/key/prefix (etcdseal extension) */
    POLICY_RES_EVERY_KEY, /* "*": every etcd key no other rule covers (etcdseal extension) */
};

typedef struct policy_ec_resource {
    char *text; /* as written */
    enum policy_res_kind kind;
    char *group;    /* "" = core, "*" for *.*; the prefix itself for literals */
    char *resource; /* "*" for wildcards; "" for literals */
} policy_ec_resource;

typedef struct policy_ec_key {
    char *name;
    secret_t *secret; /* NULL after policy_ec_doc_drop_secrets */
} policy_ec_key;

typedef struct policy_ec_provider {
    enum crypto_provider_type type; /* KMS_V1 / KMS_V2 for kms entries */
    char path[64];                  /* "resources[2].providers[0].aesgcm" (for messages) */
    policy_ec_key *keys;            /* aescbc / aesgcm / secretbox */
    size_t n_keys;
    char *kms_name; /* kms only */
    char *kms_endpoint;
    char **kms_endpoints; /* etcdseal extension `endpoints:` (failover, after kms_endpoint) */
    size_t n_kms_endpoints;
    bool kms_has_cachesize;
    int32_t kms_cachesize; /* v1: default 1000, < 0 disables the DEK cache */
    double kms_timeout_s;  /* default 3 */
} policy_ec_provider;

typedef struct policy_ec_rule {
    policy_ec_resource *resources;
    size_t n_resources;
    policy_ec_provider *providers;
    size_t n_providers;
} policy_ec_rule;

typedef struct policy_ec_doc {
    char *name; /* file name used in messages */
    policy_ec_rule *rules;
    size_t n_rules;
    bool legacy_kind;   /* kind: EncryptionConfig / apiVersion: v1 */
    bool has_kms;       /* some provider is kms */
    bool has_file_mode; /* parsed from a file: mode below is valid */
    unsigned file_mode; /* st_mode & 07777 */
} policy_ec_doc;

/* Parses + validates the file at `path` (at most POLICY_EC_MAX_FILE_BYTES). */
int policy_encryption_parse(const char *path, policy_ec_doc **out, es_error *err);
/* Same for bytes in memory; `name` is used in messages. */
int policy_encryption_parse_buffer(const char *name, const char *data, size_t len,
                                   policy_ec_doc **out, es_error *err);
/* Frees (and wipes) all key material but keeps the names: after chains are built. */
void policy_ec_doc_drop_secrets(policy_ec_doc *d);
void policy_ec_doc_free(policy_ec_doc *d);

/* "aesgcm", "kms" (both KMS versions), ... as written in the YAML. */
const char *policy_ec_provider_yaml_name(enum crypto_provider_type t);

#endif
