/* kms_plugin.c - `etcdseal kms-plugin`: the bundled KMS v2 plugin (a gRPC server on a unix socket
 * speaking v2.KeyManagementService, like any kube-apiserver KMS plugin). Parses flags, builds the
 * KEK backend (pkcs11 or file), serves until SIGTERM/SIGINT, and logs the per-method call counts
 * at exit and on SIGUSR1 (tests assert on them). `--generate-key` creates the pkcs11 key instead.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "cmd/commands.h"
#include "kmsplugin/kek.h"
#include "kmsplugin/server.h"

#define MAX_OLD 32

static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t counts_requested;

static void on_stop(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void on_usr1(int sig)
{
    (void)sig;
    counts_requested = 1;
}

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: etcdseal kms-plugin --listen unix:///PATH|unix:///@NAME --backend pkcs11|file "
        "[flags]\n"
        "\n"
        "A KMS v2 plugin (gRPC v2.KeyManagementService: Status, Encrypt, Decrypt) for\n"
        "etcdseal and kube-apiserver. The key-encryption key never leaves the backend.\n"
        "\n"
        "  --listen ADDR              unix:///path/to/socket or unix:///@abstract-name\n"
        "  --backend pkcs11|file\n"
        "  --log-level L              debug|info|warn|error (default info)\n"
        "\n"
        "pkcs11 backend (AES key object in a PKCS#11 token, CKM_AES_GCM in the token):\n"
        "  --pkcs11-module PATH       module .so (default %s)\n"
        "  --token-label L | --slot N token to use\n"
        "  --pin-file F               user PIN (file mode 0600 or stricter)\n"
        "  --key-label K              CKA_LABEL of the current AES key (wraps new secrets)\n"
        "  --decrypt-key-label K      an older key kept for Decrypt (repeatable; older keys are\n"
        "                             also found by the label recorded in their key_id)\n"
        "  --generate-key             create an AES-256 key labelled --key-label, print its\n"
        "                             key_id and exit\n"
        "\n"
        "file backend (development only):\n"
        "  --key-file F               32 raw bytes or their base64 (mode 0600 or stricter)\n"
        "  --key-id ID                key_id to report (default: file:sha256:<hash of key>)\n"
        "  --old-key-file F           an older key kept for Decrypt (repeatable)\n"
        "\n"
        "Signals: TERM/INT stop cleanly; USR1 logs the call counts (also logged at exit).\n",
        KMSPLUGIN_PKCS11_DEFAULT_MODULE);
}

static void log_counts(const kmsplugin_counts *cp, const char *when)
{
    kmsplugin_counts c = *cp;
    log_info("kms-plugin calls|when=%s status=%llu encrypt=%llu decrypt=%llu failed=%llu "
             "unimplemented=%llu",
             when, (unsigned long long)c.status, (unsigned long long)c.encrypt,
             (unsigned long long)c.decrypt, (unsigned long long)c.failed,
             (unsigned long long)c.unimplemented);
}

int cmd_kms_plugin(int argc, char **argv)
{
    enum {
        O_LISTEN = 256,
        O_BACKEND,
        O_MODULE,
        O_TOKEN,
        O_SLOT,
        O_PIN,
        O_KEY_LABEL,
        O_DEC_LABEL,
        O_GENERATE,
        O_KEY_FILE,
        O_KEY_ID,
        O_OLD_FILE,
        O_LOG_LEVEL,
    };
    static const struct option opts[] = {
        {"listen", required_argument, NULL, O_LISTEN},
        {"backend", required_argument, NULL, O_BACKEND},
        {"pkcs11-module", required_argument, NULL, O_MODULE},
        {"token-label", required_argument, NULL, O_TOKEN},
        {"slot", required_argument, NULL, O_SLOT},
        {"pin-file", required_argument, NULL, O_PIN},
        {"key-label", required_argument, NULL, O_KEY_LABEL},
        {"decrypt-key-label", required_argument, NULL, O_DEC_LABEL},
        {"generate-key", no_argument, NULL, O_GENERATE},
        {"key-file", required_argument, NULL, O_KEY_FILE},
        {"key-id", required_argument, NULL, O_KEY_ID},
        {"old-key-file", required_argument, NULL, O_OLD_FILE},
        {"log-level", required_argument, NULL, O_LOG_LEVEL},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *listen = NULL, *backend = NULL, *key_file = NULL, *key_id = NULL;
    const char *dec_labels[MAX_OLD], *old_files[MAX_OLD];
    size_t n_dec = 0, n_old = 0;
    int generate = 0;
    struct kmsplugin_pkcs11_opts p11 = {0};
    p11.slot = -1;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_LISTEN:
            listen = optarg;
            break;
        case O_BACKEND:
            backend = optarg;
            break;
        case O_MODULE:
            p11.module = optarg;
            break;
        case O_TOKEN:
            p11.token_label = optarg;
            break;
        case O_SLOT: {
            char *end;
            p11.slot = strtol(optarg, &end, 10);
            if (!*optarg || *end || p11.slot < 0) {
                fprintf(stderr, "etcdseal kms-plugin: --slot %s: not a slot number\n", optarg);
                return 2;
            }
            break;
        }
        case O_PIN:
            p11.pin_file = optarg;
            break;
        case O_KEY_LABEL:
            p11.key_label = optarg;
            break;
        case O_DEC_LABEL:
            if (n_dec == MAX_OLD) {
                fprintf(stderr, "etcdseal kms-plugin: at most %d --decrypt-key-label\n", MAX_OLD);
                return 2;
            }
            dec_labels[n_dec++] = optarg;
            break;
        case O_GENERATE:
            generate = 1;
            break;
        case O_KEY_FILE:
            key_file = optarg;
            break;
        case O_KEY_ID:
            key_id = optarg;
            break;
        case O_OLD_FILE:
            if (n_old == MAX_OLD) {
                fprintf(stderr, "etcdseal kms-plugin: at most %d --old-key-file\n", MAX_OLD);
                return 2;
            }
            old_files[n_old++] = optarg;
            break;
        case O_LOG_LEVEL: {
            enum log_level lvl;
            if (log_level_parse(optarg, &lvl) != 0) {
                fprintf(stderr, "etcdseal kms-plugin: --log-level %s: unknown level\n", optarg);
                return 2;
            }
            log_set_level(lvl);
            break;
        }
        case 'h':
            usage(stdout);
            return 0;
        default:
            fprintf(stderr, "etcdseal kms-plugin: unknown or incomplete flag \"%s\"\n\n",
                    argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "etcdseal kms-plugin: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    p11.decrypt_labels = dec_labels;
    p11.n_decrypt_labels = n_dec;
    if (!backend || (strcmp(backend, "pkcs11") != 0 && strcmp(backend, "file") != 0)) {
        fprintf(stderr, "etcdseal kms-plugin: --backend pkcs11|file is required\n");
        return 2;
    }
    int is_file = strcmp(backend, "file") == 0;
    if (is_file && (p11.token_label || p11.slot >= 0 || p11.pin_file || p11.key_label || n_dec ||
                    generate || p11.module)) {
        fprintf(stderr, "etcdseal kms-plugin: pkcs11 flags given with --backend file\n");
        return 2;
    }
    if (!is_file && (key_file || key_id || n_old)) {
        fprintf(stderr, "etcdseal kms-plugin: file flags given with --backend pkcs11\n");
        return 2;
    }
    if (!is_file && p11.token_label && p11.slot >= 0) {
        fprintf(stderr, "etcdseal kms-plugin: give --token-label or --slot, not both\n");
        return 2;
    }
    es_error err = {0, ""};
    if (generate) {
        char id[KMSPLUGIN_KEY_ID_MAX + 1];
        if (kmsplugin_pkcs11_generate_key(id, sizeof id, &p11, &err) != 0) {
            fprintf(stderr, "etcdseal kms-plugin: %s\n", err.msg);
            return 1;
        }
        printf("%s\n", id);
        return 0;
    }
    if (!listen) {
        fprintf(stderr, "etcdseal kms-plugin: --listen is required\n");
        return 2;
    }
    if (is_file && !key_file) {
        fprintf(stderr, "etcdseal kms-plugin: --key-file is required with --backend file\n");
        return 2;
    }

    kmsplugin_kek *kek = NULL;
    int rc = is_file ? kmsplugin_kek_file_new(&kek, key_file, key_id, old_files, n_old, &err)
                     : kmsplugin_kek_pkcs11_new(&kek, &p11, &err);
    if (rc != 0) {
        fprintf(stderr, "etcdseal kms-plugin: %s\n", err.msg);
        return 1;
    }
    if (is_file)
        log_warn("kms-plugin file backend: for development only; the key is in a file");

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);

    kmsplugin_server *srv = NULL;
    if (kmsplugin_server_start(&srv, listen, kek, &err) != 0) {
        fprintf(stderr, "etcdseal kms-plugin: %s\n", err.msg);
        kmsplugin_kek_free(kek);
        return 1;
    }
    log_info("kms-plugin listening|listen=%s backend=%s key_id=\"%s\"", listen, backend,
             kmsplugin_kek_key_id(kek));
    while (!stop_requested) {
        kmsplugin_server_poll(srv, 200);
        if (counts_requested) {
            counts_requested = 0;
            kmsplugin_counts now;
            kmsplugin_server_counts(srv, &now);
            log_counts(&now, "usr1");
        }
    }
    log_info("kms-plugin stopping");
    kmsplugin_counts final;
    kmsplugin_server_stop(srv, &final);
    log_counts(&final, "exit");
    kmsplugin_kek_free(kek);
    return 0;
}
