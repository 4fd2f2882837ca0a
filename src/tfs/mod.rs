//! TFS, the Nanos filesystem, version 5: the format Nanos 0.1.51 reads, written and read here.
//!
//! # The format, as this module writes it
//!
//! A TFS volume is a log of tuples followed by file data, in 512-byte sectors.
//!
//! - **Sector 0**, the initial log extension: `NVMTFS`, varint version `5`, varint length `1`
//!   (sectors), the 16-byte UUID, the label and a NUL, then `LOG_EXTENSION_LINK` (5) with the
//!   varint start sector and length of the next extension, and `END_OF_LOG` (1).
//! - **Log extensions** of 1024 sectors from sector 1: `NVMTFS`, varint version, varint length,
//!   then records: `TUPLE_AVAILABLE` (2) with the varint length of the whole entry and of the part
//!   in this extension, then those bytes; `TUPLE_EXTENDED` (3) with the varint length of the next
//!   part, when an entry did not fit; `LOG_EXTENSION_LINK` to the next extension; `END_OF_LOG`.
//! - **File data** after the log area: each file in whole sectors, in extents of at most 32 MiB
//!   (Nanos's `MAX_EXTENT_SIZE`).
//!
//! A varint is big-endian 7-bit groups with 0x80 set on every byte but the last.
//!
//! An entry is an encoded tuple. Every value starts with a header byte: bit 7 immediate (1) or
//! reference (0), bits 6–4 the type (0 untyped buffer, 1 tuple, 2 vector, 3 integer, 4 string),
//! bit 3 "the length continues", bits 2–0 the length's top bits, then (when bit 3 is set) the
//! rest of the length as a varint. A tuple's length is its number of attributes; each attribute
//! is a symbol (an untyped-buffer header: immediate with its bytes, or a reference whose length
//! is the symbol's dictionary index) followed by its value. The dictionary numbers every
//! immediate tuple, vector and symbol from 1 in the order the log meets them; the volume's root
//! is number 1. A reference tuple (`imm` 0) is followed by the varint index of the tuple it adds
//! attributes to: that is how Nanos's own mkfs records a file's extents after the tree. An empty
//! value (a zero-length buffer or string) deletes the attribute; a one-byte buffer holding NUL
//! is Nanos's null value. An integer's length is its sign, its magnitude a varint.
//!
//! The tree is tuples: a folder has `children` (a tuple of name → node), a symlink
//! `linktarget`, a file `extents` (file sector → `offset`, `length`, `allocated`, in sectors)
//! and `filelength` (bytes). An executable is marked by `exec: t`; TFS stores no modes, owners
//! or times. The root tuple also carries the program's configuration: `program`, `arguments`,
//! `environment`, `mounts`, `klibs` and the manifest's passthrough keys.
//!
//! # Determinism
//!
//! The writer sorts every tuple's attributes and every folder's children by their bytes, places
//! file data in that order, pads with zeros, writes no times, and derives the UUID from the log
//! and the content: the same tree gives the same bytes on any machine, in any folder.
//!
//! Learned from Nanos's `src/fs/tlog.c`, `src/fs/tfs.c` and `src/runtime/tuple.c` (0.1.51) and
//! checked against images its mkfs made (`tests/data/nanos-vectors`).

mod codec;
mod read;
mod write;

use std::collections::BTreeMap;

pub use codec::CodecError;
pub use read::{bad_name, kind, read_volume, walk, Kind, ReadError, Volume};
pub use write::{write_volume, FsNode, VolumeSize, WriteError, Written};

pub const SECTOR: u64 = 512;
/// The largest volume written: every volume goes into one partition, and an MBR partition
/// table describes at most 2^32 sectors.
pub const MAX_SIZE: u64 = (1 << 32) * SECTOR;
pub const MAGIC: &[u8; 6] = b"NVMTFS";
pub const VERSION: u64 = 5;
/// One log extension: 512 KiB.
pub const LOG_EXTENSION_SECTORS: u64 = 1024;
/// Nanos's `MAX_EXTENT_SIZE` (8192 pages of 4 KiB), in sectors.
pub const MAX_EXTENT_SECTORS: u64 = 32 * 1024 * 1024 / SECTOR;
/// Nanos's `VOLUME_LABEL_MAX_LEN` less the NUL.
pub const LABEL_MAX: usize = 31;

pub(crate) const END_OF_LOG: u8 = 1;
pub(crate) const TUPLE_AVAILABLE: u8 = 2;
pub(crate) const TUPLE_EXTENDED: u8 = 3;
pub(crate) const END_OF_SEGMENT: u8 = 4;
pub(crate) const LOG_EXTENSION_LINK: u8 = 5;

/// A value in a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A typed string (its bytes; Nanos does not require UTF-8).
    Str(Vec<u8>),
    Int(i64),
    Tuple(Tuple),
    Vector(Vec<Value>),
    /// An untyped buffer (older writers); `Buffer(vec![])` never appears: an empty value deletes.
    Buffer(Vec<u8>),
    /// Nanos's null value: present, with no content.
    Null,
}

/// A tuple: symbol → value, in byte order of the symbols.
pub type Tuple = BTreeMap<String, Value>;

impl Value {
    pub fn str(s: &str) -> Value {
        Value::Str(s.as_bytes().to_vec())
    }

    pub fn as_tuple(&self) -> Option<&Tuple> {
        match self {
            Value::Tuple(t) => Some(t),
            _ => None,
        }
    }

    /// The value as text: a string or untyped buffer (lossy), or an integer.
    pub fn text(&self) -> Option<String> {
        match self {
            Value::Str(b) | Value::Buffer(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::Int(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// As an unsigned number: an integer, or a string of digits (Nanos accepts both).
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Int(n) => u64::try_from(*n).ok(),
            Value::Str(b) | Value::Buffer(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }
}

/// Append `v` as a varint.
pub(crate) fn push_varint(out: &mut Vec<u8>, v: u64) {
    let mut groups = [0u8; 10];
    let mut n = 0;
    let mut x = v;
    loop {
        groups[n] = (x & 0x7f) as u8;
        n += 1;
        x >>= 7;
        if x == 0 {
            break;
        }
    }
    for i in (0..n).rev() {
        out.push(groups[i] | if i > 0 { 0x80 } else { 0 });
    }
}

/// Print a tuple the way Nanos's `dump` does, one attribute a line, sorted, indented.
pub fn render(t: &Tuple) -> String {
    let mut out = String::new();
    render_tuple(t, 0, &mut out);
    out
}

fn render_tuple(t: &Tuple, depth: usize, out: &mut String) {
    for (k, v) in t {
        out.push_str(&"  ".repeat(depth));
        out.push_str(k);
        out.push(':');
        render_value(v, depth, out);
    }
}

fn render_value(v: &Value, depth: usize, out: &mut String) {
    match v {
        Value::Tuple(t) if t.is_empty() => out.push_str("()\n"),
        Value::Tuple(t) => {
            out.push('\n');
            render_tuple(t, depth + 1, out);
        }
        Value::Vector(items) => {
            let words: Vec<String> = items.iter().map(quote).collect();
            out.push_str(&format!("[{}]\n", words.join(" ")));
        }
        Value::Null => out.push_str("<null>\n"),
        other => {
            out.push_str(&quote(other));
            out.push('\n');
        }
    }
}

fn quote(v: &Value) -> String {
    match v.text() {
        Some(s) if s.is_empty() || s.contains([' ', '"', '\\', '\n']) => format!("{s:?}"),
        Some(s) => s,
        None => "(...)".into(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// ops's own TFS writer stores numbers as strings ("3073"); such an image reads the same.
    #[test]
    fn numbers_stored_as_strings_read_back() {
        let mut extent = Tuple::new();
        extent.insert("offset".into(), Value::str("1025"));
        extent.insert("length".into(), Value::str("1"));
        extent.insert("allocated".into(), Value::str("1"));
        let mut extents = Tuple::new();
        extents.insert("0".into(), Value::Tuple(extent));
        let mut file = Tuple::new();
        file.insert("extents".into(), Value::Tuple(extents));
        file.insert("filelength".into(), Value::str("5"));
        let mut children = Tuple::new();
        children.insert("hello".into(), Value::Tuple(file));
        let mut root = Tuple::new();
        root.insert("children".into(), Value::Tuple(children));
        let mut entry = Vec::new();
        codec::Encoder::default().tuple(&mut entry, &root);
        let mut img = vec![0u8; 1026 * 512];
        let mut first = MAGIC.to_vec();
        first.extend_from_slice(&[5, 1]);
        first.extend_from_slice(&[7; 16]);
        first.extend_from_slice(&[0, LOG_EXTENSION_LINK, 1, 0x88, 0, END_OF_LOG]);
        img[..first.len()].copy_from_slice(&first);
        let ext = &write::log_extensions(&entry)[0];
        img[512..512 + ext.len()].copy_from_slice(ext);
        img[1025 * 512..1025 * 512 + 5].copy_from_slice(b"hello");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ops.img");
        std::fs::write(&path, &img).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let vol = read_volume(&f, 0, img.len() as u64).unwrap();
        let node = vol.root["children"].as_tuple().unwrap()["hello"].as_tuple().unwrap();
        assert_eq!(kind(node), Kind::File { len: 5, exec: false });
        let mut bytes = Vec::new();
        vol.copy_file(&f, node, &mut bytes).unwrap();
        assert_eq!(bytes, b"hello");
    }

    /// A log too long for one extension continues in the next (TUPLE_EXTENDED after a link),
    /// and the reader puts it back together.
    #[test]
    fn a_log_over_several_extensions_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.img");
        let out = std::fs::File::create(&path).unwrap();
        let mut tree = BTreeMap::new();
        for i in 0..30_000 {
            let data = if i % 1000 == 0 { vec![i as u8; 700] } else { Vec::new() };
            tree.insert(format!("a-rather-long-file-name-{i:06}"), FsNode::Bytes { data, exec: i % 3 == 0 });
        }
        let mut attrs = Tuple::new();
        attrs.insert("program".into(), Value::str("/x"));
        let w = write_volume(&out, 4096, &tree, &attrs, "big", VolumeSize::Auto).unwrap();
        out.set_len(4096 + w.size).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let vol = read_volume(&f, 4096, w.size).unwrap();
        assert_eq!(vol.label, "big");
        assert_eq!(vol.uuid, w.uuid);
        let children = vol.root["children"].as_tuple().unwrap();
        assert_eq!(children.len(), 30_000);
        let node = children["a-rather-long-file-name-002000"].as_tuple().unwrap();
        assert_eq!(kind(node), Kind::File { len: 700, exec: false });
        let mut bytes = Vec::new();
        vol.copy_file(&f, node, &mut bytes).unwrap();
        assert_eq!(bytes, vec![2000u32 as u8; 700]);
        // The data went after more than one log extension and the two spare ones.
        let offset = node["extents"].as_tuple().unwrap()["0"].as_tuple().unwrap()["offset"].as_u64().unwrap();
        assert!(offset > 1 + 3 * LOG_EXTENSION_SECTORS, "data at sector {offset}");
    }

    #[test]
    fn varints_are_big_endian_groups() {
        let cases: [(u64, &[u8]); 5] =
            [(0, &[0]), (127, &[0x7f]), (1024, &[0x88, 0x00]), (3073, &[0x98, 0x01]), (219, &[0x81, 0x5b])];
        for (v, bytes) in cases {
            let mut out = Vec::new();
            push_varint(&mut out, v);
            assert_eq!(out, bytes, "{v}");
        }
    }
}
