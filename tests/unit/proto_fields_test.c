/* proto_fields_test.c - the compiled .proto descriptors carry etcd's exact names, field numbers
 * and types (the wire contract), checked against the table in shared/research/etcd-api.md and
 * etcd's rpc.proto / kv.proto / v3election.proto / v3lock.proto. */
#include "authpb/auth.pb-c.h"
#include "etcdserverpb/rpc.pb-c.h"
#include "mvccpb/kv.pb-c.h"
#include "testlib.h"
#include "v3electionpb/v3election.pb-c.h"
#include "v3lockpb/v3lock.pb-c.h"

#define B PROTOBUF_C_TYPE_BYTES
#define S PROTOBUF_C_TYPE_STRING
#define I64 PROTOBUF_C_TYPE_INT64
#define U64 PROTOBUF_C_TYPE_UINT64
#define U32 PROTOBUF_C_TYPE_UINT32
#define BOOL PROTOBUF_C_TYPE_BOOL
#define E PROTOBUF_C_TYPE_ENUM
#define MSG PROTOBUF_C_TYPE_MESSAGE
#define REP 1

typedef struct field_spec {
    const ProtobufCMessageDescriptor *msg;
    const char *name;
    unsigned id;
    ProtobufCType type;
    int repeated;
} field_spec;

static const field_spec specs[] = {
    {&mvccpb__key_value__descriptor, "key", 1, B, 0},
    {&mvccpb__key_value__descriptor, "create_revision", 2, I64, 0},
    {&mvccpb__key_value__descriptor, "mod_revision", 3, I64, 0},
    {&mvccpb__key_value__descriptor, "version", 4, I64, 0},
    {&mvccpb__key_value__descriptor, "value", 5, B, 0},
    {&mvccpb__key_value__descriptor, "lease", 6, I64, 0},
    {&mvccpb__event__descriptor, "type", 1, E, 0},
    {&mvccpb__event__descriptor, "kv", 2, MSG, 0},
    {&mvccpb__event__descriptor, "prev_kv", 3, MSG, 0},
    {&etcdserverpb__response_header__descriptor, "cluster_id", 1, U64, 0},
    {&etcdserverpb__response_header__descriptor, "member_id", 2, U64, 0},
    {&etcdserverpb__response_header__descriptor, "revision", 3, I64, 0},
    {&etcdserverpb__response_header__descriptor, "raft_term", 4, U64, 0},
    {&etcdserverpb__range_request__descriptor, "key", 1, B, 0},
    {&etcdserverpb__range_request__descriptor, "range_end", 2, B, 0},
    {&etcdserverpb__range_request__descriptor, "limit", 3, I64, 0},
    {&etcdserverpb__range_request__descriptor, "revision", 4, I64, 0},
    {&etcdserverpb__range_request__descriptor, "sort_order", 5, E, 0},
    {&etcdserverpb__range_request__descriptor, "sort_target", 6, E, 0},
    {&etcdserverpb__range_request__descriptor, "serializable", 7, BOOL, 0},
    {&etcdserverpb__range_request__descriptor, "keys_only", 8, BOOL, 0},
    {&etcdserverpb__range_request__descriptor, "count_only", 9, BOOL, 0},
    {&etcdserverpb__range_request__descriptor, "min_mod_revision", 10, I64, 0},
    {&etcdserverpb__range_request__descriptor, "max_mod_revision", 11, I64, 0},
    {&etcdserverpb__range_request__descriptor, "min_create_revision", 12, I64, 0},
    {&etcdserverpb__range_request__descriptor, "max_create_revision", 13, I64, 0},
    {&etcdserverpb__range_response__descriptor, "header", 1, MSG, 0},
    {&etcdserverpb__range_response__descriptor, "kvs", 2, MSG, REP},
    {&etcdserverpb__range_response__descriptor, "more", 3, BOOL, 0},
    {&etcdserverpb__range_response__descriptor, "count", 4, I64, 0},
    {&etcdserverpb__put_request__descriptor, "key", 1, B, 0},
    {&etcdserverpb__put_request__descriptor, "value", 2, B, 0},
    {&etcdserverpb__put_request__descriptor, "lease", 3, I64, 0},
    {&etcdserverpb__put_request__descriptor, "prev_kv", 4, BOOL, 0},
    {&etcdserverpb__put_request__descriptor, "ignore_value", 5, BOOL, 0},
    {&etcdserverpb__put_request__descriptor, "ignore_lease", 6, BOOL, 0},
    {&etcdserverpb__put_response__descriptor, "prev_kv", 2, MSG, 0},
    {&etcdserverpb__delete_range_request__descriptor, "prev_kv", 3, BOOL, 0},
    {&etcdserverpb__delete_range_response__descriptor, "deleted", 2, I64, 0},
    {&etcdserverpb__delete_range_response__descriptor, "prev_kvs", 3, MSG, REP},
    {&etcdserverpb__request_op__descriptor, "request_range", 1, MSG, 0},
    {&etcdserverpb__request_op__descriptor, "request_put", 2, MSG, 0},
    {&etcdserverpb__request_op__descriptor, "request_delete_range", 3, MSG, 0},
    {&etcdserverpb__request_op__descriptor, "request_txn", 4, MSG, 0},
    {&etcdserverpb__response_op__descriptor, "response_range", 1, MSG, 0},
    {&etcdserverpb__response_op__descriptor, "response_put", 2, MSG, 0},
    {&etcdserverpb__response_op__descriptor, "response_delete_range", 3, MSG, 0},
    {&etcdserverpb__response_op__descriptor, "response_txn", 4, MSG, 0},
    {&etcdserverpb__compare__descriptor, "result", 1, E, 0},
    {&etcdserverpb__compare__descriptor, "target", 2, E, 0},
    {&etcdserverpb__compare__descriptor, "key", 3, B, 0},
    {&etcdserverpb__compare__descriptor, "version", 4, I64, 0},
    {&etcdserverpb__compare__descriptor, "create_revision", 5, I64, 0},
    {&etcdserverpb__compare__descriptor, "mod_revision", 6, I64, 0},
    {&etcdserverpb__compare__descriptor, "value", 7, B, 0},
    {&etcdserverpb__compare__descriptor, "lease", 8, I64, 0},
    {&etcdserverpb__compare__descriptor, "range_end", 64, B, 0},
    {&etcdserverpb__txn_request__descriptor, "compare", 1, MSG, REP},
    {&etcdserverpb__txn_request__descriptor, "success", 2, MSG, REP},
    {&etcdserverpb__txn_request__descriptor, "failure", 3, MSG, REP},
    {&etcdserverpb__txn_response__descriptor, "succeeded", 2, BOOL, 0},
    {&etcdserverpb__txn_response__descriptor, "responses", 3, MSG, REP},
    {&etcdserverpb__compaction_request__descriptor, "physical", 2, BOOL, 0},
    {&etcdserverpb__watch_request__descriptor, "create_request", 1, MSG, 0},
    {&etcdserverpb__watch_request__descriptor, "cancel_request", 2, MSG, 0},
    {&etcdserverpb__watch_request__descriptor, "progress_request", 3, MSG, 0},
    {&etcdserverpb__watch_create_request__descriptor, "start_revision", 3, I64, 0},
    {&etcdserverpb__watch_create_request__descriptor, "progress_notify", 4, BOOL, 0},
    {&etcdserverpb__watch_create_request__descriptor, "filters", 5, E, REP},
    {&etcdserverpb__watch_create_request__descriptor, "prev_kv", 6, BOOL, 0},
    {&etcdserverpb__watch_create_request__descriptor, "watch_id", 7, I64, 0},
    {&etcdserverpb__watch_create_request__descriptor, "fragment", 8, BOOL, 0},
    {&etcdserverpb__watch_response__descriptor, "watch_id", 2, I64, 0},
    {&etcdserverpb__watch_response__descriptor, "created", 3, BOOL, 0},
    {&etcdserverpb__watch_response__descriptor, "canceled", 4, BOOL, 0},
    {&etcdserverpb__watch_response__descriptor, "compact_revision", 5, I64, 0},
    {&etcdserverpb__watch_response__descriptor, "cancel_reason", 6, S, 0},
    {&etcdserverpb__watch_response__descriptor, "fragment", 7, BOOL, 0},
    {&etcdserverpb__watch_response__descriptor, "events", 11, MSG, REP},
    {&etcdserverpb__snapshot_response__descriptor, "remaining_bytes", 2, U64, 0},
    {&etcdserverpb__snapshot_response__descriptor, "blob", 3, B, 0},
    {&etcdserverpb__snapshot_response__descriptor, "version", 4, S, 0},
    {&etcdserverpb__hash_kvresponse__descriptor, "hash", 2, U32, 0},
    {&etcdserverpb__hash_kvresponse__descriptor, "hash_revision", 4, I64, 0},
    {&etcdserverpb__lease_time_to_live_response__descriptor, "grantedTTL", 4, I64, 0},
    {&etcdserverpb__lease_time_to_live_response__descriptor, "keys", 5, B, REP},
    {&etcdserverpb__lease_grant_response__descriptor, "error", 4, S, 0},
    {&etcdserverpb__member__descriptor, "ID", 1, U64, 0},
    {&etcdserverpb__member__descriptor, "peerURLs", 3, S, REP},
    {&etcdserverpb__member__descriptor, "clientURLs", 4, S, REP},
    {&etcdserverpb__member__descriptor, "isLearner", 5, BOOL, 0},
    {&etcdserverpb__member_list_request__descriptor, "linearizable", 1, BOOL, 0},
    {&etcdserverpb__member_list_response__descriptor, "members", 2, MSG, REP},
    {&etcdserverpb__status_response__descriptor, "raftAppliedIndex", 7, U64, 0},
    {&etcdserverpb__status_response__descriptor, "errors", 8, S, REP},
    {&etcdserverpb__status_response__descriptor, "dbSizeInUse", 9, I64, 0},
    {&etcdserverpb__status_response__descriptor, "storageVersion", 11, S, 0},
    {&etcdserverpb__status_response__descriptor, "dbSizeQuota", 12, I64, 0},
    {&etcdserverpb__status_response__descriptor, "downgradeInfo", 13, MSG, 0},
    {&etcdserverpb__alarm_request__descriptor, "memberID", 2, U64, 0},
    {&etcdserverpb__alarm_request__descriptor, "alarm", 3, E, 0},
    {&etcdserverpb__auth_user_add_request__descriptor, "options", 3, MSG, 0},
    {&etcdserverpb__auth_user_add_request__descriptor, "hashedPassword", 4, S, 0},
    {&etcdserverpb__auth_role_grant_permission_request__descriptor, "perm", 2, MSG, 0},
    {&etcdserverpb__auth_role_revoke_permission_request__descriptor, "range_end", 3, B, 0},
    {&etcdserverpb__auth_status_response__descriptor, "authRevision", 3, U64, 0},
    {&etcdserverpb__auth_role_get_response__descriptor, "perm", 2, MSG, REP},
    {&authpb__permission__descriptor, "permType", 1, E, 0},
    {&authpb__permission__descriptor, "key", 2, B, 0},
    {&authpb__permission__descriptor, "range_end", 3, B, 0},
    {&authpb__user_add_options__descriptor, "no_password", 1, BOOL, 0},
    {&v3electionpb__campaign_request__descriptor, "name", 1, B, 0},
    {&v3electionpb__campaign_request__descriptor, "lease", 2, I64, 0},
    {&v3electionpb__campaign_request__descriptor, "value", 3, B, 0},
    {&v3electionpb__campaign_response__descriptor, "leader", 2, MSG, 0},
    {&v3electionpb__leader_key__descriptor, "name", 1, B, 0},
    {&v3electionpb__leader_key__descriptor, "key", 2, B, 0},
    {&v3electionpb__leader_key__descriptor, "rev", 3, I64, 0},
    {&v3electionpb__leader_key__descriptor, "lease", 4, I64, 0},
    {&v3electionpb__leader_request__descriptor, "name", 1, B, 0},
    {&v3electionpb__leader_response__descriptor, "kv", 2, MSG, 0},
    {&v3electionpb__resign_request__descriptor, "leader", 1, MSG, 0},
    {&v3electionpb__proclaim_request__descriptor, "leader", 1, MSG, 0},
    {&v3electionpb__proclaim_request__descriptor, "value", 2, B, 0},
    {&v3lockpb__lock_request__descriptor, "name", 1, B, 0},
    {&v3lockpb__lock_request__descriptor, "lease", 2, I64, 0},
    {&v3lockpb__lock_response__descriptor, "key", 2, B, 0},
    {&v3lockpb__unlock_request__descriptor, "key", 1, B, 0},
};

static void test_field_numbers_and_types(void)
{
    for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
        const field_spec *s = &specs[i];
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(s->msg, s->name);
        CHECK_MSG(f != NULL, "%s.%s missing", s->msg->name, s->name);
        if (!f)
            continue;
        CHECK_MSG(f->id == s->id, "%s.%s = %u, etcd has %u", s->msg->name, s->name, f->id, s->id);
        CHECK_MSG(f->type == s->type, "%s.%s type", s->msg->name, s->name);
        CHECK_MSG((f->label == PROTOBUF_C_LABEL_REPEATED) == (s->repeated == REP), "%s.%s repeated",
                  s->msg->name, s->name);
    }
}

static void test_package_names(void)
{
    /* gRPC paths and Any type URLs use these full names */
    CHECK_EQ_STR(mvccpb__key_value__descriptor.name, "mvccpb.KeyValue");
    CHECK_EQ_STR(etcdserverpb__put_request__descriptor.name, "etcdserverpb.PutRequest");
    CHECK_EQ_STR(authpb__permission__descriptor.name, "authpb.Permission");
    CHECK_EQ_STR(v3electionpb__leader_key__descriptor.name, "v3electionpb.LeaderKey");
    CHECK_EQ_STR(v3lockpb__lock_request__descriptor.name, "v3lockpb.LockRequest");
    CHECK_EQ_STR(etcdserverpb__kv__descriptor.name, "etcdserverpb.KV");
    CHECK_EQ_INT(etcdserverpb__kv__descriptor.n_methods, 5);
    CHECK_EQ_INT(etcdserverpb__watch__descriptor.n_methods, 1);
    CHECK_EQ_INT(etcdserverpb__lease__descriptor.n_methods, 5);
    CHECK_EQ_INT(etcdserverpb__cluster__descriptor.n_methods, 5);
    CHECK_EQ_INT(etcdserverpb__maintenance__descriptor.n_methods, 8);
    CHECK_EQ_INT(etcdserverpb__auth__descriptor.n_methods, 17);
    CHECK_EQ_INT(v3electionpb__election__descriptor.n_methods, 5);
    CHECK_EQ_INT(v3lockpb__lock__descriptor.n_methods, 2);
    /* enum values that carry meaning on the wire */
    CHECK_EQ_INT(ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VALUE, 4);
    CHECK_EQ_INT(ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE, 3);
    CHECK_EQ_INT(ETCDSERVERPB__COMPARE__COMPARE_TARGET__LEASE, 4);
    CHECK_EQ_INT(ETCDSERVERPB__COMPARE__COMPARE_RESULT__NOT_EQUAL, 3);
    CHECK_EQ_INT(MVCCPB__EVENT__EVENT_TYPE__DELETE, 1);
    CHECK_EQ_INT(ETCDSERVERPB__ALARM_TYPE__CORRUPT, 2);
    CHECK_EQ_INT(ETCDSERVERPB__WATCH_CREATE_REQUEST__FILTER_TYPE__NODELETE, 1);
    CHECK_EQ_INT(AUTHPB__PERMISSION__TYPE__READWRITE, 2);
}

static void test_service_methods_match_types(void)
{
    /* each method's input/output message, as etcd declares them */
    const ProtobufCServiceDescriptor *kv = &etcdserverpb__kv__descriptor;
    const ProtobufCMethodDescriptor *txn =
        protobuf_c_service_descriptor_get_method_by_name(kv, "Txn");
    CHECK(txn && txn->input == &etcdserverpb__txn_request__descriptor &&
          txn->output == &etcdserverpb__txn_response__descriptor);
    const ProtobufCMethodDescriptor *compact =
        protobuf_c_service_descriptor_get_method_by_name(kv, "Compact");
    CHECK(compact && compact->input == &etcdserverpb__compaction_request__descriptor);
    const ProtobufCMethodDescriptor *observe = protobuf_c_service_descriptor_get_method_by_name(
        &v3electionpb__election__descriptor, "Observe");
    CHECK(observe && observe->input == &v3electionpb__leader_request__descriptor &&
          observe->output == &v3electionpb__leader_response__descriptor);
    const ProtobufCMethodDescriptor *cpw = protobuf_c_service_descriptor_get_method_by_name(
        &etcdserverpb__auth__descriptor, "UserChangePassword");
    CHECK(cpw && cpw->input == &etcdserverpb__auth_user_change_password_request__descriptor);
}

int main(int argc, char **argv)
{
    (void)argc;
    TEST_BEGIN(argv[0]);
    RUN(test_field_numbers_and_types);
    RUN(test_package_names);
    RUN(test_service_methods_match_types);
    return TEST_EXIT();
}
