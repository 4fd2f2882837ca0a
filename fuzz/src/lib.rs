//! The fuzz harness: one function per surface that reads untrusted bytes, each called by its
//! cargo-fuzz target in `fuzz_targets/` and, on stable, by `tests/fuzz_corpus.rs`, which replays
//! the saved corpus and every crash input through these same functions.
//!
//! A function returns normally for any input: an error from gvbuild is a fine answer. A panic, a
//! hang or an unbounded allocation is a bug. The `assert!`s below check promises the code makes
//! (a validated graph survives its own parse cache; a depfile's inputs are listed once each).
//!
//! Input formats (so that a saved input can be read by a person):
//! - `config`: a gevulot.yaml; after a NUL, `name=value` lines are `--set` overrides.
//! - `depfile`: a depfile.
//! - `state`: the bytes of a state file, read as each of `state.bin`, `journal`, `stat.bin`,
//!   `graph.bin` and `explain.bin` (random bytes rarely pass the blake3 check: see `sealed`).
//! - `sealed`: the first byte picks a state file (0 `state.bin`, 1 `stat.bin`, 2 `graph.bin`,
//!   3 `explain.bin`, 4 `journal`); the rest is a postcard payload that is sealed with the right
//!   header and checksum, so it reaches the decoders. For the journal the rest is frames, each a
//!   u16 little-endian length and that many payload bytes, given valid checksums.
//! - `image`: the first byte `n` pads the image file with zeros to `n * 16 KiB` (0: no padding),
//!   so that a few KiB of log can stand for an image whose data lies megabytes in; the rest is
//!   the image's first bytes. The image is described as `gvbuild inspect` does, each file's
//!   content read back, and, when its files are small, extracted.

use std::cell::RefCell;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use gvbuild::config::ConfigErrors;
use gvbuild::diag::Source;
use gvbuild::fingerprint::depfile;
use gvbuild::fingerprint::state::{ExplainStore, Explained, State};
use gvbuild::fingerprint::{KeyParts, StatCache, StepDef};
use gvbuild::graph::Graph;
use gvbuild::tfs::{self, Kind};

/// gevulot.yaml: parse, validate, and the graph's round trip through the parse cache.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (yaml, sets) = text.split_once('\0').unwrap_or((text, ""));
    let overrides: Vec<(String, String)> =
        sets.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let source = Source::new("gevulot.yaml", yaml);
    match Graph::validate(&source, &overrides) {
        Ok(graph) => {
            let bytes = graph.to_cache_bytes().expect("a validated graph seals");
            let cached = Graph::from_cache_bytes(&bytes).expect("a sealed graph reads back");
            assert_eq!(cached.key, graph.key);
            assert_eq!(cached.step_deps, graph.step_deps);
            assert_eq!(cached.inferred, graph.inferred);
            let json = |g: &Graph| serde_json::to_string(&g.project).expect("a project serializes");
            assert_eq!(json(&cached), json(&graph));
            let _ = graph.select(&[]);
            for t in &graph.project.targets {
                let _ = graph.select(std::slice::from_ref(&t.name));
            }
        }
        Err(errors) => render(&errors),
    }
}

/// Render the errors as the CLI does (spans into the YAML, related errors).
fn render(errors: &ConfigErrors) {
    let mut out = String::new();
    let handler = miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor());
    let _ = handler.render_report(&mut out, errors);
}

/// A depfile: parsed as ninja reads it; each input is listed once.
pub fn depfile(data: &[u8]) {
    match depfile::parse(data) {
        Ok(d) => {
            let mut seen = std::collections::HashSet::new();
            for input in &d.inputs {
                assert!(seen.insert(&input.path), "input {:?} listed twice", input.path);
                if let Ok(p) = std::str::from_utf8(&input.path) {
                    let _ = gvbuild::paths::normalize_rel(p);
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// The bytes of one file as every state file.
pub fn state(data: &[u8]) {
    let dir = scratch();
    let _ = State::from_bytes(&dir, Some(data), None);
    let _ = State::from_bytes(&dir, None, Some(data));
    let _ = StatCache::from_bytes(data);
    if let Some(g) = Graph::from_cache_bytes(data) {
        exercise_graph(&g);
    }
    let _ = ExplainStore::from_bytes(&dir, Some(data));
}

/// A decoded graph answers the questions a build asks of it without panicking, and seals again.
fn exercise_graph(g: &Graph) {
    let _ = g.select(&[]);
    for i in 0..g.len() {
        let _ = g.inferred_of(i);
        let _ = g.depends_on(i, 0);
    }
    let bytes = g.to_cache_bytes().expect("a decoded graph seals");
    assert!(Graph::from_cache_bytes(&bytes).is_some(), "a decoded graph must read back");
}

/// A payload sealed with a valid header and checksum, decoded as the state file it is for.
pub fn sealed(data: &[u8]) {
    let Some((&kind, payload)) = data.split_first() else { return };
    let headers = headers();
    let dir = scratch();
    match kind % 5 {
        0 => {
            let _ = State::from_bytes(&dir, Some(&seal(&headers.state, payload)), None);
        }
        1 => {
            let _ = StatCache::from_bytes(&seal(&headers.stat, payload));
        }
        2 => {
            if let Some(g) = Graph::from_cache_bytes(&seal(&headers.graph, payload)) {
                exercise_graph(&g);
            }
        }
        3 => {
            let _ = ExplainStore::from_bytes(&dir, Some(&seal(&headers.explain, payload)));
        }
        _ => {
            let _ = State::from_bytes(&dir, None, Some(&journal(payload)));
        }
    }
}

/// The magic and version (the first 12 bytes) of each sealed state file, as gvbuild writes them.
struct Headers {
    state: [u8; 12],
    stat: [u8; 12],
    graph: [u8; 12],
    explain: [u8; 12],
}

fn headers() -> &'static Headers {
    static HEADERS: OnceLock<Headers> = OnceLock::new();
    HEADERS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temp folder");
        let dir = dir.path();
        let head = |path: PathBuf| -> [u8; 12] {
            let bytes = fs::read(&path).expect("gvbuild wrote the state file");
            bytes[..12].try_into().expect("a sealed header")
        };
        let mut state = State::from_bytes(dir, None, None);
        state.set("t", None);
        state.save().expect("state.bin written");
        let stat = StatCache::default();
        stat.record("state.bin", &dir.join("state.bin"), [0; 32]);
        stat.save(&dir.join("stat.bin")).expect("stat.bin written");
        let mut explain = ExplainStore::from_bytes(dir, None);
        let step = StepDef { kind: "".into(), command: "".into(), outputs: Vec::new(), depfile: None };
        let parts = KeyParts {
            version: 0,
            step,
            inputs: Default::default(),
            deps: Default::default(),
            env: Default::default(),
            pass_env: Default::default(),
            tools: Default::default(),
        };
        explain.set("t", Explained { parts, discovered: Default::default() });
        explain.save().expect("explain.bin written");
        let source = Source::new("gevulot.yaml", "targets:\n  t:\n    outputs: [o]\n    run: echo > o\n");
        let graph = Graph::validate(&source, &[]).expect("a valid build file").to_cache_bytes();
        Headers {
            state: head(dir.join("state.bin")),
            stat: head(dir.join("stat.bin")),
            graph: graph.expect("graph.bin sealed")[..12].try_into().expect("a sealed header"),
            explain: head(dir.join("explain.bin")),
        }
    })
}

/// A sealed file: magic and version, payload length, blake3 of the payload, the payload.
fn seal(header: &[u8; 12], payload: &[u8]) -> Vec<u8> {
    let mut out = header.to_vec();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(blake3::hash(payload).as_bytes());
    out.extend_from_slice(payload);
    out
}

/// Journal frames with valid checksums: u32 length, 8 bytes of blake3, the payload.
fn journal(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let [a, b, rest @ ..] = data {
        let len = usize::from(u16::from_le_bytes([*a, *b])).min(rest.len());
        let (payload, tail) = rest.split_at(len);
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.extend_from_slice(&blake3::hash(payload).as_bytes()[..8]);
        out.extend_from_slice(payload);
        data = tail;
    }
    out
}

/// Files extracted by one input at most: more is a disk benchmark, not a test of the reader.
const MAX_EXTRACT: u64 = 16 << 20;

/// An image: `gvbuild inspect` (the JSON and the text), every file read back, and `--extract`.
pub fn image(data: &[u8]) {
    let Some((&pad, bytes)) = data.split_first() else { return };
    let dir = scratch();
    let path = dir.join("image");
    let out = dir.join("out");
    let written = fs::write(&path, bytes).and_then(|()| {
        let len = (u64::from(pad) * (16 << 10)).max(bytes.len() as u64);
        fs::OpenOptions::new().write(true).open(&path)?.set_len(len)
    });
    written.expect("the image written to a temp file");
    if let Ok(d) = gvbuild::inspect::describe(&path) {
        let _ = gvbuild::inspect::render(&d);
    }
    let Ok(file) = fs::File::open(&path) else { return };
    let Ok(disk) = gvbuild::disk::read_disk(&file) else { return };
    let mut total = 0u64;
    for (_, vol) in &disk.volumes {
        for (_, node) in tfs::walk(&vol.root) {
            if let Kind::File { len, .. } = tfs::kind(node) {
                total = total.saturating_add(len);
                let _ = vol.copy_file(&file, node, &mut io::sink());
            }
        }
    }
    if total <= MAX_EXTRACT {
        let _ = fs::remove_dir_all(&out);
        let _ = gvbuild::inspect::extract(&path, &out);
        let _ = fs::remove_dir_all(&out);
    }
}

/// A temp folder for this thread, in memory where the system has /dev/shm.
fn scratch() -> PathBuf {
    thread_local! {
        static DIR: RefCell<Option<tempfile::TempDir>> = const { RefCell::new(None) };
    }
    DIR.with(|d| {
        let mut d = d.borrow_mut();
        let dir = d.get_or_insert_with(|| {
            let shm = Path::new("/dev/shm");
            let builder = tempfile::Builder::new().prefix("gvbuild-fuzz").tempdir_in(shm);
            builder.or_else(|_| tempfile::tempdir()).expect("a temp folder")
        });
        dir.path().to_path_buf()
    })
}
