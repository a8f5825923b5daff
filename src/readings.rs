//! What observation reads, parsed: pure functions from command output and file text to the
//! values of [`crate::observed`] (versions, certificates, etcd members, kubeconfig redaction).
//!
//! Pure so that the parsers are unit-tested with the fixtures; `observe` does the reading.
