/* endpoint.c - upstream endpoint parsing (see endpoint.h). */
#include "proxy/endpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int endpoint_parse(const char *text, bool tls_default, endpoint *out, es_error *err)
{
    memset(out, 0, sizeof *out);
    const char *p = text;
    out->tls = tls_default;
    if (strncmp(p, "http://", 7) == 0) {
        out->tls = false;
        p += 7;
    } else if (strncmp(p, "https://", 8) == 0) {
        out->tls = true;
        p += 8;
    } else if (strstr(p, "://")) {
        return es_error_set(err, 0, "endpoint \"%s\": unsupported scheme (use http:// or https://)",
                            text);
    }
    size_t len = strlen(p);
    while (len && p[len - 1] == '/')
        len--;
    const char *colon;
    size_t hlen;
    if (len && p[0] == '[') {
        const char *close = memchr(p, ']', len);
        if (!close || close + 1 >= p + len || close[1] != ':')
            return es_error_set(err, 0, "endpoint \"%s\": expected [v6-address]:port", text);
        hlen = (size_t)(close - p - 1);
        if (hlen == 0 || hlen >= sizeof out->host)
            return es_error_set(err, 0, "endpoint \"%s\": bad host", text);
        memcpy(out->host, p + 1, hlen);
        colon = close + 1;
    } else {
        colon = NULL;
        for (size_t i = len; i > 0; i--)
            if (p[i - 1] == ':') {
                colon = p + i - 1;
                break;
            }
        if (!colon)
            return es_error_set(err, 0, "endpoint \"%s\": missing port (want host:port)", text);
        hlen = (size_t)(colon - p);
        if (hlen == 0 || hlen >= sizeof out->host)
            return es_error_set(err, 0, "endpoint \"%s\": bad host", text);
        memcpy(out->host, p, hlen);
    }
    size_t plen = (size_t)(p + len - colon - 1);
    if (plen == 0 || plen >= sizeof out->port)
        return es_error_set(err, 0, "endpoint \"%s\": bad port", text);
    memcpy(out->port, colon + 1, plen);
    char *end;
    long port = strtol(out->port, &end, 10);
    if (*end || port < 1 || port > 65535)
        return es_error_set(err, 0, "endpoint \"%s\": bad port \"%s\"", text, out->port);
    snprintf(out->authority, sizeof out->authority, "%s%s%s:%s", p[0] == '[' ? "[" : "",
             out->host, p[0] == '[' ? "]" : "", out->port);
    return 0;
}
