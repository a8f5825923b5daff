//! The simulated kube-apiserver against real etcd 3.4, driven by the real kubectl and kube-rs.
//!
//! One etcd (127.0.0.50) and one API server are shared by the tests that only read and
//! write objects; the certificate-reload test adds a second API server (127.0.0.51) on the
//! same etcd, and the quorum-loss test has its own etcd and API server (127.0.0.52).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hactl::kubeadm::KubeVersion;
use hactl::lab::apiserver::{self, ApiServer, ApiServerConfig};
use hactl::lab::etcd::EtcdClient;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};

const BOOTSTRAP_TOKEN: &str = "abcdef.0123456789abcdef";

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// A CA and the certificates it issued, as PEM files in a directory.
struct Pki {
    dir: PathBuf,
    ca_params: CertificateParams,
    ca_key: KeyPair,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("pki dir");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "kubernetes");
        let ca = ca_params.self_signed(&ca_key).expect("CA cert");
        std::fs::write(dir.join("ca.crt"), ca.pem()).expect("write CA");
        Pki {
            dir: dir.to_owned(),
            ca_params,
            ca_key,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes NAME.crt and NAME.key; returns (cert PEM, key PEM).
    fn issue(&self, name: &str, cn: &str, orgs: &[&str], sans: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        for o in orgs {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).expect("sign");
        let (c, k) = (cert.pem(), key.serialize_pem());
        std::fs::write(self.path(&format!("{name}.crt")), &c).expect("write cert");
        std::fs::write(self.path(&format!("{name}.key")), &k).expect("write key");
        (c, k)
    }

    fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.path("ca.crt")).expect("CA pem")
    }
}

/// A real single-member etcd with TLS; killed by its handle on drop.
struct Etcd {
    child: Option<Child>,
    client: EtcdClient,
}

impl Etcd {
    fn start(dir: &Path, pki: &Pki, addr: &str) -> Etcd {
        pki.issue("etcd-server", "etcd", &[], &[addr, "localhost"]);
        let (cert, key) = pki.issue("etcd-client", "kube-apiserver-etcd-client", &[], &[]);
        let url = |port: u16| format!("https://{addr}:{port}");
        let log = std::fs::File::create(dir.join(format!("etcd-{addr}.log"))).expect("etcd log");
        let p = |n: &str| pki.path(n).display().to_string();
        let child = Command::new("/usr/bin/etcd")
            .args(["--name", "test"])
            .arg(format!(
                "--data-dir={}",
                dir.join(format!("etcd-{addr}")).display()
            ))
            .arg(format!("--listen-client-urls={}", url(2379)))
            .arg(format!("--advertise-client-urls={}", url(2379)))
            .arg(format!("--listen-peer-urls={}", url(2380)))
            .arg(format!("--initial-advertise-peer-urls={}", url(2380)))
            .arg(format!("--initial-cluster=test={}", url(2380)))
            .arg(format!("--cert-file={}", p("etcd-server.crt")))
            .arg(format!("--key-file={}", p("etcd-server.key")))
            .arg(format!("--trusted-ca-file={}", p("ca.crt")))
            .arg("--client-cert-auth=true")
            .arg(format!("--peer-cert-file={}", p("etcd-server.crt")))
            .arg(format!("--peer-key-file={}", p("etcd-server.key")))
            .arg(format!("--peer-trusted-ca-file={}", p("ca.crt")))
            .arg("--peer-client-cert-auth=true")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start /usr/bin/etcd");
        let client =
            EtcdClient::new(vec![url(2379)], &pki.ca_pem(), &cert, &key).expect("etcd client");
        let etcd = Etcd {
            child: Some(child),
            client,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if rt().block_on(etcd.client.get("/probe")).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "etcd on {addr} did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        etcd
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn seed_objects() -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "kube-proxy", "namespace": "kube-system"},
               "data": {"config.conf": "mode: iptables\n"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
               "data": {"ClusterConfiguration": "kind: ClusterConfiguration\n"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "cluster-info", "namespace": "kube-public"},
               "data": {"kubeconfig": "apiVersion: v1\n"}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "kube-proxy", "namespace": "kube-system"}}),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
               "metadata": {"name": "bootstrap-token-abcdef", "namespace": "kube-system"},
               "stringData": {"token-id": "abcdef", "token-secret": "0123456789abcdef",
                              "expiration": "2099-01-01T00:00:00Z",
                              "usage-bootstrap-authentication": "true",
                              "auth-extra-groups": "system:bootstrappers:kubeadm:default-node-token"}}),
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": "cp1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
               "status": {"conditions": [{"type": "Ready", "status": "True"}],
                          "nodeInfo": {"kubeletVersion": "v1.31.14"}}}),
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "kube-proxy-abcde", "namespace": "kube-system"},
               "spec": {"nodeName": "cp1", "containers": [{"name": "kube-proxy", "image": "x"}]},
               "status": {"phase": "Running",
                          "containerStatuses": [{"name": "kube-proxy", "ready": true, "restartCount": 2,
                                                 "state": {"running": {}}}]}}),
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "kube-controller-manager", "namespace": "kube-system"},
               "spec": {"holderIdentity": "cp1_1234", "leaseDurationSeconds": 15}}),
    ]
}

fn server_config(pki: &Pki, addr: SocketAddr, etcd: &str, prefix: &str) -> ApiServerConfig {
    let mut c = ApiServerConfig::new(
        addr,
        pki.path(&format!("{prefix}.crt")),
        pki.path(&format!("{prefix}.key")),
        Some(pki.path("ca.crt")),
        vec![format!("https://{etcd}:2379")],
        pki.path("ca.crt"),
        pki.path("etcd-client.crt"),
        pki.path("etcd-client.key"),
        KubeVersion::new(1, 31, 14),
    );
    c.service_account_key_files = vec![pki.path("sa.pub")];
    c.service_account_signing_key_file = Some(pki.path("sa.key"));
    c
}

/// A kubeconfig for `server`: with the admin's client certificate, or anonymous.
fn write_kubeconfig(path: &Path, pki: &Pki, server: &str, admin: bool) {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let user = if admin {
        let crt = std::fs::read_to_string(pki.path("admin.crt")).expect("admin cert");
        let key = std::fs::read_to_string(pki.path("admin.key")).expect("admin key");
        format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&crt),
            b64(&key)
        )
    } else {
        "    {}\n".to_string()
    };
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {server}\n  name: lab\ncontexts:\n- context:\n    cluster: lab\n    user: u\n  name: lab\ncurrent-context: lab\nusers:\n- name: u\n  user:\n{user}",
        b64(&pki.ca_pem())
    );
    std::fs::write(path, text).expect("write kubeconfig");
}

struct Fixture {
    dir: PathBuf,
    pki: Pki,
    etcd: Etcd,
    server: Option<ApiServer>,
    kubeconfig: PathBuf,
    anon_kubeconfig: PathBuf,
}

impl Fixture {
    fn start(addr: &str, name: &str) -> Fixture {
        hactl::lab::install_crypto_provider();
        let dir = std::env::temp_dir().join(format!("hactl-lab-api-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let pki = Pki::new(&dir.join("pki"));
        pki.issue(
            "apiserver",
            "kube-apiserver",
            &[],
            &[addr, "127.0.0.51", "localhost", "kubernetes"],
        );
        pki.issue(
            "admin",
            "kubernetes-admin",
            &["kubeadm:cluster-admins"],
            &[],
        );
        let sa = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key");
        std::fs::write(pki.path("sa.key"), sa.serialize_pem()).expect("sa.key");
        std::fs::write(pki.path("sa.pub"), sa.public_key_pem()).expect("sa.pub");
        let etcd = Etcd::start(&dir, &pki, addr);
        rt().block_on(apiserver::seed(&etcd.client, &seed_objects()))
            .expect("seed");
        let bind: SocketAddr = format!("{addr}:6443").parse().expect("address");
        let server = rt()
            .block_on(apiserver::start(server_config(
                &pki,
                bind,
                addr,
                "apiserver",
            )))
            .expect("start API server");
        let kubeconfig = dir.join("admin.conf");
        write_kubeconfig(&kubeconfig, &pki, &format!("https://{addr}:6443"), true);
        let anon_kubeconfig = dir.join("anon.conf");
        write_kubeconfig(
            &anon_kubeconfig,
            &pki,
            &format!("https://{addr}:6443"),
            false,
        );
        Fixture {
            dir,
            pki,
            etcd,
            server: Some(server),
            kubeconfig,
            anon_kubeconfig,
        }
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with(&self.kubeconfig, args, &[])
    }

    fn kubectl_with(&self, kubeconfig: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new("kubectl")
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!(
                "--cache-dir={}",
                self.dir.join("kube-cache").display()
            ))
            .args(args)
            .env("HOME", &self.dir)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run kubectl")
    }

    /// kubectl that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // klog warnings or errors (discovery, OpenAPI, validation fallbacks) mean kubectl
        // did not like an answer even though the command worked.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.lines().any(|l| {
                let b = l.as_bytes();
                b.len() > 1 && matches!(b[0], b'W' | b'E') && b[1].is_ascii_digit()
            }),
            "kubectl {args:?} complained: {stderr}"
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("kubectl printed JSON")
    }

    async fn kube_client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("kube config");
        kube::Client::try_from(config).expect("kube client")
    }

    fn addr(&self) -> SocketAddr {
        self.server.as_ref().expect("running").addr()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            rt().block_on(s.stop());
        }
        self.etcd.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The shared fixture, alive while any test holds it (so etcd dies with the last test).
fn shared() -> Arc<Fixture> {
    static SHARED: Mutex<Weak<Fixture>> = Mutex::new(Weak::new());
    let mut slot = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(f) = slot.upgrade() {
        return f;
    }
    let f = Arc::new(Fixture::start("127.0.0.50", "shared"));
    *slot = Arc::downgrade(&f);
    f
}

/// One HTTPS request with optional client cert or bearer token: (status, body).
async fn https(
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &str,
    client: Option<(&str, &str)>,
    token: Option<&str>,
    path: &str,
) -> Result<(u16, String), String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?,
                PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?,
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(server_name.to_owned()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = hyper::Request::get(path).header("host", addr.to_string());
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = send
        .send_request(
            req.body(Full::new(Bytes::new()))
                .map_err(|e| e.to_string())?,
        )
        .await
        .map_err(|e| e.to_string())?;
    let code = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((code, String::from_utf8_lossy(&body.to_bytes()).into_owned()))
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).expect("create");
    f.write_all(text.as_bytes()).expect("write");
    p
}

#[test]
fn etcd_client_does_revisions_conflicts_and_members() {
    let f = shared();
    let c = &f.etcd.client;
    rt().block_on(async {
        let rev = c
            .create("/test/etcd/a", b"one")
            .await
            .expect("create")
            .expect("new");
        assert_eq!(
            c.create("/test/etcd/a", b"again").await.expect("create"),
            None
        );
        let kv = c.get("/test/etcd/a").await.expect("get").expect("exists");
        assert_eq!(
            (kv.value.as_slice(), kv.mod_revision),
            (b"one".as_slice(), rev)
        );
        assert_eq!(
            c.update("/test/etcd/a", b"two", rev - 1)
                .await
                .expect("update"),
            None
        );
        let rev2 = c
            .update("/test/etcd/a", b"two", rev)
            .await
            .expect("update")
            .expect("ok");
        assert!(rev2 > rev);
        c.create("/test/etcd/b", b"x").await.expect("create");
        let (kvs, at) = c.list("/test/etcd/").await.expect("list");
        assert_eq!(
            kvs.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
            ["/test/etcd/a", "/test/etcd/b"]
        );
        assert!(at >= rev2);
        assert!(!c.delete("/test/etcd/a", Some(rev)).await.expect("delete"));
        assert!(c.delete("/test/etcd/a", Some(rev2)).await.expect("delete"));
        assert!(c.get("/test/etcd/a").await.expect("get").is_none());
        let members = c.member_list().await.expect("members");
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].name, "test");
        assert!(members[0].started && !members[0].is_learner);
        assert_eq!(
            members[0].client_urls,
            vec!["https://127.0.0.50:2379".to_string()]
        );
        let st = c.status("https://127.0.0.50:2379").await.expect("status");
        assert_eq!(st.version, "3.4.23");
        assert_eq!(st.member_id, members[0].id);
        assert_eq!(st.leader, members[0].id);
    });
}

#[test]
fn the_api_server_compacts_etcd_history_as_kube_apiserver_does() {
    let f = shared();
    let c = &f.etcd.client;
    let mut config = server_config(
        &f.pki,
        "127.0.0.50:6444".parse().unwrap(),
        "127.0.0.50",
        "apiserver",
    );
    let interval = Duration::from_millis(300);
    config.etcd_compaction_interval = interval;
    rt().block_on(async {
        let first = c
            .create("/test/compact/a", b"one")
            .await
            .expect("create")
            .expect("new");
        c.update("/test/compact/a", b"two", first)
            .await
            .expect("update")
            .expect("ok");
        let started = Instant::now();
        let server = apiserver::start(config).await.expect("start API server");
        // The old value stays readable until a compaction passes its revision, which is not
        // before one interval has gone by (kube-apiserver compacts to the previous round's).
        let compacted = loop {
            match c.get_at("/test/compact/a", first).await {
                Ok(kv) => assert_eq!(kv.expect("at its revision").value, b"one"),
                Err(e) => {
                    assert!(e.to_string().contains("compacted"), "{e}");
                    break started.elapsed();
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "etcd was never compacted"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(compacted >= interval, "compacted after {compacted:?}");
        let now = c.get("/test/compact/a").await.expect("get").expect("kept");
        assert_eq!(now.value, b"two");
        server.stop().await;
    });
}

#[test]
fn kubectl_gets_configmaps_as_table_yaml_and_json() {
    let f = shared();
    let table = f.ok(&["get", "configmaps", "-n", "kube-system"]);
    let header = table.lines().next().expect("a header line");
    assert!(
        header.starts_with("NAME") && header.contains("DATA") && header.contains("AGE"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("kube-proxy ") && l.split_whitespace().nth(1) == Some("1")),
        "{table}"
    );
    let yaml = f.ok(&[
        "get",
        "configmap",
        "kube-proxy",
        "-n",
        "kube-system",
        "-o",
        "yaml",
    ]);
    assert!(
        yaml.contains("mode: iptables") && yaml.contains("resourceVersion: \""),
        "{yaml}"
    );
    let cm = f.json(&["get", "configmap", "kube-proxy", "-n", "kube-system"]);
    assert_eq!(cm["data"]["config.conf"], "mode: iptables\n");
    assert!(
        cm["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| u.len() == 36)
    );
    let list = f.json(&["get", "configmaps", "-A"]);
    assert!(list["items"].as_array().expect("items").len() >= 3);
}

#[test]
fn kubectl_edit_rewrites_a_value() {
    let f = shared();
    f.ok(&[
        "create",
        "configmap",
        "edit-me",
        "-n",
        "default",
        "--from-literal=key=value-one",
    ]);
    let out = f.kubectl_with(
        &f.kubeconfig,
        &["edit", "configmap", "edit-me", "-n", "default"],
        &[("KUBE_EDITOR", "sed -i s/value-one/value-edited/")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cm = f.json(&["get", "configmap", "edit-me", "-n", "default"]);
    assert_eq!(cm["data"]["key"], "value-edited");
}

#[test]
fn kubectl_patches_strategic_merge_and_json() {
    let f = shared();
    f.ok(&[
        "create",
        "configmap",
        "patch-me",
        "-n",
        "default",
        "--from-literal=a=1",
    ]);
    f.ok(&[
        "patch",
        "configmap",
        "patch-me",
        "-n",
        "default",
        "-p",
        r#"{"data":{"b":"2"}}"#,
    ]);
    f.ok(&[
        "patch",
        "configmap",
        "patch-me",
        "-n",
        "default",
        "--type=merge",
        "-p",
        r#"{"data":{"a":null,"c":"3"}}"#,
    ]);
    f.ok(&[
        "patch",
        "configmap",
        "patch-me",
        "-n",
        "default",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/data/c","value":"4"}]"#,
    ]);
    let cm = f.json(&["get", "configmap", "patch-me", "-n", "default"]);
    assert_eq!(cm["data"], json!({"b": "2", "c": "4"}));
    let bad = f.kubectl(&["patch", "configmap", "missing", "-n", "default", "-p", "{}"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("configmaps \"missing\" not found"));
}

#[test]
fn kubectl_replace_with_a_stale_resource_version_conflicts() {
    let f = shared();
    f.ok(&[
        "create",
        "configmap",
        "replace-me",
        "-n",
        "default",
        "--from-literal=a=1",
    ]);
    let mut stale = f.json(&["get", "configmap", "replace-me", "-n", "default"]);
    f.ok(&[
        "patch",
        "configmap",
        "replace-me",
        "-n",
        "default",
        "-p",
        r#"{"data":{"a":"2"}}"#,
    ]);
    stale["data"]["a"] = json!("3");
    let file = write_file(&f.dir, "stale.json", &stale.to_string());
    let out = f.kubectl(&["replace", "-f", &file.display().to_string()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Operation cannot be fulfilled on configmaps \"replace-me\": the object has been modified; please apply your changes to the latest version and try again"),
        "{err}"
    );
    // With the current version the same replace goes through.
    let mut fresh = f.json(&["get", "configmap", "replace-me", "-n", "default"]);
    fresh["data"]["a"] = json!("3");
    let file = write_file(&f.dir, "fresh.json", &fresh.to_string());
    f.ok(&["replace", "-f", &file.display().to_string()]);
    assert_eq!(
        f.json(&["get", "configmap", "replace-me", "-n", "default"])["data"]["a"],
        "3"
    );
}

#[test]
fn kubectl_apply_server_side_creates_and_updates() {
    let f = shared();
    let manifest = |v: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n  namespace: default\ndata:\n  k: {v}\n"
        )
    };
    let file = write_file(&f.dir, "applied.yaml", &manifest("first"));
    let out = f.ok(&["apply", "--server-side", "-f", &file.display().to_string()]);
    assert!(
        out.contains("configmap/applied serverside-applied"),
        "{out}"
    );
    write_file(&f.dir, "applied.yaml", &manifest("second"));
    f.ok(&["apply", "--server-side", "-f", &file.display().to_string()]);
    assert_eq!(
        f.json(&["get", "configmap", "applied", "-n", "default"])["data"]["k"],
        "second"
    );
}

#[test]
fn kubectl_gets_nodes_pods_secrets_and_leases() {
    let f = shared();
    let nodes = f.ok(&["get", "nodes"]);
    assert!(
        nodes.lines().any(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            c.first() == Some(&"cp1")
                && c.get(1) == Some(&"Ready")
                && c.get(2) == Some(&"control-plane")
                && c.get(4) == Some(&"v1.31.14")
        }),
        "{nodes}"
    );
    let pods = f.ok(&["get", "pods", "-n", "kube-system", "-o", "wide"]);
    assert!(
        pods.lines().any(|l| l.starts_with("kube-proxy-abcde")
            && l.contains("1/1")
            && l.contains("Running")
            && l.contains("cp1")),
        "{pods}"
    );
    let secrets = f.ok(&["get", "secrets", "-n", "kube-system"]);
    assert!(
        secrets.contains("bootstrap-token-abcdef")
            && secrets.contains("bootstrap.kubernetes.io/token"),
        "{secrets}"
    );
    let secret = f.json(&[
        "get",
        "secret",
        "bootstrap-token-abcdef",
        "-n",
        "kube-system",
    ]);
    assert_eq!(
        secret["data"]["token-id"], "YWJjZGVm",
        "stringData became data"
    );
    let leases = f.ok(&["get", "leases", "-A"]);
    assert!(
        leases
            .lines()
            .any(|l| l.contains("kube-controller-manager") && l.contains("cp1_1234")),
        "{leases}"
    );
    let by_node = f.json(&["get", "pods", "-A", "--field-selector", "spec.nodeName=cp1"]);
    assert_eq!(by_node["items"].as_array().map(Vec::len), Some(1));
    let none = f.json(&["get", "pods", "-A", "--field-selector", "spec.nodeName=w9"]);
    assert_eq!(none["items"].as_array().map(Vec::len), Some(0));
}

#[test]
fn kube_rs_reads_lists_and_gets_conflicts() {
    let f = shared();
    rt().block_on(async {
        let client = f.kube_client().await;
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
        let cm = cms.get("kube-proxy").await.expect("get kube-proxy");
        assert!(cm.metadata.resource_version.is_some());
        let list = cms.list(&ListParams::default()).await.expect("list");
        assert!(
            list.items
                .iter()
                .any(|c| c.metadata.name.as_deref() == Some("kubeadm-config"))
        );
        let mut mine = ConfigMap::default();
        mine.metadata.name = Some("kube-rs".into());
        mine.data = Some([("a".to_string(), "1".to_string())].into());
        let created = cms
            .create(&PostParams::default(), &mine)
            .await
            .expect("create");
        let mut newer = created.clone();
        newer.data = Some([("a".to_string(), "2".to_string())].into());
        cms.replace("kube-rs", &PostParams::default(), &newer)
            .await
            .expect("replace");
        match cms
            .replace("kube-rs", &PostParams::default(), &created)
            .await
        {
            Err(kube::Error::Api(s)) => {
                assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
            }
            other => panic!("a stale replace must conflict, got {other:?}"),
        }
        match cms.create(&PostParams::default(), &mine).await {
            Err(kube::Error::Api(s)) => {
                assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists"))
            }
            other => panic!("a second create must fail, got {other:?}"),
        }
        let leases: Api<Lease> = Api::namespaced(client, "kube-system");
        let lease = leases.get("kube-controller-manager").await.expect("lease");
        assert_eq!(
            lease.spec.and_then(|s| s.holder_identity).as_deref(),
            Some("cp1_1234")
        );
    });
}

#[test]
fn tokens_and_anonymous_access() {
    let f = shared();
    let ca = f.pki.ca_pem();
    rt().block_on(async {
        let get = |token: Option<&'static str>, path: &'static str| {
            let ca = ca.clone();
            let addr = f.addr();
            async move { https(addr, "127.0.0.50", &ca, None, token, path).await.expect("request") }
        };
        let (code, body) = get(Some(BOOTSTRAP_TOKEN), "/api/v1/namespaces/kube-system/configmaps/kubeadm-config").await;
        assert_eq!(code, 200, "{body}");
        let (code, body) = get(Some("abcdef.ffffffffffffffff"), "/api/v1/namespaces/kube-system/configmaps/kubeadm-config").await;
        assert_eq!((code, body.contains("Unauthorized")), (401, true), "{body}");
        let (code, _) = get(Some(BOOTSTRAP_TOKEN), "/api/v1/namespaces/kube-system/secrets/bootstrap-token-abcdef").await;
        assert_eq!(code, 403);
        let (code, _) = get(None, "/api/v1/namespaces/kube-public/configmaps/cluster-info").await;
        assert_eq!(code, 200);
        let (code, body) = get(None, "/api/v1/namespaces/kube-system/configmaps/kube-proxy").await;
        assert_eq!(code, 403);
        assert!(body.contains(r#"configmaps \"kube-proxy\" is forbidden: User \"system:anonymous\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"kube-system\""#), "{body}");
        let (code, body) = get(None, "/version").await;
        assert_eq!(code, 200);
        assert_eq!(serde_json::from_str::<Value>(&body).expect("json")["gitVersion"], "v1.31.14");
    });
    // A service-account token from TokenRequest (kubectl create token) authenticates.
    let token = f.ok(&["create", "token", "kube-proxy", "-n", "kube-system"]);
    let token = token.trim();
    let out = f.kubectl_with(
        &f.anon_kubeconfig,
        &[
            "get",
            "configmap",
            "kube-proxy",
            "-n",
            "kube-system",
            "-o",
            "name",
            &format!("--token={token}"),
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "configmap/kube-proxy"
    );
    let mut forged = token.to_string();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    let out = f.kubectl_with(
        &f.anon_kubeconfig,
        &[
            "get",
            "--raw",
            "/api/v1/namespaces",
            &format!("--token={forged}"),
        ],
        &[],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthorized"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_serving_certificate_is_reloaded_when_it_changes() {
    let f = shared();
    let bind: SocketAddr = "127.0.0.51:6443".parse().expect("address");
    f.pki
        .issue("reload", "kube-apiserver", &[], &["127.0.0.51"]);
    let server = rt()
        .block_on(apiserver::start(server_config(
            &f.pki,
            bind,
            "127.0.0.50",
            "reload",
        )))
        .expect("start second API server");
    let ca = f.pki.ca_pem();
    let result = rt().block_on(async {
        let first = https(bind, "lb.example", &ca, None, None, "/version").await;
        let err = first.expect_err("lb.example is not a SAN yet");
        assert!(err.contains("certificate") || err.contains("Name"), "{err}");
        // mtime granularity: make sure the new files look changed.
        tokio::time::sleep(Duration::from_millis(20)).await;
        f.pki.issue(
            "reload",
            "kube-apiserver",
            &[],
            &["127.0.0.51", "lb.example"],
        );
        https(bind, "lb.example", &ca, None, None, "/version").await
    });
    rt().block_on(server.stop());
    let (code, _) = result.expect("the new SAN is served without a restart");
    assert_eq!(code, 200);
}

#[test]
fn without_etcd_readyz_fails_and_requests_fail_fast() {
    let mut f = Fixture::start("127.0.0.52", "quorum");
    let ca = f.pki.ca_pem();
    let admin = (
        std::fs::read_to_string(f.pki.path("admin.crt")).expect("cert"),
        std::fs::read_to_string(f.pki.path("admin.key")).expect("key"),
    );
    let addr = f.addr();
    let get = |path: &'static str| {
        rt().block_on(https(
            addr,
            "127.0.0.52",
            &ca,
            Some((&admin.0, &admin.1)),
            None,
            path,
        ))
        .expect("request")
    };
    assert_eq!(get("/readyz"), (200, "ok".to_string()));
    assert_eq!(
        get("/api/v1/namespaces/kube-system/configmaps/kube-proxy").0,
        200
    );
    f.etcd.kill();
    let start = Instant::now();
    let (code, body) = get("/readyz");
    assert_eq!(code, 500);
    assert!(
        body.contains("[-]etcd failed") && body.contains("readyz check failed"),
        "{body}"
    );
    let (code, body) = get("/api/v1/namespaces/kube-system/configmaps/kube-proxy");
    assert_eq!(code, 500, "{body}");
    assert!(
        body.contains("127.0.0.52:2379"),
        "the error names etcd: {body}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "took {:?}",
        start.elapsed()
    );
    let out = f.kubectl(&["get", "configmap", "kube-proxy", "-n", "kube-system"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Error from server"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A second server on the same address cannot bind, and says where.
    let cfg = server_config(&f.pki, addr, "127.0.0.52", "apiserver");
    let err = rt()
        .block_on(apiserver::start(cfg))
        .err()
        .expect("address in use");
    assert!(err.to_string().contains("127.0.0.52:6443"), "{err}");
}

/// The managedFields of an object as kubectl shows them (`--show-managed-fields`).
fn managed_fields(f: &Fixture, name: &str) -> (Vec<Value>, String) {
    let cm = f.json(&[
        "get",
        "configmap",
        name,
        "-n",
        "default",
        "--show-managed-fields",
    ]);
    let rv = cm["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion")
        .to_owned();
    let mf = cm["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    (mf, rv)
}

fn entry<'a>(mf: &'a [Value], manager: &str) -> &'a Value {
    mf.iter()
        .find(|e| e["manager"] == manager)
        .unwrap_or_else(|| panic!("no {manager} entry in {mf:#?}"))
}

#[test]
fn managed_fields_name_who_changed_what_and_when() {
    let f = shared();
    // What `kubeadm init` uploads is seeded as kubeadm's.
    rt().block_on(apiserver::seed(
        &f.etcd.client,
        &[json!({"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "mf-kubeadm", "namespace": "default"},
                 "data": {"key": "value-one"}})],
    ))
    .expect("seed");
    let (mf, _) = managed_fields(&f, "mf-kubeadm");
    assert_eq!(mf.len(), 1, "{mf:#?}");
    let created = entry(&mf, "kubeadm").clone();
    assert_eq!(
        created,
        json!({"manager": "kubeadm", "operation": "Update", "apiVersion": "v1",
               "time": created["time"], "fieldsType": "FieldsV1",
               "fieldsV1": {"f:data": {".": {}, "f:key": {}}}})
    );
    let t0 = created["time"].as_str().expect("time").to_owned();
    assert!(
        t0.len() == 20 && t0.ends_with('Z') && t0.as_bytes()[10] == b'T',
        "{t0}"
    );
    // managedFields times have whole seconds: wait for the next one.
    std::thread::sleep(Duration::from_millis(1100));
    let out = f.kubectl_with(
        &f.kubeconfig,
        &["edit", "configmap", "mf-kubeadm", "-n", "default"],
        &[("KUBE_EDITOR", "sed -i s/value-one/value-edited/")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mf, rv) = managed_fields(&f, "mf-kubeadm");
    println!(
        "managedFields after kubeadm create + kubectl edit:\n{}",
        serde_json::to_string_pretty(&mf).expect("json")
    );
    assert_eq!(mf.len(), 2, "{mf:#?}");
    assert_eq!(entry(&mf, "kubeadm"), &created, "kubeadm's entry is kept");
    let edit = entry(&mf, "kubectl-edit").clone();
    assert_eq!(
        (&edit["operation"], &edit["fieldsV1"]),
        (&json!("Update"), &json!({"f:data": {"f:key": {}}}))
    );
    let t1 = edit["time"].as_str().expect("time").to_owned();
    assert!(t1 > t0, "{t1} after {t0}");
    assert_eq!(mf[0]["manager"], "kubeadm", "older entries first: {mf:#?}");

    // Replacing it with itself changes nothing: no new resourceVersion, no new time.
    std::thread::sleep(Duration::from_millis(1100));
    let current = f.json(&[
        "get",
        "configmap",
        "mf-kubeadm",
        "-n",
        "default",
        "--show-managed-fields",
    ]);
    let file = write_file(&f.dir, "mf-same.json", &current.to_string());
    f.ok(&["replace", "-f", &file.display().to_string()]);
    let (same, same_rv) = managed_fields(&f, "mf-kubeadm");
    assert_eq!(
        (&same, &same_rv),
        (&mf, &rv),
        "a no-op replace moved nothing"
    );

    // A replace that changes a value is kubectl-replace's, later still.
    let mut changed = current.clone();
    changed["data"]["other"] = json!("x");
    let file = write_file(&f.dir, "mf-changed.json", &changed.to_string());
    f.ok(&["replace", "-f", &file.display().to_string()]);
    let (mf, new_rv) = managed_fields(&f, "mf-kubeadm");
    assert_ne!(new_rv, rv);
    let replace = entry(&mf, "kubectl-replace");
    assert_eq!(replace["fieldsV1"], json!({"f:data": {"f:other": {}}}));
    assert!(replace["time"].as_str().expect("time") > t1.as_str());
    assert_eq!(entry(&mf, "kubectl-edit"), &edit);

    // kubectl create names itself; a client without fieldManager is named by its
    // User-Agent; kube-rs parses what the server wrote.
    f.ok(&[
        "create",
        "configmap",
        "mf-kubectl",
        "-n",
        "default",
        "--from-literal=a=1",
    ]);
    let (mf, _) = managed_fields(&f, "mf-kubectl");
    assert_eq!(
        entry(&mf, "kubectl-create")["fieldsV1"],
        json!({"f:data": {".": {}, "f:a": {}}})
    );
    rt().block_on(async {
        let client = f.kube_client().await;
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        let cm = cms.get("mf-kubeadm").await.expect("get");
        let mf = cm.metadata.managed_fields.expect("managedFields");
        let managers: Vec<(&str, &str)> = mf
            .iter()
            .map(|e| {
                (
                    e.manager.as_deref().unwrap_or(""),
                    e.operation.as_deref().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            managers,
            [
                ("kubeadm", "Update"),
                ("kubectl-edit", "Update"),
                ("kubectl-replace", "Update")
            ]
        );
        let edit = &mf[1];
        assert!(edit.time.is_some(), "a time kube-rs parsed");
        assert_eq!(
            edit.fields_v1.as_ref().map(|f| f.0.clone()),
            Some(json!({"f:data": {"f:key": {}}}))
        );
        let mut mine = cms.get("mf-kubectl").await.expect("get");
        mine.data = Some([("a".to_string(), "2".to_string())].into());
        let replaced = cms
            .replace("mf-kubectl", &PostParams::default(), &mine)
            .await
            .expect("replace");
        // kube-rs sends no User-Agent: its entry has no manager, as apimachinery omits an
        // empty one.
        let mf = replaced.metadata.managed_fields.expect("managedFields");
        let anonymous = mf
            .iter()
            .find(|e| e.manager.is_none())
            .unwrap_or_else(|| panic!("an entry without manager: {mf:#?}"));
        assert_eq!(
            anonymous.fields_v1.as_ref().map(|f| f.0.clone()),
            Some(json!({"f:data": {"f:a": {}}}))
        );
    });
}
