/* kmsplugin_server_test.c - the KMS v2 plugin server (src/kmsplugin/server.c) in process: a
 * thread polls the server on an abstract unix socket, the test calls it with gRPC core. A fake
 * KEK wraps the file backend so the health answer can be switched to failing. Checks Status
 * (healthy and unhealthy), Encrypt/Decrypt through the wire, malformed requests, UNIMPLEMENTED,
 * the counters, and start-up refusals. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <sodium.h>

#include "kms/v2/api.pb-c.h"
#include "kmsplugin/kek.h"
#include "kmsplugin/server.h"
#include "testlib.h"

static char dir[64];

/* ------------------------------------------------------------ fake KEK: file KEK + health switch
 */
struct fake_kek {
    kmsplugin_kek base;
    kmsplugin_kek *inner;
    atomic_int unhealthy;
};

static int fake_encrypt(kmsplugin_kek *k, buf_t *out, const uint8_t *pt, size_t n, es_error *e)
{
    return kmsplugin_kek_encrypt(((struct fake_kek *)k)->inner, out, pt, n, e);
}
static int fake_decrypt(kmsplugin_kek *k, buf_t *out, const char *id, const uint8_t *ct, size_t n,
                        es_error *e)
{
    return kmsplugin_kek_decrypt(((struct fake_kek *)k)->inner, out, id, ct, n, e);
}
static int fake_health(kmsplugin_kek *k, es_error *e)
{
    if (atomic_load(&((struct fake_kek *)k)->unhealthy))
        return es_error_set(e, 14, "pkcs11: C_GetSessionInfo: CKR_DEVICE_REMOVED (0x32)");
    return 0;
}
static void fake_destroy(kmsplugin_kek *k)
{
    kmsplugin_kek_free(((struct fake_kek *)k)->inner);
}
static const struct kmsplugin_kek_ops fake_ops = {fake_encrypt, fake_decrypt, fake_health,
                                                  fake_destroy};

/* ------------------------------------------------------------ server thread */
static kmsplugin_server *srv;
static atomic_int stop_thread;

static void *serve(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop_thread))
        kmsplugin_server_poll(srv, 20);
    return NULL;
}

/* ------------------------------------------------------------ client */
static grpc_channel *ch;

/* Unary call; returns the status code, fills *resp (malloc'ed) with the response bytes. */
static int call(const char *method, const uint8_t *req, size_t req_len, uint8_t **resp,
                size_t *resp_len)
{
    *resp = NULL;
    *resp_len = 0;
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_slice m = grpc_slice_from_copied_string(method);
    grpc_call *c = grpc_channel_create_call(
        ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, m, NULL,
        gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_seconds(5, GPR_TIMESPAN)), NULL);
    grpc_slice_unref(m);
    grpc_slice body = grpc_slice_from_copied_buffer((const char *)req, req_len);
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&body, 1), *recv = NULL;
    grpc_slice_unref(body);
    grpc_metadata_array im, tm;
    grpc_metadata_array_init(&im);
    grpc_metadata_array_init(&tm);
    grpc_status_code code = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &im;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &tm;
    ops[5].data.recv_status_on_client.status = &code;
    ops[5].data.recv_status_on_client.status_details = &details;
    int tag = 1;
    if (grpc_call_start_batch(c, ops, 6, &tag, NULL) == GRPC_CALL_OK)
        grpc_completion_queue_pluck(cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (recv) {
        grpc_byte_buffer_reader r;
        grpc_byte_buffer_reader_init(&r, recv);
        grpc_slice all = grpc_byte_buffer_reader_readall(&r);
        grpc_byte_buffer_reader_destroy(&r);
        *resp_len = GRPC_SLICE_LENGTH(all);
        *resp = malloc(*resp_len + 1);
        memcpy(*resp, GRPC_SLICE_START_PTR(all), *resp_len);
        grpc_slice_unref(all);
        grpc_byte_buffer_destroy(recv);
    }
    grpc_byte_buffer_destroy(send);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&im);
    grpc_metadata_array_destroy(&tm);
    grpc_call_unref(c);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    return (int)code;
}

static V2__StatusResponse *status(int *code)
{
    uint8_t *r;
    size_t n;
    *code = call("/v2.KeyManagementService/Status", NULL, 0, &r, &n);
    V2__StatusResponse *s = r ? v2__status_response__unpack(NULL, n, r) : NULL;
    free(r);
    return s;
}

static struct fake_kek fake;

static void test_status(void)
{
    int code;
    V2__StatusResponse *s = status(&code);
    CHECK_EQ_INT(code, 0);
    CHECK(s != NULL);
    if (s) {
        CHECK_EQ_STR(s->version, "v2");
        CHECK_EQ_STR(s->healthz, "ok");
        CHECK_EQ_STR(s->key_id, kmsplugin_kek_key_id(&fake.base));
        v2__status_response__free_unpacked(s, NULL);
    }
    atomic_store(&fake.unhealthy, 1);
    s = status(&code);
    CHECK_EQ_INT(code, 0); /* unhealthy is an answer, not a failed call */
    if (s) {
        CHECK(strcmp(s->healthz, "ok") != 0);
        CHECK(strstr(s->healthz, "CKR_DEVICE_REMOVED") != NULL);
        CHECK_EQ_STR(s->key_id, kmsplugin_kek_key_id(&fake.base));
        v2__status_response__free_unpacked(s, NULL);
    }
    atomic_store(&fake.unhealthy, 0);
}

static void test_encrypt_decrypt(void)
{
    uint8_t seed[32], *r = NULL;
    size_t n;
    randombytes_buf(seed, sizeof seed);
    V2__EncryptRequest er = V2__ENCRYPT_REQUEST__INIT;
    er.plaintext.data = seed;
    er.plaintext.len = sizeof seed;
    er.uid = "0b9d4c2e-uid";
    uint8_t req[256];
    size_t len = v2__encrypt_request__pack(&er, req);
    CHECK_EQ_INT(call("/v2.KeyManagementService/Encrypt", req, len, &r, &n), 0);
    V2__EncryptResponse *e = r ? v2__encrypt_response__unpack(NULL, n, r) : NULL;
    free(r);
    CHECK(e != NULL);
    if (!e)
        return;
    CHECK_EQ_STR(e->key_id, kmsplugin_kek_key_id(&fake.base));
    CHECK_EQ_INT(e->ciphertext.len, sizeof seed + KMSPLUGIN_CT_OVERHEAD);
    CHECK_EQ_INT(e->n_annotations, 0);
    V2__DecryptRequest dr = V2__DECRYPT_REQUEST__INIT;
    dr.ciphertext = e->ciphertext;
    dr.key_id = e->key_id;
    dr.uid = "uid-2";
    len = v2__decrypt_request__pack(&dr, req);
    CHECK_EQ_INT(call("/v2.KeyManagementService/Decrypt", req, len, &r, &n), 0);
    V2__DecryptResponse *d = r ? v2__decrypt_response__unpack(NULL, n, r) : NULL;
    free(r);
    CHECK(d != NULL);
    if (d) {
        CHECK_EQ_MEM(d->plaintext.data, d->plaintext.len, seed, sizeof seed);
        v2__decrypt_response__free_unpacked(d, NULL);
    }
    /* unknown key id / tampered: error status, no message */
    dr.key_id = "file:sha256:00";
    len = v2__decrypt_request__pack(&dr, req);
    CHECK_EQ_INT(call("/v2.KeyManagementService/Decrypt", req, len, &r, &n), 5);
    CHECK(r == NULL);
    free(r);
    dr.key_id = e->key_id;
    e->ciphertext.data[20] ^= 1;
    len = v2__decrypt_request__pack(&dr, req);
    CHECK_EQ_INT(call("/v2.KeyManagementService/Decrypt", req, len, &r, &n), 3);
    free(r);
    v2__encrypt_response__free_unpacked(e, NULL);
}

static void test_malformed_and_unknown(void)
{
    uint8_t junk[] = {0xff, 0xff, 0xff, 0x07}, *r = NULL;
    size_t n;
    CHECK_EQ_INT(call("/v2.KeyManagementService/Encrypt", junk, sizeof junk, &r, &n), 3);
    free(r);
    CHECK_EQ_INT(call("/v2.KeyManagementService/Decrypt", junk, sizeof junk, &r, &n), 3);
    free(r);
    CHECK_EQ_INT(call("/v2.KeyManagementService/Encrypt", NULL, 0, &r, &n), 3); /* empty */
    free(r);
    CHECK_EQ_INT(call("/v2.KeyManagementService/Nope", NULL, 0, &r, &n), 12);
    free(r);
    CHECK_EQ_INT(call("/v1beta1.KeyManagementService/Encrypt", NULL, 0, &r, &n), 12);
    free(r);
}

static void test_start_refusals(void)
{
    es_error err = {0, ""};
    kmsplugin_server *s = NULL;
    char path[128], listen[160];
    snprintf(path, sizeof path, "%s/regular", dir);
    FILE *f = fopen(path, "w");
    if (f)
        fclose(f);
    snprintf(listen, sizeof listen, "unix://%s", path);
    CHECK(kmsplugin_server_start(&s, listen, &fake.base, &err) != 0);
    CHECK(strstr(err.msg, "not a socket") != NULL);
    CHECK(access(path, F_OK) == 0); /* not removed */
    snprintf(listen, sizeof listen, "unix://%s/no/such/dir/s.sock", dir);
    CHECK(kmsplugin_server_start(&s, listen, &fake.base, &err) != 0);
    CHECK(strstr(err.msg, "cannot bind") != NULL);
    CHECK(kmsplugin_server_start(&s, "tcp://127.0.0.1:0", &fake.base, &err) != 0);
    CHECK(s == NULL);
}

int main(int argc, char **argv)
{
    (void)argc;
    TEST_BEGIN(argv[0]);
    if (secret_init() != 0)
        return 1;
    snprintf(dir, sizeof dir, "/tmp/kmsplugin-srv-XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    char kp[128];
    snprintf(kp, sizeof kp, "%s/key", dir);
    uint8_t key[32];
    randombytes_buf(key, sizeof key);
    FILE *f = fopen(kp, "w");
    fwrite(key, 1, sizeof key, f);
    fclose(f);
    chmod(kp, 0600);
    sodium_memzero(key, sizeof key);
    es_error err = {0, ""};
    fake.base.ops = &fake_ops;
    fake.base.backend = "fake";
    if (kmsplugin_kek_file_new(&fake.inner, kp, "fake-key-1", NULL, 0, &err) != 0) {
        printf("FAIL kmsplugin_server_test setup: %s\n", err.msg);
        return 1;
    }
    snprintf(fake.base.key_id, sizeof fake.base.key_id, "%s", kmsplugin_kek_key_id(fake.inner));
    char listen[96], target[128];
    snprintf(listen, sizeof listen, "unix:///@etcdseal-ut-kms-%d", (int)getpid());
    if (kmsplugin_server_start(&srv, listen, &fake.base, &err) != 0) {
        printf("FAIL kmsplugin_server_test start: %s\n", err.msg);
        return 1;
    }
    pthread_t th;
    pthread_create(&th, NULL, serve, NULL);
    kmsplugin_listen_to_grpc(target, sizeof target, listen, &err);
    grpc_init();
    grpc_channel_credentials *cr = grpc_insecure_credentials_create();
    ch = grpc_channel_create(target, cr, NULL);
    grpc_channel_credentials_release(cr);

    RUN(test_status);
    RUN(test_encrypt_decrypt);
    RUN(test_malformed_and_unknown);

    grpc_channel_destroy(ch);
    grpc_shutdown();
    atomic_store(&stop_thread, 1);
    pthread_join(th, NULL);
    kmsplugin_counts c;
    kmsplugin_server_stop(srv, &c);
    printf("  counts: status=%llu encrypt=%llu decrypt=%llu failed=%llu unimplemented=%llu\n",
           (unsigned long long)c.status, (unsigned long long)c.encrypt,
           (unsigned long long)c.decrypt, (unsigned long long)c.failed,
           (unsigned long long)c.unimplemented);
    testlib_failed_current = 0;
    CHECK_EQ_INT(c.status, 2);
    CHECK_EQ_INT(c.encrypt, 3);
    CHECK_EQ_INT(c.decrypt, 4);
    CHECK_EQ_INT(c.failed, 7);
    CHECK_EQ_INT(c.unimplemented, 2);
    printf("%s %s test_counts\n", testlib_failed_current ? "FAIL" : "PASS", testlib_prog);
    if (testlib_failed_current)
        testlib_failed_total++;
    RUN(test_start_refusals);
    kmsplugin_kek_free(&fake.base);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", dir);
    return TEST_EXIT();
}
