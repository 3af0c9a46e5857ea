/* endpoint.h - parsing of upstream endpoint strings as etcd clients accept them:
 * `host:port`, `[v6]:port`, `http://host:port`, `https://host:port` (a trailing '/' is ignored).
 * Without a scheme the endpoint uses TLS when client TLS settings are given (as clientv3 does).
 */
#ifndef ETCDSEAL_PROXY_ENDPOINT_H
#define ETCDSEAL_PROXY_ENDPOINT_H

#include <stdbool.h>
#include <stdint.h>

#include "base/error.h"

typedef struct endpoint {
    char host[256];
    char port[8];
    char authority[280]; /* host:port as sent in :authority when a client sent none */
    bool tls;
} endpoint;

int endpoint_parse(const char *text, bool tls_default, endpoint *out, es_error *err);

#endif
