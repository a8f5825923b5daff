//! `hactl apply`'s engine: the plan as steps, each with its undo and its check against the
//! cluster, run through the seams (never I/O of its own), journaled before every action, and
//! rolled back in reverse when a step fails or from a journal after a crash.

pub mod certificate;
pub mod configmap;
pub mod driver;
pub mod handlers;
pub mod journal;
pub mod kubeconfig;
pub mod lock;
pub mod steps;
