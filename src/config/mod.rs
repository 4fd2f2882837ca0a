//! gevulot.yaml: loading it, the top level and each target's shape, and the dispatch of each
//! target's step to its kind.
//!
//! [`parse`] turns the YAML text into a validated [`Project`]: [`crate::yaml::read`] reads the
//! YAML into the raw types of `raw.rs` without stopping at a wrong value, then this module
//! resolves vars and names, checks what every target has (deps, platform, `run:` and its
//! fields, groups) and hands each built-in step to its kind's `validate` in [`crate::steps`],
//! which expands, normalises and checks its own fields through the shared
//! [`crate::yaml::Validator`]. Every error found is reported in one go,
//! each once, each pointing at its place in the file, and none that only follows from another
//! (see `read.rs` on damaged structs). [`load`] also returns what could be validated, so that
//! the checks that need the whole graph (cycles, outputs, the dependencies inferred from inputs
//! that read other targets' outputs), in `graph.rs`, run on it too.

mod pieces;
pub mod raw;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use crate::yaml::Spanned;
use indexmap::IndexMap;
use rayon::prelude::*;
use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};

pub use self::raw::RestoreMode;
use self::raw::{RawFile, RawTarget};
use crate::diag::{suggest, Source, Span};
use crate::paths::PathSpec;
use crate::steps::Step;
pub use crate::yaml::error::{ConfigError, ConfigErrors};
use crate::yaml::expand::{self, expand, VarProblem, Vars};
use crate::yaml::read::{self, Strings};
use crate::yaml::Validator;

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
        !l.is_empty() && !l.starts_with('#') && l != "---" && l != "..."
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
    // A big file is read on every core where its layout allows (`pieces.rs`), with the same
    // result; else, and to report its errors, whole.
    if let Some(raw) = pieces::read(source) {
        return Ok((raw, Vec::new()));
    }
    read::read::<RawFile>(source, "a map of `vars`, `default` and `targets`")
}

/// What the top level gives every target: its `platform:`, and the `sandbox:` and `network:`
/// defaults of `run:` steps.
struct TopRun {
    platform: BTreeMap<String, String>,
    sandbox: bool,
    network: bool,
}

/// A built-in step after its kind's validation: the step, its inputs and its one output.
type Validated = (Step, Vec<PathSpec>, PathSpec);

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
        let top = TopRun {
            platform,
            sandbox: raw.sandbox.as_ref().is_none_or(|s| s.value),
            network: raw.network.as_ref().is_none_or(|n| n.value),
        };
        // Each target is checked on its own (the vars are only read), so on every core; its
        // errors keep their order, as if checked one after the other.
        let entries: Vec<_> = raw.targets.iter().collect();
        let (src, top_ok, vars) = (self.src, self.top_ok, &*self.vars);
        let checked: Vec<(Target, Vec<ConfigError>)> = entries
            .par_iter()
            .with_min_len(256)
            .map(|(name, body)| {
                let mut v = Validator { src, errors: Vec::new(), vars: Cow::Borrowed(vars), top_ok };
                let mut t = v.target(name, &body.value, &names, &top);
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
                    span: d.referenced.into(),
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
                    span: k.referenced.into(),
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
                span: u.referenced.into(),
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
                let in_file = cycle
                    .iter()
                    .filter(|n| !overridden.contains(n.as_str()))
                    .find_map(|n| raw.vars.iter().find(|(k, _)| &k.value == n).map(|(_, v)| v.referenced));
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
        top: &TopRun,
    ) -> Target {
        let span = name.referenced;
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
                        span: d.referenced.into(),
                        help: suggest(&d.value, names.iter().copied().filter(|c| *c != n)),
                    });
                }
                DepRef { name: d.value.clone(), span: d.referenced }
            })
            .collect::<Vec<_>>();

        // At most one built-in kind; `builtin_alone` reports any other step keys beside it.
        // A built-in kind, else `run:`, else a group. A step (even a wrong one) has platform
        // properties; a group has none.
        let (step, inputs, outputs, has_step) = match self.builtin_step(n, raw, &mut unset_vars) {
            Some(Some((step, inputs, into))) => (Some(step), inputs, vec![into], true),
            Some(None) => (None, Vec::new(), Vec::new(), true),
            None => match &raw.run {
                Some(run) => {
                    let (run, depfile) = self.run_step(n, raw, run, top, &mut unset_vars);
                    let (inputs, outputs, run) = self.run_paths(n, raw, run, depfile, &mut unset_vars);
                    (Some(Step::Run(run)), inputs, outputs, true)
                }
                None => {
                    self.group(n, raw, span, deps.is_empty());
                    (None, Vec::new(), Vec::new(), false)
                }
            },
        };
        let platform = match has_step {
            true => self.platform(raw.platform.as_ref(), &top.platform, &mut unset_vars),
            false => BTreeMap::new(),
        };
        Target {
            name: n.into(),
            span,
            description: raw.description.as_ref().map(|d| d.value.clone()),
            deps,
            inputs,
            outputs,
            step,
            cache: raw.cache.as_ref().is_none_or(|c| c.value),
            restore: raw.restore.as_ref().map(|r| r.value).unwrap_or_default(),
            platform,
            unset_vars,
        }
    }

    /// A target's built-in step, dispatched to its kind: `None` when it has none (a `run:`
    /// step or a group), `Some(None)` when the step is wrong (reported).
    fn builtin_step(
        &mut self,
        n: &str,
        raw: &RawTarget,
        unset: &mut Vec<(String, Span)>,
    ) -> Option<Option<Validated>> {
        use crate::steps::{fetch, image, manifest, stage, task};
        Some(if let Some(k) = &raw.task {
            self.kind_step(n, raw, "task", k, k.damaged, unset, |v, k, u| task::validate(v, n, k, u))
                .map(|(s, i, o)| (Step::Task(s), i, o))
        } else if let Some(k) = &raw.image {
            self.kind_step(n, raw, "image", k, k.damaged, unset, |v, k, u| image::validate(v, n, k, u))
                .map(|(s, i, o)| (Step::Image(s), i, o))
        } else if let Some(k) = &raw.stage {
            self.kind_step(n, raw, "stage", k, k.damaged, unset, |v, k, u| stage::validate(v, n, k, u))
                .map(|(s, i, o)| (Step::Stage(s), i, o))
        } else if let Some(k) = &raw.manifest {
            self.kind_step(n, raw, "manifest", k, k.damaged, unset, |v, k, u| manifest::validate(v, n, k, u))
                .map(|(s, i, o)| (Step::Manifest(s), i, o))
        } else if let Some(k) = &raw.fetch {
            self.kind_step(n, raw, "fetch", k, k.damaged, unset, |v, k, u| fetch::validate(v, n, k, u))
                .map(|(s, o)| (Step::Fetch(s), Vec::new(), o))
        } else {
            return None;
        })
    }

    /// One kind's step: a damaged one (reading reported something in it, see
    /// [`crate::yaml::read`]) is checked only for its vars; else it must stand alone, and its
    /// kind's `validate` checks its fields.
    #[allow(clippy::too_many_arguments)]
    fn kind_step<R: Strings, S>(
        &mut self,
        n: &str,
        raw: &RawTarget,
        kind: &str,
        fields: &R,
        damaged: bool,
        unset: &mut Vec<(String, Span)>,
        validate: impl FnOnce(&mut Validator, &R, &mut Vec<(String, Span)>) -> Option<S>,
    ) -> Option<S> {
        if damaged {
            return self.vars_only(fields, unset);
        }
        let alone = self.builtin_alone(kind, n, raw);
        validate(self, fields, unset).filter(|_| alone)
    }

    /// A `run:` step's fields (its inputs, outputs and depfile are read by the caller), and the
    /// depfile as written.
    fn run_step<'r>(
        &mut self,
        n: &str,
        raw: &'r RawTarget,
        run: &Spanned<String>,
        top: &TopRun,
        unset: &mut Vec<(String, Span)>,
    ) -> (crate::steps::run::RunSpec, Option<&'r Spanned<String>>) {
        let command = self.expand(run, unset);
        let depfile = raw.depfile.as_ref();
        let env = raw.env.iter().flatten().map(|(k, v)| (k.value.clone(), self.expand(v, unset))).collect();
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
        let tools = raw.tools.iter().flatten().map(|t| self.expand(t, unset)).collect();
        let sandbox = raw.sandbox.as_ref().map_or(top.sandbox, |s| s.value);
        let network = raw.network.as_ref().map_or(top.network, |s| s.value);
        let scratch = raw.scratch.iter().flatten().filter_map(|s| self.scratch(s, n, unset)).collect();
        let spec = crate::steps::run::RunSpec {
            command,
            depfile: None,
            env,
            pass_env,
            tools,
            sandbox,
            network,
            scratch,
        };
        (spec, depfile)
    }

    /// A `scratch:` folder: expanded, inside the project, not a glob, not the project folder
    /// itself nor gvbuild's own `.gvbuild/`; `None` when reported.
    fn scratch(&mut self, s: &Spanned<String>, n: &str, unset: &mut Vec<(String, Span)>) -> Option<String> {
        let (path, whole) = self.expand_checked(s, unset);
        if !whole {
            return None;
        }
        let normal = crate::paths::normalize_rel(&path).filter(|p| !path.starts_with('/') && p != ".");
        let problem = match &normal {
            _ if crate::paths::is_glob(&path) => Some("a scratch folder is an exact path, not a glob"),
            None => Some("a scratch folder is a folder inside the project"),
            Some(p) if p == ".gvbuild" || p.starts_with(".gvbuild/") => {
                Some("`.gvbuild/` is gvbuild's own: no step sees it")
            }
            Some(_) => None,
        };
        if let Some(label) = problem {
            self.invalid(
                format!("scratch folder `{path}` of target `{n}` cannot be used"),
                &s.referenced,
                label,
                "name a folder of the project, e.g. `scratch: [my_prover/target]`",
            );
            return None;
        }
        normal
    }

    /// A `run:` step's inputs and outputs, its depfile among the outputs.
    fn run_paths(
        &mut self,
        n: &str,
        raw: &RawTarget,
        mut run: crate::steps::run::RunSpec,
        depfile: Option<&Spanned<String>>,
        unset: &mut Vec<(String, Span)>,
    ) -> (Vec<PathSpec>, Vec<PathSpec>, crate::steps::run::RunSpec) {
        let inputs = raw.inputs.iter().flatten().filter_map(|i| self.input(i, n, unset)).collect();
        let mut outputs: Vec<PathSpec> =
            raw.outputs.iter().flatten().filter_map(|o| self.output(o, n, unset)).collect();
        if let Some(p) = depfile.and_then(|d| self.output(d, n, unset)) {
            run.depfile = Some(p.path.clone());
            if !outputs.iter().any(|o| o.path == p.path) {
                outputs.push(p);
            }
        }
        (inputs, outputs, run)
    }

    /// A group (no step): it has deps and none of a step's fields.
    fn group(&mut self, n: &str, raw: &RawTarget, span: Span, no_deps: bool) {
        let group_fields: [(&str, Option<&crate::diag::Span>); 13] = [
            ("sandbox", raw.sandbox.as_ref().map(|s| &s.referenced)),
            ("network", raw.network.as_ref().map(|s| &s.referenced)),
            ("scratch", raw.scratch.as_ref().and_then(|v| v.first()).map(|s| &s.referenced)),
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
                    span: (*loc).into(),
                });
            }
        }
        if no_deps && !raw.damaged {
            self.errors.push(ConfigError::EmptyTarget {
                target: n.into(),
                src: self.src.named(),
                span: span.into(),
            });
        }
    }

    /// A built-in step stands alone: no `run`, no other built-in kind, and none of the fields
    /// that only a `run` step has (its inputs and outputs follow from its own fields).
    pub(crate) fn builtin_alone(&mut self, kind: &str, n: &str, raw: &RawTarget) -> bool {
        if raw.damaged {
            // What stands beside the step may be what was written wrongly: no follow-on errors.
            return true;
        }
        let not_here: [(&str, Option<&crate::diag::Span>); 15] = [
            ("sandbox", raw.sandbox.as_ref().map(|s| &s.referenced)),
            ("network", raw.network.as_ref().map(|s| &s.referenced)),
            ("scratch", raw.scratch.as_ref().and_then(|v| v.first()).map(|s| &s.referenced)),
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
                } else if matches!(field, "sandbox" | "network" | "scratch") {
                    format!("only a `run:` step runs in the sandbox; a `{kind}` step is gvbuild's own code")
                } else {
                    format!("a `{kind}` step's inputs and outputs follow from its own fields")
                };
                self.errors.push(ConfigError::Invalid {
                    message: format!("`{field}` is not allowed next to `{kind}` in target `{n}`"),
                    src: self.src.named(),
                    span: (*loc).into(),
                    label: format!("`{field}` here"),
                    help: Some(help),
                });
            }
        }
        ok
    }
}

/// Whether environment variable `name` carries gvbuild's remote credentials
/// (`GVBUILD_REMOTE_HEADER`, `GVBUILD_REMOTE_HEADER_1`, ...), which no step may be handed.
pub fn is_credential(name: &str) -> bool {
    name.starts_with("GVBUILD_REMOTE_HEADER")
}
