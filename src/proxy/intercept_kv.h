/* intercept_kv.h - transformers for etcdserverpb.KV messages that carry user values.
 *
 * Requests: PutRequest.value and, in TxnRequest, every Compare.value (target VALUE) and every
 * PutRequest in success/failure at any nesting depth. Responses: RangeResponse.kvs,
 * PutResponse.prev_kv, DeleteRangeResponse.prev_kvs and TxnResponse.responses at any depth.
 * Each value goes through intercept_value() (intercept_values.h). Range and DeleteRange
 * requests and Compact carry no values and are not transformed (NULL in the method table).
 * Txn nesting deeper than INTERCEPT_MAX_TXN_DEPTH is refused before decoding.
 * All functions are transform_fn (proxy/transform.h); thread rules as there.
 */
#ifndef ETCDSEAL_PROXY_INTERCEPT_KV_H
#define ETCDSEAL_PROXY_INTERCEPT_KV_H

#include "proxy/transform.h"

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

#endif
