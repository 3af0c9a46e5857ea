/* it_kms_client.c - a tiny KMS v2 client on gRPC core for the kms-plugin integration tests.
 *
 * usage: it_kms_client --addr unix:///path|unix:///@name [--timeout-ms N] COMMAND
 *   status                      -> "version=V healthz=H key_id=K"
 *   encrypt PLAINTEXT_HEX       -> "ciphertext=HEX key_id=K annotations=N"
 *   decrypt KEY_ID CT_HEX       -> "plaintext=HEX"
 *   raw METHOD                  -> sends an empty message to METHOD (e.g. /v2.X/Y), prints code
 * Failure of the call: prints "code=N details=TEXT" on stdout and exits 3. Usage errors exit 2.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <sodium.h>

#include "kms/v2/api.pb-c.h"
#include "kmsplugin/server.h"

struct reply {
    grpc_status_code code;
    char *details;
    uint8_t *msg;
    size_t msg_len;
};

static int call(grpc_channel *ch, const char *method, const uint8_t *req, size_t req_len,
                int timeout_ms, struct reply *out)
{
    memset(out, 0, sizeof *out);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    grpc_slice m = grpc_slice_from_copied_string(method);
    grpc_call *c =
        grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, m, NULL, deadline, NULL);
    grpc_slice_unref(m);
    grpc_slice body = grpc_slice_from_copied_buffer((const char *)req, req_len);
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&body, 1);
    grpc_slice_unref(body);
    grpc_byte_buffer *recv = NULL;
    grpc_metadata_array init_md, trail_md;
    grpc_metadata_array_init(&init_md);
    grpc_metadata_array_init(&trail_md);
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &init_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trail_md;
    ops[5].data.recv_status_on_client.status = &out->code;
    ops[5].data.recv_status_on_client.status_details = &details;
    int tag = 1, rc = -1;
    if (grpc_call_start_batch(c, ops, 6, &tag, NULL) == GRPC_CALL_OK) {
        grpc_event ev =
            grpc_completion_queue_pluck(cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_OP_COMPLETE)
            rc = 0;
    }
    if (rc == 0) {
        out->details = grpc_slice_to_c_string(details);
        if (recv) {
            grpc_byte_buffer_reader r;
            grpc_byte_buffer_reader_init(&r, recv);
            grpc_slice all = grpc_byte_buffer_reader_readall(&r);
            grpc_byte_buffer_reader_destroy(&r);
            out->msg_len = GRPC_SLICE_LENGTH(all);
            out->msg = malloc(out->msg_len ? out->msg_len : 1);
            memcpy(out->msg, GRPC_SLICE_START_PTR(all), out->msg_len);
            grpc_slice_unref(all);
        }
    }
    if (recv)
        grpc_byte_buffer_destroy(recv);
    grpc_byte_buffer_destroy(send);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&init_md);
    grpc_metadata_array_destroy(&trail_md);
    grpc_call_unref(c);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    return rc;
}

static void reply_free(struct reply *r)
{
    gpr_free(r->details);
    free(r->msg);
}

static uint8_t *unhex(const char *hex, size_t *n)
{
    size_t hl = strlen(hex);
    uint8_t *b = malloc(hl / 2 + 1);
    if (sodium_hex2bin(b, hl / 2 + 1, hex, hl, NULL, n, NULL) != 0) {
        free(b);
        return NULL;
    }
    return b;
}

static void print_hex(const char *name, const uint8_t *p, size_t n)
{
    printf("%s=", name);
    for (size_t i = 0; i < n; i++)
        printf("%02x", p[i]);
}

int main(int argc, char **argv)
{
    const char *addr = NULL;
    int timeout_ms = 5000, i = 1;
    for (; i + 1 < argc && argv[i][0] == '-'; i += 2) {
        if (strcmp(argv[i], "--addr") == 0)
            addr = argv[i + 1];
        else if (strcmp(argv[i], "--timeout-ms") == 0)
            timeout_ms = atoi(argv[i + 1]);
        else
            break;
    }
    char target[600];
    es_error err = {0, ""};
    if (!addr || i >= argc || kmsplugin_listen_to_grpc(target, sizeof target, addr, &err) != 0) {
        fprintf(stderr,
                "usage: it_kms_client --addr unix:///path [--timeout-ms N] "
                "status|encrypt HEX|decrypt KEY_ID HEX|raw METHOD %s\n",
                err.msg);
        return 2;
    }
    const char *cmd = argv[i];
    grpc_init();
    grpc_channel_credentials *cr = grpc_insecure_credentials_create();
    grpc_arg authority = {GRPC_ARG_STRING, GRPC_ARG_DEFAULT_AUTHORITY, {.string = "localhost"}};
    grpc_channel_args args = {1, &authority};
    grpc_channel *ch = grpc_channel_create(target, cr, &args);
    grpc_channel_credentials_release(cr);
    int rc = 2;
    struct reply r = {0};
    uint8_t *req = NULL;
    size_t req_len = 0;
    const char *method = NULL;
    uint8_t *b = NULL;
    if (strcmp(cmd, "status") == 0 && i + 1 == argc) {
        V2__StatusRequest m = V2__STATUS_REQUEST__INIT;
        req_len = v2__status_request__get_packed_size(&m);
        req = malloc(req_len + 1);
        v2__status_request__pack(&m, req);
        method = "/v2.KeyManagementService/Status";
    } else if (strcmp(cmd, "encrypt") == 0 && i + 2 == argc) {
        V2__EncryptRequest m = V2__ENCRYPT_REQUEST__INIT;
        size_t n;
        if ((b = unhex(argv[i + 1], &n)) != NULL) {
            m.plaintext.data = b;
            m.plaintext.len = n;
            m.uid = "it-kms-client";
            req_len = v2__encrypt_request__get_packed_size(&m);
            req = malloc(req_len + 1);
            v2__encrypt_request__pack(&m, req);
            method = "/v2.KeyManagementService/Encrypt";
        }
    } else if (strcmp(cmd, "decrypt") == 0 && i + 3 == argc) {
        V2__DecryptRequest m = V2__DECRYPT_REQUEST__INIT;
        size_t n;
        if ((b = unhex(argv[i + 2], &n)) != NULL) {
            m.ciphertext.data = b;
            m.ciphertext.len = n;
            m.key_id = argv[i + 1];
            m.uid = "it-kms-client";
            req_len = v2__decrypt_request__get_packed_size(&m);
            req = malloc(req_len + 1);
            v2__decrypt_request__pack(&m, req);
            method = "/v2.KeyManagementService/Decrypt";
        }
    } else if (strcmp(cmd, "raw") == 0 && i + 2 == argc) {
        method = argv[i + 1];
        req = malloc(1);
    }
    if (!method) {
        fprintf(stderr, "it_kms_client: bad command or hex\n");
    } else if (call(ch, method, req, req_len, timeout_ms, &r) != 0) {
        fprintf(stderr, "it_kms_client: call failed to complete\n");
        rc = 3;
    } else if (r.code != GRPC_STATUS_OK) {
        printf("code=%d details=%s\n", (int)r.code, r.details ? r.details : "");
        rc = 3;
    } else if (strcmp(cmd, "status") == 0) {
        V2__StatusResponse *m = v2__status_response__unpack(NULL, r.msg_len, r.msg);
        if (m) {
            printf("version=%s healthz=%s key_id=%s\n", m->version, m->healthz, m->key_id);
            v2__status_response__free_unpacked(m, NULL);
            rc = 0;
        }
    } else if (strcmp(cmd, "encrypt") == 0) {
        V2__EncryptResponse *m = v2__encrypt_response__unpack(NULL, r.msg_len, r.msg);
        if (m) {
            print_hex("ciphertext", m->ciphertext.data, m->ciphertext.len);
            printf(" key_id=%s annotations=%zu\n", m->key_id, m->n_annotations);
            v2__encrypt_response__free_unpacked(m, NULL);
            rc = 0;
        }
    } else if (strcmp(cmd, "decrypt") == 0) {
        V2__DecryptResponse *m = v2__decrypt_response__unpack(NULL, r.msg_len, r.msg);
        if (m) {
            print_hex("plaintext", m->plaintext.data, m->plaintext.len);
            printf("\n");
            v2__decrypt_response__free_unpacked(m, NULL);
            rc = 0;
        }
    } else {
        printf("code=0\n");
        rc = 0;
    }
    if (method && r.code == GRPC_STATUS_OK && rc == 2)
        fprintf(stderr, "it_kms_client: malformed response\n");
    reply_free(&r);
    free(req);
    free(b);
    grpc_channel_destroy(ch);
    grpc_shutdown();
    return rc;
}
