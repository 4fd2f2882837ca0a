//! Writing an action entry's outputs into the project, for the runner (a local or shared
//! cache hit) and for remote execution (the engine's result) alike.

use std::fs;
use std::path::Path;

use super::Ctx;
use crate::cache::{ActionEntry, CacheError};
use crate::config::{RestoreMode, Target};
use crate::fsutil;

/// Remove each declared output, as a step or a restore starts from none.
pub(super) fn clear_outputs(root: &Path, outputs: &[String]) {
    for o in outputs {
        let _ = fsutil::remove_path(&root.join(o));
    }
}

/// An entry's paths must lie inside the declared outputs: a shared or tampered cache must never
/// write elsewhere in the project.
fn inside_outputs(path: &str, outputs: &[String]) -> bool {
    !path.split('/').any(|c| c == ".." || c == "." || c.is_empty())
        && outputs
            .iter()
            .any(|o| path == o || path.strip_prefix(o.as_str()).is_some_and(|r| r.starts_with('/')))
}

/// Write an entry's outputs (in the local cache already) into the project: every path checked
/// to lie inside `outputs` (the target's declared outputs) and every declared output present,
/// the old outputs cleared, files copied or hard-linked (the target's `restore:`) and verified,
/// links and folders made, the log restored. Errors: [`CacheError::BadEntry`] for an entry that
/// breaks those rules (nothing is written), [`CacheError::Write`] for the project's side.
pub(super) fn restore(
    ctx: &Ctx,
    t: &Target,
    outputs: &[String],
    entry: &ActionEntry,
) -> Result<(), CacheError> {
    let root = ctx.root.as_path();
    let tree = &entry.outputs;
    let all_paths = tree
        .files
        .iter()
        .map(|f| &f.path)
        .chain(tree.symlinks.iter().map(|l| &l.path))
        .chain(tree.dirs.iter());
    for p in all_paths {
        if !inside_outputs(p, outputs) {
            return Err(CacheError::BadEntry(format!("it names `{p}`, outside the declared outputs")));
        }
    }
    // Every declared output must be in the entry, or the restore would leave one missing.
    for o in outputs {
        let present = tree.files.iter().any(|f| &f.path == o)
            || tree.symlinks.iter().any(|l| &l.path == o)
            || tree.dirs.iter().any(|d| d == o);
        if !present {
            return Err(CacheError::BadEntry(format!("it lacks the declared output `{o}`")));
        }
    }
    // Folders and links are written into the project: a failure there is not the cache's.
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |cause| CacheError::Write { path, cause }
    };
    clear_outputs(root, outputs);
    for d in &tree.dirs {
        let abs = root.join(d);
        fs::create_dir_all(&abs).map_err(io(&abs))?;
    }
    // Files are independent of each other: restore (copy and verify) them in parallel.
    let restored = {
        use rayon::prelude::*;
        tree.files.par_iter().try_for_each(|f| {
            let abs = root.join(&f.path);
            if let Some(parent) = abs.parent() {
                fs::create_dir_all(parent).map_err(io(parent))?;
            }
            match t.restore {
                RestoreMode::Copy => ctx.cache.restore_copy(&f.digest, &abs, f.exec),
                RestoreMode::Hardlink => ctx.cache.restore_hardlink(&f.digest, &abs, f.exec),
            }?;
            ctx.stat.record(&f.path, &abs, f.digest);
            Ok(())
        })
    };
    if let Err(e) = restored {
        clear_outputs(root, outputs);
        return Err(e);
    }
    for l in &tree.symlinks {
        let abs = root.join(&l.path);
        if let Some(parent) = abs.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::os::unix::fs::symlink(&l.target, &abs).map_err(io(&abs))?;
    }
    if let Some(d) = entry.stdout_digest {
        // Copied, verified, never read into memory whole: a log may be big.
        let log = ctx.log_path(&t.name);
        if log.parent().is_some_and(|dir| fs::create_dir_all(dir).is_ok()) {
            let _ = ctx.cache.restore_copy(&d, &log, false);
        }
    }
    Ok(())
}
