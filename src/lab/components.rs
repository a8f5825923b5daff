//! The simulated node agents: kubelet (with its container runtime and static pods),
//! kube-proxy, kube-controller-manager (bootstrapsigner, node lifecycle) and kube-scheduler.
//!
//!
//! Seams for the lead: `NodeAgent::start` per booted node, `NodeAgent::exec` for the node
//! commands (`systemctl`, `crictl`, `docker`), `NodeAgent::report` for `lab status`, and the
//! injected `ApiServerLauncher` that runs the kube-apiserver static pod. Every component talks
//! to the API only through `client::ApiClient` (JSON over HTTPS, verifying the server name).

pub mod client;
pub mod controllers;
pub use crate::jws;
pub mod kubelet;
pub mod manifest;
pub mod process;
pub mod runtime;
pub mod systemd;
pub mod timefmt;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::lab::{ExecOutput, LabDir, LabNode, LabSpec};

/// A boxed, sendable future (the same shape as `futures::future::BoxFuture`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How fast the lab's components act; real clusters are slower (10 s, 40 s, 10 s, …).
#[derive(Clone, Debug)]
pub struct LabTimings {
    /// Node status/lease renewal, leader lease renewal, static pod sync.
    pub heartbeat: Duration,
    /// A node whose Lease is older than this becomes Ready=Unknown.
    pub node_grace: Duration,
    /// leaseDurationSeconds of the leader Leases.
    pub lease_duration: Duration,
    /// The first restart delay of a crashed container; it doubles up to `max_backoff`.
    pub crash_backoff: Duration,
    pub max_backoff: Duration,
    /// Timeout of each API request.
    pub request_timeout: Duration,
}

impl Default for LabTimings {
    fn default() -> Self {
        LabTimings {
            heartbeat: Duration::from_secs(1),
            node_grace: Duration::from_secs(4),
            lease_duration: Duration::from_secs(4),
            crash_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(16),
            request_timeout: Duration::from_secs(3),
        }
    }
}

impl LabTimings {
    /// Every pace `factor` times slower; the API's request timeout stays (it bounds the
    /// server's answer, not the cluster's rhythm).
    fn slowed(self, factor: u32) -> LabTimings {
        LabTimings {
            heartbeat: self.heartbeat * factor,
            node_grace: self.node_grace * factor,
            lease_duration: self.lease_duration * factor,
            crash_backoff: self.crash_backoff * factor,
            max_backoff: self.max_backoff * factor,
            request_timeout: self.request_timeout,
        }
    }
}

/// `lab up --pace`: how fast the lab's components act, recorded in `lab.json`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Pace {
    /// Ten times a cluster's pace (kubelets heartbeat every second), so that tests see leases
    /// lapse and crashed pods restart within seconds.
    #[default]
    Test,
    /// About a cluster's pace (heartbeats every 10 s), for benchmarks: the lab's own load at the
    /// test pace would compete with what is measured (README's benchmark says how much).
    Cluster,
}

impl Pace {
    pub fn is_test(&self) -> bool {
        *self == Pace::Test
    }

    pub fn timings(self) -> LabTimings {
        match self {
            Pace::Test => LabTimings::default(),
            Pace::Cluster => LabTimings::default().slowed(10),
        }
    }
}

/// Something a static pod runs: a process or a task. `exited` is `Some(reason)` once it ended.
pub trait Running: Send + Sync {
    fn stop(self: Box<Self>) -> BoxFuture<'static, ()>;
    fn exited(&self) -> Option<String>;
}

/// Runs the kube-apiserver static pod of `node` from its manifest (the lead injects the
/// simulated API server here).
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
    /// A process in the node's mount namespace, for `nsenter`; `None` runs in the host's.
    pub ns_pid: Option<u32>,
    pub timings: LabTimings,
    pub apiserver: Arc<dyn ApiServerLauncher>,
    /// The lab's active faults (`block-port`, `slow-component`, …).
    pub faults: crate::lab::faults::FaultSet,
}

/// The kubelet's own state, for `lab status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeletReport {
    pub active: bool,
    /// `server:` of kubelet.conf as the running kubelet read it.
    pub server: Option<String>,
    pub last_error: Option<String>,
    /// RFC 3339 time of the last successful lease renewal.
    pub last_success: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodReport {
    pub name: String,
    pub namespace: String,
    /// `Running`, `CrashLoopBackOff`, `ContainerCreating`.
    pub state: String,
    pub restarts: u32,
    pub last_error: Option<String>,
}

/// A leader-elected component (controller-manager, scheduler).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentReport {
    pub server: Option<String>,
    pub last_error: Option<String>,
    pub is_leader: bool,
    /// RFC 3339 time of this component's last successful lease renewal.
    pub last_renew: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdReport {
    pub pid: Option<u32>,
    pub running: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    pub node: String,
    pub kubelet: KubeletReport,
    pub pods: Vec<PodReport>,
    pub controller_manager: Option<ComponentReport>,
    pub scheduler: Option<ComponentReport>,
    pub etcd: Option<EtcdReport>,
}

/// State shared by the agent's tasks.
pub(crate) struct Shared {
    pub cfg: NodeAgentConfig,
    pub runtime: Mutex<runtime::Runtime>,
    pub kubelet_status: Mutex<KubeletReport>,
    pub pods: tokio::sync::Mutex<BTreeMap<String, kubelet::PodSlot>>,
    pub controller_manager: Arc<Mutex<Option<ComponentReport>>>,
    pub scheduler: Arc<Mutex<Option<ComponentReport>>>,
    pub etcd: Mutex<Option<EtcdReport>>,
}

struct KubeletService {
    task: Option<(
        tokio::task::JoinHandle<()>,
        tokio::sync::watch::Sender<bool>,
    )>,
    since: SystemTime,
    /// `systemctl show`'s timestamps, on both clocks.
    transitions: systemd::Transitions,
}

impl KubeletService {
    /// The service (re)started now.
    fn mark_started(&mut self) {
        self.since = SystemTime::now();
        self.transitions.started(systemd::Stamp::now());
    }

    /// The service stopped now.
    fn mark_stopped(&mut self) {
        self.since = SystemTime::now();
        self.transitions.stopped(systemd::Stamp::now());
    }
}

/// One node's agents: its kubelet service, runtime and everything the kubelet started.
pub struct NodeAgent {
    shared: Arc<Shared>,
    service: tokio::sync::Mutex<KubeletService>,
    /// When the container runtime's unit became active: the node's boot, as it never stops.
    runtime_started: systemd::Stamp,
}

impl NodeAgent {
    /// The node booted: the kubelet service starts (waiting, like an unconfigured kubelet,
    /// until `/etc/kubernetes/kubelet.conf` exists).
    pub fn start(config: NodeAgentConfig) -> NodeAgent {
        crate::lab::install_crypto_provider();
        let rt = runtime::Runtime::new(config.spec.runtime);
        let shared = Arc::new(Shared {
            cfg: config,
            runtime: Mutex::new(rt),
            kubelet_status: Mutex::new(KubeletReport::default()),
            pods: tokio::sync::Mutex::new(BTreeMap::new()),
            controller_manager: Arc::new(Mutex::new(None)),
            scheduler: Arc::new(Mutex::new(None)),
            etcd: Mutex::new(None),
        });
        let booted = systemd::Stamp::now();
        let task = Some(spawn_kubelet(&shared));
        let mut transitions = systemd::Transitions::default();
        transitions.started(booted);
        NodeAgent {
            shared,
            service: tokio::sync::Mutex::new(KubeletService {
                task,
                since: SystemTime::now(),
                transitions,
            }),
            runtime_started: booted,
        }
    }

    /// A node command: `systemctl`, `crictl` or `docker` with its arguments.
    pub async fn exec(&self, argv: Vec<String>) -> ExecOutput {
        let Some(tool) = argv.first().cloned() else {
            return ExecOutput {
                code: 127,
                stderr: "no command\n".into(),
                ..Default::default()
            };
        };
        let args = &argv[1..];
        match tool.as_str() {
            "systemctl" => self.systemctl(args).await,
            "crictl" => {
                let mut rt = lock(&self.shared.runtime);
                runtime::crictl(&mut rt, args)
            }
            "docker"
                if self.shared.cfg.spec.runtime == crate::observed::ContainerRuntime::Docker =>
            {
                let mut rt = lock(&self.shared.runtime);
                runtime::docker(&mut rt, args)
            }
            other => ExecOutput {
                stdout: String::new(),
                stderr: format!("bash: {other}: command not found\n"),
                code: 127,
            },
        }
    }

    async fn systemctl(&self, args: &[String]) -> ExecOutput {
        let verbs = [
            "restart",
            "start",
            "stop",
            "is-active",
            "status",
            "show",
            "daemon-reload",
        ];
        let (positional, show_args) = match systemctl_args(args) {
            Ok(parsed) => parsed,
            Err(e) => {
                return ExecOutput {
                    stderr: e,
                    code: 1,
                    ..Default::default()
                };
            }
        };
        let Some(verb) = positional.first().map(|s| s.as_str()) else {
            return ExecOutput {
                stderr: "Too few arguments.\n".into(),
                code: 1,
                ..Default::default()
            };
        };
        if !verbs.contains(&verb) {
            return ExecOutput {
                stderr: format!("Unknown command verb {verb}.\n"),
                code: 1,
                ..Default::default()
            };
        }
        if verb == "daemon-reload" {
            return ExecOutput::default();
        }
        let units: Vec<String> = positional[1..]
            .iter()
            .map(|u| u.trim_end_matches(".service").to_string())
            .collect();
        if units.is_empty() && verb == "show" {
            return ExecOutput {
                stderr: "hactl lab: `systemctl show` of the manager itself is not simulated; name a unit\n".into(),
                code: 1,
                ..Default::default()
            };
        }
        if units.is_empty() {
            return ExecOutput {
                stderr: "Too few arguments.\n".into(),
                code: 1,
                ..Default::default()
            };
        }
        let runtime_unit = self.shared.cfg.spec.runtime.as_str().to_string();
        if verb == "show" {
            return self.show(&units, &runtime_unit, &show_args).await;
        }
        let mut out = ExecOutput::default();
        for unit in units {
            let known = unit == "kubelet" || unit == runtime_unit;
            if !known {
                match verb {
                    "is-active" => {
                        out.stdout.push_str("inactive\n");
                        out.code = 3;
                    }
                    "status" => {
                        out.stderr
                            .push_str(&format!("Unit {unit}.service could not be found.\n"));
                        out.code = 4;
                    }
                    _ => {
                        out.stderr.push_str(&format!(
                            "Failed to {verb} {unit}.service: Unit {unit}.service not found.\n"
                        ));
                        out.code = 5;
                    }
                }
                continue;
            }
            if unit != "kubelet" {
                // The container runtime itself is always up in the lab.
                match verb {
                    "is-active" => out.stdout.push_str("active\n"),
                    "status" => out.stdout.push_str(&format!(
                        "● {unit}.service - {unit}\n     Loaded: loaded (/lib/systemd/system/{unit}.service; enabled; vendor preset: enabled)\n     Active: active (running)\n"
                    )),
                    _ => {}
                }
                continue;
            }
            let mut svc = self.service.lock().await;
            match verb {
                "restart" => {
                    if let Some((h, stop)) = svc.task.take() {
                        stop_task(h, stop).await;
                        svc.mark_stopped();
                    }
                    svc.task = Some(spawn_kubelet(&self.shared));
                    svc.mark_started();
                }
                "start" if svc.task.is_none() => {
                    svc.task = Some(spawn_kubelet(&self.shared));
                    svc.mark_started();
                }
                "stop" => {
                    if let Some((h, stop)) = svc.task.take() {
                        stop_task(h, stop).await;
                        svc.mark_stopped();
                    }
                    lock(&self.shared.kubelet_status).active = false;
                }
                "is-active" => {
                    if svc.task.is_some() {
                        out.stdout.push_str("active\n");
                    } else {
                        out.stdout.push_str("inactive\n");
                        out.code = 3;
                    }
                }
                "status" => {
                    let active = svc.task.is_some();
                    let since = timefmt::rfc3339(timefmt::unix_secs(svc.since));
                    let ago = runtime::human_duration(
                        SystemTime::now()
                            .duration_since(svc.since)
                            .unwrap_or_default(),
                    );
                    let state = if active {
                        format!("active (running) since {since}; {ago} ago")
                    } else {
                        format!("inactive (dead) since {since}; {ago} ago")
                    };
                    out.stdout.push_str(&format!(
                        "● kubelet.service - kubelet: The Kubernetes Node Agent\n     Loaded: loaded (/lib/systemd/system/kubelet.service; enabled; vendor preset: enabled)\n    Drop-In: /etc/systemd/system/kubelet.service.d\n             └─10-kubeadm.conf\n     Active: {state}\n       Docs: https://kubernetes.io/docs/\n"
                    ));
                    if let Some(e) = lock(&self.shared.kubelet_status).last_error.clone() {
                        out.stdout.push_str(&format!("\n{e}\n"));
                    }
                    if !active {
                        out.code = 3;
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// `systemctl show UNIT… [-p NAME]… [--value]`: the kubelet's and the runtime's state
    /// and transition times; any other unit as systemd shows one it cannot find.
    async fn show(
        &self,
        units: &[String],
        runtime_unit: &str,
        args: &systemd::ShowArgs,
    ) -> ExecOutput {
        let mut shown = Vec::new();
        for unit in units {
            let id = format!("{unit}.service");
            shown.push(if unit == "kubelet" {
                let svc = self.service.lock().await;
                systemd::Unit {
                    id,
                    description: "kubelet: The Kubernetes Node Agent".into(),
                    loaded: true,
                    active: svc.task.is_some(),
                    transitions: svc.transitions,
                }
            } else if unit == runtime_unit {
                let mut transitions = systemd::Transitions::default();
                transitions.started(self.runtime_started);
                systemd::Unit {
                    id,
                    description: runtime_description(unit).into(),
                    loaded: true,
                    active: true,
                    transitions,
                }
            } else {
                systemd::Unit {
                    description: id.clone(),
                    id,
                    loaded: false,
                    active: false,
                    transitions: systemd::Transitions::default(),
                }
            });
        }
        ExecOutput {
            stdout: systemd::show(&shown, args),
            ..Default::default()
        }
    }

    pub async fn report(&self) -> NodeReport {
        let mut kubelet = lock(&self.shared.kubelet_status).clone();
        kubelet.active = self.service.lock().await.task.is_some();
        let pods = self
            .shared
            .pods
            .lock()
            .await
            .values()
            .map(kubelet::PodSlot::report)
            .collect();
        NodeReport {
            node: self.shared.cfg.node.name.clone(),
            kubelet,
            pods,
            controller_manager: lock(&self.shared.controller_manager).clone(),
            scheduler: lock(&self.shared.scheduler).clone(),
            etcd: lock(&self.shared.etcd).clone(),
        }
    }

    /// The kubelet service stops and every container on the node is removed (kubeadm reset's
    /// `crictl rmp`, or a node going down); `power_on` starts the kubelet again, which starts
    /// the static pods from the manifests it finds.
    pub async fn power_off(&self) {
        {
            let mut svc = self.service.lock().await;
            if let Some((h, stop)) = svc.task.take() {
                stop_task(h, stop).await;
                svc.mark_stopped();
            }
        }
        lock(&self.shared.kubelet_status).active = false;
        let slots: Vec<kubelet::PodSlot> = {
            let mut pods = self.shared.pods.lock().await;
            std::mem::take(&mut *pods).into_values().collect()
        };
        for slot in slots {
            slot.stop().await;
        }
        *lock(&self.shared.etcd) = None;
    }

    /// `systemctl start kubelet` (no change when it runs).
    pub async fn power_on(&self) {
        let mut svc = self.service.lock().await;
        if svc.task.is_none() {
            svc.task = Some(spawn_kubelet(&self.shared));
            svc.mark_started();
        }
    }

    /// Stops the kubelet and every container it started, processes by their PID.
    pub async fn shutdown(self) {
        self.power_off().await;
    }
}

/// The Description= of the runtimes' units as their packages ship them.
fn runtime_description(unit: &str) -> &'static str {
    match unit {
        "containerd" => "containerd container runtime",
        "docker" => "Docker Application Container Engine",
        _ => "Container Runtime Interface for OCI (CRI-O)",
    }
}

/// systemctl's command line: the verb and units, and `show`'s options. Options other
/// than these change nothing the lab simulates and are ignored.
fn systemctl_args(args: &[String]) -> Result<(Vec<&String>, systemd::ShowArgs), String> {
    let mut positional = Vec::new();
    let mut show = systemd::ShowArgs::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (props, value_only) = match arg.as_str() {
            "-p" | "--property" | "-P" => (
                it.next()
                    .ok_or_else(|| format!("systemctl: option '{arg}' requires an argument\n"))?
                    .clone(),
                arg == "-P",
            ),
            "--value" => {
                show.value_only = true;
                continue;
            }
            "-a" | "--all" => {
                show.all = true;
                continue;
            }
            a => {
                if let Some(v) = a.strip_prefix("--property=") {
                    (v.to_string(), false)
                } else if let Some(v) = a.strip_prefix("-p").filter(|v| !v.is_empty()) {
                    (v.to_string(), false)
                } else if let Some(v) = a.strip_prefix("-P").filter(|v| !v.is_empty()) {
                    (v.to_string(), true)
                } else {
                    if !a.starts_with('-') {
                        positional.push(arg);
                    }
                    continue;
                }
            }
        };
        show.value_only |= value_only;
        show.properties.extend(
            props
                .split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_owned),
        );
    }
    Ok((positional, show))
}

fn spawn_kubelet(
    shared: &Arc<Shared>,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::watch::Sender<bool>,
) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let h = tokio::spawn(kubelet::run(shared.clone(), rx));
    (h, tx)
}

async fn stop_task(h: tokio::task::JoinHandle<()>, stop: tokio::sync::watch::Sender<bool>) {
    let _ = stop.send(true);
    let abort = h.abort_handle();
    if tokio::time::timeout(Duration::from_secs(5), h)
        .await
        .is_err()
    {
        abort.abort();
    }
}

/// Locks a std mutex; a panicked holder does not make the state unusable for reports.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
