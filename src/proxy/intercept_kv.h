/* intercept_kv.h - transformers for etcdserverpb.KV messages that carry user values.
 *
 * Requests: PutRequest.value and every Put in Txn success/failure at any depth (encrypted by the
 * value hook, intercept_values.h). Txn VALUE compares on protected keys at any nesting level
 * without range_end -> the whole call goes to txn_compare_start (TRANSFORM_PENDING); with
 * range_end -> FAILED_PRECONDITION; on other keys they pass unchanged. Range requests pass
 * unchanged but plan the proxy-side sort by VALUE (intercept_range_sort.h); a keys_only Range
 * sorted by VALUE over protected keys goes asynchronous (range_sort_fetch_start).
 * Responses: RangeResponse.kvs, PutResponse.prev_kv, DeleteRangeResponse.prev_kvs and
 * TxnResponse.responses at any depth (decrypted). DeleteRange requests and Compact carry no
 * values (NULL in the method table). Txn nesting deeper than INTERCEPT_MAX_TXN_DEPTH is refused
 * before decoding. All functions are transform_fn (proxy/transform.h); thread rules as there.
 */
#ifndef ETCDSEAL_PROXY_INTERCEPT_KV_H
#define ETCDSEAL_PROXY_INTERCEPT_KV_H

#include "proxy/transform.h"

int intercept_kv_range_request(transform_ctx *ctx, const uint8_t *msg, size_t len, buf_t *out,
                               es_error *err);
int intercept_kv_range_response(transform_ctx *ctx, const uint8_t *msg, size_t len, buf_t *out,
                                es_error *err);
int intercept_kv_put_request(transform_ctx *ctx, const uint8_t *msg, size_t len, buf_t *out,
                             es_error *err);
int intercept_kv_put_response(transform_ctx *ctx, const uint8_t *msg, size_t len, buf_t *out,
                              es_error *err);
int intercept_kv_delete_range_response(transform_ctx *ctx, const uint8_t *msg, size_t len,
                                       buf_t *out, es_error *err);
int intercept_kv_txn_request(transform_ctx *ctx, const uint8_t *msg, size_t len, buf_t *out,
                             es_error *err);
int intercept_kv_txn_response(transform_ctx *ctx, const uint8_t *msg, size_t len, buf_t *out,
                              es_error *err);

/* Nesting depth of a Txn request/response read straight from the wire (protobuf-c's decoder
 * recurses per level, so deep nesting is refused before decoding): the deepest level, or -1
 * when malformed or deeper than INTERCEPT_MAX_TXN_DEPTH. */
int intercept_txn_depth(const uint8_t *msg, size_t len);

#endif
