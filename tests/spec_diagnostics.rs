//! Snapshot tests: every desired-state file in tests/fixtures/specs/ has problems, and how
//! hactl reports them (file, line and column, label, help) is pinned in snapshots/.

use std::path::Path;

fn render(diagnostic: &dyn miette::Diagnostic) -> String {
    let mut out = String::new();
    miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .render_report(&mut out, diagnostic)
        .unwrap();
    out
}

#[test]
fn every_fixture_renders_as_in_its_snapshot() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/specs");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 10, "fixtures missing from {}", dir.display());
    for path in paths {
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        let file_name = format!("tests/fixtures/specs/{stem}.toml");
        let source = std::fs::read_to_string(&path).unwrap();
        let errors = match hactl::spec::parse(&file_name, &source) {
            Ok(_) => panic!("{file_name} parsed without problems; fixtures must have some"),
            Err(errors) => errors,
        };
        let rendered = render(&errors);
        insta::with_settings!({
            snapshot_path => "../snapshots",
            prepend_module_to_snapshot => false,
            description => file_name.as_str(),
            omit_expression => true,
        }, {
            insta::assert_snapshot!(format!("spec-{stem}"), rendered);
        });
    }
}
