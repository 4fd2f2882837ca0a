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
    #[error("output `{0}` has a name that is not UTF-8; gvbuild stores only UTF-8 paths")]
    NotUtf8(String),
    #[error("output `{path}` is {kind}; outputs may hold only files, folders and symlinks")]
    NotAFile { path: String, kind: &'static str },
}

impl OutputTree {
    /// The digest dependents key on.
    pub fn digest(&self) -> Digest {
        let mut w = super::encode::KeyWriter::new(b"gvbuild outputs\0");
        w.field("files").len(self.files.len());
        for f in &self.files {
            w.str(&f.path).bytes(&f.digest).u64(f.size).bool(f.exec);
        }
        w.field("symlinks").len(self.symlinks.len());
        for l in &self.symlinks {
            w.str(&l.path).str(&l.target);
        }
        w.field("dirs").len(self.dirs.len());
        for d in &self.dirs {
            w.str(d);
        }
        w.finish()
    }

    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Hash the declared outputs as they are on disk now.
    pub fn collect<S: AsRef<str>>(
        root: &Path,
        outputs: &[S],
        stat: &StatCache,
    ) -> Result<OutputTree, OutputError> {
        let mut tree = OutputTree::default();
        for out in outputs {
            let out: &str = out.as_ref();
            let meta = match stat.meta(root, out, false) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(OutputError::Missing(out.to_string()))
                }
                Err(cause) => return Err(OutputError::Io { path: out.to_string(), cause }),
            };
            if meta.is_symlink() {
                tree.symlinks.push(link(&root.join(out), out)?);
            } else if meta.is_dir() {
                let abs = root.join(out);
                for entry in WalkDir::new(&abs).sort_by_file_name() {
                    let entry =
                        entry.map_err(|e| OutputError::Io { path: out.to_string(), cause: e.into() })?;
                    let rel = entry.path().strip_prefix(&abs).unwrap_or(entry.path());
                    let name = match rel.to_str() {
                        Some("") => out.to_string(),
                        Some(rel) => format!("{out}/{rel}"),
                        None => return Err(OutputError::NotUtf8(format!("{out}/{}", rel.to_string_lossy()))),
                    };
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
                            .file_id_with_meta(&name, entry.path(), &(&meta).into())
                            .map_err(|cause| OutputError::Io { path: name.clone(), cause })?;
                        tree.files.push(OutFile {
                            path: name,
                            digest: id.digest,
                            size: id.size,
                            exec: id.exec,
                        });
                    } else {
                        let meta = entry
                            .metadata()
                            .map_err(|e| OutputError::Io { path: name.clone(), cause: e.into() })?;
                        return Err(OutputError::NotAFile { path: name, kind: super::hash::kind_of(&meta) });
                    }
                }
            } else {
                let id = stat
                    .file_id_in(root, out, &meta)
                    .map_err(|cause| OutputError::Io { path: out.to_string(), cause })?;
                tree.files.push(OutFile {
                    path: out.to_string(),
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
    let target = target.into_os_string().into_string().map_err(|t| {
        OutputError::NotUtf8(format!("{name} (a symlink to {})", std::path::Path::new(&t).display()))
    })?;
    Ok(OutLink { path: name.to_string(), target })
}
