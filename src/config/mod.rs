//! gevulot.yaml: the serde types, loading, variable expansion and validation.
//!
//! [`parse`] turns the YAML text into a validated [`Project`]: `read.rs` reads the YAML into the
//! raw types of `raw.rs` without stopping at a wrong value, then the validator here resolves
//! names, expands vars, normalises and checks paths. Every error found is reported in one go,
//! each once, each pointing at its place in the file, and none that only follows from another
//! (see `read.rs` on damaged structs). [`load`] also returns what could be validated, so that
//! the checks that need the whole graph (cycles, outputs, the dependencies inferred from inputs
//! that read other targets' outputs), in `graph.rs`, run on it too.

pub mod error;
pub mod expand;
mod parallel;
pub mod raw;
pub mod read;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use indexmap::IndexMap;
use rayon::prelude::*;
use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

pub use self::error::{ConfigError, ConfigErrors};
use self::expand::{expand, VarProblem, Vars};
pub use self::raw::RestoreMode;
use self::raw::{RawFile, RawTarget};
use self::read::{At, FromNode, Reader, Strings};
use crate::diag::{suggest, Source, Span};
use crate::paths::PathSpec;
use crate::paths::{is_glob, normalize_abs, normalize_rel, relative_to};

/// A validated gevulot.yaml.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Project {
    pub default: Option<String>,
    #[serde(deserialize_with = "crate::fingerprint::encode::exact_vec")]
    pub targets: Vec<Target>,
    /// `remote_cache:`, a URL read from (never written to, never sent credentials) when no
    /// `--remote-cache` or GVBUILD_REMOTE_CACHE names one.
    pub remote_cache: Option<String>,
}

/// Whether `name` can be a platform property's name: printable ASCII, not empty, no `=` (which
/// `--platform NAME=VALUE` splits at). REAPI itself allows any string; this keeps names that
/// every engine's configuration and a command line can carry.
pub fn is_platform_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b'=')
}

/// A dependency name and where it was written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DepRef {
    pub name: String,
    #[serde(skip)]
    pub span: Span,
}

/// One target after validation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub name: String,
    #[serde(skip)]
    pub span: Span,
    pub description: Option<String>,
    pub deps: Vec<DepRef>,
    /// Declared inputs (for built-in kinds: the paths their fields name).
    pub inputs: Vec<PathSpec>,
    /// Declared outputs; a depfile is one of them.
    pub outputs: Vec<PathSpec>,
    /// `None` for a group.
    pub step: Option<Step>,
    pub cache: bool,
    pub restore: RestoreMode,
    /// Vars declared with no value that this target's step uses: an error once it is built.
    pub unset_vars: Vec<(String, Span)>,
    /// Platform properties of the step, by name: the top-level `platform:` with the target's
    /// own over it (`--platform` goes over both when the build runs).
    pub platform: BTreeMap<String, String>,
}

/// What a target does. One variant per step kind (later: fetch, stage, manifest, image).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Step {
    Run(RunStep),
    Fetch(FetchStep),
    Manifest(ManifestStep),
    Stage(crate::steps::stage::StageSpec),
    Image(crate::steps::image::ImageSpec),
    Task(crate::steps::task::TaskSpec),
}

/// `manifest:` after validation: the JSON to write (or the file to canonicalise), and where it
/// will be checked against the stage root.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestStep {
    /// In the parse cache as its JSON text: its serde form skips empty fields, which postcard
    /// cannot read back.
    #[serde(with = "manifest_as_json")]
    pub manifest: Option<Box<crate::steps::manifest::Manifest>>,
    /// A hand-written manifest to validate and canonicalise instead.
    pub from: Option<String>,
    pub root: String,
    pub klib_dir: Option<String>,
    /// Where each field is in the build file, for errors found while building.
    pub at: crate::diag::Positions,
}

/// Serde for [`ManifestStep::manifest`]: the manifest as its JSON text.
mod manifest_as_json {
    use serde::de::Error as _;
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::steps::manifest::Manifest;

    pub fn serialize<S: Serializer>(m: &Option<Box<Manifest>>, s: S) -> Result<S::Ok, S::Error> {
        let text = m.as_ref().map(serde_json::to_string).transpose().map_err(S::Error::custom)?;
        text.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<Manifest>>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| serde_json::from_str(&t)).transpose().map_err(D::Error::custom)
    }
}

/// `fetch:` after var expansion; its output is the target's one output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FetchStep {
    pub url: String,
    pub pin: crate::steps::fetch::Pin,
    pub extract: Option<crate::steps::fetch::Extract>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunStep {
    pub command: String,
    /// Project-relative path of the Makefile-style depfile, if any.
    pub depfile: Option<String>,
    pub env: BTreeMap<String, String>,
    pub pass_env: Vec<String>,
    pub tools: Vec<String>,
}

impl Project {
    pub fn find(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name == name)
    }
}

/// Parse and validate a gevulot.yaml. `overrides` are `--set name=value` pairs.
pub fn parse(source: &Source, overrides: &[(String, String)]) -> Result<Project, ConfigErrors> {
    match load(source, overrides) {
        (Some(project), errors) if errors.is_empty() => Ok(project),
        (_, errors) => Err(ConfigErrors::new(&source.name, errors)),
    }
}

/// Read and validate everything that can be: the project (`None` only when a YAML syntax error
/// stops the reading) and every error found. What was wrong is left out of the project, so that
/// the whole-graph checks can still run on the rest without reporting follow-on errors.
pub fn load(source: &Source, overrides: &[(String, String)]) -> (Option<Project>, Vec<ConfigError>) {
    let (raw, errors) = match read_raw(source) {
        Ok(read) => read,
        Err(errors) => return (None, errors),
    };
    let mut v = Validator { src: source, errors, vars: Cow::Owned(Vars::new()), top_ok: !raw.damaged };
    let project = v.project(raw, overrides);
    (Some(project), v.errors)
}

/// Read the YAML into the raw types, collecting every error that does not stop the reading.
fn read_raw(source: &Source) -> Result<(RawFile, Vec<ConfigError>), Vec<ConfigError>> {
    let has_content = source.text.lines().any(|l| {
        let l = l.trim();
        !l.is_empty() && !l.starts_with('#') && l != "---"
    });
    if !has_content {
        return Err(vec![ConfigError::Invalid {
            message: "the build file is empty".into(),
            src: source.named(),
            span: Span::new(0, 0).into(),
            label: "nothing here".into(),
            help: Some("a gevulot.yaml needs at least `targets:`, for example:\ntargets:\n  hello:\n    outputs: [hello.txt]\n    run: echo hello > hello.txt".into()),
        }]);
    }
    // Fast path: a valid file is read by serde's derive, as quickly as YAML can be read (a big
    // one in pieces on every core: `parallel.rs`). Only when that fails is it read again, node
    // by node, to find every error (`read.rs`).
    if let Some(raw) = parallel::read(&source.text) {
        return Ok((raw, Vec::new()));
    }
    if let Ok(raw) =
        serde_saphyr::from_str_with_options::<RawFile>(&source.text, read::yaml_options(&source.text))
    {
        return Ok((raw, Vec::new()));
    }
    let root = read::parse_nodes(&source.text).map_err(|e| vec![yaml_error(source, &e)])?;
    let mut reader = Reader::new(source);
    let what = "a map of `vars`, `default` and `targets`";
    match RawFile::from_node(root, &mut reader, At::Top, what) {
        Some(raw) => Ok((raw, reader.errors)),
        None => Err(reader.errors),
    }
}

/// A YAML syntax error, which stops the reading.
fn yaml_error(source: &Source, err: &serde_saphyr::Error) -> ConfigError {
    let plain = err.without_snippet().render_with_options(serde_saphyr::render_options! {
        snippets: serde_saphyr::SnippetMode::Off,
    });
    // The plain rendering repeats the position ("... at line 3 column 5"); miette shows it.
    let message = match plain.find(" at line ") {
        Some(i) => plain[..i].to_string(),
        None => plain,
    };
    let message = message.strip_prefix("error: ").unwrap_or(&message).to_string();
    let message = strip_position_prefix(&message);
    // serde-saphyr's `budget breached: Nodes { nodes: N }`, in this file's terms.
    if let Some(breach) = message.strip_prefix("budget breached: ") {
        let span = err.location().map(|l| Span::of(&l)).unwrap_or_default();
        return ConfigError::Yaml {
            label: "read up to here".into(),
            message: format!(
                "gevulot.yaml costs far more to read than its size ({breach}): YAML aliases that \
                 expand into huge trees, or nesting deeper than 64 levels, are refused"
            ),
            src: source.named(),
            span: span.into(),
            help: Some(
                "an alias (`*name`) copies its anchor's whole tree each time it is used; use `<<: *name` \
                 merges of small maps, or write the values out"
                    .into(),
            ),
        };
    }
    let span = err.location().map(|l| Span::of(&l)).unwrap_or_default();
    let help = if message.contains("while parsing a flow sequence") || message.contains("flow mapping") {
        Some("a `${var}` or `{` inside `[...]` or `{...}` must be quoted: `[\"src/${name}.c\"]`".into())
    } else {
        None
    };
    ConfigError::Yaml { label: short_label(&message), message, src: source.named(), span: span.into(), help }
}

fn strip_position_prefix(message: &str) -> String {
    // "line 3 column 5: unknown field ..." -> "unknown field ..."
    if let Some(rest) = message.strip_prefix("line ") {
        if let Some(i) = rest.find(": ") {
            return rest[i + 2..].to_string();
        }
    }
    message.to_string()
}

fn short_label(message: &str) -> String {
    match message.find(", expected") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Checks a [`RawFile`] and collects every error; the step kinds' own validators (such as
/// [`crate::steps::task::validate`]) take it to read their fields.
pub(crate) struct Validator<'a> {
    src: &'a Source,
    errors: Vec<ConfigError>,
    /// Owned while the vars are read and resolved; borrowed by the validators that check the
    /// targets on every core, which only read them.
    vars: Cow<'a, Vars>,
    /// The top level of the file was read without errors. Otherwise an unknown `${name}` or
    /// `default` may name what the broken part declares, and is not reported.
    top_ok: bool,
}

impl Validator<'_> {
    fn project(&mut self, raw: RawFile, overrides: &[(String, String)]) -> Project {
        for (name, value) in &raw.vars {
            self.vars.to_mut().insert(name.value.clone(), value.value.clone());
        }
        let overridden: HashSet<&str> = overrides.iter().map(|(k, _)| k.as_str()).collect();
        for (name, value) in overrides {
            if !self.vars.contains_key(name) {
                if !self.top_ok {
                    continue;
                }
                // As just does: a --set the file cannot use is a typo, not a no-op.
                let declared = self.vars.keys().map(String::as_str);
                let help = match suggest(name, declared) {
                    Some(s) => s,
                    None => format!("declare it under `vars:` (`{name}: ~` if it has no default)"),
                };
                self.errors.push(ConfigError::UnknownSet { name: name.clone(), help });
                continue;
            }
            self.vars.to_mut().insert(name.clone(), Some(value.clone()));
        }
        self.resolve_vars(&raw, &overridden);
        let names: FxHashSet<&str> = raw.targets.keys().map(|k| k.value.as_str()).collect();
        let mut top_unset = Vec::new();
        let platform = self.platform(raw.platform.as_ref(), &BTreeMap::new(), &mut top_unset);
        // Each target is checked on its own (the vars are only read), so on every core; its
        // errors keep their order, as if checked one after the other.
        let entries: Vec<_> = raw.targets.iter().collect();
        let (src, top_ok, vars) = (self.src, self.top_ok, &*self.vars);
        let checked: Vec<(Target, Vec<ConfigError>)> = entries
            .par_iter()
            .with_min_len(256)
            .map(|(name, body)| {
                let mut v = Validator { src, errors: Vec::new(), vars: Cow::Borrowed(vars), top_ok };
                let mut t = v.target(name, &body.value, &names, &platform);
                if t.step.is_some() {
                    t.unset_vars.extend(top_unset.iter().cloned());
                }
                (t, v.errors)
            })
            .collect();
        let mut targets = Vec::with_capacity(checked.len());
        for (t, errors) in checked {
            self.errors.extend(errors);
            targets.push(t);
        }
        let remote_cache = raw.remote_cache.as_ref().and_then(|u| self.remote_cache_url(u));
        let default = raw.default.as_ref().map(|d| {
            if self.top_ok && !names.contains(d.value.as_str()) {
                self.errors.push(ConfigError::UnknownDefault {
                    name: d.value.clone(),
                    src: self.src.named(),
                    span: Span::of(&d.referenced).into(),
                    help: suggest(&d.value, names.iter().copied()),
                });
            }
            d.value.clone()
        });
        if raw.targets.len() >= 1000 {
            // Freeing a big file's raw form takes a while, and nothing waits for it. (Where no
            // thread can start, the refused closure, and `raw` with it, is dropped here.)
            let _ = std::thread::Builder::new().name("gvbuild-free".into()).spawn(move || drop(raw));
        }
        Project { default, targets, remote_cache }
    }

    /// `platform:` over `base`: names must be names REAPI and `--platform NAME=VALUE` can carry
    /// (not empty; no `=`, whitespace or control characters); values may use vars.
    fn platform(
        &mut self,
        raw: Option<&IndexMap<Spanned<String>, Spanned<String>>>,
        base: &BTreeMap<String, String>,
        unset: &mut Vec<(String, Span)>,
    ) -> BTreeMap<String, String> {
        let mut out = base.clone();
        for (k, v) in raw.into_iter().flatten() {
            if !is_platform_name(&k.value) {
                self.errors.push(ConfigError::Invalid {
                    message: format!("`{}` is not a platform property name", k.value.escape_debug()),
                    src: self.src.named(),
                    span: Span::of(&k.referenced).into(),
                    label: "not a property name".into(),
                    help: Some(
                        "a name is printable ASCII without spaces or `=`, for example `OSFamily` or `cuda`"
                            .into(),
                    ),
                });
                continue;
            }
            let value = self.expand_checked(v, unset).0;
            out.insert(k.value.clone(), value);
        }
        out
    }

    /// `remote_cache:` must be a URL of a protocol gvbuild speaks.
    fn remote_cache_url(&mut self, u: &Spanned<String>) -> Option<String> {
        let ok = ["http://", "https://", "grpc://", "grpcs://"]
            .iter()
            .any(|p| u.value.strip_prefix(p).is_some_and(|rest| !rest.is_empty()));
        if !ok {
            self.errors.push(ConfigError::Invalid {
                message: format!("`{}` is not a remote cache URL", u.value.escape_debug()),
                src: self.src.named(),
                span: Span::of(&u.referenced).into(),
                label: "not an http(s):// or grpc(s):// URL".into(),
                help: Some(
                    "for example `https://cache.example.com/team` or `grpc://cache.example.com:8980`".into(),
                ),
            });
            return None;
        }
        Some(u.value.clone())
    }

    /// Vars may use vars: expand each value's `${other}` (after `--set`), in dependency order.
    /// A cycle is an error that prints it; a value that uses an unset var is unset itself.
    fn resolve_vars(&mut self, raw: &RawFile, overridden: &HashSet<&str>) {
        let names: Vec<String> = self.vars.keys().cloned().collect();
        let mut state: HashMap<String, u8> = HashMap::new(); // 1: resolving, 2: done
        let mut resolved = self.vars.clone().into_owned();
        for name in &names {
            let mut stack = Vec::new();
            self.resolve_var(name, raw, overridden, &mut state, &mut resolved, &mut stack);
        }
        self.vars = Cow::Owned(resolved);
    }

    fn resolve_var(
        &mut self,
        name: &str,
        raw: &RawFile,
        overridden: &HashSet<&str>,
        state: &mut HashMap<String, u8>,
        resolved: &mut Vars,
        stack: &mut Vec<String>,
    ) {
        match state.get(name) {
            Some(2) => return,
            Some(_) => {
                let from = stack.iter().position(|n| n == name).unwrap_or(0);
                let mut cycle: Vec<String> = stack[from..].to_vec();
                cycle.push(name.to_string());
                // Point at a value written in the file: one given by --set is not there.
                let mut set: Vec<&String> =
                    cycle.iter().filter(|n| overridden.contains(n.as_str())).collect();
                set.sort();
                set.dedup();
                let note = match set.as_slice() {
                    [] => String::new(),
                    given => format!(
                        " ({} given by --set)",
                        given.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
                    ),
                };
                let in_file = cycle.iter().filter(|n| !overridden.contains(n.as_str())).find_map(|n| {
                    raw.vars.iter().find(|(k, _)| &k.value == n).map(|(_, v)| Span::of(&v.referenced))
                });
                self.errors.push(match in_file {
                    Some(span) => ConfigError::VarCycle {
                        cycle: format!("{}{note}", cycle.join(" -> ")),
                        src: self.src.named(),
                        span: span.into(),
                    },
                    None => ConfigError::VarCycleSet { cycle: format!("{}{note}", cycle.join(" -> ")) },
                });
                // Each member of the cycle is reported once, through the first one met.
                for n in &cycle {
                    state.insert(n.clone(), 2);
                }
                return;
            }
            None => {}
        }
        let Some(Some(value)) = resolved.get(name).cloned() else {
            state.insert(name.to_string(), 2);
            return;
        };
        state.insert(name.to_string(), 1);
        stack.push(name.to_string());
        for r in expand::references(&value) {
            if resolved.contains_key(&r) {
                self.resolve_var(&r, raw, overridden, state, resolved, stack);
            }
        }
        stack.pop();
        if state.get(name) == Some(&2) {
            return; // part of a cycle, already reported
        }
        let (out, problems) = expand(&value, resolved);
        let mut unset = false;
        for p in problems {
            match p {
                VarProblem::Unset { .. } => unset = true,
                problem => {
                    // Where the value is written: a --set value has no place in the file.
                    let spanned = raw.vars.iter().find(|(k, _)| k.value == name).map(|(_, v)| v);
                    match (spanned, overridden.contains(name)) {
                        (Some(v), false) => {
                            let s = Spanned {
                                value: v.value.clone().unwrap_or_default(),
                                referenced: v.referenced,
                                defined: v.defined,
                            };
                            let mut ignored = Vec::new();
                            self.report_var_problem(&s, problem, &mut ignored);
                        }
                        _ => self.errors.push(ConfigError::UnknownSet {
                            name: name.to_string(),
                            help: format!(
                                "the value given with --set {name}=... uses a var this file does not declare"
                            ),
                        }),
                    }
                }
            }
        }
        resolved.insert(name.to_string(), if unset { None } else { Some(out) });
        state.insert(name.to_string(), 2);
    }

    fn target(
        &mut self,
        name: &Spanned<String>,
        raw: &RawTarget,
        names: &FxHashSet<&str>,
        top_platform: &BTreeMap<String, String>,
    ) -> Target {
        let span = Span::of(&name.referenced);
        let n = name.value.as_str();
        if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
            self.errors.push(ConfigError::BadName {
                name: n.into(),
                src: self.src.named(),
                span: span.into(),
            });
        }
        let mut unset_vars = Vec::new();
        let deps = raw
            .deps
            .iter()
            .flatten()
            .map(|d| {
                if !names.contains(d.value.as_str()) {
                    self.errors.push(ConfigError::UnknownDep {
                        target: n.into(),
                        dep: d.value.clone(),
                        src: self.src.named(),
                        span: Span::of(&d.referenced).into(),
                        help: suggest(&d.value, names.iter().copied().filter(|c| *c != n)),
                    });
                }
                DepRef { name: d.value.clone(), span: Span::of(&d.referenced) }
            })
            .collect::<Vec<_>>();

        // At most one built-in kind; `builtin_alone` reports any other step keys beside it. One
        // in which reading reported something is checked only for its vars (see `read.rs`).
        let unset = &mut unset_vars;
        let builtin = if let Some(tk) = &raw.task {
            Some(match tk.damaged {
                true => self.vars_only(tk, unset),
                false => crate::steps::task::validate(self, n, raw, tk, unset)
                    .map(|(s, i, o)| (Step::Task(s), i, o)),
            })
        } else if let Some(im) = &raw.image {
            Some(match im.damaged {
                true => self.vars_only(im, unset),
                false => self.image_step(n, raw, im, unset).map(|(s, i, o)| (Step::Image(s), i, o)),
            })
        } else if let Some(st) = &raw.stage {
            Some(match st.damaged {
                true => self.vars_only(st, unset),
                false => self.stage_step(n, raw, st, unset).map(|(s, i, o)| (Step::Stage(s), i, o)),
            })
        } else if let Some(m) = &raw.manifest {
            Some(match m.damaged {
                true => self.vars_only(m, unset),
                false => self.manifest_step(n, raw, m, unset).map(|(s, i, o)| (Step::Manifest(s), i, o)),
            })
        } else {
            raw.fetch.as_ref().map(|f| match f.damaged {
                true => self.vars_only(f, unset),
                false => self.fetch_step(n, raw, f, unset).map(|(s, o)| (Step::Fetch(s), Vec::new(), o)),
            })
        };
        if let Some(built) = builtin {
            let (step, inputs, outputs) = match built {
                Some((step, inputs, into)) => (Some(step), inputs, vec![into]),
                None => (None, Vec::new(), Vec::new()),
            };
            return Target {
                name: n.into(),
                span,
                description: raw.description.as_ref().map(|d| d.value.clone()),
                deps,
                inputs,
                outputs,
                step,
                cache: raw.cache.as_ref().is_none_or(|c| c.value),
                restore: raw.restore.as_ref().map(|r| r.value).unwrap_or_default(),
                platform: self.platform(raw.platform.as_ref(), top_platform, &mut unset_vars),
                unset_vars,
            };
        }

        let step = match &raw.run {
            Some(run) => {
                let command = self.expand(run, n, &mut unset_vars);
                let depfile = raw.depfile.as_ref();
                let env = raw
                    .env
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.value.clone(), self.expand(v, n, &mut unset_vars)))
                    .collect();
                // gvbuild's own credentials never reach a step, whatever the file says.
                for p in raw.pass_env.iter().flatten().filter(|p| is_credential(&p.value)) {
                    self.invalid(
                        format!(
                            "`{}` holds gvbuild's credentials for the remote cache; no step may read it",
                            p.value
                        ),
                        &p.referenced,
                        "a credential of gvbuild's",
                        "gvbuild never hands its GVBUILD_REMOTE_HEADER* values to a step; give the step a \
                         credential of its own under another name",
                    );
                }
                let pass_env = raw.pass_env.iter().flatten().map(|p| p.value.clone()).collect();
                let tools = raw.tools.iter().flatten().map(|t| self.expand(t, n, &mut unset_vars)).collect();
                Some((RunStep { command, depfile: None, env, pass_env, tools }, depfile))
            }
            None => {
                let group_fields: [(&str, Option<&serde_saphyr::Location>); 10] = [
                    ("inputs", raw.inputs.as_ref().and_then(|v| v.first()).map(|s| &s.referenced)),
                    ("outputs", raw.outputs.as_ref().and_then(|v| v.first()).map(|s| &s.referenced)),
                    ("depfile", raw.depfile.as_ref().map(|s| &s.referenced)),
                    ("env", raw.env.as_ref().and_then(|m| m.keys().next()).map(|s| &s.referenced)),
                    ("pass_env", raw.pass_env.as_ref().and_then(|v| v.first()).map(|s| &s.referenced)),
                    ("tools", raw.tools.as_ref().and_then(|v| v.first()).map(|s| &s.referenced)),
                    ("cache", raw.cache.as_ref().map(|s| &s.referenced)),
                    ("restore", raw.restore.as_ref().map(|s| &s.referenced)),
                    ("platform", raw.platform.as_ref().and_then(|m| m.keys().next()).map(|s| &s.referenced)),
                    ("deps", None),
                ];
                // In a damaged target the step may be what was written wrongly (`runn:`).
                for (field, loc) in group_fields.into_iter().filter(|_| !raw.damaged) {
                    if let Some(loc) = loc {
                        self.errors.push(ConfigError::GroupField {
                            target: n.into(),
                            field: field.into(),
                            src: self.src.named(),
                            span: Span::of(loc).into(),
                        });
                    }
                }
                if deps.is_empty() && !raw.damaged {
                    self.errors.push(ConfigError::EmptyTarget {
                        target: n.into(),
                        src: self.src.named(),
                        span: span.into(),
                    });
                }
                None
            }
        };

        let mut inputs = Vec::new();
        let mut outputs = Vec::new();
        let mut step_out = None;
        if let Some((mut run, depfile)) = step {
            for i in raw.inputs.iter().flatten() {
                if let Some(p) = self.input(i, n, &mut unset_vars) {
                    inputs.push(p);
                }
            }
            for o in raw.outputs.iter().flatten() {
                if let Some(p) = self.output(o, n, &mut unset_vars) {
                    outputs.push(p);
                }
            }
            if let Some(depfile) = depfile {
                if let Some(p) = self.output(depfile, n, &mut unset_vars) {
                    run.depfile = Some(p.path.clone());
                    if !outputs.iter().any(|o| o.path == p.path) {
                        outputs.push(p);
                    }
                }
            }
            step_out = Some(Step::Run(run));
        }
        let platform = match step_out {
            Some(_) => self.platform(raw.platform.as_ref(), top_platform, &mut unset_vars),
            None => BTreeMap::new(),
        };
        Target {
            name: n.into(),
            span,
            description: raw.description.as_ref().map(|d| d.value.clone()),
            deps,
            inputs,
            outputs,
            step: step_out,
            cache: raw.cache.as_ref().is_none_or(|c| c.value),
            restore: raw.restore.as_ref().map(|r| r.value).unwrap_or_default(),
            platform,
            unset_vars,
        }
    }

    /// Validate a `fetch:` step: no `run`, no run-only fields, a well-formed pin, a valid `into`.
    fn fetch_step(
        &mut self,
        n: &str,
        raw: &RawTarget,
        f: &raw::RawFetch,
        unset: &mut Vec<(String, Span)>,
    ) -> Option<(FetchStep, PathSpec)> {
        let ok = self.builtin_alone("fetch", n, raw);
        let (url, pin) = match (&f.url, &f.git) {
            (Some(url), None) => {
                let url_span = Span::of(&url.referenced);
                let (url, whole) = self.expand_checked(url, unset);
                let pin = self.download_pin(n, f, whole.then_some(url.as_str()), url_span, unset);
                (url, pin)
            }
            (None, Some(git)) => {
                let git_span = Span::of(&git.referenced);
                let url = self.expand(git, n, unset);
                let pin = self.git_pin(n, f, git_span, unset);
                (url, pin)
            }
            (Some(_), Some(git)) => {
                self.errors.push(ConfigError::Invalid {
                    message: format!("fetch `{n}` has both `url` and `git`"),
                    src: self.src.named(),
                    span: Span::of(&git.referenced).into(),
                    label: "one source per fetch".into(),
                    help: Some("keep `url` for a download, or `git` with `rev` for a repository".into()),
                });
                return None;
            }
            (None, None) => {
                self.errors.push(ConfigError::Invalid {
                    message: format!("fetch `{n}` names nothing to fetch"),
                    src: self.src.named(),
                    span: Span::of(&f.into.referenced).into(),
                    label: "fetched from where?".into(),
                    help: Some(
                        "add `url:` (with `sha256:`) for a download, or `git:` with `rev:` for a repository"
                            .into(),
                    ),
                });
                return None;
            }
        };
        let extract = f.extract.as_ref().map(|x| {
            let max_size = match &x.max_size {
                None => crate::steps::fetch::DEFAULT_MAX_SIZE,
                Some(m) => crate::fsutil::parse_size(&m.value).unwrap_or_else(|| {
                    self.errors.push(ConfigError::Invalid {
                        message: format!("`max_size` of fetch `{n}` is not a size"),
                        src: self.src.named(),
                        span: Span::of(&m.referenced).into(),
                        label: "not a size".into(),
                        help: Some("write a size such as 512M or 4G".into()),
                    });
                    0
                }),
            };
            crate::steps::fetch::Extract {
                strip_components: x.strip_components.as_ref().map_or(0, |s| s.value),
                max_size,
                max_entries: x
                    .max_entries
                    .as_ref()
                    .map_or(crate::steps::fetch::DEFAULT_MAX_ENTRIES, |m| m.value),
            }
        });
        let into = self.output(&f.into, n, unset)?;
        let pin = pin?;
        ok.then_some((FetchStep { url, pin, extract }, into))
    }

    /// A built-in step stands alone: no `run`, no other built-in kind, and none of the fields
    /// that only a `run` step has (its inputs and outputs follow from its own fields).
    pub(crate) fn builtin_alone(&mut self, kind: &str, n: &str, raw: &RawTarget) -> bool {
        if raw.damaged {
            // What stands beside the step may be what was written wrongly: no follow-on errors.
            return true;
        }
        let not_here: [(&str, Option<&serde_saphyr::Location>); 12] = [
            ("task", if kind == "task" { None } else { raw.task.as_ref().map(|s| &s.into.referenced) }),
            ("image", if kind == "image" { None } else { raw.image.as_ref().map(|s| &s.into.referenced) }),
            ("stage", if kind == "stage" { None } else { raw.stage.as_ref().map(|s| &s.into.referenced) }),
            ("run", raw.run.as_ref().map(|s| &s.referenced)),
            ("fetch", if kind == "fetch" { None } else { raw.fetch.as_ref().map(|f| &f.into.referenced) }),
            (
                "manifest",
                if kind == "manifest" { None } else { raw.manifest.as_ref().map(|m| &m.into.referenced) },
            ),
            ("inputs", raw.inputs.as_ref().and_then(|v| v.first()).map(|s| &s.referenced)),
            ("outputs", raw.outputs.as_ref().and_then(|v| v.first()).map(|s| &s.referenced)),
            ("depfile", raw.depfile.as_ref().map(|s| &s.referenced)),
            ("env", raw.env.as_ref().and_then(|m| m.keys().next()).map(|s| &s.referenced)),
            ("pass_env", raw.pass_env.as_ref().and_then(|v| v.first()).map(|s| &s.referenced)),
            ("tools", raw.tools.as_ref().and_then(|v| v.first()).map(|s| &s.referenced)),
        ];
        let mut ok = true;
        for (field, loc) in not_here {
            if let Some(loc) = loc {
                ok = false;
                let help = if matches!(field, "run" | "fetch" | "manifest" | "stage" | "image" | "task") {
                    "a target has at most one step: split it into two targets".to_string()
                } else {
                    format!("a `{kind}` step's inputs and outputs follow from its own fields")
                };
                self.errors.push(ConfigError::Invalid {
                    message: format!("`{field}` is not allowed next to `{kind}` in target `{n}`"),
                    src: self.src.named(),
                    span: Span::of(loc).into(),
                    label: format!("`{field}` here"),
                    help: Some(help),
                });
            }
        }
        ok
    }

    /// Validate an `image:` step. Returns the spec, its inputs (manifest, stage root, and the
    /// release or program) and its output.
    fn image_step(
        &mut self,
        n: &str,
        raw: &RawTarget,
        im: &raw::RawImage,
        unset: &mut Vec<(String, Span)>,
    ) -> Option<(crate::steps::image::ImageSpec, Vec<PathSpec>, PathSpec)> {
        use crate::steps::image::{Builder, Extra, ImageSpec};
        let mut ok = self.builtin_alone("image", n, raw);
        let path = |v: &mut Self, s: &Spanned<String>, unset: &mut Vec<(String, Span)>| v.input(s, n, unset);
        let manifest = path(self, &im.manifest, unset)?;
        let root = path(self, &im.root, unset)?;
        let mut inputs = vec![manifest.clone(), root.clone()];
        let missing = |v: &mut Self, field: &str, builder: &str, example: &str| {
            v.errors.push(ConfigError::Invalid {
                message: format!("image `{n}` with `builder: {builder}` needs `{field}`"),
                src: v.src.named(),
                span: Span::of(&im.builder.referenced).into(),
                label: format!("`builder: {builder}` here"),
                help: Some(format!("add `{field}: {example}`")),
            });
        };
        let only = |v: &mut Self, field: &str, loc: Option<&serde_saphyr::Location>, builder: &str| {
            if let Some(loc) = loc {
                v.errors.push(ConfigError::Invalid {
                    message: format!("`{field}` of image `{n}` applies only to `builder: {builder}`"),
                    src: v.src.named(),
                    span: Span::of(loc).into(),
                    label: "not used by this builder".into(),
                    help: Some(format!("remove `{field}`, or use `builder: {builder}`")),
                });
                false
            } else {
                true
            }
        };
        let nanos_version = im.nanos_version.as_ref().map(|v| self.expand(v, n, unset));
        let builder = match im.builder.value.as_str() {
            "native" => {
                ok &= only(self, "program", im.program.as_ref().map(|p| &p.referenced), "ops");
                let Some(rel) = &im.release else {
                    missing(self, "release", "native", "build/nanos  # a fetch of the Nanos release");
                    return None;
                };
                let release = path(self, rel, unset)?;
                inputs.push(release.clone());
                let size = match &im.size {
                    None => None,
                    Some(s) => {
                        let (text, whole) = self.expand_checked(s, unset);
                        match crate::fsutil::parse_size(&text) {
                            Some(b) if b <= crate::disk::MAX_SIZE => Some(b),
                            _ if !whole => None,
                            _ => {
                                ok = false;
                                self.errors.push(ConfigError::Invalid {
                                    message: format!("`size` of image `{n}` is not a size up to 2 TiB"),
                                    src: self.src.named(),
                                    span: Span::of(&s.referenced).into(),
                                    label: "not a size".into(),
                                    help: Some(
                                        "write a number with an optional k, m or g, e.g. `256m`".into(),
                                    ),
                                });
                                None
                            }
                        }
                    }
                };
                let mut extras = Vec::new();
                for e in im.ops_extras.iter().flatten() {
                    match Extra::parse(&e.value) {
                        Some(x) => extras.push(x),
                        None => {
                            ok = false;
                            let names = Extra::NAMES.join(", ");
                            self.errors.push(ConfigError::Invalid {
                                message: format!("image `{n}` asks for an unknown ops extra `{}`", e.value),
                                src: self.src.named(),
                                span: Span::of(&e.referenced).into(),
                                label: "unknown extra".into(),
                                help: Some(format!("the extras are: {names}")),
                            });
                        }
                    }
                }
                extras.sort();
                extras.dedup();
                Builder::Native { release: release.path, size, extras }
            }
            "ops" => {
                ok &= only(self, "release", im.release.as_ref().map(|p| &p.referenced), "native");
                ok &= only(self, "size", im.size.as_ref().map(|p| &p.referenced), "native");
                ok &= only(
                    self,
                    "ops_extras",
                    im.ops_extras.as_ref().and_then(|v| v.first()).map(|p| &p.referenced),
                    "native",
                );
                let Some(program) = &im.program else {
                    missing(self, "program", "ops", &format!("{}/prover", root.path));
                    return None;
                };
                let Some(version) = nanos_version.clone() else {
                    missing(self, "nanos_version", "ops", "0.1.51");
                    return None;
                };
                let program_spec = path(self, program, unset)?;
                if !program_spec.path.starts_with(&format!("{}/", root.path)) {
                    ok = false;
                    self.errors.push(ConfigError::Invalid {
                        message: format!("the program of image `{n}` is not inside its root `{}`", root.path),
                        src: self.src.named(),
                        span: Span::of(&program.referenced).into(),
                        label: "outside the stage root".into(),
                        help: Some(format!(
                            "name the program inside the stage root, e.g. `{}/prover`",
                            root.path
                        )),
                    });
                }
                inputs.push(program_spec.clone());
                Builder::Ops { program: program_spec.path, nanos_version: version }
            }
            other => {
                self.errors.push(ConfigError::Invalid {
                    message: format!("image `{n}` asks for builder `{other}`, which gvbuild does not have"),
                    src: self.src.named(),
                    span: Span::of(&im.builder.referenced).into(),
                    label: "unknown builder".into(),
                    help: Some(
                        "`builder: native` writes the image itself; `builder: ops` runs `ops build`".into(),
                    ),
                });
                return None;
            }
        };
        let into = self.output(&im.into, n, unset)?;
        let mut at = crate::diag::Positions::new(self.src);
        let fields = [
            ("manifest", Some(&im.manifest)),
            ("root", Some(&im.root)),
            ("release", im.release.as_ref()),
            ("size", im.size.as_ref()),
            ("into", Some(&im.into)),
        ];
        for (field, value) in fields {
            if let Some(v) = value {
                at.mark(self.src, field, Span::of(&v.referenced).offset);
            }
        }
        let spec = ImageSpec { builder, manifest: manifest.path, root: root.path, nanos_version, at };
        ok.then_some((spec, inputs, into))
    }

    /// Validate a `stage:` step. Returns the spec, its inputs (what `copy` and `libs_for` name)
    /// and its output.
    fn stage_step(
        &mut self,
        n: &str,
        raw: &RawTarget,
        st: &raw::RawStage,
        unset: &mut Vec<(String, Span)>,
    ) -> Option<(crate::steps::stage::StageSpec, Vec<PathSpec>, PathSpec)> {
        let mut ok = self.builtin_alone("stage", n, raw);
        let into = self.output(&st.into, n, unset)?;
        let mut inputs = Vec::new();
        let mut copy = Vec::new();
        let mut at = crate::diag::Positions::new(self.src);
        for (i, rule) in st.copy.iter().flatten().enumerate() {
            let (to, to_whole) = self.expand_checked(&rule.to, unset);
            at.mark(self.src, &format!("copy{i}"), Span::of(&rule.from.referenced).offset);
            if let Some(p) = self.input(&rule.from, n, unset) {
                inputs.push(p.clone());
                copy.push(crate::steps::stage::CopyRule { from: p.path, to: to.clone() });
            }
            if to_whole && to.split('/').any(|c| c == "..") {
                ok = false;
                self.errors.push(ConfigError::Invalid {
                    message: format!("`to` of a copy rule of stage `{n}` climbs out of the stage root"),
                    src: self.src.named(),
                    span: Span::of(&rule.to.referenced).into(),
                    label: "`..` leaves the stage root".into(),
                    help: Some("name a path inside the stage root, e.g. `lib/x86_64-linux-gnu/`".into()),
                });
            }
        }
        let mut libs_for = Vec::new();
        for e in st.libs_for.iter().flatten() {
            at.mark(self.src, "libs_for", Span::of(&e.referenced).offset);
            if let Some(p) = self.input(e, n, unset) {
                libs_for.push(p.path.clone());
                inputs.push(p);
            }
        }
        let search = st.search.iter().flatten().map(|s| self.expand(s, n, unset)).collect();
        let lib_dir = st
            .lib_dir
            .as_ref()
            .map_or_else(|| "lib/x86_64-linux-gnu".to_string(), |l| self.expand(l, n, unset));
        let spec = crate::steps::stage::StageSpec { copy, libs_for, lib_dir, search, at };
        ok.then_some((spec, inputs, into))
    }

    /// Validate a `manifest:` step. Returns the step, its inputs (stage root, klib folder,
    /// `from` file) and its output.
    fn manifest_step(
        &mut self,
        n: &str,
        raw: &RawTarget,
        m: &raw::RawManifest,
        unset: &mut Vec<(String, Span)>,
    ) -> Option<(ManifestStep, Vec<PathSpec>, PathSpec)> {
        use crate::steps::manifest::{valid_memory, Manifest, RunConfig, GPU_KLIB};
        let mut ok = self.builtin_alone("manifest", n, raw);
        let err = |v: &mut Self, loc: &serde_saphyr::Location, message: String, label: &str, help: &str| {
            v.errors.push(ConfigError::Invalid {
                message,
                src: v.src.named(),
                span: Span::of(loc).into(),
                label: label.into(),
                help: Some(help.into()),
            });
        };
        let root = self.input(&m.root, n, unset)?;
        let into = self.output(&m.into, n, unset)?;
        let mut inputs = vec![root.clone()];
        let mut at = crate::diag::Positions::new(self.src);
        let mut locate = |v: &Self, field: &str, loc: &serde_saphyr::Location| {
            at.mark(v.src, field, Span::of(loc).offset);
        };
        locate(self, "root", &m.root.referenced);

        if let Some(from) = &m.from {
            let content = [
                ("program", m.program.as_ref().map(|s| &s.referenced)),
                ("args", m.args.as_ref().and_then(|v| v.first()).map(|s| &s.referenced)),
                ("env", m.env.as_ref().and_then(|e| e.keys().next()).map(|s| &s.referenced)),
                ("dirs", m.dirs.as_ref().and_then(|v| v.first()).map(|s| &s.referenced)),
                ("files", m.files.as_ref().and_then(|v| v.first()).map(|s| &s.referenced)),
                ("workspace", m.workspace.as_ref().map(|w| &w.mount.referenced)),
                ("gpu", m.gpu.as_ref().map(|s| &s.referenced)),
                ("memory", m.memory.as_ref().map(|s| &s.referenced)),
            ];
            for (field, loc) in content {
                if let Some(loc) = loc {
                    ok = false;
                    err(
                        self,
                        loc,
                        format!("`{field}` next to `from` in manifest `{n}`"),
                        "from the file, or from here?",
                        "`from` takes the whole manifest from the file: put this setting there",
                    );
                }
            }
            let from_spec = self.input(from, n, unset)?;
            locate(self, "from", &from.referenced);
            inputs.push(from_spec.clone());
            let klib_dir = m.klib_dir.as_ref().map(|k| self.expand(k, n, unset));
            if let (Some(k), Some(loc)) = (&klib_dir, m.klib_dir.as_ref()) {
                if let Some(p) = self.input_path(k, Span::of(&loc.referenced), n) {
                    inputs.push(p);
                }
            }
            let step =
                ManifestStep { manifest: None, from: Some(from_spec.path), root: root.path, klib_dir, at };
            return ok.then_some((step, inputs, into));
        }

        let Some(program) = &m.program else {
            err(
                self,
                &m.root.referenced,
                format!("manifest `{n}` names no program"),
                "which program?",
                "add `program:`, the program's path in the stage root",
            );
            return None;
        };
        locate(self, "program", &program.referenced);
        let gpu = m.gpu.as_ref().is_some_and(|g| g.value);
        if let (true, Some(ro)) = (gpu, m.readonly_rootfs.as_ref().filter(|r| r.value)) {
            ok = false;
            err(self, &ro.referenced, format!("manifest `{n}` asks for a GPU and a read-only root filesystem"), "cannot be read-only with `gpu: true`", "the GPU klib creates /dev/nvidiactl at boot, which a read-only root prevents: remove `readonly_rootfs`");
        }
        if let Some(mem) = &m.memory {
            if !valid_memory(&mem.value) {
                ok = false;
                err(
                    self,
                    &mem.referenced,
                    format!("`memory` of manifest `{n}` is not a size ops understands"),
                    "not a size",
                    "write a number with an optional k, m or g, e.g. `2g` or `512m`",
                );
            }
        }
        let Some(ws) = &m.workspace else {
            err(self, &m.root.referenced, format!("manifest `{n}` has no workspace mount"), "no `workspace:` in this manifest", "a Gevulot program reads its tasks from the workspace: add `workspace: { mount: \"%1\", path: /workspace }`");
            return None;
        };
        let mut klibs: Vec<String> = m.klibs.iter().flatten().map(|k| self.expand(k, n, unset)).collect();
        if gpu && !klibs.iter().any(|k| k == GPU_KLIB) {
            klibs.insert(0, GPU_KLIB.to_string());
        }
        if let Some(k) = m.klibs.as_ref().and_then(|v| v.first()) {
            locate(self, "klibs", &k.referenced);
        } else if let Some(g) = &m.gpu {
            locate(self, "klibs", &g.referenced);
        }
        let klib_dir = match &m.klib_dir {
            Some(k) => {
                let spec = self.input(k, n, unset)?;
                inputs.push(spec.clone());
                Some(spec.path)
            }
            None if !klibs.is_empty() => {
                let loc = m.gpu.as_ref().map(|g| &g.referenced).unwrap_or(&m.root.referenced);
                err(
                    self,
                    loc,
                    format!("manifest `{n}` loads klibs but has no `klib_dir`"),
                    "klibs from where?",
                    "add `klib_dir:`, the project folder holding the klibs (the GPU assets' klib folder)",
                );
                return None;
            }
            None => None,
        };
        for (field, list) in [("dirs", &m.dirs), ("files", &m.files)] {
            if let Some(first) = list.as_ref().and_then(|v| v.first()) {
                locate(self, field, &first.referenced);
            }
        }
        let mut passthrough: BTreeMap<String, String> = m
            .passthrough
            .iter()
            .flatten()
            .map(|(k, v)| (k.value.clone(), self.expand(v, n, unset)))
            .collect();
        let readonly = m.readonly_rootfs.as_ref().map_or(!gpu, |r| r.value);
        if readonly {
            passthrough.insert("readonly_rootfs".into(), "true".into());
        }
        let program_s = self.expand(program, n, unset);
        let manifest = Manifest {
            args: m.args.iter().flatten().map(|a| self.expand(a, n, unset)).collect(),
            base_volume_sz: m.base_volume_size.as_ref().map(|b| self.expand(b, n, unset)),
            dirs: m.dirs.iter().flatten().map(|d| self.expand(d, n, unset)).collect(),
            env: m.env.iter().flatten().map(|(k, v)| (k.value.clone(), self.expand(v, n, unset))).collect(),
            files: m.files.iter().flatten().map(|f| self.expand(f, n, unset)).collect(),
            // ops runs in the stage root, so the klib folder is named relative to it.
            klib_dir: klib_dir.as_ref().map(|k| relative_to(k, &root.path)),
            klibs,
            passthrough,
            map_dirs: m
                .map_dirs
                .iter()
                .flatten()
                .map(|(k, v)| (k.value.clone(), self.expand(v, n, unset)))
                .collect(),
            mounts: [(self.expand(&ws.mount, n, unset), self.expand(&ws.path, n, unset))]
                .into_iter()
                .collect(),
            program: program_s,
            reboot_on_exit: m.reboot_on_exit.as_ref().is_some_and(|r| r.value),
            run_config: RunConfig {
                cpus: m.cpus.as_ref().map(|c| c.value),
                gpus: gpu.then_some(1),
                memory: m.memory.as_ref().map(|m| m.value.clone()),
            },
        };
        let step =
            ManifestStep { manifest: Some(Box::new(manifest)), from: None, root: root.path, klib_dir, at };
        ok.then_some((step, inputs, into))
    }

    /// The `sha256:` or `blake3:` pin of a download.
    fn download_pin(
        &mut self,
        n: &str,
        f: &raw::RawFetch,
        url: Option<&str>,
        url_span: Span,
        unset: &mut Vec<(String, Span)>,
    ) -> Option<crate::steps::fetch::Pin> {
        // A URL with an undefined var in it is reported on its own; the hints name no URL then.
        let url = url.unwrap_or("URL");
        match (&f.sha256, &f.blake3) {
            (Some(_), Some(b)) => {
                self.errors.push(ConfigError::Invalid {
                    message: format!("fetch `{n}` pins both `sha256` and `blake3`"),
                    src: self.src.named(),
                    span: Span::of(&b.referenced).into(),
                    label: "one pin is enough".into(),
                    help: Some("keep one of them".into()),
                });
                None
            }
            (None, None) => {
                self.errors.push(ConfigError::Invalid {
                    message: format!("fetch `{n}` has no pinned hash"),
                    src: self.src.named(),
                    span: url_span.into(),
                    label: "downloaded unverified".into(),
                    help: Some(format!(
                        "run `gvbuild hash {url}` and paste the `sha256:` line it prints into this `fetch:` (or pin it with a var: `sha256: ${{name}}`)"
                    )),
                });
                None
            }
            (Some(h), None) | (None, Some(h)) => {
                let algo = if f.sha256.is_some() {
                    crate::steps::fetch::Algo::Sha256
                } else {
                    crate::steps::fetch::Algo::Blake3
                };
                let before = unset.len();
                let (hex, whole) = self.expand_checked(h, unset);
                let hex = hex.trim().to_ascii_lowercase();
                // A var without a value is pinned later; an undefined one is its own error.
                let pinned_later = unset.len() > before;
                if !whole {
                    None
                } else if !pinned_later && (hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit())) {
                    self.errors.push(ConfigError::Invalid {
                        message: format!("the {} of fetch `{n}` is not 64 hex digits", algo.name()),
                        src: self.src.named(),
                        span: Span::of(&h.referenced).into(),
                        label: "not a hash".into(),
                        help: Some(format!("`gvbuild hash {url}` prints the line to paste")),
                    });
                    None
                } else {
                    Some(crate::steps::fetch::Pin { algo, hex })
                }
            }
        }
    }

    /// The `rev:` of a git fetch: a full commit id, nothing else.
    fn git_pin(
        &mut self,
        n: &str,
        f: &raw::RawFetch,
        git_span: Span,
        unset: &mut Vec<(String, Span)>,
    ) -> Option<crate::steps::fetch::Pin> {
        for (field, loc) in [
            ("sha256", f.sha256.as_ref().map(|s| &s.referenced)),
            ("blake3", f.blake3.as_ref().map(|s| &s.referenced)),
        ] {
            if let Some(loc) = loc {
                self.errors.push(ConfigError::Invalid {
                    message: format!("`{field}` does not apply to a git fetch (`{n}`)"),
                    src: self.src.named(),
                    span: Span::of(loc).into(),
                    label: "not for git".into(),
                    help: Some("a git fetch is pinned by `rev:`, a full commit id".into()),
                });
            }
        }
        if f.extract.is_some() {
            self.errors.push(ConfigError::Invalid {
                message: format!("`extract` does not apply to a git fetch (`{n}`)"),
                src: self.src.named(),
                span: git_span.into(),
                label: "a git fetch is a checkout".into(),
                help: Some("the output is the tree at `rev`, without `.git`; remove `extract`".into()),
            });
        }
        let Some(rev) = &f.rev else {
            self.errors.push(ConfigError::Invalid {
                message: format!("git fetch `{n}` has no `rev`"),
                src: self.src.named(),
                span: git_span.into(),
                label: "checked out at which commit?".into(),
                help: Some("add `rev:` with the full commit id (`git rev-parse BRANCH` prints it)".into()),
            });
            return None;
        };
        let before = unset.len();
        let (hex, whole) = self.expand_checked(rev, unset);
        let hex = hex.trim().to_ascii_lowercase();
        let full = matches!(hex.len(), 40 | 64) && hex.bytes().all(|b| b.is_ascii_hexdigit());
        if !whole {
            return None;
        }
        if unset.len() == before && !full {
            self.errors.push(ConfigError::Invalid {
                message: format!("`rev` of git fetch `{n}` is not a full commit id"),
                src: self.src.named(),
                span: Span::of(&rev.referenced).into(),
                label: "a branch, tag or short id is not a pin".into(),
                help: Some(
                    "a branch or tag can move: pin the full commit id (`git rev-parse REF` prints it)".into(),
                ),
            });
            return None;
        }
        Some(crate::steps::fetch::Pin { algo: crate::steps::fetch::Algo::GitCommit, hex })
    }

    /// Report an invalid field at `loc`.
    pub(crate) fn invalid(&mut self, message: String, loc: &serde_saphyr::Location, label: &str, help: &str) {
        self.errors.push(ConfigError::Invalid {
            message,
            src: self.src.named(),
            span: Span::of(loc).into(),
            label: label.into(),
            help: Some(help.into()),
        });
    }

    /// A damaged built-in step: only its vars are checked, and it has no step.
    fn vars_only<T: Strings, S>(&mut self, raw: &T, unset: &mut Vec<(String, Span)>) -> Option<S> {
        let mut strings = Vec::new();
        raw.strings(&mut strings);
        for s in strings {
            self.expand_checked(s, unset);
        }
        None
    }

    /// Expand vars in one YAML string, reporting problems at the exact `${...}` where possible.
    pub(crate) fn expand(
        &mut self,
        s: &Spanned<String>,
        target: &str,
        unset: &mut Vec<(String, Span)>,
    ) -> String {
        let _ = target;
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
        self.input_path(&path, Span::of(&s.referenced), target)
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
        self.output_path(&path, Span::of(&s.referenced), target)
    }

    fn report_var_problem(&mut self, s: &Spanned<String>, p: VarProblem, unset: &mut Vec<(String, Span)>) {
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
        let whole = Span::of(&s.referenced);
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

    fn input_path(&mut self, path: &str, span: Span, target: &str) -> Option<PathSpec> {
        let glob = is_glob(path);
        if path.starts_with('/') {
            return Some(PathSpec { path: normalize_abs(path), glob, span });
        }
        match normalize_rel(path) {
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

    fn output_path(&mut self, path: &str, span: Span, target: &str) -> Option<PathSpec> {
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

/// Whether environment variable `name` carries gvbuild's remote credentials
/// (`GVBUILD_REMOTE_HEADER`, `GVBUILD_REMOTE_HEADER_1`, ...), which no step may be handed.
pub fn is_credential(name: &str) -> bool {
    name.starts_with("GVBUILD_REMOTE_HEADER")
}
