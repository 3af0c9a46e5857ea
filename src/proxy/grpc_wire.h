/* grpc_wire.h - gRPC-over-HTTP/2 details the relay needs: status codes, the 5-byte message
 * prefix reassembler, and grpc-message percent-encoding.
 *
 * grpc_reasm collects one direction's DATA bytes of a stream and yields complete messages
 * (prefix stripped). It owns its buffer; grpc_reasm_free releases it (wiping: it may have held
 * plaintext). Messages larger than `max_len` and compressed messages are reported as errors,
 * never silently truncated. Single-threaded: one reassembler belongs to one stream.
 */
#ifndef ETCDSEAL_PROXY_GRPC_WIRE_H
#define ETCDSEAL_PROXY_GRPC_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

enum grpc_status {
    GRPC_OK = 0,
    GRPC_CANCELLED = 1,
    GRPC_UNKNOWN = 2,
    GRPC_INVALID_ARGUMENT = 3,
    GRPC_DEADLINE_EXCEEDED = 4,
    GRPC_NOT_FOUND = 5,
    GRPC_ALREADY_EXISTS = 6,
    GRPC_PERMISSION_DENIED = 7,
    GRPC_RESOURCE_EXHAUSTED = 8,
    GRPC_FAILED_PRECONDITION = 9,
    GRPC_ABORTED = 10,
    GRPC_OUT_OF_RANGE = 11,
    GRPC_UNIMPLEMENTED = 12,
    GRPC_INTERNAL = 13,
    GRPC_UNAVAILABLE = 14,
    GRPC_DATA_LOSS = 15,
    GRPC_UNAUTHENTICATED = 16,
};
#define GRPC_STATUS_COUNT 17
#define GRPC_PREFIX_LEN 5

typedef struct grpc_reasm {
    uint8_t prefix[GRPC_PREFIX_LEN];
    size_t prefix_have;
    size_t msg_len;   /* length of the message being collected */
    int in_message;   /* prefix complete, body being collected */
    uint8_t flags;    /* compressed flag of the current message */
    buf_t body;
    size_t max_len;
} grpc_reasm;

enum grpc_reasm_result {
    GRPC_REASM_NEED_MORE = 0, /* all input consumed, no complete message */
    GRPC_REASM_MESSAGE = 1,   /* a message is ready: grpc_reasm_message(); call again for more */
    GRPC_REASM_TOO_LARGE = -1,
    GRPC_REASM_COMPRESSED = -2,
};

void grpc_reasm_init(grpc_reasm *r, size_t max_len);
void grpc_reasm_free(grpc_reasm *r);
/* Feeds bytes; *used is set to how many were consumed. Returns MESSAGE as soon as one message
 * is complete (remaining input is left unconsumed), NEED_MORE, or an error. */
enum grpc_reasm_result grpc_reasm_feed(grpc_reasm *r, const uint8_t *data, size_t len,
                                       size_t *used);
/* The completed message (valid until the next feed); the next feed starts a new message. */
const uint8_t *grpc_reasm_message(const grpc_reasm *r, size_t *len);
/* True when no partial message is buffered (a stream may only end on a message boundary). */
int grpc_reasm_idle(const grpc_reasm *r);

/* Appends the 5-byte prefix (uncompressed) for a message of `len` bytes. */
int grpc_frame_prefix(buf_t *out, size_t len);
void grpc_put_prefix(uint8_t out[GRPC_PREFIX_LEN], size_t len);
/* Percent-encodes a grpc-message value (RFC: bytes outside 0x20-0x7e and '%'). */
int grpc_message_encode(buf_t *out, const char *text);
const char *grpc_status_name(int code);

#endif
