//! Certificates and keys as kubeadm writes them: RSA-2048 PKCS#1 (`RSA PRIVATE KEY`) or
//! ECDSA P-256 SEC1 (`EC PRIVATE KEY`), signed with rcgen (aws-lc-rs). One signer for the
//! lab (which makes a cluster as kubeadm does) and for apply (`KubeadmSigner`, which reissues
//! the API server certificate for the key it has).
//!
//! Interface used by others: `new_ca`, `issue`, `reissue`, `KubeadmSigner`, `ca_pin`,
//! `rsa_key`, `public_key_pem`, `CertSpec`, `KeyType`, `CertAndKey`. rcgen serializes keys as PKCS#8; kubeadm (Go's
//! `x509.MarshalPKCS1PrivateKey` / `MarshalECPrivateKey`) writes the inner key, so the
//! PKCS#8 wrapper is taken off here (`to_kubeadm_pem`).

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, SanType,
    SerialNumber,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::observed::San;

/// kubeadm's validity periods (constants.CertificateValidityPeriod, CACertificateValidityPeriod).
const CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// kubeadm backdates CA NotBefore (constants.CertificateBackdate) against clock skew.
const CA_BACKDATE: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("key generation failed: {0}")]
    KeyGen(rcgen::Error),
    #[error("signing the certificate failed: {0}")]
    Sign(rcgen::Error),
    #[error("the CA certificate or key cannot be read: {0}")]
    BadCa(String),
    #[error("the key cannot be read: {0}")]
    BadKey(String),
    #[error("the certificate cannot be read: {0}")]
    BadCert(String),
    #[error("the system random source failed")]
    Random,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    Rsa2048,
    EcdsaP256,
}

/// A certificate and its private key, both PEM. Debug leaves the key out: it is a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for CertAndKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertAndKey")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
    ServerAndClient,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSpec {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub usage: Usage,
    pub key_type: KeyType,
}

impl CertSpec {
    /// A spec with no organizations or SANs, RSA-2048: kubeadm's default.
    pub fn new(common_name: &str, usage: Usage) -> Self {
        CertSpec {
            common_name: common_name.to_string(),
            organizations: Vec::new(),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            usage,
            key_type: KeyType::Rsa2048,
        }
    }
}

/// Fills `buf` from the system's secure random source (aws-lc-rs, through rustls).
pub fn random_bytes(buf: &mut [u8]) -> Result<(), PkiError> {
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(buf)
        .map_err(|_| PkiError::Random)
}

/// A random positive serial number, as Go's `rand.Int(rand.Reader, 2^63-1)` gives kubeadm.
fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut b = [0u8; 8];
    random_bytes(&mut b)?;
    b[0] &= 0x7f;
    if b[0] == 0 {
        b[0] = 1; // keep the length fixed and the value positive
    }
    Ok(SerialNumber::from_slice(&b))
}

fn generate_key(key_type: KeyType) -> Result<KeyPair, PkiError> {
    let alg = match key_type {
        KeyType::Rsa2048 => &PKCS_RSA_SHA256,
        KeyType::EcdsaP256 => &PKCS_ECDSA_P256_SHA256,
    };
    KeyPair::generate_for(alg).map_err(PkiError::KeyGen)
}

/// `t` to the second, as certificates store it.
fn to_second(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

/// kubeadm's CA: 10 years, RSA-2048, KeyUsage DigitalSignature|KeyEncipherment|CertSign,
/// BasicConstraints CA, SubjectKeyIdentifier.
/// `now` comes from the caller: the core reads no clock.
pub fn new_ca(common_name: &str, now: OffsetDateTime) -> Result<CertAndKey, PkiError> {
    let key = generate_key(KeyType::Rsa2048)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.serial_number = Some(random_serial()?);
    let not_before = to_second(now) - CA_BACKDATE;
    params.not_before = not_before;
    params.not_after = not_before + CA_VALIDITY;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
    ];
    let cert = params.self_signed(&key).map_err(PkiError::Sign)?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: to_kubeadm_pem(&key)?,
    })
}

/// A certificate signed by `ca`, as kubeadm's `pkiutil.NewCertAndKey` makes it: random serial,
/// NotBefore = the CA's NotBefore, NotAfter = now + 1 year, AKI = the CA's SKI, KeyUsage
/// DigitalSignature|KeyEncipherment, ExtKeyUsage per `spec.usage`, not a CA.
pub fn issue(
    ca: &CertAndKey,
    spec: &CertSpec,
    now: OffsetDateTime,
) -> Result<CertAndKey, PkiError> {
    let key = generate_key(spec.key_type)?;
    let cert = sign(ca, spec, &key, to_second(now))?;
    Ok(CertAndKey {
        cert_pem: cert,
        key_pem: to_kubeadm_pem(&key)?,
    })
}

/// kubeadm's profile for `spec`, for `public_key`, signed by `ca`, valid from the CA's
/// NotBefore to `now` + 1 year.
fn sign(
    ca: &CertAndKey,
    spec: &CertSpec,
    public_key: &impl rcgen::PublicKeyData,
    now: OffsetDateTime,
) -> Result<String, PkiError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(|e| PkiError::BadCa(e.to_string()))?;
    let ca_not_before =
        cert_not_before(&ca.cert_pem).map_err(|e| PkiError::BadCa(e.to_string()))?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)
        .map_err(|e| PkiError::BadCa(e.to_string()))?;

    let mut params = CertificateParams::default();
    // Go's pkix.Name puts O before CN.
    let mut dn = DistinguishedName::new();
    for o in &spec.organizations {
        dn.push(DnType::OrganizationName, o.as_str());
    }
    dn.push(DnType::CommonName, spec.common_name.as_str());
    params.distinguished_name = dn;
    params.serial_number = Some(random_serial()?);
    params.not_before = ca_not_before;
    params.not_after = now.replace_nanosecond(0).unwrap_or(now) + CERT_VALIDITY;
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = match spec.usage {
        Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Usage::ServerAndClient => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    };
    // Go writes DNS names before IP addresses.
    for d in &spec.dns_names {
        let name = d
            .as_str()
            .try_into()
            .map_err(|e: rcgen::Error| PkiError::Sign(e))?;
        params.subject_alt_names.push(SanType::DnsName(name));
    }
    for ip in &spec.ip_addresses {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    let cert = params
        .signed_by(public_key, &issuer)
        .map_err(PkiError::Sign)?;
    Ok(cert.pem())
}

/// The API server certificate `cert_pem` issued again, by `ca`, for the public key it has
/// (no private key is read or made), with `sans` (DNS names before addresses, as Go writes
/// them) and kubeadm's serving profile; valid until `now` + 1 year.
pub fn reissue(
    ca: &CertAndKey,
    cert_pem: &str,
    sans: &[San],
    now: OffsetDateTime,
) -> Result<String, PkiError> {
    let der = pem_contents(cert_pem, "CERTIFICATE").map_err(PkiError::BadCert)?;
    let (_, old) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| PkiError::BadCert(e.to_string()))?;
    let public_key = rcgen::SubjectPublicKeyInfo::from_der(old.public_key().raw)
        .map_err(|e| PkiError::BadCert(format!("its public key: {e}")))?;
    let text = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
        it.filter_map(|a| a.as_str().ok().map(String::from))
            .collect::<Vec<_>>()
    };
    let common_name = text(&mut old.subject().iter_common_name())
        .into_iter()
        .next()
        .ok_or_else(|| PkiError::BadCert("it has no common name".into()))?;
    let mut spec = CertSpec::new(&common_name, Usage::Server);
    spec.organizations = text(&mut old.subject().iter_organization());
    for san in sans {
        match san {
            San::Dns(d) => spec.dns_names.push(d.clone()),
            San::Ip(ip) => spec.ip_addresses.push(*ip),
        }
    }
    sign(ca, &spec, &public_key, now)
}

/// The signer apply uses: reissues for the existing key with the cluster CA, whose key it is
/// handed in memory and drops.
#[derive(Clone, Copy, Debug, Default)]
pub struct KubeadmSigner;

impl crate::seams::Signer for KubeadmSigner {
    fn issue(
        &self,
        ca_cert_pem: &str,
        ca_key_pem: &str,
        req: &crate::seams::CertRequest,
    ) -> Result<String, crate::seams::SeamError> {
        let ca = CertAndKey {
            cert_pem: ca_cert_pem.to_string(),
            key_pem: ca_key_pem.to_string(),
        };
        let sign_err = |e: String| crate::seams::SeamError::Sign(e);
        // The plan says which key the certificate is for; a key of another type is another key.
        let found = crate::readings::cert::certificate(&req.cert_pem, None)
            .map_err(|e| sign_err(e.to_string()))?
            .key_type;
        if found != req.key_type {
            return Err(sign_err(format!(
                "the certificate's key is {found:?}, the plan was made for {:?}; run `hactl plan` again",
                req.key_type
            )));
        }
        let now = OffsetDateTime::from_unix_timestamp(req.now.as_secs() as i64)
            .map_err(|e| sign_err(e.to_string()))?;
        reissue(&ca, &req.cert_pem, &req.sans, now).map_err(|e| sign_err(e.to_string()))
    }
}

/// A self-signed serving certificate as the kubelet makes `kubelet.crt` when no serving
/// certificate is configured (client-go `GenerateSelfSignedCertKey`): a CA `<host>-ca@<unix>`
/// signs `<host>@<unix>`; the file holds the leaf then the CA.
pub fn kubelet_serving(
    host: &str,
    addresses: &[IpAddr],
    key_type: KeyType,
    now: OffsetDateTime,
) -> Result<CertAndKey, PkiError> {
    let now = to_second(now);
    let stamp = now.unix_timestamp();
    let ca_key = generate_key(key_type)?;
    let mut ca_params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("{host}-ca@{stamp}"));
    ca_params.distinguished_name = dn;
    ca_params.serial_number = Some(SerialNumber::from_slice(&[1]));
    let not_before = now;
    ca_params.not_before = not_before;
    ca_params.not_after = not_before + CERT_VALIDITY;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(PkiError::Sign)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = generate_key(key_type)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("{host}@{stamp}"));
    params.distinguished_name = dn;
    params.serial_number = Some(SerialNumber::from_slice(&[2]));
    params.not_before = not_before;
    params.not_after = not_before + CERT_VALIDITY;
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let name = host
        .try_into()
        .map_err(|e: rcgen::Error| PkiError::Sign(e))?;
    params.subject_alt_names.push(SanType::DnsName(name));
    for ip in addresses {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    let cert = params.signed_by(&key, &issuer).map_err(PkiError::Sign)?;
    Ok(CertAndKey {
        cert_pem: format!("{}{}", cert.pem(), ca_cert.pem()),
        key_pem: to_kubeadm_pem(&key)?,
    })
}

/// `sha256:` + hex SHA-256 of the certificate's DER SubjectPublicKeyInfo: what
/// `--discovery-token-ca-cert-hash` pins.
pub fn ca_pin(ca_cert_pem: &str) -> Result<String, PkiError> {
    let der = pem_contents(ca_cert_pem, "CERTIFICATE").map_err(PkiError::BadCert)?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| PkiError::BadCert(e.to_string()))?;
    let spki = cert.tbs_certificate.subject_pki.raw;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(spki))))
}

/// A new RSA-2048 key, PKCS#1 PEM (`sa.key`).
pub fn rsa_key() -> Result<String, PkiError> {
    to_kubeadm_pem(&generate_key(KeyType::Rsa2048)?)
}

/// The `PUBLIC KEY` PEM (PKIX SubjectPublicKeyInfo) of a private key, as kubeadm writes `sa.pub`.
pub fn public_key_pem(key_pem: &str) -> Result<String, PkiError> {
    let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::BadKey(e.to_string()))?;
    Ok(key.public_key_pem())
}

fn cert_not_before(cert_pem: &str) -> Result<OffsetDateTime, String> {
    let der = pem_contents(cert_pem, "CERTIFICATE")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| e.to_string())?;
    Ok(cert.validity().not_before.to_datetime())
}

/// The contents of the first PEM block with `tag`.
fn pem_contents(text: &str, tag: &str) -> Result<Vec<u8>, String> {
    pem::parse_many(text)
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|p| p.tag() == tag)
        .map(|p| p.into_contents())
        .ok_or_else(|| format!("no {tag} PEM block"))
}

/// The key as kubeadm writes it: PKCS#1 `RSA PRIVATE KEY` or SEC1 `EC PRIVATE KEY`.
fn to_kubeadm_pem(key: &KeyPair) -> Result<String, PkiError> {
    let der = key.serialized_der();
    let (tag, inner) = if key.algorithm() == &PKCS_RSA_SHA256 {
        ("RSA PRIVATE KEY", der::pkcs8_inner(der)?)
    } else {
        (
            "EC PRIVATE KEY",
            der::sec1_with_curve(&der::pkcs8_inner(der)?)?,
        )
    };
    Ok(pem::encode_config(
        &pem::Pem::new(tag, inner),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    ))
}

/// Just enough DER to take keys out of PKCS#8 (RFC 5208) and complete SEC1 (RFC 5915).
mod der {
    use super::PkiError;

    fn bad(what: &str) -> PkiError {
        PkiError::BadKey(format!("malformed DER: {what}"))
    }

    /// One TLV at the start of `b`: (tag, contents, rest).
    pub(super) fn tlv(b: &[u8]) -> Result<(u8, &[u8], &[u8]), PkiError> {
        let (&tag, rest) = b.split_first().ok_or_else(|| bad("empty"))?;
        let (&first, rest) = rest.split_first().ok_or_else(|| bad("no length"))?;
        let (len, rest) = if first < 0x80 {
            (first as usize, rest)
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || rest.len() < n {
                return Err(bad("length"));
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &x| (acc << 8) | x as usize);
            (len, &rest[n..])
        };
        if rest.len() < len {
            return Err(bad("truncated"));
        }
        Ok((tag, &rest[..len], &rest[len..]))
    }

    pub(super) fn encode(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = contents.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|&b| b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(contents);
        out
    }

    /// PrivateKeyInfo ::= SEQUENCE { version, AlgorithmIdentifier, privateKey OCTET STRING, … }
    pub(super) fn pkcs8_inner(der: &[u8]) -> Result<Vec<u8>, PkiError> {
        let (tag, seq, _) = tlv(der)?;
        if tag != 0x30 {
            return Err(bad("PrivateKeyInfo is not a SEQUENCE"));
        }
        let (_, _, rest) = tlv(seq)?; // version
        let (_, _, rest) = tlv(rest)?; // algorithm
        let (tag, key, _) = tlv(rest)?;
        if tag != 0x04 {
            return Err(bad("privateKey is not an OCTET STRING"));
        }
        Ok(key.to_vec())
    }

    /// prime256v1 as SEC1's `[0] ECParameters`: Go and OpenSSL write the curve in the key;
    /// PKCS#8 leaves it to the AlgorithmIdentifier.
    const P256_PARAMS: &[u8] = &[
        0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ];

    /// ECPrivateKey ::= SEQUENCE { version, privateKey, [0] parameters OPTIONAL, [1] publicKey }
    pub(super) fn sec1_with_curve(ec: &[u8]) -> Result<Vec<u8>, PkiError> {
        let (tag, seq, _) = tlv(ec)?;
        if tag != 0x30 {
            return Err(bad("ECPrivateKey is not a SEQUENCE"));
        }
        let (_, _, after_version) = tlv(seq)?;
        let (_, _, after_key) = tlv(after_version)?;
        if after_key.first() == Some(&0xa0) {
            return Ok(ec.to_vec());
        }
        let head = seq.len() - after_key.len();
        let mut body = seq[..head].to_vec();
        body.extend_from_slice(P256_PARAMS);
        body.extend_from_slice(after_key);
        Ok(encode(0x30, &body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed now (2026-11-29): the core reads no clock, and tests are repeatable.
    fn test_now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_796_000_000).unwrap()
    }

    #[test]
    fn a_reissued_certificate_keeps_its_key_and_subject_and_gets_the_sans_asked_for() {
        use crate::seams::{CertRequest, Signer};
        let ca = new_ca("kubernetes", test_now()).unwrap();
        for key_type in [KeyType::Rsa2048, KeyType::EcdsaP256] {
            let mut spec = CertSpec::new("kube-apiserver", Usage::Server);
            spec.dns_names = vec!["cp1".into(), "kubernetes".into()];
            spec.ip_addresses = vec!["10.96.0.1".parse().unwrap()];
            spec.key_type = key_type;
            let old = issue(&ca, &spec, test_now()).unwrap();
            let sans: Vec<San> = [
                "DNS:cp1",
                "DNS:kubernetes",
                "IP:10.96.0.1",
                "DNS:k8s-api.lab.internal",
                "IP:127.0.0.100",
            ]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
            let observed = crate::readings::cert::certificate(&old.cert_pem, None).unwrap();
            let req = CertRequest {
                cert_pem: old.cert_pem.clone(),
                sans: sans.clone(),
                key_type: observed.key_type,
                now: std::time::Duration::from_secs(1_800_000_000),
            };
            let new = KubeadmSigner
                .issue(&ca.cert_pem, &ca.key_pem, &req)
                .unwrap();
            let got = crate::readings::cert::certificate(&new, Some(&ca.cert_pem)).unwrap();
            assert!(got.issuer_matches_ca, "signed by the cluster CA");
            assert_eq!(
                got.public_key_sha256, observed.public_key_sha256,
                "the same key"
            );
            assert_eq!(got.subject, "CN=kube-apiserver");
            assert_eq!(
                got.sans,
                [
                    "DNS:cp1",
                    "DNS:kubernetes",
                    "DNS:k8s-api.lab.internal",
                    "IP:10.96.0.1",
                    "IP:127.0.0.100"
                ]
                .map(|s| s.parse::<San>().unwrap())
            );
            assert_eq!(
                got.not_before, observed.not_before,
                "from the CA's NotBefore"
            );
            assert_eq!(got.not_after, "2028-01-15T08:00:00Z", "now + 365 days");
            assert_ne!(new, old.cert_pem);
            // A key of another type than planned is refused.
            let other = CertRequest {
                key_type: crate::observed::KeyType::Rsa4096,
                ..req
            };
            assert!(
                KubeadmSigner
                    .issue(&ca.cert_pem, &ca.key_pem, &other)
                    .is_err()
            );
        }
    }

    #[test]
    fn keys_are_written_in_kubeadm_formats() {
        let ca = new_ca("kubernetes", test_now()).unwrap();
        // PKCS#1 and SEC1, by their PEM labels: what kubeadm writes.
        assert_eq!(pem::parse(&ca.key_pem).unwrap().tag(), "RSA PRIVATE KEY");
        let mut spec = CertSpec::new("system:node:w1", Usage::Client);
        spec.key_type = KeyType::EcdsaP256;
        let leaf = issue(&ca, &spec, test_now()).unwrap();
        assert_eq!(pem::parse(&leaf.key_pem).unwrap().tag(), "EC PRIVATE KEY");
        // Both read back, which needs the curve inside the SEC1 key.
        KeyPair::from_pem(&leaf.key_pem).unwrap();
        KeyPair::from_pem(&ca.key_pem).unwrap();
        assert!(!format!("{ca:?}").contains("PRIVATE"));
    }

    #[test]
    fn der_lengths_round_trip() {
        for len in [0usize, 5, 127, 128, 255, 256, 70000] {
            let content = vec![7u8; len];
            let enc = der::encode(0x04, &content);
            let (tag, got, rest) = der::tlv(&enc).unwrap();
            assert_eq!((tag, got.len(), rest.len()), (0x04, len, 0));
        }
        assert!(der::tlv(&[0x30, 0x05, 1]).is_err());
    }

    #[test]
    fn pin_changes_with_the_key() {
        let a = new_ca("a", test_now()).unwrap();
        let b = new_ca("a", test_now()).unwrap();
        let pa = ca_pin(&a.cert_pem).unwrap();
        assert_eq!(pa.len(), "sha256:".len() + 64);
        assert_ne!(pa, ca_pin(&b.cert_pem).unwrap());
    }
}
