/* etcd_user_token.h - etcd auth tokens of the etcd users the access policy maps identities to
 * (--map-identity-to-etcd-user).
 *
 * Each worker thread keeps its own small cache user name -> token (thread-local: a call lives on
 * one worker, so no lock). A miss is answered by the relay with an internal
 * Auth/Authenticate call (etcd_user_token_request builds its message; the password is wiped
 * from the encoded bytes by the caller with etcd_user_token_wipe). etcd's "invalid auth token"
 * answer to a call that used a cached token drops it (etcd_user_token_drop): the next call
 * authenticates again. Tokens are never logged.
 */
#ifndef ETCDSEAL_PROXY_ETCD_USER_TOKEN_H
#define ETCDSEAL_PROXY_ETCD_USER_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "policy/access_policy.h"

#define ETCD_USER_TOKEN_CACHE_MAX 64 /* users cached per worker; the oldest goes first */

/* The cached token of `user` on this thread, or NULL. Valid until the next call here. */
const char *etcd_user_token_get(const char *user);
/* Stores (replaces) the token of `user`. Returns 0 or -1 (no memory: just not cached). */
int etcd_user_token_put(const char *user, const char *token);
/* Drops `user`'s token if it still is `token` (a newer one stays). */
void etcd_user_token_drop(const char *user, const char *token);
/* Encodes an AuthenticateRequest for u into out (appended). 0 or -1. */
int etcd_user_token_request(const access_etcd_user *u, buf_t *out);
/* Decodes an AuthenticateResponse; returns a malloc'd token or NULL. */
char *etcd_user_token_parse(const uint8_t *msg, size_t len);
/* True when a grpc-message is etcd's "invalid auth token" error. */
int etcd_user_token_is_invalid_error(const char *status_msg);
/* Frees every cached token of this thread (worker exit, tests). */
void etcd_user_token_thread_release(void);

#endif
