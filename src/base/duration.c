/* duration.c - Go duration parsing (see duration.h). */
#include "base/duration.h"

#include <stdlib.h>
#include <string.h>

int duration_parse(const char *text, double *seconds, es_error *err)
{
    static const struct {
        const char *unit;
        double scale;
    } units[] = {{"ns", 1e-9}, {"us", 1e-6}, {"\xc2\xb5s", 1e-6}, {"ms", 1e-3},
                 {"s", 1},     {"m", 60},    {"h", 3600}};
    const char *p = text;
    if (!p || !*p)
        return es_error_set(err, 0, "empty duration");
    if (strcmp(p, "0") == 0) {
        *seconds = 0;
        return 0;
    }
    if (*p == '+')
        p++;
    double total = 0;
    int parts = 0;
    while (*p) {
        if (!((*p >= '0' && *p <= '9') || *p == '.'))
            return es_error_set(err, 0, "invalid duration \"%s\"", text);
        char *end;
        double v = strtod(p, &end);
        if (end == p)
            return es_error_set(err, 0, "invalid duration \"%s\"", text);
        p = end;
        size_t best = 0;
        double scale = 0;
        for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
            size_t n = strlen(units[i].unit);
            /* longest match first so "ms" is not read as "m" + "s" */
            if (n > best && strncmp(p, units[i].unit, n) == 0) {
                best = n;
                scale = units[i].scale;
            }
        }
        if (!best)
            return es_error_set(err, 0, "missing or unknown unit in duration \"%s\"", text);
        p += best;
        total += v * scale;
        parts++;
    }
    if (!parts)
        return es_error_set(err, 0, "invalid duration \"%s\"", text);
    /* Go durations are int64 nanoseconds: anything longer is "invalid duration" there too */
    if (!(total <= 9223372036.854775807))
        return es_error_set(err, 0, "duration \"%s\" out of range (at most 2562047h)", text);
    *seconds = total;
    return 0;
}
