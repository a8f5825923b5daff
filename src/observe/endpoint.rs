//! The load balancer, from hactl: TCP on every address, and a TLS handshake that verifies the
//! endpoint host against the cluster CA, failing with Go's x509 words when it does not.

use std::time::Duration;

use crate::observed::EndpointObservation;
use crate::spec::Endpoint;

/// TCP to every `endpoint.addresses` at `endpoint.port`; then, through the first that accepted,
/// TLS with SNI `endpoint.host` verified against `ca_pem` (`None` when there is no CA to verify
/// against, or no address accepted TCP).
pub async fn probe_endpoint(
    endpoint: &Endpoint,
    ca_pem: Option<&str>,
    timeout: Duration,
) -> EndpointObservation {
    let _ = (endpoint, ca_pem, timeout);
    todo!("helper C")
}
