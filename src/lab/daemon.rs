//! The lab's supervisor (`hactl lab daemon`): runs every node's simulated agents and answers
//! the control socket, through which node commands (`systemctl`, `crictl`, `docker`,
//! `kubeadm`, `kubelet`) reach their node and `lab status` and `lab down` reach the lab.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::watch;

use super::apiserver::{self, ApiServer, ApiServerConfig};
use super::components::{ApiServerLauncher, BoxFuture, NodeAgent, NodeAgentConfig, Running};
use super::control::{Request, Response};
use super::faults::isolation::{self, Isolation};
use super::faults::{Fault, FaultSet, disk};
use super::kubeadm::{self, KubeadmCtx};
use super::node::{self, ProcessRecord};
use super::state::LabState;
use super::{ExecOutput, LabDir, LabError, LabNode, LabSpec};

/// Starts kube-apiserver static pods as the simulated API server.
struct Launcher {
    spec: Arc<LabSpec>,
    faults: FaultSet,
}

struct RunningApiServer(ApiServer);

impl Running for RunningApiServer {
    fn stop(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move { self.0.stop().await })
    }
    fn exited(&self) -> Option<String> {
        None
    }
}

impl ApiServerLauncher for Launcher {
    fn launch(
        &self,
        lab: LabDir,
        node: LabNode,
        manifest_yaml: String,
    ) -> BoxFuture<'static, Result<Box<dyn Running>, String>> {
        let version = self.spec.version;
        // `slow-component` counts from this start; `api-conflicts` is read at each write.
        let hooks = apiserver::LabHooks {
            ready_delay: self.faults.slow(&node.name).unwrap_or_default(),
            faults: Some((self.faults.clone(), node.name.clone())),
        };
        Box::pin(async move {
            let config = ApiServerConfig::from_manifest(&lab, &node, version, &manifest_yaml)?;
            let server = apiserver::start_with(config, hooks)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Box::new(RunningApiServer(server)) as Box<dyn Running>)
        })
    }
}

/// The supervisor's main loop; returns after a `Shutdown` request or SIGTERM, with every
/// agent stopped.
pub async fn run(lab: LabDir) -> Result<(), LabError> {
    super::install_crypto_provider();
    let state = LabState::read(&lab)?;
    let spec = Arc::new(state.spec.clone());
    let faults = FaultSet::default();
    let launcher: Arc<dyn ApiServerLauncher> = Arc::new(Launcher {
        spec: spec.clone(),
        faults: faults.clone(),
    });
    let mut agents = BTreeMap::new();
    for node in &spec.nodes {
        let ns_pid = state
            .processes
            .iter()
            .find(|p| p.name == format!("sshd-{}", node.name))
            .map(|p| p.pid as u32);
        let agent = NodeAgent::start(NodeAgentConfig {
            lab: lab.clone(),
            spec: spec.clone(),
            node: node.clone(),
            ns_pid,
            timings: state.pace.timings(),
            apiserver: launcher.clone(),
            faults: faults.clone(),
        });
        agents.insert(node.name.clone(), agent);
    }
    let agents = Arc::new(agents);
    let env = Arc::new(FaultEnv {
        ssh_port: state.ssh_port,
        isolation: state.isolation.clone().unwrap_or_default(),
        sshd: state
            .processes
            .iter()
            .filter_map(|p| Some((p.name.strip_prefix("sshd-")?.to_string(), p.clone())))
            .collect(),
    });

    let kubeadm_etcd_timeout = state.kubeadm_etcd_timeout_secs.map(Duration::from_secs);
    let sock = lab.control_socket();
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).map_err(|e| LabError::io(&sock, "listen on", e))?;
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| LabError::msg(format!("cannot handle SIGTERM: {e}")))?;
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let stop_tx = stop_tx.clone();
                let ctx = ServeCtx { lab: lab.clone(), spec: spec.clone(), agents: agents.clone(), faults: faults.clone(), env: env.clone(), kubeadm_etcd_timeout };
                connections.spawn(async move { serve(stream, ctx, stop_tx).await });
            }
            // Reap finished connections so the set does not grow for the lab's lifetime.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stop_rx.changed() => break,
            _ = term.recv() => break,
        }
    }
    drop(listener);
    let _ = std::fs::remove_file(&sock);
    // Commands in flight (the Shutdown request's own answer among them) get a moment to
    // finish; the rest are cut off, which drops their references to the agents.
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        connections.shutdown().await;
    }
    let agents = Arc::try_unwrap(agents)
        .map_err(|_| LabError::msg("an agent is still referenced after every connection ended"))?;
    let stops: Vec<_> = agents
        .into_values()
        .map(|a| tokio::spawn(a.shutdown()))
        .collect();
    for s in stops {
        let _ = s.await;
    }
    Ok(())
}

/// What a control connection may reach.
struct ServeCtx {
    lab: LabDir,
    spec: Arc<LabSpec>,
    agents: Arc<BTreeMap<String, NodeAgent>>,
    faults: FaultSet,
    env: Arc<FaultEnv>,
    /// `lab up --kubeadm-etcd-timeout`.
    kubeadm_etcd_timeout: Option<Duration>,
}

/// What making faults real needs besides the agents: the lab's cgroups and nftables table,
/// each node's sshd (its mount namespace), the sshd port.
struct FaultEnv {
    ssh_port: u16,
    isolation: Isolation,
    sshd: BTreeMap<String, ProcessRecord>,
}

async fn serve(stream: tokio::net::UnixStream, ctx: ServeCtx, stop: watch::Sender<bool>) {
    let ServeCtx {
        lab,
        spec,
        agents,
        faults,
        kubeadm_etcd_timeout,
        ..
    } = &ctx;
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    if tokio::io::BufReader::new(read)
        .read_line(&mut line)
        .await
        .is_err()
    {
        return;
    }
    let response = match serde_json::from_str::<Request>(&line) {
        Err(e) => Response::Error {
            message: format!("unreadable request: {e}"),
        },
        Ok(Request::Ping) => Response::Ok,
        Ok(Request::Shutdown) => {
            let _ = stop.send(true);
            Response::Ok
        }
        Ok(Request::Report) => {
            let mut nodes = BTreeMap::new();
            for (name, agent) in agents.iter() {
                nodes.insert(name.clone(), agent.report().await);
            }
            Response::Report {
                nodes,
                faults: faults.all(),
            }
        }
        Ok(Request::Fault { node, fault }) => match agents.get(&node) {
            None => no_node(&node),
            Some(agent) => match ctx.apply_fault(agent, &node, fault).await {
                Ok(()) => Response::Ok,
                Err(message) => Response::Error { message },
            },
        },
        Ok(Request::Heal { node }) => match agents.get(&node) {
            None => no_node(&node),
            Some(agent) => match ctx.heal(agent, &node).await {
                Ok(()) => Response::Ok,
                Err(message) => Response::Error { message },
            },
        },
        Ok(Request::Exec { node, argv }) => match (agents.get(&node), spec.node(&node)) {
            (Some(agent), Some(lab_node)) => {
                Response::Exec(match argv.first().map(String::as_str) {
                    Some("kubeadm") => {
                        let kctx = KubeadmCtx {
                            lab,
                            spec,
                            node: lab_node,
                            agent,
                            faults,
                            etcd_timeout: *kubeadm_etcd_timeout,
                        };
                        kubeadm::run(&kctx, &argv[1..]).await
                    }
                    Some("kubelet") => kubelet(spec, &argv[1..]),
                    _ => agent.exec(argv).await,
                })
            }
            _ => no_node(&node),
        },
    };
    let mut out = serde_json::to_string(&response).unwrap_or_else(|e| {
        format!(r#"{{"result":"error","message":"cannot encode the answer: {e}"}}"#)
    });
    out.push('\n');
    let _ = write.write_all(out.as_bytes()).await;
}

fn no_node(node: &str) -> Response {
    Response::Error {
        message: format!("the lab has no node {node:?}"),
    }
}

impl ServeCtx {
    /// Makes `fault` real on `node` and records it (in memory and in `DIR/lab/faults.json`).
    async fn apply_fault(&self, agent: &NodeAgent, node: &str, fault: Fault) -> Result<(), String> {
        let (lab, spec, env, faults) = (&self.lab, &*self.spec, &*self.env, &self.faults);
        env.isolation.check(&fault)?;
        let sshd = env.sshd.get(node).filter(|p| p.is_alive());
        if fault == Fault::DiskFull && sshd.is_none() {
            return Err(format!(
                "disk-full: the sshd of {node} (its mount namespace) is gone"
            ));
        }
        let before = faults.active(node);
        faults.add(node, fault.clone());
        let made = self.make_real(agent, node, &fault, sshd, &before).await;
        if let Err(e) = made {
            // Back to what was active before, so the record matches the lab.
            faults.clear(node);
            for f in before {
                faults.add(node, f);
            }
            let _ = env
                .isolation
                .apply(spec, env.ssh_port, node, &faults.active(node));
            return Err(e);
        }
        persist(lab, faults)
    }

    async fn make_real(
        &self,
        agent: &NodeAgent,
        node: &str,
        fault: &Fault,
        sshd: Option<&ProcessRecord>,
        before: &[Fault],
    ) -> Result<(), String> {
        let (lab, spec, env, faults) = (&self.lab, &*self.spec, &*self.env, &self.faults);
        env.isolation
            .apply(spec, env.ssh_port, node, &faults.active(node))?;
        if matches!(fault, Fault::SshDown | Fault::NodeDown)
            && let Some(n) = spec.node(node)
        {
            isolation::cut_connections(n.address, env.ssh_port);
        }
        match fault {
            Fault::NodeDown if !before.contains(&Fault::NodeDown) => {
                // The machine stops: its sessions (everything in its namespace but the sshd that
                // holds it), then the kubelet and every pod (API server, etcd, ...).
                if let Some(p) = sshd
                    && let Some(ns) = p.mnt_ns
                {
                    let (keep, start) = (p.pid, p.start_time);
                    tokio::task::spawn_blocking(move || {
                        // Only while the sshd still holds it is the number this node's.
                        if let Some(_pin) = node::pin_namespace(keep, start, ns) {
                            node::stop_namespace_except(ns, keep, Duration::from_secs(1))
                        }
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                }
                agent.power_off().await;
            }
            Fault::DiskFull => {
                let pid = sshd.map(|p| p.pid as u32).unwrap_or_default();
                let (lab, node) = (lab.clone(), node.to_string());
                tokio::task::spawn_blocking(move || disk::fill(&lab, &node, pid))
                    .await
                    .map_err(|e| e.to_string())??;
            }
            _ => {}
        }
        Ok(())
    }

    /// Undoes every fault of `node`.
    async fn heal(&self, agent: &NodeAgent, node: &str) -> Result<(), String> {
        let (lab, spec, env, faults) = (&self.lab, &*self.spec, &*self.env, &self.faults);
        let active = faults.clear(node);
        let mut errors = vec![];
        if let Err(e) = env.isolation.apply(spec, env.ssh_port, node, &[]) {
            errors.push(e);
        }
        if let Some(p) = env.sshd.get(node).filter(|p| p.is_alive()) {
            let (lab2, node2, pid) = (lab.clone(), node.to_string(), p.pid as u32);
            let drained = tokio::task::spawn_blocking(move || disk::drain(&lab2, &node2, pid))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
            if let Err(e) = drained {
                // Still full: keep it on record so that status says so.
                faults.add(node, Fault::DiskFull);
                errors.push(e);
            }
        }
        if active.contains(&Fault::NodeDown) {
            // The machine boots: the kubelet starts the static pods from the manifests.
            agent.power_on().await;
        }
        persist(lab, faults)?;
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// `DIR/lab/faults.json`: what `lab down` must undo even if the supervisor is gone.
fn persist(lab: &LabDir, faults: &FaultSet) -> Result<(), String> {
    let path = lab.lab_file("faults.json");
    let text = serde_json::to_string_pretty(&faults.all()).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// `kubelet --version` on a lab node.
fn kubelet(spec: &LabSpec, args: &[String]) -> ExecOutput {
    if args.iter().any(|a| a == "--version") {
        ExecOutput {
            stdout: format!("Kubernetes {}\n", spec.version),
            ..Default::default()
        }
    } else {
        ExecOutput {
            stderr:
                "hactl lab: the kubelet runs as a service here; use `systemctl restart kubelet`\n"
                    .into(),
            code: 1,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_are_json_lines() {
        let r = Request::Exec {
            node: "cp1".into(),
            argv: vec!["crictl".into(), "ps".into()],
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(text, r#"{"op":"exec","node":"cp1","argv":["crictl","ps"]}"#);
        let back: Response =
            serde_json::from_str(r#"{"result":"exec","stdout":"x\n","stderr":"","code":3}"#)
                .unwrap();
        assert!(matches!(back, Response::Exec(ExecOutput { code: 3, .. })));
    }
}
