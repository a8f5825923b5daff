//! The plan for a terminal, laid out like `terraform plan`, coloured with `anstyle` on request.

use anstyle::{AnsiColor, Color, Style};

use super::diff::{self, Block, DiffLine, Field, Mark, Section, clean};
use crate::plan::{Plan, Severity};

const BOLD: Style = Style::new().bold();
const GREEN: Style = fg(AnsiColor::Green);
const YELLOW: Style = fg(AnsiColor::Yellow);
const RED: Style = fg(AnsiColor::Red);
const CYAN: Style = fg(AnsiColor::Cyan);
const MAGENTA: Style = fg(AnsiColor::Magenta);

const fn fg(color: AnsiColor) -> Style {
    Style::new().fg_color(Some(Color::Ansi(color)))
}

/// Wraps text in escape sequences only when colour was asked for, so plain output holds
/// no escape byte at all.
struct Painter {
    color: bool,
}

impl Painter {
    fn paint(&self, style: Style, s: &str) -> String {
        if self.color && !s.is_empty() && !style.is_plain() {
            format!("{style}{s}{style:#}")
        } else {
            s.to_string()
        }
    }

    /// `+` green, `~` yellow, `-` red, `<=` cyan; each part of `-/+` in its own colour.
    fn symbol(&self, symbol: &str) -> String {
        symbol
            .split('/')
            .map(|part| {
                let style = match part.chars().next() {
                    Some('+') => GREEN,
                    Some('~') => YELLOW,
                    Some('-') => RED,
                    Some('<') => CYAN,
                    Some('?') => MAGENTA,
                    _ => Style::new(),
                };
                self.paint(style, part)
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    fn diff_line(&self, line: &DiffLine) -> String {
        let style = match line {
            DiffLine::Hunk(_) => CYAN,
            DiffLine::Insert(_) => GREEN,
            DiffLine::Delete(_) => RED,
            DiffLine::Context(_) | DiffLine::NoNewline => Style::new(),
        };
        self.paint(style, &line.unified())
    }
}

pub(super) fn render(plan: &Plan, color: bool) -> String {
    let p = Painter { color };
    let sections = diff::sections(plan);
    let mut out: Vec<String> = Vec::new();

    out.push(p.paint(
        BOLD,
        &format!("hactl plan for cluster {}", clean(&plan.cluster)),
    ));
    let unknown = || "unknown".to_string();
    out.push(format!("  endpoint:           {}", clean(&plan.endpoint)));
    out.push(format!(
        "  kubernetes version: {}",
        plan.kubernetes_version
            .as_deref()
            .map_or_else(unknown, |v| clean(v).into_owned())
    ));
    out.push(format!(
        "  container runtime:  {}",
        plan.container_runtime
            .as_deref()
            .map_or_else(unknown, |v| clean(v).into_owned())
    ));
    out.push(String::new());

    if !sections.is_empty() {
        out.push("Resource actions are indicated with the following symbols:".to_string());
        for (symbol, meaning) in diff::legend(&sections) {
            out.push(format!("  {} {meaning}", p.symbol(&symbol)));
        }
        out.push(String::new());
        out.push(p.paint(BOLD, "hactl will perform the following actions:"));
        out.push(String::new());
        for section in &sections {
            push_section(&mut out, &p, section);
        }
    }

    if !plan.handlers.is_empty() {
        out.push(p.paint(BOLD, "Handlers, in order:"));
        for (i, h) in plan.handlers.iter().enumerate() {
            let number = format!("{}.", i + 1);
            let pad = " ".repeat(number.len());
            out.push(format!("  {number} {}", clean(&h.description)));
            out.push(format!("  {pad} runs after {}", clean(&h.runs_after)));
            for c in diff::unchanged_triggers(plan, h) {
                out.push(format!(
                    "  {pad} because {}: {}",
                    clean(&c.address),
                    clean(&c.reason)
                ));
            }
            out.push(format!("  {pad} verify: {}", clean(&h.verify)));
        }
        out.push(String::new());
    }

    for problem in &plan.problems {
        let label = match problem.severity {
            Severity::Error => p.paint(RED.bold(), "Error:"),
            Severity::Warning => p.paint(YELLOW.bold(), "Warning:"),
        };
        out.push(format!(
            "{label} {}: {}",
            p.paint(BOLD, &clean(&problem.subject)),
            clean(&problem.message)
        ));
        out.push(format!(
            "  {} {}",
            p.paint(BOLD, "help:"),
            clean(&problem.help)
        ));
        out.push(String::new());
    }

    if diff::nothing_changes(plan) {
        out.push(p.paint(BOLD, "No changes. The cluster matches the desired state."));
    } else {
        if let Some(line) = diff::undecided(plan) {
            out.push(line);
        }
        out.push(format!("{} {}", p.paint(BOLD, "Plan:"), diff::counts(plan)));
        if let Some(line) = diff::restarts_only(plan) {
            out.push(line);
        }
    }

    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// `# header`, `symbol address`, the body indented under it, then its handlers.
fn push_section(out: &mut Vec<String>, p: &Painter, section: &Section<'_>) {
    out.push(p.paint(
        BOLD,
        &format!(
            "  # {} will be {}: {}",
            clean(section.address),
            section.verb,
            clean(section.reason)
        ),
    ));
    out.push(format!(
        "  {} {}",
        p.symbol(&diff::symbol(section.actions)),
        clean(section.address)
    ));
    // Names line up across the whole section, as terraform aligns its `=`.
    let width = section
        .blocks
        .iter()
        .filter_map(|b| match b {
            Block::Fields(fields) => fields.iter().map(|f| f.name.len()).max(),
            Block::Diff(_) => None,
        })
        .max()
        .unwrap_or(0)
        + 1;
    for block in &section.blocks {
        match block {
            Block::Fields(fields) => {
                for field in fields {
                    out.push(field_line(p, field, width));
                }
            }
            Block::Diff(d) => {
                out.push(format!("      {} {}:", p.symbol(d.mark.symbol()), d.title));
                for line in &d.lines {
                    out.push(format!("          {}", p.diff_line(line)));
                }
            }
        }
    }
    if !section.handlers.is_empty() {
        out.push(format!(
            "    handlers: {}",
            section
                .handlers
                .iter()
                .map(|h| clean(h).into_owned())
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    out.push(String::new());
}

/// `~ name: before -> after`, `+ name: after`, `- name: before`, or `  name: value`.
fn field_line(p: &Painter, field: &Field, width: usize) -> String {
    let before = field.before.as_deref().unwrap_or("");
    let after = field.after.as_deref().unwrap_or("");
    let value = match field.mark() {
        Mark::Same | Mark::Added => after.to_string(),
        Mark::Removed => before.to_string(),
        Mark::Changed => format!("{before} -> {after}"),
    };
    let name = format!("{}:", field.name);
    format!(
        "      {} {name:<width$} {value}",
        p.symbol(field.mark().symbol())
    )
}
