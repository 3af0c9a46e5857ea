/* relay.h - internal contract of the HTTP/2 relay (src/proxy only).
 *
 * Objects, all owned by one worker thread:
 *  - h2conn: one HTTP/2 connection (bufferevent + nghttp2 session), either a client-facing
 *    downstream connection (server session) or an upstream connection to etcd (client session).
 *  - relay_stream: one gRPC call = one client stream paired with one upstream stream. It is
 *    linked into its downstream conn's list and, once submitted, its upstream conn's list (or
 *    the pool's pending list). It is freed when both sides have let go of it.
 *  - upstream_pool: the worker's upstream connection(s), failover and backoff.
 * Flow control is end to end: bytes received on one side are acknowledged (WINDOW_UPDATE via
 * nghttp2_session_consume) only once the other side has taken them, or while the stream's
 * pending buffer is below RELAY_BUFFER_HIGH, so memory per stream stays bounded.
 * All functions run on the owning worker's thread; nothing here takes a lock.
 */
#ifndef ETCDSEAL_PROXY_RELAY_H
#define ETCDSEAL_PROXY_RELAY_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "base/buf.h"
#include "proxy/endpoint.h"
#include "proxy/grpc_wire.h"
#include "proxy/methods.h"
#include "proxy/peer_identity.h"
#include "proxy/transform.h"

struct worker;
struct relay_stream;
struct upstream_pool;

#define RELAY_BUFFER_HIGH (1u << 20)      /* pending bytes per stream and direction */
#define RELAY_STREAM_WINDOW (1u << 20)    /* our SETTINGS_INITIAL_WINDOW_SIZE */
#define RELAY_CONN_WINDOW (64u << 20)     /* connection-level receive window */
#define RELAY_RETRY_LOG_MAX (256u << 10)  /* request bytes kept for a retry on refusal */
#define RELAY_OUTPUT_HIGH (4u << 20)      /* stop producing frames above this socket backlog */

/* ------------------------------------------------------------------ streams lists */
typedef struct rs_link {
    struct relay_stream *prev, *next;
} rs_link;

typedef struct rs_list {
    struct relay_stream *head;
    size_t count;
} rs_list;

/* ------------------------------------------------------------------ connections */
enum h2conn_kind { H2CONN_DOWNSTREAM, H2CONN_UPSTREAM };
enum upstream_state { US_CONNECTING, US_READY, US_DRAINING, US_DEAD };

typedef struct h2conn {
    enum h2conn_kind kind;
    struct worker *w;
    struct bufferevent *bev;
    nghttp2_session *session;
    struct event *flush_ev; /* deferred flush: one write per loop turn */
    struct event *free_ev;  /* deferred teardown: never free a session inside its callbacks */
    struct event *ack_ev;   /* sends held PING ACKs (see h2conn_flush) */
    struct event *read_ev;  /* cleartext: reads the socket directly (see direct_read_cb) */
    bool flush_pending;
    bool closing;
    bool tls;               /* TLS connections always write through the bufferevent */
    struct evbuffer *stage; /* cleartext: frames written straight to the socket (see flush) */
    rs_list streams;
    struct h2conn *prev, *next; /* worker's list of downstream conns / pool's list */
    char peer[64];
    /* upstream only */
    struct upstream_pool *pool;
    enum upstream_state state;
    size_t endpoint_index;
    struct event *ping_ev;
    bool ping_outstanding;
    uint64_t last_recv_ms;
    bool goaway_received;
    bool settings_received; /* the server's first SETTINGS: it accepted the connection */
    /* downstream only */
    bool shutdown_notice_sent;
    peer_identity identity; /* the client's certificate names, computed on first use (relay.c) */
} h2conn;

/* ------------------------------------------------------------------ relay stream */
typedef struct hdr_list {
    nghttp2_rcbuf **items; /* name, value, name, value ... (references held) */
    uint32_t n, cap;
} hdr_list;

/* An asynchronous transform of one client call (embedded in its relay_stream, which is kept
 * alive while `active`). See transform.h. */
struct transform_async {
    struct relay_stream *rs;
    transform_ctx ctx;
    int outstanding; /* internal calls in flight */
    bool active;     /* a transformer returned TRANSFORM_PENDING; the stream is kept alive */
    bool finished;   /* respond/fail was called */
    bool in_callback;
};

typedef struct relay_stream {
    struct worker *w;
    const method_desc *method;
    uint64_t start_ns;
    /* client side */
    h2conn *ds;
    int32_t ds_id;
    rs_link ds_link;
    hdr_list req_hdrs;
    struct evbuffer *to_up; /* bytes waiting for the upstream stream */
    size_t client_unconsumed;
    bool client_eof;
    bool resp_started; /* response HEADERS submitted to the client */
    bool resp_done;    /* trailers submitted or stream reset: nothing more to send */
    bool resp_hdrs_local; /* the proxy sent the response headers (a denied Watch create) */
    bool local_done;   /* the proxy decided the status itself */
    /* upstream side */
    h2conn *us;
    int32_t us_id;
    rs_link us_link; /* in us->streams, or in pool->pending while waiting */
    bool pending;
    bool us_closed;
    hdr_list resp_hdrs;
    hdr_list trailers;
    struct evbuffer *to_down;
    size_t upstream_unconsumed;
    bool upstream_eof;
    /* local status (when local_done) */
    int status;
    char *status_msg;
    /* transformers this call runs (the method's, or NULL where they would change nothing) */
    transform_fn req_fn, resp_fn;
    grpc_reasm req_reasm, resp_reasm;
    bool req_reasm_on, resp_reasm_on;
    void *xform_state;
    /* retry on REFUSED_STREAM / GOAWAY: request bytes already sent upstream */
    buf_t sent_log;
    bool retryable;
    int retries;
    /* request transformers of unary methods: upstream is opened only once the first
     * transformed message exists (an async transformer may answer the call itself) */
    bool submit_deferred;
    struct transform_async async;
    /* internal calls made by the proxy on behalf of a client call (no client side) */
    bool internal;
    char *path_override;
    transform_call_cb internal_cb;
    void *internal_arg;
    struct relay_stream *internal_parent;
    bool internal_done;
    buf_t internal_msg;
    /* the encryption policy this call started with (a reload does not change it midway) */
    struct policy_encryption *policy;
    /* the access policy checking this call's request messages (KEYS-class methods while a
     * policy is loaded; NULL otherwise): taken at call start, like `policy` */
    struct access_policy *access;
    /* --map-identity-to-etcd-user: the etcd token sent upstream in place of the client's
     * (NULL: the client's headers as they came; "": no token at all) and whose it is */
    char *token_override;
    char *mapped_user;
    bool token_wait;         /* Authenticate in flight: client input waits in token_held */
    bool submit_after_token; /* open upstream once the token is there */
    bool eof_after_token;
    struct evbuffer *token_held;
    /* a direction whose current message waits for a KMS result (TRANSFORM_WOULD_BLOCK):
     * input arriving meanwhile waits in parked_in[dir] */
    bool parked[2];
    bool wake_queued;
    bool upstream_eof_parked;
    int park_count;
    struct evbuffer *parked_in[2];
} relay_stream;

/* Queues a parked stream for re-run on its worker (thread-safe; worker.c). */
void worker_wake_stream(void *rs);
/* Called on the worker thread for each woken stream. */
void relay_resume_parked(relay_stream *rs);

/* ------------------------------------------------------------------ h2conn.c */
void h2conn_list_add(rs_list *l, relay_stream *rs, rs_link *link);
void h2conn_list_remove(rs_list *l, relay_stream *rs, rs_link *link);
int h2conn_setup(h2conn *c, struct worker *w, enum h2conn_kind kind, struct bufferevent *bev);
void h2conn_schedule_flush(h2conn *c);
/* Frees the session, events, buffers, the bufferevent (closing the socket) and c itself. */
void h2conn_release(h2conn *c);
/* Marks the connection closed and schedules its teardown (detaching streams first). */
void h2conn_close(h2conn *c, const char *why);
void h2conn_read_cb(struct bufferevent *bev, void *arg);
void h2conn_write_cb(struct bufferevent *bev, void *arg);

/* ------------------------------------------------------------------ downstream.c */
int downstream_accept(struct worker *w, int fd, const char *peer);
void downstream_conn_teardown(h2conn *c);
/* GOAWAY to every client of the worker (graceful shutdown). */
void downstream_shutdown_all(struct worker *w);

/* ------------------------------------------------------------------ upstream.c */
struct upstream_pool *upstream_pool_new(struct worker *w);
void upstream_pool_free(struct upstream_pool *p);
/* Sends the stream upstream now, or queues it until a connection is ready, or fails it. */
void upstream_pool_submit(struct upstream_pool *p, relay_stream *rs);
void upstream_pool_unlink_pending(struct upstream_pool *p, relay_stream *rs);
void upstream_conn_teardown(h2conn *c);
bool upstream_pool_ready(const struct upstream_pool *p);

/* ------------------------------------------------------------------ relay.c */
relay_stream *relay_stream_new(h2conn *ds, int32_t stream_id);
/* Frees the worker's cache of finished streams (after its loop ended). */
void relay_stream_cache_free(struct worker *w);
void relay_on_request_headers(relay_stream *rs);
void relay_on_client_data(relay_stream *rs, const uint8_t *data, size_t len);
void relay_on_client_eof(relay_stream *rs);
void relay_on_client_closed(relay_stream *rs, uint32_t error_code);
/* Submits the request on upstream conn `us` (called by the pool). Returns 0, or -1 when the
 * connection cannot take a new stream (the pool then tries another). */
int relay_submit_upstream(relay_stream *rs, h2conn *us);
void relay_on_upstream_headers(relay_stream *rs, bool end_stream);
void relay_on_upstream_trailers(relay_stream *rs);
void relay_on_upstream_data(relay_stream *rs, const uint8_t *data, size_t len);
void relay_on_upstream_eof(relay_stream *rs);
/* The upstream stream closed (error_code from RST_STREAM or connection loss). `retry` means
 * etcd never processed it (REFUSED_STREAM / above GOAWAY last-stream-id). */
void relay_on_upstream_closed(relay_stream *rs, uint32_t error_code, bool conn_lost);
/* Ends the call with a gRPC status generated by the proxy (message is copied). */
void relay_finish_local(relay_stream *rs, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void hdr_list_add(hdr_list *l, nghttp2_rcbuf *name, nghttp2_rcbuf *value);
void hdr_list_clear(hdr_list *l);

#endif
