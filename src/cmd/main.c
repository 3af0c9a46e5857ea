/* main.c - `etcdseal <subcommand> [flags]`: dispatches to src/cmd/<subcommand>.c.
 * Core dumps are disabled before anything reads key material. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "base/harden.h"
#include "base/secret.h"
#include "cmd/commands.h"

struct subcommand {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

static const struct subcommand subcommands[] = {
    /* keep sorted by name; one line per subcommand */
    {"check-config", cmd_check_config, "validate an EncryptionConfiguration, show rules"},
    {"decrypt", cmd_decrypt, "decrypt one stored etcd value (stdin -> stdout)"},
    {"encrypt", cmd_encrypt, "encrypt one etcd value as the proxy would (stdin -> stdout)"},
    {"help", cmd_help, "print the manual: help TOPIC (a command, configuration...), help --roff"},
    {"keygen", cmd_keygen, "print a new random base64 key for aesgcm/aescbc/secretbox"},
    {"kms-plugin", cmd_kms_plugin, "run the bundled KMS v2 plugin (pkcs11 or file KEK)"},
    {"proxy", cmd_proxy, "run the transparent etcd proxy"},
    {"rewrap", cmd_rewrap, "re-encrypt plaintext/stale values in etcd (CAS on mod_revision)"},
    {"verify", cmd_verify, "inventory etcd: plaintext/stale/undecryptable values per rule"},
    {"version", cmd_version, "print the version"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: etcdseal <command> [flags]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        fprintf(f, "  %-14s %s\n", subcommands[i].name, subcommands[i].summary);
    fprintf(f, "\n`etcdseal <command> --help` lists the command's flags.\n");
}

int cmd_version(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("etcdseal %s\n", ETCDSEAL_VERSION);
    return 0;
}

int main(int argc, char **argv)
{
    /* The KMS client thread lives until the process ends and may still hash or decrypt while
     * main returns: OpenSSL must not tear itself down in an atexit handler under it. */
    OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, NULL);
    /* every subcommand may read keys (config, KEK, stdin): harden before dispatching */
    es_error herr = {0};
    if (harden_process(&herr) != 0)
        fprintf(stderr, "etcdseal: warning: could not disable core dumps: %s\n", herr.msg);
    if (secret_init() != 0) {
        fprintf(stderr, "etcdseal: libsodium failed to initialise\n");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        (strcmp(argv[1], "help") == 0 && argc < 3)) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0)
        return cmd_version(argc - 1, argv + 1);
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        if (strcmp(argv[1], subcommands[i].name) == 0)
            return subcommands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "etcdseal: unknown command \"%s\"\n\n", argv[1]);
    usage(stderr);
    return 2;
}
