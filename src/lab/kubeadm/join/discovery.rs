//! Token discovery as kubeadm's `discovery/token` does it: read `kube-public/cluster-info`
//! through the endpoint without verifying TLS, check the `jws-kubeconfig-<id>` signature for
//! the token and the CA against the pins, then read it again verifying TLS with that CA (the
//! server name being the endpoint's host, resolved through the node's `/etc/hosts`).

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use yaml_rust2::{Yaml, YamlLoader};

use crate::lab::components::client::{ApiClient, ClientAuth, Resolver};
use crate::lab::components::jws;
use crate::lab::pki;

const CLUSTER_INFO: &str = "/api/v1/namespaces/kube-public/configmaps/cluster-info?timeout=10s";

/// What discovery established: the cluster-info kubeconfig's server and CA, now trusted.
#[derive(Clone, Debug)]
pub struct Discovered {
    /// `server:` of cluster-info's kubeconfig: where the TLS bootstrap (and the kubelet) goes.
    pub server: String,
    pub ca_pem: String,
}

/// How long discovery polls cluster-info for the token's signature (kubeadm: 5 min, every
/// 5 s; the lab's controllers act within a second).
#[derive(Clone, Copy, Debug)]
pub struct Polling {
    pub interval: Duration,
    pub timeout: Duration,
}

impl Default for Polling {
    fn default() -> Self {
        Polling {
            interval: Duration::from_millis(500),
            timeout: Duration::from_secs(3),
        }
    }
}

/// Checks `--discovery-token-ca-cert-hash` values as kubeadm's `pubkeypin.Set.Allow` does;
/// the lower-case hex digests.
pub fn parse_pins(pins: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for pin in pins {
        let parts: Vec<&str> = pin.split(':').collect();
        if parts.len() != 2 {
            return Err(
                "invalid hash, expected \"format:hex-value\". Known format(s) are: sha256".into(),
            );
        }
        if !parts[0].eq_ignore_ascii_case("sha256") {
            return Err(format!(
                "unknown hash format {:?}. Known format(s) are: sha256",
                parts[0]
            ));
        }
        let hex = parts[1];
        let bytes = hex.len() / 2;
        if bytes != 32 {
            return Err(format!(
                "expected a 32 byte SHA-256 hash, found {bytes} bytes"
            ));
        }
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("could not decode SHA-256 from hex: encoding/hex: invalid byte".into());
        }
        out.push(hex.to_ascii_lowercase());
    }
    Ok(out)
}

/// Runs discovery against `endpoint` (`host:port`) for the token `id.secret`. `pins` are
/// validated hex digests (empty with `--discovery-token-unsafe-skip-ca-verification`).
/// `wrap_request` adds "failed to request the cluster-info ConfigMap: " to request errors, as
/// newer kubeadm does. The error is the text after "couldn't validate the identity of the
/// API Server: ".
pub async fn discover(
    resolver: Resolver,
    endpoint: &str,
    token_id: &str,
    token_secret: &str,
    pins: &[String],
    polling: Polling,
    wrap_request: bool,
) -> Result<Discovered, String> {
    let url = format!("https://{endpoint}");
    let insecure = ApiClient::new_insecure(&url, ClientAuth::None, resolver.clone())
        .map_err(|e| e.to_string())?;
    let insecure_cm = get_cluster_info(&insecure, token_id, polling, wrap_request).await?;
    let kubeconfig = validate_token(&insecure_cm, token_id, token_secret)?;
    let (server, ca_pem) = parse_kubeconfig(&kubeconfig)?;
    if pins.is_empty() {
        return Ok(Discovered { server, ca_pem });
    }
    check_pins(&ca_pem, pins)?;
    let secure = ApiClient::new(&url, ca_pem.as_bytes(), ClientAuth::None, resolver)
        .map_err(|e| e.to_string())?;
    let secure_cm = get_cluster_info(&secure, token_id, polling, wrap_request).await?;
    if secure_cm["data"]["kubeconfig"].as_str() != Some(kubeconfig.as_str()) {
        return Err("the second kubeconfig from the cluster-info ConfigMap (using validated TLS) was different from the first".into());
    }
    Ok(Discovered { server, ca_pem })
}

/// Polls cluster-info until it carries a signature for the token; the last error otherwise.
async fn get_cluster_info(
    client: &ApiClient,
    token_id: &str,
    polling: Polling,
    wrap_request: bool,
) -> Result<serde_json::Value, String> {
    let deadline = Instant::now() + polling.timeout;
    let client_timeout = polling.timeout.max(Duration::from_secs(1));
    loop {
        let last_error = match tokio::time::timeout(client_timeout, client.get(CLUSTER_INFO)).await
        {
            Err(_) => request_error(
                &format!(
                    "Get \"{}{CLUSTER_INFO}\": context deadline exceeded",
                    client.server()
                ),
                wrap_request,
            ),
            Ok(Err(e)) => request_error(&e.to_string(), wrap_request),
            Ok(Ok(r)) if r.status == 404 => {
                request_error("configmaps \"cluster-info\" not found", wrap_request)
            }
            Ok(Ok(r)) if !r.is_success() => request_error(&r.status_message(), wrap_request),
            Ok(Ok(r)) => {
                let cm = r.json()?;
                if cm["data"][format!("jws-kubeconfig-{token_id}")].is_string() {
                    return Ok(cm);
                }
                format!(
                    "could not find a JWS signature in the cluster-info ConfigMap for token ID {token_id:?}"
                )
            }
        };
        if Instant::now() + polling.interval > deadline {
            return Err(last_error);
        }
        tokio::time::sleep(polling.interval).await;
    }
}

fn request_error(e: &str, wrap: bool) -> String {
    if wrap {
        format!("failed to request the cluster-info ConfigMap: {e}")
    } else {
        e.to_string()
    }
}

/// kubeadm's `validateClusterInfoToken`: the kubeconfig, if its signature is the token's.
fn validate_token(cm: &serde_json::Value, id: &str, secret: &str) -> Result<String, String> {
    let kubeconfig = cm["data"]["kubeconfig"]
        .as_str()
        .filter(|k| !k.is_empty())
        .ok_or("there is no kubeconfig key in the cluster-info ConfigMap. This API Server isn't set up for token bootstrapping, can't connect")?;
    let signature = cm["data"][format!("jws-kubeconfig-{id}")]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("token id {id:?} is invalid for this cluster or it has expired. Use \"kubeadm token create\" on the control-plane node to create a new valid token"))?;
    if jws::compute_detached_signature(kubeconfig, id, secret) != signature {
        return Err(
            "failed to verify JWS signature of received cluster info object, can't trust this API Server"
                .into(),
        );
    }
    Ok(kubeconfig.to_string())
}

/// The (only) cluster of cluster-info's kubeconfig: its server and CA.
pub fn parse_kubeconfig(text: &str) -> Result<(String, String), String> {
    let malformed = |e: &str| format!("malformed kubeconfig in the cluster-info ConfigMap: {e}");
    let docs = YamlLoader::load_from_str(text).map_err(|e| {
        format!("couldn't parse the kubeconfig file in the cluster-info ConfigMap: {e}")
    })?;
    let doc = docs.first().cloned().unwrap_or(Yaml::Null);
    let cluster = doc["clusters"]
        .as_vec()
        .and_then(|c| c.first())
        .map(|c| c["cluster"].clone())
        .ok_or_else(|| malformed("no clusters"))?;
    let server = cluster["server"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| malformed("the cluster has no server"))?
        .to_string();
    let ca = cluster["certificate-authority-data"]
        .as_str()
        .ok_or_else(|| malformed("the cluster has no certificate-authority-data"))?;
    let ca = STANDARD
        .decode(ca.trim())
        .map_err(|e| malformed(&format!("illegal base64 data: {e}")))?;
    Ok((server, String::from_utf8_lossy(&ca).into_owned()))
}

/// kubeadm's `validateClusterCA`: some CA certificate's public key must be pinned.
pub fn check_pins(ca_pem: &str, pins: &[String]) -> Result<(), String> {
    let certs = pem::parse_many(ca_pem)
        .map_err(|e| format!("failed to parse cluster CA from the cluster-info ConfigMap: {e}"))?;
    let mut hashes = Vec::new();
    for cert in certs.iter().filter(|p| p.tag() == "CERTIFICATE") {
        let one = pem::encode(cert);
        let pin = pki::ca_pin(&one).map_err(|e| {
            format!("failed to parse cluster CA from the cluster-info ConfigMap: {e}")
        })?;
        let hex = pin.trim_start_matches("sha256:").to_string();
        if pins.contains(&hex) {
            return Ok(());
        }
        hashes.push(pin);
    }
    if hashes.is_empty() {
        return Err("failed to parse cluster CA from the cluster-info ConfigMap: data does not contain any valid RSA or ECDSA certificates".into());
    }
    Err(format!(
        "cluster CA found in cluster-info ConfigMap is invalid: none of the public keys {:?} are pinned",
        hashes.join(":")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pins_are_checked_as_pubkeypin_does() {
        let good = format!("sha256:{}", "A".repeat(64));
        assert_eq!(parse_pins(&[good]).unwrap(), vec!["a".repeat(64)]);
        assert!(
            parse_pins(&["abc".into()])
                .unwrap_err()
                .starts_with("invalid hash")
        );
        assert!(
            parse_pins(&["md5:00".into()])
                .unwrap_err()
                .starts_with("unknown hash format \"md5\"")
        );
        assert_eq!(
            parse_pins(&["sha256:0011".into()]).unwrap_err(),
            "expected a 32 byte SHA-256 hash, found 2 bytes"
        );
    }

    #[test]
    fn the_ca_must_be_pinned() {
        let ca = pki::new_ca("kubernetes").unwrap();
        let pin = pki::ca_pin(&ca.cert_pem).unwrap();
        let hex = pin.trim_start_matches("sha256:").to_string();
        assert!(check_pins(&ca.cert_pem, &[hex]).is_ok());
        let err = check_pins(&ca.cert_pem, &["0".repeat(64)]).unwrap_err();
        assert_eq!(
            err,
            format!(
                "cluster CA found in cluster-info ConfigMap is invalid: none of the public keys \"{pin}\" are pinned"
            )
        );
    }

    #[test]
    fn the_signature_must_be_the_tokens() {
        let kc = "apiVersion: v1\n";
        let sig = jws::compute_detached_signature(kc, "abcdef", "0123456789abcdef");
        let cm = json!({"data": {"kubeconfig": kc, "jws-kubeconfig-abcdef": sig}});
        assert_eq!(
            validate_token(&cm, "abcdef", "0123456789abcdef").unwrap(),
            kc
        );
        assert!(
            validate_token(&cm, "abcdef", "0123456789abcdeX")
                .unwrap_err()
                .starts_with("failed to verify JWS signature")
        );
        assert!(
            validate_token(&cm, "zzzzzz", "0123456789abcdef")
                .unwrap_err()
                .contains("token id \"zzzzzz\" is invalid for this cluster")
        );
    }

    #[test]
    fn cluster_info_kubeconfig_gives_server_and_ca() {
        let text = crate::lab::files::cluster_info_kubeconfig("CA PEM", "https://lb:6443");
        let (server, ca) = parse_kubeconfig(&text).unwrap();
        assert_eq!(server, "https://lb:6443");
        assert_eq!(ca, "CA PEM");
        assert!(parse_kubeconfig("apiVersion: v1\n").is_err());
    }
}
