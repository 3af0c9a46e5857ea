/* keygen.c - `etcdseal keygen`: a random key for aescbc/aesgcm/secretbox from libsodium's CSPRNG,
 * printed as standard base64 (the `secret:` of an EncryptionConfiguration). The raw key and its
 * text live only in guarded memory and are wiped before exit.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "cmd/commands.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: etcdseal keygen [--provider aesgcm|aescbc|secretbox] [--bytes N]\n"
               "\n"
               "Prints a new random key as standard base64 (with padding) for the `secret:` field\n"
               "of an EncryptionConfiguration key.\n"
               "\n"
               "  --provider P  aesgcm (default), aescbc or secretbox\n"
               "  --bytes N     key length: 16, 24 or 32 for aesgcm/aescbc, 32 for secretbox\n"
               "                (default 32)\n");
}

int cmd_keygen(int argc, char **argv)
{
    static const struct option opts[] = {{"provider", required_argument, NULL, 'p'},
                                         {"bytes", required_argument, NULL, 'b'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *provider = "aesgcm", *bytes_text = "32";
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'p':
            provider = optarg;
            break;
        case 'b':
            bytes_text = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            fprintf(stderr, "etcdseal keygen: unknown or incomplete flag \"%s\"\n\n",
                    argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "etcdseal keygen: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    char *end;
    long n = strtol(bytes_text, &end, 10);
    if (*end || end == bytes_text) {
        fprintf(stderr, "etcdseal keygen: --bytes: not a number: \"%s\"\n", bytes_text);
        return 2;
    }
    if (strcmp(provider, "secretbox") == 0) {
        if (n != 32) {
            fprintf(stderr, "etcdseal keygen: secretbox keys must be 32 bytes, not %ld\n", n);
            return 2;
        }
    } else if (strcmp(provider, "aesgcm") == 0 || strcmp(provider, "aescbc") == 0) {
        if (n != 16 && n != 24 && n != 32) {
            fprintf(stderr, "etcdseal keygen: %s keys must be 16, 24 or 32 bytes, not %ld\n",
                    provider, n);
            return 2;
        }
    } else {
        fprintf(stderr,
                "etcdseal keygen: unknown provider \"%s\" (aesgcm, aescbc or secretbox; kms "
                "keys live in the KMS)\n",
                provider);
        return 2;
    }
    size_t b64_len = sodium_base64_ENCODED_LEN((size_t)n, sodium_base64_VARIANT_ORIGINAL);
    uint8_t *key = sodium_malloc((size_t)n);
    char *text = sodium_malloc(b64_len);
    if (!key || !text) {
        sodium_free(key);
        sodium_free(text);
        fprintf(stderr, "etcdseal keygen: out of memory\n");
        return 1;
    }
    randombytes_buf(key, (size_t)n);
    sodium_bin2base64(text, b64_len, key, (size_t)n, sodium_base64_VARIANT_ORIGINAL);
    /* write(2) directly: the key text never sits in stdio's heap buffer */
    size_t len = strlen(text), off = 0;
    text[len++] = '\n'; /* b64_len counts the NUL, so there is room */
    int rc = 0;
    while (off < len) {
        ssize_t w = write(STDOUT_FILENO, text + off, len - off);
        if (w <= 0) {
            rc = 1;
            break;
        }
        off += (size_t)w;
    }
    sodium_free(key); /* wipes */
    sodium_free(text);
    if (rc)
        fprintf(stderr, "etcdseal keygen: write to stdout failed\n");
    return rc;
}
