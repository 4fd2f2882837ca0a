//! The target graph: a petgraph DAG plus a name -> node map, the checks that need the whole
//! graph, inferred dependencies, selection of what to build, and the parse cache.
//!
//! Edges point from a target to each of its deps ("depends on"). Groups are nodes too, but the
//! executor only sees step targets: [`Graph::step_deps`] lists, for each target, the step targets
//! it depends on with groups flattened away.
//!
//! # Inferred dependencies
//! When an input of a target may read another target's declared output (see [`infer`] for the
//! matching), and no path of declared deps leads from the reader to the producer, the graph
//! gets the edge itself, as make and ninja do. The edge is exactly the `deps:` entry the user
//! would otherwise write: it orders the build, selecting the reader selects the producer, and
//! the producer's outputs digest enters the reader's key as a declared dep's does, so a key is
//! the same whether the edge is declared or inferred. Where a declared path already exists no
//! edge is added, which keeps those keys as they were. An inferred edge that closes a cycle is
//! an error naming the input. Inference runs only when the YAML changed: its edges are part of
//! the cached graph. Inputs a step discovers while running (depfiles, ELF closures) are not
//! inferred from: they are known only after the step that would have needed ordering ran.
//!
//! Parsing a large gevulot.yaml costs far more than a no-op build should (about 80 ms per MB of
//! YAML), so the validated graph is cached in `.gvbuild/graph.bin`, keyed by the YAML's bytes and
//! the `--set` overrides. Globs are not expanded here: that happens on every build.

mod infer;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;

use miette::LabeledSpan;
use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::{self, ConfigError, ConfigErrors, Project, Target};
use crate::diag::{suggest, Source};
use crate::fingerprint::encode;

/// Why [`Graph::select`] could not select what to build.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SelectError {
    /// A name given is no target's; `suggestion` is the closest name's `did you mean ...?`.
    #[error(
        "no target named `{name}` in this project; {}",
        suggestion.as_deref().unwrap_or("`gvbuild list` shows the targets")
    )]
    #[diagnostic(code(gvbuild::graph::unknown_target))]
    UnknownTarget { name: String, suggestion: Option<String> },
}

pub struct Graph {
    pub project: Project,
    /// Node `i` is `project.targets[i]`; edges are the declared deps and the inferred ones.
    pub dag: DiGraph<(), ()>,
    /// FxHash: names are looked up per target per build.
    index: rustc_hash::FxHashMap<String, usize>,
    /// For each target, the step targets it depends on directly (groups flattened, inferred
    /// deps included), sorted.
    pub step_deps: Vec<Vec<usize>>,
    /// The inferred dependencies, sorted by (target, dep), one per pair.
    pub inferred: Vec<Inferred>,
    /// The parse key (YAML bytes and `--set` vars) this graph was loaded for.
    pub key: [u8; 32],
}

/// What a target's inputs read of other targets' outputs: dep -> (input, output), the first
/// input that reads each other target.
type Reads = BTreeMap<usize, (usize, usize)>;

/// A dependency gvbuild added because an input of `target` may read an output of `dep`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inferred {
    pub target: usize,
    pub dep: usize,
    /// Index in `target`'s inputs of the first input that reads `dep`'s output.
    pub input: usize,
    /// Index in `dep`'s outputs of the output it reads.
    pub output: usize,
}

/// The parse cache as read back; `to_cache_bytes` writes the same fields by reference.
#[derive(Deserialize)]
struct Cached {
    key: [u8; 32],
    project: Project,
    step_deps: Vec<Vec<usize>>,
    inferred: Vec<Inferred>,
}

/// Bump when the cached form changes (a sealed file: see [`encode`]).
const PARSE_CACHE_VERSION: u32 = 7;
const GRAPH_MAGIC: &[u8; 8] = b"GVGRAPH\0";

impl Graph {
    /// Load the graph for `source`, from the parse cache in `state_dir` when the YAML and vars
    /// are unchanged, else by parsing and validating (and then caching the result).
    pub fn load(
        source: &Source,
        overrides: &[(String, String)],
        state_dir: &Path,
    ) -> Result<Graph, ConfigErrors> {
        Graph::load_with(source, overrides, state_dir, true)
    }

    /// [`Graph::load`], writing the parse cache only when `write` (a dry run writes nothing).
    /// Written before anything else runs: serializing it beside the build raised a cold build's
    /// peak memory by the cache's size.
    pub fn load_with(
        source: &Source,
        overrides: &[(String, String)],
        state_dir: &Path,
        write: bool,
    ) -> Result<Graph, ConfigErrors> {
        let (graph, stale) = Graph::load_cached(source, overrides, state_dir)?;
        if write && stale {
            graph.write_cache(state_dir);
        }
        Ok(graph)
    }

    /// The graph for `source`, from the parse cache in `state_dir` when the YAML and vars are
    /// unchanged, else by parsing and validating; `true` with a graph the parse cache does not
    /// hold (for [`Graph::write_cache`]). Writes nothing.
    fn load_cached(
        source: &Source,
        overrides: &[(String, String)],
        state_dir: &Path,
    ) -> Result<(Graph, bool), ConfigErrors> {
        let key = parse_key(source, overrides);
        let cache_path = state_dir.join("graph.bin");
        if let Some(g) = std::fs::read(&cache_path).ok().and_then(|b| Graph::from_cache_bytes(&b)) {
            if g.key == key {
                return Ok((g, false));
            }
        }
        Ok((Graph::validate(source, overrides)?, true))
    }

    /// Write this graph as the parse cache of `state_dir` (`graph.bin`, replaced atomically).
    /// The cache is an optimisation: failing to write it is not an error.
    fn write_cache(&self, state_dir: &Path) {
        if let Ok(bytes) = self.to_cache_bytes() {
            let _ = crate::fsutil::write_atomic(&state_dir.join("graph.bin"), &bytes);
        }
    }

    fn from_parts(project: Project, step_deps: Vec<Vec<usize>>, inferred: Vec<Inferred>) -> Graph {
        let index: rustc_hash::FxHashMap<String, usize> =
            project.targets.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        let mut dag =
            DiGraph::with_capacity(project.targets.len(), project.targets.len() * 2 + inferred.len());
        for _ in &project.targets {
            dag.add_node(());
        }
        for (i, t) in project.targets.iter().enumerate() {
            for d in &t.deps {
                if let Some(&j) = index.get(&d.name) {
                    dag.add_edge(NodeIndex::new(i), NodeIndex::new(j), ());
                }
            }
        }
        for e in &inferred {
            dag.add_edge(NodeIndex::new(e.target), NodeIndex::new(e.dep), ());
        }
        Graph { project, dag, index, step_deps, inferred, key: [0; 32] }
    }

    /// Build the graph and run the whole-graph checks, adding every error to those validation
    /// found: cycles among the declared deps, then outputs, then inference and the cycles its
    /// edges close (only those through an inferred edge, when declared deps had a cycle already).
    fn check(project: Project, source: &Source, mut errors: Vec<ConfigError>) -> Result<Graph, ConfigErrors> {
        let mut g = Graph::from_parts(project, Vec::new(), Vec::new());
        let before = errors.len();
        g.check_cycles(source, &mut errors);
        let declared_cycles = errors.len() > before;
        g.step_deps = g.compute_step_deps();
        let inferred = g.check_outputs(source, &mut errors);
        if !inferred.is_empty() {
            for e in &inferred {
                g.dag.add_edge(NodeIndex::new(e.target), NodeIndex::new(e.dep), ());
            }
            g.inferred = inferred;
            let mut closed = Vec::new();
            g.check_cycles(source, &mut closed);
            errors.extend(
                closed
                    .into_iter()
                    .filter(|e| !declared_cycles || matches!(e, ConfigError::InferredCycle { .. })),
            );
            g.step_deps = g.compute_step_deps();
        }
        if errors.is_empty() {
            Ok(g)
        } else {
            Err(ConfigErrors::new(&source.name, errors))
        }
    }

    /// The inferred dependency of `target` on `dep`, if that edge was inferred.
    pub fn inferred_edge(&self, target: usize, dep: usize) -> Option<&Inferred> {
        self.inferred
            .binary_search_by(|e| (e.target, e.dep).cmp(&(target, dep)))
            .ok()
            .and_then(|i| self.inferred.get(i))
    }

    /// The inferred dependencies of `target`, by dep.
    pub fn inferred_of(&self, target: usize) -> &[Inferred] {
        let lo = self.inferred.partition_point(|e| e.target < target);
        let hi = self.inferred.partition_point(|e| e.target <= target);
        &self.inferred[lo..hi]
    }

    /// The input (as written, vars expanded) an inferred dependency comes from.
    pub fn inferred_input(&self, e: &Inferred) -> &str {
        self.project.targets[e.target].inputs.get(e.input).map_or("", |i| i.path.as_str())
    }

    /// The output of the dep that the input reads.
    pub fn inferred_output(&self, e: &Inferred) -> &str {
        self.project.targets[e.dep].outputs.get(e.output).map_or("", |o| o.path.as_str())
    }

    pub fn target(&self, i: usize) -> &Target {
        &self.project.targets[i]
    }

    pub fn lookup(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn len(&self) -> usize {
        self.project.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.project.targets.is_empty()
    }

    fn check_cycles(&self, source: &Source, errors: &mut Vec<ConfigError>) {
        for scc in tarjan_scc(&self.dag) {
            let self_loop = scc.len() == 1 && self.dag.contains_edge(scc[0], scc[0]);
            if scc.len() < 2 && !self_loop {
                continue;
            }
            let members: HashSet<usize> = scc.iter().map(|n| n.index()).collect();
            let start = *members.iter().min().unwrap_or(&0);
            let mut path = self.cycle_through(start, &members);
            // A cycle with an inferred edge starts at the first one's reader, so that it reads
            // "app -> gen -> app" after "input ... of `app`".
            if let Some(k) = path.windows(2).position(|w| self.inferred_edge(w[0], w[1]).is_some()) {
                path.pop();
                path.rotate_left(k);
                path.push(path[0]);
            }
            let names: Vec<&str> = path.iter().map(|&i| self.project.targets[i].name.as_str()).collect();
            let cycle = names.join(" -> ");
            let mut spans = Vec::new();
            let mut labels = Vec::new();
            let mut first_inferred = None;
            for w in path.windows(2) {
                let from = &self.project.targets[w[0]];
                let to = &self.project.targets[w[1]];
                if let Some(d) = from.deps.iter().find(|d| d.name == to.name) {
                    spans.push(d.span.into());
                    labels.push(LabeledSpan::new_with_span(Some("part of the cycle".into()), d.span));
                } else if let Some(e) = self.inferred_edge(w[0], w[1]) {
                    let span = from.inputs.get(e.input).map(|i| i.span).unwrap_or_default();
                    let label =
                        Some(format!("reads `{}`, an output of `{}`", self.inferred_output(e), to.name));
                    // The first inferred input is where the error points (its line in the header).
                    labels.push(if first_inferred.is_none() {
                        LabeledSpan::new_primary_with_span(label, span)
                    } else {
                        LabeledSpan::new_with_span(label, span)
                    });
                    first_inferred.get_or_insert(*e);
                }
            }
            let Some(e) = first_inferred else {
                errors.push(ConfigError::Cycle { cycle, src: source.named(), spans });
                continue;
            };
            let target = self.project.targets[e.target].name.clone();
            let owner = self.project.targets[e.dep].name.clone();
            errors.push(ConfigError::InferredCycle {
                path: self.inferred_input(&e).to_string(),
                output: self.inferred_output(&e).to_string(),
                help: format!(
                    "an input that reads another target's output makes its target depend on that target: \
                     remove or narrow `{}` so that it does not cover `{}`, or remove the deps that lead from `{owner}` back to `{target}`",
                    self.inferred_input(&e),
                    self.inferred_output(&e)
                ),
                target,
                owner,
                cycle,
                src: source.named(),
                labels,
            });
        }
    }

    /// A shortest cycle from `start` back to itself within one strongly connected component.
    fn cycle_through(&self, start: usize, members: &HashSet<usize>) -> Vec<usize> {
        let mut prev: HashMap<usize, usize> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(n) = queue.pop_front() {
            for next in self.dag.neighbors(NodeIndex::new(n)) {
                let next = next.index();
                if !members.contains(&next) {
                    continue;
                }
                if next == start {
                    // Walk back from n to start, then close the loop.
                    let mut path = vec![n];
                    let mut cur = n;
                    while cur != start {
                        cur = prev[&cur];
                        path.push(cur);
                    }
                    path.reverse();
                    path.push(start);
                    return path;
                }
                if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(next) {
                    e.insert(n);
                    queue.push_back(next);
                }
            }
        }
        vec![start, start]
    }

    fn compute_step_deps(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.len()];
        for (i, slot) in out.iter_mut().enumerate() {
            let mut seen = HashSet::new();
            let mut stack: Vec<usize> = self.dag.neighbors(NodeIndex::new(i)).map(|n| n.index()).collect();
            let mut deps = Vec::new();
            while let Some(d) = stack.pop() {
                if !seen.insert(d) {
                    continue;
                }
                if self.project.targets[d].step.is_some() {
                    deps.push(d);
                } else {
                    stack.extend(self.dag.neighbors(NodeIndex::new(d)).map(|n| n.index()));
                }
            }
            deps.sort_unstable();
            *slot = deps;
        }
        out
    }

    /// Whether step target `from` depends on `to`, directly or through other targets (declared
    /// or inferred).
    pub fn depends_on(&self, from: usize, to: usize) -> bool {
        let mut seen = HashSet::new();
        let mut stack = vec![from];
        while let Some(n) = stack.pop() {
            for &d in &self.step_deps[n] {
                if d == to {
                    return true;
                }
                if seen.insert(d) {
                    stack.push(d);
                }
            }
        }
        false
    }

    /// Each step target's level among the declared step deps: 0 without deps, else one more than
    /// its deepest dep's. A target reaches only targets of a lower level.
    fn levels(&self) -> Vec<usize> {
        let mut level = vec![usize::MAX; self.len()];
        // Entered but not finished: a dep met in this state closes a cycle (the declared deps
        // may have one, reported elsewhere) and counts as level 0, so the walk ends.
        let mut entered = vec![false; self.len()];
        for root in 0..self.len() {
            // Iterative post-order, so a 100,000-target chain does not overflow the stack.
            let mut stack = vec![(root, false)];
            while let Some((n, expanded)) = stack.pop() {
                if level[n] != usize::MAX {
                    continue;
                }
                if expanded {
                    level[n] = self.step_deps[n]
                        .iter()
                        .map(|&d| if level[d] == usize::MAX { 0 } else { level[d] + 1 })
                        .max()
                        .unwrap_or(0);
                    continue;
                }
                if std::mem::replace(&mut entered[n], true) {
                    continue;
                }
                stack.push((n, true));
                stack.extend(
                    self.step_deps[n].iter().filter(|&&d| level[d] == usize::MAX).map(|&d| (d, false)),
                );
            }
        }
        level
    }

    /// Whether `from` depends on `to` through a path of step deps (`level` from [`Self::levels`]).
    fn reaches(&self, from: usize, to: usize, level: &[usize]) -> bool {
        if self.step_deps[from].binary_search(&to).is_ok() {
            return true;
        }
        let mut seen = HashSet::new();
        let mut stack = vec![from];
        while let Some(n) = stack.pop() {
            for &d in &self.step_deps[n] {
                if d == to {
                    return true;
                }
                // Only a target of a higher level than `to` can lead to it.
                if level[d] > level[to] && seen.insert(d) {
                    stack.push(d);
                }
            }
        }
        false
    }

    /// Output conflicts and nesting, inputs that read their own target's outputs, and the
    /// dependencies to infer from inputs that read other targets' outputs.
    fn check_outputs(&self, source: &Source, errors: &mut Vec<ConfigError>) -> Vec<Inferred> {
        let owners = self.output_owners(source, errors);
        self.check_nesting(&owners, source, errors);
        self.check_scratch(&owners, source, errors);
        let found = self.reads_of_outputs(&owners, source);
        let mut level = None;
        let mut inferred = Vec::new();
        for (ti, (found_errors, reads)) in found.into_iter().enumerate() {
            errors.extend(found_errors);
            for (dep, (input, output)) in reads {
                if self.step_deps[ti].binary_search(&dep).is_ok() {
                    continue;
                }
                let level = level.get_or_insert_with(|| self.levels());
                if !self.reaches(ti, dep, level) {
                    inferred.push(Inferred { target: ti, dep, input, output });
                }
            }
        }
        inferred
    }

    /// Each output path's owner (target, output), the first to declare it; a second target
    /// declaring the same path is an error.
    fn output_owners(&self, source: &Source, errors: &mut Vec<ConfigError>) -> infer::Owners<'_> {
        let mut owners: infer::Owners = BTreeMap::new();
        for (ti, t) in self.project.targets.iter().enumerate() {
            for (oi, o) in t.outputs.iter().enumerate() {
                if let Some(&(first, foi)) = owners.get(o.path.as_str()) {
                    if first != ti {
                        let f = &self.project.targets[first];
                        errors.push(ConfigError::OutputConflict {
                            path: o.path.clone(),
                            first: f.name.clone(),
                            second: t.name.clone(),
                            src: source.named(),
                            first_span: f.outputs[foi].span.into(),
                            second_span: o.span.into(),
                        });
                    }
                    continue;
                }
                owners.insert(&o.path, (ti, oi));
            }
        }
        owners
    }

    /// An output inside another output (its folder) is an error.
    fn check_nesting(&self, owners: &infer::Owners, source: &Source, errors: &mut Vec<ConfigError>) {
        for t in &self.project.targets {
            for o in &t.outputs {
                for anc in infer::ancestors(&o.path) {
                    if let Some(&(oti, ooi)) = owners.get(anc) {
                        let outer = &self.project.targets[oti];
                        errors.push(ConfigError::OutputNested {
                            inner: o.path.clone(),
                            inner_target: t.name.clone(),
                            outer: anc.to_string(),
                            outer_target: outer.name.clone(),
                            src: source.named(),
                            inner_span: o.span.into(),
                            outer_span: outer.outputs[ooi].span.into(),
                        });
                    }
                }
            }
        }
    }

    /// A `scratch:` folder is its step's own: no other target's output may lie in it (or hold
    /// it), no other target's scratch folder may overlap it, and none of its own step's inputs
    /// may lie in it (the step writes there; inputs are read-only).
    fn check_scratch(&self, owners: &infer::Owners, source: &Source, errors: &mut Vec<ConfigError>) {
        let inside = crate::paths::is_within;
        let scratch = |t: &Target| {
            t.step.as_ref().and_then(|s| s.as_run()).map(|r| r.scratch.clone()).unwrap_or_default()
        };
        let mut all: Vec<(usize, String)> = Vec::new();
        for (ti, t) in self.project.targets.iter().enumerate() {
            all.extend(scratch(t).into_iter().map(|s| (ti, s)));
        }
        let mut invalid = |t: &Target, message: String, help: &str| {
            errors.push(ConfigError::Invalid {
                message,
                src: source.named(),
                span: t.span.into(),
                label: "this target".into(),
                help: Some(help.into()),
            })
        };
        for (i, (ti, dir)) in all.iter().enumerate() {
            let t = &self.project.targets[*ti];
            let (from, to) = (format!("{dir}/"), format!("{dir}0"));
            let below = owners.range(from.as_str()..to.as_str()).map(|(p, o)| (*p, *o));
            let above = infer::ancestors(dir)
                .chain(std::iter::once(dir.as_str()))
                .filter_map(|a| owners.get(a).map(|o| (a, *o)));
            // Its own outputs may lie in it, never hold it: a folder output is replaced whole
            // after the step, which would take the scratch folder with it.
            let above: Vec<_> = above.collect();
            for (out, _) in above.iter().copied().filter(|(_, (oti, _))| oti == ti) {
                invalid(
                    t,
                    format!("scratch folder `{dir}` of target `{}` lies in its own output `{out}`", t.name),
                    "an output is replaced whole after its step: keep the scratch folder out of it",
                );
            }
            for (out, (oti, _)) in below.chain(above).filter(|(_, (oti, _))| oti != ti) {
                invalid(
                    t,
                    format!(
                        "scratch folder `{dir}` of target `{}` and output `{out}` of target `{}` overlap",
                        t.name, self.project.targets[oti].name
                    ),
                    "a scratch folder is its step's own, unkeyed and writable: keep other targets' outputs out of it",
                );
            }
            for (oti, other) in all.iter().skip(i + 1) {
                if inside(other, dir) || inside(dir, other) {
                    invalid(
                        t,
                        format!(
                            "scratch folder `{dir}` of target `{}` and scratch folder `{other}` of target `{}` overlap",
                            t.name, self.project.targets[*oti].name
                        ),
                        "two steps that write one folder at once would mix their files: give each its own",
                    );
                }
            }
            for input in t.inputs.iter().filter(|i| !i.path.starts_with('/') && inside(&i.path, dir)) {
                invalid(
                    t,
                    format!("input `{}` of target `{}` lies in its scratch folder `{dir}`", input.path, t.name),
                    "the step writes its scratch folder and may not write its inputs: keep the input out of it",
                );
            }
        }
    }

    /// What each target's inputs read of the outputs: per target, its errors (an invalid glob,
    /// an input reading its own target's output) and, for each other target read, the first
    /// (input, output) that reads it. Independent per target, so found on every core (a big
    /// generated graph has tens of thousands of inputs).
    fn reads_of_outputs(&self, owners: &infer::Owners, source: &Source) -> Vec<(Vec<ConfigError>, Reads)> {
        self.project
            .targets
            .par_iter()
            .with_min_len(256)
            .enumerate()
            .map(|(ti, t)| {
                let mut errors = Vec::new();
                let mut reads = Reads::new();
                let mut hits = Vec::new();
                for (ii, input) in t.inputs.iter().enumerate() {
                    hits.clear();
                    if infer::hits(owners, &input.path, input.glob, &mut hits).is_err() {
                        errors.push(ConfigError::Invalid {
                            message: format!(
                                "input `{}` of target `{}` is not a valid glob",
                                input.path, t.name
                            ),
                            src: source.named(),
                            span: input.span.into(),
                            label: "invalid glob".into(),
                            help: Some("globs use `*`, `**`, `?`, `[abc]` and `{a,b}`".into()),
                        });
                        continue;
                    }
                    for &(owner, oi) in &hits {
                        if owner == ti {
                            errors.push(ConfigError::InputIsOwnOutput {
                                path: input.path.clone(),
                                output: t.outputs[oi].path.clone(),
                                target: t.name.clone(),
                                src: source.named(),
                                span: input.span.into(),
                            });
                        } else {
                            reads.entry(owner).or_insert((ii, oi));
                        }
                    }
                }
                (errors, reads)
            })
            .collect()
    }

    /// The targets to build for the names given (or the default, or everything), and every step
    /// target they need, in a deterministic order. Unknown names are an error with a suggestion.
    pub fn select(&self, names: &[String]) -> Result<Vec<usize>, SelectError> {
        let roots: Vec<usize> = if names.is_empty() {
            match &self.project.default {
                Some(d) => self.lookup(d).into_iter().collect(),
                None => (0..self.len()).collect(),
            }
        } else {
            let mut roots = Vec::new();
            for n in names {
                match self.lookup(n) {
                    Some(i) => roots.push(i),
                    None => {
                        let suggestion = suggest(n, self.project.targets.iter().map(|t| t.name.as_str()));
                        return Err(SelectError::UnknownTarget { name: n.clone(), suggestion });
                    }
                }
            }
            roots
        };
        let mut seen = vec![false; self.len()];
        let mut stack = roots;
        let mut out = Vec::new();
        while let Some(n) = stack.pop() {
            if std::mem::replace(&mut seen[n], true) {
                continue;
            }
            out.push(n);
            stack.extend(self.dag.neighbors(NodeIndex::new(n)).map(|d| d.index()));
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Parse and validate `source` as [`Graph::load`] does, without reading or writing the
    /// parse cache.
    pub fn validate(source: &Source, overrides: &[(String, String)]) -> Result<Graph, ConfigErrors> {
        // The whole-graph checks run also when validation found errors, on what it could read.
        let (project, errors) = config::load(source, overrides);
        let Some(project) = project else {
            return Err(ConfigErrors::new(&source.name, errors));
        };
        let mut graph = Graph::check(project, source, errors)?;
        graph.key = parse_key(source, overrides);
        Ok(graph)
    }

    /// The parse cache's bytes for this graph (the sealed `graph.bin`).
    pub fn to_cache_bytes(&self) -> std::io::Result<Vec<u8>> {
        // Serialized by reference: serde writes a reference as the value it points to, so these
        // are the bytes of a `Cached`, without a copy of every target.
        #[derive(Serialize)]
        struct CachedRef<'a> {
            key: &'a [u8; 32],
            project: &'a Project,
            step_deps: &'a Vec<Vec<usize>>,
            inferred: &'a Vec<Inferred>,
        }
        let cached = CachedRef {
            key: &self.key,
            project: &self.project,
            step_deps: &self.step_deps,
            inferred: &self.inferred,
        };
        encode::seal(GRAPH_MAGIC, PARSE_CACHE_VERSION, &cached)
    }

    /// Read back what [`Graph::to_cache_bytes`] wrote; `None` for anything else, including a
    /// sealed graph whose edges name targets it does not have. Its `key` is the one it was
    /// cached under.
    pub fn from_cache_bytes(bytes: &[u8]) -> Option<Graph> {
        let cached = encode::unseal::<Cached>(GRAPH_MAGIC, PARSE_CACHE_VERSION, bytes)?;
        let n = cached.project.targets.len();
        let in_range = cached.step_deps.len() == n
            && cached.step_deps.iter().flatten().all(|&d| d < n)
            && cached.inferred.iter().all(|e| e.target < n && e.dep < n);
        if !in_range {
            return None;
        }
        let mut g = Graph::from_parts(cached.project, cached.step_deps, cached.inferred);
        g.key = cached.key;
        Some(g)
    }
}

fn parse_key(source: &Source, overrides: &[(String, String)]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&PARSE_CACHE_VERSION.to_le_bytes());
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(&(source.text.len() as u64).to_le_bytes());
    h.update(source.text.as_bytes());
    for (k, v) in overrides {
        h.update(&(k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
        h.update(&(v.len() as u64).to_le_bytes());
        h.update(v.as_bytes());
    }
    *h.finalize().as_bytes()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// A project with a `manifest:` step never read back from the parse cache (the manifest's
    /// serde form skips empty fields, which postcard cannot read back), so its YAML was parsed
    /// again on every build. Found by the `config` fuzz target.
    #[test]
    fn a_manifest_step_survives_the_parse_cache() {
        let yaml = "targets:\n  m:\n    manifest:\n      program: prover\n      root: build/root\n      \
                    workspace: { mount: \"%1\", path: /workspace }\n      into: build/m.json\n";
        let source = Source::new("gevulot.yaml", yaml);
        let graph = Graph::validate(&source, &[]).unwrap();
        let cached = Graph::from_cache_bytes(&graph.to_cache_bytes().unwrap()).unwrap();
        assert_eq!(cached.key, graph.key);
        assert_eq!(cached.project.targets[0].step, graph.project.targets[0].step);
    }
}
