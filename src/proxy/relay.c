/* relay.c - one gRPC call across the proxy: a client stream paired with an upstream stream.
 *
 * Headers, DATA and trailers pass through verbatim in both directions. For methods whose table
 * entry names a transformer, DATA is reassembled into whole gRPC messages, each passed through
 * the transformer, and re-framed. Flow control is end to end (see relay.h). When the proxy
 * itself must end a call (unknown method, transformer error, upstream lost) it sends a gRPC
 * status to the client and cancels the upstream half. A stream is freed when both halves have
 * let go of it.
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "policy/access_policy.h"
#include "policy/encryption.h"
#include "proxy/access_check.h"
#include "proxy/etcd_user_token.h"
#include "proxy/relay.h"
#include "proxy/transform.h"
#include "proxy/worker.h"

/* ------------------------------------------------------------------ header lists */
void hdr_list_add(hdr_list *l, nghttp2_rcbuf *name, nghttp2_rcbuf *value)
{
    if (l->n + 2 > l->cap) {
        uint32_t cap = l->cap ? l->cap * 2 : 32;
        nghttp2_rcbuf **items = realloc(l->items, cap * sizeof *items);
        if (!items)
            return; /* header dropped; the call then fails upstream validation */
        l->items = items;
        l->cap = cap;
    }
    nghttp2_rcbuf_incref(name);
    nghttp2_rcbuf_incref(value);
    l->items[l->n++] = name;
    l->items[l->n++] = value;
}

void hdr_list_clear(hdr_list *l)
{
    for (uint32_t i = 0; i < l->n; i++)
        nghttp2_rcbuf_decref(l->items[i]);
    free(l->items);
    memset(l, 0, sizeof *l);
}

static bool rcbuf_eq(nghttp2_rcbuf *b, const char *s)
{
    nghttp2_vec v = nghttp2_rcbuf_get_buf(b);
    size_t n = strlen(s);
    return v.len == n && memcmp(v.base, s, n) == 0;
}

static nghttp2_vec hdr_find(const hdr_list *l, const char *name)
{
    for (uint32_t i = 0; i + 1 < l->n; i += 2)
        if (rcbuf_eq(l->items[i], name))
            return nghttp2_rcbuf_get_buf(l->items[i + 1]);
    nghttp2_vec none = {NULL, 0};
    return none;
}

static int hdr_status(const hdr_list *l)
{
    nghttp2_vec v = hdr_find(l, "grpc-status");
    if (!v.base || v.len == 0 || v.len > 3)
        return -1;
    int s = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.base[i] < '0' || v.base[i] > '9')
            return -1;
        s = s * 10 + (v.base[i] - '0');
    }
    return s;
}

/* Builds an nv array from a header list (nghttp2 copies it on submit). `skip` is dropped.
 * token_override non-NULL: the list's "token" headers are dropped and, when it is not empty,
 * one "token" header with its value is added (etcd's auth token of a mapped identity). */
static nghttp2_nv *hdr_nva(const hdr_list *l, const char *skip, const char *path_override,
                           const char *token_override, size_t *n_out, nghttp2_nv *stackv,
                           size_t stackn)
{
    size_t n = l->n / 2 + 1;
    nghttp2_nv *nva = n <= stackn ? stackv : malloc(n * sizeof *nva);
    if (!nva)
        return NULL;
    size_t k = 0;
    for (uint32_t i = 0; i + 1 < l->n; i += 2) {
        if (skip && rcbuf_eq(l->items[i], skip))
            continue;
        if (token_override && rcbuf_eq(l->items[i], "token"))
            continue;
        nghttp2_vec nm = nghttp2_rcbuf_get_buf(l->items[i]);
        nghttp2_vec vl = nghttp2_rcbuf_get_buf(l->items[i + 1]);
        if (path_override && rcbuf_eq(l->items[i], ":path")) {
            vl.base = (uint8_t *)path_override;
            vl.len = strlen(path_override);
        }
        nva[k].name = nm.base;
        nva[k].namelen = nm.len;
        nva[k].value = vl.base;
        nva[k].valuelen = vl.len;
        nva[k].flags = NGHTTP2_NV_FLAG_NONE;
        k++;
    }
    if (token_override && token_override[0]) {
        nva[k] = (nghttp2_nv){(uint8_t *)"token", (uint8_t *)token_override, 5,
                              strlen(token_override), NGHTTP2_NV_FLAG_NO_INDEX};
        k++;
    }
    *n_out = k;
    return nva;
}

static void release_client_window(relay_stream *rs);
static void release_upstream_window(relay_stream *rs);
static void internal_complete(relay_stream *rs, int status, const char *status_msg);

/* ------------------------------------------------------------------ lifecycle */
/* Finished client streams stay in a per-worker cache (at most RELAY_STREAM_CACHE_MAX) with their
 * two evbuffers and header arrays, so a call in steady state allocates none of those. The cache
 * link is ds_link.next (a cached stream is in no list). */
#define RELAY_STREAM_CACHE_MAX 256

static void hdr_list_reset(hdr_list *l)
{
    for (uint32_t i = 0; i < l->n; i++)
        nghttp2_rcbuf_decref(l->items[i]);
    l->n = 0;
}

static relay_stream *stream_from_cache(worker *w)
{
    relay_stream *rs = w->stream_cache;
    if (!rs)
        return NULL;
    w->stream_cache = rs->ds_link.next;
    w->n_stream_cache--;
    struct evbuffer *up = rs->to_up, *down = rs->to_down;
    hdr_list req = rs->req_hdrs, resp = rs->resp_hdrs, tr = rs->trailers;
    memset(rs, 0, sizeof *rs);
    rs->to_up = up;
    rs->to_down = down;
    rs->req_hdrs = req;
    rs->resp_hdrs = resp;
    rs->trailers = tr;
    return rs;
}

/* Returns true when rs was kept (its evbuffers drained, header lists emptied). */
static bool stream_to_cache(relay_stream *rs)
{
    worker *w = rs->w;
    if (rs->internal || w->n_stream_cache >= RELAY_STREAM_CACHE_MAX)
        return false;
    if (evbuffer_drain(rs->to_up, evbuffer_get_length(rs->to_up)) != 0 ||
        evbuffer_drain(rs->to_down, evbuffer_get_length(rs->to_down)) != 0)
        return false;
    hdr_list_reset(&rs->req_hdrs);
    hdr_list_reset(&rs->resp_hdrs);
    hdr_list_reset(&rs->trailers);
    rs->ds_link.next = w->stream_cache;
    w->stream_cache = rs;
    w->n_stream_cache++;
    return true;
}

void relay_stream_cache_free(worker *w)
{
    while (w->stream_cache) {
        relay_stream *rs = w->stream_cache;
        w->stream_cache = rs->ds_link.next;
        hdr_list_clear(&rs->req_hdrs);
        hdr_list_clear(&rs->resp_hdrs);
        hdr_list_clear(&rs->trailers);
        evbuffer_free(rs->to_up);
        evbuffer_free(rs->to_down);
        free(rs);
    }
    w->n_stream_cache = 0;
}

relay_stream *relay_stream_new(h2conn *ds, int32_t stream_id)
{
    relay_stream *rs = stream_from_cache(ds->w);
    if (!rs) {
        rs = calloc(1, sizeof *rs);
        if (!rs)
            return NULL;
        rs->to_up = evbuffer_new();
        rs->to_down = evbuffer_new();
        if (!rs->to_up || !rs->to_down) {
            if (rs->to_up)
                evbuffer_free(rs->to_up);
            if (rs->to_down)
                evbuffer_free(rs->to_down);
            free(rs);
            return NULL;
        }
    }
    rs->w = ds->w;
    rs->ds = ds;
    rs->ds_id = stream_id;
    rs->us_id = -1;
    rs->us_closed = true;
    rs->status = -1;
    rs->start_ns = worker_now_ns();
    h2conn_list_add(&ds->streams, rs, &rs->ds_link);
    metrics_gauge_add(ds->w->open_streams, 1);
    return rs;
}

static void relay_maybe_free(relay_stream *rs)
{
    if (rs->ds || rs->us || rs->pending || rs->async.active || rs->wake_queued || rs->token_wait ||
        rs->async.in_callback)
        return;
    if (rs->xform_state && rs->method && rs->method->free_state)
        rs->method->free_state(rs->xform_state);
    if (rs->req_reasm_on)
        grpc_reasm_free(&rs->req_reasm);
    if (rs->resp_reasm_on)
        grpc_reasm_free(&rs->resp_reasm);
    buf_free(&rs->sent_log);
    buf_wipe_free(&rs->internal_msg);
    if (rs->policy && !rs->internal)
        policy_encryption_unref(rs->policy);
    access_policy_unref(rs->access);
    free(rs->token_override);
    free(rs->mapped_user);
    if (rs->token_held)
        evbuffer_free(rs->token_held);
    for (int d = 0; d < 2; d++)
        if (rs->parked_in[d])
            evbuffer_free(rs->parked_in[d]);
    free(rs->path_override);
    free(rs->status_msg);
    if (stream_to_cache(rs))
        return;
    hdr_list_clear(&rs->req_hdrs);
    hdr_list_clear(&rs->resp_hdrs);
    hdr_list_clear(&rs->trailers);
    evbuffer_free(rs->to_up);
    evbuffer_free(rs->to_down);
    free(rs);
}

static void cancel_upstream(relay_stream *rs)
{
    if (rs->pending)
        upstream_pool_unlink_pending(rs->w->pool, rs);
    if (rs->us && !rs->us_closed && !rs->us->closing) {
        nghttp2_submit_rst_stream(rs->us->session, NGHTTP2_FLAG_NONE, rs->us_id, NGHTTP2_CANCEL);
        h2conn_schedule_flush(rs->us);
    }
}

static void submit_local_trailers_only(relay_stream *rs)
{
    char code[4];
    snprintf(code, sizeof code, "%d", rs->status);
    buf_t msg = BUF_INIT;
    grpc_message_encode(&msg, rs->status_msg ? rs->status_msg : "");
    nghttp2_nv nva[] = {
        {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"grpc-status", (uint8_t *)code, 11, strlen(code), NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"grpc-message", msg.data ? msg.data : (uint8_t *)"", 12, msg.len,
         NGHTTP2_NV_FLAG_NONE},
    };
    nghttp2_submit_response(rs->ds->session, rs->ds_id, nva, msg.len ? 4 : 3, NULL);
    buf_free(&msg);
}

static void submit_local_trailers(nghttp2_session *session, relay_stream *rs)
{
    char code[4];
    snprintf(code, sizeof code, "%d", rs->status);
    buf_t msg = BUF_INIT;
    grpc_message_encode(&msg, rs->status_msg ? rs->status_msg : "");
    nghttp2_nv nva[] = {
        {(uint8_t *)"grpc-status", (uint8_t *)code, 11, strlen(code), NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"grpc-message", msg.data ? msg.data : (uint8_t *)"", 12, msg.len,
         NGHTTP2_NV_FLAG_NONE},
    };
    nghttp2_submit_trailer(session, rs->ds_id, nva, msg.len ? 2 : 1);
    buf_free(&msg);
}

void relay_finish_local(relay_stream *rs, int status, const char *fmt, ...)
{
    if (rs->local_done || rs->resp_done)
        return;
    char text[ES_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    rs->local_done = true;
    rs->status = status;
    free(rs->status_msg);
    rs->status_msg = strdup(text);
    if (rs->internal) {
        cancel_upstream(rs);
        internal_complete(rs, status, text);
        relay_maybe_free(rs);
        return;
    }
    log_debug("call ended by proxy|method=%s status=%s msg=\"%s\"",
              rs->method ? rs->method->path : "-", grpc_status_name(status), text);
    cancel_upstream(rs);
    /* nothing more goes upstream: drop what waits and let the client's window open */
    evbuffer_drain(rs->to_up, evbuffer_get_length(rs->to_up));
    release_client_window(rs);
    if (!rs->ds || rs->ds->closing)
        return;
    if (!rs->resp_started) {
        submit_local_trailers_only(rs);
        rs->resp_started = rs->resp_done = true;
    } else {
        /* response already under way: what is queued goes out, then our trailers */
        rs->upstream_eof = true;
        nghttp2_session_resume_data(rs->ds->session, rs->ds_id);
    }
    h2conn_schedule_flush(rs->ds);
}

/* ------------------------------------------------------------------ transformers */
static ssize_t downstream_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                                  size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                                  void *user_data);

/* A denied WatchCreateRequest ends only that watch, as etcd does for its own auth: a canceled
 * WatchResponse goes to the client (response headers sent by the proxy when etcd has not sent
 * any yet) and the create never goes upstream; other watches on the stream carry on. Responses
 * are whole framed messages in to_down (the Watch response is reassembled), so one can be
 * appended between them. Returns 0, or -1 when that was impossible (the caller ends the call). */
static int answer_denied_watch(relay_stream *rs, const char *reason)
{
    if (!rs->resp_reasm_on || rs->resp_done || rs->local_done || rs->ds->closing)
        return -1;
    buf_t msg = BUF_INIT;
    uint8_t prefix[GRPC_PREFIX_LEN];
    if (access_watch_denied_response(reason, &msg) != 0) {
        buf_free(&msg);
        return -1;
    }
    grpc_put_prefix(prefix, msg.len);
    int rc = evbuffer_add(rs->to_down, prefix, sizeof prefix) == 0 &&
                     evbuffer_add(rs->to_down, msg.data, msg.len) == 0
                 ? 0
                 : -1;
    buf_free(&msg);
    if (rc != 0)
        return -1;
    if (!rs->resp_started) {
        nghttp2_nv nva[] = {
            {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
            {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16,
             NGHTTP2_NV_FLAG_NONE},
        };
        nghttp2_data_provider prd = {.source.ptr = rs, .read_callback = downstream_read_cb};
        if (nghttp2_submit_response(rs->ds->session, rs->ds_id, nva, 2, &prd) != 0)
            return -1;
        rs->resp_started = rs->resp_hdrs_local = true;
    } else {
        nghttp2_session_resume_data(rs->ds->session, rs->ds_id);
    }
    h2conn_schedule_flush(rs->ds);
    return 0;
}

/* Checks one request message against the access policy (KEYS-class calls while a policy is
 * loaded). Returns 0 (allowed: forward it), 1 (denied and answered: drop it) or -1 (the call
 * was ended). */
static int access_check_request(relay_stream *rs, const uint8_t *msg, size_t len)
{
    es_error err = {0};
    if (!rs->ds) /* the client is gone: nothing to decide for */
        return -1;
    if (access_check_message(rs->access, &rs->ds->identity, rs->method, msg, len, &err) == 0)
        return 0;
    if (err.code == GRPC_PERMISSION_DENIED && rs->method->client_streaming &&
        rs->method->server_streaming && answer_denied_watch(rs, err.msg) == 0)
        return 1;
    relay_finish_local(rs, err.code > 0 && err.code < GRPC_STATUS_COUNT ? err.code : GRPC_INTERNAL,
                       "%s", err.msg);
    return -1;
}

/* Frames an untransformed message into dst (a method reassembled only for the access check). */
static int forward_message(relay_stream *rs, enum transform_dir dir, const uint8_t *msg, size_t len,
                           struct evbuffer *dst)
{
    uint8_t prefix[GRPC_PREFIX_LEN];
    grpc_put_prefix(prefix, len);
    if (evbuffer_add(dst, prefix, sizeof prefix) != 0 ||
        (len && evbuffer_add(dst, msg, len) != 0)) {
        relay_finish_local(rs, GRPC_RESOURCE_EXHAUSTED, "etcdseal: out of memory");
        return -1;
    }
    if (dir == TRANSFORM_REQUEST && rs->submit_deferred) {
        rs->submit_deferred = false;
        upstream_pool_submit(rs->w->pool, rs);
    }
    return 0;
}

static int run_transform(relay_stream *rs, transform_fn fn, enum transform_dir dir,
                         const uint8_t *msg, size_t len, struct evbuffer *dst)
{
    worker *w = rs->w;
    /* the access verdict comes before any transformer: those may call etcd themselves */
    if (dir == TRANSFORM_REQUEST && rs->access) {
        int verdict = access_check_request(rs, msg, len);
        if (verdict != 0)
            return verdict > 0 ? 0 : -1; /* answered (Watch create): nothing goes upstream */
    }
    if (!fn)
        return forward_message(rs, dir, msg, len, dst);
    const proxy_runtime *rt = w->rt;
    transform_ctx ctx = {
        .dir = dir,
        .method = rs->method->path,
        .policy = rs->policy,
        .advertise_urls = rt->advertise_urls,
        .n_advertise_urls = rt->n_advertise_urls,
        .stream_state = &rs->xform_state,
        .worker_id = w->id,
        .ready_fn = worker_wake_stream,
        .ready_arg = rs,
    };
    if (dir == TRANSFORM_REQUEST && !rs->method->client_streaming && !rs->async.active) {
        rs->async.rs = rs;
        rs->async.ctx = ctx;
        rs->async.ctx.async = &rs->async;
        ctx.async = &rs->async;
    }
    es_error err = {0};
    buf_t *out = &w->scratch;
    buf_reset(out);
    /* active before the call: an async transformer may finish re-entrantly (no upstream) */
    if (ctx.async)
        rs->async.active = true;
    int rc = fn(&ctx, msg, len, out, &err);
    if (rc == TRANSFORM_PENDING && ctx.async)
        return 1; /* the transformer answers the call later */
    if (ctx.async)
        rs->async.active = false;
    if (rc != 0 && err.code == TRANSFORM_WOULD_BLOCK) {
        if (++rs->park_count > 16) {
            relay_finish_local(rs, GRPC_UNAVAILABLE,
                               "etcdseal: KMS result still not available for %s", rs->method->path);
            return -1;
        }
        rs->parked[dir] = true; /* the transformer armed the wake-up */
        rs->wake_queued = true;
        return 2;
    }
    if (rc != 0) {
        int code = err.code > 0 && err.code < GRPC_STATUS_COUNT ? err.code : GRPC_INTERNAL;
        relay_finish_local(rs, code, "%s", err.msg[0] ? err.msg : "etcdseal: transform failed");
        return -1;
    }
    uint8_t prefix[GRPC_PREFIX_LEN];
    grpc_put_prefix(prefix, out->len);
    if (evbuffer_add(dst, prefix, sizeof prefix) != 0 ||
        (out->len && evbuffer_add(dst, out->data, out->len) != 0)) {
        relay_finish_local(rs, GRPC_RESOURCE_EXHAUSTED, "etcdseal: out of memory");
        return -1;
    }
    if (dir == TRANSFORM_REQUEST && rs->submit_deferred) {
        rs->submit_deferred = false;
        upstream_pool_submit(w->pool, rs);
    }
    return 0;
}

/* Keeps input of a direction whose current message is parked (waiting for KMS). */
static void stash_parked(relay_stream *rs, enum transform_dir dir, const uint8_t *data, size_t len)
{
    if (!rs->parked_in[dir])
        rs->parked_in[dir] = evbuffer_new();
    if (!rs->parked_in[dir] || evbuffer_add(rs->parked_in[dir], data, len) != 0)
        relay_finish_local(rs, GRPC_RESOURCE_EXHAUSTED, "etcdseal: out of memory");
}

/* Feeds DATA of one direction through the reassembler and transformer into dst. */
static void feed_messages(relay_stream *rs, grpc_reasm *r, transform_fn fn, enum transform_dir dir,
                          const uint8_t *data, size_t len, struct evbuffer *dst)
{
    while (len > 0) {
        size_t used = 0;
        enum grpc_reasm_result res = grpc_reasm_feed(r, data, len, &used);
        data += used;
        len -= used;
        if (res == GRPC_REASM_MESSAGE) {
            size_t mlen;
            const uint8_t *m = grpc_reasm_message(r, &mlen);
            int rc = run_transform(rs, fn, dir, m, mlen, dst);
            if (rc == 2) { /* parked: keep what follows until the re-run */
                if (len > 0)
                    stash_parked(rs, dir, data, len);
                return;
            }
            if (rc != 0)
                return; /* failed, or went asynchronous */
            continue;
        }
        if (res == GRPC_REASM_COMPRESSED) {
            if (dir == TRANSFORM_REQUEST)
                relay_finish_local(rs, GRPC_UNIMPLEMENTED,
                                   "etcdseal: compressed request messages are not supported on %s "
                                   "(disable grpc compression for etcd calls)",
                                   rs->method->path);
            else
                relay_finish_local(rs, GRPC_INTERNAL,
                                   "etcdseal: upstream sent a compressed message on %s, which the "
                                   "proxy cannot inspect",
                                   rs->method->path);
            return;
        }
        if (res == GRPC_REASM_TOO_LARGE) {
            relay_finish_local(rs, GRPC_RESOURCE_EXHAUSTED,
                               "etcdseal: gRPC message on %s larger than --max-message-bytes (%zu)",
                               rs->method->path, rs->w->rt->max_message_bytes);
            return;
        }
        break; /* NEED_MORE: all input consumed */
    }
}

/* ------------------------------------------------------------------ client -> upstream */
static void release_client_window(relay_stream *rs)
{
    if (!rs->ds || rs->ds->closing || rs->client_unconsumed == 0)
        return;
    if (evbuffer_get_length(rs->to_up) >= RELAY_BUFFER_HIGH)
        return;
    nghttp2_session_consume(rs->ds->session, rs->ds_id, rs->client_unconsumed);
    rs->client_unconsumed = 0;
    h2conn_schedule_flush(rs->ds);
}

static void release_upstream_window(relay_stream *rs)
{
    if (!rs->us || rs->us->closing || rs->upstream_unconsumed == 0)
        return;
    if (evbuffer_get_length(rs->to_down) >= RELAY_BUFFER_HIGH)
        return;
    nghttp2_session_consume(rs->us->session, rs->us_id, rs->upstream_unconsumed);
    rs->upstream_unconsumed = 0;
    h2conn_schedule_flush(rs->us);
}

static void resume_upstream_send(relay_stream *rs)
{
    if (rs->us && !rs->us_closed && !rs->us->closing) {
        nghttp2_session_resume_data(rs->us->session, rs->us_id);
        h2conn_schedule_flush(rs->us);
    }
}

/* The access policy's say at call start: method-only verbs are decided now; KEYS-class calls
 * keep a reference to the policy so each request message is checked (run_transform). Without
 * a policy this is never called: no reassembly, no cost. Returns -1 when the call was ended. */
static int access_start(relay_stream *rs, struct access_policy *ap)
{
    enum access_call_class cls = access_method_class(rs->method);
    if (cls == ACCESS_CALL_FREE)
        return 0;
    if (!rs->ds->identity.computed)
        peer_identity_compute(&rs->ds->identity, rs->ds->tls ? rs->ds->bev : NULL);
    if (cls == ACCESS_CALL_METHOD) {
        es_error err = {0};
        if (access_check_method(ap, &rs->ds->identity, rs->method, &err) == 0)
            return 0;
        relay_finish_local(rs, err.code, "%s", err.msg);
        return -1;
    }
    rs->access = access_policy_ref(ap);
    return 0;
}

/* ------------------------------------------------------------------ mapped etcd users */
static int start_internal_call(relay_stream *p, const char *path, const uint8_t *req, size_t len,
                               const char *token, transform_call_cb cb, void *arg);
static void process_client_data(relay_stream *rs, const uint8_t *data, size_t len);

/* The Authenticate answer for a call waiting for its mapped user's token (token_start). */
static void token_ready(void *arg, int status, const char *status_msg, const uint8_t *msg,
                        size_t len)
{
    relay_stream *rs = arg;
    rs->token_wait = false;
    if (!rs->ds || rs->local_done) {
        if (rs->token_held)
            evbuffer_drain(rs->token_held, evbuffer_get_length(rs->token_held));
        return; /* freed by internal_complete once this callback returns */
    }
    char *token = status == GRPC_OK ? etcd_user_token_parse(msg, len) : NULL;
    if (!token) {
        relay_finish_local(
            rs, status == GRPC_OK || status == GRPC_CANCELLED ? GRPC_UNAVAILABLE : status,
            "etcdseal: cannot authenticate identity \"%s\" as etcd user \"%s\": %s",
            rs->ds->identity.shown, rs->mapped_user,
            status == GRPC_OK ? "no token in the answer"
                              : (status_msg && *status_msg ? status_msg : "failed"));
        return;
    }
    etcd_user_token_put(rs->mapped_user, token);
    rs->token_override = token;
    if (rs->submit_after_token) {
        rs->submit_after_token = false;
        upstream_pool_submit(rs->w->pool, rs);
    }
    struct evbuffer *held = rs->token_held;
    size_t n = held ? evbuffer_get_length(held) : 0;
    if (n > 0) {
        uint8_t *copy = malloc(n);
        if (!copy) {
            relay_finish_local(rs, GRPC_RESOURCE_EXHAUSTED, "etcdseal: out of memory");
            return;
        }
        evbuffer_remove(held, copy, n);
        process_client_data(rs, copy, n);
        free(copy);
    }
    if (rs->eof_after_token && rs->ds && !rs->local_done)
        relay_on_client_eof(rs);
}

/* --map-identity-to-etcd-user: when a rule maps the caller to an etcd user, the call carries
 * that user's token upstream instead of the client's. A cached token is used at once; without
 * one the call waits (its input held) for an internal Authenticate. Returns -1 when the call
 * was ended. */
static int token_start(relay_stream *rs, struct access_policy *ap)
{
    if (access_method_class(rs->method) == ACCESS_CALL_FREE ||
        !strcmp(rs->method->path, "/etcdserverpb.Auth/Authenticate"))
        return 0; /* health checks, and a client's own login, go as they are */
    access_identity id;
    peer_identity_view(&rs->ds->identity, &id);
    access_etcd_user u;
    if (!access_policy_etcd_user(ap, &id, &u))
        return 0;
    rs->mapped_user = strdup(u.name);
    if (!rs->mapped_user) {
        relay_finish_local(rs, GRPC_RESOURCE_EXHAUSTED, "etcdseal: out of memory");
        return -1;
    }
    const char *cached = etcd_user_token_get(u.name);
    if (cached) {
        if (!(rs->token_override = strdup(cached))) {
            relay_finish_local(rs, GRPC_RESOURCE_EXHAUSTED, "etcdseal: out of memory");
            return -1;
        }
        return 0;
    }
    buf_t req = BUF_INIT;
    if (etcd_user_token_request(&u, &req) != 0) {
        buf_wipe_free(&req);
        relay_finish_local(rs, GRPC_RESOURCE_EXHAUSTED, "etcdseal: out of memory");
        return -1;
    }
    rs->token_wait = true;
    /* "" = the client's token is not sent with the login */
    int rc = start_internal_call(rs, "/etcdserverpb.Auth/Authenticate", req.data, req.len, "",
                                 token_ready, rs);
    buf_wipe_free(&req);
    if (rc != 0) {
        rs->token_wait = false;
        relay_finish_local(rs, GRPC_UNAVAILABLE,
                           "etcdseal: cannot authenticate as etcd user \"%s\"", u.name);
        return -1;
    }
    return rs->local_done ? -1 : 0;
}

/* etcd refused a mapped user's cached token: forget it so the next call logs in again. */
static void note_upstream_status(relay_stream *rs, const hdr_list *l)
{
    if (!rs->mapped_user || !rs->token_override)
        return;
    nghttp2_vec m = hdr_find(l, "grpc-message");
    char text[256];
    snprintf(text, sizeof text, "%.*s", (int)m.len, m.base ? (const char *)m.base : "");
    if (etcd_user_token_is_invalid_error(text)) {
        log_info("etcd refused the mapped user's token; it is dropped|user=%s", rs->mapped_user);
        etcd_user_token_drop(rs->mapped_user, rs->token_override);
    }
}

void relay_on_request_headers(relay_stream *rs)
{
    nghttp2_vec path = hdr_find(&rs->req_hdrs, ":path");
    nghttp2_vec meth = hdr_find(&rs->req_hdrs, ":method");
    nghttp2_vec ctype = hdr_find(&rs->req_hdrs, "content-type");
    if (!path.base) {
        nghttp2_submit_rst_stream(rs->ds->session, NGHTTP2_FLAG_NONE, rs->ds_id,
                                  NGHTTP2_PROTOCOL_ERROR);
        rs->resp_done = true;
        h2conn_schedule_flush(rs->ds);
        return;
    }
    if (!meth.base || meth.len != 4 || memcmp(meth.base, "POST", 4) != 0) {
        relay_finish_local(rs, GRPC_UNIMPLEMENTED, "etcdseal: only gRPC POST requests are served");
        return;
    }
    if (!ctype.base || ctype.len < 16 || memcmp(ctype.base, "application/grpc", 16) != 0) {
        relay_finish_local(rs, GRPC_UNIMPLEMENTED,
                           "etcdseal: content-type must be application/grpc");
        return;
    }
    rs->method = method_lookup((const char *)path.base, path.len);
    if (!rs->method) {
        /* fail closed: an unknown method could return stored values we cannot interpret */
        relay_finish_local(rs, GRPC_UNIMPLEMENTED, "etcdseal: unknown method %.*s is not relayed",
                           (int)path.len, (const char *)path.base);
        return;
    }
    struct access_policy *ap = atomic_load((_Atomic(struct access_policy *) *)&rs->w->rt->access);
    if (ap && access_start(rs, ap) != 0)
        return;
    size_t max = rs->w->rt->max_message_bytes;
    if (rs->method->request_transform || rs->method->response_transform) {
        struct policy_encryption *p =
            atomic_load((_Atomic(struct policy_encryption *) *)&rs->w->rt->policy);
        rs->policy = p ? policy_encryption_ref(p) : NULL;
        /* value transformers without an EncryptionConfiguration, or the MemberList rewrite
         * without --advertise-client-url, would forward every message unchanged */
        bool idle = rs->method->values_only ? !rs->policy : rs->w->rt->n_advertise_urls == 0;
        if (!idle) {
            rs->req_fn = rs->method->request_transform;
            rs->resp_fn = rs->method->response_transform;
        }
    }
    if (rs->req_fn || rs->access) {
        grpc_reasm_init(&rs->req_reasm, max);
        rs->req_reasm_on = true;
    }
    /* with an access policy, responses stay whole messages (a denied Watch create is answered
     * between them) even where no transformer runs */
    if (rs->resp_fn || (rs->access && rs->method->response_transform)) {
        grpc_reasm_init(&rs->resp_reasm, max);
        rs->resp_reasm_on = true;
    }
    rs->retryable = true;
    if (ap && rs->w->rt->map_identity_to_etcd_user && token_start(rs, ap) != 0)
        return;
    if ((rs->req_fn || rs->access) && !rs->method->client_streaming)
        rs->submit_deferred = true; /* opened when the transformed (or checked) request exists */
    else if (rs->token_wait)
        rs->submit_after_token = true;
    else
        upstream_pool_submit(rs->w->pool, rs);
}

void relay_on_client_data(relay_stream *rs, const uint8_t *data, size_t len)
{
    rs->client_unconsumed += len;
    if (rs->token_wait && !rs->local_done) { /* the call starts once the etcd token is there */
        if (!rs->token_held)
            rs->token_held = evbuffer_new();
        if (!rs->token_held || evbuffer_add(rs->token_held, data, len) != 0)
            relay_finish_local(rs, GRPC_RESOURCE_EXHAUSTED, "etcdseal: out of memory");
        return;
    }
    process_client_data(rs, data, len);
}

static void process_client_data(relay_stream *rs, const uint8_t *data, size_t len)
{
    if (rs->local_done || rs->resp_done || !rs->method || rs->async.active) {
        release_client_window(rs); /* dropped: the call is over (or taken over) */
        return;
    }
    if (rs->parked[TRANSFORM_REQUEST]) {
        stash_parked(rs, TRANSFORM_REQUEST, data, len);
        return; /* window released when the parked bytes are processed */
    }
    if (rs->req_reasm_on)
        feed_messages(rs, &rs->req_reasm, rs->req_fn, TRANSFORM_REQUEST, data,
                      len, rs->to_up);
    else if (evbuffer_add(rs->to_up, data, len) != 0)
        relay_finish_local(rs, GRPC_RESOURCE_EXHAUSTED, "etcdseal: out of memory");
    release_client_window(rs);
    resume_upstream_send(rs);
}

void relay_on_client_eof(relay_stream *rs)
{
    if (rs->token_wait && !rs->local_done) {
        rs->eof_after_token = true; /* delivered after the held input */
        return;
    }
    rs->client_eof = true;
    if (rs->parked[TRANSFORM_REQUEST])
        return; /* handled when the parked message has been re-run */
    if (rs->req_reasm_on && !rs->local_done && !grpc_reasm_idle(&rs->req_reasm)) {
        relay_finish_local(rs, GRPC_INTERNAL, "etcdseal: request ended inside a gRPC message");
        return;
    }
    if (rs->submit_deferred && !rs->local_done && !rs->async.active) {
        /* no message at all: etcd reads it as the empty request, so that is what is checked */
        if (rs->access && access_check_request(rs, NULL, 0) != 0)
            return;                  /* unary: only ever ended, never answered */
        rs->submit_deferred = false; /* let etcd answer it */
        upstream_pool_submit(rs->w->pool, rs);
        return;
    }
    resume_upstream_send(rs);
}

void relay_on_client_closed(relay_stream *rs, uint32_t error_code)
{
    worker *w = rs->w;
    if (rs->method) {
        int status = rs->status >= 0 ? rs->status : (error_code ? GRPC_CANCELLED : GRPC_UNKNOWN);
        worker_record_call(w, rs->method->index, status, rs->start_ns);
    }
    metrics_gauge_add(w->open_streams, -1);
    /* bytes never acknowledged still count against the connection window: return them */
    if (rs->client_unconsumed && !rs->ds->closing)
        nghttp2_session_consume_connection(rs->ds->session, rs->client_unconsumed);
    rs->client_unconsumed = 0;
    h2conn_list_remove(&rs->ds->streams, rs, &rs->ds_link);
    rs->ds = NULL;
    evbuffer_drain(rs->to_down, evbuffer_get_length(rs->to_down));
    release_upstream_window(rs);
    if (!rs->us_closed || rs->pending)
        cancel_upstream(rs);
    relay_maybe_free(rs);
}

static ssize_t upstream_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                                size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                                void *user_data)
{
    (void)session;
    (void)stream_id;
    (void)user_data;
    relay_stream *rs = source->ptr;
    size_t avail = evbuffer_get_length(rs->to_up);
    if (avail == 0) {
        if (rs->client_eof) {
            *data_flags |= NGHTTP2_DATA_FLAG_EOF;
            return 0;
        }
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = avail < length ? avail : length;
    if (evbuffer_remove(rs->to_up, buf, n) != (int)n)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (rs->retryable) {
        if (rs->sent_log.len + n <= RELAY_RETRY_LOG_MAX)
            buf_append(&rs->sent_log, buf, n);
        else {
            rs->retryable = false;
            buf_free(&rs->sent_log);
        }
    }
    if (n == avail && rs->client_eof)
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    release_client_window(rs);
    return (ssize_t)n;
}

int relay_submit_upstream(relay_stream *rs, h2conn *us)
{
    nghttp2_nv stackv[32];
    size_t n;
    /* never let etcd compress what a transformer has to read */
    nghttp2_nv *nva = hdr_nva(&rs->req_hdrs, rs->resp_reasm_on ? "grpc-accept-encoding" : NULL,
                              rs->path_override, rs->token_override, &n, stackv, 32);
    if (!nva)
        return -1;
    nghttp2_data_provider prd = {.source.ptr = rs, .read_callback = upstream_read_cb};
    int32_t id = nghttp2_submit_request(us->session, NULL, nva, n, &prd, rs);
    if (nva != stackv)
        free(nva);
    if (id < 0) {
        log_warn("cannot open upstream stream|err=%s", nghttp2_strerror(id));
        return -1;
    }
    rs->us = us;
    rs->us_id = id;
    rs->us_closed = false;
    h2conn_list_add(&us->streams, rs, &rs->us_link);
    h2conn_schedule_flush(us);
    return 0;
}

/* ------------------------------------------------------------------ upstream -> client */
static ssize_t downstream_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                                  size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                                  void *user_data)
{
    (void)stream_id;
    (void)user_data;
    relay_stream *rs = source->ptr;
    size_t avail = evbuffer_get_length(rs->to_down);
    size_t n = avail < length ? avail : length;
    if (n > 0 && evbuffer_remove(rs->to_down, buf, n) != (int)n)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (n == avail && rs->upstream_eof) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        rs->resp_done = true;
        if (rs->local_done) {
            submit_local_trailers(session, rs);
        } else if (rs->trailers.n > 0) {
            nghttp2_nv stackv[16];
            size_t nt;
            nghttp2_nv *nva = hdr_nva(&rs->trailers, NULL, NULL, NULL, &nt, stackv, 16);
            if (nva) {
                nghttp2_submit_trailer(session, rs->ds_id, nva, nt);
                if (nva != stackv)
                    free(nva);
            }
        } else {
            rs->status = GRPC_INTERNAL;
            free(rs->status_msg);
            rs->status_msg = strdup("etcdseal: upstream ended the call without a grpc-status");
            submit_local_trailers(session, rs);
        }
    } else if (n == 0) {
        return NGHTTP2_ERR_DEFERRED;
    }
    release_upstream_window(rs);
    return (ssize_t)n;
}

void relay_on_upstream_headers(relay_stream *rs, bool end_stream)
{
    rs->retryable = false; /* etcd has the call: never send it twice */
    buf_free(&rs->sent_log);
    if (rs->internal) {
        if (end_stream) {
            int st = hdr_status(&rs->resp_hdrs);
            nghttp2_vec m = hdr_find(&rs->resp_hdrs, "grpc-message");
            char text[256];
            snprintf(text, sizeof text, "%.*s", (int)m.len, m.base ? (const char *)m.base : "");
            internal_complete(rs, st < 0 ? GRPC_UNKNOWN : st, text);
        }
        return;
    }
    if (!rs->ds || rs->local_done || rs->resp_done)
        return;
    if (rs->resp_hdrs_local) { /* the client already has headers from the proxy */
        if (end_stream) {      /* etcd's trailers-only answer: pass its status on as trailers */
            nghttp2_vec m = hdr_find(&rs->resp_hdrs, "grpc-message");
            int st = hdr_status(&rs->resp_hdrs);
            relay_finish_local(rs, st < 0 ? GRPC_UNKNOWN : st, "%.*s", (int)m.len,
                               m.base ? (const char *)m.base : "");
        }
        return;
    }
    nghttp2_nv stackv[16];
    size_t n;
    nghttp2_nv *nva = hdr_nva(&rs->resp_hdrs, NULL, NULL, NULL, &n, stackv, 16);
    if (!nva) {
        relay_finish_local(rs, GRPC_RESOURCE_EXHAUSTED, "etcdseal: out of memory");
        return;
    }
    if (end_stream) { /* trailers-only response */
        rs->status = hdr_status(&rs->resp_hdrs);
        note_upstream_status(rs, &rs->resp_hdrs);
        nghttp2_submit_response(rs->ds->session, rs->ds_id, nva, n, NULL);
        rs->resp_started = rs->resp_done = true;
    } else {
        nghttp2_data_provider prd = {.source.ptr = rs, .read_callback = downstream_read_cb};
        nghttp2_submit_response(rs->ds->session, rs->ds_id, nva, n, &prd);
        rs->resp_started = true;
    }
    if (nva != stackv)
        free(nva);
    h2conn_schedule_flush(rs->ds);
}

static void resume_downstream_send(relay_stream *rs)
{
    if (rs->ds && !rs->ds->closing && rs->resp_started && !rs->resp_done) {
        nghttp2_session_resume_data(rs->ds->session, rs->ds_id);
        h2conn_schedule_flush(rs->ds);
    }
}

void relay_on_upstream_trailers(relay_stream *rs)
{
    if (rs->internal) {
        int st = hdr_status(&rs->trailers);
        nghttp2_vec m = hdr_find(&rs->trailers, "grpc-message");
        char text[256];
        snprintf(text, sizeof text, "%.*s", (int)m.len, m.base ? (const char *)m.base : "");
        internal_complete(rs, st < 0 ? GRPC_UNKNOWN : st, text);
        return;
    }
    if (rs->local_done)
        return;
    rs->status = hdr_status(&rs->trailers);
    note_upstream_status(rs, &rs->trailers);
    relay_on_upstream_eof(rs);
}

static void internal_data(relay_stream *rs, const uint8_t *data, size_t len)
{
    if (rs->us && !rs->us->closing)
        nghttp2_session_consume(rs->us->session, rs->us_id, len);
    while (len > 0 && !rs->internal_done) {
        size_t used = 0;
        enum grpc_reasm_result r = grpc_reasm_feed(&rs->resp_reasm, data, len, &used);
        data += used;
        len -= used;
        if (r == GRPC_REASM_MESSAGE) {
            size_t mlen;
            const uint8_t *m = grpc_reasm_message(&rs->resp_reasm, &mlen);
            buf_reset(&rs->internal_msg);
            if (buf_append(&rs->internal_msg, m, mlen) < 0)
                relay_finish_local(rs, GRPC_RESOURCE_EXHAUSTED, "etcdseal: out of memory");
            continue;
        }
        if (r != GRPC_REASM_NEED_MORE)
            relay_finish_local(rs, GRPC_INTERNAL, "etcdseal: bad response to an internal call");
        break;
    }
}

void relay_on_upstream_data(relay_stream *rs, const uint8_t *data, size_t len)
{
    if (rs->internal) {
        internal_data(rs, data, len);
        return;
    }
    rs->upstream_unconsumed += len;
    if (rs->local_done || rs->resp_done || !rs->ds) {
        release_upstream_window(rs);
        return;
    }
    if (rs->parked[TRANSFORM_RESPONSE]) {
        stash_parked(rs, TRANSFORM_RESPONSE, data, len);
        return;
    }
    if (rs->resp_reasm_on)
        feed_messages(rs, &rs->resp_reasm, rs->resp_fn, TRANSFORM_RESPONSE, data,
                      len, rs->to_down);
    else if (evbuffer_add(rs->to_down, data, len) != 0)
        relay_finish_local(rs, GRPC_RESOURCE_EXHAUSTED, "etcdseal: out of memory");
    release_upstream_window(rs);
    resume_downstream_send(rs);
}

void relay_on_upstream_eof(relay_stream *rs)
{
    if (rs->internal) {
        internal_complete(rs, GRPC_INTERNAL, "etcdseal: internal call ended without a status");
        return;
    }
    if (rs->local_done)
        return;
    if (rs->parked[TRANSFORM_RESPONSE]) {
        rs->upstream_eof_parked = true; /* delivered after the parked message */
        return;
    }
    if (rs->resp_reasm_on && !grpc_reasm_idle(&rs->resp_reasm)) {
        relay_finish_local(rs, GRPC_INTERNAL, "etcdseal: upstream response ended inside a message");
        return;
    }
    rs->upstream_eof = true;
    resume_downstream_send(rs);
}

void relay_on_upstream_closed(relay_stream *rs, uint32_t error_code, bool conn_lost)
{
    h2conn *us = rs->us;
    if (us) {
        if (rs->upstream_unconsumed && !us->closing)
            nghttp2_session_consume_connection(us->session, rs->upstream_unconsumed);
        rs->upstream_unconsumed = 0;
        h2conn_list_remove(&us->streams, rs, &rs->us_link);
    }
    rs->us = NULL;
    rs->us_closed = true;
    if (rs->internal && !rs->internal_done) {
        if (error_code == NGHTTP2_REFUSED_STREAM && rs->retryable && rs->retries < 3) {
            if (rs->sent_log.len)
                evbuffer_prepend(rs->to_up, rs->sent_log.data, rs->sent_log.len);
            buf_reset(&rs->sent_log);
            hdr_list_clear(&rs->resp_hdrs);
            hdr_list_clear(&rs->trailers);
            rs->retries++;
            upstream_pool_submit(rs->w->pool, rs);
            return;
        }
        internal_complete(rs, GRPC_UNAVAILABLE,
                          conn_lost ? "etcdseal: upstream etcd connection lost"
                                    : "etcdseal: upstream etcd reset the internal call");
    }
    /* a parked response (KMS wait) that etcd already ended is not a reset: it completes later */
    if (!rs->ds || rs->local_done || rs->resp_done || rs->upstream_eof || rs->upstream_eof_parked) {
        relay_maybe_free(rs);
        return;
    }
    bool refused = error_code == NGHTTP2_REFUSED_STREAM;
    if (refused && rs->retryable && !rs->resp_started && rs->retries < 3) {
        /* etcd never saw it (refused, or above GOAWAY's last stream id): send it again */
        if (rs->sent_log.len &&
            evbuffer_prepend(rs->to_up, rs->sent_log.data, rs->sent_log.len) != 0) {
            relay_finish_local(rs, GRPC_UNAVAILABLE, "etcdseal: out of memory on retry");
            return;
        }
        buf_reset(&rs->sent_log);
        hdr_list_clear(&rs->resp_hdrs);
        hdr_list_clear(&rs->trailers);
        rs->retries++;
        upstream_pool_submit(rs->w->pool, rs);
        return;
    }
    if (conn_lost || refused || !rs->resp_started) {
        relay_finish_local(rs, GRPC_UNAVAILABLE, "etcdseal: upstream etcd %s (stream error %u)",
                           conn_lost ? "connection lost" : "refused the call", error_code);
        return;
    }
    /* etcd reset a running call: pass the reset on */
    nghttp2_submit_rst_stream(rs->ds->session, NGHTTP2_FLAG_NONE, rs->ds_id, error_code);
    rs->resp_done = true;
    rs->status = error_code == NGHTTP2_CANCEL ? GRPC_CANCELLED : GRPC_INTERNAL;
    h2conn_schedule_flush(rs->ds);
}

/* ------------------------------------------------------------------ async transforms */
static void async_maybe_release(relay_stream *rs)
{
    struct transform_async *a = &rs->async;
    if (a->active && a->finished && a->outstanding == 0 && !a->in_callback) {
        a->active = false;
        relay_maybe_free(rs);
    }
}

/* Delivers an internal call's result to the transformer that asked for it (once). */
static void internal_complete(relay_stream *rs, int status, const char *status_msg)
{
    if (rs->internal_done)
        return;
    rs->internal_done = true;
    relay_stream *parent = rs->internal_parent;
    struct transform_async *a = &parent->async;
    a->outstanding--;
    a->in_callback = true;
    bool ok = status == GRPC_OK;
    rs->internal_cb(rs->internal_arg, ok && parent->ds ? GRPC_OK : (ok ? GRPC_CANCELLED : status),
                    status_msg, ok ? rs->internal_msg.data : NULL, ok ? rs->internal_msg.len : 0);
    a->in_callback = false;
    if (a->active)
        async_maybe_release(parent);
    else
        relay_maybe_free(parent); /* a call that waited for its etcd token (token_ready) */
}

int transform_async_call(transform_async *a, const char *path, const uint8_t *req, size_t len,
                         transform_call_cb cb, void *arg)
{
    relay_stream *p = a->rs;
    if (!p->ds || a->finished)
        return -1;
    return start_internal_call(p, path, req, len, p->token_override, cb, arg);
}

/* An internal unary call for parent p (see transform_async_call); `token` as token_override. */
static int start_internal_call(relay_stream *p, const char *path, const uint8_t *req, size_t len,
                               const char *token, transform_call_cb cb, void *arg)
{
    struct transform_async *a = &p->async;
    a->rs = p;
    relay_stream *rs = calloc(1, sizeof *rs);
    if (!rs)
        return -1;
    rs->to_up = evbuffer_new();
    rs->to_down = evbuffer_new();
    rs->path_override = strdup(path);
    rs->token_override = token ? strdup(token) : NULL;
    if (!rs->to_up || !rs->to_down || !rs->path_override || (token && !rs->token_override)) {
        if (rs->to_up)
            evbuffer_free(rs->to_up);
        if (rs->to_down)
            evbuffer_free(rs->to_down);
        free(rs->path_override);
        free(rs->token_override);
        free(rs);
        return -1;
    }
    rs->w = p->w;
    rs->internal = true;
    rs->internal_cb = cb;
    rs->internal_arg = arg;
    rs->internal_parent = p;
    rs->policy = p->policy;
    rs->us_id = -1;
    rs->us_closed = true;
    rs->status = -1;
    rs->start_ns = worker_now_ns();
    /* same metadata as the client's call (auth token, hasleader, deadline), other :path */
    for (uint32_t i = 0; i + 1 < p->req_hdrs.n; i += 2)
        hdr_list_add(&rs->req_hdrs, p->req_hdrs.items[i], p->req_hdrs.items[i + 1]);
    grpc_reasm_init(&rs->resp_reasm, rs->w->rt->max_message_bytes);
    rs->resp_reasm_on = true;
    uint8_t prefix[GRPC_PREFIX_LEN];
    grpc_put_prefix(prefix, len);
    evbuffer_add(rs->to_up, prefix, sizeof prefix);
    evbuffer_add(rs->to_up, req, len);
    rs->client_eof = true;
    rs->retryable = true;
    a->outstanding++;
    upstream_pool_submit(rs->w->pool, rs); /* may complete at once (no upstream): see cb */
    return 0;
}

void transform_async_respond(transform_async *a, const uint8_t *msg, size_t len)
{
    relay_stream *rs = a->rs;
    if (a->finished)
        return;
    a->finished = true;
    if (rs->ds && !rs->ds->closing && !rs->local_done && !rs->resp_done) {
        uint8_t prefix[GRPC_PREFIX_LEN];
        grpc_put_prefix(prefix, len);
        evbuffer_add(rs->to_down, prefix, sizeof prefix);
        evbuffer_add(rs->to_down, msg, len);
        rs->local_done = true;
        rs->status = GRPC_OK;
        rs->upstream_eof = true;
        cancel_upstream(rs);
        nghttp2_nv nva[] = {
            {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
            {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16,
             NGHTTP2_NV_FLAG_NONE},
        };
        nghttp2_data_provider prd = {.source.ptr = rs, .read_callback = downstream_read_cb};
        nghttp2_submit_response(rs->ds->session, rs->ds_id, nva, 2, &prd);
        rs->resp_started = true;
        h2conn_schedule_flush(rs->ds);
    }
    async_maybe_release(rs);
}

void transform_async_fail(transform_async *a, int status, const char *fmt, ...)
{
    relay_stream *rs = a->rs;
    if (a->finished)
        return;
    a->finished = true;
    char text[ES_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (rs->ds)
        relay_finish_local(rs, status, "%s", text);
    async_maybe_release(rs);
}

int transform_async_cancelled(const transform_async *a)
{
    return a->rs->ds == NULL;
}

const transform_ctx *transform_async_ctx(const transform_async *a)
{
    return &a->ctx;
}

/* ------------------------------------------------------------------ KMS waits */
static void resume_direction(relay_stream *rs, enum transform_dir dir)
{
    grpc_reasm *r = dir == TRANSFORM_REQUEST ? &rs->req_reasm : &rs->resp_reasm;
    transform_fn fn =
        dir == TRANSFORM_REQUEST ? rs->req_fn : rs->resp_fn;
    struct evbuffer *dst = dir == TRANSFORM_REQUEST ? rs->to_up : rs->to_down;
    rs->parked[dir] = false;
    size_t mlen;
    const uint8_t *m = grpc_reasm_message(r, &mlen);
    int rc = run_transform(rs, fn, dir, m, mlen, dst);
    if (rc == 2)
        return; /* parked again; a new wake-up is armed */
    if (rc != 0)
        return;
    /* what arrived meanwhile */
    struct evbuffer *held = rs->parked_in[dir];
    while (held && evbuffer_get_length(held) > 0 && !rs->parked[dir] && !rs->local_done) {
        size_t n = evbuffer_get_length(held);
        const uint8_t *bytes = evbuffer_pullup(held, (ssize_t)n);
        /* feed_messages may park again and re-queue the tail into parked_in[dir] (= held):
         * take the bytes out first */
        uint8_t *copy = malloc(n);
        if (!copy) {
            relay_finish_local(rs, GRPC_RESOURCE_EXHAUSTED, "etcdseal: out of memory");
            return;
        }
        memcpy(copy, bytes, n);
        evbuffer_drain(held, n);
        feed_messages(rs, r, fn, dir, copy, n, dst);
        free(copy);
    }
    if (rs->parked[dir])
        return;
    if (dir == TRANSFORM_REQUEST) {
        release_client_window(rs);
        if (rs->client_eof)
            relay_on_client_eof(rs);
        else
            resume_upstream_send(rs);
    } else {
        release_upstream_window(rs);
        if (rs->upstream_eof_parked) {
            rs->upstream_eof_parked = false;
            relay_on_upstream_eof(rs);
        } else {
            resume_downstream_send(rs);
        }
    }
}

void relay_resume_parked(relay_stream *rs)
{
    rs->wake_queued = false;
    bool alive = rs->ds && !rs->local_done && !rs->resp_done;
    for (int d = 0; d < 2; d++) {
        if (!rs->parked[d])
            continue;
        if (!alive) {
            rs->parked[d] = false;
            continue;
        }
        resume_direction(rs, (enum transform_dir)d);
    }
    relay_maybe_free(rs);
}
