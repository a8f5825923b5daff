//! etcd, through `etcdctl` on a control-plane node with kubeadm's certificate paths: the
//! member list and each started member's health, in one round trip (the script and its
//! parsing are in [`crate::readings::etcd`]).

use crate::observed::{EtcdObservation, Probe};
use crate::readings::etcd::{etcd_observation, etcd_script};
use crate::readings::node::{SectionStatus, sections};
use crate::transport::{NodeTransport, TransportError, timed_out};

/// `etcdctl member list` and `endpoint health` run on `transport`'s node. Failures are data:
/// a failed member list leaves `observed_from: None` and says why in `health`.
pub async fn read_etcd<T: NodeTransport>(transport: &T) -> EtcdObservation {
    let node = transport.node();
    let failed = |reason: String| EtcdObservation {
        observed_from: None,
        members: Vec::new(),
        health: Probe::Failed { reason },
    };
    let out = match transport.run(&etcd_script()).await {
        Ok(out) => out,
        Err(TransportError::Timeout { after, .. }) => {
            return failed(format!(
                "etcd could not be read from {node}: {}",
                timed_out("the etcdctl script (member list, endpoint health)", after)
            ));
        }
        Err(e) => return failed(format!("etcdctl could not run on {node}: {e}")),
    };
    let sections = match sections(&out.stdout_text()) {
        Ok(s) => s,
        Err(e) => {
            return failed(format!(
                "the etcd script on {node} failed: {e}; stderr: {}",
                out.stderr_text().trim()
            ));
        }
    };
    let get = |name: &str| {
        sections.get(name).map_or((-1, String::new()), |s| {
            let code = match s.status {
                SectionStatus::Exit(c) => c,
                _ => -1,
            };
            (code, s.text())
        })
    };
    let endpoint = get("endpoint").1;
    let members = get("members");
    let health = get("health");
    etcd_observation(
        node,
        endpoint.trim(),
        (members.0, &members.1),
        (health.0, &health.1),
    )
}
