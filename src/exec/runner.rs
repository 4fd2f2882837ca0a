//! One step target, start to finish: fingerprint -> fresh? -> restore (local, then remote)? ->
//! run -> store (local, then upload).
//!
//! Runs on a pool thread. It reads the shared context and returns a [`Done`]; the scheduler alone
//! updates the project state from it.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use super::error::StepError;
use super::explain::{self, Reason};
use super::restore::{clear_outputs, restore};
use super::{remote_exec, Ctx, Outcome};
use crate::cache::remote::{Fetched, Upload};
use crate::cache::ActionEntry;
use crate::config::Target;
use crate::fingerprint::outputs::OutputTree;
use crate::fingerprint::state::{Explained, Record};
use crate::fingerprint::{
    depfile, discovered, full_key, inputs, Digest, FileId, KeyParts, StepDef, KEY_VERSION,
};
use crate::steps::run::RunSpec;
use crate::steps::run::{self as run_step, Invocation};
use crate::steps::Step;
use crate::steps::StepEnv;

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

    /// In a dry run: a step that would run (a dependency of it would).
    pub fn would_run() -> Done {
        Done::new(Outcome::Ran)
    }

    fn failed(e: StepError) -> Done {
        let mut d = Done::new(Outcome::Failed);
        d.error = Some(e.to_string());
        d
    }
}

/// Take one step target through its phases (see [`process_step`]), given its deps' outputs
/// digests by name; the time spent waiting for a command slot is not counted in its time. A
/// group is fresh at once.
pub fn process(ctx: &Ctx, target: &Target, deps: BTreeMap<String, Digest>) -> Done {
    let start = Instant::now();
    crate::jobs::take_slot_wait();
    let mut done = match &target.step {
        Some(step) => process_step(ctx, target, step, deps),
        None => Done::new(Outcome::Fresh),
    };
    // The step's own time: waiting for a command slot is not part of it.
    done.ms = start.elapsed().saturating_sub(crate::jobs::take_slot_wait()).as_millis() as u64;
    if done.outcome == Outcome::Failed && ctx.interrupted.load(Ordering::SeqCst) {
        done.outcome = Outcome::Interrupted;
    }
    // A dry run shows what would run; a failure names a command only if one ran.
    if done.command.is_none() && ctx.opts.dry_run {
        done.command = Some(summary_of(target));
    }
    done
}

/// What a target's step does, in one line (see [`Step::summary`]), naming its first declared
/// output; empty for a group. Shown by `-n` and in failures.
pub fn summary_of(t: &Target) -> String {
    let first = t.outputs.first().map_or("", |o| o.path.as_str());
    t.step.as_ref().map_or(String::new(), |s| s.summary(first))
}

/// The kinds' view of the build ([`StepEnv`]) for target `t`, handed to `f`.
fn with_env<R>(
    ctx: &Ctx,
    t: &Target,
    log: &Path,
    live: Option<&(dyn Fn(&str) + Sync)>,
    f: impl FnOnce(&StepEnv) -> R,
) -> R {
    let run_config =
        |image: &str| ctx.graph.target(ctx.producer_of(image)?).step.as_ref()?.image_run_config(&ctx.root);
    let env = StepEnv {
        root: &ctx.root,
        inputs: &t.inputs,
        into: t.outputs.first().map_or("", |o| o.path.as_str()),
        log,
        cache_dir: ctx.cache.root(),
        stat: &ctx.stat,
        tools: &ctx.tools,
        slots: &ctx.slots,
        jobs: &ctx.jobs,
        interrupted: &ctx.interrupted,
        progress: ctx.progress.as_ref(),
        live,
        run_config_of_image: &run_config,
    };
    f(&env)
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

/// Everything the first-level key is made of. A built-in kind keys itself
/// ([`Step::kind_key`]); a `run:` step's key is made here, since it depends on where the step
/// runs: its env and tools here, or the platform it runs on remotely (see `remote_exec`).
fn fingerprint<'a>(
    ctx: &Ctx,
    t: &'a Target,
    step: &'a Step,
    deps: BTreeMap<Cow<'a, str>, Digest>,
) -> Result<KeyParts<'a>, StepError> {
    let root = ctx.root.as_path();
    let outputs: Vec<Cow<'a, str>> = t.outputs.iter().map(|o| Cow::Borrowed(o.path.as_str())).collect();
    let Some(run) = step.as_run() else {
        // A built-in kind keys itself: what it does, the files and tools it reads.
        let (k, inputs) = with_env(ctx, t, Path::new(""), None, |env| step.kind_key(env))?;
        return Ok(KeyParts {
            version: KEY_VERSION,
            step: StepDef { kind: k.kind.into(), command: k.command.into(), outputs, depfile: None },
            inputs,
            deps: if k.keys_deps { deps } else { BTreeMap::new() },
            env: Cow::Owned(BTreeMap::new()),
            pass_env: BTreeMap::new(),
            tools: k.tools,
        });
    };
    let mut empty = Vec::new();
    let inputs = inputs::resolve_noting_empty_globs(root, &t.inputs, &ctx.stat, &mut empty)?;
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
            let id = ctx.tools.identify(name, root, &ctx.stat)?;
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

/// The full key for a list of discovered inputs: absent files are keyed as absent, and the
/// search folders' lookups are keyed too. `Err` says which read failed.
fn full_key_for(
    ctx: &Ctx,
    step: &Step,
    first: Digest,
    list: &[String],
) -> Result<(Digest, BTreeMap<String, FileId>), StepError> {
    if !step.discovers() {
        return Ok((first, BTreeMap::new()));
    }
    let mut dirs = step.search_dirs();
    if runs_remotely(ctx, step) {
        // A worker's own folders are not the client's to key.
        dirs.retain(|d| !d.starts_with('/'));
    }
    let shown = |walked: &str, p: &str| shown(ctx, walked, p);
    let ids = discovered::identities(&ctx.root, list, &dirs, &ctx.stat, &shown)
        .map_err(StepError::DiscoveredRead)?;
    Ok((full_key(&first, &ids), ids))
}

/// What a sandboxed step's view would show at project path `p` now, by the walk of project
/// folder `walked` (made once a build, as the views' own).
fn shown(ctx: &Ctx, walked: &str, p: &str) -> discovered::Shown {
    let files = super::visible::walk(ctx, walked);
    if files.holds(p) {
        discovered::Shown::File
    } else if files.holds_below(p) {
        discovered::Shown::Folder
    } else {
        discovered::Shown::Nothing
    }
}

/// An image's path and blake3 (its one output file).
fn image_id(step: &Step, tree: &OutputTree) -> Option<(String, Digest)> {
    match (step.makes_image(), tree.files.as_slice()) {
        (true, [f]) => Some((f.path.clone(), f.digest)),
        _ => None,
    }
}

/// Whether `step` runs on the remote-execution engine (every `run:` step with `--remote-exec`).
fn runs_remotely(ctx: &Ctx, step: &Step) -> bool {
    ctx.remote_steps && step.as_run().is_some()
}

/// A discovered file that another target declares as its output, read without a dependency
/// path to that target: its content depended on the order the steps happened to run in.
fn unordered_read(ctx: &Ctx, t: &Target, list: &[String], how: &str) -> Result<(), StepError> {
    let Some(me) = ctx.graph.lookup(&t.name) else { return Ok(()) };
    for p in discovered::files(list).filter(|p| !p.starts_with('/')) {
        let Some(producer) = ctx.producer_of(p) else { continue };
        if producer != me && !ctx.graph.depends_on(me, producer) {
            let other = &ctx.graph.target(producer).name;
            return Err(StepError::UnorderedRead {
                target: t.name.clone(),
                path: p.to_string(),
                how: how.to_string(),
                other: other.clone(),
            });
        }
    }
    Ok(())
}

/// Fresh when the key equals the one recorded for this target and the outputs on disk
/// still match their digests.
fn fresh(ctx: &Ctx, t: &Target, step: &Step, parts: &KeyParts, first: Digest, rec: &Record) -> Option<Done> {
    if !t.cache || ctx.opts.forced(&t.name) {
        return None;
    }
    let (key, _) = full_key_for(ctx, step, first, &rec.discovered).ok()?;
    if key != rec.key {
        return None;
    }
    if step.discovers()
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

/// The phases of one step: fingerprint -> fresh? -> restore (local, then remote)? -> run (here
/// or remote) -> store (local, then upload).
fn process_step(ctx: &Ctx, t: &Target, step: &Step, deps: BTreeMap<String, Digest>) -> Done {
    // 1. Fingerprint.
    let deps = deps.into_iter().map(|(k, v)| (Cow::Owned(k), v)).collect();
    let parts = match fingerprint(ctx, t, step, deps) {
        Ok(p) => p,
        Err(e) => {
            // A failed step leaves no outputs, also when its inputs could not be keyed: an
            // output of an earlier build must not pass for this one's.
            if !ctx.opts.dry_run {
                clear_outputs(&ctx.root, &t.outputs.iter().map(|o| o.path.clone()).collect::<Vec<_>>());
            }
            return Done::failed(e);
        }
    };
    let first = parts.key();
    let record = ctx.state.read().ok().and_then(|s| s.get(&t.name).cloned());
    // 2. Fresh?
    if let Some(d) = record.as_ref().and_then(|r| fresh(ctx, t, step, &parts, first, r)) {
        return d;
    }
    let mut reasons = why_it_runs(ctx, t, step, &parts, first, record.as_ref());
    // 3. Restore?
    let mut warnings = Vec::new();
    if t.cache && !ctx.opts.forced(&t.name) {
        let mut found = match find_cached(ctx, t, step, &parts, first, record.as_ref()) {
            Ok(found) => found,
            Err(e) => return Done::failed(e),
        };
        if found.hits.len() > 1 {
            // Several recorded lists with entries cannot all be what the command would
            // produce now: the step runs.
            reasons.push(Reason::SeveralCachedResults(found.hits.len()));
            found.hits.clear();
        }
        if let Some(hit) = found.hits.pop() {
            match restore_hit(ctx, t, step, &parts, hit, &mut found, reasons) {
                Restored::Done(d) => return *d,
                Restored::Damaged(r) => reasons = r,
            }
        }
        warnings = found.warnings;
    }
    if ctx.opts.dry_run {
        let mut d = Done::new(Outcome::Ran);
        d.reasons = reasons;
        return d;
    }
    // 4. Run, then 5. store.
    run_and_store(ctx, t, step, parts, first, reasons, warnings)
}

/// Why a step that is not fresh runs, for `--explain` and `-n`: forced, uncached, or the key
/// parts that changed since the last build.
fn why_it_runs(
    ctx: &Ctx,
    t: &Target,
    step: &Step,
    parts: &KeyParts,
    first: Digest,
    record: Option<&Record>,
) -> Vec<Reason> {
    if !(ctx.opts.explain || ctx.opts.dry_run) {
        return Vec::new();
    }
    if ctx.opts.forced(&t.name) {
        return vec![Reason::Forced];
    }
    if !t.cache {
        return vec![Reason::Uncached];
    }
    let recorded = record.and_then(|r| full_key_for(ctx, step, first, &r.discovered).ok());
    let now_discovered = recorded.map(|(_, ids)| ids).unwrap_or_default();
    explain::diff(ctx.explain.as_ref().and_then(|e| e.map.get(&t.name)), parts, &now_discovered)
}

/// The cached results that could be restored, and where they were found.
struct Found {
    hits: Vec<Hit>,
    /// `local`, or `remote` once the shared cache was asked.
    from: &'static str,
    /// What the shared cache refused, for the user.
    warnings: Vec<String>,
    /// The remote lookup's time, verification included.
    phases: Vec<(&'static str, std::time::Duration)>,
}

/// Look for the step's result: in the local cache under every recorded list of discovered
/// inputs whose full key has an entry, then (none found) in the shared cache, for the same
/// lists and those it knows. `Err` when a discovered input of a hit was read out of order.
fn find_cached(
    ctx: &Ctx,
    t: &Target,
    step: &Step,
    parts: &KeyParts,
    first: Digest,
    record: Option<&Record>,
) -> Result<Found, StepError> {
    let mut lists: Vec<Vec<String>> = Vec::new();
    if step.discovers() {
        lists.extend(record.map(|r| r.discovered.clone()));
        lists.extend(ctx.cache.get_dep_lists(&first));
    } else {
        lists.push(Vec::new());
    }
    let mut found = Found { hits: Vec::new(), from: "local", warnings: Vec::new(), phases: Vec::new() };
    for list in &lists {
        let Ok((key, ids)) = full_key_for(ctx, step, first, list) else { continue };
        if found.hits.iter().any(|h| h.0 == key) {
            continue;
        }
        let Some(entry) = ctx.cache.get_entry(&key) else { continue };
        unordered_read(ctx, t, list, "a discovered input of a cached result")?;
        found.hits.push((key, ids, list.clone(), entry));
    }
    if let (true, Some(remote)) = (found.hits.is_empty() && !ctx.opts.dry_run, ctx.remote.as_ref()) {
        let asking = Instant::now();
        let platform = ctx.platform_of(t);
        if step.discovers() {
            for l in remote.dep_lists(&first, &platform) {
                if !lists.contains(&l) {
                    lists.push(l);
                }
            }
        }
        let outputs = parts.output_paths();
        let mut tried = Vec::new();
        for list in &lists {
            let Ok((key, ids)) = full_key_for(ctx, step, first, list) else { continue };
            if tried.contains(&key) {
                continue;
            }
            tried.push(key);
            match remote.fetch(&ctx.cache, &key, &platform, &outputs) {
                Fetched::Hit(entry) => {
                    unordered_read(ctx, t, list, "a discovered input of a cached result")?;
                    if step.discovers() {
                        let _ = ctx.cache.add_dep_list(&first, list);
                    }
                    found.hits.push((key, ids, list.clone(), entry));
                }
                Fetched::Refused(w) => found.warnings.push(w),
                Fetched::Miss => {}
            }
        }
        found.from = "remote";
        found.phases.push(("remote fetch", asking.elapsed()));
    }
    Ok(found)
}

/// What restoring a hit came to.
enum Restored {
    /// Restored (or, in a dry run, would be), or failed for the project's side.
    Done(Box<Done>),
    /// A damaged blob or a bad entry: evicted, and the step runs instead (the warning is in
    /// `found`; the reasons are handed back).
    Damaged(Vec<Reason>),
}

/// Write a hit's outputs into the project; the result carries `found`'s warnings and phases. A
/// damaged entry is a miss, never a wrong output.
fn restore_hit(
    ctx: &Ctx,
    t: &Target,
    step: &Step,
    parts: &KeyParts,
    (key, ids, list, entry): Hit,
    found: &mut Found,
    reasons: Vec<Reason>,
) -> Restored {
    let mut d = Done::new(Outcome::Restored);
    d.key = Some(key);
    if ctx.opts.dry_run {
        d.reasons = reasons;
        // Dependents can be checked against what the restore would write.
        d.outputs_digest = Some(entry.outputs.digest());
        return Restored::Done(Box::new(d));
    }
    let outputs = parts.output_paths();
    let restoring = Instant::now();
    match restore(ctx, t, &outputs, &entry) {
        Ok(()) => {}
        Err(e) if !e.is_damaged_entry() => {
            // The entry is fine; the project could not take the files (a full disk).
            clear_outputs(&ctx.root, &outputs);
            let why = StepError::Restore { target: t.name.clone(), source: e };
            return Restored::Done(Box::new(Done::failed(why)));
        }
        Err(e) => {
            ctx.cache.evict_entry(&key);
            clear_outputs(&ctx.root, &outputs);
            found.warnings.push(format!("{e}; running the step instead"));
            return Restored::Damaged(reasons);
        }
    }
    ctx.cache.touch_entry(&key);
    let outputs_digest = entry.outputs.digest();
    d.phases = std::mem::take(&mut found.phases);
    d.phases.push(("restore", restoring.elapsed()));
    d.from = Some(found.from);
    d.warnings = std::mem::take(&mut found.warnings);
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
    d.explained = Some(Explained { parts: parts.clone().into_owned(), discovered: ids });
    Restored::Done(Box::new(d))
}

/// Run, then store: the step runs from no outputs; its outputs are hashed and its
/// discovered inputs keyed, and the result is stored and recorded unless an input changed
/// while it ran (or it ran locally under a remote step's key).
fn run_and_store(
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
    let inputs_before = stat_snapshot(root, &parts.inputs);
    let ran = match execute(ctx, t, step, &parts, &log, &mut done) {
        Ok(ran) => ran,
        Err(e) => {
            done.error = Some(e.to_string());
            return done;
        }
    };
    warnings.extend(ran.warnings);
    if ctx.interrupted.load(Ordering::SeqCst) {
        done.error = Some(StepError::Interrupted.to_string());
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
    done.image_id = image_id(step, &tree);
    done.outcome = Outcome::Ran;
    done.outputs_digest = Some(tree.digest());

    // Inputs edited while the step ran make its result unrepeatable, and a result run locally
    // under a remote step's key is not that key's: keep it, but store and record nothing, so
    // that the next build runs it again.
    let mut storable = !ran.fell_back && !ran.untrusted;
    if !inputs_unchanged(ctx, t, step, &parts, &inputs_before) {
        storable = false;
        warnings.push(format!("an input of `{}` changed while it ran; its result is not cached", t.name));
    }
    let shipped = ran.shipped.as_ref().map(|s| &s.files);
    let after = discovered_after_run(ctx, t, step, &ran.found, &ran.searched, outputs, started, shipped);
    let mut list = match after {
        Ok(d) => {
            if let Some(w) = d.changed_while_running {
                storable = false;
                warnings.push(w);
            }
            d.list
        }
        Err(e) => {
            done.outcome = Outcome::Failed;
            done.error = Some(e.to_string());
            return done;
        }
    };
    // A file it may discover, read but not on its depfile's list, is in neither key: a later
    // change to it would find this result fresh. (Bazel's "undeclared inclusion".)
    let listed: std::collections::HashSet<&str> = discovered::files(&list).map(String::as_str).collect();
    let unlisted: std::collections::BTreeSet<String> =
        ran.discovering.reads.into_iter().filter(|p| !listed.contains(p.as_str())).collect();
    if !unlisted.is_empty() {
        clear_outputs(root, outputs);
        let touched = crate::sandbox::diagnose::Touched { unrecorded: unlisted, ..Default::default() };
        let lines = undeclared_lines(ctx, t, &parts, &touched, false);
        done.outcome = Outcome::Failed;
        done.error = Some(StepError::Undeclared { how: "the command succeeded".into(), lines }.to_string());
        return done;
    }
    // What it looked up among them, found or not (`test -e`, `__has_include`, a tool's config
    // file it goes without), is keyed too, as the view would show it (`shown`): another target's
    // output among them is nothing now, and shows once no target writes it.
    let looks: Vec<&crate::sandbox::Look> =
        ran.discovering.looks.iter().filter(|l| !listed.contains(l.path.as_str())).collect();
    // What the view hides whatever its time: a target's output, gvbuild's and git's folders.
    let hidden = |p: &str| {
        ctx.producer_of(p).is_some() || [".gvbuild", ".git"].iter().any(|d| crate::paths::is_within(p, d))
    };
    // One made, changed or gone since the step started may not be what it looked at. (A walk
    // is made once a build: what was made since is told by its time.)
    let changed = looks.iter().find(|l| {
        let meta = fs::symlink_metadata(root.join(&l.path)).ok();
        let shows = match &l.walked {
            Some(w) => shown(ctx, w, &l.path) != discovered::Shown::Nothing,
            None => true,
        };
        let recent = meta
            .as_ref()
            .is_some_and(|m| m.modified().is_ok_and(|t| t >= started) || changed_since(m, started));
        (meta.is_some() && shows) != l.found || (recent && !hidden(&l.path))
    });
    if let Some(l) = changed.filter(|_| storable) {
        storable = false;
        warnings.push(format!(
            "{}, which `{}` looked up, changed while it ran; its result is not cached",
            l.path, t.name
        ));
    }
    list.extend(looks.into_iter().map(|l| discovered::looked_entry(&l.path, l.walked.as_deref())));
    let (key, ids) = match full_key_for(ctx, step, first, &list) {
        Ok(k) => k,
        Err(e) => {
            done.outcome = Outcome::Failed;
            done.error = Some(e.to_string());
            return done;
        }
    };
    done.key = Some(key);
    done.warnings = warnings;
    done.update_record = true;
    if storable {
        store_result(ctx, t, step, &mut done, (parts, first, key, ids), tree, list, &log);
    }
    done
}

/// What running a step gave, besides its outputs.
struct Execution {
    warnings: Vec<String>,
    /// Inputs a built-in kind found while running (a stage's libraries), and where it looked.
    found: Vec<PathBuf>,
    searched: Vec<PathBuf>,
    /// The files a remote action shipped.
    shipped: Option<remote_exec::Shipped>,
    /// Run locally after the engine failed (`--remote-exec-fallback`).
    fell_back: bool,
    /// Traced touching what it did not declare (`--trace-undeclared`): not to be cached.
    untrusted: bool,
    /// What a sandboxed depfile step's view saw it do with the files it may discover.
    discovering: Discovering,
}

/// What a sandboxed depfile step did with the files it may discover but did not declare, as its
/// lazy view saw it ([`crate::sandbox::Harvest`]).
#[derive(Debug, Default)]
struct Discovering {
    /// Those it read: each must be on its depfile's list, or its key would not cover it.
    reads: Vec<String>,
    /// The paths it looked up among them, found or not: each is keyed.
    looks: Vec<crate::sandbox::Look>,
}

/// Run the step: a `run:` command here or on the engine, a built-in kind through its module. Sets
/// `done.command` (and `from` for a remote run). `Err` is the failure; a built-in kind's
/// partial outputs are cleared.
fn execute(
    ctx: &Ctx,
    t: &Target,
    step: &Step,
    parts: &KeyParts,
    log: &Path,
    done: &mut Done,
) -> Result<Execution, StepError> {
    let mut ran = Execution {
        warnings: Vec::new(),
        found: Vec::new(),
        searched: Vec::new(),
        shipped: None,
        fell_back: false,
        untrusted: false,
        discovering: Discovering::default(),
    };
    if let Some(run) = step.as_run() {
        done.command = Some(run.command.clone());
        let wants_namespaces = (run.sandbox && ctx.sandbox.wanted) || !run.network;
        if wants_namespaces && ctx.remote_exec.as_ref().is_none_or(|rx| !rx.active()) {
            ran.warnings.extend(ctx.sandbox.take_warning());
        }
        match run_here_or_remote(ctx, t, run, parts, log)? {
            Ran::Local(seen) => ran.discovering = seen,
            Ran::Remote(s) => {
                done.from = Some("remote");
                ran.shipped = Some(s);
            }
            Ran::FellBack(seen) => {
                ran.fell_back = true;
                ran.discovering = seen;
            }
            Ran::Traced(found) => {
                // Run here, though with `--remote-exec` its key is a remote step's.
                ran.fell_back = ctx.remote_steps;
                if found.counts {
                    ctx.undeclared_steps.fetch_add(1, Ordering::SeqCst);
                    ran.untrusted = true;
                    ran.warnings.push(format!(
                        "`{}` touched what it did not declare (its result is not cached):\n  {}",
                        t.name,
                        found.lines.join("\n  ")
                    ));
                } else if !found.lines.is_empty() {
                    ran.warnings.push(format!(
                        "`{}` (`sandbox: false`, so nothing is hidden from it) touched what it did not declare:\n  {}",
                        t.name,
                        found.lines.join("\n  ")
                    ));
                }
            }
        }
        return Ok(ran);
    }
    let prefix = format!("[{}] ", t.name);
    let show = |line: &str| super::note(&format!("{prefix}{line}"));
    let live: Option<&(dyn Fn(&str) + Sync)> = if ctx.opts.verbose { Some(&show) } else { None };
    match with_env(ctx, t, log, live, |env| step.execute(env)) {
        Ok(executed) => {
            done.command = Some(executed.command);
            ran.warnings = executed.warnings;
            ran.found = executed.discovered;
            ran.searched = executed.searched;
            Ok(ran)
        }
        Err(failed) => {
            done.command = failed.command;
            clear_outputs(&ctx.root, &parts.output_paths());
            Err(StepError::Kind(failed.message))
        }
    }
}

/// Whether the step's inputs are as they were keyed: the same content, and the same stat
/// (mtime, ctime, inode, size) as before it ran, since an input changed and changed back
/// while it ran (A, B, A) may have been read as B.
fn inputs_unchanged(
    ctx: &Ctx,
    t: &Target,
    step: &Step,
    parts: &KeyParts,
    before: &[Option<StatIdentity>],
) -> bool {
    let same_stat = stat_snapshot(&ctx.root, &parts.inputs) == before;
    let now = with_env(ctx, t, Path::new(""), None, |env| step.key_inputs(env)).map(|mut now| {
        if runs_remotely(ctx, step) {
            // As the key has them: a remote step's absolute inputs are the worker's.
            now.retain(|p, _| !p.starts_with('/'));
        }
        now
    });
    same_stat && now.is_ok_and(|now| now == parts.inputs)
}

/// Store the result: in the cache (when the target caches), then the record and the key
/// parts `--explain` compares against next time.
#[allow(clippy::too_many_arguments)]
fn store_result(
    ctx: &Ctx,
    t: &Target,
    step: &Step,
    done: &mut Done,
    (parts, first, key, ids): (KeyParts, Digest, Digest, BTreeMap<String, FileId>),
    tree: OutputTree,
    list: Vec<String>,
    log: &Path,
) {
    let outputs = parts.output_paths();
    if t.cache {
        let storing = Instant::now();
        if let Err(e) = store(ctx, t, &outputs, key, first, &tree, &list, log, step.discovers()) {
            done.warnings.push(format!("could not store `{}` in the cache: {e}", t.name));
        }
        done.phases.push(("store", storing.elapsed()));
    }
    let outputs_digest = done.outputs_digest.unwrap_or_else(|| tree.digest());
    done.record =
        Some(Record { key, outputs: tree, outputs_digest, discovered: list, graph_key: ctx.graph.key });
    done.explained = Some(Explained { parts: parts.into_owned(), discovered: ids });
}

fn abs_path(root: &Path, p: &str) -> PathBuf {
    if p.starts_with('/') {
        PathBuf::from(p)
    } else {
        root.join(p)
    }
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

/// What a step discovered, each with where it was named: its depfile's inputs (`depfile F
/// line N`) or the libraries a stage resolved. `None` when the step discovers nothing.
fn named_discoveries(
    root: &Path,
    step: &Step,
    found: &[PathBuf],
) -> Result<Option<Vec<(String, String)>>, StepError> {
    Ok(Some(match step.depfile() {
        None if step.discovers() => found
            .iter()
            .map(|p| match p.to_str() {
                Some(s) => Ok((s.to_string(), "a library of `libs_for`".to_string())),
                None => Err(StepError::LibraryName(p.display().to_string())),
            })
            .collect::<Result<_, _>>()?,
        Some(dep) => {
            let bytes = fs::read(root.join(dep))
                .map_err(|source| StepError::NoDepfile { depfile: dep.clone(), source })?;
            let parsed = depfile::parse(&bytes)
                .map_err(|source| StepError::BadDepfile { depfile: dep.clone(), source })?;
            parsed
                .inputs
                .into_iter()
                .map(|i| match String::from_utf8(i.path) {
                    Ok(s) => Ok((s, format!("depfile {dep} line {}", i.line))),
                    Err(_) => Err(StepError::DepfileName { depfile: dep.clone(), line: i.line }),
                })
                .collect::<Result<_, _>>()?
        }
        None => return Ok(None),
    }))
}

/// Read what a step discovered: its depfile (read as ninja does) or the stage step's libraries.
/// Every named file must exist and be named in UTF-8; one that another target writes needs a
/// dependency path to that target. `Err` names the depfile line.
#[allow(clippy::too_many_arguments)]
fn discovered_after_run(
    ctx: &Ctx,
    t: &Target,
    step: &Step,
    found: &[PathBuf],
    searched: &[PathBuf],
    outputs: &[String],
    started: SystemTime,
    shipped: Option<&std::collections::BTreeSet<String>>,
) -> Result<AfterRun, StepError> {
    let root = ctx.root.as_path();
    // (name, where it was named) for each discovered file.
    let Some(raw) = named_discoveries(root, step, found)? else {
        return Ok(AfterRun { list: Vec::new(), changed_while_running: None });
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
                Some(p) if !shipped.contains(&p) => return Err(StepError::NotShipped { whence, named }),
                _ => {}
            }
        }
        let Some(p) = project_path(root, &named) else {
            return Err(StepError::DiscoveredMissing { whence, named });
        };
        if outputs.iter().any(|o| &p == o || p.starts_with(&format!("{o}/"))) || !seen.insert(p.clone()) {
            continue;
        }
        let abs = abs_path(root, &p);
        let meta = fs::metadata(&abs).map_err(|source| StepError::DiscoveredUnreadable {
            whence: whence.clone(),
            named: named.clone(),
            source,
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

/// Where a `run:` step ran.
enum Ran {
    /// Here: with the files a sandboxed depfile step read that it may discover but did not
    /// declare, as its view saw it.
    Local(Discovering),
    /// Here, unsandboxed under strace (`--trace-undeclared`): what it touched undeclared.
    Traced(TraceFound),
    Remote(remote_exec::Shipped),
    /// Locally, though its key is a remote step's: the engine was lost (`--remote-exec-fallback`).
    FellBack(Discovering),
}

/// Run the step on the remote-execution engine when there is one, else here.
fn run_here_or_remote(
    ctx: &Ctx,
    t: &Target,
    run: &RunSpec,
    parts: &KeyParts,
    log: &Path,
) -> Result<Ran, StepError> {
    if ctx.opts.trace_undeclared {
        return execute_traced(ctx, t, run, parts, log).map(Ran::Traced);
    }
    let Some(rx) = ctx.remote_exec.as_ref() else {
        return execute_run(ctx, t, run, parts, log).map(Ran::Local);
    };
    if rx.active() {
        match rx.run(ctx, t, run, parts, log) {
            Ok(s) => return Ok(Ran::Remote(s)),
            Err(remote_exec::RemoteRunError::Step(e)) => return Err(e),
            Err(remote_exec::RemoteRunError::Engine(e)) if !rx.falls_back() => {
                return Err(StepError::Engine(e))
            }
            Err(remote_exec::RemoteRunError::Engine(_)) => {}
        }
    }
    execute_run(ctx, t, run, parts, log).map(Ran::FellBack)
}

/// Run a shell step here, holding a command slot, in the sandbox unless it is off (for the
/// step, the build, or this machine); `Err` says why it failed (an interrupted command is not
/// a failure of its own: the build reports the interruption). A sandboxed step fails when it
/// wrote in the project anything but its outputs; one that failed is run again traced to
/// name what it touched undeclared ([`crate::sandbox::diagnose`]). `Ok` holds what a
/// depfile step did with the files it may discover but did not declare (a lazy view's only).
fn execute_run(
    ctx: &Ctx,
    t: &Target,
    run: &RunSpec,
    parts: &KeyParts,
    log: &Path,
) -> Result<Discovering, StepError> {
    make_scratch(ctx, run)?;
    let sandboxed = sandboxed(ctx, run);
    let plan = match &sandboxed {
        Some(support) => Some(sandbox_plan(ctx, t, run, parts, support.clone())?),
        None => network_only(ctx, run)?,
    };
    let live = ctx.opts.verbose.then(|| format!("[{}] ", t.name));
    let env = run.env_with(&parts.pass_env);
    let spec = Invocation { command: &run.command, root: &ctx.root, env: &env, log, live: live.as_deref() };
    let (status, harvest) = run_here(ctx, &spec, plan)?;
    if ctx.interrupted.load(Ordering::SeqCst) {
        return Ok(Discovering::default());
    }
    let mut touched = crate::sandbox::diagnose::Touched::default();
    let (undeclared, removed, missing, seen) = harvest
        .map(|h| {
            (
                h.undeclared,
                h.removed,
                h.missing,
                Discovering { reads: h.discover_reads, looks: h.discover_looks },
            )
        })
        .unwrap_or_default();
    touched.writes.extend(undeclared);
    touched.removed.extend(removed);
    if status.success() && touched.writes.is_empty() {
        // A sandboxed step that left an output unwritten kept none of them (the output check
        // would find the project without the ones it did write, and name those).
        return match missing.into_iter().next() {
            Some(o) => Err(StepError::OutputMissing(o)),
            None => Ok(seen),
        };
    }
    let mut traced = false;
    if let (false, Some(support)) = (status.success(), &sandboxed) {
        if let Some(found) = trace_failed(ctx, t, run, parts, &spec, support.clone()) {
            traced = true;
            touched.reads.extend(found.reads);
            touched.writes.extend(found.writes);
            touched.outside.extend(found.outside);
            touched.removed.extend(found.removed);
        }
    }
    let how = if status.success() {
        "the command succeeded".to_string()
    } else {
        match status.code() {
            Some(c) => format!("the command exited with status {c}"),
            None => "the command was killed by a signal".to_string(),
        }
    };
    if touched.reads.is_empty() && touched.writes.is_empty() && touched.outside.is_empty() {
        let untraced = sandboxed.is_some() && !traced && !status.success();
        return Err(match status.code() {
            _ if untraced && crate::fingerprint::tools::resolve("strace", &ctx.root).is_none() => {
                StepError::ExitUntraced(how)
            }
            Some(c) => StepError::Exit(c),
            None => StepError::Signal,
        });
    }
    let mut lines = undeclared_lines(ctx, t, parts, &touched, false);
    if sandboxed.is_some() && !traced && !status.success() {
        lines.push("(install strace for gvbuild to name the undeclared files it read as well)".into());
    }
    Err(StepError::Undeclared { how, lines })
}

/// Make `run`'s scratch folders (each step's own: it may have been removed since).
fn make_scratch(ctx: &Ctx, run: &RunSpec) -> Result<(), StepError> {
    for s in &run.scratch {
        fs::create_dir_all(ctx.root.join(s)).map_err(StepError::Shell)?;
    }
    Ok(())
}

/// Run `spec` with `plan`, holding a command slot: its exit status, and what its sandbox saw
/// written.
fn run_here(
    ctx: &Ctx,
    spec: &Invocation,
    plan: Option<crate::sandbox::Plan>,
) -> Result<(std::process::ExitStatus, Option<crate::sandbox::Harvest>), StepError> {
    let slot = ctx.slots.acquire();
    let ran = run_step::run_in(spec, &ctx.jobs, plan);
    drop(slot);
    match ran {
        Ok(r) => Ok(r),
        Err(run_step::Failure::Io(e)) => Err(StepError::Shell(e)),
        Err(run_step::Failure::Setup(e)) => Err(StepError::Sandbox(e)),
    }
}

/// An unsandboxed step's plan: none, or only a network namespace where it has `network: false`
/// and the machine allows one.
fn network_only(ctx: &Ctx, run: &RunSpec) -> Result<Option<crate::sandbox::Plan>, StepError> {
    match ctx.sandbox.support() {
        s @ crate::sandbox::Support::Yes { .. } if !run.network => {
            crate::sandbox::Plan::network_only(&ctx.root, s.clone()).map(Some).map_err(|source| {
                StepError::Sandbox(crate::sandbox::SetupError {
                    phase: crate::sandbox::Phase::Unshare,
                    path: None,
                    source,
                })
            })
        }
        _ => Ok(None),
    }
}

/// Whether `run` runs sandboxed here: `Some(what the machine gives)` when it does.
fn sandboxed(ctx: &Ctx, run: &RunSpec) -> Option<crate::sandbox::Support> {
    if !run.sandbox || !ctx.sandbox.wanted {
        return None;
    }
    match ctx.sandbox.support() {
        s @ crate::sandbox::Support::Yes { .. } => Some(s.clone()),
        crate::sandbox::Support::No(_) => None,
    }
}

/// The sandbox of `t`'s step: its visible set (the remote input root's), its outputs and
/// scratch folders.
fn sandbox_plan(
    ctx: &Ctx,
    t: &Target,
    run: &RunSpec,
    parts: &KeyParts,
    support: crate::sandbox::Support,
) -> Result<crate::sandbox::Plan, StepError> {
    let detail = match support {
        crate::sandbox::Support::Yes { lazy: true, .. } => super::visible::Detail::Lazy,
        _ => super::visible::Detail::Paths,
    };
    let visible = super::visible::of_with(ctx, t, run, parts, detail)?;
    let outputs = parts.output_paths();
    let me = ctx.graph.lookup(&t.name);
    let cache = ctx.cache.root().to_path_buf();
    // What the step most likely reads besides its inputs: its direct dependencies' outputs.
    let near: Vec<String> = me
        .iter()
        .flat_map(|&i| &ctx.graph.step_deps[i])
        .flat_map(|&d| ctx.graph.target(d).outputs.iter().map(|o| o.path.clone()))
        .collect();
    // Another step may write below `dir` meanwhile: through an output, or a scratch folder.
    let shared = |dir: &str| {
        ctx.outputs_below(dir).any(|i| Some(i) != me && !visible.deps.contains(i))
            || ctx.scratch_near(dir).any(|i| Some(i) != me)
    };
    let spec = crate::sandbox::Spec {
        project: &ctx.root,
        visible: &visible,
        outputs: &outputs,
        scratch: &run.scratch,
        network: run.network,
        tmp: ctx.sandbox.tmp(),
        hide: std::slice::from_ref(&cache),
        shared: &shared,
        produced: visible.unlisted.then(|| std::sync::Arc::clone(ctx.outputs_sorted())),
        force_lazy: false,
        near: &near,
    };
    crate::sandbox::Plan::new(&spec, support).map_err(|source| {
        StepError::Sandbox(crate::sandbox::SetupError {
            phase: crate::sandbox::Phase::View,
            path: None,
            source,
        })
    })
}

/// Name of the trace a failed step's traced run leaves in its view.
const TRACE: &str = ".gvbuild-trace";

/// Run a failed sandboxed step again under strace in the same sandbox (nothing it writes is
/// kept), and read what it touched undeclared; `None` without strace.
fn trace_failed(
    ctx: &Ctx,
    t: &Target,
    run: &RunSpec,
    parts: &KeyParts,
    spec: &Invocation,
    support: crate::sandbox::Support,
) -> Option<crate::sandbox::diagnose::Touched> {
    let strace = crate::fingerprint::tools::resolve("strace", &ctx.root)?;
    let quoted = run.command.replace('\'', "'\\''");
    let args = crate::sandbox::diagnose::STRACE_ARGS.join(" ");
    let command = format!("exec {} {args} -o {TRACE} /bin/sh -ec '{quoted}'", strace.display());
    let trace_log = spec.log.with_extension("trace");
    let again = Invocation { command: &command, root: spec.root, env: spec.env, log: &trace_log, live: None };
    let plan = sandbox_plan(ctx, t, run, parts, support).ok()?;
    let mut pending = None;
    let ran = run_step::run_traced(&again, &ctx.jobs, plan, &mut pending);
    let _ = fs::remove_file(&trace_log);
    ran.ok()?;
    let (harvest, text) = pending?.finish_traced(TRACE).ok()?;
    let root = ctx.root.as_path();
    let exists = |p: &str| fs::symlink_metadata(root.join(p)).is_ok();
    let ignore = |p: &str| p == TRACE;
    let mut found = crate::sandbox::diagnose::from_strace(&text, root, &exists, &ignore);
    found.writes.extend(harvest.undeclared);
    found.removed.extend(harvest.removed);
    // A declared file not found was reached through a hidden folder (`sub/../in.txt`), which
    // is named on its own.
    if let Ok(declared) = declared_set(ctx, t, run, parts, true) {
        found.reads.retain(|p| !declared.reads(p));
    }
    Some(found)
}

/// What `--trace-undeclared` found of one step: a line for each project path it touched
/// undeclared ([`undeclared_lines`]), and whether that counts (not for a `sandbox: false` step,
/// which is never hidden anything).
struct TraceFound {
    lines: Vec<String>,
    counts: bool,
}

/// Run a shell step here, unsandboxed, under strace (`--trace-undeclared`), holding a command
/// slot, with a TMPDIR of its own (as its sandbox gives it); then check every path it touched
/// against what the sandbox would have let it touch ([`crate::sandbox::Declared`]). `Ok` with a
/// line for each path it did not declare (none for a step that kept to its set); `Err` when the
/// command failed, naming those paths too.
fn execute_traced(
    ctx: &Ctx,
    t: &Target,
    run: &RunSpec,
    parts: &KeyParts,
    log: &Path,
) -> Result<TraceFound, StepError> {
    let Some(strace) = crate::fingerprint::tools::resolve("strace", &ctx.root) else {
        return Err(StepError::Shell(std::io::Error::other(
            "--trace-undeclared needs strace, which is not on PATH",
        )));
    };
    let trace = tempfile::Builder::new().prefix("gvbuild-trace-").tempfile().map_err(StepError::Shell)?;
    let tmpdir = tempfile::Builder::new().prefix("gvbuild-trace-tmp-").tempdir().map_err(StepError::Shell)?;
    let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let args = crate::sandbox::diagnose::STRACE_ARGS.join(" ");
    let command = format!(
        "exec {} {args} -o {} /bin/sh -ec {}",
        quote(&strace.to_string_lossy()),
        quote(&trace.path().to_string_lossy()),
        quote(&run.command)
    );
    make_scratch(ctx, run)?;
    let plan = network_only(ctx, run)?;
    let live = ctx.opts.verbose.then(|| format!("[{}] ", t.name));
    let mut env = run.env_with(&parts.pass_env);
    env.insert("TMPDIR".into(), tmpdir.path().to_string_lossy().into_owned());
    let spec = Invocation { command: &command, root: &ctx.root, env: &env, log, live: live.as_deref() };
    let started = SystemTime::now();
    let (status, _) = run_here(ctx, &spec, plan)?;
    if ctx.interrupted.load(Ordering::SeqCst) {
        return Ok(TraceFound { lines: Vec::new(), counts: false });
    }
    let text = fs::read(trace.path()).map_err(StepError::Shell)?;
    let text = String::from_utf8_lossy(&text);
    let root = ctx.root.as_path();
    // (Where the system temp folder is in the project.)
    let own = |p: &Path| p.starts_with(trace.path()) || p.starts_with(tmpdir.path());
    let ignore = |p: &str| own(&root.join(p));
    let mut accessed = crate::sandbox::diagnose::accessed(&text, root, &ignore);
    // A path outside the project that leads into it through a symlink is the project's. (Not
    // one of `/proc`'s, which would be gvbuild's own here: its `/proc/self/fd/3`, its lock.)
    let not_procs = |p: &PathBuf| !p.starts_with("/proc") && !p.starts_with("/dev/fd");
    for p in std::mem::take(&mut accessed.outside_reads).into_iter().filter(not_procs) {
        let inside = fs::canonicalize(&p).ok().and_then(|c| c.strip_prefix(root).ok().map(Path::to_path_buf));
        accessed.reads.extend(inside.and_then(|r| r.to_str().map(str::to_string)));
    }
    let declared = declared_set(ctx, t, run, parts, true)?;
    // A write that changed nothing (an input opened for reading and writing, and only read):
    // its inode's change time is older than the step.
    let changed = |p: &Path| {
        use std::os::unix::fs::MetadataExt;
        let before = started.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let before = (i64::try_from(before.as_secs()).unwrap_or(i64::MAX), i64::from(before.subsec_nanos()));
        fs::symlink_metadata(p).map_or(true, |m| (m.ctime(), m.ctime_nsec()) >= before)
    };
    accessed.writes.retain(|p| changed(&root.join(p)));
    accessed.outside.retain(|p| changed(p));
    let mut touched = crate::sandbox::diagnose::Touched::default();
    touched.writes.extend(accessed.writes.iter().filter(|p| !declared.writes(p)).cloned());
    touched.removed.extend(accessed.removed.iter().filter(|p| touched.writes.contains(*p)).cloned());
    touched.reads.extend(accessed.reads.iter().filter(|p| !declared.reads(p)).cloned());
    // A file found missing that another target writes (its step had not run yet: a missing
    // dependency), or that is there now.
    let me = ctx.graph.lookup(&t.name);
    let made_elsewhere = |p: &str| ctx.producer_of(p).is_some_and(|i| Some(i) != me);
    let missing = accessed.missing.iter().filter(|p| !declared.reads(p));
    touched.reads.extend(missing.filter(|p| made_elsewhere(p) || root.join(p).exists()).cloned());
    // A depfile step's read of a file it may discover that its depfile does not list: the
    // sandbox shows it, but the key does not cover it.
    if let Some(listed) = run.depfile.as_ref().and_then(|d| fs::read(root.join(d)).ok()) {
        // As the key takes them: `src/../other/o.h` is `other/o.h`.
        let listed: BTreeSet<String> = crate::fingerprint::depfile::parse(&listed)
            .map(|d| d.inputs.into_iter().filter_map(|i| String::from_utf8(i.path).ok()).collect::<Vec<_>>())
            .unwrap_or_default()
            .iter()
            .filter_map(|p| project_path(root, p))
            .collect();
        let keyed = declared_set(ctx, t, run, parts, false)?;
        // Opened or run: a `stat` or an `access` reads a name, which the key covers.
        let unrecorded = accessed.opened.iter().filter(|p| {
            declared.reads(p) && !keyed.reads(p) && !listed.contains(*p) && root.join(p).is_file()
        });
        touched.unrecorded.extend(unrecorded.cloned());
    }
    // Outside the project the sandbox lets a step write its TMPDIR and devices (`/dev/null`);
    // `/proc` and `/sys` are the kernel's.
    let kernel = |p: &Path| ["/dev", "/proc", "/sys"].iter().any(|k| p.starts_with(k));
    let outside = accessed.outside.iter().filter(|p| !own(p) && !kernel(p));
    touched.outside.extend(outside.map(|p| p.display().to_string()));
    let lines = undeclared_lines(ctx, t, parts, &touched, true);
    let counts = !lines.is_empty() && run.sandbox;
    if status.success() {
        return Ok(TraceFound { lines, counts });
    }
    if counts {
        ctx.undeclared_steps.fetch_add(1, Ordering::SeqCst);
    }
    let how = match status.code() {
        Some(c) => format!("the command exited with status {c}"),
        None => "the command was killed by a signal".to_string(),
    };
    Err(match (status.code(), lines.is_empty()) {
        (_, false) => StepError::TracedUndeclared { how, lines },
        (Some(c), true) => StepError::Exit(c),
        (None, true) => StepError::Signal,
    })
}

/// What `t`'s sandbox would let it touch: its view (the remote input root's set), its outputs
/// and scratch folders; without `discover`, less the files a depfile step may discover but did
/// not list (what its key covers).
fn declared_set(
    ctx: &Ctx,
    t: &Target,
    run: &RunSpec,
    parts: &KeyParts,
    discover: bool,
) -> Result<crate::sandbox::Declared, StepError> {
    let detail = if discover { super::visible::Detail::Lazy } else { super::visible::Detail::Keyed };
    let visible = super::visible::of_with(ctx, t, run, parts, detail)?;
    let outputs = parts.output_paths();
    let spec = crate::sandbox::Spec {
        project: &ctx.root,
        visible: &visible,
        outputs: &outputs,
        scratch: &run.scratch,
        network: run.network,
        tmp: ctx.sandbox.tmp(),
        hide: &[],
        shared: &|_| false,
        produced: visible.unlisted.then(|| std::sync::Arc::clone(ctx.outputs_sorted())),
        force_lazy: false,
        near: &[],
    };
    crate::sandbox::Declared::new(&spec).map_err(StepError::Shell)
}

/// One line per undeclared path: what the step did, and the key that would declare it.
fn undeclared_lines(
    ctx: &Ctx,
    t: &Target,
    parts: &KeyParts,
    touched: &crate::sandbox::diagnose::Touched,
    traced: bool,
) -> Vec<String> {
    // A sandbox's error shows the first few; the trace is asked for all of them.
    let max = if traced { usize::MAX } else { 20 };
    let mut lines = Vec::new();
    // Writes first: a step rarely makes many, and each is a change to the project.
    for p in &touched.writes {
        let verb = if touched.removed.contains(p) { "removed" } else { "wrote" };
        if parts.inputs.contains_key(p)
            || ctx.producer_of(p).is_some_and(|i| Some(i) != ctx.graph.lookup(&t.name))
        {
            lines.push(format!("{verb} {p} (something it reads, which is read-only for it: write a new file among its outputs instead)"));
        } else if touched.removed.contains(p) {
            lines.push(format!("removed {p} (none of its outputs, and visible to it: only its outputs and `scratch:` folders are its to remove)"));
        } else {
            lines.push(format!(
                "wrote {p} (none of its outputs; add it to `outputs:`, or its folder to `scratch:` if the tool keeps it between runs)"
            ));
        }
    }
    for p in &touched.outside {
        lines.push(format!(
            "wrote {p} (outside the project, which the sandbox keeps read-only; point the tool at a `scratch:` folder, or set `sandbox: false` with the reason beside it)"
        ));
    }
    for p in &touched.reads {
        let hint = if p == ".gvbuild" || p.starts_with(".gvbuild/") {
            "gvbuild's own state and cache: no step may read them".to_string()
        } else {
            match ctx.producer_of(p).map(|i| ctx.graph.target(i)) {
                Some(other) if other.name != t.name => {
                    format!("written by target `{0}`: add `{0}` to `deps:`", other.name)
                }
                _ if fs::metadata(ctx.root.join(p)).is_ok_and(|m| m.is_dir()) => {
                    let me = ctx.graph.lookup(&t.name);
                    let writers: BTreeSet<&str> = ctx
                        .outputs_below(p)
                        .filter(|&i| Some(i) != me)
                        .map(|i| ctx.graph.target(i).name.as_str())
                        .collect();
                    match writers.iter().next() {
                        Some(w) if writers.len() == 1 => {
                            format!("a folder target `{w}` writes into: add `{w}` to `deps:`")
                        }
                        Some(_) => format!(
                            "a folder that targets {} write into: add those it reads to `deps:`",
                            writers.iter().map(|w| format!("`{w}`")).collect::<Vec<_>>().join(", ")
                        ),
                        None => "a folder: add it (or the files it needs from it) to `inputs:`".to_string(),
                    }
                }
                _ => "add it to `inputs:`".to_string(),
            }
        };
        let how = if traced { "undeclared: the sandbox hides it" } else { "hidden by the sandbox" };
        lines.push(format!("read  {p} ({how}; {hint})"));
    }
    // `-MMD` and `-MM` leave out the headers found in system folders, `-isystem` ones included.
    let command = t.step.as_ref().and_then(|s| s.as_run()).map_or("", |r| r.command.as_str());
    let words = || command.split_whitespace();
    let user_only = words().any(|w| w == "-MMD" || w == "-MM");
    let system = words().any(|w| w.starts_with("-isystem") || w.starts_with("-idirafter"));
    let also = match user_only && system {
        true => {
            ", or have the depfile list it: `-MMD` leaves out headers of `-isystem` and `-idirafter` folders, `-MD` does not"
        }
        false => "",
    };
    // Said in full once.
    for (i, p) in touched.unrecorded.iter().enumerate() {
        lines.push(match i {
            0 => format!(
                "read  {p} (a file its depfile step may discover, which the sandbox shows, but its depfile does not list it, so its key does not cover it: add it to `inputs:`{also})"
            ),
            _ => format!("read  {p} (the same: its depfile does not list it)"),
        });
    }
    if lines.len() > max {
        let more = lines.len() - max;
        lines.truncate(max);
        lines.push(format!("... and {more} more"));
    }
    lines
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
) -> Result<(), StepError> {
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
) -> Result<ActionEntry, StepError> {
    for f in &tree.files {
        match ctx.cache.put_file(&ctx.root.join(&f.path), &f.digest) {
            Ok(true) => {}
            Ok(false) => return Err(StepError::OutputChanged(f.path.clone())),
            Err(e) => return Err(e.into()),
        }
    }
    // Most steps print nothing: an empty log is not worth a blob.
    let log_digest = fs::read(log).ok().filter(|b| !b.is_empty()).and_then(|b| ctx.cache.put_bytes(&b).ok());
    let entry = ActionEntry::new(tree.clone(), log_digest);
    ctx.cache.put_entry(&key, &entry)?;
    if has_depfile {
        ctx.cache.add_dep_list(&first, list)?;
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
        // Through a symlink to the project folder (`/tmp/link/inc/x.h`): the project's file.
        let real = fs::canonicalize(p).ok().filter(|c| c.starts_with(root));
        if let Some(rel) = real.as_deref().and_then(|c| c.strip_prefix(root).ok()).and_then(Path::to_str) {
            return crate::paths::normalize_rel(rel);
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
