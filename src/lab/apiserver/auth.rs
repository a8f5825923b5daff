//! Who is asking and may they: client certificates (CN = user, O = groups), bootstrap tokens,
//! service-account JWTs (RS256, and TokenRequest that issues them), and a fixed set of
//! authorization rules shaped like kubeadm's RBAC bindings.

use std::path::Path;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, KeyPair, RsaKeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hyper::HeaderMap;
use serde_json::{Value, json};
use sha2::Digest;

use super::{ApiServerConfig, ApiServerError, Resp, State, json_response, time};
use crate::lab::files::parse_bootstrap_token as is_bootstrap_token;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    fn in_group(&self, g: &str) -> bool {
        self.groups.iter().any(|x| x == g)
    }
    pub fn is_anonymous(&self) -> bool {
        self.name == "system:anonymous"
    }
}

pub fn user_from_cert(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_owned();
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    groups.push("system:authenticated".into());
    Some(User { name, groups })
}

/// Keys for service-account tokens: those that verify, and the one TokenRequest signs with.
pub struct TokenKeys {
    /// PKCS#1 `RSAPublicKey` DER of each verifying key.
    verify: Vec<Vec<u8>>,
    signing: Option<(RsaKeyPair, String)>,
    issuers: Vec<String>,
    bootstrap: bool,
}

fn rsa_pair(block: &pem::Pem) -> Option<RsaKeyPair> {
    match block.tag() {
        "RSA PRIVATE KEY" => RsaKeyPair::from_der(block.contents()).ok(),
        "PRIVATE KEY" => RsaKeyPair::from_pkcs8(block.contents()).ok(),
        _ => None,
    }
}

fn file_error(path: &Path, message: String) -> ApiServerError {
    ApiServerError::File {
        what: "service-account key",
        path: path.to_owned(),
        message,
    }
}

impl TokenKeys {
    pub fn load(config: &ApiServerConfig) -> Result<TokenKeys, ApiServerError> {
        let mut verify = Vec::new();
        for path in &config.service_account_key_files {
            let text = super::read_file("service-account key", path)?;
            let blocks =
                pem::parse_many(text.as_bytes()).map_err(|e| file_error(path, e.to_string()))?;
            for block in blocks {
                if block.tag() == "PUBLIC KEY" {
                    use x509_parser::prelude::FromDer;
                    let (_, spki) =
                        x509_parser::x509::SubjectPublicKeyInfo::from_der(block.contents())
                            .map_err(|e| file_error(path, e.to_string()))?;
                    verify.push(spki.subject_public_key.data.to_vec());
                } else if let Some(pair) = rsa_pair(&block) {
                    verify.push(pair.public_key().as_ref().to_vec());
                }
            }
        }
        let signing = match &config.service_account_signing_key_file {
            None => None,
            Some(path) => {
                let text = super::read_file("service-account signing key", path)?;
                let block =
                    pem::parse(text.as_bytes()).map_err(|e| file_error(path, e.to_string()))?;
                let pair = rsa_pair(&block)
                    .ok_or_else(|| file_error(path, "not an RSA private key".into()))?;
                let spki = pair
                    .public_key()
                    .as_der()
                    .map_err(|_| file_error(path, "cannot encode the public key".into()))?;
                // kube-apiserver's key id: the SHA-256 of the public key's DER, base64url.
                let kid = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(spki.as_ref()));
                Some((pair, kid))
            }
        };
        Ok(TokenKeys {
            verify,
            signing,
            issuers: config.service_account_issuers.clone(),
            bootstrap: config.enable_bootstrap_token_auth,
        })
    }

    /// A signed RS256 JWT with these claims, or None without a signing key.
    pub fn sign(&self, claims: &Value) -> Option<String> {
        let (pair, kid) = self.signing.as_ref()?;
        let header = json!({"alg": "RS256", "kid": kid});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0u8; pair.public_modulus_len()];
        pair.sign(
            &signature::RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            input.as_bytes(),
            &mut sig,
        )
        .ok()?;
        Some(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }

    /// The claims of a token signed by one of the verifying keys, still valid now.
    fn verify(&self, token: &str) -> Option<Value> {
        let mut parts = token.split('.');
        let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
        if header["alg"] != "RS256" {
            return None;
        }
        let sig = URL_SAFE_NO_PAD.decode(s).ok()?;
        let input = format!("{h}.{c}");
        let verified = self.verify.iter().any(|key| {
            UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, key)
                .verify(input.as_bytes(), &sig)
                .is_ok()
        });
        if !verified {
            return None;
        }
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).ok()?).ok()?;
        let now = time::now_unix();
        if claims["exp"].as_i64().is_some_and(|exp| exp <= now)
            || claims["nbf"].as_i64().is_some_and(|nbf| nbf > now + 60)
        {
            return None;
        }
        let iss = claims["iss"].as_str().unwrap_or("");
        // Legacy secret-based tokens carry this issuer and no audience.
        if iss != "kubernetes/serviceaccount" {
            if !self.issuers.iter().any(|i| i == iss) {
                return None;
            }
            let auds: Vec<&str> = match &claims["aud"] {
                Value::String(a) => vec![a.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            // --api-audiences defaults to the issuers.
            if !auds.iter().any(|a| self.issuers.iter().any(|i| i == a)) {
                return None;
            }
        }
        Some(claims)
    }
}

fn status(code: u16, reason: &str, message: &str) -> Resp {
    json_response(
        code,
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code,
        }),
    )
}

pub fn unauthorized() -> Resp {
    status(401, "Unauthorized", "Unauthorized")
}

/// The user of a request: its client certificate, else its bearer token, else anonymous.
pub async fn authenticate(
    state: &State,
    cert_user: Option<User>,
    headers: &HeaderMap,
) -> Result<User, Resp> {
    if let Some(user) = cert_user {
        return Ok(user);
    }
    let Some(auth) = headers.get(hyper::header::AUTHORIZATION) else {
        return Ok(User {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
        });
    };
    let token = auth
        .to_str()
        .ok()
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(unauthorized)?;
    if let Some((id, secret)) = is_bootstrap_token(token) {
        if !state.tokens.bootstrap {
            return Err(unauthorized());
        }
        return bootstrap_user(state, id, secret).await;
    }
    let claims = state.tokens.verify(token).ok_or_else(unauthorized)?;
    let sub = claims["sub"].as_str().unwrap_or("");
    let mut parts = sub.splitn(4, ':');
    let (Some("system"), Some("serviceaccount"), Some(ns), Some(name)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(unauthorized());
    };
    // Tokens of deleted service accounts stop working, as in kube-apiserver.
    match state
        .etcd
        .get(&format!("/registry/serviceaccounts/{ns}/{name}"))
        .await
    {
        Ok(Some(_)) => {}
        Ok(None) => return Err(unauthorized()),
        Err(e) => return Err(status(500, "InternalError", &e.to_string())),
    }
    Ok(User {
        name: sub.to_owned(),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".into(),
        ],
    })
}

async fn bootstrap_user(state: &State, id: &str, secret: &str) -> Result<User, Resp> {
    let kv = state
        .etcd
        .get(&format!(
            "/registry/secrets/kube-system/bootstrap-token-{id}"
        ))
        .await
        .map_err(|e| status(500, "InternalError", &e.to_string()))?
        .ok_or_else(unauthorized)?;
    let obj: Value = serde_json::from_slice(&kv.value).map_err(|_| unauthorized())?;
    if obj["type"] != "bootstrap.kubernetes.io/token"
        || obj["metadata"]["deletionTimestamp"].is_string()
    {
        return Err(unauthorized());
    }
    let field = |k: &str| -> Option<String> {
        let b = STANDARD.decode(obj["data"][k].as_str()?).ok()?;
        String::from_utf8(b).ok()
    };
    if field("token-id").as_deref() != Some(id)
        || field("token-secret").as_deref() != Some(secret)
        || field("usage-bootstrap-authentication").as_deref() != Some("true")
    {
        return Err(unauthorized());
    }
    if let Some(exp) = field("expiration") {
        match time::parse_rfc3339(&exp) {
            Some(t) if t > time::now_unix() => {}
            _ => return Err(unauthorized()),
        }
    }
    let mut groups = vec!["system:bootstrappers".to_string()];
    if let Some(extra) = field("auth-extra-groups") {
        groups.extend(
            extra
                .split(',')
                .map(str::trim)
                .filter(|g| g.starts_with("system:bootstrappers:"))
                .map(str::to_owned),
        );
    }
    groups.push("system:authenticated".into());
    Ok(User {
        name: format!("system:bootstrap:{id}"),
        groups,
    })
}

/// What a request wants to do, in RBAC's terms.
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

const PRIVILEGED_GROUPS: &[&str] = &[
    "system:masters",
    "kubeadm:cluster-admins",
    "system:nodes",
    "system:serviceaccounts",
];
const PRIVILEGED_USERS: &[&str] = &[
    "system:kube-controller-manager",
    "system:kube-scheduler",
    "system:kube-proxy",
];

fn allowed(user: &User, a: &Attributes<'_>) -> bool {
    if PRIVILEGED_USERS.contains(&user.name.as_str())
        || PRIVILEGED_GROUPS.iter().any(|g| user.in_group(g))
    {
        return true;
    }
    // kubeadm's role for cluster-info, bound to system:anonymous.
    if a.verb == "get"
        && a.resource == "configmaps"
        && a.namespace == "kube-public"
        && a.name == "cluster-info"
        && a.subresource.is_empty()
    {
        return true;
    }
    if user.in_group("system:bootstrappers") {
        return match (a.group, a.resource, a.verb) {
            ("", "configmaps", "get") => {
                a.namespace == "kube-system"
                    && (matches!(a.name, "kubeadm-config" | "kubelet-config" | "kube-proxy")
                        || a.name.starts_with("kubelet-config-"))
            }
            ("", "nodes", "get" | "list") => true,
            ("", "secrets", "get") => a.namespace == "kube-system" && a.name == "kubeadm-certs",
            ("certificates.k8s.io", "certificatesigningrequests", "create" | "get" | "list") => {
                true
            }
            _ => false,
        };
    }
    false
}

pub fn forbidden_message(user: &User, a: &Attributes<'_>) -> String {
    let resource = if a.subresource.is_empty() {
        a.resource.to_owned()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let what = if a.name.is_empty() {
        format!("{} is forbidden", a.resource)
    } else {
        format!("{} \"{}\" is forbidden", a.resource, a.name)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_owned()
    } else {
        format!("in the namespace \"{}\"", a.namespace)
    };
    format!(
        "{what}: User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        user.name, a.verb, a.group
    )
}

pub fn authorize(user: &User, a: &Attributes<'_>) -> Result<(), Resp> {
    if allowed(user, a) {
        return Ok(());
    }
    let mut details = json!({"kind": a.resource});
    if !a.name.is_empty() {
        details["name"] = json!(a.name);
    }
    if !a.group.is_empty() {
        details["group"] = json!(a.group);
    }
    Err(json_response(
        403,
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": forbidden_message(user, a), "reason": "Forbidden",
            "details": details, "code": 403,
        }),
    ))
}

/// Non-resource URLs: health and version for everyone (system:public-info-viewer),
/// discovery and OpenAPI for authenticated users (system:discovery).
pub fn authorize_path(user: &User, method: &hyper::Method, path: &str) -> Result<(), Resp> {
    let public = matches!(path, "/version" | "/healthz" | "/readyz" | "/livez")
        || path.starts_with("/version/");
    // cluster-admin's role grants every non-resource URL: an unknown one is then a 404.
    let cluster_admin = user.in_group("system:masters") || user.in_group("kubeadm:cluster-admins");
    let ok = public
        || cluster_admin
        || !user.is_anonymous() && (path.starts_with("/api") || path.starts_with("/openapi"));
    if ok {
        return Ok(());
    }
    let verb = method.as_str().to_lowercase();
    Err(status(
        403,
        "Forbidden",
        &format!(
            "forbidden: User \"{}\" cannot {verb} path \"{path}\"",
            user.name
        ),
    ))
}

/// TokenRequest: a signed token for an existing service account (the caller checked it).
pub fn token_request(
    state: &State,
    namespace: &str,
    name: &str,
    sa_uid: &str,
    body: &Value,
) -> Result<Value, String> {
    let issuer = state.tokens.issuers.first().cloned().unwrap_or_default();
    let audiences = match body["spec"]["audiences"].as_array() {
        Some(a) if !a.is_empty() => Value::Array(a.clone()),
        _ => json!([issuer]),
    };
    let seconds = body["spec"]["expirationSeconds"]
        .as_i64()
        .unwrap_or(3600)
        .max(600);
    let now = time::now_unix();
    let mut random = [0u8; 16];
    aws_lc_rs::rand::fill(&mut random).map_err(|_| "no randomness".to_string())?;
    let mut kubernetes = json!({
        "namespace": namespace,
        "serviceaccount": {"name": name, "uid": sa_uid},
    });
    let bound = &body["spec"]["boundObjectRef"];
    if let (Some(kind), Some(obj)) = (bound["kind"].as_str(), bound["name"].as_str()) {
        kubernetes[kind.to_lowercase()] = json!({"name": obj, "uid": bound["uid"]});
    }
    let claims = json!({
        "aud": audiences,
        "exp": now + seconds,
        "iat": now,
        "iss": issuer,
        "jti": hex::encode(random),
        "kubernetes.io": kubernetes,
        "nbf": now,
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
    });
    let token = state
        .tokens
        .sign(&claims)
        .ok_or("the API server has no --service-account-signing-key-file")?;
    let mut spec = body["spec"].clone();
    if !spec.is_object() {
        spec = json!({});
    }
    spec["audiences"] = audiences;
    spec["expirationSeconds"] = json!(seconds);
    spec["boundObjectRef"] = bound.clone();
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": time::rfc3339(now)},
        "spec": spec,
        "status": {"token": token, "expirationTimestamp": time::rfc3339(now + seconds)},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> User {
        User {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn attrs<'a>(verb: &'a str, resource: &'a str, ns: &'a str, name: &'a str) -> Attributes<'a> {
        Attributes {
            verb,
            group: "",
            resource,
            subresource: "",
            namespace: ns,
            name,
        }
    }

    #[test]
    fn anonymous_may_read_cluster_info_only() {
        let anon = user("system:anonymous", &["system:unauthenticated"]);
        assert!(allowed(
            &anon,
            &attrs("get", "configmaps", "kube-public", "cluster-info")
        ));
        let a = attrs("get", "configmaps", "kube-system", "x");
        assert!(!allowed(&anon, &a));
        assert_eq!(
            forbidden_message(&anon, &a),
            "configmaps \"x\" is forbidden: User \"system:anonymous\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"kube-system\""
        );
    }

    #[test]
    fn cluster_admins_may_ask_for_any_path_and_others_may_not() {
        let get = hyper::Method::GET;
        let admin = user(
            "kubernetes-admin",
            &["system:masters", "system:authenticated"],
        );
        assert!(authorize_path(&admin, &get, "/swagger-2.0.0.pb-v1").is_ok());
        let node = user("system:node:w1", &["system:nodes", "system:authenticated"]);
        assert!(authorize_path(&node, &get, "/swagger-2.0.0.pb-v1").is_err());
        assert!(authorize_path(&node, &get, "/api/v1").is_ok());
    }

    #[test]
    fn bootstrappers_get_what_join_needs() {
        let b = user(
            "system:bootstrap:abcdef",
            &["system:bootstrappers", "system:authenticated"],
        );
        assert!(allowed(
            &b,
            &attrs("get", "configmaps", "kube-system", "kubeadm-config")
        ));
        assert!(allowed(&b, &attrs("list", "nodes", "", "")));
        assert!(!allowed(
            &b,
            &attrs("update", "configmaps", "kube-system", "kubeadm-config")
        ));
        assert!(!allowed(
            &b,
            &attrs("get", "secrets", "kube-system", "other")
        ));
    }

    #[test]
    fn bootstrap_tokens_have_their_shape() {
        assert_eq!(
            is_bootstrap_token("abcdef.0123456789abcdef"),
            Some(("abcdef", "0123456789abcdef"))
        );
        assert_eq!(is_bootstrap_token("abcdef.0123456789ABCDEF"), None);
        assert_eq!(is_bootstrap_token("eyJhbGciOi.x.y"), None);
    }
}
