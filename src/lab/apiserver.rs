//! The simulated kube-apiserver: HTTPS with the node's serving certificate, objects in etcd,
//! client-certificate and bearer-token auth, enough REST for kubectl and kube-rs.
//!
//! OWNER: helper B (apiserver + etcd client).
