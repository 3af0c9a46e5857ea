/* buf.h - the one growable byte buffer used wherever bytes move.
 *
 * A buf_t owns `data` (heap, may be NULL while cap == 0). Functions return 0 on success and -1 on
 * allocation failure, leaving the buffer unchanged. buf_free releases memory; buf_reset keeps it
 * for reuse (hot paths reuse one buffer per worker instead of allocating per request).
 * Not thread-safe: a buffer belongs to one owner at a time.
 * Plaintext values pass through these buffers: buf_wipe_free zeroes before releasing.
 */
#ifndef ETCDSEAL_BASE_BUF_H
#define ETCDSEAL_BASE_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} buf_t;

#define BUF_INIT {NULL, 0, 0}

int buf_reserve(buf_t *b, size_t extra);
int buf_append(buf_t *b, const void *p, size_t n);
int buf_append_byte(buf_t *b, uint8_t c);
/* Appends formatted text (no terminating NUL counted in len; data stays NUL-terminated). */
int buf_appendf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_reset(buf_t *b);
void buf_free(buf_t *b);
/* Zeroes the whole capacity, then frees: for buffers that held plaintext or keys. */
void buf_wipe_free(buf_t *b);

#endif
