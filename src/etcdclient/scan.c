/* scan.c - protected key ranges, paginated Range walks and value classification (scan.h).
 */
#include "etcdclient/scan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/key_map.h"

#define ENC_PREFIX "k8s:enc:"
#define ENC_PREFIX_LEN 8

/* ------------------------------------------------------------------ ranges */

static int push_range(scan_range **r, size_t *n, const char *start)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*r)[i].start, start) == 0)
            return 0;
    scan_range *nr = realloc(*r, (*n + 1) * sizeof *nr);
    if (!nr)
        return -1;
    *r = nr;
    if (!(nr[*n].start = strdup(start)))
        return -1;
    (*n)++;
    return 0;
}

static int cmp_range(const void *a, const void *b)
{
    return strcmp(((const scan_range *)a)->start, ((const scan_range *)b)->start);
}

int scan_ranges_build(const policy_encryption *p, const char *only_prefix, scan_range **out,
                      size_t *n, es_error *err)
{
    *out = NULL;
    *n = 0;
    scan_range *r = NULL;
    size_t cnt = 0;
    int rc = 0;
    if (only_prefix) {
        rc = push_range(&r, &cnt, only_prefix);
    } else {
        bool every = false, resources = false;
        for (size_t i = 0; i < policy_encryption_rule_count(p) && rc == 0; i++) {
            const policy_ec_rule *rule = policy_encryption_rule(p, i)->rule;
            for (size_t j = 0; j < rule->n_resources && rc == 0; j++) {
                const policy_ec_resource *res = &rule->resources[j];
                if (res->kind == POLICY_RES_EVERY_KEY)
                    every = true;
                else if (res->kind == POLICY_RES_LITERAL)
                    rc = push_range(&r, &cnt, res->group);
                else
                    resources = true;
            }
        }
        if (rc == 0 && resources)
            rc = push_range(&r, &cnt, policy_encryption_storage_prefix(p));
        if (rc == 0 && every) {
            scan_ranges_free(r, cnt);
            r = NULL;
            cnt = 0;
            rc = push_range(&r, &cnt, "");
        }
    }
    if (rc != 0) {
        scan_ranges_free(r, cnt);
        return es_error_set(err, 13, "out of memory");
    }
    /* sorted; drop a range whose start has an earlier kept range as prefix */
    if (cnt)
        qsort(r, cnt, sizeof *r, cmp_range);
    size_t kept = 0;
    for (size_t i = 0; i < cnt; i++) {
        if (kept > 0 && strncmp(r[i].start, r[kept - 1].start, strlen(r[kept - 1].start)) == 0) {
            free(r[i].start);
            continue;
        }
        r[kept++] = r[i];
    }
    *out = r;
    *n = kept;
    return 0;
}

void scan_ranges_free(scan_range *r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(r[i].start);
    free(r);
}

int scan_prefix_end(const uint8_t *prefix, size_t len, buf_t *end)
{
    buf_reset(end);
    while (len > 0 && prefix[len - 1] == 0xff)
        len--;
    if (len == 0)
        return buf_append_byte(end, 0);
    if (buf_append(end, prefix, len) != 0)
        return -1;
    end->data[len - 1]++;
    return 0;
}

/* ------------------------------------------------------------------ walks */

int scan_walk(etcdc *c, const uint8_t *from, size_t from_len, const uint8_t *end, size_t end_len,
              int64_t limit, bool pin, int64_t *revision, scan_kv_fn fn, void *arg, es_error *err)
{
    buf_t next = BUF_INIT;
    int rc = 0;
    static const uint8_t zero = 0;
    if (buf_append(&next, from_len ? from : &zero, from_len ? from_len : 1) != 0)
        return es_error_set(err, 13, "out of memory");
    for (;;) {
        Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
        req.key.data = next.data;
        req.key.len = next.len;
        req.range_end.data = (uint8_t *)end;
        req.range_end.len = end_len;
        req.limit = limit;
        req.sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND;
        req.sort_target = ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__KEY;
        if (pin)
            req.revision = *revision;
        Etcdserverpb__RangeResponse *resp = NULL;
        if (etcdc_range(c, &req, &resp, err) != 0) {
            rc = -1;
            break;
        }
        if (resp->header)
            *revision = req.revision ? req.revision : resp->header->revision;
        for (size_t i = 0; i < resp->n_kvs && rc == 0; i++)
            rc = fn(arg, resp->kvs[i], err);
        bool more = resp->more && resp->n_kvs > 0;
        if (rc == 0 && more) {
            const Mvccpb__KeyValue *last = resp->kvs[resp->n_kvs - 1];
            buf_reset(&next);
            if (buf_append(&next, last->key.data, last->key.len) != 0 ||
                buf_append_byte(&next, 0) != 0)
                rc = es_error_set(err, 13, "out of memory");
        }
        etcdserverpb__range_response__free_unpacked(resp, NULL);
        if (rc != 0 || !more)
            break;
    }
    buf_free(&next);
    return rc;
}

int scan_count(etcdc *c, const uint8_t *from, size_t from_len, const uint8_t *end, size_t end_len,
               int64_t *count, es_error *err)
{
    static uint8_t zero = 0;
    Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
    req.key.data = from_len ? (uint8_t *)from : &zero;
    req.key.len = from_len ? from_len : 1;
    req.range_end.data = (uint8_t *)end;
    req.range_end.len = end_len;
    req.count_only = true;
    Etcdserverpb__RangeResponse *resp = NULL;
    if (etcdc_range(c, &req, &resp, err) != 0)
        return -1;
    *count = resp->count;
    etcdserverpb__range_response__free_unpacked(resp, NULL);
    return 0;
}

/* ------------------------------------------------------------------ classification */

static const char *const class_names[] = {"unprotected", "empty", "plaintext",
                                          "current",     "stale", "undecryptable"};

const char *scan_class_name(enum scan_class c)
{
    return (unsigned)c < sizeof class_names / sizeof *class_names ? class_names[c] : "?";
}

/* The inventory row of a key under target t: literal prefix, "*", or the resource's prefix. */
static void row_prefix(const policy_encryption *p, const policy_target *t, const uint8_t *key,
                       size_t key_len, scan_result *r)
{
    if (t->kind == POLICY_RES_LITERAL) {
        r->row_prefix = (const uint8_t *)t->group;
        r->row_prefix_len = strlen(t->group);
        return;
    }
    if (t->kind == POLICY_RES_EVERY_KEY) {
        r->row_prefix = (const uint8_t *)"*";
        r->row_prefix_len = 1;
        return;
    }
    const char *sp = policy_encryption_storage_prefix(p);
    size_t spl = strlen(sp), i = spl;
    r->row_prefix = key;
    r->row_prefix_len = key_len < spl ? key_len : spl;
    if (key_len < spl || memcmp(key, sp, spl) != 0)
        return;
    /* first segment; "<group>/<resource>" when the first segment names a group (has a dot) */
    bool dotted = false;
    while (i < key_len && key[i] != '/')
        dotted |= key[i++] == '.';
    if (i == key_len)
        return;
    if (dotted) {
        size_t j = i + 1;
        while (j < key_len && key[j] != '/')
            j++;
        if (j < key_len)
            i = j;
    }
    r->row_prefix_len = i + 1;
}

static bool keyed_prefix(const char *prefix)
{
    return strcmp(prefix, "k8s:enc:aescbc:v1:") == 0 || strcmp(prefix, "k8s:enc:aesgcm:v1:") == 0 ||
           strcmp(prefix, "k8s:enc:secretbox:v1:") == 0;
}

static void make_label(const char *prefix, const uint8_t *val, size_t val_len, char *out,
                       size_t cap)
{
    size_t pl = strlen(prefix);
    if (keyed_prefix(prefix) && val_len > pl) {
        size_t nl = 0;
        while (pl + nl < val_len && val[pl + nl] != ':' && nl < 100)
            nl++;
        snprintf(out, cap, "%s%.*s", prefix, (int)nl, (const char *)val + pl);
        return;
    }
    snprintf(out, cap, "%s", prefix);
    size_t n = strlen(out);
    if (n > 1 && out[n - 1] == ':') /* kms: "k8s:enc:kms:v2:<name>:" */
        out[n - 1] = '\0';
}

void scan_classify(const policy_encryption *p, const uint8_t *key, size_t key_len,
                   const uint8_t *val, size_t val_len, buf_t *plain, scan_result *r)
{
    memset(r, 0, sizeof *r);
    r->rule = -1;
    const policy_keymap *m = policy_encryption_keymap(p);
    int ti = policy_keymap_lookup(m, key, key_len);
    if (ti < 0) {
        r->cls = SCAN_UNPROTECTED;
        return;
    }
    const policy_target *t = policy_keymap_target(m, (size_t)ti);
    r->rule = t->n_rules ? (int)t->rules[0] : -1;
    r->chain = policy_encryption_chain_for_key(p, key, key_len);
    row_prefix(p, t, key, key_len, r);
    if (val_len == 0) {
        r->cls = SCAN_EMPTY;
        return;
    }
    bool encrypted = val_len >= ENC_PREFIX_LEN && memcmp(val, ENC_PREFIX, ENC_PREFIX_LEN) == 0;
    bool identity_first = crypto_chain_provider_count(r->chain) > 0 &&
                          crypto_chain_provider_type(r->chain, 0) == CRYPTO_PROVIDER_IDENTITY;
    if (!encrypted && !identity_first) {
        r->cls = SCAN_PLAINTEXT;
        if (plain && buf_append(plain, val, val_len) != 0) {
            r->cls = SCAN_UNDECRYPTABLE;
            es_error_set(&r->err, 13, "out of memory");
        }
        return;
    }
    crypto_read_info info = {0};
    buf_t scratch = BUF_INIT;
    buf_t *out = plain ? plain : &scratch;
    if (crypto_chain_decrypt_blocking(r->chain, key, key_len, val, val_len, out, &info, &r->err) !=
        0) {
        r->cls = SCAN_UNDECRYPTABLE;
    } else {
        r->cls = info.stale ? SCAN_STALE : SCAN_CURRENT;
        make_label(info.prefix ? info.prefix : "identity", val, val_len, r->label, sizeof r->label);
    }
    buf_wipe_free(&scratch);
}
