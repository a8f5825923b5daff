//! `hactl lab fault` / `hactl lab heal` (issue 4): every fault has its effect as the real
//! clients (`ssh`, `kubectl`, `curl`) see it, `heal` undoes it, `lab status` lists active
//! faults, and `lab down` removes the lab's nftables table and cgroups whatever is active.
//! These tests need root (CI has it).

mod lab_support;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lab_support::{Lab, node, plan};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn dir(lab: &Lab) -> String {
    lab.dir.to_string_lossy().into_owned()
}

/// The lab's record of what it made for faults (`lab.json`'s `isolation`).
fn isolation(lab: &Lab) -> serde_json::Value {
    let text = std::fs::read_to_string(lab.dir.join("lab.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&text).unwrap();
    state["isolation"].clone()
}

fn nft_tables() -> String {
    let out = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `lab down` leaves neither the table nor the cgroups behind.
fn down_removes(lab: &Lab, iso: &serde_json::Value) {
    let out = lab.down();
    assert!(out.status.success(), "lab down: {}", text(&out));
    let table = iso["nft_table"].as_str().unwrap();
    assert!(
        !nft_tables().contains(table),
        "{table} is left: {}",
        nft_tables()
    );
    let parent = PathBuf::from(iso["cgroups"]["parent"].as_str().unwrap());
    assert!(!parent.exists(), "{} is left", parent.display());
}

/// `bash -c "</dev/tcp/ADDR/PORT"` on `node`: Ok when it connected, Err(stderr) when not.
fn dial(lab: &Lab, node: &str, addr: &str, port: u16) -> Result<(), String> {
    let out = lab.ssh(
        node,
        &format!("bash -c '</dev/tcp/{addr}/{port}' && echo connected"),
    );
    if String::from_utf8_lossy(&out.stdout).contains("connected") {
        Ok(())
    } else {
        Err(text(&out))
    }
}

fn problems(status: &serde_json::Value) -> Vec<String> {
    status["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn ssh_down_and_block_port_refuse_as_a_network_would_and_heal_restores() {
    let lab = Lab::up("faults-net", &plan(13, 2, 1), &[]);
    let iso = isolation(&lab);
    let table = iso["nft_table"].as_str().unwrap().to_string();
    assert!(nft_tables().contains(&table), "{}", nft_tables());
    // The node's etcd runs in the node's cgroup, where its sshd (and every session) is.
    let procs = std::fs::read_to_string(
        PathBuf::from(iso["cgroups"]["nodes"]["cp1"].as_str().unwrap()).join("cgroup.procs"),
    )
    .unwrap();
    let cmdlines: Vec<String> = procs
        .lines()
        .map(|p| std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default())
        .collect();
    assert!(
        cmdlines.iter().any(|c| c.starts_with("etcd\0")),
        "{cmdlines:?}"
    );
    assert!(cmdlines.iter().any(|c| c.contains("sshd")), "{cmdlines:?}");

    // ssh-down: an open session ends, new ones are refused; other nodes are untouched.
    let open = Command::new("ssh")
        .arg("-F")
        .arg(lab.dir.join("ssh_config"))
        .args(["-o", "BatchMode=yes", "cp2", "sleep 20; echo survived"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    lab.fault("cp2", &["ssh-down"]);
    let refused = lab.ssh("cp2", "true");
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("port 22: Connection refused"),
        "{}",
        text(&refused)
    );
    let started = Instant::now();
    let ended = open.wait_with_output_timeout(Duration::from_secs(10));
    assert!(
        started.elapsed() < Duration::from_secs(10) && !text(&ended).contains("survived"),
        "the open session lived on: {}",
        text(&ended)
    );
    assert_eq!(lab.ssh_ok("cp1", "hostname").trim(), "cp1");

    // Status lists the fault, as a problem that makes it exit 1.
    let (status, code) = lab.status();
    assert_eq!(code, 1, "{status:#}");
    assert_eq!(
        node(&status, "cp2")["faults"],
        serde_json::json!(["ssh-down"])
    );
    let line = format!(
        "cp2: fault ssh-down is active; `hactl lab heal --dir {} cp2` undoes it",
        dir(&lab)
    );
    assert!(problems(&status).contains(&line), "{status:#}");
    let text_status = lab.hactl(&["lab", "status", "--dir", &dir(&lab)]);
    assert!(
        text(&text_status).contains(&line) && text(&text_status).contains("FAULT"),
        "{}",
        text(&text_status)
    );
    lab.heal("cp2");
    assert_eq!(lab.ssh_ok("cp2", "hostname").trim(), "cp2");

    // block-port: w1 cannot reach those ports on the other nodes; they still reach w1, and
    // w1 still reaches other ports.
    lab.fault("w1", &["block-port", "2379"]);
    lab.fault("w1", &["block-port", "6443"]);
    let err = dial(&lab, "w1", "127.0.13.11", 2379).unwrap_err();
    assert!(err.contains("Connection refused"), "{err}");
    dial(&lab, "cp2", "127.0.13.11", 2379).expect("cp2 is not blocked");
    dial(&lab, "w1", "127.0.13.11", 22).expect("only the blocked ports are");
    dial(&lab, "cp1", "127.0.13.21", 22).expect("the others still reach w1");
    // w1's kubelet (a simulated component) gets what Go's dialer says.
    let status = lab.wait_status(
        "w1's kubelet to be refused",
        Duration::from_secs(15),
        |s, _| {
            node(s, "w1")["reason"].as_str().is_some_and(|r| {
                r.contains("dial tcp 127.0.13.11:6443: connect: connection refused")
            })
        },
    );
    assert_eq!(
        node(&status, "w1")["faults"],
        serde_json::json!(["block-port 2379", "block-port 6443"])
    );
    lab.heal("w1");
    dial(&lab, "w1", "127.0.13.11", 2379).expect("healed");
    let status = lab.wait_status("the lab to heal", Duration::from_secs(20), |_, c| c == 0);
    assert_eq!(node(&status, "w1")["faults"], serde_json::json!([]));

    lab.fault("w1", &["block-port", "2379"]);
    down_removes(&lab, &iso);
}

#[test]
fn node_down_stops_the_machine_and_disk_full_fills_etc_kubernetes() {
    let lab = Lab::up("faults-node", &plan(14, 2, 0), &[]);
    let iso = isolation(&lab);

    // node-down: sessions end, ssh is refused, the API server and etcd stop, the LB backend
    // goes DOWN.
    let open = Command::new("ssh")
        .arg("-F")
        .arg(lab.dir.join("ssh_config"))
        .args(["-o", "BatchMode=yes", "cp1", "sleep 20; echo survived"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    lab.fault("cp1", &["node-down"]);
    let ended = open.wait_with_output_timeout(Duration::from_secs(10));
    assert!(!text(&ended).contains("survived"), "{}", text(&ended));
    assert!(text(&lab.ssh("cp1", "true")).contains("Connection refused"));
    let status = lab.wait_status("cp1's LB backend DOWN", Duration::from_secs(10), |s, _| {
        s["load_balancer"]["backends"][0]["status"] == "DOWN"
    });
    assert_eq!(status["api_servers"][0]["serving"], false, "{status:#}");
    let get = lab.kubectl(&["get", "nodes"]);
    assert!(!get.status.success(), "{}", text(&get));
    let pki = lab.dir.join("nodes/cp1/etc/kubernetes/pki/etcd");
    let etcd_health = || {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--cacert")
            .arg(pki.join("ca.crt"))
            .arg("--cert")
            .arg(pki.join("healthcheck-client.crt"))
            .arg("--key")
            .arg(pki.join("healthcheck-client.key"))
            .args([
                "--endpoints",
                "https://127.0.14.11:2379",
                "--dial-timeout",
                "2s",
                "endpoint",
                "health",
            ])
            .output()
            .unwrap()
    };
    let etcd = etcd_health();
    assert!(!etcd.status.success(), "etcd still runs: {}", text(&etcd));
    lab.heal("cp1");
    lab.wait_status("cp1 to boot", Duration::from_secs(30), |_, c| c == 0);
    let etcd = etcd_health();
    assert!(etcd.status.success(), "{}", text(&etcd));
    assert_eq!(lab.ssh_ok("cp1", "hostname").trim(), "cp1");
    let get = lab.kubectl(&["get", "nodes"]);
    assert!(get.status.success(), "{}", text(&get));

    // disk-full: writes under /etc/kubernetes fail with ENOSPC in open and new sessions;
    // reads work; heal copies what changed back and writes work again.
    let open = Command::new("ssh")
        .arg("-F")
        .arg(lab.dir.join("ssh_config"))
        .args([
            "-o",
            "BatchMode=yes",
            "cp1",
            "sleep 2; echo late > /etc/kubernetes/late.conf",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    lab.fault("cp1", &["disk-full"]);
    let write = lab.ssh("cp1", "cp /etc/hostname /etc/kubernetes/new.conf");
    assert!(!write.status.success());
    assert!(
        text(&write).contains("No space left on device"),
        "{}",
        text(&write)
    );
    let late = open.wait_with_output_timeout(Duration::from_secs(10));
    assert!(
        text(&late).contains("No space left on device"),
        "the open session could write: {}",
        text(&late)
    );
    assert!(
        lab.ssh_ok("cp1", "cat /etc/kubernetes/admin.conf")
            .contains("server:")
    );
    lab.ssh_ok("cp1", "rm /etc/kubernetes/super-admin.conf");
    let host = |p: &str| lab.dir.join("nodes/cp1/etc/kubernetes").join(p);
    assert!(
        host("super-admin.conf").exists(),
        "the host sees it after heal"
    );
    let (status, code) = lab.status();
    assert_eq!(code, 1);
    assert_eq!(
        node(&status, "cp1")["faults"],
        serde_json::json!(["disk-full"])
    );
    lab.heal("cp1");
    assert!(
        !host("super-admin.conf").exists(),
        "heal copies deletions back"
    );
    lab.ssh_ok("cp1", "echo ok > /etc/kubernetes/after.conf");
    assert_eq!(std::fs::read_to_string(host("after.conf")).unwrap(), "ok\n");

    // down undoes faults left active.
    lab.fault("cp1", &["disk-full"]);
    lab.fault("cp2", &["ssh-down"]);
    down_removes(&lab, &iso);
}

#[test]
fn api_conflicts_answer_409_and_slow_components_start_late() {
    let lab = Lab::up("faults-api", &plan(15, 1, 0), &[]);

    // api-conflicts 2: the next two writes get 409 Conflict, the third goes through.
    lab.fault("cp1", &["api-conflicts", "2"]);
    let first = lab.kubectl(&["create", "configmap", "c1", "--from-literal=a=b"]);
    assert!(!first.status.success());
    assert!(
        text(&first).contains(
            "Operation cannot be fulfilled on configmaps \"c1\": the object has been modified; \
             please apply your changes to the latest version and try again"
        ),
        "{}",
        text(&first)
    );
    let (status, _) = lab.status();
    assert_eq!(
        node(&status, "cp1")["faults"],
        serde_json::json!(["api-conflicts 1"])
    );
    let body = lab.dir.join("c1.json");
    std::fs::write(
        &body,
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c1"},"data":{"a":"b"}}"#,
    )
    .unwrap();
    let raw = lab.kubectl(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/configmaps",
        "-f",
        &body.to_string_lossy(),
    ]);
    assert!(
        text(&raw).contains("Error from server (Conflict)"),
        "{}",
        text(&raw)
    );
    let third = lab.kubectl(&["create", "configmap", "c1", "--from-literal=a=b"]);
    assert!(third.status.success(), "{}", text(&third));
    let (status, code) = lab.status();
    assert_eq!(code, 0, "used up, the fault is gone: {status:#}");

    // slow-component 3: a restarted API server answers /readyz 500 for 3 s ...
    lab.fault("cp1", &["slow-component", "3"]);
    let sandbox = lab.ssh_ok("cp1", "crictl pods --name kube-apiserver --state ready -q");
    let sandbox = sandbox.trim();
    assert!(!sandbox.is_empty());
    lab.ssh_ok("cp1", &format!("crictl stopp {sandbox}"));
    let stopped = Instant::now();
    let readyz = || {
        let out = Command::new("curl")
            .args(["-sk", "-m", "2", "-w", "\n%{http_code}"])
            .arg("https://127.0.15.11:6443/readyz")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut saw_slow = None;
    let ready_after = loop {
        let r = readyz();
        if r.ends_with("\n500") && r.contains("[-]poststarthook/rbac/bootstrap-roles failed") {
            saw_slow = Some(r.clone());
        }
        if r.ends_with("\n200") && saw_slow.is_some() {
            break stopped.elapsed();
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(15),
            "readyz never recovered: {r}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        ready_after >= Duration::from_secs(3),
        "ready after {ready_after:?}: {saw_slow:?}"
    );

    // ... and a restarted kubelet renews its node lease only 3 s later.
    let renew = || {
        let out = lab.kubectl(&[
            "get",
            "lease",
            "-n",
            "kube-node-lease",
            "cp1",
            "-o",
            "jsonpath={.spec.renewTime}",
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while renew().is_empty() {
        assert!(Instant::now() < deadline, "no node lease for cp1");
        std::thread::sleep(Duration::from_millis(200));
    }
    lab.ssh_ok("cp1", "systemctl restart kubelet");
    let restarted = Instant::now();
    let before = renew();
    let renewed_after = loop {
        if renew() != before {
            break restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(12),
            "the lease was never renewed"
        );
        std::thread::sleep(Duration::from_millis(150));
    };
    assert!(
        renewed_after >= Duration::from_millis(2700),
        "renewed {renewed_after:?} after the restart"
    );
    lab.heal("cp1");
    let (status, _) = lab.status();
    assert_eq!(node(&status, "cp1")["faults"], serde_json::json!([]));
}

/// `Child::wait_with_output` with a deadline: the child is killed when it passes.
trait WaitTimeout {
    fn wait_with_output_timeout(self, limit: Duration) -> Output;
}

impl WaitTimeout for std::process::Child {
    fn wait_with_output_timeout(mut self, limit: Duration) -> Output {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.kill();
        self.wait_with_output().unwrap()
    }
}
