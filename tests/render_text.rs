//! Snapshots and properties of the terminal rendering of plans.

mod render_fixtures;

use hactl::render;
use render_fixtures as fx;

fn snapshot(name: &str, text: &str) {
    insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!(name, text);
    });
}

#[test]
fn conversion_plan() {
    snapshot(
        "render_text_conversion",
        &render::text(&fx::conversion(), false),
    );
}

#[test]
fn no_changes_plan() {
    let out = render::text(&fx::no_changes(), false);
    assert!(out.ends_with("No changes. The cluster matches the desired state.\n"));
    snapshot("render_text_no_changes", &out);
}

#[test]
fn unreachable_node_plan() {
    snapshot(
        "render_text_unreachable_node",
        &render::text(&fx::unreachable_node(), false),
    );
}

#[test]
fn replace_plan() {
    snapshot("render_text_replace", &render::text(&fx::replace(), false));
}

#[test]
fn closing_line_is_the_summary() {
    let out = render::text(&fx::conversion(), false);
    assert_eq!(
        out.lines().last(),
        Some("Plan: 1 to add, 4 to change, 0 to destroy.")
    );
}

#[test]
fn no_op_resources_get_no_section() {
    let out = render::text(&fx::conversion(), false);
    assert!(!out.contains("kubeconfig.cp1.controller-manager"));
    assert!(out.contains("  # kubeconfig.cp1.admin will be updated in place: "));
    assert!(out.contains("  # control_plane.cp2 will be joined: "));
    assert!(out.contains("  + control_plane.cp2\n"));
    assert!(!out.contains("-/+"));
}

#[test]
fn long_context_lines_are_elided_and_changed_lines_are_whole() {
    let out = render::text(&fx::conversion(), false);
    // 60 characters kept, indentation included; 1,508 - 60 elided.
    assert!(out.contains(
        "    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FU… (1448 more characters)\n"
    ));
    assert!(
        out.lines().all(|l| l.chars().count() < 400),
        "a line was not elided"
    );
    assert!(out.contains("+    server: https://k8s-api.lab.internal:6443\n"));
    assert!(out.contains("-    server: https://127.0.0.11:6443\n"));
}

#[test]
fn plain_output_has_no_escape_byte() {
    for plan in [
        fx::conversion(),
        fx::no_changes(),
        fx::unreachable_node(),
        fx::replace(),
    ] {
        assert!(!render::text(&plan, false).contains('\x1b'));
    }
}

#[test]
fn coloured_output_has_escapes_and_the_same_text() {
    let plan = fx::conversion();
    let coloured = render::text(&plan, true);
    assert!(coloured.contains("\x1b["));
    // Green for the added SAN.
    assert!(coloured.contains("\x1b[32m+DNS:k8s-api.lab.internal"));
    assert_eq!(strip_ansi(&coloured), render::text(&plan, false));
}

#[test]
fn escape_bytes_in_cluster_data_are_neutralised() {
    let mut plan = fx::conversion();
    plan.resource_changes[1].reason = "evil \x1b]0;pwned\x07 reason".to_string();
    let out = render::text(&plan, false);
    assert!(!out.contains('\x1b'));
    assert!(out.contains("evil \\u{1b}]0;pwned\\u{7} reason"));
}

/// Removes SGR sequences (`ESC [ … m`), the only ones the renderer writes.
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn configmap_keys_added_and_removed_are_shown_whole_and_unchanged_ones_skipped() {
    use hactl::plan::{Action, ResourceValue};
    use std::collections::BTreeMap;
    let configmap = |pairs: &[(&str, &str)]| ResourceValue::ConfigMap {
        namespace: "kube-system".to_string(),
        name: "kubeadm-config".to_string(),
        resource_version: Some("9".to_string()),
        data: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    };
    let mut plan = fx::no_changes();
    plan.resource_changes.push(fx::change(
        "configmap.kube-system.kubeadm-config",
        None,
        &[Action::Update],
        "test",
        Some(configmap(&[("kept", "same\n"), ("gone", "old 1\nold 2\n")])),
        Some(configmap(&[("kept", "same\n"), ("fresh", "new 1\n")])),
    ));
    plan.summary.change = 1;
    let out = render::text(&plan, false);
    assert!(out.contains("      + data.fresh:\n          @@ -0,0 +1 @@\n          +new 1\n"));
    assert!(out.contains(
        "      - data.gone:\n          @@ -1,2 +0,0 @@\n          -old 1\n          -old 2\n"
    ));
    assert!(!out.contains("data.kept"));
}
