/* crypto_chain_test.c - the provider chain (src/crypto/chain.c and provider_*.c): round trips
 * for every provider and key size, layouts and sizes of wire-format.md §3, fresh nonces, AAD
 * binding, stale flags, kube-apiserver's read algorithm and error texts, and use from 2 threads.
 */
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <sodium.h>

#include "crypto/chain.h"
#include "testlib.h"

#define AAD "/registry/secrets/default/db-password"
#define AAD_LEN (sizeof AAD - 1)
#define MSG_AUTH "cipher: message authentication failed"
#define MSG_NOKEY_AES "no matching key was found for the provided AES transformer"
#define MSG_NOKEY_SB "no matching key was found for the provided Secretbox transformer"
#define MSG_SHORT "the stored data was shorter than the required size"

static const uint8_t *key_bytes(uint8_t seed)
{
    static uint8_t k[256][32];
    for (int i = 0; i < 32; i++)
        k[seed][i] = (uint8_t)(seed * 31 + i * 7 + 1);
    return k[seed];
}

/* Chain of one keyed provider; keys named name0, name1... with key sizes `len`. */
static crypto_chain *chain1(enum crypto_provider_type t, size_t len, const char *const *names,
                            size_t n, uint8_t seed)
{
    crypto_key_spec ks[4];
    for (size_t i = 0; i < n; i++)
        ks[i] = (crypto_key_spec){names[i], key_bytes((uint8_t)(seed + i)), len};
    es_error err = {0};
    crypto_chain *c = crypto_chain_new();
    if (c && crypto_chain_add_keyed(c, t, ks, n, &err) < 0) {
        fprintf(stderr, "  chain1: %s\n", err.msg);
        crypto_chain_free(c);
        return NULL;
    }
    return c;
}

static bool starts_with(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

static size_t body_size(enum crypto_provider_type t, size_t p)
{
    switch (t) {
    case CRYPTO_PROVIDER_AESCBC:
        return 16 + 16 * (p / 16 + 1);
    case CRYPTO_PROVIDER_AESGCM:
        return 12 + p + 16;
    case CRYPTO_PROVIDER_SECRETBOX:
        return 24 + 16 + p;
    default:
        return p;
    }
}

static void test_round_trip_all_sizes(void)
{
    static const struct {
        enum crypto_provider_type t;
        size_t key_len;
    } cases[] = {{CRYPTO_PROVIDER_AESCBC, 16},    {CRYPTO_PROVIDER_AESCBC, 24},
                 {CRYPTO_PROVIDER_AESCBC, 32},    {CRYPTO_PROVIDER_AESGCM, 16},
                 {CRYPTO_PROVIDER_AESGCM, 24},    {CRYPTO_PROVIDER_AESGCM, 32},
                 {CRYPTO_PROVIDER_SECRETBOX, 32}, {CRYPTO_PROVIDER_IDENTITY, 0}};
    static const size_t sizes[] = {0, 1, 15, 16, 17, 4096, 1 << 20};
    const char *names[] = {"key-1"};
    uint8_t *plain = malloc(1 << 20);
    randombytes_buf(plain, 1 << 20);
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        crypto_chain *c;
        es_error err = {0};
        if (cases[ci].t == CRYPTO_PROVIDER_IDENTITY) {
            c = crypto_chain_new();
            CHECK(c && crypto_chain_add_identity(c, &err) == 0);
        } else {
            c = chain1(cases[ci].t, cases[ci].key_len, names, 1, 3);
        }
        CHECK(c != NULL);
        if (!c)
            continue;
        const char *tn = crypto_provider_type_name(cases[ci].t);
        char prefix[64] = "";
        if (cases[ci].t != CRYPTO_PROVIDER_IDENTITY)
            snprintf(prefix, sizeof prefix, "k8s:enc:%s:v1:key-1:", tn);
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            size_t n = sizes[si];
            buf_t enc = BUF_INIT, dec = BUF_INIT;
            crypto_read_info info = {true, NULL};
            CHECK(crypto_chain_encrypt(c, (const uint8_t *)AAD, AAD_LEN, plain, n, &enc, &err) ==
                  0);
            CHECK_MSG(enc.len == strlen(prefix) + body_size(cases[ci].t, n), "%s/%zu: %zu bytes",
                      tn, n, enc.len);
            CHECK(enc.len >= strlen(prefix) && memcmp(enc.data, prefix, strlen(prefix)) == 0);
            CHECK_MSG(crypto_chain_decrypt(c, (const uint8_t *)AAD, AAD_LEN, enc.data, enc.len,
                                           &dec, &info, &err) == 0,
                      "%s/%zu: %s", tn, n, err.msg);
            CHECK_EQ_MEM(dec.data, dec.len, plain, n);
            CHECK(!info.stale);
            CHECK(info.prefix &&
                  (cases[ci].t == CRYPTO_PROVIDER_IDENTITY ? strcmp(info.prefix, "identity") == 0
                                                           : starts_with(prefix, info.prefix)));
            buf_free(&enc);
            buf_wipe_free(&dec);
        }
        crypto_chain_free(c);
    }
    free(plain);
}

/* Output is appended after existing bytes; nothing is appended on failure. */
static void test_appends_to_existing_buffer(void)
{
    const char *names[] = {"k"};
    crypto_chain *c = chain1(CRYPTO_PROVIDER_AESGCM, 32, names, 1, 9);
    es_error err = {0};
    buf_t enc = BUF_INIT, dec = BUF_INIT;
    crypto_read_info info;
    buf_append(&enc, "HEAD", 4);
    buf_append(&dec, "XY", 2);
    CHECK(crypto_chain_encrypt(c, (const uint8_t *)"k", 1, (const uint8_t *)"hello", 5, &enc,
                               &err) == 0);
    CHECK(memcmp(enc.data, "HEADk8s:enc:aesgcm:v1:k:", 24) == 0);
    CHECK(crypto_chain_decrypt(c, (const uint8_t *)"k", 1, enc.data + 4, enc.len - 4, &dec, &info,
                               &err) == 0);
    CHECK_EQ_MEM(dec.data, dec.len, "XYhello", 7);
    CHECK(crypto_chain_decrypt(c, (const uint8_t *)"j", 1, enc.data + 4, enc.len - 4, &dec, &info,
                               &err) < 0);
    CHECK_EQ_INT(dec.len, 7);
    buf_free(&enc);
    buf_free(&dec);
    crypto_chain_free(c);
}

static void test_fresh_nonce_every_write(void)
{
    static const enum crypto_provider_type ts[] = {CRYPTO_PROVIDER_AESCBC, CRYPTO_PROVIDER_AESGCM,
                                                   CRYPTO_PROVIDER_SECRETBOX};
    const char *names[] = {"k"};
    for (size_t i = 0; i < 3; i++) {
        crypto_chain *c = chain1(ts[i], 32, names, 1, 5);
        buf_t a = BUF_INIT, b = BUF_INIT;
        es_error err;
        CHECK(crypto_chain_encrypt(c, (const uint8_t *)AAD, AAD_LEN, (const uint8_t *)"same", 4, &a,
                                   &err) == 0);
        CHECK(crypto_chain_encrypt(c, (const uint8_t *)AAD, AAD_LEN, (const uint8_t *)"same", 4, &b,
                                   &err) == 0);
        CHECK(a.len == b.len && a.len > 0);
        CHECK_MSG(memcmp(a.data, b.data, a.len) != 0, "%s wrote the same bytes twice",
                  crypto_provider_type_name(ts[i]));
        buf_free(&a);
        buf_free(&b);
        crypto_chain_free(c);
    }
}

static void test_aad_binding(void)
{
    static const struct {
        enum crypto_provider_type t;
        bool bound;
    } cases[] = {{CRYPTO_PROVIDER_AESGCM, true},
                 {CRYPTO_PROVIDER_AESCBC, false},
                 {CRYPTO_PROVIDER_SECRETBOX, false}};
    const char *names[] = {"k"};
    const char *other = "/registry/secrets/default/other";
    for (size_t i = 0; i < 3; i++) {
        crypto_chain *c = chain1(cases[i].t, 32, names, 1, 6);
        buf_t enc = BUF_INIT, dec = BUF_INIT;
        es_error err = {0};
        crypto_read_info info;
        CHECK(crypto_chain_encrypt(c, (const uint8_t *)AAD, AAD_LEN, (const uint8_t *)"v", 1, &enc,
                                   &err) == 0);
        int rc = crypto_chain_decrypt(c, (const uint8_t *)other, strlen(other), enc.data, enc.len,
                                      &dec, &info, &err);
        if (cases[i].bound) {
            CHECK(rc < 0 && starts_with(err.msg, MSG_AUTH) && err.code == CRYPTO_ERR_DECRYPT);
            CHECK_EQ_INT(dec.len, 0);
        } else {
            CHECK(rc == 0);
            CHECK_EQ_MEM(dec.data, dec.len, "v", 1);
        }
        buf_free(&enc);
        buf_free(&dec);
        crypto_chain_free(c);
    }
}

/* Writes `plain` with a single-provider chain (type t, key seed) named `name`. */
static void write_with(enum crypto_provider_type t, const char *name, uint8_t seed,
                       const char *plain, buf_t *out)
{
    const char *names[] = {name};
    crypto_chain *w = chain1(t, 32, names, 1, seed);
    es_error err;
    CHECK(w && crypto_chain_encrypt(w, (const uint8_t *)AAD, AAD_LEN, (const uint8_t *)plain,
                                    strlen(plain), out, &err) == 0);
    crypto_chain_free(w);
}

static void expect_read(const crypto_chain *c, const buf_t *v, const char *plain, bool stale,
                        int line)
{
    buf_t dec = BUF_INIT;
    es_error err = {0};
    crypto_read_info info = {!stale, NULL};
    int rc =
        crypto_chain_decrypt(c, (const uint8_t *)AAD, AAD_LEN, v->data, v->len, &dec, &info, &err);
    CHECK_MSG(rc == 0, "line %d: %s", line, err.msg);
    CHECK_MSG(rc == 0 && dec.len == strlen(plain) && memcmp(dec.data, plain, dec.len) == 0,
              "line %d: wrong plaintext", line);
    CHECK_MSG(rc == 0 && info.stale == stale, "line %d: stale %d, want %d", line, info.stale,
              stale);
    buf_free(&dec);
}

static void expect_error(const crypto_chain *c, const buf_t *v, int code, const char *prefix,
                         int line)
{
    buf_t dec = BUF_INIT;
    es_error err = {0};
    crypto_read_info info;
    int rc =
        crypto_chain_decrypt(c, (const uint8_t *)AAD, AAD_LEN, v->data, v->len, &dec, &info, &err);
    CHECK_MSG(rc < 0, "line %d: read succeeded", line);
    CHECK_MSG(dec.len == 0, "line %d: bytes appended on failure", line);
    CHECK_MSG(err.code == code, "line %d: code %d, want %d", line, err.code, code);
    CHECK_MSG(starts_with(err.msg, prefix), "line %d: \"%s\", want \"%s...\"", line, err.msg,
              prefix);
    buf_free(&dec);
}

static void test_stale_second_key(void)
{
    const char *names[] = {"new", "old"};
    crypto_chain *c = chain1(CRYPTO_PROVIDER_AESCBC, 32, names, 2, 10); /* new=10, old=11 */
    buf_t v_new = BUF_INIT, v_old = BUF_INIT, own = BUF_INIT;
    write_with(CRYPTO_PROVIDER_AESCBC, "new", 10, "a", &v_new);
    write_with(CRYPTO_PROVIDER_AESCBC, "old", 11, "b", &v_old);
    expect_read(c, &v_new, "a", false, __LINE__);
    expect_read(c, &v_old, "b", true, __LINE__);
    /* writes use the first key */
    es_error err;
    CHECK(crypto_chain_encrypt(c, (const uint8_t *)AAD, AAD_LEN, (const uint8_t *)"c", 1, &own,
                               &err) == 0);
    CHECK(own.len > 22 && memcmp(own.data, "k8s:enc:aescbc:v1:new:", 22) == 0);
    buf_free(&v_new);
    buf_free(&v_old);
    buf_free(&own);
    crypto_chain_free(c);
}

static void test_stale_second_provider_and_identity(void)
{
    es_error err = {0};
    crypto_key_spec gcm = {"g", key_bytes(20), 32}, sb = {"s", key_bytes(21), 32};
    /* [aesgcm g, secretbox s, identity] */
    crypto_chain *c = crypto_chain_new();
    CHECK(crypto_chain_add_keyed(c, CRYPTO_PROVIDER_AESGCM, &gcm, 1, &err) == 0);
    CHECK(crypto_chain_add_keyed(c, CRYPTO_PROVIDER_SECRETBOX, &sb, 1, &err) == 0);
    CHECK(crypto_chain_add_identity(c, &err) == 0);
    CHECK_EQ_INT(crypto_chain_provider_count(c), 3);
    CHECK(crypto_chain_provider_type(c, 1) == CRYPTO_PROVIDER_SECRETBOX);
    CHECK_EQ_STR(crypto_chain_write_prefix(c), "k8s:enc:aesgcm:v1:");
    buf_t vg = BUF_INIT, vs = BUF_INIT, plain = BUF_INIT;
    write_with(CRYPTO_PROVIDER_AESGCM, "g", 20, "gg", &vg);
    write_with(CRYPTO_PROVIDER_SECRETBOX, "s", 21, "ss", &vs);
    buf_append(&plain, "{\"kind\":\"Secret\"}", 17);
    expect_read(c, &vg, "gg", false, __LINE__);
    expect_read(c, &vs, "ss", true, __LINE__);
    expect_read(c, &plain, "{\"kind\":\"Secret\"}", true, __LINE__);
    crypto_chain_free(c);

    /* identity first: plaintext is not stale, encrypted data is read by the later provider */
    c = crypto_chain_new();
    CHECK(crypto_chain_add_identity(c, &err) == 0);
    CHECK(crypto_chain_add_keyed(c, CRYPTO_PROVIDER_AESGCM, &gcm, 1, &err) == 0);
    CHECK_EQ_STR(crypto_chain_write_prefix(c), "identity");
    expect_read(c, &plain, "{\"kind\":\"Secret\"}", false, __LINE__);
    expect_read(c, &vg, "gg", true, __LINE__);
    buf_t w = BUF_INIT;
    CHECK(crypto_chain_encrypt(c, (const uint8_t *)AAD, AAD_LEN, plain.data, plain.len, &w, &err) ==
          0);
    CHECK_EQ_MEM(w.data, w.len, plain.data, plain.len);
    buf_free(&w);
    crypto_chain_free(c);
    buf_free(&vg);
    buf_free(&vs);
    buf_free(&plain);
}

/* Two providers share a prefix (rotation): a key miss in the first lets the second one try, and
 * both errors are reported the way kube-apiserver aggregates them. */
static void test_shared_prefix_and_aggregate(void)
{
    es_error err = {0};
    crypto_key_spec a = {"a", key_bytes(30), 16}, b = {"b", key_bytes(31), 32};
    crypto_chain *c = crypto_chain_new();
    CHECK(crypto_chain_add_keyed(c, CRYPTO_PROVIDER_AESGCM, &a, 1, &err) == 0);
    CHECK(crypto_chain_add_keyed(c, CRYPTO_PROVIDER_AESGCM, &b, 1, &err) == 0);
    buf_t va = BUF_INIT, vb = BUF_INIT;
    const char *na[] = {"a"};
    crypto_chain *wa = chain1(CRYPTO_PROVIDER_AESGCM, 16, na, 1, 30);
    CHECK(crypto_chain_encrypt(wa, (const uint8_t *)AAD, AAD_LEN, (const uint8_t *)"x", 1, &va,
                               &err) == 0);
    crypto_chain_free(wa);
    write_with(CRYPTO_PROVIDER_AESGCM, "b", 31, "y", &vb);
    expect_read(c, &va, "x", false, __LINE__);
    expect_read(c, &vb, "y", true, __LINE__);
    va.data[va.len - 1] ^= 1; /* tag flip */
    expect_error(c, &va, CRYPTO_ERR_DECRYPT, "[" MSG_AUTH ", " MSG_NOKEY_AES "] (tried: aesgcm",
                 __LINE__);
    /* identical errors are reported once, without brackets (Go de-duplicates) */
    crypto_chain *c2 = crypto_chain_new();
    CHECK(crypto_chain_add_keyed(c2, CRYPTO_PROVIDER_AESGCM, &a, 1, &err) == 0);
    CHECK(crypto_chain_add_keyed(c2, CRYPTO_PROVIDER_AESGCM, &a, 1, &err) == 0);
    expect_error(c2, &va, CRYPTO_ERR_DECRYPT, MSG_AUTH " (tried: aesgcm key \"a\", aesgcm key",
                 __LINE__);
    /* same key name twice in one provider: both are tried */
    crypto_key_spec twice[2] = {{"k", key_bytes(40), 32}, {"k", key_bytes(41), 32}};
    crypto_chain *c3 = crypto_chain_new();
    CHECK(crypto_chain_add_keyed(c3, CRYPTO_PROVIDER_SECRETBOX, twice, 2, &err) == 0);
    buf_t vk = BUF_INIT;
    write_with(CRYPTO_PROVIDER_SECRETBOX, "k", 41, "second", &vk);
    expect_read(c3, &vk, "second", true, __LINE__);
    crypto_chain_free(c3);
    crypto_chain_free(c2);
    crypto_chain_free(c);
    buf_free(&va);
    buf_free(&vb);
    buf_free(&vk);
}

/* A key name may contain ':'; every key whose "<name>:" matches is tried. */
static void test_key_name_with_colon(void)
{
    es_error err = {0};
    crypto_key_spec ks[2] = {{"a", key_bytes(50), 32}, {"a:b", key_bytes(51), 32}};
    crypto_chain *c = crypto_chain_new();
    CHECK(crypto_chain_add_keyed(c, CRYPTO_PROVIDER_AESGCM, ks, 2, &err) == 0);
    buf_t v = BUF_INIT;
    write_with(CRYPTO_PROVIDER_AESGCM, "a:b", 51, "colon", &v);
    expect_read(c, &v, "colon", true, __LINE__);
    buf_free(&v);
    crypto_chain_free(c);
}

/* Raw AES-CBC without padding, to craft bodies with chosen padding bytes. */
static void cbc_raw(const uint8_t *key, const uint8_t *plain, size_t n, buf_t *out)
{
    uint8_t iv[16];
    randombytes_buf(iv, sizeof iv);
    buf_append(out, "k8s:enc:aescbc:v1:k:", 20);
    buf_append(out, iv, 16);
    buf_reserve(out, n);
    EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
    int l1 = 0, l2 = 0;
    CHECK(EVP_EncryptInit_ex(x, EVP_aes_256_cbc(), NULL, key, iv) == 1);
    EVP_CIPHER_CTX_set_padding(x, 0);
    CHECK(EVP_EncryptUpdate(x, out->data + out->len, &l1, plain, (int)n) == 1);
    CHECK(EVP_EncryptFinal_ex(x, out->data + out->len + l1, &l2) == 1);
    out->len += (size_t)(l1 + l2);
    EVP_CIPHER_CTX_free(x);
}

static void test_cbc_padding_rules(void)
{
    const char *names[] = {"k"};
    crypto_chain *c = chain1(CRYPTO_PROVIDER_AESCBC, 32, names, 1, 60);
    uint8_t p[32];
    buf_t v = BUF_INIT;
    /* last byte 0 */
    memset(p, 'a', 16);
    p[15] = 0;
    cbc_raw(key_bytes(60), p, 16, &v);
    expect_error(c, &v, CRYPTO_ERR_DECRYPT, "invalid PKCS7 data (empty or not padded)", __LINE__);
    /* padding byte larger than the body */
    buf_reset(&v);
    p[15] = 17;
    cbc_raw(key_bytes(60), p, 16, &v);
    expect_error(c, &v, CRYPTO_ERR_DECRYPT, "invalid PKCS7 data (empty or not padded)", __LINE__);
    /* inconsistent padding bytes */
    buf_reset(&v);
    p[14] = 2;
    p[15] = 3;
    cbc_raw(key_bytes(60), p, 16, &v);
    expect_error(c, &v, CRYPTO_ERR_DECRYPT, "invalid padding on input", __LINE__);
    /* kube-apiserver quirk: a padding byte > 16 is accepted when it fits the body */
    buf_reset(&v);
    memset(p, 17, 32);
    memcpy(p, "fifteen-bytes!!", 15);
    cbc_raw(key_bytes(60), p, 32, &v);
    expect_read(c, &v, "fifteen-bytes!!", false, __LINE__);
    /* IV only (kube-apiserver panics), short, not a multiple of the block size */
    buf_reset(&v);
    buf_append(&v, "k8s:enc:aescbc:v1:k:0123456789abcdef", 36);
    expect_error(c, &v, CRYPTO_ERR_DECRYPT, "invalid PKCS7 data (empty or not padded)", __LINE__);
    v.len = 35;
    expect_error(c, &v, CRYPTO_ERR_DECRYPT, MSG_SHORT, __LINE__);
    buf_reset(&v);
    buf_append(&v, "k8s:enc:aescbc:v1:k:0123456789abcdef0", 37);
    expect_error(c, &v, CRYPTO_ERR_DECRYPT, "the stored data is not a multiple of the block size",
                 __LINE__);
    buf_free(&v);
    crypto_chain_free(c);
}

static void test_negative_cases(void)
{
    const char *names[] = {"k"};
    crypto_chain *gcm = chain1(CRYPTO_PROVIDER_AESGCM, 32, names, 1, 70);
    crypto_chain *sb = chain1(CRYPTO_PROVIDER_SECRETBOX, 32, names, 1, 71);
    buf_t v = BUF_INIT;
    /* truncated bodies */
    buf_append(&v, "k8s:enc:aesgcm:v1:k:01234567890", 31);
    expect_error(gcm, &v, CRYPTO_ERR_DECRYPT, MSG_SHORT, __LINE__);
    buf_append(&v, "1234567890123456", 16); /* nonce + 15 bytes: shorter than a tag */
    expect_error(gcm, &v, CRYPTO_ERR_DECRYPT, MSG_AUTH, __LINE__);
    buf_reset(&v);
    buf_append(&v, "k8s:enc:aesgcm:v1:k:", 20); /* empty body */
    expect_error(gcm, &v, CRYPTO_ERR_DECRYPT, MSG_SHORT, __LINE__);
    buf_reset(&v);
    buf_append(&v, "k8s:enc:secretbox:v1:k:", 23);
    buf_append(&v, "0123456789012345678901234567890123456789", 39);
    expect_error(sb, &v, CRYPTO_ERR_DECRYPT, MSG_SHORT, __LINE__);
    buf_append(&v, "9", 1);
    expect_error(sb, &v, CRYPTO_ERR_DECRYPT, "output array was not large enough for encryption",
                 __LINE__);
    /* unknown key names */
    buf_reset(&v);
    write_with(CRYPTO_PROVIDER_SECRETBOX, "other", 71, "x", &v);
    expect_error(sb, &v, CRYPTO_ERR_DECRYPT, MSG_NOKEY_SB, __LINE__);
    buf_reset(&v);
    buf_append(&v, "k8s:enc:aesgcm:v1:k", 19); /* name without ':' */
    expect_error(gcm, &v, CRYPTO_ERR_DECRYPT, MSG_NOKEY_AES, __LINE__);
    /* no matching prefix; identity refusing */
    expect_error(sb, &v, CRYPTO_ERR_NO_MATCH, "no matching prefix found", __LINE__);
    crypto_chain *id = crypto_chain_new();
    es_error err = {0};
    CHECK(crypto_chain_add_identity(id, &err) == 0);
    expect_error(id, &v, CRYPTO_ERR_NO_MATCH, "no matching prefix found", __LINE__);
    CHECK(crypto_identity_read_check(v.data, v.len, &err) < 0);
    CHECK_EQ_STR(err.msg, "identity transformer tried to read encrypted data");
    CHECK(crypto_identity_read_check((const uint8_t *)"k8s:enc", 7, &err) == 0);
    buf_reset(&v);
    buf_append(&v, "plain", 5);
    expect_error(gcm, &v, CRYPTO_ERR_NO_MATCH, "no matching prefix found", __LINE__);
    buf_reset(&v);
    expect_error(gcm, &v, CRYPTO_ERR_NO_MATCH, "no matching prefix found", __LINE__);
    buf_free(&v);
    crypto_chain_free(id);
    crypto_chain_free(gcm);
    crypto_chain_free(sb);
}

static void test_build_errors(void)
{
    es_error err = {0};
    crypto_chain *c = crypto_chain_new();
    crypto_key_spec k = {"k", key_bytes(80), 32};
    CHECK(crypto_chain_add_keyed(c, CRYPTO_PROVIDER_KMS_V2, &k, 1, &err) < 0);
    CHECK(err.code == CRYPTO_ERR_CONFIG && strstr(err.msg, "kms-v2") && strstr(err.msg, "KMS"));
    CHECK(crypto_chain_add_keyed(c, CRYPTO_PROVIDER_KMS_V1, &k, 1, &err) < 0);
    CHECK(crypto_chain_add_keyed(c, CRYPTO_PROVIDER_IDENTITY, &k, 1, &err) < 0);
    CHECK(crypto_chain_add_keyed(c, CRYPTO_PROVIDER_AESGCM, &k, 0, &err) < 0);
    static const size_t bad_aes[] = {0, 1, 15, 17, 31, 33, 64};
    for (size_t i = 0; i < sizeof bad_aes / sizeof bad_aes[0]; i++) {
        crypto_key_spec b = {"bad", key_bytes(81), bad_aes[i]};
        CHECK(crypto_chain_add_keyed(c, CRYPTO_PROVIDER_AESCBC, &b, 1, &err) < 0);
        CHECK(crypto_chain_add_keyed(c, CRYPTO_PROVIDER_AESGCM, &b, 1, &err) < 0);
        CHECK(strstr(err.msg, "\"bad\"") != NULL);
    }
    crypto_key_spec sb16 = {"s", key_bytes(82), 16};
    CHECK(crypto_chain_add_keyed(c, CRYPTO_PROVIDER_SECRETBOX, &sb16, 1, &err) < 0);
    CHECK(strstr(err.msg, "secretbox") && strstr(err.msg, "32"));
    /* a bad second key leaves the chain unchanged */
    crypto_key_spec two[2] = {{"ok", key_bytes(83), 32}, {"", key_bytes(84), 32}};
    CHECK(crypto_chain_add_keyed(c, CRYPTO_PROVIDER_AESGCM, two, 2, &err) < 0);
    CHECK(strstr(err.msg, "empty name") != NULL);
    CHECK_EQ_INT(crypto_chain_provider_count(c), 0);
    CHECK(crypto_chain_write_prefix(c) == NULL);
    buf_t out = BUF_INIT;
    CHECK(crypto_chain_encrypt(c, NULL, 0, (const uint8_t *)"x", 1, &out, &err) < 0);
    CHECK_EQ_INT(out.len, 0);
    crypto_read_info info;
    CHECK(crypto_chain_decrypt(c, NULL, 0, (const uint8_t *)"x", 1, &out, &info, &err) < 0);
    CHECK(err.code == CRYPTO_ERR_NO_MATCH);
    /* error messages never carry key bytes */
    CHECK(memmem(err.msg, strlen(err.msg), key_bytes(83), 8) == NULL);
    CHECK_EQ_STR(crypto_provider_type_name(CRYPTO_PROVIDER_SECRETBOX), "secretbox");
    crypto_chain_free(c);
    crypto_chain_free(NULL);
}

/* One thread alternating between keys of several chains (thread-local context reuse). */
static void test_key_switching_one_thread(void)
{
    const char *n1[] = {"a"}, *n2[] = {"b"};
    crypto_chain *cs[4] = {chain1(CRYPTO_PROVIDER_AESGCM, 16, n1, 1, 90),
                           chain1(CRYPTO_PROVIDER_AESGCM, 32, n2, 1, 91),
                           chain1(CRYPTO_PROVIDER_AESCBC, 24, n1, 1, 92),
                           chain1(CRYPTO_PROVIDER_AESCBC, 32, n2, 1, 93)};
    buf_t v[4] = {BUF_INIT, BUF_INIT, BUF_INIT, BUF_INIT};
    es_error err;
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 4; i++) {
            buf_reset(&v[i]);
            char msg[32];
            snprintf(msg, sizeof msg, "value-%d-%d", round, i);
            CHECK(crypto_chain_encrypt(cs[i], (const uint8_t *)AAD, AAD_LEN, (const uint8_t *)msg,
                                       strlen(msg), &v[i], &err) == 0);
        }
        for (int i = 3; i >= 0; i--) {
            char msg[32];
            snprintf(msg, sizeof msg, "value-%d-%d", round, i);
            expect_read(cs[i], &v[i], msg, false, __LINE__);
        }
        /* cross-chain: same name, other key must not authenticate */
        buf_t d = BUF_INIT;
        crypto_read_info info;
        CHECK(crypto_chain_decrypt(cs[1], (const uint8_t *)AAD, AAD_LEN, v[0].data, v[0].len, &d,
                                   &info, &err) < 0);
        buf_free(&d);
    }
    for (int i = 0; i < 4; i++) {
        buf_free(&v[i]);
        crypto_chain_free(cs[i]);
    }
}

typedef struct worker_arg {
    const crypto_chain *c;
    int id, failures, done;
} worker_arg;

static void *worker(void *p)
{
    worker_arg *a = p;
    buf_t enc = BUF_INIT, dec = BUF_INIT;
    es_error err;
    crypto_read_info info;
    uint8_t plain[600];
    for (int i = 0; i < 400; i++) {
        size_t n = (size_t)(i * 7 + a->id) % sizeof plain;
        memset(plain, (uint8_t)(a->id * 50 + i), n);
        char aad[64];
        snprintf(aad, sizeof aad, "/registry/t%d/%d", a->id, i);
        buf_reset(&enc);
        buf_reset(&dec);
        if (crypto_chain_encrypt(a->c, (const uint8_t *)aad, strlen(aad), plain, n, &enc, &err) <
                0 ||
            crypto_chain_decrypt(a->c, (const uint8_t *)aad, strlen(aad), enc.data, enc.len, &dec,
                                 &info, &err) < 0 ||
            dec.len != n || (n && memcmp(dec.data, plain, n) != 0))
            a->failures++;
        a->done++;
    }
    buf_free(&enc);
    buf_free(&dec);
    return NULL; /* the thread's cipher contexts are freed by the thread-exit destructor */
}

static void test_two_threads(void)
{
    const char *na[] = {"a"}, *nb[] = {"b", "c"};
    crypto_chain *c[2] = {chain1(CRYPTO_PROVIDER_AESGCM, 32, na, 1, 100),
                          chain1(CRYPTO_PROVIDER_AESCBC, 16, nb, 2, 101)};
    /* both threads use both chains: shared immutable state, per-thread contexts */
    worker_arg args[4] = {{c[0], 0, 0, 0}, {c[1], 1, 0, 0}, {c[0], 2, 0, 0}, {c[1], 3, 0, 0}};
    for (int round = 0; round < 2; round++) {
        pthread_t th[2];
        for (int i = 0; i < 2; i++)
            CHECK(pthread_create(&th[i], NULL, worker, &args[round * 2 + i]) == 0);
        for (int i = 0; i < 2; i++)
            pthread_join(th[i], NULL);
    }
    for (int i = 0; i < 4; i++) {
        CHECK_EQ_INT(args[i].failures, 0);
        CHECK_EQ_INT(args[i].done, 400);
    }
    crypto_chain_free(c[0]);
    crypto_chain_free(c[1]);
}

/* Nonces are buffered per thread; a forked child must not reuse the parent's buffered bytes. */
static void test_fork_no_shared_nonces(void)
{
    const char *names[] = {"k"};
    crypto_chain *c = chain1(CRYPTO_PROVIDER_AESGCM, 32, names, 1, 110);
    buf_t v = BUF_INIT;
    es_error err;
    /* fill this thread's nonce buffer */
    CHECK(crypto_chain_encrypt(c, (const uint8_t *)"a", 1, (const uint8_t *)"x", 1, &v, &err) == 0);
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        buf_t w = BUF_INIT;
        int ok = crypto_chain_encrypt(c, (const uint8_t *)"a", 1, (const uint8_t *)"x", 1, &w,
                                      &err) == 0 &&
                 w.len >= 32 && write(fds[1], w.data + 20, 12) == 12;
        _exit(ok ? 0 : 1);
    }
    close(fds[1]);
    uint8_t child_nonce[12] = {0};
    ssize_t got = read(fds[0], child_nonce, sizeof child_nonce);
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK_EQ_INT(got, 12);
    buf_reset(&v);
    CHECK(crypto_chain_encrypt(c, (const uint8_t *)"a", 1, (const uint8_t *)"x", 1, &v, &err) == 0);
    CHECK_MSG(v.len >= 32 && memcmp(v.data + 20, child_nonce, 12) != 0,
              "parent and child used the same nonce");
    buf_free(&v);
    crypto_chain_free(c);
}

int main(int argc, char **argv)
{
    (void)argc;
    TEST_BEGIN(argv[0]);
    if (sodium_init() < 0)
        return 1;
    RUN(test_round_trip_all_sizes);
    RUN(test_appends_to_existing_buffer);
    RUN(test_fresh_nonce_every_write);
    RUN(test_aad_binding);
    RUN(test_stale_second_key);
    RUN(test_stale_second_provider_and_identity);
    RUN(test_shared_prefix_and_aggregate);
    RUN(test_key_name_with_colon);
    RUN(test_cbc_padding_rules);
    RUN(test_negative_cases);
    RUN(test_build_errors);
    RUN(test_key_switching_one_thread);
    RUN(test_two_threads);
    RUN(test_fork_no_shared_nonces);
    crypto_thread_cleanup();
    return TEST_EXIT();
}
