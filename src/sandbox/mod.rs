//! The sandbox of `run:` steps: a step sees of the project only its [`Visible`] set (what the
//! remote input root holds), can write only its declared outputs, its `scratch:` folders and
//! a private TMPDIR, and sees the rest of the machine read-only. docs/sandbox.md is the
//! user's account, with the reasons for this mechanism.
//!
//! # Mechanism
//! Each sandboxed step runs in a new mount namespace (with a user namespace when gvbuild is
//! not root, or root without `CAP_SYS_ADMIN`), set up in its own process before `execve`
//! ([`child`], started as `posix_spawn` starts one: no copy of gvbuild's page tables):
//! 1. `/` is made private, then read-only recursively (one `mount_setattr`, Linux 5.12).
//! 2. A fresh tmpfs covers the build's TMPDIR folder (an empty folder in the system's temp
//!    folder, [`Sandboxing::tmp`]).
//! 3. The project folder is covered by a tmpfs, then by the *view*, one of two kinds:
//!    - **lazy** (where FUSE and overlayfs work): an overlay whose lower layer is a FUSE file
//!      system gvbuild serves ([`fuse`]), answering each lookup from the visible set (a
//!      dependency's output with what is on disk at and below it), and whose upper layer is a
//!      tmpfs folder that takes every write. It costs what the step looks up, not what it may
//!      see. As root one FUSE file system serves every step ([`fuse::Shared`]): it is mounted
//!      at the TMPDIR folder in a mount namespace of its own, which the sandbox starts from
//!      (`setns` before step 1), and the step's TMPDIR (step 2) covers it only once the
//!      overlay holds the view.
//!    - **bound** (elsewhere, or `GVBUILD_SANDBOX_VIEW=bind`): every folder of the visible set
//!      is made in the tmpfs, every visible file is bound over an empty file read-only (a
//!      clone of its mount, `open_tree` and `move_mount`), a folder that holds exactly its
//!      visible files and that no other running step writes into is bound whole, symlinks are
//!      made as symlinks. About 45 µs a visible file.
//!
//!    In both, each scratch folder is bound writable from disk.
//! 4. The tmpfs holding what the step wrote (the upper layer, or the bound view itself) goes
//!    back to the parent (`SCM_RIGHTS`), which keeps it alive past the step: after the step,
//!    each declared output found in it is copied into the project, and anything else written
//!    there (a changed or removed visible file included) is an undeclared write and fails the
//!    step.
//!
//! A path that is not in the view does not exist for the step (ENOENT), so an include search
//! goes on past it as on a remote worker; a write outside the project fails with EROFS.
//! `network: false` adds a network namespace (no interface but a down loopback).
//!
//! # When the machine has no sandbox
//! The first sandboxed step probes the machine (`:` run the same way, one file shown). A kernel or a
//! container without the namespaces makes one warning for the build, naming the cause and
//! the fix, and every step runs unsandboxed; never silently.

mod child;
pub mod diagnose;
mod fuse;

use std::collections::HashMap;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rustix::net::{
    recvmsg, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SocketFlags, SocketType,
};

pub use self::child::Phase;
use self::child::{cstr, Op, Setup};
use crate::fingerprint::Digest;

/// One path of a step's visible set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A file, with what its key says of it: executable, blake3 digest, size in bytes.
    File { exec: bool, digest: Digest, size: u64 },
    /// A symlink, with its text.
    Link(String),
    /// A folder (it may be empty).
    Folder,
    /// A dependency's declared output, unread: whatever is on disk there (a file, a symlink,
    /// or a folder with all below it) when the step looks.
    Output,
}

/// A step's visible set, made by `exec::visible` (which says what it holds).
#[derive(Debug, Default)]
pub struct Visible {
    /// Project paths (relative, `/`-separated) in the order they were found; a later entry for
    /// a path replaces an earlier one.
    pub entries: Vec<(String, Entry)>,
    /// The project paths of the files among `entries`.
    pub files: BTreeSet<String>,
    /// The targets (graph indexes) whose outputs are in the set: every target the step
    /// depends on, directly or not.
    pub deps: fixedbitset::FixedBitSet,
    /// Not all of the set is in `entries` ([`crate::exec::visible::Detail::Lazy`]): the
    /// outputs of `deps`, and the files in `discover`. Only a lazy view, told every target's
    /// outputs ([`Spec::produced`]), can show them.
    pub unlisted: bool,
    /// Where `unlisted`: the folders a depfile step may discover files in, each walked once.
    pub discover: Vec<Arc<Discoverable>>,
}

/// The files of one project folder that a depfile step may discover (`exec::visible` walks it:
/// not ignored by git, written by no target), with the folders that hold them.
#[derive(Debug, Default)]
pub struct Discoverable {
    /// Project paths, in the walk's order.
    pub files: Vec<String>,
    set: std::collections::HashSet<String>,
    folders: std::collections::HashSet<String>,
    /// The folder walked: a file that appears below it would be one more to discover (`""`:
    /// the project folder, its own files only). `None` for a list not walked.
    walked: Option<String>,
}

impl Discoverable {
    pub fn new(files: Vec<String>) -> Discoverable {
        let set = files.iter().cloned().collect();
        let mut folders = std::collections::HashSet::new();
        for f in &files {
            let mut p = f.as_str();
            while let Some((dir, _)) = p.rsplit_once('/') {
                if !folders.insert(dir.to_string()) {
                    break;
                }
                p = dir;
            }
        }
        Discoverable { files, set, folders, walked: None }
    }

    /// The files walked below project folder `dir` (`""`: the project folder's own).
    pub fn walked(dir: &str, files: Vec<String>) -> Discoverable {
        Discoverable { walked: Some(dir.to_string()), ..Discoverable::new(files) }
    }

    /// The folder walked (`""`: the project folder's own files), or `None` for a list not walked.
    pub fn walked_folder(&self) -> Option<&str> {
        self.walked.as_deref()
    }

    /// Whether something at project path `p` would show files to discover, were it there: a
    /// file in the folder walked (git and the targets' outputs aside), or that folder, a folder
    /// below it or above it.
    pub fn would_hold(&self, p: &str) -> bool {
        let dir = p.rsplit_once('/').map_or("", |(d, _)| d);
        match self.walked.as_deref() {
            Some("") => dir.is_empty(),
            Some(w) => crate::paths::is_within(dir, w) || crate::paths::is_within(w, p),
            None => false,
        }
    }

    /// Whether project path `p` is one of the files (and not another step's write in flight).
    pub fn holds(&self, p: &str) -> bool {
        self.set.contains(p) && !crate::fsutil::is_temp(Path::new(p))
    }

    /// Whether project folder `p` holds one of the files.
    pub fn holds_below(&self, p: &str) -> bool {
        self.folders.contains(p)
    }
}

impl Visible {
    /// Add a file with what its key says of it.
    pub fn file(&mut self, p: &str, exec: bool, digest: Digest, size: u64) {
        self.entries.push((p.to_string(), Entry::File { exec, digest, size }));
        self.files.insert(p.to_string());
    }
}

/// What the machine gives, found by the first sandboxed step of a build.
#[derive(Debug, Clone)]
pub enum Support {
    /// Namespaces work: `user` says whether a user namespace is needed, `detached` whether
    /// binds can come from a detached clone of the project's mount, `lazy` whether views are
    /// lazy ([`fuse`]: FUSE and overlayfs work here) rather than one bind per visible file.
    Yes { user: bool, detached: bool, lazy: bool },
    /// No sandbox here: the reason, said once as a warning.
    No(String),
}

/// The build's sandbox: whether it is wanted (`--no-sandbox` says no), what the machine
/// gives, and the warning said once.
pub struct Sandboxing {
    pub wanted: bool,
    support: OnceLock<Support>,
    warned: Mutex<bool>,
    /// The empty folder each sandbox covers with its private TMPDIR (made with the probe).
    tmp: PathBuf,
}

impl Sandboxing {
    /// The sandbox of a build of the project in `root`.
    pub fn new(wanted: bool, root: &Path) -> Sandboxing {
        // One folder per user, kept: every sandbox covers it with a tmpfs of its own (in its own
        // mount namespace), so builds share it without seeing each other's files, and a killed
        // build leaves nothing new behind. Never in the project (a TMPDIR there), and in `/tmp`
        // when the caller's TMPDIR is missing.
        let uid = rustix::process::geteuid().as_raw();
        let base = std::env::temp_dir();
        let usable = base.is_absolute() && base.is_dir() && !base.starts_with(root);
        let base = if usable { base } else { PathBuf::from("/tmp") };
        let tmp = base.join(format!("gvbuild-sandbox-{uid}"));
        Sandboxing { wanted, support: OnceLock::new(), warned: Mutex::new(false), tmp }
    }

    /// What the machine gives (probed once, on first use).
    pub fn support(&self) -> &Support {
        self.support.get_or_init(|| match own_folder(&self.tmp) {
            Ok(()) => probe(&self.tmp),
            Err(e) => {
                Support::No(format!("cannot make the sandboxes' temp folder {}: {e}", self.tmp.display()))
            }
        })
    }

    /// The folder each sandbox's TMPDIR covers.
    pub fn tmp(&self) -> &Path {
        &self.tmp
    }

    /// The warning to say for a build whose sandboxed step ran unsandboxed, or whose
    /// `GVBUILD_SANDBOX_VIEW=lazy` this machine cannot give: `Some` once.
    pub fn take_warning(&self) -> Option<String> {
        let text = match self.support() {
            Support::No(why) => format!(
                "the sandbox is not available here, so `run:` steps run unsandboxed (they see and may \
                 write the whole project; a step that reads an undeclared file is not caught; \
                 `network: false` is not honoured): {why}"
            ),
            Support::Yes { lazy: false, .. } => format!(
                "GVBUILD_SANDBOX_VIEW=lazy asks for the lazy view, which this machine cannot give, so \
                 every step's view is bound (about 45 µs a visible file; see docs/sandbox.md): {}",
                LAZY_REFUSED.get()?
            ),
            Support::Yes { .. } => return None,
        };
        let mut warned = self.warned.lock().ok()?;
        if *warned {
            return None;
        }
        *warned = true;
        Some(text)
    }
}

/// Why the lazy view that `GVBUILD_SANDBOX_VIEW=lazy` asked for could not be had (the probe's
/// error), for [`Sandboxing::take_warning`].
static LAZY_REFUSED: OnceLock<String> = OnceLock::new();

/// Make `dir` a folder of ours (mode 0700), or check that it is one: a folder another user made
/// (or a symlink) in the shared temp folder is refused.
fn own_folder(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        Err(_) => {}
    }
    let meta = fs::symlink_metadata(dir)?;
    if meta.is_dir() && meta.uid() == rustix::process::geteuid().as_raw() {
        Ok(())
    } else {
        Err(io::Error::other("it exists and is not a folder of this user's"))
    }
}

/// Try the sandbox once: an empty view of a folder of its own, `:` run in it.
fn probe(tmp: &Path) -> Support {
    let euid = rustix::process::geteuid().as_raw();
    let dir = std::env::temp_dir().join(format!("gvbuild-probe-{}", std::process::id()));
    let _ = fs::create_dir_all(&dir);
    let mut visible = Visible::default();
    if fs::write(dir.join("f"), "").is_ok() {
        visible.file("f", false, [0; 32], 0);
    }
    let try_one = |user: bool, detached: bool, lazy: bool| -> Result<(), SetupError> {
        let spec = Spec {
            project: &dir,
            visible: &visible,
            outputs: &[],
            scratch: &[],
            network: true,
            tmp,
            hide: &[],
            shared: &|_| false,
            produced: None,
            // The probe of the lazy view must try it, however few paths it shows.
            force_lazy: lazy,
            near: &[],
        };
        let plan = Plan::new(&spec, Support::Yes { user, detached, lazy }).map_err(|e| SetupError {
            phase: Phase::View,
            path: None,
            source: e,
        })?;
        let null: OwnedFd = fs::File::create("/dev/null")
            .map_err(|e| SetupError { phase: Phase::Exec, path: None, source: e })?
            .into();
        let argv = ["/bin/sh".as_ref(), "-c".as_ref(), ":".as_ref()];
        let (pending, mut child) = plan.spawn(&argv, Vec::new(), &dir, null).map_err(|e| SetupError {
            phase: Phase::Exec,
            path: None,
            source: e,
        })?;
        let status = child.wait();
        match (status, pending.setup_error()) {
            (_, Some(e)) => Err(e),
            (Ok(s), None) if s.success() => Ok(()),
            (Ok(s), None) => Err(SetupError {
                phase: Phase::Chdir,
                path: None,
                source: io::Error::other(format!("the probe exited with {s}")),
            }),
            (Err(e), None) => Err(SetupError { phase: Phase::Unshare, path: None, source: e }),
        }
    };
    let try_both = |user: bool| {
        // A lazy view first; where FUSE or overlayfs are missing (a container without
        // /dev/fuse, an older kernel), or GVBUILD_SANDBOX_VIEW=bind asks, one bind per visible
        // file.
        if view_asked() != Some(ViewAsked::Bind) {
            match try_one(user, true, true) {
                Ok(()) => return Ok(Support::Yes { user, detached: true, lazy: true }),
                Err(e) if view_asked() == Some(ViewAsked::Lazy) => {
                    let _ = LAZY_REFUSED.set(e.to_string());
                }
                Err(_) => {}
            }
        }
        match try_one(user, true, false) {
            Ok(()) => Ok(Support::Yes { user, detached: true, lazy: false }),
            // A kernel that cannot clone from a detached mount: binds come from the folder.
            Err(e) if e.phase == Phase::Op => {
                try_one(user, false, false).map(|()| Support::Yes { user, detached: false, lazy: false })
            }
            Err(e) => Err(e),
        }
    };
    let result = match try_both(euid != 0) {
        Ok(s) => s,
        // Root without CAP_SYS_ADMIN (a container) may still have user namespaces.
        Err(e) if euid == 0 && e.source.raw_os_error() == Some(libc::EPERM) => match try_both(true) {
            Ok(s) => s,
            Err(e) => Support::No(unavailable(&e)),
        },
        Err(e) => Support::No(unavailable(&e)),
    };
    let _ = fs::remove_dir_all(&dir);
    result
}

/// Why the sandbox cannot be had, and what would give it.
fn unavailable(e: &SetupError) -> String {
    let fix = match (e.phase, e.source.raw_os_error()) {
        (_, Some(libc::ENOSPC)) => "user namespaces are disabled (`user.max_user_namespaces` is 0); raise it with `sysctl -w user.max_user_namespaces=15000`",
        (_, Some(libc::ENOSYS)) => "the kernel is older than 5.12 (no `mount_setattr`); a newer kernel gives the sandbox",
        (Phase::Unshare, Some(libc::EPERM)) => "namespaces are forbidden here (a container's seccomp profile, or unprivileged user namespaces turned off); run gvbuild as root, allow `unshare` (Docker: `--security-opt seccomp=unconfined`), or set `kernel.unprivileged_userns_clone=1`",
        (_, Some(libc::EPERM | libc::EACCES)) => "mounting in a user namespace is forbidden here (e.g. AppArmor's `kernel.apparmor_restrict_unprivileged_userns`); allow it, or run gvbuild as root",
        _ => "",
    };
    if fix.is_empty() {
        e.to_string()
    } else {
        format!("{e}; {fix}")
    }
}

/// A step's sandbox, as asked for.
pub struct Spec<'a> {
    /// The project folder, canonical.
    pub project: &'a Path,
    pub visible: &'a Visible,
    /// Declared outputs (the depfile among them), project paths.
    pub outputs: &'a [String],
    /// `scratch:` folders, project paths.
    pub scratch: &'a [String],
    pub network: bool,
    /// The step's TMPDIR: an empty folder outside the project, covered by a fresh tmpfs.
    pub tmp: &'a Path,
    /// Folders outside the project the step must not see (the cache folder): each is covered
    /// by an empty read-only tmpfs.
    pub hide: &'a [PathBuf],
    /// Whether a step that may run meanwhile (not a dependency) may write below this project
    /// folder: such a folder is never bound whole, since a bind shows what is written later.
    pub shared: &'a dyn Fn(&str) -> bool,
    /// Every target's declared outputs, sorted, with their target's index: where a lazy view
    /// finds the outputs of `visible.deps` when the set does not list them.
    pub produced: Option<Arc<BTreeMap<String, usize>>>,
    /// A lazy view however few paths the step sees (the probe's, which must try one).
    pub force_lazy: bool,
    /// The outputs of the targets the step depends on directly, project paths: with its
    /// declared input files, what a lazy view copies into its near layer ([`fuse::Near`]).
    pub near: &'a [String],
}

/// The view `GVBUILD_SANDBOX_VIEW` asks for: `lazy` for every step where the machine allows
/// it, `bind` for every step; unset (or anything else), each step gets the cheaper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ViewAsked {
    Lazy,
    Bind,
}

/// One line to stderr (said once, when the variable is first read).
fn say(text: &str) {
    use std::io::Write;
    let _ = writeln!(io::stderr().lock(), "{text}");
}

fn view_asked() -> Option<ViewAsked> {
    static ASKED: OnceLock<Option<ViewAsked>> = OnceLock::new();
    *ASKED.get_or_init(|| match std::env::var("GVBUILD_SANDBOX_VIEW").as_deref() {
        Ok("lazy") => Some(ViewAsked::Lazy),
        Ok("bind") => Some(ViewAsked::Bind),
        Ok("") | Err(std::env::VarError::NotPresent) => None,
        Ok(other) => {
            say(&format!("warning: GVBUILD_SANDBOX_VIEW={other} is neither `lazy` nor `bind`; ignored"));
            None
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            say("warning: GVBUILD_SANDBOX_VIEW is neither `lazy` nor `bind`; ignored");
            None
        }
    })
}

/// A step that sees at most this many paths gets a bound view even where a lazy one can be had:
/// about 45 µs a path, against about 0.7 ms for the lazy view's mounts and FUSE handshake.
pub const BIND_UP_TO: usize = 16;

/// A folder holding at least this many visible paths is bound whole when it holds nothing else
/// (checked by reading it): one mount instead of one per file.
const WHOLE_FROM: usize = 8;

/// Whether project folder `dir` of `disk` (the project) holds exactly what `view` has below
/// it, kind for kind, and nothing more: then it can be bound whole.
fn holds_exactly(disk: &Path, view: &BTreeMap<String, Node>, dir: &str, below: usize) -> bool {
    let mut seen = 0usize;
    let mut todo = vec![dir.to_string()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = fs::read_dir(disk.join(&d)) else { return false };
        for e in rd {
            let Ok(e) = e else { return false };
            let Some(name) = e.file_name().to_str().map(str::to_string) else { return false };
            let p = format!("{d}/{name}");
            let Ok(ft) = e.file_type() else { return false };
            match view.get(&p) {
                Some(Node::File) if ft.is_file() => {}
                Some(Node::Link) if ft.is_symlink() => {}
                Some(Node::Folder) if ft.is_dir() => todo.push(p),
                _ => return false,
            }
            seen += 1;
            if seen > below {
                return false;
            }
        }
    }
    seen == below
}

/// How many paths `view` has strictly below folder `dir`.
fn count_below(view: &BTreeMap<String, Node>, dir: &str) -> usize {
    let from = format!("{dir}/");
    // '0' is the byte after '/': the range holds exactly the paths starting with `dir/`.
    let to = format!("{dir}0");
    view.range(from..to).count()
}

/// What is at a project path of the view.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Folder,
    /// A visible file, bound read-only.
    File,
    Link,
    /// A scratch folder, bound writable.
    Scratch,
    /// A dependency's output: what is on disk at and below it ([`Entry::Output`]).
    Output,
}

/// A step's sandbox, made in the parent: the setup the child runs, and the view's map to
/// tell outputs and undeclared writes apart afterwards.
pub struct Plan {
    setup: Setup,
    project: PathBuf,
    tmp: PathBuf,
    view: Arc<BTreeMap<String, Node>>,
    /// A lazy view's registration with the server, dropped with the step.
    registration: Option<Registration>,
    /// A lazy view's index, to tell a write from a folder made anew afterwards.
    index: Option<Arc<fuse::Index>>,
    outputs: Vec<String>,
    /// The parent's ends of the report pipe and the socket.
    report: OwnedFd,
    receive: OwnedFd,
    /// A prepared lazy view's folders in the shared area, and its upper layer (which the child
    /// then does not send).
    area: Option<(fuse::Area, OwnedFd)>,
}

/// A lazy view registered with the server ([`fuse::Server::register`]): forgotten when the
/// step is done, in case its sandbox never connected.
struct Registration(u64);

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(server) = fuse::server() {
            server.forget(self.0);
        }
    }
}

/// Why a sandbox could not be set up for a step.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {source}", phase_text(*.phase), .path.as_ref().map(|p| format!(" `{p}`")).unwrap_or_default())]
pub struct SetupError {
    pub phase: Phase,
    /// The project path the failing operation was for.
    pub path: Option<String>,
    pub source: io::Error,
}

fn phase_text(p: Phase) -> &'static str {
    match p {
        Phase::Unshare => "cannot make the namespaces (unshare)",
        Phase::IdMap => "cannot map the user namespace's ids",
        Phase::Private => "cannot make the mounts private",
        Phase::ReadOnly => "cannot make the machine read-only (mount_setattr)",
        Phase::OpenProject => "cannot open the project folder",
        Phase::Tmp => "cannot mount a private /tmp",
        Phase::View => "cannot mount the project's view (tmpfs)",
        Phase::Op => "cannot show",
        Phase::Send => "cannot hand the view back",
        Phase::Chdir => "cannot enter the project folder",
        Phase::Hide => "cannot hide the cache folder",
        Phase::Exec => "cannot start the step's shell",
        Phase::Fuse => "cannot mount the project's view (FUSE)",
        Phase::Overlay => "cannot mount the project's view (overlayfs)",
        Phase::Setns => "cannot enter the shared view's mount namespace",
    }
}

/// Each symlink of a view and its text.
type Links<'a> = BTreeMap<&'a str, &'a str>;

/// The paths of `spec`'s view (the folders above each, and above its outputs and scratch
/// folders, included), and the text of each symlink among them. Makes the scratch folders.
fn view_of<'a>(spec: &Spec<'a>) -> io::Result<(BTreeMap<String, Node>, Links<'a>)> {
    let mut view: BTreeMap<String, Node> = BTreeMap::new();
    let add_folders = |view: &mut BTreeMap<String, Node>, p: &str| {
        let mut end = 0;
        while let Some(i) = p[end..].find('/') {
            end += i;
            view.entry(p[..end].to_string()).or_insert(Node::Folder);
            end += 1;
        }
    };
    for (p, entry) in &spec.visible.entries {
        add_folders(&mut view, p);
        let node = match entry {
            Entry::File { .. } => Node::File,
            Entry::Link(_) => Node::Link,
            Entry::Folder => Node::Folder,
            Entry::Output => Node::Output,
        };
        // A file or link listed again replaces what was there; below a path that became a
        // file nothing can stay (the input root refuses that set before a remote run).
        view.insert(p.clone(), node);
    }
    let links: Links = spec
        .visible
        .entries
        .iter()
        .filter_map(|(p, e)| match e {
            Entry::Link(t) => Some((p.as_str(), t.as_str())),
            _ => None,
        })
        .collect();
    for o in spec.outputs {
        add_folders(&mut view, o);
    }
    for s in spec.scratch {
        add_folders(&mut view, s);
        view.insert(s.clone(), Node::Scratch);
        fs::create_dir_all(spec.project.join(s))?;
    }
    Ok((view, links))
}

/// The lazy view's answers for `spec`, whose paths are `view` (from [`view_of`]).
fn index_of(
    spec: &Spec,
    view: Arc<BTreeMap<String, Node>>,
    links: &BTreeMap<&str, &str>,
) -> io::Result<fuse::Index> {
    let links: HashMap<String, String> = links.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect();
    let produced = match (&spec.produced, spec.visible.unlisted) {
        (Some(all), true) => Some((Arc::clone(all), Arc::new(spec.visible.deps.clone()))),
        _ => None,
    };
    let discover = if spec.visible.unlisted { spec.visible.discover.clone() } else { Vec::new() };
    fuse::Index::new(spec.project, view, links, produced, discover)
}

/// What a step may touch in its project, as its sandbox would let it: read what its view
/// shows, read and write at and below its outputs and scratch folders. `gvbuild
/// --trace-undeclared` checks a step run unsandboxed under strace against it.
pub struct Declared {
    index: fuse::Index,
    writable: Vec<String>,
}

impl Declared {
    /// The set of `spec` (a visible set made for a lazy view, or a listed one). `Err` when the
    /// project folder cannot be opened or a scratch folder made.
    pub fn new(spec: &Spec) -> io::Result<Declared> {
        let (view, links) = view_of(spec)?;
        let index = index_of(spec, Arc::new(view), &links)?;
        let writable = spec.outputs.iter().chain(spec.scratch).cloned().collect();
        Ok(Declared { index, writable })
    }

    /// Whether the step may write project path `p` (relative, `/`-separated): it is at or
    /// below one of its outputs or scratch folders, or a folder above one (whose mode and
    /// times the step may change in its view).
    pub fn writes(&self, p: &str) -> bool {
        self.writable
            .iter()
            .any(|w| crate::paths::is_within(p, w) || p.is_empty() || crate::paths::is_within(w, p))
    }

    /// Whether the step may read `p`: its view shows it (the project folder and the folders
    /// above what it shows included), or it may write it.
    pub fn reads(&self, p: &str) -> bool {
        self.writes(p) || self.index.shows(p)
    }
}

impl Plan {
    /// Plan the view of `spec` for a machine that gives `support` (`Support::Yes`). `Err` only
    /// for a path that cannot be a C string or a scratch folder that cannot be made.
    pub fn new(spec: &Spec, support: Support) -> io::Result<Plan> {
        let Support::Yes { user, detached, lazy } = support else {
            return Err(io::Error::other("no sandbox on this machine"));
        };
        // A step that sees a handful of paths is bound: that costs less than a lazy view's
        // mounts and handshake.
        let lazy = lazy
            && (spec.visible.unlisted
                || spec.force_lazy
                || spec.visible.entries.len() > BIND_UP_TO
                || view_asked() == Some(ViewAsked::Lazy));
        if spec.visible.unlisted && !lazy {
            return Err(io::Error::other(
                "a visible set without its dependencies' outputs needs a lazy view",
            ));
        }
        if lazy && !fuse::alive() {
            return Err(io::Error::other(
                "the lazy view's server has stopped: run the build again, or set GVBUILD_SANDBOX_VIEW=bind",
            ));
        }
        let (view, links) = view_of(spec)?;
        let abs = |p: &str| cstr(spec.project.join(p));
        if lazy {
            // Only the scratch folders are bound; the rest is looked up when asked for.
            let mut ops = Vec::new();
            for (p, node) in &view {
                if *node == Node::Scratch {
                    ops.push(Op::Bind { rel: cstr(p)?, at: abs(p)?, folder: true, writable: true });
                }
            }
            let view = Arc::new(view);
            let index = Arc::new(index_of(spec, Arc::clone(&view), &links)?);
            let server = fuse::server().map_err(io::Error::other)?;
            let id = server.register(Arc::clone(&index));
            // Forgotten with the plan from here on, whatever fails below.
            let registration = Registration(id);
            let fuse_opts = fuse::mount_options();
            // Without a user namespace, the shared mount's entry for this view (a temp folder
            // whose name an overlay option could not hold is not shared).
            let plain = |p: &Path| p.to_str().is_some_and(|p| !p.contains([',', ':', '\\', '=']));
            let shared = (!user && plain(spec.tmp)).then(|| server.shared(spec.tmp)).flatten();
            let lower = match shared {
                Some(sh) => sh.view_path(id).to_string_lossy().into_owned(),
                None => "l".to_string(),
            };
            let mut overlay = format!("lowerdir={lower},upperdir=u,workdir=w");
            if user {
                overlay.push_str(",userxattr");
            }
            // (As root only: a user namespace could not give a folder another owner.)
            let folders = if shared.is_some() { upper_folders(&index, spec.outputs)? } else { Vec::new() };
            let lazy = child::Lazy {
                id,
                socket: server.socket(),
                fuse_opts,
                overlay_opts: cstr(overlay)?,
                shared_ns: shared.map_or(-1, |sh| sh.ns()),
                prepared: false,
                area: None,
                folders,
            };
            let mut plan = Plan::assemble(spec, user, detached, ops, Some(lazy), view)?;
            // Made read-only with the cache hidden once, not by every sandbox; its layers and
            // TMPDIR made by gvbuild in the shared area, not on tmpfs mounts of its own.
            if let (Some(sh), Some(lazy)) = (shared, plan.setup.lazy.as_mut()) {
                if let Some(base) = sh.base(&plan.setup.hide) {
                    lazy.shared_ns = base;
                    lazy.prepared = true;
                    let absent = absent_outputs(&index, spec, &lazy.folders);
                    if let Ok((upper, area)) = sh.area_for(id, &lazy.folders, &absent) {
                        let path = |kind| sh.area_path(kind, id).to_string_lossy().into_owned();
                        // The files the step most likely reads, copied above the view.
                        let inputs = index.files();
                        let near = index.near(inputs.chain(spec.near.iter().map(String::as_str)));
                        let lower = match near.is_empty() || sh.near_layer(id, &index, &near).is_err() {
                            true => lower,
                            false => format!("{}:{lower}", path("e")),
                        };
                        let opts = format!("lowerdir={lower},upperdir={},workdir={}", path("u"), path("w"));
                        lazy.overlay_opts = cstr(opts)?;
                        lazy.area = Some(cstr(path("t"))?);
                        plan.area = Some((area, upper));
                    }
                }
            }
            plan.registration = Some(registration);
            plan.index = Some(index);
            return Ok(plan);
        }
        let mut ops = Vec::with_capacity(view.len() * 2);
        // A folder bound whole: what is below it needs nothing more.
        // (Path order does not keep a folder's paths together: `src/parser.rs` sorts between
        // `src/parser` and `src/parser/a.rs`.)
        let mut whole: BTreeSet<&str> = BTreeSet::new();
        for (p, node) in &view {
            let mut above = p.match_indices('/').map(|(i, _)| &p[..i]);
            if !whole.is_empty() && above.any(|a| whole.contains(a)) {
                continue;
            }
            match node {
                Node::Folder => {
                    ops.push(Op::Mkdir(abs(p)?));
                    let below = count_below(&view, p);
                    let writes_below = |o: &String| o != p && crate::paths::is_within(o, p);
                    if below >= WHOLE_FROM
                        && !spec.outputs.iter().any(writes_below)
                        && !spec.scratch.iter().any(writes_below)
                        && !(spec.shared)(p)
                        && holds_exactly(spec.project, &view, p, below)
                    {
                        ops.push(Op::Bind { rel: cstr(p)?, at: abs(p)?, folder: true, writable: false });
                        whole.insert(p);
                    }
                }
                // A dependency's output, unread so far: what it is on disk.
                Node::Output if fs::symlink_metadata(spec.project.join(p)).is_ok_and(|m| m.is_dir()) => {
                    ops.push(Op::Mkdir(abs(p)?));
                    ops.push(Op::Bind { rel: cstr(p)?, at: abs(p)?, folder: true, writable: false });
                    // All below it is shown by this bind.
                    whole.insert(p);
                }
                Node::Output if fs::symlink_metadata(spec.project.join(p)).is_ok_and(|m| m.is_symlink()) => {
                    let text = fs::read_link(spec.project.join(p))?;
                    ops.push(Op::Link { text: cstr(text)?, at: abs(p)? });
                }
                Node::File | Node::Output => {
                    ops.push(Op::Touch(abs(p)?));
                    ops.push(Op::Bind { rel: cstr(p)?, at: abs(p)?, folder: false, writable: false });
                }
                Node::Link => {
                    let text = links.get(p.as_str()).copied().unwrap_or_default();
                    ops.push(Op::Link { text: cstr(text)?, at: abs(p)? });
                }
                Node::Scratch => {
                    ops.push(Op::Mkdir(abs(p)?));
                    ops.push(Op::Bind { rel: cstr(p)?, at: abs(p)?, folder: true, writable: true });
                }
            }
        }
        Plan::assemble(spec, user, detached, ops, None, Arc::new(view))
    }

    /// The plan of `spec` with its view's setup (`ops`, `lazy`) made.
    fn assemble(
        spec: &Spec,
        user: bool,
        detached: bool,
        ops: Vec<Op>,
        lazy: Option<child::Lazy>,
        view: Arc<BTreeMap<String, Node>>,
    ) -> io::Result<Plan> {
        let (euid, egid) = fuse::owner();
        let mut flags = libc::CLONE_NEWNS;
        if user {
            flags |= libc::CLONE_NEWUSER;
        }
        if !spec.network {
            flags |= libc::CLONE_NEWNET;
        }
        let id_maps = user
            .then(|| (format!("{euid} {euid} 1\n").into_bytes(), format!("{egid} {egid} 1\n").into_bytes()));
        let (report, report_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let (receive, send) =
            rustix::net::socketpair(AddressFamily::UNIX, SocketType::DGRAM, SocketFlags::CLOEXEC, None)?;
        Ok(Plan {
            setup: Setup {
                flags,
                id_maps,
                project: cstr(spec.project)?,
                detached,
                view: true,
                // Canonical, as the project folder is: a sandbox that starts from the shared
                // view's namespace starts at its root, not in gvbuild's folder, and a path that
                // climbs through the project (`proj/../cache`) is not inside it.
                hide: spec
                    .hide
                    .iter()
                    .filter_map(|h| fs::canonicalize(h).ok())
                    .filter(|h| !h.starts_with(spec.project) && h.is_dir())
                    .map(cstr)
                    .collect::<io::Result<_>>()?,
                tmp: cstr(spec.tmp)?,
                ops,
                report: report_w,
                send,
                lazy,
            },
            project: spec.project.to_path_buf(),
            tmp: spec.tmp.to_path_buf(),
            view,
            outputs: spec.outputs.to_vec(),
            report,
            receive,
            registration: None,
            index: None,
            area: None,
        })
    }

    /// A step run unsandboxed but with `network: false`: a network namespace (and a user
    /// namespace where `support` needs one) and nothing else; the project is as it is.
    pub fn network_only(project: &Path, support: Support) -> io::Result<Plan> {
        let Support::Yes { user, .. } = support else {
            return Err(io::Error::other("no namespaces on this machine"));
        };
        let spec = Spec {
            project,
            visible: &Visible::default(),
            outputs: &[],
            scratch: &[],
            network: false,
            tmp: project,
            hide: &[],
            shared: &|_| false,
            produced: None,
            force_lazy: false,
            near: &[],
        };
        let mut plan = Plan::new(&spec, Support::Yes { user, detached: false, lazy: false })?;
        plan.setup.view = false;
        plan.setup.ops.clear();
        Ok(plan)
    }

    /// Start `/bin/sh`-style `argv` with environment `env` (TMPDIR is set to the step's own
    /// here), stdout and stderr to `out`, in this sandbox: the child sets it up, then runs the
    /// program as the leader of a new process group ([`child::spawn`]). `Ok` whenever a process
    /// was made: a failure in it is [`Pending::setup_error`], and the caller reaps it.
    pub fn spawn(
        self,
        argv: &[&std::ffi::OsStr],
        env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
        cwd: &Path,
        out: OwnedFd,
    ) -> io::Result<(Pending, Child)> {
        let paths: Vec<String> = self
            .setup
            .ops
            .iter()
            .map(|op| match op {
                Op::Mkdir(at) | Op::Touch(at) | Op::Link { at, .. } | Op::Bind { at, .. } => {
                    at.to_string_lossy().into_owned()
                }
            })
            .collect();
        let mut env = env;
        if self.setup.view {
            env.retain(|(k, _)| k != "TMPDIR");
            env.push(("TMPDIR".into(), self.tmp.clone().into_os_string()));
        }
        let exec = child::Exec::new(argv, &env, cwd, out)?;
        let pid = {
            let _spawning = Spawning::start();
            child::spawn(&self.setup, &exec)?
        };
        drop(exec);
        // Held until the step is done, then let go of on another thread: the namespace's
        // teardown (every mount undone, a wait for RCU) is then neither the step's exit nor
        // on its path.
        let namespace = self
            .setup
            .view
            .then(|| fs::File::open(format!("/proc/{pid}/ns/mnt")).ok().map(OwnedFd::from))
            .flatten();
        let child::Setup { hide, view: has_view, .. } = self.setup;
        let (area, upper) = self.area.map_or((None, None), |(a, u)| (Some(a), Some(u)));
        // The child has exec'd or exited by now: its ends of the pipe and socket (in the
        // setup) are closed with it.
        let pending = Pending {
            hide,
            has_view,
            index: self.index,
            view: self.view,
            outputs: self.outputs,
            report: self.report,
            receive: self.receive,
            paths,
            project: self.project,
            root: upper,
            namespace: Namespace { fd: namespace, registration: self.registration, area },
        };
        Ok((pending, Child { pid, status: None }))
    }
}

/// A sandboxed step's process (the shell), made by [`Plan::spawn`].
#[derive(Debug)]
pub struct Child {
    pid: u32,
    status: Option<std::process::ExitStatus>,
}

impl Child {
    /// Its pid, which is also its process group's id.
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Wait for it to exit (once; later calls give the same status).
    pub fn wait(&mut self) -> io::Result<std::process::ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        if let Some(s) = self.status {
            return Ok(s);
        }
        let pid = rustix::process::Pid::from_raw(self.pid as i32);
        loop {
            match rustix::process::waitpid(pid, rustix::process::WaitOptions::empty()) {
                Ok(Some((_, status))) => {
                    let s = std::process::ExitStatus::from_raw(status.as_raw());
                    self.status = Some(s);
                    return Ok(s);
                }
                Ok(None) => continue,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A sandboxed step in flight: the parent's ends, and after the spawn the view's root.
pub struct Pending {
    /// The folders hidden, to name one in an error.
    hide: Vec<std::ffi::CString>,
    /// Whether the step has a view (not only namespaces).
    has_view: bool,
    /// A lazy view's index. With one, what comes back is the overlay's upper layer, which
    /// holds only what the step wrote.
    index: Option<Arc<fuse::Index>>,
    view: Arc<BTreeMap<String, Node>>,
    outputs: Vec<String>,
    report: OwnedFd,
    receive: OwnedFd,
    /// The absolute path each setup operation is for, to name it in an error.
    paths: Vec<String>,
    project: PathBuf,
    root: Option<OwnedFd>,
    #[allow(dead_code)] // held for its drop
    namespace: Namespace,
}

/// A sandbox's mount namespace, held past its step's exit, with its lazy view's registration;
/// dropped on the reaper thread, which undoes its mounts off the step's path and only then
/// forgets the view, so that the kernel can drop all of the view's entries (the overlay holds
/// them until its namespace goes). Without a namespace the registration goes with the plan.
struct Namespace {
    fd: Option<OwnedFd>,
    registration: Option<Registration>,
    /// A prepared view's folders in the shared area, removed last.
    area: Option<fuse::Area>,
}

/// How many sandboxes are between their clone and their exec, each child holding a copy of
/// every descriptor gvbuild had open; the reaper closes a namespace's descriptor while it holds
/// this at zero ([`let_go`]), told by [`SPAWNED`].
static SPAWNING: Mutex<usize> = Mutex::new(0);
/// Signalled when [`SPAWNING`] falls to zero.
static SPAWNED: std::sync::Condvar = std::sync::Condvar::new();

/// A sandbox being spawned, counted in [`SPAWNING`] while it lives.
struct Spawning;

impl Spawning {
    fn start() -> Spawning {
        *SPAWNING.lock().unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
        Spawning
    }
}

impl Drop for Spawning {
    fn drop(&mut self) {
        let mut n = SPAWNING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *n = n.saturating_sub(1);
        if *n == 0 {
            SPAWNED.notify_all();
        }
    }
}

/// A finished sandbox's namespace, its view's registration and its folders of the area.
type Held = (OwnedFd, Option<Registration>, Option<fuse::Area>);

/// Let go of `held` on the reaper thread, in order: the namespace, the registration, the
/// folders. A sandbox spawned meanwhile holds a copy of the namespace's descriptor until its
/// exec; were that copy the last, the namespace's teardown (every mount undone, two waits for
/// RCU) would fall on that step's start. So where it can (as root), the reaper enters the
/// namespace first, closes the descriptor while no sandbox is being spawned, and tears it down
/// by leaving it for `home`, its own. (Other processes gvbuild starts, an unsandboxed step or a
/// tool's version probe, are not waited for: one of them may still end a namespace.)
fn let_go(held: Held, home: Option<&OwnedFd>) {
    let (fd, registration, area) = held;
    if let Some(home) = home {
        if child::enter_ns(fd.as_fd()).is_ok() {
            // Waited for without holding back a spawn; after 100 ms it closes anyway (the
            // teardown may then be a spawned step's, as before).
            let n = SPAWNING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let wait = std::time::Duration::from_millis(100);
            let (n, _) = SPAWNED
                .wait_timeout_while(n, wait, |n| *n > 0)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // (A spawn now waits for this close, a few microseconds: the namespace is held by
            // this thread, so the close tears nothing down.)
            drop(fd);
            drop(n);
            // (Should it fail, the thread stays there until it enters the next one.)
            let _ = child::enter_ns(home.as_fd());
            drop(registration);
            drop(area);
            return;
        }
    }
    drop(fd);
    drop(registration);
    drop(area);
}

impl Drop for Namespace {
    fn drop(&mut self) {
        static REAPER: OnceLock<Option<Mutex<std::sync::mpsc::Sender<Held>>>> = OnceLock::new();
        let Some(fd) = self.fd.take() else { return };
        let held = (fd, self.registration.take(), self.area.take());
        let reaper = REAPER.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Held>();
            std::thread::Builder::new()
                .name("gvbuild-reaper".into())
                .spawn(move || {
                    let home = child::own_folders().ok();
                    rx.into_iter().for_each(|held| let_go(held, home.as_ref()))
                })
                .ok()
                .map(|_| Mutex::new(tx))
        });
        if let Some(tx) = reaper.as_ref().and_then(|m| m.lock().ok()) {
            // A closed channel hands the fd back, dropped here.
            let _ = tx.send(held);
        }
    }
}

/// What a sandboxed step left: its outputs (copied into the project) and its undeclared
/// writes.
#[derive(Debug, Default)]
pub struct Harvest {
    /// Project paths written in the view that are no declared output.
    pub undeclared: Vec<String>,
    /// Of those, the ones the step removed (a whiteout in a lazy view's upper layer).
    pub removed: Vec<String>,
    /// Declared outputs the step did not write (outside its scratch folders), in declared
    /// order: then none of its outputs was copied into the project.
    pub missing: Vec<String>,
    /// Project paths of the files a depfile step read that it may discover but did not declare,
    /// in path order ([`fuse::Index::discover_reads`]; a lazy view's only): each is keyed only
    /// where its depfile lists it.
    pub discover_reads: Vec<String>,
    /// The paths a depfile step looked up among the files it may discover, found or not
    /// ([`fuse::Index::discover_looks`]; a lazy view's only): the key covers each as the view
    /// would show it.
    pub discover_looks: Vec<Look>,
}

/// A path a depfile step looked up among the files it may discover but did not declare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Look {
    /// The project path.
    pub path: String,
    /// The folder walked for files to discover that the path is in, at or above (`""`: the
    /// project folder's own files); `None` for one only its last depfile listed.
    pub walked: Option<String>,
    /// Whether the view showed something there.
    pub found: bool,
}

impl Pending {
    /// After the spawn: the setup's failure, if the child reported one.
    pub fn setup_error(&self) -> Option<SetupError> {
        let mut buf = [0u8; 12];
        // The child has exec'd or exited (and its write end is closed): what it wrote is there.
        let mut f = fs::File::from(self.report.try_clone().ok()?);
        rustix::io::ioctl_fionbio(&f, true).ok()?;
        let n = f.read(&mut buf).ok()?;
        if n != 12 {
            return None;
        }
        let word = |i: usize| u32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let phase = Phase::from_u32(word(0))?;
        let index = word(4) as usize;
        let errno = word(8) as i32;
        let path = match phase {
            Phase::Op => self.paths.get(index).map(|p| {
                Path::new(p)
                    .strip_prefix(&self.project)
                    .map(|r| r.display().to_string())
                    .unwrap_or_else(|_| p.clone())
            }),
            Phase::Hide => self.hide.get(index).map(|h| h.to_string_lossy().into_owned()),
            _ => None,
        };
        Some(SetupError { phase, path, source: io::Error::from_raw_os_error(errno) })
    }

    /// After a successful spawn: take the view's root that the child sent.
    pub fn spawned(&mut self) -> io::Result<()> {
        // (A prepared lazy view's upper layer is gvbuild's own from the start.)
        if !self.has_view || self.root.is_some() {
            return Ok(());
        }
        let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut anc = RecvAncillaryBuffer::new(&mut space);
        let mut byte = [0u8; 1];
        recvmsg(
            self.receive.as_fd(),
            &mut [io::IoSliceMut::new(&mut byte)],
            &mut anc,
            RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
        )?;
        for msg in anc.drain() {
            if let RecvAncillaryMessage::ScmRights(mut fds) = msg {
                self.root = fds.next();
            }
        }
        if self.root.is_none() {
            return Err(io::Error::other("the sandboxed step did not hand back its view"));
        }
        Ok(())
    }

    /// After the step: list what it wrote in the view beyond its outputs, and when `succeeded`,
    /// copy each declared output it wrote there into the project (`root`); a failed step's
    /// outputs stay out of the project.
    pub fn finish(self, root: &Path, succeeded: bool) -> io::Result<Harvest> {
        self.walk(succeeded.then_some(root), None)
    }

    /// After a traced run again of a failed step: what it wrote, and the trace it left at
    /// project path `trace` in its view; nothing is copied out.
    pub fn finish_traced(self, trace: &str) -> io::Result<(Harvest, String)> {
        let mut text = String::new();
        if let Some(fd) = &self.root {
            let at =
                PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(fd))).join(trace);
            text = String::from_utf8_lossy(&fs::read(at).unwrap_or_default()).into_owned();
        }
        Ok((self.walk(None, Some(trace))?, text))
    }

    /// Whether the lazy view shows anything but folders below project folder `dir`: a folder
    /// made anew over it (opaque) then hides what the step removed.
    fn shows_below(&self, dir: &str) -> bool {
        let listed =
            self.view.range(format!("{dir}/")..format!("{dir}0")).any(|(_, n)| !matches!(n, Node::Folder));
        listed || self.index.as_ref().is_some_and(|i| i.shows_below(dir))
    }

    fn walk(self, copy_to: Option<&Path>, skip: Option<&str>) -> io::Result<Harvest> {
        let discover_reads = self.index.as_ref().map(|i| i.discover_reads()).unwrap_or_default();
        let discover_looks = self.index.as_ref().map(|i| i.discover_looks()).unwrap_or_default();
        let Some(fd) = self.root.as_ref() else {
            return Ok(Harvest { discover_reads, discover_looks, ..Harvest::default() });
        };
        let view_root = PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(fd)));
        let outputs: BTreeSet<&str> = self.outputs.iter().map(String::as_str).collect();
        let mut harvest = Harvest { discover_reads, discover_looks, ..Harvest::default() };
        let mut written: Vec<String> = Vec::new();
        let mut todo = vec![String::new()];
        while let Some(dir) = todo.pop() {
            let here = if dir.is_empty() { view_root.clone() } else { view_root.join(&dir) };
            for e in fs::read_dir(&here)? {
                let e = e?;
                let Some(name) = e.file_name().to_str().map(str::to_string) else {
                    harvest.undeclared.push(format!("{dir}/{}", e.file_name().to_string_lossy()));
                    continue;
                };
                let p = if dir.is_empty() { name } else { format!("{dir}/{name}") };
                if outputs.contains(p.as_str()) {
                    // Unless it is still the whiteout made for it (`absent_outputs`): not written.
                    if !(self.index.is_some() && whiteout(&e)?) {
                        written.push(p);
                    }
                    continue;
                }
                match self.view.get(&p) {
                    // A lazy view's upper layer holds a visible folder when something was
                    // written below it; one made anew over the folder (opaque) hides what
                    // the step removed from it: a write.
                    Some(Node::Folder)
                        if self.index.is_none()
                            || (e.file_type()?.is_dir()
                                && !(opaque(&here.join(e.file_name())) && self.shows_below(&p))) =>
                    {
                        todo.push(p)
                    }
                    // A bound file or link of the view (the tmpfs holds its mount point); a
                    // scratch folder is its own.
                    Some(Node::File | Node::Link | Node::Output) if self.index.is_none() => {}
                    Some(Node::Scratch) => {}
                    None if Some(p.as_str()) == skip => {}
                    // In a lazy view's upper layer, a visible file or link is one the step
                    // changed or removed (a whiteout).
                    _ => {
                        if self.index.is_some() && whiteout(&e)? {
                            harvest.removed.push(p.clone());
                        }
                        harvest.undeclared.push(p)
                    }
                }
            }
        }
        harvest.undeclared.sort();
        // Only a step that succeeded, wrote nothing but its outputs and left none of them
        // unwritten (the output check then names it) has outputs to keep. (One in a scratch
        // folder is written in place.)
        let in_scratch = |o: &str| {
            o.match_indices('/')
                .map(|(i, _)| &o[..i])
                .chain([o])
                .any(|a| self.view.get(a) == Some(&Node::Scratch))
        };
        harvest.missing =
            self.outputs.iter().filter(|o| !written.contains(o) && !in_scratch(o)).cloned().collect();
        if let Some(root) = copy_to.filter(|_| harvest.undeclared.is_empty() && harvest.missing.is_empty()) {
            for p in written {
                copy_out(&view_root.join(&p), &root.join(&p))?;
            }
        }
        Ok(harvest)
    }
}

/// The folders above `outputs` that the lazy view `index` shows as folders of its own, parents
/// first, each once, with the attributes the view answers for it: made in the upper layer, they
/// spare the step's first write below each a copy-up ([`child::Lazy::folders`]).
fn upper_folders(index: &fuse::Index, outputs: &[String]) -> io::Result<Vec<child::Folder>> {
    let me = fuse::owner();
    // Folders made, and folders the view does not answer for itself (nothing below one is made:
    // its parent would be missing).
    let mut made: BTreeSet<&str> = BTreeSet::new();
    let mut refused: BTreeSet<&str> = BTreeSet::new();
    let mut folders = Vec::new();
    for o in outputs {
        for (i, _) in o.match_indices('/') {
            let dir = &o[..i];
            if made.contains(dir) {
                continue;
            }
            if refused.contains(dir) {
                break;
            }
            // Below a folder the view does not answer for itself (one of a dependency's
            // outputs, on disk, or a symlink), the overlay copies up as it would.
            let Some(fuse::FolderAttr { mode, uid, gid, times }) = index.folder_attr(dir) else {
                refused.insert(dir);
                break;
            };
            let ts = |(s, ns): (u64, u32)| libc::timespec { tv_sec: s as libc::time_t, tv_nsec: ns as _ };
            folders.push(child::Folder {
                rel: dir.to_string(),
                at: cstr(format!("u/{dir}"))?,
                mode: mode & 0o7777,
                owner: ((uid, gid) != me).then_some((uid, gid)),
                times: [ts(times[0]), ts(times[1])],
            });
            made.insert(dir);
        }
    }
    Ok(folders)
}

/// The outputs of `spec` to mark absent in a prepared lazy view's upper layer (a whiteout, so
/// that the overlay does not ask the view for them): each in the project folder itself or in a
/// folder of `folders` (made in the upper layer), not in a scratch folder, and not in the view;
/// sorted, each once.
fn absent_outputs<'a>(index: &fuse::Index, spec: &Spec<'a>, folders: &[child::Folder]) -> Vec<&'a str> {
    let made: BTreeSet<&str> = folders.iter().map(|f| f.rel.as_str()).collect();
    spec.outputs
        .iter()
        .map(String::as_str)
        .filter(|o| !made.contains(o) && o.rsplit_once('/').is_none_or(|(dir, _)| made.contains(dir)))
        .filter(|o| !spec.scratch.iter().any(|s| crate::paths::is_within(o, s)))
        .filter(|o| !index.shows(o))
        .collect::<BTreeSet<&str>>()
        .into_iter()
        .collect()
}

/// Whether `e`, an entry of an overlay's upper layer, is a whiteout (a character device 0/0).
fn whiteout(e: &fs::DirEntry) -> io::Result<bool> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    Ok(e.file_type()?.is_char_device() && e.metadata()?.rdev() == 0)
}

/// Whether folder `dir` of an overlay's upper layer is opaque (it hides the lower folder's
/// entries: made anew over it), as overlayfs marks one (`trusted.` or, in a user namespace,
/// `user.overlay.opaque` = `y`).
fn opaque(dir: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"].iter().any(|name| {
        let mut v = [0u8; 4];
        matches!(rustix::fs::lgetxattr(dir, *name, &mut v[..]), Ok(n) if v[..n] == *b"y")
    })
}

/// Copy a file, symlink or folder written in the view to its place in the project.
fn copy_out(from: &Path, to: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(from)?;
    if let Ok(m) = fs::symlink_metadata(to) {
        if m.is_dir() {
            fs::remove_dir_all(to)?;
        } else {
            fs::remove_file(to)?;
        }
    }
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from)?, to)
    } else if meta.is_dir() {
        fs::create_dir(to)?;
        for e in fs::read_dir(from)? {
            let e = e?;
            copy_out(&e.path(), &to.join(e.file_name()))?;
        }
        // Its mode last: a folder without the write bit is filled first.
        fs::set_permissions(to, meta.permissions())
    } else if meta.is_file() {
        fs::copy(from, to).map(|_| ())
    } else {
        // A FIFO or a socket: made again as what it is (never opened: a FIFO would block), for
        // the output check to refuse as it refuses one made in place.
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let kind = if meta.file_type().is_fifo() {
            rustix::fs::FileType::Fifo
        } else {
            rustix::fs::FileType::Socket
        };
        let mode = rustix::fs::Mode::from_raw_mode(meta.permissions().mode() & 0o7777);
        rustix::fs::mknodat(rustix::fs::CWD, to, kind, mode, 0).map_err(io::Error::from)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// The folders made in a lazy view's upper layer: each parent before its children, each
    /// once, and nothing at or below a folder the view does not answer for itself (a symlink, a
    /// dependency's output), however many outputs lie below it.
    #[test]
    fn upper_folders_come_parents_first_and_never_below_what_the_view_does_not_make() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("out/sub")).unwrap();
        fs::create_dir_all(root.join("dep/z")).unwrap();
        fs::create_dir_all(root.join("real/d")).unwrap();
        std::os::unix::fs::symlink("real", root.join("lnk")).unwrap();
        let mut view = BTreeMap::new();
        for (p, n) in [
            ("lnk", Node::Link),
            ("lnk/d", Node::Folder),
            ("out", Node::Folder),
            ("out/sub", Node::Folder),
            ("dep", Node::Output),
        ] {
            view.insert(p.to_string(), n);
        }
        let links = HashMap::from([("lnk".to_string(), "real".to_string())]);
        let index = fuse::Index::new(root, Arc::new(view), links, None, Vec::new()).unwrap();
        let outputs: Vec<String> =
            ["lnk/d/x", "lnk/d/y", "out/sub/a", "out/b", "dep/z/q"].iter().map(|s| s.to_string()).collect();
        let folders = upper_folders(&index, &outputs).unwrap();
        let made: Vec<&str> = folders.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(made, ["out", "out/sub"]);
        assert_eq!(folders[0].at.to_str().unwrap(), "u/out");
    }
}
