//! The sandbox's setup, run in the step's new process before `execve`: new namespaces, the
//! machine read-only, a private TMPDIR, and the project folder replaced by the step's view.
//!
//! The process is made as `posix_spawn` makes one ([`spawn`]: `clone` with `CLONE_VM |
//! CLONE_VFORK`): it runs in gvbuild's memory while the spawning thread waits, so only
//! async-signal-safe calls are sound: nothing here allocates, locks or panics. Every path and
//! buffer was made by the parent ([`Setup`], [`Exec`]); the code makes system calls on them and
//! nothing else. A failure is written to the report pipe as `(phase, index, errno)` (three
//! native-endian `u32`s) before the child exits with 127. ([`mount_shared`] is the exception:
//! it runs on a thread of gvbuild's own, not in a child.)
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

/// One step of the view's setup, in order.
#[derive(Debug)]
pub enum Op {
    /// A folder (absolute path) in the view's tmpfs; an existing one is fine.
    Mkdir(CString),
    /// An empty file (absolute path) to bind a file over; an existing one is fine.
    Touch(CString),
    /// A symlink with this text at this absolute path.
    Link { text: CString, at: CString },
    /// The project's `rel` (relative to the project folder as it is on disk) bound at `at`
    /// (absolute), read-only unless `writable` (a scratch folder).
    Bind { rel: CString, at: CString, folder: bool, writable: bool },
}

/// The phases a setup goes through, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Unshare = 1,
    IdMap = 2,
    Private = 3,
    ReadOnly = 4,
    OpenProject = 5,
    Tmp = 6,
    View = 7,
    Op = 8,
    Send = 9,
    Chdir = 10,
    Hide = 11,
    /// Starting the program: its process group, stdio, `execve`.
    Exec = 12,
    /// The lazy view's FUSE file system.
    Fuse = 13,
    /// The lazy view's overlay.
    Overlay = 14,
    /// Entering the shared view's mount namespace.
    Setns = 15,
}

impl Phase {
    pub fn from_u32(n: u32) -> Option<Phase> {
        use Phase::*;
        [
            Unshare,
            IdMap,
            Private,
            ReadOnly,
            OpenProject,
            Tmp,
            View,
            Op,
            Send,
            Chdir,
            Hide,
            Exec,
            Fuse,
            Overlay,
            Setns,
        ]
        .into_iter()
        .find(|p| *p as u32 == n)
    }
}

/// Everything the child needs, made by the parent.
#[derive(Debug)]
pub struct Setup {
    /// `unshare` flags: `CLONE_NEWNS`, with `CLONE_NEWUSER` where needed, `CLONE_NEWNET` for
    /// `network: false`.
    pub flags: libc::c_int,
    /// With a user namespace: `/proc/self/uid_map` and `gid_map` contents (identity maps).
    pub id_maps: Option<(Vec<u8>, Vec<u8>)>,
    /// The project folder, canonical.
    pub project: CString,
    /// Bind from a detached clone of the project's mount (see [`enter`]).
    pub detached: bool,
    /// `false`: namespaces only (`network: false` for an unsandboxed step), no view.
    pub view: bool,
    /// Absolute folders outside the project to cover with an empty read-only tmpfs (the cache).
    pub hide: Vec<CString>,
    /// The step's private temp folder (TMPDIR): an empty folder of the build's, which a
    /// fresh tmpfs covers in each sandbox.
    pub tmp: CString,
    pub ops: Vec<Op>,
    /// Write end of the report pipe.
    pub report: OwnedFd,
    /// The socket the view's root goes back to the parent through.
    pub send: OwnedFd,
    /// A lazy view ([`super::fuse`]) instead of one bind per visible file.
    pub lazy: Option<Lazy>,
}

/// A lazy view's setup: the FUSE connection's registration and the mounts' options.
#[derive(Debug)]
pub struct Lazy {
    /// The id the view is registered under with the server.
    pub id: u64,
    /// The server's socket (close-on-exec).
    pub socket: RawFd,
    /// The FUSE mount's options, up to `fd=`, which the child completes.
    pub fuse_opts: Vec<u8>,
    /// The overlay's options (its layers relative to the view's tmpfs, its lower layer in
    /// the shared mount where there is one).
    pub overlay_opts: CString,
    /// The shared mount's namespace ([`super::fuse::Shared`]), or -1: the sandbox starts from
    /// it, and mounts no FUSE file system of its own.
    pub shared_ns: RawFd,
    /// `shared_ns` is one made by [`prepare_base`] for this sandbox's hidden folders: every
    /// mount in it private and read-only, the hidden folders covered; the child does none of
    /// that again.
    pub prepared: bool,
    /// With `prepared`: the step's folders in the sandboxes' area, which gvbuild made and owns
    /// (the overlay's layers are in `overlay_opts`): the child mounts the overlay and binds this
    /// folder (absolute) over the temp folder as TMPDIR, and mounts no tmpfs at all.
    pub area: Option<CString>,
    /// The folders above the step's outputs, made in the upper layer before the overlay is
    /// mounted, parents first, with the attributes the view answers for them: the step's first
    /// write in each then copies nothing up (a copy-up asks the view for the folder's file
    /// attributes, a round trip, and goes through the work folder).
    pub folders: Vec<Folder>,
}

/// A folder made in the upper layer ([`Lazy::folders`]).
#[derive(Debug)]
pub struct Folder {
    /// Its project path.
    pub rel: String,
    /// Its path from the view's tmpfs: `u/` and the project path.
    pub at: CString,
    /// Its permission bits (`st_mode & 0o7777`).
    pub mode: libc::mode_t,
    /// Its owner, where it is not gvbuild's user.
    pub owner: Option<(libc::uid_t, libc::gid_t)>,
    /// Its access and modification times.
    pub times: [libc::timespec; 2],
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `mount_setattr(dirfd, path, flags, {set, clr})` (Linux 5.12).
fn mount_setattr(
    dirfd: RawFd,
    path: &std::ffi::CStr,
    flags: libc::c_uint,
    set: u64,
    clr: u64,
) -> libc::c_long {
    let attr = MountAttr { attr_set: set, attr_clr: clr, propagation: 0, userns_fd: 0 };
    // SAFETY: `path` is a NUL-terminated string and `attr` a live struct of the size passed;
    // the kernel only reads them.
    unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    }
}

/// Set this thread's errno (for a failure found without a libc call).
fn set_errno(e: i32) {
    // SAFETY: the errno location is this thread's own.
    unsafe { *libc::__errno_location() = e };
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Report `(phase, index, errno)` on the pipe and make the error std hands back.
fn fail(s: &Setup, phase: Phase, index: usize) -> io::Error {
    let e = errno();
    let mut buf = [0u8; 12];
    buf[..4].copy_from_slice(&(phase as u32).to_ne_bytes());
    buf[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
    buf[8..].copy_from_slice(&(e as u32).to_ne_bytes());
    let _ = rustix::io::write(&s.report, &buf);
    io::Error::from_raw_os_error(e)
}

fn write_proc(path: &std::ffi::CStr, data: &[u8]) -> bool {
    // SAFETY: a NUL-terminated path; the fd is closed before return.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return false;
    }
    // SAFETY: `data` is a live slice of the length passed.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    // SAFETY: `fd` is ours.
    unsafe { libc::close(fd) };
    n == data.len() as isize
}

/// The setup, in the child. Makes system calls on `s`'s prepared data only.
pub fn enter(s: &Setup) -> io::Result<()> {
    // SAFETY (for every `unsafe` block below): the arguments are NUL-terminated strings owned
    // by `s`, null pointers where the call allows them, or file descriptors this child owns;
    // no call allocates or takes a lock of ours, so each is sound between fork and exec.
    let shared = s.lazy.as_ref().is_some_and(|l| l.shared_ns >= 0);
    if let Some(l) = s.lazy.as_ref().filter(|_| shared) {
        if unsafe { libc::setns(l.shared_ns, libc::CLONE_NEWNS) } != 0 {
            return Err(fail(s, Phase::Setns, 0));
        }
    }
    if unsafe { libc::unshare(s.flags) } != 0 {
        return Err(fail(s, Phase::Unshare, 0));
    }
    if let Some((uid_map, gid_map)) = &s.id_maps {
        if !write_proc(c"/proc/self/setgroups", b"deny")
            || !write_proc(c"/proc/self/uid_map", uid_map)
            || !write_proc(c"/proc/self/gid_map", gid_map)
        {
            return Err(fail(s, Phase::IdMap, 0));
        }
    }
    if !s.view {
        return Ok(());
    }
    let prepared = shared && s.lazy.as_ref().is_some_and(|l| l.prepared);
    let none = std::ptr::null::<libc::c_char>();
    if !prepared
        && unsafe {
            libc::mount(none, c"/".as_ptr(), none, libc::MS_REC | libc::MS_PRIVATE, std::ptr::null())
        } != 0
    {
        return Err(fail(s, Phase::Private, 0));
    }
    let recursive = libc::AT_RECURSIVE as libc::c_uint;
    if !prepared && mount_setattr(libc::AT_FDCWD, c"/", recursive, libc::MOUNT_ATTR_RDONLY, 0) != 0 {
        return Err(fail(s, Phase::ReadOnly, 0));
    }
    // The project as it is on disk (read-only now), the source of every bind: a detached clone
    // of its mount, so that a symlink in it that climbs to the project folder (`../x`) climbs
    // to the folder on disk, not to the view that will cover it.
    // (A kernel that cannot clone from a detached mount gets the folder itself: `detached`.)
    // (Not needed by a lazy view without scratch folders: nothing is bound from it.)
    let project = if s.lazy.is_some() && s.ops.is_empty() {
        -1
    } else if s.detached {
        let flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as libc::c_uint;
        unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, s.project.as_ptr(), flags) }
    } else {
        unsafe { libc::open(s.project.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) }.into()
    };
    if project < 0 && !(s.lazy.is_some() && s.ops.is_empty()) {
        return Err(fail(s, Phase::OpenProject, 0));
    }
    let project = project as RawFd;
    let tmpfs = c"tmpfs".as_ptr();
    let flags = libc::MS_NOSUID | libc::MS_NODEV;
    // (On the shared mount, which is at the temp folder, once the overlay holds the view.)
    let private_tmp = || {
        if unsafe { libc::mount(tmpfs, s.tmp.as_ptr(), tmpfs, flags, c"mode=1777".as_ptr().cast()) } != 0 {
            return Err(fail(s, Phase::Tmp, 0));
        }
        Ok(())
    };
    if !shared {
        private_tmp()?;
    }
    for (i, h) in s.hide.iter().enumerate().filter(|_| !prepared) {
        let ro = flags | libc::MS_RDONLY;
        if unsafe { libc::mount(tmpfs, h.as_ptr(), tmpfs, ro, c"mode=0755".as_ptr().cast()) } != 0 {
            return Err(fail(s, Phase::Hide, i));
        }
    }
    let area = s.lazy.as_ref().filter(|_| prepared).and_then(|l| l.area.as_ref().map(|a| (l, a)));
    // With a lazy view, what is sent back is the overlay's upper layer: what the step wrote.
    let mut upper: RawFd = -1;
    if let Some((l, tmp)) = area {
        // Its layers are the area's: the overlay, then its folder of the area as TMPDIR.
        let overlay = c"overlay".as_ptr();
        if unsafe { libc::mount(overlay, s.project.as_ptr(), overlay, flags, l.overlay_opts.as_ptr().cast()) }
            != 0
        {
            return Err(fail(s, Phase::Overlay, 1));
        }
        if unsafe { libc::mount(tmp.as_ptr(), s.tmp.as_ptr(), none, libc::MS_BIND, std::ptr::null()) } != 0 {
            return Err(fail(s, Phase::Tmp, 1));
        }
    } else {
        if unsafe { libc::mount(tmpfs, s.project.as_ptr(), tmpfs, flags, c"mode=0755".as_ptr().cast()) } != 0
        {
            return Err(fail(s, Phase::View, 0));
        }
        if let Some(l) = &s.lazy {
            upper = lazy_view(s, l)?;
        }
        if shared {
            private_tmp()?;
        }
    }
    for (i, op) in s.ops.iter().enumerate() {
        let ok = match op {
            Op::Mkdir(at) => (unsafe { libc::mkdir(at.as_ptr(), 0o755) }) == 0 || errno() == libc::EEXIST,
            Op::Touch(at) => {
                let fd = unsafe {
                    libc::open(at.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, 0o644)
                };
                fd >= 0 && unsafe { libc::close(fd) } == 0
            }
            Op::Link { text, at } => (unsafe { libc::symlink(text.as_ptr(), at.as_ptr()) }) == 0,
            Op::Bind { rel, at, folder, writable } => bind(project, rel, at, *folder, *writable),
        };
        if !ok {
            return Err(fail(s, Phase::Op, i));
        }
    }
    if project >= 0 {
        unsafe { libc::close(project) };
    }
    if area.is_some() {
        // The parent holds the upper layer already.
        if unsafe { libc::chdir(s.project.as_ptr()) } != 0 {
            return Err(fail(s, Phase::Chdir, 0));
        }
        return Ok(());
    }
    // The view's root (the tmpfs), for the parent to take the outputs from after the step.
    let view = if upper >= 0 {
        upper
    } else {
        unsafe { libc::open(s.project.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) }
    };
    if view < 0 {
        return Err(fail(s, Phase::Send, 0));
    }
    // SAFETY: `view` was just opened by this child and is closed only after this borrow.
    let view_fd = unsafe { BorrowedFd::borrow_raw(view) };
    if let Err(e) = send_fd(s.send.as_fd(), view_fd, &[1u8]) {
        set_errno(e);
        return Err(fail(s, Phase::Send, 2));
    }
    unsafe { libc::close(view) };
    if unsafe { libc::chdir(s.project.as_ptr()) } != 0 {
        return Err(fail(s, Phase::Chdir, 0));
    }
    Ok(())
}

/// Mount the lazy view over the project folder, which the view's tmpfs covers now: in that
/// tmpfs, `u` and `w` (the overlay's upper layer and work folder) and, without the shared
/// mount, `l` (a FUSE file system of the sandbox's own, connected to the server); then the
/// overlay of `u` on the lower layer (`l`, or the view's entry in the shared mount) over it
/// all. Returns `u` (`O_PATH`).
fn lazy_view(s: &Setup, l: &Lazy) -> io::Result<RawFd> {
    // SAFETY (every block): as in `enter`.
    if unsafe { libc::chdir(s.project.as_ptr()) } != 0 {
        return Err(fail(s, Phase::View, 1));
    }
    // The upper layer's root is the view's root: a project folder's usual mode.
    let folders = [(c"u", 0o755), (c"w", 0o700), (c"l", 0o700)];
    // (The shared mount is the lower layer: no `l`.)
    let folders = if l.shared_ns >= 0 { &folders[..2] } else { &folders[..] };
    for (i, (d, mode)) in folders.iter().enumerate() {
        if unsafe { libc::mkdir(d.as_ptr(), *mode) } != 0 {
            return Err(fail(s, Phase::View, 2 + i));
        }
    }
    if l.shared_ns < 0 {
        own_fuse(s, l)?;
    }
    // Every folder first, then their attributes: making a folder changes its parent's times.
    for f in &l.folders {
        if unsafe { libc::mkdir(f.at.as_ptr(), 0o700) } != 0 {
            return Err(fail(s, Phase::Overlay, 2));
        }
    }
    for f in &l.folders {
        let owned = match f.owner {
            Some((uid, gid)) => (unsafe { libc::lchown(f.at.as_ptr(), uid, gid) }) == 0,
            None => true,
        };
        if !owned
            || unsafe { libc::chmod(f.at.as_ptr(), f.mode) } != 0
            || unsafe { libc::utimensat(libc::AT_FDCWD, f.at.as_ptr(), f.times.as_ptr(), 0) } != 0
        {
            return Err(fail(s, Phase::Overlay, 3));
        }
    }
    overlay(s, l)
}

/// Mount a FUSE file system of the sandbox's own at `l` and send its connection to the server.
fn own_fuse(s: &Setup, l: &Lazy) -> io::Result<()> {
    let fuse = unsafe { libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fuse < 0 {
        return Err(fail(s, Phase::Fuse, 0));
    }
    // The options with the descriptor's number written out: `...fd=N`.
    let mut opts = [0u8; 256];
    let n = l.fuse_opts.len();
    if n + 12 > opts.len() {
        set_errno(libc::ENAMETOOLONG);
        return Err(fail(s, Phase::Fuse, 2));
    }
    opts[..n].copy_from_slice(&l.fuse_opts);
    let mut digits = [0u8; 10];
    let mut k = 0;
    let mut v = fuse as u32;
    loop {
        digits[k] = b'0' + (v % 10) as u8;
        k += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for i in 0..k {
        opts[n + i] = digits[k - 1 - i];
    }
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_RDONLY;
    if unsafe {
        libc::mount(c"gvbuild".as_ptr(), c"l".as_ptr(), c"fuse".as_ptr(), flags, opts.as_ptr().cast())
    } != 0
    {
        return Err(fail(s, Phase::Fuse, 3));
    }
    // To the server only now: a descriptor polled before its mount never wakes its poller.
    // SAFETY: `fuse` was opened above; the borrow ends before it is closed.
    let fuse_fd = unsafe { BorrowedFd::borrow_raw(fuse) };
    let server = unsafe { BorrowedFd::borrow_raw(l.socket) };
    let sent = send_fd(server, fuse_fd, &l.id.to_ne_bytes());
    unsafe { libc::close(fuse) };
    if let Err(e) = sent {
        set_errno(e);
        return Err(fail(s, Phase::Fuse, 1));
    }
    Ok(())
}

/// Mount the overlay of `u` on the lower layer over the project folder. Returns `u` (`O_PATH`).
fn overlay(s: &Setup, l: &Lazy) -> io::Result<RawFd> {
    // SAFETY (every block): as in `enter`.
    let upper = unsafe { libc::open(c"u".as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if upper < 0 {
        return Err(fail(s, Phase::Overlay, 0));
    }
    let overlay = c"overlay".as_ptr();
    let flags = libc::MS_NOSUID | libc::MS_NODEV;
    if unsafe { libc::mount(overlay, s.project.as_ptr(), overlay, flags, l.overlay_opts.as_ptr().cast()) }
        != 0
    {
        return Err(fail(s, Phase::Overlay, 1));
    }
    Ok(upper)
}

/// For [`super::fuse::Shared`], on a thread of its own: unshare the thread's mount namespace
/// (a thread may; only a user namespace needs a single-threaded process), make every mount
/// private (nothing propagates to the machine), cover `at` with a tmpfs (the sandboxes' area:
/// folders `v`, `u`, `w`, `t` and `e`), open `/dev/fuse` and mount it read-only at `at/v` with
/// options `opts` completed by `fd=N`. Returns the connection, the namespace
/// (`/proc/thread-self/ns/mnt`, which outlives the thread) and the area's root (`O_PATH`).
pub fn mount_shared(at: &std::ffi::CStr, opts: &[u8]) -> io::Result<(OwnedFd, OwnedFd, OwnedFd)> {
    use std::os::fd::FromRawFd;
    let none = std::ptr::null::<libc::c_char>();
    // SAFETY (every block): this thread's own fs context and namespace; NUL-terminated strings
    // and null pointers as mount(2) allows; descriptors opened here and owned once opened.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let private = libc::MS_REC | libc::MS_PRIVATE;
    if unsafe { libc::mount(none, c"/".as_ptr(), none, private, std::ptr::null()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let tmpfs = c"tmpfs".as_ptr();
    let flags = libc::MS_NOSUID | libc::MS_NODEV;
    if unsafe { libc::mount(tmpfs, at.as_ptr(), tmpfs, flags, c"mode=0700".as_ptr().cast()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let area = unsafe { libc::open(at.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if area < 0 {
        return Err(io::Error::last_os_error());
    }
    let area = unsafe { OwnedFd::from_raw_fd(area) };
    for d in [c"v", c"u", c"w", c"t", c"e"] {
        if unsafe { libc::mkdirat(area.as_raw_fd(), d.as_ptr(), 0o700) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let fd = unsafe { libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fuse = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut full = opts.to_vec();
    full.extend_from_slice(fd.to_string().as_bytes());
    let full = CString::new(full).map_err(|_| io::Error::other("mount options with a NUL byte"))?;
    let mut v = at.to_bytes().to_vec();
    v.extend_from_slice(b"/v");
    let v = CString::new(v).map_err(|_| io::Error::other("a path with a NUL byte"))?;
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_RDONLY;
    let fstype = c"fuse".as_ptr();
    if unsafe { libc::mount(c"gvbuild".as_ptr(), v.as_ptr(), fstype, flags, full.as_ptr().cast()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let ns = unsafe { libc::open(c"/proc/thread-self/ns/mnt".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if ns < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((fuse, unsafe { OwnedFd::from_raw_fd(ns) }, area))
}

/// For the thread that lets go of finished sandboxes' namespaces: give it folders of its own
/// (a thread that shares them with the process may not enter a mount namespace) and return its
/// mount namespace (`/proc/thread-self/ns/mnt`), to come back to with [`enter_ns`].
pub fn own_folders() -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: this thread's own fs context; a NUL-terminated path; a descriptor owned once
    // opened.
    if unsafe { libc::unshare(libc::CLONE_FS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let ns = unsafe { libc::open(c"/proc/thread-self/ns/mnt".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if ns < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(ns) })
}

/// Move this thread (one of [`own_folders`]) into mount namespace `ns`.
pub fn enter_ns(ns: BorrowedFd) -> io::Result<()> {
    // SAFETY: a descriptor borrowed for the call; only this thread's namespace changes.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// For [`super::fuse::Shared::base`], on a thread of its own: a mount namespace made from
/// `from` (the shared mount's) in which every mount is read-only but the sandboxes' area (the
/// tmpfs at `at`), and each folder of `hide` (absolute, canonical) is covered by an empty
/// read-only tmpfs, as a sandbox's own setup would make them; every mount in `from` is
/// private already. Returns the namespace (`/proc/thread-self/ns/mnt`), which outlives the
/// thread.
pub fn prepare_base(from: BorrowedFd, hide: &[CString], at: &std::ffi::CStr) -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY (every block): this thread's own fs context and namespace; NUL-terminated strings
    // as mount(2) allows; a descriptor opened here and owned once opened.
    // (A thread that shares its folders with the process may not enter a mount namespace.)
    if unsafe { libc::unshare(libc::CLONE_FS) } != 0
        || unsafe { libc::setns(from.as_raw_fd(), libc::CLONE_NEWNS) } != 0
        || unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0
    {
        return Err(io::Error::last_os_error());
    }
    let tmpfs = c"tmpfs".as_ptr();
    let ro = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_RDONLY;
    for h in hide {
        if unsafe { libc::mount(tmpfs, h.as_ptr(), tmpfs, ro, c"mode=0755".as_ptr().cast()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let recursive = libc::AT_RECURSIVE as libc::c_uint;
    if mount_setattr(libc::AT_FDCWD, c"/", recursive, libc::MOUNT_ATTR_RDONLY, 0) != 0
        || mount_setattr(libc::AT_FDCWD, at, 0, 0, libc::MOUNT_ATTR_RDONLY) != 0
    {
        return Err(io::Error::last_os_error());
    }
    let ns = unsafe { libc::open(c"/proc/thread-self/ns/mnt".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if ns < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(ns) })
}

/// Send `fd` with `payload` on datagram socket `sock`; `Err(errno)`.
pub(super) fn send_fd(sock: BorrowedFd, fd: BorrowedFd, payload: &[u8]) -> Result<(), i32> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    if !anc.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(libc::ENOBUFS);
    }
    // rustix makes the call itself: errno is not set by it.
    sendmsg(sock, &[io::IoSlice::new(payload)], &mut anc, SendFlags::empty())
        .map(|_| ())
        .map_err(|e| e.raw_os_error())
}

/// Bind the project's `rel` at `at`: a clone of its mount (read-only, as `/` now is), made
/// writable for a scratch folder, then attached.
fn bind(project: RawFd, rel: &std::ffi::CStr, at: &std::ffi::CStr, folder: bool, writable: bool) -> bool {
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    if folder {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: see `enter`.
    let tree = unsafe { libc::syscall(libc::SYS_open_tree, project, rel.as_ptr(), flags) };
    if tree < 0 {
        return false;
    }
    let tree = tree as RawFd;
    let mut ok = true;
    if writable {
        let how = libc::AT_EMPTY_PATH as libc::c_uint | libc::AT_RECURSIVE as libc::c_uint;
        ok = mount_setattr(tree, c"", how, 0, libc::MOUNT_ATTR_RDONLY) == 0;
    }
    if ok {
        // SAFETY: see `enter`.
        ok = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                tree,
                c"".as_ptr(),
                libc::AT_FDCWD,
                at.as_ptr(),
                libc::MOVE_MOUNT_F_EMPTY_PATH,
            )
        } == 0;
    }
    let e = errno();
    // SAFETY: `tree` is ours.
    unsafe { libc::close(tree) };
    if !ok {
        // Keep the failing call's errno for the report, not close's.
        set_errno(e);
    }
    ok
}

/// The program a sandboxed step runs, made by the parent: `execve(argv[0], argv, envp)` in
/// `cwd` (where there is no view; the view's setup enters the project itself), with stdin
/// from `stdin` and stdout and stderr to `out`, as the leader of a new process group.
pub struct Exec {
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
    stdin: OwnedFd,
    out: OwnedFd,
}

impl Exec {
    /// `Err` for a string with a NUL byte, or when `/dev/null` cannot be opened.
    pub fn new(
        argv: &[&std::ffi::OsStr],
        env: &[(std::ffi::OsString, std::ffi::OsString)],
        cwd: &std::path::Path,
        out: OwnedFd,
    ) -> io::Result<Exec> {
        use std::os::unix::ffi::OsStrExt;
        let argv = argv.iter().map(cstr).collect::<io::Result<Vec<_>>>()?;
        let envp = env
            .iter()
            .map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                cstr(std::ffi::OsStr::from_bytes(&kv))
            })
            .collect::<io::Result<Vec<_>>>()?;
        let stdin: OwnedFd = fs::File::open("/dev/null")?.into();
        // Above the three stdio numbers (which a gvbuild started with them closed could hand
        // out), so that moving one into place never overwrites the other.
        let high = |fd: OwnedFd| -> io::Result<OwnedFd> {
            if fd.as_raw_fd() > 2 {
                return Ok(fd);
            }
            Ok(rustix::io::fcntl_dupfd_cloexec(&fd, 3)?)
        };
        Ok(Exec { argv, envp, cwd: cstr(cwd)?, stdin: high(stdin)?, out: high(out)? })
    }
}

/// What the child's entry point reads, all prepared by the parent.
struct Start<'a> {
    setup: &'a Setup,
    /// The signals to reset to their default action ([`handled`]).
    handled: &'a [libc::c_int],
    exec: &'a Exec,
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
}

/// The child's stack: 256 KiB with a guard page below, one per thread, kept (a `vfork`-style
/// child runs on it while its parent thread waits, so one thread never needs two).
struct Stack {
    base: *mut libc::c_void,
}

const STACK_SIZE: usize = 256 * 1024;
const GUARD: usize = 4096;

impl Stack {
    fn new() -> io::Result<Stack> {
        // SAFETY: a fresh anonymous mapping; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                STACK_SIZE + GUARD,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the lowest page of the mapping just made.
        if unsafe { libc::mprotect(base, GUARD, libc::PROT_NONE) } != 0 {
            let e = io::Error::last_os_error();
            // SAFETY: the mapping made above, unused.
            unsafe { libc::munmap(base, STACK_SIZE + GUARD) };
            return Err(e);
        }
        Ok(Stack { base })
    }

    /// The stack's top (it grows down), 16-byte aligned.
    fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the mapping's end, which the stack pointer starts at.
        unsafe { self.base.cast::<u8>().add(STACK_SIZE + GUARD).cast() }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made by `new`, no longer used (its thread is ending).
        unsafe { libc::munmap(self.base, STACK_SIZE + GUARD) };
    }
}

thread_local! {
    static STACK: std::cell::RefCell<Option<Stack>> = const { std::cell::RefCell::new(None) };
}

/// Start `exec` in a new process that first runs [`enter`] with `setup`. Returns its pid.
///
/// The child is made as `posix_spawn` makes one (`clone` with `CLONE_VM | CLONE_VFORK`): it
/// shares gvbuild's memory and this thread waits until it has called `execve` or exited, so
/// no page table is copied, however large gvbuild is (a `fork` of a busy gvbuild cost more
/// than the step). Signals are blocked around the `clone`; the child resets every handler to
/// its default (and SIGPIPE, which Rust ignores) and unblocks them just before `execve`. A
/// failure in the child (setup or `execve`) is written to the report pipe; the pid is still
/// returned, for the caller to reap.
pub fn spawn(setup: &Setup, exec: &Exec) -> io::Result<u32> {
    let mut argv: Vec<*const libc::c_char> = exec.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = exec.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    // Asked once: gvbuild's handlers are in place before its first step.
    static HANDLED: std::sync::OnceLock<Vec<libc::c_int>> = std::sync::OnceLock::new();
    let handled = HANDLED.get_or_init(handled);
    let start = Start { setup, handled, argv: &argv, envp: &envp, exec };
    STACK.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(Stack::new()?);
        }
        let Some(stack) = slot.as_ref() else { return Err(io::Error::other("no stack")) };
        // SAFETY: `all` and `old` are plain sigset_t values on this stack.
        let mut all = MaybeUninit::<libc::sigset_t>::uninit();
        let mut old = MaybeUninit::<libc::sigset_t>::uninit();
        unsafe {
            libc::sigfillset(all.as_mut_ptr());
            libc::pthread_sigmask(libc::SIG_SETMASK, all.as_ptr(), old.as_mut_ptr());
        }
        let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
        // SAFETY: `child_main` gets a pointer to `start`, which outlives the child's use of it
        // (this thread is suspended until the child has exec'd or exited); the stack is ours
        // and unused by anything else meanwhile.
        let pid = unsafe {
            libc::clone(child_main, stack.top(), flags, (&start as *const Start).cast_mut().cast())
        };
        let e = io::Error::last_os_error();
        // SAFETY: restores this thread's mask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old.as_ptr(), std::ptr::null_mut()) };
        if pid < 0 {
            return Err(e);
        }
        Ok(pid as u32)
    })
}

/// The signals whose action is neither the default nor ignored (gvbuild's handlers), and
/// SIGPIPE, which Rust ignores: the child resets them, as `posix_spawn` does.
fn handled() -> Vec<libc::c_int> {
    let mut out = vec![libc::SIGPIPE];
    for sig in 1..=libc::SIGRTMAX() {
        let mut old = MaybeUninit::<libc::sigaction>::zeroed();
        // SAFETY: a query (no new action) into a zeroed struct on this stack.
        if unsafe { libc::sigaction(sig, std::ptr::null(), old.as_mut_ptr()) } != 0 {
            continue;
        }
        // SAFETY: filled by the call above, or still zeroed.
        let h = unsafe { (*old.as_ptr()).sa_sigaction };
        if h != libc::SIG_DFL && h != libc::SIG_IGN && sig != libc::SIGPIPE {
            out.push(sig);
        }
    }
    out
}

/// The child's entry point: runs on [`Stack`] in gvbuild's memory, with every signal blocked.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Start` that `spawn` passed, alive until this child execs or exits.
    let start = unsafe { &*(arg as *const Start) };
    let s = start.setup;
    let x = start.exec;
    // SAFETY (every block below): system calls on file descriptors and NUL-terminated strings
    // the parent prepared, or on plain values on this stack; none allocates or locks.
    unsafe {
        // Handlers are gvbuild's (its memory is shared until exec): back to the defaults.
        let mut dfl = MaybeUninit::<libc::sigaction>::zeroed();
        (*dfl.as_mut_ptr()).sa_sigaction = libc::SIG_DFL;
        for &sig in start.handled {
            libc::sigaction(sig, dfl.as_ptr(), std::ptr::null_mut());
        }
        if libc::setpgid(0, 0) != 0 {
            let _ = fail(s, Phase::Exec, 0);
            libc::_exit(127);
        }
        use std::os::fd::AsRawFd;
        for (from, to) in [(x.stdin.as_raw_fd(), 0), (x.out.as_raw_fd(), 1), (x.out.as_raw_fd(), 2)] {
            let ok =
                if from == to { libc::fcntl(to, libc::F_SETFD, 0) == 0 } else { libc::dup2(from, to) == to };
            if !ok {
                let _ = fail(s, Phase::Exec, 1);
                libc::_exit(127);
            }
        }
    }
    if enter(s).is_err() {
        // SAFETY: ends this child; the failure is on the report pipe.
        unsafe { libc::_exit(127) };
    }
    // SAFETY: as above.
    unsafe {
        if !s.view && libc::chdir(x.cwd.as_ptr()) != 0 {
            let _ = fail(s, Phase::Chdir, 0);
            libc::_exit(127);
        }
        let mut none = MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(none.as_mut_ptr());
        libc::pthread_sigmask(libc::SIG_SETMASK, none.as_ptr(), std::ptr::null_mut());
        libc::execve(start.argv[0], start.argv.as_ptr(), start.envp.as_ptr());
        let _ = fail(s, Phase::Exec, 2);
        libc::_exit(127)
    }
}

/// Make a `CString` of a path (the parent's side). `Err` for a path with a NUL byte.
pub fn cstr(p: impl AsRef<std::ffi::OsStr>) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_ref().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}
