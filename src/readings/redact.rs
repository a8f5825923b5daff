//! Kubeconfig redaction: secret values become [`REDACTED`], every other byte stays, so the
//! planner still sees the file as written (servers, comments, order) and nothing secret leaves
//! the node's memory.

use yaml_rust2::scanner::TScalarStyle;

use crate::observed::REDACTED;
use crate::yaml::{self, Node};

/// Keys whose values are secrets in a kubeconfig: the client key and bearer token kubeadm and
/// operators write, and the password / auth-provider secrets older files may carry.
pub const SECRET_KEYS: &[&str] = &[
    "client-key-data",
    "token",
    "password",
    "id-token",
    "refresh-token",
    "access-token",
    "client-secret",
];

/// The kubeconfig with every secret value replaced by `REDACTED`.
///
/// Single-line values are replaced in place (quotes, comments and everything else kept). A
/// file that is not YAML, or a secret written as a block or multi-line scalar, is redacted line
/// by line instead: from each secret key to its line's end, and the indented lines below it.
/// Either way no secret survives.
pub fn redact_kubeconfig(text: &str) -> String {
    match yaml::parse_with_flow(text) {
        Ok(root) => {
            let mut secrets = Vec::new();
            collect(&root, false, &mut secrets);
            let mut spans = Vec::with_capacity(secrets.len());
            for (node, in_flow) in secrets {
                match span(text, node, in_flow) {
                    Some(span) => spans.push(span),
                    None => return redact_lines(text),
                }
            }
            spans.sort_by_key(|s| s.start);
            let mut out = String::with_capacity(text.len());
            let mut at = 0;
            for span in spans {
                if span.start < at {
                    return redact_lines(text);
                }
                out.push_str(&text[at..span.start]);
                out.push_str(REDACTED);
                at = span.end;
            }
            out.push_str(&text[at..]);
            out
        }
        Err(_) => redact_lines(text),
    }
}

/// Where a single-line scalar stands, checked: a plain scalar's text must be its value.
fn span(text: &str, node: &Node, in_flow: bool) -> Option<std::ops::Range<usize>> {
    let mut span = yaml::scalar_span(text, node).ok()?;
    if let Node::Scalar {
        value,
        style: TScalarStyle::Plain,
        ..
    } = node
    {
        // Inside `{…}` or `[…]` a plain scalar also ends at `,`, `}` or `]`.
        if in_flow {
            let raw = &text[span.clone()];
            let end = raw.find([',', '}', ']']).unwrap_or(raw.len());
            span.end = span.start + raw[..end].trim_end().len();
        }
        if &text[span.clone()] != value {
            return None;
        }
    }
    Some(span)
}

/// The value nodes under secret keys, anywhere in the document, and whether each stands in a
/// flow collection.
fn collect<'a>(node: &'a Node, in_flow: bool, out: &mut Vec<(&'a Node, bool)>) {
    match node {
        Node::Map { entries, flow, .. } => {
            let in_flow = in_flow || *flow;
            for (k, v) in entries {
                let secret = k.as_str().is_some_and(|k| SECRET_KEYS.contains(&k));
                match v {
                    // `token: ""` or `token:` holds nothing to hide.
                    Node::Scalar { value, .. } if secret && value.is_empty() => {}
                    _ if secret => out.push((v, in_flow)),
                    _ => collect(v, in_flow, out),
                }
            }
        }
        Node::Seq { items, flow, .. } => {
            items.iter().for_each(|n| collect(n, in_flow || *flow, out))
        }
        _ => {}
    }
}

/// The conservative fallback: cut every line at a secret key, and drop the more-indented
/// lines that follow it (a block scalar's body).
fn redact_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut skip_deeper_than: Option<usize> = None;
    for line in text.split_inclusive('\n') {
        let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
        if let Some(level) = skip_deeper_than {
            if line.trim().is_empty() || indent > level {
                continue;
            }
            skip_deeper_than = None;
        }
        let hit = SECRET_KEYS
            .iter()
            .filter_map(|k| {
                line.match_indices(k).find_map(|(i, _)| {
                    let before_ok = i == 0
                        || matches!(
                            line.as_bytes()[i - 1],
                            b' ' | b'\t' | b'{' | b',' | b'-' | b'"' | b'\''
                        );
                    let after = line[i + k.len()..].trim_start_matches(['"', '\'']);
                    (before_ok && after.trim_start().starts_with(':')).then_some((i, *k))
                })
            })
            .min_by_key(|(i, _)| *i);
        match hit {
            Some((i, key)) => {
                out.push_str(&line[..i]);
                out.push_str(key);
                out.push_str(": ");
                out.push_str(REDACTED);
                if line.ends_with('\n') {
                    out.push('\n');
                }
                skip_deeper_than = Some(indent);
            }
            None => out.push_str(line),
        }
    }
    out
}
