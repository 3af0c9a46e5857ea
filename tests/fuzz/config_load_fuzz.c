/* config_load_fuzz.c - libFuzzer target for the EncryptionConfiguration loader: parse + validate
 * + key map + chains (policy_encryption_load_buffer), then a few lookups on keys taken from the
 * input itself. Any outcome is fine except crashes, leaks and sanitizer reports.
 * Seed corpus: tests/fuzz/corpus/config_load/ (copies of tests/config fixtures).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "base/secret.h"
#include "policy/encryption.h"
#include "policy/encryption_config.h"
#include "policy/key_map.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int inited;
    if (!inited) {
        secret_init();
        inited = 1;
    }
    es_error err;
    policy_encryption *p = NULL;
    if (policy_encryption_load_buffer("fuzz.yaml", (const char *)data, size, "/registry", &p,
                                      &err) == 0) {
        static const char *const keys[] = {"/registry/secrets/a/b",
                                           "/registry/a.b/c/d",
                                           "/registry/services/specs/x",
                                           "/app/x",
                                           "/registry/",
                                           ""};
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
            (void)policy_encryption_chain_for_key(p, (const uint8_t *)keys[i], strlen(keys[i]));
        /* every line of the input as a key too */
        const uint8_t *line = data, *end = data + size;
        while (line < end) {
            const uint8_t *nl = memchr(line, '\n', (size_t)(end - line));
            size_t n = nl ? (size_t)(nl - line) : (size_t)(end - line);
            (void)policy_encryption_chain_for_key(p, line, n);
            line += n + 1;
        }
        for (size_t i = 0; i < policy_encryption_rule_count(p); i++)
            (void)policy_encryption_rule(p, i);
        policy_encryption_unref(p);
    }
    /* the parse-only path (accepts kms) with the key map, as check-config uses it */
    policy_ec_doc *doc = NULL;
    if (policy_encryption_parse_buffer("fuzz.yaml", (const char *)data, size, &doc, &err) == 0) {
        policy_keymap *m = NULL;
        if (policy_keymap_build(doc, "k8s", &m, &err) == 0) {
            (void)policy_keymap_lookup(m, data, size);
            policy_keymap_free(m);
        }
        policy_ec_doc_free(doc);
    }
    return 0;
}
