//! Plans for every desired-state × observed-fixture pair: behaviour asserted, output snapshotted.

use std::path::Path;

use hactl::observed::{ObservedState, PodObservation, SshFailure, SshProbe};
use hactl::plan::{Action, Plan, ResourceValue, Severity};
use hactl::spec::{ComponentEndpoint, DesiredState};
use hactl::{planner, render, spec};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn desired(file: &str) -> DesiredState {
    let path = root().join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    spec::parse(file, &text).unwrap_or_else(|e| panic!("{file}: {e:?}"))
}

fn observed(name: &str) -> ObservedState {
    let path = root()
        .join("tests/fixtures/observed")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn lab_plan(fixture: &str) -> Plan {
    planner::plan(&desired("plans/lab.toml"), &observed(fixture)).unwrap()
}

fn actions(plan: &Plan) -> Vec<(String, Vec<Action>)> {
    plan.resource_changes
        .iter()
        .map(|c| (c.address.clone(), c.actions.clone()))
        .collect()
}

fn change<'a>(plan: &'a Plan, address: &str) -> &'a hactl::plan::ResourceChange {
    plan.resource_changes
        .iter()
        .find(|c| c.address == address)
        .unwrap_or_else(|| panic!("no {address} in the plan"))
}

fn file_texts(plan: &Plan, address: &str) -> (String, String) {
    let c = change(plan, address);
    match (&c.before, &c.after) {
        (
            Some(ResourceValue::File { content: b, .. }),
            Some(ResourceValue::File { content: a, .. }),
        ) => (b.clone(), a.clone()),
        other => panic!("{address} is not a file change: {other:?}"),
    }
}

/// The lines that differ between two texts of the same line count.
fn changed_lines(before: &str, after: &str) -> Vec<(String, String)> {
    assert_eq!(before.lines().count(), after.lines().count());
    before
        .lines()
        .zip(after.lines())
        .filter(|(b, a)| b != a)
        .map(|(b, a)| (b.to_string(), a.to_string()))
        .collect()
}

fn snapshot_all(name: &str, plan: &Plan) {
    let text = render::text(plan, false);
    let markdown = render::markdown(plan).join("\n");
    let json = render::json(plan);
    insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!(format!("plan_{name}_text"), text);
        insta::assert_snapshot!(format!("plan_{name}_markdown"), markdown);
        insta::assert_snapshot!(format!("plan_{name}_json"), json);
    });
}

#[test]
fn fresh_1_31_plans_the_whole_conversion() {
    let plan = lab_plan("fresh-1.31");
    use Action::*;
    let expected: Vec<(String, Vec<Action>)> = [
        ("endpoint", vec![Read]),
        ("apiserver_cert.cp1", vec![Update]),
        ("kubeconfig.cp1.admin", vec![Update]),
        ("kubeconfig.cp1.super-admin", vec![Update]),
        ("kubeconfig.cp1.kubelet", vec![Update]),
        ("kubeconfig.cp1.controller-manager", vec![NoOp]),
        ("kubeconfig.cp1.scheduler", vec![NoOp]),
        ("configmap.kube-system.kube-proxy", vec![Update]),
        ("configmap.kube-system.kubeadm-config", vec![Update]),
        ("configmap.kube-public.cluster-info", vec![Update]),
        ("kubeconfig.w1.kubelet", vec![Update]),
        ("kubeconfig.w2.kubelet", vec![Update]),
        ("control_plane.cp1", vec![NoOp]),
        ("control_plane.cp2", vec![Create]),
        ("control_plane.cp3", vec![Create]),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b))
    .collect();
    assert_eq!(actions(&plan), expected);
    assert_eq!(
        (plan.summary.add, plan.summary.change, plan.summary.destroy),
        (2, 9, 0)
    );
    assert!(plan.problems.is_empty(), "{:#?}", plan.problems);
    assert_eq!(plan.kubernetes_version.as_deref(), Some("v1.31.14"));
    assert!(plan.is_dangerous());

    // A kubeconfig change is exactly its server line.
    for address in [
        "kubeconfig.cp1.admin",
        "kubeconfig.cp1.kubelet",
        "kubeconfig.w1.kubelet",
    ] {
        let (before, after) = file_texts(&plan, address);
        assert_eq!(
            changed_lines(&before, &after),
            [(
                "    server: https://127.0.0.11:6443".to_string(),
                "    server: https://k8s-api.lab.internal:6443".to_string()
            )],
            "{address}"
        );
    }
    // The certificate keeps every SAN and adds the LB's.
    let c = change(&plan, "apiserver_cert.cp1");
    let (
        Some(ResourceValue::Certificate { sans: before, .. }),
        Some(ResourceValue::Certificate { sans: after, .. }),
    ) = (&c.before, &c.after)
    else {
        panic!("not a certificate change")
    };
    assert_eq!(&after[..before.len()], &before[..]);
    assert_eq!(
        after[before.len()..]
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["DNS:k8s-api.lab.internal", "IP:127.0.0.100"]
    );
    // Each handler once, after its last trigger.
    let kube_proxy_w1 = plan.handler("handler.w1.kube-proxy").unwrap();
    assert_eq!(
        kube_proxy_w1.triggered_by,
        ["configmap.kube-system.kube-proxy", "kubeconfig.w1.kubelet"]
    );
    assert_eq!(kube_proxy_w1.runs_after, "kubeconfig.w1.kubelet");
    let ids: Vec<&str> = plan.handlers.iter().map(|h| h.id.as_str()).collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(ids.len(), unique.len());
    // Joins run last, one at a time.
    assert!(
        change(&plan, "control_plane.cp3")
            .depends_on
            .contains(&"control_plane.cp2".to_string())
    );
    let join = match &change(&plan, "control_plane.cp2").after {
        Some(ResourceValue::ControlPlane {
            join_command: Some(j),
            ..
        }) => j.clone(),
        other => panic!("{other:?}"),
    };
    assert!(join.starts_with("kubeadm join k8s-api.lab.internal:6443 --token <bootstrap-token> --discovery-token-ca-cert-hash sha256:"));
    assert!(join.ends_with("--control-plane --certificate-key <certificate-key> --apiserver-advertise-address 127.0.0.12"));
    snapshot_all("lab_fresh-1.31", &plan);
}

#[test]
fn converted_cluster_has_no_changes() {
    let plan = lab_plan("converted-1.31");
    assert!(!plan.has_changes(), "{:#?}", actions(&plan));
    assert!(plan.problems.is_empty(), "{:#?}", plan.problems);
    assert!(plan.handlers.is_empty());
    assert!(!plan.is_dangerous());
    // All three control-plane nodes are members with their own resources.
    for node in ["cp1", "cp2", "cp3"] {
        assert_eq!(
            change(&plan, &format!("apiserver_cert.{node}")).actions,
            [Action::NoOp]
        );
        assert_eq!(
            change(&plan, &format!("control_plane.{node}")).actions,
            [Action::NoOp]
        );
    }
    assert!(render::text(&plan, false).contains("No changes."));
    snapshot_all("lab_converted-1.31", &plan);
}

#[test]
fn restarts_left_undone_after_changes_by_hand_are_all_that_is_planned() {
    let mut obs = observed("converted-1.31");
    let t = |hm: &str| format!("2026-11-24T{hm}Z");
    let mut kubelet = |node: &str, started: &str, modified: &str| {
        let n = obs.nodes.get_mut(node).unwrap();
        n.kubelet_started_at = Some(t(started));
        n.kubeconfigs_modified_at
            .insert("kubelet.conf".into(), t(modified));
    };
    kubelet("w1", "08:00:00", "09:00:00"); // edited an hour after the kubelet started
    kubelet("w2", "09:00:05", "09:00:00"); // restarted after the edit
    // Written 4 minutes after the start: the kubelet's own TLS bootstrap, left alone.
    kubelet("cp1", "09:00:00", "09:04:00");
    obs.api
        .configmaps
        .get_mut("kube-system/kube-proxy")
        .unwrap()
        .changed_at = Some(t("09:00:00"));
    let pods = &mut obs.api.kube_proxy_pods;
    pods.get_mut("cp1").unwrap().created_at = Some(t("08:00:00")); // older than the edit
    pods.get_mut("w1").unwrap().created_at = Some(t("09:00:00"));
    pods.get_mut("cp2").unwrap().created_at = Some(t("10:00:00"));
    // w2's and cp3's Pods have no creation time: unknown, left alone.
    // cp1's controller-manager.conf changed after its static pod's container started (the
    // node's clock, both); the scheduler's container started after its file changed.
    let cp1 = obs.nodes.get_mut("cp1").unwrap();
    for (file, at) in [
        ("controller-manager.conf", "09:30:00"),
        ("scheduler.conf", "09:30:00"),
    ] {
        cp1.kubeconfigs_modified_at.insert(file.into(), t(at));
    }
    for (pod, started) in [
        ("kube-controller-manager-cp1", "09:00:00"),
        ("kube-scheduler-cp1", "09:30:01"),
    ] {
        obs.api.static_pods.insert(
            pod.into(),
            PodObservation {
                name: pod.into(),
                ready: true,
                restarts: 0,
                created_at: Some(t("08:00:00")),
                started_at: Some(t(started)),
            },
        );
    }
    let plan = planner::plan(&desired("plans/lab.toml"), &obs).unwrap();

    assert!(
        plan.resource_changes
            .iter()
            .all(|c| c.actions == [Action::NoOp] || c.actions == [Action::Read]),
        "{:#?}",
        actions(&plan)
    );
    let handlers: Vec<(&str, &[String])> = plan
        .handlers
        .iter()
        .map(|h| (h.id.as_str(), h.triggered_by.as_slice()))
        .collect();
    assert_eq!(
        handlers,
        [
            (
                "handler.cp1.kube-controller-manager",
                &["kubeconfig.cp1.controller-manager".to_string()][..]
            ),
            (
                "handler.cp1.kube-proxy",
                &["configmap.kube-system.kube-proxy".to_string()][..]
            ),
            (
                "handler.w1.kubelet",
                &["kubeconfig.w1.kubelet".to_string()][..]
            ),
        ]
    );
    assert!(plan.has_changes());
    assert!(
        change(&plan, "kubeconfig.w1.kubelet")
            .reason
            .contains("started at 2026-11-24T08:00:00Z, more than 5 minutes before /etc/kubernetes/kubelet.conf changed at 2026-11-24T09:00:00Z"),
        "{}",
        change(&plan, "kubeconfig.w1.kubelet").reason
    );
    let text = render::text(&plan, false);
    assert!(!text.contains("No changes."), "{text}");
    assert!(text.contains("3 handlers left to run"), "{text}");
    assert!(
        change(&plan, "kubeconfig.cp1.controller-manager")
            .reason
            .contains("but kube-controller-manager on cp1 started at 2026-11-24T09:00:00Z, before /etc/kubernetes/controller-manager.conf changed at 2026-11-24T09:30:00Z"),
        "{}",
        change(&plan, "kubeconfig.cp1.controller-manager").reason
    );
    snapshot_all("lab_converted-1.31_restarts-left", &plan);

    // Once restarted (the kubelet after its file, new Pods after the ConfigMap): nothing left.
    let mut done = obs.clone();
    done.nodes.get_mut("w1").unwrap().kubelet_started_at = Some(t("09:00:01"));
    done.api.kube_proxy_pods.get_mut("cp1").unwrap().created_at = Some(t("09:00:01"));
    done.api
        .static_pods
        .get_mut("kube-controller-manager-cp1")
        .unwrap()
        .started_at = Some(t("09:30:05"));
    let plan = planner::plan(&desired("plans/lab.toml"), &done).unwrap();
    assert!(plan.handlers.is_empty(), "{:#?}", plan.handlers);
    assert!(!plan.has_changes());
}

#[test]
fn a_run_stopped_after_the_certificate_plans_only_the_rest() {
    let plan = lab_plan("half-1.31");
    assert_eq!(change(&plan, "apiserver_cert.cp1").actions, [Action::NoOp]);
    assert_eq!(
        change(&plan, "kubeconfig.cp1.admin").actions,
        [Action::Update]
    );
    assert_eq!((plan.summary.add, plan.summary.change), (2, 8));
    assert!(plan.handler("handler.cp1.kube-apiserver").is_none());
    snapshot_all("lab_half-1.31", &plan);
}

#[test]
fn v1_23_on_docker_keeps_v1beta3_and_has_no_super_admin() {
    let plan = lab_plan("fresh-1.23-docker");
    assert!(
        plan.resource_changes
            .iter()
            .all(|c| c.address != "kubeconfig.cp1.super-admin")
    );
    assert_eq!(plan.container_runtime.as_deref(), Some("docker"));
    let c = change(&plan, "configmap.kube-system.kubeadm-config");
    let Some(ResourceValue::ConfigMap { data, .. }) = &c.after else {
        panic!()
    };
    let doc = &data["ClusterConfiguration"];
    assert!(doc.contains("apiVersion: kubeadm.k8s.io/v1beta3\n"));
    assert!(doc.contains("controlPlaneEndpoint: k8s-api.lab.internal:6443\n"));
    assert!(doc.contains("  certSANs:\n  - k8s-api.lab.internal\n  - 127.0.0.100\n  extraArgs:"));
    // Joins on 1.23 are voting members from the start: the reason says what that risks.
    assert!(change(&plan, "control_plane.cp2").reason.contains("quorum"));
    snapshot_all("lab_fresh-1.23-docker", &plan);
}

#[test]
fn v1_33_keeps_control_plane_kubelets_local() {
    let plan = lab_plan("fresh-1.33");
    assert_eq!(
        change(&plan, "kubeconfig.cp1.kubelet").actions,
        [Action::NoOp]
    );
    assert_eq!(
        change(&plan, "kubeconfig.w1.kubelet").actions,
        [Action::Update]
    );
    assert!(plan.handler("handler.cp1.kubelet").is_none());
    snapshot_all("lab_fresh-1.33", &plan);
}

#[test]
fn an_edited_admin_conf_changes_only_the_current_clusters_server() {
    let plan = lab_plan("edited-admin-1.31");
    let (before, after) = file_texts(&plan, "kubeconfig.cp1.admin");
    let changed = changed_lines(&before, &after);
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert!(changed[0].0.contains("https://127.0.0.11:6443"));
    assert!(changed[0].1.contains("https://k8s-api.lab.internal:6443"));
    assert!(
        after.contains("https://10.20.0.5:6443"),
        "the other cluster keeps its server"
    );
    snapshot_all("lab_edited-admin-1.31", &plan);
}

#[test]
fn an_unreachable_worker_is_named_and_left_undecided() {
    let plan = lab_plan("unreachable-worker-1.31");
    assert_eq!(
        change(&plan, "kubeconfig.w2.kubelet").actions,
        [Action::Unknown]
    );
    assert_eq!(
        change(&plan, "kubeconfig.w1.kubelet").actions,
        [Action::Update]
    );
    assert!(plan.has_errors());
    let p = plan
        .problems
        .iter()
        .find(|p| p.subject == "w2")
        .expect("a problem about w2");
    assert_eq!(p.severity, Severity::Error);
    assert!(p.message.contains("127.0.0.22"), "{}", p.message);
    assert_eq!(plan.summary.unknown, 1);
    snapshot_all("lab_unreachable-worker-1.31", &plan);

    // Logged in, but the node script hung: the fix is about the node, not about ssh.
    let mut obs = observed("unreachable-worker-1.31");
    obs.nodes.get_mut("w2").unwrap().ssh = SshProbe::failed(
        SshFailure::CommandTimeout,
        "the node script (versions, kubeconfigs, certificates) did not finish within 60 s (--command-timeout); hactl stopped waiting for it",
    );
    let plan = planner::plan(&desired("plans/lab.toml"), &obs).unwrap();
    let p = plan.problems.iter().find(|p| p.subject == "w2").unwrap();
    assert!(
        p.message.contains("could not be read over SSH"),
        "{}",
        p.message
    );
    assert!(p.help.starts_with("raise --command-timeout"), "{}", p.help);

    // Logged in, but kubeadm's files could not be read: sudo is the fix for a user hactl does
    // not read as root with; the files' modes and labels when it already does.
    obs.nodes.get_mut("w2").unwrap().ssh = SshProbe::failed(
        SshFailure::Unreadable,
        "/etc/kubernetes/kubelet.conf (Permission denied) as user ops",
    );
    let help = |plan_text: &str| {
        let desired = spec::parse("lab.toml", plan_text).unwrap();
        let plan = planner::plan(&desired, &obs).unwrap();
        let p = plan.problems.iter().find(|p| p.subject == "w2").unwrap();
        assert!(
            p.message.contains("could not be read over SSH"),
            "{}",
            p.message
        );
        p.help.clone()
    };
    let lab = std::fs::read_to_string(root().join("plans/lab.toml")).unwrap();
    assert!(lab.contains("user = \"root\""), "{lab}");
    let as_ops = lab.replace("user = \"root\"", "user = \"ops\"");
    assert!(help(&as_ops).starts_with("set ssh.sudo = true"));
    let as_root = help(&lab);
    assert!(
        as_root.starts_with("hactl reads as root there"),
        "{as_root}"
    );
    assert!(as_root.contains("ls -lZ"), "{as_root}");
    let with_sudo = as_ops.replace("user = \"ops\"", "user = \"ops\"\nsudo = true");
    assert!(help(&with_sudo).starts_with("hactl reads as root there"));
    assert_eq!(
        change(&plan, "kubeconfig.w2.kubelet").actions,
        [Action::Unknown]
    );
}

#[test]
fn a_stuck_learner_is_replaced_before_the_next_join() {
    let plan = lab_plan("stuck-learner-1.31");
    assert_eq!(
        change(&plan, "control_plane.cp2").actions,
        [Action::Delete, Action::Create]
    );
    assert!(
        change(&plan, "control_plane.cp2")
            .reason
            .contains("etcdctl member remove")
    );
    assert_eq!(change(&plan, "control_plane.cp3").actions, [Action::Create]);
    // cp2's own stale member is handled by its replace, so nothing blocks the plan.
    assert!(!plan.has_errors(), "{:#?}", plan.problems);
    assert_eq!(plan.summary.destroy, 1);
    snapshot_all("lab_stuck-learner-1.31", &plan);
}

#[test]
fn component_endpoint_policy_sends_controller_manager_and_scheduler_through_the_lb() {
    let mut d = desired("plans/lab.toml");
    d.policy.component_endpoint = ComponentEndpoint::Endpoint;
    let plan = planner::plan(&d, &observed("fresh-1.31")).unwrap();
    for address in [
        "kubeconfig.cp1.controller-manager",
        "kubeconfig.cp1.scheduler",
    ] {
        assert_eq!(
            change(&plan, address).actions,
            [Action::Update],
            "{address}"
        );
    }
    assert!(
        plan.handler("handler.cp1.kube-controller-manager")
            .is_some()
    );
    assert!(plan.handler("handler.cp1.kube-scheduler").is_some());
}

#[test]
fn production_example_plans_against_the_lab_fixture_with_every_node_named() {
    // The production file describes other nodes than the lab fixture observed (cp1..cp3 share
    // the lab's names at other addresses): each of them is named in an error, none is planned
    // from the lab's data, and nothing panics.
    let production = desired("plans/production.toml");
    let plan = planner::plan(&production, &observed("fresh-1.31")).unwrap();
    assert!(plan.has_errors());
    for node in &production.nodes {
        assert!(
            plan.problems
                .iter()
                .any(|p| p.subject == node.name && p.severity == Severity::Error),
            "no problem names {}",
            node.name
        );
    }
    assert!(
        plan.resource_changes
            .iter()
            .filter(|c| c.node.is_some())
            .all(|c| !c.is_change()),
        "a node resource was planned from another cluster's snapshot"
    );
}

#[test]
fn plans_are_deterministic_round_trip_and_hold_no_secret() {
    for fixture in [
        "fresh-1.31",
        "converted-1.31",
        "stuck-learner-1.31",
        "fresh-1.23-docker",
    ] {
        let a = render::json(&lab_plan(fixture));
        let b = render::json(&lab_plan(fixture));
        assert_eq!(a, b, "{fixture}: two plans of the same input differ");
        let parsed = render::parse_plan(&a).unwrap();
        assert_eq!(
            render::json(&parsed),
            a,
            "{fixture}: the saved plan does not round-trip"
        );
        for forbidden in ["PRIVATE KEY", "BEGIN RSA", "BEGIN EC"] {
            assert!(
                !a.contains(forbidden),
                "{fixture}: the plan holds {forbidden}"
            );
        }
        // Every key or token line of every kubeconfig text, before and after, is redacted.
        let texts = parsed
            .resource_changes
            .iter()
            .flat_map(|c| [&c.before, &c.after])
            .flatten()
            .flat_map(|v| match v {
                ResourceValue::File { content, .. } => vec![content.clone()],
                ResourceValue::ConfigMap { data, .. } => data.values().cloned().collect(),
                _ => vec![],
            });
        let mut keys = 0;
        for text in texts {
            for line in text.lines().filter(|l| {
                l.trim_start().starts_with("client-key-data:")
                    || l.trim_start().starts_with("token:")
            }) {
                keys += 1;
                assert!(line.trim_end().ends_with(": REDACTED"), "{fixture}: {line}");
            }
        }
        assert!(
            keys > 0,
            "{fixture}: no key lines seen, so the check checked nothing"
        );
    }
}

#[test]
fn an_unhealthy_etcd_member_blocks_the_joins() {
    let mut obs = observed("fresh-1.31");
    obs.etcd.members[0].healthy = Some(false);
    let plan = planner::plan(&desired("plans/lab.toml"), &obs).unwrap();
    assert!(plan.has_errors());
    let blocked: Vec<&str> = plan
        .problems
        .iter()
        .filter(|p| p.message.contains("an unhealthy member"))
        .map(|p| p.subject.as_str())
        .collect();
    assert_eq!(blocked, ["control_plane.cp2", "control_plane.cp3"]);
    // The same cluster with a healthy member plans cleanly: the check keys on the field.
    obs.etcd.members[0].healthy = Some(true);
    assert!(
        !planner::plan(&desired("plans/lab.toml"), &obs)
            .unwrap()
            .has_errors()
    );
}

/// Every change a plan makes carries its operation, and every plan file of the fixtures, the
/// operations included, validates against `schemas/plan.schema.json`; one with an operation
/// of an unknown kind, or without a field apply needs, does not.
#[test]
fn every_change_has_an_operation_and_saved_plans_validate_against_the_schema() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("schemas/plan.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let mut operations = 0;
    for entry in std::fs::read_dir(root().join("tests/fixtures/observed")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let plan = lab_plan(&name);
        for c in &plan.resource_changes {
            let update = c.actions == [Action::Update];
            assert_eq!(update, c.operation.is_some(), "{name}: {}", c.address);
            if let Some(op) = &c.operation {
                assert_eq!(op.node(), c.node.as_deref(), "{name}: {}", c.address);
                operations += 1;
            }
        }
        let json: serde_json::Value = serde_json::from_str(&render::json(&plan)).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&json)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:#?}");
    }
    assert!(operations >= 40, "only {operations} operations in all");

    let plan = render::json(&lab_plan("fresh-1.31"));
    let wrong_kind = plan.replacen("\"set-kubeconfig-server\"", "\"rewrite-file\"", 1);
    let no_hash = plan.replacen("\"observed_sha256\"", "\"sha256\"", 1);
    for bad in [wrong_kind, no_hash] {
        assert_ne!(bad, plan);
        let json: serde_json::Value = serde_json::from_str(&bad).unwrap();
        assert!(!validator.is_valid(&json));
        assert!(render::parse_plan(&bad).is_err(), "hactl refuses it too");
    }
}

/// A saved plan is applied only while what it was made from holds: an edit by hand of
/// kube-proxy's ConfigMap or of a kubeconfig on a node makes it stale, naming the resource; a
/// plan for another cluster is refused as such.
#[test]
fn a_saved_plan_made_stale_by_a_hand_edit_is_refused_naming_the_resource() {
    use hactl::plan::{StalePlan, check_saved};
    let saved = lab_plan("fresh-1.31");
    assert_eq!(check_saved(&saved, &lab_plan("fresh-1.31")), Ok(()));
    let mut edited = observed("fresh-1.31");
    let cm = edited
        .api
        .configmaps
        .get_mut("kube-system/kube-proxy")
        .unwrap();
    cm.resource_version = "99999".into();
    let node = edited.nodes.get_mut("w1").unwrap();
    node.kubeconfigs_sha256
        .insert("kubelet.conf".into(), format!("sha256:{}", "0".repeat(64)));
    let fresh = planner::plan(&desired("plans/lab.toml"), &edited).unwrap();
    let err = check_saved(&saved, &fresh).unwrap_err();
    let StalePlan::Drifted(drift) = &err else {
        panic!("{err}")
    };
    let addresses: Vec<&str> = drift.iter().map(|d| d.address.as_str()).collect();
    assert_eq!(
        addresses,
        ["configmap.kube-system.kube-proxy", "kubeconfig.w1.kubelet"]
    );
    let text = err.to_string();
    assert!(text.starts_with("the saved plan is stale"), "{text}");
    assert!(
        text.ends_with("run `hactl plan` again and review the new plan"),
        "{text}"
    );
    let mut other = fresh.clone();
    other.cluster = "prod".into();
    assert!(matches!(
        check_saved(&saved, &other),
        Err(StalePlan::OtherCluster { .. })
    ));

    // A plan saved from a desired-state file is refused for that file edited, or another one.
    let file = |path: &str, sha: &str| hactl::plan::DesiredStateFile {
        path: path.into(),
        sha256: sha.into(),
    };
    let mut saved = lab_plan("fresh-1.31");
    saved.desired_state = Some(file("/srv/hactl.toml", "sha256:aa"));
    let mut fresh = lab_plan("fresh-1.31");
    fresh.desired_state = Some(file("/srv/hactl.toml", "sha256:aa"));
    assert_eq!(check_saved(&saved, &fresh), Ok(()));
    fresh.desired_state = Some(file("/srv/hactl.toml", "sha256:bb"));
    let err = check_saved(&saved, &fresh).unwrap_err().to_string();
    assert!(
        err.contains("/srv/hactl.toml as it was then (sha256:aa); it is sha256:bb now"),
        "{err}"
    );
    fresh.desired_state = Some(file("/srv/other.toml", "sha256:aa"));
    let err = check_saved(&saved, &fresh).unwrap_err().to_string();
    assert!(
        err.contains("it is /srv/other.toml (sha256:aa) now"),
        "{err}"
    );
}

/// A saved plan edited by hand (what it would write, or a handler dropped) is not what hactl
/// plans from the same file and cluster: refused, naming what differs, though nothing drifted.
#[test]
fn a_saved_plan_edited_by_hand_is_refused_naming_what_differs() {
    use hactl::plan::{StalePlan, check_saved};
    let fresh = lab_plan("fresh-1.31");
    let mut saved = fresh.clone();
    let i = saved
        .resource_changes
        .iter()
        .position(|c| c.operation.is_some())
        .expect("a change with an operation");
    saved.resource_changes[i].depends_on.clear();
    saved.resource_changes[i].operation = None;
    saved.handlers.pop();
    let err = check_saved(&saved, &fresh).unwrap_err();
    assert_eq!(
        err,
        StalePlan::Edited(vec![
            saved.resource_changes[i].address.clone(),
            "handlers".into()
        ])
    );
    assert!(
        err.to_string().ends_with(
            "it was edited after it was saved. Run `hactl plan` again and review the new plan"
        ),
        "{err}"
    );
}
