//! `kubeadm init phase upload-config kubeadm --config F`: the kubeadm-config ConfigMap.

use super::KubeadmCtx;
use crate::lab::ExecOutput;

pub async fn upload_config(_ctx: &KubeadmCtx<'_>, _args: &[&str]) -> ExecOutput {
    super::failure("hactl lab: `kubeadm init phase upload-config` is not simulated yet\n")
}
