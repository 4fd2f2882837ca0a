//! Reading a big gevulot.yaml on every core.
//!
//! YAML is read one event at a time, and a generated file of 10,000 targets is megabytes of it:
//! read on one core, it is most of a cold build's time to its first step. A file in the plain
//! block layout that generators and people write (a `targets:` line at column 0, then each
//! target a `name:` line at one indentation) is cut between targets into pieces, read at once
//! by the same serde derive as the whole file, and joined in order.
//!
//! Each piece is a YAML document of the file's exact length up to its end: the file's head (up
//! to and including the `targets:` line, so its vars are read by every piece), then the targets
//! before this piece with every byte but the line breaks (`\n`, and `\r`, which YAML also
//! counts as one) made a space (blank lines, which YAML skips), then the piece's own lines and
//! the indentation of the next piece's first line (so that a block scalar ending the piece spans
//! what it spans in the file). Every node therefore sits at the line, column and byte offset it
//! has in the file, and every span is the one the sequential read gives.
//!
//! Anything outside that layout is read sequentially, which also reports every error: no piece
//! is cut where YAML could carry a value across the cut (a line at the targets' indentation
//! always starts a new key of the `targets` map: a block scalar, a multi-line plain or quoted
//! scalar and a flow collection all continue on lines indented deeper, and a piece that ends
//! inside an unfinished one fails to read). A file is read sequentially when it is small, not
//! ASCII before its last piece, holds a second YAML document, names a top-level key or a target
//! twice, names a target with something other than a letter or `_` first (`11` and `0xB` are
//! one integer key), or when any piece fails to read: a syntax error, an alias (a piece may not
//! see the anchor the alias means, and the caps on aliases hold for the whole file), or a
//! budget breached (each piece gets an even share of every count the whole file may spend, so
//! whatever the whole file breaches, some piece does). The result is then exactly the
//! sequential read's.

use std::borrow::Cow;
use std::collections::HashSet;

use rayon::prelude::*;
use rustc_hash::FxHashSet;

use super::raw::RawFile;
use crate::yaml::read::yaml_budget;
#[cfg(test)]
use crate::yaml::read::yaml_options;

/// Smaller files are read sequentially: cutting costs more than it saves.
const MIN_BYTES: usize = 256 * 1024;
/// What skipping a blanked byte costs, against reading a byte of targets (callgrind's
/// instruction counts for the benchmark's 10,000-target file cut in two: 641 M for the piece
/// after 1.7 MB of blanks, 578 M for the one before).
const BLANK_COST: f64 = 0.1;
/// At most this many pieces: the blank lines of piece `k` cost a scan of the pieces before it.
const MAX_PIECES: usize = 8;

/// The file read in pieces on rayon's threads, or `None` when it must be read sequentially
/// (see the module docs); `Some` is exactly what the sequential fast path returns.
pub fn read(text: &str) -> Option<RawFile> {
    let pieces = rayon::current_num_threads().min(MAX_PIECES);
    if text.len() < MIN_BYTES || pieces < 2 {
        return None;
    }
    let layout = Layout::scan(text)?;
    let cuts = layout.cuts(text.len(), pieces);
    if cuts.is_empty() || !text.as_bytes()[..*cuts.last()?].is_ascii() {
        return None;
    }
    let mut starts = vec![0];
    starts.extend(&cuts);
    // A piece ends after the indentation of the next piece's first line (spaces): a block
    // scalar that ends the piece then spans what it spans in the whole file, up to that key.
    let mut ends: Vec<usize> = cuts.iter().map(|&c| c + layout.indent).collect();
    ends.push(text.len());
    let count = starts.len();
    let read: Vec<RawFile> = starts
        .par_iter()
        .zip(ends.par_iter())
        .map(|(&start, &end)| {
            let doc = match start {
                0 => Cow::Borrowed(&text[..end]),
                _ => Cow::Owned(layout.piece(text, start, end)),
            };
            serde_saphyr::from_str_with_options::<RawFile>(&doc, piece_options(text.len(), count)).ok()
        })
        .collect::<Option<Vec<_>>>()?;
    join(read)
}

/// The options each of `pieces` pieces of a file of `len` bytes is read with: the whole
/// file's budget ([`yaml_budget`]) with every count split evenly among the pieces, so that
/// whenever the whole file would breach a cap, some piece does too; and no alias at all, since
/// an alias in a piece may name an anchor the piece cannot see, and the caps on aliases
/// (their count, their ratio to anchors) hold for the whole file only.
fn piece_options(len: usize, pieces: usize) -> serde_saphyr::Options {
    let mut b = yaml_budget(len);
    let split = |n: usize| n / pieces;
    b.max_aliases = 0;
    b.max_anchors = split(b.max_anchors);
    b.max_events = split(b.max_events);
    b.max_nodes = split(b.max_nodes);
    b.max_merge_keys = split(b.max_merge_keys);
    b.max_total_scalar_bytes = split(b.max_total_scalar_bytes);
    b.max_recorded_anchor_events = split(b.max_recorded_anchor_events);
    b.max_recorded_anchor_bytes = split(b.max_recorded_anchor_bytes);
    b.max_total_property_interpolation_work = split(b.max_total_property_interpolation_work);
    serde_saphyr::options! { budget: Some(b) }
}

/// Where the `targets` map is and where it may be cut.
struct Layout {
    /// Byte offset just past the `targets:` line (its newline included).
    head_end: usize,
    /// Byte offsets of the lines, after the first target's, that start a target.
    starts: Vec<usize>,
    /// The targets' indentation, in spaces.
    indent: usize,
}

impl Layout {
    fn scan(text: &str) -> Option<Layout> {
        let mut head_end = None;
        let mut indent = None;
        let mut in_targets = false;
        let mut top_keys = HashSet::new();
        let mut starts = Vec::new();
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            let at = offset;
            offset += line.len();
            let body = line.trim_end_matches(['\n', '\r']);
            let content = body.trim_start_matches(' ');
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            if body.starts_with("---") || body.starts_with("...") || body.starts_with('%') {
                // A document marker or a directive: a marker may open the file, nothing more.
                if head_end.is_some() || !body.starts_with("---") || body.trim_end() != "---" {
                    return None;
                }
                continue;
            }
            let spaces = body.len() - content.len();
            if spaces == 0 {
                let key = plain_key(content)?;
                // `x-` keys hold anchors for the targets, which a piece could not see; and they
                // are read by the slower node reader anyway.
                if key.starts_with("x-") || !top_keys.insert(key) {
                    return None;
                }
                in_targets = key == "targets";
                if in_targets {
                    if !is_empty_rest(&content["targets:".len()..]) {
                        return None; // `targets: {...}` or a value on the same line
                    }
                    head_end = Some(offset);
                }
                continue;
            }
            if !in_targets {
                continue;
            }
            match indent {
                None => {
                    target_key(content)?;
                    indent = Some(spaces);
                }
                Some(i) if spaces == i => {
                    target_key(content)?;
                    starts.push(at);
                }
                Some(i) if spaces < i => return None,
                Some(_) => {}
            }
        }
        Some(Layout { head_end: head_end?, starts, indent: indent? })
    }

    /// Up to `pieces - 1` cut offsets, each at a target's line, that give the pieces about
    /// equal work: a piece reads its own bytes and skips the blanked bytes before it, which
    /// costs [`BLANK_COST`] of reading them.
    fn cuts(&self, len: usize, pieces: usize) -> Vec<usize> {
        let span = (len - self.head_end) as f64;
        // The ends of the pieces when each costs `work`, as offsets after the head.
        let ends = |work: f64| {
            let mut at = 0.0;
            let mut ends = Vec::with_capacity(pieces);
            for _ in 0..pieces {
                at += work - BLANK_COST * at;
                ends.push(at);
            }
            ends
        };
        // The least `work` at which the last piece reaches the end of the file (more work per
        // piece only moves every end further).
        let (mut low, mut high) = (0.0, span);
        for _ in 0..40 {
            let mid = (low + high) / 2.0;
            if ends(mid)[pieces - 1] >= span {
                high = mid;
            } else {
                low = mid;
            }
        }
        let mut cuts: Vec<usize> = Vec::new();
        for &end in &ends(high)[..pieces - 1] {
            let want = self.head_end + end as usize;
            let i = self.starts.partition_point(|&s| s < want);
            if let Some(&at) = self.starts.get(i) {
                if cuts.last().is_none_or(|&c| c < at) {
                    cuts.push(at);
                }
            }
        }
        cuts
    }

    /// The document for the piece `start..end`: head, blanked targets before
    /// it, its lines.
    fn piece(&self, text: &str, start: usize, end: usize) -> String {
        let mut doc = String::with_capacity(end);
        doc.push_str(&text[..self.head_end]);
        // `\r` stays: alone, YAML counts it as a line break.
        doc.extend(text[self.head_end..start].bytes().map(|b| match b {
            b'\n' | b'\r' => b as char,
            _ => ' ',
        }));
        doc.push_str(&text[start..end]);
        doc
    }
}

/// The key of a `key:` line (plain, unquoted), or `None` for anything else.
fn plain_key(content: &str) -> Option<&str> {
    let colon = content.find(':')?;
    let key = &content[..colon];
    let plain = !key.is_empty()
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !key.starts_with(['-', '.']);
    let rest = &content[colon + 1..];
    (plain && (rest.is_empty() || rest.starts_with(' '))).then_some(key)
}

/// The key of a target's line: a plain key that starts with a letter or `_`, so that it is
/// read as a string (`11` and `0xB` would be the same integer key) and two names are the same
/// key exactly when they are the same text.
fn target_key(content: &str) -> Option<&str> {
    plain_key(content).filter(|k| k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_'))
}

/// Whether what follows a key is nothing but spaces and a comment.
fn is_empty_rest(rest: &str) -> bool {
    let rest = rest.trim_start_matches(' ');
    rest.is_empty() || rest.starts_with('#')
}

/// Join the pieces' reads in order. Every top-level key other than `targets` is in the head
/// (read alike by every piece) or after the targets (read by the last piece only), so the first
/// piece's value stands unless it lacks one. `None` when a target name is in two pieces (a
/// name twice within one piece has already failed that piece's read).
fn join(pieces: Vec<RawFile>) -> Option<RawFile> {
    let count = pieces.iter().map(|p| p.targets.len()).sum();
    let mut names = FxHashSet::with_capacity_and_hasher(count, Default::default());
    if !pieces.iter().flat_map(|p| p.targets.keys()).all(|k| names.insert(k.value.as_str())) {
        return None;
    }
    drop(names);
    let mut pieces = pieces.into_iter();
    let mut file = pieces.next()?;
    file.targets.reserve(count - file.targets.len());
    for piece in pieces {
        // Every field by name: a new top-level field cannot be forgotten here.
        let RawFile { vars, default, targets, remote_cache, platform, x_keys: _, damaged } = piece;
        if damaged {
            return None;
        }
        if file.vars.is_empty() {
            file.vars = vars;
        }
        file.default = file.default.or(default);
        file.remote_cache = file.remote_cache.or(remote_cache);
        file.platform = file.platform.or(platform);
        file.targets.extend(targets);
    }
    Some(file)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Every construct a target can be written with, repeated past `MIN_BYTES`; `tail` ends the
    /// file. Target `i` is named `t{i}`.
    fn big_file(head: &str, target: impl Fn(usize) -> String, tail: &str) -> String {
        let mut text = head.to_string();
        let mut i = 0;
        while text.len() < 3 * MIN_BYTES {
            text.push_str(&target(i));
            i += 1;
        }
        text.push_str(tail);
        text
    }

    fn varied(i: usize) -> String {
        format!(
            "  t{i}:   # a comment after the key\n    description: \"quoted: with a colon\"\n    deps: [{dep}]\n# a comment at column 0\n    inputs:\n      - src/t{i}.txt\n      - 'src/h/*.h'\n    outputs: [out/t{i}.txt]\n    env: {{LC_ALL: C, N: \"{i}\"}}\n    run: |\n      cat src/t{i}.txt > out/t{i}.txt\n      echo '  t{i}: not a key' >> out/t{i}.txt\n\n    depfile: &d{i} out/t{i}.d\n    pass_env:\n    - HOME\n    tools: [sh]\n  # an indented comment\r  # after a lone CR, which YAML counts as a line break\n  g{i}:\n    deps:\n      - t{i}\n    description: >\n      a group ending in a block scalar,\n      so that every cut follows one\n\n",
            dep = if i == 0 { String::new() } else { format!("t{}", i - 1) },
        )
    }

    fn sequential(text: &str) -> String {
        format!("{:?}", serde_saphyr::from_str_with_options::<RawFile>(text, yaml_options(text)).unwrap())
    }

    fn in_pieces(text: &str) -> Option<RawFile> {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
        pool.install(|| read(text))
    }

    #[test]
    fn pieces_read_as_the_whole_file_spans_included() {
        let head = "---\n# head\nvars:\n  v: one\ndefault: all\nplatform: {os: debian-12}\ntargets:   # the targets\n";
        let text = big_file(head, varied, "remote_cache: http://127.0.0.1:9/cache\n");
        let layout = Layout::scan(&text).unwrap();
        assert_eq!(layout.cuts(text.len(), 4).len(), 3, "cut into four pieces");
        let joined = in_pieces(&text).expect("read in pieces");
        assert_eq!(format!("{joined:?}"), sequential(&text));
        // With CRLF line ends, and with the vars after the targets.
        let crlf = text.replace('\n', "\r\n");
        assert_eq!(format!("{:?}", in_pieces(&crlf).unwrap()), sequential(&crlf));
        let late = big_file("targets:\n", varied, "vars:\n  v: two\ndefault: all\n");
        assert_eq!(format!("{:?}", in_pieces(&late).unwrap()), sequential(&late));
    }

    #[test]
    fn what_a_piece_cannot_read_alone_is_read_sequentially() {
        // An alias now and then to an anchor of the first target, or to one of the head that
        // the first target makes again (an alias means the latest): the whole file is valid
        // YAML, but a later piece cannot see that anchor.
        for (head, first) in [
            ("targets:\n", "  t0:\n    run: &c echo first\n"),
            ("vars:\n  cmd: &c echo head\ntargets:\n", "  t0:\n    run: &c echo again\n"),
        ] {
            let alias = big_file(
                head,
                |i| match i {
                    0 => first.to_string(),
                    _ if i % 2000 == 1999 => format!("  t{i}:\n    run: *c\n"),
                    _ => format!("  t{i}:\n    run: echo {i}\n"),
                },
                "",
            );
            sequential(&alias);
            assert!(in_pieces(&alias).is_none(), "{head:?}");
        }
        // A target name used twice, far apart.
        let twice = big_file("targets:\n", |i| format!("  t{}:\n    run: echo {i}\n", i % 9000), "");
        assert!(in_pieces(&twice).is_none());
        // Anchors kept under an `x-` key; a top-level key twice; a second document; a target
        // key that is quoted; a line less indented than the targets; non-ASCII text.
        let plain = |i| format!("  t{i}:\n    run: echo {i}\n");
        for (head, tail) in [
            ("x-common: &c {run: x}\ntargets:\n", ""),
            ("default: a\ntargets:\n", "default: b\n"),
            ("targets:\n", "---\ntargets: {}\n"),
            ("targets:\n  \"q\": {run: x}\n", ""),
            ("targets:\n    deep: {run: x}\n", ""),
            ("vars: {v: é}\ntargets:\n", ""),
            ("targets:\n  11: {run: x}\n", "  0xB: {run: y}\n"),
        ] {
            assert!(in_pieces(&big_file(head, plain, tail)).is_none(), "{head:?} {tail:?}");
        }
        // Every cap on counts is split among the pieces, so what the whole file breaches, a
        // piece does; and a piece takes no alias.
        let (whole, piece) = (yaml_budget(1 << 20), piece_options(1 << 20, 4).budget.unwrap());
        assert_eq!(piece.max_aliases, 0);
        for (w, p) in [
            (whole.max_anchors, piece.max_anchors),
            (whole.max_nodes, piece.max_nodes),
            (whole.max_events, piece.max_events),
            (whole.max_merge_keys, piece.max_merge_keys),
            (whole.max_total_scalar_bytes, piece.max_total_scalar_bytes),
        ] {
            assert_eq!(p, w / 4);
        }
        // And a small file is not worth the cutting.
        assert!(in_pieces("targets:\n  t:\n    run: x\n").is_none());
    }
}
