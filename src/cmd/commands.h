/* commands.h - the etcdseal subcommands. Each takes the arguments after its name (argv[0] is the
 * subcommand name) and returns the process exit status. Only src/cmd/ may print to stdout or
 * call exit(). */
#ifndef ETCDSEAL_CMD_COMMANDS_H
#define ETCDSEAL_CMD_COMMANDS_H

int cmd_version(int argc, char **argv);
int cmd_proxy(int argc, char **argv);
int cmd_check_config(int argc, char **argv);
int cmd_keygen(int argc, char **argv);
int cmd_encrypt(int argc, char **argv);
int cmd_decrypt(int argc, char **argv);
int cmd_kms_plugin(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_rewrap(int argc, char **argv);

/* ---- shared by verify.c and rewrap.c (defined in verify.c) ---- */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "etcdclient/etcdclient.h"
#include "policy/encryption.h"

enum ops_opt {
    OPS_OPT_ENDPOINTS = 500,
    OPS_OPT_CACERT,
    OPS_OPT_CERT,
    OPS_OPT_KEY,
    OPS_OPT_INSECURE,
    OPS_OPT_CONFIG,
    OPS_OPT_STORAGE_PREFIX,
    OPS_OPT_PREFIX,
    OPS_OPT_LIMIT,
    OPS_OPT_TIMEOUT,
};
#define OPS_COMMON_LONG_OPTIONS                                                                    \
    {"endpoints", required_argument, NULL, OPS_OPT_ENDPOINTS},                                     \
        {"cacert", required_argument, NULL, OPS_OPT_CACERT},                                       \
        {"cert", required_argument, NULL, OPS_OPT_CERT},                                           \
        {"key", required_argument, NULL, OPS_OPT_KEY},                                             \
        {"insecure-skip-tls-verify", no_argument, NULL, OPS_OPT_INSECURE},                         \
        {"encryption-provider-config", required_argument, NULL, OPS_OPT_CONFIG},                   \
        {"storage-prefix", required_argument, NULL, OPS_OPT_STORAGE_PREFIX},                       \
        {"prefix", required_argument, NULL, OPS_OPT_PREFIX},                                       \
        {"limit", required_argument, NULL, OPS_OPT_LIMIT},                                         \
    {                                                                                              \
        "timeout", required_argument, NULL, OPS_OPT_TIMEOUT                                        \
    }

typedef struct ops_common {
    etcdc_options conn;
    const char *config, *storage_prefix, *prefix;
    int64_t limit;
} ops_common;

extern volatile sig_atomic_t ops_interrupted; /* SIGINT/SIGTERM seen */
void ops_install_signals(void);
long long ops_now_ms(void);
int ops_common_flag(ops_common *o, int opt, const char *arg); /* 0, or -1 = bad value/flag */
int ops_load_policy(const ops_common *o, const char *cmd, policy_encryption **p); /* prints */
void ops_print_key(FILE *f, const uint8_t *k, size_t n);
void ops_json_string(FILE *f, const uint8_t *s, size_t n);
int cmd_help(int argc, char **argv);

#define ETCDSEAL_VERSION "0.1.0"

#endif
