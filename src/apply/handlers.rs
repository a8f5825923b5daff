//! Handler steps: the restart (through the node's own tools, or by deleting kube-proxy's Pod),
//! then the check against the cluster, polled on the clock until it holds or its time is up:
//! the Node Ready with its Lease renewed, a leader Lease renewed, a new kube-proxy Pod ready,
//! cluster-info re-signed.

use std::collections::BTreeSet;
use std::time::Duration;

use super::driver::{CHECK_TIMEOUT, Ctx, Sink, StepError};
use crate::observed::ContainerRuntime;
use crate::plan::{Handler, HandlerAction, HandlerCheck};
use crate::planner::CERT_RELOAD_TIMEOUT_SECS;
use crate::seams::{Clock, ClusterApi, NodeOps, Signer};

const KUBE_PROXY: &str = "k8s-app=kube-proxy";
const CA_CRT: &str = "/etc/kubernetes/pki/ca.crt";

fn words(argv: &[&str]) -> Vec<String> {
    argv.iter().map(|s| s.to_string()).collect()
}

/// What the check compares with: the Lease's resourceVersion and holder before, the Pods
/// before.
#[derive(Default)]
struct Before {
    lease_version: Option<String>,
    holder: Option<String>,
    pods: BTreeSet<String>,
    /// The cluster CA the served certificate is verified against, read once.
    ca_pem: Option<String>,
}

impl<N: NodeOps, C: ClusterApi, K: Clock, S: Signer, J: Sink> Ctx<'_, N, C, K, S, J> {
    /// Runs the handler and waits for its check; `undo`: after a rollback put the old files
    /// back, so the check is the old state's.
    pub(super) async fn handler_step(&mut self, h: &Handler, undo: bool) -> Result<(), StepError> {
        let ctx = self;
        let node = h.node.clone().unwrap_or_default();
        let seams = ctx.seams;
        let mut before = Before::default();
        match &h.check {
            Some(HandlerCheck::NodeReady { node }) => {
                before.lease_version = Some(
                    seams
                        .api
                        .get_lease("kube-node-lease", node)
                        .await?
                        .resource_version,
                );
            }
            Some(HandlerCheck::LeaderLeaseRenewed { lease }) => {
                let l = seams.api.get_lease("kube-system", lease).await?;
                before.lease_version = Some(l.resource_version);
                before.holder = l.holder;
            }
            Some(HandlerCheck::ServedCertificate { .. }) => {
                let ca =
                    seams.node.read_file(&node, CA_CRT).await?.ok_or_else(|| {
                        StepError::Failed(format!("{CA_CRT} on {node} is missing"))
                    })?;
                before.ca_pem = Some(String::from_utf8_lossy(&ca.content).into_owned());
            }
            Some(HandlerCheck::KubeProxyReady { node }) => {
                before.pods = seams
                    .api
                    .list_pods("kube-system", KUBE_PROXY, Some(node))
                    .await?
                    .into_iter()
                    .map(|p| p.uid)
                    .collect();
            }
            _ => {}
        }
        match &h.action {
            HandlerAction::RestartKubelet => {
                let out = seams
                    .node
                    .run(&node, &words(&["systemctl", "restart", "kubelet"]))
                    .await?;
                if !out.success() {
                    return Err(StepError::Failed(format!(
                        "systemctl restart kubelet on {node} failed: {}",
                        out.stderr.trim()
                    )));
                }
            }
            HandlerAction::RestartStaticPod { component, runtime } => {
                restart_static_pod(seams.node, &node, component.as_str(), runtime).await?;
            }
            HandlerAction::RestartKubeProxy => {
                for p in seams
                    .api
                    .list_pods("kube-system", KUBE_PROXY, Some(&node))
                    .await?
                {
                    seams.api.delete_pod("kube-system", &p.name).await?;
                }
            }
            // kube-apiserver rereads its certificate: restarted only if it does not serve the
            // new one in time.
            HandlerAction::ReloadServingCertificate { runtime } => {
                let reload = Duration::from_secs(CERT_RELOAD_TIMEOUT_SECS.into());
                if !ctx.poll(h, &before, undo, reload).await? {
                    restart_static_pod(seams.node, &node, "kube-apiserver", runtime).await?;
                }
            }
            // The bootstrapsigner re-signs by itself.
            HandlerAction::AwaitBootstrapSigner => {}
        }
        if ctx.poll(h, &before, undo, CHECK_TIMEOUT).await? {
            return Ok(());
        }
        Err(StepError::Failed(format!(
            "{}: {} did not hold within {} s",
            h.id,
            h.verify,
            CHECK_TIMEOUT.as_secs()
        )))
    }

    /// Polls the handler's check on the clock, once a second, until it holds (true) or `within`
    /// has passed (false).
    async fn poll(
        &self,
        h: &Handler,
        before: &Before,
        undo: bool,
        within: Duration,
    ) -> Result<bool, StepError> {
        let ctx = self;
        let deadline = ctx.seams.clock.now() + within;
        loop {
            if ctx.holds(h, before, undo).await? {
                return Ok(true);
            }
            if ctx.seams.clock.now() >= deadline {
                return Ok(false);
            }
            ctx.seams.clock.sleep(Duration::from_secs(1)).await;
        }
    }

    /// Whether the handler's check holds now. A call that fails is a check not holding yet (the
    /// API is briefly away while components restart).
    async fn holds(&self, h: &Handler, before: &Before, undo: bool) -> Result<bool, StepError> {
        let ctx = self;
        let api = ctx.seams.api;
        Ok(match &h.check {
            Some(HandlerCheck::NodeReady { node }) => {
                let ready = api.get_node(node).await.is_ok_and(|n| n.ready);
                let renewed = api
                    .get_lease("kube-node-lease", node)
                    .await
                    .is_ok_and(|l| Some(l.resource_version) != before.lease_version);
                ready && renewed
            }
            Some(HandlerCheck::LeaderLeaseRenewed { lease }) => api
                .get_lease("kube-system", lease)
                .await
                // The leader's renewals go on by themselves: the new container is a new holder.
                .is_ok_and(|l| {
                    Some(l.resource_version) != before.lease_version && l.holder != before.holder
                }),
            Some(HandlerCheck::KubeProxyReady { node }) => api
                .list_pods("kube-system", KUBE_PROXY, Some(node))
                .await
                .is_ok_and(|pods| {
                    pods.iter()
                        .any(|p| p.ready && !before.pods.contains(&p.uid))
                }),
            Some(HandlerCheck::ClusterInfoSigned) => {
                match api.get_configmap("kube-public", "cluster-info").await {
                    Ok(cm) => ctx
                        .jws_before
                        .iter()
                        .all(|(k, old)| cm.data.get(k).is_some_and(|v| v != old)),
                    Err(_) => false,
                }
            }
            // After an undo the old certificate is back, which never named the load balancer:
            // the API server must serve it for its own address.
            Some(HandlerCheck::ServedCertificate {
                address,
                server_name,
            }) => {
                let own = address
                    .rsplit_once(':')
                    .map(|(host, _)| host.trim_start_matches('[').trim_end_matches(']'))
                    .unwrap_or(address);
                let name = if undo { own } else { server_name.as_str() };
                let ca = before.ca_pem.as_deref().unwrap_or_default();
                api.verify_served(address, name, ca).await.is_ok()
            }
            // A handler without a check has nothing to wait for.
            None => true,
        })
    }
}

/// Restarts a static pod with the node's runtime: `crictl stopp` and `rmp` of its sandbox, or
/// `docker kill` of its container; the kubelet makes it again from its manifest.
async fn restart_static_pod<N: NodeOps>(
    node_ops: &N,
    node: &str,
    name: &str,
    runtime: &str,
) -> Result<(), StepError> {
    let docker = runtime == ContainerRuntime::Docker.as_str();
    let list = if docker {
        words(&[
            "docker",
            "ps",
            "-q",
            "--filter",
            &format!("name=k8s_{name}_"),
        ])
    } else {
        words(&["crictl", "pods", "--name", name, "-q"])
    };
    let out = node_ops.run(node, &list).await?;
    let ids: Vec<String> = out.stdout.split_whitespace().map(String::from).collect();
    if !out.success() || ids.is_empty() {
        return Err(StepError::Failed(format!(
            "no {name} pod to restart on {node}: {}",
            out.stderr.trim()
        )));
    }
    for id in ids {
        let cmds = if docker {
            vec![words(&["docker", "kill", &id])]
        } else {
            vec![
                words(&["crictl", "stopp", &id]),
                words(&["crictl", "rmp", &id]),
            ]
        };
        for cmd in cmds {
            let out = node_ops.run(node, &cmd).await?;
            if !out.success() {
                return Err(StepError::Failed(format!(
                    "{} on {node} failed: {}",
                    cmd.join(" "),
                    out.stderr.trim()
                )));
            }
        }
    }
    Ok(())
}
