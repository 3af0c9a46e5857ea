/* transform_value.c - `etcdseal encrypt` / `etcdseal decrypt`: transform one etcd value read
 * from stdin with the chain that protects --key, exactly as the proxy would (AAD = etcd key),
 * and write the result to stdout. Binary-safe; --base64 switches input and output to base64.
 *
 * Keys no rule covers: decrypt applies kube-apiserver's identity read check (a value starting
 * with "k8s:enc:" is refused, anything else is returned unchanged); encrypt refuses with exit 3,
 * because the proxy would store such a value in plaintext, unless --allow-plaintext is given
 * (then the value is written unchanged, which is what the proxy would store).
 * Plaintext buffers are wiped before exit; errors go to stderr and never contain the value.
 */
#include <ctype.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "base/buf.h"
#include "cmd/commands.h"
#include "crypto/chain.h"
#include "policy/encryption.h"

#define MAX_VALUE_BYTES (256u << 20)

enum { EXIT_OK = 0, EXIT_ERR = 1, EXIT_USAGE = 2, EXIT_UNCOVERED = 3 };

static void usage(FILE *f, const char *cmd)
{
    int enc = strcmp(cmd, "encrypt") == 0;
    fprintf(
        f,
        "usage: etcdseal %s --encryption-provider-config FILE --key ETCD_KEY\n"
        "                        [--storage-prefix P] [--base64]%s\n"
        "\n"
        "%s\n"
        "\n"
        "  --encryption-provider-config FILE  kube-apiserver EncryptionConfiguration\n"
        "  --key ETCD_KEY                     full etcd key, e.g. /registry/secrets/ns/name\n"
        "                                     (selects the rule; authenticated data)\n"
        "  --storage-prefix P                 kube-apiserver --etcd-prefix (default /registry)\n"
        "  --base64                           stdin and stdout are standard base64 text\n"
        "%s"
        "\n"
        "Exit status: 0 ok, 1 error, 2 usage%s.\n",
        cmd, enc ? " [--allow-plaintext]" : "",
        enc ? "Reads a plaintext value on stdin and writes the value etcdseal would store in "
              "etcd\n(k8s:enc:<provider>:v1:<key>:...) to stdout: first provider, first key."
            : "Reads a stored value on stdin and writes its plaintext to stdout. Prints\n"
              "`stale=<true|false> provider=<prefix>` to stderr (stale: written by another\n"
              "provider or key than the one that writes now; `etcdseal rewrap` refreshes "
              "it).",
        enc ? "  --allow-plaintext                  when no rule covers the key, write the "
              "value\n                                     unchanged instead of failing\n"
            : "",
        enc ? ", 3 no rule covers the key" : "");
}

static int read_all(int fd, buf_t *b)
{
    for (;;) {
        if (buf_reserve(b, 65536) != 0)
            return -1;
        ssize_t r = read(fd, b->data + b->len, b->cap - b->len);
        if (r == 0)
            return 0;
        if (r < 0)
            return -1;
        b->len += (size_t)r;
        if (b->len > MAX_VALUE_BYTES)
            return -1;
    }
}

static int write_all(const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(STDOUT_FILENO, p, n);
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* --base64 input: whitespace (e.g. a trailing newline) is ignored. */
static int decode_b64(const buf_t *in, buf_t *out)
{
    size_t n = in->len;
    if (buf_reserve(out, n / 4 * 3 + 4) != 0)
        return -1;
    size_t got = 0;
    const char *end = NULL;
    if (sodium_base642bin(out->data, out->cap, (const char *)in->data, n, " \t\r\n", &got, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0)
        return -1;
    for (const char *p = end; p && p < (const char *)in->data + n; p++)
        if (!isspace((unsigned char)*p))
            return -1;
    out->len = got;
    return 0;
}

static int write_output(const buf_t *b, int base64)
{
    if (!base64)
        return write_all(b->data, b->len);
    size_t tl = sodium_base64_ENCODED_LEN(b->len, sodium_base64_VARIANT_ORIGINAL);
    char *text = malloc(tl + 1);
    if (!text)
        return -1;
    sodium_bin2base64(text, tl, b->data, b->len, sodium_base64_VARIANT_ORIGINAL);
    size_t len = strlen(text);
    text[len++] = '\n';
    int rc = write_all((const uint8_t *)text, len);
    sodium_memzero(text, tl + 1);
    free(text);
    return rc;
}

static int run(int argc, char **argv, int encrypt)
{
    static const struct option opts[] = {
        {"encryption-provider-config", required_argument, NULL, 'c'},
        {"key", required_argument, NULL, 'k'},
        {"storage-prefix", required_argument, NULL, 'p'},
        {"base64", no_argument, NULL, 'b'},
        {"allow-plaintext", no_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *cmd = encrypt ? "encrypt" : "decrypt";
    const char *file = NULL, *key = NULL, *prefix = POLICY_DEFAULT_STORAGE_PREFIX;
    int base64 = 0, allow_plain = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            file = optarg;
            break;
        case 'k':
            key = optarg;
            break;
        case 'p':
            prefix = optarg;
            break;
        case 'b':
            base64 = 1;
            break;
        case 'a':
            if (!encrypt)
                goto bad_flag; /* encrypt-only flag */
            allow_plain = 1;
            break;
        case 'h':
            usage(stdout, cmd);
            return EXIT_OK;
        default:
        bad_flag:
            fprintf(stderr, "etcdseal %s: unknown or incomplete flag \"%s\"\n\n", cmd,
                    argv[optind - 1]);
            usage(stderr, cmd);
            return EXIT_USAGE;
        }
    }
    if (!file || !key || optind != argc) {
        fprintf(stderr, "etcdseal %s: %s\n\n", cmd,
                !file  ? "--encryption-provider-config is required"
                : !key ? "--key is required"
                       : "unexpected argument");
        usage(stderr, cmd);
        return EXIT_USAGE;
    }
    es_error err = {0};
    policy_encryption *p = NULL;
    if (policy_encryption_load(file, prefix, &p, &err) != 0) {
        fprintf(stderr, "etcdseal %s: %s\n", cmd, err.msg);
        return EXIT_ERR;
    }
    buf_t raw = BUF_INIT, in = BUF_INIT, out = BUF_INIT;
    int rc = EXIT_ERR;
    if (read_all(STDIN_FILENO, &raw) != 0) {
        fprintf(stderr, "etcdseal %s: cannot read stdin (or value larger than %u bytes)\n", cmd,
                MAX_VALUE_BYTES);
        goto out;
    }
    const buf_t *value = &raw;
    if (base64) {
        if (decode_b64(&raw, &in) != 0) {
            fprintf(stderr, "etcdseal %s: stdin is not valid base64\n", cmd);
            goto out;
        }
        value = &in;
    }
    const uint8_t *k = (const uint8_t *)key;
    size_t klen = strlen(key);
    const crypto_chain *chain = policy_encryption_chain_for_key(p, k, klen);
    static const uint8_t empty = 0;
    const uint8_t *vdata = value->data ? value->data : &empty;
    if (!chain) {
        if (encrypt && !allow_plain) {
            fprintf(stderr,
                    "etcdseal encrypt: no rule of %s covers key \"%s\": the proxy stores it "
                    "unencrypted (use --allow-plaintext to print the value unchanged)\n",
                    file, key);
            rc = EXIT_UNCOVERED;
            goto out;
        }
        if (!encrypt && crypto_identity_read_check(vdata, value->len, &err) != 0) {
            fprintf(stderr, "etcdseal decrypt: key \"%s\" (no rule covers it): %s\n", key, err.msg);
            goto out;
        }
        if (buf_append(&out, vdata, value->len) != 0)
            goto out;
        fprintf(stderr, "not protected: no rule covers key \"%s\" (value passed through)\n", key);
    } else if (encrypt) {
        if (crypto_chain_encrypt_blocking(chain, k, klen, vdata, value->len, &out, &err) != 0) {
            fprintf(stderr, "etcdseal encrypt: key \"%s\": %s\n", key, err.msg);
            goto out;
        }
    } else {
        crypto_read_info info = {0};
        if (crypto_chain_decrypt_blocking(chain, k, klen, vdata, value->len, &out, &info, &err) !=
            0) {
            fprintf(stderr, "etcdseal decrypt: key \"%s\": %s\n", key, err.msg);
            goto out;
        }
        fprintf(stderr, "stale=%s provider=%s\n", info.stale ? "true" : "false",
                info.prefix ? info.prefix : "?");
    }
    if (write_output(&out, base64) != 0) {
        fprintf(stderr, "etcdseal %s: write to stdout failed\n", cmd);
        goto out;
    }
    rc = EXIT_OK;
out:
    buf_wipe_free(&raw);
    buf_wipe_free(&in);
    buf_wipe_free(&out);
    policy_encryption_unref(p);
    return rc;
}

int cmd_encrypt(int argc, char **argv)
{
    return run(argc, argv, 1);
}

int cmd_decrypt(int argc, char **argv)
{
    return run(argc, argv, 0);
}
