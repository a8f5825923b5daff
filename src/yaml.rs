//! A YAML document as a tree of nodes that remember where they stand in the text.
//!
//! The editors (`kubeconfig`, `cluster_config`) change one scalar or insert lines and must keep
//! every other byte, so they need positions, which value-level YAML libraries drop. This builds
//! the tree from yaml-rust2's marked events.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Where a node starts: 1-based line, 0-based column in characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Scalar {
        value: String,
        style: TScalarStyle,
        pos: Pos,
    },
    Seq {
        items: Vec<Node>,
        flow: bool,
        pos: Pos,
    },
    Map {
        entries: Vec<(Node, Node)>,
        flow: bool,
        pos: Pos,
    },
    /// An alias (`*name`): the editors never follow one.
    Alias { pos: Pos },
}

impl Node {
    pub fn pos(&self) -> Pos {
        match self {
            Node::Scalar { pos, .. }
            | Node::Seq { pos, .. }
            | Node::Map { pos, .. }
            | Node::Alias { pos } => *pos,
        }
    }

    /// The scalar's value; `None` for other nodes.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// True for a scalar YAML reads as null (`null`, `~`, or nothing).
    pub fn is_null(&self) -> bool {
        matches!(self, Node::Scalar { value, style: TScalarStyle::Plain, .. }
            if value.is_empty() || value == "null" || value == "~" || value == "Null" || value == "NULL")
    }

    /// The value under a key of a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map { entries, .. } => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The items of a sequence; an empty slice for other nodes (YAML's null list).
    pub fn items(&self) -> &[Node] {
        match self {
            Node::Seq { items, .. } => items,
            _ => &[],
        }
    }
}

/// Why a text is not the YAML document an editor expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {col}: {message}")]
pub struct YamlError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Parses a single YAML document into a positioned tree.
pub fn parse(text: &str) -> Result<Node, YamlError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, true).map_err(|e| YamlError {
        line: e.marker().line(),
        col: e.marker().col(),
        message: e.info().to_string(),
    })?;
    if builder.documents.len() > 1 {
        return Err(YamlError {
            line: 1,
            col: 0,
            message: "expected one YAML document, found several".into(),
        });
    }
    builder.documents.pop().ok_or(YamlError {
        line: 1,
        col: 0,
        message: "the document is empty".into(),
    })
}

#[derive(Default)]
struct Builder {
    /// Open collections: the node being filled, and for a map the pending key.
    stack: Vec<(Node, Option<Node>)>,
    documents: Vec<Node>,
}

impl Builder {
    fn push_value(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => self.documents.push(node),
            Some((Node::Seq { items, .. }, _)) => items.push(node),
            Some((Node::Map { entries, .. }, pending)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => entries.push((key, node)),
            },
            Some(_) => {}
        }
    }
}

fn pos(mark: Marker) -> Pos {
    Pos {
        line: mark.line(),
        col: mark.col(),
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, style, _, _) => self.push_value(Node::Scalar {
                value,
                style,
                pos: pos(mark),
            }),
            Event::Alias(_) => self.push_value(Node::Alias { pos: pos(mark) }),
            Event::SequenceStart(..) => self.stack.push((
                Node::Seq {
                    items: Vec::new(),
                    flow: false,
                    pos: pos(mark),
                },
                None,
            )),
            Event::MappingStart(..) => self.stack.push((
                Node::Map {
                    entries: Vec::new(),
                    flow: false,
                    pos: pos(mark),
                },
                None,
            )),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((node, _)) = self.stack.pop() {
                    self.push_value(node);
                }
            }
            _ => {}
        }
    }
}

/// Marks flow collections (`{}` / `[a, b]`): the parser's events do not say, the text does.
pub fn parse_with_flow(text: &str) -> Result<Node, YamlError> {
    let mut root = parse(text)?;
    let lines: Vec<&str> = text.split('\n').collect();
    mark_flow(&mut root, &lines);
    Ok(root)
}

fn char_at(lines: &[&str], p: Pos) -> Option<char> {
    lines
        .get(p.line.checked_sub(1)?)
        .and_then(|l| l.chars().nth(p.col))
}

fn mark_flow(node: &mut Node, lines: &[&str]) {
    match node {
        Node::Seq { items, flow, pos } => {
            *flow = char_at(lines, *pos) == Some('[');
            items.iter_mut().for_each(|n| mark_flow(n, lines));
        }
        Node::Map { entries, flow, pos } => {
            *flow = char_at(lines, *pos) == Some('{');
            for (k, v) in entries {
                mark_flow(k, lines);
                mark_flow(v, lines);
            }
        }
        _ => {}
    }
}

/// The byte range of a single-line scalar in `text`, quotes included, comment excluded.
pub fn scalar_span(text: &str, node: &Node) -> Result<std::ops::Range<usize>, YamlError> {
    let Node::Scalar { style, pos, .. } = node else {
        return Err(YamlError {
            line: node.pos().line,
            col: node.pos().col,
            message: "expected a scalar".into(),
        });
    };
    let err = |message: &str| YamlError {
        line: pos.line,
        col: pos.col,
        message: message.into(),
    };
    let line_start = line_offset(text, pos.line).ok_or_else(|| err("position past the end"))?;
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let line = &text[line_start..line_end];
    let start = line
        .char_indices()
        .nth(pos.col)
        .map(|(i, _)| i)
        .ok_or_else(|| err("position past the end of the line"))?;
    let rest = &line[start..];
    let len = match style {
        TScalarStyle::Plain => {
            // A plain scalar ends at ` #` (a comment) or the end of the line.
            let end = rest.find(" #").unwrap_or(rest.len());
            rest[..end].trim_end().len()
        }
        TScalarStyle::DoubleQuoted => {
            let mut escaped = false;
            let close = rest.char_indices().skip(1).find(|&(_, c)| {
                let hit = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                hit
            });
            close
                .map(|(i, _)| i + 1)
                .ok_or_else(|| err("a quoted value that spans lines"))?
        }
        TScalarStyle::SingleQuoted => {
            let bytes = rest.as_bytes();
            let mut i = 1;
            loop {
                match bytes.get(i) {
                    Some(b'\'') if bytes.get(i + 1) == Some(&b'\'') => i += 2,
                    Some(b'\'') => break i + 1,
                    Some(_) => i += 1,
                    None => return Err(err("a quoted value that spans lines")),
                }
            }
        }
        _ => return Err(err("a block scalar (| or >) where one line was expected")),
    };
    Ok(line_start + start..line_start + start + len)
}

/// The byte offset where 1-based `line` starts.
pub fn line_offset(text: &str, line: usize) -> Option<usize> {
    if line == 1 {
        return Some(0);
    }
    text.match_indices('\n')
        .nth(line.checked_sub(2)?)
        .map(|(i, _)| i + 1)
}

/// `value` written as a scalar of the same quoting style as `like`.
pub fn quote_like(like: &TScalarStyle, value: &str) -> String {
    match like {
        TScalarStyle::DoubleQuoted => {
            format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
        }
        TScalarStyle::SingleQuoted => format!("'{}'", value.replace('\'', "''")),
        _ => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_lines_and_character_columns() {
        let text = "a: 1\nb:\n  c: \"x\" # note\n  d: [1, 2]\né: ü\n";
        let root = parse_with_flow(text).unwrap();
        let c = root.get("b").unwrap().get("c").unwrap();
        assert_eq!(c.pos(), Pos { line: 3, col: 5 });
        assert_eq!(&text[scalar_span(text, c).unwrap()], "\"x\"");
        assert!(matches!(
            root.get("b").unwrap().get("d"),
            Some(Node::Seq { flow: true, .. })
        ));
        // Columns count characters, so multi-byte text before a value is fine.
        let u = root.get("é").unwrap();
        assert_eq!(&text[scalar_span(text, u).unwrap()], "ü");
    }

    #[test]
    fn spans_exclude_comments_and_keep_quotes() {
        let text = "s: https://a:1 # c\nq: 'it''s'\n";
        let root = parse(text).unwrap();
        assert_eq!(
            &text[scalar_span(text, root.get("s").unwrap()).unwrap()],
            "https://a:1"
        );
        assert_eq!(
            &text[scalar_span(text, root.get("q").unwrap()).unwrap()],
            "'it''s'"
        );
    }

    #[test]
    fn errors_carry_the_position() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.line >= 1, "{e}");
        assert!(parse("").is_err());
        assert!(parse("a: 1\n---\nb: 2\n").is_err());
    }
}
