//! Architecture invariants, checked as ordinary tests: the core does no I/O, and every source
//! file says what it is for.
//!
//! Every module is core unless it is listed in `EDGE`: a new module is pure by default, and
//! making one an I/O module is a deliberate edit here.

use std::path::{Path, PathBuf};

/// Modules (paths under src/) allowed to do I/O: the command line, the binary, the lab, and
/// the two seams to the cluster, observation and the node transport, and apply's run
/// directories (an entry ending in `/` is a whole directory). The parsers observation uses
/// (`readings`) and apply's engine (`apply`, through the seams) stay pure.
const EDGE: &[&str] = &[
    "cli.rs",
    "cli/",
    "main.rs",
    "lab.rs",
    "lab/",
    "observe.rs",
    "observe/",
    "runs.rs",
    "transport.rs",
    "transport/",
];

/// What the core must not use: file system, processes, environment, terminal, network, Unix
/// sockets and async runtimes, HTTP, SSH and Kubernetes clients, system calls, the clocks, and
/// the edge's modules.
const FORBIDDEN: &[&str] = &[
    "std::fs",
    "std::process",
    "std::env",
    "std::io::std",
    "std::net::Tcp",
    "std::net::Udp",
    "std::os::unix::net",
    "UnixStream",
    "UnixListener",
    "tokio",
    "hyper",
    "rustix",
    "kube::",
    "openssh",
    "SystemTime::now",
    "Instant::now",
    "crate::observe::",
    "crate::observe;",
    "crate::transport",
    "crate::lab",
    "crate::runs",
    "println!",
    "eprintln!",
    "print!(",
    "eprint!(",
    "crate::cli",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn all_sources() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    assert!(
        files.len() > 5,
        "found too few sources under {}",
        src.display()
    );
    files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// Code lines only: comments and doc comments may mention I/O.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
}

/// A grouped import's paths spelled out (`use std::{fs, time::{Instant}}` → `std::fs`,
/// `std::time::Instant`), so that a group hides nothing; other lines as they are. A group
/// spanning lines is read from its first line to its `;`.
fn spelled_out(lines: &[(usize, &str)]) -> Vec<(usize, String)> {
    fn expand(prefix: &str, group: &str, out: &mut Vec<String>) {
        // Split at top-level commas.
        let (mut depth, mut start) = (0, 0);
        let mut items = Vec::new();
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&group[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        items.push(&group[start..]);
        for item in items.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
            match item.split_once("::{") {
                Some((head, rest)) => {
                    let inner = rest.strip_suffix('}').unwrap_or(rest);
                    expand(&format!("{prefix}{head}::"), inner, out);
                }
                None if item.starts_with('{') => {
                    expand(prefix, &item[1..item.len() - 1], out);
                }
                None => out.push(format!("{prefix}{item}")),
            }
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let (line, code) = lines[i];
        let trimmed = code.trim_start();
        if (trimmed.starts_with("use ") || trimmed.starts_with("pub use ")) && code.contains('{') {
            let mut stmt = code.to_string();
            while !stmt.contains(';') && i + 1 < lines.len() {
                i += 1;
                stmt.push_str(lines[i].1.trim());
            }
            let path = stmt
                .trim()
                .trim_start_matches("pub ")
                .trim_start_matches("use ")
                .trim_end_matches(';')
                .replace(char::is_whitespace, "");
            let mut paths = Vec::new();
            expand("", &path, &mut paths);
            out.push((line, paths.join(" ")));
        } else {
            out.push((line, code.to_string()));
        }
        i += 1;
    }
    out
}

/// Every forbidden use in one source file, as `src/FILE:LINE: …`.
fn io_uses(file: &str, text: &str) -> Vec<String> {
    let lines: Vec<(usize, &str)> = code_lines(text).collect();
    spelled_out(&lines)
        .into_iter()
        .flat_map(|(line, code)| {
            FORBIDDEN
                .iter()
                .filter(|f| code.contains(**f))
                .map(|f| format!("src/{file}:{line}: uses `{f}`: {}", code.trim()))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn is_edge(file: &str) -> bool {
    EDGE.iter()
        .any(|e| file == *e || (e.ends_with('/') && file.starts_with(e)))
}

#[test]
fn the_core_does_no_io() {
    let violations: Vec<String> = all_sources()
        .iter()
        .filter(|(file, _)| !is_edge(file))
        .flat_map(|(file, text)| io_uses(file, text))
        .collect();
    assert!(
        violations.is_empty(),
        "the pure core (every module not in EDGE) must not do I/O:\n{}",
        violations.join("\n")
    );
}

#[test]
fn grouped_imports_hide_nothing() {
    let text = "//! x\nuse std::{\n    fs,\n    time::{Duration, Instant},\n};\nuse std::{io::Write, process::Command};\nfn f() { let _ = std::time::Instant::now(); }\nuse crate::observed::San;\n";
    assert_eq!(
        io_uses("x.rs", text),
        [
            "src/x.rs:2: uses `std::fs`: std::fs std::time::Duration std::time::Instant",
            "src/x.rs:6: uses `std::process`: std::io::Write std::process::Command",
            "src/x.rs:7: uses `Instant::now`: fn f() { let _ = std::time::Instant::now(); }",
        ]
    );
}

#[test]
fn the_check_finds_io_when_there_is_some() {
    // The scanner the real test uses must be able to fail.
    let text =
        "//! x\nuse std::fs;\n// std::process in a comment is fine\nfn f() { println!(\"x\"); }\n";
    assert_eq!(
        io_uses("x.rs", text),
        [
            "src/x.rs:2: uses `std::fs`: use std::fs;",
            "src/x.rs:4: uses `println!`: fn f() { println!(\"x\"); }",
        ]
    );
}

#[test]
fn every_source_file_says_what_it_is_for() {
    let missing: Vec<String> = all_sources()
        .into_iter()
        .filter(|(_, text)| !text.starts_with("//!"))
        .map(|(file, _)| format!("src/{file}"))
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not start with a //! line: {missing:?}"
    );
}
