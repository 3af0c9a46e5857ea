/* proxy.c - `etcdseal proxy`: parse the settings, build the shared runtime (TLS contexts,
 * endpoints), start the admin server and the workers, then wait for signals:
 * SIGTERM/SIGINT stop accepting, GOAWAY clients, let unary calls finish (--shutdown-timeout)
 * and exit 0. Signals are blocked in every thread and taken synchronously here (sigwait), so no
 * handler runs inside a worker. */
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/thread.h>

#include "admin/admin.h"
#include "base/log.h"
#include "base/metrics.h"
#include "cmd/commands.h"
#include "cmd/proxy_options.h"
#include "cmd/proxy_reload.h"
#include "crypto/kms.h"
#include "policy/access_policy.h"
#include "policy/encryption.h"
#include "proxy/endpoint.h"
#include "proxy/tls.h"
#include "proxy/worker.h"

static int check_upstream_ready(void *arg, buf_t *detail)
{
    proxy *p = arg;
    if (proxy_upstream_ready(p))
        return 0;
    buf_appendf(detail, "no connection to any etcd endpoint");
    return 1;
}

/* KMS plugin health, as kube-apiserver serves it: all providers, or one by index. */
static int check_kms_providers(void *arg, buf_t *detail)
{
    (void)arg;
    crypto_kms_health h[32];
    size_t n = crypto_kms_health_list(h, 32);
    int bad = 0;
    for (size_t i = 0; i < n && i < 32; i++)
        if (!h[i].healthy) {
            buf_appendf(detail, "%s%s: %s", bad ? "; " : "", h[i].name, h[i].last_error);
            bad = 1;
        }
    return bad;
}

static int check_kms_provider(void *arg, buf_t *detail)
{
    size_t index = (size_t)(uintptr_t)arg;
    crypto_kms_health h[32];
    size_t n = crypto_kms_health_list(h, 32);
    if (index >= n || index >= 32) {
        buf_appendf(detail, "no KMS provider %zu", index);
        return 1;
    }
    if (h[index].healthy)
        return 0;
    buf_appendf(detail, "%s: %s", h[index].name, h[index].last_error);
    return 1;
}

static void add_kms_checks(admin_server *admin)
{
    size_t n = crypto_kms_health_list(NULL, 0);
    if (n == 0)
        return;
    admin_server_add_check(admin, "/healthz/kms-providers", "kms-providers", check_kms_providers,
                           NULL);
    admin_server_add_check(admin, "/healthz", "kms-providers", check_kms_providers, NULL);
    for (size_t i = 0; i < n && i < 32; i++) {
        char path[64], name[64];
        snprintf(path, sizeof path, "/healthz/kms-provider-%zu", i);
        snprintf(name, sizeof name, "kms-provider-%zu", i);
        admin_server_add_check(admin, path, name, check_kms_provider, (void *)(uintptr_t)i);
    }
}

static int build_runtime(const proxy_options *o, proxy_runtime *rt, es_error *err)
{
    memset(rt, 0, sizeof *rt);
    uint16_t port;
    if (proxy_addr_split(o->listen_addr, rt->listen_host, sizeof rt->listen_host, &port, err) < 0)
        return es_error_prefix(err, "--listen-addr");
    snprintf(rt->listen_port, sizeof rt->listen_port, "%u", port);
    if (o->cert_file[0]) {
        SSL_CTX *tls = tls_server_ctx_new(o->cert_file, o->key_file, o->trusted_ca_file,
                                          o->client_cert_auth, o->client_crl_file, err);
        if (!tls)
            return -1;
        atomic_store(&rt->server_tls, tls);
    }
    bool client_tls = o->cacert[0] || o->cert[0] || o->insecure_skip_tls_verify;
    rt->endpoints = calloc(o->n_endpoints, sizeof *rt->endpoints);
    if (!rt->endpoints)
        return es_error_set(err, 0, "out of memory");
    bool any_tls = false;
    for (size_t i = 0; i < o->n_endpoints; i++) {
        if (endpoint_parse(o->endpoints[i], client_tls, &rt->endpoints[i], err) < 0)
            return es_error_prefix(err, "--endpoints");
        any_tls |= rt->endpoints[i].tls;
    }
    rt->n_endpoints = o->n_endpoints;
    if (any_tls) {
        rt->client_tls =
            tls_client_ctx_new(o->cacert, o->cert, o->key, o->insecure_skip_tls_verify, err);
        if (!rt->client_tls)
            return -1;
        rt->upstream_verify = !o->insecure_skip_tls_verify;
    }
    rt->advertise_urls = (const char *const *)o->advertise_client_urls;
    rt->n_advertise_urls = o->n_advertise_client_urls;
    rt->workers = o->workers;
    rt->shutdown_timeout = o->shutdown_timeout;
    rt->dial_timeout = o->dial_timeout;
    rt->keepalive_time = o->keepalive_time;
    rt->keepalive_timeout = o->keepalive_timeout;
    rt->max_message_bytes = o->max_message_bytes;
    rt->max_header_list_bytes = o->max_header_list_bytes;
    rt->max_concurrent_streams = o->max_concurrent_streams;
    rt->max_connections_per_worker = o->max_connections_per_worker;
    rt->map_identity_to_etcd_user = o->map_identity_to_etcd_user;
    return 0;
}

static void free_runtime(proxy_runtime *rt)
{
    SSL_CTX *tls = atomic_load(&rt->server_tls);
    if (tls)
        SSL_CTX_free(tls);
    if (rt->client_tls)
        SSL_CTX_free(rt->client_tls);
    policy_encryption_unref(atomic_load(&rt->policy));
    access_policy_unref(atomic_load(&rt->access));
    free(rt->endpoints);
}

/* The main thread's loop: signals (through a signalfd, so no handler runs anywhere), file
 * changes for automatic reload, and a 1 s tick that frees retired configurations. Returns when
 * SIGTERM/SIGINT arrives (0) or on a setup error (-1). */
static int wait_for_signals(const sigset_t *sigs, proxy_reloader *reloader, double timeout_s)
{
    int sfd = signalfd(-1, sigs, SFD_CLOEXEC);
    if (sfd < 0)
        return -1;
    for (;;) {
        struct pollfd fds[2] = {{sfd, POLLIN, 0}, {proxy_reloader_watch_fd(reloader), POLLIN, 0}};
        int n = poll(fds, fds[1].fd >= 0 ? 2 : 1, 1000);
        proxy_reloader_tick(reloader);
        if (n <= 0)
            continue;
        if (fds[1].fd >= 0 && (fds[1].revents & POLLIN))
            proxy_reloader_on_watch(reloader);
        if (!(fds[0].revents & POLLIN))
            continue;
        struct signalfd_siginfo si;
        if (read(sfd, &si, sizeof si) != (ssize_t)sizeof si)
            continue;
        if (si.ssi_signo == SIGHUP) {
            log_info("SIGHUP received: reloading the encryption configuration, access policy "
                     "and certificates");
            proxy_reloader_reload_all(reloader);
            continue;
        }
        log_info("shutting down|signal=%s timeout_s=%.1f",
                 si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT", timeout_s);
        close(sfd);
        return 0;
    }
}

int cmd_proxy(int argc, char **argv)
{
    proxy_options o = {0};
    es_error err = {0};
    int rc = proxy_options_parse(&o, argc, argv, stdout, &err);
    if (rc == 1)
        return 0;
    if (rc < 0) {
        fprintf(stderr, "etcdseal proxy: %s\n", err.msg);
        return 2;
    }
    enum log_level lvl;
    if (log_level_parse(o.log_level, &lvl) == 0)
        log_set_level(lvl);

    /* signals are taken by sigwait below; block them before any thread exists */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    proxy_runtime rt;
    proxy_reloader *reloader = NULL;
    admin_server *admin = NULL;
    proxy *p = NULL;
    int exit_code = 1;
    if (build_runtime(&o, &rt, &err) < 0) {
        fprintf(stderr, "etcdseal proxy: %s\n", err.msg);
        goto out;
    }
    if (o.encryption_provider_config[0]) {
        /* load fully before serving anything: a config that fails to load stops the start */
        struct policy_encryption *pol = NULL;
        if (proxy_load_encryption(&o, &pol, &err) < 0) {
            fprintf(stderr, "etcdseal proxy: --encryption-provider-config: %s\n", err.msg);
            goto out;
        }
        atomic_store(&rt.policy, pol);
        log_info("encryption configuration loaded|file=%s rules=%zu storage_prefix=%s",
                 o.encryption_provider_config, policy_encryption_rule_count(pol), o.storage_prefix);
    } else {
        log_warn("no --encryption-provider-config: values pass through unencrypted");
    }
    if (o.access_policy[0]) {
        struct access_policy *ap = NULL;
        if (proxy_load_access_policy(&o, &ap, &err) < 0) {
            fprintf(stderr, "etcdseal proxy: --access-policy: %s\n", err.msg);
            goto out;
        }
        atomic_store(&rt.access, ap);
        log_info("access policy loaded|file=%s rules=%zu map_identity_to_etcd_user=%s",
                 o.access_policy, access_policy_rule_count(ap),
                 o.map_identity_to_etcd_user ? "on" : "off");
    }
    if (o.metrics_addr[0]) {
        admin = admin_server_new(o.metrics_addr, &err);
        if (!admin) {
            fprintf(stderr, "etcdseal proxy: --metrics-addr: %s\n", err.msg);
            goto out;
        }
    }
    p = proxy_start(&rt, &err);
    if (!p) {
        fprintf(stderr, "etcdseal proxy: %s\n", err.msg);
        goto out;
    }
    if (admin) {
        admin_server_add_check(admin, "/readyz", "etcd-upstream", check_upstream_ready, p);
        add_kms_checks(admin);
        if (admin_server_start(admin, &err) < 0) {
            fprintf(stderr, "etcdseal proxy: --metrics-addr: %s\n", err.msg);
            proxy_request_shutdown(p);
            goto out;
        }
    }
    log_info("etcdseal proxy started|listen=%s tls=%s client_cert_auth=%s endpoints=%zu "
             "workers=%d metrics=%s",
             o.listen_addr, atomic_load(&rt.server_tls) ? "on" : "off",
             o.client_cert_auth ? "on" : "off", rt.n_endpoints, o.workers,
             o.metrics_addr[0] ? o.metrics_addr : "off");
    reloader = proxy_reloader_new(&o, &rt);
    if (!reloader || wait_for_signals(&sigs, reloader, o.shutdown_timeout) < 0)
        log_error("signal handling failed; shutting down");
    proxy_request_shutdown(p);
    proxy_wait(p);
    exit_code = 0;
    log_info("etcdseal proxy stopped");
out:
    if (admin)
        admin_server_stop(admin);
    proxy_free(p);
    proxy_reloader_free(reloader);
    free_runtime(&rt);
    proxy_options_free(&o);
    return exit_code;
}
