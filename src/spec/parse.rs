//! `parse`: from the file's text to a `DesiredState`, or to every problem the text has.
//!
//! Four passes, each adding to one list of problems: TOML syntax; keys (unknown, missing)
//! against the schema; values, through serde; and the checks across values. A file with
//! syntax errors stops after the first pass: the recovered tree is a guess, and checking a
//! guess would report problems the file does not have.

use toml::de::DeTable;

use super::DesiredState;
use super::error::{Label, Problems, SpecErrorKind, SpecErrors};
use super::semantic::{self, View};
use super::shape::{self, Schema};
use super::typed;

/// Parses and validates a desired-state file. `file_name` is only used in messages.
///
/// Pure: it reads nothing but `source`. On failure the error holds every problem found, each
/// pointing into `source`.
pub fn parse(file_name: &str, source: &str) -> Result<DesiredState, SpecErrors> {
    let mut problems = Problems::new(file_name, source);
    let (root, syntax_errors) = DeTable::parse_recoverable(source);
    if !syntax_errors.is_empty() {
        for error in &syntax_errors {
            report_syntax(error, &mut problems);
        }
        return Err(problems.finish());
    }
    let root_span = root.span();
    let mut tree = root.into_inner();
    let schema = Schema::root(super::schema::desired_state_schema_value());
    shape::check_keys(schema, &mut tree, &mut problems);
    let typed = typed::deserialize(schema, source, root_span.clone(), tree, &mut problems);
    if let Some(view) = View::read(root_span, typed.clean) {
        semantic::check(&view, &mut problems);
    }
    match typed.state {
        Some(state) if problems.is_empty() => Ok(state),
        _ => {
            if problems.is_empty() {
                // Unreachable as far as known: serde failed on something no pass reported.
                problems.push(
                    SpecErrorKind::InvalidValue,
                    "the file could not be read as a desired state",
                    vec![Label::new(0..0, "here")],
                    "compare the file with plans/lab.toml and schemas/hactl.schema.json",
                );
            }
            Err(problems.finish())
        }
    }
}

fn report_syntax(error: &toml::de::Error, problems: &mut Problems) {
    let text = error.message();
    let (message, expected) = match text.split_once(", expected ") {
        Some((message, expected)) => (message, Some(expected)),
        None => (text, None),
    };
    let label = match expected {
        _ if message.starts_with("duplicate key") => "already set above".to_string(),
        Some("nothing") | None => "here".to_string(),
        Some(expected) => format!("expected {expected}"),
    };
    let help = if message.starts_with("duplicate key") {
        "a key may appear once per table: remove or rename this one (each node needs its own \
         [[node]] header)"
    } else if message.starts_with("string values must be quoted") {
        "put the value in double quotes, e.g. name = \"cp1\""
    } else if message.starts_with("unclosed") || message.starts_with("invalid basic string") {
        "close it: strings end with \", arrays with ], inline tables with }, table headers with ]"
    } else {
        "fix the TOML syntax here; the format is described at https://toml.io"
    };
    problems.push(
        SpecErrorKind::Syntax,
        format!("invalid TOML: {message}"),
        vec![Label::new(error.span().unwrap_or(0..0), label)],
        help,
    );
}
