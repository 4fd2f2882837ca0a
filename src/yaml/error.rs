//! Errors in a gevulot.yaml, each pointing at the exact place in the file.

use std::sync::Arc;

use miette::{Diagnostic, NamedSource, SourceSpan};
use thiserror::Error;

type Src = NamedSource<Arc<String>>;

// The codes stay `gvbuild::config::*` though the enum lives in `yaml`: users and tools match
// on them (`--json` errors carry them), and they name what the user wrote, the config.
#[derive(Debug, Error, Diagnostic)]
pub enum ConfigError {
    #[error("{message}")]
    #[diagnostic(code(gvbuild::config::yaml))]
    Yaml {
        message: String,
        #[source_code]
        src: Src,
        #[label("{label}")]
        span: SourceSpan,
        label: String,
        #[help]
        help: Option<String>,
    },

    #[error("invalid target name `{name}`")]
    #[diagnostic(
        code(gvbuild::config::target_name),
        help("target names use letters, digits, `_`, `-` and `.`")
    )]
    BadName {
        name: String,
        #[source_code]
        src: Src,
        #[label("not a valid target name")]
        span: SourceSpan,
    },

    #[error("{message}")]
    #[diagnostic(code(gvbuild::config::wrong_type))]
    WrongType {
        message: String,
        #[source_code]
        src: Src,
        #[label("{label}")]
        span: SourceSpan,
        label: String,
        #[help]
        help: Option<String>,
    },

    #[error("{message}")]
    #[diagnostic(code(gvbuild::config::unknown_key))]
    UnknownKey {
        message: String,
        #[source_code]
        src: Src,
        #[label("unknown key")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    #[error("{message}")]
    #[diagnostic(code(gvbuild::config::missing_key))]
    MissingKey {
        message: String,
        #[source_code]
        src: Src,
        #[label("{label}")]
        span: SourceSpan,
        label: String,
        #[help]
        help: String,
    },

    #[error("{message}")]
    #[diagnostic(code(gvbuild::config::duplicate_key))]
    DuplicateKey {
        message: String,
        #[source_code]
        src: Src,
        #[label("given again here")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    #[error("target `{target}` depends on unknown target `{dep}`")]
    #[diagnostic(code(gvbuild::config::unknown_dep))]
    UnknownDep {
        target: String,
        dep: String,
        #[source_code]
        src: Src,
        #[label("no target of this name")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("--set {name}=...: this gevulot.yaml declares no var `{name}`")]
    #[diagnostic(code(gvbuild::config::unknown_set))]
    UnknownSet {
        name: String,
        #[help]
        help: String,
    },

    #[error("vars use each other in a cycle: {cycle}")]
    #[diagnostic(
        code(gvbuild::config::var_cycle),
        help("a var's value may use other vars (`${{name}}`), but not itself through them")
    )]
    VarCycle {
        cycle: String,
        #[source_code]
        src: Src,
        #[label("this value starts the cycle")]
        span: SourceSpan,
    },

    #[error("vars use each other in a cycle: {cycle}")]
    #[diagnostic(
        code(gvbuild::config::var_cycle),
        help("a var's value may use other vars (`${{name}}`), but not itself through them")
    )]
    VarCycleSet { cycle: String },

    #[error("`default` names unknown target `{name}`")]
    #[diagnostic(code(gvbuild::config::unknown_default))]
    UnknownDefault {
        name: String,
        #[source_code]
        src: Src,
        #[label("no target of this name")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("dependency cycle: {cycle}")]
    #[diagnostic(
        code(gvbuild::config::cycle),
        help(
            "a target cannot depend on itself, directly or through other targets; remove one of these deps"
        )
    )]
    Cycle {
        cycle: String,
        #[source_code]
        src: Src,
        #[label(collection, "part of the cycle")]
        spans: Vec<SourceSpan>,
    },

    #[error("target `{target}` has no step and no deps")]
    #[diagnostic(
        code(gvbuild::config::empty_target),
        help("give it a step (`run: ...`) or make it a group of other targets (`deps: [...]`)")
    )]
    EmptyTarget {
        target: String,
        #[source_code]
        src: Src,
        #[label("this target does nothing")]
        span: SourceSpan,
    },

    #[error("`{field}` needs a step, but target `{target}` has none")]
    #[diagnostic(
        code(gvbuild::config::group_field),
        help("a group target has only `deps` and `description`; add `run:` to make it a step")
    )]
    GroupField {
        target: String,
        field: String,
        #[source_code]
        src: Src,
        #[label("only meaningful with a step")]
        span: SourceSpan,
    },

    #[error("output `{path}` is claimed by both `{first}` and `{second}`")]
    #[diagnostic(code(gvbuild::config::output_conflict), help("each output belongs to exactly one target"))]
    OutputConflict {
        path: String,
        first: String,
        second: String,
        #[source_code]
        src: Src,
        #[label("claimed here by `{first}`")]
        first_span: SourceSpan,
        #[label("and here by `{second}`")]
        second_span: SourceSpan,
    },

    #[error("output `{inner}` of `{inner_target}` lies inside output `{outer}` of `{outer_target}`")]
    #[diagnostic(
        code(gvbuild::config::output_nested),
        help("outputs may not contain each other: the outer one is removed before its step runs")
    )]
    OutputNested {
        inner: String,
        inner_target: String,
        outer: String,
        outer_target: String,
        #[source_code]
        src: Src,
        #[label("this output")]
        inner_span: SourceSpan,
        #[label("contains it")]
        outer_span: SourceSpan,
    },

    #[error("output `{path}` of target `{target}` is outside the project folder")]
    #[diagnostic(
        code(gvbuild::config::output_outside),
        help(
            "outputs are relative paths inside the folder of gevulot.yaml, without `..` climbing out of it"
        )
    )]
    OutputOutside {
        path: String,
        target: String,
        #[source_code]
        src: Src,
        #[label("outside the project")]
        span: SourceSpan,
    },

    #[error("input `{path}` of target `{target}` climbs out of the project folder")]
    #[diagnostic(
        code(gvbuild::config::input_outside),
        help("name files outside the project by absolute path (for example /usr/include/stdio.h)")
    )]
    InputOutside {
        path: String,
        target: String,
        #[source_code]
        src: Src,
        #[label("`..` leaves the project folder")]
        span: SourceSpan,
    },

    #[error("dependency cycle: {cycle}, through the dependency of `{target}` on `{owner}` inferred from input `{path}`")]
    #[diagnostic(code(gvbuild::config::inferred_cycle))]
    InferredCycle {
        path: String,
        output: String,
        target: String,
        owner: String,
        cycle: String,
        #[source_code]
        src: Src,
        #[label(collection)]
        labels: Vec<miette::LabeledSpan>,
        #[help]
        help: String,
    },

    #[error("input `{path}` of target `{target}` overlaps its own output `{output}`")]
    #[diagnostic(
        code(gvbuild::config::input_is_output),
        help("a step cannot read what it writes: outputs are removed before it runs")
    )]
    InputIsOwnOutput {
        path: String,
        output: String,
        target: String,
        #[source_code]
        src: Src,
        #[label("this input")]
        span: SourceSpan,
    },

    #[error("undefined var `{name}`")]
    #[diagnostic(code(gvbuild::config::undefined_var))]
    UndefinedVar {
        name: String,
        #[source_code]
        src: Src,
        #[label("no var of this name")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    #[error("var `{name}` has no value, and target `{target}` uses it")]
    #[diagnostic(code(gvbuild::config::unset_var))]
    UnsetVar {
        name: String,
        target: String,
        #[source_code]
        src: Src,
        #[label("used here")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    #[error("`${{` without a closing `}}`")]
    #[diagnostic(
        code(gvbuild::config::unclosed_var),
        help("write `${{name}}` for a var, or `$$` for a literal `$`")
    )]
    UnclosedVar {
        #[source_code]
        src: Src,
        #[label("unclosed")]
        span: SourceSpan,
    },

    #[error("{message}")]
    #[diagnostic(code(gvbuild::config::invalid))]
    Invalid {
        message: String,
        #[source_code]
        src: Src,
        #[label("{label}")]
        span: SourceSpan,
        label: String,
        #[help]
        help: Option<String>,
    },
}

/// Every error found in one gevulot.yaml, reported together.
#[derive(Debug, Error, Diagnostic)]
#[error("{file}: {} error{} in the build file", .errors.len(), if .errors.len() == 1 { "" } else { "s" })]
#[diagnostic(code(gvbuild::config))]
pub struct ConfigErrors {
    pub file: String,
    #[related]
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// The errors of one file, in the order of their places in it (those with no place, such as
    /// a `--set` of an undeclared var, first).
    pub fn new(file: impl Into<String>, mut errors: Vec<ConfigError>) -> Self {
        errors.sort_by_key(ConfigError::offset);
        ConfigErrors { file: file.into(), errors }
    }
}

impl ConfigErrors {
    /// For the terminal: each error on its own, headed once by its code and message, then a
    /// count of them.
    pub fn render(&self, color: bool) -> String {
        let mut out = String::new();
        for e in &self.errors {
            out.push_str(&crate::diag::render(e, color));
            out.push('\n');
        }
        out.push_str(&format!("{self}\n"));
        out
    }

    /// For `--json`: one JSON object per error, one per line.
    pub fn json_lines(&self) -> String {
        let mut out = String::new();
        for e in &self.errors {
            out.push_str(&crate::diag::json(e, &self.file).to_string());
            out.push('\n');
        }
        out
    }
}

impl ConfigError {
    /// The byte offset the error points at: its primary label, else its first.
    pub fn offset(&self) -> Option<usize> {
        let labels: Vec<miette::LabeledSpan> = self.labels()?.collect();
        labels.iter().find(|l| l.primary()).or(labels.first()).map(|l| l.offset())
    }
}
