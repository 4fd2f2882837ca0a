//! Test archives for the fetch tests, built in memory: a normal package (tar, tar.gz, tar.xz,
//! tar.zst, zip) with a top folder `pkg-1.0/`, and hostile ones that extraction must refuse.
//! Hostile tar entries are written with raw header fields (the `tar` crate's `set_path` refuses
//! `..` and absolute paths, as it should).
#![allow(dead_code)]

use std::io::{Cursor, Write};

use tar::{EntryType, Header};
use zip::write::SimpleFileOptions;

/// The package every format carries: `pkg-1.0/` holding these files, plus the symlink
/// `pkg-1.0/lib/libfoo.so -> libfoo.so.1` (a link that stays inside) and, in tars only, the hard
/// link `pkg-1.0/bin/tool-again` to `pkg-1.0/bin/tool`.
pub const PKG_TOP: &str = "pkg-1.0";
pub const PKG_README: &str = "hello from pkg 1.0\n";
pub const PKG_TOOL: &str = "#!/bin/sh\necho tool\n";
pub const PKG_LIB: &str = "\x7fELF not really a library\n";

/// A tar archive under construction.
pub struct Tar {
    b: tar::Builder<Vec<u8>>,
}

impl Default for Tar {
    fn default() -> Self {
        Self::new()
    }
}

impl Tar {
    pub fn new() -> Tar {
        Tar { b: tar::Builder::new(Vec::new()) }
    }

    fn header(kind: EntryType, mode: u32, size: u64) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h.set_uid(1000);
        h.set_gid(1000);
        h
    }

    pub fn dir(mut self, path: &str) -> Tar {
        let mut h = Self::header(EntryType::Directory, 0o755, 0);
        self.b.append_data(&mut h, path, std::io::empty()).unwrap();
        self
    }

    pub fn file(mut self, path: &str, data: &[u8], mode: u32) -> Tar {
        let mut h = Self::header(EntryType::Regular, mode, data.len() as u64);
        self.b.append_data(&mut h, path, data).unwrap();
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Tar {
        let mut h = Self::header(EntryType::Symlink, 0o777, 0);
        self.b.append_link(&mut h, path, target).unwrap();
        self
    }

    /// An entry whose name and link name are written byte for byte into the header, unchecked.
    pub fn raw(mut self, kind: EntryType, name: &str, link: &str, data: &[u8], mode: u32) -> Tar {
        let mut h = Self::header(kind, mode, data.len() as u64);
        put(&mut h.as_old_mut().name, name);
        put(&mut h.as_old_mut().linkname, link);
        if matches!(kind, EntryType::Char | EntryType::Block) {
            // /dev/null (1, 3), /dev/sda (8, 0)
            let (major, minor) = if kind == EntryType::Char { (1, 3) } else { (8, 0) };
            h.set_device_major(major).unwrap();
            h.set_device_minor(minor).unwrap();
        }
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

fn put(field: &mut [u8], s: &str) {
    assert!(s.len() < field.len(), "{s:?} does not fit a raw tar header field");
    field.fill(0);
    field[..s.len()].copy_from_slice(s.as_bytes());
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn xz(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    lzma_rs::xz_compress(&mut Cursor::new(data), &mut out).unwrap();
    out
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

/// The package as a plain tar.
pub fn pkg_tar() -> Vec<u8> {
    Tar::new()
        .dir("pkg-1.0/")
        .file("pkg-1.0/README", PKG_README.as_bytes(), 0o644)
        .dir("pkg-1.0/bin/")
        .file("pkg-1.0/bin/tool", PKG_TOOL.as_bytes(), 0o755)
        .raw(EntryType::Link, "pkg-1.0/bin/tool-again", "pkg-1.0/bin/tool", b"", 0o755)
        .dir("pkg-1.0/lib/")
        .file("pkg-1.0/lib/libfoo.so.1", PKG_LIB.as_bytes(), 0o644)
        .symlink("pkg-1.0/lib/libfoo.so", "libfoo.so.1")
        .finish()
}

pub fn pkg_tar_gz() -> Vec<u8> {
    gzip(&pkg_tar())
}

/// The package as a zip (deflated, unix modes, the symlink as a zip symlink).
pub fn pkg_zip() -> Vec<u8> {
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let o = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    z.add_directory("pkg-1.0/", o.unix_permissions(0o755)).unwrap();
    z.start_file("pkg-1.0/README", o.unix_permissions(0o644)).unwrap();
    z.write_all(PKG_README.as_bytes()).unwrap();
    z.add_directory("pkg-1.0/bin/", o.unix_permissions(0o755)).unwrap();
    z.start_file("pkg-1.0/bin/tool", o.unix_permissions(0o755)).unwrap();
    z.write_all(PKG_TOOL.as_bytes()).unwrap();
    z.add_directory("pkg-1.0/lib/", o.unix_permissions(0o755)).unwrap();
    z.start_file("pkg-1.0/lib/libfoo.so.1", o.unix_permissions(0o644)).unwrap();
    z.write_all(PKG_LIB.as_bytes()).unwrap();
    z.add_symlink("pkg-1.0/lib/libfoo.so", "libfoo.so.1", o).unwrap();
    z.finish().unwrap().into_inner()
}

/// A zip holding `ok.txt` and then one file with this name, written as is.
pub fn zip_with_name(name: &str) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let o = SimpleFileOptions::default();
    z.start_file("ok.txt", o).unwrap();
    z.write_all(b"ok\n").unwrap();
    z.start_file(name, o).unwrap();
    z.write_all(b"evil\n").unwrap();
    z.finish().unwrap().into_inner()
}

/// A zip holding `ok.txt` and a symlink `name -> target`.
pub fn zip_with_symlink(name: &str, target: &str) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let o = SimpleFileOptions::default();
    z.start_file("ok.txt", o).unwrap();
    z.write_all(b"ok\n").unwrap();
    z.add_symlink(name, target, o).unwrap();
    z.finish().unwrap().into_inner()
}

/// One way an archive entry can try to escape or smuggle something in.
#[derive(Debug, Clone, Copy)]
pub enum Hostile {
    /// A file named `../evil-dotdot`.
    DotDot,
    /// A file named `a/../../evil-dotdot-inner` (`..` after a normal component).
    DotDotInside,
    /// A file at an absolute path (the path is given to `hostile_tar`).
    Absolute,
    /// `evil-link -> ../../outside`.
    SymlinkOutside,
    /// `evil-abslink -> /etc`.
    SymlinkAbsolute,
    /// `evil-dirlink -> ..`, then a file written through it: `evil-dirlink/escaped`.
    ThroughSymlink,
    /// `self-link -> .` (harmless), then `evil-chain -> self-link/..`: spelled inside, but
    /// `self-link` resolves to `into` itself, so `evil-chain` is `into/..`.
    SymlinkChain,
    /// The same two links in the other order: `evil-chain` first, dangling when written.
    SymlinkChainReversed,
    /// A hard link `evil-hardlink` to `/etc/passwd`.
    HardlinkAbsolute,
    /// A hard link `evil-hardlink-up` to `../outside.txt`.
    HardlinkOutside,
    /// A FIFO `evil-fifo`.
    Fifo,
    /// A character device `evil-chardev` (1, 3: /dev/null).
    CharDevice,
    /// A block device `evil-blockdev` (8, 0).
    BlockDevice,
}

impl Hostile {
    pub const ALL: [Hostile; 13] = [
        Hostile::DotDot,
        Hostile::DotDotInside,
        Hostile::Absolute,
        Hostile::SymlinkOutside,
        Hostile::SymlinkAbsolute,
        Hostile::ThroughSymlink,
        Hostile::SymlinkChain,
        Hostile::SymlinkChainReversed,
        Hostile::HardlinkAbsolute,
        Hostile::HardlinkOutside,
        Hostile::Fifo,
        Hostile::CharDevice,
        Hostile::BlockDevice,
    ];
}

/// A tar holding a harmless `ok.txt`, then the hostile entry. Returns the archive and the name
/// the error must show (for `Absolute`, `abs_path` is the entry's name).
pub fn hostile_tar(kind: Hostile, abs_path: &str) -> (Vec<u8>, String) {
    let t = Tar::new().file("ok.txt", b"ok\n", 0o644);
    let (t, name) = match kind {
        Hostile::DotDot => {
            (t.raw(EntryType::Regular, "../evil-dotdot", "", b"evil\n", 0o644), "../evil-dotdot".into())
        }
        Hostile::DotDotInside => {
            let n = "a/../../evil-dotdot-inner";
            (t.dir("a/").raw(EntryType::Regular, n, "", b"evil\n", 0o644), n.into())
        }
        Hostile::Absolute => (t.raw(EntryType::Regular, abs_path, "", b"evil\n", 0o644), abs_path.into()),
        Hostile::SymlinkOutside => {
            (t.raw(EntryType::Symlink, "evil-link", "../../outside", b"", 0o777), "evil-link".into())
        }
        Hostile::SymlinkAbsolute => {
            (t.raw(EntryType::Symlink, "evil-abslink", "/etc", b"", 0o777), "evil-abslink".into())
        }
        Hostile::ThroughSymlink => (
            t.raw(EntryType::Symlink, "evil-dirlink", "..", b"", 0o777).raw(
                EntryType::Regular,
                "evil-dirlink/escaped",
                "",
                b"evil\n",
                0o644,
            ),
            "evil-dirlink".into(),
        ),
        Hostile::SymlinkChain => (
            t.raw(EntryType::Symlink, "self-link", ".", b"", 0o777).raw(
                EntryType::Symlink,
                "evil-chain",
                "self-link/..",
                b"",
                0o777,
            ),
            "evil-chain".into(),
        ),
        Hostile::SymlinkChainReversed => (
            t.raw(EntryType::Symlink, "evil-chain", "self-link/..", b"", 0o777).raw(
                EntryType::Symlink,
                "self-link",
                ".",
                b"",
                0o777,
            ),
            "evil-chain".into(),
        ),
        Hostile::HardlinkAbsolute => {
            (t.raw(EntryType::Link, "evil-hardlink", "/etc/passwd", b"", 0o644), "evil-hardlink".into())
        }
        Hostile::HardlinkOutside => (
            t.raw(EntryType::Link, "evil-hardlink-up", "../outside.txt", b"", 0o644),
            "evil-hardlink-up".into(),
        ),
        Hostile::Fifo => (t.raw(EntryType::Fifo, "evil-fifo", "", b"", 0o644), "evil-fifo".into()),
        Hostile::CharDevice => {
            (t.raw(EntryType::Char, "evil-chardev", "", b"", 0o666), "evil-chardev".into())
        }
        Hostile::BlockDevice => {
            (t.raw(EntryType::Block, "evil-blockdev", "", b"", 0o660), "evil-blockdev".into())
        }
    };
    (t.finish(), name)
}

/// Files whose modes must lose setuid, setgid and world-writable bits on extraction:
/// `suid` (04755), `sgid` (02755), `world` (0666), `all` (06777) and the folder `open/` (0777).
pub fn modes_tar() -> Vec<u8> {
    Tar::new()
        .file("suid", b"suid\n", 0o4755)
        .file("sgid", b"sgid\n", 0o2755)
        .file("world", b"world\n", 0o666)
        .file("all", b"all\n", 0o6777)
        .raw(EntryType::Directory, "open/", "", b"", 0o777)
        .file("open/inside", b"inside\n", 0o644)
        .finish()
}

/// `n` small files `f0000`, `f0001`, ... in a tar.gz.
pub fn many_entries_tar_gz(n: usize) -> Vec<u8> {
    let mut t = Tar::new();
    for i in 0..n {
        t = t.file(&format!("f{i:04}"), b"x", 0o644);
    }
    gzip(&t.finish())
}

/// A zip holding one deflated file `zeros` of `size` zero bytes.
pub fn zeros_zip(size: usize) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let o = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    z.start_file("zeros", o).unwrap();
    z.write_all(&vec![0u8; size]).unwrap();
    z.finish().unwrap().into_inner()
}

/// A tar.gz holding one file `zeros` of `size` zero bytes: it compresses to almost nothing.
pub fn zeros_tar_gz(size: usize) -> Vec<u8> {
    gzip(&Tar::new().file("zeros", &vec![0u8; size], 0o644).finish())
}
