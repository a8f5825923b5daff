//! `hactl apply` and `hactl rollback` against labs of real parts (sshd, etcd, haproxy) of 1.23
//! with docker, 1.31 and 1.33, checked with the real clients: the conversion of a one-node
//! control plane behind the load balancer, the API through the load balancer available
//! throughout, `openssl s_client` verifying the load balancer's name, a rollback that puts
//! every byte back, stale saved plans refused, and control-plane joins refused with a way
//! through that works.

mod lab_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lab_support::applying::{changed, configmaps, files, lease_gone, on_terminal, text};
use lab_support::{HACTL, Lab, plan};

/// Probes `/readyz` through the load balancer every 100 ms with the real curl, by a name every
/// kubeadm API server certificate carries (`kubernetes`), verified against the cluster CA;
/// returns how long the API was unavailable in all, and the probes made.
fn probe(lb: String, ca: PathBuf, stop: Arc<AtomicBool>) -> (Duration, u32) {
    let mut down = Duration::ZERO;
    let mut probes = 0;
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let out = Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "1",
            ])
            .arg("--cacert")
            .arg(&ca)
            .args(["--resolve", &format!("kubernetes:6443:{lb}")])
            .arg("https://kubernetes:6443/readyz")
            .output()
            .unwrap();
        probes += 1;
        let took = start.elapsed();
        if out.stdout != b"200" {
            down += took.max(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(100).saturating_sub(took));
    }
    (down, probes)
}

/// The secrets no output or journal may hold: the admin's client key (as admin.conf holds it)
/// and every bootstrap token's secret.
fn secrets(lab: &Lab) -> Vec<String> {
    let admin =
        std::fs::read_to_string(lab.dir.join("nodes/cp1/etc/kubernetes/admin.conf")).unwrap();
    let key_data = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("client-key-data: "))
        .expect("admin.conf has a client key");
    let mut out = vec![key_data[..40].to_string()];
    let list = lab.kubectl_json(&["get", "secrets", "-n", "kube-system"]);
    for s in list["items"].as_array().unwrap() {
        if s["type"] == "bootstrap.kubernetes.io/token" {
            let b64 = s["data"]["token-secret"].as_str().unwrap();
            let decoded = Command::new("base64")
                .arg("-d")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut c| {
                    use std::io::Write;
                    c.stdin.take().unwrap().write_all(b64.as_bytes())?;
                    c.wait_with_output()
                })
                .unwrap();
            let token = String::from_utf8(decoded.stdout).unwrap();
            assert_eq!(token.len(), 16, "a bootstrap token secret");
            out.push(token);
        }
    }
    assert!(out.len() >= 2, "the lab has a bootstrap token");
    out
}

fn assert_no_secret(what: &str, text: &str, secrets: &[String]) {
    assert!(!text.contains("PRIVATE KEY"), "{what} holds a private key");
    for s in secrets {
        assert!(!text.contains(s.as_str()), "{what} holds a secret");
    }
    // Redacted, a kubeconfig's key may be named.
    for (i, _) in text.match_indices("client-key-data: ") {
        let rest = &text[i + "client-key-data: ".len()..];
        assert!(rest.starts_with("REDACTED"), "{what} holds client-key-data");
    }
}

/// The node files the plan changes (`NODE/PATH`, as under the lab's `nodes/`).
fn planned_files(plan: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = plan["resource_changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| {
            let op = &c["operation"];
            let path = op["path"].as_str().or(op["cert_path"].as_str())?;
            Some(format!("{}{path}", op["node"].as_str()?))
        })
        .collect();
    out.sort();
    out
}

fn convert_and_roll_back(tag: &str, net: u8, up: &[&str]) {
    let lab = Lab::up(tag, &plan(net, 1, 2), up);
    let version = up.join(" ");
    let file = lab.dir.join("hactl.toml");
    let file_s = file.to_str().unwrap();
    let saved = lab.dir.join("plan.json");
    let saved_s = saved.to_str().unwrap();
    let runs = lab.dir.join(".hactl/runs");
    let ca = lab.dir.join("nodes/cp1/etc/kubernetes/pki/ca.crt");
    let hactl = |args: &[&str]| Command::new(HACTL).args(args).output().unwrap();

    // Asked on a terminal (the real `script` gives it one), anything but `yes` changes nothing.
    let before = files(&lab);
    let mut asked = on_terminal(&["apply", file_s]);
    asked.stdin.take().unwrap().write_all(b"no\n").unwrap();
    let out = asked.wait_with_output().unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("Do you want to perform these actions? Only 'yes' will be accepted:")
            && said.contains("Apply cancelled."),
        "{said}"
    );
    assert_eq!(changed(&before, &files(&lab)), Vec::<String>::new());
    assert!(!runs.exists(), "a cancelled apply starts no run");

    // As Terraform ends a plan: unsaved, it may not be what apply does; saved, how to apply it.
    let out = hactl(&["plan", file_s]);
    assert!(
        text(&out).contains(&format!(
            "Note: you didn't use the -o option to save this plan, so hactl can't guarantee to take exactly these actions if you run `hactl apply {file_s}` now."
        )),
        "{}",
        text(&out)
    );
    // A saved plan made stale by a hand edit is refused, naming what drifted; nothing changes.
    let out = hactl(&["plan", file_s, "-o", saved_s]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "To perform exactly these actions, run: hactl apply {saved_s}"
        )) && !text(&out).contains("Note: you didn't use the -o option"),
        "{}",
        text(&out)
    );
    let proxy = lab.kubectl_json(&["get", "configmap", "-n", "kube-system", "kube-proxy"]);
    let original = proxy["data"]["config.conf"].as_str().unwrap().to_string();
    let edited = original.replace("enableProfiling: false", "enableProfiling: true");
    assert_ne!(edited, original);
    lab.edit_configmap("kube-system", "kube-proxy", |cm| {
        cm["data"]["config.conf"] = edited.clone().into();
    });
    let before = files(&lab);
    let out = hactl(&["apply", saved_s]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("stale") && said.contains("configmap.kube-system.kube-proxy"),
        "{said}"
    );
    lab.edit_configmap("kube-system", "kube-proxy", |cm| {
        cm["data"]["config.conf"] = original.clone().into();
    });
    // Put back, the ConfigMap is still a new version (its Pods predate it): plan again.
    let out = hactl(&["plan", file_s, "-o", saved_s]);
    assert!(out.status.success(), "{}", text(&out));
    let kubelet_conf = lab.dir.join("nodes/w1/etc/kubernetes/kubelet.conf");
    let kubelet_bytes = std::fs::read(&kubelet_conf).unwrap();
    lab.ssh_ok(
        "w1",
        "echo '# edited by hand' >> /etc/kubernetes/kubelet.conf",
    );
    let out = hactl(&["apply", saved_s]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("kubeconfig.w1.kubelet"), "{said}");
    assert!(!said.contains("configmap.kube-system.kube-proxy"), "{said}");
    std::fs::write(&kubelet_conf, &kubelet_bytes).unwrap();
    assert_eq!(changed(&before, &files(&lab)), Vec::<String>::new());
    assert!(!runs.exists(), "a refused plan starts no run");

    // The apply, with the API probed through the load balancer all along.
    let before = files(&lab);
    let cms_before = configmaps(&lab);
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (lb, ca, stop) = (format!("127.0.{net}.100"), ca.clone(), stop.clone());
        std::thread::spawn(move || probe(lb, ca, stop))
    };
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let out = hactl(&["apply", file_s, "--auto-approve"]);
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (down, probes) = prober.join().unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}\n{}", lab.logs());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let complete =
        regex::Regex::new(r"\nApply complete! Resources: 0 added, (\d+) changed, 0 destroyed\.\n")
            .unwrap();
    let n: usize = complete.captures(&stdout).expect(&said)[1].parse().unwrap();
    assert!(n >= 8, "{said}");
    assert!(
        stdout.contains("apiserver_cert.cp1: Modifications complete after"),
        "{said}"
    );
    assert!(
        stdout.contains("handler.w2.kube-proxy: Verified after"),
        "{said}"
    );
    println!(
        "{version}: apply took {:.1} s; API through the LB unavailable {} ms in all ({probes} probes)",
        took.as_secs_f64(),
        down.as_millis()
    );
    assert!(probes > 20, "{probes} probes");
    assert!(down <= Duration::from_secs(1), "unavailable {down:?}");
    // The run's lock was released: the Lease is gone.
    let lease = lab.kubectl(&["get", "lease", "-n", "kube-system", "hactl"]);
    assert!(
        String::from_utf8_lossy(&lease.stderr).contains("NotFound"),
        "{}",
        text(&lease)
    );

    // What changed is exactly what the plan names; the keys are untouched.
    let run = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let run_plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("plan.json")).unwrap()).unwrap();
    let after = files(&lab);
    let nodes = lab.dir.join("nodes");
    let touched: Vec<String> = changed(&before, &after)
        .iter()
        .map(|p| {
            Path::new(p)
                .strip_prefix(&nodes)
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    let planned = planned_files(&run_plan);
    assert_eq!(touched, planned);
    assert!(planned.len() >= 4, "{planned:?}");
    for key in ["apiserver.key", "ca.key", "sa.key"] {
        let p = lab.dir.join("nodes/cp1/etc/kubernetes/pki").join(key);
        assert_eq!(before[&p], after[&p], "{key}");
    }

    // The real openssl verifies the load balancer's name against the cluster CA through it.
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.{net}.100:6443")])
        .args(["-servername", "k8s-api.lab.internal"])
        .args([
            "-verify_hostname",
            "k8s-api.lab.internal",
            "-verify_return_error",
        ])
        .arg("-CAfile")
        .arg(&ca)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains("Verify return code: 0 (ok)"),
        "{}",
        text(&out)
    );
    lab.wait_status(
        "a healthy lab after apply",
        Duration::from_secs(30),
        |_, code| code == 0,
    );
    let out = hactl(&["plan", file_s, "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // No key or token bytes in what apply said or journaled.
    let secrets = secrets(&lab);
    let journal = std::fs::read_to_string(run.join("journal.jsonl")).unwrap();
    assert_no_secret("apply's output", &said, &secrets);
    assert_no_secret("the journal", &journal, &secrets);
    assert_no_secret("the run's plan", &run_plan.to_string(), &secrets);

    // The rollback puts every byte back.
    let out = hactl(&["rollback", file_s, "--auto-approve"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}\n{}", lab.logs());
    assert!(said.contains("Rollback complete!"), "{said}");
    assert_no_secret("rollback's output", &said, &secrets);
    assert_eq!(changed(&before, &files(&lab)), Vec::<String>::new());
    assert_eq!(configmaps(&lab), cms_before);
    lab.wait_status(
        "a healthy lab after rollback",
        Duration::from_secs(30),
        |_, code| code == 0,
    );
    // A step that fails (w2's disk full when its kubelet.conf is written): apply exits 1,
    // saying what failed and every step it rolled back, and every byte is back.
    lab.fault("w2", &["disk-full"]);
    let out = hactl(&["apply", file_s, "--auto-approve"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("Error: kubeconfig.w2.kubelet") && said.contains("No space left on device"),
        "{said}"
    );
    let undone = said
        .split("hactl undid every change it had begun, last first: ")
        .nth(1)
        .unwrap_or_else(|| panic!("{said}"));
    assert!(
        undone.starts_with("kubeconfig.w2.kubelet, kubeconfig.w1.kubelet, ")
            && undone.contains(", apiserver_cert.cp1.\nThen it ran their handlers again: ")
            && undone.contains("handler.w1.kubelet"),
        "{said}"
    );
    lab.heal("w2");
    assert_eq!(changed(&before, &files(&lab)), Vec::<String>::new());
    assert_eq!(configmaps(&lab), cms_before);
    lab.wait_status(
        "a healthy lab after a failed apply",
        Duration::from_secs(30),
        |_, code| code == 0,
    );

    // Rolled back once is rolled back: nothing to do.
    let out = hactl(&["rollback", file_s, "--auto-approve"]);
    assert!(
        out.status.success() && text(&out).contains("rolled back already"),
        "{}",
        text(&out)
    );
}

#[test]
fn apply_and_rollback_on_1_23_with_docker() {
    // Static pods restarted by `docker kill`, as dockershim's kubelet runs them.
    convert_and_roll_back(
        "apply-123",
        35,
        &["--kubernetes-version", "1.23", "--runtime", "docker"],
    );
}

#[test]
fn apply_and_rollback_on_1_31() {
    convert_and_roll_back("apply-131", 46, &["--kubernetes-version", "1.31"]);
}

#[test]
fn apply_and_rollback_on_1_33() {
    convert_and_roll_back("apply-133", 47, &["--kubernetes-version", "1.33"]);
}

/// A desired-state file with three control-plane nodes, two of them bare: apply refuses the
/// joins, changes nothing, takes no lock and starts no run; the way its help gives works as
/// said: the conversion without cp2 and cp3, each joined by hand with the lab's kubeadm and the
/// command `hactl plan` shows, then `hactl plan` of the whole file with no changes.
#[test]
fn apply_refuses_joins_and_the_way_its_help_gives_ends_in_three_control_plane_nodes() {
    let net = 63;
    let lab = Lab::up(
        "apply-joins",
        &plan(net, 3, 1),
        &["--kubernetes-version", "1.31"],
    );
    let file = lab.dir.join("hactl.toml");
    let file_s = file.to_str().unwrap();

    let before = (files(&lab), configmaps(&lab));
    let out = lab.hactl(&["apply", file_s, "--auto-approve"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    for phrase in [
        "the plan joins cp2, cp3 to the control plane (control_plane.cp2, control_plane.cp3), \
         which this hactl does not do yet; nothing was changed",
        &format!("take cp2, cp3 out of {file_s}"),
        "`kubeadm token create` prints a token",
        "`kubeadm init phase upload-certs --upload-certs` a certificate key",
    ] {
        // miette folds the help at any column, inside a path too: compared without spaces.
        let bare = |t: &str| t.split_whitespace().collect::<String>();
        assert!(
            bare(&said).contains(&bare(phrase)),
            "{phrase:?} not in:\n{said}"
        );
    }
    assert!(
        changed(&before.0, &files(&lab)).is_empty() && before.1 == configmaps(&lab),
        "a refused apply changed the cluster"
    );
    assert!(lease_gone(&lab), "a refused apply left its lock");
    assert!(
        !lab.dir.join(".hactl/runs").exists(),
        "a refused apply started a run"
    );

    // The help's way: convert without the nodes to join...
    let desired = std::fs::read_to_string(&file).unwrap();
    let without: String = desired
        .split("\n[[node]]")
        .filter(|t| !t.contains("name = \"cp2\"") && !t.contains("name = \"cp3\""))
        .collect::<Vec<_>>()
        .join("\n[[node]]");
    assert_eq!(without.matches("[[node]]").count(), 2, "{without}");
    let convert = lab.dir.join("convert.toml");
    std::fs::write(&convert, without).unwrap();
    let out = lab.hactl(&["apply", convert.to_str().unwrap(), "--auto-approve"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // ...then each node joined by hand with the command `hactl plan` shows for it, its
    // placeholders filled from cp1's kubeadm (a token and a certificate key serve both joins).
    let plan_out = lab.hactl(&["plan", file_s, "--no-color"]);
    let shown = String::from_utf8_lossy(&plan_out.stdout).to_string();
    // Apply does not carry joins out: the plan does not say to apply it.
    assert!(
        !text(&plan_out).contains("hactl apply"),
        "{}",
        text(&plan_out)
    );
    let creds = lab_support::joining::Creds::new(&lab);
    for (node, address) in [("cp2", 12), ("cp3", 13)] {
        let join = shown
            .lines()
            .filter_map(|l| l.trim().strip_prefix("+ join command:"))
            .map(str::trim)
            .find(|c| {
                c.ends_with(&format!(
                    "--apiserver-advertise-address 127.0.{net}.{address}"
                ))
            })
            .unwrap_or_else(|| panic!("no join command for {node} in:\n{shown}"));
        let command = join
            .replace("<bootstrap-token>", &creds.token)
            .replace("<certificate-key>", &creds.key);
        let out = lab.ssh(node, &command);
        assert!(out.status.success(), "{node}'s join: {}", text(&out));
    }
    lab.wait_status(
        "a healthy lab of three voting, started etcd members",
        Duration::from_secs(60),
        |v, code| {
            let members = v["etcd"]["members"].as_array().map_or(&[][..], |m| &m[..]);
            code == 0
                && members.len() == 3
                && members
                    .iter()
                    .all(|m| m["started"] == true && m["is_learner"] == false)
        },
    );
    let out = lab.hactl(&["plan", file_s, "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
