//! No input may make hactl panic: every prefix of the example files, and every file made by
//! replacing one byte of them, goes through `parse` and through rendering of its problems.

use std::path::Path;

fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
}

/// Parses and, on failure, renders every problem the way the CLI does.
fn parse_and_render(source: &str) -> bool {
    match hactl::spec::parse("mutant.toml", source) {
        Ok(_) => true,
        Err(errors) => {
            assert!(
                !errors.errors.is_empty(),
                "an error without problems:\n{source}"
            );
            let mut out = String::new();
            miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
                .with_width(100)
                .render_report(&mut out, &errors)
                .unwrap();
            assert!(!out.is_empty());
            false
        }
    }
}

fn check_prefixes(name: &str) {
    let source = read(name);
    let mut parsed = 0;
    for end in (0..=source.len()).filter(|&i| source.is_char_boundary(i)) {
        if parse_and_render(&source[..end]) {
            parsed += 1;
        }
    }
    // The whole file parses, and so do the prefixes that end in its trailing comments.
    assert!(parsed >= 1, "{name}: not even the whole file parsed");
}

fn check_mutations(name: &str) {
    let source = read(name);
    for replacement in [b'"', b']', b'=', b'\n', b'x', b'[', b'#'] {
        for i in 0..source.len() {
            let mut bytes = source.clone().into_bytes();
            if bytes[i] == replacement {
                continue;
            }
            bytes[i] = replacement;
            // Replacing a byte of a multi-byte character leaves no text to parse.
            if let Ok(text) = String::from_utf8(bytes) {
                parse_and_render(&text);
            }
        }
    }
}

#[test]
fn prefixes_of_lab_do_not_panic() {
    check_prefixes("plans/lab.toml");
}

#[test]
fn prefixes_of_production_do_not_panic() {
    check_prefixes("plans/production.toml");
}

#[test]
fn byte_mutations_of_lab_do_not_panic() {
    check_mutations("plans/lab.toml");
}

#[test]
fn byte_mutations_of_production_do_not_panic() {
    check_mutations("plans/production.toml");
}
