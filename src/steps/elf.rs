//! The shared-library closure of ELF files: what the `stage` step's `libs_for` copies into the
//! stage root, and what `gvbuild libs` prints.
//!
//! # How a library is found
//!
//! The rules are glibc's ld.so (`man ld.so`), applied on this machine without running anything.
//! For each ELF we read PT_INTERP, DT_NEEDED, DT_RPATH, DT_RUNPATH, DT_SONAME and DF_1_NODEFLIB.
//! Each name in DT_NEEDED is looked up for the object that needs it:
//!
//! 1. A name containing `/` is a path, opened as it is: an absolute one from `/`, a relative one
//!    from the process's working directory. On this machine that is the caller's `base` (the
//!    project folder for the `stage` step), never gvbuild's own working directory, so the answer
//!    does not depend on where gvbuild runs. Under Nanos the working directory is `/`, so the
//!    stage step puts such a library at the name read from `/` (see [`Lib::image_path`]).
//! 2. DT_RPATH, only when the needing object has no DT_RUNPATH: first its own, then that of the
//!    object that loaded it, and so on up to the executable. An object with a DT_RUNPATH
//!    contributes no RPATH, to itself or to what it loads.
//! 3. The caller's `search` dirs. They take LD_LIBRARY_PATH's place, so they come after RPATH
//!    and before RUNPATH. The caller's own environment is never consulted: a build must not
//!    depend on whoever runs it.
//! 4. DT_RUNPATH of the needing object only (RUNPATH is not inherited).
//! 5. Unless the needing object was linked with `-z nodeflib`: the dirs of /etc/ld.so.conf
//!    (standing in for ld.so.cache, which is built from them), then [`DEFAULT_DIRS`].
//!
//! A candidate whose ELF class, byte order or machine differs from the needing object's is
//! skipped, as the loader skips it, and the search goes on. `$ORIGIN` is the folder of the
//! object whose entry it is: the folder a library was found in, and for the ELFs given the
//! folder of their real path (the kernel hands ld.so the resolved executable). `$LIB` tries the
//! multiarch dir, then `lib64`, then `lib` (each distribution's glibc picks one; we cannot know
//! the image's); `$PLATFORM` is the machine's name (`x86_64`, `aarch64`, `i686`).
//!
//! The closure is followed breadth first, as the loader loads it, and each name is resolved
//! once: a name that an earlier object's DT_SONAME (or the interpreter's) already answers is not
//! searched again. With several ELFs the closure is their union, each name resolved for whichever
//! ELF needed it first. The interpreter is reported apart, at its PT_INTERP path.
//!
//! Not seen: libraries loaded with `dlopen` (libcuda.so.1 under libcudart, for one), the
//! glibc-hwcaps subdirectories, ld.so.cache entries that did not come from ld.so.conf, and empty
//! RPATH entries (they mean the process's working directory, unknown here).

use std::collections::{HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use goblin::elf::dynamic::DF_1_NODEFLIB;
use goblin::elf::header::{machine_to_str, EM_386, EM_AARCH64, EM_X86_64};
use goblin::elf::Elf;
use miette::Diagnostic;
use thiserror::Error;

/// The loader's built-in dirs, searched last.
pub const DEFAULT_DIRS: &[&str] =
    &["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"];
/// Where the loader's extra dirs are configured.
pub const LD_SO_CONF: &str = "/etc/ld.so.conf";
/// Bounds `include` chains in ld.so.conf, which may loop.
const MAX_CONF_DEPTH: usize = 16;

/// The libraries a set of ELFs loads, and their interpreters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closure {
    /// Each distinct PT_INTERP of the given ELFs, as written there (often a symlink, such as
    /// /lib64/ld-linux-x86-64.so.2): the image must hold it at exactly that path.
    pub interpreters: Vec<PathBuf>,
    /// In the order the loader loads them: breadth first, each object's DT_NEEDED in file order.
    pub libs: Vec<Lib>,
    /// Every folder the search consulted, in the order first consulted: a library that appears
    /// in one of them could change the closure, so the stage step keys their lookups.
    pub searched: Vec<PathBuf>,
}

/// One library of a closure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lib {
    /// The name as DT_NEEDED writes it: the loader looks for a file of this name, so the library
    /// is staged under it.
    pub soname: String,
    /// Where it resolved, as found in its dir (possibly a symlink; the stage step copies the
    /// target's content under `soname`).
    pub path: PathBuf,
    /// The object that first needed it.
    pub needed_by: PathBuf,
    pub how: How,
}

/// Which step of the search found a library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum How {
    /// The DT_NEEDED entry is itself a path.
    Path,
    /// The DT_RPATH of `of`: the needing object or one that loaded it.
    Rpath { of: PathBuf },
    /// A `search:` / `--search` dir.
    Search,
    /// The DT_RUNPATH of the needing object.
    Runpath,
    /// A dir listed in /etc/ld.so.conf or a file it includes.
    LdSoConf,
    /// One of [`DEFAULT_DIRS`].
    DefaultPath,
}

impl Lib {
    /// Where the loader under Nanos opens this library, relative to the image root: for a
    /// DT_NEEDED name holding `/`, the name read from `/` (Nanos runs the program in `/`, and
    /// `..` at the root stays there); `None` for a plain soname, which the search dirs find.
    pub fn image_path(&self) -> Option<PathBuf> {
        if self.how != How::Path {
            return None;
        }
        let mut parts: Vec<&str> = Vec::new();
        for c in self.soname.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                c => parts.push(c),
            }
        }
        Some(parts.iter().collect())
    }
}

impl fmt::Display for How {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            How::Path => f.write_str("a path in DT_NEEDED"),
            How::Rpath { of } => write!(f, "DT_RPATH of {}", of.display()),
            How::Search => f.write_str("search dir"),
            How::Runpath => f.write_str("DT_RUNPATH"),
            How::LdSoConf => f.write_str(LD_SO_CONF),
            How::DefaultPath => f.write_str("default dir"),
        }
    }
}

/// What `gvbuild libs` prints: one line per interpreter and library, ldd's shape plus why.
impl fmt::Display for Closure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for interp in &self.interpreters {
            writeln!(f, "interpreter {}", interp.display())?;
        }
        for lib in &self.libs {
            writeln!(
                f,
                "{} => {}  ({}; needed by {})",
                lib.soname,
                lib.path.display(),
                lib.how,
                lib.needed_by.display()
            )?;
        }
        Ok(())
    }
}

#[derive(Debug, Error, Diagnostic)]
pub enum ElfError {
    #[error("{path} is not an ELF file")]
    #[diagnostic(
        code(gvbuild::elf::not_elf),
        help("`libs_for` takes executables and shared libraries; name the compiled program, not a script")
    )]
    NotElf { path: PathBuf },

    #[error("cannot read {path}: {source}")]
    #[diagnostic(code(gvbuild::elf::read))]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{path} is not a well-formed ELF file: {cause}")]
    #[diagnostic(code(gvbuild::elf::malformed))]
    Malformed { path: PathBuf, cause: String },

    #[error(
        "library {soname}, needed by {}{}, was not found; looked for:\n{}",
        needed_by.display(),
        chain(loaded_by),
        tried_list(tried, skipped)
    )]
    #[diagnostic(
        code(gvbuild::elf::not_found),
        help(
            "add the dir that holds it to the step's `search:` (or `gvbuild libs --search DIR`), or copy it \
             into the stage root with a `copy:` rule"
        )
    )]
    NotFound {
        soname: String,
        needed_by: PathBuf,
        /// The objects through which the needing one was loaded, up to the ELF given.
        loaded_by: Vec<PathBuf>,
        /// Every candidate path, in search order.
        tried: Vec<PathBuf>,
        /// The candidates that exist but cannot be used, with why (another ELF class, byte order
        /// or machine; not an ELF file).
        skipped: Vec<(PathBuf, String)>,
    },

    #[error("{path}, the program interpreter of {}, does not exist on this machine", elf.display())]
    #[diagnostic(
        code(gvbuild::elf::no_interpreter),
        help("build the program for this machine's C library, or link it statically")
    )]
    NoInterpreter { path: PathBuf, elf: PathBuf },

    #[error("{path}, the program interpreter of {}, is {found}, not {want}", elf.display())]
    #[diagnostic(
        code(gvbuild::elf::wrong_class),
        help("the program was built for another architecture than this machine's C library")
    )]
    WrongClass { path: PathBuf, elf: PathBuf, found: String, want: String },

    #[error("cannot expand {token} in `{entry}` of {}", elf.display())]
    #[diagnostic(
        code(gvbuild::elf::token),
        help("gvbuild expands $PLATFORM for x86_64, aarch64 and i386 only")
    )]
    Token { token: String, entry: String, elf: PathBuf },
}

fn chain(loaded_by: &[PathBuf]) -> String {
    loaded_by.iter().map(|p| format!(" (needed by {})", p.display())).collect()
}

fn tried_list(tried: &[PathBuf], skipped: &[(PathBuf, String)]) -> String {
    if tried.is_empty() {
        return "  (nowhere: no dir to search)".into();
    }
    let lines: Vec<String> = tried
        .iter()
        .map(|path| match skipped.iter().find(|(p, _)| p == path) {
            Some((_, why)) => format!("  {}  (exists, skipped: {why})", path.display()),
            None => format!("  {}", path.display()),
        })
        .collect();
    lines.join("\n")
}

/// The shared-library closure of `elfs`, resolved as described in the module docs, with `search`
/// standing in for LD_LIBRARY_PATH and `base` for the working directory a relative path in
/// DT_NEEDED is opened from.
pub fn closure(elfs: &[PathBuf], search: &[PathBuf], base: &Path) -> Result<Closure, ElfError> {
    let system = System {
        conf_dirs: conf_dirs(Path::new(LD_SO_CONF)),
        default_dirs: DEFAULT_DIRS.iter().map(PathBuf::from).collect(),
        base: base.to_path_buf(),
    };
    closure_with(elfs, search, &system)
}

/// Whether `path` starts with the ELF magic. False when it cannot be read.
pub fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && magic == *b"\x7fELF"
}

/// The DT_SONAME of the ELF at `path`, if it is a readable ELF with one.
pub fn soname_of(path: &Path) -> Option<String> {
    let bytes = fs::read(path).ok()?;
    Elf::parse(&bytes).ok()?.soname.map(str::to_string)
}

/// The dirs the loader consults after the ones an ELF names (kept apart so tests can pick them).
struct System {
    conf_dirs: Vec<PathBuf>,
    default_dirs: Vec<PathBuf>,
    /// The working directory a relative path in DT_NEEDED is opened from.
    base: PathBuf,
}

/// What the loader tells ELF files of different architectures apart by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ident {
    class: u8,
    data: u8,
    machine: u16,
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits = if self.class == 1 { "32-bit" } else { "64-bit" };
        let order = if self.data == 1 { "little-endian" } else { "big-endian" };
        write!(f, "{bits} {order} {}", machine_to_str(self.machine))
    }
}

/// The identity of the ELF at `path`: `Ok(None)` when it is not an ELF file.
fn read_ident(path: &Path) -> io::Result<Option<Ident>> {
    let mut head = [0u8; 20];
    let mut file = File::open(path)?;
    let mut len = 0;
    while len < head.len() {
        match file.read(&mut head[len..])? {
            0 => break,
            n => len += n,
        }
    }
    Ok(ident_of(&head[..len]))
}

fn ident_of(head: &[u8]) -> Option<Ident> {
    let [0x7f, b'E', b'L', b'F', class @ (1 | 2), data @ (1 | 2), ..] = *head else { return None };
    let machine = [*head.get(18)?, *head.get(19)?];
    let machine = if data == 1 { u16::from_le_bytes(machine) } else { u16::from_be_bytes(machine) };
    Some(Ident { class, data, machine })
}

/// One ELF of the closure, with its search paths already expanded.
struct Obj {
    path: PathBuf,
    origin: PathBuf,
    ident: Ident,
    /// The object that loaded this one; `None` for the ELFs given.
    loader: Option<usize>,
    /// Empty when the object has a DT_RUNPATH: the loader then ignores its DT_RPATH.
    rpath: Vec<PathBuf>,
    /// Whether it has a DT_RUNPATH (even one with no usable dir in it).
    has_runpath: bool,
    runpath: Vec<PathBuf>,
    needed: Vec<String>,
    nodeflib: bool,
    soname: Option<String>,
    interpreter: Option<PathBuf>,
}

impl Obj {
    fn load(path: &Path, origin: &Path, loader: Option<usize>) -> Result<Obj, ElfError> {
        let bytes =
            fs::read(path).map_err(|source| ElfError::Unreadable { path: path.to_path_buf(), source })?;
        let ident = ident_of(&bytes).ok_or_else(|| ElfError::NotElf { path: path.to_path_buf() })?;
        let elf = Elf::parse(&bytes)
            .map_err(|e| ElfError::Malformed { path: path.to_path_buf(), cause: e.to_string() })?;
        let dirs = |entries: &[&str]| -> Result<Vec<PathBuf>, ElfError> {
            let mut dirs = Vec::new();
            for entry in entries.iter().flat_map(|e| e.split(':')).filter(|e| !e.is_empty()) {
                dirs.extend(expand(entry, origin, ident, path)?.into_iter().map(PathBuf::from));
            }
            Ok(dirs)
        };
        let runpath = dirs(&elf.runpaths)?;
        let rpath = if elf.runpaths.is_empty() { dirs(&elf.rpaths)? } else { Vec::new() };
        Ok(Obj {
            path: path.to_path_buf(),
            origin: origin.to_path_buf(),
            ident,
            loader,
            rpath,
            has_runpath: !elf.runpaths.is_empty(),
            runpath,
            needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
            nodeflib: elf.dynamic.as_ref().is_some_and(|d| d.info.flags_1 & DF_1_NODEFLIB != 0),
            soname: elf.soname.map(str::to_string),
            interpreter: elf.interpreter.map(PathBuf::from),
        })
    }
}

/// Expands the loader's dynamic string tokens in `entry` (an RPATH/RUNPATH dir or a DT_NEEDED
/// name). `$LIB` yields several candidates; unknown `$NAME`s stay as written, as in ld.so.
fn expand(entry: &str, origin: &Path, ident: Ident, elf: &Path) -> Result<Vec<OsString>, ElfError> {
    let mut out = vec![OsString::new()];
    let mut rest = entry;
    while let Some(at) = rest.find('$') {
        let literal = &rest[..at];
        out.iter_mut().for_each(|o| o.push(literal));
        let after = &rest[at + 1..];
        let (name, written, tail) = match after.strip_prefix('{').and_then(|a| a.split_once('}')) {
            Some((name, tail)) => (name, &rest[at..rest.len() - tail.len()], tail),
            None => {
                let end =
                    after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
                (&after[..end], &rest[at..at + 1 + end], &after[end..])
            }
        };
        let values: Vec<OsString> = match name {
            "ORIGIN" => vec![origin.as_os_str().to_os_string()],
            "LIB" => lib_dirs(ident).into_iter().map(OsString::from).collect(),
            "PLATFORM" => vec![OsString::from(platform(ident).ok_or_else(|| ElfError::Token {
                token: written.to_string(),
                entry: entry.to_string(),
                elf: elf.to_path_buf(),
            })?)],
            _ => vec![OsString::from(written)],
        };
        out = out
            .iter()
            .flat_map(|prefix| {
                values.iter().map(move |v| {
                    let mut s = prefix.clone();
                    s.push(v);
                    s
                })
            })
            .collect();
        rest = tail;
    }
    out.iter_mut().for_each(|o| o.push(rest));
    Ok(out)
}

fn lib_dirs(ident: Ident) -> Vec<&'static str> {
    let multiarch = match ident.machine {
        EM_X86_64 if ident.class == 2 => Some("lib/x86_64-linux-gnu"),
        EM_AARCH64 => Some("lib/aarch64-linux-gnu"),
        EM_386 => Some("lib/i386-linux-gnu"),
        _ => None,
    };
    let plain: &[&str] = if ident.class == 2 { &["lib64", "lib"] } else { &["lib"] };
    multiarch.into_iter().chain(plain.iter().copied()).collect()
}

fn platform(ident: Ident) -> Option<&'static str> {
    match ident.machine {
        EM_X86_64 => Some("x86_64"),
        EM_AARCH64 => Some("aarch64"),
        EM_386 => Some("i686"),
        _ => None,
    }
}

fn closure_with(elfs: &[PathBuf], search: &[PathBuf], system: &System) -> Result<Closure, ElfError> {
    let mut objs: Vec<Obj> = Vec::new();
    let mut interpreters: Vec<PathBuf> = Vec::new();
    // The names the loader would find already loaded, so never searches for.
    let mut loaded: HashSet<String> = HashSet::new();
    for elf in elfs {
        let real =
            fs::canonicalize(elf).map_err(|source| ElfError::Unreadable { path: elf.clone(), source })?;
        let obj = Obj::load(elf, real.parent().unwrap_or(Path::new("/")), None)?;
        if let Some(interp) = &obj.interpreter {
            match read_ident(interp) {
                Err(_) => return Err(ElfError::NoInterpreter { path: interp.clone(), elf: elf.clone() }),
                Ok(None) => return Err(ElfError::NotElf { path: interp.clone() }),
                Ok(Some(found)) if found != obj.ident => {
                    return Err(ElfError::WrongClass {
                        path: interp.clone(),
                        elf: elf.clone(),
                        found: found.to_string(),
                        want: obj.ident.to_string(),
                    })
                }
                Ok(Some(_)) => {}
            }
            if !interpreters.contains(interp) {
                loaded.extend(soname_of(interp));
                interpreters.push(interp.clone());
            }
        }
        objs.push(obj);
    }

    let mut libs = Vec::new();
    let mut searched: Vec<PathBuf> = Vec::new();
    let mut queue: VecDeque<usize> = (0..objs.len()).collect();
    while let Some(i) = queue.pop_front() {
        for name in objs[i].needed.clone() {
            if loaded.contains(&name) {
                continue;
            }
            let (path, how) = resolve(&objs, i, &name, search, system, &mut searched)?;
            let origin = path.parent().unwrap_or(Path::new("/")).to_path_buf();
            let obj = Obj::load(&path, &origin, Some(i))?;
            loaded.insert(name.clone());
            loaded.extend(obj.soname.clone());
            libs.push(Lib { soname: name, path, needed_by: objs[i].path.clone(), how });
            objs.push(obj);
            queue.push_back(objs.len() - 1);
        }
    }
    Ok(Closure { interpreters, libs, searched })
}

/// Finds `name`, needed by `objs[i]`, in the loader's order (see the module docs).
fn resolve(
    objs: &[Obj],
    i: usize,
    name: &str,
    search: &[PathBuf],
    system: &System,
    searched: &mut Vec<PathBuf>,
) -> Result<(PathBuf, How), ElfError> {
    let obj = &objs[i];
    let mut candidates: Vec<(PathBuf, How)> = Vec::new();
    let names = if name.contains('$') {
        expand(name, &obj.origin, obj.ident, &obj.path)?
    } else {
        vec![OsString::from(name)]
    };
    if names.iter().any(|n| n.as_encoded_bytes().contains(&b'/')) {
        candidates.extend(names.into_iter().map(|n| (system.base.join(n), How::Path)));
    } else {
        let mut dirs: Vec<(&Path, How)> = Vec::new();
        if !obj.has_runpath {
            let mut at = Some(i);
            while let Some(j) = at {
                dirs.extend(
                    objs[j].rpath.iter().map(|d| (d.as_path(), How::Rpath { of: objs[j].path.clone() })),
                );
                at = objs[j].loader;
            }
        }
        dirs.extend(search.iter().map(|d| (d.as_path(), How::Search)));
        dirs.extend(obj.runpath.iter().map(|d| (d.as_path(), How::Runpath)));
        if !obj.nodeflib {
            dirs.extend(system.conf_dirs.iter().map(|d| (d.as_path(), How::LdSoConf)));
            dirs.extend(system.default_dirs.iter().map(|d| (d.as_path(), How::DefaultPath)));
        }
        let mut seen = HashSet::new();
        for (dir, how) in dirs {
            if !searched.iter().any(|s| s == dir) {
                searched.push(dir.to_path_buf());
            }
            if seen.insert(dir) {
                for n in &names {
                    candidates.push((dir.join(n), how.clone()));
                }
            }
        }
    }

    let mut tried = Vec::new();
    let mut skipped = Vec::new();
    for (path, how) in candidates {
        match read_ident(&path) {
            Ok(Some(ident)) if ident == obj.ident => return Ok((path, how)),
            Ok(Some(ident)) => skipped.push((path.clone(), format!("{ident}, not {}", obj.ident))),
            Ok(None) => skipped.push((path.clone(), "not an ELF file".into())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => skipped.push((path.clone(), e.to_string())),
        }
        tried.push(path);
    }
    let mut loaded_by = Vec::new();
    let mut at = obj.loader;
    while let Some(j) = at {
        loaded_by.push(objs[j].path.clone());
        at = objs[j].loader;
    }
    Err(ElfError::NotFound {
        soname: name.to_string(),
        needed_by: obj.path.clone(),
        loaded_by,
        tried,
        skipped,
    })
}

/// The dirs listed by an ld.so.conf, following `include` globs (relative ones from the including
/// file's dir), as ldconfig reads it: `#` starts a comment, one dir per line, `hwcap` lines are
/// obsolete and ignored. An unreadable file contributes nothing, as it does to ldconfig.
fn conf_dirs(path: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    read_conf(path, 0, &mut dirs);
    let mut seen = HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

fn read_conf(path: &Path, depth: usize, dirs: &mut Vec<PathBuf>) {
    let Ok(text) = fs::read_to_string(path) else { return };
    if depth > MAX_CONF_DEPTH {
        return;
    }
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        let mut words = line.split_whitespace();
        match words.next() {
            None => {}
            Some("include") => {
                for pattern in words {
                    let pattern = match path.parent() {
                        Some(base) if !pattern.starts_with('/') => base.join(pattern),
                        _ => PathBuf::from(pattern),
                    };
                    for file in glob(&pattern) {
                        read_conf(&file, depth + 1, dirs);
                    }
                }
            }
            Some("hwcap") => {}
            Some(_) => {
                let dir = line.trim_end_matches('/');
                if dir.starts_with('/') {
                    dirs.push(PathBuf::from(dir));
                }
            }
        }
    }
}

/// The paths matching `pattern`, sorted per component as glob(3) returns them; `*` and `?` do
/// not match a leading dot.
fn glob(pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::new()];
    for component in pattern.components() {
        let part = component.as_os_str();
        let meta = matches!(component, Component::Normal(_))
            && part.as_encoded_bytes().iter().any(|b| matches!(b, b'*' | b'?' | b'['));
        if !meta {
            found.iter_mut().for_each(|f| f.push(part));
            continue;
        }
        let Ok(matcher) = globset::GlobBuilder::new(&part.to_string_lossy())
            .literal_separator(true)
            .build()
            .map(|g| g.compile_matcher())
        else {
            return Vec::new();
        };
        let dotted = part.as_encoded_bytes().starts_with(b".");
        found = found
            .iter()
            .flat_map(|dir| {
                let base = if dir.as_os_str().is_empty() { Path::new(".") } else { dir.as_path() };
                let mut names: Vec<OsString> = fs::read_dir(base)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.file_name())
                    .filter(|n| dotted || !n.as_encoded_bytes().starts_with(b"."))
                    .filter(|n| matcher.is_match(Path::new(n)))
                    .collect();
                names.sort();
                names.into_iter().map(move |n| dir.join::<&OsStr>(&n))
            })
            .collect();
    }
    found
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::process::Command;

    fn sh(cmd: &mut Command) {
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A C file at `dir/name.c` with `body`.
    fn source(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(format!("{name}.c"));
        fs::write(&path, body).unwrap();
        path
    }

    /// `dir/SONAME`, a shared library exporting `fn_name`, linked with `extra` flags.
    fn shared(dir: &Path, soname: &str, body: &str, extra: &[&str]) -> PathBuf {
        fs::create_dir_all(dir).unwrap();
        let src = source(dir, &soname.replace('.', "_"), body);
        let out = dir.join(soname);
        sh(Command::new("cc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(&out)
            .arg(format!("-Wl,-soname,{soname}"))
            .arg(&src)
            .args(extra));
        fs::remove_file(src).unwrap();
        out
    }

    /// `dir/app` calling foo() from libfoo.so.1 in `libdir`, linked with `extra` flags.
    fn app(dir: &Path, libdir: &Path, extra: &[&str]) -> PathBuf {
        fs::create_dir_all(dir).unwrap();
        let src = source(dir, "main", "int foo(void); int main(void) { return foo(); }\n");
        let out = dir.join("app");
        sh(Command::new("cc")
            .arg("-o")
            .arg(&out)
            .arg(&src)
            .arg(format!("-L{}", libdir.display()))
            .arg("-l:libfoo.so.1")
            .arg(format!("-Wl,-rpath-link,{}", libdir.display()))
            .args(extra));
        fs::remove_file(src).unwrap();
        out
    }

    const FOO: &str = "int foo(void) { return 0; }\n";

    fn none() -> System {
        System {
            conf_dirs: Vec::new(),
            default_dirs: DEFAULT_DIRS.iter().map(PathBuf::from).collect(),
            base: PathBuf::from("/nonexistent-base"),
        }
    }

    /// The closure of `elf` with `search`, and no ld.so.conf (this machine's must not matter).
    fn resolve_for(elf: &Path, search: &[&Path]) -> Result<Closure, ElfError> {
        let search: Vec<PathBuf> = search.iter().map(|p| p.to_path_buf()).collect();
        closure_with(&[elf.to_path_buf()], &search, &none())
    }

    fn lib<'a>(c: &'a Closure, soname: &str) -> &'a Lib {
        c.libs.iter().find(|l| l.soname == soname).unwrap_or_else(|| panic!("no {soname} in {c}"))
    }

    #[test]
    fn ls_needs_libc_and_the_interpreter() {
        let c = closure(&[PathBuf::from("/bin/ls")], &[], Path::new("/")).unwrap();
        assert_eq!(c.interpreters, [PathBuf::from("/lib64/ld-linux-x86-64.so.2")]);
        let libc = lib(&c, "libc.so.6");
        assert!(is_elf(&libc.path));
        assert_eq!(soname_of(&libc.path).as_deref(), Some("libc.so.6"));
        // libc's own DT_NEEDED of the loader is answered by the interpreter, not searched again.
        assert!(c.libs.iter().all(|l| l.soname != "ld-linux-x86-64.so.2"), "{c}");
        // Each name once.
        let names: HashSet<_> = c.libs.iter().map(|l| &l.soname).collect();
        assert_eq!(names.len(), c.libs.len());
    }

    #[test]
    fn origin_runpath_resolves_beside_the_program() {
        let t = tempfile::tempdir().unwrap();
        let libdir = t.path().join("lib");
        shared(&libdir, "libfoo.so.1", FOO, &[]);
        let exe =
            app(&t.path().join("bin"), &libdir, &["-Wl,-rpath,$ORIGIN/../lib", "-Wl,--enable-new-dtags"]);
        let c = closure(std::slice::from_ref(&exe), &[], Path::new("/")).unwrap();
        let foo = lib(&c, "libfoo.so.1");
        assert_eq!(foo.how, How::Runpath);
        assert_eq!(
            fs::canonicalize(&foo.path).unwrap(),
            fs::canonicalize(libdir.join("libfoo.so.1")).unwrap()
        );
        assert_eq!(foo.needed_by, exe);
        assert!(c.libs.iter().any(|l| l.soname == "libc.so.6"));
    }

    #[test]
    fn origin_in_braces_and_rpath() {
        let t = tempfile::tempdir().unwrap();
        let libdir = t.path().join("lib");
        shared(&libdir, "libfoo.so.1", FOO, &[]);
        let exe =
            app(&t.path().join("bin"), &libdir, &["-Wl,-rpath,${ORIGIN}/../lib", "-Wl,--disable-new-dtags"]);
        let c = closure(std::slice::from_ref(&exe), &[], Path::new("/")).unwrap();
        assert_eq!(lib(&c, "libfoo.so.1").how, How::Rpath { of: exe });
    }

    /// Two copies of libfoo.so.1: one in the ELF's own path, one in a search dir.
    fn two_copies(dtags: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let own = t.path().join("own");
        let search = t.path().join("search");
        shared(&own, "libfoo.so.1", FOO, &[]);
        shared(&search, "libfoo.so.1", FOO, &[]);
        let exe = app(&t.path().join("bin"), &own, &["-Wl,-rpath,$ORIGIN/../own", dtags]);
        (t, exe, search)
    }

    #[test]
    fn search_dirs_come_before_runpath() {
        let (_t, exe, search) = two_copies("-Wl,--enable-new-dtags");
        let c = resolve_for(&exe, &[&search]).unwrap();
        let foo = lib(&c, "libfoo.so.1");
        assert_eq!((foo.how.clone(), foo.path.clone()), (How::Search, search.join("libfoo.so.1")));
    }

    #[test]
    fn rpath_comes_before_search_dirs() {
        let (t, exe, search) = two_copies("-Wl,--disable-new-dtags");
        let c = resolve_for(&exe, &[&search]).unwrap();
        let foo = lib(&c, "libfoo.so.1");
        assert_eq!(foo.how, How::Rpath { of: exe });
        assert_eq!(
            fs::canonicalize(&foo.path).unwrap(),
            fs::canonicalize(t.path().join("own/libfoo.so.1")).unwrap()
        );
    }

    /// app -> libfoo -> libbar; both libraries only in the dir app's path names.
    fn chained(dtags: &str) -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let libdir = t.path().join("lib");
        shared(&libdir, "libbar.so.1", "int bar(void) { return 0; }\n", &[]);
        let link = [format!("-L{}", libdir.display()), "-l:libbar.so.1".to_string()];
        let link: Vec<&str> = link.iter().map(String::as_str).collect();
        shared(&libdir, "libfoo.so.1", "int bar(void); int foo(void) { return bar(); }\n", &link);
        let exe = app(&t.path().join("bin"), &libdir, &["-Wl,-rpath,$ORIGIN/../lib", dtags]);
        (t, exe)
    }

    #[test]
    fn the_executables_rpath_applies_to_its_dependencies() {
        let (_t, exe) = chained("-Wl,--disable-new-dtags");
        let c = resolve_for(&exe, &[]).unwrap();
        let bar = lib(&c, "libbar.so.1");
        assert_eq!(bar.how, How::Rpath { of: exe });
        assert_eq!(bar.needed_by, lib(&c, "libfoo.so.1").path);
        // Breadth first: app's needs before libfoo's.
        let pos = |n: &str| c.libs.iter().position(|l| l.soname == n).unwrap();
        assert!(pos("libfoo.so.1") < pos("libc.so.6") && pos("libc.so.6") < pos("libbar.so.1"), "{c}");
    }

    #[test]
    fn runpath_is_not_inherited_and_the_error_names_library_and_needer() {
        let (t, exe) = chained("-Wl,--enable-new-dtags");
        let err = resolve_for(&exe, &[Path::new("/nonexistent-search")]).unwrap_err();
        let ElfError::NotFound { soname, needed_by, loaded_by, tried, .. } = &err else { panic!("{err}") };
        assert_eq!(soname, "libbar.so.1");
        assert!(needed_by.ends_with("lib/libfoo.so.1"));
        assert_eq!(loaded_by, std::slice::from_ref(&exe));
        assert_eq!(tried[0], Path::new("/nonexistent-search/libbar.so.1"));
        let msg = err.to_string();
        assert!(msg.contains("libbar.so.1") && msg.contains(&needed_by.display().to_string()), "{msg}");
        assert!(msg.contains(&exe.display().to_string()) && msg.contains("/usr/lib/libbar.so.1"), "{msg}");
        // With the dir searched, it resolves.
        let c = resolve_for(&exe, &[&t.path().join("lib")]).unwrap();
        assert_eq!(lib(&c, "libbar.so.1").how, How::Search);
    }

    #[test]
    fn a_missing_library_names_itself_and_the_elf_needing_it() {
        let t = tempfile::tempdir().unwrap();
        let libdir = t.path().join("lib");
        shared(&libdir, "libfoo.so.1", FOO, &[]);
        let exe = app(&t.path().join("bin"), &libdir, &[]);
        fs::remove_dir_all(&libdir).unwrap();
        let err =
            closure(std::slice::from_ref(&exe), std::slice::from_ref(&libdir), Path::new("/")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("library libfoo.so.1, needed by {}, was not found", exe.display())),
            "{msg}"
        );
        assert!(msg.contains(&libdir.join("libfoo.so.1").display().to_string()), "{msg}");
        assert!(msg.contains("/lib/x86_64-linux-gnu/libfoo.so.1"), "{msg}");
    }

    #[test]
    fn a_library_of_another_class_is_skipped() {
        let t = tempfile::tempdir().unwrap();
        let own = t.path().join("own");
        let wrong = t.path().join("wrong");
        shared(&own, "libfoo.so.1", FOO, &[]);
        fs::create_dir_all(&wrong).unwrap();
        sh(Command::new("cc")
            .args(["-m32", "-shared", "-nostdlib", "-fPIC", "-Wl,-soname,libfoo.so.1", "-o"])
            .arg(wrong.join("libfoo.so.1"))
            .arg(source(&wrong, "foo", FOO)));
        let exe = app(&t.path().join("bin"), &own, &["-Wl,-rpath,$ORIGIN/../own", "-Wl,--enable-new-dtags"]);
        let c = resolve_for(&exe, &[&wrong]).unwrap();
        assert_eq!(lib(&c, "libfoo.so.1").how, How::Runpath);

        fs::remove_dir_all(&own).unwrap();
        let err = resolve_for(&exe, &[&wrong]).unwrap_err();
        let ElfError::NotFound { skipped, .. } = &err else { panic!("{err}") };
        assert_eq!(skipped[0].0, wrong.join("libfoo.so.1"));
        assert!(
            err.to_string().contains("32-bit little-endian 386, not 64-bit little-endian X86_64"),
            "{err}"
        );
    }

    #[test]
    fn a_symlink_is_reported_where_found() {
        let t = tempfile::tempdir().unwrap();
        let libdir = t.path().join("lib");
        let real = shared(&libdir, "libfoo.so.1.2.3", FOO, &["-Wl,-soname,libfoo.so.1"]);
        symlink("libfoo.so.1.2.3", libdir.join("libfoo.so.1")).unwrap();
        let exe = app(&t.path().join("bin"), &libdir, &[]);
        let c = resolve_for(&exe, &[&libdir]).unwrap();
        let foo = lib(&c, "libfoo.so.1");
        assert_eq!(foo.path, libdir.join("libfoo.so.1"));
        assert_eq!(fs::canonicalize(&foo.path).unwrap(), fs::canonicalize(real).unwrap());
    }

    #[test]
    fn not_an_elf() {
        let t = tempfile::tempdir().unwrap();
        let script = t.path().join("run.sh");
        fs::write(&script, "#!/bin/sh\n").unwrap();
        assert!(!is_elf(&script));
        assert!(is_elf(Path::new("/bin/ls")));
        assert!(matches!(closure(&[script], &[], Path::new("/")), Err(ElfError::NotElf { .. })));
        let missing = t.path().join("missing");
        assert!(matches!(closure(&[missing], &[], Path::new("/")), Err(ElfError::Unreadable { .. })));
    }

    #[test]
    fn ld_so_conf_follows_includes_and_ignores_comments() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("ld.so.conf.d");
        fs::create_dir_all(&d).unwrap();
        fs::write(t.path().join("ld.so.conf"), "# top\n/opt/a/ \ninclude ld.so.conf.d/*.conf\nhwcap 1 x\n")
            .unwrap();
        fs::write(d.join("b.conf"), "/opt/b # trailing\n\n  /opt/a\nrelative/ignored\n").unwrap();
        fs::write(d.join("a.conf"), format!("/opt/c\ninclude {}\n", t.path().join("ld.so.conf").display()))
            .unwrap();
        fs::write(d.join(".hidden.conf"), "/opt/hidden\n").unwrap();
        fs::write(d.join("note.txt"), "/opt/txt\n").unwrap();
        let dirs = conf_dirs(&t.path().join("ld.so.conf"));
        assert_eq!(dirs, ["/opt/a", "/opt/c", "/opt/b"].map(PathBuf::from));
    }

    #[test]
    fn tokens_expand() {
        let x64 = Ident { class: 2, data: 1, machine: EM_X86_64 };
        let o = Path::new("/o");
        let e = |s| expand(s, o, x64, Path::new("elf")).unwrap();
        assert_eq!(e("$ORIGIN/../lib"), ["/o/../lib"]);
        assert_eq!(e("${ORIGIN}/x:y"), ["/o/x:y"]);
        assert_eq!(e("$ORIGINAL/$UNKNOWN"), ["$ORIGINAL/$UNKNOWN"]);
        assert_eq!(
            e("/usr/$LIB/$PLATFORM"),
            ["/usr/lib/x86_64-linux-gnu/x86_64", "/usr/lib64/x86_64", "/usr/lib/x86_64"]
        );
        let riscv = Ident { class: 2, data: 1, machine: 243 };
        let err = expand("/p/${PLATFORM}", o, riscv, Path::new("elf")).unwrap_err();
        assert_eq!(err.to_string(), "cannot expand ${PLATFORM} in `/p/${PLATFORM}` of elf");
    }
}
