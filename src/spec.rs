//! The desired state: the TOML file users write, its types, parsing and validation.
//!
//! The types here are the single source of truth for the file's shape: serde reads them,
//! schemars turns them into `schemas/hactl.schema.json`. Parsing keeps the TOML spans so that
//! validation can point into the file.

pub(crate) mod dns;
mod error;
mod parse;
pub mod schema;
mod semantic;
mod shape;
mod tree;
mod typed;

use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use error::{SpecError, SpecErrorKind, SpecErrors};
pub use parse::parse;

/// The whole desired-state file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DesiredState {
    /// The file format's version; only 1 exists.
    #[schemars(range(min = 1, max = 1), example = 1)]
    pub version: u32,
    /// The cluster being converted.
    pub cluster: Cluster,
    /// The load balancer every client will reach the API through.
    pub endpoint: Endpoint,
    /// How hactl reaches the nodes over SSH.
    #[serde(default)]
    pub ssh: Ssh,
    /// Every node of the cluster, in file order. The first control-plane node is not assumed
    /// to be the `kubeadm init` node: observation finds that one.
    #[serde(rename = "node")]
    pub nodes: Vec<Node>,
    /// How careful hactl is while changing things.
    #[serde(default)]
    pub policy: Policy,
}

/// The cluster being converted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// A DNS-1123 label naming the cluster in plans and journals.
    #[schemars(example = &"prod-eu1")]
    pub name: String,
    /// How hactl reaches the API; default: the first control-plane node's admin.conf, read
    /// over SSH and held in memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
}

/// The layer-4 load balancer in front of the API servers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// DNS name of the LB: becomes `controlPlaneEndpoint` and a certificate SAN.
    #[schemars(example = &"k8s-api.example.com")]
    pub host: String,
    /// The LB's addresses: also SANs, and where hactl connects to reach the LB.
    #[schemars(length(min = 1), example = ["10.0.0.100"])]
    pub addresses: Vec<IpAddr>,
    /// The LB's port.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1))]
    pub port: u16,
}

fn default_port() -> u16 {
    6443
}

/// SSH defaults for every node; a node's own `[node.ssh]` table overrides them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ssh {
    /// The login user; not root needs `sudo = true`. Default: the `User` of `config_file` for
    /// the node's address, else root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = &"root")]
    pub user: Option<String>,
    /// The SSH port; default: OpenSSH's (22, or what `config_file` says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub port: Option<u16>,
    /// A private key file, as `ssh -i`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<String>,
    /// An OpenSSH client configuration file (ProxyJump, Port, User, IdentityFile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_file: Option<String>,
    /// How host keys are checked.
    #[serde(default)]
    pub known_hosts: KnownHosts,
    /// Run commands through `sudo -n`.
    #[serde(default)]
    pub sudo: bool,
}

impl Default for Ssh {
    fn default() -> Self {
        Ssh {
            user: None,
            port: None,
            identity_file: None,
            config_file: None,
            known_hosts: KnownHosts::Strict,
            sudo: false,
        }
    }
}

/// How host keys are checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum KnownHosts {
    /// Unknown or changed host keys are refused.
    #[default]
    Strict,
    /// Unknown host keys are learnt; changed ones are refused.
    AcceptNew,
}

/// Per-node SSH overrides; every key is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SshOverride {
    /// The login user on this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The SSH port on this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub port: Option<u16>,
    /// A private key file for this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<String>,
    /// How this node's host key is checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<KnownHosts>,
    /// Run commands on this node through `sudo -n`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sudo: Option<bool>,
}

/// One machine of the cluster: a `[[node]]` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// The Kubernetes node name (a DNS-1123 subdomain); also the etcd member name.
    #[schemars(example = &"cp1")]
    pub name: String,
    /// Where hactl reaches the node over SSH; for control-plane nodes, also the API server's
    /// advertise address.
    #[schemars(example = &"10.0.0.11")]
    pub address: IpAddr,
    /// What the node is once converted.
    #[schemars(example = &"control-plane")]
    pub role: Role,
    /// SSH settings for this node only, over `[ssh]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshOverride>,
}

/// A node's role in the converted cluster.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Runs an API server and an etcd member; joined if it is not one yet.
    ControlPlane,
    /// Runs workloads; its kubelet and kube-proxy are pointed at the load balancer.
    Worker,
}

/// How careful hactl is while changing things.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Worker nodes changed at a time.
    #[serde(default = "default_parallelism")]
    #[schemars(range(min = 1))]
    pub worker_parallelism: u32,
    /// Where controller-manager and scheduler point.
    #[serde(default)]
    pub component_endpoint: ComponentEndpoint,
    /// Accept an even number of control-plane nodes (etcd then needs N/2+1 of N, which is less
    /// available than N-1 nodes).
    #[serde(default)]
    pub allow_even_control_plane: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            worker_parallelism: default_parallelism(),
            component_endpoint: ComponentEndpoint::Kubeadm,
            allow_even_control_plane: false,
        }
    }
}

fn default_parallelism() -> u32 {
    1
}

/// Where controller-manager and scheduler point.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ComponentEndpoint {
    /// Follow the kubeadm version's convention: the local API server since kubeadm 1.19.1.
    #[default]
    Kubeadm,
    /// controller-manager and scheduler through the load balancer too.
    Endpoint,
}

impl DesiredState {
    /// The control-plane nodes, in file order.
    pub fn control_plane_nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::ControlPlane)
    }

    /// The worker nodes, in file order.
    pub fn worker_nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::Worker)
    }

    /// `https://HOST:PORT`: the URL every client uses once converted.
    pub fn endpoint_url(&self) -> String {
        format!("https://{}:{}", self.endpoint.host, self.endpoint.port)
    }

    /// `HOST:PORT`: kubeadm's `controlPlaneEndpoint`.
    pub fn control_plane_endpoint(&self) -> String {
        format!("{}:{}", self.endpoint.host, self.endpoint.port)
    }
}
