//! Renders a plan for people (terminal text, pull-request markdown) and machines (JSON).
//!
//! Pure: no I/O, no environment; the CLI decides colour and passes it in. Text and markdown
//! share what they show (sections, verbs, diffs) through `diff`, and differ only in layout.

mod diff;
mod json;
mod markdown;
mod text;

pub use json::PlanFileError;
pub use markdown::PART_LIMIT as MARKDOWN_PART_LIMIT;

use crate::plan::Plan;

/// The plan for a terminal, in the spirit of `terraform plan`; ANSI colour when `color`.
pub fn text(plan: &Plan, color: bool) -> String {
    text::render(plan, color)
}

/// The plan for a pull-request comment, split into parts under 65,000 characters each, each
/// starting with `<!-- hactl plan: part i of n -->`.
pub fn markdown(plan: &Plan) -> Vec<String> {
    markdown::render(plan)
}

/// The plan as versioned JSON (the same document `plan -o` saves), pretty-printed.
pub fn json(plan: &Plan) -> String {
    json::render(plan)
}

/// Reads a saved plan (`hactl show PLANFILE`), refusing another major format version.
pub fn parse_plan(text: &str) -> Result<Plan, PlanFileError> {
    json::parse(text)
}
