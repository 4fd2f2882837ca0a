//! The backlog: results stored in the local cache whose upload to one server has not been
//! seen through (the server was down or pushed back past its budget, the build was stopped or
//! killed), remembered so that a later build that reaches the server uploads them, without
//! `-B` and without asking the server about every fresh step.
//!
//! # On disk
//! `remote-backlog/HASH` in the cache folder, one file per server (`HASH`: the first 16 hex
//! digits of the blake3 of the URL as shown, without credentials), in JSON lines, one
//! [`Owed`] per line. A result is appended when it is queued for upload, before anything is
//! sent (so a killed build leaves it owed), and the file is rewritten without the results this
//! build uploaded when the build ends (under `remote-backlog/HASH.lock`, so builds of other
//! projects sharing the cache keep theirs). A line that does not parse is dropped; an owed
//! result whose entry the local cache no longer has (collected by `cache gc`) is dropped when
//! it comes up. A build with nothing owed reads one missing file and asks the server nothing.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{Platform, Upload};
use crate::cache::Cache;
use crate::fingerprint::Digest;

/// One result owed to the server: what [`Upload`] needs beyond the entry, which is read from
/// the local cache by its key when the upload is made.
#[derive(Serialize, Deserialize)]
pub struct Owed {
    pub key: Digest,
    pub outputs: Vec<String>,
    pub platform: Platform,
    /// The step's first-level key, when it has discovered inputs (their lists travel too).
    pub first: Option<Digest>,
}

pub struct Backlog {
    path: PathBuf,
    lock: PathBuf,
    /// Keys uploaded by this build.
    done: Mutex<HashSet<Digest>>,
}

impl Backlog {
    /// The backlog of the server shown as `shown`, in cache folder `cache_root`.
    pub fn of(cache_root: &Path, shown: &str) -> Backlog {
        let id = blake3::hash(shown.as_bytes()).to_hex();
        let dir = cache_root.join("remote-backlog");
        Backlog {
            path: dir.join(&id[..16]),
            lock: dir.join(format!("{}.lock", &id[..16])),
            done: Mutex::new(HashSet::new()),
        }
    }

    /// Remember `job` as owed (best effort: a backlog that cannot be written loses only the
    /// catching up, never a result).
    pub fn owe(&self, job: &Upload) {
        let owed = Owed {
            key: job.key,
            outputs: job.outputs.clone(),
            platform: job.platform.clone(),
            first: job.deps.as_ref().map(|(first, _)| *first),
        };
        let Ok(mut line) = serde_json::to_vec(&owed) else { return };
        line.push(b'\n');
        if let Some(dir) = self.path.parent() {
            let _ = fs::create_dir_all(dir);
        }
        // One write of one line to a file opened for appending: lines of concurrent builds
        // do not interleave.
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(&self.path) {
            let _ = f.write_all(&line);
        }
    }

    /// The upload of `key` went through.
    pub fn paid(&self, key: Digest) {
        if let Ok(mut done) = self.done.lock() {
            done.insert(key);
        }
    }

    /// What is owed, each key once, as uploads ready to queue (read from the local cache).
    pub fn owed(&self, cache: &Cache) -> Vec<Upload> {
        let mut seen = HashSet::new();
        read(&self.path)
            .into_iter()
            .filter(|o| seen.insert(o.key))
            .filter_map(|o| {
                let Some(entry) = cache.get_entry(&o.key) else {
                    // Collected by `cache gc` meanwhile: nothing left to pay.
                    self.paid(o.key);
                    return None;
                };
                let deps = o.first.map(|first| (first, cache.get_dep_lists(&first)));
                Some(Upload { key: o.key, outputs: o.outputs, entry, platform: o.platform, deps })
            })
            .collect()
    }

    /// Rewrite the file without what this build uploaded (and without what no longer parses).
    pub fn settle(&self) {
        let done = match self.done.lock() {
            Ok(d) => d.clone(),
            Err(_) => return,
        };
        if done.is_empty() {
            return;
        }
        let _lock = crate::cache::lock::acquire(&self.lock, crate::cache::lock::Mode::Exclusive, |_| {});
        let left: Vec<Owed> = read(&self.path).into_iter().filter(|o| !done.contains(&o.key)).collect();
        if left.is_empty() {
            let _ = fs::remove_file(&self.path);
            return;
        }
        let mut text = Vec::new();
        for o in &left {
            if let Ok(line) = serde_json::to_vec(o) {
                text.extend(line);
                text.push(b'\n');
            }
        }
        let _ = crate::fsutil::write_atomic(&self.path, &text);
    }
}

fn read(path: &Path) -> Vec<Owed> {
    let Ok(text) = fs::read(path) else { return Vec::new() };
    text.split(|b| *b == b'\n').filter_map(|line| serde_json::from_slice(line).ok()).collect()
}
