/* grpc_wire.c - gRPC message framing and status helpers (see grpc_wire.h). */
#include "proxy/grpc_wire.h"

#include <string.h>

void grpc_reasm_init(grpc_reasm *r, size_t max_len)
{
    memset(r, 0, sizeof *r);
    r->max_len = max_len;
}

void grpc_reasm_free(grpc_reasm *r)
{
    buf_wipe_free(&r->body);
}

int grpc_reasm_idle(const grpc_reasm *r)
{
    return r->in_message != 1 && r->prefix_have == 0;
}

enum grpc_reasm_result grpc_reasm_feed(grpc_reasm *r, const uint8_t *data, size_t len,
                                       size_t *used)
{
    size_t off = 0;
    if (r->in_message == 2) { /* previous call returned a message: start a new one */
        r->in_message = 0;
        buf_reset(&r->body);
    }
    while (off < len || (r->in_message == 1 && r->body.len == r->msg_len)) {
        if (!r->in_message) {
            size_t take = GRPC_PREFIX_LEN - r->prefix_have;
            if (take > len - off)
                take = len - off;
            memcpy(r->prefix + r->prefix_have, data + off, take);
            r->prefix_have += take;
            off += take;
            if (r->prefix_have < GRPC_PREFIX_LEN)
                break;
            r->flags = r->prefix[0];
            r->msg_len = ((size_t)r->prefix[1] << 24) | ((size_t)r->prefix[2] << 16) |
                         ((size_t)r->prefix[3] << 8) | r->prefix[4];
            r->prefix_have = 0;
            *used = off;
            if (r->flags & 1)
                return GRPC_REASM_COMPRESSED;
            if (r->msg_len > r->max_len)
                return GRPC_REASM_TOO_LARGE;
            r->in_message = 1;
            buf_reset(&r->body);
            if (buf_reserve(&r->body, r->msg_len) < 0)
                return GRPC_REASM_TOO_LARGE;
        }
        size_t want = r->msg_len - r->body.len;
        size_t take = want < len - off ? want : len - off;
        if (take) {
            buf_append(&r->body, data + off, take); /* capacity reserved above */
            off += take;
        }
        if (r->body.len == r->msg_len) {
            r->in_message = 2;
            *used = off;
            return GRPC_REASM_MESSAGE;
        }
    }
    *used = off;
    return GRPC_REASM_NEED_MORE;
}

const uint8_t *grpc_reasm_message(const grpc_reasm *r, size_t *len)
{
    *len = r->body.len;
    return r->body.data ? r->body.data : (const uint8_t *)"";
}

void grpc_put_prefix(uint8_t out[GRPC_PREFIX_LEN], size_t len)
{
    out[0] = 0;
    out[1] = (uint8_t)(len >> 24);
    out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 8);
    out[4] = (uint8_t)len;
}

int grpc_frame_prefix(buf_t *out, size_t len)
{
    uint8_t p[GRPC_PREFIX_LEN];
    grpc_put_prefix(p, len);
    return buf_append(out, p, sizeof p);
}

int grpc_message_encode(buf_t *out, const char *text)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        if (*p >= 0x20 && *p <= 0x7e && *p != '%') {
            if (buf_append_byte(out, *p) < 0)
                return -1;
        } else {
            uint8_t e[3] = {'%', (uint8_t)hex[*p >> 4], (uint8_t)hex[*p & 15]};
            if (buf_append(out, e, 3) < 0)
                return -1;
        }
    }
    return 0;
}

const char *grpc_status_name(int code)
{
    static const char *names[GRPC_STATUS_COUNT] = {
        "OK",           "Canceled",          "Unknown",        "InvalidArgument",
        "DeadlineExceeded", "NotFound",      "AlreadyExists",  "PermissionDenied",
        "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange",
        "Unimplemented", "Internal",         "Unavailable",    "DataLoss",
        "Unauthenticated"};
    return code >= 0 && code < GRPC_STATUS_COUNT ? names[code] : "Unknown";
}
