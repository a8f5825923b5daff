//! For the observation tests: labs shaped like `plans/lab.toml`, `hactl observe`/`plan` runs,
//! normalisation of what differs between two labs of one shape, the fixture drift check, and
//! fingerprints of everything on the nodes and in the API (to prove observation only reads).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use regex::Regex;
use sha2::{Digest, Sha256};

use super::{HACTL, Lab};

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/observed");
pub const LAB_PLAN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/plans/lab.toml");

/// `plans/lab.toml` moved to 127.0.<net>.x.
pub fn lab_plan(net: u8) -> String {
    std::fs::read_to_string(LAB_PLAN)
        .unwrap()
        .replace("127.0.0.", &format!("127.0.{net}."))
}

pub fn hactl(args: &[&str]) -> Output {
    hactl_with(&[], args)
}

/// `hactl` with `env` set (HACTL_LOG and HACTL_LOG_PATH unset unless given).
pub fn hactl_with(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = std::process::Command::new(HACTL);
    c.args(args)
        .env_remove("HACTL_LOG")
        .env_remove("HACTL_LOG_PATH");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// `hactl plan --format json FILE`: (exit code, the plan, stderr).
pub fn plan_json(file: &Path) -> (Option<i32>, serde_json::Value, String) {
    let o = hactl(&["plan", "--format", "json", file.to_str().unwrap()]);
    let plan = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not a JSON plan ({e}): {}\n{}",
            text(&o.stdout),
            text(&o.stderr)
        )
    });
    (o.status.code(), plan, text(&o.stderr))
}

/// The plan's one problem about `subject`; panics with every problem otherwise.
pub fn problem<'a>(plan: &'a serde_json::Value, subject: &str) -> &'a serde_json::Value {
    let found: Vec<&serde_json::Value> = plan["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no problems in {plan}"))
        .iter()
        .filter(|p| p["subject"] == subject)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "problems about {subject}: {}",
        plan["problems"]
    );
    found[0]
}

/// Each resource's actions, comma-joined (`update`, `delete,create`), by address.
pub fn actions(plan: &serde_json::Value) -> BTreeMap<String, String> {
    plan["resource_changes"]
        .as_array()
        .unwrap_or_else(|| panic!("no resource_changes: {plan}"))
        .iter()
        .map(|c| {
            let acts: Vec<&str> = c["actions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            (c["address"].as_str().unwrap().to_string(), acts.join(","))
        })
        .collect()
}

/// The plan's handlers: id → the addresses that trigger it.
pub fn handlers(plan: &serde_json::Value) -> BTreeMap<String, Vec<String>> {
    plan["handlers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let by = h["triggered_by"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect();
            (h["id"].as_str().unwrap().to_string(), by)
        })
        .collect()
}

pub fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// What differs between two labs of the same shape: addresses, key material (elided base64
/// lengths, digests, pins), times, token ids, generated names, restart counts.
pub fn normalize(s: &str, net: u8) -> String {
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
        // Restart counts: a controller-manager that lost its lease while the API server
        // restarted has restarted once, or not, by the time it is observed.
        (r#""restarts": \d+"#, r#""restarts": N"#),
    ];
    rules.iter().fold(s, |s, (re, with)| {
        Regex::new(re).unwrap().replace_all(&s, *with).into_owned()
    })
}

/// The unified diff of two texts, for assertion messages.
pub fn diff(a: &str, b: &str) -> String {
    similar::TextDiff::from_lines(a, b)
        .unified_diff()
        .context_radius(2)
        .header("fixture", "live")
        .to_string()
}

/// Every file under every node's /etc/kubernetes and /var/lib/kubelet, with its digest and mode.
pub fn node_files(lab: &Lab) -> BTreeMap<PathBuf, String> {
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
pub fn configmap_versions(lab: &Lab) -> String {
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
pub fn fixture_plan(fixture: &str) -> String {
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
pub fn observe(file: &Path, snapshot: &Path) -> String {
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
pub fn check_fixture(fixture: &str, live_snapshot: &str, net: u8) {
    let path = format!("{FIXTURES}/{fixture}");
    let mapped = live_snapshot.replace(&format!("127.0.{net}."), "127.0.0.");
    if std::env::var_os("HACTL_WRITE_FIXTURES").is_some() {
        std::fs::write(&path, &mapped).unwrap();
        return;
    }
    let fixture_text = std::fs::read_to_string(&path).unwrap();
    let base64 = Regex::new(r"(-data: |\x22)[A-Za-z0-9+/]{40,}={0,2}").unwrap();
    // normalize first: a JWS header (`"eyJ…`) is long enough to pass for base64.
    let mask = |s: &str| {
        base64
            .replace_all(&normalize(s, net), "${1}BASE64")
            .into_owned()
    };
    let (want, got) = (mask(&fixture_text), mask(&mapped));
    assert!(
        want == got,
        "{fixture} and the lab drifted apart (regenerate with HACTL_WRITE_FIXTURES=1 if the lab is right):\n{}",
        diff(&want, &got)
    );
}
