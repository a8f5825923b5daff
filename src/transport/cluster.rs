//! The cluster-API seam ([`ClusterApi`]) over `kube`: a client from kubeconfig text held in
//! memory, `User-Agent: hactl/<version>` on every request, `fieldManager=hactl` on every
//! write, every call bounded; the API's refusals sorted into the seam's kinds (409, 404).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease as KubeLease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap as KubeConfigMap, Node, Pod as KubePod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::readings::api::{configmap, lease, node_status, pod};
use crate::seams::{BootstrapToken, ClusterApi, ConfigMap, Lease, NodeStatus, Pod, SeamError};

/// The User-Agent of every request: the lab's API server, like kube-apiserver, names the
/// manager of what it writes after it.
pub fn user_agent() -> String {
    format!("hactl/{}", env!("CARGO_PKG_VERSION"))
}

/// The type of a bootstrap token's Secret.
const TOKEN_TYPE: &str = "bootstrap.kubernetes.io/token";

/// The cluster's API through one client.
#[derive(Clone)]
pub struct KubeCluster {
    client: Client,
    timeout: Duration,
}

impl KubeCluster {
    /// A client for the current context of `kubeconfig` (text, held in memory only).
    pub async fn from_kubeconfig(kubeconfig: &str, timeout: Duration) -> Result<Self, SeamError> {
        super::install_crypto_provider();
        let bad = |e: String| SeamError::Api {
            what: "the kubeconfig".into(),
            detail: e,
        };
        let kc = Kubeconfig::from_yaml(kubeconfig).map_err(|e| bad(e.to_string()))?;
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| bad(e.to_string()))?;
        KubeCluster::from_config(config, timeout).map_err(bad)
    }

    /// A client for `config`, every call and connection bounded by `timeout`, with hactl's
    /// User-Agent; the error in kube's words.
    pub fn from_config(mut config: Config, timeout: Duration) -> Result<Self, String> {
        super::install_crypto_provider();
        config.connect_timeout = Some(timeout);
        config.read_timeout = Some(timeout);
        config.write_timeout = Some(timeout);
        config.headers.push((
            hyper::header::USER_AGENT,
            hyper::header::HeaderValue::from_str(&user_agent()).map_err(|e| e.to_string())?,
        ));
        let client = Client::try_from(config).map_err(|e| e.to_string())?;
        Ok(KubeCluster { client, timeout })
    }

    /// Runs one API call within the timeout, its error sorted.
    async fn call<T>(
        &self,
        verb: &'static str,
        what: String,
        f: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, SeamError> {
        let started = std::time::Instant::now();
        let subject = what.clone();
        let result = match tokio::time::timeout(self.timeout, f).await {
            Err(_) => Err(SeamError::Timeout {
                what,
                after: self.timeout,
            }),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(sort(what, &e, self.timeout)),
        };
        // The verb and the object's name, never its contents.
        tracing::debug!(
            took_ms = super::millis(started.elapsed()),
            outcome = %result.as_ref().err().map_or("ok".to_string(), ToString::to_string),
            "{verb} {subject}"
        );
        result
    }
}

/// kube's error sorted into the seam's kinds: 409 and 404 are what apply decides on; other
/// statuses keep code, reason and message; a failed connection or handshake keeps Go's words
/// (kube's error chain is searched for rustls' and the OS's errors).
fn sort(what: String, e: &kube::Error, timeout: Duration) -> SeamError {
    if let kube::Error::Api(s) = e {
        return match s.code {
            409 => SeamError::Conflict { what },
            404 => SeamError::NotFound { what },
            code => SeamError::Status {
                what,
                code,
                reason: s.reason.clone(),
                message: s.message.clone(),
            },
        };
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(r) = s.downcast_ref::<rustls::Error>() {
            return SeamError::Tls {
                what,
                detail: crate::tls_verify::go_tls_error(r),
            };
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return sort_io(what, io, timeout);
        }
        if s.to_string().contains("deadline has elapsed") {
            return SeamError::Timeout {
                what,
                after: timeout,
            };
        }
        src = s.source();
    }
    SeamError::Transport(format!("{what}: {e}"))
}

/// io::Error hides a custom inner error from `source()`, and hyper-rustls wraps tokio-rustls'
/// io::Error in another: look inside each layer.
fn sort_io(what: String, io: &std::io::Error, timeout: Duration) -> SeamError {
    if let Some(inner) = io.get_ref() {
        if let Some(r) = inner.downcast_ref::<rustls::Error>() {
            return SeamError::Tls {
                what,
                detail: crate::tls_verify::go_tls_error(r),
            };
        }
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            return sort_io(what, io, timeout);
        }
    }
    match io.kind() {
        std::io::ErrorKind::TimedOut => SeamError::Timeout {
            what,
            after: timeout,
        },
        std::io::ErrorKind::UnexpectedEof => SeamError::Unreachable {
            what,
            detail: "EOF".into(),
        },
        _ => SeamError::Unreachable {
            what,
            detail: super::tls::os_text(io),
        },
    }
}

fn writes() -> PostParams {
    PostParams {
        field_manager: Some("hactl".into()),
        ..PostParams::default()
    }
}

fn kube_lease(l: &Lease) -> Result<KubeLease, SeamError> {
    let micro = |field: &str, t: &Option<String>| -> Result<Option<MicroTime>, SeamError> {
        let Some(t) = t else { return Ok(None) };
        serde_json::from_value::<MicroTime>(serde_json::Value::String(t.clone()))
            .map(Some)
            .map_err(|e| SeamError::Api {
                what: format!("leases {}/{}", l.namespace, l.name),
                detail: format!("{field} {t:?}: {e}"),
            })
    };
    let acquire_time = micro("acquireTime", &l.acquire_time)?;
    let renew_time = micro("renewTime", &l.renew_time)?;
    Ok(KubeLease {
        metadata: ObjectMeta {
            name: Some(l.name.clone()),
            namespace: Some(l.namespace.clone()),
            resource_version: (!l.resource_version.is_empty()).then(|| l.resource_version.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: l.holder.clone(),
            acquire_time,
            renew_time,
            lease_duration_seconds: l.duration_secs.map(|d| d as i32),
            ..LeaseSpec::default()
        }),
    })
}

impl ClusterApi for KubeCluster {
    async fn get_configmap(&self, namespace: &str, name: &str) -> Result<ConfigMap, SeamError> {
        let api: Api<KubeConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let cm = self
            .call(
                "get",
                format!("configmaps {namespace}/{name}"),
                api.get(name),
            )
            .await?;
        Ok(configmap(namespace, name, cm))
    }

    async fn replace_configmap(&self, cm: &ConfigMap) -> Result<ConfigMap, SeamError> {
        let api: Api<KubeConfigMap> = Api::namespaced(self.client.clone(), &cm.namespace);
        let what = format!("configmaps {}/{}", cm.namespace, cm.name);
        // Everything else of the object as it is; the write goes through only at the
        // resourceVersion apply planned from.
        let mut obj = self.call("get", what.clone(), api.get(&cm.name)).await?;
        obj.metadata.resource_version = Some(cm.resource_version.clone());
        obj.metadata.managed_fields = None;
        obj.data = Some(cm.data.clone().into_iter().collect());
        let stored = self
            .call("replace", what, api.replace(&cm.name, &writes(), &obj))
            .await?;
        Ok(configmap(&cm.namespace, &cm.name, stored))
    }

    async fn list_pods(
        &self,
        namespace: &str,
        selector: &str,
        node: Option<&str>,
    ) -> Result<Vec<Pod>, SeamError> {
        let api: Api<KubePod> = Api::namespaced(self.client.clone(), namespace);
        let list = self
            .call(
                "list",
                format!("pods -n {namespace} -l {selector}"),
                api.list(&ListParams::default().labels(selector)),
            )
            .await?;
        let mut pods: Vec<Pod> = list
            .items
            .iter()
            .map(|p| pod(namespace, p))
            .filter(|p| node.is_none_or(|n| p.node == n))
            .collect();
        pods.sort_by(|a, b| (&a.node, &a.name).cmp(&(&b.node, &b.name)));
        Ok(pods)
    }

    async fn delete_pod(&self, namespace: &str, name: &str) -> Result<(), SeamError> {
        let api: Api<KubePod> = Api::namespaced(self.client.clone(), namespace);
        self.call(
            "delete",
            format!("pods {namespace}/{name}"),
            api.delete(name, &DeleteParams::default()),
        )
        .await
        .map(|_| ())
    }

    async fn get_node(&self, name: &str) -> Result<NodeStatus, SeamError> {
        let api: Api<Node> = Api::all(self.client.clone());
        let node = self
            .call("get", format!("nodes {name}"), api.get(name))
            .await?;
        Ok(node_status(&node))
    }

    async fn list_nodes(&self) -> Result<Vec<NodeStatus>, SeamError> {
        let api: Api<Node> = Api::all(self.client.clone());
        let list = self
            .call(
                "list",
                "nodes".to_string(),
                api.list(&ListParams::default()),
            )
            .await?;
        Ok(list.items.iter().map(node_status).collect())
    }

    async fn get_lease(&self, namespace: &str, name: &str) -> Result<Lease, SeamError> {
        let api: Api<KubeLease> = Api::namespaced(self.client.clone(), namespace);
        let l = self
            .call("get", format!("leases {namespace}/{name}"), api.get(name))
            .await?;
        Ok(lease(l))
    }

    async fn create_lease(&self, l: &Lease) -> Result<Lease, SeamError> {
        let api: Api<KubeLease> = Api::namespaced(self.client.clone(), &l.namespace);
        let mut obj = kube_lease(l)?;
        obj.metadata.resource_version = None;
        let stored = self
            .call(
                "create",
                format!("leases {}/{}", l.namespace, l.name),
                api.create(&writes(), &obj),
            )
            .await?;
        Ok(lease(stored))
    }

    async fn renew_lease(&self, l: &Lease) -> Result<Lease, SeamError> {
        let api: Api<KubeLease> = Api::namespaced(self.client.clone(), &l.namespace);
        let stored = self
            .call(
                "replace",
                format!("leases {}/{}", l.namespace, l.name),
                api.replace(&l.name, &writes(), &kube_lease(l)?),
            )
            .await?;
        Ok(lease(stored))
    }

    async fn bootstrap_tokens(&self) -> Result<Vec<BootstrapToken>, SeamError> {
        // Only the tokens' Secrets, selected by the API server: this runs once a second while
        // cluster-info's check waits, and no other Secret of kube-system needs to leave it.
        let api: Api<Secret> = Api::namespaced(self.client.clone(), "kube-system");
        let only_tokens = ListParams::default().fields(&format!("type={TOKEN_TYPE}"));
        let list = self
            .call(
                "list",
                "secrets kube-system".to_string(),
                api.list(&only_tokens),
            )
            .await?;
        let field = |s: &Secret, key: &str| {
            let bytes = s.data.as_ref()?.get(key)?;
            String::from_utf8(bytes.0.clone()).ok()
        };
        let mut tokens: Vec<BootstrapToken> = list
            .items
            .iter()
            .filter(|s| s.type_.as_deref() == Some(TOKEN_TYPE))
            .filter_map(|s| {
                Some(BootstrapToken {
                    id: field(s, "token-id")?,
                    secret: field(s, "token-secret")?,
                })
            })
            .collect();
        tokens.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(tokens)
    }

    async fn verify_served(
        &self,
        address: &str,
        server_name: &str,
        ca_pem: &str,
    ) -> Result<(), SeamError> {
        let what = format!("the certificate {address} serves");
        let failed = |detail: String| SeamError::Api {
            what: what.clone(),
            detail,
        };
        let addr: std::net::SocketAddr = address
            .parse()
            .map_err(|e| failed(format!("{address}: {e}")))?;
        let verifier =
            crate::tls_verify::GoVerifier::from_ca_pem(ca_pem.as_bytes()).map_err(failed)?;
        let stream =
            super::tls::dial(addr, self.timeout)
                .await
                .map_err(|e| SeamError::Unreachable {
                    what: what.clone(),
                    detail: e,
                })?;
        super::tls::handshake(
            stream,
            server_name,
            std::sync::Arc::new(verifier),
            self.timeout,
        )
        .await
        .map_err(failed)
    }

    async fn delete_lease(&self, namespace: &str, name: &str) -> Result<(), SeamError> {
        let api: Api<KubeLease> = Api::namespaced(self.client.clone(), namespace);
        self.call(
            "delete",
            format!("leases {namespace}/{name}"),
            api.delete(name, &DeleteParams::default()),
        )
        .await
        .map(|_| ())
    }
}
