//! The kubeadm-certs Secret: `kubeadm init phase upload-certs` encrypts the shared
//! certificates and keys with the certificate key (AES-256-GCM, nonce prepended, as
//! kubeadm's `cryptoutil.EncryptBytes`), and `kubeadm join --control-plane` downloads and
//! decrypts them.

use std::collections::BTreeMap;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::{Flags, KubeadmCtx, error_exit, failure, token};
use crate::lab::ExecOutput;
use crate::lab::components::client::ApiClient;

/// The Secret's name, in kube-system.
pub const SECRET: &str = "kubeadm-certs";

/// The files kubeadm shares through the Secret, relative to `/etc/kubernetes/pki`, for a
/// stacked-etcd cluster.
pub const SHARED_FILES: &[&str] = &[
    "ca.crt",
    "ca.key",
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
    "sa.key",
    "sa.pub",
    "etcd/ca.crt",
    "etcd/ca.key",
];

/// The Secret data key of a shared file: kubeadm replaces `/` with `-`.
pub fn secret_key(file: &str) -> String {
    file.replace('/', "-")
}

fn cipher(key: &[u8]) -> Result<LessSafeKey, String> {
    let unbound = UnboundKey::new(&AES_256_GCM, key)
        .map_err(|_| format!("crypto/aes: invalid key size {}", key.len()))?;
    Ok(LessSafeKey::new(unbound))
}

/// AES-GCM with a random nonce written before the ciphertext.
pub fn encrypt(key: &[u8], data: &[u8]) -> Result<Vec<u8>, String> {
    let cipher = cipher(key)?;
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| "crypto/rand: no randomness".to_string())?;
    let mut sealed = data.to_vec();
    cipher
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut sealed,
        )
        .map_err(|_| "cipher: seal failed".to_string())?;
    let mut out = nonce.to_vec();
    out.extend(sealed);
    Ok(out)
}

/// The inverse of `encrypt`, failing with Go's words.
pub fn decrypt(key: &[u8], data: &[u8]) -> Result<Vec<u8>, String> {
    let cipher = cipher(key)?;
    if data.len() < NONCE_LEN {
        return Err("size of payload is less than the nonce size".into());
    }
    let (nonce, sealed) = data.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce)
        .map_err(|_| "size of payload is less than the nonce size".to_string())?;
    let mut buf = sealed.to_vec();
    let plain = cipher
        .open_in_place(nonce, Aad::empty(), &mut buf)
        .map_err(|_| "cipher: message authentication failed".to_string())?;
    Ok(plain.to_vec())
}

/// Decodes a certificate key (64 hex digits) as kubeadm does.
pub fn decode_key(key_hex: &str) -> Result<Vec<u8>, String> {
    let key_hex = key_hex.trim();
    if key_hex.len() % 2 == 1 {
        return Err("encoding/hex: odd length hex string".into());
    }
    (0..key_hex.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&key_hex[i..i + 2], 16).map_err(|_| {
                let bad = key_hex[i..]
                    .chars()
                    .find(|c| !c.is_ascii_hexdigit())
                    .unwrap_or('?');
                format!("encoding/hex: invalid byte: U+{:04X} {bad:?}", bad as u32)
            })
        })
        .collect()
}

/// A new certificate key: 32 random bytes, as hex.
pub fn new_key() -> Result<String, String> {
    let mut key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut key).map_err(|_| "crypto/rand: no randomness".to_string())?;
    Ok(key.iter().map(|b| format!("{b:02x}")).collect())
}

/// What `kubeadm join --control-plane` does in its download-certs phase: the shared files
/// by their path under `/etc/kubernetes/pki` (`etcd/ca.key`, …). The error is the text after
/// `error downloading certs: `, as kubeadm wraps it.
pub async fn download(
    client: &ApiClient,
    key_hex: &str,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let key = decode_key(key_hex).map_err(|e| format!("error decoding certificate key: {e}"))?;
    let resp = client
        .get(&format!("/api/v1/namespaces/kube-system/secrets/{SECRET}"))
        .await
        .map_err(|e| format!("error downloading the secret: {e}"))?;
    if resp.status == 404 {
        return Err(format!(
            "error downloading the secret: Secret \"{SECRET}\" was not found in the \"kube-system\" Namespace. This Secret might have expired. Please, run `kubeadm init phase upload-certs --upload-certs` on a control plane to generate a new one"
        ));
    }
    if !resp.is_success() {
        return Err(format!(
            "error downloading the secret: {}",
            resp.status_message()
        ));
    }
    let secret = resp
        .json()
        .map_err(|e| format!("error downloading the secret: {e}"))?;
    let mut files = BTreeMap::new();
    for file in SHARED_FILES {
        let name = secret_key(file);
        let Some(encoded) = secret["data"][&name].as_str() else {
            continue;
        };
        let sealed = STANDARD
            .decode(encoded)
            .map_err(|e| format!("error decoding secret data with provided key: {e}"))?;
        let plain = decrypt(&key, &sealed)
            .map_err(|e| format!("error decoding secret data with provided key: {e}"))?;
        files.insert(file.to_string(), plain);
    }
    Ok(files)
}

/// `kubeadm init phase upload-certs --upload-certs [--config F] [--certificate-key K]`:
/// a short-lived (2 h) bootstrap token owns the Secret, so the garbage collector removes the
/// Secret once the token cleaner removed the expired token, as on a real cluster.
pub async fn upload_certs(ctx: &KubeadmCtx<'_>, args: &[&str]) -> ExecOutput {
    let flags = match Flags::parse(
        args,
        &["config", "certificate-key", "kubeconfig"],
        &[
            "upload-certs",
            "skip-certificate-key-print",
            "one-output",
            "dry-run",
        ],
    ) {
        Ok(f) => f,
        Err(e) => return failure(format!("Error: {e}\n")),
    };
    if !flags.is_set("upload-certs") {
        return ExecOutput {
            stdout: "[upload-certs] Skipping phase. Please see --upload-certs\n".into(),
            ..Default::default()
        };
    }
    let phase = |stdout: String, e: &str| {
        error_exit(stdout, &format!("error execution phase upload-certs: {e}"))
    };
    let key_hex = match flags.get("certificate-key") {
        Some(k) => k.to_string(),
        None => match new_key() {
            Ok(k) => k,
            Err(e) => return phase(String::new(), &e),
        },
    };
    let key = match decode_key(&key_hex) {
        Ok(k) if k.len() == 32 => k,
        Ok(k) => {
            return phase(
                String::new(),
                &format!(
                    "error uploading certs: crypto/aes: invalid key size {}",
                    k.len()
                ),
            );
        }
        Err(e) => {
            return phase(
                String::new(),
                &format!("error uploading certs: error decoding certificate key: {e}"),
            );
        }
    };
    let pki_dir = match certificates_dir(ctx, flags.get("config")) {
        Ok(d) => d,
        Err(e) => return phase(String::new(), &e),
    };
    let (client, _) = match token::admin_client(ctx, &flags) {
        Ok(c) => c,
        Err(e) => return phase(String::new(), &e),
    };
    let mut stdout = format!(
        "[upload-certs] Storing the certificates in Secret \"{SECRET}\" in the \"kube-system\" Namespace\n"
    );
    let mut data = serde_json::Map::new();
    for file in SHARED_FILES {
        let node_path = format!("{pki_dir}/{file}");
        let bytes = match std::fs::read(ctx.lab.node_path(&ctx.node.name, &node_path)) {
            Ok(b) => b,
            Err(e) => {
                return phase(
                    stdout,
                    &format!(
                        "error uploading certs: open {node_path}: {}",
                        crate::lab::components::client::os_text(&e)
                    ),
                );
            }
        };
        match encrypt(&key, &bytes) {
            Ok(sealed) => {
                data.insert(secret_key(file), serde_json::json!(STANDARD.encode(sealed)));
            }
            Err(e) => return phase(stdout, &format!("error uploading certs: {e}")),
        }
    }
    // The proxy token whose expiry ends the Secret's life.
    let owner = match crate::lab::files::bootstrap_token()
        .map_err(|e| e.to_string())
        .and_then(|t| {
            token::token_secret(
                &t,
                "Proxy for managing TTL for the kubeadm-certs secret",
                CERTS_TTL,
                &[],
                &[],
            )
        }) {
        Ok(s) => s,
        Err(e) => return phase(stdout, &format!("error uploading certs: {e}")),
    };
    let owner = match token::create_secret(&client, &owner).await {
        Ok(o) => o,
        Err(e) => return phase(stdout, &format!("error uploading certs: {e}")),
    };
    let secret = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": SECRET,
            "namespace": "kube-system",
            "ownerReferences": [{
                "apiVersion": "v1",
                "kind": "Secret",
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "type": "Opaque",
        "data": data,
    });
    if let Err(e) = client.create_or_update(&secret).await {
        return phase(stdout, &format!("error uploading certs: {e}"));
    }
    if flags.is_set("skip-certificate-key-print") {
        return ExecOutput {
            stdout,
            ..Default::default()
        };
    }
    if flags.is_set("one-output") {
        stdout.clear();
    } else {
        stdout.push_str("[upload-certs] Using certificate key:\n");
    }
    stdout.push_str(&key_hex);
    stdout.push('\n');
    ExecOutput {
        stdout,
        ..Default::default()
    }
}

/// How long the kubeadm-certs Secret lives (kubeadm's `DefaultCertTokenDuration`).
pub const CERTS_TTL: std::time::Duration = std::time::Duration::from_secs(2 * 3600);

/// `certificatesDir` of the `--config` file's ClusterConfiguration, or kubeadm's default.
fn certificates_dir(ctx: &KubeadmCtx<'_>, config: Option<&str>) -> Result<String, String> {
    let Some(path) = config else {
        return Ok("/etc/kubernetes/pki".into());
    };
    let text = std::fs::read_to_string(ctx.lab.node_path(&ctx.node.name, path)).map_err(|e| {
        format!(
            "unable to read config from {path:?} : open {path}: {}",
            crate::lab::components::client::os_text(&e)
        )
    })?;
    let doc = super::config::cluster_configuration_doc(&text, path)?;
    Ok(doc["certificatesDir"]
        .as_str()
        .unwrap_or("/etc/kubernetes/pki")
        .trim_end_matches('/')
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_with_its_key() {
        let key = decode_key(&new_key().unwrap()).unwrap();
        let sealed = encrypt(&key, b"-----BEGIN CERTIFICATE-----").unwrap();
        assert_eq!(sealed.len(), NONCE_LEN + 27 + 16);
        assert_eq!(
            decrypt(&key, &sealed).unwrap(),
            b"-----BEGIN CERTIFICATE-----"
        );
        let mut other = key.clone();
        other[0] ^= 1;
        assert_eq!(
            decrypt(&other, &sealed).unwrap_err(),
            "cipher: message authentication failed"
        );
        assert_eq!(
            decrypt(&key, &sealed[..4]).unwrap_err(),
            "size of payload is less than the nonce size"
        );
    }

    #[test]
    fn keys_decode_as_go_does() {
        assert_eq!(decode_key("0a0b").unwrap(), vec![10, 11]);
        assert_eq!(
            decode_key("abc").unwrap_err(),
            "encoding/hex: odd length hex string"
        );
        assert!(
            decode_key("zz")
                .unwrap_err()
                .starts_with("encoding/hex: invalid byte")
        );
        assert_eq!(new_key().unwrap().len(), 64);
        assert_eq!(secret_key("etcd/ca.key"), "etcd-ca.key");
    }
}
