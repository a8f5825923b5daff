//! The client's Go-style errors, against real tokio-rustls servers on 127.0.0.60–69.

use super::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(cn: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed");
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

fn leaf(ca: &Ca, sans: &[&str], expired: bool) -> (String, String) {
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(sans).expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca.issuer).expect("signed");
    (cert.pem(), key.serialize_pem())
}

/// A TLS server answering every request with 200 and `{"path": …}`; returns its port.
async fn serve(ip: &str, cert_pem: &str, key_pem: &str) -> (u16, tokio::task::JoinHandle<()>) {
    crate::lab::install_crypto_provider();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .map(|c| c.expect("cert"))
        .collect();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
    let cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind((ip, 0)).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let n = tls.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
                let auth = req
                    .lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                    .is_some();
                let body = serde_json::json!({"path": path, "auth": auth}).to_string();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, task)
}

fn hosts_file(dir: &Path, lines: &str) -> PathBuf {
    let p = dir.join("hosts");
    std::fs::write(&p, lines).expect("write hosts");
    p
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hactl-comp-client-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

const KUBEADM_SANS: &[&str] = &[
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "cp1",
    "10.96.0.1",
    "127.0.0.60",
];

#[tokio::test]
async fn verified_request_returns_the_servers_answer() {
    let ca = ca("kubernetes");
    let (cert, key) = leaf(&ca, KUBEADM_SANS, false);
    let (port, task) = serve("127.0.0.60", &cert, &key).await;
    let client = ApiClient::new(
        &format!("https://127.0.0.60:{port}"),
        ca.pem.as_bytes(),
        ClientAuth::Token("abc".into()),
        Resolver::direct(),
    )
    .expect("client");
    let resp = client.get("/api/v1/nodes/w1").await.expect("request");
    assert_eq!(resp.status, 200);
    let v = resp.json().expect("json");
    assert_eq!(v["path"], "/api/v1/nodes/w1");
    assert_eq!(v["auth"], true);
    task.abort();
}

#[tokio::test]
async fn a_name_missing_from_the_sans_fails_as_go_says() {
    let dir = tempdir("name");
    let ca = ca("kubernetes");
    let (cert, key) = leaf(&ca, KUBEADM_SANS, false);
    let (port, task) = serve("127.0.0.61", &cert, &key).await;
    let hosts = hosts_file(
        &dir,
        "127.0.0.1 localhost\n127.0.0.61 k8s-api.lab.internal\n",
    );
    let client = ApiClient::new(
        &format!("https://k8s-api.lab.internal:{port}"),
        ca.pem.as_bytes(),
        ClientAuth::None,
        Resolver::with_hosts_file(hosts, None),
    )
    .expect("client");
    let err = client.get("/api/v1/nodes/w1").await.expect_err("must fail");
    assert_eq!(
        err.to_string(),
        format!(
            "Get \"https://k8s-api.lab.internal:{port}/api/v1/nodes/w1\": tls: failed to verify certificate: x509: certificate is valid for kubernetes, kubernetes.default, kubernetes.default.svc, kubernetes.default.svc.cluster.local, cp1, not k8s-api.lab.internal"
        )
    );
    assert_eq!(err.kind(), Some(FailureKind::Tls));
    task.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_ip_missing_from_the_sans_lists_the_ip_sans() {
    let ca = ca("kubernetes");
    let (cert, key) = leaf(&ca, &["cp1", "10.96.0.1", "127.0.0.11"], false);
    let (port, task) = serve("127.0.0.62", &cert, &key).await;
    let client = ApiClient::new(
        &format!("https://127.0.0.62:{port}"),
        ca.pem.as_bytes(),
        ClientAuth::None,
        Resolver::direct(),
    )
    .expect("client");
    let err = client.get("/version").await.expect_err("must fail");
    assert_eq!(
        err.to_string(),
        format!(
            "Get \"https://127.0.0.62:{port}/version\": tls: failed to verify certificate: x509: certificate is valid for 10.96.0.1, 127.0.0.11, not 127.0.0.62"
        )
    );
    task.abort();
}

#[tokio::test]
async fn another_ca_is_an_unknown_authority_with_gos_hint_when_names_collide() {
    let real = ca("kubernetes");
    let other = ca("other-ca");
    let (cert, key) = leaf(&real, KUBEADM_SANS, false);
    let (port, task) = serve("127.0.0.63", &cert, &key).await;
    let client = ApiClient::new(
        &format!("https://127.0.0.63:{port}"),
        other.pem.as_bytes(),
        ClientAuth::None,
        Resolver::direct(),
    )
    .expect("client");
    let err = client.get("/version").await.expect_err("must fail");
    // .63 is not in the SANs; Go checks the name before the chain.
    assert!(
        err.to_string().contains("x509: certificate is valid for"),
        "{err}"
    );

    let (cert2, key2) = leaf(&real, &["kubernetes", "127.0.0.63"], false);
    task.abort();
    let (port2, task2) = serve("127.0.0.63", &cert2, &key2).await;
    let client = ApiClient::new(
        &format!("https://127.0.0.63:{port2}"),
        other.pem.as_bytes(),
        ClientAuth::None,
        Resolver::direct(),
    )
    .expect("client");
    let err = client.get("/version").await.expect_err("must fail");
    assert_eq!(
        err.to_string(),
        format!(
            "Get \"https://127.0.0.63:{port2}/version\": tls: failed to verify certificate: x509: certificate signed by unknown authority"
        )
    );
    // A regenerated CA with the same name: Go's hint names the candidate.
    let same_name = ca("kubernetes");
    let client = ApiClient::new(
        &format!("https://127.0.0.63:{port2}"),
        same_name.pem.as_bytes(),
        ClientAuth::None,
        Resolver::direct(),
    )
    .expect("client");
    let err = client.get("/version").await.expect_err("must fail");
    assert!(
        err.to_string().ends_with(
            "x509: certificate signed by unknown authority (possibly because of \"x509: ECDSA verification failure\" while trying to verify candidate authority certificate \"kubernetes\")"
        ),
        "{err}"
    );
    task2.abort();
}

#[tokio::test]
async fn an_expired_certificate_says_when() {
    let ca = ca("kubernetes");
    let (cert, key) = leaf(&ca, &["127.0.0.64"], true);
    let (port, task) = serve("127.0.0.64", &cert, &key).await;
    let client = ApiClient::new(
        &format!("https://127.0.0.64:{port}"),
        ca.pem.as_bytes(),
        ClientAuth::None,
        Resolver::direct(),
    )
    .expect("client");
    let err = client
        .get("/version")
        .await
        .expect_err("must fail")
        .to_string();
    let prefix = format!(
        "Get \"https://127.0.0.64:{port}/version\": tls: failed to verify certificate: x509: certificate has expired or is not yet valid: current time "
    );
    assert!(err.starts_with(&prefix), "{err}");
    assert!(err.ends_with(" is after 2021-01-01T00:00:00Z"), "{err}");
    task.abort();
}

#[tokio::test]
async fn refused_and_unknown_hosts_are_dial_errors() {
    let dir = tempdir("dial");
    let ca = ca("kubernetes");
    // A port nobody listens on: bind and drop.
    let l = std::net::TcpListener::bind("127.0.0.65:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    let client = ApiClient::new(
        &format!("https://127.0.0.65:{port}"),
        ca.pem.as_bytes(),
        ClientAuth::None,
        Resolver::direct(),
    )
    .expect("client");
    let err = client.get("/api/v1/nodes/w1").await.expect_err("must fail");
    assert_eq!(
        err.to_string(),
        format!(
            "Get \"https://127.0.0.65:{port}/api/v1/nodes/w1\": dial tcp 127.0.0.65:{port}: connect: connection refused"
        )
    );
    assert_eq!(err.kind(), Some(FailureKind::Dial));

    let hosts = hosts_file(&dir, "127.0.0.1 localhost\n");
    let client = ApiClient::new(
        "https://k8s-api.lab.internal:6443",
        ca.pem.as_bytes(),
        ClientAuth::None,
        Resolver::with_hosts_file(hosts, None),
    )
    .expect("client");
    let err = client
        .get("/version")
        .await
        .expect_err("must fail")
        .to_string();
    assert!(
        err.starts_with(
            "Get \"https://k8s-api.lab.internal:6443/version\": dial tcp: lookup k8s-api.lab.internal on "
        ) && err.ends_with(": no such host"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_nodes_loopback_is_the_nodes_address() {
    let dir = tempdir("loop");
    let ca = ca("kubernetes");
    let (cert, key) = leaf(&ca, &["127.0.0.1"], false);
    let (port, task) = serve("127.0.0.66", &cert, &key).await;
    let client = ApiClient::new(
        &format!("https://127.0.0.1:{port}"),
        ca.pem.as_bytes(),
        ClientAuth::None,
        Resolver::with_hosts_file(
            hosts_file(&dir, ""),
            Some("127.0.0.66".parse().expect("ip")),
        ),
    )
    .expect("client");
    let resp = client
        .get("/livez")
        .await
        .expect("reaches the node's own server");
    assert_eq!(resp.status, 200);
    task.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kubeconfig_paths_are_node_paths_and_data_is_base64() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: https://127.0.0.11:6443\n  name: kubernetes\ncontexts:\n- context:\n    cluster: kubernetes\n    user: system:node:w1\n  name: system:node:w1@kubernetes\ncurrent-context: system:node:w1@kubernetes\nusers:\n- name: system:node:w1\n  user:\n    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem\n",
        b64("CA PEM")
    );
    let kc = Kubeconfig::parse(&text, "/etc/kubernetes/kubelet.conf", |p| {
        assert_eq!(p, "/var/lib/kubelet/pki/kubelet-client-current.pem");
        Ok(b"BOTH".to_vec())
    })
    .expect("parses");
    assert_eq!(kc.server, "https://127.0.0.11:6443");
    assert_eq!(kc.ca_pem, b"CA PEM");
    assert!(matches!(kc.auth, ClientAuth::Cert { .. }));

    let err = Kubeconfig::parse(&text, "/etc/kubernetes/kubelet.conf", |p| {
        Err(format!("open {p}: no such file or directory"))
    })
    .expect_err("missing cert");
    assert_eq!(
        err.to_string(),
        "unable to read client-cert /var/lib/kubelet/pki/kubelet-client-current.pem for system:node:w1 due to open /var/lib/kubelet/pki/kubelet-client-current.pem: no such file or directory"
    );
}

#[test]
fn go_hostname_matching() {
    use crate::tls_verify::match_hostname;
    assert!(match_hostname("*.lab.internal", "k8s-api.lab.internal"));
    assert!(!match_hostname("*.lab.internal", "a.b.lab.internal"));
    assert!(match_hostname("cp1", "cp1"));
    assert!(!match_hostname("cp1", "cp2"));
    assert_eq!(go_verb("PATCH"), "Patch");
}
