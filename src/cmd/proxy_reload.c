/* proxy_reload.c - EncryptionConfiguration and TLS certificate reloads (see proxy_reload.h).
 * Metric names follow kube-apiserver's encryption config controller. */
#include "cmd/proxy_reload.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "base/log.h"
#include "base/metrics.h"
#include "crypto/chain.h"
#include "policy/access_policy.h"
#include "policy/encryption.h"
#include "policy/encryption_config.h"
#include "policy/key_map.h"
#include "proxy/tls.h"

#define RETIRE_GRACE_MS 10000
#define RETIRED_MAX 64

enum retired_kind { RETIRED_POLICY, RETIRED_TLS, RETIRED_ACCESS };

struct retired {
    void *obj;
    enum retired_kind kind;
    uint64_t at_ms;
};

struct proxy_reloader {
    const proxy_options *o;
    proxy_runtime *rt;
    unsigned char enc_digest[32]; /* content of the loaded EncryptionConfiguration */
    bool have_digest;
    int inotify_fd;
    char watch_name[NAME_MAX + 1]; /* file name inside the watched directory */
    struct retired retired[RETIRED_MAX];
    size_t n_retired;
    metrics_counter *ok_total, *fail_total;
    metrics_gauge *last_ok, *last_fail;
    metrics_counter *access_ok_total, *access_fail_total;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int file_digest(const char *path, unsigned char out[32])
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
    unsigned char buf[8192];
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof buf, f)) > 0)
        ok = EVP_DigestUpdate(md, buf, n) == 1;
    unsigned int len = 0;
    ok = ok && !ferror(f) && EVP_DigestFinal_ex(md, out, &len) == 1 && len == 32;
    EVP_MD_CTX_free(md);
    fclose(f);
    return ok ? 0 : -1;
}

static bool policy_has_local_keys(const struct policy_encryption *p)
{
    for (size_t i = 0; i < policy_encryption_rule_count(p); i++) {
        const policy_rule_view *v = policy_encryption_rule(p, i);
        for (size_t k = 0; v && v->rule && k < v->rule->n_providers; k++) {
            enum crypto_provider_type t = v->rule->providers[k].type;
            if (t == CRYPTO_PROVIDER_AESCBC || t == CRYPTO_PROVIDER_AESGCM ||
                t == CRYPTO_PROVIDER_SECRETBOX)
                return true;
        }
    }
    return false;
}

int proxy_load_encryption(const proxy_options *o, struct policy_encryption **out, es_error *err)
{
    const char *path = o->encryption_provider_config;
    struct stat st;
    if (stat(path, &st) != 0)
        return es_error_set(err, 0, "%s: %s", path, strerror(errno));
    struct policy_encryption *p = NULL;
    if (policy_encryption_load(path, o->storage_prefix, &p, err) < 0)
        return -1;
    if ((st.st_mode & 077) && policy_has_local_keys(p)) {
        if (!o->allow_insecure_key_file) {
            policy_encryption_unref(p);
            return es_error_set(err, 0,
                                "%s holds encryption keys and is readable by group or others "
                                "(mode %04o): chmod 600 it, or pass --allow-insecure-key-file",
                                path, (unsigned)(st.st_mode & 07777));
        }
        log_warn("INSECURE: the EncryptionConfiguration holding keys is readable by group or "
                 "others (--allow-insecure-key-file)|file=%s mode=%04o",
                 path, (unsigned)(st.st_mode & 07777));
    }
    for (size_t i = 0; i < policy_encryption_rule_count(p); i++) {
        const policy_rule_view *v = policy_encryption_rule(p, i);
        for (size_t w = 0; v && w < v->n_warnings; w++)
            log_warn("encryption configuration|file=%s rule=%zu warning=\"%s\"", path, i,
                     v->warnings[w]);
    }
    *out = p;
    return 0;
}

static void retire(proxy_reloader *r, void *obj, enum retired_kind kind)
{
    if (!obj)
        return;
    if (r->n_retired == RETIRED_MAX) { /* keep it for ever rather than free it too early */
        log_warn("too many retired configurations pending; keeping one until exit");
        return;
    }
    r->retired[r->n_retired++] = (struct retired){obj, kind, now_ms()};
}

static void release(struct retired *x)
{
    if (x->kind == RETIRED_TLS)
        SSL_CTX_free(x->obj);
    else if (x->kind == RETIRED_ACCESS)
        access_policy_unref(x->obj);
    else
        policy_encryption_unref(x->obj);
}

void proxy_reloader_tick(proxy_reloader *r)
{
    uint64_t now = now_ms();
    size_t k = 0;
    for (size_t i = 0; i < r->n_retired; i++) {
        if (now - r->retired[i].at_ms >= RETIRE_GRACE_MS)
            release(&r->retired[i]);
        else
            r->retired[k++] = r->retired[i];
    }
    r->n_retired = k;
}

static void reload_encryption(proxy_reloader *r, bool only_if_changed)
{
    const char *path = r->o->encryption_provider_config;
    if (!path[0])
        return;
    unsigned char digest[32];
    bool have = file_digest(path, digest) == 0;
    if (only_if_changed && have && r->have_digest && memcmp(digest, r->enc_digest, 32) == 0)
        return; /* touched, not changed */
    es_error err = {0};
    struct policy_encryption *p = NULL;
    double wall = (double)time(NULL);
    if (proxy_load_encryption(r->o, &p, &err) < 0) {
        log_error("encryption configuration reload failed; the running configuration stays|"
                  "file=%s error=\"%s\"",
                  path, err.msg);
        metrics_counter_add(r->fail_total, 1);
        metrics_gauge_set(r->last_fail, (int64_t)wall);
        if (have) { /* do not retry the same broken content on every event */
            memcpy(r->enc_digest, digest, 32);
            r->have_digest = true;
        }
        return;
    }
    struct policy_encryption *old =
        atomic_exchange((_Atomic(struct policy_encryption *) *)&r->rt->policy, p);
    retire(r, old, RETIRED_POLICY);
    if (have) {
        memcpy(r->enc_digest, digest, 32);
        r->have_digest = true;
    }
    metrics_counter_add(r->ok_total, 1);
    metrics_gauge_set(r->last_ok, (int64_t)wall);
    log_info("encryption configuration reloaded|file=%s rules=%zu", path,
             policy_encryption_rule_count(p));
}

static void reload_tls(proxy_reloader *r)
{
    const proxy_options *o = r->o;
    if (!o->cert_file[0])
        return;
    es_error err = {0};
    SSL_CTX *ctx = tls_server_ctx_new(o->cert_file, o->key_file, o->trusted_ca_file,
                                      o->client_cert_auth, o->client_crl_file, &err);
    if (!ctx) {
        log_error("TLS certificate reload failed; the running certificate stays|error=\"%s\"",
                  err.msg);
        return;
    }
    SSL_CTX *old = atomic_exchange((_Atomic(SSL_CTX *) *)&r->rt->server_tls, ctx);
    retire(r, old, RETIRED_TLS);
    log_info("TLS certificate reloaded for new connections|cert=%s", o->cert_file);
}

int proxy_load_access_policy(const proxy_options *o, struct access_policy **out, es_error *err)
{
    return access_policy_load(o->access_policy, out, err);
}

/* A broken file keeps the running policy: never fall back to "all allowed". */
static void reload_access(proxy_reloader *r)
{
    const char *path = r->o->access_policy;
    if (!path || !path[0])
        return;
    es_error err = {0};
    struct access_policy *p = NULL;
    if (proxy_load_access_policy(r->o, &p, &err) < 0) {
        log_error("access policy reload failed; the running policy stays|file=%s error=\"%s\"",
                  path, err.msg);
        metrics_counter_add(r->access_fail_total, 1);
        return;
    }
    struct access_policy *old =
        atomic_exchange((_Atomic(struct access_policy *) *)&r->rt->access, p);
    retire(r, old, RETIRED_ACCESS);
    metrics_counter_add(r->access_ok_total, 1);
    log_info("access policy reloaded for new calls|file=%s rules=%zu", path,
             access_policy_rule_count(p));
}

void proxy_reloader_reload_all(proxy_reloader *r)
{
    reload_encryption(r, false);
    reload_access(r);
    reload_tls(r);
}

proxy_reloader *proxy_reloader_new(const proxy_options *o, proxy_runtime *rt)
{
    proxy_reloader *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->o = o;
    r->rt = rt;
    r->inotify_fd = -1;
    const char *path = o->encryption_provider_config;
    if (path[0] && file_digest(path, r->enc_digest) == 0)
        r->have_digest = true;
    static const char prefix[] = "apiserver_encryption_config_controller_automatic_reload";
    char name[160];
    snprintf(name, sizeof name, "%s_success_total", prefix);
    r->ok_total =
        metrics_counter_get(name, "Successful reloads of the EncryptionConfiguration", "");
    snprintf(name, sizeof name, "%s_failures_total", prefix);
    r->fail_total = metrics_counter_get(name, "Failed reloads of the EncryptionConfiguration", "");
    snprintf(name, sizeof name, "%s_last_timestamp_seconds", prefix);
    r->last_ok = metrics_gauge_get(name, "Time of the last reload by result", "status=\"success\"");
    r->last_fail =
        metrics_gauge_get(name, "Time of the last reload by result", "status=\"failure\"");
    r->access_ok_total =
        metrics_counter_get("etcdseal_access_policy_reloads_total",
                            "Access policy reloads by result", "result=\"success\"");
    r->access_fail_total =
        metrics_counter_get("etcdseal_access_policy_reloads_total",
                            "Access policy reloads by result", "result=\"failure\"");
    if (path[0] && o->encryption_provider_config_automatic_reload) {
        /* watch the directory: editors and Kubernetes ConfigMaps replace the file by rename */
        char *copy1 = strdup(path), *copy2 = strdup(path);
        if (copy1 && copy2) {
            snprintf(r->watch_name, sizeof r->watch_name, "%s", basename(copy1));
            r->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
            if (r->inotify_fd >= 0 &&
                inotify_add_watch(r->inotify_fd, dirname(copy2),
                                  IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_ATTRIB) < 0) {
                log_error("cannot watch the EncryptionConfiguration for automatic reload|"
                          "file=%s error=\"%s\"",
                          path, strerror(errno));
                close(r->inotify_fd);
                r->inotify_fd = -1;
            }
        }
        free(copy1);
        free(copy2);
    }
    return r;
}

int proxy_reloader_watch_fd(const proxy_reloader *r)
{
    return r->inotify_fd;
}

void proxy_reloader_on_watch(proxy_reloader *r)
{
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool relevant = false;
    ssize_t n;
    while ((n = read(r->inotify_fd, buf, sizeof buf)) > 0) {
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            /* ConfigMap volumes swap a "..data" symlink: treat any change there as relevant */
            if (ev->len && (strcmp(ev->name, r->watch_name) == 0 || ev->name[0] == '.'))
                relevant = true;
            p += sizeof *ev + ev->len;
        }
    }
    if (relevant)
        reload_encryption(r, true);
}

void proxy_reloader_free(proxy_reloader *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_retired; i++)
        release(&r->retired[i]);
    if (r->inotify_fd >= 0)
        close(r->inotify_fd);
    free(r);
}
