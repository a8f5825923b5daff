//! `kubeadm join`: discovery through cluster-info (JWS + CA pin), kubeadm-certs download,
//! etcd member add (learner from 1.29), static pods, kubeconfigs and the kubelet.

use super::KubeadmCtx;
use crate::lab::ExecOutput;

pub async fn run(_ctx: &KubeadmCtx<'_>, _args: &[&str]) -> ExecOutput {
    super::failure("hactl lab: `kubeadm join` is not simulated yet\n")
}
