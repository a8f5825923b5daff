//! The `hactl` binary end to end: commands, exit codes, files, colour.

use std::path::Path;
use std::process::{Command, Output};

fn hactl(args: &[&str]) -> Output {
    hactl_with(&[], args)
}

/// `hactl` with `env` set (HACTL_LOG and HACTL_LOG_PATH unset unless given).
fn hactl_with(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hactl"));
    c.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("NO_COLOR")
        .env_remove("HACTL_LOG")
        .env_remove("HACTL_LOG_PATH");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

const FRESH: &str = "tests/fixtures/observed/fresh-1.31.json";
const CONVERTED: &str = "tests/fixtures/observed/converted-1.31.json";

#[test]
fn plan_prints_the_conversion_and_exit_codes_follow_terraform() {
    let o = hactl(&["plan", "plans/lab.toml", "--observed", FRESH]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("Plan: 2 to add, 9 to change, 0 to destroy."),
        "{out}"
    );
    assert!(
        out.contains("+    server: https://k8s-api.lab.internal:6443"),
        "{out}"
    );
    // Piped output has no colour.
    assert!(!out.contains('\x1b'));

    let o = hactl(&[
        "plan",
        "plans/lab.toml",
        "--observed",
        FRESH,
        "--detailed-exitcode",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let o = hactl(&[
        "plan",
        "plans/lab.toml",
        "--observed",
        CONVERTED,
        "--detailed-exitcode",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let o = hactl(&[
        "plan",
        "plans/lab.toml",
        "--observed",
        "tests/fixtures/observed/unreachable-worker-1.31.json",
        "--detailed-exitcode",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("w2"));
}

#[test]
fn a_saved_plan_shows_the_same_in_every_format() {
    let dir = std::env::temp_dir().join(format!("hactl-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let planfile = dir.join("plan.json");
    let p = planfile.to_str().unwrap();
    for format in ["text", "markdown", "json"] {
        let planned = hactl(&[
            "plan",
            "plans/lab.toml",
            "--observed",
            FRESH,
            "--format",
            format,
            "-o",
            p,
        ]);
        assert_eq!(planned.status.code(), Some(0), "{}", stderr(&planned));
        assert!(stderr(&planned).contains("Saved the plan to"));
        // Its joins are not apply's yet: it is not offered to apply.
        assert!(
            !stderr(&planned).contains("hactl apply"),
            "{}",
            stderr(&planned)
        );
        let shown = hactl(&["show", p, "--format", format]);
        assert_eq!(shown.status.code(), Some(0), "{}", stderr(&shown));
        assert_eq!(stdout(&planned), stdout(&shown), "{format}");
    }
    // Without the nodes to join, as Terraform: how to apply exactly the saved plan. No note
    // for an unsaved plan of a snapshot: apply observes the live cluster, not the snapshot.
    let lab = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/lab.toml"))
        .unwrap();
    let mut converting = lab.split("\n[[node]]").collect::<Vec<_>>();
    converting.retain(|t| !t.contains("name = \"cp2\"") && !t.contains("name = \"cp3\""));
    let converting = converting.join("\n[[node]]");
    let desired = dir.join("convert.toml");
    std::fs::write(&desired, converting).unwrap();
    let d = desired.to_str().unwrap();
    let planned = hactl(&["plan", d, "--observed", FRESH, "-o", p]);
    assert_eq!(planned.status.code(), Some(0), "{}", stderr(&planned));
    assert!(
        stderr(&planned).contains(&format!(
            "To perform exactly these actions, run: hactl apply {p}"
        )),
        "{}",
        stderr(&planned)
    );
    let planned = hactl(&["plan", d, "--observed", FRESH]);
    assert_eq!(stderr(&planned), "");
    let saved = std::fs::read_to_string(&planfile).unwrap();
    assert!(saved.contains("\"format_version\": \"1.2\""));
    std::fs::write(&planfile, "not json").unwrap();
    let bad = hactl(&["show", p]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains(p), "{}", stderr(&bad));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plan_without_a_snapshot_observes_and_names_every_node_it_cannot_reach() {
    // Port 1 on loopback: nothing listens there, so every connection is refused at once
    // (port 22 might be this machine's own sshd).
    let dir = std::env::temp_dir().join(format!("hactl-cli-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string("plans/lab.toml")
        .unwrap()
        .replace("127.0.0.", "127.0.97.")
        .replace("user = \"root\"", "user = \"root\"\nport = 1");
    let file = dir.join("unreachable.toml");
    std::fs::write(&file, text).unwrap();
    let o = hactl(&["plan", "--no-color", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(
        err.contains("Could not observe: cp1, cp2, cp3, w1, w2"),
        "{err}"
    );
    assert!(!err.contains("DEBUG"), "{err}");
    // HACTL_LOG=debug says when each node failed and why, and changes nothing else.
    let logged = hactl_with(
        &[("HACTL_LOG", "debug")],
        &["plan", "--no-color", file.to_str().unwrap()],
    );
    assert_eq!(logged.status.code(), Some(1));
    assert_eq!(stdout(&logged), out);
    let log = stderr(&logged);
    for (node, address) in [
        ("cp1", "11"),
        ("cp2", "12"),
        ("cp3", "13"),
        ("w1", "21"),
        ("w2", "22"),
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(" DEBUG hactl::observe: could not connect ")
                    && l.contains(&format!(" node={node} address=127.0.97.{address} "))
                    && l.contains("Connection refused")),
            "no line for {node}:\n{log}"
        );
    }
    let unlogged: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains(" DEBUG hactl::"))
        .collect();
    assert_eq!(unlogged, err.lines().collect::<Vec<_>>());
    for (node, address) in [("cp1", "11"), ("cp3", "13"), ("w2", "22")] {
        assert!(
            out.contains(&format!(
                "{node} (127.0.97.{address}) could not be reached over SSH: ssh: connect to host 127.0.97.{address} port 1: Connection refused"
            )),
            "{out}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn validate_reports_problems_with_the_file_name() {
    let ok = hactl(&["validate", "plans/lab.toml"]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("valid"));
    let dir = std::env::temp_dir().join(format!("hactl-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    let lab = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/lab.toml"))
        .unwrap();
    std::fs::write(&bad, lab.replace("name = \"cp2\"", "name = \"cp1\"")).unwrap();
    let o = hactl(&["validate", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("bad.toml"), "{err}");
    assert!(!err.contains('\x1b'), "a piped report has no colour");
    let missing = hactl(&["validate", "no/such/file.toml"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("no/such/file.toml"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_snapshot_of_another_format_is_refused_clearly() {
    let dir = std::env::temp_dir().join(format!("hactl-snap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let snap = dir.join("old.json");
    let fresh = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(FRESH)).unwrap();
    std::fs::write(
        &snap,
        fresh.replacen("\"format_version\": 1", "\"format_version\": 7", 1),
    )
    .unwrap();
    let o = hactl(&[
        "plan",
        "plans/lab.toml",
        "--observed",
        snap.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("format_version is 7"), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn graph_prints_dot_and_schema_matches_the_checked_in_file() {
    let o = hactl(&["graph", "plans/lab.toml"]);
    assert_eq!(o.status.code(), Some(0));
    let dot = stdout(&o);
    assert!(dot.contains("digraph {"));
    assert!(dot.contains("label = \"control_plane.cp3\""));
    assert!(dot.starts_with("// assumed"));
    let observed = hactl(&[
        "graph",
        "plans/lab.toml",
        "--observed",
        "tests/fixtures/observed/fresh-1.23-docker.json",
    ]);
    assert!(!stdout(&observed).contains("super-admin"));
    assert!(!stdout(&observed).starts_with("// assumed"));

    // The CLI prints what the code generates; tests/schema_drift.rs keeps the files equal to it.
    let o = hactl(&["schema"]);
    assert!(
        stdout(&o) == hactl::schema::desired_state_schema(),
        "hactl schema prints something else"
    );
    let o = hactl(&["schema", "--plan"]);
    assert!(
        stdout(&o) == hactl::schema::plan_schema(),
        "hactl schema --plan prints something else"
    );
}

#[test]
fn hactl_log_follows_tf_log_a_level_a_filter_a_file_and_a_refusal() {
    let plan = ["plan", "--no-color", "plans/lab.toml", "--observed", FRESH];
    let quiet = hactl(&plan);
    assert_eq!(quiet.status.code(), Some(0), "{}", stderr(&quiet));

    // Any case, on stderr, each line timed since the start; the plan is the same.
    let o = hactl_with(&[("HACTL_LOG", "DEBUG")], &plan);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), stdout(&quiet));
    let log = stderr(&o);
    let planned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" DEBUG hactl::cli: planned took_ms="))
        .collect();
    assert_eq!(planned.len(), 1, "{log}");
    let secs = planned[0].trim_start().split_once("s ").unwrap().0;
    assert!(secs.parse::<f64>().is_ok_and(|s| s < 60.0), "{log}");

    // A level below debug, or a filter that leaves hactl::cli out, says nothing.
    for quiet_level in ["info", "off", "hactl::observe=trace"] {
        let o = hactl_with(&[("HACTL_LOG", quiet_level)], &plan);
        assert_eq!(stderr(&o), stderr(&quiet), "{quiet_level}");
    }
    let o = hactl_with(&[("HACTL_LOG", "hactl::cli=debug")], &plan);
    assert!(stderr(&o).contains("hactl::cli: planned"), "{}", stderr(&o));

    // Not a level nor a filter: said once, and the command runs as without.
    let o = hactl_with(&[("HACTL_LOG", "hactl=loud")], &plan);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), stdout(&quiet));
    let err = stderr(&o);
    assert!(
        err.starts_with("warning: HACTL_LOG=\"hactl=loud\" is neither a level (trace, debug, info, warn, error, off) nor a filter"),
        "{err}"
    );
    assert!(err.ends_with("logging stays off\n"), "{err}");

    // HACTL_LOG_PATH: appended to, owner-only; stderr as without.
    let dir = std::env::temp_dir().join(format!("hactl-cli-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("hactl.log");
    let env = [
        ("HACTL_LOG", "debug"),
        ("HACTL_LOG_PATH", path.to_str().unwrap()),
    ];
    for run in 1..=2 {
        let o = hactl_with(&env, &plan);
        assert_eq!(stderr(&o), stderr(&quiet));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("hactl::cli: planned").count(), run, "{text}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // A path that cannot be opened: said, and the log goes to stderr.
    let missing = dir.join("no/such/dir/hactl.log");
    let o = hactl_with(
        &[
            ("HACTL_LOG", "debug"),
            ("HACTL_LOG_PATH", missing.to_str().unwrap()),
        ],
        &plan,
    );
    let err = stderr(&o);
    assert!(
        err.starts_with(&format!(
            "warning: HACTL_LOG_PATH={}: No such file or directory",
            missing.display()
        )),
        "{err}"
    );
    assert!(err.contains("logging to stderr instead"), "{err}");
    assert!(err.contains("hactl::cli: planned"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A file hactl cannot read, or a plan file that is not one: the cause said once (miette shows
/// an error's sources below it, so a message that already ends with its cause must not also
/// chain it), with what to do.
#[test]
fn a_file_that_cannot_be_read_or_is_no_plan_is_said_once_with_the_fix() {
    let dir = std::env::temp_dir().join(format!("hactl-cli-files-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cut = dir.join("cut.json");
    std::fs::write(&cut, "{\"format_version\": \"1\"").unwrap();
    let odd = dir.join("odd.json");
    let version = hactl::plan::PLAN_FORMAT_VERSION;
    std::fs::write(
        &odd,
        format!("{{\"format_version\": \"{version}\", \"resource_changes\": 7}}"),
    )
    .unwrap();
    let missing = dir.join("missing.json");
    let cases = [
        (&missing, "No such file or directory", "check the path"),
        (&cut, "EOF while parsing", "hactl plan FILE -o PLANFILE"),
        (
            &odd,
            "invalid type: integer `7`",
            "hactl plan FILE -o PLANFILE",
        ),
    ];
    for (file, cause, fix) in cases {
        for command in ["show", "apply"] {
            let o = hactl(&[command, file.to_str().unwrap()]);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{command} {file:?}: {err}");
            assert_eq!(err.matches(cause).count(), 1, "{command} {file:?}: {err}");
            let bare = |t: &str| t.split_whitespace().collect::<String>();
            assert!(bare(&err).contains(&bare(fix)), "{command} {file:?}: {err}");
            assert!(
                bare(&err).contains(&bare(file.to_str().unwrap())),
                "{command} {file:?}: {err}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
