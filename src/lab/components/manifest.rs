//! Static pod manifests (`/etc/kubernetes/manifests/*.yaml`): the fields the simulated
//! kubelet needs, and the lab's translation of a node's `127.0.0.1`.

use std::net::IpAddr;

use yaml_rust2::{Yaml, YamlLoader};

/// One static pod, as the kubelet reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticPod {
    /// `metadata.name` (`etcd`, `kube-apiserver`, …); the mirror pod is `<name>-<node>`.
    pub name: String,
    pub namespace: String,
    /// `metadata.labels` (`component`, `tier`).
    pub labels: Vec<(String, String)>,
    /// The first container's name, image and `command` (program and flags).
    pub container: String,
    pub image: String,
    pub command: Vec<String>,
    /// The manifest text, for the injected API server launcher and change detection.
    pub yaml: String,
}

impl StaticPod {
    pub fn parse(yaml: &str) -> Result<StaticPod, String> {
        let docs = YamlLoader::load_from_str(yaml).map_err(|e| format!("invalid YAML: {e}"))?;
        let doc = docs.first().ok_or("empty manifest")?;
        if doc["kind"].as_str() != Some("Pod") {
            return Err(format!(
                "kind is {:?}, not Pod",
                doc["kind"].as_str().unwrap_or("")
            ));
        }
        let name = doc["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or("metadata.name is missing")?
            .to_string();
        let namespace = doc["metadata"]["namespace"]
            .as_str()
            .unwrap_or("kube-system")
            .to_string();
        let labels = match &doc["metadata"]["labels"] {
            Yaml::Hash(h) => h
                .iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), yaml_scalar(v)?)))
                .collect(),
            _ => Vec::new(),
        };
        let c = doc["spec"]["containers"]
            .as_vec()
            .and_then(|v| v.first())
            .ok_or("spec.containers is empty")?;
        let mut command: Vec<String> = c["command"]
            .as_vec()
            .map(|v| v.iter().filter_map(yaml_scalar).collect())
            .unwrap_or_default();
        if let Some(args) = c["args"].as_vec() {
            command.extend(args.iter().filter_map(yaml_scalar));
        }
        Ok(StaticPod {
            name,
            namespace,
            labels,
            container: c["name"].as_str().unwrap_or("").to_string(),
            image: c["image"].as_str().unwrap_or("").to_string(),
            command,
            yaml: yaml.to_string(),
        })
    }

    /// The value of `--flag` in the command (`--flag=value` form, as kubeadm writes).
    pub fn flag(&self, flag: &str) -> Option<&str> {
        let prefix = format!("--{flag}=");
        self.command
            .iter()
            .find_map(|a| a.strip_prefix(prefix.as_str()))
    }

    /// The command as the lab runs it: the node's `127.0.0.1` is its own address.
    pub fn translated_command(&self, node_address: IpAddr) -> Vec<String> {
        self.command
            .iter()
            .map(|a| crate::lab::node_loopback(a, node_address))
            .collect()
    }
}

fn yaml_scalar(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETCD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  annotations:
    kubeadm.kubernetes.io/etcd.advertise-client-urls: https://127.0.0.11:2379
  creationTimestamp: null
  labels:
    component: etcd
    tier: control-plane
  name: etcd
  namespace: kube-system
spec:
  containers:
  - command:
    - etcd
    - --advertise-client-urls=https://127.0.0.11:2379
    - --data-dir=/var/lib/etcd
    - --listen-client-urls=https://127.0.0.1:2379,https://127.0.0.11:2379
    - --listen-metrics-urls=http://127.0.0.1:2381
    - --name=cp1
    image: registry.k8s.io/etcd:3.5.15-0
    name: etcd
"#;

    #[test]
    fn reads_kubeadms_etcd_manifest_and_translates_loopback() {
        let p = StaticPod::parse(ETCD).expect("parses");
        assert_eq!(p.name, "etcd");
        assert_eq!(p.namespace, "kube-system");
        assert_eq!(p.container, "etcd");
        assert_eq!(p.image, "registry.k8s.io/etcd:3.5.15-0");
        assert_eq!(p.flag("name"), Some("cp1"));
        assert!(p.labels.contains(&("component".into(), "etcd".into())));
        let cmd = p.translated_command("127.0.0.11".parse().expect("ip"));
        assert_eq!(cmd[0], "etcd");
        assert_eq!(
            cmd[3],
            "--listen-client-urls=https://127.0.0.11:2379,https://127.0.0.11:2379"
        );
        assert_eq!(cmd[4], "--listen-metrics-urls=http://127.0.0.11:2381");
    }

    #[test]
    fn refuses_what_is_not_a_pod() {
        assert!(StaticPod::parse("kind: Service\nmetadata:\n  name: x\n").is_err());
        assert!(StaticPod::parse("kind: Pod\nmetadata: {}\n").is_err());
    }
}
