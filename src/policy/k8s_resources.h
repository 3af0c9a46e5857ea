/* k8s_resources.h - where kube-apiserver 1.31 stores its built-in resources in etcd.
 *
 * The table maps the etcd path segment(s) after the storage prefix to the GroupResource whose
 * encryption rule applies (wire-format.md §1.1): lowercase resource name without the group for
 * built-ins, plus the compiled-in specials (`services/specs`, `services/endpoints`, `minions`,
 * `controllers`, `ingress`) and the allocator/lease keys stored with another resource's
 * transformer (`ranges` -> services, `masterleases` -> endpoints). Resources served through the
 * `<group>/<resource>` layout (custom resources, customresourcedefinitions, apiservices) are not
 * in the table: their first segment contains a dot. Static data, any thread.
 */
#ifndef ETCDSEAL_POLICY_K8S_RESOURCES_H
#define ETCDSEAL_POLICY_K8S_RESOURCES_H

#include <stdbool.h>
#include <stddef.h>

typedef struct k8s_builtin {
    const char *segment;  /* "deployments", "services/specs" (one or two path segments) */
    const char *group;    /* "" = core */
    const char *resource; /* plural resource name */
} k8s_builtin;

extern const k8s_builtin k8s_builtins[];
extern const size_t k8s_builtins_len;

/* True when keys of `group` use the built-in layout /<prefix>/<resource>/... (core, apps, ...);
 * false for groups stored as /<prefix>/<group>/<resource>/... (CRD groups, apiextensions.k8s.io,
 * apiregistration.k8s.io). An unknown group without a dot is treated as built-in. */
bool k8s_group_uses_builtin_layout(const char *group);

#endif
