//! `hactl lab status`: the lab's ground truth, read from the parts themselves (the API, etcd,
//! haproxy, the served certificates, and each node agent's own view).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use serde::{Deserialize, Serialize};

use super::components::NodeReport;
use super::components::client::{ApiClient, ClientAuth, ClientError, Resolver};
use super::control::{self, Request, Response};
use super::etcd::EtcdClient;
use super::node::BackendState;
use super::state::LabState;
use super::{LabError, LabNode, LabSpec};
use kube::api::{Api, ListParams};
use std::fmt::Write as _;

use super::LabDir;

/// A kube-rs client with the lab's admin.conf, as an operator's kubectl would use it.
pub async fn admin_client(lab: &LabDir) -> Result<kube::Client, String> {
    let path = lab.admin_conf();
    let kc = kube::config::Kubeconfig::read_from(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    kube::Client::try_from(cfg).map_err(|e| e.to_string())
}

/// Whether a Node is Ready, and the condition's reason and message when it is not.
pub fn node_ready(node: &Node) -> (bool, Option<String>) {
    let cond = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    match cond {
        None => (
            false,
            Some("no Ready condition: the kubelet never posted status".into()),
        ),
        Some(c) if c.status == "True" => (true, None),
        Some(c) => (
            false,
            Some(format!(
                "{}: {}",
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            )),
        ),
    }
}

/// The lab's ground truth.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LabStatus {
    /// Every joined node Ready, every component verifying its server, leases fresh, kube-proxy
    /// running, every etcd member started and healthy, the LB up with healthy backends.
    pub healthy: bool,
    /// Why the lab is not healthy, one line each.
    pub problems: Vec<String>,
    pub version: String,
    pub runtime: String,
    pub nodes: Vec<NodeStatus>,
    pub api_servers: Vec<ApiServerStatus>,
    pub leases: Vec<LeaseStatus>,
    pub kube_proxy: Vec<PodStatus>,
    pub etcd: EtcdStatus,
    pub load_balancer: LoadBalancerStatus,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub address: String,
    /// `control-plane` or `worker`.
    pub role: String,
    /// Part of the cluster (its kubelet is configured); a bare control-plane node is not yet.
    pub joined: bool,
    pub ready: bool,
    /// Why it is not Ready: the Node's condition and the kubelet's own last error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The `server:` each of the node's components uses, and whether TLS to it verifies.
    pub connections: Vec<Connection>,
    /// Active faults (`hactl lab fault`), as the command names them: `block-port 2380`.
    #[serde(default)]
    pub faults: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Connection {
    /// `kubelet`, `kube-controller-manager`, `kube-scheduler`, `kube-proxy`.
    pub component: String,
    /// Where the server came from: a node file or `configmap kube-system/kube-proxy`.
    pub source: String,
    pub server: String,
    pub tls_verifies: bool,
    /// The error a Go client gets, word for word (`x509: certificate is valid for …`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ApiServerStatus {
    pub node: String,
    pub address: String,
    pub serving: bool,
    /// The SANs of the certificate it serves now (`DNS:x`, `IP:x`).
    pub sans: Vec<String>,
    /// HTTP status of `/readyz`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readyz: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LeaseStatus {
    /// `kube-controller-manager` or `kube-scheduler` (kube-system leader leases).
    pub name: String,
    pub holder: Option<String>,
    pub renew_time: Option<String>,
    /// Seconds since the last renewal.
    pub age_seconds: Option<f64>,
    pub fresh: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PodStatus {
    pub name: String,
    pub node: String,
    /// `Running`, `CrashLoopBackOff`, `Pending`, …
    pub state: String,
    pub ready: bool,
    pub restarts: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EtcdStatus {
    pub members: Vec<MemberStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MemberStatus {
    /// As etcdctl prints it (hex).
    pub id: String,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
    pub started: bool,
    pub healthy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LoadBalancerStatus {
    /// `ADDRESS:PORT` → accepts TCP.
    pub frontends: BTreeMap<String, bool>,
    pub backends: Vec<BackendState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The SANs of the certificate served at `addr`, whatever it is (the lab reports what is
/// served; whether a client accepts it is `Connection::tls_verifies`), and the HTTP status of
/// an anonymous `GET /readyz` on the same connection.
pub async fn probe_apiserver(addr: SocketAddr) -> Result<(Vec<String>, Option<u16>), String> {
    #[derive(Debug)]
    struct Capture(
        std::sync::Mutex<Option<Vec<u8>>>,
        Arc<rustls::crypto::CryptoProvider>,
    );
    impl rustls::client::danger::ServerCertVerifier for Capture {
        fn verify_server_cert(
            &self,
            end_entity: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            if let Ok(mut c) = self.0.lock() {
                *c = Some(end_entity.to_vec());
            }
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.1.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.1.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.1.signature_verification_algorithms.supported_schemes()
        }
    }
    super::install_crypto_provider();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let capture = Arc::new(Capture(std::sync::Mutex::new(None), provider));
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(capture.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| format!("dial tcp {addr}: i/o timeout"))?
        .map_err(|e| format!("dial tcp {addr}: connect: {}", go_errno(&e)))?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let mut tls = tokio::time::timeout(Duration::from_secs(3), connector.connect(name, tcp))
        .await
        .map_err(|_| format!("TLS handshake with {addr}: i/o timeout"))?
        .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
    let readyz = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let req = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tls.write_all(req.as_bytes()).await.ok()?;
        let mut buf = vec![];
        tls.read_to_end(&mut buf).await.ok();
        let text = String::from_utf8_lossy(&buf);
        text.split_whitespace().nth(1)?.parse::<u16>().ok()
    };
    let readyz = tokio::time::timeout(Duration::from_secs(5), readyz)
        .await
        .ok()
        .flatten();
    let der = capture
        .0
        .lock()
        .ok()
        .and_then(|c| c.clone())
        .ok_or_else(|| format!("{addr} served no certificate"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| e.to_string())?;
    let mut sans = vec![];
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for n in &ext.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => sans.push(format!("DNS:{d}")),
                x509_parser::extensions::GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b)
                            .map(|a| IpAddr::from(a).to_string())
                            .ok(),
                        16 => <[u8; 16]>::try_from(*b)
                            .map(|a| IpAddr::from(a).to_string())
                            .ok(),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        sans.push(format!("IP:{ip}"));
                    }
                }
                _ => {}
            }
        }
    }
    Ok((sans, readyz))
}

/// Go's words for the common connection errors.
pub fn go_errno(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::TimedOut => "i/o timeout".into(),
        _ => e.to_string(),
    }
}

/// Reads every part of the lab and says whether it is healthy.
pub async fn gather(lab: &LabDir) -> Result<LabStatus, LabError> {
    super::install_crypto_provider();
    let state = LabState::read(lab)?;
    let spec = &state.spec;
    let mut st = LabStatus {
        version: spec.version.to_string(),
        runtime: spec.runtime.as_str().to_string(),
        ..Default::default()
    };
    if state.live_processes().is_empty() {
        st.problems.push(format!(
            "the lab in {} is not running; start it with `hactl lab up`",
            lab.root().display()
        ));
        return Ok(st);
    }
    let (api, api_nodes) = api_view(lab, &mut st).await;
    let (reports, faults) = agent_reports(lab, spec, &mut st);
    let seen = Seen {
        api: api.as_ref(),
        api_nodes: &api_nodes,
        reports: &reports,
        faults: &faults,
    };
    node_statuses(lab, spec, &seen, &mut st).await;
    api_servers(lab, spec, &mut st).await;
    lease_and_kube_proxy_problems(&mut st);
    etcd_members(lab, spec, &mut st).await;
    load_balancer_problems(lab, spec, &mut st);
    st.healthy = st.problems.is_empty();
    Ok(st)
}

/// What the API (through admin.conf) says: Nodes, leader Leases, kube-proxy Pods.
async fn api_view(
    lab: &LabDir,
    st: &mut LabStatus,
) -> (Option<kube::Client>, BTreeMap<String, Node>) {
    let api = match admin_client(lab).await {
        Ok(c) => Some(c),
        Err(e) => {
            st.problems.push(format!("admin.conf: {e}"));
            None
        }
    };
    let mut api_nodes: BTreeMap<String, Node> = BTreeMap::new();
    if let Some(client) = &api {
        match Api::<Node>::all(client.clone())
            .list(&ListParams::default())
            .await
        {
            Ok(list) => {
                for n in list.items {
                    if let Some(name) = n.metadata.name.clone() {
                        api_nodes.insert(name, n);
                    }
                }
            }
            Err(e) => st
                .problems
                .push(format!("the API (admin.conf) cannot list Nodes: {e}")),
        }
        st.leases = leases(client).await.unwrap_or_else(|e| {
            st.problems.push(format!("cannot read leader leases: {e}"));
            vec![]
        });
        match kube_proxy_pods(client).await {
            Ok(pods) => {
                st.kube_proxy = pods;
                // The DaemonSet runs one kube-proxy on every Node: a Node without its pod yet
                // (the kubelet makes it a beat or two after registering) is not healthy, or
                // `lab up` would return before kube-proxy exists and see it start later.
                for n in nodes_without_kube_proxy(api_nodes.keys(), &st.kube_proxy) {
                    st.problems.push(format!(
                        "node {n} has no kube-proxy pod yet (the kube-proxy DaemonSet runs one on every node)"
                    ));
                }
            }
            Err(e) => st
                .problems
                .push(format!("cannot list kube-proxy pods: {e}")),
        }
    }

    (api, api_nodes)
}

/// What each node's agent saw (the kubelet's last error, its pods) and the active faults; an
/// injected fault is a problem in its own right: the lab is broken on purpose.
fn agent_reports(
    lab: &LabDir,
    spec: &LabSpec,
    st: &mut LabStatus,
) -> (
    BTreeMap<String, NodeReport>,
    BTreeMap<String, Vec<super::faults::Fault>>,
) {
    let (reports, faults) = match control::call(lab, &Request::Report, Duration::from_secs(10)) {
        Ok(Response::Report { nodes, faults }) => (nodes, faults),
        Ok(other) => {
            st.problems
                .push(format!("the supervisor answered {other:?}"));
            (BTreeMap::new(), recorded_faults(lab))
        }
        Err(e) => {
            st.problems.push(e.to_string());
            (BTreeMap::new(), recorded_faults(lab))
        }
    };
    // An injected fault is a problem in its own right: the lab is broken on purpose.
    for n in &spec.nodes {
        for f in faults.get(&n.name).into_iter().flatten() {
            st.problems.push(format!(
                "{}: fault {f} is active; `hactl lab heal --dir {} {}` undoes it",
                n.name,
                lab.root().display(),
                n.name
            ));
        }
    }

    (reports, faults)
}

/// What `node_statuses` judges each node by.
struct Seen<'a> {
    api: Option<&'a kube::Client>,
    api_nodes: &'a BTreeMap<String, Node>,
    reports: &'a BTreeMap<String, NodeReport>,
    faults: &'a BTreeMap<String, Vec<super::faults::Fault>>,
}

/// Each node: joined, Ready (or why not), and every component's TLS to its server.
async fn node_statuses(lab: &LabDir, spec: &LabSpec, seen: &Seen<'_>, st: &mut LabStatus) {
    let Seen {
        api,
        api_nodes,
        reports,
        faults,
    } = seen;
    let kube_proxy = match api {
        Some(client) => kube_proxy_server(client).await,
        None => None,
    };
    for n in &spec.nodes {
        let joined = lab
            .node_path(&n.name, "/etc/kubernetes/kubelet.conf")
            .exists();
        let (ready, mut reason) = match api_nodes.get(&n.name) {
            Some(node) => node_ready(node),
            None if joined => (
                false,
                Some("no Node object: the kubelet has not registered".into()),
            ),
            None => (false, None),
        };
        if let Some(kubelet_error) = reports.get(&n.name).and_then(kubelet_error)
            && !ready
        {
            reason = Some(match reason {
                Some(r) => format!("{r}; kubelet: {kubelet_error}"),
                None => format!("kubelet: {kubelet_error}"),
            });
        }
        let connections = connections(lab, spec, n, joined, kube_proxy.as_deref()).await;
        if joined && !ready {
            st.problems.push(format!(
                "node {} is not Ready: {}",
                n.name,
                reason.clone().unwrap_or_default()
            ));
        }
        for c in &connections {
            if !c.tls_verifies {
                st.problems.push(format!(
                    "{} on {} cannot reach {}: {}",
                    c.component,
                    n.name,
                    c.server,
                    c.error.clone().unwrap_or_default()
                ));
            }
        }
        st.nodes.push(NodeStatus {
            name: n.name.clone(),
            address: n.address.to_string(),
            role: if n.control_plane {
                "control-plane"
            } else {
                "worker"
            }
            .into(),
            joined,
            ready,
            reason,
            connections,
            faults: faults
                .get(&n.name)
                .into_iter()
                .flatten()
                .map(ToString::to_string)
                .collect(),
        });
    }
}

/// Each control-plane node's API server: serving, its SANs, /readyz.
async fn api_servers(lab: &LabDir, spec: &LabSpec, st: &mut LabStatus) {
    for n in spec.nodes.iter().filter(|n| n.control_plane) {
        let joined = lab
            .node_path(&n.name, "/etc/kubernetes/manifests/kube-apiserver.yaml")
            .exists();
        let addr = SocketAddr::new(n.address, 6443);
        let mut s = ApiServerStatus {
            node: n.name.clone(),
            address: addr.to_string(),
            ..Default::default()
        };
        match probe_apiserver(addr).await {
            Ok((sans, readyz)) => {
                s.serving = true;
                s.sans = sans;
                s.readyz = readyz;
                if joined && readyz != Some(200) {
                    st.problems.push(format!(
                        "the API server on {} is not ready (/readyz {})",
                        n.name,
                        readyz
                            .map(|c| c.to_string())
                            .unwrap_or_else(|| "no answer".into())
                    ));
                }
            }
            Err(e) => {
                if joined {
                    st.problems
                        .push(format!("the API server on {} is down: {e}", n.name));
                }
                s.error = Some(e);
            }
        }
        st.api_servers.push(s);
    }
}

/// Stale leader Leases and kube-proxy Pods that are not Ready.
fn lease_and_kube_proxy_problems(st: &mut LabStatus) {
    for l in &st.leases {
        if !l.fresh {
            st.problems.push(format!(
                "the {} leader lease is stale (renewed {} ago)",
                l.name,
                l.age_seconds
                    .map(|a| format!("{a:.0} s"))
                    .unwrap_or_else(|| "never".into())
            ));
        }
    }
    for p in &st.kube_proxy {
        if !p.ready {
            st.problems.push(format!(
                "kube-proxy pod {} on {} is {}{}",
                p.name,
                p.node,
                p.state,
                p.message
                    .as_ref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ));
        }
    }
}

/// etcd's members: each started, healthy and a voter.
async fn etcd_members(lab: &LabDir, spec: &LabSpec, st: &mut LabStatus) {
    st.etcd = etcd_status(lab, spec).await;
    if let Some(e) = &st.etcd.error {
        st.problems.push(format!("etcd: {e}"));
    }
    for m in &st.etcd.members {
        if !m.started || !m.healthy || m.is_learner {
            st.problems.push(format!(
                "etcd member {} ({}) is {}",
                if m.name.is_empty() {
                    "(unstarted)"
                } else {
                    &m.name
                },
                m.id,
                if !m.started {
                    "not started".to_string()
                } else if m.is_learner {
                    "a learner".to_string()
                } else {
                    format!("unhealthy: {}", m.error.clone().unwrap_or_default())
                }
            ));
        }
    }
}

/// The load balancer: every frontend accepts TCP, every joined node's backend is UP.
fn load_balancer_problems(lab: &LabDir, spec: &LabSpec, st: &mut LabStatus) {
    st.load_balancer = load_balancer(lab, spec);
    for (addr, up) in &st.load_balancer.frontends {
        if !up {
            st.problems
                .push(format!("the load balancer does not accept TCP on {addr}"));
        }
    }
    for b in &st.load_balancer.backends {
        let joined = st.nodes.iter().any(|n| n.name == b.server && n.joined);
        if joined && b.status != "UP" {
            st.problems.push(format!(
                "LB backend {} is {} ({})",
                b.server, b.status, b.check
            ));
        }
    }
}

/// The faults `DIR/lab/faults.json` records, for when the supervisor does not answer.
fn recorded_faults(lab: &LabDir) -> BTreeMap<String, Vec<super::faults::Fault>> {
    std::fs::read_to_string(lab.lab_file("faults.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// The kube-system leader leases of controller-manager and scheduler, and their freshness.
async fn leases(client: &kube::Client) -> Result<Vec<LeaseStatus>, String> {
    use k8s_openapi::api::coordination::v1::Lease;
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut out = vec![];
    for name in ["kube-controller-manager", "kube-scheduler"] {
        let lease = api.get_opt(name).await.map_err(|e| e.to_string())?;
        let spec = lease.and_then(|l| l.spec);
        let renew = spec
            .as_ref()
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0);
        let duration = spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .unwrap_or(15) as f64;
        let age = renew.map(|r| {
            (now - r)
                .total(k8s_openapi::jiff::Unit::Second)
                .unwrap_or(f64::MAX)
        });
        out.push(LeaseStatus {
            name: name.to_string(),
            holder: spec.as_ref().and_then(|s| s.holder_identity.clone()),
            renew_time: renew.map(|r| r.to_string()),
            age_seconds: age,
            fresh: age.is_some_and(|a| a <= duration),
        });
    }
    Ok(out)
}

/// The registered Nodes that have no kube-proxy pod.
fn nodes_without_kube_proxy<'a>(
    nodes: impl IntoIterator<Item = &'a String>,
    pods: &[PodStatus],
) -> Vec<&'a str> {
    nodes
        .into_iter()
        .map(String::as_str)
        .filter(|n| !pods.iter().any(|p| p.node == *n))
        .collect()
}

async fn kube_proxy_pods(client: &kube::Client) -> Result<Vec<PodStatus>, String> {
    use k8s_openapi::api::core::v1::Pod;
    let api: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let list = api
        .list(&ListParams::default().labels("k8s-app=kube-proxy"))
        .await
        .map_err(|e| e.to_string())?;
    let mut out: Vec<PodStatus> = list
        .items
        .into_iter()
        .map(|p| {
            let status = p.status.unwrap_or_default();
            let cs = status.container_statuses.unwrap_or_default();
            let c = cs.first();
            let waiting = c
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.waiting.clone());
            let running = c
                .and_then(|c| c.state.as_ref())
                .is_some_and(|s| s.running.is_some());
            let last_message = c
                .and_then(|c| c.last_state.as_ref())
                .and_then(|s| s.terminated.as_ref())
                .and_then(|t| t.message.clone());
            PodStatus {
                name: p.metadata.name.unwrap_or_default(),
                node: p.spec.and_then(|s| s.node_name).unwrap_or_default(),
                state: match (&waiting, running) {
                    (Some(w), _) => w.reason.clone().unwrap_or_else(|| "Waiting".into()),
                    (None, true) => "Running".into(),
                    _ => status.phase.unwrap_or_else(|| "Unknown".into()),
                },
                ready: running && c.is_some_and(|c| c.ready),
                restarts: c.map(|c| c.restart_count).unwrap_or(0),
                // The error is the last run's; the waiting message only says it backs off.
                message: last_message.or(waiting.and_then(|w| w.message)),
            }
        })
        .collect();
    out.sort_by(|a, b| a.node.cmp(&b.node).then(a.name.cmp(&b.name)));
    Ok(out)
}

fn load_balancer(lab: &LabDir, spec: &LabSpec) -> LoadBalancerStatus {
    let mut lb = LoadBalancerStatus::default();
    for a in &spec.endpoint.addresses {
        lb.frontends.insert(
            SocketAddr::new(*a, spec.endpoint.port).to_string(),
            super::node::port_taken(*a, spec.endpoint.port),
        );
    }
    match super::node::haproxy_backends(lab) {
        Ok(b) => lb.backends = b,
        Err(e) => lb.error = Some(e),
    }
    lb
}

/// The status for a terminal.
pub fn render(s: &LabStatus) -> String {
    let mut out = format!(
        "Lab: Kubernetes {} ({}): {}\n\nNodes\n",
        s.version,
        s.runtime,
        if s.healthy { "healthy" } else { "NOT healthy" }
    );
    for n in &s.nodes {
        let state = match (n.joined, n.ready) {
            (false, _) => "not joined".to_string(),
            (true, true) => "Ready".to_string(),
            (true, false) => format!("NotReady: {}", n.reason.clone().unwrap_or_default()),
        };
        let _ = writeln!(
            out,
            "  {:<8} {:<15} {:<14} {state}",
            n.name, n.address, n.role
        );
        for f in &n.faults {
            let _ = writeln!(out, "      {:<24} {f}", "FAULT");
        }
        for c in &n.connections {
            let _ = writeln!(
                out,
                "      {:<24} {:<40} {}",
                c.component,
                c.server,
                if c.tls_verifies {
                    "TLS verifies".to_string()
                } else {
                    c.error.clone().unwrap_or_default()
                }
            );
        }
    }
    out.push_str("\nAPI servers\n");
    for a in &s.api_servers {
        let _ = writeln!(
            out,
            "  {:<8} {:<21} {}",
            a.node,
            a.address,
            if a.serving {
                format!(
                    "readyz {} SANs {}",
                    a.readyz
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "?".into()),
                    a.sans.join(", ")
                )
            } else {
                a.error.clone().unwrap_or_else(|| "down".into())
            }
        );
    }
    out.push_str("\nLeader leases\n");
    for l in &s.leases {
        let _ = writeln!(
            out,
            "  {:<24} {:<6} holder {} renewed {}",
            l.name,
            if l.fresh { "fresh" } else { "STALE" },
            l.holder.clone().unwrap_or_else(|| "-".into()),
            l.age_seconds
                .map(|a| format!("{a:.1} s ago"))
                .unwrap_or_else(|| "never".into())
        );
    }
    out.push_str("\nkube-proxy\n");
    for p in &s.kube_proxy {
        let _ = writeln!(
            out,
            "  {:<20} {:<8} {:<17} restarts {}{}",
            p.name,
            p.node,
            p.state,
            p.restarts,
            p.message
                .as_ref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        );
    }
    out.push_str("\netcd members\n");
    if let Some(e) = &s.etcd.error {
        let _ = writeln!(out, "  {e}");
    }
    for m in &s.etcd.members {
        let _ = writeln!(
            out,
            "  {:<16} {:<8} {:<28} {}{}{}",
            m.id,
            if m.name.is_empty() { "-" } else { &m.name },
            m.peer_urls.join(","),
            if m.started { "started" } else { "unstarted" },
            if m.is_learner { ", learner" } else { "" },
            if m.healthy {
                ", healthy"
            } else {
                ", UNHEALTHY"
            }
        );
    }
    out.push_str("\nLoad balancer\n");
    for (a, up) in &s.load_balancer.frontends {
        let _ = writeln!(
            out,
            "  {a:<21} {}",
            if *up { "accepts TCP" } else { "DOWN" }
        );
    }
    for b in &s.load_balancer.backends {
        let _ = writeln!(out, "  backend {:<12} {} ({})", b.server, b.status, b.check);
    }
    if !s.problems.is_empty() {
        out.push_str("\nProblems\n");
        for p in &s.problems {
            let _ = writeln!(out, "  - {p}");
        }
    }
    out
}

fn kubelet_error(r: &NodeReport) -> Option<String> {
    r.kubelet.last_error.clone()
}

/// Connects as each of the node's components would: its kubeconfig, its CA, its server, the
/// node's /etc/hosts; any HTTP answer means TLS verified.
async fn connections(
    lab: &LabDir,
    spec: &LabSpec,
    n: &LabNode,
    joined: bool,
    kube_proxy: Option<&str>,
) -> Vec<Connection> {
    let mut out = vec![];
    if !joined {
        return out;
    }
    let mut files = vec![("kubelet", "/etc/kubernetes/kubelet.conf")];
    if lab
        .node_path(
            &n.name,
            "/etc/kubernetes/manifests/kube-controller-manager.yaml",
        )
        .exists()
    {
        files.push((
            "kube-controller-manager",
            "/etc/kubernetes/controller-manager.conf",
        ));
    }
    if lab
        .node_path(&n.name, "/etc/kubernetes/manifests/kube-scheduler.yaml")
        .exists()
    {
        files.push(("kube-scheduler", "/etc/kubernetes/scheduler.conf"));
    }
    for (component, file) in files {
        let client = ApiClient::from_kubeconfig(lab, n, file);
        out.push(probe(component, file.to_string(), client).await);
    }
    if let Some(server) = kube_proxy {
        // kube-proxy trusts the cluster CA (its service-account ca.crt).
        let ca = std::fs::read_to_string(
            lab.node_path(&spec.init_node().name, "/etc/kubernetes/pki/ca.crt"),
        )
        .unwrap_or_default();
        let client = ApiClient::new(
            server,
            ca.as_bytes(),
            ClientAuth::None,
            Resolver::for_node(lab, n),
        );
        out.push(
            probe(
                "kube-proxy",
                "configmap kube-system/kube-proxy".into(),
                client,
            )
            .await,
        );
    }
    out
}

async fn probe(
    component: &str,
    source: String,
    client: Result<ApiClient, ClientError>,
) -> Connection {
    let mut c = Connection {
        component: component.to_string(),
        source,
        ..Default::default()
    };
    match client {
        Err(e) => c.error = Some(e.to_string()),
        Ok(client) => {
            let client = client.with_timeout(Duration::from_secs(3));
            c.server = client.server().to_string();
            match client.get("/version").await {
                Ok(_) => c.tls_verifies = true,
                Err(e) => c.error = Some(e.to_string()),
            }
        }
    }
    c
}

/// The `server:` of kube-proxy's kubeconfig, from its ConfigMap.
async fn kube_proxy_server(client: &kube::Client) -> Option<String> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let cm = Api::<ConfigMap>::namespaced(client.clone(), "kube-system")
        .get_opt("kube-proxy")
        .await
        .ok()??;
    let text = cm.data?.get("kubeconfig.conf")?.clone();
    crate::kubeconfig::current_server(&text)
        .ok()
        .map(|s| s.server)
}

/// The member list as etcd reports it, and each started member's own health: it answers
/// `status` and knows a leader (no leader: quorum is lost).
async fn etcd_status(lab: &LabDir, spec: &LabSpec) -> EtcdStatus {
    let mut st = EtcdStatus::default();
    let client = match EtcdClient::for_lab(lab, spec) {
        Ok(c) => c.with_timeout(Duration::from_secs(3)),
        Err(e) => {
            st.error = Some(e.to_string());
            return st;
        }
    };
    let members = match client.member_list().await {
        Ok(m) => m,
        Err(e) => {
            st.error = Some(format!("member list: {e}"));
            return st;
        }
    };
    for m in members {
        let mut ms = MemberStatus {
            id: m.id.clone(),
            name: m.name.clone(),
            peer_urls: m.peer_urls.clone(),
            client_urls: m.client_urls.clone(),
            is_learner: m.is_learner,
            started: m.started,
            ..Default::default()
        };
        if let Some(url) = m.client_urls.first() {
            let one = EtcdClient::for_lab_at(lab, spec, vec![url.clone()])
                .map(|c| c.with_timeout(Duration::from_secs(3)));
            match one {
                Err(e) => ms.error = Some(e.to_string()),
                Ok(one) => match one.status(url).await {
                    Ok(s) if s.leader == "0" || s.leader.is_empty() => {
                        ms.error = Some("etcdserver: no leader".into())
                    }
                    Ok(s) if !s.errors.is_empty() => ms.error = Some(s.errors.join("; ")),
                    Ok(_) => ms.healthy = true,
                    Err(e) => ms.error = Some(e.to_string()),
                },
            }
        } else if m.started {
            ms.error = Some("the member advertises no client URL".into());
        }
        st.members.push(ms);
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: &str) -> PodStatus {
        PodStatus {
            name: name.into(),
            node: node.into(),
            state: "Running".into(),
            ready: true,
            restarts: 0,
            message: None,
        }
    }

    #[test]
    fn a_node_whose_kube_proxy_pod_is_not_made_yet_is_named() {
        let nodes: Vec<String> = vec!["cp1".into(), "w1".into(), "w2".into()];
        let pods = [
            pod("kube-proxy-abcde", "cp1"),
            pod("kube-proxy-fghij", "w2"),
        ];
        assert_eq!(nodes_without_kube_proxy(&nodes, &pods), vec!["w1"]);
        assert!(nodes_without_kube_proxy(&nodes[..1], &pods).is_empty());
        assert_eq!(
            nodes_without_kube_proxy(&nodes, &[]),
            vec!["cp1", "w1", "w2"]
        );
    }
}
