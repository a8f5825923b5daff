//! The load balancer, from hactl: TCP on every address, and a TLS handshake that verifies the
//! endpoint host against the cluster CA, failing with Go's x509 words when it does not.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::observed::{EndpointObservation, Probe};
use crate::spec::Endpoint;
use crate::tls_verify::{GoVerifier, go_tls_error, x509_message};
use crate::transport::install_crypto_provider;

/// TCP to every `endpoint.addresses` at `endpoint.port`; then, through the first that accepted,
/// TLS with SNI `endpoint.host` verified against `ca_pem` (`None` when there is no CA to verify
/// against, or no address accepted TCP).
pub async fn probe_endpoint(
    endpoint: &Endpoint,
    ca_pem: Option<&str>,
    timeout: Duration,
) -> EndpointObservation {
    install_crypto_provider();
    let dials = endpoint.addresses.iter().map(|ip| {
        let addr = SocketAddr::new(*ip, endpoint.port);
        async move { (*ip, dial(addr, timeout).await) }
    });
    let results = futures_util::future::join_all(dials).await;
    let mut addresses = BTreeMap::new();
    let mut first = None;
    for (ip, result) in results {
        match result {
            Ok(stream) => {
                addresses.insert(ip.to_string(), Probe::Ok);
                // Addresses in the desired state's order: the first that accepted carries TLS.
                if first.is_none() {
                    first = Some(stream);
                }
            }
            Err(reason) => {
                addresses.insert(ip.to_string(), Probe::Failed { reason });
            }
        }
    }
    let tls = match (ca_pem, first) {
        (Some(ca), Some(stream)) => Some(tls_probe(stream, &endpoint.host, ca, timeout).await),
        _ => None,
    };
    EndpointObservation { addresses, tls }
}

/// A TCP connection, or why not in Go's `net.Dial` words (`dial tcp A:P: connect: connection
/// refused`, `dial tcp A:P: i/o timeout`).
pub(crate) async fn dial(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("dial tcp {addr}: connect: {}", os_text(&e))),
        Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
    }
}

async fn tls_probe(stream: TcpStream, host: &str, ca_pem: &str, timeout: Duration) -> Probe {
    let verifier = match GoVerifier::from_ca_pem(ca_pem.as_bytes()) {
        Ok(v) => Arc::new(v),
        Err(reason) => return Probe::Failed { reason },
    };
    match handshake(stream, host, verifier, timeout).await {
        Ok(()) => Probe::Ok,
        Err(reason) => Probe::Failed { reason },
    }
}

/// A TLS handshake on `stream` for `host` (SNI and the name verified); the failure as Go says
/// it: the bare x509 message for a certificate that does not verify (`x509: certificate is
/// valid for …, not HOST`), crypto/tls's words otherwise.
pub(crate) async fn handshake(
    stream: TcpStream,
    host: &str,
    verifier: Arc<GoVerifier>,
    timeout: Duration,
) -> Result<(), String> {
    install_crypto_provider();
    let name = match host.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(host.to_string())
            .map_err(|_| format!("tls: invalid server name {host:?}"))?,
    };
    let ends = stream.local_addr().ok().zip(stream.peer_addr().ok());
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    match tokio::time::timeout(timeout, connector.connect(name, stream)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(handshake_error(&e, ends)),
        Err(_) => Err("net/http: TLS handshake timeout".into()),
    }
}

fn handshake_error(e: &std::io::Error, ends: Option<(SocketAddr, SocketAddr)>) -> String {
    if let Some(rerr) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return x509_message(rerr).unwrap_or_else(|| go_tls_error(rerr));
    }
    match (e.kind(), ends) {
        (std::io::ErrorKind::UnexpectedEof, _) => "EOF".into(),
        (std::io::ErrorKind::ConnectionReset, Some((l, r))) => {
            format!("read tcp {l}->{r}: read: connection reset by peer")
        }
        _ => os_text(e),
    }
}

/// `connection refused`: Go's syscall error text, lower-case without the errno.
pub(crate) fn os_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = s.find(" (os error").map_or(s.as_str(), |i| &s[..i]);
    s.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_read_as_go_prints_them() {
        let e = std::io::Error::from_raw_os_error(111);
        assert_eq!(os_text(&e), "connection refused");
    }

    #[tokio::test]
    async fn nothing_listening_is_refused_and_leaves_no_tls_to_try() {
        // 127.0.25.99:1 on the helper's own lab net: nothing listens there.
        let endpoint = Endpoint {
            host: "k8s-api.lab.internal".into(),
            addresses: vec!["127.0.25.99".parse().expect("ip")],
            port: 1,
        };
        let obs = probe_endpoint(&endpoint, Some("CA"), Duration::from_secs(2)).await;
        assert_eq!(
            obs.addresses["127.0.25.99"],
            Probe::Failed {
                reason: "dial tcp 127.0.25.99:1: connect: connection refused".into()
            }
        );
        assert_eq!(obs.tls, None);
    }
}
