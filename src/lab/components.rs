//! The simulated node agents: kubelet (with its container runtime and static pods),
//! kube-proxy, kube-controller-manager (bootstrapsigner, node lifecycle) and kube-scheduler.
//!
//! OWNER: helper C (components).

// TEMPORARY (lead): the shape helper C fills in; replaced at merge.
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::{ExecOutput, LabDir, LabNode, LabSpec};
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
#[derive(Clone, Debug, Default)]
pub struct LabTimings {
    pub heartbeat: Duration,
}
pub trait Running: Send + Sync {
    fn stop(self: Box<Self>) -> BoxFuture<'static, ()>;
    fn exited(&self) -> Option<String>;
}
pub trait ApiServerLauncher: Send + Sync {
    fn launch(
        &self,
        lab: LabDir,
        node: LabNode,
        manifest_yaml: String,
    ) -> BoxFuture<'static, Result<Box<dyn Running>, String>>;
}
pub struct NodeAgentConfig {
    pub lab: LabDir,
    pub spec: Arc<LabSpec>,
    pub node: LabNode,
    pub ns_pid: Option<u32>,
    pub timings: LabTimings,
    pub apiserver: Arc<dyn ApiServerLauncher>,
}
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct NodeReport {}
pub struct NodeAgent;
impl NodeAgent {
    pub fn start(_c: NodeAgentConfig) -> NodeAgent {
        NodeAgent
    }
    pub async fn exec(&self, _argv: Vec<String>) -> ExecOutput {
        ExecOutput::default()
    }
    pub async fn report(&self) -> NodeReport {
        NodeReport {}
    }
    pub async fn shutdown(self) {}
}
