//! What kubeadm writes for a version: every node's files and the cluster's initial objects.
//!
//! OWNER: helper A (pki + files). Interface used by others:
//! `generate(&LabSpec) -> Result<ClusterFiles, FilesError>`, `NodeFile`, `Content`.

// TEMPORARY (lead): the shapes helper A fills in; replaced at merge.
pub enum Content {
    Data(Vec<u8>),
    Symlink(String),
    Dir,
}
pub struct NodeFile {
    pub path: String,
    pub mode: u32,
    pub content: Content,
}
pub struct ClusterFiles {
    pub nodes: std::collections::BTreeMap<String, Vec<NodeFile>>,
    pub objects: Vec<serde_json::Value>,
    pub bootstrap_token: String,
}
pub fn generate(_s: &super::LabSpec) -> Result<ClusterFiles, String> {
    Err("stub".into())
}
