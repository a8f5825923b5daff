//! The typed pass: serde reads the tree into `DesiredState`, and every wrong value is reported.
//!
//! serde stops at the first error, so the pass repeats: each error is tied to the entry it is
//! about (by span), reported, and that entry removed, until serde succeeds or only required
//! keys are missing (which the key check already reported). serde visits every entry of a
//! table before it complains about a missing key, so nothing after a removed entry is skipped.

use std::ops::Range;

use serde::Deserialize;
use serde::de::IntoDeserializer;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::DesiredState;
use super::error::{Label, Problems, SpecErrorKind};
use super::semantic::port_help;
use super::shape::{Schema, did_you_mean};
use super::tree::{self, Dotted, Entry, Seg};

/// What the typed pass leaves: the value, when the file is right, and the tree with every
/// wrong value taken out, for the checks that look across entries.
pub(crate) struct Typed<'i> {
    pub state: Option<DesiredState>,
    pub clean: DeTable<'i>,
}

pub(crate) fn deserialize<'i>(
    schema: Schema<'_>,
    source: &str,
    root_span: Range<usize>,
    tree: DeTable<'i>,
    problems: &mut Problems,
) -> Typed<'i> {
    let mut clean = tree.clone();
    let mut working = tree;
    // Every round removes an entry, so this bound is never reached; it guards against a loop.
    let rounds = tree::count_entries(&working) + 2;
    for _ in 0..rounds {
        let attempt = DesiredState::deserialize(
            Spanned::new(root_span.clone(), working.clone()).into_deserializer(),
        );
        let error = match attempt {
            Ok(state) => {
                return Typed {
                    state: Some(state),
                    clean,
                };
            }
            Err(error) => error,
        };
        // Missing keys were reported by the key check; here they only mean "skip this table".
        let missing = error.message().starts_with("missing field");
        let entry = error.span().and_then(|s| tree::innermost(&working, &s));
        let Some(entry) = entry else {
            if !missing {
                problems.push(
                    SpecErrorKind::InvalidValue,
                    error.message().to_string(),
                    vec![Label::new(error.span().unwrap_or(0..0), "here")],
                    "see schemas/hactl.schema.json for what this file accepts",
                );
            }
            break;
        };
        let span = entry.value.span();
        if !missing {
            report(schema, source, &entry, error.message(), problems);
            tree::remove_with_span(&mut clean, &span);
            // An array whose every item was wrong is not an empty array: the checks that
            // follow must not report `addresses = ["bad"]` as having no addresses.
            let parent = match entry.path.split_last() {
                Some((Seg::Index(_), parent)) => tree::value_at(&working, parent),
                _ => None,
            };
            if let Some(parent) = parent {
                let parent = parent.span();
                let emptied = tree::innermost(&clean, &parent).is_some_and(|e| {
                    e.value.span() == parent
                        && matches!(e.value.get_ref(), DeValue::Array(a) if a.is_empty())
                });
                if emptied {
                    tree::remove_with_span(&mut clean, &parent);
                }
            }
        }
        if !tree::remove_with_span(&mut working, &span) {
            break;
        }
    }
    Typed { state: None, clean }
}

/// Reports a value serde refused, worded from what the schema says the key accepts.
fn report(
    schema: Schema<'_>,
    source: &str,
    entry: &Entry<'_, '_>,
    serde_message: &str,
    problems: &mut Problems,
) {
    let span = entry.value.span();
    let value = entry.value.get_ref();
    let raw = shorten(source.get(span.clone()).unwrap_or(""));
    let key = entry.key();
    let dotted = Dotted(&entry.path).to_string();
    let is_item = matches!(entry.path.last(), Some(Seg::Index(_)));
    let Some(schema) = schema.at(&entry.path) else {
        problems.push(
            SpecErrorKind::InvalidValue,
            format!("`{dotted}`: {serde_message}"),
            vec![Label::new(span, "invalid value")],
            "see schemas/hactl.schema.json for what this key accepts",
        );
        return;
    };
    let types = schema.types();
    let allowed = schema.allowed_strings();
    let (kind, message, label, help);
    if !types.is_empty() && !types.iter().any(|t| type_matches(value, t)) {
        let expected = types
            .iter()
            .map(|t| expected_name(t))
            .collect::<Vec<_>>()
            .join(" or ");
        let actual = tree::type_name(value);
        kind = SpecErrorKind::InvalidType;
        message = match is_item {
            true => format!("each item of `{dotted}` must be {expected}, not {actual}"),
            false => format!("`{dotted}` must be {expected}, not {actual}"),
        };
        label = format!("expected {expected}");
        help = type_help(schema, key, &dotted, is_item, value, &allowed);
    } else if schema.format() == Some("ip") {
        kind = SpecErrorKind::InvalidAddress;
        message = format!("{raw} is not an IP address");
        label = "not an IPv4 or IPv6 address".to_string();
        help = "write an IPv4 or IPv6 address without a port or prefix length, \
                e.g. \"10.0.0.11\" or \"fd00::11\""
            .to_string();
    } else if matches!(value, DeValue::Integer(_)) && key == "port" {
        kind = SpecErrorKind::PortOutOfRange;
        message = format!("port {raw} is out of range");
        label = "not in 1..=65535".to_string();
        help = port_help(&entry.path).to_string();
    } else if matches!(value, DeValue::Integer(_)) && entry.path == [Seg::Key("version".into())] {
        kind = SpecErrorKind::UnsupportedVersion;
        message = format!("unsupported version {raw}");
        label = "hactl reads version 1".to_string();
        help = "set `version = 1`: the only format version this hactl reads".to_string();
    } else if matches!(value, DeValue::Integer(_)) {
        let min = schema.bound("minimum").unwrap_or(0);
        kind = SpecErrorKind::OutOfRange;
        message = format!("`{dotted}` = {raw} is out of range");
        (label, help) = match schema.bound("maximum") {
            Some(max) => (
                format!("not in {min}..={max}"),
                format!("use a whole number from {min} to {max}"),
            ),
            None => (
                format!("less than {min}"),
                format!("use a whole number of at least {min}"),
            ),
        };
    } else if !allowed.is_empty() {
        let choices = quoted_list(&allowed);
        let word = value.as_str().unwrap_or("");
        kind = SpecErrorKind::InvalidValue;
        message = format!("{raw} is not a valid `{dotted}`");
        label = format!("not one of {choices}");
        help = match did_you_mean(word, &allowed) {
            Some(close) => format!("did you mean \"{close}\"? `{key}` is one of {choices}"),
            None => format!("use one of {choices}"),
        };
    } else {
        kind = SpecErrorKind::InvalidValue;
        message = format!("`{dotted}`: {serde_message}");
        label = "invalid value".to_string();
        help = match schema.summary() {
            Some(what) => format!("`{key}` is: {what}"),
            None => "see schemas/hactl.schema.json for what this key accepts".to_string(),
        };
    }
    problems.push(kind, message, vec![Label::new(span, label)], help);
}

fn type_help(
    schema: Schema<'_>,
    key: &str,
    dotted: &str,
    is_item: bool,
    value: &DeValue<'_>,
    allowed: &[&str],
) -> String {
    let expects_table = schema.types().first() == Some(&"object");
    if schema.is_array_of_tables() || (is_item && expects_table) {
        return format!("write each {key} as its own [[{key}]] table, with double brackets");
    }
    if !allowed.is_empty() {
        return format!("use one of {}", quoted_list(allowed));
    }
    let example = schema
        .example()
        .map(|e| format!(", e.g. `{key} = {e}`"))
        .unwrap_or_default();
    match schema.types().first().copied() {
        Some("string") if matches!(value, DeValue::Integer(_) | DeValue::Float(_)) => {
            format!("put the value in double quotes{example}")
        }
        Some("string") => format!("write a string in double quotes{example}"),
        Some("integer") => format!("write a whole number without quotes{example}"),
        Some("boolean") => "write `true` or `false`, without quotes".to_string(),
        Some("array") => format!("write an array in square brackets{example}"),
        Some("object") => format!("write it as a [{dotted}] table"),
        _ => "see schemas/hactl.schema.json for what this key accepts".to_string(),
    }
}

fn type_matches(value: &DeValue<'_>, json_type: &str) -> bool {
    matches!(
        (value, json_type),
        (DeValue::String(_), "string")
            | (DeValue::Integer(_), "integer" | "number")
            | (DeValue::Float(_), "number")
            | (DeValue::Boolean(_), "boolean")
            | (DeValue::Array(_), "array")
            | (DeValue::Table(_), "object")
    )
}

fn expected_name(json_type: &str) -> &str {
    match json_type {
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "a boolean",
        "array" => "an array",
        "object" => "a table",
        other => other,
    }
}

fn quoted_list(values: &[&str]) -> String {
    values
        .iter()
        .map(|v| format!("\"{v}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The value as written, cut short so that a long one does not flood the message.
fn shorten(raw: &str) -> String {
    const MAX: usize = 60;
    let raw = raw.lines().next().unwrap_or("");
    if raw.chars().count() <= MAX {
        raw.to_string()
    } else {
        let cut: String = raw.chars().take(MAX - 1).collect();
        format!("{cut}…")
    }
}
