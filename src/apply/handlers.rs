//! Handler steps: the restart (through the node's own tools, or by deleting kube-proxy's Pod),
//! then the check against the cluster, polled on the clock until it holds or its time is up:
//! the Node Ready with its Lease renewed, a leader Lease renewed, a new kube-proxy Pod ready,
//! cluster-info re-signed.

use std::collections::BTreeSet;
use std::time::Duration;

use super::driver::{CHECK_TIMEOUT, Ctx, Sink, StepError};
use crate::observed::ContainerRuntime;
use crate::plan::{Handler, HandlerAction, HandlerCheck};
use crate::seams::{Clock, ClusterApi, NodeOps, Signer};

const KUBE_PROXY: &str = "k8s-app=kube-proxy";

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
}

impl<N: NodeOps, C: ClusterApi, K: Clock, S: Signer, J: Sink> Ctx<'_, N, C, K, S, J> {
    pub(super) async fn handler_step(&mut self, h: &Handler) -> Result<(), StepError> {
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
                let name = component.as_str();
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
                let out = seams.node.run(&node, &list).await?;
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
                        let out = seams.node.run(&node, &cmd).await?;
                        if !out.success() {
                            return Err(StepError::Failed(format!(
                                "{} on {node} failed: {}",
                                cmd.join(" "),
                                out.stderr.trim()
                            )));
                        }
                    }
                }
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
            // kube-apiserver rereads its certificate; the bootstrapsigner re-signs by itself.
            HandlerAction::ReloadServingCertificate { .. }
            | HandlerAction::AwaitBootstrapSigner => {}
        }
        let deadline = seams.clock.now() + CHECK_TIMEOUT;
        loop {
            if holds(ctx, h, &before).await? {
                return Ok(());
            }
            if seams.clock.now() >= deadline {
                return Err(StepError::Failed(format!(
                    "{}: {} did not hold within {} s",
                    h.id,
                    h.verify,
                    CHECK_TIMEOUT.as_secs()
                )));
            }
            seams.clock.sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Whether the handler's check holds now. A call that fails is a check not holding yet (the
/// API is briefly away while components restart).
async fn holds<N, C, K, S, J>(
    ctx: &Ctx<'_, N, C, K, S, J>,
    h: &Handler,
    before: &Before,
) -> Result<bool, StepError>
where
    N: NodeOps,
    C: ClusterApi,
    K: Clock,
    S: Signer,
    J: Sink,
{
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
        // The served certificate is probed over TLS by the command (not a seam here); a
        // handler without a check has nothing to wait for.
        Some(HandlerCheck::ServedCertificate { .. }) | None => true,
    })
}
