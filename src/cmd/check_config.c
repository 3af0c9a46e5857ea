/* check_config.c - `etcdseal check-config`: validate an EncryptionConfiguration and show, per
 * rule, the etcd key prefixes it covers, its provider chain (types and key names, never key
 * bytes) and warnings. Exit 0 = valid and loadable by this build, 1 = errors, 2 = usage.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cmd/commands.h"
#include "policy/encryption.h"
#include "policy/encryption_config.h"
#include "policy/key_map.h"

static void usage(FILE *f)
{
    fprintf(
        f, "usage: etcdseal check-config --encryption-provider-config FILE [--storage-prefix P]\n"
           "                             [--parse-only] [--quiet]\n"
           "\n"
           "Validates a kube-apiserver EncryptionConfiguration the way kube-apiserver 1.31 does\n"
           "and prints each rule with the etcd key prefixes it covers and its provider chain\n"
           "(the first provider writes, all read in order). Key bytes are never printed.\n"
           "\n"
           "  --encryption-provider-config FILE  the configuration to check\n"
           "  --storage-prefix P                 kube-apiserver --etcd-prefix (default /registry)\n"
           "  --parse-only                       validate only; do not build the provider chains\n"
           "                                     (accepts KMS providers this build cannot load)\n"
           "  --quiet                            print errors and warnings only\n"
           "\n"
           "Exit status: 0 valid, 1 invalid (or not loadable by this build), 2 usage error.\n");
}

static void print_view(const policy_rule_view *v)
{
    printf("rule resources[%zu]:", v->index);
    for (size_t i = 0; i < v->rule->n_resources; i++)
        printf("%s%s", i ? ", " : " ", v->rule->resources[i].text);
    printf("\n  providers (first writes): %s\n", v->providers);
    for (size_t i = 0; i < v->n_prefixes; i++)
        printf("  prefix: %s\n", v->prefixes[i]);
}

int cmd_check_config(int argc, char **argv)
{
    static const struct option opts[] = {
        {"encryption-provider-config", required_argument, NULL, 'c'},
        {"storage-prefix", required_argument, NULL, 'p'},
        {"parse-only", no_argument, NULL, 'n'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *file = NULL, *prefix = POLICY_DEFAULT_STORAGE_PREFIX;
    int parse_only = 0, quiet = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            file = optarg;
            break;
        case 'p':
            prefix = optarg;
            break;
        case 'n':
            parse_only = 1;
            break;
        case 'q':
            quiet = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            fprintf(stderr, "etcdseal check-config: unknown or incomplete flag \"%s\"\n\n",
                    argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (!file || optind != argc) {
        fprintf(stderr, "etcdseal check-config: %s\n\n",
                file ? "unexpected argument" : "--encryption-provider-config is required");
        usage(stderr);
        return 2;
    }
    es_error err = {0};
    policy_ec_doc *doc = NULL;
    policy_keymap *map = NULL;
    if (policy_encryption_parse(file, &doc, &err) != 0 ||
        policy_keymap_build(doc, prefix, &map, &err) != 0) {
        fprintf(stderr, "error: %s\n", err.msg);
        policy_ec_doc_free(doc);
        return 1;
    }
    policy_ec_doc_drop_secrets(doc); /* only names are printed */
    size_t n_rules = policy_keymap_rule_count(map), n_warn = 0, nfw;
    if (!quiet)
        printf("%s: %s, %zu rule%s, storage prefix %s\n", file,
               doc->legacy_kind ? "EncryptionConfig (legacy v1)" : "EncryptionConfiguration",
               n_rules, n_rules == 1 ? "" : "s", policy_keymap_storage_prefix(map));
    for (size_t i = 0; i < n_rules; i++) {
        const policy_rule_view *v = policy_keymap_rule(map, i);
        if (!quiet)
            print_view(v);
        for (size_t w = 0; w < v->n_warnings; w++, n_warn++)
            fprintf(quiet ? stderr : stdout, "  warning: %s\n", v->warnings[w]);
    }
    const char *const *fw = policy_keymap_file_warnings(map, &nfw);
    for (size_t i = 0; i < nfw; i++, n_warn++)
        fprintf(quiet ? stderr : stdout, "warning: %s\n", fw[i]);
    if (!quiet)
        printf("keys no rule covers are stored and read unencrypted (identity), as in "
               "kube-apiserver\n");
    policy_keymap_free(map);
    bool has_kms = doc->has_kms;
    policy_ec_doc_free(doc);

    int rc = 0;
    if (!parse_only) {
        /* Build the chains for real: what `etcdseal proxy` would do with this file. */
        policy_encryption *p = NULL;
        if (policy_encryption_load(file, prefix, &p, &err) != 0) {
            fprintf(stderr, "error: %s\n", err.msg);
            if (has_kms)
                fprintf(stderr, "note: the file is valid for kube-apiserver (use --parse-only "
                                "to validate without building chains)\n");
            rc = 1;
        }
        policy_encryption_unref(p);
    }
    if (rc == 0 && !quiet)
        printf("OK: %s is valid (%zu warning%s)%s\n", file, n_warn, n_warn == 1 ? "" : "s",
               parse_only ? " [parse only]" : "");
    return rc;
}
