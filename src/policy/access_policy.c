/* access_policy.c - strict libyaml loader of the access policy and the verdict function (see
 * access_policy.h and docs/access-policy.md).
 *
 * The YAML is scanned as events first (one document, no aliases: a small file must not expand
 * into huge lists), then loaded as a document and walked field by field: unknown fields,
 * duplicate fields and wrong types are errors naming file, setting path and line. Verdicts walk
 * the rules in order; with a handful of rules that is faster than any index and allocation-free.
 */
#include "policy/access_policy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yaml.h>

#include "policy/yaml_strict.h"

#define MAX_RULES 1024
#define MAX_ITEMS 1024
#define MAX_PASSWORD_BYTES 4096

enum subject_kind { SUBJ_CN, SUBJ_DNS, SUBJ_URI, SUBJ_ANONYMOUS };

typedef struct subject {
    enum subject_kind kind;
    char *pattern; /* NULL for SUBJ_ANONYMOUS */
} subject;

typedef struct prefix {
    uint8_t *bytes;
    size_t len;
    uint8_t *end; /* access_prefix_end(bytes) */
    size_t end_len;
    bool unbounded; /* no prefix end: every key >= bytes */
} prefix;

typedef struct rule {
    char *name;
    subject *subjects;
    size_t n_subjects;
    prefix *prefixes;
    size_t n_prefixes;
    unsigned verbs;
    char *etcd_user;
    secret_t *etcd_password;
} rule;

struct access_policy {
    atomic_int refs;
    rule *rules;
    size_t n_rules;
};

/* ------------------------------------------------------------------ helpers */

size_t access_prefix_end(const uint8_t *prefix, size_t len, uint8_t *out)
{
    for (size_t i = len; i-- > 0;) {
        if (prefix[i] < 0xff) {
            memcpy(out, prefix, i);
            out[i] = (uint8_t)(prefix[i] + 1);
            return i + 1;
        }
    }
    out[0] = 0;
    return 1;
}

bool access_glob_match(const char *pattern, const char *s)
{
    /* iterative matcher with one backtrack point: linear in practice, no recursion */
    const char *star = NULL, *resume = NULL;
    while (*s) {
        if (*pattern == '*') {
            star = pattern++;
            resume = s;
        } else if (*pattern == *s) {
            pattern++;
            s++;
        } else if (star) {
            pattern = star + 1;
            s = ++resume;
        } else {
            return false;
        }
    }
    while (*pattern == '*')
        pattern++;
    return *pattern == '\0';
}

const char *access_verb_name(unsigned verb)
{
    switch (verb) {
    case ACCESS_VERB_READ:
        return "read";
    case ACCESS_VERB_WRITE:
        return "write";
    case ACCESS_VERB_LEASE:
        return "lease";
    case ACCESS_VERB_ADMIN:
        return "admin";
    default:
        return "?";
    }
}

static void rule_free(rule *r)
{
    free(r->name);
    for (size_t i = 0; i < r->n_subjects; i++)
        free(r->subjects[i].pattern);
    free(r->subjects);
    for (size_t i = 0; i < r->n_prefixes; i++) {
        free(r->prefixes[i].bytes);
        free(r->prefixes[i].end);
    }
    free(r->prefixes);
    free(r->etcd_user);
    secret_free(r->etcd_password);
}

static void destroy(access_policy *p)
{
    for (size_t i = 0; i < p->n_rules; i++)
        rule_free(&p->rules[i]);
    free(p->rules);
    free(p);
}

access_policy *access_policy_ref(access_policy *p)
{
    if (p)
        atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    return p;
}

void access_policy_unref(access_policy *p)
{
    if (p && atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1)
        destroy(p);
}

size_t access_policy_rule_count(const access_policy *p)
{
    return p ? p->n_rules : 0;
}

/* ------------------------------------------------------------------ verdicts */

static bool subject_matches(const subject *s, const access_identity *id)
{
    if (s->kind == SUBJ_ANONYMOUS)
        return !id->has_cert;
    if (!id->has_cert)
        return false;
    switch (s->kind) {
    case SUBJ_CN:
        return id->cn && access_glob_match(s->pattern, id->cn);
    case SUBJ_DNS:
        for (size_t i = 0; i < id->n_dns; i++)
            if (access_glob_match(s->pattern, id->dns[i]))
                return true;
        return false;
    case SUBJ_URI:
        for (size_t i = 0; i < id->n_uris; i++)
            if (access_glob_match(s->pattern, id->uris[i]))
                return true;
        return false;
    default:
        return false;
    }
}

static bool rule_matches(const rule *r, const access_identity *id)
{
    for (size_t i = 0; i < r->n_subjects; i++)
        if (subject_matches(&r->subjects[i], id))
            return true;
    return false;
}

static int bytes_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen ? 1 : 0;
}

/* [key, range_end) inside [P, prefix_end(P)) */
static bool prefix_covers(const prefix *p, const uint8_t *key, size_t key_len,
                          const uint8_t *range_end, size_t range_end_len)
{
    if (key_len < p->len || (p->len && memcmp(key, p->bytes, p->len) != 0))
        return false;
    if (range_end_len == 0 || p->unbounded)
        return true;
    if (range_end_len == 1 && range_end[0] == 0)
        return false; /* to the end of the keyspace: leaves a bounded prefix */
    return bytes_cmp(range_end, range_end_len, p->end, p->end_len) <= 0;
}

bool access_policy_check(const access_policy *p, const access_identity *id, unsigned verb,
                         const uint8_t *key, size_t key_len, const uint8_t *range_end,
                         size_t range_end_len)
{
    if (!p || !id)
        return false;
    static const uint8_t empty[1];
    if (key && !key_len)
        key = empty;
    for (size_t i = 0; i < p->n_rules; i++) {
        const rule *r = &p->rules[i];
        if (!(r->verbs & verb) || !rule_matches(r, id))
            continue;
        if (!key)
            return true;
        for (size_t k = 0; k < r->n_prefixes; k++)
            if (prefix_covers(&r->prefixes[k], key, key_len, range_end, range_end_len))
                return true;
    }
    return false;
}

bool access_policy_known(const access_policy *p, const access_identity *id)
{
    for (size_t i = 0; p && id && i < p->n_rules; i++)
        if (rule_matches(&p->rules[i], id))
            return true;
    return false;
}

bool access_policy_etcd_user(const access_policy *p, const access_identity *id,
                             access_etcd_user *out)
{
    for (size_t i = 0; p && id && i < p->n_rules; i++) {
        const rule *r = &p->rules[i];
        if (r->etcd_user && rule_matches(r, id)) {
            out->name = r->etcd_user;
            out->password = r->etcd_password;
            return true;
        }
    }
    return false;
}

/* ------------------------------------------------------------------ loader: scalars */

/* A string scalar. Plain scalars YAML 1.1 would read as booleans or numbers are refused, so
 * `verbs: [yes]` or `etcdUser: 123` fail loudly instead of meaning something surprising. */
static int get_string(ys_ctx *c, const yaml_node_t *n, const char *path, const char **out)
{
    if (!n || n->type != YAML_SCALAR_NODE || ys_is_null(n))
        return ys_fail(c, path, n, "expected a string, got %s", ys_type_text(c, n));
    const char *s = (const char *)n->data.scalar.value;
    if (strlen(s) != n->data.scalar.length)
        return ys_fail(c, path, n, "contains a NUL byte");
    if (ys_scalar_kind(n) == YS_BOOL)
        return ys_fail(c, path, n, "expected a string, got the boolean %s (quote it)", s);
    if (n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
        const char *d = s + (*s == '-' || *s == '+');
        if (*d >= '0' && *d <= '9' && strspn(d, "0123456789._eExXabcdefABCDEF") == strlen(d))
            return ys_fail(c, path, n, "expected a string, got the number %s (quote it)", s);
    }
    *out = s;
    return 0;
}

/* ------------------------------------------------------------------ loader: fields */

static int parse_subject(ys_ctx *c, const yaml_node_t *n, const char *path, subject *s)
{
    const char *t;
    if (get_string(c, n, path, &t) != 0)
        return -1;
    static const struct {
        const char *tag;
        enum subject_kind kind;
    } tags[] = {{"CN=", SUBJ_CN}, {"DNS:", SUBJ_DNS}, {"URI:", SUBJ_URI}};
    if (!strcmp(t, "anonymous")) {
        s->kind = SUBJ_ANONYMOUS;
        return 0;
    }
    for (size_t i = 0; i < sizeof tags / sizeof tags[0]; i++) {
        size_t tl = strlen(tags[i].tag);
        if (strncmp(t, tags[i].tag, tl) != 0)
            continue;
        if (!t[tl])
            return ys_fail(c, path, n, "empty pattern after \"%s\"", tags[i].tag);
        s->kind = tags[i].kind;
        s->pattern = strdup(t + tl);
        return s->pattern ? 0 : ys_fail(c, path, n, "out of memory");
    }
    return ys_fail(c, path, n,
                   "subject \"%.64s\" must be \"CN=<pattern>\", \"DNS:<pattern>\", "
                   "\"URI:<pattern>\" or \"anonymous\"",
                   t);
}

static int parse_verb(ys_ctx *c, const yaml_node_t *n, const char *path, unsigned *verbs)
{
    const char *t;
    if (get_string(c, n, path, &t) != 0)
        return -1;
    static const unsigned all[] = {ACCESS_VERB_READ, ACCESS_VERB_WRITE, ACCESS_VERB_LEASE,
                                   ACCESS_VERB_ADMIN};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (!strcmp(t, access_verb_name(all[i]))) {
            if (*verbs & all[i])
                return ys_fail(c, path, n, "verb \"%s\" listed twice", t);
            *verbs |= all[i];
            return 0;
        }
    return ys_fail(c, path, n, "unknown verb \"%.64s\" (read, write, lease or admin)", t);
}

static int parse_prefix(ys_ctx *c, const yaml_node_t *n, const char *path, prefix *p)
{
    const char *t;
    if (n && n->type == YAML_SCALAR_NODE && n->data.scalar.length == 0 && !ys_is_null(n))
        t = ""; /* "" (quoted): the whole keyspace */
    else if (get_string(c, n, path, &t) != 0)
        return -1;
    p->len = strlen(t);
    p->bytes = malloc(p->len + 1);
    p->end = malloc(p->len + 1);
    if (!p->bytes || !p->end)
        return ys_fail(c, path, n, "out of memory");
    memcpy(p->bytes, t, p->len + 1);
    p->end_len = access_prefix_end(p->bytes, p->len, p->end);
    p->unbounded = p->end_len == 1 && p->end[0] == 0;
    return 0;
}

/* Reads the etcd user's password: a regular file, mode 0600 or stricter (like key files), one
 * line (a trailing newline is dropped), into guarded memory. */
static int read_password(ys_ctx *c, const yaml_node_t *n, const char *path, const char *file,
                         secret_t **out)
{
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ys_fail(c, path, n, "cannot open %s: %s", file, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return ys_fail(c, path, n, "%s is not a regular file", file);
    }
    if (st.st_mode & 077) {
        close(fd);
        return ys_fail(c, path, n, "%s is readable by group or others (mode %04o): chmod 600 it",
                       file, (unsigned)(st.st_mode & 07777));
    }
    secret_t *buf = secret_new(NULL, MAX_PASSWORD_BYTES);
    if (!buf) {
        close(fd);
        return ys_fail(c, path, n, "out of memory");
    }
    size_t got = 0;
    for (;;) {
        ssize_t r = read(fd, buf->bytes + got, MAX_PASSWORD_BYTES - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
        if (got == MAX_PASSWORD_BYTES)
            break;
    }
    close(fd);
    if (got == MAX_PASSWORD_BYTES) {
        secret_free(buf);
        return ys_fail(c, path, n, "%s is larger than %d bytes", file, MAX_PASSWORD_BYTES - 1);
    }
    while (got && (buf->bytes[got - 1] == '\n' || buf->bytes[got - 1] == '\r'))
        got--;
    if (!got || memchr(buf->bytes, '\n', got)) {
        secret_free(buf);
        return ys_fail(c, path, n, "%s must hold the password on one line", file);
    }
    *out = secret_new(buf->bytes, got);
    secret_free(buf);
    return *out ? 0 : ys_fail(c, path, n, "out of memory");
}

static int parse_rule(ys_ctx *c, const yaml_node_t *n, size_t index, rule *r)
{
    static const char *const fields[] = {"name",        "subjects", "verbs",
                                         "keyPrefixes", "etcdUser", "etcdPasswordFile"};
    enum { F_NAME, F_SUBJECTS, F_VERBS, F_PREFIXES, F_USER, F_PASSWORD, F_COUNT };
    char path[96], item[128];
    snprintf(path, sizeof path, "rules[%zu]", index);
    yaml_node_t *v[F_COUNT];
    if (ys_map_fields(c, n, path, fields, F_COUNT, v) != 0)
        return -1;
    const char *s;
    if (v[F_NAME]) {
        snprintf(item, sizeof item, "%s.name", path);
        if (get_string(c, v[F_NAME], item, &s) != 0 || !(r->name = strdup(s)))
            return -1;
    }
    yaml_node_item_t *items;
    snprintf(item, sizeof item, "%s.subjects", path);
    long ns = ys_seq_items(c, v[F_SUBJECTS], item, &items);
    if (ns < 0)
        return -1;
    if (ns == 0)
        return ys_fail(c, item, v[F_SUBJECTS] ? v[F_SUBJECTS] : n,
                       "at least one subject is required");
    if (!(r->subjects = calloc((size_t)ns, sizeof *r->subjects)))
        return ys_fail(c, path, n, "out of memory");
    for (long i = 0; i < ns; i++) {
        snprintf(item, sizeof item, "%s.subjects[%ld]", path, i);
        if (parse_subject(c, ys_node(c, items[i]), item, &r->subjects[i]) != 0)
            return -1;
        r->n_subjects++;
    }
    snprintf(item, sizeof item, "%s.verbs", path);
    long nv = ys_seq_items(c, v[F_VERBS], item, &items);
    if (nv < 0)
        return -1;
    if (nv == 0)
        return ys_fail(c, item, v[F_VERBS] ? v[F_VERBS] : n, "at least one verb is required");
    for (long i = 0; i < nv; i++) {
        snprintf(item, sizeof item, "%s.verbs[%ld]", path, i);
        if (parse_verb(c, ys_node(c, items[i]), item, &r->verbs) != 0)
            return -1;
    }
    snprintf(item, sizeof item, "%s.keyPrefixes", path);
    long np = ys_seq_items(c, v[F_PREFIXES], item, &items);
    if (np < 0)
        return -1;
    bool key_verbs = r->verbs & (ACCESS_VERB_READ | ACCESS_VERB_WRITE);
    if (key_verbs && np == 0)
        return ys_fail(c, item, v[F_PREFIXES] ? v[F_PREFIXES] : n,
                       "read and write need at least one key prefix (\"\" = every key)");
    if (!key_verbs && np > 0)
        return ys_fail(c, item, v[F_PREFIXES],
                       "key prefixes only apply to read and write, which this rule does not grant");
    if (np && !(r->prefixes = calloc((size_t)np, sizeof *r->prefixes)))
        return ys_fail(c, path, n, "out of memory");
    for (long i = 0; i < np; i++) {
        snprintf(item, sizeof item, "%s.keyPrefixes[%ld]", path, i);
        if (parse_prefix(c, ys_node(c, items[i]), item, &r->prefixes[i]) != 0)
            return -1;
        r->n_prefixes++;
    }
    if (!v[F_USER] != !v[F_PASSWORD])
        return ys_fail(c, path, v[F_USER] ? v[F_USER] : v[F_PASSWORD],
                       "etcdUser and etcdPasswordFile go together");
    if (v[F_USER]) {
        snprintf(item, sizeof item, "%s.etcdUser", path);
        if (get_string(c, v[F_USER], item, &s) != 0 || !(r->etcd_user = strdup(s)))
            return -1;
        snprintf(item, sizeof item, "%s.etcdPasswordFile", path);
        if (get_string(c, v[F_PASSWORD], item, &s) != 0 ||
            read_password(c, v[F_PASSWORD], item, s, &r->etcd_password) != 0)
            return -1;
    }
    return 0;
}

static int parse_root(ys_ctx *c, const yaml_node_t *root, access_policy *p)
{
    static const char *const fields[] = {"apiVersion", "kind", "rules"};
    yaml_node_t *v[3];
    if (!root)
        return ys_fail(c, NULL, NULL, "empty document");
    if (ys_map_fields(c, root, "", fields, 3, v) != 0)
        return -1;
    const char *s;
    if (!v[0])
        return ys_fail(c, "apiVersion", root, "missing (must be \"etcdseal.io/v1\")");
    if (get_string(c, v[0], "apiVersion", &s) != 0)
        return -1;
    if (strcmp(s, "etcdseal.io/v1") != 0)
        return ys_fail(c, "apiVersion", v[0], "must be \"etcdseal.io/v1\", not \"%.64s\"", s);
    if (!v[1])
        return ys_fail(c, "kind", root, "missing (must be \"AccessPolicy\")");
    if (get_string(c, v[1], "kind", &s) != 0)
        return -1;
    if (strcmp(s, "AccessPolicy") != 0)
        return ys_fail(c, "kind", v[1], "must be \"AccessPolicy\", not \"%.64s\"", s);
    yaml_node_item_t *items;
    long n = ys_seq_items(c, v[2], "rules", &items);
    if (n < 0)
        return -1;
    if (n > MAX_RULES)
        return ys_fail(c, "rules", v[2], "too many rules (at most %d)", MAX_RULES);
    if (n && !(p->rules = calloc((size_t)n, sizeof *p->rules)))
        return ys_fail(c, "rules", v[2], "out of memory");
    for (long i = 0; i < n; i++) {
        p->n_rules++;
        if (parse_rule(c, ys_node(c, items[i]), (size_t)i, &p->rules[i]) != 0)
            return -1;
    }
    return 0;
}

int access_policy_load_buffer(const char *name, const char *data, size_t len, access_policy **out,
                              es_error *err)
{
    *out = NULL;
    ys_ctx c = {.name = name ? name : "<access-policy>", .err = err, .max_items = MAX_ITEMS};
    if (secret_init() != 0)
        return ys_fail(&c, NULL, NULL, "libsodium failed to initialise");
    if (len > ACCESS_POLICY_MAX_FILE_BYTES)
        return ys_fail(&c, NULL, NULL, "file is larger than %u bytes",
                       ACCESS_POLICY_MAX_FILE_BYTES);
    yaml_document_t doc;
    if (ys_load_document(&c, data, len, &doc) != 0)
        return -1;
    int rc = -1;
    access_policy *p = calloc(1, sizeof *p);
    if (!p) {
        ys_fail(&c, NULL, NULL, "out of memory");
    } else {
        atomic_init(&p->refs, 1);
        rc = parse_root(&c, yaml_document_get_root_node(&doc), p);
    }
    yaml_document_delete(&doc);
    if (rc != 0) {
        if (p)
            destroy(p);
        return -1;
    }
    *out = p;
    return 0;
}

int access_policy_load(const char *path, access_policy **out, es_error *err)
{
    *out = NULL;
    struct stat st;
    int fd = ys_open_file(path, ACCESS_POLICY_MAX_FILE_BYTES, &st, err);
    if (fd < 0)
        return -1;
    char *data = malloc((size_t)st.st_size + 1);
    if (!data) {
        close(fd);
        return es_error_set(err, 1, "%s: out of memory", path);
    }
    size_t got = ys_read_and_close(fd, data, (size_t)st.st_size);
    int rc = access_policy_load_buffer(path, data, got, out, err);
    free(data);
    return rc;
}
