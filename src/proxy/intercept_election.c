/* intercept_election.c - walks v3election Campaign/Proclaim values and Leader/Observe kvs.
 *
 * etcd's election server stores a campaign value under "<name>/<lease id as Go %x>" (see
 * etcd's v3election server: concurrency.NewElection(session, name) keys "<name>/" and Campaign
 * writes fmt.Sprintf("%s%x", keyPrefix, session.Lease())): the hook gets that key, picks the
 * chain and uses it as AAD exactly as for a Put of the same key. With lease 0 the server grants
 * a lease of its own, so the key is unknown here: refused on protected names.
 */
#include "proxy/intercept_election.h"
#include "proxy/grpc_wire.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "proxy/intercept_values.h"
#include "v3electionpb/v3election.pb-c.h"


/* "<name>/<lease hex>" in arena memory; Go's %x of an int64 prints a '-' for negatives. */
static int campaign_key(const V3electionpb__CampaignRequest *r, ProtobufCBinaryData *key,
                        es_error *err)
{
    char hex[24];
    uint64_t mag = r->lease < 0 ? (uint64_t)0 - (uint64_t)r->lease : (uint64_t)r->lease;
    int n = snprintf(hex, sizeof(hex), "%s%" PRIx64, r->lease < 0 ? "-" : "", mag);
    size_t len = r->name.len + 1 + (size_t)n;
    uint8_t *p = intercept_alloc(len);
    if (!p)
        return es_error_set(err, GRPC_RESOURCE_EXHAUSTED, "Campaign: out of memory");
    if (r->name.len)
        memcpy(p, r->name.data, r->name.len);
    p[r->name.len] = '/';
    memcpy(p + r->name.len + 1, hex, (size_t)n);
    key->data = p;
    key->len = len;
    return 0;
}

static int walk_campaign_request(transform_ctx *ctx, ProtobufCMessage *m, unsigned *changed,
                                 es_error *err)
{
    V3electionpb__CampaignRequest *r = (V3electionpb__CampaignRequest *)m;
    ProtobufCBinaryData key;
    if (campaign_key(r, &key, err) != 0)
        return -1;
    if (r->lease == 0 && intercept_range_protected(ctx->policy, key.data, key.len, NULL, 0)) {
        char shown[INTERCEPT_KEY_SHOWN_MAX];
        intercept_format_key(shown, sizeof shown, r->name.data, r->name.len);
        return es_error_set(err, GRPC_FAILED_PRECONDITION,
                            "etcdseal: Campaign on encrypted election \"%s\" needs a lease: "
                            "the key etcd would store the value under is unknown without one",
                            shown);
    }
    return intercept_value(ctx, INTERCEPT_SITE_ELECTION_VALUE, &key, &r->value, changed, err);
}

static int walk_proclaim_request(transform_ctx *ctx, ProtobufCMessage *m, unsigned *changed,
                                 es_error *err)
{
    V3electionpb__ProclaimRequest *r = (V3electionpb__ProclaimRequest *)m;
    ProtobufCBinaryData none = {0, NULL};
    return intercept_value(ctx, INTERCEPT_SITE_ELECTION_VALUE, r->leader ? &r->leader->key : &none,
                           &r->value, changed, err);
}

static int walk_leader_response(transform_ctx *ctx, ProtobufCMessage *m, unsigned *changed,
                                es_error *err)
{
    V3electionpb__LeaderResponse *r = (V3electionpb__LeaderResponse *)m;
    return intercept_walk_kv(ctx, INTERCEPT_SITE_ELECTION_KV, r->kv, changed, err);
}

static intercept_stat stat_campaign_req = INTERCEPT_STAT("Campaign", TRANSFORM_REQUEST);
static intercept_stat stat_proclaim_req = INTERCEPT_STAT("Proclaim", TRANSFORM_REQUEST);
static intercept_stat stat_leader_resp = INTERCEPT_STAT("Leader", TRANSFORM_RESPONSE);
static intercept_stat stat_observe_resp = INTERCEPT_STAT("Observe", TRANSFORM_RESPONSE);

int intercept_election_campaign_request(transform_ctx *ctx, const uint8_t *msg, size_t len,
                                        buf_t *out, es_error *err)
{
    return intercept_run(ctx, &stat_campaign_req, &v3electionpb__campaign_request__descriptor, NULL,
                         walk_campaign_request, msg, len, out, err);
}

int intercept_election_proclaim_request(transform_ctx *ctx, const uint8_t *msg, size_t len,
                                        buf_t *out, es_error *err)
{
    return intercept_run(ctx, &stat_proclaim_req, &v3electionpb__proclaim_request__descriptor, NULL,
                         walk_proclaim_request, msg, len, out, err);
}

int intercept_election_leader_response(transform_ctx *ctx, const uint8_t *msg, size_t len,
                                       buf_t *out, es_error *err)
{
    return intercept_run(ctx, &stat_leader_resp, &v3electionpb__leader_response__descriptor, NULL,
                         walk_leader_response, msg, len, out, err);
}

int intercept_election_observe_response(transform_ctx *ctx, const uint8_t *msg, size_t len,
                                        buf_t *out, es_error *err)
{
    return intercept_run(ctx, &stat_observe_resp, &v3electionpb__leader_response__descriptor, NULL,
                         walk_leader_response, msg, len, out, err);
}
