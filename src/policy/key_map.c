/* key_map.c - builds the key -> target lookup structures and the per-rule views (key_map.h).
 *
 * Three open-addressing hash tables keyed by byte spans of the etcd key (so a lookup hashes
 * straight out of the key, no copy): `segs` (built-in layout: first segment, or the first two
 * for "services/..."), `grp_exact` ("<group>/<resource>") and `grp_wild` ("<group>") for keys
 * whose first segment contains a dot; plus the *.* target and the sorted literal prefixes with
 * parent links (longest-prefix walk). Segments resolve exact -> (group,*) -> (*,*) at build time.
 */
#include "policy/key_map.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "policy/k8s_resources.h"

typedef struct hslot {
    const char *key; /* NULL = empty */
    size_t len;
    int target;
} hslot;

typedef struct htab {
    hslot *slots;
    size_t mask;
} htab;

typedef struct seg {
    const char *segment; /* "secrets", "services/specs" (table or dynamic copy) */
    const char *group;
    const char *resource;
    int target; /* resolved */
    bool dynamic;
} seg;

typedef struct literal {
    const char *prefix;
    size_t len;
    int target;
    int parent; /* index of the longest other literal that is a prefix of this one, or -1 */
} literal;

typedef struct rule_view_store {
    policy_rule_view view;
    char **prefixes;
    size_t n_prefixes, cap_prefixes;
    char **warnings;
    size_t n_warnings, cap_warnings;
    char *providers;
} rule_view_store;

struct policy_keymap {
    char *prefix;
    size_t prefix_len;
    policy_target *targets;
    size_t n_targets;
    seg *segs;
    size_t n_segs;
    htab seg_tab, grp_exact, grp_wild;
    int all_target;
    int every_target; /* "*": keys nothing else covers, -1 = none */
    literal *lits;
    size_t n_lits;
    char **owned; /* strings the hash tables point to */
    size_t n_owned, cap_owned;
    rule_view_store *views;
    size_t n_views;
    char **file_warnings;
    size_t n_file_warnings, cap_file_warnings;
};

/* ------------------------------------------------------------------ small helpers */

static int push_str(char ***arr, size_t *n, size_t *cap, char *s)
{
    if (!s)
        return -1;
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        char **na = realloc(*arr, nc * sizeof *na);
        if (!na) {
            free(s);
            return -1;
        }
        *arr = na;
        *cap = nc;
    }
    (*arr)[(*n)++] = s;
    return 0;
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *s = NULL;
    if (vasprintf(&s, f, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)p[i];
        h *= 1099511628211ull;
    }
    return h;
}

static int htab_init(htab *t, size_t n)
{
    size_t cap = 16;
    while (cap < n * 2 + 1)
        cap *= 2;
    t->slots = calloc(cap, sizeof *t->slots);
    t->mask = cap - 1;
    return t->slots ? 0 : -1;
}

static hslot *htab_find(const htab *t, const char *k, size_t len)
{
    size_t i = (size_t)hash_bytes(k, len) & t->mask;
    for (;;) {
        hslot *s = &t->slots[i];
        if (!s->key || (s->len == len && memcmp(s->key, k, len) == 0))
            return s;
        i = (i + 1) & t->mask;
    }
}

static int htab_get(const htab *t, const char *k, size_t len)
{
    if (!t->slots)
        return -1;
    const hslot *s = htab_find(t, k, len);
    return s->key ? s->target : -1;
}

/* Inserts unless present (first insert wins). */
static void htab_put(htab *t, const char *k, int target)
{
    hslot *s = htab_find(t, k, strlen(k));
    if (!s->key) {
        s->key = k;
        s->len = strlen(k);
        s->target = target;
    }
}

static const char *own(policy_keymap *m, char *s)
{
    return push_str(&m->owned, &m->n_owned, &m->cap_owned, s) == 0 ? s : NULL;
}

char *policy_storage_prefix_normalize(const char *prefix)
{
    if (!prefix)
        prefix = "/registry";
    size_t n = strlen(prefix);
    char *out = malloc(n + 3);
    if (!out)
        return NULL;
    size_t j = 0;
    out[j++] = '/';
    for (size_t i = 0; i < n; i++) {
        if (prefix[i] == '/' && out[j - 1] == '/')
            continue;
        out[j++] = prefix[i];
    }
    if (out[j - 1] != '/')
        out[j++] = '/';
    out[j] = '\0';
    return out;
}

/* ------------------------------------------------------------------ targets */

static int find_target(const policy_keymap *m, enum policy_res_kind kind, const char *group,
                       const char *resource)
{
    for (size_t i = 0; i < m->n_targets; i++) {
        const policy_target *t = &m->targets[i];
        if (t->kind == kind && strcmp(t->group, group) == 0 && strcmp(t->resource, resource) == 0)
            return (int)i;
    }
    return -1;
}

static int add_rule_to_target(policy_target *t, const policy_ec_rule *rule, size_t ri)
{
    const policy_ec_provider **np =
        realloc(t->providers, (t->n_providers + rule->n_providers) * sizeof *np);
    if (!np)
        return -1;
    t->providers = np;
    for (size_t i = 0; i < rule->n_providers; i++)
        t->providers[t->n_providers++] = &rule->providers[i];
    size_t *nr = realloc(t->rules, (t->n_rules + 1) * sizeof *nr);
    if (!nr)
        return -1;
    t->rules = nr;
    t->rules[t->n_rules++] = ri;
    return 0;
}

static int build_targets(policy_keymap *m, const policy_ec_doc *doc)
{
    size_t total = 0;
    for (size_t r = 0; r < doc->n_rules; r++)
        total += doc->rules[r].n_resources;
    m->targets = calloc(total ? total : 1, sizeof *m->targets);
    if (!m->targets)
        return -1;
    for (size_t r = 0; r < doc->n_rules; r++) {
        const policy_ec_rule *rule = &doc->rules[r];
        for (size_t i = 0; i < rule->n_resources; i++) {
            const policy_ec_resource *res = &rule->resources[i];
            int t = find_target(m, res->kind, res->group, res->resource);
            if (t < 0) {
                t = (int)m->n_targets++;
                m->targets[t].kind = res->kind;
                m->targets[t].group = res->group;
                m->targets[t].resource = res->resource;
            }
            if (add_rule_to_target(&m->targets[t], rule, r) != 0)
                return -1;
        }
    }
    return 0;
}

/* kube-apiserver's transformerFromOverrides: exact -> (group, *) -> (*, *). */
static int resolve(const policy_keymap *m, const char *group, const char *resource)
{
    int t = find_target(m, POLICY_RES_EXACT, group, resource);
    if (t < 0)
        t = find_target(m, POLICY_RES_GROUP, group, "*");
    if (t < 0)
        t = m->all_target;
    return t;
}

static bool segment_taken(const policy_keymap *m, const char *resource)
{
    size_t rl = strlen(resource);
    for (size_t i = 0; i < m->n_segs; i++) {
        const char *s = m->segs[i].segment;
        if (strncmp(s, resource, rl) == 0 && (s[rl] == '\0' || s[rl] == '/'))
            return true;
    }
    return strcmp(resource, "services") == 0;
}

static bool gr_in_table(const char *group, const char *resource)
{
    for (size_t i = 0; i < k8s_builtins_len; i++)
        if (strcmp(k8s_builtins[i].group, group) == 0 &&
            strcmp(k8s_builtins[i].resource, resource) == 0)
            return true;
    return false;
}

static int build_segments(policy_keymap *m)
{
    m->segs = calloc(k8s_builtins_len + m->n_targets, sizeof *m->segs);
    if (!m->segs)
        return -1;
    for (size_t i = 0; i < k8s_builtins_len; i++) {
        seg *s = &m->segs[m->n_segs++];
        s->segment = k8s_builtins[i].segment;
        s->group = k8s_builtins[i].group;
        s->resource = k8s_builtins[i].resource;
    }
    /* Exact resources of built-in-layout groups that the 1.31 table does not know (newer APIs):
     * assume kube-apiserver's default layout /<prefix>/<resource>/. */
    for (size_t i = 0; i < m->n_targets; i++) {
        const policy_target *t = &m->targets[i];
        if (t->kind != POLICY_RES_EXACT || !k8s_group_uses_builtin_layout(t->group) ||
            gr_in_table(t->group, t->resource) || segment_taken(m, t->resource))
            continue;
        seg *s = &m->segs[m->n_segs++];
        s->segment = t->resource;
        s->group = t->group;
        s->resource = t->resource;
        s->dynamic = true;
    }
    if (htab_init(&m->seg_tab, m->n_segs) != 0)
        return -1;
    for (size_t i = 0; i < m->n_segs; i++) {
        seg *s = &m->segs[i];
        s->target = resolve(m, s->group, s->resource);
        if (s->target >= 0)
            htab_put(&m->seg_tab, s->segment, s->target);
    }
    return 0;
}

static int build_group_tables(policy_keymap *m)
{
    if (htab_init(&m->grp_exact, m->n_targets) != 0 || htab_init(&m->grp_wild, m->n_targets) != 0)
        return -1;
    for (size_t i = 0; i < m->n_targets; i++) {
        const policy_target *t = &m->targets[i];
        if (!strchr(t->group, '.') || t->kind == POLICY_RES_LITERAL)
            continue;
        if (t->kind == POLICY_RES_EXACT) {
            const char *k = own(m, fmt("%s/%s", t->group, t->resource));
            if (!k)
                return -1;
            htab_put(&m->grp_exact, k, (int)i);
        } else if (t->kind == POLICY_RES_GROUP) {
            htab_put(&m->grp_wild, t->group, (int)i);
        }
    }
    return 0;
}

static int lit_cmp(const void *a, const void *b)
{
    const literal *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->prefix, y->prefix, n);
    if (c)
        return c;
    return x->len < y->len ? -1 : x->len > y->len;
}

static int build_literals(policy_keymap *m)
{
    size_t n = 0;
    for (size_t i = 0; i < m->n_targets; i++)
        n += m->targets[i].kind == POLICY_RES_LITERAL;
    if (!n)
        return 0;
    m->lits = calloc(n, sizeof *m->lits);
    int *stack = calloc(n, sizeof *stack);
    if (!m->lits || !stack) {
        free(stack);
        return -1;
    }
    for (size_t i = 0; i < m->n_targets; i++)
        if (m->targets[i].kind == POLICY_RES_LITERAL) {
            literal *l = &m->lits[m->n_lits++];
            l->prefix = m->targets[i].group;
            l->len = strlen(l->prefix);
            l->target = (int)i;
        }
    qsort(m->lits, m->n_lits, sizeof *m->lits, lit_cmp);
    size_t depth = 0;
    for (size_t i = 0; i < m->n_lits; i++) {
        literal *l = &m->lits[i];
        while (depth) {
            const literal *top = &m->lits[stack[depth - 1]];
            if (top->len < l->len && memcmp(top->prefix, l->prefix, top->len) == 0)
                break;
            depth--;
        }
        l->parent = depth ? stack[depth - 1] : -1;
        stack[depth++] = (int)i;
    }
    free(stack);
    return 0;
}

/* ------------------------------------------------------------------ lookup */

static int literal_lookup(const policy_keymap *m, const uint8_t *key, size_t len)
{
    /* Greatest literal <= key; every literal that prefixes the key is one of its ancestors. */
    size_t lo = 0, hi = m->n_lits;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const literal *l = &m->lits[mid];
        size_t n = l->len < len ? l->len : len;
        int c = n ? memcmp(l->prefix, key, n) : 0; /* key may be NULL when empty */
        if (c < 0 || (c == 0 && l->len <= len))
            lo = mid + 1;
        else
            hi = mid;
    }
    int i = (int)lo - 1;
    while (i >= 0) {
        const literal *l = &m->lits[i];
        if (l->len <= len && (l->len == 0 || memcmp(l->prefix, key, l->len) == 0))
            return l->target;
        i = l->parent;
    }
    return -1;
}

static size_t seg_len(const uint8_t *p, size_t n)
{
    const uint8_t *slash = memchr(p, '/', n);
    return slash ? (size_t)(slash - p) : n;
}

static int keymap_lookup_rules(const policy_keymap *m, const uint8_t *key, size_t key_len);

int policy_keymap_lookup(const policy_keymap *m, const uint8_t *key, size_t key_len)
{
    if (!m)
        return -1;
    int t = keymap_lookup_rules(m, key, key_len);
    return t >= 0 ? t : m->every_target;
}

static int keymap_lookup_rules(const policy_keymap *m, const uint8_t *key, size_t key_len)
{
    if (m->n_lits) {
        int t = literal_lookup(m, key, key_len);
        if (t >= 0)
            return t;
    }
    if (key_len < m->prefix_len || memcmp(key, m->prefix, m->prefix_len) != 0)
        return -1;
    const uint8_t *rest = key + m->prefix_len;
    size_t rl = key_len - m->prefix_len;
    size_t s1 = seg_len(rest, rl);
    if (memchr(rest, '.', s1)) {
        /* <group>/<resource>/...: custom resources, apiservices, CRDs */
        int t = -1;
        if (s1 < rl) {
            size_t s2 = seg_len(rest + s1 + 1, rl - s1 - 1);
            t = htab_get(&m->grp_exact, (const char *)rest, s1 + 1 + s2);
        }
        if (t < 0)
            t = htab_get(&m->grp_wild, (const char *)rest, s1);
        return t >= 0 ? t : m->all_target;
    }
    size_t span = s1;
    if (s1 == 8 && memcmp(rest, "services", 8) == 0 && s1 < rl)
        span = s1 + 1 + seg_len(rest + s1 + 1, rl - s1 - 1);
    int t = htab_get(&m->seg_tab, (const char *)rest, span);
    return t >= 0 ? t : m->all_target;
}

/* ------------------------------------------------------------------ views */

static int view_prefix(rule_view_store *v, char *s)
{
    return push_str(&v->prefixes, &v->n_prefixes, &v->cap_prefixes, s);
}

static int view_warn(rule_view_store *v, char *s)
{
    return push_str(&v->warnings, &v->n_warnings, &v->cap_warnings, s);
}

static char *concat_note(const policy_target *t)
{
    if (t->n_rules < 2)
        return strdup("");
    buf_t b = BUF_INIT;
    buf_appendf(&b, " (providers of resources");
    for (size_t i = 0; i < t->n_rules; i++)
        buf_appendf(&b, "%s[%zu]", i ? " + " : "", t->rules[i]);
    buf_appendf(&b, " concatenated)");
    return (char *)b.data;
}

static int describe_resource(policy_keymap *m, rule_view_store *v, const policy_ec_resource *r)
{
    int ti = find_target(m, r->kind, r->group, r->resource);
    const policy_target *t = &m->targets[ti];
    char *note = concat_note(t);
    if (!note)
        return -1;
    int rc = 0;
    const char *P = m->prefix;
    size_t before = v->n_prefixes;
    switch (r->kind) {
    case POLICY_RES_EVERY_KEY:
        rc |= view_prefix(v, fmt("every etcd key that no other rule covers%s", note));
        break;
    case POLICY_RES_LITERAL:
        rc |= view_prefix(v, fmt("%s%s", r->text, note));
        if (strncmp(r->text, P, m->prefix_len) == 0 ||
            (strlen(r->text) < m->prefix_len && strncmp(r->text, P, strlen(r->text)) == 0))
            rc |= view_warn(v, fmt("literal prefix \"%s\" overlaps the Kubernetes storage prefix "
                                   "%s; literal prefixes take precedence over resource rules",
                                   r->text, P));
        break;
    case POLICY_RES_EXACT:
        if (!k8s_group_uses_builtin_layout(r->group)) {
            rc |= view_prefix(v, fmt("%s%s/%s/%s", P, r->group, r->resource, note));
            break;
        }
        for (size_t i = 0; i < m->n_segs; i++) {
            const seg *s = &m->segs[i];
            if (strcmp(s->group, r->group) == 0 && strcmp(s->resource, r->resource) == 0) {
                rc |= view_prefix(v, fmt("%s%s/%s", P, s->segment, note));
                if (s->dynamic)
                    rc |= view_warn(v, fmt("\"%s\" is not a Kubernetes 1.31 built-in resource; "
                                           "assuming its keys are under %s%s/",
                                           r->text, P, s->segment));
            }
        }
        if (v->n_prefixes == before)
            rc |= view_warn(v, fmt("\"%s\" matches no etcd key: %s%s/ holds another resource",
                                   r->text, P, r->resource));
        break;
    case POLICY_RES_GROUP:
        for (size_t i = 0; i < m->n_segs; i++)
            if (m->segs[i].target == ti)
                rc |= view_prefix(v, fmt("%s%s/%s", P, m->segs[i].segment, note));
        if (!k8s_group_uses_builtin_layout(r->group))
            rc |= view_prefix(v, fmt("%s%s/ (any resource of the group not named by an exact "
                                     "rule)%s",
                                     P, r->group, note));
        if (v->n_prefixes == before)
            rc |= view_warn(v, fmt("\"%s\" matches no etcd key (every resource of the group is "
                                   "covered by an exact rule)",
                                   r->text));
        break;
    case POLICY_RES_ALL:
        rc |= view_prefix(v, fmt("%s (every key under the storage prefix that no more specific "
                                 "rule covers)%s",
                                 P, note));
        break;
    }
    free(note);
    return rc ? -1 : 0;
}

static char *describe_providers(const policy_ec_rule *rule)
{
    buf_t b = BUF_INIT;
    if (buf_reserve(&b, 64) != 0)
        return NULL;
    b.data[0] = '\0';
    for (size_t i = 0; i < rule->n_providers; i++) {
        const policy_ec_provider *p = &rule->providers[i];
        if (i)
            buf_appendf(&b, ", ");
        switch (p->type) {
        case CRYPTO_PROVIDER_IDENTITY:
            buf_appendf(&b, "identity");
            break;
        case CRYPTO_PROVIDER_KMS_V1:
            buf_appendf(&b, "kms v1 \"%s\" (%s, cachesize %d, timeout %gs)", p->kms_name,
                        p->kms_endpoint, (int)p->kms_cachesize, p->kms_timeout_s);
            break;
        case CRYPTO_PROVIDER_KMS_V2:
            buf_appendf(&b, "kms v2 \"%s\" (%s, timeout %gs)", p->kms_name, p->kms_endpoint,
                        p->kms_timeout_s);
            break;
        default:
            buf_appendf(&b, "%s[", policy_ec_provider_yaml_name(p->type));
            for (size_t k = 0; k < p->n_keys; k++)
                buf_appendf(&b, "%s%s", k ? "," : "", p->keys[k].name);
            buf_appendf(&b, "]");
        }
    }
    return (char *)b.data;
}

static int provider_warnings(rule_view_store *v, const policy_ec_rule *rule)
{
    int rc = 0;
    if (rule->n_providers && rule->providers[0].type == CRYPTO_PROVIDER_IDENTITY)
        rc |= view_warn(v, fmt("%s: identity is the first provider: new values are written in "
                               "plaintext",
                               rule->providers[0].path));
    for (size_t i = 0; i < rule->n_providers; i++) {
        const policy_ec_provider *p = &rule->providers[i];
        if (p->type == CRYPTO_PROVIDER_AESGCM)
            rc |= view_warn(v, fmt("%s: random 96-bit nonces: rotate the key before about 2^32 "
                                   "writes (kms v2 or secretbox do not have this limit)",
                                   p->path));
        else if (p->type == CRYPTO_PROVIDER_AESCBC)
            rc |= view_warn(v, fmt("%s: aescbc has no integrity protection (CBC without MAC, "
                                   "padding oracle); prefer secretbox, aesgcm or kms v2",
                                   p->path));
        else if (p->type == CRYPTO_PROVIDER_KMS_V1)
            rc |= view_warn(v, fmt("%s: KMS v1 is deprecated (kube-apiserver 1.29+ needs "
                                   "--feature-gates=KMSv1=true); prefer KMS v2",
                                   p->path));
    }
    return rc ? -1 : 0;
}

static int build_views(policy_keymap *m, const policy_ec_doc *doc)
{
    m->views = calloc(doc->n_rules ? doc->n_rules : 1, sizeof *m->views);
    if (!m->views)
        return -1;
    for (size_t r = 0; r < doc->n_rules; r++) {
        rule_view_store *v = &m->views[m->n_views++];
        const policy_ec_rule *rule = &doc->rules[r];
        for (size_t i = 0; i < rule->n_resources; i++)
            if (describe_resource(m, v, &rule->resources[i]) != 0)
                return -1;
        if (provider_warnings(v, rule) != 0 || !(v->providers = describe_providers(rule)))
            return -1;
        v->view.index = r;
        v->view.rule = rule;
        v->view.prefixes = (const char *const *)v->prefixes;
        v->view.n_prefixes = v->n_prefixes;
        v->view.providers = v->providers;
        v->view.warnings = (const char *const *)v->warnings;
        v->view.n_warnings = v->n_warnings;
    }
    if (doc->has_file_mode && (doc->file_mode & 077))
        return push_str(&m->file_warnings, &m->n_file_warnings, &m->cap_file_warnings,
                        fmt("%s is readable by group/others (mode %04o): it holds key material; "
                            "chmod 600",
                            doc->name, doc->file_mode));
    return 0;
}

/* ------------------------------------------------------------------ public */

int policy_keymap_build(const policy_ec_doc *doc, const char *storage_prefix, policy_keymap **out,
                        es_error *err)
{
    *out = NULL;
    policy_keymap *m = calloc(1, sizeof *m);
    if (!m)
        return es_error_set(err, 1, "out of memory");
    m->all_target = -1;
    m->every_target = -1;
    if (!(m->prefix = policy_storage_prefix_normalize(storage_prefix)))
        goto oom;
    m->prefix_len = strlen(m->prefix);
    if (build_targets(m, doc) != 0)
        goto oom;
    m->all_target = find_target(m, POLICY_RES_ALL, "*", "*");
    m->every_target = find_target(m, POLICY_RES_EVERY_KEY, "*", "*");
    if (build_segments(m) != 0 || build_group_tables(m) != 0 || build_literals(m) != 0 ||
        build_views(m, doc) != 0)
        goto oom;
    *out = m;
    return 0;
oom:
    policy_keymap_free(m);
    return es_error_set(err, 1, "%s: out of memory building the key map", doc->name);
}

static void free_strs(char **a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(a[i]);
    free(a);
}

void policy_keymap_free(policy_keymap *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_targets; i++) {
        free(m->targets[i].providers);
        free(m->targets[i].rules);
    }
    free(m->targets);
    free(m->segs);
    free(m->seg_tab.slots);
    free(m->grp_exact.slots);
    free(m->grp_wild.slots);
    free(m->lits);
    free_strs(m->owned, m->n_owned);
    for (size_t i = 0; i < m->n_views; i++) {
        free_strs(m->views[i].prefixes, m->views[i].n_prefixes);
        free_strs(m->views[i].warnings, m->views[i].n_warnings);
        free(m->views[i].providers);
    }
    free(m->views);
    free_strs(m->file_warnings, m->n_file_warnings);
    free(m->prefix);
    free(m);
}

size_t policy_keymap_target_count(const policy_keymap *m)
{
    return m->n_targets;
}

const policy_target *policy_keymap_target(const policy_keymap *m, size_t i)
{
    return i < m->n_targets ? &m->targets[i] : NULL;
}

const char *policy_keymap_storage_prefix(const policy_keymap *m)
{
    return m->prefix;
}

size_t policy_keymap_rule_count(const policy_keymap *m)
{
    return m->n_views;
}

const policy_rule_view *policy_keymap_rule(const policy_keymap *m, size_t i)
{
    return i < m->n_views ? &m->views[i].view : NULL;
}

const char *const *policy_keymap_file_warnings(const policy_keymap *m, size_t *n)
{
    *n = m->n_file_warnings;
    return (const char *const *)m->file_warnings;
}
