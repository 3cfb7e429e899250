//! A small typed decoder over marked-yaml's spanned tree. Every getter reports its problem with
//! the position of the offending node and returns `None`, so one pass over a file collects all
//! of its errors instead of stopping at the first, as a serde decoder would.

use std::{net::IpAddr, path::Path, str::FromStr, time::Duration};

use marked_yaml::{
    LoadError, LoaderOptions, Node, Span,
    types::{MarkedMappingNode, MarkedScalarNode},
};

use super::{
    Source,
    error::{ConfigError, Position},
};

/// The errors and warnings of one file, collected while decoding it.
#[derive(Debug)]
pub(super) struct Diagnostics<'f> {
    pub file: &'f Path,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
}

impl<'f> Diagnostics<'f> {
    pub fn new(file: &'f Path) -> Self {
        Self { file, errors: Vec::new(), warnings: Vec::new() }
    }

    pub fn error(&mut self, at: Option<Position>, message: impl Into<String>) {
        self.errors.push(ConfigError::new(self.file, at, message));
    }

    pub fn warning(&mut self, at: Option<Position>, message: impl Into<String>) {
        self.warnings.push(ConfigError::new(self.file, at, message));
    }
}

pub(super) fn position(span: &Span) -> Option<Position> {
    span.start().map(|marker| Position { line: marker.line(), col: marker.column() })
}

/// Parses one file into its top-level mapping. YAML that does not parse is one error: the parser
/// cannot go on past it. Anchors, aliases and tags are refused (marked-yaml does), and so is a
/// second document, which the parser would otherwise drop without a word.
pub(super) fn parse_file(text: &str, diagnostics: &mut Diagnostics<'_>) -> Option<Node> {
    if let Some(line) = second_document_line(text) {
        let message = "a second YAML document (---) in one file is not supported; use another file";
        diagnostics.error(Some(Position { line, col: 1 }), message);
        return None;
    }
    let options = LoaderOptions::default().error_on_duplicate_keys(true).prevent_coercion(true);
    match marked_yaml::parse_yaml_with_options(0, text, options) {
        Ok(node) => Some(node),
        Err(error) => {
            let (at, message) = describe_load_error(&error);
            diagnostics.error(at, message);
            None
        }
    }
}

fn describe_load_error(error: &LoadError) -> (Option<Position>, String) {
    let at = |marker: &marked_yaml::Marker| Some(Position { line: marker.line(), col: marker.column() });
    match error {
        LoadError::TopLevelMustBeMapping(marker) | LoadError::TopLevelMustBeSequence(marker) => {
            (at(marker), "the top level of a config file must be a mapping".to_owned())
        }
        LoadError::UnexpectedAnchor(marker) => {
            (at(marker), "YAML anchors and aliases are not supported".to_owned())
        }
        LoadError::UnexpectedTag(marker) => (at(marker), "YAML tags are not supported".to_owned()),
        LoadError::MappingKeyMustBeScalar(marker) => {
            (at(marker), "mapping keys must be plain words".to_owned())
        }
        LoadError::ScanError(marker, scan) => (at(marker), format!("invalid YAML: {}", scan.info())),
        LoadError::DuplicateKey(duplicate) => {
            let first = position(duplicate.prev_key.span());
            let message = format!(
                "duplicate key {:?} (first at {})",
                duplicate.key.as_str(),
                first.map_or_else(|| "?".to_owned(), |p| format!("line {}, column {}", p.line, p.col)),
            );
            (position(duplicate.key.span()), message)
        }
    }
}

/// Moves each position that lies past the end of its file to the end of that file: at the end
/// of a file that does not end in a line break, marked-yaml's scanner stands on a line after
/// the last, and so do the nodes it makes there (an empty key, a missing value).
pub(super) fn within_files(errors: &mut [ConfigError], sources: &[Source]) {
    for error in errors {
        let source = sources.iter().find(|source| source.path == error.file);
        if let (Some(source), Some(at)) = (source, error.position) {
            error.position = Some(within(&source.text, at));
        }
    }
}

/// `at`, or the end of `text` when `at` lies past it. Lines end as YAML ends them: CR LF, LF,
/// or a CR alone.
fn within(text: &str, at: Position) -> Position {
    let (mut lines, mut last_line_chars) = (1, 0);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\n' || c == '\r' {
            if c == '\r' && chars.peek() == Some(&'\n') {
                chars.next();
            }
            (lines, last_line_chars) = (lines + 1, 0);
        } else {
            last_line_chars += 1;
        }
    }
    if at.line <= lines { at } else { Position { line: lines, col: last_line_chars + 1 } }
}

/// The line of a `---` that starts a second document, if any. At column 1 a `---` cannot be
/// inside a block scalar of a top-level mapping, whose content is indented.
fn second_document_line(text: &str) -> Option<usize> {
    let mut content_seen = false;
    for (index, line) in text.lines().enumerate() {
        let is_marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if is_marker && content_seen {
            return Some(index + 1);
        }
        let trimmed = line.trim_start();
        if !is_marker && !trimmed.is_empty() && !trimmed.starts_with('#') && !trimmed.starts_with('%') {
            content_seen = true;
        }
    }
    None
}

/// The units humantime's `parse_duration` knows, longest first within each group (so that a
/// regular expression tries `ms` before `m`).
const DURATION_UNITS: &[&str] = &[
    "nanos", "nsec", "ns", "usec", "us", "\u{b5}s", "millis", "msec", "ms", "seconds", "second", "secs",
    "sec", "s", "minutes", "minute", "mins", "min", "m", "hours", "hour", "hrs", "hr", "h", "days", "day",
    "d", "weeks", "week", "wks", "wk", "w", "months", "month", "M", "years", "year", "yrs", "yr", "y",
];

/// What [`Diagnostics::duration`] accepts, as a regular expression: numbers (a fraction allowed)
/// each with a unit, white space between them optional. humantime also takes a few oddities this
/// leaves out (digits split by spaces), and refuses what overflows.
pub(super) fn duration_pattern() -> String {
    format!(r"^\s*([0-9]+(\.[0-9]+)?\s*({})\s*)+$", DURATION_UNITS.join("|"))
}

/// A plain empty, `~` or `null` scalar.
pub(super) fn is_null(node: &Node) -> bool {
    matches!(node, Node::Scalar(scalar) if scalar.may_coerce()
        && matches!(scalar.as_str(), "" | "~" | "null" | "Null" | "NULL"))
}

/// How a node that had the wrong type is described in a message.
fn found(node: &Node) -> String {
    match node {
        _ if is_null(node) => "nothing".to_owned(),
        Node::Scalar(scalar) if !scalar.may_coerce() => format!("the quoted string {:?}", scalar.as_str()),
        Node::Scalar(scalar) => format!("{:?}", scalar.as_str()),
        Node::Mapping(_) => "a mapping".to_owned(),
        Node::Sequence(_) => "a list".to_owned(),
    }
}

/// A mapping whose keys were checked against the allowed set.
#[derive(Clone, Copy, Debug)]
pub(super) struct Map<'n> {
    node: &'n MarkedMappingNode,
    /// Prefixes field names in messages (`health` gives `health.interval`); empty for none.
    context: &'static str,
}

/// One key of a mapping and its value, or one item of a list value (which keeps its key's name).
#[derive(Clone, Copy, Debug)]
pub(super) struct Field<'n> {
    name: &'n str,
    key_at: Option<Position>,
    pub value: &'n Node,
    context: &'static str,
}

impl<'n> Map<'n> {
    pub fn get(&self, key: &str) -> Option<Field<'n>> {
        self.node.get_key_value(key).map(|(name, value)| Field {
            name: name.as_str(),
            key_at: position(name.span()),
            value,
            context: self.context,
        })
    }

    pub fn keys(&self) -> impl Iterator<Item = &'n MarkedScalarNode> {
        self.node.keys()
    }

    /// Where the mapping starts: its first key, which is where an editor would look.
    pub fn position(&self) -> Option<Position> {
        self.node.keys().next().and_then(|key| position(key.span())).or_else(|| position(self.node.span()))
    }
}

impl<'n> Field<'n> {
    /// The name shown in messages, like `health.interval`.
    pub fn label(&self) -> String {
        if self.context.is_empty() { self.name.to_owned() } else { format!("{}.{}", self.context, self.name) }
    }

    pub fn key_position(&self) -> Option<Position> {
        self.key_at
    }

    /// Where an error about the value points: the value, or its key when the value is empty
    /// (an empty value's position is the start of the next line).
    pub fn position(&self) -> Option<Position> {
        match self.value {
            Node::Scalar(scalar) if scalar.as_str().is_empty() && scalar.may_coerce() => self.key_at,
            value => position(value.span()),
        }
    }

    /// An item of this field's list value, reported under the field's name.
    pub fn item(&self, value: &'n Node) -> Self {
        Self { value, ..*self }
    }
}

impl Diagnostics<'_> {
    /// Checks that `node` is a mapping whose keys are all in `allowed`; unknown keys are errors,
    /// and the known ones are still decoded. A null node is an empty mapping.
    pub fn mapping<'n>(
        &mut self,
        node: &'n Node,
        at: Option<Position>,
        context: &'static str,
        allowed: &[&str],
    ) -> Option<Map<'n>> {
        let map = self.any_mapping(node, at, context)?;
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                let place = if context.is_empty() { "the top level" } else { context };
                let message = format!(
                    "unknown key {:?} in {place}; expected one of: {}",
                    key.as_str(),
                    allowed.join(", ")
                );
                self.error(position(key.span()), message);
            }
        }
        Some(map)
    }

    /// A mapping whose keys are data (user names, header names) rather than a fixed set.
    pub fn any_mapping<'n>(
        &mut self,
        node: &'n Node,
        at: Option<Position>,
        context: &'static str,
    ) -> Option<Map<'n>> {
        match node {
            Node::Mapping(mapping) => Some(Map { node: mapping, context }),
            _ if is_null(node) => Some(Map { node: &EMPTY_MAPPING, context }),
            _ => {
                let what = if context.is_empty() { "this" } else { context };
                self.error(at, format!("{what}: expected a mapping, found {}", found(node)));
                None
            }
        }
    }

    /// The field `key` of `map`, or an error at the mapping when it is missing.
    pub fn required<'n>(&mut self, map: &Map<'n>, key: &str) -> Option<Field<'n>> {
        let field = map.get(key);
        if field.is_none() {
            let place = if map.context.is_empty() { "the top level" } else { map.context };
            self.error(map.position(), format!("missing required key {key:?} in {place}"));
        }
        field
    }

    pub fn sequence<'n>(&mut self, field: Field<'n>) -> Option<&'n [Node]> {
        match field.value {
            Node::Sequence(sequence) => Some(sequence.as_slice()),
            value if is_null(value) => Some(&[]),
            value => {
                self.error(
                    field.position(),
                    format!("{}: expected a list, found {}", field.label(), found(value)),
                );
                None
            }
        }
    }

    /// Any non-null scalar, as written.
    pub fn string<'n>(&mut self, field: Field<'n>) -> Option<&'n str> {
        self.scalar(field, "a string")
    }

    /// Any non-null scalar, as written; `expected` describes it when the node is something else.
    fn scalar<'n>(&mut self, field: Field<'n>, expected: &str) -> Option<&'n str> {
        match field.value {
            Node::Scalar(scalar) if !is_null(field.value) => Some(scalar.as_str()),
            value => {
                self.error(
                    field.position(),
                    format!("{}: expected {expected}, found {}", field.label(), found(value)),
                );
                None
            }
        }
    }

    /// An absolute path, or the bare file name of a systemd credential (`LoadCredential=`, read
    /// from `$CREDENTIALS_DIRECTORY`); [`super::keys::CREDENTIAL_PATH`] is the same rule.
    pub fn credential_path<'n>(&mut self, field: Field<'n>) -> Option<&'n str> {
        let path = self.string(field)?;
        if !path.starts_with('/') && (path.is_empty() || path.contains('/') || path == "." || path == "..") {
            let message = format!(
                "{}: {path:?} must be an absolute path, or the bare name of a systemd credential",
                field.label()
            );
            self.error(field.position(), message);
            return None;
        }
        Some(path)
    }

    /// An unquoted decimal integer in `min..=max`.
    pub fn integer<T: TryFrom<u64>>(&mut self, field: Field<'_>, min: u64, max: u64) -> Option<T> {
        let parsed = match field.value {
            Node::Scalar(scalar)
                if scalar.may_coerce() && scalar.as_str().bytes().all(|b| b.is_ascii_digit()) =>
            {
                scalar.as_str().parse::<u64>().ok()
            }
            _ => None,
        };
        match parsed.filter(|value| (min..=max).contains(value)).and_then(|value| T::try_from(value).ok()) {
            Some(value) => Some(value),
            None => {
                let message = format!(
                    "{}: expected an integer from {min} to {max}, found {}",
                    field.label(),
                    found(field.value)
                );
                self.error(field.position(), message);
                None
            }
        }
    }

    /// A humantime duration such as `500ms`, `30s` or `5m`.
    pub fn duration(&mut self, field: Field<'_>) -> Option<Duration> {
        let text = self.scalar(field, "a duration like 500ms, 30s or 5m")?;
        match humantime::parse_duration(text) {
            Ok(duration) => Some(duration),
            Err(error) => {
                let message = format!(
                    "{}: {text:?} is not a duration ({error}); write it like 500ms, 30s or 5m",
                    field.label()
                );
                self.error(field.position(), message);
                None
            }
        }
    }

    /// One of a fixed set of words.
    pub fn choice<'c>(&mut self, field: Field<'_>, choices: &[&'c str]) -> Option<&'c str> {
        let text = self.scalar(field, &format!("one of: {}", choices.join(", ")))?;
        let choice = choices.iter().find(|choice| **choice == text).copied();
        if choice.is_none() {
            let message =
                format!("{}: unknown value {text:?}; expected one of: {}", field.label(), choices.join(", "));
            self.error(field.position(), message);
        }
        choice
    }

    pub fn ip(&mut self, field: Field<'_>) -> Option<IpAddr> {
        self.parsed(field, "an IPv4 or IPv6 address")
    }

    /// A string parsed with `FromStr`; `expected` completes "is not ...".
    pub fn parsed<T: FromStr>(&mut self, field: Field<'_>, expected: &str) -> Option<T> {
        let text = self.scalar(field, expected)?;
        let parsed = text.parse().ok();
        if parsed.is_none() {
            self.error(field.position(), format!("{}: {text:?} is not {expected}", field.label()));
        }
        parsed
    }
}

static EMPTY_MAPPING: std::sync::LazyLock<MarkedMappingNode> =
    std::sync::LazyLock::new(|| MarkedMappingNode::new_empty(Span::new_blank()));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_document_is_found_after_content_only() {
        assert_eq!(second_document_line("---\na: 1\n"), None);
        assert_eq!(second_document_line("# c\n---\na: 1\n---\nb: 2\n"), Some(4));
        assert_eq!(second_document_line("a: |\n  ---\n"), None);
    }

    /// Where the first error of `text`, validated as a file of its own, is placed.
    fn first_error_at(text: &str) -> Option<Position> {
        let errors = super::super::validate(&[Source::new("c.yaml", text)], "h").unwrap_err();
        errors.0[0].position
    }

    /// Found by the fuzz target `config_validate`: errors at the end of a file that does not end
    /// in a line break were placed on a line after the last: an unclosed flow sequence, and an
    /// empty key (`? `). A lone CR ends a line as LF does, and CR LF ends one line.
    #[test]
    fn an_error_at_the_end_of_a_file_is_placed_inside_it() {
        assert_eq!(first_error_at("eudprudpvi}cesserudpvi}ces: [\u{1}"), Some(Position { line: 1, col: 31 }));
        assert_eq!(first_error_at("a: [1,\n"), Some(Position { line: 2, col: 1 }));
        assert_eq!(first_error_at("ignore: []\n? "), Some(Position { line: 2, col: 3 }));
        assert_eq!(first_error_at("b: 1\ra: [1,\r\nc: d"), Some(Position { line: 3, col: 1 }));
    }

    #[test]
    fn null_is_plain_empty_tilde_or_null() {
        let parsed = marked_yaml::parse_yaml_with_options(
            0,
            "a:\nb: ~\nc: null\nd: ''\ne: x\n",
            LoaderOptions::default().prevent_coercion(true),
        )
        .expect("parse");
        let map = parsed.as_mapping().expect("mapping");
        let nulls: Vec<bool> =
            ["a", "b", "c", "d", "e"].iter().map(|k| is_null(map.get_node(k).unwrap())).collect();
        assert_eq!(nulls, [true, true, true, false, false]);
    }
}
