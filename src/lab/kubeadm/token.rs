//! `kubeadm token create|list|delete`: bootstrap-token Secrets in kube-system.

use super::KubeadmCtx;
use crate::lab::ExecOutput;

pub async fn run(_ctx: &KubeadmCtx<'_>, _args: &[&str]) -> ExecOutput {
    super::failure("hactl lab: `kubeadm token` is not simulated yet\n")
}
