/* access_policy_load_fuzz.c - libFuzzer target for the access policy loader
 * (access_policy_load_buffer), then verdicts for identities and keys taken from the input
 * itself (every line is tried as a CN, DNS and URI name and as a key, and consecutive lines as a
 * [key, range_end) pair) and from a fixed list matching the seed corpus. Any outcome is fine except
 * crashes, leaks and sanitizer reports. Seed corpus: tests/fuzz/corpus/access_policy_load/.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/secret.h"
#include "policy/access_policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const unsigned verbs[] = {ACCESS_VERB_READ, ACCESS_VERB_WRITE, ACCESS_VERB_LEASE,
                                 ACCESS_VERB_ADMIN};

static void probe(const access_policy *p, const char *name, const uint8_t *key, size_t key_len,
                  const uint8_t *end, size_t end_len)
{
    const char *names[] = {name};
    access_identity ids[] = {
        {.has_cert = true, .cn = name},
        {.has_cert = true, .dns = names, .n_dns = 1},
        {.has_cert = true, .uris = names, .n_uris = 1},
        {.has_cert = false},
    };
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        for (size_t v = 0; v < sizeof verbs / sizeof verbs[0]; v++) {
            (void)access_policy_check(p, &ids[i], verbs[v], key, key_len, end, end_len);
            (void)access_policy_check(p, &ids[i], verbs[v], NULL, 0, NULL, 0);
        }
        access_etcd_user u;
        (void)access_policy_etcd_user(p, &ids[i], &u);
        (void)access_policy_known(p, &ids[i]);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int inited;
    if (!inited) {
        secret_init();
        inited = 1;
    }
    es_error err;
    access_policy *p = NULL;
    if (access_policy_load_buffer("fuzz.yaml", (const char *)data, size, &p, &err) != 0)
        return 0;
    const uint8_t *line = data, *end = data + size, *prev = NULL;
    size_t prev_len = 0;
    while (line < end) {
        const uint8_t *nl = memchr(line, '\n', (size_t)(end - line));
        size_t n = nl ? (size_t)(nl - line) : (size_t)(end - line);
        char *name = malloc(n + 1);
        if (name) {
            memcpy(name, line, n);
            name[n] = '\0';
            probe(p, name, line, n, prev, prev_len);
            probe(p, name, line, n, (const uint8_t *)"\0", 1);
            free(name);
        }
        prev = line;
        prev_len = n;
        line += n + 1;
    }
    /* names and keys the seed corpus uses, so valid seeds reach allow verdicts too */
    static const char *const fixed[] = {"kube-apiserver",
                                        "a.apiserver.local",
                                        "spiffe://cluster/ns/x",
                                        "ops-1",
                                        "/registry/pods/a",
                                        "/app/x",
                                        ""};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        for (size_t k = 0; k < sizeof fixed / sizeof fixed[0]; k++)
            probe(p, fixed[i], (const uint8_t *)fixed[k], strlen(fixed[k]),
                  (const uint8_t *)"/registry0", 10);
    uint8_t pe[64];
    if (size < sizeof pe)
        (void)access_prefix_end(data, size, pe);
    access_policy_unref(p);
    return 0;
}
