//! The plan for pull-request comments: a summary outside any fold, one collapsed `<details>`
//! per changed resource with GitHub-coloured ```diff blocks, split into parts that each fit in
//! one comment and are valid markdown on their own.

use super::diff::{self, Block, DiffBlock, Field, Mark, Section, clean};
use crate::plan::{Plan, Severity};

/// Every part stays under this many characters (GitHub refuses comments over 65,536).
pub const PART_LIMIT: usize = 65_000;

/// A line longer than this cannot be shown whole in any part; it is cut with a note.
const MAX_LINE: usize = 50_000;

const DETAILS_CLOSE: &str = "</details>\n\n";

pub(super) fn render(plan: &Plan) -> Vec<String> {
    // Sizes are counted in bytes, which is never less than characters: a part under the
    // byte budget is under GitHub's character limit too.
    let reserve = part_header(plan, 99_999, 99_999).len();
    let mut packer = Packer::new(PART_LIMIT.saturating_sub(reserve + 1));

    packer.push_unit(&summary(plan));

    for (i, problem) in plan.problems.iter().enumerate() {
        let mut unit = String::new();
        if i == 0 {
            unit.push_str("#### Problems\n\n");
        }
        let label = match problem.severity {
            Severity::Error => "❌ **Error**",
            Severity::Warning => "⚠️ **Warning**",
        };
        unit.push_str(&format!(
            "- {label} on {}: {}<br>\n  help: {}\n",
            code(&problem.subject),
            html(&problem.message),
            html(&problem.help)
        ));
        if i + 1 == plan.problems.len() {
            unit.push('\n');
        }
        packer.push_unit(&unit);
    }

    for section in diff::sections(plan) {
        packer.push_resource(&section);
    }

    for (i, h) in plan.handlers.iter().enumerate() {
        let mut unit = String::new();
        if i == 0 {
            unit.push_str("#### Handlers, in order\n\n");
        }
        unit.push_str(&format!(
            "{}. {}, runs after {}<br>\n",
            i + 1,
            html(&h.description),
            code(&h.runs_after),
        ));
        for c in diff::unchanged_triggers(plan, h) {
            unit.push_str(&format!(
                "   because {}: {}<br>\n",
                code(&c.address),
                html(&c.reason)
            ));
        }
        unit.push_str(&format!("   verify: {}\n", html(&h.verify)));
        packer.push_unit(&unit);
    }

    let bodies = packer.finish();
    let n = bodies.len();
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            let mut part = part_header(plan, i + 1, n);
            part.push_str(body.trim_end());
            part.push('\n');
            part
        })
        .collect()
}

/// The comment that orders the parts, and on later parts a heading saying what they continue.
fn part_header(plan: &Plan, i: usize, n: usize) -> String {
    let mut header = format!("<!-- hactl plan: part {i} of {n} -->\n");
    if i > 1 {
        header.push_str(&format!(
            "### hactl plan for {} (continued, part {i} of {n})\n\n",
            code(&plan.cluster)
        ));
    }
    header
}

/// Warnings for reviewers, the heading, the facts and the counts: what must be seen unfolded.
fn summary(plan: &Plan) -> String {
    let mut s = String::new();
    if plan.is_dangerous() {
        let joins = diff::joins(plan);
        if !joins.is_empty() {
            s.push_str(&format!(
                "### ⚠️ This plan joins control-plane nodes: {}\n\n\
                 Each join changes etcd membership. Going from one voting member to two is the \
                 riskiest step: until the new member has started, etcd needs both for quorum.\n\n",
                code_list(&joins)
            ));
        }
        let destroys = diff::destroys(plan);
        if !destroys.is_empty() {
            s.push_str(&format!(
                "### ⚠️ This plan destroys {}\n\n",
                code_list(&destroys)
            ));
        }
    }
    s.push_str(&format!("## hactl plan for {}\n\n", code(&plan.cluster)));
    s.push_str(&format!(
        "Endpoint {} · Kubernetes {} · runtime {}\n\n",
        code(&plan.endpoint),
        code(plan.kubernetes_version.as_deref().unwrap_or("unknown")),
        code(plan.container_runtime.as_deref().unwrap_or("unknown"))
    ));
    if diff::nothing_changes(plan) {
        s.push_str("**No changes.** The cluster matches the desired state.\n\n");
    } else {
        s.push_str(&format!("**Plan:** {}\n", diff::counts(plan)));
        if let Some(line) = diff::undecided(plan) {
            s.push_str(&format!("<br>**{line}**\n"));
        }
        if let Some(line) = diff::restarts_only(plan) {
            s.push_str(&format!("<br>{line}\n"));
        }
        s.push('\n');
    }
    s
}

/// One fenced block of a resource: an optional title paragraph and its lines.
struct FencedBlock {
    title: Option<String>,
    fence: String,
    lines: Vec<String>,
}

impl FencedBlock {
    fn head(&self, continued: bool) -> String {
        let mut head = String::new();
        if let Some(title) = &self.title {
            head.push_str(title);
            if continued {
                head.push_str(" (continued)");
            }
            head.push_str("\n\n");
        }
        head.push_str(&self.fence);
        head.push_str("diff\n");
        head
    }

    fn close(&self) -> String {
        format!("{}\n\n", self.fence)
    }
}

fn fenced_blocks(section: &Section<'_>) -> Vec<FencedBlock> {
    section
        .blocks
        .iter()
        .map(|block| {
            let (title, lines) = match block {
                Block::Fields(fields) => (None, field_lines(fields)),
                Block::Diff(d) => (
                    Some(diff_title(d)),
                    d.lines.iter().map(|l| l.unified()).collect(),
                ),
            };
            let lines: Vec<String> = lines.into_iter().map(cut).collect();
            FencedBlock {
                title,
                fence: fence_for(&lines),
                lines,
            }
        })
        .collect()
}

fn diff_title(d: &DiffBlock) -> String {
    let note = match d.mark {
        Mark::Added => " (new)",
        Mark::Removed => " (removed)",
        Mark::Same | Mark::Changed => "",
    };
    format!("{}{note}", code(&d.title))
}

/// Fields as diff lines, so GitHub colours the changed ones too.
fn field_lines(fields: &[Field]) -> Vec<String> {
    let width = fields.iter().map(|f| f.name.len()).max().unwrap_or(0) + 1;
    let line = |tag: &str, name: &str, value: &str| {
        let name = format!("{name}:");
        format!("{tag}{name:<width$} {value}")
    };
    let mut lines = Vec::new();
    for f in fields {
        let before = f.before.as_deref().unwrap_or("");
        let after = f.after.as_deref().unwrap_or("");
        match f.mark() {
            Mark::Same => lines.push(line(" ", f.name, after)),
            Mark::Added => lines.push(line("+", f.name, after)),
            Mark::Removed => lines.push(line("-", f.name, before)),
            Mark::Changed => {
                lines.push(line("-", f.name, before));
                lines.push(line("+", f.name, after));
            }
        }
    }
    lines
}

/// A fence longer than any backtick run inside, so file content cannot close it early.
fn fence_for(lines: &[String]) -> String {
    let longest = lines
        .iter()
        .flat_map(|l| l.split(|c| c != '`'))
        .map(str::len)
        .max()
        .unwrap_or(0);
    "`".repeat((longest + 1).max(3))
}

/// Cuts a line that could not fit in any part; every other line is kept whole.
fn cut(line: String) -> String {
    if line.len() <= MAX_LINE {
        return line;
    }
    let mut end = MAX_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    let rest = line[end..].chars().count();
    format!(
        "{}… ({rest} more characters cut: too long for a GitHub comment)",
        &line[..end]
    )
}

/// Fills parts up to a byte budget, keeping tags and fences balanced in each.
struct Packer {
    budget: usize,
    parts: Vec<String>,
    cur: String,
}

impl Packer {
    fn new(budget: usize) -> Packer {
        Packer {
            budget,
            parts: Vec::new(),
            cur: String::new(),
        }
    }

    fn room(&self) -> usize {
        self.budget.saturating_sub(self.cur.len())
    }

    fn break_part(&mut self) {
        if !self.cur.is_empty() {
            self.parts.push(std::mem::take(&mut self.cur));
        }
    }

    fn finish(mut self) -> Vec<String> {
        self.break_part();
        if self.parts.is_empty() {
            self.parts.push(String::new());
        }
        self.parts
    }

    /// Markdown outside any open tag or fence: kept whole when it fits in a part, otherwise
    /// split between lines (any line boundary is valid there).
    fn push_unit(&mut self, unit: &str) {
        if unit.len() > self.room() {
            self.break_part();
        }
        if unit.len() <= self.room() {
            self.cur.push_str(unit);
            return;
        }
        for line in unit.split_inclusive('\n') {
            let line = cut(line.to_string());
            if line.len() > self.room() {
                self.break_part();
            }
            self.cur.push_str(&line);
        }
    }

    /// A resource whole in the current part, else whole in a fresh one; one too big for any
    /// part fills the current part and continues, split by lines, in as many as it takes.
    fn push_resource(&mut self, section: &Section<'_>) {
        let whole = {
            let mut unbounded = Packer::new(usize::MAX);
            unbounded.stream_resource(section);
            unbounded.cur
        };
        if whole.len() <= self.room() {
            self.cur.push_str(&whole);
        } else if whole.len() <= self.budget {
            self.break_part();
            self.cur.push_str(&whole);
        } else {
            self.stream_resource(section);
        }
    }

    fn stream_resource(&mut self, section: &Section<'_>) {
        let address = code(section.address);
        let continued = format!("<details><summary>{address} (continued)</summary>\n\n");
        let intro = format!(
            "<details><summary>{address} will be {}</summary>\n\n**Why:** {}\n\n",
            section.verb,
            html(section.reason)
        );
        if intro.len() + DETAILS_CLOSE.len() > self.room() {
            self.break_part();
        }
        self.cur.push_str(&intro);

        for block in fenced_blocks(section) {
            let close = block.close();
            let first = block.lines.first().map_or(0, |l| l.len() + 1);
            if block.head(false).len() + first + close.len() + DETAILS_CLOSE.len() > self.room() {
                self.cur.push_str(DETAILS_CLOSE);
                self.break_part();
                self.cur.push_str(&continued);
            }
            self.cur.push_str(&block.head(false));
            for line in &block.lines {
                if line.len() + 1 + close.len() + DETAILS_CLOSE.len() > self.room() {
                    self.cur.push_str(&close);
                    self.cur.push_str(DETAILS_CLOSE);
                    self.break_part();
                    self.cur.push_str(&continued);
                    self.cur.push_str(&block.head(true));
                }
                self.cur.push_str(line);
                self.cur.push('\n');
            }
            self.cur.push_str(&close);
        }

        if !section.handlers.is_empty() {
            let handlers = format!(
                "**Handlers:** {}\n\n",
                section
                    .handlers
                    .iter()
                    .map(|h| html(h))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            if handlers.len() + DETAILS_CLOSE.len() > self.room() {
                self.cur.push_str(DETAILS_CLOSE);
                self.break_part();
                self.cur.push_str(&continued);
            }
            self.cur.push_str(&handlers);
        }
        self.cur.push_str(DETAILS_CLOSE);
    }
}

/// Text outside code: escaped so `<bootstrap-token>` and the like are not taken for HTML.
fn html(s: &str) -> String {
    clean(s)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `<code>` rather than backticks: safe whatever the text holds.
fn code(s: &str) -> String {
    format!("<code>{}</code>", html(s))
}

fn code_list(items: &[&str]) -> String {
    items.iter().map(|i| code(i)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fence_outgrows_backticks_in_content() {
        assert_eq!(fence_for(&[" plain".to_string()]), "```");
        assert_eq!(fence_for(&[" ```".to_string()]), "````");
    }

    #[test]
    fn over_long_lines_are_cut_at_a_char_boundary() {
        let line = "é".repeat(MAX_LINE);
        let cut = cut(line);
        assert!(cut.len() < MAX_LINE + 100);
        assert!(cut.ends_with("more characters cut: too long for a GitHub comment)"));
    }
}
