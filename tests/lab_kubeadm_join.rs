//! The lab's `kubeadm join` and `kubeadm reset`, run over real SSH on the nodes and checked
//! with the real `kubectl` and `etcdctl`: a control-plane join through the load balancer and
//! each way kubeadm refuses one, a worker join, reset, and what a join that fails after its
//! etcd member was added leaves behind on each side of 1.29 (quorum loss, a stuck learner);
//! back-to-back joins that wait, as kubeadm's etcd retries do, and a member that can never be
//! added failing once kubeadm's retries end.
//! These tests need root (CI has it).

mod lab_support;

use std::process::Output;
use std::time::{Duration, Instant};

use lab_support::joining::{
    Creds, LB, join_failing_after_member_add, point_cluster_info_at_lb, ready_to_join,
    set_control_plane_endpoint,
};
use lab_support::{Lab, node, plan};

const ETCDCTL: &str = "ETCDCTL_API=3 etcdctl --cacert /etc/kubernetes/pki/etcd/ca.crt \
    --cert /etc/kubernetes/pki/etcd/healthcheck-client.crt --key /etc/kubernetes/pki/etcd/healthcheck-client.key";

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn cluster_info_server(lab: &Lab) -> String {
    let out = lab.kubectl(&[
        "get",
        "configmap",
        "-n",
        "kube-public",
        "cluster-info",
        "-o",
        "jsonpath={.data.kubeconfig}",
    ]);
    let kc = String::from_utf8_lossy(&out.stdout).into_owned();
    kc.lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap_or_else(|| panic!("no server in cluster-info: {kc}"))
        .to_string()
}

/// `etcdctl member list` on `node`: (status, name, peer URL, is learner) per member.
fn members(lab: &Lab, node: &str, endpoint: &str) -> Vec<(String, String, String, bool)> {
    let list = lab.ssh_ok(
        node,
        &format!("{ETCDCTL} --endpoints https://{endpoint}:2379 member list"),
    );
    list.lines()
        .map(|l| {
            let f: Vec<&str> = l.split(", ").collect();
            (
                f[1].to_string(),
                f[2].to_string(),
                f[3].to_string(),
                f[5].trim() == "true",
            )
        })
        .collect()
}

fn node_json(lab: &Lab, name: &str) -> serde_json::Value {
    let out = lab.kubectl(&["get", "node", name, "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_control_plane_join_through_the_lb_after_each_refusal_and_reset_undoing_it() {
    let net = 9;
    let lab = Lab::up("join-cp", &plan(net, 2, 0), &[]);
    let creds = Creds::new(&lab);
    let cp1 = format!("127.0.{net}.11:6443");

    // No controlPlaneEndpoint: refused in preflight, after discovery worked through cp1.
    let out = lab.ssh("cp2", &creds.join_control_plane(&cp1));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error execution phase preflight: \nOne or more conditions for hosting a new control plane instance is not satisfied.\n\nunable to add a new control plane instance to a cluster that doesn't have a stable controlPlaneEndpoint address\n\nPlease ensure that:\n* The cluster has a stable controlPlaneEndpoint address."),
        "{err}"
    );
    assert!(text(&out).contains("[preflight] Reading configuration from the cluster..."));

    // Through the LB before cp1's certificate has its name: discovery's TLS check fails.
    set_control_plane_endpoint(&lab, net);
    point_cluster_info_at_lb(&lab, net);
    let out = lab.ssh("cp2", &creds.join_control_plane(LB));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("couldn't validate the identity of the API Server: failed to request the cluster-info ConfigMap: Get \"https://k8s-api.lab.internal:6443/api/v1/namespaces/kube-public/configmaps/cluster-info?timeout=10s\": tls: failed to verify certificate: x509: certificate is valid for")
            && err.contains("not k8s-api.lab.internal"),
        "{err}"
    );
    lab.add_lb_san(net);

    // A pin that is not the CA's.
    let wrong_pin = format!("sha256:{}", "0".repeat(64));
    let out = lab.ssh(
        "cp2",
        &creds.join_control_plane(LB).replace(&creds.pin, &wrong_pin),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "cluster CA found in cluster-info ConfigMap is invalid: none of the public keys \"{}\" are pinned",
            creds.pin
        )),
        "{}",
        text(&out)
    );

    // A certificate key that does not open kubeadm-certs.
    let wrong_key = "ab".repeat(32);
    let out = lab.ssh(
        "cp2",
        &creds.join_control_plane(LB).replace(&creds.key, &wrong_key),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("error execution phase control-plane-prepare/download-certs: error downloading certs: error decoding secret data with provided key: cipher: message authentication failed"),
        "{}",
        text(&out)
    );
    assert_eq!(
        lab.ssh_ok("cp2", "find /etc/kubernetes -type f").trim(),
        "",
        "a refused join writes nothing"
    );

    // An expired token: the bootstrapsigner no longer signs it, the tokencleaner removes it.
    let short = lab.ssh_ok("cp1", "kubeadm token create --ttl 1s");
    let short = short.trim();
    let id = short.split('.').next().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        // The API refuses the token from its expiry; the join is tried once the tokencleaner
        // deleted it and the bootstrapsigner dropped its signature.
        let secret = format!("bootstrap-token-{id}");
        let gone = !lab
            .kubectl(&["get", "secret", "-n", "kube-system", &secret])
            .status
            .success();
        let cm = lab.kubectl_json(&["get", "cm", "-n", "kube-public", "cluster-info"]);
        if gone && cm["data"][format!("jws-kubeconfig-{id}")].is_null() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still signed: {cm}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = lab.ssh(
        "cp2",
        &creds.join_control_plane(LB).replace(&creds.token, short),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "couldn't validate the identity of the API Server: could not find a JWS signature in the cluster-info ConfigMap for token ID \"{id}\""
        )),
        "{}",
        text(&out)
    );

    // The join that works.
    let out = lab.ssh("cp2", &creds.join_control_plane(LB));
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out), lab.logs());
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in [
        "[download-certs] Downloading the certificates in Secret \"kubeadm-certs\" in the \"kube-system\" Namespace",
        "[certs] apiserver serving cert is signed for DNS names [cp2 kubernetes kubernetes.default kubernetes.default.svc kubernetes.default.svc.cluster.local k8s-api.lab.internal] and IPs [10.96.0.1 127.0.9.12 127.0.9.100]",
        "[kubelet-start] Starting the kubelet",
        "[etcd] Announced new etcd member joining to the existing etcd cluster",
        "[mark-control-plane] Marking the node cp2 as control-plane by adding the taints [node-role.kubernetes.io/control-plane:NoSchedule]",
        "This node has joined the cluster and a new control plane instance was created:",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    // kubelet.conf points where cluster-info said, admin.conf at the endpoint, the
    // controller-manager at its own API server.
    let server = cluster_info_server(&lab);
    assert_eq!(server, format!("https://{LB}"));
    let grep = |f: &str| {
        lab.ssh_ok("cp2", &format!("grep 'server:' /etc/kubernetes/{f}"))
            .trim()
            .to_string()
    };
    assert_eq!(grep("kubelet.conf"), format!("server: {server}"));
    assert_eq!(grep("admin.conf"), format!("server: https://{LB}"));
    assert_eq!(
        grep("controller-manager.conf"),
        format!("server: https://127.0.{net}.12:6443")
    );
    assert!(
        lab.ssh("cp2", "test -e /etc/kubernetes/super-admin.conf")
            .status
            .code()
            == Some(1)
    );
    let ms = members(&lab, "cp1", &format!("127.0.{net}.11"));
    assert_eq!(ms.len(), 2, "{ms:?}");
    assert!(
        ms.iter()
            .all(|(status, _, _, learner)| status == "started" && !learner),
        "{ms:?}"
    );
    assert!(
        ms.iter()
            .any(|m| m.1 == "cp2" && m.2 == format!("https://127.0.{net}.12:2380"))
    );
    let status = lab.wait_status("cp2 Ready", Duration::from_secs(20), |s, _| {
        node(s, "cp2")["ready"] == true
    });
    assert_eq!(node(&status, "cp2")["ready"], true);
    let n = node_json(&lab, "cp2");
    assert_eq!(
        n["metadata"]["labels"]["node-role.kubernetes.io/control-plane"],
        ""
    );
    assert!(
        n["spec"]["taints"].as_array().unwrap().iter().any(|t| {
            t["key"] == "node-role.kubernetes.io/control-plane" && t["effect"] == "NoSchedule"
        }),
        "{n}"
    );

    // A second join on the joined node fails its preflight checks (exit 2).
    let out = lab.ssh("cp2", &creds.join_control_plane(LB));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("[ERROR FileAvailable--etc-kubernetes-kubelet.conf]: /etc/kubernetes/kubelet.conf already exists"),
        "{}",
        text(&out)
    );

    // reset -f removes the member and the files; the cluster keeps working on cp1.
    let out = lab.ssh("cp2", "kubeadm reset -f");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("[reset] Deleted contents of the etcd data directory: /var/lib/etcd"),
        "{}",
        text(&out)
    );
    let ms = members(&lab, "cp1", &format!("127.0.{net}.11"));
    assert_eq!(ms.len(), 1, "{ms:?}\n{}", text(&out));
    assert_eq!(ms[0].1, "cp1");
    assert_eq!(
        lab.ssh_ok(
            "cp2",
            "find /etc/kubernetes /var/lib/etcd /var/lib/kubelet -mindepth 1 -not -type d"
        )
        .trim(),
        ""
    );
    assert_eq!(
        lab.ssh_ok("cp2", "systemctl is-active kubelet || true")
            .trim(),
        "inactive"
    );
    let out = lab.kubectl(&["get", "configmap", "-n", "kube-system", "kubeadm-config"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_worker_joins_with_the_printed_join_command_and_reset_asks_first() {
    let net = 10;
    let lab = Lab::up("join-worker", &plan(net, 1, 1), &[]);
    // The pre-1.15 spelling is an unknown flag on the lab's versions, as cobra says.
    let out = lab.ssh(
        "w1",
        "kubeadm join 127.0.10.11:6443 --experimental-control-plane",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("unknown flag: --experimental-control-plane\n"),
        "{}",
        text(&out)
    );
    // Without -f kubeadm asks; with no answer it aborts and changes nothing.
    let out = lab.ssh("w1", "kubeadm reset");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .ends_with("[reset] Are you sure you want to proceed? [y/N]: "),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("error execution phase preflight: aborted reset operation"));
    lab.ssh_ok("w1", "test -e /etc/kubernetes/kubelet.conf");

    let out = lab.ssh("w1", "kubeadm reset -f");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    lab.ssh_ok("w1", "test ! -e /etc/kubernetes/kubelet.conf");
    let out = lab.kubectl(&["delete", "node", "w1"]);
    assert!(out.status.success(), "{}", text(&out));

    let join = lab.ssh_ok("cp1", "kubeadm token create --print-join-command");
    // A full /etc/kubernetes: the first file kubeadm writes there fails, as Go reports it.
    lab.fault("w1", &["disk-full"]);
    let out = lab.ssh("w1", join.trim());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("error execution phase kubelet-start: couldn't save bootstrap-kubelet.conf to disk: open /etc/kubernetes/bootstrap-kubelet.conf: no space left on device"),
        "{}",
        text(&out)
    );
    lab.heal("w1");
    let out = lab.ssh("w1", join.trim());
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out), lab.logs());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("This node has joined the cluster:\n* Certificate signing request was sent to apiserver and a response was received."),
        "{}",
        text(&out)
    );
    assert_eq!(
        lab.ssh_ok("w1", "grep 'server:' /etc/kubernetes/kubelet.conf")
            .trim(),
        format!("server: {}", cluster_info_server(&lab))
    );
    lab.ssh_ok(
        "w1",
        "test -e /etc/kubernetes/pki/ca.crt && test ! -e /etc/kubernetes/bootstrap-kubelet.conf",
    );
    lab.wait_status("w1 Ready again", Duration::from_secs(20), |s, _| {
        node(s, "w1")["ready"] == true
    });
    let n = node_json(&lab, "w1");
    assert!(n["metadata"]["labels"]["node-role.kubernetes.io/control-plane"].is_null());
}

#[test]
fn before_1_29_a_voting_member_that_never_starts_takes_quorum_and_the_api_down() {
    let net = 11;
    let lab = Lab::up(
        "join-quorum",
        &plan(net, 2, 0),
        &["--kubernetes-version", "1.28"],
    );
    let (_, out) = join_failing_after_member_add(&lab, net);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .trim_end()
            .ends_with("[etcd] Announced new etcd member joining to the existing etcd cluster"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("error execution phase control-plane-join/etcd: error creating local etcd static pod manifest file: timeout waiting for etcd cluster to be available"),
        "{}",
        text(&out)
    );
    assert!(
        lab.ssh("cp2", "test -e /etc/kubernetes/manifests/etcd.yaml")
            .status
            .code()
            == Some(1)
    );

    // etcd lists a voting member that never started: 2 of 2 are needed, 1 answers.
    let list = lab.ssh_ok(
        "cp1",
        &format!("{ETCDCTL} --endpoints https://127.0.{net}.11:2379 member list"),
    );
    assert!(
        list.contains(&format!(
            ", unstarted, , https://127.0.{net}.12:2380, , false"
        )),
        "{list}"
    );
    // cp1's API server fails its readiness (curl, from outside, as the LB's check does).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let readyz = std::process::Command::new("curl")
            .args(["-sk", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("https://127.0.{net}.11:6443/readyz"))
            .output()
            .unwrap();
        let code = String::from_utf8_lossy(&readyz.stdout).into_owned();
        if code == "500" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cp1 /readyz still answers {code}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = lab.kubectl(&["get", "configmap", "-n", "kube-system", "kubeadm-config"]);
    assert!(
        !out.status.success(),
        "the API works without quorum: {}",
        text(&out)
    );
}

/// A failed learner join left cp2's learner unstarted; a learner does not vote, so the
/// cluster keeps its quorum and the API works.
fn assert_unstarted_learner(lab: &Lab, net: u8) {
    let ms = members(lab, "cp1", &format!("127.0.{net}.11"));
    assert_eq!(ms.len(), 2, "{ms:?}");
    assert!(
        ms.iter()
            .any(|(status, _, peer, learner)| status == "unstarted"
                && *peer == format!("https://127.0.{net}.12:2380")
                && *learner),
        "{ms:?}"
    );
    let out = lab.kubectl(&["get", "configmap", "-n", "kube-system", "kubeadm-config"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn from_1_29_a_failed_learner_join_leaves_a_learner_that_blocks_the_next_join() {
    let net = 12;
    // kubeadm 1.33 polls a refused member add for 2 minutes; the lab is told 6 s.
    let lab = Lab::up(
        "join-learner",
        &plan(net, 3, 0),
        &[
            "--kubernetes-version",
            "1.33",
            "--kubeadm-etcd-timeout",
            "6",
        ],
    );
    let (creds, out) = join_failing_after_member_add(&lab, net);
    assert!(
        text(&out).contains("error execution phase etcd-join: error creating local etcd static pod manifest file: etcdserver: can only promote a learner member which is in sync with leader"),
        "{}",
        text(&out)
    );
    assert_unstarted_learner(&lab, net);

    // The next join wants a learner too; etcd allows one at a time. kubeadm retries the
    // add until its window closes, then says etcd's last refusal.
    let started = Instant::now();
    let out = lab.ssh("cp3", &creds.join_control_plane(LB));
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        took >= Duration::from_secs(6) && took < Duration::from_secs(60),
        "gave up after {took:?}"
    );
    assert!(
        text(&out).contains("error execution phase etcd-join: error creating local etcd static pod manifest file: etcdserver: too many learner members in cluster"),
        "{}",
        text(&out)
    );

    // Cleaning up as hactl does (reset, member remove) lets cp3 join; with
    // ControlPlaneKubeletLocalMode (1.33) its kubelet talks to its own API server.
    lab.ssh_ok("cp3", "kubeadm reset -f");
    let learner = lab.ssh_ok(
        "cp1",
        &format!("{ETCDCTL} --endpoints https://127.0.{net}.11:2379 member list | grep unstarted | cut -d, -f1"),
    );
    lab.ssh_ok(
        "cp1",
        &format!(
            "{ETCDCTL} --endpoints https://127.0.{net}.11:2379 member remove {}",
            learner.trim()
        ),
    );
    let out = lab.ssh("cp3", &creds.join_control_plane(LB));
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out), lab.logs());
    assert_eq!(
        lab.ssh_ok("cp3", "grep 'server:' /etc/kubernetes/kubelet.conf")
            .trim(),
        format!("server: https://127.0.{net}.13:6443")
    );
    let ms = members(&lab, "cp1", &format!("127.0.{net}.11"));
    assert_eq!(ms.len(), 2, "{ms:?}");
    assert!(ms.iter().all(|m| m.0 == "started" && !m.3), "{ms:?}");
}

#[test]
fn a_join_that_cannot_reach_the_peer_port_leaves_its_learner_behind() {
    let net = 19;
    // kubeadm 1.31 retries the promotion for 2 minutes; the lab is told 5 s.
    let lab = Lab::up(
        "join-peer-port",
        &plan(net, 2, 0),
        &[
            "--kubernetes-version",
            "1.31",
            "--kubeadm-etcd-timeout",
            "5",
        ],
    );
    let creds = ready_to_join(&lab, net);
    // cp2 cannot reach 2380 on cp1: its etcd cannot fetch the cluster from its peer.
    lab.fault("cp2", &["block-port", "2380"]);

    let out = lab.ssh("cp2", &creds.join_control_plane(LB));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("error execution phase control-plane-join/etcd: error creating local etcd static pod manifest file: etcdserver: can only promote a learner member which is in sync with leader"),
        "{}",
        text(&out)
    );
    assert_unstarted_learner(&lab, net);
}

/// Joins cp2, then at once cp3, with kubeadm's own retry windows: etcd refuses cp3's member
/// (`etcdserver: unhealthy cluster`) until cp2 has been connected for its 5 s health
/// interval, and kubeadm retries until it may.
fn back_to_back_joins(net: u8, version: &str) {
    let lab = Lab::up(
        &format!("join-b2b{net}"),
        &plan(net, 3, 0),
        &["--kubernetes-version", version],
    );
    let creds = ready_to_join(&lab, net);
    for cp in ["cp2", "cp3"] {
        let out = lab.ssh(cp, &creds.join_control_plane(LB));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{cp} ({version}): {}\n{}",
            text(&out),
            lab.logs()
        );
    }
    let ms = members(&lab, "cp1", &format!("127.0.{net}.11"));
    assert_eq!(ms.len(), 3, "{ms:?}");
    assert!(ms.iter().all(|m| m.0 == "started" && !m.3), "{ms:?}");
}

#[test]
fn back_to_back_control_plane_joins_succeed_as_kubeadm_1_31_polls_etcd() {
    back_to_back_joins(40, "1.31");
}

#[test]
fn back_to_back_control_plane_joins_succeed_as_kubeadm_1_28_backs_off() {
    back_to_back_joins(41, "1.28");
}

#[test]
fn a_member_that_can_never_be_added_fails_when_kubeadm_1_29_stops_backing_off() {
    let net = 42;
    // kubeadm 1.29 backs off for about 200 s; the lab is told 6 s: pauses of 0.1, 0.15, …
    // 1.7 s (4.9 s in all, 5.4 s with the most jitter) fit, the next (2.6 s) would not.
    let lab = Lab::up(
        "join-never",
        &plan(net, 3, 0),
        &[
            "--kubernetes-version",
            "1.29",
            "--kubeadm-etcd-timeout",
            "6",
        ],
    );
    let (creds, _) = join_failing_after_member_add(&lab, net);
    assert_unstarted_learner(&lab, net);
    let started = Instant::now();
    let out = lab.ssh("cp3", &creds.join_control_plane(LB));
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(
            "error execution phase control-plane-join/etcd: error creating local etcd static pod manifest file: etcdserver: too many learner members in cluster\nTo see the stack trace of this error execute with --v=5 or higher"
        ),
        "{}",
        text(&out)
    );
    assert!(
        took >= Duration::from_millis(4_900) && took < Duration::from_secs(60),
        "gave up after {took:?}"
    );
    // Nothing of cp3's is left in etcd: the add never went through.
    assert_eq!(members(&lab, "cp1", &format!("127.0.{net}.11")).len(), 2);
}
