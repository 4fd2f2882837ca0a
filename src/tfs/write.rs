//! Write a TFS volume: lay out the log and the file data, copy the data in parallel, then write
//! the log and, last, the first sector with the UUID derived from everything else.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use rayon::prelude::*;

use super::codec::Encoder;
use super::{
    push_varint, Tuple, Value, END_OF_LOG, LABEL_MAX, LOG_EXTENSION_LINK, LOG_EXTENSION_SECTORS, MAGIC,
    MAX_EXTENT_SECTORS, SECTOR, TUPLE_AVAILABLE, TUPLE_EXTENDED, VERSION,
};

/// Why a volume could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("`{shown}`: `{name}` cannot be a file name in the image")]
    ReservedName { shown: String, name: String },
    #[error("`{shown}`: a name cannot contain '/'")]
    NameWithSlash { shown: String },
    #[error("`{}`: a name cannot contain NUL", shown.replace('\0', "\\0"))]
    NameWithNul { shown: String },
    #[error("`{path}`: a symlink target must be non-empty, without NUL")]
    BadSymlink { path: String },
    #[error("cannot write the image: {0}")]
    WriteImage(#[source] io::Error),
    #[error("cannot read {}: {source}", path.display())]
    ReadSource { path: PathBuf, source: io::Error },
    #[error("cannot copy {}: {source}", path.display())]
    CopySource { path: PathBuf, source: io::Error },
    #[error("{} changed size while the image was written", path.display())]
    SourceChanged { path: PathBuf },
    #[error("{} {how} while the image was written (expected {len} bytes)", path.display())]
    SourceResized { path: PathBuf, how: &'static str, len: u64 },
    #[error("the volume label `{label}` is longer than {} bytes or holds NUL", LABEL_MAX)]
    BadLabel { label: String },
    #[error(
        "the requested size {} is smaller than the contents, which need {}",
        crate::fsutil::human_size(*asked),
        crate::fsutil::human_size(*needed)
    )]
    TooSmall { asked: u64, needed: u64 },
    #[error("a volume of {} is more than an MBR partition can hold (2 TiB)", crate::fsutil::human_size(*size))]
    TooBig { size: u64 },
}

/// A node of the tree a volume holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsNode {
    Dir(BTreeMap<String, FsNode>),
    /// A file copied from the host; `len` is the size it must still have when copied.
    /// `digest`, the blake3 of its content when already known, lets the copy stay in the
    /// kernel (copy_file_range) instead of reading the file to hash it.
    File {
        source: PathBuf,
        len: u64,
        exec: bool,
        digest: Option<[u8; 32]>,
    },
    /// A file whose bytes are given.
    Bytes {
        data: Vec<u8>,
        exec: bool,
    },
    Symlink(String),
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Written {
    /// The volume's size in bytes (a multiple of 512 KiB).
    pub size: u64,
    pub uuid: [u8; 16],
    pub files: u64,
    pub data_bytes: u64,
}

/// How big a volume is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeSize {
    /// The contents plus 512 KiB of room, rounded up to 512 KiB (as Nanos's mkfs).
    Auto,
    /// This size (rounded up to 512 KiB); smaller than the contents is an error.
    Requested(u64),
    /// This size, or the automatic one when the contents need more.
    AtLeast(u64),
    /// Exactly this many bytes (whole sectors) when the contents fit, else as `Auto`: the room
    /// ops's BaseVolumeSz leaves to the root filesystem.
    Fill(u64),
}

/// Volumes are sized in steps of this, with at least this much room after the data (as mkfs).
const SIZE_STEP: u64 = 512 * 1024;
/// Room kept in each extension for the record header and the closing link.
const RECORD_RESERVE: usize = 1 + 10 + 10;
const LINK_RESERVE: usize = 1 + 10 + 10;

struct Placed<'a> {
    node: &'a FsNode,
    /// First sector, relative to the start of the data area.
    start: u64,
    len: u64,
}

/// Check a name as TFS and Nanos's path lookup need it.
fn check_name(name: &str, parent: &str) -> Result<(), WriteError> {
    let shown = if parent.is_empty() { format!("/{name}") } else { format!("{parent}/{name}") };
    if name.is_empty() || name == "." || name == ".." {
        return Err(WriteError::ReservedName { shown, name: name.to_string() });
    }
    if name.contains('/') {
        return Err(WriteError::NameWithSlash { shown });
    }
    if name.contains('\0') {
        return Err(WriteError::NameWithNul { shown });
    }
    Ok(())
}

fn place<'a>(
    dir: &'a BTreeMap<String, FsNode>,
    parent: &str,
    next: &mut u64,
    out: &mut Vec<Placed<'a>>,
) -> Result<(), WriteError> {
    for (name, node) in dir {
        check_name(name, parent)?;
        let path = format!("{parent}/{name}");
        match node {
            FsNode::Dir(children) => place(children, &path, next, out)?,
            FsNode::File { len, .. } => {
                out.push(Placed { node, start: *next, len: *len });
                *next += len.div_ceil(SECTOR);
            }
            FsNode::Bytes { data, .. } => {
                let len = data.len() as u64;
                out.push(Placed { node, start: *next, len });
                *next += len.div_ceil(SECTOR);
            }
            FsNode::Symlink(target) => {
                if target.is_empty() || target.contains('\0') {
                    return Err(WriteError::BadSymlink { path });
                }
            }
        }
    }
    Ok(())
}

/// The tuple of a folder's children; `files` yields each file's placement in walk order.
fn children_tuple<'a, I: Iterator<Item = &'a Placed<'a>>>(
    dir: &BTreeMap<String, FsNode>,
    files: &mut I,
    data_start: u64,
) -> Tuple {
    let mut children = Tuple::new();
    for (name, node) in dir {
        let mut t = Tuple::new();
        match node {
            FsNode::Dir(sub) => {
                t.insert("children".into(), Value::Tuple(children_tuple(sub, files, data_start)));
            }
            FsNode::Symlink(target) => {
                t.insert("linktarget".into(), Value::str(target));
            }
            FsNode::File { exec, .. } | FsNode::Bytes { exec, .. } => {
                let Some(p) = files.next() else { continue };
                let mut extents = Tuple::new();
                let sectors = p.len.div_ceil(SECTOR);
                let mut done = 0;
                while done < sectors {
                    let n = (sectors - done).min(MAX_EXTENT_SECTORS);
                    let mut e = Tuple::new();
                    e.insert("allocated".into(), Value::Int(n as i64));
                    e.insert("length".into(), Value::Int(n as i64));
                    e.insert("offset".into(), Value::Int((data_start + p.start + done) as i64));
                    extents.insert(done.to_string(), Value::Tuple(e));
                    done += n;
                }
                t.insert("extents".into(), Value::Tuple(extents));
                t.insert("filelength".into(), Value::Int(p.len as i64));
                if *exec {
                    t.insert("exec".into(), Value::str("t"));
                }
            }
        }
        children.insert(name.clone(), Value::Tuple(t));
    }
    children
}

/// Split one log entry over extensions at sectors 1, 1025, 2049, …; returns each extension's
/// bytes (the first 1-sector extension is written separately, with the UUID).
pub(super) fn log_extensions(entry: &[u8]) -> Vec<Vec<u8>> {
    let capacity = (LOG_EXTENSION_SECTORS * SECTOR) as usize;
    let header = |buf: &mut Vec<u8>| {
        buf.extend_from_slice(MAGIC);
        push_varint(buf, VERSION);
        push_varint(buf, LOG_EXTENSION_SECTORS);
    };
    let mut out = Vec::new();
    let mut buf = Vec::with_capacity(capacity.min(entry.len() + 64));
    header(&mut buf);
    let mut written = 0;
    while written < entry.len() {
        let room = capacity.saturating_sub(buf.len() + RECORD_RESERVE + LINK_RESERVE);
        if room < 64 {
            let next = 1 + LOG_EXTENSION_SECTORS * (out.len() as u64 + 1);
            buf.push(LOG_EXTENSION_LINK);
            push_varint(&mut buf, next);
            push_varint(&mut buf, LOG_EXTENSION_SECTORS);
            buf.push(END_OF_LOG);
            out.push(std::mem::take(&mut buf));
            header(&mut buf);
            continue;
        }
        let part = room.min(entry.len() - written);
        if written == 0 {
            buf.push(TUPLE_AVAILABLE);
            push_varint(&mut buf, entry.len() as u64);
        } else {
            buf.push(TUPLE_EXTENDED);
        }
        push_varint(&mut buf, part as u64);
        buf.extend_from_slice(&entry[written..written + part]);
        written += part;
    }
    buf.push(END_OF_LOG);
    out.push(buf);
    out
}

fn pad_to_sector(buf: &mut Vec<u8>) {
    let len = (buf.len() as u64).div_ceil(SECTOR) * SECTOR;
    buf.resize(len as usize, 0);
}

/// Copy (or write) one file's bytes to `out` at `at`, zero-padded to whole sectors; returns
/// the blake3 hash of its content.
fn copy_file(out: &File, at: u64, p: &Placed) -> Result<blake3::Hash, WriteError> {
    let mut hasher = blake3::Hasher::new();
    match p.node {
        FsNode::Bytes { data, .. } => {
            hasher.update(data);
            let mut padded = data.clone();
            pad_to_sector(&mut padded);
            out.write_all_at(&padded, at).map_err(WriteError::WriteImage)?;
        }
        FsNode::File { source, len, digest, .. } => {
            let mut f =
                File::open(source).map_err(|e| WriteError::ReadSource { path: source.clone(), source: e })?;
            if let Some(digest) = digest {
                // In the kernel; the rest of the last sector stays zeros, as the image is new.
                let copied = crate::fsutil::copy_range(&f, out, 0, at, *len)
                    .map_err(|e| WriteError::CopySource { path: source.clone(), source: e })?;
                if copied {
                    if f.metadata().map(|m| m.len()).ok() != Some(*len) {
                        return Err(WriteError::SourceChanged { path: source.clone() });
                    }
                    return Ok(blake3::Hash::from_bytes(*digest));
                }
            }
            let mut buf = vec![0u8; (1 << 20).min(len.div_ceil(SECTOR) * SECTOR) as usize];
            let mut done = 0u64;
            while done < *len {
                let want = ((len - done) as usize).min(buf.len());
                let mut filled = 0;
                while filled < want {
                    let n = f
                        .read(&mut buf[filled..want])
                        .map_err(|e| WriteError::ReadSource { path: source.clone(), source: e })?;
                    if n == 0 {
                        let path = source.clone();
                        return Err(WriteError::SourceResized { path, how: "shrank", len: *len });
                    }
                    filled += n;
                }
                hasher.update(&buf[..filled]);
                let padded = (filled as u64).div_ceil(SECTOR) * SECTOR;
                buf[filled..padded as usize].fill(0);
                out.write_all_at(&buf[..padded as usize], at + done).map_err(WriteError::WriteImage)?;
                done += filled as u64;
            }
            let mut probe = [0u8; 1];
            if f.read(&mut probe).map_err(|e| WriteError::ReadSource { path: source.clone(), source: e })?
                != 0
            {
                return Err(WriteError::SourceResized { path: source.clone(), how: "grew", len: *len });
            }
        }
        _ => {}
    }
    Ok(hasher.finalize())
}

/// Write a TFS volume of `tree` with the root tuple's other attributes `attrs` into `out` at
/// byte `base`, which must be zeros (a new file). Returns what was written.
pub fn write_volume(
    out: &File,
    base: u64,
    tree: &BTreeMap<String, FsNode>,
    attrs: &Tuple,
    label: &str,
    size: VolumeSize,
) -> Result<Written, WriteError> {
    if label.len() > LABEL_MAX || label.contains('\0') {
        return Err(WriteError::BadLabel { label: label.to_string() });
    }
    let mut files = Vec::new();
    let mut data_sectors = 0;
    place(tree, "", &mut data_sectors, &mut files)?;

    // The data starts after the log area: the initial sector, the extensions, and two spare
    // extensions as mkfs reserves them. More extensions move the data, which lengthens the
    // log's offsets: settle on a count that holds the log.
    let mut extensions = 1;
    let (log, data_start) = loop {
        let data_start = 1 + LOG_EXTENSION_SECTORS * (extensions + 2);
        let mut root = attrs.clone();
        root.insert("children".into(), Value::Tuple(children_tuple(tree, &mut files.iter(), data_start)));
        let mut entry = Vec::new();
        Encoder::default().tuple(&mut entry, &root);
        let log = log_extensions(&entry);
        if log.len() as u64 <= extensions {
            break (log, data_start);
        }
        extensions = log.len() as u64;
    };

    let size = volume_size(size, (data_start + data_sectors) * SECTOR)?;

    // Files whose digest is known are copied in the kernel, one after the other: writers of one
    // file take its inode lock in turn, so more threads would only spin. The others are read,
    // hashed and written on every core, where hashing is the work.
    let known = |p: &Placed| matches!(p.node, FsNode::File { digest: Some(_), .. });
    let at = |p: &Placed| base + (data_start + p.start) * SECTOR;
    let mut hashes: Vec<Option<blake3::Hash>> = files
        .par_iter()
        .map(|p| if known(p) { Ok(None) } else { copy_file(out, at(p), p).map(Some) })
        .collect::<Result<_, WriteError>>()?;
    for (p, h) in files.iter().zip(hashes.iter_mut()) {
        if h.is_none() {
            *h = Some(copy_file(out, at(p), p)?);
        }
    }
    let hashes: Vec<blake3::Hash> = hashes.into_iter().flatten().collect();

    let mut id = blake3::Hasher::new();
    id.update(b"gvbuild tfs uuid v1\0");
    id.update(label.as_bytes());
    id.update(&[0]);
    for (i, mut ext) in log.into_iter().enumerate() {
        id.update(&ext);
        pad_to_sector(&mut ext);
        let at = base + (1 + LOG_EXTENSION_SECTORS * i as u64) * SECTOR;
        out.write_all_at(&ext, at).map_err(WriteError::WriteImage)?;
    }
    for h in &hashes {
        id.update(h.as_bytes());
    }
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&id.finalize().as_bytes()[..16]);
    // An RFC 9562 version-8 (custom) UUID.
    uuid[6] = (uuid[6] & 0x0f) | 0x80;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;

    out.write_all_at(&first_sector(&uuid, label), base).map_err(WriteError::WriteImage)?;

    Ok(Written { size, uuid, files: files.len() as u64, data_bytes: files.iter().map(|p| p.len).sum() })
}

/// The volume's size in bytes for what was asked, given the bytes its log and data need.
fn volume_size(size: VolumeSize, needed: u64) -> Result<u64, WriteError> {
    let auto = (needed + SIZE_STEP).div_ceil(SIZE_STEP) * SIZE_STEP;
    let size = match size {
        VolumeSize::Requested(asked) if asked < needed => return Err(WriteError::TooSmall { asked, needed }),
        VolumeSize::Requested(asked) => asked.div_ceil(SIZE_STEP) * SIZE_STEP,
        VolumeSize::AtLeast(floor) => auto.max(floor.div_ceil(SIZE_STEP) * SIZE_STEP),
        VolumeSize::Fill(room) if room >= needed => room / SECTOR * SECTOR,
        VolumeSize::Fill(_) => auto,
        VolumeSize::Auto => auto,
    };
    if size > super::MAX_SIZE {
        return Err(WriteError::TooBig { size });
    }
    Ok(size)
}

/// The volume's first sector: magic, version, UUID, label, and the link to the first log
/// extension.
fn first_sector(uuid: &[u8; 16], label: &str) -> Vec<u8> {
    let mut first = Vec::with_capacity(SECTOR as usize);
    first.extend_from_slice(MAGIC);
    push_varint(&mut first, VERSION);
    push_varint(&mut first, 1);
    first.extend_from_slice(uuid);
    first.extend_from_slice(label.as_bytes());
    first.push(0);
    first.push(LOG_EXTENSION_LINK);
    push_varint(&mut first, 1);
    push_varint(&mut first, LOG_EXTENSION_SECTORS);
    first.push(END_OF_LOG);
    pad_to_sector(&mut first);
    first
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn names_that_tfs_cannot_hold_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = File::create(dir.path().join("v.img")).unwrap();
        for bad in ["a/b", "", "..", "nul\0"] {
            let mut tree = BTreeMap::new();
            tree.insert(bad.to_string(), FsNode::Bytes { data: vec![1], exec: false });
            let err = write_volume(&out, 0, &tree, &Tuple::new(), "", VolumeSize::Auto).unwrap_err();
            let err = err.to_string();
            assert!(err.contains("name") || err.contains("cannot be"), "{bad:?}: {err}");
        }
    }

    /// A file's digest, when known, only spares reading it: with or without one (a kernel copy,
    /// or a read that hashes) the image is the same, byte for byte.
    #[test]
    fn known_and_computed_digests_give_the_same_volume() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = BTreeMap::new();
        for (name, len) in [("a", 0usize), ("b", 511), ("c", 70_000), ("d", 3 << 20)] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
            let path = dir.path().join(name);
            std::fs::write(&path, &data).unwrap();
            files.insert(name.to_string(), (path, data));
        }
        let volume = |known: bool| {
            let tree: BTreeMap<String, FsNode> = files
                .iter()
                .map(|(name, (path, data))| {
                    let digest = known.then(|| *blake3::hash(data).as_bytes());
                    let node =
                        FsNode::File { source: path.clone(), len: data.len() as u64, exec: false, digest };
                    (name.clone(), node)
                })
                .collect();
            let out_path = dir.path().join(format!("v-{known}.img"));
            let out = File::options().read(true).write(true).create_new(true).open(&out_path).unwrap();
            let w = write_volume(&out, 0, &tree, &Tuple::new(), "", VolumeSize::Auto).unwrap();
            out.set_len(w.size).unwrap();
            std::fs::read(out_path).unwrap()
        };
        assert!(volume(true) == volume(false));
    }
}
