//! The plan as versioned JSON, and reading it back for `hactl show PLANFILE` / `apply PLANFILE`.

use thiserror::Error;

use crate::plan::{PLAN_FORMAT_VERSION, Plan};

/// Why a plan file could not be read.
#[derive(Debug, Error)]
pub enum PlanFileError {
    /// The text is not JSON at all (serde's message carries the line and column).
    #[error("the plan file is not JSON: {0}")]
    NotJson(serde_json::Error),
    /// JSON, but not an object with a string `format_version`: not a hactl plan.
    #[error(
        "the plan file is not a hactl plan: it has no \"format_version\" string (this hactl writes {PLAN_FORMAT_VERSION})"
    )]
    NoVersion,
    /// A plan from a hactl whose format this one cannot read.
    #[error(
        "the plan file has format_version {found}, but this hactl reads format {supported}; re-run `hactl plan` with this version of hactl to make a new plan"
    )]
    UnsupportedVersion {
        found: String,
        supported: &'static str,
    },
    /// A plan of the right major version whose fields do not fit.
    #[error(
        "the plan file (format_version {version}) does not fit the plan format this hactl reads ({PLAN_FORMAT_VERSION}): {error}"
    )]
    Invalid {
        version: String,
        error: serde_json::Error,
    },
}

pub(super) fn render(plan: &Plan) -> String {
    // A Plan has only string map keys and no non-finite floats, so serialising cannot fail.
    let mut json = serde_json::to_string_pretty(plan).expect("a Plan always serialises to JSON");
    json.push('\n');
    json
}

pub(super) fn parse(text: &str) -> Result<Plan, PlanFileError> {
    // The version is checked before the fields so that a plan from another major version
    // gets "re-run hactl plan" rather than a confusing field error.
    let value: serde_json::Value = serde_json::from_str(text).map_err(PlanFileError::NotJson)?;
    let version = value
        .get("format_version")
        .and_then(serde_json::Value::as_str)
        .ok_or(PlanFileError::NoVersion)?;
    if major(version) != major(PLAN_FORMAT_VERSION) {
        return Err(PlanFileError::UnsupportedVersion {
            found: version.to_string(),
            supported: PLAN_FORMAT_VERSION,
        });
    }
    // Parsed again from the text, not the Value, so errors keep their line and column.
    serde_json::from_str(text).map_err(|source| PlanFileError::Invalid {
        version: version.to_string(),
        error: source,
    })
}

fn major(version: &str) -> &str {
    version.split('.').next().unwrap_or(version).trim()
}
