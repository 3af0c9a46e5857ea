/* proxy_options.c - `etcdseal proxy` settings from flags and a YAML file (see proxy_options.h).
 *
 * Everything about an option lives in one row of `options[]`: its name (flag and YAML key), its
 * type, where it is stored, its default (as text, parsed like user input so --help never lies)
 * and its help text. Parsing runs in this order:
 *   1. defaults from the table;
 *   2. a scan of argv for --help / -h, then for --config (every flag is tokenised here, so an
 *      unknown flag is reported before the file is read);
 *   3. the YAML file (libyaml document API: a flat mapping, errors name file and line);
 *   4. the flags, which override the file (the first occurrence of a list flag replaces the
 *      file's list, later ones append);
 *   5. cross-field validation, then `workers` 0 is resolved to half the online CPUs (>= 1).
 * Flag names follow `etcd grpc-proxy start` where the meaning is the same.
 */
#include "cmd/proxy_options.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <yaml.h>

#include "base/duration.h"
#include "base/log.h"

#define OPT_EINVAL 22        /* es_error code for every settings error */
#define OPT_LIST_MAX 256     /* items per list option */
#define MAX_MESSAGE_MIN 1024 /* --max-message-bytes lower bound */

enum opt_type { OPT_STRING, OPT_BOOL, OPT_LIST, OPT_INT, OPT_DURATION, OPT_SIZE };

struct opt_def {
    const char *name; /* flag name without "--"; also the YAML key */
    enum opt_type type;
    size_t off;       /* field in proxy_options */
    size_t count_off; /* OPT_LIST: the size_t count field */
    const char *def;  /* default, as text */
    const char *help;
};

#define FIELD(f) offsetof(proxy_options, f)

static const struct opt_def options[] = {
    {"config", OPT_STRING, FIELD(config_file), 0, "",
     "YAML file of settings: a flat mapping of flag names to values; flags override it"},
    {"listen-addr", OPT_STRING, FIELD(listen_addr), 0, "127.0.0.1:23790",
     "address clients connect to (host:port or [v6]:port)"},
    {"cert-file", OPT_STRING, FIELD(cert_file), 0, "",
     "identify the proxy to clients with this TLS certificate file (turns on TLS)"},
    {"key-file", OPT_STRING, FIELD(key_file), 0, "", "TLS key file for --cert-file"},
    {"trusted-ca-file", OPT_STRING, FIELD(trusted_ca_file), 0, "",
     "verify client certificates against this CA bundle"},
    {"client-cert-auth", OPT_BOOL, FIELD(client_cert_auth), 0, "false",
     "require a client certificate signed by --trusted-ca-file"},
    {"client-crl-file", OPT_STRING, FIELD(client_crl_file), 0, "",
     "refuse client certificates revoked by the CRLs in this PEM file (needs --trusted-ca-file)"},
    {"insecure-listen", OPT_BOOL, FIELD(insecure_listen), 0, "false",
     "allow cleartext HTTP/2 on a non-loopback --listen-addr"},
    {"endpoints", OPT_LIST, FIELD(endpoints), FIELD(n_endpoints), "127.0.0.1:2379",
     "comma separated etcd endpoints (host:port, http://host:port, https://host:port)"},
    {"cacert", OPT_STRING, FIELD(cacert), 0, "",
     "verify etcd servers' TLS certificates with this CA bundle"},
    {"cert", OPT_STRING, FIELD(cert), 0, "",
     "identify the proxy to etcd with this TLS client certificate file"},
    {"key", OPT_STRING, FIELD(key), 0, "", "TLS key file for --cert"},
    {"insecure-skip-tls-verify", OPT_BOOL, FIELD(insecure_skip_tls_verify), 0, "false",
     "do not verify etcd servers' TLS certificates (testing only)"},
    {"advertise-client-url", OPT_LIST, FIELD(advertise_client_urls), FIELD(n_advertise_client_urls),
     "",
     "URL that clients reach the proxy at, returned in MemberList answers; repeatable, comma "
     "lists (empty = MemberList answers pass unchanged)"},
    {"metrics-addr", OPT_STRING, FIELD(metrics_addr), 0, "",
     "serve /metrics, /healthz and /readyz on this host:port or http://host:port (empty = off)"},
    {"workers", OPT_INT, FIELD(workers), 0, "0",
     "worker threads, 1..64 (0 = half the online CPUs, at least 1)"},
    {"shutdown-timeout", OPT_DURATION, FIELD(shutdown_timeout), 0, "10s",
     "on SIGINT/SIGTERM, wait this long for open streams to finish"},
    {"dial-timeout", OPT_DURATION, FIELD(dial_timeout), 0, "5s",
     "timeout for connecting to an etcd endpoint, TLS handshake included"},
    {"upstream-keepalive-time", OPT_DURATION, FIELD(keepalive_time), 0, "10s",
     "send a PING on an upstream connection idle this long"},
    {"upstream-keepalive-timeout", OPT_DURATION, FIELD(keepalive_timeout), 0, "5s",
     "close an upstream connection whose PING is not acknowledged within this"},
    {"max-message-bytes", OPT_SIZE, FIELD(max_message_bytes), 0, "2147483647",
     "largest gRPC message reassembled in either direction (bytes, or e.g. 64MiB)"},
    {"max-header-list-bytes", OPT_SIZE, FIELD(max_header_list_bytes), 0, "65536",
     "largest request header block a client may send (bytes, or e.g. 64KiB)"},
    {"max-concurrent-streams", OPT_INT, FIELD(max_concurrent_streams), 0, "100000",
     "concurrent calls (HTTP/2 streams) per client connection, 1..2147483647"},
    {"max-connections-per-worker", OPT_INT, FIELD(max_connections_per_worker), 0, "0",
     "client connections one worker thread accepts (0 = no limit)"},
    {"access-policy", OPT_STRING, FIELD(access_policy), 0, "",
     "YAML file mapping client certificate identities to allowed key prefixes and verbs "
     "(empty = every client may do everything)"},
    {"map-identity-to-etcd-user", OPT_BOOL, FIELD(map_identity_to_etcd_user), 0, "false",
     "authenticate upstream as the etcd user the access policy maps the client identity to"},
    {"encryption-provider-config", OPT_STRING, FIELD(encryption_provider_config), 0, "",
     "kube-apiserver EncryptionConfiguration file naming the prefixes to encrypt (empty = "
     "encrypt nothing)"},
    {"encryption-provider-config-automatic-reload", OPT_BOOL,
     FIELD(encryption_provider_config_automatic_reload), 0, "false",
     "reload the EncryptionConfiguration when the file changes (SIGHUP always reloads it)"},
    {"allow-insecure-key-file", OPT_BOOL, FIELD(allow_insecure_key_file), 0, "false",
     "accept an EncryptionConfiguration holding keys that group or others can read (logged)"},
    {"storage-prefix", OPT_STRING, FIELD(storage_prefix), 0, "/registry",
     "etcd key prefix of Kubernetes resources named in the EncryptionConfiguration"},
    {"log-level", OPT_STRING, FIELD(log_level), 0, "info", "debug, info, warn or error"},
};

#define N_OPTIONS (sizeof options / sizeof options[0])

static const char *const type_names[] = {"string", "bool", "strings", "int", "duration", "size"};
static const char *const type_phrases[] = {"a string",   "true or false", "a list of strings",
                                           "an integer", "a duration",    "a size"};

/* ------------------------------------------------------------------ values */

static void *field_ptr(proxy_options *o, const struct opt_def *d)
{
    return (char *)o + d->off;
}

static void list_clear(char ***items, size_t *n)
{
    for (size_t i = 0; i < *n; i++)
        free((*items)[i]);
    free(*items);
    *items = NULL;
    *n = 0;
}

static int list_append(char ***items, size_t *n, const char *s, size_t len, es_error *err)
{
    if (*n >= OPT_LIST_MAX)
        return es_error_set(err, OPT_EINVAL, "more than %d items", OPT_LIST_MAX);
    char *copy = strndup(s, len);
    char **grown = copy ? realloc(*items, (*n + 1) * sizeof *grown) : NULL;
    if (!grown) {
        free(copy);
        return es_error_set(err, OPT_EINVAL, "out of memory");
    }
    grown[(*n)++] = copy;
    *items = grown;
    return 0;
}

/* Appends the comma separated items of text (spaces around items ignored). */
static int list_append_text(char ***items, size_t *n, const char *text, es_error *err)
{
    if (text[0] == '\0')
        return 0;
    const char *p = text;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *s = p;
        while (len && isspace((unsigned char)*s))
            s++, len--;
        while (len && isspace((unsigned char)s[len - 1]))
            len--;
        if (len == 0)
            return es_error_set(err, OPT_EINVAL, "empty item in list \"%s\"", text);
        if (list_append(items, n, s, len, err) != 0)
            return -1;
        if (!end)
            return 0;
        p = end + 1;
    }
}

static int parse_bool(const char *text, bool *out, es_error *err)
{
    if (strcasecmp(text, "true") == 0)
        *out = true;
    else if (strcasecmp(text, "false") == 0)
        *out = false;
    else
        return es_error_set(err, OPT_EINVAL, "invalid boolean \"%s\" (want true or false)", text);
    return 0;
}

static int parse_int(const char *text, int *out, es_error *err)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (text[0] == '\0' || isspace((unsigned char)text[0]) || *end != '\0' || errno != 0 ||
        v < INT_MIN || v > INT_MAX)
        return es_error_set(err, OPT_EINVAL, "invalid integer \"%s\"", text);
    *out = (int)v;
    return 0;
}

/* "1048576", "64MiB", "1.5MiB", "512KiB", "1GB": binary (Ki/KiB...) or decimal (k/K/KB...). */
static int parse_size(const char *text, size_t *out, es_error *err)
{
    static const struct {
        const char *suffix;
        double mult;
    } units[] = {{"", 1},           {"B", 1},           {"Ki", 1024.0},       {"KiB", 1024.0},
                 {"Mi", 1048576.0}, {"MiB", 1048576.0}, {"Gi", 1073741824.0}, {"GiB", 1073741824.0},
                 {"k", 1e3},        {"K", 1e3},         {"KB", 1e3},          {"M", 1e6},
                 {"MB", 1e6},       {"G", 1e9},         {"GB", 1e9}};
    const char *p = text;
    double v = 0, scale = 1;
    int digits = 0;
    for (; *p >= '0' && *p <= '9' && digits < 16; p++, digits++)
        v = v * 10 + (*p - '0');
    if (*p == '.') {
        for (p++; *p >= '0' && *p <= '9' && digits < 16; p++, digits++)
            v += (*p - '0') * (scale /= 10);
    }
    if (digits == 0 || (*p >= '0' && *p <= '9'))
        return es_error_set(err, OPT_EINVAL, "invalid size \"%s\"", text);
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(p, units[i].suffix) != 0)
            continue;
        double bytes = v * units[i].mult;
        double whole = round(bytes);
        if (fabs(bytes - whole) > 1e-6 || whole > 1e15)
            return es_error_set(err, OPT_EINVAL, "invalid size \"%s\"", text);
        *out = (size_t)whole;
        return 0;
    }
    return es_error_set(err, OPT_EINVAL,
                        "unknown unit in size \"%s\" (want B, KiB, MiB, GiB, KB, MB or GB)", text);
}

/* Sets option d from text. Lists: append = false replaces the list, true appends. */
static int set_value(proxy_options *o, const struct opt_def *d, const char *text, bool append,
                     es_error *err)
{
    void *f = field_ptr(o, d);
    switch (d->type) {
    case OPT_STRING: {
        char *copy = strdup(text);
        if (!copy)
            return es_error_set(err, OPT_EINVAL, "out of memory");
        free(*(char **)f);
        *(char **)f = copy;
        return 0;
    }
    case OPT_BOOL:
        return parse_bool(text, (bool *)f, err);
    case OPT_INT:
        return parse_int(text, (int *)f, err);
    case OPT_DURATION:
        return duration_parse(text, (double *)f, err);
    case OPT_SIZE:
        return parse_size(text, (size_t *)f, err);
    case OPT_LIST: {
        size_t *n = (size_t *)((char *)o + d->count_off);
        if (!append)
            list_clear((char ***)f, n);
        return list_append_text((char ***)f, n, text, err);
    }
    }
    return es_error_set(err, OPT_EINVAL, "internal: unknown option type");
}

static const struct opt_def *find_option(const char *name, size_t len)
{
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (strlen(options[i].name) == len && memcmp(options[i].name, name, len) == 0)
            return &options[i];
    return NULL;
}

void proxy_options_free(proxy_options *o)
{
    if (!o)
        return;
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct opt_def *d = &options[i];
        if (d->type == OPT_STRING)
            free(*(char **)field_ptr(o, d));
        else if (d->type == OPT_LIST)
            list_clear((char ***)field_ptr(o, d), (size_t *)((char *)o + d->count_off));
    }
    memset(o, 0, sizeof *o);
}

/* ------------------------------------------------------------------ addresses */

static bool valid_hostname(const char *h, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)h[i]) && h[i] != '.' && h[i] != '-' && h[i] != '_')
            return false;
    return len > 0;
}

int proxy_addr_split(const char *addr, char *host, size_t hostlen, uint16_t *port, es_error *err)
{
    const char *s = addr;
    if (strncmp(s, "http://", 7) == 0)
        s += 7;
    else if (strncmp(s, "https://", 8) == 0)
        s += 8;
    else if (strstr(s, "://"))
        return es_error_set(err, OPT_EINVAL,
                            "unsupported scheme in \"%s\" (want http://, https:// or none)", addr);
    size_t len = strlen(s);
    if (len && s[len - 1] == '/')
        len--;
    const char *h, *colon;
    size_t hl;
    if (len && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (!close)
            return es_error_set(err, OPT_EINVAL, "missing \"]\" in \"%s\"", addr);
        h = s + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
        if (colon >= s + len || *colon != ':')
            return es_error_set(err, OPT_EINVAL, "missing port in \"%s\"", addr);
        char v6[INET6_ADDRSTRLEN + 1];
        struct in6_addr a6;
        size_t v6len = hl;
        const char *zone = memchr(h, '%', hl);
        if (zone)
            v6len = (size_t)(zone - h);
        if (v6len >= sizeof v6 || (zone && !valid_hostname(zone + 1, hl - v6len - 1)))
            return es_error_set(err, OPT_EINVAL, "invalid IPv6 address in \"%s\"", addr);
        memcpy(v6, h, v6len);
        v6[v6len] = '\0';
        if (inet_pton(AF_INET6, v6, &a6) != 1)
            return es_error_set(err, OPT_EINVAL, "invalid IPv6 address in \"%s\"", addr);
    } else {
        colon = NULL;
        for (size_t i = 0; i < len; i++)
            if (s[i] == ':')
                colon = s + i;
        if (!colon)
            return es_error_set(err, OPT_EINVAL, "missing port in \"%s\" (want host:port)", addr);
        h = s;
        hl = (size_t)(colon - s);
        if (memchr(h, ':', hl))
            return es_error_set(err, OPT_EINVAL, "IPv6 address needs brackets in \"%s\"", addr);
        if (hl == 0)
            return es_error_set(err, OPT_EINVAL, "missing host in \"%s\"", addr);
        if (!valid_hostname(h, hl))
            return es_error_set(err, OPT_EINVAL, "invalid host in \"%s\"", addr);
    }
    const char *p = colon + 1, *end = s + len;
    unsigned long v = 0;
    if (p == end || end - p > 5)
        return es_error_set(err, OPT_EINVAL, "invalid port in \"%s\"", addr);
    for (; p < end; p++) {
        if (*p < '0' || *p > '9')
            return es_error_set(err, OPT_EINVAL, "invalid port in \"%s\"", addr);
        v = v * 10 + (unsigned long)(*p - '0');
    }
    if (v == 0 || v > 65535)
        return es_error_set(err, OPT_EINVAL, "invalid port in \"%s\" (want 1..65535)", addr);
    if (hl + 1 > hostlen)
        return es_error_set(err, OPT_EINVAL, "host too long in \"%s\"", addr);
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (uint16_t)v;
    return 0;
}

int proxy_addr_is_https(const char *addr)
{
    return strncmp(addr, "https://", 8) == 0;
}

int proxy_host_is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (strcasecmp(host, "localhost") == 0)
        return 1;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return 0;
}

/* ------------------------------------------------------------------ help */

void proxy_options_print_help(FILE *out, bool markdown)
{
    if (markdown) {
        fprintf(out, "| flag | type | default | meaning |\n|---|---|---|---|\n");
        for (size_t i = 0; i < N_OPTIONS; i++) {
            const struct opt_def *d = &options[i];
            fprintf(out, "| `--%s` | %s | %s%s%s | %s |\n", d->name, type_names[d->type],
                    d->def[0] ? "`" : "", d->def, d->def[0] ? "`" : "", d->help);
        }
        return;
    }
    fprintf(out, "usage: etcdseal proxy [flags]\n\n"
                 "Relays etcd v3 gRPC between clients and etcd, encrypting values under the key\n"
                 "prefixes named by --encryption-provider-config. Every flag can also be set in\n"
                 "the YAML file given by --config (key = flag name); flags override the file.\n\n"
                 "flags:\n");
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct opt_def *d = &options[i];
        char head[64];
        snprintf(head, sizeof head, "--%s %s", d->name, type_names[d->type]);
        fprintf(out, "  %-38s %s", head, d->help);
        if (d->def[0])
            fprintf(out, " (default \"%s\")", d->def);
        fputc('\n', out);
    }
    fprintf(out, "  %-38s %s\n", "-h, --help", "print this help");
}

/* ------------------------------------------------------------------ flags */

/* Tokenises argv[*i] (and its value). On return *d is the option and *val its text; *i points
 * at the last argv element consumed. */
static int next_flag(int argc, char **argv, int *i, const struct opt_def **d, const char **val,
                     es_error *err)
{
    const char *arg = argv[*i];
    if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0')
        return es_error_set(err, OPT_EINVAL, "unexpected argument \"%s\" (flags start with --)",
                            arg);
    const char *name = arg + 2, *eq = strchr(name, '=');
    size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
    *d = find_option(name, nlen);
    if (!*d)
        return es_error_set(err, OPT_EINVAL, "unknown flag --%.*s (see --help)", (int)nlen, name);
    if (eq) {
        *val = eq + 1;
    } else if ((*d)->type == OPT_BOOL) {
        *val = "true";
    } else {
        if (*i + 1 >= argc || strncmp(argv[*i + 1], "--", 2) == 0)
            return es_error_set(err, OPT_EINVAL, "flag --%s needs a value", (*d)->name);
        *val = argv[++*i];
    }
    return 0;
}

/* Applies every flag but --config; the first occurrence of a list flag replaces the list. */
static int apply_flags(proxy_options *o, int argc, char **argv, es_error *err)
{
    bool seen[N_OPTIONS] = {false};
    for (int i = 1; i < argc; i++) {
        const struct opt_def *d;
        const char *val;
        if (next_flag(argc, argv, &i, &d, &val, err) != 0)
            return -1;
        size_t idx = (size_t)(d - options);
        if (d->off == FIELD(config_file))
            continue;
        if (set_value(o, d, val, seen[idx], err) != 0)
            return es_error_prefix(err, "--%s", d->name);
        seen[idx] = true;
    }
    return 0;
}

/* ------------------------------------------------------------------ YAML */

static bool yaml_is_null(const yaml_node_t *n)
{
    const char *v = (const char *)n->data.scalar.value;
    return n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
           (v[0] == '\0' || strcmp(v, "~") == 0 || strcasecmp(v, "null") == 0);
}

static unsigned long yaml_line(const yaml_node_t *n)
{
    return (unsigned long)n->start_mark.line + 1;
}

static int yaml_scalar_text(const char *path, const yaml_node_t *n, const char *name,
                            const char **text, es_error *err)
{
    *text = (const char *)n->data.scalar.value;
    if (strlen(*text) != n->data.scalar.length)
        return es_error_set(err, OPT_EINVAL, "%s:%lu: %s: value contains a NUL byte", path,
                            yaml_line(n), name);
    return 0;
}

static int yaml_set_one(proxy_options *o, const char *path, yaml_document_t *doc,
                        const struct opt_def *d, yaml_node_t *v, es_error *err)
{
    const char *text;
    if (v->type == YAML_MAPPING_NODE || (v->type == YAML_SEQUENCE_NODE && d->type != OPT_LIST))
        return es_error_set(err, OPT_EINVAL, "%s:%lu: %s: wrong type: want %s, got a %s", path,
                            yaml_line(v), d->name, type_phrases[d->type],
                            v->type == YAML_MAPPING_NODE ? "mapping" : "sequence");
    if (v->type == YAML_SEQUENCE_NODE) {
        set_value(o, d, "", false, err); /* clears the list; cannot fail */
        for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
             it++) {
            yaml_node_t *item = yaml_document_get_node(doc, *it);
            if (!item || item->type != YAML_SCALAR_NODE || yaml_is_null(item))
                return es_error_set(err, OPT_EINVAL,
                                    "%s:%lu: %s: wrong type: list items must be strings", path,
                                    item ? yaml_line(item) : yaml_line(v), d->name);
            if (yaml_scalar_text(path, item, d->name, &text, err) != 0)
                return -1;
            if (set_value(o, d, text, true, err) != 0)
                return es_error_prefix(err, "%s:%lu: %s", path, yaml_line(item), d->name);
        }
        return 0;
    }
    if (yaml_is_null(v)) {
        if (d->type != OPT_STRING && d->type != OPT_LIST)
            return es_error_set(err, OPT_EINVAL, "%s:%lu: %s: needs a value", path, yaml_line(v),
                                d->name);
        return set_value(o, d, "", false, err);
    }
    if ((d->type == OPT_BOOL || d->type == OPT_INT) &&
        v->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return es_error_set(err, OPT_EINVAL, "%s:%lu: %s: wrong type: want %s, got a quoted string",
                            path, yaml_line(v), d->name, type_phrases[d->type]);
    if (yaml_scalar_text(path, v, d->name, &text, err) != 0)
        return -1;
    if (set_value(o, d, text, false, err) != 0)
        return es_error_prefix(err, "%s:%lu: %s", path, yaml_line(v), d->name);
    return 0;
}

static int yaml_apply_document(proxy_options *o, const char *path, yaml_document_t *doc,
                               es_error *err)
{
    yaml_node_t *root = yaml_document_get_root_node(doc);
    if (!root)
        return 0;
    if (root->type != YAML_MAPPING_NODE)
        return es_error_set(err, OPT_EINVAL,
                            "%s:%lu: the top level must be a mapping of flag names to values", path,
                            yaml_line(root));
    unsigned long first_line[N_OPTIONS] = {0};
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        yaml_node_t *v = yaml_document_get_node(doc, p->value);
        if (!k || !v)
            return es_error_set(err, OPT_EINVAL, "%s: malformed YAML document", path);
        if (k->type != YAML_SCALAR_NODE)
            return es_error_set(err, OPT_EINVAL, "%s:%lu: keys must be flag names", path,
                                yaml_line(k));
        const char *name = (const char *)k->data.scalar.value;
        const struct opt_def *d = find_option(name, k->data.scalar.length);
        if (!d)
            return es_error_set(err, OPT_EINVAL, "%s:%lu: unknown setting \"%.64s\"", path,
                                yaml_line(k), name);
        if (d->off == FIELD(config_file))
            return es_error_set(err, OPT_EINVAL,
                                "%s:%lu: \"config\" cannot be set inside a config file", path,
                                yaml_line(k));
        size_t idx = (size_t)(d - options);
        if (first_line[idx])
            return es_error_set(err, OPT_EINVAL,
                                "%s:%lu: duplicate setting \"%s\" (first at line %lu)", path,
                                yaml_line(k), d->name, first_line[idx]);
        first_line[idx] = yaml_line(k);
        if (yaml_set_one(o, path, doc, d, v, err) != 0)
            return -1;
    }
    return 0;
}

static int load_yaml(proxy_options *o, const char *path, es_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return es_error_set(err, OPT_EINVAL, "--config: cannot open \"%s\": %s", path,
                            strerror(errno));
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) {
        fclose(f);
        return es_error_set(err, OPT_EINVAL, "--config: out of memory");
    }
    yaml_parser_set_input_file(&parser, f);
    int rc = 0;
    for (int ndocs = 0; rc == 0; ndocs++) {
        yaml_document_t doc;
        if (!yaml_parser_load(&parser, &doc)) {
            rc = es_error_set(err, OPT_EINVAL, "%s:%lu: YAML syntax error: %s%s%s", path,
                              (unsigned long)parser.problem_mark.line + 1,
                              parser.problem ? parser.problem : "unknown",
                              parser.context ? " " : "", parser.context ? parser.context : "");
            break;
        }
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        if (!root) {
            yaml_document_delete(&doc);
            break; /* end of stream */
        }
        if (ndocs > 0)
            rc = es_error_set(err, OPT_EINVAL, "%s:%lu: more than one YAML document", path,
                              yaml_line(root));
        else
            rc = yaml_apply_document(o, path, &doc, err);
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&parser);
    fclose(f);
    return rc;
}

/* ------------------------------------------------------------------ validation */

static int check_addr(const char *flag, const char *addr, char *host, size_t hostlen, es_error *err)
{
    uint16_t port;
    if (proxy_addr_split(addr, host, hostlen, &port, err) != 0)
        return es_error_prefix(err, "--%s", flag);
    return 0;
}

static int check_pair(const char *a, const char *a_name, const char *b, const char *b_name,
                      es_error *err)
{
    if (a[0] && !b[0])
        return es_error_set(err, OPT_EINVAL, "--%s is set without --%s", a_name, b_name);
    if (b[0] && !a[0])
        return es_error_set(err, OPT_EINVAL, "--%s is set without --%s", b_name, a_name);
    return 0;
}

static int validate(proxy_options *o, es_error *err)
{
    char host[256];
    enum log_level lvl;
    if (check_addr("listen-addr", o->listen_addr, host, sizeof host, err) != 0)
        return -1;
    bool tls_listener = o->cert_file[0] != '\0';
    if (check_pair(o->cert_file, "cert-file", o->key_file, "key-file", err) != 0 ||
        check_pair(o->cert, "cert", o->key, "key", err) != 0)
        return -1;
    if (o->client_cert_auth && !o->trusted_ca_file[0])
        return es_error_set(err, OPT_EINVAL, "--client-cert-auth needs --trusted-ca-file");
    if (o->client_crl_file[0] && !o->trusted_ca_file[0])
        return es_error_set(err, OPT_EINVAL, "--client-crl-file needs --trusted-ca-file");
    if (o->client_cert_auth && !tls_listener)
        return es_error_set(err, OPT_EINVAL,
                            "--client-cert-auth needs a TLS listener (--cert-file/--key-file)");
    if (o->trusted_ca_file[0] && !tls_listener)
        return es_error_set(err, OPT_EINVAL,
                            "--trusted-ca-file needs a TLS listener (--cert-file/--key-file)");
    if (!tls_listener && !o->insecure_listen && !proxy_host_is_loopback(host))
        return es_error_set(err, OPT_EINVAL,
                            "refusing cleartext HTTP/2 on non-loopback address %s: give "
                            "--cert-file/--key-file or --insecure-listen",
                            o->listen_addr);
    if (o->n_endpoints == 0)
        return es_error_set(err, OPT_EINVAL, "--endpoints: at least one etcd endpoint is needed");
    for (size_t i = 0; i < o->n_endpoints; i++)
        if (check_addr("endpoints", o->endpoints[i], host, sizeof host, err) != 0)
            return -1;
    for (size_t i = 0; i < o->n_advertise_client_urls; i++)
        if (check_addr("advertise-client-url", o->advertise_client_urls[i], host, sizeof host,
                       err) != 0)
            return -1;
    if (o->metrics_addr[0] && check_addr("metrics-addr", o->metrics_addr, host, sizeof host, err))
        return -1;
    if (o->workers < 0 || o->workers > PROXY_WORKERS_MAX)
        return es_error_set(err, OPT_EINVAL,
                            "--workers must be between 1 and %d (0 = half the online CPUs), "
                            "got %d",
                            PROXY_WORKERS_MAX, o->workers);
    const struct {
        const char *name;
        double v;
    } positive[] = {{"dial-timeout", o->dial_timeout},
                    {"upstream-keepalive-time", o->keepalive_time},
                    {"upstream-keepalive-timeout", o->keepalive_timeout}};
    for (size_t i = 0; i < sizeof positive / sizeof positive[0]; i++)
        if (!(positive[i].v > 0))
            return es_error_set(err, OPT_EINVAL, "--%s must be greater than 0", positive[i].name);
    if (o->max_message_bytes < MAX_MESSAGE_MIN ||
        o->max_message_bytes > PROXY_MAX_MESSAGE_BYTES_MAX)
        return es_error_set(err, OPT_EINVAL,
                            "--max-message-bytes must be between %d and %zu, got %zu",
                            MAX_MESSAGE_MIN, PROXY_MAX_MESSAGE_BYTES_MAX, o->max_message_bytes);
    if (o->max_header_list_bytes < 1024 || o->max_header_list_bytes > (16u << 20))
        return es_error_set(err, OPT_EINVAL,
                            "--max-header-list-bytes must be between 1024 and 16777216, got %zu",
                            o->max_header_list_bytes);
    if (o->max_concurrent_streams < 1)
        return es_error_set(err, OPT_EINVAL,
                            "--max-concurrent-streams must be at least 1, got %d",
                            o->max_concurrent_streams);
    if (o->max_connections_per_worker < 0)
        return es_error_set(err, OPT_EINVAL,
                            "--max-connections-per-worker must be 0 (no limit) or more, got %d",
                            o->max_connections_per_worker);
    if (o->map_identity_to_etcd_user && !o->access_policy[0])
        return es_error_set(err, OPT_EINVAL,
                            "--map-identity-to-etcd-user needs --access-policy (the policy names "
                            "the etcd user of each identity)");
    if (o->storage_prefix[0] != '/')
        return es_error_set(err, OPT_EINVAL, "--storage-prefix must start with \"/\", got \"%s\"",
                            o->storage_prefix);
    if (log_level_parse(o->log_level, &lvl) != 0)
        return es_error_set(err, OPT_EINVAL,
                            "--log-level must be debug, info, warn or error, got \"%s\"",
                            o->log_level);
    return 0;
}

/* The default worker count: half the online CPUs, at least 1. etcd and its clients share the
 * machine more often than not; measured on 2 cores (put x64, range x16 through aesgcm), one
 * worker used 10-20% less proxy CPU per request and a third fewer context switches than two,
 * at equal or better throughput: one upstream connection batches more calls per write. */
static int default_workers(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 2)
        return 1;
    n /= 2;
    return n > PROXY_WORKERS_MAX ? PROXY_WORKERS_MAX : (int)n;
}

/* ------------------------------------------------------------------ entry point */

static int parse(proxy_options *o, int argc, char **argv, FILE *help_out, es_error *err)
{
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (set_value(o, &options[i], options[i].def, false, err) != 0)
            return es_error_prefix(err, "internal: default of --%s", options[i].name);
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            proxy_options_print_help(help_out ? help_out : stdout, false);
            return 1;
        }
    const char *config = NULL;
    for (int i = 1; i < argc; i++) {
        const struct opt_def *d;
        const char *val;
        if (next_flag(argc, argv, &i, &d, &val, err) != 0)
            return -1;
        if (d->off == FIELD(config_file))
            config = val;
    }
    if (config) {
        if (config[0] == '\0')
            return es_error_set(err, OPT_EINVAL, "--config: empty file name");
        if (set_value(o, find_option("config", 6), config, false, err) != 0 ||
            load_yaml(o, config, err) != 0)
            return -1;
    }
    if (apply_flags(o, argc, argv, err) != 0 || validate(o, err) != 0)
        return -1;
    if (o->workers == 0)
        o->workers = default_workers();
    return 0;
}

int proxy_options_parse(proxy_options *o, int argc, char **argv, FILE *help_out, es_error *err)
{
    memset(o, 0, sizeof *o);
    es_error_clear(err);
    int rc = parse(o, argc, argv, help_out, err);
    if (rc != 0)
        proxy_options_free(o);
    return rc;
}
