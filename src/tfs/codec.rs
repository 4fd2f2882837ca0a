//! The tuple encoding of the TFS log (see the module docs of `tfs` for the bytes).

use std::collections::{BTreeMap, HashMap};

use super::{push_varint, Tuple, Value};

const TYPE_BUFFER: u8 = 0;
const TYPE_TUPLE: u8 = 1;
const TYPE_VECTOR: u8 = 2;
const TYPE_INTEGER: u8 = 3;
const TYPE_STRING: u8 = 4;

/// Deeper nesting than this in a log entry is refused (a hostile image must not overflow the
/// reader's stack); real trees are a few dozen levels deep.
const MAX_DEPTH: usize = 1000;

/// Why a log entry could not be decoded: the log is damaged, or was not written by Nanos or
/// gvbuild.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("the log ends inside a record")]
    EndsInsideRecord,
    #[error("a value of {len} bytes runs past the end of its log record")]
    PastRecordEnd { len: u64 },
    #[error("a varint longer than 10 bytes")]
    LongVarint,
    #[error("a length longer than 10 bytes")]
    LongLength,
    #[error("a log entry that is not a tuple")]
    EntryNotATuple,
    #[error("a log entry of {len} bytes holds {used} bytes of tuple")]
    EntryLength { len: usize, used: usize },
    #[error("a reference to dictionary entry {index}, which does not exist")]
    NoSuchEntry { index: u64 },
    #[error("tuples nested more than {} deep", MAX_DEPTH)]
    TooDeep,
    #[error("dictionary entry {index} is not a {expected}")]
    WrongEntry { index: u64, expected: &'static str },
    #[error("a name that is not UTF-8: {bytes:?}")]
    NameNotUtf8 { bytes: Vec<u8> },
    #[error("a vector too long")]
    LongVector,
    #[error("a reference integer")]
    ReferenceInteger,
    #[error("an integer out of range: {magnitude}")]
    IntegerOutOfRange { magnitude: u64 },
    #[error("a string that refers to dictionary entry {index}")]
    StringReference { index: u64 },
    #[error("a value of unknown type {ty}")]
    UnknownType { ty: u8 },
    #[error("the log holds no root tuple")]
    NoRoot,
    #[error("a tuple that appears twice in the tree (a loop or a shared subtree)")]
    SharedTuple,
    #[error("a vector that appears twice in the tree")]
    SharedVector,
}

/// Encodes log entries, numbering symbols, tuples and vectors as the log's dictionary does.
#[derive(Default)]
pub(crate) struct Encoder {
    symbols: HashMap<String, u64>,
    count: u64,
}

fn push_header(out: &mut Vec<u8>, immediate: bool, ty: u8, len: u64) {
    let bits = 64 - len.leading_zeros();
    let words = if bits > 3 { (bits - 3).div_ceil(7) } else { 0 };
    let top = if words > 0 { len >> (words * 7) } else { len };
    out.push(((immediate as u8) << 7) | (ty << 4) | (((words > 0) as u8) << 3) | top as u8);
    for i in (0..words).rev() {
        out.push(((len >> (i * 7)) & 0x7f) as u8 | if i > 0 { 0x80 } else { 0 });
    }
}

impl Encoder {
    /// Append `t` as one immediate tuple, every nested tuple immediate too.
    pub fn tuple(&mut self, out: &mut Vec<u8>, t: &Tuple) {
        push_header(out, true, TYPE_TUPLE, t.len() as u64);
        self.count += 1;
        for (k, v) in t {
            self.symbol(out, k);
            self.value(out, v);
        }
    }

    fn symbol(&mut self, out: &mut Vec<u8>, s: &str) {
        if let Some(&index) = self.symbols.get(s) {
            push_header(out, false, TYPE_BUFFER, index);
        } else {
            push_header(out, true, TYPE_BUFFER, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
            self.count += 1;
            self.symbols.insert(s.to_string(), self.count);
        }
    }

    fn value(&mut self, out: &mut Vec<u8>, v: &Value) {
        match v {
            Value::Tuple(t) => self.tuple(out, t),
            Value::Vector(items) => {
                push_header(out, true, TYPE_VECTOR, items.len() as u64);
                self.count += 1;
                for item in items {
                    self.value(out, item);
                }
            }
            Value::Int(n) => {
                push_header(out, true, TYPE_INTEGER, (*n < 0) as u64);
                push_varint(out, n.unsigned_abs());
            }
            Value::Str(b) => {
                push_header(out, true, TYPE_STRING, b.len() as u64);
                out.extend_from_slice(b);
            }
            Value::Buffer(b) => {
                push_header(out, true, TYPE_BUFFER, b.len() as u64);
                out.extend_from_slice(b);
            }
            Value::Null => {
                push_header(out, true, TYPE_BUFFER, 1);
                out.push(0);
            }
        }
    }
}

/// A value as decoded, tuples and vectors by their place in the arena, because later entries
/// add attributes to tuples decoded earlier.
#[derive(Debug, Clone)]
enum Decoded {
    Str(Vec<u8>),
    Int(i64),
    Tuple(usize),
    Vector(usize),
    Buffer(Vec<u8>),
    Null,
}

/// Which tuples and vectors have their place in the tree being built.
struct Placed {
    tuples: Vec<bool>,
    vectors: Vec<bool>,
}

#[derive(Debug, Clone)]
enum Slot {
    Symbol(String),
    Tuple(usize),
    Vector(usize),
}

/// Decodes a log's entries in order, keeping the dictionary between them.
#[derive(Default)]
pub(crate) struct Decoder {
    dictionary: Vec<Slot>,
    tuples: Vec<BTreeMap<String, Decoded>>,
    vectors: Vec<Vec<Decoded>>,
}

pub(crate) struct Cursor<'a> {
    pub bytes: &'a [u8],
    pub pos: usize,
}

impl Cursor<'_> {
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        let b = *self.bytes.get(self.pos).ok_or(CodecError::EndsInsideRecord)?;
        self.pos += 1;
        Ok(b)
    }

    pub fn take(&mut self, n: u64) -> Result<&[u8], CodecError> {
        let end = usize::try_from(n).ok().and_then(|n| self.pos.checked_add(n));
        match end.and_then(|end| self.bytes.get(self.pos..end)) {
            Some(b) => {
                self.pos += b.len();
                Ok(b)
            }
            None => Err(CodecError::PastRecordEnd { len: n }),
        }
    }

    pub fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v: u64 = 0;
        for _ in 0..10 {
            let b = self.u8()?;
            v = (v << 7) | u64::from(b & 0x7f);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::LongVarint)
    }

    fn header(&mut self) -> Result<(bool, u8, u64), CodecError> {
        let a = self.u8()?;
        let mut len = u64::from(a & 0x7);
        if a & 0x8 != 0 {
            for i in 0.. {
                if i == 10 {
                    return Err(CodecError::LongLength);
                }
                let b = self.u8()?;
                len = (len << 7) | u64::from(b & 0x7f);
                if b & 0x80 == 0 {
                    break;
                }
            }
        }
        Ok((a & 0x80 != 0, (a >> 4) & 0x7, len))
    }
}

impl Decoder {
    /// Decode one log entry (it must be a tuple, as Nanos requires).
    pub fn entry(&mut self, bytes: &[u8]) -> Result<(), CodecError> {
        let mut cur = Cursor { bytes, pos: 0 };
        match self.value(&mut cur, 0)? {
            Some(Decoded::Tuple(_)) => {}
            _ => return Err(CodecError::EntryNotATuple),
        }
        if cur.pos != bytes.len() {
            return Err(CodecError::EntryLength { len: bytes.len(), used: cur.pos });
        }
        Ok(())
    }

    fn slot(&self, index: u64) -> Result<&Slot, CodecError> {
        usize::try_from(index)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| self.dictionary.get(i))
            .ok_or(CodecError::NoSuchEntry { index })
    }

    fn value(&mut self, cur: &mut Cursor, depth: usize) -> Result<Option<Decoded>, CodecError> {
        if depth > MAX_DEPTH {
            return Err(CodecError::TooDeep);
        }
        let (immediate, ty, len) = cur.header()?;
        match ty {
            TYPE_TUPLE => {
                let id = if immediate {
                    self.tuples.push(BTreeMap::new());
                    let id = self.tuples.len() - 1;
                    self.dictionary.push(Slot::Tuple(id));
                    id
                } else {
                    let index = cur.varint()?;
                    match self.slot(index)? {
                        Slot::Tuple(id) => *id,
                        _ => return Err(CodecError::WrongEntry { index, expected: "tuple" }),
                    }
                };
                for _ in 0..len {
                    let (imm, _, nlen) = cur.header()?;
                    let name = if imm {
                        let bytes = cur.take(nlen)?;
                        let name = String::from_utf8(bytes.to_vec())
                            .map_err(|_| CodecError::NameNotUtf8 { bytes: bytes.to_vec() })?;
                        self.dictionary.push(Slot::Symbol(name.clone()));
                        name
                    } else {
                        match self.slot(nlen)? {
                            Slot::Symbol(s) => s.clone(),
                            _ => return Err(CodecError::WrongEntry { index: nlen, expected: "symbol" }),
                        }
                    };
                    let v = self.value(cur, depth + 1)?;
                    let t = &mut self.tuples[id];
                    match v {
                        Some(v) => t.insert(name, v),
                        None => t.remove(&name),
                    };
                }
                Ok(Some(Decoded::Tuple(id)))
            }
            TYPE_VECTOR => {
                let id = if immediate {
                    self.vectors.push(Vec::new());
                    let id = self.vectors.len() - 1;
                    self.dictionary.push(Slot::Vector(id));
                    id
                } else {
                    let index = cur.varint()?;
                    match self.slot(index)? {
                        Slot::Vector(id) => *id,
                        _ => return Err(CodecError::WrongEntry { index, expected: "vector" }),
                    }
                };
                for i in 0..len {
                    let v = self.value(cur, depth + 1)?.unwrap_or(Decoded::Null);
                    let items = &mut self.vectors[id];
                    let i = usize::try_from(i).map_err(|_| CodecError::LongVector)?;
                    if i < items.len() {
                        items[i] = v;
                    } else {
                        items.push(v);
                    }
                }
                Ok(Some(Decoded::Vector(id)))
            }
            TYPE_INTEGER => {
                if !immediate {
                    return Err(CodecError::ReferenceInteger);
                }
                let magnitude = cur.varint()?;
                let n = i64::try_from(magnitude).map_err(|_| CodecError::IntegerOutOfRange { magnitude })?;
                Ok(Some(Decoded::Int(if len > 0 { -n } else { n })))
            }
            TYPE_STRING | TYPE_BUFFER => {
                if len == 0 {
                    return Ok(None);
                }
                if !immediate {
                    return match self.slot(len)? {
                        Slot::Symbol(s) => Ok(Some(Decoded::Str(s.clone().into_bytes()))),
                        _ => Err(CodecError::StringReference { index: len }),
                    };
                }
                let bytes = cur.take(len)?.to_vec();
                Ok(Some(match ty {
                    TYPE_STRING => Decoded::Str(bytes),
                    _ if bytes == [0] => Decoded::Null,
                    _ => Decoded::Buffer(bytes),
                }))
            }
            ty => Err(CodecError::UnknownType { ty }),
        }
    }

    /// The volume's root tuple (dictionary entry 1), as a tree.
    pub fn root(&self) -> Result<Tuple, CodecError> {
        let id = match self.dictionary.first() {
            Some(Slot::Tuple(id)) => *id,
            _ => return Err(CodecError::NoRoot),
        };
        // A tree: each tuple and vector has one place in it. Later entries reach back to add
        // attributes, but a second place for the same tuple (a loop, or a shared subtree that
        // would multiply on the way out) is refused, as is nesting deeper than any real tree.
        let mut placed =
            Placed { tuples: vec![false; self.tuples.len()], vectors: vec![false; self.vectors.len()] };
        self.tree(id, 0, &mut placed)
    }

    fn tree(&self, id: usize, depth: usize, placed: &mut Placed) -> Result<Tuple, CodecError> {
        if depth > MAX_DEPTH {
            return Err(CodecError::TooDeep);
        }
        if std::mem::replace(&mut placed.tuples[id], true) {
            return Err(CodecError::SharedTuple);
        }
        let mut out = Tuple::new();
        for (k, v) in &self.tuples[id] {
            out.insert(k.clone(), self.materialise(v, depth, placed)?);
        }
        Ok(out)
    }

    fn materialise(&self, v: &Decoded, depth: usize, placed: &mut Placed) -> Result<Value, CodecError> {
        Ok(match v {
            Decoded::Str(b) => Value::Str(b.clone()),
            Decoded::Int(n) => Value::Int(*n),
            Decoded::Buffer(b) => Value::Buffer(b.clone()),
            Decoded::Null => Value::Null,
            Decoded::Tuple(id) => Value::Tuple(self.tree(*id, depth + 1, placed)?),
            Decoded::Vector(id) => {
                if std::mem::replace(&mut placed.vectors[*id], true) {
                    return Err(CodecError::SharedVector);
                }
                let mut items = Vec::new();
                for item in &self.vectors[*id] {
                    items.push(self.materialise(item, depth + 1, placed)?);
                }
                Value::Vector(items)
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn round_trip(t: &Tuple) -> Tuple {
        let mut bytes = Vec::new();
        Encoder::default().tuple(&mut bytes, t);
        let mut d = Decoder::default();
        d.entry(&bytes).unwrap();
        d.root().unwrap()
    }

    #[test]
    fn headers_match_nanos_bytes() {
        // Bytes seen in images Nanos's mkfs wrote: a tuple of 4, a symbol of 8, a string of 11,
        // a reference to symbol 21, a tuple of 8, an integer; then a string of 1000.
        let mut out = Vec::new();
        push_header(&mut out, true, TYPE_TUPLE, 4);
        push_header(&mut out, true, TYPE_BUFFER, 8);
        push_header(&mut out, true, TYPE_STRING, 11);
        push_header(&mut out, false, TYPE_BUFFER, 21);
        push_header(&mut out, true, TYPE_TUPLE, 8);
        push_header(&mut out, true, TYPE_INTEGER, 0);
        push_header(&mut out, true, TYPE_STRING, 1000);
        assert_eq!(out, [0x94, 0x88, 0x08, 0xc8, 0x0b, 0x08, 0x15, 0x98, 0x08, 0xb0, 0xcf, 0x68]);
    }

    #[test]
    fn values_round_trip_and_symbols_are_shared() {
        let mut inner = Tuple::new();
        inner.insert("offset".into(), Value::Int(3073));
        inner.insert("neg".into(), Value::Int(-5));
        let mut t = Tuple::new();
        t.insert("a".into(), Value::Tuple(inner.clone()));
        t.insert("b".into(), Value::Tuple(inner));
        t.insert("v".into(), Value::Vector(vec![Value::str("x"), Value::str("two words")]));
        t.insert("n".into(), Value::Null);
        t.insert("e".into(), Value::Tuple(Tuple::new()));
        t.insert("long".into(), Value::str(&"z".repeat(5000)));
        assert_eq!(round_trip(&t), t);
    }

    /// Entries that each add a child to the tuple the previous entry made: a chain far deeper
    /// than any tree, built across entries, must be an error, not a stack overflow.
    #[test]
    fn a_deep_chain_across_entries_is_refused() {
        let mut d = Decoder::default();
        // Entry 1: the root (index 1) with `a` (index 2) -> an empty tuple (index 3).
        d.entry(&[0x91, 0x81, b'a', 0x90]).unwrap();
        let mut last = 3u64;
        for _ in 0..200_000 {
            // A reference to tuple `last` adding `a` (symbol 2) -> a new empty tuple.
            let mut e = vec![0x11];
            push_varint(&mut e, last);
            e.extend_from_slice(&[0x02, 0x90]);
            d.entry(&e).unwrap();
            last = d.dictionary.len() as u64;
        }
        assert_eq!(d.root().unwrap_err(), CodecError::TooDeep);
    }

    /// The same tuple placed under two names, many times over, would expand exponentially:
    /// a tuple may have only one place in the tree.
    #[test]
    fn a_shared_subtree_is_refused() {
        let mut d = Decoder::default();
        // Root (1) with `a` (2) -> tuple 3; then root gets `b` (5) -> a reference to tuple 3.
        d.entry(&[0x91, 0x81, b'a', 0x90]).unwrap();
        d.entry(&[0x11, 0x01, 0x81, b'b', 0x10, 0x03]).unwrap();
        assert_eq!(d.root().unwrap_err(), CodecError::SharedTuple);
    }

    #[test]
    fn a_hostile_entry_is_an_error_not_a_panic() {
        for bytes in [&[0x11u8, 0x09][..], &[0x94], &[0x91, 0x85, b'a'], &[0xf0], &[0x88, 0xff, 0xff]] {
            assert!(Decoder::default().entry(bytes).is_err(), "{bytes:?}");
        }
    }
}
