//! What makes the network faults real: one cgroup v2 per node (its sshd, hence every ssh
//! session, and its etcd live in it) and one nftables table per lab whose per-node chains
//! hold the rules of the node's active faults (`ssh-down`, `node-down`, `block-port`).
//!
//! `lab up` makes them and records them in `lab.json` (`Isolation`); `lab down` removes
//! exactly those. When the machine lacks cgroup2 or `nft`, the lab still starts and the
//! faults that need them say what to install.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Fault;
use crate::lab::{LabDir, LabSpec};

/// The lab's cgroups and nftables table, as `lab up` made them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Isolation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroups: Option<Cgroups>,
    /// `inet` table name, e.g. `hactl_lab_3f2a9c01d4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nft_table: Option<String>,
    /// The chain of each node in that table.
    #[serde(default)]
    pub chains: BTreeMap<String, String>,
    /// Why cgroups or nftables are missing, one line each.
    #[serde(default)]
    pub missing: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroups {
    /// `/sys/fs/cgroup[/unified]/hactl-lab-<id>`.
    pub parent: PathBuf,
    /// Each node's cgroup directory (a child of `parent`).
    pub nodes: BTreeMap<String, PathBuf>,
    /// What nft's `socket cgroupv2` calls a node cgroup: its path below `/sys/fs/cgroup`.
    pub nft_paths: BTreeMap<String, String>,
    /// The node cgroups' depth in the cgroup2 hierarchy (`socket cgroupv2 level N`).
    pub level: u32,
}

/// A short id unique to the lab directory, for names shared with the whole machine.
pub fn lab_id(lab: &LabDir) -> String {
    let digest = Sha256::digest(lab.root().as_os_str().as_encoded_bytes());
    hex::encode(&digest[..5])
}

/// The cgroup2 mount: (mount point, the mount's root inside the hierarchy).
pub fn cgroup2_mount() -> Option<(PathBuf, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        if fstype != "cgroup2" {
            return None;
        }
        let fields: Vec<&str> = left.split_whitespace().collect();
        let root = fields.get(3)?.to_string();
        let mount = unescape_mountinfo(fields.get(4)?);
        Some((PathBuf::from(mount), root))
    })
}

/// mountinfo writes space, tab, newline and backslash as `\040` etc.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(v) = s
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `cgroup.procs` file of `pid`'s cgroup v2, when there is a cgroup2 mount.
pub fn procs_file_of(pid: u32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let (mount, root) = cgroup2_mount()?;
    // Paths in /proc/PID/cgroup are relative to the mount's root when it is not `/`.
    let rel = path
        .strip_prefix(root.trim_end_matches('/'))
        .unwrap_or(path);
    Some(mount.join(rel.trim_start_matches('/')).join("cgroup.procs"))
}

/// Moves `pid` into the cgroup directory `dir`.
pub fn join(dir: &Path, pid: i32) -> std::io::Result<()> {
    std::fs::write(dir.join("cgroup.procs"), pid.to_string())
}

/// Makes the lab's cgroups and nftables table; what cannot be made is recorded in
/// `missing`, never an error: the lab works without faults.
pub fn setup(lab: &LabDir, spec: &LabSpec) -> Isolation {
    let id = lab_id(lab);
    let mut iso = Isolation::default();
    match make_cgroups(&id, spec) {
        Ok(c) => iso.cgroups = Some(c),
        Err(e) => iso.missing.push(e),
    }
    let table = format!("hactl_lab_{id}");
    let chains: BTreeMap<String, String> = spec
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.clone(), format!("node_{i}")))
        .collect();
    let mut script = format!("add table inet {table}\ndelete table inet {table}\n");
    let _ = writeln!(
        script,
        "table inet {table} {{\n  chain output {{\n    type filter hook output priority filter; policy accept;"
    );
    for c in chains.values() {
        let _ = writeln!(script, "    jump {c}");
    }
    script.push_str("  }\n");
    for c in chains.values() {
        let _ = writeln!(script, "  chain {c} {{\n  }}");
    }
    script.push_str("}\n");
    match nft(&script) {
        Ok(()) => {
            iso.nft_table = Some(table);
            iso.chains = chains;
        }
        Err(e) => iso.missing.push(e),
    }
    if let (Some(table), Some(cg)) = (&iso.nft_table, &mut iso.cgroups) {
        match probe_level(table, cg) {
            Ok(level) => cg.level = level,
            Err(e) => {
                iso.missing.push(e);
                remove_cgroups_under(&cg.parent, Duration::from_secs(1));
                iso.cgroups = None;
            }
        }
    }
    iso
}

/// The node cgroups' level as nft counts it, found by trying: it is their depth from the
/// real cgroup root, which a cgroup namespace (a container) hides. A process in the first
/// node's cgroup sends one SYN; the rule of the right level counts it. This also proves
/// that the kernel matches sockets by cgroup at all.
fn probe_level(table: &str, cg: &Cgroups) -> Result<u32, String> {
    let fail = |why: String| format!("nft cannot match the lab's cgroups ({why})");
    let (Some((node, path)), Some(dir)) = (cg.nft_paths.iter().next(), cg.nodes.values().next())
    else {
        return Err(fail("the lab has no nodes".into()));
    };
    let levels = cg.level..=cg.level + 8;
    let mut script = format!(
        "add chain inet {table} probe {{ type filter hook output priority filter; policy accept; }}\n"
    );
    for l in levels.clone() {
        let _ = writeln!(
            script,
            "add rule inet {table} probe socket cgroupv2 level {l} \"{path}\" ip daddr 127.0.0.1 tcp dport 9 counter"
        );
    }
    nft(&script).map_err(fail)?;
    let knock = Command::new("/bin/sh")
        .args([
            "-c",
            "echo 0 > \"$0\" && exec bash -c '</dev/tcp/127.0.0.1/9' 2>/dev/null",
        ])
        .arg(dir.join("cgroup.procs"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let listed = Command::new("nft")
        .args(["list", "chain", "inet", table, "probe"])
        .output();
    let _ = nft(&format!("delete chain inet {table} probe\n"));
    knock.map_err(|e| fail(format!("cannot run sh: {e}")))?;
    let listed = listed.map_err(|e| fail(e.to_string()))?;
    let text = String::from_utf8_lossy(&listed.stdout);
    text.lines()
        .find_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let after = |w: &str| {
                let i = words.iter().position(|x| *x == w)?;
                words.get(i + 1)?.parse::<u64>().ok()
            };
            (after("packets")? > 0).then_some(after("level")? as u32)
        })
        .ok_or_else(|| fail(format!("a connection from cgroup {node} matched no level")))
}

fn make_cgroups(id: &str, spec: &LabSpec) -> Result<Cgroups, String> {
    let (mount, root) = cgroup2_mount().ok_or_else(|| {
        "no cgroup2 file system is mounted (mount -t cgroup2 none /sys/fs/cgroup)".to_string()
    })?;
    let below = mount.strip_prefix("/sys/fs/cgroup").map_err(|_| {
        format!(
            "cgroup2 is mounted at {}, not under /sys/fs/cgroup where nft looks for cgroups",
            mount.display()
        )
    })?;
    let parent_name = format!("hactl-lab-{id}");
    let parent = mount.join(&parent_name);
    // A crashed lab in the same directory may have left its (empty) cgroups.
    remove_cgroups_under(&parent, Duration::ZERO);
    std::fs::create_dir_all(&parent)
        .map_err(|e| format!("cannot create the cgroup {}: {e}", parent.display()))?;
    let depth = |p: &str| p.split('/').filter(|c| !c.is_empty()).count() as u32;
    let mut cg = Cgroups {
        parent: parent.clone(),
        nodes: BTreeMap::new(),
        nft_paths: BTreeMap::new(),
        level: depth(&root) + 2,
    };
    for n in &spec.nodes {
        let dir = parent.join(&n.name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create the cgroup {}: {e}", dir.display()))?;
        let nft_path = below.join(&parent_name).join(&n.name);
        cg.nft_paths.insert(
            n.name.clone(),
            nft_path
                .to_string_lossy()
                .trim_start_matches('/')
                .to_string(),
        );
        cg.nodes.insert(n.name.clone(), dir);
    }
    Ok(cg)
}

/// Removes `parent` and its child cgroups, retrying while their last processes exit.
fn remove_cgroups_under(parent: &Path, wait: Duration) -> Vec<String> {
    if !parent.exists() {
        return vec![];
    }
    let deadline = Instant::now() + wait;
    loop {
        let mut left = vec![];
        if let Ok(entries) = std::fs::read_dir(parent) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir())
                    && let Err(err) = std::fs::remove_dir(e.path())
                {
                    left.push(format!("{}: {err}", e.path().display()));
                }
            }
        }
        if left.is_empty()
            && let Err(err) = std::fs::remove_dir(parent)
            && parent.exists()
        {
            left.push(format!("{}: {err}", parent.display()));
        }
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Removes the lab's table and cgroups (after its processes stopped); returns what stayed.
pub fn teardown(iso: &Isolation) -> Vec<String> {
    let mut left = vec![];
    if let Some(t) = &iso.nft_table
        && let Err(e) = nft(&format!("delete table inet {t}\n"))
        && !e.contains("No such file or directory")
    {
        left.push(format!("nft table {t}: {e}"));
    }
    if let Some(c) = &iso.cgroups {
        left.extend(remove_cgroups_under(&c.parent, Duration::from_secs(3)));
    }
    left
}

/// Aborts the established TCP connections to `addr:port` (`ss -K`, socket destroy): the
/// rules refuse new connections, this ends the open ones at once on both ends.
pub fn cut_connections(addr: IpAddr, port: u16) {
    let family = if addr.is_ipv4() { "-4" } else { "-6" };
    let _ = Command::new("ss")
        .args([
            "-K",
            "-t",
            family,
            "dst",
            &addr.to_string(),
            "dport",
            "=",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Runs an nft script (one transaction).
fn nft(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft ({e}); install it with `apt-get install nftables`"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(script.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Isolation {
    /// What `fault` needs that the lab lacks, as an error for `hactl lab fault`.
    pub fn check(&self, fault: &Fault) -> Result<(), String> {
        let needs_nft = matches!(
            fault,
            Fault::SshDown | Fault::NodeDown | Fault::BlockPort { .. }
        );
        let needs_cgroups = matches!(fault, Fault::BlockPort { .. });
        if (needs_nft && self.nft_table.is_none()) || (needs_cgroups && self.cgroups.is_none()) {
            let why = if self.missing.is_empty() {
                "the lab was started without them".to_string()
            } else {
                self.missing.join("; ")
            };
            return Err(format!(
                "{} needs nftables and cgroup v2, which this lab lacks ({why}); \
                 install nftables (`apt-get install nftables`), then restart the lab \
                 (`hactl lab down` and `hactl lab up`)",
                fault.name()
            ));
        }
        Ok(())
    }

    /// Replaces the rules of `node` with those of its `active` faults.
    pub fn apply(
        &self,
        spec: &LabSpec,
        ssh_port: u16,
        node: &str,
        active: &[Fault],
    ) -> Result<(), String> {
        let (Some(table), Some(chain)) = (&self.nft_table, self.chains.get(node)) else {
            return Ok(());
        };
        let mut script = format!("flush chain inet {table} {chain}\n");
        for f in active {
            for rule in self.rules(spec, ssh_port, node, f) {
                let _ = writeln!(script, "add rule inet {table} {chain} {rule}");
            }
        }
        nft(&script)
    }

    /// The nft rules that make `fault` real on `node`.
    fn rules(&self, spec: &LabSpec, ssh_port: u16, node: &str, fault: &Fault) -> Vec<String> {
        let Some(me) = spec.node(node) else {
            return vec![];
        };
        let family = |a: &IpAddr| if a.is_ipv4() { "ip" } else { "ip6" };
        let reset = "reject with tcp reset";
        match fault {
            // Connections to the node's sshd, new ones and (at their next packet) open ones.
            Fault::SshDown | Fault::NodeDown => vec![format!(
                "{} daddr {} tcp dport {ssh_port} {reset}",
                family(&me.address),
                me.address
            )],
            Fault::BlockPort { port } => {
                let mut rules = vec![];
                for fam in ["ip", "ip6"] {
                    let others: Vec<String> = spec
                        .nodes
                        .iter()
                        .filter(|n| n.name != node && family(&n.address) == fam)
                        .map(|n| n.address.to_string())
                        .collect();
                    if others.is_empty() {
                        continue;
                    }
                    let to = format!("{fam} daddr {{ {} }} tcp dport {port}", others.join(", "));
                    // The node's processes (sessions, etcd) by their cgroup ...
                    if let Some(c) = &self.cgroups
                        && let Some(p) = c.nft_paths.get(node)
                    {
                        rules.push(format!(
                            "socket cgroupv2 level {} \"{p}\" {to} {reset}",
                            c.level
                        ));
                    }
                    // ... and the supervisor's simulated components, which dial from the
                    // node's address.
                    if family(&me.address) == fam {
                        rules.push(format!("{fam} saddr {} {to} {reset}", me.address));
                    }
                }
                rules
            }
            _ => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::{LabEndpoint, LabNode};

    fn spec() -> LabSpec {
        let node = |name: &str, a: &str| LabNode {
            name: name.into(),
            address: a.parse().unwrap(),
            control_plane: true,
        };
        LabSpec {
            cluster_name: "lab".into(),
            endpoint: LabEndpoint {
                host: "k8s-api.lab.internal".into(),
                addresses: vec!["127.0.13.100".parse().unwrap()],
                port: 6443,
            },
            nodes: vec![
                node("cp1", "127.0.13.11"),
                node("cp2", "127.0.13.12"),
                node("cp3", "127.0.13.13"),
            ],
            version: "1.31.0".parse().unwrap(),
            runtime: crate::observed::ContainerRuntime::Containerd,
        }
    }

    #[test]
    fn block_port_rules_name_the_other_nodes_and_the_nodes_cgroup() {
        let iso = Isolation {
            cgroups: Some(Cgroups {
                parent: "/sys/fs/cgroup/unified/hactl-lab-x".into(),
                nodes: BTreeMap::new(),
                nft_paths: [("cp2".to_string(), "unified/hactl-lab-x/cp2".to_string())].into(),
                level: 2,
            }),
            nft_table: Some("hactl_lab_x".into()),
            ..Default::default()
        };
        let rules = iso.rules(&spec(), 22, "cp2", &Fault::BlockPort { port: 2380 });
        assert_eq!(
            rules,
            vec![
                "socket cgroupv2 level 2 \"unified/hactl-lab-x/cp2\" ip daddr { 127.0.13.11, 127.0.13.13 } tcp dport 2380 reject with tcp reset",
                "ip saddr 127.0.13.12 ip daddr { 127.0.13.11, 127.0.13.13 } tcp dport 2380 reject with tcp reset",
            ]
        );
        assert_eq!(
            iso.rules(&spec(), 2222, "cp1", &Fault::SshDown),
            vec!["ip daddr 127.0.13.11 tcp dport 2222 reject with tcp reset"]
        );
        assert!(iso.rules(&spec(), 22, "cp1", &Fault::DiskFull).is_empty());
    }

    #[test]
    fn faults_that_need_nft_say_what_to_install() {
        let iso = Isolation {
            missing: vec!["cannot run nft (No such file or directory)".into()],
            ..Default::default()
        };
        let err = iso.check(&Fault::SshDown).unwrap_err();
        assert!(err.contains("apt-get install nftables"), "{err}");
        assert!(iso.check(&Fault::DiskFull).is_ok());
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/sys/fs/cgroup"), "/sys/fs/cgroup");
    }
}
