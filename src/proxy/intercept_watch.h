/* intercept_watch.h - transformer for etcdserverpb.Watch responses.
 *
 * Every WatchResponse on the stream (fragments included: each fragment is a whole message with
 * a subset of the events) is decoded and each event's kv and prev_kv value goes through
 * intercept_value(); DELETE events carry an empty kv value, which is skipped. WatchRequest
 * carries no values and is not transformed (NULL in the method table).
 * A transform_fn (proxy/transform.h); thread rules as there.
 */
#ifndef ETCDSEAL_PROXY_INTERCEPT_WATCH_H
#define ETCDSEAL_PROXY_INTERCEPT_WATCH_H

#include "proxy/transform.h"

int intercept_watch_response(transform_ctx *ctx, const uint8_t *msg, size_t len, buf_t *out,
                             es_error *err);

#endif
