/* intercept_cluster.h - transformer for etcdserverpb.Cluster MemberList responses.
 *
 * With advertise URLs configured (ctx->n_advertise_urls > 0) every member's clientURLs are
 * replaced by those URLs, so clients that sync their endpoint list from MemberList keep talking
 * to the proxy. Without them the message is forwarded byte for byte (not decoded): the method
 * table keeps this transformer set either way, because the table is static and the URLs are
 * per-configuration; the cost is one copy of a rare, small message.
 * A transform_fn (proxy/transform.h); thread rules as there.
 */
#ifndef ETCDSEAL_PROXY_INTERCEPT_CLUSTER_H
#define ETCDSEAL_PROXY_INTERCEPT_CLUSTER_H

#include "proxy/transform.h"

int intercept_cluster_member_list_response(transform_ctx *ctx, const uint8_t *msg, size_t len,
                                           buf_t *out, es_error *err);

#endif
