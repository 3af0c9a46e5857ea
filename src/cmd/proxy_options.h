/* proxy_options.h - the `etcdseal proxy` settings: flags, the YAML file given by --config, --help.
 *
 * One table in proxy_options.c drives flags, YAML keys (= flag names) and --help. Precedence:
 * built-in defaults < YAML file < command-line flags. argv[0] is the subcommand name ("proxy").
 * After a successful parse every char * is non-NULL ("" = unset), lists hold >= 0 strings,
 * `workers` is resolved to 1..64 and all values are validated. Durations are in seconds.
 * On return 1 (help) or -1 (error) nothing is left to free; proxy_options_free() is idempotent
 * and accepts a zeroed struct. The struct owns every string it points to.
 * proxy_addr_split() takes "host:port", "[v6]:port", optionally after "http://" or "https://"
 * (one trailing "/" allowed); host is written without brackets; port must be 1..65535.
 * Not thread-safe (call from main before starting workers).
 */
#ifndef ETCDSEAL_CMD_PROXY_OPTIONS_H
#define ETCDSEAL_CMD_PROXY_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/error.h"

typedef struct proxy_options {
    char *config_file;          /* --config */
    char *listen_addr;          /* --listen-addr, default "127.0.0.1:23790" */
    char *cert_file, *key_file; /* --cert-file, --key-file: TLS listener */
    char *trusted_ca_file;      /* --trusted-ca-file */
    bool client_cert_auth;      /* --client-cert-auth */
    char *client_crl_file;      /* --client-crl-file */
    bool insecure_listen;       /* --insecure-listen: cleartext on a non-loopback address */
    char **endpoints;           /* --endpoints a,b,c; default "127.0.0.1:2379" */
    size_t n_endpoints;
    char *cacert, *cert, *key;     /* --cacert, --cert, --key: upstream TLS */
    bool insecure_skip_tls_verify; /* --insecure-skip-tls-verify */
    char **advertise_client_urls;  /* --advertise-client-url, repeatable, comma lists */
    size_t n_advertise_client_urls;
    char *metrics_addr;               /* --metrics-addr, "" = off */
    int workers;                      /* --workers, 0 on input = half the online CPUs */
    double shutdown_timeout;          /* --shutdown-timeout, default 10s */
    double dial_timeout;              /* --dial-timeout, default 5s */
    double keepalive_time;            /* --upstream-keepalive-time, default 10s */
    double keepalive_timeout;         /* --upstream-keepalive-timeout, default 5s */
    size_t max_message_bytes;         /* --max-message-bytes, default 2 GiB - 1 */
    size_t max_header_list_bytes;     /* --max-header-list-bytes, default 64 KiB */
    int max_concurrent_streams;       /* --max-concurrent-streams per client connection */
    int max_connections_per_worker;   /* --max-connections-per-worker, 0 = no limit */
    char *access_policy;              /* --access-policy: YAML identity -> prefixes/verbs */
    bool map_identity_to_etcd_user;   /* --map-identity-to-etcd-user */
    char *encryption_provider_config; /* --encryption-provider-config */
    bool encryption_provider_config_automatic_reload; /* reload when the file changes */
    bool allow_insecure_key_file; /* accept key files readable by group/others */
    char *storage_prefix;             /* --storage-prefix, default "/registry" */
    char *log_level;                  /* --log-level debug|info|warn|error, default info */
} proxy_options;

#define PROXY_WORKERS_MAX 64
#define PROXY_MAX_MESSAGE_BYTES_MAX ((size_t)2147483647)

/* 0 = ok, 1 = --help was printed to help_out (caller exits 0), -1 = error (err names the
 * flag / setting / file:line). */
int proxy_options_parse(proxy_options *o, int argc, char **argv, FILE *help_out, es_error *err);
void proxy_options_free(proxy_options *o);

/* The --help text (plain) or the same table as Markdown rows (the README's flag table). */
void proxy_options_print_help(FILE *out, bool markdown);

int proxy_addr_split(const char *addr, char *host, size_t hostlen, uint16_t *port, es_error *err);
/* 1 if the address starts with "https://", else 0. */
int proxy_addr_is_https(const char *addr);
/* 1 if host (no brackets) is "localhost", 127.0.0.0/8, ::1 or ::ffff:127.x.y.z, else 0. */
int proxy_host_is_loopback(const char *host);

#endif
