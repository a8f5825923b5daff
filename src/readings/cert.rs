//! Certificates as observation records them: the API server certificate
//! ([`CertificateObservation`]) and the CA pin kubeadm's `--discovery-token-ca-cert-hash` uses.

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::X509Name;

use crate::observed::{CertificateObservation, KeyType, San};
use crate::plan::sha256;

/// Why a certificate file could not be read as one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("no PEM CERTIFICATE block: {0}")]
    Pem(String),
    #[error("not a valid X.509 certificate: {0}")]
    Der(String),
    #[error("unsupported key: {0} (kubeadm writes RSA 2048/3072/4096 or ECDSA P-256/P-384)")]
    Key(String),
    #[error("invalid subject alternative name extension: {0}")]
    San(String),
    #[error("invalid validity time: {0}")]
    Time(String),
}

/// The DER of the first `CERTIFICATE` block of a PEM file (a CA file may hold a bundle).
pub fn first_certificate_der(pem_text: &str) -> Result<Vec<u8>, CertError> {
    let blocks = pem::parse_many(pem_text).map_err(|e| CertError::Pem(e.to_string()))?;
    blocks
        .into_iter()
        .find(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .ok_or_else(|| CertError::Pem("the file holds no certificate".into()))
}

fn parse_der(der: &[u8]) -> Result<X509Certificate<'_>, CertError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| CertError::Der(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertError::Der(format!(
            "{} bytes after the certificate",
            rest.len()
        )));
    }
    Ok(cert)
}

/// `sha256:<hex>` of the certificate's DER SubjectPublicKeyInfo, as kubeadm pins a CA.
pub fn ca_pin(ca_pem: &str) -> Result<String, CertError> {
    let der = first_certificate_der(ca_pem)?;
    let cert = parse_der(&der)?;
    Ok(sha256(cert.public_key().raw))
}

/// The certificate in `cert_pem`, and whether `ca_pem` issued it (its issuer is the CA's
/// subject and its signature verifies with the CA's key). `ca_pem: None` (no `ca.crt`): not
/// issued by it.
pub fn certificate(
    cert_pem: &str,
    ca_pem: Option<&str>,
) -> Result<CertificateObservation, CertError> {
    let der = first_certificate_der(cert_pem)?;
    let cert = parse_der(&der)?;
    let ca_der = ca_pem.and_then(|p| first_certificate_der(p).ok());
    let ca = ca_der.as_deref().and_then(|d| parse_der(d).ok());
    let issuer_matches_ca = ca.as_ref().is_some_and(|ca| {
        cert.issuer().as_raw() == ca.subject().as_raw()
            && cert.verify_signature(Some(ca.public_key())).is_ok()
    });
    let sans = match cert
        .subject_alternative_name()
        .map_err(|e| CertError::San(e.to_string()))?
    {
        None => Vec::new(),
        Some(ext) => ext
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(Ok(San::Dns((*d).to_string()))),
                GeneralName::IPAddress(b) => Some(ip(b).map(San::Ip)),
                // kubeadm writes only DNS names and IPs; the contract has no other kind.
                _ => None,
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(CertificateObservation {
        subject: rfc2253(cert.subject()),
        issuer: rfc2253(cert.issuer()),
        sans,
        key_type: key_type(&cert)?,
        not_before: rfc3339(cert.validity().not_before.timestamp())?,
        not_after: rfc3339(cert.validity().not_after.timestamp())?,
        issuer_matches_ca,
        sha256: Some(sha256(cert_pem.as_bytes())),
        public_key_sha256: Some(sha256(cert.public_key().raw)),
    })
}

fn ip(bytes: &[u8]) -> Result<std::net::IpAddr, CertError> {
    match bytes.len() {
        4 => {
            let a: [u8; 4] = bytes.try_into().map_err(|_| CertError::San("IP".into()))?;
            Ok(std::net::IpAddr::from(a))
        }
        16 => {
            let a: [u8; 16] = bytes.try_into().map_err(|_| CertError::San("IP".into()))?;
            Ok(std::net::IpAddr::from(a))
        }
        n => Err(CertError::San(format!("an IP address of {n} bytes"))),
    }
}

fn key_type(cert: &X509Certificate<'_>) -> Result<KeyType, CertError> {
    let parsed = cert
        .public_key()
        .parsed()
        .map_err(|e| CertError::Key(e.to_string()))?;
    match parsed {
        PublicKey::RSA(rsa) => {
            // x509-parser's key_size assumes a leading zero byte; count the bits instead.
            let m = rsa.modulus;
            let start = m.iter().position(|&b| b != 0).unwrap_or(m.len());
            let bits = m
                .get(start)
                .map_or(0, |&b| (m.len() - start) * 8 - b.leading_zeros() as usize);
            match bits {
                2048 => Ok(KeyType::Rsa2048),
                3072 => Ok(KeyType::Rsa3072),
                4096 => Ok(KeyType::Rsa4096),
                n => Err(CertError::Key(format!("RSA {n} bits"))),
            }
        }
        PublicKey::EC(point) => {
            let curve = cert
                .public_key()
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            match (curve.as_deref(), point.key_size()) {
                (Some("1.2.840.10045.3.1.7") | None, 256) => Ok(KeyType::EcdsaP256),
                (Some("1.3.132.0.34") | None, 384) => Ok(KeyType::EcdsaP384),
                (c, n) => Err(CertError::Key(format!(
                    "EC curve {} ({n} bits)",
                    c.unwrap_or("unnamed")
                ))),
            }
        }
        other => Err(CertError::Key(format!("{other:?}"))),
    }
}

fn rfc3339(unix: i64) -> Result<String, CertError> {
    let t = time::OffsetDateTime::from_unix_timestamp(unix)
        .map_err(|e| CertError::Time(e.to_string()))?;
    t.format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| CertError::Time(e.to_string()))
}

/// A name as `openssl -nameopt RFC2253` prints it: the last RDN first, `,` between RDNs, `+`
/// inside one, RFC 2253 escapes.
pub fn rfc2253(name: &X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let ty = x509_parser::objects::oid2abbrev(atv.attr_type(), registry)
                        .map(str::to_string)
                        .unwrap_or_else(|_| atv.attr_type().to_id_string());
                    let value = atv
                        .as_str()
                        .map(escape_2253)
                        .unwrap_or_else(|_| format!("#{}", hex::encode(atv.as_slice())));
                    format!("{ty}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn escape_2253(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
