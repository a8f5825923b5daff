//! The lab's real processes: one OpenSSH `sshd` per node in its own mount and UTS namespace,
//! and `haproxy` in front of the API servers; each recorded by PID (with its start time, so a
//! recycled PID is never signalled) and stopped by that record, never by name.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::files::NodeFile;
use super::{LabDir, LabError, LabNode, LabSpec, NODE_MOUNTS};

/// A process the lab started: enough to find it again and to be sure it is the same one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// `sshd-cp1`, `haproxy`, `daemon`.
    pub name: String,
    pub pid: i32,
    /// Field 22 of /proc/PID/stat: tells a recycled PID from ours.
    pub start_time: u64,
    /// The mount namespace (inode of /proc/PID/ns/mnt) of a node's sshd: every process left
    /// in it (sessions, etcd) belongs to that node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mnt_ns: Option<u64>,
}

impl ProcessRecord {
    pub fn of(name: &str, pid: i32) -> io::Result<ProcessRecord> {
        Ok(ProcessRecord {
            name: name.to_string(),
            pid,
            start_time: start_time(pid)?,
            mnt_ns: None,
        })
    }

    /// The same process, still running (a zombie counts as gone).
    pub fn is_alive(&self) -> bool {
        process_stat(self.pid)
            .is_some_and(|(state, start)| state != 'Z' && start == self.start_time)
    }

    /// SIGTERM, then SIGKILL after `grace`; a no-op when the process is gone or not ours.
    pub fn stop(&self, grace: Duration) {
        signal_and_wait(self.pid, self.start_time, grace);
    }
}

fn signal_and_wait(pid: i32, start: u64, grace: Duration) {
    let ours = |pid| process_stat(pid).is_some_and(|(s, t)| s != 'Z' && t == start);
    let Some(p) = rustix::process::Pid::from_raw(pid) else {
        return;
    };
    if !ours(pid) {
        return;
    }
    let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !ours(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if ours(pid) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        let deadline = Instant::now() + Duration::from_secs(2);
        while ours(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// (state, start time) from /proc/PID/stat; the command name may hold spaces and parens, so
/// fields are counted after the last `)`.
fn process_stat(pid: i32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); start time is field 22.
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

fn start_time(pid: i32) -> io::Result<u64> {
    process_stat(pid)
        .map(|(_, t)| t)
        .ok_or_else(|| io::Error::other(format!("process {pid} is gone")))
}

/// The mount namespace inode of a process.
pub fn mount_namespace(pid: i32) -> Option<u64> {
    let link = fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()?;
    let s = link.to_str()?;
    s.strip_prefix("mnt:[")?.strip_suffix(']')?.parse().ok()
}

/// Keeps the mount namespace `ns` of the process `pid` (started at `start`) alive while the
/// handle is held; `None` when that process is gone or is not in `ns`. A namespace's number is
/// only unique while it lives: once its last process exits the kernel may give the number to a
/// new namespace (another lab's node starting beside this one), so a sweep by number is safe
/// only while the namespace is pinned.
pub fn pin_namespace(pid: i32, start: u64, ns: u64) -> Option<fs::File> {
    use std::os::unix::fs::MetadataExt;
    if !process_stat(pid).is_some_and(|(s, t)| s != 'Z' && t == start) {
        return None;
    }
    let file = fs::File::open(format!("/proc/{pid}/ns/mnt")).ok()?;
    (file.metadata().ok()?.ino() == ns).then_some(file)
}

/// Stops every process in the mount namespace `ns` (a node's sessions and static pods). The
/// caller keeps `ns` alive meanwhile (a live member, or [`pin_namespace`]).
pub fn stop_namespace(ns: u64, grace: Duration) {
    stop_namespace_except(ns, 0, grace)
}

/// `stop_namespace`, sparing `keep` (the node's sshd, which holds the namespace).
pub fn stop_namespace_except(ns: u64, keep: i32, grace: Duration) {
    if Some(ns) == mount_namespace(std::process::id() as i32) {
        // Never the host's own namespace.
        return;
    }
    let Ok(entries) = fs::read_dir("/proc") else {
        return;
    };
    let members: Vec<(i32, u64)> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != keep && mount_namespace(*pid) == Some(ns))
        .filter_map(|pid| Some((pid, start_time(pid).ok()?)))
        .collect();
    // All at once: a session's shell would otherwise outlive its sshd child for `grace`.
    let threads: Vec<_> = members
        .into_iter()
        .map(|(pid, start)| std::thread::spawn(move || signal_and_wait(pid, start, grace)))
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

/// What `hactl lab` needs from the machine, checked before anything starts.
pub fn check_host() -> Result<(), LabError> {
    if !rustix::process::geteuid().is_root() {
        return Err(LabError::msg(
            "hactl lab needs root: it runs one sshd per node in its own mount namespace \
             (unshare, mount --bind) and binds port 22 on loopback addresses; run it with sudo or as root",
        ));
    }
    let needed = [
        ("/usr/sbin/sshd", "openssh-server"),
        ("/usr/bin/ssh-keygen", "openssh-client"),
        ("/usr/bin/etcd", "etcd-server"),
        ("/usr/bin/etcdctl", "etcd-client"),
        ("/usr/sbin/haproxy", "haproxy"),
        ("/usr/bin/unshare", "util-linux"),
        ("/usr/bin/nsenter", "util-linux"),
    ];
    let missing: Vec<String> = needed
        .iter()
        .filter(|(path, _)| !Path::new(path).exists())
        .map(|(path, pkg)| format!("{path} (Debian package {pkg})"))
        .collect();
    if !missing.is_empty() {
        let pkgs: Vec<&str> = needed
            .iter()
            .filter(|(p, _)| !Path::new(p).exists())
            .map(|(_, pkg)| *pkg)
            .collect();
        return Err(LabError::msg(format!(
            "hactl lab needs programs this machine lacks: {}; install them with `apt-get install {}`",
            missing.join(", "),
            pkgs.join(" ")
        )));
    }
    Ok(())
}

/// Writes a node's files under `DIR/nodes/<node>` and makes sure every node mount exists.
pub fn write_node_tree(lab: &LabDir, node: &LabNode, files: &[NodeFile]) -> Result<(), LabError> {
    let root = lab.node_root(&node.name);
    for m in NODE_MOUNTS {
        let p = root.join(m.trim_start_matches('/'));
        if super::NODE_FILE_MOUNTS.contains(m) {
            if let Some(parent) = p.parent() {
                mkdir(parent)?;
            }
        } else {
            mkdir(&p)?;
        }
    }
    super::files::write_node_files(lab, &node.name, files)
        .map_err(|e| LabError::io(&root, "write the node's files under", e))?;
    // This machine's users, with root's home the node's own.
    let home = root.join("root");
    mkdir(&home)?;
    fs::set_permissions(&home, fs::Permissions::from_mode(0o700))
        .map_err(|e| LabError::io(&home, "set the mode of", e))?;
    let passwd = fs::read_to_string("/etc/passwd")
        .map_err(|e| LabError::io(Path::new("/etc/passwd"), "read", e))?;
    write_file(
        &lab.node_path(&node.name, "/etc/passwd"),
        node_passwd(&passwd, &home).as_bytes(),
        0o644,
    )?;
    write_file(
        &lab.node_path(&node.name, "/etc/shadow"),
        node_shadow(&passwd).as_bytes(),
        0o600,
    )?;
    let hosts = lab.node_path(&node.name, "/etc/hosts");
    if !hosts.exists() {
        write_file(
            &hosts,
            format!("127.0.0.1\tlocalhost\n{}\t{}\n", node.address, node.name).as_bytes(),
            0o644,
        )?;
    }
    Ok(())
}

/// `/etc/passwd` with root's home directory replaced by `home`.
fn node_passwd(passwd: &str, home: &Path) -> String {
    passwd
        .lines()
        .map(|line| {
            let mut fields: Vec<&str> = line.split(':').collect();
            let home = home.to_string_lossy();
            if fields.first() == Some(&"root") && fields.len() == 7 {
                fields[5] = &home;
                fields.join(":")
            } else {
                line.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect()
}

/// A shadow file for the node's users, none with a password (`*`: key login only). The node's
/// own, so that PAM's account check (sudo's) knows its users, and this machine's password
/// hashes stay where they are.
fn node_shadow(passwd: &str) -> String {
    passwd
        .lines()
        .filter_map(|line| line.split(':').next().filter(|n| !n.is_empty()))
        .map(|name| format!("{name}:*:20000:0:99999:7:::\n"))
        .collect()
}

pub fn mkdir(p: &Path) -> Result<(), LabError> {
    fs::create_dir_all(p).map_err(|e| LabError::io(p, "create the directory", e))
}

pub fn write_file(p: &Path, bytes: &[u8], mode: u32) -> Result<(), LabError> {
    fs::write(p, bytes).map_err(|e| LabError::io(p, "write", e))?;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .map_err(|e| LabError::io(p, "chmod", e))
}

/// The node's stand-ins for `systemctl`, `crictl`, `docker`, `kubeadm`, `kubelet`: scripts in
/// the node's `/usr/local/sbin` that hand the command to the supervisor.
pub fn write_shims(
    lab: &LabDir,
    spec: &LabSpec,
    node: &LabNode,
    exe: &Path,
) -> Result<(), LabError> {
    let dir = lab.node_path(&node.name, "/usr/local/sbin");
    mkdir(&dir)?;
    let mut tools = vec!["systemctl", "crictl", "kubeadm", "kubelet"];
    if spec.runtime == crate::observed::ContainerRuntime::Docker {
        tools.push("docker");
    }
    for tool in tools {
        let script = format!(
            "#!/bin/sh\n# hactl lab: {tool} on node {node}, run by the lab's supervisor.\nexec {exe} lab exec --dir {dir} --node {node} -- {tool} \"$@\"\n",
            exe = shell_quote(&exe.to_string_lossy()),
            dir = shell_quote(&lab.root().to_string_lossy()),
            node = node.name,
        );
        write_file(&dir.join(tool), script.as_bytes(), 0o755)?;
    }
    Ok(())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Generates an ed25519 key pair with the real `ssh-keygen`.
pub fn ssh_keygen(path: &Path, comment: &str) -> Result<(), LabError> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::io(Path::new("ssh-keygen"), "run", e))?;
    if !out.status.success() {
        return Err(LabError::msg(format!(
            "ssh-keygen failed for {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// sshd's configuration for one node: key-only root login, its own host key, on its address.
pub fn sshd_config(lab: &LabDir, node: &LabNode, port: u16) -> String {
    format!(
        "# hactl lab: sshd of node {name}\n\
         ListenAddress {listen}\n\
         HostKey {hostkey}\n\
         PidFile none\n\
         # The lab's key for root; other users' own, as on any machine.\n\
         AuthorizedKeysFile {auth} .ssh/authorized_keys\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PermitRootLogin prohibit-password\n\
         UsePAM no\n\
         # The lab directory may sit under /tmp, which StrictModes refuses.\n\
         StrictModes no\n\
         # hactl multiplexes many commands over one connection; labs have many nodes.\n\
         MaxSessions 100\n\
         MaxStartups 200:30:400\n\
         Subsystem sftp /usr/lib/openssh/sftp-server\n\
         PrintMotd no\n\
         LogLevel ERROR\n",
        name = node.name,
        listen = SocketAddr::new(node.address, port),
        hostkey = host_key(lab, &node.name).display(),
        auth = lab.lab_file("authorized_keys").display(),
    )
}

pub fn host_key(lab: &LabDir, node: &str) -> PathBuf {
    lab.lab_file(&format!("ssh_host_ed25519_key-{node}"))
}

/// Starts a node's sshd: `unshare --mount --uts`, bind-mount the node's own paths, set its
/// host name, exec sshd. The recorded PID is sshd's (each step execs the next).
pub fn start_sshd(lab: &LabDir, node: &LabNode, port: u16) -> Result<ProcessRecord, LabError> {
    start_sshd_in(lab, node, port, None)
}

/// `start_sshd`; with a `cgroup`, sshd moves into it before it listens, so every session it
/// forks is there too.
pub fn start_sshd_in(
    lab: &LabDir,
    node: &LabNode,
    port: u16,
    cgroup: Option<&Path>,
) -> Result<ProcessRecord, LabError> {
    let conf = lab.lab_file(&format!("sshd-{}.conf", node.name));
    write_file(&conf, sshd_config(lab, node, port).as_bytes(), 0o600)?;
    let mut script = String::from("set -e\n");
    for m in NODE_MOUNTS {
        let src = lab.node_path(&node.name, m);
        let _ = writeln!(
            script,
            "mount --bind {} {}",
            shell_quote(&src.to_string_lossy()),
            m
        );
    }
    let _ = writeln!(script, "hostname {}", node.name);
    let _ = writeln!(
        script,
        "exec /usr/sbin/sshd -D -e -f {}",
        shell_quote(&conf.to_string_lossy())
    );
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--uts",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
    ])
    .arg(&script);
    let pid = spawn_detached(lab, &mut cmd, &format!("sshd-{}.log", node.name))?;
    if let Some(dir) = cgroup {
        super::faults::isolation::join(dir, pid)
            .map_err(|e| LabError::io(dir, "move the node's sshd into the cgroup", e))?;
    }
    let addr = SocketAddr::new(node.address, port);
    wait_for_port(addr, Duration::from_secs(10), || {
        process_stat(pid).is_some_and(|(s, _)| s != 'Z')
    })
    .map_err(|why| {
        LabError::msg(format!(
            "the sshd of node {} did not start listening on {addr}: {why}; see {}",
            node.name,
            lab.log_dir()
                .join(format!("sshd-{}.log", node.name))
                .display()
        ))
    })?;
    let mut rec = ProcessRecord::of(&format!("sshd-{}", node.name), pid)
        .map_err(|e| LabError::io(Path::new("/proc"), "read", e))?;
    rec.mnt_ns = mount_namespace(pid);
    Ok(rec)
}

/// Waits until `addr` accepts TCP, or `alive` says the server died, or the timeout.
pub fn wait_for_port(
    addr: SocketAddr,
    timeout: Duration,
    alive: impl Fn() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if !alive() {
            return Err("the process exited".into());
        }
        if Instant::now() > deadline {
            return Err(format!("nothing listened within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Starts `cmd` in its own process group (a terminal's Ctrl-C does not reach the lab), output
/// to `log/<log_name>`; returns its PID.
pub fn spawn_detached(lab: &LabDir, cmd: &mut Command, log_name: &str) -> Result<i32, LabError> {
    let log = log_file(lab, log_name)?;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(
            log.try_clone()
                .map_err(|e| LabError::io(lab.log_dir().as_path(), "open", e))?,
        )
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| LabError::io(Path::new(&program), "run", e))?;
    Ok(child.id() as i32)
}

fn log_file(lab: &LabDir, name: &str) -> Result<fs::File, LabError> {
    let dir = lab.log_dir();
    mkdir(&dir)?;
    let p = dir.join(name);
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .map_err(|e| LabError::io(&p, "open", e))
}

/// haproxy's configuration: TCP mode, every control-plane node a backend, TLS health checks
/// against `/readyz` as kubeadm's HA guide does.
pub fn haproxy_config(lab: &LabDir, spec: &LabSpec) -> String {
    let mut s = format!(
        "# hactl lab: the load balancer in front of the API servers\n\
         global\n\
         \tstats socket {} mode 600 level admin\n\
         defaults\n\
         \tmode tcp\n\
         \ttimeout connect 2s\n\
         \ttimeout client 1h\n\
         \ttimeout server 1h\n\
         frontend kube-apiserver\n",
        haproxy_socket(lab).display()
    );
    for a in &spec.endpoint.addresses {
        let _ = writeln!(s, "\tbind {}", SocketAddr::new(*a, spec.endpoint.port));
    }
    s.push_str(
        "\tdefault_backend kube-apiserver\n\
         backend kube-apiserver\n\
         \toption httpchk GET /readyz\n\
         \thttp-check expect status 200\n\
         \tbalance roundrobin\n\
         \tdefault-server check check-ssl verify none inter 1s fall 2 rise 1\n",
    );
    for n in spec.nodes.iter().filter(|n| n.control_plane) {
        let _ = writeln!(
            s,
            "\tserver {} {}",
            n.name,
            SocketAddr::new(n.address, 6443)
        );
    }
    s
}

pub fn haproxy_socket(lab: &LabDir) -> PathBuf {
    lab.lab_file("haproxy.sock")
}

pub fn start_haproxy(lab: &LabDir, spec: &LabSpec) -> Result<ProcessRecord, LabError> {
    let conf = lab.lab_file("haproxy.cfg");
    write_file(&conf, haproxy_config(lab, spec).as_bytes(), 0o644)?;
    let mut cmd = Command::new("/usr/sbin/haproxy");
    cmd.arg("-db").arg("-f").arg(&conf);
    let pid = spawn_detached(lab, &mut cmd, "haproxy.log")?;
    for a in &spec.endpoint.addresses {
        let addr = SocketAddr::new(*a, spec.endpoint.port);
        wait_for_port(addr, Duration::from_secs(10), || {
            process_stat(pid).is_some_and(|(s, _)| s != 'Z')
        })
        .map_err(|why| {
            LabError::msg(format!(
                "haproxy did not start listening on {addr}: {why}; see {}",
                lab.log_dir().join("haproxy.log").display()
            ))
        })?;
    }
    ProcessRecord::of("haproxy", pid).map_err(|e| LabError::io(Path::new("/proc"), "read", e))
}

/// One haproxy backend server's state, from `show stat` on its admin socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendState {
    pub server: String,
    /// `UP`, `DOWN`, `MAINT`, … as haproxy says it.
    pub status: String,
    /// haproxy's last check result, e.g. `L7OK` or `L4CON`.
    pub check: String,
}

pub fn haproxy_backends(lab: &LabDir) -> Result<Vec<BackendState>, String> {
    use std::io::{Read, Write};
    let sock = haproxy_socket(lab);
    let mut s = std::os::unix::net::UnixStream::connect(&sock)
        .map_err(|e| format!("haproxy's socket {}: {e}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"show stat\n").map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(parse_show_stat(&out))
}

fn parse_show_stat(csv: &str) -> Vec<BackendState> {
    let mut lines = csv.lines();
    let Some(header) = lines.next() else {
        return vec![];
    };
    let cols: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    let idx = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(px), Some(sv), Some(st), Some(ck)) = (
        idx("pxname"),
        idx("svname"),
        idx("status"),
        idx("check_status"),
    ) else {
        return vec![];
    };
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.get(px) == Some(&"kube-apiserver"))
        .filter(|f| !matches!(f.get(sv), Some(&"FRONTEND") | Some(&"BACKEND") | None))
        .map(|f| BackendState {
            server: f[sv].to_string(),
            status: f.get(st).unwrap_or(&"").to_string(),
            check: f.get(ck).unwrap_or(&"").to_string(),
        })
        .collect()
}

/// A `known_hosts` line for a node: its name and address, as ssh looks them up.
pub fn known_hosts_line(node: &LabNode, port: u16, host_pub: &str) -> String {
    let key: Vec<&str> = host_pub.split_whitespace().take(2).collect();
    let host = |h: String| {
        if port == 22 {
            h
        } else {
            format!("[{h}]:{port}")
        }
    };
    format!(
        "{},{} {}\n",
        host(node.name.clone()),
        host(node.address.to_string()),
        key.join(" ")
    )
}

/// Whether something already listens on `addr` (another lab, or the machine's own sshd on
/// a wildcard address).
pub fn port_taken(addr: IpAddr, port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::new(addr, port), Duration::from_millis(200)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haproxy_stat_lines_become_backend_states() {
        let csv = "# pxname,svname,qcur,status,check_status\n\
                   kube-apiserver,FRONTEND,,OPEN,\n\
                   kube-apiserver,cp1,0,UP,L7OK\n\
                   kube-apiserver,cp2,0,DOWN,L4CON\n\
                   kube-apiserver,BACKEND,0,UP,\n";
        let b = parse_show_stat(csv);
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].server.as_str(), b[0].status.as_str()), ("cp1", "UP"));
        assert_eq!(
            (b[1].server.as_str(), b[1].check.as_str()),
            ("cp2", "L4CON")
        );
    }

    #[test]
    fn our_own_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = std::process::id() as i32;
        let rec = ProcessRecord::of("self", me).unwrap();
        assert!(rec.is_alive());
        let other = ProcessRecord {
            start_time: rec.start_time + 1,
            ..rec
        };
        assert!(!other.is_alive(), "a recycled PID must not count as ours");
    }

    #[test]
    fn known_hosts_lines_name_the_port_when_it_is_not_22() {
        let n = LabNode {
            name: "cp1".into(),
            address: "127.0.0.11".parse().unwrap(),
            control_plane: true,
        };
        assert_eq!(
            known_hosts_line(&n, 22, "ssh-ed25519 AAAA host"),
            "cp1,127.0.0.11 ssh-ed25519 AAAA\n"
        );
        assert_eq!(
            known_hosts_line(&n, 2222, "ssh-ed25519 AAAA host"),
            "[cp1]:2222,[127.0.0.11]:2222 ssh-ed25519 AAAA\n"
        );
    }
}

#[cfg(test)]
mod namespace_and_passwd_tests {
    use super::*;

    #[test]
    fn a_namespace_is_pinned_only_through_its_own_live_process() {
        let pid = std::process::id() as i32;
        let start = start_time(pid).unwrap();
        let ns = mount_namespace(pid).unwrap();
        assert!(pin_namespace(pid, start, ns).is_some());
        // Another process that got the PID, or another namespace with the number: no pin.
        assert!(pin_namespace(pid, start + 1, ns).is_none());
        assert!(pin_namespace(pid, start, ns + 1).is_none());
    }

    #[test]
    fn only_roots_home_changes() {
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n";
        assert_eq!(
            node_passwd(passwd, Path::new("/tmp/lab/nodes/cp1/root")),
            "root:x:0:0:root:/tmp/lab/nodes/cp1/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
        );
        // Every user in the node's shadow, none with a password (nor this machine's hash).
        assert_eq!(
            node_shadow(passwd),
            "root:*:20000:0:99999:7:::\ndaemon:*:20000:0:99999:7:::\n"
        );
    }
}
