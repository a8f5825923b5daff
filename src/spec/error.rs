//! The problems a desired-state file can have, as miette diagnostics pointing into the file.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode};
use thiserror::Error;

/// Every problem found in one desired-state file; parsing reports them all at once.
#[derive(Debug, Error, Diagnostic)]
#[error("{file_name}: {} in the desired state", count(.errors.len()))]
#[diagnostic(
    code(hactl::spec::invalid),
    help("fix the problems below, then run hactl again")
)]
pub struct SpecErrors {
    pub file_name: String,
    /// In file order.
    #[related]
    pub errors: Vec<SpecError>,
}

fn count(n: usize) -> String {
    match n {
        1 => "1 problem".to_string(),
        n => format!("{n} problems"),
    }
}

impl SpecErrors {
    /// How many problems of this kind were found.
    pub fn count_of(&self, kind: SpecErrorKind) -> usize {
        self.errors.iter().filter(|e| e.kind == kind).count()
    }

    /// The kinds of the problems, in file order.
    pub fn kinds(&self) -> Vec<SpecErrorKind> {
        self.errors.iter().map(|e| e.kind).collect()
    }
}

/// What is wrong; each kind has its own diagnostic code (`hactl::spec::<kind>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpecErrorKind {
    /// The text is not TOML.
    Syntax,
    /// A key no table of this format has.
    UnknownKey,
    /// A required key or table is absent.
    MissingKey,
    /// A value of the wrong TOML type (a string where a number belongs, …).
    InvalidType,
    /// A value of the right type that is not allowed (an unknown role, …).
    InvalidValue,
    /// Something that is not an IP address where one belongs.
    InvalidAddress,
    /// A port outside 1..=65535.
    PortOutOfRange,
    /// A number outside what its key accepts.
    OutOfRange,
    /// `version` is not 1.
    UnsupportedVersion,
    /// `cluster.name` is not a DNS-1123 label.
    InvalidClusterName,
    /// `endpoint.host` is not a DNS-1123 subdomain, or is an IP address.
    InvalidEndpointHost,
    /// `endpoint.addresses` is empty.
    NoEndpointAddress,
    /// An endpoint address that is also a node's address.
    EndpointAddressIsNodeAddress,
    /// A node name that is not a DNS-1123 subdomain.
    InvalidNodeName,
    /// Two nodes with one name.
    DuplicateName,
    /// Two nodes with one address.
    DuplicateAddress,
    /// No node has the control-plane role.
    NoControlPlane,
    /// An even number of control-plane nodes without `policy.allow_even_control_plane`.
    EvenControlPlane,
    /// `policy.worker_parallelism = 0`.
    ZeroParallelism,
}

impl SpecErrorKind {
    /// The diagnostic code, e.g. `hactl::spec::duplicate_address`.
    pub fn code(self) -> &'static str {
        match self {
            SpecErrorKind::Syntax => "hactl::spec::syntax",
            SpecErrorKind::UnknownKey => "hactl::spec::unknown_key",
            SpecErrorKind::MissingKey => "hactl::spec::missing_key",
            SpecErrorKind::InvalidType => "hactl::spec::invalid_type",
            SpecErrorKind::InvalidValue => "hactl::spec::invalid_value",
            SpecErrorKind::InvalidAddress => "hactl::spec::invalid_address",
            SpecErrorKind::PortOutOfRange => "hactl::spec::port_out_of_range",
            SpecErrorKind::OutOfRange => "hactl::spec::out_of_range",
            SpecErrorKind::UnsupportedVersion => "hactl::spec::unsupported_version",
            SpecErrorKind::InvalidClusterName => "hactl::spec::invalid_cluster_name",
            SpecErrorKind::InvalidEndpointHost => "hactl::spec::invalid_endpoint_host",
            SpecErrorKind::NoEndpointAddress => "hactl::spec::no_endpoint_address",
            SpecErrorKind::EndpointAddressIsNodeAddress => {
                "hactl::spec::endpoint_address_is_node_address"
            }
            SpecErrorKind::InvalidNodeName => "hactl::spec::invalid_node_name",
            SpecErrorKind::DuplicateName => "hactl::spec::duplicate_name",
            SpecErrorKind::DuplicateAddress => "hactl::spec::duplicate_address",
            SpecErrorKind::NoControlPlane => "hactl::spec::no_control_plane",
            SpecErrorKind::EvenControlPlane => "hactl::spec::even_control_plane",
            SpecErrorKind::ZeroParallelism => "hactl::spec::zero_parallelism",
        }
    }
}

impl fmt::Display for SpecErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One problem: what is wrong, where (one or more labelled spans), and how to fix it.
///
/// `Diagnostic` is implemented by hand rather than derived because the code depends on the
/// kind, and miette's derive only takes a fixed code per type or variant.
#[derive(Debug, Error)]
#[error("{message}")]
pub struct SpecError {
    pub kind: SpecErrorKind,
    pub message: String,
    pub help: String,
    /// The first label is the primary one: it points at the offending value or key.
    pub labels: Vec<LabeledSpan>,
    source_code: NamedSource<Arc<str>>,
}

impl SpecError {
    /// The byte offset the problem is reported at; problems are listed in this order.
    pub fn offset(&self) -> usize {
        self.labels.first().map_or(0, |l| l.offset())
    }
}

impl Diagnostic for SpecError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.kind.code()))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(&self.help))
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(&self.source_code)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(self.labels.iter().cloned()))
    }
}

/// Collects problems for one file; every problem shares the file's name and text.
pub(crate) struct Problems {
    file_name: String,
    source: Arc<str>,
    errors: Vec<SpecError>,
}

/// A label to put under a span: the text shown under it.
pub(crate) struct Label {
    pub span: Range<usize>,
    pub text: String,
}

impl Label {
    pub fn new(span: Range<usize>, text: impl Into<String>) -> Label {
        Label {
            span,
            text: text.into(),
        }
    }
}

impl Problems {
    pub fn new(file_name: &str, source: &str) -> Problems {
        Problems {
            file_name: file_name.to_string(),
            source: Arc::from(source),
            errors: Vec::new(),
        }
    }

    pub fn push(
        &mut self,
        kind: SpecErrorKind,
        message: impl Into<String>,
        labels: Vec<Label>,
        help: impl Into<String>,
    ) {
        let labels = labels
            .into_iter()
            .enumerate()
            .map(|(i, label)| {
                let span = self.clamp(label.span);
                let span = (span.start, span.end - span.start);
                if i == 0 {
                    LabeledSpan::new_primary_with_span(Some(label.text), span)
                } else {
                    LabeledSpan::new_with_span(Some(label.text), span)
                }
            })
            .collect();
        self.errors.push(SpecError {
            kind,
            message: message.into(),
            help: help.into(),
            labels,
            source_code: NamedSource::new(&self.file_name, Arc::clone(&self.source)),
        });
    }

    /// Keeps a span inside the text and on character boundaries, so that rendering can never
    /// index out of bounds, whatever a parser reported.
    fn clamp(&self, span: Range<usize>) -> Range<usize> {
        let len = self.source.len();
        let mut start = span.start.min(len);
        while !self.source.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = span.end.clamp(start, len);
        while !self.source.is_char_boundary(end) {
            end += 1;
        }
        start..end
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The problems in file order; problems at one place keep the order they were found in.
    pub fn finish(mut self) -> SpecErrors {
        self.errors.sort_by_key(SpecError::offset);
        SpecErrors {
            file_name: self.file_name,
            errors: self.errors,
        }
    }
}
