/* it_watchers.c - integration-test gRPC client over h2c (libnghttp2 + plain sockets).
 *
 * Watch mode (default): opens N etcd Watch streams spread over C connections, sends one
 * WatchCreateRequest{key} on each, prints "READY created=<n>/<N> ..." once every stream has its
 * created response (or the timeout hits), then waits until every stream has received at least one
 * event and prints "DONE events=<n>/<N> ...". Exit 0 only if all N streams were created and all
 * got an event. The caller does the put after READY.
 *
 * Call mode (--call PATH): one unary call with an empty message; prints
 * "http=<status> grpc-status=<code> grpc-message=<msg>" and exits 0 if a grpc-status arrived.
 *
 * Usage: it_watchers -a HOST:PORT [-n N] [-c CONNS] [-k KEY] [-t SECS] [--call PATH]
 * Protobuf is hand-encoded (two nested length-delimited fields); responses are walked just deep
 * enough to read WatchResponse.created (3), canceled (4), cancel_reason (6) and events (11). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct stream {
    int32_t id;
    int conn;
    unsigned char *rx; /* unparsed gRPC bytes */
    size_t rx_len, rx_cap;
    int created, canceled, closed, http_status, grpc_status;
    long events;
    char grpc_message[256];
};

struct conn {
    int fd;
    nghttp2_session *h2;
    int dead;
};

static struct stream *streams;
static struct conn *conns;
static unsigned char req_msg[512]; /* the gRPC-framed request, the same for every stream */
static size_t req_len;

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static size_t put_varint(unsigned char *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (unsigned char)v;
    return n;
}

static int get_varint(const unsigned char *p, size_t len, size_t *off, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64 && *off < len; shift += 7) {
        unsigned char b = p[(*off)++];
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return 0;
    }
    return -1;
}

/* gRPC frame: flag 0, 4-byte big-endian length, WatchRequest{create_request{key}}. */
static void build_watch_request(const char *key)
{
    unsigned char inner[300], outer[320];
    size_t klen = strlen(key), in = 0, out = 0;
    inner[in++] = 0x0a; /* WatchCreateRequest.key, field 1, length-delimited */
    in += put_varint(inner + in, klen);
    memcpy(inner + in, key, klen);
    in += klen;
    outer[out++] = 0x0a; /* WatchRequest.create_request, field 1, length-delimited */
    out += put_varint(outer + out, in);
    memcpy(outer + out, inner, in);
    out += in;
    req_msg[0] = 0;
    req_msg[1] = (unsigned char)(out >> 24);
    req_msg[2] = (unsigned char)(out >> 16);
    req_msg[3] = (unsigned char)(out >> 8);
    req_msg[4] = (unsigned char)out;
    memcpy(req_msg + 5, outer, out);
    req_len = 5 + out;
}

/* Walks one WatchResponse; -1 if it is not valid protobuf. */
static int parse_watch_response(struct stream *s, const unsigned char *p, size_t len)
{
    size_t off = 0;
    while (off < len) {
        uint64_t tag, v;
        if (get_varint(p, len, &off, &tag) != 0)
            return -1;
        unsigned field = (unsigned)(tag >> 3), wt = (unsigned)(tag & 7);
        if (wt == 0) {
            if (get_varint(p, len, &off, &v) != 0)
                return -1;
            if (field == 3 && v)
                s->created = 1;
            if (field == 4 && v)
                s->canceled = 1;
        } else if (wt == 2) {
            if (get_varint(p, len, &off, &v) != 0 || v > len - off)
                return -1;
            if (field == 11)
                s->events++;
            if (field == 6) {
                size_t n = v < sizeof s->grpc_message - 1 ? (size_t)v : sizeof s->grpc_message - 1;
                memcpy(s->grpc_message, p + off, n);
                s->grpc_message[n] = 0;
            }
            off += (size_t)v;
        } else if (wt == 1) {
            off += 8;
        } else if (wt == 5) {
            off += 4;
        } else {
            return -1;
        }
    }
    return off == len ? 0 : -1;
}

static void consume_messages(struct stream *s)
{
    size_t off = 0;
    while (s->rx_len - off >= 5) {
        const unsigned char *h = s->rx + off;
        size_t mlen = (size_t)h[1] << 24 | (size_t)h[2] << 16 | (size_t)h[3] << 8 | h[4];
        if (s->rx_len - off - 5 < mlen)
            break;
        if (parse_watch_response(s, h + 5, mlen) != 0)
            fprintf(stderr, "it_watchers: stream %d: unparsable message (%zu bytes)\n", s->id,
                    mlen);
        off += 5 + mlen;
    }
    memmove(s->rx, s->rx + off, s->rx_len - off);
    s->rx_len -= off;
}

static ssize_t send_cb(nghttp2_session *h2, const uint8_t *data, size_t len, int flags, void *ud)
{
    (void)h2;
    (void)flags;
    struct conn *c = ud;
    ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? NGHTTP2_ERR_WOULDBLOCK
                                                         : NGHTTP2_ERR_CALLBACK_FAILURE;
    return n;
}

static int data_chunk_cb(nghttp2_session *h2, uint8_t flags, int32_t sid, const uint8_t *data,
                         size_t len, void *ud)
{
    (void)flags;
    (void)ud;
    struct stream *s = nghttp2_session_get_stream_user_data(h2, sid);
    if (!s)
        return 0;
    if (s->rx_len + len > s->rx_cap) {
        size_t cap = s->rx_cap ? s->rx_cap : 256;
        while (cap < s->rx_len + len)
            cap *= 2;
        unsigned char *p = realloc(s->rx, cap);
        if (!p)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        s->rx = p;
        s->rx_cap = cap;
    }
    memcpy(s->rx + s->rx_len, data, len);
    s->rx_len += len;
    consume_messages(s);
    return 0;
}

static int header_cb(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    (void)flags;
    (void)ud;
    struct stream *s = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (!s)
        return 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0)
        s->http_status = atoi((const char *)value);
    else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0)
        s->grpc_status = atoi((const char *)value);
    else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
        size_t n = valuelen < sizeof s->grpc_message - 1 ? valuelen : sizeof s->grpc_message - 1;
        memcpy(s->grpc_message, value, n);
        s->grpc_message[n] = 0;
    }
    return 0;
}

static int stream_close_cb(nghttp2_session *h2, int32_t sid, uint32_t code, void *ud)
{
    (void)ud;
    struct stream *s = nghttp2_session_get_stream_user_data(h2, sid);
    if (s) {
        s->closed = 1;
        if (code != NGHTTP2_NO_ERROR && s->grpc_status < 0)
            fprintf(stderr, "it_watchers: stream %d reset: %s\n", sid,
                    nghttp2_http2_strerror(code));
    }
    return 0;
}

/* Sends the request message once, then defers forever (watch: the stream stays open) or ends
 * the stream (unary call). */
static ssize_t read_cb(nghttp2_session *h2, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
                       nghttp2_data_source *src, void *ud)
{
    (void)h2;
    (void)sid;
    (void)ud;
    size_t *sent = src->ptr;
    int end_after = sent[1] != 0;
    if (sent[0] >= req_len) {
        if (end_after) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            return 0;
        }
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = req_len - sent[0] < len ? req_len - sent[0] : len;
    memcpy(buf, req_msg + sent[0], n);
    sent[0] += n;
    if (sent[0] >= req_len && end_after)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int connect_to(const char *addr)
{
    char host[64];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof host)
        return -1;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return -1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/* One round of I/O on every live connection, waiting up to wait_ms. */
static void pump(size_t nconn, int wait_ms)
{
    struct pollfd pfd[nconn];
    for (size_t i = 0; i < nconn; i++) {
        struct conn *c = &conns[i];
        pfd[i].fd = c->dead ? -1 : c->fd;
        pfd[i].events = POLLIN;
        if (!c->dead && nghttp2_session_want_write(c->h2))
            pfd[i].events |= POLLOUT;
    }
    if (poll(pfd, nconn, wait_ms) < 0)
        return;
    for (size_t i = 0; i < nconn; i++) {
        struct conn *c = &conns[i];
        if (c->dead)
            continue;
        if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) {
            unsigned char buf[65536];
            for (;;) {
                ssize_t n = recv(c->fd, buf, sizeof buf, 0);
                if (n > 0) {
                    if (nghttp2_session_mem_recv(c->h2, buf, (size_t)n) < 0) {
                        c->dead = 1;
                        break;
                    }
                    continue;
                }
                if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
                    fprintf(stderr, "it_watchers: connection %zu closed by peer\n", i);
                    c->dead = 1;
                }
                break;
            }
        }
        if (!c->dead && nghttp2_session_send(c->h2) != 0)
            c->dead = 1;
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: it_watchers -a HOST:PORT [-n N] [-c CONNS] [-k KEY] [-t SECS] "
                    "[--call PATH]\n");
}

int main(int argc, char **argv)
{
    const char *addr = NULL, *key = "/it/watchers/key", *call = NULL;
    size_t n = 1000, nconn = 4;
    long timeout_s = 30;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            usage();
            return 2;
        }
        if (strcmp(a, "-a") == 0)
            addr = v;
        else if (strcmp(a, "-n") == 0)
            n = strtoul(v, NULL, 10);
        else if (strcmp(a, "-c") == 0)
            nconn = strtoul(v, NULL, 10);
        else if (strcmp(a, "-k") == 0)
            key = v;
        else if (strcmp(a, "-t") == 0)
            timeout_s = strtol(v, NULL, 10);
        else if (strcmp(a, "--call") == 0)
            call = v;
        else {
            usage();
            return 2;
        }
        i++;
    }
    if (!addr || n == 0 || nconn == 0 || strlen(key) > 256) {
        usage();
        return 2;
    }
    if (call) {
        n = 1;
        nconn = 1;
        memset(req_msg, 0, 5); /* an empty message */
        req_len = 5;
    } else {
        build_watch_request(key);
    }
    if (nconn > n)
        nconn = n;
    streams = calloc(n, sizeof *streams);
    conns = calloc(nconn, sizeof *conns);
    size_t(*sent)[2] = calloc(n, sizeof *sent);
    if (!streams || !conns || !sent)
        return 2;

    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_send_callback(cbs, send_cb);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, data_chunk_cb);
    nghttp2_session_callbacks_set_on_header_callback(cbs, header_cb);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, stream_close_cb);
    for (size_t i = 0; i < nconn; i++) {
        conns[i].fd = connect_to(addr);
        if (conns[i].fd < 0) {
            fprintf(stderr, "it_watchers: cannot connect to %s: %s\n", addr, strerror(errno));
            return 2;
        }
        nghttp2_session_client_new(&conns[i].h2, cbs, &conns[i]);
        nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
                                       {NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
        nghttp2_submit_settings(conns[i].h2, NGHTTP2_FLAG_NONE, iv, 2);
        nghttp2_session_set_local_window_size(conns[i].h2, NGHTTP2_FLAG_NONE, 0, 16 << 20);
    }
    nghttp2_session_callbacks_del(cbs);

    const char *path = call ? call : "/etcdserverpb.Watch/Watch";
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}
    nghttp2_nv hdrs[] = {NV(":method", "POST"),
                         NV(":scheme", "http"),
                         NV(":path", path),
                         NV(":authority", addr),
                         NV("content-type", "application/grpc"),
                         NV("te", "trailers"),
                         NV("user-agent", "it_watchers")};
    long t0 = now_ms(), deadline = t0 + timeout_s * 1000;
    for (size_t i = 0; i < n; i++) {
        struct stream *s = &streams[i];
        s->conn = (int)(i % nconn);
        s->grpc_status = -1;
        sent[i][1] = call != NULL;
        nghttp2_data_provider prd = {.source.ptr = sent[i], .read_callback = read_cb};
        s->id = nghttp2_submit_request(conns[s->conn].h2, NULL, hdrs, sizeof hdrs / sizeof *hdrs,
                                       &prd, s);
        if (s->id < 0) {
            fprintf(stderr, "it_watchers: submit %zu: %s\n", i, nghttp2_strerror(s->id));
            return 2;
        }
        if (i % 64 == 63)
            pump(nconn, 0);
    }

    int rc;
    size_t created = 0, with_event = 0, closed = 0, canceled = 0;
    if (call) {
        while (now_ms() < deadline && !streams[0].closed && !conns[0].dead)
            pump(nconn, 100);
        printf("http=%d grpc-status=%d grpc-message=%s\n", streams[0].http_status,
               streams[0].grpc_status, streams[0].grpc_message);
        rc = streams[0].grpc_status >= 0 ? 0 : 1;
        goto done;
    }

    while (now_ms() < deadline) {
        pump(nconn, 50);
        created = 0;
        for (size_t i = 0; i < n; i++)
            created += streams[i].created;
        if (created == n)
            break;
    }
    printf("READY created=%zu/%zu conns=%zu ms=%ld\n", created, n, nconn, now_ms() - t0);
    fflush(stdout);
    long t1 = now_ms();
    deadline = t1 + timeout_s * 1000;
    while (created == n && now_ms() < deadline) {
        pump(nconn, 50);
        with_event = 0;
        for (size_t i = 0; i < n; i++)
            with_event += streams[i].events > 0;
        if (with_event == n)
            break;
    }
    for (size_t i = 0; i < n; i++) {
        closed += streams[i].closed;
        canceled += streams[i].canceled;
    }
    printf("DONE events=%zu/%zu ms=%ld closed=%zu canceled=%zu\n", with_event, n, now_ms() - t1,
           closed, canceled);
    for (size_t i = 0; i < n && closed; i++)
        if (streams[i].closed) {
            printf("first closed stream: id=%d http=%d grpc-status=%d grpc-message=%s\n",
                   streams[i].id, streams[i].http_status, streams[i].grpc_status,
                   streams[i].grpc_message);
            break;
        }
    rc = created == n && with_event == n ? 0 : 1;
done:
    for (size_t i = 0; i < nconn; i++) {
        nghttp2_session_del(conns[i].h2);
        close(conns[i].fd);
    }
    for (size_t i = 0; i < n; i++)
        free(streams[i].rx);
    free(streams);
    free(conns);
    free(sent);
    return rc;
}
