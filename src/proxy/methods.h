/* methods.h - the table of every gRPC method etcdseal relays, and which ones are intercepted.
 *
 * One static, read-only entry per method of etcdserverpb KV/Watch/Lease/Cluster/Maintenance/Auth,
 * v3electionpb.Election, v3lockpb.Lock and grpc.health.v1.Health. A method whose transformer for
 * a direction is NULL has its bytes of that direction relayed untouched (never reassembled);
 * a non-NULL one is called once per complete message (proxy/transform.h). A path not in the
 * table (method_lookup returns NULL) is answered UNIMPLEMENTED by the relay: new etcd methods
 * that may return stored values are never passed through unexamined.
 * `index` is dense 0..method_count()-1 (for per-method metric arrays); method_at(i)->index == i.
 * Lookup is a binary search over the static table: O(log n), no allocation, any thread.
 */
#ifndef ETCDSEAL_PROXY_METHODS_H
#define ETCDSEAL_PROXY_METHODS_H

#include <stdbool.h>
#include <stddef.h>

#include "proxy/transform.h"

typedef struct method_desc {
    const char *path;    /* "/etcdserverpb.KV/Put" */
    const char *service; /* "etcdserverpb.KV" */
    const char *name;    /* "Put" */
    bool client_streaming, server_streaming;
    transform_fn request_transform;  /* NULL: request bytes relayed untouched */
    transform_fn response_transform; /* NULL: response bytes relayed untouched */
    transform_free_state_fn free_state;
    unsigned index; /* dense 0..method_count()-1 */
    /* the transformers only touch stored values: without an EncryptionConfiguration they
     * would change nothing, so the relay skips them (no reassembly, no decoding) */
    bool values_only;
} method_desc;

/* `path` need not be NUL-terminated. NULL = unknown method. */
const method_desc *method_lookup(const char *path, size_t path_len);
size_t method_count(void);
/* NULL when i >= method_count(). */
const method_desc *method_at(size_t i);

#endif
