//! `hactl apply` and `hactl rollback` refusing before they touch anything: no terminal to ask
//! on, a run left unfinished, a saved plan that is not for this desired-state file. None of
//! these needs a cluster: each is decided before hactl connects to one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn hactl(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hactl"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn said(o: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A folder holding the lab's desired-state file as `hactl.toml`.
fn folder(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hactl-cli-apply-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let lab = Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/lab.toml");
    std::fs::copy(lab, dir.join("hactl.toml")).unwrap();
    dir
}

/// A run of `dir/hactl.toml` whose journal holds `lines`.
fn run(dir: &Path, id: &str, lines: &[&str]) -> PathBuf {
    let run = dir.join(".hactl/runs").join(id);
    std::fs::create_dir_all(&run).unwrap();
    let plan = hactl(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &[
            "plan",
            "plans/lab.toml",
            "--observed",
            "tests/fixtures/observed/fresh-1.31.json",
            "--format",
            "json",
        ],
    );
    std::fs::write(run.join("plan.json"), &plan.stdout).unwrap();
    let mut journal = String::new();
    for l in lines {
        journal.push_str(l);
        journal.push('\n');
    }
    std::fs::write(run.join("journal.jsonl"), journal).unwrap();
    run
}

const STARTED: &str = r#"{"record":"started","run":"20261204T100000Z-abcd","cluster":"lab","plan_fingerprint":"sha256:00","steps":["kubeconfig.w1.kubelet"]}"#;
const STEP: &str = r#"{"record":"step-started","step":"kubeconfig.w1.kubelet"}"#;

#[test]
fn apply_without_a_terminal_asks_for_auto_approve_instead_of_waiting() {
    let dir = folder("tty");
    let o = hactl(&dir, &["apply", "hactl.toml"]);
    let s = said(&o);
    assert_eq!(o.status.code(), Some(1), "{s}");
    assert!(s.contains("standard input is not a terminal"), "{s}");
    assert!(
        s.contains("--auto-approve") && s.contains("hactl apply PLANFILE"),
        "{s}"
    );
    assert!(!dir.join(".hactl").exists(), "{s}");
    let o = hactl(&dir, &["rollback", "hactl.toml"]);
    assert_eq!(o.status.code(), Some(1), "{}", said(&o));
    let s = said(&o);
    assert!(
        s.contains("nothing to roll back: .hactl/runs holds no run")
            && s.contains("`hactl apply FILE` records each run in .hactl/runs beside FILE"),
        "{s}"
    );
    let o = hactl(&dir, &["rollback", "hactl.toml", "20261204T100000Z-abcd"]);
    let s = said(&o);
    assert_eq!(o.status.code(), Some(1), "{s}");
    assert!(
        s.contains("no run 20261204T100000Z-abcd in .hactl/runs (the runs there: none)"),
        "{s}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn apply_refuses_while_a_run_is_unfinished_and_says_how_to_roll_it_back() {
    let dir = folder("unfinished");
    let id = "20261204T100000Z-abcd";
    run(&dir, id, &[STARTED, STEP]);
    for args in [
        &["apply", "hactl.toml", "--auto-approve"][..],
        &["apply", "hactl.toml"][..],
    ] {
        let o = hactl(&dir, args);
        let s = said(&o);
        assert_eq!(o.status.code(), Some(1), "{s}");
        assert!(
            s.contains(&format!("run {id} of hactl.toml did not finish")),
            "{s}"
        );
        assert!(
            s.contains(&format!("hactl rollback hactl.toml {id}")),
            "{s}"
        );
    }
    // A rollback that could not undo everything blocks apply too.
    let incomplete = r#"{"record":"finished","outcome":"rollback-incomplete"}"#;
    run(&dir, id, &[STARTED, STEP, incomplete]);
    let s = said(&hactl(&dir, &["apply", "hactl.toml", "--auto-approve"]));
    assert!(s.contains("was not rolled back completely"), "{s}");
    // A run rolled back, or one that never wrote a record, is done with.
    let rolled = r#"{"record":"finished","outcome":"rolled-back"}"#;
    run(&dir, id, &[STARTED, STEP, incomplete, rolled]);
    run(&dir, "20261204T110000Z-beef", &[]);
    let o = hactl(&dir, &["rollback", "hactl.toml", id]);
    assert!(
        o.status.success() && said(&o).contains("rolled back already"),
        "{}",
        said(&o)
    );
    let o = hactl(&dir, &["rollback", "hactl.toml"]);
    assert!(
        o.status.success() && said(&o).contains("changed nothing"),
        "{}",
        said(&o)
    );
    let o = hactl(&dir, &["rollback", "hactl.toml", "nope"]);
    let s = said(&o);
    assert!(
        s.contains(
            "no run nope in .hactl/runs (the runs there: 20261204T100000Z-abcd, 20261204T110000Z-beef)"
        ) && s.contains("leave RUN out to roll back the latest"),
        "{s}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_saved_plan_is_applied_only_for_the_desired_state_file_it_was_made_from() {
    let dir = folder("saved");
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/observed/fresh-1.31.json");
    let o = hactl(
        &dir,
        &[
            "plan",
            "hactl.toml",
            "--observed",
            fixture.to_str().unwrap(),
            "-o",
            "plan.json",
        ],
    );
    assert!(o.status.success(), "{}", said(&o));
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("plan.json")).unwrap()).unwrap();
    let recorded = &saved["desired_state"];
    assert_eq!(
        recorded["path"],
        dir.join("hactl.toml")
            .canonicalize()
            .unwrap()
            .display()
            .to_string()
    );
    assert!(recorded["sha256"].as_str().unwrap().starts_with("sha256:"));

    // The file edited since: refused before anything is observed.
    let mut text = std::fs::read_to_string(dir.join("hactl.toml")).unwrap();
    text.push_str("\n# edited\n");
    std::fs::write(dir.join("hactl.toml"), text).unwrap();
    let o = hactl(&dir, &["apply", "plan.json"]);
    let s = said(&o);
    assert_eq!(o.status.code(), Some(1), "{s}");
    assert!(
        s.contains("desired-state file") && s.contains("hactl plan"),
        "{s}"
    );
    assert!(!s.contains("Observed"), "{s}");

    // A plan without its desired-state file (`--format json` on stdout) cannot be applied.
    let o = hactl(
        &dir,
        &[
            "plan",
            "hactl.toml",
            "--observed",
            fixture.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    std::fs::write(dir.join("bare.json"), &o.stdout).unwrap();
    let s = said(&hactl(&dir, &["apply", "bare.json"]));
    assert!(s.contains("saved without the desired-state file"), "{s}");
    assert!(!dir.join(".hactl").exists(), "{s}");
    std::fs::remove_dir_all(&dir).unwrap();
}
