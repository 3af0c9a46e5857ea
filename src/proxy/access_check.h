/* access_check.h - enforcing the access policy on one gRPC call (relay side).
 *
 * access_method_class tells the relay how a method is checked: FREE (health checks: no data),
 * METHOD (decided once at request headers: lease and admin verbs; Auth/Authenticate needs only
 * that some rule matches the caller), KEYS (every request message is decoded and every key or
 * range it touches is checked before any of it goes upstream: KV, Watch creates, Election,
 * Lock). A denied Watch create is answered with a canceled WatchResponse, not a stream end.
 * Decisions read the policy and identity only; denials are answered PERMISSION_DENIED (err->code 7)
 * with a message naming the identity and the key (escaped), one audit log line (identity, method,
 * verb, key; never values) and etcdseal_access_denied_total{method}; allowed calls count in
 * etcdseal_access_allowed_total{method}. Undecodable requests: INVALID_ARGUMENT. Any thread; no
 * allocation except protobuf-c decoding of the message being checked.
 */
#ifndef ETCDSEAL_PROXY_ACCESS_CHECK_H
#define ETCDSEAL_PROXY_ACCESS_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/error.h"
#include "policy/access_policy.h"
#include "proxy/methods.h"
#include "proxy/peer_identity.h"

enum access_call_class { ACCESS_CALL_FREE, ACCESS_CALL_METHOD, ACCESS_CALL_KEYS };

enum access_call_class access_method_class(const method_desc *m);

/* METHOD class: 0 = allowed, -1 = denied (err filled, audited, counted). */
int access_check_method(const access_policy *p, const peer_identity *pi, const method_desc *m,
                        es_error *err);
/* KEYS class, one request message: 0 = allowed, -1 = denied or malformed (err filled). */
int access_check_message(const access_policy *p, const peer_identity *pi, const method_desc *m,
                         const uint8_t *msg, size_t len, es_error *err);

/* The answer to a denied WatchCreateRequest, as etcd gives one its own auth refuses: a
 * WatchResponse with created and canceled set, watch_id -1, cancel_reason = `reason` and an
 * empty header; the other watches of the stream go on. Appended to out; 0 or -1. */
int access_watch_denied_response(const char *reason, buf_t *out);

#endif
