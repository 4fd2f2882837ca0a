//! The input root: an action's `Directory` tree (remote_execution.proto, `Action.input_root_digest`)
//! read from the CAS and written out under the action's folder, and nowhere else.
//!
//! Every name in a `Directory` must be one path component: not empty, not `.` or `..`, without
//! `/` or NUL, and not twice in one folder; anything else refuses the action before a byte is
//! written. Files are created with `O_EXCL` and folders with `mkdir`, neither of which follows
//! a symlink, and symlinks are made last, so a symlink of the tree (whatever its target) is
//! never written through. Blobs the CAS lacks are all found first (one `FindMissingBlobs`),
//! so the engine hears of every one of them at once.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use prost::Message;
use sha2::Digest as _;

use super::failure::Failure;
use crate::cache::remote::grpc::GrpcStore;
use crate::cache::remote::reapi::{Digest, Directory};
use crate::cache::remote::Store;

/// A `Directory` message bigger than this is refused rather than read into memory.
const MAX_DIRECTORY: i64 = 64 << 20;
/// Files, folders and links an input root may expand to.
const MAX_INPUT_ENTRIES: usize = 4_000_000;

/// Whether `name` is one path component that stays where it is put.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// A relative path whose every component is a plain name (`a/b/c`; not `/a`, `a/../b`, `./a`
/// or empty). Output paths and the working directory must be such paths.
pub fn check_relative(what: &str, path: &str) -> Result<PathBuf, Failure> {
    let ok = !path.is_empty()
        && Path::new(path).components().all(|c| matches!(c, Component::Normal(_)))
        && path.split('/').all(is_plain_name);
    if ok {
        Ok(PathBuf::from(path))
    } else {
        Err(Failure::invalid(format!(
            "{what} `{}` is not a relative path of plain names (no `..`, `.`, empty parts or leading `/`)",
            path.escape_debug()
        )))
    }
}

/// Create `rel`'s folders below `base`, one component at a time, never through a symlink.
pub fn create_dirs(base: &Path, rel: &Path) -> Result<(), Failure> {
    let mut at = base.to_path_buf();
    for c in rel.components() {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Failure::invalid(format!(
                    "`{}` is in the way of a folder the action needs (it is a file or a symlink)",
                    at.strip_prefix(base).unwrap_or(&at).display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&at)
                .map_err(|e| Failure::local(format!("cannot create {}", at.display()), e))?,
            Err(e) => return Err(Failure::local(format!("cannot look at {}", at.display()), e)),
        }
    }
    Ok(())
}

/// One folder of the tree, where it goes.
struct Folder {
    rel: PathBuf,
    dir: Directory,
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/{}/{}", d.hash, d.size_bytes)
}

/// Write the input root `root_digest` into the empty folder `root`.
pub fn materialize(store: &GrpcStore, root_digest: &Digest, root: &Path) -> Result<(), Failure> {
    let mut missing: Vec<Digest> = Vec::new();
    let folders = read_tree(store, root_digest, &mut missing)?;
    let mut files: Vec<&Digest> = Vec::new();
    let mut seen = HashSet::new();
    for f in &folders {
        for file in &f.dir.files {
            let d = file.digest.as_ref().ok_or_else(|| {
                Failure::invalid(format!("input file {} has no digest", f.rel.join(&file.name).display()))
            })?;
            if d.size_bytes > 0 && seen.insert(d.hash.clone()) {
                files.push(d);
            }
        }
    }
    let wanted: Vec<Digest> = files.iter().map(|d| (*d).clone()).collect();
    missing.extend(store.find_missing(&wanted).map_err(Failure::cas)?);
    if !missing.is_empty() {
        return Err(Failure::missing(&missing));
    }

    // Each distinct blob is downloaded once; later copies are copied from the first.
    let mut written: HashMap<String, PathBuf> = HashMap::new();
    for f in &folders {
        let dir = root.join(&f.rel);
        if !f.rel.as_os_str().is_empty() {
            fs::create_dir(&dir)
                .map_err(|e| Failure::local(format!("cannot create {}", dir.display()), e))?;
        }
        for file in &f.dir.files {
            let path = dir.join(&file.name);
            let d = file.digest.clone().unwrap_or_default();
            let mode = if file.is_executable { 0o755 } else { 0o644 };
            let mut out = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)
                .map_err(|e| Failure::local(format!("cannot create {}", path.display()), e))?;
            if d.size_bytes > 0 {
                match written.get(&d.hash) {
                    Some(first) => {
                        let mut from = File::open(first)
                            .map_err(|e| Failure::local(format!("cannot read {}", first.display()), e))?;
                        io::copy(&mut from, &mut out)
                            .map_err(|e| Failure::local(format!("cannot write {}", path.display()), e))?;
                    }
                    None => {
                        download(store, &d, &mut out, &path)?;
                        written.insert(d.hash.clone(), path.clone());
                    }
                }
            }
            // The umask may have taken bits off.
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(|e| Failure::local(format!("cannot set the mode of {}", path.display()), e))?;
        }
    }
    // Symlinks last: nothing above is written through one.
    for f in &folders {
        for link in &f.dir.symlinks {
            let path = root.join(&f.rel).join(&link.name);
            std::os::unix::fs::symlink(&link.target, &path)
                .map_err(|e| Failure::local(format!("cannot create the symlink {}", path.display()), e))?;
        }
    }
    Ok(())
}

/// Every folder of the tree, parents before children, each name checked.
fn read_tree(store: &GrpcStore, root: &Digest, missing: &mut Vec<Digest>) -> Result<Vec<Folder>, Failure> {
    let mut out = Vec::new();
    let mut todo = vec![(PathBuf::new(), root.clone())];
    // A Merkle tree may name one folder many times over: expanded, a small tree could stand
    // for billions of folders. Entries past the bound refuse the action.
    let mut entries = 0usize;
    while let Some((rel, digest)) = todo.pop() {
        let Some(bytes) = read_small(store, &digest)? else {
            missing.push(digest);
            continue;
        };
        let dir = Directory::decode(&bytes[..]).map_err(|e| {
            Failure::invalid(format!(
                "input folder `{}` ({}) is not a Directory: {e}",
                rel.display(),
                blob_name(&digest)
            ))
        })?;
        entries += 1 + dir.files.len() + dir.directories.len() + dir.symlinks.len();
        if entries > MAX_INPUT_ENTRIES {
            return Err(Failure::invalid(format!(
                "the input root holds more than {MAX_INPUT_ENTRIES} files, folders and links once \
                 expanded; refused"
            )));
        }
        let mut names = HashSet::new();
        let all = dir
            .files
            .iter()
            .map(|f| &f.name)
            .chain(dir.directories.iter().map(|d| &d.name))
            .chain(dir.symlinks.iter().map(|l| &l.name));
        for name in all {
            if !is_plain_name(name) {
                return Err(Failure::invalid(format!(
                    "input `{}` in folder `{}` is not a plain file name (names cannot be empty, `.` or `..`, \
                     or hold `/`)",
                    name.escape_debug(),
                    rel.display()
                )));
            }
            if !names.insert(name.as_str()) {
                return Err(Failure::invalid(format!(
                    "input `{}` appears twice in folder `{}`",
                    name.escape_debug(),
                    rel.display()
                )));
            }
        }
        for sub in &dir.directories {
            let d = sub.digest.clone().ok_or_else(|| {
                Failure::invalid(format!("input folder {} has no digest", rel.join(&sub.name).display()))
            })?;
            todo.push((rel.join(&sub.name), d));
        }
        out.push(Folder { rel, dir });
    }
    // Parents first: a path sorts after its parent.
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// A small blob (a `Command`, a `Directory`) into memory; `None` when the CAS lacks it.
pub fn read_small(store: &GrpcStore, digest: &Digest) -> Result<Option<Vec<u8>>, Failure> {
    if digest.size_bytes == 0 {
        return Ok(Some(Vec::new()));
    }
    if digest.size_bytes > MAX_DIRECTORY || digest.size_bytes < 0 {
        return Err(Failure::invalid(format!("{} is too big for a Command or Directory", blob_name(digest))));
    }
    let Some((_, mut reader)) = store.get_blob(digest).map_err(Failure::cas)? else { return Ok(None) };
    let mut bytes = Vec::with_capacity(digest.size_bytes as usize);
    reader
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::unavailable(format!("reading {}: {e}", blob_name(digest))))?;
    check_digest(digest, &sha2::Sha256::digest(&bytes).into(), bytes.len() as u64)?;
    Ok(Some(bytes))
}

fn download(store: &GrpcStore, d: &Digest, out: &mut File, path: &Path) -> Result<(), Failure> {
    let Some((_, mut reader)) = store.get_blob(d).map_err(Failure::cas)? else {
        return Err(Failure::missing(std::slice::from_ref(d)));
    };
    let mut hasher = sha2::Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| Failure::unavailable(format!("reading {}: {e}", blob_name(d))))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
        out.write_all(&buf[..n])
            .map_err(|e| Failure::local(format!("cannot write {}", path.display()), e))?;
    }
    check_digest(d, &hasher.finalize().into(), size)
}

/// A blob whose bytes do not hash to its name is the server's fault: retried elsewhere.
fn check_digest(d: &Digest, sha: &[u8; 32], size: u64) -> Result<(), Failure> {
    if hex::encode(sha) != d.hash || size != d.size_bytes as u64 {
        return Err(Failure::unavailable(format!(
            "the CAS sent {size} bytes hashing to {} for {}",
            hex::encode(sha),
            blob_name(d)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_that_could_climb_out_are_refused() {
        for bad in ["", ".", "..", "a/b", "/", "a\0"] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
        assert!(is_plain_name("..a") && is_plain_name("a b"));
        for bad in ["", "/abs", "a/../b", "./a", "a//b", "a/", "..", "a/."] {
            assert!(check_relative("output", bad).is_err(), "{bad:?}");
        }
        assert!(check_relative("output", "out/sub/x.txt").is_ok());
    }
}
