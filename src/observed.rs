//! The observed state: what observation of the live cluster (or a snapshot of it) found.
//!
//! A plain value with no behaviour beyond small queries: live observation fills it, `hactl
//! observe` writes it as JSON, `plan --observed` reads it back. It never holds a secret: private
//! keys and tokens inside kubeconfig text are replaced by [`REDACTED`] before they get here.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::configmaps::KubeadmConfigMap;

/// The version of the snapshot format this build reads and writes.
pub const OBSERVED_FORMAT_VERSION: u32 = 1;

/// What stands in a kubeconfig where a private key or a token was.
pub const REDACTED: &str = "REDACTED";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObservedState {
    pub format_version: u32,
    pub endpoint: EndpointObservation,
    /// Keyed by the node names of the desired state.
    pub nodes: BTreeMap<String, NodeObservation>,
    pub api: ApiObservation,
    pub etcd: EtcdObservation,
}

/// The outcome of one probe: it worked, or why not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Probe {
    Ok,
    Failed { reason: String },
}

impl Probe {
    pub fn is_ok(&self) -> bool {
        matches!(self, Probe::Ok)
    }

    pub fn failure(&self) -> Option<&str> {
        match self {
            Probe::Ok => None,
            Probe::Failed { reason } => Some(reason),
        }
    }
}

/// The load balancer, as seen from hactl.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointObservation {
    /// One TCP probe per endpoint address.
    pub addresses: BTreeMap<String, Probe>,
    /// A TLS handshake through the LB that verifies the endpoint host against the cluster CA;
    /// `None` when it could not be tried (no address accepted TCP).
    pub tls: Option<Probe>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeObservation {
    /// The address hactl connected to: a snapshot taken for other addresses is not this node's.
    pub address: String,
    /// Whether hactl could log in; when not, every other field is empty.
    pub ssh: SshProbe,
    /// `kubeadm version -o short`, e.g. `v1.31.2`; `None` when kubeadm is not installed.
    pub kubeadm_version: Option<String>,
    /// `kubelet --version`, e.g. `v1.31.2`.
    pub kubelet_version: Option<String>,
    pub container_runtime: Option<ContainerRuntime>,
    /// The kubeconfig files in `/etc/kubernetes`, keyed by file name (`admin.conf`), with
    /// private keys and tokens redacted. A file that does not exist is absent.
    pub kubeconfigs: BTreeMap<String, String>,
    /// `/etc/kubernetes/pki/apiserver.crt`, when it exists.
    pub apiserver_cert: Option<CertificateObservation>,
    /// The `--advertise-address` and `--secure-port` of the kube-apiserver static pod manifest.
    pub apiserver_endpoint: Option<ApiserverEndpoint>,
    /// `sha256:<hex>` of the cluster CA's SubjectPublicKeyInfo, from `pki/ca.crt`.
    pub ca_pin: Option<String>,
    /// From a node that is not a control-plane member yet: can it reach the existing control
    /// plane? Keyed by `ADDRESS:PORT`.
    pub control_plane_reachability: BTreeMap<String, Probe>,
    /// When the kubelet service last started (systemd's `ActiveEnterTimestamp`, the node's
    /// clock, whole seconds, RFC 3339); `None` when it is not running or systemd cannot say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_started_at: Option<String>,
    /// When each file of `kubeconfigs` was last modified (the node's clock, whole seconds):
    /// a file changed after its reader started is not what the reader runs with.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kubeconfigs_modified_at: BTreeMap<String, String>,
    /// `sha256:<hex>` of each file of `kubeconfigs` as it is on the node (before redaction):
    /// apply refuses to rewrite a file that changed since.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kubeconfigs_sha256: BTreeMap<String, String>,
}

impl NodeObservation {
    /// A node observed at `address` with the outcome `ssh` and nothing read yet.
    pub fn new(address: &str, ssh: SshProbe) -> NodeObservation {
        NodeObservation {
            address: address.to_string(),
            ssh,
            kubeadm_version: None,
            kubelet_version: None,
            container_runtime: None,
            kubeconfigs: BTreeMap::new(),
            apiserver_cert: None,
            apiserver_endpoint: None,
            ca_pin: None,
            control_plane_reachability: BTreeMap::new(),
            kubelet_started_at: None,
            kubeconfigs_modified_at: BTreeMap::new(),
            kubeconfigs_sha256: BTreeMap::new(),
        }
    }
}

/// True when RFC 3339 time `a` is at least a whole second after `b` (both come in whole
/// seconds: equal means "the same second", which cannot be ordered); `None` when either does
/// not parse.
pub fn later(a: &str, b: &str) -> Option<bool> {
    later_by(a, b, 0)
}

/// True when RFC 3339 time `a` is more than `margin_secs` whole seconds after `b`.
pub fn later_by(a: &str, b: &str, margin_secs: i64) -> Option<bool> {
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;
    let secs = |t: &str| {
        OffsetDateTime::parse(t, &Rfc3339)
            .ok()
            .map(OffsetDateTime::unix_timestamp)
    };
    Some(secs(a)? > secs(b)? + margin_secs)
}

/// The kinds of SSH failure whose fix differs from "check that sshd runs".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SshFailure {
    HostKeyMismatch,
    HostKeyUnknown,
    PermissionDenied,
    Sudo,
    /// Logged in, but the node script did not finish within `--command-timeout`.
    CommandTimeout,
    /// Logged in, but kubeadm's files could not be read (not root, no sudo; or SELinux).
    Unreadable,
}

impl SshFailure {
    const ALL: [SshFailure; 6] = [
        SshFailure::HostKeyMismatch,
        SshFailure::HostKeyUnknown,
        SshFailure::PermissionDenied,
        SshFailure::Sudo,
        SshFailure::CommandTimeout,
        SshFailure::Unreadable,
    ];

    /// The kind's words, which begin the stored reason (`host key mismatch: …`).
    fn prefix(self) -> &'static str {
        match self {
            SshFailure::HostKeyMismatch => "host key mismatch",
            SshFailure::HostKeyUnknown => "host key unknown",
            SshFailure::PermissionDenied => "permission denied",
            SshFailure::Sudo => "sudo -n failed",
            SshFailure::CommandTimeout => "command timed out",
            SshFailure::Unreadable => "cannot read",
        }
    }
}

/// Whether hactl could log in to a node and read it. A failure keeps its kind as a type from
/// the transport to the planner's fix; it is stored as a [`Probe`] whose reason is `KIND:
/// detail` (the detail alone when the kind has no fix of its own), as snapshots always were,
/// and read back from that form only when a stored observation is loaded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Probe", from = "Probe")]
pub enum SshProbe {
    Ok,
    Failed {
        kind: Option<SshFailure>,
        detail: String,
    },
}

impl SshProbe {
    pub fn failed(kind: SshFailure, detail: impl Into<String>) -> SshProbe {
        SshProbe::Failed {
            kind: Some(kind),
            detail: detail.into(),
        }
    }

    /// A failure with no fix of its own (the connection): the fix is "check that sshd runs".
    pub fn unreachable(detail: impl Into<String>) -> SshProbe {
        SshProbe::Failed {
            kind: None,
            detail: detail.into(),
        }
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, SshProbe::Ok)
    }

    /// The kind of failure, when there is one with a fix of its own.
    pub fn kind(&self) -> Option<SshFailure> {
        match self {
            SshProbe::Failed { kind, .. } => *kind,
            SshProbe::Ok => None,
        }
    }

    /// Why hactl could not read the node, in the words messages use.
    pub fn failure(&self) -> Option<String> {
        match self {
            SshProbe::Ok => None,
            SshProbe::Failed {
                kind: Some(kind),
                detail,
            } => Some(format!("{}: {detail}", kind.prefix())),
            SshProbe::Failed { kind: None, detail } => Some(detail.clone()),
        }
    }
}

impl From<SshProbe> for Probe {
    fn from(p: SshProbe) -> Probe {
        match p.failure() {
            None => Probe::Ok,
            Some(reason) => Probe::Failed { reason },
        }
    }
}

impl From<Probe> for SshProbe {
    /// A stored reason back into its kind: the prefix the kind was written with.
    fn from(p: Probe) -> SshProbe {
        let Probe::Failed { reason } = p else {
            return SshProbe::Ok;
        };
        SshFailure::ALL
            .into_iter()
            .find_map(|kind| {
                let detail = reason.strip_prefix(kind.prefix())?.strip_prefix(": ")?;
                Some(SshProbe::failed(kind, detail))
            })
            .unwrap_or_else(|| SshProbe::unreachable(reason))
    }
}

/// Stored as a [`Probe`], so described as one.
impl JsonSchema for SshProbe {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        Probe::schema_name()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        Probe::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        Probe::json_schema(generator)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiserverEndpoint {
    pub advertise_address: String,
    pub port: u16,
}

impl ApiserverEndpoint {
    /// `https://ADDRESS:PORT`, with brackets around an IPv6 address.
    pub fn url(&self) -> String {
        if self.advertise_address.contains(':') {
            format!("https://[{}]:{}", self.advertise_address, self.port)
        } else {
            format!("https://{}:{}", self.advertise_address, self.port)
        }
    }
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ContainerRuntime {
    Containerd,
    CriO,
    Docker,
}

impl ContainerRuntime {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerRuntime::Containerd => "containerd",
            ContainerRuntime::CriO => "cri-o",
            ContainerRuntime::Docker => "docker",
        }
    }
}

/// A parsed X.509 certificate, as much of it as planning needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateObservation {
    pub subject: String,
    pub issuer: String,
    /// Subject alternative names in the certificate's order.
    pub sans: Vec<San>,
    pub key_type: KeyType,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
    /// The certificate verifies against `pki/ca.crt`.
    pub issuer_matches_ca: bool,
    /// `sha256:<hex>` of the certificate file as it is on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// `sha256:<hex>` of the certificate's SubjectPublicKeyInfo (DER): the key pair it is for,
    /// which a reissued certificate keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_sha256: Option<String>,
}

/// The key algorithms kubeadm writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum KeyType {
    #[serde(rename = "RSA-2048")]
    Rsa2048,
    #[serde(rename = "RSA-3072")]
    Rsa3072,
    #[serde(rename = "RSA-4096")]
    Rsa4096,
    #[serde(rename = "ECDSA-P256")]
    EcdsaP256,
    #[serde(rename = "ECDSA-P384")]
    EcdsaP384,
}

/// A subject alternative name, written as OpenSSL prints it: `DNS:name` or `IP:address`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum San {
    Dns(String),
    Ip(std::net::IpAddr),
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(name) => write!(f, "DNS:{name}"),
            San::Ip(ip) => write!(f, "IP:{ip}"),
        }
    }
}

impl FromStr for San {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(name) = s.strip_prefix("DNS:") {
            if name.is_empty() {
                return Err(format!("empty DNS name in SAN {s:?}"));
            }
            Ok(San::Dns(name.to_string()))
        } else if let Some(ip) = s.strip_prefix("IP:") {
            ip.parse()
                .map(San::Ip)
                .map_err(|_| format!("invalid IP address in SAN {s:?}"))
        } else {
            Err(format!("SAN {s:?} is neither DNS:name nor IP:address"))
        }
    }
}

impl TryFrom<String> for San {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<San> for String {
    fn from(san: San) -> String {
        san.to_string()
    }
}

impl JsonSchema for San {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "San".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^(DNS|IP):.+$",
            "description": "A subject alternative name: `DNS:name` or `IP:address`."
        })
    }
}

/// What the Kubernetes API said.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiObservation {
    /// Whether hactl could reach and authenticate to the API; when not, the rest is empty.
    pub reachable: Probe,
    /// The `server:` hactl used.
    pub server: Option<String>,
    /// Keyed by `NAMESPACE/NAME`; a ConfigMap that does not exist is absent.
    pub configmaps: BTreeMap<String, ConfigMapObservation>,
    /// Node objects, keyed by name.
    pub nodes: BTreeMap<String, KubeNode>,
    /// kube-proxy Pods, keyed by the node they run on.
    pub kube_proxy_pods: BTreeMap<String, PodObservation>,
    /// The leader-election Leases in kube-system (`kube-controller-manager`, `kube-scheduler`),
    /// keyed by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub leases: BTreeMap<String, LeaseObservation>,
    /// The mirror Pods of kubeadm's kube-controller-manager and kube-scheduler static pods
    /// (kube-system, `tier=control-plane`), keyed by name: `<component>-<node>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub static_pods: BTreeMap<String, PodObservation>,
}

impl ApiObservation {
    /// The API as `reachable` says, with nothing read yet.
    pub fn new(reachable: Probe) -> ApiObservation {
        ApiObservation {
            reachable,
            server: None,
            configmaps: BTreeMap::new(),
            nodes: BTreeMap::new(),
            kube_proxy_pods: BTreeMap::new(),
            leases: BTreeMap::new(),
            static_pods: BTreeMap::new(),
        }
    }

    /// When the static pod of `component` on `node` started its running container.
    pub fn static_pod_started(&self, component: &str, node: &str) -> Option<&str> {
        self.static_pods
            .get(&format!("{component}-{node}"))?
            .started_at
            .as_deref()
    }
}

/// A leader-election Lease: who holds it and when they last renewed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseObservation {
    /// `holderIdentity`, e.g. `cp1_6f1c…`.
    pub holder: Option<String>,
    /// `renewTime`, RFC 3339 with microseconds as the API writes it.
    pub renew_time: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigMapObservation {
    pub resource_version: String,
    pub data: BTreeMap<String, String>,
    /// The latest `time` of the `managedFields` entries that own `data`: when what its readers
    /// read last changed (the API server's clock); `None` without managedFields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_at: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubeNode {
    pub ready: bool,
    /// From the `node-role.kubernetes.io/<role>` labels, sorted.
    pub roles: Vec<String>,
    pub kubelet_version: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PodObservation {
    pub name: String,
    pub ready: bool,
    pub restarts: u32,
    /// `creationTimestamp` (the API server's clock): a Pod created before its ConfigMap
    /// changed runs with the old one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// When its running container started (`state.running.startedAt`, the node's clock, as the
    /// kubelet reports it): a static pod started before its kubeconfig changed runs with the
    /// old one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
}

/// The etcd cluster, from `etcdctl member list` and `endpoint health` on a control-plane node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EtcdObservation {
    /// The node etcdctl ran on; `None` when no control-plane node could run it.
    pub observed_from: Option<String>,
    pub members: Vec<EtcdMember>,
    /// `endpoint health` for the cluster.
    pub health: Probe,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EtcdMember {
    /// Hexadecimal member id.
    pub id: String,
    /// Empty for a member that was added but never started.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
    /// `etcdctl endpoint health` of this member's client URL; `None` when it was not checked
    /// (a member that never started has no client URL to check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
}

impl EtcdObservation {
    /// No reachable control-plane node runs etcd, so none could be asked.
    pub const NO_NODE_TO_ASK: &str = "no reachable control-plane node runs a kube-apiserver and \
         etcd (no /etc/kubernetes/manifests/kube-apiserver.yaml found)";

    /// The observation when no node could be asked (see [`Self::NO_NODE_TO_ASK`]).
    pub fn unasked() -> EtcdObservation {
        EtcdObservation {
            observed_from: None,
            members: Vec::new(),
            health: Probe::Failed {
                reason: Self::NO_NODE_TO_ASK.to_string(),
            },
        }
    }

    /// Whether etcd went unchecked for want of a node to ask (rather than failing to answer).
    pub fn was_unasked(&self) -> bool {
        self.observed_from.is_none() && self.health.failure() == Some(Self::NO_NODE_TO_ASK)
    }
}

impl EtcdMember {
    /// An added member that never started has no name and no client URLs.
    pub fn started(&self) -> bool {
        !self.name.is_empty() && !self.client_urls.is_empty()
    }
}

/// How observations key a ConfigMap: `namespace/name`.
pub fn configmap_key(cm: KubeadmConfigMap) -> String {
    format!("{}/{}", cm.namespace(), cm.name())
}

impl ObservedState {
    /// The ConfigMap, if observed.
    pub fn configmap(&self, cm: KubeadmConfigMap) -> Option<&ConfigMapObservation> {
        self.api.configmaps.get(&configmap_key(cm))
    }

    /// The etcd member that is, or was meant to be, this node: by name, or by a peer URL on the
    /// node's address for a member that never started (and so has no name).
    pub fn etcd_member(&self, node: &str, address: &str) -> Option<&EtcdMember> {
        self.etcd
            .members
            .iter()
            .find(|m| m.name == node || m.peer_urls.iter().any(|u| url_host(u) == address))
    }

    /// Whether this node runs a control plane. The cluster says so (the Node's control-plane
    /// role, or a started voting etcd member); the node's files count only when neither the API
    /// nor etcd could be observed, because a join that stopped halfway leaves files behind.
    pub fn is_control_plane_member(&self, node: &str, address: &str) -> bool {
        let role = self
            .api
            .nodes
            .get(node)
            .is_some_and(|k| k.roles.iter().any(|r| r == "control-plane"));
        let voting = self
            .etcd_member(node, address)
            .is_some_and(|m| m.started() && !m.is_learner);
        let blind = !self.api.reachable.is_ok() && self.etcd.observed_from.is_none();
        let files = self.nodes.get(node).is_some_and(|o| {
            o.apiserver_cert.is_some() || o.kubeconfigs.contains_key("admin.conf")
        });
        role || voting || (blind && files)
    }
}

/// The host of `scheme://host:port/…`, without IPv6 brackets.
pub fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::{Probe, SshFailure, SshProbe, url_host};

    #[test]
    fn ssh_failures_are_stored_as_probes_and_read_back_with_their_kind() {
        for kind in SshFailure::ALL {
            let probe = SshProbe::failed(kind, "x: y");
            let stored = serde_json::to_value(&probe).unwrap();
            let reason = format!("{}: x: y", kind.prefix());
            assert_eq!(
                stored,
                serde_json::json!({"status": "failed", "reason": reason})
            );
            assert_eq!(serde_json::from_value::<SshProbe>(stored).unwrap(), probe);
        }
        let refused = "ssh: connect to host 127.0.0.22 port 22: Connection refused";
        let probe = SshProbe::from(Probe::Failed {
            reason: refused.into(),
        });
        assert_eq!(probe, SshProbe::unreachable(refused));
        assert_eq!(probe.kind(), None);
        assert_eq!(probe.failure().as_deref(), Some(refused));
        // A kind's words without the colon are not the kind.
        let probe = SshProbe::from(Probe::Failed {
            reason: "cannot reach".into(),
        });
        assert_eq!(probe.kind(), None);
        assert_eq!(SshProbe::from(Probe::Ok), SshProbe::Ok);
    }

    #[test]
    fn url_hosts_are_compared_whole() {
        assert_eq!(url_host("https://127.0.0.11:2380"), "127.0.0.11");
        assert_ne!(url_host("https://127.0.0.11:2380"), "127.0.0.1");
        assert_eq!(url_host("https://[::1]:2380"), "::1");
        assert_eq!(url_host("http://localhost:2380/x"), "localhost");
        assert_eq!(url_host("cp1"), "cp1");
    }
}
