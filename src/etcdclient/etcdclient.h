/* etcdclient.h - a small blocking etcd v3 client for commands (verify, rewrap): unary KV Range,
 * Put and Txn over gRPC/HTTP/2 (libnghttp2) on a plain socket, with TLS (OpenSSL) when asked.
 *
 * One connection at a time to one of the configured endpoints; a call that cannot be sent
 * (connect failure, GOAWAY before it was processed, REFUSED_STREAM) moves to the next endpoint
 * and is retried; Range (read-only) is also retried after any transport failure. Every call has
 * a deadline (sent as grpc-timeout too). Responses of any size up to max_recv_bytes are
 * reassembled; flow control windows are managed by nghttp2 as data is consumed.
 * Errors: -1 with err->code = the gRPC status (etcd's answer, e.g. 9 FAILED_PRECONDITION) or
 * 14 UNAVAILABLE / 4 DEADLINE_EXCEEDED for transport problems; err->msg names the method, the
 * endpoint and etcd's grpc-message. Responses are protobuf-c messages owned by the caller
 * (free with the matching __free_unpacked(resp, NULL)). Not thread-safe: one owner.
 */
#ifndef ETCDSEAL_ETCDCLIENT_ETCDCLIENT_H
#define ETCDSEAL_ETCDCLIENT_ETCDCLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "base/error.h"
#include "etcdserverpb/rpc.pb-c.h"

#define ETCDC_DEFAULT_DIAL_TIMEOUT_MS 5000
#define ETCDC_DEFAULT_REQUEST_TIMEOUT_MS 30000
#define ETCDC_DEFAULT_MAX_RECV_BYTES (1024u << 20)
#define ETCDC_MAX_ENDPOINTS 32

typedef struct etcdc_options {
    const char *endpoints; /* comma list: host:port, http://host:port, https://host:port */
    const char *cacert;    /* CA bundle; NULL = system roots (when TLS is used) */
    const char *cert;      /* client certificate (mTLS) with key */
    const char *key;
    bool insecure_skip_tls_verify;
    int dial_timeout_ms;    /* 0 = default */
    int request_timeout_ms; /* 0 = default */
    size_t max_recv_bytes;  /* 0 = default */
} etcdc_options;

typedef struct etcdc etcdc;

/* Checks the options, loads TLS files and connects to the first reachable endpoint. */
int etcdc_open(const etcdc_options *o, etcdc **out, es_error *err);
void etcdc_close(etcdc *c); /* NULL-safe */
/* The endpoint currently connected to (or last tried), as configured. */
const char *etcdc_endpoint(const etcdc *c);

int etcdc_range(etcdc *c, const Etcdserverpb__RangeRequest *req, Etcdserverpb__RangeResponse **resp,
                es_error *err);
int etcdc_put(etcdc *c, const Etcdserverpb__PutRequest *req, Etcdserverpb__PutResponse **resp,
              es_error *err);
int etcdc_txn(etcdc *c, const Etcdserverpb__TxnRequest *req, Etcdserverpb__TxnResponse **resp,
              es_error *err);

/* gRPC status name ("FAILED_PRECONDITION"), "UNKNOWN" for codes out of range. */
const char *etcdc_status_name(int code);

#endif
