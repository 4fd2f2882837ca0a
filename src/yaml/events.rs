//! gevulot.yaml as a stream of YAML events, with aliases replayed and a budget kept.
//!
//! The grammar is granit-parser's (the YAML 1.2 parser serde-saphyr is built on): it turns the
//! text into events, each with its byte range. This layer gives [`super::read`] what a typed
//! reader needs on top of them:
//!
//! - **Aliases.** Every anchored node's events are recorded as they are parsed (aliases inside
//!   it stay aliases), and an alias `*name` replays its anchor's events, so the reader never
//!   sees an alias. A replayed event is [`Located::referenced`] at the alias (where the value is
//!   used) and [`Located::defined`] at the anchored node.
//! - **A budget**, against YAML that costs far more to read than its size. With `max(1,000,000,
//!   2 × bytes)` as the limit (a file without aliases has fewer events than bytes): at most
//!   that many events delivered (replays included), at most that many recorded for anchors in
//!   all (an event inside nested anchors is recorded once for each), no anchor whose full
//!   expansion would alone exceed it (a "billion laughs" is refused where it is written, used
//!   or not, after a few hundred bytes), and nesting at most [`MAX_DEPTH`] deep.
//! - **One stop.** A YAML syntax error or a breach of the budget ends the stream: from then on
//!   every event is [`Ev::End`], and [`Events::stop`] says why.
//!
//! Merge keys (`<<`) are the reader's: it replays a merged map with [`Events::replay`].

use std::borrow::Cow;
use std::rc::Rc;

use granit_parser::{ErrorKind, Event, Parser, ScalarStyle, ScanError, StrInput};
use rustc_hash::FxHashMap;

use crate::diag::Span;

/// The deepest nesting of lists and maps read (the file's top-level map is depth 1).
pub const MAX_DEPTH: usize = 64;

/// One YAML event, as the reader sees it: no aliases, no documents, no anchors.
#[derive(Debug, Clone)]
pub enum Ev<'t> {
    /// A scalar's text, after escapes and folding. `plain` when written without quotes, block
    /// style or a `!!str` tag: YAML then gives it a type (null, boolean, number) by its text.
    Scalar {
        text: Cow<'t, str>,
        plain: bool,
    },
    SeqStart,
    SeqEnd,
    MapStart,
    MapEnd,
    /// The end of the document, or of what could be read (see [`Events::stop`]).
    End,
    /// An alias to the anchor of this id: recorded in anchors' events, delivered only to skip it
    /// ([`Events::shallow`]).
    Alias(usize),
}

/// An event and where it is.
#[derive(Debug, Clone)]
pub struct Located<'t> {
    pub ev: Ev<'t>,
    /// Where the value is used: the alias for a replayed event, else the event itself.
    pub referenced: Span,
    /// Where the value is written.
    pub defined: Span,
}

/// Why the stream ended before the document did.
#[derive(Debug)]
pub enum Stop {
    /// A YAML syntax error, as granit-parser words it, its byte offset, and the kinds the
    /// reader has a help for.
    Syntax { message: String, offset: usize, kind: SyntaxKind },
    /// The budget was breached (what, in words) at this place.
    Budget { breach: String, at: Span },
    /// A second document (`---` after the first): gevulot.yaml is one.
    SecondDocument { at: Span },
}

/// The syntax errors [`super::read`] adds a help to, from granit-parser's `ErrorKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyntaxKind {
    /// An alias names no anchor defined before it (often an unquoted glob: `[*.c]`).
    UnknownAnchor,
    /// `: ` inside a plain value (`run: echo a: b`).
    MappingValue,
    Other,
}

/// An anchored node's events and how many events it expands to, aliases in it replayed.
struct Anchor<'t> {
    events: Rc<[Located<'t>]>,
    size: usize,
}

/// An anchored node being parsed.
struct Recording<'t> {
    id: usize,
    events: Vec<Located<'t>>,
    /// Open lists and maps in it.
    open: usize,
    size: usize,
}

/// Events being replayed: an anchor's or a merged map's.
struct Replay<'t> {
    events: Rc<[Located<'t>]>,
    next: usize,
    /// Where replayed events are referenced: the outermost alias, if any.
    at: Option<Span>,
}

/// The event stream of one gevulot.yaml (see the module docs).
pub struct Events<'t> {
    parser: Parser<'t, StrInput<'t>>,
    peeked: Option<Located<'t>>,
    replays: Vec<Replay<'t>>,
    anchors: FxHashMap<usize, Anchor<'t>>,
    recording: Vec<Recording<'t>>,
    /// Open lists and maps among the events delivered, counting those the text is inside of.
    depth: usize,
    delivered: usize,
    /// Events copied into anchors' recordings.
    recorded: usize,
    max_events: usize,
    /// Whether the document has begun, and ended.
    begun: bool,
    ended: bool,
    /// Where the text starts in the file: added to every place.
    base: usize,
    /// The end of the text in the file, where an error at the end points.
    len: usize,
    pub stop: Option<Stop>,
    /// Aliases are delivered as [`Ev::Alias`], not replayed: while a value is skipped unread.
    pub shallow: bool,
}

impl<'t> Events<'t> {
    /// The events of `text`, a part of the file that starts at byte `base` of it and lies
    /// `depth` lists and maps deep in it (0 and 0 for the whole file): places and depths are
    /// the file's.
    pub fn new(text: &'t str, base: usize, depth: usize) -> Self {
        let options = granit_parser::Options::default();
        Events {
            parser: Parser::new_from_str_with_options(text, options),
            peeked: None,
            replays: Vec::new(),
            anchors: FxHashMap::default(),
            recording: Vec::new(),
            depth,
            delivered: 0,
            recorded: 0,
            max_events: Self::limit(text.len()),
            begun: false,
            ended: false,
            base,
            len: base + text.len(),
            stop: None,
            shallow: false,
        }
    }

    /// The next event, without taking it.
    pub fn peek(&mut self) -> &Located<'t> {
        let next = match self.peeked.take() {
            Some(e) => e,
            None => self.deliver(),
        };
        self.peeked.insert(next)
    }

    /// The next event.
    pub fn take(&mut self) -> Located<'t> {
        match self.peeked.take() {
            Some(e) => e,
            None => self.deliver(),
        }
    }

    /// Deliver `events` (one whole node, already delivered once) again, before what follows;
    /// nothing may be peeked. Their places stay theirs.
    pub fn replay(&mut self, events: Rc<[Located<'t>]>) {
        debug_assert!(self.peeked.is_none(), "a replay goes before the next event");
        let at = self.replays.last().and_then(|r| r.at);
        self.replays.push(Replay { events, next: 0, at });
    }

    /// After the document's value has been read: whether a second document follows, which is
    /// refused.
    pub fn finish(&mut self) {
        if self.stop.is_some() {
            return;
        }
        loop {
            match self.parser.next_event() {
                Some(Ok((Event::DocumentStart(..), span))) => {
                    let at = self.span_of(&span);
                    self.stop = Some(Stop::SecondDocument { at });
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return self.syntax(&e),
                None => return,
            }
        }
    }

    fn end(&self) -> Located<'t> {
        let at = Span::new(self.len, 0);
        Located { ev: Ev::End, referenced: at, defined: at }
    }

    fn deliver(&mut self) -> Located<'t> {
        if self.stop.is_some() {
            return self.end();
        }
        let mut e = loop {
            if let Some(replay) = self.replays.last_mut() {
                let Some(e) = replay.events.get(replay.next) else {
                    self.replays.pop();
                    continue;
                };
                replay.next += 1;
                let mut e = e.clone();
                if let Some(at) = replay.at {
                    e.referenced = at;
                }
                match e.ev {
                    Ev::Alias(id) if !self.shallow => self.alias(id, e.referenced),
                    _ => break e,
                }
                continue;
            }
            let e = self.pull();
            match e.ev {
                Ev::Alias(id) if !self.shallow => self.alias(id, e.referenced),
                _ => break e,
            }
        };
        if self.stop.is_some() {
            return self.end();
        }
        self.delivered += 1;
        match e.ev {
            Ev::SeqStart | Ev::MapStart => self.depth += 1,
            Ev::SeqEnd | Ev::MapEnd => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
        if self.depth > MAX_DEPTH {
            self.breach(format!("nesting deeper than {MAX_DEPTH} levels"), e.referenced);
            e = self.end();
        } else if self.delivered > self.max_events {
            self.breach(format!("more than {} YAML events", self.max_events), e.referenced);
            e = self.end();
        }
        e
    }

    /// How many events were delivered (replays included), for a caller that adds up the parts
    /// of one file against the file's limit.
    pub fn delivered(&self) -> usize {
        self.delivered
    }

    /// The event limit of a file of `len` bytes (see the module docs).
    pub fn limit(len: usize) -> usize {
        1_000_000usize.max(2 * len)
    }

    /// Start replaying the anchor `id`, used at `at`.
    fn alias(&mut self, id: usize, at: Span) {
        match self.anchors.get(&id) {
            Some(anchor) => {
                let outer = self.replays.last().and_then(|r| r.at);
                self.replays.push(Replay { events: anchor.events.clone(), next: 0, at: outer.or(Some(at)) });
            }
            // Its node is still being parsed: the alias is inside its own anchor.
            None => self.breach("an alias inside the node it names, which would never end".into(), at),
        }
    }

    fn breach(&mut self, breach: String, at: Span) {
        if self.stop.is_none() {
            self.stop = Some(Stop::Budget { breach, at });
        }
    }

    fn syntax(&mut self, e: &ScanError) {
        let mark = e.marker();
        let offset = (self.base + mark.byte_offset().unwrap_or(mark.index())).min(self.len);
        let kind = match e.kind() {
            ErrorKind::UnknownAnchor => SyntaxKind::UnknownAnchor,
            ErrorKind::MappingValueNotAllowed => SyntaxKind::MappingValue,
            _ => SyntaxKind::Other,
        };
        self.stop = Some(Stop::Syntax { message: e.info(), offset, kind });
    }

    /// The next event from the parser, recorded into the anchors being parsed.
    fn pull(&mut self) -> Located<'t> {
        if self.ended {
            return self.end();
        }
        loop {
            let (event, span) = match self.parser.next_event() {
                Some(Ok(next)) => next,
                Some(Err(e)) => {
                    self.syntax(&e);
                    return self.end();
                }
                None => {
                    self.ended = true;
                    return self.end();
                }
            };
            let at = self.span_of(&span);
            let (ev, anchor) = match event {
                Event::DocumentStart(..) if !self.begun => {
                    self.begun = true;
                    continue;
                }
                Event::DocumentEnd | Event::StreamEnd | Event::DocumentStart(..) => {
                    self.ended = true;
                    return self.end();
                }
                Event::Alias(id) => (Ev::Alias(id), 0),
                Event::Scalar(text, style, anchor, tag) => {
                    let string_tag = tag.is_some_and(|t| t.is_yaml_core_schema_tag("str"));
                    (Ev::Scalar { text, plain: style == ScalarStyle::Plain && !string_tag }, anchor)
                }
                Event::SequenceStart(_, anchor, _) => (Ev::SeqStart, anchor),
                Event::SequenceEnd => (Ev::SeqEnd, 0),
                Event::MappingStart(_, anchor, _) => (Ev::MapStart, anchor),
                Event::MappingEnd => (Ev::MapEnd, 0),
                _ => continue,
            };
            let e = Located { ev, referenced: at, defined: at };
            self.record(&e, anchor);
            return e;
        }
    }

    /// The file's byte range of a parser's span.
    fn span_of(&self, span: &granit_parser::Span) -> Span {
        match (span.start.byte_offset(), span.end.byte_offset()) {
            (Some(start), Some(end)) => Span::new(self.base + start, end.saturating_sub(start)),
            _ => Span::new(self.base + span.start.index(), span.len()),
        }
    }

    /// Add `e` to every anchored node being parsed, and start recording one if `e` begins it.
    fn record(&mut self, e: &Located<'t>, anchor: usize) {
        if self.recording.is_empty() && anchor == 0 {
            return;
        }
        let size = match e.ev {
            Ev::Alias(id) if self.recording.iter().any(|r| r.id == id) => {
                self.breach("an alias inside the node it names, which would never end".into(), e.referenced);
                1
            }
            Ev::Alias(id) => self.anchors.get(&id).map_or(1, |a| a.size),
            _ => 1,
        };
        let step: isize = match e.ev {
            Ev::SeqStart | Ev::MapStart => 1,
            Ev::SeqEnd | Ev::MapEnd => -1,
            _ => 0,
        };
        let mut too_big = None;
        self.recorded = self.recorded.saturating_add(self.recording.len());
        if self.recorded > self.max_events {
            let breach = format!("anchors that hold more than {} YAML events in all", self.max_events);
            self.breach(breach, e.defined);
        }
        for r in &mut self.recording {
            r.events.push(e.clone());
            r.size = r.size.saturating_add(size);
            r.open = r.open.saturating_add_signed(step);
            if r.size > self.max_events {
                too_big = r.events.first().map(|f| f.defined);
            }
        }
        if let Some(at) = too_big {
            let breach = format!("an anchor that expands to more than {} YAML events", self.max_events);
            self.breach(breach, at);
        }
        if anchor != 0 {
            let open = usize::from(step == 1);
            self.recording.push(Recording { id: anchor, events: vec![e.clone()], open, size: 1 });
        }
        // Every recording whose node is complete (the innermost first) becomes an anchor.
        while self.recording.last().is_some_and(|r| r.open == 0) {
            let Some(r) = self.recording.pop() else { break };
            self.anchors.insert(r.id, Anchor { events: r.events.into(), size: r.size });
        }
    }
}
