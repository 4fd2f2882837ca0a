//! A step's outputs as a tree of files, symlinks and folders, and its digest.
//!
//! The shape maps one-to-one onto a Bazel remote-cache `ActionResult`: output files with path,
//! digest, size and executable bit; output symlinks with their target; output directories.

use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};
use walkdir::WalkDir;

use super::hash::{Digest, StatCache};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutputTree {
    pub files: Vec<OutFile>,
    pub symlinks: Vec<OutLink>,
    /// Every folder, so that empty ones are restored too.
    pub dirs: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutFile {
    pub path: String,
    pub digest: Digest,
    pub size: u64,
    pub exec: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutLink {
    pub path: String,
    pub target: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("declared output `{0}` was not created")]
    Missing(String),
    #[error("cannot read output `{path}`: {cause}")]
    Io { path: String, cause: io::Error },
}

impl OutputTree {
    /// The digest dependents key on.
    pub fn digest(&self) -> Digest {
        let mut h = blake3::Hasher::new();
        h.update(b"gvbuild outputs\0");
        if let Ok(bytes) = bincode::serialize(self) {
            h.update(&bytes);
        }
        *h.finalize().as_bytes()
    }

    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Hash the declared outputs as they are on disk now.
    pub fn collect(root: &Path, outputs: &[String], stat: &StatCache) -> Result<OutputTree, OutputError> {
        let mut tree = OutputTree::default();
        for out in outputs {
            let abs = root.join(out);
            let meta = match fs::symlink_metadata(&abs) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(OutputError::Missing(out.clone()))
                }
                Err(cause) => return Err(OutputError::Io { path: out.clone(), cause }),
            };
            if meta.file_type().is_symlink() {
                tree.symlinks.push(link(&abs, out)?);
            } else if meta.is_dir() {
                for entry in WalkDir::new(&abs).sort_by_file_name() {
                    let entry = entry.map_err(|e| OutputError::Io { path: out.clone(), cause: e.into() })?;
                    let rel = entry.path().strip_prefix(&abs).ok().and_then(|r| r.to_str()).unwrap_or("");
                    let name = if rel.is_empty() { out.clone() } else { format!("{out}/{rel}") };
                    let ft = entry.file_type();
                    if ft.is_dir() {
                        tree.dirs.push(name);
                    } else if ft.is_symlink() {
                        tree.symlinks.push(link(entry.path(), &name)?);
                    } else if ft.is_file() {
                        let meta = entry
                            .metadata()
                            .map_err(|e| OutputError::Io { path: name.clone(), cause: e.into() })?;
                        let id = stat
                            .file_id_with_meta(&name, entry.path(), &meta)
                            .map_err(|cause| OutputError::Io { path: name.clone(), cause })?;
                        tree.files.push(OutFile {
                            path: name,
                            digest: id.digest,
                            size: id.size,
                            exec: id.exec,
                        });
                    }
                }
            } else {
                let id = stat
                    .file_id_with_meta(out, &abs, &meta)
                    .map_err(|cause| OutputError::Io { path: out.clone(), cause })?;
                tree.files.push(OutFile {
                    path: out.clone(),
                    digest: id.digest,
                    size: id.size,
                    exec: id.exec,
                });
            }
        }
        Ok(tree)
    }
}

fn link(abs: &Path, name: &str) -> Result<OutLink, OutputError> {
    let target = fs::read_link(abs).map_err(|cause| OutputError::Io { path: name.to_string(), cause })?;
    Ok(OutLink { path: name.to_string(), target: target.to_string_lossy().into_owned() })
}
