//! `hactl observe` and live `hactl plan` against real labs: the plan of a fresh lab is the plan
//! of its fixture, a lab converted partly by hand plans only what is left, failures name the
//! node and the fix, and observation changes nothing on the cluster.
//!
//! The fixtures in `tests/fixtures/observed/fresh-*.json` are `hactl observe` of these labs
//! (addresses mapped to 127.0.0.x): the drift checks here fail when the lab and the fixtures
//! disagree in anything but key material and timestamps. `HACTL_WRITE_FIXTURES=1 cargo test
//! --test observe_live` rewrites them from the labs instead.

mod lab_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use lab_support::{HACTL, Lab};
use regex::Regex;
use sha2::{Digest, Sha256};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/observed");
const LAB_PLAN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/plans/lab.toml");

/// `plans/lab.toml` moved to 127.0.<net>.x.
fn lab_plan(net: u8) -> String {
    std::fs::read_to_string(LAB_PLAN)
        .unwrap()
        .replace("127.0.0.", &format!("127.0.{net}."))
}

fn hactl(args: &[&str]) -> Output {
    std::process::Command::new(HACTL)
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// What differs between two labs of the same shape: addresses, key material (elided base64
/// lengths, digests, pins), times, token ids, generated names.
fn normalize(s: &str, net: u8) -> String {
    let s = s.replace(&format!("127.0.{net}."), "127.0.0.");
    let rules = [
        (r"\(\d+ more characters\)", "(N more characters)"),
        (r"sha256:[0-9a-f]{64}", "sha256:HASH"),
        (
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)",
            "TIME",
        ),
        (r"jws-kubeconfig-[0-9a-z]{6}", "jws-kubeconfig-ID"),
        (r"kube-proxy-[0-9a-z]{5}\b", "kube-proxy-XXXXX"),
        (r"--token [0-9a-z]{6}\.", "--token ID."),
        // Detached JWS (`header..signature`), etcd member ids, resourceVersions, lease holders.
        (r"eyJ[A-Za-z0-9_-]*\.\.[A-Za-z0-9_-]+", "JWS"),
        (r#""id": "[0-9a-f]{1,16}""#, r#""id": "ID""#),
        (
            r#""resource_version": "\d+""#,
            r#""resource_version": "RV""#,
        ),
        (
            r#""holder": "([a-z0-9.-]+)_[0-9a-f-]{36}""#,
            r#""holder": "${1}_UUID""#,
        ),
    ];
    rules.iter().fold(s, |s, (re, with)| {
        Regex::new(re).unwrap().replace_all(&s, *with).into_owned()
    })
}

/// The unified diff of two texts, for assertion messages.
fn diff(a: &str, b: &str) -> String {
    similar::TextDiff::from_lines(a, b)
        .unified_diff()
        .context_radius(2)
        .header("fixture", "live")
        .to_string()
}

/// Every file under every node's /etc/kubernetes and /var/lib/kubelet, with its digest and mode.
fn node_files(lab: &Lab) -> BTreeMap<PathBuf, String> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                walk(&path, out);
            } else if let Ok(bytes) = std::fs::read(&path) {
                use std::os::unix::fs::MetadataExt;
                let digest = hex::encode(Sha256::digest(&bytes));
                out.insert(path, format!("{digest} {:o}", meta.mode()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&lab.dir.join("nodes"), &mut out);
    out.retain(|p, _| {
        let p = p.to_string_lossy();
        p.contains("/etc/kubernetes/") || p.contains("/var/lib/kubelet/")
    });
    out
}

/// Every ConfigMap's namespace/name@resourceVersion, by the real kubectl.
fn configmap_versions(lab: &Lab) -> String {
    let o = lab.kubectl(&[
        "get",
        "configmaps",
        "-A",
        "-o",
        "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}@{.metadata.resourceVersion}{\"\\n\"}{end}",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    text(&o.stdout)
}

/// The plan text for the fixture of the same lab, as `plan --observed` prints it.
fn fixture_plan(fixture: &str) -> String {
    let o = hactl(&[
        "plan",
        "--no-color",
        LAB_PLAN,
        "--observed",
        &format!("{FIXTURES}/{fixture}"),
    ]);
    text(&o.stdout)
}

/// `hactl observe FILE -o SNAPSHOT`: the snapshot's text; panics with stderr when it fails.
fn observe(file: &Path, snapshot: &Path) -> String {
    let o = hactl(&[
        "observe",
        file.to_str().unwrap(),
        "-o",
        snapshot.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    std::fs::read_to_string(snapshot).unwrap()
}

/// The drift check: the live snapshot equals the fixture but for what `normalize` masks (and
/// its base64 key material); with HACTL_WRITE_FIXTURES set, the fixture is rewritten instead.
fn check_fixture(fixture: &str, live_snapshot: &str, net: u8) {
    let path = format!("{FIXTURES}/{fixture}");
    let mapped = live_snapshot.replace(&format!("127.0.{net}."), "127.0.0.");
    if std::env::var_os("HACTL_WRITE_FIXTURES").is_some() {
        std::fs::write(&path, &mapped).unwrap();
        return;
    }
    let fixture_text = std::fs::read_to_string(&path).unwrap();
    let base64 = Regex::new(r"(-data: |\x22)[A-Za-z0-9+/]{40,}={0,2}").unwrap();
    let mask = |s: &str| normalize(&base64.replace_all(s, "${1}BASE64"), net);
    let (want, got) = (mask(&fixture_text), mask(&mapped));
    assert!(
        want == got,
        "{fixture} and the lab drifted apart (regenerate with HACTL_WRITE_FIXTURES=1 if the lab is right):\n{}",
        diff(&want, &got)
    );
}

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

    // Nothing changed: no file on any node, no ConfigMap.
    assert_eq!(node_files(&lab), files_before, "observation changed files");
    assert_eq!(configmap_versions(&lab), configmaps_before);
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
