//! `hactl lab status`: the lab's ground truth, read from the parts themselves (the API, etcd,
//! haproxy, the served certificates, and each node agent's own view).

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};

use super::LabDir;

/// A kube-rs client with the lab's admin.conf, as an operator's kubectl would use it.
pub async fn admin_client(lab: &LabDir) -> Result<kube::Client, String> {
    let path = lab.admin_conf();
    let kc = kube::config::Kubeconfig::read_from(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    kube::Client::try_from(cfg).map_err(|e| e.to_string())
}

/// The names of the Nodes whose Ready condition is True.
pub async fn ready_nodes(lab: &LabDir) -> Result<Vec<String>, String> {
    let client = admin_client(lab).await?;
    let nodes: Api<Node> = Api::all(client);
    let list = nodes
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(list
        .items
        .into_iter()
        .filter(|n| node_ready(n).0)
        .filter_map(|n| n.metadata.name)
        .collect())
}

/// Whether a Node is Ready, and the condition's reason and message when it is not.
pub fn node_ready(node: &Node) -> (bool, Option<String>) {
    let cond = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    match cond {
        None => (
            false,
            Some("no Ready condition: the kubelet never posted status".into()),
        ),
        Some(c) if c.status == "True" => (true, None),
        Some(c) => (
            false,
            Some(format!(
                "{}: {}",
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            )),
        ),
    }
}

/// The lab's ground truth (filled in at integration).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct LabStatus {
    pub healthy: bool,
}

pub async fn gather(_lab: &LabDir) -> Result<LabStatus, super::LabError> {
    Err(super::LabError::msg("not yet"))
}

pub fn render(s: &LabStatus) -> String {
    format!("{s:?}")
}
