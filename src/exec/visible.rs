//! What a `run:` step sees of the project: one set, computed once per run, that is both the
//! remote action's input root ([`super::remote_exec`]) and what the sandbox shows a local
//! step ([`crate::sandbox`]), so that a step that builds sandboxed builds remotely.
//!
//! The set holds, in this order (a later entry for the same path replaces an earlier one, as
//! a Merkle tree's insert does):
//! - the declared inputs inside the project: files, folders (each file below them is an input
//!   of its own), and symlinks, which stay symlinks when they lead nowhere or to something the
//!   set holds;
//! - the outputs of every target the step depends on, directly or not;
//! - for a step with a depfile, what it may discover: the files its last depfile listed, and
//!   every file below its command's include folders (`-I` and kin) inside the project and
//!   below the folder of each of its input files (for an input in the project folder itself,
//!   that folder's own files only), except what the project's `.gitignore` files ignore and
//!   what a target writes (a dependency's outputs are in the set already), at most
//!   [`MAX_DISCOVERABLE`] files.
//!
//! Never in it: a file that another target writes and this one does not depend on, `.git/`,
//! `.gvbuild/` (the state and the cache), and the step's own outputs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::error::InputRootError;
use super::Ctx;
use crate::config::Target;
use crate::fingerprint::outputs::OutputTree;
use crate::fingerprint::{discovered, FileId, KeyParts};
pub use crate::sandbox::{Discoverable, Entry, Visible};
use crate::steps::run::RunSpec;
use fixedbitset::FixedBitSet;
use std::sync::Arc;

/// The set of `t`'s `run:` step, whose key parts are `parts`. `Err` when a symlink or a
/// dependency's output cannot be read as it was keyed, or a depfile step may discover too
/// many files.
pub fn of(ctx: &Ctx, t: &Target, run: &RunSpec, parts: &KeyParts) -> Result<Visible, InputRootError> {
    of_with(ctx, t, run, parts, Detail::Digests)
}

/// How much of the set [`of_with`] works out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Every file with its digest: the remote input root.
    Digests,
    /// The files a depfile step may discover without their digests (zero, size 0: a bound
    /// view needs only their paths), which saves a stat of each.
    Paths,
    /// Also each dependency's outputs as declared ([`Entry::Output`]), not read at all: a
    /// lazy view looks at what is on disk below them only when the step asks. Beyond a few
    /// ([`crate::sandbox::BIND_UP_TO`] entries in all) they are not listed either
    /// ([`Visible::unlisted`]): the lazy view finds them among all targets' outputs. A depfile
    /// step's files to discover are never listed ([`Visible::discover`]), so that its view
    /// notes which it reads.
    Lazy,
    /// As `Lazy`, less the files a depfile step may discover that its last depfile did not
    /// list: what its key covers (`--trace-undeclared` checks reads against it).
    Keyed,
}

/// [`of`], worked out to `detail`: the same paths, the same set.
pub fn of_with(
    ctx: &Ctx,
    t: &Target,
    run: &RunSpec,
    parts: &KeyParts,
    detail: Detail,
) -> Result<Visible, InputRootError> {
    let digests = detail == Detail::Digests;
    let root = ctx.root.as_path();
    let deps = dep_closure(ctx, t);
    // A file another target writes is seen only from a dependency.
    let shippable = |p: &str| -> bool {
        if p.starts_with('/') || p.starts_with(".gvbuild/") || p.starts_with(".git/") {
            return false;
        }
        match ctx.producer_of(p) {
            Some(producer) => deps.contains(producer),
            None => true,
        }
    };
    let mut v = Visible::default();
    let links = shipped_links(root, parts, &shippable)?;
    // Whether `p` is, or is below, a path shipped as a symlink.
    let through_link = |p: &str| !links.is_empty() && and_above(p).any(|a| links.contains_key(a));
    for (p, id) in &parts.inputs {
        if p.ends_with(" (link)") {
            continue;
        } else if let Some(dir) = p.strip_suffix(" (folder)") {
            if shippable(dir) && !through_link(dir) {
                v.entries.push((dir.to_string(), Entry::Folder));
            }
        } else if shippable(p) && !through_link(p) {
            v.file(p, id.exec, id.digest, id.size);
        }
    }
    for (link, text) in links {
        v.entries.push((link.to_string(), Entry::Link(text)));
    }
    for d in deps.ones() {
        let dep = ctx.graph.target(d);
        if matches!(detail, Detail::Lazy | Detail::Keyed) {
            v.entries.extend(dep.outputs.iter().map(|o| (o.path.clone(), Entry::Output)));
            if v.entries.len() > crate::sandbox::BIND_UP_TO {
                // Too many for a bound view: the lazy one looks them up itself.
                v.entries.retain(|(_, e)| *e != Entry::Output);
                v.unlisted = true;
                break;
            }
            continue;
        }
        let outputs: Vec<String> = dep.outputs.iter().map(|o| o.path.clone()).collect();
        let got = OutputTree::collect(root, &outputs, &ctx.stat).map_err(|source| {
            InputRootError::DepOutputs { dep: dep.name.clone(), target: t.name.clone(), source }
        })?;
        for f in &got.files {
            v.file(&f.path, f.exec, f.digest, f.size);
        }
        for l in &got.symlinks {
            v.entries.push((l.path.clone(), Entry::Link(l.target.clone())));
        }
        for dir in &got.dirs {
            v.entries.push((dir.clone(), Entry::Folder));
        }
    }
    let (recorded, mut extra, walked) = discoverable(ctx, t, run, parts)?;
    let walked_files: usize = walked.iter().map(|w| w.files.len()).sum();
    if detail == Detail::Keyed {
        extra.retain(|p| recorded.contains(p));
    } else if detail == Detail::Lazy
        && (run.depfile.is_some() || v.entries.len() + walked_files > crate::sandbox::BIND_UP_TO)
    {
        // A lazy view answers from the walks themselves, and for a depfile step notes each of
        // these files it reads: none is keyed unless its depfile lists it
        // (`runner::run_and_store`), so none may be bound unseen.
        v.discover = walked;
        v.unlisted = true;
    } else {
        for w in &walked {
            extra.extend(w.files.iter().cloned());
        }
    }
    let mut more = Vec::new();
    for p in extra {
        // Another step's write in flight (a restore's or a download's staged file) is no
        // file the step could read: it is renamed or gone in a moment.
        if v.files.contains(&p)
            || crate::fsutil::is_temp(Path::new(&p))
            || !shippable(&p)
            || parts.step.outputs.iter().any(|o| p == *o || p.starts_with(&format!("{o}/")))
        {
            continue;
        }
        // A file the walk found is there; one the last depfile listed may be gone since.
        let walked = !recorded.contains(&p);
        if !digests && (walked || std::fs::symlink_metadata(root.join(&p)).is_ok_and(|m| m.is_file())) {
            match v.unlisted && run.depfile.is_some() {
                // Only the last depfile's list: as unkeyed as the walks' files.
                true => more.push(p),
                false => v.file(&p, false, [0; 32], 0),
            }
            continue;
        } else if !digests {
            continue;
        }
        let abs = root.join(&p);
        // A file that may be read but is gone by now (removed while the walk ran) is not in it.
        let Ok(id) = ctx.stat.file_id(&p, &abs) else { continue };
        v.file(&p, id.exec, id.digest, id.size);
    }
    if !more.is_empty() {
        v.discover.push(Arc::new(crate::sandbox::Discoverable::new(more)));
    }
    v.deps = deps;
    Ok(v)
}

/// Project path `p`, then each folder above it (`a/b/c`, `a/b`, `a`).
fn and_above(p: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(p), |p| p.rsplit_once('/').map(|(dir, _)| dir))
}

/// The folder part of project path `p` (`.` for a name at the top).
fn parent_of(p: &str) -> &str {
    p.rsplit_once('/').map_or(".", |(dir, _)| dir)
}

/// Every step `t` depends on, directly or not: a local step sees all their outputs.
/// A bit per graph index. Each step's closure is kept once made, as its dependencies' closures
/// and themselves, so that a step's costs a few hundred words' `or` per dependency, not a walk
/// of thousands (at 10,000 targets the walk cost more than the sandbox's mounts); a graph of
/// more than [`KEEP_CLOSURES_UP_TO`] steps, whose closures would take too much memory, walks.
pub fn dep_closure(ctx: &Ctx, t: &Target) -> FixedBitSet {
    let Some(me) = ctx.graph.lookup(&t.name) else { return FixedBitSet::new() };
    let n = ctx.graph.step_deps.len();
    let kept = ctx.closures.get_or_init(|| {
        if n <= KEEP_CLOSURES_UP_TO {
            (0..n).map(|_| std::sync::OnceLock::new()).collect()
        } else {
            Vec::new()
        }
    });
    if kept.len() != n {
        return walk_closure(ctx, me);
    }
    // Depth first, each step after its dependencies (the graph has no cycle).
    let mut todo = vec![(me, false)];
    while let Some((i, ready)) = todo.pop() {
        if kept[i].get().is_some() {
            continue;
        }
        let deps = &ctx.graph.step_deps[i];
        if !ready {
            todo.push((i, true));
            todo.extend(deps.iter().filter(|&&d| kept[d].get().is_none()).map(|&d| (d, false)));
            continue;
        }
        let mut set = FixedBitSet::with_capacity(n);
        for &d in deps {
            set.insert(d);
            match kept[d].get() {
                Some(c) => set.union_with(c),
                None => return walk_closure(ctx, me),
            }
        }
        let _ = kept[i].set(Arc::new(set));
    }
    match kept[me].get() {
        Some(c) => FixedBitSet::clone(c),
        None => walk_closure(ctx, me),
    }
}

/// Steps up to which each step's dependency closure is kept: at most 32 MiB of them.
const KEEP_CLOSURES_UP_TO: usize = 16_384;

/// [`dep_closure`] of graph index `me`, walked.
fn walk_closure(ctx: &Ctx, me: usize) -> FixedBitSet {
    let mut deps = FixedBitSet::with_capacity(ctx.graph.step_deps.len());
    let mut todo: Vec<usize> = ctx.graph.step_deps[me].clone();
    while let Some(d) = todo.pop() {
        if !deps.put(d) {
            todo.extend(ctx.graph.step_deps[d].iter().copied().filter(|&e| !deps.contains(e)));
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

/// [`discoverable`]'s answer: the files the last depfile listed, the paths to ship (those
/// first), and the walks.
type Discovered = (BTreeSet<String>, BTreeSet<String>, Vec<Arc<Discoverable>>);

/// What a depfile step may discover, to ship besides its declared inputs: the files its last
/// depfile listed, which may be gone since (returned first, and again second, as the start of
/// the paths to ship), and the walks of its inputs' folders and its in-project include folders
/// (third; see [`walk`]). At most [`MAX_DISCOVERABLE`] files in all.
fn discoverable(
    ctx: &Ctx,
    t: &Target,
    run: &RunSpec,
    parts: &KeyParts,
) -> Result<Discovered, InputRootError> {
    let mut recorded: BTreeSet<String> = BTreeSet::new();
    let mut walked = Vec::new();
    if run.depfile.is_some() {
        if let Ok(state) = ctx.state.read() {
            if let Some(rec) = state.get(&t.name) {
                recorded.extend(discovered::files(&rec.discovered).map(|f| f.to_string()));
            }
        }
        let mut folders: BTreeSet<String> = discovered::command_search_dirs(&run.command)
            .into_iter()
            .filter_map(|d| project_folder(&ctx.root, &d))
            .collect();
        for p in parts.inputs.keys().filter(|p| !p.starts_with('/')) {
            folders.insert(p.rsplit_once('/').map_or(String::new(), |(dir, _)| dir.to_string()));
        }
        let mut count = 0;
        let mut done: Vec<String> = Vec::new();
        for dir in folders {
            // A folder inside one walked already (all below it) has nothing more.
            if done.iter().any(|d| !d.is_empty() && crate::paths::is_within(&dir, d)) {
                continue;
            }
            let w = walk(ctx, &dir);
            done.push(dir);
            count += w.files.len();
            if count > MAX_DISCOVERABLE {
                return Err(InputRootError::TooManyDiscoverable {
                    target: t.name.clone(),
                    max: MAX_DISCOVERABLE,
                });
            }
            walked.push(w);
        }
        count += recorded.iter().filter(|r| !walked.iter().any(|w| w.holds(r))).count();
        if count > MAX_DISCOVERABLE {
            return Err(InputRootError::TooManyDiscoverable {
                target: t.name.clone(),
                max: MAX_DISCOVERABLE,
            });
        }
    }
    Ok((recorded.clone(), recorded, walked))
}

/// The files of project folder `dir` a depfile step may discover: the project folder's own
/// files only; any other folder with all below it, except what git would ignore (build trees
/// such as cargo's `target/`), and except the files a target writes: a dependency's are in the
/// set through it, another's never are. What is left cannot change while the build runs, so a
/// folder is walked once per build; one with a scratch folder at, above or below it (which
/// its tool writes meanwhile) on every call.
pub(super) fn walk(ctx: &Ctx, dir: &str) -> Arc<Discoverable> {
    let steady = ctx.scratch_near(dir).next().is_none();
    if steady {
        if let Some(w) = ctx.walks.lock().ok().and_then(|m| m.get(dir).cloned()) {
            return w;
        }
    }
    let root = ctx.root.as_path();
    let abs = if dir.is_empty() { root.to_path_buf() } else { root.join(dir) };
    let walker = ignore::WalkBuilder::new(&abs)
        .max_depth(Some(if dir.is_empty() { 1 } else { usize::MAX }))
        .hidden(false)
        .git_global(false)
        .require_git(false)
        .follow_links(false)
        .build();
    // Not written by a target, nor gvbuild's or git's own.
    let steady_file =
        |p: &str| ctx.producer_of(p).is_none() && !p.starts_with(".git/") && !p.starts_with(".gvbuild/");
    // A symlink to such a file, or to one outside the project, is shown as the file it leads to
    // (and keyed so where a depfile lists it).
    let link_to_file = |e: &ignore::DirEntry| {
        let Ok(to) = std::fs::canonicalize(e.path()) else { return false };
        let inside = to.strip_prefix(root).ok().map(|r| r.to_str().map(str::to_string));
        to.is_file() && inside.is_none_or(|r| r.is_some_and(|r| steady_file(&r)))
    };
    let files: Vec<String> = walker
        .flatten()
        .filter(|e| e.file_type().is_some_and(|t| t.is_file() || (t.is_symlink() && link_to_file(e))))
        .filter_map(|e| e.path().strip_prefix(root).ok().and_then(|r| r.to_str()).map(str::to_string))
        .filter(|p| steady_file(p))
        .take(MAX_DISCOVERABLE + 1)
        .collect();
    let files = Arc::new(Discoverable::walked(dir, files));
    if steady {
        if let Ok(mut m) = ctx.walks.lock() {
            m.insert(dir.to_string(), files.clone());
        }
    }
    files
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

/// Files a depfile step's first remote run may ship beyond what it declares.
pub const MAX_DISCOVERABLE: usize = 50_000;

/// A command's include folder as a project folder (`""` for the project folder itself, which
/// `root` names, canonical): relative (`src/../inc` is `inc`), or absolute below the project
/// folder (as CMake writes them), or either through a symlink or a climb out and back in
/// (`../project/inc`); `None` for any other (the machine's own).
fn project_folder(root: &Path, dir: &str) -> Option<String> {
    let plain = match dir.strip_prefix('/') {
        Some(_) => Path::new(dir).strip_prefix(root).ok().and_then(Path::to_str),
        None => Some(dir),
    };
    let rel = match plain.and_then(crate::paths::normalize_rel) {
        Some(rel) => rel,
        None => {
            let real = std::fs::canonicalize(root.join(dir)).ok()?;
            crate::paths::normalize_rel(real.strip_prefix(root).ok()?.to_str()?)?
        }
    };
    Some(if rel == "." { String::new() } else { rel })
}
