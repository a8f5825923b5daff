//! `hactl lab up` and `hactl lab down`: build the lab from a plan's topology, record every
//! process it starts in `lab.json`, and stop exactly those.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::components::Pace;
use super::control::{self, Request, Response};
use super::etcd::EtcdClient;
use super::faults::isolation;
use super::node::{self, ProcessRecord};
use super::state::LabState;
use super::{LabDir, LabError, LabSpec};

/// What `lab up` needs besides the plan.
pub struct UpOptions {
    pub plan_path: PathBuf,
    pub plan_text: String,
    pub spec: LabSpec,
    pub ssh_port: u16,
    /// How long to wait for every joined node to be Ready.
    pub ready_timeout: Duration,
    /// See `LabState::kubeadm_etcd_timeout_secs`.
    pub kubeadm_etcd_timeout: Option<Duration>,
    /// See `LabState::pace`.
    pub pace: Pace,
}

/// Builds and starts the lab; on failure, stops what it started and says where the logs are.
pub async fn up(lab: &LabDir, opts: UpOptions) -> Result<String, LabError> {
    node::check_host()?;
    refuse_running_lab(lab)?;
    check_addresses(&opts.spec, opts.ssh_port)?;
    let started = Instant::now();
    let exe = std::env::current_exe()
        .map_err(|e| LabError::msg(format!("cannot find the hactl binary: {e}")))?;
    let mut state = LabState {
        spec: opts.spec.clone(),
        ssh_port: opts.ssh_port,
        exe: exe.clone(),
        processes: vec![],
        isolation: None,
        kubeadm_etcd_timeout_secs: opts.kubeadm_etcd_timeout.map(|d| d.as_secs()),
        pace: opts.pace,
    };
    let result = build(lab, &opts, &mut state).await;
    match result {
        Ok(()) => Ok(summary(lab, &state, started.elapsed())),
        Err(e) => {
            // Nothing half-started stays behind; lab.json keeps the record until then.
            down_state(lab, &state);
            if let Some(iso) = &state.isolation {
                isolation::teardown(iso);
            }
            Err(e)
        }
    }
}

async fn build(lab: &LabDir, opts: &UpOptions, state: &mut LabState) -> Result<(), LabError> {
    let spec = &opts.spec;
    // A previous lab's files would mix with this one's.
    for d in [lab.root().join("nodes"), lab.root().join("lab")] {
        if d.exists() {
            fs::remove_dir_all(&d).map_err(|e| LabError::io(&d, "remove", e))?;
        }
    }
    node::mkdir(&lab.root().join("lab"))?;
    state.write(lab)?;

    let generated = super::files::generate(spec)
        .map_err(|e| LabError::msg(format!("cannot generate kubeadm's files: {e}")))?;
    for n in &spec.nodes {
        let files = generated
            .nodes
            .get(&n.name)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        node::write_node_tree(lab, n, files)?;
        node::write_shims(lab, spec, n, &state.exe)?;
    }
    ssh_material(lab, spec, opts.ssh_port)?;
    let admin = lab.node_path(&spec.init_node().name, "/etc/kubernetes/admin.conf");
    let admin_text = fs::read(&admin).map_err(|e| LabError::io(&admin, "read", e))?;
    node::write_file(&lab.admin_conf(), &admin_text, 0o600)?;
    node::write_file(
        &lab.hactl_toml(),
        hactl_toml(lab, &opts.plan_path, &opts.plan_text, opts.ssh_port)?.as_bytes(),
        0o644,
    )?;

    // Ensure the mount points exist on the host: a bind mount needs a target.
    for m in super::NODE_MOUNTS {
        let p = Path::new(m);
        if !p.exists() {
            node::mkdir(p)?;
        }
    }
    node::mkdir(Path::new("/run/sshd"))?;

    // Before any node process starts: each node's processes live in its cgroup.
    let isolation = isolation::setup(lab, spec);
    state.isolation = Some(isolation.clone());
    state.write(lab)?;
    for n in &spec.nodes {
        let cgroup = isolation
            .cgroups
            .as_ref()
            .and_then(|c| c.nodes.get(&n.name));
        let rec = node::start_sshd_in(lab, n, opts.ssh_port, cgroup.map(PathBuf::as_path))?;
        state.processes.push(rec);
        state.write(lab)?;
    }
    state.processes.push(node::start_haproxy(lab, spec)?);
    state.write(lab)?;
    state.processes.push(start_daemon(lab, &state.exe)?);
    state.write(lab)?;

    wait_for_etcd(lab, spec).await?;
    let etcd = EtcdClient::for_lab(lab, spec)?;
    super::apiserver::seed(&etcd, &generated.objects)
        .await
        .map_err(|e| LabError::msg(format!("cannot store the cluster's objects in etcd: {e}")))?;
    wait_for_ready(lab, opts.ready_timeout).await
}

fn refuse_running_lab(lab: &LabDir) -> Result<(), LabError> {
    if let Ok(state) = LabState::read(lab) {
        let live = state.live_processes();
        if !live.is_empty() {
            return Err(LabError::msg(format!(
                "a lab is already running in {} ({} processes, e.g. {} pid {}); stop it with `hactl lab down --dir {}`",
                lab.root().display(),
                live.len(),
                live[0].name,
                live[0].pid,
                lab.root().display()
            )));
        }
    }
    Ok(())
}

/// Every address the lab will listen on must be free: another lab, or the machine's own
/// sshd on a wildcard address, would take the connections meant for this one.
fn check_addresses(spec: &LabSpec, ssh_port: u16) -> Result<(), LabError> {
    let mut taken = vec![];
    for n in &spec.nodes {
        if node::port_taken(n.address, ssh_port) {
            taken.push(format!("{}:{ssh_port} (node {}'s sshd)", n.address, n.name));
        }
        if n.control_plane {
            for port in [6443, 2379, 2380] {
                if node::port_taken(n.address, port) {
                    taken.push(format!("{}:{port} (node {})", n.address, n.name));
                }
            }
        }
    }
    for a in &spec.endpoint.addresses {
        if node::port_taken(*a, spec.endpoint.port) {
            taken.push(format!("{a}:{} (the load balancer)", spec.endpoint.port));
        }
    }
    if taken.is_empty() {
        Ok(())
    } else {
        Err(LabError::msg(format!(
            "something already listens where the lab must: {}; stop it (another lab: `hactl lab down --dir …`), \
             or give the lab other loopback addresses in the plan (or `[ssh] port` for sshd)",
            taken.join(", ")
        )))
    }
}

/// The lab's SSH key, every node's host key, `known_hosts`, `ssh_config`.
fn ssh_material(lab: &LabDir, spec: &LabSpec, port: u16) -> Result<(), LabError> {
    let key = lab.ssh_key();
    let _ = fs::remove_file(&key);
    let _ = fs::remove_file(key.with_extension("pub"));
    node::ssh_keygen(&key, "hactl-lab")?;
    let public = key.with_extension("pub");
    let public_text = fs::read_to_string(&public).map_err(|e| LabError::io(&public, "read", e))?;
    node::write_file(
        &lab.lab_file("authorized_keys"),
        public_text.as_bytes(),
        0o600,
    )?;
    let mut known = String::new();
    let mut config = String::from(
        "# hactl lab: how to reach the lab's nodes (ssh -F this-file NODE, by name or address)\n",
    );
    for n in &spec.nodes {
        let hk = node::host_key(lab, &n.name);
        node::ssh_keygen(&hk, &format!("root@{}", n.name))?;
        let hk_pub = hk.with_extension("pub");
        let text = fs::read_to_string(&hk_pub).map_err(|e| LabError::io(&hk_pub, "read", e))?;
        known.push_str(&node::known_hosts_line(n, port, &text));
        let _ = write!(
            config,
            "\nHost {} {}\n  HostName {}\n  Port {port}\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n",
            n.name,
            n.address,
            n.address,
            key.display(),
            lab.known_hosts().display()
        );
    }
    node::write_file(&lab.known_hosts(), known.as_bytes(), 0o644)?;
    node::write_file(&lab.ssh_config(), config.as_bytes(), 0o644)
}

/// The plan with the `[ssh]` and `[cluster]` settings that reach this lab, as absolute paths.
fn hactl_toml(
    lab: &LabDir,
    plan_path: &Path,
    plan_text: &str,
    port: u16,
) -> Result<String, LabError> {
    let mut doc: toml::Table = plan_text
        .parse()
        .map_err(|e| LabError::msg(format!("{}: {e}", plan_path.display())))?;
    let table = |doc: &mut toml::Table, name: &str| -> Result<toml::Table, LabError> {
        match doc.remove(name) {
            None => Ok(toml::Table::new()),
            Some(toml::Value::Table(t)) => Ok(t),
            Some(_) => Err(LabError::msg(format!(
                "{}: `{name}` must be a table",
                plan_path.display()
            ))),
        }
    };
    let mut ssh = table(&mut doc, "ssh")?;
    let s = |p: PathBuf| toml::Value::String(p.to_string_lossy().into_owned());
    ssh.insert("user".into(), toml::Value::String("root".into()));
    ssh.insert("identity_file".into(), s(lab.ssh_key()));
    ssh.insert("config_file".into(), s(lab.ssh_config()));
    if port != 22 {
        ssh.insert("port".into(), toml::Value::Integer(port.into()));
    }
    doc.insert("ssh".into(), toml::Value::Table(ssh));
    let mut cluster = table(&mut doc, "cluster")?;
    cluster.insert("kubeconfig".into(), s(lab.admin_conf()));
    doc.insert("cluster".into(), toml::Value::Table(cluster));
    let body = toml::to_string(&doc).map_err(|e| LabError::msg(e.to_string()))?;
    Ok(format!(
        "# Written by `hactl lab up` from {}: the plan, with the [ssh] and [cluster] settings\n# that reach the lab in {}.\n{body}",
        plan_path.display(),
        lab.root().display()
    ))
}

fn start_daemon(lab: &LabDir, exe: &Path) -> Result<ProcessRecord, LabError> {
    let log_path = lab.log_dir().join("daemon.log");
    let mut cmd = Command::new(exe);
    cmd.args(["lab", "daemon", "--dir"]).arg(lab.root());
    let pid = node::spawn_detached(lab, &mut cmd, "daemon.log")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while control::call(lab, &Request::Ping, Duration::from_secs(1)).is_err() {
        if Instant::now() > deadline {
            return Err(LabError::msg(format!(
                "the lab's supervisor did not start; see {}",
                log_path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    ProcessRecord::of("daemon", pid).map_err(|e| LabError::io(Path::new("/proc"), "read", e))
}

async fn wait_for_etcd(lab: &LabDir, spec: &LabSpec) -> Result<(), LabError> {
    let etcd = EtcdClient::for_lab(lab, spec)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match etcd.member_list().await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(LabError::msg(format!(
                    "etcd on {} did not answer within 20 s: {e}; see {}",
                    spec.init_node().name,
                    lab.log_dir().display()
                )));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Waits until the lab is healthy as `lab status` sees it: every joined node (the init node
/// and the workers) Ready, leases held, kube-proxy running, etcd and the LB healthy.
async fn wait_for_ready(lab: &LabDir, timeout: Duration) -> Result<(), LabError> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match super::status::gather(lab).await {
            Ok(s) if s.healthy => return Ok(()),
            Ok(s) => s.problems.join("; "),
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            return Err(LabError::msg(format!(
                "the lab did not become healthy within {timeout:?} ({last}); see {}",
                lab.log_dir().display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn summary(lab: &LabDir, state: &LabState, took: Duration) -> String {
    let spec = &state.spec;
    let mut s = format!(
        "Lab up in {:.1} s: Kubernetes {} ({}), {} nodes, in {}\n\n",
        took.as_secs_f64(),
        spec.version,
        spec.runtime.as_str(),
        spec.nodes.len(),
        lab.root().display()
    );
    let init = &spec.init_node().name;
    for n in &spec.nodes {
        let what = if &n.name == init {
            "control plane (kubeadm init), Ready"
        } else if n.control_plane {
            "bare machine, ready to join the control plane"
        } else {
            "worker, Ready, pointing at the first control-plane node"
        };
        let _ = writeln!(s, "  {:<8} {:<15} {what}", n.name, n.address.to_string());
    }
    let lb: Vec<String> = spec
        .endpoint
        .addresses
        .iter()
        .map(|a| format!("{a}:{}", spec.endpoint.port))
        .collect();
    let _ = writeln!(
        s,
        "  {:<8} {:<15} haproxy for {} (backends: every control-plane node)\n",
        "lb",
        lb.join(","),
        spec.endpoint.host
    );
    let d = lab.root().display();
    let _ = writeln!(s, "  ssh -F {d}/ssh_config {init}");
    let _ = writeln!(s, "  kubectl --kubeconfig {d}/admin.conf get nodes");
    let _ = writeln!(s, "  hactl plan {d}/hactl.toml");
    let _ = writeln!(s, "  hactl lab status --dir {d}");
    let _ = writeln!(s, "  hactl lab down --dir {d}");
    s
}

/// Stops everything the lab started: asks the supervisor to stop its agents, then stops
/// every recorded process and every process left in a node's namespace.
pub fn down(lab: &LabDir) -> Result<String, LabError> {
    let state = LabState::read(lab)?;
    let live = state.live_processes().len();
    down_state(lab, &state);
    let left: Vec<String> = state
        .live_processes()
        .iter()
        .map(|p| format!("{} (pid {})", p.name, p.pid))
        .collect();
    if !left.is_empty() {
        return Err(LabError::msg(format!(
            "these lab processes did not stop: {}",
            left.join(", ")
        )));
    }
    let leftovers = state
        .isolation
        .as_ref()
        .map(isolation::teardown)
        .unwrap_or_default();
    let mut stopped = state.clone();
    stopped.processes.clear();
    stopped.isolation = None;
    stopped.write(lab)?;
    // Faults end with the lab (its namespaces, and with them a disk-full tmpfs, are gone).
    let _ = fs::remove_file(lab.lab_file("faults.json"));
    if !leftovers.is_empty() {
        return Err(LabError::msg(format!(
            "the lab stopped but left: {}",
            leftovers.join(", ")
        )));
    }
    Ok(format!(
        "Lab in {} is down ({live} processes stopped).\n",
        lab.root().display()
    ))
}

fn down_state(lab: &LabDir, state: &LabState) {
    let daemon_alive = state
        .processes
        .iter()
        .any(|p| p.name == "daemon" && p.is_alive());
    if daemon_alive
        && matches!(
            control::call(lab, &Request::Shutdown, Duration::from_secs(5)),
            Ok(Response::Ok)
        )
    {
        let deadline = Instant::now() + Duration::from_secs(15);
        while state
            .processes
            .iter()
            .any(|p| p.name == "daemon" && p.is_alive())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // The supervisor first (it would restart static pods), then the rest, newest first.
    for p in state.processes.iter().rev().filter(|p| p.name == "daemon") {
        p.stop(Duration::from_secs(3));
    }
    for p in state.processes.iter().rev().filter(|p| p.name != "daemon") {
        if let Some(ns) = p.mnt_ns {
            // Sessions and static pods (etcd) live on in the namespace after sshd; they are
            // swept while the namespace is pinned, so its number cannot meanwhile name another
            // lab's new node (whose sshd the sweep would kill).
            let pin = node::pin_namespace(p.pid, p.start_time, ns);
            p.stop(Duration::from_secs(2));
            if pin.is_some() {
                node::stop_namespace(ns, Duration::from_secs(2));
            }
            drop(pin);
        } else {
            p.stop(Duration::from_secs(2));
        }
    }
    let _ = fs::remove_file(lab.control_socket());
    let _ = fs::remove_file(node::haproxy_socket(lab));
}
