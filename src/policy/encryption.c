/* encryption.c - builds the chains of a parsed EncryptionConfiguration and answers
 * key -> chain (see encryption.h). The parsed document stays attached (without key bytes) so
 * the rule views and target descriptions remain valid for the object's lifetime.
 */
#include "policy/encryption.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/kms.h"
#include "policy/encryption_config.h"

struct policy_encryption {
    atomic_int refs;
    policy_ec_doc *doc; /* secrets dropped after build */
    policy_keymap *map;
    crypto_chain **chains; /* one per keymap target */
    size_t n_chains;
    /* one running KMS provider per configured kms entry, shared by every chain that lists it */
    const policy_ec_provider **kms_cfg;
    crypto_kms **kms;
    size_t n_kms;
};

static void destroy(policy_encryption *p)
{
    for (size_t i = 0; i < p->n_chains; i++)
        crypto_chain_free(p->chains[i]);
    free(p->chains);
    for (size_t i = 0; i < p->n_kms; i++)
        crypto_kms_unref(p->kms[i]);
    free(p->kms);
    free(p->kms_cfg);
    policy_keymap_free(p->map);
    policy_ec_doc_free(p->doc);
    free(p);
}

/* Starts one KMS provider per kms entry of the document (plugin calls begin in the
 * background; loading never waits for a plugin). */
static int start_kms(policy_encryption *p, es_error *err)
{
    const policy_ec_doc *doc = p->doc;
    size_t n = 0;
    for (size_t r = 0; r < doc->n_rules; r++)
        for (size_t i = 0; i < doc->rules[r].n_providers; i++) {
            enum crypto_provider_type t = doc->rules[r].providers[i].type;
            n += t == CRYPTO_PROVIDER_KMS_V1 || t == CRYPTO_PROVIDER_KMS_V2;
        }
    if (n == 0)
        return 0;
    p->kms = calloc(n, sizeof *p->kms);
    p->kms_cfg = calloc(n, sizeof *p->kms_cfg);
    if (!p->kms || !p->kms_cfg)
        return es_error_set(err, 1, "%s: out of memory", doc->name);
    for (size_t r = 0; r < doc->n_rules; r++)
        for (size_t i = 0; i < doc->rules[r].n_providers; i++) {
            const policy_ec_provider *pr = &doc->rules[r].providers[i];
            if (pr->type != CRYPTO_PROVIDER_KMS_V1 && pr->type != CRYPTO_PROVIDER_KMS_V2)
                continue;
            const char *eps[POLICY_EC_MAX_KMS_ENDPOINTS];
            size_t ne = 0;
            eps[ne++] = pr->kms_endpoint;
            for (size_t e = 0; e < pr->n_kms_endpoints && ne < POLICY_EC_MAX_KMS_ENDPOINTS; e++)
                eps[ne++] = pr->kms_endpoints[e];
            crypto_kms_config cfg = {
                .type = pr->type,
                .name = pr->kms_name,
                .endpoints = eps,
                .n_endpoints = ne,
                .timeout_s = pr->kms_timeout_s,
                .cachesize = pr->kms_cachesize,
            };
            if (crypto_kms_new(&cfg, &p->kms[p->n_kms], err) != 0)
                return es_error_prefix(err, "%s: %s", doc->name, pr->path);
            p->kms_cfg[p->n_kms++] = pr;
        }
    return 0;
}

static crypto_kms *kms_for(const policy_encryption *p, const policy_ec_provider *pr)
{
    for (size_t i = 0; i < p->n_kms; i++)
        if (p->kms_cfg[i] == pr)
            return p->kms[i];
    return NULL;
}

static int add_provider(const policy_encryption *pe, crypto_chain *c, const policy_ec_provider *p,
                        es_error *err)
{
    if (p->type == CRYPTO_PROVIDER_IDENTITY)
        return crypto_chain_add_identity(c, err);
    if (p->type == CRYPTO_PROVIDER_KMS_V1 || p->type == CRYPTO_PROVIDER_KMS_V2)
        return crypto_chain_add_kms(c, kms_for(pe, p), err);
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
            if (add_provider(p, c, t->providers[j], err) != 0)
                return es_error_prefix(err, "%s: %s", p->doc->name, t->providers[j]->path);
    }
    return 0;
}

static int load_doc(policy_ec_doc *doc, const char *storage_prefix, policy_encryption **out,
                    es_error *err)
{
    policy_encryption *p = calloc(1, sizeof *p);
    if (!p) {
        policy_ec_doc_free(doc);
        return es_error_set(err, 1, "out of memory");
    }
    atomic_init(&p->refs, 1);
    p->doc = doc;
    if (policy_keymap_build(doc, storage_prefix, &p->map, err) != 0 || start_kms(p, err) != 0 ||
        build_chains(p, err) != 0) {
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
