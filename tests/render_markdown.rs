//! Snapshots of the pull-request rendering, and the splitting of big plans into comments.

mod render_fixtures;

use hactl::plan::Plan;
use hactl::render;
use render_fixtures as fx;

fn snapshot(name: &str, parts: &[String]) {
    let joined = parts.join("\n<!-- ✂ next comment ✂ -->\n\n");
    insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!(name, joined);
    });
}

#[test]
fn conversion_plan() {
    let parts = render::markdown(&fx::conversion());
    assert_eq!(parts.len(), 1);
    snapshot("render_markdown_conversion", &parts);
}

#[test]
fn no_changes_plan() {
    snapshot(
        "render_markdown_no_changes",
        &render::markdown(&fx::no_changes()),
    );
}

#[test]
fn unreachable_node_plan() {
    snapshot(
        "render_markdown_unreachable_node",
        &render::markdown(&fx::unreachable_node()),
    );
}

#[test]
fn replace_plan() {
    let parts = render::markdown(&fx::replace());
    assert!(parts[0].contains("### ⚠️ This plan destroys <code>apiserver_cert.cp1</code>"));
    snapshot("render_markdown_replace", &parts);
}

#[test]
fn summary_and_warning_come_before_any_fold() {
    let part = &render::markdown(&fx::conversion())[0];
    let first_fold = part.find("<details>").expect("a fold");
    let warning = part
        .find("### ⚠️ This plan joins control-plane nodes: <code>control_plane.cp2</code>")
        .expect("the join warning");
    let heading = part.find("## hactl plan for").expect("the heading");
    let summary = part
        .find("**Plan:** 1 to add, 4 to change, 0 to destroy.")
        .expect("the summary line");
    let problem = part.find("**Warning**").expect("the problem");
    assert!(part.starts_with("<!-- hactl plan: part 1 of 1 -->\n"));
    assert!(warning < heading && heading < summary && summary < first_fold);
    assert!(problem < first_fold);
}

#[test]
fn diff_lines_start_in_column_zero() {
    for part in render::markdown(&fx::conversion()) {
        for (fence, body) in fenced(&part) {
            assert!(fence.starts_with("```"));
            for line in body {
                assert!(
                    line.starts_with(['+', '-', ' ', '\\']) || line.starts_with("@@ "),
                    "{line:?}"
                );
            }
        }
    }
}

#[test]
fn big_plans_are_split_into_valid_parts() {
    let plan = fx::big_configmap();
    let parts = render::markdown(&plan);
    assert!(parts.len() >= 3, "only {} parts", parts.len());

    for (i, part) in parts.iter().enumerate() {
        assert!(part.chars().count() < 65_000, "part {} is too long", i + 1);
        assert!(part.starts_with(&format!(
            "<!-- hactl plan: part {} of {} -->\n",
            i + 1,
            parts.len()
        )));
        assert_balanced(part);
    }
    assert!(parts[0].contains("**Plan:** 1 to add, 5 to change, 0 to destroy."));
    assert!(parts[1].contains(
        "<details><summary><code>configmap.kube-system.dashboards</code> (continued)</summary>"
    ));
    assert!(
        parts
            .last()
            .is_some_and(|p| p.contains("#### Handlers, in order"))
    );

    // Only the resource too big for a part is split; every other one sits whole in one part.
    for change in plan
        .resource_changes
        .iter()
        .filter(|c| c.address != "configmap.kube-system.dashboards")
    {
        let continued = format!("<code>{}</code> (continued)", change.address);
        assert!(
            parts.iter().all(|p| !p.contains(&continued)),
            "{} was split",
            change.address
        );
    }

    // Concatenated across parts, the diff lines are exactly the unsplit diff's.
    let (before, after) = fx::big_texts();
    let expected: Vec<String> = similar::TextDiff::from_lines(&before, &after)
        .unified_diff()
        .context_radius(3)
        .to_string()
        .lines()
        .map(str::to_string)
        .collect();
    let got: Vec<String> = parts
        .iter()
        .flat_map(|p| diff_lines_of(p, "configmap.kube-system.dashboards"))
        .collect();
    assert_eq!(got.len(), expected.len());
    assert_eq!(got, expected);
}

#[test]
fn resources_after_a_split_are_whole() {
    let parts = render::markdown(&fx::big_configmap());
    let all: Vec<String> = parts
        .iter()
        .flat_map(|p| diff_lines_of(p, "configmap.kube-system.kube-proxy"))
        .collect();
    let single: Vec<String> = render::markdown(&fx::conversion())
        .iter()
        .flat_map(|p| diff_lines_of(p, "configmap.kube-system.kube-proxy"))
        .collect();
    assert_eq!(all, single);
}

#[test]
fn a_plan_with_nothing_still_renders_one_part() {
    let mut plan: Plan = fx::no_changes();
    plan.resource_changes.clear();
    let parts = render::markdown(&plan);
    assert_eq!(parts.len(), 1);
    assert!(parts[0].contains("**No changes.**"));
}

/// Fences, `<details>` and `</details>` pair up in order.
fn assert_balanced(part: &str) {
    let mut fence: Option<&str> = None;
    let mut open_details = 0usize;
    for line in part.lines() {
        match fence {
            Some(f) => {
                if line == f {
                    fence = None;
                }
            }
            None => {
                if line.starts_with("```") {
                    fence = Some(line.trim_end_matches("diff"));
                } else {
                    open_details += line.matches("<details>").count();
                    let closes = line.matches("</details>").count();
                    assert!(closes <= open_details, "</details> without <details>");
                    open_details -= closes;
                }
            }
        }
    }
    assert!(fence.is_none(), "a fence is left open");
    assert_eq!(open_details, 0, "a <details> is left open");
}

/// Every fenced block of a part: its opening fence line and the lines inside.
fn fenced(part: &str) -> Vec<(String, Vec<String>)> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, Vec<String>)> = None;
    for line in part.lines() {
        match current.as_mut() {
            Some((open, body)) => {
                if line == open.trim_end_matches("diff") {
                    blocks.extend(current.take());
                } else {
                    body.push(line.to_string());
                }
            }
            None if line.starts_with("```") => current = Some((line.to_string(), Vec::new())),
            None => {}
        }
    }
    blocks
}

/// The diff lines of one resource's fenced blocks in a part, hunk headers included.
fn diff_lines_of(part: &str, address: &str) -> Vec<String> {
    let opener = format!("<details><summary><code>{address}</code>");
    let mut lines = Vec::new();
    for section in part.split("<details><summary>").skip(1) {
        let section = format!("<details><summary>{section}");
        if section.starts_with(&opener) {
            for (_, body) in fenced(&section) {
                lines.extend(body);
            }
        }
    }
    lines
}
