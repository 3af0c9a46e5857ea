/* crypto_vectors_test.c - every local-provider vector made by the real kube-apiserver code must
 * read back through a single-provider chain built from its key (src/crypto/chain.c).
 *
 * Reads build/vectors.tsv (env ETCDSEAL_VECTORS; format at the top of tests/vectors/to_tsv.py).
 * Positive vectors of identity/aescbc/aesgcm/secretbox: decrypt to exactly the plaintext, then
 * re-encrypt + decrypt. Negative vectors whose value carries a local provider prefix: the chain
 * of that provider (the vector's key, or a random key under the name in the value) must fail
 * with kube-apiserver's text; "no matching prefix" vectors use a chain of the other providers.
 * Expected counts come from the file; the test fails if fewer vectors were checked.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "crypto/chain.h"
#include "testlib.h"

enum {
    F_ID,
    F_PROV,
    F_KEY,
    F_GR,
    F_PLAIN,
    F_STORED,
    F_EXPECTED,
    F_STALE,
    F_KNAME,
    F_KB64,
    F_ERR,
    F_COUNT
};

typedef struct bytes {
    uint8_t *p;
    size_t n;
} bytes;

static const char *vectors_path(void)
{
    const char *p = getenv("ETCDSEAL_VECTORS");
    return p && *p ? p : "build/vectors.tsv";
}

static bytes b64(const char *s)
{
    bytes b = {NULL, 0};
    size_t len = strlen(s);
    b.p = malloc(len / 4 * 3 + 4);
    if (!b.p)
        return b;
    if (sodium_base642bin(b.p, len / 4 * 3 + 4, s, len, NULL, &b.n, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0) {
        free(b.p);
        b.p = NULL;
        b.n = 0;
    }
    if (b.p)
        b.p[b.n] = 0; /* text fields become C strings */
    return b;
}

static int split(char *line, char **f)
{
    int n = 0;
    line[strcspn(line, "\r\n")] = 0;
    for (char *p = line; n < F_COUNT;) {
        f[n++] = p;
        char *tab = strchr(p, '\t');
        if (!tab)
            break;
        *tab = 0;
        p = tab + 1;
    }
    int got = n;
    for (int i = n; i < F_COUNT; i++)
        f[i] = "";
    return got;
}

static bool type_of(const char *name, enum crypto_provider_type *t)
{
    static const struct {
        const char *n;
        enum crypto_provider_type t;
    } map[] = {{"identity", CRYPTO_PROVIDER_IDENTITY},
               {"aescbc", CRYPTO_PROVIDER_AESCBC},
               {"aesgcm", CRYPTO_PROVIDER_AESGCM},
               {"secretbox", CRYPTO_PROVIDER_SECRETBOX}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(map[i].n, name) == 0) {
            *t = map[i].t;
            return true;
        }
    return false;
}

/* "k8s:enc:<p>:v1:<name>:..." -> provider type and key name (up to the next ':'). */
static bool parse_prefix(const bytes *v, enum crypto_provider_type *t, char *name, size_t cap)
{
    const char *s = (const char *)v->p;
    if (v->n < 8 || strncmp(s, "k8s:enc:", 8) != 0)
        return false;
    char prov[32];
    const char *p = s + 8, *colon = memchr(p, ':', v->n - 8);
    if (!colon || (size_t)(colon - p) >= sizeof prov)
        return false;
    memcpy(prov, p, (size_t)(colon - p));
    prov[colon - p] = 0;
    if (!type_of(prov, t) || *t == CRYPTO_PROVIDER_IDENTITY)
        return false;
    if ((size_t)(colon + 4 - s) > v->n || strncmp(colon, ":v1:", 4) != 0)
        return false;
    const char *n = colon + 4, *end = memchr(n, ':', v->n - (size_t)(n - s));
    if (!end || end == n || (size_t)(end - n) >= cap)
        return false;
    memcpy(name, n, (size_t)(end - n));
    name[end - n] = 0;
    return true;
}

static crypto_chain *single_chain(enum crypto_provider_type t, const char *name, const uint8_t *key,
                                  size_t key_len, es_error *err)
{
    crypto_chain *c = crypto_chain_new();
    if (!c)
        return NULL;
    int rc;
    if (t == CRYPTO_PROVIDER_IDENTITY) {
        rc = crypto_chain_add_identity(c, err);
    } else {
        crypto_key_spec ks = {name, key, key_len};
        rc = crypto_chain_add_keyed(c, t, &ks, 1, err);
    }
    if (rc < 0) {
        crypto_chain_free(c);
        return NULL;
    }
    return c;
}

/* First element of a Go aggregate "[a, b]" (or the whole text). */
static void first_error(const char *k8s, char *out, size_t cap)
{
    if (k8s[0] == '[') {
        k8s++;
        size_t n = strcspn(k8s, ",]");
        snprintf(out, cap, "%.*s", (int)n, k8s);
    } else {
        snprintf(out, cap, "%s", k8s);
    }
}

static bool starts_with(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

static void check_positive(char **f, int *checked)
{
    enum crypto_provider_type t = CRYPTO_PROVIDER_IDENTITY;
    type_of(f[F_PROV], &t);
    bytes key = b64(f[F_KB64]), name = b64(f[F_KNAME]), aad = b64(f[F_KEY]);
    bytes plain = b64(f[F_PLAIN]), stored = b64(f[F_STORED]);
    es_error err = {0};
    buf_t out = BUF_INIT, enc = BUF_INIT, back = BUF_INIT;
    crypto_read_info info = {true, NULL};
    crypto_chain *c = single_chain(t, (const char *)name.p, key.p, key.n, &err);
    CHECK_MSG(c != NULL, "%s: %s", f[F_ID], err.msg);
    if (c) {
        int rc = crypto_chain_decrypt(c, aad.p, aad.n, stored.p, stored.n, &out, &info, &err);
        CHECK_MSG(rc == 0, "%s: %s", f[F_ID], err.msg);
        CHECK_EQ_MEM(out.data, out.len, plain.p, plain.n);
        CHECK_MSG(!info.stale, "%s: single-provider chain read reported stale", f[F_ID]);
        /* our own write of the same plaintext reads back too */
        CHECK(crypto_chain_encrypt(c, aad.p, aad.n, plain.p, plain.n, &enc, &err) == 0);
        CHECK(crypto_chain_decrypt(c, aad.p, aad.n, enc.data, enc.len, &back, &info, &err) == 0);
        CHECK_EQ_MEM(back.data, back.len, plain.p, plain.n);
        if (rc == 0 && out.len == plain.n && (!plain.n || memcmp(out.data, plain.p, plain.n) == 0))
            (*checked)++;
        crypto_chain_free(c);
    }
    /* authenticated providers: same name, another key must not read it */
    if (t == CRYPTO_PROVIDER_AESGCM || t == CRYPTO_PROVIDER_SECRETBOX) {
        uint8_t other[32];
        randombytes_buf(other, sizeof other);
        crypto_chain *w = single_chain(t, (const char *)name.p, other, key.n, &err);
        CHECK(w != NULL);
        buf_reset(&out);
        if (w)
            CHECK_MSG(crypto_chain_decrypt(w, aad.p, aad.n, stored.p, stored.n, &out, &info, &err) <
                              0 &&
                          out.len == 0,
                      "%s: wrong key accepted", f[F_ID]);
        crypto_chain_free(w);
    }
    buf_wipe_free(&out);
    buf_wipe_free(&enc);
    buf_wipe_free(&back);
    free(key.p), free(name.p), free(aad.p), free(plain.p), free(stored.p);
}

static const enum crypto_provider_type local_keyed[] = {
    CRYPTO_PROVIDER_AESCBC, CRYPTO_PROVIDER_AESGCM, CRYPTO_PROVIDER_SECRETBOX};

static void check_negative(char **f, int *checked)
{
    bytes stored = b64(f[F_STORED]), aad = b64(f[F_KEY]), k8s = b64(f[F_ERR]);
    bytes key = b64(f[F_KB64]), vname = b64(f[F_KNAME]);
    enum crypto_provider_type t = CRYPTO_PROVIDER_IDENTITY;
    char name[256], want[256];
    parse_prefix(&stored, &t, name, sizeof name);
    first_error((const char *)k8s.p, want, sizeof want);
    es_error err = {0};
    buf_t out = BUF_INIT;
    crypto_read_info info;
    int ok = 1;
    crypto_chain *c = crypto_chain_new();
    uint8_t rnd[32];
    randombytes_buf(rnd, sizeof rnd);
    if (strcmp(want, "no matching prefix found") == 0) {
        /* the rule's chain holds no provider of the value's type */
        for (size_t i = 0; i < 3; i++) {
            if (local_keyed[i] == t)
                continue;
            crypto_key_spec ks = {name, rnd, 32};
            ok &= crypto_chain_add_keyed(c, local_keyed[i], &ks, 1, &err) == 0;
        }
        ok &= crypto_chain_add_identity(c, &err) == 0;
    } else if (key.n) {
        crypto_key_spec ks = {(const char *)vname.p, key.p, key.n};
        ok &= crypto_chain_add_keyed(c, t, &ks, 1, &err) == 0;
    } else {
        crypto_key_spec ks = {name, rnd, 32};
        ok &= crypto_chain_add_keyed(c, t, &ks, 1, &err) == 0;
    }
    CHECK_MSG(ok, "%s: chain build failed: %s", f[F_ID], err.msg);
    if (starts_with(want, "PANIC"))
        snprintf(want, sizeof want, "invalid PKCS7 data (empty or not padded)");
    int rc = crypto_chain_decrypt(c, aad.p, aad.n, stored.p, stored.n, &out, &info, &err);
    CHECK_MSG(rc < 0, "%s: read succeeded", f[F_ID]);
    CHECK_MSG(out.len == 0, "%s: bytes appended on failure", f[F_ID]);
    CHECK_MSG(rc < 0 && starts_with(err.msg, want), "%s: got \"%s\", want \"%s...\"", f[F_ID],
              err.msg, want);
    if (ok && rc < 0 && out.len == 0 && starts_with(err.msg, want))
        (*checked)++;
    if (getenv("VERBOSE"))
        printf("  %s -> %s\n", f[F_ID], err.msg);
    crypto_chain_free(c);
    /* an identity-only chain refuses every k8s:enc: value */
    c = crypto_chain_new();
    CHECK(c && crypto_chain_add_identity(c, &err) == 0);
    CHECK(crypto_chain_decrypt(c, aad.p, aad.n, stored.p, stored.n, &out, &info, &err) < 0);
    CHECK(strstr(err.msg, "identity transformer tried to read encrypted data") != NULL);
    crypto_chain_free(c);
    buf_free(&out);
    free(stored.p), free(aad.p), free(k8s.p), free(key.p), free(vname.p);
}

static void test_vectors(void)
{
    FILE *fp = fopen(vectors_path(), "r");
    CHECK_MSG(fp != NULL, "cannot open %s (run make first)", vectors_path());
    if (!fp)
        return;
    char *line = NULL;
    size_t cap = 0;
    int pos_want = 0, pos_done = 0, neg_want = 0, neg_done = 0, other = 0;
    while (getline(&line, &cap, fp) > 0) {
        char *f[F_COUNT];
        if (split(line, f) < F_STALE)
            continue;
        enum crypto_provider_type t;
        bool ok = strcmp(f[F_EXPECTED], "ok") == 0;
        if (ok && type_of(f[F_PROV], &t)) {
            pos_want++;
            check_positive(f, &pos_done);
            continue;
        }
        if (!ok) {
            bytes stored = b64(f[F_STORED]);
            char name[256];
            bool local = parse_prefix(&stored, &t, name, sizeof name);
            free(stored.p);
            if (local) {
                neg_want++;
                check_negative(f, &neg_done);
                continue;
            }
        }
        other++;
    }
    free(line);
    fclose(fp);
    printf("vectors: %d/%d positive and %d/%d negative local-provider vectors checked, "
           "%d others (kms) not for this test\n",
           pos_done, pos_want, neg_done, neg_want, other);
    CHECK(pos_want > 0 && neg_want > 0);
    CHECK_EQ_INT(pos_done, pos_want);
    CHECK_EQ_INT(neg_done, neg_want);
}

int main(int argc, char **argv)
{
    (void)argc;
    TEST_BEGIN(argv[0]);
    if (sodium_init() < 0)
        return 1;
    RUN(test_vectors);
    crypto_thread_cleanup();
    return TEST_EXIT();
}
