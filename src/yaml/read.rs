//! Reading gevulot.yaml leniently, so that one run reports every mistake in it.
//!
//! serde stops at the first error, and a type error is phrased in the parser's terms ("expected
//! sequence start"). So the YAML is first read into [`Node`]s, each with its span: this fails
//! only on YAML syntax. Then [`FromNode`] turns the nodes into the raw types (`crate::config::raw`'s, and each step kind's `Raw*`), one
//! field at a time. A field of the wrong type, an unknown key or a missing one is reported in
//! gevulot.yaml's terms ("`outputs` of target `c` is a list of paths", with "write `[out/c]`"),
//! the field is left out, and reading goes on with the next one.
//!
//! A struct in which something was reported is marked `damaged`. What it lacks may be exactly
//! what the user wrote wrongly, so the validator skips the checks that look at such a struct as
//! a whole ("no step and no deps", "no pinned hash"): they would be follow-on errors. Damage
//! rises through struct fields and lists to the nearest map entry that is itself a struct: a
//! broken `fetch.extract` damages the `fetch` and its target, never the whole file.
//!
//! A valid file never comes here: serde's derive on the same raw types reads it (the fast path,
//! in `crate::config`), and only a file it fails on is read again as nodes. A test checks that both
//! readings of a valid file agree.

use std::borrow::Cow;

use indexmap::IndexMap;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, Spanned};

use super::error::ConfigError;
use crate::diag::{suggest, Source, Span};

/// One YAML node, as written, before it is given a meaning.
#[derive(Debug)]
pub enum Node {
    Null,
    Bool(bool),
    Int(i128),
    Float,
    Str(String),
    Seq(Vec<Spanned<Node>>),
    /// Entries in the order written, duplicate keys included (they are reported when read).
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Node, E> {
                Ok(Node::Bool(b))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Node, E> {
                Ok(Node::Int(n.into()))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Node, E> {
                Ok(Node::Int(n.into()))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Float)
            }
            fn visit_str<E>(self, s: &str) -> Result<Node, E> {
                Ok(Node::Str(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<Node, E> {
                Ok(Node::Str(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut items = Vec::with_capacity(a.size_hint().unwrap_or(0));
                while let Some(item) = a.next_element()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut entries = Vec::with_capacity(a.size_hint().unwrap_or(0));
                while let Some(key) = a.next_key()? {
                    entries.push((key, a.next_value()?));
                }
                Ok(Node::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parse the YAML into nodes. Duplicate keys are kept, to be reported with the rest.
pub fn parse_nodes(text: &str) -> Result<Spanned<Node>, serde_saphyr::Error> {
    let mut options = yaml_options(text);
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
    serde_saphyr::from_str_with_options(text, options)
}

/// serde-saphyr's options for a gevulot.yaml of `text`: its budget scaled to the file.
///
/// The budget stands against YAML that costs far more to read than its size (alias bombs,
/// absurd nesting). Its default caps (250,000 nodes, 1,000,000 events, 10,000 merge keys) also
/// refuse a big generated file that is nothing of the kind (100,000 targets). A file cannot
/// hold more nodes than bytes without aliases, so the counts scale with the file's length and
/// never drop below the defaults, while what only aliases can do (anchors, aliases, the events
/// an alias replays, the alias/anchor ratio) and the nesting depth keep serde-saphyr's caps.
pub fn yaml_options(text: &str) -> serde_saphyr::Options {
    let budget = yaml_budget(text.len());
    serde_saphyr::options! { budget: Some(budget) }
}

/// The budget of [`yaml_options`] for a file of `len` bytes.
pub fn yaml_budget(len: usize) -> serde_saphyr::Budget {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = budget.max_nodes.max(len);
    budget.max_events = budget.max_events.max(2 * len);
    budget.max_merge_keys = budget.max_merge_keys.max(len / 16);
    budget.max_total_scalar_bytes = budget.max_total_scalar_bytes.max(len);
    budget
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

/// Turns nodes into the raw types, collecting errors.
pub struct Reader<'a> {
    pub src: &'a Source,
    pub errors: Vec<ConfigError>,
    /// Something was reported since the enclosing struct began reading its current field.
    failed: bool,
    /// The key whose value is read next, where a struct points when a key is missing in it.
    pub key: Option<Location>,
}

impl<'a> Reader<'a> {
    pub fn new(src: &'a Source) -> Self {
        Reader { src, errors: Vec::new(), failed: false, key: None }
    }

    fn report(&mut self, e: ConfigError) {
        self.failed = true;
        self.errors.push(e);
    }

    /// The text of a scalar as written (for a number or `true`, which YAML gave a type).
    fn written(&self, loc: &Location) -> &str {
        let s = Span::of(loc);
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
            span: Span::of(&node.referenced).into(),
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
            span: Span::of(&node.referenced).into(),
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

    /// A scalar's text: the string, or a number or boolean as written.
    pub(crate) fn scalar_text<'n>(&'n self, node: &'n Spanned<Node>) -> Option<Cow<'n, str>> {
        match &node.value {
            Node::Str(s) => Some(Cow::Borrowed(s)),
            Node::Bool(_) | Node::Int(_) | Node::Float => Some(Cow::Borrowed(self.written(&node.defined))),
            _ => None,
        }
    }

    /// The text of a short single-line scalar as written, to quote it in a hint.
    fn quotable(&self, node: &Spanned<Node>) -> Option<String> {
        let text = self.written(&node.referenced);
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
            span: Span::of(&key.referenced).into(),
            help,
        });
    }

    pub fn duplicate_key(&mut self, key: &Spanned<String>, at: At<'_>) {
        self.report(ConfigError::DuplicateKey {
            message: format!("`{}` is given twice in {}", key.value, at.subject()),
            src: self.src.named(),
            span: Span::of(&key.referenced).into(),
            help: format!("each key appears once: remove or merge the two `{}` entries", key.value),
        });
    }

    pub fn missing_key(&mut self, node: &Location, at: At<'_>, key: &str, what: &str) {
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
            span: Span::of(node).into(),
            label: format!("no `{key}` in here"),
            help,
        });
    }
}

/// A raw type that can be read from a node, reporting what is wrong with it.
pub trait FromNode: Sized {
    /// Convert `node`, or report why not and return `None`. `what` says what the field holds,
    /// in gevulot.yaml's terms ("a list of paths").
    fn from_node(node: Spanned<Node>, r: &mut Reader, at: At<'_>, what: &str) -> Option<Self>;

    /// The value of a field that is not written: `Some` for optional fields.
    fn absent() -> Option<Self> {
        None
    }

    /// What stands in for a field that is broken or missing, so that the rest of its struct is
    /// still read; the struct is then marked damaged.
    fn placeholder() -> Option<Self> {
        Self::absent()
    }

    /// [`FromNode::placeholder`] for a node at this place.
    fn placeholder_at(_referenced: Location, _defined: Location) -> Option<Self> {
        Self::placeholder()
    }

    /// A struct records its own damage: as the value of a map entry it does not damage the map.
    const KEEPS_ITS_DAMAGE: bool = false;
}

impl FromNode for String {
    fn from_node(node: Spanned<Node>, r: &mut Reader, at: At<'_>, what: &str) -> Option<Self> {
        if let Node::Str(s) = node.value {
            return Some(s);
        }
        if let Some(text) = r.scalar_text(&node) {
            return Some(text.into_owned());
        }
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

impl FromNode for bool {
    fn from_node(node: Spanned<Node>, r: &mut Reader, at: At<'_>, what: &str) -> Option<Self> {
        if let Node::Bool(b) = node.value {
            return Some(b);
        }
        r.wrong_type(&node, at, what, Some("write `true` or `false`".into()));
        None
    }
}

macro_rules! whole_number {
    ($($t:ty),*) => {$(
        impl FromNode for $t {
            fn from_node(node: Spanned<Node>, r: &mut Reader, at: At<'_>, what: &str) -> Option<Self> {
                if let Node::Int(n) = node.value {
                    if let Ok(n) = <$t>::try_from(n) {
                        return Some(n);
                    }
                }
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

impl<T: FromNode> FromNode for Spanned<T> {
    fn from_node(node: Spanned<Node>, r: &mut Reader, at: At<'_>, what: &str) -> Option<Self> {
        let (referenced, defined) = (node.referenced, node.defined);
        T::from_node(node, r, at, what).map(|value| Spanned { value, referenced, defined })
    }

    fn placeholder() -> Option<Self> {
        Self::placeholder_at(Location::UNKNOWN, Location::UNKNOWN)
    }

    fn placeholder_at(referenced: Location, defined: Location) -> Option<Self> {
        T::placeholder().map(|value| Spanned { value, referenced, defined })
    }

    const KEEPS_ITS_DAMAGE: bool = T::KEEPS_ITS_DAMAGE;
}

/// `key: ~` (or `key:` with nothing) is the same as leaving the key out. A value of the wrong
/// type is reported and read as absent, so a var whose value is wrong is still declared.
impl<T: FromNode> FromNode for Option<T> {
    fn from_node(node: Spanned<Node>, r: &mut Reader, at: At<'_>, what: &str) -> Option<Self> {
        match node.value {
            Node::Null => Some(None),
            _ => Some(T::from_node(node, r, at, what)),
        }
    }

    fn absent() -> Option<Self> {
        Some(None)
    }
}

/// A list: a wrong entry is reported and left out, the others are kept.
impl<T: FromNode> FromNode for Vec<T> {
    fn from_node(node: Spanned<Node>, r: &mut Reader, at: At<'_>, what: &str) -> Option<Self> {
        let Node::Seq(items) = node.value else {
            let help = match &node.value {
                Node::Map(_) => "write a list: `[a, b]`, or one `- entry` per line".to_string(),
                _ => match r.quotable(&node) {
                    Some(t) => format!("write `[{t}]`"),
                    None => "write a list: `[a, b]`, or one `- entry` per line".to_string(),
                },
            };
            r.wrong_type(&node, at, what, Some(help));
            return None;
        };
        let entry = At::Entry(&at);
        // An entry has no key of its own: a struct in it points at itself.
        r.key = None;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if let Some(v) = T::from_node(item, r, entry, what) {
                out.push(v);
            }
        }
        Some(out)
    }

    fn placeholder() -> Option<Self> {
        Some(Vec::new())
    }
}

/// A map by name. A key given twice is reported (the first is kept); a value of the wrong type
/// is left out, unless it is a struct, which stands in damaged so that its name still exists
/// (a dep on a target whose body is wrong is not a dep on an unknown target).
impl<T: FromNode> FromNode for IndexMap<Spanned<String>, T> {
    fn from_node(node: Spanned<Node>, r: &mut Reader, at: At<'_>, what: &str) -> Option<Self> {
        let Node::Map(entries) = node.value else {
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
        };
        let mut out: IndexMap<Spanned<String>, T> = IndexMap::with_capacity(entries.len());
        // Spanned keys compare by place too, so names are compared here.
        let mut seen = std::collections::HashSet::with_capacity(entries.len());
        for (key, value) in entries {
            if !seen.insert(key.value.clone()) {
                r.duplicate_key(&key, at);
                continue;
            }
            let failed = r.failed;
            let (referenced, defined) = (value.referenced, value.defined);
            r.key = Some(key.referenced);
            let v = T::from_node(value, r, At::Key(&at, &key.value), what);
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
        }
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
/// are read from a map by [`FromNode`]; unknown keys are errors, except those starting with `x-`
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

        impl $crate::yaml::read::FromNode for $name {
            const KEEPS_ITS_DAMAGE: bool = true;

            fn from_node(
                node: serde_saphyr::Spanned<$crate::yaml::read::Node>,
                r: &mut $crate::yaml::read::Reader,
                at: $crate::yaml::read::At<'_>,
                what: &str,
            ) -> Option<Self> {
                use $crate::yaml::read::{At, FromNode, Node, Slot};
                // A missing key is reported at the key this struct is the value of, if any.
                let loc = r.key.take().unwrap_or(node.referenced);
                let entries = match node.value {
                    Node::Map(entries) => entries,
                    value => {
                        let node = serde_saphyr::Spanned { value, referenced: node.referenced, defined: node.defined };
                        let keys = Self::KEYS.join(", ");
                        r.wrong_type(&node, at, what, Some(format!("write a map of its keys: {keys}")));
                        return None;
                    }
                };
                let outer = r.take_failed();
                let mut damaged = false;
                let mut unknown = false;
                $( let mut $field: Slot<$ty> = Slot::Absent; )*
                for (key, value) in entries {
                    match key.value.as_str() {
                        $(
                            stringify!($field) => {
                                if !matches!($field, Slot::Absent) {
                                    r.duplicate_key(&key, at);
                                    damaged = true;
                                    continue;
                                }
                                r.take_failed();
                                r.key = Some(key.referenced);
                                let v = <$ty as FromNode>::from_node(value, r, At::Field(&at, stringify!($field)), $what);
                                damaged |= r.take_failed() || v.is_none();
                                $field = match v {
                                    Some(v) => Slot::Given(v),
                                    None => Slot::Broken,
                                };
                            }
                        )*
                        $( _ if key.value.starts_with($crate::yaml::read::XKeys::PREFIX) => {
                            let _ = stringify!($x);
                        } )?
                        _ => {
                            r.unknown_key(&key, at, Self::KEYS);
                            unknown = true;
                            damaged = true;
                        }
                    }
                }
                $(
                    let $field: $ty = match $field {
                        Slot::Given(v) => v,
                        Slot::Broken => <$ty as FromNode>::placeholder()?,
                        Slot::Absent => match raw_struct!(@absent $ty $(, $dflt)?) {
                            Some(v) => v,
                            None => {
                                // An unknown key is likely this one misspelled: one error is enough.
                                if !unknown {
                                    r.missing_key(&loc, at, stringify!($field), $what);
                                }
                                damaged = true;
                                <$ty as FromNode>::placeholder()?
                            }
                        },
                    };
                )*
                r.restore_failed(outer || damaged);
                Some($name { $( $field, )* $( $x: $crate::yaml::read::XKeys, )? damaged })
            }

            fn placeholder() -> Option<Self> {
                Some($name {
                    $( $field: <$ty as $crate::yaml::read::FromNode>::placeholder()?, )*
                    $( $x: $crate::yaml::read::XKeys, )?
                    damaged: true,
                })
            }
        }

        impl $crate::yaml::read::Strings for $name {
            fn strings<'s>(&'s self, out: &mut Vec<&'s serde_saphyr::Spanned<String>>) {
                $( $crate::yaml::read::Strings::strings(&self.$field, out); )*
            }
        }
    };
    (@absent $ty:ty, default) => { Some(<$ty>::default()) };
    (@absent $ty:ty) => { <$ty as $crate::yaml::read::FromNode>::absent() };
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
    use crate::config::raw::RawFile;

    /// The fast path (serde's derive) and this reader read a valid file the same, every field
    /// and place, through anchors, aliases and merges.
    #[test]
    fn both_readings_of_a_valid_file_agree() {
        let yaml = r#"
vars: { cc: gcc, pin: ~, n: 3 }
default: all
targets:
  gen:
    description: 1.10
    inputs: [VERSION, "src/**/*.c"]
    outputs: [build/v.h]
    run: &cmd |
      ${cc} -o x
      echo yes
    depfile: build/v.d
    env: { LC_ALL: C, N: 7 }
    pass_env: [HOME]
    tools: [gcc]
    cache: false
    restore: hardlink
  other:
    run: *cmd
  nanos:
    fetch:
      url: https://example.com/x.tgz
      sha256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
      extract: { strip_components: 1, max_size: 1G, max_entries: 10 }
      into: build/nanos
  root:
    stage:
      into: build/root
      copy: [{ from: build/x, to: x }]
      libs_for: [build/x]
      lib_dir: lib
      search: [vendor]
  manifest:
    manifest:
      program: x
      args: [-v]
      env: { A: b }
      dirs: [lib]
      files: [etc/x]
      map_dirs: { "a/*": /a }
      workspace: { mount: "%1", path: /workspace }
      gpu: true
      cpus: 2
      memory: 2g
      readonly_rootfs: false
      reboot_on_exit: true
      klibs: [k]
      klib_dir: build/k
      passthrough: { p: q }
      base_volume_size: 500m
      root: build/root
      into: build/m.json
  image:
    deps: [root, manifest, nanos]
    image: { builder: native, manifest: build/m.json, root: build/root, into: build/i.img, release: build/nanos, size: 256m, ops_extras: [env], nanos_version: 0.1.51 }
  all:
    deps: [gen, other, image]
"#;
        let fast: RawFile = serde_saphyr::from_str(yaml).unwrap();
        let source = Source::new("gevulot.yaml", yaml);
        let mut reader = Reader::new(&source);
        let node = parse_nodes(yaml).unwrap();
        let slow = RawFile::from_node(node, &mut reader, At::Top, "a map").unwrap();
        assert!(reader.errors.is_empty(), "{:?}", reader.errors);
        assert_eq!(format!("{fast:#?}"), format!("{slow:#?}"));
    }
}
