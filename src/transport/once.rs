//! One `ssh` per command, with no master: for a node hactl reads once and lets go (the workers
//! `hactl plan` reads). A master costs such a node a fork into the background after it
//! authenticates, a control dir, and the close; a plain `ssh` connects, runs the command and
//! exits, as an operator's `ssh node cmd` would (see the benchmark in README).
//!
//! Everything else is as over a master: the same options (the operator's `config_file`,
//! known_hosts, `BatchMode`, the connect timeout and keep-alives), the same remote command
//! (the reaper under the node's `timeout`), the same sudo check and error kinds, and the same
//! deadline, which here counts from before the connection (ssh's `ConnectTimeout` ends a
//! connection that hangs first; the node's `timeout`, counting from the command's start, still
//! comes after hactl's deadline).
//! ssh's own messages go to a log file (`-E`) beside the masters' dirs, so the command's
//! stderr is the node's alone, and a failed connection is told from the command's status 255
//! by what ssh logged.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use super::ssh::{
    ONCE_LOG_PREFIX, SERVER_ALIVE_INTERVAL, classify_ssh_log, control_directory, remote_words,
    sudo_refusal, within_deadline,
};
use super::{CommandOutput, NodeTransport, SshTarget, TransportError};
use crate::spec::KnownHosts;

/// A node reached by one `ssh` per command.
pub struct SshOnce {
    target: SshTarget,
}

impl SshOnce {
    /// Connects nothing yet: each `run` is its own connection.
    pub fn new(target: SshTarget) -> SshOnce {
        SshOnce { target }
    }

    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// `ssh` with the options the `openssh` crate gives a master (so that both reach a node the
    /// same way), logging to `log`, running `script` as [`remote_words`] say.
    fn command(&self, script: &str, log: &std::path::Path) -> tokio::process::Command {
        let t = &self.target;
        let mut c = tokio::process::Command::new("ssh");
        c.arg("-E").arg(log);
        // No pty (as a mux channel has none), and no connection sharing the config file may ask
        // for: this connection ends with its command.
        c.args(["-T", "-o", "ControlPath=none", "-o", "BatchMode=yes", "-o"]);
        c.arg(match t.known_hosts {
            KnownHosts::Strict => "StrictHostKeyChecking=yes",
            KnownHosts::AcceptNew => "StrictHostKeyChecking=accept-new",
        });
        // ConnectTimeout is whole seconds; 0 would mean "the system's TCP timeout".
        let connect = t.connect_timeout.as_secs().max(1);
        c.arg("-o").arg(format!("ConnectTimeout={connect}"));
        let alive = SERVER_ALIVE_INTERVAL.as_secs();
        c.arg("-o").arg(format!("ServerAliveInterval={alive}"));
        if let Some(port) = t.port {
            c.arg("-p").arg(port.to_string());
        }
        if let Some(user) = &t.user {
            c.arg("-l").arg(user);
        }
        if let Some(key) = &t.identity_file {
            c.args(["-o", "IdentitiesOnly=yes", "-i"]).arg(key);
        }
        if let Some(config) = &t.config_file {
            c.arg("-F").arg(config);
        }
        c.arg(t.address.to_string());
        // The remote login shell unquotes each word once, as over a master.
        let words: Vec<String> = remote_words(t, script)
            .into_iter()
            .map(|w| shell_escape::unix::escape(w.into()).into_owned())
            .collect();
        c.arg(words.join(" "));
        // A command given up on (its deadline, or the run stopping) ends its connection; the
        // node's `timeout` then stops what it started, as it does for a master's channel.
        c.kill_on_drop(true);
        c
    }

    async fn run_unbounded(
        &self,
        script: &str,
        input: Option<&[u8]>,
    ) -> Result<CommandOutput, TransportError> {
        let node = &self.target.node;
        let other = |detail: String| TransportError::Other {
            node: node.clone(),
            detail,
        };
        if script.contains('\0') {
            return Err(other("the script contains a NUL byte".into()));
        }
        let log = tempfile::Builder::new()
            .prefix(ONCE_LOG_PREFIX)
            .tempfile_in(control_directory())
            .map_err(|e| other(format!("cannot make ssh's log file: {e}")))?;
        let mut cmd = self.command(script, log.path());
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            other(if e.kind() == std::io::ErrorKind::NotFound {
                format!("cannot run `ssh` (is openssh-client installed?): {e}")
            } else {
                format!("cannot run `ssh`: {e}")
            })
        })?;
        // All at once: a full stdout or stderr pipe must not block the input, nor the input
        // the output. The input ends (EOF) when it is written.
        let stdin = child.stdin.take();
        let feed = async move {
            if let (Some(mut pipe), Some(bytes)) = (stdin, input) {
                pipe.write_all(bytes).await?;
                pipe.shutdown().await?;
            }
            Ok::<(), std::io::Error>(())
        };
        let (fed, output) = tokio::join!(feed, child.wait_with_output());
        let output = output.map_err(|e| other(format!("waiting for `ssh`: {e}")))?;
        let said = std::fs::read_to_string(log.path()).unwrap_or_default();
        let Some(status) = output.status.code() else {
            return Err(other(format!(
                "the ssh connection to {} was killed ({})",
                self.target.address, output.status
            )));
        };
        // ssh exits 255 when it fails, and passes on a command's own 255 (or its death by a
        // signal, which it does not tell apart); only in the first case has it logged why.
        if status == 255 && failed(&said) {
            return Err(classify_ssh_log(
                node,
                &self.target.address.to_string(),
                &said,
            ));
        }
        // A command that exits without reading all its input closes the pipe under it: its
        // status says how it went.
        if let Err(e) = fed
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            return Err(other(format!("sending the command's input: {e}")));
        }
        let output = CommandOutput {
            status: Some(status),
            stdout: output.stdout,
            stderr: output.stderr,
        };
        if self.target.sudo
            && let Some(detail) = sudo_refusal(&output)
        {
            return Err(TransportError::Sudo {
                node: node.clone(),
                detail,
            });
        }
        Ok(output)
    }
}

/// Whether ssh's log says it failed: any line but the note that a new host key was learnt
/// (accept-new), which a working connection logs too.
fn failed(log: &str) -> bool {
    log.lines()
        .map(str::trim)
        .any(|l| !l.is_empty() && !l.starts_with("Warning: Permanently added"))
}

impl NodeTransport for SshOnce {
    fn node(&self) -> &str {
        &self.target.node
    }

    async fn run(&self, script: &str) -> Result<CommandOutput, TransportError> {
        within_deadline(&self.target, script, self.run_unbounded(script, None)).await
    }

    async fn run_with_input(
        &self,
        script: &str,
        input: &[u8],
    ) -> Result<CommandOutput, TransportError> {
        within_deadline(
            &self.target,
            script,
            self.run_unbounded(script, Some(input)),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_with_only_the_learnt_host_key_is_not_a_failure() {
        assert!(!failed(""));
        assert!(!failed(
            "Warning: Permanently added '127.0.20.21' (ED25519) to the list of known hosts.\r\n"
        ));
        assert!(failed(
            "ssh: connect to host 127.0.20.99 port 22: Connection refused\r\n"
        ));
        assert!(failed(
            "Warning: Permanently added '127.0.20.21' (ED25519) to the list of known hosts.\r\n\
             root@127.0.20.21: Permission denied (publickey).\r\n"
        ));
    }
}
