//! The lazy view: a read-only FUSE file system that shows a step its visible set, served by
//! one thread of gvbuild for every running sandbox.
//!
//! A step's view is the lower layer of an overlay whose upper layer is a tmpfs: the step reads
//! through it and writes into the tmpfs. As root the views are entries of one FUSE file system,
//! the [`Shared`] mount, named by the id their [`Index`] was registered under. Elsewhere (under
//! a user namespace) each sandbox mounts a file system of its own: its child opens
//! `/dev/fuse`, mounts it, and sends the descriptor here over [`Server`]'s socket with that id.
//! A path is looked up only when the step asks for it, so a view costs what the step opens,
//! not what it may see (binding every visible file cost about 45 µs a file).
//!
//! The protocol is the kernel's (`include/uapi/linux/fuse.h`, version 7), of which this
//! serves the read-only part: `INIT`, `LOOKUP`, `GETATTR`, `READLINK`, `OPEN`, `READ`,
//! `RELEASE`, `OPENDIR`, `READDIR`, `RELEASEDIR`, `STATFS` and the `FORGET`s. Anything that
//! would write answers `EROFS` (the overlay never writes its lower layer); the rest `ENOSYS`,
//! which the kernel takes as "not supported". Every answer is valid for a day: a view does not
//! change while its step runs, and the kernel then caches lookups, misses included.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rustix::event::epoll;
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

use super::Node;

/// Every target's outputs (sorted, with their target's index) and the targets a step depends
/// on: where a view finds its dependencies' outputs when its set does not list them.
pub type Produced = (Arc<BTreeMap<String, usize>>, Arc<fixedbitset::FixedBitSet>);

/// A step's view as the server answers for it: the project folder on disk and what of it the
/// step sees.
pub struct Index {
    /// The project folder (`O_PATH`), which files are read from.
    root: OwnedFd,
    /// The project folder's path.
    project: std::path::PathBuf,
    /// Every path of the view (project paths; the folders above each are in it too).
    view: Arc<BTreeMap<String, Node>>,
    /// The text of each symlink of the view.
    links: HashMap<String, String>,
    /// Where the view does not list its dependencies' outputs: every target's outputs (sorted,
    /// with their target) and the targets depended on, to find them at lookup.
    produced: Option<Produced>,
    /// Where the view does not list them: the files a depfile step may discover.
    discover: Vec<Arc<super::Discoverable>>,
    /// The files of `discover` (none of them declared) the step read, each once, at its first
    /// `READ`. (The kernel reads an empty file without one: its lookup, keyed, covers it.)
    discover_reads: Mutex<std::collections::BTreeSet<String>>,
    /// The paths the step looked up among the files of `discover`, found (not declared) or not
    /// (where a file would be one to discover), each once.
    discover_looks: Mutex<BTreeMap<String, (Option<String>, bool)>>,
}

impl Index {
    /// Whether the set has a file or an output of a target depended on below project folder
    /// `dir` among what it does not list.
    pub fn shows_below(&self, dir: &str) -> bool {
        self.dep_outputs_below(dir).next().is_some() || self.discover.iter().any(|d| d.holds_below(dir))
    }

    /// Whether the view shows project path `path` (as anything).
    pub fn shows(&self, path: &str) -> bool {
        self.seen(path).is_some()
    }

    /// The files the view lists (declared inputs, and a listed set's files), in path order.
    pub fn files(&self) -> impl Iterator<Item = &str> + '_ {
        self.view.iter().filter(|(_, n)| **n == Node::File).map(|(p, _)| p.as_str())
    }

    /// [`Index::shows_below`], answered `true` without looking further where more than
    /// [`NEAR_FILES`] targets' outputs lie below `dir` (each target's, depended on or not): the
    /// near layer's check of each of its folders stays cheap in a folder every target writes in.
    fn may_show_below(&self, dir: &str) -> bool {
        // (Where a file would be one to discover, the step's lookups must reach the view.)
        if self.discover.iter().any(|d| d.holds_below(dir) || d.would_hold(&format!("{dir}/x"))) {
            return true;
        }
        let Some((_, deps)) = &self.produced else { return false };
        let mut below = self.outputs_below(dir).take(NEAR_FILES + 1).peekable();
        below.by_ref().take(NEAR_FILES).any(|(_, i)| deps.contains(i)) || below.peek().is_some()
    }

    /// Whether `path` is an output of a target depended on (where they are not listed).
    fn dep_output(&self, path: &str) -> bool {
        self.produced.as_ref().is_some_and(|(all, deps)| all.get(path).is_some_and(|&i| deps.contains(i)))
    }

    /// The outputs of targets depended on strictly below folder `dir` (where they are not
    /// listed), in path order.
    fn dep_outputs_below<'a>(&'a self, dir: &str) -> impl Iterator<Item = &'a str> + 'a {
        let deps = self.produced.as_ref().map(|(_, deps)| deps);
        self.outputs_below(dir).filter(move |(_, i)| deps.is_some_and(|d| d.contains(*i))).map(|(p, _)| p)
    }

    /// Every target's outputs strictly below folder `dir`, with their target (where the set does
    /// not list its dependencies' outputs; none otherwise), in path order.
    fn outputs_below<'a>(&'a self, dir: &str) -> impl Iterator<Item = (&'a str, usize)> + 'a {
        let from = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        // '0' is the byte after '/': the range holds exactly the paths starting with `dir/`.
        let to = if dir.is_empty() { None } else { Some(format!("{dir}0")) };
        self.produced.iter().flat_map(move |(all, _)| {
            let range = match &to {
                Some(to) => all.range(from.clone()..to.clone()),
                None => all.range(from.clone()..),
            };
            range.map(|(p, &i)| (p.as_str(), i))
        })
    }
}

impl Index {
    /// What view path `path` is, looked up: the view's own paths, and what is on disk at and
    /// below a dependency's output.
    fn seen(&self, path: &str) -> Option<Seen> {
        if path.is_empty() {
            return Some(Seen::Folder);
        }
        let view = &self.view;
        let index = self;
        // At or below a dependency's output: what is on disk there.
        let mut here_and_above = std::iter::successors(Some(path), |d| d.rsplit_once('/').map(|(d, _)| d));
        let in_output = here_and_above.any(|a| view.get(a) == Some(&Node::Output) || index.dep_output(a));
        let node = match view.get(path) {
            _ if in_output => &Node::Output,
            Some(n) => n,
            // A folder holding an output of a target depended on.
            None if index.dep_outputs_below(path).next().is_some() => &Node::Folder,
            // A file the step may discover, or a folder holding one.
            None if index.discover.iter().any(|d| d.holds(path)) => &Node::File,
            None if index.discover.iter().any(|d| d.holds_below(path)) => &Node::Folder,
            None => return None,
        };
        Some(match node {
            Node::Folder | Node::Scratch => Seen::Folder,
            Node::File => Seen::File,
            Node::Link => Seen::Link,
            Node::Output => {
                let st = rustix::fs::statat(&self.root, path, AtFlags::SYMLINK_NOFOLLOW).ok()?;
                match st.st_mode & libc::S_IFMT {
                    libc::S_IFDIR => Seen::DiskFolder,
                    libc::S_IFLNK => Seen::DiskLink,
                    _ => Seen::File,
                }
            }
        })
    }

    /// The attributes the view answers for `path` where it is a folder of the view's own
    /// (not one on disk at or below a dependency's output); `None` for anything else.
    pub fn folder_attr(&self, path: &str) -> Option<FolderAttr> {
        if path.is_empty() || self.seen(path)? != Seen::Folder {
            return None;
        }
        let a = match rustix::fs::statat(&self.root, path, AtFlags::empty()) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => Attr::of(0, &st),
            _ => Attr::folder(0),
        };
        Some(FolderAttr { mode: a.mode, uid: a.uid, gid: a.gid, times: [a.times[0], a.times[1]] })
    }
}

/// At most this many files are copied into a lazy view's near layer ([`Index::near`]).
pub const NEAR_FILES: usize = 64;
/// A file larger than this (bytes) is never copied into the near layer: the view serves it.
pub const NEAR_FILE_BYTES: u64 = 256 * 1024;
/// The near layer holds at most this many bytes of files in all.
pub const NEAR_BYTES: u64 = 1024 * 1024;

/// The files a lazy step is most likely to read (its declared input files, its direct
/// dependencies' outputs), copied into a layer of the overlay above the view
/// ([`Shared::near_layer`]): a step reads them from the area's tmpfs, with no round trip to
/// the server for their lookups and reads. Only regular files the view shows, each at most
/// [`NEAR_FILE_BYTES`], [`NEAR_FILES`] and [`NEAR_BYTES`] in all.
#[derive(Default)]
pub struct Near {
    /// Project paths of the files copied.
    files: Vec<String>,
    /// The folders above them, parents first, with the attributes the view answers for each,
    /// and whether the view shows nothing else below it: such a folder is marked opaque, and
    /// the overlay does not look below it in the view at all.
    folders: Vec<(String, FolderAttr, bool)>,
}

impl Near {
    /// Whether it holds no file (no layer is made).
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

impl Index {
    /// The near layer of this view for `candidates` (project paths, most wanted first, of
    /// which the first `4 × NEAR_FILES` are looked at; one that is not a regular file the view
    /// shows, or that lies below a folder the view does not answer for itself, is left to the
    /// view).
    pub fn near<'a>(&self, candidates: impl IntoIterator<Item = &'a str>) -> Near {
        let mut files: BTreeMap<&str, ()> = BTreeMap::new();
        let mut folders: BTreeMap<String, FolderAttr> = BTreeMap::new();
        let mut bytes = 0u64;
        // Each candidate costs a `stat` or two: a step with thousands of input files looks at
        // the first few only.
        for p in candidates.into_iter().take(4 * NEAR_FILES) {
            if files.len() >= NEAR_FILES {
                break;
            }
            if files.contains_key(p) || self.seen(p) != Some(Seen::File) {
                continue;
            }
            let Ok(st) = rustix::fs::statat(&self.root, p, AtFlags::SYMLINK_NOFOLLOW) else { continue };
            let size = st.st_size as u64;
            if st.st_mode & libc::S_IFMT != libc::S_IFREG
                || size > NEAR_FILE_BYTES
                || bytes + size > NEAR_BYTES
            {
                continue;
            }
            let mut above = Vec::new();
            let answered = p.match_indices('/').all(|(i, _)| {
                let dir = &p[..i];
                if folders.contains_key(dir) {
                    return true;
                }
                self.folder_attr(dir).map(|a| above.push((dir.to_string(), a))).is_some()
            });
            if answered {
                folders.extend(above);
                files.insert(p, ());
                bytes += size;
            }
        }
        // A folder the view shows nothing else below: every path it lists there is copied (or
        // a folder made for one), and nothing unlisted (an output, a file to discover) is there.
        let alone = |dir: &str| {
            !self.may_show_below(dir)
                && self.view.range(format!("{dir}/")..format!("{dir}0")).all(|(q, n)| match n {
                    Node::File | Node::Output => files.contains_key(q.as_str()),
                    Node::Folder => folders.contains_key(q),
                    Node::Link | Node::Scratch => false,
                })
        };
        let folders = folders.iter().map(|(d, a)| (d.clone(), a.clone(), alone(d))).collect();
        Near { files: files.into_keys().map(str::to_string).collect(), folders }
    }
}

/// A folder's attributes as a view answers them ([`Index::folder_attr`]).
#[derive(Clone)]
pub struct FolderAttr {
    /// `st_mode`, the file type included.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Access and modification times: (seconds, nanoseconds) since the epoch.
    pub times: [(u64, u32); 2],
}

impl Index {
    /// The view `view` (with `links`' texts) of the project folder `project`.
    pub fn new(
        project: &Path,
        view: Arc<BTreeMap<String, Node>>,
        links: HashMap<String, String>,
        produced: Option<Produced>,
        discover: Vec<Arc<super::Discoverable>>,
    ) -> io::Result<Index> {
        let root =
            rustix::fs::open(project, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        let (discover_reads, discover_looks) = (Mutex::default(), Mutex::default());
        let project = project.to_path_buf();
        Ok(Index { root, project, view, links, produced, discover, discover_reads, discover_looks })
    }

    /// The files the step read that it may discover but did not declare (an input, a
    /// dependency's output), in path order: the key covers one only where the step's depfile
    /// lists it.
    pub fn discover_reads(&self) -> Vec<String> {
        let reads = self.discover_reads.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        reads.iter().cloned().collect()
    }

    /// The paths the step looked up among the files it may discover but did not declare,
    /// whether it found one there or not, in path order: its key covers each as the view would
    /// show it (`stat`, `test -e`, `__has_include` and a read all look a file up first).
    pub fn discover_looks(&self) -> Vec<super::Look> {
        let looks = self.discover_looks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let look = |(path, (walked, found)): (&String, &(Option<String>, bool))| super::Look {
            path: path.clone(),
            walked: walked.clone(),
            found: *found,
        };
        looks.iter().map(look).collect()
    }

    /// Note a lookup of view path `path` (`found` or not) where it is, or would be, only a file
    /// the step may discover, with the folder walked for it.
    fn note_look(&self, path: &str, found: bool) {
        if found && !self.discover_only(path) {
            return;
        }
        // The folder walked deepest: `inc`'s walk shows a folder `inc`, the project folder's
        // own files' walk does not.
        let depth = |d: &&Arc<super::Discoverable>| d.walked_folder().map_or(0, |w| w.len() + 1);
        let from = match found {
            true => self.discover.iter().filter(|d| d.holds(path)).max_by_key(depth),
            false => self.discover.iter().filter(|d| d.would_hold(path)).max_by_key(depth),
        };
        if let Some(d) = from {
            let mut looks = self.discover_looks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if !looks.contains_key(path) {
                looks.insert(path.to_string(), (d.walked_folder().map(str::to_string), found));
            }
        }
    }

    /// Whether view path `path` is only a file the step may discover (not declared).
    fn discover_only(&self, path: &str) -> bool {
        // (No target writes a file to discover: none is at or below a dependency's output.)
        !self.discover.is_empty()
            && !self.view.contains_key(path)
            && self.discover.iter().any(|d| d.holds(path))
    }

    /// Note a read of view file `path` where it is only a file the step may discover.
    fn note_read(&self, path: &str) {
        if !self.discover_only(path) {
            return;
        }
        let mut reads = self.discover_reads.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !reads.contains(path) {
            reads.insert(path.to_string());
        }
    }
}

/// The server: one thread, started by the first lazy view of the process, serving every
/// sandbox's FUSE connection.
pub struct Server {
    /// The end a `/dev/fuse` descriptor is sent to with its view's id (a sandbox's own mount)
    /// or [`SHARED_ID`] (`SOCK_DGRAM`, close-on-exec).
    send: OwnedFd,
    /// Views registered and not yet finished, by id (a sandbox's own mount takes its view
    /// when it connects).
    waiting: Mutex<HashMap<u64, Arc<Index>>>,
    /// Views finished, for the shared connection to drop.
    retired: Mutex<Vec<u64>>,
    next: AtomicU64,
    /// The shared mount, made at the first lazy view of a sandbox without a user namespace.
    shared: OnceLock<Option<Shared>>,
}

/// The id the shared mount's connection is sent under (views are numbered from 1).
const SHARED_ID: u64 = 0;

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
/// Cleared if the server's loop ever ends: no lazy view can be served any more.
static ALIVE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Whether lazy views can still be served (the server has not stopped).
pub fn alive() -> bool {
    ALIVE.load(Ordering::SeqCst)
}

/// The shared mount: one FUSE file system for every lazy view of the process, where no user
/// namespace is needed (gvbuild runs as root). It is mounted at the sandboxes' temp folder in a
/// mount namespace of its own, which each sandbox starts from (`setns`, then `unshare`), and a
/// view is its entry named by the view's id there; each sandbox covers that folder with its
/// own TMPDIR once its overlay holds the view. This saves each step a FUSE mount (a superblock
/// and a backing device, made and torn down), its `INIT` round trip, and the round trips in
/// which the kernel learns what the server does not support.
pub struct Shared {
    /// The mount namespace (`/proc/thread-self/ns/mnt` of the thread that made it).
    ns: OwnedFd,
    /// The connection, to tell the kernel to forget a finished view; let go of when the server
    /// stops serving it ([`drop_shared`]), so that the kernel then fails what waits on it
    /// instead of leaving it waiting.
    fuse: Mutex<Option<Arc<OwnedFd>>>,
    /// Where it is mounted in that namespace.
    at: std::path::PathBuf,
    /// The sandboxes' area (`O_PATH`): the tmpfs at `at` in that namespace, which holds the
    /// mount (`v/`) and each prepared sandbox's folders (`u/ID`, `w/ID`, `t/ID`: its overlay's
    /// upper layer and work folder, and its TMPDIR; [`Shared::area_for`]; `e/ID`: its near
    /// layer, [`Shared::near_layer`]).
    area: OwnedFd,
    /// Views forgotten whose entries the kernel has not been told to drop yet.
    stale: Mutex<Vec<u64>>,
    /// The namespaces made from `ns` for each set of hidden folders asked for ([`Shared::base`]),
    /// `None` where one could not be made (not tried again).
    bases: Mutex<Vec<(Vec<std::ffi::CString>, Option<OwnedFd>)>>,
}

impl Shared {
    /// Mount it on a thread of its own, which unshares its mount namespace (a thread may: only
    /// a user namespace needs a single-threaded process), makes every mount private (nothing
    /// propagates to the machine), mounts, and leaves the namespace to `ns`.
    fn make(server: &Server, tmp: &Path) -> io::Result<Shared> {
        let at = tmp.to_path_buf();
        let c_at = super::child::cstr(&at)?;
        let made = std::thread::Builder::new()
            .name("gvbuild-view-ns".into())
            .spawn(move || super::child::mount_shared(&c_at, &mount_options()))?
            .join()
            .map_err(|_| io::Error::other("the shared view's thread panicked"))?;
        let (fuse, ns, area) = made?;
        let notify = fuse.try_clone()?;
        // To the server only now that it is mounted (see `own_fuse` in `child`).
        super::child::send_fd(server.send.as_fd(), fuse.as_fd(), &SHARED_ID.to_ne_bytes())
            .map_err(io::Error::from_raw_os_error)?;
        Ok(Shared {
            ns,
            fuse: Mutex::new(Some(Arc::new(notify))),
            area,
            at,
            stale: Mutex::new(Vec::new()),
            bases: Mutex::new(Vec::new()),
        })
    }

    /// The mount namespace to start a sandbox from.
    pub fn ns(&self) -> RawFd {
        self.ns.as_raw_fd()
    }

    /// The namespace for a sandbox that hides `hide` (absolute, canonical folders) to start
    /// from: the shared mount's, with every mount read-only and `hide` covered, made on first
    /// use for each set ([`super::child::prepare_base`]), which saves each sandbox three mount
    /// operations and a tmpfs. `None` where it cannot be made (the sandbox then does it itself,
    /// and says what failed).
    pub fn base(&self, hide: &[std::ffi::CString]) -> Option<RawFd> {
        let mut bases = self.bases.lock().ok()?;
        if let Some((_, ns)) = bases.iter().find(|(h, _)| h.as_slice() == hide) {
            return ns.as_ref().map(|ns| ns.as_raw_fd());
        }
        let make = || -> Option<OwnedFd> {
            let from = self.ns.try_clone().ok()?;
            let wanted = hide.to_vec();
            let at = super::child::cstr(&self.at).ok()?;
            std::thread::Builder::new()
                .name("gvbuild-view-ns".into())
                .spawn(move || super::child::prepare_base(from.as_fd(), &wanted, &at))
                .ok()?
                .join()
                .ok()?
                .ok()
        };
        let ns = make();
        let raw = ns.as_ref().map(|ns| ns.as_raw_fd());
        // Kept with the mount: the descriptor stays open while a sandbox may use it.
        bases.push((hide.to_vec(), ns));
        raw
    }

    /// The lower layer of view `id`'s overlay: its entry in the shared mount.
    pub fn view_path(&self, id: u64) -> std::path::PathBuf {
        self.at.join("v").join(id.to_string())
    }

    /// Make view `id`'s folders in the area: `u/ID` (the overlay's upper layer, a project
    /// folder's usual mode, holding `folders` with their attributes), `w/ID` (its work folder)
    /// and `t/ID` (its TMPDIR, mode 1777), for a sandbox started from a [`Shared::base`]
    /// namespace, and a whiteout in the upper layer at each of `absent` (project paths the view
    /// does not show, in the root or a folder of `folders`: the step's outputs). Returns the
    /// upper layer (`O_PATH`), what the step wrote, and the [`Area`] that removes them all when
    /// dropped. `Err` where a folder or whiteout cannot be made (a full area, a path given
    /// twice).
    pub fn area_for(
        &self,
        id: u64,
        folders: &[super::child::Folder],
        absent: &[&str],
    ) -> io::Result<(OwnedFd, Area)> {
        use rustix::fs::{mkdirat, Timespec, Timestamps};
        let area = Area { id };
        let a = &self.area;
        mkdirat(a, format!("u/{id}"), Mode::from_raw_mode(0o755))?;
        mkdirat(a, format!("w/{id}"), Mode::from_raw_mode(0o700))?;
        mkdirat(a, format!("t/{id}"), Mode::from_raw_mode(0o700))?;
        rustix::fs::chmodat(a, format!("t/{id}"), Mode::from_raw_mode(0o1777), AtFlags::empty())?;
        rustix::fs::chmodat(a, format!("u/{id}"), Mode::from_raw_mode(0o755), AtFlags::empty())?;
        // Every folder and whiteout first, then the folders' attributes: making an entry changes
        // its folder's times.
        for f in folders {
            mkdirat(a, format!("u/{id}/{}", f.rel), Mode::from_raw_mode(0o700))?;
        }
        // A whiteout hides what the lower layers have there: the overlay looks no further, and
        // the step's first write there asks the view nothing.
        for p in absent {
            rustix::fs::mknodat(
                a,
                format!("u/{id}/{p}"),
                rustix::fs::FileType::CharacterDevice,
                Mode::empty(),
                0,
            )?;
        }
        for f in folders {
            let ts = |t: &libc::timespec| Timespec { tv_sec: t.tv_sec, tv_nsec: t.tv_nsec };
            let times = Timestamps { last_access: ts(&f.times[0]), last_modification: ts(&f.times[1]) };
            folder_attrs(a, &format!("u/{id}/{}", f.rel), f.mode, f.owner, &times)?;
        }
        let upper = rustix::fs::openat(
            a,
            format!("u/{id}"),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok((upper, area))
    }

    /// Make view `id`'s near layer, `e/ID` in the area: `near`'s folders, with the view's
    /// attributes (an opaque one marked `trusted.overlay.opaque`), and a copy of each of its
    /// files with the mode, owner and times it has on disk (its change time is the copy's).
    /// What was made is removed with the [`Area`] of the same id. `Err` where the area is full
    /// or a file cannot be read (the overlay then goes without the layer).
    pub fn near_layer(&self, id: u64, index: &Index, near: &Near) -> io::Result<()> {
        use rustix::fs::{mkdirat, Timespec, Timestamps};
        let a = &self.area;
        let me = owner();
        let ts = |s: i64, ns: u64| Timespec { tv_sec: s, tv_nsec: ns as _ };
        mkdirat(a, format!("e/{id}"), Mode::from_raw_mode(0o755))?;
        for (dir, _, _) in &near.folders {
            mkdirat(a, format!("e/{id}/{dir}"), Mode::from_raw_mode(0o700))?;
        }
        for p in &near.files {
            // (Not blocking on a FIFO that took the file's place since it was looked at.)
            let from = rustix::fs::openat(
                &index.root,
                p.as_str(),
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let st = rustix::fs::fstat(&from)?;
            if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_size as u64 > NEAR_FILE_BYTES {
                return Err(io::Error::other(format!("`{p}` changed since it was looked at")));
            }
            let to = rustix::fs::openat(
                a,
                format!("e/{id}/{p}"),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?;
            let (from, mut to) = (File::from(from), File::from(to));
            let copied = io::copy(&mut io::Read::take(from, st.st_size as u64), &mut to)?;
            if copied != st.st_size as u64 {
                return Err(io::Error::other(format!("`{p}` changed while it was copied")));
            }
            if (st.st_uid, st.st_gid) != me {
                rustix::fs::fchown(
                    &to,
                    Some(rustix::fs::Uid::from_raw(st.st_uid)),
                    Some(rustix::fs::Gid::from_raw(st.st_gid)),
                )?;
            }
            rustix::fs::fchmod(&to, Mode::from_raw_mode(st.st_mode & 0o7777))?;
            let times = Timestamps {
                last_access: ts(st.st_atime, st.st_atime_nsec as u64),
                last_modification: ts(st.st_mtime, st.st_mtime_nsec as u64),
            };
            rustix::fs::futimens(&to, &times)?;
        }
        // The folders' attributes last: making an entry changes its folder's times.
        for (dir, attr, opaque) in &near.folders {
            let at = format!("e/{id}/{dir}");
            if *opaque {
                let fd = rustix::fs::openat(
                    a,
                    &at,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                rustix::fs::fsetxattr(&fd, "trusted.overlay.opaque", b"y", rustix::fs::XattrFlags::empty())?;
            }
            let owner = ((attr.uid, attr.gid) != me).then_some((attr.uid, attr.gid));
            let t = |(s, ns): (u64, u32)| Timespec { tv_sec: s as i64, tv_nsec: ns as _ };
            let times = Timestamps { last_access: t(attr.times[0]), last_modification: t(attr.times[1]) };
            folder_attrs(a, &at, attr.mode & 0o7777, owner, &times)?;
        }
        Ok(())
    }

    /// The absolute path of view `id`'s folder `kind` (`u`, `w`, `t` or `e`) in the area, as the
    /// sandbox's namespace has it.
    pub fn area_path(&self, kind: &str, id: u64) -> std::path::PathBuf {
        self.at.join(kind).join(id.to_string())
    }
}

/// Give folder `at` of the area `a` its `owner` (where it is not gvbuild's), permission bits
/// `mode` and `times`, in that order (a change of owner clears the set-id bits).
fn folder_attrs(
    a: &OwnedFd,
    at: &str,
    mode: u32,
    owner: Option<(u32, u32)>,
    times: &rustix::fs::Timestamps,
) -> io::Result<()> {
    if let Some((uid, gid)) = owner {
        let (uid, gid) = (rustix::fs::Uid::from_raw(uid), rustix::fs::Gid::from_raw(gid));
        rustix::fs::chownat(a, at, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)?;
    }
    rustix::fs::chmodat(a, at, Mode::from_raw_mode(mode), AtFlags::empty())?;
    rustix::fs::utimensat(a, at, times, AtFlags::empty())?;
    Ok(())
}

/// A prepared sandbox's folders in the area ([`Shared::area_for`]); dropped (on the reaper
/// thread, after its namespace), removes them with all the step left in them.
#[derive(Debug)]
pub struct Area {
    id: u64,
}

impl Drop for Area {
    fn drop(&mut self) {
        let shared = SERVER.get().and_then(|s| s.as_ref().ok()).and_then(|s| s.shared.get());
        let Some(Some(shared)) = shared else { return };
        let root = std::path::PathBuf::from(format!("/proc/self/fd/{}", shared.area.as_raw_fd()));
        for kind in ["u", "w", "t", "e"] {
            let _ = std::fs::remove_dir_all(root.join(kind).join(self.id.to_string()));
        }
    }
}

/// gvbuild's effective uid and gid, asked once: a folder the disk does not have is theirs, and a
/// sandbox maps and compares them for every step.
pub fn owner() -> (u32, u32) {
    static OWNER: OnceLock<(u32, u32)> = OnceLock::new();
    *OWNER.get_or_init(|| (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw()))
}

/// A FUSE mount's options up to `fd=`, which the mounting code completes: the root a folder,
/// owned by gvbuild's user, open to every process (a step may run as another), permissions
/// checked by the kernel from the modes answered.
pub fn mount_options() -> Vec<u8> {
    let (euid, egid) = owner();
    format!("rootmode=40000,user_id={euid},group_id={egid},allow_other,default_permissions,fd=").into_bytes()
}

/// The process's server, started on first use. `Err` says why it cannot run.
pub fn server() -> Result<&'static Server, String> {
    SERVER
        .get_or_init(|| {
            let (recv, send) = rustix::net::socketpair(
                rustix::net::AddressFamily::UNIX,
                rustix::net::SocketType::DGRAM,
                rustix::net::SocketFlags::CLOEXEC,
                None,
            )
            .map_err(|e| format!("cannot make the view server's socket: {e}"))?;
            std::thread::Builder::new()
                .name("gvbuild-view".into())
                .spawn(move || {
                    serve(recv);
                    ALIVE.store(false, Ordering::SeqCst);
                    drop_shared();
                })
                .map_err(|e| format!("cannot start the view server: {e}"))?;
            Ok(Server {
                send,
                waiting: Mutex::new(HashMap::new()),
                retired: Mutex::new(Vec::new()),
                next: AtomicU64::new(1),
                shared: OnceLock::new(),
            })
        })
        .as_ref()
        .map_err(Clone::clone)
}

impl Server {
    /// Register `index` for a sandbox about to start: the id its child sends with its FUSE
    /// descriptor, or the name of its entry in the shared mount. [`Server::forget`] it when the
    /// step is done (always: the shared mount keeps a view until then).
    pub fn register(&self, index: Arc<Index>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(id, index);
        }
        id
    }

    /// Drop registration `id`: its step is done. On the shared mount the kernel is told to
    /// forget the view's entries (`FUSE_NOTIFY_INVAL_ENTRY`), [`INVAL_BATCH`] views at a time,
    /// and the server drops it.
    pub fn forget(&self, id: u64) {
        let was = self.waiting.lock().ok().and_then(|mut w| w.remove(&id)).is_some();
        if let (true, Some(Some(shared))) = (was, self.shared.get()) {
            // Each notification makes the kernel ask for the root's attributes again at the
            // next sandbox's lookup (a round trip): a batch of them costs one.
            let batch = shared.stale.lock().ok().and_then(|mut stale| {
                stale.push(id);
                (stale.len() >= INVAL_BATCH).then(|| std::mem::take(&mut *stale))
            });
            let fuse = shared.fuse.lock().ok().and_then(|f| f.clone());
            for id in batch.unwrap_or_default() {
                // `struct fuse_out_header` (error: the notification's code, unique 0), then
                // `struct fuse_notify_inval_entry_out` and the name with its NUL. Not from the
                // server's thread, which the kernel may wait on meanwhile. ENOENT: never
                // looked up.
                let name = id.to_string();
                let len = 16 + 16 + name.len() + 1;
                let mut msg = Vec::with_capacity(len);
                msg.extend_from_slice(&(len as u32).to_ne_bytes());
                msg.extend_from_slice(&NOTIFY_INVAL_ENTRY.to_ne_bytes());
                msg.extend_from_slice(&0u64.to_ne_bytes());
                msg.extend_from_slice(&ROOT.to_ne_bytes());
                msg.extend_from_slice(&(name.len() as u32).to_ne_bytes());
                msg.extend_from_slice(&0u32.to_ne_bytes());
                msg.extend_from_slice(name.as_bytes());
                msg.push(0);
                if let Some(fuse) = fuse.as_ref().filter(|_| alive()) {
                    let _ = rustix::io::write(&**fuse, &msg);
                }
            }
        }
        if let Ok(mut r) = self.retired.lock() {
            r.push(id);
        }
    }

    /// The shared mount of sandboxes whose temp folder is `tmp`, made on first use (see
    /// [`Shared`]); `None` where it cannot be made (then each sandbox mounts its own).
    pub fn shared(&self, tmp: &Path) -> Option<&Shared> {
        self.shared.get_or_init(|| Shared::make(self, tmp).ok()).as_ref().filter(|s| s.at == tmp)
    }

    /// The socket a child sends its descriptor on (close-on-exec, so never the step's).
    pub fn socket(&self) -> RawFd {
        self.send.as_raw_fd()
    }

    fn take(&self, id: u64) -> Option<Arc<Index>> {
        self.waiting.lock().ok()?.remove(&id)
    }
}

/// The server's loop: new connections on `recv`, requests on each connection.
fn serve(recv: OwnedFd) {
    let Ok(ep) = epoll::create(epoll::CreateFlags::CLOEXEC) else { return };
    if epoll::add(&ep, &recv, epoll::EventData::new_u64(0), epoll::EventFlags::IN).is_err() {
        return;
    }
    let mut conns: HashMap<u64, Conn> = HashMap::new();
    let mut next_token = 1u64;
    // Large enough for any request the kernel may send with `max_write` at its minimum.
    let mut buf = vec![0u8; 132 * 1024];
    let mut events = Vec::with_capacity(64);
    loop {
        // Finished steps' views go, with the files they hold open.
        let retired = SERVER
            .get()
            .and_then(|s| s.as_ref().ok())
            .and_then(|s| s.retired.lock().ok().map(|mut r| std::mem::take(&mut *r)))
            .unwrap_or_default();
        for id in retired {
            for c in conns.values_mut() {
                c.views.remove(&id);
            }
        }
        events.clear();
        match epoll::wait(&ep, rustix::buffer::spare_capacity(&mut events), None) {
            Ok(_) => {}
            Err(Errno::INTR) => continue,
            Err(_) => return,
        }
        for ev in &events {
            let token = ev.data.u64();
            if token == 0 {
                let Some((id, fd)) = receive(&recv) else { continue };
                let Some(server) = SERVER.get().and_then(|s| s.as_ref().ok()) else { continue };
                let single = match id {
                    SHARED_ID => None,
                    id => match server.take(id) {
                        Some(index) => Some((id, index)),
                        None => continue,
                    },
                };
                if rustix::io::ioctl_fionbio(&fd, true).is_err() {
                    continue;
                }
                if epoll::add(&ep, &fd, epoll::EventData::new_u64(next_token), epoll::EventFlags::IN).is_ok()
                {
                    conns.insert(next_token, Conn::new(fd, single));
                    next_token += 1;
                }
                continue;
            }
            let Some(conn) = conns.get_mut(&token) else { continue };
            match rustix::io::read(&conn.fd, &mut buf[..]) {
                Ok(n) => {
                    // A bug in one answer must not stop every sandbox's server: the request gets
                    // EIO and its view goes (its step's lookups fail), the others go on. (A
                    // sandbox's own connection is closed, which fails what is still waiting.)
                    let served =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| conn.request(&buf[..n])));
                    if served.is_err() && n >= IN_HEADER {
                        conn.reply(u64_at(&buf, 8), -Errno::IO.raw_os_error(), &[]);
                        let view = conn.single.unwrap_or(u64_at(&buf, 16) >> LOCAL_BITS);
                        conn.views.remove(&view);
                        if conn.single.is_some() {
                            let _ = epoll::delete(&ep, &conn.fd);
                            conns.remove(&token);
                        }
                    }
                }
                // Nothing after all, or a request taken back meanwhile.
                Err(Errno::AGAIN | Errno::INTR | Errno::NOENT) => {}
                // ENODEV: unmounted (the sandbox is gone, or the connection aborted); EPERM:
                // never mounted.
                Err(_) => {
                    let _ = epoll::delete(&ep, &conn.fd);
                    if conn.single.is_none() {
                        // No lazy view can be served any more; none may wait on it either.
                        ALIVE.store(false, Ordering::SeqCst);
                        drop_shared();
                    }
                    conns.remove(&token);
                }
            }
        }
    }
}

/// Let go of gvbuild's other descriptor of the shared connection (the server's thread has
/// dropped its own): the connection closes, and every request still waiting on it fails.
fn drop_shared() {
    let shared = SERVER.get().and_then(|s| s.as_ref().ok()).and_then(|s| s.shared.get());
    if let Some(Some(shared)) = shared {
        if let Ok(mut f) = shared.fuse.lock() {
            f.take();
        }
    }
}

/// One datagram of a child: the id (8 bytes) and its `/dev/fuse` descriptor.
fn receive(recv: &OwnedFd) -> Option<(u64, OwnedFd)> {
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let mut id = [0u8; 8];
    let got = recvmsg(recv, &mut [io::IoSliceMut::new(&mut id)], &mut anc, RecvFlags::CMSG_CLOEXEC).ok()?;
    let mut fd = None;
    for msg in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg {
            fd = fds.next();
        }
    }
    (got.bytes == 8).then_some(())?;
    Some((u64::from_ne_bytes(id), fd?))
}

// Opcodes (fuse.h, `enum fuse_opcode`).
const LOOKUP: u32 = 1;
const FORGET: u32 = 2;
const GETATTR: u32 = 3;
const SETATTR: u32 = 4;
const READLINK: u32 = 5;
const SYMLINK: u32 = 6;
const MKNOD: u32 = 8;
const MKDIR: u32 = 9;
const UNLINK: u32 = 10;
const RMDIR: u32 = 11;
const RENAME: u32 = 12;
const LINK: u32 = 13;
const OPEN: u32 = 14;
const READ: u32 = 15;
const WRITE: u32 = 16;
const STATFS: u32 = 17;
const RELEASE: u32 = 18;
const SETXATTR: u32 = 21;
const REMOVEXATTR: u32 = 24;
const INIT: u32 = 26;
const OPENDIR: u32 = 27;
const READDIR: u32 = 28;
const RELEASEDIR: u32 = 29;
const CREATE: u32 = 35;
const INTERRUPT: u32 = 36;
const DESTROY: u32 = 38;
const BATCH_FORGET: u32 = 42;
const FALLOCATE: u32 = 43;
const RENAME2: u32 = 45;
const COPY_FILE_RANGE: u32 = 47;

// `fuse_init_out` flags asked for, where the kernel offers them.
const FUSE_ASYNC_READ: u32 = 1 << 0;
const FUSE_NO_OPEN_SUPPORT: u32 = 1 << 17;
const FUSE_NO_OPENDIR_SUPPORT: u32 = 1 << 24;
const FUSE_PARALLEL_DIROPS: u32 = 1 << 18;
const FUSE_MAX_PAGES: u32 = 1 << 22;
const FUSE_CACHE_SYMLINKS: u32 = 1 << 23;

/// How long the kernel may keep an answer, in seconds: the view's life.
const VALID: u64 = 86_400;
const IN_HEADER: usize = 40;
/// Files a view keeps open between `READ`s.
const OPEN_FILES: usize = 32;
const ROOT: u64 = 1;
/// Finished views whose entries the kernel is told to drop together (the rest of a build's
/// last batch go with the mount when gvbuild exits).
const INVAL_BATCH: usize = 16;
/// `enum fuse_notify_code`: `FUSE_NOTIFY_INVAL_ENTRY`.
const NOTIFY_INVAL_ENTRY: i32 = 3;

/// One FUSE connection: a sandbox's own mount (one view, whose root is node 1) or the
/// shared mount (node 1 is a folder whose entries are the views, by id).
struct Conn {
    fd: OwnedFd,
    /// The view of a sandbox's own mount; `None` on the shared mount.
    single: Option<u64>,
    /// The views served, by id.
    views: HashMap<u64, View>,
    /// Whether the kernel sends no `OPEN` (it offered `FUSE_NO_OPEN_SUPPORT`), no `OPENDIR`
    /// (`FUSE_NO_OPENDIR_SUPPORT`).
    no_open: bool,
    no_opendir: bool,
}

/// Node ids: node `local` of view `v` (its root is local 1) is `v << LOCAL_BITS | local`, so
/// that views on one connection never share a node; node 1 ([`ROOT`]) is the mount's root.
/// The inode number a step sees is `local` (small: a 32-bit `stat` can hold it), unique
/// within its view, which is all one step sees.
const LOCAL_BITS: u32 = 24;
const LOCAL_MASK: u64 = (1 << LOCAL_BITS) - 1;

/// One step's view on a connection.
struct View {
    index: Arc<Index>,
    /// The view's id: the high bits of its node ids.
    id: u64,
    /// Paths by local node id (local `i + 1` is `nodes[i]`; the root, local 1, is `""`).
    nodes: Vec<String>,
    /// Local node ids by path.
    ids: HashMap<String, u64>,
    /// Files read, by node id (opened at the first `READ`).
    files: HashMap<u64, File>,
    /// A folder's listing, made at its first `READDIR`, by node id.
    listings: HashMap<u64, Vec<(String, u64, u32)>>,
}

/// An answer: nothing (a `FORGET`), an errno, or the reply's body.
enum Reply {
    None,
    Err(Errno),
    Body(Vec<u8>),
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map_or(0, |s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).map_or(0, |s| {
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        u64::from_ne_bytes(a)
    })
}

/// The attributes of a path, as `struct fuse_attr` wants them.
struct Attr {
    ino: u64,
    size: u64,
    blocks: u64,
    times: [(u64, u32); 3],
    mode: u32,
    nlink: u32,
    uid: u32,
    gid: u32,
    rdev: u32,
}

impl Attr {
    fn of(ino: u64, st: &rustix::fs::Stat) -> Attr {
        let t = |s: i64, ns: u64| (s.max(0) as u64, ns.min(999_999_999) as u32);
        Attr {
            ino,
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            times: [
                t(st.st_atime, st.st_atime_nsec),
                t(st.st_mtime, st.st_mtime_nsec),
                t(st.st_ctime, st.st_ctime_nsec),
            ],
            mode: st.st_mode,
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u32,
        }
    }

    /// A folder the view has and the disk does not (yet): the folder of an output.
    fn folder(ino: u64) -> Attr {
        Attr {
            ino,
            size: 0,
            blocks: 0,
            times: [(0, 0); 3],
            mode: libc::S_IFDIR | 0o755,
            nlink: 2,
            uid: owner().0,
            gid: owner().1,
            rdev: 0,
        }
    }

    /// `struct fuse_attr` (88 bytes).
    fn put(&self, out: &mut Vec<u8>) {
        for v in [self.ino, self.size, self.blocks, self.times[0].0, self.times[1].0, self.times[2].0] {
            out.extend_from_slice(&v.to_ne_bytes());
        }
        let blksize = 4096u32;
        for v in [
            self.times[0].1,
            self.times[1].1,
            self.times[2].1,
            self.mode,
            self.nlink,
            self.uid,
            self.gid,
            self.rdev,
            blksize,
            0,
        ] {
            out.extend_from_slice(&v.to_ne_bytes());
        }
    }
}

impl Conn {
    /// A connection: a sandbox's own mount showing `single`'s view, or (`None`) the shared one.
    fn new(fd: OwnedFd, single: Option<(u64, Arc<Index>)>) -> Conn {
        let mut views = HashMap::new();
        let id = single.map(|(id, index)| {
            views.insert(id, View::new(id, index));
            id
        });
        Conn { fd, single: id, views, no_open: false, no_opendir: false }
    }

    /// Answer one request (`buf`: header and body).
    fn request(&mut self, buf: &[u8]) {
        if buf.len() < IN_HEADER {
            return;
        }
        let opcode = u32_at(buf, 4);
        let unique = u64_at(buf, 8);
        let nodeid = u64_at(buf, 16);
        let body = &buf[IN_HEADER..];
        let reply = self.answer(opcode, nodeid, body);
        match reply {
            Reply::None => {}
            Reply::Err(e) => self.reply(unique, -e.raw_os_error(), &[]),
            Reply::Body(b) => self.reply(unique, 0, &b),
        }
    }

    /// Write the reply to request `unique`: `error` (0 or a negated errno) and `payload`.
    fn reply(&self, unique: u64, error: i32, payload: &[u8]) {
        let mut out = Vec::with_capacity(16 + payload.len());
        out.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        out.extend_from_slice(&error.to_ne_bytes());
        out.extend_from_slice(&unique.to_ne_bytes());
        out.extend_from_slice(payload);
        // A request taken back meanwhile (ENOENT) needs no answer.
        let _ = rustix::io::write(&self.fd, &out);
    }

    /// The answer to request `opcode` on node `nodeid` (`body`: what follows the header).
    fn answer(&mut self, opcode: u32, nodeid: u64, body: &[u8]) -> Reply {
        match opcode {
            INIT => {
                let out = init(body);
                self.no_open = u32_at(&out, 12) & FUSE_NO_OPEN_SUPPORT != 0;
                self.no_opendir = u32_at(&out, 12) & FUSE_NO_OPENDIR_SUPPORT != 0;
                return Reply::Body(out);
            }
            FORGET | BATCH_FORGET | INTERRUPT => return Reply::None,
            DESTROY => return Reply::Body(Vec::new()),
            STATFS => {
                // `struct fuse_kstatfs`: no blocks or inodes to spare (read-only), 4 KiB blocks.
                let mut out = vec![0u8; 80];
                out[40..44].copy_from_slice(&4096u32.to_ne_bytes());
                out[44..48].copy_from_slice(&255u32.to_ne_bytes());
                out[48..52].copy_from_slice(&4096u32.to_ne_bytes());
                return Reply::Body(out);
            }
            _ => {}
        }
        let learned = Learned { no_open: self.no_open, no_opendir: self.no_opendir };
        let (view, local) = match (nodeid, self.single) {
            (ROOT, Some(v)) => (v, 1),
            (ROOT, None) => return self.top(opcode, body),
            _ => (nodeid >> LOCAL_BITS, nodeid & LOCAL_MASK),
        };
        match self.views.get_mut(&view) {
            Some(v) => v.answer(opcode, nodeid, local, body, learned),
            // A finished step's view, which the kernel may still ask about.
            None => match read_only(opcode) {
                Reply::Err(Errno::NOSYS) => Reply::Err(Errno::NOENT),
                r => r,
            },
        }
    }

    /// The shared mount's root: a folder whose entries are the views registered, named by
    /// id; it lists none of them.
    fn top(&mut self, opcode: u32, body: &[u8]) -> Reply {
        match opcode {
            LOOKUP => {
                let name = body.split(|b| *b == 0).next().unwrap_or_default();
                let id = std::str::from_utf8(name)
                    .ok()
                    .and_then(|n| n.parse::<u64>().ok().filter(|id| id.to_string() == n))
                    .filter(|&id| id > 0 && id < 1 << (64 - LOCAL_BITS));
                // Not cached (an error, not a negative entry): no name is asked for before
                // its view is registered, and a finished view is never asked for again.
                let Some(id) = id else { return Reply::Err(Errno::NOENT) };
                let view = match self.views.entry(id) {
                    std::collections::hash_map::Entry::Occupied(v) => v.into_mut(),
                    std::collections::hash_map::Entry::Vacant(slot) => match registered(id) {
                        Some(index) => slot.insert(View::new(id, index)),
                        None => return Reply::Err(Errno::NOENT),
                    },
                };
                view.entry(String::new())
            }
            GETATTR => Reply::Body(attr_out(&Attr::folder(ROOT))),
            OPENDIR if self.no_opendir => Reply::Err(Errno::NOSYS),
            OPENDIR => Reply::Body(open_out(ROOT, 0)),
            READDIR => Reply::Body(dirents(&dots(ROOT), u64_at(body, 8), u32_at(body, 16) as usize)),
            RELEASEDIR => Reply::Body(Vec::new()),
            _ => read_only(opcode),
        }
    }
}

/// What the kernel told a connection at `INIT`, for its views' answers.
#[derive(Clone, Copy)]
struct Learned {
    no_open: bool,
    no_opendir: bool,
}

/// The view registered under `id`, if it still is.
fn registered(id: u64) -> Option<Arc<Index>> {
    let server = SERVER.get()?.as_ref().ok()?;
    server.waiting.lock().ok()?.get(&id).cloned()
}

/// The answer to a request no view takes: `EROFS` for one that would write, else `ENOSYS`.
fn read_only(opcode: u32) -> Reply {
    match opcode {
        SETATTR | SYMLINK | MKNOD | MKDIR | UNLINK | RMDIR | RENAME | LINK | WRITE | SETXATTR
        | REMOVEXATTR | CREATE | FALLOCATE | RENAME2 | COPY_FILE_RANGE => Reply::Err(Errno::ROFS),
        _ => Reply::Err(Errno::NOSYS),
    }
}

/// `struct fuse_attr_out`: `a`, valid for a day.
fn attr_out(a: &Attr) -> Vec<u8> {
    let mut out = Vec::with_capacity(104);
    out.extend_from_slice(&VALID.to_ne_bytes());
    out.extend_from_slice(&[0u8; 8]);
    a.put(&mut out);
    out
}

/// `struct fuse_dirent`s of `listing` from entry `offset` on, as many as fit in `size` bytes.
fn dirents(listing: &[(String, u64, u32)], offset: u64, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size.min(64 * 1024));
    for (i, (name, ino, kind)) in listing.iter().enumerate().skip(offset as usize) {
        let len = 24 + name.len();
        let padded = (len + 7) & !7;
        if out.len() + padded > size {
            break;
        }
        out.extend_from_slice(&ino.to_ne_bytes());
        out.extend_from_slice(&(i as u64 + 1).to_ne_bytes());
        out.extend_from_slice(&(name.len() as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(name.as_bytes());
        out.resize(out.len() + padded - len, 0);
    }
    out
}

impl View {
    fn new(id: u64, index: Arc<Index>) -> View {
        let mut ids = HashMap::new();
        ids.insert(String::new(), 1);
        View { index, id, nodes: vec![String::new()], ids, files: HashMap::new(), listings: HashMap::new() }
    }

    /// The path of local node `local`.
    fn path(&self, local: u64) -> Option<&str> {
        self.nodes.get((local as usize).checked_sub(1)?).map(String::as_str)
    }

    /// The node id of view path `path`, given one if it has none; `None` once the view has
    /// as many as its share of node ids holds (16 million).
    fn id_of(&mut self, path: &str) -> Option<u64> {
        let local = match self.ids.get(path) {
            Some(&local) => local,
            None if self.nodes.len() + 1 >= 1 << LOCAL_BITS => return None,
            None => {
                self.nodes.push(path.to_string());
                let local = self.nodes.len() as u64;
                self.ids.insert(path.to_string(), local);
                local
            }
        };
        Some(self.id << LOCAL_BITS | local)
    }

    /// What view path `path` is (see [`Index::seen`]).
    fn seen(&self, path: &str) -> Option<Seen> {
        self.index.seen(path)
    }

    /// The attributes of view path `path` (node `ino`), from the disk where it is there.
    fn attr(&self, path: &str, ino: u64) -> Result<Attr, Errno> {
        let disk = if path.is_empty() { "." } else { path };
        let root = &self.index.root;
        match self.seen(path) {
            None => Err(Errno::NOENT),
            Some(Seen::Folder) => match rustix::fs::statat(root, disk, AtFlags::empty()) {
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => Ok(Attr::of(ino, &st)),
                _ => Ok(Attr::folder(ino)),
            },
            // A file is what it is on disk, through a symlink that leads out of the project too
            // (its key is what it leads to).
            Some(Seen::File) => rustix::fs::statat(root, disk, AtFlags::empty()).map(|st| Attr::of(ino, &st)),
            Some(Seen::DiskFolder | Seen::DiskLink) => {
                rustix::fs::statat(root, disk, AtFlags::SYMLINK_NOFOLLOW).map(|st| Attr::of(ino, &st))
            }
            Some(Seen::Link) => {
                let len = self.index.links.get(path).map_or(0, String::len) as u64;
                let mut a = Attr::folder(ino);
                a.mode = libc::S_IFLNK | 0o777;
                a.size = len;
                a.nlink = 1;
                Ok(a)
            }
        }
    }

    fn entry(&mut self, path: String) -> Reply {
        let mut out = Vec::with_capacity(128);
        let seen = self.seen(&path);
        self.index.note_look(&path, seen.is_some());
        if seen.is_none() {
            // A negative entry, cached like the others: an include search asks again and again.
            out.extend_from_slice(&0u64.to_ne_bytes());
            out.extend_from_slice(&0u64.to_ne_bytes());
            out.extend_from_slice(&VALID.to_ne_bytes());
            out.extend_from_slice(&VALID.to_ne_bytes());
            out.extend_from_slice(&[0u8; 8]);
            Attr::folder(0).put(&mut out);
            return Reply::Body(out);
        }
        let Some(id) = self.id_of(&path) else { return Reply::Err(Errno::NFILE) };
        let attr = match self.attr(&path, id & LOCAL_MASK) {
            Ok(a) => a,
            Err(e) => return Reply::Err(e),
        };
        out.extend_from_slice(&id.to_ne_bytes());
        out.extend_from_slice(&0u64.to_ne_bytes());
        out.extend_from_slice(&VALID.to_ne_bytes());
        out.extend_from_slice(&VALID.to_ne_bytes());
        out.extend_from_slice(&[0u8; 8]);
        attr.put(&mut out);
        Reply::Body(out)
    }

    /// The answer to request `opcode` on node `nodeid` of this view (local node `local`).
    fn answer(&mut self, opcode: u32, nodeid: u64, local: u64, body: &[u8], conn: Learned) -> Reply {
        match opcode {
            LOOKUP => {
                let name = body.split(|b| *b == 0).next().unwrap_or_default();
                let (Some(dir), Ok(name)) = (self.path(local), std::str::from_utf8(name)) else {
                    return Reply::Err(Errno::NOENT);
                };
                let path = if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") };
                self.entry(path)
            }
            GETATTR => {
                let Some(path) = self.path(local).map(str::to_string) else {
                    return Reply::Err(Errno::NOENT);
                };
                match self.attr(&path, local) {
                    Ok(a) => Reply::Body(attr_out(&a)),
                    Err(e) => Reply::Err(e),
                }
            }
            READLINK => {
                let Some(path) = self.path(local) else { return Reply::Err(Errno::NOENT) };
                match self.seen(path) {
                    Some(Seen::Link) => match self.index.links.get(path) {
                        Some(text) => Reply::Body(text.as_bytes().to_vec()),
                        None => Reply::Err(Errno::INVAL),
                    },
                    Some(Seen::DiskLink) => {
                        match rustix::fs::readlinkat(&self.index.root, path, Vec::new()) {
                            Ok(text) => Reply::Body(text.into_bytes()),
                            Err(e) => Reply::Err(e),
                        }
                    }
                    _ => Reply::Err(Errno::INVAL),
                }
            }
            // No `OPEN` (`FUSE_NO_OPEN_SUPPORT`): a round trip saved on every file the step
            // opens, and the `RELEASE` after it; the file is opened at its first `READ` and kept
            // for the view's life. (Only the overlay opens the lower layer, and only to read.)
            OPEN if conn.no_open => Reply::Err(Errno::NOSYS),
            OPEN => match self.path(local).map(|p| self.seen(p)) {
                Some(Some(Seen::File)) => Reply::Body(open_out(nodeid, 0)),
                Some(_) => Reply::Err(Errno::ISDIR),
                None => Reply::Err(Errno::NOENT),
            },
            READ => {
                let (offset, size) = (u64_at(body, 8), u32_at(body, 16));
                if !self.files.contains_key(&nodeid) {
                    // Kept open while the step reads, up to a few: a compile reads hundreds of
                    // headers, each once.
                    if self.files.len() >= OPEN_FILES {
                        self.files.clear();
                    }
                    let Some(path) = self.path(local) else { return Reply::Err(Errno::NOENT) };
                    if !matches!(self.seen(path), Some(Seen::File)) {
                        return Reply::Err(Errno::ISDIR);
                    }
                    self.index.note_read(path);
                    match rustix::fs::openat(
                        &self.index.root,
                        path,
                        OFlags::RDONLY | OFlags::CLOEXEC,
                        Mode::empty(),
                    ) {
                        Ok(fd) => {
                            self.files.insert(nodeid, File::from(fd));
                        }
                        Err(e) => return Reply::Err(e),
                    }
                }
                let Some(f) = self.files.get(&nodeid) else { return Reply::Err(Errno::BADF) };
                let mut data = vec![0u8; size as usize];
                let mut got = 0;
                while got < data.len() {
                    match f.read_at(&mut data[got..], offset + got as u64) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Reply::Err(Errno::from_io_error(&e).unwrap_or(Errno::IO)),
                    }
                }
                data.truncate(got);
                Reply::Body(data)
            }
            RELEASE => Reply::Body(Vec::new()),
            // A folder's listing is made at its first `READDIR`: the overlay opens folders it
            // never reads (`FUSE_NO_OPENDIR_SUPPORT` spares the round trip where offered).
            OPENDIR if conn.no_opendir => Reply::Err(Errno::NOSYS),
            OPENDIR => match self.path(local).map(|p| self.seen(p)) {
                Some(Some(Seen::Folder | Seen::DiskFolder)) => Reply::Body(open_out(nodeid, 0)),
                Some(_) => Reply::Err(Errno::NOTDIR),
                None => Reply::Err(Errno::NOENT),
            },
            READDIR => {
                let (offset, size) = (u64_at(body, 8), u32_at(body, 16) as usize);
                if offset == 0 || !self.listings.contains_key(&nodeid) {
                    let Some(dir) = self.path(local).map(str::to_string) else {
                        return Reply::Err(Errno::NOENT);
                    };
                    let listing = match self.seen(&dir) {
                        Some(Seen::Folder) => self.listing(&dir, local),
                        Some(Seen::DiskFolder) => self.disk_listing(&dir, local),
                        _ => return Reply::Err(Errno::NOTDIR),
                    };
                    self.listings.insert(nodeid, listing);
                }
                let Some(listing) = self.listings.get(&nodeid) else { return Reply::Err(Errno::BADF) };
                Reply::Body(dirents(listing, offset, size))
            }
            RELEASEDIR => Reply::Body(Vec::new()),
            _ => read_only(opcode),
        }
    }

    /// The entries of view folder `dir` (local node `me`): `.`, `..`, then its children in name
    /// order, each with its inode number (local node id) and `d_type`.
    fn listing(&mut self, dir: &str, me: u64) -> Vec<(String, u64, u32)> {
        let mut out = dots(me);
        let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        let mut children: BTreeMap<String, u32> = self
            .index
            .view
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .filter(|(p, _)| !p[prefix.len()..].contains('/'))
            .map(|(p, n)| {
                let t = match n {
                    Node::Folder | Node::Scratch => libc::DT_DIR,
                    Node::File => libc::DT_REG,
                    Node::Link => libc::DT_LNK,
                    Node::Output => libc::DT_UNKNOWN,
                };
                (p.clone(), u32::from(t))
            })
            .collect();
        // The unlisted files it may discover, and outputs of targets depended on: the next
        // name down to each.
        for d in &self.index.discover {
            for f in d.files.iter().filter(|f| f.starts_with(&prefix) && d.holds(f)) {
                let rest = &f[prefix.len()..];
                let (name, t) = match rest.split_once('/') {
                    Some((name, _)) => (name, libc::DT_DIR),
                    None => (rest, libc::DT_REG),
                };
                children.entry(format!("{prefix}{name}")).or_insert(u32::from(t));
            }
        }
        for o in self.index.dep_outputs_below(dir) {
            let rest = &o[prefix.len()..];
            let (name, t) = match rest.split_once('/') {
                Some((name, _)) => (name, libc::DT_DIR),
                None => (rest, libc::DT_UNKNOWN),
            };
            children.entry(format!("{prefix}{name}")).or_insert(u32::from(t));
        }
        for (p, t) in children {
            let Some(id) = self.id_of(&p) else { break };
            out.push((p[prefix.len()..].to_string(), id & LOCAL_MASK, t));
        }
        out
    }
}

impl View {
    /// The entries of folder `dir` on disk (at or below a dependency's output, local node `me`).
    fn disk_listing(&mut self, dir: &str, me: u64) -> Vec<(String, u64, u32)> {
        let mut out = dots(me);
        let Ok(rd) = std::fs::read_dir(self.index.project.join(dir)) else { return out };
        let mut names: Vec<(String, u32)> = rd
            .flatten()
            .filter_map(|e| {
                let t = e.file_type().ok()?;
                let t = if t.is_dir() {
                    libc::DT_DIR
                } else if t.is_symlink() {
                    libc::DT_LNK
                } else {
                    libc::DT_REG
                };
                Some((e.file_name().to_str()?.to_string(), u32::from(t)))
            })
            .collect();
        names.sort();
        for (name, t) in names {
            let Some(id) = self.id_of(&format!("{dir}/{name}")) else { break };
            out.push((name, id & LOCAL_MASK, t));
        }
        out
    }
}

/// A listing's first two entries, `.` (node `me`) and `..`.
fn dots(me: u64) -> Vec<(String, u64, u32)> {
    vec![(".".to_string(), me, u32::from(libc::DT_DIR)), ("..".to_string(), ROOT, u32::from(libc::DT_DIR))]
}

/// What a view path is, looked up ([`Index::seen`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    Folder,
    File,
    Link,
    /// A folder on disk at or below a dependency's output: all below it is seen.
    DiskFolder,
    /// A symlink on disk at or below a dependency's output.
    DiskLink,
}

/// `struct fuse_open_out`.
fn open_out(fh: u64, flags: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&fh.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out
}

/// The answer to `INIT` (`struct fuse_init_out`, 64 bytes): protocol 7, at most minor 36.
fn init(body: &[u8]) -> Vec<u8> {
    let minor = u32_at(body, 4).min(36);
    let readahead = u32_at(body, 8).min(128 * 1024);
    let offered = u32_at(body, 12);
    let flags = offered
        & (FUSE_ASYNC_READ
            | FUSE_NO_OPEN_SUPPORT
            | FUSE_NO_OPENDIR_SUPPORT
            | FUSE_PARALLEL_DIROPS
            | FUSE_MAX_PAGES
            | FUSE_CACHE_SYMLINKS);
    let mut out = Vec::with_capacity(64);
    for v in [7u32, minor, readahead, flags] {
        out.extend_from_slice(&v.to_ne_bytes());
    }
    out.extend_from_slice(&16u16.to_ne_bytes()); // max_background
    out.extend_from_slice(&12u16.to_ne_bytes()); // congestion_threshold
    out.extend_from_slice(&4096u32.to_ne_bytes()); // max_write: nothing is written
    out.extend_from_slice(&1u32.to_ne_bytes()); // time_gran, ns
    out.extend_from_slice(&32u16.to_ne_bytes()); // max_pages: 128 KiB reads
    out.resize(64, 0);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn body(r: Reply) -> Vec<u8> {
        match r {
            Reply::Body(b) => b,
            Reply::Err(e) => panic!("error {e}"),
            Reply::None => panic!("no reply"),
        }
    }

    fn lookup(c: &mut Conn, parent: u64, name: &str) -> u64 {
        let mut b = name.as_bytes().to_vec();
        b.push(0);
        u64_at(&body(c.answer(LOOKUP, parent, &b)), 0)
    }

    /// The view answers from its set: a visible file, a hidden one (a cached miss: node 0), a
    /// folder the view makes, and what is on disk below a dependency's output folder; a read
    /// gives the file's bytes, a listing the view's children only.
    #[test]
    fn lookups_reads_and_listings_follow_the_visible_set() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(root.join("src/a.txt"), "hello").unwrap();
        std::fs::write(root.join("src/hidden.txt"), "no").unwrap();
        std::fs::create_dir_all(root.join("out/tree/deep")).unwrap();
        std::fs::write(root.join("out/tree/deep/x"), "x").unwrap();
        let mut view = BTreeMap::new();
        view.insert("src".to_string(), Node::Folder);
        view.insert("src/a.txt".to_string(), Node::File);
        view.insert("out".to_string(), Node::Folder);
        view.insert("out/tree".to_string(), Node::Output);
        view.insert("made".to_string(), Node::Folder);
        let index = Index::new(root, Arc::new(view), HashMap::new(), None, Vec::new()).unwrap();
        let null: OwnedFd = File::open("/dev/null").unwrap().into();
        let mut c = Conn::new(null, Some((1, Arc::new(index))));

        let init = body(c.answer(INIT, 0, &[7, 0, 0, 0, 40, 0, 0, 0, 0, 0, 2, 0, 255, 255, 255, 255]));
        assert_eq!(init.len(), 64);
        assert_eq!(u32_at(&init, 0), 7);
        assert_eq!(u32_at(&init, 4), 36, "at most minor 36");

        let src = lookup(&mut c, ROOT, "src");
        assert!(src > ROOT);
        let a = lookup(&mut c, src, "a.txt");
        assert!(a > ROOT);
        assert_eq!(lookup(&mut c, src, "hidden.txt"), 0, "a hidden file is a cached miss");
        assert_eq!(lookup(&mut c, ROOT, ".gvbuild"), 0);
        assert!(lookup(&mut c, ROOT, "made") > ROOT, "a folder only the view has");

        // READ: fh (unused), offset, size.
        let mut read = vec![0u8; 40];
        read[16..20].copy_from_slice(&4096u32.to_ne_bytes());
        assert_eq!(body(c.answer(READ, a, &read)), b"hello");

        let out = lookup(&mut c, ROOT, "out");
        let tree = lookup(&mut c, out, "tree");
        let deep = lookup(&mut c, tree, "deep");
        assert!(lookup(&mut c, deep, "x") > ROOT, "all below a dependency's output folder");

        let mut rd = vec![0u8; 40];
        rd[16..20].copy_from_slice(&4096u32.to_ne_bytes());
        let listing = body(c.answer(READDIR, src, &rd));
        let mut names = Vec::new();
        let mut at = 0;
        while at + 24 <= listing.len() {
            let len = u32_at(&listing, at + 16) as usize;
            names.push(String::from_utf8(listing[at + 24..at + 24 + len].to_vec()).unwrap());
            at += (24 + len + 7) & !7;
        }
        assert_eq!(names, [".", "..", "a.txt"], "the view's children only");
        assert!(matches!(c.answer(WRITE, a, &[]), Reply::Err(Errno::ROFS)));
    }

    /// A file the step may discover but did not declare is noted when it is read (its first
    /// `READ`); a declared input, a file only looked up or stat'ed and a hidden one are not.
    /// Every lookup among those files is noted too, found or not, with the folder walked.
    #[test]
    fn the_files_a_step_may_discover_are_noted_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("src")).unwrap();
        for (f, text) in [("main.c", "int x;"), ("a.h", "#define A"), ("ver.txt", "v1"), ("empty.txt", "")] {
            std::fs::write(root.join("src").join(f), text).unwrap();
        }
        std::fs::write(root.join("hidden.txt"), "no").unwrap();
        let mut view = BTreeMap::new();
        view.insert("src".to_string(), Node::Folder);
        view.insert("src/main.c".to_string(), Node::File);
        let files = ["src/main.c", "src/a.h", "src/ver.txt", "src/empty.txt"].map(String::from).to_vec();
        let discover = vec![Arc::new(super::super::Discoverable::walked("src", files))];
        let index = Arc::new(Index::new(root, Arc::new(view), HashMap::new(), None, discover).unwrap());
        let null: OwnedFd = File::open("/dev/null").unwrap().into();
        let mut c = Conn::new(null, Some((1, Arc::clone(&index))));
        body(c.answer(INIT, 0, &[7, 0, 0, 0, 40, 0, 0, 0, 0, 0, 2, 0, 255, 255, 255, 255]));
        let src = lookup(&mut c, ROOT, "src");
        let mut read = vec![0u8; 40];
        read[16..20].copy_from_slice(&4096u32.to_ne_bytes());
        let main = lookup(&mut c, src, "main.c");
        assert_eq!(body(c.answer(READ, main, &read)), b"int x;");
        let ver = lookup(&mut c, src, "ver.txt");
        let a = lookup(&mut c, src, "a.h");
        assert!(a > ROOT);
        assert!(index.discover_reads().is_empty(), "looked up, not read: {:?}", index.discover_reads());
        assert_eq!(body(c.answer(READ, ver, &read)), b"v1");
        assert_eq!(body(c.answer(READ, ver, &read)), b"v1");
        // An empty file is read without a `READ`: its lookup is what is noted of it.
        let empty = lookup(&mut c, src, "empty.txt");
        body(c.answer(GETATTR, empty, &[0u8; 16]));
        assert_eq!(lookup(&mut c, ROOT, "hidden.txt"), 0);
        assert_eq!(lookup(&mut c, src, "gone.h"), 0);
        assert_eq!(index.discover_reads(), ["src/ver.txt"]);
        // Looked up: found and not declared, or missing where it would be one to discover.
        let looks: Vec<(String, bool)> =
            index.discover_looks().into_iter().map(|l| (l.path, l.found)).collect();
        let want = [("src/a.h", true), ("src/empty.txt", true), ("src/gone.h", false), ("src/ver.txt", true)];
        assert_eq!(looks, want.map(|(p, f)| (p.to_string(), f)));
        assert!(index.discover_looks().iter().all(|l| l.walked.as_deref() == Some("src")));
    }

    /// On the shared mount each view is the root's entry named by its id: two views of one
    /// project on one connection answer each from its own set, with node ids of their own; a
    /// name no view is registered under is not there.
    #[test]
    fn the_shared_mount_keeps_each_view_to_its_own_set() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(root.join("src/a.txt"), "a").unwrap();
        std::fs::write(root.join("src/b.txt"), "b").unwrap();
        let set = |f: &str| {
            let mut view = BTreeMap::new();
            view.insert("src".to_string(), Node::Folder);
            view.insert(format!("src/{f}"), Node::File);
            Arc::new(Index::new(root, Arc::new(view), HashMap::new(), None, Vec::new()).unwrap())
        };
        let server = server().unwrap();
        let (a, b) = (server.register(set("a.txt")), server.register(set("b.txt")));
        let null: OwnedFd = File::open("/dev/null").unwrap().into();
        let mut c = Conn::new(null, None);
        body(c.answer(INIT, 0, &[7, 0, 0, 0, 40, 0, 0, 0, 0, 0, 2, 0, 255, 255, 255, 255]));

        let view_a = lookup(&mut c, ROOT, &a.to_string());
        let view_b = lookup(&mut c, ROOT, &b.to_string());
        assert!(view_a > ROOT && view_b > ROOT && view_a != view_b);
        let (src_a, src_b) = (lookup(&mut c, view_a, "src"), lookup(&mut c, view_b, "src"));
        assert_ne!(src_a, src_b, "each view has node ids of its own");
        assert!(lookup(&mut c, src_a, "a.txt") > ROOT);
        assert_eq!(lookup(&mut c, src_a, "b.txt"), 0, "b.txt is not in a's set");
        assert!(lookup(&mut c, src_b, "b.txt") > ROOT);
        assert_eq!(lookup(&mut c, src_b, "a.txt"), 0, "a.txt is not in b's set");
        let unknown = format!("{}\0", b + 1000);
        assert!(matches!(c.answer(LOOKUP, ROOT, unknown.as_bytes()), Reply::Err(Errno::NOENT)));
        assert!(matches!(c.answer(LOOKUP, ROOT, b"..\0"), Reply::Err(Errno::NOENT)));
        let padded = format!("0{a}\0");
        assert!(
            matches!(c.answer(LOOKUP, ROOT, padded.as_bytes()), Reply::Err(Errno::NOENT)),
            "one name a view"
        );
        // What a step's `stat` sees: a small inode number, whatever the view's id.
        let attr = body(c.answer(GETATTR, src_b, &[0u8; 16]));
        assert!(u64_at(&attr, 16) < 1 << 24, "inode {}", u64_at(&attr, 16));

        // Once a view is forgotten, a late question about its nodes finds nothing.
        server.forget(a);
        c.views.remove(&a);
        assert!(matches!(c.answer(GETATTR, src_a, &[0u8; 16]), Reply::Err(Errno::NOENT)));
        assert!(lookup(&mut c, src_b, "b.txt") > ROOT);
        server.forget(b);
    }
}
