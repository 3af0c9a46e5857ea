/* server.h - the bundled KMS v2 plugin server: gRPC service "v2.KeyManagementService"
 * (Status/Encrypt/Decrypt, wire-format.md §4.1) on a unix socket, backed by a kmsplugin_kek.
 *
 * Single-threaded: the caller drives it with kmsplugin_server_poll from one thread, so the kek
 * needs no locks; calls are answered in arrival order. Status answers {version "v2", healthz
 * "ok" or the backend's health error, key_id}; Encrypt returns the kek's ciphertext and key_id;
 * Decrypt unwraps with the key named by key_id; any other method gets UNIMPLEMENTED. One log
 * line per call (method, key_id, gRPC status), never plaintext or keys. The kek is borrowed: it
 * must outlive the server. Listen addresses are kube-style: unix:///path or unix:///@abstract.
 */
#ifndef ETCDSEAL_KMSPLUGIN_SERVER_H
#define ETCDSEAL_KMSPLUGIN_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "kmsplugin/kek.h"

typedef struct kmsplugin_server kmsplugin_server;

typedef struct kmsplugin_counts {
    uint64_t status, encrypt, decrypt; /* calls of each method, whatever their outcome */
    uint64_t failed;                   /* calls answered with a non-OK status */
    uint64_t unimplemented;            /* calls of other methods */
} kmsplugin_counts;

/* "unix:///path" -> "unix:/path", "unix:///@name" -> "unix-abstract:name". 0 or -1 + err. */
int kmsplugin_listen_to_grpc(char *out, size_t cap, const char *listen, es_error *err);

/* Binds listen (removing a stale socket file at that path) and starts serving. */
int kmsplugin_server_start(kmsplugin_server **out, const char *listen, kmsplugin_kek *kek,
                           es_error *err);
/* Handles whatever events arrive within timeout_ms (returns earlier after one event). */
void kmsplugin_server_poll(kmsplugin_server *s, int timeout_ms);
void kmsplugin_server_counts(const kmsplugin_server *s, kmsplugin_counts *out);
/* Stops accepting, lets calls in flight finish (bounded), fills final (may be NULL) with the
 * counts after that, frees. Accepts s == NULL. */
void kmsplugin_server_stop(kmsplugin_server *s, kmsplugin_counts *final);

#endif
