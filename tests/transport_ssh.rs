//! The SSH transport against a real lab (real sshd per node, the real `ssh` client): commands
//! and their output, one master per node, host key checking, auth, unreachable nodes,
//! ProxyJump from a config file, sudo, command timeouts (the command stopped on the node when
//! hactl gives up on it or is killed), and no ssh process left after `close`.

mod lab_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hactl::spec::KnownHosts;
use hactl::transport::ssh::SshSession;
use hactl::transport::{NodeTransport, SshTarget, TransportError};
use lab_support::{Lab, is_ssh_master, plan, processes, ssh_targets_in, wait_no_ssh_master};

const NET: u8 = 20;

/// The pids of the ssh master of the session whose control socket is `ctl`.
fn masters(ctl: &Path) -> Vec<u32> {
    let ctl = ctl.to_string_lossy();
    processes()
        .into_iter()
        .filter(|(_, _, cmd)| is_ssh_master(cmd) && cmd.contains(&*ctl))
        .map(|(pid, _, _)| pid)
        .collect()
}

/// `masters(ctl)` once it is empty; panics with what is left after 5 s.
fn wait_no_master(ctl: &Path) {
    wait_no_ssh_master(&ctl.to_string_lossy());
}

/// An ssh config that takes host keys from `known_hosts`, then the lab's settings.
fn config_with_known_hosts(dir: &Path, name: &str, lab: &Lab, known_hosts: &Path) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "Host *\n  UserKnownHostsFile {}\nInclude {}\n",
            known_hosts.display(),
            lab.dir.join("ssh_config").display()
        ),
    )
    .unwrap();
    path
}

fn target_with(base: &SshTarget, f: impl FnOnce(&mut SshTarget)) -> SshTarget {
    let mut t = base.clone();
    f(&mut t);
    t
}

async fn connect_err(t: SshTarget) -> TransportError {
    match SshSession::connect(t.clone()).await {
        Ok(s) => {
            let _ = s.close().await;
            panic!("connecting to {} ({}) worked", t.node, t.address)
        }
        Err(e) => e,
    }
}

#[test]
fn ssh_transport_against_a_lab() {
    let lab = Lab::up("transport-ssh", &plan(NET, 1, 1), &[]);
    let work = lab.dir.parent().unwrap().join("transport");
    std::fs::create_dir_all(&work).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(checks(&lab, &work));
}

async fn checks(lab: &Lab, work: &Path) {
    let targets = lab.ssh_targets();
    let (cp1, w1) = (targets[0].clone(), targets[1].clone());
    assert_eq!((cp1.node.as_str(), w1.node.as_str()), ("cp1", "w1"));

    // An address without sshd is refused in ssh's own words; the others connect meanwhile.
    let unreachable = target_with(&w1, |t| {
        t.node = "ghost".into();
        t.address = format!("127.0.{NET}.99").parse().unwrap();
    });
    let (ghost, cp1_session, w1_session) = tokio::join!(
        SshSession::connect(unreachable),
        SshSession::connect(cp1.clone()),
        SshSession::connect(w1.clone())
    );
    let port = cp1.port.unwrap_or(22);
    match ghost {
        Err(TransportError::Unreachable { node, detail, .. }) => {
            assert_eq!(node, "ghost");
            assert_eq!(
                detail,
                format!("ssh: connect to host 127.0.{NET}.99 port {port}: Connection refused")
            );
        }
        Err(other) => panic!("ghost: {other:?}"),
        Ok(_) => panic!("ghost: connected to an address without sshd"),
    }
    let cp1_session = cp1_session.unwrap();
    let w1_session = w1_session.unwrap();

    // Output, stderr and status are kept; the script reaches `sh` byte for byte.
    let out = cp1_session
        .run("echo out; echo err >&2; hostname; exit 3")
        .await
        .unwrap();
    assert_eq!(out.status, Some(3));
    assert_eq!(out.stdout_text(), "out\ncp1\n");
    assert_eq!(out.stderr_text(), "err\n");
    let tricky = "printf '%s|' \"it's\" '$HOME' 'a!b' \"$((1+2))\"\necho\n";
    let out = cp1_session.run(tricky).await.unwrap();
    assert_eq!(out.stdout_text(), "it's|$HOME|a!b|3|\n", "{out:?}");
    let out = w1_session.run("no-such-command-here").await.unwrap();
    assert_eq!(out.status, Some(127), "{out:?}");
    assert!(out.stderr_text().contains("not found"), "{out:?}");
    assert_eq!(
        w1_session.run("hostname").await.unwrap().stdout_text(),
        "w1\n"
    );

    // One master per node, reused: every command comes over the same TCP connection (same
    // client port in SSH_CONNECTION), and one ssh process serves them, in turn or at once.
    let ctl = cp1_session.control_socket().to_path_buf();
    // On a memory filesystem where there is one (made and removed on every run), inside a
    // directory no one else may enter.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() && Path::new("/dev/shm").is_dir() {
        assert!(ctl.starts_with("/dev/shm/"), "{}", ctl.display());
    }
    let private = ctl.parent().and_then(Path::parent).unwrap();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(private).unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "{} is {mode:o}", private.display());
    let before = masters(&ctl);
    assert_eq!(before.len(), 1, "one ssh master for cp1: {before:?}");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let out = cp1_session.run("echo $SSH_CONNECTION").await.unwrap();
        seen.insert(out.stdout_text());
    }
    let together =
        futures_util::future::join_all((0..10).map(|_| cp1_session.run("echo $SSH_CONNECTION")))
            .await;
    for out in together {
        seen.insert(out.unwrap().stdout_text());
    }
    assert_eq!(
        seen.len(),
        1,
        "commands came over several connections: {seen:?}"
    );
    assert_eq!(masters(&ctl), before, "the master changed");

    timeouts(&cp1).await;
    a_killed_hactl_leaves_nothing_running(lab);

    // sudo -n: runs as root when sudo exists on the node; without sudo it is a Sudo error.
    let has_sudo = cp1_session.run("command -v sudo").await.unwrap().success();
    let sudo_cp1 = SshSession::connect(target_with(&cp1, |t| t.sudo = true))
        .await
        .unwrap();
    let sudo_out = sudo_cp1.run("id -u; echo \"$0\"").await;
    if has_sudo {
        let out = sudo_out.unwrap();
        assert_eq!(out.stdout_text(), "0\nsh\n", "{out:?}");
        // Under sudo (`use_pty` or not) the watchdog kills what hactl gave up on, too.
        let quick_sudo = SshSession::connect(target_with(&cp1, |t| {
            t.sudo = true;
            t.command_timeout = Duration::from_secs(2);
        }))
        .await
        .unwrap();
        abandoned_without_input_is_killed_at_once(quick_sudo, &format!("{NET}-sudo")).await;
    } else {
        eprintln!("sudo is not installed on this machine: checking its absence is reported");
        match sudo_out {
            Err(TransportError::Sudo { node, detail }) => {
                assert_eq!(node, "cp1");
                assert!(
                    detail.contains("sudo: not found")
                        || detail.contains("sudo: command not found"),
                    "{detail}"
                );
            }
            other => panic!("sudo without sudo installed: {other:?}"),
        }
    }
    sudo_cp1.close().await.unwrap();

    // close ends the master.
    cp1_session.close().await.unwrap();
    wait_no_master(&ctl);
    assert!(!ctl.exists(), "control socket left: {}", ctl.display());
    let w1_ctl = w1_session.control_socket().to_path_buf();
    w1_session.close().await.unwrap();
    wait_no_master(&w1_ctl);

    // Strict host key checking with no key known.
    let empty = work.join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let cfg = config_with_known_hosts(work, "unknown.conf", lab, &empty);
    let strict_unknown = target_with(&w1, |t| t.config_file = Some(cfg.clone()));
    match connect_err(strict_unknown.clone()).await {
        TransportError::HostKeyUnknown { node, detail, .. } => {
            assert_eq!(node, "w1");
            assert!(
                detail.starts_with("No ")
                    && detail.contains(&format!("host key is known for 127.0.{NET}.21")),
                "{detail}"
            );
        }
        other => panic!("unknown host key: {other:?}"),
    }
    // accept-new learns it into that file, then strict checking passes.
    let learn = target_with(&strict_unknown, |t| t.known_hosts = KnownHosts::AcceptNew);
    let s = SshSession::connect(learn).await.unwrap();
    assert_eq!(s.run("hostname").await.unwrap().stdout_text(), "w1\n");
    s.close().await.unwrap();
    let learnt = std::fs::read_to_string(&empty).unwrap();
    assert!(
        learnt.contains(&format!("127.0.{NET}.21")),
        "not learnt: {learnt:?}"
    );
    let s = SshSession::connect(strict_unknown).await.unwrap();
    s.close().await.unwrap();

    // Another key for the address: a changed host key, refused even under accept-new.
    let other_key = work.join("other_host_key");
    let keygen = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "other", "-f"])
        .arg(&other_key)
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{keygen:?}");
    let public = std::fs::read_to_string(other_key.with_extension("pub")).unwrap();
    let key: Vec<&str> = public.split_whitespace().take(2).collect();
    let changed_kh = work.join("changed_known_hosts");
    std::fs::write(&changed_kh, format!("127.0.{NET}.21 {}\n", key.join(" "))).unwrap();
    let cfg = config_with_known_hosts(work, "changed.conf", lab, &changed_kh);
    for mode in [KnownHosts::Strict, KnownHosts::AcceptNew] {
        let t = target_with(&w1, |t| {
            t.config_file = Some(cfg.clone());
            t.known_hosts = mode;
        });
        match connect_err(t).await {
            TransportError::HostKeyChanged { detail, .. } => assert_eq!(
                detail,
                format!(
                    "Host key for 127.0.{NET}.21 has changed and you have requested strict checking."
                )
            ),
            other => panic!("changed host key ({mode:?}): {other:?}"),
        }
    }

    // A key the node does not accept (the config names no other key).
    let own_cfg = work.join("no_identity.conf");
    std::fs::write(
        &own_cfg,
        format!(
            "Host *\n  UserKnownHostsFile {}\n",
            lab.dir.join("known_hosts").display()
        ),
    )
    .unwrap();
    let wrong = target_with(&w1, |t| {
        t.config_file = Some(own_cfg.clone());
        t.identity_file = Some(other_key.clone());
    });
    match connect_err(wrong).await {
        TransportError::AuthFailed { node, detail, .. } => {
            assert_eq!(node, "w1");
            assert_eq!(
                detail,
                format!("root@127.0.{NET}.21: Permission denied (publickey).")
            );
        }
        other => panic!("wrong identity: {other:?}"),
    }
    // An identity file that is not there: ssh tries no key, and warns of the file only on the
    // stderr the crate discards; hactl says it.
    let missing = work.join("no_such_key");
    let t = target_with(&w1, |t| {
        t.config_file = Some(own_cfg.clone());
        t.identity_file = Some(missing.clone());
    });
    match connect_err(t).await {
        TransportError::AuthFailed { detail, .. } => assert_eq!(
            detail,
            format!(
                "root@127.0.{NET}.21: Permission denied (publickey). (identity file {} not accessible: no such file or directory)",
                missing.display()
            )
        ),
        other => panic!("missing identity file: {other:?}"),
    }

    // Something accepts the TCP connection but never speaks SSH: connect_timeout bounds it.
    let silent = std::net::TcpListener::bind((format!("127.0.{NET}.98").as_str(), port)).unwrap();
    let t = target_with(&w1, |t| {
        t.node = "silent".into();
        t.address = format!("127.0.{NET}.98").parse().unwrap();
        t.connect_timeout = Duration::from_secs(2);
    });
    let started = Instant::now();
    let e = connect_err(t).await;
    let took = started.elapsed();
    drop(silent);
    match e {
        TransportError::Unreachable { detail, .. } => {
            assert!(detail.contains("timed out"), "{detail}")
        }
        other => panic!("silent server: {other:?}"),
    }
    assert!(
        took < Duration::from_secs(6),
        "connect took {took:?} with a 2 s timeout"
    );

    // ProxyJump from the config file: w1 through cp1. The master's child is the jump.
    let jump_cfg = work.join("jump.conf");
    let write_jump = |via: &str| {
        std::fs::write(
            &jump_cfg,
            format!(
                // Include first: a line after `Host` belongs to that block.
                "Include {}\nHost 127.0.{NET}.21\n  ProxyJump {via}\n",
                lab.dir.join("ssh_config").display()
            ),
        )
        .unwrap()
    };
    write_jump(&format!("127.0.{NET}.11"));
    let jumped = target_with(&w1, |t| t.config_file = Some(jump_cfg.clone()));
    let s = SshSession::connect(jumped.clone()).await.unwrap();
    assert_eq!(s.run("hostname").await.unwrap().stdout_text(), "w1\n");
    assert_eq!(masters(s.control_socket()).len(), 1);
    // The hop: `ssh -W` to w1 through cp1 (started by the master before it went to the
    // background, so not necessarily its child).
    let jump = jump_cfg.to_string_lossy().into_owned();
    let hop = processes().into_iter().find(|(_, _, cmd)| {
        cmd.starts_with("ssh ")
            && cmd.contains(&jump)
            && cmd.contains(&format!("-W [127.0.{NET}.21]:{port} 127.0.{NET}.11"))
    });
    assert!(
        hop.is_some(),
        "no ProxyJump hop: {:?}",
        processes()
            .into_iter()
            .filter(|(_, _, c)| c.starts_with("ssh "))
            .collect::<Vec<_>>()
    );
    let jump_ctl = s.control_socket().to_path_buf();
    s.close().await.unwrap();
    wait_no_master(&jump_ctl);
    // Through a jump host that is down: unreachable, though w1 itself is up.
    write_jump(&format!("127.0.{NET}.99"));
    match connect_err(jumped).await {
        TransportError::Unreachable { detail, .. } => {
            assert!(detail.contains("ProxyJump"), "{detail}")
        }
        other => panic!("dead jump host: {other:?}"),
    }

    // The lab's ssh-down fault: refused, in ssh's words.
    lab.fault("w1", &["ssh-down"]);
    match connect_err(w1.clone()).await {
        TransportError::Unreachable { node, detail, .. } => {
            assert_eq!(node, "w1");
            assert_eq!(
                detail,
                format!("ssh: connect to host 127.0.{NET}.21 port {port}: Connection refused")
            );
        }
        other => panic!("ssh-down: {other:?}"),
    }
    lab.heal("w1");
    let s = SshSession::connect(w1)
        .await
        .unwrap_or_else(|e| panic!("w1 after heal: {e:?}\n{}", lab.logs()));
    s.close().await.unwrap();

    // Nothing of ours is left running.
    let ours: Vec<_> = processes()
        .into_iter()
        .filter(|(_, _, cmd)| cmd.starts_with("ssh ") && cmd.contains(&format!("127.0.{NET}.")))
        .collect();
    assert!(ours.is_empty(), "ssh processes left: {ours:?}");
}

/// The child half of `a_killed_hactl_leaves_nothing_running`, which runs it with
/// `HACTL_KILLED_CHILD_LAB` naming the lab: runs a command that outlives it on cp1, over
/// hactl's transport, until it is killed.
#[test]
#[ignore = "the child of ssh_transport_against_a_lab's SIGKILL check, which runs it"]
fn killed_child() {
    let dir =
        std::env::var_os("HACTL_KILLED_CHILD_LAB").expect("run by ssh_transport_against_a_lab");
    let marker = std::env::var("HACTL_KILLED_CHILD_MARKER").unwrap();
    let cp1 = ssh_targets_in(Path::new(&dir)).remove(0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ended = rt.block_on(async {
        let session = SshSession::connect(cp1).await.unwrap();
        session.run(&format!("sh -c 'sleep 30; {marker}'")).await
    });
    panic!("the command ended before this process was killed: {ended:?}");
}

/// hactl killed (SIGKILL: no destructor runs, no master is closed) while a command runs on a
/// node: the kernel closes hactl's end of the command's stdin, the master sends EOF, and the
/// watchdog stops the command on the node at once.
fn a_killed_hactl_leaves_nothing_running(lab: &Lab) {
    let marker = format!("echo killed-on-purpose-{NET}");
    let masters_before = lab_support::ssh_masters(&format!("127.0.{NET}."));
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "killed_child"])
        .env("HACTL_KILLED_CHILD_LAB", &lab.dir)
        .env("HACTL_KILLED_CHILD_MARKER", &marker)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let running = loop {
        let now = marked(&marker);
        if now.iter().any(|(_, cmd)| cmd.trim() == "sleep 30") {
            break now;
        }
        assert!(
            Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "the child's command never ran on cp1"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let took = gone(&running, Instant::now(), Duration::from_secs(20));
    assert!(
        took < Duration::from_secs(3),
        "the command of a killed hactl stopped {took:?} after it died"
    );
    // Its master outlives it (a killed hactl closes none): stopped here by its PID.
    let left_behind = || -> Vec<(u32, String)> {
        processes()
            .into_iter()
            .filter(|(_, _, cmd)| {
                is_ssh_master(cmd)
                    && cmd.contains(&format!("127.0.{NET}."))
                    && !masters_before.contains(cmd)
            })
            .map(|(pid, _, cmd)| (pid, cmd))
            .collect()
    };
    let orphans = left_behind();
    assert_eq!(orphans.len(), 1, "the killed child's master: {orphans:?}");
    for (pid, _) in &orphans {
        let pid = rustix::process::Pid::from_raw(*pid as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    gone(&orphans, Instant::now(), Duration::from_secs(10));
}

/// A command's processes: those whose command line holds `marker`, and their children.
fn marked(marker: &str) -> Vec<(u32, String)> {
    let all = processes();
    let ours: Vec<u32> = all
        .iter()
        .filter(|(_, _, cmd)| cmd.contains(marker))
        .map(|(pid, _, _)| *pid)
        .collect();
    all.iter()
        .filter(|(pid, ppid, _)| ours.contains(pid) || ours.contains(ppid))
        .map(|(pid, _, cmd)| (*pid, cmd.clone()))
        .collect()
}

/// How long after `since` the processes in `abandoned` were all gone; fails after `within`.
fn gone(abandoned: &[(u32, String)], since: Instant, within: Duration) -> Duration {
    loop {
        // By PID and command line: a PID may be reused meanwhile.
        let left: Vec<_> = processes()
            .into_iter()
            .map(|(pid, _, cmd)| (pid, cmd))
            .filter(|p| abandoned.contains(p))
            .collect();
        if left.is_empty() {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < within,
            "the abandoned command still runs on the node after {within:?}: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A command without input that outlives `command_timeout`: `run` gives up on time with a
/// Timeout naming the node, its address and the timeout; the watchdog on the command's stdin
/// kills the command and its children on the node at once (the node's `timeout`, 5 s later, is
/// not what stops it); the same session (the same master) runs the next command.
async fn abandoned_without_input_is_killed_at_once(session: SshSession, net_marker: &str) {
    let ctl = session.control_socket().to_path_buf();
    let before = masters(&ctl);
    let marker = format!("echo timed-out-on-purpose-{net_marker}");
    let script = format!("sh -c 'sleep 30; {marker}'");
    let started = Instant::now();
    let (result, abandoned) = {
        let run = session.run(&script);
        tokio::pin!(run);
        let mut abandoned = vec![];
        // While it runs: the watchdog's shell, the inner sh and its sleep.
        let result = loop {
            tokio::select! {
                r = &mut run => break r,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    let now = marked(&marker);
                    if now.len() > abandoned.len() {
                        abandoned = now;
                    }
                }
            }
        };
        (result, abandoned)
    };
    let gave_up = Instant::now();
    match &result {
        Err(e @ TransportError::Timeout { node, after, .. }) => {
            assert_eq!((node.as_str(), *after), ("cp1", Duration::from_secs(2)));
            let text = e.to_string();
            assert!(
                text.starts_with(&format!(
                    "cp1 (127.0.{NET}.11): `{script}` did not finish within 2 s"
                )) && text.contains("Raise --command-timeout"),
                "{text}"
            );
        }
        other => panic!("sleep 30 with a 2 s timeout: {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the timeout took {:?}",
        started.elapsed()
    );
    assert!(
        abandoned.iter().any(|(_, cmd)| cmd.trim() == "sleep 30"),
        "the command was not seen running: {abandoned:?}"
    );
    let took = gone(&abandoned, gave_up, Duration::from_secs(20));
    assert!(
        took < Duration::from_secs(3),
        "the abandoned command stopped {took:?} after hactl gave up: later than the watchdog would"
    );

    let out = session.run("echo ok").await.unwrap();
    assert_eq!(out.stdout_text(), "ok\n");
    assert_eq!(masters(&ctl), before, "the master changed after a timeout");
    session.close().await.unwrap();
    wait_no_master(&ctl);
}

/// A command with input (its stdin is the input, so no watchdog) that outlives
/// `command_timeout`: hactl gives up on time, and the node's own `timeout` stops it and its
/// children later (closing its channel does not: no pty, no SIGHUP).
async fn timeouts(cp1: &SshTarget) {
    let quick = SshSession::connect(target_with(cp1, |t| {
        t.command_timeout = Duration::from_secs(2)
    }))
    .await
    .unwrap();
    abandoned_without_input_is_killed_at_once(quick, &format!("{NET}")).await;

    let quick = SshSession::connect(target_with(cp1, |t| {
        t.command_timeout = Duration::from_secs(1)
    }))
    .await
    .unwrap();
    let ctl = quick.control_socket().to_path_buf();
    let before = masters(&ctl);
    // The marker names the abandoned command's processes (sh and `timeout` carry the script).
    let marker = format!("echo timed-out-with-input-on-purpose-{NET}");
    let started = Instant::now();
    let result = quick
        .run_with_input(&format!("cat >/dev/null; sleep 30; {marker}"), b"input\n")
        .await;
    let took = started.elapsed();
    match &result {
        Err(TransportError::Timeout { node, after, .. }) => {
            assert_eq!((node.as_str(), *after), ("cp1", Duration::from_secs(1)));
        }
        other => panic!("sleep 30 with a 1 s timeout: {other:?}"),
    }
    assert!(took < Duration::from_secs(10), "the timeout took {took:?}");
    let gave_up = Instant::now();

    // Still running on the node right after: sh, the node's `timeout`, and their `sleep 30`.
    let abandoned = marked(&marker);
    assert!(
        !abandoned.is_empty(),
        "the timed-out command was expected to outlive its channel for a few seconds"
    );

    // The same session runs the next command at once, over the same master.
    let out = quick.run("echo ok").await.unwrap();
    assert_eq!(out.stdout_text(), "ok\n");
    assert_eq!(masters(&ctl), before, "the master changed after a timeout");

    // The node's `timeout` (1 s + 5 s grace) stops the abandoned command and its children.
    gone(&abandoned, gave_up, Duration::from_secs(20));
    quick.close().await.unwrap();
    wait_no_master(&ctl);
}
