//! What each resource's plan depends on, hashed: the saved plan carries these, and `hactl
//! apply PLANFILE` plans again and compares them, naming each resource whose inputs changed.
//!
//! One function per resource kind, so what counts as drift for a kind is read in one place.

use serde::Serialize;

use crate::observed::{
    ConfigMapObservation, EndpointObservation, EtcdMember, KubeNode, NodeObservation, Probe,
    SshProbe,
};
use crate::plan::{ResourceChange, sha256};

/// The fingerprint of a value: its JSON, hashed (typed values serialise deterministically).
fn of(value: &impl Serialize) -> String {
    sha256(&serde_json::to_vec(value).unwrap_or_default())
}

/// A resource on a node that was not observed: what was recorded of the node.
pub(super) fn unobserved_node(obs: Option<&NodeObservation>) -> String {
    of(&obs)
}

/// A resource that needs the API, when the API could not be read: why not.
pub(super) fn api_unreachable(reachable: &Probe) -> String {
    of(reachable)
}

/// The endpoint: the load balancer's TCP and TLS probes.
pub(super) fn endpoint(obs: &EndpointObservation) -> String {
    of(obs)
}

/// A node's API server certificate: whether the node was read, and the certificate.
pub(super) fn certificate(obs: &NodeObservation) -> String {
    of(&(&obs.ssh, &obs.apiserver_cert))
}

/// A kubeconfig file: its (redacted) text and its hash, which also covers what redaction hides,
/// and, when known, whether its reader started before it last changed.
pub(super) fn kubeconfig(
    ssh: &SshProbe,
    text: Option<&String>,
    sha: Option<&String>,
    stale: Option<bool>,
) -> String {
    match stale {
        Some(stale) => of(&(ssh, text, stale, sha)),
        None => of(&(ssh, text, sha)),
    }
}

/// A ConfigMap; for kube-proxy's, also the nodes whose kube-proxy Pods are older than it.
pub(super) fn configmap(obs: Option<&ConfigMapObservation>, stale_pods: &[String]) -> String {
    let fp = of(&obs);
    match stale_pods.is_empty() {
        true => fp,
        false => of(&(&fp, stale_pods)),
    }
}

/// A control-plane node: its observation, its etcd member, its Node object and etcd's health.
pub(super) fn control_plane(
    obs: Option<&NodeObservation>,
    member: Option<&EtcdMember>,
    kube_node: Option<&KubeNode>,
    etcd_health: &Probe,
) -> String {
    of(&(obs, member, kube_node, etcd_health))
}

/// The whole plan's: every resource's address and fingerprint, in plan order.
pub(super) fn observed(changes: &[ResourceChange]) -> String {
    sha256(
        changes
            .iter()
            .map(|c| format!("{}={}\n", c.address, c.fingerprint))
            .collect::<String>()
            .as_bytes(),
    )
}
