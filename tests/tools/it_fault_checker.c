/* it_fault_checker.c - fault-suite checker: a reconnecting etcd v3 client over h2c.
 *
 * run:    writes and reads keys PREFIXk<j> (j < NKEYS) through ADDR until SECS pass or STOPFILE
 *         exists, reconnecting after any connection loss. Each put carries a unique value
 *         "fc|<j>|<seq>|<filler>" (seq grows per key, one writer per key). Per key it keeps the
 *         last acknowledged seq and the highest attempted seq (a failed put may still have been
 *         applied). Every read must give a well-formed value with acked <= seq <= attempted and
 *         seq >= the last seq read (no going back in time). Writes STATEFILE ("j acked attempted")
 *         at the end and STATUSFILE (counters, one line) every 200 ms.
 * verify: reads every key of STATEFILE through ADDR (retrying until SECS) and asserts the same
 *         bounds: no acknowledged write lost.
 * scan:   raw paginated Range of PREFIX straight from etcd at ADDR: every value must start with
 *         "k8s:enc:" or be empty; prints counts.
 * Usage: it_fault_checker run|verify|scan -a HOST:PORT -p PREFIX [-k NKEYS] [-d SECS]
 *        [-s STOPFILE] [-o STATEFILE] [-S STATUSFILE] [-z VALUE_BYTES] [-t RPC_TIMEOUT_MS]
 * Violations print "VIOLATION ..." on stderr; exit 0 = no violation (and, for run, some ack),
 * 3 = a violation, 2 = usage/connection error. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
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

#include "etcdserverpb/rpc.pb-c.h"
#include "mvccpb/kv.pb-c.h"

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* ------------------------------------------------------------------ h2c connection */

struct call {
    uint8_t *tx;
    size_t tx_len, tx_off;
    uint8_t *rx;
    size_t rx_len, rx_cap;
    int closed, grpc_status;
    int32_t id;
};

static const char *addr;
static int fd = -1;
static nghttp2_session *h2;
static int dead = 1;
static long rpc_timeout_ms = 2000;
static long reconnects;

static ssize_t send_cb(nghttp2_session *s, const uint8_t *d, size_t n, int fl, void *ud)
{
    (void)s, (void)fl, (void)ud;
    ssize_t r = send(fd, d, n, MSG_NOSIGNAL);
    if (r < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? NGHTTP2_ERR_WOULDBLOCK
                                                         : NGHTTP2_ERR_CALLBACK_FAILURE;
    return r;
}

static int data_cb(nghttp2_session *s, uint8_t fl, int32_t sid, const uint8_t *d, size_t n,
                   void *ud)
{
    (void)fl, (void)ud;
    struct call *c = nghttp2_session_get_stream_user_data(s, sid);
    if (!c)
        return 0;
    if (c->rx_len + n > c->rx_cap) {
        size_t cap = c->rx_cap ? c->rx_cap : 4096;
        while (cap < c->rx_len + n)
            cap *= 2;
        uint8_t *p = realloc(c->rx, cap);
        if (!p)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        c->rx = p;
        c->rx_cap = cap;
    }
    memcpy(c->rx + c->rx_len, d, n);
    c->rx_len += n;
    return 0;
}

static int header_cb(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                     const uint8_t *val, size_t vl, uint8_t fl, void *ud)
{
    (void)fl, (void)ud, (void)vl;
    struct call *c = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (c && nl == 11 && memcmp(name, "grpc-status", 11) == 0)
        c->grpc_status = atoi((const char *)val);
    return 0;
}

static int close_cb(nghttp2_session *s, int32_t sid, uint32_t code, void *ud)
{
    (void)code, (void)ud;
    struct call *c = nghttp2_session_get_stream_user_data(s, sid);
    if (c)
        c->closed = 1;
    return 0;
}

static ssize_t read_cb(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *fl,
                       nghttp2_data_source *src, void *ud)
{
    (void)s, (void)sid, (void)ud;
    struct call *c = src->ptr;
    size_t n = c->tx_len - c->tx_off < len ? c->tx_len - c->tx_off : len;
    memcpy(buf, c->tx + c->tx_off, n);
    c->tx_off += n;
    if (c->tx_off >= c->tx_len)
        *fl |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static void conn_close(void)
{
    if (h2)
        nghttp2_session_del(h2);
    h2 = NULL;
    if (fd >= 0)
        close(fd);
    fd = -1;
    dead = 1;
}

static int conn_open(void)
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
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        fd = -1;
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_send_callback(cbs, send_cb);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, data_cb);
    nghttp2_session_callbacks_set_on_header_callback(cbs, header_cb);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, close_cb);
    nghttp2_session_client_new(&h2, cbs, NULL);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 16 << 20},
                                   {NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
    nghttp2_submit_settings(h2, NGHTTP2_FLAG_NONE, iv, 2);
    nghttp2_session_set_local_window_size(h2, NGHTTP2_FLAG_NONE, 0, 64 << 20);
    dead = 0;
    return 0;
}

static void pump(int wait_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (nghttp2_session_want_write(h2))
        p.events |= POLLOUT;
    if (poll(&p, 1, wait_ms) < 0)
        return;
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
        uint8_t buf[65536];
        for (;;) {
            ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n > 0) {
                if (nghttp2_session_mem_recv(h2, buf, (size_t)n) < 0) {
                    dead = 1;
                    return;
                }
                continue;
            }
            if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
                dead = 1;
            break;
        }
    }
    if (!dead && nghttp2_session_send(h2) != 0)
        dead = 1;
    if (!dead && !nghttp2_session_want_read(h2) && !nghttp2_session_want_write(h2))
        dead = 1; /* GOAWAY handled: no new streams possible */
}

/* One unary call. Returns the response or NULL (*st = grpc status, -1 transport/timeout). A
 * transport failure or a timeout drops the connection so the next call reconnects. */
static ProtobufCMessage *unary(const char *path, const ProtobufCMessage *req,
                               const ProtobufCMessageDescriptor *rd, int *st)
{
    *st = -1;
    if (dead) {
        conn_close();
        if (conn_open() != 0) {
            conn_close();
            return NULL;
        }
        reconnects++;
    }
    struct call c = {.grpc_status = -1};
    size_t n = protobuf_c_message_get_packed_size(req);
    c.tx = malloc(n + 5);
    if (!c.tx)
        return NULL;
    c.tx[0] = 0;
    c.tx[1] = (uint8_t)(n >> 24);
    c.tx[2] = (uint8_t)(n >> 16);
    c.tx[3] = (uint8_t)(n >> 8);
    c.tx[4] = (uint8_t)n;
    protobuf_c_message_pack(req, c.tx + 5);
    c.tx_len = n + 5;
#define NV(a, b) {(uint8_t *)(a), (uint8_t *)(b), sizeof(a) - 1, strlen(b), NGHTTP2_NV_FLAG_NONE}
    nghttp2_nv hdrs[] = {NV(":method", "POST"),
                         NV(":scheme", "http"),
                         NV(":path", path),
                         NV(":authority", addr),
                         NV("content-type", "application/grpc"),
                         NV("te", "trailers")};
#undef NV
    nghttp2_data_provider prd = {.source.ptr = &c, .read_callback = read_cb};
    c.id = nghttp2_submit_request(h2, NULL, hdrs, sizeof hdrs / sizeof *hdrs, &prd, &c);
    ProtobufCMessage *out = NULL;
    if (c.id < 0) {
        dead = 1;
        goto done;
    }
    long deadline = now_ms() + rpc_timeout_ms;
    while (!c.closed && !dead && now_ms() < deadline)
        pump(50);
    if (!c.closed) {
        dead = 1; /* timeout or lost connection: drop it, the call's outcome is unknown */
        nghttp2_session_set_stream_user_data(h2, c.id, NULL);
        goto done;
    }
    *st = c.grpc_status;
    if (c.grpc_status == 0 && c.rx_len >= 5) {
        size_t m = (size_t)c.rx[1] << 24 | (size_t)c.rx[2] << 16 | (size_t)c.rx[3] << 8 | c.rx[4];
        if (m <= c.rx_len - 5)
            out = protobuf_c_message_unpack(rd, NULL, m, c.rx + 5);
    }
    if (!out && *st == 0)
        *st = -2;
done:
    free(c.tx);
    free(c.rx);
    return out;
}

/* ------------------------------------------------------------------ values and keys */

static const char *prefix = "/fc/";
static int nkeys = 64;
static size_t value_bytes = 64;
static long violations;

#define VIOLATION(...)                                                                             \
    do {                                                                                           \
        violations++;                                                                              \
        if (violations <= 50) {                                                                    \
            fprintf(stderr, "VIOLATION " __VA_ARGS__);                                             \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

static void key_of(int j, char *buf, size_t cap)
{
    snprintf(buf, cap, "%sk%d", prefix, j);
}

static uint8_t *value_of(int j, long seq, size_t *len)
{
    uint8_t *v = malloc(value_bytes + 64);
    if (!v)
        return NULL;
    int n = snprintf((char *)v, 64, "fc|%d|%ld|", j, seq);
    size_t total = value_bytes > (size_t)n ? value_bytes : (size_t)n;
    uint64_t x = (uint64_t)j * 1000003u + (uint64_t)seq * 7919u + 1;
    for (size_t i = (size_t)n; i < total; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        v[i] = (uint8_t)('a' + (x >> 33) % 26);
    }
    *len = total;
    return v;
}

/* Parses and fully checks a value of key j; returns its seq or -1 if malformed. */
static long parse_value(int j, const uint8_t *v, size_t len)
{
    char head[64];
    size_t h = len < sizeof head - 1 ? len : sizeof head - 1;
    memcpy(head, v, h);
    head[h] = 0;
    int kj;
    long seq;
    if (sscanf(head, "fc|%d|%ld|", &kj, &seq) != 2 || kj != j || seq <= 0)
        return -1;
    size_t elen;
    uint8_t *e = value_of(j, seq, &elen);
    int ok = e && elen == len && memcmp(e, v, len) == 0;
    free(e);
    return ok ? seq : -1;
}

struct keystate {
    long acked, attempted, seen;
};
static struct keystate *ks;

/* Reads key j; 1 = checked, 0 = RPC failed. Bounds: acked <= seq <= attempted, seq >= seen. */
static int read_check(int j, const char *ctx)
{
    char key[256];
    key_of(j, key, sizeof key);
    Etcdserverpb__RangeRequest rr = ETCDSERVERPB__RANGE_REQUEST__INIT;
    rr.key.data = (uint8_t *)key;
    rr.key.len = strlen(key);
    long lo = ks[j].acked > ks[j].seen ? ks[j].acked : ks[j].seen;
    int st;
    Etcdserverpb__RangeResponse *r = (Etcdserverpb__RangeResponse *)unary(
        "/etcdserverpb.KV/Range", &rr.base, &etcdserverpb__range_response__descriptor, &st);
    if (!r)
        return 0;
    if (r->n_kvs == 0) {
        if (lo > 0)
            VIOLATION("%s: %s missing (acked seq %ld, seen %ld)", ctx, key, ks[j].acked,
                      ks[j].seen);
    } else {
        long seq = parse_value(j, r->kvs[0]->value.data, r->kvs[0]->value.len);
        if (seq < 0) {
            const uint8_t *d = r->kvs[0]->value.data;
            size_t l = r->kvs[0]->value.len;
            VIOLATION("%s: %s value malformed (%zu bytes, starts %.12s)", ctx, key, l,
                      l >= 8 && memcmp(d, "k8s:enc:", 8) == 0 ? "k8s:enc:..." : "(other)");
        } else if (seq < lo) {
            VIOLATION("%s: %s went back in time: read seq %ld < acked %ld / seen %ld", ctx, key,
                      seq, ks[j].acked, ks[j].seen);
        } else if (seq > ks[j].attempted) {
            VIOLATION("%s: %s read seq %ld never written (attempted %ld)", ctx, key, seq,
                      ks[j].attempted);
        } else {
            ks[j].seen = seq;
        }
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return 1;
}

/* ------------------------------------------------------------------ modes */

static long acked_total, put_fail, reads, read_fail;

static void write_status(const char *path)
{
    if (!path)
        return;
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return;
    fprintf(f, "acked=%ld put_fail=%ld reads=%ld read_fail=%ld violations=%ld reconnects=%ld\n",
            acked_total, put_fail, reads, read_fail, violations, reconnects);
    fclose(f);
    rename(tmp, path);
}

static int run(long secs, const char *stopfile, const char *statefile, const char *statusfile)
{
    long end = now_ms() + secs * 1000, last_status = 0;
    uint64_t rnd = 88172645463325252ULL ^ (uint64_t)getpid();
    for (long it = 0; now_ms() < end; it++) {
        if (stopfile && access(stopfile, F_OK) == 0)
            break;
        if (now_ms() - last_status >= 200) {
            write_status(statusfile);
            last_status = now_ms();
        }
        int j = (int)(it % nkeys);
        long seq = ks[j].attempted + 1;
        ks[j].attempted = seq;
        char key[256];
        key_of(j, key, sizeof key);
        size_t vl;
        uint8_t *v = value_of(j, seq, &vl);
        if (!v)
            return 2;
        Etcdserverpb__PutRequest pr = ETCDSERVERPB__PUT_REQUEST__INIT;
        pr.key.data = (uint8_t *)key;
        pr.key.len = strlen(key);
        pr.value.data = v;
        pr.value.len = vl;
        int st;
        ProtobufCMessage *resp =
            unary("/etcdserverpb.KV/Put", &pr.base, &etcdserverpb__put_response__descriptor, &st);
        free(v);
        if (resp) {
            ks[j].acked = seq;
            acked_total++;
            protobuf_c_message_free_unpacked(resp, NULL);
        } else {
            put_fail++;
            usleep(dead ? 50000 : 5000); /* no busy loop against a failing upstream */
        }
        rnd ^= rnd << 13, rnd ^= rnd >> 7, rnd ^= rnd << 17;
        int rj = (int)(rnd % (uint64_t)nkeys);
        if (read_check(rj, "run"))
            reads++;
        else
            read_fail++;
    }
    write_status(statusfile);
    if (statefile) {
        FILE *f = fopen(statefile, "w");
        if (!f)
            return 2;
        for (int j = 0; j < nkeys; j++)
            fprintf(f, "%d %ld %ld\n", j, ks[j].acked, ks[j].attempted);
        fclose(f);
    }
    printf("run acked=%ld put_fail=%ld reads=%ld read_fail=%ld violations=%ld reconnects=%ld\n",
           acked_total, put_fail, reads, read_fail, violations, reconnects);
    if (violations)
        return 3;
    return acked_total > 0 ? 0 : 3;
}

static int verify(long secs, const char *statefile)
{
    FILE *f = fopen(statefile, "r");
    if (!f) {
        fprintf(stderr, "it_fault_checker: cannot open %s\n", statefile);
        return 2;
    }
    int j;
    long a, t, checked = 0, acked_keys = 0;
    while (fscanf(f, "%d %ld %ld", &j, &a, &t) == 3)
        if (j >= 0 && j < nkeys)
            ks[j].acked = a, ks[j].attempted = t;
    fclose(f);
    long end = now_ms() + secs * 1000;
    for (j = 0; j < nkeys; j++) {
        while (!read_check(j, "verify")) {
            if (now_ms() > end) {
                fprintf(stderr, "it_fault_checker: verify: %s unreachable\n", addr);
                printf("verify checked=%ld unreachable\n", checked);
                return 2;
            }
            usleep(100000);
        }
        checked++;
        if (ks[j].acked > 0)
            acked_keys++;
    }
    printf("verify checked=%ld acked_keys=%ld violations=%ld\n", checked, acked_keys, violations);
    return violations ? 3 : 0;
}

static int scan(long secs)
{
    uint8_t end[256];
    size_t pl = strlen(prefix);
    if (pl == 0 || pl >= sizeof end)
        return 2;
    memcpy(end, prefix, pl);
    end[pl - 1]++; /* prefix end (test prefixes never end in 0xff) */
    uint8_t from[512];
    size_t fl = pl;
    memcpy(from, prefix, pl);
    long total = 0, enc = 0, empty = 0, deadline = now_ms() + secs * 1000;
    for (;;) {
        Etcdserverpb__RangeRequest rr = ETCDSERVERPB__RANGE_REQUEST__INIT;
        rr.key.data = from;
        rr.key.len = fl;
        rr.range_end.data = end;
        rr.range_end.len = pl;
        rr.limit = 500;
        int st;
        Etcdserverpb__RangeResponse *r = (Etcdserverpb__RangeResponse *)unary(
            "/etcdserverpb.KV/Range", &rr.base, &etcdserverpb__range_response__descriptor, &st);
        if (!r) {
            if (now_ms() > deadline) {
                fprintf(stderr, "it_fault_checker: scan: %s unreachable (status %d)\n", addr, st);
                return 2;
            }
            usleep(100000);
            continue;
        }
        for (size_t i = 0; i < r->n_kvs; i++) {
            const ProtobufCBinaryData *v = &r->kvs[i]->value;
            total++;
            if (v->len == 0)
                empty++;
            else if (v->len >= 8 && memcmp(v->data, "k8s:enc:", 8) == 0)
                enc++;
            else
                VIOLATION("scan: plaintext under %s: key %.*s (%zu bytes)", prefix,
                          (int)r->kvs[i]->key.len, (const char *)r->kvs[i]->key.data, v->len);
        }
        int more = r->more && r->n_kvs > 0;
        if (more) {
            const ProtobufCBinaryData *k = &r->kvs[r->n_kvs - 1]->key;
            if (k->len + 1 > sizeof from)
                more = 0;
            else {
                memcpy(from, k->data, k->len);
                from[k->len] = 0; /* next key after the last one */
                fl = k->len + 1;
            }
        }
        protobuf_c_message_free_unpacked(&r->base, NULL);
        if (!more)
            break;
    }
    printf("scan prefix=%s total=%ld encrypted=%ld empty=%ld plaintext=%ld\n", prefix, total, enc,
           empty, violations);
    return violations ? 3 : 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: it_fault_checker run|verify|scan -a HOST:PORT -p PREFIX [-k NKEYS] "
                    "[-d SECS] [-s STOPFILE] [-o STATEFILE] [-S STATUSFILE] [-z BYTES] "
                    "[-t RPC_TIMEOUT_MS]\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage();
        return 2;
    }
    const char *mode = argv[1], *stopfile = NULL, *statefile = NULL, *statusfile = NULL;
    long secs = 30;
    int opt;
    optind = 2;
    while ((opt = getopt(argc, argv, "a:p:k:d:s:o:S:z:t:")) != -1) {
        switch (opt) {
        case 'a':
            addr = optarg;
            break;
        case 'p':
            prefix = optarg;
            break;
        case 'k':
            nkeys = atoi(optarg);
            break;
        case 'd':
            secs = atol(optarg);
            break;
        case 's':
            stopfile = optarg;
            break;
        case 'o':
            statefile = optarg;
            break;
        case 'S':
            statusfile = optarg;
            break;
        case 'z':
            value_bytes = (size_t)atol(optarg);
            break;
        case 't':
            rpc_timeout_ms = atol(optarg);
            break;
        default:
            usage();
            return 2;
        }
    }
    if (!addr || nkeys <= 0 || nkeys > 1000000) {
        usage();
        return 2;
    }
    ks = calloc((size_t)nkeys, sizeof *ks);
    if (!ks)
        return 2;
    int rc;
    if (strcmp(mode, "run") == 0)
        rc = run(secs, stopfile, statefile, statusfile);
    else if (strcmp(mode, "verify") == 0 && statefile)
        rc = verify(secs, statefile);
    else if (strcmp(mode, "scan") == 0)
        rc = scan(secs);
    else {
        usage();
        rc = 2;
    }
    conn_close();
    free(ks);
    return rc;
}
