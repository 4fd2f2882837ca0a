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
//!   except what the project's `.gitignore` files ignore, at most [`MAX_DISCOVERABLE`] files.
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
use super::Ctx;
use crate::cache::remote::grpc::{BlobSource, ExecFailure, GrpcOptions, GrpcStore};
use crate::cache::remote::{reapi, shown_url, Platform, Remote, RemoteError};
use crate::cache::Cache;
use crate::config::Target;
use crate::fingerprint::outputs::OutputTree;
use crate::fingerprint::tools::{tool_property, ToolId};
use crate::fingerprint::{discovered, Digest, FileId, KeyParts};
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
    /// paths of the files shipped.
    #[allow(clippy::type_complexity)]
    fn input_root(
        &self,
        ctx: &Ctx,
        t: &Target,
        run: &RunSpec,
        parts: &KeyParts,
    ) -> Result<(reapi::Digest, Vec<(reapi::Digest, BlobSource)>, BTreeSet<String>), InputRootError> {
        let root = ctx.root.as_path();
        let deps = dep_closure(ctx, t);
        // A file another target writes is shipped only from a dependency.
        let shippable = |p: &str| -> bool {
            if p.starts_with('/') || p.starts_with(".gvbuild/") || p.starts_with(".git/") {
                return false;
            }
            match ctx.producer_of(p) {
                Some(producer) => deps.contains(&producer),
                None => true,
            }
        };
        let mut tree = Folder::default();
        let mut shipped = BTreeSet::new();
        let add_file = |tree: &mut Folder,
                        shipped: &mut BTreeSet<String>,
                        p: &str,
                        exec: bool,
                        b3: Digest,
                        size: u64|
         -> Result<(), InputRootError> {
            let sha = self.sha256_of(ctx, &root.join(p), &b3)?;
            tree.insert(p, Node::File { sha, size, exec, path: root.join(p) })?;
            shipped.insert(p.to_string());
            Ok(())
        };
        let links = shipped_links(root, parts, &shippable)?;
        // Whether `p` is, or is below, a path shipped as a symlink.
        let through_link = |p: &str| !links.is_empty() && and_above(p).any(|a| links.contains_key(a));
        for (p, id) in &parts.inputs {
            if p.ends_with(" (link)") {
                continue;
            } else if let Some(dir) = p.strip_suffix(" (folder)") {
                if shippable(dir) && !through_link(dir) {
                    tree.folder(dir)?;
                }
            } else if shippable(p) && !through_link(p) {
                add_file(&mut tree, &mut shipped, p, id.exec, id.digest, id.size)?;
            }
        }
        for (link, text) in links {
            tree.insert(link, Node::Link(text))?;
        }
        for &d in &deps {
            let dep = ctx.graph.target(d);
            let outputs: Vec<String> = dep.outputs.iter().map(|o| o.path.clone()).collect();
            let got = OutputTree::collect(root, &outputs, &ctx.stat).map_err(|source| {
                InputRootError::DepOutputs { dep: dep.name.clone(), target: t.name.clone(), source }
            })?;
            for f in &got.files {
                add_file(&mut tree, &mut shipped, &f.path, f.exec, f.digest, f.size)?;
            }
            for l in &got.symlinks {
                tree.insert(&l.path, Node::Link(l.target.clone()))?;
            }
            for dir in &got.dirs {
                tree.folder(dir)?;
            }
        }
        let extra = discoverable(ctx, t, run, parts)?;
        for p in extra {
            // Another step's write in flight (a restore's or a download's staged file) is no
            // file the step could read: it is renamed or gone in a moment.
            if shipped.contains(&p)
                || crate::fsutil::is_temp(Path::new(&p))
                || !shippable(&p)
                || parts.step.outputs.iter().any(|o| p == *o || p.starts_with(&format!("{o}/")))
            {
                continue;
            }
            let abs = root.join(&p);
            let Ok(id) = ctx.stat.file_id(&p, &abs) else { continue };
            // A file that may be read but is gone by now (removed while the walk ran) is not shipped.
            if let Err(e) = add_file(&mut tree, &mut shipped, &p, id.exec, id.digest, id.size) {
                if abs.exists() {
                    return Err(e);
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

/// Project path `p`, then each folder above it (`a/b/c`, `a/b`, `a`).
fn and_above(p: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(p), |p| p.rsplit_once('/').map(|(dir, _)| dir))
}

/// The folder part of project path `p` (`.` for a name at the top).
fn parent_of(p: &str) -> &str {
    p.rsplit_once('/').map_or(".", |(dir, _)| dir)
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

/// Every step `t` depends on, directly or not: a local step sees all their outputs.
fn dep_closure(ctx: &Ctx, t: &Target) -> BTreeSet<usize> {
    let me = ctx.graph.lookup(&t.name);
    let mut deps: BTreeSet<usize> = BTreeSet::new();
    let mut todo: Vec<usize> = me.map(|i| ctx.graph.step_deps[i].clone()).unwrap_or_default();
    while let Some(d) = todo.pop() {
        if deps.insert(d) {
            todo.extend(ctx.graph.step_deps[d].iter().copied());
        }
    }
    deps
}

/// The symlinks among `parts`' inputs shipped as symlinks, with their text: the key's facts
/// about a path are shipped as what a local step finds there. A symlink in an input folder is
/// shipped as a symlink when it leads nowhere, or to something the input root holds; one that
/// leads elsewhere (out of the project) as what it leads to, which is keyed under its own name.
fn shipped_links<'p>(
    root: &Path,
    parts: &'p KeyParts,
    shippable: &dyn Fn(&str) -> bool,
) -> Result<BTreeMap<&'p str, String>, InputRootError> {
    let keyed = |p: &str| {
        parts.inputs.contains_key(p)
            || parts.inputs.contains_key(&format!("{p} (folder)"))
            || parts.inputs.contains_key(&format!("{p} (link)"))
    };
    let mut links: BTreeMap<&str, String> = BTreeMap::new();
    for (p, id) in &parts.inputs {
        let Some(link) = p.strip_suffix(" (link)") else { continue };
        if !shippable(link) {
            continue;
        }
        let text = link_text(root, link, id)?;
        let dangling =
            !parts.inputs.contains_key(link) && !parts.inputs.contains_key(&format!("{link} (folder)"));
        let inside = !text.starts_with('/')
            && crate::paths::normalize_rel(&format!("{}/{text}", parent_of(link))).is_some_and(|to| {
                to != "." && to != link && !to.starts_with(&format!("{link}/")) && keyed(&to)
            });
        if dangling || inside {
            links.insert(link, text);
        }
    }
    // A link below a link shipped as one travels inside what that one leads to.
    let nested: Vec<&str> =
        links.keys().filter(|l| and_above(l).skip(1).any(|a| links.contains_key(a))).copied().collect();
    for l in nested {
        links.remove(l);
    }
    Ok(links)
}

/// What a depfile step may discover, to ship besides its declared inputs: what it read last
/// time, and the files of its inputs' folders and its in-project include folders (the project
/// folder's own files only; any other folder with all below it, except what git would ignore,
/// such as cargo's `target/`). At most [`MAX_DISCOVERABLE`] files.
fn discoverable(
    ctx: &Ctx,
    t: &Target,
    run: &RunSpec,
    parts: &KeyParts,
) -> Result<BTreeSet<String>, InputRootError> {
    let root = ctx.root.as_path();
    let mut extra: BTreeSet<String> = BTreeSet::new();
    if run.depfile.is_some() {
        if let Ok(state) = ctx.state.read() {
            if let Some(rec) = state.get(&t.name) {
                extra.extend(discovered::files(&rec.discovered).map(|f| f.to_string()));
            }
        }
        let mut folders: BTreeSet<String> = discovered::command_search_dirs(&run.command)
            .into_iter()
            .filter_map(|d| project_folder(&d))
            .collect();
        for p in parts.inputs.keys().filter(|p| !p.starts_with('/')) {
            folders.insert(p.rsplit_once('/').map_or(String::new(), |(dir, _)| dir.to_string()));
        }
        for dir in folders {
            let abs = if dir.is_empty() { root.to_path_buf() } else { root.join(&dir) };
            // The project folder's own files only; any other folder with all below it,
            // except what git would ignore (build trees such as cargo's `target/`).
            let walker = ignore::WalkBuilder::new(&abs)
                .max_depth(Some(if dir.is_empty() { 1 } else { usize::MAX }))
                .hidden(false)
                .git_global(false)
                .require_git(false)
                .follow_links(false)
                .build();
            for e in walker.flatten().filter(|e| e.file_type().is_some_and(|t| t.is_file())) {
                if let Some(rel) = e.path().strip_prefix(root).ok().and_then(|r| r.to_str()) {
                    extra.insert(rel.to_string());
                }
                if extra.len() > MAX_DISCOVERABLE {
                    return Err(InputRootError::TooManyDiscoverable {
                        target: t.name.clone(),
                        max: MAX_DISCOVERABLE,
                    });
                }
            }
        }
    }
    Ok(extra)
}

/// The text of the symlink `link` (a project path), checked against the identity its key
/// holds: a link changed since keying is an error, never shipped under the old key.
fn link_text(root: &Path, link: &str, id: &FileId) -> Result<String, InputRootError> {
    let abs = root.join(link);
    let target = std::fs::read_link(&abs)
        .map_err(|source| InputRootError::ReadLink { link: link.to_string(), source })?;
    if crate::fingerprint::inputs::link_id(&abs).ok().as_ref() != Some(id) {
        return Err(InputRootError::LinkChanged(link.to_string()));
    }
    target.to_str().map(str::to_string).ok_or_else(|| InputRootError::LinkName(link.to_string()))
}

/// Times the inputs an engine lost are uploaded again before the step counts as the engine's
/// failure.
const RESENDS: usize = 3;

/// Files a depfile step's first remote run may ship beyond what it declares.
const MAX_DISCOVERABLE: usize = 50_000;

/// A command's include folder as a project folder (`""` for the project folder itself), or
/// `None` when it is absolute (the worker's) or climbs out with `..`.
fn project_folder(dir: &str) -> Option<String> {
    if dir.starts_with('/') {
        return None;
    }
    let mut parts = Vec::new();
    for c in dir.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

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
