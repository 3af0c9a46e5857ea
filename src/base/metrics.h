/* metrics.h - process-wide metrics registry rendered in Prometheus text format.
 *
 * Series are registered by (name, labels) with *_get(); the same pair always returns the same
 * object, so callers look a series up once (start-up, or first use) and keep the pointer.
 * Registration takes a mutex; updates never do: each series keeps one relaxed-atomic slot per
 * shard, and a thread writes only its own shard (metrics_set_shard, called once by each worker
 * thread; other threads use shard 0). metrics_render sums the shards on scrape.
 * `labels` is the rendered label set without braces, e.g. `method="Put",code="0"`, or "".
 * Objects live until metrics_reset_for_tests/process exit; never free them. *_get returns NULL
 * for an invalid name, a name already registered with another type, or no memory (logged); all
 * update and read functions accept NULL and do nothing.
 */
#ifndef ETCDSEAL_BASE_METRICS_H
#define ETCDSEAL_BASE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

#define METRICS_MAX_SHARDS 64

typedef struct metrics_counter metrics_counter;
typedef struct metrics_gauge metrics_gauge;
typedef struct metrics_histogram metrics_histogram;

/* Sets this thread's shard (0..METRICS_MAX_SHARDS-1; larger values wrap). */
void metrics_set_shard(unsigned shard);

metrics_counter *metrics_counter_get(const char *name, const char *help, const char *labels);
void metrics_counter_add(metrics_counter *c, uint64_t n);
uint64_t metrics_counter_value(const metrics_counter *c); /* sum of shards (tests, health) */

metrics_gauge *metrics_gauge_get(const char *name, const char *help, const char *labels);
void metrics_gauge_add(metrics_gauge *g, int64_t delta);
void metrics_gauge_set(metrics_gauge *g, int64_t value); /* stored in shard 0, others zeroed */
int64_t metrics_gauge_value(const metrics_gauge *g);

/* `bounds` are the upper bounds of the buckets in seconds (ascending, +Inf implied); copied. */
metrics_histogram *metrics_histogram_get(const char *name, const char *help, const char *labels,
                                         const double *bounds, size_t n_bounds);
void metrics_histogram_observe(metrics_histogram *h, double value);
uint64_t metrics_histogram_count(const metrics_histogram *h); /* sums of shards (tests) */
double metrics_histogram_sum(const metrics_histogram *h);
/* Default latency buckets (seconds): 50 us to 10 s in 1-2.5-5 steps (17 bounds). */
extern const double metrics_latency_buckets[];
extern const size_t metrics_latency_buckets_len;

/* Appends every family (HELP and TYPE once per name, series sorted by registration) to out. */
int metrics_render(buf_t *out);

/* Builds a `labels` argument: appends `name="value"` (preceded by ',' when out is not empty),
 * escaping \\, \" and newline in value; out stays NUL-terminated. -1 on a bad name or no memory. */
int metrics_labels_add(buf_t *out, const char *name, const char *value);

/* Frees every series and zeroes all values; pointers from *_get become invalid. Tests only, and
 * only while no other thread touches metrics. */
void metrics_reset_for_tests(void);

#endif
