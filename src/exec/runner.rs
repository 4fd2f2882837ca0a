//! One step target, start to finish: fingerprint -> fresh? -> restore (local, then remote)? ->
//! run -> store (local, then upload).
//!
//! Runs on a pool thread. It reads the shared context and returns a [`Done`]; the scheduler alone
//! updates the project state from it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use super::explain::{self, Reason};
use super::{remote_exec, Ctx, Outcome};
use crate::cache::remote::{Fetched, Upload};
use crate::cache::{ActionEntry, CacheError};
use crate::config::{RestoreMode, RunStep, Step, Target};
use crate::fingerprint::outputs::OutputTree;
use crate::fingerprint::state::{Explained, Record};
use crate::fingerprint::{
    depfile, discovered, full_key, inputs, Digest, FileId, KeyParts, StepDef, KEY_VERSION,
};
use crate::fsutil;
use crate::steps::fetch;
use crate::steps::image::{Builder, ImageSpec};
use crate::steps::run::{self as run_step, RunSpec};

/// What happened to one step target.
pub struct Done {
    pub outcome: Outcome,
    pub key: Option<Digest>,
    pub outputs_digest: Option<Digest>,
    pub ms: u64,
    /// Why it was not fresh (filled for --explain and --dry-run).
    pub reasons: Vec<Reason>,
    /// For a failure: what went wrong, the command and its log.
    pub error: Option<String>,
    pub command: Option<String>,
    pub log: Option<PathBuf>,
    pub warnings: Vec<String>,
    /// The new record for the project state (None: forget the old one).
    pub record: Option<Record>,
    pub update_record: bool,
    pub explained: Option<Explained>,
    /// For an image: its path and blake3, the Gevulot program id.
    pub image_id: Option<(String, Digest)>,
    /// How long the phases of a step that ran took (shown with GVBUILD_TIMINGS=1).
    pub phases: Vec<(&'static str, std::time::Duration)>,
    /// For a restored step: which cache it came from, `local` or `remote`.
    pub from: Option<&'static str>,
}

impl Done {
    /// A fresh step's outcome, as [`check_fresh`] reports it.
    pub fn fresh(
        key: Option<Digest>,
        outputs_digest: Option<Digest>,
        ms: u64,
        image_id: Option<(String, Digest)>,
    ) -> Done {
        let mut d = Done::new(Outcome::Fresh);
        d.key = key;
        d.outputs_digest = outputs_digest;
        d.ms = ms;
        d.image_id = image_id;
        d
    }

    fn new(outcome: Outcome) -> Done {
        Done {
            outcome,
            key: None,
            outputs_digest: None,
            ms: 0,
            reasons: Vec::new(),
            error: None,
            command: None,
            log: None,
            warnings: Vec::new(),
            record: None,
            update_record: false,
            explained: None,
            image_id: None,
            phases: Vec::new(),
            from: None,
        }
    }

    pub fn would_run() -> Done {
        Done::new(Outcome::Ran)
    }

    fn failed(msg: String) -> Done {
        let mut d = Done::new(Outcome::Failed);
        d.error = Some(msg);
        d
    }
}

pub fn process(ctx: &Ctx, target: &Target, deps: BTreeMap<String, Digest>) -> Done {
    let start = Instant::now();
    super::take_slot_wait();
    let mut done = match &target.step {
        Some(step) => process_step(ctx, target, step, deps),
        None => Done::new(Outcome::Fresh),
    };
    // The step's own time: waiting for a command slot is not part of it.
    done.ms = start.elapsed().saturating_sub(super::take_slot_wait()).as_millis() as u64;
    if done.outcome == Outcome::Failed && ctx.interrupted.load(Ordering::SeqCst) {
        done.outcome = Outcome::Interrupted;
    }
    // A dry run shows what would run; a failure names a command only if one ran.
    if done.command.is_none() && ctx.opts.dry_run {
        done.command = Some(summary_of(target, step_outputs(target)));
    }
    done
}

fn step_outputs(t: &Target) -> Vec<String> {
    t.outputs.iter().map(|o| o.path.clone()).collect()
}

/// What a step does, in one line: its expanded command, or for a built-in step a summary
/// (`fetch URL -> into`, `stage N rules -> into`, ...). Shown by `-n` and in failures.
pub fn summary_of(t: &Target, outputs: Vec<String>) -> String {
    let first = outputs.first().cloned().unwrap_or_default();
    match &t.step {
        None => String::new(),
        Some(Step::Run(run)) => run.command.clone(),
        Some(Step::Fetch(f)) => format!("fetch {} -> {first}", f.url),
        Some(Step::Stage(st)) => {
            let libs = if st.libs_for.is_empty() {
                String::new()
            } else {
                format!(" + the libraries of {}", st.libs_for.join(", "))
            };
            format!("stage {} rule(s){libs} -> {first}", st.copy.len())
        }
        Some(Step::Manifest(_)) => format!("manifest -> {first}"),
        Some(Step::Image(im)) => match &im.builder {
            Builder::Native { .. } => format!("image (native) {} + {} -> {first}", im.root, im.manifest),
            Builder::Ops { .. } => format!("image (ops build) {} + {} -> {first}", im.root, im.manifest),
        },
        Some(Step::Task(tk)) => crate::steps::task::summary(tk, &first),
    }
}

/// Phase one of a no-op build: is this step fresh, given its deps' output digests? `None` when
/// it is not (or cannot be checked), and the full runner must take it.
pub fn check_fresh(ctx: &Ctx, t: &Target, deps: BTreeMap<Cow<'_, str>, Digest>) -> Option<Done> {
    let start = Instant::now();
    let step = t.step.as_ref()?;
    // Only the scheduler thread writes the state, and not during this phase. A step with no
    // record (all of them, in a fresh clone) is not fresh: its inputs are not even hashed here.
    let state = ctx.state.read().ok()?;
    let record = state.get(&t.name)?;
    let parts = fingerprint(ctx, t, step, deps).ok()?;
    let mut d = fresh(ctx, t, step, &parts, parts.key(), record)?;
    d.ms = start.elapsed().as_millis() as u64;
    Some(d)
}

/// Step 1: everything the first-level key is made of.
fn fingerprint<'a>(
    ctx: &Ctx,
    t: &'a Target,
    step: &'a Step,
    deps: BTreeMap<Cow<'a, str>, Digest>,
) -> Result<KeyParts<'a>, String> {
    let root = ctx.root.as_path();
    let outputs: Vec<Cow<'a, str>> = t.outputs.iter().map(|o| Cow::Borrowed(o.path.as_str())).collect();
    let run = match step {
        Step::Run(run) => run,
        // A manifest is its JSON plus the stage root, klib folder and `from` file it checks; a
        // stage is its rules plus what they copy (and, discovered, the libraries).
        Step::Manifest(_) | Step::Stage(_) | Step::Image(_) => {
            let (kind, command) = match step {
                Step::Manifest(m) => (
                    "manifest",
                    match (&m.manifest, &m.from) {
                        (Some(json), _) => json.to_canonical(),
                        (None, from) => format!("from {}", from.as_deref().unwrap_or("")),
                    },
                ),
                Step::Stage(st) => {
                    let rules = serde_json::json!({
                        "copy": st.copy, "libs_for": st.libs_for, "lib_dir": st.lib_dir, "search": st.search,
                    });
                    ("stage", rules.to_string())
                }
                Step::Image(im) => (
                    "image",
                    format!(
                        "{} format {}",
                        serde_json::json!(im.keyed()),
                        crate::steps::image::native::FORMAT
                    ),
                ),
                _ => ("", String::new()),
            };
            // A manifest written from its fields depends on the stage root only through what it
            // checks there: whether the program, dirs, files and klibs exist. Keying just that
            // keeps it fresh when a staged file's content changes.
            let inputs = key_inputs(ctx, t, step)?;
            let deps = if matches!(step, Step::Manifest(m) if m.manifest.is_some()) {
                BTreeMap::new()
            } else {
                deps
            };
            let mut tools = BTreeMap::new();
            if let Step::Image(ImageSpec { builder: Builder::Ops { .. }, .. }) = step {
                // ops's identity is part of an image's key; ops prints it with `ops version`.
                let id = ctx
                    .tools
                    .identify_with("ops", root, &ctx.stat, &["version"])
                    .map_err(|_| crate::steps::image::ops::OPS_MISSING.to_string())?;
                tools.insert("ops".to_string(), id);
            }
            return Ok(KeyParts {
                version: KEY_VERSION,
                step: StepDef { kind: kind.into(), command: command.into(), outputs, depfile: None },
                inputs,
                deps,
                env: Cow::Owned(BTreeMap::new()),
                pass_env: BTreeMap::new(),
                tools,
            });
        }
        // A task is its image and files (inputs), the task and machine size, and QEMU.
        Step::Task(tk) => {
            let inputs = inputs::resolve(root, &t.inputs, &ctx.stat).map_err(|e| e.to_string())?;
            return Ok(KeyParts {
                version: KEY_VERSION,
                step: StepDef {
                    kind: "task".into(),
                    command: crate::steps::task::key_command(tk, task_size(ctx, tk)?).into(),
                    outputs,
                    depfile: None,
                },
                inputs,
                deps,
                env: Cow::Owned(BTreeMap::new()),
                pass_env: BTreeMap::new(),
                tools: crate::steps::task::key_tools(&ctx.tools, root, &ctx.stat)?,
            });
        }
        // A fetch is what its pin says it is: the URL is not part of the key.
        Step::Fetch(f) => {
            let extract = match &f.extract {
                None => "save".to_string(),
                Some(x) => format!(
                    "extract v{} strip_components={} max_size={} max_entries={}",
                    crate::steps::fetch::EXTRACTOR,
                    x.strip_components,
                    x.max_size,
                    x.max_entries
                ),
            };
            return Ok(KeyParts {
                version: KEY_VERSION,
                step: StepDef {
                    kind: "fetch".into(),
                    command: format!("{}:{} {extract}", f.pin.algo.name(), f.pin.hex).into(),
                    outputs,
                    depfile: None,
                },
                inputs: BTreeMap::new(),
                deps,
                env: Cow::Owned(BTreeMap::new()),
                pass_env: BTreeMap::new(),
                tools: BTreeMap::new(),
            });
        }
    };
    let mut empty = Vec::new();
    let inputs = inputs::resolve_noting_empty_globs(root, &t.inputs, &ctx.stat, &mut empty)
        .map_err(|e| e.to_string())?;
    if !empty.is_empty() {
        if let Ok(mut w) = ctx.glob_warnings.lock() {
            w.extend(empty.into_iter().map(|g| (t.name.clone(), g)));
        }
    }
    // A remote step's tools are the workers' and its system files theirs: its key names the
    // platform it runs on instead (see `remote_exec`).
    let remote = ctx.remote_steps;
    let mut inputs = inputs;
    if remote {
        // Absolute inputs are the worker's files: the platform keys them, not the client's.
        inputs.retain(|p, _| !p.starts_with('/'));
    }
    let tools = if remote {
        remote_exec::remote_tools(ctx, t, run)?
    } else {
        let mut tools = BTreeMap::new();
        for name in &run.tools {
            let id = ctx.tools.identify(name, root, &ctx.stat).map_err(|e| e.to_string())?;
            tools.insert(name.clone(), id);
        }
        tools
    };
    let kind = match remote {
        true => remote_exec::remote_kind(&remote_exec::key_platform(ctx, t, &tools)),
        false => "run".to_string(),
    };
    let pass_env = run.pass_env.iter().map(|v| (v.clone(), std::env::var(v).ok())).collect();
    Ok(KeyParts {
        version: KEY_VERSION,
        step: StepDef {
            kind: kind.into(),
            command: Cow::Borrowed(&run.command),
            outputs,
            depfile: run.depfile.as_deref().map(Cow::Borrowed),
        },
        inputs,
        deps,
        env: Cow::Borrowed(&run.env),
        pass_env,
        tools,
    })
}

/// A task's CPUs and memory: its fields, else the RunConfig of the manifest that the `image:`
/// target making its image was built from (a dependency's output, built by now).
fn task_size(ctx: &Ctx, tk: &crate::steps::task::TaskSpec) -> Result<(u32, u64), String> {
    let run_config = ctx.producer_of(&tk.image).and_then(|i| match &ctx.graph.target(i).step {
        Some(Step::Image(im)) => crate::steps::manifest::RunConfig::of_manifest(&ctx.root.join(&im.manifest)),
        _ => None,
    });
    crate::steps::task::machine_size(tk, run_config.as_ref())
}

/// The input files of a step's key (for a manifest written from its fields: what it checks).
fn key_inputs(ctx: &Ctx, t: &Target, step: &Step) -> Result<BTreeMap<String, FileId>, String> {
    match step {
        Step::Manifest(m) if m.manifest.is_some() => Ok(presence(&ctx.root, m)),
        Step::Fetch(_) => Ok(BTreeMap::new()),
        Step::Image(im @ ImageSpec { builder: Builder::Native { .. }, .. }) => {
            let mut ids = inputs::resolve(&ctx.root, &t.inputs, &ctx.stat).map_err(|e| e.to_string())?;
            native_image_facts(ctx, im, &mut ids)?;
            Ok(ids)
        }
        _ => inputs::resolve(&ctx.root, &t.inputs, &ctx.stat).map_err(|e| e.to_string()),
    }
}

/// What a native image holds beyond its input files' contents: the stage root's folders (empty
/// ones too) and symlinks by their text, and each klib the manifest names, where the builder
/// looks for it (the klib folder first, then the release), present or not.
fn native_image_facts(ctx: &Ctx, im: &ImageSpec, ids: &mut BTreeMap<String, FileId>) -> Result<(), String> {
    let fact = |what: &[u8]| FileId { digest: *blake3::hash(what).as_bytes(), exec: false, size: 0 };
    let root = ctx.root.join(&im.root);
    let walker = walkdir::WalkDir::new(&root)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| !(e.file_type().is_dir() && crate::paths::is_skipped_dir(e.file_name())));
    for e in walker {
        let e = e.map_err(|e| format!("cannot read the image root {}: {e}", im.root))?;
        let Ok(rel) = e.path().strip_prefix(&ctx.root) else { continue };
        let rel = rel
            .to_str()
            .ok_or_else(|| format!("{} in the image root has a name that is not UTF-8", rel.display()))?;
        if e.file_type().is_dir() {
            ids.insert(format!("{rel} (folder)"), inputs::folder_id());
        } else if e.file_type().is_symlink() {
            let target =
                fs::read_link(e.path()).map_err(|err| format!("cannot read symlink {rel}: {err}"))?;
            ids.insert(format!("{rel} (link)"), fact(target.as_os_str().as_encoded_bytes()));
        }
    }
    let Builder::Native { release, .. } = &im.builder else { return Ok(()) };
    // The builder itself reports a missing or malformed manifest, naming the YAML line.
    let Ok(text) = fs::read_to_string(ctx.root.join(&im.manifest)) else { return Ok(()) };
    let Ok(m) = serde_json::from_str::<crate::steps::manifest::Manifest>(&text) else { return Ok(()) };
    for k in &m.klibs {
        let dirs =
            m.klib_dir.iter().map(|d| Path::new(&im.root).join(d)).chain([Path::new(release).join("klibs")]);
        for dir in dirs {
            let rel = crate::paths::normalize_rel(&dir.join(k).to_string_lossy()).unwrap_or_default();
            let abs = ctx.root.join(&rel);
            let id = match fs::metadata(&abs) {
                Ok(meta) if meta.is_file() => ctx.stat.file_id_with_meta(&rel, &abs, &(&meta).into()).ok(),
                _ => None,
            };
            ids.insert(format!("{rel} (klib)"), id.unwrap_or_else(|| fact(b"absent")));
        }
    }
    Ok(())
}

/// What a manifest checks in the stage root, as keyable facts: each checked path and whether
/// it is a file, a folder or absent.
fn presence(root: &Path, m: &crate::config::ManifestStep) -> BTreeMap<String, FileId> {
    let mut out = BTreeMap::new();
    let Some(json) = &m.manifest else { return out };
    let mut check = |path: String| {
        let what: &[u8] = match fs::metadata(root.join(&path)) {
            Ok(meta) if meta.is_dir() => b"folder",
            Ok(_) => b"file",
            Err(_) => b"absent",
        };
        let digest = *blake3::hash(what).as_bytes();
        out.insert(format!("{path} (exists?)"), FileId { digest, exec: false, size: 0 });
    };
    let in_root = |p: &str| format!("{}/{}", m.root, p.trim_start_matches('/'));
    check(in_root(&json.program));
    for p in json.dirs.iter().chain(&json.files) {
        check(in_root(p));
    }
    if let Some(dir) = &m.klib_dir {
        for k in &json.klibs {
            check(format!("{dir}/{k}"));
        }
    }
    out
}

/// An image's path and blake3 (its one output file).
fn image_id(step: &Step, tree: &OutputTree) -> Option<(String, Digest)> {
    match (step, tree.files.as_slice()) {
        (Step::Image(_), [f]) => Some((f.path.clone(), f.digest)),
        _ => None,
    }
}

/// The depfile of a step, if it has one.
fn depfile_of(step: &Step) -> Option<&String> {
    match step {
        Step::Run(run) => run.depfile.as_ref(),
        Step::Fetch(_) | Step::Manifest(_) | Step::Stage(_) | Step::Image(_) | Step::Task(_) => None,
    }
}

/// Whether the step discovers inputs while running (a depfile, or the libraries `libs_for`
/// resolves), which makes its key two-level.
fn discovers(step: &Step) -> bool {
    match step {
        Step::Stage(s) => !s.libs_for.is_empty(),
        _ => depfile_of(step).is_some(),
    }
}

/// The search folders whose lookups a step's discovered inputs are keyed with (see
/// [`discovered`]): the command's include folders, or the stage step's `search` folders.
fn search_dirs(step: &Step) -> Vec<String> {
    match step {
        Step::Run(run) => discovered::command_search_dirs(&run.command),
        Step::Stage(st) => st.search.clone(),
        _ => Vec::new(),
    }
}

/// The full key for a list of discovered inputs: absent files are keyed as absent, and the
/// search folders' lookups are keyed too. `Err` says which read failed.
fn full_for(
    ctx: &Ctx,
    step: &Step,
    first: Digest,
    list: &[String],
) -> Result<(Digest, BTreeMap<String, FileId>), String> {
    if !discovers(step) {
        return Ok((first, BTreeMap::new()));
    }
    let mut dirs = search_dirs(step);
    if runs_remotely(ctx, step) {
        // A worker's own folders are not the client's to key.
        dirs.retain(|d| !d.starts_with('/'));
    }
    let ids = discovered::identities(&ctx.root, list, &dirs, &ctx.stat)
        .map_err(|e| format!("cannot read a discovered input: {e}"))?;
    Ok((full_key(&first, &ids), ids))
}

/// Whether `step` runs on the remote-execution engine (every `run:` step with `--remote-exec`).
fn runs_remotely(ctx: &Ctx, step: &Step) -> bool {
    ctx.remote_steps && matches!(step, Step::Run(_))
}

/// A discovered file that another target declares as its output, read without a dependency
/// path to that target: its content depended on the order the steps happened to run in.
fn unordered_read(ctx: &Ctx, t: &Target, list: &[String], how: &str) -> Result<(), String> {
    let Some(me) = ctx.graph.lookup(&t.name) else { return Ok(()) };
    for p in discovered::files(list).filter(|p| !p.starts_with('/')) {
        let Some(producer) = ctx.producer_of(p) else { continue };
        if producer != me && !ctx.graph.depends_on(me, producer) {
            let other = &ctx.graph.target(producer).name;
            return Err(format!(
                "`{}` read `{p}` ({how}), which target `{other}` writes, but `{}` does not depend on \
                 `{other}`: the file it read depended on the order the steps ran in. Add `{other}` to \
                 its `deps` (or `{p}` to its `inputs`, which infers the dependency)",
                t.name, t.name
            ));
        }
    }
    Ok(())
}

/// Step 2: fresh when the key equals the one recorded for this target and the outputs on disk
/// still match their digests.
fn fresh(ctx: &Ctx, t: &Target, step: &Step, parts: &KeyParts, first: Digest, rec: &Record) -> Option<Done> {
    if !t.cache || ctx.opts.forced(&t.name) {
        return None;
    }
    let (key, _) = full_for(ctx, step, first, &rec.discovered).ok()?;
    if key != rec.key {
        return None;
    }
    if discovers(step)
        && rec.graph_key != ctx.graph.key
        && unordered_read(ctx, t, &rec.discovered, "").is_err()
    {
        return None;
    }
    let tree = OutputTree::collect(&ctx.root, &parts.step.outputs, &ctx.stat).ok()?;
    // The record's digest is always its tree's, and the digest writes every field the
    // comparison compares: equal trees are equal digests, without hashing the tree again.
    if tree != rec.outputs {
        return None;
    }
    Some(Done::fresh(Some(key), Some(rec.outputs_digest), 0, image_id(step, &tree)))
}

fn process_step(ctx: &Ctx, t: &Target, step: &Step, deps: BTreeMap<String, Digest>) -> Done {
    let root = ctx.root.as_path();
    let deps = deps.into_iter().map(|(k, v)| (Cow::Owned(k), v)).collect();
    let parts = match fingerprint(ctx, t, step, deps) {
        Ok(p) => p,
        Err(e) => {
            // A failed step leaves no outputs, also when its inputs could not be keyed: an
            // output of an earlier build must not pass for this one's.
            if !ctx.opts.dry_run {
                clear_outputs(root, &t.outputs.iter().map(|o| o.path.clone()).collect::<Vec<_>>());
            }
            return Done::failed(e);
        }
    };
    let outputs = parts.output_paths();
    let first = parts.key();
    let record = ctx.state.read().ok().and_then(|s| s.get(&t.name).cloned());
    let record = record.as_ref();
    let forced = ctx.opts.forced(&t.name);
    let has_depfile = discovers(step);
    if let Some(d) = record.and_then(|r| fresh(ctx, t, step, &parts, first, r)) {
        return d;
    }
    let recorded = record.and_then(|r| full_for(ctx, step, first, &r.discovered).ok());
    let now_discovered = recorded.map(|(_, ids)| ids).unwrap_or_default();
    let mut reasons = Vec::new();
    if ctx.opts.explain || ctx.opts.dry_run {
        if forced {
            reasons.push(Reason::Forced);
        } else if !t.cache {
            reasons.push(Reason::Uncached);
        } else {
            reasons =
                explain::diff(ctx.explain.as_ref().and_then(|e| e.map.get(&t.name)), &parts, &now_discovered);
        }
    }
    let explained =
        |discovered: BTreeMap<String, FileId>| Explained { parts: parts.clone().into_owned(), discovered };

    // 3. Restore?
    if t.cache && !forced {
        let mut lists: Vec<Vec<String>> = Vec::new();
        if has_depfile {
            if let Some(r) = record {
                lists.push(r.discovered.clone());
            }
            lists.extend(ctx.cache.get_dep_lists(&first));
        } else {
            lists.push(Vec::new());
        }
        // Every recorded list whose full key has an entry could apply. One is a hit; several
        // (they cannot all be what the command would produce now) mean the step runs.
        let mut hits: Vec<Hit> = Vec::new();
        for list in &lists {
            let Ok((key, ids)) = full_for(ctx, step, first, list) else {
                continue;
            };
            if hits.iter().any(|h| h.0 == key) {
                continue;
            }
            let Some(entry) = ctx.cache.get_entry(&key) else {
                continue;
            };
            if let Err(e) = unordered_read(ctx, t, list, "a discovered input of a cached result") {
                return Done::failed(e);
            }
            hits.push((key, ids, list.clone(), entry));
        }
        // Then the remote cache, for the same lists and those it knows.
        let mut from = "local";
        let mut remote_warnings = Vec::new();
        let mut phases = Vec::new();
        if let (true, Some(remote)) = (hits.is_empty() && !ctx.opts.dry_run, ctx.remote.as_ref()) {
            let asking = Instant::now();
            let platform = ctx.platform_of(t);
            if has_depfile {
                for l in remote.dep_lists(&first, &platform) {
                    if !lists.contains(&l) {
                        lists.push(l);
                    }
                }
            }
            let mut tried = Vec::new();
            for list in &lists {
                let Ok((key, ids)) = full_for(ctx, step, first, list) else { continue };
                if tried.contains(&key) {
                    continue;
                }
                tried.push(key);
                match remote.fetch(&ctx.cache, &key, &platform, &outputs) {
                    Fetched::Hit(entry) => {
                        if let Err(e) = unordered_read(ctx, t, list, "a discovered input of a cached result")
                        {
                            return Done::failed(e);
                        }
                        if has_depfile {
                            let _ = ctx.cache.add_dep_list(&first, list);
                        }
                        hits.push((key, ids, list.clone(), entry));
                    }
                    Fetched::Refused(w) => remote_warnings.push(w),
                    Fetched::Miss => {}
                }
            }
            from = "remote";
            // The lookups and the download into the local cache, verification included.
            phases.push(("remote fetch", asking.elapsed()));
        }
        if hits.len() > 1 {
            reasons.push(Reason::SeveralCachedResults(hits.len()));
            hits.clear();
        }
        if let Some((key, ids, list, entry)) = hits.pop() {
            if ctx.opts.dry_run {
                let mut d = Done::new(Outcome::Restored);
                d.key = Some(key);
                d.reasons = reasons;
                // Dependents can be checked against what the restore would write.
                d.outputs_digest = Some(entry.outputs.digest());
                return d;
            }
            let restoring = Instant::now();
            match restore(ctx, t, &outputs, &entry) {
                Ok(()) => {
                    ctx.cache.touch_entry(&key);
                    let outputs_digest = entry.outputs.digest();
                    let mut d = Done::new(Outcome::Restored);
                    phases.push(("restore", restoring.elapsed()));
                    d.phases = phases;
                    d.from = Some(from);
                    d.warnings = remote_warnings;
                    d.key = Some(key);
                    d.outputs_digest = Some(outputs_digest);
                    d.image_id = image_id(step, &entry.outputs);
                    d.reasons = reasons;
                    d.record = Some(Record {
                        key,
                        outputs: entry.outputs,
                        outputs_digest,
                        discovered: list,
                        graph_key: ctx.graph.key,
                    });
                    d.update_record = true;
                    d.explained = Some(explained(ids));
                    return d;
                }
                Err(e) if !e.is_damaged_entry() => {
                    // The entry is fine; the project could not take the files (a full disk).
                    clear_outputs(root, &outputs);
                    return Done::failed(format!("cannot restore `{}` from the cache: {e}", t.name));
                }
                Err(e) => {
                    // A damaged blob or a bad entry is a miss, never a wrong output.
                    ctx.cache.evict_entry(&key);
                    clear_outputs(root, &outputs);
                    remote_warnings.push(format!("{e}; running the step instead"));
                    return finish_run(ctx, t, step, parts, first, reasons, remote_warnings);
                }
            }
        }
        if ctx.opts.dry_run {
            let mut d = Done::new(Outcome::Ran);
            d.reasons = reasons;
            return d;
        }
        // 4. Run, then 5. store.
        return finish_run(ctx, t, step, parts, first, reasons, remote_warnings);
    }
    if ctx.opts.dry_run {
        let mut d = Done::new(Outcome::Ran);
        d.reasons = reasons;
        return d;
    }

    // 4. Run, then 5. store.
    finish_run(ctx, t, step, parts, first, reasons, Vec::new())
}

fn abs_path(root: &Path, p: &str) -> PathBuf {
    if p.starts_with('/') {
        PathBuf::from(p)
    } else {
        root.join(p)
    }
}

fn clear_outputs(root: &Path, outputs: &[String]) {
    for o in outputs {
        let _ = fsutil::remove_path(&root.join(o));
    }
}

/// An entry's paths must lie inside the declared outputs: a shared or tampered cache must never
/// write elsewhere in the project.
fn inside_outputs(path: &str, outputs: &[String]) -> bool {
    !path.split('/').any(|c| c == ".." || c == "." || c.is_empty())
        && outputs
            .iter()
            .any(|o| path == o || path.strip_prefix(o.as_str()).is_some_and(|r| r.starts_with('/')))
}

/// Write an entry's outputs (in the local cache already) into the project, as a restore does.
pub(super) fn restore_outputs(
    ctx: &Ctx,
    t: &Target,
    outputs: &[String],
    entry: &ActionEntry,
) -> Result<(), CacheError> {
    restore(ctx, t, outputs, entry)
}

fn restore(ctx: &Ctx, t: &Target, outputs: &[String], entry: &ActionEntry) -> Result<(), CacheError> {
    let root = ctx.root.as_path();
    let tree = &entry.outputs;
    let all_paths = tree
        .files
        .iter()
        .map(|f| &f.path)
        .chain(tree.symlinks.iter().map(|l| &l.path))
        .chain(tree.dirs.iter());
    for p in all_paths {
        if !inside_outputs(p, outputs) {
            return Err(CacheError::BadEntry(format!("it names `{p}`, outside the declared outputs")));
        }
    }
    // Every declared output must be in the entry, or the restore would leave one missing.
    for o in outputs {
        let present = tree.files.iter().any(|f| &f.path == o)
            || tree.symlinks.iter().any(|l| &l.path == o)
            || tree.dirs.iter().any(|d| d == o);
        if !present {
            return Err(CacheError::BadEntry(format!("it lacks the declared output `{o}`")));
        }
    }
    // Folders and links are written into the project: a failure there is not the cache's.
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |cause| CacheError::Write { path, cause }
    };
    clear_outputs(root, outputs);
    for d in &tree.dirs {
        let abs = root.join(d);
        fs::create_dir_all(&abs).map_err(io(&abs))?;
    }
    // Files are independent of each other: restore (copy and verify) them in parallel.
    let restored = {
        use rayon::prelude::*;
        tree.files.par_iter().try_for_each(|f| {
            let abs = root.join(&f.path);
            if let Some(parent) = abs.parent() {
                fs::create_dir_all(parent).map_err(io(parent))?;
            }
            match t.restore {
                RestoreMode::Copy => ctx.cache.restore_copy(&f.digest, &abs, f.exec),
                RestoreMode::Hardlink => ctx.cache.restore_hardlink(&f.digest, &abs, f.exec),
            }?;
            ctx.stat.record(&f.path, &abs, f.digest);
            Ok(())
        })
    };
    if let Err(e) = restored {
        clear_outputs(root, outputs);
        return Err(e);
    }
    for l in &tree.symlinks {
        let abs = root.join(&l.path);
        if let Some(parent) = abs.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::os::unix::fs::symlink(&l.target, &abs).map_err(io(&abs))?;
    }
    if let Some(d) = entry.stdout_digest {
        // Copied, verified, never read into memory whole: a log may be big.
        let log = ctx.log_path(&t.name);
        if log.parent().is_some_and(|dir| fs::create_dir_all(dir).is_ok()) {
            let _ = ctx.cache.restore_copy(&d, &log, false);
        }
    }
    Ok(())
}

fn finish_run(
    ctx: &Ctx,
    t: &Target,
    step: &Step,
    parts: KeyParts,
    first: Digest,
    reasons: Vec<Reason>,
    mut warnings: Vec<String>,
) -> Done {
    let root = ctx.root.as_path();
    let outputs = &parts.output_paths();
    let log = ctx.log_path(&t.name);
    let mut done = Done::new(Outcome::Failed);
    done.reasons = reasons;
    done.log = Some(log.clone());

    clear_outputs(root, outputs);
    for o in outputs {
        if let Some(parent) = root.join(o).parent() {
            let _ = fs::create_dir_all(parent);
        }
    }
    let started = SystemTime::now();
    let run_started = Instant::now();
    let mut staged_libs: Vec<std::path::PathBuf> = Vec::new();
    let mut searched: Vec<std::path::PathBuf> = Vec::new();
    let inputs_before = stat_snapshot(root, &parts.inputs);
    let mut shipped: Option<remote_exec::Shipped> = None;
    let mut fell_back = false;
    match step {
        Step::Stage(st) => {
            done.command = Some(format!("stage {}", outputs[0]));
            match crate::steps::stage::run(root, st, &root.join(&outputs[0])) {
                Ok(staged) => {
                    warnings.extend(staged.warnings);
                    staged_libs = staged.discovered;
                    searched = staged.searched;
                }
                Err(e) => {
                    done.error = Some(e);
                    clear_outputs(root, outputs);
                    return done;
                }
            }
        }
        Step::Run(run) => {
            done.command = Some(run.command.clone());
            match execute_any(ctx, t, run, &parts, &log) {
                Ok(Ran::Local) => {}
                Ok(Ran::Remote(s)) => {
                    done.from = Some("remote");
                    shipped = Some(s);
                }
                Ok(Ran::FellBack) => fell_back = true,
                Err(e) => {
                    done.error = Some(e);
                    return done;
                }
            }
        }
        Step::Image(im @ ImageSpec { builder: Builder::Native { .. }, .. }) => {
            done.command = Some(format!("image {} (native)", outputs[0]));
            let slot = ctx.slots.acquire();
            // Files of the declared inputs were hashed for the key: reuse their digests.
            let digest_of = |abs: &Path| {
                let rel = abs.strip_prefix(root).ok()?.to_str()?;
                ctx.stat.file_id(rel, abs).ok().map(|id| id.digest)
            };
            let built = crate::steps::image::native::build(root, im, &outputs[0], &digest_of);
            drop(slot);
            match built {
                Ok(b) => warnings.extend(b.warnings),
                Err(e) => {
                    done.error = Some(e.to_string());
                    clear_outputs(root, outputs);
                    return done;
                }
            }
        }
        Step::Image(im @ ImageSpec { builder: Builder::Ops { program, nanos_version }, .. }) => {
            let name = crate::steps::image::image_name(&outputs[0]);
            let ops_home = ctx.cache.root().join("ops-home");
            let ops = crate::fingerprint::tools::resolve("ops", root);
            let Some(ops) = ops else {
                done.error = Some(crate::steps::image::ops::OPS_MISSING.into());
                return done;
            };
            let command =
                crate::steps::image::ops::ops_command(&ops, im, (program, nanos_version), root, &name);
            done.command = Some(command.clone());
            if let Err(e) = crate::steps::image::ops::prepare_ops_home(&ops_home, nanos_version) {
                done.error = Some(e.to_string());
                return done;
            }
            // A stale image of the same name must not pass for this build's.
            for stale in
                [ops_home.join("images").join(&name), ops_home.join("images").join(format!("{name}.img"))]
            {
                let _ = fs::remove_file(stale);
            }
            let env: BTreeMap<String, String> =
                [("OPS_HOME".to_string(), ops_home.to_string_lossy().into_owned())].into_iter().collect();
            let spec = RunSpec { command: &command, root, env: &env, log: &log, live: None };
            let slot = ctx.slots.acquire();
            let status = run_step::run(&spec, &ctx.jobs);
            drop(slot);
            match status {
                Ok(s) if s.success() => {}
                Ok(s) => {
                    done.error = Some(format!(
                        "ops failed (exit status {}); its output is below",
                        s.code().map_or("signal".to_string(), |c| c.to_string())
                    ));
                    return done;
                }
                Err(e) => {
                    done.error = Some(format!("could not run ops: {e}"));
                    return done;
                }
            }
            let Some(built) = crate::steps::image::ops::built_image(&ops_home, &name) else {
                done.error = Some(format!(
                    "ops succeeded but left no image `{name}` in {}/images",
                    ops_home.display()
                ));
                return done;
            };
            let dest = root.join(&outputs[0]);
            if fs::rename(&built, &dest).is_err() {
                if let Err(e) = fs::copy(&built, &dest).and_then(|_| fs::remove_file(&built)) {
                    done.error = Some(format!("cannot move the image to {}: {e}", outputs[0]));
                    return done;
                }
            }
        }
        Step::Task(tk) => {
            done.command = Some(crate::steps::task::summary(tk, &outputs[0]));
            let prefix = format!("[{}] ", t.name);
            let show = |line: &str| super::note(&format!("{prefix}{line}"));
            let live: Option<&(dyn Fn(&str) + Sync)> = if ctx.opts.verbose { Some(&show) } else { None };
            let slot = ctx.slots.acquire();
            let at = crate::steps::task::Places { root, into: &outputs[0], log: &log };
            let ran = task_size(ctx, tk)
                .and_then(|size| crate::steps::task::run(&at, tk, size, &ctx.jobs, &ctx.interrupted, live));
            drop(slot);
            match ran {
                Ok(notes) => warnings.extend(notes),
                Err(e) => {
                    done.error = Some(e);
                    clear_outputs(root, outputs);
                    return done;
                }
            }
        }
        Step::Manifest(m) => {
            done.command = Some(format!("manifest {}", outputs[0]));
            if let Err(e) = crate::steps::manifest::write(ctx.root.as_path(), m, &outputs[0]) {
                done.error = Some(e);
                clear_outputs(root, outputs);
                return done;
            }
        }
        Step::Fetch(f) => {
            done.command = Some(format!("fetch {}", f.url));
            let into = root.join(&outputs[0]);
            let downloads = ctx.cache.root().join("downloads");
            let slot = ctx.slots.acquire();
            let fetched =
                fetch::run(&f.url, &f.pin, f.extract.as_ref(), &into, &downloads, ctx.progress.as_ref());
            drop(slot);
            if let Err(e) = fetched {
                done.error = Some(e.to_string());
                clear_outputs(root, outputs);
                return done;
            }
        }
    }
    if ctx.interrupted.load(Ordering::SeqCst) {
        done.error = Some("interrupted".into());
        clear_outputs(root, outputs);
        return done;
    }
    let ran_at = Instant::now();
    done.phases.push(("run", ran_at.duration_since(run_started)));
    let tree = match OutputTree::collect(root, outputs, &ctx.stat) {
        Ok(t) => t,
        Err(e) => {
            done.error = Some(e.to_string());
            return done;
        }
    };
    done.phases.push(("hash outputs", ran_at.elapsed()));
    let outputs_digest = tree.digest();
    done.image_id = image_id(step, &tree);
    done.outcome = Outcome::Ran;
    done.outputs_digest = Some(outputs_digest);

    // Inputs edited while the step ran make its result unrepeatable: keep it, but store nothing
    // and record nothing, so the next build runs it again.
    let mut storable = true;
    // Same content is not enough: an input changed and changed back while the step ran (A, B,
    // A) may have been read as B. Its stat (mtime, ctime, inode, size) tells.
    let same_stat = stat_snapshot(root, &parts.inputs) == inputs_before;
    let inputs_now = key_inputs(ctx, t, step).map(|mut now| {
        if runs_remotely(ctx, step) {
            // As the key has them: a remote step's absolute inputs are the worker's.
            now.retain(|p, _| !p.starts_with('/'));
        }
        now
    });
    match inputs_now {
        Ok(now) if now == parts.inputs && same_stat => {}
        _ => {
            storable = false;
            warnings.push(format!("an input of `{}` changed while it ran; its result is not cached", t.name));
        }
    }

    // Run locally under a remote step's key: neither cached nor recorded.
    if fell_back {
        storable = false;
    }
    let discovered = match discovered_after_run(
        ctx,
        t,
        step,
        &staged_libs,
        &searched,
        outputs,
        started,
        shipped.as_ref().map(|s| &s.files),
    ) {
        Ok(d) => d,
        Err(e) => {
            done.outcome = Outcome::Failed;
            done.error = Some(e);
            return done;
        }
    };
    if let Some(w) = discovered.changed_while_running {
        storable = false;
        warnings.push(w);
    }
    let list = discovered.list;
    let (key, ids) = match full_for(ctx, step, first, &list) {
        Ok(k) => k,
        Err(e) => {
            done.outcome = Outcome::Failed;
            done.error = Some(e);
            return done;
        }
    };
    done.key = Some(key);
    done.warnings = warnings;
    done.update_record = true;
    if !storable {
        return done;
    }
    if t.cache {
        let storing = Instant::now();
        if let Err(e) = store(ctx, t, outputs, key, first, &tree, &list, &log, discovers(step)) {
            done.warnings.push(format!("could not store `{}` in the cache: {e}", t.name));
        }
        done.phases.push(("store", storing.elapsed()));
    }
    done.record =
        Some(Record { key, outputs: tree, outputs_digest, discovered: list, graph_key: ctx.graph.key });
    done.explained = Some(Explained { parts: parts.into_owned(), discovered: ids });
    done
}

/// A cached result that could apply: its full key, the discovered identities, the list and the
/// action entry.
type Hit = (Digest, BTreeMap<String, FileId>, Vec<String>, ActionEntry);

/// The discovered inputs of a step that just ran, as the key names them.
struct AfterRun {
    list: Vec<String>,
    /// Set when a discovered file changed while the step ran: its result is not stored.
    changed_while_running: Option<String>,
}

/// Read what a step discovered: its depfile (read as ninja does) or the stage step's libraries.
/// Every named file must exist and be named in UTF-8; one that another target writes needs a
/// dependency path to that target. `Err` names the depfile line.
#[allow(clippy::too_many_arguments)]
fn discovered_after_run(
    ctx: &Ctx,
    t: &Target,
    step: &Step,
    staged_libs: &[PathBuf],
    searched: &[PathBuf],
    outputs: &[String],
    started: SystemTime,
    shipped: Option<&std::collections::BTreeSet<String>>,
) -> Result<AfterRun, String> {
    let root = ctx.root.as_path();
    // (name, where it was named) for each discovered file.
    let raw: Vec<(String, String)> = match (step, depfile_of(step)) {
        (Step::Stage(_), _) => staged_libs
            .iter()
            .map(|p| match p.to_str() {
                Some(s) => Ok((s.to_string(), "a library of `libs_for`".to_string())),
                None => Err(format!("library {} has a name that is not UTF-8", p.display())),
            })
            .collect::<Result<_, _>>()?,
        (_, Some(dep)) => {
            let bytes = fs::read(root.join(dep))
                .map_err(|e| format!("the step did not write its depfile {dep}: {e}"))?;
            let parsed = depfile::parse(&bytes).map_err(|e| format!("cannot read depfile {dep}: {e}"))?;
            parsed
                .inputs
                .into_iter()
                .map(|i| match String::from_utf8(i.path) {
                    Ok(s) => Ok((s, format!("depfile {dep} line {}", i.line))),
                    Err(_) => Err(format!(
                        "depfile {dep} line {} names a file whose name is not UTF-8; gvbuild keys only \
                         UTF-8 paths",
                        i.line
                    )),
                })
                .collect::<Result<_, _>>()?
        }
        _ => return Ok(AfterRun { list: Vec::new(), changed_while_running: None }),
    };
    let mut list: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut changed_while_running = None;
    for (named, whence) in raw {
        let mut named = named;
        if let Some(shipped) = shipped {
            // On a worker, the project is the action's input root, somewhere on the worker: an
            // absolute path ending in a shipped file or a declared output is that project path
            // (cargo and `$PWD/...` write such paths), keyed as the local step keys it. Any other
            // absolute path is the worker's own file, keyed through the platform.
            let outside =
                named.starts_with('/') && project_path(root, &named).is_none_or(|p| p.starts_with('/'));
            if outside {
                match in_input_root(&named, shipped, outputs) {
                    Some(p) => named = p,
                    None => continue,
                }
            }
            // A project file must be one the action shipped.
            let inside = project_path(root, &named).filter(|p| !p.starts_with('/'));
            match inside {
                None if named.starts_with('/') => continue,
                Some(p) if outputs.iter().any(|o| &p == o || p.starts_with(&format!("{o}/"))) => continue,
                Some(p) if !shipped.contains(&p) => {
                    return Err(format!(
                        "{whence} names `{named}`, which the remote step's input root did not hold; \
                         declare it in `inputs` so that it is shipped and keyed"
                    ))
                }
                _ => {}
            }
        }
        let Some(p) = project_path(root, &named) else {
            return Err(format!(
                "{whence} names `{named}`, which does not exist; depfile paths are read relative to the \
                 project folder, so write them relative to it or absolute"
            ));
        };
        if outputs.iter().any(|o| &p == o || p.starts_with(&format!("{o}/"))) || !seen.insert(p.clone()) {
            continue;
        }
        let abs = abs_path(root, &p);
        let meta = fs::metadata(&abs).map_err(|e| {
            format!(
                "{whence} names `{named}`, which cannot be read ({e}); a file the command read must \
                 exist after it ran (depfile paths are relative to the project folder)"
            )
        })?;
        // ctime too: `cp -p`, `rsync -a` and `tar x` set an old mtime, but no one sets ctime.
        if meta.modified().is_ok_and(|m| m >= started) || changed_since(&meta, started) {
            changed_while_running = Some(format!(
                "discovered input {p} of `{}` changed while it ran; its result is not cached",
                t.name
            ));
        }
        list.push(p);
    }
    unordered_read(ctx, t, &list, "found through its depfile")?;
    // The folders the library search consulted: a library appearing in one changes the key.
    for dir in searched {
        let Some(d) = dir.to_str() else { continue };
        let d = project_path(root, d).unwrap_or_else(|| d.to_string());
        let entry = discovered::searched_entry(&d);
        if !list.contains(&entry) {
            list.push(entry);
        }
    }
    Ok(AfterRun { list, changed_while_running })
}

/// The project path a worker's absolute path `named` stands for: its longest ending (whole
/// path components) that is a file the action shipped or one of the step's declared outputs.
fn in_input_root(
    named: &str,
    shipped: &std::collections::BTreeSet<String>,
    outputs: &[String],
) -> Option<String> {
    let mut rest = named.trim_start_matches('/');
    loop {
        let is_output = outputs.iter().any(|o| rest == o || rest.starts_with(&format!("{o}/")));
        if shipped.contains(rest) || is_output {
            return Some(rest.to_string());
        }
        rest = rest.split_once('/')?.1;
    }
}

/// Size, mtime (s, ns), ctime (s, ns), inode.
type StatIdentity = (u64, i64, i64, i64, i64, u64);

/// Each input path's stat identity (size, mtime, ctime, inode; `None` where it cannot be read),
/// taken before and after a step runs.
fn stat_snapshot(root: &Path, inputs: &BTreeMap<String, FileId>) -> Vec<Option<StatIdentity>> {
    use std::os::unix::fs::MetadataExt;
    inputs
        .keys()
        .map(|p| {
            let m = fs::metadata(abs_path(root, p)).ok()?;
            Some((m.size(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec(), m.ino()))
        })
        .collect()
}

/// Whether a file's inode changed (content or metadata: its ctime) at or after `since`.
fn changed_since(meta: &fs::Metadata, since: SystemTime) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(since) = since.duration_since(std::time::UNIX_EPOCH) else { return true };
    let ctime =
        std::time::Duration::new(meta.ctime().max(0) as u64, meta.ctime_nsec().clamp(0, 999_999_999) as u32);
    ctime >= since
}

/// Run a shell step in its command slot; `Err` says why it failed.
/// Where a `run:` step ran.
enum Ran {
    Local,
    Remote(remote_exec::Shipped),
    /// Locally, though its key is a remote step's: the engine was lost (`--remote-exec-fallback`).
    FellBack,
}

/// Run the step on the remote-execution engine when there is one, else here.
fn execute_any(ctx: &Ctx, t: &Target, run: &RunStep, parts: &KeyParts, log: &Path) -> Result<Ran, String> {
    let Some(rx) = ctx.remote_exec.as_ref() else {
        return execute_run(ctx, t, run, parts, log).map(|()| Ran::Local);
    };
    if rx.active() {
        match rx.run(ctx, t, run, parts, log) {
            Ok(s) => return Ok(Ran::Remote(s)),
            Err(remote_exec::RemoteRunError::Step(e)) => return Err(e),
            Err(remote_exec::RemoteRunError::Engine(e)) if !rx.falls_back() => return Err(e),
            Err(remote_exec::RemoteRunError::Engine(_)) => {}
        }
    }
    execute_run(ctx, t, run, parts, log).map(|()| Ran::FellBack)
}

fn execute_run(ctx: &Ctx, t: &Target, run: &RunStep, parts: &KeyParts, log: &Path) -> Result<(), String> {
    let live = ctx.opts.verbose.then(|| format!("[{}] ", t.name));
    let spec = RunSpec {
        command: &run.command,
        root: &ctx.root,
        env: &run.env_with(&parts.pass_env),
        log,
        live: live.as_deref(),
    };
    let slot = ctx.slots.acquire();
    let status = run_step::run(&spec, &ctx.jobs);
    drop(slot);
    let status = status.map_err(|e| format!("could not start /bin/sh: {e}"))?;
    if ctx.interrupted.load(Ordering::SeqCst) || status.success() {
        return Ok(());
    }
    Err(match status.code() {
        Some(c) => format!("the command exited with status {c}"),
        None => "the command was killed by a signal".into(),
    })
}

/// Store locally, then queue the upload.
#[allow(clippy::too_many_arguments)]
fn store(
    ctx: &Ctx,
    t: &Target,
    outputs: &[String],
    key: Digest,
    first: Digest,
    tree: &OutputTree,
    list: &[String],
    log: &Path,
    has_depfile: bool,
) -> Result<(), String> {
    let entry = store_local(ctx, key, first, tree, list, log, has_depfile)?;
    if let Some(remote) = ctx.remote.as_ref().filter(|r| r.writes()) {
        let deps = has_depfile.then(|| (first, ctx.cache.get_dep_lists(&first)));
        remote.enqueue(Upload { key, outputs: outputs.to_vec(), entry, platform: ctx.platform_of(t), deps });
    }
    Ok(())
}

fn store_local(
    ctx: &Ctx,
    key: Digest,
    first: Digest,
    tree: &OutputTree,
    list: &[String],
    log: &Path,
    has_depfile: bool,
) -> Result<ActionEntry, String> {
    for f in &tree.files {
        match ctx.cache.put_file(&ctx.root.join(&f.path), &f.digest) {
            Ok(true) => {}
            Ok(false) => return Err(format!("output {} changed while it was being stored", f.path)),
            Err(e) => return Err(e.to_string()),
        }
    }
    // Most steps print nothing: an empty log is not worth a blob.
    let log_digest = fs::read(log).ok().filter(|b| !b.is_empty()).and_then(|b| ctx.cache.put_bytes(&b).ok());
    let entry = ActionEntry::new(tree.clone(), log_digest);
    ctx.cache.put_entry(&key, &entry).map_err(|e| e.to_string())?;
    if has_depfile {
        ctx.cache.add_dep_list(&first, list).map_err(|e| e.to_string())?;
    }
    Ok(entry)
}

/// A depfile path as the key names it: project-relative when inside the project, absolute for
/// system files; `None` for paths that climb out relatively.
fn project_path(root: &Path, p: &str) -> Option<String> {
    if p.starts_with('/') {
        if let Ok(rel) = Path::new(p).strip_prefix(root) {
            return crate::paths::normalize_rel(rel.to_str()?);
        }
        return Some(p.to_string());
    }
    match crate::paths::normalize_rel(p) {
        Some(r) => Some(r),
        // A relative path out of the project (../sibling/x.h): key it by absolute path.
        None => {
            let canon = fs::canonicalize(root.join(p)).ok()?;
            let croot = fs::canonicalize(root).ok()?;
            match canon.strip_prefix(&croot) {
                Ok(rel) => crate::paths::normalize_rel(rel.to_str()?),
                Err(_) => canon.to_str().map(str::to_string),
            }
        }
    }
}

impl RunStep {
    /// The step's own environment: `env`, then the `pass_env` values that are set.
    pub(super) fn env_with(&self, pass: &BTreeMap<String, Option<String>>) -> BTreeMap<String, String> {
        let mut env = self.env.clone();
        for (k, v) in pass {
            if let Some(v) = v {
                env.insert(k.clone(), v.clone());
            }
        }
        env
    }
}
