//! The simulated kube-apiserver: HTTPS with the node's serving certificate, objects in etcd,
//! client-certificate and bearer-token auth, enough REST for kubectl and kube-rs.
//!
//! OWNER: helper B (apiserver + etcd client).

// TEMPORARY (lead): the shape helper B fills in; replaced at merge.
use super::etcd::EtcdClient;
use super::{LabDir, LabNode};
use crate::kubeadm::KubeVersion;
pub struct ApiServerConfig;
impl ApiServerConfig {
    pub fn from_manifest(
        _l: &LabDir,
        _n: &LabNode,
        _v: KubeVersion,
        _m: &str,
    ) -> Result<Self, String> {
        Err("stub".into())
    }
}
pub struct ApiServer;
impl ApiServer {
    pub async fn start(_c: ApiServerConfig) -> Result<ApiServer, String> {
        Err("stub".into())
    }
    pub async fn stop(self) {}
}
pub async fn seed(_e: &EtcdClient, _o: &[serde_json::Value]) -> Result<(), String> {
    Err("stub".into())
}
