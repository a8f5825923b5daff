//! The lab end to end, through its contract commands (`hactl lab up|status|down`) and the
//! real clients (`ssh`, `kubectl`, `etcdctl`): each failure mode the lab promises happens,
//! and each healthy state is reported healthy. These tests need root (CI has it).

mod lab_support;

use std::time::Duration;

use lab_support::{Lab, node, plan};

const ETCDCTL: &str = "ETCDCTL_API=3 etcdctl --cacert /etc/kubernetes/pki/etcd/ca.crt \
    --cert /etc/kubernetes/pki/etcd/healthcheck-client.crt --key /etc/kubernetes/pki/etcd/healthcheck-client.key";

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_fresh_lab_is_a_healthy_kubeadm_cluster_and_down_leaves_nothing() {
    let lab = Lab::up("fresh", &plan(1, 3, 2), &[]);
    let up = String::from_utf8_lossy(&lab.up_output.stdout).into_owned();
    assert!(up.contains("Lab up in"), "{up}");

    let (status, code) = lab.status();
    assert_eq!(code, 0, "a fresh lab is healthy: {status:#}");
    for n in ["cp1", "w1", "w2"] {
        assert_eq!(node(&status, n)["ready"], true, "{n}: {status:#}");
    }
    for n in ["cp2", "cp3"] {
        assert_eq!(node(&status, n)["joined"], false, "{n} is a bare machine");
    }
    // Every component verifies its server.
    let conns = node(&status, "cp1")["connections"]
        .as_array()
        .unwrap()
        .clone();
    let names: Vec<&str> = conns
        .iter()
        .map(|c| c["component"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "kubelet",
            "kube-controller-manager",
            "kube-scheduler",
            "kube-proxy"
        ]
    );
    assert!(conns.iter().all(|c| c["tls_verifies"] == true), "{conns:?}");
    assert!(
        status["leases"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["fresh"] == true)
    );
    assert_eq!(status["kube_proxy"].as_array().unwrap().len(), 3);
    let members = status["etcd"]["members"].as_array().unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["name"], "cp1");
    assert_eq!(members[0]["healthy"], true);
    let sans = &status["api_servers"][0]["sans"];
    assert!(
        sans.as_array().unwrap().contains(&"IP:127.0.1.11".into()),
        "{sans}"
    );
    assert!(
        !sans
            .as_array()
            .unwrap()
            .contains(&"DNS:k8s-api.lab.internal".into())
    );
    let backends = status["load_balancer"]["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 3, "every control-plane node is a backend");
    assert_eq!(backends[0]["status"], "UP");

    // The nodes are real machines over real SSH, with their own names and files.
    assert_eq!(lab.ssh_ok("cp1", "hostname").trim(), "cp1");
    assert!(
        lab.ssh_ok("cp2", "ls /etc/kubernetes").trim() == "manifests",
        "cp2 has no cluster files"
    );
    assert_eq!(
        lab.ssh_ok("cp2", "kubeadm version -o short").trim(),
        "v1.31.14"
    );
    assert_eq!(
        lab.ssh_ok("w1", "getent hosts k8s-api.lab.internal")
            .split_whitespace()
            .next(),
        Some("127.0.1.100")
    );
    let kubelet_conf = lab.ssh_ok("w1", "cat /etc/kubernetes/kubelet.conf");
    assert!(
        kubelet_conf.contains("server: https://127.0.1.11:6443"),
        "{kubelet_conf}"
    );
    // etcdctl works on the node with kubeadm's certificate paths.
    let members = lab.ssh_ok(
        "cp1",
        &format!("{ETCDCTL} --endpoints https://127.0.1.11:2379 member list"),
    );
    assert!(
        members.contains(", started, cp1, https://127.0.1.11:2380"),
        "{members}"
    );
    // kubectl is a second client of the same API.
    let nodes = text(&lab.kubectl(&["get", "nodes", "-o", "name"]));
    assert_eq!(
        nodes.lines().collect::<Vec<_>>(),
        ["node/cp1", "node/w1", "node/w2"]
    );
    // The controller-manager's bootstrapsigner signed cluster-info for the bootstrap token.
    let info = lab.kubectl_json(&["get", "cm", "-n", "kube-public", "cluster-info"]);
    let secrets = text(&lab.kubectl(&["get", "secrets", "-n", "kube-system", "-o", "json"]));
    let secrets: serde_json::Value = serde_json::from_str(&secrets).unwrap();
    let token = secrets["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["type"] == "bootstrap.kubernetes.io/token")
        .expect("kubeadm's bootstrap token");
    let b64 = |k: &str| {
        use base64::Engine as _;
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(token["data"][k].as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    let (id, secret) = (b64("token-id"), b64("token-secret"));
    let kubeconfig = info["data"]["kubeconfig"].as_str().unwrap();
    assert_eq!(
        info["data"][format!("jws-kubeconfig-{id}")].as_str(),
        Some(
            hactl::lab::components::jws::compute_detached_signature(kubeconfig, &id, &secret)
                .as_str()
        ),
        "{info}"
    );
    // The lab's hactl.toml is a valid plan that reaches the lab.
    let hactl_toml = lab.dir.join("hactl.toml");
    let validate = lab.hactl(&["validate", hactl_toml.to_str().unwrap()]);
    assert!(validate.status.success(), "{}", text(&validate));

    // Static pods: crictl shapes, and a stopped pod comes back.
    let ids = lab.ssh_ok("cp1", "crictl pods --name kube-scheduler -q");
    assert_eq!(ids.lines().count(), 1, "{ids}");
    let id = ids.trim();
    assert_eq!(
        lab.ssh_ok("cp1", &format!("crictl stopp {id}")).trim(),
        format!("Stopped sandbox {id}")
    );
    assert_eq!(
        lab.ssh_ok("cp1", &format!("crictl rmp {id}")).trim(),
        format!("Removed sandbox {id}")
    );
    lab.wait_status(
        "the scheduler's pod to come back",
        Duration::from_secs(20),
        |_, _| {
            let ids = lab.ssh_ok("cp1", "crictl pods --name kube-scheduler --state ready -q");
            ids.lines().count() == 1 && !ids.contains(id)
        },
    );
    assert_eq!(
        lab.ssh_ok("w1", "systemctl is-active kubelet").trim(),
        "active"
    );
    // A containerd node has no docker daemon (the host's docker CLI, if any, finds none).
    let docker = lab.ssh("w1", "docker ps");
    assert!(!docker.status.success(), "{}", text(&docker));
    assert!(!text(&docker).contains("k8s_"), "{}", text(&docker));

    // Down stops every process it started and leaves no listener behind.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lab.dir.join("lab.json")).unwrap()).unwrap();
    let pids: Vec<i64> = state["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_i64().unwrap())
        .collect();
    assert!(pids.len() >= 7, "5 sshd, haproxy, supervisor: {state}");
    let down = lab.down();
    assert!(down.status.success(), "{}", text(&down));
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "pid {pid} still runs: {stat}"
        );
    }
    for addr in [
        "127.0.1.11:22",
        "127.0.1.21:22",
        "127.0.1.100:6443",
        "127.0.1.11:6443",
        "127.0.1.11:2379",
    ] {
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "{addr} still listens"
        );
    }
    let (_, code) = lab.status();
    assert_eq!(code, 1, "a stopped lab is not healthy");
}

#[test]
fn a_kubelet_pointed_at_the_lb_before_the_san_exists_is_notready_with_the_x509_error() {
    let lab = Lab::up("san", &plan(2, 1, 1), &[]);
    lab.ssh_ok(
        "w1",
        "sed -i 's#server: https://127.0.2.11:6443#server: https://k8s-api.lab.internal:6443#' /etc/kubernetes/kubelet.conf && systemctl restart kubelet",
    );
    let status = lab.wait_status("w1 NotReady", Duration::from_secs(30), |s, code| {
        code == 1 && node(s, "w1")["ready"] == false
    });
    let w1 = node(&status, "w1");
    let reason = w1["reason"].as_str().unwrap();
    assert!(
        reason.contains("x509: certificate is valid for")
            && reason.contains("not k8s-api.lab.internal"),
        "{reason}"
    );
    let kubelet = &w1["connections"][0];
    assert_eq!(kubelet["server"], "https://k8s-api.lab.internal:6443");
    assert_eq!(kubelet["tls_verifies"], false);

    // Add the SAN (as hactl will): the API server serves the new certificate without a restart.
    lab.add_lb_san(2);
    let status = lab.wait_status(
        "w1 Ready through the LB",
        Duration::from_secs(30),
        |s, code| code == 0 && node(s, "w1")["ready"] == true,
    );
    assert!(
        status["api_servers"][0]["sans"]
            .as_array()
            .unwrap()
            .contains(&"DNS:k8s-api.lab.internal".into())
    );
    assert_eq!(node(&status, "w1")["connections"][0]["tls_verifies"], true);
}

#[test]
fn kube_proxy_with_a_bad_server_crash_loops_and_a_controller_managers_lease_goes_stale() {
    let lab = Lab::up("proxy", &plan(3, 1, 1), &[]);
    // kube-proxy's ConfigMap through the LB name, before the SAN: its new pod crash-loops.
    lab.edit_configmap("kube-system", "kube-proxy", |cm| {
        let kc = cm["data"]["kubeconfig.conf"].as_str().unwrap().replace(
            "https://127.0.3.11:6443",
            "https://k8s-api.lab.internal:6443",
        );
        cm["data"]["kubeconfig.conf"] = kc.into();
    });
    let pods = text(&lab.kubectl(&[
        "get",
        "pods",
        "-n",
        "kube-system",
        "-l",
        "k8s-app=kube-proxy",
        "--field-selector",
        "spec.nodeName=w1",
        "-o",
        "name",
    ]));
    let delete = lab.kubectl(&["delete", "-n", "kube-system", pods.trim()]);
    assert!(delete.status.success(), "{}", text(&delete));
    let status = lab.wait_status(
        "w1's kube-proxy to crash-loop",
        Duration::from_secs(40),
        |s, _| {
            s["kube_proxy"].as_array().is_some_and(|ps| {
                ps.iter().any(|p| {
                    p["node"] == "w1"
                        && p["state"] == "CrashLoopBackOff"
                        && p["restarts"].as_i64() >= Some(1)
                })
            })
        },
    );
    let p = status["kube_proxy"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["node"] == "w1")
        .unwrap();
    assert!(
        p["message"]
            .as_str()
            .unwrap_or("")
            .contains("x509: certificate is valid for"),
        "{p}"
    );

    // controller-manager pointed at a name its server's certificate lacks: the lease goes stale.
    lab.ssh_ok(
        "cp1",
        "sed -i 's#server: https://127.0.3.11:6443#server: https://k8s-api.lab.internal:6443#' /etc/kubernetes/controller-manager.conf \
         && crictl pods --name kube-controller-manager -q | xargs crictl stopp",
    );
    let status = lab.wait_status(
        "the controller-manager lease to go stale",
        Duration::from_secs(40),
        |s, code| {
            code == 1
                && s["leases"].as_array().is_some_and(|ls| {
                    ls.iter()
                        .any(|l| l["name"] == "kube-controller-manager" && l["fresh"] == false)
                })
        },
    );
    let cm = node(&status, "cp1")["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == "kube-controller-manager")
        .unwrap()
        .clone();
    assert_eq!(cm["tls_verifies"], false);
    assert!(
        cm["error"]
            .as_str()
            .unwrap()
            .contains("not k8s-api.lab.internal"),
        "{cm}"
    );
}

#[test]
fn a_second_voting_etcd_member_that_never_starts_takes_the_api_server_down() {
    let lab = Lab::up("quorum", &plan(5, 2, 0), &[]);
    // kubeadm#2275: member 2 added but never started; quorum is 2 of 2.
    let add = lab.ssh_ok(
        "cp1",
        &format!("{ETCDCTL} --endpoints https://127.0.5.11:2379 member add cp2 --peer-urls=https://127.0.5.12:2380"),
    );
    assert!(
        add.contains("Member") && add.contains("added to cluster"),
        "{add}"
    );
    let status = lab.wait_status(
        "the API server to fail",
        Duration::from_secs(40),
        |s, code| code == 1 && s["api_servers"][0]["readyz"] != 200,
    );
    assert!(
        status["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().contains("etcd")),
        "{status:#}"
    );
    let get = lab.kubectl(&["get", "configmap", "-n", "kube-system", "kubeadm-config"]);
    assert!(
        !get.status.success(),
        "the API works without quorum: {}",
        text(&get)
    );
}

#[test]
fn older_and_newer_versions_follow_their_conventions() {
    let old = Lab::up(
        "v123",
        &plan(6, 1, 1),
        &["--kubernetes-version", "1.23", "--runtime", "docker"],
    );
    assert_eq!(
        old.ssh_ok("cp1", "kubeadm version -o short").trim(),
        "v1.23.17"
    );
    assert!(
        old.ssh("cp1", "test -e /etc/kubernetes/super-admin.conf")
            .status
            .code()
            == Some(1)
    );
    let ps = old.ssh_ok("cp1", "docker ps");
    assert!(
        ps.contains("k8s_kube-apiserver_kube-apiserver-cp1_kube-system_"),
        "{ps}"
    );
    let (_, code) = old.status();
    assert_eq!(code, 0);
    drop(old);

    let new = Lab::up("v133", &plan(7, 1, 0), &["--kubernetes-version", "1.33"]);
    assert!(
        new.ssh("cp1", "test -e /etc/kubernetes/super-admin.conf")
            .status
            .success()
    );
    let (_, code) = new.status();
    assert_eq!(code, 0);
}

#[test]
fn docker_is_refused_from_1_24_and_unknown_versions_are_refused() {
    let dir = std::env::temp_dir().join(format!("hactl-lab-refuse-{}", std::process::id()));
    let out = std::process::Command::new(lab_support::HACTL)
        .args(["lab", "up", "--plan", "plans/lab.toml", "--dir"])
        .arg(&dir)
        .args(["--kubernetes-version", "1.24", "--runtime", "docker"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("dockershim was removed in 1.24"),
        "{}",
        text(&out)
    );
    let out = std::process::Command::new(lab_support::HACTL)
        .args(["lab", "up", "--plan", "plans/lab.toml", "--dir"])
        .arg(&dir)
        .args(["--kubernetes-version", "1.34"])
        .output()
        .unwrap();
    assert!(text(&out).contains("1.23 to 1.33"), "{}", text(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_root_the_lab_says_what_it_needs() {
    let dir = std::env::temp_dir().join(format!("hactl-lab-noroot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            lab_support::HACTL,
        ])
        .args(["lab", "up", "--plan"])
        .arg(std::fs::canonicalize("plans/lab.toml").unwrap())
        .arg("--dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("hactl lab needs root"),
        "{}",
        text(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_lab_of_one_control_plane_node_and_fifty_workers_comes_up() {
    let lab = Lab::up("fifty", &plan(8, 1, 50), &[]);
    let nodes = text(&lab.kubectl(&["get", "nodes", "-o", "name"]));
    assert_eq!(nodes.lines().count(), 51, "{nodes}");
    let (status, code) = lab.status();
    assert_eq!(code, 0, "{status:#}");
}

/// `--pace cluster` (the benchmark's lab): lab.json records it and the components act ten
/// times slower than at the test pace, as the Leases they write say (4 s at the test pace).
#[test]
fn a_lab_at_a_clusters_pace_writes_ten_times_longer_leases() {
    let lab = Lab::up("pace", &plan(39, 1, 1), &["--pace", "cluster"]);
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lab.dir.join("lab.json")).unwrap()).unwrap();
    assert_eq!(record["pace"], "cluster", "{record:#}");
    // Healthy first: every Lease is written and fresh.
    let (status, code) = lab.status();
    assert_eq!(code, 0, "{status:#}");
    for (ns, name) in [
        ("kube-node-lease", "cp1"),
        ("kube-node-lease", "w1"),
        ("kube-system", "kube-controller-manager"),
        ("kube-system", "kube-scheduler"),
    ] {
        let lease = lab.kubectl_json(&["get", "lease", "-n", ns, name]);
        assert_eq!(
            lease["spec"]["leaseDurationSeconds"], 40,
            "{ns}/{name}: {lease:#}"
        );
    }
}
