/* policy_vectors_test.c - the Kubernetes vectors through policy_encryption_chain_for_key.
 *
 * (a) ../shared/vectors/encryption-config.yaml itself (unchanged, with its kms rules): the test
 *     starts one tests/tools/kms_fake_plugin per abstract socket the YAML names (the fake KMS of
 *     ../shared/vectors/README.md), loads the file, and reads EVERY vector through the chain of
 *     its etcd key (blocking wrappers: KMS calls are awaited): exact plaintext and Kubernetes'
 *     stale flag, negative vectors fail; each positive vector re-encrypts and reads back fresh.
 * (b) tests/config/vectors-placeholder.yaml (kms providers replaced in place by secretbox
 *     placeholders): every non-KMS vector decrypts through the chain found for its etcd key to
 *     exactly its plaintext with exactly Kubernetes' stale flag; negative vectors fail.
 * (c) tests/config/vectors-nokms.yaml (kms providers removed): same, with the stale flag derived
 *     from the chain ("written by the first provider and, if keyed, its first key" -> not
 *     stale); (b) checks that rule against Kubernetes' flags.
 * In (b) and (c) KMS vectors are not applicable (no kms providers there) and are only counted.
 * Counts are printed, not assumed.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "base/buf.h"
#include "crypto/chain.h"
#include "policy/encryption.h"
#include "policy/encryption_config.h"
#include "policy/key_map.h"
#include "testlib.h"
#include "crypto_kms_fake.h"

typedef struct vec {
    char *id, *provider, *group_resource, *expected, *stale;
    uint8_t *key, *plain, *stored, *key_name;
    size_t key_len, plain_len, stored_len, key_name_len;
} vec;

static vec *vecs;
static size_t n_vecs;

static uint8_t *b64(const char *s, size_t *out_len)
{
    size_t n = strlen(s);
    uint8_t *out = malloc(n / 4 * 3 + 4);
    if (!out)
        return NULL;
    if (sodium_base642bin(out, n / 4 * 3 + 4, s, n, NULL, out_len, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0) {
        free(out);
        return NULL;
    }
    return out;
}

static int load_vectors(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] == '\n')
            line[n - 1] = '\0';
        char *fields[11] = {0};
        char *save = NULL, *p = line;
        size_t nf = 0;
        /* empty fields are possible: split by hand */
        for (nf = 0; nf < 11 && p; nf++) {
            fields[nf] = p;
            char *tab = strchr(p, '\t');
            if (tab)
                *tab = '\0';
            p = tab ? tab + 1 : NULL;
        }
        (void)save;
        if (nf < 11)
            continue;
        vecs = realloc(vecs, (n_vecs + 1) * sizeof *vecs);
        vec *v = &vecs[n_vecs++];
        memset(v, 0, sizeof *v);
        v->id = strdup(fields[0]);
        v->provider = strdup(fields[1]);
        v->key = b64(fields[2], &v->key_len);
        v->group_resource = strdup(fields[3]);
        v->plain = b64(fields[4], &v->plain_len);
        v->stored = b64(fields[5], &v->stored_len);
        v->expected = strdup(fields[6]);
        v->stale = strdup(fields[7]);
        v->key_name = b64(fields[8], &v->key_name_len);
    }
    free(line);
    fclose(f);
    return n_vecs ? 0 : -1;
}

static void free_vectors(void)
{
    for (size_t i = 0; i < n_vecs; i++) {
        vec *v = &vecs[i];
        free(v->id), free(v->provider), free(v->group_resource), free(v->expected);
        free(v->stale), free(v->key), free(v->plain), free(v->stored), free(v->key_name);
    }
    free(vecs);
}

static const char *shared_dir(void)
{
    const char *s = getenv("ETCDSEAL_SHARED");
    return s && *s ? s : "../shared";
}

/* KMS vectors: written by a kms provider, or hand-made inputs whose rule has only kms. */
static policy_ec_doc *full_doc;
static policy_keymap *full_map;

static bool is_kms_vector(const vec *v)
{
    if (strncmp(v->provider, "kms", 3) == 0)
        return true;
    int t = policy_keymap_lookup(full_map, v->key, v->key_len);
    if (t < 0)
        return false;
    const policy_target *tg = policy_keymap_target(full_map, (size_t)t);
    for (size_t i = 0; i < tg->n_providers; i++) {
        enum crypto_provider_type ty = tg->providers[i]->type;
        if (ty != CRYPTO_PROVIDER_KMS_V1 && ty != CRYPTO_PROVIDER_KMS_V2)
            return false;
    }
    return true;
}

/* Stale rule: fresh only when the chain's first provider (and its first key) wrote it. */
static bool derived_stale(const policy_encryption *p, const vec *v)
{
    const policy_keymap *m = policy_encryption_keymap(p);
    int t = policy_keymap_lookup(m, v->key, v->key_len);
    if (t < 0)
        return false;
    const policy_ec_provider *first = policy_keymap_target(m, (size_t)t)->providers[0];
    const char *first_name = policy_ec_provider_yaml_name(first->type);
    if (strcmp(first_name, v->provider) != 0)
        return true;
    if (first->n_keys == 0)
        return false;
    return strlen(first->keys[0].name) != v->key_name_len ||
           memcmp(first->keys[0].name, v->key_name, v->key_name_len) != 0;
}

static void run_vectors_kms(const char *label, policy_encryption *p, bool use_k8s_stale,
                            bool with_kms);

/* The vectors' own config with one fake plugin per socket it names. */
static void test_full_config_with_fake_kms(void)
{
    static const char *const names[] = {"kms1-a", "kms2-a", "kms2-b"};
    fake_kms fk[3];
    memset(fk, 0, sizeof fk);
    bool started = true;
    for (size_t i = 0; i < 3; i++) {
        char listen[128];
        snprintf(listen, sizeof listen, "unix:///@k8senc-fake-%s", names[i]);
        int rc = fake_kms_start(&fk[i], names[i], listen, names[i]);
        CHECK_MSG(rc == 0, "fake plugin %s did not start (make tools?)", names[i]);
        started = started && rc == 0;
    }
    char path[512];
    snprintf(path, sizeof path, "%s/vectors/encryption-config.yaml", shared_dir());
    es_error e = {0};
    policy_encryption *p = NULL;
    if (started) {
        CHECK_MSG(policy_encryption_load(path, NULL, &p, &e) == 0, "%s", e.msg);
        if (p)
            run_vectors_kms("full", p, true, true);
        policy_encryption_unref(p);
        fake_counts c;
        for (size_t i = 0; i < 3; i++)
            if (fake_kms_counts(&fk[i], &c) == 0)
                printf("  fake %s: Status=%lu Version=%lu Encrypt=%lu Decrypt=%lu\n", names[i],
                       c.status, c.version, c.encrypt, c.decrypt);
    }
    for (size_t i = 0; i < 3; i++)
        fake_kms_cleanup(&fk[i]);
}

static void test_full_config_parses(void)
{
    CHECK(full_doc != NULL);
    if (!full_doc)
        return;
    CHECK_EQ_INT(full_doc->n_rules, 8);
    CHECK(full_doc->has_kms);
    const policy_ec_provider *k1 = &full_doc->rules[3].providers[0];
    CHECK_EQ_INT(k1->type, CRYPTO_PROVIDER_KMS_V1);
    CHECK_EQ_STR(k1->kms_name, "kms1-a");
    CHECK_EQ_INT(k1->kms_cachesize, 100);
    const policy_ec_provider *k2 = &full_doc->rules[4].providers[0];
    CHECK_EQ_INT(k2->type, CRYPTO_PROVIDER_KMS_V2);
    CHECK(k2->kms_timeout_s == 5);
    CHECK(!k2->kms_has_cachesize);
    CHECK(full_doc->rules[6].providers[0].kms_timeout_s == 3); /* default */
}

/* Runs every vector against `p`; `use_k8s_stale` selects the expected stale source; `with_kms`
 * also runs the KMS vectors (full config with fake plugins). */
static void run_vectors_kms(const char *label, policy_encryption *p, bool use_k8s_stale,
                            bool with_kms)
{
    size_t ok = 0, bad = 0, neg_ok = 0, skipped = 0, rule_agree = 0, rule_total = 0;
    buf_t out = BUF_INIT;
    for (size_t i = 0; i < n_vecs; i++) {
        const vec *v = &vecs[i];
        if (!with_kms && is_kms_vector(v)) {
            skipped++;
            continue;
        }
        const crypto_chain *c = policy_encryption_chain_for_key(p, v->key, v->key_len);
        if (!c) {
            bad++;
            fprintf(stderr, "  %s %s: no chain for key %.*s\n", label, v->id, (int)v->key_len,
                    (const char *)v->key);
            continue;
        }
        buf_reset(&out);
        crypto_read_info info = {0};
        es_error e = {0};
        int rc = crypto_chain_decrypt_blocking(c, v->key, v->key_len, v->stored, v->stored_len,
                                               &out, &info, &e);
        if (strcmp(v->expected, "error") == 0) {
            if (rc == 0) {
                bad++;
                fprintf(stderr, "  %s %s: negative vector decrypted\n", label, v->id);
            } else {
                neg_ok++;
                /* a final error, never "still waiting for the plugin" */
                CHECK_MSG(e.code != CRYPTO_ERR_WOULD_BLOCK && e.code != CRYPTO_ERR_UNAVAILABLE,
                          "%s: %s", v->id, e.msg);
                if (with_kms && is_kms_vector(v))
                    printf("  %s %s: %s\n", label, v->id, e.msg);
            }
            continue;
        }
        bool want_stale = use_k8s_stale ? strcmp(v->stale, "1") == 0 : derived_stale(p, v);
        /* the derived rule knows providers and keys, not KMS key ids or modes */
        if (use_k8s_stale && !is_kms_vector(v)) {
            rule_total++;
            if (derived_stale(p, v) == want_stale)
                rule_agree++;
        }
        if (rc != 0 || out.len != v->plain_len ||
            (out.len && memcmp(out.data, v->plain, out.len) != 0) || info.stale != want_stale) {
            bad++;
            fprintf(stderr, "  %s %s: rc=%d len=%zu/%zu stale=%d want %d err=%s\n", label, v->id,
                    rc, out.len, v->plain_len, info.stale, want_stale, rc ? e.msg : "");
            continue;
        }
        /* and the write path of the same chain round-trips with stale=false */
        buf_t enc = BUF_INIT, dec = BUF_INIT;
        crypto_read_info info2 = {0};
        if (crypto_chain_encrypt_blocking(c, v->key, v->key_len, v->plain, v->plain_len, &enc,
                                          &e) != 0 ||
            crypto_chain_decrypt_blocking(c, v->key, v->key_len, enc.data, enc.len, &dec, &info2,
                                          &e) != 0 ||
            dec.len != v->plain_len || (dec.len && memcmp(dec.data, v->plain, dec.len)) ||
            info2.stale) {
            bad++;
            fprintf(stderr, "  %s %s: re-encrypt round trip failed: %s\n", label, v->id, e.msg);
        } else {
            ok++;
        }
        buf_wipe_free(&enc);
        buf_wipe_free(&dec);
    }
    buf_wipe_free(&out);
    printf("  %s: %zu positive vectors ok, %zu negative vectors rejected, %zu failures, "
           "%zu KMS vectors not applicable (of %zu)\n",
           label, ok, neg_ok, bad, skipped, n_vecs);
    if (use_k8s_stale)
        printf("  %s: derived stale rule agrees with Kubernetes on %zu of %zu positive non-KMS "
               "vectors\n",
               label, rule_agree, rule_total);
    CHECK_EQ_INT(bad, 0);
    CHECK(ok > 0 && neg_ok > 0);
    CHECK_EQ_INT(ok + neg_ok + skipped, n_vecs);
    if (use_k8s_stale)
        CHECK_EQ_INT(rule_agree, rule_total);
    if (with_kms)
        printf("  %s: %zu/%zu vectors give Kubernetes' result\n", label, ok + neg_ok, n_vecs);
}

static void run_vectors(const char *label, policy_encryption *p, bool use_k8s_stale)
{
    run_vectors_kms(label, p, use_k8s_stale, false);
}

static policy_encryption *load_fixture(const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "tests/config/%s", name);
    es_error e = {0};
    policy_encryption *p = NULL;
    if (policy_encryption_load(path, NULL, &p, &e) != 0)
        fprintf(stderr, "  load %s: %s\n", path, e.msg);
    return p;
}

static void test_placeholder_config(void)
{
    policy_encryption *p = load_fixture("vectors-placeholder.yaml");
    CHECK(p != NULL);
    if (p)
        run_vectors("placeholder", p, true);
    policy_encryption_unref(p);
}

static void test_nokms_config(void)
{
    policy_encryption *p = load_fixture("vectors-nokms.yaml");
    CHECK(p != NULL);
    if (!p)
        return;
    run_vectors("nokms", p, false);
    /* The one flag that changes: aescbc is first in '*.' now. */
    for (size_t i = 0; i < n_vecs; i++)
        if (strcmp(vecs[i].id, "aescbc16-core-fallback") == 0) {
            CHECK(strcmp(vecs[i].stale, "1") == 0);
            CHECK(!derived_stale(p, &vecs[i]));
        }
    policy_encryption_unref(p);
}

int main(int argc, char **argv)
{
    (void)argc;
    TEST_BEGIN(argv[0]);
    if (secret_init() != 0)
        return 1;
    const char *tsv = getenv("ETCDSEAL_VECTORS");
    if (load_vectors(tsv && *tsv ? tsv : "build/vectors.tsv") != 0) {
        printf("FAIL %s load_vectors (run make to create build/vectors.tsv)\n", testlib_prog);
        return 1;
    }
    char path[512];
    snprintf(path, sizeof path, "%s/vectors/encryption-config.yaml", shared_dir());
    es_error e = {0};
    if (policy_encryption_parse(path, &full_doc, &e) != 0 ||
        policy_keymap_build(full_doc, NULL, &full_map, &e) != 0)
        fprintf(stderr, "  parse %s: %s\n", path, e.msg);
    RUN(test_full_config_parses);
    RUN(test_full_config_with_fake_kms);
    if (full_map) {
        RUN(test_placeholder_config);
        RUN(test_nokms_config);
    }
    policy_keymap_free(full_map);
    policy_ec_doc_free(full_doc);
    free_vectors();
    return TEST_EXIT();
}
