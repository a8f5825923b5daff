//! The load balancer, from hactl: TCP on every address, and a TLS handshake that verifies the
//! endpoint host against the cluster CA, failing with Go's x509 words when it does not.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::observed::{EndpointObservation, Probe};
use crate::spec::Endpoint;
use crate::tls_verify::GoVerifier;
use crate::transport::install_crypto_provider;
use crate::transport::tls::{dial, handshake};

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

#[cfg(test)]
mod tests {
    use super::*;

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
