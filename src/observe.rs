//! Live observation: every node over SSH, the Kubernetes API, etcd and the load balancer, in
//! parallel, into one [`ObservedState`]. Read-only: nothing on the cluster changes.
//!
//! Three rounds, each as parallel as its inputs allow:
//! 1. every node (connect, then one read), bounded by `parallelism`, a worker's connection
//!    closing as soon as it is read unless `keep_workers`; meanwhile the API, when the plan
//!    names a kubeconfig file;
//! 2. etcd and the LB through what round 1 found (the existing control plane, its CA), and the
//!    API through its admin.conf when the plan names no kubeconfig;
//! 3. from each control-plane node that is not a member yet, TCP to the members' 6443/2379/2380.
//!
//! What fails is recorded where it failed (a node's `ssh`, `api.reachable`, `etcd.health`, a
//! probe) and observation goes on: the plan decides what it can.

pub mod api;
pub mod endpoint;
pub mod etcd;
pub mod fake;
pub mod node;
pub mod reach;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream;
use tracing::debug;

use crate::observed::{
    ApiObservation, EndpointObservation, EtcdObservation, NodeObservation, OBSERVED_FORMAT_VERSION,
    ObservedState, Probe,
};
use crate::spec::{DesiredState, Node, Role};
use crate::transport::{SshTarget, millis, resolve_path};

use node::NodeReading;
use reach::{Reach, SshReach};

/// How observation runs.
#[derive(Clone, Debug)]
pub struct ObserveOptions {
    /// Nodes observed at once (at least 1).
    pub parallelism: usize,
    /// The SSH connect timeout per node.
    pub connect_timeout: Duration,
    /// How long each command on a node may run (a hung one fails that node, or etcd, instead
    /// of hanging the run).
    pub command_timeout: Duration,
    /// Each network probe's (and the API's) timeout.
    pub probe_timeout: Duration,
    /// The folder of the desired-state file: relative paths in it are relative to this.
    pub plan_dir: PathBuf,
    /// For `~/` in paths.
    pub home: Option<PathBuf>,
    /// Keep every node's connection for what runs next (apply). When false (plan, observe),
    /// a worker's connection closes as soon as the worker is read, beside the other nodes'
    /// reads, as a plain `ssh` would end; only control-plane nodes' are kept to the end.
    pub keep_workers: bool,
}

impl ObserveOptions {
    pub fn new(plan_dir: &Path) -> ObserveOptions {
        ObserveOptions {
            parallelism: 32,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(60),
            probe_timeout: Duration::from_secs(5),
            plan_dir: plan_dir.to_path_buf(),
            home: std::env::var_os("HOME").map(PathBuf::from),
            keep_workers: true,
        }
    }
}

/// The observed state, and the connections that observed it (reused by whatever runs next in
/// the same process; close them with [`Observation::close`]).
pub struct Observation<R: Reach = SshReach> {
    pub state: ObservedState,
    pub sessions: BTreeMap<String, R::Session>,
    /// What was found but left out of the state (a file that does not parse), each naming the
    /// node and the file.
    pub warnings: Vec<String>,
    /// The kubeconfig the API was read with, held in memory for what runs next (apply);
    /// `None` when there was none to read.
    pub credentials: Option<Credentials>,
    /// The workers' connections already closing (`ObserveOptions::keep_workers` false).
    closing: Vec<tokio::task::JoinHandle<()>>,
}

/// A kubeconfig's text and where it came from; its `Debug` never shows the text.
pub struct Credentials {
    /// `cp1:/etc/kubernetes/admin.conf`, or the local file's path.
    pub origin: String,
    pub kubeconfig: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, redacted)", self.origin)
    }
}

impl<R: Reach> Observation<R> {
    /// Closes every master connection (no ssh process is left behind).
    pub async fn close(self) {
        close_all::<R>(self.sessions, self.closing).await;
    }

    /// What was observed, and the closing of every master connection, to run beside what
    /// comes next when nothing after observation needs them (`plan`, `observe`).
    pub fn into_state(self) -> (ObservedState, impl Future<Output = ()> + Send + 'static) {
        (self.state, close_all::<R>(self.sessions, self.closing))
    }
}

async fn close_all<R: Reach>(
    sessions: BTreeMap<String, R::Session>,
    closing: Vec<tokio::task::JoinHandle<()>>,
) {
    futures_util::future::join_all(sessions.into_values().map(R::close)).await;
    for task in closing {
        // A panic while closing is the caller's to report, as a panic in `R::close` would be.
        if let Err(e) = task.await
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// The nodes of `desired` whose observation failed, with the reason, in file order.
pub fn unreachable_nodes<'a>(
    desired: &'a DesiredState,
    state: &ObservedState,
) -> Vec<(&'a str, String)> {
    desired
        .nodes
        .iter()
        .filter_map(|n| {
            let reason = state.nodes.get(&n.name)?.ssh.failure()?;
            Some((n.name.as_str(), reason))
        })
        .collect()
}

/// Observes the cluster `desired` describes, over SSH and `kube`.
pub async fn observe(desired: &DesiredState, opts: &ObserveOptions) -> Observation {
    observe_with(Arc::new(SshReach), desired, opts).await
}

/// Observes the cluster `desired` describes through `reach`.
pub async fn observe_with<R: Reach>(
    reach: Arc<R>,
    desired: &DesiredState,
    opts: &ObserveOptions,
) -> Observation<R> {
    let kubeconfig_file = desired
        .cluster
        .kubeconfig
        .as_deref()
        .map(|p| resolve_path(p, &opts.plan_dir, opts.home.as_deref()));

    // Round 1: the nodes, and the API when its kubeconfig is a local file. Round 2 (etcd, the
    // LB, the API through admin.conf) needs only the `kubeadm init` node's answer: it starts as
    // soon as that node has answered, beside the other nodes' reads.
    let api_from_file = async {
        match &kubeconfig_file {
            Some(path) => Some(read_api_file(&*reach, path, opts.probe_timeout).await),
            None => None,
        }
    };
    let (round1, api_from_file) = tokio::join!(
        read_nodes(&reach, desired, opts, kubeconfig_file.is_none()),
        api_from_file
    );
    let Round1 {
        mut sessions,
        observations,
        cas,
        warnings,
        control_planes,
        early,
        closing,
    } = round1;

    let (etcd, endpoint, api) = match early {
        Some(task) => {
            let early = match task.await {
                Ok(early) => early,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            sessions.insert(early.node, early.session);
            (early.etcd, early.endpoint, early.api)
        }
        // No control-plane node with admin.conf answered: etcd through the first that runs
        // an API server, the LB against any node's CA.
        None => {
            let from = control_planes.first().and_then(|n| sessions.get(&n.name));
            let ca_pem = control_planes
                .first()
                .and_then(|n| cas.iter().find(|(name, _)| *name == n.name))
                .or(cas.first())
                .map(|(_, pem)| pem.as_str());
            let (etcd, endpoint) =
                etcd_and_lb(&*reach, from, &desired.endpoint, ca_pem, opts.probe_timeout).await;
            (etcd, endpoint, None)
        }
    };
    // The API through admin.conf, else through cluster.kubeconfig (only one was read).
    let (api, credentials) = api.or(api_from_file).unwrap_or_else(|| {
        (
            api_failed(
                "no reachable control-plane node has /etc/kubernetes/admin.conf; set \
                 cluster.kubeconfig to a kubeconfig of a cluster admin"
                    .to_string(),
            ),
            None,
        )
    });

    let mut state = ObservedState {
        format_version: OBSERVED_FORMAT_VERSION,
        endpoint,
        nodes: observations,
        api,
        etcd,
    };

    // Round 3: can the control-plane nodes to be joined reach the existing control plane?
    let mut targets = Vec::new();
    for n in &control_planes {
        let Some(obs) = state.nodes.get(&n.name) else {
            continue;
        };
        if !state.is_control_plane_member(&n.name, &obs.address) {
            continue;
        }
        if let Some(ep) = &obs.apiserver_endpoint {
            let host = bracket(&ep.advertise_address);
            targets.push(format!("{host}:{}", ep.port));
            targets.push(format!("{host}:2379"));
            targets.push(format!("{host}:2380"));
        }
    }
    let joining: Vec<&Node> = desired
        .control_plane_nodes()
        .filter(|n| sessions.contains_key(&n.name))
        .filter(|n| !state.is_control_plane_member(&n.name, &n.address.to_string()))
        .collect();
    if !targets.is_empty() && !joining.is_empty() {
        let started = Instant::now();
        let probes = stream::iter(joining.iter().filter_map(|n| {
            let session = sessions.get(&n.name)?;
            let targets = &targets;
            Some(async move {
                let probes = node::reachability(session, targets, opts.probe_timeout).await;
                (n.name.clone(), probes)
            })
        }))
        .buffered(opts.parallelism.max(1))
        .collect::<Vec<_>>()
        .await;
        debug!(
            from = joining.len(),
            targets = targets.len(),
            took_ms = millis(started.elapsed()),
            "probed the control plane from the nodes to join"
        );
        for (name, probes) in probes {
            if let Some(obs) = state.nodes.get_mut(&name) {
                obs.control_plane_reachability = probes;
            }
        }
    }
    Observation {
        state,
        sessions,
        warnings,
        credentials,
        closing,
    }
}

/// What round 1 found: the nodes' sessions and observations, their CAs, the existing control
/// plane (the `kubeadm init` node, the one with admin.conf, first) and round 2, begun.
struct Round1<'a, R: Reach> {
    sessions: BTreeMap<String, R::Session>,
    observations: BTreeMap<String, NodeObservation>,
    cas: Vec<(String, String)>,
    warnings: Vec<String>,
    control_planes: Vec<&'a Node>,
    early: Option<tokio::task::JoinHandle<Round2<R>>>,
    closing: Vec<tokio::task::JoinHandle<()>>,
}

/// Round 2 through the `kubeadm init` node, which holds its session until it is done.
struct Round2<R: Reach> {
    node: String,
    session: R::Session,
    etcd: EtcdObservation,
    endpoint: EndpointObservation,
    /// None when the API is read through cluster.kubeconfig instead.
    api: Option<(ApiObservation, Option<Credentials>)>,
}

/// Round 1: connects to every node and reads it, `parallelism` at a time; the answers are taken
/// in file order, and the first control-plane node running an API server with admin.conf (the
/// `kubeadm init` node) starts round 2 at once (the API through its admin.conf when `read_api`).
async fn read_nodes<'a, R: Reach>(
    reach: &Arc<R>,
    desired: &'a DesiredState,
    opts: &ObserveOptions,
    read_api: bool,
) -> Round1<'a, R> {
    let answers = stream::iter(desired.nodes.iter().map(|n| async move {
        let target = SshTarget::new(
            desired,
            n,
            &opts.plan_dir,
            opts.home.as_deref(),
            opts.connect_timeout,
            opts.command_timeout,
        );
        let started = Instant::now();
        match reach.connect(target).await {
            Ok(session) => {
                let connected = started.elapsed();
                let reading = node::read_node(&session, n).await;
                debug!(
                    node = %n.name,
                    address = %n.address,
                    connect_ms = millis(connected),
                    read_ms = millis(started.elapsed() - connected),
                    ok = reading.observation.ssh.is_ok(),
                    "read the node"
                );
                if n.role == Role::Worker && !opts.keep_workers {
                    let closing = tokio::spawn(R::close(session));
                    return (n, None, Some(closing), reading);
                }
                (n, Some(session), None, reading)
            }
            Err(e) => {
                debug!(
                    node = %n.name,
                    address = %n.address,
                    after_ms = millis(started.elapsed()),
                    error = %e,
                    "could not connect"
                );
                let reading = NodeReading {
                    observation: node::unreachable(n, &e),
                    admin_conf: None,
                    ca_pem: None,
                    warnings: Vec::new(),
                };
                (n, None, None, reading)
            }
        }
    }))
    .buffered(opts.parallelism.max(1));
    let mut answers = std::pin::pin!(answers);
    let mut round = Round1 {
        sessions: BTreeMap::new(),
        observations: BTreeMap::new(),
        cas: Vec::new(),
        warnings: Vec::new(),
        control_planes: Vec::new(),
        early: None,
        closing: Vec::new(),
    };
    while let Some((node, mut session, closing, reading)) = answers.next().await {
        round.closing.extend(closing);
        let NodeReading {
            observation,
            admin_conf,
            ca_pem,
            warnings,
        } = reading;
        round.warnings.extend(warnings);
        let runs_apiserver = observation.apiserver_endpoint.is_some();
        if node.role == Role::ControlPlane && runs_apiserver && session.is_some() {
            match (admin_conf, &round.early, session.take()) {
                (Some(kubeconfig), None, Some(init)) => {
                    debug!(
                        node = %node.name,
                        api_through_admin_conf = read_api,
                        "round 2 starts through this node: etcd, the load balancer's TLS \
                         against its CA, the API when cluster.kubeconfig is not set"
                    );
                    round.control_planes.insert(0, node);
                    round.early = Some(tokio::spawn(round2(
                        reach.clone(),
                        node.name.clone(),
                        init,
                        read_api.then_some(kubeconfig),
                        ca_pem.clone(),
                        desired.endpoint.clone(),
                        opts.probe_timeout,
                    )));
                }
                (_, _, s) => {
                    session = s;
                    round.control_planes.push(node);
                }
            }
        }
        if let Some(ca) = ca_pem {
            round.cas.push((node.name.clone(), ca));
        }
        round.observations.insert(node.name.clone(), observation);
        if let Some(session) = session {
            round.sessions.insert(node.name.clone(), session);
        }
    }
    round
}

/// Round 2 through the `kubeadm init` node: etcd, the LB verified against its CA, and the API
/// through its admin.conf (held in memory only) when it is given.
async fn round2<R: Reach>(
    reach: Arc<R>,
    node: String,
    session: R::Session,
    admin_conf: Option<String>,
    ca_pem: Option<String>,
    lb: crate::spec::Endpoint,
    timeout: Duration,
) -> Round2<R> {
    let api = async {
        let kubeconfig = admin_conf?;
        let origin = format!("{node}:/etc/kubernetes/admin.conf");
        let api = read_api_timed(&*reach, &kubeconfig, &origin, timeout).await;
        Some((api, Some(Credentials { origin, kubeconfig })))
    };
    let ((etcd, endpoint), api) = tokio::join!(
        etcd_and_lb(&*reach, Some(&session), &lb, ca_pem.as_deref(), timeout),
        api
    );
    Round2 {
        node,
        session,
        etcd,
        endpoint,
        api,
    }
}

/// etcd through `session` (unasked without one) and the LB verified against `ca_pem`, side by
/// side.
async fn etcd_and_lb<R: Reach>(
    reach: &R,
    session: Option<&R::Session>,
    lb: &crate::spec::Endpoint,
    ca_pem: Option<&str>,
    timeout: Duration,
) -> (EtcdObservation, EndpointObservation) {
    let etcd = async {
        let Some(session) = session else {
            return EtcdObservation::unasked();
        };
        let started = Instant::now();
        let etcd = etcd::read_etcd(session).await;
        debug!(
            node = %crate::transport::NodeTransport::node(session),
            took_ms = millis(started.elapsed()),
            members = etcd.members.len(),
            healthy = etcd.health.is_ok(),
            "read etcd's members and health"
        );
        etcd
    };
    let endpoint = async {
        let started = Instant::now();
        let endpoint = reach.probe_endpoint(lb, ca_pem, timeout).await;
        debug!(
            host = %lb.host,
            port = lb.port,
            took_ms = millis(started.elapsed()),
            addresses_ok = endpoint.addresses.values().filter(|p| p.is_ok()).count(),
            tls = %match &endpoint.tls {
                None => "not checked",
                Some(p) => p.failure().unwrap_or("ok"),
            },
            "probed the load balancer"
        );
        endpoint
    };
    tokio::join!(etcd, endpoint)
}

/// [`api::read_api`], logged with how long it took.
async fn read_api_timed<R: Reach>(
    reach: &R,
    kubeconfig: &str,
    origin: &str,
    timeout: Duration,
) -> ApiObservation {
    let started = Instant::now();
    let api = api::read_api(reach, kubeconfig, origin, timeout).await;
    debug!(
        through = %origin,
        took_ms = millis(started.elapsed()),
        ok = api.reachable.is_ok(),
        nodes = api.nodes.len(),
        "read the API"
    );
    api
}

/// The API through a kubeconfig file on this machine.
async fn read_api_file<R: Reach>(
    reach: &R,
    path: &Path,
    timeout: Duration,
) -> (ApiObservation, Option<Credentials>) {
    match tokio::fs::read_to_string(path).await {
        Ok(kubeconfig) => {
            let origin = path.display().to_string();
            let api = read_api_timed(reach, &kubeconfig, &origin, timeout).await;
            (api, Some(Credentials { origin, kubeconfig }))
        }
        Err(e) => (
            api_failed(format!(
                "cannot read {} (cluster.kubeconfig): {e}; fix the path (relative paths are \
             relative to the desired-state file) or remove the key to use the first \
             control-plane node's admin.conf",
                path.display()
            )),
            None,
        ),
    }
}

fn api_failed(reason: String) -> ApiObservation {
    ApiObservation::new(Probe::Failed { reason })
}

fn bracket(address: &str) -> String {
    if address.contains(':') {
        format!("[{address}]")
    } else {
        address.to_string()
    }
}
