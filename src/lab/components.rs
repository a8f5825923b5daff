//! The simulated node agents: kubelet (with its container runtime and static pods),
//! kube-proxy, kube-controller-manager (bootstrapsigner, node lifecycle) and kube-scheduler.
//!
//! OWNER: helper C (components).
