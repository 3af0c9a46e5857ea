/* bench_crypto.c - per-value cost of the provider chain (src/crypto): ns/value and MB/s
 * (1 MB = 10^6 bytes of plaintext, like openssl speed's 1000s of bytes) for encrypt and decrypt
 * of each provider at 256 B, 4 KiB, 64 KiB and 1 MiB, one thread, one chain built once.
 * Each measurement runs -t seconds (default 0.5) split into 3 trials after a short warm-up and
 * reports the fastest trial (the machine may be shared).
 * Output: one line per measurement, "provider op bytes ns_per_value MB_per_s", tab-separated,
 * after a "# provider op bytes ns/value MB/s" header (bench/bench-crypto.sh formats it).
 * Usage: bench_crypto [-t seconds] [-p provider] [-s bytes]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "crypto/chain.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#define AAD "/registry/secrets/default/db-password"
#define TRIALS 3

typedef struct bench_case {
    const char *label;
    enum crypto_provider_type t;
    size_t key_len;
} bench_case;

static int measure(const crypto_chain *c, const char *label, size_t size, double secs)
{
    uint8_t *plain = malloc(size);
    buf_t enc = BUF_INIT, out = BUF_INIT;
    es_error err;
    crypto_read_info info;
    int rc = -1;
    if (!plain)
        return -1;
    randombytes_buf(plain, size);
    if (crypto_chain_encrypt(c, (const uint8_t *)AAD, sizeof AAD - 1, plain, size, &enc, &err) <
        0) {
        fprintf(stderr, "bench_crypto: %s: %s\n", label, err.msg);
        goto done;
    }
    for (int op = 0; op < 2; op++) {
        /* warm-up (trial -1), then TRIALS timed trials; the fastest one is reported */
        double best = 0;
        for (int trial = -1; trial < TRIALS; trial++) {
            long n = 0, batch = size >= 65536 ? 4 : 64;
            double t0 = now(), end = t0 + (trial < 0 ? secs / 10 : secs / TRIALS), t;
            do {
                for (long i = 0; i < batch; i++) {
                    buf_reset(&out);
                    int r = op == 0 ? crypto_chain_encrypt(c, (const uint8_t *)AAD, sizeof AAD - 1,
                                                           plain, size, &out, &err)
                                    : crypto_chain_decrypt(c, (const uint8_t *)AAD, sizeof AAD - 1,
                                                           enc.data, enc.len, &out, &info, &err);
                    if (r < 0) {
                        fprintf(stderr, "bench_crypto: %s: %s\n", label, err.msg);
                        goto done;
                    }
                }
                n += batch;
                t = now();
            } while (t < end);
            double per = (t - t0) / (double)n;
            if (trial >= 0 && (best == 0 || per < best))
                best = per;
        }
        printf("%s\t%s\t%zu\t%.1f\t%.1f\n", label, op ? "decrypt" : "encrypt", size, best * 1e9,
               (double)size / best / 1e6);
        fflush(stdout);
    }
    rc = 0;
done:
    free(plain);
    buf_free(&enc);
    buf_wipe_free(&out);
    return rc;
}

int main(int argc, char **argv)
{
    double secs = 0.5;
    const char *only = NULL;
    size_t only_size = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "-t") == 0)
            secs = atof(argv[i + 1]);
        else if (strcmp(argv[i], "-p") == 0)
            only = argv[i + 1];
        else if (strcmp(argv[i], "-s") == 0)
            only_size = (size_t)strtoul(argv[i + 1], NULL, 10);
    }
    if (secs <= 0 || sodium_init() < 0) {
        fprintf(stderr, "usage: bench_crypto [-t seconds] [-p provider] [-s bytes]\n");
        return 2;
    }
    static const bench_case cases[] = {
        {"identity", CRYPTO_PROVIDER_IDENTITY, 0},    {"aescbc-256", CRYPTO_PROVIDER_AESCBC, 32},
        {"aesgcm-256", CRYPTO_PROVIDER_AESGCM, 32},   {"aesgcm-128", CRYPTO_PROVIDER_AESGCM, 16},
        {"secretbox", CRYPTO_PROVIDER_SECRETBOX, 32},
    };
    static const size_t sizes[] = {256, 4096, 65536, 1 << 20};
    uint8_t key[32];
    randombytes_buf(key, sizeof key);
    printf("# provider\top\tbytes\tns/value\tMB/s\n");
    int rc = 0;
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        if (only && strcmp(only, cases[ci].label) != 0)
            continue;
        es_error err;
        crypto_chain *c = crypto_chain_new();
        crypto_key_spec ks = {"bench", key, cases[ci].key_len};
        if (!c || (cases[ci].t == CRYPTO_PROVIDER_IDENTITY
                       ? crypto_chain_add_identity(c, &err)
                       : crypto_chain_add_keyed(c, cases[ci].t, &ks, 1, &err)) < 0) {
            fprintf(stderr, "bench_crypto: %s: cannot build chain\n", cases[ci].label);
            crypto_chain_free(c);
            return 1;
        }
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            size_t n = only_size ? only_size : sizes[si];
            if (measure(c, cases[ci].label, n, secs) < 0)
                rc = 1;
            if (only_size)
                break;
        }
        crypto_chain_free(c);
    }
    sodium_memzero(key, sizeof key);
    crypto_thread_cleanup();
    return rc;
}
