//! The Kubernetes API through `kube`: the three ConfigMaps, Nodes, kube-proxy Pods, Leases.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::configmaps::KubeadmConfigMap;
use crate::observed::{
    ApiObservation, ConfigMapObservation, KubeNode, LeaseObservation, PodObservation, Probe,
    configmap_key,
};
use crate::readings::api::{configmap_observation, kube_node, lease_observation, scheduled_pod};
use crate::tls_verify::GoVerifier;
use crate::transport::install_crypto_provider;

/// The leader-election Leases in kube-system.
pub const LEASES: [&str; 2] = ["kube-controller-manager", "kube-scheduler"];

/// Reads the API as the kubeconfig `kubeconfig` (its text, held in memory) says; `origin`
/// names where it came from (`/path/admin.conf`, `cp1:/etc/kubernetes/admin.conf`) for
/// messages. Failures are data (`reachable: failed`), never an early return.
pub async fn read_api(kubeconfig: &str, origin: &str, timeout: Duration) -> ApiObservation {
    install_crypto_provider();
    let mut obs = ApiObservation::new(Probe::Ok);
    let kc = match Kubeconfig::from_yaml(kubeconfig) {
        Ok(kc) => kc,
        Err(e) => {
            obs.reachable = failed(format!(
                "cannot read the kubeconfig {origin}: {e}; fix the file or point hactl at another"
            ));
            return obs;
        }
    };
    let current = Current::of(&kc);
    obs.server = current.server.clone();
    let Some(server) = current.server.clone() else {
        obs.reachable = failed(format!(
            "the kubeconfig {origin} names no server for its current context {:?}; fix its clusters/contexts",
            current.context.as_deref().unwrap_or("")
        ));
        return obs;
    };
    let ctx = ErrorContext {
        server,
        origin: origin.to_string(),
        user: current.user.clone(),
        timeout,
    };
    // The loader only decodes what the text holds (a `certificate-authority:` path would be
    // read by kube, as client-go would).
    let config = match Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await {
        Ok(c) => c,
        Err(e) => {
            obs.reachable = failed(format!(
                "cannot use the kubeconfig {origin} for {}: {e}; fix the file",
                ctx.server
            ));
            return obs;
        }
    };
    let go_probe = GoProbe {
        host: config
            .cluster_url
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port: config.cluster_url.port_u16().unwrap_or(443),
        sni: config.tls_server_name.clone(),
        roots: config.root_cert.clone(),
    };
    let mut config = config;
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    let client = match Client::try_from(config) {
        Ok(c) => c,
        Err(e) => {
            obs.reachable = failed(format!(
                "cannot build a client for {} from {origin}: {e}; fix the kubeconfig",
                ctx.server
            ));
            return obs;
        }
    };
    match tokio::time::timeout(timeout, read_all(client)).await {
        Err(_) => obs.reachable = failed(ctx.timed_out()),
        Ok(Err(e)) => {
            let go_words = match &e {
                Failure::Tls(_) => go_probe.x509_words(timeout).await,
                _ => None,
            };
            obs.reachable = failed(ctx.describe(&e, go_words));
        }
        Ok(Ok(read)) => {
            obs.configmaps = read.configmaps;
            obs.nodes = read.nodes;
            obs.kube_proxy_pods = read.kube_proxy_pods;
            obs.leases = read.leases;
            obs.static_pods = read.static_pods;
        }
    }
    obs
}

fn failed(reason: String) -> Probe {
    Probe::Failed { reason }
}

/// The kubeconfig's current context, resolved as client-go does (names only: no secrets).
struct Current {
    context: Option<String>,
    server: Option<String>,
    user: Option<String>,
}

impl Current {
    fn of(kc: &Kubeconfig) -> Current {
        let context_name = kc.current_context.clone();
        let context = context_name.as_ref().and_then(|name| {
            kc.contexts
                .iter()
                .find(|c| &c.name == name)
                .and_then(|c| c.context.clone())
        });
        let server = context.as_ref().and_then(|ctx| {
            kc.clusters
                .iter()
                .find(|c| c.name == ctx.cluster)
                .and_then(|c| c.cluster.as_ref())
                .and_then(|c| c.server.clone())
        });
        Current {
            context: context_name,
            server,
            user: context.and_then(|c| c.user),
        }
    }
}

struct Read {
    configmaps: BTreeMap<String, ConfigMapObservation>,
    nodes: BTreeMap<String, KubeNode>,
    kube_proxy_pods: BTreeMap<String, PodObservation>,
    leases: BTreeMap<String, LeaseObservation>,
    static_pods: BTreeMap<String, PodObservation>,
}

/// Every read at once; the first failure (in a fixed order) stands for all.
async fn read_all(client: Client) -> Result<Read, Failure> {
    let cm = |cm: KubeadmConfigMap| {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), cm.namespace());
        async move { (configmap_key(cm), api.get_opt(cm.name()).await) }
    };
    let lease_resource = ApiResource::erase::<Lease>(&());
    let lease = |name: &'static str| {
        // Untyped, so renewTime stays the string the API wrote.
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), "kube-system", &lease_resource);
        async move { (name, api.get_opt(name).await) }
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let proxy_pods = ListParams::default().labels("k8s-app=kube-proxy");
    let control_plane_pods = ListParams::default().labels("tier=control-plane");
    let all_nodes = ListParams::default();
    let (cms, node_list, pod_list, static_list, leases) = tokio::join!(
        futures_util::future::join_all(KubeadmConfigMap::ALL.map(cm)),
        nodes.list(&all_nodes),
        pods.list(&proxy_pods),
        pods.list(&control_plane_pods),
        futures_util::future::join_all(LEASES.map(lease)),
    );
    let mut read = Read {
        configmaps: BTreeMap::new(),
        nodes: BTreeMap::new(),
        kube_proxy_pods: BTreeMap::new(),
        leases: BTreeMap::new(),
        static_pods: BTreeMap::new(),
    };
    for (key, got) in cms {
        if let Some(cm) = got.map_err(|e| Failure::of(e, &format!("get configmap {key}")))? {
            read.configmaps.insert(key, configmap_observation(cm));
        }
    }
    for node in node_list.map_err(|e| Failure::of(e, "list nodes"))? {
        if let Some(name) = node.metadata.name.clone() {
            read.nodes.insert(name, kube_node(&node));
        }
    }
    for pod in pod_list.map_err(|e| Failure::of(e, "list pods -l k8s-app=kube-proxy"))? {
        let Some((node, seen)) = scheduled_pod(&pod) else {
            continue;
        };
        // During a rollout two pods share a node: the ready one tells the node's state.
        let keep = read
            .kube_proxy_pods
            .get(&node)
            .is_none_or(|old| !old.ready && seen.ready);
        if keep {
            read.kube_proxy_pods.insert(node, seen);
        }
    }
    for pod in static_list.map_err(|e| Failure::of(e, "list pods -l tier=control-plane"))? {
        // Only the static pods whose kubeconfigs hactl plans (etcd's and kube-apiserver's
        // restarts are decided otherwise).
        let component = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("component"))
            .map(String::as_str);
        if !matches!(
            component,
            Some("kube-controller-manager" | "kube-scheduler")
        ) {
            continue;
        }
        if let Some((_, seen)) = scheduled_pod(&pod) {
            read.static_pods.insert(seen.name.clone(), seen);
        }
    }
    for (name, got) in leases {
        if let Some(obj) = got.map_err(|e| Failure::of(e, &format!("get lease {name}")))? {
            read.leases
                .insert(name.to_string(), lease_observation(&obj.data["spec"]));
        }
    }
    Ok(read)
}

/// Why a read failed, classified from kube's error chain.
#[derive(Debug)]
enum Failure {
    /// The API answered with a Status (`code`, `reason`, `message`).
    Status {
        what: String,
        code: u16,
        reason: String,
        message: String,
    },
    /// The TCP connection failed or broke: Go's words.
    Dial(String),
    /// The TLS handshake failed: rustls' words, replaced by Go's when they can be had.
    Tls(String),
    Timeout,
    Other(String),
}

impl Failure {
    fn of(e: kube::Error, what: &str) -> Failure {
        if let kube::Error::Api(status) = &e {
            return Failure::Status {
                what: what.to_string(),
                code: status.code,
                reason: status.reason.clone(),
                message: status.message.clone(),
            };
        }
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = src {
            if let Some(r) = s.downcast_ref::<rustls::Error>() {
                return Failure::Tls(crate::tls_verify::go_tls_error(r));
            }
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                return Failure::of_io(io);
            }
            if s.to_string().contains("deadline has elapsed") {
                return Failure::Timeout;
            }
            src = s.source();
        }
        Failure::Other(e.to_string())
    }

    /// io::Error hides a custom inner error from `source()`, and hyper-rustls wraps
    /// tokio-rustls' io::Error in another: look inside each layer.
    fn of_io(io: &std::io::Error) -> Failure {
        if let Some(inner) = io.get_ref() {
            if let Some(r) = inner.downcast_ref::<rustls::Error>() {
                return Failure::Tls(crate::tls_verify::go_tls_error(r));
            }
            if let Some(io) = inner.downcast_ref::<std::io::Error>() {
                return Failure::of_io(io);
            }
        }
        match io.kind() {
            std::io::ErrorKind::TimedOut => Failure::Timeout,
            std::io::ErrorKind::UnexpectedEof => Failure::Dial("EOF".into()),
            _ => Failure::Dial(crate::transport::tls::os_text(io)),
        }
    }
}

/// What a failure message needs to name: the server, where the kubeconfig came from, the user.
struct ErrorContext {
    server: String,
    origin: String,
    user: Option<String>,
    timeout: Duration,
}

impl ErrorContext {
    fn head(&self) -> String {
        format!("the API server {} (from {})", self.server, self.origin)
    }

    fn user(&self) -> String {
        self.user
            .as_deref()
            .map_or("the kubeconfig's user".into(), |u| format!("user {u:?}"))
    }

    fn timed_out(&self) -> String {
        format!(
            "{} did not answer within {}s: is kube-apiserver running there, and does nothing drop packets to it?",
            self.head(),
            self.timeout.as_secs_f64()
        )
    }

    fn describe(&self, f: &Failure, go_words: Option<String>) -> String {
        let head = self.head();
        let hostport = self
            .server
            .split_once("://")
            .map_or(self.server.as_str(), |(_, r)| r)
            .trim_end_matches('/');
        match f {
            Failure::Status {
                code: 401, message, ..
            } => {
                // The API's message is usually just "Unauthorized": say it once.
                let said = if message.is_empty() || message == "Unauthorized" {
                    String::new()
                } else {
                    format!(": {message}")
                };
                format!(
                    "{head} rejected the credentials of {} (401 Unauthorized{said}): the client certificate or token is not valid for this cluster (expired, or from another cluster); use a current admin.conf",
                    self.user()
                )
            }
            Failure::Status {
                code: 403, message, ..
            } => format!(
                "{head} forbids {} to read what hactl needs (403 Forbidden): {message}; use a kubeconfig with cluster-admin rights such as /etc/kubernetes/admin.conf",
                self.user()
            ),
            Failure::Status {
                what,
                code,
                reason,
                message,
            } => format!("{head} answered {code} {reason} to {what}: {message}"),
            Failure::Dial(detail) => {
                let host = crate::observed::url_host(&self.server);
                if detail.contains("lookup address") || detail.contains("Name or service") {
                    // getaddrinfo's words, as Go's resolver says them.
                    return format!(
                        "cannot reach {head}: dial tcp: lookup {host}: no such host; add {host} to DNS (or /etc/hosts on this machine), or use an address in server:"
                    );
                }
                let fix = if detail.contains("connection refused") {
                    "; is kube-apiserver running on that address and port, and is the kubeconfig's server: line right?"
                } else {
                    ""
                };
                let detail = if detail.starts_with("dial ") || detail == "EOF" {
                    detail.clone()
                } else {
                    format!("dial tcp {hostport}: connect: {detail}")
                };
                format!("cannot reach {head}: {detail}{fix}")
            }
            Failure::Tls(detail) => {
                let detail = go_words
                    .map(|x| format!("tls: failed to verify certificate: {x}"))
                    .unwrap_or_else(|| detail.clone());
                let fix = if detail.contains("is valid for") || detail.contains("IP SANs") {
                    format!(
                        "; the API server's certificate does not name {}: add it to the certificate's SANs or use a server: the certificate names",
                        crate::observed::url_host(&self.server)
                    )
                } else if detail.contains("unknown authority") {
                    "; the kubeconfig's certificate-authority-data is not the CA that signed the API server's certificate: use the cluster's pki/ca.crt".into()
                } else if detail.contains("expired") {
                    "; renew the API server's certificate (kubeadm certs renew apiserver)".into()
                } else {
                    String::new()
                };
                format!("TLS to {head} failed: {detail}{fix}")
            }
            Failure::Timeout => self.timed_out(),
            Failure::Other(e) => format!("cannot read {head}: {e}"),
        }
    }
}

/// Where kube connected, to ask [`GoVerifier`] for the x509 failure in Go's words (kube's
/// verifier words errors its own way).
struct GoProbe {
    host: String,
    port: u16,
    sni: Option<String>,
    roots: Option<Vec<Vec<u8>>>,
}

impl GoProbe {
    /// A second handshake against the same server and CA bundle; `None` when it does not
    /// fail on the certificate.
    async fn x509_words(self, timeout: Duration) -> Option<String> {
        let verifier = Arc::new(GoVerifier::from_ca_der(self.roots?).ok()?);
        let ip = match self.host.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => tokio::net::lookup_host((self.host.as_str(), self.port))
                .await
                .ok()?
                .next()?
                .ip(),
        };
        let stream = crate::transport::tls::dial(SocketAddr::new(ip, self.port), timeout)
            .await
            .ok()?;
        let name = self.sni.as_deref().unwrap_or(&self.host);
        let err = crate::transport::tls::handshake(stream, name, verifier, timeout)
            .await
            .err()?;
        err.starts_with("x509:").then_some(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_context_names_server_and_user() {
        let kc = Kubeconfig::from_yaml(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://staging:6443\n  name: staging\n- cluster:\n    server: https://127.0.0.11:6443\n  name: kubernetes\ncontexts:\n- context:\n    cluster: kubernetes\n    user: kubernetes-admin\n  name: kubernetes-admin@kubernetes\ncurrent-context: kubernetes-admin@kubernetes\nusers:\n- name: kubernetes-admin\n  user: {}\n",
        )
        .expect("parses");
        let c = Current::of(&kc);
        assert_eq!(c.server.as_deref(), Some("https://127.0.0.11:6443"));
        assert_eq!(c.user.as_deref(), Some("kubernetes-admin"));
    }

    #[tokio::test]
    async fn an_unknown_host_says_so_and_what_to_add() {
        let kc = "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://no-such-host.invalid:6443\n  name: k\ncontexts:\n- context:\n    cluster: k\n    user: u\n  name: c\ncurrent-context: c\nusers:\n- name: u\n  user: {}\n";
        let obs = read_api(kc, "/tmp/x.conf", Duration::from_secs(3)).await;
        assert_eq!(
            obs.reachable.failure(),
            Some(
                "cannot reach the API server https://no-such-host.invalid:6443 (from /tmp/x.conf): dial tcp: lookup no-such-host.invalid: no such host; add no-such-host.invalid to DNS (or /etc/hosts on this machine), or use an address in server:"
            )
        );
    }

    #[tokio::test]
    async fn garbage_is_a_failed_read_naming_the_file() {
        let obs = read_api(
            "clusters: [",
            "cp1:/etc/kubernetes/admin.conf",
            Duration::from_secs(1),
        )
        .await;
        let reason = obs.reachable.failure().expect("failed");
        assert!(
            reason.contains("cp1:/etc/kubernetes/admin.conf"),
            "{reason}"
        );
        assert!(obs.configmaps.is_empty() && obs.nodes.is_empty());
    }
}
