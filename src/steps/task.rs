//! The `task` step: boot an image on a task, as a Gevulot node would, and keep its result.
//!
//! ```yaml
//! prove-sample:
//!   task:
//!     image: build/prover.img          # another target's output: an inferred dependency
//!     args: [--input, /workspace/sample.in]
//!     files: [tests/sample.in]         # copied into the workspace under their names
//!     into: build/prove-sample         # task_result.json, each reported file, console.log
//!     timeout: 600                     # seconds; cpus, memory, gpus as in `gvbuild run`
//! ```
//!
//! This module owns the whole kind: the YAML it reads ([`RawTask`]), its validation
//! ([`validate`]), what goes into its key ([`key_command`], [`key_tools`]), its one-line summary
//! ([`summary`]) and its execution ([`run`]), which hands the boot to [`crate::vm`]. `config`
//! and the runner only dispatch here.
//!
//! **The key.** The image and each input file, by path and content (the step's inputs, as any
//! step's), each file's name in the workspace, the args and id, the CPUs and memory, the QEMU
//! binary's identity (its content hash and `--version`, as any tool's) and
//! [`crate::vm::RUNNER_VERSION`]. Not in it: the timeout and the GPUs' PCI addresses (where a
//! task ran, not what it computes), whether KVM or TCG ran it, and the firmware QEMU loads
//! (SeaBIOS, part of the QEMU package whose `--version` is keyed). A task
//! that gives no `Ok` result (the program's `Err`, no result, a reset, a timeout) fails the
//! step with that diagnosis and stores nothing. It runs locally under `--remote-exec` too (REAPI
//! workers run commands, not VMs); its result is shared through the remote cache like any
//! step's.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::yaml::Spanned;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::diag::Span;
use crate::jobs::Jobs;
use crate::paths::PathSpec;
use crate::vm::{self, qemu};
use crate::yaml::read::raw_struct;
use crate::yaml::Validator;

raw_struct! {
    /// `task:` boot an image on a task (Gevulot's file protocol) and keep the result.
    #[derive(Debug, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct RawTask {
        /// The image to boot: usually an `image` step's `into`.
        #[schemars(with = "String")]
        pub image: Spanned<String> => "a path (the image file)",
        /// The task's `args`, which the program reads from task.json.
        #[schemars(with = "Option<Vec<String>>")]
        pub args: Option<Vec<Spanned<String>>> => "a list of arguments",
        /// Input files of the project, copied into the workspace under their names (in the VM,
        /// /workspace/NAME) and listed in the task's `files`.
        #[schemars(with = "Option<Vec<String>>")]
        pub files: Option<Vec<Spanned<String>>> => "a list of files",
        /// The folder written: task_result.json, each file the result reports (at its path
        /// below /workspace) and console.log. The step's one output.
        #[schemars(with = "String")]
        pub into: Spanned<String> => "a path (the folder written)",
        /// Seconds before the VM is killed and the step fails (default 1800, the node's limit).
        #[schemars(with = "Option<u64>")]
        pub timeout: Option<Spanned<u64>> => "a number of seconds",
        /// CPUs (default: the image's manifest's RunConfig.CPUs, else 2, the node's).
        #[schemars(with = "Option<u32>")]
        pub cpus: Option<Spanned<u32>> => "a whole number",
        /// Memory, e.g. `4g` (default: the manifest's RunConfig.Memory, else 2048m, the node's).
        #[schemars(with = "Option<String>")]
        pub memory: Option<Spanned<String>> => "a size such as `2g`",
        /// GPUs passed through with vfio-pci, by PCI address (e.g. `${gpu}` with
        /// `--set gpu=0000:01:00.0`). Not part of the key.
        #[schemars(with = "Option<Vec<String>>")]
        pub gpus: Option<Vec<Spanned<String>>> => "a list of PCI addresses",
        /// The task id written to task.json (default `task01`).
        #[schemars(with = "Option<String>")]
        pub id: Option<Spanned<String>> => "a task id",
    }
}

/// Why a task could not be keyed or gave no result.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum TaskError {
    /// The machine size: the image's manifest's RunConfig.
    #[error(transparent)]
    MachineSize(#[from] crate::steps::manifest::ManifestError),
    /// QEMU is missing.
    #[error(transparent)]
    Vm(#[from] vm::VmError),
    #[error(transparent)]
    Accel(#[from] qemu::QemuError),
    #[error("cannot create a workspace folder: {0}")]
    Workspace(#[source] std::io::Error),
    /// The task gave no `Ok` result; its console is in the step's log when it could be kept.
    #[error(
        "{source}{}",
        log.as_ref().map(|l| format!("\nthe whole console is in {}", l.display())).unwrap_or_default()
    )]
    Failed { source: vm::VmError, log: Option<PathBuf> },
}

/// `task:` after validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// The image, project-relative (or absolute).
    pub image: String,
    pub id: String,
    pub args: Vec<String>,
    /// Input files, project-relative, in the order written; each is copied in under its name.
    pub files: Vec<String>,
    pub timeout_s: u64,
    /// As written; see [`machine_size`] for what a run gets.
    pub cpus: Option<u32>,
    /// As written, in MiB.
    pub memory_mb: Option<u64>,
    pub gpus: Vec<String>,
}

/// The VM's CPUs and memory (MiB) for a task: its own fields, else `run_config` (of the
/// manifest its image was built from), else the node's defaults
/// ([`crate::steps::manifest::machine_size`], which `gvbuild run` uses too).
pub fn machine_size(
    spec: &TaskSpec,
    run_config: Option<&crate::steps::manifest::RunConfig>,
) -> Result<(u32, u64), TaskError> {
    Ok(crate::steps::manifest::machine_size(spec.cpus, spec.memory_mb, run_config)?)
}

/// The tool whose identity is in every task's key.
pub const QEMU_TOOL: &str = qemu::QEMU;

/// Validate a `task:` step: returns the spec, its inputs (the image, then the files) and its
/// output (`into`).
pub(crate) fn validate(
    v: &mut Validator,
    n: &str,
    t: &RawTask,
    unset: &mut Vec<(String, Span)>,
) -> Option<(TaskSpec, Vec<PathSpec>, PathSpec)> {
    // Every field is checked, so that one run reports all of the task's errors.
    let mut ok = true;
    let image = v.input(&t.image, n, unset);
    if image.as_ref().is_some_and(|i| i.glob) {
        v.invalid(
            format!("the image of task `{n}` is a glob"),
            &t.image.referenced,
            "one image file",
            "name the image file, e.g. `build/prover.img`",
        );
        ok = false;
    }
    let mut inputs: Vec<PathSpec> = image.iter().cloned().collect();
    let files = workspace_files(v, n, t, &mut inputs, &mut ok, unset);
    let args = t.args.iter().flatten().map(|a| v.expand(a, unset)).collect();
    let id = t.id.as_ref().map_or_else(|| vm::task::DEFAULT_ID.to_string(), |i| v.expand(i, unset));
    let gpus = t.gpus.iter().flatten().map(|g| v.expand(g, unset)).collect();
    let timeout_s = t.timeout.as_ref().map_or(vm::NODE_TASK_LIMIT.as_secs(), |s| s.value);
    if timeout_s == 0 {
        if let Some(s) = &t.timeout {
            v.invalid(
                format!("`timeout` of task `{n}` is 0"),
                &s.referenced,
                "no time to run",
                "give the seconds the task may take, e.g. `600`",
            );
        }
        ok = false;
    }
    let cpus = t.cpus.as_ref().map(|c| c.value);
    if let Some(c) = t.cpus.as_ref().filter(|c| c.value == 0) {
        v.invalid(format!("`cpus` of task `{n}` is 0"), &c.referenced, "no CPU", "give 1 or more");
        ok = false;
    }
    let memory_mb = t.memory.as_ref().and_then(|m| {
        let message = format!("`memory` of task `{n}` is not a size of 1 MiB or more");
        let help = "write a size such as `2048m` or `4g`";
        super::size_field(v, m, qemu::memory_mb, (message, help), &mut ok, unset)
    });
    let into = v.output(&t.into, n, unset);
    let (Some(image), Some(into)) = (image, into) else { return None };
    let spec = TaskSpec { image: image.path, id, args, files, timeout_s, cpus, memory_mb, gpus };
    ok.then_some((spec, inputs, into))
}

/// The task's input files (each joins `inputs`), in the order written: one file each, named
/// apart from each other and from the task protocol's own files in the workspace. Clears `ok`
/// for one that is not.
fn workspace_files(
    v: &mut Validator,
    n: &str,
    t: &RawTask,
    inputs: &mut Vec<PathSpec>,
    ok: &mut bool,
    unset: &mut Vec<(String, Span)>,
) -> Vec<String> {
    let mut files = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for f in t.files.iter().flatten() {
        let Some(p) = v.input(f, n, unset) else { continue };
        if p.glob {
            v.invalid(
                format!("file `{}` of task `{n}` is a glob", p.path),
                &f.referenced,
                "one file",
                "list each input file",
            );
            *ok = false;
            continue;
        }
        let name = vm::task::workspace_name(&p.path).to_string();
        if name == vm::task::TASK_FILE || name == vm::task::RESULT_FILE {
            v.invalid(
                format!("file `{}` of task `{n}` is named like the task protocol's own `{name}`", p.path),
                &f.referenced,
                "reserved name",
                "rename the file",
            );
            *ok = false;
        } else if names.contains(&name) {
            v.invalid(
                format!("two files of task `{n}` are named `{name}` in the workspace"),
                &f.referenced,
                "same name as an earlier file",
                "each file is copied in under its name: rename one",
            );
            *ok = false;
        }
        names.push(name);
        files.push(p.path.clone());
        inputs.push(p);
    }
    files
}

/// What the key holds of the spec besides its input files and QEMU: the task as the program
/// sees it and the machine's size (`size`, from [`machine_size`]). The timeout and the GPUs'
/// addresses are left out.
pub fn key_command(spec: &TaskSpec, (cpus, memory_mb): (u32, u64)) -> String {
    serde_json::json!({
        "id": spec.id,
        "args": spec.args,
        "files": spec.files.iter().map(|f| vm::task::workspace_name(f)).collect::<Vec<_>>(),
        "cpus": cpus,
        "memory_mb": memory_mb,
        "runner": vm::RUNNER_VERSION,
    })
    .to_string()
}

/// One line for `-n` and failures.
pub fn summary(spec: &TaskSpec, into: &str) -> String {
    let files = match spec.files.len() {
        0 => String::new(),
        n => format!(" with {n} file(s)"),
    };
    format!("task `{}`: boot {}{files} -> {into}", spec.id, spec.image)
}

/// The tools in a task's key: QEMU (`qemu-system-x86_64` on PATH), by its identity (content
/// hash and `--version`). `Err` when it is missing: without it the task can be neither run nor
/// keyed.
pub fn key_tools(
    tools: &crate::fingerprint::tools::ToolCache,
    root: &Path,
    stat: &crate::fingerprint::StatCache,
) -> Result<std::collections::BTreeMap<String, crate::fingerprint::tools::ToolId>, TaskError> {
    let id = tools.identify(QEMU_TOOL, root, stat).map_err(|_| vm::VmError::QemuMissing(QEMU_TOOL.into()))?;
    Ok([(QEMU_TOOL.to_string(), id)].into_iter().collect())
}

/// Where a task step's run writes: its output folder, and the step's log, which keeps the
/// console when the task fails (the output folder is then removed).
pub struct Places<'a> {
    pub root: &'a Path,
    /// `into`, project-relative.
    pub into: &'a str,
    pub log: &'a Path,
}

/// Boot the image on the task and collect the result into `root/into`. Returns warnings for
/// the user (a VM run with TCG where the node would use KVM); `Err` is the diagnosis, and the
/// console is then in the step's log.
pub fn run(
    at: &Places,
    spec: &TaskSpec,
    (cpus, memory_mb): (u32, u64),
    jobs: &Jobs,
    stop: &AtomicBool,
    live: Option<&(dyn Fn(&str) + Sync)>,
) -> Result<Vec<String>, TaskError> {
    let qemu_path = qemu::find(None).ok_or_else(|| vm::VmError::QemuMissing(QEMU_TOOL.into()))?;
    let mut notes = Vec::new();
    let (accel, note) = qemu::choose_accel(&qemu_path, qemu::AccelChoice::Auto)?;
    notes.extend(note);
    let workspace =
        tempfile::Builder::new().prefix("gvbuild-workspace-").tempdir().map_err(TaskError::Workspace)?;
    let abs = |p: &str| if p.starts_with('/') { Path::new(p).to_path_buf() } else { at.root.join(p) };
    let names = || spec.files.iter().map(|f| vm::task::workspace_name(f).to_string());
    let into_abs = at.root.join(at.into);
    let run = vm::TaskRun {
        qemu: qemu_path,
        machine: vm::MachineSpec {
            image: abs(&spec.image),
            workspace: workspace.path().to_path_buf(),
            cpus,
            memory_mb,
            gpus: spec.gpus.clone(),
            accel,
        },
        task: vm::Task { id: spec.id.clone(), args: spec.args.clone(), files: names().collect() },
        inputs: names().zip(spec.files.iter().map(|f| abs(f))).collect(),
        timeout: Duration::from_secs(spec.timeout_s),
        console: into_abs.join(vm::CONSOLE_LOG),
        live,
    };
    match vm::run_task(&run, &into_abs, jobs, stop) {
        Ok(_) => Ok(notes),
        Err(source) => {
            // The output folder goes with the failure; the console stays in the step's log.
            let kept = at.log.parent().map(std::fs::create_dir_all).is_some_and(|r| r.is_ok())
                && std::fs::copy(&run.console, at.log).is_ok();
            Err(TaskError::Failed { source, log: kept.then(|| at.log.to_path_buf()) })
        }
    }
}

/// A task's key: its image and files (inputs), the task and the machine's size
/// ([`key_command`]), and QEMU ([`key_tools`]).
pub fn key(spec: &TaskSpec, env: &super::StepEnv) -> Result<super::KindKey, super::KeyError> {
    // After the inputs (see `Step::kind_key`): the machine size, then QEMU.
    let command = key_command(spec, size(spec, env)?);
    Ok(super::KindKey {
        kind: "task",
        command,
        tools: key_tools(env.tools, env.root, env.stat)?,
        keys_deps: true,
    })
}

impl super::Kind for TaskSpec {
    fn summary(&self, into: &str) -> String {
        summary(self, into)
    }
    fn key(&self, env: &super::StepEnv) -> Result<super::KindKey, super::KeyError> {
        key(self, env)
    }
    fn execute(&self, env: &super::StepEnv) -> Result<super::Executed, super::KindFailed> {
        execute(self, env)
    }
}

/// A task's CPUs and memory: its fields, else the RunConfig of the manifest that the `image:`
/// target making its image was built from (a dependency's output, built by now).
fn size(spec: &TaskSpec, env: &super::StepEnv) -> Result<(u32, u64), TaskError> {
    machine_size(spec, (env.run_config_of_image)(&spec.image).as_ref())
}

/// Boot the task as [`run`] does, holding a slot, into `env.into`.
pub fn execute(spec: &TaskSpec, env: &super::StepEnv) -> Result<super::Executed, super::KindFailed> {
    let command = summary(spec, env.into);
    let slot = env.slots.acquire();
    let at = Places { root: env.root, into: env.into, log: env.log };
    let ran = size(spec, env).and_then(|size| run(&at, spec, size, env.jobs, env.interrupted, env.live));
    drop(slot);
    let notes = ran.map_err(|e| super::KindFailed::new(&command, e))?;
    Ok(super::Executed { command, warnings: notes, ..Default::default() })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec() -> TaskSpec {
        TaskSpec {
            image: "build/p.img".into(),
            id: "task01".into(),
            args: vec!["--input".into(), "/workspace/a.in".into()],
            files: vec!["samples/a.in".into()],
            timeout_s: 600,
            cpus: None,
            memory_mb: None,
            gpus: vec![],
        }
    }

    /// What the program sees and the machine's size are keyed; where and how long it ran are not.
    #[test]
    fn the_key_holds_the_task_and_the_machine_size_only() {
        let key = |s: &TaskSpec| key_command(s, machine_size(s, None).unwrap());
        let base = key(&spec());
        let changed = [
            TaskSpec { args: vec!["--fast".into()], ..spec() },
            TaskSpec { files: vec!["samples/b.in".into()], ..spec() },
            TaskSpec { id: "t2".into(), ..spec() },
            TaskSpec { cpus: Some(4), ..spec() },
            TaskSpec { memory_mb: Some(4096), ..spec() },
        ];
        for c in changed {
            assert_ne!(key(&c), base, "{c:?}");
        }
        let same = [
            TaskSpec { timeout_s: 60, ..spec() },
            TaskSpec { gpus: vec!["0000:01:00.0".into()], ..spec() },
            // The name in the workspace is what the program sees; the file's bytes are an input.
            TaskSpec { files: vec!["elsewhere/a.in".into()], ..spec() },
            // The image's bytes are an input of the step, not its path.
            TaskSpec { image: "out/q.img".into(), ..spec() },
            // The node's defaults, written out.
            TaskSpec { cpus: Some(2), memory_mb: Some(2048), ..spec() },
        ];
        for s in same {
            assert_eq!(key(&s), base, "{s:?}");
        }
    }

    /// The task's fields, else the image's manifest's RunConfig, else the node's defaults.
    #[test]
    fn the_machine_size_comes_from_the_task_then_the_manifest() {
        use crate::steps::manifest::RunConfig;
        let rc = RunConfig { cpus: Some(8), gpus: None, memory: Some("4g".into()) };
        assert_eq!(machine_size(&spec(), None).unwrap(), (2, 2048));
        assert_eq!(machine_size(&spec(), Some(&rc)).unwrap(), (8, 4096));
        let own = TaskSpec { cpus: Some(3), memory_mb: Some(1024), ..spec() };
        assert_eq!(machine_size(&own, Some(&rc)).unwrap(), (3, 1024));
        let bad = RunConfig { memory: Some("lots".into()), ..rc };
        assert!(machine_size(&spec(), Some(&bad))
            .unwrap_err()
            .to_string()
            .contains("RunConfig.Memory `lots`"));
    }
}
