//! `observe::api::read_api` and `observe::endpoint::probe_endpoint` against real labs, checked
//! against what the real `kubectl` says about the same cluster. Labs on 127.0.24.x (1.31,
//! containerd) and 127.0.25.x (1.23, docker). These tests need root (CI has it).

mod lab_support;

use std::time::{Duration, Instant};

use hactl::observe::api::read_api;
use hactl::observe::endpoint::probe_endpoint;
use hactl::observe::reach::SshReach;
use hactl::observed::{ApiObservation, ObservedState, Probe};
use hactl::spec::Endpoint;
use lab_support::{Lab, plan};

const TIMEOUT: Duration = Duration::from_secs(10);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn admin_conf(lab: &Lab) -> (String, String) {
    let path = lab.dir.join("admin.conf");
    let text = std::fs::read_to_string(&path).expect("admin.conf");
    (text, path.display().to_string())
}

fn fixture(name: &str) -> ObservedState {
    let path = format!(
        "{}/tests/fixtures/observed/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("parses")
}

/// Everything `read_api` found, checked field by field against kubectl's JSON.
fn assert_matches_kubectl(lab: &Lab, obs: &ApiObservation) {
    assert_eq!(obs.reachable, Probe::Ok, "{obs:#?}");
    for key in [
        "kube-system/kube-proxy",
        "kube-system/kubeadm-config",
        "kube-public/cluster-info",
    ] {
        let (ns, name) = key.split_once('/').expect("key");
        let cm = lab.kubectl_json(&["get", "configmap", "-n", ns, name]);
        let seen = obs
            .configmaps
            .get(key)
            .unwrap_or_else(|| panic!("no {key}"));
        assert_eq!(
            seen.resource_version, cm["metadata"]["resourceVersion"],
            "{key}"
        );
        let data: std::collections::BTreeMap<String, String> =
            serde_json::from_value(cm["data"].clone()).expect("data");
        // Byte for byte: the planner diffs these texts.
        assert_eq!(seen.data, data, "{key}");
    }

    let nodes = lab.kubectl_json(&["get", "nodes"]);
    let items = nodes["items"].as_array().expect("items");
    assert_eq!(obs.nodes.len(), items.len(), "{:?}", obs.nodes);
    for n in items {
        let name = n["metadata"]["name"].as_str().expect("name");
        let seen = &obs.nodes[name];
        let ready = n["status"]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        assert_eq!(seen.ready, ready, "{name}");
        let mut roles: Vec<String> = n["metadata"]["labels"]
            .as_object()
            .expect("labels")
            .keys()
            .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
            .map(String::from)
            .collect();
        roles.sort();
        assert_eq!(seen.roles, roles, "{name}");
        assert_eq!(
            seen.kubelet_version, n["status"]["nodeInfo"]["kubeletVersion"],
            "{name}"
        );
    }

    let pods = lab.kubectl_json(&[
        "get",
        "pods",
        "-n",
        "kube-system",
        "-l",
        "k8s-app=kube-proxy",
    ]);
    let items = pods["items"].as_array().expect("items");
    assert_eq!(
        obs.kube_proxy_pods.len(),
        items.len(),
        "{:?}",
        obs.kube_proxy_pods
    );
    for p in items {
        let node = p["spec"]["nodeName"].as_str().expect("nodeName");
        let seen = &obs.kube_proxy_pods[node];
        assert_eq!(seen.name, p["metadata"]["name"], "{node}");
        let ready = p["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        assert_eq!(seen.ready, ready, "{node}");
        let restarts: u64 = p["status"]["containerStatuses"].as_array().map_or(0, |cs| {
            cs.iter().filter_map(|c| c["restartCount"].as_u64()).sum()
        });
        assert_eq!(u64::from(seen.restarts), restarts, "{node}");
    }

    for name in ["kube-controller-manager", "kube-scheduler"] {
        let lease = lab.kubectl_json(&["get", "lease", "-n", "kube-system", name]);
        let seen = obs
            .leases
            .get(name)
            .unwrap_or_else(|| panic!("no lease {name}"));
        assert_eq!(
            seen.holder.as_deref(),
            lease["spec"]["holderIdentity"].as_str(),
            "{name}"
        );
        // Renewed every few seconds: ours was read first, so it is no later than kubectl's,
        // and in the API's own format (RFC 3339, microseconds, UTC), so strings compare.
        let ours = seen.renew_time.as_deref().expect("renewTime");
        let theirs = lease["spec"]["renewTime"].as_str().expect("renewTime");
        assert_eq!(ours.len(), "2026-11-02T09:14:27.123456Z".len(), "{ours}");
        assert!(ours.ends_with('Z') && ours.as_bytes()[19] == b'.', "{ours}");
        assert!(ours <= theirs, "{ours} > {theirs}");
    }
}

#[test]
fn the_api_reads_what_kubectl_sees_and_failures_say_why() {
    let net = 24;
    let _serial = NET24.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::up("obs-api", &plan(net, 1, 1), &[]);
    let rt = rt();
    let (admin, origin) = admin_conf(&lab);

    let obs = rt.block_on(read_api(&SshReach, &admin, &origin, TIMEOUT));
    assert_eq!(obs.server.as_deref(), Some("https://127.0.24.11:6443"));
    assert_matches_kubectl(&lab, &obs);
    assert_eq!(obs.nodes["cp1"].roles, ["control-plane"]);
    assert!(obs.nodes["w1"].roles.is_empty());
    assert!(obs.nodes["cp1"].kubelet_version.starts_with("v1.31."));
    assert!(obs.nodes.values().all(|n| n.ready), "{:?}", obs.nodes);
    assert_eq!(obs.leases.len(), 2);
    assert!(
        obs.leases["kube-scheduler"]
            .holder
            .as_deref()
            .is_some_and(|h| h.starts_with("cp1_")),
        "{:?}",
        obs.leases
    );

    // The same keys as the contract fixture, and kube-proxy's kubeadm template texts: the
    // lab's cluster is fresh-1.31 on another net.
    let want = fixture("fresh-1.31.json");
    assert_eq!(
        obs.configmaps.keys().collect::<Vec<_>>(),
        want.api.configmaps.keys().collect::<Vec<_>>()
    );
    let proxy = &obs.configmaps["kube-system/kube-proxy"].data;
    let want_proxy = &want.api.configmaps["kube-system/kube-proxy"].data;
    assert_eq!(
        proxy.keys().collect::<Vec<_>>(),
        want_proxy.keys().collect::<Vec<_>>()
    );
    // The lab's kubeconfig.conf ends with a newline where kubeadm's `|-` template does not,
    // and its 1.31 config.conf lacks the `nftables:` block (both reported): the rest is
    // kubeadm's text.
    assert_eq!(
        proxy["kubeconfig.conf"]
            .replace("127.0.24.", "127.0.0.")
            .trim_end_matches('\n'),
        want_proxy["kubeconfig.conf"]
    );

    // Nothing listens: refused, naming the server, the file and what to check.
    let nowhere = admin.replace("https://127.0.24.11:6443", "https://127.0.24.99:6443");
    let origin_cp1 = "cp1:/etc/kubernetes/admin.conf";
    let obs = rt.block_on(read_api(&SshReach, &nowhere, origin_cp1, TIMEOUT));
    let reason = obs.reachable.failure().expect("unreachable");
    assert_eq!(
        reason,
        "cannot reach the API server https://127.0.24.99:6443 (from cp1:/etc/kubernetes/admin.conf): dial tcp 127.0.24.99:6443: connect: connection refused; is kube-apiserver running on that address and port, and is the kubeconfig's server: line right?"
    );
    assert_eq!(obs.server.as_deref(), Some("https://127.0.24.99:6443"));
    assert!(obs.configmaps.is_empty() && obs.nodes.is_empty() && obs.leases.is_empty());

    // Through the LB's address, which cp1's fresh certificate does not carry: Go's words.
    let via_lb = admin.replace("https://127.0.24.11:6443", "https://127.0.24.100:6443");
    let obs = rt.block_on(read_api(&SshReach, &via_lb, origin_cp1, TIMEOUT));
    assert_eq!(
        obs.reachable.failure(),
        Some(
            "TLS to the API server https://127.0.24.100:6443 (from cp1:/etc/kubernetes/admin.conf) failed: tls: failed to verify certificate: x509: certificate is valid for 10.96.0.1, 127.0.24.11, not 127.0.24.100; the API server's certificate does not name 127.0.24.100: add it to the certificate's SANs or use a server: the certificate names"
        )
    );

    // A CA that did not sign the API server's certificate: Go's words, and what to use.
    let foreign = with_ca(&admin, &foreign_ca());
    let obs = rt.block_on(read_api(&SshReach, &foreign, origin_cp1, TIMEOUT));
    assert_eq!(
        obs.reachable.failure(),
        Some(
            "TLS to the API server https://127.0.24.11:6443 (from cp1:/etc/kubernetes/admin.conf) failed: tls: failed to verify certificate: x509: certificate signed by unknown authority; the kubeconfig's certificate-authority-data is not the CA that signed the API server's certificate: use the cluster's pki/ca.crt"
        )
    );

    // A token the API server does not know: 401, naming the kubeconfig's user.
    let token_user = token_kubeconfig(&admin, "abcdef.0123456789abcdef");
    let obs = rt.block_on(read_api(&SshReach, &token_user, &origin, TIMEOUT));
    let reason = obs.reachable.failure().expect("401");
    assert_eq!(
        reason,
        format!(
            "the API server https://127.0.24.11:6443 (from {origin}) rejected the credentials of user \"kubernetes-admin\" (401 Unauthorized): the client certificate or token is not valid for this cluster (expired, or from another cluster); use a current admin.conf"
        )
    );
    assert!(
        !reason.contains("0123456789abcdef"),
        "the token leaked: {reason}"
    );

    // A credential the API server accepts whose rights do not cover what hactl reads: a
    // bootstrap token (system:bootstrappers read kubeadm's ConfigMaps and Nodes, not Pods).
    let token = lab.ssh_ok("cp1", "kubeadm token create").trim().to_string();
    let (_, secret) = token.split_once('.').expect("a bootstrap token");
    let bootstrapper = token_kubeconfig(&admin, &token);
    let obs = rt.block_on(read_api(&SshReach, &bootstrapper, &origin, TIMEOUT));
    let reason = obs.reachable.failure().expect("403");
    assert_eq!(
        reason,
        format!(
            "the API server https://127.0.24.11:6443 (from {origin}) forbids user \"kubernetes-admin\" to read what hactl needs (403 Forbidden): pods is forbidden: User \"system:bootstrap:{}\" cannot list resource \"pods\" in API group \"\" in the namespace \"kube-system\"; use a kubeconfig with cluster-admin rights such as /etc/kubernetes/admin.conf",
            token.split('.').next().unwrap()
        )
    );
    assert!(!reason.contains(secret), "the token leaked: {reason}");
}

#[test]
fn an_api_server_that_never_answers_times_out_within_the_bound() {
    // Accepts TCP (the kernel's backlog) but never speaks TLS.
    let listener = std::net::TcpListener::bind("127.0.25.98:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://127.0.25.98:{port}\n  name: kubernetes\ncontexts:\n- context:\n    cluster: kubernetes\n    user: kubernetes-admin\n  name: kubernetes-admin@kubernetes\ncurrent-context: kubernetes-admin@kubernetes\nusers:\n- name: kubernetes-admin\n  user: {{}}\n"
    );
    let started = Instant::now();
    let obs = rt().block_on(read_api(
        &SshReach,
        &kubeconfig,
        "/tmp/x.conf",
        Duration::from_secs(1),
    ));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        obs.reachable.failure().map(String::from),
        Some(format!(
            "the API server https://127.0.25.98:{port} (from /tmp/x.conf) did not answer within 1s: is kube-apiserver running there, and does nothing drop packets to it?"
        ))
    );
    drop(listener);
}

/// The kubeconfig trusting `ca_pem` instead of its own CA.
fn with_ca(kubeconfig: &str, ca_pem: &str) -> String {
    use base64::Engine;
    let data = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    kubeconfig
        .lines()
        .map(|l| match l.split_once("certificate-authority-data: ") {
            Some((indent, _)) => format!("{indent}certificate-authority-data: {data}"),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// admin.conf with its user's client certificate replaced by a bearer token.
fn token_kubeconfig(admin: &str, token: &str) -> String {
    let mut out = Vec::new();
    let mut in_user = false;
    for line in admin.lines() {
        if line.starts_with("users:") {
            in_user = true;
        }
        if in_user && (line.contains("client-certificate-data") || line.contains("client-key-data"))
        {
            continue;
        }
        out.push(line.to_string());
        if in_user && line.trim_start() == "user:" {
            out.push(format!("    token: {token}"));
        }
    }
    out.join("\n") + "\n"
}

#[test]
fn a_1_23_docker_cluster_reads_as_its_fixture() {
    let lab = Lab::up(
        "obs-api-123",
        &plan(25, 1, 1),
        &["--kubernetes-version", "1.23", "--runtime", "docker"],
    );
    let (admin, origin) = admin_conf(&lab);
    let obs = rt().block_on(read_api(&SshReach, &admin, &origin, TIMEOUT));
    assert_matches_kubectl(&lab, &obs);
    let want = fixture("fresh-1.23-docker.json");
    assert_eq!(obs.nodes["cp1"], want.api.nodes["cp1"]);
    assert_eq!(obs.nodes["w1"], want.api.nodes["w1"]);
    assert_eq!(
        obs.configmaps.keys().collect::<Vec<_>>(),
        want.api.configmaps.keys().collect::<Vec<_>>()
    );
}

/// A CA that is not the cluster's, named like nothing in it.
fn foreign_ca() -> String {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "other-ca");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().expect("key");
    params.self_signed(&key).expect("self-signed").pem()
}

#[test]
fn the_load_balancer_is_probed_as_go_would() {
    let net = 24;
    let _serial = NET24.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::up("obs-lb", &plan(net, 1, 0), &[]);
    let rt = rt();
    let ca = std::fs::read_to_string(lab.dir.join("nodes/cp1/etc/kubernetes/pki/ca.crt"))
        .expect("ca.crt");
    let endpoint = Endpoint {
        host: "k8s-api.lab.internal".into(),
        addresses: vec![
            "127.0.24.100".parse().expect("ip"),
            "127.0.24.99".parse().expect("ip"),
        ],
        port: 6443,
    };

    let obs = rt.block_on(probe_endpoint(&endpoint, Some(&ca), TIMEOUT));
    assert_eq!(obs.addresses["127.0.24.100"], Probe::Ok);
    assert_eq!(
        obs.addresses["127.0.24.99"],
        Probe::Failed {
            reason: "dial tcp 127.0.24.99:6443: connect: connection refused".into()
        }
    );
    // The contract fixture's words, exactly.
    assert_eq!(obs.tls, fixture("fresh-1.31.json").endpoint.tls);
    assert_eq!(
        obs.tls.as_ref().and_then(Probe::failure),
        Some(
            "x509: certificate is valid for cp1, kubernetes, kubernetes.default, kubernetes.default.svc, kubernetes.default.svc.cluster.local, not k8s-api.lab.internal"
        )
    );

    // No CA to verify against: no TLS verdict.
    let obs = rt.block_on(probe_endpoint(&endpoint, None, TIMEOUT));
    assert_eq!(obs.tls, None);

    // The LB's name added to cp1's certificate: the API server serves it without a restart.
    lab.add_lb_san(net);
    let deadline = Instant::now() + Duration::from_secs(30);
    let obs = loop {
        let obs = rt.block_on(probe_endpoint(&endpoint, Some(&ca), TIMEOUT));
        if obs.tls == Some(Probe::Ok) || Instant::now() > deadline {
            break obs;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(obs.tls, Some(Probe::Ok), "{obs:?}");
    assert_eq!(obs.tls, fixture("half-1.31.json").endpoint.tls);

    // A CA that did not sign it.
    let obs = rt.block_on(probe_endpoint(&endpoint, Some(&foreign_ca()), TIMEOUT));
    assert_eq!(
        obs.tls,
        Some(Probe::Failed {
            reason: "x509: certificate signed by unknown authority".into()
        })
    );

    // Nothing listening anywhere: TCP fails on every address and TLS is not tried.
    let dead = Endpoint {
        host: "k8s-api.lab.internal".into(),
        addresses: vec!["127.0.24.99".parse().expect("ip")],
        port: 6443,
    };
    let obs = rt.block_on(probe_endpoint(&dead, Some(&ca), TIMEOUT));
    assert_eq!(
        obs.addresses["127.0.24.99"].failure(),
        Some("dial tcp 127.0.24.99:6443: connect: connection refused")
    );
    assert_eq!(obs.tls, None);
}

/// The two tests on 127.0.24.x take turns (cargo runs tests in parallel threads).
static NET24: std::sync::Mutex<()> = std::sync::Mutex::new(());
