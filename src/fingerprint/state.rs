//! The project's memory of its last build: per target, the last key and the outputs it left.
//!
//! `state.bin` holds the records as of the last completed build; `journal` holds records appended
//! as steps finish since then. Loading replays the journal over `state.bin`; a record torn by a
//! killed process fails its checksum and is dropped, which only means that step is checked again.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::encode::{unseal, write_sealed};
use super::hash::Digest;
use super::named::Named;
use super::outputs::OutputTree;
use super::{KeyParts, KEY_VERSION};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The full key the outputs were produced (or restored) for.
    pub key: Digest,
    pub outputs: OutputTree,
    pub outputs_digest: Digest,
    /// Discovered inputs (from a depfile) when the step last ran.
    pub discovered: Vec<String>,
    /// The graph key (YAML bytes and vars) under which `discovered` was last checked against the
    /// other targets' outputs; another graph means checking it again.
    pub graph_key: Digest,
}

/// What `--explain` compares against.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Explained {
    pub parts: KeyParts<'static>,
    pub discovered: std::collections::BTreeMap<String, super::FileId>,
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    /// Sorted by name, so that the same records always write the same bytes.
    #[serde(deserialize_with = "super::encode::exact_vec")]
    records: Vec<(String, Record)>,
}

/// The sealed format of `state.bin` and `explain.bin` (see [`super::encode`]); journal frames
/// carry [`KEY_VERSION`], so a journal left by another version is ignored.
const STATE_VERSION: u32 = 2 + KEY_VERSION * 1000;
const STATE_MAGIC: &[u8; 8] = b"GVSTATE\0";
const EXPLAIN_MAGIC: &[u8; 8] = b"GVEXPLN\0";

pub struct State {
    dir: PathBuf,
    /// The records of `state.bin` as read (see [`super::named`] for why not a map).
    saved: Named<Record>,
    /// What changed since `state.bin` was written (the journal, then this build's steps):
    /// `None` for a removed record. Looked up before `saved`.
    changed: rustc_hash::FxHashMap<String, Option<Record>>,
    journal: Mutex<Option<fs::File>>,
    dirty: bool,
}

impl State {
    pub fn load(dir: &Path) -> State {
        let state_bin = fs::read(dir.join("state.bin")).ok();
        let journal = fs::read(dir.join("journal")).ok();
        State::from_bytes(dir, state_bin.as_deref(), journal.as_deref())
    }

    pub fn get(&self, target: &str) -> Option<&Record> {
        match self.changed.get(target) {
            Some(r) => r.as_ref(),
            None => self.saved.get(target),
        }
    }

    /// Append a finished step's record (or its removal) to the journal, durable against a kill of
    /// this process from the moment this returns.
    pub fn append(&self, target: &str, rec: Option<&Record>) -> io::Result<()> {
        let payload = postcard::to_stdvec(&(KEY_VERSION, target, rec)).map_err(io::Error::other)?;
        let mut frame = Vec::with_capacity(payload.len() + 12);
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&blake3::hash(&payload).as_bytes()[..8]);
        frame.extend_from_slice(&payload);
        let mut guard = self.journal.lock().map_err(|_| io::Error::other("journal lock poisoned"))?;
        if guard.is_none() {
            let path = self.dir.join("journal");
            let f = OpenOptions::new().create(true).append(true).open(&path);
            *guard = Some(
                f.map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display())))?,
            );
        }
        match guard.as_mut() {
            Some(f) => f.write_all(&frame),
            None => Ok(()),
        }
        .map_err(|e| {
            io::Error::new(e.kind(), format!("cannot write {}: {e}", self.dir.join("journal").display()))
        })
    }

    /// Fold new records in (they were journaled already).
    pub fn set(&mut self, target: &str, rec: Option<Record>) {
        self.dirty = true;
        self.changed.insert(target.to_string(), rec);
    }

    /// Write `state.bin` and drop the journal.
    pub fn save(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let saved = std::mem::take(&mut self.saved);
        let mut records: Vec<(String, Record)> =
            saved.into_items().into_iter().filter(|(name, _)| !self.changed.contains_key(name)).collect();
        records.extend(self.changed.drain().filter_map(|(name, r)| Some((name, r?))));
        records.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let file = StateFile { records };
        let written = write_sealed(&self.dir.join("state.bin"), STATE_MAGIC, STATE_VERSION, &file);
        self.saved = Named::new(file.records);
        written?;
        if let Ok(mut j) = self.journal.lock() {
            *j = None;
        }
        match fs::remove_file(self.dir.join("journal")) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        self.dirty = false;
        Ok(())
    }

    /// The state in `dir` as [`State::load`] reads it from the bytes of `state.bin` and
    /// `journal` (`None`: absent); damaged bytes read as absent, as the module docs say.
    pub fn from_bytes(dir: &Path, state_bin: Option<&[u8]>, journal: Option<&[u8]>) -> State {
        let saved = state_bin
            .and_then(|b| unseal::<StateFile>(STATE_MAGIC, STATE_VERSION, b))
            .map(|f| Named::new(f.records))
            .unwrap_or_default();
        let mut changed = rustc_hash::FxHashMap::default();
        for (name, rec) in journal.map(replay).unwrap_or_default() {
            changed.insert(name, rec);
        }
        let dirty = !changed.is_empty();
        State { dir: dir.to_path_buf(), saved, changed, journal: Mutex::new(None), dirty }
    }
}

fn replay(mut bytes: &[u8]) -> Vec<(String, Option<Record>)> {
    let mut out = Vec::new();
    while bytes.len() >= 12 {
        let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let Some(payload) = bytes.get(12..12 + len) else {
            break;
        };
        if blake3::hash(payload).as_bytes()[..8] != bytes[4..12] {
            break;
        }
        match postcard::from_bytes::<(u32, String, Option<Record>)>(payload) {
            Ok((KEY_VERSION, name, rec)) => out.push((name, rec)),
            _ => break,
        }
        bytes = &bytes[12 + len..];
    }
    out
}

/// The last key parts of each target, for `--explain` and `--dry-run`. Loaded only then.
pub struct ExplainStore {
    path: PathBuf,
    pub map: HashMap<String, Explained>,
    dirty: bool,
}

impl ExplainStore {
    pub fn load(dir: &Path) -> ExplainStore {
        let bytes = fs::read(dir.join("explain.bin")).ok();
        ExplainStore::from_bytes(dir, bytes.as_deref())
    }

    pub fn set(&mut self, target: &str, e: Explained) {
        self.map.insert(target.to_string(), e);
        self.dirty = true;
    }

    pub fn save(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        write_sealed(&self.path, EXPLAIN_MAGIC, STATE_VERSION, &self.map)
    }

    /// The store in `dir` as [`ExplainStore::load`] reads it from the bytes of `explain.bin`
    /// (`None`: absent); damaged bytes read as absent.
    pub fn from_bytes(dir: &Path, bytes: Option<&[u8]>) -> ExplainStore {
        let map = bytes.and_then(|b| unseal(EXPLAIN_MAGIC, STATE_VERSION, b)).unwrap_or_default();
        ExplainStore { path: dir.join("explain.bin"), map, dirty: false }
    }
}
