/* verify.c - `etcdseal verify`: inventory of what etcd holds under the protected prefixes.
 *
 * Talks to etcd directly (not through the proxy), walks every protected key range with
 * paginated Ranges pinned to one revision (bounded memory: one page of --limit keys), classifies
 * every value (etcdclient/scan.h) and prints, per rule and key prefix, how many keys are empty,
 * plaintext, current, stale or undecryptable and which provider/key reads them. `-o json` is
 * the same for machines (schema in docs/operations.md). --snapshot restores an etcd snapshot
 * with etcdctl into a temporary directory, runs a temporary etcd on free loopback ports, verifies
 * it, then stops it (by PID) and removes the directory.
 * Exit: 0 clean, 1 plaintext or undecryptable values found, 2 usage, 3 could not complete.
 * Also holds what rewrap.c shares (ops_* in commands.h): connection flags, key escaping, signals.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cmd/commands.h"
#include "etcdclient/etcdclient.h"
#include "etcdclient/scan.h"
#include "policy/encryption.h"
#include "policy/key_map.h"

/* ------------------------------------------------------------------ shared with rewrap.c */

volatile sig_atomic_t ops_interrupted;

static void on_signal(int sig)
{
    (void)sig;
    ops_interrupted = 1;
}

void ops_install_signals(void)
{
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

long long ops_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Key bytes for humans: printable ASCII as is, the rest as \xHH. */
void ops_print_key(FILE *f, const uint8_t *k, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (k[i] >= 0x20 && k[i] < 0x7f && k[i] != '\\')
            fputc(k[i], f);
        else
            fprintf(f, "\\x%02x", k[i]);
    }
}

void ops_json_string(FILE *f, const uint8_t *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

int ops_common_flag(ops_common *o, int opt, const char *arg)
{
    switch (opt) {
    case OPS_OPT_ENDPOINTS:
        o->conn.endpoints = arg;
        return 0;
    case OPS_OPT_CACERT:
        o->conn.cacert = arg;
        return 0;
    case OPS_OPT_CERT:
        o->conn.cert = arg;
        return 0;
    case OPS_OPT_KEY:
        o->conn.key = arg;
        return 0;
    case OPS_OPT_INSECURE:
        o->conn.insecure_skip_tls_verify = true;
        return 0;
    case OPS_OPT_CONFIG:
        o->config = arg;
        return 0;
    case OPS_OPT_STORAGE_PREFIX:
        o->storage_prefix = arg;
        return 0;
    case OPS_OPT_PREFIX:
        o->prefix = arg;
        return 0;
    case OPS_OPT_LIMIT: {
        char *end;
        long long v = strtoll(arg, &end, 10);
        if (*end || v < 1 || v > 100000)
            return -1;
        o->limit = v;
        return 0;
    }
    case OPS_OPT_TIMEOUT: {
        char *end;
        double v = strtod(arg, &end);
        if (end == arg || (*end && strcmp(end, "s") != 0) || v <= 0 || v > 3600)
            return -1;
        o->conn.request_timeout_ms = (int)(v * 1000);
        o->conn.dial_timeout_ms =
            o->conn.request_timeout_ms < 5000 ? o->conn.request_timeout_ms : 5000;
        return 0;
    }
    }
    return -1;
}

int ops_load_policy(const ops_common *o, const char *cmd, policy_encryption **p)
{
    es_error err = {0};
    if (policy_encryption_load(o->config, o->storage_prefix, p, &err) != 0) {
        fprintf(stderr, "etcdseal %s: %s\n", cmd, err.msg);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ inventory */

typedef struct label_count {
    char label[SCAN_LABEL_MAX];
    int64_t n;
} label_count;

typedef struct counts {
    int64_t keys, empty, plaintext, current, stale, undecryptable;
} counts;

typedef struct row {
    int rule;
    uint8_t *prefix;
    size_t prefix_len;
    counts c;
    label_count *labels;
    size_t n_labels;
} row;

#define MAX_PROBLEMS 20

typedef struct problem {
    uint8_t *key;
    size_t key_len;
    enum scan_class cls;
    char reason[ES_ERROR_MSG_MAX];
} problem;

typedef struct inventory {
    const policy_encryption *p;
    row *rows;
    size_t n_rows;
    counts total;
    int64_t scanned, unprotected;
    problem problems[MAX_PROBLEMS];
    size_t n_problems;
    int64_t revision;
} inventory;

static row *find_row(inventory *inv, int rule, const uint8_t *prefix, size_t len)
{
    for (size_t i = 0; i < inv->n_rows; i++)
        if (inv->rows[i].rule == rule && inv->rows[i].prefix_len == len &&
            memcmp(inv->rows[i].prefix, prefix, len) == 0)
            return &inv->rows[i];
    row *nr = realloc(inv->rows, (inv->n_rows + 1) * sizeof *nr);
    if (!nr)
        return NULL;
    inv->rows = nr;
    row *r = &nr[inv->n_rows];
    memset(r, 0, sizeof *r);
    r->rule = rule;
    r->prefix = malloc(len ? len : 1);
    if (!r->prefix)
        return NULL;
    memcpy(r->prefix, prefix, len);
    r->prefix_len = len;
    inv->n_rows++;
    return r;
}

static int count_label(row *r, const char *label)
{
    for (size_t i = 0; i < r->n_labels; i++)
        if (strcmp(r->labels[i].label, label) == 0) {
            r->labels[i].n++;
            return 0;
        }
    label_count *nl = realloc(r->labels, (r->n_labels + 1) * sizeof *nl);
    if (!nl)
        return -1;
    r->labels = nl;
    snprintf(nl[r->n_labels].label, sizeof nl[r->n_labels].label, "%s", label);
    nl[r->n_labels++].n = 1;
    return 0;
}

static void add_counts(counts *c, enum scan_class cls)
{
    c->keys++;
    switch (cls) {
    case SCAN_EMPTY:
        c->empty++;
        break;
    case SCAN_PLAINTEXT:
        c->plaintext++;
        break;
    case SCAN_CURRENT:
        c->current++;
        break;
    case SCAN_STALE:
        c->stale++;
        break;
    case SCAN_UNDECRYPTABLE:
        c->undecryptable++;
        break;
    default:
        break;
    }
}

static int on_kv(void *arg, const Mvccpb__KeyValue *kv, es_error *err)
{
    inventory *inv = arg;
    if (ops_interrupted)
        return es_error_set(err, 1, "interrupted");
    inv->scanned++;
    scan_result r;
    scan_classify(inv->p, kv->key.data, kv->key.len, kv->value.data, kv->value.len, NULL, &r);
    if (r.cls == SCAN_UNPROTECTED) {
        inv->unprotected++;
        return 0;
    }
    row *rw = find_row(inv, r.rule, r.row_prefix, r.row_prefix_len);
    if (!rw)
        return es_error_set(err, 13, "out of memory");
    add_counts(&rw->c, r.cls);
    add_counts(&inv->total, r.cls);
    if ((r.cls == SCAN_CURRENT || r.cls == SCAN_STALE) && count_label(rw, r.label) != 0)
        return es_error_set(err, 13, "out of memory");
    if ((r.cls == SCAN_PLAINTEXT || r.cls == SCAN_UNDECRYPTABLE) &&
        inv->n_problems < MAX_PROBLEMS) {
        problem *pb = &inv->problems[inv->n_problems];
        pb->key = malloc(kv->key.len ? kv->key.len : 1);
        if (!pb->key)
            return es_error_set(err, 13, "out of memory");
        memcpy(pb->key, kv->key.data, kv->key.len);
        pb->key_len = kv->key.len;
        pb->cls = r.cls;
        snprintf(pb->reason, sizeof pb->reason, "%s",
                 r.cls == SCAN_PLAINTEXT ? "value does not start with k8s:enc:" : r.err.msg);
        inv->n_problems++;
    }
    return 0;
}

static void inventory_free(inventory *inv)
{
    for (size_t i = 0; i < inv->n_rows; i++) {
        free(inv->rows[i].prefix);
        free(inv->rows[i].labels);
    }
    free(inv->rows);
    for (size_t i = 0; i < inv->n_problems; i++)
        free(inv->problems[i].key);
}

static int cmp_label(const void *a, const void *b)
{
    return strcmp(((const label_count *)a)->label, ((const label_count *)b)->label);
}

static int cmp_row(const void *a, const void *b)
{
    const row *x = a, *y = b;
    if (x->rule != y->rule)
        return x->rule < y->rule ? -1 : 1;
    size_t n = x->prefix_len < y->prefix_len ? x->prefix_len : y->prefix_len;
    int c = memcmp(x->prefix, y->prefix, n);
    return c ? c : (x->prefix_len < y->prefix_len ? -1 : x->prefix_len > y->prefix_len);
}

static void rule_resources(FILE *f, const policy_rule_view *v, bool json)
{
    for (size_t i = 0; i < v->rule->n_resources; i++) {
        const char *t = v->rule->resources[i].text;
        if (json) {
            fputs(i ? "," : "", f);
            ops_json_string(f, (const uint8_t *)t, strlen(t));
        } else {
            fprintf(f, "%s%s", i ? "," : "", t);
        }
    }
}

static void print_table(const inventory *inv, const char *source)
{
    printf("etcdseal verify: %s at revision %" PRId64 ": %" PRId64 " keys scanned, %" PRId64
           " protected, %" PRId64 " not covered by any rule\n\n",
           source, inv->revision, inv->scanned, inv->total.keys, inv->unprotected);
    printf("%-5s %-22s %-30s %8s %9s %8s %13s %6s  %s\n", "RULE", "RESOURCES", "PREFIX", "KEYS",
           "PLAINTEXT", "STALE", "UNDECRYPTABLE", "EMPTY", "READ BY (provider/key: keys)");
    size_t nr = policy_encryption_rule_count(inv->p);
    for (size_t ri = 0; ri < nr; ri++) {
        const policy_rule_view *v = policy_encryption_rule(inv->p, ri);
        char res[256] = "";
        size_t o = 0;
        for (size_t i = 0; i < v->rule->n_resources && o < sizeof res; i++)
            o += (size_t)snprintf(res + o, sizeof res - o, "%s%s", i ? "," : "",
                                  v->rule->resources[i].text);
        bool any = false;
        for (size_t i = 0; i < inv->n_rows; i++) {
            const row *r = &inv->rows[i];
            if (r->rule != (int)ri)
                continue;
            any = true;
            printf("%-5zu %-22.22s ", ri, res);
            int w = 0;
            for (size_t j = 0; j < r->prefix_len; j++, w++)
                if (r->prefix[j] >= 0x20 && r->prefix[j] < 0x7f)
                    putchar(r->prefix[j]);
                else
                    w += printf("\\x%02x", r->prefix[j]) - 1;
            printf("%*s %8" PRId64 " %9" PRId64 " %8" PRId64 " %13" PRId64 " %6" PRId64 "  ",
                   w < 30 ? 30 - w : 0, "", r->c.keys, r->c.plaintext, r->c.stale,
                   r->c.undecryptable, r->c.empty);
            for (size_t j = 0; j < r->n_labels; j++)
                printf("%s%s: %" PRId64, j ? ", " : "", r->labels[j].label, r->labels[j].n);
            putchar('\n');
        }
        if (!any)
            printf("%-5zu %-22.22s %-30s %8d %9d %8d %13d %6d\n", ri, res, "(no keys)", 0, 0, 0, 0,
                   0);
    }
    printf("%-5s %-22s %-30s %8" PRId64 " %9" PRId64 " %8" PRId64 " %13" PRId64 " %6" PRId64 "\n",
           "TOTAL", "", "", inv->total.keys, inv->total.plaintext, inv->total.stale,
           inv->total.undecryptable, inv->total.empty);
    if (inv->n_problems) {
        printf("\nfirst %zu problem key%s:\n", inv->n_problems, inv->n_problems == 1 ? "" : "s");
        for (size_t i = 0; i < inv->n_problems; i++) {
            printf("  %-13s ", scan_class_name(inv->problems[i].cls));
            ops_print_key(stdout, inv->problems[i].key, inv->problems[i].key_len);
            printf(": %s\n", inv->problems[i].reason);
        }
    }
    bool bad = inv->total.plaintext || inv->total.undecryptable;
    printf("\n%s: %" PRId64 " plaintext, %" PRId64 " undecryptable, %" PRId64
           " stale (run `etcdseal rewrap` to rewrite plaintext and stale values)\n",
           bad ? "NOT CLEAN" : "CLEAN", inv->total.plaintext, inv->total.undecryptable,
           inv->total.stale);
}

static void json_counts(const counts *c)
{
    printf("\"keys\":%" PRId64 ",\"empty\":%" PRId64 ",\"plaintext\":%" PRId64
           ",\"current\":%" PRId64 ",\"stale\":%" PRId64 ",\"undecryptable\":%" PRId64,
           c->keys, c->empty, c->plaintext, c->current, c->stale, c->undecryptable);
}

static void print_json(const inventory *inv, const char *source, bool snapshot)
{
    printf("{\"schema\":\"etcdseal.verify/v1\",\"source\":");
    ops_json_string(stdout, (const uint8_t *)source, strlen(source));
    printf(",\"snapshot\":%s,\"revision\":%" PRId64 ",\"storage_prefix\":",
           snapshot ? "true" : "false", inv->revision);
    const char *sp = policy_encryption_storage_prefix(inv->p);
    ops_json_string(stdout, (const uint8_t *)sp, strlen(sp));
    printf(",\"clean\":%s,\"scanned\":%" PRId64 ",\"unprotected\":%" PRId64 ",\"totals\":{",
           inv->total.plaintext || inv->total.undecryptable ? "false" : "true", inv->scanned,
           inv->unprotected);
    json_counts(&inv->total);
    printf("},\"rules\":[");
    size_t nr = policy_encryption_rule_count(inv->p);
    for (size_t ri = 0; ri < nr; ri++) {
        const policy_rule_view *v = policy_encryption_rule(inv->p, ri);
        printf("%s{\"rule\":%zu,\"resources\":[", ri ? "," : "", ri);
        rule_resources(stdout, v, true);
        printf("],\"providers\":");
        ops_json_string(stdout, (const uint8_t *)v->providers, strlen(v->providers));
        printf(",\"prefixes\":[");
        bool first = true;
        for (size_t i = 0; i < inv->n_rows; i++) {
            const row *r = &inv->rows[i];
            if (r->rule != (int)ri)
                continue;
            printf("%s{\"prefix\":", first ? "" : ",");
            first = false;
            ops_json_string(stdout, r->prefix, r->prefix_len);
            putchar(',');
            json_counts(&r->c);
            printf(",\"read_by\":{");
            for (size_t j = 0; j < r->n_labels; j++) {
                printf("%s", j ? "," : "");
                ops_json_string(stdout, (const uint8_t *)r->labels[j].label,
                                strlen(r->labels[j].label));
                printf(":%" PRId64, r->labels[j].n);
            }
            printf("}}");
        }
        printf("]}");
    }
    printf("],\"problems\":[");
    for (size_t i = 0; i < inv->n_problems; i++) {
        printf("%s{\"key\":", i ? "," : "");
        ops_json_string(stdout, inv->problems[i].key, inv->problems[i].key_len);
        printf(",\"class\":\"%s\",\"reason\":", scan_class_name(inv->problems[i].cls));
        ops_json_string(stdout, (const uint8_t *)inv->problems[i].reason,
                        strlen(inv->problems[i].reason));
        putchar('}');
    }
    printf("]}\n");
}

/* Walks every protected range at one revision. 0 done, -1 error printed. */
static int run_inventory(const ops_common *o, const etcdc_options *conn, inventory *inv)
{
    es_error err = {0};
    etcdc *c = NULL;
    scan_range *ranges = NULL;
    size_t n = 0;
    int rc = -1;
    buf_t end = BUF_INIT;
    if (etcdc_open(conn, &c, &err) != 0 ||
        scan_ranges_build(inv->p, o->prefix, &ranges, &n, &err) != 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *s = (const uint8_t *)ranges[i].start;
        size_t sl = strlen(ranges[i].start);
        if (scan_prefix_end(s, sl, &end) != 0) {
            es_error_set(&err, 13, "out of memory");
            goto out;
        }
        if (scan_walk(c, s, sl, end.data, end.len, o->limit, true, &inv->revision, on_kv, inv,
                      &err) != 0)
            goto out;
    }
    rc = 0;
out:
    if (rc != 0)
        fprintf(stderr, "etcdseal verify: %s\n", err.msg);
    buf_free(&end);
    scan_ranges_free(ranges, n);
    etcdc_close(c);
    return rc;
}

/* ------------------------------------------------------------------ --snapshot */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &l) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* fork + exec argv with stdout/stderr to log; the child dies with us. */
static pid_t spawn(char *const argv[], const char *log)
{
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0)
            dup2(nul, 0);
        setenv("ETCDCTL_API", "3", 1);
        execvp(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return pid;
}

static void stop_child(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    for (int i = 0; i < 100; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return;
        usleep(50000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void show_log_tail(const char *log)
{
    FILE *f = fopen(log, "r");
    if (!f)
        return;
    char line[512];
    /* last few lines: keep a small ring */
    char ring[8][512];
    int n = 0;
    while (fgets(line, sizeof line, f))
        snprintf(ring[n++ % 8], sizeof ring[0], "%s", line);
    fclose(f);
    for (int i = n > 8 ? n - 8 : 0; i < n; i++)
        fprintf(stderr, "  | %s", ring[i % 8]);
}

/* Restores `file`, starts a temporary etcd, fills *eps. Cleans up with snapshot_stop. */
typedef struct snap {
    char dir[256];
    char log[300];
    pid_t pid;
    char endpoint[64];
} snap;

static void snapshot_stop(snap *s)
{
    stop_child(s->pid);
    s->pid = -1;
    if (s->dir[0])
        nftw(s->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    s->dir[0] = '\0';
}

static int snapshot_start(const char *file, const char *etcd_bin, const char *etcdctl_bin, snap *s)
{
    const char *tmp = getenv("TMPDIR");
    s->pid = -1;
    snprintf(s->dir, sizeof s->dir, "%s/etcdseal-verify.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(s->dir)) {
        fprintf(stderr, "etcdseal verify: temporary directory: %s\n", strerror(errno));
        s->dir[0] = '\0';
        return -1;
    }
    if (access(file, R_OK) != 0) {
        fprintf(stderr, "etcdseal verify: --snapshot %s: %s\n", file, strerror(errno));
        return -1;
    }
    snprintf(s->log, sizeof s->log, "%s/etcd.log", s->dir);
    int cp = free_port(), pp = free_port();
    if (cp < 0 || pp < 0 || cp == pp) {
        fprintf(stderr, "etcdseal verify: no free loopback port\n");
        return -1;
    }
    char data[300], curl[64], purl[64], ic[128], token[64];
    snprintf(data, sizeof data, "%s/data", s->dir);
    snprintf(curl, sizeof curl, "http://127.0.0.1:%d", cp);
    snprintf(purl, sizeof purl, "http://127.0.0.1:%d", pp);
    snprintf(ic, sizeof ic, "etcdseal-verify=%s", purl);
    snprintf(token, sizeof token, "etcdseal-verify-%d", (int)getpid());
    char *restore[] = {(char *)etcdctl_bin,
                       "snapshot",
                       "restore",
                       (char *)file,
                       "--data-dir",
                       data,
                       "--name",
                       "etcdseal-verify",
                       "--initial-cluster",
                       ic,
                       "--initial-cluster-token",
                       token,
                       "--initial-advertise-peer-urls",
                       purl,
                       NULL};
    pid_t rp = spawn(restore, s->log);
    int st = 0;
    if (rp < 0 || waitpid(rp, &st, 0) != rp || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "etcdseal verify: `%s snapshot restore %s` failed:\n", etcdctl_bin, file);
        show_log_tail(s->log);
        return -1;
    }
    char *run[] = {(char *)etcd_bin,
                   "--name",
                   "etcdseal-verify",
                   "--data-dir",
                   data,
                   "--listen-client-urls",
                   curl,
                   "--advertise-client-urls",
                   curl,
                   "--listen-peer-urls",
                   purl,
                   "--initial-advertise-peer-urls",
                   purl,
                   "--initial-cluster",
                   ic,
                   "--initial-cluster-token",
                   token,
                   "--log-level",
                   "warn",
                   "--logger",
                   "zap",
                   NULL};
    s->pid = spawn(run, s->log);
    if (s->pid < 0) {
        fprintf(stderr, "etcdseal verify: fork: %s\n", strerror(errno));
        return -1;
    }
    snprintf(s->endpoint, sizeof s->endpoint, "127.0.0.1:%d", cp);
    /* ready = a Range answers (bounded: 30 s) */
    etcdc_options o = {
        .endpoints = s->endpoint, .dial_timeout_ms = 1000, .request_timeout_ms = 2000};
    long long deadline = ops_now_ms() + 30000;
    while (ops_now_ms() < deadline && !ops_interrupted) {
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            s->pid = -1;
            fprintf(stderr, "etcdseal verify: the temporary etcd exited during start:\n");
            show_log_tail(s->log);
            return -1;
        }
        etcdc *c = NULL;
        es_error err = {0};
        if (etcdc_open(&o, &c, &err) == 0) {
            Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
            req.key.data = (uint8_t *)"/";
            req.key.len = 1;
            req.count_only = true;
            Etcdserverpb__RangeResponse *resp = NULL;
            int r = etcdc_range(c, &req, &resp, &err);
            if (resp)
                etcdserverpb__range_response__free_unpacked(resp, NULL);
            etcdc_close(c);
            if (r == 0)
                return 0;
        }
        usleep(100000);
    }
    fprintf(stderr, "etcdseal verify: the temporary etcd did not answer within 30 s:\n");
    show_log_tail(s->log);
    return -1;
}

/* ------------------------------------------------------------------ command */

static void usage(FILE *f)
{
    fprintf(
        f, "usage: etcdseal verify --encryption-provider-config FILE\n"
           "                       (--endpoints E[,E...] [TLS flags] | --snapshot FILE)\n"
           "                       [--storage-prefix P] [--prefix P] [--limit N] [-o table|json]\n"
           "\n"
           "Reads etcd directly (not through the proxy) and reports, per rule and key prefix,\n"
           "how many values are plaintext, current, stale (readable, but not by the first\n"
           "provider/key) or undecryptable, and which provider/key reads them.\n"
           "\n"
           "  --endpoints E[,E...]               etcd client URLs (host:port, http://, https://)\n"
           "  --cacert FILE --cert FILE --key FILE  TLS to etcd (mTLS with --cert/--key)\n"
           "  --insecure-skip-tls-verify         do not verify etcd's certificate\n"
           "  --encryption-provider-config FILE  the EncryptionConfiguration in force\n"
           "  --storage-prefix P                 kube-apiserver --etcd-prefix (default /registry)\n"
           "  --prefix P                         scan only keys starting with P\n"
           "  --limit N                          keys per Range page (default 500)\n"
           "  --timeout SECS                     per request (default 30)\n"
           "  -o, --output table|json            output format (default table)\n"
           "  --snapshot FILE                    verify an etcd snapshot file instead: restored\n"
           "                                     with etcdctl into a temporary etcd on loopback\n"
           "  --etcd-binary PATH, --etcdctl-binary PATH   for --snapshot (default from PATH)\n"
           "\n"
           "Exit status: 0 clean, 1 plaintext or undecryptable values under a protected prefix,\n"
           "2 usage error, 3 the scan could not complete (connection, etcd error, snapshot).\n");
}

int cmd_verify(int argc, char **argv)
{
    enum { OPT_OUTPUT = 'o', OPT_SNAPSHOT = 1000, OPT_ETCD, OPT_ETCDCTL, OPT_HELP };
    static const struct option opts[] = {OPS_COMMON_LONG_OPTIONS,
                                         {"output", required_argument, NULL, OPT_OUTPUT},
                                         {"snapshot", required_argument, NULL, OPT_SNAPSHOT},
                                         {"etcd-binary", required_argument, NULL, OPT_ETCD},
                                         {"etcdctl-binary", required_argument, NULL, OPT_ETCDCTL},
                                         {"help", no_argument, NULL, OPT_HELP},
                                         {NULL, 0, NULL, 0}};
    ops_common o = {.storage_prefix = POLICY_DEFAULT_STORAGE_PREFIX, .limit = 500};
    const char *output = "table", *snapshot = NULL, *etcd_bin = "etcd", *etcdctl_bin = "etcdctl";
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        if (c == 'h' || c == OPT_HELP) {
            usage(stdout);
            return 0;
        } else if (c == OPT_OUTPUT) {
            output = optarg;
        } else if (c == OPT_SNAPSHOT) {
            snapshot = optarg;
        } else if (c == OPT_ETCD) {
            etcd_bin = optarg;
        } else if (c == OPT_ETCDCTL) {
            etcdctl_bin = optarg;
        } else if (c == '?' || ops_common_flag(&o, c, optarg) != 0) {
            fprintf(stderr, "etcdseal verify: unknown, incomplete or invalid flag \"%s\"\n\n",
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
    else if (!snapshot && !o.conn.endpoints)
        problem = "--endpoints (or --snapshot) is required";
    else if (snapshot && o.conn.endpoints)
        problem = "--snapshot and --endpoints exclude each other";
    else if (strcmp(output, "table") != 0 && strcmp(output, "json") != 0)
        problem = "-o must be table or json";
    if (problem) {
        fprintf(stderr, "etcdseal verify: %s\n\n", problem);
        usage(stderr);
        return 2;
    }
    policy_encryption *p = NULL;
    if (ops_load_policy(&o, "verify", &p) != 0)
        return 3;
    ops_install_signals();
    inventory inv = {.p = p};
    snap s = {.pid = -1};
    int rc = 3;
    etcdc_options conn = o.conn;
    const char *source = o.conn.endpoints;
    if (snapshot) {
        if (snapshot_start(snapshot, etcd_bin, etcdctl_bin, &s) != 0)
            goto out;
        conn = (etcdc_options){.endpoints = s.endpoint};
        source = snapshot;
    }
    if (run_inventory(&o, &conn, &inv) != 0)
        goto out;
    if (inv.n_rows)
        qsort(inv.rows, inv.n_rows, sizeof *inv.rows, cmp_row);
    for (size_t i = 0; i < inv.n_rows; i++)
        if (inv.rows[i].n_labels)
            qsort(inv.rows[i].labels, inv.rows[i].n_labels, sizeof *inv.rows[i].labels, cmp_label);
    if (strcmp(output, "json") == 0)
        print_json(&inv, source, snapshot != NULL);
    else
        print_table(&inv, snapshot ? "snapshot" : source);
    rc = inv.total.plaintext || inv.total.undecryptable ? 1 : 0;
out:
    if (snapshot)
        snapshot_stop(&s);
    inventory_free(&inv);
    policy_encryption_unref(p);
    return rc;
}
