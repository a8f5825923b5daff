//! Live observation: every node over SSH, the Kubernetes API, etcd and the load balancer, in
//! parallel, into one [`ObservedState`]. Read-only: nothing on the cluster changes.

pub mod api;
pub mod endpoint;
pub mod etcd;
pub mod node;
