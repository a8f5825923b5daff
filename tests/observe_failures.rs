//! Live `hactl plan` against labs where observation partly fails: each failure is an error
//! that names the node (or the file, or the server), the cause in ssh's, kube's or etcd's own
//! words, and the fix; what can still be decided is planned.
//!
//! `tests/fixtures/observed/unreachable-worker-1.31.json` is `hactl observe` of the first lab:
//! `HACTL_WRITE_FIXTURES=1 cargo test --test observe_failures` rewrites it, without it the
//! drift check fails when they disagree; `stuck-learner-1.31.json` is the second lab's, after
//! cp2's join failed right after its etcd learner was added.

mod lab_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use lab_support::Lab;
use lab_support::joining::join_failing_after_member_add;
use lab_support::observing::{self, check_fixture, hactl, lab_plan, observe, text};

/// `hactl plan --no-color FILE [--format F]`: (exit code, stdout, stderr).
fn plan(file: &Path, format: &str) -> (Option<i32>, String, String) {
    let o = hactl(&[
        "plan",
        "--no-color",
        "--format",
        format,
        file.to_str().unwrap(),
    ]);
    (o.status.code(), text(&o.stdout), text(&o.stderr))
}

/// The plan's one problem about `subject` (a json plan's text), an error, as "message / help".
fn problem(json: &str, subject: &str) -> String {
    let plan: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON ({e}): {json}"));
    let p = observing::problem(&plan, subject);
    assert_eq!(p["severity"], "error", "{p}");
    format!(
        "{} / {}",
        p["message"].as_str().unwrap(),
        p["help"].as_str().unwrap()
    )
}

/// Each resource's actions by address, in a json plan's text.
fn actions(json: &str) -> BTreeMap<String, String> {
    observing::actions(&serde_json::from_str(json).unwrap())
}

fn assert_has(haystack: &str, needles: &[&str]) {
    for n in needles {
        assert!(haystack.contains(n), "missing {n:?} in:\n{haystack}");
    }
}

/// A copy of the lab's hactl.toml, `edit`ed, written beside it as `name`.
fn plan_copy(lab: &Lab, name: &str, edit: impl Fn(&str) -> String) -> PathBuf {
    let original = std::fs::read_to_string(lab.dir.join("hactl.toml")).unwrap();
    let edited = edit(&original);
    assert_ne!(edited, original, "{name}: the edit changed nothing");
    let path = lab.dir.join(name);
    std::fs::write(&path, edited).unwrap();
    path
}

/// The plan with its `kubeconfig = …` line replaced by `line` (or removed when empty).
fn with_kubeconfig(text: &str, line: &str) -> String {
    text.lines()
        .filter_map(|l| match l.starts_with("kubeconfig =") {
            true if line.is_empty() => None,
            true => Some(line.to_string()),
            false => Some(l.to_string()),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A copy of the lab's ssh_config using `known_hosts` (written from `text`), and the plan copy
/// `name` pointing at it; `extra_ssh` goes under [ssh].
fn with_known_hosts(lab: &Lab, name: &str, known_hosts: &str, extra_ssh: &str) -> PathBuf {
    let kh = lab.dir.join(format!("{name}.known_hosts"));
    std::fs::write(&kh, known_hosts).unwrap();
    let config = std::fs::read_to_string(lab.dir.join("ssh_config")).unwrap();
    let config: Vec<String> = config
        .lines()
        .map(
            |l| match l.trim_start().starts_with("UserKnownHostsFile ") {
                true => format!("  UserKnownHostsFile {}", kh.display()),
                false => l.to_string(),
            },
        )
        .collect();
    let ssh_config = lab.dir.join(format!("{name}.ssh_config"));
    std::fs::write(&ssh_config, config.join("\n") + "\n").unwrap();
    plan_copy(lab, &format!("{name}.toml"), |t| {
        t.lines()
            .map(|l| match l.starts_with("config_file =") {
                true => format!("config_file = \"{}\"", ssh_config.display()),
                false => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
            .replacen("[ssh]\n", &format!("[ssh]\n{extra_ssh}"), 1)
    })
}

#[test]
fn a_1_31_lab_names_each_failure_with_its_node_its_cause_and_its_fix() {
    let net = 31;
    let lab = Lab::up(&format!("obsfail{net}"), &lab_plan(net), &[]);
    let file = lab.dir.join("hactl.toml");
    let addr = |host: u8| format!("127.0.{net}.{host}");

    // 1. An unreachable worker: named with its address, ssh's words and the fix; its
    // resources undecided, the rest planned.
    lab.fault("w2", &["ssh-down"]);
    let (code, out, err) = plan(&file, "json");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("Could not observe: w2"), "{err}");
    let w2 = problem(&out, "w2");
    assert_has(
        &w2,
        &[
            &format!("w2 ({}) could not be reached over SSH", addr(22)),
            &format!(
                "ssh: connect to host {} port 22: Connection refused",
                addr(22)
            ),
            &format!("check that sshd runs on {}", addr(22)),
            "nothing on w2 is decided",
        ],
    );
    let acts = actions(&out);
    assert_eq!(acts["kubeconfig.w2.kubelet"], "unknown", "{acts:?}");
    assert_eq!(acts["kubeconfig.w1.kubelet"], "update", "{acts:?}");
    assert_eq!(acts["control_plane.cp2"], "create", "{acts:?}");
    for (a, act) in &acts {
        assert!(
            !act.contains("unknown") || a.contains(".w2."),
            "{a} is undecided though only w2 is down: {act}"
        );
    }
    let snapshot = lab.dir.join("unreachable.json");
    let json = observe(&file, &snapshot);
    // A snapshot for a fixture is taken when only w2 and the LB's TLS (no SAN yet) failed.
    assert_eq!(
        json.matches("\"status\": \"failed\"").count(),
        2,
        "more than w2 and TLS failed:\n{json}"
    );
    check_fixture("unreachable-worker-1.31.json", &json, net);
    lab.heal("w2");

    // 2. Host keys. Another key for cp1: a mismatch, with `ssh-keygen -R`.
    let known = std::fs::read_to_string(lab.dir.join("known_hosts")).unwrap();
    let key = lab.dir.join("other_key");
    let kg = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(kg.status.success(), "{}", text(&kg.stderr));
    let other = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let other: Vec<&str> = other.split_whitespace().take(2).collect();
    let cp1_line = |l: &&str| {
        l.split_whitespace()
            .next()
            .is_some_and(|h| h.split(',').any(|h| h == "cp1" || h == addr(11)))
    };
    let others: Vec<&str> = known.lines().filter(|l| !cp1_line(l)).collect();
    assert_eq!(others.len() + 1, known.lines().count(), "{known}");
    let mismatched = format!("{}\n{} {}\n", others.join("\n"), addr(11), other.join(" "));
    let bad = with_known_hosts(&lab, "mismatch", &mismatched, "");
    let (code, out, err) = plan(&bad, "json");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("Could not observe: cp1\n"), "{err}");
    assert_has(
        &problem(&out, "cp1"),
        &[
            &format!(
                "cp1 ({}) could not be reached over SSH: host key mismatch",
                addr(11)
            ),
            "has changed",
            &format!("`ssh-keygen -R {}`", addr(11)),
            "treat this as an attack",
        ],
    );
    // etcd was not checked (its only node is cp1): said so, not "unhealthy".
    assert_has(
        &problem(&out, "etcd"),
        &["etcd could not be checked", "reachable over SSH"],
    );

    // No key for cp1 under strict checking: unknown, with `accept-new`.
    let strict = with_known_hosts(&lab, "strict", &format!("{}\n", others.join("\n")), "");
    let (code, out, err) = plan(&strict, "json");
    assert_eq!(code, Some(1), "{err}");
    assert_has(
        &problem(&out, "cp1"),
        &[
            "host key unknown",
            &format!("`ssh-keyscan {}`", addr(11)),
            "known_hosts = \"accept-new\"",
        ],
    );

    // accept-new learns it, and the plan is whole.
    let accept = with_known_hosts(
        &lab,
        "accept",
        &format!("{}\n", others.join("\n")),
        "known_hosts = \"accept-new\"\n",
    );
    let (code, _, err) = plan(&accept, "text");
    assert_eq!(code, Some(0), "{err}");
    let learned = std::fs::read_to_string(lab.dir.join("accept.known_hosts")).unwrap();
    assert!(learned.contains(&addr(11)), "{learned}");

    // 3. No cluster.kubeconfig and no admin.conf on cp1: the API is not read, and both the
    // missing file and the key to set are named.
    let no_kubeconfig = plan_copy(&lab, "no-kubeconfig.toml", |t| with_kubeconfig(t, ""));
    lab.ssh_ok(
        "cp1",
        "mv /etc/kubernetes/admin.conf /etc/kubernetes/admin.conf.away",
    );
    let (code, out, err) = plan(&no_kubeconfig, "json");
    lab.ssh_ok(
        "cp1",
        "mv /etc/kubernetes/admin.conf.away /etc/kubernetes/admin.conf",
    );
    assert_eq!(code, Some(1), "{err}");
    assert_has(
        &problem(&out, "api"),
        &[
            "the Kubernetes API could not be reached",
            "no reachable control-plane node has /etc/kubernetes/admin.conf",
            "set cluster.kubeconfig",
        ],
    );
    assert_has(
        &problem(&out, "kubeconfig.cp1.admin"),
        &[
            "/etc/kubernetes/admin.conf is missing on cp1",
            "kubeadm init phase kubeconfig admin",
        ],
    );
    assert_eq!(
        actions(&out)
            .get("configmap.kube-system.kubeadm-config")
            .map(String::as_str),
        Some("unknown")
    );

    // cluster.kubeconfig naming a file that does not exist.
    let missing = plan_copy(&lab, "missing-kubeconfig.toml", |t| {
        with_kubeconfig(t, "kubeconfig = \"nowhere/admin.conf\"")
    });
    let (code, out, err) = plan(&missing, "json");
    assert_eq!(code, Some(1), "{err}");
    assert_has(
        &problem(&out, "api"),
        &[
            &format!(
                "cannot read {}",
                lab.dir.join("nowhere/admin.conf").display()
            ),
            "(cluster.kubeconfig)",
            "No such file or directory",
            "fix the path",
        ],
    );

    // 4. A kubeconfig whose server nothing listens on: the server and the connection's words.
    let admin = std::fs::read_to_string(lab.dir.join("admin.conf")).unwrap();
    let dead = admin
        .lines()
        .map(|l| match l.trim_start().starts_with("server: ") {
            true => format!("    server: https://{}:6443", addr(99)),
            false => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(dead, admin);
    std::fs::write(lab.dir.join("dead.conf"), dead + "\n").unwrap();
    let unreachable_api = plan_copy(&lab, "dead-api.toml", |t| {
        with_kubeconfig(t, "kubeconfig = \"dead.conf\"")
    });
    let (code, out, err) = plan(&unreachable_api, "json");
    assert_eq!(code, Some(1), "{err}");
    let api = problem(&out, "api");
    assert_has(
        &api,
        &[
            &format!(
                "the Kubernetes API at https://{}:6443 could not be reached",
                addr(99)
            ),
            "connection refused",
            "is kube-apiserver running",
        ],
    );
    assert!(!api.contains("client-key-data"), "{api}");
}

// ---- etcd: a control-plane join that fails after its member was added ----

fn both(o: &Output) -> String {
    format!("{}{}", text(&o.stdout), text(&o.stderr))
}

/// Waits (up to 60 s) until `node`'s kube-controller-manager and kube-scheduler Pods are Ready.
fn wait_static_pods_ready(lab: &Lab, node: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let ready = ["kube-controller-manager", "kube-scheduler"]
            .iter()
            .all(|c| {
                // A mirror Pod being recreated is not ready yet (kubectl_json would panic).
                let name = format!("{c}-{node}");
                let out = lab.kubectl(&["-n", "kube-system", "get", "pod", &name, "-o", "json"]);
                let pod: serde_json::Value = match out.status.success() {
                    true => serde_json::from_slice(&out.stdout).unwrap_or_default(),
                    false => serde_json::Value::Null,
                };
                pod["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
        if ready {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{node}'s controller-manager and scheduler did not become Ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

/// `snapshot` without the mirror Pods of `node`'s static pods, in the form `hactl observe`
/// writes.
fn without_static_pods_of(snapshot: &str, node: &str) -> String {
    let mut obs: hactl::observed::ObservedState = serde_json::from_str(snapshot).unwrap();
    let suffix = format!("-{node}");
    let before = obs.api.static_pods.len();
    obs.api
        .static_pods
        .retain(|name, _| !name.ends_with(&suffix));
    let text = serde_json::to_string_pretty(&obs).unwrap() + "\n";
    // Nothing else may change: the form is hactl's own.
    if before == obs.api.static_pods.len() {
        assert_eq!(text, snapshot, "re-serializing changed the snapshot");
    }
    text
}

/// A lab of `version` where cp2's control-plane join failed right after its etcd member was
/// added (the `kubeadm-join-fails` fault), kubeadm having said `words`.
fn failed_join(net: u8, version: &str, words: &str) -> Lab {
    let lab = Lab::up(
        &format!("obsfail{net}"),
        &lab_plan(net),
        &["--kubernetes-version", version],
    );
    let (_, o) = join_failing_after_member_add(&lab, net);
    assert!(both(&o).contains(words), "{}", both(&o));
    lab
}

#[test]
fn a_1_31_join_that_failed_after_member_add_leaves_a_learner_the_plan_names_with_its_fix() {
    let net = 32;
    let lab = failed_join(
        net,
        "1.31",
        "etcdserver: can only promote a learner member which is in sync with leader",
    );
    let file = lab.dir.join("hactl.toml");

    // The snapshot: an unstarted learner on cp2's peer URL; the fixture is this lab but for
    // cp2's static pods, which crash-loop without their etcd: whether their mirror Pods exist
    // yet, are ready, have restarted or run changes with the kubelet's back-off.
    // cp1's controller-manager and scheduler may be restarting (they exit when they lose their
    // leases while cp1's API server restarts): observed once they run again.
    wait_static_pods_ready(&lab, "cp1");
    let snapshot = without_static_pods_of(&observe(&file, &lab.dir.join("stuck.json")), "cp2");
    check_fixture("stuck-learner-1.31.json", &snapshot, net);
    let state: serde_json::Value = serde_json::from_str(&snapshot).unwrap();
    let peer = format!("https://127.0.{net}.12:2380");
    let learner = state["etcd"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["peer_urls"][0] == peer.as_str())
        .unwrap_or_else(|| panic!("no member on {peer}: {snapshot}"));
    assert_eq!(learner["is_learner"], true, "{learner}");
    assert_eq!(
        learner["name"], "",
        "an unstarted member has no name: {learner}"
    );
    let id = learner["id"].as_str().unwrap();

    // The half-done join is replaced: reset and member removal first, then the join again.
    let (code, out, _) = plan(&file, "json");
    assert_eq!(code, Some(0), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let cp2 = v["resource_changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == "control_plane.cp2")
        .unwrap_or_else(|| panic!("no control_plane.cp2 in {out}"));
    assert_eq!(
        cp2["actions"],
        serde_json::json!(["delete", "create"]),
        "{cp2}"
    );
    assert_has(
        cp2["reason"].as_str().unwrap(),
        &[
            &format!("unstarted learner member {id}"),
            "kubeadm reset -f",
            &format!("etcdctl member remove {id}"),
        ],
    );
}

#[test]
fn a_1_28_join_that_failed_after_member_add_takes_etcd_health_down() {
    let lab = failed_join(
        33,
        "1.28",
        "timeout waiting for etcd cluster to be available",
    );
    let file = lab.dir.join("hactl.toml");

    let (code, out, err) = plan(&file, "json");
    assert_eq!(code, Some(1), "{err}\n{out}");
    assert_has(
        &problem(&out, "etcd"),
        &["etcd", "cp1", "restore quorum first"],
    );
}
