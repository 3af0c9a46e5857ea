/* rewrap.c - `etcdseal rewrap`: rewrite every plaintext or stale value under the protected
 * prefixes with the current write provider/key, online, without losing a concurrent update.
 *
 * Reads etcd directly in pages of --limit keys (ascending key order, no pinned revision). Each
 * value to rewrite is decrypted (or taken as is when plaintext), encrypted with the key's chain
 * (first provider, AAD = key) and written with one Txn:
 *     if mod_revision(key) == seen then put(key, new value, lease = the key's lease)
 * A concurrent client write (or delete) makes the compare fail: that client's value wins and is
 * counted "skipped (changed)" - it went through the proxy, so it is already current. --dry-run
 * only counts; --qps paces the Txns; --from-key resumes (keys >= K). Progress goes to stderr
 * (a redrawn line on a terminal, a plain line every 5 s otherwise); the summary to stdout.
 * Exit: 0 done without errors, 1 some keys could not be rewritten (listed), 2 usage,
 * 3 could not complete (the resume key is printed).
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "cmd/commands.h"
#include "etcdclient/etcdclient.h"
#include "etcdclient/scan.h"
#include "policy/encryption.h"

#define MAX_ERRORS_SHOWN 20
#define MAX_CONSECUTIVE_ERRORS 20

typedef struct rewrap {
    const policy_encryption *p;
    etcdc *c;
    bool dry_run;
    double qps;
    long long next_slot_us; /* pacing */
    /* counters */
    int64_t total, scanned, unprotected, rewritten, skipped_changed, already_current, errors;
    int64_t would_rewrite;
    int consecutive_errors;
    buf_t plain, enc, last_key;
    bool have_last;
    /* progress */
    bool tty;
    long long t0, last_progress;
} rewrap;

static long long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void pace(rewrap *w)
{
    if (w->qps <= 0)
        return;
    long long now = now_us(), step = (long long)(1e6 / w->qps);
    if (w->next_slot_us < now - step) /* no bursts after a pause */
        w->next_slot_us = now - step;
    w->next_slot_us += step;
    while (w->next_slot_us > now && !ops_interrupted) {
        long long d = w->next_slot_us - now;
        usleep((useconds_t)(d > 200000 ? 200000 : d));
        now = now_us();
    }
}

static void progress(rewrap *w, bool final)
{
    long long now = ops_now_ms();
    if (!final && now - w->last_progress < (w->tty ? 200 : 5000))
        return;
    w->last_progress = now;
    double secs = (double)(now - w->t0) / 1000.0;
    double rate = secs > 0 ? (double)w->scanned / secs : 0;
    int64_t total = w->total > w->scanned ? w->total : w->scanned;
    double pct = total ? 100.0 * (double)w->scanned / (double)total : 100.0;
    char eta[32] = "-";
    if (rate > 0 && total > w->scanned) {
        long long e = (long long)((double)(total - w->scanned) / rate);
        snprintf(eta, sizeof eta, "%lldm%02llds", e / 60, e % 60);
    }
    if (w->tty) {
        char bar[31];
        int filled = (int)(pct * 30 / 100);
        for (int i = 0; i < 30; i++)
            bar[i] = i < filled ? '#' : '.';
        bar[30] = '\0';
        fprintf(stderr,
                "\r[%s] %" PRId64 "/%" PRId64 " keys %5.1f%% %7.0f keys/s ETA %-8s "
                "rewritten %" PRId64 " errors %" PRId64 "%s",
                bar, w->scanned, total, pct, rate, eta,
                w->dry_run ? w->would_rewrite : w->rewritten, w->errors, final ? "\n" : "");
    } else {
        fprintf(stderr,
                "rewrap: %" PRId64 "/%" PRId64 " keys (%.1f%%), %.0f keys/s, ETA %s, %s %" PRId64
                ", errors %" PRId64 "\n",
                w->scanned, total, pct, rate, eta, w->dry_run ? "would rewrite" : "rewritten",
                w->dry_run ? w->would_rewrite : w->rewritten, w->errors);
    }
    fflush(stderr);
}

static void report_error(rewrap *w, const Mvccpb__KeyValue *kv, const char *what, const char *msg)
{
    w->errors++;
    if (w->errors > MAX_ERRORS_SHOWN)
        return;
    if (w->tty)
        fputc('\n', stderr);
    fprintf(stderr, "rewrap: error: ");
    ops_print_key(stderr, kv->key.data, kv->key.len);
    fprintf(stderr, ": %s: %s\n", what, msg);
    if (w->errors == MAX_ERRORS_SHOWN)
        fprintf(stderr, "rewrap: (further errors are counted, not shown)\n");
}

/* The guarded write. 0 = answered (succeeded set), -1 = error (err). */
static int cas_put(rewrap *w, const Mvccpb__KeyValue *kv, bool *succeeded, es_error *err)
{
    Etcdserverpb__Compare cmp = ETCDSERVERPB__COMPARE__INIT, *cmps[1] = {&cmp};
    cmp.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
    cmp.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
    cmp.key = kv->key;
    cmp.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
    cmp.mod_revision = kv->mod_revision;
    Etcdserverpb__PutRequest put = ETCDSERVERPB__PUT_REQUEST__INIT;
    put.key = kv->key;
    put.value.data = w->enc.data;
    put.value.len = w->enc.len;
    put.lease = kv->lease; /* keep the key's lease (0 = none) */
    Etcdserverpb__RequestOp op = ETCDSERVERPB__REQUEST_OP__INIT, *ops[1] = {&op};
    op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    op.request_put = &put;
    Etcdserverpb__TxnRequest txn = ETCDSERVERPB__TXN_REQUEST__INIT;
    txn.n_compare = 1;
    txn.compare = cmps;
    txn.n_success = 1;
    txn.success = ops;
    Etcdserverpb__TxnResponse *resp = NULL;
    if (etcdc_txn(w->c, &txn, &resp, err) != 0)
        return -1;
    *succeeded = resp->succeeded;
    etcdserverpb__txn_response__free_unpacked(resp, NULL);
    return 0;
}

static int on_kv(void *arg, const Mvccpb__KeyValue *kv, es_error *err)
{
    rewrap *w = arg;
    if (ops_interrupted)
        return es_error_set(err, 1, "interrupted");
    w->scanned++;
    scan_result r;
    buf_reset(&w->plain);
    scan_classify(w->p, kv->key.data, kv->key.len, kv->value.data, kv->value.len, &w->plain, &r);
    int rc = 0;
    switch (r.cls) {
    case SCAN_UNPROTECTED:
        w->unprotected++;
        break;
    case SCAN_EMPTY:
    case SCAN_CURRENT:
        w->already_current++;
        break;
    case SCAN_UNDECRYPTABLE:
        report_error(w, kv, "cannot read the value", r.err.msg);
        break;
    case SCAN_PLAINTEXT:
    case SCAN_STALE:
        if (w->dry_run) {
            w->would_rewrite++;
            break;
        }
        buf_reset(&w->enc);
        es_error e = {0};
        if (crypto_chain_encrypt_blocking(r.chain, kv->key.data, kv->key.len, w->plain.data,
                                          w->plain.len, &w->enc, &e) != 0) {
            report_error(w, kv, "encrypt", e.msg);
            break;
        }
        pace(w);
        bool ok = false;
        if (cas_put(w, kv, &ok, &e) != 0) {
            report_error(w, kv, "write", e.msg);
            if (++w->consecutive_errors >= MAX_CONSECUTIVE_ERRORS) {
                es_error_set(err, e.code, "%d writes in a row failed; last: %s",
                             MAX_CONSECUTIVE_ERRORS, e.msg);
                rc = -1;
            }
            break;
        }
        w->consecutive_errors = 0;
        if (ok)
            w->rewritten++;
        else
            w->skipped_changed++;
        break;
    }
    /* wipe what held plaintext: the buffers are reused for the next key */
    if (w->plain.cap)
        memset(w->plain.data, 0, w->plain.cap);
    if (rc == 0) {
        buf_reset(&w->last_key);
        if (buf_append(&w->last_key, kv->key.data, kv->key.len) != 0)
            return es_error_set(err, 13, "out of memory");
        w->have_last = true;
    }
    progress(w, false);
    return rc;
}

static void usage(FILE *f)
{
    fprintf(
        f, "usage: etcdseal rewrap --endpoints E[,E...] [TLS flags]\n"
           "                       --encryption-provider-config FILE [--storage-prefix P]\n"
           "                       [--prefix P] [--from-key K] [--limit N] [--qps N] [--dry-run]\n"
           "\n"
           "Rewrites every plaintext or stale value under the protected prefixes with the first\n"
           "provider/key of its rule, straight in etcd. Each rewrite is a transaction guarded by\n"
           "the value's mod_revision: a concurrent client write always wins (counted as\n"
           "\"skipped (changed)\"), so no update is lost. The key's lease is kept.\n"
           "\n"
           "  --endpoints E[,E...]               etcd client URLs (host:port, http://, https://)\n"
           "  --cacert FILE --cert FILE --key FILE  TLS to etcd (mTLS with --cert/--key)\n"
           "  --insecure-skip-tls-verify         do not verify etcd's certificate\n"
           "  --encryption-provider-config FILE  the EncryptionConfiguration in force (the\n"
           "                                     proxy must already run with it)\n"
           "  --storage-prefix P                 kube-apiserver --etcd-prefix (default /registry)\n"
           "  --prefix P                         only keys starting with P\n"
           "  --from-key K                       resume: only keys >= K (printed when stopped)\n"
           "  --limit N                          keys per Range page (default 500)\n"
           "  --qps N                            at most N rewrite transactions per second\n"
           "                                     (default 0 = unlimited)\n"
           "  --timeout SECS                     per request (default 30)\n"
           "  --dry-run                          count only, write nothing\n"
           "\n"
           "Exit status: 0 done, 1 some values could not be rewritten (listed on stderr),\n"
           "2 usage error, 3 stopped before the end (interrupted, connection or etcd error).\n");
}

static int bytes_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    return c ? c : (al < bl ? -1 : al > bl);
}

/* The part of the range [*s, end(*s)) at or after --from-key: 1 = walk [*s, end), 0 = the whole
 * range is before the key (skip), -1 = out of memory. */
static int range_bounds(const uint8_t *fk, size_t fkl, const uint8_t **s, size_t *sl, buf_t *end)
{
    if (scan_prefix_end(*s, *sl, end) != 0)
        return -1;
    if (!fk || bytes_cmp(fk, fkl, *s, *sl) <= 0)
        return 1;
    bool to_the_end = end->len == 1 && end->data[0] == 0;
    if (!to_the_end && bytes_cmp(fk, fkl, end->data, end->len) >= 0)
        return 0;
    *s = fk;
    *sl = fkl;
    return 1;
}

int cmd_rewrap(int argc, char **argv)
{
    enum { OPT_FROM = 1000, OPT_QPS, OPT_DRY, OPT_HELP };
    static const struct option opts[] = {OPS_COMMON_LONG_OPTIONS,
                                         {"from-key", required_argument, NULL, OPT_FROM},
                                         {"qps", required_argument, NULL, OPT_QPS},
                                         {"dry-run", no_argument, NULL, OPT_DRY},
                                         {"help", no_argument, NULL, OPT_HELP},
                                         {NULL, 0, NULL, 0}};
    ops_common o = {.storage_prefix = POLICY_DEFAULT_STORAGE_PREFIX, .limit = 500};
    const char *from = NULL;
    rewrap w = {.plain = BUF_INIT, .enc = BUF_INIT, .last_key = BUF_INIT};
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end = NULL;
        if (c == 'h' || c == OPT_HELP) {
            usage(stdout);
            return 0;
        } else if (c == OPT_FROM) {
            from = optarg;
        } else if (c == OPT_DRY) {
            w.dry_run = true;
        } else if (c == OPT_QPS && (w.qps = strtod(optarg, &end), *end == '\0') && w.qps >= 0 &&
                   w.qps <= 1e6) {
            continue;
        } else if (c == '?' || c == OPT_QPS || ops_common_flag(&o, c, optarg) != 0) {
            fprintf(stderr, "etcdseal rewrap: unknown, incomplete or invalid flag \"%s\"\n\n",
                    argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    const char *problem = NULL;
    if (optind != argc)
        problem = "unexpected argument";
    else if (!o.config)
        problem = "--encryption-provider-config is required";
    else if (!o.conn.endpoints)
        problem = "--endpoints is required";
    if (problem) {
        fprintf(stderr, "etcdseal rewrap: %s\n\n", problem);
        usage(stderr);
        return 2;
    }
    policy_encryption *p = NULL;
    if (ops_load_policy(&o, "rewrap", &p) != 0)
        return 3;
    ops_install_signals();
    w.p = p;
    w.tty = isatty(2);
    es_error err = {0};
    scan_range *ranges = NULL;
    size_t n = 0;
    buf_t end = BUF_INIT;
    int rc = 3;
    const uint8_t *fk = (const uint8_t *)from;
    size_t fkl = from ? strlen(from) : 0;
    if (etcdc_open(&o.conn, &w.c, &err) != 0 ||
        scan_ranges_build(p, o.prefix, &ranges, &n, &err) != 0)
        goto out;
    /* totals first (count_only), for progress and ETA */
    for (size_t i = 0; i < n; i++) {
        const uint8_t *s = (const uint8_t *)ranges[i].start;
        size_t sl = strlen(ranges[i].start);
        int64_t cnt = 0;
        int b = range_bounds(fk, fkl, &s, &sl, &end);
        if (b < 0)
            goto oom;
        if (b == 0)
            continue;
        if (scan_count(w.c, s, sl, end.data, end.len, &cnt, &err) != 0)
            goto out;
        w.total += cnt;
    }
    w.t0 = ops_now_ms();
    w.last_progress = w.t0;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *s = (const uint8_t *)ranges[i].start;
        size_t sl = strlen(ranges[i].start);
        int b = range_bounds(fk, fkl, &s, &sl, &end);
        if (b < 0)
            goto oom;
        if (b == 0)
            continue;
        int64_t rev = 0;
        if (scan_walk(w.c, s, sl, end.data, end.len, o.limit, false, &rev, on_kv, &w, &err) != 0)
            goto out;
    }
    rc = w.errors ? 1 : 0;
    goto out;
oom:
    es_error_set(&err, 13, "out of memory");
out:
    if (w.t0)
        progress(&w, true);
    if (rc == 3) {
        fprintf(stderr, "etcdseal rewrap: %s\n", ops_interrupted ? "interrupted" : err.msg);
        if (w.have_last) {
            fprintf(stderr, "etcdseal rewrap: every key up to and including this one is done; "
                            "resume with --from-key '");
            ops_print_key(stderr, w.last_key.data, w.last_key.len);
            fprintf(stderr, "' (current values are skipped, so repeating a key is harmless)\n");
        }
    }
    if (w.t0) {
        double secs = (double)(ops_now_ms() - w.t0) / 1000.0;
        printf("rewrap %s: scanned %" PRId64 ", %s %" PRId64 ", skipped (changed) %" PRId64
               ", already current %" PRId64 ", errors %" PRId64 ", not protected %" PRId64
               " (%.1f s)\n",
               rc == 3 ? "stopped" : "done", w.scanned, w.dry_run ? "would rewrite" : "rewritten",
               w.dry_run ? w.would_rewrite : w.rewritten, w.skipped_changed, w.already_current,
               w.errors, w.unprotected, secs);
    }
    buf_free(&end);
    scan_ranges_free(ranges, n);
    etcdc_close(w.c);
    buf_wipe_free(&w.plain);
    buf_wipe_free(&w.enc);
    buf_free(&w.last_key);
    policy_encryption_unref(p);
    return rc;
}
