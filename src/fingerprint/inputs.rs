//! Expanding a target's declared inputs (files, folders, globs) into the files they stand for.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use walkdir::WalkDir;

use super::hash::{abs_of, FileId, StatCache};
use crate::paths::PathSpec;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("input `{0}` does not exist")]
    Missing(String),
    #[error("cannot read input `{path}`: {cause}")]
    Io { path: String, cause: io::Error },
    #[error("input glob `{0}` is invalid: {1}")]
    Glob(String, String),
    #[error("input `{0}` has a name that is not UTF-8; gvbuild keys only UTF-8 paths: rename it")]
    NotUtf8(String),
    #[error("input `{link}` is a symlink that leads back to its own ancestor `{ancestor}` (a loop)")]
    Loop { link: String, ancestor: String },
    #[error("input `{0}` is in a symlink loop: following it comes back to a link already followed")]
    SelfLoop(String),
    #[error("input `{path}` is {kind}; inputs may hold only files, folders and symlinks")]
    NotAFile { path: String, kind: &'static str },
}

/// Project-relative (or absolute) name -> identity of every file the inputs stand for.
pub fn resolve(
    root: &Path,
    specs: &[PathSpec],
    stat: &StatCache,
) -> Result<BTreeMap<String, FileId>, InputError> {
    resolve_noting_empty_globs(root, specs, stat, &mut Vec::new())
}

/// [`resolve`], also listing the globs that matched no file (for a warning naming each).
pub fn resolve_noting_empty_globs(
    root: &Path,
    specs: &[PathSpec],
    stat: &StatCache,
    empty: &mut Vec<String>,
) -> Result<BTreeMap<String, FileId>, InputError> {
    let mut out = BTreeMap::new();
    for spec in specs {
        if spec.glob {
            let before = out.len();
            glob(root, &spec.path, stat, &mut out)?;
            if out.len() == before {
                empty.push(spec.path.clone());
            }
        } else {
            literal(root, &spec.path, stat, &mut out)?;
        }
    }
    Ok(out)
}

fn join(base: &str, rel: &str) -> String {
    if base == "." || base.is_empty() {
        rel.to_string()
    } else if base == "/" {
        format!("/{rel}")
    } else {
        format!("{base}/{rel}")
    }
}

fn literal(
    root: &Path,
    path: &str,
    stat: &StatCache,
    out: &mut BTreeMap<String, FileId>,
) -> Result<(), InputError> {
    if let Some(id) = stat.memo_get(path) {
        out.insert(path.to_string(), id);
        return Ok(());
    }
    let meta = match stat.meta(root, path, true) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(InputError::Missing(path.to_string())),
        Err(cause) => return Err(InputError::Io { path: path.to_string(), cause }),
    };
    if meta.is_dir() {
        walk(&abs_of(root, path), path, None, stat, out)
    } else if !meta.is_file() {
        Err(InputError::NotAFile { path: path.to_string(), kind: meta.kind() })
    } else {
        let id = stat
            .file_id_in(root, path, &meta)
            .map_err(|cause| InputError::Io { path: path.to_string(), cause })?;
        out.insert(path.to_string(), id);
        Ok(())
    }
}

/// The folder part of a glob before its first wildcard component.
fn glob_base(pattern: &str) -> &str {
    let mut end = 0;
    let mut pos = 0;
    for part in pattern.split('/') {
        if crate::paths::is_glob(part) {
            break;
        }
        end = pos + part.len();
        pos = end + 1;
    }
    match &pattern[..end] {
        "" if pattern.starts_with('/') => "/",
        "" => ".",
        base => base,
    }
}

fn glob(
    root: &Path,
    pattern: &str,
    stat: &StatCache,
    out: &mut BTreeMap<String, FileId>,
) -> Result<(), InputError> {
    let matcher = globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| InputError::Glob(pattern.to_string(), e.to_string()))?
        .compile_matcher();
    let base = glob_base(pattern);
    let abs = abs_of(root, base);
    if !abs.is_dir() {
        return Ok(());
    }
    walk(&abs, base, Some(&matcher), stat, out)
}

/// Every file below `abs` (named `name` in keys), optionally filtered by a glob on the name,
/// and every folder (`NAME (folder)`, `abs` itself included), so that an empty folder added or
/// removed changes the key.
///
/// Symlinks are followed: a link to a file is keyed by the file's content, a link to a folder by
/// every file below it (under the link's name), and every link also by its text. A dangling
/// link is keyed by its text. A link that leads back to one of its own ancestors is an error
/// naming both, as is anything that is not a file, folder or symlink (a FIFO would block the
/// build), and a name that is not UTF-8. Only `.git` and `.gvbuild` folders are skipped.
fn walk(
    abs: &Path,
    name: &str,
    filter: Option<&globset::GlobMatcher>,
    stat: &StatCache,
    out: &mut BTreeMap<String, FileId>,
) -> Result<(), InputError> {
    let walker = WalkDir::new(abs).follow_links(true).sort_by_file_name().into_iter().filter_entry(|e| {
        e.depth() == 0 || !(e.file_type().is_dir() && crate::paths::is_skipped_dir(e.file_name()))
    });
    let key_of = |path: &Path| -> Result<String, InputError> {
        let Ok(rel) = path.strip_prefix(abs) else {
            // A loop's ancestor may be named by its real path, outside this folder.
            return path
                .to_str()
                .map(str::to_string)
                .ok_or_else(|| InputError::NotUtf8(path.display().to_string()));
        };
        match rel.to_str() {
            Some("") => Ok(name.to_string()),
            Some(rel) => Ok(join(name, rel)),
            None => Err(InputError::NotUtf8(join(name, &rel.to_string_lossy()))),
        }
    };
    let matches = |key: &str| filter.is_none_or(|m| m.is_match(key));
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(err) => {
                let path = err.path().map(Path::to_path_buf).unwrap_or_else(|| abs.to_path_buf());
                let key = key_of(&path)?;
                if let Some(ancestor) = err.loop_ancestor() {
                    return Err(InputError::Loop { link: key, ancestor: key_of(ancestor)? });
                }
                let is_link = fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
                let followed = fs::metadata(&path);
                // A link to itself, or a chain of links that comes back: the kernel says ELOOP.
                if is_link && followed.as_ref().is_err_and(|e| e.raw_os_error() == Some(libc::ELOOP)) {
                    return Err(InputError::SelfLoop(key));
                }
                // A dangling link: what it says is all there is.
                if is_link && followed.is_err() {
                    if matches(&key) {
                        let id =
                            link_id(&path).map_err(|cause| InputError::Io { path: key.clone(), cause })?;
                        out.insert(format!("{key} (link)"), id);
                    }
                    continue;
                }
                return Err(InputError::Io { path: key, cause: err.into() });
            }
        };
        let key = key_of(entry.path())?;
        if entry.path_is_symlink() && matches(&key) {
            let id = link_id(entry.path()).map_err(|cause| InputError::Io { path: key.clone(), cause })?;
            out.insert(format!("{key} (link)"), id);
        }
        if entry.file_type().is_dir() {
            // Every folder is keyed, empty ones too: a step sees them, and an image holds them.
            if matches(&key) {
                out.insert(format!("{key} (folder)"), folder_id());
            }
            continue;
        }
        if !matches(&key) {
            continue;
        }
        let meta = entry.metadata().map_err(|e| InputError::Io { path: key.clone(), cause: e.into() })?;
        if !meta.is_file() {
            return Err(InputError::NotAFile { path: key, kind: super::hash::kind_of(&meta) });
        }
        let id = stat
            .file_id_with_meta(&key, entry.path(), &(&meta).into())
            .map_err(|cause| InputError::Io { path: key.clone(), cause })?;
        out.insert(key, id);
    }
    Ok(())
}

/// A folder's identity: that it is one (what is below it is keyed under its own names).
pub fn folder_id() -> FileId {
    FileId { digest: *blake3::hash(b"folder").as_bytes(), exec: false, size: 0 }
}

/// A symlink's identity: its text, hashed (what it leads to is keyed under its own name).
pub fn link_id(path: &Path) -> io::Result<FileId> {
    let target = fs::read_link(path)?;
    let mut h = blake3::Hasher::new();
    h.update(b"symlink\0");
    h.update(target.as_os_str().as_encoded_bytes());
    Ok(FileId { digest: *h.finalize().as_bytes(), exec: false, size: 0 })
}

#[cfg(test)]
mod tests {
    use super::glob_base;

    #[test]
    fn glob_bases() {
        assert_eq!(glob_base("src/**/*.cu"), "src");
        assert_eq!(glob_base("*.c"), ".");
        assert_eq!(glob_base("a/b/c?.h"), "a/b");
        assert_eq!(glob_base("/usr/include/*.h"), "/usr/include");
    }
}
