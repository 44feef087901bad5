//! Errors that point into a runbook: a message, a place (file:line:column
//! with the source line underlined) and a hint that says what to do next.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toml::de::{DeTable, DeValue};

/// A runbook's text, kept to turn byte offsets and value paths into places.
#[derive(Debug)]
pub struct Source {
    /// The file as the operator named it.
    pub path: PathBuf,
    /// The whole text.
    pub text: String,
}

impl Source {
    /// Wraps a file's text.
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Arc<Self> {
        Arc::new(Source {
            path: path.into(),
            text: text.into(),
        })
    }

    /// The byte range of the value at `path`, for example
    /// `steps[1].with.checks[0].url`. Falls back to the nearest ancestor
    /// that exists, so a missing key points at the table that lacks it.
    pub fn span_of(&self, path: &ValuePath) -> Option<Range<usize>> {
        let root = DeTable::parse(&self.text).ok()?;
        let mut best = root.span();
        let mut current: Option<&DeValue<'_>> = None;
        let mut table = Some(root.get_ref());
        for segment in &path.0 {
            let next = match (segment, table, current) {
                (Segment::Key(key), Some(table), _) => table
                    .iter()
                    .find(|(name, _)| name.get_ref().as_ref() == key.as_str())
                    .map(|(_, value)| value),
                (Segment::Index(index), _, Some(DeValue::Array(array))) => array.get(*index),
                _ => None,
            };
            let Some(next) = next else { break };
            best = next.span();
            current = Some(next.get_ref());
            table = next.get_ref().as_table();
        }
        Some(best)
    }

    /// 1-based line and column of a byte offset.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |index| index + 1);
        let column = self.text[line_start..offset].chars().count() + 1;
        (line, column)
    }

    /// The text of line `line` (1-based), without its end.
    pub fn line_text(&self, line: usize) -> &str {
        self.text.lines().nth(line - 1).unwrap_or("")
    }
}

/// One step of a path into the runbook's TOML tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// A path into the runbook's TOML tree, such as `steps[2].with.url`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValuePath(pub Vec<Segment>);

impl ValuePath {
    /// The path of a step's field.
    pub fn step(index: usize) -> Self {
        ValuePath(vec![Segment::Key("steps".into()), Segment::Index(index)])
    }

    /// This path with a key appended.
    pub fn key(&self, key: impl Into<String>) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Key(key.into()));
        path
    }

    /// This path with an index appended.
    pub fn index(&self, index: usize) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Index(index));
        path
    }

    /// This path with a serde-style path (`checks[1].url`) appended.
    pub fn join_dotted(&self, dotted: &str) -> Self {
        let mut path = self.clone();
        for part in dotted.split('.').filter(|part| !part.is_empty()) {
            let mut rest = part;
            if let Some(open) = rest.find('[') {
                if open > 0 {
                    path.0.push(Segment::Key(rest[..open].to_owned()));
                }
                rest = &rest[open..];
                while let Some(stripped) = rest.strip_prefix('[') {
                    let Some(close) = stripped.find(']') else {
                        break;
                    };
                    if let Ok(index) = stripped[..close].parse() {
                        path.0.push(Segment::Index(index));
                    }
                    rest = &stripped[close + 1..];
                }
            } else {
                path.0.push(Segment::Key(rest.to_owned()));
            }
        }
        path
    }
}

impl fmt::Display for ValuePath {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if position == 0 => write!(formatter, "{key}")?,
                Segment::Key(key) => write!(formatter, ".{key}")?,
                Segment::Index(index) => write!(formatter, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Where a diagnostic points.
#[derive(Debug, Clone)]
pub struct Place {
    /// The runbook file.
    pub source: Arc<Source>,
    /// Byte range in the file.
    pub span: Range<usize>,
}

/// One problem found in a runbook, before anything ran.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    /// What is wrong, lower case, no trailing period.
    pub message: String,
    /// Where, when known.
    pub place: Option<Place>,
    /// What to do about it.
    pub hint: Option<String>,
    /// The stable name of the kind of problem (`UnknownNeed`), when its
    /// maker gives one: for tests and tools, never shown to the operator.
    pub code: Option<&'static str>,
}

impl Diagnostic {
    /// A diagnostic with no place yet.
    pub fn new(message: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            place: None,
            hint: None,
            code: None,
        }
    }

    /// Names the kind of problem.
    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// Points the diagnostic at a byte range.
    pub fn at_span(mut self, source: &Arc<Source>, span: Range<usize>) -> Self {
        self.place = Some(Place {
            source: Arc::clone(source),
            span,
        });
        self
    }

    /// Points the diagnostic at a value in the runbook.
    pub fn at(self, source: &Arc<Source>, path: &ValuePath) -> Self {
        match source.span_of(path) {
            Some(span) => self.at_span(source, span),
            None => self,
        }
    }

    /// Adds a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The diagnostic for a script (`validate --output json`): `code`,
    /// `message`, `file`, `line`, `column` (1-based; null without a
    /// place) and `hint`.
    pub fn to_json(&self) -> serde_json::Value {
        let (file, line, column) = match &self.place {
            Some(place) => {
                let (line, column) = place.source.line_column(place.span.start);
                (
                    Some(place.source.path.display().to_string()),
                    Some(line),
                    Some(column),
                )
            }
            None => (None, None, None),
        };
        serde_json::json!({
            "code": self.code,
            "message": self.message,
            "file": file,
            "line": line,
            "column": column,
            "hint": self.hint,
        })
    }

    /// `file:line:column`, when the diagnostic has a place.
    pub fn location(&self) -> Option<String> {
        let place = self.place.as_ref()?;
        let (line, column) = place.source.line_column(place.span.start);
        Some(format!("{}:{line}:{column}", place.source.path.display()))
    }
}

impl fmt::Display for Diagnostic {
    /// Renders like a compiler: message, location, the line, a caret, a hint.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(formatter, "error: {}", self.message)?;
        if let Some(place) = &self.place {
            let source = &place.source;
            let (line, column) = source.line_column(place.span.start);
            let text = source.line_text(line);
            let gutter = line.to_string().len();
            let start_char = column - 1;
            let same_line_end = source.text[place.span.clone()]
                .find('\n')
                .map_or(place.span.end, |index| place.span.start + index);
            let width = source.text[place.span.start..same_line_end]
                .chars()
                .count()
                .max(1);
            writeln!(
                formatter,
                "{:gutter$}--> {}:{line}:{column}",
                "",
                source.path.display()
            )?;
            writeln!(formatter, "{:gutter$} |", "")?;
            writeln!(formatter, "{line} | {text}")?;
            writeln!(
                formatter,
                "{:gutter$} | {:start_char$}{}",
                "",
                "",
                "^".repeat(width)
            )?;
        }
        if let Some(hint) = &self.hint {
            writeln!(formatter, "  = hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every problem found in a runbook: validation reports them all at once.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Records a problem.
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.0.push(diagnostic);
    }

    /// Whether no problem was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when no problem was found.
    pub fn into_result<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for diagnostic in &self.0 {
            writeln!(formatter, "{diagnostic}")?;
        }
        let count = self.0.len();
        write!(
            formatter,
            "{count} problem{} found; nothing was run",
            if count == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for Diagnostics {}

/// The known name closest to `given`, when it is close enough to be a typo.
pub fn did_you_mean<'a>(given: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|candidate| (edit_distance(given, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= (candidate.len().max(given.len()) / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance, with adjacent swaps counted as one edit.
fn edit_distance(left: &str, right: &str) -> usize {
    let left: Vec<char> = left.chars().collect();
    let right: Vec<char> = right.chars().collect();
    let mut table = vec![vec![0_usize; right.len() + 1]; left.len() + 1];
    for (index, row) in table.iter_mut().enumerate() {
        row[0] = index;
    }
    for (column, cell) in table[0].iter_mut().enumerate() {
        *cell = column;
    }
    for i in 1..=left.len() {
        for j in 1..=right.len() {
            let cost = usize::from(left[i - 1] != right[j - 1]);
            let mut best = (table[i - 1][j] + 1)
                .min(table[i][j - 1] + 1)
                .min(table[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && left[i - 1] == right[j - 2] && left[i - 2] == right[j - 1] {
                best = best.min(table[i - 2][j - 2] + 1);
            }
            table[i][j] = best;
        }
    }
    table[left.len()][right.len()]
}

/// Reads serde's "unknown field `x`, expected one of `a`, `b`" into the
/// field and the allowed names.
pub fn parse_unknown_field(message: &str) -> Option<(&str, Vec<&str>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let allowed = rest.split('`').skip(1).step_by(2).collect::<Vec<_>>();
    Some((field, allowed))
}

/// A path relative to the runbook's folder, or absolute as given.
pub fn relative_to(runbook: &Path, path: &str) -> PathBuf {
    let candidate = Path::new(path);
    if candidate.is_absolute() {
        candidate.to_path_buf()
    } else {
        runbook
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNBOOK: &str = "[runbook]\nname = \"x\"\n\n[[steps]]\nid = \"a\"\nwith.checks = [{ url = \"http://a\" }, { url = \"http://b\" }]\n";

    #[test]
    fn a_nested_value_is_found_by_its_path() {
        let source = Source::new("r.toml", RUNBOOK);
        let path = ValuePath::step(0).join_dotted("with.checks[1].url");
        let span = source.span_of(&path).expect("span");
        assert_eq!(&source.text[span.clone()], "\"http://b\"");
        assert_eq!(source.line_column(span.start), (6, 46));
    }

    #[test]
    fn a_missing_key_points_at_the_nearest_ancestor() {
        let source = Source::new("r.toml", RUNBOOK);
        let path = ValuePath::step(0).key("nope");
        let span = source.span_of(&path).expect("span");
        assert!(source.text[span].starts_with("id = \"a\"") || source.line_column(0) == (1, 1));
    }

    #[test]
    fn a_typo_gets_a_suggestion_and_a_stranger_does_not() {
        assert_eq!(did_you_mean("usez", ["id", "uses", "with"]), Some("uses"));
        assert_eq!(
            did_you_mean("expect_stauts", ["expect_status", "expect_json"]),
            Some("expect_status")
        );
        assert_eq!(did_you_mean("banana", ["id", "uses", "with"]), None);
    }

    #[test]
    fn serde_unknown_field_messages_are_understood() {
        let (field, allowed) =
            parse_unknown_field("unknown field `usez`, expected one of `id`, `uses`").unwrap();
        assert_eq!(field, "usez");
        assert_eq!(allowed, ["id", "uses"]);
    }

    #[test]
    fn a_diagnostic_renders_location_line_and_hint() {
        let source = Source::new("r.toml", RUNBOOK);
        let rendered = Diagnostic::new("bad url")
            .at(
                &source,
                &ValuePath::step(0).join_dotted("with.checks[0].url"),
            )
            .hint("fix it")
            .to_string();
        assert!(rendered.contains("--> r.toml:6:24"), "{rendered}");
        assert!(rendered.contains("^^^^^^^^^^"), "{rendered}");
        assert!(rendered.contains("= hint: fix it"), "{rendered}");
    }
}
