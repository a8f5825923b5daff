//! etcd, through `etcdctl` on a control-plane node with kubeadm's certificate paths: the
//! member list and each started member's health.

use crate::observed::EtcdObservation;
use crate::transport::NodeTransport;

/// `etcdctl member list` and `endpoint health` run on `transport`'s node.
pub async fn read_etcd<T: NodeTransport>(transport: &T) -> EtcdObservation {
    let _ = transport;
    todo!("helper B")
}
