//! What the text and markdown renderers both show: which resources get a section, their verbs,
//! symbols and legend, and the before→after diffs of their values (computed once, with `similar`).

use std::borrow::Cow;

use similar::{ChangeTag, TextDiff};

use crate::plan::{Action, Handler, Plan, ResourceChange, ResourceValue};

/// Lines of unchanged context around each change, as `diff -u` does.
const CONTEXT_RADIUS: usize = 3;
/// Unchanged lines longer than this are elided: kubeconfig `certificate-authority-data`
/// lines are ~1,500 characters of base64 nobody reviews.
const LONG_LINE: usize = 120;
/// How much of an elided line is kept, enough to recognise it.
const KEPT_PREFIX: usize = 60;

/// How one value (a field, a diffed text) differs between before and after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mark {
    Same,
    Added,
    Removed,
    Changed,
}

impl Mark {
    /// Terraform's attribute markers; a space for an unchanged one.
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Mark::Same => " ",
            Mark::Added => "+",
            Mark::Removed => "-",
            Mark::Changed => "~",
        }
    }

    fn of<T: PartialEq + ?Sized>(before: Option<&T>, after: Option<&T>) -> Mark {
        match (before, after) {
            (Some(b), Some(a)) if b == a => Mark::Same,
            (Some(_), Some(_)) => Mark::Changed,
            (None, _) => Mark::Added,
            (Some(_), None) => Mark::Removed,
        }
    }
}

/// A one-line attribute (`key type`, `etcd member`, …); `None` on a side where it is absent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Field {
    pub(crate) name: &'static str,
    pub(crate) before: Option<String>,
    pub(crate) after: Option<String>,
}

impl Field {
    pub(crate) fn mark(&self) -> Mark {
        Mark::of(self.before.as_ref(), self.after.as_ref())
    }
}

/// One line of a unified diff, without its trailing newline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DiffLine {
    /// `@@ -a,b +c,d @@`.
    Hunk(String),
    /// Unchanged, already elided when long.
    Context(String),
    Insert(String),
    Delete(String),
    /// Shown only when the two sides differ in their final newline.
    NoNewline,
}

impl DiffLine {
    /// The line as `diff -u` writes it: tag in the first column.
    pub(crate) fn unified(&self) -> String {
        match self {
            DiffLine::Hunk(h) => h.clone(),
            DiffLine::Context(l) => format!(" {l}"),
            DiffLine::Insert(l) => format!("+{l}"),
            DiffLine::Delete(l) => format!("-{l}"),
            DiffLine::NoNewline => "\\ No newline at end of file".to_string(),
        }
    }
}

/// A multi-line text (a file, a ConfigMap key, the SAN list) diffed before→after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DiffBlock {
    pub(crate) title: String,
    pub(crate) mark: Mark,
    pub(crate) lines: Vec<DiffLine>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Block {
    Fields(Vec<Field>),
    Diff(DiffBlock),
}

/// One resource that gets a section in the rendered plan.
pub(crate) struct Section<'p> {
    pub(crate) address: &'p str,
    pub(crate) actions: &'p [Action],
    pub(crate) verb: &'static str,
    pub(crate) reason: &'p str,
    pub(crate) blocks: Vec<Block>,
    /// The descriptions of the handlers this change triggers, in the change's order.
    pub(crate) handlers: Vec<String>,
}

/// Every resource whose action is not `no-op`, in plan order.
pub(crate) fn sections(plan: &Plan) -> Vec<Section<'_>> {
    plan.resource_changes
        .iter()
        .filter(|c| is_shown(c))
        .map(|c| Section {
            address: &c.address,
            actions: &c.actions,
            verb: verb(c),
            reason: &c.reason,
            blocks: blocks(c),
            handlers: c
                .handlers
                .iter()
                .map(|id| match plan.handler(id) {
                    Some(h) => h.description.clone(),
                    // A dangling id is a planner bug; show it rather than hide it.
                    None => format!("{id} (not in the plan's handler list)"),
                })
                .collect(),
        })
        .collect()
}

fn is_shown(change: &ResourceChange) -> bool {
    change.actions.iter().any(|a| *a != Action::NoOp)
}

fn is_replace(actions: &[Action]) -> bool {
    actions.contains(&Action::Delete) && actions.contains(&Action::Create)
}

/// `will be <verb>`, in the words of `terraform plan`, with hactl's own for joins and checks.
fn verb(change: &ResourceChange) -> &'static str {
    let has = |a| change.actions.contains(&a);
    if is_replace(&change.actions) {
        "replaced"
    } else if has(Action::Unknown) {
        "left undecided"
    } else if has(Action::Delete) {
        "destroyed"
    } else if has(Action::Create) {
        if change.address.starts_with("control_plane.") {
            "joined"
        } else {
            "created"
        }
    } else if has(Action::Update) {
        "updated in place"
    } else if has(Action::Read) {
        if change.address == "endpoint" {
            "checked"
        } else {
            "read"
        }
    } else {
        "left unchanged"
    }
}

/// `-/+` for a replace, otherwise the action's own symbol.
pub(crate) fn symbol(actions: &[Action]) -> String {
    actions
        .iter()
        .map(|a| a.symbol())
        .collect::<Vec<_>>()
        .join("/")
}

/// The legend entries for the symbols the plan's sections use, in a fixed order.
pub(crate) fn legend(sections: &[Section<'_>]) -> Vec<(String, &'static str)> {
    let entries: [(&[Action], &str); 6] = [
        (&[Action::Create], "create"),
        (&[Action::Update], "update in place"),
        (&[Action::Delete], "destroy"),
        (
            &[Action::Delete, Action::Create],
            "destroy and then create replacement",
        ),
        (&[Action::Read], "read (a check that changes nothing)"),
        (&[Action::Unknown], "left undecided (could not be observed)"),
    ];
    let used = |key: &[Action]| {
        sections.iter().any(|s| {
            if is_replace(key) {
                is_replace(s.actions)
            } else {
                !is_replace(s.actions) && s.actions.contains(&key[0])
            }
        })
    };
    entries
        .iter()
        .filter(|(key, _)| used(key))
        .map(|(key, meaning)| (symbol(key), *meaning))
        .collect()
}

/// True when the plan neither changes nor leaves anything undecided.
pub(crate) fn nothing_changes(plan: &Plan) -> bool {
    let s = plan.summary;
    !plan.has_changes()
        && s.add == 0
        && s.change == 0
        && s.destroy == 0
        && s.unknown == 0
        && !plan
            .resource_changes
            .iter()
            .any(|c| c.actions.contains(&Action::Unknown))
}

/// `N to add, N to change, N to destroy.`
pub(crate) fn counts(plan: &Plan) -> String {
    let s = plan.summary;
    format!(
        "{} to add, {} to change, {} to destroy.",
        s.add, s.change, s.destroy
    )
}

/// The resources that trigger `h` without changing: a restart left undone, whose reason
/// (on a no-op resource the plan does not otherwise show) says why it runs.
pub(crate) fn unchanged_triggers<'a>(plan: &'a Plan, h: &Handler) -> Vec<&'a ResourceChange> {
    plan.resource_changes
        .iter()
        .filter(|c| h.triggered_by.contains(&c.address) && c.actions == [Action::NoOp])
        .collect()
}

/// When no resource changes but handlers run (restarts left undone after changes by hand):
/// the counts line alone would read as nothing to do.
pub(crate) fn restarts_only(plan: &Plan) -> Option<String> {
    let changes = plan.resource_changes.iter().any(|c| c.is_change());
    match plan.handlers.len() {
        0 => None,
        _ if changes => None,
        1 => Some(
            "1 handler left to run: a component still runs with what it read before a change."
                .to_string(),
        ),
        n => Some(format!(
            "{n} handlers left to run: components still run with what they read before a change."
        )),
    }
}

/// The undecided count, which the terraform-shaped counts line has no room for.
pub(crate) fn undecided(plan: &Plan) -> Option<String> {
    match plan.summary.unknown {
        0 => None,
        1 => Some("1 resource left undecided.".to_string()),
        n => Some(format!("{n} resources left undecided.")),
    }
}

/// Addresses of the control-plane joins, for reviewers' warnings.
pub(crate) fn joins(plan: &Plan) -> Vec<&str> {
    plan.resource_changes
        .iter()
        .filter(|c| c.address.starts_with("control_plane.") && c.actions.contains(&Action::Create))
        .map(|c| c.address.as_str())
        .collect()
}

/// Addresses of everything destroyed (replacements included).
pub(crate) fn destroys(plan: &Plan) -> Vec<&str> {
    plan.resource_changes
        .iter()
        .filter(|c| c.actions.contains(&Action::Delete))
        .map(|c| c.address.as_str())
        .collect()
}

/// Escapes control characters other than tab and newline: plan text holds data read from
/// nodes, and an escape byte in it would drive the reviewer's terminal.
pub(crate) fn clean(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| {
                if is_unsafe(c) {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

fn is_unsafe(c: char) -> bool {
    c.is_control() && c != '\t' && c != '\n'
}

/// Shortens an unchanged line longer than [`LONG_LINE`] characters to its first
/// [`KEPT_PREFIX`] and a count of the rest.
pub(crate) fn elide(line: &str) -> String {
    let total = line.chars().count();
    if total <= LONG_LINE {
        return line.to_string();
    }
    let prefix: String = line.chars().take(KEPT_PREFIX).collect();
    format!("{prefix}… ({} more characters)", total - KEPT_PREFIX)
}

/// One comparable piece of a resource value.
enum Item {
    Field(&'static str, String),
    Text(String, String),
}

impl Item {
    fn same_key(&self, other: &Item) -> bool {
        match (self, other) {
            (Item::Field(a, _), Item::Field(b, _)) => a == b,
            (Item::Text(a, _), Item::Text(b, _)) => a == b,
            _ => false,
        }
    }
}

/// What reviewers compare for each kind of value.
fn items(value: &ResourceValue) -> Vec<Item> {
    match value {
        ResourceValue::Endpoint {
            host,
            port,
            addresses,
        } => vec![
            Item::Field("host", host.clone()),
            Item::Field("port", port.to_string()),
            Item::Field(
                "addresses",
                if addresses.is_empty() {
                    "(none)".to_string()
                } else {
                    addresses.join(", ")
                },
            ),
        ],
        ResourceValue::Certificate {
            sans,
            key_type,
            not_after,
            ..
        } => vec![
            Item::Text(
                "subject alternative names".to_string(),
                sans.iter().map(|s| format!("{s}\n")).collect(),
            ),
            Item::Field("key type", key_type_name(key_type)),
            Item::Field(
                "not after",
                not_after
                    .clone()
                    .unwrap_or_else(|| "(known after apply)".to_string()),
            ),
        ],
        ResourceValue::File { path, content, .. } => {
            vec![Item::Text(path.clone(), content.clone())]
        }
        ResourceValue::ConfigMap { data, .. } => data
            .iter()
            .map(|(key, text)| Item::Text(format!("data.{key}"), text.clone()))
            .collect(),
        ResourceValue::ControlPlane {
            etcd_member,
            node_ready,
            control_plane_role,
            join_command,
        } => {
            let mut items = vec![
                Item::Field(
                    "etcd member",
                    etcd_member
                        .clone()
                        .unwrap_or_else(|| "not a member".to_string()),
                ),
                Item::Field(
                    "Node Ready",
                    match node_ready {
                        Some(true) => "yes",
                        Some(false) => "no",
                        None => "no Node object",
                    }
                    .to_string(),
                ),
                Item::Field(
                    "control-plane role",
                    if *control_plane_role { "yes" } else { "no" }.to_string(),
                ),
            ];
            if let Some(command) = join_command {
                items.push(Item::Field("join command", command.clone()));
            }
            items
        }
    }
}

/// The serialised name (`RSA-2048`), so the plan file and the rendering agree.
fn key_type_name(key_type: &crate::observed::KeyType) -> String {
    match serde_json::to_value(key_type) {
        Ok(serde_json::Value::String(name)) => name,
        _ => format!("{key_type:?}"),
    }
}

/// Pairs the before and after items by name and turns them into fields and diffs.
fn blocks(change: &ResourceChange) -> Vec<Block> {
    let after = change.after.as_ref();
    // A check observed nothing "before" worth contrasting: show what it checks, unmarked.
    let before = match change.before.as_ref() {
        None if change.actions == [Action::Read] => after,
        b => b,
    };
    let before_items = before.map(items).unwrap_or_default();
    let after_items = after.map(items).unwrap_or_default();

    let mut pairs: Vec<(Option<&Item>, Option<&Item>)> = after_items
        .iter()
        .map(|a| (before_items.iter().find(|b| b.same_key(a)), Some(a)))
        .collect();
    pairs.extend(
        before_items
            .iter()
            .filter(|b| !after_items.iter().any(|a| a.same_key(b)))
            .map(|b| (Some(b), None)),
    );

    let mut blocks: Vec<Block> = Vec::new();
    for (b, a) in pairs {
        let Some(item) = a.or(b) else { continue };
        match item {
            Item::Field(name, _) => {
                let value = |i: Option<&Item>| match i {
                    Some(Item::Field(_, v)) => Some(clean(v).into_owned()),
                    _ => None,
                };
                let mut field = Field {
                    name,
                    before: value(b),
                    after: value(a),
                };
                if field.mark() == Mark::Same {
                    field.before = field.before.as_deref().map(elide);
                    field.after = field.after.as_deref().map(elide);
                }
                match blocks.last_mut() {
                    Some(Block::Fields(fields)) => fields.push(field),
                    _ => blocks.push(Block::Fields(vec![field])),
                }
            }
            Item::Text(title, _) => {
                let (old, new) = (text_of(b), text_of(a));
                let mark = Mark::of(old, new);
                // Unchanged texts (a ConfigMap key nobody touches) are skipped.
                if mark == Mark::Same {
                    continue;
                }
                blocks.push(Block::Diff(DiffBlock {
                    title: clean(title).into_owned(),
                    mark,
                    lines: diff_lines(old.unwrap_or(""), new.unwrap_or("")),
                }));
            }
        }
    }
    blocks
}

fn text_of(item: Option<&Item>) -> Option<&str> {
    match item {
        Some(Item::Text(_, text)) => Some(text),
        _ => None,
    }
}

/// A unified diff with [`CONTEXT_RADIUS`] lines of context, as structured lines.
fn diff_lines(old: &str, new: &str) -> Vec<DiffLine> {
    let diff = TextDiff::from_lines(old, new);
    // When both sides lack the final newline the marker is noise; it matters only when
    // the newline itself is what changed.
    let hint = !old.is_empty() && !new.is_empty() && old.ends_with('\n') != new.ends_with('\n');
    let mut lines = Vec::new();
    for hunk in diff
        .unified_diff()
        .context_radius(CONTEXT_RADIUS)
        .iter_hunks()
    {
        lines.push(DiffLine::Hunk(hunk.header().to_string()));
        for change in hunk.iter_changes() {
            let raw = change.value();
            let line = raw.strip_suffix('\n').unwrap_or(raw);
            let line = line.strip_suffix('\r').unwrap_or(line);
            let line = clean(line);
            lines.push(match change.tag() {
                ChangeTag::Equal => DiffLine::Context(elide(&line)),
                ChangeTag::Insert => DiffLine::Insert(line.into_owned()),
                ChangeTag::Delete => DiffLine::Delete(line.into_owned()),
            });
            if hint && change.missing_newline() {
                lines.push(DiffLine::NoNewline);
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_unchanged_lines_are_elided_to_sixty_characters() {
        let line = "x".repeat(1500);
        assert_eq!(
            elide(&line),
            format!("{}… (1440 more characters)", "x".repeat(60))
        );
        assert_eq!(elide(&"y".repeat(120)), "y".repeat(120));
    }

    #[test]
    fn changed_lines_stay_whole_and_context_is_elided() {
        let long = "a".repeat(200);
        let old = format!("{long}\nserver: old\n");
        let new = format!("{long}\nserver: new\n");
        let lines = diff_lines(&old, &new);
        assert_eq!(
            lines,
            vec![
                DiffLine::Hunk("@@ -1,2 +1,2 @@".to_string()),
                DiffLine::Context(elide(&long)),
                DiffLine::Delete("server: old".to_string()),
                DiffLine::Insert("server: new".to_string()),
            ]
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(clean("a\u{1b}[31mb\tc"), "a\\u{1b}[31mb\tc");
        assert!(matches!(clean("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn newline_marker_only_when_the_final_newline_changes() {
        assert!(!diff_lines("a\nb", "a\nc").contains(&DiffLine::NoNewline));
        assert!(diff_lines("a\nb\n", "a\nb").contains(&DiffLine::NoNewline));
    }
}
