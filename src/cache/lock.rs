//! Advisory file locks (flock) for the project and the cache.
//!
//! A build holds its project's lock exclusively, so two gvbuild processes on one project run one
//! after the other, and a shared lock on the cache, so any number of projects build at once.
//! `cache gc` and `cache verify` take the cache lock exclusively. Locks vanish with the process
//! that holds them, so a killed gvbuild never leaves a stale lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub struct Lock {
    _file: File,
}

pub enum Mode {
    Shared,
    Exclusive,
}

/// Take the lock at `path`; if another process holds it, call `waiting` once (with what the
/// holder wrote into the lock file) and then block until it is free.
pub fn acquire(path: &Path, mode: Mode, waiting: impl FnOnce(&str)) -> io::Result<Lock> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
    let attempt = match mode {
        Mode::Shared => file.try_lock_shared(),
        Mode::Exclusive => file.try_lock(),
    };
    match attempt {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(path).unwrap_or_default();
            waiting(holder.trim());
            match mode {
                Mode::Shared => file.lock_shared()?,
                Mode::Exclusive => file.lock()?,
            }
        }
        Err(TryLockError::Error(e)) => return Err(e),
    }
    if matches!(mode, Mode::Exclusive) {
        // Written over the old text at a fixed width, not after truncating the file: ext4 flushes
        // a file truncated to zero when it is closed (its `auto_da_alloc`), a write to disk on
        // every build. A longer text left by another writer is cut after ours. Best effort: the
        // lock is the flock; the text only names the holder to a gvbuild that waits.
        let text = format!("pid {:<12}\n", std::process::id());
        if file.write_all_at(text.as_bytes(), 0).is_ok()
            && file.metadata().is_ok_and(|m| m.len() != text.len() as u64)
        {
            let _ = file.set_len(text.len() as u64);
        }
    }
    Ok(Lock { _file: file })
}
