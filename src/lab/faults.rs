//! Faults the lab injects on purpose (`hactl lab fault` / `hactl lab heal`, issue 4): the
//! kinds, and the set of active faults the supervisor shares with every simulated part.
//!
//! The supervisor owns one `FaultSet`; the API servers, node agents and the lab's `kubeadm`
//! ask it what is broken right now. It is persisted to `DIR/lab/faults.json` so that
//! `lab status` and `lab down` see what is active.

pub mod disk;
pub mod isolation;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One fault on one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Fault {
    /// Connections to the node's sshd are refused.
    SshDown,
    /// Everything on the node stops; its sshd refuses connections, its LB backend goes down.
    NodeDown,
    /// The node cannot reach `port` on the other nodes.
    BlockPort { port: u16 },
    /// The next `kubeadm join` on the node fails midway, after the etcd member was added.
    KubeadmJoinFails,
    /// Writes under the node's `/etc/kubernetes` fail with ENOSPC.
    DiskFull,
    /// The node's API server answers 409 Conflict to the next `remaining` writes.
    ApiConflicts { remaining: u32 },
    /// A component (re)started on the node takes `seconds` longer than usual to be ready.
    SlowComponent { seconds: u64 },
}

impl Fault {
    /// The command-line name (`block-port`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Fault::SshDown => "ssh-down",
            Fault::NodeDown => "node-down",
            Fault::BlockPort { .. } => "block-port",
            Fault::KubeadmJoinFails => "kubeadm-join-fails",
            Fault::DiskFull => "disk-full",
            Fault::ApiConflicts { .. } => "api-conflicts",
            Fault::SlowComponent { .. } => "slow-component",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::BlockPort { port } => write!(f, "block-port {port}"),
            Fault::ApiConflicts { remaining } => write!(f, "api-conflicts {remaining}"),
            Fault::SlowComponent { seconds } => write!(f, "slow-component {seconds}"),
            other => f.write_str(other.name()),
        }
    }
}

/// The active faults of every node, shared by the supervisor's parts.
#[derive(Clone, Debug, Default)]
pub struct FaultSet {
    inner: Arc<Mutex<BTreeMap<String, Vec<Fault>>>>,
}

impl FaultSet {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<Fault>>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every node's active faults (nodes without any are absent).
    pub fn all(&self) -> BTreeMap<String, Vec<Fault>> {
        self.lock().clone()
    }

    pub fn active(&self, node: &str) -> Vec<Fault> {
        self.lock().get(node).cloned().unwrap_or_default()
    }

    /// Records `fault` on `node`, replacing an active fault of the same kind (but several
    /// ports may be blocked at once).
    pub fn add(&self, node: &str, fault: Fault) {
        let mut all = self.lock();
        let list = all.entry(node.to_string()).or_default();
        let replaced = |f: &Fault| match (f, &fault) {
            (Fault::BlockPort { port: a }, Fault::BlockPort { port: b }) => a == b,
            _ => f.name() == fault.name(),
        };
        list.retain(|f| !replaced(f));
        list.push(fault);
    }

    /// Forgets every fault of `node` and returns them.
    pub fn clear(&self, node: &str) -> Vec<Fault> {
        self.lock().remove(node).unwrap_or_default()
    }

    /// Does `node` have a fault that stops it from reaching `port` on the other nodes?
    /// (`block-port PORT`, and `node-down`, which cuts everything.)
    pub fn blocks_port(&self, node: &str, port: u16) -> bool {
        self.active(node).iter().any(|f| {
            matches!(f, Fault::BlockPort { port: p } if *p == port) || *f == Fault::NodeDown
        })
    }

    /// Consumes the one-shot `kubeadm-join-fails` of `node`: true once, for the next join.
    pub fn take_join_failure(&self, node: &str) -> bool {
        let mut all = self.lock();
        let Some(list) = all.get_mut(node) else {
            return false;
        };
        let before = list.len();
        list.retain(|f| *f != Fault::KubeadmJoinFails);
        let taken = list.len() != before;
        if list.is_empty() {
            all.remove(node);
        }
        taken
    }

    /// Is the node's `/etc/kubernetes` full?
    pub fn disk_full(&self, node: &str) -> bool {
        self.active(node).contains(&Fault::DiskFull)
    }

    /// Consumes one of `node`'s `api-conflicts`: true when this write must answer 409.
    pub fn take_conflict(&self, node: &str) -> bool {
        let mut all = self.lock();
        let Some(list) = all.get_mut(node) else {
            return false;
        };
        let mut taken = false;
        for f in list.iter_mut() {
            if let Fault::ApiConflicts { remaining } = f
                && *remaining > 0
            {
                *remaining -= 1;
                taken = true;
            }
        }
        list.retain(|f| *f != Fault::ApiConflicts { remaining: 0 });
        if list.is_empty() {
            all.remove(node);
        }
        taken
    }

    /// How much longer than usual a component (re)started on `node` now takes to be ready.
    pub fn slow(&self, node: &str) -> Option<Duration> {
        self.active(node).iter().find_map(|f| match f {
            Fault::SlowComponent { seconds } => Some(Duration::from_secs(*seconds)),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shot_faults_are_consumed() {
        let set = FaultSet::default();
        set.add("cp2", Fault::KubeadmJoinFails);
        set.add("cp1", Fault::ApiConflicts { remaining: 2 });
        assert!(set.take_join_failure("cp2"));
        assert!(!set.take_join_failure("cp2"));
        assert!(set.take_conflict("cp1"));
        assert!(set.take_conflict("cp1"));
        assert!(!set.take_conflict("cp1"));
        assert!(set.all().is_empty());
    }

    #[test]
    fn block_port_and_node_down_cut_ports() {
        let set = FaultSet::default();
        set.add("cp2", Fault::BlockPort { port: 2380 });
        assert!(set.blocks_port("cp2", 2380));
        assert!(!set.blocks_port("cp2", 6443));
        assert!(!set.blocks_port("cp1", 2380));
        set.add("w1", Fault::NodeDown);
        assert!(set.blocks_port("w1", 6443));
        set.add("cp2", Fault::BlockPort { port: 2379 });
        set.add("cp2", Fault::BlockPort { port: 2380 });
        assert!(set.blocks_port("cp2", 2379));
        assert_eq!(
            set.clear("cp2"),
            vec![
                Fault::BlockPort { port: 2379 },
                Fault::BlockPort { port: 2380 }
            ]
        );
        assert!(!set.blocks_port("cp2", 2380));
    }

    #[test]
    fn faults_serialize_with_their_command_names() {
        let text = serde_json::to_string(&Fault::BlockPort { port: 2380 }).unwrap();
        assert_eq!(text, r#"{"kind":"block-port","port":2380}"#);
        assert_eq!(
            Fault::SlowComponent { seconds: 5 }.to_string(),
            "slow-component 5"
        );
    }
}
