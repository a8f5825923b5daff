//! The core's signer read back by the real `openssl`: a certificate reissued for its key
//! verifies against the cluster CA, has the same public key as before, kubeadm's serving
//! profile and the SANs asked for; the key file it was made with still matches it.

use std::path::Path;
use std::process::Command;

use hactl::lab::pki::{self, CertSpec, KubeadmSigner, Usage};
use hactl::observed::{KeyType, San};
use hactl::seams::{CertRequest, Signer};

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_reissued_apiserver_certificate_as_openssl_reads_it() {
    let dir = std::env::temp_dir().join(format!("hactl-pki-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = pki::new_ca("kubernetes").unwrap();
    let mut spec = CertSpec::new("kube-apiserver", Usage::Server);
    spec.dns_names = vec!["cp1".into(), "kubernetes".into()];
    spec.ip_addresses = vec!["10.96.0.1".parse().unwrap(), "127.0.0.11".parse().unwrap()];
    let old = pki::issue(&ca, &spec).unwrap();
    let sans: Vec<San> = [
        "DNS:cp1",
        "DNS:kubernetes",
        "IP:10.96.0.1",
        "IP:127.0.0.11",
        "DNS:k8s-api.lab.internal",
        "IP:127.0.0.100",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let new = KubeadmSigner
        .issue(
            &ca.cert_pem,
            &ca.key_pem,
            &CertRequest {
                cert_pem: old.cert_pem.clone(),
                sans,
                key_type: KeyType::Rsa2048,
                now,
            },
        )
        .unwrap();
    let (ca_crt, old_crt, new_crt, key) = (
        dir.join("ca.crt"),
        dir.join("old.crt"),
        dir.join("apiserver.crt"),
        dir.join("apiserver.key"),
    );
    std::fs::write(&ca_crt, &ca.cert_pem).unwrap();
    std::fs::write(&old_crt, &old.cert_pem).unwrap();
    std::fs::write(&new_crt, &new).unwrap();
    std::fs::write(&key, &old.key_pem).unwrap();
    assert_eq!(
        openssl(&["verify", "-CAfile", path(&ca_crt), path(&new_crt)]),
        format!("{}: OK\n", path(&new_crt))
    );
    let pubkey = |p: &Path| openssl(&["x509", "-in", path(p), "-noout", "-pubkey"]);
    assert_eq!(pubkey(&new_crt), pubkey(&old_crt), "the same key");
    assert_eq!(
        openssl(&["x509", "-in", path(&new_crt), "-noout", "-modulus"]),
        openssl(&["rsa", "-in", path(&key), "-noout", "-modulus"]),
        "apiserver.key, untouched, still matches"
    );
    let text = openssl(&[
        "x509",
        "-in",
        path(&new_crt),
        "-noout",
        "-subject",
        "-ext",
        "subjectAltName,keyUsage,extendedKeyUsage,basicConstraints,authorityKeyIdentifier",
    ]);
    for want in [
        "subject=CN = kube-apiserver",
        "DNS:cp1, DNS:kubernetes, DNS:k8s-api.lab.internal, IP Address:10.96.0.1, IP Address:127.0.0.11, IP Address:127.0.0.100",
        "Digital Signature, Key Encipherment",
        "TLS Web Server Authentication",
        "CA:FALSE",
        "X509v3 Authority Key Identifier",
    ] {
        assert!(text.contains(want), "no {want:?} in\n{text}");
    }
    let serial = |p: &Path| openssl(&["x509", "-in", path(p), "-noout", "-serial"]);
    assert_ne!(serial(&new_crt), serial(&old_crt), "a new serial");
    std::fs::remove_dir_all(&dir).unwrap();
}
