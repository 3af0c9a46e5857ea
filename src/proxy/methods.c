/* methods.c - the static method table (see methods.h).
 *
 * Rows are kept sorted by path in byte order so method_lookup can binary-search them; the
 * unit test proxy_methods_test checks the order, the dense indexes and that every etcd method
 * is present. Streaming flags follow the etcd and grpc-health .proto service definitions.
 */
#include "proxy/methods.h"

#include <string.h>

#include "proxy/intercept_cluster.h"
#include "proxy/intercept_election.h"
#include "proxy/intercept_kv.h"
#include "proxy/intercept_range_sort.h"
#include "proxy/intercept_watch.h"

#define M(i, svc, meth, cs, ss, req, resp)                                                         \
    {                                                                                              \
        "/" svc "/" meth, svc, meth, cs, ss, req, resp, NULL, i, true                              \
    }

static const method_desc methods[] = {
    M(0, "etcdserverpb.Auth", "AuthDisable", false, false, NULL, NULL),
    M(1, "etcdserverpb.Auth", "AuthEnable", false, false, NULL, NULL),
    M(2, "etcdserverpb.Auth", "AuthStatus", false, false, NULL, NULL),
    M(3, "etcdserverpb.Auth", "Authenticate", false, false, NULL, NULL),
    M(4, "etcdserverpb.Auth", "RoleAdd", false, false, NULL, NULL),
    M(5, "etcdserverpb.Auth", "RoleDelete", false, false, NULL, NULL),
    M(6, "etcdserverpb.Auth", "RoleGet", false, false, NULL, NULL),
    M(7, "etcdserverpb.Auth", "RoleGrantPermission", false, false, NULL, NULL),
    M(8, "etcdserverpb.Auth", "RoleList", false, false, NULL, NULL),
    M(9, "etcdserverpb.Auth", "RoleRevokePermission", false, false, NULL, NULL),
    M(10, "etcdserverpb.Auth", "UserAdd", false, false, NULL, NULL),
    M(11, "etcdserverpb.Auth", "UserChangePassword", false, false, NULL, NULL),
    M(12, "etcdserverpb.Auth", "UserDelete", false, false, NULL, NULL),
    M(13, "etcdserverpb.Auth", "UserGet", false, false, NULL, NULL),
    M(14, "etcdserverpb.Auth", "UserGrantRole", false, false, NULL, NULL),
    M(15, "etcdserverpb.Auth", "UserList", false, false, NULL, NULL),
    M(16, "etcdserverpb.Auth", "UserRevokeRole", false, false, NULL, NULL),
    M(17, "etcdserverpb.Cluster", "MemberAdd", false, false, NULL, NULL),
    /* MemberList answers are rewritten for --advertise-client-url, policy or not */
    {"/etcdserverpb.Cluster/MemberList", "etcdserverpb.Cluster", "MemberList", false, false, NULL,
     intercept_cluster_member_list_response, NULL, 18, false},
    M(19, "etcdserverpb.Cluster", "MemberPromote", false, false, NULL, NULL),
    M(20, "etcdserverpb.Cluster", "MemberRemove", false, false, NULL, NULL),
    M(21, "etcdserverpb.Cluster", "MemberUpdate", false, false, NULL, NULL),
    M(22, "etcdserverpb.KV", "Compact", false, false, NULL, NULL),
    M(23, "etcdserverpb.KV", "DeleteRange", false, false, NULL, intercept_kv_delete_range_response),
    M(24, "etcdserverpb.KV", "Put", false, false, intercept_kv_put_request,
      intercept_kv_put_response),
    {"/etcdserverpb.KV/Range", "etcdserverpb.KV", "Range", false, false, intercept_kv_range_request,
     intercept_kv_range_response, range_sort_state_free, 25, true},
    M(26, "etcdserverpb.KV", "Txn", false, false, intercept_kv_txn_request,
      intercept_kv_txn_response),
    M(27, "etcdserverpb.Lease", "LeaseGrant", false, false, NULL, NULL),
    M(28, "etcdserverpb.Lease", "LeaseKeepAlive", true, true, NULL, NULL),
    M(29, "etcdserverpb.Lease", "LeaseLeases", false, false, NULL, NULL),
    M(30, "etcdserverpb.Lease", "LeaseRevoke", false, false, NULL, NULL),
    M(31, "etcdserverpb.Lease", "LeaseTimeToLive", false, false, NULL, NULL),
    M(32, "etcdserverpb.Maintenance", "Alarm", false, false, NULL, NULL),
    M(33, "etcdserverpb.Maintenance", "Defragment", false, false, NULL, NULL),
    M(34, "etcdserverpb.Maintenance", "Downgrade", false, false, NULL, NULL),
    M(35, "etcdserverpb.Maintenance", "Hash", false, false, NULL, NULL),
    M(36, "etcdserverpb.Maintenance", "HashKV", false, false, NULL, NULL),
    M(37, "etcdserverpb.Maintenance", "MoveLeader", false, false, NULL, NULL),
    M(38, "etcdserverpb.Maintenance", "Snapshot", false, true, NULL, NULL),
    M(39, "etcdserverpb.Maintenance", "Status", false, false, NULL, NULL),
    M(40, "etcdserverpb.Watch", "Watch", true, true, NULL, intercept_watch_response),
    M(41, "grpc.health.v1.Health", "Check", false, false, NULL, NULL),
    M(42, "grpc.health.v1.Health", "Watch", false, true, NULL, NULL),
    M(43, "v3electionpb.Election", "Campaign", false, false, intercept_election_campaign_request,
      NULL),
    M(44, "v3electionpb.Election", "Leader", false, false, NULL,
      intercept_election_leader_response),
    M(45, "v3electionpb.Election", "Observe", false, true, NULL,
      intercept_election_observe_response),
    M(46, "v3electionpb.Election", "Proclaim", false, false, intercept_election_proclaim_request,
      NULL),
    M(47, "v3electionpb.Election", "Resign", false, false, NULL, NULL),
    M(48, "v3lockpb.Lock", "Lock", false, false, NULL, NULL),
    M(49, "v3lockpb.Lock", "Unlock", false, false, NULL, NULL),
};

#define N_METHODS (sizeof(methods) / sizeof(methods[0]))

size_t method_count(void)
{
    return N_METHODS;
}

const method_desc *method_at(size_t i)
{
    return i < N_METHODS ? &methods[i] : NULL;
}

/* Byte-order comparison of a (path, len) against a NUL-terminated table path, without strlen. */
static int path_cmp(const char *path, size_t len, const char *entry)
{
    for (size_t i = 0; i < len; i++) {
        if (entry[i] == '\0')
            return 1; /* the entry is a proper prefix of path */
        int d = (unsigned char)path[i] - (unsigned char)entry[i];
        if (d)
            return d;
    }
    return entry[len] == '\0' ? 0 : -1;
}

const method_desc *method_lookup(const char *path, size_t path_len)
{
    if (!path)
        return NULL;
    size_t lo = 0, hi = N_METHODS;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = path_cmp(path, path_len, methods[mid].path);
        if (c == 0)
            return &methods[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}
