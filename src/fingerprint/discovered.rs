//! Discovered inputs: the files a step's depfile names (or the libraries the stage step's ELF
//! closure resolved), and the lookups that could now find a different file.
//!
//! # What is keyed
//!
//! For a list of discovered files, the full key holds:
//!
//! - **each file's identity**: digest, executable bit and size; a file that no longer exists is
//!   keyed as [`ABSENT`], so it can never match a result that was made while it existed;
//! - **one lookup fact per search folder**: which of the names the step could have looked up
//!   exist there. The names are every path suffix of every discovered file (`include/sub/x.h`
//!   gives `x.h`, `sub/x.h` and `include/sub/x.h`), since an `#include "sub/x.h"` resolved in
//!   one folder is shadowed by the same suffix in a folder searched earlier. The search folders
//!   are the folders the command names with `-I`, `-iquote`, `-isystem`, `-idirafter`,
//!   `-iwithprefixbefore`, `-F`, `--include-directory`, `--include-directory-after`,
//!   `--include-path` or `--system-include` (also glued, `-IDIR`, or with `=`), the stage step's
//!   `search` folders and every folder its library search consulted (RPATH, RUNPATH,
//!   ld.so.conf, the default folders: recorded in the list as [`SEARCHED`] entries), and every
//!   project folder that holds a discovered file (the includer's own folder is searched first
//!   for `#include "..."`).
//!
//! A header added to, removed from, or moved between any of those folders therefore changes the
//! full key, as does an edited one. Lookups that no depfile records (a failed
//! `__has_include` of a name no other include shares, `test -e` of a file beside the input)
//! are covered only where a sandboxed step's lazy view saw them: it adds each path it looked up
//! among the files it may discover as a [`LOOKED`] entry, keyed as the view would show it
//! ([`Shown`]: a file with its content, a folder, or nothing). Elsewhere, name the folder under
//! `inputs:`.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::hash::{abs_of, FileId, Listing, StatCache};

/// A list entry that names a folder the step searched rather than a file it read (the stage
/// step's library search: RPATH, `search`, RUNPATH, ld.so.conf and default folders). No path
/// holds a NUL, so no file name can look like one.
pub const SEARCHED: &str = "\0searched ";

/// The list entry for search folder `dir`.
pub fn searched_entry(dir: &str) -> String {
    format!("{SEARCHED}{dir}")
}

/// A list entry that names a path a sandboxed step looked up among the files it may discover
/// (found or not) rather than one its depfile lists: keyed as a file is, but no read of it
/// (so no other target's output it must be ordered after, and nothing to show it next time).
pub const LOOKED: &str = "\0looked up ";

/// The list entry for project path `p`, looked up, with the folder walked for files to
/// discover that it lies in, at or above (`None`: a file only the last depfile listed).
pub fn looked_entry(p: &str, walked: Option<&str>) -> String {
    match walked {
        Some(w) => format!("{LOOKED}{p}\0{w}"),
        None => format!("{LOOKED}{p}"),
    }
}

/// What a sandboxed step's view shows at a looked-up path now, by the walk of the folder its
/// [`LOOKED`] entry names ([`identities`]' `shown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// A file to discover.
    File,
    /// A folder that holds one.
    Folder,
    /// Nothing (what is on disk there, if anything, is ignored by git, written by a target, or
    /// holds no file to discover).
    Nothing,
}

/// The files of a discovered list: its entries other than search folders and lookups.
pub fn files(list: &[String]) -> impl Iterator<Item = &String> {
    list.iter().filter(|p| !p.starts_with(SEARCHED) && !p.starts_with(LOOKED))
}

/// The paths a discovered list's lookup entries name ([`LOOKED`]), with their walked folders.
pub fn looked(list: &[String]) -> impl Iterator<Item = (&str, Option<&str>)> {
    list.iter().filter_map(|p| p.strip_prefix(LOOKED)).map(|e| match e.split_once('\0') {
        Some((p, w)) => (p, Some(w)),
        None => (e, None),
    })
}

/// The identity of a discovered file that does not exist. No real file has this size.
pub const ABSENT: FileId = FileId { digest: [0; 32], exec: false, size: u64::MAX };

/// The folders a command names as include search folders, in command order, each once.
/// Words are split as a shell would split plain words and simple quotes; a folder given through
/// a shell variable or a response file is not seen.
pub fn command_search_dirs(command: &str) -> Vec<String> {
    const FLAGS: &[&str] = &[
        "-I",
        "-iquote",
        "-isystem",
        "-idirafter",
        "--include-path",
        "--include-directory",
        "--include-directory-after",
        "--system-include",
        "-iwithprefixbefore",
        "-F",
    ];
    // Every flag above starts with `-I`, `-i`, `-F`, `--include` or `--system-include`: a
    // command with none of them (most) is not split into words at all.
    if !["-I", "-i", "-F", "--include", "--system-include"].iter().any(|f| command.contains(f)) {
        return Vec::new();
    }
    let words = shell_words(command);
    let mut out: Vec<String> = Vec::new();
    let mut push = |d: &str| {
        if !d.is_empty() && !out.iter().any(|o| o == d) {
            out.push(d.to_string());
        }
    };
    let mut i = 0;
    while i < words.len() {
        let w = words[i].as_str();
        if FLAGS.contains(&w) {
            if let Some(next) = words.get(i + 1).filter(|n| !n.starts_with('-')) {
                push(next);
            }
            i += 2;
            continue;
        }
        if let Some(rest) =
            ["--include-path=", "--include-directory=", "--include-directory-after=", "--system-include="]
                .iter()
                .find_map(|f| w.strip_prefix(f))
        {
            push(rest);
        } else if let Some(rest) = FLAGS.iter().find_map(|f| w.strip_prefix(f).filter(|r| !r.is_empty())) {
            if !rest.starts_with('-') {
                push(rest.strip_prefix('=').unwrap_or(rest));
            }
        }
        i += 1;
    }
    out
}

/// Split a command into words: whitespace separates, single and double quotes group, a
/// backslash escapes the next character. Operators (`;`, `&&`, `|`) stay inside words, which
/// only matters for flags glued to them.
fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    in_word = true;
                }
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// The identities of a discovered list (see the module docs): one entry per file, then one
/// `lookups in DIR` fact per search folder.
///
/// `search` holds folders as the command names them (project-relative or absolute). `shown(walked,
/// path)` says what a sandboxed step's view would show at a [`LOOKED`] path now. Errors are
/// reads that failed for another reason than absence (permissions, a FIFO).
pub fn identities(
    root: &Path,
    list: &[String],
    search: &[String],
    stat: &StatCache,
    shown: &dyn Fn(&str, &str) -> Shown,
) -> io::Result<BTreeMap<String, FileId>> {
    let mut ids = BTreeMap::new();
    let constant = |what: &[u8]| FileId { digest: *blake3::hash(what).as_bytes(), exec: false, size: 0 };
    // (A path both listed and looked up has one identity.)
    let looked = looked(list).map(|(p, w)| (p, Some(w)));
    for (p, only_looked) in files(list).map(|p| (p.as_str(), None)).chain(looked) {
        // A looked-up path is keyed as the view would show it now: what the view hides there
        // (a folder of ignored files, say) is nothing, whatever is on disk.
        match only_looked.flatten().map(|w| shown(w, p)) {
            Some(Shown::Nothing) => {
                ids.insert(p.to_string(), ABSENT);
                continue;
            }
            Some(Shown::Folder) => {
                ids.insert(p.to_string(), constant(b"folder"));
                continue;
            }
            Some(Shown::File) | None => {}
        }
        let only_looked = only_looked.is_some();
        let id = match stat.meta(root, p, true) {
            Ok(meta) if meta.is_file() => stat.file_id_in(root, p, &meta)?,
            Ok(meta) if meta.is_dir() => constant(b"folder"),
            // Only looked up (a FIFO `test -e` found): no content was read.
            Ok(_) if only_looked => constant(b"other"),
            Ok(_) => return Err(io::Error::other(format!("discovered input {p} is not a regular file"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => {
                ABSENT
            }
            // A symlink loop, say.
            Err(e) if only_looked => constant(format!("unreadable {:?}", e.kind()).as_bytes()),
            Err(e) => return Err(e),
        };
        ids.insert(p.to_string(), id);
    }
    if ids.is_empty() {
        return Ok(ids);
    }
    let recorded_search = list.iter().filter_map(|p| p.strip_prefix(SEARCHED));
    let mut dirs: BTreeSet<Cow<str>> = BTreeSet::new();
    for d in search.iter().map(String::as_str).chain(recorded_search) {
        let d = d.trim_end_matches('/');
        let d = if d.is_empty() { "/" } else { d };
        let d = if d.starts_with('/') {
            Cow::Borrowed(d)
        } else {
            crate::paths::normalize_rel(d).map_or(Cow::Borrowed(d), Cow::Owned)
        };
        dirs.insert(d);
    }
    for p in files(list).filter(|p| !p.starts_with('/')) {
        dirs.insert(Cow::Borrowed(match p.rfind('/') {
            Some(i) => &p[..i],
            None => ".",
        }));
    }
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for p in files(list) {
        let trimmed = p.trim_start_matches('/');
        names.insert(trimmed);
        for (i, c) in trimmed.char_indices() {
            if c == '/' {
                names.insert(&trimmed[i + 1..]);
            }
        }
    }
    let mut listings = rustc_hash::FxHashMap::default();
    for dir in dirs {
        let base = abs_of(root, &dir);
        let mut w = super::encode::KeyWriter::new(b"gvbuild lookups\0");
        let mut present = 0u64;
        for name in &names {
            if name_exists(stat, &mut listings, &base, name) {
                w.str(name);
                present += 1;
            }
        }
        ids.insert(format!("lookups in {dir}/"), FileId { digest: w.finish(), exec: false, size: present });
    }
    Ok(ids)
}

/// Whether `base/name` exists (the last component as an entry, not followed). While nothing
/// runs, by folder listings read once per build (one `readdir` per folder); otherwise, since
/// steps are writing, by a `stat` of the path itself.
fn name_exists(
    stat: &StatCache,
    listings: &mut rustc_hash::FxHashMap<PathBuf, Arc<Listing>>,
    base: &Path,
    name: &str,
) -> bool {
    if !stat.is_frozen() {
        return std::fs::symlink_metadata(base.join(name)).is_ok();
    }
    let mut dir = Cow::Borrowed(base);
    let mut components = name.split('/').peekable();
    while let Some(c) = components.next() {
        let listing = match listings.get(dir.as_ref()) {
            Some(l) => l,
            None => listings.entry(dir.to_path_buf()).or_insert_with(|| stat.listing(&dir)),
        };
        if !listing.contains(OsStr::new(c)) {
            return false;
        }
        if components.peek().is_some() {
            dir = Cow::Owned(dir.join(c));
        }
    }
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::command_search_dirs;

    #[test]
    fn search_dirs_from_commands() {
        assert_eq!(
            command_search_dirs("cc -Iinclude -I build -isystem /opt/x -iquote=q -MD -MF a.d -o a a.c"),
            vec!["include", "build", "/opt/x", "q"]
        );
        assert_eq!(
            command_search_dirs("nvcc --include-path=inc --include-path gen -I'my dir' -I\"x y\""),
            vec!["inc", "gen", "my dir", "x y"]
        );
        assert_eq!(command_search_dirs("cc -I -o a a.c"), Vec::<String>::new());
        assert_eq!(
            command_search_dirs(
                "cc --include-directory=a --include-directory b --include-directory-after=c -Fd"
            ),
            vec!["a", "b", "c", "d"]
        );
    }
}
