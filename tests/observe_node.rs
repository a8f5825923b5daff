//! Observation of nodes and etcd against real labs: `read_node`, `reachability` and
//! `read_etcd` over real ssh, compared with the lab nodes' real files and the real `etcdctl`
//! and `openssl` run beside them.

mod lab_support;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use hactl::observe::etcd::read_etcd;
use hactl::observe::node::{reachability, read_node, unreachable};
use hactl::observed::{ContainerRuntime, Probe, REDACTED, SshProbe};
use hactl::spec::{Node, Role};
use hactl::transport::{CommandOutput, NodeTransport, TransportError};
use lab_support::{Lab, plan};

/// A test-only transport: the real `ssh` with the lab's ssh_config, one process per script
/// (the real one, `SshSession`, keeps a master connection).
struct LabSsh {
    node: String,
    address: IpAddr,
    config: PathBuf,
}

impl LabSsh {
    fn new(lab: &Lab, node: &Node) -> LabSsh {
        LabSsh {
            node: node.name.clone(),
            address: node.address,
            config: lab.dir.join("ssh_config"),
        }
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl NodeTransport for LabSsh {
    fn node(&self) -> &str {
        &self.node
    }

    fn run(
        &self,
        script: &str,
    ) -> impl std::future::Future<Output = Result<CommandOutput, TransportError>> + Send {
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.arg("-F")
            .arg(&self.config)
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=5"])
            .arg(self.address.to_string())
            .arg(format!("sh -c {}", shell_quote(script)));
        let (node, address) = (self.node.clone(), self.address.to_string());
        async move {
            let out = cmd.output().await.map_err(|e| TransportError::Other {
                node: node.clone(),
                detail: e.to_string(),
            })?;
            // ssh's own failures exit 255.
            if out.status.code() == Some(255) {
                return Err(TransportError::Unreachable {
                    node,
                    address,
                    detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
            Ok(CommandOutput {
                status: out.status.code(),
                stdout: out.stdout,
                stderr: out.stderr,
            })
        }
    }

    /// Observation never writes: only apply's seam gives a script input.
    fn run_with_input(
        &self,
        _script: &str,
        _input: &[u8],
    ) -> impl std::future::Future<Output = Result<CommandOutput, TransportError>> + Send {
        let node = self.node.clone();
        async move {
            Err(TransportError::Other {
                node,
                detail: "observation gives no script input".into(),
            })
        }
    }
}

fn node(name: &str, address: &str, role: Role) -> Node {
    Node {
        name: name.into(),
        address: address.parse().unwrap(),
        role,
        ssh: None,
    }
}

/// The file on the node, or `None` when it does not exist.
fn file(lab: &Lab, node: &str, path: &str) -> Option<String> {
    let out = lab.ssh_ok(
        node,
        &format!("if [ -e {path} ]; then echo yes; cat {path}; else echo no; fi"),
    );
    out.strip_prefix("yes\n").map(str::to_string)
}

/// kubeadm's file with the value of every `client-key-data:` line replaced, by lines.
fn redacted_by_lines(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|l| match l.split_once("client-key-data: ") {
            Some((head, _)) => format!("{head}client-key-data: {REDACTED}\n"),
            None => l.to_string(),
        })
        .collect()
}

/// What openssl says about a certificate on the node: (subject, issuer, notBefore, notAfter,
/// SANs as `DNS:x, IP:y`), in RFC 2253 names.
fn openssl_fields(lab: &Lab, node: &str, path: &str) -> (String, String, String, String, String) {
    let out = lab.ssh_ok(
        node,
        &format!("openssl x509 -in {path} -noout -nameopt RFC2253 -subject -issuer -startdate -enddate -dateopt iso_8601 -ext subjectAltName"),
    );
    let field = |p: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(p))
            .unwrap_or_else(|| panic!("no {p} in {out}"))
            .trim()
            .to_string()
    };
    let sans = out
        .lines()
        .skip_while(|l| !l.contains("Subject Alternative Name"))
        .nth(1)
        .unwrap_or("")
        .trim()
        .replace("IP Address:", "IP:");
    (
        field("subject="),
        field("issuer="),
        field("notBefore="),
        field("notAfter="),
        sans,
    )
}

/// `2026-11-02 09:09:27Z` (openssl's iso_8601) as RFC 3339.
fn iso(openssl: &str) -> String {
    openssl.replace(' ', "T")
}

fn check_node_against_files(lab: &Lab, n: &Node, reading: &hactl::observe::node::NodeReading) {
    let name = n.name.as_str();
    let o = &reading.observation;
    assert_eq!(o.ssh, SshProbe::Ok, "{name}");
    assert_eq!(o.address, n.address.to_string());
    let kubeadm = lab.ssh_ok(name, "kubeadm version -o short");
    assert_eq!(o.kubeadm_version.as_deref(), Some(kubeadm.trim()), "{name}");
    let kubelet = lab.ssh_ok(name, "kubelet --version");
    assert_eq!(
        o.kubelet_version.as_deref(),
        kubelet.split_whitespace().last(),
        "{name}"
    );
    // Kubeconfigs: exactly the files that exist, each with its key (only) redacted.
    let listed = lab.ssh_ok(name, "cd /etc/kubernetes && ls *.conf 2>/dev/null || true");
    let names: Vec<&str> = listed.split_whitespace().collect();
    assert_eq!(
        o.kubeconfigs.keys().map(String::as_str).collect::<Vec<_>>(),
        {
            let mut n = names.clone();
            n.sort();
            n
        },
        "{name}"
    );
    for conf in &names {
        let real = file(lab, name, &format!("/etc/kubernetes/{conf}")).unwrap();
        assert_eq!(
            o.kubeconfigs[*conf],
            redacted_by_lines(&real),
            "{name} {conf}"
        );
        if let Some(key) = real
            .lines()
            .find_map(|l| l.trim().strip_prefix("client-key-data: "))
        {
            assert!(!o.kubeconfigs[*conf].contains(key));
        }
    }
    assert_eq!(
        reading.admin_conf,
        file(lab, name, "/etc/kubernetes/admin.conf"),
        "{name}"
    );
    let ca = file(lab, name, "/etc/kubernetes/pki/ca.crt");
    assert_eq!(reading.ca_pem, ca, "{name}");
    // The CA pin, as kubeadm's documentation computes it.
    let pin = ca.as_ref().map(|_| {
        let out = lab.ssh_ok(name, "openssl x509 -pubkey -noout -in /etc/kubernetes/pki/ca.crt | openssl pkey -pubin -outform der | sha256sum");
        format!("sha256:{}", out.split_whitespace().next().unwrap())
    });
    assert_eq!(o.ca_pin, pin, "{name}");
    // The API server certificate, as openssl reads it.
    match file(lab, name, "/etc/kubernetes/pki/apiserver.crt") {
        None => assert_eq!(o.apiserver_cert, None, "{name}"),
        Some(_) => {
            let cert = o.apiserver_cert.as_ref().unwrap();
            let (subject, issuer, nb, na, sans) =
                openssl_fields(lab, name, "/etc/kubernetes/pki/apiserver.crt");
            assert_eq!(cert.subject, subject);
            assert_eq!(cert.issuer, issuer);
            assert_eq!(cert.not_before, iso(&nb));
            assert_eq!(cert.not_after, iso(&na));
            let ours: Vec<String> = cert.sans.iter().map(|s| s.to_string()).collect();
            assert_eq!(ours.join(", "), sans);
            let verify = lab.ssh(
                name,
                "openssl verify -CAfile /etc/kubernetes/pki/ca.crt /etc/kubernetes/pki/apiserver.crt",
            );
            assert_eq!(cert.issuer_matches_ca, verify.status.success());
            assert!(cert.issuer_matches_ca);
        }
    }
    // The manifest's endpoint.
    match file(lab, name, "/etc/kubernetes/manifests/kube-apiserver.yaml") {
        None => assert_eq!(o.apiserver_endpoint, None),
        Some(manifest) => {
            let flag = |f: &str| {
                manifest
                    .lines()
                    .find_map(|l| l.trim().strip_prefix(&format!("- --{f}=")))
                    .map(str::to_string)
            };
            let ep = o.apiserver_endpoint.as_ref().unwrap();
            assert_eq!(
                Some(ep.advertise_address.clone()),
                flag("advertise-address")
            );
            assert_eq!(
                ep.port,
                flag("secure-port").map_or(6443, |p| p.parse().unwrap())
            );
        }
    }
    // The runtime: the endpoint kubeadm wrote for the kubelet.
    let flags = file(lab, name, "/var/lib/kubelet/kubeadm-flags.env");
    let expected = flags.map(|f| {
        if f.contains("containerd.sock") {
            ContainerRuntime::Containerd
        } else {
            // kubeadm 1.23 wrote no endpoint for docker (dockershim).
            assert!(f.contains("--network-plugin"), "{f}");
            ContainerRuntime::Docker
        }
    });
    assert_eq!(o.container_runtime, expected, "{name}");
    assert!(o.control_plane_reachability.is_empty());
    let json = serde_json::to_string(o).unwrap();
    assert!(
        !json.contains("PRIVATE KEY") && !json.contains("LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVkt")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lab_1_31_nodes_and_etcd_read_as_their_files() {
    let net = 22;
    let lab = Lab::up("obs-node-131", &plan(net, 2, 1), &[]);
    let cp1 = node("cp1", "127.0.22.11", Role::ControlPlane);
    let cp2 = node("cp2", "127.0.22.12", Role::ControlPlane);
    let w1 = node("w1", "127.0.22.21", Role::Worker);
    for n in [&cp1, &cp2, &w1] {
        let reading = read_node(&LabSsh::new(&lab, n), n).await;
        check_node_against_files(&lab, n, &reading);
        assert!(reading.warnings.is_empty(), "{:?}", reading.warnings);
    }
    // What the lab makes: cp1 the init node, cp2 bare, w1 joined.
    let r1 = read_node(&LabSsh::new(&lab, &cp1), &cp1).await.observation;
    assert!(r1.kubeconfigs.contains_key("super-admin.conf"));
    assert_eq!(r1.container_runtime, Some(ContainerRuntime::Containerd));
    assert!(r1.apiserver_cert.is_some());
    let r2 = read_node(&LabSsh::new(&lab, &cp2), &cp2).await.observation;
    assert!(r2.kubeconfigs.is_empty() && r2.ca_pin.is_none() && r2.apiserver_cert.is_none());
    let rw = read_node(&LabSsh::new(&lab, &w1), &w1).await.observation;
    assert_eq!(rw.kubeconfigs.keys().collect::<Vec<_>>(), ["kubelet.conf"]);
    assert_eq!(rw.ca_pin, r1.ca_pin);

    // etcd from cp1, against etcdctl's own JSON.
    let etcd = read_etcd(&LabSsh::new(&lab, &cp1)).await;
    let raw = lab.ssh_ok(
        "cp1",
        "cd /etc/kubernetes/pki/etcd && ETCDCTL_API=3 etcdctl --endpoints https://127.0.22.11:2379 --cacert ca.crt --cert healthcheck-client.crt --key healthcheck-client.key member list -w json",
    );
    let v: serde_json::Value = serde_json::from_str(raw.trim()).unwrap();
    let members = v["members"].as_array().unwrap();
    assert_eq!(etcd.observed_from.as_deref(), Some("cp1"));
    assert_eq!(etcd.members.len(), members.len());
    for (m, raw) in etcd.members.iter().zip(members) {
        assert_eq!(m.id, format!("{:x}", raw["ID"].as_u64().unwrap()));
        assert_eq!(m.name, raw["name"].as_str().unwrap_or(""));
        assert_eq!(
            m.peer_urls,
            serde_json::from_value::<Vec<String>>(raw["peerURLs"].clone()).unwrap()
        );
        assert_eq!(
            m.client_urls,
            serde_json::from_value::<Vec<String>>(raw["clientURLs"].clone()).unwrap_or_default()
        );
        assert_eq!(m.is_learner, raw["isLearner"].as_bool().unwrap_or(false));
        assert_eq!(m.healthy, Some(true));
    }
    assert_eq!(etcd.members[0].name, "cp1");
    assert_eq!(etcd.health, Probe::Ok);
    // cp2 runs no etcd: etcd is not observed from there, and it says why.
    let none = read_etcd(&LabSsh::new(&lab, &cp2)).await;
    assert_eq!(none.observed_from, None);
    let reason = none.health.failure().unwrap();
    assert!(
        reason.contains("cp2") && reason.contains("no etcd client certificate"),
        "{reason}"
    );

    // Reachability from the bare cp2 to cp1, then with 2380 blocked (the lab rejects it).
    let targets: Vec<String> = [
        "127.0.22.11:6443",
        "127.0.22.11:2379",
        "127.0.22.11:2380",
        "127.0.22.11:1",
    ]
    .map(String::from)
    .to_vec();
    let t2 = LabSsh::new(&lab, &cp2);
    let probes = reachability(&t2, &targets, Duration::from_secs(3)).await;
    assert_eq!(probes["127.0.22.11:6443"], Probe::Ok);
    assert_eq!(probes["127.0.22.11:2379"], Probe::Ok);
    assert_eq!(probes["127.0.22.11:2380"], Probe::Ok);
    assert_eq!(
        probes["127.0.22.11:1"].failure(),
        Some("TCP from cp2 to 127.0.22.11:1: Connection refused")
    );
    lab.fault("cp2", &["block-port", "2380"]);
    let probes = reachability(&t2, &targets, Duration::from_secs(3)).await;
    assert_eq!(probes["127.0.22.11:6443"], Probe::Ok);
    assert_eq!(
        probes["127.0.22.11:2380"].failure(),
        Some("TCP from cp2 to 127.0.22.11:2380: Connection refused")
    );

    // A node whose sshd refuses: ssh's words, the address, nothing else.
    lab.fault("w1", &["ssh-down"]);
    let reading = read_node(&LabSsh::new(&lab, &w1), &w1).await;
    let o = reading.observation;
    assert_eq!(
        o.ssh.failure().as_deref(),
        Some("ssh: connect to host 127.0.22.21 port 22: Connection refused")
    );
    assert_eq!(o.address, "127.0.22.21");
    assert!(
        o.kubeconfigs.is_empty() && o.kubeadm_version.is_none() && reading.admin_conf.is_none()
    );
    let direct = unreachable(
        &w1,
        &TransportError::Unreachable {
            node: "w1".into(),
            address: "127.0.22.21".into(),
            detail: "ssh: connect to host 127.0.22.21 port 22: Connection refused".into(),
        },
    );
    assert_eq!(direct, o);
    lab.down();
}

#[tokio::test(flavor = "multi_thread")]
async fn lab_1_23_docker_nodes_read_as_their_files() {
    let lab = Lab::up(
        "obs-node-123",
        &plan(23, 1, 1),
        &["--kubernetes-version", "1.23", "--runtime", "docker"],
    );
    let cp1 = node("cp1", "127.0.23.11", Role::ControlPlane);
    let w1 = node("w1", "127.0.23.21", Role::Worker);
    for n in [&cp1, &w1] {
        let reading = read_node(&LabSsh::new(&lab, n), n).await;
        check_node_against_files(&lab, n, &reading);
        let o = &reading.observation;
        assert_eq!(o.container_runtime, Some(ContainerRuntime::Docker));
        assert!(o.kubeadm_version.as_deref().unwrap().starts_with("v1.23."));
        assert!(!o.kubeconfigs.contains_key("super-admin.conf"));
    }
    let r1 = read_node(&LabSsh::new(&lab, &cp1), &cp1).await.observation;
    assert!(r1.kubeconfigs.contains_key("admin.conf"));
    let etcd = read_etcd(&LabSsh::new(&lab, &cp1)).await;
    assert_eq!(etcd.observed_from.as_deref(), Some("cp1"));
    assert_eq!(etcd.health, Probe::Ok);
    lab.down();
}
