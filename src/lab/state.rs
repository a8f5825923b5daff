//! `lab.json`, the lab's record: read by `up`, `down`, `status` and the supervisor alike, so it
//! lives apart from all of them.

use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::components::Pace;
use super::faults::isolation::Isolation;
use super::node::{self, ProcessRecord};
use super::{LabDir, LabError, LabSpec};

/// `lab.json`: what the lab is and every process it started, so that `down` stops exactly
/// those (by PID and start time) and a failed `up` leaves a record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabState {
    pub spec: LabSpec,
    pub ssh_port: u16,
    /// The hactl binary the node stand-ins call.
    pub exe: PathBuf,
    pub processes: Vec<ProcessRecord>,
    /// The cgroups and nftables table the lab made for its faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<Isolation>,
    /// `lab up --kubeadm-etcd-timeout`: the nodes' kubeadm gives up on etcd sooner than its
    /// own schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeadm_etcd_timeout_secs: Option<u64>,
    /// `lab up --pace`: how fast the components act (absent in older records: the test pace).
    #[serde(default, skip_serializing_if = "Pace::is_test")]
    pub pace: Pace,
}

impl LabState {
    pub fn read(lab: &LabDir) -> Result<LabState, LabError> {
        let path = lab.state_file();
        let text = fs::read_to_string(&path).map_err(|e| {
            LabError::msg(format!(
                "{} holds no lab ({e}); start one with `hactl lab up --plan PLAN --dir {}`",
                path.display(),
                lab.root().display()
            ))
        })?;
        serde_json::from_str(&text)
            .map_err(|e| LabError::msg(format!("{} is not a lab record: {e}", path.display())))
    }

    pub fn write(&self, lab: &LabDir) -> Result<(), LabError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| LabError::msg(e.to_string()))?;
        let path = lab.state_file();
        let tmp = path.with_extension("json.tmp");
        node::write_file(&tmp, text.as_bytes(), 0o644)?;
        fs::rename(&tmp, &path).map_err(|e| LabError::io(&path, "replace", e))
    }

    pub fn live_processes(&self) -> Vec<&ProcessRecord> {
        self.processes.iter().filter(|p| p.is_alive()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubeadm::KubeVersion;
    use crate::lab::LabEndpoint;
    use crate::observed::ContainerRuntime;

    fn state(pace: Pace) -> LabState {
        LabState {
            spec: LabSpec {
                cluster_name: "lab".into(),
                endpoint: LabEndpoint {
                    host: "k8s-api.lab.internal".into(),
                    addresses: vec!["127.0.0.100".parse().expect("ip")],
                    port: 6443,
                },
                nodes: vec![],
                version: KubeVersion::new(1, 31, 14),
                runtime: ContainerRuntime::Containerd,
            },
            ssh_port: 22,
            exe: "/usr/bin/hactl".into(),
            processes: vec![],
            isolation: None,
            kubeadm_etcd_timeout_secs: None,
            pace,
        }
    }

    /// The test pace is written as before `--pace` existed (no key), and a record without the
    /// key is a lab at the test pace: either hactl reads the other's lab.json.
    #[test]
    fn the_pace_is_recorded_only_when_it_is_not_the_test_pace() {
        let test = serde_json::to_value(state(Pace::Test)).unwrap();
        assert!(test.get("pace").is_none(), "{test:#}");
        let read: LabState = serde_json::from_value(test).unwrap();
        assert_eq!(read.pace, Pace::Test);

        let cluster = serde_json::to_value(state(Pace::Cluster)).unwrap();
        assert_eq!(cluster["pace"], "cluster");
        let read: LabState = serde_json::from_value(cluster).unwrap();
        assert_eq!(read.pace, Pace::Cluster);
        let timings = read.pace.timings();
        assert_eq!(timings.heartbeat, std::time::Duration::from_secs(10));
        assert_eq!(timings.node_grace, std::time::Duration::from_secs(40));
        assert_eq!(
            timings.request_timeout,
            Pace::Test.timings().request_timeout
        );
    }
}
