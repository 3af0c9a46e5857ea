/* scan.h - what `verify` and `rewrap` share: which etcd key ranges the encryption policy
 * protects, a paginated walk over a key range, and the classification of one stored value.
 *
 * scan_ranges_build: "*" (every key) -> the whole keyspace; otherwise each literal prefix, plus
 * the storage prefix when any Kubernetes resource rule exists; ranges inside another are dropped.
 * scan_walk: Range pages of `limit` keys from `start` (next page from last key + "\0"), so memory
 * is bounded by one page; with pin, every page reads the revision of the first page.
 * scan_classify: the rule and chain protecting a key (policy_encryption_chain_for_key), then:
 * empty value; plaintext (not "k8s:enc:" under a rule whose first provider is not identity);
 * otherwise decrypted with the chain (blocking, KMS-safe): current, stale, or undecryptable.
 * `label` names what reads the value: "identity", "k8s:enc:aesgcm:v1:<key name>",
 * "k8s:enc:kms:v2:<provider name>". With `plain` non-NULL the plaintext is appended to it
 * (plaintext and stale values): the caller wipes it. Never logs; never puts values in errors.
 */
#ifndef ETCDSEAL_ETCDCLIENT_SCAN_H
#define ETCDSEAL_ETCDCLIENT_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/error.h"
#include "etcdclient/etcdclient.h"
#include "mvccpb/kv.pb-c.h"
#include "policy/encryption.h"

typedef struct scan_range {
    char *start; /* key prefix; "" = whole keyspace */
} scan_range;

/* only_prefix non-NULL: exactly that one range. Caller frees with scan_ranges_free. */
int scan_ranges_build(const policy_encryption *p, const char *only_prefix, scan_range **out,
                      size_t *n, es_error *err);
void scan_ranges_free(scan_range *r, size_t n);

/* etcd's range_end for "every key starting with prefix" (prefix "" -> "\0" = all keys). */
int scan_prefix_end(const uint8_t *prefix, size_t len, buf_t *end);

/* fn returns 0 to go on, -1 to stop the walk (scan_walk then returns -1 with err as fn left
 * it; fn should set err). *revision: in 0 or a revision to read at (pin), out the revision of
 * the last page read. from: start key (may be NULL = start of range). */
typedef int (*scan_kv_fn)(void *arg, const Mvccpb__KeyValue *kv, es_error *err);
int scan_walk(etcdc *c, const uint8_t *from, size_t from_len, const uint8_t *end, size_t end_len,
              int64_t limit, bool pin, int64_t *revision, scan_kv_fn fn, void *arg, es_error *err);
/* Number of keys in [from, end) (count_only Range). */
int scan_count(etcdc *c, const uint8_t *from, size_t from_len, const uint8_t *end, size_t end_len,
               int64_t *count, es_error *err);

enum scan_class {
    SCAN_UNPROTECTED = 0, /* no rule covers the key */
    SCAN_EMPTY,
    SCAN_PLAINTEXT,
    SCAN_CURRENT,
    SCAN_STALE,
    SCAN_UNDECRYPTABLE,
};

#define SCAN_LABEL_MAX 160

typedef struct scan_result {
    enum scan_class cls;
    int rule;                   /* resources[] index of the rule (first contributing), or -1 */
    const crypto_chain *chain;  /* NULL when unprotected */
    const uint8_t *row_prefix;  /* inventory row: literal prefix, "<storage>/<resource>/", "*" */
    size_t row_prefix_len;      /* (points into the key or into the policy) */
    char label[SCAN_LABEL_MAX]; /* current / stale only */
    es_error err;               /* undecryptable only: the chain's reason */
} scan_result;

void scan_classify(const policy_encryption *p, const uint8_t *key, size_t key_len,
                   const uint8_t *val, size_t val_len, buf_t *plain, scan_result *r);

const char *scan_class_name(enum scan_class c); /* "plaintext", "stale", ... */

#endif
