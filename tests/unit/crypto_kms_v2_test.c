/* crypto_kms_v2_test.c - the KMS v2 provider against tests/tools/kms_fake_plugin.
 *
 * Round trip and stored layout; 10,000 writes cost exactly one plugin Encrypt and never block;
 * a fresh provider reading old data costs one Decrypt per seed; key rotation in the plugin gives
 * a new seed at the next Status and old values read stale; plugin killed: cached reads go on,
 * writes go on until the (shortened) expiry and then fail UNAVAILABLE, and resume when the plugin
 * is back; two endpoints with the first one down; the await callback never runs inline.
 * Each test uses its own abstract socket names (pid-based) and stops its plugins by PID.
 */
#include <pthread.h>
#include <stdatomic.h>

#include <sodium.h>

#include "base/buf.h"
#include "base/secret.h"
#include "crypto/chain.h"
#include "crypto/kms.h"
#include "crypto/kms_object.h"
#include "testlib.h"
#include "crypto_kms_fake.h"

#define KEK1 "HkMijGK5MZvElJkulCYX1iq2uZB0O3V4bme1HmM07bI="
#define KEK2 "6ii2bneKGh44DLgLSOYD0YKvyJmMC/y28xQTpWzawf4="

static const uint8_t AAD[] = "/registry/secrets/default/s1";
#define AADL (sizeof AAD - 1)

static void listen_name(char *out, size_t cap, const char *tag)
{
    snprintf(out, cap, "unix:///@etcdseal-kmsv2-test-%d-%s", (int)getpid(), tag);
}

/* v2 fake with kek-1 and kek-2 (current kek-2), annotation on kek-2. */
static int start_v2(fake_kms *fk, const char *tag, const char *extra)
{
    char listen[128];
    listen_name(listen, sizeof listen, tag);
    char flags[1024];
    size_t n = 0, off = 0;
    const char *args[] = {"--v2",  "--key",        "kek-1=" KEK1,
                          "--key", "kek-2=" KEK2,  "--current",
                          "kek-2", "--annotation", "kek-2:version.kms.example.com=Mg==",
                          extra};
    for (size_t i = 0; i < sizeof args / sizeof args[0]; i++) {
        if (!args[i])
            continue;
        size_t l = strlen(args[i]) + 1;
        memcpy(flags + off, args[i], l);
        off += l;
        n++;
    }
    memset(fk, 0, sizeof *fk);
    return fake_kms_start_flags(fk, listen, flags, n, tag);
}

static crypto_kms *provider(const char *name, const char *const *tags, size_t n_tags)
{
    char eps[4][128];
    const char *ep[4];
    for (size_t i = 0; i < n_tags; i++) {
        listen_name(eps[i], sizeof eps[i], tags[i]);
        ep[i] = eps[i];
    }
    crypto_kms_config cfg = {.type = CRYPTO_PROVIDER_KMS_V2,
                             .name = name,
                             .endpoints = ep,
                             .n_endpoints = n_tags,
                             .timeout_s = 1};
    crypto_kms *k = NULL;
    es_error e = {0};
    if (crypto_kms_new(&cfg, &k, &e) != 0)
        fprintf(stderr, "  crypto_kms_new: %s\n", e.msg);
    return k;
}

static crypto_chain *chain_of(crypto_kms *k)
{
    crypto_chain *c = crypto_chain_new();
    es_error e = {0};
    if (!c || crypto_chain_add_kms(c, k, &e) != 0) {
        crypto_chain_free(c);
        return NULL;
    }
    return c;
}

static int put(const crypto_chain *c, const char *plain, buf_t *out, es_error *e)
{
    buf_reset(out);
    return crypto_chain_encrypt_blocking(c, AAD, AADL, (const uint8_t *)plain, strlen(plain), out,
                                         e);
}

static int get(const crypto_chain *c, const buf_t *stored, buf_t *plain, crypto_read_info *info,
               es_error *e)
{
    buf_reset(plain);
    return crypto_chain_decrypt_blocking(c, AAD, AADL, stored->data, stored->len, plain, info, e);
}

static bool plain_is(const buf_t *b, const char *s)
{
    return b->len == strlen(s) && memcmp(b->data, s, b->len) == 0;
}

static void test_round_trip_and_layout(void)
{
    fake_kms fk;
    CHECK(start_v2(&fk, "rt", NULL) == 0);
    crypto_kms *k = provider("p-rt", (const char *[]){"rt"}, 1);
    crypto_chain *c = k ? chain_of(k) : NULL;
    CHECK(c != NULL);
    buf_t st = BUF_INIT, pl = BUF_INIT;
    es_error e = {0};
    crypto_read_info info = {0};
    if (c) {
        CHECK_MSG(put(c, "hello kms v2", &st, &e) == 0, "%s", e.msg);
        const char *pfx = "k8s:enc:kms:v2:p-rt:";
        CHECK(st.len > strlen(pfx) && memcmp(st.data, pfx, strlen(pfx)) == 0);
        kms_object o;
        CHECK(kms_object_decode(&o, st.data + strlen(pfx), st.len - strlen(pfx)) == NULL);
        CHECK(kms_object_validate(&o) == NULL);
        CHECK_EQ_INT(o.type, KMS_MODE_HKDF_SEED);
        CHECK(o.key_id.len == 5 && memcmp(o.key_id.p, "kek-2", 5) == 0);
        CHECK_EQ_INT(o.data.len, 32 + 12 + 12 + 16);
        CHECK_EQ_INT(o.n_ann, 1);
        CHECK_MSG(get(c, &st, &pl, &info, &e) == 0, "%s", e.msg);
        CHECK(plain_is(&pl, "hello kms v2"));
        CHECK(!info.stale);
        CHECK_EQ_STR(info.prefix, pfx);
        CHECK_EQ_STR(crypto_chain_write_prefix(c), pfx);
        /* AAD binds the value to its key */
        buf_reset(&pl);
        CHECK(crypto_chain_decrypt_blocking(c, (const uint8_t *)"/other", 6, st.data, st.len, &pl,
                                            &info, &e) == -1);
        CHECK(strstr(e.msg, "message authentication failed") != NULL);
        CHECK_EQ_INT(crypto_kms_health_check(k, NULL), 0);
        crypto_kms_health h[8];
        size_t n = crypto_kms_health_list(h, 8);
        bool found = false;
        for (size_t i = 0; i < n && i < 8; i++)
            if (strcmp(h[i].name, "p-rt") == 0) {
                found = true;
                CHECK(h[i].healthy);
                CHECK(strncmp(h[i].key_id_hash, "sha256:", 7) == 0);
                CHECK(strstr(h[i].key_id_hash, "kek") == NULL);
            }
        CHECK(found);
    }
    buf_wipe_free(&st);
    buf_wipe_free(&pl);
    crypto_chain_free(c);
    crypto_kms_unref(k);
    fake_kms_cleanup(&fk);
}

static void test_10000_writes_one_encrypt(void)
{
    fake_kms fk;
    CHECK(start_v2(&fk, "many", NULL) == 0);
    crypto_kms *k = provider("p-many", (const char *[]){"many"}, 1);
    crypto_chain *c = k ? chain_of(k) : NULL;
    es_error e = {0};
    CHECK(c && crypto_kms_wait_ready(k, 5, &e) == 0);
    buf_t st = BUF_INIT, pl = BUF_INIT;
    size_t blocked = 0, failed = 0;
    buf_t first = BUF_INIT;
    double t0 = (double)clock() / CLOCKS_PER_SEC;
    for (int i = 0; c && i < 10000; i++) {
        buf_reset(&st);
        char v[64];
        snprintf(v, sizeof v, "value-%d", i);
        if (crypto_chain_encrypt(c, AAD, AADL, (const uint8_t *)v, strlen(v), &st, &e) != 0) {
            if (e.code == CRYPTO_ERR_WOULD_BLOCK)
                blocked++;
            else
                failed++;
        } else if (i == 0) {
            buf_append(&first, st.data, st.len);
        }
    }
    double cpu = (double)clock() / CLOCKS_PER_SEC - t0;
    printf("  10000 non-blocking kms v2 writes: %.2f us CPU each (process CPU incl. KMS thread)\n",
           cpu * 1e6 / 10000);
    CHECK_EQ_INT(blocked, 0);
    CHECK_EQ_INT(failed, 0);
    crypto_read_info info = {0};
    buf_reset(&pl);
    CHECK(c && crypto_chain_decrypt(c, AAD, AADL, first.data, first.len, &pl, &info, &e) == 0);
    fake_counts fc;
    CHECK(fake_kms_counts(&fk, &fc) == 0);
    printf("  plugin after 10000 writes: Status=%lu Encrypt=%lu Decrypt=%lu\n", fc.status,
           fc.encrypt, fc.decrypt);
    CHECK_EQ_INT(fc.encrypt, 1);
    CHECK_EQ_INT(fc.decrypt, 0);
    /* a fresh provider (etcdseal restarted) reads 100 old values with one Decrypt */
    crypto_kms *k2 = provider("p-many", (const char *[]){"many"}, 1);
    crypto_chain *c2 = k2 ? chain_of(k2) : NULL;
    buf_t vals[100];
    for (int i = 0; i < 100; i++) {
        vals[i] = (buf_t)BUF_INIT;
        if (c)
            put(c, "old data", &vals[i], &e);
    }
    size_t ok = 0;
    for (int i = 0; c2 && i < 100; i++)
        ok += get(c2, &vals[i], &pl, &info, &e) == 0 && plain_is(&pl, "old data");
    CHECK_EQ_INT(ok, 100);
    CHECK(fake_kms_counts(&fk, &fc) == 0);
    printf("  fresh provider read 100 old values: plugin Decrypt=%lu Encrypt=%lu\n", fc.decrypt,
           fc.encrypt);
    CHECK_EQ_INT(fc.decrypt, 1);
    CHECK_EQ_INT(fc.encrypt, 2); /* the second provider made its own seed */
    for (int i = 0; i < 100; i++)
        buf_free(&vals[i]);
    crypto_chain_free(c2);
    crypto_kms_unref(k2);
    buf_wipe_free(&st);
    buf_wipe_free(&pl);
    buf_free(&first);
    crypto_chain_free(c);
    crypto_kms_unref(k);
    fake_kms_cleanup(&fk);
}

/* Polls cond for up to secs. */
#define WAIT_FOR(cond, secs)                                                                       \
    do {                                                                                           \
        for (int wf_i = 0; wf_i < (int)((secs)*100) && !(cond); wf_i++)                            \
            fake_sleep_ms(10);                                                                     \
    } while (0)

static bool key_id_is(const buf_t *st, const char *name, const char *id)
{
    char pfx[128];
    snprintf(pfx, sizeof pfx, "k8s:enc:kms:v2:%s:", name);
    size_t pl = strlen(pfx);
    kms_object o;
    if (st->len < pl || kms_object_decode(&o, st->data + pl, st->len - pl) != NULL)
        return false;
    return o.key_id.len == strlen(id) && memcmp(o.key_id.p, id, o.key_id.len) == 0;
}

static void test_rotation(void)
{
    fake_kms fk;
    CHECK(start_v2(&fk, "rot", NULL) == 0);
    crypto_kms *k = provider("p-rot", (const char *[]){"rot"}, 1);
    crypto_chain *c = k ? chain_of(k) : NULL;
    buf_t old = BUF_INIT, nw = BUF_INIT, pl = BUF_INIT;
    es_error e = {0};
    crypto_read_info info = {0};
    CHECK(c && put(c, "before rotation", &old, &e) == 0);
    CHECK(key_id_is(&old, "p-rot", "kek-2"));
    CHECK(fake_kms_control(&fk, "current=kek-1\n") == 0);
    fake_counts fc = {0};
    WAIT_FOR(fake_kms_counts(&fk, &fc) == 0 && fc.encrypt >= 2, 5);
    CHECK_EQ_INT(fc.encrypt, 2);
    bool rotated = false;
    for (int i = 0; c && i < 200 && !rotated; i++) { /* the new state is published right after */
        CHECK(put(c, "after rotation", &nw, &e) == 0);
        rotated = key_id_is(&nw, "p-rot", "kek-1");
        if (!rotated)
            fake_sleep_ms(10);
    }
    CHECK(rotated);
    CHECK(c && get(c, &nw, &pl, &info, &e) == 0 && plain_is(&pl, "after rotation"));
    CHECK(!info.stale);
    CHECK(c && get(c, &old, &pl, &info, &e) == 0 && plain_is(&pl, "before rotation"));
    CHECK(info.stale); /* old key id */
    printf("  rotation: plugin Status=%lu Encrypt=%lu; old value stale=%d\n", fc.status, fc.encrypt,
           info.stale);
    buf_wipe_free(&old);
    buf_wipe_free(&nw);
    buf_wipe_free(&pl);
    crypto_chain_free(c);
    crypto_kms_unref(k);
    fake_kms_cleanup(&fk);
}

static void test_plugin_killed(void)
{
    fake_kms fk;
    CHECK(start_v2(&fk, "kill", NULL) == 0);
    crypto_kms *k = provider("p-kill", (const char *[]){"kill"}, 1);
    crypto_chain *c = k ? chain_of(k) : NULL;
    buf_t v1 = BUF_INIT, v2 = BUF_INIT, pl = BUF_INIT;
    es_error e = {0};
    crypto_read_info info = {0};
    CHECK(c && put(c, "written while up", &v1, &e) == 0);
    double killed = (double)time(NULL);
    fake_kms_stop(&fk);
    /* cached seed: reads go on; writes go on until the expiry (2 s here) */
    CHECK(c && get(c, &v1, &pl, &info, &e) == 0 && plain_is(&pl, "written while up"));
    CHECK(c && put(c, "written while down", &v2, &e) == 0);
    WAIT_FOR(crypto_kms_health_check(k, NULL) != 0, 3);
    CHECK(crypto_kms_health_check(k, NULL) != 0);
    buf_t why = BUF_INIT;
    crypto_kms_health_check(k, &why);
    printf("  health while down: %.*s\n", (int)why.len, why.data ? (char *)why.data : "");
    buf_free(&why);
    int rc = 0;
    for (int i = 0; c && i < 600; i++) { /* up to 6 s */
        rc = crypto_chain_encrypt(c, AAD, AADL, (const uint8_t *)"x", 1, &v2, &e);
        if (rc != 0)
            break;
        fake_sleep_ms(10);
    }
    CHECK(rc == -1 && e.code == CRYPTO_ERR_UNAVAILABLE);
    printf("  writes refused %.0f s after the kill: %s\n", (double)time(NULL) - killed, e.msg);
    CHECK(c && get(c, &v1, &pl, &info, &e) == 0 && plain_is(&pl, "written while up"));
    /* plugin back: writes resume without a new provider */
    CHECK(start_v2(&fk, "kill", NULL) == 0);
    rc = -1;
    for (int i = 0; c && i < 500 && rc != 0; i++) {
        buf_reset(&v2);
        rc = crypto_chain_encrypt(c, AAD, AADL, (const uint8_t *)"back", 4, &v2, &e);
        if (rc != 0)
            fake_sleep_ms(10);
    }
    CHECK_MSG(rc == 0, "%s", e.msg);
    CHECK(c && get(c, &v2, &pl, &info, &e) == 0 && plain_is(&pl, "back"));
    CHECK_EQ_INT(crypto_kms_health_check(k, NULL), 0);
    buf_wipe_free(&v1);
    buf_wipe_free(&v2);
    buf_wipe_free(&pl);
    crypto_chain_free(c);
    crypto_kms_unref(k);
    fake_kms_cleanup(&fk);
}

static void test_failover(void)
{
    fake_kms fk;
    CHECK(start_v2(&fk, "second", NULL) == 0);
    /* "first" has no listener at all */
    crypto_kms *k = provider("p-fo", (const char *[]){"first", "second"}, 2);
    crypto_chain *c = k ? chain_of(k) : NULL;
    buf_t st = BUF_INIT, pl = BUF_INIT;
    es_error e = {0};
    crypto_read_info info = {0};
    CHECK_MSG(c && put(c, "via the second endpoint", &st, &e) == 0, "%s", e.msg);
    CHECK(c && get(c, &st, &pl, &info, &e) == 0 && plain_is(&pl, "via the second endpoint"));
    /* a fresh provider must Decrypt through the second endpoint too */
    crypto_kms *k2 = provider("p-fo", (const char *[]){"first", "second"}, 2);
    crypto_chain *c2 = k2 ? chain_of(k2) : NULL;
    CHECK_MSG(c2 && get(c2, &st, &pl, &info, &e) == 0 && plain_is(&pl, "via the second endpoint"),
              "%s", e.msg);
    fake_counts fc;
    CHECK(fake_kms_counts(&fk, &fc) == 0);
    CHECK_EQ_INT(fc.decrypt, 1);
    crypto_chain_free(c2);
    crypto_kms_unref(k2);
    buf_wipe_free(&st);
    buf_wipe_free(&pl);
    crypto_chain_free(c);
    crypto_kms_unref(k);
    fake_kms_cleanup(&fk);
}

typedef struct cb_state {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls;
    pthread_t thread;
} cb_state;

static void ready_cb(void *arg)
{
    cb_state *s = arg;
    pthread_mutex_lock(&s->mu);
    s->calls++;
    s->thread = pthread_self();
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void test_await_not_inline(void)
{
    fake_kms fk;
    CHECK(start_v2(&fk, "aw", NULL) == 0);
    crypto_kms *k = provider("p-aw", (const char *[]){"aw"}, 1);
    crypto_chain *c = k ? chain_of(k) : NULL;
    buf_t st = BUF_INIT;
    es_error e = {0};
    cb_state s = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    int rc = c ? crypto_chain_encrypt(c, AAD, AADL, (const uint8_t *)"x", 1, &st, &e) : 0;
    if (rc != 0) {
        CHECK_EQ_INT(e.code, CRYPTO_ERR_WOULD_BLOCK);
        CHECK_EQ_INT(st.len, 0);
        CHECK(crypto_chain_await(c, CRYPTO_AWAIT_ENCRYPT, (const uint8_t *)"x", 1, ready_cb, &s,
                                 &e) == 0);
    } else { /* already ready (fast machine): the await path still posts */
        CHECK(crypto_chain_await(c, CRYPTO_AWAIT_ENCRYPT, (const uint8_t *)"x", 1, ready_cb, &s,
                                 &e) == 0);
    }
    pthread_mutex_lock(&s.mu);
    CHECK_EQ_INT(s.calls, 0); /* never inline */
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 5;
    while (s.calls == 0 && pthread_cond_timedwait(&s.cv, &s.mu, &dl) == 0)
        ;
    CHECK_EQ_INT(s.calls, 1);
    CHECK(!pthread_equal(s.thread, pthread_self()));
    pthread_mutex_unlock(&s.mu);
    buf_reset(&st);
    CHECK(c && crypto_chain_encrypt(c, AAD, AADL, (const uint8_t *)"x", 1, &st, &e) == 0);
    /* an identity-only chain has nothing to await */
    crypto_chain *ic = crypto_chain_new();
    crypto_chain_add_identity(ic, &e);
    CHECK(crypto_chain_await(ic, CRYPTO_AWAIT_DECRYPT, (const uint8_t *)"x", 1, ready_cb, &s, &e) ==
          -1);
    crypto_chain_free(ic);
    buf_wipe_free(&st);
    crypto_chain_free(c);
    crypto_kms_unref(k);
    fake_kms_cleanup(&fk);
}

static void test_unknown_key_and_no_plugin(void)
{
    /* no plugin at all: the provider reports unavailable instead of hanging */
    crypto_kms *k = provider("p-none", (const char *[]){"nobody"}, 1);
    crypto_chain *c = k ? chain_of(k) : NULL;
    buf_t st = BUF_INIT;
    es_error e = {0};
    CHECK(c && put(c, "x", &st, &e) == -1);
    CHECK_MSG(e.code == CRYPTO_ERR_UNAVAILABLE, "%d %s", e.code, e.msg);
    CHECK(crypto_kms_health_check(k, NULL) == -1);
    buf_wipe_free(&st);
    crypto_chain_free(c);
    crypto_kms_unref(k);
}

int main(int argc, char **argv)
{
    (void)argc;
    TEST_BEGIN(argv[0]);
    if (secret_init() != 0)
        return 1;
    crypto_kms_timing t = {
        .status_healthy_s = 0.3, .status_unhealthy_s = 0.2, .write_expiry_s = 2, .negative_s = 0.5};
    crypto_kms_set_timing(&t);
    RUN(test_round_trip_and_layout);
    RUN(test_10000_writes_one_encrypt);
    RUN(test_rotation);
    RUN(test_plugin_killed);
    RUN(test_failover);
    RUN(test_await_not_inline);
    RUN(test_unknown_key_and_no_plugin);
    return TEST_EXIT();
}
