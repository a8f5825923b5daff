//! Certificates and keys as kubeadm writes them: RSA-2048 PKCS#1 (`RSA PRIVATE KEY`) or
//! ECDSA P-256 SEC1 (`EC PRIVATE KEY`), signed with rcgen (aws-lc-rs).
//!
//! OWNER: helper A (pki + files). Interface used by others:
//! `new_ca`, `issue`, `ca_pin`, `CertSpec`, `KeyType`, `CertAndKey`.
