//! `kubeadm init phase upload-config kubeadm [--config F]`: stores the ClusterConfiguration
//! in the kubeadm-config ConfigMap. Without `--config` kubeadm uploads its defaults, which
//! drop a `controlPlaneEndpoint` set by hand; the lab does the same.

use yaml_rust2::{Yaml, YamlLoader};

use super::{Flags, KubeadmCtx, error_exit, failure, token};
use crate::lab::ExecOutput;
use crate::lab::components::client::os_text;
use crate::lab::files::{Facts, cluster_configuration};

/// The ClusterConfiguration document of a kubeadm config file (which may also hold
/// InitConfiguration, JoinConfiguration, … separated by `---`).
pub fn cluster_configuration_doc(text: &str, path: &str) -> Result<Yaml, String> {
    let docs = YamlLoader::load_from_str(text)
        .map_err(|e| format!("unable to decode config from {path:?}: {e}"))?;
    for doc in docs {
        let api_version = doc["apiVersion"].as_str().unwrap_or("");
        if doc["kind"].as_str() != Some("ClusterConfiguration") {
            continue;
        }
        if !api_version.starts_with("kubeadm.k8s.io/") {
            return Err(format!(
                "unable to decode config from {path:?}: no kind \"ClusterConfiguration\" is registered for version {api_version:?}"
            ));
        }
        return Ok(doc);
    }
    Err(format!(
        "no ClusterConfiguration found in {path:?}; kubeadm needs `kind: ClusterConfiguration`"
    ))
}

/// The text of the ClusterConfiguration document among `---`-separated documents.
fn document_text(text: &str) -> Option<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            docs.push(String::new());
        } else if let Some(last) = docs.last_mut() {
            last.push_str(line);
            last.push('\n');
        }
    }
    docs.into_iter().find(|d| {
        YamlLoader::load_from_str(d)
            .ok()
            .and_then(|y| y.into_iter().next())
            .is_some_and(|y| y["kind"].as_str() == Some("ClusterConfiguration"))
    })
}

/// The API versions of kubeadm's config this Kubernetes version reads.
pub(super) fn supported(api_version: &str, minor: u32) -> bool {
    match api_version {
        "kubeadm.k8s.io/v1beta2" => minor < 26,
        "kubeadm.k8s.io/v1beta3" => minor >= 22,
        "kubeadm.k8s.io/v1beta4" => minor >= 31,
        _ => false,
    }
}

pub async fn upload_config(ctx: &KubeadmCtx<'_>, args: &[&str]) -> ExecOutput {
    let flags = match Flags::parse(args, &["config", "kubeconfig"], &["dry-run"]) {
        Ok(f) => f,
        Err(e) => return failure(format!("Error: {e}\n")),
    };
    let phase = |e: &str| {
        error_exit(
            String::new(),
            &format!("error execution phase upload-config/kubeadm: {e}"),
        )
    };
    let text = match flags.get("config") {
        None => match Facts::new(ctx.spec) {
            Ok(facts) => cluster_configuration(&facts),
            Err(e) => return phase(&e.to_string()),
        },
        Some(path) => {
            let text = match std::fs::read_to_string(ctx.lab.node_path(&ctx.node.name, path)) {
                Ok(t) => t,
                Err(e) => {
                    return phase(&format!(
                        "unable to read config from {path:?} : open {path}: {}",
                        os_text(&e)
                    ));
                }
            };
            let doc = match cluster_configuration_doc(&text, path) {
                Ok(d) => d,
                Err(e) => return phase(&e),
            };
            let api_version = doc["apiVersion"].as_str().unwrap_or("");
            if !supported(api_version, ctx.spec.version.minor) {
                return phase(&format!(
                    "your configuration file uses an old API spec: {api_version:?}. Please use kubeadm {} instead and run 'kubeadm config migrate --old-config old.yaml --new-config new.yaml', which will write the new, similar spec using a newer API version.",
                    ctx.spec.version.minor_string()
                ));
            }
            // Stored as written (kubeadm re-marshals it with its defaults; the lab keeps
            // the operator's bytes, which hold the same settings).
            match document_text(&text) {
                Some(doc) => doc,
                None => return phase("cannot find the ClusterConfiguration document"),
            }
        }
    };
    let (client, _) = match token::admin_client(ctx, &flags) {
        Ok(c) => c,
        Err(e) => return phase(&e),
    };
    let cm = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
        "data": {"ClusterConfiguration": text},
    });
    let stdout = "[upload-config] Storing the configuration used in ConfigMap \"kubeadm-config\" in the \"kube-system\" Namespace\n".to_string();
    if let Err(e) = client.create_or_update(&cm).await {
        return error_exit(
            stdout,
            &format!(
                "error execution phase upload-config/kubeadm: error uploading the kubeadm ClusterConfiguration: {e}"
            ),
        );
    }
    ExecOutput {
        stdout,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cluster_configuration_among_documents() {
        let text = "apiVersion: kubeadm.k8s.io/v1beta3\nkind: InitConfiguration\n---\napiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\ncontrolPlaneEndpoint: k8s-api.lab.internal:6443\n";
        let doc = cluster_configuration_doc(text, "/root/kubeadm.yaml").unwrap();
        assert_eq!(
            doc["controlPlaneEndpoint"].as_str(),
            Some("k8s-api.lab.internal:6443")
        );
        let err = cluster_configuration_doc("kind: InitConfiguration\n", "f").unwrap_err();
        assert!(err.contains("no ClusterConfiguration"), "{err}");
        assert_eq!(
            document_text(text).unwrap(),
            "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\ncontrolPlaneEndpoint: k8s-api.lab.internal:6443\n"
        );
        assert!(supported("kubeadm.k8s.io/v1beta4", 31));
        assert!(!supported("kubeadm.k8s.io/v1beta4", 30));
        assert!(!supported("kubeadm.k8s.io/v1beta2", 28));
    }
}
