//! Apply when things go wrong, against labs of real parts: a real fault (`hactl lab fault`) at
//! the step each kind bites, rolled back byte for byte; hactl killed (SIGKILL) as each step
//! starts, then refused until `hactl rollback` puts every byte back; Ctrl-C at the question
//! and while applying; a second operator refused by the cluster's lock while the first
//! applies, naming them; and bad input (a plan cut short, edited by hand, or for another
//! cluster; a damaged journal; a run that does not exist) refused before anything changes.

mod lab_support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lab_support::applying::{Files, changed, configmaps, files, lease_gone, on_terminal, text};
use lab_support::{HACTL, Lab, plan};

fn hactl(args: &[&str]) -> Output {
    Command::new(HACTL).args(args).output().unwrap()
}

/// Starts `hactl ARGS` with its stdout read line by line into a channel.
fn spawn(args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(HACTL)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// The next line matching `want`, within `timeout`; None when the output ended first.
fn wait_line(
    rx: &mpsc::Receiver<String>,
    timeout: Duration,
    mut want: impl FnMut(&str) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if want(&line) => return Some(line),
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("no line wanted within {timeout:?}"),
        }
    }
}

/// The line saying the `k`th step (from 1) starts; None when the run ends first.
fn step_start(rx: &mpsc::Receiver<String>, k: usize) -> Option<String> {
    let mut starts = 0;
    wait_line(rx, Duration::from_secs(180), |l| {
        if l.ends_with(": Modifying...") || l.ends_with(": Running...") {
            starts += 1;
        }
        starts == k
    })
}

/// Sends `sig` (`-INT`, `-STOP`, …) to the process `pid` that the test started.
fn signal(sig: &str, pid: u32) {
    let sent = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill {sig} {pid}");
}

/// The run id from apply's `Run ID; its journal: …` line.
fn run_id(line: &str) -> String {
    line.strip_prefix("Run ")
        .and_then(|l| l.split(';').next())
        .unwrap_or_else(|| panic!("not a run line: {line}"))
        .to_string()
}

/// The cluster as the tests compare it: node files and the three ConfigMaps' data.
fn state(lab: &Lab) -> (Files, Vec<serde_json::Value>) {
    (files(lab), configmaps(lab))
}

fn assert_same(lab: &Lab, before: &(Files, Vec<serde_json::Value>), what: &str) {
    let (f, c) = state(lab);
    assert_eq!(changed(&before.0, &f), Vec::<String>::new(), "{what}");
    assert_eq!(c, before.1, "{what}");
}

fn healthy(lab: &Lab, what: &str) {
    lab.wait_status(what, Duration::from_secs(30), |_, code| code == 0);
}

/// SIGKILL as each step starts (its record durable, its action under way), then: `apply` is
/// refused naming the run, and `rollback` (waiting for the dead run's lock to run out) puts
/// every byte back. Ends when an apply completes before the step to kill at; that run is rolled
/// back too.
#[test]
fn hactl_killed_at_each_step_is_rolled_back_byte_for_byte() {
    let lab = Lab::up("kill", &plan(49, 1, 2), &["--kubernetes-version", "1.33"]);
    let file = lab.dir.join("hactl.toml");
    let file_s = file.to_str().unwrap();
    let before = state(&lab);
    let mut killed = Vec::new();
    for k in 1..40 {
        let (mut child, rx) = spawn(&["apply", file_s, "--auto-approve"]);
        let id =
            run_id(&wait_line(&rx, Duration::from_secs(60), |l| l.starts_with("Run ")).unwrap());
        let Some(step) = step_start(&rx, k) else {
            // Fewer than k steps: this apply completed.
            let out = child.wait_with_output().unwrap();
            assert_eq!(out.status.code(), Some(0), "{}", text(&out));
            assert!(
                lease_gone(&lab),
                "the lock is released after a complete run"
            );
            let out = hactl(&["rollback", file_s, "--auto-approve"]);
            assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out), lab.logs());
            assert_same(&lab, &before, "after rolling back the complete run");
            break;
        };
        child.kill().unwrap();
        child.wait().unwrap();
        killed.push(step.clone());

        // Refused while the run is unfinished, naming it.
        let out = hactl(&["apply", file_s, "--auto-approve"]);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "{said}");
        assert!(
            said.contains(&format!("run {id} of")) && said.contains("did not finish"),
            "{said}"
        );
        assert!(
            !lease_gone(&lab),
            "a killed run's lock stays until it runs out"
        );

        // The rollback waits for the dead run's lock, then undoes what it began.
        let started = Instant::now();
        let out = hactl(&["rollback", file_s, "--auto-approve"]);
        let said = text(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "killed at {step}: {said}\n{}",
            lab.logs()
        );
        assert!(said.contains("Rollback complete!"), "{said}");
        println!(
            "killed at {step}; rollback took {:.1} s",
            started.elapsed().as_secs_f64()
        );
        assert_same(
            &lab,
            &before,
            &format!("after the rollback of a kill at {step}"),
        );
        assert!(lease_gone(&lab), "the rollback released the lock");
        healthy(
            &lab,
            &format!("a healthy lab after the rollback of a kill at {step}"),
        );
    }
    assert!(killed.len() >= 8, "killed at {killed:?}");
}

/// While one operator applies, another (another desired-state file, as from another machine)
/// is refused by the lock within seconds, naming the first; after the first ends the lock is
/// gone. Bad input is refused first, each naming the file, and changes nothing.
#[test]
fn a_second_operator_and_bad_input_are_refused() {
    let lab = Lab::up("second", &plan(48, 1, 2), &["--kubernetes-version", "1.31"]);
    let file = lab.dir.join("hactl.toml");
    let file_s = file.to_str().unwrap();
    let before = state(&lab);
    let saved = lab.dir.join("plan.json");
    let saved_s = saved.to_str().unwrap();
    let out = hactl(&["plan", file_s, "-o", saved_s]);
    assert!(out.status.success(), "{}", text(&out));
    let plan_text = std::fs::read_to_string(&saved).unwrap();
    let bad = |name: &str, content: &str| {
        let p = lab.dir.join(name);
        std::fs::write(&p, content).unwrap();
        p.to_str().unwrap().to_string()
    };
    let refused = |args: &[&str], want: &[&str]| {
        let out = hactl(args);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {said}");
        for w in want {
            assert!(said.contains(w), "{args:?} should say {w:?}: {said}");
        }
        assert_same(&lab, &before, &format!("after {args:?}"));
    };

    // A plan cut short.
    let cut = bad("cut.json", &plan_text[..plan_text.len() / 2]);
    refused(&["apply", &cut], &[&cut]);
    // A plan edited by hand: a handler left out.
    let mut v: serde_json::Value = serde_json::from_str(&plan_text).unwrap();
    v["handlers"].as_array_mut().unwrap().pop();
    let edited = bad("edited.json", &v.to_string());
    refused(
        &["apply", &edited],
        &[&edited, "differs in handlers", "edited after it was saved"],
    );
    // A plan for another cluster.
    let mut v: serde_json::Value = serde_json::from_str(&plan_text).unwrap();
    v["cluster"] = "prod".into();
    let other = bad("other.json", &v.to_string());
    refused(&["apply", &other], &[&other, "made for cluster \"prod\""]);
    // A run that does not exist.
    refused(
        &[
            "rollback",
            file_s,
            "20990101T000000Z-dead",
            "--auto-approve",
        ],
        &["no run 20990101T000000Z-dead in", "(the runs there: none)"],
    );

    // The first operator applies the saved plan; the second is refused by the lock.
    let op2 = lab.dir.join("op2");
    std::fs::create_dir_all(&op2).unwrap();
    std::fs::copy(&file, op2.join("hactl.toml")).unwrap();
    let op2_file = op2.join("hactl.toml");
    let (first, rx) = spawn(&["apply", saved_s]);
    let id = run_id(&wait_line(&rx, Duration::from_secs(60), |l| l.starts_with("Run ")).unwrap());
    let started = Instant::now();
    let out = hactl(&["apply", op2_file.to_str().unwrap(), "--auto-approve"]);
    let took = started.elapsed();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    // As hactl names the operator: $USER, else $LOGNAME, at this host.
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    assert!(
        said.contains(&format!("the cluster is locked by {user}@"))
            && said.contains(&format!("(hactl run {id}) since "))
            && said.contains("wait for that run to finish"),
        "{said}"
    );
    println!(
        "the second operator was refused after {:.1} s",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(10), "refused after {took:?}");
    assert!(
        !op2.join(".hactl/runs").exists(),
        "the refused apply started no run"
    );
    // Naming the run does not take a lock its hactl still renews.
    let out = hactl(&[
        "apply",
        op2_file.to_str().unwrap(),
        "--auto-approve",
        "--force-unlock",
        &id,
    ]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("that hactl is still running"), "{said}");
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out), lab.logs());
    assert!(lease_gone(&lab), "the lock is released after the run");
    let out = hactl(&["plan", op2_file.to_str().unwrap(), "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // A journal damaged before its last line: refused, naming the file and the line.
    let runs = lab.dir.join(".hactl/runs");
    let journal = runs.join(&id).join("journal.jsonl");
    let good = std::fs::read_to_string(&journal).unwrap();
    let mut lines: Vec<&str> = good.lines().collect();
    lines[1] = "{\"record\":\"step-started\",\"step\":";
    std::fs::write(&journal, lines.join("\n") + "\n").unwrap();
    let after = state(&lab);
    for args in [
        vec!["rollback", file_s, &id, "--auto-approve"],
        vec!["apply", file_s, "--auto-approve"],
    ] {
        let out = hactl(&args);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {said}");
        assert!(
            said.contains(&format!(
                "{}: line 2 is not a journal record",
                journal.display()
            )),
            "{args:?}: {said}"
        );
        let (f, c) = state(&lab);
        assert_eq!(changed(&after.0, &f), Vec::<String>::new());
        assert_eq!(c, after.1);
    }
    std::fs::write(&journal, &good).unwrap();
    let out = hactl(&["rollback", file_s, &id, "--auto-approve"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_same(&lab, &before, "after the rollback");
    healthy(&lab, "a healthy lab after the rollback");

    // Ctrl-C typed at the question (the real terminal of `script` turns it into SIGINT):
    // cancelled, the lock released, no run started, no ssh master left connected.
    lab_support::wait_no_ssh_master("127.0.48.");
    let runs_before = std::fs::read_dir(&runs).unwrap().count();
    let mut asked = on_terminal(&["apply", file_s]);
    let mut stdout = asked.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut stdout, &mut buf) {
            if n == 0
                || tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
            {
                break;
            }
        }
    });
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.contains("Only 'yes' will be accepted:") {
        let left = deadline.saturating_duration_since(Instant::now());
        seen.push_str(
            &rx.recv_timeout(left)
                .unwrap_or_else(|e| panic!("{e}: {seen}")),
        );
    }
    assert!(!lease_gone(&lab), "the lock is held while hactl asks");
    std::io::Write::write_all(asked.stdin.as_mut().unwrap(), b"\x03").unwrap();
    let status = asked.wait().unwrap();
    seen.extend(rx.try_iter());
    assert_eq!(status.code(), Some(1), "{seen}");
    assert!(seen.contains("Apply cancelled."), "{seen}");
    assert!(lease_gone(&lab), "a cancelled apply releases the lock");
    assert_eq!(std::fs::read_dir(&runs).unwrap().count(), runs_before);
    lab_support::wait_no_ssh_master("127.0.48.");

    // Ctrl-C (SIGINT) as the third step starts: no further step, the run undone, the lock
    // released.
    let (child, rx) = spawn(&["apply", file_s, "--auto-approve"]);
    let step = step_start(&rx, 3).expect("a third step");
    signal("-INT", child.id());
    let out = child.wait_with_output().unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "Ctrl-C at {step}: {said}");
    assert!(
        said.contains("Interrupt received: hactl starts no further step")
            && said.contains("interrupted by the operator (Ctrl-C) before it began")
            && said.contains("hactl undid every change it had begun"),
        "{said}"
    );
    assert_same(&lab, &before, &format!("after Ctrl-C at {step}"));
    assert!(
        lease_gone(&lab),
        "an interrupted apply releases the lock once undone"
    );
    healthy(&lab, "a healthy lab after Ctrl-C");
}

/// A real fault where each kind bites, at the steps where it matters: injected while hactl is
/// stopped (SIGSTOP) on the line before the step, so that it lands before that step acts, and
/// healed once a step failed. Disk full on cp1 at the certificate and at each of its
/// kubeconfigs; API conflicts beyond the retries at each ConfigMap; w1's sshd down and w2 down
/// at their kubelet.conf; w1's kubelet slower than `--check-timeout`; w2 down at its kube-proxy
/// handler. Each run fails at that step and is rolled back (by `hactl rollback` once healed,
/// when the node could not be reached for the undo); every byte is as before, the lab healthy.
#[test]
fn a_fault_at_each_step_ends_rolled_back_byte_for_byte() {
    let lab = Lab::up("fault", &plan(37, 1, 2), &["--kubernetes-version", "1.31"]);
    let file = lab.dir.join("hactl.toml");
    let file_s = file.to_str().unwrap();
    let before = state(&lab);
    let complete = |s: &str| format!("{s}: Modifications complete");
    let verified = |s: &str| format!("{s}: Verified");
    // (node, fault, the line before the step it bites, that step)
    let cases: Vec<(&str, &[&str], Option<String>, &str)> = vec![
        ("cp1", &["disk-full"], None, "apiserver_cert.cp1"),
        (
            "cp1",
            &["disk-full"],
            Some(verified("handler.cp1.kube-apiserver")),
            "kubeconfig.cp1.admin",
        ),
        (
            "cp1",
            &["disk-full"],
            Some(complete("kubeconfig.cp1.admin")),
            "kubeconfig.cp1.super-admin",
        ),
        (
            "cp1",
            &["api-conflicts", "1000"],
            Some(complete("kubeconfig.cp1.super-admin")),
            "configmap.kube-system.kube-proxy",
        ),
        (
            "cp1",
            &["api-conflicts", "1000"],
            Some(verified("handler.cp1.kube-proxy")),
            "configmap.kube-system.kubeadm-config",
        ),
        (
            "cp1",
            &["api-conflicts", "1000"],
            Some(complete("configmap.kube-system.kubeadm-config")),
            "configmap.kube-public.cluster-info",
        ),
        (
            "w1",
            &["ssh-down"],
            Some(verified("handler.cluster-info.jws")),
            "kubeconfig.w1.kubelet",
        ),
        (
            "w2",
            &["node-down"],
            Some(verified("handler.cluster-info.jws")),
            "kubeconfig.w2.kubelet",
        ),
        (
            "w1",
            &["slow-component", "40"],
            Some(complete("kubeconfig.w1.kubelet")),
            "handler.w1.kubelet",
        ),
        (
            "w2",
            &["node-down"],
            Some(verified("handler.w2.kubelet")),
            "handler.w2.kube-proxy",
        ),
    ];
    for (node, fault, trigger, bites) in cases {
        let what = format!("{} on {node} at {bites}", fault.join(" "));
        if trigger.is_none() {
            lab.fault(node, fault);
        }
        let started = Instant::now();
        let (child, rx) = spawn(&["apply", file_s, "--auto-approve", "--check-timeout", "20"]);
        let mut failed = None;
        let mut lines = Vec::new();
        for line in rx.iter() {
            if trigger.as_deref().is_some_and(|t| line.starts_with(t)) {
                signal("-STOP", child.id());
                lab.fault(node, fault);
                signal("-CONT", child.id());
            }
            if failed.is_none() && line.contains(": Failed after ") {
                lab.heal(node);
                failed = line.split(':').next().map(String::from);
            }
            lines.push(line);
        }
        let out = child.wait_with_output().unwrap();
        let said = format!("{}\n{}", lines.join("\n"), text(&out));
        assert_eq!(failed.as_deref(), Some(bites), "{what}: {said}");
        if fault[0] == "slow-component" {
            // 20 s of waiting said every 10 s, as Terraform does, between its start and end.
            let at = |l: &str| lines.iter().position(|x| x.starts_with(l));
            let order = [
                at(&format!("{bites}: Running...")),
                at(&format!("{bites}: Still running... [10s elapsed]")),
                at(&format!("{bites}: Failed after 2")),
            ];
            assert!(
                order.iter().all(Option::is_some) && order.is_sorted(),
                "{what}: {order:?}\n{said}"
            );
        }
        assert!(
            said.contains(&format!("Error: {bites}: ")),
            "{what}: {said}"
        );
        let code = out.status.code();
        match code {
            Some(1) => assert!(
                said.contains("hactl undid every change it had begun"),
                "{said}"
            ),
            // The node was away for the undo too: finished once it is back.
            Some(3) => {
                assert!(said.contains("The rollback is INCOMPLETE"), "{said}");
                let out = hactl(&["rollback", file_s, "--auto-approve"]);
                assert_eq!(
                    out.status.code(),
                    Some(0),
                    "{what}: {}\n{}",
                    text(&out),
                    lab.logs()
                );
            }
            _ => panic!("{what}: {said}"),
        }
        println!(
            "{what}: exit {code:?}, rolled back after {:.1} s",
            started.elapsed().as_secs_f64()
        );
        assert_same(&lab, &before, &what);
        assert!(lease_gone(&lab), "{what}: the lock is released");
        lab.wait_status(
            &format!("a healthy lab after {what}"),
            Duration::from_secs(60),
            |_, c| c == 0,
        );
    }
}
