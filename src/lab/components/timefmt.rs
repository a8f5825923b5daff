//! Kubernetes' and Go's time formats, as the node agents use them (from `lab::clock`).

pub use crate::lab::clock::{now_rfc3339, parse_rfc3339, rfc3339, rfc3339_micro, unix_secs};
