//! Project paths as gevulot.yaml writes them: `/`-separated, relative to the project root (or,
//! for system inputs, absolute). The small rules every layer shares (normalising, globs, the
//! folders no walk enters) live here, below everything that uses them.

use serde::{Deserialize, Serialize};

use crate::diag::Span;

/// Folders no walk of the project enters: gvbuild's own state and git's.
pub const SKIP_DIRS: &[&str] = &[".gvbuild", ".git"];

/// Whether `name` (one path component) is a folder in [`SKIP_DIRS`].
pub fn is_skipped_dir(name: &std::ffi::OsStr) -> bool {
    SKIP_DIRS.iter().any(|s| name == *s)
}

/// A path as written in `inputs` or `outputs`, normalised.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PathSpec {
    /// Project-relative (no `.`/`..`, `/`-separated) or, for system inputs, absolute.
    pub path: String,
    /// The path contains glob characters (`*?[{`).
    pub glob: bool,
    /// Only validation (before the graph is cached) points at paths.
    #[serde(skip)]
    pub span: Span,
}

/// `to` (project-relative) as seen from the folder `from` (project-relative).
pub fn relative_to(to: &str, from: &str) -> String {
    let to: Vec<&str> = to.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    let from: Vec<&str> = from.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    let common = to.iter().zip(&from).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<&str> = vec![".."; from.len() - common];
    parts.extend(&to[common..]);
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

/// Whether project path `path` is `dir` or lies below it (whole components: `a/bc` is not
/// below `a/b`).
pub fn is_within(path: &str, dir: &str) -> bool {
    path == dir || (path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/')
}

/// Whether `path` holds glob characters (`*?[{`), as gevulot.yaml's globs are written.
pub fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '[', '{'])
}

/// Normalise a relative path: drop `.` and empty parts, resolve `..`; `None` if it climbs out,
/// `"."` for the root itself.
pub fn normalize_rel(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Some(".".into());
    }
    Some(parts.join("/"))
}

/// An absolute path cleaned as Go's `path.Clean` cleans it: `.` and empty components dropped,
/// `..` taken back, never above `/`.
pub fn normalize_abs(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_relative_paths() {
        assert_eq!(normalize_rel("./a//b/../c/").as_deref(), Some("a/c"));
        assert_eq!(normalize_rel("a/.."), Some(".".into()));
        assert_eq!(normalize_rel("../x"), None);
        assert_eq!(normalize_rel("a/../../x"), None);
    }

    #[test]
    fn relative_paths_climb_only_as_far_as_needed() {
        assert_eq!(relative_to("a/b/c", "a/d"), "../b/c");
        assert_eq!(relative_to("a", "a"), ".");
    }
}
