//! The target graph: a petgraph DAG plus a name -> node map, the checks that need the whole
//! graph, selection of what to build, and the parse cache.
//!
//! Edges point from a target to each of its deps ("depends on"). Groups are nodes too, but the
//! executor only sees step targets: [`Graph::step_deps`] lists, for each target, the step targets
//! it depends on with groups flattened away.
//!
//! Parsing a large gevulot.yaml costs far more than a no-op build should (about 80 ms per MB of
//! YAML), so the validated graph is cached in `.gvbuild/graph.bin`, keyed by the YAML's bytes and
//! the `--set` overrides. Globs are not expanded here: that happens on every build.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::path::Path;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};

use crate::config::{self, ConfigError, ConfigErrors, Project, Target};
use crate::diag::{suggest, Source};
use crate::fingerprint::encode;

pub struct Graph {
    pub project: Project,
    /// Node `i` is `project.targets[i]`.
    pub dag: DiGraph<(), ()>,
    index: HashMap<String, usize>,
    /// For each target, the step targets it depends on directly (groups flattened), sorted.
    pub step_deps: Vec<Vec<usize>>,
    /// The parse key (YAML bytes and `--set` vars) this graph was loaded for.
    pub key: [u8; 32],
}

#[derive(Serialize, Deserialize)]
struct Cached {
    key: [u8; 32],
    project: Project,
    step_deps: Vec<Vec<usize>>,
}

/// Bump when the cached form changes (a sealed file: see [`encode`]).
const PARSE_CACHE_VERSION: u32 = 2;
const GRAPH_MAGIC: &[u8; 8] = b"GVGRAPH\0";

impl Graph {
    /// Load the graph for `source`, from the parse cache in `state_dir` when the YAML and vars
    /// are unchanged, else by parsing and validating (and then caching the result).
    pub fn load(
        source: &Source,
        overrides: &[(String, String)],
        state_dir: &Path,
    ) -> Result<Graph, ConfigErrors> {
        let key = parse_key(source, overrides);
        let cache_path = state_dir.join("graph.bin");
        if let Some(cached) = encode::read_sealed::<Cached>(&cache_path, GRAPH_MAGIC, PARSE_CACHE_VERSION) {
            if cached.key == key {
                let mut g = Graph::from_parts(cached.project, cached.step_deps);
                g.key = key;
                return Ok(g);
            }
        }
        let project = config::parse(source, overrides)?;
        let mut graph = Graph::check(project, source)?;
        graph.key = key;
        let cached = Cached { key, project: graph.project.clone(), step_deps: graph.step_deps.clone() };
        // The cache is an optimisation: failing to write it is not an error.
        let _ = encode::write_sealed(&cache_path, GRAPH_MAGIC, PARSE_CACHE_VERSION, &cached);
        Ok(graph)
    }

    fn from_parts(project: Project, step_deps: Vec<Vec<usize>>) -> Graph {
        let index: HashMap<String, usize> =
            project.targets.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        let mut dag = DiGraph::with_capacity(project.targets.len(), project.targets.len() * 2);
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
        Graph { project, dag, index, step_deps, key: [0; 32] }
    }

    /// Build the graph and run the whole-graph checks, collecting every error.
    fn check(project: Project, source: &Source) -> Result<Graph, ConfigErrors> {
        let mut g = Graph::from_parts(project, Vec::new());
        let mut errors = Vec::new();
        g.check_cycles(source, &mut errors);
        if errors.is_empty() {
            g.step_deps = g.compute_step_deps();
            g.check_outputs(source, &mut errors);
        }
        if errors.is_empty() {
            Ok(g)
        } else {
            Err(ConfigErrors { file: source.name.clone(), errors })
        }
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
            let path = self.cycle_through(start, &members);
            let names: Vec<&str> = path.iter().map(|&i| self.project.targets[i].name.as_str()).collect();
            let mut spans = Vec::new();
            for w in path.windows(2) {
                let from = &self.project.targets[w[0]];
                let to = &self.project.targets[w[1]].name;
                if let Some(d) = from.deps.iter().find(|d| &d.name == to) {
                    spans.push(d.span.into());
                }
            }
            errors.push(ConfigError::Cycle { cycle: names.join(" -> "), src: source.named(), spans });
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

    /// Whether `from` depends on `to` through any path of step deps.
    /// Whether step target `from` depends on `to`, directly or through other targets.
    pub fn depends_on(&self, from: usize, to: usize) -> bool {
        self.reaches(from, to)
    }

    fn reaches(&self, from: usize, to: usize) -> bool {
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
                if seen.insert(d) {
                    stack.push(d);
                }
            }
        }
        false
    }

    fn check_outputs(&self, source: &Source, errors: &mut Vec<ConfigError>) {
        // path -> (target, index of the output in that target)
        let mut owners: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
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
        for t in &self.project.targets {
            for o in &t.outputs {
                for anc in ancestors(&o.path) {
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
        for (ti, t) in self.project.targets.iter().enumerate() {
            for input in &t.inputs {
                if input.path.starts_with('/') {
                    continue;
                }
                let mut hits: Vec<(usize, &str)> = Vec::new();
                if input.glob {
                    let Ok(glob) = globset::GlobBuilder::new(&input.path).literal_separator(true).build()
                    else {
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
                    };
                    let m = glob.compile_matcher();
                    for (p, &(oti, _)) in &owners {
                        if m.is_match(p) {
                            hits.push((oti, p));
                        }
                    }
                } else {
                    let p = input.path.as_str();
                    if let Some(&(oti, _)) = owners.get(p) {
                        hits.push((oti, p));
                    }
                    for anc in ancestors(p) {
                        if let Some(&(oti, _)) = owners.get(anc) {
                            hits.push((oti, anc));
                        }
                    }
                    let lo = if p == "." { String::new() } else { format!("{p}/") };
                    let hi = if p == "." { "\u{10ffff}".to_string() } else { format!("{p}0") };
                    for (op, &(oti, _)) in
                        owners.range::<str, _>((Bound::Included(lo.as_str()), Bound::Excluded(hi.as_str())))
                    {
                        hits.push((oti, op));
                    }
                }
                for (owner, opath) in hits {
                    if owner == ti {
                        errors.push(ConfigError::InputIsOwnOutput {
                            path: input.path.clone(),
                            output: opath.to_string(),
                            target: t.name.clone(),
                            src: source.named(),
                            span: input.span.into(),
                        });
                    } else if !self.reaches(ti, owner) {
                        let owner_name = self.project.targets[owner].name.clone();
                        errors.push(ConfigError::InputFromUnrelated {
                            path: input.path.clone(),
                            target: t.name.clone(),
                            help: format!("add `{owner_name}` to the deps of `{}`", t.name),
                            owner: owner_name,
                            src: source.named(),
                            span: input.span.into(),
                        });
                    }
                }
            }
        }
    }

    /// The targets to build for the names given (or the default, or everything), and every step
    /// target they need, in a deterministic order. Unknown names are an error with a suggestion.
    pub fn select(&self, names: &[String]) -> Result<Vec<usize>, String> {
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
                        let hint = suggest(n, self.project.targets.iter().map(|t| t.name.as_str()))
                            .map(|h| format!("; {h}"))
                            .unwrap_or_else(|| "; `gvbuild list` shows the targets".to_string());
                        return Err(format!("no target named `{n}` in this project{hint}"));
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

/// Proper ancestors of a relative path: `a/b/c` -> `a/b`, `a`.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.char_indices().filter(|&(_, c)| c == '/').map(move |(i, _)| &path[..i])
}
