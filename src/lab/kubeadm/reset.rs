//! `kubeadm reset -f`: remove the node's etcd member, stop its components, remove its files.

use super::KubeadmCtx;
use crate::lab::ExecOutput;

pub async fn run(_ctx: &KubeadmCtx<'_>, _args: &[&str]) -> ExecOutput {
    super::failure("hactl lab: `kubeadm reset` is not simulated yet\n")
}
