/* k8s_resources.c - built-in resource table of Kubernetes 1.31 (see k8s_resources.h).
 *
 * Written from the kube-apiserver 1.31 REST storage list (pkg/registry/.../rest/storage_*.go,
 * alpha and beta APIs included) and the special prefixes of
 * pkg/kubeapiserver/default_storage_factory_builder.go. Cohabiting resources (events.k8s.io
 * events, extensions deployments/daemonsets/replicasets) live in the core/apps storage and are
 * therefore not separate rows. Group-layout resources (apiservices, customresourcedefinitions,
 * CRDs) are recognised by the dot in their first segment and are not listed.
 */
#include "policy/k8s_resources.h"

#include <string.h>

const k8s_builtin k8s_builtins[] = {
    /* core */
    {"configmaps", "", "configmaps"},
    {"services/endpoints", "", "endpoints"},
    {"masterleases", "", "endpoints"}, /* apiserver IP leases, endpoints' storage config */
    {"events", "", "events"},
    {"limitranges", "", "limitranges"},
    {"namespaces", "", "namespaces"},
    {"minions", "", "nodes"},
    {"persistentvolumeclaims", "", "persistentvolumeclaims"},
    {"persistentvolumes", "", "persistentvolumes"},
    {"pods", "", "pods"},
    {"podtemplates", "", "podtemplates"},
    {"controllers", "", "replicationcontrollers"},
    {"resourcequotas", "", "resourcequotas"},
    {"secrets", "", "secrets"},
    {"serviceaccounts", "", "serviceaccounts"},
    {"services/specs", "", "services"},
    {"ranges", "", "services"}, /* ranges/serviceips, ranges/servicenodeports: services' config */
    /* admissionregistration.k8s.io */
    {"mutatingwebhookconfigurations", "admissionregistration.k8s.io",
     "mutatingwebhookconfigurations"},
    {"validatingwebhookconfigurations", "admissionregistration.k8s.io",
     "validatingwebhookconfigurations"},
    {"validatingadmissionpolicies", "admissionregistration.k8s.io", "validatingadmissionpolicies"},
    {"validatingadmissionpolicybindings", "admissionregistration.k8s.io",
     "validatingadmissionpolicybindings"},
    /* apps */
    {"controllerrevisions", "apps", "controllerrevisions"},
    {"daemonsets", "apps", "daemonsets"},
    {"deployments", "apps", "deployments"},
    {"replicasets", "apps", "replicasets"},
    {"statefulsets", "apps", "statefulsets"},
    /* autoscaling, batch, policy */
    {"horizontalpodautoscalers", "autoscaling", "horizontalpodautoscalers"},
    {"cronjobs", "batch", "cronjobs"},
    {"jobs", "batch", "jobs"},
    {"poddisruptionbudgets", "policy", "poddisruptionbudgets"},
    /* certificates.k8s.io */
    {"certificatesigningrequests", "certificates.k8s.io", "certificatesigningrequests"},
    {"clustertrustbundles", "certificates.k8s.io", "clustertrustbundles"},
    /* coordination.k8s.io */
    {"leases", "coordination.k8s.io", "leases"},
    {"leasecandidates", "coordination.k8s.io", "leasecandidates"},
    /* discovery.k8s.io */
    {"endpointslices", "discovery.k8s.io", "endpointslices"},
    /* flowcontrol.apiserver.k8s.io */
    {"flowschemas", "flowcontrol.apiserver.k8s.io", "flowschemas"},
    {"prioritylevelconfigurations", "flowcontrol.apiserver.k8s.io", "prioritylevelconfigurations"},
    /* internal.apiserver.k8s.io */
    {"storageversions", "internal.apiserver.k8s.io", "storageversions"},
    /* networking.k8s.io */
    {"ingress", "networking.k8s.io", "ingresses"},
    {"ingressclasses", "networking.k8s.io", "ingressclasses"},
    {"networkpolicies", "networking.k8s.io", "networkpolicies"},
    {"ipaddresses", "networking.k8s.io", "ipaddresses"},
    {"servicecidrs", "networking.k8s.io", "servicecidrs"},
    /* node.k8s.io */
    {"runtimeclasses", "node.k8s.io", "runtimeclasses"},
    /* rbac.authorization.k8s.io */
    {"clusterrolebindings", "rbac.authorization.k8s.io", "clusterrolebindings"},
    {"clusterroles", "rbac.authorization.k8s.io", "clusterroles"},
    {"rolebindings", "rbac.authorization.k8s.io", "rolebindings"},
    {"roles", "rbac.authorization.k8s.io", "roles"},
    /* resource.k8s.io (alpha in 1.31) */
    {"deviceclasses", "resource.k8s.io", "deviceclasses"},
    {"podschedulingcontexts", "resource.k8s.io", "podschedulingcontexts"},
    {"resourceclaims", "resource.k8s.io", "resourceclaims"},
    {"resourceclaimtemplates", "resource.k8s.io", "resourceclaimtemplates"},
    {"resourceslices", "resource.k8s.io", "resourceslices"},
    /* scheduling.k8s.io */
    {"priorityclasses", "scheduling.k8s.io", "priorityclasses"},
    /* storage.k8s.io */
    {"csidrivers", "storage.k8s.io", "csidrivers"},
    {"csinodes", "storage.k8s.io", "csinodes"},
    {"csistoragecapacities", "storage.k8s.io", "csistoragecapacities"},
    {"storageclasses", "storage.k8s.io", "storageclasses"},
    {"volumeattachments", "storage.k8s.io", "volumeattachments"},
    {"volumeattributesclasses", "storage.k8s.io", "volumeattributesclasses"},
    /* storagemigration.k8s.io */
    {"storageversionmigrations", "storagemigration.k8s.io", "storageversionmigrations"},
};

const size_t k8s_builtins_len = sizeof k8s_builtins / sizeof k8s_builtins[0];

bool k8s_group_uses_builtin_layout(const char *group)
{
    static const char *const extra[] = {"authentication.k8s.io", "authorization.k8s.io",
                                        "events.k8s.io", "extensions", NULL};
    if (!strchr(group, '.'))
        return true; /* core, apps, batch, ...; CRD groups always contain a dot */
    for (size_t i = 0; i < k8s_builtins_len; i++)
        if (strcmp(k8s_builtins[i].group, group) == 0)
            return true;
    for (const char *const *g = extra; *g; g++)
        if (strcmp(*g, group) == 0)
            return true;
    return false;
}
