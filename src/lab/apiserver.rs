//! The simulated kube-apiserver: HTTPS with the node's serving certificate, objects in etcd,
//! client-certificate and bearer-token auth, enough REST for kubectl and kube-rs.
//!
//! What is real: the TLS (the node's `apiserver.crt`, re-read when it changes, client
//! certificates verified against `--client-ca-file`), the storage (JSON in etcd under
//! kube-apiserver's key layout, resourceVersion = etcd revision, so every API server of the
//! lab sees the same objects and none works without quorum), the Status bodies and messages
//! of errors. What is simple: authorization (fixed rules per group instead of RBAC objects),
//! patches (merge-patch semantics for strategic merge patch), no watch.

// Handlers return the error answer itself (a Response) as Err: boxing it buys nothing.
#[allow(clippy::result_large_err)]
mod auth;
mod discovery;
mod managed;
#[allow(clippy::result_large_err)]
mod rest;
mod time;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use yaml_rust2::{Yaml, YamlLoader};

use crate::kubeadm::KubeVersion;
use crate::lab::etcd::{EtcdClient, EtcdError};
use crate::lab::faults::FaultSet;
use crate::lab::{LabDir, LabNode};

pub use auth::User;

/// What a kube-apiserver is started with: the flags of its static pod, as host paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiServerConfig {
    /// `--advertise-address`:`--secure-port`.
    pub bind: SocketAddr,
    pub tls_cert_file: PathBuf,
    pub tls_private_key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
    /// `https://host:port`, with the node's `127.0.0.1` already translated.
    pub etcd_servers: Vec<String>,
    pub etcd_cafile: PathBuf,
    pub etcd_certfile: PathBuf,
    pub etcd_keyfile: PathBuf,
    /// Public (or private) keys that verify service-account tokens.
    pub service_account_key_files: Vec<PathBuf>,
    /// The private key TokenRequest signs with.
    pub service_account_signing_key_file: Option<PathBuf>,
    /// The first one is written into new tokens; all are accepted.
    pub service_account_issuers: Vec<String>,
    pub enable_bootstrap_token_auth: bool,
    /// What `/version` says.
    pub version: KubeVersion,
    /// `--etcd-compaction-interval` (5m by default, 0 off): without compaction etcd keeps every
    /// revision, and a lab left running grows until etcd's space quota stops it.
    pub etcd_compaction_interval: Duration,
}

/// kube-apiserver's default `--etcd-compaction-interval`.
const ETCD_COMPACTION_INTERVAL: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    #[error("failed to listen on {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("{what} {path}: {message}")]
    File {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("etcd client: {0}")]
    Etcd(#[from] EtcdError),
    #[error("TLS: {0}")]
    Tls(String),
}

fn flag_map(command: &[String]) -> Vec<(String, String)> {
    command
        .iter()
        .filter_map(|arg| {
            let flag = arg.strip_prefix("--")?;
            Some(match flag.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (flag.to_owned(), "true".to_owned()),
            })
        })
        .collect()
}

impl ApiServerConfig {
    /// A server with the given TLS, client CA and etcd, and no service-account keys.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        bind: SocketAddr,
        tls_cert_file: PathBuf,
        tls_private_key_file: PathBuf,
        client_ca_file: Option<PathBuf>,
        etcd_servers: Vec<String>,
        etcd_cafile: PathBuf,
        etcd_certfile: PathBuf,
        etcd_keyfile: PathBuf,
        version: KubeVersion,
    ) -> Self {
        ApiServerConfig {
            bind,
            tls_cert_file,
            tls_private_key_file,
            client_ca_file,
            etcd_servers,
            etcd_cafile,
            etcd_certfile,
            etcd_keyfile,
            service_account_key_files: Vec::new(),
            service_account_signing_key_file: None,
            service_account_issuers: vec!["https://kubernetes.default.svc.cluster.local".into()],
            enable_bootstrap_token_auth: true,
            version,
            etcd_compaction_interval: ETCD_COMPACTION_INTERVAL,
        }
    }

    /// Reads the flags of the node's kube-apiserver static pod manifest.
    pub fn from_manifest(
        lab: &LabDir,
        node: &LabNode,
        version: KubeVersion,
        manifest_yaml: &str,
    ) -> Result<ApiServerConfig, String> {
        let docs = YamlLoader::load_from_str(manifest_yaml)
            .map_err(|e| format!("kube-apiserver manifest: {e}"))?;
        let doc = docs.first().ok_or("kube-apiserver manifest is empty")?;
        let containers = doc["spec"]["containers"]
            .as_vec()
            .ok_or("kube-apiserver manifest has no spec.containers")?;
        let container = containers
            .iter()
            .find(|c| c["name"].as_str() == Some("kube-apiserver"))
            .or(containers.first())
            .ok_or("kube-apiserver manifest has no container")?;
        let mut command: Vec<String> = Vec::new();
        for key in ["command", "args"] {
            if let Some(items) = container[key].as_vec() {
                command.extend(items.iter().filter_map(|i| i.as_str().map(str::to_owned)));
            }
        }
        let flags = flag_map(&command);
        let get = |k: &str| {
            flags
                .iter()
                .rev()
                .find(|(f, _)| f == k)
                .map(|(_, v)| v.clone())
        };
        let all = |k: &str| -> Vec<String> {
            flags
                .iter()
                .filter(|(f, _)| f == k)
                .flat_map(|(_, v)| v.split(',').map(str::to_owned).collect::<Vec<_>>())
                .filter(|v| !v.is_empty())
                .collect()
        };
        let need = |k: &str| get(k).ok_or_else(|| format!("kube-apiserver manifest has no --{k}"));
        let path = |p: String| lab.node_path(&node.name, &p);
        let address = get("advertise-address")
            .map(|a| {
                a.parse()
                    .map_err(|_| format!("invalid --advertise-address {a:?}"))
            })
            .transpose()?
            .unwrap_or(node.address);
        let port: u16 = get("secure-port")
            .unwrap_or_else(|| "6443".into())
            .parse()
            .map_err(|_| "invalid --secure-port".to_string())?;
        let etcd_servers = all("etcd-servers")
            .into_iter()
            .map(|u| crate::lab::node_loopback(&u, node.address))
            .collect::<Vec<_>>();
        if etcd_servers.is_empty() {
            return Err("kube-apiserver manifest has no --etcd-servers".into());
        }
        let mut issuers = all("service-account-issuer");
        if issuers.is_empty() {
            issuers.push("https://kubernetes.default.svc.cluster.local".into());
        }
        Ok(ApiServerConfig {
            bind: SocketAddr::new(address, port),
            tls_cert_file: path(need("tls-cert-file")?),
            tls_private_key_file: path(need("tls-private-key-file")?),
            client_ca_file: get("client-ca-file").map(path),
            etcd_servers,
            etcd_cafile: path(need("etcd-cafile")?),
            etcd_certfile: path(need("etcd-certfile")?),
            etcd_keyfile: path(need("etcd-keyfile")?),
            service_account_key_files: all("service-account-key-file")
                .into_iter()
                .map(path)
                .collect(),
            service_account_signing_key_file: get("service-account-signing-key-file").map(path),
            service_account_issuers: issuers,
            enable_bootstrap_token_auth: get("enable-bootstrap-token-auth").as_deref()
                == Some("true"),
            version,
            etcd_compaction_interval: match get("etcd-compaction-interval") {
                Some(text) => crate::lab::kubeadm::token::parse_go_duration(&text)
                    .map_err(|e| format!("invalid --etcd-compaction-interval: {e}"))?,
                None => ETCD_COMPACTION_INTERVAL,
            },
        })
    }
}

fn read_file(what: &'static str, path: &Path) -> Result<String, ApiServerError> {
    std::fs::read_to_string(path).map_err(|e| ApiServerError::File {
        what,
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// The serving certificate, re-read when either file's mtime changes (on each handshake).
#[derive(Debug)]
struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: Mutex<(Option<SystemTime>, Option<SystemTime>, Arc<CertifiedKey>)>,
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn load_certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, ApiServerError> {
    let tls = |path: &Path, e: String| ApiServerError::File {
        what: "serving certificate",
        path: path.to_owned(),
        message: e,
    };
    let certs = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| tls(cert_file, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls(cert_file, e.to_string()))?;
    if certs.is_empty() {
        return Err(tls(cert_file, "no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| tls(key_file, e.to_string()))?;
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| tls(key_file, e.to_string()))?;
    Ok(CertifiedKey::new(certs, signing))
}

impl ReloadingCert {
    fn new(cert_file: PathBuf, key_file: PathBuf) -> Result<Self, ApiServerError> {
        let (mc, mk) = (mtime(&cert_file), mtime(&key_file));
        let key = load_certified_key(&cert_file, &key_file)?;
        Ok(ReloadingCert {
            cert_file,
            key_file,
            current: Mutex::new((mc, mk, Arc::new(key))),
        })
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().ok()?;
        let (mc, mk) = (mtime(&self.cert_file), mtime(&self.key_file));
        if (mc, mk) != (current.0, current.1) {
            // A half-written pair (cert new, key old) fails to load: keep serving the old
            // one and try again on the next handshake, as kube-apiserver does.
            if let Ok(key) = load_certified_key(&self.cert_file, &self.key_file)
                && key.keys_match().is_ok()
            {
                *current = (mc, mk, Arc::new(key));
            }
        }
        Some(current.2.clone())
    }
}

/// The lab's faults as one node's API server sees them (`hactl lab fault`, issue 4).
#[derive(Clone, Debug, Default)]
pub struct LabHooks {
    /// The lab's active faults and this server's node: `api-conflicts` is read from here
    /// at each write.
    pub faults: Option<(FaultSet, String)>,
    /// `slow-component`: `/readyz` (and `/healthz`) fail for this long after the start.
    pub ready_delay: Duration,
}

/// Everything a request handler needs.
pub(crate) struct State {
    pub(crate) config: ApiServerConfig,
    pub(crate) etcd: EtcdClient,
    pub(crate) tokens: auth::TokenKeys,
    pub(crate) hooks: LabHooks,
    pub(crate) started: Instant,
}

impl State {
    /// Whether this write must answer 409 (`api-conflicts`). The lab's own components
    /// (kubelet, kube-proxy, controller-manager, scheduler) renew leases every second and
    /// would use the conflicts up before any operator's write; they are not counted.
    pub(crate) fn take_conflict(&self, user: &User) -> bool {
        let Some((faults, node)) = &self.hooks.faults else {
            return false;
        };
        let component = user.name.starts_with("system:node:")
            || matches!(
                user.name.as_str(),
                "system:kube-controller-manager"
                    | "system:kube-scheduler"
                    | "system:kube-proxy"
                    | "system:serviceaccount:kube-system:kube-proxy"
            );
        !component && faults.take_conflict(node)
    }

    /// Whether the server is still "starting" (`slow-component`).
    pub(crate) fn still_starting(&self) -> bool {
        self.started.elapsed() < self.hooks.ready_delay
    }
}

/// A running API server; `stop` ends it.
pub struct ApiServer {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ApiServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the listener and every open connection.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

pub async fn start(config: ApiServerConfig) -> Result<ApiServer, ApiServerError> {
    start_with(config, LabHooks::default()).await
}

/// `start`, with the lab's fault hooks of the node the server runs on.
pub async fn start_with(
    config: ApiServerConfig,
    hooks: LabHooks,
) -> Result<ApiServer, ApiServerError> {
    crate::lab::install_crypto_provider();
    let etcd = EtcdClient::new(
        config.etcd_servers.clone(),
        &read_file("etcd CA", &config.etcd_cafile)?,
        &read_file("etcd client certificate", &config.etcd_certfile)?,
        &read_file("etcd client key", &config.etcd_keyfile)?,
    )?
    .with_timeout(std::time::Duration::from_secs(3));
    let tokens = auth::TokenKeys::load(&config)?;
    let resolver = Arc::new(ReloadingCert::new(
        config.tls_cert_file.clone(),
        config.tls_private_key_file.clone(),
    )?);
    let builder = rustls::ServerConfig::builder();
    let builder = match &config.client_ca_file {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let pem = read_file("client CA", ca)?;
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| ApiServerError::Tls(format!("client CA: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| ApiServerError::Tls(format!("client CA: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .allow_unauthenticated()
                .build()
                .map_err(|e| ApiServerError::Tls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut tls = builder.with_cert_resolver(resolver);
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind(config.bind)
        .await
        .map_err(|source| ApiServerError::Bind {
            addr: config.bind,
            error: source,
        })?;
    let addr = listener.local_addr().unwrap_or(config.bind);
    let state = Arc::new(State {
        config,
        etcd,
        tokens,
        hooks,
        started: Instant::now(),
    });
    let (shutdown, mut stopped) = watch::channel(false);
    let interval = state.config.etcd_compaction_interval;
    let compactor =
        (!interval.is_zero()).then(|| tokio::spawn(compact_every(state.etcd.clone(), interval)));
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                accepted = listener.accept() => {
                    let Ok((tcp, peer)) = accepted else { continue };
                    let acceptor = acceptor.clone();
                    let state = state.clone();
                    connections.spawn(serve_connection(acceptor, tcp, peer, state));
                }
                // Reap finished connections so the set does not grow.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        // Dropping the listener closes it; aborting the tasks closes the connections.
        drop(listener);
        if let Some(compactor) = compactor {
            compactor.abort();
        }
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    });
    Ok(ApiServer {
        addr,
        shutdown,
        task,
    })
}

/// Compacts etcd as kube-apiserver's compactor does: every `interval`, to the revision the
/// previous interval saw, so that about one interval of history stays. A failed round (etcd
/// down, or another API server compacted first) waits for the next, as kube-apiserver's does.
async fn compact_every(etcd: EtcdClient, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // tokio's first tick is immediate: skipped, so the first revision is taken one interval
    // in and the first compaction comes at two, as kube-apiserver's.
    ticks.tick().await;
    let mut previous = None;
    loop {
        ticks.tick().await;
        let Ok(now) = etcd.revision().await else {
            continue;
        };
        if let Some(revision) = previous {
            let _ = etcd.compact(revision).await;
        }
        previous = Some(now);
    }
}

async fn serve_connection(
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    _peer: SocketAddr,
    state: Arc<State>,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp))
        .await
    {
        Ok(Ok(tls)) => tls,
        // A failed handshake is the client's to report (x509 errors show up there).
        _ => return,
    };
    let cert_user = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| auth::user_from_cert(c.as_ref()));
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let state = state.clone();
        let cert_user = cert_user.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = match body.collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => Bytes::new(),
            };
            let resp = handle(&state, cert_user, Request::from_parts(parts, body)).await;
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let _ = builder
        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
        .await;
}

pub(crate) type Resp = Response<Full<Bytes>>;

pub(crate) fn json_response(code: u16, body: &Value) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or_default();
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

pub(crate) fn text_response(code: u16, body: String) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or_default();
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

async fn handle(state: &State, cert_user: Option<User>, req: Request<Bytes>) -> Resp {
    let user = match auth::authenticate(state, cert_user, req.headers()).await {
        Ok(user) => user,
        Err(resp) => return resp,
    };
    let path = req.uri().path().to_owned();
    let query = rest::Query::parse(req.uri().query().unwrap_or(""));
    match path.as_str() {
        "/healthz" | "/livez" | "/readyz" => {
            if let Err(resp) = auth::authorize_path(&user, req.method(), &path) {
                return resp;
            }
            return health(state, &path, &query).await;
        }
        _ => {}
    }
    if let Some(resp) = discovery::handle(state, &user, req.method(), &path, req.headers()) {
        return resp;
    }
    rest::handle(state, &user, req, &query).await
}

async fn health(state: &State, path: &str, query: &rest::Query) -> Resp {
    let name = path.trim_start_matches('/');
    // livez does not depend on etcd in kube-apiserver either; readyz and healthz do.
    let etcd_ok = if name == "livez" {
        true
    } else {
        state.etcd.get("/registry/health").await.is_ok()
    };
    // `slow-component`: the post-start hooks of a slow start have not finished yet.
    let starting = name != "livez" && state.still_starting();
    let verbose = query.get("verbose").is_some();
    let checks = [
        "ping",
        "log",
        "etcd",
        "poststarthook/start-apiserver-admission-initializer",
        "poststarthook/rbac/bootstrap-roles",
        "poststarthook/scheduling/bootstrap-system-priority-classes",
    ];
    let slow_hooks = &checks[4..];
    if etcd_ok && !starting && !verbose {
        return text_response(200, "ok".into());
    }
    let mut out = String::new();
    for c in checks {
        if (c == "etcd" && !etcd_ok) || (starting && slow_hooks.contains(&c)) {
            out.push_str(&format!("[-]{c} failed: reason withheld\n"));
        } else {
            out.push_str(&format!("[+]{c} ok\n"));
        }
    }
    if etcd_ok && !starting {
        out.push_str(&format!("{name} check passed\n"));
        text_response(200, out)
    } else {
        out.push_str(&format!("{name} check failed\n"));
        text_response(500, out)
    }
}

/// YAML (or JSON, which is YAML) as JSON, for server-side apply bodies.
pub(crate) fn yaml_to_json(text: &str) -> Result<Value, String> {
    if let Ok(v) = serde_json::from_str(text) {
        return Ok(v);
    }
    let docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    fn conv(y: &Yaml) -> Value {
        match y {
            Yaml::Real(s) => s
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(s.clone())),
            Yaml::Integer(i) => Value::from(*i),
            Yaml::String(s) => Value::String(s.clone()),
            Yaml::Boolean(b) => Value::Bool(*b),
            Yaml::Array(a) => Value::Array(a.iter().map(conv).collect()),
            Yaml::Hash(h) => Value::Object(
                h.iter()
                    .map(|(k, v)| {
                        let key = match k {
                            Yaml::String(s) => s.clone(),
                            Yaml::Integer(i) => i.to_string(),
                            Yaml::Boolean(b) => b.to_string(),
                            other => format!("{other:?}"),
                        };
                        (key, conv(v))
                    })
                    .collect(),
            ),
            _ => Value::Null,
        }
    }
    docs.first()
        .map(conv)
        .ok_or_else(|| "empty document".to_string())
}

/// Creates the namespaces every cluster has (as kube-apiserver does, its manager in
/// managedFields) and each given object (as `kubeadm init` uploads them), where absent.
pub async fn seed(etcd: &EtcdClient, objects: &[Value]) -> Result<(), String> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj =
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        rest::seed_object(etcd, obj, "kube-apiserver").await?;
    }
    for obj in objects {
        rest::seed_object(etcd, obj.clone(), "kubeadm").await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: kube-apiserver
  namespace: kube-system
spec:
  containers:
  - command:
    - kube-apiserver
    - --advertise-address=127.0.0.11
    - --client-ca-file=/etc/kubernetes/pki/ca.crt
    - --enable-bootstrap-token-auth=true
    - --etcd-cafile=/etc/kubernetes/pki/etcd/ca.crt
    - --etcd-certfile=/etc/kubernetes/pki/apiserver-etcd-client.crt
    - --etcd-keyfile=/etc/kubernetes/pki/apiserver-etcd-client.key
    - --etcd-servers=https://127.0.0.1:2379
    - --secure-port=6443
    - --service-account-issuer=https://kubernetes.default.svc.cluster.local
    - --service-account-key-file=/etc/kubernetes/pki/sa.pub
    - --service-account-signing-key-file=/etc/kubernetes/pki/sa.key
    - --tls-cert-file=/etc/kubernetes/pki/apiserver.crt
    - --tls-private-key-file=/etc/kubernetes/pki/apiserver.key
    image: registry.k8s.io/kube-apiserver:v1.31.14
    name: kube-apiserver
"#;

    #[test]
    fn manifest_flags_become_host_paths_and_node_addresses() {
        let lab = LabDir::new("/tmp/lab");
        let node = LabNode {
            name: "cp1".into(),
            address: "127.0.0.11".parse().expect("literal"),
            control_plane: true,
        };
        let v = KubeVersion::new(1, 31, 14);
        let c = ApiServerConfig::from_manifest(&lab, &node, v, MANIFEST).expect("parses");
        assert_eq!(c.bind, "127.0.0.11:6443".parse().expect("literal"));
        assert_eq!(c.etcd_servers, vec!["https://127.0.0.11:2379".to_string()]);
        assert_eq!(
            c.tls_cert_file,
            PathBuf::from("/tmp/lab/nodes/cp1/etc/kubernetes/pki/apiserver.crt")
        );
        assert_eq!(
            c.service_account_key_files,
            vec![PathBuf::from(
                "/tmp/lab/nodes/cp1/etc/kubernetes/pki/sa.pub"
            )]
        );
        assert!(c.enable_bootstrap_token_auth);
        assert_eq!(
            c.service_account_issuers,
            vec!["https://kubernetes.default.svc.cluster.local".to_string()]
        );
    }

    #[test]
    fn a_manifest_without_etcd_is_refused() {
        let lab = LabDir::new("/tmp/lab");
        let node = LabNode {
            name: "cp1".into(),
            address: "127.0.0.11".parse().expect("literal"),
            control_plane: true,
        };
        let text = MANIFEST.replace("    - --etcd-servers=https://127.0.0.1:2379\n", "");
        let err = ApiServerConfig::from_manifest(&lab, &node, KubeVersion::new(1, 31, 0), &text)
            .unwrap_err();
        assert!(err.contains("--etcd-servers"), "{err}");
    }

    #[test]
    fn apply_bodies_may_be_yaml() {
        let v = yaml_to_json("a: 1\nb: [x, true]\nc: {d: null}\n").expect("yaml");
        assert_eq!(
            v,
            serde_json::json!({"a": 1, "b": ["x", true], "c": {"d": null}})
        );
    }
}
