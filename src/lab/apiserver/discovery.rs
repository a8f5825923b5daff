//! Discovery and meta endpoints: `/version`, `/api`, `/apis`, the per-group resource lists,
//! and the OpenAPI v3 documents kubectl reads to learn that the server validates fields
//! itself (so it sends `fieldValidation=Strict` instead of validating against a schema).
//!
//! Discovery is the legacy (unaggregated) form: kubectl asks for aggregated discovery first
//! and falls back when the answer's content type says it is the plain form.

use hyper::{HeaderMap, Method};
use serde_json::{Value, json};

use super::auth::{self, User};
use super::rest::{KINDS, Kind};
use super::{Resp, State, json_response};

const VERBS: &[&str] = &["create", "delete", "get", "list", "patch", "update"];

fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for k in KINDS {
        if !out.contains(&(k.group, k.version)) {
            out.push((k.group, k.version));
        }
    }
    out
}

fn resource_list(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for k in KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
    {
        resources.push(json!({
            "name": k.resource,
            "singularName": k.singular,
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": VERBS,
            "shortNames": k.short_names,
        }));
        for sub in k.subresources {
            let (kind, verbs, g, v) = match *sub {
                "token" => (
                    "TokenRequest",
                    vec!["create"],
                    "authentication.k8s.io",
                    "v1",
                ),
                _ => (k.kind, vec!["get", "patch", "update"], group, version),
            };
            let mut r = json!({
                "name": format!("{}/{sub}", k.resource),
                "singularName": "",
                "namespaced": k.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if g != group {
                r["group"] = json!(g);
                r["version"] = json!(v);
            }
            resources.push(r);
        }
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

fn api_group(group: &str) -> Value {
    let versions: Vec<Value> = groups()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": versions,
        "preferredVersion": versions.first().cloned().unwrap_or(Value::Null),
    })
}

/// OpenAPI v3 for one group version: every object path with its PATCH operation tagged
/// with the kind and the `fieldValidation` parameter, which is what kubectl looks for.
fn openapi_group(state: &State, group: &str, version: &str) -> Value {
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let mut paths = serde_json::Map::new();
    let params = json!([
        {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}},
    ]);
    for k in KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
    {
        let gvk = json!({"group": k.group, "version": k.version, "kind": k.kind});
        let path = object_path(&prefix, k);
        let op = |action: &str| {
            json!({
                "operationId": format!("{action}{}", k.kind),
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
            })
        };
        paths.insert(
            path,
            json!({
                "get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete"),
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
            }),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": state.config.version.to_string()},
        "paths": paths,
        "components": {"schemas": {}},
    })
}

fn object_path(prefix: &str, k: &Kind) -> String {
    if k.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", k.resource)
    } else {
        format!("{prefix}/{}/{{name}}", k.resource)
    }
}

/// Answers discovery and meta paths; None for everything else (resources).
pub fn handle(
    state: &State,
    user: &User,
    method: &Method,
    path: &str,
    _headers: &HeaderMap,
) -> Option<Resp> {
    let path = path.trim_end_matches('/');
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let is_meta = matches!(
        segs.as_slice(),
        ["version"]
            | ["api"]
            | ["apis"]
            | ["api", _]
            | ["apis", _]
            | ["apis", _, _]
            | ["openapi", ..]
    );
    if !is_meta {
        return None;
    }
    if let Err(resp) = auth::authorize_path(user, method, path) {
        return Some(resp);
    }
    if method != Method::GET {
        return Some(super::rest::status(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            None,
        ));
    }
    let v = state.config.version;
    let hash = format!("{:x}", sha2_hex(&v.to_string()));
    let body = match segs.as_slice() {
        ["version"] => json!({
            "major": v.major.to_string(),
            "minor": v.minor.to_string(),
            "gitVersion": v.to_string(),
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z",
            "goVersion": "go1.23.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        }),
        ["api"] => json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": state.config.bind.to_string()}
            ],
        }),
        ["api", "v1"] => resource_list("", "v1"),
        ["apis"] => {
            let mut names: Vec<&str> = groups()
                .into_iter()
                .map(|(g, _)| g)
                .filter(|g| !g.is_empty())
                .collect();
            names.dedup();
            json!({
                "kind": "APIGroupList", "apiVersion": "v1",
                "groups": names.iter().map(|g| api_group(g)).collect::<Vec<_>>(),
            })
        }
        ["apis", g] if groups().iter().any(|(x, _)| x == g) => {
            let mut body = api_group(g);
            body["kind"] = json!("APIGroup");
            body["apiVersion"] = json!("v1");
            body
        }
        ["apis", g, ver] if groups().contains(&(g, ver)) => resource_list(g, ver),
        ["openapi", "v3"] => {
            let mut paths = serde_json::Map::new();
            for (g, ver) in groups() {
                let key = if g.is_empty() {
                    format!("api/{ver}")
                } else {
                    format!("apis/{g}/{ver}")
                };
                paths.insert(
                    key.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")}),
                );
            }
            json!({"paths": paths})
        }
        ["openapi", "v3", "api", ver] if groups().contains(&("", ver)) => {
            openapi_group(state, "", ver)
        }
        ["openapi", "v3", "apis", g, ver] if groups().contains(&(g, ver)) => {
            openapi_group(state, g, ver)
        }
        _ => {
            return Some(super::rest::status(
                404,
                "NotFound",
                "the server could not find the requested resource",
                Some(json!({})),
            ));
        }
    };
    Some(json_response(200, &body))
}

fn sha2_hex(s: &str) -> u64 {
    use sha2::Digest;
    let d = sha2::Sha256::digest(s.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_lists_name_subresources() {
        let core = resource_list("", "v1");
        let names: Vec<&str> = core["resources"]
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert!(names.contains(&"configmaps"));
        assert!(names.contains(&"nodes/status"));
        assert!(names.contains(&"serviceaccounts/token"));
        assert!(!names.contains(&"leases"));
        let apps = resource_list("apps", "v1");
        assert_eq!(apps["groupVersion"], "apps/v1");
    }
}
