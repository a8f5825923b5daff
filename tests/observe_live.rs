//! `hactl observe` and live `hactl plan` against real labs: the plan of a fresh lab is the plan
//! of its fixture, a lab converted partly by hand plans only what is left, failures name the
//! node and the fix, and observation changes nothing on the cluster.
//!
//! The fixtures in `tests/fixtures/observed/fresh-*.json` are `hactl observe` of these labs
//! (addresses mapped to 127.0.0.x): the drift checks here fail when the lab and the fixtures
//! disagree in anything but key material and timestamps. `HACTL_WRITE_FIXTURES=1 cargo test
//! --test observe_live` rewrites them from the labs instead.

mod lab_support;

use lab_support::observing::{
    check_fixture, configmap_versions, diff, fixture_plan, hactl, hactl_with, lab_plan, node_files,
    normalize, observe, text,
};
use lab_support::{Lab, ssh_targets_in};

/// A fresh lab of `version`: observation is read-only, the snapshot matches the fixture, and
/// the live plan is the fixture's plan; the same through cp1's admin.conf over SSH.
fn fresh_lab_plans_like_its_fixture(net: u8, version_args: &[&str], fixture: &str) {
    let lab = Lab::up(&format!("observe{net}"), &lab_plan(net), version_args);
    let file = lab.dir.join("hactl.toml");
    let files_before = node_files(&lab);
    let configmaps_before = configmap_versions(&lab);

    let snapshot = lab.dir.join("snapshot.json");
    let json = observe(&file, &snapshot);
    for secret in ["PRIVATE KEY", "client-key-data: LS0", "token: "] {
        assert!(!json.contains(secret), "the snapshot holds {secret:?}");
    }
    check_fixture(fixture, &json, net);

    let plan_file = lab.dir.join("plan.json");
    let live = hactl(&[
        "plan",
        "--no-color",
        file.to_str().unwrap(),
        "-o",
        plan_file.to_str().unwrap(),
    ]);
    assert_eq!(live.status.code(), Some(0), "{}", text(&live.stderr));
    let live_text = text(&live.stdout);
    let (want, got) = (
        normalize(&fixture_plan(fixture), net),
        normalize(&live_text, net),
    );
    assert!(
        want == got,
        "the live plan differs from the plan of {fixture}:\n{}",
        diff(&want, &got)
    );
    // The saved plan renders the same, and carries the fingerprint of what was observed.
    let shown = hactl(&["show", "--no-color", plan_file.to_str().unwrap()]);
    assert_eq!(text(&shown.stdout), live_text);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan_file).unwrap()).unwrap();
    assert!(
        saved["observed_fingerprint"]
            .as_str()
            .is_some_and(|f| f.starts_with("sha256:") && f.len() == 71),
        "{saved}"
    );
    // The snapshot plans the same as the live cluster.
    let offline = hactl(&[
        "plan",
        "--no-color",
        file.to_str().unwrap(),
        "--observed",
        snapshot.to_str().unwrap(),
    ]);
    assert_eq!(normalize(&text(&offline.stdout), net), got);
    let changes = hactl(&["plan", "--detailed-exitcode", file.to_str().unwrap()]);
    assert_eq!(changes.status.code(), Some(2), "{}", text(&changes.stderr));

    // Without cluster.kubeconfig, the API is reached with cp1's admin.conf, read over SSH.
    let over_ssh = lab.dir.join("over-ssh.toml");
    let plan_text = std::fs::read_to_string(&file).unwrap();
    let kept: Vec<&str> = plan_text
        .lines()
        .filter(|l| !l.starts_with("kubeconfig ="))
        .collect();
    assert_ne!(kept.len(), plan_text.lines().count(), "{plan_text}");
    std::fs::write(&over_ssh, kept.join("\n")).unwrap();
    let via_ssh = hactl(&["plan", "--no-color", over_ssh.to_str().unwrap()]);
    assert_eq!(via_ssh.status.code(), Some(0), "{}", text(&via_ssh.stderr));
    assert_eq!(normalize(&text(&via_ssh.stdout), net), got);
    check_log(&lab, &over_ssh, &text(&via_ssh.stdout));

    // Nothing changed: no file on any node, no ConfigMap.
    assert_eq!(node_files(&lab), files_before, "observation changed files");
    assert_eq!(configmap_versions(&lab), configmaps_before);
}

/// `HACTL_LOG=trace` through cp1's admin.conf: the same plan; a line for every node, etcd, the
/// LB and the API; only hactl's own events (a bare level leaves kube and hyper out); no secret.
fn check_log(lab: &Lab, file: &std::path::Path, plan: &str) {
    let logged = hactl_with(
        &[("HACTL_LOG", "trace")],
        &["plan", "--no-color", file.to_str().unwrap()],
    );
    assert_eq!(text(&logged.stdout), plan);
    let log = text(&logged.stderr);
    // An event's line: `   0.123456789s LEVEL target: message fields`, at any level.
    let levels = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"];
    let events: Vec<&str> = log
        .lines()
        .filter(|l| {
            let mut words = l.split_whitespace();
            words.next().is_some_and(|t| t.ends_with('s'))
                && words.next().is_some_and(|w| levels.contains(&w))
        })
        .collect();
    for line in &events {
        let target = line.split_whitespace().nth(2).unwrap_or_default();
        assert!(
            target.starts_with("hactl::"),
            "another crate's event: {line}"
        );
    }
    let nodes = ssh_targets_in(&lab.dir);
    assert!(nodes.iter().any(|t| t.node == "cp1"));
    for target in &nodes {
        assert!(
            events
                .iter()
                .any(|l| l.contains("hactl::observe: read the node ")
                    && l.contains(&format!(" node={} ", target.node))
                    && l.contains(" ok=true")),
            "no line for {}:\n{log}",
            target.node
        );
    }
    for what in [
        "hactl::observe: round 2 starts through this node: ",
        "hactl::observe: read etcd's members and health node=cp1 ",
        "hactl::observe: probed the load balancer host=k8s-api.lab.internal port=6443 ",
        "hactl::observe: read the API through=cp1:/etc/kubernetes/admin.conf ",
        "hactl::transport::ssh: ran a command node=cp1 command=a ",
        "hactl::transport::cluster: list nodes took_ms=",
        "hactl::transport::cluster: get configmaps kube-system/kubeadm-config took_ms=",
        "hactl::cli: planned ",
    ] {
        assert!(
            events.iter().any(|l| l.contains(what)),
            "no {what:?}:\n{log}"
        );
    }
    // Not the admin.conf's key nor its certificate, nor any other key.
    let admin = std::fs::read_to_string(lab.dir.join("admin.conf")).unwrap();
    for field in ["client-key-data:", "client-certificate-data:"] {
        let value = admin
            .lines()
            .find_map(|l| l.trim().strip_prefix(field))
            .unwrap_or_else(|| panic!("no {field} in the lab's admin.conf"))
            .trim();
        assert!(value.len() > 100);
        assert!(
            !log.contains(&value[..64]),
            "the log holds the admin.conf's {field}"
        );
    }
    for secret in ["PRIVATE KEY", "LS0tLS1CRUdJTi", "token: "] {
        assert!(!log.contains(secret), "the log holds {secret:?}");
    }
}

#[test]
fn a_fresh_1_31_lab_plans_like_its_fixture_and_is_only_read() {
    fresh_lab_plans_like_its_fixture(26, &[], "fresh-1.31.json");
}

#[test]
fn a_fresh_1_23_docker_lab_plans_like_its_fixture() {
    fresh_lab_plans_like_its_fixture(
        27,
        &["--kubernetes-version", "1.23", "--runtime", "docker"],
        "fresh-1.23-docker.json",
    );
}

#[test]
fn a_fresh_1_33_lab_plans_like_its_fixture() {
    fresh_lab_plans_like_its_fixture(28, &["--kubernetes-version", "1.33"], "fresh-1.33.json");
}
