//! The node agent without an API server: static pods from manifests (a real etcd process,
//! the injected kube-apiserver launcher), node commands with real output shapes, and
//! shutdown leaving no process behind. Addresses 127.0.0.66–69.

use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hactl::kubeadm::KubeVersion;
use hactl::lab::components::{
    ApiServerLauncher, BoxFuture, LabTimings, NodeAgent, NodeAgentConfig, NodeReport, Running,
};
use hactl::lab::{LabDir, LabEndpoint, LabNode, LabSpec};
use hactl::observed::ContainerRuntime;

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hactl-lab-comp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

fn spec(node: &LabNode, runtime: ContainerRuntime) -> LabSpec {
    LabSpec {
        cluster_name: "lab".into(),
        endpoint: LabEndpoint {
            host: "k8s-api.lab.internal".into(),
            addresses: vec!["127.0.0.100".parse().expect("ip")],
            port: 6443,
        },
        nodes: vec![node.clone()],
        version: KubeVersion::new(1, 31, 14),
        runtime,
    }
}

fn timings() -> LabTimings {
    LabTimings {
        heartbeat: Duration::from_millis(200),
        crash_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_millis(800),
        ..LabTimings::default()
    }
}

/// Records every launch; fails the first `fail_first` ones.
struct FakeLauncher {
    launches: Arc<Mutex<Vec<String>>>,
    fail_first: usize,
    count: AtomicUsize,
}

/// A node agent for `node` whose API server launches are recorded in `launches`, the first
/// `fail_first` of them failing.
fn start_agent(
    lab: LabDir,
    node: &LabNode,
    runtime: ContainerRuntime,
    launches: Arc<Mutex<Vec<String>>>,
    fail_first: usize,
) -> NodeAgent {
    NodeAgent::start(NodeAgentConfig {
        lab,
        spec: Arc::new(spec(node, runtime)),
        node: node.clone(),
        ns_pid: None,
        timings: timings(),
        apiserver: Arc::new(FakeLauncher {
            launches,
            fail_first,
            count: AtomicUsize::new(0),
        }),
        faults: Default::default(),
    })
}

struct Idle;
impl Running for Idle {
    fn stop(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
    fn exited(&self) -> Option<String> {
        None
    }
}

impl ApiServerLauncher for FakeLauncher {
    fn launch(
        &self,
        _lab: LabDir,
        node: LabNode,
        manifest_yaml: String,
    ) -> BoxFuture<'static, Result<Box<dyn Running>, String>> {
        let n = self.count.fetch_add(1, Ordering::SeqCst);
        self.launches
            .lock()
            .expect("lock")
            .push(format!("{}:{}", node.name, manifest_yaml.len()));
        let fail = n < self.fail_first;
        Box::pin(async move {
            if fail {
                Err("failed to listen on 127.0.0.68:6443: address already in use".to_string())
            } else {
                Ok(Box::new(Idle) as Box<dyn Running>)
            }
        })
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

fn etcd_manifest(data_dir: &Path, client_port: u16, peer_port: u16) -> String {
    // As kubeadm writes it, with plain HTTP so the test needs no PKI; 127.0.0.1 is the node's.
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  labels:\n    component: etcd\n    tier: control-plane\n  name: etcd\n  namespace: kube-system\nspec:\n  containers:\n  - command:\n    - etcd\n    - --name=cp1\n    - --data-dir={}\n    - --listen-client-urls=http://127.0.0.1:{client_port}\n    - --advertise-client-urls=http://127.0.0.1:{client_port}\n    - --listen-peer-urls=http://127.0.0.1:{peer_port}\n    - --initial-advertise-peer-urls=http://127.0.0.1:{peer_port}\n    - --initial-cluster=cp1=http://127.0.0.1:{peer_port}\n    - --listen-metrics-urls=\n    image: registry.k8s.io/etcd:3.5.15-0\n    name: etcd\n",
        data_dir.display()
    )
}

fn free_port(ip: &str) -> u16 {
    let l = std::net::TcpListener::bind((ip, 0)).expect("bind");
    l.local_addr().expect("addr").port()
}

fn pid_alive(pid: u32) -> bool {
    // A zombie is not alive; /proc/PID/stat's third field says.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

fn etcd_health(ip: &str, port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect((ip, port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET /health HTTP/1.0\r\nHost: {ip}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

async fn wait_for<T>(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn argv(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_runs_from_its_manifest_comes_back_after_stopp_and_stops_with_the_agent() {
    let dir = tempdir("etcd");
    let lab = LabDir::new(&dir);
    let ip = "127.0.0.67";
    let node = LabNode {
        name: "cp1".into(),
        address: ip.parse::<IpAddr>().expect("ip"),
        control_plane: true,
    };
    let (client_port, peer_port) = (free_port(ip), free_port(ip));
    write(
        &lab.node_path("cp1", "/etc/kubernetes/manifests/etcd.yaml"),
        &etcd_manifest(&dir.join("etcd-data"), client_port, peer_port),
    );
    let launches = Arc::new(Mutex::new(Vec::new()));
    let agent = start_agent(
        lab.clone(),
        &node,
        ContainerRuntime::Containerd,
        launches.clone(),
        0,
    );

    let first_pid = wait_for("etcd to start", Duration::from_secs(10), async || {
        agent
            .report()
            .await
            .etcd
            .and_then(|e| e.pid.filter(|_| e.running))
    })
    .await;
    assert!(pid_alive(first_pid));
    // The real etcd listens on the node's address, translated from 127.0.0.1.
    let health = wait_for("etcd health", Duration::from_secs(15), async || {
        etcd_health(ip, client_port).filter(|h| h.contains("\"health\":\"true\""))
    })
    .await;
    assert!(health.starts_with("HTTP/1.0 200"), "{health}");

    // The unconfigured kubelet is active and says why it cannot reach an API server.
    let out = agent.exec(argv("systemctl is-active kubelet")).await;
    assert_eq!((out.stdout.as_str(), out.code), ("active\n", 0));
    let report: NodeReport = agent.report().await;
    assert!(report.kubelet.active);
    assert!(
        report
            .kubelet
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("bootstrap-kubelet.conf: no such file or directory")),
        "{:?}",
        report.kubelet
    );

    // crictl shows the sandbox; stopping it brings the pod back with a new process.
    let out = agent.exec(argv("crictl pods --name etcd -q")).await;
    assert_eq!(out.code, 0);
    let ids: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(ids.len(), 1, "{}", out.stdout);
    assert_eq!(ids[0].len(), 64);
    let out = agent
        .exec(vec!["crictl".into(), "stopp".into(), ids[0].into()])
        .await;
    assert_eq!(out.stdout, format!("Stopped sandbox {}\n", ids[0]));
    let second_pid = wait_for("etcd to come back", Duration::from_secs(10), async || {
        agent
            .report()
            .await
            .etcd
            .and_then(|e| e.pid.filter(|p| e.running && *p != first_pid))
    })
    .await;
    assert!(!pid_alive(first_pid), "the stopped etcd process is gone");
    assert!(pid_alive(second_pid));
    let out = agent.exec(argv("crictl pods --name etcd")).await;
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Ready") && l.contains("etcd-cp1")),
        "{}",
        out.stdout
    );
    let out = agent.exec(argv("crictl pods --state ready -q")).await;
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    let pod = agent
        .report()
        .await
        .pods
        .into_iter()
        .find(|p| p.name == "etcd-cp1")
        .expect("etcd pod reported");
    assert_eq!(
        (pod.namespace.as_str(), pod.state.as_str()),
        ("kube-system", "Running")
    );
    assert!(pod.restarts >= 1);

    // systemctl stop leaves containers running, as on a node.
    let out = agent.exec(argv("systemctl stop kubelet")).await;
    assert_eq!(out.code, 0);
    let out = agent.exec(argv("systemctl is-active kubelet")).await;
    assert_eq!((out.stdout.as_str(), out.code), ("inactive\n", 3));
    assert!(pid_alive(second_pid));
    let out = agent.exec(argv("systemctl restart kubelet")).await;
    assert_eq!(out.code, 0);
    let out = agent.exec(argv("systemctl is-active kubelet")).await;
    assert_eq!(out.code, 0);
    assert!(
        launches.lock().expect("lock").is_empty(),
        "no kube-apiserver manifest here"
    );

    agent.shutdown().await;
    assert!(!pid_alive(second_pid), "shutdown kills etcd by its PID");
    let log = std::fs::read_to_string(lab.log_dir().join("etcd-cp1.log")).unwrap_or_default();
    assert!(!log.is_empty(), "etcd's output goes to its log file");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_pod_goes_through_the_launcher_and_crash_loops_while_it_fails() {
    let dir = tempdir("apiserver");
    let lab = LabDir::new(&dir);
    let node = LabNode {
        name: "cp1".into(),
        address: "127.0.0.68".parse().expect("ip"),
        control_plane: true,
    };
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata:\n  labels:\n    component: kube-apiserver\n  name: kube-apiserver\n  namespace: kube-system\nspec:\n  containers:\n  - command:\n    - kube-apiserver\n    - --advertise-address=127.0.0.68\n    - --etcd-servers=https://127.0.0.1:2379\n    image: registry.k8s.io/kube-apiserver:v1.23.17\n    name: kube-apiserver\n";
    write(
        &lab.node_path("cp1", "/etc/kubernetes/manifests/kube-apiserver.yaml"),
        manifest,
    );
    let launches = Arc::new(Mutex::new(Vec::new()));
    let agent = start_agent(
        lab.clone(),
        &node,
        ContainerRuntime::Docker,
        launches.clone(),
        2,
    );
    let crashed = wait_for("a failed launch", Duration::from_secs(5), async || {
        agent
            .report()
            .await
            .pods
            .into_iter()
            .find(|p| p.name == "kube-apiserver-cp1" && p.state == "CrashLoopBackOff")
    })
    .await;
    assert_eq!(
        crashed.last_error.as_deref(),
        Some("failed to listen on 127.0.0.68:6443: address already in use")
    );
    let running = wait_for(
        "the third launch to succeed",
        Duration::from_secs(10),
        async || {
            agent
                .report()
                .await
                .pods
                .into_iter()
                .find(|p| p.name == "kube-apiserver-cp1" && p.state == "Running")
        },
    )
    .await;
    assert_eq!(running.restarts, 2);
    {
        let l = launches.lock().expect("lock");
        assert_eq!(l.len(), 3);
        assert_eq!(
            l[0],
            format!("cp1:{}", manifest.len()),
            "the manifest text is passed as is"
        );
    }

    // A docker-runtime node: dockershim names, and docker kill restarts the pod's container.
    let out = agent
        .exec(argv("docker ps --filter name=k8s_kube-apiserver"))
        .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(lines[0].starts_with("CONTAINER ID   IMAGE"));
    let name = lines[1].rsplit(' ').next().expect("name");
    assert!(
        name.starts_with("k8s_kube-apiserver_kube-apiserver-cp1_kube-system_"),
        "{name}"
    );
    let out = agent.exec(argv(&format!("docker kill {name}"))).await;
    assert_eq!((out.stdout.clone(), out.code), (format!("{name}\n"), 0));
    wait_for(
        "a fourth launch after docker kill",
        Duration::from_secs(5),
        async || (launches.lock().expect("lock").len() == 4).then_some(()),
    )
    .await;
    let out = agent
        .exec(argv("crictl ps -a --name kube-apiserver -q"))
        .await;
    assert!(out.stdout.lines().count() >= 2, "{}", out.stdout);

    let out = agent.exec(argv("docker frobnicate")).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("'frobnicate' is not a docker command"));
    let out = agent.exec(argv("systemctl restart nosuch")).await;
    assert_eq!(out.code, 5);
    assert_eq!(
        out.stderr,
        "Failed to restart nosuch.service: Unit nosuch.service not found.\n"
    );
    agent.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn docker_is_not_installed_on_containerd_nodes() {
    let dir = tempdir("nodocker");
    let node = LabNode {
        name: "w1".into(),
        address: "127.0.0.69".parse().expect("ip"),
        control_plane: false,
    };
    let agent = start_agent(
        LabDir::new(&dir),
        &node,
        ContainerRuntime::Containerd,
        Default::default(),
        0,
    );
    let out = agent.exec(argv("docker ps")).await;
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (127, "bash: docker: command not found\n")
    );
    let out = agent.exec(argv("crictl pods -q")).await;
    assert_eq!((out.code, out.stdout.as_str()), (0, ""));
    agent.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// CLOCK_MONOTONIC in µs, the clock systemd's `*TimestampMonotonic` properties use. Not
/// /proc/uptime: that is CLOCK_BOOTTIME, which also counts time suspended, so the two part
/// on any machine that ever slept.
fn monotonic_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given and nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[tokio::test]
async fn systemctl_show_says_when_the_kubelet_last_became_active() {
    let dir = tempdir("show");
    let node = LabNode {
        name: "w1".into(),
        address: "127.0.0.66".parse().expect("ip"),
        control_plane: false,
    };
    let before_boot = monotonic_us();
    let agent = start_agent(
        LabDir::new(&dir),
        &node,
        ContainerRuntime::Containerd,
        Default::default(),
        0,
    );
    let value = async |agent: &NodeAgent, cmd: &str| -> u64 {
        let out = agent.exec(argv(cmd)).await;
        assert_eq!((out.code, out.stderr.as_str()), (0, ""), "{cmd}");
        out.stdout
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{cmd}: {:?}", out.stdout))
    };
    let show = "systemctl show kubelet -p ActiveEnterTimestampMonotonic --value";

    let out = agent
        .exec(argv(
            "systemctl show kubelet -p ActiveEnterTimestampMonotonic",
        ))
        .await;
    let booted: u64 = out
        .stdout
        .strip_prefix("ActiveEnterTimestampMonotonic=")
        .and_then(|v| v.strip_suffix('\n'))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{:?}", out.stdout));
    assert!(
        booted > 0 && booted >= before_boot,
        "{booted} {before_boot}"
    );
    assert_eq!(
        agent
            .exec(argv(
                "systemctl show kubelet.service --property=ActiveState"
            ))
            .await
            .stdout,
        "ActiveState=active\n"
    );

    tokio::time::sleep(Duration::from_millis(50)).await;
    let t0 = monotonic_us();
    let out = agent.exec(argv("systemctl restart kubelet")).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let t1 = monotonic_us();
    let restarted = value(&agent, show).await;
    assert!(restarted > booted, "{restarted} after {booted}");
    assert!(
        t0 <= restarted && restarted <= t1,
        "{restarted} within [{t0}, {t1}]"
    );

    // Several properties print in systemd's order, whatever order they were asked in; an
    // unknown one prints nothing.
    let out = agent
        .exec(argv(
            "systemctl show kubelet -p ActiveEnterTimestampMonotonic,NoSuchProperty -p ActiveState",
        ))
        .await;
    assert_eq!(
        (out.code, out.stdout.clone()),
        (
            0,
            format!("ActiveState=active\nActiveEnterTimestampMonotonic={restarted}\n")
        )
    );
    println!("systemctl show (active):\n{}", out.stdout);

    // Stopped: as in systemd, the last activation is kept; ActiveState and
    // InactiveEnterTimestamp say it stopped.
    let out = agent.exec(argv("systemctl stop kubelet")).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = agent
        .exec(argv(
            "systemctl show kubelet -p ActiveState -p SubState -p ActiveEnterTimestampMonotonic -p InactiveEnterTimestampMonotonic",
        ))
        .await;
    println!("systemctl show (stopped):\n{}", out.stdout);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[..3],
        [
            "ActiveState=inactive",
            "SubState=dead",
            format!("ActiveEnterTimestampMonotonic={restarted}").as_str()
        ],
        "{}",
        out.stdout
    );
    let stopped: u64 = lines[3]
        .strip_prefix("InactiveEnterTimestampMonotonic=")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(stopped >= restarted && stopped <= monotonic_us());

    // The runtime's unit has been active since the node booted; an unknown unit was never.
    let runtime = value(
        &agent,
        "systemctl show containerd -P ActiveEnterTimestampMonotonic",
    )
    .await;
    assert!(before_boot <= runtime && runtime <= booted + 1_000_000);
    let out = agent
        .exec(argv(
            "systemctl show nosuch -p LoadState -p ActiveState -p ActiveEnterTimestampMonotonic",
        ))
        .await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (
            0,
            "LoadState=not-found\nActiveState=inactive\nActiveEnterTimestampMonotonic=0\n"
        )
    );
    agent.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
