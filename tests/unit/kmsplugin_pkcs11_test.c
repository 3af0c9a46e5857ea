/* kmsplugin_pkcs11_test.c - the PKCS#11 KEK backend (src/kmsplugin/kek_pkcs11.c) against a
 * SoftHSM2 token this test creates in a temporary directory (SOFTHSM2_CONF points there). Keys
 * are generated in the token by the backend's own C_GenerateKey path, and one by opensc's
 * pkcs11-tool (a key without CKA_ID) when that tool is installed. SKIPs only without SoftHSM2. */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <grpc/status.h>
#include <p11-kit-1/p11-kit/pkcs11.h>

#include "kmsplugin/kek.h"
#include "testlib.h"

#define TOKEN "es unit/tok"
#define PIN "4711-pin"

static char dir[64], pin_path[128], module[256];
static long slot_id = -1;
static const uint8_t seed[32] = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6,
                                 7, 8, 9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2};

static struct kmsplugin_pkcs11_opts opts(const char *label)
{
    struct kmsplugin_pkcs11_opts o = {0};
    o.module = module;
    o.token_label = TOKEN;
    o.slot = -1;
    o.pin_file = pin_path;
    o.key_label = label;
    return o;
}

static int gen(const char *label, char *id, size_t cap)
{
    struct kmsplugin_pkcs11_opts o = opts(label);
    es_error err = {0, ""};
    int rc = kmsplugin_pkcs11_generate_key(id, cap, &o, &err);
    if (rc != 0)
        fprintf(stderr, "  generate %s: %s\n", label, err.msg);
    return rc;
}

static kmsplugin_kek *open_kek(const char *label, const char *const *dec, size_t n_dec)
{
    struct kmsplugin_pkcs11_opts o = opts(label);
    o.decrypt_labels = dec;
    o.n_decrypt_labels = n_dec;
    kmsplugin_kek *k = NULL;
    es_error err = {0, ""};
    if (kmsplugin_kek_pkcs11_new(&k, &o, &err) != 0)
        fprintf(stderr, "  open %s: %s\n", label, err.msg);
    return k;
}

static char id1[KMSPLUGIN_KEY_ID_MAX + 1];
static buf_t ct1 = BUF_INIT; /* seed under kek-1, kept for the rotation test */

static void test_generate_and_round_trip(void)
{
    CHECK(gen("kek-1", id1, sizeof id1) == 0);
    /* token label escaped (space, '/'), key label, 8-byte CKA_ID in hex */
    CHECK(strncmp(id1, "pkcs11:es%20unit%2Ftok/kek-1/", 29) == 0);
    CHECK_EQ_INT(strlen(id1), 29 + 16);
    char again[KMSPLUGIN_KEY_ID_MAX + 1];
    struct kmsplugin_pkcs11_opts o = opts("kek-1");
    es_error err = {0, ""};
    CHECK(kmsplugin_pkcs11_generate_key(again, sizeof again, &o, &err) != 0);
    CHECK_EQ_INT(err.code, GRPC_STATUS_ALREADY_EXISTS);

    kmsplugin_kek *k = open_kek("kek-1", NULL, 0);
    CHECK(k != NULL);
    if (!k)
        return;
    CHECK_EQ_STR(kmsplugin_kek_key_id(k), id1);
    CHECK_EQ_INT(kmsplugin_kek_health(k, &err), 0);
    buf_t c2 = BUF_INIT, pt = BUF_INIT;
    CHECK(kmsplugin_kek_encrypt(k, &ct1, seed, sizeof seed, &err) == 0);
    CHECK(kmsplugin_kek_encrypt(k, &c2, seed, sizeof seed, &err) == 0);
    CHECK_EQ_INT(ct1.len, sizeof seed + KMSPLUGIN_CT_OVERHEAD);
    CHECK_EQ_INT(ct1.data[0], KMSPLUGIN_CT_VERSION);
    CHECK(memcmp(ct1.data + 1, c2.data + 1, KMSPLUGIN_IV_BYTES) != 0);
    CHECK(kmsplugin_kek_decrypt(k, &pt, id1, ct1.data, ct1.len, &err) == 0);
    CHECK_EQ_MEM(pt.data, pt.len, seed, sizeof seed);
    buf_wipe_free(&pt);
    CHECK(kmsplugin_kek_decrypt(k, &pt, id1, c2.data, c2.len, &err) == 0);
    CHECK_EQ_MEM(pt.data, pt.len, seed, sizeof seed);
    buf_wipe_free(&pt);
    buf_free(&c2);
    kmsplugin_kek_free(k);

    /* restart: same key, same key_id, old ciphertext decrypts */
    k = open_kek("kek-1", NULL, 0);
    if (k) {
        CHECK_EQ_STR(kmsplugin_kek_key_id(k), id1);
        CHECK(kmsplugin_kek_decrypt(k, &pt, id1, ct1.data, ct1.len, &err) == 0);
        CHECK_EQ_MEM(pt.data, pt.len, seed, sizeof seed);
        buf_wipe_free(&pt);
    }
    kmsplugin_kek_free(k);
}

static void test_tamper_and_unknown(void)
{
    kmsplugin_kek *k = open_kek("kek-1", NULL, 0);
    CHECK(k != NULL);
    if (!k || ct1.len == 0)
        return;
    es_error err = {0, ""};
    buf_t pt = BUF_INIT;
    size_t positions[] = {1, 12, 13, 20, ct1.len - 17, ct1.len - 16, ct1.len - 1};
    for (size_t i = 0; i < sizeof positions / sizeof positions[0]; i++) {
        ct1.data[positions[i]] ^= 0x80;
        es_error_clear(&err);
        CHECK(kmsplugin_kek_decrypt(k, &pt, id1, ct1.data, ct1.len, &err) != 0);
        CHECK_MSG(err.code == GRPC_STATUS_INVALID_ARGUMENT, "byte %zu: %d %s", positions[i],
                  err.code, err.msg);
        CHECK_EQ_INT(pt.len, 0);
        ct1.data[positions[i]] ^= 0x80;
    }
    /* the session survives failed decryptions */
    CHECK(kmsplugin_kek_decrypt(k, &pt, id1, ct1.data, ct1.len, &err) == 0);
    CHECK_EQ_MEM(pt.data, pt.len, seed, sizeof seed);
    buf_wipe_free(&pt);
    const char *unknown[] = {
        "pkcs11:es%20unit%2Ftok/kek-404/00",             /* no such label */
        "pkcs11:es%20unit%2Ftok/kek-1/0011223344556677", /* label exists, other CKA_ID */
        "pkcs11:other-token/kek-1/0011223344556677",     /* another token */
        "pkcs11:es%20unit%2Ftok/kek-1",                  /* malformed */
        "pkcs11:es%20unit%2Ftok/kek-1/zz",
        "file:sha256:00",
    };
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        es_error_clear(&err);
        CHECK(kmsplugin_kek_decrypt(k, &pt, unknown[i], ct1.data, ct1.len, &err) != 0);
        CHECK_MSG(err.code == GRPC_STATUS_NOT_FOUND, "%s: %d %s", unknown[i], err.code, err.msg);
    }
    CHECK_EQ_INT(pt.len, 0);
    buf_wipe_free(&pt);
    kmsplugin_kek_free(k);
}

static void test_rotation(void)
{
    char id2[KMSPLUGIN_KEY_ID_MAX + 1], id3[KMSPLUGIN_KEY_ID_MAX + 1];
    CHECK(gen("kek-2", id2, sizeof id2) == 0);
    CHECK(strcmp(id1, id2) != 0);
    es_error err = {0, ""};
    buf_t pt = BUF_INIT, c2 = BUF_INIT;
    /* new key label: new key_id; the old key is found by the label recorded in its key_id */
    kmsplugin_kek *k = open_kek("kek-2", NULL, 0);
    CHECK(k != NULL);
    if (k) {
        CHECK_EQ_STR(kmsplugin_kek_key_id(k), id2);
        CHECK(kmsplugin_kek_decrypt(k, &pt, id1, ct1.data, ct1.len, &err) == 0);
        CHECK_EQ_MEM(pt.data, pt.len, seed, sizeof seed);
        buf_wipe_free(&pt);
        /* twice: the second time from the key cache */
        CHECK(kmsplugin_kek_decrypt(k, &pt, id1, ct1.data, ct1.len, &err) == 0);
        buf_wipe_free(&pt);
        CHECK(kmsplugin_kek_encrypt(k, &c2, seed, sizeof seed, &err) == 0);
        /* key_id is the AAD: kek-1's ciphertext claimed under kek-2's id fails */
        CHECK(kmsplugin_kek_decrypt(k, &pt, id2, ct1.data, ct1.len, &err) != 0);
        CHECK_EQ_INT(err.code, GRPC_STATUS_INVALID_ARGUMENT);
    }
    kmsplugin_kek_free(k);
    /* a label with '/' and space, and old keys preloaded with --decrypt-key-label */
    CHECK(gen("team/kek 3", id3, sizeof id3) == 0);
    CHECK(strstr(id3, "/team%2Fkek%203/") != NULL);
    const char *dec[] = {"kek-1", "kek-2"};
    k = open_kek("team/kek 3", dec, 2);
    CHECK(k != NULL);
    if (k) {
        CHECK_EQ_STR(kmsplugin_kek_key_id(k), id3);
        CHECK(kmsplugin_kek_decrypt(k, &pt, id1, ct1.data, ct1.len, &err) == 0);
        CHECK_EQ_MEM(pt.data, pt.len, seed, sizeof seed);
        buf_wipe_free(&pt);
        CHECK(kmsplugin_kek_decrypt(k, &pt, id2, c2.data, c2.len, &err) == 0);
        CHECK_EQ_MEM(pt.data, pt.len, seed, sizeof seed);
        buf_wipe_free(&pt);
        buf_t c3 = BUF_INIT;
        CHECK(kmsplugin_kek_encrypt(k, &c3, seed, sizeof seed, &err) == 0);
        CHECK(kmsplugin_kek_decrypt(k, &pt, id3, c3.data, c3.len, &err) == 0);
        CHECK_EQ_MEM(pt.data, pt.len, seed, sizeof seed);
        buf_wipe_free(&pt);
        buf_free(&c3);
    }
    kmsplugin_kek_free(k);
    /* a missing --decrypt-key-label is an error at start */
    const char *missing[] = {"kek-404"};
    struct kmsplugin_pkcs11_opts o = opts("kek-2");
    o.decrypt_labels = missing;
    o.n_decrypt_labels = 1;
    k = NULL;
    CHECK(kmsplugin_kek_pkcs11_new(&k, &o, &err) != 0);
    CHECK(strstr(err.msg, "--decrypt-key-label") && strstr(err.msg, "kek-404"));
    buf_free(&c2);
    buf_wipe_free(&pt);
}

static void test_slot_and_tool_key(void)
{
    es_error err = {0, ""};
    if (slot_id >= 0) {
        struct kmsplugin_pkcs11_opts o = opts("kek-1");
        o.token_label = NULL;
        o.slot = slot_id;
        kmsplugin_kek *k = NULL;
        CHECK(kmsplugin_kek_pkcs11_new(&k, &o, &err) == 0);
        if (k)
            CHECK_EQ_STR(kmsplugin_kek_key_id(k), id1); /* same token label in the id */
        kmsplugin_kek_free(k);
    } else {
        CHECK_MSG(0, "no slot number from softhsm2-util");
    }
    if (system("command -v pkcs11-tool >/dev/null 2>&1") != 0) {
        printf("SKIP kmsplugin_pkcs11_test tool_key: pkcs11-tool (opensc) not installed\n");
        return;
    }
    char cmd[768];
    snprintf(cmd, sizeof cmd,
             "pkcs11-tool --module '%s' --token-label '" TOKEN "' --login --pin '" PIN
             "' --keygen --key-type AES:32 --label kek-tool >/dev/null 2>&1",
             module);
    CHECK(system(cmd) == 0);
    kmsplugin_kek *k = open_kek("kek-tool", NULL, 0);
    CHECK(k != NULL);
    if (!k)
        return;
    /* no CKA_ID: named by CKA_CHECK_VALUE */
    CHECK(strstr(kmsplugin_kek_key_id(k), "/kek-tool/kcv-") != NULL);
    buf_t c = BUF_INIT, pt = BUF_INIT;
    CHECK(kmsplugin_kek_encrypt(k, &c, seed, sizeof seed, &err) == 0);
    char id[KMSPLUGIN_KEY_ID_MAX + 1];
    snprintf(id, sizeof id, "%s", kmsplugin_kek_key_id(k));
    kmsplugin_kek_free(k);
    k = open_kek("kek-2", NULL, 0);
    if (k) {
        CHECK(kmsplugin_kek_decrypt(k, &pt, id, c.data, c.len, &err) == 0);
        CHECK_EQ_MEM(pt.data, pt.len, seed, sizeof seed);
        buf_wipe_free(&pt);
    }
    kmsplugin_kek_free(k);
    buf_free(&c);
}

static void test_refusals(void)
{
    es_error err = {0, ""};
    kmsplugin_kek *k = NULL;
    struct kmsplugin_pkcs11_opts o = opts("kek-1");
    /* PIN file readable by others */
    char p644[160];
    snprintf(p644, sizeof p644, "%s/pin644", dir);
    FILE *f = fopen(p644, "w");
    fputs(PIN "\n", f);
    fclose(f);
    chmod(p644, 0644);
    o.pin_file = p644;
    CHECK(kmsplugin_kek_pkcs11_new(&k, &o, &err) != 0);
    CHECK(strstr(err.msg, "--pin-file") && strstr(err.msg, "0644"));
    /* wrong PIN */
    char pbad[160];
    snprintf(pbad, sizeof pbad, "%s/pinbad", dir);
    f = fopen(pbad, "w");
    fputs("wrong-pin\n", f);
    fclose(f);
    chmod(pbad, 0600);
    o.pin_file = pbad;
    es_error_clear(&err);
    CHECK(kmsplugin_kek_pkcs11_new(&k, &o, &err) != 0);
    CHECK_EQ_INT(err.code, GRPC_STATUS_PERMISSION_DENIED);
    CHECK(strstr(err.msg, "CKR_PIN_INCORRECT") != NULL);
    CHECK(strstr(err.msg, "wrong-pin") == NULL);
    o = opts("kek-404");
    CHECK(kmsplugin_kek_pkcs11_new(&k, &o, &err) != 0);
    CHECK(strstr(err.msg, "kek-404") && strstr(err.msg, "--key-label"));
    o = opts("kek-1");
    o.token_label = "no-such-token";
    CHECK(kmsplugin_kek_pkcs11_new(&k, &o, &err) != 0);
    CHECK(strstr(err.msg, "no-such-token") != NULL);
    o = opts("kek-1");
    o.module = "/nonexistent/libpkcs11.so";
    CHECK(kmsplugin_kek_pkcs11_new(&k, &o, &err) != 0);
    CHECK(strstr(err.msg, "--pkcs11-module") != NULL);
    o = opts("kek-1");
    o.pin_file = NULL;
    CHECK(kmsplugin_kek_pkcs11_new(&k, &o, &err) != 0);
    CHECK(k == NULL);
}

/* The token drops every session (as after a token restart): the backend reopens and logs in
 * again on its own, for Encrypt, Decrypt and the health check behind Status. */
static void test_session_recovery(void)
{
    kmsplugin_kek *k = open_kek("kek-1", NULL, 0);
    CHECK(k != NULL);
    if (!k || slot_id < 0)
        goto out;
    /* same module handle as the backend's (dlopen is reference counted) */
    void *dl = dlopen(module, RTLD_NOW | RTLD_NOLOAD);
    CHECK(dl != NULL);
    if (!dl)
        goto out;
    CK_C_GetFunctionList gfl;
    *(void **)&gfl = dlsym(dl, "C_GetFunctionList");
    CK_FUNCTION_LIST_PTR f = NULL;
    CHECK(gfl && gfl(&f) == CKR_OK);
    es_error err = {0, ""};
    buf_t c = BUF_INIT, pt = BUF_INIT;
    if (f) {
        CHECK(f->C_CloseAllSessions((CK_SLOT_ID)slot_id) == CKR_OK);
        CHECK(kmsplugin_kek_encrypt(k, &c, seed, sizeof seed, &err) == 0);
        CHECK(f->C_CloseAllSessions((CK_SLOT_ID)slot_id) == CKR_OK);
        CHECK(kmsplugin_kek_decrypt(k, &pt, id1, c.data, c.len, &err) == 0);
        CHECK_EQ_MEM(pt.data, pt.len, seed, sizeof seed);
        CHECK(f->C_CloseAllSessions((CK_SLOT_ID)slot_id) == CKR_OK);
        CHECK_EQ_INT(kmsplugin_kek_health(k, &err), 0);
        buf_wipe_free(&pt);
        CHECK(kmsplugin_kek_decrypt(k, &pt, id1, ct1.data, ct1.len, &err) == 0);
        CHECK_EQ_MEM(pt.data, pt.len, seed, sizeof seed);
    }
    buf_wipe_free(&pt);
    buf_free(&c);
    dlclose(dl);
out:
    kmsplugin_kek_free(k);
}

/* softhsm2-util --init-token in our own config; returns 0 and sets slot_id. */
static int setup_token(void)
{
    char conf[160], cmd[512], line[256];
    snprintf(conf, sizeof conf, "%s/softhsm2.conf", dir);
    FILE *f = fopen(conf, "w");
    if (!f)
        return -1;
    fprintf(f, "directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s/tokens", dir);
    mkdir(cmd, 0700);
    setenv("SOFTHSM2_CONF", conf, 1);
    snprintf(cmd, sizeof cmd,
             "softhsm2-util --init-token --free --label '" TOKEN "' --pin '" PIN
             "' --so-pin so-secret 2>&1");
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    while (fgets(line, sizeof line, p)) {
        const char *s = strstr(line, "to slot ");
        if (s)
            slot_id = strtol(s + 8, NULL, 10);
    }
    if (pclose(p) != 0)
        return -1;
    f = fopen(pin_path, "w");
    if (!f)
        return -1;
    fputs(PIN "\n", f);
    fclose(f);
    return chmod(pin_path, 0600);
}

int main(int argc, char **argv)
{
    (void)argc;
    TEST_BEGIN(argv[0]);
    if (secret_init() != 0)
        return 1;
    const char *m = getenv("ETCDSEAL_PKCS11_MODULE");
    snprintf(module, sizeof module, "%s", m ? m : KMSPLUGIN_PKCS11_DEFAULT_MODULE);
    if (access(module, R_OK) != 0 || system("command -v softhsm2-util >/dev/null 2>&1") != 0) {
        printf("SKIP kmsplugin_pkcs11_test: SoftHSM2 not installed (%s; apt-get install "
               "softhsm2)\n",
               module);
        return 0;
    }
    snprintf(dir, sizeof dir, "/tmp/kmsplugin-p11-XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    snprintf(pin_path, sizeof pin_path, "%s/pin", dir);
    if (setup_token() != 0) {
        printf("FAIL kmsplugin_pkcs11_test setup: softhsm2-util --init-token failed\n");
        return 1;
    }
    RUN(test_generate_and_round_trip);
    RUN(test_tamper_and_unknown);
    RUN(test_rotation);
    RUN(test_session_recovery);
    RUN(test_slot_and_tool_key);
    RUN(test_refusals);
    buf_free(&ct1);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", dir);
    return TEST_EXIT();
}
