/* metrics.c - the process-wide metrics registry (see metrics.h).
 *
 * Layout. Every series owns a run of consecutive 64-bit "slots" (a counter or gauge one slot, a
 * histogram one slot per bucket plus one for the sum). Slot numbers are handed out once, under
 * the registry mutex, and are the same in every shard. Each shard keeps its own slot arena made
 * of fixed-size chunks, allocated on first touch of that shard (so memory grows with the shards
 * actually used, not with METRICS_MAX_SHARDS) and aligned to cache lines. Two worker threads
 * therefore never write the same cache line, without padding every series: ~2,000 series cost
 * ~10k slots = ~80 KiB per active shard. A run never straddles two chunks.
 *
 * Updates: one acquire load of the chunk pointer, one relaxed atomic add (histogram sums: a
 * relaxed CAS loop on the double's bits in the thread's own shard, so it is uncontended).
 * Render takes the mutex (to walk the family list, never held by updates) and sums the shards.
 * A histogram's _count is the sum of its buckets, so `le="+Inf"` always equals _count.
 *
 * Families keep registration order, and series within a family too, so output is stable.
 * A name registered again with another type, or an invalid name, yields NULL (logged);
 * every update and read function accepts NULL and then does nothing.
 */
#include "base/metrics.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

#define CHUNK_SHIFT 9
#define CHUNK_SLOTS (1u << CHUNK_SHIFT) /* 512 slots = 4 KiB per chunk */
#define MAX_CHUNKS 256                  /* 131072 slots per shard */
#define CACHE_LINE 64
#define HASH_BUCKETS 1024

typedef _Atomic uint64_t mslot;

enum kind { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM };

struct family;

typedef struct series {
    struct family *fam;
    char *labels;
    uint32_t slot;            /* first slot of the run */
    uint32_t n_slots;         /* counter/gauge 1; histogram n_bounds + 2 */
    double *bounds;           /* histogram only */
    size_t n_bounds;          /* histogram only */
    uint64_t hash;            /* of (name, labels) */
    struct series *next;      /* in family, registration order */
    struct series *hash_next; /* in g_series_hash */
} series;

struct metrics_counter {
    series base;
};
struct metrics_gauge {
    series base;
};
struct metrics_histogram {
    series base;
};

typedef struct family {
    char *name;
    char *help;
    enum kind kind;
    series *first, *last;
    struct family *next;      /* registration order */
    struct family *hash_next; /* in g_family_hash */
} family;

const double metrics_latency_buckets[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                          0.005,   0.01,   0.025,   0.05,   0.1,   0.25,
                                          0.5,     1,      2.5,     5,      10};
const size_t metrics_latency_buckets_len =
    sizeof(metrics_latency_buckets) / sizeof(metrics_latency_buckets[0]);

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static family *g_families_first, *g_families_last;
static family *g_family_hash[HASH_BUCKETS];
static series *g_series_hash[HASH_BUCKETS];
static uint32_t g_next_slot;
static _Atomic(mslot *) g_chunks[METRICS_MAX_SHARDS][MAX_CHUNKS];
static _Atomic uint64_t g_shards_used; /* bit per shard that owns at least one chunk */
static mslot g_discard[CHUNK_SLOTS];   /* target of updates when a chunk cannot be allocated */

static _Thread_local unsigned t_shard;

void metrics_set_shard(unsigned shard)
{
    t_shard = shard % METRICS_MAX_SHARDS;
}

/* ------------------------------------------------------------------ slots */

static mslot *chunk_create(unsigned shard, uint32_t chunk)
{
    mslot *fresh = aligned_alloc(CACHE_LINE, CHUNK_SLOTS * sizeof(mslot));
    if (!fresh)
        return NULL;
    for (uint32_t i = 0; i < CHUNK_SLOTS; i++)
        atomic_init(&fresh[i], 0);
    mslot *expected = NULL;
    if (atomic_compare_exchange_strong_explicit(&g_chunks[shard][chunk], &expected, fresh,
                                                memory_order_acq_rel, memory_order_acquire)) {
        atomic_fetch_or_explicit(&g_shards_used, (uint64_t)1 << shard, memory_order_release);
        return fresh;
    }
    free(fresh); /* another thread of the same shard won the race */
    return expected;
}

/* The run of slots of `s` in `shard`, creating the shard's chunk on first touch. */
static inline mslot *run_for_update(const series *s, unsigned shard)
{
    uint32_t chunk = s->slot >> CHUNK_SHIFT;
    mslot *c = atomic_load_explicit(&g_chunks[shard][chunk], memory_order_acquire);
    if (!c) {
        c = chunk_create(shard, chunk);
        if (!c)
            return g_discard;
    }
    return c + (s->slot & (CHUNK_SLOTS - 1));
}

/* The run of slots of `s` in `shard`, or NULL when that shard never touched the chunk. */
static inline mslot *run_for_read(const series *s, unsigned shard)
{
    mslot *c = atomic_load_explicit(&g_chunks[shard][s->slot >> CHUNK_SHIFT], memory_order_acquire);
    return c ? c + (s->slot & (CHUNK_SLOTS - 1)) : NULL;
}

/* Lists the shards that were ever touched (few: the workers and shard 0); returns the count. */
static unsigned used_shards(unsigned out[METRICS_MAX_SHARDS])
{
    unsigned n = 0;
    for (uint64_t m = atomic_load_explicit(&g_shards_used, memory_order_acquire); m; m &= m - 1)
        out[n++] = (unsigned)__builtin_ctzll(m);
    return n;
}

static uint64_t sum_slot(const series *s, uint32_t k)
{
    uint64_t total = 0;
    unsigned sh[METRICS_MAX_SHARDS], n = used_shards(sh);
    for (unsigned i = 0; i < n; i++) {
        mslot *r = run_for_read(s, sh[i]);
        if (r)
            total += atomic_load_explicit(&r[k], memory_order_relaxed);
    }
    return total;
}

static double bits_to_double(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static uint64_t double_to_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

/* --------------------------------------------------------------- registry */

static uint64_t hash_str(uint64_t h, const char *s)
{
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t hash_series(const char *name, const char *labels)
{
    uint64_t h = hash_str(14695981039346656037ull, name);
    h ^= 0xff; /* separator: ("ab","c") and ("a","bc") differ */
    h *= 1099511628211ull;
    return hash_str(h, labels);
}

static bool valid_name(const char *name)
{
    if (!name || !*name)
        return false;
    for (const char *p = name; *p; p++) {
        char c = *p;
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
        if (!alpha && !(p != name && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

static const char *kind_name(enum kind k)
{
    return k == KIND_COUNTER ? "counter" : k == KIND_GAUGE ? "gauge" : "histogram";
}

static family *family_find(const char *name, uint64_t h)
{
    for (family *f = g_family_hash[h % HASH_BUCKETS]; f; f = f->hash_next)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

static family *family_get(const char *name, const char *help, enum kind kind)
{
    uint64_t h = hash_str(14695981039346656037ull, name);
    family *f = family_find(name, h);
    if (f) {
        if (f->kind != kind) {
            log_error("metric registered with two types|name=%s first=%s now=%s", name,
                      kind_name(f->kind), kind_name(kind));
            return NULL;
        }
        return f;
    }
    f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    if (!f->name || !f->help) {
        free(f->name);
        free(f->help);
        free(f);
        return NULL;
    }
    f->kind = kind;
    f->hash_next = g_family_hash[h % HASH_BUCKETS];
    g_family_hash[h % HASH_BUCKETS] = f;
    if (g_families_last)
        g_families_last->next = f;
    else
        g_families_first = f;
    g_families_last = f;
    return f;
}

/* Reserves `n` consecutive slots that do not straddle a chunk; -1 when the arena is full. */
static int slots_reserve(uint32_t n, uint32_t *out)
{
    uint32_t start = g_next_slot;
    if ((start & (CHUNK_SLOTS - 1)) + n > CHUNK_SLOTS)
        start = (start | (CHUNK_SLOTS - 1)) + 1;
    if ((uint64_t)start + n > (uint64_t)MAX_CHUNKS * CHUNK_SLOTS)
        return -1;
    *out = start;
    g_next_slot = start + n;
    return 0;
}

static series *series_get(const char *name, const char *help, const char *labels, enum kind kind,
                          const double *bounds, size_t n_bounds)
{
    if (!labels)
        labels = "";
    if (!valid_name(name)) {
        log_error("invalid metric name|name=%s", name ? name : "(null)");
        return NULL;
    }
    if (kind == KIND_HISTOGRAM) {
        bool ok = n_bounds > 0 && n_bounds + 2 <= CHUNK_SLOTS && bounds;
        for (size_t i = 0; ok && i < n_bounds; i++)
            ok = !isnan(bounds[i]) && (i == 0 || bounds[i] > bounds[i - 1]);
        if (!ok) {
            log_error("invalid histogram buckets|name=%s", name);
            return NULL;
        }
    }
    uint64_t h = hash_series(name, labels);
    series *out = NULL;
    pthread_mutex_lock(&g_mu);
    for (series *s = g_series_hash[h % HASH_BUCKETS]; s; s = s->hash_next) {
        if (s->hash == h && strcmp(s->fam->name, name) == 0 && strcmp(s->labels, labels) == 0) {
            if (s->fam->kind == kind)
                out = s;
            else
                log_error("metric registered with two types|name=%s", name);
            goto done;
        }
    }
    family *f = family_get(name, help, kind);
    if (!f)
        goto done;
    series *s = calloc(1, sizeof(struct metrics_histogram));
    if (!s)
        goto done;
    s->labels = strdup(labels);
    s->n_slots = kind == KIND_HISTOGRAM ? (uint32_t)n_bounds + 2 : 1;
    if (kind == KIND_HISTOGRAM) {
        s->bounds = malloc(n_bounds * sizeof(double));
        if (s->bounds)
            memcpy(s->bounds, bounds, n_bounds * sizeof(double));
        s->n_bounds = n_bounds;
    }
    bool alloc_ok = s->labels && (kind != KIND_HISTOGRAM || s->bounds);
    if (!alloc_ok || slots_reserve(s->n_slots, &s->slot) < 0) {
        if (alloc_ok)
            log_error("metrics arena full|name=%s", name);
        free(s->labels);
        free(s->bounds);
        free(s);
        goto done;
    }
    s->fam = f;
    s->hash = h;
    s->hash_next = g_series_hash[h % HASH_BUCKETS];
    g_series_hash[h % HASH_BUCKETS] = s;
    if (f->last)
        f->last->next = s;
    else
        f->first = s;
    f->last = s;
    out = s;
done:
    pthread_mutex_unlock(&g_mu);
    return out;
}

void metrics_reset_for_tests(void)
{
    pthread_mutex_lock(&g_mu);
    for (family *f = g_families_first, *fn; f; f = fn) {
        fn = f->next;
        for (series *s = f->first, *sn; s; s = sn) {
            sn = s->next;
            free(s->labels);
            free(s->bounds);
            free(s);
        }
        free(f->name);
        free(f->help);
        free(f);
    }
    g_families_first = g_families_last = NULL;
    memset(g_family_hash, 0, sizeof g_family_hash);
    memset(g_series_hash, 0, sizeof g_series_hash);
    g_next_slot = 0;
    for (unsigned sh = 0; sh < METRICS_MAX_SHARDS; sh++)
        for (unsigned c = 0; c < MAX_CHUNKS; c++)
            free(atomic_exchange_explicit(&g_chunks[sh][c], NULL, memory_order_acq_rel));
    atomic_store(&g_shards_used, 0);
    pthread_mutex_unlock(&g_mu);
}

/* ------------------------------------------------------------------ updates */

metrics_counter *metrics_counter_get(const char *name, const char *help, const char *labels)
{
    return (metrics_counter *)series_get(name, help, labels, KIND_COUNTER, NULL, 0);
}

void metrics_counter_add(metrics_counter *c, uint64_t n)
{
    if (!c)
        return;
    atomic_fetch_add_explicit(run_for_update(&c->base, t_shard), n, memory_order_relaxed);
}

uint64_t metrics_counter_value(const metrics_counter *c)
{
    return c ? sum_slot(&c->base, 0) : 0;
}

metrics_gauge *metrics_gauge_get(const char *name, const char *help, const char *labels)
{
    return (metrics_gauge *)series_get(name, help, labels, KIND_GAUGE, NULL, 0);
}

void metrics_gauge_add(metrics_gauge *g, int64_t delta)
{
    if (!g)
        return;
    /* Two's complement: adding the bit pattern of a negative delta subtracts. */
    atomic_fetch_add_explicit(run_for_update(&g->base, t_shard), (uint64_t)delta,
                              memory_order_relaxed);
}

void metrics_gauge_set(metrics_gauge *g, int64_t value)
{
    if (!g)
        return;
    unsigned sh[METRICS_MAX_SHARDS], n = used_shards(sh);
    for (unsigned i = 0; i < n; i++) {
        mslot *r = run_for_read(&g->base, sh[i]);
        if (r && sh[i] != 0)
            atomic_store_explicit(r, 0, memory_order_relaxed);
    }
    atomic_store_explicit(run_for_update(&g->base, 0), (uint64_t)value, memory_order_relaxed);
}

int64_t metrics_gauge_value(const metrics_gauge *g)
{
    return g ? (int64_t)sum_slot(&g->base, 0) : 0;
}

metrics_histogram *metrics_histogram_get(const char *name, const char *help, const char *labels,
                                         const double *bounds, size_t n_bounds)
{
    return (metrics_histogram *)series_get(name, help, labels, KIND_HISTOGRAM, bounds, n_bounds);
}

/* Index of the first bucket whose upper bound is >= v (n_bounds = the +Inf bucket). */
static size_t bucket_index(const double *bounds, size_t n, double v)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (bounds[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return isnan(v) ? n : lo;
}

void metrics_histogram_observe(metrics_histogram *h, double value)
{
    if (!h)
        return;
    const series *s = &h->base;
    mslot *r = run_for_update(s, t_shard);
    atomic_fetch_add_explicit(&r[bucket_index(s->bounds, s->n_bounds, value)], 1,
                              memory_order_relaxed);
    mslot *sum = &r[s->n_bounds + 1];
    uint64_t old = atomic_load_explicit(sum, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(sum, &old,
                                                  double_to_bits(bits_to_double(old) + value),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

uint64_t metrics_histogram_count(const metrics_histogram *h)
{
    if (!h)
        return 0;
    uint64_t n = 0;
    for (size_t k = 0; k <= h->base.n_bounds; k++)
        n += sum_slot(&h->base, (uint32_t)k);
    return n;
}

double metrics_histogram_sum(const metrics_histogram *h)
{
    if (!h)
        return 0;
    double total = 0;
    unsigned sh[METRICS_MAX_SHARDS], n = used_shards(sh);
    for (unsigned i = 0; i < n; i++) {
        mslot *r = run_for_read(&h->base, sh[i]);
        if (r)
            total += bits_to_double(
                atomic_load_explicit(&r[h->base.n_bounds + 1], memory_order_relaxed));
    }
    return total;
}

/* ------------------------------------------------------------------ labels */

int metrics_labels_add(buf_t *out, const char *name, const char *value)
{
    if (!valid_name(name) || strchr(name, ':'))
        return -1;
    size_t mark = out->len;
    if (buf_appendf(out, "%s%s=\"", out->len ? "," : "", name) < 0)
        return -1;
    for (const char *p = value ? value : ""; *p; p++) {
        int rc = *p == '\\'   ? buf_append(out, "\\\\", 2)
                 : *p == '"'  ? buf_append(out, "\\\"", 2)
                 : *p == '\n' ? buf_append(out, "\\n", 2)
                              : buf_append_byte(out, (uint8_t)*p);
        if (rc < 0)
            goto fail;
    }
    if (buf_appendf(out, "\"") < 0)
        goto fail;
    return 0;
fail:
    out->len = mark;
    if (out->data)
        out->data[mark] = '\0';
    return -1;
}

/* ------------------------------------------------------------------ render */

/* Shortest text that reads back as the same double, laid out like Go's FormatFloat(v, 'g', -1)
 * (what Prometheus' own clients print): exponent form only below 1e-4 or from 1e6 up. */
static int format_double(char *out, size_t cap, double v)
{
    if (isnan(v))
        return snprintf(out, cap, "NaN");
    if (isinf(v))
        return snprintf(out, cap, v > 0 ? "+Inf" : "-Inf");
    if (v == 0)
        return snprintf(out, cap, "0");
    char tmp[40];
    int digits = 1;
    for (; digits < 17; digits++) {
        snprintf(tmp, sizeof tmp, "%.*e", digits - 1, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    snprintf(tmp, sizeof tmp, "%.*e", digits - 1, v);
    int exp = atoi(strchr(tmp, 'e') + 1);
    if (exp < -4 || exp >= 6)
        return snprintf(out, cap, "%s", tmp);
    int decimals = digits - 1 - exp;
    return snprintf(out, cap, "%.*f", decimals > 0 ? decimals : 0, v);
}

static int append_help(buf_t *out, const char *help)
{
    for (const char *p = help; *p; p++) {
        int rc = *p == '\\'   ? buf_append(out, "\\\\", 2)
                 : *p == '\n' ? buf_append(out, "\\n", 2)
                              : buf_append_byte(out, (uint8_t)*p);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static int render_histogram(buf_t *out, const family *f, const series *s)
{
    const char *sep = s->labels[0] ? "," : "";
    char num[64];
    uint64_t cumulative = 0;
    for (size_t k = 0; k <= s->n_bounds; k++) {
        cumulative += sum_slot(s, (uint32_t)k);
        if (k < s->n_bounds)
            format_double(num, sizeof num, s->bounds[k]);
        else
            snprintf(num, sizeof num, "+Inf");
        if (buf_appendf(out, "%s_bucket{%s%sle=\"%s\"} %" PRIu64 "\n", f->name, s->labels, sep, num,
                        cumulative) < 0)
            return -1;
    }
    format_double(num, sizeof num, metrics_histogram_sum((const metrics_histogram *)s));
    const char *lo = s->labels[0] ? "{" : "", *lc = s->labels[0] ? "}" : "";
    if (buf_appendf(out, "%s_sum%s%s%s %s\n", f->name, lo, s->labels, lc, num) < 0 ||
        buf_appendf(out, "%s_count%s%s%s %" PRIu64 "\n", f->name, lo, s->labels, lc, cumulative) <
            0)
        return -1;
    return 0;
}

static int render_family(buf_t *out, const family *f)
{
    if (!f->first)
        return 0;
    if (buf_appendf(out, "# HELP %s ", f->name) < 0 || append_help(out, f->help) < 0 ||
        buf_appendf(out, "\n# TYPE %s %s\n", f->name, kind_name(f->kind)) < 0)
        return -1;
    for (const series *s = f->first; s; s = s->next) {
        const char *lo = s->labels[0] ? "{" : "", *lc = s->labels[0] ? "}" : "";
        int rc = 0;
        if (f->kind == KIND_COUNTER)
            rc = buf_appendf(out, "%s%s%s%s %" PRIu64 "\n", f->name, lo, s->labels, lc,
                             sum_slot(s, 0));
        else if (f->kind == KIND_GAUGE)
            rc = buf_appendf(out, "%s%s%s%s %" PRId64 "\n", f->name, lo, s->labels, lc,
                             (int64_t)sum_slot(s, 0));
        else
            rc = render_histogram(out, f, s);
        if (rc < 0)
            return -1;
    }
    return 0;
}

int metrics_render(buf_t *out)
{
    size_t mark = out->len;
    int rc = 0;
    pthread_mutex_lock(&g_mu);
    for (const family *f = g_families_first; f && rc == 0; f = f->next)
        rc = render_family(out, f);
    pthread_mutex_unlock(&g_mu);
    if (rc < 0)
        out->len = mark;
    if (out->data)
        out->data[out->len] = '\0';
    return rc;
}
