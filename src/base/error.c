/* error.c - es_error helpers (see error.h). */
#include "base/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int es_error_set(es_error *err, int code, const char *fmt, ...)
{
    if (!err)
        return -1;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int es_error_prefix(es_error *err, const char *fmt, ...)
{
    if (!err)
        return -1;
    char head[ES_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    size_t hl = strnlen(head, sizeof head - 1);
    size_t ol = strnlen(err->msg, sizeof err->msg - 1);
    if (hl + 2 >= sizeof err->msg)
        hl = sizeof err->msg - 3;
    if (hl + 2 + ol >= sizeof err->msg)
        ol = sizeof err->msg - 3 - hl;
    memmove(err->msg + hl + 2, err->msg, ol);
    memcpy(err->msg, head, hl);
    err->msg[hl] = ':';
    err->msg[hl + 1] = ' ';
    err->msg[hl + 2 + ol] = '\0';
    return -1;
}

void es_error_clear(es_error *err)
{
    if (err) {
        err->code = 0;
        err->msg[0] = '\0';
    }
}
