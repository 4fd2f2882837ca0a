//! Which declared outputs an input may read: the matching behind inferred dependencies.
//!
//! An input is matched against the other targets' *declared outputs*, never against the disk,
//! so a clean tree and a built one infer the same edges. Outputs are files or folders (nothing
//! says which), so every output counts as a possible folder. An input may read an output when:
//!
//! - a file or folder input equals the output, lies inside it, or contains it;
//! - a glob could match the output or a path below it, or the glob's literal base (the folders
//!   before its first wildcard, which is where expansion walks) lies inside the output.
//!
//! Doubt adds the edge: a `**` matches anything below, and a glob whose braces or brackets
//! hold a `/` counts as matching everything below its base. Absolute inputs never match.
//!
//! # Cost
//! Outputs sit in one sorted map (`path -> (target, output)`), built once in `O(O log O)` for
//! `O` outputs. A literal input costs `O(d log O + h)`: the exact path and its `d` ancestors are
//! lookups and the outputs below it are one range, `h` being the outputs it hits. A glob walks
//! the range of paths that start with its base and the literal lead of its first wildcard
//! component (`out/t_1` for `out/t_1*.txt`), component by component, and skips a whole subtree
//! when a component fails (one more range lookup), so it costs `O((d + s) log O + h)`, where `s`
//! is the number of subtrees skipped. The worst case is a glob with no lead (`out/*.txt`) over a
//! flat folder of many outputs: every output in that folder is one step. Nothing is compiled per
//! output; a wildcard component is compiled once per input, and only when it is not one of the
//! common shapes `*`, `*.ext` or a literal.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::paths::is_glob;

/// Why an input's glob cannot be matched against the outputs.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(transparent)]
    Glob(#[from] globset::Error),
}

/// Every declared output by path: (target, index of the output in that target's outputs).
pub type Owners<'a> = BTreeMap<&'a str, (usize, usize)>;

/// The outputs that `input` (a project-relative path, a folder, or a glob) may read, appended
/// to `hits` as (target, output index). `Err` when the glob does not parse.
pub fn hits(
    owners: &Owners,
    input: &str,
    glob: bool,
    hits: &mut Vec<(usize, usize)>,
) -> Result<(), InferError> {
    if input.starts_with('/') {
        return Ok(());
    }
    if !glob {
        inside_or_equal(owners, input, hits);
        hits.extend(starting_with(owners, &folder_prefix(input), Bound::Unbounded).map(|(_, &h)| h));
        return Ok(());
    }
    let pattern = Pattern::parse(input)?;
    if pattern.base != "." {
        inside_or_equal(owners, &pattern.base, hits);
    }
    // Walk the outputs below the base whose next component starts with the first wildcard
    // component's literal lead (`t_1` of `t_1*.txt`), skipping subtrees that cannot match.
    let prefix = folder_prefix(&pattern.base) + &pattern.lead;
    let mut from: Bound<String> = Bound::Unbounded;
    while let Some((&path, &hit)) = starting_with(owners, &prefix, from.as_ref().map(String::as_str)).next() {
        let rest = if pattern.base == "." { path } else { &path[pattern.base.len() + 1..] };
        from = match pattern.walk(rest) {
            Walk::Hit => {
                hits.push(hit);
                Bound::Excluded(path.to_string())
            }
            Walk::Miss(n) => {
                // The first `n` components of `rest` cannot lead to a match: skip every path
                // below them. When `path` is that prefix itself, only `path` is skipped, since
                // `prefix.txt` sorts between `prefix` and `prefix/...` and may match.
                let prefix_len =
                    rest.split('/').take(n).map(|c| c.len() + 1).sum::<usize>().saturating_sub(1);
                let prefix = &path[..path.len() - rest.len() + prefix_len];
                if prefix.len() == path.len() {
                    Bound::Excluded(path.to_string())
                } else {
                    Bound::Included(format!("{prefix}0"))
                }
            }
        };
    }
    Ok(())
}

/// Outputs equal to `path` or holding it (an output folder it lies in).
fn inside_or_equal(owners: &Owners, path: &str, hits: &mut Vec<(usize, usize)>) {
    if let Some(&h) = owners.get(path) {
        hits.push(h);
    }
    for anc in ancestors(path) {
        if let Some(&h) = owners.get(anc) {
            hits.push(h);
        }
    }
}

/// `path/`, or nothing for the project folder `.`: what every path below it starts with.
fn folder_prefix(path: &str) -> String {
    if path == "." {
        String::new()
    } else {
        format!("{path}/")
    }
}

/// The outputs whose path starts with `prefix`, from `from` on.
fn starting_with<'m, 'a>(
    owners: &'m Owners<'a>,
    prefix: &str,
    from: Bound<&str>,
) -> std::collections::btree_map::Range<'m, &'a str, (usize, usize)> {
    // Every path that starts with `prefix` sorts in `[prefix, prefix + U+10FFFF)`.
    let hi = if prefix.is_empty() { None } else { Some(format!("{prefix}\u{10ffff}")) };
    let lo = match from {
        Bound::Included(f) if f > prefix => Bound::Included(f),
        Bound::Excluded(f) if f >= prefix => Bound::Excluded(f),
        _ => Bound::Included(prefix),
    };
    let hi = hi.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
    if matches!((lo, hi), (Bound::Included(l) | Bound::Excluded(l), Bound::Excluded(h)) if l >= h) {
        return owners.range::<str, _>((Bound::Excluded(""), Bound::Included("")));
    }
    owners.range::<str, _>((lo, hi))
}

/// Proper ancestors of a relative path: `a/b/c` -> `a/b`, `a`.
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.char_indices().filter(|&(_, c)| c == '/').map(move |(i, _)| &path[..i])
}

/// A glob split into its literal base and one matcher per component after it.
struct Pattern {
    /// The folders before the first wildcard component, `.` when there are none.
    base: String,
    /// The literal start of the first wildcard component (`t_1` of `t_1*.txt`).
    lead: String,
    parts: Vec<Part>,
}

enum Part {
    Literal(String),
    /// `*`: any one component.
    Star,
    /// `*.ext`: any component ending so.
    StarSuffix(String),
    Other(globset::GlobMatcher),
    /// `**` (or anything that may cross a `/`): anything below.
    AnyDepth,
}

enum Walk {
    /// The path matches, or it may be a folder holding a match.
    Hit,
    /// The path's first `n` components already rule out a match below them.
    Miss(usize),
}

impl Pattern {
    fn parse(glob: &str) -> Result<Pattern, InferError> {
        let build = |text: &str| globset::GlobBuilder::new(text).literal_separator(true).build();
        build(glob)?;
        let comps: Vec<&str> = glob.split('/').collect();
        let k = comps.iter().take_while(|c| !is_glob(c)).count();
        let base = if k == 0 { ".".to_string() } else { comps[..k].join("/") };
        let first = comps.get(k).copied().unwrap_or("");
        let lead = first[..first.find(['*', '?', '[', '{', '\\']).unwrap_or(first.len())].to_string();
        if slash_inside_group(glob) {
            return Ok(Pattern { base, lead, parts: vec![Part::AnyDepth] });
        }
        let mut parts = Vec::with_capacity(comps.len() - k);
        for c in &comps[k..] {
            let rest = c.strip_prefix('*').filter(|r| !is_glob(r) && !r.contains('\\'));
            parts.push(if c.contains("**") {
                Part::AnyDepth
            } else if !is_glob(c) && !c.contains('\\') {
                Part::Literal(c.to_string())
            } else if let Some(suffix) = rest {
                if suffix.is_empty() {
                    Part::Star
                } else {
                    Part::StarSuffix(suffix.to_string())
                }
            } else {
                Part::Other(build(c)?.compile_matcher())
            });
        }
        Ok(Pattern { base, lead, parts })
    }

    /// Match `rest` (a path below the base, relative to it) component by component.
    fn walk(&self, rest: &str) -> Walk {
        let mut comps = rest.split('/');
        for (j, part) in self.parts.iter().enumerate() {
            let Some(c) = comps.next() else {
                // The pattern goes deeper than the path: the path may be a folder holding a match.
                return Walk::Hit;
            };
            let ok = match part {
                Part::AnyDepth => return Walk::Hit,
                Part::Literal(l) => c == l,
                Part::Star => true,
                Part::StarSuffix(s) => c.ends_with(s.as_str()),
                Part::Other(m) => m.is_match(c),
            };
            if !ok {
                return Walk::Miss(j + 1);
            }
        }
        match comps.next() {
            None => Walk::Hit,
            Some(_) => Walk::Miss(self.parts.len()),
        }
    }
}

/// Whether a `/` sits inside `{...}` or `[...]`, where splitting on `/` would cut a group.
fn slash_inside_group(glob: &str) -> bool {
    let (mut braces, mut bracket) = (0usize, false);
    for c in glob.chars() {
        match c {
            '[' => bracket = true,
            ']' => bracket = false,
            '{' => braces += 1,
            '}' => braces = braces.saturating_sub(1),
            '/' if bracket || braces > 0 => return true,
            _ => {}
        }
    }
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Which of `outputs` (one target each) `input` hits, by output path, sorted.
    fn hit(outputs: &[&'static str], input: &str) -> Vec<&'static str> {
        let owners: Owners = outputs.iter().enumerate().map(|(i, &o)| (o, (i, 0))).collect();
        let mut h = Vec::new();
        hits(&owners, input, is_glob(input), &mut h).unwrap();
        let mut v: Vec<&str> = h.into_iter().map(|(t, _)| outputs[t]).collect();
        v.sort_unstable();
        v
    }

    const OUTS: &[&str] = &[
        "build/a.h",
        "build/a.txt",
        "build/a/x.h",
        "build/gen",
        "build/inc/deep/v.h",
        "gen/src",
        "out.bin",
        "src/generated",
    ];

    #[test]
    fn literal_inputs_hit_equal_containing_and_contained_outputs() {
        assert_eq!(hit(OUTS, "build/a.h"), ["build/a.h"]);
        assert_eq!(hit(OUTS, "build/gen/sub/file.c"), ["build/gen"]);
        assert_eq!(hit(OUTS, "build/inc"), ["build/inc/deep/v.h"]);
        assert_eq!(hit(OUTS, "build/a"), ["build/a/x.h"]);
        assert_eq!(hit(OUTS, "build/ab"), Vec::<&str>::new());
        assert_eq!(hit(OUTS, "."), OUTS);
        assert_eq!(hit(OUTS, "/usr/include/build/a.h"), Vec::<&str>::new());
    }

    #[test]
    fn globs_hit_matching_outputs_and_folders_that_may_hold_matches() {
        assert_eq!(hit(OUTS, "build/*.h"), ["build/a.h"]);
        // Any output one level down may be a folder holding a `*.h`; `deep` is one too many.
        assert_eq!(hit(OUTS, "build/*/*.h"), ["build/a.h", "build/a.txt", "build/a/x.h", "build/gen"]);
        assert_eq!(
            hit(OUTS, "build/**/*.h"),
            ["build/a.h", "build/a.txt", "build/a/x.h", "build/gen", "build/inc/deep/v.h"]
        );
        // The base lies inside an output folder.
        assert_eq!(hit(OUTS, "gen/src/**/*.rs"), ["gen/src"]);
        assert_eq!(hit(OUTS, "src/generated/*.c"), ["src/generated"]);
        assert_eq!(hit(OUTS, "src/*.c"), Vec::<&str>::new());
        assert_eq!(hit(OUTS, "*.bin"), ["out.bin"]);
        assert_eq!(hit(OUTS, "*.txt"), Vec::<&str>::new());
        assert_eq!(hit(OUTS, "build/a.{h,c}"), ["build/a.h"]);
        assert_eq!(hit(OUTS, "build/a?h"), ["build/a.h"]);
        assert_eq!(hit(OUTS, "build/[g]en/x"), ["build/gen"]);
        // A group holding a `/`: everything below the base, to be safe.
        assert_eq!(hit(OUTS, "src/{a/b,c}"), ["src/generated"]);
        assert_eq!(hit(OUTS, "lib/*.so"), Vec::<&str>::new());
    }

    #[test]
    fn a_failed_component_skips_its_subtree_but_not_its_siblings() {
        let outs = &["a/b", "a/b.h", "a/b/c/d", "a/b/e", "a/bz.h", "a/c.h"];
        assert_eq!(hit(outs, "a/*.h"), ["a/b.h", "a/bz.h", "a/c.h"]);
        assert_eq!(hit(outs, "a/*/c/*"), ["a/b", "a/b.h", "a/b/c/d", "a/bz.h", "a/c.h"]);
        assert_eq!(hit(outs, "a/b*.h"), ["a/b.h", "a/bz.h"]);
        assert_eq!(hit(outs, "a/b?/x"), Vec::<&str>::new());
        assert_eq!(hit(outs, "a/b{.h,z.h}"), ["a/b.h", "a/bz.h"]);
    }

    #[test]
    fn an_invalid_glob_is_an_error() {
        let owners = Owners::new();
        assert!(hits(&owners, "src/[a", true, &mut Vec::new()).is_err());
    }
}
