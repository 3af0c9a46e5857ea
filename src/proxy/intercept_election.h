/* intercept_election.h - transformers for v3electionpb.Election messages that carry values.
 *
 * Requests: CampaignRequest.value (stored by etcd under "<name>/<lease in hex>", the key passed
 * to the hook) and ProclaimRequest.value (stored under leader.key). Responses: LeaderResponse.kv
 * for Leader and for every message of the Observe stream. Resign and the Leader/Observe
 * requests carry no values and are not transformed (NULL in the method table).
 * All functions are transform_fn (proxy/transform.h); thread rules as there.
 */
#ifndef ETCDSEAL_PROXY_INTERCEPT_ELECTION_H
#define ETCDSEAL_PROXY_INTERCEPT_ELECTION_H

#include "proxy/transform.h"

int intercept_election_campaign_request(transform_ctx *ctx, const uint8_t *msg, size_t len,
                                        buf_t *out, es_error *err);
int intercept_election_proclaim_request(transform_ctx *ctx, const uint8_t *msg, size_t len,
                                        buf_t *out, es_error *err);
int intercept_election_leader_response(transform_ctx *ctx, const uint8_t *msg, size_t len,
                                       buf_t *out, es_error *err);
int intercept_election_observe_response(transform_ctx *ctx, const uint8_t *msg, size_t len,
                                        buf_t *out, es_error *err);

#endif
