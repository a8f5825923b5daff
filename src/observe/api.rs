//! The Kubernetes API through `kube`: the three ConfigMaps, Nodes, kube-proxy Pods, Leases.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::Config;
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::reach::Reach;
use crate::configmaps::KubeadmConfigMap;
use crate::observed::{
    ApiObservation, ConfigMapObservation, KubeNode, LeaseObservation, PodObservation, Probe,
    configmap_key,
};
use crate::readings::api::{configmap_observation, kube_node, lease_observation, scheduled_pod};
use crate::seams::{ClusterApi, SeamError};
use crate::transport::install_crypto_provider;

/// The leader-election Leases in kube-system.
pub const LEASES: [&str; 2] = ["kube-controller-manager", "kube-scheduler"];

/// Reads the API as the kubeconfig `kubeconfig` (its text, held in memory) says; `origin`
/// names where it came from (`/path/admin.conf`, `cp1:/etc/kubernetes/admin.conf`) for
/// messages; the client is `reach`'s. Failures are data (`reachable: failed`), never an early
/// return.
pub async fn read_api<R: Reach>(
    reach: &R,
    kubeconfig: &str,
    origin: &str,
    timeout: Duration,
) -> ApiObservation {
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
    let client = match reach.api(config.clone(), timeout) {
        Ok(c) => c,
        Err(e) => {
            obs.reachable = failed(format!(
                "cannot build a client for {} from {origin}: {e}; fix the kubeconfig",
                ctx.server
            ));
            return obs;
        }
    };
    match tokio::time::timeout(timeout, read_all(&*client)).await {
        Err(_) => obs.reachable = failed(ctx.timed_out()),
        Ok(Err(e)) => {
            let go_words = match &e {
                Failure::Tls(_) => reach.x509_words(&config, timeout).await,
                _ => None,
            };
            obs.reachable = failed(ctx.describe(&e, go_words));
        }
        Ok(Ok(read)) => read.into_observation(&mut obs),
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

/// What observation keeps of the API's objects.
#[derive(Debug, Default, PartialEq)]
pub struct Read {
    pub configmaps: BTreeMap<String, ConfigMapObservation>,
    pub nodes: BTreeMap<String, KubeNode>,
    pub kube_proxy_pods: BTreeMap<String, PodObservation>,
    pub leases: BTreeMap<String, LeaseObservation>,
    pub static_pods: BTreeMap<String, PodObservation>,
}

impl Read {
    fn into_observation(self, obs: &mut ApiObservation) {
        obs.configmaps = self.configmaps;
        obs.nodes = self.nodes;
        obs.kube_proxy_pods = self.kube_proxy_pods;
        obs.leases = self.leases;
        obs.static_pods = self.static_pods;
    }
}

/// Every read through the cluster seam at once; the first failure (in a fixed order) stands
/// for all.
pub async fn read_all<C: ClusterApi>(api: &C) -> Result<Read, Failure> {
    let cm = |cm: KubeadmConfigMap| async move {
        let got = found(api.get_configmap(cm.namespace(), cm.name()).await);
        (configmap_key(cm), got)
    };
    let lease =
        |name: &'static str| async move { (name, found(api.get_lease("kube-system", name).await)) };
    let (cms, node_list, pod_list, static_list, leases) = tokio::join!(
        futures_util::future::join_all(KubeadmConfigMap::ALL.map(cm)),
        api.list_nodes(),
        api.list_pods("kube-system", "k8s-app=kube-proxy", None),
        api.list_pods("kube-system", "tier=control-plane", None),
        futures_util::future::join_all(LEASES.map(lease)),
    );
    let mut read = Read::default();
    for (key, got) in cms {
        if let Some(cm) = got.map_err(|e| Failure::of(e, &format!("get configmap {key}")))? {
            read.configmaps.insert(key, configmap_observation(&cm));
        }
    }
    for node in node_list.map_err(|e| Failure::of(e, "list nodes"))? {
        read.nodes.insert(node.name.clone(), kube_node(&node));
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
        let component = pod.labels.get("component").map(String::as_str);
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
        if let Some(lease) = got.map_err(|e| Failure::of(e, &format!("get lease {name}")))? {
            read.leases
                .insert(name.to_string(), lease_observation(&lease));
        }
    }
    Ok(read)
}

/// A get's answer with 404 as `None`.
fn found<T>(got: Result<T, SeamError>) -> Result<Option<T>, SeamError> {
    match got {
        Err(SeamError::NotFound { .. }) => Ok(None),
        got => got.map(Some),
    }
}

/// Why a read failed, as the cluster seam sorted it.
#[derive(Debug)]
pub enum Failure {
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
    fn of(e: SeamError, what: &str) -> Failure {
        match e {
            SeamError::Status {
                code,
                reason,
                message,
                ..
            } => Failure::Status {
                what: what.to_string(),
                code,
                reason,
                message,
            },
            SeamError::Conflict { .. } => Failure::Status {
                what: what.to_string(),
                code: 409,
                reason: "Conflict".into(),
                message: e.to_string(),
            },
            SeamError::NotFound { .. } => Failure::Status {
                what: what.to_string(),
                code: 404,
                reason: "NotFound".into(),
                message: e.to_string(),
            },
            SeamError::Unreachable { detail, .. } => Failure::Dial(detail),
            SeamError::Tls { detail, .. } => Failure::Tls(detail),
            SeamError::Timeout { .. } => Failure::Timeout,
            e => Failure::Other(e.to_string()),
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
        let obs = read_api(
            &super::super::reach::SshReach,
            kc,
            "/tmp/x.conf",
            Duration::from_secs(3),
        )
        .await;
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
            &super::super::reach::SshReach,
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

    /// A cluster in the fake: two ConfigMaps of three, a Node, kube-proxy rolling out on w1
    /// (the new pod not ready yet), one pod not scheduled, the static pods, one Lease.
    fn fake_world() -> crate::seams::fake::World {
        use crate::seams::{ConfigMap, Lease, NodeStatus, Pod};
        let mut w = crate::seams::fake::World::default();
        for (ns, name, key) in [
            ("kube-system", "kubeadm-config", "ClusterConfiguration"),
            ("kube-public", "cluster-info", "kubeconfig"),
        ] {
            w.configmaps.insert(
                (ns.into(), name.into()),
                ConfigMap {
                    namespace: ns.into(),
                    name: name.into(),
                    resource_version: "11".into(),
                    data: [(key.to_string(), format!("{name} data"))].into(),
                    changed_at: Some("2026-11-24T08:15:17Z".into()),
                },
            );
        }
        w.nodes.insert(
            "cp1".into(),
            NodeStatus {
                name: "cp1".into(),
                ready: true,
                roles: vec!["control-plane".into()],
                kubelet_version: "v1.31.2".into(),
            },
        );
        let pod = |name: &str, node: &str, ready: bool, labels: &[(&str, &str)]| Pod {
            namespace: "kube-system".into(),
            name: name.into(),
            node: node.into(),
            uid: format!("uid-{name}"),
            ready,
            created_at: "2026-11-24T08:15:17Z".into(),
            restarts: 1,
            started_at: Some("2026-11-24T08:16:00Z".into()),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let proxy = [("k8s-app", "kube-proxy")];
        w.pods.push(pod("kube-proxy-old", "w1", true, &proxy));
        w.pods.push(pod("kube-proxy-new", "w1", false, &proxy));
        w.pods.push(pod("kube-proxy-pending", "", false, &proxy));
        let static_pod = |c: &'static str| [("tier", "control-plane"), ("component", c)];
        w.pods.push(pod(
            "kube-scheduler-cp1",
            "cp1",
            true,
            &static_pod("kube-scheduler"),
        ));
        w.pods
            .push(pod("etcd-cp1", "cp1", true, &static_pod("etcd")));
        w.leases.insert(
            ("kube-system".into(), "kube-scheduler".into()),
            Lease {
                namespace: "kube-system".into(),
                name: "kube-scheduler".into(),
                holder: Some("cp1_0d6c".into()),
                acquire_time: None,
                renew_time: Some("2026-11-24T08:20:00.000000Z".into()),
                duration_secs: Some(15),
                resource_version: "12".into(),
            },
        );
        w
    }

    #[tokio::test]
    async fn the_fake_cluster_drives_the_api_reads() {
        let fake = crate::seams::fake::FakeCluster::new(fake_world());
        let read = read_all(&fake).await.expect("reads");
        assert_eq!(
            read.configmaps.keys().collect::<Vec<_>>(),
            ["kube-public/cluster-info", "kube-system/kubeadm-config"]
        );
        assert_eq!(
            read.configmaps["kube-public/cluster-info"],
            ConfigMapObservation {
                resource_version: "11".into(),
                data: [("kubeconfig".to_string(), "cluster-info data".to_string())].into(),
                changed_at: Some("2026-11-24T08:15:17Z".into()),
            }
        );
        assert_eq!(read.nodes["cp1"].roles, ["control-plane"]);
        // The ready pod of the rollout tells w1's state; the unscheduled one is left out.
        assert_eq!(read.kube_proxy_pods.len(), 1);
        assert_eq!(read.kube_proxy_pods["w1"].name, "kube-proxy-old");
        assert_eq!(read.kube_proxy_pods["w1"].restarts, 1);
        // etcd's static pod is not one hactl restarts for a kubeconfig.
        assert_eq!(
            read.static_pods.keys().collect::<Vec<_>>(),
            ["kube-scheduler-cp1"]
        );
        assert_eq!(
            read.leases["kube-scheduler"].holder.as_deref(),
            Some("cp1_0d6c")
        );
        assert!(!read.leases.contains_key("kube-controller-manager"));
    }

    #[tokio::test]
    async fn a_read_that_fails_through_the_seam_is_worded_for_the_operator() {
        use crate::seams::fake::{Call, FakeCluster, Injected};
        let ctx = ErrorContext {
            server: "https://10.0.0.10:6443".into(),
            origin: "cp1:/etc/kubernetes/admin.conf".into(),
            user: Some("kubernetes-admin".into()),
            timeout: Duration::from_secs(5),
        };
        let fake = FakeCluster::new(fake_world());
        fake.fail(Call::ListNodes, 1, Injected::Timeout);
        let e = read_all(&fake).await.expect_err("fails");
        assert_eq!(
            ctx.describe(&e, None),
            "the API server https://10.0.0.10:6443 (from cp1:/etc/kubernetes/admin.conf) did not answer within 5s: is kube-apiserver running there, and does nothing drop packets to it?"
        );
        let fake = FakeCluster::new(fake_world());
        fake.fail(Call::ListPods, 2, Injected::LostBefore);
        let e = read_all(&fake).await.expect_err("fails");
        assert!(
            ctx.describe(&e, None).starts_with(
                "cannot read the API server https://10.0.0.10:6443 (from cp1:/etc/kubernetes/admin.conf): the API: connection lost"
            ),
            "{}",
            ctx.describe(&e, None)
        );
    }
}
