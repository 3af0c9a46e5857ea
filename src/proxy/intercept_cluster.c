/* intercept_cluster.c - rewrites MemberListResponse client URLs to the proxy's own. */
#include "proxy/intercept_cluster.h"
#include "proxy/grpc_wire.h"

#include "etcdserverpb/rpc.pb-c.h"
#include "proxy/intercept_values.h"


static int walk_member_list(transform_ctx *ctx, ProtobufCMessage *m, unsigned *changed,
                            es_error *err)
{
    (void)err;
    Etcdserverpb__MemberListResponse *r = (Etcdserverpb__MemberListResponse *)m;
    for (size_t i = 0; i < r->n_members; i++) {
        /* Points at the caller's strings: pack only reads them, before ctx goes away. */
        r->members[i]->clienturls = (char **)ctx->advertise_urls;
        r->members[i]->n_clienturls = ctx->n_advertise_urls;
        (*changed)++;
    }
    return 0;
}

static intercept_stat stat_member_list_resp = INTERCEPT_STAT("MemberList", TRANSFORM_RESPONSE);

int intercept_cluster_member_list_response(transform_ctx *ctx, const uint8_t *msg, size_t len,
                                           buf_t *out, es_error *err)
{
    if (ctx->n_advertise_urls == 0 || !ctx->advertise_urls) {
        intercept_stat_count(&stat_member_list_resp);
        if (buf_append(out, msg, len) != 0)
            return es_error_set(err, GRPC_RESOURCE_EXHAUSTED, "MemberList: out of memory");
        return 0;
    }
    return intercept_run(ctx, &stat_member_list_resp,
                         &etcdserverpb__member_list_response__descriptor, NULL, walk_member_list,
                         msg, len, out, err);
}
