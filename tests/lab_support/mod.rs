//! Shared by the lab's tests: start a lab with the real `hactl lab up`, reach it with the real
//! `ssh` and `kubectl`, read `hactl lab status --format json`, stop it with `hactl lab down`.

#![allow(dead_code)]

pub mod applying;
pub mod joining;
pub mod observing;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const HACTL: &str = env!("CARGO_BIN_EXE_hactl");

/// A desired-state file for a lab on `127.0.<net>.x`: control-plane nodes at .11…, workers
/// at .21…, the load balancer at .100. Each test takes its own `net` so labs run side by side.
pub fn plan(net: u8, control_planes: usize, workers: usize) -> String {
    let mut s = format!(
        "version = 1\n\n[cluster]\nname = \"lab{net}\"\n\n[endpoint]\nhost = \"k8s-api.lab.internal\"\naddresses = [\"127.0.{net}.100\"]\nport = 6443\n\n[ssh]\nuser = \"root\"\n"
    );
    if control_planes.is_multiple_of(2) {
        // Tests that need two members (quorum loss) say so, as an operator would.
        s.push_str("\n[policy]\nallow_even_control_plane = true\n");
    }
    for i in 0..control_planes {
        s.push_str(&format!(
            "\n[[node]]\nname = \"cp{}\"\naddress = \"127.0.{net}.{}\"\nrole = \"control-plane\"\n",
            i + 1,
            11 + i
        ));
    }
    for i in 0..workers {
        let (host, name) = (21 + i, format!("w{}", i + 1));
        // Beyond .99 the workers go on the next /24 so 50 fit.
        let addr = if host < 100 {
            format!("127.0.{net}.{host}")
        } else {
            format!("127.1.{net}.{}", host - 99)
        };
        s.push_str(&format!(
            "\n[[node]]\nname = \"{name}\"\naddress = \"{addr}\"\nrole = \"worker\"\n"
        ));
    }
    s
}

pub struct Lab {
    pub dir: PathBuf,
    pub up_output: Output,
}

impl Lab {
    /// `hactl lab up` for `plan_text`; panics with its output when it fails.
    pub fn up(tag: &str, plan_text: &str, extra: &[&str]) -> Lab {
        let dir = std::env::temp_dir().join(format!("hactl-lab-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let plan = dir.join("plan.toml");
        std::fs::write(&plan, plan_text).unwrap();
        let lab_dir = dir.join("lab");
        let out = Command::new(HACTL)
            .args(["lab", "up", "--plan"])
            .arg(&plan)
            .arg("--dir")
            .arg(&lab_dir)
            .args(extra)
            .output()
            .unwrap();
        let lab = Lab {
            dir: lab_dir,
            up_output: out,
        };
        assert!(
            lab.up_output.status.success(),
            "hactl lab up failed:\n{}\n{}\n{}",
            String::from_utf8_lossy(&lab.up_output.stdout),
            String::from_utf8_lossy(&lab.up_output.stderr),
            lab.logs()
        );
        lab
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.join("log")) {
            for e in entries.flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                s.push_str(&format!("--- {}\n", e.path().display()));
                for l in tail.iter().rev() {
                    s.push_str(l);
                    s.push('\n');
                }
            }
        }
        s
    }

    pub fn ssh(&self, node: &str, command: &str) -> Output {
        Command::new("ssh")
            .arg("-F")
            .arg(self.dir.join("ssh_config"))
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=5",
                node,
                command,
            ])
            .output()
            .unwrap()
    }

    /// Runs `command` on `node` and returns its stdout; panics with stderr when it fails.
    pub fn ssh_ok(&self, node: &str, command: &str) -> String {
        let out = self.ssh(node, command);
        assert!(
            out.status.success(),
            "ssh {node} {command:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.dir.join("admin.conf"))
            .args(["--request-timeout", "10s"])
            .args(args)
            .output()
            .unwrap()
    }

    /// `kubectl ARGS -o json`, parsed; panics with kubectl's stderr when it fails.
    pub fn kubectl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.kubectl(&all);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("kubectl prints JSON")
    }

    /// Replaces a ConfigMap after `edit` changed its JSON, with the real kubectl (what
    /// `kubectl edit` does, without an editor).
    pub fn edit_configmap(&self, ns: &str, name: &str, edit: impl Fn(&mut serde_json::Value)) {
        let mut cm = self.kubectl_json(&["get", "configmap", "-n", ns, name]);
        edit(&mut cm);
        let file = self.dir.join(format!("{name}.json"));
        std::fs::write(&file, cm.to_string()).unwrap();
        // The installed kubectl is gcloud's dispatcher, which runs a client of the server's
        // version; 1.28's validates against OpenAPI v2 (protobuf), which the lab's API server
        // does not serve (it serves v3): skip that client-side validation.
        let out = self.kubectl(&["replace", "--validate=false", "-f", file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "kubectl replace: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `hactl lab fault --dir DIR NODE KIND [ARG]`; panics when it fails.
    pub fn fault(&self, node: &str, kind: &[&str]) {
        self.lab_command("fault", node, kind);
    }

    /// `hactl lab heal --dir DIR NODE`; panics when it fails.
    pub fn heal(&self, node: &str) {
        self.lab_command("heal", node, &[]);
    }

    fn lab_command(&self, action: &str, node: &str, args: &[&str]) {
        let dir = self.dir.to_string_lossy().into_owned();
        let mut all = vec!["lab", action, "--dir", &dir, node];
        all.extend_from_slice(args);
        let out = self.hactl(&all);
        assert!(
            out.status.success(),
            "hactl lab {action} {node} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn hactl(&self, args: &[&str]) -> Output {
        Command::new(HACTL).args(args).output().unwrap()
    }

    /// `hactl lab status --format json`, with its exit code.
    pub fn status(&self) -> (serde_json::Value, i32) {
        let out = Command::new(HACTL)
            .args(["lab", "status", "--format", "json", "--dir"])
            .arg(&self.dir)
            .output()
            .unwrap();
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "lab status printed no JSON ({e}): {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (v, out.status.code().unwrap_or(-1))
    }

    /// Polls the status until `check` returns true; panics with the last status otherwise.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&serde_json::Value, i32) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (v, code) = self.status();
            if check(&v, code) {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "waited {timeout:?} for {what}; last status (exit {code}):\n{}\n{}",
                    serde_json::to_string_pretty(&v).unwrap(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// cp1's apiserver certificate re-signed with the LB's name and address, as hactl does.
    pub fn add_lb_san(&self, net: u8) {
        let dir = &self.dir;
        let read = |p: &str| std::fs::read_to_string(dir.join("nodes/cp1").join(p)).unwrap();
        let ca = hactl::lab::pki::CertAndKey {
            cert_pem: read("etc/kubernetes/pki/ca.crt"),
            key_pem: read("etc/kubernetes/pki/ca.key"),
        };
        let spec = hactl::lab::pki::CertSpec {
            common_name: "kube-apiserver".into(),
            organizations: vec![],
            dns_names: [
                "cp1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "k8s-api.lab.internal",
            ]
            .map(String::from)
            .to_vec(),
            ip_addresses: [
                "10.96.0.1".to_string(),
                format!("127.0.{net}.11"),
                format!("127.0.{net}.100"),
            ]
            .map(|a| a.parse().unwrap())
            .to_vec(),
            usage: hactl::lab::pki::Usage::Server,
            key_type: hactl::lab::pki::KeyType::Rsa2048,
        };
        let cert = hactl::lab::pki::issue(&ca, &spec).unwrap();
        let pki = dir.join("nodes/cp1/etc/kubernetes/pki");
        std::fs::write(pki.join("apiserver.key"), &cert.key_pem).unwrap();
        std::fs::write(pki.join("apiserver.crt"), &cert.cert_pem).unwrap();
    }

    /// Every node's SSH target, as hactl builds them from the lab's hactl.toml.
    pub fn ssh_targets(&self) -> Vec<hactl::transport::SshTarget> {
        ssh_targets_in(&self.dir)
    }

    pub fn down(&self) -> Output {
        Command::new(HACTL)
            .args(["lab", "down", "--dir"])
            .arg(&self.dir)
            .output()
            .unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.down();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(self.dir.parent().unwrap_or(Path::new("/nonexistent")));
        }
    }
}

/// The node's entry in the status JSON.
pub fn node<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["nodes"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["name"] == name))
        .unwrap_or_else(|| panic!("no node {name} in status: {status}"))
}

/// Every process: (pid, parent pid, command line with spaces between arguments).
pub fn processes() -> Vec<(u32, u32, String)> {
    let mut all = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let (Ok(cmd), Ok(stat)) = (
            std::fs::read(e.path().join("cmdline")),
            std::fs::read_to_string(e.path().join("stat")),
        ) else {
            continue;
        };
        // The parent is the second field after the command name's closing parenthesis.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        all.push((pid, ppid, cmd));
    }
    all
}

/// Whether `cmd` (as [`processes`] gives it) is an ssh master: `ssh … -M …`.
pub fn is_ssh_master(cmd: &str) -> bool {
    let mut args = cmd.split(' ');
    let program = args.next().unwrap_or_default();
    (program == "ssh" || program.ends_with("/ssh")) && args.any(|a| a == "-M")
}

/// The command lines of this machine's ssh masters whose arguments contain `needle` (a
/// control socket's path, an address prefix such as `127.0.48.`).
pub fn ssh_masters(needle: &str) -> Vec<String> {
    processes()
        .into_iter()
        .map(|(_, _, cmd)| cmd)
        .filter(|cmd| is_ssh_master(cmd) && cmd.contains(needle))
        .collect()
}

/// `ssh_masters(needle)` once it is empty; panics with what is left after 5 s (a master
/// exits a moment after hactl has asked it to, not at once).
pub fn wait_no_ssh_master(needle: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let left = ssh_masters(needle);
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ssh masters for {needle} still run after close: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Every node's SSH target in the lab at `dir`, as hactl builds them from its hactl.toml.
pub fn ssh_targets_in(dir: &Path) -> Vec<hactl::transport::SshTarget> {
    let file = dir.join("hactl.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let desired = hactl::spec::parse(&file.to_string_lossy(), &text)
        .unwrap_or_else(|e| panic!("{}: {e:?}", file.display()));
    desired
        .nodes
        .iter()
        .map(|n| {
            hactl::transport::SshTarget::new(
                &desired,
                n,
                dir,
                None,
                Duration::from_secs(5),
                Duration::from_secs(60),
            )
        })
        .collect()
}
