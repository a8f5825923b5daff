//! Finding and removing entries of toml's spanned parse tree by their spans.
//!
//! Spans are the only thing a serde error carries about where it happened, so they are how an
//! error is tied back to the entry (key and value) it is about.

use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

/// One step of a path from the top of the file to an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// Where an entry sits: its path and its value.
pub(crate) struct Entry<'t, 'i> {
    pub path: Vec<Seg>,
    pub value: &'t Spanned<DeValue<'i>>,
}

impl Entry<'_, '_> {
    /// The name of the key this entry is, or is an item of: `port`, `addresses`.
    pub fn key(&self) -> &str {
        last_key(&self.path)
    }
}

/// The last key of a path (array indices skipped); empty for the top level.
pub(crate) fn last_key(path: &[Seg]) -> &str {
    path.iter()
        .rev()
        .find_map(|s| match s {
            Seg::Key(k) => Some(k.as_str()),
            Seg::Index(_) => None,
        })
        .unwrap_or("")
}

/// A path as users write keys: `node.ssh.port` (array indices are left out: labels show which).
pub(crate) struct Dotted<'a>(pub &'a [Seg]);

impl fmt::Display for Dotted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for seg in self.0 {
            if let Seg::Key(k) = seg {
                if !first {
                    f.write_str(".")?;
                }
                f.write_str(k)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// How a table is written in the file: `[endpoint]`, `[[node]]`, `[node.ssh]`, or the top level.
pub(crate) struct TableName<'a>(pub &'a [Seg]);

impl fmt::Display for TableName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.last() {
            None => f.write_str("the top level"),
            Some(Seg::Index(_)) => write!(f, "[[{}]]", Dotted(self.0)),
            Some(Seg::Key(_)) => write!(f, "[{}]", Dotted(self.0)),
        }
    }
}

/// The innermost entry whose value's span contains `span`: the entry an error is about.
///
/// Every entry is looked at, not only those inside a matching parent, because a `[table]`'s
/// span is its header line, which does not contain the table's keys.
pub(crate) fn innermost<'t, 'i>(
    table: &'t DeTable<'i>,
    span: &Range<usize>,
) -> Option<Entry<'t, 'i>> {
    let mut best: Option<Entry<'t, 'i>> = None;
    let mut path = Vec::new();
    visit_table(table, &mut path, span, &mut best);
    best
}

fn visit_table<'t, 'i>(
    table: &'t DeTable<'i>,
    path: &mut Vec<Seg>,
    span: &Range<usize>,
    best: &mut Option<Entry<'t, 'i>>,
) {
    for (key, value) in table.iter() {
        path.push(Seg::Key(key.get_ref().to_string()));
        visit_value(value, path, span, best);
        path.pop();
    }
}

fn visit_value<'t, 'i>(
    value: &'t Spanned<DeValue<'i>>,
    path: &mut Vec<Seg>,
    span: &Range<usize>,
    best: &mut Option<Entry<'t, 'i>>,
) {
    let here = value.span();
    if here.start <= span.start && span.end <= here.end {
        // Equal spans: the deeper entry wins, as it is visited later (an array of tables has
        // the span of its first table's header).
        let better = best.as_ref().is_none_or(|b| {
            let b = b.value.span();
            here.len() <= b.len()
        });
        if better {
            *best = Some(Entry {
                path: path.clone(),
                value,
            });
        }
    }
    match value.get_ref() {
        DeValue::Table(t) => visit_table(t, path, span, best),
        DeValue::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                visit_value(item, path, span, best);
                path.pop();
            }
        }
        _ => {}
    }
}

/// The value at a path, if the tree has one there.
pub(crate) fn value_at<'t, 'i>(
    table: &'t DeTable<'i>,
    path: &[Seg],
) -> Option<&'t Spanned<DeValue<'i>>> {
    let (first, rest) = path.split_first()?;
    let Seg::Key(key) = first else {
        return None;
    };
    let mut value = table.get(key.as_str())?;
    for seg in rest {
        value = match (seg, value.get_ref()) {
            (Seg::Key(k), DeValue::Table(t)) => t.get(k.as_str())?,
            (Seg::Index(i), DeValue::Array(a)) => a.get(*i)?,
            _ => return None,
        };
    }
    Some(value)
}

/// Removes the innermost entry whose value has exactly this span; false when there is none.
pub(crate) fn remove_with_span(table: &mut DeTable<'_>, span: &Range<usize>) -> bool {
    for (_, value) in table.iter_mut() {
        if remove_in_value(value, span) {
            return true;
        }
    }
    let key = table
        .iter()
        .find(|(_, v)| v.span() == *span)
        .map(|(k, _)| k.get_ref().to_string());
    match key {
        Some(key) => table.remove(key.as_str()).is_some(),
        None => false,
    }
}

fn remove_in_value(value: &mut Spanned<DeValue<'_>>, span: &Range<usize>) -> bool {
    match value.get_mut() {
        DeValue::Table(t) => remove_with_span(t, span),
        DeValue::Array(a) => {
            for item in a.iter_mut() {
                if remove_in_value(item, span) {
                    return true;
                }
            }
            match a.iter().position(|item| item.span() == *span) {
                Some(index) => {
                    let items = std::mem::replace(a, DeArray::new());
                    *a = items
                        .into_iter()
                        .enumerate()
                        .filter(|(i, _)| *i != index)
                        .map(|(_, item)| item)
                        .collect();
                    true
                }
                None => false,
            }
        }
        _ => false,
    }
}

/// How many entries the tree has, items included: a bound on how often entries can be removed.
pub(crate) fn count_entries(table: &DeTable<'_>) -> usize {
    fn in_value(value: &DeValue<'_>) -> usize {
        match value {
            DeValue::Table(t) => count_entries(t),
            DeValue::Array(a) => a.iter().map(|item| 1 + in_value(item.get_ref())).sum(),
            _ => 0,
        }
    }
    table.values().map(|v| 1 + in_value(v.get_ref())).sum()
}

/// The TOML type of a value, as an article and a noun: "a string", "an integer".
pub(crate) fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}
