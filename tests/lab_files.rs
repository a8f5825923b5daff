//! The lab's kubeadm files, checked with the real tools: openssl verifies every chain, SAN
//! set and key format; kubectl parses every kubeconfig; hactl's own readers parse the
//! ClusterConfiguration and kubeconfig servers; the layout is snapshotted per version.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hactl::kubeadm::KubeVersion;
use hactl::lab::files::{self, ClusterFiles, Content, NodeFile};
use hactl::lab::{LabDir, LabEndpoint, LabNode, LabSpec, lab_version, pki};
use hactl::observed::ContainerRuntime;
use hactl::{cluster_config, kubeconfig, spec};

/// Key generation is CPU-bound and the machine has 2 cores: tests generate one at a time, so
/// the timing checks measure `generate` alone.
static CPU: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn generate(spec: &LabSpec) -> ClusterFiles {
    let _one = CPU.lock().unwrap_or_else(|e| e.into_inner());
    files::generate(spec).unwrap()
}

/// `generate` and how long it took, measured while no other test generates.
fn timed_generate(spec: &LabSpec) -> (ClusterFiles, Duration) {
    let _one = CPU.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let cf = files::generate(spec).unwrap();
    (cf, started.elapsed())
}

fn lab_spec(minor: &str, runtime: ContainerRuntime) -> LabSpec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/lab.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let plan = spec::parse("plans/lab.toml", &text).unwrap();
    LabSpec::from_plan(&plan, lab_version(minor).unwrap(), runtime)
}

/// A temporary lab directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let p = std::env::temp_dir().join(format!(
            "hactl-lab-files-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_all(cf: &ClusterFiles, dir: &Path) -> LabDir {
    let lab = LabDir::new(dir);
    for (node, list) in &cf.nodes {
        files::write_node_files(&lab, node, list).unwrap();
    }
    lab
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.stdin(Stdio::null()).output().expect("tool runs");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn file<'a>(cf: &'a ClusterFiles, node: &str, path: &str) -> &'a NodeFile {
    cf.nodes[node]
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("{node}: no {path}"))
}

fn text<'a>(cf: &'a ClusterFiles, node: &str, path: &str) -> &'a str {
    file(cf, node, path).text().unwrap()
}

fn has(cf: &ClusterFiles, node: &str, path: &str) -> bool {
    cf.nodes[node].iter().any(|f| f.path == path)
}

fn verify(ca: &Path, cert: &Path) {
    let (ok, out) = run(Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(ca)
        .arg(cert));
    assert!(ok, "openssl verify {}: {out}", cert.display());
}

fn sans(cert: &Path) -> Vec<String> {
    let (ok, out) = run(Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(cert));
    assert!(ok, "{out}");
    out.lines()
        .skip(1)
        .flat_map(|l| l.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn subject(cert: &Path) -> String {
    let (ok, out) = run(Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
        .arg(cert));
    assert!(ok, "{out}");
    out.trim().trim_start_matches("subject=").to_string()
}

fn object<'a>(cf: &'a ClusterFiles, kind: &str, ns: &str, name: &str) -> &'a serde_json::Value {
    cf.objects
        .iter()
        .find(|o| {
            o["kind"] == kind && o["metadata"]["namespace"] == ns && o["metadata"]["name"] == name
        })
        .unwrap_or_else(|| panic!("no {kind} {ns}/{name}"))
}

fn cm_data<'a>(cf: &'a ClusterFiles, ns: &str, name: &str, key: &str) -> &'a str {
    object(cf, "ConfigMap", ns, name)["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("{ns}/{name} has no {key}"))
}

fn kubectl_parses(path: &Path) {
    let (ok, out) = run(Command::new("kubectl")
        .args(["config", "view", "--raw", "--kubeconfig"])
        .arg(path));
    assert!(ok, "kubectl config view {}: {out}", path.display());
    assert!(out.contains("server: https://"), "{out}");
}

#[test]
fn init_node_pki_verifies_with_openssl_and_has_kubeadms_sans() {
    let spec = lab_spec("1.31", ContainerRuntime::Containerd);
    let (cf, took) = timed_generate(&spec);
    eprintln!("generate: {} nodes in {took:?}", spec.nodes.len());
    assert!(
        took < Duration::from_secs(3),
        "generate for the 5-node lab took {took:?}"
    );
    let dir = TempDir::new("pki");
    let lab = write_all(&cf, &dir.0);
    let p = |node: &str, path: &str| lab.node_path(node, path);
    let pki_path = |name: &str| p("cp1", &format!("/etc/kubernetes/pki/{name}"));

    for (ca, leaves) in [
        (
            "ca.crt",
            &["apiserver.crt", "apiserver-kubelet-client.crt"][..],
        ),
        ("front-proxy-ca.crt", &["front-proxy-client.crt"][..]),
        (
            "etcd/ca.crt",
            &[
                "etcd/server.crt",
                "etcd/peer.crt",
                "etcd/healthcheck-client.crt",
                "apiserver-etcd-client.crt",
            ][..],
        ),
    ] {
        verify(&pki_path(ca), &pki_path(ca));
        for leaf in leaves {
            verify(&pki_path(ca), &pki_path(leaf));
        }
    }
    // The kubelet's client certificate, through the -current link, on the init node and a worker.
    for node in ["cp1", "w1"] {
        verify(
            &pki_path("ca.crt"),
            &p(node, "/var/lib/kubelet/pki/kubelet-client-current.pem"),
        );
        assert_eq!(
            subject(&p(node, "/var/lib/kubelet/pki/kubelet-client-current.pem")),
            format!("CN=system:node:{node},O=system:nodes")
        );
    }
    // A wrong CA must fail: the check can fail.
    let (ok, _) = run(Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(pki_path("etcd/ca.crt"))
        .arg(pki_path("apiserver.crt")));
    assert!(!ok, "apiserver.crt must not verify against the etcd CA");

    assert_eq!(
        sans(&pki_path("apiserver.crt")),
        [
            "DNS:cp1",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
            "IP Address:10.96.0.1",
            "IP Address:127.0.0.11",
        ]
    );
    for etcd in ["etcd/server.crt", "etcd/peer.crt"] {
        assert_eq!(
            sans(&pki_path(etcd)),
            [
                "DNS:cp1",
                "DNS:localhost",
                "IP Address:127.0.0.11",
                "IP Address:127.0.0.1",
                "IP Address:0:0:0:0:0:0:0:1",
            ]
        );
    }
    assert_eq!(subject(&pki_path("apiserver.crt")), "CN=kube-apiserver");
    assert_eq!(subject(&pki_path("ca.crt")), "CN=kubernetes");

    // Key formats, checked by openssl.
    for key in [
        "ca.key",
        "apiserver.key",
        "front-proxy-ca.key",
        "etcd/ca.key",
        "etcd/server.key",
        "sa.key",
    ] {
        let k = text(&cf, "cp1", &format!("/etc/kubernetes/pki/{key}"));
        assert_eq!(pem::parse(k).unwrap().tag(), "RSA PRIVATE KEY", "{key}");
        let (ok, out) = run(Command::new("openssl")
            .args(["rsa", "-check", "-noout", "-in"])
            .arg(pki_path(key)));
        assert!(ok && out.contains("RSA key ok"), "{key}: {out}");
    }
    let client =
        std::fs::read_to_string(p("w1", "/var/lib/kubelet/pki/kubelet-client-current.pem"))
            .unwrap();
    // The kubelet's file holds its certificate and its SEC1 key.
    let tags: Vec<String> = pem::parse_many(&client)
        .unwrap()
        .iter()
        .map(|p| p.tag().to_string())
        .collect();
    assert!(tags.contains(&"EC PRIVATE KEY".to_string()), "{tags:?}");
    let (ok, out) = run(Command::new("openssl")
        .args(["ec", "-check", "-noout", "-in"])
        .arg(p("w1", "/var/lib/kubelet/pki/kubelet-client-current.pem")));
    assert!(ok, "{out}");

    // sa.pub is sa.key's public half.
    let (ok, out) = run(Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(pki_path("sa.key")));
    assert!(ok, "{out}");
    let sa_pub = text(&cf, "cp1", "/etc/kubernetes/pki/sa.pub");
    assert!(sa_pub.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    assert!(
        out.contains(sa_pub.trim()),
        "sa.pub is not sa.key's public key"
    );

    // ca_pin equals openssl's pipeline.
    let pipeline = format!(
        "openssl x509 -pubkey -noout -in '{}' | openssl pkey -pubin -outform der | sha256sum",
        pki_path("ca.crt").display()
    );
    let (ok, out) = run(Command::new("sh").arg("-c").arg(&pipeline));
    assert!(ok, "{out}");
    let hexsum = out.split_whitespace().next().unwrap();
    assert_eq!(
        pki::ca_pin(&cf.pki.ca.cert_pem).unwrap(),
        format!("sha256:{hexsum}")
    );
}

#[test]
fn kubeconfigs_parse_with_kubectl_and_point_where_kubeadm_points() {
    let spec = lab_spec("1.31", ContainerRuntime::Containerd);
    let cf = generate(&spec);
    let dir = TempDir::new("kubeconfig");
    let lab = write_all(&cf, &dir.0);
    let init = "https://127.0.0.11:6443";
    for (node, file, server, cluster) in [
        ("cp1", "admin.conf", init, "kubernetes"),
        ("cp1", "super-admin.conf", init, "kubernetes"),
        ("cp1", "controller-manager.conf", init, "kubernetes"),
        ("cp1", "scheduler.conf", init, "kubernetes"),
        ("cp1", "kubelet.conf", init, "kubernetes"),
        ("w1", "kubelet.conf", init, "default-cluster"),
        ("w2", "kubelet.conf", init, "default-cluster"),
    ] {
        let path = format!("/etc/kubernetes/{file}");
        kubectl_parses(&lab.node_path(node, &path));
        let got = kubeconfig::current_server(text(&cf, node, &path)).unwrap();
        assert_eq!(
            (got.server.as_str(), got.cluster.as_str()),
            (server, cluster),
            "{node} {file}"
        );
        assert_eq!(file_mode(&cf, node, &path), 0o600);
    }
    for node in ["cp1", "w1"] {
        let k = text(&cf, node, "/etc/kubernetes/kubelet.conf");
        assert!(
            k.contains("client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n"),
            "{k}"
        );
        let link = &file(&cf, node, "/var/lib/kubelet/pki/kubelet-client-current.pem").content;
        assert!(
            matches!(link, Content::Symlink(t) if t.starts_with("/var/lib/kubelet/pki/kubelet-client-2")),
            "{node}"
        );
    }
    // The ConfigMaps' kubeconfigs too.
    for (ns, name, key) in [
        ("kube-system", "kube-proxy", "kubeconfig.conf"),
        ("kube-public", "cluster-info", "kubeconfig"),
    ] {
        let t = cm_data(&cf, ns, name, key);
        let path = dir.0.join(format!("{name}.kubeconfig"));
        std::fs::write(&path, t).unwrap();
        kubectl_parses(&path);
        assert_eq!(kubeconfig::current_server(t).unwrap().server, init);
    }
    assert!(
        cm_data(&cf, "kube-system", "kube-proxy", "kubeconfig.conf")
            .contains("tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token")
    );
    let info = &object(&cf, "ConfigMap", "kube-public", "cluster-info")["data"];
    assert!(
        info.as_object()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("jws-"))
    );
    // admin.conf's group moved to kubeadm:cluster-admins in 1.29; super-admin keeps masters.
    let admin = lab.node_path("cp1", "/etc/kubernetes/admin.conf");
    assert_eq!(
        embedded_subject(&admin, &dir.0),
        "CN=kubernetes-admin,O=kubeadm:cluster-admins"
    );
    let sup = lab.node_path("cp1", "/etc/kubernetes/super-admin.conf");
    assert_eq!(
        embedded_subject(&sup, &dir.0),
        "CN=kubernetes-super-admin,O=system:masters"
    );
}

fn file_mode(cf: &ClusterFiles, node: &str, path: &str) -> u32 {
    file(cf, node, path).mode
}

/// The subject of the client certificate embedded in a kubeconfig.
fn embedded_subject(kubeconfig: &Path, scratch: &Path) -> String {
    use base64::Engine;
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let data = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("client-certificate-data: "))
        .unwrap();
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap();
    let out = scratch.join("embedded.crt");
    std::fs::write(&out, pem).unwrap();
    subject(&out)
}

#[test]
fn cluster_configuration_parses_in_both_api_versions_and_converges() {
    for (minor, api) in [
        ("1.23", "kubeadm.k8s.io/v1beta3"),
        ("1.30", "kubeadm.k8s.io/v1beta3"),
        ("1.31", "kubeadm.k8s.io/v1beta4"),
        ("1.33", "kubeadm.k8s.io/v1beta4"),
    ] {
        let runtime = if minor == "1.23" {
            ContainerRuntime::Docker
        } else {
            ContainerRuntime::Containerd
        };
        let spec = lab_spec(minor, runtime);
        let facts = files::Facts::new(&spec).unwrap();
        let text = files::cluster_configuration(&facts);
        let cc = cluster_config::read(&text).unwrap();
        assert_eq!(cc.api_version, api, "{minor}");
        assert_eq!(cc.kubernetes_version, Some(facts.version.to_string()));
        assert_eq!(cc.control_plane_endpoint, None);
        assert_eq!(cc.first_service_ip(), Some("10.96.0.1".parse().unwrap()));
        // hactl's edit of this document works and reads back.
        let edited = cluster_config::converge(
            &text,
            "k8s-api.lab.internal:6443",
            &["k8s-api.lab.internal".into(), "127.0.0.100".into()],
        )
        .unwrap();
        let after = cluster_config::read(&edited).unwrap();
        assert_eq!(
            after.control_plane_endpoint.as_deref(),
            Some("k8s-api.lab.internal:6443")
        );
        assert_eq!(after.cert_sans, ["k8s-api.lab.internal", "127.0.0.100"]);
    }
}

#[test]
fn version_conventions_super_admin_docker_kubelet_config() {
    let cf = generate(&lab_spec("1.28", ContainerRuntime::Containerd));
    assert!(!has(&cf, "cp1", "/etc/kubernetes/super-admin.conf"));
    assert!(
        text(&cf, "cp1", "/etc/kubernetes/manifests/etcd.yaml")
            .contains("registry.k8s.io/etcd:3.5.15-0")
    );
    let env = text(&cf, "w1", "/var/lib/kubelet/kubeadm-flags.env");
    assert!(!env.contains("--network-plugin"), "{env}");
    assert!(
        env.contains("--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock")
    );
    object(&cf, "ConfigMap", "kube-system", "kubelet-config");

    let cf = generate(&lab_spec("1.29", ContainerRuntime::Containerd));
    assert!(has(&cf, "cp1", "/etc/kubernetes/super-admin.conf"));

    let cf = generate(&lab_spec("1.23", ContainerRuntime::Docker));
    assert!(!has(&cf, "cp1", "/etc/kubernetes/super-admin.conf"));
    assert_eq!(
        text(&cf, "w2", "/var/lib/kubelet/kubeadm-flags.env"),
        "KUBELET_KUBEADM_ARGS=\"--network-plugin=cni --pod-infra-container-image=registry.k8s.io/pause:3.6\"\n"
    );
    object(&cf, "ConfigMap", "kube-system", "kubelet-config-1.23");
    assert!(
        text(&cf, "cp1", "/etc/kubernetes/manifests/kube-apiserver.yaml")
            .contains("image: registry.k8s.io/kube-apiserver:v1.23.17\n")
    );

    // dockershim is gone from 1.24.
    assert!(files::generate(&lab_spec("1.24", ContainerRuntime::Docker)).is_err());
}

#[test]
fn every_node_has_hosts_and_bare_nodes_nothing_else() {
    let spec = lab_spec("1.33", ContainerRuntime::Containerd);
    let cf = generate(&spec);
    let names: Vec<&str> = cf.nodes.keys().map(String::as_str).collect();
    assert_eq!(names, ["cp1", "cp2", "cp3", "w1", "w2"]);
    for n in &spec.nodes {
        let hosts = text(&cf, &n.name, "/etc/hosts");
        assert_eq!(
            hosts,
            format!(
                "127.0.0.1\tlocalhost\n{}\t{}\n127.0.0.100\tk8s-api.lab.internal\n",
                n.address, n.name
            )
        );
    }
    for bare in ["cp2", "cp3"] {
        let layout: Vec<(&str, bool)> = cf.nodes[bare]
            .iter()
            .map(|f| (f.path.as_str(), matches!(f.content, Content::Dir)))
            .collect();
        assert_eq!(
            layout,
            [
                ("/etc/hosts", false),
                ("/etc/kubernetes/manifests", true),
                ("/var/lib/kubelet", true)
            ]
        );
    }
    // The token and its Secret agree; Debug never shows the token.
    let (id, secret) = cf.bootstrap_token.split_once('.').unwrap();
    assert_eq!((id.len(), secret.len()), (6, 16));
    let s = object(
        &cf,
        "Secret",
        "kube-system",
        &format!("bootstrap-token-{id}"),
    );
    assert_eq!(s["type"], "bootstrap.kubernetes.io/token");
    use base64::Engine;
    let field = |k: &str| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(s["data"][k].as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(field("token-secret"), secret);
    assert_eq!(field("usage-bootstrap-signing"), "true");
    assert!(!format!("{cf:?}").contains(secret));
    assert!(!format!("{cf:?}").contains("PRIVATE KEY"));
}

#[test]
fn joining_control_plane_node_gets_its_own_sans_and_the_endpoint() {
    let spec = lab_spec("1.31", ContainerRuntime::Containerd);
    let cf = generate(&spec);
    let cp2 = spec.node("cp2").unwrap();
    let list = files::control_plane_node_files(&spec, cp2, &cf.pki).unwrap();
    let dir = TempDir::new("join");
    let lab = LabDir::new(&dir.0);
    files::write_node_files(&lab, "cp2", &list).unwrap();
    let crt = lab.node_path("cp2", "/etc/kubernetes/pki/apiserver.crt");
    verify(&lab.node_path("cp2", "/etc/kubernetes/pki/ca.crt"), &crt);
    let s = sans(&crt);
    for want in [
        "DNS:cp2",
        "DNS:k8s-api.lab.internal",
        "IP Address:127.0.0.12",
        "IP Address:127.0.0.100",
    ] {
        assert!(s.iter().any(|x| x == want), "{want} missing from {s:?}");
    }
    let get = |p: &str| {
        list.iter()
            .find(|f| f.path == p)
            .and_then(NodeFile::text)
            .unwrap()
    };
    // The CA is the cluster's, not a new one.
    assert_eq!(get("/etc/kubernetes/pki/ca.crt"), cf.pki.ca.cert_pem);
    let etcd = get("/etc/kubernetes/manifests/etcd.yaml");
    assert!(
        etcd.contains(
            "- --initial-cluster=cp1=https://127.0.0.11:2380,cp2=https://127.0.0.12:2380\n"
        )
    );
    assert!(etcd.contains("- --initial-cluster-state=existing\n"));
    let kubelet = kubeconfig::current_server(get("/etc/kubernetes/kubelet.conf")).unwrap();
    assert_eq!(kubelet.server, "https://k8s-api.lab.internal:6443");
    assert_eq!(
        kubeconfig::current_server(get("/etc/kubernetes/controller-manager.conf"))
            .unwrap()
            .server,
        "https://127.0.0.12:6443"
    );
    assert!(!list.iter().any(|f| f.path.ends_with("super-admin.conf")));
}

#[test]
fn fifty_workers_generate_quickly() {
    let mut nodes = vec![LabNode {
        name: "cp1".into(),
        address: "127.0.1.1".parse().unwrap(),
        control_plane: true,
    }];
    for i in 0..50u8 {
        nodes.push(LabNode {
            name: format!("w{i}"),
            address: IpAddr::from([127, 0, 2, i + 1]),
            control_plane: false,
        });
    }
    let spec = LabSpec {
        cluster_name: "big".into(),
        endpoint: LabEndpoint {
            host: "k8s-api.big.internal".into(),
            addresses: vec!["127.0.1.100".parse().unwrap()],
            port: 6443,
        },
        nodes,
        version: KubeVersion::new(1, 31, 14),
        runtime: ContainerRuntime::Containerd,
    };
    let (cf, took) = timed_generate(&spec);
    eprintln!("generate: {} nodes in {took:?}", spec.nodes.len());
    assert_eq!(cf.nodes.len(), 51);
    assert!(took < Duration::from_secs(5), "1 + 50 nodes took {took:?}");
    assert!(
        text(&cf, "w49", "/etc/kubernetes/kubelet.conf")
            .contains("server: https://127.0.1.1:6443\n")
    );
}

/// The layout of every node and the objects' texts, with key material, stamps and random
/// names replaced so the snapshot only changes when the layout does.
fn layout(cf: &ClusterFiles) -> String {
    let mut out = String::new();
    let stamp = regex_lite_replace;
    for (node, list) in &cf.nodes {
        out.push_str(&format!("## node {node}\n"));
        let mut sorted: Vec<&NodeFile> = list.iter().collect();
        sorted.sort_by(|a, b| a.path.cmp(&b.path));
        for f in sorted {
            let path = stamp(&f.path);
            match &f.content {
                Content::Dir => out.push_str(&format!("{path} {:o} dir\n", f.mode)),
                Content::Symlink(t) => {
                    out.push_str(&format!("{path} {:o} -> {}\n", f.mode, stamp(t)))
                }
                Content::Data(_) => {
                    let t = f.text().unwrap();
                    if t.starts_with("-----BEGIN") {
                        let blocks: Vec<&str> = t
                            .lines()
                            .filter_map(|l| l.strip_prefix("-----BEGIN "))
                            .collect();
                        out.push_str(&format!("{path} {:o} PEM {}\n", f.mode, blocks.join(" + ")));
                    } else {
                        out.push_str(&format!("{path} {:o}\n", f.mode));
                        if node == "cp1" || node == "w1" {
                            out.push_str(&indent(&redact(t)));
                        }
                    }
                }
            }
        }
    }
    out.push_str("## objects\n");
    let mut objects = cf.objects.clone();
    for o in &mut objects {
        if o["kind"] == "Secret" {
            o["metadata"]["name"] = "bootstrap-token-<id>".into();
            for v in o["data"].as_object_mut().unwrap().values_mut() {
                *v = "<base64>".into();
            }
        }
        if o["kind"] == "ConfigMap" {
            for v in o["data"].as_object_mut().unwrap().values_mut() {
                *v = redact(v.as_str().unwrap()).into();
            }
        }
    }
    for o in &objects {
        let kind = o["kind"].as_str().unwrap();
        let name = o["metadata"]["name"].as_str().unwrap();
        out.push_str(&format!("### {kind} {name}\n"));
        if kind == "ConfigMap" {
            for (k, v) in o["data"].as_object().unwrap() {
                out.push_str(&format!("{k}:\n{}", indent(v.as_str().unwrap())));
            }
        } else {
            out.push_str(&indent(&serde_json::to_string_pretty(o).unwrap()));
            out.push('\n');
        }
    }
    out
}

/// `kubelet-client-2025-01-02-03-04-05.pem` → `kubelet-client-<stamp>.pem`.
fn regex_lite_replace(s: &str) -> String {
    match s.find("kubelet-client-2") {
        Some(i) => {
            let start = i + "kubelet-client-".len();
            let end = start + "2006-01-02-15-04-05".len();
            format!("{}<stamp>{}", &s[..start], &s[end.min(s.len())..])
        }
        None => s.to_string(),
    }
}

fn redact(t: &str) -> String {
    t.lines()
        .map(|l| {
            let cut = ["-data: ", "certificate-authority-data: "]
                .iter()
                .find_map(|m| l.find(m).map(|i| i + m.len()));
            match cut {
                Some(i) => format!("{}<base64>\n", &l[..i]),
                None => format!("{}\n", regex_lite_replace(l)),
            }
        })
        .collect()
}

fn indent(t: &str) -> String {
    t.lines().map(|l| format!("    {l}\n")).collect()
}

#[test]
fn layout_snapshots() {
    for (minor, runtime, name) in [
        (
            "1.23",
            ContainerRuntime::Docker,
            "lab_files_layout-1.23-docker",
        ),
        (
            "1.31",
            ContainerRuntime::Containerd,
            "lab_files_layout-1.31",
        ),
        (
            "1.33",
            ContainerRuntime::Containerd,
            "lab_files_layout-1.33",
        ),
    ] {
        let cf = generate(&lab_spec(minor, runtime));
        let text = layout(&cf);
        // The redaction must leave no key material behind.
        assert!(
            !text.contains("LS0t"),
            "{name}: base64 PEM left in the snapshot"
        );
        let by_node: BTreeMap<_, _> = cf.nodes.iter().map(|(k, v)| (k, v.len())).collect();
        assert!(by_node.values().all(|n| *n > 0));
        insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => false}, {
            insta::assert_snapshot!(name, text);
        });
    }
}
