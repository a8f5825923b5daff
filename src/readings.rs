//! What observation reads, parsed: pure functions from command output and file text to the
//! values of [`crate::observed`] (versions, certificates, etcd members, kubeconfig redaction).
//!
//! Pure so that the parsers are unit-tested with the fixtures; `observe` does the reading.

pub mod api;
pub mod cert;
pub mod etcd;
pub mod node;
pub mod redact;

pub use cert::{CertError, ca_pin, certificate};
pub use etcd::{endpoint_health, etcd_observation, member_list};
pub use node::{
    RuntimeEvidence, Section, SectionStatus, apiserver_endpoint, container_runtime,
    kubeadm_version, kubelet_version, sections,
};
pub use redact::redact_kubeconfig;

#[cfg(test)]
mod tests;
