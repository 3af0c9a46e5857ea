/* admin_server_test.c - the admin HTTP server on 127.0.0.1:0, exercised with a tiny blocking
 * HTTP/1.1 client (bounded timeouts): /metrics, health endpoints with passing and failing
 * checks, 404/405/HEAD, address forms and errors, stop and restart without leaking fds. */
#include "admin/admin.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "base/metrics.h"
#include "testlib.h"

#define IO_TIMEOUT_MS 5000
#define MAX_RESPONSE (4 << 20)

typedef struct response {
    int status;
    char content_type[128];
    long content_length; /* -1 when absent */
    buf_t body;
} response;

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for fd to become ready for `events` within what is left of the deadline. */
static int wait_fd(int fd, short events, long deadline)
{
    long left = deadline - now_ms();
    if (left <= 0)
        return -1;
    struct pollfd p = {fd, events, 0};
    return poll(&p, 1, (int)left) == 1 ? 0 : -1;
}

/* Sends `method path` over a fresh connection to family/addr:port and reads to EOF.
 * Returns 0 with the parsed response, -1 on any I/O failure or timeout. */
static int http_do_at(int family, const char *ip, uint16_t port, const char *method,
                      const char *path, response *r)
{
    memset(r, 0, sizeof *r);
    r->content_length = -1;
    long deadline = now_ms() + IO_TIMEOUT_MS;
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_storage ss = {0};
    socklen_t sl;
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        inet_pton(AF_INET6, ip, &a->sin6_addr);
        sl = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        inet_pton(AF_INET, ip, &a->sin_addr);
        sl = sizeof *a;
    }
    int rc = -1;
    buf_t raw = BUF_INIT;
    if (connect(fd, (struct sockaddr *)&ss, sl) < 0 && errno != EINPROGRESS)
        goto out;
    if (wait_fd(fd, POLLOUT, deadline) < 0)
        goto out;
    int soerr = 0;
    socklen_t el = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &el) < 0 || soerr != 0)
        goto out;
    char req[512];
    int rl =
        snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                 method, path);
    for (int off = 0; off < rl;) {
        if (wait_fd(fd, POLLOUT, deadline) < 0)
            goto out;
        ssize_t n = send(fd, req + off, (size_t)(rl - off), MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN)
            goto out;
        off += n > 0 ? (int)n : 0;
    }
    for (;;) {
        if (wait_fd(fd, POLLIN, deadline) < 0 || raw.len > MAX_RESPONSE)
            goto out;
        char tmp[4096];
        ssize_t n = recv(fd, tmp, sizeof tmp, 0);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            goto out;
        }
        if (buf_append(&raw, tmp, (size_t)n) < 0)
            goto out;
    }
    if (buf_append_byte(&raw, 0) < 0)
        goto out;
    raw.len--;
    /* Status line, headers, body. */
    char *text = (char *)raw.data;
    char *hdr_end = strstr(text, "\r\n\r\n");
    if (!hdr_end || sscanf(text, "HTTP/1.%*d %d", &r->status) != 1)
        goto out;
    *hdr_end = 0;
    for (char *line = strstr(text, "\r\n"); line && line < hdr_end; line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, "Content-Type: ", 14) == 0)
            snprintf(r->content_type, sizeof r->content_type, "%.*s", (int)strcspn(line + 14, "\r"),
                     line + 14);
        else if (strncasecmp(line, "Content-Length: ", 16) == 0)
            r->content_length = strtol(line + 16, NULL, 10);
    }
    char *body = hdr_end + 4;
    if (buf_append(&r->body, body, raw.len - (size_t)(body - text)) < 0 ||
        buf_append_byte(&r->body, 0) < 0)
        goto out;
    r->body.len--;
    rc = 0;
out:
    buf_free(&raw);
    close(fd);
    return rc;
}

static int http_do(uint16_t port, const char *method, const char *path, response *r)
{
    return http_do_at(AF_INET, "127.0.0.1", port, method, path, r);
}

static const char *body_of(const response *r)
{
    return r->body.data ? (const char *)r->body.data : "";
}

static int count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* ------------------------------------------------------------------ checks */

typedef struct flag_check {
    _Atomic int healthy;
    _Atomic int calls;
    pthread_t caller;
    const char *reason;
} flag_check;

static int flag_check_fn(void *arg, buf_t *detail)
{
    flag_check *f = arg;
    f->caller = pthread_self();
    atomic_fetch_add(&f->calls, 1);
    if (atomic_load(&f->healthy))
        return 0;
    buf_appendf(detail, "%s", f->reason);
    return 1;
}

/* ------------------------------------------------------------------- tests */

static admin_server *start_local(void)
{
    es_error err = {0};
    admin_server *s = admin_server_new("127.0.0.1:0", &err);
    CHECK_MSG(s != NULL, "%s", err.msg);
    if (!s)
        return NULL;
    CHECK(admin_server_port(s) != 0);
    CHECK_MSG(admin_server_start(s, &err) == 0, "%s", err.msg);
    return s;
}

static void test_metrics_endpoint(void)
{
    metrics_reset_for_tests();
    metrics_counter *c = metrics_counter_get("t_admin_scrapes_total", "Scrapes.", "who=\"test\"");
    metrics_counter_add(c, 41);
    admin_server *s = start_local();
    if (!s)
        return;
    response r;
    CHECK_EQ_INT(http_do(admin_server_port(s), "GET", "/metrics", &r), 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_MSG(strncmp(r.content_type, "text/plain; version=0.0.4", 25) == 0, "type %s",
              r.content_type);
    CHECK(strstr(body_of(&r), "# TYPE t_admin_scrapes_total counter\n") != NULL);
    CHECK(strstr(body_of(&r), "t_admin_scrapes_total{who=\"test\"} 41\n") != NULL);
    CHECK_EQ_INT(r.content_length, (long)r.body.len);
    buf_free(&r.body);
    /* A second scrape sees updates made meanwhile by this (non-admin) thread. */
    metrics_counter_add(c, 1);
    CHECK_EQ_INT(http_do(admin_server_port(s), "GET", "/metrics", &r), 0);
    CHECK(strstr(body_of(&r), "t_admin_scrapes_total{who=\"test\"} 42\n") != NULL);
    buf_free(&r.body);
    admin_server_stop(s);
    metrics_reset_for_tests();
}

static void test_builtin_health_without_checks(void)
{
    admin_server *s = start_local();
    if (!s)
        return;
    const char *paths[] = {"/healthz", "/readyz", "/livez"};
    response r;
    for (size_t i = 0; i < 3; i++) {
        CHECK_EQ_INT(http_do(admin_server_port(s), "GET", paths[i], &r), 0);
        CHECK_EQ_INT(r.status, 200);
        CHECK_EQ_STR(body_of(&r), "ok");
        CHECK(strncmp(r.content_type, "text/plain", 10) == 0);
        buf_free(&r.body);
    }
    CHECK_EQ_INT(http_do(admin_server_port(s), "GET", "/healthz?verbose", &r), 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_STR(body_of(&r), "healthz check passed\n");
    buf_free(&r.body);
    admin_server_stop(s);
}

static void test_checks_pass_and_fail(void)
{
    admin_server *s = start_local();
    if (!s)
        return;
    flag_check upstream = {.healthy = 1, .reason = "no upstream member\nreachable"};
    flag_check kms = {.healthy = 1, .reason = "kms plugin unreachable"};
    flag_check prov = {.healthy = 0, .reason = "provider kms-1: Status: timeout"};
    CHECK_EQ_INT(admin_server_add_check(s, "/readyz", "upstream", flag_check_fn, &upstream), 0);
    CHECK_EQ_INT(admin_server_add_check(s, "/readyz", "kms", flag_check_fn, &kms), 0);
    CHECK_EQ_INT(
        admin_server_add_check(s, "/healthz/kms-providers", "kms-provider-0", flag_check_fn, &prov),
        0);
    CHECK_EQ_INT(admin_server_add_check(s, "/metrics", "x", flag_check_fn, &prov), -1);
    CHECK_EQ_INT(admin_server_add_check(s, "readyz", "x", flag_check_fn, &prov), -1);
    CHECK_EQ_INT(admin_server_add_check(s, "/readyz", "x", NULL, NULL), -1);
    uint16_t port = admin_server_port(s);
    response r;

    CHECK_EQ_INT(http_do(port, "GET", "/readyz", &r), 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_STR(body_of(&r), "ok");
    buf_free(&r.body);
    CHECK(!pthread_equal(upstream.caller, pthread_self())); /* ran on the admin thread */

    CHECK_EQ_INT(http_do(port, "GET", "/readyz?verbose=1", &r), 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_STR(body_of(&r), "[+]upstream ok\n[+]kms ok\nreadyz check passed\n");
    buf_free(&r.body);

    atomic_store(&upstream.healthy, 0);
    CHECK_EQ_INT(http_do(port, "GET", "/readyz", &r), 0);
    CHECK_EQ_INT(r.status, 503);
    /* The reason is kept on one line. */
    CHECK_EQ_STR(
        body_of(&r),
        "[-]upstream failed: no upstream member reachable\n[+]kms ok\nreadyz check failed\n");
    buf_free(&r.body);

    CHECK_EQ_INT(http_do(port, "GET", "/readyz?exclude=upstream", &r), 0);
    CHECK_EQ_INT(r.status, 200);
    buf_free(&r.body);
    CHECK_EQ_INT(http_do(port, "GET", "/readyz?exclude=upstream&verbose", &r), 0);
    CHECK_EQ_STR(body_of(&r), "[+]upstream excluded: ok\n[+]kms ok\nreadyz check passed\n");
    buf_free(&r.body);

    /* /healthz has no checks of its own; the sub-endpoint fails independently. */
    CHECK_EQ_INT(http_do(port, "GET", "/healthz", &r), 0);
    CHECK_EQ_INT(r.status, 200);
    buf_free(&r.body);
    CHECK_EQ_INT(http_do(port, "GET", "/healthz/kms-providers", &r), 0);
    CHECK_EQ_INT(r.status, 503);
    CHECK(strstr(body_of(&r), "[-]kms-provider-0 failed: provider kms-1: Status: timeout\n") !=
          NULL);
    CHECK(strstr(body_of(&r), "healthz/kms-providers check failed\n") != NULL);
    buf_free(&r.body);

    /* Checks added after start take effect. */
    flag_check late = {.healthy = 0, .reason = "late"};
    CHECK_EQ_INT(admin_server_add_check(s, "/livez", "late", flag_check_fn, &late), 0);
    CHECK_EQ_INT(http_do(port, "GET", "/livez", &r), 0);
    CHECK_EQ_INT(r.status, 503);
    buf_free(&r.body);
    atomic_store(&upstream.healthy, 1);
    atomic_store(&late.healthy, 1);
    CHECK_EQ_INT(http_do(port, "GET", "/livez", &r), 0);
    CHECK_EQ_INT(r.status, 200);
    buf_free(&r.body);
    CHECK_EQ_INT(http_do(port, "GET", "/readyz", &r), 0);
    CHECK_EQ_INT(r.status, 200);
    buf_free(&r.body);
    CHECK_EQ_INT(atomic_load(&upstream.calls), 4); /* excluded means not called */
    admin_server_stop(s);
}

static void test_not_found_methods_head(void)
{
    admin_server *s = start_local();
    if (!s)
        return;
    uint16_t port = admin_server_port(s);
    response r;
    const char *missing[] = {"/", "/nope", "/metrics/", "/healthz/", "/readyzz"};
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++) {
        CHECK_EQ_INT(http_do(port, "GET", missing[i], &r), 0);
        CHECK_MSG(r.status == 404, "%s -> %d", missing[i], r.status);
        buf_free(&r.body);
    }
    CHECK_EQ_INT(http_do(port, "POST", "/metrics", &r), 0);
    CHECK_EQ_INT(r.status, 405);
    buf_free(&r.body);
    CHECK_EQ_INT(http_do(port, "DELETE", "/healthz", &r), 0);
    CHECK_EQ_INT(r.status, 405);
    buf_free(&r.body);
    CHECK_EQ_INT(http_do(port, "HEAD", "/healthz", &r), 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.body.len, 0);
    CHECK_EQ_INT(r.content_length, 2); /* the length of "ok" */
    buf_free(&r.body);
    CHECK_EQ_INT(http_do(port, "HEAD", "/metrics", &r), 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.body.len, 0);
    CHECK(strncmp(r.content_type, "text/plain; version=0.0.4", 25) == 0);
    buf_free(&r.body);
    /* Still serving after all that. */
    CHECK_EQ_INT(http_do(port, "GET", "/healthz", &r), 0);
    CHECK_EQ_INT(r.status, 200);
    buf_free(&r.body);
    admin_server_stop(s);
}

static void test_addresses(void)
{
    es_error err = {0};
    /* Accepted forms. */
    const char *good[] = {"http://127.0.0.1:0", "127.0.0.1:0/", "HTTP://127.0.0.1:0"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        admin_server *s = admin_server_new(good[i], &err);
        CHECK_MSG(s != NULL, "%s: %s", good[i], err.msg);
        admin_server_stop(s); /* never started: frees */
    }
    /* Rejected forms: the message names the address. */
    const char *bad[] = {"127.0.0.1",    "127.0.0.1:",      "127.0.0.1:http", "127.0.0.1:65536",
                         "::1:80",       "[::1:80",         "[::1]80",        "https://127.0.0.1:1",
                         "127.0.0.1:-1", "127.0.0.1:123456"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&err, 0, sizeof err);
        admin_server *s = admin_server_new(bad[i], &err);
        CHECK_MSG(s == NULL, "%s accepted", bad[i]);
        admin_server_stop(s);
        CHECK_MSG(strstr(err.msg, bad[i]) != NULL && err.code == EINVAL, "%s: %s (code %d)", bad[i],
                  err.msg, err.code);
    }
    CHECK(admin_server_new(NULL, &err) == NULL);

    /* Port in use: reported by new(), before start. */
    admin_server *a = start_local();
    if (!a)
        return;
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)admin_server_port(a));
    memset(&err, 0, sizeof err);
    admin_server *b = admin_server_new(addr, &err);
    CHECK(b == NULL);
    CHECK_EQ_INT(err.code, EADDRINUSE);
    CHECK_MSG(strstr(err.msg, addr) && strstr(err.msg, "in use"), "%s", err.msg);
    admin_server_stop(b);
    admin_server_stop(a);

    /* IPv6 loopback, when the host has it. */
    int probe = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 lo = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool v6 = probe >= 0 && bind(probe, (struct sockaddr *)&lo, sizeof lo) == 0;
    if (probe >= 0)
        close(probe);
    if (!v6) {
        fprintf(stderr, "  no IPv6 loopback: [::1] case not run\n");
        return;
    }
    admin_server *s6 = admin_server_new("[::1]:0", &err);
    CHECK_MSG(s6 != NULL, "%s", err.msg);
    if (!s6)
        return;
    CHECK_EQ_INT(admin_server_start(s6, &err), 0);
    response r;
    CHECK_EQ_INT(http_do_at(AF_INET6, "::1", admin_server_port(s6), "GET", "/healthz", &r), 0);
    CHECK_EQ_INT(r.status, 200);
    buf_free(&r.body);
    admin_server_stop(s6);
}

static void test_stop_and_restart(void)
{
    int fds_before = count_open_fds();
    admin_server *s = start_local();
    if (!s)
        return;
    uint16_t port = admin_server_port(s);
    response r;
    CHECK_EQ_INT(http_do(port, "GET", "/healthz", &r), 0);
    buf_free(&r.body);
    es_error err = {0};
    CHECK_EQ_INT(admin_server_start(s, &err), -1); /* already running */
    CHECK_EQ_INT(err.code, EALREADY);
    admin_server_stop(s);
    /* The port is free again at once, and nothing answers there meanwhile. */
    CHECK_EQ_INT(http_do(port, "GET", "/healthz", &r), -1);
    buf_free(&r.body);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)port);
    for (int round = 0; round < 3; round++) {
        s = admin_server_new(addr, &err);
        CHECK_MSG(s != NULL, "round %d: %s", round, err.msg);
        if (!s)
            return;
        CHECK_EQ_INT(admin_server_port(s), port);
        CHECK_EQ_INT(admin_server_start(s, &err), 0);
        CHECK_EQ_INT(http_do(port, "GET", "/readyz", &r), 0);
        CHECK_EQ_INT(r.status, 200);
        buf_free(&r.body);
        admin_server_stop(s);
    }
    /* Stop with a client connection still open and idle. */
    s = start_local();
    if (!s)
        return;
    int idle = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(admin_server_port(s))};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    CHECK_EQ_INT(connect(idle, (struct sockaddr *)&a, sizeof a), 0);
    CHECK_EQ_INT(http_do(admin_server_port(s), "GET", "/healthz", &r), 0); /* accepted idle too */
    buf_free(&r.body);
    long t0 = now_ms();
    admin_server_stop(s);
    CHECK(now_ms() - t0 < 2000);
    close(idle);
    CHECK_EQ_INT(count_open_fds(), fds_before);
}

/* Scrapes from several client threads while a worker thread updates counters. */
typedef struct scraper {
    uint16_t port;
    int ok;
} scraper;

static void *scrape_loop(void *p)
{
    scraper *sc = p;
    for (int i = 0; i < 25; i++) {
        response r;
        if (http_do(sc->port, "GET", "/metrics", &r) == 0 && r.status == 200 &&
            strstr(body_of(&r), "t_admin_busy_total "))
            sc->ok++;
        buf_free(&r.body);
    }
    return NULL;
}

static void test_concurrent_scrapes(void)
{
    metrics_reset_for_tests();
    metrics_counter *c = metrics_counter_get("t_admin_busy_total", "Busy.", "");
    admin_server *s = start_local();
    if (!s)
        return;
    scraper sc[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        sc[i] = (scraper){admin_server_port(s), 0};
        CHECK_EQ_INT(pthread_create(&th[i], NULL, scrape_loop, &sc[i]), 0);
    }
    metrics_set_shard(5);
    for (int i = 0; i < 200000; i++)
        metrics_counter_add(c, 1);
    metrics_set_shard(0);
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_INT(sc[i].ok, 25);
    }
    response r;
    CHECK_EQ_INT(http_do(admin_server_port(s), "GET", "/metrics", &r), 0);
    CHECK(strstr(body_of(&r), "t_admin_busy_total 200000\n") != NULL);
    buf_free(&r.body);
    admin_server_stop(s);
    metrics_reset_for_tests();
}

int main(int argc, char **argv)
{
    (void)argc;
    TEST_BEGIN(argv[0]);
    RUN(test_metrics_endpoint);
    RUN(test_builtin_health_without_checks);
    RUN(test_checks_pass_and_fail);
    RUN(test_not_found_methods_head);
    RUN(test_addresses);
    RUN(test_stop_and_restart);
    RUN(test_concurrent_scrapes);
    return TEST_EXIT();
}
