//! gevulot.yaml below the step kinds: reading its values with their spans ([`read`]),
//! expanding vars ([`mod@expand`]), the errors validation raises ([`error`]) and the
//! [`Validator`] that `config` and every step kind's `validate` report through. It knows
//! values, paths and vars, not targets or kinds.

pub mod error;
pub mod events;
pub mod expand;
pub mod read;

use std::borrow::Cow;

use self::error::ConfigError;
use self::expand::{expand, VarProblem, Vars};
use self::read::Strings;
use crate::diag::{suggest, Source, Span};
use crate::paths::{is_glob, normalize_abs, normalize_rel, PathSpec};

/// A value read from gevulot.yaml and where it is. `referenced` is where the value is used: the
/// alias (`*name`) for a value an alias copies, else the value itself; `defined` is where it is
/// written (the anchored node). Both are byte ranges of the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Spanned<T> {
    pub value: T,
    pub referenced: Span,
    pub defined: Span,
}

/// As its value alone: what the JSON Schema shows as a field's default.
impl<T: serde::Serialize> serde::Serialize for Spanned<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

/// The validation of one gevulot.yaml: its source, the errors found so far (every one is
/// collected, so that one run reports them all) and the vars. `config` checks the file's
/// shape with it and hands it to each step kind's `validate`, which reports its own errors
/// through it.
pub(crate) struct Validator<'a> {
    pub(crate) src: &'a Source,
    pub(crate) errors: Vec<ConfigError>,
    /// Owned while the vars are read and resolved; borrowed by the validators that check the
    /// targets on every core, which only read them.
    pub(crate) vars: Cow<'a, Vars>,
    /// The top level of the file was read without errors. Otherwise an unknown `${name}` or
    /// `default` may name what the broken part declares, and is not reported.
    pub(crate) top_ok: bool,
}

impl Validator<'_> {
    /// Report an invalid field at `loc`.
    pub(crate) fn invalid(&mut self, message: String, loc: &Span, label: &str, help: &str) {
        self.errors.push(ConfigError::Invalid {
            message,
            src: self.src.named(),
            span: (*loc).into(),
            label: label.into(),
            help: Some(help.into()),
        });
    }

    /// A damaged built-in step: only its vars are checked, and it has no step.
    pub(crate) fn vars_only<T: Strings, S>(&mut self, raw: &T, unset: &mut Vec<(String, Span)>) -> Option<S> {
        let mut strings = Vec::new();
        raw.strings(&mut strings);
        for s in strings {
            self.expand_checked(s, unset);
        }
        None
    }

    /// Expand vars in one YAML string, reporting problems at the exact `${...}` where possible.
    pub(crate) fn expand(&mut self, s: &Spanned<String>, unset: &mut Vec<(String, Span)>) -> String {
        self.expand_checked(s, unset).0
    }

    /// [`Validator::expand`], and whether the value is whole: no undefined var, no unclosed
    /// `${`. A check of a value that is not whole would be a follow-on error (an undefined var
    /// expands to nothing), so callers skip it.
    pub(crate) fn expand_checked(
        &mut self,
        s: &Spanned<String>,
        unset: &mut Vec<(String, Span)>,
    ) -> (String, bool) {
        let (out, problems) = expand(&s.value, &self.vars);
        let whole = problems.iter().all(|p| matches!(p, VarProblem::Unset { .. }));
        for p in problems {
            self.report_var_problem(s, p, unset);
        }
        (out, whole)
    }

    /// An input path field: expanded and checked, or `None` (reported, or not whole).
    pub(crate) fn input(
        &mut self,
        s: &Spanned<String>,
        target: &str,
        unset: &mut Vec<(String, Span)>,
    ) -> Option<PathSpec> {
        let (path, whole) = self.expand_checked(s, unset);
        if !whole {
            return None;
        }
        self.input_path(&path, s.referenced, target)
    }

    /// An output path field: expanded and checked, or `None` (reported, or not whole).
    pub(crate) fn output(
        &mut self,
        s: &Spanned<String>,
        target: &str,
        unset: &mut Vec<(String, Span)>,
    ) -> Option<PathSpec> {
        let (path, whole) = self.expand_checked(s, unset);
        if !whole {
            return None;
        }
        self.output_path(&path, s.referenced, target)
    }

    pub(crate) fn report_var_problem(
        &mut self,
        s: &Spanned<String>,
        p: VarProblem,
        unset: &mut Vec<(String, Span)>,
    ) {
        match p {
            VarProblem::Undefined { name, at } if name.is_empty() => self.errors.push(ConfigError::Invalid {
                message: "`${}` names no var".into(),
                src: self.src.named(),
                span: self.inner_span(s, at).into(),
                label: "empty var name".into(),
                help: Some("write `${name}` for a var, or `$$` for a literal `$`".into()),
            }),
            // Not knowing every var, an unknown one may be declared in the part that is broken.
            VarProblem::Undefined { .. } if !self.top_ok => {}
            VarProblem::Undefined { name, at } => {
                let help = match suggest(&name, self.vars.keys().map(String::as_str)) {
                    Some(dym) => format!("{dym} (write `$${{{name}}}` to pass `${{{name}}}` to the shell)"),
                    None => format!(
                        "declare it under `vars:` or pass `--set {name}=VALUE`; write `$${{{name}}}` to pass `${{{name}}}` to the shell"
                    ),
                };
                self.errors.push(ConfigError::UndefinedVar {
                    name,
                    src: self.src.named(),
                    span: self.inner_span(s, at).into(),
                    help,
                });
            }
            VarProblem::Unset { name, at } => unset.push((name, self.inner_span(s, at))),
            VarProblem::Unclosed { at } => self.errors.push(ConfigError::UnclosedVar {
                src: self.src.named(),
                span: self.inner_span(s, at).into(),
            }),
        }
    }

    /// The span of `at` (a byte range in the value) inside the source, when the value is written
    /// literally there (plain or quoted without escapes); else the whole value.
    fn inner_span(&self, s: &Spanned<String>, at: (usize, usize)) -> Span {
        let whole = s.referenced;
        let written = self.src.text.get(whole.offset..whole.offset + whole.len).unwrap_or("");
        if written == s.value {
            return Span::new(whole.offset + at.0, at.1);
        }
        // Quoted, block (`|`) and folded scalars: the reference is the k-th occurrence of the
        // same text in the value, so point at the k-th occurrence in the source.
        let reference = &s.value[at.0..at.0 + at.1];
        let k = s.value[..at.0].matches(reference).count();
        match written.match_indices(reference).nth(k) {
            Some((i, _)) => Span::new(whole.offset + i, at.1),
            None => whole,
        }
    }

    pub(crate) fn input_path(&mut self, path: &str, span: Span, target: &str) -> Option<PathSpec> {
        let glob = is_glob(path);
        if path.starts_with('/') {
            return Some(PathSpec { path: normalize_abs(path), glob, span });
        }
        match normalize_rel(path) {
            Some(p) if p == ".gvbuild" || p.starts_with(".gvbuild/") => {
                self.errors.push(ConfigError::Invalid {
                    message: format!("input `{path}` of target `{target}` cannot be used"),
                    src: self.src.named(),
                    span: span.into(),
                    label: "`.gvbuild/` is gvbuild's own: no step sees it".into(),
                    help: Some(
                        "name the files the step reads; gvbuild's state and cache are never inputs".into(),
                    ),
                });
                None
            }
            Some(p) => Some(PathSpec { path: p, glob, span }),
            None => {
                self.errors.push(ConfigError::InputOutside {
                    path: path.into(),
                    target: target.into(),
                    src: self.src.named(),
                    span: span.into(),
                });
                None
            }
        }
    }

    pub(crate) fn output_path(&mut self, path: &str, span: Span, target: &str) -> Option<PathSpec> {
        if is_glob(path) {
            self.errors.push(ConfigError::Invalid {
                message: format!("output `{path}` of target `{target}` is a glob"),
                src: self.src.named(),
                span: span.into(),
                label: "outputs are exact paths".into(),
                help: Some("name the file, or the folder that holds the files".into()),
            });
            return None;
        }
        match normalize_rel(path).filter(|p| !path.starts_with('/') && p != ".") {
            Some(p) => Some(PathSpec { path: p, glob: false, span }),
            None => {
                self.errors.push(ConfigError::OutputOutside {
                    path: path.into(),
                    target: target.into(),
                    src: self.src.named(),
                    span: span.into(),
                });
                None
            }
        }
    }
}
