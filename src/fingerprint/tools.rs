//! Tool identity: what a tool named in `tools:` resolves to, keyed by content and version.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::hash::{Digest, StatCache};

/// Why a tool named in `tools:` has no identity.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ToolError {
    #[error("tool `{name}` was not found on PATH; install it, or name it by path in `tools:`")]
    #[diagnostic(code(gvbuild::tools::not_found))]
    NotFound { name: String },
    #[error("cannot read tool `{name}` at {}: {source}", path.display())]
    #[diagnostic(code(gvbuild::tools::read))]
    Read { name: String, path: PathBuf, source: std::io::Error },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ToolId {
    /// blake3 of the resolved executable.
    pub digest: Digest,
    /// What `TOOL --version` printed (stdout then stderr), with its exit status.
    pub version: String,
}

impl ToolId {
    /// The identity as one string, for a platform property (`tool:NAME=IDENTITY`): `b3:` and
    /// the hex blake3 of the executable's blake3 (32 bytes) followed by the `--version` text.
    /// A remote-execution worker advertises it for each tool it offers, and a client that
    /// lacks a tool keys it by the identity it is given.
    pub fn identity(&self) -> String {
        let mut h = blake3::Hasher::new();
        h.update(&self.digest);
        h.update(self.version.as_bytes());
        format!("b3:{}", h.finalize().to_hex())
    }
}

/// The platform property name under which a tool's identity travels: `tool:` and the
/// program's file name (`/usr/local/cuda/bin/nvcc` is `tool:nvcc`).
pub fn tool_property(name: &str) -> String {
    format!("tool:{}", name.rsplit('/').next().unwrap_or(name))
}

/// Tool identities found in this build: each tool's `--version` runs once per build, not once
/// per step. Not persisted: a rustup proxy's version can change while its binary does not.
#[derive(Default)]
pub struct ToolCache {
    seen: Mutex<HashMap<PathBuf, ToolId>>,
}

/// Find `name` the way a shell would: a path if it has a `/` (relative to the project), else the
/// first executable match on the caller's PATH.
pub fn resolve(name: &str, root: &Path) -> Option<PathBuf> {
    if name.contains('/') {
        let p = if name.starts_with('/') { PathBuf::from(name) } else { root.join(name) };
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    })
}

impl ToolCache {
    pub fn identify(&self, name: &str, root: &Path, stat: &StatCache) -> Result<ToolId, ToolError> {
        self.identify_with(name, root, stat, &["--version"])
    }

    /// Like `identify`, for tools that print their version another way (`ops version`).
    pub fn identify_with(
        &self,
        name: &str,
        root: &Path,
        stat: &StatCache,
        version_args: &[&str],
    ) -> Result<ToolId, ToolError> {
        let path = resolve(name, root).ok_or_else(|| ToolError::NotFound { name: name.to_string() })?;
        if let Ok(seen) = self.seen.lock() {
            if let Some(id) = seen.get(&path) {
                return Ok(id.clone());
            }
        }
        let real = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        let key = real.to_string_lossy().into_owned();
        let digest = stat
            .file_id(&key, &real)
            .map_err(|source| ToolError::Read { name: name.to_string(), path: real.clone(), source })?
            .digest;
        let version =
            match Command::new(&path).args(version_args).current_dir(root).stdin(Stdio::null()).output() {
                Ok(o) => format!(
                    "{}{}[exit {}]",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr),
                    o.status.code().map_or("signal".to_string(), |c| c.to_string())
                ),
                Err(e) => format!("[--version failed: {e}]"),
            };
        let id = ToolId { digest, version };
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(path, id.clone());
        }
        Ok(id)
    }
}
