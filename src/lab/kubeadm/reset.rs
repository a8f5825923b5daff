//! `kubeadm reset [-f]`: reads the cluster's configuration through admin.conf when there is
//! one, asks for confirmation (no terminal here, so without `-f` it aborts as kubeadm does
//! on an empty answer), removes the node's etcd member when it is a stacked control-plane
//! node (warning and going on when it cannot), stops the kubelet and every container, and
//! empties kubeadm's directories and files.

use std::time::Duration;

use super::join::{Out, etcd};
use super::{Flags, KubeadmCtx};
use crate::lab::ExecOutput;
use crate::lab::components::client::ApiClient;
use crate::lab::components::manifest::StaticPod;

const MANIFESTS: &str = "/etc/kubernetes/manifests";
const ADVERTISE_ANNOTATION: &str =
    "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint";

pub async fn run(ctx: &KubeadmCtx<'_>, args: &[&str]) -> ExecOutput {
    let flags = match Flags::parse(
        args,
        &["cert-dir", "cri-socket", "kubeconfig"],
        &["force", "f", "dry-run", "cleanup-tmp-dir"],
    ) {
        Ok(f) => f,
        Err(e) => return super::error_exit(String::new(), &e),
    };
    if flags.is_set("dry-run") {
        return super::failure("hactl lab: `kubeadm reset --dry-run` is not simulated\n");
    }
    let mut out = Out::default();
    let cert_dir = flags
        .get("cert-dir")
        .unwrap_or("/etc/kubernetes/pki")
        .to_string();
    let kubeconfig = flags
        .get("kubeconfig")
        .unwrap_or("/etc/kubernetes/admin.conf")
        .to_string();

    // The configuration from the cluster, when this node can reach it as an admin:
    // `Some(data_dir)` (None inside with external etcd).
    let mut client = None;
    let mut config: Option<Option<String>> = None;
    if ctx.lab.node_path(&ctx.node.name, &kubeconfig).exists()
        && let Ok(c) = ApiClient::from_kubeconfig(ctx.lab, ctx.node, &kubeconfig)
    {
        let c = c
            .with_timeout(Duration::from_secs(10))
            .with_component("kubeadm", ctx.spec.version);
        out.line("[reset] Reading configuration from the cluster...");
        out.line("[reset] FYI: You can look at this config file with 'kubectl -n kube-system get cm kubeadm-config -o yaml'");
        match cluster_etcd_dir(&c).await {
            Ok(dir) => {
                config = Some(dir);
                client = Some(c);
            }
            Err(e) => out.warn(
                "reset.go:124",
                &format!("[reset] Unable to fetch the kubeadm-config ConfigMap from cluster: {e}"),
            ),
        }
    }

    // preflight: the confirmation kubeadm asks for.
    if !(flags.is_set("force") || flags.is_set("f")) {
        out.warn(
            "preflight.go:56",
            "[reset] WARNING: Changes made to this host by 'kubeadm init' or 'kubeadm join' will be reverted.",
        );
        out.stdout
            .push_str("[reset] Are you sure you want to proceed? [y/N]: ");
        return ExecOutput {
            stdout: out.stdout,
            stderr: format!(
                "{}error execution phase preflight: aborted reset operation\nTo see the stack trace of this error execute with --v=5 or higher\n",
                out.stderr
            ),
            code: 1,
        };
    }
    out.line("[preflight] Running pre-flight checks");

    // remove-etcd-member
    let etcd_manifest = format!("{MANIFESTS}/etcd.yaml");
    let stacked = config.as_ref().and_then(|d| d.clone());
    let data_dir = match &stacked {
        Some(d) => d.clone(),
        None => {
            if config.is_none() {
                out.warn(
                    "removeetcdmember.go:93",
                    "[reset] No kubeadm config, using etcd pod spec to get data directory",
                );
            }
            manifest_data_dir(ctx, &etcd_manifest)
        }
    };
    if let (Some(c), Some(dir)) = (&client, &stacked) {
        match remove_member(ctx, c, &cert_dir).await {
            Err(e) => out.warn(
                "removeetcdmember.go:63",
                &format!(
                    "[reset] Failed to remove etcd member: {e}, please manually remove this etcd member using etcdctl"
                ),
            ),
            Ok(()) => {
                clean_dir(ctx, dir);
                out.line(format!(
                    "[reset] Deleted contents of the etcd data directory: {dir}"
                ));
            }
        }
    }
    if !dir_empty(ctx, &data_dir) {
        let dir = &data_dir;
        clean_dir(ctx, dir);
        out.line(format!(
            "[reset] Deleted contents of the etcd data directory: {dir}"
        ));
    }

    // cleanup-node
    out.line("[reset] Stopping the kubelet service");
    ctx.agent.power_off().await;
    out.line("[reset] Unmounting mounted directories in \"/var/lib/kubelet\"");
    let dirs = [MANIFESTS, "/var/lib/kubelet", cert_dir.as_str()];
    out.line(format!(
        "[reset] Deleting contents of directories: [{}]",
        dirs.join(" ")
    ));
    for d in dirs {
        clean_dir(ctx, d);
    }
    let mut files = vec!["/etc/kubernetes/admin.conf"];
    if ctx.spec.version.minor >= 29 {
        files.push("/etc/kubernetes/super-admin.conf");
    }
    files.extend([
        "/etc/kubernetes/kubelet.conf",
        "/etc/kubernetes/bootstrap-kubelet.conf",
        "/etc/kubernetes/controller-manager.conf",
        "/etc/kubernetes/scheduler.conf",
    ]);
    out.line(format!("[reset] Deleting files: [{}]", files.join(" ")));
    for f in files {
        let _ = std::fs::remove_file(ctx.lab.node_path(&ctx.node.name, f));
    }
    out.stdout.push_str(
        "\nThe reset process does not clean CNI configuration. To do so, you must remove /etc/cni/net.d\n\nThe reset process does not reset or clean up iptables rules or IPVS tables.\nIf you wish to reset iptables, you must do so manually by using the \"iptables\" command.\n\nIf your cluster was setup to utilize IPVS, run ipvsadm --clear (or similar)\nto reset your system's IPVS tables.\n\nThe reset process does not clean your kubeconfig files and you must remove them manually.\nPlease, check the contents of the $HOME/.kube/config file.\n",
    );
    ExecOutput {
        stdout: out.stdout,
        stderr: out.stderr,
        code: 0,
    }
}

/// `etcd.local.dataDir` of the cluster's ClusterConfiguration (None: external etcd).
async fn cluster_etcd_dir(client: &ApiClient) -> Result<Option<String>, String> {
    let r = client
        .get("/api/v1/namespaces/kube-system/configmaps/kubeadm-config")
        .await
        .map_err(|e| format!("failed to get config map: {e}"))?;
    if !r.is_success() {
        return Err(format!("failed to get config map: {}", r.status_message()));
    }
    let cm = r.json()?;
    let text = cm["data"]["ClusterConfiguration"].as_str().unwrap_or("");
    let parsed = super::join::cluster::parse(text)?;
    Ok(parsed.etcd_data_dir)
}

/// The etcd member of this node: its advertise address from the apiserver manifest.
async fn remove_member(
    ctx: &KubeadmCtx<'_>,
    client: &ApiClient,
    cert_dir: &str,
) -> Result<(), String> {
    let addr = advertise_address(ctx).unwrap_or_else(|| ctx.node.address.to_string());
    let blocked = ctx.faults.blocks_port(&ctx.node.name, 2379);
    let etcd = etcd::client_from_cluster(ctx.lab, ctx.node, client, cert_dir, blocked).await?;
    etcd::remove_own_member(&etcd, &addr, &ctx.etcd_retry()).await
}

/// The address kubeadm recorded in the local kube-apiserver manifest's annotation.
fn advertise_address(ctx: &KubeadmCtx<'_>) -> Option<String> {
    let path = ctx
        .lab
        .node_path(&ctx.node.name, &format!("{MANIFESTS}/kube-apiserver.yaml"));
    let text = std::fs::read_to_string(path).ok()?;
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).ok()?;
    let endpoint = docs.first()?["metadata"]["annotations"][ADVERTISE_ANNOTATION]
        .as_str()?
        .to_string();
    let host = match endpoint.rsplit_once(':') {
        Some((h, _)) => h,
        None => endpoint.as_str(),
    };
    Some(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )
}

/// The etcd pod's data volume, or kubeadm's default when there is no manifest.
fn manifest_data_dir(ctx: &KubeadmCtx<'_>, manifest: &str) -> String {
    let text = std::fs::read_to_string(ctx.lab.node_path(&ctx.node.name, manifest));
    text.ok()
        .and_then(|t| StaticPod::parse(&t).ok())
        .and_then(|p| p.flag("data-dir").map(str::to_string))
        .unwrap_or_else(|| "/var/lib/etcd".to_string())
}

fn dir_empty(ctx: &KubeadmCtx<'_>, dir: &str) -> bool {
    std::fs::read_dir(ctx.lab.node_path(&ctx.node.name, dir))
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

/// kubeadm's `CleanDir`: everything in the directory, not the directory (a bind mount in
/// the lab).
fn clean_dir(ctx: &KubeadmCtx<'_>, dir: &str) {
    let host = ctx.lab.node_path(&ctx.node.name, dir);
    let Ok(entries) = std::fs::read_dir(&host) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        let _ = if is_dir {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
    }
}
