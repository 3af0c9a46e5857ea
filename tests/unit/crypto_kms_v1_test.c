/* crypto_kms_v1_test.c - the KMS v1 provider against tests/tools/kms_fake_plugin --v1.
 *
 * Round trip and layout (BE16 EDEK length, GCM body), Version called once, one fresh DEK per
 * write (distinct EDEKs, each pair used once), reads of own writes from the cache (no Decrypt),
 * a fresh provider reads with one Decrypt per DEK, cachesize < 0 still reads (Decrypt per value).
 */
#include <sodium.h>

#include "base/buf.h"
#include "base/secret.h"
#include "crypto/chain.h"
#include "crypto/kms.h"
#include "testlib.h"
#include "crypto_kms_fake.h"

#define KEK "4f12jBemAOk8Shkbr3YnpXrLnchI6gs8tH456dvKuWY="
static const uint8_t AAD[] = "/registry/leases/default/l1";
#define AADL (sizeof AAD - 1)

static char listen_addr[128];

static crypto_chain *chain_v1(int32_t cachesize, crypto_kms **kout)
{
    const char *ep[1] = {listen_addr};
    crypto_kms_config cfg = {.type = CRYPTO_PROVIDER_KMS_V1,
                             .name = "v1p",
                             .endpoints = ep,
                             .n_endpoints = 1,
                             .timeout_s = 2,
                             .cachesize = cachesize};
    es_error e = {0};
    crypto_kms *k = NULL;
    if (crypto_kms_new(&cfg, &k, &e) != 0) {
        fprintf(stderr, "  %s\n", e.msg);
        return NULL;
    }
    crypto_chain *c = crypto_chain_new();
    crypto_chain_add_kms(c, k, &e);
    *kout = k;
    return c;
}

static void test_v1(void)
{
    fake_kms fk;
    memset(&fk, 0, sizeof fk);
    snprintf(listen_addr, sizeof listen_addr, "unix:///@etcdseal-kmsv1-test-%d", (int)getpid());
    const char flags[] = "--v1\0--kek-b64\0" KEK;
    CHECK(fake_kms_start_flags(&fk, listen_addr, flags, 3, "v1") == 0);
    crypto_kms *k = NULL;
    crypto_chain *c = chain_v1(100, &k);
    CHECK(c != NULL);
    es_error e = {0};
    buf_t vals[50], pl = BUF_INIT;
    crypto_read_info info = {0};
    size_t ok = 0, distinct = 0;
    const char *pfx = "k8s:enc:kms:v1:v1p:";
    for (int i = 0; i < 50; i++) {
        vals[i] = (buf_t)BUF_INIT;
        char v[32];
        snprintf(v, sizeof v, "lease-%d", i);
        if (c &&
            crypto_chain_encrypt_blocking(c, AAD, AADL, (const uint8_t *)v, strlen(v), &vals[i],
                                          &e) == 0 &&
            vals[i].len == strlen(pfx) + 2 + 60 + 12 + strlen(v) + 16 &&
            memcmp(vals[i].data, pfx, strlen(pfx)) == 0 && vals[i].data[strlen(pfx)] == 0 &&
            vals[i].data[strlen(pfx) + 1] == 60)
            ok++;
        if (i > 0 && vals[i].len >= strlen(pfx) + 62 &&
            memcmp(vals[i].data + strlen(pfx) + 2, vals[i - 1].data + strlen(pfx) + 2, 60) != 0)
            distinct++;
    }
    CHECK_EQ_INT(ok, 50);
    CHECK_EQ_INT(distinct, 49); /* a fresh DEK (EDEK) per write */
    size_t read_ok = 0;
    for (int i = 0; c && i < 50; i++) {
        buf_reset(&pl);
        char v[32];
        snprintf(v, sizeof v, "lease-%d", i);
        if (crypto_chain_decrypt_blocking(c, AAD, AADL, vals[i].data, vals[i].len, &pl, &info,
                                          &e) == 0 &&
            pl.len == strlen(v) && memcmp(pl.data, v, pl.len) == 0 && !info.stale)
            read_ok++;
    }
    CHECK_EQ_INT(read_ok, 50);
    fake_counts fc;
    CHECK(fake_kms_counts(&fk, &fc) == 0);
    printf("  50 writes + reads: plugin Version=%lu Encrypt=%lu Decrypt=%lu\n", fc.version,
           fc.encrypt, fc.decrypt);
    CHECK_EQ_INT(fc.version, 1);
    CHECK(fc.encrypt >= 50);
    CHECK_EQ_INT(fc.decrypt, 0); /* own writes are cached */
    /* fresh provider, cache disabled: reads still work (one Decrypt per value) */
    crypto_kms *k2 = NULL;
    crypto_chain *c2 = chain_v1(-1, &k2);
    read_ok = 0;
    for (int i = 0; c2 && i < 10; i++) {
        buf_reset(&pl);
        read_ok += crypto_chain_decrypt_blocking(c2, AAD, AADL, vals[i].data, vals[i].len, &pl,
                                                 &info, &e) == 0;
    }
    CHECK_EQ_INT(read_ok, 10);
    CHECK(fake_kms_counts(&fk, &fc) == 0);
    CHECK_EQ_INT(fc.decrypt, 10);
    for (int i = 0; i < 50; i++)
        buf_free(&vals[i]);
    buf_wipe_free(&pl);
    crypto_chain_free(c2);
    crypto_kms_unref(k2);
    crypto_chain_free(c);
    crypto_kms_unref(k);
    fake_kms_cleanup(&fk);
}

int main(int argc, char **argv)
{
    (void)argc;
    TEST_BEGIN(argv[0]);
    if (secret_init() != 0)
        return 1;
    RUN(test_v1);
    return TEST_EXIT();
}
