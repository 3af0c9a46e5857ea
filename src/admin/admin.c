/* admin.c - the admin HTTP server (see admin.h).
 *
 * Lifecycle: new() parses the address, binds and listens on our own socket (so errors carry the
 * errno and the address), creates a private event_base + evhttp and hands the socket to evhttp.
 * start() spawns the admin thread with every signal blocked (signals belong to the main thread)
 * and runs the base there. stop() writes one byte to a wake pipe; its event breaks the loop on
 * the admin thread, then the caller joins and frees. No libevent threading support is needed:
 * after start() only the admin thread touches the base.
 *
 * Routing is one generic callback: /metrics, then registered endpoints, then the built-in
 * health paths. The check table is guarded by a mutex because checks may be added after start;
 * requests hold it while running checks (cheap by contract). One scratch buffer, used only on
 * the admin thread, holds each response body.
 */
#include "admin/admin.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <netinet/in.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "base/log.h"
#include "base/metrics.h"

#define ADMIN_TIMEOUT_SECS 10
#define ADMIN_MAX_HEADERS 8192
#define ADMIN_MAX_BODY 1024
#define ADMIN_DETAIL_MAX 256

typedef struct admin_check {
    char *name;
    admin_check_fn fn;
    void *arg;
} admin_check;

typedef struct admin_endpoint {
    char *path;
    admin_check *checks;
    size_t n_checks;
} admin_endpoint;

struct admin_server {
    char *addr; /* as given, for messages */
    uint16_t port;
    struct event_base *base;
    struct evhttp *http;
    struct event *wake_ev;
    int wake_fds[2];
    pthread_t thread;
    bool running;

    pthread_mutex_t mu; /* guards endpoints */
    admin_endpoint *endpoints;
    size_t n_endpoints;

    buf_t body;   /* admin thread only */
    buf_t detail; /* admin thread only */
};

static const char *const builtin_health[] = {"/healthz", "/livez", "/readyz"};

/* ------------------------------------------------------------------ address */

/* Splits `listen_addr` into host (empty = any) and port text, in caller buffers. */
static int parse_addr(const char *in, char *host, size_t hcap, char *port, size_t pcap,
                      es_error *err)
{
    const char *s = in;
    if (strncasecmp(s, "http://", 7) == 0)
        s += 7;
    else if (strstr(s, "://"))
        return es_error_set(err, EINVAL, "admin address %s: only http:// is supported", in);
    size_t len = strlen(s);
    if (len && s[len - 1] == '/')
        len--;
    const char *colon;
    const char *h = s;
    size_t hl;
    if (len && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (!close || close + 1 >= s + len || close[1] != ':')
            return es_error_set(err, EINVAL, "admin address %s: want [ipv6]:port", in);
        h = s + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = NULL;
        for (const char *p = s; p < s + len; p++)
            if (*p == ':')
                colon = p;
        if (!colon)
            return es_error_set(err, EINVAL, "admin address %s: want host:port", in);
        hl = (size_t)(colon - s);
        if (memchr(s, ':', hl))
            return es_error_set(
                err, EINVAL, "admin address %s: put an IPv6 address in brackets: [addr]:port", in);
    }
    const char *pt = colon + 1;
    size_t pl = (size_t)(s + len - pt);
    unsigned long pv = 0;
    bool ok = pl > 0 && pl <= 5;
    for (size_t i = 0; ok && i < pl; i++) {
        ok = pt[i] >= '0' && pt[i] <= '9';
        pv = pv * 10 + (unsigned long)(pt[i] - '0');
    }
    if (!ok || pv > 65535)
        return es_error_set(err, EINVAL, "admin address %s: bad port", in);
    if (hl >= hcap || pl >= pcap)
        return es_error_set(err, EINVAL, "admin address %s: too long", in);
    memcpy(host, h, hl);
    host[hl] = '\0';
    memcpy(port, pt, pl);
    port[pl] = '\0';
    return 0;
}

/* Binds and listens; returns the non-blocking socket or -1. */
static int listen_on(const char *addr, uint16_t *port_out, es_error *err)
{
    char host[256], port[8];
    if (parse_addr(addr, host, sizeof host, port, sizeof port, err) < 0)
        return -1;
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
    if (rc != 0)
        return es_error_set(err, rc == EAI_SYSTEM ? errno : EINVAL, "admin address %s: %s", addr,
                            gai_strerror(rc));
    int fd = -1, last_errno = 0;
    const char *step = "socket";
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            step = "socket";
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 64) < 0) {
            last_errno = errno;
            step = "bind";
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        return es_error_set(err, last_errno, "admin address %s: %s: %s", addr, step,
                            strerror(last_errno));
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
        int e = errno;
        close(fd);
        return es_error_set(err, e, "admin address %s: getsockname: %s", addr, strerror(e));
    }
    *port_out = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                         : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

/* ------------------------------------------------------------------ responses */

static void reply(struct evhttp_request *req, int code, const char *reason,
                  const char *content_type, const void *body, size_t len)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", content_type);
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(h, "Cache-Control", "no-store");
    if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
        /* libevent would send the body on HEAD: announce its length, send none. */
        char cl[24];
        snprintf(cl, sizeof cl, "%zu", len);
        evhttp_add_header(h, "Content-Length", cl);
        evhttp_send_reply(req, code, reason, NULL);
        return;
    }
    struct evbuffer *out = evhttp_request_get_output_buffer(req);
    if (len && evbuffer_add(out, body, len) < 0) {
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
        return;
    }
    evhttp_send_reply(req, code, reason, NULL);
}

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *text)
{
    reply(req, code, reason, "text/plain; charset=utf-8", text, strlen(text));
}

static void serve_metrics(admin_server *s, struct evhttp_request *req)
{
    buf_reset(&s->body);
    if (metrics_render(&s->body) < 0) {
        reply_text(req, HTTP_INTERNAL, "Internal Server Error", "metrics render failed\n");
        return;
    }
    reply(req, HTTP_OK, "OK", "text/plain; version=0.0.4; charset=utf-8", s->body.data,
          s->body.len);
}

/* True when the query has `key`, with any value or none (`?verbose`, `?verbose=1`). */
static bool query_has(const char *query, const char *key)
{
    size_t kl = strlen(key);
    for (const char *p = query; p && *p;) {
        const char *end = strchr(p, '&');
        size_t l = end ? (size_t)(end - p) : strlen(p);
        if (l >= kl && strncmp(p, key, kl) == 0 && (l == kl || p[kl] == '='))
            return true;
        p = end ? end + 1 : NULL;
    }
    return false;
}

/* True when the query has `exclude=<name>`. */
static bool query_excludes(const char *query, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = query; p && *p;) {
        const char *end = strchr(p, '&');
        size_t l = end ? (size_t)(end - p) : strlen(p);
        if (l == 8 + nl && strncmp(p, "exclude=", 8) == 0 && strncmp(p + 8, name, nl) == 0)
            return true;
        p = end ? end + 1 : NULL;
    }
    return false;
}

/* Appends `detail` to body on one line: control characters become spaces, length bounded. */
static int append_reason(buf_t *body, const buf_t *detail)
{
    if (detail->len == 0)
        return buf_appendf(body, "unhealthy");
    size_t n = detail->len < ADMIN_DETAIL_MAX ? detail->len : ADMIN_DETAIL_MAX;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = detail->data[i];
        if (buf_append_byte(body, c < 0x20 || c == 0x7f ? ' ' : c) < 0)
            return -1;
    }
    return 0;
}

static void serve_health(admin_server *s, struct evhttp_request *req, const char *path,
                         const admin_endpoint *ep, const char *query)
{
    bool verbose = query_has(query, "verbose");
    bool failed = false;
    int rc = 0;
    buf_reset(&s->body);
    for (size_t i = 0; ep && i < ep->n_checks && rc == 0; i++) {
        const admin_check *c = &ep->checks[i];
        if (query_excludes(query, c->name)) {
            rc = buf_appendf(&s->body, "[+]%s excluded: ok\n", c->name);
            continue;
        }
        buf_reset(&s->detail);
        if (c->fn(c->arg, &s->detail) == 0) {
            rc = buf_appendf(&s->body, "[+]%s ok\n", c->name);
        } else {
            failed = true;
            rc = buf_appendf(&s->body, "[-]%s failed: ", c->name);
            if (rc == 0)
                rc = append_reason(&s->body, &s->detail);
            if (rc == 0)
                rc = buf_append_byte(&s->body, '\n');
        }
    }
    if (rc == 0)
        rc = buf_appendf(&s->body, "%s check %s\n", path + 1, failed ? "failed" : "passed");
    if (rc < 0) {
        reply_text(req, HTTP_INTERNAL, "Internal Server Error", "out of memory\n");
        return;
    }
    if (failed)
        reply(req, HTTP_SERVUNAVAIL, "Service Unavailable", "text/plain; charset=utf-8",
              s->body.data, s->body.len);
    else if (verbose)
        reply(req, HTTP_OK, "OK", "text/plain; charset=utf-8", s->body.data, s->body.len);
    else
        reply_text(req, HTTP_OK, "OK", "ok");
}

static const admin_endpoint *endpoint_find(const admin_server *s, const char *path)
{
    for (size_t i = 0; i < s->n_endpoints; i++)
        if (strcmp(s->endpoints[i].path, path) == 0)
            return &s->endpoints[i];
    return NULL;
}

static void on_request(struct evhttp_request *req, void *arg)
{
    admin_server *s = arg;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        reply_text(req, 405, "Method Not Allowed", "method not allowed\n");
        return;
    }
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
    if (!path || !*path) {
        reply_text(req, HTTP_NOTFOUND, "Not Found", "404 page not found\n");
        return;
    }
    if (strcmp(path, "/metrics") == 0) {
        serve_metrics(s, req);
        return;
    }
    pthread_mutex_lock(&s->mu);
    const admin_endpoint *ep = endpoint_find(s, path);
    bool builtin = false;
    for (size_t i = 0; i < sizeof builtin_health / sizeof builtin_health[0]; i++)
        builtin |= strcmp(path, builtin_health[i]) == 0;
    if (ep || builtin)
        serve_health(s, req, path, ep, query);
    pthread_mutex_unlock(&s->mu);
    if (!ep && !builtin)
        reply_text(req, HTTP_NOTFOUND, "Not Found", "404 page not found\n");
}

/* ------------------------------------------------------------------ lifecycle */

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    admin_server *s = arg;
    event_base_loopbreak(s->base);
}

static void free_server(admin_server *s)
{
    if (s->wake_ev)
        event_free(s->wake_ev);
    if (s->http)
        evhttp_free(s->http); /* closes the listening socket and open connections */
    if (s->base)
        event_base_free(s->base);
    for (int i = 0; i < 2; i++)
        if (s->wake_fds[i] >= 0)
            close(s->wake_fds[i]);
    for (size_t i = 0; i < s->n_endpoints; i++) {
        for (size_t j = 0; j < s->endpoints[i].n_checks; j++)
            free(s->endpoints[i].checks[j].name);
        free(s->endpoints[i].checks);
        free(s->endpoints[i].path);
    }
    free(s->endpoints);
    pthread_mutex_destroy(&s->mu);
    buf_free(&s->body);
    buf_free(&s->detail);
    free(s->addr);
    free(s);
}

admin_server *admin_server_new(const char *listen_addr, es_error *err)
{
    if (!listen_addr) {
        es_error_set(err, EINVAL, "admin address: missing");
        return NULL;
    }
    admin_server *s = calloc(1, sizeof *s);
    if (!s) {
        es_error_set(err, ENOMEM, "admin server: out of memory");
        return NULL;
    }
    s->wake_fds[0] = s->wake_fds[1] = -1;
    pthread_mutex_init(&s->mu, NULL);
    s->addr = strdup(listen_addr);
    int fd = listen_on(listen_addr, &s->port, err);
    if (fd < 0) {
        free_server(s);
        return NULL;
    }
    const char *what = NULL;
    if (!s->addr)
        what = "out of memory";
    else if (!(s->base = event_base_new()))
        what = "event_base_new failed";
    else if (!(s->http = evhttp_new(s->base)))
        what = "evhttp_new failed";
    else if (!evhttp_accept_socket_with_handle(s->http, fd))
        what = "evhttp_accept_socket failed";
    else
        fd = -1; /* owned by evhttp now */
    if (!what) {
        if (pipe2(s->wake_fds, O_CLOEXEC | O_NONBLOCK) < 0)
            what = "pipe2 failed";
        else if (!(s->wake_ev = event_new(s->base, s->wake_fds[0], EV_READ, on_wake, s)) ||
                 event_add(s->wake_ev, NULL) < 0)
            what = "wake event failed";
    }
    if (what) {
        es_error_set(err, ENOMEM, "admin address %s: %s", listen_addr, what);
        if (fd >= 0)
            close(fd);
        free_server(s);
        return NULL;
    }
    evhttp_set_gencb(s->http, on_request, s);
    evhttp_set_timeout(s->http, ADMIN_TIMEOUT_SECS);
    evhttp_set_max_headers_size(s->http, ADMIN_MAX_HEADERS);
    evhttp_set_max_body_size(s->http, ADMIN_MAX_BODY);
    return s;
}

int admin_server_add_check(admin_server *s, const char *endpoint, const char *check_name,
                           admin_check_fn fn, void *arg)
{
    if (!s || !endpoint || endpoint[0] != '/' || !check_name || !*check_name || !fn ||
        strcmp(endpoint, "/metrics") == 0)
        return -1;
    int rc = -1;
    pthread_mutex_lock(&s->mu);
    admin_endpoint *ep = (admin_endpoint *)endpoint_find(s, endpoint);
    if (!ep) {
        admin_endpoint *grown = realloc(s->endpoints, (s->n_endpoints + 1) * sizeof *grown);
        if (!grown)
            goto out;
        s->endpoints = grown;
        ep = &s->endpoints[s->n_endpoints];
        *ep = (admin_endpoint){0};
        if (!(ep->path = strdup(endpoint)))
            goto out;
        s->n_endpoints++;
    }
    admin_check *checks = realloc(ep->checks, (ep->n_checks + 1) * sizeof *checks);
    if (!checks)
        goto out;
    ep->checks = checks;
    admin_check *c = &checks[ep->n_checks];
    if (!(c->name = strdup(check_name)))
        goto out;
    c->fn = fn;
    c->arg = arg;
    ep->n_checks++;
    rc = 0;
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static void *admin_thread(void *arg)
{
    admin_server *s = arg;
    event_base_dispatch(s->base);
    return NULL;
}

int admin_server_start(admin_server *s, es_error *err)
{
    if (!s)
        return es_error_set(err, EINVAL, "admin server: missing");
    if (s->running)
        return es_error_set(err, EALREADY, "admin server %s: already started", s->addr);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* the thread inherits a full mask */
    int rc = pthread_create(&s->thread, NULL, admin_thread, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return es_error_set(err, rc, "admin server %s: thread: %s", s->addr, strerror(rc));
    pthread_setname_np(s->thread, "etcdseal-admin");
    s->running = true;
    log_info("admin server listening|addr=%s port=%u", s->addr, (unsigned)s->port);
    return 0;
}

void admin_server_stop(admin_server *s)
{
    if (!s)
        return;
    if (s->running) {
        ssize_t n;
        do
            n = write(s->wake_fds[1], "x", 1);
        while (n < 0 && errno == EINTR);
        pthread_join(s->thread, NULL);
        s->running = false;
    }
    free_server(s);
}

uint16_t admin_server_port(const admin_server *s)
{
    return s ? s->port : 0;
}
