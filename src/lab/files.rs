//! What kubeadm writes for a version: every node's files and the cluster's initial objects.
//!
//! Interface used by others: `generate(&LabSpec) -> Result<ClusterFiles, FilesError>`, the
//! per-node builders from the lab plan (`init_node_files`, `control_plane_node_files`,
//! `worker_node_files`, `bare_node_files`), and the join builders the lab's `kubeadm join`
//! drives with what the cluster says (`JoinCluster`, `control_plane_join_files`,
//! `etcd_join_manifest`, `kubelet_join_files`), `NodeFile`, `Content`.
//! Texts are written as kubeadm (Go, sorted keys) writes them; `manifests` holds the static
//! pods, `objects` the API objects and component configs, `facts` the per-version facts.

mod facts;
mod manifests;
mod objects;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::lab::pki::{self, CertAndKey, CertSpec, KeyType, PkiError, Usage};
use crate::lab::{LabNode, LabSpec};

pub use facts::Facts;
pub use manifests::{EtcdMember, etcd_manifest};
pub use objects::{
    cluster_configuration, cluster_info_kubeconfig, kube_proxy_config, kube_proxy_kubeconfig,
    kubelet_config,
};

/// kubeadm's `clusterName` default; the plan's cluster name is hactl's own label.
pub const CLUSTER_NAME: &str = "kubernetes";
/// kubeadm's default service subnet, whose first address is the `kubernetes` Service.
pub const SERVICE_SUBNET: &str = "10.96.0.0/12";
pub const FIRST_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
pub const DNS_DOMAIN: &str = "cluster.local";
pub const API_PORT: u16 = 6443;
/// Where the kubelet keeps its rotated client certificate (cert and key in one file).
pub const KUBELET_CLIENT_CURRENT: &str = "/var/lib/kubelet/pki/kubelet-client-current.pem";

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("the lab has Kubernetes 1.23 to 1.33, not {0}")]
    Version(String),
    #[error("--runtime docker needs Kubernetes below 1.24 (dockershim was removed), not {0}")]
    DockerRemoved(String),
    #[error("a worker thread generating keys panicked")]
    Thread,
}

/// What a node path holds.
#[derive(Clone, PartialEq, Eq)]
pub enum Content {
    Data(Vec<u8>),
    /// A symbolic link to this (absolute node) path.
    Symlink(String),
    Dir,
}

/// One file, link or directory kubeadm (or the kubelet) leaves on a node.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeFile {
    /// The absolute path on the node (`/etc/kubernetes/pki/ca.crt`).
    pub path: String,
    pub mode: u32,
    pub content: Content,
}

impl NodeFile {
    pub(crate) fn data(path: impl Into<String>, mode: u32, data: impl Into<Vec<u8>>) -> Self {
        NodeFile {
            path: path.into(),
            mode,
            content: Content::Data(data.into()),
        }
    }
    fn dir(path: impl Into<String>, mode: u32) -> Self {
        NodeFile {
            path: path.into(),
            mode,
            content: Content::Dir,
        }
    }
    /// The text of a data file (every file here is UTF-8).
    pub fn text(&self) -> Option<&str> {
        match &self.content {
            Content::Data(d) => std::str::from_utf8(d).ok(),
            _ => None,
        }
    }
}

// Keys live in these files: Debug shows the layout, never the bytes.
impl fmt::Debug for NodeFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let content = match &self.content {
            Content::Data(d) => format!("{} bytes", d.len()),
            Content::Symlink(t) => format!("-> {t}"),
            Content::Dir => "dir".into(),
        };
        write!(f, "{} {:o} {}", self.path, self.mode, content)
    }
}

/// The shared material `kubeadm join --control-plane` copies (kubeadm-certs).
#[derive(Clone)]
pub struct ClusterPki {
    pub ca: CertAndKey,
    pub front_proxy_ca: CertAndKey,
    pub etcd_ca: CertAndKey,
    /// `sa.key`, PKCS#1 PEM.
    pub sa_key: String,
    /// `sa.pub`, `PUBLIC KEY` PEM.
    pub sa_pub: String,
}

impl fmt::Debug for ClusterPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterPki")
            .field("ca", &self.ca)
            .field("front_proxy_ca", &self.front_proxy_ca)
            .field("etcd_ca", &self.etcd_ca)
            .finish_non_exhaustive()
    }
}

impl ClusterPki {
    /// Three CAs and the service-account key pair, generated in parallel.
    pub fn generate() -> Result<Self, FilesError> {
        let mut out = par_map(vec![0u8, 1, 2, 3], |i| {
            let ca = |cn| pki::new_ca(cn).map(|c| (c.cert_pem, c.key_pem));
            Ok(match i {
                0 => ca("kubernetes")?,
                1 => ca("front-proxy-ca")?,
                2 => ca("etcd-ca")?,
                _ => {
                    let key = pki::rsa_key()?;
                    (pki::public_key_pem(&key)?, key)
                }
            })
        })?
        .into_iter();
        let mut next =
            || -> Result<(String, String), FilesError> { out.next().ok_or(FilesError::Thread) };
        let ck = |(cert_pem, key_pem)| CertAndKey { cert_pem, key_pem };
        let ca = ck(next()?);
        let front_proxy_ca = ck(next()?);
        let etcd_ca = ck(next()?);
        let (sa_pub, sa_key) = next()?;
        Ok(ClusterPki {
            ca,
            front_proxy_ca,
            etcd_ca,
            sa_key,
            sa_pub,
        })
    }
}

/// Everything the lab writes at creation.
pub struct ClusterFiles {
    pub pki: ClusterPki,
    /// Every node of the spec, by name.
    pub nodes: BTreeMap<String, Vec<NodeFile>>,
    /// Complete Kubernetes objects to store in the API (ConfigMaps, the token Secret, …).
    pub objects: Vec<serde_json::Value>,
    /// The `abcdef.0123456789abcdef` token `kubeadm init` created. A secret.
    pub bootstrap_token: String,
}

impl fmt::Debug for ClusterFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterFiles")
            .field("pki", &self.pki)
            .field("nodes", &self.nodes)
            .field("objects", &self.objects.len())
            .field("bootstrap_token", &"<redacted>")
            .finish()
    }
}

/// The files of every node and the cluster's objects, as `kubeadm init` on the spec's first
/// control-plane node, `kubeadm join` on every worker, and nothing on the other
/// control-plane nodes would leave them.
pub fn generate(spec: &LabSpec) -> Result<ClusterFiles, FilesError> {
    let facts = Facts::new(spec)?;
    let pki = ClusterPki::generate()?;
    let init = spec.init_node();
    let token = bootstrap_token()?;

    let mut jobs: Vec<&LabNode> = Vec::with_capacity(spec.nodes.len());
    jobs.push(init);
    jobs.extend(spec.workers());
    // The init node is the slow one (RSA keys); the workers share the other threads.
    let built = par_map(jobs, |node| {
        let files = if node.name == init.name {
            init_node_files(spec, node, &pki)?
        } else {
            worker_node_files(spec, node, &pki)?
        };
        Ok((node.name.clone(), files))
    })?;
    let mut nodes: BTreeMap<String, Vec<NodeFile>> = built.into_iter().collect();
    for node in spec.bare_nodes() {
        nodes.insert(node.name.clone(), bare_node_files(spec, node));
    }
    let objects = objects::initial_objects(spec, &facts, &pki, &token)?;
    Ok(ClusterFiles {
        pki,
        nodes,
        objects,
        bootstrap_token: token,
    })
}

/// What `kubeadm init` leaves on the init node, after the kubelet started and kubeadm's
/// finalize phase pointed kubelet.conf at the rotated client certificate.
pub fn init_node_files(
    spec: &LabSpec,
    node: &LabNode,
    pki: &ClusterPki,
) -> Result<Vec<NodeFile>, FilesError> {
    control_plane_files(spec, node, pki, Mode::Init)
}

/// What `kubeadm join --control-plane` leaves on `node`: its own certificates (with its
/// SANs and the endpoint's), the shared CAs and sa keys, admin/controller-manager/scheduler
/// kubeconfigs, static pods with etcd joining the members before it in the plan, and the
/// kubelet.conf the kubelet wrote after its TLS bootstrap.
pub fn control_plane_node_files(
    spec: &LabSpec,
    node: &LabNode,
    pki: &ClusterPki,
) -> Result<Vec<NodeFile>, FilesError> {
    control_plane_files(spec, node, pki, Mode::Join)
}

/// What `kubeadm join` leaves on a worker pointed at the init node's own address.
pub fn worker_node_files(
    spec: &LabSpec,
    node: &LabNode,
    pki: &ClusterPki,
) -> Result<Vec<NodeFile>, FilesError> {
    let facts = Facts::new(spec)?;
    let server = api_url(spec.init_node().address, API_PORT);
    let mut files = vec![
        hosts_file(spec, node),
        NodeFile::data("/etc/kubernetes/pki/ca.crt", 0o644, pki.ca.cert_pem.clone()),
        NodeFile::data(
            "/etc/kubernetes/kubelet.conf",
            0o600,
            bootstrapped_kubelet_conf(&pki.ca.cert_pem, &server),
        ),
    ];
    files.extend(kubelet_files(&facts, node, &pki.ca)?);
    Ok(files)
}

/// A control-plane machine ready to join: kubeadm and the kubelet installed, no cluster files.
pub fn bare_node_files(spec: &LabSpec, node: &LabNode) -> Vec<NodeFile> {
    vec![
        hosts_file(spec, node),
        NodeFile::dir("/etc/kubernetes/manifests", 0o755),
        NodeFile::dir("/var/lib/kubelet", 0o755),
    ]
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Init,
    Join,
}

/// One certificate to issue, and where it goes.
struct CertJob<'a> {
    base: &'static str,
    ca: &'a CertAndKey,
    spec: CertSpec,
}

fn control_plane_files(
    spec: &LabSpec,
    node: &LabNode,
    pki: &ClusterPki,
    mode: Mode,
) -> Result<Vec<NodeFile>, FilesError> {
    let facts = Facts::new(spec)?;
    if mode == Mode::Join {
        return plan_join_files(spec, &facts, node, pki);
    }
    let addr = node.address;
    let local = api_url(addr, API_PORT);
    let (api_dns, api_ips) = apiserver_base_sans(node, DNS_DOMAIN, IpAddr::V4(FIRST_SERVICE_IP));
    let jobs = cert_jobs(
        &facts,
        node,
        &api_dns,
        &api_ips,
        pki,
        facts.has_super_admin(),
    );
    let issued = par_map(jobs, |job| {
        let ck = pki::issue(job.ca, &job.spec)?;
        Ok((job.base, job.spec.common_name, ck))
    })?;

    let mut files = vec![hosts_file(spec, node)];
    files.extend(shared_files(pki));
    for (base, cn, ck) in &issued {
        if base.ends_with(".conf") {
            files.push(NodeFile::data(
                format!("/etc/kubernetes/{base}"),
                0o600,
                embedded_kubeconfig(&pki.ca.cert_pem, &local, cn, ck),
            ));
        } else {
            files.extend(cert_files(base, ck));
        }
    }
    // kubeadm's finalize phase: the kubelet's rotated certificate replaces the embedded one.
    files.push(NodeFile::data(
        "/etc/kubernetes/kubelet.conf",
        0o600,
        user_kubeconfig(
            &pki.ca.cert_pem,
            &local,
            &format!("system:node:{}", node.name),
            UserAuth::Files(KUBELET_CLIENT_CURRENT),
        ),
    ));
    files.push(NodeFile::data(
        "/etc/kubernetes/manifests/etcd.yaml",
        0o600,
        etcd_manifest(&facts, node, &[EtcdMember::of(node)], false),
    ));
    files.extend(control_plane_manifests(&facts, node));
    files.push(NodeFile::dir("/var/lib/etcd", 0o700));
    files.extend(kubelet_files(&facts, node, &pki.ca)?);
    Ok(files)
}

/// `kubeadm join --control-plane` as the lab plan predicts it: the cluster's facts are the
/// plan's (the endpoint and its addresses as certSANs, the control-plane nodes before this
/// one as etcd members).
fn plan_join_files(
    spec: &LabSpec,
    facts: &Facts,
    node: &LabNode,
    pki: &ClusterPki,
) -> Result<Vec<NodeFile>, FilesError> {
    let endpoint = format!("{}:{}", spec.endpoint.host, spec.endpoint.port);
    let cluster = JoinCluster {
        kubelet_server: if facts.control_plane_kubelet_local() {
            api_url(node.address, API_PORT)
        } else {
            format!("https://{endpoint}")
        },
        control_plane_endpoint: endpoint,
        cert_sans: spec
            .endpoint
            .addresses
            .iter()
            .map(|a| a.to_string())
            .collect(),
        dns_domain: DNS_DOMAIN.to_string(),
        service_ip: IpAddr::V4(FIRST_SERVICE_IP),
    };
    let join = control_plane_join_files(facts, node, &cluster, pki)?;
    // The plan joins control-plane nodes in order: the members are the init node and every
    // control-plane node listed before this one.
    let mut members: Vec<EtcdMember> = spec
        .nodes
        .iter()
        .filter(|n| n.control_plane)
        .take_while(|n| n.name != node.name)
        .map(EtcdMember::of)
        .collect();
    members.push(EtcdMember::of(node));
    let mut files = vec![hosts_file(spec, node)];
    files.extend(join.certs);
    files.extend(join.kubeconfigs);
    files.extend(join.manifests);
    files.push(etcd_join_manifest(facts, node, &members));
    files.push(NodeFile::dir("/var/lib/etcd", 0o700));
    files.extend(kubelet_join_files(
        facts,
        node,
        &pki.ca,
        &pki.ca.cert_pem,
        &cluster.kubelet_server,
    )?);
    Ok(files)
}

/// What a joining control-plane node learns from the cluster (kubeadm-config's
/// ClusterConfiguration and cluster-info) rather than from the lab plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinCluster {
    /// `controlPlaneEndpoint`, `host:port`: admin.conf's server, an apiserver SAN.
    pub control_plane_endpoint: String,
    /// `apiServer.certSANs`, names or addresses.
    pub cert_sans: Vec<String>,
    /// `networking.dnsDomain`.
    pub dns_domain: String,
    /// The first address of `networking.serviceSubnet` (the `kubernetes` Service).
    pub service_ip: IpAddr,
    /// The server of the kubelet's bootstrap kubeconfig: cluster-info's, or the local API
    /// server with ControlPlaneKubeletLocalMode.
    pub kubelet_server: String,
}

impl JoinCluster {
    /// The host of `controlPlaneEndpoint` (without brackets for IPv6).
    pub fn endpoint_host(&self) -> &str {
        let ep = self.control_plane_endpoint.as_str();
        if let Some(rest) = ep.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        match ep.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => h,
            _ => ep,
        }
    }

    /// `https://` + controlPlaneEndpoint, with kubeadm's default port when it has none.
    pub fn endpoint_url(&self) -> String {
        let ep = &self.control_plane_endpoint;
        let has_port = if ep.starts_with('[') {
            ep.contains("]:")
        } else {
            ep.rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        };
        if has_port {
            format!("https://{ep}")
        } else {
            format!("https://{ep}:{API_PORT}")
        }
    }
}

/// The apiserver SANs kubeadm always puts there (`GetAPIServerAltNames`).
fn apiserver_base_sans(
    node: &LabNode,
    dns_domain: &str,
    service_ip: IpAddr,
) -> (Vec<String>, Vec<IpAddr>) {
    let dns = vec![
        node.name.clone(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        format!("kubernetes.default.svc.{dns_domain}"),
    ];
    (dns, vec![service_ip, node.address])
}

/// A joining node's apiserver SANs, in kubeadm's order: its own, then controlPlaneEndpoint's
/// host, then the ClusterConfiguration's certSANs (addresses as IP SANs, the rest as DNS).
pub fn apiserver_join_sans(node: &LabNode, cluster: &JoinCluster) -> (Vec<String>, Vec<IpAddr>) {
    let (mut dns, mut ips) = apiserver_base_sans(node, &cluster.dns_domain, cluster.service_ip);
    let extra = std::iter::once(cluster.endpoint_host().to_string())
        .chain(cluster.cert_sans.iter().cloned());
    for san in extra {
        let san = san.trim().to_string();
        if san.is_empty() {
            continue;
        }
        match san.parse::<IpAddr>() {
            Ok(ip) => push_unique(&mut ips, ip),
            Err(_) => push_unique(&mut dns, san),
        }
    }
    (dns, ips)
}

/// The etcd server and peer certificates' SANs.
pub fn etcd_sans(node: &LabNode) -> (Vec<String>, Vec<IpAddr>) {
    (
        vec![node.name.clone(), "localhost".to_string()],
        vec![
            node.address,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ],
    )
}

/// What `kubeadm join --control-plane` writes before the kubelet starts, by phase: the
/// certs phase (shared CAs and sa keys from kubeadm-certs, then this node's certificates),
/// the kubeconfig phase, the control-plane phase.
#[derive(Debug)]
pub struct ControlPlaneJoinFiles {
    pub certs: Vec<NodeFile>,
    pub kubeconfigs: Vec<NodeFile>,
    pub manifests: Vec<NodeFile>,
}

/// The control-plane files of a joining node from the cluster's facts: admin.conf points at
/// controlPlaneEndpoint, controller-manager.conf and scheduler.conf at the local API server
/// (kubeadm since 1.19.1), no super-admin.conf (written by `kubeadm init` only).
pub fn control_plane_join_files(
    facts: &Facts,
    node: &LabNode,
    cluster: &JoinCluster,
    pki: &ClusterPki,
) -> Result<ControlPlaneJoinFiles, FilesError> {
    let local = api_url(node.address, API_PORT);
    let endpoint = cluster.endpoint_url();
    let (api_dns, api_ips) = apiserver_join_sans(node, cluster);
    let jobs = cert_jobs(facts, node, &api_dns, &api_ips, pki, false);
    let issued = par_map(jobs, |job| {
        let ck = pki::issue(job.ca, &job.spec)?;
        Ok((job.base, job.spec.common_name, ck))
    })?;
    let mut certs = shared_files(pki);
    let mut kubeconfigs = Vec::new();
    for (base, cn, ck) in &issued {
        if base.ends_with(".conf") {
            let server = if *base == "admin.conf" {
                &endpoint
            } else {
                &local
            };
            kubeconfigs.push(NodeFile::data(
                format!("/etc/kubernetes/{base}"),
                0o600,
                embedded_kubeconfig(&pki.ca.cert_pem, server, cn, ck),
            ));
        } else {
            certs.extend(cert_files(base, ck));
        }
    }
    Ok(ControlPlaneJoinFiles {
        certs,
        kubeconfigs,
        manifests: control_plane_manifests(facts, node),
    })
}

/// `/etc/kubernetes/manifests/etcd.yaml` of a joining member: `--initial-cluster` lists
/// `members` (the cluster's, as etcd answered the member add, this node included) and
/// `--initial-cluster-state=existing`.
pub fn etcd_join_manifest(facts: &Facts, node: &LabNode, members: &[EtcdMember]) -> NodeFile {
    NodeFile::data(
        "/etc/kubernetes/manifests/etcd.yaml",
        0o600,
        etcd_manifest(facts, node, members, true),
    )
}

/// kube-apiserver, kube-controller-manager and kube-scheduler static pods.
fn control_plane_manifests(facts: &Facts, node: &LabNode) -> Vec<NodeFile> {
    manifests::control_plane(facts, node)
        .into_iter()
        .map(|(name, text)| {
            NodeFile::data(
                format!("/etc/kubernetes/manifests/{name}.yaml"),
                0o600,
                text,
            )
        })
        .collect()
}

/// The CAs and service-account keys every control-plane node shares.
fn shared_files(pki: &ClusterPki) -> Vec<NodeFile> {
    let mut files = Vec::new();
    let shared: [(&str, &CertAndKey); 3] = [
        ("ca", &pki.ca),
        ("front-proxy-ca", &pki.front_proxy_ca),
        ("etcd/ca", &pki.etcd_ca),
    ];
    for (base, ck) in shared {
        files.extend(cert_files(base, ck));
    }
    files.push(NodeFile::data(
        "/etc/kubernetes/pki/sa.key",
        0o600,
        pki.sa_key.clone(),
    ));
    files.push(NodeFile::data(
        "/etc/kubernetes/pki/sa.pub",
        0o600,
        pki.sa_pub.clone(),
    ));
    files
}

/// What the kubelet of a joining node ends up with: kubelet.conf as the kubelet writes it
/// after its TLS bootstrap against `server` (the bootstrap kubeconfig's), its client
/// certificate signed by `signer` (the cluster CA, as the controller-manager's csrsigner
/// signs it), its serving pair, and what kubeadm wrote for it.
pub fn kubelet_join_files(
    facts: &Facts,
    node: &LabNode,
    signer: &CertAndKey,
    ca_pem: &str,
    server: &str,
) -> Result<Vec<NodeFile>, FilesError> {
    let mut files = vec![NodeFile::data(
        "/etc/kubernetes/kubelet.conf",
        0o600,
        bootstrapped_kubelet_conf(ca_pem, server),
    )];
    files.extend(kubelet_files(facts, node, signer)?);
    Ok(files)
}

/// Every certificate of a control-plane node, kubeconfig client certificates included.
fn cert_jobs<'a>(
    facts: &Facts,
    node: &LabNode,
    api_dns: &[String],
    api_ips: &[IpAddr],
    pki: &'a ClusterPki,
    super_admin: bool,
) -> Vec<CertJob<'a>> {
    let (etcd_dns, etcd_ips) = etcd_sans(node);
    let with = |cn: &str, orgs: &[&str], usage, dns: &[String], ips: &[IpAddr]| CertSpec {
        common_name: cn.to_string(),
        organizations: orgs.iter().map(|s| s.to_string()).collect(),
        dns_names: dns.to_vec(),
        ip_addresses: ips.to_vec(),
        usage,
        key_type: KeyType::Rsa2048,
    };
    let masters: &[&str] = &["system:masters"];
    let mut jobs = vec![
        CertJob {
            base: "apiserver",
            ca: &pki.ca,
            spec: with("kube-apiserver", &[], Usage::Server, api_dns, api_ips),
        },
        CertJob {
            base: "apiserver-kubelet-client",
            ca: &pki.ca,
            spec: with(
                "kube-apiserver-kubelet-client",
                facts.kubelet_client_orgs(),
                Usage::Client,
                &[],
                &[],
            ),
        },
        CertJob {
            base: "front-proxy-client",
            ca: &pki.front_proxy_ca,
            spec: with("front-proxy-client", &[], Usage::Client, &[], &[]),
        },
        CertJob {
            base: "apiserver-etcd-client",
            ca: &pki.etcd_ca,
            spec: with(
                "kube-apiserver-etcd-client",
                facts.etcd_client_orgs(),
                Usage::Client,
                &[],
                &[],
            ),
        },
        CertJob {
            base: "etcd/server",
            ca: &pki.etcd_ca,
            spec: with(
                &node.name,
                &[],
                Usage::ServerAndClient,
                &etcd_dns,
                &etcd_ips,
            ),
        },
        CertJob {
            base: "etcd/peer",
            ca: &pki.etcd_ca,
            spec: with(
                &node.name,
                &[],
                Usage::ServerAndClient,
                &etcd_dns,
                &etcd_ips,
            ),
        },
        CertJob {
            base: "etcd/healthcheck-client",
            ca: &pki.etcd_ca,
            spec: with(
                "kube-etcd-healthcheck-client",
                facts.etcd_client_orgs(),
                Usage::Client,
                &[],
                &[],
            ),
        },
        // Kubeconfig client certificates, by file name.
        CertJob {
            base: "admin.conf",
            ca: &pki.ca,
            spec: with(
                "kubernetes-admin",
                &[facts.admin_group()],
                Usage::Client,
                &[],
                &[],
            ),
        },
        CertJob {
            base: "controller-manager.conf",
            ca: &pki.ca,
            spec: with(
                "system:kube-controller-manager",
                &[],
                Usage::Client,
                &[],
                &[],
            ),
        },
        CertJob {
            base: "scheduler.conf",
            ca: &pki.ca,
            spec: with("system:kube-scheduler", &[], Usage::Client, &[], &[]),
        },
    ];
    if super_admin {
        jobs.push(CertJob {
            base: "super-admin.conf",
            ca: &pki.ca,
            spec: with("kubernetes-super-admin", masters, Usage::Client, &[], &[]),
        });
    }
    jobs
}

fn push_unique<T: PartialEq>(v: &mut Vec<T>, x: T) {
    if !v.contains(&x) {
        v.push(x);
    }
}

/// `https://ADDR:PORT`, with brackets for IPv6.
pub fn api_url(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("https://{a}:{port}"),
        IpAddr::V6(a) => format!("https://[{a}]:{port}"),
    }
}

fn cert_files(base: &str, ck: &CertAndKey) -> [NodeFile; 2] {
    [
        NodeFile::data(
            format!("/etc/kubernetes/pki/{base}.crt"),
            0o644,
            ck.cert_pem.clone(),
        ),
        NodeFile::data(
            format!("/etc/kubernetes/pki/{base}.key"),
            0o600,
            ck.key_pem.clone(),
        ),
    ]
}

/// Every node's `/etc/hosts`: itself, and the endpoint name as DNS would resolve it.
pub fn hosts_file(spec: &LabSpec, node: &LabNode) -> NodeFile {
    let mut text = format!("127.0.0.1\tlocalhost\n{}\t{}\n", node.address, node.name);
    if let Some(lb) = spec.endpoint.addresses.first() {
        text.push_str(&format!("{lb}\t{}\n", spec.endpoint.host));
    }
    NodeFile::data("/etc/hosts", 0o644, text)
}

enum UserAuth<'a> {
    Embedded(&'a CertAndKey),
    Files(&'a str),
}

fn b64(s: &str) -> String {
    B64.encode(s.as_bytes())
}

/// A kubeconfig as kubeadm's `kubeconfigutil` writes it (clientcmd, sorted keys).
fn user_kubeconfig(ca_pem: &str, server: &str, user: &str, auth: UserAuth<'_>) -> String {
    let creds = match auth {
        UserAuth::Embedded(ck) => format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&ck.cert_pem),
            b64(&ck.key_pem)
        ),
        UserAuth::Files(path) => {
            format!("    client-certificate: {path}\n    client-key: {path}\n")
        }
    };
    format!(
        "apiVersion: v1\n\
         clusters:\n\
         - cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n  name: {CLUSTER_NAME}\n\
         contexts:\n\
         - context:\n    cluster: {CLUSTER_NAME}\n    user: {user}\n  name: {user}@{CLUSTER_NAME}\n\
         current-context: {user}@{CLUSTER_NAME}\n\
         kind: Config\n\
         preferences: {{}}\n\
         users:\n\
         - name: {user}\n  user:\n{creds}",
        ca = b64(ca_pem),
    )
}

fn embedded_kubeconfig(ca_pem: &str, server: &str, user: &str, ck: &CertAndKey) -> String {
    user_kubeconfig(ca_pem, server, user, UserAuth::Embedded(ck))
}

/// The kubelet.conf the kubelet writes after a TLS bootstrap (kubelet's `bootstrap` package).
pub fn bootstrapped_kubelet_conf(ca_pem: &str, server: &str) -> String {
    format!(
        "apiVersion: v1\n\
         clusters:\n\
         - cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n  name: default-cluster\n\
         contexts:\n\
         - context:\n    cluster: default-cluster\n    namespace: default\n    user: default-auth\n  name: default-context\n\
         current-context: default-context\n\
         kind: Config\n\
         preferences: {{}}\n\
         users:\n\
         - name: default-auth\n  user:\n    client-certificate: {KUBELET_CLIENT_CURRENT}\n    client-key: {KUBELET_CLIENT_CURRENT}\n",
        ca = b64(ca_pem),
    )
}

/// The kubelet's own files: its rotated client certificate (ECDSA P-256, as the kubelet
/// generates it) with the `-current` link, its self-signed serving pair, and what kubeadm
/// wrote for it (config.yaml, kubeadm-flags.env, the manifests directory).
/// The serving pair is ECDSA where the kubelet makes RSA-2048: nothing checks its key type,
/// and RSA key generation is most of the cost of a 50-node lab.
fn kubelet_files(
    facts: &Facts,
    node: &LabNode,
    signer: &CertAndKey,
) -> Result<Vec<NodeFile>, FilesError> {
    let serving_key = KeyType::EcdsaP256;
    let client = pki::issue(
        signer,
        &CertSpec {
            common_name: format!("system:node:{}", node.name),
            organizations: vec!["system:nodes".into()],
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            usage: Usage::Client,
            key_type: KeyType::EcdsaP256,
        },
    )?;
    let serving = pki::kubelet_serving(&node.name, &[node.address], serving_key)?;
    let stamp = facts::file_timestamp();
    let client_file = format!("/var/lib/kubelet/pki/kubelet-client-{stamp}.pem");
    Ok(vec![
        NodeFile::dir("/etc/kubernetes/manifests", 0o755),
        NodeFile::data(
            "/var/lib/kubelet/config.yaml",
            0o644,
            objects::kubelet_config(facts),
        ),
        NodeFile::data(
            "/var/lib/kubelet/kubeadm-flags.env",
            0o644,
            facts.kubeadm_flags_env(),
        ),
        NodeFile::data(
            client_file.clone(),
            0o600,
            format!("{}{}", client.cert_pem, client.key_pem),
        ),
        NodeFile {
            path: KUBELET_CLIENT_CURRENT.to_string(),
            mode: 0o777,
            content: Content::Symlink(client_file),
        },
        NodeFile::data("/var/lib/kubelet/pki/kubelet.crt", 0o644, serving.cert_pem),
        NodeFile::data("/var/lib/kubelet/pki/kubelet.key", 0o600, serving.key_pem),
    ])
}

/// A bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}`, as `kubeadm token generate` makes.
pub fn bootstrap_token() -> Result<String, FilesError> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(23);
    let mut buf = [0u8; 64];
    while out.len() < 23 {
        pki::random_bytes(&mut buf)?;
        for b in buf {
            if out.len() == 6 {
                out.push('.');
            }
            // 252 = 7 * 36: rejecting above it keeps every character equally likely.
            if b < 252 && out.len() < 23 {
                out.push(ALPHABET[(b % 36) as usize] as char);
            }
        }
    }
    Ok(out)
}

/// Splits a bootstrap token into its id and secret, if it has the shape
/// `^([a-z0-9]{6})\.([a-z0-9]{16})$`.
pub fn parse_bootstrap_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

/// `f` over `items` on a few threads (keys are CPU-bound), results in input order.
fn par_map<T, R, F>(items: Vec<T>, f: F) -> Result<Vec<R>, FilesError>
where
    T: Send,
    R: Send,
    F: Fn(T) -> Result<R, FilesError> + Sync,
{
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8)
        .min(items.len().max(1));
    let queue = std::sync::Mutex::new(items.into_iter().enumerate());
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    loop {
                        let next = queue.lock().ok().and_then(|mut q| q.next());
                        let Some((i, item)) = next else { break };
                        let r = f(item);
                        if let Ok(mut res) = results.lock() {
                            res.push((i, r));
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().map_err(|_| FilesError::Thread))
    })?;
    let mut results = results.into_inner().map_err(|_| FilesError::Thread)?;
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Writes `files` into `node`'s tree of `lab` (through `LabDir::node_path`), creating parent
/// directories. A link to a file in its own directory is written relative, so it resolves
/// both inside the node's namespace and from the host.
pub fn write_node_files(
    lab: &crate::lab::LabDir,
    node: &str,
    files: &[NodeFile],
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for f in files {
        let host = lab.node_path(node, &f.path);
        match &f.content {
            Content::Dir => {
                std::fs::create_dir_all(&host)?;
                std::fs::set_permissions(&host, std::fs::Permissions::from_mode(f.mode))?;
            }
            Content::Data(data) => {
                if let Some(parent) = host.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&host, data)?;
                std::fs::set_permissions(&host, std::fs::Permissions::from_mode(f.mode))?;
            }
            Content::Symlink(target) => {
                if let Some(parent) = host.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let own_dir = std::path::Path::new(&f.path).parent();
                let t = std::path::Path::new(target);
                let link = match (own_dir, t.parent(), t.file_name()) {
                    (Some(a), Some(b), Some(name)) if a == b => std::path::PathBuf::from(name),
                    _ => lab.node_path(node, target),
                };
                // Replacing a link is what the kubelet does on rotation.
                if std::fs::symlink_metadata(&host).is_ok() {
                    std::fs::remove_file(&host)?;
                }
                std::os::unix::fs::symlink(link, &host)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(endpoint: &str, sans: &[&str]) -> JoinCluster {
        JoinCluster {
            control_plane_endpoint: endpoint.into(),
            cert_sans: sans.iter().map(|s| s.to_string()).collect(),
            dns_domain: "corp.local".into(),
            service_ip: "10.100.0.1".parse().unwrap(),
            kubelet_server: "https://lb:6443".into(),
        }
    }

    #[test]
    fn a_joining_apiserver_gets_the_clusters_names_not_the_plans() {
        let node = LabNode {
            name: "cp2".into(),
            address: "127.0.9.12".parse().unwrap(),
            control_plane: true,
        };
        let c = cluster(
            "lb.example:6443",
            &["10.0.0.5", "lb.example", " ", "api.example"],
        );
        let (dns, ips) = apiserver_join_sans(&node, &c);
        assert_eq!(
            dns,
            [
                "cp2",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.corp.local",
                "lb.example",
                "api.example"
            ]
        );
        let ips: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
        assert_eq!(ips, ["10.100.0.1", "127.0.9.12", "10.0.0.5"]);
    }

    #[test]
    fn the_endpoint_url_gets_kubeadms_default_port() {
        assert_eq!(cluster("lb:7443", &[]).endpoint_url(), "https://lb:7443");
        assert_eq!(cluster("lb", &[]).endpoint_url(), "https://lb:6443");
        assert_eq!(cluster("lb", &[]).endpoint_host(), "lb");
        let v6 = cluster("[fd00::1]:6443", &[]);
        assert_eq!(v6.endpoint_host(), "fd00::1");
        assert_eq!(v6.endpoint_url(), "https://[fd00::1]:6443");
        assert_eq!(cluster("10.0.0.9", &[]).endpoint_host(), "10.0.0.9");
    }
}
