//! The seams apply acts through, as traits with plain-value arguments: a node's files and
//! commands, the cluster's API objects, the clock and the certificate signer. The real
//! implementations live at the edge (`transport::files` over the node transport, the cluster
//! API over `kube`); `seams::fake` holds a whole cluster in memory and fails the calls it is
//! told to, so that apply's steps and rollback are tested at every failure without a lab.

pub mod fake;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::observed::{KeyType, San};

/// Where apply keeps a node's backups: outside `/etc/kubernetes`, since a stray file in
/// `manifests/` would become a static pod.
pub const BACKUP_ROOT: &str = "/var/lib/hactl/runs";

use crate::plan::sha256;

/// A file on a node: its bytes, mode and owner. Debug shows the hash, never the bytes (a
/// kubeconfig holds a private key).
#[derive(Clone, PartialEq, Eq)]
pub struct FileState {
    pub content: Vec<u8>,
    /// The permission bits (`0o600`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl FileState {
    pub fn sha256(&self) -> String {
        sha256(&self.content)
    }
}

impl fmt::Debug for FileState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileState")
            .field("sha256", &self.sha256())
            .field("len", &self.content.len())
            .field("mode", &format_args!("{:o}", self.mode))
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .finish()
    }
}

/// A node-side copy of a file, made before apply changes it: enough to restore it byte for
/// byte with its mode and owner, and to tell whether the copy is intact. No content: journals
/// record this.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    pub node: String,
    /// The file that was copied.
    pub path: String,
    /// The copy, under [`BACKUP_ROOT`]`/<run>/`.
    pub backup_path: String,
    pub sha256: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The backup path of `path` for run `run`.
pub fn backup_path(run: &str, path: &str) -> String {
    format!("{BACKUP_ROOT}/{run}/{}", path.trim_start_matches('/'))
}

/// Why a seam call failed. Each names what it was about; the kinds are what apply decides on
/// (retry a conflict, stop on the rest), never parsed back from text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SeamError {
    /// The node could not be reached or the command could not run there.
    #[error("{0}")]
    Transport(String),
    /// The call did not finish in time.
    #[error("{what} timed out after {after:?}")]
    Timeout { what: String, after: Duration },
    /// A file operation the node refused (`No space left on device`, `Permission denied`).
    #[error("{node}: {path}: {detail}")]
    File {
        node: String,
        path: String,
        detail: String,
    },
    /// An API object changed since it was read (HTTP 409).
    #[error("{what}: the object has been modified (409 Conflict)")]
    Conflict { what: String },
    /// An API object that does not exist (HTTP 404).
    #[error("{what} not found")]
    NotFound { what: String },
    /// The API answered with another status (its code, reason and message, so that a reader
    /// can word it as kubectl would: 401 and 403 have fixes of their own).
    #[error("{what}: {message} ({code})")]
    Status {
        what: String,
        code: u16,
        reason: String,
        message: String,
    },
    /// The API server could not be reached: the TCP connection failed or broke (Go's words).
    #[error("{what}: {detail}")]
    Unreachable { what: String, detail: String },
    /// The TLS handshake with the API server failed (Go's words where they can be had).
    #[error("{what}: {detail}")]
    Tls { what: String, detail: String },
    /// A request that could not be made (a kubeconfig that cannot be used, a certificate that
    /// does not verify).
    #[error("{what}: {detail}")]
    Api { what: String, detail: String },
    /// A backup that no longer holds what was copied.
    #[error(
        "{node}: backup {backup_path} changed since it was made (sha256 {found}, not {expected})"
    )]
    BackupChanged {
        node: String,
        backup_path: String,
        expected: String,
        found: String,
    },
    /// The signer could not issue the certificate.
    #[error("signing: {0}")]
    Sign(String),
}

/// A node's files and commands (the real one: the node transport, as root).
pub trait NodeOps: Send + Sync {
    /// The file, or `None` when it does not exist.
    fn read_file(
        &self,
        node: &str,
        path: &str,
    ) -> impl Future<Output = Result<Option<FileState>, SeamError>> + Send;

    /// Writes the file atomically: a temporary file in the same directory, fsync, rename,
    /// fsync of the directory; with this mode and owner.
    fn write_file(
        &self,
        node: &str,
        path: &str,
        file: &FileState,
    ) -> impl Future<Output = Result<(), SeamError>> + Send;

    /// Copies the file to [`backup_path`] for `run`, with its mode and owner.
    fn backup(
        &self,
        node: &str,
        run: &str,
        path: &str,
    ) -> impl Future<Output = Result<Backup, SeamError>> + Send;

    /// Puts the backup back over its file, atomically, byte for byte with its mode and owner;
    /// refuses a backup whose hash is not the one recorded.
    fn restore(&self, backup: &Backup) -> impl Future<Output = Result<(), SeamError>> + Send;

    /// Runs a command (argv, each word quoted for the node's shell).
    fn run(
        &self,
        node: &str,
        argv: &[String],
    ) -> impl Future<Output = Result<CommandResult, SeamError>> + Send;
}

/// What a command printed and how it ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandResult {
    /// `None` when it was killed by a signal.
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CommandResult {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

/// A ConfigMap as apply reads and writes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigMap {
    pub namespace: String,
    pub name: String,
    pub resource_version: String,
    pub data: BTreeMap<String, String>,
    /// RFC 3339: when its data last changed (the latest managedFields entry that owns data;
    /// `None` when the server keeps no managedFields).
    pub changed_at: Option<String>,
}

/// What apply and observation read of a Pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub uid: String,
    /// Every container running and ready.
    pub ready: bool,
    /// RFC 3339, the API server's clock.
    pub created_at: String,
    /// The containers' restarts, summed.
    pub restarts: u32,
    /// RFC 3339: the latest running container's start (a static pod's mirror keeps its
    /// creation time across restarts; this moves).
    pub started_at: Option<String>,
    /// What it is selected by (`k8s-app`, a static pod's `component` and `tier`).
    pub labels: BTreeMap<String, String>,
}

/// What apply and observation read of a Node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStatus {
    pub name: String,
    pub ready: bool,
    /// From the `node-role.kubernetes.io/` labels, sorted.
    pub roles: Vec<String>,
    pub kubelet_version: String,
}

/// A coordination.k8s.io Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub namespace: String,
    pub name: String,
    pub holder: Option<String>,
    /// RFC 3339 with microseconds, as the API writes `acquireTime` and `renewTime`.
    pub acquire_time: Option<String>,
    pub renew_time: Option<String>,
    pub duration_secs: Option<u32>,
    pub resource_version: String,
}

/// A bootstrap token as the bootstrapsigner signs with it; the secret stays in memory and
/// out of `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    pub id: String,
    pub secret: String,
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BootstrapToken({}, secret redacted)", self.id)
    }
}

/// The cluster's API (the real one: `kube`, with `fieldManager=hactl` and a `hactl/<version>`
/// User-Agent on every write).
pub trait ClusterApi: Send + Sync {
    fn get_configmap(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<ConfigMap, SeamError>> + Send;

    /// Replaces the ConfigMap's data if it is still at `resource_version`
    /// ([`SeamError::Conflict`] otherwise); returns it as stored.
    fn replace_configmap(
        &self,
        cm: &ConfigMap,
    ) -> impl Future<Output = Result<ConfigMap, SeamError>> + Send;

    /// Pods with this label selector (`KEY=VALUE`, comma-separated: all must hold), on `node`
    /// when given.
    fn list_pods(
        &self,
        namespace: &str,
        selector: &str,
        node: Option<&str>,
    ) -> impl Future<Output = Result<Vec<Pod>, SeamError>> + Send;

    fn delete_pod(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), SeamError>> + Send;

    fn get_node(&self, name: &str) -> impl Future<Output = Result<NodeStatus, SeamError>> + Send;

    /// Every Node, by name.
    fn list_nodes(&self) -> impl Future<Output = Result<Vec<NodeStatus>, SeamError>> + Send;

    fn get_lease(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Lease, SeamError>> + Send;

    /// Creates the Lease; [`SeamError::Conflict`] when it exists.
    fn create_lease(&self, lease: &Lease) -> impl Future<Output = Result<Lease, SeamError>> + Send;

    /// Updates holder and renewTime if the Lease is still at its `resource_version`.
    fn renew_lease(&self, lease: &Lease) -> impl Future<Output = Result<Lease, SeamError>> + Send;

    fn delete_lease(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<(), SeamError>> + Send;

    /// The bootstrap tokens (`kube-system` Secrets of type `bootstrap.kubernetes.io/token`),
    /// to check cluster-info's signatures with.
    fn bootstrap_tokens(
        &self,
    ) -> impl Future<Output = Result<Vec<BootstrapToken>, SeamError>> + Send;

    /// A TLS handshake with `address` (`HOST:PORT`) for `server_name`, verified against
    /// `ca_pem` as Go verifies it: whether the API server there serves a certificate valid for
    /// that name (the failure in kubectl's words).
    fn verify_served(
        &self,
        address: &str,
        server_name: &str,
        ca_pem: &str,
    ) -> impl Future<Output = Result<(), SeamError>> + Send;
}

/// Time, so that waits and expiries are tested without waiting.
pub trait Clock: Send + Sync {
    /// Seconds since the Unix epoch.
    fn now(&self) -> Duration;
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send;
}

/// What a reissued API server certificate is: the public key it keeps, its SANs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertRequest {
    /// The existing certificate (PEM): its public key, subject and key type are kept.
    pub cert_pem: String,
    pub sans: Vec<San>,
    pub key_type: KeyType,
    /// Now (since the Unix epoch, from the run's clock): the new certificate is valid a year.
    pub now: Duration,
}

/// Issues a certificate for an existing public key with the cluster CA. The CA's key is an
/// argument, held in memory only: it is never written or logged.
pub trait Signer: Send + Sync {
    fn issue(
        &self,
        ca_cert_pem: &str,
        ca_key_pem: &str,
        req: &CertRequest,
    ) -> Result<String, SeamError>;
}
