/* encryption_config.c - strict libyaml reader + kube-apiserver 1.31 validation of an
 * EncryptionConfiguration (see encryption_config.h).
 *
 * The YAML is loaded as a libyaml document after ys_prescan (policy/yaml_strict) rejects aliases
 * and multi-document input; the tree is then walked field by field against the schema. Scalars
 * follow the YAML 1.1 resolution that sigs.k8s.io/yaml applies (a plain `123`, `true` or `yes` is
 * not a string), so `name: 123` fails like it does in kube-apiserver. Null values mean "not set",
 * like Go's zero values. Validation runs during the walk (per field) and at the end (KMS name
 * uniqueness); cross-entry masking is checked in file order as config.go does.
 */
#include "policy/encryption_config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yaml.h>

#include "base/duration.h"
#include "policy/yaml_strict.h"
#include "policy/yaml_wipe.h"

#define MAX_RULES 4096
#define MAX_ITEMS 4096 /* resources, providers or keys in one list */
#define SUN_PATH_MAX 107

typedef struct ctx {
    ys_ctx ys; /* document, file name, error, list limit */
    policy_ec_doc *d;
} ctx;

/* A string field: null -> "" (Go zero value); anything but a string is an error. */
static int get_string(ctx *c, const yaml_node_t *n, const char *path, char **out)
{
    *out = NULL;
    if (ys_is_null(n)) {
        *out = strdup("");
    } else if (n->type != YAML_SCALAR_NODE || ys_scalar_kind(n) != YS_STR) {
        return ys_fail(&c->ys, path, n, "expected a string, got %s", ys_type_text(&c->ys, n));
    } else {
        if (strlen((const char *)n->data.scalar.value) != n->data.scalar.length)
            return ys_fail(&c->ys, path, n, "contains a NUL byte");
        *out = strdup((const char *)n->data.scalar.value);
    }
    if (!*out)
        return ys_fail(&c->ys, path, n, "out of memory");
    return 0;
}

/* An int32 field: returns 1 when null (not set), 0 with *out, -1 on error. */
static int get_int32(ctx *c, const yaml_node_t *n, const char *path, int32_t *out)
{
    if (ys_is_null(n))
        return 1;
    if (n->type != YAML_SCALAR_NODE || ys_scalar_kind(n) != YS_INT)
        return ys_fail(&c->ys, path, n, "expected an integer, got %s", ys_type_text(&c->ys, n));
    char tmp[64];
    size_t j = 0;
    for (const char *s = (const char *)n->data.scalar.value; *s && j + 1 < sizeof tmp; s++)
        if (*s != '_')
            tmp[j++] = *s;
    tmp[j] = '\0';
    int base = 10;
    char *digits = tmp;
    bool neg = false;
    if (*digits == '+' || *digits == '-')
        neg = *digits++ == '-';
    if (digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X'))
        base = 16, digits += 2;
    else if (digits[0] == '0' && digits[1] == 'b')
        base = 2, digits += 2;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(digits, &end, base);
    if (errno || *end || v > (neg ? 2147483648ull : 2147483647ull))
        return ys_fail(&c->ys, path, n, "integer out of range for int32");
    *out = neg ? (int32_t)(-(long long)v) : (int32_t)v;
    return 0;
}

/* ------------------------------------------------------------------ resources */

static bool in_list(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(s, *list) == 0)
            return true;
    return false;
}

static const char *const forbidden_resources[] = {"apiserveripinfo", "serviceipallocations",
                                                  "servicenodeportallocations", NULL};

/* Writes the YAML spelling of a wildcard over group g: "*.", "*.apps", "*.*". */
static void wildcard_text(char *dst, size_t n, const char *group)
{
    snprintf(dst, n, "*.%s", group);
}

static int parse_resource(ctx *c, const yaml_node_t *n, const char *path, policy_ec_resource *r)
{
    if (get_string(c, n, path, &r->text) != 0)
        return -1;
    const char *t = r->text;
    if (!*t)
        return ys_fail(&c->ys, path, n, "resource must not be empty");
    if (t[0] == '/') {
        r->kind = POLICY_RES_LITERAL;
        r->group = strdup(t);
        r->resource = strdup("");
        return r->group && r->resource ? 0 : ys_fail(&c->ys, path, n, "out of memory");
    }
    for (const char *p = t; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            return ys_fail(&c->ys, path, n,
                           "resource name \"%s\" should not contain capital letters", t);
    if (strcmp(t, "*") == 0) {
        /* etcdseal extension: every etcd key that no literal or resource rule covers (the
         * catch-all for non-Kubernetes data, e.g. binary keys); kube-apiserver rejects "*" */
        r->kind = POLICY_RES_EVERY_KEY;
        r->group = strdup("*");
        r->resource = strdup("*");
        return r->group && r->resource ? 0 : ys_fail(&c->ys, path, n, "out of memory");
    }
    const char *dot = strchr(t, '.');
    size_t rlen = dot ? (size_t)(dot - t) : strlen(t);
    r->resource = strndup(t, rlen);
    r->group = strdup(dot ? dot + 1 : "");
    if (!r->resource || !r->group)
        return ys_fail(&c->ys, path, n, "out of memory");
    const char *res = r->resource, *grp = r->group;
    if (!*res)
        return ys_fail(&c->ys, path, n, "resource \"%s\" has no resource name before the group", t);
    if (strcmp(grp, "*") == 0 && strcmp(res, "*") != 0)
        return ys_fail(
            &c->ys, path, n,
            "resource \"%s\" is not allowed: use \"*.*\" for all resources of all groups", t);
    if (strcmp(res, "*") == 0)
        r->kind = strcmp(grp, "*") == 0 ? POLICY_RES_ALL : POLICY_RES_GROUP;
    else
        r->kind = POLICY_RES_EXACT;
    if ((r->kind == POLICY_RES_EXACT && strchr(res, '*')) ||
        (r->kind != POLICY_RES_ALL && strchr(grp, '*')))
        return ys_fail(&c->ys, path, n,
                       "resource \"%s\": '*' is only allowed as \"*.<group>\", \"*.\" or \"*.*\"",
                       t);
    if (strchr(t, '/') || strchr(t, ' ') || strchr(t, '\t'))
        return ys_fail(&c->ys, path, n, "resource \"%s\" contains '/' or white space", t);
    if (!*grp && in_list(res, forbidden_resources))
        return ys_fail(&c->ys, path, n,
                       "resource \"%s\" cannot be encrypted (it is not a REST resource)", t);
    if (strcmp(grp, "extensions") == 0)
        return ys_fail(&c->ys, path, n,
                       "resource \"%s\": the \"extensions\" group has been removed and cannot be "
                       "used for encryption",
                       t);
    if (strcmp(grp, "events.k8s.io") == 0)
        return ys_fail(&c->ys, path, n,
                       "resource \"%s\": events.k8s.io events are stored as core \"events\"; use "
                       "\"events\" instead",
                       t);
    return 0;
}

/* Within one entry: duplicates and overlaps (config.go/validation: *.* with anything, *.g with
 * anything of group g, literal prefixes nested in each other). */
static int check_entry_overlaps(ctx *c, const policy_ec_rule *rule, size_t ri,
                                yaml_node_item_t *items)
{
    for (size_t j = 0; j < rule->n_resources; j++) {
        const policy_ec_resource *b = &rule->resources[j];
        for (size_t i = 0; i < j; i++) {
            const policy_ec_resource *a = &rule->resources[i];
            char path[64];
            snprintf(path, sizeof path, "resources[%zu].resources[%zu]", ri, j);
            const yaml_node_t *n = ys_node(&c->ys, items[j]);
            if (strcmp(a->text, b->text) == 0)
                return ys_fail(&c->ys, path, n,
                               "duplicate resource \"%s\" (also resources[%zu]"
                               ".resources[%zu])",
                               b->text, ri, i);
            bool lit_a = a->kind == POLICY_RES_LITERAL, lit_b = b->kind == POLICY_RES_LITERAL;
            bool overlap = a->kind == POLICY_RES_EVERY_KEY || b->kind == POLICY_RES_EVERY_KEY;
            if (overlap)
                ;
            else if (lit_a && lit_b)
                overlap = strncmp(a->text, b->text, strlen(a->text)) == 0 ||
                          strncmp(a->text, b->text, strlen(b->text)) == 0;
            else if (!lit_a && !lit_b)
                overlap = a->kind == POLICY_RES_ALL || b->kind == POLICY_RES_ALL ||
                          (a->kind == POLICY_RES_GROUP && strcmp(a->group, b->group) == 0) ||
                          (b->kind == POLICY_RES_GROUP && strcmp(a->group, b->group) == 0);
            if (overlap)
                return ys_fail(&c->ys, path, n,
                               "resource \"%s\" overlaps with \"%s\" in the same entry "
                               "(resources[%zu].resources[%zu])",
                               b->text, a->text, ri, i);
        }
    }
    return 0;
}

/* Across entries, in file order (config.go): a resource is masked by an earlier "*.<its group>"
 * or "*.*"; a literal prefix by an earlier literal that is a proper prefix of it. */
static int check_masking(ctx *c, size_t ri, yaml_node_item_t *items)
{
    const policy_ec_rule *rule = &c->d->rules[ri];
    for (size_t j = 0; j < rule->n_resources; j++) {
        const policy_ec_resource *r = &rule->resources[j];
        for (size_t pi = 0; pi < ri; pi++) {
            const policy_ec_rule *prev = &c->d->rules[pi];
            for (size_t k = 0; k < prev->n_resources; k++) {
                const policy_ec_resource *e = &prev->resources[k];
                bool masked = false;
                if (e->kind == POLICY_RES_EVERY_KEY) {
                    masked = true; /* "*" must be the last rule */
                } else if (r->kind == POLICY_RES_EVERY_KEY) {
                    masked = false;
                } else if ((r->kind == POLICY_RES_LITERAL) != (e->kind == POLICY_RES_LITERAL)) {
                    masked = false; /* literal prefixes and resources never mask each other */
                } else if (r->kind == POLICY_RES_LITERAL) {
                    size_t el = strlen(e->text);
                    masked = e->kind == POLICY_RES_LITERAL && el < strlen(r->text) &&
                             strncmp(e->text, r->text, el) == 0;
                } else if (e->kind == POLICY_RES_ALL) {
                    masked = true;
                } else if (e->kind == POLICY_RES_GROUP) {
                    masked = strcmp(e->group, r->group) == 0;
                }
                if (!masked)
                    continue;
                char path[64], wt[300];
                snprintf(path, sizeof path, "resources[%zu].resources[%zu]", ri, j);
                if (e->kind == POLICY_RES_LITERAL || e->kind == POLICY_RES_EVERY_KEY)
                    snprintf(wt, sizeof wt, "%s", e->text);
                else
                    wildcard_text(wt, sizeof wt, e->group);
                return ys_fail(&c->ys, path, ys_node(&c->ys, items[j]),
                               "resource \"%s\" is masked by earlier rule \"%s\" "
                               "(resources[%zu]); specific rules must come first",
                               r->text, wt, pi);
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ providers */

const char *policy_ec_provider_yaml_name(enum crypto_provider_type t)
{
    switch (t) {
    case CRYPTO_PROVIDER_IDENTITY:
        return "identity";
    case CRYPTO_PROVIDER_AESCBC:
        return "aescbc";
    case CRYPTO_PROVIDER_AESGCM:
        return "aesgcm";
    case CRYPTO_PROVIDER_SECRETBOX:
        return "secretbox";
    case CRYPTO_PROVIDER_KMS_V1:
    case CRYPTO_PROVIDER_KMS_V2:
        return "kms";
    }
    return "?";
}

static int parse_keyed(ctx *c, const yaml_node_t *n, const char *path, policy_ec_provider *p)
{
    static const char *const fields[] = {"keys"};
    static const char *const kfields[] = {"name", "secret"};
    yaml_node_t *v[1];
    if (ys_map_fields(&c->ys, n, path, fields, 1, v) != 0)
        return -1;
    char kpath[128];
    snprintf(kpath, sizeof kpath, "%s.keys", path);
    yaml_node_item_t *items;
    long count = ys_seq_items(&c->ys, v[0], kpath, &items);
    if (count < 0)
        return -1;
    if (count == 0)
        return ys_fail(&c->ys, kpath, v[0] ? v[0] : n, "at least one key is required");
    p->keys = calloc((size_t)count, sizeof *p->keys);
    if (!p->keys)
        return ys_fail(&c->ys, kpath, n, "out of memory");
    for (long i = 0; i < count; i++) {
        policy_ec_key *k = &p->keys[i];
        p->n_keys++;
        char ipath[160], fpath[176];
        snprintf(ipath, sizeof ipath, "%s[%ld]", kpath, i);
        yaml_node_t *kn = ys_node(&c->ys, items[i]), *kv[2];
        if (ys_map_fields(&c->ys, kn, ipath, kfields, 2, kv) != 0)
            return -1;
        snprintf(fpath, sizeof fpath, "%s.name", ipath);
        if (get_string(c, kv[0], fpath, &k->name) != 0)
            return -1;
        if (!*k->name)
            return ys_fail(&c->ys, fpath, kv[0] ? kv[0] : kn, "key name is required");
        snprintf(fpath, sizeof fpath, "%s.secret", ipath);
        if (ys_is_null(kv[1]) ||
            (kv[1]->type == YAML_SCALAR_NODE && kv[1]->data.scalar.length == 0))
            return ys_fail(&c->ys, fpath, kv[1] ? kv[1] : kn, "secret is required");
        if (kv[1]->type != YAML_SCALAR_NODE || ys_scalar_kind(kv[1]) != YS_STR)
            return ys_fail(&c->ys, fpath, kv[1], "expected a string, got %s",
                           ys_type_text(&c->ys, kv[1]));
        /* Decoded straight from the YAML node into guarded memory; never copied elsewhere. */
        k->secret =
            secret_from_base64((const char *)kv[1]->data.scalar.value, kv[1]->data.scalar.length);
        if (!k->secret)
            return ys_fail(&c->ys, fpath, kv[1],
                           "secret is not valid standard base64 (with padding)");
        size_t len = k->secret->len;
        if (p->type == CRYPTO_PROVIDER_SECRETBOX && len != 32)
            return ys_fail(&c->ys, fpath, kv[1], "key must be 32 bytes, got %zu", len);
        if (p->type != CRYPTO_PROVIDER_SECRETBOX && len != 16 && len != 24 && len != 32)
            return ys_fail(&c->ys, fpath, kv[1], "key must be 16, 24 or 32 bytes, got %zu", len);
    }
    return 0;
}

/* unix:///<path> or unix:///@<abstract name> (kube-apiserver's ParseEndpoint). */
static int check_endpoint(ctx *c, const char *fpath, const yaml_node_t *at, const char *ep)
{
    if (!*ep)
        return ys_fail(&c->ys, fpath, at, "KMS provider endpoint is required");
    const char *colon = strstr(ep, "://");
    if (!colon)
        return ys_fail(&c->ys, fpath, at,
                       "endpoint \"%s\" is not a URL: use unix:///<socket path> or "
                       "unix:///@<abstract name>",
                       ep);
    if ((size_t)(colon - ep) != 4 || strncasecmp(ep, "unix", 4) != 0)
        return ys_fail(&c->ys, fpath, at,
                       "unsupported scheme \"%.*s\" for KMS provider, only unix is "
                       "supported",
                       (int)(colon - ep > 32 ? 32 : colon - ep), ep);
    const char *sock = colon + 3;
    if (sock[0] != '/' || sock[1] == '\0' || strcmp(sock, "/@") == 0)
        return ys_fail(&c->ys, fpath, at,
                       "endpoint \"%s\" must be unix:///<socket path> or "
                       "unix:///@<abstract name>",
                       ep);
    if (strlen(sock) - (sock[1] == '@' ? 1 : 0) > SUN_PATH_MAX)
        return ys_fail(&c->ys, fpath, at, "socket path is longer than %d bytes", SUN_PATH_MAX);
    return 0;
}

/* etcdseal extension: `endpoints: [...]`, more plugin sockets tried in order after `endpoint`. */
static int parse_kms_endpoints(ctx *c, const yaml_node_t *n, const char *path,
                               policy_ec_provider *p)
{
    char fpath[128];
    snprintf(fpath, sizeof fpath, "%s.endpoints", path);
    yaml_node_item_t *items;
    long count = ys_seq_items(&c->ys, n, fpath, &items);
    if (count < 0)
        return -1;
    if (count > POLICY_EC_MAX_KMS_ENDPOINTS - 1)
        return ys_fail(&c->ys, fpath, n, "at most %d endpoints besides endpoint",
                       POLICY_EC_MAX_KMS_ENDPOINTS - 1);
    p->kms_endpoints = calloc((size_t)count + 1, sizeof *p->kms_endpoints);
    if (!p->kms_endpoints)
        return ys_fail(&c->ys, fpath, n, "out of memory");
    for (long i = 0; i < count; i++) {
        char ipath[160];
        snprintf(ipath, sizeof ipath, "%s[%ld]", fpath, i);
        yaml_node_t *it = ys_node(&c->ys, items[i]);
        char *ep = NULL;
        if (get_string(c, it, ipath, &ep) != 0) {
            free(ep);
            return -1;
        }
        p->kms_endpoints[p->n_kms_endpoints++] = ep;
        if (check_endpoint(c, ipath, it, ep) != 0)
            return -1;
        bool dup = strcmp(ep, p->kms_endpoint) == 0;
        for (size_t j = 0; j + 1 < p->n_kms_endpoints && !dup; j++)
            dup = strcmp(ep, p->kms_endpoints[j]) == 0;
        if (dup)
            return ys_fail(&c->ys, ipath, it, "duplicate endpoint \"%s\"", ep);
    }
    return 0;
}

static int parse_kms(ctx *c, const yaml_node_t *n, const char *path, policy_ec_provider *p)
{
    static const char *const fields[] = {"apiVersion", "name",    "endpoint",
                                         "cachesize",  "timeout", "endpoints"};
    yaml_node_t *v[6];
    if (ys_map_fields(&c->ys, n, path, fields, 6, v) != 0)
        return -1;
    char fpath[128];
    char *api = NULL;
    snprintf(fpath, sizeof fpath, "%s.apiVersion", path);
    if (get_string(c, v[0], fpath, &api) != 0) {
        free(api);
        return -1;
    }
    if (!*api || strcmp(api, "v1") == 0) {
        p->type = CRYPTO_PROVIDER_KMS_V1; /* v1/defaults.go */
    } else if (strcmp(api, "v2") == 0) {
        p->type = CRYPTO_PROVIDER_KMS_V2;
    } else {
        ys_fail(&c->ys, fpath, v[0],
                "unsupported apiVersion \"%.64s\" for KMS provider, only v1 and v2 "
                "are supported",
                api);
        free(api);
        return -1;
    }
    free(api);
    const yaml_node_t *at = v[0] ? v[0] : n;
    snprintf(fpath, sizeof fpath, "%s.name", path);
    if (get_string(c, v[1], fpath, &p->kms_name) != 0)
        return -1;
    if (!*p->kms_name)
        return ys_fail(&c->ys, fpath, v[1] ? v[1] : n, "KMS provider name is required");
    if (p->type == CRYPTO_PROVIDER_KMS_V2 && strchr(p->kms_name, ':'))
        return ys_fail(&c->ys, fpath, v[1], "KMS v2 provider name \"%s\" must not contain ':'",
                       p->kms_name);
    snprintf(fpath, sizeof fpath, "%s.endpoint", path);
    if (get_string(c, v[2], fpath, &p->kms_endpoint) != 0)
        return -1;
    if (check_endpoint(c, fpath, v[2] ? v[2] : n, p->kms_endpoint) != 0)
        return -1;
    if (!ys_is_null(v[5]) && parse_kms_endpoints(c, v[5], path, p) != 0)
        return -1;
    snprintf(fpath, sizeof fpath, "%s.cachesize", path);
    int rc = get_int32(c, v[3], fpath, &p->kms_cachesize);
    if (rc < 0)
        return -1;
    p->kms_has_cachesize = rc == 0;
    if (p->type == CRYPTO_PROVIDER_KMS_V2 && p->kms_has_cachesize)
        return ys_fail(&c->ys, fpath, v[3], "cachesize is not supported for KMS v2");
    if (p->type == CRYPTO_PROVIDER_KMS_V1) {
        if (!p->kms_has_cachesize)
            p->kms_cachesize = 1000; /* v1/defaults.go */
        else if (p->kms_cachesize == 0)
            return ys_fail(&c->ys, fpath, v[3],
                           "cachesize must not be 0 (a negative value disables the "
                           "DEK cache)");
    }
    snprintf(fpath, sizeof fpath, "%s.timeout", path);
    p->kms_timeout_s = 3; /* v1/defaults.go */
    if (!ys_is_null(v[4])) {
        char *t = NULL;
        if (get_string(c, v[4], fpath, &t) != 0) {
            free(t);
            return -1;
        }
        es_error derr;
        rc = duration_parse(t, &p->kms_timeout_s, &derr);
        free(t);
        if (rc != 0)
            return ys_fail(&c->ys, fpath, v[4], "%s", derr.msg);
        if (!(p->kms_timeout_s > 0))
            return ys_fail(&c->ys, fpath, v[4], "timeout must be a positive duration");
    }
    (void)at;
    return 0;
}

static int parse_provider(ctx *c, const yaml_node_t *n, size_t ri, size_t pi, policy_ec_provider *p)
{
    static const char *const fields[] = {"identity", "aescbc", "aesgcm", "secretbox", "kms"};
    static const enum crypto_provider_type types[] = {
        CRYPTO_PROVIDER_IDENTITY, CRYPTO_PROVIDER_AESCBC, CRYPTO_PROVIDER_AESGCM,
        CRYPTO_PROVIDER_SECRETBOX, CRYPTO_PROVIDER_KMS_V1};
    char path[64];
    snprintf(path, sizeof path, "resources[%zu].providers[%zu]", ri, pi);
    yaml_node_t *v[5];
    if (ys_map_fields(&c->ys, n, path, fields, 5, v) != 0)
        return -1;
    int chosen = -1, count = 0;
    char names[64] = "";
    for (int i = 0; i < 5; i++) {
        if (ys_is_null(v[i]))
            continue;
        if (count++ == 0)
            chosen = i;
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s",
                 count > 1 ? " and " : "", fields[i]);
    }
    if (count != 1)
        return ys_fail(&c->ys, path, n,
                       "exactly one provider type must be set (identity, aescbc, aesgcm, secretbox "
                       "or kms), got %s",
                       count ? names : "none");
    p->type = types[chosen];
    snprintf(p->path, sizeof p->path, "%s.%s", path, fields[chosen]);
    switch (p->type) {
    case CRYPTO_PROVIDER_IDENTITY:
        return ys_map_fields(&c->ys, v[chosen], p->path, NULL, 0, NULL);
    case CRYPTO_PROVIDER_KMS_V1:
        c->d->has_kms = true;
        return parse_kms(c, v[chosen], p->path, p);
    default:
        return parse_keyed(c, v[chosen], p->path, p);
    }
}

/* KMS names must be unique (kube-apiserver requires it when any is v2, or for all when
 * automatic reload is on; etcdseal reloads on SIGHUP, so always). */
static int check_kms_names(ctx *c)
{
    const policy_ec_doc *d = c->d;
    for (size_t r = 0; r < d->n_rules; r++)
        for (size_t i = 0; i < d->rules[r].n_providers; i++) {
            const policy_ec_provider *p = &d->rules[r].providers[i];
            if (!p->kms_name)
                continue;
            for (size_t r2 = 0; r2 <= r; r2++)
                for (size_t j = 0; j < d->rules[r2].n_providers; j++) {
                    const policy_ec_provider *q = &d->rules[r2].providers[j];
                    if (q == p)
                        goto next;
                    if (q->kms_name && strcmp(q->kms_name, p->kms_name) == 0) {
                        char path[96];
                        snprintf(path, sizeof path, "%s.name", p->path);
                        return ys_fail(&c->ys, path, NULL,
                                       "duplicate KMS provider name \"%s\" (also %s); names must "
                                       "be unique",
                                       p->kms_name, q->path);
                    }
                }
        next:;
        }
    return 0;
}

/* ------------------------------------------------------------------ document */

static int parse_rule(ctx *c, const yaml_node_t *n, size_t ri, policy_ec_rule *rule)
{
    static const char *const fields[] = {"resources", "providers"};
    char path[64];
    snprintf(path, sizeof path, "resources[%zu]", ri);
    yaml_node_t *v[2];
    if (ys_map_fields(&c->ys, n, path, fields, 2, v) != 0)
        return -1;
    char fpath[80];
    snprintf(fpath, sizeof fpath, "%s.resources", path);
    yaml_node_item_t *ritems;
    long nr = ys_seq_items(&c->ys, v[0], fpath, &ritems);
    if (nr < 0)
        return -1;
    if (nr == 0)
        return ys_fail(&c->ys, fpath, v[0] ? v[0] : n, "at least one resource is required");
    rule->resources = calloc((size_t)nr, sizeof *rule->resources);
    if (!rule->resources)
        return ys_fail(&c->ys, fpath, n, "out of memory");
    for (long i = 0; i < nr; i++) {
        char ipath[96];
        snprintf(ipath, sizeof ipath, "%s[%ld]", fpath, i);
        rule->n_resources++;
        if (parse_resource(c, ys_node(&c->ys, ritems[i]), ipath, &rule->resources[i]) != 0)
            return -1;
    }
    if (check_entry_overlaps(c, rule, ri, ritems) != 0 || check_masking(c, ri, ritems) != 0)
        return -1;
    snprintf(fpath, sizeof fpath, "%s.providers", path);
    yaml_node_item_t *pitems;
    long np = ys_seq_items(&c->ys, v[1], fpath, &pitems);
    if (np < 0)
        return -1;
    if (np == 0)
        return ys_fail(&c->ys, fpath, v[1] ? v[1] : n, "at least one provider is required");
    rule->providers = calloc((size_t)np, sizeof *rule->providers);
    if (!rule->providers)
        return ys_fail(&c->ys, fpath, n, "out of memory");
    for (long i = 0; i < np; i++) {
        rule->n_providers++;
        if (parse_provider(c, ys_node(&c->ys, pitems[i]), ri, (size_t)i, &rule->providers[i]) != 0)
            return -1;
    }
    return 0;
}

static int parse_root(ctx *c, const yaml_node_t *root)
{
    static const char *const fields[] = {"apiVersion", "kind", "resources"};
    yaml_node_t *v[3];
    if (!root)
        return ys_fail(&c->ys, NULL, NULL, "empty document");
    if (ys_map_fields(&c->ys, root, "", fields, 3, v) != 0)
        return -1;
    char *api = NULL, *kind = NULL;
    int rc = -1;
    if (get_string(c, v[0], "apiVersion", &api) != 0 || get_string(c, v[1], "kind", &kind) != 0)
        goto out;
    if (!*kind) {
        ys_fail(&c->ys, "kind", v[1] ? v[1] : root, "kind is required (EncryptionConfiguration)");
        goto out;
    }
    if (!*api) {
        ys_fail(&c->ys, "apiVersion", v[0] ? v[0] : root,
                "apiVersion is required (apiserver.config.k8s.io/v1)");
        goto out;
    }
    if (strcmp(kind, "EncryptionConfiguration") == 0) {
        if (strcmp(api, "apiserver.config.k8s.io/v1") != 0) {
            ys_fail(&c->ys, "apiVersion", v[0],
                    "unsupported apiVersion \"%.64s\" for kind "
                    "EncryptionConfiguration (want apiserver.config.k8s.io/v1)",
                    api);
            goto out;
        }
    } else if (strcmp(kind, "EncryptionConfig") == 0) {
        if (strcmp(api, "v1") != 0) {
            ys_fail(&c->ys, "apiVersion", v[0],
                    "unsupported apiVersion \"%.64s\" for legacy kind "
                    "EncryptionConfig (want v1)",
                    api);
            goto out;
        }
        c->d->legacy_kind = true;
    } else {
        ys_fail(&c->ys, "kind", v[1], "unsupported kind \"%.64s\" (want EncryptionConfiguration)",
                kind);
        goto out;
    }
    yaml_node_item_t *items;
    long n = ys_seq_items(&c->ys, v[2], "resources", &items);
    if (n < 0)
        goto out;
    if (n == 0) {
        ys_fail(&c->ys, "resources", v[2] ? v[2] : root,
                "at least one resources entry is required");
        goto out;
    }
    if (n > MAX_RULES) {
        ys_fail(&c->ys, "resources", v[2], "too many entries");
        goto out;
    }
    c->d->rules = calloc((size_t)n, sizeof *c->d->rules);
    if (!c->d->rules) {
        ys_fail(&c->ys, "resources", v[2], "out of memory");
        goto out;
    }
    for (long i = 0; i < n; i++) {
        c->d->n_rules++;
        if (parse_rule(c, ys_node(&c->ys, items[i]), (size_t)i, &c->d->rules[i]) != 0)
            goto out;
    }
    rc = check_kms_names(c);
out:
    free(api);
    free(kind);
    return rc;
}

int policy_encryption_parse_buffer(const char *name, const char *data, size_t len,
                                   policy_ec_doc **out, es_error *err)
{
    *out = NULL;
    ctx c = {.ys = {.name = name ? name : "<config>",
                    .err = err,
                    .max_items = MAX_ITEMS,
                    .flags = YS_LINE_SUFFIX | YS_NULL_MAPPING_EMPTY | YS_NULL_KEYS_REFUSED |
                             YS_SCALAR_KIND_TEXT}};
    if (secret_init() != 0)
        return ys_fail(&c.ys, NULL, NULL, "libsodium failed to initialise");
    if (len > POLICY_EC_MAX_FILE_BYTES)
        return ys_fail(&c.ys, NULL, NULL, "file is larger than %u bytes", POLICY_EC_MAX_FILE_BYTES);
    yaml_document_t doc;
    if (ys_load_document(&c.ys, data, len, &doc) != 0)
        return -1;
    int rc = -1;
    policy_ec_doc *d = calloc(1, sizeof *d);
    if (!d || !(d->name = strdup(c.ys.name))) {
        ys_fail(&c.ys, NULL, NULL, "out of memory");
    } else {
        c.d = d;
        rc = parse_root(&c, yaml_document_get_root_node(&doc));
    }
    yaml_wipe_document(&doc);
    yaml_document_delete(&doc);
    if (rc != 0) {
        policy_ec_doc_free(d);
        return -1;
    }
    *out = d;
    return 0;
}

int policy_encryption_parse(const char *path, policy_ec_doc **out, es_error *err)
{
    *out = NULL;
    struct stat st;
    int fd = ys_open_file(path, POLICY_EC_MAX_FILE_BYTES, &st, err);
    if (fd < 0)
        return -1;
    /* The file holds keys: read into guarded memory, wiped on free. */
    secret_t *raw = secret_new(NULL, (size_t)st.st_size + 1);
    if (!raw) {
        close(fd);
        return es_error_set(err, 1, "%s: out of memory", path);
    }
    size_t got = ys_read_and_close(fd, raw->bytes, (size_t)st.st_size);
    int rc = policy_encryption_parse_buffer(path, (const char *)raw->bytes, got, out, err);
    secret_free(raw);
    if (rc == 0) {
        (*out)->has_file_mode = true;
        (*out)->file_mode = (unsigned)(st.st_mode & 07777);
    }
    return rc;
}

void policy_ec_doc_drop_secrets(policy_ec_doc *d)
{
    if (!d)
        return;
    for (size_t r = 0; r < d->n_rules; r++)
        for (size_t p = 0; p < d->rules[r].n_providers; p++)
            for (size_t k = 0; k < d->rules[r].providers[p].n_keys; k++) {
                secret_free(d->rules[r].providers[p].keys[k].secret);
                d->rules[r].providers[p].keys[k].secret = NULL;
            }
}

void policy_ec_doc_free(policy_ec_doc *d)
{
    if (!d)
        return;
    policy_ec_doc_drop_secrets(d);
    for (size_t r = 0; r < d->n_rules; r++) {
        policy_ec_rule *rule = &d->rules[r];
        for (size_t i = 0; i < rule->n_resources; i++) {
            free(rule->resources[i].text);
            free(rule->resources[i].group);
            free(rule->resources[i].resource);
        }
        free(rule->resources);
        for (size_t p = 0; p < rule->n_providers; p++) {
            policy_ec_provider *pr = &rule->providers[p];
            for (size_t k = 0; k < pr->n_keys; k++)
                free(pr->keys[k].name);
            free(pr->keys);
            free(pr->kms_name);
            free(pr->kms_endpoint);
            for (size_t e = 0; e < pr->n_kms_endpoints; e++)
                free(pr->kms_endpoints[e]);
            free(pr->kms_endpoints);
        }
        free(rule->providers);
    }
    free(d->rules);
    free(d->name);
    free(d);
}
