/* error.h - error values for humans, filled by library code, printed by callers.
 *
 * Every fallible function returns 0 / -1 (or a small enum) and, on failure, fills an es_error
 * with a message that names the setting, key or provider involved. Messages never contain key
 * material or plaintext values. es_error is plain data: no allocation, safe on any thread.
 */
#ifndef ETCDSEAL_BASE_ERROR_H
#define ETCDSEAL_BASE_ERROR_H

#define ES_ERROR_MSG_MAX 512

typedef struct es_error {
    int code; /* module-defined; 0 = none. Proxy code uses gRPC status codes here. */
    char msg[ES_ERROR_MSG_MAX];
} es_error;

/* Sets code and message (printf-style, truncated to fit). Accepts err == NULL. Returns -1 so
 * callers can write `return es_error_set(err, ...)`. */
int es_error_set(es_error *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prepends "<prefix>: " to the existing message (context on the way up). */
int es_error_prefix(es_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void es_error_clear(es_error *err);

#endif
