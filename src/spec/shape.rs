//! Which keys each table accepts and needs, read from the generated JSON Schema.
//!
//! The schema is generated from the types, so the set of keys here cannot drift from what
//! serde accepts. serde itself stops at the first unknown key; this walk finds all of them,
//! and every missing required key, and takes unknown keys out of the tree so that the typed
//! pass that follows reports only wrong values.

use serde_json::{Map, Value};
use toml::de::{DeTable, DeValue};

use super::error::{Label, Problems, SpecErrorKind};
use super::tree::{Dotted, Seg, TableName};

/// A view of one schema inside the whole document, which `$ref`s are resolved against.
#[derive(Clone, Copy)]
pub(crate) struct Schema<'s> {
    root: &'s Value,
    node: &'s Value,
}

impl<'s> Schema<'s> {
    pub fn root(root: &'s Value) -> Schema<'s> {
        Schema { root, node: root }
    }

    fn with(self, node: &'s Value) -> Schema<'s> {
        Schema {
            root: self.root,
            node,
        }
    }

    /// Follows `$ref`s (bounded, in case of a cycle) to the schema they name.
    fn resolved(self) -> Schema<'s> {
        let mut node = self.node;
        for _ in 0..16 {
            let Some(pointer) = node.get("$ref").and_then(Value::as_str) else {
                break;
            };
            match pointer.strip_prefix('#').and_then(|p| self.root.pointer(p)) {
                Some(target) => node = target,
                None => break,
            }
        }
        self.with(node)
    }

    /// The schema and the alternatives of its `anyOf`/`oneOf` (an `Option<T>` is `T` or null),
    /// resolved.
    fn alternatives(self) -> Vec<Schema<'s>> {
        let mut out = Vec::new();
        self.collect_alternatives(&mut out, 0);
        out
    }

    fn collect_alternatives(self, out: &mut Vec<Schema<'s>>, depth: usize) {
        // The referring schema comes first: its description and examples, written beside the
        // `$ref`, are about this key and say more than the referred type's.
        if self.node.get("$ref").is_some() {
            out.push(self);
        }
        let this = self.resolved();
        out.push(this);
        if depth > 8 {
            return;
        }
        for key in ["anyOf", "oneOf", "allOf"] {
            if let Some(list) = this.node.get(key).and_then(Value::as_array) {
                for alt in list {
                    this.with(alt).collect_alternatives(out, depth + 1);
                }
            }
        }
    }

    /// The table schema (the one with `properties`), if this schema accepts a table.
    fn object(self) -> Option<Schema<'s>> {
        self.alternatives()
            .into_iter()
            .find(|s| s.node.get("properties").is_some())
    }

    fn properties(self) -> Option<&'s Map<String, Value>> {
        self.object()?.node.get("properties")?.as_object()
    }

    /// The schema of the key `key`, if this schema is a table that has it.
    pub fn property(self, key: &str) -> Option<Schema<'s>> {
        Some(self.with(self.properties()?.get(key)?))
    }

    /// The schema of an array's items, if this schema accepts an array.
    pub fn items(self) -> Option<Schema<'s>> {
        self.alternatives()
            .into_iter()
            .find_map(|s| s.node.get("items").map(|items| s.with(items)))
    }

    /// The schema at a path from this one.
    pub fn at(self, path: &[Seg]) -> Option<Schema<'s>> {
        path.iter().try_fold(self, |schema, seg| match seg {
            Seg::Key(k) => schema.property(k),
            Seg::Index(_) => schema.items(),
        })
    }

    /// The JSON types this schema accepts, null left out (TOML has none).
    pub fn types(self) -> Vec<&'s str> {
        let mut types = Vec::new();
        for alt in self.alternatives() {
            match alt.node.get("type") {
                Some(Value::String(t)) => types.push(t.as_str()),
                Some(Value::Array(list)) => types.extend(list.iter().filter_map(Value::as_str)),
                _ => {}
            }
        }
        types.retain(|t| *t != "null");
        types.dedup();
        types
    }

    /// The string values an enum accepts (`enum`, or `const`s of `oneOf` alternatives).
    pub fn allowed_strings(self) -> Vec<&'s str> {
        let mut values = Vec::new();
        for alt in self.alternatives() {
            if let Some(list) = alt.node.get("enum").and_then(Value::as_array) {
                values.extend(list.iter().filter_map(Value::as_str));
            }
            if let Some(value) = alt.node.get("const").and_then(Value::as_str) {
                values.push(value);
            }
        }
        values
    }

    /// `format` of the schema or its alternatives: `ip`, `uint16`, …
    pub fn format(self) -> Option<&'s str> {
        self.alternatives()
            .into_iter()
            .find_map(|s| s.node.get("format").and_then(Value::as_str))
    }

    /// A numeric bound (`minimum`, `maximum`) of the schema or its alternatives.
    pub fn bound(self, which: &str) -> Option<i128> {
        self.alternatives().into_iter().find_map(|s| {
            let v = s.node.get(which)?;
            v.as_i64()
                .map(i128::from)
                .or_else(|| v.as_u64().map(i128::from))
        })
    }

    /// The first example (or else the default) as a TOML value: `"cp1"`, `6443`, `["10.0.0.100"]`.
    pub fn example(self) -> Option<String> {
        let value = self.alternatives().into_iter().find_map(|s| {
            s.node
                .get("examples")
                .and_then(|e| e.as_array()?.first())
                .or_else(|| s.node.get("default"))
        })?;
        let toml_value = toml::Value::try_from(value).ok()?;
        match toml_value {
            toml::Value::Table(_) => None,
            v => Some(v.to_string()),
        }
    }

    /// The first sentence of the description, on one line.
    pub fn summary(self) -> Option<String> {
        let text = self
            .alternatives()
            .into_iter()
            .find_map(|s| s.node.get("description").and_then(Value::as_str))?;
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let sentence = match text.find(". ") {
            Some(end) => &text[..end],
            None => text.trim_end_matches('.'),
        };
        Some(sentence.to_string())
    }

    /// The keys a table accepts, in the schema's (alphabetical) order.
    pub fn keys(self) -> Vec<&'s str> {
        self.properties()
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    fn required(self) -> Vec<&'s str> {
        self.object()
            .and_then(|o| o.node.get("required")?.as_array())
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// False when the table refuses keys it does not list (`deny_unknown_fields`).
    fn allows_other_keys(self) -> bool {
        self.object()
            .and_then(|o| o.node.get("additionalProperties"))
            .is_none_or(|a| *a != Value::Bool(false))
    }

    /// True when this is an array whose items are tables (written `[[name]]`).
    pub fn is_array_of_tables(self) -> bool {
        self.items().is_some_and(|i| i.object().is_some())
    }
}

/// Reports every unknown key and every missing required key, and removes the unknown keys.
pub(crate) fn check_keys(schema: Schema<'_>, root: &mut DeTable<'_>, problems: &mut Problems) {
    let mut path = Vec::new();
    check_table(schema, root, 0..0, &mut path, problems);
}

fn check_table(
    schema: Schema<'_>,
    table: &mut DeTable<'_>,
    span: std::ops::Range<usize>,
    path: &mut Vec<Seg>,
    problems: &mut Problems,
) {
    if schema.object().is_none() {
        return;
    }
    let known = schema.keys();
    if !schema.allows_other_keys() {
        let unknown: Vec<_> = table
            .keys()
            .filter(|k| !known.contains(&k.get_ref().as_ref()))
            .cloned()
            .collect();
        for key in unknown {
            report_unknown(&known, &key, path, problems);
            table.remove(key.get_ref().as_ref());
        }
    }
    for required in schema.required() {
        if !table.contains_key(required) {
            report_missing(schema, required, &span, path, problems);
        }
    }
    for (key, value) in table.iter_mut() {
        let Some(child) = schema.property(key.get_ref()) else {
            continue;
        };
        path.push(Seg::Key(key.get_ref().to_string()));
        let span = value.span();
        match value.get_mut() {
            DeValue::Table(t) => check_table(child, t, span, path, problems),
            DeValue::Array(items) => {
                if let Some(item_schema) = child.items() {
                    for (i, item) in items.iter_mut().enumerate() {
                        let span = item.span();
                        if let DeValue::Table(t) = item.get_mut() {
                            path.push(Seg::Index(i));
                            check_table(item_schema, t, span, path, problems);
                            path.pop();
                        }
                    }
                }
            }
            _ => {}
        }
        path.pop();
    }
}

fn report_unknown(
    known: &[&str],
    key: &toml::Spanned<toml::de::DeString<'_>>,
    path: &[Seg],
    problems: &mut Problems,
) {
    let name = key.get_ref();
    let table = TableName(path);
    let accepted = known
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let help = match did_you_mean(name, known) {
        Some(close) => format!("did you mean `{close}`? {table} accepts {accepted}"),
        None => format!("remove it; {table} accepts {accepted}"),
    };
    problems.push(
        SpecErrorKind::UnknownKey,
        match path.is_empty() {
            true => format!("unknown top-level key `{name}`"),
            false => format!("unknown key `{name}` in {table}"),
        },
        vec![Label::new(key.span(), "unknown key")],
        help,
    );
}

fn report_missing(
    schema: Schema<'_>,
    key: &str,
    span: &std::ops::Range<usize>,
    path: &[Seg],
    problems: &mut Problems,
) {
    let child = schema.property(key);
    let what = child.and_then(Schema::summary);
    let table = match path.is_empty() {
        true => "the file".to_string(),
        false => TableName(path).to_string(),
    };
    let (message, label, help) = match child {
        Some(c) if c.object().is_some() => {
            let needs = c
                .required()
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(" and ");
            let mut name = path.to_vec();
            name.push(Seg::Key(key.to_string()));
            (
                format!("{table} has no [{}] table", Dotted(&name)),
                format!("[{key}] is missing"),
                format!("add [{key}] with {needs}"),
            )
        }
        Some(c) if c.is_array_of_tables() => {
            let needs = c
                .items()
                .map(Schema::required)
                .unwrap_or_default()
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            (
                format!("{table} has no [[{key}]] tables"),
                format!("[[{key}]] is missing"),
                format!("add a [[{key}]] table for each {key}, with {needs}"),
            )
        }
        _ => {
            let example = child
                .and_then(Schema::example)
                .map(|e| format!("`{key} = {e}`"))
                .unwrap_or_else(|| format!("`{key}`"));
            (
                format!("{table} has no `{key}`"),
                format!("`{key}` is missing"),
                format!("add {example}"),
            )
        }
    };
    let help = match what {
        Some(what) => format!("{help} ({})", lower_first(&what)),
        None => help,
    };
    problems.push(
        SpecErrorKind::MissingKey,
        message,
        vec![Label::new(span.clone(), label)],
        help,
    );
}

/// The candidate closest to `word`, when one is close enough to be a likely typo.
pub(crate) fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(word, c), *c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Lowers the first word for use inside a sentence, unless it is an acronym ("LB", "DNS").
fn lower_first(text: &str) -> String {
    let first_word = text.split(' ').next().unwrap_or("");
    if first_word.chars().skip(1).any(char::is_uppercase) {
        return text.to_string();
    }
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}
