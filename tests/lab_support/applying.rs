//! What apply's lab tests compare: every file under each node's `/etc/kubernetes` (bytes and
//! mode) and the three ConfigMaps' data, before and after, byte for byte.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use super::{HACTL, Lab};

/// Every file under each node's /etc/kubernetes: its bytes and mode.
pub type Files = BTreeMap<PathBuf, (Vec<u8>, u32)>;

pub fn files(lab: &Lab) -> Files {
    fn walk(dir: &Path, out: &mut Files) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                walk(&p, out);
            } else if meta.is_file() {
                let mode = meta.permissions().mode() & 0o7777;
                out.insert(p.clone(), (std::fs::read(&p).unwrap(), mode));
            }
        }
    }
    let mut out = Files::new();
    for node in std::fs::read_dir(lab.dir.join("nodes")).unwrap().flatten() {
        walk(&node.path().join("etc/kubernetes"), &mut out);
    }
    assert!(out.len() > 10, "{} files", out.len());
    out
}

/// The paths whose bytes differ (or exist on one side only).
pub fn changed(a: &Files, b: &Files) -> Vec<String> {
    let mut keys: Vec<&PathBuf> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| k.display().to_string())
        .collect()
}

/// The three ConfigMaps' data, as kubectl reads them.
pub fn configmaps(lab: &Lab) -> Vec<serde_json::Value> {
    hactl::configmaps::KubeadmConfigMap::ALL
        .iter()
        .map(|cm| {
            lab.kubectl_json(&["get", "configmap", "-n", cm.namespace(), cm.name()])["data"].clone()
        })
        .collect()
}

/// Whether hactl's lock, the Lease `kube-system/hactl`, is absent (kubectl's NotFound).
pub fn lease_gone(lab: &Lab) -> bool {
    let out = lab.kubectl(&["get", "lease", "-n", "kube-system", "hactl"]);
    String::from_utf8_lossy(&out.stderr).contains("NotFound")
}

/// A command's exit code and output, with miette's folding of long messages (at 80 columns)
/// undone so that a test can look for a phrase.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr).replace("\n  │ ", " ")
    )
}

/// `hactl ARGS` on a terminal (the real `script` gives it a pty): what the test writes to the
/// child's stdin is typed there, Ctrl-C (`\x03`) included; the output comes back on its stdout.
pub fn on_terminal(args: &[&str]) -> Child {
    Command::new("script")
        // `exec`: a shell left waiting (dash, where SHELL is unset, as in CI) would take the
        // terminal's SIGINT itself and die of it, and `script` would report 130.
        .args([
            "-qec",
            &format!("exec {HACTL} {}", args.join(" ")),
            "/dev/null",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}
