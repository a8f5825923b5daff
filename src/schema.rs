//! JSON Schemas of hactl's two file formats, generated from the Rust types so they cannot drift.
//!
//! `schemas/hactl.schema.json` lets editors (taplo, Even Better TOML) validate and complete
//! desired-state files; `schemas/plan.schema.json` documents the JSON plan for other tools.
//! The desired-state schema is also what `spec` reads to know which keys each table accepts.

use std::sync::LazyLock;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema};
use serde_json::Value;

use crate::plan::Plan;
use crate::spec::DesiredState;

/// `$id` of the desired-state schema: a name, not a download location.
pub const DESIRED_STATE_SCHEMA_ID: &str = "urn:hactl:schema:desired-state:1";
/// `$id` of the plan schema.
pub const PLAN_SCHEMA_ID: &str = "urn:hactl:schema:plan:1";

/// The desired-state schema as pretty JSON with a trailing newline, as checked in.
pub fn desired_state_schema() -> String {
    to_pretty(desired_state_schema_value())
}

/// The plan schema as pretty JSON with a trailing newline, as checked in.
pub fn plan_schema() -> String {
    to_pretty(&generate::<Plan>(
        PLAN_SCHEMA_ID,
        "hactl plan",
        "A plan printed by `hactl plan --format json` and saved by `hactl plan -o PLANFILE`: \
         every resource change in apply order, the handlers they trigger, problems, and the \
         fingerprint of what was observed. It never contains secrets.",
    ))
}

/// The desired-state schema as a JSON value, generated once per process: parsing consults it
/// for every table, so it is not rebuilt per file.
pub(crate) fn desired_state_schema_value() -> &'static Value {
    static SCHEMA: LazyLock<Value> = LazyLock::new(|| {
        generate::<DesiredState>(
            DESIRED_STATE_SCHEMA_ID,
            "hactl desired state",
            "The TOML file `hactl plan` and `hactl apply` read: the cluster, its load balancer, \
             its nodes and how to reach them, and the policy for changing them. Start a file \
             with `#:schema ../schemas/hactl.schema.json` so editors validate it.",
        )
    });
    &SCHEMA
}

/// Generates `T`'s schema describing what deserialization accepts, with an `$id`, title and
/// description of its own in place of the type's doc comment.
fn generate<T: JsonSchema>(id: &str, title: &str, description: &str) -> Value {
    let mut schema: Schema = SchemaSettings::draft2020_12()
        .for_deserialize()
        .into_generator()
        .into_root_schema_for::<T>();
    schema.insert("$id".into(), id.into());
    schema.insert("title".into(), title.into());
    schema.insert("description".into(), description.into());
    schema.to_value()
}

fn to_pretty(value: &Value) -> String {
    // Serialising a `serde_json::Value` cannot fail: its keys are strings.
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_are_pretty_json_with_a_trailing_newline() {
        for text in [desired_state_schema(), plan_schema()] {
            assert!(text.ends_with("}\n"));
            let value: Value = serde_json::from_str(&text).unwrap();
            assert!(value["$id"].is_string());
            assert!(value["title"].is_string());
            assert!(value["description"].is_string());
        }
    }

    #[test]
    fn unknown_keys_are_refused_by_the_schema_too() {
        let schema = desired_state_schema_value();
        assert_eq!(schema["additionalProperties"], Value::Bool(false));
        for def in [
            "Cluster",
            "Endpoint",
            "Ssh",
            "SshOverride",
            "Node",
            "Policy",
        ] {
            assert_eq!(
                schema["$defs"][def]["additionalProperties"],
                Value::Bool(false),
                "{def}"
            );
        }
    }
}
