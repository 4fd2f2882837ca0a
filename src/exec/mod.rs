//! The scheduler: which steps run when, and in parallel.
//!
//! # Overview
//! The selected targets' step targets form a DAG. Each starts *waiting* on its step deps (groups
//! flattened away). When the last dep finishes it becomes *ready*; ready steps are handed to a
//! rayon pool of `-j N` threads, at most N at a time, where [`runner::process`] takes it through
//! fingerprint -> fresh? -> restore (local, then remote)? -> run -> store (local, then upload)
//! and sends a [`runner::Done`] back. The scheduler thread alone records results: the journal,
//! the outputs digest that dependents key on, events and progress. Uploads to a shared cache
//! run on threads of their own; the build waits for them at its end.
//!
//! # How a step moves through states
//! waiting -> ready -> in flight -> one of `fresh`, `restored`, `ran`, `failed`; or `skipped`
//! when a dependency failed (or, without `-k`, when the build stopped after a failure). Once a
//! step fails, no new step starts unless `--keep-going` is given; running ones finish.
//!
//! # Parallelism
//! At most N commands run at once (`-j N`, a counting semaphore around the command itself), and
//! up to 2N steps are in flight, so that one step's fingerprinting and storing overlaps another's
//! command. Hashing a large file inside a step uses rayon's global pool,
//! separate from the step pool, so a big hash never occupies a step slot's worth of threads.
//! SIGINT and SIGTERM kill the process groups of running steps; the scheduler then stops
//! starting steps, folds what finished into the state and exits with status 130.

pub mod explain;
pub mod remote_exec;
pub mod report;
mod restore;
pub mod runner;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::cache::Cache;
use crate::fingerprint::state::{ExplainStore, State};
use crate::fingerprint::tools::ToolCache;
use crate::fingerprint::{Digest, StatCache};
use crate::graph::Graph;
use crate::jobs::Jobs;
use report::Reporter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ran,
    Restored,
    Fresh,
    Failed,
    Skipped,
    /// Stopped by Ctrl-C (SIGINT) or SIGTERM while it ran.
    Interrupted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ran => "ran",
            Outcome::Restored => "restored",
            Outcome::Fresh => "fresh",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Interrupted => "interrupted",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Opts {
    pub jobs: usize,
    pub keep_going: bool,
    pub verbose: bool,
    pub json: bool,
    pub explain: bool,
    pub dry_run: bool,
    pub rebuild: HashSet<String>,
    /// `--rebuild-all` (`-B`): run every selected step without reading the cache.
    pub rebuild_all: bool,
    /// `-q`: print only failures.
    pub quiet: bool,
}

impl Opts {
    /// Whether this target's step must run whatever the cache holds.
    pub fn forced(&self, target: &str) -> bool {
        self.rebuild_all || self.rebuild.contains(target)
    }
}

/// Everything a step needs, shared by the pool threads.
pub struct Ctx {
    pub root: PathBuf,
    pub state_dir: PathBuf,
    pub graph: Graph,
    pub cache: Cache,
    pub stat: StatCache,
    pub tools: ToolCache,
    pub jobs: Jobs,
    pub state: RwLock<State>,
    pub explain: Option<ExplainStore>,
    pub opts: Opts,
    pub interrupted: Arc<AtomicBool>,
    /// Free command slots: `-j N` bounds the commands running, not the steps in flight.
    pub slots: Slots,
    /// On a terminal: where a download adds its progress bar.
    pub progress: Option<indicatif::MultiProgress>,
    /// (target, glob) for each input glob that matched no file, warned about once at the end.
    pub glob_warnings: std::sync::Mutex<Vec<(String, String)>>,
    /// Declared output path -> the step target that writes it, built on first use.
    pub producers: std::sync::OnceLock<HashMap<String, usize>>,
    /// The shared cache, looked up after the local one and written after it.
    pub remote: Option<crate::cache::remote::Remote>,
    /// `--remote-exec`: the engine `run:` steps execute on.
    pub remote_exec: Option<remote_exec::RemoteExec>,
    /// `run:` steps are remote steps (their keys name the platform): with `--remote-exec`,
    /// also in a dry run, which asks no engine.
    pub remote_steps: bool,
    /// `--platform NAME=VALUE`, over every step's `platform:`.
    pub platform: crate::cache::remote::Platform,
}

impl Ctx {
    /// Step `t`'s platform properties: its `platform:` (over the top-level one) with
    /// `--platform` over both.
    pub fn platform_of(&self, t: &crate::config::Target) -> crate::cache::remote::Platform {
        let mut p = t.platform.clone();
        p.extend(self.platform.iter().map(|(k, v)| (k.clone(), v.clone())));
        p
    }

    /// The step target whose declared outputs hold project path `path` (the output itself or
    /// a file inside an output folder).
    pub fn producer_of(&self, path: &str) -> Option<usize> {
        let map = self.producers.get_or_init(|| {
            let mut m = HashMap::new();
            for (i, t) in self.graph.project.targets.iter().enumerate() {
                for o in &t.outputs {
                    m.insert(o.path.clone(), i);
                }
            }
            m
        });
        let mut p = path;
        loop {
            if let Some(&i) = map.get(p) {
                return Some(i);
            }
            p = &p[..p.rfind('/')?];
        }
    }
}

/// A counting semaphore.
pub struct Slots {
    free: std::sync::Mutex<usize>,
    cv: std::sync::Condvar,
}

impl Slots {
    pub fn new(n: usize) -> Slots {
        Slots { free: std::sync::Mutex::new(n.max(1)), cv: std::sync::Condvar::new() }
    }

    /// Hold a slot while the returned guard lives. The time spent waiting for it is added to
    /// this thread's [`slot_wait`], so that a step's reported time is its own.
    pub fn acquire(&self) -> SlotGuard<'_> {
        let start = std::time::Instant::now();
        let guard = self.acquire_inner();
        SLOT_WAIT.with(|w| w.set(w.get() + start.elapsed()));
        guard
    }

    fn acquire_inner(&self) -> SlotGuard<'_> {
        if let Ok(mut free) = self.free.lock() {
            while *free == 0 {
                free = match self.cv.wait(free) {
                    Ok(f) => f,
                    Err(_) => return SlotGuard { slots: self },
                };
            }
            *free -= 1;
        }
        SlotGuard { slots: self }
    }
}

thread_local! {
    static SLOT_WAIT: std::cell::Cell<std::time::Duration> = const { std::cell::Cell::new(std::time::Duration::ZERO) };
}

/// The time this thread has waited for command slots since the last call (which resets it).
pub fn take_slot_wait() -> std::time::Duration {
    SLOT_WAIT.with(|w| w.replace(std::time::Duration::ZERO))
}

pub struct SlotGuard<'a> {
    slots: &'a Slots,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut free) = self.slots.free.lock() {
            *free += 1;
        }
        self.slots.cv.notify_one();
    }
}

impl Ctx {
    pub fn log_path(&self, target: &str) -> PathBuf {
        self.state_dir.join("logs").join(format!("{target}.log"))
    }
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Summary {
    pub ran: usize,
    pub restored: usize,
    pub fresh: usize,
    pub failed: usize,
    pub skipped: usize,
    pub interrupted: usize,
    /// Of the restored steps, those that came from the remote cache.
    pub restored_remote: usize,
}

impl Summary {
    fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Ran => self.ran += 1,
            Outcome::Restored => self.restored += 1,
            Outcome::Fresh => self.fresh += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Skipped => self.skipped += 1,
            Outcome::Interrupted => self.interrupted += 1,
        }
    }
}

/// Build the step targets among `selected` (which is closed under deps).
/// A line for the user on stderr while the build goes on (not a warning, not a step's event).
pub fn note(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Steps in flight beyond `2 x -j` when a remote cache is configured.
const REMOTE_IO_IN_FLIGHT: usize = 16;

pub fn build(ctx: Arc<Ctx>, selected: &[usize], reporter: &mut Reporter) -> Summary {
    let g = &ctx.graph;
    let steps: Vec<usize> = selected.iter().copied().filter(|&i| g.target(i).step.is_some()).collect();
    let in_sel: HashSet<usize> = steps.iter().copied().collect();
    let n = g.len();
    let mut waiting = vec![0usize; n];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &i in &steps {
        for &d in &g.step_deps[i] {
            if in_sel.contains(&d) {
                waiting[i] += 1;
                dependents[d].push(i);
            }
        }
    }
    let mut blocked = vec![false; n];
    let mut out_digest: Vec<Option<Digest>> = vec![None; n];
    let mut summary = Summary::default();
    let mut remaining = steps.len();
    let mut in_flight = 0usize;
    let mut stopping = false;
    let jobs = ctx.opts.jobs.max(1);
    // Fingerprinting and storing a step's outputs need no command slot: with twice as many
    // steps in flight as commands allowed, a step's bookkeeping overlaps the next command.
    // Threads are bounded even without a limit on commands (`-j0`).
    // Remote steps take no command slot: as many more may be in flight as the engine takes.
    let remote_jobs = ctx.remote_exec.as_ref().map_or(0, |r| r.jobs());
    // A remote cache's lookups and downloads wait on the network, not on a core: more steps
    // in flight overlap their round trips.
    let remote_io = if ctx.remote.is_some() { REMOTE_IO_IN_FLIGHT } else { 0 };
    let in_flight_max =
        jobs.saturating_mul(2).saturating_add(remote_jobs).saturating_add(remote_io).min(1024);
    reporter.start(steps.len());

    // Phase one: find the fresh steps, in parallel (see `FreshWalk`). A step is fresh only if
    // all its deps are, and a fresh dep's outputs are the ones its record names: so a step is
    // checked, with its deps' recorded outputs, once they are all found fresh. The rest go to
    // the scheduler below, which checks again once their deps have finished (a dep that reruns
    // to identical outputs leaves them fresh: early cutoff). The fresh steps are then reported
    // a topological level at a time.
    let order = topo_order(&steps, &g.step_deps, &in_sel);
    let mut depth = vec![0usize; n];
    for &i in &order {
        depth[i] =
            g.step_deps[i].iter().filter(|d| in_sel.contains(d)).map(|&d| depth[d] + 1).max().unwrap_or(0);
    }
    let max_depth = order.iter().map(|&i| depth[i]).max().unwrap_or(0);
    let mut levels: Vec<Vec<usize>> = vec![Vec::new(); max_depth + 1];
    for &i in &order {
        levels[depth[i]].push(i);
    }
    // What each step's record says its outputs are (`None`: no record, never fresh). Only the
    // scheduler thread writes the state, and not during this phase.
    let recorded: Vec<Option<Digest>> = match ctx.state.read() {
        Ok(state) => (0..n)
            .map(|i| match in_sel.contains(&i) {
                true => state.get(&g.target(i).name).map(|r| r.outputs_digest),
                false => None,
            })
            .collect(),
        Err(_) => vec![None; n],
    };
    // A step with no record, or with a dep that has none, cannot be fresh: not checked.
    let is_candidate: Vec<bool> = (0..n)
        .map(|i| {
            recorded[i].is_some()
                && g.step_deps[i].iter().filter(|d| in_sel.contains(d)).all(|&d| recorded[d].is_some())
        })
        .collect();
    let mut fresh_done = vec![false; n];
    ctx.stat.set_frozen(true);
    // The checks run on a pool of one thread per core, shared by work-stealing. The checks
    // wait on nothing but stat; the step pool's 2 x -j threads would only take turns. The pool
    // is dropped after the phase: rayon's idle workers spin before they sleep, and on a small
    // machine they would take the cores from what this thread does next. A build with at most
    // one step to check (a fresh clone has none) starts no pool.
    let threads = cores();
    let fresh_pool = match is_candidate.iter().filter(|&&c| c).nth(1).is_some() {
        true => rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("gvbuild-check-{i}"))
            .build()
            .map_err(|e| reporter.warn(&format!("could not start the threads that check steps: {e}")))
            .ok(),
        false => None,
    };
    let plain_lines = reporter.plain_fresh_lines();
    let check = |i: usize| {
        let done = runner::check_fresh(&ctx, g.target(i), dep_digests(g, i, &recorded))?;
        Some(FreshCheck {
            key: done.key,
            outputs_digest: done.outputs_digest,
            ms: done.ms,
            image_id: done.image_id.map(Box::new),
        })
    };
    let walk = FreshWalk {
        check: &check,
        pending: (0..n)
            .map(|i| AtomicU32::new(g.step_deps[i].iter().filter(|d| in_sel.contains(d)).count() as u32))
            .collect(),
        is_candidate: &is_candidate,
        dependents: &dependents,
        found: (0..n).map(|_| std::sync::OnceLock::new()).collect(),
    };
    let roots: Vec<usize> =
        (0..n).filter(|&i| is_candidate[i] && walk.pending[i].load(Ordering::Relaxed) == 0).collect();
    match &fresh_pool {
        Some(pool) => pool.install(|| {
            rayon::scope(|s| {
                for &i in &roots {
                    let walk = &walk;
                    s.spawn(move |s| walk.visit(s, i));
                }
            })
        }),
        // No threads to be had (or at most one step): check one step after another on this one.
        None => walk.visit_here(roots),
    }
    drop(fresh_pool);
    let mut found = walk.found;
    for level in &levels {
        for &i in level {
            // Kept only if every dep is fresh with the outputs this check was given.
            let deps_fresh = g.step_deps[i]
                .iter()
                .filter(|d| in_sel.contains(d))
                .all(|&d| fresh_done[d] && out_digest[d] == recorded[d]);
            if !deps_fresh {
                continue;
            }
            let Some(fresh) = found[i].take() else { continue };
            fresh_done[i] = true;
            out_digest[i] = fresh.outputs_digest;
            waiting[i] = usize::MAX;
            remaining -= 1;
            summary.add(Outcome::Fresh);
            // A fresh step's `--json` line, when that is all there is to report of it, is made
            // by hand (a `serde_json::Value` per step was a tenth of a no-op build).
            match fresh.image_id {
                None if plain_lines => {
                    reporter.push_line(&report::fresh_line(&g.target(i).name, fresh.key, fresh.ms))
                }
                image_id => {
                    let image_id = image_id.map(|b| *b);
                    let done = runner::Done::fresh(fresh.key, fresh.outputs_digest, fresh.ms, image_id);
                    reporter.step(&ctx, &g.target(i).name, Outcome::Fresh, Some(&done), done.ms, done.key)
                }
            }
            for &dep in &dependents[i] {
                waiting[dep] -= 1;
            }
        }
    }
    ctx.stat.set_frozen(false);
    // Started only when something is left to run: a no-op build starts no step threads.
    let _watcher = (remaining > 0).then(|| Watcher::start(&ctx, reporter));
    let pool = if remaining == 0 {
        None
    } else {
        Some(
            match rayon::ThreadPoolBuilder::new()
                .num_threads(in_flight_max)
                .thread_name(|i| format!("gvbuild-step-{i}"))
                .build()
            {
                Ok(p) => p,
                Err(e) => {
                    reporter.warn(&format!("could not start the step pool: {e}"));
                    return summary;
                }
            },
        )
    };
    let mut ready: VecDeque<usize> = steps.iter().copied().filter(|&i| waiting[i] == 0).collect();
    let (tx, rx) = mpsc::channel::<(usize, runner::Done)>();
    let mut finished: Vec<usize> = Vec::new();
    let mut journal_warned = false;
    let mut dry_restored = vec![false; n];

    while remaining > 0 {
        // Always there: it is started whenever something remains.
        let Some(pool) = pool.as_ref() else { break };
        if ctx.interrupted.load(Ordering::SeqCst) {
            stopping = true;
        }
        // Start what may start.
        while in_flight < in_flight_max && !stopping {
            // Only steps whose deps all succeeded are ever ready.
            let Some(i) = ready.pop_front() else { break };
            // Owned: the step runs on the pool, which may outlive this borrow of the graph.
            let deps: BTreeMap<String, Digest> =
                dep_digests(g, i, &out_digest).into_iter().map(|(k, v)| (k.into_owned(), v)).collect();
            if ctx.opts.dry_run {
                // A dependency that would run has no outputs yet: so this step would run too.
                if let Some(&d) = g.step_deps[i].iter().find(|&&d| out_digest[d].is_none()) {
                    let mut done = runner::Done::would_run();
                    let t = g.target(i);
                    done.command =
                        Some(runner::summary_of(t, t.outputs.iter().map(|o| o.path.clone()).collect()));
                    done.reasons.push(explain::Reason::DepWouldRun(g.target(d).name.clone()));
                    in_flight += 1;
                    let _ = tx.send((i, done));
                    continue;
                }
            }
            let ctx2 = ctx.clone();
            let tx = tx.clone();
            in_flight += 1;
            reporter.started(&g.target(i).name);
            pool.spawn(move || {
                let done = runner::process(&ctx2, ctx2.graph.target(i), deps);
                let _ = tx.send((i, done));
            });
        }
        if stopping && in_flight == 0 {
            // Everything not started is skipped.
            let rest: Vec<usize> =
                ready.drain(..).chain(steps.iter().copied().filter(|&i| waiting[i] > 0)).collect();
            for i in rest {
                if waiting[i] != usize::MAX {
                    waiting[i] = usize::MAX;
                    summary.add(Outcome::Skipped);
                    remaining = remaining.saturating_sub(1);
                    reporter.step(&ctx, &g.target(i).name, Outcome::Skipped, None, 0, None);
                }
            }
            break;
        }
        if in_flight == 0 && ready.is_empty() {
            break;
        }
        if in_flight == 0 {
            continue;
        }
        let Ok((i, mut done)) = rx.recv() else { break };
        if ctx.opts.dry_run {
            if done.outcome == Outcome::Restored {
                dry_restored[i] = true;
            }
            // A dependency that would be restored has not written its outputs yet: a step that
            // reads them cannot be checked now, and may then run or be restored.
            if done.outcome == Outcome::Failed {
                if let Some(&d) = g.step_deps[i].iter().find(|&&d| dry_restored[d]) {
                    let t = g.target(i);
                    done.outcome = Outcome::Ran;
                    done.error = None;
                    done.command =
                        Some(runner::summary_of(t, t.outputs.iter().map(|o| o.path.clone()).collect()));
                    done.reasons = vec![explain::Reason::DepWouldRestore(g.target(d).name.clone())];
                }
            }
        }
        explain::mark_inferred(&mut done.reasons, g, i);
        in_flight -= 1;
        remaining -= 1;
        waiting[i] = usize::MAX;
        let name = g.target(i).name.clone();
        if done.update_record {
            if let Ok(state) = ctx.state.read() {
                if let Err(e) = state.append(&name, done.record.as_ref()) {
                    // Once is enough: a full disk fails every later append the same way.
                    if !journal_warned {
                        journal_warned = true;
                        reporter.warn(&format!(
                            "could not write the build journal ({e}); a killed build will recheck its steps"
                        ));
                    }
                }
            }
            if let Ok(mut state) = ctx.state.write() {
                state.set(&name, done.record.clone());
            }
        }
        summary.add(done.outcome);
        if done.outcome == Outcome::Restored && done.from == Some("remote") {
            summary.restored_remote += 1;
        }
        reporter.step(&ctx, &name, done.outcome, Some(&done), done.ms, done.key);
        let failed = done.outcome == Outcome::Failed;
        out_digest[i] = done.outputs_digest;
        if let Some(e) = done.explained {
            reporter.explained.push((name, e));
        }
        if failed && !ctx.opts.keep_going {
            stopping = true;
        }
        for &dep in &dependents[i] {
            if failed {
                blocked[dep] = true;
            }
            waiting[dep] -= 1;
            if waiting[dep] == 0 {
                if blocked[dep] {
                    finished.push(dep);
                } else {
                    ready.push_back(dep);
                }
            }
        }
        // Skip what can no longer run, and what depends on it.
        for j in finished.drain(..) {
            skip(j, &ctx, reporter, &mut summary, &mut remaining, &mut waiting, &dependents, &mut blocked);
        }
    }
    drop(tx);
    summary
}

/// What the fresh-check phase keeps of a fresh step until the steps are reported, a level at a
/// time, after the walk: in a no-op that is every step at once, and a whole [`runner::Done`]
/// per step added megabytes to the build's peak.
struct FreshCheck {
    key: Option<Digest>,
    outputs_digest: Option<Digest>,
    ms: u64,
    /// Boxed: rare (an image), and this struct is held for every step at once.
    image_id: Option<Box<(String, Digest)>>,
}

/// Phase one's walk over the steps: a step is checked once every dep of it (in the selection)
/// was checked fresh, as soon as the last one is, on whichever thread is free; a step with a
/// dep that is not fresh is not checked here (the scheduler checks it once its deps ran). So
/// there is no wait for a whole level, and no check whose result could not be kept.
struct FreshWalk<'a> {
    check: &'a (dyn Fn(usize) -> Option<FreshCheck> + Sync),
    /// Per step: its deps in the selection not yet found fresh.
    pending: Vec<AtomicU32>,
    /// Per step: whether it has a record, and its deps too (else it cannot be fresh).
    is_candidate: &'a [bool],
    dependents: &'a [Vec<usize>],
    /// Per step: the check's result, once found fresh.
    found: Vec<std::sync::OnceLock<FreshCheck>>,
}

impl FreshWalk<'_> {
    /// Check step `i`; if it is fresh, record that and call `next` with each dependent that
    /// can be fresh (a candidate) and whose deps are now all found fresh.
    fn step(&self, i: usize, mut next: impl FnMut(usize)) {
        let Some(fresh) = (self.check)(i) else { return };
        let _ = self.found[i].set(fresh);
        for &d in &self.dependents[i] {
            if self.pending[d].fetch_sub(1, Ordering::AcqRel) == 1 && self.is_candidate[d] {
                next(d);
            }
        }
    }

    /// Check `i` and then, each as a task of its own, the dependents it makes ready.
    fn visit<'s>(&'s self, s: &rayon::Scope<'s>, i: usize) {
        self.step(i, |d| s.spawn(move |s| self.visit(s, d)));
    }

    /// The same walk on this thread alone, from `roots`.
    fn visit_here(&self, roots: Vec<usize>) {
        let mut ready = roots;
        while let Some(i) = ready.pop() {
            self.step(i, |d| ready.push(d));
        }
    }
}

/// The number of cores this process may use (`available_parallelism`, 1 when unknown), asked
/// of the system once: on Linux each ask reads the cgroup's CPU quota files.
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// While steps run: a thread that kills their process groups as soon as a signal arrives.
/// Dropping it stops the thread. A build with nothing to run starts none.
struct Watcher {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    /// Start the thread; where no thread can be had, a warning says that a signal will not stop
    /// the running steps.
    fn start(ctx: &Arc<Ctx>, reporter: &Reporter) -> Watcher {
        let done = Arc::new(AtomicBool::new(false));
        let thread = {
            let ctx = ctx.clone();
            let done = done.clone();
            std::thread::Builder::new()
                .name("gvbuild-signals".into())
                .spawn(move || {
                    while !done.load(Ordering::SeqCst) {
                        if ctx.interrupted.load(Ordering::SeqCst) {
                            ctx.jobs.kill_all();
                        }
                        std::thread::park_timeout(std::time::Duration::from_millis(30));
                    }
                })
                .map_err(|e| {
                    reporter.warn(&format!(
                        "could not start the thread that stops steps on Ctrl-C ({e}): an interrupted build \
                         waits for its running steps to end"
                    ))
                })
                .ok()
        };
        Watcher { done, thread }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Step `i`'s deps that have outputs, by name (borrowed from the graph), with their digests.
fn dep_digests<'g>(
    g: &'g Graph,
    i: usize,
    out_digest: &[Option<Digest>],
) -> BTreeMap<std::borrow::Cow<'g, str>, Digest> {
    g.step_deps[i]
        .iter()
        .filter_map(|&d| out_digest[d].map(|dg| (std::borrow::Cow::Borrowed(g.target(d).name.as_str()), dg)))
        .collect()
}

/// The steps ordered so that every step comes after its deps (the graph has no cycles).
fn topo_order(steps: &[usize], step_deps: &[Vec<usize>], in_sel: &HashSet<usize>) -> Vec<usize> {
    let mut order = Vec::with_capacity(steps.len());
    let mut seen: HashSet<usize> = HashSet::with_capacity(steps.len());
    for &root in steps {
        // Iterative post-order DFS: (node, deps already pushed?)
        let mut stack = vec![(root, false)];
        while let Some((node, expanded)) = stack.pop() {
            if expanded {
                order.push(node);
                continue;
            }
            if !seen.insert(node) {
                continue;
            }
            stack.push((node, true));
            for &d in &step_deps[node] {
                if in_sel.contains(&d) && !seen.contains(&d) {
                    stack.push((d, false));
                }
            }
        }
    }
    order
}

#[allow(clippy::too_many_arguments)]
fn skip(
    i: usize,
    ctx: &Ctx,
    reporter: &mut Reporter,
    summary: &mut Summary,
    remaining: &mut usize,
    waiting: &mut [usize],
    dependents: &[Vec<usize>],
    blocked: &mut [bool],
) {
    let mut stack = vec![i];
    while let Some(i) = stack.pop() {
        waiting[i] = usize::MAX;
        summary.add(Outcome::Skipped);
        *remaining -= 1;
        reporter.step(ctx, &ctx.graph.target(i).name, Outcome::Skipped, None, 0, None);
        for &d in &dependents[i] {
            blocked[d] = true;
            waiting[d] -= 1;
            if waiting[d] == 0 {
                stack.push(d);
            }
        }
    }
}
