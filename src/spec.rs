//! The desired state: the TOML file users write, its types, parsing and validation.
//!
//! The types here are the single source of truth for the file's shape: serde reads them,
//! schemars turns them into `schemas/hactl.schema.json`. Parsing keeps the TOML spans so that
//! validation can point into the file.

use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The whole desired-state file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DesiredState {
    /// The file format's version; only 1 exists.
    pub version: u32,
    pub cluster: Cluster,
    pub endpoint: Endpoint,
    #[serde(default)]
    pub ssh: Ssh,
    /// The nodes, in the order of the file. The first control-plane node is not assumed to be
    /// the `kubeadm init` node: observation finds that one.
    #[serde(rename = "node")]
    pub nodes: Vec<Node>,
    #[serde(default)]
    pub policy: Policy,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// A DNS-1123 label naming the cluster in plans and journals.
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
    pub host: String,
    /// The LB's addresses: also SANs, and where hactl connects to reach the LB.
    pub addresses: Vec<IpAddr>,
    /// The LB's port.
    #[serde(default = "default_port")]
    pub port: u16,
}

fn default_port() -> u16 {
    6443
}

/// SSH defaults for every node; a node's own `[node.ssh]` table overrides them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ssh {
    #[serde(default = "default_user")]
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<String>,
    /// An OpenSSH client configuration file (ProxyJump, Port, User, IdentityFile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_file: Option<String>,
    #[serde(default)]
    pub known_hosts: KnownHosts,
    /// Run commands through `sudo -n`.
    #[serde(default)]
    pub sudo: bool,
}

impl Default for Ssh {
    fn default() -> Self {
        Ssh {
            user: default_user(),
            port: None,
            identity_file: None,
            config_file: None,
            known_hosts: KnownHosts::Strict,
            sudo: false,
        }
    }
}

fn default_user() -> String {
    "root".to_string()
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<KnownHosts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sudo: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// The Kubernetes node name (a DNS-1123 subdomain); also the etcd member name.
    pub name: String,
    /// Where hactl reaches the node over SSH; for control-plane nodes, also the API server's
    /// advertise address.
    pub address: IpAddr,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshOverride>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    ControlPlane,
    Worker,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Worker nodes changed at a time.
    #[serde(default = "default_parallelism")]
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
