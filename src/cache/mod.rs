//! The content-addressed store shared by every project on the machine.
//!
//! Layout under the cache folder:
//! - `blobs/ab/abcdef…`: file contents, named by their blake3, read-only;
//! - `ac/ab/<key>.json`: action entries, one per full key: the step's outputs (path, digest, size,
//!   executable bit; symlinks; folders), its exit status and the digest of its log;
//! - `deps/ab/<first-level key>.json`: the lists of discovered inputs seen for a first-level key;
//! - `sha256/ab/<blake3>`: with a remote cache, the SHA-256 the remote names that blob by,
//!   computed once in the pass that stores the blob, as `SHA256_HEX BLAKE3_HEX`; the same file
//!   (a hard link) is `blake3-of/ab/<sha>`, the other way round (a lookup by SHA-256 uses a
//!   blob only when both names agree);
//! - `remote-stats.json`: what the remote cache gave and took (see [`remote`]), updated under
//!   `remote-stats.lock`;
//! - `lock`: shared by builds, exclusive for `cache gc` and `cache verify`.
//!
//! Promises: every write is a temp file beside its final name, renamed into place, so a killed process never leaves a
//! half-written blob or entry under its final name. Every blob is verified against its digest as
//! it is read; a mismatch evicts the blob and the entry and is reported as a miss, never as an
//! output. Failed or killed steps store nothing. The last use of an entry is its file's mtime,
//! which `cache gc` evicts by, oldest first.

mod gc;
pub mod lock;
pub mod remote;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use self::gc::{gc, stats, verify, CacheStats, GcReport, VerifyReport};
use crate::fingerprint::hash::{hex, Digest};
use crate::fingerprint::outputs::OutputTree;
use crate::fsutil;

/// Bump when the entry format changes.
const ENTRY_VERSION: u32 = 1;
const CHUNK: usize = 1 << 20;

/// Default cap for `cache gc` without `--max-size`.
pub const DEFAULT_MAX_SIZE: u64 = 20 << 30;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionEntry {
    pub version: u32,
    pub outputs: OutputTree,
    pub exit_code: i32,
    /// The step's combined stdout and stderr, as a blob.
    pub stdout_digest: Option<Digest>,
    pub stderr_digest: Option<Digest>,
}

impl ActionEntry {
    pub fn new(outputs: OutputTree, stdout_digest: Option<Digest>) -> Self {
        ActionEntry { version: ENTRY_VERSION, outputs, exit_code: 0, stdout_digest, stderr_digest: None }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache I/O error at {path}: {cause}")]
    Io { path: PathBuf, cause: io::Error },
    #[error(
        "blob {digest} in the cache is damaged (its content no longer matches its name); it was evicted"
    )]
    Corrupt { digest: String },
    #[error("the cache entry is unusable: {0}")]
    BadEntry(String),
    /// Writing a restored output failed (a full disk, say): the cache itself is fine.
    #[error("cannot write {path}: {cause}")]
    Write { path: PathBuf, cause: io::Error },
}

impl CacheError {
    /// Whether the error says the entry or a blob is unusable (evict it and run the step), as
    /// opposed to a failure to write the restored files, which says nothing about the cache.
    pub fn is_damaged_entry(&self) -> bool {
        !matches!(self, CacheError::Write { .. })
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |cause| CacheError::Io { path: path.to_path_buf(), cause }
}

#[derive(Clone)]
pub struct Cache {
    root: PathBuf,
    /// A dry run's cache: nothing is created, evicted or touched.
    read_only: bool,
    /// With a remote cache: keep each new blob's SHA-256 beside it.
    keep_sha256: bool,
}

/// The default cache folder: `$GVBUILD_CACHE_DIR`, else `$XDG_CACHE_HOME/gvbuild`, else
/// `~/.cache/gvbuild`.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("gvbuild");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache").join("gvbuild"),
        None => std::env::temp_dir().join("gvbuild-cache"),
    }
}

impl Cache {
    pub fn open(root: &Path) -> Result<Cache, CacheError> {
        for sub in ["blobs", "ac", "deps"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(Cache { root: root.to_path_buf(), read_only: false, keep_sha256: false })
    }

    /// The cache at `root` for reading only (a dry run): nothing is created.
    pub fn open_read_only(root: &Path) -> Cache {
        Cache { root: root.to_path_buf(), read_only: true, keep_sha256: false }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Keep each blob's SHA-256 beside it from now on (a remote cache names blobs by it).
    pub fn keep_sha256(&mut self) {
        self.keep_sha256 = true;
    }

    /// The file of blob `d`, for reading (an upload streams from it).
    pub fn blob_file(&self, d: &Digest) -> PathBuf {
        self.blob_path(d)
    }

    pub(crate) fn sha256_path(&self, d: &Digest) -> PathBuf {
        let h = hex(d);
        self.root.join("sha256").join(&h[..2]).join(h)
    }

    fn blake3_of_path(&self, sha: &[u8; 32]) -> PathBuf {
        let h = hex(sha);
        self.root.join("blake3-of").join(&h[..2]).join(h)
    }

    /// Keep blob `d`'s SHA-256: one file, `SHA256_HEX BLAKE3_HEX`, named both ways (a hard link):
    /// `sha256/ab/<blake3>` and `blake3-of/ab/<sha256>`. One inode per blob, not two: a remote
    /// restore of many small steps is bound by the files it creates.
    fn set_sha256(&self, d: &Digest, sha: &[u8; 32]) {
        let p = self.sha256_path(d);
        if !p.exists() {
            let _ = fsutil::write_atomic(&p, format!("{} {}\n", hex(sha), hex(d)).as_bytes());
        }
        let back = self.blake3_of_path(sha);
        if !back.exists() {
            let linked = back.parent().is_some_and(|dir| fs::create_dir_all(dir).is_ok())
                && fs::hard_link(&p, &back).is_ok();
            if !linked {
                let _ = fsutil::write_atomic(&back, format!("{} {}\n", hex(sha), hex(d)).as_bytes());
            }
        }
    }

    /// The blob whose SHA-256 is `sha`, if the cache has it: its blake3 and size. A remote
    /// restore takes it from here rather than downloading it again (and verifies it as it
    /// restores it, as every restore does).
    /// The two names must agree (`sha256/` of that blob says `sha` too): one damaged file
    /// would otherwise restore another blob for a remote entry.
    pub fn blob_by_sha256(&self, sha: &[u8; 32]) -> Option<(Digest, u64)> {
        let d = sha256_name_blake3(&fs::read_to_string(self.blake3_of_path(sha)).ok()?)?;
        let said = sha256_name_sha(&fs::read_to_string(self.sha256_path(&d)).ok()?)?;
        if &said != sha {
            return None;
        }
        let size = fs::metadata(self.blob_path(&d)).ok()?.len();
        Some((d, size))
    }

    /// The SHA-256 of blob `d`: from beside it, else read once from the blob (verifying its
    /// blake3 in the same pass) and kept.
    pub fn blob_sha256(&self, d: &Digest) -> Result<[u8; 32], CacheError> {
        let p = self.sha256_path(d);
        if let Some(out) = fs::read_to_string(&p).ok().and_then(|t| sha256_name_sha(&t)) {
            return Ok(out);
        }
        let src = self.blob_path(d);
        let mut input = File::open(&src).map_err(io_err(&src))?;
        let (b3, sha) = both_hashes(&mut input, &mut io::sink()).map_err(|e| match e {
            CopyError::Read(cause) | CopyError::Write(cause) => CacheError::Io { path: src.clone(), cause },
        })?;
        if &b3 != d {
            let _ = fs::remove_file(&src);
            return Err(CacheError::Corrupt { digest: hex(d) });
        }
        self.set_sha256(d, &sha);
        Ok(sha)
    }

    /// A path in the blobs folder where a download can be written before [`Cache::adopt_blob`].
    pub fn incoming_path(&self) -> PathBuf {
        fsutil::temp_beside(&self.root.join("blobs").join("incoming"))
    }

    /// Move a verified download into place as blob `d`, with its SHA-256.
    pub fn adopt_blob(&self, tmp: &Path, d: &Digest, sha: &[u8; 32]) -> Result<(), CacheError> {
        let dest = self.blob_path(d);
        let result = (|| {
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            fs::set_permissions(tmp, fs::Permissions::from_mode(0o444)).map_err(io_err(tmp))?;
            fs::rename(tmp, &dest).map_err(io_err(&dest))
        })();
        if result.is_err() {
            let _ = fs::remove_file(tmp);
        }
        result?;
        self.set_sha256(d, sha);
        Ok(())
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        let h = hex(d);
        self.root.join("blobs").join(&h[..2]).join(h)
    }

    fn entry_path(&self, key: &Digest) -> PathBuf {
        let h = hex(key);
        self.root.join("ac").join(&h[..2]).join(format!("{h}.json"))
    }

    fn deps_path(&self, first: &Digest) -> PathBuf {
        let h = hex(first);
        self.root.join("deps").join(&h[..2]).join(format!("{h}.json"))
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).exists()
    }

    /// Store the file at `src`, which should hash to `expected`, copying and hashing in one pass.
    /// Returns false (storing nothing) if the file changed since it was hashed.
    pub fn put_file(&self, src: &Path, expected: &Digest) -> Result<bool, CacheError> {
        let dest = self.blob_path(expected);
        if dest.exists() {
            return Ok(true);
        }
        // Staged beside its final name: the rename is atomic, and new files spread over the
        // fan-out folders rather than piling into one.
        let tmp = fsutil::temp_beside(&dest);
        let result = (|| {
            let mut input = File::open(src).map_err(io_err(src))?;
            let mut out = read_only_file(&tmp)?;
            let len = input.metadata().map(|m| m.len()).unwrap_or(0);
            // With a remote cache the SHA-256 is computed in this same read pass, so the big
            // file's kernel copy (which reads nothing in user space) is not taken.
            let copied = len >= BIG_FILE
                && !self.keep_sha256
                && fsutil::copy_range(&input, &out, 0, 0, len).map_err(io_err(src))?;
            let digest = if self.keep_sha256 {
                let (d, sha) = both_hashes(&mut input, &mut out).map_err(|e| match e {
                    CopyError::Read(cause) => CacheError::Io { path: src.to_path_buf(), cause },
                    CopyError::Write(cause) => CacheError::Io { path: tmp.clone(), cause },
                })?;
                drop(out);
                if &d == expected {
                    self.set_sha256(&d, &sha);
                }
                d
            } else if copied {
                // A big file (an image) is copied in the kernel, then the copy is hashed with
                // mmap on every core: faster than hashing on one core as it goes.
                drop(out);
                let mut h = blake3::Hasher::new();
                h.update_mmap_rayon(&tmp).map_err(io_err(&tmp))?;
                *h.finalize().as_bytes()
            } else {
                let d = copy_hashing(&mut input, &mut out).map_err(|e| match e {
                    CopyError::Read(cause) => CacheError::Io { path: src.to_path_buf(), cause },
                    CopyError::Write(cause) => CacheError::Io { path: tmp.clone(), cause },
                })?;
                drop(out);
                d
            };
            if &digest != expected {
                return Ok(false);
            }
            fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
            Ok(true)
        })();
        // Ok(true) is returned only once the temp file has been renamed into place.
        if !matches!(result, Ok(true)) {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Store bytes as a blob.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, CacheError> {
        let digest = *blake3::hash(bytes).as_bytes();
        if self.keep_sha256 {
            use sha2::Digest as _;
            self.set_sha256(&digest, &sha2::Sha256::digest(bytes).into());
        }
        let dest = self.blob_path(&digest);
        if dest.exists() {
            return Ok(digest);
        }
        let tmp = fsutil::temp_beside(&dest);
        let written = read_only_file(&tmp)?.write_all(bytes).map_err(io_err(&tmp));
        if let Err(e) = written.and_then(|()| fs::rename(&tmp, &dest).map_err(io_err(&dest))) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(digest)
    }

    /// Read a blob fully, verified.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, CacheError> {
        let p = self.blob_path(d);
        let bytes = fs::read(&p).map_err(io_err(&p))?;
        if blake3::hash(&bytes).as_bytes() != d {
            let _ = fs::remove_file(&p);
            return Err(CacheError::Corrupt { digest: hex(d) });
        }
        Ok(bytes)
    }

    /// Write blob `d` to `dest` as a fresh copy, verifying while copying. On a mismatch nothing
    /// is left at `dest`, the blob is evicted, and `Corrupt` is returned.
    pub fn restore_copy(&self, d: &Digest, dest: &Path, exec: bool) -> Result<(), CacheError> {
        let src = self.blob_path(d);
        let tmp = fsutil::temp_beside(dest);
        let result = (|| {
            let write = |cause| CacheError::Write { path: dest.to_path_buf(), cause };
            let mut input = File::open(&src).map_err(io_err(&src))?;
            let mut out = File::create(&tmp).map_err(write)?;
            let digest = copy_hashing(&mut input, &mut out).map_err(|e| match e {
                CopyError::Read(cause) => CacheError::Io { path: src.clone(), cause },
                CopyError::Write(cause) => write(cause),
            })?;
            drop(out);
            if &digest != d {
                let _ = fs::remove_file(&src);
                return Err(CacheError::Corrupt { digest: hex(d) });
            }
            let mode = if exec { 0o755 } else { 0o644 };
            fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(write)?;
            fs::rename(&tmp, dest).map_err(write)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Hard-link blob `d` at `dest` after re-verifying it (a blob edited through an earlier link
    /// is caught here and never restored). Blobs are read-only and their mode is shared by every
    /// link, so executables, and caches on another filesystem, get a verified copy instead.
    pub fn restore_hardlink(&self, d: &Digest, dest: &Path, exec: bool) -> Result<(), CacheError> {
        if exec {
            return self.restore_copy(d, dest, exec);
        }
        let src = self.blob_path(d);
        let size = fs::metadata(&src).map_err(io_err(&src))?.len();
        let actual = crate::fingerprint::hash::hash_file(&src, size).map_err(io_err(&src))?;
        if &actual != d {
            let _ = fs::remove_file(&src);
            return Err(CacheError::Corrupt { digest: hex(d) });
        }
        let tmp = fsutil::temp_beside(dest);
        match fs::hard_link(&src, &tmp) {
            Ok(()) => {}
            Err(e)
                if e.raw_os_error() == Some(libc::EXDEV) || e.kind() == io::ErrorKind::PermissionDenied =>
            {
                return self.restore_copy(d, dest, exec);
            }
            Err(e) => return Err(CacheError::Write { path: dest.to_path_buf(), cause: e }),
        }
        fs::rename(&tmp, dest).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            CacheError::Write { path: dest.to_path_buf(), cause: e }
        })
    }

    pub fn get_entry(&self, key: &Digest) -> Option<ActionEntry> {
        let p = self.entry_path(key);
        let bytes = fs::read(&p).ok()?;
        match serde_json::from_slice::<ActionEntry>(&bytes) {
            Ok(e) if e.version == ENTRY_VERSION => Some(e),
            _ => {
                if !self.read_only {
                    let _ = fs::remove_file(&p);
                }
                None
            }
        }
    }

    pub fn has_entry(&self, key: &Digest) -> bool {
        self.entry_path(key).exists()
    }

    /// Mark an entry as used now, for LRU eviction.
    pub fn touch_entry(&self, key: &Digest) {
        if let Ok(f) = File::options().append(true).open(self.entry_path(key)) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
    }

    pub fn put_entry(&self, key: &Digest, entry: &ActionEntry) -> Result<(), CacheError> {
        let p = self.entry_path(key);
        let bytes =
            serde_json::to_vec(entry).map_err(|e| CacheError::Io { path: p.clone(), cause: e.into() })?;
        fsutil::write_atomic(&p, &bytes).map_err(io_err(&p))
    }

    pub fn evict_entry(&self, key: &Digest) {
        let _ = fs::remove_file(self.entry_path(key));
    }

    /// The discovered-input lists recorded for a first-level key, newest first.
    pub fn get_dep_lists(&self, first: &Digest) -> Vec<Vec<String>> {
        fs::read(self.deps_path(first)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    /// Remember a discovered-input list for a first-level key (at most 16 kept).
    pub fn add_dep_list(&self, first: &Digest, list: &[String]) -> Result<(), CacheError> {
        let mut lists = self.get_dep_lists(first);
        lists.retain(|l| l != list);
        lists.insert(0, list.to_vec());
        lists.truncate(16);
        let p = self.deps_path(first);
        let bytes =
            serde_json::to_vec(&lists).map_err(|e| CacheError::Io { path: p.clone(), cause: e.into() })?;
        fsutil::write_atomic(&p, &bytes).map_err(io_err(&p))
    }
}

/// A new file, read-only from the start (a blob never changes once written).
/// Files from this size on are stored with a kernel copy and a parallel hash of the copy.
const BIG_FILE: u64 = 64 << 20;

/// A new read-only file at `path`, its fan-out folder made if missing.
fn read_only_file(path: &Path) -> Result<File, CacheError> {
    use std::os::unix::fs::OpenOptionsExt;
    fsutil::with_parent(path, |p| File::options().write(true).create_new(true).mode(0o444).open(p))
        .map_err(io_err(path))
}

/// Which side of a copy failed.
enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// The SHA-256 a `sha256/` or `blake3-of/` file names: its first 64 hex digits. (Files of an
/// older cache hold one hash: there, the `sha256/` one's.)
pub(crate) fn sha256_name_sha(text: &str) -> Option<[u8; 32]> {
    parse_hex32(text.split_whitespace().next()?)
}

/// The blake3 a `sha256/` or `blake3-of/` file names: its last 64 hex digits. (An older
/// cache's `blake3-of/` file holds only that.)
pub(crate) fn sha256_name_blake3(text: &str) -> Option<[u8; 32]> {
    parse_hex32(text.split_whitespace().last()?)
}

fn parse_hex32(word: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(word, &mut out).ok().map(|()| out)
}

/// Copy `input` to `out` and return the blake3 of what was copied. The buffer is reused per
/// thread: a fresh megabyte per file would be zeroed and page-faulted in every time.
fn copy_hashing(input: &mut File, out: &mut File) -> Result<Digest, CopyError> {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; CHUNK]);
    }
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        let mut h = blake3::Hasher::new();
        loop {
            let n = input.read(&mut buf).map_err(CopyError::Read)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(CopyError::Write)?;
        }
        Ok(*h.finalize().as_bytes())
    })
}

/// Copy `input` to `out` and return its blake3 and SHA-256, in one read pass.
fn both_hashes(input: &mut File, out: &mut dyn Write) -> Result<(Digest, [u8; 32]), CopyError> {
    use sha2::Digest as _;
    let mut buf = vec![0u8; CHUNK];
    let mut b3 = blake3::Hasher::new();
    let mut sha = sha2::Sha256::new();
    loop {
        let n = input.read(&mut buf).map_err(CopyError::Read)?;
        if n == 0 {
            break;
        }
        b3.update(&buf[..n]);
        sha.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(CopyError::Write)?;
    }
    Ok((*b3.finalize().as_bytes(), sha.finalize().into()))
}
