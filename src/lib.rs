//! hactl: turn a single-control-plane kubeadm cluster into a highly available one, planned
//! like Terraform plans infrastructure.
//!
//! The pure core (`spec`, `graph`, `planner`, `plan`, `render`, and the text editors they use)
//! does no I/O; `cli` is the edge that reads files and prints, `observe` and `transport` reach the
//! cluster, and `lab` builds one to rehearse on.

pub mod apply;
pub mod cli;
pub mod cluster_config;
pub mod configmaps;
pub mod graph;
pub mod jws;
pub mod kubeadm;
pub mod kubeconfig;
pub mod lab;
pub mod observe;
pub mod observed;
pub mod pki;
pub mod plan;
pub mod planner;
pub mod readings;
pub mod render;
pub mod runs;
pub mod schema;
pub mod seams;
pub mod spec;
pub mod tls_verify;
pub mod transport;
pub mod yaml;
