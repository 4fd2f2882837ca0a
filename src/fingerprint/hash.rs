//! File hashing and the stat cache.
//!
//! A no-op build must not read every input again. The stat cache remembers, per path, the size,
//! mtime, ctime and inode a file had when it was hashed, and its digest. When all four are
//! unchanged the digest is reused. A file whose mtime is too close to the moment it was hashed
//! is "racily clean" (a second write in the same clock tick would keep the same mtime), so its
//! entry is not trusted and it is hashed again, as git does with its index.

use std::collections::{HashMap, HashSet};

/// The stat cache's maps, looked up once or more per file per build: FxHash (rustc's), much
/// cheaper than std's SipHash for paths; the keys are the project's own paths, not an
/// attacker's, so SipHash's flooding resistance buys nothing here.
type FastMap<K, V> = rustc_hash::FxHashMap<K, V>;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

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

#[derive(Default)]
pub struct StatCache {
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
    listings: RwLock<Option<HashMap<PathBuf, Arc<HashSet<OsString>>>>>,
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
            *m = frozen.then(HashMap::new);
        }
    }

    /// Whether this is the fresh-check phase, in which no file changes.
    pub fn is_frozen(&self) -> bool {
        self.frozen.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The names in folder `dir` (empty when it is not a readable folder), read once per
    /// fresh-check phase.
    pub fn listing(&self, dir: &Path) -> Arc<HashSet<OsString>> {
        if let Some(l) = self.listings.read().ok().and_then(|m| m.as_ref().and_then(|m| m.get(dir).cloned()))
        {
            return l;
        }
        let names: HashSet<OsString> = match fs::read_dir(dir) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect(),
            Err(_) => HashSet::new(),
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
        self.file_id_with_meta(key, abs, &meta)
    }

    pub fn file_id_with_meta(&self, key: &str, abs: &Path, meta: &fs::Metadata) -> io::Result<FileId> {
        if !meta.is_file() {
            // Opening a FIFO would block the build; a device or socket has no content to key.
            return Err(io::Error::other(format!("{key} is {}, not a regular file", kind_of(meta))));
        }
        let size = meta.len();
        let mtime_ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
        let ctime_ns = meta.ctime() * 1_000_000_000 + meta.ctime_nsec();
        let ino = meta.ino();
        let exec = is_exec(meta);
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
        let digest = hash_file(abs, size)?;
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

/// What a non-regular file is, in words.
pub fn kind_of(meta: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let ft = meta.file_type();
    if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device"
    } else if ft.is_dir() {
        "a folder"
    } else if ft.is_symlink() {
        "a symlink"
    } else {
        "a regular file"
    }
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
