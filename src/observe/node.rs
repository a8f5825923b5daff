//! One node over its transport: versions, runtime, kubeconfigs (redacted), the API server
//! certificate, the CA pin, and reachability of the existing control plane.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::observed::{NodeObservation, Probe};
use crate::spec::Node;
use crate::transport::{NodeTransport, TransportError};

/// What reading a node yields: its observation (no secrets) and, held in memory only, what the
/// rest of observation needs from it.
#[derive(Clone, Debug)]
pub struct NodeReading {
    pub observation: NodeObservation,
    /// `/etc/kubernetes/admin.conf` as is (keys included): the API client's credentials when the
    /// plan names no kubeconfig. Never written anywhere.
    pub admin_conf: Option<String>,
    /// `/etc/kubernetes/pki/ca.crt` (public), for the LB's TLS check.
    pub ca_pem: Option<String>,
}

/// Reads everything observation wants from `node` in one round trip.
pub async fn read_node<T: NodeTransport>(transport: &T, node: &Node) -> NodeReading {
    let _ = (transport, node);
    todo!("helper B")
}

/// The observation of a node hactl could not reach: the reason, and nothing else.
pub fn unreachable(node: &Node, error: &TransportError) -> NodeObservation {
    let _ = (node, error);
    todo!("helper B")
}

/// TCP from the node to each `ADDRESS:PORT`, keyed by it.
pub async fn reachability<T: NodeTransport>(
    transport: &T,
    targets: &[String],
    timeout: Duration,
) -> BTreeMap<String, Probe> {
    let _ = (transport, targets, timeout);
    todo!("helper B")
}
