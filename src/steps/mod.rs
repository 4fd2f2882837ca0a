//! The step kinds. The built-in Gevulot kinds `fetch`, `stage`, `manifest`, `image` and `task`
//! (boot an image on a task) are one module each, owning the YAML it reads (its `Raw*` types),
//! its validation (`validate`, reporting through [`crate::yaml::Validator`]), its spec, and
//! its key, summary and execution (its [`Kind`] impl); [`Step::kind`] is the one `match` on
//! the kind, and the runner asks [`Step`]. `run:` is the general kind: its fields are the
//! target's own, so `config` validates them; [`run`] holds its spec ([`run::RunSpec`]) and the
//! process handling every command uses, and the runner keys and runs it, here or remotely.
//! [`elf`] is the ELF closure the stage kind and `gvbuild libs` use.

pub mod elf;
pub mod fetch;
pub mod image;
pub mod manifest;
pub mod run;
pub mod stage;
pub mod task;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use indicatif::MultiProgress;
use serde::{Deserialize, Serialize};

use crate::fingerprint::tools::{ToolCache, ToolId};
use crate::fingerprint::{FileId, StatCache};
use crate::jobs::{Jobs, Slots};
use crate::paths::PathSpec;

/// A size field of a step (`s`): its value as `parse` reads it. `None` while a variable in it is
/// unset, or when `parse` cannot read it, which is reported (`message`, labelled "not a size",
/// with `help`) and clears `ok`.
pub(crate) fn size_field(
    v: &mut crate::yaml::Validator,
    s: &crate::yaml::Spanned<String>,
    parse: impl Fn(&str) -> Option<u64>,
    (message, help): (String, &str),
    ok: &mut bool,
    unset: &mut Vec<(String, crate::diag::Span)>,
) -> Option<u64> {
    let (text, whole) = v.expand_checked(s, unset);
    match parse(&text) {
        Some(size) => Some(size),
        None if !whole => None,
        None => {
            v.invalid(message, &s.referenced, "not a size", help);
            *ok = false;
            None
        }
    }
}

/// What a target does: one variant per step kind, each holding its module's spec. Everything
/// kind-specific is asked of the kind through the methods below, one `match` each.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Step {
    Run(run::RunSpec),
    Fetch(fetch::FetchSpec),
    Manifest(manifest::ManifestSpec),
    Stage(stage::StageSpec),
    Image(image::ImageSpec),
    Task(task::TaskSpec),
}

/// What a kind needs from the runner to key and execute its step: the project, the caches that
/// identify files and tools, and the machinery that runs commands. Built by the runner for each
/// question it asks of the kind (it borrows everything, so it costs nothing).
pub struct StepEnv<'a> {
    /// The project root (absolute).
    pub root: &'a Path,
    /// The target's declared inputs (for a built-in kind, the paths its fields name).
    pub inputs: &'a [PathSpec],
    /// The step's first declared output (project-relative): a built-in kind's `into`.
    pub into: &'a str,
    /// Where the step's log goes.
    pub log: &'a Path,
    /// The cache folder: `downloads/` for fetches, `ops-home/` for ops.
    pub cache_dir: &'a Path,
    pub stat: &'a StatCache,
    pub tools: &'a ToolCache,
    /// Held while a command, a build or a VM runs (`-j`).
    pub slots: &'a Slots,
    pub jobs: &'a Jobs,
    /// Set by Ctrl-C: a running VM stops.
    pub interrupted: &'a AtomicBool,
    /// On a terminal: where a download adds its progress bar.
    pub progress: Option<&'a MultiProgress>,
    /// Shows a running task's console lines (`-v`).
    pub live: Option<&'a (dyn Fn(&str) + Sync)>,
    /// The RunConfig of the manifest that the `image:` step making project path `image` was
    /// built from, if a target makes it (a task's machine size; see [`task::machine_size`]).
    pub run_config_of_image: &'a dyn Fn(&str) -> Option<manifest::RunConfig>,
}

/// A built-in kind's part of its step's first-level key besides its input files (which
/// [`Kind::key_inputs`] gives): the run kind's is the runner's (its command, env and tools, or
/// the platform it runs on remotely).
pub struct KindKey {
    /// The kind's name in the key (`fetch`, `stage`, ...).
    pub kind: &'static str,
    /// What the kind does, as canonical text: a fetch's pin, a stage's rules, a manifest's JSON.
    pub command: String,
    /// Tools whose identity is in the key (ops, QEMU).
    pub tools: BTreeMap<String, ToolId>,
    /// Whether the deps' output digests are in the key: not for a manifest written from its
    /// fields, which keys what it checks in the stage root instead.
    pub keys_deps: bool,
}

/// Why a built-in kind's step could not be keyed: an input that cannot be read, a tool the key
/// names that is missing, a fact of the image root that cannot be read.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum KeyError {
    /// A `run:` step is keyed by the runner, never by [`Step::kind_key`].
    #[error("a `run:` step is keyed by the runner")]
    RunSpec,
    #[error(transparent)]
    Inputs(#[from] crate::fingerprint::inputs::InputError),
    /// A task's machine size or QEMU.
    #[error(transparent)]
    Task(#[from] task::TaskError),
    /// `builder: ops` without ops (whatever identifying it failed on, it is not usable).
    #[error("{}", image::ops::OPS_MISSING)]
    OpsMissing,
    #[error("cannot read the image root {root}: {source}")]
    ImageRoot { root: String, source: walkdir::Error },
    #[error("{} in the image root has a name that is not UTF-8", path.display())]
    ImageRootName { path: PathBuf },
    #[error("cannot read symlink {path}: {source}")]
    ImageRootSymlink { path: String, source: std::io::Error },
}

/// What a built-in kind's execution gives back besides its outputs.
#[derive(Default)]
pub struct Executed {
    /// What ran, in one line (`stage build/root`, the `ops build` command line, ...).
    pub command: String,
    /// Warnings to show after the step.
    pub warnings: Vec<String>,
    /// Inputs found while running (the libraries a stage resolved), absolute.
    pub discovered: Vec<PathBuf>,
    /// Where those were looked for, absolute.
    pub searched: Vec<PathBuf>,
}

/// A built-in kind's failed execution: the message, and the command line when one was made.
/// The message stays text: it is what a failed step shows, made from each kind's own error.
pub struct KindFailed {
    pub command: Option<String>,
    pub message: String,
}

impl KindFailed {
    fn new(command: &str, message: impl ToString) -> KindFailed {
        KindFailed { command: Some(command.to_string()), message: message.to_string() }
    }
}

/// What every built-in kind answers. Each kind's module implements it on its spec; [`Step`]
/// hands each question to the kind through [`Step::kind`], its one `match`.
pub trait Kind {
    /// The step in one line, naming `into`, its first output (`fetch URL -> into`, ...).
    fn summary(&self, into: &str) -> String;
    /// What the key holds besides the input files: the kind's name, what it does as canonical
    /// text, the tools it runs. Errors: a tool that is missing, a machine size that is wrong.
    fn key(&self, env: &StepEnv) -> Result<KindKey, KeyError>;
    /// The input files (and facts) the key covers, by project path: by default the declared
    /// inputs. Read for the key, and again after the step ran to see whether any changed.
    fn key_inputs(&self, env: &StepEnv) -> Result<BTreeMap<String, FileId>, KeyError> {
        Ok(crate::fingerprint::inputs::resolve(env.root, env.inputs, env.stat)?)
    }
    /// Run the step, writing `env.into`. The runner cleared the outputs first and clears them
    /// again on failure.
    fn execute(&self, env: &StepEnv) -> Result<Executed, KindFailed>;
    /// Whether the step discovers inputs while running, which makes its key two-level.
    fn discovers(&self) -> bool {
        false
    }
    /// The search folders whose lookups its discovered inputs are keyed with.
    fn search_dirs(&self) -> Vec<String> {
        Vec::new()
    }
    /// The RunConfig of the manifest its output (an image) is built from, read from `root`.
    fn image_run_config(&self, _root: &Path) -> Option<manifest::RunConfig> {
        None
    }
}

impl Step {
    /// The built-in kind, asked through [`Kind`]; `None` for `run:`, which the runner keys and
    /// runs itself. The one `match` on the kind.
    pub fn kind(&self) -> Option<&dyn Kind> {
        match self {
            Step::Run(_) => None,
            Step::Fetch(k) => Some(k),
            Step::Stage(k) => Some(k),
            Step::Manifest(k) => Some(k),
            Step::Image(k) => Some(k),
            Step::Task(k) => Some(k),
        }
    }

    /// The `run:` step's spec; `None` for a built-in kind.
    pub fn as_run(&self) -> Option<&run::RunSpec> {
        match self {
            Step::Run(run) => Some(run),
            _ => None,
        }
    }

    /// What the step does, in one line: its expanded command, or a built-in kind's summary
    /// naming `into`, its first output. Shown by `-n` and in failures.
    pub fn summary(&self, into: &str) -> String {
        match (self.kind(), self.as_run()) {
            (Some(k), _) => k.summary(into),
            (None, Some(run)) => run.command.clone(),
            (None, None) => String::new(),
        }
    }

    /// A built-in kind's part of the key and its input files, in that order of asking: the
    /// inputs first, so that an unreadable input is the error a user sees first. A `run:` step
    /// is keyed by the runner: asked here, it is an error.
    pub fn kind_key(&self, env: &StepEnv) -> Result<(KindKey, BTreeMap<String, FileId>), KeyError> {
        let kind = self.kind().ok_or(KeyError::RunSpec)?;
        let inputs = kind.key_inputs(env)?;
        Ok((kind.key(env)?, inputs))
    }

    /// The input files a step's key covers (see [`Kind::key_inputs`]; a `run:` step's are its
    /// declared inputs).
    pub fn key_inputs(&self, env: &StepEnv) -> Result<BTreeMap<String, FileId>, KeyError> {
        match self.kind() {
            Some(k) => k.key_inputs(env),
            None => Ok(crate::fingerprint::inputs::resolve(env.root, env.inputs, env.stat)?),
        }
    }

    /// The depfile of a step, if it has one.
    pub fn depfile(&self) -> Option<&String> {
        self.as_run().and_then(|run| run.depfile.as_ref())
    }

    /// Whether the step discovers inputs while running (a depfile, or the libraries `libs_for`
    /// resolves), which makes its key two-level.
    pub fn discovers(&self) -> bool {
        self.kind().map_or(self.depfile().is_some(), |k| k.discovers())
    }

    /// The search folders whose lookups a step's discovered inputs are keyed with (see
    /// [`crate::fingerprint::discovered`]): the command's include folders, or the stage
    /// step's `search` folders.
    pub fn search_dirs(&self) -> Vec<String> {
        match (self.kind(), self.as_run()) {
            (Some(k), _) => k.search_dirs(),
            (None, Some(run)) => crate::fingerprint::discovered::command_search_dirs(&run.command),
            (None, None) => Vec::new(),
        }
    }

    /// For an `image:` step: the RunConfig of the manifest it is built from, read from
    /// `root` (where a task booting the image takes its machine size).
    pub fn image_run_config(&self, root: &Path) -> Option<manifest::RunConfig> {
        self.kind()?.image_run_config(root)
    }

    /// Whether the step's one output is a VM image (whose path and blake3 a build reports).
    pub fn makes_image(&self) -> bool {
        matches!(self, Step::Image(_))
    }

    /// Run a built-in kind's step (see [`Kind::execute`]). A `run:` step is the runner's to
    /// execute (here or on a remote engine): asked here, it fails.
    pub fn execute(&self, env: &StepEnv) -> Result<Executed, KindFailed> {
        match self.kind() {
            Some(k) => k.execute(env),
            None => Err(KindFailed { command: None, message: "a `run:` step is the runner's".into() }),
        }
    }
}
