//! The lab's PKI: the core's signer (`crate::pki`, kubeadm's profile) at the wall clock's now,
//! as kubeadm and the kubelet issue theirs; everything else as the core has it.

pub use crate::pki::*;

use std::net::IpAddr;

use time::OffsetDateTime;

/// kubeadm's CA, made now.
pub fn new_ca(common_name: &str) -> Result<CertAndKey, PkiError> {
    crate::pki::new_ca(common_name, OffsetDateTime::now_utc())
}

/// A certificate signed by `ca` now, as kubeadm's `pkiutil.NewCertAndKey` makes it.
pub fn issue(ca: &CertAndKey, spec: &CertSpec) -> Result<CertAndKey, PkiError> {
    crate::pki::issue(ca, spec, OffsetDateTime::now_utc())
}

/// The kubelet's self-signed serving certificate, made now.
pub fn kubelet_serving(
    host: &str,
    addresses: &[IpAddr],
    key_type: KeyType,
) -> Result<CertAndKey, PkiError> {
    crate::pki::kubelet_serving(host, addresses, key_type, OffsetDateTime::now_utc())
}
