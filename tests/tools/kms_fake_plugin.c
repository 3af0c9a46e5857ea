/* kms_fake_plugin.c - the fake KMS plugin of ../shared/vectors/README.md (v1 or v2), on gRPC core.
 *
 *   kms_fake_plugin --listen unix:///@name --v1 --kek-b64 K
 *   kms_fake_plugin --listen unix:///@name --v2 --key ID=K [--key ID2=K2]... --current ID
 *                   [--annotation ID:fqdn=B64]...
 *   common: [--counts FILE] [--control FILE] [--fail MODE]
 *
 * v1: Encrypt(p) = n || AES-256-GCM(K, n, p, aad = ""), n 12 random bytes; Version "v1beta1".
 * v2: Encrypt(p) = n || AES-256-GCM(K[cur], n, p, aad = cur), key_id cur, that key's annotations;
 *     Decrypt needs a known key_id and exactly that key's annotations; Status {v2, ok, cur}.
 * Counts (Status/Version/Encrypt/Decrypt) are rewritten to --counts after every call
 * ("Status=N Version=N Encrypt=N Decrypt=N") and printed on SIGTERM/SIGINT.
 * --control FILE is re-read before every call when it changed: lines `current=ID` (key
 * rotation) and `fail=MODE`. MODE: none | unavailable (status 14) | error (status 2) |
 * unhealthy (Status healthz "broken") | sleep:MS (answer after MS milliseconds).
 * Calls are served one at a time (a test tool).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sodium.h>

#include "crypto/kms_client.h"
#include "kms/v1beta1/api.pb-c.h"
#include "kms/v2/api.pb-c.h"

#define MAX_KEYS 16
#define MAX_ANN 8

typedef struct fkey {
    char *id;
    uint8_t kek[32];
    size_t n_ann;
    char *ann_key[MAX_ANN];
    uint8_t *ann_val[MAX_ANN];
    size_t ann_len[MAX_ANN];
} fkey;

static struct {
    int version; /* 1 or 2 */
    fkey keys[MAX_KEYS];
    size_t n_keys;
    char current[256];
    char fail[64];
    const char *counts_path, *control_path;
    time_t control_mtime;
    long control_mtime_ns;
    unsigned long n_status, n_version, n_encrypt, n_decrypt;
} S;

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static int b64dec(const char *s, uint8_t *out, size_t cap, size_t *len)
{
    return sodium_base642bin(out, cap, s, strlen(s), NULL, len, NULL,
                             sodium_base64_VARIANT_ORIGINAL);
}

static fkey *find_key(const char *id)
{
    for (size_t i = 0; i < S.n_keys; i++)
        if (strcmp(S.keys[i].id, id) == 0)
            return &S.keys[i];
    return NULL;
}

static void write_counts(FILE *f)
{
    fprintf(f, "Status=%lu Version=%lu Encrypt=%lu Decrypt=%lu\n", S.n_status, S.n_version,
            S.n_encrypt, S.n_decrypt);
}

static void save_counts(void)
{
    if (!S.counts_path)
        return;
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s.tmp", S.counts_path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return;
    write_counts(f);
    fclose(f);
    rename(tmp, S.counts_path);
}

static void read_control(void)
{
    struct stat st;
    if (!S.control_path || stat(S.control_path, &st) != 0)
        return;
    if (st.st_mtim.tv_sec == S.control_mtime && st.st_mtim.tv_nsec == S.control_mtime_ns)
        return;
    S.control_mtime = st.st_mtim.tv_sec;
    S.control_mtime_ns = st.st_mtim.tv_nsec;
    FILE *f = fopen(S.control_path, "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (strncmp(line, "current=", 8) == 0)
            snprintf(S.current, sizeof S.current, "%s", line + 8);
        else if (strncmp(line, "fail=", 5) == 0)
            snprintf(S.fail, sizeof S.fail, "%s", line + 5);
    }
    fclose(f);
}

static int gcm(int enc, const uint8_t *key, const uint8_t *nonce, const uint8_t *aad,
               size_t aad_len, const uint8_t *in, size_t in_len, uint8_t *out, uint8_t *tag)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int ok = c && EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, key, nonce, enc) == 1;
    int n = 0;
    if (ok && aad_len)
        ok = EVP_CipherUpdate(c, NULL, &n, aad, (int)aad_len) == 1;
    if (ok && in_len)
        ok = EVP_CipherUpdate(c, out, &n, in, (int)in_len) == 1;
    if (ok && !enc)
        ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, tag) == 1;
    if (ok)
        ok = EVP_CipherFinal_ex(c, out + n, &n) == 1;
    if (ok && enc)
        ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag) == 1;
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : -1;
}

/* out = n || ct || tag; returns length or -1 */
static long seal(const uint8_t *key, const char *aad, const uint8_t *in, size_t len, uint8_t **out)
{
    *out = malloc(len + 28);
    if (!*out || RAND_bytes(*out, 12) != 1)
        return -1;
    size_t al = aad ? strlen(aad) : 0;
    if (gcm(1, key, *out, (const uint8_t *)aad, al, in, len, *out + 12, *out + 12 + len) != 0)
        return -1;
    return (long)(len + 28);
}

static long open_box(const uint8_t *key, const char *aad, const uint8_t *in, size_t len,
                     uint8_t **out)
{
    if (len < 28)
        return -1;
    size_t pl = len - 28;
    *out = malloc(pl ? pl : 1);
    if (!*out)
        return -1;
    size_t al = aad ? strlen(aad) : 0;
    uint8_t tag[16];
    memcpy(tag, in + len - 16, 16);
    if (gcm(0, key, in, (const uint8_t *)aad, al, in + 12, pl, *out, tag) != 0)
        return -1;
    return (long)pl;
}

typedef struct reply {
    int status;
    char msg[256];
    uint8_t *body;
    size_t len;
} reply;

static void fail_reply(reply *r, int status, const char *msg)
{
    r->status = status;
    snprintf(r->msg, sizeof r->msg, "%s", msg);
}

static void handle_v2(const char *method, const uint8_t *in, size_t len, reply *r)
{
    if (strcmp(method, "/v2.KeyManagementService/Status") == 0) {
        S.n_status++;
        V2__StatusResponse resp = V2__STATUS_RESPONSE__INIT;
        resp.version = "v2";
        resp.healthz = strcmp(S.fail, "unhealthy") == 0 ? "broken" : "ok";
        resp.key_id = S.current;
        r->len = v2__status_response__get_packed_size(&resp);
        r->body = malloc(r->len + 1);
        v2__status_response__pack(&resp, r->body);
        return;
    }
    if (strcmp(method, "/v2.KeyManagementService/Encrypt") == 0) {
        S.n_encrypt++;
        V2__EncryptRequest *req = v2__encrypt_request__unpack(NULL, len, in);
        fkey *k = find_key(S.current);
        if (!req || !k) {
            fail_reply(r, 2, "fake kms: bad request or unknown current key");
        } else {
            uint8_t *ct = NULL;
            long n = seal(k->kek, k->id, req->plaintext.data, req->plaintext.len, &ct);
            V2__EncryptResponse resp = V2__ENCRYPT_RESPONSE__INIT;
            V2__EncryptResponse__AnnotationsEntry ents[MAX_ANN], *pents[MAX_ANN];
            for (size_t i = 0; i < k->n_ann; i++) {
                V2__EncryptResponse__AnnotationsEntry e =
                    V2__ENCRYPT_RESPONSE__ANNOTATIONS_ENTRY__INIT;
                ents[i] = e;
                ents[i].key = k->ann_key[i];
                ents[i].value.data = k->ann_val[i];
                ents[i].value.len = k->ann_len[i];
                pents[i] = &ents[i];
            }
            resp.n_annotations = k->n_ann;
            resp.annotations = pents;
            resp.ciphertext.data = ct;
            resp.ciphertext.len = n > 0 ? (size_t)n : 0;
            resp.key_id = k->id;
            r->len = v2__encrypt_response__get_packed_size(&resp);
            r->body = malloc(r->len + 1);
            v2__encrypt_response__pack(&resp, r->body);
            free(ct);
        }
        v2__encrypt_request__free_unpacked(req, NULL);
        return;
    }
    if (strcmp(method, "/v2.KeyManagementService/Decrypt") == 0) {
        S.n_decrypt++;
        V2__DecryptRequest *req = v2__decrypt_request__unpack(NULL, len, in);
        fkey *k = req ? find_key(req->key_id) : NULL;
        char msg[256];
        if (!req) {
            fail_reply(r, 2, "fake kms: bad request");
        } else if (!k) {
            snprintf(msg, sizeof msg, "fake kms: unknown key id \"%.200s\"", req->key_id);
            fail_reply(r, 2, msg);
        } else {
            bool same = req->n_annotations == k->n_ann;
            for (size_t i = 0; same && i < req->n_annotations; i++) {
                bool found = false;
                for (size_t j = 0; j < k->n_ann && !found; j++)
                    found =
                        strcmp(req->annotations[i]->key, k->ann_key[j]) == 0 &&
                        req->annotations[i]->value.len == k->ann_len[j] &&
                        memcmp(req->annotations[i]->value.data, k->ann_val[j], k->ann_len[j]) == 0;
                same = found;
            }
            uint8_t *pt = NULL;
            long n = -1;
            if (!same)
                fail_reply(r, 2, "fake kms: annotations mismatch");
            else if ((n = open_box(k->kek, k->id, req->ciphertext.data, req->ciphertext.len, &pt)) <
                     0)
                fail_reply(r, 2, "fake kms: cipher: message authentication failed");
            else {
                V2__DecryptResponse resp = V2__DECRYPT_RESPONSE__INIT;
                resp.plaintext.data = pt;
                resp.plaintext.len = (size_t)n;
                r->len = v2__decrypt_response__get_packed_size(&resp);
                r->body = malloc(r->len + 1);
                v2__decrypt_response__pack(&resp, r->body);
            }
            if (pt)
                sodium_memzero(pt, n > 0 ? (size_t)n : 0);
            free(pt);
        }
        v2__decrypt_request__free_unpacked(req, NULL);
        return;
    }
    fail_reply(r, 12, "unknown method");
}

static void handle_v1(const char *method, const uint8_t *in, size_t len, reply *r)
{
    fkey *k = &S.keys[0];
    if (strcmp(method, "/v1beta1.KeyManagementService/Version") == 0) {
        S.n_version++;
        V1beta1__VersionResponse resp = V1BETA1__VERSION_RESPONSE__INIT;
        resp.version = "v1beta1";
        resp.runtime_name = "kms_fake_plugin";
        resp.runtime_version = "0.1";
        r->len = v1beta1__version_response__get_packed_size(&resp);
        r->body = malloc(r->len + 1);
        v1beta1__version_response__pack(&resp, r->body);
        return;
    }
    if (strcmp(method, "/v1beta1.KeyManagementService/Encrypt") == 0) {
        S.n_encrypt++;
        V1beta1__EncryptRequest *req = v1beta1__encrypt_request__unpack(NULL, len, in);
        if (!req || strcmp(req->version, "v1beta1") != 0) {
            fail_reply(r, 2, "fake kms: bad request or version");
        } else {
            uint8_t *ct = NULL;
            long n = seal(k->kek, NULL, req->plain.data, req->plain.len, &ct);
            V1beta1__EncryptResponse resp = V1BETA1__ENCRYPT_RESPONSE__INIT;
            resp.cipher.data = ct;
            resp.cipher.len = n > 0 ? (size_t)n : 0;
            r->len = v1beta1__encrypt_response__get_packed_size(&resp);
            r->body = malloc(r->len + 1);
            v1beta1__encrypt_response__pack(&resp, r->body);
            free(ct);
        }
        v1beta1__encrypt_request__free_unpacked(req, NULL);
        return;
    }
    if (strcmp(method, "/v1beta1.KeyManagementService/Decrypt") == 0) {
        S.n_decrypt++;
        V1beta1__DecryptRequest *req = v1beta1__decrypt_request__unpack(NULL, len, in);
        uint8_t *pt = NULL;
        long n = -1;
        if (!req || strcmp(req->version, "v1beta1") != 0) {
            fail_reply(r, 2, "fake kms: bad request or version");
        } else if ((n = open_box(k->kek, NULL, req->cipher.data, req->cipher.len, &pt)) < 0) {
            fail_reply(r, 2, "fake kms: cipher: message authentication failed");
        } else {
            V1beta1__DecryptResponse resp = V1BETA1__DECRYPT_RESPONSE__INIT;
            resp.plain.data = pt;
            resp.plain.len = (size_t)n;
            r->len = v1beta1__decrypt_response__get_packed_size(&resp);
            r->body = malloc(r->len + 1);
            v1beta1__decrypt_response__pack(&resp, r->body);
        }
        free(pt);
        v1beta1__decrypt_request__free_unpacked(req, NULL);
        return;
    }
    fail_reply(r, 12, "unknown method");
}

/* Waits for `tag` on cq; returns its success flag, or -1 on stop/shutdown. */
static int wait_tag(grpc_completion_queue *cq, void *tag)
{
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(
            cq, gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(100, GPR_TIMESPAN)),
            NULL);
        if (ev.type == GRPC_OP_COMPLETE && ev.tag == tag)
            return ev.success;
        if (ev.type == GRPC_QUEUE_SHUTDOWN || stop)
            return -1;
    }
}

static void serve_one(grpc_call *call, const char *method, grpc_completion_queue *cq)
{
    grpc_byte_buffer *req = NULL;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &req;
    if (grpc_call_start_batch(call, &op, 1, (void *)2, NULL) != GRPC_CALL_OK ||
        wait_tag(cq, (void *)2) != 1)
        return;
    uint8_t *in = NULL;
    size_t in_len = 0;
    if (req) {
        grpc_byte_buffer_reader rd;
        grpc_byte_buffer_reader_init(&rd, req);
        grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
        grpc_byte_buffer_reader_destroy(&rd);
        in_len = GRPC_SLICE_LENGTH(all);
        in = malloc(in_len + 1);
        memcpy(in, GRPC_SLICE_START_PTR(all), in_len);
        grpc_slice_unref(all);
        grpc_byte_buffer_destroy(req);
    }
    read_control();
    reply r = {0};
    if (strncmp(S.fail, "sleep:", 6) == 0) {
        long ms = atol(S.fail + 6);
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (strcmp(S.fail, "unavailable") == 0)
        fail_reply(&r, 14, "fake kms: unavailable (fail mode)");
    else if (strcmp(S.fail, "error") == 0)
        fail_reply(&r, 2, "fake kms: error (fail mode)");
    else if (S.version == 2)
        handle_v2(method, in, in_len, &r);
    else
        handle_v1(method, in, in_len, &r);
    free(in);
    save_counts();
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    grpc_byte_buffer *out = NULL;
    int cancelled = 0;
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (r.status == 0) {
        grpc_slice s = grpc_slice_from_copied_buffer((const char *)r.body, r.len);
        out = grpc_raw_byte_buffer_create(&s, 1);
        grpc_slice_unref(s);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = out;
    }
    grpc_slice details = grpc_slice_from_copied_string(r.msg);
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = (grpc_status_code)r.status;
    ops[n++].data.send_status_from_server.status_details = &details;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n++].data.recv_close_on_server.cancelled = &cancelled;
    if (grpc_call_start_batch(call, ops, n, (void *)3, NULL) == GRPC_CALL_OK)
        wait_tag(cq, (void *)3);
    grpc_slice_unref(details);
    if (out)
        grpc_byte_buffer_destroy(out);
    free(r.body);
}

static int usage(void)
{
    fprintf(stderr, "usage: kms_fake_plugin --listen unix:///@name (--v1 --kek-b64 K | --v2 "
                    "--key ID=K... --current ID [--annotation ID:fqdn=B64]...) [--counts FILE] "
                    "[--control FILE] [--fail MODE]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *listen = NULL;
    snprintf(S.fail, sizeof S.fail, "none");
    if (sodium_init() < 0)
        return 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--v1") == 0) {
            S.version = 1;
        } else if (strcmp(a, "--v2") == 0) {
            S.version = 2;
        } else if (!v) {
            return usage();
        } else if (strcmp(a, "--listen") == 0) {
            listen = v, i++;
        } else if (strcmp(a, "--counts") == 0) {
            S.counts_path = v, i++;
        } else if (strcmp(a, "--control") == 0) {
            S.control_path = v, i++;
        } else if (strcmp(a, "--fail") == 0) {
            snprintf(S.fail, sizeof S.fail, "%s", v), i++;
        } else if (strcmp(a, "--current") == 0) {
            snprintf(S.current, sizeof S.current, "%s", v), i++;
        } else if (strcmp(a, "--kek-b64") == 0 || strcmp(a, "--key") == 0) {
            i++;
            if (S.n_keys == MAX_KEYS)
                return usage();
            fkey *k = &S.keys[S.n_keys++];
            const char *b = v;
            if (strcmp(a, "--key") == 0) {
                const char *eq = strchr(v, '='); /* key ids hold no '=' */
                if (!eq)
                    return usage();
                k->id = strndup(v, (size_t)(eq - v));
                b = eq + 1;
            } else {
                k->id = strdup("v1");
            }
            size_t kl = 0;
            if (b64dec(b, k->kek, sizeof k->kek, &kl) != 0 || kl != 32) {
                fprintf(stderr, "kms_fake_plugin: KEK must be 32 bytes of base64\n");
                return 2;
            }
        } else if (strcmp(a, "--annotation") == 0) {
            i++;
            const char *colon = strrchr(v, ':');
            const char *eq = colon ? strchr(colon, '=') : NULL;
            if (!colon || !eq)
                return usage();
            char *id = strndup(v, (size_t)(colon - v));
            fkey *k = find_key(id);
            free(id);
            if (!k || k->n_ann == MAX_ANN)
                return usage();
            k->ann_key[k->n_ann] = strndup(colon + 1, (size_t)(eq - colon - 1));
            k->ann_val[k->n_ann] = malloc(strlen(eq + 1) + 4);
            if (b64dec(eq + 1, k->ann_val[k->n_ann], strlen(eq + 1) + 4, &k->ann_len[k->n_ann]))
                return usage();
            k->n_ann++;
        } else {
            return usage();
        }
    }
    char target[512];
    if (!listen || !S.version || !S.n_keys || kms_endpoint_target(listen, target, sizeof target))
        return usage();
    if (S.version == 2 && !S.current[0])
        snprintf(S.current, sizeof S.current, "%s", S.keys[0].id);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    grpc_init();
    grpc_server *server = grpc_server_create(NULL, NULL);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(server, cq, NULL);
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(server, target, creds);
    grpc_server_credentials_release(creds);
    if (!port) {
        fprintf(stderr, "kms_fake_plugin: cannot listen on %s\n", listen);
        return 1;
    }
    grpc_server_start(server);
    save_counts();
    fprintf(stderr, "kms_fake_plugin: v%d listening on %s (%s)\n", S.version, listen, target);
    while (!stop) {
        grpc_call *call = NULL;
        grpc_call_details details;
        grpc_metadata_array md;
        grpc_call_details_init(&details);
        grpc_metadata_array_init(&md);
        if (grpc_server_request_call(server, &call, &details, &md, cq, cq, (void *)1) !=
            GRPC_CALL_OK)
            break;
        int ok = wait_tag(cq, (void *)1);
        if (ok == 1 && call) {
            char method[256];
            size_t ml = GRPC_SLICE_LENGTH(details.method);
            if (ml >= sizeof method)
                ml = sizeof method - 1;
            memcpy(method, GRPC_SLICE_START_PTR(details.method), ml);
            method[ml] = '\0';
            serve_one(call, method, cq);
        }
        if (call)
            grpc_call_unref(call);
        grpc_call_details_destroy(&details);
        grpc_metadata_array_destroy(&md);
        if (ok < 0)
            break;
    }
    fprintf(stderr, "kms_fake_plugin: ");
    write_counts(stderr);
    grpc_server_shutdown_and_notify(server, cq, (void *)9);
    grpc_server_cancel_all_calls(server);
    for (int i = 0; i < 50; i++) {
        grpc_event ev = grpc_completion_queue_next(
            cq, gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(100, GPR_TIMESPAN)),
            NULL);
        if (ev.type == GRPC_OP_COMPLETE && ev.tag == (void *)9)
            break;
    }
    grpc_server_destroy(server);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    for (size_t i = 0; i < S.n_keys; i++) {
        free(S.keys[i].id);
        for (size_t j = 0; j < S.keys[i].n_ann; j++)
            free(S.keys[i].ann_key[j]), free(S.keys[i].ann_val[j]);
    }
    grpc_shutdown();
    return 0;
}
