//! TCP and TLS to an address as Go's client does it, failing in Go's words: the load
//! balancer's probe, the API client's dialer and the served-certificate check share it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::install_crypto_provider;
use crate::tls_verify::{GoVerifier, go_tls_error, x509_message};

/// A TCP connection, or why not in Go's `net.Dial` words (`dial tcp A:P: connect: connection
/// refused`, `dial tcp A:P: i/o timeout`).
pub async fn dial(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("dial tcp {addr}: connect: {}", os_text(&e))),
        Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
    }
}

/// A TLS handshake on `stream` for `host` (SNI and the name verified); the failure as Go says
/// it: the bare x509 message for a certificate that does not verify (`x509: certificate is
/// valid for …, not HOST`), crypto/tls's words otherwise.
pub async fn handshake(
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
pub fn os_text(e: &std::io::Error) -> String {
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
}
