//! Hand-built plans for the renderer tests: a lab cluster's conversion, and the odd cases.

// Each test binary uses a different subset of these builders.
#![allow(dead_code)]

use std::collections::BTreeMap;

use hactl::observed::{KeyType, San};
use hactl::plan::{
    Action, Handler, HandlerAction, PLAN_FORMAT_VERSION, Plan, Problem, ResourceChange,
    ResourceValue, Severity, Summary,
};
use sha2::{Digest, Sha256};

pub const ENDPOINT: &str = "https://k8s-api.lab.internal:6443";

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Deterministic base64-looking text, like the certificate data in a kubeconfig.
fn base64ish(seed: u64, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    // base64 of "-----BEGIN CERTIFICATE-----\nMI", as real ones start.
    let mut out = String::from("LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1J");
    let mut state = seed;
    while out.len() < len {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        out.push(ALPHABET[(state >> 58) as usize] as char);
    }
    out.push_str("Cg==");
    out
}

/// A kubeadm-style admin.conf pointing at `server`.
pub fn admin_conf(server: &str) -> String {
    format!(
        "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: {ca}
    server: {server}
  name: lab
contexts:
- context:
    cluster: lab
    user: kubernetes-admin
  name: kubernetes-admin@lab
current-context: kubernetes-admin@lab
kind: Config
preferences: {{}}
users:
- name: kubernetes-admin
  user:
    client-certificate-data: {cert}
    client-key-data: REDACTED
",
        ca = base64ish(1, 1_472),
        cert = base64ish(2, 1_140),
    )
}

/// A kubeadm-style kubelet.conf pointing at `server`.
pub fn kubelet_conf(server: &str) -> String {
    format!(
        "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: {ca}
    server: {server}
  name: lab
contexts:
- context:
    cluster: lab
    user: system:node:cp1
  name: system:node:cp1@lab
current-context: system:node:cp1@lab
kind: Config
preferences: {{}}
users:
- name: system:node:cp1
  user:
    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem
    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem
",
        ca = base64ish(1, 1_472),
    )
}

pub fn kube_proxy_kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt
    server: {server}
  name: default
contexts:
- context:
    cluster: default
    namespace: default
    user: default
  name: default
current-context: default
users:
- name: default
  user:
    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token
"
    )
}

const KUBE_PROXY_CONFIG: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1
bindAddress: 0.0.0.0
clientConnection:
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
clusterCIDR: 10.244.0.0/16
kind: KubeProxyConfiguration
mode: iptables
";

fn kube_proxy_data(server: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("config.conf".to_string(), KUBE_PROXY_CONFIG.to_string()),
        ("kubeconfig.conf".to_string(), kube_proxy_kubeconfig(server)),
    ])
}

fn sans(names: &[&str]) -> Vec<San> {
    names
        .iter()
        .map(|n| n.parse().expect("fixture SAN"))
        .collect()
}

const KUBEADM_SANS: &[&str] = &[
    "DNS:cp1",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
    "IP:10.96.0.1",
    "IP:127.0.0.11",
];

fn with_lb_sans() -> Vec<San> {
    let mut all = sans(KUBEADM_SANS);
    all.extend(sans(&["DNS:k8s-api.lab.internal", "IP:127.0.0.100"]));
    all
}

pub fn join_command() -> String {
    format!(
        "kubeadm join k8s-api.lab.internal:6443 --token <bootstrap-token> \
         --discovery-token-ca-cert-hash sha256:{} --control-plane \
         --certificate-key <certificate-key> --apiserver-advertise-address 127.0.0.12",
        sha256("lab cluster CA")
    )
}

/// A resource change with the boilerplate filled in.
pub fn change(
    address: &str,
    node: Option<&str>,
    actions: &[Action],
    reason: &str,
    before: Option<ResourceValue>,
    after: Option<ResourceValue>,
) -> ResourceChange {
    ResourceChange {
        address: address.to_string(),
        node: node.map(str::to_string),
        actions: actions.to_vec(),
        reason: reason.to_string(),
        before,
        after,
        handlers: Vec::new(),
        depends_on: Vec::new(),
        fingerprint: format!("sha256:{}", sha256(address)),
        operation: None,
    }
}

fn endpoint_check() -> ResourceChange {
    let value = ResourceValue::Endpoint {
        host: "k8s-api.lab.internal".to_string(),
        port: 6443,
        addresses: vec!["127.0.0.100".to_string()],
    };
    change(
        "endpoint",
        None,
        &[Action::Read],
        "the load balancer must accept TCP on every address and serve the cluster CA's certificate for its name",
        Some(value.clone()),
        Some(value),
    )
}

fn certificate(sans: Vec<San>, key_type: KeyType, not_after: Option<&str>) -> ResourceValue {
    ResourceValue::Certificate {
        path: "/etc/kubernetes/pki/apiserver.crt".to_string(),
        subject: "CN=kube-apiserver".to_string(),
        sans,
        key_type,
        not_after: not_after.map(str::to_string),
    }
}

fn file(path: &str, content: String) -> ResourceValue {
    let server = content
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .map(str::to_string);
    ResourceValue::File {
        path: path.to_string(),
        server,
        content,
    }
}

fn kube_proxy_configmap(server: &str, resource_version: &str) -> ResourceValue {
    ResourceValue::ConfigMap {
        namespace: "kube-system".to_string(),
        name: "kube-proxy".to_string(),
        resource_version: Some(resource_version.to_string()),
        data: kube_proxy_data(server),
    }
}

fn handler(
    id: &str,
    action: HandlerAction,
    description: &str,
    verify: &str,
    trigger: &str,
) -> Handler {
    Handler {
        id: id.to_string(),
        node: id.split('.').nth(1).map(str::to_string),
        action,
        description: description.to_string(),
        verify: verify.to_string(),
        check: None,
        triggered_by: vec![trigger.to_string()],
        runs_after: trigger.to_string(),
    }
}

fn finish(
    resource_changes: Vec<ResourceChange>,
    handlers: Vec<Handler>,
    problems: Vec<Problem>,
    summary: Summary,
) -> Plan {
    let observed_fingerprint = format!(
        "sha256:{}",
        sha256(
            &resource_changes
                .iter()
                .map(|r| r.fingerprint.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        )
    );
    Plan {
        format_version: PLAN_FORMAT_VERSION.to_string(),
        cluster: "lab".to_string(),
        endpoint: ENDPOINT.to_string(),
        kubernetes_version: Some("v1.31.2".to_string()),
        container_runtime: Some("containerd".to_string()),
        resource_changes,
        handlers,
        problems,
        summary,
        observed_fingerprint,
        desired_state: None,
    }
}

/// The first plan of a conversion: the lab cluster with cp1 alone, cp2 to join.
pub fn conversion() -> Plan {
    let local = "https://127.0.0.11:6443";

    let mut cert = change(
        "apiserver_cert.cp1",
        Some("cp1"),
        &[Action::Update],
        "the serving certificate lacks the load balancer's name and address",
        Some(certificate(
            sans(KUBEADM_SANS),
            KeyType::Rsa2048,
            Some("2027-03-14T09:26:53Z"),
        )),
        Some(certificate(with_lb_sans(), KeyType::Rsa2048, None)),
    );
    cert.depends_on = vec!["endpoint".to_string()];
    cert.handlers = vec!["handler.cp1.kube-apiserver".to_string()];

    let mut admin = change(
        "kubeconfig.cp1.admin",
        Some("cp1"),
        &[Action::Update],
        "admin.conf must reach the API through the load balancer",
        Some(file("/etc/kubernetes/admin.conf", admin_conf(local))),
        Some(file("/etc/kubernetes/admin.conf", admin_conf(ENDPOINT))),
    );
    admin.depends_on = vec!["apiserver_cert.cp1".to_string()];

    let mut kubelet = change(
        "kubeconfig.cp1.kubelet",
        Some("cp1"),
        &[Action::Update],
        "kubelet.conf must reach the API through the load balancer (ControlPlaneKubeletLocalMode is off before 1.33)",
        Some(file("/etc/kubernetes/kubelet.conf", kubelet_conf(local))),
        Some(file("/etc/kubernetes/kubelet.conf", kubelet_conf(ENDPOINT))),
    );
    kubelet.depends_on = vec!["apiserver_cert.cp1".to_string()];
    kubelet.handlers = vec!["handler.cp1.kubelet".to_string()];

    let controller_manager_conf = file(
        "/etc/kubernetes/controller-manager.conf",
        admin_conf(local).replace("kubernetes-admin", "system:kube-controller-manager"),
    );
    let controller_manager = change(
        "kubeconfig.cp1.controller-manager",
        Some("cp1"),
        &[Action::NoOp],
        "controller-manager.conf keeps the local API endpoint since kubeadm 1.19.1",
        Some(controller_manager_conf.clone()),
        Some(controller_manager_conf),
    );

    let mut proxy = change(
        "configmap.kube-system.kube-proxy",
        None,
        &[Action::Update],
        "kube-proxy's kubeconfig must reach the API through the load balancer",
        Some(kube_proxy_configmap(local, "1187")),
        Some(kube_proxy_configmap(ENDPOINT, "1187")),
    );
    proxy.depends_on = vec!["apiserver_cert.cp1".to_string()];
    proxy.handlers = vec!["handler.cp1.kube-proxy".to_string()];

    let mut join = change(
        "control_plane.cp2",
        Some("cp2"),
        &[Action::Create],
        "cp2 is not a control-plane member yet",
        Some(ResourceValue::ControlPlane {
            etcd_member: None,
            node_ready: None,
            control_plane_role: false,
            join_command: None,
        }),
        Some(ResourceValue::ControlPlane {
            etcd_member: Some("voting".to_string()),
            node_ready: Some(true),
            control_plane_role: true,
            join_command: Some(join_command()),
        }),
    );
    join.depends_on = vec![
        "apiserver_cert.cp1".to_string(),
        "configmap.kube-system.kube-proxy".to_string(),
        "endpoint".to_string(),
    ];

    let handlers = vec![
        handler(
            "handler.cp1.kube-apiserver",
            HandlerAction::ReloadServingCertificate {
                runtime: "containerd".to_string(),
            },
            "wait for kube-apiserver on cp1 to serve the new certificate (restart its static pod after 60s)",
            "a TLS handshake with 127.0.0.11:6443 presents DNS:k8s-api.lab.internal",
            "apiserver_cert.cp1",
        ),
        handler(
            "handler.cp1.kubelet",
            HandlerAction::RestartKubelet,
            "restart kubelet on cp1 (systemctl restart kubelet)",
            "Node cp1 is Ready again within 120s",
            "kubeconfig.cp1.kubelet",
        ),
        handler(
            "handler.cp1.kube-proxy",
            HandlerAction::RestartKubeProxy,
            "restart kube-proxy on cp1 (delete its Pod; the DaemonSet recreates it)",
            "the new kube-proxy Pod on cp1 is Running and Ready",
            "configmap.kube-system.kube-proxy",
        ),
    ];

    let problems = vec![Problem {
        severity: Severity::Warning,
        subject: "control_plane.cp2".to_string(),
        message: "cp2 becomes the second voting etcd member: until it has started, etcd needs both members for quorum".to_string(),
        help: "keep cp2 reachable during apply; hactl snapshots etcd first and removes the member again if the join fails".to_string(),
    }];

    finish(
        vec![
            endpoint_check(),
            cert,
            admin,
            kubelet,
            controller_manager,
            proxy,
            join,
        ],
        handlers,
        problems,
        Summary {
            add: 1,
            change: 4,
            destroy: 0,
            unknown: 0,
        },
    )
}

/// The plan after a successful conversion: everything already as desired.
pub fn no_changes() -> Plan {
    let conf = file("/etc/kubernetes/admin.conf", admin_conf(ENDPOINT));
    let proxy = kube_proxy_configmap(ENDPOINT, "2044");
    finish(
        vec![
            endpoint_check(),
            change(
                "kubeconfig.cp1.admin",
                Some("cp1"),
                &[Action::NoOp],
                "admin.conf already points at the load balancer",
                Some(conf.clone()),
                Some(conf),
            ),
            change(
                "configmap.kube-system.kube-proxy",
                None,
                &[Action::NoOp],
                "kube-proxy's kubeconfig already points at the load balancer",
                Some(proxy.clone()),
                Some(proxy),
            ),
        ],
        Vec::new(),
        Vec::new(),
        Summary::default(),
    )
}

/// cp3 could not be reached: its resources are undecided and the plan has an error.
pub fn unreachable_node() -> Plan {
    let local = "https://127.0.0.11:6443";
    let mut admin = change(
        "kubeconfig.cp1.admin",
        Some("cp1"),
        &[Action::Update],
        "admin.conf must reach the API through the load balancer",
        Some(file("/etc/kubernetes/admin.conf", admin_conf(local))),
        Some(file("/etc/kubernetes/admin.conf", admin_conf(ENDPOINT))),
    );
    admin.depends_on = vec!["endpoint".to_string()];
    finish(
        vec![
            endpoint_check(),
            admin,
            change(
                "control_plane.cp3",
                Some("cp3"),
                &[Action::Unknown],
                "cp3 could not be observed: ssh: connect to host 127.0.0.13 port 22: Connection refused",
                None,
                None,
            ),
        ],
        Vec::new(),
        vec![Problem {
            severity: Severity::Error,
            subject: "cp3".to_string(),
            message: "cannot log in over SSH: connect to host 127.0.0.13 port 22: Connection refused".to_string(),
            help: "check that sshd runs on 127.0.0.13 and that hactl's key is authorized, then run `hactl plan` again".to_string(),
        }],
        Summary {
            add: 0,
            change: 1,
            destroy: 0,
            unknown: 1,
        },
    )
}

/// The key type changes: the certificate cannot be reissued in place, it is replaced.
pub fn replace() -> Plan {
    let mut cert = change(
        "apiserver_cert.cp1",
        Some("cp1"),
        &[Action::Delete, Action::Create],
        "the key type changes from RSA-2048 to ECDSA-P256, so the key pair is regenerated",
        Some(certificate(
            with_lb_sans(),
            KeyType::Rsa2048,
            Some("2027-03-14T09:26:53Z"),
        )),
        Some(certificate(with_lb_sans(), KeyType::EcdsaP256, None)),
    );
    cert.handlers = vec!["handler.cp1.kube-apiserver".to_string()];
    finish(
        vec![endpoint_check(), cert],
        vec![handler(
            "handler.cp1.kube-apiserver",
            HandlerAction::ReloadServingCertificate {
                runtime: "containerd".to_string(),
            },
            "wait for kube-apiserver on cp1 to serve the new certificate (restart its static pod after 60s)",
            "a TLS handshake with 127.0.0.11:6443 presents an ECDSA-P256 key",
            "apiserver_cert.cp1",
        )],
        Vec::new(),
        Summary {
            add: 1,
            change: 0,
            destroy: 1,
            unknown: 0,
        },
    )
}

/// The big ConfigMap's text before and after: ~200 KB, every tenth line changed.
pub fn big_texts() -> (String, String) {
    let line = |i: usize, v: &str| format!("  entry-{i:05}: {v} {}\n", base64ish(i as u64, 60));
    let before: String = (0..2_500).map(|i| line(i, "old")).collect();
    let after: String = (0..2_500)
        .map(|i| line(i, if i % 10 == 0 { "new" } else { "old" }))
        .collect();
    (before, after)
}

/// A plan whose ConfigMap diff is far bigger than one pull-request comment.
pub fn big_configmap() -> Plan {
    let (before, after) = big_texts();
    let configmap = |text: String| ResourceValue::ConfigMap {
        namespace: "kube-system".to_string(),
        name: "dashboards".to_string(),
        resource_version: Some("77".to_string()),
        data: BTreeMap::from([("dashboards.yaml".to_string(), text)]),
    };
    let mut plan = conversion();
    plan.resource_changes.insert(
        3,
        change(
            "configmap.kube-system.dashboards",
            None,
            &[Action::Update],
            "every tenth entry changes",
            Some(configmap(before)),
            Some(configmap(after)),
        ),
    );
    plan.summary.change += 1;
    plan
}
