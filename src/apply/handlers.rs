//! Handler steps: the restart (through the node's own tools, or by deleting kube-proxy's Pod),
//! then the check against the cluster, polled on the clock until it holds or its time is up:
//! the Node Ready with its Lease renewed, a leader Lease renewed, a new kube-proxy Pod ready,
//! cluster-info re-signed.

use std::collections::BTreeSet;
use std::time::Duration;

use super::driver::{Ctx, Sink, StepError};
use crate::configmaps::KubeadmConfigMap;
use crate::jws;
use crate::observed::ContainerRuntime;
use crate::plan::{Handler, HandlerAction, HandlerCheck};
use crate::planner::CERT_RELOAD_TIMEOUT_SECS;
use crate::seams::{BootstrapToken, Clock, ClusterApi, ConfigMap, NodeOps, Signer};

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
                if ctx.poll(h, &before, undo, reload).await?.is_err() {
                    restart_static_pod(seams.node, &node, "kube-apiserver", runtime).await?;
                }
            }
            // The bootstrapsigner re-signs by itself.
            HandlerAction::AwaitBootstrapSigner => {}
        }
        // `systemctl restart` returns once the old kubelet has stopped: a renewal after it is
        // the new kubelet's (one read before could be the old one's last).
        if let Some(HandlerCheck::NodeReady { node }) = &h.check {
            let lease = seams.api.get_lease("kube-node-lease", node).await?;
            before.lease_version = Some(lease.resource_version);
        }
        match ctx.poll(h, &before, undo, ctx.check_timeout).await? {
            Ok(()) => Ok(()),
            Err(seen) => Err(StepError::Failed(format!(
                "{}: {} did not hold within {} s; last seen: {seen}",
                h.id,
                h.verify,
                ctx.check_timeout.as_secs()
            ))),
        }
    }

    /// Polls the handler's check on the clock, once a second, until it holds (`Ok`) or
    /// `within` has passed (`Err` with what was seen last).
    async fn poll(
        &self,
        h: &Handler,
        before: &Before,
        undo: bool,
        within: Duration,
    ) -> Result<Result<(), String>, StepError> {
        let ctx = self;
        let deadline = ctx.seams.clock.now() + within;
        loop {
            let seen = match ctx.holds(h, before, undo).await? {
                None => return Ok(Ok(())),
                Some(seen) => seen,
            };
            if ctx.seams.clock.now() >= deadline {
                return Ok(Err(seen));
            }
            ctx.seams.clock.sleep(Duration::from_secs(1)).await;
        }
    }

    /// `None` when the handler's check holds now, else what was seen instead. A call that
    /// fails is a check not holding yet (the API is briefly away while components restart).
    async fn holds(
        &self,
        h: &Handler,
        before: &Before,
        undo: bool,
    ) -> Result<Option<String>, StepError> {
        let ctx = self;
        let api = ctx.seams.api;
        let unless = |holds: bool, seen: String| (!holds).then_some(seen);
        Ok(match &h.check {
            Some(HandlerCheck::NodeReady { node }) => {
                let ready = match api.get_node(node).await {
                    Ok(n) if n.ready => None,
                    Ok(_) => Some(format!("Node {node} is not Ready")),
                    Err(e) => Some(format!("reading Node {node}: {e}")),
                };
                let renewed = match api.get_lease("kube-node-lease", node).await {
                    Ok(l) => unless(
                        Some(&l.resource_version) != before.lease_version.as_ref(),
                        format!(
                            "Lease kube-node-lease/{node} not renewed since the restart (renewTime {})",
                            l.renew_time.as_deref().unwrap_or("none")
                        ),
                    ),
                    Err(e) => Some(format!("reading Lease kube-node-lease/{node}: {e}")),
                };
                let seen: Vec<String> = ready.into_iter().chain(renewed).collect();
                (!seen.is_empty()).then(|| seen.join("; "))
            }
            Some(HandlerCheck::LeaderLeaseRenewed { lease }) => {
                match api.get_lease("kube-system", lease).await {
                    // The leader's renewals go on by themselves: the new container is a new
                    // holder.
                    Ok(l) => unless(
                        Some(&l.resource_version) != before.lease_version.as_ref()
                            && l.holder != before.holder,
                        format!(
                            "Lease kube-system/{lease} held by {} (renewTime {}), as before the restart",
                            l.holder.as_deref().unwrap_or("no one"),
                            l.renew_time.as_deref().unwrap_or("none")
                        ),
                    ),
                    Err(e) => Some(format!("reading Lease kube-system/{lease}: {e}")),
                }
            }
            Some(HandlerCheck::KubeProxyReady { node }) => {
                match api.list_pods("kube-system", KUBE_PROXY, Some(node)).await {
                    Ok(pods) => {
                        let ready = pods
                            .iter()
                            .any(|p| p.ready && !before.pods.contains(&p.uid));
                        let listed: Vec<String> = pods
                            .iter()
                            .map(|p| {
                                let age = if before.pods.contains(&p.uid) {
                                    "old"
                                } else {
                                    "new"
                                };
                                format!("{} ({age}, Ready={})", p.name, p.ready)
                            })
                            .collect();
                        unless(
                            ready,
                            if listed.is_empty() {
                                format!("no kube-proxy Pod on {node}")
                            } else {
                                format!("kube-proxy Pods on {node}: {}", listed.join(", "))
                            },
                        )
                    }
                    Err(e) => Some(format!("listing kube-proxy Pods on {node}: {e}")),
                }
            }
            // Every signature verifies for the kubeconfig cluster-info holds now, with its
            // token's secret, and every token has one: the bootstrapsigner caught up.
            Some(HandlerCheck::ClusterInfoSigned) => {
                let info = KubeadmConfigMap::ClusterInfo;
                let cm = api.get_configmap(info.namespace(), info.name()).await;
                let tokens = api.bootstrap_tokens().await;
                match (cm, tokens) {
                    (Ok(cm), Ok(tokens)) => {
                        let seen = unsigned(&cm, &tokens);
                        unless(seen.is_empty(), seen.join("; "))
                    }
                    (Err(e), _) => Some(format!("reading ConfigMap kube-public/cluster-info: {e}")),
                    (_, Err(e)) => Some(format!("reading the bootstrap tokens: {e}")),
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
                match api.verify_served(address, name, ca).await {
                    Ok(()) => None,
                    Err(e) => Some(format!("{address} for {name}: {e}")),
                }
            }
            // A handler without a check has nothing to wait for.
            None => None,
        })
    }
}

/// What keeps cluster-info from being signed for its kubeconfig: a token without a valid
/// signature, a signature without a token.
fn unsigned(cm: &ConfigMap, tokens: &[BootstrapToken]) -> Vec<String> {
    let kubeconfig = cm.data.get("kubeconfig").map_or("", String::as_str);
    let mut seen = Vec::new();
    for t in tokens {
        let key = format!("{}{}", jws::SIGNATURE_PREFIX, t.id);
        match cm.data.get(&key) {
            None => seen.push(format!("no {key} yet")),
            Some(sig) if *sig != jws::compute_detached_signature(kubeconfig, &t.id, &t.secret) => {
                seen.push(format!(
                    "{key} does not verify for the kubeconfig cluster-info holds"
                ))
            }
            Some(_) => {}
        }
    }
    for (key, id) in cm
        .data
        .keys()
        .filter_map(|k| Some((k, k.strip_prefix(jws::SIGNATURE_PREFIX)?)))
    {
        if !tokens.iter().any(|t| t.id == id) {
            seen.push(format!("{key} signs for a token that does not exist"));
        }
    }
    seen
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
