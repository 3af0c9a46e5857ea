/* chain.c - the provider chain: build, write with the first provider/key, read by prefix.
 *
 * The read algorithm is kube-apiserver's prefixTransformers.TransformFromStorage applied at two
 * levels (wire-format.md §2.3): providers in order, every provider whose prefix matches is tried
 * (identity's prefix is empty; its refusal of "k8s:enc:" data is not recorded), and inside a
 * keyed provider every key whose "<name>:" prefix matches is tried. Errors of both levels are
 * collected flat, the way Go's aggregate error prints them. stale = not the first provider or
 * not the first key. Provider bodies live in provider_*.c behind provider.h.
 */
#include "crypto/chain.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "base/secret.h"
#include "crypto/kms_internal.h"
#include "crypto/provider.h"

#define ENC_PREFIX "k8s:enc:"
#define ENC_PREFIX_LEN (sizeof ENC_PREFIX - 1)
#define IDENTITY_LABEL "identity"
#define MSG_NO_PREFIX "no matching prefix found"
#define MSG_IDENTITY "identity transformer tried to read encrypted data"
#define READ_ERRS_MAX 16
#define NAME_SHOWN_MAX 64 /* longest key name quoted in error context */
#define DYN_MSG_MAX 256   /* a KMS read error (plugin text included) */
#define BLOCKING_ROUNDS 8 /* await rounds of the blocking wrappers */

typedef struct chain_key {
    char *name;
    size_t name_len;
    secret_t *secret;
    void *state; /* provider's prepared key */
} chain_key;

typedef struct chain_provider {
    enum crypto_provider_type type;
    const crypto_provider_ops *ops; /* NULL for identity and kms */
    crypto_kms *kms;                /* kms v1/v2 (a reference) */
    const char *prefix;             /* ops->prefix, or "k8s:enc:kms:v2:<name>:" */
    size_t prefix_len;
    chain_key *keys;
    size_t n_keys;
} chain_provider;

struct crypto_chain {
    chain_provider *p;
    size_t n, cap;
};

/* Errors of one read, in the order kube-apiserver would aggregate them. */
typedef struct read_errs {
    size_t n, dropped;
    bool identity_refused;
    struct {
        const char *why; /* static kube-apiserver text, or dyn[] */
        size_t prov;
        long key; /* -1: no key of the provider matched; -2: a kms provider */
    } e[READ_ERRS_MAX];
    size_t n_dyn;
    char dyn[4][DYN_MSG_MAX]; /* KMS errors carry the plugin's text */
} read_errs;

static const crypto_provider_ops *ops_for(enum crypto_provider_type t)
{
    switch (t) {
    case CRYPTO_PROVIDER_AESCBC:
        return &crypto_provider_aescbc;
    case CRYPTO_PROVIDER_AESGCM:
        return &crypto_provider_aesgcm;
    case CRYPTO_PROVIDER_SECRETBOX:
        return &crypto_provider_secretbox;
    default:
        return NULL;
    }
}

const char *crypto_provider_type_name(enum crypto_provider_type t)
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
        return "kms-v1";
    case CRYPTO_PROVIDER_KMS_V2:
        return "kms-v2";
    }
    return "unknown";
}

crypto_chain *crypto_chain_new(void)
{
    if (secret_init() < 0)
        return NULL;
    return calloc(1, sizeof(crypto_chain));
}

static void provider_release(chain_provider *p)
{
    if (p->kms)
        crypto_kms_unref(p->kms);
    p->kms = NULL;
    for (size_t j = 0; j < p->n_keys; j++) {
        chain_key *k = &p->keys[j];
        if (p->ops && k->state)
            p->ops->key_free(k->state);
        secret_free(k->secret);
        free(k->name);
    }
    free(p->keys);
    p->keys = NULL;
    p->n_keys = 0;
}

void crypto_chain_free(crypto_chain *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        provider_release(&c->p[i]);
    free(c->p);
    free(c);
}

static int chain_push(crypto_chain *c, const chain_provider *p, es_error *err)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 4;
        chain_provider *np = realloc(c->p, cap * sizeof *np);
        if (!np)
            return es_error_set(err, CRYPTO_ERR_INTERNAL, "provider chain: out of memory");
        c->p = np;
        c->cap = cap;
    }
    c->p[c->n++] = *p;
    return 0;
}

int crypto_chain_add_identity(crypto_chain *c, es_error *err)
{
    chain_provider p = {.type = CRYPTO_PROVIDER_IDENTITY};
    return chain_push(c, &p, err);
}

int crypto_chain_add_keyed(crypto_chain *c, enum crypto_provider_type type,
                           const crypto_key_spec *keys, size_t n_keys, es_error *err)
{
    const char *tname = crypto_provider_type_name(type);
    if (type == CRYPTO_PROVIDER_KMS_V1 || type == CRYPTO_PROVIDER_KMS_V2)
        return es_error_set(err, CRYPTO_ERR_CONFIG,
                            "%s provider: KMS providers are added with crypto_chain_add_kms",
                            tname);
    const crypto_provider_ops *ops = ops_for(type);
    if (!ops)
        return es_error_set(err, CRYPTO_ERR_CONFIG, "%s provider: not a keyed provider type",
                            tname);
    if (!keys || n_keys == 0)
        return es_error_set(err, CRYPTO_ERR_CONFIG, "%s provider: needs at least one key", tname);
    chain_provider p = {
        .type = type, .ops = ops, .prefix = ops->prefix, .prefix_len = strlen(ops->prefix)};
    p.keys = calloc(n_keys, sizeof *p.keys);
    if (!p.keys)
        return es_error_set(err, CRYPTO_ERR_INTERNAL, "%s provider: out of memory", tname);
    for (size_t j = 0; j < n_keys; j++) {
        const crypto_key_spec *ks = &keys[j];
        chain_key *k = &p.keys[j];
        p.n_keys = j + 1;
        if (!ks->name || !ks->name[0]) {
            es_error_set(err, CRYPTO_ERR_CONFIG, "%s provider: key %zu has an empty name", tname,
                         j + 1);
            goto fail;
        }
        if (!ks->key || ks->key_len == 0) {
            es_error_set(err, CRYPTO_ERR_CONFIG, "%s key \"%.*s\": empty secret", tname,
                         NAME_SHOWN_MAX, ks->name);
            goto fail;
        }
        k->name_len = strlen(ks->name);
        k->name = strdup(ks->name);
        k->secret = secret_new(ks->key, ks->key_len);
        if (!k->name || !k->secret) {
            es_error_set(err, CRYPTO_ERR_INTERNAL, "%s key \"%.*s\": out of memory", tname,
                         NAME_SHOWN_MAX, ks->name);
            goto fail;
        }
        if (ops->key_new(&k->state, k->secret, err) < 0) {
            es_error_prefix(err, "key \"%.*s\"", NAME_SHOWN_MAX, ks->name);
            goto fail;
        }
    }
    if (chain_push(c, &p, err) == 0)
        return 0;
fail:
    provider_release(&p);
    return -1;
}

int crypto_chain_add_kms(crypto_chain *c, crypto_kms *k, es_error *err)
{
    if (!k)
        return es_error_set(err, CRYPTO_ERR_CONFIG, "kms provider missing");
    chain_provider p = {.type = k->type, .kms = crypto_kms_ref(k)};
    p.prefix = crypto_kms_prefix(k, &p.prefix_len);
    if (chain_push(c, &p, err) == 0)
        return 0;
    crypto_kms_unref(k);
    return -1;
}

bool crypto_chain_has_kms(const crypto_chain *c)
{
    for (size_t i = 0; c && i < c->n; i++)
        if (c->p[i].kms)
            return true;
    return false;
}

size_t crypto_chain_provider_count(const crypto_chain *c)
{
    return c ? c->n : 0;
}

enum crypto_provider_type crypto_chain_provider_type(const crypto_chain *c, size_t i)
{
    return (c && i < c->n) ? c->p[i].type : CRYPTO_PROVIDER_IDENTITY;
}

const char *crypto_chain_write_prefix(const crypto_chain *c)
{
    if (!c || c->n == 0)
        return NULL;
    return c->p[0].prefix ? c->p[0].prefix : IDENTITY_LABEL;
}

int crypto_identity_read_check(const uint8_t *in, size_t in_len, es_error *err)
{
    if (in_len >= ENC_PREFIX_LEN && memcmp(in, ENC_PREFIX, ENC_PREFIX_LEN) == 0)
        return es_error_set(err, CRYPTO_ERR_DECRYPT, MSG_IDENTITY);
    return 0;
}

int crypto_chain_encrypt(const crypto_chain *c, const uint8_t *aad, size_t aad_len,
                         const uint8_t *in, size_t in_len, buf_t *out, es_error *err)
{
    if (!c || c->n == 0)
        return es_error_set(err, CRYPTO_ERR_CONFIG, "provider chain is empty");
    const chain_provider *p = &c->p[0];
    if (p->kms)
        return crypto_kms_encrypt(p->kms, aad, aad_len, in, in_len, out, err);
    if (!p->ops) {
        if (buf_append(out, in, in_len) < 0)
            return es_error_set(err, CRYPTO_ERR_INTERNAL, "identity: out of memory");
        return 0;
    }
    const chain_key *k = &p->keys[0];
    if (in_len > SIZE_MAX / 2)
        return es_error_set(err, CRYPTO_ERR_INTERNAL, "%s: value too large", p->ops->name);
    size_t head = p->prefix_len + k->name_len + 1;
    size_t total = head + p->ops->sealed_size(in_len);
    if (buf_reserve(out, total) < 0)
        return es_error_set(err, CRYPTO_ERR_INTERNAL, "%s: out of memory", p->ops->name);
    uint8_t *dst = out->data + out->len;
    memcpy(dst, p->prefix, p->prefix_len);
    memcpy(dst + p->prefix_len, k->name, k->name_len);
    dst[head - 1] = ':';
    const char *why = p->ops->seal(k->state, aad, aad_len, in, in_len, dst + head);
    if (why) {
        OPENSSL_cleanse(dst, total);
        return es_error_set(err, CRYPTO_ERR_INTERNAL, "%s key \"%.*s\": %s", p->ops->name,
                            NAME_SHOWN_MAX, k->name, why);
    }
    out->len += total;
    return 0;
}

static void errs_add(read_errs *e, const char *why, size_t prov, long key);

static void errs_add_dyn(read_errs *e, const char *why, size_t prov)
{
    if (e->n_dyn == sizeof e->dyn / sizeof e->dyn[0]) {
        errs_add(e, "kms provider error", prov, -2);
        return;
    }
    char *d = e->dyn[e->n_dyn++];
    snprintf(d, DYN_MSG_MAX, "%s", why);
    errs_add(e, d, prov, -2);
}

static void errs_add(read_errs *e, const char *why, size_t prov, long key)
{
    if (e->n == READ_ERRS_MAX) {
        e->dropped++;
        return;
    }
    e->e[e->n].why = why;
    e->e[e->n].prov = prov;
    e->e[e->n].key = key;
    e->n++;
}

/* Key level of one keyed provider: 0 (plaintext appended, *key_index set), -1 (errors recorded),
 * -2 (out of memory, err set). */
static int read_keyed(const chain_provider *p, size_t prov, const uint8_t *aad, size_t aad_len,
                      const uint8_t *rest, size_t rest_len, buf_t *out, size_t *key_index,
                      read_errs *errs, es_error *err)
{
    bool tried = false;
    for (size_t j = 0; j < p->n_keys; j++) {
        const chain_key *k = &p->keys[j];
        if (rest_len <= k->name_len || rest[k->name_len] != ':' ||
            memcmp(rest, k->name, k->name_len) != 0)
            continue;
        const uint8_t *body = rest + k->name_len + 1;
        size_t body_len = rest_len - k->name_len - 1;
        if (buf_reserve(out, body_len) < 0) {
            es_error_set(err, CRYPTO_ERR_INTERNAL, "%s: out of memory", p->ops->name);
            return -2;
        }
        size_t n = 0;
        const char *why =
            p->ops->open(k->state, aad, aad_len, body, body_len, out->data + out->len, &n);
        if (!why) {
            out->len += n;
            *key_index = j;
            return 0;
        }
        errs_add(errs, why, prov, (long)j);
        tried = true;
    }
    if (!tried)
        errs_add(errs, p->ops->no_key_msg, prov, -1);
    return -1;
}

/* Appends to err->msg at *off, keeping it NUL-terminated and truncated to fit. */
static void msg_add(es_error *err, size_t *off, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void msg_add(es_error *err, size_t *off, const char *fmt, ...)
{
    if (*off >= sizeof err->msg - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg + *off, sizeof err->msg - *off, fmt, ap);
    va_end(ap);
    if (n > 0)
        *off += (size_t)n;
    if (*off > sizeof err->msg - 1)
        *off = sizeof err->msg - 1;
}

static const char *type_label(const chain_provider *p)
{
    return crypto_provider_type_name(p->type);
}

static void msg_add_provider(es_error *err, size_t *off, const chain_provider *p, bool comma)
{
    if (p->kms)
        msg_add(err, off, "%s %s \"%.*s\"", comma ? "," : "", type_label(p), NAME_SHOWN_MAX,
                crypto_kms_name(p->kms));
    else
        msg_add(err, off, "%s %s", comma ? "," : "", type_label(p));
}

static int read_failed(const crypto_chain *c, const read_errs *e, es_error *err)
{
    size_t off = 0;
    if (!err)
        return -1;
    if (e->n == 0) {
        err->code = CRYPTO_ERR_NO_MATCH;
        err->msg[0] = '\0';
        msg_add(err, &off, MSG_NO_PREFIX " (providers:");
        for (size_t i = 0; i < c->n; i++)
            msg_add_provider(err, &off, &c->p[i], i != 0);
        if (e->identity_refused)
            msg_add(err, &off, "; " MSG_IDENTITY);
        msg_add(err, &off, ")");
        return -1;
    }
    err->code = CRYPTO_ERR_DECRYPT;
    err->msg[0] = '\0';
    /* Go's aggregate: unique messages in order; brackets only when more than one. */
    const char *uniq[READ_ERRS_MAX];
    size_t nu = 0;
    for (size_t i = 0; i < e->n; i++) {
        bool seen = false;
        for (size_t u = 0; u < nu && !seen; u++)
            seen = strcmp(uniq[u], e->e[i].why) == 0;
        if (!seen)
            uniq[nu++] = e->e[i].why;
    }
    if (nu > 1)
        msg_add(err, &off, "[");
    for (size_t u = 0; u < nu; u++)
        msg_add(err, &off, "%s%s", u ? ", " : "", uniq[u]);
    if (nu > 1)
        msg_add(err, &off, "]");
    msg_add(err, &off, " (tried:");
    for (size_t i = 0; i < e->n; i++) {
        const chain_provider *p = &c->p[e->e[i].prov];
        msg_add_provider(err, &off, p, i != 0);
        if (e->e[i].key >= 0)
            msg_add(err, &off, " key \"%.*s\"", NAME_SHOWN_MAX, p->keys[e->e[i].key].name);
        else if (e->e[i].key == -1)
            msg_add(err, &off, " (no key matched)");
    }
    if (e->dropped)
        msg_add(err, &off, ", %zu more", e->dropped);
    msg_add(err, &off, ")");
    return -1;
}

int crypto_chain_decrypt(const crypto_chain *c, const uint8_t *aad, size_t aad_len,
                         const uint8_t *in, size_t in_len, buf_t *out, crypto_read_info *info,
                         es_error *err)
{
    read_errs errs;
    errs.n = errs.dropped = errs.n_dyn = 0;
    errs.identity_refused = false;
    if (!c)
        return es_error_set(err, CRYPTO_ERR_CONFIG, "provider chain is missing");
    for (size_t i = 0; i < c->n; i++) {
        const chain_provider *p = &c->p[i];
        if (p->kms) {
            if (in_len < p->prefix_len || memcmp(in, p->prefix, p->prefix_len) != 0)
                continue;
            bool stale = false;
            char why[DYN_MSG_MAX];
            int r = crypto_kms_decrypt(p->kms, aad, aad_len, in + p->prefix_len,
                                       in_len - p->prefix_len, out, &stale, why, sizeof why, err);
            if (r == 0) {
                if (info) {
                    info->stale = stale || i != 0;
                    info->prefix = p->prefix;
                }
                return 0;
            }
            if (r == -2)
                return es_error_set(err, CRYPTO_ERR_WOULD_BLOCK,
                                    "kms provider \"%s\": waiting for the plugin",
                                    crypto_kms_name(p->kms));
            if (r == -3)
                return -1;
            errs_add_dyn(&errs, why, i);
            continue;
        }
        if (!p->ops) {
            if (crypto_identity_read_check(in, in_len, NULL) < 0) {
                errs.identity_refused = true; /* not recorded, like kube-apiserver */
                continue;
            }
            if (buf_append(out, in, in_len) < 0)
                return es_error_set(err, CRYPTO_ERR_INTERNAL, "identity: out of memory");
            if (info) {
                info->stale = i != 0;
                info->prefix = IDENTITY_LABEL;
            }
            return 0;
        }
        if (in_len < p->prefix_len || memcmp(in, p->prefix, p->prefix_len) != 0)
            continue;
        size_t key_index = 0;
        int r = read_keyed(p, i, aad, aad_len, in + p->prefix_len, in_len - p->prefix_len, out,
                           &key_index, &errs, err);
        if (r == -2)
            return -1;
        if (r == 0) {
            if (info) {
                info->stale = i != 0 || key_index != 0;
                info->prefix = p->prefix;
            }
            return 0;
        }
    }
    return read_failed(c, &errs, err);
}

/* ------------------------------------------------------------------ KMS waits */

int crypto_chain_await(const crypto_chain *c, enum crypto_await_kind kind, const uint8_t *in,
                       size_t in_len, crypto_ready_fn fn, void *arg, es_error *err)
{
    if (!c || c->n == 0)
        return es_error_set(err, CRYPTO_ERR_CONFIG, "provider chain is empty");
    bool matched = false;
    for (size_t i = 0; i < c->n; i++) {
        const chain_provider *p = &c->p[i];
        if (kind == CRYPTO_AWAIT_ENCRYPT && i > 0)
            break;
        if (!p->kms)
            continue;
        const uint8_t *body = NULL;
        size_t body_len = 0;
        if (kind == CRYPTO_AWAIT_DECRYPT) {
            if (in_len < p->prefix_len || memcmp(in, p->prefix, p->prefix_len) != 0)
                continue;
            body = in + p->prefix_len;
            body_len = in_len - p->prefix_len;
        }
        matched = true;
        int rc = crypto_kms_await(p->kms, kind, body, body_len, fn, arg, err);
        if (rc < 0)
            return -1;
        if (rc == 1)
            return 0;
    }
    if (!matched)
        return es_error_set(err, CRYPTO_ERR_CONFIG, "no kms provider to wait for");
    kms_post_ready(fn, arg); /* the work finished in the meantime: retry now */
    return 0;
}

typedef struct block_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
} block_wait;

static void block_wait_fn(void *arg)
{
    block_wait *w = arg;
    pthread_mutex_lock(&w->mu);
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static int block_round(const crypto_chain *c, enum crypto_await_kind kind, const uint8_t *in,
                       size_t in_len, es_error *err)
{
    if (kms_on_loop_thread())
        return es_error_set(err, CRYPTO_ERR_INTERNAL, "blocking KMS wait on the KMS thread");
    block_wait w = {.mu = PTHREAD_MUTEX_INITIALIZER};
    pthread_cond_init(&w.cv, NULL);
    int rc = crypto_chain_await(c, kind, in, in_len, block_wait_fn, &w, err);
    if (rc == 0) {
        pthread_mutex_lock(&w.mu);
        while (!w.done)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
    }
    pthread_cond_destroy(&w.cv);
    return rc;
}

int crypto_chain_encrypt_blocking(const crypto_chain *c, const uint8_t *aad, size_t aad_len,
                                  const uint8_t *in, size_t in_len, buf_t *out, es_error *err)
{
    for (int round = 0; round < BLOCKING_ROUNDS; round++) {
        int rc = crypto_chain_encrypt(c, aad, aad_len, in, in_len, out, err);
        if (rc == 0 || !err || err->code != CRYPTO_ERR_WOULD_BLOCK)
            return rc;
        if (block_round(c, CRYPTO_AWAIT_ENCRYPT, in, in_len, err) != 0)
            return -1;
    }
    return es_error_set(err, CRYPTO_ERR_UNAVAILABLE, "KMS result still not available");
}

int crypto_chain_decrypt_blocking(const crypto_chain *c, const uint8_t *aad, size_t aad_len,
                                  const uint8_t *in, size_t in_len, buf_t *out,
                                  crypto_read_info *info, es_error *err)
{
    for (int round = 0; round < BLOCKING_ROUNDS; round++) {
        int rc = crypto_chain_decrypt(c, aad, aad_len, in, in_len, out, info, err);
        if (rc == 0 || !err || err->code != CRYPTO_ERR_WOULD_BLOCK)
            return rc;
        if (block_round(c, CRYPTO_AWAIT_DECRYPT, in, in_len, err) != 0)
            return -1;
    }
    return es_error_set(err, CRYPTO_ERR_UNAVAILABLE, "KMS result still not available");
}
