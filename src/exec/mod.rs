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

pub mod error;
pub mod explain;
pub mod remote_exec;
pub mod report;
mod restore;
pub mod runner;
pub mod visible;

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
    /// `--no-sandbox`: run `run:` steps unsandboxed.
    pub no_sandbox: bool,
    /// `--trace-undeclared`: run `run:` steps unsandboxed under strace, and list what each
    /// touched in the project that it did not declare.
    pub trace_undeclared: bool,
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
    pub slots: crate::jobs::Slots,
    /// On a terminal: where a download adds its progress bar.
    pub progress: Option<indicatif::MultiProgress>,
    /// (target, glob) for each input glob that matched no file, warned about once at the end.
    pub glob_warnings: std::sync::Mutex<Vec<(String, String)>>,
    /// Declared output path -> the step target that writes it, built on first use.
    pub producers: std::sync::OnceLock<HashMap<String, usize>>,
    /// The same, in path order, built on first use.
    pub producers_sorted: std::sync::OnceLock<Arc<BTreeMap<String, usize>>>,
    /// Every `scratch:` folder and its target, built on first use.
    pub scratch_folders: std::sync::OnceLock<Vec<(String, usize)>>,
    /// The files of the project folders depfile steps may discover from, walked once per
    /// build where no target writes into them (see `visible`).
    pub walks: std::sync::Mutex<HashMap<String, Arc<crate::sandbox::Discoverable>>>,
    /// Each step's dependency closure, kept once made (see `visible::dep_closure`); empty
    /// for a graph too large to keep one per step.
    pub closures: std::sync::OnceLock<Vec<std::sync::OnceLock<Arc<fixedbitset::FixedBitSet>>>>,
    /// The shared cache, looked up after the local one and written after it.
    pub remote: Option<crate::cache::remote::Remote>,
    /// `--remote-exec`: the engine `run:` steps execute on.
    pub remote_exec: Option<remote_exec::RemoteExec>,
    /// `run:` steps are remote steps (their keys name the platform): with `--remote-exec`,
    /// also in a dry run, which asks no engine.
    pub remote_steps: bool,
    /// `--platform NAME=VALUE`, over every step's `platform:`.
    pub platform: crate::cache::remote::Platform,
    /// The sandbox of `run:` steps.
    pub sandbox: crate::sandbox::Sandboxing,
    /// With `--trace-undeclared`: the steps found touching what they did not declare.
    pub undeclared_steps: std::sync::atomic::AtomicUsize,
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
    /// The step targets with a declared output below project folder `dir`.
    pub fn outputs_below<'a>(&'a self, dir: &str) -> impl Iterator<Item = usize> + 'a {
        let sorted = self.outputs_sorted();
        // '0' is the byte after '/': the range holds exactly the paths starting with `dir/`.
        sorted.range(format!("{dir}/")..format!("{dir}0")).map(|(_, &i)| i)
    }

    /// Every target's declared outputs (project paths), sorted, with their target's index.
    pub fn outputs_sorted(&self) -> &Arc<BTreeMap<String, usize>> {
        self.producers_sorted.get_or_init(|| {
            let mut m = BTreeMap::new();
            for (i, t) in self.graph.project.targets.iter().enumerate() {
                for o in &t.outputs {
                    m.insert(o.path.clone(), i);
                }
            }
            Arc::new(m)
        })
    }

    /// The step targets with a `scratch:` folder at, below or above project folder `dir`.
    pub fn scratch_near<'a>(&'a self, dir: &'a str) -> impl Iterator<Item = usize> + 'a {
        let all = self.scratch_folders.get_or_init(|| {
            let mut v = Vec::new();
            for (i, t) in self.graph.project.targets.iter().enumerate() {
                if let Some(run) = t.step.as_ref().and_then(|s| s.as_run()) {
                    v.extend(run.scratch.iter().map(|s| (s.clone(), i)));
                }
            }
            v
        });
        use crate::paths::is_within;
        all.iter().filter(move |(s, _)| is_within(s, dir) || is_within(dir, s)).map(|(_, i)| *i)
    }

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
    /// With `--trace-undeclared`: the steps that touched what they did not declare.
    pub undeclared: usize,
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

/// A line for the user on stderr while the build goes on (not a warning, not a step's event).
pub fn note(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Steps in flight beyond `2 x -j` when a remote cache is configured.
const REMOTE_IO_IN_FLIGHT: usize = 16;

/// Build the step targets among `selected` (which is closed under deps): phase one finds the fresh steps (in parallel, see
/// [`Schedule::find_fresh`]); the rest go through [`runner::process`] on a pool, each once its
/// deps have finished ([`Schedule::run_the_rest`]).
pub fn build(ctx: Arc<Ctx>, selected: &[usize], reporter: &mut Reporter) -> Summary {
    let mut s = Schedule::new(&ctx, selected);
    reporter.start(s.steps.len());
    s.find_fresh(&ctx, reporter);
    if s.remaining > 0 {
        s.run_the_rest(&ctx, reporter);
    }
    s.summary
}

/// The scheduler's state for one build. Steps are graph indices; the per-step vectors are
/// indexed by them.
struct Schedule {
    /// The selected targets that have a step, in selection order.
    steps: Vec<usize>,
    in_sel: HashSet<usize>,
    /// Per step: deps (in the selection) not finished yet; `usize::MAX` once it is done.
    waiting: Vec<usize>,
    /// Per step: the steps (in the selection) that depend on it.
    dependents: Vec<Vec<usize>>,
    /// Per step: a dep failed or was skipped, so it is skipped too.
    blocked: Vec<bool>,
    /// Per step: its outputs digest once done.
    out_digest: Vec<Option<Digest>>,
    /// Per step: once done, the digest of its outputs and of everything its dependencies show
    /// (what dependents key on: [`visible_digest`]).
    vis_digest: Vec<Option<Digest>>,
    summary: Summary,
    remaining: usize,
}

impl Schedule {
    fn new(ctx: &Ctx, selected: &[usize]) -> Schedule {
        let g = &ctx.graph;
        let steps: Vec<usize> = selected.iter().copied().filter(|&i| g.target(i).step.is_some()).collect();
        let in_sel: HashSet<usize> = steps.iter().copied().collect();
        let n = g.len();
        let mut waiting = vec![0usize; n];
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
        for &i in &steps {
            for &d in g.step_deps[i].iter().filter(|d| in_sel.contains(d)) {
                waiting[i] += 1;
                dependents[d].push(i);
            }
        }
        let remaining = steps.len();
        Schedule {
            steps,
            in_sel,
            waiting,
            dependents,
            blocked: vec![false; n],
            out_digest: vec![None; n],
            vis_digest: vec![None; n],
            summary: Summary::default(),
            remaining,
        }
    }

    /// Step `i`'s deps in the selection.
    fn deps_of<'g>(&'g self, g: &'g Graph, i: usize) -> impl Iterator<Item = usize> + 'g {
        g.step_deps[i].iter().copied().filter(|d| self.in_sel.contains(d))
    }

    /// Phase one: find the fresh steps, in parallel (see [`FreshWalk`]). A step is fresh only
    /// if all its deps are, and a fresh dep's outputs are the ones its record names: so a step
    /// is checked, with its deps' recorded outputs, once they are all found fresh. The rest go
    /// to [`Schedule::run_the_rest`], which checks again once their deps have finished (a dep
    /// that reruns to identical outputs leaves them fresh: early cutoff). The fresh steps are
    /// then reported a topological level at a time.
    fn find_fresh(&mut self, ctx: &Ctx, reporter: &mut Reporter) {
        let g = &ctx.graph;
        let n = g.len();
        // What each step's record says its outputs are (`None`: no record, never fresh). Only
        // the scheduler thread writes the state, and not during this phase.
        let recorded: Vec<Option<Digest>> = match ctx.state.read() {
            Ok(state) => (0..n)
                .map(|i| match self.in_sel.contains(&i) {
                    true => state.get(&g.target(i).name).map(|r| r.outputs_digest),
                    false => None,
                })
                .collect(),
            Err(_) => vec![None; n],
        };
        // A step with no record, or with a dep that has none, cannot be fresh: not checked.
        let is_candidate: Vec<bool> = (0..n)
            .map(|i| recorded[i].is_some() && self.deps_of(g, i).all(|d| recorded[d].is_some()))
            .collect();
        // What dependents of each step key on, from the records.
        let levels = self.levels(g);
        let mut recorded_vis: Vec<Option<Digest>> = vec![None; n];
        for &i in levels.iter().flatten() {
            recorded_vis[i] = recorded[i].map(|own| visible_digest(g, i, own, &recorded_vis));
        }
        ctx.stat.set_frozen(true);
        let mut found = self.check_candidates(ctx, reporter, &recorded_vis, &is_candidate);
        let mut fresh_done = vec![false; n];
        let plain_lines = reporter.plain_fresh_lines();
        for level in levels {
            for i in level {
                // Kept only if every dep is fresh with the outputs this check was given.
                let deps_fresh =
                    self.deps_of(g, i).all(|d| fresh_done[d] && self.out_digest[d] == recorded[d]);
                if !deps_fresh {
                    continue;
                }
                let Some(fresh) = found[i].take() else { continue };
                fresh_done[i] = true;
                self.out_digest[i] = fresh.outputs_digest;
                self.vis_digest[i] =
                    fresh.outputs_digest.map(|own| visible_digest(g, i, own, &self.vis_digest));
                self.waiting[i] = usize::MAX;
                self.remaining -= 1;
                self.summary.add(Outcome::Fresh);
                report_fresh(ctx, reporter, i, fresh, plain_lines);
                for &dep in &self.dependents[i] {
                    self.waiting[dep] -= 1;
                }
            }
        }
        ctx.stat.set_frozen(false);
    }

    /// The selected steps by topological level: a step's level is one past its deepest dep's.
    fn levels(&self, g: &Graph) -> Vec<Vec<usize>> {
        let order = topo_order(&self.steps, &g.step_deps, &self.in_sel);
        let mut depth = vec![0usize; g.len()];
        for &i in &order {
            depth[i] = self.deps_of(g, i).map(|d| depth[d] + 1).max().unwrap_or(0);
        }
        let max_depth = order.iter().map(|&i| depth[i]).max().unwrap_or(0);
        let mut levels: Vec<Vec<usize>> = vec![Vec::new(); max_depth + 1];
        for &i in &order {
            levels[depth[i]].push(i);
        }
        levels
    }

    /// Check every candidate whose deps are found fresh, on a pool of one thread per core
    /// shared by work-stealing: the checks wait on nothing but stat, and the step pool's 2 x -j
    /// threads would only take turns. The pool is dropped afterwards: rayon's idle workers spin
    /// before they sleep, and on a small machine they would take the cores from what this
    /// thread does next. With at most one step to check (a fresh clone has none) no pool starts.
    fn check_candidates(
        &self,
        ctx: &Ctx,
        reporter: &mut Reporter,
        recorded: &[Option<Digest>],
        is_candidate: &[bool],
    ) -> Vec<std::sync::OnceLock<FreshCheck>> {
        let g = &ctx.graph;
        let n = g.len();
        let fresh_pool = match is_candidate.iter().filter(|&&c| c).nth(1).is_some() {
            true => rayon::ThreadPoolBuilder::new()
                .num_threads(cores())
                .thread_name(|i| format!("gvbuild-check-{i}"))
                .build()
                .map_err(|e| reporter.warn(&format!("could not start the threads that check steps: {e}")))
                .ok(),
            false => None,
        };
        let check = |i: usize| {
            let done = runner::check_fresh(ctx, g.target(i), dep_digests(g, i, recorded))?;
            Some(FreshCheck {
                key: done.key,
                outputs_digest: done.outputs_digest,
                ms: done.ms,
                image_id: done.image_id.map(Box::new),
            })
        };
        let walk = FreshWalk {
            check: &check,
            pending: (0..n).map(|i| AtomicU32::new(self.deps_of(g, i).count() as u32)).collect(),
            is_candidate,
            dependents: &self.dependents,
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
            // No threads to be had (or at most one step): one step after another on this one.
            None => walk.visit_here(roots),
        }
        walk.found
    }

    /// Phase two: run what is not fresh, each step once its deps have finished, on a pool of
    /// up to [`in_flight_max`] threads; the results come back to this thread, which alone
    /// records and reports them.
    fn run_the_rest(&mut self, ctx: &Arc<Ctx>, reporter: &mut Reporter) {
        let g = &ctx.graph;
        let _watcher = Watcher::start(ctx, reporter);
        let in_flight_max = in_flight_max(ctx);
        let pool = match rayon::ThreadPoolBuilder::new()
            .num_threads(in_flight_max)
            .thread_name(|i| format!("gvbuild-step-{i}"))
            .build()
        {
            Ok(p) => p,
            Err(e) => return reporter.warn(&format!("could not start the step pool: {e}")),
        };
        let mut ready: VecDeque<usize> =
            self.steps.iter().copied().filter(|&i| self.waiting[i] == 0).collect();
        let (tx, rx) = mpsc::channel::<(usize, runner::Done)>();
        let mut run = Running {
            in_flight: 0,
            stopping: false,
            journal_warned: false,
            dry_restored: vec![false; g.len()],
        };
        while self.remaining > 0 {
            if ctx.interrupted.load(Ordering::SeqCst) {
                run.stopping = true;
            }
            // Start what may start: only steps whose deps all succeeded are ever ready.
            while run.in_flight < in_flight_max && !run.stopping {
                let Some(i) = ready.pop_front() else { break };
                run.in_flight += 1;
                self.start(ctx, reporter, &pool, &tx, i);
            }
            if run.stopping && run.in_flight == 0 {
                self.skip_the_rest(ctx, reporter, &mut ready);
                break;
            }
            if run.in_flight == 0 {
                match ready.is_empty() {
                    true => break,
                    false => continue,
                }
            }
            let Ok((i, done)) = rx.recv() else { break };
            run.in_flight -= 1;
            self.finish(ctx, reporter, &mut run, i, done, &mut ready);
        }
    }

    /// Hand step `i` to the pool; its [`runner::Done`] comes back on `tx`. In a dry run, a step
    /// with a dep that would run would run too, without asking the runner.
    fn start(
        &self,
        ctx: &Arc<Ctx>,
        reporter: &mut Reporter,
        pool: &rayon::ThreadPool,
        tx: &mpsc::Sender<(usize, runner::Done)>,
        i: usize,
    ) {
        let g = &ctx.graph;
        if ctx.opts.dry_run {
            // A dependency that would run has no outputs yet: so this step would run too.
            if let Some(&d) = g.step_deps[i].iter().find(|&&d| self.out_digest[d].is_none()) {
                let mut done = runner::Done::would_run();
                done.command = Some(runner::summary_of(g.target(i)));
                done.reasons.push(explain::Reason::DepWouldRun(g.target(d).name.clone()));
                let _ = tx.send((i, done));
                return;
            }
        }
        // Owned: the step runs on the pool, which may outlive this borrow of the graph.
        let deps: BTreeMap<String, Digest> =
            dep_digests(g, i, &self.vis_digest).into_iter().map(|(k, v)| (k.into_owned(), v)).collect();
        let ctx2 = ctx.clone();
        let tx = tx.clone();
        reporter.started(&g.target(i).name);
        pool.spawn(move || {
            let done = runner::process(&ctx2, ctx2.graph.target(i), deps);
            let _ = tx.send((i, done));
        });
    }

    /// Fold step `i`'s result in: the journal and the state, the summary and the report, and
    /// its dependents, made ready or skipped.
    fn finish(
        &mut self,
        ctx: &Ctx,
        reporter: &mut Reporter,
        run: &mut Running,
        i: usize,
        mut done: runner::Done,
        ready: &mut VecDeque<usize>,
    ) {
        let g = &ctx.graph;
        if ctx.opts.dry_run {
            dry_run_reasons(g, i, &mut done, &mut run.dry_restored);
        }
        explain::mark_inferred(&mut done.reasons, g, i);
        self.remaining -= 1;
        self.waiting[i] = usize::MAX;
        let name = g.target(i).name.clone();
        if done.update_record {
            record(ctx, reporter, &name, &done, &mut run.journal_warned);
        }
        self.summary.add(done.outcome);
        if done.outcome == Outcome::Restored && done.from == Some("remote") {
            self.summary.restored_remote += 1;
        }
        reporter.step(ctx, &name, done.outcome, Some(&done), done.ms, done.key);
        let failed = done.outcome == Outcome::Failed;
        self.out_digest[i] = done.outputs_digest;
        self.vis_digest[i] = done.outputs_digest.map(|own| visible_digest(g, i, own, &self.vis_digest));
        if let Some(e) = done.explained {
            reporter.explained.push((name, e));
        }
        if failed && !ctx.opts.keep_going {
            run.stopping = true;
        }
        let mut finished = Vec::new();
        for &dep in &self.dependents[i] {
            if failed {
                self.blocked[dep] = true;
            }
            self.waiting[dep] -= 1;
            if self.waiting[dep] == 0 {
                match self.blocked[dep] {
                    true => finished.push(dep),
                    false => ready.push_back(dep),
                }
            }
        }
        // Skip what can no longer run, and what depends on it.
        for j in finished {
            self.skip(j, ctx, reporter);
        }
    }

    /// The build stopped: everything not started is skipped.
    fn skip_the_rest(&mut self, ctx: &Ctx, reporter: &mut Reporter, ready: &mut VecDeque<usize>) {
        let waiting = self.steps.iter().copied().filter(|&i| self.waiting[i] > 0);
        let rest: Vec<usize> = ready.drain(..).chain(waiting).collect();
        for i in rest {
            if self.waiting[i] != usize::MAX {
                self.waiting[i] = usize::MAX;
                self.summary.add(Outcome::Skipped);
                self.remaining = self.remaining.saturating_sub(1);
                reporter.step(ctx, &ctx.graph.target(i).name, Outcome::Skipped, None, 0, None);
            }
        }
    }

    /// Skip step `i` (a dep failed or was skipped), and each dependent that was waiting only on
    /// it and other finished steps.
    fn skip(&mut self, i: usize, ctx: &Ctx, reporter: &mut Reporter) {
        let mut stack = vec![i];
        while let Some(i) = stack.pop() {
            self.waiting[i] = usize::MAX;
            self.summary.add(Outcome::Skipped);
            self.remaining -= 1;
            reporter.step(ctx, &ctx.graph.target(i).name, Outcome::Skipped, None, 0, None);
            for &d in &self.dependents[i] {
                self.blocked[d] = true;
                self.waiting[d] -= 1;
                if self.waiting[d] == 0 {
                    stack.push(d);
                }
            }
        }
    }
}

/// Phase two's bookkeeping beside the [`Schedule`].
struct Running {
    in_flight: usize,
    /// A step failed (without `-k`) or the build was interrupted: nothing new starts.
    stopping: bool,
    /// The journal could not be written once: said once, not for every step.
    journal_warned: bool,
    /// Per step: in a dry run, it would be restored.
    dry_restored: Vec<bool>,
}

/// How many steps may be in flight at once. Fingerprinting and storing a step's outputs need
/// no command slot: with twice as many steps in flight as commands allowed, a step's
/// bookkeeping overlaps the next command. Remote steps take no command slot: as many more may
/// be in flight as the engine takes. A remote cache's lookups and downloads wait on the
/// network, not on a core: more steps in flight overlap their round trips. Threads are bounded
/// even without a limit on commands (`-j0`).
fn in_flight_max(ctx: &Ctx) -> usize {
    let jobs = ctx.opts.jobs.max(1);
    let remote_jobs = ctx.remote_exec.as_ref().map_or(0, |r| r.jobs());
    let remote_io = if ctx.remote.is_some() { REMOTE_IO_IN_FLIGHT } else { 0 };
    jobs.saturating_mul(2).saturating_add(remote_jobs).saturating_add(remote_io).min(1024)
}

/// A dry run's result for step `i`, corrected: a dependency that would be restored has not
/// written its outputs yet, so a step that reads them cannot be checked now, and may then run
/// or be restored.
fn dry_run_reasons(g: &Graph, i: usize, done: &mut runner::Done, dry_restored: &mut [bool]) {
    if done.outcome == Outcome::Restored {
        dry_restored[i] = true;
    }
    if done.outcome != Outcome::Failed {
        return;
    }
    if let Some(&d) = g.step_deps[i].iter().find(|&&d| dry_restored[d]) {
        let t = g.target(i);
        done.outcome = Outcome::Ran;
        done.error = None;
        done.command = Some(runner::summary_of(t));
        done.reasons = vec![explain::Reason::DepWouldRestore(g.target(d).name.clone())];
    }
}

/// Record a step's result: appended to the journal (a killed build keeps it), then set in the
/// state. A journal that cannot be written is said once.
fn record(ctx: &Ctx, reporter: &mut Reporter, name: &str, done: &runner::Done, journal_warned: &mut bool) {
    if let Ok(state) = ctx.state.read() {
        if let Err(e) = state.append(name, done.record.as_ref()) {
            // Once is enough: a full disk fails every later append the same way.
            if !*journal_warned {
                *journal_warned = true;
                reporter.warn(&format!(
                    "could not write the build journal ({e}); a killed build will recheck its steps"
                ));
            }
        }
    }
    if let Ok(mut state) = ctx.state.write() {
        state.set(name, done.record.clone());
    }
}

/// Report a step found fresh. Its `--json` line, when that is all there is to report of it, is
/// made by hand (a `serde_json::Value` per step was a tenth of a no-op build).
fn report_fresh(ctx: &Ctx, reporter: &mut Reporter, i: usize, fresh: FreshCheck, plain_lines: bool) {
    let name = &ctx.graph.target(i).name;
    match fresh.image_id {
        None if plain_lines => reporter.push_line(&report::fresh_line(name, fresh.key, fresh.ms)),
        image_id => {
            let image_id = image_id.map(|b| *b);
            let done = runner::Done::fresh(fresh.key, fresh.outputs_digest, fresh.ms, image_id);
            reporter.step(ctx, name, Outcome::Fresh, Some(&done), done.ms, done.key)
        }
    }
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
/// What a dependent of step `i` keys it on: the digest of `i`'s outputs (`own`) and of what
/// each of `i`'s dependencies shows (`vis`, by graph index), so of every output a step that
/// depends on `i` sees, directly or not (a sandboxed step, like a remote one, sees all of
/// them: docs/sandbox.md). A step whose dependency reran to the same outputs stays fresh
/// only if nothing further down changed either.
fn visible_digest(g: &Graph, i: usize, own: Digest, vis: &[Option<Digest>]) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(b"gvbuild visible outputs v1\0");
    h.update(&own);
    for &d in &g.step_deps[i] {
        if let Some(v) = vis[d] {
            h.update(g.target(d).name.as_bytes());
            h.update(b"\0");
            h.update(&v);
        }
    }
    *h.finalize().as_bytes()
}

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
