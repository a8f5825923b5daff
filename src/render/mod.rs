//! Renders a plan for people (terminal text, pull-request markdown) and machines (JSON).

use crate::plan::Plan;

/// The plan for a terminal, in the spirit of `terraform plan`; ANSI colour when `color`.
pub fn text(_plan: &Plan, _color: bool) -> String {
    unimplemented!("render::text is being written")
}

/// The plan for a pull-request comment, split into parts under 65,000 characters each.
pub fn markdown(_plan: &Plan) -> Vec<String> {
    unimplemented!("render::markdown is being written")
}

/// The plan as versioned JSON (the same document `plan -o` saves), pretty-printed.
pub fn json(_plan: &Plan) -> String {
    unimplemented!("render::json is being written")
}
