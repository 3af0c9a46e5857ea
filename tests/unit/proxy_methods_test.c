/* proxy_methods_test.c - the method table: every etcd/election/lock/health method present with
 * the right streaming flags and transformers, unknown paths refused, indexes dense, sorted. */
#include <stdbool.h>
#include <stdlib.h>

#include "proxy/intercept_cluster.h"
#include "proxy/intercept_election.h"
#include "proxy/intercept_kv.h"
#include "proxy/intercept_watch.h"
#include "proxy/methods.h"
#include "proxy/intercept_range_sort.h"
#include "testlib.h"

typedef struct expect {
    const char *service, *name;
    bool cs, ss;
    transform_fn req, resp;
} expect;

/* Written from etcd's rpc.proto, v3election.proto, v3lock.proto and grpc's health.proto service
 * blocks, in their order (independent of the table's sorted order). */
static const expect want[] = {
    {"etcdserverpb.KV", "Range", 0, 0, intercept_kv_range_request, intercept_kv_range_response},
    {"etcdserverpb.KV", "Put", 0, 0, intercept_kv_put_request, intercept_kv_put_response},
    {"etcdserverpb.KV", "DeleteRange", 0, 0, NULL, intercept_kv_delete_range_response},
    {"etcdserverpb.KV", "Txn", 0, 0, intercept_kv_txn_request, intercept_kv_txn_response},
    {"etcdserverpb.KV", "Compact", 0, 0, NULL, NULL},
    {"etcdserverpb.Watch", "Watch", 1, 1, NULL, intercept_watch_response},
    {"etcdserverpb.Lease", "LeaseGrant", 0, 0, NULL, NULL},
    {"etcdserverpb.Lease", "LeaseRevoke", 0, 0, NULL, NULL},
    {"etcdserverpb.Lease", "LeaseKeepAlive", 1, 1, NULL, NULL},
    {"etcdserverpb.Lease", "LeaseTimeToLive", 0, 0, NULL, NULL},
    {"etcdserverpb.Lease", "LeaseLeases", 0, 0, NULL, NULL},
    {"etcdserverpb.Cluster", "MemberAdd", 0, 0, NULL, NULL},
    {"etcdserverpb.Cluster", "MemberRemove", 0, 0, NULL, NULL},
    {"etcdserverpb.Cluster", "MemberUpdate", 0, 0, NULL, NULL},
    {"etcdserverpb.Cluster", "MemberList", 0, 0, NULL, intercept_cluster_member_list_response},
    {"etcdserverpb.Cluster", "MemberPromote", 0, 0, NULL, NULL},
    {"etcdserverpb.Maintenance", "Alarm", 0, 0, NULL, NULL},
    {"etcdserverpb.Maintenance", "Status", 0, 0, NULL, NULL},
    {"etcdserverpb.Maintenance", "Defragment", 0, 0, NULL, NULL},
    {"etcdserverpb.Maintenance", "Hash", 0, 0, NULL, NULL},
    {"etcdserverpb.Maintenance", "HashKV", 0, 0, NULL, NULL},
    {"etcdserverpb.Maintenance", "Snapshot", 0, 1, NULL, NULL},
    {"etcdserverpb.Maintenance", "MoveLeader", 0, 0, NULL, NULL},
    {"etcdserverpb.Maintenance", "Downgrade", 0, 0, NULL, NULL},
    {"etcdserverpb.Auth", "AuthEnable", 0, 0, NULL, NULL},
    {"etcdserverpb.Auth", "AuthDisable", 0, 0, NULL, NULL},
    {"etcdserverpb.Auth", "AuthStatus", 0, 0, NULL, NULL},
    {"etcdserverpb.Auth", "Authenticate", 0, 0, NULL, NULL},
    {"etcdserverpb.Auth", "UserAdd", 0, 0, NULL, NULL},
    {"etcdserverpb.Auth", "UserGet", 0, 0, NULL, NULL},
    {"etcdserverpb.Auth", "UserList", 0, 0, NULL, NULL},
    {"etcdserverpb.Auth", "UserDelete", 0, 0, NULL, NULL},
    {"etcdserverpb.Auth", "UserChangePassword", 0, 0, NULL, NULL},
    {"etcdserverpb.Auth", "UserGrantRole", 0, 0, NULL, NULL},
    {"etcdserverpb.Auth", "UserRevokeRole", 0, 0, NULL, NULL},
    {"etcdserverpb.Auth", "RoleAdd", 0, 0, NULL, NULL},
    {"etcdserverpb.Auth", "RoleGet", 0, 0, NULL, NULL},
    {"etcdserverpb.Auth", "RoleList", 0, 0, NULL, NULL},
    {"etcdserverpb.Auth", "RoleDelete", 0, 0, NULL, NULL},
    {"etcdserverpb.Auth", "RoleGrantPermission", 0, 0, NULL, NULL},
    {"etcdserverpb.Auth", "RoleRevokePermission", 0, 0, NULL, NULL},
    {"v3electionpb.Election", "Campaign", 0, 0, intercept_election_campaign_request, NULL},
    {"v3electionpb.Election", "Proclaim", 0, 0, intercept_election_proclaim_request, NULL},
    {"v3electionpb.Election", "Leader", 0, 0, NULL, intercept_election_leader_response},
    {"v3electionpb.Election", "Observe", 0, 1, NULL, intercept_election_observe_response},
    {"v3electionpb.Election", "Resign", 0, 0, NULL, NULL},
    {"v3lockpb.Lock", "Lock", 0, 0, NULL, NULL},
    {"v3lockpb.Lock", "Unlock", 0, 0, NULL, NULL},
    {"grpc.health.v1.Health", "Check", 0, 0, NULL, NULL},
    {"grpc.health.v1.Health", "Watch", 0, 1, NULL, NULL},
};
#define N_WANT (sizeof(want) / sizeof(want[0]))

static void test_every_method_present(void)
{
    CHECK_EQ_INT(method_count(), N_WANT);
    for (size_t i = 0; i < N_WANT; i++) {
        char path[128];
        int n = snprintf(path, sizeof(path), "/%s/%s", want[i].service, want[i].name);
        const method_desc *m = method_lookup(path, (size_t)n);
        CHECK_MSG(m != NULL, "missing %s", path);
        if (!m)
            continue;
        CHECK_EQ_STR(m->path, path);
        CHECK_EQ_STR(m->service, want[i].service);
        CHECK_EQ_STR(m->name, want[i].name);
        CHECK_MSG(m->client_streaming == want[i].cs && m->server_streaming == want[i].ss,
                  "streaming flags of %s", path);
        CHECK_MSG(m->request_transform == want[i].req, "request transform of %s", path);
        CHECK_MSG(m->response_transform == want[i].resp, "response transform of %s", path);
        /* only Range carries request facts (the VALUE sort plan) to its response */
        if (strcmp(m->path, "/etcdserverpb.KV/Range") == 0)
            CHECK(m->free_state == range_sort_state_free);
        else
            CHECK(m->free_state == NULL);
        CHECK(method_at(m->index) == m);
    }
}

static void test_indexes_dense_and_sorted(void)
{
    size_t n = method_count();
    bool *seen = calloc(n, sizeof(bool));
    for (size_t i = 0; i < n; i++) {
        const method_desc *m = method_at(i);
        CHECK(m != NULL);
        if (!m)
            continue;
        CHECK_EQ_INT(m->index, i);
        CHECK(m->index < n && !seen[m->index]);
        if (m->index < n)
            seen[m->index] = true;
        if (i > 0)
            CHECK_MSG(strcmp(method_at(i - 1)->path, m->path) < 0, "order at %zu", i);
        /* path == "/" service "/" name */
        char path[128];
        snprintf(path, sizeof(path), "/%s/%s", m->service, m->name);
        CHECK_EQ_STR(m->path, path);
        CHECK(method_lookup(m->path, strlen(m->path)) == m);
    }
    CHECK(method_at(n) == NULL);
    CHECK(method_at((size_t)-1) == NULL);
    free(seen);
}

static void test_unknown_paths(void)
{
    static const char *const unknown[] = {
        "",
        "/",
        "/etcdserverpb.KV/RangeStream", /* etcd 3.7: returns values, must not pass unexamined */
        "/etcdserverpb.KV/Pu",
        "/etcdserverpb.KV/Putx",
        "/etcdserverpb.KV/put",
        "etcdserverpb.KV/Put",
        "/etcdserverpb.KV/",
        "/etcdserverpb.KV",
        "/etcdserverpb.Lease/LeaseCheckpoint",
        "/v3lockpb.Lock/Lock/",
        "/zzz/zzz",
        "/AAA/AAA",
    };
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++)
        CHECK_MSG(method_lookup(unknown[i], strlen(unknown[i])) == NULL, "found %s", unknown[i]);
    CHECK(method_lookup(NULL, 0) == NULL);
    /* an embedded NUL does not end the comparison early */
    static const char nul[] = "/etcdserverpb.KV/Put\0x";
    CHECK(method_lookup(nul, sizeof(nul) - 1) == NULL);
}

static void test_lookup_not_nul_terminated(void)
{
    /* the relay passes :path straight from nghttp2's header buffer */
    char buf[64];
    memcpy(buf, "/etcdserverpb.KV/TxnXXXXXXX", 27);
    const method_desc *m = method_lookup(buf, strlen("/etcdserverpb.KV/Txn"));
    CHECK(m != NULL && strcmp(m->name, "Txn") == 0);
    m = method_lookup(buf, strlen("/etcdserverpb.KV/Tx"));
    CHECK(m == NULL);
    memcpy(buf, "/etcdserverpb.Watch/WatchWatch", 30);
    m = method_lookup(buf, strlen("/etcdserverpb.Watch/Watch"));
    CHECK(m != NULL && m->client_streaming && m->server_streaming);
}

static void test_health_watch_vs_etcd_watch(void)
{
    const method_desc *h = method_lookup("/grpc.health.v1.Health/Watch", 28);
    const method_desc *w = method_lookup("/etcdserverpb.Watch/Watch", 25);
    CHECK(h && w && h != w);
    if (h && w) {
        CHECK(h->response_transform == NULL);
        CHECK(w->response_transform == intercept_watch_response);
        CHECK(!h->client_streaming && h->server_streaming);
    }
}

int main(int argc, char **argv)
{
    (void)argc;
    TEST_BEGIN(argv[0]);
    RUN(test_every_method_present);
    RUN(test_indexes_dense_and_sorted);
    RUN(test_unknown_paths);
    RUN(test_lookup_not_nul_terminated);
    RUN(test_health_watch_vs_etcd_watch);
    return TEST_EXIT();
}
