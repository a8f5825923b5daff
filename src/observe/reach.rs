//! What observation reaches the cluster through: each node's transport, the API from a
//! kubeconfig, the load balancer from this machine. [`SshReach`] is the real one (OpenSSH,
//! `kube`, TCP and TLS); [`super::fake::FakeReach`] reaches a
//! [`FakeCluster`](crate::seams::fake::FakeCluster), so that tests drive a whole observation.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::observed::EndpointObservation;
use crate::seams::ClusterApi;
use crate::spec::Endpoint;
use crate::tls_verify::GoVerifier;
use crate::transport::cluster::KubeCluster;
use crate::transport::ssh::SshSession;
use crate::transport::{NodeTransport, SshTarget, TransportError};

/// The edge observation reads through.
pub trait Reach: Send + Sync + 'static {
    /// A connection to one node, held through the observation.
    type Session: NodeTransport + 'static;
    /// The cluster's API.
    type Api: ClusterApi + 'static;

    fn connect(
        &self,
        target: SshTarget,
    ) -> impl Future<Output = Result<Self::Session, TransportError>> + Send;

    /// Ends a session (the real one closes its ssh master).
    fn close(session: Self::Session) -> impl Future<Output = ()> + Send;

    /// A client for the API server `config` names, every call bounded by `timeout`; the error
    /// in the client's words.
    fn api(&self, config: kube::Config, timeout: Duration) -> Result<Arc<Self::Api>, String>;

    /// Go's x509 words for a handshake with the API server `config` names that failed on its
    /// certificate (kube words them its own way), `None` when they cannot be had.
    fn x509_words(
        &self,
        config: &kube::Config,
        timeout: Duration,
    ) -> impl Future<Output = Option<String>> + Send;

    /// TCP to every address of the load balancer; TLS through the first that accepted,
    /// verified against `ca_pem`.
    fn probe_endpoint(
        &self,
        endpoint: &Endpoint,
        ca_pem: Option<&str>,
        timeout: Duration,
    ) -> impl Future<Output = EndpointObservation> + Send;
}

/// The real edge: OpenSSH to the nodes, `kube` to the API, TCP and TLS to the LB.
#[derive(Clone, Copy, Debug, Default)]
pub struct SshReach;

impl Reach for SshReach {
    type Session = SshSession;
    type Api = KubeCluster;

    async fn connect(&self, target: SshTarget) -> Result<SshSession, TransportError> {
        SshSession::connect(target).await
    }

    async fn close(session: SshSession) {
        // Nothing is left to tell: the reads are done and recorded.
        let _ = session.close().await;
    }

    fn api(&self, config: kube::Config, timeout: Duration) -> Result<Arc<KubeCluster>, String> {
        KubeCluster::from_config(config, timeout).map(Arc::new)
    }

    async fn x509_words(&self, config: &kube::Config, timeout: Duration) -> Option<String> {
        GoProbe::of(config).x509_words(timeout).await
    }

    async fn probe_endpoint(
        &self,
        endpoint: &Endpoint,
        ca_pem: Option<&str>,
        timeout: Duration,
    ) -> EndpointObservation {
        super::endpoint::probe_endpoint(endpoint, ca_pem, timeout).await
    }
}

/// Where kube connected, to ask [`GoVerifier`] for the x509 failure in Go's words (kube's
/// verifier words errors its own way).
struct GoProbe {
    host: String,
    port: u16,
    sni: Option<String>,
    roots: Option<Vec<Vec<u8>>>,
}

impl GoProbe {
    /// Where `config` connects.
    fn of(config: &kube::Config) -> GoProbe {
        GoProbe {
            host: config
                .cluster_url
                .host()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: config.cluster_url.port_u16().unwrap_or(443),
            sni: config.tls_server_name.clone(),
            roots: config.root_cert.clone(),
        }
    }

    /// A second handshake against the same server and CA bundle; `None` when it does not
    /// fail on the certificate.
    async fn x509_words(self, timeout: Duration) -> Option<String> {
        let verifier = Arc::new(GoVerifier::from_ca_der(self.roots?).ok()?);
        let ip = match self.host.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => tokio::net::lookup_host((self.host.as_str(), self.port))
                .await
                .ok()?
                .next()?
                .ip(),
        };
        let stream = crate::transport::tls::dial(SocketAddr::new(ip, self.port), timeout)
            .await
            .ok()?;
        let name = self.sni.as_deref().unwrap_or(&self.host);
        let err = crate::transport::tls::handshake(stream, name, verifier, timeout)
            .await
            .err()?;
        err.starts_with("x509:").then_some(err)
    }
}
