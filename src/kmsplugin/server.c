/* server.c - the KMS v2 plugin's gRPC core server (see server.h).
 *
 * One completion queue, driven by the caller's thread. Each call is a struct plugin_call that
 * moves through explicit states: REQUESTED (waiting in grpc_server_request_call) -> READING
 * (RECV_MESSAGE) -> ANSWERING (initial metadata, response, status, RECV_CLOSE_ON_SERVER) ->
 * freed. Exactly one call is REQUESTED at any time; a new one is requested as soon as one
 * arrives. Responses that carry plaintext (DecryptResponse) sit in a slice whose destructor
 * wipes it; request bytes holding plaintext are wiped after use.
 */
#include "kmsplugin/server.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <sodium.h>

#include "base/buf.h"
#include "base/log.h"
#include "kms/v2/api.pb-c.h"

#define LISTEN_MAX 512
#define SHUTDOWN_GRACE_MS 3000

enum call_state { CALL_REQUESTED, CALL_READING, CALL_ANSWERING };
enum method { M_OTHER, M_STATUS, M_ENCRYPT, M_DECRYPT };

struct plugin_call {
    enum call_state state;
    enum method method;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
    grpc_byte_buffer *req;
    grpc_byte_buffer *resp;
    grpc_slice status_details;
    int have_details;
    int cancelled;
    struct timespec t0;
};

struct kmsplugin_server {
    grpc_server *server;
    grpc_completion_queue *cq;
    kmsplugin_kek *kek;
    int shutting_down;
    size_t in_flight; /* calls past REQUESTED */
    kmsplugin_counts counts;
    char sock_path[LISTEN_MAX]; /* file to remove on stop; empty for abstract sockets */
};

static int shutdown_tag; /* address used as the shutdown-notification tag */

int kmsplugin_listen_to_grpc(char *out, size_t cap, const char *listen, es_error *err)
{
    static const char scheme[] = "unix://";
    if (!listen || strncmp(listen, scheme, sizeof scheme - 1) != 0 ||
        listen[sizeof scheme - 1] != '/')
        return es_error_set(err, GRPC_STATUS_INVALID_ARGUMENT,
                            "--listen %s: want unix:///path or unix:///@name",
                            listen ? listen : "(none)");
    const char *path = listen + sizeof scheme - 1;
    int n;
    if (path[1] == '@') {
        if (!path[2])
            return es_error_set(err, GRPC_STATUS_INVALID_ARGUMENT,
                                "--listen %s: empty abstract socket name", listen);
        n = snprintf(out, cap, "unix-abstract:%s", path + 2);
    } else {
        n = snprintf(out, cap, "unix:%s", path);
    }
    if (n < 0 || (size_t)n >= cap)
        return es_error_set(err, GRPC_STATUS_INVALID_ARGUMENT, "--listen %s: address too long",
                            listen);
    return 0;
}

static const char *method_name(enum method m)
{
    switch (m) {
    case M_STATUS:
        return "Status";
    case M_ENCRYPT:
        return "Encrypt";
    case M_DECRYPT:
        return "Decrypt";
    default:
        return "other";
    }
}

static void call_free(struct plugin_call *c)
{
    if (c->call)
        grpc_call_unref(c->call);
    grpc_call_details_destroy(&c->details);
    grpc_metadata_array_destroy(&c->md);
    if (c->req)
        grpc_byte_buffer_destroy(c->req);
    if (c->resp)
        grpc_byte_buffer_destroy(c->resp);
    if (c->have_details)
        grpc_slice_unref(c->status_details);
    free(c);
}

static void request_next(kmsplugin_server *s)
{
    if (s->shutting_down)
        return;
    struct plugin_call *c = calloc(1, sizeof *c);
    if (!c) {
        log_error("kms-plugin: out of memory; not accepting calls");
        return;
    }
    c->state = CALL_REQUESTED;
    grpc_call_details_init(&c->details);
    grpc_metadata_array_init(&c->md);
    if (grpc_server_request_call(s->server, &c->call, &c->details, &c->md, s->cq, s->cq, c) !=
        GRPC_CALL_OK) {
        log_error("kms-plugin: grpc_server_request_call failed");
        call_free(c);
    }
}

static void wipe_buf_slice(void *p)
{
    buf_t *b = p;
    buf_wipe_free(b);
    free(b);
}

/* Packs msg into c->resp; the bytes are wiped when gRPC drops the slice. */
static int set_response(struct plugin_call *c, const ProtobufCMessage *msg)
{
    buf_t *b = calloc(1, sizeof *b);
    size_t n = protobuf_c_message_get_packed_size(msg);
    if (!b || buf_reserve(b, n ? n : 1) != 0) {
        free(b);
        return -1;
    }
    b->len = protobuf_c_message_pack(msg, b->data);
    grpc_slice sl = grpc_slice_new_with_user_data(b->data, b->len, wipe_buf_slice, b);
    c->resp = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    return c->resp ? 0 : -1;
}

/* The request message as one contiguous, writable slice (caller unrefs). */
static grpc_slice request_bytes(struct plugin_call *c)
{
    grpc_byte_buffer_reader r;
    if (!c->req || !grpc_byte_buffer_reader_init(&r, c->req))
        return grpc_empty_slice();
    grpc_slice sl = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    return sl;
}

static void wipe_slice(grpc_slice sl)
{
    size_t n = GRPC_SLICE_LENGTH(sl);
    if (n)
        sodium_memzero(GRPC_SLICE_START_PTR(sl), n);
}

static int do_status(kmsplugin_server *s, struct plugin_call *c, es_error *err)
{
    V2__StatusResponse r = V2__STATUS_RESPONSE__INIT;
    es_error herr = {0, ""};
    r.version = "v2";
    r.healthz = kmsplugin_kek_health(s->kek, &herr) == 0 ? "ok" : herr.msg;
    r.key_id = (char *)kmsplugin_kek_key_id(s->kek);
    if (herr.code)
        log_warn("kms-plugin backend unhealthy|reason=\"%s\"", herr.msg);
    if (set_response(c, &r.base) != 0)
        return es_error_set(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return 0;
}

static int do_encrypt(kmsplugin_server *s, struct plugin_call *c, es_error *err)
{
    grpc_slice in = request_bytes(c);
    V2__EncryptRequest *rq =
        v2__encrypt_request__unpack(NULL, GRPC_SLICE_LENGTH(in), GRPC_SLICE_START_PTR(in));
    wipe_slice(in);
    grpc_slice_unref(in);
    if (!rq)
        return es_error_set(err, GRPC_STATUS_INVALID_ARGUMENT, "malformed EncryptRequest");
    buf_t ct = BUF_INIT;
    int rc = kmsplugin_kek_encrypt(s->kek, &ct, rq->plaintext.data, rq->plaintext.len, err);
    if (rq->plaintext.len)
        sodium_memzero(rq->plaintext.data, rq->plaintext.len);
    v2__encrypt_request__free_unpacked(rq, NULL);
    if (rc == 0) {
        V2__EncryptResponse r = V2__ENCRYPT_RESPONSE__INIT;
        r.ciphertext.data = ct.data;
        r.ciphertext.len = ct.len;
        r.key_id = (char *)kmsplugin_kek_key_id(s->kek);
        if (set_response(c, &r.base) != 0)
            rc = es_error_set(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    }
    buf_free(&ct);
    return rc;
}

static int do_decrypt(kmsplugin_server *s, struct plugin_call *c, char *key_id_log, size_t cap,
                      es_error *err)
{
    grpc_slice in = request_bytes(c);
    V2__DecryptRequest *rq =
        v2__decrypt_request__unpack(NULL, GRPC_SLICE_LENGTH(in), GRPC_SLICE_START_PTR(in));
    grpc_slice_unref(in);
    if (!rq)
        return es_error_set(err, GRPC_STATUS_INVALID_ARGUMENT, "malformed DecryptRequest");
    snprintf(key_id_log, cap, "%s", rq->key_id ? rq->key_id : "");
    buf_t pt = BUF_INIT;
    int rc = kmsplugin_kek_decrypt(s->kek, &pt, rq->key_id, rq->ciphertext.data, rq->ciphertext.len,
                                   err);
    v2__decrypt_request__free_unpacked(rq, NULL);
    if (rc == 0) {
        V2__DecryptResponse r = V2__DECRYPT_RESPONSE__INIT;
        r.plaintext.data = pt.data;
        r.plaintext.len = pt.len;
        if (set_response(c, &r.base) != 0)
            rc = es_error_set(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    }
    buf_wipe_free(&pt);
    return rc;
}

static double ms_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* The request message arrived (or not): run the method and send the answer. */
static void answer(kmsplugin_server *s, struct plugin_call *c, int read_ok)
{
    es_error err = {0, ""};
    char key_id_log[KMSPLUGIN_KEY_ID_MAX + 1] = "";
    int rc;
    if (c->method == M_OTHER)
        rc = es_error_set(&err, GRPC_STATUS_UNIMPLEMENTED, "unknown method");
    else if (!read_ok || !c->req)
        rc = es_error_set(&err, GRPC_STATUS_INVALID_ARGUMENT, "no request message");
    else if (c->method == M_STATUS)
        rc = do_status(s, c, &err);
    else if (c->method == M_ENCRYPT)
        rc = do_encrypt(s, c, &err);
    else
        rc = do_decrypt(s, c, key_id_log, sizeof key_id_log, &err);
    if (c->method == M_STATUS || c->method == M_ENCRYPT)
        snprintf(key_id_log, sizeof key_id_log, "%s", kmsplugin_kek_key_id(s->kek));

    switch (c->method) {
    case M_STATUS:
        s->counts.status++;
        break;
    case M_ENCRYPT:
        s->counts.encrypt++;
        break;
    case M_DECRYPT:
        s->counts.decrypt++;
        break;
    default:
        s->counts.unimplemented++;
    }
    grpc_status_code code = GRPC_STATUS_OK;
    if (rc != 0) {
        s->counts.failed++;
        code = err.code > 0 && err.code <= 16 ? (grpc_status_code)err.code : GRPC_STATUS_INTERNAL;
        c->status_details = grpc_slice_from_copied_string(err.msg);
        c->have_details = 1;
    }
    if (c->method == M_OTHER) {
        char *m = grpc_slice_to_c_string(c->details.method);
        log_info("kms call|method=\"%.200s\" code=%d error=\"%s\"", m ? m : "?", (int)code,
                 err.msg);
        gpr_free(m);
    } else {
        log_info("kms call|method=%s key_id=\"%.300s\" code=%d ms=%.3f%s%s%s",
                 method_name(c->method), key_id_log, (int)code, ms_since(&c->t0),
                 rc ? " error=\"" : "", rc ? err.msg : "", rc ? "\"" : "");
    }

    grpc_op ops[4];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (rc == 0 && c->resp) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = c->resp;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    ops[n++].data.send_status_from_server.status_details =
        c->have_details ? &c->status_details : NULL;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n++].data.recv_close_on_server.cancelled = &c->cancelled;
    c->state = CALL_ANSWERING;
    if (grpc_call_start_batch(c->call, ops, n, c, NULL) != GRPC_CALL_OK) {
        log_error("kms-plugin: grpc_call_start_batch (answer) failed");
        s->in_flight--;
        call_free(c);
    }
}

static enum method method_of(const grpc_call_details *d)
{
    if (grpc_slice_str_cmp(d->method, "/v2.KeyManagementService/Status") == 0)
        return M_STATUS;
    if (grpc_slice_str_cmp(d->method, "/v2.KeyManagementService/Encrypt") == 0)
        return M_ENCRYPT;
    if (grpc_slice_str_cmp(d->method, "/v2.KeyManagementService/Decrypt") == 0)
        return M_DECRYPT;
    return M_OTHER;
}

static void on_event(kmsplugin_server *s, struct plugin_call *c, int ok)
{
    switch (c->state) {
    case CALL_REQUESTED: {
        if (!ok) { /* server shutting down */
            call_free(c);
            return;
        }
        request_next(s);
        s->in_flight++;
        clock_gettime(CLOCK_MONOTONIC, &c->t0);
        c->method = method_of(&c->details);
        grpc_op op;
        memset(&op, 0, sizeof op);
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &c->req;
        c->state = CALL_READING;
        if (grpc_call_start_batch(c->call, &op, 1, c, NULL) != GRPC_CALL_OK) {
            log_error("kms-plugin: grpc_call_start_batch (read) failed");
            s->in_flight--;
            call_free(c);
        }
        return;
    }
    case CALL_READING:
        answer(s, c, ok);
        return;
    case CALL_ANSWERING:
        s->in_flight--;
        call_free(c);
        return;
    }
}

int kmsplugin_server_start(kmsplugin_server **out, const char *listen, kmsplugin_kek *kek,
                           es_error *err)
{
    *out = NULL;
    char addr[LISTEN_MAX];
    if (kmsplugin_listen_to_grpc(addr, sizeof addr, listen, err) != 0)
        return -1;
    kmsplugin_server *s = calloc(1, sizeof *s);
    if (!s)
        return es_error_set(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    s->kek = kek;
    if (strncmp(addr, "unix:", 5) == 0) {
        snprintf(s->sock_path, sizeof s->sock_path, "%s", addr + 5);
        struct stat st;
        if (lstat(s->sock_path, &st) == 0) {
            if (!S_ISSOCK(st.st_mode)) {
                free(s);
                return es_error_set(err, GRPC_STATUS_FAILED_PRECONDITION,
                                    "--listen %s: exists and is not a socket", listen);
            }
            unlink(s->sock_path); /* stale socket of an earlier run */
        }
    }
    grpc_init();
    s->cq = grpc_completion_queue_create_for_next(NULL);
    s->server = grpc_server_create(NULL, NULL);
    grpc_server_register_completion_queue(s->server, s->cq, NULL);
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(s->server, addr, creds);
    grpc_server_credentials_release(creds);
    if (port == 0) {
        grpc_server_destroy(s->server);
        grpc_completion_queue_shutdown(s->cq);
        while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN)
            ;
        grpc_completion_queue_destroy(s->cq);
        free(s);
        grpc_shutdown();
        return es_error_set(err, GRPC_STATUS_UNAVAILABLE, "--listen %s: cannot bind (%s)", listen,
                            addr);
    }
    grpc_server_start(s->server);
    request_next(s);
    *out = s;
    return 0;
}

void kmsplugin_server_poll(kmsplugin_server *s, int timeout_ms)
{
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    grpc_event ev = grpc_completion_queue_next(s->cq, deadline, NULL);
    if (ev.type == GRPC_OP_COMPLETE && ev.tag != &shutdown_tag)
        on_event(s, ev.tag, ev.success);
}

void kmsplugin_server_counts(const kmsplugin_server *s, kmsplugin_counts *out)
{
    *out = s->counts;
}

void kmsplugin_server_stop(kmsplugin_server *s, kmsplugin_counts *final)
{
    if (!s)
        return;
    s->shutting_down = 1;
    grpc_server_shutdown_and_notify(s->server, s->cq, &shutdown_tag);
    gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                      gpr_time_from_millis(SHUTDOWN_GRACE_MS, GPR_TIMESPAN));
    int cancelled = 0;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(
            s->cq,
            gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(100, GPR_TIMESPAN)),
            NULL);
        if (ev.type == GRPC_OP_COMPLETE && ev.tag == &shutdown_tag)
            break;
        if (ev.type == GRPC_OP_COMPLETE)
            on_event(s, ev.tag, ev.success);
        if (!cancelled && gpr_time_cmp(gpr_now(GPR_CLOCK_MONOTONIC), until) > 0) {
            grpc_server_cancel_all_calls(s->server);
            cancelled = 1;
        }
    }
    grpc_server_destroy(s->server);
    grpc_completion_queue_shutdown(s->cq);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type == GRPC_OP_COMPLETE && ev.tag != &shutdown_tag)
            on_event(s, ev.tag, ev.success);
    }
    grpc_completion_queue_destroy(s->cq);
    if (final)
        *final = s->counts;
    if (s->sock_path[0])
        unlink(s->sock_path);
    free(s);
    grpc_shutdown();
}
