//! Static pod manifests as kubeadm's `controlplane` and `etcd` phases write them (Go's YAML:
//! sorted keys, `creationTimestamp: null`, `status: {}`), with each version's flags.

use std::fmt::Write;
use std::net::IpAddr;

use super::{API_PORT, CLUSTER_NAME, Facts, SERVICE_SUBNET};
use crate::lab::LabNode;

/// One etcd member of `--initial-cluster`: `name=peer_url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdMember {
    pub name: String,
    pub peer_url: String,
}

impl EtcdMember {
    pub fn of(node: &LabNode) -> Self {
        EtcdMember {
            name: node.name.clone(),
            peer_url: format!("https://{}:2380", host(node.address)),
        }
    }
}

fn host(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

struct Probe {
    failure_threshold: u32,
    host: String,
    path: &'static str,
    port: u16,
    scheme: &'static str,
    initial_delay: Option<u32>,
    period: u32,
    timeout: u32,
}

impl Probe {
    fn write(&self, out: &mut String, key: &str) {
        let _ = write!(
            out,
            "    {key}:\n      failureThreshold: {}\n      httpGet:\n        host: {}\n        path: {}\n        port: {}\n        scheme: {}\n",
            self.failure_threshold, self.host, self.path, self.port, self.scheme
        );
        if let Some(d) = self.initial_delay {
            let _ = writeln!(out, "      initialDelaySeconds: {d}");
        }
        let _ = write!(
            out,
            "      periodSeconds: {}\n      timeoutSeconds: {}\n",
            self.period, self.timeout
        );
    }
}

struct Volume {
    name: &'static str,
    path: String,
    kind: &'static str,
    read_only: bool,
}

struct StaticPod {
    component: &'static str,
    annotation: Option<(&'static str, String)>,
    command: Vec<String>,
    image: String,
    liveness: Probe,
    readiness: Option<Probe>,
    startup: Probe,
    cpu: &'static str,
    memory: Option<&'static str>,
    /// In the order of `volumeMounts`; `volumes` are sorted by name.
    volumes: Vec<Volume>,
}

impl StaticPod {
    fn render(&self, facts: &Facts) -> String {
        let mut o = String::from("apiVersion: v1\nkind: Pod\nmetadata:\n");
        if let Some((k, v)) = &self.annotation {
            let _ = write!(o, "  annotations:\n    {k}: {v}\n");
        }
        let _ = write!(
            o,
            "  creationTimestamp: null\n  labels:\n    component: {c}\n    tier: control-plane\n  name: {c}\n  namespace: kube-system\nspec:\n  containers:\n  - command:\n",
            c = self.component
        );
        for c in &self.command {
            let _ = writeln!(o, "    - {c}");
        }
        let _ = write!(
            o,
            "    image: {}\n    imagePullPolicy: IfNotPresent\n",
            self.image
        );
        self.liveness.write(&mut o, "livenessProbe");
        let _ = writeln!(o, "    name: {}", self.component);
        if let Some(r) = &self.readiness {
            r.write(&mut o, "readinessProbe");
        }
        let _ = write!(
            o,
            "    resources:\n      requests:\n        cpu: {}\n",
            self.cpu
        );
        if let Some(m) = self.memory {
            let _ = writeln!(o, "        memory: {m}");
        }
        self.startup.write(&mut o, "startupProbe");
        o.push_str("    volumeMounts:\n");
        for v in &self.volumes {
            let _ = write!(o, "    - mountPath: {}\n      name: {}\n", v.path, v.name);
            if v.read_only {
                o.push_str("      readOnly: true\n");
            }
        }
        o.push_str("  hostNetwork: true\n");
        if facts.at_least(27) {
            o.push_str("  priority: 2000001000\n");
        }
        o.push_str(
            "  priorityClassName: system-node-critical\n  securityContext:\n    seccompProfile:\n      type: RuntimeDefault\n  volumes:\n",
        );
        let mut sorted: Vec<&Volume> = self.volumes.iter().collect();
        sorted.sort_by_key(|v| v.name);
        for v in sorted {
            let _ = write!(
                o,
                "  - hostPath:\n      path: {}\n      type: {}\n    name: {}\n",
                v.path, v.kind, v.name
            );
        }
        o.push_str("status: {}\n");
        o
    }
}

fn ca_volumes() -> Vec<Volume> {
    let v = |name, path: &str, ro| Volume {
        name,
        path: path.to_string(),
        kind: "DirectoryOrCreate",
        read_only: ro,
    };
    vec![
        v("ca-certs", "/etc/ssl/certs", true),
        v("etc-ca-certificates", "/etc/ca-certificates", true),
        v("k8s-certs", "/etc/kubernetes/pki", true),
        v(
            "usr-local-share-ca-certificates",
            "/usr/local/share/ca-certificates",
            true,
        ),
        v(
            "usr-share-ca-certificates",
            "/usr/share/ca-certificates",
            true,
        ),
    ]
}

fn flags(name: &str, pairs: &[(&str, String)]) -> Vec<String> {
    std::iter::once(name.to_string())
        .chain(pairs.iter().map(|(k, v)| format!("--{k}={v}")))
        .collect()
}

fn https_probe(host: &str, path: &'static str, port: u16, threshold: u32) -> Probe {
    Probe {
        failure_threshold: threshold,
        host: host.to_string(),
        path,
        port,
        scheme: "HTTPS",
        initial_delay: Some(10),
        period: 10,
        timeout: 15,
    }
}

/// `/etc/kubernetes/manifests/etcd.yaml`. A joining member lists the members before it and
/// itself, with `--initial-cluster-state=existing`.
pub fn etcd_manifest(
    facts: &Facts,
    node: &LabNode,
    members: &[EtcdMember],
    joining: bool,
) -> String {
    let a = host(node.address);
    let initial = members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url))
        .collect::<Vec<_>>()
        .join(",");
    let s = |x: &str| x.to_string();
    let mut pairs: Vec<(&str, String)> = vec![
        ("advertise-client-urls", format!("https://{a}:2379")),
        ("cert-file", s("/etc/kubernetes/pki/etcd/server.crt")),
        ("client-cert-auth", s("true")),
        ("data-dir", s("/var/lib/etcd")),
    ];
    if facts.at_least(26) {
        pairs.push(("experimental-initial-corrupt-check", s("true")));
        pairs.push(("experimental-watch-progress-notify-interval", s("5s")));
    }
    pairs.push(("initial-advertise-peer-urls", format!("https://{a}:2380")));
    pairs.push(("initial-cluster", initial));
    if joining {
        pairs.push(("initial-cluster-state", s("existing")));
    }
    pairs.extend([
        ("key-file", s("/etc/kubernetes/pki/etcd/server.key")),
        (
            "listen-client-urls",
            format!("https://127.0.0.1:2379,https://{a}:2379"),
        ),
        ("listen-metrics-urls", s("http://127.0.0.1:2381")),
        ("listen-peer-urls", format!("https://{a}:2380")),
        ("name", node.name.clone()),
        ("peer-cert-file", s("/etc/kubernetes/pki/etcd/peer.crt")),
        ("peer-client-cert-auth", s("true")),
        ("peer-key-file", s("/etc/kubernetes/pki/etcd/peer.key")),
        ("peer-trusted-ca-file", s("/etc/kubernetes/pki/etcd/ca.crt")),
        ("snapshot-count", s("10000")),
        ("trusted-ca-file", s("/etc/kubernetes/pki/etcd/ca.crt")),
    ]);
    // etcd's /livez and /readyz (3.5.13+ images) replaced the /health queries in 1.28.
    let (live_path, start_path) = if facts.at_least(28) {
        ("/livez", "/readyz")
    } else {
        (
            "/health?exclude=NOSPACE&serializable=true",
            "/health?serializable=false",
        )
    };
    let http = |path, threshold, delay, period| Probe {
        failure_threshold: threshold,
        host: "127.0.0.1".into(),
        path,
        port: 2381,
        scheme: "HTTP",
        initial_delay: delay,
        period,
        timeout: 15,
    };
    StaticPod {
        component: "etcd",
        annotation: Some((
            "kubeadm.kubernetes.io/etcd.advertise-client-urls",
            format!("https://{a}:2379"),
        )),
        command: flags("etcd", &pairs),
        image: facts.etcd_image(),
        liveness: http(live_path, 8, Some(10), 10),
        readiness: facts.at_least(28).then(|| http("/readyz", 3, None, 1)),
        startup: http(start_path, 24, Some(10), 10),
        cpu: "100m",
        memory: Some("100Mi"),
        volumes: vec![
            Volume {
                name: "etcd-data",
                path: "/var/lib/etcd".into(),
                kind: "DirectoryOrCreate",
                read_only: false,
            },
            Volume {
                name: "etcd-certs",
                path: "/etc/kubernetes/pki/etcd".into(),
                kind: "DirectoryOrCreate",
                read_only: false,
            },
        ],
    }
    .render(facts)
}

/// kube-apiserver, kube-controller-manager and kube-scheduler, by component name.
pub fn control_plane(facts: &Facts, node: &LabNode) -> Vec<(&'static str, String)> {
    vec![
        ("kube-apiserver", apiserver(facts, node)),
        ("kube-controller-manager", controller_manager(facts)),
        ("kube-scheduler", scheduler(facts)),
    ]
}

fn apiserver(facts: &Facts, node: &LabNode) -> String {
    let addr = node.address.to_string();
    let s = |x: &str| x.to_string();
    let pairs: Vec<(&str, String)> = vec![
        ("advertise-address", addr.clone()),
        ("allow-privileged", s("true")),
        ("authorization-mode", s("Node,RBAC")),
        ("client-ca-file", s("/etc/kubernetes/pki/ca.crt")),
        ("enable-admission-plugins", s("NodeRestriction")),
        ("enable-bootstrap-token-auth", s("true")),
        ("etcd-cafile", s("/etc/kubernetes/pki/etcd/ca.crt")),
        (
            "etcd-certfile",
            s("/etc/kubernetes/pki/apiserver-etcd-client.crt"),
        ),
        (
            "etcd-keyfile",
            s("/etc/kubernetes/pki/apiserver-etcd-client.key"),
        ),
        ("etcd-servers", s("https://127.0.0.1:2379")),
        (
            "kubelet-client-certificate",
            s("/etc/kubernetes/pki/apiserver-kubelet-client.crt"),
        ),
        (
            "kubelet-client-key",
            s("/etc/kubernetes/pki/apiserver-kubelet-client.key"),
        ),
        (
            "kubelet-preferred-address-types",
            s("InternalIP,ExternalIP,Hostname"),
        ),
        (
            "proxy-client-cert-file",
            s("/etc/kubernetes/pki/front-proxy-client.crt"),
        ),
        (
            "proxy-client-key-file",
            s("/etc/kubernetes/pki/front-proxy-client.key"),
        ),
        ("requestheader-allowed-names", s("front-proxy-client")),
        (
            "requestheader-client-ca-file",
            s("/etc/kubernetes/pki/front-proxy-ca.crt"),
        ),
        ("requestheader-extra-headers-prefix", s("X-Remote-Extra-")),
        ("requestheader-group-headers", s("X-Remote-Group")),
        ("requestheader-username-headers", s("X-Remote-User")),
        ("secure-port", API_PORT.to_string()),
        (
            "service-account-issuer",
            s("https://kubernetes.default.svc.cluster.local"),
        ),
        ("service-account-key-file", s("/etc/kubernetes/pki/sa.pub")),
        (
            "service-account-signing-key-file",
            s("/etc/kubernetes/pki/sa.key"),
        ),
        ("service-cluster-ip-range", s(SERVICE_SUBNET)),
        ("tls-cert-file", s("/etc/kubernetes/pki/apiserver.crt")),
        (
            "tls-private-key-file",
            s("/etc/kubernetes/pki/apiserver.key"),
        ),
    ];
    let h = node.address.to_string();
    StaticPod {
        component: "kube-apiserver",
        annotation: Some((
            "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint",
            format!("{}:{API_PORT}", host(node.address)),
        )),
        command: flags("kube-apiserver", &pairs),
        image: facts.image("kube-apiserver"),
        liveness: https_probe(&h, "/livez", API_PORT, 8),
        readiness: Some(Probe {
            failure_threshold: 3,
            host: h.clone(),
            path: "/readyz",
            port: API_PORT,
            scheme: "HTTPS",
            initial_delay: None,
            period: 1,
            timeout: 15,
        }),
        startup: https_probe(&h, "/livez", API_PORT, 24),
        cpu: "250m",
        memory: None,
        volumes: ca_volumes(),
    }
    .render(facts)
}

fn controller_manager(facts: &Facts) -> String {
    let conf = "/etc/kubernetes/controller-manager.conf";
    let s = |x: &str| x.to_string();
    let pairs: Vec<(&str, String)> = vec![
        ("authentication-kubeconfig", s(conf)),
        ("authorization-kubeconfig", s(conf)),
        ("bind-address", s("127.0.0.1")),
        ("client-ca-file", s("/etc/kubernetes/pki/ca.crt")),
        ("cluster-name", s(CLUSTER_NAME)),
        ("cluster-signing-cert-file", s("/etc/kubernetes/pki/ca.crt")),
        ("cluster-signing-key-file", s("/etc/kubernetes/pki/ca.key")),
        ("controllers", s("*,bootstrapsigner,tokencleaner")),
        ("kubeconfig", s(conf)),
        ("leader-elect", s("true")),
        (
            "requestheader-client-ca-file",
            s("/etc/kubernetes/pki/front-proxy-ca.crt"),
        ),
        ("root-ca-file", s("/etc/kubernetes/pki/ca.crt")),
        (
            "service-account-private-key-file",
            s("/etc/kubernetes/pki/sa.key"),
        ),
        ("use-service-account-credentials", s("true")),
    ];
    let mut volumes = ca_volumes();
    volumes.insert(
        2,
        Volume {
            name: "flexvolume-dir",
            path: "/usr/libexec/kubernetes/kubelet-plugins/volume/exec".into(),
            kind: "DirectoryOrCreate",
            read_only: false,
        },
    );
    volumes.insert(
        4,
        Volume {
            name: "kubeconfig",
            path: conf.into(),
            kind: "FileOrCreate",
            read_only: true,
        },
    );
    StaticPod {
        component: "kube-controller-manager",
        annotation: None,
        command: flags("kube-controller-manager", &pairs),
        image: facts.image("kube-controller-manager"),
        liveness: https_probe("127.0.0.1", "/healthz", 10257, 8),
        readiness: None,
        startup: https_probe("127.0.0.1", "/healthz", 10257, 24),
        cpu: "200m",
        memory: None,
        volumes,
    }
    .render(facts)
}

fn scheduler(facts: &Facts) -> String {
    let conf = "/etc/kubernetes/scheduler.conf";
    let s = |x: &str| x.to_string();
    let pairs: Vec<(&str, String)> = vec![
        ("authentication-kubeconfig", s(conf)),
        ("authorization-kubeconfig", s(conf)),
        ("bind-address", s("127.0.0.1")),
        ("kubeconfig", s(conf)),
        ("leader-elect", s("true")),
    ];
    // 1.32 moved the scheduler's probes to /livez and /readyz.
    let (live, ready) = if facts.at_least(32) {
        ("/livez", Some("/readyz"))
    } else {
        ("/healthz", None)
    };
    StaticPod {
        component: "kube-scheduler",
        annotation: None,
        command: flags("kube-scheduler", &pairs),
        image: facts.image("kube-scheduler"),
        liveness: https_probe("127.0.0.1", live, 10259, 8),
        readiness: ready.map(|path| Probe {
            failure_threshold: 3,
            host: "127.0.0.1".into(),
            path,
            port: 10259,
            scheme: "HTTPS",
            initial_delay: None,
            period: 1,
            timeout: 15,
        }),
        startup: https_probe("127.0.0.1", live, 10259, 24),
        cpu: "100m",
        memory: None,
        volumes: vec![Volume {
            name: "kubeconfig",
            path: conf.into(),
            kind: "FileOrCreate",
            read_only: true,
        }],
    }
    .render(facts)
}
