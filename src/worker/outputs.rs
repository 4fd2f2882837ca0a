//! An action's outputs into the `ActionResult` (remote_execution.proto): each path the Command
//! names, relative to its working directory, as found after the run. REAPI v2.1's
//! `output_paths` and the older `output_files` / `output_directories` are all honoured; what
//! is there decides the kind (a file, a folder as a `Tree`, a symlink as an `OutputSymlink`),
//! and what is missing is left out, as the protocol says. Symlinks are never followed: not
//! inside a folder, and not on the way to an output (an output under a symlinked folder is
//! treated as missing), so nothing outside the action's folder is read.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use prost::Message;
use sha2::Digest as _;

use super::failure::Failure;
use crate::cache::remote::grpc::GrpcStore;
use crate::cache::remote::reapi::{
    ActionResult, Command, Digest, Directory, DirectoryNode, FileNode, OutputDirectory, OutputFile,
    OutputSymlink, SymlinkNode, Tree,
};
use crate::cache::remote::{Body, Store};

/// What to send to the CAS.
pub enum Blob {
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// The blobs of a result, by hash.
#[derive(Default)]
pub struct Blobs(BTreeMap<String, (Digest, Blob)>);

impl Blobs {
    pub fn bytes(&mut self, bytes: Vec<u8>) -> Digest {
        let d = digest_bytes(&bytes);
        self.0.entry(d.hash.clone()).or_insert((d.clone(), Blob::Bytes(bytes)));
        d
    }

    pub fn file(&mut self, path: &Path) -> Result<Digest, Failure> {
        let d =
            digest_file(path).map_err(|e| Failure::local(format!("cannot read {}", path.display()), e))?;
        self.0.entry(d.hash.clone()).or_insert((d.clone(), Blob::File(path.to_path_buf())));
        Ok(d)
    }

    /// Send the blobs the CAS lacks.
    pub fn upload(self, store: &GrpcStore) -> Result<(), Failure> {
        let digests: Vec<Digest> = self.0.values().map(|(d, _)| d.clone()).collect();
        let missing = store.find_missing(&digests).map_err(Failure::cas)?;
        for d in missing {
            let Some((_, blob)) = self.0.get(&d.hash) else { continue };
            match blob {
                Blob::Bytes(b) => store.put_blob(&d, Body::Bytes(b)),
                Blob::File(p) => store.put_blob(&d, Body::File(p)),
            }
            .map_err(Failure::cas)?;
        }
        Ok(())
    }
}

pub fn digest_bytes(bytes: &[u8]) -> Digest {
    Digest { hash: hex::encode(sha2::Sha256::digest(bytes)), size_bytes: bytes.len() as i64 }
}

fn digest_file(path: &Path) -> io::Result<Digest> {
    let mut f = File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Digest { hash: hex::encode(h.finalize()), size_bytes: size as i64 })
}

fn is_exec(m: &fs::Metadata) -> bool {
    m.permissions().mode() & 0o111 != 0
}

/// `path` below `base` as it is, when no component on the way is a symlink or a file.
fn lookup(base: &Path, rel: &str) -> Option<(PathBuf, fs::Metadata)> {
    let mut at = base.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        let m = fs::symlink_metadata(&at).ok()?;
        if i + 1 == parts.len() {
            return Some((at, m));
        }
        if !m.is_dir() {
            return None;
        }
    }
    None
}

// The pre-v2.1 lists are deprecated, and still what older clients send.
#[allow(deprecated)]
/// Fill `result`'s outputs from the working directory `wd`, adding their blobs to `blobs`.
pub fn collect(
    cmd: &Command,
    wd: &Path,
    result: &mut ActionResult,
    blobs: &mut Blobs,
) -> Result<(), Failure> {
    // v2.1: one list, and symlinks in `output_symlinks`; before it, two lists, and symlinks
    // in the list of their kind.
    let v21 = !cmd.output_paths.is_empty();
    let paths: Vec<(&String, bool)> = if v21 {
        cmd.output_paths.iter().map(|p| (p, false)).collect()
    } else {
        cmd.output_files
            .iter()
            .map(|p| (p, false))
            .chain(cmd.output_directories.iter().map(|p| (p, true)))
            .collect()
    };
    for (path, dir_list) in paths {
        let Some((abs, meta)) = lookup(wd, path) else { continue };
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&abs)
                .map_err(|e| Failure::local(format!("cannot read the symlink {}", abs.display()), e))?;
            let link = OutputSymlink {
                path: path.clone(),
                target: utf8_target(&abs, target)?,
                ..Default::default()
            };
            if v21 {
                result.output_symlinks.push(link);
            } else if dir_list {
                result.output_directory_symlinks.push(link);
            } else {
                result.output_file_symlinks.push(link);
            }
        } else if meta.is_file() {
            let digest = blobs.file(&abs)?;
            result.output_files.push(OutputFile {
                path: path.clone(),
                digest: Some(digest),
                is_executable: is_exec(&meta),
                ..Default::default()
            });
        } else if meta.is_dir() {
            let mut children = BTreeMap::new();
            let root = directory(&abs, blobs, &mut children)?;
            let tree = Tree { root: Some(root), children: children.into_values().collect() };
            let tree_digest = blobs.bytes(tree.encode_to_vec());
            result.output_directories.push(OutputDirectory {
                path: path.clone(),
                tree_digest: Some(tree_digest),
                ..Default::default()
            });
        }
        // A FIFO, a socket, a device: not an output REAPI can carry; left out.
    }
    Ok(())
}

/// A symlink's target as REAPI carries it; one that is not UTF-8 is refused, not changed.
fn utf8_target(link: &Path, target: PathBuf) -> Result<String, Failure> {
    target.into_os_string().into_string().map_err(|_| {
        Failure::invalid(format!("the symlink {} points to a path that is not UTF-8", link.display()))
    })
}

/// The `Directory` of `dir`, its sub-folders' messages added to `children` once each (by
/// digest, as `Tree` wants them), their files to `blobs`. Entries sorted by name, as REAPI asks.
fn directory(
    dir: &Path,
    blobs: &mut Blobs,
    children: &mut BTreeMap<String, Directory>,
) -> Result<Directory, Failure> {
    let mut entries: Vec<(String, PathBuf)> = fs::read_dir(dir)
        .map_err(|e| Failure::local(format!("cannot list {}", dir.display()), e))?
        .filter_map(|e| e.ok())
        .map(|e| match e.file_name().into_string() {
            Ok(name) => Ok((name, e.path())),
            // REAPI names are strings: a name that is not UTF-8 cannot be carried as it is, and
            // is refused rather than changed.
            Err(_) => Err(Failure::invalid(format!(
                "output {} has a name that is not UTF-8, which REAPI cannot carry",
                e.path().display()
            ))),
        })
        .collect::<Result<_, _>>()?;
    entries.sort();
    let mut out = Directory::default();
    for (name, path) in entries {
        let m = fs::symlink_metadata(&path)
            .map_err(|e| Failure::local(format!("cannot look at {}", path.display()), e))?;
        if m.file_type().is_symlink() {
            let target = fs::read_link(&path)
                .map_err(|e| Failure::local(format!("cannot read {}", path.display()), e))?;
            out.symlinks.push(SymlinkNode {
                name,
                target: utf8_target(&path, target)?,
                ..Default::default()
            });
        } else if m.is_file() {
            let digest = blobs.file(&path)?;
            out.files.push(FileNode {
                name,
                digest: Some(digest),
                is_executable: is_exec(&m),
                ..Default::default()
            });
        } else if m.is_dir() {
            let sub = directory(&path, blobs, children)?;
            let digest = digest_bytes(&sub.encode_to_vec());
            children.entry(digest.hash.clone()).or_insert(sub);
            out.directories.push(DirectoryNode { name, digest: Some(digest) });
        }
    }
    Ok(out)
}
