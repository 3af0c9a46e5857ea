/* cmd_proxy_options_test.c - `etcdseal proxy` flags, YAML file, validation and --help.
 * src/cmd/ is linked only into the binary, so the parser's source is compiled in here. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

#include "cmd/proxy_options.c"
#include "testlib.h"

#define MAX_ARGS 64

/* parse_args(&o, &e, "--flag", "value", ..., NULL): argv[0] = "proxy". */
static int parse_args(proxy_options *o, es_error *e, ...)
{
    char *argv[MAX_ARGS];
    int argc = 0;
    argv[argc++] = "proxy";
    va_list ap;
    va_start(ap, e);
    for (char *a; (a = va_arg(ap, char *)) != NULL;) {
        if (argc == MAX_ARGS - 1) {
            fprintf(stderr, "parse_args: more than %d arguments\n", MAX_ARGS - 2);
            abort();
        }
        argv[argc++] = a;
    }
    va_end(ap);
    argv[argc] = NULL;
    FILE *devnull = fopen("/dev/null", "w");
    int rc = proxy_options_parse(o, argc, argv, devnull, e);
    if (devnull)
        fclose(devnull);
    return rc;
}

/* Writes text to a fresh temporary file; path receives its name. */
static int write_temp(char *path, size_t pathlen, const char *text)
{
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(path, pathlen, "%s/proxy_options_test_XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    size_t len = strlen(text);
    ssize_t w = write(fd, text, len);
    close(fd);
    return w == (ssize_t)len ? 0 : -1;
}

/* the documented default: half the online CPUs, at least 1, at most 64 */
static int expected_workers(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN) / 2;
    return n < 1 ? 1 : n > 64 ? 64 : (int)n;
}

static void test_defaults(void)
{
    proxy_options o;
    es_error e;
    CHECK_EQ_INT(parse_args(&o, &e, NULL), 0);
    CHECK_EQ_STR(o.config_file, "");
    CHECK_EQ_STR(o.listen_addr, "127.0.0.1:23790");
    CHECK_EQ_STR(o.cert_file, "");
    CHECK_EQ_STR(o.key_file, "");
    CHECK_EQ_STR(o.trusted_ca_file, "");
    CHECK(!o.client_cert_auth);
    CHECK(!o.insecure_listen);
    CHECK_EQ_INT(o.n_endpoints, 1);
    if (o.n_endpoints == 1)
        CHECK_EQ_STR(o.endpoints[0], "127.0.0.1:2379");
    CHECK_EQ_STR(o.cacert, "");
    CHECK_EQ_STR(o.cert, "");
    CHECK_EQ_STR(o.key, "");
    CHECK(!o.insecure_skip_tls_verify);
    CHECK_EQ_INT(o.n_advertise_client_urls, 0);
    CHECK_EQ_STR(o.metrics_addr, "");
    CHECK_EQ_INT(o.workers, expected_workers());
    CHECK(o.shutdown_timeout == 10);
    CHECK(o.dial_timeout == 5);
    CHECK(o.keepalive_time == 10);
    CHECK(o.keepalive_timeout == 5);
    CHECK_EQ_INT(o.max_message_bytes, 2147483647);
    CHECK_EQ_STR(o.encryption_provider_config, "");
    CHECK_EQ_STR(o.storage_prefix, "/registry");
    CHECK_EQ_STR(o.log_level, "info");
    proxy_options_free(&o);
    CHECK(o.listen_addr == NULL && o.endpoints == NULL && o.n_endpoints == 0);
    proxy_options_free(&o); /* idempotent */
}

static void test_flag_forms(void)
{
    proxy_options o;
    es_error e;
    int rc = parse_args(
        &o, &e, "--listen-addr", "[::1]:4000", "--cert-file=/c.pem", "--key-file", "/k.pem",
        "--trusted-ca-file=/ca.pem", "--client-cert-auth", "--insecure-listen=TRUE",
        "--insecure-listen=false", "--endpoints", "https://a:1, b:2", "--endpoints=http://c:3",
        "--cacert", "/uca", "--cert=/uc", "--key", "/uk", "--insecure-skip-tls-verify=true",
        "--advertise-client-url", "https://p1:1,https://p2:2",
        "--advertise-client-url=https://p3:3", "--metrics-addr", "http://127.0.0.1:9000",
        "--workers=3", "--shutdown-timeout", "1m30s", "--dial-timeout=250ms",
        "--upstream-keepalive-time", "2h", "--upstream-keepalive-timeout", "1.5s",
        "--max-message-bytes=64MiB", "--encryption-provider-config", "/enc.yaml",
        "--storage-prefix=/kube", "--log-level", "debug", NULL);
    CHECK_MSG(rc == 0, "%s", e.msg);
    CHECK_EQ_STR(o.listen_addr, "[::1]:4000");
    CHECK_EQ_STR(o.cert_file, "/c.pem");
    CHECK_EQ_STR(o.key_file, "/k.pem");
    CHECK_EQ_STR(o.trusted_ca_file, "/ca.pem");
    CHECK(o.client_cert_auth);
    CHECK(!o.insecure_listen); /* the last occurrence wins */
    CHECK_EQ_INT(o.n_endpoints, 3);
    if (o.n_endpoints == 3) {
        CHECK_EQ_STR(o.endpoints[0], "https://a:1");
        CHECK_EQ_STR(o.endpoints[1], "b:2");
        CHECK_EQ_STR(o.endpoints[2], "http://c:3");
    }
    CHECK_EQ_STR(o.cacert, "/uca");
    CHECK_EQ_STR(o.cert, "/uc");
    CHECK_EQ_STR(o.key, "/uk");
    CHECK(o.insecure_skip_tls_verify);
    CHECK_EQ_INT(o.n_advertise_client_urls, 3);
    if (o.n_advertise_client_urls == 3)
        CHECK_EQ_STR(o.advertise_client_urls[2], "https://p3:3");
    CHECK_EQ_STR(o.metrics_addr, "http://127.0.0.1:9000");
    CHECK_EQ_INT(o.workers, 3);
    CHECK(o.shutdown_timeout == 90);
    CHECK(fabs(o.dial_timeout - 0.25) < 1e-9);
    CHECK(o.keepalive_time == 7200);
    CHECK(o.keepalive_timeout == 1.5);
    CHECK_EQ_INT(o.max_message_bytes, 64 << 20);
    CHECK_EQ_STR(o.encryption_provider_config, "/enc.yaml");
    CHECK_EQ_STR(o.storage_prefix, "/kube");
    CHECK_EQ_STR(o.log_level, "debug");
    proxy_options_free(&o);
}

static void test_scalar_last_wins_and_empty_value(void)
{
    proxy_options o;
    es_error e;
    CHECK_EQ_INT(parse_args(&o, &e, "--workers", "2", "--workers=5", "--metrics-addr=", NULL), 0);
    CHECK_EQ_INT(o.workers, 5);
    CHECK_EQ_STR(o.metrics_addr, "");
    proxy_options_free(&o);
}

static void test_sizes(void)
{
    static const struct {
        const char *text;
        size_t want; /* 0 = must be rejected */
    } cases[] = {{"1048576", 1048576},
                 {"64MiB", 64u << 20},
                 {"1.5MiB", 1572864},
                 {"512KiB", 524288},
                 {"2Gi", 0},
                 {"1GiB", 1u << 30},
                 {"1MB", 1000000},
                 {"4096B", 4096},
                 {"2k", 2000},
                 {"1.5", 0},
                 {"", 0},
                 {"MiB", 0},
                 {"12XB", 0},
                 {"-5", 0},
                 {"1 MiB", 0},
                 {"100", 0},
                 {"3GiB", 0},
                 {"99999999999999999999", 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        proxy_options o;
        es_error e = {0};
        char flag[64];
        snprintf(flag, sizeof flag, "--max-message-bytes=%s", cases[i].text);
        int rc = parse_args(&o, &e, flag, NULL);
        if (cases[i].want) {
            CHECK_MSG(rc == 0, "%s: %s", cases[i].text, e.msg);
            CHECK_MSG(o.max_message_bytes == cases[i].want, "%s -> %zu", cases[i].text,
                      o.max_message_bytes);
        } else {
            CHECK_MSG(rc == -1, "%s accepted", cases[i].text);
            CHECK_MSG(strstr(e.msg, "--max-message-bytes") != NULL, "%s: %s", cases[i].text, e.msg);
        }
        proxy_options_free(&o);
    }
}

static void test_flag_errors(void)
{
    static const struct {
        const char *args[3];
        const char *want;
    } cases[] = {
        {{"--no-such-flag"}, "unknown flag --no-such-flag"},
        {{"--no-such=1"}, "unknown flag --no-such"},
        {{"--listen-addr"}, "flag --listen-addr needs a value"},
        {{"--listen-addr", "--workers=2"}, "flag --listen-addr needs a value"},
        {{"positional"}, "unexpected argument \"positional\""},
        {{"-workers", "2"}, "unexpected argument \"-workers\""},
        {{"--"}, "unexpected argument \"--\""},
        {{"--insecure-listen=maybe"}, "--insecure-listen: invalid boolean \"maybe\""},
        {{"--insecure-listen", "false"}, "unexpected argument \"false\""},
        {{"--workers=two"}, "--workers: invalid integer \"two\""},
        {{"--workers", "99999999999"}, "--workers: invalid integer"},
        {{"--dial-timeout=5"}, "--dial-timeout: missing or unknown unit in duration \"5\""},
        {{"--shutdown-timeout=-1s"}, "--shutdown-timeout: "},
        {{"--endpoints=a:1,,b:2"}, "--endpoints: empty item in list"},
        {{"--config="}, "--config: empty file name"},
        {{"--config", "/nonexistent/etcdseal.yaml"},
         "--config: cannot open \"/nonexistent/etcdseal.yaml\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        proxy_options o;
        es_error e = {0};
        int rc = parse_args(&o, &e, cases[i].args[0], cases[i].args[1], cases[i].args[2], NULL);
        CHECK_MSG(rc == -1, "case %zu (%s) accepted", i, cases[i].args[0]);
        CHECK_MSG(strstr(e.msg, cases[i].want) != NULL, "case %zu: got \"%s\", want \"%s\"", i,
                  e.msg, cases[i].want);
        CHECK(o.listen_addr == NULL); /* nothing left to free */
    }
}

static void test_validation_errors(void)
{
    static const struct {
        const char *args[5];
        const char *want;
    } cases[] = {
        {{"--listen-addr=127.0.0.1"}, "--listen-addr: missing port in \"127.0.0.1\""},
        {{"--listen-addr=127.0.0.1:0"}, "--listen-addr: invalid port"},
        {{"--listen-addr=127.0.0.1:65536"}, "--listen-addr: invalid port"},
        {{"--listen-addr=::1:80"}, "--listen-addr: IPv6 address needs brackets"},
        {{"--listen-addr=[::1:80"}, "--listen-addr: missing \"]\""},
        {{"--listen-addr=[nope]:80"}, "--listen-addr: invalid IPv6 address"},
        {{"--listen-addr=:80"}, "--listen-addr: missing host"},
        {{"--listen-addr=unix://x:1"}, "--listen-addr: unsupported scheme"},
        {{"--cert-file=/c"}, "--cert-file is set without --key-file"},
        {{"--key-file=/k"}, "--key-file is set without --cert-file"},
        {{"--cert=/c"}, "--cert is set without --key"},
        {{"--key=/k"}, "--key is set without --cert"},
        {{"--client-cert-auth", "--cert-file=/c", "--key-file=/k"},
         "--client-cert-auth needs --trusted-ca-file"},
        {{"--client-cert-auth", "--trusted-ca-file=/ca"},
         "--client-cert-auth needs a TLS listener (--cert-file/--key-file)"},
        {{"--trusted-ca-file=/ca"},
         "--trusted-ca-file needs a TLS listener (--cert-file/--key-file)"},
        {{"--listen-addr=0.0.0.0:23790"},
         "refusing cleartext HTTP/2 on non-loopback address 0.0.0.0:23790: give "
         "--cert-file/--key-file or --insecure-listen"},
        {{"--listen-addr=[::]:1"}, "refusing cleartext HTTP/2 on non-loopback address [::]:1"},
        {{"--listen-addr=example.com:1"}, "refusing cleartext HTTP/2 on non-loopback address"},
        {{"--endpoints="}, "--endpoints: at least one etcd endpoint is needed"},
        {{"--endpoints=a:1,b"}, "--endpoints: missing port in \"b\""},
        {{"--endpoints=grpc://a:1"}, "--endpoints: unsupported scheme"},
        {{"--advertise-client-url=https://p"}, "--advertise-client-url: missing port"},
        {{"--metrics-addr=9000"}, "--metrics-addr: missing port"},
        {{"--workers=65"},
         "--workers must be between 1 and 64 (0 = half the online CPUs), got 65"},
        {{"--workers=-1"}, "--workers must be between 1 and 64"},
        {{"--dial-timeout=0s"}, "--dial-timeout must be greater than 0"},
        {{"--upstream-keepalive-time=0"}, "--upstream-keepalive-time must be greater than 0"},
        {{"--upstream-keepalive-timeout=0"}, "--upstream-keepalive-timeout must be greater than 0"},
        {{"--max-message-bytes=1023"}, "--max-message-bytes must be between 1024 and 2147483647"},
        {{"--max-message-bytes=2GiB"}, "--max-message-bytes must be between"},
        {{"--storage-prefix=registry"}, "--storage-prefix must start with \"/\", got \"registry\""},
        {{"--log-level=verbose"},
         "--log-level must be debug, info, warn or error, got \"verbose\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        proxy_options o;
        es_error e = {0};
        const char *const *a = cases[i].args;
        int rc = parse_args(&o, &e, a[0], a[1], a[2], a[3], a[4], NULL);
        CHECK_MSG(rc == -1, "case %zu (%s) accepted", i, a[0]);
        CHECK_MSG(strstr(e.msg, cases[i].want) != NULL, "case %zu: got \"%s\", want \"%s\"", i,
                  e.msg, cases[i].want);
        CHECK_EQ_INT(e.code, OPT_EINVAL);
    }
}

static void test_valid_combinations(void)
{
    static const struct {
        const char *args[5];
    } cases[] = {
        {{"--listen-addr=0.0.0.0:1", "--insecure-listen"}},
        {{"--listen-addr=0.0.0.0:1", "--cert-file=/c", "--key-file=/k"}},
        {{"--listen-addr=[::]:1", "--cert-file=/c", "--key-file=/k", "--client-cert-auth",
          "--trusted-ca-file=/ca"}},
        {{"--listen-addr=localhost:1"}},
        {{"--listen-addr=127.1.2.3:1"}},
        {{"--listen-addr=[::ffff:127.0.0.1]:1"}},
        {{"--workers=64"}},
        {{"--workers=1", "--max-message-bytes=1KiB", "--shutdown-timeout=0s"}},
        {{"--endpoints=https://[fe80::1%eth0]:2379/", "--advertise-client-url=https://proxy:2379"}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        proxy_options o;
        es_error e = {0};
        const char *const *a = cases[i].args;
        CHECK_MSG(parse_args(&o, &e, a[0], a[1], a[2], a[3], a[4], NULL) == 0, "case %zu: %s", i,
                  e.msg);
        proxy_options_free(&o);
    }
}

static void test_addr_split(void)
{
    static const struct {
        const char *addr, *host;
        int port; /* 0 = error */
    } cases[] = {
        {"127.0.0.1:2379", "127.0.0.1", 2379},
        {"http://etcd-0.example:2379", "etcd-0.example", 2379},
        {"https://etcd-0:2379/", "etcd-0", 2379},
        {"[::1]:1", "::1", 1},
        {"https://[2001:db8::5]:65535", "2001:db8::5", 65535},
        {"localhost:80", "localhost", 80},
        {"host", NULL, 0},
        {"host:", NULL, 0},
        {"host:123456", NULL, 0},
        {"host:12a", NULL, 0},
        {"ho st:1", NULL, 0},
        {"[::1]", NULL, 0},
        {"[::1]x:1", NULL, 0},
        {"unix://sock:1", NULL, 0},
        {"http://:1", NULL, 0},
        {"", NULL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char host[64] = "";
        uint16_t port = 0;
        es_error e = {0};
        int rc = proxy_addr_split(cases[i].addr, host, sizeof host, &port, &e);
        if (cases[i].port) {
            CHECK_MSG(rc == 0, "%s: %s", cases[i].addr, e.msg);
            CHECK_EQ_STR(host, cases[i].host);
            CHECK_EQ_INT(port, cases[i].port);
        } else {
            CHECK_MSG(rc == -1, "%s accepted", cases[i].addr);
            CHECK_MSG(strstr(e.msg, cases[i].addr) != NULL, "%s: message \"%s\" omits the address",
                      cases[i].addr, e.msg);
        }
    }
    char tiny[4];
    uint16_t port;
    es_error e = {0};
    CHECK(proxy_addr_split("abcd:1", tiny, sizeof tiny, &port, &e) == -1);
    CHECK(strstr(e.msg, "host too long") != NULL);
    CHECK(proxy_addr_split("abc:1", tiny, sizeof tiny, &port, &e) == 0);
    CHECK(proxy_addr_is_https("https://a:1") == 1);
    CHECK(proxy_addr_is_https("http://a:1") == 0);
    CHECK(proxy_addr_is_https("a:1") == 0);
}

static void test_loopback(void)
{
    const char *yes[] = {"127.0.0.1", "127.255.0.9", "::1",
                         "localhost", "LOCALHOST",   "::ffff:127.0.0.1"};
    const char *no[] = {"0.0.0.0",         "::",          "10.0.0.1",
                        "128.0.0.1",       "example.com", "localhost.example",
                        "::ffff:10.0.0.1", "fe80::1"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        CHECK_MSG(proxy_host_is_loopback(yes[i]) == 1, "%s", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        CHECK_MSG(proxy_host_is_loopback(no[i]) == 0, "%s", no[i]);
}

static const char full_yaml[] = "# every option type\n"
                                "listen-addr: 127.0.0.2:5000\n"
                                "endpoints:\n"
                                "  - https://e1:2379\n"
                                "  - e2:2379\n"
                                "advertise-client-url: https://a:1, https://b:2\n"
                                "cacert: /y/ca.pem\n"
                                "insecure-skip-tls-verify: true\n"
                                "metrics-addr: \"127.0.0.1:9100\"\n"
                                "workers: 2\n"
                                "dial-timeout: 2s\n"
                                "max-message-bytes: 8MiB\n"
                                "encryption-provider-config: /y/enc.yaml\n"
                                "storage-prefix: /y\n"
                                "log-level: warn\n"
                                "cert-file:\n";

static void test_yaml_and_precedence(void)
{
    char path[256];
    CHECK(write_temp(path, sizeof path, full_yaml) == 0);
    proxy_options o;
    es_error e = {0};
    CHECK_MSG(parse_args(&o, &e, "--config", path, NULL) == 0, "%s", e.msg);
    CHECK_EQ_STR(o.config_file, path);
    CHECK_EQ_STR(o.listen_addr, "127.0.0.2:5000");
    CHECK_EQ_INT(o.n_endpoints, 2);
    if (o.n_endpoints == 2)
        CHECK_EQ_STR(o.endpoints[1], "e2:2379");
    CHECK_EQ_INT(o.n_advertise_client_urls, 2);
    CHECK_EQ_STR(o.cacert, "/y/ca.pem");
    CHECK(o.insecure_skip_tls_verify);
    CHECK_EQ_STR(o.metrics_addr, "127.0.0.1:9100");
    CHECK_EQ_INT(o.workers, 2);
    CHECK(o.dial_timeout == 2);
    CHECK_EQ_INT(o.max_message_bytes, 8 << 20);
    CHECK_EQ_STR(o.encryption_provider_config, "/y/enc.yaml");
    CHECK_EQ_STR(o.storage_prefix, "/y");
    CHECK_EQ_STR(o.log_level, "warn");
    CHECK_EQ_STR(o.cert_file, "");
    CHECK(o.shutdown_timeout == 10); /* not in the file: default */
    proxy_options_free(&o);

    /* Flags override the file wherever they appear; the first list flag replaces the list. */
    CHECK_MSG(parse_args(&o, &e, "--workers=4", "--endpoints", "x:1", "--config=", NULL) == -1,
              "empty --config accepted");
    CHECK_MSG(parse_args(&o, &e, "--workers=4", "--endpoints", "x:1", "--config", path,
                         "--endpoints=y:2", "--insecure-skip-tls-verify=false", "--log-level",
                         "error", NULL) == 0,
              "%s", e.msg);
    CHECK_EQ_INT(o.workers, 4);
    CHECK_EQ_INT(o.n_endpoints, 2);
    if (o.n_endpoints == 2) {
        CHECK_EQ_STR(o.endpoints[0], "x:1");
        CHECK_EQ_STR(o.endpoints[1], "y:2");
    }
    CHECK(!o.insecure_skip_tls_verify);
    CHECK_EQ_STR(o.log_level, "error");
    CHECK_EQ_STR(o.listen_addr, "127.0.0.2:5000");
    CHECK_EQ_INT(o.n_advertise_client_urls, 2);
    proxy_options_free(&o);
    unlink(path);
}

static void test_yaml_empty_file(void)
{
    char path[256];
    CHECK(write_temp(path, sizeof path, "# only a comment\n") == 0);
    proxy_options o;
    es_error e = {0};
    CHECK_MSG(parse_args(&o, &e, "--config", path, NULL) == 0, "%s", e.msg);
    CHECK_EQ_STR(o.listen_addr, "127.0.0.1:23790");
    proxy_options_free(&o);
    unlink(path);
}

static void test_yaml_errors(void)
{
    static const struct {
        const char *yaml;
        const char *want; /* after "<path>:" */
    } cases[] = {
        {"workers: 2\nbogus: 1\n", "2: unknown setting \"bogus\""},
        {"workers: 2\nworkers: 3\n", "2: duplicate setting \"workers\" (first at line 1)"},
        {"listen-addr: [a, b]\n", "1: listen-addr: wrong type: want a string, got a sequence"},
        {"workers:\n  x: 1\n", "2: workers: wrong type: want an integer, got a mapping"},
        {"insecure-listen: \"true\"\n",
         "1: insecure-listen: wrong type: want true or false, got a quoted"},
        {"workers: '3'\n", "1: workers: wrong type: want an integer, got a quoted string"},
        {"\n\nworkers: many\n", "3: workers: invalid integer \"many\""},
        {"insecure-listen: yes\n", "1: insecure-listen: invalid boolean \"yes\""},
        {"workers:\n", "1: workers: needs a value"},
        {"dial-timeout: 5\n", "1: dial-timeout: missing or unknown unit"},
        {"endpoints:\n  - a:1\n  - [b]\n", "3: endpoints: wrong type: list items must be strings"},
        {"endpoints:\n  - a:1\n  -\n", "endpoints: wrong type: list items must be strings"},
        {"config: other.yaml\n", "1: \"config\" cannot be set inside a config file"},
        {"- workers\n", "1: the top level must be a mapping of flag names to values"},
        {"just text\n", "1: the top level must be a mapping"},
        {"workers: 2\n---\nworkers: 3\n", "3: more than one YAML document"},
        {"workers: [1\n", "YAML syntax error"},
        {"[a]: 1\n", "1: keys must be flag names"},
        {"metrics-addr: \"a\\0b:1\"\n", "1: metrics-addr: value contains a NUL byte"},
        {"workers: 65\n", "--workers must be between 1 and 64"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[256], want[512];
        CHECK(write_temp(path, sizeof path, cases[i].yaml) == 0);
        if (cases[i].want[0] >= '0' && cases[i].want[0] <= '9')
            snprintf(want, sizeof want, "%s:%s", path, cases[i].want);
        else
            snprintf(want, sizeof want, "%s", cases[i].want);
        proxy_options o;
        es_error e = {0};
        int rc = parse_args(&o, &e, "--config", path, NULL);
        CHECK_MSG(rc == -1, "case %zu accepted", i);
        CHECK_MSG(strstr(e.msg, want) != NULL, "case %zu: got \"%s\", want \"%s\"", i, e.msg, want);
        unlink(path);
    }
}

static void test_help_lists_every_option(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CHECK(f != NULL);
    if (!f)
        return;
    char *argv[] = {"proxy", "--workers=bad", "--help", NULL};
    proxy_options o;
    es_error e = {0};
    CHECK_EQ_INT(proxy_options_parse(&o, 3, argv, f, &e), 1);
    CHECK(o.listen_addr == NULL);
    fclose(f);
    CHECK(text && strstr(text, "usage: etcdseal proxy") != NULL);
    for (size_t i = 0; text && i < N_OPTIONS; i++) {
        char want[128];
        snprintf(want, sizeof want, "--%s %s", options[i].name, type_names[options[i].type]);
        CHECK_MSG(strstr(text, want) != NULL, "help lacks %s", want);
        if (options[i].def[0]) {
            snprintf(want, sizeof want, "(default \"%s\")", options[i].def);
            CHECK_MSG(strstr(text, want) != NULL, "help lacks %s", want);
        }
    }
    /* The defaults the help shows are the values a bare parse produces (one spot check per type).
     */
    CHECK(text && strstr(text, "(default \"127.0.0.1:23790\")") &&
          strstr(text, "(default \"10s\")"));
    free(text);

    char *argv2[] = {"proxy", "-h", NULL};
    FILE *devnull = fopen("/dev/null", "w");
    CHECK_EQ_INT(proxy_options_parse(&o, 2, argv2, devnull, &e), 1);
    if (devnull)
        fclose(devnull);
}

/* README.md's flag table must be exactly proxy_options_print_help(markdown). */
static void test_readme_flag_table_matches(void)
{
    FILE *f = fopen("README.md", "r");
    CHECK_MSG(f != NULL, "README.md not found (run from the repository root)");
    if (!f)
        return;
    static char readme[256 * 1024];
    size_t n = fread(readme, 1, sizeof readme - 1, f);
    readme[n] = '\0';
    fclose(f);
    const char *begin_mark = "<!-- proxy-flags:begin -->\n", *end_mark = "<!-- proxy-flags:end -->";
    char *b = strstr(readme, begin_mark);
    char *end = b ? strstr(b, end_mark) : NULL;
    CHECK_MSG(b && end, "README.md lacks the proxy-flags markers");
    if (!b || !end)
        return;
    b += strlen(begin_mark);
    *end = '\0';
    char *table = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&table, &len);
    if (!m)
        return;
    proxy_options_print_help(m, true);
    fclose(m);
    CHECK_MSG(strcmp(b, table) == 0, "README flag table is stale; replace it with:\n%s", table);
    free(table);
}

/* The shipped conf/etcdseal.yaml (what `make run` uses) parses and says what the README says. */
static void test_shipped_config(void)
{
    proxy_options o;
    es_error e = {0};
    CHECK_MSG(parse_args(&o, &e, "--config", "conf/etcdseal.yaml", NULL) == 0, "%s", e.msg);
    if (e.msg[0])
        return;
    CHECK_EQ_STR(o.listen_addr, "127.0.0.1:23790");
    CHECK_EQ_INT(o.n_endpoints, 1);
    if (o.n_endpoints == 1)
        CHECK_EQ_STR(o.endpoints[0], "127.0.0.1:23799");
    CHECK_EQ_STR(o.metrics_addr, "127.0.0.1:23789");
    CHECK_EQ_INT(o.workers, expected_workers());
    CHECK_EQ_STR(o.encryption_provider_config, "run/encryption-config.yaml");
    proxy_options_free(&o);
}

int main(int argc, char **argv)
{
    (void)argc;
    TEST_BEGIN(argv[0]);
    RUN(test_defaults);
    RUN(test_flag_forms);
    RUN(test_scalar_last_wins_and_empty_value);
    RUN(test_sizes);
    RUN(test_flag_errors);
    RUN(test_validation_errors);
    RUN(test_valid_combinations);
    RUN(test_addr_split);
    RUN(test_loopback);
    RUN(test_yaml_and_precedence);
    RUN(test_yaml_empty_file);
    RUN(test_yaml_errors);
    RUN(test_help_lists_every_option);
    RUN(test_readme_flag_table_matches);
    RUN(test_shipped_config);
    return TEST_EXIT();
}
