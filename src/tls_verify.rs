//! Server certificate verification in Go's order and words (crypto/x509 `Certificate.Verify`):
//! validity period, then host name, then the chain. Shared by the lab's API client and hactl's
//! load-balancer probe so both fail with the exact message kubectl and kubeadm print. Pure: it
//! only looks at certificates; the TLS connections are the callers'.

use std::net::IpAddr;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use time::OffsetDateTime;
use time::macros::format_description;

/// A `ServerCertVerifier` that trusts the CA certificates of one PEM bundle and fails with
/// Go's x509 error text (see [`x509_message`]).
#[derive(Debug)]
pub struct GoVerifier {
    inner: Arc<WebPkiServerVerifier>,
    /// The trusted CA certificates, for Go's "possibly because of" hint.
    roots: Vec<Vec<u8>>,
}

impl GoVerifier {
    /// A verifier trusting every certificate in `ca_pem`; errors in client-go's words
    /// (`unable to load root certificates: …`). Uses rustls' process-wide crypto provider when
    /// one is installed, aws-lc-rs otherwise.
    pub fn from_ca_pem(ca_pem: &[u8]) -> Result<GoVerifier, String> {
        let mut ders = Vec::new();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| format!("unable to load root certificates: {e}"))?;
            ders.push(cert.as_ref().to_vec());
        }
        if ders.is_empty() {
            return Err(
                "unable to load root certificates: unable to parse bytes as PEM block".into(),
            );
        }
        GoVerifier::from_ca_der(ders)
    }

    /// A verifier trusting these DER certificates (a kubeconfig's decoded CA bundle).
    pub fn from_ca_der(ders: Vec<Vec<u8>>) -> Result<GoVerifier, String> {
        let mut roots = RootCertStore::empty();
        for der in &ders {
            roots
                .add(CertificateDer::from(der.clone()))
                .map_err(|e| format!("unable to load root certificates: {e}"))?;
        }
        let provider = rustls::crypto::CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("unable to load root certificates: {e}"))?;
        Ok(GoVerifier { inner, roots: ders })
    }

    /// What a TLS client verifying for `host` at `now` (Unix seconds) says of a server that
    /// presents `served_pem` (the leaf first, then intermediates): x509's words, as a
    /// handshake with that server ends.
    pub fn verify_served_pem(&self, served_pem: &[u8], host: &str, now: i64) -> Result<(), String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(served_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("x509: malformed certificate: {e}"))?;
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err("x509: malformed certificate: no PEM block".into());
        };
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| format!("tls: invalid server name {host:?}"))?;
        let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(now.max(0) as u64));
        self.verify_server_cert(leaf, intermediates, &name, &[], now)
            .map(|_| ())
            .map_err(|e| x509_message(&e).unwrap_or_else(|| go_tls_error(&e)))
    }

    /// Go's `Certificate.Verify` with `KeyUsages: Any` and no host name, as kubeadm's
    /// `VerifyCertChain` checks a certificate on disk against `ca.crt`: the validity period at
    /// `now` (Unix seconds), then a trusted CA that issued and signed it.
    pub fn verify_signed(&self, leaf_der: &[u8], now: i64) -> Result<(), String> {
        let (_, cert) = x509_parser::parse_x509_certificate(leaf_der)
            .map_err(|e| format!("x509: malformed certificate: {e}"))?;
        validity(&cert, now)?;
        let signed = self.roots.iter().any(|der| {
            x509_parser::parse_x509_certificate(der).is_ok_and(|(_, ca)| {
                ca.subject().as_raw() == cert.issuer().as_raw()
                    && validity(&ca, now).is_ok()
                    && cert.verify_signature(Some(ca.public_key())).is_ok()
            })
        });
        if signed {
            Ok(())
        } else {
            Err(self.unknown_authority(&cert))
        }
    }

    /// Go adds a hint when a trusted CA has the issuer's name but did not sign the
    /// certificate (a regenerated CA with the same name: the classic mistake).
    fn unknown_authority(&self, leaf: &x509_parser::certificate::X509Certificate<'_>) -> String {
        let base = "x509: certificate signed by unknown authority".to_string();
        for der in &self.roots {
            let Ok((_, ca)) = x509_parser::parse_x509_certificate(der) else {
                continue;
            };
            if ca.subject().as_raw() != leaf.issuer().as_raw() {
                continue;
            }
            let oid = ca.public_key().algorithm.algorithm.to_id_string();
            let hint = match oid.as_str() {
                "1.2.840.113549.1.1.1" => "crypto/rsa: verification error",
                "1.2.840.10045.2.1" => "x509: ECDSA verification failure",
                "1.3.101.112" => "x509: Ed25519 verification failure",
                _ => "x509: signature verification failure",
            };
            let name = ca
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(String::from)
                .or_else(|| {
                    ca.subject()
                        .iter_organization()
                        .next()
                        .and_then(|o| o.as_str().ok())
                        .map(String::from)
                })
                .unwrap_or_else(|| format!("serial:{}", ca.serial));
            return format!(
                "{base} (possibly because of {hint:?} while trying to verify candidate authority certificate {name:?})"
            );
        }
        base
    }
}

/// Go's x509 error, carried through rustls as `CertificateError::Other`.
#[derive(Debug)]
struct GoX509(String);

impl std::fmt::Display for GoX509 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for GoX509 {}

fn go_err(msg: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(GoX509(msg)))))
}

/// The Go x509 message (`x509: certificate is valid for …`) inside a rustls error, when the
/// error came from a [`GoVerifier`]; other certificate errors as `x509: {:?}`.
pub fn x509_message(err: &rustls::Error) -> Option<String> {
    match err {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(e))) => {
            Some(e.to_string())
        }
        rustls::Error::InvalidCertificate(other) => Some(format!("x509: {other:?}")),
        _ => None,
    }
}

/// A rustls error as Go's crypto/tls words it on the client side: `tls: failed to verify
/// certificate: x509: …`, `remote error: tls: bad certificate`, `tls: …`.
pub fn go_tls_error(err: &rustls::Error) -> String {
    if let Some(x509) = x509_message(err) {
        return format!("tls: failed to verify certificate: {x509}");
    }
    match err {
        rustls::Error::AlertReceived(alert) => format!("remote error: tls: {}", go_alert(*alert)),
        other => format!("tls: {other}"),
    }
}

/// A TLS alert's description as Go prints it.
pub fn go_alert(a: rustls::AlertDescription) -> String {
    use rustls::AlertDescription as A;
    match a {
        A::BadCertificate => "bad certificate".into(),
        A::UnknownCA => "unknown certificate authority".into(),
        A::HandshakeFailure => "handshake failure".into(),
        A::CertificateRequired => "certificate required".into(),
        A::CertificateExpired => "expired certificate".into(),
        A::DecryptError => "error decrypting message".into(),
        A::InternalError => "internal error".into(),
        A::ProtocolVersion => "protocol version not supported".into(),
        other => format!("alert({})", u8::from(other)),
    }
}

/// `2006-01-02T15:04:05Z`: Go's RFC 3339 in UTC, as its expiry message prints times.
fn rfc3339(secs: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .unwrap_or_default()
}

/// Go's validity check of one certificate at `now` (Unix seconds), in its words.
fn validity(cert: &x509_parser::certificate::X509Certificate<'_>, now: i64) -> Result<(), String> {
    let nb = cert.validity().not_before.timestamp();
    let na = cert.validity().not_after.timestamp();
    if now < nb {
        return Err(format!(
            "x509: certificate has expired or is not yet valid: current time {} is before {}",
            rfc3339(now),
            rfc3339(nb)
        ));
    }
    if now > na {
        return Err(format!(
            "x509: certificate has expired or is not yet valid: current time {} is after {}",
            rfc3339(now),
            rfc3339(na)
        ));
    }
    Ok(())
}

impl ServerCertVerifier for GoVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let (_, cert) = x509_parser::parse_x509_certificate(end_entity.as_ref())
            .map_err(|e| go_err(format!("x509: malformed certificate: {e}")))?;
        validity(&cert, now.as_secs() as i64).map_err(go_err)?;
        let host = match server_name {
            ServerName::DnsName(d) => d.as_ref().to_string(),
            ServerName::IpAddress(ip) => IpAddr::from(*ip).to_string(),
            _ => String::new(),
        };
        verify_hostname(&cert, &host).map_err(go_err)?;
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(v) => Ok(v),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature,
            )) => Err(go_err(self.unknown_authority(&cert))),
            Err(rustls::Error::InvalidCertificate(CertificateError::InvalidPurpose)) => Err(
                go_err("x509: certificate specifies an incompatible key usage".into()),
            ),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Err(go_err(hostname_error(&cert, &host))),
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The certificate's SANs in certificate order: (DNS names, IP addresses, whether it has a
/// SAN extension at all).
pub fn cert_sans(
    cert: &x509_parser::certificate::X509Certificate<'_>,
) -> (Vec<String>, Vec<IpAddr>, bool) {
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    let mut has_ext = false;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        has_ext = true;
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => dns.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        ips.push(IpAddr::from(a));
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        ips.push(IpAddr::from(a));
                    }
                }
                _ => {}
            }
        }
    }
    (dns, ips, has_ext)
}

/// Go's `Certificate.VerifyHostname`: IPs against IP SANs, names against DNS SANs
/// (case-insensitive, `*.` matching one label); the Common Name is never used.
pub fn verify_hostname(
    cert: &x509_parser::certificate::X509Certificate<'_>,
    host: &str,
) -> Result<(), String> {
    let (dns, ips, _) = cert_sans(cert);
    if let Ok(ip) = host.parse::<IpAddr>() {
        if ips.contains(&ip) {
            return Ok(());
        }
        return Err(hostname_error(cert, host));
    }
    let want = host.trim_end_matches('.').to_ascii_lowercase();
    for pattern in &dns {
        if match_hostname(&pattern.to_ascii_lowercase(), &want) {
            return Ok(());
        }
    }
    Err(hostname_error(cert, host))
}

/// Go's wildcard rule: same number of labels, `*` only as the whole first label.
pub fn match_hostname(pattern: &str, host: &str) -> bool {
    if pattern.is_empty() || host.is_empty() {
        return false;
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let h: Vec<&str> = host.split('.').collect();
    if p.len() != h.len() {
        return false;
    }
    p.iter()
        .zip(&h)
        .enumerate()
        .all(|(i, (pl, hl))| (i == 0 && *pl == "*") || pl == hl)
}

/// Go's `HostnameError.Error()`, word for word.
pub fn hostname_error(cert: &x509_parser::certificate::X509Certificate<'_>, host: &str) -> String {
    let (dns, ips, has_ext) = cert_sans(cert);
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or("");
    if !has_ext && match_hostname(&cn.to_ascii_lowercase(), &host.to_ascii_lowercase()) {
        return "x509: certificate relies on legacy Common Name field, use SANs instead".into();
    }
    let valid = if host.parse::<IpAddr>().is_ok() {
        if ips.is_empty() {
            return format!(
                "x509: cannot validate certificate for {host} because it doesn't contain any IP SANs"
            );
        }
        ips.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        dns.join(", ")
    };
    if valid.is_empty() {
        return format!("x509: certificate is not valid for any names, but wanted to match {host}");
    }
    format!("x509: certificate is valid for {valid}, not {host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kubeadm-shaped apiserver certificate (cp1's SANs, no LB) from a fresh CA.
    fn apiserver_cert() -> (String, Vec<u8>) {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.distinguished_name.push(DnType::CommonName, "kubernetes");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().expect("key");
        let ca_pem = ca.self_signed(&ca_key).expect("ca").pem();
        let issuer = Issuer::new(ca, ca_key);
        let sans = [
            "cp1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "10.96.0.1",
            "127.0.0.11",
        ]
        .map(String::from)
        .to_vec();
        let leaf = CertificateParams::new(sans).expect("params");
        let key = KeyPair::generate().expect("key");
        let der = leaf.signed_by(&key, &issuer).expect("leaf").der().to_vec();
        (ca_pem, der)
    }

    #[test]
    fn go_hostname_matching() {
        assert!(match_hostname("*.lab.internal", "k8s-api.lab.internal"));
        assert!(!match_hostname("*.lab.internal", "a.b.lab.internal"));
        assert!(match_hostname("cp1", "cp1"));
        assert!(!match_hostname("cp1", "cp2"));
    }

    #[test]
    fn hostname_errors_list_the_sans_of_the_kind_asked_for() {
        let (_, der) = apiserver_cert();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");
        assert_eq!(
            verify_hostname(&cert, "k8s-api.lab.internal"),
            Err("x509: certificate is valid for cp1, kubernetes, kubernetes.default, kubernetes.default.svc, kubernetes.default.svc.cluster.local, not k8s-api.lab.internal".into())
        );
        assert_eq!(
            verify_hostname(&cert, "127.0.0.100"),
            Err("x509: certificate is valid for 10.96.0.1, 127.0.0.11, not 127.0.0.100".into())
        );
        assert_eq!(verify_hostname(&cert, "KUBERNETES."), Ok(()));
        assert_eq!(verify_hostname(&cert, "127.0.0.11"), Ok(()));
    }

    #[test]
    fn the_verifier_words_a_wrong_name_and_a_foreign_ca_as_go() {
        let (ca_pem, der) = apiserver_cert();
        let (other_ca, _) = apiserver_cert();
        let leaf = CertificateDer::from(der);
        let now = UnixTime::now();
        let name = ServerName::try_from("k8s-api.lab.internal").expect("name");
        let ok_name = ServerName::try_from("cp1").expect("name");

        let v = GoVerifier::from_ca_pem(ca_pem.as_bytes()).expect("verifier");
        let err = v
            .verify_server_cert(&leaf, &[], &name, &[], now)
            .expect_err("no LB SAN");
        assert_eq!(
            x509_message(&err).as_deref(),
            Some(
                "x509: certificate is valid for cp1, kubernetes, kubernetes.default, kubernetes.default.svc, kubernetes.default.svc.cluster.local, not k8s-api.lab.internal"
            )
        );
        assert!(v.verify_server_cert(&leaf, &[], &ok_name, &[], now).is_ok());

        let other = GoVerifier::from_ca_pem(other_ca.as_bytes()).expect("verifier");
        let err = other
            .verify_server_cert(&leaf, &[], &ok_name, &[], now)
            .expect_err("foreign CA");
        // Both CAs are named "kubernetes": Go names the candidate it tried.
        assert_eq!(
            go_tls_error(&err),
            "tls: failed to verify certificate: x509: certificate signed by unknown authority (possibly because of \"x509: ECDSA verification failure\" while trying to verify candidate authority certificate \"kubernetes\")"
        );
    }

    #[test]
    fn a_bundle_without_pem_is_refused_in_client_gos_words() {
        assert_eq!(
            GoVerifier::from_ca_pem(b"not a cert").map(|_| ()),
            Err("unable to load root certificates: unable to parse bytes as PEM block".into())
        );
    }
}
