//! Why a step failed, as the build reports it: the text after the target's name in the
//! failure line. The runner and remote execution raise these; the scheduler shows them.

use std::io;

use crate::cache::remote::{RemoteError, RemoteSetupError};
use crate::cache::CacheError;
use crate::fingerprint::depfile::DepfileError;
use crate::fingerprint::inputs::InputError;
use crate::fingerprint::outputs::OutputError;
use crate::fingerprint::tools::ToolError;

/// A step's failure. Each message names the file or the target it is about and, where one
/// exists, what to change in gevulot.yaml.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A declared input could not be keyed.
    #[error(transparent)]
    Inputs(#[from] InputError),
    /// A tool named in `tools:` could not be identified.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// A tool this machine lacks, for a remote step: how to name the workers' instead.
    #[error(
        "{source}. With --remote-exec, a tool this machine lacks is named by the identity the \
         workers have: --platform {property}=IDENTITY (`gvbuild worker --tool` prints it)"
    )]
    RemoteTool { source: ToolError, property: String },
    /// A built-in kind's key could not be made.
    #[error(transparent)]
    Key(#[from] crate::steps::KeyError),
    /// A built-in kind's execution failed (its module's message).
    #[error("{0}")]
    Kind(String),
    /// A discovered input could not be read for the full key.
    #[error("cannot read a discovered input: {0}")]
    DiscoveredRead(io::Error),
    /// A discovered file is another target's output, without a dependency on that target.
    #[error(
        "`{target}` read `{path}` ({how}), which target `{other}` writes, but `{target}` does not \
         depend on `{other}`: the file it read depended on the order the steps ran in. Add \
         `{other}` to its `deps` (or `{path}` to its `inputs`, which infers the dependency)"
    )]
    UnorderedRead { target: String, path: String, how: String, other: String },
    #[error("library {0} has a name that is not UTF-8")]
    LibraryName(String),
    #[error("the step did not write its depfile {depfile}: {source}")]
    NoDepfile { depfile: String, source: io::Error },
    #[error("cannot read depfile {depfile}: {source}")]
    BadDepfile { depfile: String, source: DepfileError },
    #[error(
        "depfile {depfile} line {line} names a file whose name is not UTF-8; gvbuild keys only UTF-8 paths"
    )]
    DepfileName { depfile: String, line: usize },
    /// A remote step's depfile names a project file its input root did not hold.
    #[error(
        "{whence} names `{named}`, which the remote step's input root did not hold; declare it in \
         `inputs` so that it is shipped and keyed"
    )]
    NotShipped { whence: String, named: String },
    #[error(
        "{whence} names `{named}`, which does not exist; depfile paths are read relative to the \
         project folder, so write them relative to it or absolute"
    )]
    DiscoveredMissing { whence: String, named: String },
    #[error(
        "{whence} names `{named}`, which cannot be read ({source}); a file the command read must \
         exist after it ran (depfile paths are relative to the project folder)"
    )]
    DiscoveredUnreadable { whence: String, named: String, source: io::Error },
    #[error("could not start /bin/sh: {0}")]
    Shell(io::Error),
    #[error("the command exited with status {0}")]
    Exit(i32),
    #[error("the command was killed by a signal")]
    Signal,
    /// A sandboxed step failed, and strace is missing to say what it touched undeclared.
    #[error("{0} (in the sandbox; install strace for gvbuild to name the undeclared files it touched)")]
    ExitUntraced(String),
    /// A sandboxed step wrote, read or wrote outside what it declared.
    #[error("{how}, but in the sandbox it touched what it did not declare:\n  {}", lines.join("\n  "))]
    Undeclared { how: String, lines: Vec<String> },
    /// A step run under `--trace-undeclared` failed, and touched what it did not declare.
    #[error("{how}, and it touched what it did not declare:\n  {}", lines.join("\n  "))]
    TracedUndeclared { how: String, lines: Vec<String> },
    /// The sandbox could not be set up for the step.
    #[error("cannot run the step in its sandbox: {0}")]
    Sandbox(crate::sandbox::SetupError),
    #[error("interrupted")]
    Interrupted,
    /// The outputs could not be hashed after the step ran.
    #[error(transparent)]
    Outputs(#[from] OutputError),
    #[error("output {0} changed while it was being stored")]
    OutputChanged(String),
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// A cache hit whose files the project could not take (a full disk).
    #[error("cannot restore `{target}` from the cache: {source}")]
    Restore { target: String, source: CacheError },
    /// The input root of a remote step could not be made.
    #[error(transparent)]
    InputRoot(#[from] InputRootError),
    /// An input changed after it was keyed, found while uploading it.
    #[error("{0}")]
    Changed(String),
    /// The engine refused the action.
    #[error("the remote-execution engine {engine} refused the action ({code}): {message}")]
    Refused { engine: String, code: String, message: String },
    #[error("cannot write {path}: {source}")]
    WriteLog { path: String, source: io::Error },
    #[error("declared output `{0}` was not created")]
    OutputMissing(String),
    #[error("cannot write the outputs of `{target}`: {source}")]
    WriteOutputs { target: String, source: CacheError },
    /// The engine failed, and the build does not fall back to running the step here.
    #[error("{0}")]
    Engine(String),
}

/// Why a remote step's input root could not be made.
#[derive(Debug, thiserror::Error)]
pub enum InputRootError {
    #[error("cannot read the symlink {link}: {source}")]
    ReadLink { link: String, source: io::Error },
    #[error("the symlink {0} changed while the build ran; build again")]
    LinkChanged(String),
    #[error("the symlink {0} leads to a name that is not UTF-8")]
    LinkName(String),
    #[error("the outputs of `{dep}`, an input of `{target}`: {source}")]
    DepOutputs { dep: String, target: String, source: OutputError },
    #[error(
        "the folders `{target}` may read from (its inputs' and its include folders) hold more \
         than {max} files, too many to ship to a worker; declare its inputs file by file, or \
         narrow its `-I` folders"
    )]
    TooManyDiscoverable { target: String, max: usize },
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{0} changed while the build ran (it no longer has the digest it was keyed with); build again")]
    FileChanged(String),
    #[error("`{0}` is both a file and a folder among the step's inputs")]
    FileAndFolder(String),
    #[error("`{0}` cannot be part of an input root")]
    BadName(String),
}

/// Why `--remote-exec` cannot be used: a usage error of the build.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The URL or the TLS files: the shared cache's message, naming `--remote-exec`.
    #[error("{}", .0.to_string().replace("--remote-cache", "--remote-exec"))]
    Setup(#[from] RemoteSetupError),
    #[error(
        "--remote-exec {0}: the server does not execute (its capabilities have no enabled execution \
         with SHA-256); use --remote-cache for a cache-only server"
    )]
    NoExecution(String),
    #[error(
        "cannot reach the remote-execution engine {engine}: {cause}; check the URL, or add \
         --remote-exec-fallback to build locally while it is down"
    )]
    Unreachable { engine: String, cause: RemoteError },
}
