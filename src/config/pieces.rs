//! Reading a big gevulot.yaml on every core.
//!
//! A generated file of 10,000 targets is megabytes of YAML, and YAML is read one event at a
//! time: on one core its reading is most of a cold build's time to its first step. Where the
//! file is in the block layout generators and people write, the `targets` map is cut between
//! targets and the parts are read at once, each by the same reader as the whole file
//! ([`read::read_part`]), with every place the file's own.
//!
//! The layout: a `targets:` line at column 0 with nothing after it; after it, to the end of the
//! file, only blank lines, comments and lines indented by at least the first target's
//! indentation (so `targets` is the last top-level key). A line at exactly that indentation
//! whose text starts a key always starts a new target: a block scalar, a multi-line plain or
//! quoted scalar and a flow collection all continue on lines indented deeper, and a part that
//! ends inside an unfinished one fails to read. Each part is a YAML block map at that
//! indentation, read where it stands in the file. The top-level keys before `targets:` are read
//! on their own, with `targets: {}` in place of the map.
//!
//! Anything else is read whole, which is also what reports errors: a small file; a file not in
//! that layout; any part that does not read cleanly (a syntax error, a wrong value, an alias
//! whose anchor is in another part, a budget breached); parts whose events add up to more than
//! the whole file's limit; or a target name in two parts. A part's depths are counted from
//! the targets map's (one below the top), its places are the file's, and its anchors and
//! aliases are its own, as in the whole file; so what this returns is what reading the whole
//! file returns, and a file this reads, the whole read would accept too.

use rayon::prelude::*;
use rustc_hash::FxHashSet;

use super::raw::{RawFile, RawTarget};
use crate::diag::Source;
use crate::yaml::events::Events;
use crate::yaml::read::{self, At};
use crate::yaml::Spanned;

/// Smaller files are read whole: cutting costs more than it saves.
const MIN_BYTES: usize = 256 * 1024;

type Targets = indexmap::IndexMap<Spanned<String>, Spanned<RawTarget>>;

/// The file read in parts on rayon's threads, or `None` when it must be read whole (see the
/// module docs).
pub(super) fn read(source: &Source) -> Option<RawFile> {
    let text = source.text.as_str();
    let parts = rayon::current_num_threads();
    if text.len() < MIN_BYTES || parts < 2 {
        return None;
    }
    let layout = Layout::scan(text)?;
    let ranges = layout.ranges(text.len(), parts);
    if ranges.len() < 2 {
        return None;
    }
    let head = format!("{}targets: {{}}\n", &text[..layout.targets_line]);
    let targets_at = At::Field(&At::Top, "targets");
    let what = "a map of target names to targets";
    // The targets map is a map inside the top-level one: its parts start 1 deep.
    let (head, parts) = rayon::join(
        || read::read_part::<RawFile>(source, &head, (0, 0), At::Top, "a map"),
        || {
            ranges
                .par_iter()
                .map(|r| read::read_part::<Targets>(source, &text[r.clone()], (r.start, 1), targets_at, what))
                .collect::<Option<Vec<_>>>()
        },
    );
    let ((mut file, head_events), parts) = (head?, parts?);
    // Each part had a budget of its own: together they keep the whole file's.
    let events: usize = head_events + parts.iter().map(|(_, n)| n).sum::<usize>();
    if events > Events::limit(text.len()) {
        return None;
    }
    let mut names = FxHashSet::default();
    file.targets.reserve(parts.iter().map(|(p, _)| p.len()).sum());
    for (part, _) in parts {
        for (name, target) in part {
            if !names.insert(name.value.clone()) {
                return None;
            }
            file.targets.insert(name, target);
        }
    }
    Some(file)
}

/// Where the targets are, and where they may be cut.
struct Layout {
    /// Byte offset of the `targets:` line.
    targets_line: usize,
    /// Byte offset of the first target's line.
    first: usize,
    /// Byte offsets of the other lines that start a target.
    starts: Vec<usize>,
    /// The targets' indentation, in spaces.
    indent: usize,
}

impl Layout {
    fn scan(text: &str) -> Option<Layout> {
        let mut offset = 0;
        let mut targets_line = None;
        let mut first = None;
        let mut indent = 0;
        let mut starts = Vec::new();
        for line in text.split_inclusive('\n') {
            let at = offset;
            offset += line.len();
            let body = line.trim_end_matches(['\n', '\r']);
            let content = body.trim_start_matches(' ');
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let spaces = body.len() - content.len();
            let Some(_) = targets_line else {
                if spaces == 0 && is_targets_line(content) {
                    targets_line = Some(at);
                }
                continue;
            };
            if first.is_none() {
                if spaces == 0 || !starts_a_key(content) {
                    return None;
                }
                first = Some(at);
                indent = spaces;
                continue;
            }
            if spaces < indent {
                return None;
            }
            if spaces == indent {
                if !starts_a_key(content) {
                    return None;
                }
                starts.push(at);
            }
        }
        Some(Layout { targets_line: targets_line?, first: first?, starts, indent })
    }

    /// At most `parts` byte ranges of about the same size that together hold every target.
    /// A range ends after the indentation of the next one's first line (spaces, which YAML
    /// skips): a block scalar that ends the range then spans what it spans in the whole file.
    fn ranges(&self, len: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
        let size = (len - self.first).div_ceil(parts);
        let mut out = Vec::with_capacity(parts);
        let mut start = self.first;
        for &cut in &self.starts {
            if cut - start >= size && out.len() + 1 < parts {
                out.push(start..cut + self.indent);
                start = cut;
            }
        }
        out.push(start..len);
        out
    }
}

/// `targets:`, with nothing after it but a comment.
fn is_targets_line(content: &str) -> bool {
    content.strip_prefix("targets:").is_some_and(|rest| {
        let rest = rest.trim_start();
        rest.is_empty() || rest.starts_with('#')
    })
}

/// A line that starts a target's key: a plain name and a colon (`name:`), not a list entry,
/// flow collection, quoted key, block scalar indicator, anchor, alias, tag or directive.
fn starts_a_key(content: &str) -> bool {
    let name_end = content.find(':').unwrap_or(0);
    name_end > 0
        && content[..name_end].bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && content.as_bytes()[0].is_ascii_alphabetic()
        && matches!(content.as_bytes().get(name_end + 1), None | Some(b' ' | b'\r'))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn big(n: usize) -> String {
        let mut yaml = String::from("# generated\nvars: { cc: gcc }\ndefault: t0\ntargets:\n");
        for i in 0..n {
            yaml.push_str(&format!(
                "  t{i}:\n    deps: [{}]\n    outputs: [out/t{i}.txt]\n    run: |\n      echo {i} > out/t{i}.txt\n\n",
                if i == 0 { String::new() } else { format!("t{}", i - 1) }
            ));
        }
        yaml
    }

    /// Read in parts, the file is what reading it whole gives, every place included.
    #[test]
    fn parts_read_what_the_whole_file_reads() {
        let yaml = big(6000);
        assert!(yaml.len() > MIN_BYTES);
        let source = Source::new("gevulot.yaml", yaml.as_str());
        let layout = Layout::scan(&yaml).unwrap();
        assert_eq!(layout.ranges(yaml.len(), 2).len(), 2);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let parts = pool.install(|| read(&source)).unwrap();
        let (whole, errors) = read::read::<RawFile>(&source, "a map").unwrap();
        assert!(errors.is_empty());
        let (parts, whole) = (format!("{parts:#?}"), format!("{whole:#?}"));
        let differ = parts.lines().zip(whole.lines()).enumerate().find(|(_, (a, b))| a != b);
        assert!(differ.is_none() && parts.len() == whole.len(), "first difference: {differ:?}");
    }

    #[test]
    fn what_is_not_in_the_layout_is_read_whole() {
        let yaml = big(6000);
        let source = |text: String| Source::new("gevulot.yaml", text);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        for (why, text) in [
            ("a key after the targets", format!("{yaml}platform: {{ os: x }}\n")),
            ("a flow map of targets", yaml.replace("targets:\n", "targets: # c\n  {}\n")),
            ("a target in two parts", format!("{yaml}  t1:\n    run: echo\n")),
            (
                "an alias to another part",
                yaml.replace("outputs: [out/t1.txt]", "outputs: &one [out/t1.txt]")
                    + "  z:\n    outputs: *one\n",
            ),
            (
                "a syntax error near the end",
                yaml.replace("outputs: [out/t5990.txt]", "outputs: [out/t5990.txt"),
            ),
            ("a wrong value", yaml.replace("deps: [t5000]", "deps: t5000")),
        ] {
            assert!(pool.install(|| read(&source(text))).is_none(), "{why}");
        }
        assert!(pool.install(|| read(&source(format!("{yaml}# a comment\n")))).is_some());

        // Nesting is counted from the file's top, as in the whole read: both accept the same
        // depths of merged maps in a target, and refuse the same.
        let deep = |n: usize| {
            let merges = format!("{}{{description: deep}}{}", "{<<: ".repeat(n), "}".repeat(n));
            yaml.replace("    deps: [t3000]\n", &format!("    deps: [t3000]\n    <<: {merges}\n"))
        };
        let whole = |text: &str| matches!(read::read::<RawFile>(&source(text.to_string()), "a map"), Ok((_, e)) if e.is_empty());
        let verdicts: Vec<(bool, bool)> =
            (55..65).map(|n| (whole(&deep(n)), pool.install(|| read(&source(deep(n)))).is_some())).collect();
        assert!(verdicts.iter().all(|(w, p)| w == p), "{verdicts:?}");
        assert!(verdicts.contains(&(true, true)) && verdicts.contains(&(false, false)), "{verdicts:?}");
    }
}
