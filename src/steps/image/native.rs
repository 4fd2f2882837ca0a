//! `builder: native`: write the Nanos disk image without ops, offline and reproducibly.
//!
//! The manifest JSON is the single source of the root tuple, and each key means what it means to
//! ops, which runs `ops build` in the stage root with `-c` naming the manifest. The rules below
//! come from ops's sources: `cmd/flags_build_image.go` (argv), `cmd/flags_config.go` (the folder
//! MapDirs resolves against), `lepton/image.go` (`setManifestFromConfig`, `addMappedFiles`) and
//! `fs/manifest.go` (`AddUserProgram`, `AddDirectory`, `AddFile`, `AddMount`, `AddKlibs`). Where
//! ops would do something gvbuild cannot or should not (read the build machine's own files,
//! leave an entry out with only a printed warning), the key is refused with an error that says
//! what ops would do.
//!
//! - `Program`: the file at that path in the stage root, its content (a symlink is followed, as
//!   ops's `AddFile` reads it), at `/` + the path (a leading `./` dropped).
//! - `Args`: argv is `[Program as written] + Args`, as ops builds it. When the first argument
//!   names an entry of the stage root, ops copies that entry into the image at that path; so
//!   does this builder.
//! - `Dirs`: each folder of the stage root, walked, at the same path; symlinks stay symlinks.
//! - `Files`: each file of the stage root (absolute or not), its content, at the same path.
//! - `MapDirs`: `host -> image`; `host` resolves against the manifest's folder, and its last
//!   component is a pattern matched against the name of every entry below its folder, at any
//!   depth; a match lands at `image/<relative folder>/<name>`.
//! - `Mounts`: renumbered as `ops build` renumbers them (see [`ops_mounts`]): every key becomes
//!   a VirtFS share `%0`, `%1`, ... in the sorted order of the host paths the keys name, so the
//!   guide's `"%1": "/workspace"` is `%0`, the node's 9p mount tag 0. Each mount point folder
//!   (before any `:options`) is created.
//! - `Klibs`: from `KlibDir` (relative to the stage root) when set, else the release's `klibs/`;
//!   `cloud_init` brings `tls`, and a `firewall` passthrough key brings `firewall`, as in ops.
//! - `ManifestPassthrough`: root tuple keys, after everything else.
//! - `BaseVolumeSz`: the whole image's size, which ops grows the file to.
//!
//! The boot partition holds the release's `kernel.img` and each klib as `/klib/<name>`.
//!
//! What ops adds on its own (environment variables, /etc/passwd, /etc/resolv.conf, the
//! hostname) is added only when `ops_extras` asks for it.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{Builder, Extra, ImageSpec};
use crate::disk::DiskError;
use crate::steps::manifest::Manifest;
use crate::tfs::{FsNode, Tuple, Value};

/// Why a native image could not be built. Most say which manifest key ops would read otherwise,
/// and what to write instead.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum NativeImageError {
    /// Any of the others, after the gevulot.yaml line of the field it is about.
    #[error("{at}{source}")]
    #[diagnostic(code(gvbuild::image::native))]
    At { at: String, source: Box<NativeImageError> },
    #[error("not a native image")]
    NotNative,
    #[error("{what} `{path}` climbs out of the image root with `..`")]
    ClimbsOut { what: &'static str, path: String },
    #[error("{what} `{path}` contains NUL")]
    Nul { what: &'static str, path: String },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot create {}: {source}", path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error(
        "the symlink {} leads nowhere; ops would leave it out of the image with a warning (fs/manifest.go, AddDirectory), and gvbuild does not leave entries out: remove it or point it at something",
        path.display()
    )]
    DanglingSymlink { path: PathBuf },
    #[error("the symlink {} points to a name that is not UTF-8", path.display())]
    SymlinkNotUtf8 { path: PathBuf },
    #[error("{} has a name that is not UTF-8, which TFS cannot hold", path.display())]
    NameNotUtf8 { path: PathBuf },
    #[error("{} is {kind}, not a file, folder or symlink; an image cannot hold it", path.display())]
    Unsupported { path: PathBuf, kind: &'static str },
    #[error("{} is in a symlink loop", path.display())]
    SymlinkLoop { path: PathBuf },
    #[error("{} is {kind}, not a file", path.display())]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("{} is not a file", path.display())]
    BootNotAFile { path: PathBuf },
    #[error(
        "the manifest's {key} entry `{path}` has a `{component}` component: ops would put it in the image under a folder named `{component}`; write the path without it"
    )]
    DotComponent { key: &'static str, path: String, component: String },
    #[error("the manifest's {key} entry `{path}` contains NUL")]
    EntryNul { key: &'static str, path: String },
    #[error(
        "the manifest's {key} entry `{path}` goes through the symlink `{link}` in the stage root; name a path without symlinks on the way"
    )]
    ThroughSymlink { key: &'static str, path: String, link: String },
    #[error("{} `{path}` is not in the stage root {root}", entry_name(key))]
    NotInStageRoot { key: &'static str, path: String, root: String },
    #[error("the manifest's {key} entry `{path}`: {source}")]
    Entry { key: &'static str, path: String, source: Box<NativeImageError> },
    #[error(
        "the manifest's first argument `{first}` names {}, which ops would copy into the image (lepton/image.go); gvbuild copies only plain paths inside the stage root: stage it and name it without `.` or `..`",
        host.display()
    )]
    ArgsCopy { first: String, host: PathBuf },
    #[error(
        "the manifest's MapDirs entry `{host}` maps to `{guest}`, named like the argument `{arg}`; ops refuses this (\"can't have directory with same name as binary\", lepton/image.go)"
    )]
    MapDirsLikeArgument { host: String, guest: String, arg: String },
    #[error(
        "the manifest's MapDirs entry `{host}` is absolute: ops would read it from the build machine's own `/` (lepton/image.go); name a folder of the stage root, relative to the manifest's folder"
    )]
    MapDirsAbsolute { host: String },
    #[error(
        "the manifest's MapDirs entry `{host}` resolves against the folder of the manifest {manifest} (as ops resolves MapDirs, cmd/flags_config.go) to `{joined}`, whose folder is outside the stage root {root}; gvbuild reads the image only from the stage root: write it as `{hint}`"
    )]
    MapDirsOutside { host: String, manifest: String, joined: String, root: String, hint: String },
    #[error("the manifest's MapDirs entry `{host}`: `{folder}` is not a folder in the stage root {root}")]
    MapDirsNotAFolder { host: String, folder: String, root: String },
    #[error("the manifest's MapDirs entry `{host}`: `{pattern}` is not a pattern ops can match: {source}")]
    MapDirsPattern { host: String, pattern: String, source: globset::Error },
    #[error("the manifest's MapDirs entry `{host}`: cannot read {}: {source}", path.display())]
    MapDirsRead { host: String, path: PathBuf, source: walkdir::Error },
    #[error("the manifest's MapDirs entry `{host}`: {} is outside its folder", path.display())]
    MapDirsOutsideFolder { host: String, path: PathBuf },
    #[error(
        "the manifest's MapDirs entry `{host}`: the symlink {} leads nowhere; ops stops on it (\"file is missing\", fs/manifest.go AddLink)",
        path.display()
    )]
    MapDirsDangling { host: String, path: PathBuf },
    #[error("`{shown}` would replace the image root")]
    ReplacesRoot { shown: String },
    #[error("`{shown}` needs `{parent}` to be a folder, but the image has a file there")]
    NeedsFolder { shown: String, parent: String },
    #[error("`{shown}` is put into the image twice, differently")]
    Twice { shown: String },
    #[error("`{shown}` is in a symlink loop (more than {} links)", MAX_HOPS)]
    ImageSymlinkLoop { shown: String },
    #[error(
        "the manifest's Mounts mixes absolute and relative keys: ops numbers its shares in the sorted order of their host paths, relative keys joined onto the manifest's absolute folder, so the numbers would depend on where the project lives; write all keys one way"
    )]
    MountsMixed,
    #[error(
        "`{key}` in the manifest's Mounts climbs out of the project (ops reads it as the host folder `{joined}`, relative to the manifest)"
    )]
    MountClimbsOut { key: String, joined: String },
    #[error("{what} is empty; TFS cannot store an empty string (Nanos would read it as absent)")]
    Empty { what: String },
    #[error(
        "the manifest's Env sets RADAR_KEY: ops would then add the `tls` and `radar` klibs and RADAR_IMAGE_NAME, so that the VM reports to NanoVMs's Radar service (lepton/image.go); gvbuild adds nothing that reaches out of the VM: remove RADAR_KEY"
    )]
    RadarKey,
    #[error(
        "the manifest's ManifestPassthrough sets `{key}`, which the image builder writes itself; ops would replace what it built with it (lepton/image.go), and gvbuild will not"
    )]
    StructuralPassthrough { key: String },
    #[error("cannot read the manifest {shown}: {source}")]
    ReadManifest { shown: String, source: io::Error },
    #[error("the manifest {shown} is not one gvbuild understands: {source}")]
    ParseManifest { shown: String, source: serde_json::Error },
    #[error(
        "the manifest's BaseVolumeSz `{value}` is not a size up to 2 TiB as ops reads it: whole digits, then nothing, k, m or g (fs/mkfs.go, SetFileSystemSize)"
    )]
    BaseVolumeSz { value: String },
    #[error(
        "the manifest's Program `{program}` is absolute: ops reads an absolute Program from the build machine's own `/` (fs/manifest.go, AddUserProgram), not from the stage root; write it relative to the stage root"
    )]
    AbsoluteProgram { program: String },
    #[error("the manifest's Program is empty")]
    EmptyProgram,
    #[error(
        "the manifest's Dirs entry `{dir}` is absolute: ops would copy `{dir}` from the build machine's own `/` (fs/manifest.go, AddDirectory); name a folder of the stage root"
    )]
    AbsoluteDir { dir: String },
    #[error("the mount point `{path}` is a file in the image, not a folder")]
    MountPointIsFile { path: String },
    #[error("the program `{program}` is not a file in the image")]
    ProgramNotAFile { program: String },
    #[error("cannot read the stage root {root}: {source}")]
    ReadStageRoot { root: String, source: io::Error },
    #[error(
        "the Nanos release folder {release} has no {file}; `release:` must be the folder the release tarball (nanos-release-linux-<version>.tar.gz) was extracted into"
    )]
    ReleaseMissing { release: String, file: &'static str },
    #[error("{release}/kernel.img is not an ELF file, so not a Nanos kernel")]
    KernelNotElf { release: String },
    #[error("the manifest's {why}; gvbuild adds no klib on its own: list `{klib}` in Klibs")]
    ImpliedKlib { why: &'static str, klib: &'static str },
    #[error("the manifest's KlibDir `{dir}` is outside the project; name a project folder")]
    KlibDirOutside { dir: String },
    #[error(
        "klib `{klib}` is not in {}; ops would print a note and build the image without it (fs/manifest.go, AddKlibs), and gvbuild will not",
        dir.display()
    )]
    KlibMissing { klib: String, dir: PathBuf },
    #[error("cannot read {release}/boot.img: {source}")]
    ReadBootImg { release: String, source: io::Error },
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("cannot write {into}: {source}")]
    WriteImage { into: String, source: io::Error },
}

/// How an error names a manifest entry of `key`.
fn entry_name(key: &str) -> String {
    if key == "Program" {
        "the program".to_string()
    } else {
        format!("the manifest's {key} entry")
    }
}

/// What a native build made.
#[derive(Debug)]
pub struct Built {
    pub warnings: Vec<String>,
    pub size: u64,
}

type Tree = BTreeMap<String, FsNode>;

/// The version of what this builder writes, in every native image's key: bump it whenever the
/// same inputs would give different image bytes, so that no older image is restored.
pub const FORMAT: u32 = 2;

/// Root tuple keys the manifest's passthrough cannot replace: ops would let it replace them
/// (`AddPassthrough` runs last), throwing away the tree, argv, env, mounts or klibs it built.
const STRUCTURAL: [&str; 6] = ["children", "program", "arguments", "environment", "mounts", "klibs"];

/// Where `ops build` puts each source of the image: the stage root (its working directory) for
/// Program, Args, Dirs, Files and KlibDir, the manifest's folder for MapDirs.
struct Sources<'a> {
    root: &'a Path,
    /// The stage root as gevulot.yaml names it.
    root_shown: &'a str,
    digest_of: DigestOf<'a>,
}

/// The symlink hops Linux allows before ELOOP.
const MAX_HOPS: usize = 40;

/// A path of the image, as its components; `what` names it in errors.
fn components(path: &str, what: &'static str) -> Result<Vec<String>, NativeImageError> {
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(NativeImageError::ClimbsOut { what, path: path.to_string() }),
            c if c.contains('\0') => return Err(NativeImageError::Nul { what, path: path.to_string() }),
            c => out.push(c.to_string()),
        }
    }
    Ok(out)
}

/// The blake3 of a file's content when the caller already knows it (from its stat cache).
pub type DigestOf<'a> = &'a (dyn Fn(&Path) -> Option<[u8; 32]> + Sync);

/// Read a host file, folder or symlink into a node, as ops's `AddDirectory` walks a folder:
/// symlinks stay symlinks. ops leaves out, with a printed warning, a symlink whose target does
/// not exist on the build machine. For a relative target that is decided inside the stage root,
/// and gvbuild refuses such a link instead of leaving an entry out. An absolute target names a
/// path of the image, which ops looks up on the build machine instead; gvbuild keeps the link
/// whatever the build machine holds, so that the image does not depend on it.
fn host_node(path: &Path, digest_of: DigestOf) -> Result<FsNode, NativeImageError> {
    let read = |source| NativeImageError::Read { path: path.to_path_buf(), source };
    let meta = fs::symlink_metadata(path).map_err(read)?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let relative = fs::read_link(path).is_ok_and(|t| t.is_relative());
        match fs::metadata(path) {
            // A loop: the image's own check names it.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {}
            Err(_) if relative => return Err(NativeImageError::DanglingSymlink { path: path.to_path_buf() }),
            _ => {}
        }
        let target = fs::read_link(path).map_err(read)?;
        let target =
            target.to_str().ok_or_else(|| NativeImageError::SymlinkNotUtf8 { path: path.to_path_buf() })?;
        return Ok(FsNode::Symlink(target.to_string()));
    }
    if ft.is_file() {
        return Ok(FsNode::File {
            source: path.to_path_buf(),
            len: meta.len(),
            exec: meta.permissions().mode() & 0o111 != 0,
            digest: digest_of(path),
        });
    }
    if ft.is_dir() {
        let mut children = Tree::new();
        let entries = fs::read_dir(path).map_err(read)?;
        for e in entries {
            let e = e.map_err(read)?;
            let name = e.file_name();
            if e.file_type().is_ok_and(|t| t.is_dir()) && crate::paths::is_skipped_dir(&name) {
                // Left out of every step's key, so left out of the image too.
                continue;
            }
            let Some(name) = name.to_str() else {
                return Err(NativeImageError::NameNotUtf8 { path: e.path() });
            };
            children.insert(name.to_string(), host_node(&e.path(), digest_of)?);
        }
        return Ok(FsNode::Dir(children));
    }
    Err(NativeImageError::Unsupported { path: path.to_path_buf(), kind: crate::steps::stage::kind_of(&ft) })
}

/// A file's content at `path`, following symlinks as ops's `AddFile` does (it records the host
/// path, and mkfs reads what is there).
fn content_node(path: &Path, digest_of: DigestOf) -> Result<FsNode, NativeImageError> {
    let meta = fs::metadata(path).map_err(|source| {
        let path = path.to_path_buf();
        if source.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
            NativeImageError::SymlinkLoop { path }
        } else {
            NativeImageError::Read { path, source }
        }
    })?;
    if !meta.is_file() {
        let kind = if meta.is_dir() { "a folder" } else { crate::steps::stage::kind_of(&meta.file_type()) };
        return Err(NativeImageError::NotAFile { path: path.to_path_buf(), kind });
    }
    Ok(FsNode::File {
        source: path.to_path_buf(),
        len: meta.len(),
        exec: meta.permissions().mode() & 0o111 != 0,
        digest: digest_of(path),
    })
}

/// A regular file of the release or a klib folder, following symlinks: stage2 and the kernel
/// load these by name, and a symlink in the boot filesystem would leave them nothing to load.
fn boot_file(path: &Path, digest_of: DigestOf) -> Result<FsNode, NativeImageError> {
    let meta =
        fs::metadata(path).map_err(|source| NativeImageError::Read { path: path.to_path_buf(), source })?;
    if !meta.is_file() {
        return Err(NativeImageError::BootNotAFile { path: path.to_path_buf() });
    }
    Ok(FsNode::File { source: path.to_path_buf(), len: meta.len(), exec: false, digest: digest_of(path) })
}

/// The components of a manifest path as ops places it. `.` and `..` are refused: ops keeps them
/// in image paths (a folder named `.` in the image), except a leading `./` of the Program,
/// which ops drops (`program_form`).
fn plain(path: &str, key: &'static str, program_form: bool) -> Result<Vec<String>, NativeImageError> {
    let mut out = Vec::new();
    for (i, c) in path.split('/').enumerate() {
        match c {
            "" => {}
            "." if i == 0 && program_form => {}
            "." | ".." => {
                return Err(NativeImageError::DotComponent {
                    key,
                    path: path.to_string(),
                    component: c.to_string(),
                })
            }
            c if c.contains('\0') => return Err(NativeImageError::EntryNul { key, path: path.to_string() }),
            c => out.push(c.to_string()),
        }
    }
    Ok(out)
}

impl Sources<'_> {
    /// The host path of `c` in the stage root, refused when a folder on the way is a symlink
    /// (it would read from outside the stage root) or when nothing is there.
    fn host(&self, c: &[String], key: &'static str) -> Result<PathBuf, NativeImageError> {
        let shown = c.join("/");
        for i in 1..c.len() {
            let parent = self.root.join(c[..i].join("/"));
            if fs::symlink_metadata(&parent).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(NativeImageError::ThroughSymlink { key, path: shown, link: c[..i].join("/") });
            }
        }
        let host = self.root.join(&shown);
        if fs::symlink_metadata(&host).is_err() {
            return Err(NativeImageError::NotInStageRoot {
                key,
                path: shown,
                root: self.root_shown.to_string(),
            });
        }
        Ok(host)
    }

    /// A file's content (ops's `AddFile`: Program, Files).
    fn content(&self, c: &[String], key: &'static str) -> Result<FsNode, NativeImageError> {
        let host = self.host(c, key)?;
        content_node(&host, self.digest_of).map_err(|e| NativeImageError::Entry {
            key,
            path: c.join("/"),
            source: Box::new(e),
        })
    }

    /// A walked folder, file or symlink (ops's `AddDirectory`: Dirs).
    fn walked(&self, c: &[String], key: &'static str) -> Result<FsNode, NativeImageError> {
        let host = self.host(c, key)?;
        host_node(&host, self.digest_of)
    }
}

/// ops's args copy (lepton/image.go): when argv[1] names an entry of the working directory (the
/// stage root), ops puts that entry into the image at that path, a folder walked as Dirs is.
fn args_copy(src: &Sources, tree: &mut Tree, first: &str) -> Result<(), NativeImageError> {
    let joined = format!("{}/{first}", src.root_shown);
    let host = src.root.join(first.trim_start_matches('/'));
    if fs::metadata(&host).is_err() {
        return Ok(());
    }
    let inside = crate::paths::normalize_rel(&joined)
        .is_some_and(|n| n.starts_with(&format!("{}/", src.root_shown.trim_end_matches('/'))));
    let c = match plain(first, "Args", false) {
        Ok(c) if inside && !c.is_empty() => c,
        _ => return Err(NativeImageError::ArgsCopy { first: first.to_string(), host }),
    };
    let node = if fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir()) {
        src.walked(&c, "Args")?
    } else {
        src.content(&c, "Args")?
    };
    insert(tree, &c, node, first)
}

/// One MapDirs entry, as ops's `addMappedFiles` (lepton/image.go) reads it: `host` is joined to
/// the manifest's folder (cmd/flags_config.go) and cleaned; its folder part is walked, and every
/// entry below it (at any depth) whose name matches the last component lands at
/// `guest/<its folder relative to the walked one>/<name>`. A matched folder is created (its
/// contents come only where they match too); symlinks stay symlinks. Returns the stage root's
/// top-level name the entry reads from.
fn map_dir(
    src: &Sources,
    tree: &mut Tree,
    (manifest, manifest_dir): (&str, &str),
    host: &str,
    guest: &str,
    argv: &[&str],
) -> Result<Option<String>, NativeImageError> {
    if let Some(a) = argv.iter().find(|a| Some(**a) == guest.trim_end_matches('/').rsplit('/').next()) {
        return Err(NativeImageError::MapDirsLikeArgument {
            host: host.to_string(),
            guest: guest.to_string(),
            arg: a.to_string(),
        });
    }
    if host.starts_with('/') {
        return Err(NativeImageError::MapDirsAbsolute { host: host.to_string() });
    }
    let joined = if manifest_dir.is_empty() { host.to_string() } else { format!("{manifest_dir}/{host}") };
    let root_prefix = format!("{}/", src.root_shown.trim_end_matches('/'));
    let outside = || NativeImageError::MapDirsOutside {
        host: host.to_string(),
        manifest: manifest.to_string(),
        joined: joined.clone(),
        root: src.root_shown.to_string(),
        hint: relative_hint(manifest_dir, &root_prefix, host),
    };
    let cleaned = crate::paths::normalize_rel(&joined).ok_or_else(outside)?;
    let (dir, pattern) = match cleaned.rsplit_once('/') {
        Some((d, p)) => (d.to_string(), p.to_string()),
        None => (String::new(), cleaned.clone()),
    };
    let in_root = if format!("{dir}/") == root_prefix {
        String::new()
    } else {
        dir.strip_prefix(&root_prefix).map(str::to_string).ok_or_else(outside)?
    };
    let dir_c: Vec<String> = in_root.split('/').filter(|c| !c.is_empty()).map(String::from).collect();
    let walk_root = if dir_c.is_empty() { src.root.to_path_buf() } else { src.host(&dir_c, "MapDirs")? };
    if !walk_root.is_dir() {
        let root = src.root_shown.to_string();
        return Err(NativeImageError::MapDirsNotAFolder { host: host.to_string(), folder: in_root, root });
    }
    let matcher = globset::GlobBuilder::new(&go_pattern(&pattern))
        .literal_separator(true)
        .build()
        .map_err(|source| NativeImageError::MapDirsPattern {
            host: host.to_string(),
            pattern: pattern.clone(),
            source,
        })?
        .compile_matcher();
    let guest_c = components(guest, "the MapDirs target")?;
    // The walked folder itself has the empty name (Go's filepath.Split of "dir/").
    if matcher.is_match("") {
        insert(tree, &guest_c, FsNode::Dir(Tree::new()), guest)?;
    }
    let walker = walkdir::WalkDir::new(&walk_root)
        .sort_by_file_name()
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| !(e.file_type().is_dir() && crate::paths::is_skipped_dir(e.file_name())));
    for e in walker {
        let e = e.map_err(|source| NativeImageError::MapDirsRead {
            host: host.to_string(),
            path: source.path().unwrap_or(&walk_root).to_path_buf(),
            source,
        })?;
        let Some(name) = e.file_name().to_str() else {
            return Err(NativeImageError::NameNotUtf8 { path: e.path().to_path_buf() });
        };
        if !matcher.is_match(name) {
            continue;
        }
        let rel = e.path().strip_prefix(&walk_root).map_err(|_| NativeImageError::MapDirsOutsideFolder {
            host: host.to_string(),
            path: e.path().to_path_buf(),
        })?;
        let mut to = guest_c.clone();
        to.extend(rel.iter().map(|c| c.to_string_lossy().into_owned()));
        let node = if e.file_type().is_dir() {
            FsNode::Dir(Tree::new())
        } else if e.file_type().is_symlink() {
            if fs::metadata(e.path()).is_err() {
                return Err(NativeImageError::MapDirsDangling {
                    host: host.to_string(),
                    path: e.path().to_path_buf(),
                });
            }
            host_node(e.path(), src.digest_of)?
        } else {
            host_node(e.path(), src.digest_of)?
        };
        insert(tree, &to, node, &format!("{guest}/{}", rel.display()))?;
    }
    Ok(dir_c.first().cloned().or_else(|| (!pattern.is_empty()).then(|| pattern.clone())))
}

/// Go's `filepath.Match` pattern as a globset glob: `[^` negates as `[!` does, and braces are
/// literal.
fn go_pattern(p: &str) -> String {
    p.replace("[^", "[!").replace('{', "[{]").replace('}', "[}]")
}

/// `root/host` (stage-root-relative `host`) written relative to the manifest's folder.
fn relative_hint(manifest_dir: &str, root_prefix: &str, host: &str) -> String {
    let from: Vec<&str> = manifest_dir.split('/').filter(|c| !c.is_empty()).collect();
    let to: Vec<&str> = root_prefix.split('/').chain(host.split('/')).filter(|c| !c.is_empty()).collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<&str> = vec![".."; from.len() - common];
    parts.extend(&to[common..]);
    parts.join("/")
}

/// Put `node` at `path` in `tree`, merging folders; a file where a folder must go is an error.
fn insert(tree: &mut Tree, path: &[String], node: FsNode, shown: &str) -> Result<(), NativeImageError> {
    let Some((last, parents)) = path.split_last() else {
        return match node {
            FsNode::Dir(children) => {
                for (k, v) in children {
                    insert(tree, &[k], v, shown)?;
                }
                Ok(())
            }
            _ => Err(NativeImageError::ReplacesRoot { shown: shown.to_string() }),
        };
    };
    let mut dir = tree;
    for p in parents {
        let entry = dir.entry(p.clone()).or_insert_with(|| FsNode::Dir(Tree::new()));
        match entry {
            FsNode::Dir(children) => dir = children,
            _ => return Err(NativeImageError::NeedsFolder { shown: shown.to_string(), parent: p.clone() }),
        }
    }
    match (dir.get_mut(last), node) {
        (Some(FsNode::Dir(existing)), FsNode::Dir(children)) => {
            for (k, v) in children {
                insert(existing, std::slice::from_ref(&k), v, shown)?;
            }
            Ok(())
        }
        (Some(existing), node) if *existing == node => Ok(()),
        (Some(_), _) => Err(NativeImageError::Twice { shown: shown.to_string() }),
        (None, node) => {
            dir.insert(last.clone(), node);
            Ok(())
        }
    }
}

fn lookup<'a>(tree: &'a Tree, path: &[String]) -> Option<&'a FsNode> {
    let (last, parents) = path.split_last()?;
    let mut dir = tree;
    for p in parents {
        match dir.get(p)? {
            FsNode::Dir(children) => dir = children,
            _ => return None,
        }
    }
    dir.get(last)
}

/// Follow symlinks inside the image from `path`; `Ok(None)` for a dangling link, `Err` for a
/// loop. Returns the final path.
fn resolve(tree: &Tree, path: &[String], shown: &str) -> Result<Option<Vec<String>>, NativeImageError> {
    let mut current: Vec<String> = Vec::new();
    let mut pending: Vec<String> = path.iter().rev().cloned().collect();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        if c == ".." {
            current.pop();
            continue;
        }
        current.push(c);
        match lookup(tree, &current) {
            None => return Ok(None),
            Some(FsNode::Symlink(target)) => {
                hops += 1;
                if hops > MAX_HOPS {
                    return Err(NativeImageError::ImageSymlinkLoop { shown: shown.to_string() });
                }
                current.pop();
                if target.starts_with('/') {
                    current.clear();
                }
                for t in target.split('/').rev().filter(|t| !t.is_empty() && *t != ".") {
                    pending.push(t.to_string());
                }
            }
            Some(_) => {}
        }
    }
    Ok(Some(current))
}

/// Every symlink in the tree, as (path, components).
fn symlinks(tree: &Tree, prefix: &[String], out: &mut Vec<Vec<String>>) {
    for (name, node) in tree {
        let mut path = prefix.to_vec();
        path.push(name.clone());
        match node {
            FsNode::Dir(children) => symlinks(children, &path, out),
            FsNode::Symlink(_) => out.push(path),
            _ => {}
        }
    }
}

/// `Mounts` as `ops build` writes them into the image (nanovms/ops
/// `provider/onprem/onprem_volume.go`, `AddVirtfsShares`, which `BuildImage` in
/// `provider/onprem/onprem_image.go` calls before the manifest is written; commits 23eef1b,
/// #1576, and 8806602, #1577, ops 0.1.41 on). For each key that names no ops volume of the
/// build machine (`~/.ops/volumes`), ops takes the key as a host path (relative keys joined
/// onto the folder of the `-c` manifest), and, when nothing or a folder is there, turns it into
/// a VirtFS share: the shares are sorted by host path (`sort.Strings`) and written back as
/// `%0`, `%1`, ... with their mount points unchanged. A `%N` key is such a path too (nothing is
/// there), so `"%1": "/workspace"` alone becomes `"%0": "/workspace"`, which is what the Gevulot
/// node's `mount_tag=0` attaches: Nanos matches `%N` against the 9p tag read as a decimal
/// attach id (nanos `src/kernel/storage.c`, `volume_match`).
///
/// The image must not depend on the build machine, so two of ops's looks at it are not made:
/// gvbuild has no ops volumes, and a key naming one of yours is numbered here where ops would
/// keep it; ops also keeps a key whose host path is an existing file, which gvbuild numbers
/// like any other. What would make the order depend on the machine is refused: a relative key
/// beside an absolute one (ops joins relative keys onto the manifest's absolute folder), and a
/// key that climbs out of the project.
pub fn ops_mounts(
    mounts: &BTreeMap<String, String>,
    manifest_dir: &str,
) -> Result<BTreeMap<String, String>, NativeImageError> {
    let absolute = mounts.keys().filter(|k| k.starts_with('/')).count();
    if absolute > 0 && absolute < mounts.len() {
        return Err(NativeImageError::MountsMixed);
    }
    let mut shares: Vec<(String, &String)> = Vec::new();
    for (key, mount_point) in mounts {
        let host = if key.starts_with('/') {
            crate::paths::normalize_abs(key)
        } else {
            let joined = if manifest_dir.is_empty() { key.clone() } else { format!("{manifest_dir}/{key}") };
            crate::paths::normalize_rel(&joined).ok_or_else(|| NativeImageError::MountClimbsOut {
                key: key.clone(),
                joined: joined.clone(),
            })?
        };
        shares.push((host, mount_point));
    }
    shares.sort();
    Ok(shares.into_iter().enumerate().map(|(i, (_, mp))| (format!("%{i}"), mp.clone())).collect())
}

/// The root tuple of `m` (without `children`).
fn root_tuple(
    m: &Manifest,
    program: &str,
    klibs: bool,
    extras: &[Extra],
    ids: (&str, Option<&str>),
) -> Result<Tuple, NativeImageError> {
    // TFS has no empty string: a zero-length value reads back as "no such attribute".
    let empty = |what: String| Err(NativeImageError::Empty { what });
    if let Some(i) = m.args.iter().position(String::is_empty) {
        return empty(format!("argument {i} in the manifest's Args"));
    }
    for (what, map) in [("Env", &m.env), ("ManifestPassthrough", &m.passthrough), ("Mounts", &m.mounts)] {
        if let Some((k, _)) = map.iter().find(|(k, v)| k.is_empty() || v.is_empty()) {
            return empty(format!("`{k}` in the manifest's {what}, or its value,"));
        }
    }
    if m.env.contains_key("RADAR_KEY") {
        return Err(NativeImageError::RadarKey);
    }
    let mut t = Tuple::new();
    t.insert("program".into(), Value::str(program));
    // Nanos passes `arguments` as argv as it is. ops puts the Program as written in front of
    // Args on every build (cmd/flags_build_image.go), so argv[0] is the program's name.
    let args = std::iter::once(&m.program).chain(&m.args).map(|a| Value::str(a)).collect();
    t.insert("arguments".into(), Value::Vector(args));
    let mut env = Tuple::new();
    if extras.contains(&Extra::Env) {
        let (image_name, nanos_version) = ids;
        env.insert("USER".into(), Value::str("root"));
        env.insert("PWD".into(), Value::str("/"));
        env.insert("NANOS_ARCH".into(), Value::str("x86_64"));
        env.insert("IMAGE_NAME".into(), Value::str(image_name));
        if let Some(v) = nanos_version {
            env.insert("NANOS_VERSION".into(), Value::str(v));
        }
    }
    for (k, v) in &m.env {
        env.insert(k.clone(), Value::str(v));
    }
    t.insert("environment".into(), Value::Tuple(env));
    if !m.mounts.is_empty() {
        // Already renumbered as ops numbers them (`ops_mounts`).
        t.insert(
            "mounts".into(),
            Value::Tuple(m.mounts.iter().map(|(k, v)| (k.clone(), Value::str(v))).collect()),
        );
    }
    if klibs {
        t.insert("klibs".into(), Value::str("bootfs"));
    }
    if m.reboot_on_exit {
        t.insert("reboot_on_exit".into(), Value::str("t"));
    }
    for (k, v) in &m.passthrough {
        if STRUCTURAL.contains(&k.as_str()) {
            return Err(NativeImageError::StructuralPassthrough { key: k.clone() });
        }
        t.insert(k.clone(), Value::str(v));
    }
    Ok(t)
}

/// A size as ops's mkfs reads BaseVolumeSz: whole digits, then nothing, k, m or g (any case).
fn ops_size(s: &str) -> Option<u64> {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let mult: u64 = match s[digits.len()..].to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return None,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

/// The release's files are at the top of the extracted tarball, or in its one subfolder.
fn release_folder(dir: &Path) -> Result<PathBuf, NativeImageError> {
    if dir.join("kernel.img").exists() {
        return Ok(dir.to_path_buf());
    }
    let mut subs = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries {
            let e = e.map_err(|source| NativeImageError::Read { path: dir.to_path_buf(), source })?;
            if e.path().is_dir() {
                subs.push(e.path());
            }
        }
    }
    Ok(match subs.as_slice() {
        [only] if only.join("kernel.img").exists() => only.clone(),
        _ => dir.to_path_buf(),
    })
}

fn read_manifest(path: &Path, shown: &str) -> Result<Manifest, NativeImageError> {
    let text = fs::read_to_string(path)
        .map_err(|source| NativeImageError::ReadManifest { shown: shown.to_string(), source })?;
    serde_json::from_str(&text)
        .map_err(|source| NativeImageError::ParseManifest { shown: shown.to_string(), source })
}

/// Build the image of `spec` into `into` (project-relative). An error starts with the
/// gevulot.yaml line of the field it is about: the manifest, the release, or the size.
pub fn build(
    project: &Path,
    spec: &ImageSpec,
    into: &str,
    digest_of: DigestOf,
) -> Result<Built, NativeImageError> {
    let mut field = "manifest";
    build_in(project, spec, into, digest_of, &mut field)
        .map_err(|e| NativeImageError::At { at: spec.at.prefix(field), source: Box::new(e) })
}

/// `field` follows the build from section to section, naming what an error is about: the
/// root filesystem (`manifest`), the boot filesystem (`release`), then the writing (`size` or
/// `into`).
fn build_in(
    project: &Path,
    spec: &ImageSpec,
    into: &str,
    digest_of: DigestOf,
    field: &mut &'static str,
) -> Result<Built, NativeImageError> {
    let Builder::Native { release, size, extras } = &spec.builder else {
        return Err(NativeImageError::NotNative);
    };
    let mut m = read_manifest(&project.join(&spec.manifest), &spec.manifest)?;
    let base_volume = base_volume(&m)?;
    let root_dir = project.join(&spec.root);
    let release_dir = release_folder(&project.join(release))?;
    let src = Sources { root: &root_dir, root_shown: &spec.root, digest_of };

    // The root filesystem: what the manifest names from the stage root.
    let manifest_dir =
        Path::new(&spec.manifest).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    let root = root_tree(&src, &m, (&spec.manifest, &manifest_dir), extras)?;
    let warnings = left_out(&root_dir, &spec.root, &root)?.into_iter().collect();
    let name = super::image_name(into);
    m.mounts = ops_mounts(&m.mounts, &manifest_dir)?;
    let attrs = root_tuple(
        &m,
        &root.program_shown,
        !m.klibs.is_empty(),
        extras,
        (&name, spec.nanos_version.as_deref()),
    )?;

    // The boot filesystem: the kernel and the klibs.
    *field = "release";
    let release_at = (release.as_str(), release_dir.as_path());
    let (boot, boot_tree) = boot_partition(&m, release_at, (&root_dir, &spec.root), digest_of)?;
    let root_size = match (size, base_volume) {
        (Some(n), _) => crate::disk::RootSize::Exactly(*n),
        (None, Some(n)) => {
            crate::disk::RootSize::ImageAtLeast(n.div_ceil(crate::disk::SECTOR) * crate::disk::SECTOR)
        }
        (None, None) => crate::disk::RootSize::Auto,
    };

    *field = if size.is_some() { "size" } else { "into" };
    let written = write_image(&project.join(into), into, &boot, &boot_tree, (&root.tree, &attrs), root_size)?;
    Ok(Built { warnings, size: written.size })
}

/// The manifest's BaseVolumeSz in bytes, if it gives one: a size as ops reads it, up to the
/// largest volume.
fn base_volume(m: &Manifest) -> Result<Option<u64>, NativeImageError> {
    match m.base_volume_sz.as_deref() {
        None => Ok(None),
        Some(b) => match ops_size(b) {
            Some(n) if n <= crate::disk::MAX_SIZE => Ok(Some(n)),
            _ => Err(NativeImageError::BaseVolumeSz { value: b.to_string() }),
        },
    }
}

/// The root filesystem as [`root_tree`] builds it.
struct RootTree {
    tree: Tree,
    /// The program's path in the image, `/`-led.
    program_shown: String,
    /// The stage root's top-level entries MapDirs read from.
    map_from: Vec<String>,
}

/// The root filesystem the manifest names, in ops's order: Program, Dirs, Files, MapDirs, the
/// first argument's entry, the mount points, the extras asked for. Checked: the program is a
/// file, and no symlink loops. `manifest` is (the manifest's path, its folder).
fn root_tree(
    src: &Sources,
    m: &Manifest,
    manifest: (&str, &str),
    extras: &[Extra],
) -> Result<RootTree, NativeImageError> {
    let mut tree = Tree::new();
    let (program, program_shown) = named_entries(src, m, &mut tree)?;
    // ops's argv: the program as written, then Args (cmd/flags_build_image.go).
    let argv: Vec<&str> =
        std::iter::once(m.program.as_str()).chain(m.args.iter().map(String::as_str)).collect();
    let mut map_from = Vec::new();
    for (host, guest) in &m.map_dirs {
        map_from.extend(map_dir(src, &mut tree, manifest, host, guest, &argv)?);
    }
    if let Some(first) = m.args.first() {
        args_copy(src, &mut tree, first)?;
    }
    mount_points(m, &mut tree)?;
    add_extras(extras, &mut tree)?;
    match resolve(&tree, &program, &program_shown)? {
        Some(p) if matches!(lookup(&tree, &p), Some(FsNode::File { .. } | FsNode::Bytes { .. })) => {}
        _ => return Err(NativeImageError::ProgramNotAFile { program: program_shown }),
    }
    let mut links = Vec::new();
    symlinks(&tree, &[], &mut links);
    for l in &links {
        resolve(&tree, l, &format!("/{}", l.join("/")))?;
    }
    Ok(RootTree { tree, program_shown, map_from })
}

/// Put the manifest's Program, Dirs and Files into `tree`. Returns the program's path in the
/// image, as components and as shown (`/`-led).
fn named_entries(
    src: &Sources,
    m: &Manifest,
    tree: &mut Tree,
) -> Result<(Vec<String>, String), NativeImageError> {
    if m.program.starts_with('/') {
        return Err(NativeImageError::AbsoluteProgram { program: m.program.clone() });
    }
    let program = plain(&m.program, "Program", true)?;
    if program.is_empty() {
        return Err(NativeImageError::EmptyProgram);
    }
    let program_shown = format!("/{}", program.join("/"));
    let node = src.content(&program, "Program")?;
    insert(tree, &program, node, &program_shown)?;
    for d in &m.dirs {
        if d.starts_with('/') {
            return Err(NativeImageError::AbsoluteDir { dir: d.clone() });
        }
        let c = plain(d, "Dirs", false)?;
        let node = src.walked(&c, "Dirs")?;
        insert(tree, &c, node, d)?;
    }
    for f in &m.files {
        // ops joins even an absolute Files entry to its working directory (lepton/image.go).
        let c = plain(f, "Files", false)?;
        let node = src.content(&c, "Files")?;
        insert(tree, &c, node, f)?;
    }
    Ok((program, program_shown))
}

/// Create each mount point folder of the manifest's Mounts in `tree`.
fn mount_points(m: &Manifest, tree: &mut Tree) -> Result<(), NativeImageError> {
    for value in m.mounts.values() {
        // `/data:ro`: the mount point is the part before the options (fs/manifest.go, AddMount).
        let path = value.trim_start_matches('/').split(':').next().unwrap_or_default();
        let c = components(path, "the mount point")?;
        match lookup(tree, &c) {
            Some(FsNode::Dir(_)) => {}
            None => insert(tree, &c, FsNode::Dir(Tree::new()), path)?,
            Some(_) => return Err(NativeImageError::MountPointIsFile { path: path.to_string() }),
        }
    }
    Ok(())
}

/// Add the files of the ops extras asked for, where the tree has nothing yet.
fn add_extras(extras: &[Extra], tree: &mut Tree) -> Result<(), NativeImageError> {
    let text = |s: &str| FsNode::Bytes { data: s.as_bytes().to_vec(), exec: false };
    for x in extras {
        let (path, content) = match x {
            Extra::Env => continue,
            Extra::Passwd => ("etc/passwd", "root:x:0:0:root:/root:/bin/nobash"),
            Extra::ResolvConf => ("etc/resolv.conf", "nameserver 8.8.8.8\n"),
            Extra::Hostname => ("proc/sys/kernel/hostname", "uniboot"),
        };
        let c = components(path, "an extra")?;
        if lookup(tree, &c).is_none() {
            insert(tree, &c, text(content), path)?;
        }
    }
    Ok(())
}

/// The warning for the top-level entries of the stage root (`root_dir`, named `root_shown`)
/// that the image leaves out, if any.
fn left_out(root_dir: &Path, root_shown: &str, root: &RootTree) -> Result<Option<String>, NativeImageError> {
    let mut left: Vec<String> = Vec::new();
    let read_root = |source| NativeImageError::ReadStageRoot { root: root_shown.to_string(), source };
    for e in fs::read_dir(root_dir).map_err(read_root)? {
        let e = e.map_err(read_root)?;
        let n = e.file_name().to_string_lossy().into_owned();
        if !root.tree.contains_key(&n) && !root.map_from.contains(&n) {
            left.push(n);
        }
    }
    left.sort();
    if left.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "the stage root {} has {} that the manifest leaves out of the image (add them to dirs or files): {}",
        root_shown,
        if left.len() == 1 { "an entry" } else { "entries" },
        left.join(", ")
    )))
}

/// The boot partition: the release's boot.img, and the boot filesystem with its kernel and the
/// manifest's klibs. `release` is (as gevulot.yaml names it, its files' folder); `root` is (the
/// stage root, as gevulot.yaml names it).
fn boot_partition(
    m: &Manifest,
    (release, release_dir): (&str, &Path),
    (root_dir, root_shown): (&Path, &str),
    digest_of: DigestOf,
) -> Result<(Vec<u8>, Tree), NativeImageError> {
    let kernel = release_dir.join("kernel.img");
    let boot_img = release_dir.join("boot.img");
    for (f, file) in [(&kernel, "kernel.img"), (&boot_img, "boot.img")] {
        if !f.is_file() {
            return Err(NativeImageError::ReleaseMissing { release: release.to_string(), file });
        }
    }
    let mut head = [0u8; 4];
    let is_elf =
        fs::File::open(&kernel).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head)).is_ok()
            && head == *b"\x7fELF";
    if !is_elf {
        return Err(NativeImageError::KernelNotElf { release: release.to_string() });
    }
    let mut boot_tree = Tree::new();
    boot_tree.insert("kernel".into(), boot_file(&kernel, digest_of)?);
    if let Some(klibs) = klibs(m, (root_dir, root_shown), release_dir, digest_of)? {
        boot_tree.insert("klib".into(), FsNode::Dir(klibs));
    }
    let boot = fs::read(&boot_img)
        .map_err(|source| NativeImageError::ReadBootImg { release: release.to_string(), source })?;
    Ok((boot, boot_tree))
}

/// The klibs of the boot filesystem, `None` when the manifest loads none: each from KlibDir
/// (in the stage root) when set, else from the release's `klibs/`, as ops looks. Klibs that
/// ops would add on its own must be listed.
fn klibs(
    m: &Manifest,
    (root_dir, root_shown): (&Path, &str),
    release_dir: &Path,
    digest_of: DigestOf,
) -> Result<Option<Tree>, NativeImageError> {
    // Klibs ops adds on its own (lepton/image.go, fs/manifest.go AddKlibs) must be listed.
    let implied = [
        (m.klibs.iter().any(|k| k == "cloud_init"), "tls", "Klibs has `cloud_init`, to which ops adds `tls`"),
        (
            m.passthrough.contains_key("firewall"),
            "firewall",
            "ManifestPassthrough sets `firewall`, for which ops adds the `firewall` klib",
        ),
    ];
    for (when, klib, why) in implied {
        if when && !m.klibs.iter().any(|k| k == klib) {
            return Err(NativeImageError::ImpliedKlib { why, klib });
        }
    }
    if m.klibs.is_empty() {
        return Ok(None);
    }
    let mut klibs = Tree::new();
    if let Some(d) = &m.klib_dir {
        if crate::paths::normalize_rel(&format!("{root_shown}/{d}")).is_none() || d.starts_with('/') {
            return Err(NativeImageError::KlibDirOutside { dir: d.clone() });
        }
    }
    // ops looks in KlibDir when it is set, else in the release's klibs/ (lepton/image.go).
    let klib_dir = match &m.klib_dir {
        Some(d) => root_dir.join(d),
        None => release_dir.join("klibs"),
    };
    for k in &m.klibs {
        components(k, "the klib")?;
        let found = klib_dir.join(k);
        if !found.is_file() {
            let dir = found.parent().unwrap_or(&klib_dir).to_path_buf();
            return Err(NativeImageError::KlibMissing { klib: k.clone(), dir });
        }
        klibs.insert(k.clone(), boot_file(&found, digest_of)?);
    }
    Ok(Some(klibs))
}

/// Write the disk image to `dest` (`into`, as gevulot.yaml names it) through a temp file
/// beside it, renamed into place; the temp file goes on failure. `root` is the root
/// filesystem's tree and root tuple.
fn write_image(
    dest: &Path,
    into: &str,
    boot: &[u8],
    boot_tree: &Tree,
    (tree, attrs): (&Tree, &Tuple),
    root_size: crate::disk::RootSize,
) -> Result<crate::disk::DiskWritten, NativeImageError> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)
            .map_err(|source| NativeImageError::Create { path: parent.to_path_buf(), source })?;
    }
    let tmp = crate::fsutil::temp_beside(dest);
    let written = (|| {
        let out = fs::File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|source| NativeImageError::Create { path: tmp.clone(), source })?;
        let w = crate::disk::write_disk(&out, boot, boot_tree, tree, attrs, root_size)?;
        fs::rename(&tmp, dest)
            .map_err(|source| NativeImageError::WriteImage { into: into.to_string(), source })?;
        Ok::<_, NativeImageError>(w)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn symlink_loops_are_found_and_dangling_links_are_not_loops() {
        let mut t = Tree::new();
        t.insert("a".into(), FsNode::Symlink("b".into()));
        t.insert("b".into(), FsNode::Symlink("/a".into()));
        t.insert("d".into(), FsNode::Symlink("nowhere".into()));
        t.insert("f".into(), FsNode::Bytes { data: vec![], exec: true });
        t.insert("g".into(), FsNode::Symlink("./f".into()));
        assert!(resolve(&t, &["a".into()], "/a").unwrap_err().to_string().contains("loop"));
        assert_eq!(resolve(&t, &["d".into()], "/d").unwrap(), None);
        assert_eq!(resolve(&t, &["g".into()], "/g").unwrap(), Some(vec!["f".to_string()]));
    }

    /// ops's AddVirtfsShares: sorted by host path (strings), numbered from %0, mount points kept.
    #[test]
    fn mounts_are_numbered_as_ops_numbers_virtfs_shares() {
        let m = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let got = ops_mounts(&m(&[("%1", "/workspace")]), "build").unwrap();
        assert_eq!(got, m(&[("%0", "/workspace")]));
        let got = ops_mounts(&m(&[("%2", "/b"), ("%10", "/a:ro"), ("data", "/d")]), "").unwrap();
        assert_eq!(got, m(&[("%0", "/a:ro"), ("%1", "/b"), ("%2", "/d")]));
        // Host paths as path.Join cleans them: `x/../%9` sorts as `%9`.
        let got = ops_mounts(&m(&[("x/../%9", "/w"), ("%5", "/v")]), "").unwrap();
        assert_eq!(got, m(&[("%0", "/v"), ("%1", "/w")]));
        let got = ops_mounts(&m(&[("/srv/b", "/b"), ("/srv/a/", "/a")]), "").unwrap();
        assert_eq!(got, m(&[("%0", "/a"), ("%1", "/b")]));
        assert!(ops_mounts(&m(&[("/srv/a", "/a"), ("%1", "/w")]), "")
            .unwrap_err()
            .to_string()
            .contains("mixes absolute"));
        assert!(ops_mounts(&m(&[("../%1", "/w")]), "").unwrap_err().to_string().contains("climbs out"));
    }
}
