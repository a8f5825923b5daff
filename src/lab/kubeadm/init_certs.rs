//! `kubeadm init phase certs apiserver [--config F]`, as kubeadm's `runCertPhase` does it: a
//! certificate already on disk is kept if `ca.crt` signed it and it is in its validity period
//! (its SANs are never compared, nor its key read: kubeadm#1447, why hactl signs the
//! certificate itself); otherwise a new key and a certificate whose SANs come from the config
//! (`GetAPIServerAltNames`: node name, the `kubernetes` names, the first service IP, the
//! advertise address, controlPlaneEndpoint's host, certSANs; DNS names sorted, addresses in
//! order, both without duplicates).

use std::net::IpAddr;

use yaml_rust2::YamlLoader;

use super::join::cluster::{self, ClusterConfig};
use super::join::{Failure, Out};
use super::{Flags, KubeadmCtx, failure};
use crate::lab::ExecOutput;
use crate::lab::components::client::os_text;
use crate::lab::files::NodeFile;
use crate::lab::pki::{self, CertAndKey, CertSpec, KeyType, Usage};
use crate::tls_verify::GoVerifier;

/// The flags `kubeadm init phase certs apiserver` takes besides `--config` (all of which
/// kubeadm refuses next to `--config`: `ValidateMixedArguments`).
const CONFIG_FLAGS: &[&str] = &[
    "apiserver-advertise-address",
    "apiserver-cert-extra-sans",
    "cert-dir",
    "control-plane-endpoint",
    "kubernetes-version",
    "service-cidr",
    "service-dns-domain",
];

/// What decides the certificate, from the config file or the flags, with kubeadm's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiServerCertConfig {
    pub cert_dir: String,
    /// `nodeRegistration.name`; defaults to the host name (the node's name in the lab).
    pub node_name: String,
    /// `localAPIEndpoint.advertiseAddress`; defaults to the address of the default route's
    /// interface (the node's own address in the lab).
    pub advertise_address: String,
    pub cluster: ClusterConfig,
    /// `encryptionAlgorithm` (v1beta4); RSA-2048 by default.
    pub encryption_algorithm: String,
}

/// The SANs kubeadm issues the certificate for, and the certSANs it skips with a warning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AltNames {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub skipped: Vec<String>,
}

/// kubeadm's `GetAPIServerAltNames` and `RemoveDuplicateAltNames`.
pub fn alt_names(c: &ApiServerCertConfig) -> Result<AltNames, String> {
    let advertise: IpAddr = c.advertise_address.parse().map_err(|_| {
        format!(
            "error parsing LocalAPIEndpoint AdvertiseAddress {}: is not a valid textual representation of an IP address",
            c.advertise_address
        )
    })?;
    let service_ip = cluster::first_service_ip(&c.cluster.service_subnet)?;
    let mut dns = vec![
        c.node_name.clone(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        format!("kubernetes.default.svc.{}", c.cluster.dns_domain),
    ];
    let mut ips = vec![service_ip, advertise];
    let endpoint = &c.cluster.control_plane_endpoint;
    if !endpoint.is_empty() {
        let host = endpoint_host(endpoint)
            .ok_or_else(|| format!("error parsing cluster controlPlaneEndpoint {endpoint:?}"))?;
        match host.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => dns.push(host),
        }
    }
    let mut skipped = Vec::new();
    for san in &c.cluster.cert_sans {
        if let Ok(ip) = san.parse::<IpAddr>() {
            ips.push(ip);
        } else if valid_dns_san(san) {
            dns.push(san.clone());
        } else {
            skipped.push(san.clone());
        }
    }
    dns.sort();
    dns.dedup();
    let mut unique: Vec<IpAddr> = Vec::new();
    for ip in ips {
        if !unique.contains(&ip) {
            unique.push(ip);
        }
    }
    Ok(AltNames {
        dns,
        ips: unique,
        skipped,
    })
}

/// A DNS-1123 subdomain, or one behind `*.` (kubeadm accepts wildcard SANs).
fn valid_dns_san(san: &str) -> bool {
    let name = san.strip_prefix("*.").unwrap_or(san);
    crate::spec::dns::subdomain_problem(name).is_none()
}

/// The host of `host[:port]` (IPv6 in brackets); `None` when it does not parse.
fn endpoint_host(endpoint: &str) -> Option<String> {
    if let Some(rest) = endpoint.strip_prefix('[') {
        let (host, tail) = rest.split_once(']')?;
        return (tail.is_empty() || tail.strip_prefix(':')?.parse::<u16>().is_ok())
            .then(|| host.to_string());
    }
    match endpoint.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            port.parse::<u16>().ok().map(|_| host.to_string())
        }
        _ => Some(endpoint.to_string()),
    }
}

/// Go's `%v` of a string slice: `[a b c]`.
fn go_list<T: ToString>(items: &[T]) -> String {
    let words: Vec<String> = items.iter().map(T::to_string).collect();
    format!("[{}]", words.join(" "))
}

/// The config the phase reads: `--config`'s InitConfiguration and ClusterConfiguration, or
/// the flags; kubeadm checks this before any phase runs, so its errors have no phase prefix.
fn read_config(ctx: &KubeadmCtx<'_>, flags: &Flags) -> Result<ApiServerCertConfig, String> {
    let mut c = ApiServerCertConfig {
        cert_dir: "/etc/kubernetes/pki".into(),
        node_name: ctx.node.name.clone(),
        advertise_address: ctx.node.address.to_string(),
        cluster: cluster::parse("{}")?,
        encryption_algorithm: "RSA-2048".into(),
    };
    let Some(path) = flags.get("config") else {
        let get = |f: &str| flags.get(f).map(str::to_string);
        if let Some(v) = get("cert-dir") {
            c.cert_dir = v;
        }
        if let Some(v) = get("apiserver-advertise-address") {
            c.advertise_address = v;
        }
        if let Some(v) = get("control-plane-endpoint") {
            c.cluster.control_plane_endpoint = v;
        }
        if let Some(v) = get("service-cidr") {
            c.cluster.service_subnet = v;
        }
        if let Some(v) = get("service-dns-domain") {
            c.cluster.dns_domain = v;
        }
        if let Some(v) = get("apiserver-cert-extra-sans") {
            c.cluster.cert_sans = v.split(',').map(|s| s.trim().to_string()).collect();
        }
        return Ok(c);
    };
    let text = std::fs::read_to_string(ctx.lab.node_path(&ctx.node.name, path)).map_err(|e| {
        format!(
            "unable to read config from {path:?} : open {path}: {}",
            os_text(&e)
        )
    })?;
    let docs = YamlLoader::load_from_str(&text)
        .map_err(|e| format!("unable to decode config from {path:?}: {e}"))?;
    let mut found = false;
    for doc in &docs {
        let api_version = doc["apiVersion"].as_str().unwrap_or("");
        let kind = doc["kind"].as_str().unwrap_or("");
        if !matches!(kind, "InitConfiguration" | "ClusterConfiguration") {
            continue;
        }
        if !super::config::supported(api_version, ctx.spec.version.minor) {
            return Err(format!(
                "your configuration file uses an old API spec: {api_version:?}. Please use kubeadm {} instead and run 'kubeadm config migrate --old-config old.yaml --new-config new.yaml', which will write the new, similar spec using a newer API version.",
                ctx.spec.version.minor_string()
            ));
        }
        found = true;
        if kind == "InitConfiguration" {
            if let Some(n) = doc["nodeRegistration"]["name"].as_str() {
                c.node_name = n.trim().to_lowercase();
            }
            if let Some(a) = doc["localAPIEndpoint"]["advertiseAddress"].as_str() {
                c.advertise_address = a.to_string();
            }
        } else {
            c.cluster = cluster::from_doc(doc);
            if let Some(d) = doc["certificatesDir"].as_str() {
                c.cert_dir = d.trim_end_matches('/').to_string();
            }
            if let Some(a) = doc["encryptionAlgorithm"].as_str() {
                c.encryption_algorithm = a.to_string();
            }
        }
    }
    if !found {
        return Err(format!(
            "no InitConfiguration or ClusterConfiguration kind was found in the YAML file {path:?}"
        ));
    }
    Ok(c)
}

/// `kubeadm init phase certs apiserver ARGS` on the context's node.
pub fn apiserver(ctx: &KubeadmCtx<'_>, args: &[&str]) -> ExecOutput {
    let mut valued = CONFIG_FLAGS.to_vec();
    valued.push("config");
    let flags = match Flags::parse(args, &valued, &[]) {
        Ok(f) => f,
        Err(e) => return failure(format!("Error: {e}\n")),
    };
    if flags.get("config").is_some() {
        let mixed: Vec<&str> = CONFIG_FLAGS
            .iter()
            .copied()
            .filter(|f| flags.get(f).is_some())
            .collect();
        if !mixed.is_empty() {
            let e = format!("can not mix '--config' with arguments {}", go_list(&mixed));
            return Out::default().finish(Err(Failure::new(e)));
        }
    }
    let config = match read_config(ctx, &flags) {
        Ok(c) => c,
        Err(e) => return Out::default().finish(Err(Failure::new(e))),
    };
    let key_type = match config.encryption_algorithm.as_str() {
        "RSA-2048" => KeyType::Rsa2048,
        "ECDSA-P256" => KeyType::EcdsaP256,
        other => {
            return failure(format!(
                "hactl lab: encryptionAlgorithm {other} is not simulated (RSA-2048 and ECDSA-P256 are)\n"
            ));
        }
    };
    let mut out = Out::default();
    let result = run_phase(ctx, &config, key_type, &mut out)
        .map_err(|e| Failure::phase("certs/apiserver", e));
    out.finish(result)
}

/// A file of the node: its text, or Go's error for opening it.
fn read(ctx: &KubeadmCtx<'_>, path: &str) -> Result<String, String> {
    std::fs::read_to_string(ctx.lab.node_path(&ctx.node.name, path))
        .map_err(|e| format!("open {path}: {}", os_text(&e)))
}

fn exists(ctx: &KubeadmCtx<'_>, path: &str) -> bool {
    ctx.lab.node_path(&ctx.node.name, path).exists()
}

/// The first certificate of a PEM file, DER.
fn first_cert(pem_text: &str) -> Option<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem_text.as_bytes())
        .next()?
        .ok()
        .map(|c| c.as_ref().to_vec())
}

/// `TryLoadCertFromDisk`: the certificate, or why it cannot be loaded.
fn load_cert(ctx: &KubeadmCtx<'_>, path: &str) -> Result<(String, Vec<u8>), String> {
    let text =
        read(ctx, path).map_err(|e| format!("couldn't load the certificate file {path}: {e}"))?;
    let der = first_cert(&text).ok_or_else(|| {
        format!(
            "couldn't load the certificate file {path}: error reading {path}: data does not contain any valid RSA or ECDSA certificates"
        )
    })?;
    Ok((text, der))
}

fn run_phase(
    ctx: &KubeadmCtx<'_>,
    c: &ApiServerCertConfig,
    key_type: KeyType,
    out: &mut Out,
) -> Result<(), String> {
    let dir = &c.cert_dir;
    let (crt, key, ca_crt, ca_key) = (
        format!("{dir}/apiserver.crt"),
        format!("{dir}/apiserver.key"),
        format!("{dir}/ca.crt"),
        format!("{dir}/ca.key"),
    );
    // External CA mode (ca.crt without ca.key): kubeadm init only checks what is there.
    if exists(ctx, &ca_crt) && !exists(ctx, &ca_key) {
        for (what, path, kind) in [
            ("certificate", &crt, "certificate"),
            ("key", &key, "private key"),
        ] {
            if let Err(e) = read(ctx, path) {
                return Err(format!(
                    "invalid or incomplete external CA: failure loading {what} for apiserver: couldn't load the {kind} file {path}: {e}"
                ));
            }
        }
    }
    // A certificate on disk: kept if the CA signed it and it is valid now; never compared.
    if let Ok((_, der)) = load_cert(ctx, &crt) {
        let (ca_text, _) =
            load_cert(ctx, &ca_crt).map_err(|e| format!("couldn't load CA certificate ca: {e}"))?;
        let verifier = GoVerifier::from_ca_pem(ca_text.as_bytes())
            .map_err(|e| format!("couldn't load CA certificate ca: {e}"))?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        verifier.verify_signed(&der, now).map_err(|e| {
            format!("[certs] certificate apiserver not signed by CA certificate ca: {e}")
        })?;
        out.line("[certs] Using existing apiserver certificate and key on disk");
        return Ok(());
    }
    // No usable certificate: the CA signs a new one.
    let ca = match (read(ctx, &ca_crt), read(ctx, &ca_key)) {
        (Ok(cert_pem), Ok(key_pem)) => CertAndKey { cert_pem, key_pem },
        (Err(_), Err(_)) => {
            return Err(format!(
                "couldn't load CA certificate ca: couldn't load ca certificate authority from {dir}"
            ));
        }
        (Err(e), Ok(_)) => {
            return Err(format!(
                "couldn't load CA certificate ca: failure loading ca certificate authority: failed to load certificate: couldn't load the certificate file {ca_crt}: {e}"
            ));
        }
        (Ok(_), Err(e)) => {
            return Err(format!(
                "couldn't load CA certificate ca: failure loading ca certificate authority: failed to load key: couldn't load the private key file {ca_key}: {e}"
            ));
        }
    };
    let names = alt_names(c)?;
    out.line("[certs] Generating \"apiserver\" certificate and key");
    for san in &names.skipped {
        out.warn(
            "pkiutil.go:672",
            &format!(
                "[certificates] WARNING: '{san}' was not added to the 'apiserver' SAN, because it is not a valid IP or RFC-1123 compliant DNS entry"
            ),
        );
    }
    let spec = CertSpec {
        common_name: "kube-apiserver".into(),
        organizations: vec![],
        dns_names: names.dns.clone(),
        ip_addresses: names.ips.clone(),
        usage: Usage::Server,
        key_type,
    };
    let issued = pki::issue(&ca, &spec).map_err(|e| e.to_string())?;
    // A key (or an unreadable certificate) already there: kubeadm loads what is on disk to
    // validate it, and fails on what it cannot load.
    if exists(ctx, &crt) || exists(ctx, &key) {
        let e = load_cert(ctx, &crt).err().unwrap_or_default();
        return Err(format!(
            "failed to write or validate certificate \"apiserver\": failure loading apiserver certificate: {e}"
        ));
    }
    let files = [
        NodeFile::data(key.clone(), 0o600, issued.key_pem.into_bytes()),
        NodeFile::data(crt.clone(), 0o644, issued.cert_pem.into_bytes()),
    ];
    super::join::write_files(ctx, &files)
        .map_err(|e| format!("failure while saving apiserver certificate and key: {e}"))?;
    out.line(format!(
        "[certs] apiserver serving cert is signed for DNS names {} and IPs {}",
        go_list(&names.dns),
        go_list(&names.ips)
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(sans: &[&str], endpoint: &str) -> ApiServerCertConfig {
        let mut cluster = cluster::parse("{}").unwrap();
        cluster.control_plane_endpoint = endpoint.into();
        cluster.cert_sans = sans.iter().map(|s| s.to_string()).collect();
        ApiServerCertConfig {
            cert_dir: "/etc/kubernetes/pki".into(),
            node_name: "cp1".into(),
            advertise_address: "127.0.0.11".into(),
            cluster,
            encryption_algorithm: "RSA-2048".into(),
        }
    }

    #[test]
    fn dns_names_are_sorted_and_addresses_kept_in_kubeadms_order_without_duplicates() {
        let c = config(
            &[
                "k8s-api.lab.internal",
                "127.0.0.100",
                "10.96.0.1",
                "cp1",
                "*.lab.internal",
                "Bad_Name",
                "",
            ],
            "k8s-api.lab.internal:6443",
        );
        let n = alt_names(&c).unwrap();
        assert_eq!(
            go_list(&n.dns),
            "[*.lab.internal cp1 k8s-api.lab.internal kubernetes kubernetes.default kubernetes.default.svc kubernetes.default.svc.cluster.local]"
        );
        assert_eq!(go_list(&n.ips), "[10.96.0.1 127.0.0.11 127.0.0.100]");
        assert_eq!(n.skipped, ["Bad_Name", ""]);
    }

    #[test]
    fn an_ip_endpoint_is_an_ip_san_and_a_bad_advertise_address_is_kubeadms_error() {
        let n = alt_names(&config(&[], "127.0.0.100:6443")).unwrap();
        assert_eq!(go_list(&n.ips), "[10.96.0.1 127.0.0.11 127.0.0.100]");
        let n = alt_names(&config(&[], "[fd00::1]:6443")).unwrap();
        assert_eq!(go_list(&n.ips), "[10.96.0.1 127.0.0.11 fd00::1]");
        let mut c = config(&[], "");
        c.advertise_address = "cp1".into();
        assert_eq!(
            alt_names(&c).unwrap_err(),
            "error parsing LocalAPIEndpoint AdvertiseAddress cp1: is not a valid textual representation of an IP address"
        );
    }

    #[test]
    fn hosts_of_endpoints() {
        assert_eq!(endpoint_host("lb:6443").as_deref(), Some("lb"));
        assert_eq!(endpoint_host("lb").as_deref(), Some("lb"));
        assert_eq!(endpoint_host("[fd00::1]:6443").as_deref(), Some("fd00::1"));
        assert_eq!(endpoint_host("lb:port"), None);
    }
}
