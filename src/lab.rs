//! `hactl lab`: a local kubeadm-style cluster made of real parts (DESIGN §4, issue 3).
//!
//! The lab lives in one directory (`LabDir`). Each node is a real `sshd` in its own mount
//! namespace, whose `/etc/kubernetes`, `/var/lib/kubelet`, `/var/lib/etcd`, `/etc/hosts` and
//! `/usr/local/sbin` are bind mounts of `DIR/nodes/<name>/…` (`NODE_MOUNTS`). The simulated
//! parts (kube-apiserver, kubelet, kube-proxy, controller-manager, scheduler) run as tasks
//! of one supervisor process (`daemon`) and read the same files through `LabDir::node_path`.
//!
//! One translation is the lab's own: all nodes share the host's network namespace, so a
//! node's `127.0.0.1` (kubeadm's `--etcd-servers=https://127.0.0.1:2379`, etcd's listen
//! URLs) means that node's own address (`node_loopback`).

pub mod apiserver;
pub mod clock;
pub mod command;
pub mod components;
pub mod control;
pub mod daemon;
pub mod etcd;
pub mod faults;
pub mod files;
pub mod kubeadm;
pub mod node;
// The signer is the core's (`crate::pki`): the lab signs as apply does.
pub mod pki;
pub mod state;
pub mod status;
pub mod up;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::kubeadm::KubeVersion;
use crate::observed::ContainerRuntime;
use crate::spec::{DesiredState, Role};

/// Node paths that are each node's own: bind-mounted from `DIR/nodes/<name>/<path>`.
/// `/etc/passwd` gives root the node's own home (`DIR/nodes/<name>/root`): every command over
/// ssh runs root's login shell, which must not source this machine's `~/.bashrc`.
/// `/etc/shadow` and `/etc/sudoers.d` let a node have its own users with sudo (this
/// machine's `/etc/sudoers` includes the directory) without touching this machine's.
pub const NODE_MOUNTS: &[&str] = &[
    "/etc/kubernetes",
    "/var/lib/kubelet",
    "/var/lib/etcd",
    "/etc/hosts",
    "/etc/passwd",
    "/etc/shadow",
    "/etc/sudoers.d",
    "/usr/local/sbin",
    // apply's node-side backups (`seams::BACKUP_ROOT`): each node's own.
    "/var/lib/hactl",
];

/// The node mounts that are files (the others are directories).
pub const NODE_FILE_MOUNTS: &[&str] = &["/etc/hosts", "/etc/passwd", "/etc/shadow"];

/// The lab's directory and every path in it.
#[derive(Clone, Debug)]
pub struct LabDir {
    root: PathBuf,
}

impl LabDir {
    /// `root` must be absolute: node namespaces and `hactl.toml` refer to it by path.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LabDir { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `lab.json`: the lab's spec and every process it started (`LabState`).
    pub fn state_file(&self) -> PathBuf {
        self.root.join("lab.json")
    }
    /// The supervisor's control socket: node commands (`systemctl`, `crictl`, …) and status.
    pub fn control_socket(&self) -> PathBuf {
        self.root.join("control.sock")
    }
    pub fn admin_conf(&self) -> PathBuf {
        self.root.join("admin.conf")
    }
    pub fn ssh_config(&self) -> PathBuf {
        self.root.join("ssh_config")
    }
    /// The lab's SSH client key (`id_ed25519`, with `id_ed25519.pub`).
    pub fn ssh_key(&self) -> PathBuf {
        self.root.join("id_ed25519")
    }
    pub fn known_hosts(&self) -> PathBuf {
        self.root.join("known_hosts")
    }
    pub fn hactl_toml(&self) -> PathBuf {
        self.root.join("hactl.toml")
    }
    /// Logs of the processes the lab started: `sshd-cp1.log`, `etcd-cp1.log`, `haproxy.log`, …
    pub fn log_dir(&self) -> PathBuf {
        self.root.join("log")
    }
    /// Lab-wide files that are not any node's: haproxy config, sshd configs, host keys.
    pub fn lab_file(&self, name: &str) -> PathBuf {
        self.root.join("lab").join(name)
    }
    /// `DIR/nodes/<node>`: the node's own file tree, under which `NODE_MOUNTS` live.
    pub fn node_root(&self, node: &str) -> PathBuf {
        self.root.join("nodes").join(node)
    }
    /// Where the node path `abs` (for example `/etc/kubernetes/pki/ca.crt`) is on this host.
    /// Paths outside `NODE_MOUNTS` are the host's own, as inside the node's namespace.
    pub fn node_path(&self, node: &str, abs: &str) -> PathBuf {
        let owned = NODE_MOUNTS
            .iter()
            .any(|m| abs == *m || abs.strip_prefix(m).is_some_and(|r| r.starts_with('/')));
        if owned {
            self.node_root(node).join(abs.trim_start_matches('/'))
        } else {
            PathBuf::from(abs)
        }
    }
}

/// The endpoint (load balancer) of the lab, from the plan's `[endpoint]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabEndpoint {
    pub host: String,
    pub addresses: Vec<IpAddr>,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabNode {
    pub name: String,
    pub address: IpAddr,
    pub control_plane: bool,
}

/// What the lab is built from: the plan's topology, the Kubernetes version, the runtime.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabSpec {
    pub cluster_name: String,
    pub endpoint: LabEndpoint,
    /// In plan order; the first control-plane node is the `kubeadm init` node.
    pub nodes: Vec<LabNode>,
    pub version: KubeVersion,
    pub runtime: ContainerRuntime,
}

impl LabSpec {
    pub fn from_plan(plan: &DesiredState, version: KubeVersion, runtime: ContainerRuntime) -> Self {
        LabSpec {
            cluster_name: plan.cluster.name.clone(),
            endpoint: LabEndpoint {
                host: plan.endpoint.host.clone(),
                addresses: plan.endpoint.addresses.clone(),
                port: plan.endpoint.port,
            },
            nodes: plan
                .nodes
                .iter()
                .map(|n| LabNode {
                    name: n.name.clone(),
                    address: n.address,
                    control_plane: n.role == Role::ControlPlane,
                })
                .collect(),
            version,
            runtime,
        }
    }

    /// The node `kubeadm init` ran on: the plan's first control-plane node.
    pub fn init_node(&self) -> &LabNode {
        self.nodes
            .iter()
            .find(|n| n.control_plane)
            .expect("a validated plan has a control-plane node")
    }

    /// Control-plane nodes other than the init node: bare machines, ready to join.
    pub fn bare_nodes(&self) -> impl Iterator<Item = &LabNode> {
        let init = self.init_node().name.clone();
        self.nodes
            .iter()
            .filter(move |n| n.control_plane && n.name != init)
    }

    /// Workers: joined, pointing at the init node's own address.
    pub fn workers(&self) -> impl Iterator<Item = &LabNode> {
        self.nodes.iter().filter(|n| !n.control_plane)
    }

    pub fn node(&self, name: &str) -> Option<&LabNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The node whose address is `address`, for servers that must know whom they serve.
    pub fn node_at(&self, address: IpAddr) -> Option<&LabNode> {
        self.nodes.iter().find(|n| n.address == address)
    }
}

/// The patch release the lab installs for each minor version it supports (1.23–1.33).
pub fn lab_version(minor: &str) -> Result<KubeVersion, String> {
    let v: KubeVersion = minor.parse()?;
    let patch = match (v.major, v.minor) {
        (1, 23) => 17,
        (1, 24) => 17,
        (1, 25) => 16,
        (1, 26) => 15,
        (1, 27) => 16,
        (1, 28) => 15,
        (1, 29) => 14,
        (1, 30) => 14,
        (1, 31) => 14,
        (1, 32) => 10,
        (1, 33) => 6,
        _ => {
            return Err(format!(
                "the lab has Kubernetes 1.23 to 1.33, not {}",
                v.minor_string()
            ));
        }
    };
    Ok(KubeVersion::new(1, v.minor, patch))
}

/// A node's `127.0.0.1` in the lab: the node's own address (see the module doc).
pub fn node_loopback(url_or_addr: &str, node_address: IpAddr) -> String {
    // Whole addresses only: `127.0.0.11` (a node's own address) must stay as it is.
    let (needle, own) = ("127.0.0.1", node_address.to_string());
    let mut out = String::with_capacity(url_or_addr.len());
    let mut rest = url_or_addr;
    while let Some(i) = rest.find(needle) {
        let before = rest[..i].chars().last().or_else(|| out.chars().last());
        let after = rest[i + needle.len()..].chars().next();
        let part_of_other = before.is_some_and(|c| c.is_ascii_digit() || c == '.')
            || after.is_some_and(|c| c.is_ascii_digit());
        out.push_str(&rest[..i]);
        out.push_str(if part_of_other { needle } else { &own });
        rest = &rest[i + needle.len()..];
    }
    out.push_str(rest);
    out
}

/// One rustls crypto provider for the whole process (two panic unless one is the default).
pub use crate::transport::install_crypto_provider;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_paths_map_only_the_nodes_own_mounts() {
        let lab = LabDir::new("/tmp/lab");
        assert_eq!(
            lab.node_path("cp1", "/etc/kubernetes/pki/ca.crt"),
            PathBuf::from("/tmp/lab/nodes/cp1/etc/kubernetes/pki/ca.crt")
        );
        assert_eq!(
            lab.node_path("w1", "/etc/hosts"),
            PathBuf::from("/tmp/lab/nodes/w1/etc/hosts")
        );
        assert_eq!(
            lab.node_path("w1", "/etc/hostsfoo"),
            PathBuf::from("/etc/hostsfoo")
        );
        assert_eq!(
            lab.node_path("w1", "/usr/bin/etcd"),
            PathBuf::from("/usr/bin/etcd")
        );
    }

    #[test]
    fn node_loopback_translates_whole_addresses_only() {
        let own: IpAddr = "127.0.0.11".parse().expect("ip");
        assert_eq!(
            node_loopback("https://127.0.0.1:2379,https://127.0.0.11:2379", own),
            "https://127.0.0.11:2379,https://127.0.0.11:2379"
        );
        assert_eq!(node_loopback("127.0.0.1", own), "127.0.0.11");
        assert_eq!(node_loopback("10.127.0.0.1x", own), "10.127.0.0.1x");
    }

    #[test]
    fn versions_outside_the_lab_are_refused() {
        assert_eq!(lab_version("1.31").unwrap().to_string(), "v1.31.14");
        assert!(lab_version("1.22").unwrap_err().contains("1.23 to 1.33"));
    }
}

/// What a command run on a node printed and returned (`systemctl`, `crictl`, `docker`, …).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutput {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

/// Why a lab command failed; every message names the file, node or program and the fix.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{0}")]
    Msg(String),
    #[error("cannot {action} {}: {error}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        error: std::io::Error,
    },
}

impl LabError {
    pub fn msg(s: impl Into<String>) -> Self {
        LabError::Msg(s.into())
    }
    pub fn io(path: &Path, action: &'static str, source: std::io::Error) -> Self {
        LabError::Io {
            path: path.to_path_buf(),
            action,
            error: source,
        }
    }
}
