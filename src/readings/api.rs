//! API objects as the cluster seam carries them (Nodes, Pods, ConfigMaps and Leases into the
//! plain values of [`crate::seams`]), those values as observation keeps them (into
//! [`crate::observed`]), and the readiness both read.

use k8s_openapi::api::coordination::v1::Lease as KubeLease;
use k8s_openapi::api::core::v1::{ConfigMap as KubeConfigMap, Node, Pod as KubePod};

use crate::observed::{ConfigMapObservation, KubeNode, LeaseObservation, PodObservation, later};
use crate::seams::{ConfigMap, Lease, NodeStatus, Pod};

/// Whether the Node's `Ready` condition is `True`.
pub fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// Whether the Pod's `Ready` condition is `True`.
pub fn pod_ready(pod: &KubePod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// A ConfigMap: its data, resourceVersion, and when its data last changed.
pub fn configmap(namespace: &str, name: &str, cm: KubeConfigMap) -> ConfigMap {
    // Every writer's entry carries the time of its last change; the latest of those that own
    // data is when what the readers read changed (a label or annotation is not read).
    let changed_at = latest(
        cm.metadata
            .managed_fields
            .iter()
            .flatten()
            .filter(|f| {
                f.fields_v1
                    .as_ref()
                    .is_some_and(|v| v.0.get("f:data").is_some())
            })
            .filter_map(|f| rfc3339(f.time.as_ref()?)),
    );
    ConfigMap {
        namespace: namespace.to_string(),
        name: name.to_string(),
        resource_version: cm.metadata.resource_version.unwrap_or_default(),
        data: cm.data.unwrap_or_default(),
        changed_at,
    }
}

/// The latest of RFC 3339 times.
pub fn latest(times: impl Iterator<Item = String>) -> Option<String> {
    times.reduce(|a, b| if later(&b, &a) == Some(true) { b } else { a })
}

/// A metav1.Time or MicroTime as the API writes it (RFC 3339, UTC): its JSON string.
pub fn rfc3339<T: serde::Serialize>(t: &T) -> Option<String> {
    serde_json::to_value(t).ok()?.as_str().map(String::from)
}

const ROLE_LABEL: &str = "node-role.kubernetes.io/";

/// A Node's name, readiness, roles (from its labels, sorted) and kubelet version.
pub fn node_status(node: &Node) -> NodeStatus {
    let mut roles: Vec<String> = node
        .metadata
        .labels
        .iter()
        .flatten()
        .filter_map(|(k, _)| k.strip_prefix(ROLE_LABEL))
        .filter(|r| !r.is_empty())
        .map(String::from)
        .collect();
    roles.sort();
    NodeStatus {
        name: node.metadata.name.clone().unwrap_or_default(),
        ready: node_ready(node),
        roles,
        kubelet_version: node
            .status
            .as_ref()
            .and_then(|s| s.node_info.as_ref())
            .map(|i| i.kubelet_version.clone())
            .unwrap_or_default(),
    }
}

/// A Pod in `namespace`: where it is scheduled (empty when it is not), readiness, restarts,
/// creation and the latest container start.
pub fn pod(namespace: &str, pod: &KubePod) -> Pod {
    let status = pod.status.as_ref();
    let containers = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten();
    Pod {
        namespace: namespace.to_string(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        node: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        ready: pod_ready(pod),
        created_at: pod
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(rfc3339)
            .unwrap_or_default(),
        restarts: containers
            .clone()
            .map(|c| u32::try_from(c.restart_count).unwrap_or(0))
            .sum(),
        started_at: latest(
            containers
                .filter_map(|c| c.state.as_ref()?.running.as_ref()?.started_at.as_ref())
                .filter_map(rfc3339),
        ),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
    }
}

/// A Lease, its times as RFC 3339 with microseconds (as the API writes them).
pub fn lease(l: KubeLease) -> Lease {
    let spec = l.spec.unwrap_or_default();
    Lease {
        namespace: l.metadata.namespace.unwrap_or_default(),
        name: l.metadata.name.unwrap_or_default(),
        holder: spec.holder_identity,
        acquire_time: spec.acquire_time.as_ref().and_then(rfc3339),
        renew_time: spec.renew_time.as_ref().and_then(rfc3339),
        duration_secs: spec.lease_duration_seconds.map(|d| d.max(0) as u32),
        resource_version: l.metadata.resource_version.unwrap_or_default(),
    }
}

/// A ConfigMap as observation keeps it.
pub fn configmap_observation(cm: &ConfigMap) -> ConfigMapObservation {
    ConfigMapObservation {
        resource_version: cm.resource_version.clone(),
        data: cm.data.clone(),
        changed_at: cm.changed_at.clone(),
    }
}

/// A Node as observation keeps it.
pub fn kube_node(node: &NodeStatus) -> KubeNode {
    KubeNode {
        ready: node.ready,
        roles: node.roles.clone(),
        kubelet_version: node.kubelet_version.clone(),
    }
}

/// `(node, pod)` for a scheduled pod (kube-proxy, or a static pod's mirror) as observation
/// keeps it; `None` for one not scheduled yet.
pub fn scheduled_pod(pod: &Pod) -> Option<(String, PodObservation)> {
    if pod.node.is_empty() {
        return None;
    }
    Some((
        pod.node.clone(),
        PodObservation {
            name: pod.name.clone(),
            ready: pod.ready,
            restarts: pod.restarts,
            created_at: (!pod.created_at.is_empty()).then(|| pod.created_at.clone()),
            started_at: pod.started_at.clone(),
        },
    ))
}

/// A Lease's holder and renewal as observation keeps them.
pub fn lease_observation(lease: &Lease) -> LeaseObservation {
    LeaseObservation {
        holder: lease.holder.clone(),
        renew_time: lease.renew_time.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> serde_json::Value {
        let text = include_str!("../../tests/fixtures/observed/fresh-1.23-docker.json");
        serde_json::from_str(text).expect("fixture parses")
    }

    #[test]
    fn nodes_read_roles_from_labels_sorted_and_ready_from_the_condition() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "cp1", "labels": {
                "node-role.kubernetes.io/master": "",
                "node-role.kubernetes.io/control-plane": "",
                "kubernetes.io/hostname": "cp1"
            }},
            "status": {
                "conditions": [
                    {"type": "MemoryPressure", "status": "False"},
                    {"type": "Ready", "status": "True"}
                ],
                "nodeInfo": {"kubeletVersion": "v1.23.17", "architecture": "amd64",
                    "bootID": "", "containerRuntimeVersion": "docker://20.10.24",
                    "kernelVersion": "", "kubeProxyVersion": "", "machineID": "",
                    "operatingSystem": "linux", "osImage": "", "systemUUID": ""}
            }
        }))
        .expect("node");
        let want: KubeNode =
            serde_json::from_value(fixture()["api"]["nodes"]["cp1"].clone()).expect("fixture");
        assert_eq!(kube_node(&node_status(&node)), want);

        let not_ready: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "w1"},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}
        }))
        .expect("node");
        assert_eq!(
            kube_node(&node_status(&not_ready)),
            KubeNode {
                ready: false,
                roles: vec![],
                kubelet_version: String::new()
            }
        );
    }

    #[test]
    fn proxy_pods_sum_restarts_and_key_by_node() {
        let pod: KubePod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kube-proxy-8vq4x", "creationTimestamp": "2026-11-24T08:15:17Z"},
            "spec": {"nodeName": "cp1", "containers": []},
            "status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {"name": "a", "image": "", "imageID": "", "ready": true, "restartCount": 2,
                     "state": {"running": {"startedAt": "2026-11-24T08:15:20Z"}}},
                    {"name": "b", "image": "", "imageID": "", "ready": true, "restartCount": 3,
                     "state": {"running": {"startedAt": "2026-11-24T08:16:00Z"}}}
                ]
            }
        }))
        .expect("pod");
        let (node, seen) = scheduled_pod(&super::pod("kube-system", &pod)).expect("scheduled");
        assert_eq!(node, "cp1");
        assert_eq!(
            seen,
            PodObservation {
                name: "kube-proxy-8vq4x".into(),
                ready: true,
                restarts: 5,
                created_at: Some("2026-11-24T08:15:17Z".into()),
                // The latest container start.
                started_at: Some("2026-11-24T08:16:00Z".into()),
            }
        );
        let pending: KubePod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kube-proxy-x"}, "spec": {"containers": []}
        }))
        .expect("pod");
        assert!(scheduled_pod(&super::pod("kube-system", &pending)).is_none());
    }

    #[test]
    fn a_configmap_changed_when_its_latest_writer_wrote() {
        let cm: KubeConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kube-proxy", "resourceVersion": "7", "managedFields": [
                {"manager": "kubectl-edit", "operation": "Update", "apiVersion": "v1",
                 "time": "2026-11-24T09:00:01Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:kubeconfig.conf": {}}}},
                {"manager": "kubeadm", "operation": "Update", "apiVersion": "v1",
                 "time": "2026-11-24T08:15:17Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {".": {}, "f:config.conf": {}}}},
                {"manager": "argocd", "operation": "Update", "apiVersion": "v1",
                 "time": "2026-11-24T10:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:annotations": {"f:tracking": {}}}}}
            ]},
            "data": {"kubeconfig.conf": "x"}
        }))
        .expect("configmap");
        assert_eq!(
            configmap("kube-system", "kube-proxy", cm.clone())
                .changed_at
                .as_deref(),
            Some("2026-11-24T09:00:01Z")
        );
        // Without managedFields (a server before 1.18 wrote it), nobody can say.
        let mut bare = cm;
        bare.metadata.managed_fields = None;
        assert_eq!(
            configmap("kube-system", "kube-proxy", bare).changed_at,
            None
        );
    }
}
