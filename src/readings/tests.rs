//! The parsers against the observed-state fixtures (what kubeadm writes) and the shapes of
//! etcdctl's and the shell's output.

use std::collections::BTreeMap;

use base64::Engine;

use super::node::{self, SectionStatus};
use super::*;
use crate::observed::{
    ContainerRuntime, EtcdMember, KeyType, ObservedState, Probe, REDACTED, San, SshFailure,
    SshProbe,
};

const FIXTURES: &[(&str, &str)] = &[
    (
        "fresh-1.31",
        include_str!("../../tests/fixtures/observed/fresh-1.31.json"),
    ),
    (
        "fresh-1.23-docker",
        include_str!("../../tests/fixtures/observed/fresh-1.23-docker.json"),
    ),
    (
        "converted-1.31",
        include_str!("../../tests/fixtures/observed/converted-1.31.json"),
    ),
    (
        "edited-admin-1.31",
        include_str!("../../tests/fixtures/observed/edited-admin-1.31.json"),
    ),
    (
        "stuck-learner-1.31",
        include_str!("../../tests/fixtures/observed/stuck-learner-1.31.json"),
    ),
];

fn fixture(name: &str) -> ObservedState {
    let text = FIXTURES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .unwrap();
    serde_json::from_str(text).unwrap()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn unb64(s: &str) -> String {
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .unwrap(),
    )
    .unwrap()
}

/// The value of `key: VALUE` on the kubeconfig's first line with that key.
fn kubeconfig_value(text: &str, key: &str) -> String {
    let prefix = format!("{key}: ");
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&prefix))
        .unwrap()
        .to_string()
}

const FAKE_KEY: &str = "LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQpNSUlFb3dJQkFBS0NBUUVBdGVzdAo=";
const FAKE_TOKEN: &str = "abcdef.0123456789abcdef";

#[test]
fn redaction_gives_back_every_fixture_kubeconfig_byte_for_byte() {
    let mut seen = 0;
    for (name, _) in FIXTURES {
        for (node, obs) in fixture(name).nodes {
            for (file, redacted) in obs.kubeconfigs {
                // What the node holds: the fixture with its secrets put back.
                let real = redacted
                    .replace(
                        &format!("client-key-data: {REDACTED}"),
                        &format!("client-key-data: {FAKE_KEY}"),
                    )
                    .replace(
                        &format!("token: {REDACTED}"),
                        &format!("token: {FAKE_TOKEN}"),
                    );
                let out = redact_kubeconfig(&real);
                assert_eq!(out, redacted, "{name} {node} {file}");
                assert!(!out.contains(FAKE_KEY) && !out.contains(FAKE_TOKEN));
                seen += 1;
            }
        }
    }
    assert!(seen > 20, "only {seen} kubeconfigs in the fixtures");
    // The edited admin.conf has both kinds of secret, comments and an inline comment.
    let edited = &fixture("edited-admin-1.31").nodes["cp1"].kubeconfigs["admin.conf"];
    assert!(edited.contains("token: REDACTED") && edited.contains("# staging API server"));
}

#[test]
fn redaction_keeps_quotes_comments_and_flow_maps_and_never_leaks() {
    let text = "users:\n- name: a\n  user:\n    token: \"s3cr3t-a\" # from vault\n- name: b\n  user: {token: s3cr3t-b, username: bob}\n- name: c\n  user:\n    password: 's3cr3t-c'\n    client-key: /path/not-secret.key\n    token: \"\"\n";
    assert_eq!(
        redact_kubeconfig(text),
        "users:\n- name: a\n  user:\n    token: REDACTED # from vault\n- name: b\n  user: {token: REDACTED, username: bob}\n- name: c\n  user:\n    password: REDACTED\n    client-key: /path/not-secret.key\n    token: \"\"\n"
    );
    // A block scalar cannot be replaced in place: the line fallback drops its body.
    let block = "users:\n- name: a\n  user:\n    token: |\n      s3cr3t-block\n    username: x\n";
    let out = redact_kubeconfig(block);
    assert!(!out.contains("s3cr3t"), "{out}");
    assert!(
        out.contains("    token: REDACTED\n    username: x\n"),
        "{out}"
    );
    // Not YAML at all: still nothing secret.
    let broken = "users: [\n  client-key-data: s3cr3t-broken\n  \"token\": s3cr3t-q\n";
    let out = redact_kubeconfig(broken);
    assert!(!out.contains("s3cr3t"), "{out}");
}

#[test]
fn ca_pins_match_the_fixtures() {
    for (name, _) in FIXTURES {
        for (node, obs) in fixture(name).nodes {
            // admin.conf may list another cluster first (the edited fixture); kubelet.conf not.
            let kubeconfig = obs
                .kubeconfigs
                .get("kubelet.conf")
                .or(obs.kubeconfigs.values().next());
            let (Some(pin), Some(kubeconfig)) = (&obs.ca_pin, kubeconfig) else {
                continue;
            };
            let ca_pem = unb64(&kubeconfig_value(kubeconfig, "certificate-authority-data"));
            assert_eq!(&ca_pin(&ca_pem).unwrap(), pin, "{name} {node}");
        }
    }
    assert!(ca_pin("not a certificate").is_err());
}

#[test]
fn a_kubeadm_leaf_certificate_reads_as_the_fixtures_say() {
    let obs = fixture("fresh-1.31");
    let cp1 = &obs.nodes["cp1"];
    let admin = &cp1.kubeconfigs["admin.conf"];
    let ca_pem = unb64(&kubeconfig_value(admin, "certificate-authority-data"));
    let cert_pem = unb64(&kubeconfig_value(admin, "client-certificate-data"));
    let cert = certificate(&cert_pem, Some(&ca_pem)).unwrap();
    let apiserver = cp1.apiserver_cert.as_ref().unwrap();
    assert_eq!(cert.subject, "CN=kubernetes-admin,O=kubeadm:cluster-admins");
    assert_eq!(cert.issuer, apiserver.issuer);
    assert_eq!(cert.key_type, KeyType::Rsa2048);
    // kubeadm signs every leaf with the CA's NotBefore.
    assert_eq!(cert.not_before, apiserver.not_before);
    // Issued at init with the API server's certificate: a year after, the same day.
    assert!(cert.not_after.ends_with('Z'));
    assert_eq!(cert.not_after[..10], apiserver.not_after[..10]);
    assert!(cert.sans.is_empty());
    assert!(cert.issuer_matches_ca);
    // The CA's own subject.
    assert_eq!(certificate(&ca_pem, None).unwrap().subject, "CN=kubernetes");
    assert!(!certificate(&cert_pem, None).unwrap().issuer_matches_ca);
    // The staging cluster's CA has the same subject (CN=kubernetes) but another key.
    let edited = &fixture("edited-admin-1.31").nodes["cp1"].kubeconfigs["admin.conf"];
    let staging_ca = unb64(&kubeconfig_value(edited, "certificate-authority-data"));
    assert_ne!(staging_ca, ca_pem);
    let other = certificate(&cert_pem, Some(&staging_ca)).unwrap();
    assert_eq!(other.issuer, "CN=kubernetes");
    assert!(!other.issuer_matches_ca);
}

#[test]
fn sans_keep_the_certificate_order_and_key_types_are_named() {
    use crate::pki;
    let expected = fixture("converted-1.31").nodes["cp2"]
        .apiserver_cert
        .clone()
        .unwrap()
        .sans;
    // Any time: only the SANs' order is looked at.
    let now = time::OffsetDateTime::from_unix_timestamp(1_796_000_000).unwrap();
    let ca = pki::new_ca("kubernetes", now).unwrap();
    let mut spec = pki::CertSpec::new("kube-apiserver", pki::Usage::Server);
    for san in &expected {
        match san {
            San::Dns(d) => spec.dns_names.push(d.clone()),
            San::Ip(ip) => spec.ip_addresses.push(*ip),
        }
    }
    spec.key_type = pki::KeyType::EcdsaP256;
    let issued = pki::issue(&ca, &spec, now).unwrap();
    let cert = certificate(&issued.cert_pem, Some(&ca.cert_pem)).unwrap();
    // DNS names first in the fixture, as kubeadm sorts them; rcgen writes them in spec order.
    assert_eq!(cert.sans, expected);
    assert!(cert.sans.iter().any(|s| matches!(s, San::Ip(_))));
    assert_eq!(cert.key_type, KeyType::EcdsaP256);
    assert_eq!(cert.subject, "CN=kube-apiserver");
    assert!(cert.issuer_matches_ca);
    assert_eq!(
        ca_pin(&ca.cert_pem).unwrap(),
        pki::ca_pin(&ca.cert_pem).unwrap()
    );
}

#[test]
fn versions() {
    assert_eq!(kubeadm_version("v1.31.2\n").as_deref(), Some("v1.31.2"));
    assert_eq!(
        kubelet_version("Kubernetes v1.23.17\n").as_deref(),
        Some("v1.23.17")
    );
    assert_eq!(kubeadm_version("sh: 1: kubeadm: not found\n"), None);
    assert_eq!(kubelet_version(""), None);
}

fn runtime(
    flags: Option<&str>,
    config: Option<&str>,
    sockets: &[&str],
) -> Option<ContainerRuntime> {
    let sockets: Vec<String> = sockets.iter().map(|s| s.to_string()).collect();
    container_runtime(&RuntimeEvidence {
        kubeadm_flags: flags,
        kubelet_config: config,
        sockets: &sockets,
    })
}

#[test]
fn the_runtime_kubeadm_configured() {
    use ContainerRuntime::*;
    // kubeadm 1.27+ (and the lab's 1.31 containerd).
    let v131 = "KUBELET_KUBEADM_ARGS=\"--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock --pod-infra-container-image=registry.k8s.io/pause:3.10\"\n";
    assert_eq!(
        runtime(Some(v131), Some("containerRuntimeEndpoint: \"\"\n"), &[]),
        Some(Containerd)
    );
    // kubeadm before 1.27, CRI runtime.
    let v126 = "KUBELET_KUBEADM_ARGS=\"--container-runtime=remote --container-runtime-endpoint=unix:///var/run/crio/crio.sock --pod-infra-container-image=registry.k8s.io/pause:3.9\"\n";
    assert_eq!(runtime(Some(v126), None, &[]), Some(CriO));
    // kubeadm 1.23 with docker (dockershim): no endpoint at all (what the lab writes too).
    let v123 = "KUBELET_KUBEADM_ARGS=\"--network-plugin=cni --pod-infra-container-image=registry.k8s.io/pause:3.6\"\n";
    assert_eq!(
        runtime(Some(v123), None, &["/var/run/docker.sock"]),
        Some(Docker)
    );
    assert_eq!(
        runtime(
            Some("KUBELET_KUBEADM_ARGS=\"--container-runtime=docker\""),
            None,
            &[]
        ),
        Some(Docker)
    );
    // cri-dockerd (1.24+).
    let cri_dockerd =
        "KUBELET_KUBEADM_ARGS=\"--container-runtime-endpoint=unix:///var/run/cri-dockerd.sock\"";
    assert_eq!(runtime(Some(cri_dockerd), None, &[]), Some(Docker));
    // The endpoint moved to config.yaml.
    let config = "apiVersion: kubelet.config.k8s.io/v1beta1\ncontainerRuntimeEndpoint: unix:///run/containerd/containerd.sock\nkind: KubeletConfiguration\n";
    assert_eq!(
        runtime(Some("KUBELET_KUBEADM_ARGS=\"\""), Some(config), &[]),
        Some(Containerd)
    );
    // A bare node: the socket kubeadm would find.
    assert_eq!(
        runtime(None, None, &["/run/containerd/containerd.sock"]),
        Some(Containerd)
    );
    assert_eq!(runtime(None, None, &[]), None);
}

const MANIFEST: &str = "apiVersion: v1
kind: Pod
metadata:
  annotations:
    kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint: 127.0.0.11:6443
  creationTimestamp: null
  labels:
    component: kube-apiserver
    tier: control-plane
  name: kube-apiserver
  namespace: kube-system
spec:
  containers:
  - command:
    - kube-apiserver
    - --advertise-address=127.0.0.11
    - --allow-privileged=true
    - --etcd-servers=https://127.0.0.1:2379
    - --secure-port=6443
    image: registry.k8s.io/kube-apiserver:v1.31.2
    name: kube-apiserver
";

#[test]
fn the_apiserver_manifest_endpoint() {
    let expected = fixture("fresh-1.31").nodes["cp1"]
        .apiserver_endpoint
        .clone();
    assert_eq!(apiserver_endpoint(MANIFEST), expected);
    let other_port = MANIFEST.replace("--secure-port=6443", "--secure-port=8443");
    assert_eq!(apiserver_endpoint(&other_port).unwrap().port, 8443);
    let default_port = MANIFEST.replace("    - --secure-port=6443\n", "");
    assert_eq!(apiserver_endpoint(&default_port).unwrap().port, 6443);
    // Only the annotation left: kubeadm's record of the same address.
    let annotated = MANIFEST.replace("    - --advertise-address=127.0.0.11\n", "");
    assert_eq!(
        apiserver_endpoint(&annotated).unwrap().advertise_address,
        "127.0.0.11"
    );
    let bare = annotated.replace(
        "    kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint: 127.0.0.11:6443\n",
        "",
    );
    assert_eq!(apiserver_endpoint(&bare), None);
    assert_eq!(apiserver_endpoint("not: [yaml"), None);
}

/// etcdctl 3.4's `member list -w json` for the fixture's members (ids are uint64 in JSON).
fn member_list_json(obs: &ObservedState) -> String {
    let members: Vec<serde_json::Value> = obs
        .etcd
        .members
        .iter()
        .map(|m| {
            let mut v = serde_json::json!({
                "ID": u64::from_str_radix(&m.id, 16).unwrap(),
                "peerURLs": m.peer_urls,
            });
            if !m.name.is_empty() {
                v["name"] = m.name.clone().into();
            }
            if !m.client_urls.is_empty() {
                v["clientURLs"] = m.client_urls.clone().into();
            }
            if m.is_learner {
                v["isLearner"] = true.into();
            }
            v
        })
        .collect();
    serde_json::json!({
        "header": {"cluster_id": 17691001365317517118u64, "member_id": 610996263261807945u64, "raft_term": 2},
        "members": members,
    })
    .to_string()
}

#[test]
fn etcd_member_list_and_health_as_the_fixtures_hold_them() {
    for name in ["fresh-1.31", "stuck-learner-1.31", "converted-1.31"] {
        let obs = fixture(name);
        let health: Vec<serde_json::Value> = obs
            .etcd
            .members
            .iter()
            .filter(|m| m.started())
            .map(|m| serde_json::json!({"endpoint": m.client_urls[0], "health": true, "took": "8.7ms"}))
            .collect();
        let got = etcd_observation(
            "cp1",
            "https://127.0.0.11:2379",
            (0, &member_list_json(&obs)),
            (0, &serde_json::to_string(&health).unwrap()),
        );
        assert_eq!(got, obs.etcd, "{name}");
    }
    // The real 3.4 binary's id, seen on a lab: hex without padding, as etcdctl's table.
    let one = r#"{"header":{"cluster_id":17691001365317517118,"member_id":610996263261807945,"raft_term":2},"members":[{"ID":610996263261807945,"name":"cp1","peerURLs":["https://127.0.22.11:2380"],"clientURLs":["https://127.0.22.11:2379"]}]}"#;
    assert_eq!(member_list(one).unwrap()[0].id, "87ab1dd3ecfa549");
}

#[test]
fn etcd_members_come_out_in_peer_url_order_whatever_order_etcd_lists_them() {
    // etcd lists members by id, which is random: the same cluster lists a learner before or
    // after cp1 depending on the ids it drew (a lab-made fixture drifted on exactly that).
    let obs = fixture("stuck-learner-1.31");
    let mut reversed = obs.clone();
    reversed.etcd.members.reverse();
    assert_ne!(reversed.etcd.members, obs.etcd.members);
    let peers =
        |ms: Vec<EtcdMember>| -> Vec<String> { ms.into_iter().flat_map(|m| m.peer_urls).collect() };
    let want = vec![
        "https://127.0.0.11:2380".to_string(),
        "https://127.0.0.12:2380".to_string(),
    ];
    assert_eq!(peers(member_list(&member_list_json(&obs)).unwrap()), want);
    assert_eq!(
        peers(member_list(&member_list_json(&reversed)).unwrap()),
        want
    );
}

#[test]
fn an_unhealthy_member_fails_the_cluster_health_with_etcdctls_words() {
    let obs = fixture("converted-1.31");
    let list = member_list_json(&obs);
    let health = "[{\"endpoint\":\"https://127.0.0.11:2379\",\"health\":true,\"took\":\"9ms\"},{\"endpoint\":\"https://127.0.0.12:2379\",\"health\":false,\"took\":\"5.0s\",\"error\":\"failed to commit proposal: context deadline exceeded\"}]\nError: unhealthy cluster\n";
    let got = etcd_observation("cp1", "https://127.0.0.11:2379", (0, &list), (1, health));
    let healthy: BTreeMap<_, _> = got
        .members
        .iter()
        .map(|m| (m.name.as_str(), m.healthy))
        .collect();
    assert_eq!(healthy["cp1"], Some(true));
    assert_eq!(healthy["cp2"], Some(false));
    let reason = got.health.failure().unwrap();
    assert!(
        reason.contains("https://127.0.0.12:2379 is unhealthy: failed to commit proposal: context deadline exceeded"),
        "{reason}"
    );
    assert!(
        reason.contains("Error: unhealthy cluster") && reason.contains("cp1"),
        "{reason}"
    );
    // The text form says the same.
    let text = "https://127.0.0.11:2379 is healthy: successfully committed proposal: took = 9ms\nhttps://127.0.0.12:2379 is unhealthy: failed to commit proposal: context deadline exceeded\nError: unhealthy cluster\n";
    let checks = endpoint_health(text);
    assert_eq!(checks.len(), 2);
    assert!(checks[0].healthy && !checks[1].healthy);
}

#[test]
fn a_failed_member_list_leaves_etcd_unobserved_and_says_why() {
    let out = "{\"level\":\"warn\",\"ts\":\"2026-11-02T09:14:27.000Z\",\"caller\":\"clientv3/retry_interceptor.go:62\",\"msg\":\"retrying of unary invoker failed\",\"target\":\"endpoint://client-1/127.0.0.11:2379\",\"attempt\":0,\"error\":\"rpc error: code = DeadlineExceeded desc = latest balancer error: connection error: desc = \\\"transport: Error while dialing dial tcp 127.0.0.11:2379: connect: connection refused\\\"\"}\nError: context deadline exceeded\n";
    let got = etcd_observation("cp1", "https://127.0.0.11:2379", (1, out), (1, out));
    assert_eq!(got.observed_from, None);
    assert!(got.members.is_empty());
    let reason = got.health.failure().unwrap();
    assert!(
        reason.contains("cp1") && reason.contains("https://127.0.0.11:2379"),
        "{reason}"
    );
    assert!(
        reason.contains("Error: context deadline exceeded"),
        "{reason}"
    );
    assert!(reason.contains("connection refused"), "{reason}");
}

/// The output the node script prints for `sections`.
fn script_output(sections: &[(&str, &str, &str)]) -> String {
    let mut out = String::from("a login banner\n");
    for (name, status, body) in sections {
        out.push_str(&format!("\n@@hactl {name} {status}\n"));
        // Wrapped at 76 columns as GNU base64 does.
        let encoded = b64(body);
        for chunk in encoded.as_bytes().chunks(76) {
            out.push_str(std::str::from_utf8(chunk).unwrap());
            out.push('\n');
        }
    }
    out
}

#[test]
fn sections_split_decode_and_notice_truncation() {
    let long = "x".repeat(300);
    let out = script_output(&[
        ("kubeadm", "exit:0", "v1.31.2\n"),
        ("kubelet", "exit:127", "sh: 1: kubelet: not found"),
        ("admin.conf", "ok", &long),
        ("super-admin.conf", "absent", ""),
        ("end", "exit:0", ""),
    ]);
    let s = sections(&out).unwrap();
    assert_eq!(s["kubeadm"].ok_text().as_deref(), Some("v1.31.2\n"));
    assert_eq!(s["kubelet"].status, SectionStatus::Exit(127));
    assert_eq!(s["kubelet"].ok_text(), None);
    assert_eq!(s["admin.conf"].text(), long);
    assert_eq!(s["super-admin.conf"].status, SectionStatus::Absent);
    let cut = out.split("\n@@hactl end").next().unwrap();
    assert!(matches!(
        sections(cut),
        Err(node::SectionError::Truncated(_))
    ));
    assert!(sections("@@hactl x weird\n@@hactl end exit:0\n").is_err());
}

#[test]
fn a_file_root_could_not_read_fails_the_node_with_the_fix() {
    let out = script_output(&[
        ("user", "exit:0", "ubuntu\n"),
        ("kubeadm", "exit:0", "v1.31.2\n"),
        (
            "admin.conf",
            "unreadable",
            "sh: 1: cannot open /etc/kubernetes/admin.conf: Permission denied",
        ),
        ("ca.crt", "ok", "-----BEGIN CERTIFICATE-----\n"),
        ("end", "exit:0", ""),
    ]);
    let read = node::node_read("cp1", "127.0.0.11", &sections(&out).unwrap());
    let reason = read.observation.ssh.failure().unwrap();
    let reason = reason.as_str();
    assert_eq!(
        reason,
        "cannot read: /etc/kubernetes/admin.conf (Permission denied) as user ubuntu"
    );
    // The plan says the fix, from whether hactl was meant to read as root.
    assert_eq!(read.observation.ssh.kind(), Some(SshFailure::Unreadable));
    // Nothing else is reported for a node that could not be read whole.
    assert_eq!(read.observation.kubeadm_version, None);
    assert!(read.admin_conf.is_none());
    assert_eq!(read.observation.address, "127.0.0.11");
}

#[test]
fn a_node_reading_from_the_fixture_files() {
    let obs = fixture("fresh-1.31");
    let cp1 = &obs.nodes["cp1"];
    let admin = cp1.kubeconfigs["admin.conf"].replace(
        &format!("client-key-data: {REDACTED}"),
        &format!("client-key-data: {FAKE_KEY}"),
    );
    let ca_pem = unb64(&kubeconfig_value(&admin, "certificate-authority-data"));
    let version = cp1.kubeadm_version.clone().unwrap();
    let flags = "KUBELET_KUBEADM_ARGS=\"--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock --pod-infra-container-image=registry.k8s.io/pause:3.10\"\n";
    let out = script_output(&[
        ("user", "exit:0", "root\n"),
        ("kubeadm", "exit:0", &format!("{version}\n")),
        ("kubelet", "exit:0", &format!("Kubernetes {version}\n")),
        ("sockets", "exit:0", ""),
        ("admin.conf", "ok", &admin),
        ("super-admin.conf", "absent", ""),
        ("kubeadm-flags.env", "ok", flags),
        ("ca.crt", "ok", &ca_pem),
        ("kube-apiserver.yaml", "ok", MANIFEST),
        ("apiserver.crt", "ok", "garbage"),
        ("end", "exit:0", ""),
    ]);
    let read = node::node_read("cp1", "127.0.0.11", &sections(&out).unwrap());
    let o = &read.observation;
    assert_eq!(o.ssh, SshProbe::Ok);
    assert_eq!(o.kubeadm_version, cp1.kubeadm_version);
    assert_eq!(o.kubelet_version, cp1.kubelet_version);
    assert_eq!(o.container_runtime, cp1.container_runtime);
    assert_eq!(o.kubeconfigs["admin.conf"], cp1.kubeconfigs["admin.conf"]);
    assert_eq!(o.kubeconfigs.len(), 1);
    assert_eq!(o.ca_pin, cp1.ca_pin);
    assert_eq!(o.apiserver_endpoint, cp1.apiserver_endpoint);
    // An apiserver.crt that does not parse is left out, with a warning naming it.
    assert_eq!(o.apiserver_cert, None);
    assert!(read.warnings[0].contains("cp1: /etc/kubernetes/pki/apiserver.crt"));
    // The raw admin.conf stays in memory, keys included.
    assert!(read.admin_conf.unwrap().contains(FAKE_KEY));
    assert!(!serde_json::to_string(o).unwrap().contains(FAKE_KEY));
}

#[test]
fn reachability_words() {
    let targets: Vec<String> = [
        "127.0.0.11:6443",
        "127.0.0.11:2379",
        "127.0.0.11:2380",
        "[::1]:2379",
        "x;rm -rf /:1",
    ]
    .map(String::from)
    .to_vec();
    let script = node::reachability_script(&targets, 3.0);
    assert!(script.contains("t 3 '::1' 2379 &"), "{script}");
    assert!(!script.contains("rm -rf"));
    let out = script_output(&[
        ("0", "exit:0", ""),
        (
            "1",
            "exit:1",
            "bash: connect: Connection refused\nbash: line 1: /dev/tcp/127.0.0.11/2379: Connection refused\n",
        ),
        ("2", "exit:124", ""),
        ("end", "exit:0", ""),
    ]);
    let got = node::reachability("cp2", &targets, 3.0, &sections(&out).unwrap());
    assert_eq!(got["127.0.0.11:6443"], Probe::Ok);
    assert_eq!(
        got["127.0.0.11:2379"].failure(),
        Some("TCP from cp2 to 127.0.0.11:2379: Connection refused")
    );
    assert!(
        got["127.0.0.11:2380"]
            .failure()
            .unwrap()
            .contains("no answer within 3.0s")
    );
    assert!(
        got["[::1]:2379"]
            .failure()
            .unwrap()
            .contains("printed nothing")
    );
    assert!(
        got["x;rm -rf /:1"]
            .failure()
            .unwrap()
            .contains("not an ADDRESS:PORT")
    );
}

#[test]
fn the_scripts_are_posix_sh() {
    for script in [
        node::node_script(),
        etcd::etcd_script(),
        node::reachability_script(&["127.0.0.1:1".to_string()], 1.0),
    ] {
        // No bashisms in what `sh -c` runs (the TCP test calls bash explicitly).
        assert!(!script.contains(" [[ "), "{script}");
        assert!(!script.contains("function "), "{script}");
        assert!(script.ends_with("h end exit:0\n"));
    }
}

#[test]
fn the_kubelet_start_counts_only_while_the_unit_is_active() {
    let active = "ActiveState=active\nActiveEnterTimestamp=Tue 2026-11-24 08:15:17 UTC\n";
    assert_eq!(
        node::unit_started_at(active).as_deref(),
        Some("2026-11-24T08:15:17Z")
    );
    // systemd keeps a stopped unit's last start: it says nothing about what runs now.
    let stopped = active.replace("=active", "=inactive");
    assert_eq!(node::unit_started_at(&stopped), None);
    // Never started; a zone other than the one hactl asked for; no systemd.
    assert_eq!(
        node::unit_started_at("ActiveState=active\nActiveEnterTimestamp=\n"),
        None
    );
    assert_eq!(node::unit_started_at(&active.replace("UTC", "CET")), None);
    assert_eq!(node::unit_started_at("sh: systemctl: not found"), None);
}

#[test]
fn kubeconfig_modification_times_are_keyed_by_file_name() {
    let stat = "1795508117 /etc/kubernetes/admin.conf\n1795508118 /etc/kubernetes/kubelet.conf\nstat: garbage\n";
    let got = node::modified_times(stat);
    assert_eq!(
        got.into_iter().collect::<Vec<_>>(),
        vec![
            ("admin.conf".to_string(), "2026-11-24T08:15:17Z".to_string()),
            (
                "kubelet.conf".to_string(),
                "2026-11-24T08:15:18Z".to_string()
            ),
        ]
    );
}
