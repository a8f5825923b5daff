//! Reads and edits kubeadm's ClusterConfiguration (the `kubeadm-config` ConfigMap) as text.
//!
//! kubeadm writes the document with Go's sorted keys; hactl sets `controlPlaneEndpoint` and
//! appends to `apiServer.certSANs` where kubeadm itself would have written them, so the diff is
//! the few lines that change and the document keeps its `apiVersion` form (v1beta3 or v1beta4).
//! Every edit is read back and compared with the intended change.

use std::collections::BTreeMap;
use std::net::IpAddr;

use yaml_rust2::{Yaml, YamlLoader};

use crate::yaml::{self, Node, YamlError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterConfigError {
    #[error("not valid YAML: {0}")]
    Yaml(#[from] YamlError),
    #[error("not a ClusterConfiguration (kind is {0:?})")]
    WrongKind(String),
    #[error("{0} is written in a form hactl does not edit ({1}); edit it to block style")]
    Unsupported(&'static str, String),
    #[error("the edited document did not read back as intended")]
    Verification,
}

/// What planning needs to know from a ClusterConfiguration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub api_version: String,
    pub kubernetes_version: Option<String>,
    pub control_plane_endpoint: Option<String>,
    pub cert_sans: Vec<String>,
    pub dns_domain: String,
    pub service_subnet: String,
}

impl ClusterConfig {
    /// The first IP of the service subnet: the `kubernetes` Service's ClusterIP, a SAN kubeadm
    /// always puts on the API server certificate.
    pub fn first_service_ip(&self) -> Option<IpAddr> {
        // Dual-stack clusters list two subnets; kubeadm uses the first.
        let first = self.service_subnet.split(',').next()?.trim();
        let (network, _) = first.split_once('/')?;
        match network.parse::<IpAddr>().ok()? {
            IpAddr::V4(v4) => Some(IpAddr::V4((u32::from(v4).checked_add(1)?).into())),
            IpAddr::V6(v6) => Some(IpAddr::V6((u128::from(v6).checked_add(1)?).into())),
        }
    }
}

/// Reads the facts planning needs.
pub fn read(text: &str) -> Result<ClusterConfig, ClusterConfigError> {
    let root = yaml::parse(text)?;
    let kind = root.get("kind").and_then(Node::as_str).unwrap_or("");
    if kind != "ClusterConfiguration" {
        return Err(ClusterConfigError::WrongKind(kind.to_string()));
    }
    let s = |n: Option<&Node>| n.and_then(Node::as_str).map(str::to_string);
    let networking = root.get("networking");
    Ok(ClusterConfig {
        api_version: s(root.get("apiVersion")).unwrap_or_default(),
        kubernetes_version: s(root.get("kubernetesVersion")),
        control_plane_endpoint: s(root.get("controlPlaneEndpoint")).filter(|e| !e.is_empty()),
        cert_sans: root
            .get("apiServer")
            .and_then(|a| a.get("certSANs"))
            .map(Node::items)
            .unwrap_or(&[])
            .iter()
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect(),
        // kubeadm's defaults, for documents that leave them out.
        dns_domain: s(networking.and_then(|n| n.get("dnsDomain")))
            .unwrap_or_else(|| "cluster.local".into()),
        service_subnet: s(networking.and_then(|n| n.get("serviceSubnet")))
            .unwrap_or_else(|| "10.96.0.0/12".into()),
    })
}

/// The document with `controlPlaneEndpoint` set to `endpoint` and every name of `sans` that is
/// missing appended to `apiServer.certSANs`. Returns the text unchanged when nothing is missing.
pub fn converge(text: &str, endpoint: &str, sans: &[String]) -> Result<String, ClusterConfigError> {
    let current = read(text)?;
    let mut out = text.to_string();
    if current.control_plane_endpoint.as_deref() != Some(endpoint) {
        out = set_top_level(&out, "controlPlaneEndpoint", endpoint)?;
    }
    let missing: Vec<&str> = sans
        .iter()
        .map(String::as_str)
        .filter(|s| !current.cert_sans.iter().any(|c| c == s))
        .collect();
    if !missing.is_empty() {
        out = add_cert_sans(&out, &missing)?;
    }
    verify(text, &out, endpoint, &missing)?;
    Ok(out)
}

/// A scalar as Go's YAML would write it: plain when that reads back the same.
fn scalar(value: &str) -> String {
    let plain_ok = !value.is_empty()
        && !value.starts_with([
            '-', '?', ':', ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"', '%',
            '@', '`', ' ',
        ])
        && !value.contains(": ")
        && !value.contains(" #")
        && !value.ends_with([' ', ':'])
        && matches!(
            YamlLoader::load_from_str(value).ok().as_deref(),
            Some([Yaml::String(s)]) if s == value
        );
    if plain_ok {
        value.to_string()
    } else {
        yaml::quote_like(&yaml_rust2::scanner::TScalarStyle::DoubleQuoted, value)
    }
}

/// Byte offset of the start of the line holding `node`.
fn line_start_of(text: &str, node: &Node) -> usize {
    yaml::line_offset(text, node.pos().line).unwrap_or(text.len())
}

/// Ensures the text ends with a newline, so appended lines start on their own.
fn with_final_newline(text: &str) -> String {
    let mut t = text.to_string();
    if !t.is_empty() && !t.ends_with('\n') {
        t.push('\n');
    }
    t
}

/// Inserts `lines` before the first key of `entries` that sorts after `key` (Go's order), or at
/// `fallback` when none does.
fn insert_sorted(
    text: &str,
    entries: &[(Node, Node)],
    key: &str,
    lines: &str,
    fallback: usize,
) -> String {
    let at = entries
        .iter()
        .find(|(k, _)| k.as_str().is_some_and(|k| k > key))
        .map_or(fallback, |(k, _)| line_start_of(text, k));
    let mut out = String::with_capacity(text.len() + lines.len());
    out.push_str(&text[..at]);
    out.push_str(lines);
    out.push_str(&text[at..]);
    out
}

fn set_top_level(text: &str, key: &str, value: &str) -> Result<String, ClusterConfigError> {
    let text = with_final_newline(text);
    let root = yaml::parse(&text)?;
    let Node::Map { entries, .. } = &root else {
        return Err(ClusterConfigError::Unsupported(
            "the document",
            "not a mapping".into(),
        ));
    };
    if let Some((_, node)) = entries.iter().find(|(k, _)| k.as_str() == Some(key)) {
        let span = yaml::scalar_span(&text, node)
            .map_err(|e| ClusterConfigError::Unsupported("controlPlaneEndpoint", e.message))?;
        return Ok(format!(
            "{}{}{}",
            &text[..span.start],
            scalar(value),
            &text[span.end..]
        ));
    }
    let line = format!("{key}: {}\n", scalar(value));
    Ok(insert_sorted(&text, entries, key, &line, text.len()))
}

fn add_cert_sans(text: &str, missing: &[&str]) -> Result<String, ClusterConfigError> {
    let text = with_final_newline(text);
    let root = yaml::parse_with_flow(&text)?;
    let Node::Map { entries: top, .. } = &root else {
        return Err(ClusterConfigError::Unsupported(
            "the document",
            "not a mapping".into(),
        ));
    };
    let items = |indent: &str| -> String {
        missing
            .iter()
            .map(|s| format!("{indent}- {}\n", scalar(s)))
            .collect()
    };
    let Some(idx) = top
        .iter()
        .position(|(k, _)| k.as_str() == Some("apiServer"))
    else {
        let block = format!("apiServer:\n  certSANs:\n{}", items("  "));
        return Ok(insert_sorted(&text, top, "apiServer", &block, text.len()));
    };
    let (key, api_server) = &top[idx];
    // Where the apiServer block ends: the next top-level key's line, or the end.
    let block_end = top
        .get(idx + 1)
        .map_or(text.len(), |(k, _)| line_start_of(&text, k));
    match api_server {
        Node::Map {
            entries,
            flow: true,
            ..
        } if entries.is_empty() => {
            // `apiServer: {}` becomes a block mapping.
            let start = line_start_of(&text, key);
            let end = text[start..]
                .find('\n')
                .map_or(text.len(), |i| start + i + 1);
            let block = format!("apiServer:\n  certSANs:\n{}", items("  "));
            Ok(format!("{}{block}{}", &text[..start], &text[end..]))
        }
        Node::Map {
            entries,
            flow: false,
            ..
        } => {
            let indent = " ".repeat(entries.first().map_or(2, |(k, _)| k.pos().col));
            match entries.iter().find(|(k, _)| k.as_str() == Some("certSANs")) {
                None => {
                    let block = format!("{indent}certSANs:\n{}", items(&indent));
                    Ok(insert_sorted(&text, entries, "certSANs", &block, block_end))
                }
                Some((
                    _,
                    Node::Seq {
                        items: existing,
                        flow: false,
                        ..
                    },
                )) => {
                    let last = existing.last().ok_or_else(|| {
                        ClusterConfigError::Unsupported(
                            "apiServer.certSANs",
                            "an empty block list".into(),
                        )
                    })?;
                    // New items take the last item's prefix (indentation and `- `).
                    let line_start = line_start_of(&text, last);
                    let prefix: String = text[line_start..].chars().take(last.pos().col).collect();
                    if prefix.trim() != "-" {
                        return Err(ClusterConfigError::Unsupported(
                            "apiServer.certSANs",
                            "list items that are not `- name` lines".into(),
                        ));
                    }
                    let span = yaml::scalar_span(&text, last).map_err(|e| {
                        ClusterConfigError::Unsupported("apiServer.certSANs", e.message)
                    })?;
                    let after = text[span.end..]
                        .find('\n')
                        .map_or(text.len(), |i| span.end + i + 1);
                    let added: String = missing
                        .iter()
                        .map(|s| format!("{prefix}{}\n", scalar(s)))
                        .collect();
                    Ok(format!("{}{added}{}", &text[..after], &text[after..]))
                }
                Some(_) => Err(ClusterConfigError::Unsupported(
                    "apiServer.certSANs",
                    "a flow list or a non-list".into(),
                )),
            }
        }
        _ => Err(ClusterConfigError::Unsupported(
            "apiServer",
            "a flow mapping or a non-mapping".into(),
        )),
    }
}

/// A YAML value with mappings in sorted order, so that key order does not count as a change.
fn canonical(y: &Yaml) -> String {
    match y {
        Yaml::Hash(h) => {
            let sorted: BTreeMap<String, String> = h
                .iter()
                .map(|(k, v)| (canonical(k), canonical(v)))
                .collect();
            format!("{sorted:?}")
        }
        Yaml::Array(a) => format!("{:?}", a.iter().map(canonical).collect::<Vec<_>>()),
        other => format!("{other:?}"),
    }
}

/// The edited document equals the original with exactly the intended change.
fn verify(
    before: &str,
    after: &str,
    endpoint: &str,
    added: &[&str],
) -> Result<(), ClusterConfigError> {
    let load = |t: &str| -> Result<Yaml, ClusterConfigError> {
        YamlLoader::load_from_str(t)
            .ok()
            .and_then(|mut docs| docs.pop())
            .ok_or(ClusterConfigError::Verification)
    };
    let mut want = load(before)?;
    let got = load(after)?;
    let Yaml::Hash(root) = &mut want else {
        return Err(ClusterConfigError::Verification);
    };
    let key = |k: &str| Yaml::String(k.to_string());
    root.insert(key("controlPlaneEndpoint"), key(endpoint));
    if !added.is_empty() {
        let api = root
            .entry(key("apiServer"))
            .or_insert(Yaml::Hash(Default::default()));
        let Yaml::Hash(api) = api else {
            return Err(ClusterConfigError::Verification);
        };
        let sans = api
            .entry(key("certSANs"))
            .or_insert(Yaml::Array(Vec::new()));
        let Yaml::Array(sans) = sans else {
            return Err(ClusterConfigError::Verification);
        };
        sans.extend(added.iter().map(|s| key(s)));
    }
    if canonical(&want) == canonical(&got) {
        Ok(())
    } else {
        Err(ClusterConfigError::Verification)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1BETA4: &str = "apiServer: {}
apiVersion: kubeadm.k8s.io/v1beta4
caCertificateValidityPeriod: 87600h0m0s
certificateValidityPeriod: 8760h0m0s
certificatesDir: /etc/kubernetes/pki
clusterName: kubernetes
controllerManager: {}
dns: {}
encryptionAlgorithm: RSA-2048
etcd:
  local:
    dataDir: /var/lib/etcd
imageRepository: registry.k8s.io
kind: ClusterConfiguration
kubernetesVersion: v1.31.2
networking:
  dnsDomain: cluster.local
  serviceSubnet: 10.96.0.0/12
proxy: {}
scheduler: {}
";

    const V1BETA3: &str = "apiServer:
  extraArgs:
    authorization-mode: Node,RBAC
  timeoutForControlPlane: 4m0s
apiVersion: kubeadm.k8s.io/v1beta3
certificatesDir: /etc/kubernetes/pki
clusterName: kubernetes
controllerManager: {}
dns: {}
etcd:
  local:
    dataDir: /var/lib/etcd
imageRepository: k8s.gcr.io
kind: ClusterConfiguration
kubernetesVersion: v1.23.17
networking:
  dnsDomain: cluster.local
  serviceSubnet: 10.96.0.0/12
scheduler: {}
";

    fn sans() -> Vec<String> {
        vec!["k8s-api.lab.internal".into(), "127.0.0.100".into()]
    }

    #[test]
    fn v1beta4_gets_the_endpoint_and_sans_where_kubeadm_writes_them() {
        let out = converge(V1BETA4, "k8s-api.lab.internal:6443", &sans()).unwrap();
        let want = V1BETA4
            .replace(
                "apiServer: {}\n",
                "apiServer:\n  certSANs:\n  - k8s-api.lab.internal\n  - 127.0.0.100\n",
            )
            .replace(
                "clusterName: kubernetes\n",
                "clusterName: kubernetes\ncontrolPlaneEndpoint: k8s-api.lab.internal:6443\n",
            );
        assert_eq!(out, want);
        // Converging again changes nothing.
        assert_eq!(
            converge(&out, "k8s-api.lab.internal:6443", &sans()).unwrap(),
            out
        );
    }

    #[test]
    fn v1beta3_keeps_its_extra_args_map() {
        let out = converge(V1BETA3, "k8s-api.lab.internal:6443", &sans()).unwrap();
        assert!(out.starts_with(
            "apiServer:\n  certSANs:\n  - k8s-api.lab.internal\n  - 127.0.0.100\n  extraArgs:\n    authorization-mode: Node,RBAC\n"
        ));
        assert_eq!(read(&out).unwrap().api_version, "kubeadm.k8s.io/v1beta3");
    }

    #[test]
    fn existing_sans_are_kept_and_extended_and_an_old_endpoint_replaced() {
        let text = V1BETA3
            .replace(
                "  extraArgs:",
                "  certSANs:\n  - old.example.com\n  - k8s-api.lab.internal\n  extraArgs:",
            )
            .replace(
                "clusterName: kubernetes\n",
                "clusterName: kubernetes\ncontrolPlaneEndpoint: 10.0.0.1:6443\n",
            );
        let out = converge(&text, "k8s-api.lab.internal:6443", &sans()).unwrap();
        assert!(out.contains("  certSANs:\n  - old.example.com\n  - k8s-api.lab.internal\n  - 127.0.0.100\n  extraArgs:"));
        assert!(out.contains("controlPlaneEndpoint: k8s-api.lab.internal:6443\n"));
        assert_eq!(out.lines().count(), text.lines().count() + 1);
    }

    #[test]
    fn a_document_without_api_server_or_final_newline() {
        let text = "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration";
        let out = converge(text, "lb:6443", &["lb".to_string(), "::1".to_string()]).unwrap();
        assert_eq!(
            out,
            "apiServer:\n  certSANs:\n  - lb\n  - \"::1\"\napiVersion: kubeadm.k8s.io/v1beta3\ncontrolPlaneEndpoint: lb:6443\nkind: ClusterConfiguration\n"
        );
    }

    #[test]
    fn reads_the_facts_and_the_first_service_ip() {
        let c = read(V1BETA4).unwrap();
        assert_eq!(c.control_plane_endpoint, None);
        assert_eq!(c.first_service_ip(), Some("10.96.0.1".parse().unwrap()));
        assert_eq!(c.kubernetes_version.as_deref(), Some("v1.31.2"));
        let dual = ClusterConfig {
            service_subnet: "fd00::/108,10.0.0.0/16".into(),
            ..c
        };
        assert_eq!(dual.first_service_ip(), Some("fd00::1".parse().unwrap()));
        assert!(matches!(
            read("kind: InitConfiguration\n"),
            Err(ClusterConfigError::WrongKind(_))
        ));
    }

    #[test]
    fn refuses_forms_it_does_not_edit() {
        let flow = V1BETA4.replace("apiServer: {}", "apiServer: {certSANs: [a]}");
        assert!(matches!(
            converge(&flow, "lb:6443", &sans()),
            Err(ClusterConfigError::Unsupported(..))
        ));
    }
}
