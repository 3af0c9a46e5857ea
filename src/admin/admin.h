/* admin.h - the admin HTTP server: /metrics, /healthz, /livez, /readyz and registered checks.
 *
 * One libevent evhttp server on its OWN thread and event_base (never a worker's). new() parses
 * and binds the address (`host:port`, `[v6]:port`, optional `http://`; port 0 = any; empty host
 * = all interfaces), so a bad address or a port in use is reported before start(). Only GET and
 * HEAD are served (others 405); unknown paths 404.
 * /metrics renders metrics_render() as `text/plain; version=0.0.4`. A health endpoint answers 200
 * `ok` when every check registered on it passes, else 503 with kube-apiserver style lines
 * `[+]name ok` / `[-]name failed: reason` and `<endpoint> check failed`; `?verbose` lists the lines
 * on success too, `?exclude=name` skips a check. /healthz, /livez and /readyz exist with no checks.
 * Checks run on the admin thread (they must be thread-safe and quick: read atomics). Checks may be
 * added before or after start. stop() joins the thread and frees everything (also when never
 * started). Errors: es_error code is an errno value (EINVAL for a malformed address).
 */
#ifndef ETCDSEAL_ADMIN_ADMIN_H
#define ETCDSEAL_ADMIN_ADMIN_H

#include <stdint.h>

#include "base/buf.h"
#include "base/error.h"

typedef struct admin_server admin_server;

/* Returns 0 when healthy, else non-zero after appending a short one-line reason to `detail`. */
typedef int (*admin_check_fn)(void *arg, buf_t *detail);

admin_server *admin_server_new(const char *listen_addr, es_error *err);
/* `endpoint` is a path such as "/readyz" or "/healthz/kms-providers"; names are copied. */
int admin_server_add_check(admin_server *s, const char *endpoint, const char *check_name,
                           admin_check_fn fn, void *arg);
int admin_server_start(admin_server *s, es_error *err);
void admin_server_stop(admin_server *s);
uint16_t admin_server_port(const admin_server *s);

#endif
