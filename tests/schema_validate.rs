//! The desired-state schema accepts the example files and refuses what parsing refuses, so
//! that editors validating with it agree with hactl.

use std::path::Path;

fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
}

fn validator() -> jsonschema::Validator {
    let schema: serde_json::Value =
        serde_json::from_str(&read("schemas/hactl.schema.json")).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

/// The TOML file as the JSON value an editor's schema validation sees.
fn as_json(name: &str) -> serde_json::Value {
    let table: toml::Table = toml::from_str(&read(name)).unwrap();
    serde_json::to_value(table).unwrap()
}

fn schema_errors(name: &str) -> Vec<String> {
    validator()
        .iter_errors(&as_json(name))
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn the_examples_are_valid() {
    for name in ["plans/lab.toml", "plans/production.toml"] {
        assert_eq!(schema_errors(name), Vec::<String>::new(), "{name}");
    }
}

#[test]
fn unknown_keys_are_invalid_in_every_table() {
    let errors = schema_errors("tests/fixtures/specs/unknown-keys.toml");
    for key in [
        "verbose",
        "kubernetes_version",
        "adresses",
        "identity",
        "labels",
        "usr",
        "parallelism",
    ] {
        assert!(
            errors.iter().any(|e| e.contains(key)),
            "{key} not refused: {errors:#?}"
        );
    }
}

#[test]
fn wrong_types_enums_and_ranges_are_invalid() {
    for stem in [
        "type-errors",
        "bad-enums",
        "missing-keys",
        "node-not-an-array",
        "port-zero",
        "port-out-of-range",
        "zero-parallelism",
        "empty-endpoint-addresses",
        "unsupported-version",
    ] {
        let name = format!("tests/fixtures/specs/{stem}.toml");
        assert!(!schema_errors(&name).is_empty(), "{name} is valid");
    }
}
