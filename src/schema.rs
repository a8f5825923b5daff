//! JSON Schemas of hactl's two file formats, generated from the Rust types so they cannot drift.
//!
//! `schemas/hactl.schema.json` lets editors (taplo, Even Better TOML) validate and complete
//! desired-state files; `schemas/plan.schema.json` documents the JSON plan for other tools.
//! The desired-state schema is generated in `spec` (`spec::schema`), which reads it to know
//! which keys each table accepts.

use serde_json::Value;

use crate::plan::Plan;
pub use crate::spec::schema::DESIRED_STATE_SCHEMA_ID;
use crate::spec::schema::{desired_state_schema_value, generate};

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
