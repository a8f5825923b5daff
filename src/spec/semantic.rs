//! Checks serde cannot make: names, duplicates, the control-plane count, values out of use.
//!
//! They run on the tree with every wrong value taken out, read into a lenient view that keeps
//! spans, so that a file with a type error in one node still gets its duplicate names and its
//! control-plane count checked.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Range;

use serde::Deserialize;
use serde::de::IntoDeserializer;
use toml::Spanned;
use toml::de::DeTable;

use super::Role;
use super::dns;
use super::error::{Label, Problems, SpecErrorKind};
use super::tree::Seg;

/// The values the checks look at, each with its span; everything optional, other keys ignored.
/// Field names follow `DesiredState`'s (a test below keeps them in step).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct View {
    version: Option<Spanned<u32>>,
    cluster: Option<ClusterView>,
    endpoint: Option<EndpointView>,
    ssh: Option<SshView>,
    node: Option<Spanned<Vec<NodeView>>>,
    policy: Option<PolicyView>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ClusterView {
    name: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EndpointView {
    host: Option<Spanned<String>>,
    addresses: Option<Spanned<Vec<Spanned<IpAddr>>>>,
    port: Option<Spanned<u16>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SshView {
    port: Option<Spanned<u16>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NodeView {
    name: Option<Spanned<String>>,
    address: Option<Spanned<IpAddr>>,
    role: Option<Spanned<Role>>,
    ssh: Option<SshView>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PolicyView {
    worker_parallelism: Option<Spanned<u32>>,
    allow_even_control_plane: Option<Spanned<bool>>,
}

impl View {
    /// Reads the view; `None` only if the tree still holds a wrong value, which the typed
    /// pass has taken out.
    pub fn read(root_span: Range<usize>, clean: DeTable<'_>) -> Option<View> {
        View::deserialize(Spanned::new(root_span, clean).into_deserializer()).ok()
    }
}

/// The help for a port out of range, by which port it is.
pub(crate) fn port_help(path: &[Seg]) -> &'static str {
    match path.first() {
        Some(Seg::Key(k)) if k == "endpoint" => {
            "use the load balancer's TCP port, from 1 to 65535 (the API server's usual port is 6443)"
        }
        _ => {
            "use a TCP port from 1 to 65535 (SSH's usual port is 22), or leave `port` out for \
             OpenSSH's default"
        }
    }
}

pub(crate) fn check(view: &View, problems: &mut Problems) {
    check_version(view, problems);
    check_cluster(view, problems);
    check_endpoint(view, problems);
    check_ports(view, problems);
    check_nodes(view, problems);
    check_roles(view, problems);
    check_policy(view, problems);
}

fn check_version(view: &View, problems: &mut Problems) {
    if let Some(version) = &view.version
        && *version.get_ref() != 1
    {
        problems.push(
            SpecErrorKind::UnsupportedVersion,
            format!("unsupported version {}", version.get_ref()),
            vec![Label::new(version.span(), "hactl reads version 1")],
            "set `version = 1`: the only format version this hactl reads",
        );
    }
}

fn check_cluster(view: &View, problems: &mut Problems) {
    let Some(name) = view.cluster.as_ref().and_then(|c| c.name.as_ref()) else {
        return;
    };
    if let Some(reason) = dns::label_problem(name.get_ref()) {
        problems.push(
            SpecErrorKind::InvalidClusterName,
            format!(
                "cluster name {:?} is not a DNS-1123 label: {reason}",
                name.get_ref()
            ),
            vec![Label::new(name.span(), "not a DNS-1123 label")],
            "use at most 63 lowercase letters, digits and '-', starting and ending with a letter \
             or digit, e.g. \"prod-eu1\"",
        );
    }
}

fn check_endpoint(view: &View, problems: &mut Problems) {
    let Some(endpoint) = &view.endpoint else {
        return;
    };
    if let Some(host) = &endpoint.host {
        let text = host.get_ref();
        let unbracketed = text.trim_start_matches('[').trim_end_matches(']');
        if unbracketed.parse::<IpAddr>().is_ok() {
            problems.push(
                SpecErrorKind::InvalidEndpointHost,
                format!("endpoint.host {text:?} is an IP address, not a DNS name"),
                vec![Label::new(host.span(), "an IP address")],
                "put IPs in endpoint.addresses; endpoint.host must be the load balancer's DNS \
                 name, e.g. \"k8s-api.example.com\", because it becomes controlPlaneEndpoint and \
                 a certificate SAN",
            );
        } else if let Some(reason) = dns::subdomain_problem(text) {
            let help = if text.contains(':') {
                "put the port in endpoint.port and only the load balancer's DNS name in \
                 endpoint.host, e.g. \"k8s-api.example.com\""
            } else {
                "use the load balancer's DNS name: lowercase letters, digits, '-' and '.', e.g. \
                 \"k8s-api.example.com\"; it becomes controlPlaneEndpoint and a certificate SAN"
            };
            problems.push(
                SpecErrorKind::InvalidEndpointHost,
                format!("endpoint.host {text:?} is not a DNS-1123 subdomain: {reason}"),
                vec![Label::new(host.span(), "not a DNS name")],
                help,
            );
        }
    }
    if let Some(addresses) = &endpoint.addresses
        && addresses.get_ref().is_empty()
    {
        problems.push(
            SpecErrorKind::NoEndpointAddress,
            "endpoint.addresses is empty",
            vec![Label::new(addresses.span(), "no addresses")],
            "list the load balancer's IP addresses, e.g. addresses = [\"10.0.0.100\"]: hactl \
             checks the load balancer on each, and they become certificate SANs",
        );
    }
}

fn check_ports(view: &View, problems: &mut Problems) {
    let endpoint_port = view.endpoint.as_ref().and_then(|e| e.port.as_ref());
    let ssh_port = view.ssh.as_ref().and_then(|s| s.port.as_ref());
    let node_ports = view
        .node
        .iter()
        .flat_map(|nodes| nodes.get_ref())
        .filter_map(|n| n.ssh.as_ref()?.port.as_ref());
    let ports = endpoint_port
        .map(|p| ("endpoint", p))
        .into_iter()
        .chain(ssh_port.map(|p| ("ssh", p)))
        .chain(node_ports.map(|p| ("node", p)));
    for (table, port) in ports {
        if *port.get_ref() == 0 {
            problems.push(
                SpecErrorKind::PortOutOfRange,
                "port 0 is out of range",
                vec![Label::new(port.span(), "not in 1..=65535")],
                port_help(&[Seg::Key(table.to_string())]),
            );
        }
    }
}

fn check_nodes(view: &View, problems: &mut Problems) {
    let Some(nodes) = &view.node else {
        return;
    };
    let nodes = nodes.get_ref();
    let mut by_name: BTreeMap<&str, Vec<&Spanned<String>>> = BTreeMap::new();
    // Each address with where it is written and the name of the node it belongs to.
    let mut by_address: BTreeMap<IpAddr, Vec<AddressUse>> = BTreeMap::new();
    for node in nodes {
        if let Some(name) = &node.name {
            by_name.entry(name.get_ref()).or_default().push(name);
            if let Some(reason) = dns::subdomain_problem(name.get_ref()) {
                problems.push(
                    SpecErrorKind::InvalidNodeName,
                    format!(
                        "node name {:?} is not a DNS-1123 subdomain: {reason}",
                        name.get_ref()
                    ),
                    vec![Label::new(name.span(), "not a valid node name")],
                    "use the Kubernetes node name: lowercase letters, digits, '-' and '.', \
                     starting and ending with a letter or digit, e.g. \"cp-1\" or \
                     \"worker-1.example.com\"",
                );
            }
        }
        if let Some(address) = &node.address {
            let name = node.name.as_ref().map(|n| n.get_ref().as_str());
            by_address
                .entry(*address.get_ref())
                .or_default()
                .push((address, name));
        }
    }
    for (name, uses) in &by_name {
        if uses.len() > 1 {
            problems.push(
                SpecErrorKind::DuplicateName,
                format!("node name {name:?} is used by {} nodes", uses.len()),
                again_labels(uses.iter().map(|u| u.span())),
                "give every [[node]] a name of its own: it is the Kubernetes node name and the \
                 etcd member name",
            );
        }
    }
    for (address, uses) in &by_address {
        if uses.len() > 1 {
            let names = uses
                .iter()
                .map(|(_, n)| format!("{:?}", n.unwrap_or("?")))
                .collect::<Vec<_>>()
                .join(", ");
            problems.push(
                SpecErrorKind::DuplicateAddress,
                format!(
                    "address {address} is used by {} nodes ({names})",
                    uses.len()
                ),
                again_labels(uses.iter().map(|(a, _)| a.span())),
                "give every node its own address: hactl reaches each node over SSH there, and a \
                 control-plane node advertises its API server on it",
            );
        }
    }
    let endpoint_addresses = view
        .endpoint
        .as_ref()
        .and_then(|e| e.addresses.as_ref())
        .map(|a| a.get_ref().as_slice())
        .unwrap_or_default();
    for lb in endpoint_addresses {
        for (node_address, name) in by_address.get(lb.get_ref()).into_iter().flatten() {
            let name = name.unwrap_or("?");
            problems.push(
                SpecErrorKind::EndpointAddressIsNodeAddress,
                format!(
                    "endpoint address {} is also the address of node {name:?}",
                    lb.get_ref()
                ),
                vec![
                    Label::new(lb.span(), "the load balancer's address"),
                    Label::new(node_address.span(), format!("node {name:?}'s address")),
                ],
                "give the load balancer addresses of its own: through a node's address every \
                 client would reach that one node, and lose the API when it is down; list the \
                 layer-4 load balancer's addresses (e.g. haproxy's) in endpoint.addresses",
            );
        }
    }
}

type AddressUse<'v> = (&'v Spanned<IpAddr>, Option<&'v str>);

/// Labels for a value used more than once: the first use, then each repeat.
fn again_labels(spans: impl Iterator<Item = Range<usize>>) -> Vec<Label> {
    let mut spans: Vec<_> = spans.collect();
    spans.sort_by_key(|s| s.start);
    let mut labels: Vec<Label> = spans
        .iter()
        .skip(1)
        .map(|s| Label::new(s.clone(), "used again here"))
        .collect();
    if let Some(first) = spans.first() {
        labels.push(Label::new(first.clone(), "first used here"));
    }
    labels
}

fn check_roles(view: &View, problems: &mut Problems) {
    let Some(nodes) = &view.node else {
        return;
    };
    // A node whose role is missing or wrong was reported already; counting without it could
    // report a wrong count.
    let Some(roles) = nodes
        .get_ref()
        .iter()
        .map(|n| n.role.as_ref())
        .collect::<Option<Vec<_>>>()
    else {
        return;
    };
    let control_plane: Vec<_> = roles
        .iter()
        .filter(|r| *r.get_ref() == Role::ControlPlane)
        .collect();
    if control_plane.is_empty() {
        let labels = if roles.is_empty() {
            vec![Label::new(nodes.span(), "no nodes")]
        } else {
            roles
                .iter()
                .map(|r| Label::new(r.span(), "a worker"))
                .collect()
        };
        problems.push(
            SpecErrorKind::NoControlPlane,
            "no node has role = \"control-plane\"",
            labels,
            "give the node that ran `kubeadm init` role = \"control-plane\", and the nodes that \
             are to join it too (3 control-plane nodes in all is usual)",
        );
        return;
    }
    let n = control_plane.len();
    let allowed = view
        .policy
        .as_ref()
        .and_then(|p| p.allow_even_control_plane.as_ref())
        .is_some_and(|a| *a.get_ref());
    if n % 2 == 0 && !allowed {
        let help = if n == 2 {
            "etcd needs a majority of its members up: 2 members need 2 of 2, so losing either \
             node stops the cluster, which is less available than a single control-plane node; \
             use 3 control-plane nodes, or set policy.allow_even_control_plane = true to \
             accept it"
                .to_string()
        } else {
            let survives = n / 2 - 1;
            format!(
                "etcd needs a majority of its members up: {n} members need {} of {n}, so they \
                 survive {survives} {}, no more than {} members would; use {} control-plane \
                 nodes, or set policy.allow_even_control_plane = true to accept it",
                n / 2 + 1,
                if survives == 1 { "failure" } else { "failures" },
                n - 1,
                n + 1,
            )
        };
        problems.push(
            SpecErrorKind::EvenControlPlane,
            format!("{n} control-plane nodes: an even number"),
            control_plane
                .iter()
                .enumerate()
                .map(|(i, r)| Label::new(r.span(), format!("control-plane node {} of {n}", i + 1)))
                .collect(),
            help,
        );
    }
}

fn check_policy(view: &View, problems: &mut Problems) {
    let Some(parallelism) = view
        .policy
        .as_ref()
        .and_then(|p| p.worker_parallelism.as_ref())
    else {
        return;
    };
    if *parallelism.get_ref() == 0 {
        problems.push(
            SpecErrorKind::ZeroParallelism,
            "policy.worker_parallelism is 0: no worker would ever be changed",
            vec![Label::new(parallelism.span(), "must be at least 1")],
            "set it to 1 or more; 1 changes one worker at a time, the safest",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::{
        Cluster, ComponentEndpoint, DesiredState, Endpoint, KnownHosts, Node, Policy, Ssh,
        SshOverride,
    };
    use super::*;

    /// Every key the view reads must exist under that name in `DesiredState`: a file written
    /// from a full `DesiredState` fills every field of the view.
    #[test]
    fn the_view_reads_the_keys_desired_state_writes() {
        let state = DesiredState {
            version: 1,
            cluster: Cluster {
                name: "lab".into(),
                kubeconfig: Some("admin.conf".into()),
            },
            endpoint: Endpoint {
                host: "lb".into(),
                addresses: vec!["10.0.0.1".parse().unwrap()],
                port: 6443,
            },
            ssh: Ssh {
                port: Some(22),
                ..Ssh::default()
            },
            nodes: vec![Node {
                name: "cp1".into(),
                address: "10.0.0.2".parse().unwrap(),
                role: Role::ControlPlane,
                ssh: Some(SshOverride {
                    port: Some(2222),
                    known_hosts: Some(KnownHosts::AcceptNew),
                    ..SshOverride::default()
                }),
            }],
            policy: Policy {
                worker_parallelism: 2,
                component_endpoint: ComponentEndpoint::Endpoint,
                allow_even_control_plane: true,
            },
        };
        let text = toml::to_string(&state).unwrap();
        let root = DeTable::parse(&text).unwrap();
        let view = View::read(root.span(), root.into_inner()).unwrap();
        assert!(view.version.is_some());
        assert!(view.cluster.unwrap().name.is_some());
        let endpoint = view.endpoint.unwrap();
        assert!(endpoint.host.is_some() && endpoint.addresses.is_some() && endpoint.port.is_some());
        assert!(view.ssh.unwrap().port.is_some());
        let node = &view.node.unwrap().into_inner()[0];
        assert!(node.name.is_some() && node.address.is_some() && node.role.is_some());
        assert!(node.ssh.as_ref().unwrap().port.is_some());
        let policy = view.policy.unwrap();
        assert!(policy.worker_parallelism.is_some() && policy.allow_even_control_plane.is_some());
    }
}
