//! `lab.json`, the lab's record: read by `up`, `down`, `status` and the supervisor alike, so it
//! lives apart from all of them.

use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
