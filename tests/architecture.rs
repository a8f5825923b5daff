//! Architecture invariants, checked as ordinary tests: the core does no I/O, and every source
//! file says what it is for.
//!
//! Every module is core unless it is listed in `EDGE`: a new module is pure by default, and
//! making one an I/O module is a deliberate edit here.

use std::collections::BTreeSet;
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
    "now_utc",
    "now_local",
    // rustls' process-wide crypto provider is the edge's to install.
    "install_default",
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

/// A source file's module path: `lab/kubeadm/certs.rs` → `lab::kubeadm::certs`, `lab.rs` and
/// `render/mod.rs` → their folder's module, `lib.rs` and `main.rs` → the crate.
fn module_of(file: &str) -> Vec<String> {
    let path = file.trim_end_matches(".rs");
    let mut parts: Vec<String> = path.split('/').map(str::to_string).collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Which sibling modules each module uses (`super::x`, `crate::a::x`, in imports and in code),
/// as edges between the two children of their nearest common parent: a module's use of its
/// parent or its own children is no edge.
fn sibling_uses(files: &[(String, String)]) -> BTreeSet<(Vec<String>, Vec<String>)> {
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(f, _)| module_of(f)).collect();
    let path_re =
        regex::Regex::new(r"\b(crate|super)((?:::super)*)((?:::[a-z_][a-z0-9_]*)+)").unwrap();
    let mut edges = BTreeSet::new();
    for (file, text) in files {
        let from = module_of(file);
        // Test modules of their own (`readings/tests.rs`) use what they test.
        if from.last().is_some_and(|m| m == "tests") {
            continue;
        }
        // Up to its tests: `super` in an inline `mod tests` is the file's own module.
        let lines: Vec<(usize, &str)> = code_lines(text)
            .take_while(|(_, l)| l.trim() != "#[cfg(test)]")
            .collect();
        for (_, code) in spelled_out(&lines) {
            for caps in path_re.captures_iter(&code) {
                let mut target: Vec<String> = match &caps[1] {
                    "crate" => Vec::new(),
                    _ => from[..from.len().saturating_sub(1)].to_vec(),
                };
                for _ in 0..caps[2].matches("super").count() {
                    target.pop();
                }
                let rest: Vec<String> = caps[3]
                    .trim_start_matches("::")
                    .split("::")
                    .map(str::to_string)
                    .collect();
                target.extend(rest);
                // The module named: the longest prefix that is one.
                while !target.is_empty() && !modules.contains(&target) {
                    target.pop();
                }
                let common = from.iter().zip(&target).take_while(|(a, b)| a == b).count();
                if common < from.len() && common < target.len() {
                    edges.insert((from[..=common].to_vec(), target[..=common].to_vec()));
                }
            }
        }
    }
    edges
}

/// Each circle of sibling modules that use each other, as `a → b → a`.
fn circles(edges: &BTreeSet<(Vec<String>, Vec<String>)>) -> Vec<String> {
    let next = |m: &Vec<String>| -> Vec<Vec<String>> {
        edges
            .iter()
            .filter(|(a, _)| a == m)
            .map(|(_, b)| b.clone())
            .collect()
    };
    let mut found = BTreeSet::new();
    let nodes: BTreeSet<Vec<String>> = edges.iter().map(|(a, _)| a.clone()).collect();
    for start in &nodes {
        // Depth-first from `start`, back to it: each circle once, from its smallest module.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((at, path)) = stack.pop() {
            for n in next(&at) {
                if &n == start {
                    let names: Vec<String> =
                        path.iter().chain([start]).map(|m| m.join("::")).collect();
                    found.insert(names.join(" → "));
                } else if n > *start && !path.contains(&n) {
                    let mut p = path.clone();
                    p.push(n.clone());
                    stack.push((n, p));
                }
            }
        }
    }
    found.into_iter().collect()
}

#[test]
fn no_modules_use_each_other() {
    let found = circles(&sibling_uses(&all_sources()));
    assert!(
        found.is_empty(),
        "modules that use each other (move what both need into a module of its own, or turn one use around):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_circle_check_finds_a_circle_when_there_is_one() {
    let files = [
        (
            "lab/up.rs".to_string(),
            "//! x\nuse super::daemon::{self, Request};\n".to_string(),
        ),
        (
            "lab/daemon.rs".to_string(),
            "//! x\nfn f() { crate::lab::up::LabState::read(); }\n".to_string(),
        ),
        (
            "lab/status.rs".to_string(),
            "//! x\nuse super::daemon;\nuse super::super::lab::up;\n".to_string(),
        ),
        (
            "lab.rs".to_string(),
            "//! x\nuse crate::lab::status::gather;\n".to_string(),
        ),
        (
            "lab/kubeadm/certs.rs".to_string(),
            "//! x\nuse super::{config, Flags};\n".to_string(),
        ),
        (
            "lab/kubeadm/config.rs".to_string(),
            "//! x\nfn f() { super::certs::create(); }\n".to_string(),
        ),
        (
            "lab/kubeadm.rs".to_string(),
            "//! x\nuse crate::lab::up;\n".to_string(),
        ),
    ];
    assert_eq!(
        circles(&sibling_uses(&files)),
        [
            "lab::daemon → lab::up → lab::daemon",
            "lab::kubeadm::certs → lab::kubeadm::config → lab::kubeadm::certs"
        ]
    );
}
