//! DNS-1123 names, as Kubernetes checks them: node names, the cluster name, the LB host.

/// Why `name` is not a DNS-1123 label (at most 63 lowercase alphanumerics or '-', starting and
/// ending alphanumeric), or `None` when it is one.
pub(crate) fn label_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("it is empty".into());
    }
    if let Some(c) = name.chars().find(|&c| c == '.') {
        return Some(format!("it contains {c:?}; a label has no dots"));
    }
    part_problem(name, "it")
}

/// Why `name` is not a DNS-1123 subdomain (dot-separated labels, at most 253 characters), or
/// `None` when it is one.
pub(crate) fn subdomain_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("it is empty".into());
    }
    if name.len() > 253 {
        return Some(format!(
            "it is {} characters long; at most 253 are allowed",
            name.len()
        ));
    }
    if let Some(c) = bad_char(name, true) {
        return Some(describe_char(c));
    }
    if name.starts_with('.') {
        return Some("it starts with '.'".into());
    }
    if name.ends_with('.') {
        return Some("it ends with '.'".into());
    }
    if name.contains("..") {
        return Some("it has two dots in a row".into());
    }
    let single = !name.contains('.');
    for part in name.split('.') {
        let what = match single {
            true => "it".to_string(),
            false => format!("its part {part:?}"),
        };
        if let Some(problem) = part_problem(part, &what) {
            return Some(problem);
        }
    }
    None
}

/// Checks one label; `what` names it in the reason ("it", or "its part \"x\"").
fn part_problem(part: &str, what: &str) -> Option<String> {
    if let Some(c) = bad_char(part, false) {
        return Some(describe_char(c));
    }
    if part.len() > 63 {
        return Some(format!(
            "{what} is {} characters long; at most 63 are allowed",
            part.len()
        ));
    }
    // Only ASCII is left at this point, so the first and last bytes are characters.
    let first = part.chars().next().unwrap_or('a');
    let last = part.chars().last().unwrap_or('a');
    if !first.is_ascii_alphanumeric() {
        return Some(format!("{what} starts with {first:?}"));
    }
    if !last.is_ascii_alphanumeric() {
        return Some(format!("{what} ends with {last:?}"));
    }
    None
}

fn bad_char(name: &str, dots: bool) -> Option<char> {
    name.chars().find(|&c| {
        !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.'))
    })
}

fn describe_char(c: char) -> String {
    if c.is_uppercase() {
        format!("it contains the uppercase letter {c:?}")
    } else {
        format!("it contains {c:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for ok in ["a", "lab", "prod-eu1", "0", &"a".repeat(63)] {
            assert_eq!(label_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "Lab",
            "-lab",
            "lab-",
            "a.b",
            "a_b",
            "ä",
            &"a".repeat(64),
        ] {
            assert!(label_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn subdomains() {
        for ok in ["cp1", "k8s-api.lab.internal", "1.2.3.4", "a-b.c"] {
            assert_eq!(subdomain_problem(ok), None, "{ok}");
        }
        let long = vec!["a".repeat(63); 4].join(".") + ".a";
        for bad in [
            "",
            "CP1",
            "cp_1",
            ".a",
            "a.",
            "a..b",
            "a.-b",
            "a-.b",
            "ä",
            &"a".repeat(64),
            &long,
        ] {
            assert!(subdomain_problem(bad).is_some(), "{bad}");
        }
    }
}
