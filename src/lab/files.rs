//! What kubeadm writes for a version: every node's files and the cluster's initial objects.
//!
//! OWNER: helper A (pki + files). Interface used by others:
//! `generate(&LabSpec) -> Result<ClusterFiles, FilesError>`, `NodeFile`, `Content`.
