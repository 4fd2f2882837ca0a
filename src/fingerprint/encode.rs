//! The byte format that key parts are hashed in, and the sealed format of the state files.
//!
//! # Key bytes
//!
//! A key is blake3 of a domain prefix (`gvbuild key\0`, `gvbuild full key\0`, ...) followed by
//! its parts written by [`KeyWriter`]. The format is ours, written out here so that no library
//! upgrade can change a key:
//!
//! - an integer: its 8 little-endian bytes (u32 and bool widen to u64);
//! - a byte string: its length as an integer, then the bytes;
//! - an optional value: `0` for none, else `1` and the value;
//! - a list or a map: its length as an integer, then each item (map entries as key, value, in
//!   the map's sorted order);
//! - a struct: its fields in declaration order, each preceded by its name as a byte string, so
//!   that two adjacent fields can never trade bytes.
//!
//! Every value is length-prefixed, so no two different values write the same bytes.
//! `fingerprint::tests::key_format_is_pinned` pins the hex of one key.
//!
//! # Sealed state files
//!
//! `.gvbuild/state.bin`, `stat.bin`, `graph.bin` and `explain.bin` are postcard (a documented,
//! stable serde format) behind a 48-byte header: an 8-byte magic naming the file kind, a u32
//! format version, a u32 payload length, and the blake3 of the payload. A file that is
//! truncated, flipped, of another kind or version reads as absent, so everything it would have
//! spared is checked again; it is never taken as "fresh".

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Writes key parts in the format above; [`KeyWriter::finish`] is their blake3.
pub struct KeyWriter {
    /// The bytes so far, hashed once by [`KeyWriter::finish`]: one blake3 over a buffer costs a
    /// fraction of the many small updates a key is made of (the digest is the same).
    buf: Vec<u8>,
}

impl KeyWriter {
    /// A writer whose output starts with `domain` (for example `b"gvbuild key\0"`).
    pub fn new(domain: &[u8]) -> KeyWriter {
        let mut buf = Vec::with_capacity(1024);
        buf.extend_from_slice(domain);
        KeyWriter { buf }
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u64(v as u64)
    }

    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u64(b.len() as u64);
        self.buf.extend_from_slice(b);
        self
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    /// A struct field's name, written before its value.
    pub fn field(&mut self, name: &str) -> &mut Self {
        self.str(name)
    }

    pub fn len(&mut self, n: usize) -> &mut Self {
        self.u64(n as u64)
    }

    pub fn opt_str(&mut self, v: Option<&str>) -> &mut Self {
        match v {
            None => self.u64(0),
            Some(s) => self.u64(1).str(s),
        }
    }

    pub fn finish(&self) -> [u8; 32] {
        *blake3::hash(&self.buf).as_bytes()
    }
}

/// The header's size: magic, version, length, blake3.
const HEADER: usize = 8 + 4 + 4 + 32;

/// Serialize `value` as a sealed file of kind `magic` and `version` (see the module docs).
pub fn seal<T: Serialize + ?Sized>(magic: &[u8; 8], version: u32, value: &T) -> std::io::Result<Vec<u8>> {
    let payload = postcard::to_stdvec(value).map_err(std::io::Error::other)?;
    let len = u32::try_from(payload.len()).map_err(|_| std::io::Error::other("state file over 4 GiB"))?;
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(blake3::hash(&payload).as_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Read back what [`seal`] wrote; `None` for anything else (wrong kind or version, truncated,
/// flipped or trailing bytes, a payload that does not decode).
pub fn unseal<T: DeserializeOwned>(magic: &[u8; 8], version: u32, bytes: &[u8]) -> Option<T> {
    let header = bytes.get(..HEADER)?;
    if &header[..8] != magic || header[8..12] != version.to_le_bytes() {
        return None;
    }
    let len = u32::from_le_bytes([header[12], header[13], header[14], header[15]]) as usize;
    let payload = &bytes[HEADER..];
    if payload.len() != len || blake3::hash(payload).as_bytes() != &header[16..48] {
        return None;
    }
    postcard::from_bytes(payload).ok()
}

/// Most bytes [`exact_vec`] reserves up front for one list (64 MiB); a longer list grows as it is
/// read, so a damaged length can never make it allocate more than this before failing.
const MAX_RESERVE_BYTES: usize = 64 << 20;

/// `#[serde(deserialize_with = "exact_vec")]` for a list read back from a sealed file (see the
/// module docs; the state, the stat cache and the parse cache's targets): reserves the length
/// postcard wrote before reading the items, where serde's own `Vec` reserves at most 1 MiB and
/// then doubles (a 10,000-target state held 16,384 slots, 64% of them empty, at its peak).
/// The reservation is capped at [`MAX_RESERVE_BYTES`]; errors are the deserializer's.
pub fn exact_vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct V<T>(std::marker::PhantomData<T>);
    impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let cap = seq.size_hint().unwrap_or(0).min(MAX_RESERVE_BYTES / std::mem::size_of::<T>().max(1));
            let mut out = Vec::with_capacity(cap);
            while let Some(item) = seq.next_element()? {
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V(std::marker::PhantomData))
}

/// Read and unseal a state file; absent, unreadable or damaged files give `None`.
pub fn read_sealed<T: DeserializeOwned>(path: &Path, magic: &[u8; 8], version: u32) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    unseal(magic, version, &bytes)
}

/// Seal `value` and write it atomically to `path`.
pub fn write_sealed<T: Serialize + ?Sized>(
    path: &Path,
    magic: &[u8; 8],
    version: u32,
    value: &T,
) -> std::io::Result<()> {
    let bytes = seal(magic, version, value)?;
    crate::fsutil::write_atomic(path, &bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn sealed_round_trip_and_damage() {
        let v: Vec<(String, u64)> = vec![("a".into(), 1), ("b".into(), 2)];
        let bytes = seal(b"GVTEST01", 3, &v).unwrap();
        assert_eq!(unseal::<Vec<(String, u64)>>(b"GVTEST01", 3, &bytes), Some(v));
        assert!(unseal::<Vec<(String, u64)>>(b"GVTEST01", 4, &bytes).is_none());
        assert!(unseal::<Vec<(String, u64)>>(b"GVTEST02", 3, &bytes).is_none());
        for cut in 0..bytes.len() {
            assert!(unseal::<Vec<(String, u64)>>(b"GVTEST01", 3, &bytes[..cut]).is_none());
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(unseal::<Vec<(String, u64)>>(b"GVTEST01", 3, &b).is_none(), "flip at {i}");
        }
    }

    #[test]
    fn adjacent_strings_cannot_trade_bytes() {
        let a = KeyWriter::new(b"t").str("ab").str("c").finish();
        let b = KeyWriter::new(b"t").str("a").str("bc").finish();
        assert_ne!(a, b);
    }
}
