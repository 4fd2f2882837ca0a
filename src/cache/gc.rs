//! `cache stats`, `cache gc` (least-recently-used eviction to a size cap) and `cache verify`.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::time::SystemTime;

use walkdir::WalkDir;

use super::{ActionEntry, Cache};
use crate::fingerprint::hash::{hash_file, hex, Digest};

#[derive(Debug, Default)]
pub struct CacheStats {
    pub entries: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub downloads: u64,
    pub download_bytes: u64,
}

#[derive(Debug, Default)]
pub struct GcReport {
    pub entries_removed: u64,
    pub blobs_removed: u64,
    pub bytes_freed: u64,
    pub bytes_left: u64,
}

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub blobs_checked: u64,
    pub blobs_bad: Vec<String>,
    pub entries_removed: u64,
    /// SHA-256 names kept for the remote cache (`sha256/<blake3>`, `blake3-of/<sha>`) that
    /// were wrong, by path in the cache folder; removed (computed again when next needed).
    pub sha256_bad: Vec<String>,
}

/// A write staged by a gvbuild that was killed before its rename (see `fsutil::temp_beside`).
fn is_temp(path: &Path) -> bool {
    crate::fsutil::is_temp(path)
}

/// The blobs or entries under `dir`; stray temp files are skipped.
fn files_under(dir: &Path) -> impl Iterator<Item = (std::path::PathBuf, fs::Metadata)> {
    WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file() && !is_temp(e.path()))
        .filter_map(|e| e.metadata().ok().map(|m| (e.into_path(), m)))
}

fn digest_of_name(path: &Path) -> Option<Digest> {
    let name = path.file_name()?.to_str()?;
    let name = name.strip_suffix(".json").unwrap_or(name);
    let bytes = hex::decode(name).ok()?;
    bytes.try_into().ok()
}

fn entry_blobs(e: &ActionEntry) -> impl Iterator<Item = Digest> + '_ {
    e.outputs.files.iter().map(|f| f.digest).chain(e.stdout_digest).chain(e.stderr_digest)
}

pub fn stats(cache: &Cache) -> CacheStats {
    let mut s = CacheStats::default();
    for _ in files_under(&cache.root.join("ac")) {
        s.entries += 1;
    }
    for (_, m) in files_under(&cache.root.join("blobs")) {
        s.blobs += 1;
        s.blob_bytes += m.len();
    }
    let mut inodes = HashSet::new();
    for (_, m) in files_under(&cache.root.join("downloads")) {
        use std::os::unix::fs::MetadataExt;
        if inodes.insert(m.ino()) {
            s.downloads += 1;
            s.download_bytes += m.len();
        }
    }
    s
}

/// Evict least-recently-used entries until the blobs they reference fit in `max_size`, then
/// delete every blob no remaining entry references. Stray temp files are removed too.
pub fn gc(cache: &Cache, max_size: u64) -> GcReport {
    let mut report = GcReport::default();
    let mut entries: Vec<(SystemTime, std::path::PathBuf, Option<ActionEntry>)> =
        files_under(&cache.root.join("ac"))
            .map(|(p, m)| {
                let e = fs::read(&p).ok().and_then(|b| serde_json::from_slice(&b).ok());
                (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), p, e)
            })
            .collect();
    // Newest first: keep entries while their blobs fit.
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    let blob_size = |d: &Digest| fs::metadata(cache.blob_path(d)).map(|m| m.len()).unwrap_or(0);
    let mut keep: HashSet<Digest> = HashSet::new();
    let mut kept_bytes = 0u64;
    for (_, path, entry) in &entries {
        let Some(entry) = entry else {
            let _ = fs::remove_file(path);
            report.entries_removed += 1;
            continue;
        };
        let new: Vec<Digest> = entry_blobs(entry).filter(|d| !keep.contains(d)).collect();
        let add: u64 = new.iter().map(blob_size).sum();
        if kept_bytes + add <= max_size {
            kept_bytes += add;
            keep.extend(new);
        } else {
            let _ = fs::remove_file(path);
            report.entries_removed += 1;
        }
    }
    for (p, m) in files_under(&cache.root.join("blobs")) {
        let referenced = digest_of_name(&p).is_some_and(|d| keep.contains(&d));
        if !referenced && fs::remove_file(&p).is_ok() {
            report.blobs_removed += 1;
            report.bytes_freed += m.len();
        }
    }
    // A blob's SHA-256 goes with it, both ways.
    for (p, _) in files_under(&cache.root.join("sha256")) {
        if !digest_of_name(&p).is_some_and(|d| keep.contains(&d)) {
            let _ = fs::remove_file(p);
        }
    }
    for (p, _) in files_under(&cache.root.join("blake3-of")) {
        let named = fs::read_to_string(&p).ok().and_then(|t| super::sha256_name_blake3(&t));
        if !named.is_some_and(|d| keep.contains(&d)) {
            let _ = fs::remove_file(p);
        }
    }
    // Verified downloads (`fetch`) share the cap, most recently used first; the two names of one
    // download (sha256 and blake3) are hard links and count once.
    let mut downloads: Vec<(SystemTime, std::path::PathBuf, u64, u64)> =
        files_under(&cache.root.join("downloads"))
            .map(|(p, m)| {
                use std::os::unix::fs::MetadataExt;
                (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), p, m.len(), m.ino())
            })
            .collect();
    downloads.sort_by_key(|d| std::cmp::Reverse(d.0));
    let mut kept_inodes = HashSet::new();
    for (_, path, len, ino) in downloads {
        if kept_inodes.contains(&ino) {
            continue;
        }
        if kept_bytes + len <= max_size {
            kept_bytes += len;
            kept_inodes.insert(ino);
        } else if fs::remove_file(&path).is_ok() {
            report.bytes_freed += len;
        }
    }
    // A second name of a removed download is removed too.
    for (path, m) in files_under(&cache.root.join("downloads")) {
        use std::os::unix::fs::MetadataExt;
        if !kept_inodes.contains(&m.ino()) {
            let _ = fs::remove_file(path);
        }
    }
    // gc holds the cache lock exclusively, so no build is writing: every temp file is stray.
    for sub in ["blobs", "ac", "deps", "downloads", "sha256", "blake3-of"] {
        for e in WalkDir::new(cache.root.join(sub)).into_iter().flatten() {
            if e.file_type().is_file() && is_temp(e.path()) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    report.bytes_left = kept_bytes;
    report
}

/// Rehash every blob; remove damaged ones and the entries that reference them.
pub fn verify(cache: &Cache) -> VerifyReport {
    let mut report = VerifyReport::default();
    let mut bad: HashSet<Digest> = HashSet::new();
    for (p, m) in files_under(&cache.root.join("blobs")) {
        report.blobs_checked += 1;
        let ok = match (digest_of_name(&p), hash_file(&p, m.len())) {
            (Some(name), Ok(actual)) => name == actual,
            _ => false,
        };
        if !ok {
            if let Some(d) = digest_of_name(&p) {
                bad.insert(d);
            }
            report
                .blobs_bad
                .push(p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            let _ = fs::remove_file(&p);
        }
    }
    for (p, _) in files_under(&cache.root.join("ac")) {
        let entry: Option<ActionEntry> = fs::read(&p).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let broken = match &entry {
            None => true,
            Some(e) => entry_blobs(e).any(|d| bad.contains(&d) || !cache.blob_path(&d).exists()),
        };
        if broken {
            let _ = fs::remove_file(&p);
            report.entries_removed += 1;
        }
    }
    verify_sha256(cache, &bad, &mut report);
    report
}

/// The SHA-256 names a remote cache uses: `sha256/ab/<blake3>` must hold the SHA-256 of that
/// blob's bytes (rehashed here), and `blake3-of/ab/<sha>` must name a blob whose `sha256/` file
/// says `<sha>`. A wrong one would upload a blob under another's name, or restore another
/// blob for a remote entry, so it is removed (and computed again when next needed).
fn verify_sha256(cache: &Cache, bad: &HashSet<Digest>, report: &mut VerifyReport) {
    use sha2::Digest as _;
    let read_sha = |p: &Path| fs::read_to_string(p).ok().and_then(|t| super::sha256_name_sha(&t));
    let read_blake3 = |p: &Path| fs::read_to_string(p).ok().and_then(|t| super::sha256_name_blake3(&t));
    let shown = |p: &Path| p.strip_prefix(&cache.root).unwrap_or(p).display().to_string();
    for (p, _) in files_under(&cache.root.join("sha256")) {
        let blob = digest_of_name(&p).map(|d| cache.blob_path(&d)).filter(|b| b.exists());
        let Some(blob) = blob.filter(|_| digest_of_name(&p).is_some_and(|d| !bad.contains(&d))) else {
            // The blob is gone (damaged and removed above): its name goes with it.
            let _ = fs::remove_file(&p);
            continue;
        };
        let actual = fs::File::open(&blob).ok().and_then(|mut f| {
            let mut h = sha2::Sha256::new();
            std::io::copy(&mut f, &mut h).ok()?;
            Some(<[u8; 32]>::from(h.finalize()))
        });
        // A file of both names must also name this blob.
        let names_me = fs::read_to_string(&p).is_ok_and(|t| {
            t.split_whitespace().count() < 2 || super::sha256_name_blake3(&t) == digest_of_name(&p)
        });
        if actual.is_none() || read_sha(&p) != actual || !names_me {
            report.sha256_bad.push(shown(&p));
            let _ = fs::remove_file(&p);
        }
    }
    for (p, _) in files_under(&cache.root.join("blake3-of")) {
        let good = (|| {
            let sha = digest_of_name(&p)?;
            let d = read_blake3(&p)?;
            if !cache.blob_path(&d).exists() {
                return Some(false);
            }
            // The two names disagree: wrong (reported as such below).
            let both = fs::read_to_string(&p).ok()?.split_whitespace().count() >= 2;
            let agrees =
                read_sha(&cache.sha256_path(&d)) == Some(sha) && (!both || read_sha(&p) == Some(sha));
            agrees.then_some(true)
        })();
        match good {
            Some(true) => {}
            // Its blob is gone: the name goes with it.
            Some(false) => {
                let _ = fs::remove_file(&p);
            }
            None => {
                report.sha256_bad.push(shown(&p));
                let _ = fs::remove_file(&p);
            }
        }
    }
    let _ = hex;
}
