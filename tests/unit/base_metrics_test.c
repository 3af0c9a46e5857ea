/* base_metrics_test.c - the metrics registry: sharded counters summed exactly across threads,
 * gauges, histogram bucket math, and the Prometheus text output parsed line by line. */
#include "base/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "testlib.h"

/* ------------------------------------------------------------ output parser */

typedef struct sample {
    char name[128];
    char labels[512]; /* raw text between the braces */
    char value[64];
} sample;

/* Parses `k="v",k2="v2"` strictly: valid names, only \\ \" \n escapes. Unescaped value of label
 * `want` goes to `out` (if found). Returns the number of labels, -1 on bad syntax. */
static int parse_labels(const char *s, const char *want, char *out, size_t cap)
{
    int n = 0;
    while (*s) {
        const char *k = s;
        while ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_' ||
               (s != k && *s >= '0' && *s <= '9'))
            s++;
        if (s == k || s[0] != '=' || s[1] != '"')
            return -1;
        size_t klen = (size_t)(s - k);
        s += 2;
        char val[512];
        size_t vl = 0;
        while (*s != '"') {
            if (!*s || *s == '\n' || vl + 1 >= sizeof val)
                return -1;
            if (*s == '\\') {
                s++;
                if (*s == 'n')
                    val[vl++] = '\n';
                else if (*s == '\\' || *s == '"')
                    val[vl++] = *s;
                else
                    return -1;
                s++;
            } else {
                val[vl++] = *s++;
            }
        }
        val[vl] = 0;
        s++;
        n++;
        if (want && strlen(want) == klen && strncmp(k, want, klen) == 0 && out && cap > vl)
            memcpy(out, val, vl + 1);
        if (*s == ',')
            s++;
        else if (*s)
            return -1;
    }
    return n;
}

/* Splits a sample line into name, labels and value; -1 when it is not a valid sample line. */
static int parse_sample(const char *line, sample *out)
{
    memset(out, 0, sizeof *out);
    size_t i = 0;
    while (line[i] && line[i] != '{' && line[i] != ' ' && i + 1 < sizeof out->name) {
        out->name[i] = line[i];
        i++;
    }
    if (i == 0)
        return -1;
    const char *p = line + i;
    if (*p == '{') {
        /* Find the closing brace outside quotes. */
        const char *q = p + 1;
        int inq = 0;
        while (*q && (inq || *q != '}')) {
            if (*q == '\\' && inq && q[1])
                q++;
            else if (*q == '"')
                inq = !inq;
            q++;
        }
        if (*q != '}' || (size_t)(q - p - 1) >= sizeof out->labels)
            return -1;
        memcpy(out->labels, p + 1, (size_t)(q - p - 1));
        if (parse_labels(out->labels, NULL, NULL, 0) < 0)
            return -1;
        p = q + 1;
    }
    if (*p != ' ' || !p[1] || strchr(p + 1, ' '))
        return -1;
    snprintf(out->value, sizeof out->value, "%s", p + 1);
    return 0;
}

/* Renders and splits into lines (modifies a private copy); returns the line count. */
static int render_lines(buf_t *b, char **lines, int max)
{
    buf_reset(b);
    if (metrics_render(b) < 0)
        return -1;
    if (b->len == 0)
        return 0;
    if (b->data[b->len - 1] != '\n')
        return -1;
    int n = 0;
    char *s = (char *)b->data;
    while (*s && n < max) {
        char *nl = strchr(s, '\n');
        *nl = 0;
        lines[n++] = s;
        s = nl + 1;
    }
    return n;
}

/* Value of the sample line with this exact name and label text, or NULL. */
static const char *find_value(char **lines, int n, const char *name, const char *labels,
                              sample *tmp)
{
    for (int i = 0; i < n; i++) {
        if (lines[i][0] == '#' || parse_sample(lines[i], tmp) < 0)
            continue;
        if (strcmp(tmp->name, name) == 0 && strcmp(tmp->labels, labels) == 0)
            return tmp->value;
    }
    return NULL;
}

/* ------------------------------------------------------------------- tests */

#define THREADS 4
#define ADDS_PER_THREAD 200000

typedef struct worker_arg {
    unsigned shard;
    metrics_counter *c;
    metrics_histogram *h;
    metrics_gauge *g;
} worker_arg;

static void *counter_worker(void *p)
{
    worker_arg *a = p;
    metrics_set_shard(a->shard);
    for (int i = 0; i < ADDS_PER_THREAD; i++) {
        metrics_counter_add(a->c, 1);
        metrics_gauge_add(a->g, (i & 1) ? -1 : 2);
    }
    metrics_counter_add(a->c, a->shard);
    return NULL;
}

static void test_counter_threads_sum_exactly(void)
{
    metrics_reset_for_tests();
    metrics_counter *c = metrics_counter_get("t_requests_total", "Requests.", "");
    metrics_gauge *g = metrics_gauge_get("t_inflight", "In flight.", "");
    CHECK(c != NULL);
    CHECK(g != NULL);
    pthread_t th[THREADS];
    /* Shards 0, 1, 7 and 66 (which wraps to 2): distinct shards, one shared with main. */
    worker_arg args[THREADS] = {
        {0, c, NULL, g}, {1, c, NULL, g}, {7, c, NULL, g}, {66, c, NULL, g}};
    for (int i = 0; i < THREADS; i++)
        CHECK_EQ_INT(pthread_create(&th[i], NULL, counter_worker, &args[i]), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    uint64_t want = (uint64_t)THREADS * ADDS_PER_THREAD + 0 + 1 + 7 + 66;
    CHECK_EQ_INT(metrics_counter_value(c), want);
    CHECK_EQ_INT(metrics_gauge_value(g), (int64_t)THREADS * (ADDS_PER_THREAD / 2));

    buf_t b = BUF_INIT;
    char *lines[64];
    sample tmp;
    int n = render_lines(&b, lines, 64);
    char wanttxt[32];
    snprintf(wanttxt, sizeof wanttxt, "%llu", (unsigned long long)want);
    const char *v = find_value(lines, n, "t_requests_total", "", &tmp);
    CHECK(v != NULL);
    CHECK_EQ_STR(v, wanttxt);
    buf_free(&b);
}

static void test_same_pair_same_object(void)
{
    metrics_reset_for_tests();
    metrics_counter *a = metrics_counter_get("t_ops_total", "Ops.", "op=\"get\"");
    metrics_counter *b = metrics_counter_get("t_ops_total", "Ops.", "op=\"get\"");
    metrics_counter *c = metrics_counter_get("t_ops_total", "Ops.", "op=\"put\"");
    CHECK(a != NULL && a == b);
    CHECK(c != NULL && c != a);
    /* Same name, other type: refused; bad names: refused; NULL is a harmless no-op. */
    CHECK(metrics_gauge_get("t_ops_total", "x", "op=\"get\"") == NULL);
    CHECK(metrics_gauge_get("t_ops_total", "x", "op=\"del\"") == NULL);
    CHECK(metrics_counter_get("9starts_with_digit", "x", "") == NULL);
    CHECK(metrics_counter_get("has-dash", "x", "") == NULL);
    CHECK(metrics_counter_get("", "x", "") == NULL);
    CHECK(metrics_histogram_get("t_h", "x", "", (const double[]){2, 1}, 2) == NULL);
    CHECK(metrics_histogram_get("t_h2", "x", "", NULL, 0) == NULL);
    metrics_counter_add(NULL, 1);
    metrics_gauge_set(NULL, 1);
    metrics_histogram_observe(NULL, 1);
    CHECK_EQ_INT(metrics_counter_value(NULL), 0);
    metrics_counter_add(a, 5);
    CHECK_EQ_INT(metrics_counter_value(b), 5);
    CHECK_EQ_INT(metrics_counter_value(c), 0);
}

static void test_gauge_set_and_add(void)
{
    metrics_reset_for_tests();
    metrics_gauge *g = metrics_gauge_get("t_conns", "Connections.", "side=\"client\"");
    metrics_set_shard(3);
    metrics_gauge_add(g, 10);
    metrics_set_shard(0);
    metrics_gauge_add(g, -4);
    CHECK_EQ_INT(metrics_gauge_value(g), 6);
    metrics_gauge_set(g, -42); /* clears shard 3 */
    CHECK_EQ_INT(metrics_gauge_value(g), -42);
    metrics_set_shard(3);
    metrics_gauge_add(g, 2);
    metrics_set_shard(0);
    CHECK_EQ_INT(metrics_gauge_value(g), -40);

    buf_t b = BUF_INIT;
    char *lines[16];
    sample tmp;
    int n = render_lines(&b, lines, 16);
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_STR(lines[1], "# TYPE t_conns gauge");
    const char *v = find_value(lines, n, "t_conns", "side=\"client\"", &tmp);
    CHECK(v != NULL);
    CHECK_EQ_STR(v, "-40");
    buf_free(&b);
}

static void test_histogram_bucket_math(void)
{
    metrics_reset_for_tests();
    const double bounds[] = {0.5, 1, 2.5};
    metrics_histogram *h =
        metrics_histogram_get("t_latency_seconds", "Latency.", "m=\"Put\"", bounds, 3);
    CHECK(h != NULL);
    /* Upper bounds are inclusive: 0.5 lands in le=0.5, 1 in le=1. */
    const double obs[] = {0.25, 0.5, 0.75, 1, 1.5, 2.5, 3, 100};
    for (size_t i = 0; i < sizeof obs / sizeof obs[0]; i++)
        metrics_histogram_observe(h, obs[i]);
    CHECK_EQ_INT(metrics_histogram_count(h), 8);
    CHECK(fabs(metrics_histogram_sum(h) - 109.5) < 1e-9);

    buf_t b = BUF_INIT;
    char *lines[32];
    sample tmp;
    int n = render_lines(&b, lines, 32);
    CHECK_EQ_INT(n, 2 + 4 + 2);
    CHECK_EQ_STR(lines[0], "# HELP t_latency_seconds Latency.");
    CHECK_EQ_STR(lines[1], "# TYPE t_latency_seconds histogram");
    struct {
        const char *labels, *value;
    } want[] = {{"m=\"Put\",le=\"0.5\"", "2"},
                {"m=\"Put\",le=\"1\"", "4"},
                {"m=\"Put\",le=\"2.5\"", "6"},
                {"m=\"Put\",le=\"+Inf\"", "8"}};
    for (size_t i = 0; i < 4; i++) {
        CHECK_EQ_INT(parse_sample(lines[2 + i], &tmp), 0);
        CHECK_EQ_STR(tmp.name, "t_latency_seconds_bucket");
        CHECK_EQ_STR(tmp.labels, want[i].labels);
        CHECK_EQ_STR(tmp.value, want[i].value);
    }
    CHECK_EQ_STR(lines[6], "t_latency_seconds_sum{m=\"Put\"} 109.5");
    CHECK_EQ_STR(lines[7], "t_latency_seconds_count{m=\"Put\"} 8");

    /* Unlabelled histogram: le is the only label, _sum/_count carry no braces. */
    metrics_histogram *u =
        metrics_histogram_get("t_size_bytes", "Sizes.", "", (const double[]){64, 1024}, 2);
    metrics_histogram_observe(u, 64);
    metrics_histogram_observe(u, 65);
    n = render_lines(&b, lines, 32);
    const char *v = find_value(lines, n, "t_size_bytes_bucket", "le=\"64\"", &tmp);
    CHECK(v && strcmp(v, "1") == 0);
    v = find_value(lines, n, "t_size_bytes_bucket", "le=\"1024\"", &tmp);
    CHECK(v && strcmp(v, "2") == 0);
    v = find_value(lines, n, "t_size_bytes_sum", "", &tmp);
    CHECK(v && strcmp(v, "129") == 0);
    v = find_value(lines, n, "t_size_bytes_count", "", &tmp);
    CHECK(v && strcmp(v, "2") == 0);
    buf_free(&b);
}

static void *histo_worker(void *p)
{
    worker_arg *a = p;
    metrics_set_shard(a->shard);
    for (int i = 0; i < ADDS_PER_THREAD / 4; i++)
        metrics_histogram_observe(a->h, (i % 3) * 0.001); /* 0, 1 ms, 2 ms */
    return NULL;
}

static void test_histogram_threads_and_default_buckets(void)
{
    metrics_reset_for_tests();
    CHECK_EQ_INT(metrics_latency_buckets_len, 17);
    CHECK(metrics_latency_buckets[0] == 0.00005);
    CHECK(metrics_latency_buckets[metrics_latency_buckets_len - 1] == 10);
    for (size_t i = 1; i < metrics_latency_buckets_len; i++) {
        double r = metrics_latency_buckets[i] / metrics_latency_buckets[i - 1];
        CHECK_MSG(r >= 2 && r <= 2.5 + 1e-9, "step %zu ratio %g", i, r);
    }
    metrics_histogram *h = metrics_histogram_get("t_op_seconds", "Op.", "", metrics_latency_buckets,
                                                 metrics_latency_buckets_len);
    pthread_t th[THREADS];
    worker_arg args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (worker_arg){(unsigned)(i * 5), NULL, h, NULL};
        CHECK_EQ_INT(pthread_create(&th[i], NULL, histo_worker, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    uint64_t per = ADDS_PER_THREAD / 4;
    CHECK_EQ_INT(metrics_histogram_count(h), THREADS * per);
    /* Per thread: per/3 rounds of 0 + 1 ms + 2 ms (per is divisible by... check exactly). */
    uint64_t ones = 0, twos = 0;
    for (uint64_t i = 0; i < per; i++) {
        ones += i % 3 == 1;
        twos += i % 3 == 2;
    }
    double want_sum = THREADS * (ones * 0.001 + twos * 0.002);
    CHECK_MSG(fabs(metrics_histogram_sum(h) - want_sum) < 1e-6, "sum %.9f want %.9f",
              metrics_histogram_sum(h), want_sum);

    buf_t b = BUF_INIT;
    char *lines[64];
    sample tmp;
    int n = render_lines(&b, lines, 64);
    CHECK_EQ_INT(n, 2 + 18 + 2);
    const char *v = find_value(lines, n, "t_op_seconds_bucket", "le=\"5e-05\"", &tmp);
    CHECK(v != NULL); /* zeros land in the first bucket */
    char want[32];
    snprintf(want, sizeof want, "%llu", (unsigned long long)(THREADS * (per - ones - twos)));
    CHECK(v && strcmp(v, want) == 0);
    v = find_value(lines, n, "t_op_seconds_bucket", "le=\"0.001\"", &tmp);
    snprintf(want, sizeof want, "%llu", (unsigned long long)(THREADS * (per - twos)));
    CHECK(v && strcmp(v, want) == 0);
    v = find_value(lines, n, "t_op_seconds_bucket", "le=\"0.0025\"", &tmp);
    snprintf(want, sizeof want, "%llu", (unsigned long long)(THREADS * per));
    CHECK(v && strcmp(v, want) == 0);
    CHECK(find_value(lines, n, "t_op_seconds_bucket", "le=\"0.00025\"", &tmp) != NULL);
    CHECK(find_value(lines, n, "t_op_seconds_bucket", "le=\"2.5\"", &tmp) != NULL);
    CHECK(find_value(lines, n, "t_op_seconds_bucket", "le=\"10\"", &tmp) != NULL);
    buf_free(&b);
}

/* Floats (bounds and sums) print like Go's FormatFloat(v, 'g', -1, 64), as Prometheus does. */
static void test_float_format(void)
{
    static const struct {
        double v;
        const char *want;
    } cases[] = {{0, "0"},
                 {0.3, "0.3"},
                 {10, "10"},
                 {-2.5, "-2.5"},
                 {0.0001, "0.0001"},
                 {0.00001234, "1.234e-05"},
                 {123456.5, "123456.5"},
                 {1e6, "1e+06"},
                 {1234567, "1.234567e+06"},
                 {0.1 + 0.2, "0.30000000000000004"},
                 {INFINITY, "+Inf"}};
    buf_t b = BUF_INIT;
    char *lines[16];
    sample tmp;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        metrics_reset_for_tests();
        metrics_histogram *h = metrics_histogram_get("t_f", "F.", "", (const double[]){1}, 1);
        metrics_histogram_observe(h, cases[i].v);
        int n = render_lines(&b, lines, 16);
        const char *v = find_value(lines, n, "t_f_sum", "", &tmp);
        CHECK_MSG(v && strcmp(v, cases[i].want) == 0, "%.17g printed as %s, want %s", cases[i].v,
                  v ? v : "(none)", cases[i].want);
    }
    buf_free(&b);
}

typedef struct busy_arg {
    unsigned shard;
    metrics_counter *c;
    metrics_histogram *h;
    _Atomic int *stop;
} busy_arg;

static void *busy_worker(void *p)
{
    busy_arg *a = p;
    metrics_set_shard(a->shard);
    for (int i = 0; i < 5000000 && !atomic_load(a->stop); i++) {
        metrics_counter_add(a->c, 1);
        metrics_histogram_observe(a->h, (i % 7) * 0.01);
    }
    return NULL;
}

/* Scrapes while two workers update: every scrape parses, counters never go backwards, and a
 * histogram's +Inf bucket always equals its _count. */
static void test_render_during_updates(void)
{
    metrics_reset_for_tests();
    metrics_counter *c = metrics_counter_get("t_busy_total", "Busy.", "");
    metrics_histogram *h = metrics_histogram_get(
        "t_busy_seconds", "Busy.", "", metrics_latency_buckets, metrics_latency_buckets_len);
    _Atomic int stop = 0;
    busy_arg args[2] = {{1, c, h, &stop}, {2, c, h, &stop}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        CHECK_EQ_INT(pthread_create(&th[i], NULL, busy_worker, &args[i]), 0);
    buf_t b = BUF_INIT;
    char *lines[64];
    sample tmp;
    unsigned long long last = 0;
    int bad = 0;
    for (int round = 0; round < 200; round++) {
        int n = render_lines(&b, lines, 64);
        bad += n != 3 + 2 + 18 + 2;
        const char *v = find_value(lines, n, "t_busy_total", "", &tmp);
        unsigned long long now = v ? strtoull(v, NULL, 10) : 0;
        bad += !v || now < last;
        last = now;
        v = find_value(lines, n, "t_busy_seconds_bucket", "le=\"+Inf\"", &tmp);
        char inf[64];
        snprintf(inf, sizeof inf, "%s", v ? v : "?");
        v = find_value(lines, n, "t_busy_seconds_count", "", &tmp);
        bad += !v || strcmp(v, inf) != 0;
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ_INT(bad, 0);
    CHECK(last > 0);
    buf_free(&b);
}

static void test_label_escaping(void)
{
    metrics_reset_for_tests();
    buf_t l = BUF_INIT;
    CHECK_EQ_INT(metrics_labels_add(&l, "key", "a\"b\\c\nd"), 0);
    CHECK_EQ_INT(metrics_labels_add(&l, "provider", "aescbc"), 0);
    CHECK_EQ_STR((const char *)l.data, "key=\"a\\\"b\\\\c\\nd\",provider=\"aescbc\"");
    CHECK_EQ_INT(metrics_labels_add(&l, "bad-name", "x"), -1);
    CHECK_EQ_INT(metrics_labels_add(&l, "", "x"), -1);
    CHECK_EQ_STR((const char *)l.data, "key=\"a\\\"b\\\\c\\nd\",provider=\"aescbc\"");

    metrics_counter *c =
        metrics_counter_get("t_escaped_total", "Help with \\ and\nnewline.", (const char *)l.data);
    metrics_counter_add(c, 3);
    buf_t b = BUF_INIT;
    char *lines[16];
    sample tmp;
    int n = render_lines(&b, lines, 16);
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_STR(lines[0], "# HELP t_escaped_total Help with \\\\ and\\nnewline.");
    CHECK_EQ_INT(parse_sample(lines[2], &tmp), 0);
    char val[64] = "";
    CHECK_EQ_INT(parse_labels(tmp.labels, "key", val, sizeof val), 2);
    CHECK_EQ_STR(val, "a\"b\\c\nd");
    CHECK_EQ_STR(tmp.value, "3");
    buf_free(&b);
    buf_free(&l);
}

static void test_render_families_once_and_stable(void)
{
    metrics_reset_for_tests();
    /* Families interleaved at registration: output groups each family, in registration order. */
    const char *fam[] = {"t_b_total", "t_a_total", "t_c"};
    metrics_counter *b1 = metrics_counter_get(fam[0], "B.", "x=\"1\"");
    metrics_counter *a1 = metrics_counter_get(fam[1], "A.", "");
    metrics_counter *b2 = metrics_counter_get(fam[0], "B (ignored second help).", "x=\"2\"");
    metrics_gauge *c1 = metrics_gauge_get(fam[2], "C.", "y=\"z\"");
    metrics_counter *b3 = metrics_counter_get(fam[0], "B.", "x=\"3\"");
    metrics_counter_add(b1, 1);
    metrics_counter_add(a1, (uint64_t)1 << 40); /* integers, never exponent notation */
    metrics_counter_add(b2, 2);
    metrics_gauge_set(c1, 7);
    metrics_counter_add(b3, 3);

    buf_t b = BUF_INIT;
    char *lines[64];
    int n = render_lines(&b, lines, 64);
    CHECK_EQ_INT(n, 3 * 2 + 5);
    int help_seen[3] = {0}, type_seen[3] = {0};
    int cur = -1, done[3] = {0};
    sample s;
    for (int i = 0; i < n; i++) {
        char name[128];
        if (strncmp(lines[i], "# HELP ", 7) == 0 || strncmp(lines[i], "# TYPE ", 7) == 0) {
            CHECK_EQ_INT(sscanf(lines[i] + 7, "%127s", name), 1);
            for (int f = 0; f < 3; f++) {
                if (strcmp(name, fam[f]) != 0)
                    continue;
                if (lines[i][2] == 'H') {
                    help_seen[f]++;
                    CHECK(!done[f]);
                    if (cur >= 0)
                        done[cur] = 1;
                    cur = f;
                } else {
                    type_seen[f]++;
                    CHECK_EQ_INT(cur, f);
                }
            }
            continue;
        }
        CHECK_MSG(parse_sample(lines[i], &s) == 0, "line %d: %s", i, lines[i]);
        CHECK_MSG(cur >= 0 && strcmp(s.name, fam[cur]) == 0, "sample %s outside its family",
                  s.name);
    }
    for (int f = 0; f < 3; f++) {
        CHECK_EQ_INT(help_seen[f], 1);
        CHECK_EQ_INT(type_seen[f], 1);
    }
    CHECK_EQ_STR(lines[0], "# HELP t_b_total B.");
    CHECK_EQ_STR(lines[1], "# TYPE t_b_total counter");
    CHECK_EQ_STR(lines[2], "t_b_total{x=\"1\"} 1");
    CHECK_EQ_STR(lines[3], "t_b_total{x=\"2\"} 2");
    CHECK_EQ_STR(lines[4], "t_b_total{x=\"3\"} 3");
    CHECK_EQ_STR(lines[7], "t_a_total 1099511627776");
    CHECK_EQ_STR(lines[10], "t_c{y=\"z\"} 7");

    /* Two scrapes with no updates in between are byte-identical. */
    buf_t r1 = BUF_INIT, r2 = BUF_INIT;
    CHECK_EQ_INT(metrics_render(&r1), 0);
    CHECK_EQ_INT(metrics_render(&r2), 0);
    CHECK_EQ_MEM(r1.data, r1.len, r2.data, r2.len);
    /* render appends */
    CHECK_EQ_INT(metrics_render(&r1), 0);
    CHECK_EQ_INT(r1.len, 2 * r2.len);
    buf_free(&r1);
    buf_free(&r2);
    buf_free(&b);
}

static void test_many_series(void)
{
    metrics_reset_for_tests();
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    enum { N = 2000 };
    static metrics_counter *cs[N];
    static metrics_histogram *hs[N / 10];
    char labels[64];
    for (int i = 0; i < N; i++) {
        snprintf(labels, sizeof labels, "i=\"%d\"", i);
        cs[i] = metrics_counter_get("t_many_total", "Many.", labels);
        if (i % 10 == 0)
            hs[i / 10] =
                metrics_histogram_get("t_many_seconds", "Many.", labels, metrics_latency_buckets,
                                      metrics_latency_buckets_len);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double reg_ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
    int ok = 1;
    for (int i = 0; i < N; i++) {
        ok &= cs[i] != NULL;
        metrics_set_shard((unsigned)i % 8);
        metrics_counter_add(cs[i], (uint64_t)i);
        if (i % 10 == 0)
            metrics_histogram_observe(hs[i / 10], 0.01);
    }
    metrics_set_shard(0);
    CHECK(ok);
    for (int i = 0; i < N; i++)
        ok &= metrics_counter_value(cs[i]) == (uint64_t)i;
    CHECK(ok);
    /* Re-lookup finds the same objects. */
    CHECK(metrics_counter_get("t_many_total", "Many.", "i=\"1234\"") == cs[1234]);
    buf_t b = BUF_INIT;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_EQ_INT(metrics_render(&b), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double render_ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
    CHECK(strstr((const char *)b.data, "t_many_total{i=\"1999\"} 1999\n") != NULL);
    CHECK(strstr((const char *)b.data, "t_many_seconds_count{i=\"1990\"} 1\n") != NULL);
    fprintf(stderr,
            "  2000 counters + 200 histograms: register %.2f ms, render %.2f ms, %zu bytes\n",
            reg_ms, render_ms, b.len);
    buf_free(&b);
}

int main(int argc, char **argv)
{
    (void)argc;
    TEST_BEGIN(argv[0]);
    RUN(test_counter_threads_sum_exactly);
    RUN(test_same_pair_same_object);
    RUN(test_gauge_set_and_add);
    RUN(test_histogram_bucket_math);
    RUN(test_histogram_threads_and_default_buckets);
    RUN(test_float_format);
    RUN(test_render_during_updates);
    RUN(test_label_escaping);
    RUN(test_render_families_once_and_stable);
    RUN(test_many_series);
    metrics_reset_for_tests();
    return TEST_EXIT();
}
