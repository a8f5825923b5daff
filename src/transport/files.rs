//! The node seam ([`NodeOps`]) over the node transport: each operation one POSIX shell script
//! run as root, file contents on stdin or stdout (base64), never on a command line.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::{CommandOutput, NodeTransport, TransportError};
use crate::readings::node::shell_quote;
use crate::seams::{Backup, CommandResult, FileState, NodeOps, SeamError, backup_path};

/// Every node's transport, by node name.
pub struct NodeFiles<T> {
    nodes: BTreeMap<String, T>,
}

impl<T: NodeTransport> NodeFiles<T> {
    pub fn new(nodes: impl IntoIterator<Item = T>) -> NodeFiles<T> {
        NodeFiles {
            nodes: nodes
                .into_iter()
                .map(|t| (t.node().to_string(), t))
                .collect(),
        }
    }

    /// The transports back, to close them.
    pub fn into_transports(self) -> impl Iterator<Item = T> {
        self.nodes.into_values()
    }

    fn node(&self, node: &str) -> Result<&T, SeamError> {
        self.nodes
            .get(node)
            .ok_or_else(|| SeamError::Transport(format!("{node}: no connection to this node")))
    }
}

fn transport(e: TransportError) -> SeamError {
    match e {
        TransportError::Timeout { what, after, .. } => SeamError::Timeout { what, after },
        e => SeamError::Transport(e.to_string()),
    }
}

/// A script that failed: its stderr, which names the file and the cause (`No space left on
/// device`), as the node's error about `path`.
fn failed(node: &str, path: &str, out: &CommandOutput) -> SeamError {
    let stderr = out.stderr_text();
    let detail = stderr.trim();
    SeamError::File {
        node: node.to_string(),
        path: path.to_string(),
        detail: if detail.is_empty() {
            format!("exit status {:?}", out.status)
        } else {
            detail.to_string()
        },
    }
}

/// `MODE UID GID` as `stat -c '%a %u %g'` prints it.
fn parse_stat(line: &str) -> Option<(u32, u32, u32)> {
    let mut w = line.split_whitespace();
    let mode = u32::from_str_radix(w.next()?, 8).ok()?;
    Some((mode, w.next()?.parse().ok()?, w.next()?.parse().ok()?))
}

/// Reads a file: `absent`, or its stat line then its base64.
pub fn read_script(path: &str) -> String {
    let p = shell_quote(path);
    format!(
        "set -e; p={p}; if [ ! -e \"$p\" ]; then echo absent; exit 0; fi\nstat -c '%a %u %g' -- \"$p\"; base64 < \"$p\"\n"
    )
}

/// Writes stdin to a temporary file beside `path`, gives it the mode and owner, fsyncs it,
/// renames it over `path` and fsyncs the directory. A failure leaves `path` as it was.
pub fn write_script(path: &str, file: &FileState) -> String {
    let p = shell_quote(path);
    format!(
        "set -e; p={p}; d=$(dirname -- \"$p\"); t=$(mktemp \"$d/.hactl.XXXXXX\")\n\
         trap 'rm -f \"$t\"' EXIT\n\
         cat > \"$t\"; chown {uid}:{gid} \"$t\"; chmod {mode:o} \"$t\"; sync \"$t\"\n\
         mv -f \"$t\" \"$p\"; trap - EXIT; sync \"$d\"\n",
        uid = file.uid,
        gid = file.gid,
        mode = file.mode,
    )
}

/// Copies `path` (mode, owner and times kept) to `to`, through a temporary name and fsynced,
/// then prints the copy's stat line and SHA-256.
pub fn backup_script(path: &str, to: &str) -> String {
    let (p, b) = (shell_quote(path), shell_quote(to));
    format!(
        "set -e; p={p}; b={b}; d=$(dirname -- \"$b\"); mkdir -p -m 700 \"$d\"\n\
         cp -p -- \"$p\" \"$b.tmp\"; sync \"$b.tmp\"; mv -f \"$b.tmp\" \"$b\"; sync \"$d\"\n\
         stat -c '%a %u %g' -- \"$b\"; sha256sum < \"$b\"\n"
    )
}

/// Puts the backup back over its file if it still has the recorded SHA-256 (exit 3 if not),
/// atomically, mode and owner as recorded.
pub fn restore_script(b: &Backup) -> String {
    let (p, c) = (shell_quote(&b.path), shell_quote(&b.backup_path));
    let want = b.sha256.trim_start_matches("sha256:");
    format!(
        "set -e; p={p}; c={c}; d=$(dirname -- \"$p\")\n\
         h=$(sha256sum < \"$c\" | cut -d' ' -f1); if [ \"$h\" != {want} ]; then echo \"sha256:$h\"; exit 3; fi\n\
         t=$(mktemp \"$d/.hactl.XXXXXX\"); trap 'rm -f \"$t\"' EXIT\n\
         cat -- \"$c\" > \"$t\"; chown {uid}:{gid} \"$t\"; chmod {mode:o} \"$t\"; sync \"$t\"\n\
         mv -f \"$t\" \"$p\"; trap - EXIT; sync \"$d\"\n",
        uid = b.uid,
        gid = b.gid,
        mode = b.mode,
    )
}

impl<T: NodeTransport> NodeOps for NodeFiles<T> {
    async fn read_file(&self, node: &str, path: &str) -> Result<Option<FileState>, SeamError> {
        let out = self
            .node(node)?
            .run(&read_script(path))
            .await
            .map_err(transport)?;
        if !out.success() {
            return Err(failed(node, path, &out));
        }
        let text = out.stdout_text();
        let (first, rest) = text.split_once('\n').unwrap_or((text.as_str(), ""));
        if first.trim() == "absent" {
            return Ok(None);
        }
        let bad = |what: &str| SeamError::File {
            node: node.into(),
            path: path.into(),
            detail: format!("unexpected answer from the node ({what})"),
        };
        let (mode, uid, gid) = parse_stat(first).ok_or_else(|| bad("stat"))?;
        let b64: String = rest.split_whitespace().collect();
        let content = STANDARD.decode(b64).map_err(|_| bad("base64"))?;
        Ok(Some(FileState {
            content,
            mode,
            uid,
            gid,
        }))
    }

    async fn write_file(&self, node: &str, path: &str, file: &FileState) -> Result<(), SeamError> {
        let out = self
            .node(node)?
            .run_with_input(&write_script(path, file), &file.content)
            .await
            .map_err(transport)?;
        if !out.success() {
            return Err(failed(node, path, &out));
        }
        Ok(())
    }

    async fn backup(&self, node: &str, run: &str, path: &str) -> Result<Backup, SeamError> {
        let to = backup_path(run, path);
        let out = self
            .node(node)?
            .run(&backup_script(path, &to))
            .await
            .map_err(transport)?;
        if !out.success() {
            return Err(failed(node, path, &out));
        }
        let text = out.stdout_text();
        let mut lines = text.lines();
        let bad = || SeamError::File {
            node: node.into(),
            path: to.clone(),
            detail: "unexpected answer from the node (stat, sha256sum)".into(),
        };
        let (mode, uid, gid) = lines.next().and_then(parse_stat).ok_or_else(bad)?;
        let hash = lines
            .next()
            .and_then(|l| l.split_whitespace().next())
            .filter(|h| h.len() == 64)
            .ok_or_else(bad)?;
        Ok(Backup {
            node: node.into(),
            path: path.into(),
            backup_path: to.clone(),
            sha256: format!("sha256:{hash}"),
            mode,
            uid,
            gid,
        })
    }

    async fn restore(&self, backup: &Backup) -> Result<(), SeamError> {
        let out = self
            .node(&backup.node)?
            .run(&restore_script(backup))
            .await
            .map_err(transport)?;
        match out.status {
            Some(0) => Ok(()),
            Some(3) => Err(SeamError::BackupChanged {
                node: backup.node.clone(),
                backup_path: backup.backup_path.clone(),
                expected: backup.sha256.clone(),
                found: out.stdout_text().trim().to_string(),
            }),
            _ => Err(failed(&backup.node, &backup.path, &out)),
        }
    }

    async fn run(&self, node: &str, argv: &[String]) -> Result<CommandResult, SeamError> {
        let script: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
        let out = self
            .node(node)?
            .run(&script.join(" "))
            .await
            .map_err(transport)?;
        Ok(CommandResult {
            status: out.status,
            stdout: out.stdout_text(),
            stderr: out.stderr_text(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_and_scripts_quote_paths() {
        assert_eq!(parse_stat("600 0 0\n"), Some((0o600, 0, 0)));
        assert_eq!(parse_stat("644 1000 100"), Some((0o644, 1000, 100)));
        assert_eq!(parse_stat("absent"), None);
        let s = write_script(
            "/etc/kubernetes/it's.conf",
            &FileState {
                content: b"secret".to_vec(),
                mode: 0o600,
                uid: 0,
                gid: 0,
            },
        );
        assert!(s.contains("p='/etc/kubernetes/it'\\''s.conf'"), "{s}");
        assert!(s.contains("chmod 600"), "{s}");
        assert!(
            !s.contains("secret"),
            "content goes on stdin, never in the script"
        );
    }
}
