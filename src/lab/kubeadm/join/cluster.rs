//! What `kubeadm join` reads from the cluster: the ClusterConfiguration in kube-system's
//! kubeadm-config ConfigMap (v1beta3 or v1beta4), reduced to the fields the lab uses.

use std::net::IpAddr;

use yaml_rust2::{Yaml, YamlLoader};

/// The ClusterConfiguration fields that decide what a joining node writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Empty when the cluster has no stable endpoint.
    pub control_plane_endpoint: String,
    pub cert_sans: Vec<String>,
    pub dns_domain: String,
    pub service_subnet: String,
    pub cluster_name: String,
    /// `etcd.local.dataDir`; None with external etcd.
    pub etcd_data_dir: Option<String>,
}

/// Parses the `ClusterConfiguration` key of kubeadm-config, with kubeadm's defaults.
pub fn parse(text: &str) -> Result<ClusterConfig, String> {
    let docs = YamlLoader::load_from_str(text)
        .map_err(|e| format!("failed to decode cluster configuration data: {e}"))?;
    Ok(from_doc(&docs.first().cloned().unwrap_or(Yaml::Null)))
}

/// The fields of a parsed ClusterConfiguration document, with kubeadm's defaults.
pub fn from_doc(doc: &Yaml) -> ClusterConfig {
    let s = |y: &Yaml, default: &str| y.as_str().unwrap_or(default).to_string();
    let cert_sans = doc["apiServer"]["certSANs"]
        .as_vec()
        .map(|v| {
            v.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let etcd_data_dir =
        if doc["etcd"]["external"].is_badvalue() || doc["etcd"]["external"].is_null() {
            Some(s(&doc["etcd"]["local"]["dataDir"], "/var/lib/etcd"))
        } else {
            None
        };
    ClusterConfig {
        control_plane_endpoint: s(&doc["controlPlaneEndpoint"], ""),
        cert_sans,
        dns_domain: s(&doc["networking"]["dnsDomain"], "cluster.local"),
        service_subnet: s(&doc["networking"]["serviceSubnet"], "10.96.0.0/12"),
        cluster_name: s(&doc["clusterName"], "kubernetes"),
        etcd_data_dir,
    }
}

/// The first address of a service subnet (the `kubernetes` Service's ClusterIP), as
/// kubeadm's `GetAPIServerVirtualIP` computes it from the first CIDR.
pub fn first_service_ip(subnet: &str) -> Result<IpAddr, String> {
    let cidr = subnet.split(',').next().unwrap_or("").trim();
    let invalid = || format!("unable to get first IP address from the given CIDR: {cidr}");
    let (addr, bits) = cidr.split_once('/').ok_or_else(invalid)?;
    let bits: u32 = bits.parse().map_err(|_| invalid())?;
    match addr.parse::<IpAddr>().map_err(|_| invalid())? {
        IpAddr::V4(a) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            Ok(IpAddr::from(
                (u32::from(a) & mask).wrapping_add(1).to_be_bytes(),
            ))
        }
        IpAddr::V6(a) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            Ok(IpAddr::from(
                (u128::from(a) & mask).wrapping_add(1).to_be_bytes(),
            ))
        }
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kubeadms_fields_with_defaults() {
        let c = parse("apiServer:\n  certSANs:\n  - k8s-api.lab.internal\n  - 127.0.9.100\napiVersion: kubeadm.k8s.io/v1beta3\ncontrolPlaneEndpoint: k8s-api.lab.internal:6443\nkind: ClusterConfiguration\n").unwrap();
        assert_eq!(c.control_plane_endpoint, "k8s-api.lab.internal:6443");
        assert_eq!(c.cert_sans, ["k8s-api.lab.internal", "127.0.9.100"]);
        assert_eq!(c.dns_domain, "cluster.local");
        assert_eq!(c.etcd_data_dir.as_deref(), Some("/var/lib/etcd"));
        let ext = parse("etcd:\n  external:\n    endpoints: [https://e:2379]\n").unwrap();
        assert_eq!(ext.etcd_data_dir, None);
        assert_eq!(
            parse("kind: ClusterConfiguration\n")
                .unwrap()
                .control_plane_endpoint,
            ""
        );
    }

    #[test]
    fn the_first_service_ip_is_the_subnets_first_address() {
        assert_eq!(
            first_service_ip("10.96.0.0/12").unwrap().to_string(),
            "10.96.0.1"
        );
        assert_eq!(
            first_service_ip("10.100.5.0/16,fd00::/108")
                .unwrap()
                .to_string(),
            "10.100.0.1"
        );
        assert_eq!(
            first_service_ip("fd00::/108").unwrap().to_string(),
            "fd00::1"
        );
        assert!(first_service_ip("nope").is_err());
    }
}
