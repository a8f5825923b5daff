//! The checked-in JSON Schemas are exactly what the types generate: editors and other tools
//! read the files, so a type change must come with regenerated files.

use std::path::Path;

fn check(file: &str, generated: &str, command: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    if checked_in != generated {
        let diff = similar::TextDiff::from_lines(&checked_in, generated)
            .unified_diff()
            .header(file, "generated")
            .to_string();
        panic!(
            "{file} differs from the schema the types generate; regenerate it with\n\n    \
             {command}\n\n{diff}"
        );
    }
}

#[test]
fn desired_state_schema_is_up_to_date() {
    check(
        "schemas/hactl.schema.json",
        &hactl::schema::desired_state_schema(),
        "cargo run -- schema > schemas/hactl.schema.json",
    );
}

#[test]
fn plan_schema_is_up_to_date() {
    check(
        "schemas/plan.schema.json",
        &hactl::schema::plan_schema(),
        "cargo run -- schema --plan > schemas/plan.schema.json",
    );
}
