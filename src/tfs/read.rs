//! Read a TFS volume: follow the log from sector 0, decode its entries, and read files back by
//! their extents. Every length and offset is checked against the volume: a damaged or hostile
//! image is an error, never a panic or a read outside the volume.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

use super::codec::{CodecError, Cursor, Decoder};
use super::{
    Tuple, Value, END_OF_LOG, END_OF_SEGMENT, LABEL_MAX, LOG_EXTENSION_LINK, MAGIC, SECTOR, TUPLE_AVAILABLE,
    TUPLE_EXTENDED, VERSION,
};

/// A log extension longer than this is refused (Nanos writes 512 KiB ones).
const MAX_EXTENSION_BYTES: u64 = 64 << 20;
/// All of a log's extensions together; a real log is a few MiB even for 100,000 files.
const MAX_LOG_BYTES: u64 = 1 << 30;

/// Why a volume could not be read: its log is damaged or hostile, or the image could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {len} bytes at byte {at}: {source}")]
    ReadAt { len: u64, at: u64, source: io::Error },
    #[error("no TFS here: the magic `NVMTFS` is missing")]
    NoMagic,
    #[error("TFS version {version}; gvbuild reads version {}, which Nanos 0.1.51 and later write", VERSION)]
    Version { version: u64 },
    #[error("the volume label is unterminated")]
    UnterminatedLabel,
    #[error("a log extension ends without END_OF_LOG")]
    NoEndOfLog,
    #[error("a log link to {len} sectors at sector {start}")]
    BadLink { len: u64, start: u64 },
    #[error("a log link to sector {start} points outside the volume")]
    LinkOutside { start: u64 },
    #[error("the log links back to sector {start}: a loop")]
    LinkLoop { start: u64 },
    #[error("a log of more than 1 GiB, far more than any tree needs")]
    LogTooBig,
    #[error("a new log entry starts before the last one ended")]
    EntryOverlap,
    #[error("a log record of {part} bytes in an entry of {total}")]
    RecordTooLong { part: u64, total: u64 },
    #[error("a continued log record of {part} bytes, {remaining} expected")]
    ContinuedTooLong { part: u64, remaining: u64 },
    #[error("an unknown log record type {0}")]
    UnknownRecord(u8),
    #[error("the log ends inside an entry")]
    EndsInsideEntry,
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("an extent that is not a tuple")]
    ExtentNotATuple,
    #[error("an extent without `{0}`")]
    ExtentField(&'static str),
    #[error("an extent at `{0}`, not a sector number")]
    ExtentKey(String),
    #[error("a file of {len} bytes, longer than its volume ({limit} bytes)")]
    FileTooLong { len: u64, limit: u64 },
    #[error("an extent out of range")]
    ExtentOutOfRange,
    #[error("overlapping extents")]
    OverlappingExtents,
    #[error("an extent at sector {0} lies outside the volume")]
    ExtentOutside(u64),
    #[error("cannot read the image: {0}")]
    ReadImage(#[source] io::Error),
    #[error("cannot write: {0}")]
    Write(#[source] io::Error),
}

/// A volume as read.
#[derive(Debug, Clone)]
pub struct Volume {
    pub version: u64,
    pub uuid: [u8; 16],
    pub label: String,
    pub root: Tuple,
    /// Where the volume starts in its file, and how long it may be.
    pub base: u64,
    pub limit: u64,
}

fn read_at(file: &File, at: u64, len: u64) -> Result<Vec<u8>, ReadError> {
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, at).map_err(|source| ReadError::ReadAt { len, at, source })?;
    Ok(buf)
}

/// Parse an extension's header; returns the cursor after it, the length in sectors, and for
/// the first extension the UUID and label.
fn header(bytes: &[u8], first: bool) -> Result<(Cursor<'_>, u64, u64, [u8; 16], String), ReadError> {
    if bytes.get(..6) != Some(&MAGIC[..]) {
        return Err(ReadError::NoMagic);
    }
    let mut cur = Cursor { bytes, pos: 6 };
    let version = cur.varint()?;
    if version != VERSION {
        return Err(ReadError::Version { version });
    }
    let length = cur.varint()?;
    let mut uuid = [0u8; 16];
    let mut label = String::new();
    if first {
        uuid.copy_from_slice(cur.take(16)?);
        let rest = &bytes[cur.pos..];
        let end =
            rest.iter().take(LABEL_MAX + 1).position(|&b| b == 0).ok_or(ReadError::UnterminatedLabel)?;
        label = String::from_utf8_lossy(&rest[..end]).into_owned();
        cur.pos += end + 1;
    }
    Ok((cur, version, length, uuid, label))
}

/// Read the TFS volume at byte `base` of `file`, at most `limit` bytes long.
pub fn read_volume(file: &File, base: u64, limit: u64) -> Result<Volume, ReadError> {
    let sector0 = read_at(file, base, SECTOR)?;
    let (_, version, _, uuid, label) = header(&sector0, true)?;
    let mut decoder = Decoder::default();
    let mut staging: Vec<u8> = Vec::new();
    let mut remaining: u64 = 0;
    let mut seen = HashSet::new();
    let mut log_bytes = 0u64;
    let mut bytes = sector0;
    let mut first = true;
    'extensions: loop {
        let (mut cur, ..) = header(&bytes, first)?;
        first = false;
        loop {
            let frame = cur.u8().map_err(|_| ReadError::NoEndOfLog)?;
            match frame {
                END_OF_LOG => break 'extensions,
                END_OF_SEGMENT => {}
                LOG_EXTENSION_LINK => {
                    let start = cur.varint()?;
                    let len = cur.varint()?;
                    let at = start.checked_mul(SECTOR);
                    let size = len.checked_mul(SECTOR).filter(|&s| s > 0 && s <= MAX_EXTENSION_BYTES);
                    let (Some(at), Some(size)) = (at, size) else {
                        return Err(ReadError::BadLink { len, start });
                    };
                    if at.checked_add(size).is_none_or(|end| end > limit) {
                        return Err(ReadError::LinkOutside { start });
                    }
                    if !seen.insert(start) {
                        return Err(ReadError::LinkLoop { start });
                    }
                    log_bytes += size;
                    if log_bytes > MAX_LOG_BYTES {
                        return Err(ReadError::LogTooBig);
                    }
                    bytes = read_at(file, base + at, size)?;
                    continue 'extensions;
                }
                TUPLE_AVAILABLE => {
                    if remaining > 0 {
                        return Err(ReadError::EntryOverlap);
                    }
                    let total = cur.varint()?;
                    let part = cur.varint()?;
                    if part > total {
                        return Err(ReadError::RecordTooLong { part, total });
                    }
                    let data = cur.take(part)?;
                    if part == total {
                        decoder.entry(data)?;
                    } else {
                        staging = data.to_vec();
                        remaining = total - part;
                    }
                }
                TUPLE_EXTENDED => {
                    let part = cur.varint()?;
                    if part > remaining {
                        return Err(ReadError::ContinuedTooLong { part, remaining });
                    }
                    staging.extend_from_slice(cur.take(part)?);
                    remaining -= part;
                    if remaining == 0 {
                        decoder.entry(&staging)?;
                        staging.clear();
                    }
                }
                other => return Err(ReadError::UnknownRecord(other)),
            }
        }
    }
    if remaining > 0 {
        return Err(ReadError::EndsInsideEntry);
    }
    Ok(Volume { version, uuid, label, root: decoder.root()?, base, limit })
}

/// What a node of the tree is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File {
        len: u64,
        exec: bool,
    },
    Symlink(String),
    /// A tuple with none of `children`, `extents` or `linktarget`.
    Other,
}

pub fn kind(node: &Tuple) -> Kind {
    if let Some(target) = node.get("linktarget") {
        return Kind::Symlink(target.text().unwrap_or_default());
    }
    if node.contains_key("children") {
        return Kind::Dir;
    }
    if node.contains_key("extents") || node.contains_key("filelength") {
        let len = node.get("filelength").and_then(Value::as_u64).unwrap_or(0);
        return Kind::File { len, exec: node.contains_key("exec") };
    }
    Kind::Other
}

/// The first name in the tree that no file system path can hold: empty, `.`, `..`, or with
/// '/' or NUL (an extraction must refuse such an image rather than guess).
pub fn bad_name(t: &Tuple) -> Option<String> {
    let children = t.get("children").and_then(Value::as_tuple)?;
    for (name, v) in children {
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
            return Some(name.clone());
        }
        if let Some(bad) = v.as_tuple().filter(|n| kind(n) == Kind::Dir).and_then(bad_name) {
            return Some(bad);
        }
    }
    None
}

/// Every node under `t`, depth first in name order: (path from the root, node).
pub fn walk(t: &Tuple) -> Vec<(String, &Tuple)> {
    fn go<'a>(t: &'a Tuple, prefix: &str, out: &mut Vec<(String, &'a Tuple)>) {
        let Some(children) = t.get("children").and_then(Value::as_tuple) else { return };
        for (name, v) in children {
            if let Some(node) = v.as_tuple() {
                let path = format!("{prefix}/{name}");
                out.push((path.clone(), node));
                // Only a folder's children are in the tree: a symlink or file that also
                // carries `children` must not lead anywhere (an extraction would follow it).
                if kind(node) == Kind::Dir {
                    go(node, &path, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    go(t, "", &mut out);
    out
}

impl Volume {
    /// Copy a file node's content to `to`, cut at its `filelength`; ranges no extent covers
    /// read as zeros, as in Nanos.
    pub fn copy_file(&self, file: &File, node: &Tuple, to: &mut dyn Write) -> Result<u64, ReadError> {
        let len = node.get("filelength").and_then(Value::as_u64).unwrap_or(0);
        let mut extents: Vec<(u64, u64, u64)> = Vec::new();
        if let Some(ext) = node.get("extents").and_then(Value::as_tuple) {
            for (key, v) in ext {
                let e = v.as_tuple().ok_or(ReadError::ExtentNotATuple)?;
                let field =
                    |f: &'static str| e.get(f).and_then(Value::as_u64).ok_or(ReadError::ExtentField(f));
                let at: u64 = key.parse().map_err(|_| ReadError::ExtentKey(key.clone()))?;
                extents.push((at, field("offset")?, field("length")?));
            }
        }
        extents.sort_unstable();
        // Holes read as zeros, but a hostile length must not make the reader write forever. An
        // extent's place in the file is not bounded by anything, so the volume's size is the
        // bound: no file gvbuild or mkfs writes holds more than its volume.
        if len > self.limit {
            return Err(ReadError::FileTooLong { len, limit: self.limit });
        }
        let mut pos = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        for (at, offset, sectors) in extents {
            let start = at.checked_mul(SECTOR).ok_or(ReadError::ExtentOutOfRange)?;
            if start >= len {
                continue;
            }
            if start < pos {
                return Err(ReadError::OverlappingExtents);
            }
            write_zeros(to, start - pos)?;
            pos = start;
            let bytes = sectors.checked_mul(SECTOR).ok_or(ReadError::ExtentOutOfRange)?.min(len - start);
            let from = offset.checked_mul(SECTOR).ok_or(ReadError::ExtentOutOfRange)?;
            if from.checked_add(bytes).is_none_or(|end| end > self.limit) {
                return Err(ReadError::ExtentOutside(offset));
            }
            let mut done = 0;
            while done < bytes {
                let n = (bytes - done).min(buf.len() as u64) as usize;
                file.read_exact_at(&mut buf[..n], self.base + from + done).map_err(ReadError::ReadImage)?;
                to.write_all(&buf[..n]).map_err(ReadError::Write)?;
                done += n as u64;
            }
            pos += bytes;
        }
        write_zeros(to, len - pos)?;
        Ok(len)
    }
}

fn write_zeros(to: &mut dyn Write, mut n: u64) -> Result<(), ReadError> {
    let zeros = [0u8; 8192];
    while n > 0 {
        let k = n.min(zeros.len() as u64) as usize;
        to.write_all(&zeros[..k]).map_err(ReadError::Write)?;
        n -= k as u64;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::tfs::codec::Encoder;
    use crate::tfs::push_varint;

    /// A bare volume of three sectors whose log is the one entry `root`.
    fn volume_of(root: &Tuple) -> Vec<u8> {
        let mut entry = Vec::new();
        Encoder::default().tuple(&mut entry, root);
        let mut img = MAGIC.to_vec();
        push_varint(&mut img, VERSION);
        push_varint(&mut img, 1);
        img.extend_from_slice(&[0; 16]); // UUID
        img.extend_from_slice(&[0, LOG_EXTENSION_LINK, 1, 2, END_OF_LOG]); // label, link, end
        img.resize(SECTOR as usize, 0);
        img.extend_from_slice(MAGIC);
        push_varint(&mut img, VERSION);
        push_varint(&mut img, 2);
        img.push(TUPLE_AVAILABLE);
        push_varint(&mut img, entry.len() as u64);
        push_varint(&mut img, entry.len() as u64);
        img.extend_from_slice(&entry);
        img.push(END_OF_LOG);
        img.resize(3 * SECTOR as usize, 0);
        img
    }

    /// A file with one sector of data at file sector 2^40 and a length of 2^49 bytes: the
    /// length check counted the extent's place in the file as covered, so reading it wrote
    /// 512 TiB of zeros (the `image` fuzz target's timeout).
    #[test]
    fn a_sparse_file_longer_than_its_volume_is_refused() {
        let mut extent = Tuple::new();
        extent.insert("length".into(), Value::str("1"));
        extent.insert("offset".into(), Value::str("0"));
        let mut extents = Tuple::new();
        extents.insert((1u64 << 40).to_string(), Value::Tuple(extent));
        let mut f = Tuple::new();
        f.insert("extents".into(), Value::Tuple(extents));
        f.insert("filelength".into(), Value::str(&(1u64 << 49).to_string()));
        let mut children = Tuple::new();
        children.insert("f".into(), Value::Tuple(f));
        let mut root = Tuple::new();
        root.insert("children".into(), Value::Tuple(children));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse.img");
        std::fs::write(&path, volume_of(&root)).unwrap();
        let file = File::open(&path).unwrap();
        let vol = read_volume(&file, 0, 3 * SECTOR).unwrap();
        let (_, node) = walk(&vol.root).into_iter().next().unwrap();
        let err = vol.copy_file(&file, node, &mut std::io::sink()).unwrap_err();
        assert!(matches!(err, ReadError::FileTooLong { .. }), "{err}");
    }

    /// Files of holes, each as long as the volume: each file is within bounds, but an
    /// extraction would write the volume's size once per file.
    #[test]
    fn an_extraction_bigger_than_the_volume_is_refused() {
        let mut children = Tuple::new();
        for i in 0..4 {
            let mut f = Tuple::new();
            f.insert("extents".into(), Value::Tuple(Tuple::new()));
            f.insert("filelength".into(), Value::str(&(3 * SECTOR).to_string()));
            children.insert(format!("f{i}"), Value::Tuple(f));
        }
        let mut root = Tuple::new();
        root.insert("children".into(), Value::Tuple(children));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("holes.img");
        std::fs::write(&path, volume_of(&root)).unwrap();
        let err = crate::inspect::extract(&path, &dir.path().join("out")).unwrap_err();
        let err = err.to_string();
        assert!(err.contains("add up to 6144 bytes, more than its filesystem's 1536"), "{err}");
    }

    /// Random damage to the log of an image Nanos's mkfs made is an error or a (different)
    /// tree, never a panic, a hang or a read outside the volume.
    #[test]
    fn damaged_logs_never_panic() {
        let vector = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/nanos-vectors/b-tree-kinds/root.img");
        let good = std::fs::read(vector).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.img");
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..1500 {
            let mut bad = good.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % 1100) as usize;
                bad[at] = next() as u8;
            }
            std::fs::write(&path, &bad).unwrap();
            let f = File::open(&path).unwrap();
            if let Ok(vol) = read_volume(&f, 0, bad.len() as u64) {
                for (_, node) in walk(&vol.root) {
                    let _ = vol.copy_file(&f, node, &mut std::io::sink());
                }
            }
        }
    }
}
