//! A Kubernetes REST client that behaves like client-go: kubeconfig loading, host names through
//! the node's `/etc/hosts`, TLS verifying the server name, and errors rendered exactly as Go
//! prints them (`Get "https://…": tls: failed to verify certificate: x509: …`), because
//! `lab status` shows them and tests match them.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpSocket;
use yaml_rust2::{Yaml, YamlLoader};

use crate::lab::{LabDir, LabNode};
use crate::tls_verify::{GoVerifier, go_tls_error};

/// How a client proves who it is.
#[derive(Clone)]
pub enum ClientAuth {
    Cert { cert_pem: String, key_pem: String },
    Token(String),
    None,
}

impl std::fmt::Debug for ClientAuth {
    // Never print keys or tokens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientAuth::Cert { .. } => f.write_str("Cert(<redacted>)"),
            ClientAuth::Token(_) => f.write_str("Token(<redacted>)"),
            ClientAuth::None => f.write_str("None"),
        }
    }
}

/// Name resolution as a node does it: its own `/etc/hosts`, then (in the lab) nothing.
#[derive(Clone, Debug)]
pub struct Resolver {
    hosts_file: Option<PathBuf>,
    /// The node's address: its `127.0.0.1`, and the source of its connections.
    node_address: Option<IpAddr>,
    /// What Go names in `lookup NAME on NS: no such host`.
    nameserver: String,
}

impl Resolver {
    /// IP literals only (and `localhost`); names fail as unknown hosts.
    pub fn direct() -> Self {
        Resolver {
            hosts_file: None,
            node_address: None,
            nameserver: host_nameserver(),
        }
    }

    /// Resolves through the node's `/etc/hosts` and dials from the node's address.
    pub fn for_node(lab: &LabDir, node: &LabNode) -> Self {
        Resolver {
            hosts_file: Some(lab.node_path(&node.name, "/etc/hosts")),
            node_address: Some(node.address),
            nameserver: host_nameserver(),
        }
    }

    pub fn with_hosts_file(hosts_file: PathBuf, node_address: Option<IpAddr>) -> Self {
        Resolver {
            hosts_file: Some(hosts_file),
            node_address,
            nameserver: host_nameserver(),
        }
    }

    /// The address as the node sees it (what Go prints), or Go's lookup error.
    fn resolve(&self, host: &str) -> Result<IpAddr, String> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(ip);
        }
        if let Some(path) = &self.hosts_file
            && let Ok(text) = std::fs::read_to_string(path)
        {
            for line in text.lines() {
                let line = line.split('#').next().unwrap_or("");
                let mut fields = line.split_whitespace();
                let Some(addr) = fields.next().and_then(|a| a.parse::<IpAddr>().ok()) else {
                    continue;
                };
                if fields.any(|n| n.eq_ignore_ascii_case(host)) {
                    return Ok(addr);
                }
            }
        }
        if host.eq_ignore_ascii_case("localhost") {
            return Ok(IpAddr::from([127, 0, 0, 1]));
        }
        Err(format!(
            "dial tcp: lookup {host} on {}: no such host",
            self.nameserver
        ))
    }

    /// Where to really connect: the node's `127.0.0.1` is its own address in the lab.
    fn dial_target(&self, ip: IpAddr) -> IpAddr {
        match (ip, self.node_address) {
            (IpAddr::V4(v4), Some(own)) if v4.is_loopback() && v4.octets() == [127, 0, 0, 1] => own,
            _ => ip,
        }
    }
}

fn host_nameserver() -> String {
    let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    conf.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .map(|a| a.trim().to_string())
        .find(|a| !a.is_empty())
        .map(|a| {
            if a.contains(':') {
                format!("[{a}]:53")
            } else {
                format!("{a}:53")
            }
        })
        .unwrap_or_else(|| "127.0.0.53:53".to_string())
}

/// What failed, for callers that react differently to TLS and connection errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Name resolution or TCP connect.
    Dial,
    /// The TLS handshake (certificate verification included).
    Tls,
    Timeout,
    /// The connection broke after it was made.
    Transport,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig or its files could not be used, worded as client-go words it.
    #[error("{0}")]
    Config(String),
    /// A request failed before an HTTP response: Go's `*url.Error`.
    #[error("{verb} \"{url}\": {detail}")]
    Request {
        verb: String,
        url: String,
        kind: FailureKind,
        detail: String,
    },
}

impl ClientError {
    pub fn kind(&self) -> Option<FailureKind> {
        match self {
            ClientError::Config(_) => None,
            ClientError::Request { kind, .. } => Some(*kind),
        }
    }
}

/// An HTTP response: status and body, as the server sent them.
#[derive(Clone, Debug)]
pub struct ApiResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

impl ApiResponse {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("invalid JSON from server: {e}"))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The `message` of a `Status` body, as client-go shows API errors.
    pub fn status_message(&self) -> String {
        self.json()
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
            .unwrap_or_else(|| format!("the server responded with status {}", self.status))
    }
}

/// Content types of PATCH, as kubectl names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Strategic,
    Json,
    Apply,
}

impl PatchType {
    fn content_type(self) -> &'static str {
        match self {
            PatchType::Merge => "application/merge-patch+json",
            PatchType::Strategic => "application/strategic-merge-patch+json",
            PatchType::Json => "application/json-patch+json",
            PatchType::Apply => "application/apply-patch+yaml",
        }
    }
}

/// A connection to one API server, as one component holds it.
pub struct ApiClient {
    server: String,
    host: String,
    port: u16,
    auth_header: Option<String>,
    tls: Arc<rustls::ClientConfig>,
    resolver: Resolver,
    timeout: Duration,
    user_agent: String,
    conn: tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// A client for `server_url` (`https://host:port`) trusting `ca_pem`.
    pub fn new(
        server_url: &str,
        ca_pem: &[u8],
        auth: ClientAuth,
        resolver: Resolver,
    ) -> Result<ApiClient, ClientError> {
        crate::lab::install_crypto_provider();
        let server = server_url.trim_end_matches('/').to_string();
        let (host, port) = split_server(&server)?;
        let verifier = Arc::new(GoVerifier::from_ca_pem(ca_pem).map_err(ClientError::Config)?);
        let builder = rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let (tls, auth_header) = match auth {
            ClientAuth::Cert { cert_pem, key_pem } => {
                let certs: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                        .filter_map(Result::ok)
                        .collect();
                if certs.is_empty() {
                    return Err(ClientError::Config(
                        "tls: failed to find any PEM data in certificate input".into(),
                    ));
                }
                let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| {
                    ClientError::Config("tls: failed to find any PEM data in key input".into())
                })?;
                let cfg = builder.with_client_auth_cert(certs, key).map_err(|_| {
                    ClientError::Config("tls: private key does not match public key".into())
                })?;
                (cfg, None)
            }
            ClientAuth::Token(t) => (builder.with_no_client_auth(), Some(format!("Bearer {t}"))),
            ClientAuth::None => (builder.with_no_client_auth(), None),
        };
        Ok(ApiClient::with_tls(
            server,
            host,
            port,
            auth_header,
            tls,
            resolver,
        ))
    }

    fn with_tls(
        server: String,
        host: String,
        port: u16,
        auth_header: Option<String>,
        tls: rustls::ClientConfig,
        resolver: Resolver,
    ) -> ApiClient {
        ApiClient {
            server,
            host,
            port,
            auth_header,
            tls: Arc::new(tls),
            resolver,
            timeout: Duration::from_secs(10),
            user_agent: "hactl-lab".into(),
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// A client that does not verify the server's certificate: kubeadm's discovery reads
    /// cluster-info this way (`insecure-skip-tls-verify`) before it trusts any CA.
    pub fn new_insecure(
        server_url: &str,
        auth: ClientAuth,
        resolver: Resolver,
    ) -> Result<ApiClient, ClientError> {
        crate::lab::install_crypto_provider();
        let server = server_url.trim_end_matches('/').to_string();
        let (host, port) = split_server(&server)?;
        let provider = rustls::crypto::CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        let builder = rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SkipVerify(provider)));
        let (tls, auth_header) = match auth {
            ClientAuth::Token(t) => (builder.with_no_client_auth(), Some(format!("Bearer {t}"))),
            _ => (builder.with_no_client_auth(), None),
        };
        Ok(ApiClient::with_tls(
            server,
            host,
            port,
            auth_header,
            tls,
            resolver,
        ))
    }

    /// Loads the node's kubeconfig at `kubeconfig_node_path` (a path on the node) the way
    /// client-go does: current context, its cluster and user; file paths in it are node paths,
    /// relative ones relative to the kubeconfig's folder.
    pub fn from_kubeconfig(
        lab: &LabDir,
        node: &LabNode,
        kubeconfig_node_path: &str,
    ) -> Result<ApiClient, ClientError> {
        let kc = Kubeconfig::load(lab, node, kubeconfig_node_path)?;
        ApiClient::new(
            &kc.server,
            &kc.ca_pem,
            kc.auth,
            Resolver::for_node(lab, node),
        )
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A Kubernetes component's User-Agent (client-go's default: `kubelet/v1.31.14
    /// (linux/amd64) kubernetes/<commit>`); the API server names the component's
    /// managedFields entries after its first word.
    pub fn with_component(self, component: &str, version: crate::kubeadm::KubeVersion) -> Self {
        self.with_user_agent(format!(
            "{component}/{version} (linux/amd64) kubernetes/lab"
        ))
    }

    pub fn with_user_agent(mut self, ua: impl Into<String>) -> Self {
        self.user_agent = ua.into();
        self
    }

    /// `https://host:port`, as written in the kubeconfig.
    pub fn server(&self) -> &str {
        &self.server
    }

    pub async fn get(&self, path: &str) -> Result<ApiResponse, ClientError> {
        self.request("GET", path, None, None).await
    }
    pub async fn list(&self, path: &str) -> Result<ApiResponse, ClientError> {
        self.request("GET", path, None, None).await
    }
    pub async fn create(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<ApiResponse, ClientError> {
        self.request(
            "POST",
            path,
            Some("application/json"),
            Some(body.to_string()),
        )
        .await
    }
    pub async fn update(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<ApiResponse, ClientError> {
        self.request(
            "PUT",
            path,
            Some("application/json"),
            Some(body.to_string()),
        )
        .await
    }
    pub async fn patch(
        &self,
        path: &str,
        patch: PatchType,
        body: &serde_json::Value,
    ) -> Result<ApiResponse, ClientError> {
        self.request(
            "PATCH",
            path,
            Some(patch.content_type()),
            Some(body.to_string()),
        )
        .await
    }
    pub async fn delete(&self, path: &str) -> Result<ApiResponse, ClientError> {
        self.request("DELETE", path, None, None).await
    }

    /// One request; `path` starts with `/` and may carry a query.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<String>,
    ) -> Result<ApiResponse, ClientError> {
        let url = format!("{}{}", self.server, path);
        let verb = go_verb(method);
        let fail = |kind: FailureKind, detail: String| ClientError::Request {
            verb: verb.clone(),
            url: url.clone(),
            kind,
            detail,
        };
        let attempt = async {
            // A kept-alive connection the server closed is retried once on a fresh one, as
            // Go's transport does.
            for fresh in [false, true] {
                let mut guard = self.conn.lock().await;
                let reuse = !fresh && guard.as_ref().is_some_and(|s| !s.is_closed());
                if !reuse {
                    *guard = Some(self.connect().await?);
                }
                let sender = guard.as_mut().expect("connection was just set");
                if sender.ready().await.is_err() {
                    *guard = None;
                    if reuse {
                        continue;
                    }
                    return Err((FailureKind::Transport, "EOF".to_string()));
                }
                let mut req = hyper::Request::builder()
                    .method(method)
                    .uri(path)
                    .header("host", self.authority())
                    .header("accept", "application/json, */*")
                    .header("user-agent", &self.user_agent);
                if let Some(ct) = content_type {
                    req = req.header("content-type", ct);
                }
                if let Some(auth) = &self.auth_header {
                    req = req.header("authorization", auth);
                }
                let req = req
                    .body(Full::new(Bytes::from(body.clone().unwrap_or_default())))
                    .map_err(|e| (FailureKind::Transport, e.to_string()))?;
                match sender.send_request(req).await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let body = resp
                            .into_body()
                            .collect()
                            .await
                            .map_err(|e| (FailureKind::Transport, transport_detail(&e)))?
                            .to_bytes()
                            .to_vec();
                        return Ok(ApiResponse { status, body });
                    }
                    Err(e) => {
                        *guard = None;
                        if reuse {
                            continue;
                        }
                        return Err((FailureKind::Transport, transport_detail(&e)));
                    }
                }
            }
            Err((FailureKind::Transport, "EOF".to_string()))
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err((kind, detail))) => Err(fail(kind, detail)),
            Err(_) => {
                *self.conn.lock().await = None;
                Err(fail(
                    FailureKind::Timeout,
                    "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
                        .into(),
                ))
            }
        }
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, (FailureKind, String)> {
        let ip = self
            .resolver
            .resolve(&self.host)
            .map_err(|e| (FailureKind::Dial, e))?;
        let shown = SocketAddr::new(ip, self.port);
        let target = SocketAddr::new(self.resolver.dial_target(ip), self.port);
        let socket = if target.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| {
            (
                FailureKind::Dial,
                format!("dial tcp {shown}: {}", os_text(&e)),
            )
        })?;
        if let Some(own) = self.resolver.node_address
            && own.is_ipv4() == target.is_ipv4()
        {
            // The node's connections come from the node's address, as on a real network.
            let _ = socket.bind(SocketAddr::new(own, 0));
        }
        let stream = socket.connect(target).await.map_err(|e| {
            (
                FailureKind::Dial,
                format!("dial tcp {shown}: connect: {}", os_text(&e)),
            )
        })?;
        let local = stream.local_addr().ok();
        let name = match self.host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(self.host.clone()).map_err(|_| {
                (
                    FailureKind::Dial,
                    format!("dial tcp: lookup {}: invalid domain name", self.host),
                )
            })?,
        };
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        let tls = connector
            .connect(name, stream)
            .await
            .map_err(|e| (FailureKind::Tls, tls_detail(&e, local, shown)))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| (FailureKind::Transport, transport_detail(&e)))?;
        tokio::spawn(async move {
            // Ends when the server closes or the sender is dropped.
            let _ = conn.await;
        });
        Ok(sender)
    }
}

fn go_verb(method: &str) -> String {
    // Go's url.Error Op: the method with only its first letter upper-case.
    let lower = method.to_ascii_lowercase();
    let mut chars = lower.chars();
    match chars.next() {
        Some(c) => c.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// `connection refused`: Go's syscall error text, lower-case without the errno.
pub fn os_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    };
    s.to_lowercase()
}

fn transport_detail(e: &hyper::Error) -> String {
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        return "EOF".into();
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::UnexpectedEof {
                return "EOF".into();
            }
            return os_text(io);
        }
        src = s.source();
    }
    e.to_string()
}

fn tls_detail(e: &std::io::Error, local: Option<SocketAddr>, remote: SocketAddr) -> String {
    if let Some(inner) = e.get_ref()
        && let Some(rerr) = inner.downcast_ref::<rustls::Error>()
    {
        return go_tls_error(rerr);
    }
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => "EOF".into(),
        std::io::ErrorKind::ConnectionReset => match local {
            Some(l) => format!("read tcp {l}->{remote}: read: connection reset by peer"),
            None => "connection reset by peer".into(),
        },
        _ => os_text(e),
    }
}

fn split_server(server: &str) -> Result<(String, u16), ClientError> {
    let rest = server.strip_prefix("https://").ok_or_else(|| {
        ClientError::Config(format!(
            "server {server:?} is not https: the lab's API servers only speak TLS"
        ))
    })?;
    let authority = rest.split('/').next().unwrap_or("");
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6
            .split_once(']')
            .ok_or_else(|| ClientError::Config(format!("invalid server URL {server:?}")))?;
        (h.to_string(), p.strip_prefix(':').unwrap_or(""))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (authority.to_string(), ""),
        }
    };
    let port = if port.is_empty() {
        443
    } else {
        port.parse()
            .map_err(|_| ClientError::Config(format!("invalid server URL {server:?}")))?
    };
    if host.is_empty() {
        return Err(ClientError::Config(format!(
            "invalid server URL {server:?}"
        )));
    }
    Ok((host, port))
}

/// A kubeconfig's current context, resolved to what a client needs.
#[derive(Clone, Debug)]
pub struct Kubeconfig {
    pub server: String,
    pub ca_pem: Vec<u8>,
    pub auth: ClientAuth,
}

impl Kubeconfig {
    pub fn load(lab: &LabDir, node: &LabNode, path: &str) -> Result<Kubeconfig, ClientError> {
        let host_path = lab.node_path(&node.name, path);
        let text = std::fs::read_to_string(&host_path)
            .map_err(|e| ClientError::Config(format!("open {path}: {}", os_text(&e))))?;
        let base = Path::new(path).parent().unwrap_or(Path::new("/"));
        let read = |p: &str| -> Result<Vec<u8>, String> {
            let abs = if p.starts_with('/') {
                PathBuf::from(p)
            } else {
                base.join(p)
            };
            let abs_s = abs.to_string_lossy().into_owned();
            std::fs::read(lab.node_path(&node.name, &abs_s))
                .map_err(|e| format!("open {abs_s}: {}", os_text(&e)))
        };
        Kubeconfig::parse(&text, path, read)
    }

    /// `read` reads a file named in the kubeconfig (a node path).
    pub fn parse(
        text: &str,
        path: &str,
        read: impl Fn(&str) -> Result<Vec<u8>, String>,
    ) -> Result<Kubeconfig, ClientError> {
        let invalid = |msg: String| ClientError::Config(format!("invalid configuration: {msg}"));
        let docs = YamlLoader::load_from_str(text).map_err(|e| {
            ClientError::Config(format!("error loading config file \"{path}\": {e}"))
        })?;
        let doc = docs.first().cloned().unwrap_or(Yaml::Null);
        let current = doc["current-context"].as_str().unwrap_or("");
        if current.is_empty() {
            return Err(invalid("no configuration has been provided".into()));
        }
        let named = |list: &str, name: &str, field: &str| -> Option<Yaml> {
            doc[list]
                .as_vec()?
                .iter()
                .find(|e| e["name"].as_str() == Some(name))
                .map(|e| e[field].clone())
        };
        let ctx = named("contexts", current, "context").ok_or_else(|| {
            invalid(format!(
                "context was not found for specified context: {current}"
            ))
        })?;
        let cluster_name = ctx["cluster"].as_str().unwrap_or("");
        let user_name = ctx["user"].as_str().unwrap_or("");
        let cluster = named("clusters", cluster_name, "cluster").ok_or_else(|| {
            invalid(format!(
                "cluster has no server defined\ncluster {cluster_name:?} was not found"
            ))
        })?;
        let server = cluster["server"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("cluster has no server defined".into()))?
            .to_string();
        let b64 = |s: &str, what: &str| -> Result<Vec<u8>, ClientError> {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .map_err(|e| ClientError::Config(format!("illegal base64 data in {what}: {e}")))
        };
        let ca_pem = if let Some(d) = cluster["certificate-authority-data"].as_str() {
            b64(d, "certificate-authority-data")?
        } else if let Some(f) = cluster["certificate-authority"].as_str() {
            read(f).map_err(|e| {
                ClientError::Config(format!(
                    "unable to read certificate-authority {f} for {cluster_name} due to {e}"
                ))
            })?
        } else {
            return Err(ClientError::Config(
                "the lab's clients need a certificate-authority: insecure clusters are not simulated"
                    .into(),
            ));
        };
        let user = named("users", user_name, "user").unwrap_or(Yaml::Null);
        let cert = if let Some(d) = user["client-certificate-data"].as_str() {
            Some(b64(d, "client-certificate-data")?)
        } else if let Some(f) = user["client-certificate"].as_str() {
            Some(read(f).map_err(|e| {
                ClientError::Config(format!(
                    "unable to read client-cert {f} for {user_name} due to {e}"
                ))
            })?)
        } else {
            None
        };
        let key = if let Some(d) = user["client-key-data"].as_str() {
            Some(b64(d, "client-key-data")?)
        } else if let Some(f) = user["client-key"].as_str() {
            Some(read(f).map_err(|e| {
                ClientError::Config(format!(
                    "unable to read client-key {f} for {user_name} due to {e}"
                ))
            })?)
        } else {
            None
        };
        let token = if let Some(t) = user["token"].as_str() {
            Some(t.to_string())
        } else if let Some(f) = user["tokenFile"].as_str() {
            let raw = read(f).map_err(ClientError::Config)?;
            Some(String::from_utf8_lossy(&raw).trim().to_string())
        } else {
            None
        };
        let auth = match (cert, key, token) {
            (Some(c), Some(k), _) => ClientAuth::Cert {
                cert_pem: String::from_utf8_lossy(&c).into_owned(),
                key_pem: String::from_utf8_lossy(&k).into_owned(),
            },
            (Some(_), None, _) => {
                return Err(invalid("client-cert-data and client-key-data must be specified for {user_name} to use the clientCert authentication method".replace("{user_name}", user_name)));
            }
            (_, _, Some(t)) => ClientAuth::Token(t),
            _ => ClientAuth::None,
        };
        Ok(Kubeconfig {
            server,
            ca_pem,
            auth,
        })
    }
}

/// `insecure-skip-tls-verify`: any certificate; handshake signatures are still checked.
#[derive(Debug)]
struct SkipVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl ApiClient {
    /// kubeadm's way of writing a Secret or ConfigMap: POST, or on 409 PUT over the current
    /// object.
    pub async fn create_or_update(&self, obj: &serde_json::Value) -> Result<(), String> {
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let plural = match obj["kind"].as_str() {
            Some("Secret") => "secrets",
            _ => "configmaps",
        };
        let collection = format!("/api/v1/namespaces/{ns}/{plural}");
        let r = self
            .create(&collection, obj)
            .await
            .map_err(|e| e.to_string())?;
        if r.is_success() {
            return Ok(());
        }
        if r.status != 409 {
            return Err(r.status_message());
        }
        let path = format!("{collection}/{name}");
        let current = self.get(&path).await.map_err(|e| e.to_string())?;
        if !current.is_success() {
            return Err(current.status_message());
        }
        let current = current.json()?;
        let mut obj = obj.clone();
        obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        let r = self.update(&path, &obj).await.map_err(|e| e.to_string())?;
        if r.is_success() {
            Ok(())
        } else {
            Err(r.status_message())
        }
    }
}

#[cfg(test)]
mod tests;
