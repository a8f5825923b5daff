//! The SSH transport: one `openssh` multiplexed master connection per node.
//!
//! `connect` starts one `ssh -M` master per node (OpenSSH's own client, so the operator's
//! `config_file` — ProxyJump, Port, IdentityFile — and known_hosts work as with `ssh`); every
//! `run` is a new channel over that master's control socket (native mux: no extra `ssh`
//! process per command). The masters' control directories are in a private (0700) one of this
//! user's, on a memory filesystem where there is one (`control_directory`).
//!
//! Every command has a deadline (`SshTarget::command_timeout`). When it passes, `run` drops the
//! command's channel and returns [`TransportError::Timeout`] at once; the master and its other
//! channels are unaffected. Dropping the channel does not stop the remote command: the mux
//! protocol has no signal message, and sshd sends SIGHUP only to a session with a pty, which
//! mux commands never have. So the node stops it itself. A command without input runs beside a
//! watchdog on its stdin ([`WATCHDOG`]): hactl holds that pipe open until the command's status
//! is in, and when it closes first (the deadline, hactl interrupted, the connection gone) the
//! watchdog kills the command's whole process group. A command with input (its stdin is the
//! input) runs under the node's `timeout` instead ([`REAPER`]), set a little past hactl's
//! deadline (TERM, then KILL).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::{CommandOutput, NodeTransport, SshTarget, TransportError, describe_script};
use crate::spec::KnownHosts;

/// A master left behind by a killed hactl exits after this long without commands; hactl
/// closes its masters itself otherwise.
const MASTER_IDLE_EXIT: Duration = Duration::from_secs(1800);

/// Keep-alives so a node that vanishes mid-run fails the command instead of hanging it
/// (ssh gives up after 3 unanswered ones).
const SERVER_ALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// How much later than hactl's deadline the node's own `timeout` stops a command (TERM), and
/// how long after that it kills it: late enough that hactl's deadline comes first (the node's
/// clock starts later, once the channel is open), so `timeout`'s status 124 is not taken for
/// the script's.
const REMOTE_GRACE: Duration = Duration::from_secs(5);

/// Runs `"$1"` (the script) in this shell beside a watchdog that reads the channel's stdin,
/// which hactl keeps open and writes nothing to until the command's status is in. When it ends
/// while the script's shell still runs (hactl gave up at its deadline, was interrupted, or its
/// connection closed), the watchdog kills its process group: the command and all it started
/// (sshd makes each session's command a process group of its own; under `sudo`, whether or not
/// with `use_pty`, the group of the shell sudo runs, which holds the watchdog). It is forked
/// twice so that it is not the script's child: the node script's `wait` waits for its own jobs
/// only. The script reads /dev/null and starts with no positional parameters, as under
/// `sh -c`. This costs two forks of the shell, where the node's `timeout` cost an exec, a fork
/// and the script's own `sh` (0.5 ms against 1.9 ms of CPU per command; see README).
const WATCHDOG: &str = r#"exec 3<&0 </dev/null
( ( while read -r _ <&3; do :; done; kill -0 $$ && kill -KILL 0 ) & ) >/dev/null 2>&1
exec 3<&-
eval "set --
$1""#;

/// Runs `"$1"` with `sh -c` under the node's `timeout` for `"$2"` seconds (TERM, then KILL
/// `"$3"` seconds later), or without it where `timeout` is missing or does not take `-k` (old
/// busybox). Only shell builtins choose: a `timeout` that is a file of its own (coreutils)
/// takes `-k`; one that is a symlink (busybox, toybox, a multi-call coreutils) is tried once
/// with `-k` first. Every process a command adds is paid on each node, so the common case adds
/// only `timeout` itself.
const REAPER: &str = r#"t=; set -f; IFS=:; for d in $PATH; do if [ -f "$d/timeout" ] && [ -x "$d/timeout" ]; then t=$d/timeout; break; fi; done; unset IFS; set +f
if [ -n "$t" ] && { [ ! -L "$t" ] || "$t" -k 1 1 true >/dev/null 2>&1; }; then exec "$t" -k "$3" "$2" sh -c "$1"; fi
exec sh -c "$1""#;

/// Where the masters' control dirs go: `hactl-<uid>` (this user's, 0700) on a memory
/// filesystem when there is one (`$XDG_RUNTIME_DIR`, then `/dev/shm`), else in the temp dir.
/// Every run makes and removes a dir, a socket and a log per node; on a disk filesystem (ext4's
/// inode allocator skipping recently deleted inodes) that cost a 50-worker plan about 0.3 s of
/// CPU, more than hactl's own work (see the benchmark in README). The crate's own per-master
/// dirs are made with the umask's mode (0755), so the private one is this. The first use in a
/// process removes what masters that are long gone left there ([`sweep_stale`]).
fn control_directory() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
        let candidates = runtime
            .into_iter()
            .chain([PathBuf::from("/dev/shm"), std::env::temp_dir()]);
        match first_usable_dir(candidates) {
            Some(dir) => {
                sweep_stale(&dir, std::time::SystemTime::now());
                dir
            }
            None => std::env::temp_dir(),
        }
    })
}

/// How long a master's dir may have been without its socket before a later hactl removes it. A
/// master removes its socket when it exits, but not its dir and log: a killed hactl's masters
/// exit after `MASTER_IDLE_EXIT` and leave theirs (on a memory filesystem, until reboot). A
/// master still connecting has no socket yet, but a dir younger than this.
const STALE_DIR: Duration = Duration::from_secs(3600);

/// Removes the crate's `.ssh-connection*` dirs in `dir` that have had no `master` socket for
/// [`STALE_DIR`] (their mtime is when the socket went, or when they were made).
fn sweep_stale(dir: &Path, now: std::time::SystemTime) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !is_master_dir(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let idle = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok());
        if !meta.is_dir() || idle.is_none_or(|idle| idle < STALE_DIR) {
            continue;
        }
        // A dir with a master's socket stays, however old: that master still runs.
        if std::fs::symlink_metadata(path.join("master")).is_err() {
            // Best effort: what cannot be removed now is tried again by the next run.
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// Whether `name` is one of the crate's per-master dirs (`.ssh-connectionXXXXXX`).
fn is_master_dir(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().starts_with(b".ssh-connection")
}

/// `hactl-<uid>` in the first of `candidates` where it can be had private (see [`private_dir`])
/// with a short enough path for the control sockets beneath it.
fn first_usable_dir(candidates: impl IntoIterator<Item = PathBuf>) -> Option<PathBuf> {
    // `<dir>/.ssh-connectionXXXXXX/master` (29 bytes more) must fit sun_path (108 bytes with
    // its NUL).
    const MAX_LEN: usize = 78;
    let name = format!("hactl-{}", rustix::process::geteuid().as_raw());
    candidates.into_iter().find_map(|parent| {
        let dir = parent.join(&name);
        if !dir.is_absolute() || dir.as_os_str().len() > MAX_LEN {
            return None;
        }
        private_dir(&dir)
    })
}

/// `dir`, made (0700) when missing; `Some` only when it is a directory, not a symlink, that this
/// user owns and no one else may enter (a world-writable parent lets anyone make it first).
fn private_dir(dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(_) => return None,
    }
    let meta = std::fs::symlink_metadata(dir).ok()?;
    let ours = meta.uid() == rustix::process::geteuid().as_raw();
    let private = meta.permissions().mode() & 0o077 == 0;
    (meta.is_dir() && ours && private).then(|| dir.to_path_buf())
}

/// The control sockets of this process's masters not closed yet, for [`close_all_masters`].
fn live_masters() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<PathBuf>> {
    static LIVE: std::sync::Mutex<std::collections::BTreeSet<PathBuf>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    LIVE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Closes every master of this process not closed yet, as [`SshSession::close`] would, and
/// removes their dirs: for a way out that skips destructors (`std::process::exit` on Ctrl-C),
/// which would leave them connected to the nodes for `MASTER_IDLE_EXIT`.
pub async fn close_all_masters() {
    let sockets = std::mem::take(&mut *live_masters());
    futures_util::future::join_all(sockets.into_iter().map(|ctl| async move {
        let session = openssh::Session::resume_mux(ctl.clone().into_boxed_path(), None);
        // A master already gone (its session dropped) has nothing left to close.
        let _ = session.close().await;
        if let Some(dir) = ctl.parent()
            && dir.file_name().is_some_and(is_master_dir)
        {
            let _ = std::fs::remove_dir_all(dir);
        }
    }))
    .await;
}

/// A live connection to one node; every command of a run goes through it.
pub struct SshSession {
    target: SshTarget,
    session: openssh::Session,
}

impl SshSession {
    /// Connects (one master connection), checking the host key as the target says.
    pub async fn connect(target: SshTarget) -> Result<SshSession, TransportError> {
        let mut b = openssh::SessionBuilder::default();
        if let Some(user) = &target.user {
            b.user(user.clone());
        }
        if let Some(port) = target.port {
            b.port(port);
        }
        if let Some(key) = &target.identity_file {
            b.keyfile(key);
        }
        if let Some(config) = &target.config_file {
            b.config_file(config);
        }
        b.known_hosts_check(match target.known_hosts {
            KnownHosts::Strict => openssh::KnownHosts::Strict,
            KnownHosts::AcceptNew => openssh::KnownHosts::Add,
        });
        // ConnectTimeout is whole seconds; 0 would mean "the system's TCP timeout".
        b.connect_timeout(target.connect_timeout.max(Duration::from_secs(1)));
        b.server_alive_interval(SERVER_ALIVE_INTERVAL);
        if let Some(idle) = std::num::NonZeroUsize::new(MASTER_IDLE_EXIT.as_secs() as usize) {
            b.control_persist(openssh::ControlPersist::IdleFor(idle));
        }
        // The crate makes a `.ssh-connection*` dir inside this private one, a short path
        // (unix socket paths are limited to ~100 bytes).
        b.control_directory(control_directory());
        // The crate already passes BatchMode=yes: no password or passphrase prompts.
        match b.connect_mux(target.address.to_string()).await {
            Ok(session) => {
                live_masters().insert(session.control_socket().to_path_buf());
                Ok(SshSession { target, session })
            }
            Err(e) => Err(connect_error(&target, e)),
        }
    }

    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// The master's control socket (its path names this session's ssh master process).
    pub fn control_socket(&self) -> &Path {
        self.session.control_socket()
    }

    /// Closes the master connection (the `ssh -M` process exits) and removes its temp dir.
    pub async fn close(self) -> Result<(), TransportError> {
        let node = self.target.node.clone();
        live_masters().remove(self.control_socket());
        self.session
            .close()
            .await
            .map_err(|e| TransportError::Other {
                node,
                detail: format!("closing the ssh master connection: {}", error_text(&e)),
            })
    }

    /// What the master logged last (why it went away), from the log beside its socket.
    fn master_log_tail(&self) -> Option<String> {
        let log = self.control_socket().parent()?.join("log");
        let text = std::fs::read_to_string(log).ok()?;
        text.lines()
            .map(|l| l.trim())
            .rfind(|l| !l.is_empty())
            .map(str::to_string)
    }

    fn lost(&self, e: &openssh::Error) -> TransportError {
        let why = self.master_log_tail().unwrap_or_else(|| error_text(e));
        TransportError::Other {
            node: self.target.node.clone(),
            detail: format!("the ssh connection to {} broke: {why}", self.target.address),
        }
    }
}

impl NodeTransport for SshSession {
    fn node(&self) -> &str {
        &self.target.node
    }

    async fn run(&self, script: &str) -> Result<CommandOutput, TransportError> {
        self.run_bounded(script, None).await
    }

    async fn run_with_input(
        &self,
        script: &str,
        input: &[u8],
    ) -> Result<CommandOutput, TransportError> {
        self.run_bounded(script, Some(input)).await
    }
}

impl SshSession {
    async fn run_bounded(
        &self,
        script: &str,
        input: Option<&[u8]>,
    ) -> Result<CommandOutput, TransportError> {
        let after = self.target.command_timeout;
        let started = std::time::Instant::now();
        // On the deadline the unfinished future is dropped, and with it the command's channel
        // (its mux socket and pipes): hactl returns at once, the master stays usable.
        let result = tokio::time::timeout(after, self.run_unbounded(script, input)).await;
        // What ran, never what it read or was sent: the sizes only.
        tracing::debug!(
            node = %self.target.node,
            command = %describe_script(script),
            input_bytes = input.map_or(0, <[u8]>::len),
            took_ms = super::millis(started.elapsed()),
            outcome = %match &result {
                Ok(Ok(out)) => out.status.map_or("killed by a signal".into(), |c| format!("exit {c}")),
                Ok(Err(e)) => format!("failed: {e}"),
                Err(_) => "timed out".into(),
            },
            output_bytes = match &result {
                Ok(Ok(out)) => out.stdout.len() + out.stderr.len(),
                _ => 0,
            },
            "ran a command"
        );
        match result {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout {
                node: self.target.node.clone(),
                address: self.target.address.to_string(),
                after,
                what: describe_script(script),
            }),
        }
    }
}

/// The words of the remote command for `script`, each to be shell-quoted once for the node's
/// login shell, which unquotes them: `sh` (under `sudo -n` when the target says so) gets the
/// script byte for byte as `$1` of the watchdog ([`WATCHDOG`]; stdin is then the watchdog's),
/// or, for a command with input on stdin, of the reaper ([`REAPER`], the node's `timeout`).
fn remote_words(target: &SshTarget, script: &str, with_input: bool) -> Vec<String> {
    let mut words: Vec<String> = if target.sudo {
        vec!["sudo".into(), "-n".into()]
    } else {
        Vec::new()
    };
    if with_input {
        let remote = target.command_timeout + REMOTE_GRACE;
        // Whole seconds: busybox's `timeout` takes no fractions.
        let remote_secs = remote.as_secs() + u64::from(remote.subsec_nanos() > 0);
        words.extend(["sh", "-c", REAPER, "sh", script].map(String::from));
        words.extend([remote_secs.to_string(), REMOTE_GRACE.as_secs().to_string()]);
    } else {
        words.extend(["sh", "-c", WATCHDOG, "sh", script].map(String::from));
    }
    words
}

impl SshSession {
    /// `run` without the deadline.
    async fn run_unbounded(
        &self,
        script: &str,
        input: Option<&[u8]>,
    ) -> Result<CommandOutput, TransportError> {
        // `arg` shell-quotes each word for the remote login shell, which unquotes them once.
        let words = remote_words(&self.target, script, input.is_some());
        let mut cmd = self.session.command(&words[0]);
        cmd.args(&words[1..]);
        cmd.stdin(openssh::Stdio::piped())
            .stdout(openssh::Stdio::piped())
            .stderr(openssh::Stdio::piped());
        let mut child = match cmd.spawn().await {
            Ok(c) => c,
            Err(openssh::Error::InvalidCommand) => {
                return Err(TransportError::Other {
                    node: self.target.node.clone(),
                    detail: "the script contains a NUL byte".into(),
                });
            }
            Err(e) => return Err(self.lost(&e)),
        };
        let (out, err) = (child.stdout().take(), child.stderr().take());
        let stdin = child.stdin().take();
        // Without input, stdin is the watchdog's: held open, and written nothing, until the
        // status is in (dropped earlier, with this future, it stops the command on the node).
        let (stdin, watchdog) = match input {
            Some(_) => (stdin, None),
            None => (None, stdin),
        };
        // All at once: a full stdout or stderr pipe must not block the input, nor the input
        // the output. The input ends (EOF) when it is written.
        let feed = async move {
            if let (Some(mut pipe), Some(bytes)) = (stdin, input) {
                use tokio::io::AsyncWriteExt;
                pipe.write_all(bytes)
                    .await
                    .map_err(openssh::Error::ChildIo)?;
                pipe.shutdown().await.map_err(openssh::Error::ChildIo)?;
            }
            Ok::<(), openssh::Error>(())
        };
        let (fed, stdout, stderr) = tokio::join!(feed, read_all(out), read_all(err));
        fed.map_err(|e| self.lost(&e))?;
        let status = match child.wait().await {
            Ok(s) => s.code(),
            // The crate reports exit 127 as an error ("command not found"); here `sh` always
            // exists, so 127 is the script's own status.
            Err(openssh::Error::Remote(e)) if e.kind() == std::io::ErrorKind::NotFound => Some(127),
            // Killed by a signal, or the connection broke: the multiplex protocol can't tell
            // them apart, but a live master means the former.
            Err(e @ openssh::Error::RemoteProcessTerminated) => {
                if self.session.check().await.is_err() {
                    return Err(self.lost(&e));
                }
                None
            }
            Err(e) => return Err(self.lost(&e)),
        };
        drop(watchdog);
        let output = CommandOutput {
            status,
            stdout: stdout.map_err(|e| self.lost(&e))?,
            stderr: stderr.map_err(|e| self.lost(&e))?,
        };
        if self.target.sudo
            && let Some(detail) = sudo_refusal(&output)
        {
            return Err(TransportError::Sudo {
                node: self.target.node.clone(),
                detail,
            });
        }
        Ok(output)
    }
}

async fn read_all<R: tokio::io::AsyncRead + Unpin>(
    pipe: Option<R>,
) -> Result<Vec<u8>, openssh::Error> {
    let mut buf = Vec::new();
    if let Some(mut p) = pipe {
        p.read_to_end(&mut buf)
            .await
            .map_err(openssh::Error::ChildIo)?;
    }
    Ok(buf)
}

/// `sudo -n` itself refusing (not the script failing): sudo's own lines (PAM's account check
/// comes before the password it then asks for), or the login shell's "sudo: not found".
fn sudo_refusal(out: &CommandOutput) -> Option<String> {
    let text = out.stderr_text();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let first = *lines.first()?;
    let refused = match out.status {
        Some(1) => {
            let sudo: Vec<&str> = lines
                .iter()
                .copied()
                .take_while(|l| l.starts_with("sudo: "))
                .collect();
            let says = |l: &&str| {
                [
                    "a password is required",
                    "not in the sudoers",
                    "is not allowed to",
                    "may not run sudo",
                    "a terminal is required",
                    "account validation failure",
                ]
                .iter()
                .any(|m| l.contains(m))
            };
            return sudo.iter().any(says).then(|| sudo.join("; "));
        }
        Some(127) => first.contains("sudo: not found") || first.contains("sudo: command not found"),
        _ => false,
    };
    refused.then(|| first.to_string())
}

/// The error's own words, with its cause.
fn error_text(e: &openssh::Error) -> String {
    match std::error::Error::source(e) {
        Some(src) => format!("{e}: {src}"),
        None => e.to_string(),
    }
}

/// A failed `connect_mux` as a [`TransportError`]: the crate gives the master's log (ssh's own
/// stderr) as the message of `Error::Connect`.
fn connect_error(target: &SshTarget, e: openssh::Error) -> TransportError {
    let node = target.node.clone();
    match &e {
        // ssh's log: a message the crate built (not an OS error, which means ssh didn't run).
        openssh::Error::Connect(io) if io.raw_os_error().is_none() => with_identity_file(
            classify_ssh_log(&node, &target.address.to_string(), &io.to_string()),
            target,
        ),
        openssh::Error::Connect(io) if io.kind() == std::io::ErrorKind::NotFound => {
            TransportError::Other {
                node,
                detail: format!("cannot run `ssh` (is openssh-client installed?): {io}"),
            }
        }
        _ => TransportError::Other {
            node,
            detail: error_text(&e),
        },
    }
}

/// A refused login whose identity file cannot be read says so. ssh warns of such a file only
/// on its stderr, which the crate discards (the master's log has just the refusal), then
/// goes on without it.
fn with_identity_file(mut e: TransportError, target: &SshTarget) -> TransportError {
    if let TransportError::AuthFailed { detail, .. } = &mut e
        && let Some(key) = &target.identity_file
        && let Err(io) = std::fs::File::open(key)
    {
        detail.push_str(&format!(
            " (identity file {} not accessible: {})",
            key.display(),
            super::tls::os_text(&io)
        ));
    }
    e
}

/// Sorts ssh's stderr from a failed connection into a [`TransportError`]; the detail is ssh's
/// most telling line, as ssh printed it.
pub fn classify_ssh_log(node: &str, address: &str, log: &str) -> TransportError {
    let lines: Vec<&str> = log
        .lines()
        .map(|l| l.trim().trim_matches('@').trim())
        .filter(|l| !l.is_empty())
        .collect();
    let find = |pat: &str| {
        lines
            .iter()
            .find(|l| l.contains(pat))
            .map(|l| l.to_string())
    };
    let (node, address) = (node.to_string(), address.to_string());
    if log.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") || log.contains("has changed and") {
        let detail = find("has changed and")
            .or_else(|| find("REMOTE HOST IDENTIFICATION HAS CHANGED"))
            .unwrap_or_default();
        return TransportError::HostKeyChanged {
            node,
            address,
            detail,
        };
    }
    if let Some(detail) = lines
        .iter()
        .find(|l| l.starts_with("No ") && l.contains("host key is known for"))
    {
        return TransportError::HostKeyUnknown {
            node,
            address,
            detail: detail.to_string(),
        };
    }
    if let Some(detail) = find("Permission denied (") {
        return TransportError::AuthFailed {
            node,
            address,
            detail,
        };
    }
    const UNREACHABLE: [&str; 9] = [
        "connect to host",
        "Could not resolve hostname",
        "Connection timed out",
        "timed out",
        "No route to host",
        "Network is unreachable",
        "Connection refused",
        "kex_exchange_identification",
        "Connection closed by",
    ];
    if let Some(line) = UNREACHABLE.iter().find_map(|p| find(p)) {
        // The crate strips ssh's "ssh: " prefix from the log's first line; put it back so the
        // detail reads as ssh printed it.
        let detail = if (line.starts_with("connect to host")
            || line.starts_with("Could not resolve hostname"))
            && !line.starts_with("ssh: ")
        {
            format!("ssh: {line}")
        } else if log.contains("UNKNOWN port 65535") {
            // ssh's words when the connection came through a ProxyJump/ProxyCommand hop,
            // whose own error ssh does not log.
            format!("{line} (through the ProxyJump/ProxyCommand of the ssh config_file)")
        } else {
            line
        };
        return TransportError::Unreachable {
            node,
            address,
            detail,
        };
    }
    if let Some(detail) = find("Host key verification failed") {
        return TransportError::HostKeyChanged {
            node,
            address,
            detail,
        };
    }
    TransportError::Other {
        node,
        detail: match lines.last() {
            Some(l) => format!("ssh to {address} failed: {l}"),
            None => format!("ssh to {address} failed without a message"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_master_dirs_are_swept_and_live_or_young_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let make = |name: &str, socket: bool| {
            let d = dir.path().join(name);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("log"), "").unwrap();
            if socket {
                std::os::unix::net::UnixListener::bind(d.join("master")).unwrap();
            }
            d
        };
        let gone = make(".ssh-connectionAAAAAA", false);
        let live = make(".ssh-connectionBBBBBB", true);
        let other = make("not-a-master", false);
        let file = dir.path().join(".ssh-connectionCCCCCC");
        std::fs::write(&file, "").unwrap();
        let now = std::time::SystemTime::now();
        // Young: a master may still be connecting.
        sweep_stale(dir.path(), now);
        assert!(gone.exists() && live.exists() && other.exists() && file.exists());
        sweep_stale(dir.path(), now + STALE_DIR + Duration::from_secs(1));
        assert!(!gone.exists(), "a socketless old master dir is removed");
        assert!(live.join("master").exists(), "a live master's dir stays");
        assert!(
            other.exists() && file.exists(),
            "only the crate's dirs are touched"
        );
    }

    #[test]
    fn the_control_directory_is_a_private_dir_in_the_first_usable_candidate() {
        use std::os::unix::fs::PermissionsExt;
        let name = format!("hactl-{}", rustix::process::geteuid().as_raw());
        let writable = tempfile::tempdir().unwrap();
        let missing = writable.path().join("missing");
        // Writable, but too long a path for a control socket beneath it.
        let elsewhere = tempfile::tempdir().unwrap();
        let long = elsewhere.path().join("d".repeat(80));
        std::fs::create_dir(&long).unwrap();
        let chosen = first_usable_dir([
            PathBuf::from("relative"),
            missing,
            long.clone(),
            writable.path().to_path_buf(),
            PathBuf::from("/"),
        ]);
        let expected = writable.path().join(&name);
        assert_eq!(chosen.as_deref(), Some(expected.as_path()));
        let mode = std::fs::metadata(&expected).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(
            std::fs::read_dir(&long).unwrap().count(),
            0,
            "nothing made there"
        );
        // Made once, then used as it is.
        assert_eq!(first_usable_dir([writable.path().to_path_buf()]), chosen);

        // One that others may enter, or a symlink to a private one, is passed over.
        let open = tempfile::tempdir().unwrap();
        std::fs::create_dir(open.path().join(&name)).unwrap();
        std::fs::set_permissions(
            open.path().join(&name),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let linked = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&expected, linked.path().join(&name)).unwrap();
        let chosen = first_usable_dir([open.path().to_path_buf(), linked.path().to_path_buf()]);
        assert_eq!(chosen, None);
    }

    /// A node's target as the remote command's words need it (no sudo).
    fn target(command_timeout: Duration) -> SshTarget {
        SshTarget {
            node: "n1".into(),
            address: "127.0.0.1".parse().unwrap(),
            user: None,
            port: None,
            identity_file: None,
            config_file: None,
            known_hosts: KnownHosts::Strict,
            sudo: false,
            connect_timeout: Duration::from_secs(5),
            command_timeout,
        }
    }

    /// Starts the watchdog's shell locally as sshd would (a process group of its own), with
    /// stdin a pipe the caller holds, as hactl holds the channel's.
    fn watched(script: &str) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        use std::process::Stdio;
        let words = remote_words(&target(Duration::from_secs(60)), script, false);
        std::process::Command::new(&words[0])
            .args(&words[1..])
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The processes whose process group is `pgid`, from /proc.
    fn group(pgid: u32) -> Vec<u32> {
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid pgrp …; comm may hold spaces and parentheses.
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            let fields: Vec<&str> = after.split_whitespace().collect();
            if fields[2].parse::<u32>() == Ok(pgid) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Whether `done` held within 5 s, asked every 20 ms.
    fn within_5s(mut done: impl FnMut() -> bool) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !done() {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// `pid` as rustix takes it.
    fn pid(pid: u32) -> rustix::process::Pid {
        rustix::process::Pid::from_raw(pid as i32).expect("a process id")
    }

    /// The finished command's output; if it runs on for 5 s, its group is killed and the test
    /// fails (instead of hanging).
    fn finish(mut child: std::process::Child) -> std::process::Output {
        if !within_5s(|| child.try_wait().unwrap().is_some()) {
            let _ =
                rustix::process::kill_process_group(pid(child.id()), rustix::process::Signal::KILL);
            panic!("the command still ran after 5 s");
        }
        child.wait_with_output().unwrap()
    }

    /// The watched script's output, its stdin held open until it has finished.
    fn held_open(script: &str) -> std::process::Output {
        let mut child = watched(script);
        let stdin = child.stdin.take();
        let out = finish(child);
        drop(stdin);
        out
    }

    #[test]
    fn the_watchdog_runs_the_script_as_sh_c_would_with_its_status() {
        let out = held_open("printf '%s|' \"a b\" '$HOME' \"*\" \"$#\" \"$0\"; exit 3");
        assert_eq!(
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).as_ref()
            ),
            (Some(3), "a b|$HOME|*|0|sh|")
        );
        assert!(
            out.stderr.is_empty(),
            "{:?}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn the_script_reads_dev_null_and_its_wait_is_for_its_own_jobs() {
        // The caller's pipe stays open throughout: `cat` must not read it, nor `wait` wait for
        // the watchdog that reads it.
        let out = held_open("cat; sleep 0.1 & wait; echo done");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
    }

    #[test]
    fn when_its_stdin_closes_first_the_watchdog_kills_the_command_and_its_children() {
        let mut child = watched("sleep 30 & echo $!; sleep 30; echo not-killed");
        let pgid = child.id();
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let background: u32 = line.trim().parse().unwrap();
        assert!(group(pgid).contains(&background));
        // hactl gives up: the channel, and with it the command's stdin, closes.
        drop(child.stdin.take());
        let started = std::time::Instant::now();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "{status:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            within_5s(|| group(pgid).is_empty()),
            "the command's processes outlived the watchdog"
        );
    }

    #[test]
    fn after_the_script_ends_the_watchdog_leaves_what_it_started() {
        let mut child = watched("sleep 30 >/dev/null 2>&1 & echo $!");
        let pgid = child.id();
        let stdin = child.stdin.take();
        let out = finish(child);
        assert_eq!(out.status.code(), Some(0));
        let background: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        // The channel closes once the status is in: the watchdog goes, the job stays.
        drop(stdin);
        assert!(
            within_5s(|| group(pgid) == [background]),
            "the watchdog outlived the channel"
        );
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            group(pgid),
            [background],
            "the watchdog killed a finished command's job"
        );
        rustix::process::kill_process(pid(background), rustix::process::Signal::TERM).unwrap();
    }

    /// Runs a command with input locally as the node's shell would (the reaper, for a
    /// `command_timeout` of `secs`), with `PATH` set to `bin`: its exit status, what the script
    /// printed, and how long it took.
    fn reap(bin: &Path, script: &str, secs: u64) -> (Option<i32>, String, Duration) {
        let started = std::time::Instant::now();
        let words = remote_words(&target(Duration::from_secs(secs)), script, true);
        let out = std::process::Command::new(&words[0])
            .args(&words[1..])
            .env("PATH", bin)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.code(), text, started.elapsed())
    }

    /// A `bin` directory holding `sh`, `sleep`, `cat` and `true`, and `timeout` as `how` makes
    /// it: a copy of coreutils', a symlink to it, an old busybox's that refuses `-k`, or none.
    fn bin(how: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for tool in ["sh", "sleep", "cat", "true"] {
            let real = ["/bin", "/usr/bin"]
                .iter()
                .map(|d| Path::new(d).join(tool))
                .find(|p| p.exists())
                .unwrap();
            std::os::unix::fs::symlink(real, dir.path().join(tool)).unwrap();
        }
        let real = Path::new("/usr/bin/timeout");
        let timeout = dir.path().join("timeout");
        match how {
            "copy" => {
                std::fs::copy(real, &timeout).unwrap();
            }
            "symlink" => std::os::unix::fs::symlink(real, &timeout).unwrap(),
            // An old busybox: refuses `-k`.
            "no -k" => {
                let fake = dir.path().join("busybox");
                std::fs::write(
                    &fake,
                    "#!/bin/sh\necho 'timeout: invalid option -- k' >&2\nexit 1\n",
                )
                .unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
                std::os::unix::fs::symlink(&fake, &timeout).unwrap();
            }
            _ => {}
        }
        dir
    }

    /// The script's parent: `timeout`, or (sh having exec'd its last command) the test.
    const PARENT: &str = "cat /proc/$PPID/comm";

    #[test]
    fn the_reaper_uses_timeout_where_it_takes_k_and_sh_where_not() {
        for (how, under_timeout) in [
            ("copy", true),
            ("symlink", true),
            ("no -k", false),
            ("none", false),
        ] {
            let dir = bin(how);
            let (code, out, _) = reap(dir.path(), &format!("echo ok; {PARENT}"), 30);
            assert_eq!(code, Some(0), "{how}: {out}");
            assert!(out.starts_with("ok\n"), "{how}: {out}");
            assert_eq!(out == "ok\ntimeout\n", under_timeout, "{how}: {out}");
        }
    }

    #[test]
    fn under_timeout_a_command_that_outlasts_it_is_stopped_on_the_node() {
        for how in ["copy", "symlink"] {
            let dir = bin(how);
            let (code, _, took) = reap(dir.path(), "sleep 30", 1);
            // 124: timeout's own status when it stopped the command (hactl's 1 s deadline and the
            // 5 s grace after it).
            assert_eq!(code, Some(124), "{how}");
            assert!(took < Duration::from_secs(10), "{how}: {took:?}");
        }
    }

    #[test]
    fn the_script_reaches_sh_byte_for_byte_with_its_status() {
        let dir = bin("copy");
        let script = "printf '%s|' \"a b\" '$HOME' \"*\"; exit 3";
        let (code, out, _) = reap(dir.path(), script, 30);
        assert_eq!((code, out.as_str()), (Some(3), "a b|$HOME|*|"));
    }

    fn classify(log: &str) -> TransportError {
        classify_ssh_log("w1", "127.0.0.22", log)
    }

    #[test]
    fn refused_is_unreachable_in_ssh_words() {
        // As the crate hands it over: the leading "ssh: " stripped.
        let e = classify("connect to host 127.0.0.22 port 22: Connection refused\n");
        assert_eq!(
            e,
            TransportError::Unreachable {
                node: "w1".into(),
                address: "127.0.0.22".into(),
                detail: "ssh: connect to host 127.0.0.22 port 22: Connection refused".into()
            }
        );
    }

    #[test]
    fn timeouts_names_and_closed_proxies_are_unreachable() {
        for log in [
            "Connection timed out during banner exchange\r\nConnection to 127.0.0.22 port 22 timed out\r\n",
            "Could not resolve hostname nosuch: Name or service not known",
            "connect to host 10.9.9.9 port 22: No route to host",
            "Connection closed by UNKNOWN port 65535",
            "kex_exchange_identification: Connection closed by remote host",
        ] {
            assert!(
                matches!(classify(log), TransportError::Unreachable { .. }),
                "{log}: {:?}",
                classify(log)
            );
        }
        let TransportError::Unreachable { detail, .. } =
            classify("Could not resolve hostname nosuch: Name or service not known")
        else {
            unreachable!()
        };
        assert_eq!(
            detail,
            "ssh: Could not resolve hostname nosuch: Name or service not known"
        );
        // A failed ProxyJump hop, as the master logs it.
        let TransportError::Unreachable { detail, .. } = classify(
            "kex_exchange_identification: Connection closed by remote host\r\nConnection closed by UNKNOWN port 65535\r\n",
        ) else {
            unreachable!()
        };
        assert_eq!(
            detail,
            "kex_exchange_identification: Connection closed by remote host (through the ProxyJump/ProxyCommand of the ssh config_file)"
        );
    }

    #[test]
    fn host_key_changed_and_unknown_are_told_apart() {
        let changed = "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r\n\
            @    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n\
            @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r\n\
            IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\r\n\
            Host key for 127.0.0.22 has changed and you have requested strict checking.\r\n\
            Host key verification failed.\r\n";
        match classify(changed) {
            TransportError::HostKeyChanged { detail, .. } => assert_eq!(
                detail,
                "Host key for 127.0.0.22 has changed and you have requested strict checking."
            ),
            other => panic!("{other:?}"),
        }
        let unknown = "No ED25519 host key is known for 127.0.0.22 and you have requested strict checking.\r\nHost key verification failed.\r\n";
        match classify(unknown) {
            TransportError::HostKeyUnknown { detail, .. } => {
                assert!(detail.starts_with("No ED25519 host key is known for 127.0.0.22"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn permission_denied_is_auth_failed() {
        let log = "Warning: Identity file /nope not accessible: No such file or directory.\nroot@127.0.0.22: Permission denied (publickey).\n";
        assert_eq!(
            classify(log),
            TransportError::AuthFailed {
                node: "w1".into(),
                address: "127.0.0.22".into(),
                detail: "root@127.0.0.22: Permission denied (publickey).".into()
            }
        );
    }

    #[test]
    fn anything_else_keeps_ssh_last_words() {
        match classify("something new\nand odd\n") {
            TransportError::Other { detail, .. } => {
                assert_eq!(detail, "ssh to 127.0.0.22 failed: and odd")
            }
            other => panic!("{other:?}"),
        }
    }

    fn out(status: i32, stderr: &str) -> CommandOutput {
        CommandOutput {
            status: Some(status),
            stdout: vec![],
            stderr: stderr.as_bytes().to_vec(),
        }
    }

    #[test]
    fn sudo_refusals_are_told_from_failing_scripts() {
        assert_eq!(
            sudo_refusal(&out(1, "sudo: a password is required\n")).as_deref(),
            Some("sudo: a password is required")
        );
        assert!(
            sudo_refusal(&out(
                1,
                "bob is not in the sudoers file.  This incident will be reported.\n"
            ))
            .is_none()
        );
        assert!(
            sudo_refusal(&out(
                1,
                "sudo: bob is not in the sudoers file.  This incident will be reported.\n"
            ))
            .is_some()
        );
        assert!(sudo_refusal(&out(127, "sh: 1: sudo: not found\n")).is_some());
        assert!(sudo_refusal(&out(127, "bash: line 1: sudo: command not found\n")).is_some());
        // The script's own failures stay outputs.
        assert!(sudo_refusal(&out(1, "cat: /x: No such file or directory\n")).is_none());
        assert!(sudo_refusal(&out(127, "sh: 1: kubeadm: not found\n")).is_none());
        assert!(sudo_refusal(&out(0, "sudo: a password is required\n")).is_none());
        // PAM refusing the account (no shadow entry, expired) comes first; both lines are kept.
        assert_eq!(
            sudo_refusal(&out(
                1,
                "sudo: account validation failure, is your account locked?\nsudo: a password is required\n"
            ))
            .as_deref(),
            Some("sudo: account validation failure, is your account locked?; sudo: a password is required")
        );
    }
}
