//! The desired-state file's JSON Schema, generated from the spec's own types: parsing reads it
//! to know which keys each table accepts, and `crate::schema` prints it for editors.

use std::sync::LazyLock;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema};
use serde_json::Value;

use super::DesiredState;

/// `$id` of the desired-state schema: a name, not a download location.
pub const DESIRED_STATE_SCHEMA_ID: &str = "urn:hactl:schema:desired-state:1";
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
pub(crate) fn generate<T: JsonSchema>(id: &str, title: &str, description: &str) -> Value {
    let mut schema: Schema = SchemaSettings::draft2020_12()
        .for_deserialize()
        .into_generator()
        .into_root_schema_for::<T>();
    schema.insert("$id".into(), id.into());
    schema.insert("title".into(), title.into());
    schema.insert("description".into(), description.into());
    schema.to_value()
}
