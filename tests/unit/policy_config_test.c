/* policy_config_test.c - EncryptionConfiguration validation and the etcd key -> chain mapping.
 *
 * Fixtures: every tests/config/invalid/<name>.yaml must be rejected with an error containing the
 * text of <name>.expect (and the file name); every tests/config/valid/<name>.yaml must parse.
 * Mapping: which chain protects a key is identified by the key name the chain writes with
 * (encrypt, then read "k8s:enc:<provider>:v1:<name>:"), so each rule below has its own name.
 */
#include <dirent.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/buf.h"
#include "crypto/chain.h"
#include "policy/encryption.h"
#include "policy/encryption_config.h"
#include "policy/key_map.h"
#include "testlib.h"

#define K32 "c2VjcmV0LWtleS0zMi1ieXRlcy1sb25nLXh4eHh4eHg="

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *s = calloc(1, 4096);
    size_t n = s ? fread(s, 1, 4095, f) : 0;
    fclose(f);
    while (s && n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

static int has_suffix(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static void test_invalid_fixtures(void)
{
    DIR *d = opendir("tests/config/invalid");
    CHECK(d != NULL);
    if (!d)
        return;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!has_suffix(e->d_name, ".yaml"))
            continue;
        char path[512], expect_path[512];
        snprintf(path, sizeof path, "tests/config/invalid/%s", e->d_name);
        snprintf(expect_path, sizeof expect_path, "%.*s.expect", (int)(strlen(path) - 5), path);
        char *want = read_text(expect_path);
        CHECK_MSG(want && *want, "%s has no .expect", path);
        es_error err = {0};
        policy_ec_doc *doc = NULL;
        int rc = policy_encryption_parse(path, &doc, &err);
        CHECK_MSG(rc == -1 && doc == NULL, "%s accepted", path);
        CHECK_MSG(want && strstr(err.msg, want), "%s: got \"%s\", want \"%s\"", path, err.msg,
                  want ? want : "");
        CHECK_MSG(strncmp(err.msg, path, strlen(path)) == 0, "%s: message does not name the file",
                  path);
        CHECK_MSG(!strstr(err.msg, K32), "%s: message contains key material", path);
        /* the full loader rejects with the same message */
        es_error err2 = {0};
        policy_encryption *p = NULL;
        CHECK(policy_encryption_load(path, NULL, &p, &err2) == -1 && p == NULL);
        CHECK_EQ_STR(err2.msg, err.msg);
        free(want);
        n++;
    }
    closedir(d);
    printf("  %zu invalid fixtures rejected with their expected message\n", n);
    CHECK(n >= 25);
}

static void test_valid_fixtures(void)
{
    DIR *d = opendir("tests/config/valid");
    CHECK(d != NULL);
    if (!d)
        return;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!has_suffix(e->d_name, ".yaml"))
            continue;
        char path[512];
        snprintf(path, sizeof path, "tests/config/valid/%s", e->d_name);
        es_error err = {0};
        policy_ec_doc *doc = NULL;
        CHECK_MSG(policy_encryption_parse(path, &doc, &err) == 0, "%s: %s", path, err.msg);
        policy_encryption *p = NULL;
        int rc = policy_encryption_load(path, NULL, &p, &err);
        /* kms providers load too: their plugin calls start in the background */
        CHECK_MSG(rc == 0, "%s: %s", path, err.msg);
        policy_encryption_unref(p);
        policy_ec_doc_free(doc);
        n++;
    }
    closedir(d);
    CHECK(n >= 4);
}

static void test_parse_details(void)
{
    es_error err = {0};
    policy_ec_doc *doc = NULL;
    CHECK(policy_encryption_parse("tests/config/valid/kms-parse-only.yaml", &doc, &err) == 0);
    if (doc) {
        const policy_ec_provider *v2 = &doc->rules[0].providers[0],
                                 *v1 = &doc->rules[0].providers[1];
        CHECK_EQ_INT(v2->type, CRYPTO_PROVIDER_KMS_V2);
        CHECK(v2->kms_timeout_s == 90);
        CHECK_EQ_INT(v1->type, CRYPTO_PROVIDER_KMS_V1); /* apiVersion defaults to v1 */
        CHECK_EQ_INT(v1->kms_cachesize, -1);
        CHECK(v1->kms_timeout_s == 3);
        CHECK_EQ_STR(v1->kms_endpoint, "unix:///var/run/p1.sock");
        CHECK(doc->has_file_mode);
        CHECK_EQ_STR(v1->path, "resources[0].providers[1].kms");
    }
    policy_ec_doc_free(doc);
    doc = NULL;
    CHECK(policy_encryption_parse("tests/config/valid/legacy-kind.yaml", &doc, &err) == 0);
    CHECK(doc && doc->legacy_kind);
    policy_ec_doc_free(doc);

    /* YAML 1.1 typing as sigs.k8s.io/yaml: a plain yes/true/1.5 is not a string */
    static const char *const bad_names[] = {"yes", "true", "1.5", "0x10", "~"};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        char y[512];
        snprintf(y, sizeof y,
                 "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n"
                 "resources:\n- resources: [secrets]\n  providers:\n  - aesgcm:\n      keys:\n"
                 "      - name: %s\n        secret: " K32 "\n",
                 bad_names[i]);
        doc = NULL;
        CHECK_MSG(policy_encryption_parse_buffer("t.yaml", y, strlen(y), &doc, &err) == -1,
                  "name %s accepted", bad_names[i]);
        policy_ec_doc_free(doc);
    }
    /* ... but quoted it is */
    const char *ok = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n"
                     "resources:\n- resources: [secrets]\n  providers:\n  - aesgcm:\n      keys:\n"
                     "      - name: \"yes\"\n        secret: " K32 "\n";
    doc = NULL;
    CHECK(policy_encryption_parse_buffer("t.yaml", ok, strlen(ok), &doc, &err) == 0);
    CHECK(doc && !doc->has_file_mode);
    policy_ec_doc_free(doc);
}

/* ---------------------------------------------------------------- mapping */

static const char *mapping_yaml =
    "apiVersion: apiserver.config.k8s.io/v1\n"
    "kind: EncryptionConfiguration\n"
    "resources:\n"
    "- resources: [/app/credentials/, /app/tokens/]\n"
    "  providers: [{aesgcm: {keys: [{name: lit-creds, secret: " K32 "}]}}]\n"
    "- resources: [/app/]\n"
    "  providers: [{aesgcm: {keys: [{name: lit-app, secret: " K32 "}]}}]\n"
    "- resources: [services]\n"
    "  providers: [{aesgcm: {keys: [{name: svc, secret: " K32 "}]}}]\n"
    "- resources: [endpoints]\n"
    "  providers: [{aesgcm: {keys: [{name: ep, secret: " K32 "}]}}]\n"
    "- resources: [nodes, replicationcontrollers]\n"
    "  providers: [{secretbox: {keys: [{name: nodes-rc, secret: " K32 "}]}}]\n"
    "- resources: [ingresses.networking.k8s.io]\n"
    "  providers: [{aesgcm: {keys: [{name: ing, secret: " K32 "}]}}]\n"
    "- resources: [pandas.awesome.bears.example]\n"
    "  providers: [{aesgcm: {keys: [{name: pandas, secret: " K32 "}]}}]\n"
    "- resources: ['*.zoo.example']\n"
    "  providers: [{aesgcm: {keys: [{name: zoo, secret: " K32 "}]}}]\n"
    "- resources: [secrets, widgets]\n"
    "  providers: [{aescbc: {keys: [{name: secrets-1, secret: " K32 "}]}}]\n"
    "- resources: [secrets]\n"
    "  providers: [{aesgcm: {keys: [{name: secrets-2, secret: " K32 "}]}}]\n"
    "- resources: ['*.apps']\n"
    "  providers: [{aesgcm: {keys: [{name: apps, secret: " K32 "}]}}]\n"
    "- resources: ['*.']\n"
    "  providers: [{aesgcm: {keys: [{name: core, secret: " K32 "}]}}]\n"
    "- resources: ['*.*']\n"
    "  providers: [{identity: {}}, {aesgcm: {keys: [{name: all, secret: " K32 "}]}}]\n";

/* Name of the key the chain for `key` writes with, "identity", or "NULL" (no chain). */
static void writer(const policy_encryption *p, const char *key, char *out, size_t n)
{
    const crypto_chain *c = policy_encryption_chain_for_key(p, (const uint8_t *)key, strlen(key));
    if (!c) {
        snprintf(out, n, "NULL");
        return;
    }
    buf_t b = BUF_INIT;
    es_error err;
    if (crypto_chain_encrypt(c, (const uint8_t *)key, strlen(key), (const uint8_t *)"v", 1, &b,
                             &err) != 0) {
        snprintf(out, n, "ERROR");
    } else if (b.len >= 8 && memcmp(b.data, "k8s:enc:", 8) == 0) {
        /* k8s:enc:<provider>:v1:<name>: */
        const char *s = (const char *)b.data;
        const char *p1 = strchr(s + 8, ':'), *p2 = p1 ? strchr(p1 + 1, ':') : NULL;
        const char *p3 = p2 ? memchr(p2 + 1, ':', b.len - (size_t)(p2 + 1 - s)) : NULL;
        snprintf(out, n, "%.*s", p3 ? (int)(p3 - p2 - 1) : 0, p2 ? p2 + 1 : "");
    } else {
        snprintf(out, n, "identity");
    }
    buf_free(&b);
}

static policy_encryption *load_mapping(const char *prefix)
{
    es_error err = {0};
    policy_encryption *p = NULL;
    if (policy_encryption_load_buffer("mapping.yaml", mapping_yaml, strlen(mapping_yaml), prefix,
                                      &p, &err) != 0)
        fprintf(stderr, "  mapping.yaml: %s\n", err.msg);
    return p;
}

static void check_map(const policy_encryption *p, const char *key, const char *want)
{
    char got[128];
    writer(p, key, got, sizeof got);
    CHECK_MSG(strcmp(got, want) == 0, "key %s -> %s, want %s", key, got, want);
}

static void test_mapping_table(void)
{
    policy_encryption *p = load_mapping(NULL);
    CHECK(p != NULL);
    if (!p)
        return;
    static const char *const cases[][2] = {
        /* literal prefixes: longest (= first in file order) wins, checked before resources */
        {"/app/credentials/db", "lit-creds"},
        {"/app/tokens/t1", "lit-creds"},
        {"/app/other", "lit-app"},
        {"/app/", "lit-app"},
        {"/app", "NULL"},
        {"/apps/x", "NULL"},
        {"/app/credentials", "lit-app"}, /* no trailing slash: only /app/ matches */
        /* special prefixes */
        {"/registry/services/specs/default/kubernetes", "svc"},
        {"/registry/services/endpoints/default/kubernetes", "ep"},
        {"/registry/ranges/serviceips", "svc"},
        {"/registry/masterleases/10.0.0.1", "ep"},
        {"/registry/minions/node-1", "nodes-rc"},
        {"/registry/controllers/default/rc", "nodes-rc"},
        {"/registry/ingress/default/web", "ing"},
        {"/registry/services/other/x", "identity"}, /* unknown: *.* */
        /* custom resources */
        {"/registry/awesome.bears.example/pandas/zoo/bao-bao", "pandas"},
        {"/registry/awesome.bears.example/grizzlies/zoo/x", "identity"},
        {"/registry/zoo.example/lions/ns/leo", "zoo"},
        {"/registry/zoo.example", "zoo"},
        /* concatenation: secrets named in two entries -> first entry's first key writes */
        {"/registry/secrets/default/db", "secrets-1"},
        {"/registry/widgets/default/w", "secrets-1"}, /* unknown core resource named in config */
        /* wildcards */
        {"/registry/deployments/default/web", "apps"},
        {"/registry/statefulsets/db/pg", "apps"},
        {"/registry/pods/default/p", "core"},
        {"/registry/configmaps/default/c", "core"},
        {"/registry/events/default/e", "core"},
        {"/registry/clusterroles/admin", "identity"},
        {"/registry/leases/kube-node-lease/n", "identity"},
        {"/registry/apiregistration.k8s.io/apiservices/v1.apps", "identity"},
        {"/registry/unknownthing/x", "identity"},
        {"/registry/", "identity"},
        /* not under the storage prefix */
        {"/registryx/secrets/a", "NULL"},
        {"/registry", "NULL"},
        {"", "NULL"},
        {"/other/secrets/a", "NULL"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_map(p, cases[i][0], cases[i][1]);
    /* concatenated chain reads what the second entry's key wrote */
    const policy_keymap *m = policy_encryption_keymap(p);
    int t = policy_keymap_lookup(m, (const uint8_t *)"/registry/secrets/a", 19);
    CHECK(t >= 0);
    if (t >= 0) {
        const policy_target *tg = policy_keymap_target(m, (size_t)t);
        CHECK_EQ_INT(tg->n_providers, 2);
        CHECK_EQ_INT(tg->n_rules, 2);
    }
    /* views: exact resource prefixes, special prefixes, concatenation note */
    const policy_rule_view *v = policy_encryption_rule(p, 2);
    CHECK(v && v->n_prefixes == 2);
    if (v && v->n_prefixes == 2) {
        CHECK_EQ_STR(v->prefixes[0], "/registry/services/specs/");
        CHECK_EQ_STR(v->prefixes[1], "/registry/ranges/");
    }
    v = policy_encryption_rule(p, 8);
    CHECK(v && v->n_prefixes >= 1 && strstr(v->prefixes[0], "concatenated"));
    CHECK(v && v->n_warnings >= 1);
    policy_encryption_unref(p);
}

static void test_storage_prefixes(void)
{
    static const struct {
        const char *prefix, *key, *want;
    } cases[] = {
        {"/registry", "/registry/secrets/a/b", "secrets-1"},
        {"registry", "/registry/secrets/a/b", "secrets-1"},
        {"/registry/", "/registry/secrets/a/b", "secrets-1"},
        {"/custom//prefix", "/custom/prefix/secrets/a/b", "secrets-1"},
        {"/custom//prefix", "/registry/secrets/a/b", "NULL"},
        {"/", "/secrets/a/b", "secrets-1"},
        {"", "/minions/n1", "nodes-rc"},
        {"/k8s", "/k8s/awesome.bears.example/pandas/a/b", "pandas"},
        {"/k8s", "/app/credentials/x", "lit-creds"}, /* literals ignore the storage prefix */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        policy_encryption *p = load_mapping(cases[i].prefix);
        CHECK(p != NULL);
        if (p)
            check_map(p, cases[i].key, cases[i].want);
        policy_encryption_unref(p);
    }
    char *s = policy_storage_prefix_normalize("a//b/");
    CHECK_EQ_STR(s, "/a/b/");
    free(s);
}

static void test_unconfigured_is_null(void)
{
    const char *y = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n"
                    "resources:\n- resources: [secrets]\n"
                    "  providers: [{secretbox: {keys: [{name: s, secret: " K32 "}]}}]\n";
    es_error err = {0};
    policy_encryption *p = NULL;
    CHECK(policy_encryption_load_buffer("u.yaml", y, strlen(y), NULL, &p, &err) == 0);
    if (!p)
        return;
    check_map(p, "/registry/secrets/a/b", "s");
    check_map(p, "/registry/configmaps/a/b", "NULL");
    check_map(p, "/registry/awesome.bears.example/pandas/a", "NULL");
    check_map(p, "/app/x", "NULL");
    CHECK(policy_encryption_chain_for_key(NULL, (const uint8_t *)"x", 1) == NULL);
    /* refcount: two refs, two unrefs */
    CHECK(policy_encryption_ref(p) == p);
    policy_encryption_unref(p);
    check_map(p, "/registry/secrets/a/b", "s");
    policy_encryption_unref(p);
    policy_encryption_unref(NULL);
}

/* "*" (etcdseal extension) covers every key that no literal or resource rule covers, e.g. the
 * binary keys of etcd's benchmark; it must be the last rule. */
static void test_every_key_rule(void)
{
    const char *y = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n"
                    "resources:\n- resources: [secrets]\n"
                    "  providers: [{secretbox: {keys: [{name: s, secret: " K32 "}]}}]\n"
                    "- resources: [/app/]\n"
                    "  providers: [{secretbox: {keys: [{name: a, secret: " K32 "}]}}]\n"
                    "- resources: ['*']\n"
                    "  providers: [{secretbox: {keys: [{name: all, secret: " K32 "}]}}]\n";
    es_error err = {0};
    policy_encryption *p = NULL;
    CHECK_MSG(policy_encryption_load_buffer("e.yaml", y, strlen(y), NULL, &p, &err) == 0, "%s",
              err.msg);
    if (!p)
        return;
    check_map(p, "/registry/secrets/a/b", "s");
    check_map(p, "/app/x", "a");
    check_map(p, "/registry/configmaps/a/b", "all");
    check_map(p, "\x01\x02binary", "all");
    check_map(p, "", "all");
    policy_encryption_unref(p);
    const char *masked = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n"
                         "resources:\n- resources: ['*']\n"
                         "  providers: [{secretbox: {keys: [{name: all, secret: " K32 "}]}}]\n"
                         "- resources: [/app/]\n"
                         "  providers: [{secretbox: {keys: [{name: a, secret: " K32 "}]}}]\n";
    p = NULL;
    CHECK(policy_encryption_load_buffer("m.yaml", masked, strlen(masked), NULL, &p, &err) != 0);
    CHECK_MSG(strstr(err.msg, "masked by earlier rule \"*\"") != NULL, "%s", err.msg);
    policy_encryption_unref(p);
}

static void test_kms_load_builds_providers(void)
{
    es_error err = {0};
    policy_encryption *p = NULL;
    CHECK_MSG(policy_encryption_load("tests/config/valid/kms-parse-only.yaml", NULL, &p, &err) == 0,
              "%s", err.msg);
    if (!p)
        return;
    const char *key = "/registry/secrets/default/s";
    const crypto_chain *c = policy_encryption_chain_for_key(p, (const uint8_t *)key, strlen(key));
    CHECK(c != NULL);
    if (c) {
        CHECK(crypto_chain_has_kms(c));
        CHECK_EQ_INT(crypto_chain_provider_count(c), 3);
        CHECK_EQ_INT(crypto_chain_provider_type(c, 0), CRYPTO_PROVIDER_KMS_V2);
        CHECK_EQ_INT(crypto_chain_provider_type(c, 1), CRYPTO_PROVIDER_KMS_V1);
    }
    policy_encryption_unref(p);
}

/* Lookups from several threads at once agree with the single-threaded answer. */
static policy_encryption *shared_p;
static void *lookup_thread(void *arg)
{
    (void)arg;
    static const char *keys[] = {"/registry/secrets/a", "/app/credentials/x", "/registry/pods/a/b",
                                 "/registry/awesome.bears.example/pandas/x", "/nope"};
    const crypto_chain *want[5];
    for (int i = 0; i < 5; i++)
        want[i] =
            policy_encryption_chain_for_key(shared_p, (const uint8_t *)keys[i], strlen(keys[i]));
    long bad = 0;
    for (int n = 0; n < 200000; n++) {
        int i = n % 5;
        if (policy_encryption_chain_for_key(shared_p, (const uint8_t *)keys[i], strlen(keys[i])) !=
            want[i])
            bad++;
    }
    return (void *)bad;
}

static void test_concurrent_lookups(void)
{
    shared_p = load_mapping(NULL);
    CHECK(shared_p != NULL);
    if (!shared_p)
        return;
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, lookup_thread, NULL);
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(th[i], &r);
        CHECK_EQ_INT((long)r, 0);
    }
    policy_encryption_unref(shared_p);
}

int main(int argc, char **argv)
{
    (void)argc;
    TEST_BEGIN(argv[0]);
    if (secret_init() != 0)
        return 1;
    RUN(test_invalid_fixtures);
    RUN(test_valid_fixtures);
    RUN(test_parse_details);
    RUN(test_mapping_table);
    RUN(test_storage_prefixes);
    RUN(test_unconfigured_is_null);
    RUN(test_every_key_rule);
    RUN(test_kms_load_builds_providers);
    RUN(test_concurrent_lookups);
    return TEST_EXIT();
}
