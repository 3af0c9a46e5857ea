/* txn_compare.h - Txn compares on VALUE for encrypted keys, emulated by the proxy.
 *
 * etcd cannot compare ciphertext. When a TxnRequest has a Compare with target VALUE on a key a
 * rule protects (no range_end), the Txn request transformer hands the whole request here. The
 * proxy then reads each such key (Range, latest revision), decrypts, evaluates the VALUE compares
 * itself, and sends a Txn guarded by each key's mod_revision (create_revision == 0 for an absent
 * key) that carries the original non-VALUE compares and branches nested one level down; when a
 * guard fails (a concurrent write) it reads again, at most TXN_COMPARE_MAX_TRIES times, then
 * answers ABORTED. The client receives exactly the TxnResponse etcd would have produced
 * atomically (succeeded, responses, header of the committed Txn), values decrypted.
 * Runs on the worker thread, asynchronously (returns TRANSFORM_PENDING).
 */
#ifndef ETCDSEAL_PROXY_TXN_COMPARE_H
#define ETCDSEAL_PROXY_TXN_COMPARE_H

#include <stddef.h>
#include <stdint.h>

#include "proxy/transform.h"

#define TXN_COMPARE_MAX_TRIES 5

/* `msg` is the client's encoded TxnRequest (values of its Puts still plaintext). Returns
 * TRANSFORM_PENDING (the call completes later), or -1 with err set (code = gRPC status). */
int txn_compare_start(transform_ctx *ctx, const uint8_t *msg, size_t len, es_error *err);

#endif
