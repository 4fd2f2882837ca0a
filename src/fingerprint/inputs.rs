//! Expanding a target's declared inputs (files, folders, globs) into the files they stand for.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use walkdir::WalkDir;

use super::hash::{FileId, StatCache};
use crate::config::PathSpec;

/// Folders never walked into: the state folder and version control.
pub const SKIP_DIRS: &[&str] = &[".gvbuild", ".git"];

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("input `{0}` does not exist")]
    Missing(String),
    #[error("cannot read input `{path}`: {cause}")]
    Io { path: String, cause: io::Error },
    #[error("input glob `{0}` is invalid: {1}")]
    Glob(String, String),
}

/// Project-relative (or absolute) name -> identity of every file the inputs stand for.
pub fn resolve(
    root: &Path,
    specs: &[PathSpec],
    stat: &StatCache,
) -> Result<BTreeMap<String, FileId>, InputError> {
    let mut out = BTreeMap::new();
    for spec in specs {
        if spec.glob {
            glob(root, &spec.path, stat, &mut out)?;
        } else {
            literal(root, &spec.path, stat, &mut out)?;
        }
    }
    Ok(out)
}

fn abs_of(root: &Path, path: &str) -> std::path::PathBuf {
    if path.starts_with('/') {
        Path::new(path).to_path_buf()
    } else if path == "." {
        root.to_path_buf()
    } else {
        root.join(path)
    }
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
    let abs = abs_of(root, path);
    let meta = match fs::metadata(&abs) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(InputError::Missing(path.to_string())),
        Err(cause) => return Err(InputError::Io { path: path.to_string(), cause }),
    };
    if meta.is_dir() {
        walk(&abs, path, None, stat, out)
    } else {
        let id = stat
            .file_id_with_meta(path, &abs, &meta)
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
        if crate::config::is_glob(part) {
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

/// Every file below `abs` (named `name` in keys), optionally filtered by a glob on the name.
fn walk(
    abs: &Path,
    name: &str,
    filter: Option<&globset::GlobMatcher>,
    stat: &StatCache,
    out: &mut BTreeMap<String, FileId>,
) -> Result<(), InputError> {
    let walker = WalkDir::new(abs).sort_by_file_name().into_iter().filter_entry(|e| {
        e.depth() == 0 || !(e.file_type().is_dir() && SKIP_DIRS.iter().any(|s| e.file_name() == *s))
    });
    for entry in walker {
        let entry = entry.map_err(|e| InputError::Io { path: name.to_string(), cause: e.into() })?;
        if entry.file_type().is_dir() {
            continue;
        }
        let Ok(rel) = entry.path().strip_prefix(abs) else {
            continue;
        };
        let Some(rel) = rel.to_str() else { continue };
        let key = join(name, rel);
        if let Some(m) = filter {
            if !m.is_match(&key) {
                continue;
            }
        }
        let id = if entry.file_type().is_symlink() {
            match fs::metadata(entry.path()) {
                Ok(m) if m.is_file() => stat.file_id_with_meta(&key, entry.path(), &m),
                // A link to a folder or nowhere: its target text is what it is.
                _ => link_id(entry.path()),
            }
        } else {
            entry
                .metadata()
                .map_err(io::Error::from)
                .and_then(|m| stat.file_id_with_meta(&key, entry.path(), &m))
        }
        .map_err(|cause| InputError::Io { path: key.clone(), cause })?;
        out.insert(key, id);
    }
    Ok(())
}

fn link_id(path: &Path) -> io::Result<FileId> {
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
