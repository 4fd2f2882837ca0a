//! The sandbox's setup, run in the forked child between `fork` and `exec` (std's
//! `CommandExt::pre_exec`): new namespaces, the machine read-only, a private TMPDIR, and the
//! project folder replaced by the step's view.
//!
//! Between `fork` and `exec` of a multithreaded program only async-signal-safe calls are
//! sound: nothing here allocates, locks or panics. Every path and buffer was made by the
//! parent ([`Setup`]); the code makes system calls on them and nothing else. A failure is
//! written to the report pipe as `(phase, index, errno)` (three native-endian `u32`s) before
//! the child gives up, since std hands back only an errno.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};

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
}

impl Phase {
    pub fn from_u32(n: u32) -> Option<Phase> {
        use Phase::*;
        [Unshare, IdMap, Private, ReadOnly, OpenProject, Tmp, View, Op, Send, Chdir, Hide]
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
    let none = std::ptr::null::<libc::c_char>();
    if unsafe { libc::mount(none, c"/".as_ptr(), none, libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) }
        != 0
    {
        return Err(fail(s, Phase::Private, 0));
    }
    let recursive = libc::AT_RECURSIVE as libc::c_uint;
    if mount_setattr(libc::AT_FDCWD, c"/", recursive, libc::MOUNT_ATTR_RDONLY, 0) != 0 {
        return Err(fail(s, Phase::ReadOnly, 0));
    }
    // The project as it is on disk (read-only now), the source of every bind: a detached clone
    // of its mount, so that a symlink in it that climbs to the project folder (`../x`) climbs
    // to the folder on disk, not to the view that will cover it.
    // (A kernel that cannot clone from a detached mount gets the folder itself: `detached`.)
    let project = if s.detached {
        let flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as libc::c_uint;
        unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, s.project.as_ptr(), flags) }
    } else {
        unsafe { libc::open(s.project.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) }.into()
    };
    if project < 0 {
        return Err(fail(s, Phase::OpenProject, 0));
    }
    let project = project as RawFd;
    let tmpfs = c"tmpfs".as_ptr();
    let flags = libc::MS_NOSUID | libc::MS_NODEV;
    if unsafe { libc::mount(tmpfs, s.tmp.as_ptr(), tmpfs, flags, c"mode=1777".as_ptr().cast()) } != 0 {
        return Err(fail(s, Phase::Tmp, 0));
    }
    for (i, h) in s.hide.iter().enumerate() {
        let ro = flags | libc::MS_RDONLY;
        if unsafe { libc::mount(tmpfs, h.as_ptr(), tmpfs, ro, c"mode=0755".as_ptr().cast()) } != 0 {
            return Err(fail(s, Phase::Hide, i));
        }
    }
    if unsafe { libc::mount(tmpfs, s.project.as_ptr(), tmpfs, flags, c"mode=0755".as_ptr().cast()) } != 0 {
        return Err(fail(s, Phase::View, 0));
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
    unsafe { libc::close(project) };
    // The view's root (the tmpfs), for the parent to take the outputs from after the step.
    let view = unsafe { libc::open(s.project.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if view < 0 {
        return Err(fail(s, Phase::Send, 0));
    }
    // SAFETY: `view` was just opened by this child and is closed only through this borrow's
    // owner below.
    let view_fd = unsafe { BorrowedFd::borrow_raw(view) };
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    let fds = [view_fd];
    if !anc.push(SendAncillaryMessage::ScmRights(&fds)) {
        set_errno(libc::ENOBUFS);
        return Err(fail(s, Phase::Send, 1));
    }
    let byte = [1u8];
    if let Err(e) = sendmsg(s.send.as_fd(), &[io::IoSlice::new(&byte)], &mut anc, SendFlags::empty()) {
        // rustix makes the call itself: errno is not set by it.
        set_errno(e.raw_os_error());
        return Err(fail(s, Phase::Send, 2));
    }
    unsafe { libc::close(view) };
    if unsafe { libc::chdir(s.project.as_ptr()) } != 0 {
        return Err(fail(s, Phase::Chdir, 0));
    }
    Ok(())
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

/// Make `cmd` run [`enter`] with `setup` in its child, before it runs its program.
pub fn install(cmd: &mut std::process::Command, setup: std::sync::Arc<Setup>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec; `enter` makes system calls on
    // data prepared by the parent and nothing else (no allocation, no locks), as this module
    // explains.
    unsafe {
        cmd.pre_exec(move || enter(&setup));
    }
}

/// Make a `CString` of a path (the parent's side). `Err` for a path with a NUL byte.
pub fn cstr(p: impl AsRef<std::ffi::OsStr>) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_ref().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}
