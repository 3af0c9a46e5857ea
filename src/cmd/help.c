/* help.c - `etcdseal help TOPIC`: the manual, one section at a time, as plain text; and
 * `etcdseal help --roff`: the whole manual as the man page man/etcdseal.1.
 *
 * The manual lives here, once, as a table of topics (every subcommand, plus the general
 * sections DESCRIPTION, CONFIGURATION, SIGNALS, FILES, EXAMPLES). Both renderings come from that
 * table, so `help TOPIC` and the man page cannot disagree; man/etcdseal.1 is this program's
 * `help --roff` output, committed (tests/integration/packaging_test.sh checks that they match
 * and that every subcommand in `etcdseal --help` has a topic whose OPTIONS are its flags).
 *
 * Text conventions in the table: a paragraph is one string, wrapped when rendered; a paragraph
 * starting with '\t' is verbatim (lines separated by '\n', each shown indented, never wrapped).
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "cmd/commands.h"

#define HELP_WIDTH 80   /* plain text: total line width */
#define HELP_INDENT 4   /* plain text: body indent */
#define HELP_OPT_TEXT 8 /* plain text: option description indent */
#define HELP_MAN_DATE "2026-11-27"

struct help_opt {
    const char *tag;  /* "--listen-addr ADDR": words starting with '-' are the flags */
    const char *text; /* one paragraph */
};

struct help_topic {
    const char *name;         /* topic for `etcdseal help NAME`; the subcommand's name */
    const char *heading;      /* man page: NULL = a subcommand under COMMANDS, else the .SH title */
    const char *summary;      /* one line (commands: the NAME line of the topic) */
    const char *synopsis;     /* commands: usage lines ('\n' separated), else NULL */
    const char *const *paras; /* NULL terminated */
    const struct help_opt *opts; /* terminated by {NULL, NULL}; NULL = none */
    const char *exit_status;     /* commands: one paragraph, else NULL */
};

/* ------------------------------------------------------------------ the manual */

static const char *const overview_paras[] = {
    "etcdseal is a transparent, TLS-terminating gRPC proxy between etcd v3 clients and etcd. "
    "Values written under configured key prefixes are encrypted before they reach etcd and "
    "decrypted on the way back, in kube-apiserver's encryption-at-rest format "
    "(k8s:enc:<provider>:v1:<key>:... and k8s:enc:kms:v2:<name>:...): a kube-apiserver given the "
    "same EncryptionConfiguration reads what etcdseal wrote, and the reverse. Every other etcd "
    "call passes through unchanged, headers, deadlines and trailers included.",
    "Which keys are encrypted, with which providers (aesgcm, aescbc, secretbox, kms v1 and v2, "
    "identity) and which keys, is a kube-apiserver EncryptionConfiguration, used as it is. "
    "Kubernetes resource names map to etcd keys under the storage prefix (secrets -> "
    "/registry/secrets/); a resource that starts with \"/\" is a literal etcd key prefix, for "
    "applications other than Kubernetes. Rules are tried in order and the first match wins; "
    "within a rule the first provider encrypts new writes and every listed provider is tried on "
    "reads. Keys that no rule covers pass through untouched.",
    "etcdseal fails closed: a value under a protected prefix that no listed provider can "
    "decrypt fails the call with a status naming the key, and nothing is written in plaintext "
    "under a protected prefix. Values that etcd would compare or sort (Txn compares on VALUE, "
    "Range sorted by VALUE) are evaluated on the plaintext, never on ciphertext.",
    "`etcdseal help TOPIC` prints one section of this manual as plain text (TOPIC is a command "
    "or one of overview, configuration, signals, files, examples); `etcdseal COMMAND --help` "
    "lists a command's flags.",
    NULL,
};

static const char *const proxy_paras[] = {
    "Runs the proxy. Clients connect to --listen-addr (cleartext HTTP/2 on loopback addresses "
    "only, TLS when --cert-file and --key-file are given); every call is relayed to the etcd "
    "cluster named by --endpoints, with failover between its members. Put values are encrypted "
    "and Range, Txn, Watch and prev_kv values decrypted under the prefixes that "
    "--encryption-provider-config protects.",
    "Every flag can also be set in the YAML file given by --config: a flat mapping whose keys "
    "are the flag names without the leading \"--\" (lists as YAML sequences or comma separated "
    "strings). Flags on the command line override the file. Unknown keys, duplicate keys and "
    "values of the wrong type are errors that name the file and the line.",
    "With --metrics-addr the proxy serves Prometheus metrics on /metrics (kube-apiserver's names "
    "where the meaning is the same, such as apiserver_storage_transformation_operations_total, "
    "plus etcdseal_* metrics), and /healthz, /readyz, /healthz/kms-providers and "
    "/healthz/kms-provider-N.",
    "Reload: SIGHUP, and with --encryption-provider-config-automatic-reload any change of the "
    "file, reload the EncryptionConfiguration and the TLS certificates and keys. The new state "
    "is built completely and then used for new requests; calls in flight finish on the old one. "
    "A file that fails to load changes nothing; the reason is logged and counted in "
    "apiserver_encryption_config_controller_automatic_reload_failures_total.",
    "An EncryptionConfiguration that holds keys must be readable by its owner only (mode 0600 "
    "or 0400); the proxy refuses it otherwise, unless --allow-insecure-key-file is given (which "
    "is logged as a warning at every load).",
    NULL,
};

static const struct help_opt proxy_opts[] = {
    {"--config FILE", "YAML file of settings (see above); flags override it."},
    {"--listen-addr ADDR",
     "Address clients connect to, host:port or [v6]:port (default 127.0.0.1:23790)."},
    {"--cert-file FILE",
     "Certificate the proxy presents to clients; turns on TLS for the listener."},
    {"--key-file FILE", "Private key of --cert-file."},
    {"--trusted-ca-file FILE", "Verify client certificates against this CA bundle."},
    {"--client-cert-auth BOOL",
     "Require a client certificate signed by --trusted-ca-file (default false)."},
    {"--client-crl-file FILE",
     "Refuse client certificates revoked by the CRLs in this PEM file (needs "
     "--trusted-ca-file); reloaded with the certificate on SIGHUP."},
    {"--insecure-listen BOOL",
     "Allow cleartext HTTP/2 on a non-loopback --listen-addr (default false)."},
    {"--endpoints LIST",
     "Comma separated etcd endpoints: host:port, http://host:port or https://host:port "
     "(default 127.0.0.1:2379)."},
    {"--cacert FILE", "Verify the etcd servers' certificates with this CA bundle."},
    {"--cert FILE", "Client certificate the proxy presents to etcd."},
    {"--key FILE", "Private key of --cert."},
    {"--insecure-skip-tls-verify BOOL",
     "Do not verify the etcd servers' certificates (testing only; default false)."},
    {"--advertise-client-url URL",
     "URL clients reach the proxy at, returned in MemberList answers so that clients which "
     "sync their endpoints keep using the proxy; repeatable or comma separated (unset: "
     "MemberList answers pass unchanged)."},
    {"--metrics-addr ADDR",
     "Serve /metrics, /healthz and /readyz on this host:port or http://host:port (unset: off)."},
    {"--workers N",
     "Worker threads, 1 to 64; 0 (the default) is half the online CPUs, at least 1 (etcd and "
     "its clients usually share the machine)."},
    {"--shutdown-timeout DURATION",
     "On SIGTERM or SIGINT, wait this long for open calls to finish (default 10s)."},
    {"--dial-timeout DURATION",
     "Timeout for connecting to an etcd endpoint, TLS handshake included (default 5s)."},
    {"--upstream-keepalive-time DURATION",
     "Send a PING on an upstream connection idle this long (default 10s)."},
    {"--upstream-keepalive-timeout DURATION",
     "Close an upstream connection whose PING is not acknowledged within this (default 5s)."},
    {"--max-message-bytes SIZE",
     "Largest gRPC message reassembled in either direction, in bytes or with a unit such as "
     "64MiB (default 2147483647)."},
    {"--max-header-list-bytes SIZE",
     "Largest request header block a client may send; larger ones are refused with a gRPC "
     "status naming the limit (default 65536)."},
    {"--max-concurrent-streams N",
     "Concurrent calls (HTTP/2 streams) per client connection, announced in SETTINGS "
     "(default 100000)."},
    {"--max-connections-per-worker N",
     "Client connections one worker thread accepts; more are refused with a GOAWAY naming the "
     "limit (default 0: no limit)."},
    {"--access-policy FILE",
     "YAML file mapping client certificate identities (subject CN, DNS or URI SANs, exact or "
     "glob) to the key prefixes and verbs they may use; reloaded with the rest of the "
     "configuration (unset: every client may do everything, etcd's own auth still applies)."},
    {"--map-identity-to-etcd-user BOOL",
     "Authenticate upstream as the etcd user the access policy names for the caller, so etcd's "
     "RBAC sees the real client (needs --access-policy; default false)."},
    {"--encryption-provider-config FILE",
     "The kube-apiserver EncryptionConfiguration naming the prefixes to encrypt (unset: "
     "nothing is encrypted)."},
    {"--encryption-provider-config-automatic-reload BOOL",
     "Reload the EncryptionConfiguration when the file changes, as kube-apiserver's flag of "
     "that name (default false; SIGHUP always reloads)."},
    {"--allow-insecure-key-file BOOL",
     "Accept an EncryptionConfiguration holding keys that group or others can read (default "
     "false; logged)."},
    {"--storage-prefix PREFIX",
     "etcd key prefix of the Kubernetes resources named in the EncryptionConfiguration, "
     "kube-apiserver's --etcd-prefix (default /registry)."},
    {"--log-level LEVEL", "debug, info (the default), warn or error."},
    {NULL, NULL},
};

static const char *const check_config_paras[] = {
    "Validates a kube-apiserver EncryptionConfiguration the way kube-apiserver 1.31 does, "
    "builds its provider chains, and prints each rule with the etcd key prefixes it covers and "
    "its providers (the first writes, all read in order). Key bytes are never printed. Run it "
    "before giving a new file to the proxy or sending SIGHUP.",
    NULL,
};

static const struct help_opt check_config_opts[] = {
    {"--encryption-provider-config FILE", "The configuration to check."},
    {"--storage-prefix PREFIX", "kube-apiserver's --etcd-prefix (default /registry)."},
    {"--parse-only",
     "Validate only; do not build the provider chains (accepts KMS providers this build "
     "cannot load)."},
    {"--quiet", "Print errors and warnings only."},
    {NULL, NULL},
};

static const char *const keygen_paras[] = {
    "Prints a new random key from libsodium's generator as standard base64 (with padding), for "
    "the secret: field of a key in an EncryptionConfiguration. The same as "
    "`head -c 32 /dev/urandom | base64`.",
    NULL,
};

static const struct help_opt keygen_opts[] = {
    {"--provider PROVIDER", "aesgcm (the default), aescbc or secretbox."},
    {"--bytes N", "Key length: 16, 24 or 32 for aesgcm and aescbc, 32 for secretbox (default 32)."},
    {NULL, NULL},
};

static const char *const encrypt_paras[] = {
    "Reads a plaintext value on standard input and writes the value etcdseal would store in "
    "etcd for ETCD_KEY to standard output (k8s:enc:<provider>:v1:<key>:...): the first provider "
    "and first key of the rule that covers the key. The key is authenticated data: the result "
    "only decrypts under the same key.",
    NULL,
};

static const struct help_opt encrypt_opts[] = {
    {"--encryption-provider-config FILE", "The kube-apiserver EncryptionConfiguration."},
    {"--key ETCD_KEY", "Full etcd key, such as /registry/secrets/default/db; selects the rule."},
    {"--storage-prefix PREFIX", "kube-apiserver's --etcd-prefix (default /registry)."},
    {"--base64", "Standard input and output are standard base64 text."},
    {"--allow-plaintext",
     "When no rule covers the key, write the value unchanged instead of failing."},
    {NULL, NULL},
};

static const char *const decrypt_paras[] = {
    "Reads a value as stored in etcd on standard input and writes its plaintext to standard "
    "output. On standard error it prints `stale=<true|false> provider=<prefix>`: stale means "
    "the value was written by another provider or key than the one that writes now, which "
    "`etcdseal rewrap` refreshes.",
    "\tETCDCTL_API=3 etcdctl get /registry/secrets/default/db --print-value-only |\n"
    "    etcdseal decrypt --encryption-provider-config /etc/etcdseal/encryption.yaml \\\n"
    "        --key /registry/secrets/default/db",
    NULL,
};

static const struct help_opt decrypt_opts[] = {
    {"--encryption-provider-config FILE", "The kube-apiserver EncryptionConfiguration."},
    {"--key ETCD_KEY",
     "Full etcd key the value was stored under; selects the rule and is the authenticated "
     "data."},
    {"--storage-prefix PREFIX", "kube-apiserver's --etcd-prefix (default /registry)."},
    {"--base64", "Standard input and output are standard base64 text."},
    {NULL, NULL},
};

static const char *const kms_plugin_paras[] = {
    "A KMS v2 plugin: a gRPC server on a unix socket that serves v2.KeyManagementService "
    "(Status, Encrypt, Decrypt) as kube-apiserver expects it, for etcdseal's kms providers and "
    "for kube-apiserver itself. Its key-encryption key is an AES key inside a PKCS#11 token "
    "(wrapping runs in the token; the key never leaves it) or, for development only, a 32-byte "
    "key file. It wraps one small seed per key rotation, so it is called rarely: once per "
    "Status poll, once per new seed, once per seed on a reader's cache miss.",
    "Rotating the key-encryption key: create the new key (--generate-key with a new "
    "--key-label), restart the plugin with --key-label set to it and keep the old key in the "
    "token. The next Status poll shows the new key_id; values under the old one read as stale "
    "until `etcdseal rewrap` has rewritten them. Delete the old key only after `etcdseal "
    "verify` shows no stale values.",
    "Signals: SIGTERM and SIGINT stop cleanly (calls in flight finish, at most 3 s); SIGUSR1 "
    "logs the call counts (also logged at exit).",
    NULL,
};

static const struct help_opt kms_plugin_opts[] = {
    {"--listen ADDR",
     "unix:///path/to/socket or unix:///@name (abstract socket), the forms kube-apiserver's "
     "endpoint: takes. A stale socket file is replaced; the socket is removed at exit."},
    {"--backend pkcs11|file", "Where the key-encryption key lives."},
    {"--log-level LEVEL", "debug, info (the default), warn or error."},
    {"--pkcs11-module PATH",
     "pkcs11: the token's PKCS#11 library (default /usr/lib/softhsm/libsofthsm2.so)."},
    {"--token-label LABEL", "pkcs11: the token, by label (preferred)."},
    {"--slot N", "pkcs11: the token, by slot number."},
    {"--pin-file FILE", "pkcs11: the user PIN, one line; refused unless mode 0600 or 0400."},
    {"--key-label LABEL", "pkcs11: CKA_LABEL of the current AES key, which wraps new seeds."},
    {"--decrypt-key-label LABEL",
     "pkcs11: an older key to load at start for Decrypt (repeatable; older keys are also found "
     "by the label recorded in their key_id)."},
    {"--generate-key",
     "pkcs11: create an AES-256 key labelled --key-label in the token (not extractable), print "
     "its key_id and exit."},
    {"--key-file FILE",
     "file: 32 raw bytes or their base64 (such as `etcdseal keygen` output); refused unless "
     "mode 0600 or 0400."},
    {"--key-id ID", "file: the key_id to report (default file:sha256:<hash of the key>)."},
    {"--old-key-file FILE", "file: an older key kept for Decrypt (repeatable)."},
    {NULL, NULL},
};

static const char *const verify_paras[] = {
    "Proves what is stored. Talks to etcd directly (not through the proxy), walks every key "
    "range the EncryptionConfiguration protects with paginated Range calls pinned to one "
    "revision (bounded memory: one page of --limit keys), and prints per rule and key prefix "
    "how many values are empty, plaintext, current, stale (readable, but not by the first "
    "provider and key) or undecryptable, and which provider and key reads them. With -o json "
    "the same for machines.",
    "With --snapshot FILE it verifies an etcd snapshot instead (a backup made with `etcdctl "
    "snapshot save`): the snapshot is restored with etcdctl into a temporary directory, served "
    "by a temporary etcd on loopback ports, scanned the same way, then stopped and removed.",
    "Stale values are not an error (exit 0) but `etcdseal rewrap` should refresh them before "
    "an old key is removed.",
    NULL,
};

#define HELP_OPS_COMMON_OPTS                                                                       \
    {"--encryption-provider-config FILE",                                                          \
     "The EncryptionConfiguration in force: its rules name the protected prefixes, its first "     \
     "providers are the current writers, all listed providers read."},                             \
        {"--storage-prefix PREFIX", "kube-apiserver's --etcd-prefix (default /registry)."},        \
        {"--endpoints LIST",                                                                       \
         "etcd client URLs, comma separated (host:port, http://host:port, https://host:port)."},   \
        {"--cacert FILE", "Verify etcd's certificate with this CA bundle."},                       \
        {"--cert FILE", "Client certificate presented to etcd (mTLS)."},                           \
        {"--key FILE", "Private key of --cert."},                                                  \
        {"--insecure-skip-tls-verify", "Do not verify etcd's certificate (testing only)."},        \
        {"--prefix PREFIX", "Only keys starting with PREFIX (within the protected prefixes)."},    \
        {"--limit N", "Keys per Range page (default 500): memory stays bounded by one page."},     \
    {                                                                                              \
        "--timeout SECS", "Timeout of each request to etcd (default 30)."                          \
    }

static const struct help_opt verify_opts[] = {
    HELP_OPS_COMMON_OPTS,
    {"-o, --output FORMAT", "table (the default) or json."},
    {"--snapshot FILE",
     "Verify this etcd snapshot file instead of a live cluster (excludes --endpoints)."},
    {"--etcd-binary PATH", "etcd used for --snapshot (default: etcd from PATH)."},
    {"--etcdctl-binary PATH", "etcdctl used for --snapshot (default: etcdctl from PATH)."},
    {NULL, NULL},
};

static const char *const rewrap_paras[] = {
    "Re-encrypts, with the first provider and key of its rule, every value under a protected "
    "prefix that is plaintext or stale: the step that completes turning encryption on and every "
    "key rotation. It reads etcd directly in pages of --limit keys and rewrites each value in "
    "one Txn guarded by the value's mod_revision (the key's lease is kept), so a concurrent "
    "client write or delete always wins (counted as skipped: it went through the proxy, so it "
    "is current already) and no update is lost. Run it after the proxy has loaded the same "
    "EncryptionConfiguration.",
    "Progress goes to standard error (a redrawn line with keys done and total, rate and time "
    "left on a terminal; a plain line every 5 s otherwise), the summary to standard output. "
    "A run that stops early prints the key to resume from with --from-key.",
    "Rotating a local key, end to end: add the new key first in its provider's keys: list, "
    "reload the proxy (SIGHUP), `etcdseal rewrap`, `etcdseal verify` (0 stale), remove the old "
    "key, reload again.",
    NULL,
};

static const struct help_opt rewrap_opts[] = {
    HELP_OPS_COMMON_OPTS,
    {"--from-key KEY", "Only keys >= KEY: resume a run that stopped (it prints this key)."},
    {"--qps N", "At most N rewrite transactions per second (default 0: unlimited)."},
    {"--dry-run", "Count what would be rewritten; write nothing."},
    {NULL, NULL},
};

static const char *const version_paras[] = {
    "Prints `etcdseal VERSION`. `etcdseal --version` is the same.",
    NULL,
};

static const char *const help_paras[] = {
    "Prints the section of this manual for TOPIC as plain text: a command (proxy, "
    "check-config, ...) or one of overview, configuration, signals, files, examples. Without "
    "TOPIC it lists the commands.",
    NULL,
};

static const struct help_opt help_opts[] = {
    {"--roff", "Print the whole manual as a man page (roff), as installed as etcdseal(1)."},
    {NULL, NULL},
};

static const char *const configuration_paras[] = {
    "The proxy reads its settings from flags and from the YAML file given by --config (see "
    "proxy). Which keys it encrypts is a kube-apiserver EncryptionConfiguration "
    "(apiVersion apiserver.config.k8s.io/v1, kind EncryptionConfiguration), accepted unchanged. "
    "etcdseal adds: resources that start with \"/\" (literal etcd key prefixes), the resource "
    "\"*\" (every key no other rule covers; it must be the last rule), and endpoints: on a kms "
    "provider (more plugin sockets, tried in order after endpoint:). kube-apiserver does not "
    "accept these three.",
    "Keys: files holding keys (an EncryptionConfiguration with secret: values, a kms-plugin "
    "--key-file or --pin-file) must be readable by their owner only: chmod 0600. New keys come "
    "from `etcdseal keygen` or `head -c 32 /dev/urandom | base64`. The example files ship with "
    "keys everyone knows; replace every one of them.",
    "Turning encryption on for a store that already holds data: list the new provider first "
    "and identity last (identity reads the old plaintext values), load it, run `etcdseal "
    "rewrap`, check with `etcdseal verify`, then remove identity and reload; from then on a "
    "plaintext value under a protected prefix fails to read.",
    NULL,
};

static const char *const signals_paras[] = {
    "etcdseal proxy: SIGHUP reloads the EncryptionConfiguration and the TLS certificates "
    "(systemctl reload etcdseal); SIGTERM and SIGINT stop accepting, send GOAWAY to clients, "
    "wait up to --shutdown-timeout for open calls and exit 0.",
    "etcdseal kms-plugin: SIGTERM and SIGINT stop cleanly; SIGUSR1 logs the call counts.",
    "Core dumps are disabled at start by every command (they could hold key material).",
    NULL,
};

static const char *const files_paras[] = {
    "\t/etc/etcdseal/etcdseal.yaml           proxy settings (--config)\n"
    "/etc/etcdseal/encryption-config.yaml  EncryptionConfiguration, mode 0600\n"
    "/etc/etcdseal/tls/                    certificates and keys, keys mode 0600\n"
    "/etc/systemd/system/etcdseal.service  systemd unit (conf/etcdseal.service)",
    "Commented examples ship in conf/examples/ of the source tree: an application prefix "
    "with secretbox, kube-apiserver's etcd with KMS v2, and an mTLS gateway.",
    NULL,
};

static const char *const examples_paras[] = {
    "A key, a configuration check, and the proxy in front of a local etcd:",
    "\tetcdseal keygen --provider secretbox\n"
    "etcdseal check-config --encryption-provider-config /etc/etcdseal/encryption-config.yaml\n"
    "etcdseal proxy --config /etc/etcdseal/etcdseal.yaml\n"
    "ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:23790 put /app/secrets/db s3cret",
    "Prove that nothing under a protected prefix is plaintext, on the live cluster and in a "
    "backup:",
    "\tetcdseal verify --endpoints 10.0.0.5:2379 \\\n"
    "    --encryption-provider-config /etc/etcdseal/encryption-config.yaml\n"
    "etcdseal verify --snapshot backup.db \\\n"
    "    --encryption-provider-config /etc/etcdseal/encryption-config.yaml -o json",
    NULL,
};

static const char *const see_also_paras[] = {
    "etcd(1), etcdctl(1), systemd.exec(5); kube-apiserver's documentation on encrypting "
    "data at rest and on KMS v2.",
    NULL,
};

static const struct help_topic topics[] = {
    {"overview", "DESCRIPTION", "transparent encrypting proxy for etcd v3", NULL, overview_paras,
     NULL, NULL},
    {"proxy", NULL, "run the transparent etcd proxy", "etcdseal proxy [--config FILE] [flags]",
     proxy_paras, proxy_opts,
     "0 after SIGTERM or SIGINT; 1 when the configuration, the listener, TLS or the "
     "EncryptionConfiguration cannot be set up at start (the reason is on standard error); 2 "
     "for bad flags or settings."},
    {"check-config", NULL, "validate an EncryptionConfiguration, show its rules",
     "etcdseal check-config --encryption-provider-config FILE\n"
     "    [--storage-prefix PREFIX] [--parse-only] [--quiet]",
     check_config_paras, check_config_opts,
     "0 valid; 1 invalid (or not loadable by this build); 2 usage error."},
    {"keygen", NULL, "print a new random base64 key for aesgcm, aescbc or secretbox",
     "etcdseal keygen [--provider aesgcm|aescbc|secretbox] [--bytes N]", keygen_paras, keygen_opts,
     "0 ok; 1 error; 2 usage error."},
    {"encrypt", NULL, "encrypt one etcd value as the proxy would",
     "etcdseal encrypt --encryption-provider-config FILE --key ETCD_KEY\n"
     "    [--storage-prefix PREFIX] [--base64] [--allow-plaintext]",
     encrypt_paras, encrypt_opts, "0 ok; 1 error; 2 usage error; 3 no rule covers the key."},
    {"decrypt", NULL, "decrypt one stored etcd value",
     "etcdseal decrypt --encryption-provider-config FILE --key ETCD_KEY\n"
     "    [--storage-prefix PREFIX] [--base64]",
     decrypt_paras, decrypt_opts,
     "0 ok; 1 error (including a value no provider decrypts); 2 "
     "usage error."},
    {"kms-plugin", NULL, "run the bundled KMS v2 plugin (PKCS#11 or file key)",
     "etcdseal kms-plugin --listen ADDR --backend pkcs11 --token-label LABEL\n"
     "    --pin-file FILE --key-label LABEL [--decrypt-key-label LABEL]...\n"
     "    [--generate-key]\n"
     "etcdseal kms-plugin --listen ADDR --backend file --key-file FILE\n"
     "    [--old-key-file FILE]...",
     kms_plugin_paras, kms_plugin_opts,
     "0 after SIGTERM or SIGINT (or after --generate-key); 1 when the backend or the socket "
     "cannot be set up (the reason is on standard error); 2 for bad flags."},
    {"verify", NULL, "report plaintext, stale and undecryptable values in etcd or a snapshot",
     "etcdseal verify --encryption-provider-config FILE --endpoints LIST [TLS flags]\n"
     "    [--storage-prefix PREFIX] [--prefix PREFIX] [--limit N] [-o table|json]\n"
     "etcdseal verify --encryption-provider-config FILE --snapshot FILE [-o table|json]",
     verify_paras, verify_opts,
     "0 when every value under a protected prefix is encrypted and decryptable; 1 when any "
     "plaintext or undecryptable value sits under a protected prefix; 2 usage error; 3 the scan "
     "could not complete (connection, etcd error, snapshot restore)."},
    {"rewrap", NULL, "re-encrypt plaintext and stale values with the current key",
     "etcdseal rewrap --encryption-provider-config FILE --endpoints LIST [TLS flags]\n"
     "    [--prefix PREFIX] [--from-key KEY] [--qps N] [--limit N] [--dry-run]",
     rewrap_paras, rewrap_opts,
     "0 done (every plaintext and stale value rewritten, or counted with --dry-run); 1 some "
     "values could not be rewritten (listed on standard error); 2 usage error; 3 stopped before "
     "the end (interrupted, connection or etcd error; the resume key is printed)."},
    {"version", NULL, "print the version", "etcdseal version", version_paras, NULL, "0."},
    {"help", NULL, "print this manual, or one section of it",
     "etcdseal help [TOPIC]\n"
     "etcdseal help --roff",
     help_paras, help_opts, "0 ok; 2 unknown topic."},
    {"configuration", "CONFIGURATION", "configuration files and keys", NULL, configuration_paras,
     NULL, NULL},
    {"signals", "SIGNALS", "signals the long-running commands act on", NULL, signals_paras, NULL,
     NULL},
    {"files", "FILES", "where etcdseal looks for its files", NULL, files_paras, NULL, NULL},
    {"examples", "EXAMPLES", "examples", NULL, examples_paras, NULL, NULL},
    {"see-also", "SEE ALSO", "related manuals", NULL, see_also_paras, NULL, NULL},
};

#define N_TOPICS (sizeof topics / sizeof topics[0])

/* ------------------------------------------------------------------ plain text */

/* Prints text wrapped at HELP_WIDTH, every line indented by `indent`; words longer than the
 * line stand alone. */
static void text_wrapped(FILE *f, const char *text, int indent)
{
    int col = 0;
    const char *p = text;
    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        size_t len = strcspn(p, " ");
        if (col > 0 && col + 1 + (int)len > HELP_WIDTH) {
            fputc('\n', f);
            col = 0;
        }
        if (col == 0) {
            fprintf(f, "%*s", indent, "");
            col = indent;
        } else {
            fputc(' ', f);
            col++;
        }
        fwrite(p, 1, len, f);
        col += (int)len;
        p += len;
    }
    if (col > 0)
        fputc('\n', f);
}

/* Prints verbatim lines ('\n' separated), each indented by `indent`. */
static void text_verbatim(FILE *f, const char *text, int indent)
{
    while (*text) {
        size_t len = strcspn(text, "\n");
        fprintf(f, "%*s%.*s\n", indent, "", (int)len, text);
        text += len;
        if (*text == '\n')
            text++;
    }
}

static void text_paras(FILE *f, const char *const *paras)
{
    for (size_t i = 0; paras[i]; i++) {
        if (i > 0)
            fputc('\n', f);
        if (paras[i][0] == '\t')
            text_verbatim(f, paras[i] + 1, HELP_INDENT + 4);
        else
            text_wrapped(f, paras[i], HELP_INDENT);
    }
}

static void text_topic(FILE *f, const struct help_topic *t)
{
    if (t->heading) {
        fprintf(f, "%s\n", t->heading);
        text_paras(f, t->paras);
        return;
    }
    fprintf(f, "etcdseal %s - %s\n\nSYNOPSIS\n", t->name, t->summary);
    text_verbatim(f, t->synopsis, HELP_INDENT);
    fprintf(f, "\nDESCRIPTION\n");
    text_paras(f, t->paras);
    if (t->opts) {
        fprintf(f, "\nOPTIONS\n");
        for (const struct help_opt *o = t->opts; o->tag; o++) {
            fprintf(f, "%*s%s\n", HELP_INDENT, "", o->tag);
            text_wrapped(f, o->text, HELP_OPT_TEXT);
        }
    }
    fprintf(f, "\nEXIT STATUS\n");
    text_wrapped(f, t->exit_status, HELP_INDENT);
}

/* ------------------------------------------------------------------ roff */

/* Writes text escaped for roff: backslashes, every '-' as a minus (copy-pastable flags), and a
 * control character ('.' or '\'') at the start of an output line made literal. */
static void roff_escaped(FILE *f, const char *text, size_t len)
{
    bool line_start = true;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (line_start && (c == '.' || c == '\''))
            fputs("\\&", f);
        if (c == '\\')
            fputs("\\e", f);
        else if (c == '-')
            fputs("\\-", f);
        else
            fputc(c, f);
        line_start = c == '\n';
    }
}

static void roff_line(FILE *f, const char *text)
{
    roff_escaped(f, text, strlen(text));
    fputc('\n', f);
}

static void roff_paras(FILE *f, const char *const *paras)
{
    for (size_t i = 0; paras[i]; i++) {
        if (paras[i][0] == '\t') {
            fputs(".PP\n.RS 4\n.nf\n", f);
            roff_line(f, paras[i] + 1);
            fputs(".fi\n.RE\n", f);
        } else {
            fputs(".PP\n", f);
            roff_line(f, paras[i]);
        }
    }
}

/* An option tag: words starting with '-' in bold, "|" plain, other words in italics. */
static void roff_tag(FILE *f, const char *tag)
{
    const char *p = tag;
    bool first = true;
    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        size_t len = strcspn(p, " ");
        if (!first)
            fputc(' ', f);
        first = false;
        if (len == 1 && *p == '|') {
            fputc('|', f);
        } else {
            fputs(p[0] == '-' ? "\\fB" : "\\fI", f);
            roff_escaped(f, p, len);
            fputs("\\fR", f);
        }
        p += len;
    }
    fputc('\n', f);
}

static void roff_command(FILE *f, const struct help_topic *t)
{
    fprintf(f, ".SS \"etcdseal %s\"\n", t->name);
    roff_line(f, t->summary);
    fputs(".PP\n.nf\n", f);
    roff_line(f, t->synopsis);
    fputs(".fi\n", f);
    roff_paras(f, t->paras);
    if (t->opts) {
        fputs(".PP\nOptions:\n", f);
        for (const struct help_opt *o = t->opts; o->tag; o++) {
            fputs(".TP\n", f);
            roff_tag(f, o->tag);
            roff_line(f, o->text);
        }
    }
    fputs(".PP\nExit status: ", f);
    roff_line(f, t->exit_status);
}

static const struct help_topic *find_heading(const char *heading)
{
    for (size_t i = 0; i < N_TOPICS; i++)
        if (topics[i].heading && strcmp(topics[i].heading, heading) == 0)
            return &topics[i];
    return NULL;
}

static void roff_section(FILE *f, const char *heading)
{
    const struct help_topic *t = find_heading(heading);
    if (!t)
        return;
    fprintf(f, ".SH \"%s\"\n", heading);
    roff_paras(f, t->paras);
}

static void roff_manual(FILE *f)
{
    fputs(".\\\" etcdseal.1 - generated by `etcdseal help --roff` from src/cmd/help.c; edit "
          "that file, not this one.\n",
          f);
    fprintf(f, ".TH ETCDSEAL 1 \"%s\" \"etcdseal %s\" \"User Commands\"\n", HELP_MAN_DATE,
            ETCDSEAL_VERSION);
    fputs(".nh\n.ad l\n", f); /* no hyphenation: flags and key names stay whole */
    fputs(".SH NAME\netcdseal \\- transparent encrypting proxy for etcd v3\n.SH SYNOPSIS\n.nf\n",
          f);
    for (size_t i = 0; i < N_TOPICS; i++)
        if (!topics[i].heading)
            roff_line(f, topics[i].synopsis);
    fputs(".fi\n", f);
    roff_section(f, "DESCRIPTION");
    fputs(".SH COMMANDS\n", f);
    for (size_t i = 0; i < N_TOPICS; i++)
        if (!topics[i].heading)
            roff_command(f, &topics[i]);
    static const char *const rest[] = {"CONFIGURATION", "SIGNALS", "FILES", "EXAMPLES", "SEE ALSO"};
    for (size_t i = 0; i < sizeof rest / sizeof rest[0]; i++)
        roff_section(f, rest[i]);
}

/* ------------------------------------------------------------------ command */

static void list_topics(FILE *f)
{
    fprintf(f, "usage: etcdseal help [TOPIC] | etcdseal help --roff\n\n"
               "Prints one section of the manual as plain text.\n\n"
               "  --roff  print the whole manual as a man page (man/etcdseal.1)\n\ncommands:\n");
    for (size_t i = 0; i < N_TOPICS; i++)
        if (!topics[i].heading)
            fprintf(f, "  %-14s %s\n", topics[i].name, topics[i].summary);
    fprintf(f, "\nother topics:\n");
    for (size_t i = 0; i < N_TOPICS; i++)
        if (topics[i].heading)
            fprintf(f, "  %-14s %s\n", topics[i].name, topics[i].summary);
}

int cmd_help(int argc, char **argv)
{
    if (argc < 2) {
        list_topics(stdout);
        return 0;
    }
    if (argc > 2) {
        list_topics(stderr);
        return 2;
    }
    const char *arg = argv[1];
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
        list_topics(stdout);
        return 0;
    }
    if (strcmp(arg, "--roff") == 0) {
        roff_manual(stdout);
        return 0;
    }
    for (size_t i = 0; i < N_TOPICS; i++)
        if (strcmp(arg, topics[i].name) == 0) {
            text_topic(stdout, &topics[i]);
            return 0;
        }
    fprintf(stderr, "etcdseal help: no topic \"%s\"\n\n", arg);
    list_topics(stderr);
    return 2;
}
