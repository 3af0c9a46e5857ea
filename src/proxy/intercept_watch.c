/* intercept_watch.c - walks WatchResponse events to their kv / prev_kv values. */
#include "proxy/intercept_watch.h"

#include "etcdserverpb/rpc.pb-c.h"
#include "proxy/intercept_values.h"

static int walk_watch_response(transform_ctx *ctx, ProtobufCMessage *m, unsigned *changed,
                               es_error *err)
{
    Etcdserverpb__WatchResponse *r = (Etcdserverpb__WatchResponse *)m;
    for (size_t i = 0; i < r->n_events; i++) {
        Mvccpb__Event *ev = r->events[i];
        /* A DELETE event's kv has an empty value (skipped by intercept_walk_kv); a non-empty
         * one is still examined, whatever the type says. */
        if (intercept_walk_kv(ctx, INTERCEPT_SITE_EVENT_KV, ev->kv, changed, err) != 0 ||
            intercept_walk_kv(ctx, INTERCEPT_SITE_EVENT_PREV_KV, ev->prev_kv, changed, err) != 0)
            return -1;
    }
    return 0;
}

static intercept_stat stat_watch_resp = INTERCEPT_STAT("Watch", TRANSFORM_RESPONSE);

int intercept_watch_response(transform_ctx *ctx, const uint8_t *msg, size_t len, buf_t *out,
                             es_error *err)
{
    return intercept_run(ctx, &stat_watch_resp, &etcdserverpb__watch_response__descriptor, NULL,
                         walk_watch_response, msg, len, out, err);
}
