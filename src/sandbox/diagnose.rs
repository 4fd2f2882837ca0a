//! What a failed sandboxed step touched that it did not declare, read from an strace log of
//! the step run again in the same sandbox ([`STRACE_ARGS`]: every process, file calls, process
//! calls and `fchdir`, file descriptors decoded as paths). One call a line: `PID name(args) =
//! result`, a failure as `= -1 ENOENT (No such file or directory)`, a call split by another
//! process's as `... <unfinished ...>` and `PID <... name resumed>...`. With `-y` a folder
//! argument reads `AT_FDCWD</abs/cwd>` or `3</abs/folder>`, which places the relative path
//! after it; a call without one (`chdir`, `mkdir`, `access`) is placed in the process's last
//! known folder (from its last `AT_FDCWD<...>`, its `chdir`s, or its parent's at `clone`).
//!
//! A project path that a call found missing (ENOENT) but that exists in the project was hidden
//! by the sandbox: an undeclared read. A call refused with EROFS was a write where the step may
//! not write (a visible file, or outside the project); EBUSY, a visible file removed or renamed.

use std::collections::{BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};

/// strace's arguments for the traced run (before `-o FILE` and the command).
pub const STRACE_ARGS: &[&str] = &["-f", "-qq", "-y", "-e", "trace=%file,%process,fchdir"];

/// The undeclared paths a step touched, sorted, each at most once.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Touched {
    /// Project paths it tried to read that the sandbox hid.
    pub reads: BTreeSet<String>,
    /// Project paths it tried to write where it may not (a visible file: EROFS, EBUSY).
    pub writes: BTreeSet<String>,
    /// Absolute paths outside the project it tried to write (EROFS).
    pub outside: BTreeSet<String>,
    /// Of `writes`, those it removed or tried to remove (or rename away).
    pub removed: BTreeSet<String>,
    /// Files a depfile step read that it may discover but its depfile does not list.
    pub unrecorded: BTreeSet<String>,
}

/// The paths of an strace log `log` of a step run in `project` (canonical). `exists` says
/// whether a project path exists on disk (outside the sandbox); `ignore` whether a project
/// path is the trace's own file.
pub fn from_strace(
    log: &str,
    project: &Path,
    exists: &dyn Fn(&str) -> bool,
    ignore: &dyn Fn(&str) -> bool,
) -> Touched {
    let mut t = Touched::default();
    each_path(log, project, |e| {
        let erofs = e.result.starts_with("-1 EROFS") || e.result.starts_with("-1 EBUSY");
        if !erofs && !e.result.starts_with("-1 ENOENT") {
            return;
        }
        match e.placed {
            Placed::Outside(abs) if erofs && !e.traversed => {
                t.outside.insert(abs.display().to_string());
            }
            Placed::Outside(_) => {}
            Placed::Project(rel) if rel.is_empty() || ignore(rel) => {}
            Placed::Project(rel) if erofs && !e.traversed => {
                let removes = matches!(e.name, "unlink" | "unlinkat" | "rmdir")
                    || (e.name.starts_with("rename") && e.nth == 0);
                if removes {
                    t.removed.insert(rel.to_string());
                }
                t.writes.insert(rel.to_string());
            }
            Placed::Project(rel) if exists(rel) => {
                t.reads.insert(rel.to_string());
            }
            Placed::Project(_) => {}
        }
    });
    t
}

/// What a step run unsandboxed did, from an strace log of it (as [`from_strace`] reads one):
/// the paths that calls which succeeded read and wrote, and those that calls found missing.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Accessed {
    /// Project paths opened for reading, `stat`ed, `access`ed, run, entered, or read as a
    /// symlink (and the folders a `..` climbed out of), less those the step made itself.
    pub reads: BTreeSet<String>,
    /// Project paths opened for writing (`O_WRONLY`, `O_RDWR`, `O_CREAT`, `O_TRUNC`), made,
    /// removed, renamed (both names), linked to, or whose mode, owner or times changed; less
    /// what the step made and removed again (a temporary file, one renamed over an output).
    pub writes: BTreeSet<String>,
    /// Project paths that a call which reads found missing (`ENOENT`).
    pub missing: BTreeSet<String>,
    /// Absolute paths outside the project written, as `writes`.
    pub outside: BTreeSet<PathBuf>,
    /// Of `writes`, the project paths it removed (or renamed away) that it had not made.
    pub removed: BTreeSet<String>,
    /// Absolute paths outside the project read (a symlink may lead one into it).
    pub outside_reads: BTreeSet<PathBuf>,
    /// Of `reads`, the files opened for reading (not `O_PATH`) or run: what may have read
    /// their content, not only their name.
    pub opened: BTreeSet<String>,
}

/// The calls that change the path they name, besides an open for writing, and whether each
/// makes it ([`Change::Make`]) or removes it ([`Change::Remove`]). `rename`s and `link`s are
/// placed by their argument (the old name is removed or read, the new one made).
const WRITING: &[(&str, Change)] = &[
    ("creat", Change::Make),
    ("mkdir", Change::Make),
    ("mkdirat", Change::Make),
    ("mknod", Change::Make),
    ("mknodat", Change::Make),
    ("symlink", Change::Make),
    ("symlinkat", Change::Make),
    ("rmdir", Change::Remove),
    ("unlink", Change::Remove),
    ("unlinkat", Change::Remove),
    ("truncate", Change::Modify),
    ("chmod", Change::Modify),
    ("fchmodat", Change::Modify),
    ("fchmodat2", Change::Modify),
    ("chown", Change::Modify),
    ("lchown", Change::Modify),
    ("fchownat", Change::Modify),
    ("utime", Change::Modify),
    ("utimes", Change::Modify),
    ("utimensat", Change::Modify),
    ("futimesat", Change::Modify),
    ("setxattr", Change::Modify),
    ("lsetxattr", Change::Modify),
    ("removexattr", Change::Modify),
    ("lremovexattr", Change::Modify),
];

/// What a write does to the path it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Make,
    Remove,
    Modify,
}

/// The project paths (relative; the project folder itself is `""`) and the paths outside it
/// that the calls of `log` touched, in a step run unsandboxed in `project` (canonical); `ignore`
/// leaves out the trace's own file (a project path).
pub fn accessed(log: &str, project: &Path, ignore: &dyn Fn(&str) -> bool) -> Accessed {
    let mut a = Accessed::default();
    // Made by the step (and not removed since): removing one again is no change to the project.
    let mut made: BTreeSet<PathBuf> = BTreeSet::new();
    let mut ever_made: BTreeSet<PathBuf> = BTreeSet::new();
    let mut writes: BTreeSet<PathBuf> = BTreeSet::new();
    let mut reads: Vec<PathBuf> = Vec::new();
    let mut opened: Vec<PathBuf> = Vec::new();
    each_path(log, project, |e| {
        let abs = match e.placed {
            Placed::Project(rel) if ignore(rel) => return,
            Placed::Project(rel) => project.join(rel),
            Placed::Outside(abs) => abs.to_path_buf(),
        };
        let failed = e.result.starts_with('-') || e.result.starts_with('?');
        // An open's flags: what follows its path (the last string of its arguments).
        let args = e.call.rsplit_once(" = ").map_or(e.call, |(args, _)| args);
        let flags = args.rsplit_once('"').map_or(args, |(_, after)| after);
        let opens = matches!(e.name, "open" | "openat" | "openat2");
        let change = match e.name {
            _ if e.traversed => None,
            "rename" | "renameat" | "renameat2" if e.nth == 0 => Some(Change::Remove),
            "rename" | "renameat" | "renameat2" => Some(Change::Make),
            // `link(old, new)`: the old name is read, the new one made.
            "link" | "linkat" if e.nth == 0 => None,
            "link" | "linkat" => Some(Change::Make),
            // `unlinkat` of a folder (`AT_REMOVEDIR`) removes it as `rmdir` does.
            _ if opens && flags.contains("O_CREAT") => Some(Change::Make),
            _ if opens && ["O_WRONLY", "O_RDWR", "O_TRUNC"].iter().any(|f| flags.contains(f)) => {
                Some(Change::Modify)
            }
            name => WRITING.iter().find(|(n, _)| *n == name).map(|(_, c)| *c),
        };
        if failed {
            if change.is_none() && e.result.starts_with("-1 ENOENT") {
                if let Placed::Project(rel) = e.placed {
                    a.missing.insert(rel.to_string());
                }
            }
            return;
        }
        match change {
            None if (opens && !flags.contains("O_PATH") && !flags.contains("O_DIRECTORY"))
                || e.name == "execve" =>
            {
                opened.push(abs.clone());
                reads.push(abs);
            }
            None => reads.push(abs),
            Some(Change::Make) => {
                made.insert(abs.clone());
                ever_made.insert(abs.clone());
                writes.insert(abs);
            }
            Some(Change::Modify) => {
                writes.insert(abs);
            }
            Some(Change::Remove) if made.contains(&abs) => {
                // Made and removed again (with all it held): a temporary file or folder.
                remove_below(&mut made, &abs);
                remove_below(&mut writes, &abs);
            }
            Some(Change::Remove) => {
                if let Placed::Project(rel) = e.placed {
                    a.removed.insert(rel.to_string());
                }
                writes.insert(abs);
            }
        }
    });
    let rel = |p: &Path| p.strip_prefix(project).ok().and_then(|r| r.to_str()).map(str::to_string);
    for p in writes {
        match rel(&p) {
            Some(r) => {
                a.writes.insert(r);
            }
            None => {
                a.outside.insert(p);
            }
        }
    }
    // A file it made itself is named once, where it was written.
    for p in reads.into_iter().filter(|p| !ever_made.contains(p)) {
        match rel(&p) {
            Some(r) => {
                a.reads.insert(r);
            }
            None => {
                a.outside_reads.insert(p);
            }
        }
    }
    let opened = opened.iter().filter(|p| !ever_made.contains(*p)).filter_map(|p| rel(p));
    a.opened.extend(opened);
    a.missing.retain(|m| !ever_made.contains(&project.join(m)));
    a
}

/// Remove `dir` and every path below it from `set` (a range of it: paths sort by component).
fn remove_below(set: &mut BTreeSet<PathBuf>, dir: &Path) {
    let below: Vec<PathBuf> =
        set.range(dir.to_path_buf()..).take_while(|p| p.starts_with(dir)).cloned().collect();
    for p in below {
        set.remove(&p);
    }
}

/// Where a path a call named lies: in the project (relative, `""` for the project folder),
/// or outside it (absolute).
enum Placed<'a> {
    Project(&'a str),
    Outside(&'a Path),
}

/// One path a call of the log named, placed where the process was.
struct Event<'a> {
    /// The whole call as strace printed it (its halves joined).
    call: &'a str,
    /// The call's name.
    name: &'a str,
    /// What follows ` = `: `0`, `3</p/x>`, `-1 ENOENT (No such file or directory)`.
    result: &'a str,
    /// Which of the call's paths it is (`rename`'s old name is 0, its new one 1).
    nth: usize,
    /// A folder the path climbed out of with `..` (`sub` in `sub/../x`), which the call only
    /// looked up: it had to exist.
    traversed: bool,
    placed: Placed<'a>,
}

/// Which of a call's quoted strings are paths: the first, but for `rename`s and `link`s both,
/// for a `symlink` only its second (the first is the link's text), and none for calls whose
/// strings are what they return (`getcwd`) or no path at all (`mount`'s file system type).
fn is_path(name: &str, nth: usize) -> bool {
    match name {
        "rename" | "renameat" | "renameat2" | "link" | "linkat" => nth < 2,
        "symlink" | "symlinkat" => nth == 1,
        "getcwd" | "mount" | "umount" | "umount2" | "pivot_root" => false,
        _ => nth == 0,
    }
}

/// Call `f` for each path of each call of `log`, placed where the process was.
fn each_path(log: &str, project: &Path, mut f: impl FnMut(&Event)) {
    let mut cwd: HashMap<String, PathBuf> = HashMap::new();
    let mut pending: HashMap<String, String> = HashMap::new();
    // The process whose `clone` (or `fork`, `vfork`) is unfinished: a child's first calls may
    // come before its parent's learns its pid.
    let mut forking: Option<String> = None;
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    for line in log.lines() {
        let Some((pid, rest)) = line.trim_start().split_once(char::is_whitespace) else { continue };
        let rest = rest.trim_start();
        if seen.insert(pid.to_string()) && !cwd.contains_key(pid) {
            if let Some(dir) = forking.as_ref().and_then(|parent| cwd.get(parent)).cloned() {
                cwd.insert(pid.to_string(), dir);
            }
        }
        // A call split by another process's: join its halves.
        let call: String = if let Some(head) = rest.strip_suffix("<unfinished ...>") {
            if ["clone(", "clone3(", "fork(", "vfork("].iter().any(|c| head.starts_with(c)) {
                // Its folder, for a child seen before the call's end.
                let here = cwd.get(pid).cloned().unwrap_or_else(|| project.to_path_buf());
                cwd.insert(pid.to_string(), here);
                forking = Some(pid.to_string());
            }
            pending.insert(pid.to_string(), head.to_string());
            continue;
        } else if rest.starts_with("<... ") {
            let tail = rest.split_once("resumed>").map_or("", |(_, t)| t);
            format!("{}{tail}", pending.remove(pid).unwrap_or_default())
        } else {
            rest.to_string()
        };
        // Where the process is: its last `AT_FDCWD<...>`, its `chdir`, or its parent's.
        if let Some(dir) = call.split_once("AT_FDCWD<").and_then(|(_, r)| r.split_once('>')).map(|(d, _)| d) {
            cwd.insert(pid.to_string(), unescape(dir));
        }
        let here = cwd.get(pid).cloned().unwrap_or_else(|| project.to_path_buf());
        let args = quoted(&call);
        let result = call.rsplit_once(" = ").map_or("", |(_, r)| r).trim();
        let name = call.split_once('(').map_or(call.as_str(), |(n, _)| n);
        if name == "chdir" && result == "0" {
            if let Some((_, p)) = args.first() {
                cwd.insert(pid.to_string(), resolve(&here, None, p).0);
            }
        }
        if name == "fchdir" && result == "0" {
            if let Some(dir) = call.split_once('<').and_then(|(_, r)| r.split_once('>')).map(|(d, _)| d) {
                cwd.insert(pid.to_string(), unescape(dir));
            }
        }
        if ["clone", "clone3", "fork", "vfork"].contains(&name) {
            if let Some(child) = result.split_whitespace().next().filter(|c| c.parse::<u32>().is_ok()) {
                // (Where the child has moved already, it keeps its own folder.)
                if !cwd.contains_key(child) || !seen.contains(child) {
                    cwd.insert(child.to_string(), here.clone());
                }
                seen.insert(child.to_string());
            }
            if forking.as_deref() == Some(pid) {
                forking = None;
            }
        }
        for (nth, (base, raw)) in args.into_iter().enumerate() {
            // An empty path (`AT_EMPTY_PATH`) names the descriptor, which was opened already.
            if raw.as_os_str().is_empty() || !is_path(name, nth) {
                continue;
            }
            // The process's own folder through `/proc` is where it is.
            let raw = match ["/proc/self/cwd", "/proc/thread-self/cwd"]
                .iter()
                .find_map(|c| raw.strip_prefix(c).ok())
            {
                Some(rest) => here.join(rest),
                None => raw,
            };
            let (abs, climbed) = resolve(&here, base.as_deref(), &raw);
            let paths = climbed.iter().map(|c| (c, true)).chain(std::iter::once((&abs, false)));
            for (p, traversed) in paths {
                let placed = match p.strip_prefix(project).ok().and_then(|r| r.to_str()) {
                    Some(rel) => Placed::Project(rel),
                    None => Placed::Outside(p),
                };
                f(&Event { call: &call, name, result, nth, traversed, placed });
            }
        }
    }
}

/// `p` placed in a folder: absolute as it is, else below `base` (the call's folder argument)
/// or `cwd`; `.` and `..` resolved by name. Also the folders that a `..` climbed out of, which
/// the kernel looked up on the way (`a/sub` for `a/sub/../x`).
fn resolve(cwd: &Path, base: Option<&Path>, p: &Path) -> (PathBuf, Vec<PathBuf>) {
    let joined = if p.is_absolute() { p.to_path_buf() } else { base.unwrap_or(cwd).join(p) };
    let mut out = PathBuf::new();
    let mut climbed = Vec::new();
    // The path as written up to here: only a `..` after a name the path itself gave climbs
    // out of a folder it looked up (the folder it starts in is where the process is).
    let start = joined.components().count() - p.components().count();
    for (i, c) in joined.components().enumerate() {
        match c {
            Component::ParentDir => {
                if i > start {
                    climbed.push(out.clone());
                }
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    (out, climbed)
}

/// A string as strace prints it, its escapes read: `\"`, `\\`, `\n`, `\t`, `\r`, `\v`, `\f`,
/// and `\NNN` (octal, a byte: how strace prints one that is not printable ASCII).
fn unescape(s: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' || i + 1 == b.len() {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let octal = b[i + 1..].iter().take(3).take_while(|c| (b'0'..=b'7').contains(c)).count();
        if octal > 0 {
            let digits = &s[i + 1..i + 1 + octal];
            out.push(u8::from_str_radix(digits, 8).unwrap_or(b'?'));
            i += 1 + octal;
            continue;
        }
        out.push(match b[i + 1] {
            b'n' => b'\n',
            b't' => b'\t',
            b'r' => b'\r',
            b'v' => 0x0b,
            b'f' => 0x0c,
            c => c,
        });
        i += 2;
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// The strings of a call's arguments as strace quotes them (`"..."`, with C escapes), each
/// with the folder strace printed just before it (`AT_FDCWD</x>, "..."` or `3</x>, "..."`).
/// Only the part before ` = ` (the arguments, not the result's text).
fn quoted(line: &str) -> Vec<(Option<PathBuf>, PathBuf)> {
    // strace pads the arguments with spaces before ` = result`.
    let args = line.rsplit_once(" = ").map_or(line, |(a, _)| a.trim_end());
    let mut out = Vec::new();
    let mut base: Option<PathBuf> = None;
    let mut chars = args.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '<' {
            // A decoded descriptor: `<path>` right after a number or AT_FDCWD.
            let before = &args[..i];
            if before.ends_with("AT_FDCWD") || before.ends_with(|ch: char| ch.is_ascii_digit()) {
                let rest = &args[i + 1..];
                if let Some(end) = rest.find('>') {
                    base = Some(unescape(&rest[..end]));
                    while chars.peek().is_some_and(|(j, _)| *j <= i + 1 + end) {
                        chars.next();
                    }
                }
            }
            continue;
        }
        if c == ',' || c == '(' || c == ' ' {
            continue;
        }
        if c == '[' {
            // An array (`execve`'s argv and envp): its strings are no paths the call used.
            let mut quote = false;
            let mut escaped = false;
            for (_, c) in chars.by_ref() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => quote = !quote,
                    ']' if !quote => break,
                    _ => {}
                }
            }
            base = None;
            continue;
        }
        if c != '"' {
            base = None;
            continue;
        }
        let from = i + 1;
        let mut to = None;
        while let Some((j, c)) = chars.next() {
            match c {
                '"' => {
                    to = Some(j);
                    break;
                }
                '\\' => {
                    chars.next();
                }
                _ => {}
            }
        }
        let cut = args[chars.peek().map_or(args.len(), |(j, _)| *j)..].starts_with("...");
        // strace cuts long strings (`"..."...`): a cut path names nothing.
        if let (Some(to), false) = (to, cut) {
            out.push((base.take(), unescape(&args[from..to])));
        }
        base = None;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_hidden_project_files_and_writes_are_refused_ones() {
        let log = r#"101 openat(AT_FDCWD, "secret.txt", O_RDONLY) = -1 ENOENT (No such file or directory)
101 openat(AT_FDCWD, "/p/inc/a.h", O_RDONLY|O_NOCTTY) = -1 ENOENT (No such file or directory)
101 openat(AT_FDCWD, "nothere.h", O_RDONLY) = -1 ENOENT (No such file or directory)
101 openat(AT_FDCWD, "src/main.c", O_RDONLY) = 3
102 openat(AT_FDCWD, "out/x.txt", O_WRONLY|O_CREAT|O_TRUNC, 0666) = -1 EROFS (Read-only file system)
102 mkdir("/root/.cache", 0777) = -1 EROFS (Read-only file system)
102 openat(AT_FDCWD, "/usr/include/zz.h", O_RDONLY) = -1 ENOENT (No such file or directory)
102 openat(AT_FDCWD, ".gvbuild-trace", O_WRONLY) = -1 ENOENT (No such file or directory)
103 execve("/p/long", ["a"...], 0x7ffe /* 3 vars */) = -1 ENOENT (No such file or directory)
"#;
        let exists = |p: &str| matches!(p, "secret.txt" | "inc/a.h" | ".gvbuild-trace");
        let ignore = |p: &str| p == ".gvbuild-trace";
        let t = from_strace(log, Path::new("/p"), &exists, &ignore);
        assert_eq!(t.reads.iter().map(String::as_str).collect::<Vec<_>>(), ["inc/a.h", "secret.txt"]);
        assert_eq!(t.writes.iter().map(String::as_str).collect::<Vec<_>>(), ["out/x.txt"]);
        assert_eq!(t.outside.iter().map(String::as_str).collect::<Vec<_>>(), ["/root/.cache"]);
    }

    /// Paths are placed in the folder the call names, or where the process has gone (`cd`,
    /// inherited over `clone`); a call split by another process's is joined.
    #[test]
    fn paths_are_placed_where_the_process_is() {
        let log = r#"10 newfstatat(AT_FDCWD</p>, "x", 0x1, 0) = 0
10 chdir("sub") = 0
10 clone(child_stack=NULL, flags=SIGCHLD) = 11
11 openat(AT_FDCWD</p/sub>, "../secret.txt", O_RDONLY <unfinished ...>
10 wait4(-1,  <unfinished ...>
11 <... openat resumed>) = -1 ENOENT (No such file or directory)
11 access("in-sub.txt", R_OK) = -1 ENOENT (No such file or directory)
12 mkdirat(3</root/.cache>, "tool", 0777) = -1 EROFS (Read-only file system)
13 fchdir(3</var/tmp>) = 0
13 mkdir("x", 0777) = -1 EROFS (Read-only file system)
11 unlinkat(AT_FDCWD</p/sub>, "/p/in.txt", 0) = -1 EBUSY (Device or resource busy)
"#;
        let exists = |p: &str| matches!(p, "secret.txt" | "sub/in-sub.txt");
        let t = from_strace(log, Path::new("/p"), &exists, &|_| false);
        assert_eq!(t.reads.iter().map(String::as_str).collect::<Vec<_>>(), ["secret.txt", "sub/in-sub.txt"]);
        assert_eq!(t.writes.iter().map(String::as_str).collect::<Vec<_>>(), ["in.txt"]);
        assert_eq!(
            t.outside.iter().map(String::as_str).collect::<Vec<_>>(),
            ["/root/.cache/tool", "/var/tmp/x"]
        );
    }

    #[test]
    fn escapes_are_read_and_cut_strings_skipped() {
        let strings = |l: &str| {
            quoted(l).into_iter().map(|(_, s)| s.to_string_lossy().into_owned()).collect::<Vec<_>>()
        };
        assert_eq!(
            strings(r#"1 openat(AT_FDCWD, "a\"b", O_RDONLY) = -1 ENOENT (x)"#),
            vec!["a\"b".to_string()]
        );
        assert_eq!(
            strings(r#"1 execve("/bin/sh", ["sh", "-ec", "a]a"...], 0x7f /* 3 vars */) = 0"#),
            ["/bin/sh"]
        );
        assert_eq!(strings(r#"1 write(1, "abcd"..., 9) = 9"#), Vec::<String>::new());
        assert_eq!(
            quoted(r#"1 mkdirat(3</var/tmp/a>, "b", 0777) = -1 EROFS (Read-only file system)"#),
            vec![(Some(PathBuf::from("/var/tmp/a")), PathBuf::from("b"))]
        );
    }

    /// `mkdir -p` as coreutils does it: `chdir` into each folder, then `mkdir` the next name.
    #[test]
    fn mkdir_p_is_placed_where_it_went() {
        let log = "3616  mkdir(\"/root\", 0777)              = -1 EEXIST (File exists)
3616  chdir(\"/root\")                    = 0
3616  mkdir(\".gvx\", 0777)               = -1 EROFS (Read-only file system)
";
        let t = from_strace(log, Path::new("/p"), &|_| false, &|_| false);
        assert_eq!(t.outside.iter().map(String::as_str).collect::<Vec<_>>(), ["/root/.gvx"]);
    }

    /// What a step run unsandboxed touched: calls that succeeded, split by whether they change
    /// the path; a `readlink`'s text, a descriptor's own path (`AT_EMPTY_PATH`) and what the
    /// step made and removed again are left out; a folder climbed out of is a read.
    #[test]
    fn accessed_splits_reads_from_writes() {
        let log = r#"20 execve("/p/tools/gen.sh", ["gen.sh"], 0x7ffe /* 3 vars */) = 0
20 openat(AT_FDCWD</p>, "src/a.txt", O_RDONLY) = 3</p/src/a.txt>
20 newfstatat(3</p/secret.txt>, "", {st_mode=S_IFREG|0644, st_size=3, ...}, AT_EMPTY_PATH) = 0
20 newfstatat(AT_FDCWD</p>, "config.toml", {st_mode=S_IFREG|0644, st_size=3, ...}, 0) = 0
20 access("missing.txt", R_OK) = -1 ENOENT (No such file or directory)
20 openat(AT_FDCWD</p>, "out/a.txt", O_WRONLY|O_CREAT|O_TRUNC, 0666) = 4</p/out/a.txt>
20 openat(AT_FDCWD</p>, "/etc/passwd", O_RDONLY|O_CLOEXEC) = 5</etc/passwd>
20 openat(AT_FDCWD</p>, "out/a.tmp", O_WRONLY|O_CREAT|O_EXCL, 0600) = 6</p/out/a.tmp>
20 rename("out/a.tmp", "out/b.txt") = 0
20 symlink("../src/a.txt", "out/link") = 0
20 linkat(AT_FDCWD</p>, "src/a.txt", AT_FDCWD</p>, "copy.txt", 0) = 0
20 readlink("/usr/bin/cc", "gcc-12", 4095) = 6
20 readlinkat(AT_FDCWD</p>, "out/link", "../src/a.txt", 4095) = 12
20 openat(AT_FDCWD</p>, "sub/../in.txt", O_RDONLY) = 7</p/in.txt>
20 openat(AT_FDCWD</p>, "\303\274 \"q\".txt", O_RDONLY) = 8</p/\303\274 "q".txt>
20 mkdir("work", 0777) = 0
20 openat(AT_FDCWD</p>, "work/x", O_WRONLY|O_CREAT|O_TRUNC, 0666) = 9</p/work/x>
20 openat(AT_FDCWD</p>, "work/x", O_RDONLY) = 9</p/work/x>
20 unlink("work/x") = 0
20 rmdir("work") = 0
20 unlink("old.txt") = 0
20 openat(AT_FDCWD</tmp>, "cc1.s", O_RDWR|O_CREAT|O_EXCL, 0600) = 6</tmp/cc1.s>
20 unlink("/tmp/cc1.s") = 0
20 openat(AT_FDCWD</tmp>, "/tmp/left", O_WRONLY|O_CREAT|O_TRUNC, 0666) = 6</tmp/left>
"#;
        let a = accessed(log, Path::new("/p"), &|_| false);
        let list = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>();
        assert_eq!(
            list(&a.reads),
            ["config.toml", "in.txt", "src/a.txt", "sub", "tools/gen.sh", "ü \"q\".txt"]
        );
        assert_eq!(list(&a.writes), ["copy.txt", "old.txt", "out/a.txt", "out/b.txt", "out/link"]);
        assert_eq!(list(&a.missing), ["missing.txt"]);
        assert_eq!(list(&a.removed), ["old.txt"]);
        assert_eq!(a.outside.iter().collect::<Vec<_>>(), [Path::new("/tmp/left")]);
    }

    /// A child whose first calls are logged before its parent's `vfork` returns is placed
    /// where its parent is; an open's flags are its own, not a path's text.
    #[test]
    fn a_child_seen_before_its_parents_clone_returns_is_where_its_parent_is() {
        let log = r#"30 chdir("sub") = 0
30 vfork( <unfinished ...>
31 execve("/usr/bin/mv", ["mv"], 0x7ffe /* 3 vars */) = 0
31 rename("a.tmp", "a.txt") = 0
30 <... vfork resumed>) = 31
30 openat(AT_FDCWD</p/sub>, "O_CREAT.txt", O_RDONLY) = 3</p/sub/O_CREAT.txt>
"#;
        let a = accessed(log, Path::new("/p"), &|_| false);
        let list = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>();
        assert_eq!(list(&a.writes), ["sub/a.tmp", "sub/a.txt"]);
        assert_eq!(list(&a.reads), ["sub", "sub/O_CREAT.txt"]);
    }
}
