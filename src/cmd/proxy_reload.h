/* proxy_reload.h - loading and hot-reloading what the running proxy may swap: the
 * EncryptionConfiguration (policy) and the listener's TLS certificate.
 *
 * A reload builds the complete new object first (config parsed, chains and KMS providers made,
 * certificates loaded); only then is it swapped into the runtime with one atomic exchange, so
 * calls already running finish on the state they started with. A reload that fails changes
 * nothing, logs why and is counted. Old objects are retired and freed after a grace period
 * (a worker that loaded the pointer just before the swap still takes its reference).
 * Key-bearing EncryptionConfigurations readable by group/others are refused unless
 * --allow-insecure-key-file. Main thread only.
 */
#ifndef ETCDSEAL_CMD_PROXY_RELOAD_H
#define ETCDSEAL_CMD_PROXY_RELOAD_H

#include "base/error.h"
#include "cmd/proxy_options.h"
#include "proxy/worker.h"

struct policy_encryption;
typedef struct proxy_reloader proxy_reloader;

/* Loads the --access-policy file (used at start and on reload). */
struct access_policy;
int proxy_load_access_policy(const proxy_options *o, struct access_policy **out, es_error *err);

/* Loads the EncryptionConfiguration with the hygiene checks (used at start and on reload). */
int proxy_load_encryption(const proxy_options *o, struct policy_encryption **out, es_error *err);

proxy_reloader *proxy_reloader_new(const proxy_options *o, proxy_runtime *rt);
/* SIGHUP: reload the EncryptionConfiguration, the access policy and the TLS certificate (each
 * if configured; a broken access policy keeps the running one, logged and counted). */
void proxy_reloader_reload_all(proxy_reloader *r);
/* inotify descriptor watching the EncryptionConfiguration's directory, or -1 (no automatic
 * reload); call proxy_reloader_on_watch when it is readable. */
int proxy_reloader_watch_fd(const proxy_reloader *r);
void proxy_reloader_on_watch(proxy_reloader *r);
/* Frees retired objects whose grace period is over; call about once a second. */
void proxy_reloader_tick(proxy_reloader *r);
void proxy_reloader_free(proxy_reloader *r);

#endif
