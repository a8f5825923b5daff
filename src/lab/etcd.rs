//! A client for real etcd's v3 JSON gateway over TLS (no protoc needed): KV with revisions,
//! transactions for resourceVersion checks, member list and health.
//!
//! OWNER: helper B (apiserver + etcd client).
