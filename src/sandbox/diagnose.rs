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
    each_path(log, project, |_, result, _, placed| {
        let erofs = result.starts_with("-1 EROFS") || result.starts_with("-1 EBUSY");
        if !erofs && !result.starts_with("-1 ENOENT") {
            return;
        }
        match placed {
            Placed::Outside(abs) if erofs => {
                t.outside.insert(abs.display().to_string());
            }
            Placed::Outside(_) => {}
            Placed::Project(rel) if rel.is_empty() || ignore(rel) => {}
            Placed::Project(rel) if erofs => {
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

/// What a step run unsandboxed did in its project, from an strace log of it (as
/// [`from_strace`] reads one): the project paths that calls which succeeded read and wrote.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Accessed {
    /// Opened for reading, `stat`ed, `access`ed, listed, run or read as a symlink.
    pub reads: BTreeSet<String>,
    /// Opened for writing (`O_WRONLY`, `O_RDWR`, `O_CREAT`, `O_TRUNC`), made, removed, renamed
    /// (both names), linked to, or had their mode, owner or times changed.
    pub writes: BTreeSet<String>,
}

/// The calls that change the path they name (for `link`, the new name; for `symlink`, its
/// first string is the link's text, no path).
const WRITING: &[&str] = &[
    "creat",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "rmdir",
    "unlink",
    "unlinkat",
    "rename",
    "renameat",
    "renameat2",
    "truncate",
    "chmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "lchown",
    "fchownat",
    "utime",
    "utimes",
    "utimensat",
    "futimesat",
    "setxattr",
    "lsetxattr",
    "removexattr",
    "lremovexattr",
];

/// The project paths (relative; the project folder itself is `""`) that the calls of `log`
/// which succeeded touched, in a step run unsandboxed in `project` (canonical); `ignore`
/// leaves out the trace's own file.
pub fn accessed(log: &str, project: &Path, ignore: &dyn Fn(&str) -> bool) -> Accessed {
    let mut a = Accessed::default();
    each_path(log, project, |call, result, nth, placed| {
        let Placed::Project(rel) = placed else { return };
        if result.starts_with('-') || result.starts_with('?') || ignore(rel) {
            return;
        }
        let name = call.split_once('(').map_or(call, |(n, _)| n);
        let flags = call.rsplit_once(" = ").map_or(call, |(a, _)| a);
        let opens_for_writing = matches!(name, "open" | "openat" | "openat2")
            && ["O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC"].iter().any(|f| flags.contains(f));
        let writes = match name {
            // `link(old, new)`: the old name is read, the new one made.
            "link" | "linkat" => nth > 0,
            // `symlink(text, new)`: only the new name is a path.
            "symlink" | "symlinkat" if nth == 0 => return,
            "symlink" | "symlinkat" => true,
            _ => opens_for_writing || WRITING.contains(&name),
        };
        if writes {
            a.writes.insert(rel.to_string());
        } else {
            a.reads.insert(rel.to_string());
        }
    });
    a
}

/// Where a path a call named lies: in the project (relative, `""` for the project folder),
/// or outside it (absolute).
enum Placed<'a> {
    Project(&'a str),
    Outside(&'a Path),
}

/// Call `f(call, result, n, placed)` for the `n`th path string of each call of `log` (`call`:
/// the whole call as strace printed it, its halves joined; `result`: what follows ` = `),
/// placed where the process was.
fn each_path(log: &str, project: &Path, mut f: impl FnMut(&str, &str, usize, Placed)) {
    let mut cwd: HashMap<String, PathBuf> = HashMap::new();
    let mut pending: HashMap<String, String> = HashMap::new();
    for line in log.lines() {
        let Some((pid, rest)) = line.trim_start().split_once(char::is_whitespace) else { continue };
        let rest = rest.trim_start();
        // A call split by another process's: join its halves.
        let call: String = if let Some(head) = rest.strip_suffix("<unfinished ...>") {
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
            cwd.insert(pid.to_string(), PathBuf::from(dir));
        }
        let here = cwd.get(pid).cloned().unwrap_or_else(|| project.to_path_buf());
        let args = quoted(&call);
        let result = call.rsplit_once(" = ").map_or("", |(_, r)| r).trim();
        if call.starts_with("chdir(") && result == "0" {
            if let Some((_, p)) = args.first() {
                cwd.insert(pid.to_string(), resolve(&here, None, p));
            }
        }
        if call.starts_with("fchdir(") && result == "0" {
            if let Some(dir) = call.split_once('<').and_then(|(_, r)| r.split_once('>')).map(|(d, _)| d) {
                cwd.insert(pid.to_string(), PathBuf::from(dir));
            }
        }
        if ["clone(", "clone3(", "fork(", "vfork("].iter().any(|c| call.starts_with(c)) {
            if let Some(child) = result.split_whitespace().next().filter(|c| c.parse::<u32>().is_ok()) {
                cwd.insert(child.to_string(), here.clone());
            }
        }
        for (n, (base, raw)) in args.into_iter().enumerate() {
            let abs = resolve(&here, base.as_deref(), &raw);
            match abs.strip_prefix(project).ok().and_then(|r| r.to_str()) {
                Some(rel) => f(&call, result, n, Placed::Project(rel)),
                None => f(&call, result, n, Placed::Outside(&abs)),
            }
        }
    }
}

/// `p` placed in a folder: absolute as it is, else below `base` (the call's folder argument)
/// or `cwd`; `.` and `..` resolved by name.
fn resolve(cwd: &Path, base: Option<&Path>, p: &str) -> PathBuf {
    let joined = if p.starts_with('/') { PathBuf::from(p) } else { base.unwrap_or(cwd).join(p) };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// The strings of a call's arguments as strace quotes them (`"..."`, with C escapes), each
/// with the folder strace printed just before it (`AT_FDCWD</x>, "..."` or `3</x>, "..."`).
/// Only the part before ` = ` (the arguments, not the result's text).
fn quoted(line: &str) -> Vec<(Option<PathBuf>, String)> {
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
                    base = Some(PathBuf::from(&rest[..end]));
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
        let mut s = String::new();
        let mut closed = false;
        while let Some((_, c)) = chars.next() {
            match c {
                '"' => {
                    closed = true;
                    break;
                }
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => s.push('\n'),
                    Some('t') => s.push('\t'),
                    Some(o) => s.push(o),
                    None => break,
                },
                c => s.push(c),
            }
        }
        let cut = args[chars.peek().map_or(args.len(), |(j, _)| *j)..].starts_with("...");
        // strace cuts long strings (`"..."...`): a cut path names nothing.
        if closed && !cut {
            out.push((base.take(), s));
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
        let strings = |l: &str| quoted(l).into_iter().map(|(_, s)| s).collect::<Vec<_>>();
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
            vec![(Some(PathBuf::from("/var/tmp/a")), "b".to_string())]
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
    /// the path; failures and paths outside the project are left out.
    #[test]
    fn accessed_splits_reads_from_writes() {
        let log = r#"20 execve("/p/tools/gen.sh", ["gen.sh"], 0x7ffe /* 3 vars */) = 0
20 openat(AT_FDCWD</p>, "src/a.txt", O_RDONLY) = 3</p/src/a.txt>
20 newfstatat(AT_FDCWD</p>, "config.toml", {st_mode=S_IFREG|0644, st_size=3, ...}, 0) = 0
20 access("missing.txt", R_OK) = -1 ENOENT (No such file or directory)
20 openat(AT_FDCWD</p>, "out/a.txt", O_WRONLY|O_CREAT|O_TRUNC, 0666) = 4</p/out/a.txt>
20 openat(AT_FDCWD</p>, "/etc/passwd", O_RDONLY|O_CLOEXEC) = 5</etc/passwd>
20 rename("out/a.tmp", "out/b.txt") = 0
20 symlink("../src/a.txt", "out/link") = 0
20 linkat(AT_FDCWD</p>, "src/a.txt", AT_FDCWD</p>, "copy.txt", 0) = 0
20 readlink("out/link", "../src/a.txt", 4095) = 12
20 openat(AT_FDCWD</p>, "/tmp/trace", O_WRONLY|O_CREAT, 0666) = 6</tmp/trace>
"#;
        let a = accessed(log, Path::new("/p"), &|_| false);
        let list = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>();
        assert_eq!(list(&a.reads), ["config.toml", "out/link", "src/a.txt", "tools/gen.sh"]);
        assert_eq!(list(&a.writes), ["copy.txt", "out/a.tmp", "out/a.txt", "out/b.txt", "out/link"]);
    }
}
