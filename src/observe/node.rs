//! One node over its transport: versions, runtime, kubeconfigs (redacted), the API server
//! certificate, the CA pin, and reachability of the existing control plane.
//!
//! One `transport.run` per node and purpose (a run over 51 nodes pays one round trip each):
//! the script and its parsing are in [`crate::readings::node`].

use std::collections::BTreeMap;
use std::time::Duration;

use crate::observed::{NodeObservation, Probe, SshFailure, SshProbe};
use crate::readings::node::{self as reading};
use crate::spec::Node;
use crate::transport::{NodeTransport, TransportError, did_not_finish};

/// What reading a node yields: its observation (no secrets) and, held in memory only, the raw
/// admin.conf (the API client's credentials when the plan names no kubeconfig; never written
/// anywhere), ca.crt (for the LB's TLS check) and warnings naming files found but not understood.
pub use crate::readings::node::NodeRead as NodeReading;

/// Reads everything observation wants from `node` in one round trip.
pub async fn read_node<T: NodeTransport>(transport: &T, node: &Node) -> NodeReading {
    let out = match transport.run(&reading::node_script()).await {
        Ok(out) => out,
        Err(e) => {
            return NodeReading {
                observation: unreachable(node, &e),
                admin_conf: None,
                ca_pem: None,
                warnings: Vec::new(),
            };
        }
    };
    match reading::sections(&out.stdout_text()) {
        Ok(sections) => reading::node_read(&node.name, &node.address.to_string(), &sections),
        Err(e) => NodeReading {
            observation: NodeObservation::new(
                &node.address.to_string(),
                SshProbe::unreachable(format!(
                    "{}: the observation script failed (exit {}): {e}; stderr: {}",
                    node.name,
                    out.status.map_or("by signal".into(), |c| c.to_string()),
                    out.stderr_text().trim()
                )),
            ),
            admin_conf: None,
            ca_pem: None,
            warnings: Vec::new(),
        },
    }
}

/// The observation of a node hactl could not reach: the reason, and nothing else.
///
/// The reason is ssh's words without the node prefix (the planner names the node), with the
/// kind of failure (host key, permission, sudo, timeout) from which the planner tells the fix.
pub fn unreachable(node: &Node, error: &TransportError) -> NodeObservation {
    let ssh = match error {
        TransportError::Unreachable { detail, .. } | TransportError::Other { detail, .. } => {
            SshProbe::unreachable(detail.clone())
        }
        TransportError::Timeout { after, .. } => SshProbe::failed(
            SshFailure::CommandTimeout,
            did_not_finish(
                "the node script (versions, kubeconfigs, certificates)",
                *after,
            ),
        ),
        TransportError::AuthFailed { detail, .. } => {
            SshProbe::failed(SshFailure::PermissionDenied, detail.clone())
        }
        TransportError::HostKeyChanged { detail, .. } => {
            SshProbe::failed(SshFailure::HostKeyMismatch, detail.clone())
        }
        TransportError::HostKeyUnknown { detail, .. } => {
            SshProbe::failed(SshFailure::HostKeyUnknown, detail.clone())
        }
        TransportError::Sudo { detail, .. } => SshProbe::failed(SshFailure::Sudo, detail.clone()),
    };
    NodeObservation::new(&node.address.to_string(), ssh)
}

/// TCP from the node to each `ADDRESS:PORT`, keyed by it; all tested at once, each within
/// `timeout`.
pub async fn reachability<T: NodeTransport>(
    transport: &T,
    targets: &[String],
    timeout: Duration,
) -> BTreeMap<String, Probe> {
    let secs = timeout.as_secs_f64().max(0.1);
    let all_failed = |why: &str| {
        targets
            .iter()
            .map(|t| {
                (
                    t.clone(),
                    Probe::Failed {
                        reason: format!("TCP from {} to {t}: {why}", transport.node()),
                    },
                )
            })
            .collect()
    };
    if targets.is_empty() {
        return BTreeMap::new();
    }
    let out = match transport
        .run(&reading::reachability_script(targets, secs))
        .await
    {
        Ok(out) => out,
        Err(e) => return all_failed(&format!("not tested: {e}")),
    };
    match reading::sections(&out.stdout_text()) {
        Ok(sections) => reading::reachability(transport.node(), targets, secs, &sections),
        Err(e) => all_failed(&format!(
            "not tested: {e}; stderr: {}",
            out.stderr_text().trim()
        )),
    }
}
