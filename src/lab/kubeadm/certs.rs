//! The kubeadm-certs Secret: `kubeadm init phase upload-certs` encrypts the shared
//! certificates and keys with the certificate key (AES-256-GCM, nonce prepended, as
//! kubeadm's `cryptoutil.EncryptBytes`), and `kubeadm join --control-plane` downloads and
//! decrypts them.

use std::collections::BTreeMap;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::KubeadmCtx;
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

/// `kubeadm init phase upload-certs --upload-certs [--config F] [--certificate-key K]`.
pub async fn upload_certs(_ctx: &KubeadmCtx<'_>, _args: &[&str]) -> ExecOutput {
    super::failure("hactl lab: `kubeadm init phase upload-certs` is not simulated yet\n")
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
