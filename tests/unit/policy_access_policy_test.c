/* policy_access_policy_test.c - the access policy: loader errors, subject globs, the allow/deny
 * matrix per verb, range containment edge cases (etcd's prefix end, "\0" = to the end), and
 * the request-message checks of src/proxy/access_check.c (Txn branches and nesting, Watch
 * creates, Compact, Election/Lock names) on real encoded etcd messages.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/secret.h"
#include "etcdserverpb/rpc.pb-c.h"
#include "policy/access_policy.h"
#include "proxy/access_check.h"
#include "proxy/grpc_wire.h"
#include "proxy/methods.h"
#include "proxy/peer_identity.h"
#include "testlib.h"

static const char policy_text[] =
    "apiVersion: etcdseal.io/v1\n"
    "kind: AccessPolicy\n"
    "rules:\n"
    "  - name: apiserver\n"
    "    subjects: [\"CN=kube-apiserver\"]\n"
    "    verbs: [read, write, lease]\n"
    "    keyPrefixes: [\"/registry/\"]\n"
    "  - name: readers\n"
    "    subjects: [\"DNS:*.readers.example\", \"URI:spiffe://c/ns/*\"]\n"
    "    verbs: [read]\n"
    "    keyPrefixes: [\"/app/\", \"/shared\"]\n"
    "  - name: ops\n"
    "    subjects: [\"CN=ops-*\"]\n"
    "    verbs: [admin, write]\n"
    "    keyPrefixes: [\"\"]\n"
    "  - name: health-probe\n"
    "    subjects: [anonymous]\n"
    "    verbs: [read]\n"
    "    keyPrefixes: [\"/public/\"]\n";

static access_policy *load(void)
{
    es_error err = {0};
    access_policy *p = NULL;
    int rc = access_policy_load_buffer("t.yaml", policy_text, sizeof policy_text - 1, &p, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    return p;
}

static access_identity cn(const char *name)
{
    access_identity id = {.has_cert = true, .cn = name};
    return id;
}

static bool allow(const access_policy *p, const access_identity *id, unsigned verb, const char *key,
                  const char *end)
{
    return access_policy_check(p, id, verb, (const uint8_t *)key, strlen(key), (const uint8_t *)end,
                               end ? strlen(end) : 0);
}

static void test_glob(void)
{
    CHECK(access_glob_match("abc", "abc"));
    CHECK(!access_glob_match("abc", "abcd"));
    CHECK(access_glob_match("*", ""));
    CHECK(access_glob_match("a*c", "abbbc"));
    CHECK(access_glob_match("a*c", "ac"));
    CHECK(!access_glob_match("a*c", "acb"));
    CHECK(access_glob_match("*.x.example", "a.b.x.example"));
    CHECK(!access_glob_match("*.x.example", "x.example"));
    CHECK(access_glob_match("*a*b*", "zzazzbzz"));
    CHECK(!access_glob_match("?", "a")); /* only '*' is special */
    CHECK(access_glob_match("?", "?"));
}

static void test_prefix_end(void)
{
    uint8_t out[8];
    size_t n = access_prefix_end((const uint8_t *)"/a", 2, out);
    CHECK_EQ_MEM(out, n, "/b", 2);
    const uint8_t ff[] = {'a', 0xff, 0xff};
    n = access_prefix_end(ff, 3, out);
    CHECK_EQ_MEM(out, n, "b", 1);
    const uint8_t all_ff[] = {0xff, 0xff};
    n = access_prefix_end(all_ff, 2, out);
    CHECK_EQ_MEM(out, n, "\0", 1);
    n = access_prefix_end(NULL, 0, out);
    CHECK_EQ_MEM(out, n, "\0", 1);
}

static void test_matrix(void)
{
    access_policy *p = load();
    if (!p)
        return;
    access_identity api = cn("kube-apiserver"), ops = cn("ops-alice"), other = cn("someone");
    access_identity anon = {.has_cert = false};
    access_identity anon_named = {.has_cert = false, .cn = "kube-apiserver"};
    const char *dns[] = {"node1.readers.example"};
    access_identity reader = {.has_cert = true, .dns = dns, .n_dns = 1};
    const char *uris[] = {"spiffe://c/ns/team"};
    access_identity spiffe = {.has_cert = true, .uris = uris, .n_uris = 1};

    CHECK(allow(p, &api, ACCESS_VERB_READ, "/registry/pods/a", NULL));
    CHECK(allow(p, &api, ACCESS_VERB_WRITE, "/registry/pods/a", NULL));
    CHECK(!allow(p, &api, ACCESS_VERB_WRITE, "/registr", NULL));
    CHECK(!allow(p, &api, ACCESS_VERB_READ, "/app/x", NULL));
    CHECK(access_policy_check(p, &api, ACCESS_VERB_LEASE, NULL, 0, NULL, 0));
    CHECK(!access_policy_check(p, &api, ACCESS_VERB_ADMIN, NULL, 0, NULL, 0));
    /* a name that only looks right without a verified certificate gets nothing */
    CHECK(!allow(p, &anon_named, ACCESS_VERB_READ, "/registry/a", NULL));
    CHECK(allow(p, &anon_named, ACCESS_VERB_READ, "/public/a", NULL));
    CHECK(allow(p, &anon, ACCESS_VERB_READ, "/public/a", NULL));
    CHECK(!allow(p, &anon, ACCESS_VERB_WRITE, "/public/a", NULL));
    CHECK(!allow(p, &other, ACCESS_VERB_READ, "/public/a", NULL)); /* has a cert: not anonymous */
    CHECK(!access_policy_known(p, &other));
    CHECK(access_policy_known(p, &api));

    CHECK(allow(p, &reader, ACCESS_VERB_READ, "/app/x", NULL));
    CHECK(allow(p, &reader, ACCESS_VERB_READ, "/shared", NULL));
    CHECK(allow(p, &reader, ACCESS_VERB_READ, "/shared-more", NULL)); /* prefix, not directory */
    CHECK(!allow(p, &reader, ACCESS_VERB_WRITE, "/app/x", NULL));
    CHECK(allow(p, &spiffe, ACCESS_VERB_READ, "/app/x", NULL));

    /* union: ops gets write everywhere and admin, but no read */
    CHECK(allow(p, &ops, ACCESS_VERB_WRITE, "/anything", NULL));
    CHECK(allow(p, &ops, ACCESS_VERB_WRITE, "", "\0"));
    CHECK(!allow(p, &ops, ACCESS_VERB_READ, "/anything", NULL));
    CHECK(access_policy_check(p, &ops, ACCESS_VERB_ADMIN, NULL, 0, NULL, 0));
    access_policy_unref(p);
}

static void test_ranges(void)
{
    access_policy *p = load();
    if (!p)
        return;
    access_identity api = cn("kube-apiserver"), ops = cn("ops-x");
    /* --prefix /registry/ -> [/registry/, /registry0) */
    CHECK(allow(p, &api, ACCESS_VERB_READ, "/registry/", "/registry0"));
    CHECK(allow(p, &api, ACCESS_VERB_READ, "/registry/pods/", "/registry/pods0"));
    CHECK(allow(p, &api, ACCESS_VERB_READ, "/registry/a", "/registry/b"));
    /* one byte past the prefix end */
    CHECK(!allow(p, &api, ACCESS_VERB_READ, "/registry/", "/registry0\x01"));
    CHECK(!allow(p, &api, ACCESS_VERB_READ, "/registry/", "/registry1"));
    /* --prefix /reg covers more than /registry/ */
    CHECK(!allow(p, &api, ACCESS_VERB_READ, "/reg", "/reh"));
    /* --from-key: to the end of the keyspace leaves any bounded prefix */
    CHECK(!access_policy_check(p, &api, ACCESS_VERB_READ, (const uint8_t *)"/registry/x", 11,
                               (const uint8_t *)"\0", 1));
    CHECK(access_policy_check(p, &ops, ACCESS_VERB_WRITE, (const uint8_t *)"/registry/x", 11,
                              (const uint8_t *)"\0", 1));
    /* whole keyspace (etcdctl get "" --prefix sends key "\0", range_end "\0") */
    CHECK(access_policy_check(p, &ops, ACCESS_VERB_WRITE, (const uint8_t *)"\0", 1,
                              (const uint8_t *)"\0", 1));
    CHECK(!access_policy_check(p, &api, ACCESS_VERB_READ, (const uint8_t *)"\0", 1,
                               (const uint8_t *)"\0", 1));
    /* start below the prefix */
    CHECK(!allow(p, &api, ACCESS_VERB_READ, "/a", "/registry/b"));
    /* an empty interval still needs its start key inside */
    CHECK(allow(p, &api, ACCESS_VERB_READ, "/registry/b", "/registry/a"));
    access_policy_unref(p);

    /* a prefix of 0xff bytes has no end: --from-key inside it is allowed */
    static const char ff_policy[] = "apiVersion: etcdseal.io/v1\nkind: AccessPolicy\nrules:\n"
                                    "- subjects: [\"CN=a\"]\n  verbs: [read]\n"
                                    "  keyPrefixes: [\"\\xff\"]\n";
    es_error err = {0};
    access_policy *q = NULL;
    CHECK_MSG(access_policy_load_buffer("ff.yaml", ff_policy, sizeof ff_policy - 1, &q, &err) == 0,
              "%s", err.msg);
    /* libyaml reads "\xff" as U+00FF, i.e. UTF-8 c3 bf: the prefix is those two bytes */
    access_identity a = cn("a");
    const uint8_t key[] = {0xc3, 0xbf, 'k'};
    CHECK(access_policy_check(q, &a, ACCESS_VERB_READ, key, 3, (const uint8_t *)"\xc3\xc0", 2));
    CHECK(!access_policy_check(q, &a, ACCESS_VERB_READ, key, 3, (const uint8_t *)"\0", 1));
    access_policy_unref(q);
}

static void expect_load_error(const char *yaml, const char *needle)
{
    es_error err = {0};
    access_policy *p = NULL;
    int rc = access_policy_load_buffer("bad.yaml", yaml, strlen(yaml), &p, &err);
    CHECK_MSG(rc != 0, "accepted: %s", yaml);
    CHECK_MSG(strstr(err.msg, needle) != NULL, "error \"%s\" lacks \"%s\"", err.msg, needle);
    CHECK_MSG(strstr(err.msg, "bad.yaml") != NULL, "error \"%s\" lacks the file name", err.msg);
    access_policy_unref(p);
}

#define HDR "apiVersion: etcdseal.io/v1\nkind: AccessPolicy\n"

static void test_loader_errors(void)
{
    expect_load_error("", "empty document");
    expect_load_error("kind: AccessPolicy\n", "apiVersion: missing");
    expect_load_error("apiVersion: v2\nkind: AccessPolicy\n", "must be \"etcdseal.io/v1\"");
    expect_load_error("apiVersion: etcdseal.io/v1\nkind: Other\n", "kind");
    expect_load_error(HDR "rule: []\n", "bad.yaml:3: unknown field \"rule\"");
    expect_load_error(HDR "rules: {}\n", "rules: expected a list");
    expect_load_error(HDR "rules:\n- subjects: []\n  verbs: [read]\n  keyPrefixes: [/]\n",
                      "rules[0].subjects: at least one subject");
    expect_load_error(HDR "rules:\n- subjects: [\"bob\"]\n  verbs: [read]\n  keyPrefixes: [/]\n",
                      "bad.yaml:4: rules[0].subjects[0]: subject \"bob\" must be");
    expect_load_error(HDR "rules:\n- subjects: [\"CN=\"]\n  verbs: [read]\n  keyPrefixes: [/]\n",
                      "empty pattern");
    expect_load_error(HDR "rules:\n- subjects: [\"CN=a\"]\n  verbs: [reed]\n  keyPrefixes: [/]\n",
                      "rules[0].verbs[0]: unknown verb \"reed\"");
    expect_load_error(HDR "rules:\n- subjects: [\"CN=a\"]\n  verbs: [read, read]\n"
                          "  keyPrefixes: [/]\n",
                      "listed twice");
    expect_load_error(HDR "rules:\n- subjects: [\"CN=a\"]\n  verbs: [read]\n",
                      "read and write need at least one key prefix");
    expect_load_error(HDR "rules:\n- subjects: [\"CN=a\"]\n  verbs: [lease]\n  keyPrefixes: [/]\n",
                      "only apply to read and write");
    expect_load_error(HDR "rules:\n- subjects: [\"CN=a\"]\n  verbs: [yes]\n", "boolean yes");
    expect_load_error(HDR "rules:\n- subjects: [\"CN=a\"]\n  verbs: [admin]\n  etcdUser: x\n",
                      "etcdUser and etcdPasswordFile go together");
    expect_load_error(HDR "rules:\n- subjects: [\"CN=a\"]\n  verbs: [admin]\n  etcdUser: x\n"
                          "  etcdPasswordFile: /nonexistent/pw\n",
                      "cannot open /nonexistent/pw");
    expect_load_error(HDR "rules:\n- subjects: [\"CN=a\"]\n  verbs: [admin]\n  extra: 1\n",
                      "bad.yaml:6: rules[0]: unknown field \"extra\"");
    expect_load_error(HDR "rules:\n- subjects: [\"CN=a\"]\n  subjects: [\"CN=b\"]\n",
                      "duplicate field \"subjects\"");
    expect_load_error(HDR "rules: &a []\nx: *a\n", "aliases are not supported");
    expect_load_error(HDR "rules: [\n", "invalid YAML");
    expect_load_error(HDR "---\n" HDR, "more than one YAML document");
}

static void test_password_file(void)
{
    char dir[] = "/tmp/es-ap-XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0);
        return;
    }
    char pw[64], yaml[512];
    snprintf(pw, sizeof pw, "%s/pw", dir);
    FILE *f = fopen(pw, "w");
    CHECK(f != NULL);
    if (!f)
        return;
    fputs("s3cret\n", f);
    fclose(f);
    chmod(pw, 0644);
    snprintf(yaml, sizeof yaml,
             HDR "rules:\n- subjects: [\"CN=a\"]\n  verbs: [admin]\n  etcdUser: alice\n"
                 "  etcdPasswordFile: %s\n",
             pw);
    expect_load_error(yaml, "readable by group or others");
    chmod(pw, 0600);
    es_error err = {0};
    access_policy *p = NULL;
    CHECK_MSG(access_policy_load_buffer("pw.yaml", yaml, strlen(yaml), &p, &err) == 0, "%s",
              err.msg);
    access_identity a = cn("a"), b = cn("b");
    access_etcd_user u;
    CHECK(access_policy_etcd_user(p, &a, &u));
    if (p && access_policy_etcd_user(p, &a, &u)) {
        CHECK_EQ_STR(u.name, "alice");
        CHECK_EQ_MEM(u.password->bytes, u.password->len, "s3cret", 6);
    }
    CHECK(!access_policy_etcd_user(p, &b, &u));
    access_policy_unref(p);
    unlink(pw);
    rmdir(dir);
}

/* conf/examples/access-policy.yaml loads (its password file path pointed at a temp file) */
static void test_example_file(void)
{
    FILE *f = fopen("conf/examples/access-policy.yaml", "r");
    CHECK(f != NULL);
    if (!f)
        return;
    static char text[16384], out[17000];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    char pw[] = "/tmp/es-ap-pw-XXXXXX";
    int fd = mkstemp(pw);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    CHECK(write(fd, "pw\n", 3) == 3);
    close(fd);
    const char *old = "/etc/etcdseal/etcd-ops.password";
    char *at = strstr(text, old);
    CHECK(at != NULL);
    if (at) {
        snprintf(out, sizeof out, "%.*s%s%s", (int)(at - text), text, pw, at + strlen(old));
        es_error err = {0};
        access_policy *p = NULL;
        CHECK_MSG(access_policy_load_buffer("example", out, strlen(out), &p, &err) == 0, "%s",
                  err.msg);
        CHECK_EQ_INT(access_policy_rule_count(p), 5);
        access_identity api = cn("kube-apiserver"), ops = cn("ops-eve");
        CHECK(allow(p, &api, ACCESS_VERB_WRITE, "/registry/secrets/a", NULL));
        CHECK(allow(p, &ops, ACCESS_VERB_WRITE, "", "\0"));
        access_policy_unref(p);
    }
    unlink(pw);
}

/* ---------------------------------------------------------------- access_check on messages */

/* in place: the struct's pointers point into itself */
static void pi_cn(peer_identity *pi, const char *name)
{
    memset(pi, 0, sizeof *pi);
    pi->computed = pi->has_cert = true;
    snprintf(pi->text, sizeof pi->text, "%s", name);
    pi->cn = pi->text;
    snprintf(pi->shown, sizeof pi->shown, "CN=%s", name);
}

static int check_msg(const access_policy *p, const peer_identity *pi, const char *path,
                     const ProtobufCMessage *m, es_error *err)
{
    const method_desc *md = method_lookup(path, strlen(path));
    CHECK(md != NULL);
    if (!md)
        return -2;
    CHECK_EQ_INT(access_method_class(md), ACCESS_CALL_KEYS);
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len + 1);
    protobuf_c_message_pack(m, buf);
    memset(err, 0, sizeof *err);
    int rc = access_check_message(p, pi, md, buf, len, err);
    free(buf);
    return rc;
}

#define BIN(s) ((ProtobufCBinaryData){strlen(s), (uint8_t *)(s)})

static void test_txn_messages(void)
{
    access_policy *p = load();
    if (!p)
        return;
    peer_identity api;
    pi_cn(&api, "kube-apiserver");
    es_error err;

    Etcdserverpb__PutRequest put_ok = ETCDSERVERPB__PUT_REQUEST__INIT;
    put_ok.key = BIN("/registry/a");
    Etcdserverpb__PutRequest put_bad = ETCDSERVERPB__PUT_REQUEST__INIT;
    put_bad.key = BIN("/secret/x");
    CHECK_EQ_INT(check_msg(p, &api, "/etcdserverpb.KV/Put", &put_ok.base, &err), 0);
    CHECK_EQ_INT(check_msg(p, &api, "/etcdserverpb.KV/Put", &put_bad.base, &err), -1);
    CHECK_EQ_INT(err.code, GRPC_PERMISSION_DENIED);
    CHECK_EQ_STR(err.msg, "etcdseal: access denied: identity \"CN=kube-apiserver\" may not write "
                          "\"/secret/x\"");

    /* Txn: the denied key only in the failure branch of a nested Txn */
    Etcdserverpb__RequestOp op_ok = ETCDSERVERPB__REQUEST_OP__INIT;
    op_ok.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    op_ok.request_put = &put_ok;
    Etcdserverpb__RequestOp op_bad = ETCDSERVERPB__REQUEST_OP__INIT;
    op_bad.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    op_bad.request_put = &put_bad;
    Etcdserverpb__RequestOp *inner_success[] = {&op_ok}, *inner_failure[] = {&op_bad};
    Etcdserverpb__TxnRequest inner = ETCDSERVERPB__TXN_REQUEST__INIT;
    inner.n_success = 1;
    inner.success = inner_success;
    inner.n_failure = 1;
    inner.failure = inner_failure;
    Etcdserverpb__RequestOp op_txn = ETCDSERVERPB__REQUEST_OP__INIT;
    op_txn.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN;
    op_txn.request_txn = &inner;
    Etcdserverpb__RequestOp *outer_success[] = {&op_ok, &op_txn};
    Etcdserverpb__TxnRequest outer = ETCDSERVERPB__TXN_REQUEST__INIT;
    outer.n_success = 2;
    outer.success = outer_success;
    CHECK_EQ_INT(check_msg(p, &api, "/etcdserverpb.KV/Txn", &outer.base, &err), -1);
    CHECK(strstr(err.msg, "\"/secret/x\"") != NULL);
    inner.n_failure = 0;
    CHECK_EQ_INT(check_msg(p, &api, "/etcdserverpb.KV/Txn", &outer.base, &err), 0);

    /* compare on a key outside: read needed */
    Etcdserverpb__Compare cmp = ETCDSERVERPB__COMPARE__INIT;
    cmp.key = BIN("/other");
    Etcdserverpb__Compare *cmps[] = {&cmp};
    outer.n_compare = 1;
    outer.compare = cmps;
    CHECK_EQ_INT(check_msg(p, &api, "/etcdserverpb.KV/Txn", &outer.base, &err), -1);
    CHECK(strstr(err.msg, "may not read \"/other\"") != NULL);
    outer.n_compare = 0;

    /* DeleteRange with prev_kv: ops may write everywhere but not read */
    peer_identity ops;
    pi_cn(&ops, "ops-1");
    Etcdserverpb__DeleteRangeRequest del = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    del.key = BIN("/a");
    del.range_end = BIN("/b");
    CHECK_EQ_INT(check_msg(p, &ops, "/etcdserverpb.KV/DeleteRange", &del.base, &err), 0);
    del.prev_kv = 1;
    CHECK_EQ_INT(check_msg(p, &ops, "/etcdserverpb.KV/DeleteRange", &del.base, &err), -1);
    CHECK(strstr(err.msg, "may not read \"/a\" (range to \"/b\")") != NULL);

    /* Compact: write on the whole keyspace */
    Etcdserverpb__CompactionRequest comp = ETCDSERVERPB__COMPACTION_REQUEST__INIT;
    comp.revision = 5;
    CHECK_EQ_INT(check_msg(p, &ops, "/etcdserverpb.KV/Compact", &comp.base, &err), 0);
    CHECK_EQ_INT(check_msg(p, &api, "/etcdserverpb.KV/Compact", &comp.base, &err), -1);
    CHECK(strstr(err.msg, "(end of keyspace)") != NULL);

    /* Watch: creates checked, cancels pass */
    Etcdserverpb__WatchCreateRequest wc = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    wc.key = BIN("/registry/");
    wc.range_end = BIN("/registry0");
    Etcdserverpb__WatchRequest wr = ETCDSERVERPB__WATCH_REQUEST__INIT;
    wr.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    wr.create_request = &wc;
    CHECK_EQ_INT(check_msg(p, &api, "/etcdserverpb.Watch/Watch", &wr.base, &err), 0);
    wc.range_end = BIN("/s");
    CHECK_EQ_INT(check_msg(p, &api, "/etcdserverpb.Watch/Watch", &wr.base, &err), -1);
    Etcdserverpb__WatchCancelRequest wcan = ETCDSERVERPB__WATCH_CANCEL_REQUEST__INIT;
    Etcdserverpb__WatchRequest wr2 = ETCDSERVERPB__WATCH_REQUEST__INIT;
    wr2.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CANCEL_REQUEST;
    wr2.cancel_request = &wcan;
    CHECK_EQ_INT(check_msg(p, &api, "/etcdserverpb.Watch/Watch", &wr2.base, &err), 0);

    /* binary keys are escaped in the message */
    Etcdserverpb__RangeRequest rr = ETCDSERVERPB__RANGE_REQUEST__INIT;
    static uint8_t bin[] = {'/', 0x00, 0xff, '"'};
    rr.key = (ProtobufCBinaryData){sizeof bin, bin};
    CHECK_EQ_INT(check_msg(p, &api, "/etcdserverpb.KV/Range", &rr.base, &err), -1);
    CHECK(strstr(err.msg, "\"/\\x00\\xff\\\"\"") != NULL);

    /* malformed bytes: INVALID_ARGUMENT, not a verdict */
    const method_desc *md = method_lookup("/etcdserverpb.KV/Txn", 20);
    static const uint8_t junk[] = {0x12, 0x7f, 0x01};
    CHECK_EQ_INT(access_check_message(p, &api, md, junk, sizeof junk, &err), -1);
    CHECK_EQ_INT(err.code, GRPC_INVALID_ARGUMENT);
    access_policy_unref(p);
}

static void test_deep_txn_refused(void)
{
    access_policy *p = load();
    if (!p)
        return;
    peer_identity api;
    pi_cn(&api, "kube-apiserver");
    /* 200 nested Txn levels, built on the wire: op{txn{success: op{txn{...}}}} */
    size_t cap = 4096, len = 0;
    uint8_t *buf = calloc(1, cap), *tmp = calloc(1, cap);
    for (int level = 0; level < 200; level++) {
        /* wrap buf (a TxnRequest) as RequestOp.request_txn (field 4), then as success (field 2) */
        size_t n = 0;
        tmp[n++] = 0x22;
        tmp[n++] = (uint8_t)(len | 0x80), tmp[n++] = (uint8_t)(len >> 7);
        memcpy(tmp + n, buf, len);
        n += len;
        size_t m = 0;
        buf[m++] = 0x12;
        buf[m++] = (uint8_t)(n | 0x80), buf[m++] = (uint8_t)(n >> 7);
        memcpy(buf + m, tmp, n);
        len = m + n;
        if (len + 8 > cap)
            break;
    }
    const method_desc *md = method_lookup("/etcdserverpb.KV/Txn", 20);
    es_error err = {0};
    CHECK_EQ_INT(access_check_message(p, &api, md, buf, len, &err), -1);
    CHECK_EQ_INT(err.code, GRPC_INVALID_ARGUMENT);
    free(buf);
    free(tmp);
    access_policy_unref(p);
}

static void test_method_classes(void)
{
    access_policy *p = load();
    if (!p)
        return;
    peer_identity api, ops, nobody;
    pi_cn(&api, "kube-apiserver");
    pi_cn(&ops, "ops-2");
    pi_cn(&nobody, "x");
    es_error err;
    const method_desc *lease = method_lookup("/etcdserverpb.Lease/LeaseGrant", 30);
    const method_desc *members = method_lookup("/etcdserverpb.Cluster/MemberList", 32);
    const method_desc *authn = method_lookup("/etcdserverpb.Auth/Authenticate", 31);
    const method_desc *health = method_lookup("/grpc.health.v1.Health/Check", 28);
    CHECK(lease && members && authn && health);
    if (!lease || !members || !authn || !health)
        return;
    CHECK_EQ_INT(access_method_class(health), ACCESS_CALL_FREE);
    CHECK_EQ_INT(access_check_method(p, &api, lease, &err), 0);
    CHECK_EQ_INT(access_check_method(p, &ops, lease, &err), -1);
    CHECK_EQ_INT(access_check_method(p, &api, members, &err), -1);
    CHECK(strstr(err.msg, "may not call /etcdserverpb.Cluster/MemberList (needs admin)") != NULL);
    CHECK_EQ_INT(access_check_method(p, &ops, members, &err), 0);
    CHECK_EQ_INT(access_check_method(p, &api, authn, &err), 0);
    CHECK_EQ_INT(access_check_method(p, &nobody, authn, &err), -1);
    access_policy_unref(p);
}

static void test_watch_denied_response(void)
{
    buf_t out = BUF_INIT;
    CHECK_EQ_INT(access_watch_denied_response("etcdseal: access denied: x", &out), 0);
    Etcdserverpb__WatchResponse *r = etcdserverpb__watch_response__unpack(NULL, out.len, out.data);
    CHECK(r != NULL);
    if (r) {
        CHECK(r->header != NULL);
        CHECK(r->created && r->canceled);
        CHECK_EQ_INT(r->watch_id, -1);
        CHECK_EQ_STR(r->cancel_reason, "etcdseal: access denied: x");
        etcdserverpb__watch_response__free_unpacked(r, NULL);
    }
    buf_free(&out);
}

static void test_peer_identity_anonymous(void)
{
    peer_identity pi;
    peer_identity_compute(&pi, NULL);
    CHECK(pi.computed && !pi.has_cert);
    CHECK_EQ_STR(pi.shown, "anonymous");
}

int main(int argc, char **argv)
{
    (void)argc;
    TEST_BEGIN(argv[0]);
    secret_init();
    RUN(test_glob);
    RUN(test_prefix_end);
    RUN(test_matrix);
    RUN(test_ranges);
    RUN(test_loader_errors);
    RUN(test_password_file);
    RUN(test_example_file);
    RUN(test_txn_messages);
    RUN(test_deep_txn_refused);
    RUN(test_method_classes);
    RUN(test_watch_denied_response);
    RUN(test_peer_identity_anonymous);
    return TEST_EXIT();
}
