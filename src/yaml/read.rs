//! Reading gevulot.yaml: YAML events straight into the raw types, every mistake in one pass.
//!
//! [`super::events`] turns the text into YAML events (granit-parser's grammar, aliases
//! replayed, a budget kept). [`FromYaml`] reads them into the raw types (`crate::config::raw`'s,
//! and each step kind's `Raw*`), one field at a time, each value with its span. A field of the
//! wrong type, an unknown key or a missing one is reported in gevulot.yaml's terms ("`outputs`
//! of target `c` is a list of paths", with "write `[out/c]`"), the field is left out, and
//! reading goes on with the next one; only a YAML syntax error or a breach of the budget stops
//! it. A valid file and a broken one are read by the same code, in one pass.
//!
//! A value of the wrong type is gathered into a [`Node`] tree, so that the message can say what
//! it is and the help can quote it; nothing else builds a tree.
//!
//! **Merge keys.** `<<: *base` (or `<<: [*a, *b]`, or an inline map) merges maps into the map
//! it is written in, as YAML 1.1's merge key says: a key the map gives itself wins, then the
//! merged maps in the order written. The merged entries are read after the map's own, so a map
//! read into an [`IndexMap`] holds its own keys first.
//!
//! **Damage.** A struct in which something was reported is marked `damaged`. What it lacks may
//! be exactly what the user wrote wrongly, so the validator skips the checks that look at such
//! a struct as a whole ("no step and no deps", "no pinned hash"): they would be follow-on
//! errors. Damage rises through struct fields and lists to the nearest map entry that is itself
//! a struct: a broken `fetch.extract` damages the `fetch` and its target, never the whole file.

use std::borrow::Cow;
use std::rc::Rc;

use indexmap::IndexMap;
use rustc_hash::FxHashSet;

use super::error::ConfigError;
use super::events::{Ev, Events, Located, Stop, SyntaxKind, MAX_DEPTH};
use super::Spanned;
use crate::diag::{suggest, Source, Span};

/// One YAML value, gathered only to describe a value of the wrong type.
#[derive(Debug)]
pub enum Node {
    Null,
    Bool(bool),
    Int(i128),
    Float,
    Str(String),
    Seq(Vec<Spanned<Node>>),
    /// Entries in the order written.
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl Node {
    /// A scalar given its type as YAML's core schema does for plain text (booleans also as
    /// YAML 1.1 spells them, `yes` and `off`, as serde-saphyr read them before): null, boolean,
    /// whole number, other number, else a string.
    fn scalar(text: &str, plain: bool) -> Node {
        if !plain {
            return Node::Str(text.to_string());
        }
        if is_null(text) {
            return Node::Null;
        }
        if let Some(b) = parse_bool(text) {
            return Node::Bool(b);
        }
        if let Some(n) = parse_int(text) {
            return Node::Int(n);
        }
        if is_float(text) {
            return Node::Float;
        }
        Node::Str(text.to_string())
    }
}

/// `~`, `null` (in three spellings) or nothing: YAML's null, for a plain scalar.
fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// A plain scalar's boolean: `true`/`false`, and YAML 1.1's `yes`/`no`, `on`/`off`, `y`/`n`,
/// in any case.
fn parse_bool(text: &str) -> Option<bool> {
    const TRUE: [&str; 4] = ["true", "yes", "y", "on"];
    const FALSE: [&str; 4] = ["false", "no", "n", "off"];
    if TRUE.iter().any(|t| text.eq_ignore_ascii_case(t)) {
        Some(true)
    } else if FALSE.iter().any(|t| text.eq_ignore_ascii_case(t)) {
        Some(false)
    } else {
        None
    }
}

/// A scalar's whole number: decimal with an optional sign, or `0x`, `0o`, `0b`, digits
/// perhaps grouped by `_` (`1_000`, as YAML 1.1 writes them).
fn parse_int(text: &str) -> Option<i128> {
    match text.contains('_') {
        true => parse_digits(&text.replace('_', "")),
        false => parse_digits(text),
    }
}

fn parse_digits(text: &str) -> Option<i128> {
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (radix, digits) = match digits.get(..2) {
        Some("0x") => (16, &digits[2..]),
        Some("0o") => (8, &digits[2..]),
        Some("0b") => (2, &digits[2..]),
        _ => (10, digits),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let n = i128::from_str_radix(digits, radix).ok()?;
    Some(if negative { -n } else { n })
}

/// A plain scalar YAML reads as a number that is not whole: `1.5`, `1e3`, `.inf`, `.nan`.
fn is_float(text: &str) -> bool {
    let t = text.strip_prefix(['+', '-']).unwrap_or(text);
    matches!(t, ".inf" | ".Inf" | ".INF" | ".nan" | ".NaN" | ".NAN")
        || (t.bytes().any(|b| b.is_ascii_digit())
            && t.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
            && t.parse::<f64>().is_ok())
}

/// Where a node is, for messages; built on the stack as the reader descends, and put into
/// words only when something is reported.
#[derive(Clone, Copy)]
pub enum At<'a> {
    Top,
    Field(&'a At<'a>, &'static str),
    /// The value of a map entry: a target, a var, an `env` entry.
    Key(&'a At<'a>, &'a str),
    /// An entry of a list.
    Entry(&'a At<'a>),
}

impl At<'_> {
    /// "`fetch.into` of target `app`", "target `app`", "var `v`", "`default`", "the build file".
    fn subject(&self) -> String {
        let mut chain = Vec::new();
        let mut at = self;
        loop {
            chain.push(*at);
            match at {
                At::Top => break,
                At::Field(p, _) | At::Key(p, _) | At::Entry(p) => at = p,
            }
        }
        chain.reverse();
        let (owner, rest) = match chain.as_slice() {
            [At::Top, At::Field(_, "targets"), At::Key(_, name), rest @ ..] => {
                (format!("target `{name}`"), rest)
            }
            [At::Top, At::Field(_, "vars"), At::Key(_, name), rest @ ..] => (format!("var `{name}`"), rest),
            [At::Top, rest @ ..] => (String::new(), rest),
            _ => (String::new(), &chain[..]),
        };
        let fields: Vec<&str> = rest
            .iter()
            .filter_map(|a| match a {
                At::Field(_, f) => Some(*f),
                _ => None,
            })
            .collect();
        match (fields.is_empty(), owner.is_empty()) {
            (true, true) => "the build file".into(),
            (true, false) => owner,
            (false, true) => format!("`{}`", fields.join(".")),
            (false, false) => format!("`{}` of {owner}", fields.join(".")),
        }
    }

    /// How the label names the node itself: "this entry", "the value of `A`", or nothing.
    fn part(&self) -> Option<String> {
        match self {
            At::Entry(_) => Some("this entry".into()),
            At::Key(At::Field(At::Top, "targets" | "vars"), _) => None,
            At::Key(_, k) => Some(format!("the value of `{k}`")),
            _ => None,
        }
    }
}

/// Reads YAML events into the raw types, collecting errors.
pub struct Reader<'a> {
    pub src: &'a Source,
    pub errors: Vec<ConfigError>,
    events: Events<'a>,
    /// Something was reported since the enclosing struct began reading its current field.
    failed: bool,
    /// The key whose value is read next, where a struct points when a key is missing in it.
    pub key: Option<Span>,
}

/// Read a whole gevulot.yaml into `T` (the file's raw type): the value and every error found,
/// or, when a YAML syntax error or a breach of the budget stops the reading, that one error.
pub fn read<T: FromYaml>(src: &Source, what: &str) -> Result<(T, Vec<ConfigError>), Vec<ConfigError>> {
    read_at(src, &src.text, (0, 0), At::Top, what).0
}

/// Read `text`, the part of `src` that starts at byte `base` of it and lies `depth` lists and
/// maps deep in it, as one YAML document holding the value at `at`: the value only when it
/// reads without a single error, and the events it took (which the caller adds up against
/// the whole file's limit). For a big file read in parts on several cores, where a part that
/// does not read cleanly sends the whole file back to [`read`].
pub fn read_part<T: FromYaml>(
    src: &Source,
    text: &str,
    (base, depth): (usize, usize),
    at: At<'_>,
    what: &str,
) -> Option<(T, usize)> {
    match read_at(src, text, (base, depth), at, what) {
        (Ok((value, errors)), events) if errors.is_empty() => Some((value, events)),
        _ => None,
    }
}

type Read<T> = Result<(T, Vec<ConfigError>), Vec<ConfigError>>;

fn read_at<T: FromYaml>(
    src: &Source,
    text: &str,
    (base, depth): (usize, usize),
    at: At<'_>,
    what: &str,
) -> (Read<T>, usize) {
    let events = Events::new(text, base, depth);
    let mut r = Reader { src, errors: Vec::new(), events, failed: false, key: None };
    let read = read_with(&mut r, at, what);
    (read, r.events.delivered())
}

fn read_with<T: FromYaml>(r: &mut Reader<'_>, at: At<'_>, what: &str) -> Read<T> {
    let value = T::read(r, at, what);
    if r.events.stop.is_none() {
        let rest = r.events.take();
        debug_assert!(matches!(rest.ev, Ev::End), "one value per document");
        r.events.finish();
    }
    if let Some(stop) = r.events.stop.take() {
        return Err(vec![stop_error(r.src, stop)]);
    }
    match value {
        Some(value) => Ok((value, std::mem::take(&mut r.errors))),
        None if r.errors.is_empty() => Err(vec![ConfigError::Invalid {
            message: "the build file holds no YAML value".into(),
            src: r.src.named(),
            span: Span::new(0, 0).into(),
            label: "nothing here".into(),
            help: Some(format!("write {what}")),
        }]),
        None => Err(std::mem::take(&mut r.errors)),
    }
}

/// What stopped the reading, as an error in gevulot.yaml's terms.
fn stop_error(src: &Source, stop: Stop) -> ConfigError {
    match stop {
        Stop::Syntax { offset, kind: SyntaxKind::UnknownAnchor, .. } => ConfigError::Yaml {
            message: "an alias names no anchor defined before it".into(),
            src: src.named(),
            span: Span::new(offset, usize::from(offset < src.text.len())).into(),
            label: "no `&name` above this `*name`".into(),
            help: Some(
                "mark the node it copies with `&name` earlier in the file (anchors are read in order); a glob or \
                 other text that starts with `*` must be quoted: `[\"*.c\"]`"
                    .into(),
            ),
        },
        Stop::Syntax { message, offset, kind } => {
            let help = if message.contains("while parsing a flow sequence") || message.contains("flow mapping") {
                Some("a `${var}` or `{` inside `[...]` or `{...}` must be quoted: `[\"src/${name}.c\"]`".into())
            } else if kind == SyntaxKind::MappingValue {
                Some("a `: ` inside a plain value makes YAML read a map: quote the value, `run: \"echo a: b\"`".into())
            } else {
                None
            };
            let label = match message.find(", expected") {
                Some(i) => message[..i].to_string(),
                None => message.clone(),
            };
            // One character wide, as a caret under it; none at the end of the text.
            let width = usize::from(offset < src.text.len());
            ConfigError::Yaml {
                message,
                src: src.named(),
                span: Span::new(offset, width).into(),
                label,
                help,
            }
        }
        Stop::Budget { breach, at } => ConfigError::Yaml {
            message: format!(
                "gevulot.yaml costs far more to read than its size ({breach}): YAML aliases that expand into \
                 huge trees, or nesting deeper than {MAX_DEPTH} levels, are refused"
            ),
            src: src.named(),
            span: at.into(),
            label: "read up to here".into(),
            help: Some(
                "an alias (`*name`) copies its anchor's whole tree each time it is used; use `<<: *name` \
                 merges of small maps, or write the values out"
                    .into(),
            ),
        },
        Stop::SecondDocument { at } => ConfigError::Yaml {
            message: "gevulot.yaml holds a second YAML document".into(),
            src: src.named(),
            span: at.into(),
            label: "a second document starts here".into(),
            help: Some(
                "a gevulot.yaml is one document: remove this `---` and what follows, or merge them".into(),
            ),
        },
    }
}

impl<'a> Reader<'a> {
    /// The next event, without taking it.
    pub fn peek(&mut self) -> &Located<'a> {
        self.events.peek()
    }

    /// Where the next value is used.
    pub fn peek_referenced(&mut self) -> Span {
        self.events.peek().referenced
    }

    /// The next value's text if it is a scalar, without taking it.
    pub fn peek_text(&mut self) -> Option<&str> {
        match &self.events.peek().ev {
            Ev::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// Whether the next value is a map.
    pub fn at_map(&mut self) -> bool {
        matches!(self.events.peek().ev, Ev::MapStart)
    }

    /// Whether the stream has stopped (or the document ended): nothing is left to read or report.
    pub fn at_end(&mut self) -> bool {
        matches!(self.events.peek().ev, Ev::End)
    }

    /// The next value if it is a scalar: its text and whether it is plain, taken. Anything else
    /// stays.
    pub fn scalar(&mut self) -> Option<(Cow<'a, str>, bool)> {
        if !matches!(self.events.peek().ev, Ev::Scalar { .. }) {
            return None;
        }
        match self.events.take().ev {
            Ev::Scalar { text, plain } => Some((text, plain)),
            _ => None,
        }
    }

    /// Take the next value whole, as a [`Node`] (to describe it in a message).
    pub fn node(&mut self) -> Spanned<Node> {
        let first = self.events.take();
        self.node_from(first)
    }

    fn node_from(&mut self, first: Located<'a>) -> Spanned<Node> {
        let value = match first.ev {
            Ev::Scalar { text, plain } => Node::scalar(&text, plain),
            Ev::SeqStart => {
                let mut items = Vec::new();
                loop {
                    let e = self.events.take();
                    match e.ev {
                        Ev::SeqEnd | Ev::End => break,
                        _ => items.push(self.node_from(e)),
                    }
                }
                Node::Seq(items)
            }
            Ev::MapStart => {
                let mut entries = Vec::new();
                loop {
                    let e = self.events.take();
                    let (referenced, defined) = (e.referenced, e.defined);
                    let key = match e.ev {
                        Ev::MapEnd | Ev::End => break,
                        Ev::Scalar { text, .. } => text.into_owned(),
                        _ => {
                            self.node_from(e);
                            String::new()
                        }
                    };
                    let value = self.node();
                    entries.push((Spanned { value: key, referenced, defined }, value));
                }
                Node::Map(entries)
            }
            Ev::SeqEnd | Ev::MapEnd | Ev::End | Ev::Alias(_) => Node::Null,
        };
        Spanned { value, referenced: first.referenced, defined: first.defined }
    }

    /// Take the next value whole, unread (the value of a key given twice, or ignored), without
    /// replaying the aliases in it.
    pub fn skip(&mut self) {
        self.events.shallow = true;
        let mut open = 0usize;
        loop {
            match self.events.take().ev {
                Ev::SeqStart | Ev::MapStart => open += 1,
                Ev::SeqEnd | Ev::MapEnd => open = open.saturating_sub(1),
                Ev::End => break,
                _ => {}
            }
            if open == 0 {
                break;
            }
        }
        self.events.shallow = false;
    }

    /// The next value's events, taken, to be replayed.
    fn gather(&mut self) -> Rc<[Located<'a>]> {
        let mut out = Vec::new();
        let mut open = 0usize;
        loop {
            let e = self.events.take();
            match e.ev {
                Ev::SeqStart | Ev::MapStart => open += 1,
                Ev::SeqEnd | Ev::MapEnd => open = open.saturating_sub(1),
                Ev::End => return out.into(),
                _ => {}
            }
            out.push(e);
            if open == 0 {
                return out.into();
            }
        }
    }

    /// Read the map that comes next (the caller has seen its start), calling `entry` with each
    /// key and whether it was merged, with the key's value next; `entry` takes the value. The
    /// map's own entries come first, then those `<<` merges in (see the module docs).
    pub fn entries(&mut self, entry: &mut dyn FnMut(&mut Self, Spanned<String>, bool)) {
        self.entries_of(entry, false);
    }

    fn entries_of(&mut self, entry: &mut dyn FnMut(&mut Self, Spanned<String>, bool), merged: bool) {
        // A map, unless the stream stopped while a merged map was gathered.
        if !matches!(self.events.take().ev, Ev::MapStart) {
            return;
        }
        let mut merges = Vec::new();
        loop {
            let key = self.events.take();
            let (text, plain) = match key.ev {
                Ev::MapEnd | Ev::End => break,
                Ev::Scalar { text, plain } => (text, plain),
                _ => {
                    let node = self.node_from(key);
                    self.report(ConfigError::WrongType {
                        message: "a key is a name".into(),
                        src: self.src.named(),
                        span: node.referenced.into(),
                        label: format!("this key is {}", self.kind(&node)),
                        help: Some("write a name before the `:`".into()),
                    });
                    self.skip();
                    continue;
                }
            };
            if plain && text == "<<" {
                self.merge_sources(&mut merges);
                continue;
            }
            let key = Spanned { value: text.into_owned(), referenced: key.referenced, defined: key.defined };
            entry(self, key, merged);
        }
        for map in merges {
            self.events.replay(map);
            self.entries_of(entry, true);
        }
    }

    /// The maps a `<<` merges in: one map, or a list of maps.
    fn merge_sources(&mut self, out: &mut Vec<Rc<[Located<'a>]>>) {
        match self.events.peek().ev {
            Ev::MapStart => out.push(self.gather()),
            Ev::SeqStart => {
                self.events.take();
                loop {
                    match self.events.peek().ev {
                        Ev::SeqEnd | Ev::End => {
                            self.events.take();
                            break;
                        }
                        Ev::MapStart => out.push(self.gather()),
                        _ => {
                            let node = self.node();
                            self.not_a_merge(&node);
                        }
                    }
                }
            }
            Ev::End => {}
            // `<<:` with nothing (or `~`) merges nothing.
            Ev::Scalar { ref text, plain: true } if is_null(text) => self.skip(),
            _ => {
                let node = self.node();
                self.not_a_merge(&node);
            }
        }
    }

    fn not_a_merge(&mut self, node: &Spanned<Node>) {
        let found = self.kind(node);
        self.report(ConfigError::WrongType {
            message: "`<<` merges a map, or a list of maps, into this map".into(),
            src: self.src.named(),
            span: node.referenced.into(),
            label: format!("this is {found}"),
            help: Some("write `<<: *name`, where a map is marked `&name` (say `x-name: &name { ... }`), or `<<: [*a, *b]`".into()),
        });
    }

    fn report(&mut self, e: ConfigError) {
        self.failed = true;
        self.errors.push(e);
    }

    /// The text of a scalar as written (for a number or `true`, which YAML gave a type).
    fn written(&self, s: &Span) -> &str {
        self.src.text.get(s.offset..s.offset + s.len).unwrap_or("")
    }

    /// `what` (say "a list of paths") was expected at `at`, and `node` is something else.
    pub fn wrong_type(&mut self, node: &Spanned<Node>, at: At<'_>, what: &str, help: Option<String>) {
        let found = self.kind(node);
        let label = match at.part() {
            Some(part) => format!("{part} is {found}"),
            None => found,
        };
        let e = ConfigError::WrongType {
            message: format!("{} is {what}", at.subject()),
            src: self.src.named(),
            span: node.referenced.into(),
            label,
            help,
        };
        self.report(e);
    }

    /// `what` (say "`copy` or `hardlink`") was expected at `at`, and `node` is another value.
    pub fn not_one_of(&mut self, node: &Spanned<Node>, at: At<'_>, what: &str, help: String) {
        if !matches!(node.value, Node::Str(_)) {
            return self.wrong_type(node, at, what, Some(help));
        }
        let e = ConfigError::WrongType {
            message: format!("{} is {what}", at.subject()),
            src: self.src.named(),
            span: node.referenced.into(),
            label: "not one of these".into(),
            help: Some(help),
        };
        self.report(e);
    }

    /// The kind of a node in words, for labels: "a string", "a list", "empty".
    fn kind(&self, node: &Spanned<Node>) -> String {
        match &node.value {
            Node::Null => "empty".into(),
            Node::Bool(_) => format!("`{}`", self.written(&node.defined)),
            Node::Int(_) | Node::Float => "a number".into(),
            Node::Str(_) => "a string".into(),
            Node::Seq(_) => "a list".into(),
            Node::Map(_) => "a map".into(),
        }
    }

    /// The text of a short single-line scalar as written, to quote it in a hint.
    fn quotable(&self, node: &Spanned<Node>) -> Option<String> {
        // Where it is written: an alias's place holds `*name`.
        let text = self.written(&node.defined);
        (matches!(node.value, Node::Str(_) | Node::Bool(_) | Node::Int(_) | Node::Float)
            && !text.is_empty()
            && text.len() <= 60
            && !text.contains('\n'))
        .then(|| text.to_string())
    }

    pub fn unknown_key(&mut self, key: &Spanned<String>, at: At<'_>, allowed: &[&str]) {
        let message = match at {
            At::Top => format!("unknown top-level key `{}`", key.value),
            at => format!("unknown key `{}` in {}", key.value, at.subject()),
        };
        // Named so that it helps a user who installed the binary too, away from the repository.
        let reference =
            "(`gvbuild schema` prints gevulot.yaml's JSON Schema; the reference is docs/gevulot-yaml.md \
             in gvbuild's repository)";
        let help = match suggest(&key.value, allowed.iter().copied()) {
            Some(dym) => format!("{dym} {reference}"),
            None => format!("the keys allowed here: {} {reference}", allowed.join(", ")),
        };
        let help = match at {
            At::Top => {
                format!("{help}; top-level keys starting with `x-` are ignored (a place for YAML anchors)")
            }
            _ => help,
        };
        self.report(ConfigError::UnknownKey {
            message,
            src: self.src.named(),
            span: key.referenced.into(),
            help,
        });
    }

    pub fn duplicate_key(&mut self, key: &Spanned<String>, at: At<'_>) {
        self.report(ConfigError::DuplicateKey {
            message: format!("`{}` is given twice in {}", key.value, at.subject()),
            src: self.src.named(),
            span: key.referenced.into(),
            help: format!("each key appears once: remove or merge the two `{}` entries", key.value),
        });
    }

    pub fn missing_key(&mut self, node: &Span, at: At<'_>, key: &str, what: &str) {
        let message = match at {
            At::Top => format!("the build file has no `{key}`"),
            at => format!("{} needs `{key}`", at.subject()),
        };
        let help = match at {
            At::Top => "a gevulot.yaml needs at least `targets:`, for example:\ntargets:\n  hello:\n    outputs: [hello.txt]\n    run: echo hello > hello.txt".to_string(),
            _ => format!("add `{key}:`, {what}"),
        };
        self.report(ConfigError::MissingKey {
            message,
            src: self.src.named(),
            span: (*node).into(),
            label: format!("no `{key}` in here"),
            help,
        });
    }
}

/// A raw type that can be read from gevulot.yaml's events, reporting what is wrong with it.
pub trait FromYaml: Sized {
    /// Read the next value, or report why it is not one and return `None`; either way the value
    /// is taken. `what` says what the field holds, in gevulot.yaml's terms ("a list of paths").
    fn read(r: &mut Reader<'_>, at: At<'_>, what: &str) -> Option<Self>;

    /// The value of a field that is not written: `Some` for optional fields.
    fn absent() -> Option<Self> {
        None
    }

    /// What stands in for a field that is broken or missing, so that the rest of its struct is
    /// still read; the struct is then marked damaged.
    fn placeholder() -> Option<Self> {
        Self::absent()
    }

    /// [`FromYaml::placeholder`] for a value at this place.
    fn placeholder_at(_referenced: Span, _defined: Span) -> Option<Self> {
        Self::placeholder()
    }

    /// A struct records its own damage: as the value of a map entry it does not damage the map.
    const KEEPS_ITS_DAMAGE: bool = false;
}

impl FromYaml for String {
    fn read(r: &mut Reader<'_>, at: At<'_>, what: &str) -> Option<Self> {
        if let Ev::Scalar { text, plain } = &r.peek().ev {
            if !(*plain && is_null(text)) {
                return r.scalar().map(|(text, _)| text.into_owned());
            }
        }
        if r.at_end() {
            return None;
        }
        let node = r.node();
        let help = match &node.value {
            Node::Seq(items) if items.len() == 1 => {
                r.quotable(&items[0]).map(|t| format!("write `{t}`, without the brackets"))
            }
            Node::Seq(_) => Some("write one string".into()),
            Node::Map(_) => {
                Some("quote the value: a `: ` inside it, or a `{` at its start, makes YAML read a map".into())
            }
            _ => Some("write a value, or leave the key out".into()),
        };
        r.wrong_type(&node, at, what, help);
        None
    }

    fn placeholder() -> Option<Self> {
        Some(String::new())
    }
}

/// A boolean, written plain or quoted (`"true"`, as serde-saphyr took a valid file's before).
impl FromYaml for bool {
    fn read(r: &mut Reader<'_>, at: At<'_>, what: &str) -> Option<Self> {
        if let Ev::Scalar { text, .. } = &r.peek().ev {
            if let Some(b) = parse_bool(text) {
                r.scalar();
                return Some(b);
            }
        }
        if r.at_end() {
            return None;
        }
        let node = r.node();
        r.wrong_type(&node, at, what, Some("write `true` or `false`".into()));
        None
    }
}

/// A whole number, written plain, quoted or tagged (`"3"`, `!!int "3"`, as serde-saphyr took a
/// valid file's before).
macro_rules! whole_number {
    ($($t:ty),*) => {$(
        impl FromYaml for $t {
            fn read(r: &mut Reader<'_>, at: At<'_>, what: &str) -> Option<Self> {
                if let Ev::Scalar { text, .. } = &r.peek().ev {
                    if let Some(n) = parse_int(text).and_then(|n| <$t>::try_from(n).ok()) {
                        r.scalar();
                        return Some(n);
                    }
                }
                if r.at_end() {
                    return None;
                }
                let node = r.node();
                let help = match &node.value {
                    Node::Str(s) if s.trim().parse::<$t>().is_ok() => {
                        format!("write `{}` without quotes", s.trim())
                    }
                    _ => format!("write a whole number from 0 to {}", <$t>::MAX),
                };
                r.wrong_type(&node, at, what, Some(help));
                None
            }
        }
    )*};
}
whole_number!(u32, u64);

impl<T: FromYaml> FromYaml for Spanned<T> {
    fn read(r: &mut Reader<'_>, at: At<'_>, what: &str) -> Option<Self> {
        let next = r.peek();
        let (referenced, defined) = (next.referenced, next.defined);
        T::read(r, at, what).map(|value| Spanned { value, referenced, defined })
    }

    fn placeholder() -> Option<Self> {
        Self::placeholder_at(Span::default(), Span::default())
    }

    fn placeholder_at(referenced: Span, defined: Span) -> Option<Self> {
        T::placeholder().map(|value| Spanned { value, referenced, defined })
    }

    const KEEPS_ITS_DAMAGE: bool = T::KEEPS_ITS_DAMAGE;
}

/// `key: ~` (or `key:` with nothing) is the same as leaving the key out. A value of the wrong
/// type is reported and read as absent, so a var whose value is wrong is still declared.
impl<T: FromYaml> FromYaml for Option<T> {
    fn read(r: &mut Reader<'_>, at: At<'_>, what: &str) -> Option<Self> {
        if let Ev::Scalar { text, plain: true } = &r.peek().ev {
            if is_null(text) {
                r.scalar();
                return Some(None);
            }
        }
        Some(T::read(r, at, what))
    }

    fn absent() -> Option<Self> {
        Some(None)
    }
}

/// A list: a wrong entry is reported and left out, the others are kept.
impl<T: FromYaml> FromYaml for Vec<T> {
    fn read(r: &mut Reader<'_>, at: At<'_>, what: &str) -> Option<Self> {
        match r.peek().ev {
            Ev::SeqStart => {}
            Ev::End => return None,
            _ => {
                let node = r.node();
                let help = match &node.value {
                    Node::Map(_) => "write a list: `[a, b]`, or one `- entry` per line".to_string(),
                    _ => match r.quotable(&node) {
                        Some(t) => format!("write `[{t}]`"),
                        None => "write a list: `[a, b]`, or one `- entry` per line".to_string(),
                    },
                };
                r.wrong_type(&node, at, what, Some(help));
                return None;
            }
        }
        r.events.take();
        let entry = At::Entry(&at);
        let mut out = Vec::new();
        loop {
            match r.peek().ev {
                Ev::SeqEnd => {
                    r.events.take();
                    break;
                }
                Ev::End => break,
                _ => {}
            }
            // An entry has no key of its own: a struct in it points at itself.
            r.key = None;
            if let Some(v) = T::read(r, entry, what) {
                out.push(v);
            }
        }
        Some(out)
    }

    fn placeholder() -> Option<Self> {
        Some(Vec::new())
    }
}

/// A map by name. A key given twice is reported (the first is kept; a merged key the map
/// already has is not a duplicate, it is overridden); a value of the wrong type is left out,
/// unless it is a struct, which stands in damaged so that its name still exists (a dep on a
/// target whose body is wrong is not a dep on an unknown target).
impl<T: FromYaml> FromYaml for IndexMap<Spanned<String>, T> {
    fn read(r: &mut Reader<'_>, at: At<'_>, what: &str) -> Option<Self> {
        match r.peek().ev {
            Ev::MapStart => {}
            Ev::End => return None,
            _ => {
                let node = r.node();
                let help = match &node.value {
                    Node::Seq(items) => {
                        let pairs: Vec<String> = items
                            .iter()
                            .filter_map(|i| r.quotable(i))
                            .map(|t| match t.split_once('=') {
                                Some((k, v)) => format!("{k}: {v}"),
                                None => format!("{t}: VALUE"),
                            })
                            .collect();
                        if pairs.is_empty() || pairs.len() != items.len() {
                            "write a map: `{ NAME: VALUE }`, or one `NAME: VALUE` per line".to_string()
                        } else {
                            format!("write `{{ {} }}`", pairs.join(", "))
                        }
                    }
                    _ => "write a map: `{ NAME: VALUE }`, or one `NAME: VALUE` per line".to_string(),
                };
                r.wrong_type(&node, at, what, Some(help));
                return None;
            }
        }
        let mut out: IndexMap<Spanned<String>, T> = IndexMap::new();
        // Spanned keys compare by place too, so names are compared here.
        let mut seen = FxHashSet::default();
        r.entries(&mut |r, key, merged| {
            if !seen.insert(key.value.clone()) {
                if !merged {
                    r.duplicate_key(&key, at);
                }
                return r.skip();
            }
            let failed = r.failed;
            let next = r.peek();
            let (referenced, defined) = (next.referenced, next.defined);
            r.key = Some(key.referenced);
            // A struct (a target) is "a map", and its wrong-type help lists its keys.
            let v = T::read(r, At::Key(&at, &key.value), if T::KEEPS_ITS_DAMAGE { "a map" } else { what });
            let v = match v {
                Some(v) => Some(v),
                None if T::KEEPS_ITS_DAMAGE => T::placeholder_at(referenced, defined),
                None => None,
            };
            if T::KEEPS_ITS_DAMAGE {
                r.failed = failed;
            }
            if let Some(v) = v {
                out.insert(key, v);
            }
        });
        Some(out)
    }

    fn placeholder() -> Option<Self> {
        Some(IndexMap::new())
    }
}

/// Every string in a raw struct, for the one check that still runs in a damaged struct: that
/// each `${var}` in it exists.
pub trait Strings {
    fn strings<'s>(&'s self, out: &mut Vec<&'s Spanned<String>>);
}

/// Pushes itself: only the wrapper knows where the string is.
impl Strings for Spanned<String> {
    fn strings<'s>(&'s self, out: &mut Vec<&'s Spanned<String>>) {
        out.push(self);
    }
}

macro_rules! no_strings {
    ($($t:ty),*) => {$(
        impl Strings for $t {
            fn strings<'s>(&'s self, _: &mut Vec<&'s Spanned<String>>) {}
        }
    )*};
}
no_strings!(Spanned<bool>, Spanned<u32>, Spanned<u64>, Spanned<Option<String>>);

impl<T: Strings> Strings for Spanned<T> {
    fn strings<'s>(&'s self, out: &mut Vec<&'s Spanned<String>>) {
        self.value.strings(out);
    }
}

impl<T: Strings> Strings for Option<T> {
    fn strings<'s>(&'s self, out: &mut Vec<&'s Spanned<String>>) {
        if let Some(v) = self {
            v.strings(out);
        }
    }
}

impl<T: Strings> Strings for Vec<T> {
    fn strings<'s>(&'s self, out: &mut Vec<&'s Spanned<String>>) {
        for v in self {
            v.strings(out);
        }
    }
}

impl<T: Strings> Strings for IndexMap<Spanned<String>, T> {
    fn strings<'s>(&'s self, out: &mut Vec<&'s Spanned<String>>) {
        for v in self.values() {
            v.strings(out);
        }
    }
}

/// One field slot while a struct is read.
pub enum Slot<T> {
    Absent,
    Broken,
    Given(T),
}

/// A raw struct of gevulot.yaml: its fields (each with what it holds, in gevulot.yaml's terms)
/// are read from a map by [`FromYaml`]; unknown keys are errors, except those starting with `x-`
/// in a struct marked `@x_keys` (which gets that field, for the schema). The struct gets a
/// `damaged` field (see the module docs). `= default` makes an absent field its type's default.
macro_rules! raw_struct {
    (
        $(#[$sm:meta])*
        $(@$x:ident)?
        pub struct $name:ident {
            $(
                $(#[$fm:meta])*
                pub $field:ident: $ty:ty $(= $dflt:ident)? => $what:literal,
            )*
        }
    ) => {
        $(#[$sm])*
        pub struct $name {
            $( $(#[$fm])* pub $field: $ty, )*
            $(
                /// Keys starting with `x-`, allowed and ignored (a place for YAML anchors).
                #[schemars(flatten)]
                #[serde(skip_deserializing)]
                pub $x: $crate::yaml::read::XKeys,
            )?
            /// Something in this struct was reported while reading it (see `read.rs`).
            #[serde(skip)]
            pub damaged: bool,
        }

        impl $name {
            /// The keys of this struct, as written in gevulot.yaml.
            pub const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];
        }

        impl $crate::yaml::read::FromYaml for $name {
            const KEEPS_ITS_DAMAGE: bool = true;

            fn read(
                r: &mut $crate::yaml::read::Reader<'_>,
                at: $crate::yaml::read::At<'_>,
                what: &str,
            ) -> Option<Self> {
                use $crate::yaml::read::{At, FromYaml, Slot};
                // A missing key is reported at the key this struct is the value of, if any.
                let loc = match r.key.take() {
                    Some(key) => key,
                    None => r.peek_referenced(),
                };
                if !r.at_map() {
                    if r.at_end() {
                        return None;
                    }
                    let node = r.node();
                    let keys = Self::KEYS.join(", ");
                    r.wrong_type(&node, at, what, Some(format!("write a map of its keys: {keys}")));
                    return None;
                }
                let outer = r.take_failed();
                let mut damaged = false;
                let mut unknown = false;
                $( let mut $field: Slot<$ty> = Slot::Absent; )*
                r.entries(&mut |r, key, merged| {
                    match key.value.as_str() {
                        $(
                            stringify!($field) => {
                                if !matches!($field, Slot::Absent) {
                                    // A merged key the struct has is overridden, not given twice.
                                    if !merged {
                                        r.duplicate_key(&key, at);
                                        damaged = true;
                                    }
                                    return r.skip();
                                }
                                r.take_failed();
                                r.key = Some(key.referenced);
                                let v = <$ty as FromYaml>::read(r, At::Field(&at, stringify!($field)), $what);
                                damaged |= r.take_failed() || v.is_none();
                                $field = match v {
                                    Some(v) => Slot::Given(v),
                                    None => Slot::Broken,
                                };
                            }
                        )*
                        $( _ if key.value.starts_with($crate::yaml::read::XKeys::PREFIX) => {
                            let _ = stringify!($x);
                            r.skip();
                        } )?
                        _ => {
                            r.unknown_key(&key, at, Self::KEYS);
                            unknown = true;
                            damaged = true;
                            r.skip();
                        }
                    }
                });
                $(
                    let $field: $ty = match $field {
                        Slot::Given(v) => v,
                        Slot::Broken => <$ty as FromYaml>::placeholder()?,
                        Slot::Absent => match raw_struct!(@absent $ty $(, $dflt)?) {
                            Some(v) => v,
                            None => {
                                // An unknown key is likely this one misspelled: one error is enough.
                                if !unknown {
                                    r.missing_key(&loc, at, stringify!($field), $what);
                                }
                                damaged = true;
                                <$ty as FromYaml>::placeholder()?
                            }
                        },
                    };
                )*
                r.restore_failed(outer || damaged);
                Some($name { $( $field, )* $( $x: $crate::yaml::read::XKeys, )? damaged })
            }

            fn placeholder() -> Option<Self> {
                Some($name {
                    $( $field: <$ty as $crate::yaml::read::FromYaml>::placeholder()?, )*
                    $( $x: $crate::yaml::read::XKeys, )?
                    damaged: true,
                })
            }
        }

        impl $crate::yaml::read::Strings for $name {
            fn strings<'s>(&'s self, out: &mut Vec<&'s $crate::yaml::Spanned<String>>) {
                $( $crate::yaml::read::Strings::strings(&self.$field, out); )*
            }
        }
    };
    (@absent $ty:ty, default) => { Some(<$ty>::default()) };
    (@absent $ty:ty) => { <$ty as $crate::yaml::read::FromYaml>::absent() };
}
pub(crate) use raw_struct;

impl Reader<'_> {
    /// Whether something was reported since the last call (and start afresh).
    pub fn take_failed(&mut self) -> bool {
        std::mem::take(&mut self.failed)
    }

    pub fn restore_failed(&mut self, failed: bool) {
        self.failed = failed;
    }
}

/// Top-level keys starting with `x-` are allowed and ignored, so that YAML anchors can live
/// there, as in Compose files. Only the schema sees this field: it says so there.
#[derive(Debug, Default, Clone, Copy)]
pub struct XKeys;

impl XKeys {
    pub const PREFIX: &'static str = "x-";
}

impl schemars::JsonSchema for XKeys {
    fn schema_name() -> String {
        "XKeys".into()
    }

    fn json_schema(_: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
        use schemars::schema::{ObjectValidation, Schema, SchemaObject};
        let mut object = ObjectValidation::default();
        object.pattern_properties.insert(format!("^{}", Self::PREFIX), Schema::Bool(true));
        // Flattened into a struct that denies other keys, it must deny them too to keep that.
        object.additional_properties = Some(Box::new(Schema::Bool(false)));
        Schema::Object(SchemaObject { object: Some(Box::new(object)), ..Default::default() })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::raw::{RawFile, RawTarget};

    fn read_file(yaml: &str) -> Result<(RawFile, Vec<ConfigError>), Vec<ConfigError>> {
        read::<RawFile>(&Source::new("gevulot.yaml", yaml), "a map")
    }

    fn target<'f>(file: &'f RawFile, name: &str) -> &'f RawTarget {
        &file.targets.iter().find(|(k, _)| k.value == name).unwrap().1.value
    }

    fn messages(errors: &[ConfigError]) -> Vec<String> {
        errors.iter().map(|e| e.to_string()).collect()
    }

    /// Every field of a valid file, with its place, through anchors, aliases and merges.
    #[test]
    fn reads_a_valid_file_with_its_places() {
        let yaml = "\
vars: { cc: gcc, pin: ~, n: 3 }
x-base: &base
  env: { LC_ALL: C }
  tools: [gcc]
targets:
  gen:
    <<: *base
    description: 1.10
    outputs: [build/v.h]
    run: &cmd |
      ${cc} -o x
    cache: no
  other:
    run: *cmd
";
        let (file, errors) = read_file(yaml).unwrap();
        assert!(errors.is_empty(), "{:?}", messages(&errors));
        assert_eq!(file.vars.len(), 3);
        let pin = &file.vars[1];
        assert_eq!(pin.value, None);
        assert_eq!(file.vars[2].value.as_deref(), Some("3"));
        let gen = target(&file, "gen");
        assert_eq!(gen.description.as_ref().unwrap().value, "1.10");
        assert!(!gen.cache.as_ref().unwrap().value);
        assert_eq!(gen.tools.as_ref().unwrap()[0].value, "gcc");
        assert_eq!(gen.env.as_ref().unwrap().keys().next().unwrap().value, "LC_ALL");
        let out = &gen.outputs.as_ref().unwrap()[0];
        assert_eq!(&yaml[out.referenced.offset..out.referenced.offset + out.referenced.len], "build/v.h");
        // The alias is used at `*cmd` and written at the block scalar.
        let other = target(&file, "other").run.as_ref().unwrap();
        assert_eq!(other.value, "${cc} -o x\n");
        assert_eq!(&yaml[other.referenced.offset..other.referenced.offset + 4], "*cmd");
        let defined = &yaml[other.defined.offset..other.defined.offset + other.defined.len];
        assert!(defined.contains("${cc} -o x"), "{defined:?}");
    }

    /// YAML's merge key: the map's own keys win wherever they are written, then earlier merged
    /// maps over later ones; merged keys come after the map's own; a merged key the map has is
    /// not "given twice".
    #[test]
    fn merge_keys_follow_yaml_s_rule() {
        let yaml = "\
x-a: &a { A: from-a, B: from-a }
x-b: &b { B: from-b, C: from-b, D: from-b }
targets:
  t:
    env:
      <<: [*a, *b]
      D: own
    run: echo
    <<: { run: merged, outputs: [o] }
";
        let (file, errors) = read_file(yaml).unwrap();
        assert!(errors.is_empty(), "{:?}", messages(&errors));
        let t = target(&file, "t");
        let env: Vec<(&str, &str)> =
            t.env.as_ref().unwrap().iter().map(|(k, v)| (k.value.as_str(), v.value.as_str())).collect();
        assert_eq!(env, [("D", "own"), ("A", "from-a"), ("B", "from-a"), ("C", "from-b")]);
        assert_eq!(t.run.as_ref().unwrap().value, "echo");
        assert_eq!(t.outputs.as_ref().unwrap()[0].value, "o");
    }

    #[test]
    fn a_merge_of_something_not_a_map_is_reported_and_reading_goes_on() {
        let yaml = "targets:\n  t:\n    <<: [1, 2]\n    run: echo\n    deps: oops\n";
        let (_, errors) = read_file(yaml).unwrap();
        let m = messages(&errors);
        assert_eq!(m.len(), 3, "{m:?}");
        assert!(m[0].contains("`<<` merges a map"), "{m:?}");
        assert!(m[2].contains("`deps` of target `t` is a list of target names"), "{m:?}");
    }

    /// A "billion laughs" is refused where it is written, though nothing uses it; so is an
    /// alias that would replay too much, and nesting past the limit.
    #[test]
    fn the_budget_refuses_alias_bombs_and_deep_nesting() {
        let mut bomb = String::from("x-a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..9 {
            let prev = format!("*a{}", i - 1);
            bomb.push_str(&format!("x-a{i}: &a{i} [{}]\n", [prev.as_str(); 10].join(", ")));
        }
        bomb.push_str("targets: {}\n");
        let errors = read_file(&bomb).err().unwrap();
        let m = messages(&errors);
        assert!(m[0].contains("costs far more to read than its size"), "{m:?}");
        assert!(m[0].contains("anchor that expands to more than"), "{m:?}");

        let deep = format!("x-deep: {}{}\ntargets: {{}}\n", "[".repeat(70), "]".repeat(70));
        let m = messages(&read_file(&deep).err().unwrap());
        assert!(m[0].contains("nesting deeper than 64 levels"), "{m:?}");

        let fine = format!("x-deep: {}{}\ntargets: {{}}\n", "[".repeat(60), "]".repeat(60));
        assert!(read_file(&fine).is_ok());

        // Nested anchors record each event once per anchor it is inside: 40 of them around
        // 30,000 scalars would hold 1.2 M events, used or not.
        let open: String = (0..40).map(|i| format!("&n{i} [")).collect();
        let nested = format!("x-n: {open}{}{}\ntargets: {{}}\n", "a, ".repeat(30_000), "]".repeat(40));
        let m = messages(&read_file(&nested).err().unwrap());
        assert!(m[0].contains("anchors that hold more than"), "{m:?}");
    }

    #[test]
    fn an_alias_inside_its_own_anchor_is_refused() {
        let m = messages(&read_file("x-a: &a [1, *a]\ntargets: {}\n").err().unwrap());
        assert_eq!(m.len(), 1, "{m:?}");
    }

    #[test]
    fn a_file_with_no_value_says_so() {
        let m = messages(&read_file("...\n").err().unwrap());
        assert_eq!(m, ["the build file holds no YAML value"]);
    }

    #[test]
    fn a_second_document_is_refused() {
        let m = messages(&read_file("targets: {}\n---\ntargets: {}\n").err().unwrap());
        assert_eq!(m, ["gevulot.yaml holds a second YAML document"]);
    }

    #[test]
    fn scalars_get_yaml_s_types() {
        for (text, node) in [
            ("~", "Null"),
            ("", "Null"),
            ("yes", "Bool(true)"),
            ("Off", "Bool(false)"),
            ("0x1f", "Int(31)"),
            ("-7", "Int(-7)"),
            ("1.10", "Float"),
            ("1e3", "Float"),
            (".inf", "Float"),
            ("1.2.3", "Str(\"1.2.3\")"),
            ("e", "Str(\"e\")"),
            ("0xg", "Str(\"0xg\")"),
            ("1_000", "Int(1000)"),
        ] {
            assert_eq!(format!("{:?}", Node::scalar(text, true)), node, "{text}");
        }
        assert_eq!(format!("{:?}", Node::scalar("yes", false)), "Str(\"yes\")");
    }
}
