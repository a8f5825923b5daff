//! The observed-state fixtures in `tests/fixtures/observed/`: each is an `ObservedState` written
//! as hactl writes it, none holds a secret, and their certificate data is real and agrees with
//! itself (CA pins, issuers, SANs). Regenerate them with `generate.py` beside them.

use std::fs;
use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hactl::observed::{OBSERVED_FORMAT_VERSION, ObservedState, REDACTED, San};
use sha2::{Digest, Sha256};
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, X509Certificate};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/observed");

const EXPECTED: [&str; 8] = [
    "converted-1.31.json",
    "edited-admin-1.31.json",
    "fresh-1.23-docker.json",
    "fresh-1.31.json",
    "fresh-1.33.json",
    "half-1.31.json",
    "stuck-learner-1.31.json",
    "unreachable-worker-1.31.json",
];

const LB_HOST: &str = "k8s-api.lab.internal";
const LB_ADDR: &str = "127.0.0.100";

/// Every `*.json` in the fixture folder, by file name, with its text.
fn fixture_texts() -> Vec<(String, String)> {
    let mut found = Vec::new();
    for entry in fs::read_dir(DIR).expect("the fixture folder exists") {
        let path = entry.expect("a readable folder entry").path();
        if path.extension().is_some_and(|ext| ext == "json") {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("a UTF-8 file name")
                .to_string();
            let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            found.push((name, text));
        }
    }
    found.sort();
    found
}

fn fixtures() -> Vec<(String, ObservedState)> {
    fixture_texts()
        .into_iter()
        .map(|(name, text)| {
            let state = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, state)
        })
        .collect()
}

fn load(name: &str) -> ObservedState {
    let text =
        fs::read_to_string(format!("{DIR}/{name}")).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Every kubeconfig in a snapshot, labelled: the nodes' files and the ConfigMap keys that hold one.
fn kubeconfigs(state: &ObservedState) -> Vec<(String, &str)> {
    let mut found = Vec::new();
    for (node, observation) in &state.nodes {
        for (file, text) in &observation.kubeconfigs {
            found.push((format!("{node}:{file}"), text.as_str()));
        }
    }
    for (key, file) in [
        ("kube-public/cluster-info", "kubeconfig"),
        ("kube-system/kube-proxy", "kubeconfig.conf"),
    ] {
        if let Some(text) = state
            .api
            .configmaps
            .get(key)
            .and_then(|cm| cm.data.get(file))
        {
            found.push((format!("{key}:{file}"), text.as_str()));
        }
    }
    found
}

/// The values of the `key:` lines of a YAML text (list items too), without inline comments.
fn values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let line = line.strip_prefix("- ").unwrap_or(line);
            let value = line.strip_prefix(key)?.strip_prefix(':')?;
            Some(value.split(" #").next().unwrap_or(value).trim())
        })
        .collect()
}

/// base64 of a PEM certificate, as kubeconfigs carry it, to the certificate's DER.
fn pem_certificate(what: &str, data: &str) -> Vec<u8> {
    let pem = STANDARD
        .decode(data)
        .unwrap_or_else(|e| panic!("{what}: not base64: {e}"));
    assert!(
        pem.starts_with(b"-----BEGIN CERTIFICATE-----\n")
            && pem.ends_with(b"-----END CERTIFICATE-----\n"),
        "{what}: not one PEM certificate"
    );
    let (rest, block) =
        x509_parser::pem::parse_x509_pem(&pem).unwrap_or_else(|e| panic!("{what}: not PEM: {e}"));
    assert!(
        rest.is_empty(),
        "{what}: trailing data after the certificate"
    );
    assert_eq!(block.label, "CERTIFICATE", "{what}");
    block.contents
}

fn parse<'a>(what: &str, der: &'a [u8]) -> X509Certificate<'a> {
    let (rest, cert) =
        X509Certificate::from_der(der).unwrap_or_else(|e| panic!("{what}: not X.509: {e}"));
    assert!(
        rest.is_empty(),
        "{what}: trailing data after the certificate"
    );
    cert
}

fn pin(cert: &X509Certificate<'_>) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(cert.public_key().raw))
    )
}

fn subject_key_id(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        })
}

fn authority_key_id(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|id| id.0.to_vec())
            }
            _ => None,
        })
}

fn organizations(cert: &X509Certificate<'_>) -> Vec<String> {
    cert.subject()
        .iter_organization()
        .map(|o| o.as_str().expect("a string O").to_string())
        .collect()
}

#[test]
fn every_fixture_is_an_observed_state() {
    let all = fixtures();
    let names: Vec<&str> = all.iter().map(|(name, _)| name.as_str()).collect();
    for expected in EXPECTED {
        assert!(names.contains(&expected), "{expected} is missing");
    }
    for (name, state) in &all {
        assert_eq!(state.format_version, OBSERVED_FORMAT_VERSION, "{name}");
        assert_eq!(
            state.nodes.keys().map(String::as_str).collect::<Vec<_>>(),
            ["cp1", "cp2", "cp3", "w1", "w2"],
            "{name}: the nodes of plans/lab.toml"
        );
    }
}

#[test]
fn fixtures_are_written_as_hactl_writes_them() {
    for (name, text) in fixture_texts() {
        let state: ObservedState =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let written = serde_json::to_string_pretty(&state).expect("serializes") + "\n";
        assert!(
            written == text,
            "{name} is not in serde_json's pretty form; regenerate it"
        );
    }
}

#[test]
fn no_fixture_holds_a_private_key_or_a_token() {
    let mut redacted = 0;
    for (name, text) in fixture_texts() {
        for needle in ["PRIVATE KEY", "BEGIN RSA"] {
            assert!(!text.contains(needle), "{name} contains {needle:?}");
        }
        let state: ObservedState =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut texts = kubeconfigs(&state);
        for (key, cm) in &state.api.configmaps {
            for (data_key, value) in &cm.data {
                texts.push((format!("{key}:{data_key}"), value.as_str()));
            }
        }
        for (what, text) in texts {
            for key in ["client-key-data", "token"] {
                for value in values(text, key) {
                    assert_eq!(value, REDACTED, "{name} {what}: {key} is not redacted");
                    redacted += 1;
                }
            }
            // Nothing private hides in the base64 either.
            for key in ["certificate-authority-data", "client-certificate-data"] {
                for value in values(text, key) {
                    let decoded = STANDARD
                        .decode(value)
                        .unwrap_or_else(|e| panic!("{name} {what}: {key}: {e}"));
                    let decoded = String::from_utf8_lossy(&decoded);
                    assert!(!decoded.contains("PRIVATE KEY"), "{name} {what}: {key}");
                }
            }
        }
    }
    assert!(
        redacted > 0,
        "no redacted value found at all: is the check looking right?"
    );
}

#[test]
fn certificate_data_decodes_to_pem_certificates_of_the_cluster_ca() {
    for (name, state) in fixtures() {
        for (what, text) in kubeconfigs(&state) {
            assert!(
                text.ends_with('\n') || what.ends_with("kubeconfig.conf"),
                "{name} {what}"
            );
            let mut ca_key_ids = Vec::new();
            for data in values(text, "certificate-authority-data") {
                let der = pem_certificate(&format!("{name} {what}"), data);
                let ca = parse(&format!("{name} {what}"), &der);
                assert!(ca.is_ca(), "{name} {what}: the CA is not a CA");
                assert_eq!(ca.subject().to_string(), "CN=kubernetes", "{name} {what}");
                assert_eq!(ca.subject(), ca.issuer(), "{name} {what}: not self-signed");
                ca_key_ids.push(subject_key_id(&ca).expect("the CA has a subject key id"));
            }
            for data in values(text, "client-certificate-data") {
                let der = pem_certificate(&format!("{name} {what}"), data);
                let cert = parse(&format!("{name} {what}"), &der);
                assert!(!cert.is_ca(), "{name} {what}: a client certificate is a CA");
                let issuer = authority_key_id(&cert).expect("an authority key id");
                assert!(
                    ca_key_ids.contains(&issuer),
                    "{name} {what}: the client certificate is not issued by the file's CA"
                );
            }
        }
    }
}

#[test]
fn ca_pins_are_the_sha256_of_the_cluster_ca_public_key() {
    for (name, state) in fixtures() {
        let cluster_info = state
            .configmap(hactl::configmaps::KubeadmConfigMap::ClusterInfo)
            .and_then(|cm| cm.data.get("kubeconfig"))
            .unwrap_or_else(|| panic!("{name}: no cluster-info"));
        let data = values(cluster_info, "certificate-authority-data");
        assert_eq!(data.len(), 1, "{name}: cluster-info has one cluster");
        let der = pem_certificate(&name, data[0]);
        let cluster_pin = pin(&parse(&name, &der));

        let cp1 = &state.nodes["cp1"];
        assert_eq!(
            cp1.ca_pin.as_deref(),
            Some(cluster_pin.as_str()),
            "{name}: cp1's pin"
        );

        for (node, observation) in &state.nodes {
            let Some(node_pin) = &observation.ca_pin else {
                continue;
            };
            assert_eq!(
                node_pin, &cluster_pin,
                "{name} {node}: another cluster's CA"
            );
            // The node's own kubeconfigs carry that CA too (an operator's extra clusters aside).
            let pins: Vec<String> = observation
                .kubeconfigs
                .values()
                .flat_map(|text| values(text, "certificate-authority-data"))
                .map(|data| pin(&parse(&name, &pem_certificate(&name, data))))
                .collect();
            assert!(
                observation.kubeconfigs.is_empty() || pins.contains(node_pin),
                "{name} {node}: no kubeconfig carries the pinned CA"
            );
        }
    }
}

#[test]
fn converted_apiserver_certificates_carry_the_load_balancer() {
    let lb_name = San::Dns(LB_HOST.to_string());
    let lb_ip = San::Ip(LB_ADDR.parse::<IpAddr>().expect("an IP"));
    let converted = load("converted-1.31.json");
    for (node, address) in [
        ("cp1", "127.0.0.11"),
        ("cp2", "127.0.0.12"),
        ("cp3", "127.0.0.13"),
    ] {
        let cert = converted.nodes[node]
            .apiserver_cert
            .as_ref()
            .unwrap_or_else(|| panic!("{node} has no apiserver cert"));
        let sans = &cert.sans;
        assert!(sans.contains(&lb_name), "{node}: {sans:?}");
        assert!(sans.contains(&lb_ip), "{node}: {sans:?}");
        assert!(
            sans.contains(&San::Dns(node.to_string())),
            "{node}: {sans:?}"
        );
        let own_ip = San::Ip(address.parse::<IpAddr>().expect("an IP"));
        assert!(sans.contains(&own_ip), "{node}: {sans:?}");
        assert!(cert.issuer_matches_ca, "{node}");
    }
}

#[test]
fn the_endpoint_tls_probe_agrees_with_cp1s_certificate() {
    let lb_name = San::Dns(LB_HOST.to_string());
    for (name, state) in fixtures() {
        let Some(cert) = &state.nodes["cp1"].apiserver_cert else {
            panic!("{name}: cp1 has no apiserver cert");
        };
        let tls = state.endpoint.tls.as_ref().expect("a TLS probe");
        assert_eq!(
            tls.is_ok(),
            cert.sans.contains(&lb_name),
            "{name}: TLS through the LB is {tls:?} but cp1's SANs are {:?}",
            cert.sans
        );
        if let Some(reason) = tls.failure() {
            assert!(
                reason.ends_with(&format!(", not {LB_HOST}")),
                "{name}: {reason}"
            );
        }
    }
}

#[test]
fn cluster_info_signatures_are_detached_hs256_jws() {
    for (name, state) in fixtures() {
        let cm = state
            .configmap(hactl::configmaps::KubeadmConfigMap::ClusterInfo)
            .unwrap_or_else(|| panic!("{name}: no cluster-info"));
        let mut signatures = 0;
        for (key, value) in &cm.data {
            let Some(token_id) = key.strip_prefix("jws-kubeconfig-") else {
                assert_eq!(key, "kubeconfig", "{name}");
                continue;
            };
            signatures += 1;
            assert!(
                token_id.len() == 6
                    && token_id
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
                "{name}: token id {token_id:?}"
            );
            let parts: Vec<&str> = value.split('.').collect();
            assert!(
                parts.len() == 3 && parts[1].is_empty(),
                "{name}: {key} is not header..signature"
            );
            let header = URL_SAFE_NO_PAD
                .decode(parts[0])
                .expect("a base64url header");
            assert_eq!(
                String::from_utf8_lossy(&header),
                format!(r#"{{"alg":"HS256","kid":"{token_id}"}}"#),
                "{name}: {key}"
            );
            let mac = URL_SAFE_NO_PAD
                .decode(parts[2])
                .expect("a base64url signature");
            assert_eq!(mac.len(), 32, "{name}: {key}: an HMAC-SHA256");
        }
        assert!(signatures > 0, "{name}: cluster-info has no signature");
    }
}

#[test]
fn admin_client_certificates_follow_the_kubeadm_version() {
    for (name, state) in fixtures() {
        let version = state.nodes["cp1"]
            .kubeadm_version
            .clone()
            .expect("cp1 runs kubeadm");
        let modern = version.as_str() >= "v1.29";
        for (node, observation) in &state.nodes {
            for (file, cn, org) in [
                (
                    "admin.conf",
                    "kubernetes-admin",
                    if modern {
                        "kubeadm:cluster-admins"
                    } else {
                        "system:masters"
                    },
                ),
                (
                    "super-admin.conf",
                    "kubernetes-super-admin",
                    "system:masters",
                ),
            ] {
                let Some(text) = observation.kubeconfigs.get(file) else {
                    continue;
                };
                assert!(
                    modern || file != "super-admin.conf",
                    "{name} {node}: super-admin.conf before kubeadm 1.29"
                );
                let data = values(text, "client-certificate-data");
                let own = data.last().expect("a client certificate");
                let der = pem_certificate(&format!("{name} {node} {file}"), own);
                let cert = parse(&format!("{name} {node} {file}"), &der);
                let cns: Vec<&str> = cert
                    .subject()
                    .iter_common_name()
                    .map(|c| c.as_str().expect("a string CN"))
                    .collect();
                assert_eq!(cns, [cn], "{name} {node} {file}");
                assert_eq!(organizations(&cert), [org], "{name} {node} {file}");
            }
        }
    }
}
