//! The command line. Each subcommand is a thin function over the library.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use clap::{Args, Parser, Subcommand, ValueEnum};
use miette::Diagnostic;
use thiserror::Error;

use crate::cache::remote::{Remote, RemoteOptions};
use crate::cache::{self, lock, Cache, CacheError};
use crate::config::{ConfigError, ConfigErrors};
use crate::diag::Source;
use crate::exec::note;
use crate::exec::remote_exec::{ExecOptions, RemoteExec};
use crate::exec::{self, report::Reporter, Ctx, Opts};
use crate::fingerprint::state::{ExplainStore, State};
use crate::fingerprint::tools::ToolCache;
use crate::fingerprint::StatCache;
use crate::fsutil;
use crate::graph::Graph;
use crate::jobs::Jobs;

const EXAMPLES: &str = "\
Examples:
  gvbuild                       build the `default` target (else every target)
  gvbuild image                 build the target `image` and what it needs
  gvbuild --target stage-libs   the same, for `stage-libs`
  gvbuild -j4 -k all            four steps at a time, keep going past failures
  gvbuild --explain             say why each step ran or was restored
  gvbuild -n                    dry run: what would run, and why
  gvbuild --json                one JSON event per line on stdout
  gvbuild --set cuda_arch=sm_80 override a var
  gvbuild list                  the targets, with descriptions
  gvbuild graph | dot -Tsvg     the graph as DOT (--format json for JSON)
  gvbuild libs build/prover     the shared libraries an ELF needs, and where they resolve
  gvbuild inspect build/prover.img   an image's partitions, root tuple and tree (--extract DIR)
  gvbuild clean                 remove every declared output
  gvbuild cache gc --max-size 5G   trim the cache, least recently used first

Exit status: 0 success, 1 a step failed, 2 bad usage or an invalid gevulot.yaml, 130 interrupted.";

#[derive(Parser, Debug)]
#[command(name = "gvbuild", version, about = "Declarative, content-hashed, cached builds for Gevulot prover images", after_help = EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    project: ProjectArgs,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    build: BuildArgs,
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

/// Where the project is and how its file is read: for the commands that read gevulot.yaml.
#[derive(Args, Debug, Clone, Default, PartialEq)]
struct ProjectArgs {
    /// Run as if started in DIR.
    #[arg(short = 'C', long = "directory", value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The build file (default: gevulot.yaml in the folder or its nearest parent).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Override a var: NAME=VALUE (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
}

impl ProjectArgs {
    /// Options given after the subcommand win; `--set`s add up.
    fn merge(self, after: ProjectArgs) -> ProjectArgs {
        let mut set = self.set;
        set.extend(after.set);
        ProjectArgs { dir: after.dir.or(self.dir), file: after.file.or(self.file), set }
    }
}

/// The cache folder: for the commands that read or write the cache.
#[derive(Args, Debug, Clone, Default, PartialEq)]
struct CacheArgs {
    /// The cache folder (default: $XDG_CACHE_HOME/gvbuild or ~/.cache/gvbuild).
    #[arg(long, value_name = "DIR", env = "GVBUILD_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
}

impl CacheArgs {
    fn merge(self, after: CacheArgs) -> CacheArgs {
        CacheArgs { cache_dir: after.cache_dir.or(self.cache_dir) }
    }
}

/// The shared cache: for builds.
#[derive(Args, Debug, Clone, Default, PartialEq)]
struct RemoteArgs {
    /// A shared cache: the http:// or https:// URL of a Bazel HTTP remote cache, or the
    /// grpc://HOST:PORT[/INSTANCE] or grpcs:// URL of a REAPI server (also
    /// GVBUILD_REMOTE_CACHE; over gevulot.yaml's read-only `remote_cache:`, which an empty URL
    /// turns off).
    #[arg(long, value_name = "URL", env = "GVBUILD_REMOTE_CACHE", hide_env_values = true)]
    remote_cache: Option<String>,
    /// Read from the remote cache, never write to it (also GVBUILD_REMOTE_READ_ONLY=1).
    #[arg(long, env = "GVBUILD_REMOTE_READ_ONLY", value_parser = clap::builder::FalseyValueParser::new())]
    remote_read_only: bool,
    /// Trust the remote cache's TLS certificate through the CA certificates in FILE (PEM).
    #[arg(long, value_name = "FILE")]
    remote_ca: Option<PathBuf>,
    /// A client certificate for the remote cache (PEM; its key too, unless --remote-client-key).
    #[arg(long, value_name = "FILE")]
    remote_client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE")]
    remote_client_key: Option<PathBuf>,
    /// Give up on a remote request after this many seconds without progress (default 30).
    #[arg(long, value_name = "SECS", env = "GVBUILD_REMOTE_TIMEOUT")]
    remote_timeout: Option<u64>,
    /// A platform property added to every remote cache key, over gevulot.yaml's `platform:`
    /// (repeatable), e.g. `--platform os=debian-12`.
    #[arg(long = "platform", value_name = "NAME=VALUE", value_parser = parse_platform)]
    platform: Vec<(String, String)>,
    /// Execute every `run:` step on a REAPI engine: grpc://HOST:PORT[/INSTANCE] or grpcs://
    /// (also GVBUILD_REMOTE_EXEC). Its cache is the remote cache unless --remote-cache names one.
    #[arg(long, value_name = "URL", env = "GVBUILD_REMOTE_EXEC", hide_env_values = true)]
    remote_exec: Option<String>,
    /// Remote steps in flight at once (default 32); they take no local job slot.
    #[arg(long, value_name = "N")]
    remote_jobs: Option<usize>,
    /// Run steps locally when the engine cannot be reached, or is lost in the middle.
    #[arg(long)]
    remote_exec_fallback: bool,
}

/// A command-line value clap's parsers refuse, with what to write instead.
#[derive(Debug, thiserror::Error)]
enum ArgError {
    #[error("`{0}` is not a platform property name (printable ASCII without spaces or `=`)")]
    PlatformName(String),
    #[error("write NAME=VALUE, for example `os=debian-12`")]
    PlatformForm,
    #[error("-j takes the number of commands to run at once: 1 or more, or 0 for no limit (got `{0}`)")]
    Jobs(String),
}

/// `--platform NAME=VALUE`.
fn parse_platform(s: &str) -> Result<(String, String), ArgError> {
    match s.split_once('=') {
        Some((k, v)) if crate::config::is_platform_name(k) => Ok((k.to_string(), v.to_string())),
        Some((k, _)) => Err(ArgError::PlatformName(k.escape_debug().to_string())),
        None => Err(ArgError::PlatformForm),
    }
}

impl RemoteArgs {
    fn merge(self, after: RemoteArgs) -> RemoteArgs {
        RemoteArgs {
            remote_cache: after.remote_cache.or(self.remote_cache),
            remote_read_only: self.remote_read_only || after.remote_read_only,
            remote_ca: after.remote_ca.or(self.remote_ca),
            remote_client_cert: after.remote_client_cert.or(self.remote_client_cert),
            remote_client_key: after.remote_client_key.or(self.remote_client_key),
            remote_timeout: after.remote_timeout.or(self.remote_timeout),
            platform: self.platform.into_iter().chain(after.platform).collect(),
            remote_exec: after.remote_exec.or(self.remote_exec),
            remote_jobs: after.remote_jobs.or(self.remote_jobs),
            remote_exec_fallback: self.remote_exec_fallback || after.remote_exec_fallback,
        }
    }
}

/// Remote steps in flight by default: an engine queues what its workers cannot take yet, so
/// the bound is on the client's side of it (threads waiting, inputs uploaded ahead), not on
/// the farm's size; 32 keeps a farm of several workers busy from one client without holding
/// hundreds of open streams (BuildGrid serves a bounded number of calls at once).
const DEFAULT_REMOTE_JOBS: usize = 32;

/// gvbuild's credentials (`GVBUILD_REMOTE_HEADER*`, [`crate::config::is_credential`]), taken
/// out of the process's environment by [`take_credentials`].
static CREDENTIALS: std::sync::OnceLock<Vec<(String, std::ffi::OsString)>> = std::sync::OnceLock::new();

/// Move gvbuild's credentials out of the process's environment into memory, so that no child
/// process (a step, git, QEMU, a tool asked for its `--version`) can ever be handed them. Call
/// it first thing in `main`, before any thread starts (changing the environment while another
/// thread reads it is undefined behaviour in C's `setenv`).
pub fn take_credentials() {
    let taken: Vec<(String, std::ffi::OsString)> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            crate::config::is_credential(&k).then_some((k, v))
        })
        .collect();
    for (k, _) in &taken {
        std::env::remove_var(k);
    }
    let _ = CREDENTIALS.set(taken);
}

/// A credential by name: from [`take_credentials`]'s store, else (it was not called) the
/// environment.
fn credential(name: &str) -> Option<std::ffi::OsString> {
    match CREDENTIALS.get() {
        Some(taken) => taken.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
        None => std::env::var_os(name),
    }
}

/// The remote cache's headers, from `GVBUILD_REMOTE_HEADER` and `GVBUILD_REMOTE_HEADER_1..N`,
/// each `Name: value`. An error names the variable, never its value.
fn remote_headers() -> Result<Vec<(String, String)>, Error> {
    let mut names = vec!["GVBUILD_REMOTE_HEADER".to_string()];
    names.extend((1..).map(|i| format!("GVBUILD_REMOTE_HEADER_{i}")).take_while(|n| credential(n).is_some()));
    let mut headers = Vec::new();
    for name in names {
        let Some(v) = credential(&name) else { continue };
        let parsed = v.to_str().and_then(|v| v.split_once(':')).map(|(k, v)| (k.trim(), v.trim()));
        match parsed {
            Some((k, v)) if !k.is_empty() && k.bytes().all(|b| b.is_ascii_graphic()) => {
                headers.push((k.to_string(), v.to_string()))
            }
            _ => {
                return Err(Error::Usage(format!(
                    "{name} must read `Name: value` (for example `Authorization: Bearer TOKEN`)"
                )))
            }
        }
    }
    Ok(headers)
}

/// What a subcommand is given: the project and the cache, as it takes them.
struct GlobalArgs {
    dir: Option<PathBuf>,
    file: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    set: Vec<String>,
}

impl GlobalArgs {
    fn new(p: ProjectArgs, c: CacheArgs) -> GlobalArgs {
        GlobalArgs { dir: p.dir, file: p.file, cache_dir: c.cache_dir, set: p.set }
    }
}

#[derive(Args, Debug, Clone, Default, PartialEq)]
struct BuildArgs {
    /// Targets to build (default: the `default` target, else every target).
    #[arg(value_name = "TARGET")]
    targets: Vec<String>,
    /// A target to build (repeatable); the same as naming it.
    #[arg(long = "target", value_name = "NAME")]
    target: Vec<String>,
    /// Commands run at once (default: the number of cores; 0: no limit, as in ninja). Reading a
    /// big build file and checking which steps are fresh use every core, whatever N.
    #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = parse_jobs, allow_negative_numbers = true)]
    jobs: Option<usize>,
    /// Keep building what does not depend on a failed step.
    #[arg(short = 'k', long = "keep-going")]
    keep_going: bool,
    /// Show each step's output live.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// One JSON object per line on stdout, nothing else.
    #[arg(long)]
    json: bool,
    /// Say why each step that ran or was restored was not fresh.
    #[arg(long)]
    explain: bool,
    /// Print what would run and why; touch nothing.
    #[arg(short = 'n', long = "dry-run")]
    dry_run: bool,
    /// Run this target's step even if it is fresh or cached (repeatable; a group: its members).
    #[arg(long, value_name = "TARGET")]
    rebuild: Vec<String>,
    /// Run every selected step without reading the cache, and store the results (as make -B).
    #[arg(short = 'B', long = "rebuild-all")]
    rebuild_all: bool,
    /// Print only failures (and warnings).
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Run `run:` steps unsandboxed: each sees and may write the whole project, and a step that
    /// reads a file it did not declare is not caught (docs/sandbox.md).
    #[arg(long = "no-sandbox", env = "GVBUILD_NO_SANDBOX", value_parser = clap::builder::FalseyValueParser::new())]
    no_sandbox: bool,
    /// Run every selected `run:` step, unsandboxed, under strace, and list each project path it
    /// read or wrote that it did not declare (as ninja's `-t missingdeps`, for every read). Such
    /// a step's result is not cached, and the build exits 1 (docs/sandbox.md).
    #[arg(long = "trace-undeclared", conflicts_with = "dry_run")]
    trace_undeclared: bool,
    /// Human output on stderr: `gvbuild run` builds with stdout kept for the task's result.
    #[arg(skip)]
    human_to_stderr: bool,
}

impl BuildArgs {
    /// The options and targets given, as written on the command line, for messages.
    fn given(&self) -> Vec<String> {
        let mut out: Vec<String> = self.targets.iter().map(|t| format!("the target `{t}`")).collect();
        out.extend(self.target.iter().map(|t| format!("--target {t}")));
        if let Some(j) = self.jobs {
            out.push(format!("-j {j}"));
        }
        let flags = [
            (self.keep_going, "-k"),
            (self.verbose, "-v"),
            (self.json, "--json"),
            (self.explain, "--explain"),
            (self.dry_run, "-n"),
            (self.rebuild_all, "-B"),
            (self.quiet, "-q"),
            (self.no_sandbox, "--no-sandbox"),
            (self.trace_undeclared, "--trace-undeclared"),
        ];
        out.extend(flags.iter().filter(|(on, _)| *on).map(|(_, f)| f.to_string()));
        out.extend(self.rebuild.iter().map(|r| format!("--rebuild {r}")));
        out
    }
}

/// `-j N`: a count of commands, 0 for no limit.
fn parse_jobs(s: &str) -> Result<usize, ArgError> {
    s.parse::<usize>().map_err(|_| ArgError::Jobs(s.to_string()))
}

impl BuildArgs {
    /// `gvbuild -n build app`: flags given before `build` count as much as those after it.
    fn merge(self, after: BuildArgs) -> BuildArgs {
        let mut targets = self.targets;
        targets.extend(after.targets);
        let mut target = self.target;
        target.extend(after.target);
        let mut rebuild = self.rebuild;
        rebuild.extend(after.rebuild);
        BuildArgs {
            targets,
            target,
            jobs: after.jobs.or(self.jobs),
            keep_going: self.keep_going || after.keep_going,
            verbose: self.verbose || after.verbose,
            json: self.json || after.json,
            explain: self.explain || after.explain,
            dry_run: self.dry_run || after.dry_run,
            rebuild,
            rebuild_all: self.rebuild_all || after.rebuild_all,
            quiet: self.quiet || after.quiet,
            no_sandbox: self.no_sandbox || after.no_sandbox,
            trace_undeclared: self.trace_undeclared || after.trace_undeclared,
            human_to_stderr: self.human_to_stderr || after.human_to_stderr,
        }
    }
}

// Parsed once per run: a boxed variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build targets (the default command; also builds a target named like a subcommand).
    Build {
        #[command(flatten)]
        project: ProjectArgs,
        #[command(flatten)]
        cache: CacheArgs,
        #[command(flatten)]
        build: BuildArgs,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// List the targets.
    List {
        #[command(flatten)]
        project: ProjectArgs,
    },
    /// Print the graph (DOT, or JSON). Edges point from a target to what it depends on.
    Graph {
        #[command(flatten)]
        project: ProjectArgs,
        /// The output format.
        #[arg(long, value_enum, default_value = "dot")]
        format: GraphFormat,
    },
    /// Remove declared outputs (of the named targets, else of every target).
    Clean {
        #[command(flatten)]
        project: ProjectArgs,
        /// Targets whose outputs to remove (default: every target).
        #[arg(value_name = "TARGET")]
        targets: Vec<String>,
    },
    /// Inspect and maintain the cache.
    Cache {
        #[command(subcommand)]
        cmd: CacheCmd,
    },
    /// Print a JSON Schema: of gevulot.yaml (default) or of the manifest JSON written.
    Schema {
        /// Which schema.
        #[arg(value_enum, default_value = "gevulot")]
        of: SchemaOf,
    },
    /// Download a URL once and print the hash line to paste into a `fetch:` step.
    Hash {
        #[command(flatten)]
        cache: CacheArgs,
        /// The URL to download (http, https or file).
        url: String,
        /// Print the blake3 instead of the sha256.
        #[arg(long)]
        blake3: bool,
    },
    /// Print the shared-library closure of ELF files and where each library resolves.
    Libs {
        /// The ELF files.
        #[arg(required = true, value_name = "ELF")]
        elfs: Vec<PathBuf>,
        /// A folder searched before RUNPATH, as LD_LIBRARY_PATH would be (repeatable).
        #[arg(long, value_name = "DIR")]
        search: Vec<PathBuf>,
    },
    /// Show what a Nanos image holds: partitions, filesystems, root tuple, tree.
    Inspect {
        /// The image file.
        image: PathBuf,
        /// Copy the root filesystem's files out into this new or empty folder.
        #[arg(long, value_name = "DIR")]
        extract: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh or fish), generated from these definitions.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print gvbuild's man page (roff), generated from these definitions.
    Man,
    /// Run actions for a REAPI engine (BuildGrid...) as a Remote Workers API bot.
    Worker(WorkerArgs),
    /// Boot an image as a Gevulot node boots it, hand it a task, and print its result.
    ///
    /// TARGET is built first (as `cargo run` builds), then its image boots; IMAGE is booted as
    /// it is. QEMU gets the node's arguments; the task goes in through the workspace's
    /// task.json and comes back as task_result.json (the shim's file protocol). The result,
    /// each file it reports and the console log land in --into. Exits 0 only for an `Ok` result.
    #[command(
        after_help = "Examples:\n  gvbuild run image --input sample.in -- --input /workspace/sample.in\n  gvbuild run build/prover.img --gpu 0000:01:00.0 --timeout 600"
    )]
    Run(Box<RunArgs>),
}

/// `gvbuild run`.
#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    project: ProjectArgs,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    remote: RemoteArgs,
    /// An image target of the project (default: the `default` target), or an image file.
    #[arg(value_name = "TARGET|IMAGE")]
    what: Option<String>,
    /// The program's arguments (the task's `args`), after `--`.
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
    /// An input file, copied into the workspace under its name and listed in the task's
    /// `files` (repeatable). In the VM it is /workspace/NAME.
    #[arg(short = 'i', long = "input", value_name = "FILE")]
    inputs: Vec<PathBuf>,
    /// The task id.
    #[arg(long, value_name = "ID", default_value = crate::vm::task::DEFAULT_ID)]
    task_id: String,
    /// The workspace folder shared with the VM (default: a fresh temporary folder).
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// Where the result, the reported files and console.log go (default: IMAGE's name with
    /// `.run` beside it, e.g. build/prover.run/). Emptied first, so it is refused when it
    /// overlaps the workspace, or holds files but no console.log of an earlier run.
    #[arg(long, value_name = "DIR")]
    into: Option<PathBuf>,
    /// CPUs (default: the manifest's RunConfig.CPUs, else the node's 2).
    #[arg(long, value_name = "N")]
    cpus: Option<u32>,
    /// Memory, e.g. `4g` (default: the manifest's RunConfig.Memory, else the node's 2048 MiB).
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,
    /// A GPU's PCI address passed through with vfio-pci, e.g. 0000:01:00.0 (repeatable).
    #[arg(long = "gpu", value_name = "ADDR")]
    gpus: Vec<String>,
    /// Seconds before the VM is killed (the node's task limit is 1800).
    #[arg(long, value_name = "SECS", default_value_t = 1800)]
    timeout: u64,
    /// The QEMU binary (default: qemu-system-x86_64 on PATH).
    #[arg(long, value_name = "PATH", env = "GVBUILD_QEMU")]
    qemu: Option<PathBuf>,
    /// `auto`: the node's accel=kvm:tcg, or TCG where KVM opens but cannot run a guest.
    #[arg(long, value_enum, default_value = "auto")]
    accel: AccelArg,
    /// Do not stream the console (it is still kept in console.log).
    #[arg(short = 'q', long)]
    quiet: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum AccelArg {
    Auto,
    Kvm,
    Tcg,
}

/// `gvbuild worker`.
#[derive(Args, Debug)]
struct WorkerArgs {
    /// The engine: grpc://HOST:PORT[/INSTANCE] (or grpcs://); its Bots service and CAS.
    #[arg(long, value_name = "URL", env = "GVBUILD_WORKER_SERVER", hide_env_values = true)]
    server: String,
    /// A device property actions are matched against (repeatable), e.g. `--platform OSFamily=linux`.
    #[arg(long = "platform", value_name = "NAME=VALUE", value_parser = parse_platform)]
    platform: Vec<(String, String)>,
    /// Offer a tool found on PATH (repeatable): advertised as `tool:NAME=IDENTITY`, printed at
    /// start, and checked again before each action that asks for it.
    #[arg(long = "tool", value_name = "NAME")]
    tool: Vec<String>,
    /// Actions run at once (default: the number of cores).
    #[arg(short = 'j', long, value_name = "N", value_parser = parse_jobs)]
    jobs: Option<usize>,
    /// Where actions run, one fresh folder each (default: $TMPDIR/gvbuild-worker).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// The bot's stable id (default: HOSTNAME-PID); a restarted worker with the same id gets
    /// its unfinished leases back at once.
    #[arg(long, value_name = "ID")]
    bot_id: Option<String>,
    /// Trust the server's TLS certificate through the CA certificates in FILE (PEM).
    #[arg(long, value_name = "FILE")]
    remote_ca: Option<PathBuf>,
    /// A client certificate (PEM; its key too, unless --remote-client-key).
    #[arg(long, value_name = "FILE")]
    remote_client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE")]
    remote_client_key: Option<PathBuf>,
    /// Give up on a CAS request after this many seconds without progress (default 30).
    #[arg(long, value_name = "SECS", env = "GVBUILD_REMOTE_TIMEOUT")]
    remote_timeout: Option<u64>,
}

/// The subcommand names: reserved words on the command line (a target of such a name is built
/// with `gvbuild build NAME` or `--target NAME`).
pub const SUBCOMMANDS: &[&str] = &[
    "build",
    "list",
    "graph",
    "clean",
    "cache",
    "schema",
    "hash",
    "libs",
    "inspect",
    "completions",
    "man",
    "worker",
    "run",
    "help",
];

#[derive(Subcommand, Debug)]
enum CacheCmd {
    /// Entries, blobs and size.
    Stats {
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Evict least-recently-used entries until the cache fits in a size (default 20G).
    Gc {
        #[command(flatten)]
        cache: CacheArgs,
        /// The size to trim to, such as 5G or 500M.
        #[arg(long, value_name = "SIZE")]
        max_size: Option<String>,
    },
    /// Rehash every blob; remove damaged ones and the entries that need them.
    Verify {
        #[command(flatten)]
        cache: CacheArgs,
    },
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum SchemaOf {
    Gevulot,
    Manifest,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum GraphFormat {
    Dot,
    Json,
}

#[derive(Debug, Error, Diagnostic)]
pub enum Error {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Config(#[from] ConfigErrors),
    #[error("{0}")]
    #[diagnostic(code(gvbuild::usage))]
    Usage(String),
    #[error("no gevulot.yaml in {0} or any parent folder")]
    #[diagnostic(
        code(gvbuild::no_build_file),
        help("run gvbuild inside a project, name its folder with -C DIR or its file with -f FILE")
    )]
    NoBuildFile(String),
    #[error("{0}")]
    #[diagnostic(
        code(gvbuild::read_build_file),
        help("name an existing file with -f FILE, or a folder with -C DIR")
    )]
    ReadBuildFile(String),
    #[error("{0}")]
    #[diagnostic(code(gvbuild::io))]
    Io(String),
    #[error(transparent)]
    #[diagnostic(code(gvbuild::cache))]
    Cache(#[from] CacheError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Vm(#[from] crate::vm::VmError),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::Usage(_) | Error::NoBuildFile(_) | Error::ReadBuildFile(_) => 2,
            // As a build that is interrupted.
            Error::Vm(crate::vm::VmError::Interrupted) => 130,
            Error::Io(_) | Error::Cache(_) | Error::Vm(_) => 1,
        }
    }
}

fn io_error<'a>(what: &str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    let what = what.to_string();
    move |e| Error::Io(format!("{what} {}: {e}", path.display()))
}

/// Run gvbuild with these arguments; returns the exit status. Over 100 lines for a reason: it
/// is one `match` with an arm per subcommand, each checking the options it takes and handing
/// them to the subcommand's function; split, the arms would only move.
pub fn run(args: Vec<OsString>) -> Result<u8, Error> {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return Ok(code);
        }
    };
    let top_project = cli.project;
    let top_cache = cli.cache;
    let top_build = cli.build;
    let top_remote = cli.remote;
    // Options before a subcommand count as much as after it, where the subcommand takes them.
    let takes = |project: bool, build: bool, name: &str| -> Result<(), Error> {
        if !project && top_project != ProjectArgs::default() {
            return Err(Error::Usage(format!("`gvbuild {name}` does not take -C, -f or --set")));
        }
        if !build && top_build != BuildArgs::default() {
            return Err(Error::Usage(format!(
                "`gvbuild {name}` does not take {}; see `gvbuild {name} --help`",
                top_build.given().join(", ")
            )));
        }
        Ok(())
    };
    let g = |p: ProjectArgs, c: CacheArgs| {
        GlobalArgs::new(top_project.clone().merge(p), top_cache.clone().merge(c))
    };
    match cli.cmd {
        None => {
            let json = top_build.json;
            json_errors(
                json,
                build(&g(ProjectArgs::default(), CacheArgs::default()), top_build.clone(), top_remote, false),
            )
        }
        Some(Cmd::Build { project, cache, build: b, remote }) => {
            let args = top_build.clone().merge(b);
            json_errors(args.json, build(&g(project, cache), args, top_remote.merge(remote), true))
        }
        Some(Cmd::List { project }) => {
            takes(true, false, "list")?;
            list(&g(project, CacheArgs::default()))
        }
        Some(Cmd::Graph { project, format }) => {
            takes(true, false, "graph")?;
            graph(&g(project, CacheArgs::default()), format)
        }
        Some(Cmd::Clean { project, targets }) => {
            takes(true, false, "clean")?;
            clean(&g(project, CacheArgs::default()), &targets)
        }
        Some(Cmd::Cache { cmd }) => {
            takes(false, false, "cache")?;
            let cache = match &cmd {
                CacheCmd::Stats { cache } | CacheCmd::Gc { cache, .. } | CacheCmd::Verify { cache } => {
                    cache.clone()
                }
            };
            cache_cmd(&g(ProjectArgs::default(), cache), cmd)
        }
        Some(Cmd::Schema { of }) => {
            takes(false, false, "schema")?;
            out(&match of {
                SchemaOf::Gevulot => schema_json(),
                SchemaOf::Manifest => manifest_schema_json(),
            });
            Ok(0)
        }
        Some(Cmd::Hash { cache, url, blake3 }) => {
            takes(false, false, "hash")?;
            hash(&g(ProjectArgs::default(), cache), &url, blake3)
        }
        Some(Cmd::Libs { elfs, search }) => {
            takes(false, false, "libs")?;
            libs(&elfs, &search)
        }
        Some(Cmd::Inspect { image, extract, json }) => {
            takes(false, false, "inspect")?;
            inspect(&image, extract.as_deref(), json)
        }
        Some(Cmd::Completions { shell }) => {
            takes(false, false, "completions")?;
            let mut buf = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "gvbuild",
                &mut buf,
            );
            out(&String::from_utf8_lossy(&buf));
            Ok(0)
        }
        Some(Cmd::Run(r)) => {
            takes(true, false, "run")?;
            let r = *r;
            let g = g(r.project.clone(), r.cache.clone());
            run_image(&g, r, top_remote)
        }
        Some(Cmd::Worker(w)) => {
            takes(false, false, "worker")?;
            worker(w)
        }
        Some(Cmd::Man) => {
            takes(false, false, "man")?;
            man()
        }
    }
}

/// `gvbuild libs`: the shared-library closure of ELF files, one line per library.
fn libs(elfs: &[PathBuf], search: &[PathBuf]) -> Result<u8, Error> {
    let base = std::env::current_dir().unwrap_or_default();
    match crate::steps::elf::closure(elfs, search, &base) {
        Ok(c) => {
            out(&c.to_string());
            Ok(0)
        }
        Err(e) => {
            note(&format!("error: {e}"));
            Ok(1)
        }
    }
}

/// `gvbuild man`: the man page, rendered from the command line's definition.
fn man() -> Result<u8, Error> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
        .render(&mut buf)
        .map_err(|e| Error::Io(format!("cannot render the man page: {e}")))?;
    out(&String::from_utf8_lossy(&buf));
    Ok(0)
}

fn inspect(image: &Path, extract: Option<&Path>, json: bool) -> Result<u8, Error> {
    let shown = image.display();
    if let Some(dir) = extract {
        return match crate::inspect::extract(image, dir) {
            Ok(n) => {
                note(&format!("extracted {n} files of {shown} into {}", dir.display()));
                Ok(0)
            }
            Err(e) => {
                note(&format!("error: {shown}: {e}"));
                Ok(1)
            }
        };
    }
    match crate::inspect::describe(image) {
        Ok(d) if json => {
            out(&format!("{}\n", serde_json::to_string_pretty(&d).unwrap_or_default()));
            Ok(0)
        }
        Ok(d) => {
            out(&crate::inspect::render(&d));
            Ok(0)
        }
        Err(e) => {
            note(&format!("error: {shown}: {e}"));
            Ok(1)
        }
    }
}

/// The JSON Schema of gevulot.yaml, as committed in schema/gevulot.schema.json.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(crate::config::raw::RawFile);
    let mut s = serde_json::to_string_pretty(&schema).unwrap_or_default();
    s.push('\n');
    s
}

/// The JSON Schema of the manifest JSON, as committed in schema/nanos-manifest.schema.json.
pub fn manifest_schema_json() -> String {
    let schema = schemars::schema_for!(crate::steps::manifest::Manifest);
    let mut s = serde_json::to_string_pretty(&schema).unwrap_or_default();
    s.push('\n');
    s
}

#[allow(clippy::print_stdout)]
fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(text.as_bytes());
}

/// The project: where gevulot.yaml is, its text, and its state folder.
struct Project {
    root: PathBuf,
    source: Source,
    state_dir: PathBuf,
}

/// The build file is `-f FILE`, else `gevulot.yaml` in the folder (`-C DIR` or the current one)
/// or its nearest parent that has one, as cargo finds Cargo.toml and just its justfile. The
/// project's folder is the file's.
fn open_project(g: &GlobalArgs) -> Result<Project, Error> {
    let cwd =
        std::env::current_dir().map_err(|e| Error::Io(format!("cannot read the current folder: {e}")))?;
    let base = match &g.dir {
        Some(d) => cwd.join(d),
        None => cwd,
    };
    let (file, shown) = match &g.file {
        Some(f) => (base.join(f), f.display().to_string()),
        None => {
            let mut up = 0usize;
            let mut found = None;
            for dir in base.ancestors() {
                let candidate = dir.join("gevulot.yaml");
                if candidate.is_file() {
                    found = Some(candidate);
                    break;
                }
                up += 1;
            }
            let Some(file) = found else {
                return Err(Error::NoBuildFile(base.display().to_string()));
            };
            let rel: PathBuf = std::iter::repeat_n("..", up).collect::<PathBuf>().join("gevulot.yaml");
            let shown = match &g.dir {
                Some(d) => d.join(rel),
                None => rel,
            };
            (file, shown.display().to_string())
        }
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| Error::ReadBuildFile(format!("cannot read the build file {}: {e}", file.display())))?;
    let file = std::fs::canonicalize(&file).unwrap_or(file);
    let root = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let state_dir = root.join(".gvbuild");
    Ok(Project { root, source: Source::new(shown, text), state_dir })
}

fn prepare_state_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(io_error("cannot create the state folder", dir))?;
    let ignore = dir.join(".gitignore");
    if !ignore.exists() {
        let _ = std::fs::write(&ignore, "# gvbuild's state folder: never commit it\n*\n");
    }
    Ok(())
}

fn overrides(g: &GlobalArgs) -> Result<Vec<(String, String)>, Error> {
    g.set
        .iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(Error::Usage(format!("--set takes NAME=VALUE, got `{s}`"))),
        })
        .collect()
}

fn load_graph(g: &GlobalArgs, p: &Project) -> Result<Graph, Error> {
    prepare_state_dir(&p.state_dir)?;
    Ok(Graph::load(&p.source, &overrides(g)?, &p.state_dir)?)
}

fn project_lock(p: &Project) -> Result<lock::Lock, Error> {
    let path = p.state_dir.join("lock");
    lock::acquire(&path, lock::Mode::Exclusive, |holder| {
        let who = if holder.is_empty() { String::new() } else { format!(" ({holder})") };
        note(&format!("gvbuild: waiting for another gvbuild running in this project{who} to finish..."));
    })
    .map_err(io_error("cannot lock", &path))
}

/// A cache folder inside the project must not be, hold or be held by a declared input of a step
/// to build: its files change while the build runs, so they would key the step, be shipped to
/// remote workers, and be shown to sandboxed steps. (A glob input is not checked.)
fn refuse_cache_as_input(graph: &Graph, selected: &[usize], root: &Path, cache: &Path) -> Result<(), Error> {
    let (Ok(cache), Ok(root)) = (std::fs::canonicalize(cache), std::fs::canonicalize(root)) else {
        return Ok(());
    };
    let Some(rel) = cache.strip_prefix(&root).ok().and_then(|r| r.to_str()).filter(|r| !r.is_empty()) else {
        return Ok(());
    };
    for &i in selected {
        let t = graph.target(i);
        let holder = t.inputs.iter().find(|input| {
            !input.glob
                && !input.path.starts_with('/')
                && (input.path == "."
                    || crate::paths::is_within(rel, &input.path)
                    || crate::paths::is_within(&input.path, rel))
        });
        if let Some(input) = holder {
            return Err(Error::Usage(format!(
                "input `{}` of target `{}` holds or is in the cache folder `{rel}`, whose files change \
                 while the build runs; name the files the step reads, or move the cache (`--cache-dir`)",
                input.path, t.name
            )));
        }
    }
    Ok(())
}

/// The cache folder: `--cache-dir` or `GVBUILD_CACHE_DIR`, a relative one taken from `-C DIR`
/// as every other path is ("run as if started in DIR"), else [`cache::default_dir`].
fn cache_dir(g: &GlobalArgs) -> PathBuf {
    match g.cache_dir.clone().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => match &g.dir {
            Some(base) if d.is_relative() => base.join(d),
            _ => d,
        },
        None => cache::default_dir(),
    }
}

fn open_cache(g: &GlobalArgs, mode: lock::Mode) -> Result<(Cache, lock::Lock), Error> {
    let dir = cache_dir(g);
    let cache = Cache::open(&dir)?;
    let path = dir.join("lock");
    let l = lock::acquire(&path, mode, |_| {
        note("gvbuild: waiting for `gvbuild cache gc` or `cache verify` to finish with the cache...");
    })
    .map_err(io_error("cannot lock", &path))?;
    Ok((cache, l))
}

/// `gvbuild run`: build the target (or take the image file), boot it on a task, report.
fn run_image(g: &GlobalArgs, r: RunArgs, remote: RemoteArgs) -> Result<u8, Error> {
    use crate::vm::{self, qemu};
    // Ctrl-C and SIGTERM from here on stop the run, during the build and the KVM probe too.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
    // Paths on the command line are read from where -C says gvbuild runs.
    let cwd =
        std::env::current_dir().map_err(|e| Error::Io(format!("cannot read the current folder: {e}")))?;
    let base = g.dir.as_ref().map_or_else(|| cwd.clone(), |d| cwd.join(d));
    let here = |p: &Path| base.join(p);
    let (image, run_config) = match image_to_run(g, &r, remote, &here)? {
        Ok(found) => found,
        // The image target's build failed: its status is the run's.
        Err(code) => return Ok(code),
    };
    let qemu_path = qemu::find(r.qemu.as_deref()).ok_or_else(|| {
        vm::VmError::QemuMissing(r.qemu.as_ref().map_or(qemu::QEMU.into(), |q| q.display().to_string()))
    })?;
    let choice = match r.accel {
        AccelArg::Auto => qemu::AccelChoice::Auto,
        AccelArg::Kvm => qemu::AccelChoice::Kvm,
        AccelArg::Tcg => qemu::AccelChoice::Tcg,
    };
    let memory = match r.memory.as_deref() {
        None => None,
        Some(m) => Some(qemu::memory_mb(m).ok_or_else(|| {
            Error::Usage(format!("memory `{m}` is not a size of 1 MiB or more, such as 2048m or 4g"))
        })?),
    };
    if r.cpus == Some(0) {
        return Err(Error::Usage("--cpus must be 1 or more".into()));
    }
    let (cpus, memory_mb) = crate::steps::manifest::machine_size(r.cpus, memory, run_config.as_ref())
        .map_err(|e| Error::Usage(e.to_string()))?;
    let stem = image.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
    let into = r.into.as_deref().map_or_else(|| image.with_file_name(format!("{stem}.run")), here);
    let workspace_given = r.workspace.as_deref().map(here);
    check_run_folders(&into, workspace_given.as_deref())?;
    let inputs = run_inputs(&r, &here)?;
    let (accel, accel_note) =
        qemu::choose_accel(&qemu_path, choice).map_err(|e| Error::Usage(e.to_string()))?;
    if stop.load(Ordering::SeqCst) {
        return Err(vm::VmError::Interrupted.into());
    }
    if into.exists() {
        fsutil::remove_path(&into).map_err(io_error("cannot empty", &into))?;
    }
    std::fs::create_dir_all(&into).map_err(io_error("cannot create", &into))?;
    let temp_ws = match &workspace_given {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("gvbuild-workspace-")
                .tempdir()
                .map_err(|e| Error::Io(format!("cannot create a workspace folder: {e}")))?,
        ),
    };
    let workspace = workspace_given
        .clone()
        .or_else(|| temp_ws.as_ref().map(|t| t.path().to_path_buf()))
        .unwrap_or_default();
    let task = vm::Task {
        id: r.task_id.clone(),
        args: r.args.clone(),
        files: inputs.iter().map(|(n, _)| n.clone()).collect(),
    };
    let machine =
        vm::MachineSpec { image: image.clone(), workspace, cpus, memory_mb, gpus: r.gpus.clone(), accel };
    // A jobs log of this run's own (never a build's, whose steps it must not touch) lets the
    // reaper kill QEMU if gvbuild itself is killed.
    let jobs_dir = tempfile::Builder::new()
        .prefix("gvbuild-run-")
        .tempdir()
        .map_err(|e| Error::Io(format!("cannot create a folder for the jobs log: {e}")))?;
    let jobs = crate::jobs::Jobs::new(jobs_dir.path());
    if let Some(n) = accel_note {
        note(&format!("note: {n}"));
    }
    note(&format!(
        "booting {} ({cpus} CPUs, {memory_mb} MiB{}), task `{}`",
        image.display(),
        if r.gpus.is_empty() { String::new() } else { format!(", GPUs {}", r.gpus.join(" ")) },
        task.id
    ));
    let show = |line: &str| note(&format!("vm| {line}"));
    let run = vm::TaskRun {
        qemu: qemu_path,
        machine,
        task,
        inputs,
        timeout: std::time::Duration::from_secs(r.timeout),
        console: into.join(vm::CONSOLE_LOG),
        live: if r.quiet { None } else { Some(&show) },
    };
    let finished = vm::run_task(&run, &into, &jobs, &stop);
    jobs.finish();
    report_run(finished, &into)
}

/// What `gvbuild run` boots: an image file, or an `image:` target (the default one if none is
/// named), built first, with the RunConfig of its manifest. `Ok(Err(code))` when that build
/// failed.
#[allow(clippy::type_complexity)]
fn image_to_run(
    g: &GlobalArgs,
    r: &RunArgs,
    remote: RemoteArgs,
    here: &dyn Fn(&Path) -> PathBuf,
) -> Result<Result<(PathBuf, Option<crate::steps::manifest::RunConfig>), u8>, Error> {
    // An existing file is an image; anything else names a target.
    if let Some(w) = r.what.as_deref().filter(|w| here(Path::new(w)).is_file()) {
        return Ok(Ok((here(Path::new(w)), None)));
    }
    let p = open_project(g)?;
    let graph = load_graph(g, &p)?;
    let name =
        match (&r.what, &graph.project.default) {
            (Some(n), _) | (None, Some(n)) => n.clone(),
            (None, None) => return Err(Error::Usage(
                "name an image target or an image file: `gvbuild run TARGET` (this project has no `default`)"
                    .into(),
            )),
        };
    let Some(t) = graph.project.find(&name) else {
        return Err(match r.what.as_deref().filter(|w| w.contains('/') || w.ends_with(".img")) {
            Some(w) => Error::Usage(format!("no image file {w} (and no target of that name)")),
            None => unknown_target(&graph, &name),
        });
    };
    let Some(step) = t.step.as_ref().filter(|s| s.makes_image()) else {
        return Err(Error::Usage(format!(
            "target `{name}` is not an `image:` step; `gvbuild run` boots an image target or an image file"
        )));
    };
    let image = p.root.join(&t.outputs[0].path);
    let args = BuildArgs { targets: vec![name.clone()], human_to_stderr: true, ..BuildArgs::default() };
    let code = build(g, args, remote, true)?;
    if code != 0 {
        return Ok(Err(code));
    }
    // Read after the build, which may have just written the manifest.
    Ok(Ok((image, step.image_run_config(&p.root))))
}

/// `--input` files, by the name each has in the workspace: each must exist, and no two may
/// share a name.
fn run_inputs(r: &RunArgs, here: &dyn Fn(&Path) -> PathBuf) -> Result<Vec<(String, PathBuf)>, Error> {
    let mut inputs: Vec<(String, PathBuf)> = Vec::new();
    for f in r.inputs.iter().map(|f| here(f)) {
        let Some(name) = f.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            return Err(Error::Usage(format!("--input {} names no file", f.display())));
        };
        if !f.is_file() {
            return Err(Error::Usage(format!("--input {}: no such file", f.display())));
        }
        if let Some((_, first)) = inputs.iter().find(|(n, _)| *n == name) {
            return Err(Error::Usage(format!(
                "--input {} and --input {} would both be /workspace/{name}: rename one",
                first.display(),
                f.display()
            )));
        }
        inputs.push((name, f));
    }
    Ok(inputs)
}

/// Say how a run ended: the result's data on stdout, and where the result, its files and the
/// console are; a failure is the VM's diagnosis, with the console's path.
fn report_run(finished: Result<crate::vm::Finished, crate::vm::VmError>, into: &Path) -> Result<u8, Error> {
    use crate::vm;
    let console = into.join(vm::CONSOLE_LOG);
    match finished {
        Ok(f) => {
            out(&format!("{}\n", vm::task::data_text(&f.result.data).trim_end_matches('\n')));
            let files: Vec<String> = f.files.iter().map(|p| into.join(p).display().to_string()).collect();
            note(&format!(
                "task `{}`: Ok after {:.1} s; result in {}{}; console: {}",
                f.result.id,
                f.boot_time.as_secs_f64(),
                into.display(),
                if files.is_empty() { String::new() } else { format!(", files: {}", files.join(", ")) },
                console.display()
            ));
            Ok(0)
        }
        Err(e) => {
            note(&format!("console: {}", console.display()));
            Err(e.into())
        }
    }
}

/// `--into` is emptied before a run: refuse what emptying would lose. It must not be, hold or
/// sit inside the workspace, and a folder there must be empty or an earlier result (it holds
/// `console.log`).
fn check_run_folders(into: &Path, workspace: Option<&Path>) -> Result<(), Error> {
    let abs =
        |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| std::path::absolute(p).unwrap_or(p.into()));
    let into_abs = abs(into);
    if let Some(ws) = workspace.map(abs) {
        if into_abs.starts_with(&ws) || ws.starts_with(&into_abs) {
            return Err(Error::Usage(format!(
                "--into {} and --workspace {} overlap: the result folder is emptied before the run, and the workspace is where the VM writes; name two separate folders",
                into.display(),
                ws.display()
            )));
        }
    }
    if into.is_file() {
        return Err(Error::Usage(format!("--into {} is a file, not a folder", into.display())));
    }
    let earlier = into.join(crate::vm::CONSOLE_LOG).is_file();
    let empty = std::fs::read_dir(into).map(|mut d| d.next().is_none()).unwrap_or(true);
    if into.is_dir() && !empty && !earlier {
        return Err(Error::Usage(format!(
            "--into {} holds files that are not an earlier run's result (no {}): gvbuild empties it before a run; name a new or empty folder",
            into.display(),
            crate::vm::CONSOLE_LOG
        )));
    }
    Ok(())
}

/// "no target named `X`", with the nearest target's name when there is one.
fn unknown_target(graph: &Graph, name: &str) -> Error {
    let hint = crate::diag::suggest(name, graph.project.targets.iter().map(|t| t.name.as_str()))
        .map(|h| format!("; {h}"))
        .unwrap_or_else(|| "; `gvbuild list` shows the targets".to_string());
    Error::Usage(format!("no target named `{name}` in this project{hint}"))
}

/// A word on the command line that names no target but is close to a subcommand's name.
fn subcommand_hint(names: &[String]) -> Option<String> {
    names.iter().find_map(|n| {
        crate::diag::did_you_mean(n, SUBCOMMANDS.iter().copied())
            .map(|c| format!("`{n}` is no target; did you mean the subcommand `gvbuild {c}`?"))
    })
}

/// `gvbuild build` (and `gvbuild` with targets, or with none): load the graph, select the
/// targets, open the cache and the servers, run the build, then wait for uploads and save the
/// state. `explicit_build` is whether `build` was written, after which a word is always a
/// target (without it, an unknown word may be a mistyped subcommand). Returns the exit status.
fn build(
    g: &GlobalArgs,
    args: BuildArgs,
    remote_args: RemoteArgs,
    explicit_build: bool,
) -> Result<u8, Error> {
    let mut timings = Timings::new();
    let dry = args.dry_run;
    let (mut p, _lock, jobs) = open_for_build(g, &args, explicit_build)?;
    timings.mark("open and lock");
    // The stat cache and the state are read on another core while this one reads the graph
    // (under the lock, so no other gvbuild is writing them).
    let loader = {
        let dir = p.state_dir.clone();
        std::thread::Builder::new()
            .name("gvbuild-load".into())
            .spawn(move || (StatCache::load(&dir.join("stat.bin")), State::load(&dir)))
    };
    let graph = Graph::load_with(&p.source, &overrides(g)?, &p.state_dir, !dry)?;
    timings.mark("load graph");
    let (selected, mut rebuild) = select_for_build(&graph, &args, explicit_build)?;
    if args.trace_undeclared {
        if crate::fingerprint::tools::resolve("strace", &p.root).is_none() {
            return Err(Error::Usage(
                "--trace-undeclared runs each step under strace, which is not on PATH".into(),
            ));
        }
        // Every `run:` step runs, to be traced, whatever the cache holds.
        let runs = selected
            .iter()
            .map(|&i| graph.target(i))
            .filter(|t| t.step.as_ref().is_some_and(|s| s.as_run().is_some()));
        rebuild.extend(runs.map(|t| t.name.clone()));
    }
    check_unset_vars(&graph, &selected, &p.source)?;
    // Nothing below points into the build file: its text (a byte per byte of gevulot.yaml, the
    // largest single block of a no-op build's memory after the graph) goes now.
    p.source.text = Arc::new(String::new());
    let (mut cache, _cache_lock) = if dry {
        (Cache::open_read_only(&cache_dir(g)), None)
    } else {
        let (c, l) = open_cache(g, lock::Mode::Shared)?;
        (c, Some(l))
    };
    refuse_cache_as_input(&graph, &selected, &p.root, cache.root())?;
    let servers = open_servers(&remote_args, dry, &graph, &mut cache)?;
    let opts = build_opts(&args, selected.len(), rebuild);
    let explain = (opts.explain || opts.dry_run).then(|| ExplainStore::load(&p.state_dir));
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, interrupted.clone());
    }
    let mut reporter = Reporter::new(opts.json, opts.explain, opts.dry_run, opts.verbose, opts.quiet);
    if args.human_to_stderr {
        reporter.human_to_stderr();
    }
    // The engine's own cache fails with it: one warning says so.
    let mut engine_warned = servers.exec_warning.is_some() && servers.cache_is_engine;
    if let Some(w) = &servers.exec_warning {
        reporter.warn(w);
    }
    let (mut stat, state) = match loader.map(|h| h.join()) {
        Ok(Ok(loaded)) => loaded,
        // No thread could be started (or it panicked): read them here.
        _ => (StatCache::load(&p.state_dir.join("stat.bin")), State::load(&p.state_dir)),
    };
    stat.set_root(&p.root);
    let ctx = Arc::new(Ctx {
        root: p.root.clone(),
        state_dir: p.state_dir.clone(),
        stat,
        state: RwLock::new(state),
        graph,
        cache,
        tools: ToolCache::default(),
        jobs,
        explain,
        slots: crate::jobs::Slots::new(opts.jobs),
        progress: reporter.multi(),
        opts: opts.clone(),
        interrupted: interrupted.clone(),
        producers: Default::default(),
        producers_sorted: Default::default(),
        scratch_folders: Default::default(),
        walks: Default::default(),
        closures: Default::default(),
        glob_warnings: Default::default(),
        remote: servers.remote,
        remote_steps: servers.remote_steps,
        remote_exec: servers.remote_exec,
        platform: remote_args.platform.iter().cloned().collect(),
        sandbox: crate::sandbox::Sandboxing::new(!opts.no_sandbox && !opts.trace_undeclared, &p.root),
        undeclared_steps: Default::default(),
    });
    timings.mark("load state");
    let mut summary = exec::build(ctx.clone(), &selected, &mut reporter);
    timings.mark("build");
    if let Some(w) = ctx.remote_exec.as_ref().and_then(|r| r.warning()) {
        engine_warned |= servers.cache_is_engine;
        reporter.warn(&w);
    }
    finish_with_servers(&ctx, &mut reporter, servers.cache_is_engine, engine_warned);
    if ctx.remote.is_some() {
        timings.mark("uploads");
    }
    ctx.jobs.finish();
    let was_interrupted = interrupted.load(Ordering::SeqCst);
    if !opts.dry_run {
        save_after_build(&ctx, &mut reporter, &p.state_dir);
    }
    timings.mark("save state");
    warn_empty_globs(&ctx, &mut reporter);
    let undeclared = ctx.undeclared_steps.load(Ordering::SeqCst);
    summary.undeclared = undeclared;
    if undeclared > 0 {
        let steps = if undeclared == 1 { "1 step" } else { &format!("{undeclared} steps") };
        reporter.warn(&format!(
            "--trace-undeclared: {steps} touched paths they did not declare (listed above): declare them, or the sandbox hides or refuses them"
        ));
    }
    reporter.finish(&summary, was_interrupted);
    timings.report();
    // The graph, the state and the stat cache are saved: freeing their many small allocations
    // one by one would cost a no-op build an eighth of its time, for a process about to exit.
    std::mem::forget(ctx);
    Ok(match exit_code(&summary, was_interrupted) {
        0 if undeclared > 0 => 1,
        code => code,
    })
}

/// A build's exit status: 130 after Ctrl-C or SIGTERM, 1 when a step failed, was skipped or
/// was interrupted, else 0.
fn exit_code(summary: &exec::Summary, interrupted: bool) -> u8 {
    if interrupted {
        130
    } else if summary.failed > 0 || summary.skipped > 0 || summary.interrupted > 0 {
        1
    } else {
        0
    }
}

/// One warning per input glob that matched no file, each once.
fn warn_empty_globs(ctx: &Ctx, reporter: &mut Reporter) {
    if let Ok(mut empty) = ctx.glob_warnings.lock() {
        empty.sort();
        empty.dedup();
        for (target, glob) in empty.iter() {
            reporter.warn(&format!("input glob `{glob}` of target `{target}` matches no file"));
        }
    }
}

/// Find the project and, unless this is a dry run (which writes nothing at all: no state
/// folder, no lock, no parse cache, no cache), make its state folder, take its lock and stop
/// steps an earlier, killed gvbuild left running.
fn open_for_build(
    g: &GlobalArgs,
    args: &BuildArgs,
    explicit_build: bool,
) -> Result<(Project, Option<lock::Lock>, Jobs), Error> {
    let p = match open_project(g) {
        Ok(p) => p,
        // `gvbuild lsit` outside a project: the likelier mistake is the subcommand's name.
        Err(Error::NoBuildFile(dir)) => {
            return Err(match subcommand_hint(&args.targets).filter(|_| !explicit_build) {
                Some(hint) => Error::Usage(format!(
                    "{hint} (and there is no gevulot.yaml in {dir} or any parent folder)"
                )),
                None => Error::NoBuildFile(dir),
            })
        }
        Err(e) => return Err(e),
    };
    let lock = if args.dry_run {
        None
    } else {
        prepare_state_dir(&p.state_dir)?;
        Some(project_lock(&p)?)
    };
    let jobs = Jobs::new(&p.state_dir);
    if !args.dry_run {
        let killed = jobs.kill_leftovers();
        if killed > 0 {
            note(&format!("gvbuild: stopped {killed} step(s) left running by an earlier, killed gvbuild"));
        }
    }
    Ok((p, lock, jobs))
}

/// The targets to build (the named ones and their deps, or the default) and the step
/// targets `--rebuild` forces (a group stands for its members).
fn select_for_build(
    graph: &Graph,
    args: &BuildArgs,
    explicit_build: bool,
) -> Result<(Vec<usize>, HashSet<String>), Error> {
    let mut names = args.targets.clone();
    names.extend(args.target.iter().cloned());
    let selected = graph.select(&names).map_err(|e| {
        let e = e.to_string();
        let unknown: Vec<String> =
            args.targets.iter().filter(|n| graph.lookup(n).is_none()).cloned().collect();
        match subcommand_hint(&unknown).filter(|_| !explicit_build) {
            // After `gvbuild build` a word is a target; a bare word may be a mistyped subcommand.
            Some(hint) if !e.contains("did you mean") => Error::Usage(hint),
            Some(hint) => Error::Usage(format!("{e} ({hint})")),
            None => Error::Usage(e),
        }
    })?;
    let mut rebuild = HashSet::new();
    for r in &args.rebuild {
        let Some(i) = graph.lookup(r) else {
            return Err(match unknown_target(graph, r) {
                Error::Usage(m) => Error::Usage(format!("--rebuild: {m}")),
                e => e,
            });
        };
        if graph.target(i).step.is_some() {
            rebuild.insert(r.clone());
        } else {
            rebuild.extend(graph.step_deps[i].iter().map(|&m| graph.target(m).name.clone()));
        }
    }
    Ok((selected, rebuild))
}

/// The servers a build talks to.
struct Servers {
    remote: Option<Remote>,
    remote_exec: Option<RemoteExec>,
    /// Steps are keyed as remote ones (`--remote-exec`, also in a dry run, which asks no
    /// server).
    remote_steps: bool,
    /// The engine was unreachable from the start (with the fallback): a plain local build.
    exec_warning: Option<String>,
    /// The shared cache is the engine's own (no other was named): it fails with it.
    cache_is_engine: bool,
}

/// Open the shared cache and the remote-execution engine the flags, the environment and
/// gevulot.yaml name. A dry run asks no server: it writes nothing and says what the local
/// cache would do. The flag or the environment names the cache the user trusts with
/// credentials and writes; gevulot.yaml's `remote_cache:` (which a pull request can edit) is
/// only read, and gets neither the headers nor the client certificate.
fn open_servers(
    remote_args: &RemoteArgs,
    dry: bool,
    graph: &Graph,
    cache: &mut Cache,
) -> Result<Servers, Error> {
    let timeout = std::time::Duration::from_secs(remote_args.remote_timeout.unwrap_or(30).max(1));
    // An empty `--remote-cache ''` turns the file's off too.
    let given = remote_args.remote_cache.as_deref();
    // The engine's own cache, when no other is named: results and outputs come from there.
    let exec_url = remote_args.remote_exec.as_deref().filter(|u| !u.is_empty() && !dry);
    let given = given.or(exec_url);
    let options = match (given, graph.project.remote_cache.as_deref()) {
        _ if dry => None,
        (Some(""), _) => None,
        (Some(url), _) => Some(RemoteOptions {
            url: url.to_string(),
            read_only: remote_args.remote_read_only,
            headers: remote_headers()?,
            ca_file: remote_args.remote_ca.clone(),
            client_cert: remote_args.remote_client_cert.clone(),
            client_key: remote_args.remote_client_key.clone(),
            timeout,
        }),
        (None, Some(url)) => Some(RemoteOptions {
            url: url.to_string(),
            read_only: true,
            headers: Vec::new(),
            ca_file: remote_args.remote_ca.clone(),
            client_cert: None,
            client_key: None,
            timeout,
        }),
        (None, None) => None,
    };
    let remote = match options {
        Some(options) => {
            cache.keep_sha256();
            Some(Remote::open(options, cache).map_err(|e| Error::Usage(e.to_string()))?)
        }
        None => None,
    };
    let (remote_exec, exec_warning) = match exec_url {
        Some(url) => {
            let (exec, warning) = RemoteExec::open(
                cache,
                ExecOptions {
                    url: url.to_string(),
                    headers: remote_headers()?,
                    ca_file: remote_args.remote_ca.clone(),
                    client_cert: remote_args.remote_client_cert.clone(),
                    client_key: remote_args.remote_client_key.clone(),
                    timeout,
                    jobs: remote_args.remote_jobs.unwrap_or(DEFAULT_REMOTE_JOBS).max(1),
                    fallback: remote_args.remote_exec_fallback,
                },
            )
            .map_err(|e| Error::Usage(e.to_string()))?;
            (exec.active().then_some(exec), warning)
        }
        None => (None, None),
    };
    let remote_steps =
        remote_exec.is_some() || (dry && remote_args.remote_exec.as_deref().is_some_and(|u| !u.is_empty()));
    Ok(Servers { remote, remote_exec, remote_steps, exec_warning, cache_is_engine: given == exec_url })
}

/// The scheduler's options from the build's flags.
fn build_opts(args: &BuildArgs, selected: usize, rebuild: HashSet<String>) -> Opts {
    Opts {
        jobs: match args.jobs {
            // No limit: as many commands as there are steps to run.
            Some(0) => selected.max(1),
            Some(n) => n,
            None => exec::cores(),
        },
        keep_going: args.keep_going,
        verbose: args.verbose,
        json: args.json,
        explain: args.explain,
        dry_run: args.dry_run,
        rebuild,
        rebuild_all: args.rebuild_all,
        quiet: args.quiet,
        no_sandbox: args.no_sandbox,
        trace_undeclared: args.trace_undeclared,
    }
}

/// After the steps: wait for the uploads (cancelled after Ctrl-C), and say how busy the
/// servers were (`-q` leaves that out). A failure of the engine's own cache is not said again
/// once the engine's was (`engine_warned`).
fn finish_with_servers(ctx: &Ctx, reporter: &mut Reporter, cache_is_engine: bool, engine_warned: bool) {
    let quiet = ctx.opts.quiet;
    let say = |line: &str| {
        if !quiet {
            note(line)
        }
    };
    if let Some(line) = ctx.remote_exec.as_ref().and_then(|r| r.busy_note()) {
        say(&line);
    }
    let Some(remote) = ctx.remote.as_ref() else { return };
    if ctx.interrupted.load(Ordering::SeqCst) {
        remote.cancel_uploads();
    }
    let mut waiting = |line: &str| say(line);
    for w in remote.finish(ctx.cache.root(), &mut waiting) {
        if engine_warned && w.contains(" failed ") {
            continue;
        }
        reporter.warn(&w);
    }
    // The engine's cache is the engine: said once, above.
    if !cache_is_engine || ctx.remote_exec.is_none() {
        if let Some(line) = remote.busy_note() {
            say(&line);
        }
    }
}

/// Save what the build learned: the state, the stat cache and the key parts `--explain`
/// compares against next time. A failure is a warning: the next build only rechecks more.
fn save_after_build(ctx: &Ctx, reporter: &mut Reporter, state_dir: &Path) {
    if let Ok(mut state) = ctx.state.write() {
        if let Err(e) = state.save() {
            reporter.warn(&format!("could not save the build state: {e}"));
        }
    }
    if let Err(e) = ctx.stat.save(&state_dir.join("stat.bin")) {
        reporter.warn(&format!("could not save the stat cache: {e}"));
    }
    if !reporter.explained.is_empty() {
        let mut store = ExplainStore::load(state_dir);
        for (name, e) in reporter.explained.drain(..) {
            store.set(&name, e);
        }
        let _ = store.save();
    }
}

/// `gvbuild worker`: serve a REAPI engine until SIGINT or SIGTERM.
fn worker(w: WorkerArgs) -> Result<u8, Error> {
    let options = crate::worker::Options {
        server: w.server,
        headers: remote_headers()?,
        ca_file: w.remote_ca,
        client_cert: w.remote_client_cert,
        client_key: w.remote_client_key,
        timeout: std::time::Duration::from_secs(w.remote_timeout.unwrap_or(30).max(1)),
        platform: w.platform,
        tools: w.tool,
        jobs: match w.jobs {
            Some(n) if n > 0 => n,
            _ => exec::cores(),
        },
        work_dir: w.work_dir,
        bot_id: w.bot_id,
    };
    crate::worker::run(options, crate::worker::Report { out, note }).map_err(|e| Error::Usage(e.to_string()))
}

/// `GVBUILD_TIMINGS=1` prints how long each phase of a build took, to stderr.
struct Timings {
    on: bool,
    last: std::time::Instant,
    marks: Vec<(&'static str, std::time::Duration)>,
}

impl Timings {
    fn new() -> Timings {
        let on = std::env::var_os("GVBUILD_TIMINGS").is_some_and(|v| !v.is_empty() && v != "0");
        Timings { on, last: std::time::Instant::now(), marks: Vec::new() }
    }

    fn mark(&mut self, what: &'static str) {
        if self.on {
            let now = std::time::Instant::now();
            self.marks.push((what, now - self.last));
            self.last = now;
        }
    }

    fn report(&self) {
        for (what, d) in &self.marks {
            note(&format!("timing: {what:<14} {:>8.2} ms", d.as_secs_f64() * 1000.0));
        }
    }
}

/// With `--json`, config errors go to stdout as JSON objects, one per line, like the events.
fn json_errors(json: bool, result: Result<u8, Error>) -> Result<u8, Error> {
    match result {
        Err(Error::Config(errors)) if json => {
            out(&errors.json_lines());
            Ok(2)
        }
        other => other,
    }
}

/// A step that is about to be built and uses a var declared without a value is an error.
fn check_unset_vars(graph: &Graph, selected: &[usize], source: &Source) -> Result<(), Error> {
    let mut errors = Vec::new();
    for &i in selected {
        let t = graph.target(i);
        if t.step.is_none() {
            continue;
        }
        for (name, span) in &t.unset_vars {
            errors.push(ConfigError::UnsetVar {
                name: name.clone(),
                target: t.name.clone(),
                src: source.named(),
                span: (*span).into(),
                help: format!("give `{name}` a value under `vars:`, or pass `--set {name}=VALUE`"),
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Config(ConfigErrors { file: source.name.clone(), errors }))
    }
}

fn list(g: &GlobalArgs) -> Result<u8, Error> {
    let p = open_project(g)?;
    let graph = load_graph(g, &p)?;
    let width = graph.project.targets.iter().map(|t| t.name.len()).max().unwrap_or(0);
    let mut text = String::new();
    for t in &graph.project.targets {
        let kind = if t.step.is_some() { "step " } else { "group" };
        let default =
            if graph.project.default.as_deref() == Some(t.name.as_str()) { " (default)" } else { "" };
        let desc = t.description.as_deref().unwrap_or("");
        // `gvbuild list` runs the subcommand: say how to build a target of that name.
        let shadowed = if SUBCOMMANDS.contains(&t.name.as_str()) {
            format!(" (a subcommand's name: build it with `gvbuild build {}`)", t.name)
        } else {
            String::new()
        };
        let line = format!("{:<width$}  {kind}  {desc}{default}{shadowed}", t.name);
        text.push_str(line.trim_end());
        text.push('\n');
    }
    out(&text);
    Ok(0)
}

fn graph(g: &GlobalArgs, format: GraphFormat) -> Result<u8, Error> {
    let p = open_project(g)?;
    let graph = load_graph(g, &p)?;
    let text = match format {
        GraphFormat::Dot => {
            let mut s = String::from("digraph gvbuild {\n  rankdir=LR;\n");
            for t in &graph.project.targets {
                let shape = if t.step.is_some() { "box" } else { "ellipse" };
                s.push_str(&format!("  {:?} [shape={shape}];\n", t.name));
            }
            for (i, t) in graph.project.targets.iter().enumerate() {
                for d in &t.deps {
                    s.push_str(&format!("  {:?} -> {:?};\n", t.name, d.name));
                }
                // Inferred deps: dashed, labelled with the input they come from.
                for e in graph.inferred_of(i) {
                    let label = format!("inferred from {}", graph.inferred_input(e));
                    s.push_str(&format!(
                        "  {:?} -> {:?} [style=dashed, label={label:?}];\n",
                        t.name,
                        graph.target(e.dep).name
                    ));
                }
            }
            s.push_str("}\n");
            s
        }
        GraphFormat::Json => {
            let targets: Vec<serde_json::Value> = graph
                .project
                .targets
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let inferred: Vec<serde_json::Value> = graph
                        .inferred_of(i)
                        .iter()
                        .map(|e| {
                            serde_json::json!({
                                "name": graph.target(e.dep).name,
                                "input": graph.inferred_input(e),
                                "output": graph.inferred_output(e),
                            })
                        })
                        .collect();
                    serde_json::json!({
                        "name": t.name,
                        "kind": if t.step.is_some() { "step" } else { "group" },
                        "description": t.description,
                        "deps": t.deps.iter().map(|d| &d.name).collect::<Vec<_>>(),
                        "inferred_deps": inferred,
                        "inputs": t.inputs.iter().map(|i| &i.path).collect::<Vec<_>>(),
                        "outputs": t.outputs.iter().map(|o| &o.path).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let mut s = serde_json::to_string_pretty(
                &serde_json::json!({ "default": graph.project.default, "targets": targets }),
            )
            .unwrap_or_default();
            s.push('\n');
            s
        }
    };
    out(&text);
    Ok(0)
}

fn clean(g: &GlobalArgs, names: &[String]) -> Result<u8, Error> {
    let p = open_project(g)?;
    let graph = load_graph(g, &p)?;
    let _lock = project_lock(&p)?;
    let mut which = Vec::new();
    if names.is_empty() {
        which.extend(0..graph.len());
    } else {
        for n in names {
            let i = graph.lookup(n).ok_or_else(|| unknown_target(&graph, n))?;
            // A group stands for its members, as with --rebuild.
            if graph.target(i).step.is_some() {
                which.push(i);
            } else {
                which.extend(graph.step_deps[i].iter().copied());
            }
        }
    }
    let mut state = State::load(&p.state_dir);
    let stat = StatCache::load(&p.state_dir.join("stat.bin"));
    let mut removed = 0;
    for i in which {
        let t = graph.target(i);
        for o in &t.outputs {
            let abs = p.root.join(&o.path);
            if std::fs::symlink_metadata(&abs).is_ok() {
                fsutil::remove_path(&abs).map_err(io_error("cannot remove", &abs))?;
                removed += 1;
            }
            stat.forget(&o.path);
        }
        state.set(&t.name, None);
    }
    state.save().map_err(io_error("cannot save the state in", &p.state_dir))?;
    let _ = stat.save(&p.state_dir.join("stat.bin"));
    out(&format!("gvbuild: removed {removed} output(s)\n"));
    Ok(0)
}

/// `gvbuild hash URL`: download once (kept in the cache, so the build that follows downloads
/// nothing) and print the pin.
fn hash(g: &GlobalArgs, url: &str, blake3: bool) -> Result<u8, Error> {
    let (cache, _l) = open_cache(g, lock::Mode::Shared)?;
    let downloads = cache.root().join("downloads");
    let bars = std::io::IsTerminal::is_terminal(&std::io::stderr())
        .then(|| indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr()));
    match crate::steps::fetch::download_and_keep(url, &downloads, bars.as_ref()) {
        Ok(h) => {
            let (algo, hex) = if blake3 { ("blake3", h.blake3) } else { ("sha256", h.sha256) };
            out(&format!("{algo}: {hex}\n"));
            note(&format!("gvbuild: {url}: {} bytes; paste the line above into the `fetch:` step", h.size));
            Ok(0)
        }
        Err(e) => {
            note(&format!("error: {e}"));
            Ok(1)
        }
    }
}

fn cache_cmd(g: &GlobalArgs, cmd: CacheCmd) -> Result<u8, Error> {
    match cmd {
        CacheCmd::Stats { .. } => {
            let (cache, _l) = open_cache(g, lock::Mode::Shared)?;
            let s = cache::stats(&cache);
            let total = s.blob_bytes + s.download_bytes;
            out(&format!(
                "cache: {}\nentries: {}\nblobs: {}\ndownloads: {}\nsize: {} ({} bytes)\n",
                cache.root().display(),
                s.entries,
                s.blobs,
                s.downloads,
                fsutil::human_size(total),
                total
            ));
            let r = cache::remote::load_stats(cache.root());
            out(&format!(
                "remote hits: {}\nremote misses: {}\nremote bytes down: {} ({} bytes)\nremote bytes up: {} ({} bytes)\nremote failures: {}\n",
                r.hits,
                r.misses,
                fsutil::human_size(r.bytes_down),
                r.bytes_down,
                fsutil::human_size(r.bytes_up),
                r.bytes_up,
                r.failures
            ));
        }
        CacheCmd::Gc { max_size, .. } => {
            let max = match max_size {
                None => cache::DEFAULT_MAX_SIZE,
                Some(s) => fsutil::parse_size(&s).ok_or_else(|| {
                    Error::Usage(format!("--max-size takes a size such as 5G or 500M, got `{s}`"))
                })?,
            };
            let (cache, _l) = open_cache(g, lock::Mode::Exclusive)?;
            let r = cache::gc(&cache, max);
            out(&format!(
                "gc: removed {} entries and {} blobs ({}); {} left\n",
                r.entries_removed,
                r.blobs_removed,
                fsutil::human_size(r.bytes_freed),
                fsutil::human_size(r.bytes_left)
            ));
        }
        CacheCmd::Verify { .. } => {
            let (cache, _l) = open_cache(g, lock::Mode::Exclusive)?;
            let r = cache::verify(&cache);
            out(&format!(
                "verify: {} blobs checked, {} damaged (removed), {} entries removed\n",
                r.blobs_checked,
                r.blobs_bad.len(),
                r.entries_removed
            ));
            for b in &r.blobs_bad {
                out(&format!("damaged: {b}\n"));
            }
            if !r.sha256_bad.is_empty() {
                out(&format!("verify: {} wrong SHA-256 name(s) (removed)\n", r.sha256_bad.len()));
            }
            for b in &r.sha256_bad {
                out(&format!("wrong SHA-256 name: {b}\n"));
            }
            if !r.blobs_bad.is_empty() || !r.sha256_bad.is_empty() {
                return Ok(1);
            }
        }
    }
    Ok(0)
}
