//! The node transport seam: run a shell script on a node as root, over one connection per node.
//!
//! Observation (and, later, apply) reach nodes only through [`NodeTransport`]; the real one is
//! [`ssh::SshSession`] (the `openssh` crate, one multiplexed master connection per node, reused
//! for every command of a run).

pub mod clock;
pub mod cluster;
pub mod files;
pub mod ssh;
pub mod tls;

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::spec::{DesiredState, KnownHosts, Node};

/// How to reach one node: the plan's `[ssh]` table with the node's `[node.ssh]` overrides
/// applied, and paths resolved against the plan file's folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshTarget {
    /// The node name (for messages).
    pub node: String,
    /// The destination hactl connects to: the node's address. `config_file` may map it
    /// (`Host 10.0.0.11` blocks with `ProxyJump`, `Port`, `User`, `IdentityFile`).
    pub address: IpAddr,
    /// `None`: the config file's `User` for the address decides (there is a config file and
    /// neither the plan nor the node names a user).
    pub user: Option<String>,
    /// `None`: OpenSSH's default (22, or what `config_file` says).
    pub port: Option<u16>,
    pub identity_file: Option<PathBuf>,
    pub config_file: Option<PathBuf>,
    pub known_hosts: KnownHosts,
    /// Wrap every command in `sudo -n`.
    pub sudo: bool,
    pub connect_timeout: Duration,
    /// How long one command may run before `run` gives up on it with
    /// [`TransportError::Timeout`] (a stuck `etcdctl` or NFS read must not hang a whole run).
    pub command_timeout: Duration,
}

impl SshTarget {
    /// The target for `node`: node overrides over `[ssh]`; relative paths (and `~/`) resolved
    /// against `plan_dir` (and `home`).
    pub fn new(
        desired: &DesiredState,
        node: &Node,
        plan_dir: &std::path::Path,
        home: Option<&std::path::Path>,
        connect_timeout: Duration,
        command_timeout: Duration,
    ) -> SshTarget {
        let ssh = &desired.ssh;
        let over = node.ssh.clone().unwrap_or_default();
        let path = |p: &str| resolve_path(p, plan_dir, home);
        SshTarget {
            node: node.name.clone(),
            address: node.address,
            // Without a config file to say otherwise, hactl logs in as root.
            user: over
                .user
                .or_else(|| ssh.user.clone())
                .or_else(|| ssh.config_file.is_none().then(|| "root".to_string())),
            port: over.port.or(ssh.port),
            identity_file: over
                .identity_file
                .as_deref()
                .or(ssh.identity_file.as_deref())
                .map(path),
            config_file: ssh.config_file.as_deref().map(path),
            known_hosts: over.known_hosts.unwrap_or(ssh.known_hosts),
            sudo: over.sudo.unwrap_or(ssh.sudo),
            connect_timeout,
            command_timeout,
        }
    }
}

/// `~/x` under `home`, an absolute path as is, a relative one under `base`.
pub fn resolve_path(p: &str, base: &std::path::Path, home: Option<&std::path::Path>) -> PathBuf {
    if let (Some(rest), Some(home)) = (p.strip_prefix("~/"), home) {
        return home.join(rest);
    }
    let path = PathBuf::from(p);
    if path.is_absolute() {
        path
    } else {
        base.join(path)
    }
}

/// What a script printed and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit status; `None` when the remote command was killed by a signal.
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Why a node could not be reached or a command could not run there. Every variant names the
/// node; observation records the kind as the reason's prefix (`host key mismatch: …`), from
/// which the plan says how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The host key differs from the one in known_hosts.
    #[error("{node} ({address}): host key mismatch: {detail}")]
    HostKeyChanged {
        node: String,
        address: String,
        detail: String,
    },
    /// Strict checking and no known host key.
    #[error("{node} ({address}): host key unknown: {detail}")]
    HostKeyUnknown {
        node: String,
        address: String,
        detail: String,
    },
    #[error("{node} ({address}): permission denied: {detail}")]
    AuthFailed {
        node: String,
        address: String,
        detail: String,
    },
    /// Refused, timed out, no route, name not resolved, proxy failed.
    #[error("{node} ({address}): {detail}")]
    Unreachable {
        node: String,
        address: String,
        detail: String,
    },
    /// `sudo -n` wants a password or is not allowed.
    #[error("{node}: sudo -n failed: {detail}")]
    Sudo { node: String, detail: String },
    /// The command did not finish within the target's `command_timeout`; hactl stopped
    /// waiting for it. `what` says which command (see [`describe_script`]).
    #[error("{node} ({address}): {}", timed_out(.what, *.after))]
    Timeout {
        node: String,
        address: String,
        after: Duration,
        what: String,
    },
    /// Anything else (the ssh binary missing, the session dying mid-command).
    #[error("{node}: {detail}")]
    Other { node: String, detail: String },
}

impl TransportError {
    pub fn node(&self) -> &str {
        match self {
            TransportError::HostKeyChanged { node, .. }
            | TransportError::HostKeyUnknown { node, .. }
            | TransportError::AuthFailed { node, .. }
            | TransportError::Unreachable { node, .. }
            | TransportError::Sudo { node, .. }
            | TransportError::Timeout { node, .. }
            | TransportError::Other { node, .. } => node,
        }
    }
}

/// What a timed-out command's failure says (after the node prefix): which command, how long
/// hactl waited, and the two ways out. Observation records it as the node's (or etcd's)
/// failure reason, so it carries its own fix.
pub fn timed_out(what: &str, after: Duration) -> String {
    format!(
        "{}. Raise --command-timeout if the node is only slow, or log in and see what hangs \
         there (a stuck etcdctl, a blocked NFS mount, sudo)",
        did_not_finish(what, after)
    )
}

/// What a timeout is, without the fix (for where the fix is said apart).
pub fn did_not_finish(what: &str, after: Duration) -> String {
    format!(
        "{what} did not finish within {} (--command-timeout); hactl stopped waiting for it",
        seconds(after)
    )
}

/// `60 s`, `1.5 s`.
fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// A script in a few words for messages: a short one-liner as it is, else its length (the
/// observation scripts start with the same shell functions, so their first line says nothing).
pub fn describe_script(script: &str) -> String {
    let lines: Vec<&str> = script
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match lines.as_slice() {
        [one] if one.chars().count() <= 60 => format!("`{one}`"),
        [one] => format!("`{}…`", one.chars().take(60).collect::<String>()),
        _ => format!("a {}-line script", lines.len()),
    }
}

/// Whole milliseconds, as the log (`HACTL_LOG`) gives durations.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs scripts on one node, as root: directly when the login user is root, else through
/// `sudo -n` (when the target says so).
pub trait NodeTransport: Send + Sync {
    /// The node's name, for messages.
    fn node(&self) -> &str;

    /// Runs `script` with `sh -c` on the node (as root when `sudo` is configured) and returns
    /// its output; a non-zero exit is an `Ok` output, not an error. Errors are transport
    /// failures (the connection, or sudo refusing).
    fn run(
        &self,
        script: &str,
    ) -> impl Future<Output = Result<CommandOutput, TransportError>> + Send;

    /// `run` with `input` on the script's stdin: how file contents reach a node, never on a
    /// command line where `ps` would show them.
    fn run_with_input(
        &self,
        script: &str,
        input: &[u8],
    ) -> impl Future<Output = Result<CommandOutput, TransportError>> + Send;
}

/// Makes aws-lc-rs rustls' process-wide provider. kube-rs brings ring as well, and two
/// providers without a default make rustls panic: call this before any TLS. Process-wide
/// state, so the edge's: the core's TLS verification never installs it.
pub fn install_crypto_provider() {
    // Err means one is installed already, which is what we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(toml: &str, node: usize) -> SshTarget {
        let text = format!(
            "version = 1\n[cluster]\nname = \"t\"\n[endpoint]\nhost = \"lb.example\"\naddresses = [\"10.0.0.100\"]\n{toml}\n[[node]]\nname = \"cp1\"\naddress = \"10.0.0.11\"\nrole = \"control-plane\"\n[[node]]\nname = \"w1\"\naddress = \"10.0.0.21\"\nrole = \"worker\"\n[node.ssh]\nuser = \"ops\"\nsudo = true\n"
        );
        let desired = crate::spec::parse("t.toml", &text).unwrap();
        let home = std::path::Path::new("/home/me");
        SshTarget::new(
            &desired,
            &desired.nodes[node],
            std::path::Path::new("/plans"),
            Some(home),
            Duration::from_secs(3),
            Duration::from_secs(60),
        )
    }

    #[test]
    fn node_overrides_win_and_paths_resolve_against_the_plan() {
        let t = target(
            "[ssh]\nuser = \"admin\"\nidentity_file = \"~/.ssh/id\"\nconfig_file = \"ssh_config\"",
            1,
        );
        assert_eq!(t.user.as_deref(), Some("ops"));
        assert!(t.sudo);
        assert_eq!(t.identity_file, Some(PathBuf::from("/home/me/.ssh/id")));
        assert_eq!(t.config_file, Some(PathBuf::from("/plans/ssh_config")));
        let cp1 = target("[ssh]\nuser = \"admin\"", 0);
        assert_eq!((cp1.user.as_deref(), cp1.sudo), (Some("admin"), false));
    }

    #[test]
    fn the_config_files_user_counts_unless_the_plan_names_one() {
        // No user anywhere and no config file: root, as documented.
        assert_eq!(target("", 0).user.as_deref(), Some("root"));
        // A config file and no user: ssh takes the config's `User` for the address.
        assert_eq!(target("[ssh]\nconfig_file = \"/etc/c\"", 0).user, None);
    }

    #[test]
    fn a_timeout_names_node_address_command_timeout_and_fix() {
        let e = TransportError::Timeout {
            node: "cp1".into(),
            address: "10.0.0.11".into(),
            after: Duration::from_secs(60),
            what: describe_script("sleep 30\n"),
        };
        assert_eq!(
            e.to_string(),
            "cp1 (10.0.0.11): `sleep 30` did not finish within 60 s (--command-timeout); hactl \
             stopped waiting for it. Raise --command-timeout if the node is only slow, or log in \
             and see what hangs there (a stuck etcdctl, a blocked NFS mount, sudo)"
        );
        assert_eq!(e.node(), "cp1");
        assert!(timed_out("x", Duration::from_millis(1500)).contains("within 1.5 s"));
        assert_eq!(describe_script("a\n\nb\n"), "a 2-line script");
        assert_eq!(
            describe_script(&"x".repeat(61)),
            format!("`{}…`", "x".repeat(60))
        );
    }
}
