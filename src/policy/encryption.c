/* encryption.c - builds the chains of a parsed EncryptionConfiguration and answers
 * key -> chain (see encryption.h). The parsed document stays attached (without key bytes) so
 * the rule views and target descriptions remain valid for the object's lifetime.
 */
#include "policy/encryption.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "policy/encryption_config.h"

struct policy_encryption {
    atomic_int refs;
    policy_ec_doc *doc; /* secrets dropped after build */
    policy_keymap *map;
    crypto_chain **chains; /* one per keymap target */
    size_t n_chains;
};

static void destroy(policy_encryption *p)
{
    for (size_t i = 0; i < p->n_chains; i++)
        crypto_chain_free(p->chains[i]);
    free(p->chains);
    policy_keymap_free(p->map);
    policy_ec_doc_free(p->doc);
    free(p);
}

/* The first kms provider any chain would need: the whole load fails on it for now. */
static const policy_ec_provider *first_kms(const policy_ec_doc *doc)
{
    for (size_t r = 0; r < doc->n_rules; r++)
        for (size_t i = 0; i < doc->rules[r].n_providers; i++) {
            const policy_ec_provider *p = &doc->rules[r].providers[i];
            if (p->type == CRYPTO_PROVIDER_KMS_V1 || p->type == CRYPTO_PROVIDER_KMS_V2)
                return p;
        }
    return NULL;
}

static int add_provider(crypto_chain *c, const policy_ec_provider *p, es_error *err)
{
    if (p->type == CRYPTO_PROVIDER_IDENTITY)
        return crypto_chain_add_identity(c, err);
    crypto_key_spec specs[16] = {{0}};
    crypto_key_spec *keys = p->n_keys <= 16 ? specs : calloc(p->n_keys, sizeof *keys);
    if (!keys)
        return es_error_set(err, 1, "out of memory");
    for (size_t k = 0; k < p->n_keys; k++) {
        keys[k].name = p->keys[k].name;
        keys[k].key = p->keys[k].secret->bytes;
        keys[k].key_len = p->keys[k].secret->len;
    }
    int rc = crypto_chain_add_keyed(c, p->type, keys, p->n_keys, err);
    if (keys != specs)
        free(keys);
    return rc;
}

static int build_chains(policy_encryption *p, es_error *err)
{
    size_t n = policy_keymap_target_count(p->map);
    p->chains = calloc(n ? n : 1, sizeof *p->chains);
    if (!p->chains)
        return es_error_set(err, 1, "%s: out of memory", p->doc->name);
    for (size_t i = 0; i < n; i++) {
        const policy_target *t = policy_keymap_target(p->map, i);
        crypto_chain *c = crypto_chain_new();
        if (!c)
            return es_error_set(err, 1, "%s: out of memory", p->doc->name);
        p->chains[p->n_chains++] = c;
        for (size_t j = 0; j < t->n_providers; j++)
            if (add_provider(c, t->providers[j], err) != 0)
                return es_error_prefix(err, "%s: %s", p->doc->name, t->providers[j]->path);
    }
    return 0;
}

static int load_doc(policy_ec_doc *doc, const char *storage_prefix, policy_encryption **out,
                    es_error *err)
{
    const policy_ec_provider *kms = first_kms(doc);
    if (kms) {
        es_error_set(
            err, 1, "%s: %s: KMS providers are not supported yet by this build (kms %s \"%s\")",
            doc->name, kms->path, kms->type == CRYPTO_PROVIDER_KMS_V2 ? "v2" : "v1", kms->kms_name);
        policy_ec_doc_free(doc);
        return -1;
    }
    policy_encryption *p = calloc(1, sizeof *p);
    if (!p) {
        policy_ec_doc_free(doc);
        return es_error_set(err, 1, "out of memory");
    }
    atomic_init(&p->refs, 1);
    p->doc = doc;
    if (policy_keymap_build(doc, storage_prefix, &p->map, err) != 0 || build_chains(p, err) != 0) {
        destroy(p);
        return -1;
    }
    policy_ec_doc_drop_secrets(doc); /* the chains hold their own guarded copies */
    *out = p;
    return 0;
}

int policy_encryption_load(const char *path, const char *storage_prefix, policy_encryption **out,
                           es_error *err)
{
    *out = NULL;
    policy_ec_doc *doc;
    if (policy_encryption_parse(path, &doc, err) != 0)
        return -1;
    return load_doc(doc, storage_prefix, out, err);
}

int policy_encryption_load_buffer(const char *name, const char *data, size_t len,
                                  const char *storage_prefix, policy_encryption **out,
                                  es_error *err)
{
    *out = NULL;
    policy_ec_doc *doc;
    if (policy_encryption_parse_buffer(name, data, len, &doc, err) != 0)
        return -1;
    return load_doc(doc, storage_prefix, out, err);
}

policy_encryption *policy_encryption_ref(policy_encryption *p)
{
    if (p)
        atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    return p;
}

void policy_encryption_unref(policy_encryption *p)
{
    if (p && atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1)
        destroy(p);
}

const crypto_chain *policy_encryption_chain_for_key(const policy_encryption *p, const uint8_t *key,
                                                    size_t key_len)
{
    if (!p)
        return NULL;
    int t = policy_keymap_lookup(p->map, key, key_len);
    return t >= 0 ? p->chains[t] : NULL;
}

size_t policy_encryption_rule_count(const policy_encryption *p)
{
    return policy_keymap_rule_count(p->map);
}

const policy_rule_view *policy_encryption_rule(const policy_encryption *p, size_t i)
{
    return policy_keymap_rule(p->map, i);
}

const policy_keymap *policy_encryption_keymap(const policy_encryption *p)
{
    return p->map;
}

const char *policy_encryption_storage_prefix(const policy_encryption *p)
{
    return policy_keymap_storage_prefix(p->map);
}
