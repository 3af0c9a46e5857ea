/* access_policy.h - who may touch which etcd keys: the mTLS gateway access policy (public API).
 *
 * Loaded from a strict YAML file (format and semantics: docs/access-policy.md). A rule names
 * subjects (client-certificate CN, DNS SAN, URI SAN, exact or with `*` globs, or `anonymous`
 * for a connection without a verified client certificate), verbs (read, write, lease, admin)
 * and key prefixes. Permissions are the UNION of every rule matching the identity: rule order
 * does not matter for verdicts (only for which rule's etcdUser is used: the first one).
 * A key range is allowed when it lies inside ONE allowed prefix of ONE matching rule.
 * The object is immutable after load and reference-counted (atomic): share it between
 * threads, swap it on reload; the last unref frees it (passwords are wiped). Checks do no
 * allocation and are safe on any thread.
 */
#ifndef ETCDSEAL_POLICY_ACCESS_POLICY_H
#define ETCDSEAL_POLICY_ACCESS_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "base/secret.h"

typedef struct access_policy access_policy;

#define ACCESS_POLICY_MAX_FILE_BYTES (1u << 20)

enum access_verb {
    ACCESS_VERB_READ = 1u << 0,  /* Range, Watch, Election Leader/Observe, Txn compares/ranges */
    ACCESS_VERB_WRITE = 1u << 1, /* Put, DeleteRange, Txn writes, Compact, Election, Lock */
    ACCESS_VERB_LEASE = 1u << 2, /* etcdserverpb.Lease */
    ACCESS_VERB_ADMIN = 1u << 3, /* Cluster, Maintenance, Auth (but Authenticate) */
};

/* Who is calling: names from the verified client certificate. has_cert false = anonymous
 * (cleartext, or TLS without a verified client certificate); names are then ignored. */
typedef struct access_identity {
    bool has_cert;
    const char *cn; /* subject CN, NULL when absent */
    const char *const *dns;
    size_t n_dns;
    const char *const *uris;
    size_t n_uris;
} access_identity;

/* The etcd user a rule maps its callers to (--map-identity-to-etcd-user). */
typedef struct access_etcd_user {
    const char *name;
    const secret_t *password; /* read from the rule's etcdPasswordFile at load */
} access_etcd_user;

/* Returns 0 (*out holds one reference) or -1 with err naming file:line and the setting. */
int access_policy_load(const char *path, access_policy **out, es_error *err);
/* Same from bytes in memory (`name` appears in messages). Password files are read as named. */
int access_policy_load_buffer(const char *name, const char *data, size_t len, access_policy **out,
                              es_error *err);

access_policy *access_policy_ref(access_policy *p);
void access_policy_unref(access_policy *p); /* NULL-safe */
size_t access_policy_rule_count(const access_policy *p);

/* True when some rule matching `id` grants `verb` (one ACCESS_VERB_*) on the whole range
 * [key, range_end): range_end empty = the single key, "\0" = every key >= key (etcd's
 * conventions). key == NULL: a method-only verb (lease, admin), no key involved. */
bool access_policy_check(const access_policy *p, const access_identity *id, unsigned verb,
                         const uint8_t *key, size_t key_len, const uint8_t *range_end,
                         size_t range_end_len);
/* True when at least one rule matches `id` (whatever it grants). */
bool access_policy_known(const access_policy *p, const access_identity *id);
/* The etcd user of the first matching rule that names one; false when none does. */
bool access_policy_etcd_user(const access_policy *p, const access_identity *id,
                             access_etcd_user *out);

/* etcd's prefix end (clientv3 GetPrefixRangeEnd): the prefix with trailing 0xff bytes dropped
 * and the last byte incremented; "\0" (1 byte) when none exists ("" or all 0xff). `out` must
 * hold max(len, 1) bytes. Returns the length written. */
size_t access_prefix_end(const uint8_t *prefix, size_t len, uint8_t *out);
/* `*` glob: `*` matches any run of bytes (also '.' and '/'); everything else literally. */
bool access_glob_match(const char *pattern, const char *s);

const char *access_verb_name(unsigned verb);

#endif
