//! The REST API over etcd: the resource table, get/list/create/update/patch/delete with
//! resourceVersion checks, selectors, Table output, and Status errors as kube-apiserver
//! writes them.

use bytes::Bytes;
use hyper::{Method, Request};
use serde_json::{Map, Value, json};

use super::auth::{self, Attributes, User};
use super::managed::{self, Writer};
use super::{Resp, State, json_response, time};
use crate::lab::etcd::{EtcdClient, EtcdError, KeyValue};

/// One resource the server knows.
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub resource: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// kube-apiserver's etcd prefix under `/registry/`.
    pub prefix: &'static str,
    pub short_names: &'static [&'static str],
    /// Subresources: `status` keeps spec and status apart on writes.
    pub subresources: &'static [&'static str],
}

impl Kind {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    pub(crate) fn has_status(&self) -> bool {
        self.subresources.contains(&"status")
    }
    /// Where an object lives in etcd.
    pub fn key(&self, namespace: &str, name: &str) -> String {
        if self.namespaced {
            format!("/registry/{}/{namespace}/{name}", self.prefix)
        } else {
            format!("/registry/{}/{name}", self.prefix)
        }
    }
}

macro_rules! kind {
    ($g:expr, $v:expr, $r:expr, $s:expr, $k:expr, $ns:expr, $p:expr, $short:expr, $sub:expr) => {
        Kind {
            group: $g,
            version: $v,
            resource: $r,
            singular: $s,
            kind: $k,
            namespaced: $ns,
            prefix: $p,
            short_names: $short,
            subresources: $sub,
        }
    };
}

pub const KINDS: &[Kind] = &[
    kind!(
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        "namespaces",
        &["ns"],
        &["status"]
    ),
    kind!(
        "",
        "v1",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        "configmaps",
        &["cm"],
        &[]
    ),
    kind!(
        "",
        "v1",
        "secrets",
        "secret",
        "Secret",
        true,
        "secrets",
        &[],
        &[]
    ),
    kind!(
        "",
        "v1",
        "nodes",
        "node",
        "Node",
        false,
        "minions",
        &["no"],
        &["status"]
    ),
    kind!(
        "",
        "v1",
        "pods",
        "pod",
        "Pod",
        true,
        "pods",
        &["po"],
        &["status"]
    ),
    kind!(
        "",
        "v1",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        "serviceaccounts",
        &["sa"],
        &["token"]
    ),
    kind!(
        "",
        "v1",
        "events",
        "event",
        "Event",
        true,
        "events",
        &["ev"],
        &[]
    ),
    kind!(
        "coordination.k8s.io",
        "v1",
        "leases",
        "lease",
        "Lease",
        true,
        "leases",
        &[],
        &[]
    ),
    kind!(
        "apps",
        "v1",
        "daemonsets",
        "daemonset",
        "DaemonSet",
        true,
        "daemonsets",
        &["ds"],
        &["status"]
    ),
    kind!(
        "certificates.k8s.io",
        "v1",
        "certificatesigningrequests",
        "certificatesigningrequest",
        "CertificateSigningRequest",
        false,
        "certificatesigningrequests",
        &["csr"],
        &["status", "approval"]
    ),
];

pub fn find_kind(group: &str, version: &str, resource: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.resource == resource)
}

fn kind_of_object(obj: &Value) -> Option<&'static Kind> {
    let api_version = obj["apiVersion"].as_str()?;
    let kind = obj["kind"].as_str()?;
    KINDS
        .iter()
        .find(|k| k.api_version() == api_version && k.kind == kind)
}

/// The query string, decoded.
pub struct Query(Vec<(String, String)>);

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(())
                {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Query {
    pub fn parse(q: &str) -> Query {
        Query(
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (percent_decode(k), percent_decode(v)),
                    None => (percent_decode(p), String::new()),
                })
                .collect(),
        )
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
}

// ---- Status objects ----

pub fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Resp {
    let mut body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "code": code,
    });
    if !reason.is_empty() {
        body["reason"] = json!(reason);
    }
    if let Some(d) = details {
        body["details"] = d;
    }
    json_response(code, &body)
}

fn details(kind: &Kind, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": kind.resource});
    if !kind.group.is_empty() {
        d["group"] = json!(kind.group);
    }
    d
}

fn not_found(kind: &Kind, name: &str) -> Resp {
    status(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", qualified(kind)),
        Some(details(kind, name)),
    )
}

/// `configmaps` or `leases.coordination.k8s.io`, as errors name a resource.
fn qualified(kind: &Kind) -> String {
    if kind.group.is_empty() {
        kind.resource.to_owned()
    } else {
        format!("{}.{}", kind.resource, kind.group)
    }
}

fn conflict(kind: &Kind, name: &str) -> Resp {
    status(
        409,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            qualified(kind)
        ),
        Some(details(kind, name)),
    )
}

fn already_exists(kind: &Kind, name: &str) -> Resp {
    status(
        409,
        "AlreadyExists",
        &format!("{} \"{name}\" already exists", qualified(kind)),
        Some(details(kind, name)),
    )
}

fn invalid(kind: &Kind, name: &str, field: &str, message: &str) -> Resp {
    let mut d = details(kind, name);
    d["kind"] = json!(kind.kind);
    d["causes"] = json!([{"reason": "FieldValueInvalid", "message": message, "field": field}]);
    status(
        422,
        "Invalid",
        &format!("{} \"{name}\" is invalid: {field}: {message}", kind.kind),
        Some(d),
    )
}

fn bad_request(message: &str) -> Resp {
    status(400, "BadRequest", message, None)
}

fn etcd_error(e: EtcdError) -> Resp {
    // kube-apiserver passes storage errors through as they are (reason Unknown).
    status(500, "", &e.to_string(), None)
}

fn resource_not_found() -> Resp {
    status(
        404,
        "NotFound",
        "the server could not find the requested resource",
        Some(json!({})),
    )
}

// ---- objects ----

fn random_uid() -> String {
    let mut b = [0u8; 16];
    // Failure leaves zeros, which still makes a syntactically valid uid.
    let _ = aws_lc_rs::rand::fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn random_suffix() -> String {
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut b = [0u8; 5];
    let _ = aws_lc_rs::rand::fill(&mut b);
    b.iter()
        .map(|x| CHARS[*x as usize % CHARS.len()] as char)
        .collect()
}

/// An object as stored, with its resourceVersion from etcd.
fn decode(kind: &Kind, kv: &KeyValue) -> Option<Value> {
    let mut obj: Value = serde_json::from_slice(&kv.value).ok()?;
    obj["apiVersion"] = json!(kind.api_version());
    obj["kind"] = json!(kind.kind);
    obj["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
    Some(obj)
}

fn encode(obj: &Value) -> Vec<u8> {
    let mut stored = obj.clone();
    if let Some(m) = stored["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    stored.to_string().into_bytes()
}

fn with_revision(mut obj: Value, rev: i64) -> Value {
    obj["metadata"]["resourceVersion"] = json!(rev.to_string());
    obj
}

fn meta_str<'a>(obj: &'a Value, k: &str) -> &'a str {
    obj["metadata"][k].as_str().unwrap_or("")
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// Secrets: `stringData` is write-only and folds into `data`, as the API server does.
/// Namespaces: the `kubernetes.io/metadata.name` label the API server sets (1.21+).
fn normalize(kind: &Kind, obj: &mut Value) {
    use base64::Engine;
    if kind.kind == "Namespace" {
        let name = meta_str(obj, "name").to_owned();
        if !obj["metadata"]["labels"].is_object() {
            obj["metadata"]["labels"] = json!({});
        }
        obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
    }
    if kind.kind == "Secret"
        && let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|o| o.remove("stringData"))
    {
        if !obj["data"].is_object() {
            obj["data"] = json!({});
        }
        for (k, v) in sd {
            let s = v.as_str().unwrap_or("");
            obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(s));
        }
    }
}

// ---- routing ----

struct Target {
    kind: &'static Kind,
    namespace: String,
    name: String,
    subresource: String,
}

fn route(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, r, more @ ..]
            if find_kind(group, version, r).is_some_and(|k| k.namespaced) =>
        {
            (ns.to_string(), {
                let mut v = vec![*r];
                v.extend(more);
                v
            })
        }
        other => (String::new(), other.to_vec()),
    };
    let kind = find_kind(group, version, rest.first()?)?;
    let name = rest.get(1).map(|s| s.to_string()).unwrap_or_default();
    let subresource = rest.get(2).map(|s| s.to_string()).unwrap_or_default();
    if rest.len() > 3
        || (!subresource.is_empty() && !kind.subresources.contains(&subresource.as_str()))
        || (kind.namespaced && namespace.is_empty() && !name.is_empty())
    {
        return None;
    }
    Some(Target {
        kind,
        namespace,
        name,
        subresource,
    })
}

pub async fn handle(state: &State, user: &User, req: Request<Bytes>, query: &Query) -> Resp {
    let path = req.uri().path().to_owned();
    let Some(t) = route(&path) else {
        if let Err(resp) = auth::authorize_path(user, req.method(), &path) {
            return resp;
        }
        return resource_not_found();
    };
    let method = req.method().clone();
    let verb = match (&method, t.name.is_empty()) {
        (&Method::GET, false) => "get",
        (&Method::GET, true) if query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            "watch"
        }
        (&Method::GET, true) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, false) => "update",
        (&Method::PATCH, false) => "patch",
        (&Method::DELETE, false) => "delete",
        (&Method::DELETE, true) => "deletecollection",
        _ => {
            return status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                Some(json!({})),
            );
        }
    };
    let attrs = Attributes {
        verb,
        group: t.kind.group,
        resource: t.kind.resource,
        subresource: &t.subresource,
        namespace: &t.namespace,
        name: &t.name,
    };
    if let Err(resp) = auth::authorize(user, &attrs) {
        return resp;
    }
    let accept = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|a| a.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let user_agent = req
        .headers()
        .get(hyper::header::USER_AGENT)
        .and_then(|a| a.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let writer = Writer {
        manager: managed::manager_name(query.get("fieldManager"), &user_agent),
        operation: if content_type.starts_with("application/apply-patch") {
            "Apply"
        } else {
            "Update"
        },
        api_version: t.kind.api_version(),
        subresource: t.subresource.clone(),
        time: time::rfc3339(time::now_unix()),
    };
    let body = req.into_body();
    if matches!(verb, "create" | "update" | "patch" | "delete") && state.take_conflict(user) {
        // `api-conflicts` (a lab fault): the answer an optimistic-concurrency loser gets.
        let name = if t.name.is_empty() {
            serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|o| o["metadata"]["name"].as_str().map(str::to_owned))
                .unwrap_or_default()
        } else {
            t.name.clone()
        };
        return conflict(t.kind, &name);
    }
    let table = accept.contains("as=Table");
    match verb {
        "get" => get(state, &t, table, query).await,
        "list" => list(state, &t, table, query).await,
        "watch" | "deletecollection" => status(
            405,
            "MethodNotAllowed",
            &format!("the simulated API server does not support {verb}"),
            Some(json!({})),
        ),
        "create" if t.kind.resource == "serviceaccounts" && t.subresource == "token" => {
            token(state, &t, &body).await
        }
        "create" if !t.name.is_empty() => resource_not_found(),
        "create" => match serde_json::from_slice::<Value>(&body) {
            Ok(obj) => create(state, &t, obj, query, &writer).await,
            Err(e) => bad_request(&format!("error decoding the request body: {e}")),
        },
        "update" => match serde_json::from_slice::<Value>(&body) {
            Ok(obj) => update(state, &t, obj, &writer).await,
            Err(e) => bad_request(&format!("error decoding the request body: {e}")),
        },
        "patch" => patch(state, &t, &content_type, &body, query, &writer).await,
        _ => delete(state, &t, &body).await,
    }
}

async fn read(state: &State, t: &Target) -> Result<Option<(Value, i64)>, Resp> {
    let kv = state
        .etcd
        .get(&t.kind.key(&t.namespace, &t.name))
        .await
        .map_err(etcd_error)?;
    Ok(kv.and_then(|kv| decode(t.kind, &kv).map(|o| (o, kv.mod_revision))))
}

async fn get(state: &State, t: &Target, table: bool, query: &Query) -> Resp {
    match read(state, t).await {
        Err(resp) => resp,
        Ok(None) => not_found(t.kind, &t.name),
        Ok(Some((obj, rev))) => {
            if table {
                json_response(200, &to_table(t.kind, &[obj], &rev.to_string(), query))
            } else {
                json_response(200, &obj)
            }
        }
    }
}

async fn list(state: &State, t: &Target, table: bool, query: &Query) -> Resp {
    let prefix = if t.kind.namespaced && !t.namespace.is_empty() {
        format!("/registry/{}/{}/", t.kind.prefix, t.namespace)
    } else {
        format!("/registry/{}/", t.kind.prefix)
    };
    let labels = match query.get("labelSelector").map(parse_label_selector) {
        Some(Err(e)) => return bad_request(&e),
        Some(Ok(s)) => s,
        None => Vec::new(),
    };
    let fields = match query.get("fieldSelector").map(parse_field_selector) {
        Some(Err(e)) => return bad_request(&e),
        Some(Ok(s)) => s,
        None => Vec::new(),
    };
    let (kvs, rev) = match state.etcd.list(&prefix).await {
        Ok(r) => r,
        Err(e) => return etcd_error(e),
    };
    let items: Vec<Value> = kvs
        .iter()
        .filter_map(|kv| decode(t.kind, kv))
        .filter(|o| labels.iter().all(|r| r.matches(&o["metadata"]["labels"])))
        .filter(|o| {
            fields
                .iter()
                .all(|(f, op_eq, v)| (field_value(o, f) == *v) == *op_eq)
        })
        .collect();
    if table {
        return json_response(200, &to_table(t.kind, &items, &rev.to_string(), query));
    }
    json_response(
        200,
        &json!({
            "kind": format!("{}List", t.kind.kind),
            "apiVersion": t.kind.api_version(),
            "metadata": {"resourceVersion": rev.to_string()},
            "items": items,
        }),
    )
}

async fn namespace_exists(state: &State, ns: &str) -> Result<bool, Resp> {
    state
        .etcd
        .get(&format!("/registry/namespaces/{ns}"))
        .await
        .map(|kv| kv.is_some())
        .map_err(etcd_error)
}

/// Fills the fields the server owns on create; Err is the 4xx to answer.
fn prepare_create(kind: &Kind, namespace: &str, obj: &mut Value) -> Result<String, Resp> {
    if !obj.is_object() {
        return Err(bad_request("the request body is not an object"));
    }
    if let Some(k) = obj["kind"].as_str()
        && !k.is_empty()
        && k != kind.kind
    {
        return Err(bad_request(&format!(
            "the kind of the provided object ({k}) does not match the resource ({})",
            kind.kind
        )));
    }
    obj["apiVersion"] = json!(kind.api_version());
    obj["kind"] = json!(kind.kind);
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    let body_ns = meta_str(obj, "namespace").to_owned();
    if kind.namespaced {
        if !body_ns.is_empty() && !namespace.is_empty() && body_ns != namespace {
            return Err(bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let ns = if namespace.is_empty() {
            body_ns
        } else {
            namespace.to_owned()
        };
        obj["metadata"]["namespace"] = json!(ns);
    } else if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    let mut name = meta_str(obj, "name").to_owned();
    if name.is_empty() {
        let generate = meta_str(obj, "generateName").to_owned();
        if generate.is_empty() {
            return Err(invalid(
                kind,
                "",
                "metadata.name",
                "Required value: name or generateName is required",
            ));
        }
        name = format!("{generate}{}", random_suffix());
        obj["metadata"]["name"] = json!(name);
    }
    if !is_dns_subdomain(&name) {
        return Err(invalid(
            kind,
            &name,
            "metadata.name",
            &format!("Invalid value: \"{name}\": {SUBDOMAIN_MSG}"),
        ));
    }
    let m = obj["metadata"]
        .as_object_mut()
        .expect("made an object above");
    m.remove("resourceVersion");
    m.insert("uid".into(), json!(random_uid()));
    m.insert(
        "creationTimestamp".into(),
        json!(time::rfc3339(time::now_unix())),
    );
    if kind.kind == "DaemonSet" {
        m.insert("generation".into(), json!(1));
    }
    if kind.kind == "Namespace" && obj["status"]["phase"].is_null() {
        obj["status"] = json!({"phase": "Active"});
    }
    normalize(kind, obj);
    Ok(name)
}

async fn create(state: &State, t: &Target, mut obj: Value, query: &Query, w: &Writer) -> Resp {
    let applied = (w.operation == "Apply").then(|| obj.clone());
    let name = match prepare_create(t.kind, &t.namespace, &mut obj) {
        Ok(n) => n,
        Err(resp) => return resp,
    };
    managed::record(w, None, &mut obj, applied.as_ref(), t.kind.has_status());
    let ns = meta_str(&obj, "namespace").to_owned();
    if t.kind.namespaced {
        if ns.is_empty() {
            return bad_request("the namespace of the object is empty");
        }
        match namespace_exists(state, &ns).await {
            Err(resp) => return resp,
            Ok(false) => {
                return status(
                    404,
                    "NotFound",
                    &format!("namespaces \"{ns}\" not found"),
                    Some(json!({"name": ns, "kind": "namespaces"})),
                );
            }
            Ok(true) => {}
        }
    }
    if query.get("dryRun").is_some() {
        return json_response(201, &obj);
    }
    match state
        .etcd
        .create(&t.kind.key(&ns, &name), &encode(&obj))
        .await
    {
        Err(e) => etcd_error(e),
        Ok(None) => already_exists(t.kind, &name),
        Ok(Some(rev)) => json_response(201, &with_revision(obj, rev)),
    }
}

/// The object to store when `new` replaces `old`: server-owned fields kept, and spec or
/// status kept apart by subresource.
fn merge_update(kind: &Kind, old: &Value, mut new: Value, subresource: &str) -> Value {
    new["apiVersion"] = json!(kind.api_version());
    new["kind"] = json!(kind.kind);
    if !new["metadata"].is_object() {
        new["metadata"] = json!({});
    }
    for k in [
        "uid",
        "creationTimestamp",
        "namespace",
        "name",
        "generation",
    ] {
        match old["metadata"].get(k) {
            Some(v) => new["metadata"][k] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(k);
                }
            }
        }
    }
    if kind.has_status() {
        if subresource == "status" {
            match old.get("spec") {
                Some(spec) => new["spec"] = spec.clone(),
                None => {
                    if let Some(o) = new.as_object_mut() {
                        o.remove("spec");
                    }
                }
            }
        } else {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(o) = new.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
        }
    }
    if kind.kind == "DaemonSet" && new.get("spec") != old.get("spec") {
        let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
        new["metadata"]["generation"] = json!(g + 1);
    }
    normalize(kind, &mut new);
    new
}

async fn update(state: &State, t: &Target, obj: Value, w: &Writer) -> Resp {
    let body_name = meta_str(&obj, "name");
    if body_name != t.name {
        return bad_request(&format!(
            "the name of the object ({body_name}) does not match the name on the URL ({})",
            t.name
        ));
    }
    if t.kind.namespaced {
        let ns = meta_str(&obj, "namespace");
        if !ns.is_empty() && ns != t.namespace {
            return bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            );
        }
    }
    let (old, rev) = match read(state, t).await {
        Err(resp) => return resp,
        Ok(None) => return not_found(t.kind, &t.name),
        Ok(Some(x)) => x,
    };
    let wanted = meta_str(&obj, "resourceVersion");
    if !wanted.is_empty() && wanted != rev.to_string() {
        return conflict(t.kind, &t.name);
    }
    let mut new = merge_update(t.kind, &old, obj, &t.subresource);
    managed::record(w, Some(&old), &mut new, None, t.kind.has_status());
    match write(state, t, &old, new, rev).await {
        Ok(Some(resp)) => resp,
        Ok(None) => conflict(t.kind, &t.name),
        Err(resp) => resp,
    }
}

/// Stores `new` if the object is still at `rev` (`None` when it moved). An update that
/// changes nothing is not written, as kube-apiserver's GuaranteedUpdate skips identical
/// bytes: resourceVersion and every managedFields time stay as they were.
async fn write(
    state: &State,
    t: &Target,
    old: &Value,
    new: Value,
    rev: i64,
) -> Result<Option<Resp>, Resp> {
    let stored = |o: &Value| {
        let mut o = o.clone();
        if let Some(m) = o["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        o
    };
    if stored(&new) == stored(old) {
        return Ok(Some(json_response(200, &with_revision(new, rev))));
    }
    let key = t.kind.key(&t.namespace, &t.name);
    match state.etcd.update(&key, &encode(&new), rev).await {
        Err(e) => Err(etcd_error(e)),
        Ok(None) => Ok(None),
        Ok(Some(new_rev)) => Ok(Some(json_response(200, &with_revision(new, new_rev)))),
    }
}

async fn patch(
    state: &State,
    t: &Target,
    content_type: &str,
    body: &[u8],
    query: &Query,
    w: &Writer,
) -> Resp {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    let text = String::from_utf8_lossy(body);
    enum P {
        Merge(Value),
        Json(json_patch::Patch),
        Apply(Value),
    }
    let p = match ct {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            match serde_json::from_str(&text) {
                Ok(v) => P::Merge(v),
                Err(e) => return bad_request(&format!("error decoding patch: {e}")),
            }
        }
        "application/json-patch+json" => match serde_json::from_str(&text) {
            Ok(v) => P::Json(v),
            Err(e) => return bad_request(&format!("error decoding patch: {e}")),
        },
        "application/apply-patch+yaml" => {
            if query.get("fieldManager").is_none_or(str::is_empty) {
                return status(
                    422,
                    "Invalid",
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                    None,
                );
            }
            match super::yaml_to_json(&text) {
                Ok(v) if v.is_object() => P::Apply(v),
                Ok(_) => return bad_request("the apply patch is not an object"),
                Err(e) => return bad_request(&format!("error decoding YAML: {e}")),
            }
        }
        other => {
            return status(
                415,
                "UnsupportedMediaType",
                &format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other})"
                ),
                None,
            );
        }
    };
    if let P::Apply(v) = &p {
        let name = meta_str(v, "name");
        if name != t.name {
            return bad_request(&format!(
                "the name of the object ({name}) does not match the name on the URL ({})",
                t.name
            ));
        }
    }
    // The server retries a patch that races another write, as kube-apiserver does.
    for _ in 0..5 {
        let current = match read(state, t).await {
            Err(resp) => return resp,
            Ok(c) => c,
        };
        let (old, rev) = match (current, &p) {
            (Some(c), _) => c,
            (None, P::Apply(v)) => {
                let mut obj = v.clone();
                if let Some(m) = obj["metadata"].as_object_mut() {
                    m.insert("namespace".into(), json!(t.namespace));
                }
                return create(state, t, obj, query, w).await;
            }
            (None, _) => return not_found(t.kind, &t.name),
        };
        let mut patched = old.clone();
        match &p {
            P::Merge(v) | P::Apply(v) => json_patch::merge(&mut patched, v),
            P::Json(ops) => {
                if let Err(e) = json_patch::patch(&mut patched, ops) {
                    return status(422, "Invalid", &e.to_string(), None);
                }
            }
        }
        if meta_str(&patched, "resourceVersion") != rev.to_string() {
            return conflict(t.kind, &t.name);
        }
        let mut new = merge_update(t.kind, &old, patched, &t.subresource);
        let applied = match &p {
            P::Apply(v) => Some(v),
            _ => None,
        };
        managed::record(w, Some(&old), &mut new, applied, t.kind.has_status());
        match write(state, t, &old, new, rev).await {
            Err(resp) => return resp,
            Ok(None) => continue,
            Ok(Some(resp)) => return resp,
        }
    }
    conflict(t.kind, &t.name)
}

async fn delete(state: &State, t: &Target, body: &[u8]) -> Resp {
    let options: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let (old, rev) = match read(state, t).await {
        Err(resp) => return resp,
        Ok(None) => return not_found(t.kind, &t.name),
        Ok(Some(x)) => x,
    };
    let pre = &options["preconditions"];
    if let Some(want) = pre["resourceVersion"].as_str()
        && want != rev.to_string()
    {
        return status(
            409,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {} \"{}\": Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rev}",
                qualified(t.kind),
                t.name
            ),
            Some(details(t.kind, &t.name)),
        );
    }
    if let Some(want) = pre["uid"].as_str()
        && want != meta_str(&old, "uid")
    {
        return status(
            409,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {} \"{}\": Precondition failed: UID in precondition: {want}, UID in object meta: {}",
                qualified(t.kind),
                t.name,
                meta_str(&old, "uid")
            ),
            Some(details(t.kind, &t.name)),
        );
    }
    match state
        .etcd
        .delete(&t.kind.key(&t.namespace, &t.name), Some(rev))
        .await
    {
        Err(e) => etcd_error(e),
        Ok(false) => conflict(t.kind, &t.name),
        Ok(true) if t.kind.kind == "Pod" => json_response(200, &old),
        Ok(true) => {
            let mut d = details(t.kind, &t.name);
            d["uid"] = json!(meta_str(&old, "uid"));
            json_response(
                200,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": d}),
            )
        }
    }
}

async fn token(state: &State, t: &Target, body: &[u8]) -> Resp {
    let request: Value = serde_json::from_slice(body).unwrap_or_else(|_| json!({}));
    let sa = match read(state, t).await {
        Err(resp) => return resp,
        Ok(None) => return not_found(t.kind, &t.name),
        Ok(Some((sa, _))) => sa,
    };
    match auth::token_request(state, &t.namespace, &t.name, meta_str(&sa, "uid"), &request) {
        Ok(v) => json_response(201, &v),
        Err(e) => status(500, "InternalError", &e, None),
    }
}

// ---- selectors ----

#[derive(Debug, PartialEq)]
enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    NotExists(String),
}

impl LabelReq {
    fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        match self {
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::Ne(k, v) => get(k) != Some(v.as_str()),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
        }
    }
}

fn parse_label_selector(s: &str) -> Result<Vec<LabelReq>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let req = if let Some((k, v)) = part.split_once("!=") {
            LabelReq::Ne(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = part.split_once("==") {
            LabelReq::Eq(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = part.split_once('=') {
            LabelReq::Eq(k.trim().into(), v.trim().into())
        } else if let Some(k) = part.strip_prefix('!') {
            LabelReq::NotExists(k.trim().into())
        } else if part.contains(' ') || part.contains('(') {
            return Err(format!(
                "unable to parse requirement: the simulated API server supports =, ==, != and existence only, not {part:?}"
            ));
        } else {
            LabelReq::Exists(part.into())
        };
        out.push(req);
    }
    Ok(out)
}

const FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "status.phase",
    // Secrets' type, as the bootstrapsigner (and hactl) select the tokens.
    "type",
];

fn parse_field_selector(s: &str) -> Result<Vec<(String, bool, String)>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, eq, v) = if let Some((k, v)) = part.split_once("!=") {
            (k, false, v)
        } else if let Some((k, v)) = part.split_once("==") {
            (k, true, v)
        } else if let Some((k, v)) = part.split_once('=') {
            (k, true, v)
        } else {
            return Err(format!(
                "invalid selector: '{s}'; can't understand '{part}'"
            ));
        };
        if !FIELDS.contains(&k) {
            return Err(format!(
                "\"{k}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
            ));
        }
        out.push((k.to_owned(), eq, v.to_owned()));
    }
    Ok(out)
}

fn field_value(obj: &Value, field: &str) -> String {
    let mut v = obj;
    for part in field.split('.') {
        v = &v[part];
    }
    v.as_str().unwrap_or("").to_owned()
}

// ---- Table output ----

fn column(name: &str, ty: &str, priority: u8) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": "", "priority": priority})
}

fn age(obj: &Value) -> String {
    match time::parse_rfc3339(meta_str(obj, "creationTimestamp")) {
        Some(t) => time::human_duration(time::now_unix() - t),
        None => "<unknown>".into(),
    }
}

fn count(v: &Value) -> usize {
    v.as_object().map(Map::len).unwrap_or(0)
}

fn node_status(obj: &Value) -> String {
    let ready = obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| c["status"].as_str().unwrap_or(""));
    let mut s = match ready {
        Some("True") => "Ready".to_string(),
        Some("False") => "NotReady".to_string(),
        _ => "Unknown".to_string(),
    };
    if obj["spec"]["unschedulable"].as_bool() == Some(true) {
        s.push_str(",SchedulingDisabled");
    }
    s
}

fn node_roles(obj: &Value) -> String {
    let mut roles: Vec<&str> = obj["metadata"]["labels"]
        .as_object()
        .map(|l| {
            l.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .filter(|r| !r.is_empty())
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    if roles.is_empty() {
        "<none>".into()
    } else {
        roles.join(",")
    }
}

fn node_address(obj: &Value, ty: &str) -> String {
    obj["status"]["addresses"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["type"] == ty))
        .and_then(|x| x["address"].as_str())
        .unwrap_or("<none>")
        .to_owned()
}

fn pod_cells(obj: &Value) -> Vec<Value> {
    let statuses = obj["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let total = obj["spec"]["containers"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    let ready = statuses.iter().filter(|s| s["ready"] == true).count();
    let restarts: i64 = statuses
        .iter()
        .map(|s| s["restartCount"].as_i64().unwrap_or(0))
        .sum();
    let mut reason = obj["status"]["reason"]
        .as_str()
        .or(obj["status"]["phase"].as_str())
        .unwrap_or("Unknown")
        .to_owned();
    for s in &statuses {
        if let Some(r) = s["state"]["waiting"]["reason"].as_str() {
            reason = r.to_owned();
        } else if let Some(r) = s["state"]["terminated"]["reason"].as_str() {
            reason = r.to_owned();
        }
    }
    if obj["metadata"]["deletionTimestamp"].is_string() {
        reason = "Terminating".into();
    }
    vec![
        json!(meta_str(obj, "name")),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts),
        json!(age(obj)),
        json!(obj["status"]["podIP"].as_str().unwrap_or("<none>")),
        json!(obj["spec"]["nodeName"].as_str().unwrap_or("<none>")),
        json!("<none>"),
        json!("<none>"),
    ]
}

fn table_row(kind: &Kind, obj: &Value) -> (Vec<Value>, Vec<Value>) {
    let name = json!(meta_str(obj, "name"));
    match kind.kind {
        "ConfigMap" => (
            vec![
                column("Name", "string", 0),
                column("Data", "integer", 0),
                column("Age", "string", 0),
            ],
            vec![
                name,
                json!(count(&obj["data"]) + count(&obj["binaryData"])),
                json!(age(obj)),
            ],
        ),
        "Secret" => (
            vec![
                column("Name", "string", 0),
                column("Type", "string", 0),
                column("Data", "integer", 0),
                column("Age", "string", 0),
            ],
            vec![
                name,
                json!(obj["type"].as_str().unwrap_or("Opaque")),
                json!(count(&obj["data"])),
                json!(age(obj)),
            ],
        ),
        "Node" => (
            vec![
                column("Name", "string", 0),
                column("Status", "string", 0),
                column("Roles", "string", 0),
                column("Age", "string", 0),
                column("Version", "string", 0),
                column("Internal-IP", "string", 1),
                column("External-IP", "string", 1),
                column("OS-Image", "string", 1),
                column("Kernel-Version", "string", 1),
                column("Container-Runtime", "string", 1),
            ],
            vec![
                name,
                json!(node_status(obj)),
                json!(node_roles(obj)),
                json!(age(obj)),
                json!(
                    obj["status"]["nodeInfo"]["kubeletVersion"]
                        .as_str()
                        .unwrap_or("")
                ),
                json!(node_address(obj, "InternalIP")),
                json!(node_address(obj, "ExternalIP")),
                json!(
                    obj["status"]["nodeInfo"]["osImage"]
                        .as_str()
                        .unwrap_or("<unknown>")
                ),
                json!(
                    obj["status"]["nodeInfo"]["kernelVersion"]
                        .as_str()
                        .unwrap_or("<unknown>")
                ),
                json!(
                    obj["status"]["nodeInfo"]["containerRuntimeVersion"]
                        .as_str()
                        .unwrap_or("<unknown>")
                ),
            ],
        ),
        "Pod" => (
            vec![
                column("Name", "string", 0),
                column("Ready", "string", 0),
                column("Status", "string", 0),
                column("Restarts", "integer", 0),
                column("Age", "string", 0),
                column("IP", "string", 1),
                column("Node", "string", 1),
                column("Nominated Node", "string", 1),
                column("Readiness Gates", "string", 1),
            ],
            pod_cells(obj),
        ),
        "Lease" => (
            vec![
                column("Name", "string", 0),
                column("Holder", "string", 0),
                column("Age", "string", 0),
            ],
            vec![
                name,
                json!(obj["spec"]["holderIdentity"].as_str().unwrap_or("")),
                json!(age(obj)),
            ],
        ),
        "Namespace" => (
            vec![
                column("Name", "string", 0),
                column("Status", "string", 0),
                column("Age", "string", 0),
            ],
            vec![
                name,
                json!(obj["status"]["phase"].as_str().unwrap_or("Active")),
                json!(age(obj)),
            ],
        ),
        "ServiceAccount" => (
            vec![
                column("Name", "string", 0),
                column("Secrets", "integer", 0),
                column("Age", "string", 0),
            ],
            vec![
                name,
                json!(obj["secrets"].as_array().map(Vec::len).unwrap_or(0)),
                json!(age(obj)),
            ],
        ),
        "DaemonSet" => {
            let s = &obj["status"];
            let n = |k: &str| json!(s[k].as_i64().unwrap_or(0));
            let selector = obj["spec"]["template"]["spec"]["nodeSelector"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "<none>".into());
            (
                vec![
                    column("Name", "string", 0),
                    column("Desired", "integer", 0),
                    column("Current", "integer", 0),
                    column("Ready", "integer", 0),
                    column("Up-to-date", "integer", 0),
                    column("Available", "integer", 0),
                    column("Node Selector", "string", 0),
                    column("Age", "string", 0),
                ],
                vec![
                    name,
                    n("desiredNumberScheduled"),
                    n("currentNumberScheduled"),
                    n("numberReady"),
                    n("updatedNumberScheduled"),
                    n("numberAvailable"),
                    json!(selector),
                    json!(age(obj)),
                ],
            )
        }
        _ => (
            vec![column("Name", "string", 0), column("Age", "string", 0)],
            vec![name, json!(age(obj))],
        ),
    }
}

fn to_table(kind: &Kind, items: &[Value], rev: &str, query: &Query) -> Value {
    let include = query.get("includeObject").unwrap_or("Metadata");
    let mut columns = table_row(kind, &json!({})).0;
    let rows: Vec<Value> = items
        .iter()
        .map(|obj| {
            let (cols, cells) = table_row(kind, obj);
            columns = cols;
            let mut row = json!({"cells": cells});
            match include {
                "None" => {}
                "Object" => row["object"] = obj.clone(),
                _ => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": obj["metadata"],
                    })
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rev},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

// ---- seeding ----

/// Stores `obj` as `manager` created it (kubeadm's uploads, the API server's namespaces).
pub async fn seed_object(etcd: &EtcdClient, mut obj: Value, manager: &str) -> Result<(), String> {
    let kind = kind_of_object(&obj).ok_or_else(|| {
        format!(
            "cannot seed {} {}: the simulated API server does not serve it",
            obj["apiVersion"], obj["kind"]
        )
    })?;
    let ns = meta_str(&obj, "namespace").to_owned();
    let name = prepare_create(kind, &ns, &mut obj).map_err(|_| {
        format!(
            "cannot seed {} {:?}: invalid name or namespace",
            kind.kind,
            meta_str(&obj, "name")
        )
    })?;
    let w = Writer {
        manager: manager.to_owned(),
        operation: "Update",
        api_version: kind.api_version(),
        subresource: String::new(),
        time: time::rfc3339(time::now_unix()),
    };
    managed::record(&w, None, &mut obj, None, kind.has_status());
    etcd.create(&kind.key(&ns, &name), &encode(&obj))
        .await
        .map_err(|e| format!("seeding {} {name}: {e}", kind.kind))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route_to_kinds_and_keys() {
        let t = route("/api/v1/namespaces/kube-system/configmaps/kube-proxy").expect("routes");
        assert_eq!(
            t.kind.key(&t.namespace, &t.name),
            "/registry/configmaps/kube-system/kube-proxy"
        );
        let t = route("/api/v1/nodes/cp1/status").expect("routes");
        assert_eq!(
            (
                t.kind.key(&t.namespace, &t.name).as_str(),
                t.subresource.as_str()
            ),
            ("/registry/minions/cp1", "status")
        );
        let t = route("/api/v1/namespaces/kube-system").expect("routes");
        assert_eq!(t.kind.kind, "Namespace");
        assert_eq!(t.name, "kube-system");
        let t = route("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases")
            .expect("routes");
        assert_eq!((t.kind.kind, t.name.as_str()), ("Lease", ""));
        assert!(
            route("/api/v1/configmaps/x").is_none(),
            "namespaced needs a namespace"
        );
        assert!(route("/api/v1/namespaces/a/configmaps/x/status").is_none());
        assert!(route("/apis/apps/v1/namespaces/a/widgets").is_none());
    }

    #[test]
    fn selectors_filter() {
        let s = parse_label_selector("a=1,b!=2,c,!d").expect("parses");
        let labels = json!({"a": "1", "b": "3", "c": ""});
        assert!(s.iter().all(|r| r.matches(&labels)));
        assert!(!LabelReq::Eq("a".into(), "2".into()).matches(&labels));
        assert!(parse_field_selector("spec.nodeName=w1").is_ok());
        assert!(
            parse_field_selector("spec.foo=w1")
                .unwrap_err()
                .contains("not a known field")
        );
        let pod = json!({"spec": {"nodeName": "w1"}});
        assert_eq!(field_value(&pod, "spec.nodeName"), "w1");
        let secret = json!({"type": "bootstrap.kubernetes.io/token"});
        assert!(parse_field_selector("type=bootstrap.kubernetes.io/token").is_ok());
        assert_eq!(
            field_value(&secret, "type"),
            "bootstrap.kubernetes.io/token"
        );
    }

    #[test]
    fn updates_keep_server_fields_and_split_status() {
        let kind = find_kind("", "v1", "nodes").expect("nodes");
        let old = json!({"metadata": {"name": "n", "uid": "u1", "creationTimestamp": "t"}, "spec": {"a": 1}, "status": {"s": 1}});
        let new =
            json!({"metadata": {"name": "n", "uid": "evil"}, "spec": {"a": 2}, "status": {"s": 2}});
        let main = merge_update(kind, &old, new.clone(), "");
        assert_eq!(
            (
                main["metadata"]["uid"].clone(),
                main["spec"]["a"].clone(),
                main["status"]["s"].clone()
            ),
            (json!("u1"), json!(2), json!(1))
        );
        let st = merge_update(kind, &old, new, "status");
        assert_eq!(
            (st["spec"]["a"].clone(), st["status"]["s"].clone()),
            (json!(1), json!(2))
        );
    }

    #[test]
    fn names_are_validated_on_create() {
        let kind = find_kind("", "v1", "configmaps").expect("cm");
        let mut obj = json!({"metadata": {"name": "Bad_Name"}});
        assert!(prepare_create(kind, "default", &mut obj).is_err());
        let mut obj = json!({"metadata": {"generateName": "csr-"}});
        let name = prepare_create(kind, "default", &mut obj).expect("generated");
        assert!(name.starts_with("csr-") && name.len() == 9, "{name}");
        assert_eq!(obj["metadata"]["namespace"], "default");
        assert!(
            obj["metadata"]["uid"]
                .as_str()
                .is_some_and(|u| u.len() == 36)
        );
    }

    #[test]
    fn query_strings_are_decoded() {
        let q = Query::parse("labelSelector=a%3Db%2Cc&fieldManager=kubectl&x");
        assert_eq!(q.get("labelSelector"), Some("a=b,c"));
        assert_eq!(q.get("x"), Some(""));
    }
}
