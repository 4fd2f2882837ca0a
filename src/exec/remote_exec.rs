//! Remote execution: a `run:` step as a REAPI v2 `Action`, executed by an existing engine
//! (BuildGrid, Buildbarn, ...) through `Execution.Execute`.
//!
//! # The action is the step
//! - `Command`: `/bin/sh -ec COMMAND`, the step's `env` and the values of its `pass_env`
//!   variables (nothing of the client's own environment: the worker supplies its PATH, HOME
//!   and TMPDIR), the declared outputs (the depfile among them) as `output_paths`, and the
//!   platform properties.
//! - Input root: a Merkle tree (REAPI `Directory` messages, names sorted) of the declared
//!   inputs inside the project, the dependencies' outputs, and for a step with a depfile what
//!   it may discover: the files its last depfile listed, and every file below its command's
//!   include folders (`-I` and kin) inside the project and below the folder of each of its
//!   input files (for an input in the project folder itself, that folder's own files only),
//!   except what the project's `.gitignore` files ignore, at most [`super::visible::MAX_DISCOVERABLE`] files.
//!   Files that another target writes and this one does not depend on are never shipped, nor
//!   `.git` and `.gvbuild`. After the run, every project file the depfile names must be one
//!   that was shipped: a remote step never reads a project file the local step would not
//!   have without the build saying so.
//! - Absolute paths (system headers and libraries) are the worker's own. A remote step does
//!   not key them by the client's files; its key holds the platform instead (see
//!   [`remote_kind`]).
//! - Platform: the step's platform properties (`platform:` and `--platform`), plus
//!   `tool:NAME=IDENTITY` for each declared tool (see [`crate::fingerprint::tools`]): the
//!   identity the platform gives, else the client's own tool's. A worker advertises the
//!   identities of its tools and refuses an action whose tool differs.
//!
//! # Results
//! The `ActionResult`'s outputs are downloaded (verified) into the local cache and restored
//! into the project, its stdout and stderr written to the step's log; from there the step
//! goes on as a local run does (outputs hashed, depfile read, stored locally and uploaded
//! under the shared-cache key, so the next lookup finds it).
//!
//! # Faults
//! An engine that cannot be reached at the start is an error, or with `--remote-exec-fallback`
//! a warning, and the build runs locally. An engine lost in the middle fails the steps in
//! flight, or with the fallback runs them locally, with one warning for the build; a step run
//! locally that way is neither cached nor recorded (its key was the remote one).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use sha2::Digest as _;

use super::error::{EngineError, InputRootError, StepError};
use super::visible::Entry;
use super::Ctx;
use crate::cache::remote::grpc::{BlobSource, ExecFailure, GrpcOptions, GrpcStore};
use crate::cache::remote::{reapi, shown_url, Platform, Remote, RemoteError};
use crate::cache::Cache;
use crate::config::Target;
use crate::fingerprint::tools::{tool_property, ToolId};
use crate::fingerprint::{Digest, KeyParts};
use crate::jobs::Slots;
use crate::steps::run::RunSpec;

/// How the build was told to execute remotely.
pub struct ExecOptions {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub timeout: Duration,
    /// Steps in flight on the engine at once.
    pub jobs: usize,
    /// Run steps locally when the engine cannot be reached or is lost.
    pub fallback: bool,
}

/// The engine, for this build.
pub struct RemoteExec {
    engine: Arc<GrpcStore>,
    /// The engine's CAS, for the results' outputs and logs (whatever `--remote-cache` says).
    cas: Remote,
    shown: String,
    slots: Slots,
    jobs: usize,
    fallback: bool,
    /// The engine failed; with the fallback, the rest of the build runs locally.
    lost: AtomicBool,
    first_failure: Mutex<Option<String>>,
    /// SHA-256 of input files by blake3, computed once per build.
    sha: Mutex<HashMap<Digest, [u8; 32]>>,
}

/// Why a remote run gave no result.
pub enum RemoteRunError {
    /// The step failed (its command, or the engine refused it): as a local failure.
    Step(StepError),
    /// The engine failed; with the fallback the step runs locally.
    Engine(String),
}

/// What a remote run shipped, for the check of its depfile.
pub struct Shipped {
    pub files: BTreeSet<String>,
}

impl RemoteExec {
    /// Connect and ask the engine's capabilities. `Err` is a usage error, or an engine that
    /// cannot be reached without `--remote-exec-fallback`; with it, an unreachable engine
    /// gives a warning (the second value) and every step runs locally.
    pub fn open(cache: &Cache, o: ExecOptions) -> Result<(RemoteExec, Option<String>), EngineError> {
        let shown = shown_url(&o.url);
        let mut engine = GrpcStore::new(GrpcOptions {
            url: &o.url,
            headers: o.headers,
            ca_file: o.ca_file.as_deref(),
            client_cert: o.client_cert.as_deref(),
            client_key: o.client_key.as_deref(),
            timeout: o.timeout,
        })?;
        let reached = match engine.check(&shown)? {
            Ok(()) => engine.exec_enabled(),
            Err(e) => Err(e),
        };
        let engine = Arc::new(engine);
        let cas = Remote::with_store(Box::new(engine.clone()), shown.clone(), true, cache);
        let exec = |lost| RemoteExec {
            engine,
            cas,
            shown: shown.clone(),
            slots: Slots::new(o.jobs),
            jobs: o.jobs.max(1),
            fallback: o.fallback,
            lost: AtomicBool::new(lost),
            first_failure: Mutex::new(None),
            sha: Mutex::new(HashMap::new()),
        };
        match reached {
            Ok(true) => Ok((exec(false), None)),
            Ok(false) => Err(EngineError::NoExecution(shown)),
            Err(e) if o.fallback => Ok((
                exec(true),
                Some(format!(
                    "the remote-execution engine {shown} cannot be reached ({e}); every step runs \
                     locally (--remote-exec-fallback)"
                )),
            )),
            Err(cause) => Err(EngineError::Unreachable { engine: shown, cause }),
        }
    }

    /// Steps in flight on the engine at once (`--remote-jobs`).
    pub fn jobs(&self) -> usize {
        self.jobs
    }

    /// Whether a step the engine failed runs locally (`--remote-exec-fallback`).
    pub fn falls_back(&self) -> bool {
        self.fallback
    }

    /// Whether steps still go to the engine (not after it was lost with the fallback on).
    pub fn active(&self) -> bool {
        !self.lost.load(Ordering::SeqCst)
    }

    /// A line for the user when the engine pushed back during the build.
    pub fn busy_note(&self) -> Option<String> {
        let (pushbacks, narrowest) = crate::cache::remote::Store::pressure(&*self.engine);
        crate::cache::remote::backoff::busy_note(
            &format!("the remote-execution engine {}", self.shown),
            pushbacks,
            narrowest,
        )
    }

    /// The build's one warning about the engine, if it failed.
    pub fn warning(&self) -> Option<String> {
        let first = self.first_failure.lock().ok().and_then(|f| f.clone())?;
        Some(if self.fallback {
            format!(
                "the remote-execution engine {} failed ({first}); the steps it had, and the rest of \
                 the build, ran locally (--remote-exec-fallback)",
                self.shown
            )
        } else {
            format!("the remote-execution engine {} failed: {first}", self.shown)
        })
    }

    fn engine_failed(&self, e: &str) -> RemoteRunError {
        if let Ok(mut first) = self.first_failure.lock() {
            first.get_or_insert_with(|| e.to_string());
        }
        if self.fallback {
            self.lost.store(true, Ordering::SeqCst);
        }
        RemoteRunError::Engine(format!("the remote-execution engine {} failed: {e}", self.shown))
    }

    /// Run step `t` on the engine: build and upload its action, execute it, and put its
    /// outputs into the project and its stdout and stderr into `log`.
    pub fn run(
        &self,
        ctx: &Ctx,
        t: &Target,
        run: &RunSpec,
        parts: &KeyParts,
        log: &Path,
    ) -> Result<Shipped, RemoteRunError> {
        let (root_digest, mut blobs, shipped) =
            self.input_root(ctx, t, run, parts).map_err(|e| RemoteRunError::Step(e.into()))?;
        let platform = action_platform(ctx, t, run).map_err(RemoteRunError::Step)?;
        let action_digest = encode_action(t, run, parts, root_digest, &platform, &mut blobs);
        // A `cache: false` step is never answered from the engine's action cache; a forced one
        // (`--rebuild`, `-B`) runs again whatever the engine remembers.
        let skip_cache_lookup = !t.cache || ctx.opts.forced(&t.name);
        let _slot = self.slots.acquire();
        let Some(response) = self.execute(ctx, t, &action_digest, skip_cache_lookup, &blobs, &platform)?
        else {
            // Interrupted: the build stops, and says so.
            return Ok(Shipped { files: shipped });
        };
        self.take_result(ctx, t, parts, log, response)?;
        Ok(Shipped { files: shipped })
    }

    /// Upload what the engine lacks and execute the action, saying every 30 s what it waits
    /// for. Inputs the engine lost after they were uploaded (evicted from its CAS) are uploaded
    /// again and the action sent again, [`RESENDS`] times at most (bazelbuild/bazel#7014).
    /// `None` when the build was interrupted.
    fn execute(
        &self,
        ctx: &Ctx,
        t: &Target,
        action_digest: &reapi::Digest,
        skip_cache_lookup: bool,
        blobs: &[(reapi::Digest, BlobSource)],
        platform: &Platform,
    ) -> Result<Option<reapi::ExecuteResponse>, RemoteRunError> {
        let waiting = |waited: Duration, queued: bool| {
            let why = if queued {
                let props: Vec<String> = platform.iter().map(|(k, v)| format!("{k}={v}")).collect();
                if props.is_empty() {
                    "queued: no worker has taken it yet; is a worker connected to this engine, and free?"
                        .to_string()
                } else {
                    format!(
                        "queued: no worker has taken it yet; is one connected whose platform has {}?",
                        props.join(", ")
                    )
                }
            } else {
                "running on a worker".to_string()
            };
            super::note(&format!(
                "gvbuild: `{}` has waited {} s for the remote-execution engine {} ({why})",
                t.name,
                waited.as_secs(),
                self.shown
            ));
        };
        let mut lost: Vec<reapi::Digest> = Vec::new();
        let mut tries = 0;
        loop {
            match self.engine.upload_missing(blobs, &lost) {
                Ok(_) => {}
                Err(RemoteError::Changed(e)) => return Err(RemoteRunError::Step(StepError::Changed(e))),
                Err(e) => {
                    return Err(self.engine_failed(&format!("uploading the inputs of `{}`: {e}", t.name)))
                }
            }
            match self.engine.execute(action_digest, skip_cache_lookup, &ctx.interrupted, &waiting) {
                Ok(r) => return Ok(Some(r)),
                Err(ExecFailure::Interrupted) => return Ok(None),
                Err(ExecFailure::Engine(e)) => return Err(self.engine_failed(&e.to_string())),
                Err(ExecFailure::Refused { code, message }) => {
                    return Err(RemoteRunError::Step(StepError::Refused {
                        engine: self.shown.clone(),
                        code: code.to_string(),
                        message,
                    }))
                }
                Err(ExecFailure::Missing(gone)) if tries < RESENDS => {
                    tries += 1;
                    super::note(&format!(
                        "gvbuild: the remote-execution engine {} lost {} input blob(s) of `{}` from its CAS; \
                         uploading them again (try {tries} of {RESENDS})",
                        self.shown,
                        gone.len(),
                        t.name
                    ));
                    lost = gone;
                }
                Err(ExecFailure::Missing(gone)) => {
                    let names: Vec<String> =
                        gone.iter().map(|d| format!("blobs/{}/{}", d.hash, d.size_bytes)).collect();
                    return Err(self.engine_failed(&format!(
                        "its CAS lost input blobs of `{}` again after {RESENDS} uploads: {}",
                        t.name,
                        names.join(", ")
                    )));
                }
            }
        }
    }

    /// Take a finished action's result as a local run's: its stdout and stderr into `log`, a
    /// failed exit as the step's failure, each declared output present, and the outputs written
    /// into the project.
    fn take_result(
        &self,
        ctx: &Ctx,
        t: &Target,
        parts: &KeyParts,
        log: &Path,
        response: reapi::ExecuteResponse,
    ) -> Result<(), RemoteRunError> {
        let Some(result) = response.result else {
            return Err(self.engine_failed("an ExecuteResponse without a result"));
        };
        let remote = &self.cas;
        let stdout = remote
            .log_blob(&ctx.cache, result.stdout_digest.as_ref(), &result.stdout_raw)
            .map_err(|e| self.engine_failed(&format!("the stdout of `{}`: {e}", t.name)))?;
        let stderr = remote
            .log_blob(&ctx.cache, result.stderr_digest.as_ref(), &result.stderr_raw)
            .map_err(|e| self.engine_failed(&format!("the stderr of `{}`: {e}", t.name)))?;
        write_log(&ctx.cache, log, [stdout, stderr].iter().flatten()).map_err(|source| {
            RemoteRunError::Step(StepError::WriteLog { path: log.display().to_string(), source })
        })?;
        if result.exit_code != 0 {
            return Err(RemoteRunError::Step(StepError::Exit(result.exit_code)));
        }
        // As a local run says it: an output the command did not write.
        for o in &parts.step.outputs {
            let named = result.output_files.iter().any(|f| &f.path == o)
                || result.output_symlinks.iter().any(|l| &l.path == o)
                || result.output_directories.iter().any(|d| &d.path == o);
            if !named {
                return Err(RemoteRunError::Step(StepError::OutputMissing(o.to_string())));
            }
        }
        let outputs = parts.output_paths();
        let tree = remote
            .outputs_of(&ctx.cache, &result, &outputs)
            .map_err(|e| self.engine_failed(&format!("the outputs of `{}`: {e}", t.name)))?;
        let entry = crate::cache::ActionEntry::new(tree, None);
        super::restore::restore(ctx, t, &outputs, &entry).map_err(|source| {
            RemoteRunError::Step(StepError::WriteOutputs { target: t.name.clone(), source })
        })?;
        Ok(())
    }

    /// The input root's digest, every blob it needs (folders and files), and the project
    /// paths of the files shipped: the step's [`Visible`] set, which the sandbox shows a local
    /// step.
    #[allow(clippy::type_complexity)]
    fn input_root(
        &self,
        ctx: &Ctx,
        t: &Target,
        run: &RunSpec,
        parts: &KeyParts,
    ) -> Result<(reapi::Digest, Vec<(reapi::Digest, BlobSource)>, BTreeSet<String>), InputRootError> {
        let root = ctx.root.as_path();
        let visible = super::visible::of(ctx, t, run, parts)?;
        let mut tree = Folder::default();
        let mut shipped = visible.files;
        for (p, entry) in &visible.entries {
            match entry {
                Entry::File { exec, digest, size } => {
                    let sha = match self.sha256_of(ctx, &root.join(p), digest) {
                        Ok(sha) => sha,
                        // A file the step may discover, removed since the set was made, is not
                        // shipped; a declared input or a dependency's output must be.
                        Err(_)
                            if !root.join(p).exists()
                                && !parts.inputs.contains_key(p)
                                && ctx.producer_of(p).is_none() =>
                        {
                            shipped.remove(p);
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                    tree.insert(p, Node::File { sha, size: *size, exec: *exec, path: root.join(p) })?;
                }
                Entry::Link(text) => tree.insert(p, Node::Link(text.clone()))?,
                // Only in a set worked out for a lazy view, never in one with digests.
                Entry::Output => {}
                Entry::Folder => {
                    tree.folder(p)?;
                }
            }
        }
        let mut blobs = Vec::new();
        let digest = tree.encode(&mut blobs);
        Ok((digest, blobs, shipped))
    }

    /// A file's SHA-256: beside its blob in the local cache, else read once per build.
    fn sha256_of(&self, ctx: &Ctx, path: &Path, b3: &Digest) -> Result<[u8; 32], InputRootError> {
        let b3_want = b3;
        if let Some(sha) = self.sha.lock().ok().and_then(|m| m.get(b3).copied()) {
            return Ok(sha);
        }
        let sha = match ctx.cache.has_blob(b3).then(|| ctx.cache.blob_sha256(b3).ok()).flatten() {
            Some(sha) => sha,
            None => {
                // Read once for both digests: the bytes hashed here must be those keyed.
                let mut f = std::fs::File::open(path)
                    .map_err(|source| InputRootError::Read { path: path.display().to_string(), source })?;
                let (mut sha, mut b3) = (sha2::Sha256::new(), blake3::Hasher::new());
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = std::io::Read::read(&mut f, &mut buf).map_err(|source| InputRootError::Read {
                        path: path.display().to_string(),
                        source,
                    })?;
                    if n == 0 {
                        break;
                    }
                    sha.update(&buf[..n]);
                    b3.update(&buf[..n]);
                }
                if b3.finalize().as_bytes() != b3_want {
                    return Err(InputRootError::FileChanged(path.display().to_string()));
                }
                sha.finalize().into()
            }
        };
        if let Ok(mut m) = self.sha.lock() {
            m.insert(*b3, sha);
        }
        Ok(sha)
    }
}

/// A step's log: its stdout then its stderr, each a blob of the local cache, copied (not read
/// into memory: a log may be big).
fn write_log<'a>(cache: &Cache, log: &Path, blobs: impl Iterator<Item = &'a Digest>) -> std::io::Result<()> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut out = std::fs::File::create(log)?;
    for d in blobs {
        std::io::copy(&mut std::fs::File::open(cache.blob_file(d))?, &mut out)?;
    }
    Ok(())
}

/// The step's REAPI Command and Action, encoded into `blobs` for upload: the command run by
/// `/bin/sh -ec` with the step's env, its outputs, and the platform (in the Action, and in the
/// Command for older engines). Returns the Action's digest. A `cache: false` step's action is
/// `do_not_cache`.
fn encode_action(
    t: &Target,
    run: &RunSpec,
    parts: &KeyParts,
    root_digest: reapi::Digest,
    platform: &Platform,
    blobs: &mut Vec<(reapi::Digest, BlobSource)>,
) -> reapi::Digest {
    let properties: Vec<reapi::platform::Property> = platform
        .iter()
        .map(|(name, value)| reapi::platform::Property { name: name.clone(), value: value.clone() })
        .collect();
    let command = reapi::Command {
        arguments: vec!["/bin/sh".into(), "-ec".into(), run.command.clone()],
        environment_variables: run
            .env_with(&parts.pass_env)
            .into_iter()
            .map(|(name, value)| reapi::EnvironmentVariable { name, value })
            .collect(),
        output_paths: {
            let mut o: Vec<String> = parts.output_paths();
            o.sort();
            o.dedup();
            o
        },
        // Deprecated since REAPI v2.2 (the Action carries it), still read by older engines.
        #[allow(deprecated)]
        platform: Some(reapi::Platform { properties: properties.clone() }),
        ..Default::default()
    };
    let command_bytes = command.encode_to_vec();
    let command_digest = sha_digest(&command_bytes);
    // A `cache: false` step is never stored in the engine's action cache.
    let action = reapi::Action {
        command_digest: Some(command_digest.clone()),
        input_root_digest: Some(root_digest),
        platform: Some(reapi::Platform { properties }),
        do_not_cache: !t.cache,
        ..Default::default()
    };
    let action_bytes = action.encode_to_vec();
    let action_digest = sha_digest(&action_bytes);
    blobs.push((command_digest, BlobSource::Bytes(command_bytes)));
    blobs.push((action_digest.clone(), BlobSource::Bytes(action_bytes)));
    action_digest
}

/// Times the inputs an engine lost are uploaded again before the step counts as the engine's
/// failure.
const RESENDS: usize = 3;

/// The `kind` a remote step's key holds instead of `run`: the step runs on a worker of these
/// platform properties (its tools' identities among them), whose system files are its own.
pub fn remote_kind(platform: &Platform) -> String {
    let props: Vec<String> = platform.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("run remotely on {}", serde_json::to_string(&props).unwrap_or_default())
}

/// A remote step's tools, keyed: the identity its platform gives (`tool:NAME`), else the
/// client's own tool's. `Err` says how to name a tool the client lacks.
pub fn remote_tools(ctx: &Ctx, t: &Target, run: &RunSpec) -> Result<BTreeMap<String, ToolId>, StepError> {
    let platform = ctx.platform_of(t);
    let mut tools = BTreeMap::new();
    for name in &run.tools {
        let prop = tool_property(name);
        let id = match platform.get(&prop) {
            Some(identity) => ToolId {
                digest: *blake3::hash(identity.as_bytes()).as_bytes(),
                version: format!("{identity} (the workers', from the platform)"),
            },
            None => ctx
                .tools
                .identify(name, &ctx.root, &ctx.stat)
                .map_err(|source| StepError::RemoteTool { source, property: prop.clone() })?,
        };
        tools.insert(name.clone(), id);
    }
    Ok(tools)
}

/// The action's platform: the step's properties and a `tool:NAME` identity per tool.
fn action_platform(ctx: &Ctx, t: &Target, run: &RunSpec) -> Result<Platform, StepError> {
    let mut platform = ctx.platform_of(t);
    for name in &run.tools {
        let prop = tool_property(name);
        if let std::collections::btree_map::Entry::Vacant(e) = platform.entry(prop) {
            e.insert(ctx.tools.identify(name, &ctx.root, &ctx.stat)?.identity());
        }
    }
    Ok(platform)
}

/// The key's platform for a remote step (what [`remote_kind`] names).
pub fn key_platform(ctx: &Ctx, t: &Target, tools: &BTreeMap<String, ToolId>) -> Platform {
    let mut platform = ctx.platform_of(t);
    for (name, id) in tools {
        let prop = tool_property(name);
        platform.entry(prop).or_insert_with(|| id.identity());
    }
    platform
}

fn sha_digest(bytes: &[u8]) -> reapi::Digest {
    let sha: [u8; 32] = sha2::Sha256::digest(bytes).into();
    reapi::Digest { hash: hex::encode(sha), size_bytes: bytes.len() as i64 }
}

enum Node {
    File { sha: [u8; 32], size: u64, exec: bool, path: PathBuf },
    Link(String),
    Folder(Folder),
}

/// A folder of the input root, names in byte order (as REAPI requires).
#[derive(Default)]
struct Folder {
    entries: BTreeMap<String, Node>,
}

impl Folder {
    /// The folder at project path `dir`, made as needed.
    fn folder(&mut self, dir: &str) -> Result<&mut Folder, InputRootError> {
        let mut here = self;
        for name in dir.split('/').filter(|n| !n.is_empty()) {
            let node =
                here.entries.entry(name.to_string()).or_insert_with(|| Node::Folder(Folder::default()));
            here = match node {
                Node::Folder(f) => f,
                _ => return Err(InputRootError::FileAndFolder(dir.to_string())),
            };
        }
        Ok(here)
    }

    fn insert(&mut self, path: &str, node: Node) -> Result<(), InputRootError> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        if name.is_empty() || name == "." || name == ".." {
            return Err(InputRootError::BadName(path.to_string()));
        }
        let folder = self.folder(dir)?;
        match folder.entries.get(name) {
            Some(Node::Folder(_)) => Err(InputRootError::FileAndFolder(path.to_string())),
            _ => {
                folder.entries.insert(name.to_string(), node);
                Ok(())
            }
        }
    }

    /// Encode this folder and those below it; every blob goes into `blobs`.
    fn encode(&self, blobs: &mut Vec<(reapi::Digest, BlobSource)>) -> reapi::Digest {
        let mut dir = reapi::Directory::default();
        for (name, node) in &self.entries {
            match node {
                Node::File { sha, size, exec, path } => {
                    let digest = reapi::Digest { hash: hex::encode(sha), size_bytes: *size as i64 };
                    blobs.push((digest.clone(), BlobSource::File(path.clone())));
                    dir.files.push(reapi::FileNode {
                        name: name.clone(),
                        digest: Some(digest),
                        is_executable: *exec,
                        ..Default::default()
                    });
                }
                Node::Link(target) => dir.symlinks.push(reapi::SymlinkNode {
                    name: name.clone(),
                    target: target.clone(),
                    ..Default::default()
                }),
                Node::Folder(f) => {
                    let digest = f.encode(blobs);
                    dir.directories.push(reapi::DirectoryNode { name: name.clone(), digest: Some(digest) });
                }
            }
        }
        let bytes = dir.encode_to_vec();
        let digest = sha_digest(&bytes);
        blobs.push((digest.clone(), BlobSource::Bytes(bytes)));
        digest
    }
}
