/* kmsplugin_kek_test.c - the file KEK backend and the helpers every backend shares
 * (src/kmsplugin/kek.c, kek_file.c) plus the listen-address mapping of server.c. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <grpc/status.h>
#include <sodium.h>

#include "kmsplugin/kek.h"
#include "kmsplugin/server.h"
#include "testlib.h"

static char dir[64];
static const uint8_t seed[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

/* Writes bytes to dir/name with mode; returns the path (static storage per call site). */
static const char *write_file(const char *name, const void *p, size_t n, mode_t mode, char *path)
{
    snprintf(path, 256, "%s/%s", dir, name);
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, p, n) != (ssize_t)n)
        fprintf(stderr, "write %s failed\n", path);
    close(fd);
    chmod(path, mode);
    return path;
}

static const char *random_key_file(const char *name, char *path)
{
    uint8_t k[32];
    randombytes_buf(k, sizeof k);
    return write_file(name, k, sizeof k, 0600, path);
}

static void test_round_trip_and_layout(void)
{
    char p[256];
    kmsplugin_kek *k = NULL;
    es_error err = {0, ""};
    CHECK(kmsplugin_kek_file_new(&k, random_key_file("k1", p), NULL, NULL, 0, &err) == 0);
    if (!k)
        return;
    const char *id = kmsplugin_kek_key_id(k);
    CHECK(strncmp(id, "file:sha256:", 12) == 0);
    CHECK_EQ_INT(strlen(id), 12 + 32);
    buf_t c1 = BUF_INIT, c2 = BUF_INIT, pt = BUF_INIT;
    CHECK(kmsplugin_kek_encrypt(k, &c1, seed, sizeof seed, &err) == 0);
    CHECK(kmsplugin_kek_encrypt(k, &c2, seed, sizeof seed, &err) == 0);
    CHECK_EQ_INT(c1.len, sizeof seed + KMSPLUGIN_CT_OVERHEAD);
    CHECK_EQ_INT(c1.data[0], KMSPLUGIN_CT_VERSION);
    CHECK(memcmp(c1.data + 1, c2.data + 1, KMSPLUGIN_IV_BYTES) != 0); /* fresh IV */
    CHECK(memcmp(c1.data + 1 + KMSPLUGIN_IV_BYTES, seed, sizeof seed) != 0);
    CHECK(kmsplugin_kek_decrypt(k, &pt, id, c1.data, c1.len, &err) == 0);
    CHECK_EQ_MEM(pt.data, pt.len, seed, sizeof seed);
    buf_wipe_free(&pt);
    CHECK(kmsplugin_kek_decrypt(k, &pt, id, c2.data, c2.len, &err) == 0);
    CHECK_EQ_MEM(pt.data, pt.len, seed, sizeof seed);
    buf_wipe_free(&pt);
    CHECK_EQ_INT(kmsplugin_kek_health(k, &err), 0);

    /* the same key file gives the same key_id after a restart */
    kmsplugin_kek *again = NULL;
    CHECK(kmsplugin_kek_file_new(&again, p, NULL, NULL, 0, &err) == 0);
    if (again) {
        CHECK_EQ_STR(kmsplugin_kek_key_id(again), id);
        CHECK(kmsplugin_kek_decrypt(again, &pt, id, c1.data, c1.len, &err) == 0);
        CHECK_EQ_MEM(pt.data, pt.len, seed, sizeof seed);
        buf_wipe_free(&pt);
    }
    kmsplugin_kek_free(again);
    buf_free(&c1);
    buf_free(&c2);
    kmsplugin_kek_free(k);
}

static void test_tamper_and_unknown_key_id(void)
{
    char p[256];
    kmsplugin_kek *k = NULL;
    es_error err = {0, ""};
    CHECK(kmsplugin_kek_file_new(&k, random_key_file("k2", p), NULL, NULL, 0, &err) == 0);
    if (!k)
        return;
    const char *id = kmsplugin_kek_key_id(k);
    buf_t c = BUF_INIT, pt = BUF_INIT;
    CHECK(kmsplugin_kek_encrypt(k, &c, seed, sizeof seed, &err) == 0);
    /* flip one bit in every byte position: version, IV, ciphertext, tag */
    int refused = 0;
    for (size_t i = 0; i < c.len; i++) {
        c.data[i] ^= 0x01;
        es_error_clear(&err);
        if (kmsplugin_kek_decrypt(k, &pt, id, c.data, c.len, &err) != 0 &&
            err.code == GRPC_STATUS_INVALID_ARGUMENT && pt.len == 0)
            refused++;
        buf_wipe_free(&pt);
        c.data[i] ^= 0x01;
    }
    CHECK_EQ_INT(refused, c.len);
    /* truncated, too long, empty */
    CHECK(kmsplugin_kek_decrypt(k, &pt, id, c.data, c.len - 1, &err) != 0);
    CHECK(kmsplugin_kek_decrypt(k, &pt, id, c.data, KMSPLUGIN_CT_OVERHEAD, &err) != 0);
    CHECK_EQ_INT(err.code, GRPC_STATUS_INVALID_ARGUMENT);
    uint8_t big[KMSPLUGIN_CIPHERTEXT_MAX + 1] = {KMSPLUGIN_CT_VERSION};
    CHECK(kmsplugin_kek_decrypt(k, &pt, id, big, sizeof big, &err) != 0);
    /* unknown key_id: NOT_FOUND, and the message names it */
    es_error_clear(&err);
    CHECK(kmsplugin_kek_decrypt(k, &pt, "file:sha256:0000", c.data, c.len, &err) != 0);
    CHECK_EQ_INT(err.code, GRPC_STATUS_NOT_FOUND);
    CHECK(strstr(err.msg, "file:sha256:0000") != NULL);
    CHECK(kmsplugin_kek_decrypt(k, &pt, "", c.data, c.len, &err) != 0);
    CHECK_EQ_INT(pt.len, 0);
    /* plaintext size limits */
    uint8_t large[KMSPLUGIN_PLAINTEXT_MAX + 1] = {0};
    CHECK(kmsplugin_kek_encrypt(k, &pt, large, sizeof large, &err) != 0);
    CHECK(kmsplugin_kek_encrypt(k, &pt, large, 0, &err) != 0);
    CHECK(kmsplugin_kek_encrypt(k, &pt, large, KMSPLUGIN_PLAINTEXT_MAX, &err) == 0);
    CHECK(pt.len <= KMSPLUGIN_CIPHERTEXT_MAX);
    buf_wipe_free(&pt);
    buf_free(&c);
    kmsplugin_kek_free(k);
}

static void test_rotation(void)
{
    char pa[256], pb[256], pc[256];
    es_error err = {0, ""};
    kmsplugin_kek *a = NULL, *a_custom = NULL, *b = NULL, *other = NULL;
    random_key_file("ka", pa);
    random_key_file("kb", pb);
    random_key_file("kc", pc);
    CHECK(kmsplugin_kek_file_new(&a, pa, NULL, NULL, 0, &err) == 0);
    CHECK(kmsplugin_kek_file_new(&a_custom, pa, "team-kek-2024", NULL, 0, &err) == 0);
    const char *olds[] = {pa};
    CHECK(kmsplugin_kek_file_new(&b, pb, NULL, olds, 1, &err) == 0);
    CHECK(kmsplugin_kek_file_new(&other, pc, NULL, NULL, 0, &err) == 0);
    if (!a || !a_custom || !b || !other)
        goto out;
    CHECK_EQ_STR(kmsplugin_kek_key_id(a_custom), "team-kek-2024");
    CHECK(strcmp(kmsplugin_kek_key_id(a), kmsplugin_kek_key_id(b)) != 0);
    buf_t ca = BUF_INIT, cac = BUF_INIT, cb = BUF_INIT, pt = BUF_INIT;
    CHECK(kmsplugin_kek_encrypt(a, &ca, seed, sizeof seed, &err) == 0);
    CHECK(kmsplugin_kek_encrypt(a_custom, &cac, seed, sizeof seed, &err) == 0);
    CHECK(kmsplugin_kek_encrypt(b, &cb, seed, sizeof seed, &err) == 0);
    /* after rotation to b, old ciphertext of a still decrypts (default and custom key ids) */
    CHECK(kmsplugin_kek_decrypt(b, &pt, kmsplugin_kek_key_id(a), ca.data, ca.len, &err) == 0);
    CHECK_EQ_MEM(pt.data, pt.len, seed, sizeof seed);
    buf_wipe_free(&pt);
    CHECK(kmsplugin_kek_decrypt(b, &pt, "team-kek-2024", cac.data, cac.len, &err) == 0);
    CHECK_EQ_MEM(pt.data, pt.len, seed, sizeof seed);
    buf_wipe_free(&pt);
    CHECK(kmsplugin_kek_decrypt(b, &pt, kmsplugin_kek_key_id(b), cb.data, cb.len, &err) == 0);
    buf_wipe_free(&pt);
    /* the key_id is bound (AAD): a's ciphertext under b's key_id fails */
    CHECK(kmsplugin_kek_decrypt(b, &pt, kmsplugin_kek_key_id(b), ca.data, ca.len, &err) != 0);
    /* a plugin without a's key cannot decrypt it */
    es_error_clear(&err);
    CHECK(kmsplugin_kek_decrypt(other, &pt, kmsplugin_kek_key_id(a), ca.data, ca.len, &err) != 0);
    CHECK_EQ_INT(err.code, GRPC_STATUS_NOT_FOUND);
    CHECK(kmsplugin_kek_decrypt(other, &pt, "team-kek-2024", cac.data, cac.len, &err) != 0);
    CHECK_EQ_INT(pt.len, 0);
    buf_free(&ca);
    buf_free(&cac);
    buf_free(&cb);
    buf_wipe_free(&pt);
out:
    kmsplugin_kek_free(a);
    kmsplugin_kek_free(a_custom);
    kmsplugin_kek_free(b);
    kmsplugin_kek_free(other);
}

static void test_key_file_rules(void)
{
    char p[256];
    es_error err = {0, ""};
    kmsplugin_kek *k = NULL;
    uint8_t raw[32];
    randombytes_buf(raw, sizeof raw);
    /* group/other readable: refused, message gives the mode and the fix */
    CHECK(kmsplugin_kek_file_new(&k, write_file("k644", raw, 32, 0644, p), NULL, NULL, 0, &err) !=
          0);
    CHECK(k == NULL);
    CHECK(strstr(err.msg, "0644") && strstr(err.msg, "0600") && strstr(err.msg, "--key-file"));
    CHECK(kmsplugin_kek_file_new(&k, write_file("k640", raw, 32, 0640, p), NULL, NULL, 0, &err) !=
          0);
    /* 0400 is fine */
    CHECK(kmsplugin_kek_file_new(&k, write_file("k400", raw, 32, 0400, p), NULL, NULL, 0, &err) ==
          0);
    char id_raw[KMSPLUGIN_KEY_ID_MAX + 1] = "";
    if (k)
        snprintf(id_raw, sizeof id_raw, "%s", kmsplugin_kek_key_id(k));
    kmsplugin_kek_free(k);
    k = NULL;
    /* base64 of the same key (with newline) = same key = same key_id */
    char b64[64];
    sodium_bin2base64(b64, sizeof b64, raw, 32, sodium_base64_VARIANT_ORIGINAL);
    strcat(b64, "\n");
    CHECK(kmsplugin_kek_file_new(&k, write_file("kb64", b64, strlen(b64), 0600, p), NULL, NULL, 0,
                                 &err) == 0);
    if (k)
        CHECK_EQ_STR(kmsplugin_kek_key_id(k), id_raw);
    kmsplugin_kek_free(k);
    k = NULL;
    /* wrong length, not base64, missing file, old key file with bad mode */
    CHECK(kmsplugin_kek_file_new(&k, write_file("k16", raw, 16, 0600, p), NULL, NULL, 0, &err) !=
          0);
    CHECK(strstr(err.msg, "32") != NULL);
    CHECK(kmsplugin_kek_file_new(&k, write_file("kbad", "not base64!!", 12, 0600, p), NULL, NULL, 0,
                                 &err) != 0);
    snprintf(p, sizeof p, "%s/missing", dir);
    CHECK(kmsplugin_kek_file_new(&k, p, NULL, NULL, 0, &err) != 0);
    char good[256], bad[256];
    random_key_file("kgood", good);
    write_file("kold644", raw, 32, 0644, bad);
    const char *olds[] = {bad};
    CHECK(kmsplugin_kek_file_new(&k, good, NULL, olds, 1, &err) != 0);
    CHECK(strstr(err.msg, "--old-key-file") != NULL);
    CHECK(kmsplugin_kek_file_new(&k, good, "", NULL, 0, &err) != 0);
    CHECK(k == NULL);
    sodium_memzero(raw, sizeof raw);
}

static void test_escape(void)
{
    buf_t b = BUF_INIT;
    const char *in = "my token/with %s and ünï";
    CHECK(kmsplugin_append_escaped(&b, (const uint8_t *)in, strlen(in)) == 0);
    buf_append_byte(&b, 0);
    CHECK(strchr((char *)b.data, '/') == NULL && strchr((char *)b.data, ' ') == NULL);
    char out[128];
    CHECK(kmsplugin_unescape(out, sizeof out, (char *)b.data, b.len - 1) == 0);
    CHECK_EQ_STR(out, in);
    CHECK(kmsplugin_unescape(out, sizeof out, "a%2", 3) != 0);
    CHECK(kmsplugin_unescape(out, sizeof out, "a%zz", 4) != 0);
    CHECK(kmsplugin_unescape(out, sizeof out, "a%00", 4) != 0);
    CHECK(kmsplugin_unescape(out, 3, "abc", 3) != 0);
    buf_free(&b);
}

static void test_listen_addresses(void)
{
    char out[128];
    es_error err = {0, ""};
    CHECK(kmsplugin_listen_to_grpc(out, sizeof out, "unix:///run/kms.sock", &err) == 0);
    CHECK_EQ_STR(out, "unix:/run/kms.sock");
    CHECK(kmsplugin_listen_to_grpc(out, sizeof out, "unix:///@kms-abstract", &err) == 0);
    CHECK_EQ_STR(out, "unix-abstract:kms-abstract");
    CHECK(kmsplugin_listen_to_grpc(out, sizeof out, "unix:///@", &err) != 0);
    CHECK(kmsplugin_listen_to_grpc(out, sizeof out, "unix://relative", &err) != 0);
    CHECK(kmsplugin_listen_to_grpc(out, sizeof out, "tcp://127.0.0.1:1", &err) != 0);
    CHECK(kmsplugin_listen_to_grpc(out, sizeof out, "/run/kms.sock", &err) != 0);
    CHECK(kmsplugin_listen_to_grpc(out, 8, "unix:///run/kms.sock", &err) != 0);
}

int main(int argc, char **argv)
{
    (void)argc;
    TEST_BEGIN(argv[0]);
    if (secret_init() != 0)
        return 1;
    snprintf(dir, sizeof dir, "/tmp/kmsplugin-kek-XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    RUN(test_round_trip_and_layout);
    RUN(test_tamper_and_unknown_key_id);
    RUN(test_rotation);
    RUN(test_key_file_rules);
    RUN(test_escape);
    RUN(test_listen_addresses);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", dir);
    return TEST_EXIT();
}
