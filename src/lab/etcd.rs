//! A client for real etcd's v3 JSON gateway over TLS (no protoc needed): KV with revisions,
//! transactions for resourceVersion checks, member list and health.
//!
//! Every call goes to the first endpoint that answers (failover in list order, starting
//! from the last one that worked) and gives up after the request timeout, so callers fail
//! within seconds when quorum is lost instead of hanging.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{LabDir, LabError, LabSpec};

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The CA, certificate or key could not be used.
    #[error("etcd client TLS setup: {0}")]
    Tls(String),
    /// An endpoint is not an `https://host:port` URL.
    #[error("invalid etcd endpoint {0:?}")]
    Endpoint(String),
    /// No endpoint could be reached (each attempt's error, joined).
    #[error("{0}")]
    Unreachable(String),
    /// etcd answered with an error; the message is etcd's own (`etcdserver: request timed out`).
    #[error("{0}")]
    Server(String),
    /// The request did not finish within the client's timeout.
    #[error("context deadline exceeded (etcd did not answer within {0:?})")]
    Timeout(Duration),
    /// etcd's answer was not what the v3 gateway sends.
    #[error("unexpected answer from etcd: {0}")]
    Protocol(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// As `etcdctl member list` prints it: lower-case hex.
    pub id: String,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
    /// A member that was added but has not started yet has no name.
    pub started: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointStatus {
    pub endpoint: String,
    pub version: String,
    pub db_size: i64,
    /// Member id in hex.
    pub member_id: String,
    /// Leader's member id in hex (`0` when there is no leader).
    pub leader: String,
    pub raft_term: i64,
    pub raft_index: i64,
    pub is_learner: bool,
    pub errors: Vec<String>,
}

struct Endpoint {
    url: String,
    /// `host:port` to dial.
    authority: String,
    host: String,
    /// Idle HTTP/1 connections to reuse.
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

/// A cheap-to-clone handle; connections are pooled per endpoint.
#[derive(Clone)]
pub struct EtcdClient {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<Endpoint>,
    connector: TlsConnector,
    timeout: Duration,
    connect_timeout: Duration,
    /// Where to start: the endpoint that answered last.
    preferred: AtomicUsize,
}

impl std::fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&str> = self
            .inner
            .endpoints
            .iter()
            .map(|e| e.url.as_str())
            .collect();
        f.debug_struct("EtcdClient")
            .field("endpoints", &urls)
            .finish()
    }
}

fn b64(s: &[u8]) -> String {
    B64.encode(s)
}

/// The key just after every key with this prefix (etcd's `range_end` for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: everything to the end of the key space.
    vec![0]
}

/// The gateway prints int64 as JSON strings and leaves out zero values.
fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn uint_hex(v: &Value) -> String {
    let n: u64 = match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    };
    format!("{n:x}")
}

fn decode_b64(v: &Value) -> Result<Vec<u8>, EtcdError> {
    match v.as_str() {
        None => Ok(Vec::new()),
        Some(s) => B64
            .decode(s)
            .map_err(|e| EtcdError::Protocol(format!("bad base64: {e}"))),
    }
}

/// A member id as the gateway takes it: uint64 in decimal, as a JSON string.
fn decimal_id(hex_id: &str) -> Result<String, EtcdError> {
    u64::from_str_radix(hex_id, 16)
        .map(|n| n.to_string())
        .map_err(|_| EtcdError::Protocol(format!("invalid member id {hex_id:?}")))
}

fn member(m: &Value) -> Member {
    let name = m["name"].as_str().unwrap_or("").to_owned();
    Member {
        id: uint_hex(&m["ID"]),
        // An added member gets its name and client URLs when it first starts.
        started: !name.is_empty(),
        name,
        peer_urls: strings(&m["peerURLs"]),
        client_urls: strings(&m["clientURLs"]),
        is_learner: m["isLearner"].as_bool().unwrap_or(false),
    }
}

fn members(v: &Value) -> Vec<Member> {
    v.as_array()
        .map(|ms| ms.iter().map(member).collect())
        .unwrap_or_default()
}

fn key_value(v: &Value) -> Result<KeyValue, EtcdError> {
    let key = decode_b64(&v["key"])?;
    Ok(KeyValue {
        key: String::from_utf8_lossy(&key).into_owned(),
        value: decode_b64(&v["value"])?,
        create_revision: int(&v["create_revision"]),
        mod_revision: int(&v["mod_revision"]),
    })
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

impl EtcdClient {
    pub fn new(
        endpoints: Vec<String>,
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<EtcdClient, EtcdError> {
        crate::lab::install_crypto_provider();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| EtcdError::Tls(format!("CA: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| EtcdError::Tls(format!("CA: {e}")))?;
        }
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| EtcdError::Tls(format!("client certificate: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| EtcdError::Tls(format!("client key: {e}")))?;
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| EtcdError::Tls(e.to_string()))?;
        let connector = TlsConnector::from(Arc::new(config));
        EtcdClient::build(endpoints, connector)
    }

    /// The same credentials for other endpoints (a member that just joined, say).
    pub fn with_endpoints(&self, endpoints: Vec<String>) -> Result<EtcdClient, EtcdError> {
        EtcdClient::build(endpoints, self.inner.connector.clone())
    }

    fn build(endpoints: Vec<String>, connector: TlsConnector) -> Result<EtcdClient, EtcdError> {
        let mut parsed = Vec::new();
        for url in endpoints {
            let authority = url
                .strip_prefix("https://")
                .ok_or_else(|| EtcdError::Endpoint(url.clone()))?
                .trim_end_matches('/')
                .to_owned();
            let host = match authority.rsplit_once(':') {
                Some((h, p)) if p.parse::<u16>().is_ok() => {
                    h.trim_start_matches('[').trim_end_matches(']').to_owned()
                }
                _ => return Err(EtcdError::Endpoint(url)),
            };
            parsed.push(Endpoint {
                url,
                authority,
                host,
                idle: Mutex::new(Vec::new()),
            });
        }
        if parsed.is_empty() {
            return Err(EtcdError::Endpoint(String::new()));
        }
        Ok(EtcdClient {
            inner: Arc::new(Inner {
                endpoints: parsed,
                connector,
                timeout: Duration::from_secs(4),
                connect_timeout: Duration::from_millis(1500),
                preferred: AtomicUsize::new(0),
            }),
        })
    }

    /// The same client with another overall request timeout (default 4 s).
    pub fn with_timeout(self, timeout: Duration) -> EtcdClient {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.timeout = timeout;
                inner.connect_timeout = inner.connect_timeout.min(timeout);
                EtcdClient {
                    inner: Arc::new(inner),
                }
            }
            // Shared already: keep it as is rather than rebuild the pool.
            Err(inner) => EtcdClient { inner },
        }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.inner.endpoints.iter().map(|e| e.url.clone()).collect()
    }

    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>, EtcdError> {
        self.range_one(json!({ "key": b64(key.as_bytes()) })).await
    }

    /// `key` as it was at `revision` (etcd's error once that revision is compacted).
    pub async fn get_at(&self, key: &str, revision: i64) -> Result<Option<KeyValue>, EtcdError> {
        self.range_one(json!({ "key": b64(key.as_bytes()), "revision": revision }))
            .await
    }

    /// The first key of the range `request` asks for.
    async fn range_one(&self, request: Value) -> Result<Option<KeyValue>, EtcdError> {
        let resp = self.call("/v3/kv/range", request).await?;
        match resp["kvs"].as_array().and_then(|a| a.first()) {
            None => Ok(None),
            Some(kv) => key_value(kv).map(Some),
        }
    }

    /// The store's current revision.
    pub async fn revision(&self) -> Result<i64, EtcdError> {
        let resp = self
            .call(
                "/v3/kv/range",
                json!({ "key": b64(b"compact_rev_key"), "count_only": true }),
            )
            .await?;
        Ok(int(&resp["header"]["revision"]))
    }

    /// Drops the history before `revision`, as kube-apiserver's compactor does.
    pub async fn compact(&self, revision: i64) -> Result<(), EtcdError> {
        self.call("/v3/kv/compaction", json!({ "revision": revision }))
            .await
            .map(|_| ())
    }

    /// Every key under `prefix`, in key order, and the store's revision at that read.
    pub async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64), EtcdError> {
        let resp = self
            .call(
                "/v3/kv/range",
                json!({
                    "key": b64(prefix.as_bytes()),
                    "range_end": b64(&prefix_end(prefix.as_bytes())),
                }),
            )
            .await?;
        let kvs = resp["kvs"]
            .as_array()
            .map(|a| a.iter().map(key_value).collect::<Result<Vec<_>, _>>())
            .transpose()?
            .unwrap_or_default();
        Ok((kvs, int(&resp["header"]["revision"])))
    }

    /// Creates `key` if absent; the new revision, or None when the key exists.
    pub async fn create(&self, key: &str, value: &[u8]) -> Result<Option<i64>, EtcdError> {
        self.put_if(key, value, "CREATE", "create_revision", 0)
            .await
    }

    /// Replaces `key` if its mod revision is still `expected_mod_revision`; None on conflict.
    pub async fn update(
        &self,
        key: &str,
        value: &[u8],
        expected_mod_revision: i64,
    ) -> Result<Option<i64>, EtcdError> {
        self.put_if(key, value, "MOD", "mod_revision", expected_mod_revision)
            .await
    }

    async fn put_if(
        &self,
        key: &str,
        value: &[u8],
        target: &str,
        field: &str,
        revision: i64,
    ) -> Result<Option<i64>, EtcdError> {
        let k = b64(key.as_bytes());
        let resp = self
            .call(
                "/v3/kv/txn",
                json!({
                    "compare": [{
                        "key": k,
                        "result": "EQUAL",
                        "target": target,
                        field: revision.to_string(),
                    }],
                    "success": [{ "request_put": { "key": k, "value": b64(value) } }],
                }),
            )
            .await?;
        if resp["succeeded"].as_bool() == Some(true) {
            Ok(Some(int(&resp["header"]["revision"])))
        } else {
            Ok(None)
        }
    }

    /// Deletes `key` (only at that mod revision when given); whether a key was deleted.
    pub async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<i64>,
    ) -> Result<bool, EtcdError> {
        let k = b64(key.as_bytes());
        match expected_mod_revision {
            None => {
                let resp = self.call("/v3/kv/deleterange", json!({ "key": k })).await?;
                Ok(int(&resp["deleted"]) > 0)
            }
            Some(rev) => {
                let resp = self
                    .call(
                        "/v3/kv/txn",
                        json!({
                            "compare": [{
                                "key": k, "result": "EQUAL", "target": "MOD",
                                "mod_revision": rev.to_string(),
                            }],
                            "success": [{ "request_delete_range": { "key": k } }],
                        }),
                    )
                    .await?;
                let deleted = resp["responses"]
                    .as_array()
                    .and_then(|r| r.first())
                    .map(|r| int(&r["response_delete_range"]["deleted"]))
                    .unwrap_or(0);
                Ok(resp["succeeded"].as_bool() == Some(true) && deleted > 0)
            }
        }
    }

    pub async fn member_list(&self) -> Result<Vec<Member>, EtcdError> {
        let resp = self.call("/v3/cluster/member/list", json!({})).await?;
        Ok(members(&resp["members"]))
    }

    /// `etcdctl member add --peer-urls=… [--learner]`: the new member (not started, so
    /// without a name) and the cluster's members after the change, the new one included.
    pub async fn member_add(
        &self,
        peer_urls: &[String],
        is_learner: bool,
    ) -> Result<(Member, Vec<Member>), EtcdError> {
        let resp = self
            .call(
                "/v3/cluster/member/add",
                json!({ "peerURLs": peer_urls, "isLearner": is_learner }),
            )
            .await?;
        let added = member(&resp["member"]);
        Ok((added, members(&resp["members"])))
    }

    /// `etcdctl member promote ID` (hex, as `member list` prints it): the members after it.
    /// etcd refuses a learner that has not caught up with the leader yet
    /// (`etcdserver: can only promote a learner member which is in sync with leader`).
    pub async fn member_promote(&self, id: &str) -> Result<Vec<Member>, EtcdError> {
        let resp = self
            .call(
                "/v3/cluster/member/promote",
                json!({ "ID": decimal_id(id)? }),
            )
            .await?;
        Ok(members(&resp["members"]))
    }

    /// `etcdctl member remove ID` (hex): the members after it.
    pub async fn member_remove(&self, id: &str) -> Result<Vec<Member>, EtcdError> {
        let resp = self
            .call(
                "/v3/cluster/member/remove",
                json!({ "ID": decimal_id(id)? }),
            )
            .await?;
        Ok(members(&resp["members"]))
    }

    /// `etcdctl endpoint status` for one endpoint (which must be one of this client's).
    pub async fn status(&self, endpoint: &str) -> Result<EndpointStatus, EtcdError> {
        let index = self
            .inner
            .endpoints
            .iter()
            .position(|e| e.url == endpoint)
            .ok_or_else(|| EtcdError::Endpoint(endpoint.to_owned()))?;
        let resp = tokio::time::timeout(
            self.inner.timeout,
            self.call_one(index, "/v3/maintenance/status", &json!({})),
        )
        .await
        .map_err(|_| EtcdError::Timeout(self.inner.timeout))??;
        Ok(EndpointStatus {
            endpoint: endpoint.to_owned(),
            version: resp["version"].as_str().unwrap_or("").to_owned(),
            db_size: int(&resp["dbSize"]),
            member_id: uint_hex(&resp["header"]["member_id"]),
            leader: uint_hex(&resp["leader"]),
            raft_term: int(&resp["raftTerm"]),
            raft_index: int(&resp["raftIndex"]),
            is_learner: resp["isLearner"].as_bool().unwrap_or(false),
            errors: strings(&resp["errors"]),
        })
    }

    /// One request with failover: the first endpoint that answers, within the timeout.
    async fn call(&self, path: &str, body: Value) -> Result<Value, EtcdError> {
        let timeout = self.inner.timeout;
        tokio::time::timeout(timeout, self.call_any(path, &body))
            .await
            .map_err(|_| EtcdError::Timeout(timeout))?
    }

    async fn call_any(&self, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let n = self.inner.endpoints.len();
        let start = self.inner.preferred.load(Ordering::Relaxed) % n;
        let mut errors = Vec::new();
        for i in 0..n {
            let index = (start + i) % n;
            match self.call_one(index, path, body).await {
                Ok(v) => {
                    self.inner.preferred.store(index, Ordering::Relaxed);
                    return Ok(v);
                }
                // etcd's own answer (e.g. request timed out) is the answer: another member
                // of the same cluster would say the same, and retrying doubles the wait.
                Err(e @ EtcdError::Server(_)) => return Err(e),
                Err(e) => errors.push(e.to_string()),
            }
        }
        Err(EtcdError::Unreachable(errors.join("; ")))
    }

    async fn call_one(&self, index: usize, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let ep = &self.inner.endpoints[index];
        let pooled = ep.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut sender = match pooled {
            Some(s) if !s.is_closed() => s,
            _ => self.connect(ep).await?,
        };
        let unreachable = |e: String| EtcdError::Unreachable(format!("{}: {e}", ep.url));
        sender
            .ready()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let req = hyper::Request::post(path)
            .header(hyper::header::HOST, &ep.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| EtcdError::Protocol(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        if let Ok(mut idle) = ep.idle.lock() {
            idle.push(sender);
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|_| {
            EtcdError::Protocol(format!(
                "{} answered {status}: {}",
                ep.url,
                String::from_utf8_lossy(&bytes)
            ))
        })?;
        if !status.is_success() || value.get("error").is_some() {
            // The gateway's error body: {"error": "...", "code": N, "message": "..."}.
            let msg = value["message"]
                .as_str()
                .or(value["error"].as_str())
                .unwrap_or("unknown etcd error");
            return Err(EtcdError::Server(msg.to_owned()));
        }
        Ok(value)
    }

    async fn connect(&self, ep: &Endpoint) -> Result<SendRequest<Full<Bytes>>, EtcdError> {
        let fail = |e: String| EtcdError::Unreachable(format!("dial tcp {}: {e}", ep.authority));
        let tcp = tokio::time::timeout(
            self.inner.connect_timeout,
            TcpStream::connect(&ep.authority),
        )
        .await
        .map_err(|_| fail("i/o timeout".into()))?
        .map_err(|e| fail(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(ep.host.clone()).map_err(|e| fail(e.to_string()))?;
        let tls = tokio::time::timeout(
            self.inner.connect_timeout,
            self.inner.connector.connect(name, tcp),
        )
        .await
        .map_err(|_| fail("TLS handshake timeout".into()))?
        .map_err(|e| fail(format!("TLS handshake: {e}")))?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| fail(e.to_string()))?;
        tokio::spawn(async move {
            // The connection ends when the server closes it or the sender is dropped.
            let _ = conn.await;
        });
        Ok(sender)
    }
}

/// Clients of a lab's etcd, with the init node's apiserver-etcd-client certificate (what the
/// API server uses).
impl EtcdClient {
    /// A client for the control-plane nodes' etcd, with the init node's apiserver-etcd-client
    /// certificate (what the API server uses).
    pub fn for_lab(lab: &LabDir, spec: &LabSpec) -> Result<EtcdClient, LabError> {
        let endpoints = spec
            .nodes
            .iter()
            .filter(|n| n.control_plane)
            .map(|n| format!("https://{}:2379", n.address))
            .collect();
        Self::for_lab_at(lab, spec, endpoints)
    }

    pub fn for_lab_at(
        lab: &LabDir,
        spec: &LabSpec,
        endpoints: Vec<String>,
    ) -> Result<EtcdClient, LabError> {
        let init = spec.init_node();
        let read = |p: &str| {
            let path = lab.node_path(&init.name, p);
            std::fs::read_to_string(&path).map_err(|e| LabError::io(&path, "read", e))
        };
        EtcdClient::new(
            endpoints,
            &read("/etc/kubernetes/pki/etcd/ca.crt")?,
            &read("/etc/kubernetes/pki/apiserver-etcd-client.crt")?,
            &read("/etc/kubernetes/pki/apiserver-etcd-client.key")?,
        )
        .map_err(|e| LabError::msg(format!("cannot make an etcd client: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(
            prefix_end(b"/registry/configmaps/"),
            b"/registry/configmaps0"
        );
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn gateway_numbers_are_strings() {
        assert_eq!(int(&json!("42")), 42);
        assert_eq!(int(&json!(7)), 7);
        assert_eq!(int(&Value::Null), 0);
        assert_eq!(uint_hex(&json!("10276657743932975437")), "8e9e05c52164694d");
    }

    #[test]
    fn member_ids_go_to_the_gateway_in_decimal() {
        assert_eq!(
            decimal_id("8e9e05c52164694d").unwrap(),
            "10276657743932975437"
        );
        assert!(decimal_id("xyz").is_err());
        let m = member(
            &json!({"ID": "10276657743932975437", "peerURLs": ["https://a:2380"], "isLearner": true}),
        );
        assert_eq!(m.id, "8e9e05c52164694d");
        assert!(m.is_learner && !m.started);
    }

    #[test]
    fn endpoints_must_be_https() {
        let err = EtcdClient::new(vec!["http://127.0.0.1:2379".into()], "", "", "");
        assert!(err.is_err());
    }
}
