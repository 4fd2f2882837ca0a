//! Source files and spans, turned into miette labels.
//!
//! Every error that points into gevulot.yaml carries a [`Span`] (byte offset and length) and the
//! [`Source`] it belongs to. Spans are plain data so that the validated graph, cached in binary
//! form, can still point into the YAML when a build-time check (an unset var) fails.

use std::collections::BTreeMap;
use std::sync::Arc;

use miette::{Diagnostic, NamedSource, ReportHandler, SourceSpan};
use serde::{Deserialize, Serialize};

/// A diagnostic as the user reads it: its code and message (once), the labelled snippet, the
/// help. `color` also means unicode; without it the width is fixed, so output is stable.
pub fn render(diag: &dyn Diagnostic, color: bool) -> String {
    struct Show<'a>(&'a dyn Diagnostic, miette::MietteHandler);
    impl std::fmt::Display for Show<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            self.1.debug(self.0, f)
        }
    }
    let opts = miette::MietteHandlerOpts::new().color(color).unicode(color);
    let opts = if color { opts } else { opts.width(100) };
    let text = Show(diag, opts.build()).to_string();
    format!("{}\n", text.trim_end())
}

/// A diagnostic as one JSON object (`"event": "error"`), for `--json`: its code, message, file,
/// 1-based line and column (of its primary label, else its first; `null` when it has none),
/// label and help.
pub fn json(diag: &dyn Diagnostic, file: &str) -> serde_json::Value {
    let labels: Vec<miette::LabeledSpan> = diag.labels().map(|l| l.collect()).unwrap_or_default();
    let label = labels.iter().find(|l| l.primary()).or(labels.first());
    let place = label.and_then(|l| {
        let contents = diag.source_code()?.read_span(l.inner(), 0, 0).ok()?;
        Some((contents.line() + 1, contents.column() + 1))
    });
    serde_json::json!({
        "event": "error",
        "code": diag.code().map(|c| c.to_string()),
        "message": diag.to_string(),
        "file": file,
        "line": place.map(|p| p.0),
        "column": place.map(|p| p.1),
        "label": label.and_then(|l| l.label()),
        "help": diag.help().map(|h| h.to_string()),
    })
}

/// A byte range in a source file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Span {
    pub offset: usize,
    pub len: usize,
}

impl Span {
    pub fn new(offset: usize, len: usize) -> Self {
        Span { offset, len }
    }
}

impl From<Span> for SourceSpan {
    fn from(s: Span) -> Self {
        SourceSpan::new(s.offset.into(), s.len)
    }
}

/// The text of a gevulot.yaml and the name it is shown under.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub text: Arc<String>,
}

impl Source {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Source { name: name.into(), text: Arc::new(text.into()) }
    }

    /// The miette source handle for a diagnostic.
    pub fn named(&self) -> NamedSource<Arc<String>> {
        NamedSource::new(&self.name, self.text.clone()).with_language("yaml")
    }

    /// 1-based line and column of a byte offset, for plain-text messages.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
        let col = before.rfind('\n').map_or(before.len(), |nl| before.len() - nl - 1) + 1;
        (line, col)
    }
}

/// The closest candidate to `name`, if it is close enough to be a likely typo.
/// Close enough means: few edits for the name's length (a swap of two letters counts as one),
/// or a high Jaro-Winkler similarity (shared prefixes, as in `stage-lib` / `stage-libs`).
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let max_edits = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter_map(|c| {
            let edits = strsim::osa_distance(name, c);
            let jw = strsim::jaro_winkler(name, c);
            (edits <= max_edits || jw > 0.85).then_some(((edits, std::cmp::Reverse((jw * 1e6) as u64)), c))
        })
        .min_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, c)| c)
}

/// "did you mean `x`?" help text, or nothing.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    did_you_mean(name, candidates).map(|c| format!("did you mean `{c}`?"))
}

/// Where each field of a built-in step is in the build file, for the plain-text errors found
/// while building (`FILE:LINE:COL: message`). Never part of a step's key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Positions {
    pub file: String,
    pub at: BTreeMap<String, (usize, usize)>,
}

impl Positions {
    pub fn new(source: &Source) -> Positions {
        Positions { file: source.name.clone(), at: BTreeMap::new() }
    }

    /// Record `field` at byte `offset` of `source` (the first time only).
    pub fn mark(&mut self, source: &Source, field: &str, offset: usize) {
        self.at.entry(field.to_string()).or_insert_with(|| source.line_col(offset));
    }

    /// `FILE:LINE:COL: ` for `field`, or nothing when it was not recorded.
    pub fn prefix(&self, field: &str) -> String {
        self.at.get(field).map(|(l, c)| format!("{}:{l}:{c}: ", self.file)).unwrap_or_default()
    }
}
