/* kms.h - KMS v1/v2 envelope providers (kube-apiserver formats, wire-format.md §3.6, §3.7, §4).
 *
 * A crypto_kms is one configured kms provider: its plugin client, DEK/seed cache and (v2) the
 * write state kept fresh by Status polling on the KMS thread. Create it once per configured
 * provider, add it to every chain that lists it (crypto_chain_add_kms takes a reference), drop
 * the creator's reference with crypto_kms_unref. Creation never blocks: the first Status/Encrypt
 * (v2) or Version + DEK pool fill (v1) run in the background; until then encrypt/decrypt return
 * CRYPTO_ERR_WOULD_BLOCK (see chain.h crypto_chain_await). Thread-safe; the write path of a
 * ready v2 provider takes no lock and makes no KMS call.
 * Health: every live provider is listed in a process registry (crypto_kms_health_list).
 * Timings (Status poll 60 s healthy / 10 s unhealthy, write-state expiry 180 s) can be shortened
 * for tests with crypto_kms_set_timing or env ETCDSEAL_KMS_TIMING="healthy=1,unhealthy=0.5,
 * expiry=3,negative=1" (read when a provider is created).
 */
#ifndef ETCDSEAL_CRYPTO_KMS_H
#define ETCDSEAL_CRYPTO_KMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/error.h"
#include "crypto/chain.h"

typedef struct crypto_kms crypto_kms;

typedef struct crypto_kms_config {
    enum crypto_provider_type type; /* CRYPTO_PROVIDER_KMS_V1 or _V2 */
    const char *name;
    const char *const *endpoints; /* `endpoint` first, then the `endpoints:` extension */
    size_t n_endpoints;
    double timeout_s;  /* per call */
    int32_t cachesize; /* v1: LRU size, < 0 disables; v2: ignored (0 = default) */
} crypto_kms_config;

typedef struct crypto_kms_timing {
    double status_healthy_s;   /* 60 */
    double status_unhealthy_s; /* 10 */
    double write_expiry_s;     /* 180 */
    double negative_s;         /* 2: how long a failed Decrypt answers reads of that DEK */
} crypto_kms_timing;

void crypto_kms_set_timing(const crypto_kms_timing *t); /* NULL: defaults (and env) again */

int crypto_kms_new(const crypto_kms_config *cfg, crypto_kms **out, es_error *err);
crypto_kms *crypto_kms_ref(crypto_kms *k);
void crypto_kms_unref(crypto_kms *k);

/* Appends a kms provider to a chain (the chain holds a reference). */
int crypto_chain_add_kms(crypto_chain *c, crypto_kms *k, es_error *err);

/* Blocks until the provider's first write state (v2) / first DEK (v1) exists or failed, at most
 * timeout_s. Returns 0 when ready. Tools and tests only. */
int crypto_kms_wait_ready(crypto_kms *k, double timeout_s, es_error *err);

typedef struct crypto_kms_health {
    char name[128];
    enum crypto_provider_type type;
    bool healthy;
    char last_error[256]; /* "" when healthy */
    char key_id_hash[80]; /* v2: "sha256:<hex>" of the current key id, "" before the first */
    double since_ok_s;    /* seconds since the last successful Status/Version call, -1 never */
} crypto_kms_health;

/* Health of one provider: 0 healthy, -1 not (detail gets "<name>: <reason>" when not NULL). */
int crypto_kms_health_check(const crypto_kms *k, buf_t *detail);
/* Snapshot of every live provider (creation order); returns the count (may exceed max). */
size_t crypto_kms_health_list(crypto_kms_health *out, size_t max);
const char *crypto_kms_name(const crypto_kms *k);

/* Test counters: KMS calls this provider made so far. */
typedef struct crypto_kms_stats {
    uint64_t status, version, encrypt, decrypt, cache_hits, cache_misses;
} crypto_kms_stats;
void crypto_kms_get_stats(const crypto_kms *k, crypto_kms_stats *s);

#endif
