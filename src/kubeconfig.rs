//! Reads and rewrites the `server:` of a kubeconfig, keeping every other byte of the file.
//!
//! The server that matters is the one of the cluster the current context names; a file with
//! several clusters (an operator's admin.conf) keeps the others untouched. Files without a
//! current context (cluster-info's) must hold exactly one cluster.

use yaml_rust2::scanner::TScalarStyle;

use crate::yaml::{self, Node, YamlError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeconfigError {
    #[error("not valid YAML: {0}")]
    Yaml(#[from] YamlError),
    #[error("the file has no clusters")]
    NoClusters,
    #[error("there is no current-context and {0} clusters: hactl cannot tell which one to change")]
    Ambiguous(usize),
    #[error("current-context {0:?} names no context in the file")]
    MissingContext(String),
    #[error("context {context:?} names cluster {cluster:?}, which is not in the file")]
    MissingCluster { context: String, cluster: String },
    #[error("cluster {0:?} has no server")]
    NoServer(String),
    #[error("cluster {cluster:?}: the server is not a one-line value: {source}")]
    Unsupported { cluster: String, source: YamlError },
}

/// The server line hactl would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRef {
    /// The cluster entry's name (`kubernetes`, `default-cluster`, `""`).
    pub cluster: String,
    /// The URL as written.
    pub server: String,
    /// Where the value stands in the text, quotes included.
    pub span: std::ops::Range<usize>,
    /// 1-based line of the value.
    pub line: usize,
}

/// The server of the cluster the current context uses.
pub fn current_server(text: &str) -> Result<ServerRef, KubeconfigError> {
    let root = yaml::parse(text)?;
    let clusters = root.get("clusters").map(Node::items).unwrap_or(&[]);
    if clusters.is_empty() {
        return Err(KubeconfigError::NoClusters);
    }
    let current = root
        .get("current-context")
        .and_then(Node::as_str)
        .unwrap_or("");
    let entry = if current.is_empty() {
        match clusters {
            [only] => only,
            _ => return Err(KubeconfigError::Ambiguous(clusters.len())),
        }
    } else {
        let context = root
            .get("contexts")
            .map(Node::items)
            .unwrap_or(&[])
            .iter()
            .find(|c| c.get("name").and_then(Node::as_str) == Some(current))
            .ok_or_else(|| KubeconfigError::MissingContext(current.to_string()))?;
        let wanted = context
            .get("context")
            .and_then(|c| c.get("cluster"))
            .and_then(Node::as_str)
            .unwrap_or("");
        clusters
            .iter()
            .find(|c| c.get("name").and_then(Node::as_str).unwrap_or("") == wanted)
            .ok_or_else(|| KubeconfigError::MissingCluster {
                context: current.to_string(),
                cluster: wanted.to_string(),
            })?
    };
    let name = entry
        .get("name")
        .and_then(Node::as_str)
        .unwrap_or("")
        .to_string();
    let server = entry
        .get("cluster")
        .and_then(|c| c.get("server"))
        .filter(|s| !s.is_null())
        .ok_or_else(|| KubeconfigError::NoServer(name.clone()))?;
    let span = yaml::scalar_span(text, server).map_err(|source| KubeconfigError::Unsupported {
        cluster: name.clone(),
        source,
    })?;
    Ok(ServerRef {
        cluster: name,
        server: server.as_str().unwrap_or("").to_string(),
        span,
        line: server.pos().line,
    })
}

/// The text with the current cluster's server replaced by `url`; nothing else changes.
pub fn set_server(text: &str, url: &str) -> Result<String, KubeconfigError> {
    replace_server(text, &current_server(text)?, url)
}

/// [`set_server`] for a caller that has read `current` from `text` already (the planner
/// does, for every kubeconfig: one YAML parse fewer each).
pub fn replace_server(
    text: &str,
    current: &ServerRef,
    url: &str,
) -> Result<String, KubeconfigError> {
    // Keep the quoting the file used.
    let style = match text[current.span.clone()].chars().next() {
        Some('"') => TScalarStyle::DoubleQuoted,
        Some('\'') => TScalarStyle::SingleQuoted,
        _ => TScalarStyle::Plain,
    };
    let mut out = String::with_capacity(text.len() + url.len());
    out.push_str(&text[..current.span.start]);
    out.push_str(&yaml::quote_like(&style, url));
    out.push_str(&text[current.span.end..]);
    // The edit must mean what it says: read it back.
    let check = current_server(&out)?;
    if check.server != url || check.cluster != current.cluster {
        return Err(KubeconfigError::Unsupported {
            cluster: current.cluster.clone(),
            source: YamlError {
                line: current.line,
                col: 0,
                message: format!("writing {url:?} did not read back as that server"),
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTg==
    server: https://127.0.0.11:6443
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: kubernetes-admin
  name: kubernetes-admin@kubernetes
current-context: kubernetes-admin@kubernetes
kind: Config
preferences: {}
users:
- name: kubernetes-admin
  user:
    client-certificate-data: LS0t
    client-key-data: REDACTED
";

    #[test]
    fn changes_exactly_the_server_line() {
        let out = set_server(ADMIN, "https://k8s-api.lab.internal:6443").unwrap();
        let changed: Vec<_> = ADMIN
            .lines()
            .zip(out.lines())
            .filter(|(a, b)| a != b)
            .collect();
        assert_eq!(
            changed,
            [(
                "    server: https://127.0.0.11:6443",
                "    server: https://k8s-api.lab.internal:6443"
            )]
        );
        assert_eq!(ADMIN.lines().count(), out.lines().count());
        assert!(out.ends_with('\n'));
    }

    #[test]
    fn follows_the_current_context_among_several_clusters() {
        let text = "# edited by hand
apiVersion: v1
clusters:
- cluster:
    server: \"https://10.20.0.5:6443\" # staging
  name: staging
- cluster:
    server: https://127.0.0.11:6443
  name: kubernetes
contexts:
- context: {cluster: staging, user: me}
  name: staging
- context:
    cluster: kubernetes
    user: kubernetes-admin
  name: kubernetes-admin@kubernetes
current-context: kubernetes-admin@kubernetes
";
        let s = current_server(text).unwrap();
        assert_eq!(
            (s.cluster.as_str(), s.server.as_str(), s.line),
            ("kubernetes", "https://127.0.0.11:6443", 8)
        );
        let out = set_server(text, "https://lb:6443").unwrap();
        assert!(out.contains("server: \"https://10.20.0.5:6443\" # staging"));
        assert!(out.contains("    server: https://lb:6443\n  name: kubernetes"));
        // Switching context moves the edit, and keeps the quoting and the comment.
        let staging = text.replace(
            "current-context: kubernetes-admin@kubernetes",
            "current-context: staging",
        );
        let out = set_server(&staging, "https://lb:6443").unwrap();
        assert!(out.contains("server: \"https://lb:6443\" # staging"));
    }

    #[test]
    fn cluster_info_has_one_unnamed_cluster_and_no_context() {
        let text = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: LS0t\n    server: https://127.0.0.11:6443\n  name: \"\"\ncontexts: null\ncurrent-context: \"\"\nkind: Config\npreferences: {}\nusers: null\n";
        assert_eq!(current_server(text).unwrap().cluster, "");
        let out = set_server(text, "https://lb:6443").unwrap();
        assert_eq!(
            out,
            text.replace("https://127.0.0.11:6443", "https://lb:6443")
        );
    }

    #[test]
    fn refuses_what_it_cannot_change_safely() {
        assert_eq!(
            current_server("apiVersion: v1\nkind: Config\n"),
            Err(KubeconfigError::NoClusters)
        );
        let two =
            "clusters:\n- cluster: {server: a}\n  name: a\n- cluster: {server: b}\n  name: b\n";
        assert_eq!(current_server(two), Err(KubeconfigError::Ambiguous(2)));
        let missing = format!("{two}current-context: x\n");
        assert_eq!(
            current_server(&missing),
            Err(KubeconfigError::MissingContext("x".into()))
        );
        let no_server = "clusters:\n- cluster: {}\n  name: a\n";
        assert_eq!(
            current_server(no_server),
            Err(KubeconfigError::NoServer("a".into()))
        );
        let block = "clusters:\n- cluster:\n    server: |\n      https://a\n  name: a\n";
        assert!(matches!(
            current_server(block),
            Err(KubeconfigError::Unsupported { .. })
        ));
        assert!(matches!(
            current_server("clusters: [\n"),
            Err(KubeconfigError::Yaml(_))
        ));
    }
}
