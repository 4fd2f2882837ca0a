//! File hashing and the stat cache.
//!
//! A no-op build must not read every input again. The stat cache remembers, per path, the size,
//! mtime, ctime and inode a file had when it was hashed, and its digest. When all four are
//! unchanged the digest is reused. A file whose mtime is too close to the moment it was hashed
//! is "racily clean" (a second write in the same clock tick would keep the same mtime), so its
//! entry is not trusted and it is hashed again, as git does with its index.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The stat cache's maps, looked up once or more per file per build: FxHash (rustc's), much
/// cheaper than std's SipHash for paths; the keys are the project's own paths, not an
/// attacker's, so SipHash's flooding resistance buys nothing here.
type FastMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// The names in one folder (see [`StatCache::listing`]).
pub type Listing = rustc_hash::FxHashSet<OsString>;

/// A blake3 digest.
pub type Digest = [u8; 32];

/// Files at least this big are hashed with mmap and rayon.
const MMAP_THRESHOLD: u64 = 4 << 20;
/// An entry is trusted only if the file's mtime is this much older than the moment of hashing.
const RACY_MARGIN_NS: i64 = 50_000_000;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatEntry {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub exec: bool,
    pub digest: Digest,
    pub hashed_at_ns: i64,
}

/// What a file is, for a key: its content digest and executable bit.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct FileId {
    pub digest: Digest,
    pub exec: bool,
    pub size: u64,
}

/// What one `stat` (or `lstat`) of a path says, as far as keys and the stat cache read it.
///
/// Made by [`StatCache::meta`] (a stat relative to the project folder) or from std's
/// `fs::Metadata`. Times are nanoseconds since the Unix epoch; `mode` is `st_mode` (type and
/// permission bits, as `stat(2)` gives them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub mode: u32,
}

impl Meta {
    fn kind_bits(&self) -> u32 {
        self.mode & libc::S_IFMT
    }

    pub fn is_file(&self) -> bool {
        self.kind_bits() == libc::S_IFREG
    }

    pub fn is_dir(&self) -> bool {
        self.kind_bits() == libc::S_IFDIR
    }

    pub fn is_symlink(&self) -> bool {
        self.kind_bits() == libc::S_IFLNK
    }

    /// Whether any execute bit is set.
    pub fn is_exec(&self) -> bool {
        self.mode & 0o111 != 0
    }

    /// What the file is, in words ("a FIFO", "a folder", ...), for messages.
    pub fn kind(&self) -> &'static str {
        match self.kind_bits() {
            libc::S_IFIFO => "a FIFO",
            libc::S_IFSOCK => "a socket",
            libc::S_IFBLK | libc::S_IFCHR => "a device",
            libc::S_IFDIR => "a folder",
            libc::S_IFLNK => "a symlink",
            _ => "a regular file",
        }
    }
}

impl From<&fs::Metadata> for Meta {
    fn from(m: &fs::Metadata) -> Meta {
        Meta {
            size: m.len(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            ino: m.ino(),
            mode: m.mode(),
        }
    }
}

impl From<&rustix::fs::Stat> for Meta {
    fn from(st: &rustix::fs::Stat) -> Meta {
        Meta {
            size: st.st_size as u64,
            mtime_ns: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec as i64,
            ctime_ns: st.st_ctime * 1_000_000_000 + st.st_ctime_nsec as i64,
            ino: st.st_ino,
            mode: st.st_mode,
        }
    }
}

/// The project folder, open, for stats relative to it (see [`StatCache::meta`]).
struct Root {
    path: PathBuf,
    fd: rustix::fd::OwnedFd,
}

#[derive(Default)]
pub struct StatCache {
    /// The project folder, once [`StatCache::set_root`] opened it.
    root: Option<Root>,
    /// The entries of `stat.bin` as read (see [`super::named`] for why not a map).
    saved: super::named::Named<StatEntry>,
    /// Entries recorded (`Some`) or forgotten (`None`) since, looked up before `saved`.
    changed: RwLock<FastMap<String, Option<StatEntry>>>,
    /// Set (after the change) once `changed` holds anything: until then lookups skip its lock.
    dirty: std::sync::atomic::AtomicBool,
    /// While nothing runs (the fresh-check phase), a path stat-ed once, as one step's output,
    /// need not be stat-ed again as another step's input: the identities of files hashed in
    /// this phase. Files whose `stat.bin` entry held are in `memo_saved` instead.
    memo: RwLock<Option<FastMap<String, FileId>>>,
    /// By position in `saved`: the entry held in this phase, so it is the file's identity. A
    /// no-op build, whose files all hit `stat.bin`, so allocates nothing per file.
    memo_saved: Vec<std::sync::atomic::AtomicBool>,
    /// Whether this is the frozen phase (see [`StatCache::set_frozen`]), without a lock.
    frozen: std::sync::atomic::AtomicBool,
    /// Folder listings, memoised in the same phase (see [`StatCache::listing`]).
    listings: RwLock<Option<FastMap<PathBuf, Arc<Listing>>>>,
}

#[derive(Serialize, Deserialize)]
struct StatFile {
    /// Sorted by name, so that the same entries always write the same bytes.
    #[serde(deserialize_with = "super::encode::exact_vec")]
    entries: Vec<(String, StatEntry)>,
}

/// The sealed format of `stat.bin` (see [`super::encode`]).
const STAT_VERSION: u32 = 2;
const STAT_MAGIC: &[u8; 8] = b"GVSTAT\0\0";

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

pub fn is_exec(meta: &fs::Metadata) -> bool {
    meta.permissions().mode() & 0o111 != 0
}

impl StatCache {
    pub fn load(path: &Path) -> StatCache {
        fs::read(path).map(|b| StatCache::from_bytes(&b)).unwrap_or_default()
    }

    /// Start (true) or end (false) a phase in which no file changes: identities are memoised.
    pub fn set_frozen(&self, frozen: bool) {
        if let Ok(mut m) = self.memo.write() {
            *m = frozen.then(FastMap::default);
        }
        for seen in &self.memo_saved {
            seen.store(false, std::sync::atomic::Ordering::Relaxed);
        }
        self.frozen.store(frozen, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut m) = self.listings.write() {
            *m = frozen.then(FastMap::default);
        }
    }

    /// Whether this is the fresh-check phase, in which no file changes.
    pub fn is_frozen(&self) -> bool {
        self.frozen.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The names in folder `dir` (empty when it is not a readable folder), read once per
    /// fresh-check phase.
    pub fn listing(&self, dir: &Path) -> Arc<Listing> {
        if let Some(l) = self.listings.read().ok().and_then(|m| m.as_ref().and_then(|m| m.get(dir).cloned()))
        {
            return l;
        }
        let names: Listing = match fs::read_dir(dir) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect(),
            Err(_) => Listing::default(),
        };
        let names = Arc::new(names);
        if let Ok(mut m) = self.listings.write() {
            if let Some(m) = m.as_mut() {
                m.insert(dir.to_path_buf(), names.clone());
            }
        }
        names
    }

    pub fn memo_get(&self, key: &str) -> Option<FileId> {
        let memo = self.memo.read().ok()?;
        let memo = memo.as_ref()?;
        // A file hashed in this phase (its `stat.bin` entry did not hold) is in `memo`, and
        // that identity goes over a mark its old entry may have got earlier in the phase.
        if let Some(id) = memo.get(key) {
            return Some(*id);
        }
        let i = self.saved.position(key)?;
        if self.memo_saved.get(i).is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed)) {
            return self.saved.at(i).map(|e| FileId { digest: e.digest, exec: e.exec, size: e.size });
        }
        None
    }

    /// Remember `id` for the frozen phase; `saved`: the file's position in `stat.bin`, whose
    /// entry `id` was just taken from.
    fn memo_put(&self, key: &str, id: FileId, saved: Option<usize>) {
        if let Some(seen) = saved.and_then(|i| self.memo_saved.get(i)) {
            if self.frozen.load(std::sync::atomic::Ordering::Relaxed) {
                seen.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            return;
        }
        if let Ok(mut m) = self.memo.write() {
            if let Some(m) = m.as_mut() {
                m.insert(key.to_string(), id);
            }
        }
    }

    pub fn save(&self, path: &Path) -> io::Result<()> {
        if !self.dirty.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let changed = self.changed.read().map_err(|_| io::Error::other("stat cache lock poisoned"))?;
        let mut entries: Vec<(String, StatEntry)> = self
            .saved
            .iter()
            .filter(|(k, _)| !changed.contains_key(*k))
            .map(|(k, v)| (k.to_string(), *v))
            .chain(changed.iter().filter_map(|(k, v)| Some((k.clone(), (*v)?))))
            .collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        super::encode::write_sealed(path, STAT_MAGIC, STAT_VERSION, &StatFile { entries })
    }

    /// The identity of the file at `abs`, recorded under `key` (its project-relative or absolute
    /// name). Reuses the recorded digest when the file's stat is unchanged and trustworthy.
    pub fn file_id(&self, key: &str, abs: &Path) -> io::Result<FileId> {
        let meta = fs::metadata(abs)?;
        self.file_id_with_meta(key, abs, &Meta::from(&meta))
    }

    /// Open the project folder `root`, so that [`StatCache::meta`] stats paths relative to it.
    /// Without it (or when it cannot be opened) paths are stat-ed by their absolute names.
    pub fn set_root(&mut self, root: &Path) {
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        self.root =
            rustix::fs::open(root, flags, Mode::empty()).ok().map(|fd| Root { path: root.to_path_buf(), fd });
    }

    /// `stat` (`follow`) or `lstat` of `path` (project-relative, or absolute) in the project
    /// folder `root`. A relative path is stat-ed relative to the folder opened by
    /// [`StatCache::set_root`], as ninja does with its relative paths: the kernel then walks
    /// only the path's own components, not the project folder's every time.
    pub fn meta(&self, root: &Path, path: &str, follow: bool) -> io::Result<Meta> {
        match &self.root {
            Some(r)
                if !path.is_empty() && !path.starts_with('/') && r.path.as_os_str() == root.as_os_str() =>
            {
                let flags = match follow {
                    true => rustix::fs::AtFlags::empty(),
                    false => rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                };
                let st = rustix::fs::statat(&r.fd, path, flags).map_err(io::Error::from)?;
                Ok(Meta::from(&st))
            }
            _ => {
                let abs = abs_of(root, path);
                let m = if follow { fs::metadata(abs)? } else { fs::symlink_metadata(abs)? };
                Ok(Meta::from(&m))
            }
        }
    }

    /// [`StatCache::file_id_with_meta`] for project path `path` in `root`, whose absolute name
    /// is made only when the file must be hashed.
    pub fn file_id_in(&self, root: &Path, path: &str, meta: &Meta) -> io::Result<FileId> {
        self.id_or_hash(path, meta, |size| hash_file(&abs_of(root, path), size))
    }

    pub fn file_id_with_meta(&self, key: &str, abs: &Path, meta: &Meta) -> io::Result<FileId> {
        self.id_or_hash(key, meta, |size| hash_file(abs, size))
    }

    /// The identity of the file `meta` describes: the recorded digest when its stat is unchanged
    /// and trustworthy, else `hash(size)`'s (recorded).
    fn id_or_hash(
        &self,
        key: &str,
        meta: &Meta,
        hash: impl FnOnce(u64) -> io::Result<Digest>,
    ) -> io::Result<FileId> {
        if !meta.is_file() {
            // Opening a FIFO would block the build; a device or socket has no content to key.
            return Err(io::Error::other(format!("{key} is {}, not a regular file", meta.kind())));
        }
        let Meta { size, mtime_ns, ctime_ns, ino, .. } = *meta;
        let exec = meta.is_exec();
        if let (Some(e), saved) = self.entry_at(key) {
            if e.size == size
                && e.mtime_ns == mtime_ns
                && e.ctime_ns == ctime_ns
                && e.ino == ino
                && e.exec == exec
                && e.hashed_at_ns - mtime_ns > RACY_MARGIN_NS
            {
                let id = FileId { digest: e.digest, exec, size };
                self.memo_put(key, id, saved);
                return Ok(id);
            }
        }
        let hashed_at_ns = now_ns();
        let digest = hash(size)?;
        self.put(key, Some(StatEntry { size, mtime_ns, ctime_ns, ino, exec, digest, hashed_at_ns }));
        let id = FileId { digest, exec, size };
        self.memo_put(key, id, None);
        Ok(id)
    }

    /// Record a digest computed elsewhere (a file just written from a verified blob).
    pub fn record(&self, key: &str, abs: &Path, digest: Digest) {
        let Ok(meta) = fs::metadata(abs) else { return };
        let entry = StatEntry {
            size: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            ino: meta.ino(),
            exec: is_exec(&meta),
            digest,
            hashed_at_ns: now_ns(),
        };
        self.put(key, Some(entry));
    }

    pub fn forget(&self, key: &str) {
        if self.entry(key).is_some() {
            self.put(key, None);
        }
    }

    /// The entry recorded for `key`: a change made in this build, else the one read.
    fn entry(&self, key: &str) -> Option<StatEntry> {
        self.entry_at(key).0
    }

    /// [`StatCache::entry`], and the position in `saved` when the entry is the one read.
    fn entry_at(&self, key: &str) -> (Option<StatEntry>, Option<usize>) {
        if self.dirty.load(std::sync::atomic::Ordering::Acquire) {
            if let Some(e) = self.changed.read().ok().and_then(|c| c.get(key).copied()) {
                return (e, None);
            }
        }
        match self.saved.position(key) {
            Some(i) => (self.saved.at(i).copied(), Some(i)),
            None => (None, None),
        }
    }

    /// Record (`Some`) or forget (`None`) the entry of `key`.
    fn put(&self, key: &str, entry: Option<StatEntry>) {
        if let Ok(mut c) = self.changed.write() {
            c.insert(key.to_string(), entry);
        }
        self.dirty.store(true, std::sync::atomic::Ordering::Release);
    }

    /// The cache as [`StatCache::load`] reads it from the bytes of `stat.bin`; damaged bytes
    /// give an empty cache.
    pub fn from_bytes(bytes: &[u8]) -> StatCache {
        let saved = super::encode::unseal::<StatFile>(STAT_MAGIC, STAT_VERSION, bytes)
            .map(|f| super::named::Named::new(f.entries))
            .unwrap_or_default();
        StatCache {
            root: None,
            memo_saved: (0..saved.capacity()).map(|_| Default::default()).collect(),
            frozen: Default::default(),
            saved,
            changed: RwLock::default(),
            dirty: Default::default(),
            memo: RwLock::new(None),
            listings: RwLock::new(None),
        }
    }
}

/// The absolute name of `path` (project-relative, `.`, or already absolute) in project folder
/// `root`.
pub fn abs_of(root: &Path, path: &str) -> PathBuf {
    if path.starts_with('/') {
        PathBuf::from(path)
    } else if path == "." {
        root.to_path_buf()
    } else {
        root.join(path)
    }
}

/// What a non-regular file is, in words.
pub fn kind_of(meta: &fs::Metadata) -> &'static str {
    Meta::from(meta).kind()
}

/// blake3 of a file's content: mmap + rayon for big files, a plain read for small ones.
pub fn hash_file(path: &Path, size_hint: u64) -> io::Result<Digest> {
    let mut h = blake3::Hasher::new();
    if size_hint >= MMAP_THRESHOLD {
        h.update_mmap_rayon(path)?;
    } else {
        let mut f = fs::File::open(path)?;
        let mut buf = Vec::with_capacity(size_hint as usize + 1);
        f.read_to_end(&mut buf)?;
        h.update(&buf);
    }
    Ok(*h.finalize().as_bytes())
}

pub fn hex(d: &Digest) -> String {
    hex::encode(d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A stat relative to the project folder's descriptor says what std's stat of the absolute
    /// path says: followed or not, for files, folders, symlinks and ".", and fails alike.
    #[test]
    fn stats_relative_to_the_root_match_std() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        fs::create_dir(root.join("sub")).unwrap();
        fs::write(root.join("sub/f.txt"), "hello").unwrap();
        fs::set_permissions(root.join("sub/f.txt"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("sub/f.txt", root.join("link")).unwrap();
        let mut stat = StatCache::default();
        stat.set_root(&root);
        assert!(stat.root.is_some());
        for path in ["sub/f.txt", "sub", "link", ".", "sub/../link"] {
            for follow in [true, false] {
                let abs = root.join(path);
                let std_meta = if follow { fs::metadata(&abs) } else { fs::symlink_metadata(&abs) };
                assert_eq!(stat.meta(&root, path, follow).unwrap(), Meta::from(&std_meta.unwrap()), "{path}");
            }
        }
        assert!(stat.meta(&root, "link", false).unwrap().is_symlink());
        assert!(stat.meta(&root, "link", true).unwrap().is_exec());
        let missing = stat.meta(&root, "sub/none", true).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        let not_dir = stat.meta(&root, "sub/f.txt/x", true).unwrap_err();
        assert_eq!(not_dir.raw_os_error(), Some(libc::ENOTDIR));
        // Another root, or an absolute path, is stat-ed by its name.
        let other = stat.meta(Path::new("/"), root.join("sub/f.txt").to_str().unwrap(), true).unwrap();
        assert_eq!(other.size, 5);
    }
}
