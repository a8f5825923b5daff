//! Parsing and validation of desired-state files: the examples parse into the values they
//! say, and every problem of a file is found, not only the first.

use std::net::IpAddr;
use std::path::Path;

use hactl::spec::{ComponentEndpoint, KnownHosts, Role, SpecErrorKind as K, SpecErrors, parse};
use miette::Diagnostic;

fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
}

fn errors(name: &str, source: &str) -> SpecErrors {
    match parse(name, source) {
        Ok(state) => panic!("{name} parsed: {state:?}"),
        Err(errors) => errors,
    }
}

fn fixture(stem: &str) -> SpecErrors {
    let name = format!("tests/fixtures/specs/{stem}.toml");
    errors(&name, &read(&name))
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A correct file to vary: three control-plane nodes and a worker.
const BASE: &str = r#"
version = 1
[cluster]
name = "lab"
[endpoint]
host = "k8s-api.lab.internal"
addresses = ["127.0.0.100"]
[[node]]
name = "cp1"
address = "127.0.0.11"
role = "control-plane"
[[node]]
name = "cp2"
address = "127.0.0.12"
role = "control-plane"
[[node]]
name = "cp3"
address = "127.0.0.13"
role = "control-plane"
[[node]]
name = "w1"
address = "127.0.0.21"
role = "worker"
"#;

#[test]
fn lab_is_the_lab_topology() {
    let state = parse("plans/lab.toml", &read("plans/lab.toml")).unwrap();
    assert_eq!(state.version, 1);
    assert_eq!(state.cluster.name, "lab");
    assert_eq!(state.cluster.kubeconfig, None);
    assert_eq!(state.endpoint.host, "k8s-api.lab.internal");
    assert_eq!(state.endpoint.addresses, vec![ip("127.0.0.100")]);
    assert_eq!(state.endpoint.port, 6443);
    assert_eq!(state.ssh.user.as_deref(), Some("root"));
    assert!(!state.ssh.sudo);
    assert_eq!(state.ssh.known_hosts, KnownHosts::Strict);
    let nodes: Vec<_> = state
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.address, n.role, n.ssh.is_some()))
        .collect();
    assert_eq!(
        nodes,
        vec![
            ("cp1", ip("127.0.0.11"), Role::ControlPlane, false),
            ("cp2", ip("127.0.0.12"), Role::ControlPlane, false),
            ("cp3", ip("127.0.0.13"), Role::ControlPlane, false),
            ("w1", ip("127.0.0.21"), Role::Worker, false),
            ("w2", ip("127.0.0.22"), Role::Worker, false),
        ]
    );
    assert_eq!(state.policy, hactl::spec::Policy::default());
    assert_eq!(state.endpoint_url(), "https://k8s-api.lab.internal:6443");
}

#[test]
fn production_is_a_realistic_production_cluster() {
    let state = parse("plans/production.toml", &read("plans/production.toml")).unwrap();
    assert_eq!(state.endpoint.addresses.len(), 2);
    assert!(state.ssh.sudo);
    assert_ne!(state.ssh.user.as_deref(), Some("root"));
    assert!(state.ssh.config_file.is_some());
    assert!(state.ssh.identity_file.is_some());
    assert_eq!(state.control_plane_nodes().count(), 3);
    assert_eq!(state.worker_nodes().count(), 5);
    assert_eq!(state.policy.worker_parallelism, 2);
    assert_eq!(state.policy.component_endpoint, ComponentEndpoint::Kubeadm);
    assert_eq!(state.nodes.iter().filter(|n| n.ssh.is_some()).count(), 1);
    for address in state.nodes.iter().map(|n| n.address) {
        assert!(!address.is_loopback(), "{address}");
    }
}

#[test]
fn both_examples_start_with_the_schema_directive() {
    for name in ["plans/lab.toml", "plans/production.toml"] {
        let first = read(name).lines().next().unwrap().to_string();
        assert_eq!(first, "#:schema ../schemas/hactl.schema.json", "{name}");
    }
}

#[test]
fn defaults_fill_what_a_minimal_file_leaves_out() {
    let state = parse("base.toml", BASE).unwrap();
    assert_eq!(state.endpoint.port, 6443);
    assert_eq!(state.ssh, hactl::spec::Ssh::default());
    assert_eq!(state.policy.worker_parallelism, 1);
}

/// Each fixture: how many problems of which kinds. A parser that stops at the first problem
/// fails these counts.
#[test]
fn every_problem_of_each_fixture_is_found() {
    let cases: &[(&str, &[(K, usize)])] = &[
        ("bad-addresses", &[(K::InvalidAddress, 4)]),
        ("bad-enums", &[(K::InvalidValue, 3)]),
        (
            "bad-names",
            &[
                (K::InvalidClusterName, 1),
                (K::InvalidEndpointHost, 1),
                (K::InvalidNodeName, 4),
            ],
        ),
        ("duplicate-addresses", &[(K::DuplicateAddress, 1)]),
        ("duplicate-names", &[(K::DuplicateName, 2)]),
        ("empty-endpoint-addresses", &[(K::NoEndpointAddress, 1)]),
        ("empty", &[(K::MissingKey, 4)]),
        (
            "endpoint-address-is-node-address",
            &[(K::EndpointAddressIsNodeAddress, 1)],
        ),
        ("endpoint-host-is-ip", &[(K::InvalidEndpointHost, 1)]),
        ("even-control-plane", &[(K::EvenControlPlane, 1)]),
        (
            "many-problems",
            &[
                (K::UnsupportedVersion, 1),
                (K::UnknownKey, 2),
                (K::InvalidClusterName, 1),
                (K::InvalidEndpointHost, 1),
                (K::EndpointAddressIsNodeAddress, 1),
                (K::InvalidAddress, 1),
                (K::PortOutOfRange, 1),
                (K::InvalidType, 1),
                (K::InvalidValue, 1),
                (K::EvenControlPlane, 1),
                (K::DuplicateName, 1),
                (K::InvalidNodeName, 1),
                (K::DuplicateAddress, 1),
                (K::ZeroParallelism, 1),
            ],
        ),
        ("missing-keys", &[(K::MissingKey, 3)]),
        ("no-control-plane", &[(K::NoControlPlane, 1)]),
        ("node-not-an-array", &[(K::InvalidType, 1)]),
        ("port-out-of-range", &[(K::PortOutOfRange, 3)]),
        ("port-zero", &[(K::PortOutOfRange, 3)]),
        ("syntax-error", &[(K::Syntax, 3)]),
        ("type-errors", &[(K::InvalidType, 5)]),
        ("unknown-keys", &[(K::UnknownKey, 7), (K::MissingKey, 1)]),
        ("unsupported-version", &[(K::UnsupportedVersion, 1)]),
        ("zero-parallelism", &[(K::ZeroParallelism, 1)]),
    ];
    for (stem, expected) in cases {
        let errors = fixture(stem);
        let mut found = errors.kinds();
        found.sort();
        let mut wanted: Vec<K> = expected
            .iter()
            .flat_map(|(kind, n)| std::iter::repeat_n(*kind, *n))
            .collect();
        wanted.sort();
        assert_eq!(found, wanted, "{stem}");
    }
}

#[test]
fn problems_are_listed_in_file_order() {
    let errors = fixture("many-problems");
    let offsets: Vec<_> = errors.errors.iter().map(|e| e.offset()).collect();
    let mut sorted = offsets.clone();
    sorted.sort();
    assert_eq!(offsets, sorted);
}

#[test]
fn every_problem_has_a_code_a_label_inside_the_file_and_help() {
    for stem in [
        "many-problems",
        "unknown-keys",
        "syntax-error",
        "missing-keys",
    ] {
        let name = format!("tests/fixtures/specs/{stem}.toml");
        let source = read(&name);
        for error in errors(&name, &source).errors {
            let code = error.code().unwrap().to_string();
            assert_eq!(code, error.kind.code());
            assert!(code.starts_with("hactl::spec::"), "{code}");
            assert!(!error.help.is_empty());
            assert!(error.source_code().is_some());
            let labels: Vec<_> = error.labels().unwrap().collect();
            assert!(!labels.is_empty(), "{}", error.message);
            for label in labels {
                assert!(label.offset() + label.len() <= source.len());
                assert!(label.label().is_some());
            }
        }
    }
}

#[test]
fn labels_point_at_the_offending_value() {
    let errors = fixture("bad-addresses");
    let source = read("tests/fixtures/specs/bad-addresses.toml");
    let values: Vec<_> = errors
        .errors
        .iter()
        .map(|e| {
            let label = &e.labels[0];
            &source[label.offset()..label.offset() + label.len()]
        })
        .collect();
    assert_eq!(
        values,
        [
            "\"127.0.0.100:6443\"",
            "\"fd00::100/64\"",
            "\"127.0.0.300\"",
            "\"cp2.lab.internal\""
        ]
    );
    assert!(errors.errors[0].message.contains("127.0.0.100:6443"));
}

#[test]
fn several_wrong_values_in_one_table_are_all_reported() {
    let source = BASE.replace(
        "addresses = [\"127.0.0.100\"]",
        "addresses = [\"x\", \"127.0.0.100\", \"y\"]\nport = \"6443\"",
    );
    let errors = errors("t.toml", &source);
    assert_eq!(
        errors.kinds(),
        [K::InvalidAddress, K::InvalidAddress, K::InvalidType]
    );
}

#[test]
fn a_wrong_value_in_one_node_does_not_hide_problems_across_nodes() {
    // cp2's address is wrong, and w1 takes cp1's name: both are found, and cp2 still counts
    // as a control-plane node (no even-count problem).
    let source = BASE
        .replace("\"127.0.0.12\"", "\"127.0.0.1234\"")
        .replace("name = \"w1\"", "name = \"cp1\"");
    let errors = errors("t.toml", &source);
    assert_eq!(errors.kinds(), [K::InvalidAddress, K::DuplicateName]);
}

#[test]
fn a_wrong_role_skips_the_control_plane_count() {
    let source = BASE.replace(
        "name = \"cp3\"\naddress = \"127.0.0.13\"\nrole = \"control-plane\"",
        "name = \"cp3\"\naddress = \"127.0.0.13\"\nrole = \"controlplane\"",
    );
    let errors = errors("t.toml", &source);
    assert_eq!(errors.kinds(), [K::InvalidValue]);
    assert!(
        errors.errors[0]
            .help
            .contains("did you mean \"control-plane\"")
    );
}

#[test]
fn an_even_control_plane_may_be_allowed() {
    let four = format!(
        "{BASE}[[node]]\nname = \"cp4\"\naddress = \"127.0.0.14\"\nrole = \"control-plane\"\n"
    );
    let errors = errors("t.toml", &four);
    assert_eq!(errors.kinds(), [K::EvenControlPlane]);
    assert!(
        errors.errors[0].help.contains("3 of 4"),
        "{}",
        errors.errors[0].help
    );
    let allowed = format!("{four}[policy]\nallow_even_control_plane = true\n");
    let state = parse("t.toml", &allowed).unwrap();
    assert_eq!(state.control_plane_nodes().count(), 4);
}

#[test]
fn two_control_plane_nodes_are_explained_by_etcd_quorum() {
    let errors = fixture("even-control-plane");
    let help = &errors.errors[0].help;
    assert!(
        help.contains("2 of 2") && help.contains("less available"),
        "{help}"
    );
    assert!(
        help.contains("policy.allow_even_control_plane = true"),
        "{help}"
    );
}

#[test]
fn an_ip_endpoint_host_is_sent_to_addresses() {
    let errors = fixture("endpoint-host-is-ip");
    assert!(
        errors.errors[0]
            .help
            .starts_with("put IPs in endpoint.addresses")
    );
}

#[test]
fn a_missing_table_points_at_the_start_of_the_file() {
    let errors = fixture("missing-keys");
    let endpoint = &errors.errors[0];
    assert_eq!(endpoint.message, "the file has no [endpoint] table");
    assert_eq!(endpoint.offset(), 0);
}

#[test]
fn the_summary_counts_the_problems() {
    let errors = fixture("many-problems");
    assert_eq!(
        errors.to_string(),
        format!(
            "tests/fixtures/specs/many-problems.toml: {} problems in the desired state",
            errors.errors.len()
        )
    );
    assert_eq!(errors.count_of(K::UnknownKey), 2);
}
