//! The JSON plan document: its snapshot, the round trip, and the errors of reading it back.

mod render_fixtures;

use hactl::render::{self, PlanFileError};
use render_fixtures as fx;

#[test]
fn conversion_plan() {
    let json = render::json(&fx::conversion());
    assert!(json.ends_with("}\n"));
    insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!("render_json_conversion", json);
    });
}

#[test]
fn every_plan_round_trips() {
    for plan in [
        fx::conversion(),
        fx::no_changes(),
        fx::unreachable_node(),
        fx::replace(),
        fx::big_configmap(),
    ] {
        let parsed = render::parse_plan(&render::json(&plan)).expect("a rendered plan parses");
        assert_eq!(parsed, plan);
    }
}

#[test]
fn another_major_version_is_refused_with_advice() {
    let json = render::json(&fx::conversion())
        .replace("\"format_version\": \"1.2\"", "\"format_version\": \"2.0\"");
    let err = render::parse_plan(&json).expect_err("version 2 is refused");
    assert!(matches!(err, PlanFileError::UnsupportedVersion { .. }));
    assert_eq!(
        err.to_string(),
        "the plan file has format_version 2.0, but this hactl reads format 1.2; \
         re-run `hactl plan` with this version of hactl to make a new plan"
    );
}

#[test]
fn a_newer_minor_version_is_read() {
    let json = render::json(&fx::no_changes())
        .replace("\"format_version\": \"1.2\"", "\"format_version\": \"1.3\"");
    let plan = render::parse_plan(&json).expect("same major version");
    assert_eq!(plan.format_version, "1.3");
}

#[test]
fn garbage_is_not_json() {
    let err = render::parse_plan("Plan: 1 to add, 4 to change, 0 to destroy.\n")
        .expect_err("text is refused");
    assert!(matches!(err, PlanFileError::NotJson(_)));
    assert_eq!(
        err.to_string(),
        "the plan file is not JSON: expected value at line 1 column 1"
    );
}

#[test]
fn json_without_a_version_is_not_a_plan() {
    let err = render::parse_plan("{\"resources\": []}").expect_err("no version");
    assert!(matches!(err, PlanFileError::NoVersion));
    assert!(err.to_string().contains("not a hactl plan"));
}

#[test]
fn fields_that_do_not_fit_name_the_place() {
    let json = render::json(&fx::conversion()).replacen("\"add\": 1", "\"add\": \"one\"", 1);
    let err = render::parse_plan(&json).expect_err("a string count is refused");
    assert!(matches!(err, PlanFileError::Invalid { .. }));
    let message = err.to_string();
    assert!(
        message.starts_with(
            "the plan file (format_version 1.2) does not fit the plan format this hactl reads (1.2): \
             invalid type: string \"one\", expected usize at line "
        ),
        "{message}"
    );
}
