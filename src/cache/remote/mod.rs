//! The shared cache: a remote store behind the local one, shared by CI and the team.
//!
//! # Where it sits in a step's life
//! fingerprint -> fresh? -> restore (local, then remote)? -> run -> store (local, then upload).
//! A remote hit is written into the local cache first, then restored by the local path, so a
//! remote result is verified exactly as a local one is. A step that ran and was stored locally
//! is queued for upload; a bounded queue and two uploader threads keep uploads off the critical
//! path, and the build waits for the queue at its end.
//!
//! # Protocols
//! One [`Store`] per protocol, chosen by the URL's scheme: [`http`] for the Bazel HTTP cache
//! (`http://`, `https://`), [`grpc`] for REAPI v2 over gRPC (`grpc://`, `grpcs://`). Both carry
//! the same REAPI messages ([`reapi`]), so what one server holds another could serve.
//!
//! # Names
//! Blake3 stays the local digest. The server names blobs by their SHA-256 (`/cas/HASH`), which
//! the local cache keeps beside each blob once a remote is configured, computed in the read
//! pass that stores the blob (so uploads and lookups never hash again). The action-cache key of
//! a step is [`action_key`]: the SHA-256 of a fixed prefix and gvbuild's own key, for every step
//! kind. Depfile lists (the first level of a two-level key) are shared as an action entry too,
//! under [`deps_key`], whose one output file is the lists as JSON: every `ac/` body on the
//! server is an `ActionResult` that names only blobs in `cas/`.
//!
//! # Trust
//! Every blob downloaded is verified against its SHA-256 (and size) before it is used; a
//! mismatch is a miss and a warning naming the blob and the entry, never an output. An action
//! entry cannot be verified that way: whoever can write the action cache is trusted.
//!
//! # The server never breaks a build
//! A 404 (a gRPC `NOT_FOUND`) is an ordinary miss. A server asking to slow down
//! (`RESOURCE_EXHAUSTED`, HTTP 429) is asked again after a pause, within the call's budget
//! ([`backoff`]); only then is it a failure. Any other failure (refused, timed out, 5xx
//! or another gRPC status, a truncated body, a 413) is counted; the step goes on locally, the build prints one warning at its end, and after
//! [`GIVE_UP_AFTER`] failures gvbuild stops asking the server for the rest of the build.

pub mod backlog;
pub mod backoff;
pub mod grpc;
pub mod http;
pub mod reapi;

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::{ActionEntry, Cache};
use crate::fingerprint::hash::hex;
use crate::fingerprint::outputs::{OutFile, OutLink, OutputTree};
use crate::fingerprint::Digest;

/// Server failures after which the build stops asking the server.
pub const GIVE_UP_AFTER: usize = 3;
/// Results waiting for upload before a finished step waits for room.
const QUEUE: usize = 64;
const UPLOADERS: usize = 2;
/// Trees, logs and depfile lists are read into memory; a bigger one is refused.
const MAX_SMALL_BLOB: u64 = 64 << 20;
/// Output files and logs up to this size travel inside their action entry too.
const INLINE_MAX: u64 = 16 << 10;
/// The file name under which the depfile lists travel in their action entry.
const DEPS_FILE: &str = "gvbuild-deps.json";
const STATS_FILE: &str = "remote-stats.json";

/// A blob's body as it arrives, and the length the server announced for it.
pub type BlobReader = (Option<u64>, Box<dyn Read + Send>);

/// A failure of the server or of the way to it (a 404 or a gRPC `NOT_FOUND` is no failure: it is
/// `Ok(None)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteError {
    /// The way to the server failed (refused, reset, timed out), or its answer made no sense.
    Transport(String),
    /// A local file read for an upload no longer has the digest it was keyed with (it changed
    /// while the build ran): the client's problem, never the server's, and nothing was sent.
    Changed(String),
    /// An HTTP status other than 404 (and other than 429 and 503, which are [`RemoteError::Busy`]).
    Status(u16),
    /// HTTP 429 or 503: the server asks to come back later, after `after` when it said
    /// (`Retry-After` in seconds); [`backoff`] waits it out.
    Busy { status: u16, after: Option<std::time::Duration> },
    /// A gRPC status other than `OK` and `NOT_FOUND`: its code's name (`UNAVAILABLE`) and the
    /// server's message.
    Grpc { code: &'static str, message: String },
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteError::Transport(m) | RemoteError::Changed(m) => f.write_str(m),
            RemoteError::Status(413) => f.write_str("HTTP status 413: the server refuses a body this big"),
            RemoteError::Status(s) => write!(f, "HTTP status {s}"),
            RemoteError::Busy { status, after: Some(after) } => {
                write!(f, "HTTP status {status} (busy; come back in {} s)", after.as_secs())
            }
            RemoteError::Busy { status, after: None } => write!(f, "HTTP status {status} (busy)"),
            RemoteError::Grpc { code, message } if message.is_empty() => write!(f, "gRPC status {code}"),
            RemoteError::Grpc { code, message } => write!(f, "gRPC status {code}: {message}"),
        }
    }
}

/// A blob's bytes for an upload, read afresh for each try of it.
#[derive(Clone, Copy)]
pub enum Body<'a> {
    Bytes(&'a [u8]),
    /// A file, hashed as it is read: the read that would hand over its last byte fails instead
    /// when the bytes are not the blob's (the file changed after it was hashed, or ended early),
    /// so a file never reaches a server under a digest it does not have
    /// ([`RemoteError::Changed`], through [`read_error`]).
    File(&'a Path),
}

impl<'a> Body<'a> {
    /// A reader of the bytes of `blob`, from the start.
    pub fn open(self, blob: &reapi::Digest) -> Result<Box<dyn Read + Send + 'a>, RemoteError> {
        match self {
            Body::Bytes(b) => Ok(Box::new(b)),
            Body::File(path) => {
                let file = File::open(path)
                    .map_err(|e| RemoteError::Transport(format!("cannot read {}: {e}", path.display())))?;
                let mut want = [0u8; 32];
                hex::decode_to_slice(&blob.hash, &mut want)
                    .map_err(|e| RemoteError::Transport(format!("blob digest {}: {e}", blob.hash)))?;
                Ok(Box::new(Checked {
                    inner: file,
                    path,
                    hash: sha2::Sha256::new(),
                    want,
                    left: blob.size_bytes.max(0) as u64,
                }))
            }
        }
    }
}

/// [`Body::File`]'s reader.
struct Checked<'a> {
    inner: File,
    path: &'a Path,
    hash: sha2::Sha256,
    want: [u8; 32],
    left: u64,
}

/// The error a [`Checked`] read ends with.
#[derive(Debug)]
struct ChangedFile(String);

impl fmt::Display for ChangedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ChangedFile {}

impl Read for Checked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let room = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..room])?;
        let changed = || {
            std::io::Error::other(ChangedFile(format!(
                "{} changed after it was hashed (it no longer has the digest it was keyed with); \
                 nothing of it was uploaded: build again",
                self.path.display()
            )))
        };
        if n == 0 {
            return Err(changed());
        }
        self.hash.update(&buf[..n]);
        self.left -= n as u64;
        if self.left == 0 && <[u8; 32]>::from(self.hash.clone().finalize()) != self.want {
            return Err(changed());
        }
        Ok(n)
    }
}

/// An error reading an upload's body: [`RemoteError::Changed`] when a [`Body::File`] no longer
/// has its digest, else the read's failure.
pub fn read_error(blob: &reapi::Digest, e: std::io::Error) -> RemoteError {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<ChangedFile>()) {
        Some(ChangedFile(why)) => RemoteError::Changed(why.clone()),
        None => RemoteError::Transport(format!("reading blob {} to upload it: {e}", blob.hash)),
    }
}

/// One protocol's client: the action cache and the content-addressed store. Blobs are named by
/// their SHA-256 and size ([`reapi::Digest`]); a protocol that names them by the hash alone
/// (HTTP) ignores the size.
pub trait Store: Send + Sync {
    /// The encoded `ActionResult` stored under `key` (see [`action_key`]).
    fn get_action(&self, key: &reapi::Digest) -> Result<Option<Vec<u8>>, RemoteError>;
    fn put_action(&self, key: &reapi::Digest, body: &[u8]) -> Result<(), RemoteError>;
    fn has_blob(&self, blob: &reapi::Digest) -> Result<bool, RemoteError>;
    /// Of `blobs`, those the server lacks. One question per blob unless the protocol can ask
    /// for many at once.
    fn find_missing(&self, blobs: &[reapi::Digest]) -> Result<Vec<reapi::Digest>, RemoteError> {
        let mut missing = Vec::new();
        for b in blobs {
            if !self.has_blob(b)? {
                missing.push(b.clone());
            }
        }
        Ok(missing)
    }
    fn get_blob(&self, blob: &reapi::Digest) -> Result<Option<BlobReader>, RemoteError>;
    /// Send the blob, whose `size_bytes` bytes `body` yields (opened again for a retry).
    fn put_blob(&self, blob: &reapi::Digest, body: Body<'_>) -> Result<(), RemoteError>;
    /// How hard the server pushed back so far: the calls made again, and the fewest calls the
    /// client kept in flight ([`backoff::Window::narrowest`]).
    fn pressure(&self) -> (u64, usize) {
        (0, backoff::WIDEST)
    }
}

/// A store shared by several owners (remote execution's engine is its cache too).
impl<S: Store + ?Sized> Store for Arc<S> {
    fn get_action(&self, key: &reapi::Digest) -> Result<Option<Vec<u8>>, RemoteError> {
        (**self).get_action(key)
    }
    fn put_action(&self, key: &reapi::Digest, body: &[u8]) -> Result<(), RemoteError> {
        (**self).put_action(key, body)
    }
    fn has_blob(&self, blob: &reapi::Digest) -> Result<bool, RemoteError> {
        (**self).has_blob(blob)
    }
    fn find_missing(&self, blobs: &[reapi::Digest]) -> Result<Vec<reapi::Digest>, RemoteError> {
        (**self).find_missing(blobs)
    }
    fn get_blob(&self, blob: &reapi::Digest) -> Result<Option<BlobReader>, RemoteError> {
        (**self).get_blob(blob)
    }
    fn put_blob(&self, blob: &reapi::Digest, body: Body<'_>) -> Result<(), RemoteError> {
        (**self).put_blob(blob, body)
    }
    fn pressure(&self) -> (u64, usize) {
        (**self).pressure()
    }
}

/// How the build was told to use a remote cache.
pub struct RemoteOptions {
    pub url: String,
    pub read_only: bool,
    /// `Name: value` pairs, sent only to `url`.
    pub headers: Vec<(String, String)>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub timeout: Duration,
}

/// A step's platform properties, by name (`platform:` and `--platform NAME=VALUE`).
pub type Platform = std::collections::BTreeMap<String, String>;

/// The action-cache key of a step whose gvbuild key is `key` and whose platform properties
/// are `platform`.
///
/// In REAPI an action is named by the digest of an encoded `Action` message; a cached step has
/// no `Action`, so its key is the digest of other bytes: `gvbuild action v1\0`, gvbuild's
/// 32-byte key, then per property in name order its name and value, each as a little-endian
/// u64 length and the bytes. The hash is the SHA-256 of those bytes and the size is their
/// length (50 with no properties), so the digest is a true one, of bytes that are never
/// uploaded: a server that checks the hash's form (64 lowercase hex digits) or the size's sign
/// accepts it, and one that looks for the `Action` in its CAS (BuildGrid does, to refresh it)
/// finds nothing and goes on. Over HTTP only the hash is used (`ac/HASH`), the same on both
/// protocols.
pub fn action_key(key: &Digest, platform: &Platform) -> reapi::Digest {
    prefixed_digest(b"gvbuild action v1\0", key, platform)
}

/// The action-cache key under which the depfile lists of first-level key `first` are shared
/// (made as [`action_key`] is, with another prefix).
pub fn deps_key(first: &Digest, platform: &Platform) -> reapi::Digest {
    prefixed_digest(b"gvbuild depfile lists v1\0", first, platform)
}

fn prefixed_digest(prefix: &[u8], key: &Digest, platform: &Platform) -> reapi::Digest {
    let mut h = sha2::Sha256::new();
    h.update(prefix);
    h.update(key);
    let mut len = prefix.len() + key.len();
    for (name, value) in platform {
        for part in [name, value] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
            len += 8 + part.len();
        }
    }
    digest_of(&h.finalize().into(), len as u64)
}

/// The URL as it may be shown: no user or password, no query.
pub fn shown_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (host, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let path = path.split(['?', '#']).next().unwrap_or("");
    let path = path.trim_end_matches('/');
    if path.is_empty() {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}/{path}")
    }
}

/// What the remote cache gave and took, summed over builds in `remote-stats.json`.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemoteStats {
    pub hits: u64,
    pub misses: u64,
    pub bytes_down: u64,
    pub bytes_up: u64,
    pub failures: u64,
}

/// The counters kept in the cache folder (`remote-stats.json`, JSON; updated under
/// `remote-stats.lock`).
pub fn load_stats(cache_root: &Path) -> RemoteStats {
    fs::read(cache_root.join(STATS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// What a lookup in the remote cache found.
pub enum Fetched {
    /// Nothing usable: run the step.
    Miss,
    /// The entry, now in the local cache with all its blobs.
    Hit(ActionEntry),
    /// The server sent something wrong: a miss, with a warning naming it.
    Refused(String),
}

/// Why a remote cache or engine cannot be used as given: a usage error, which says what to fix.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum RemoteSetupError {
    #[error("--remote-cache takes an http:// or https:// URL (a Bazel HTTP remote cache) or a grpc:// or grpcs:// URL (a REAPI server), got `{shown}`")]
    #[diagnostic(code(gvbuild::remote::scheme))]
    Scheme { shown: String },
    #[error(
        "--remote-cache {shown}: {why}; a gRPC cache's URL is grpc://HOST:PORT[/INSTANCE] (or grpcs://)"
    )]
    #[diagnostic(code(gvbuild::remote::grpc_url))]
    GrpcUrl { shown: String, why: String },
    #[error("the header `{name}` from GVBUILD_REMOTE_HEADER cannot be sent as gRPC metadata")]
    #[diagnostic(code(gvbuild::remote::header_name))]
    HeaderName { name: String },
    #[error(
        "the value of the header `{name}` from GVBUILD_REMOTE_HEADER cannot be sent as gRPC metadata (printable ASCII only)"
    )]
    #[diagnostic(code(gvbuild::remote::header_value))]
    HeaderValue { name: String },
    #[error("cannot start the gRPC client for {shown}: {source}")]
    #[diagnostic(code(gvbuild::remote::runtime))]
    Runtime { shown: String, source: std::io::Error },
    #[error("--remote-cache {shown}: {source}")]
    #[diagnostic(code(gvbuild::remote::endpoint))]
    Endpoint { shown: String, source: tonic::transport::Error },
    #[error("--remote-cache {shown}: TLS: {source}")]
    #[diagnostic(code(gvbuild::remote::tls))]
    Tls { shown: String, source: tonic::transport::Error },
    #[error(
        "--remote-cache {shown}: the server offers no cache (its capabilities have no cache_capabilities); gvbuild needs a REAPI action cache and CAS"
    )]
    #[diagnostic(code(gvbuild::remote::no_cache))]
    NoCache { shown: String },
    #[error(
        "--remote-cache {shown}: the server's cache offers the digest functions {offered}, not SHA256, the only one gvbuild speaks; point it at a server or instance that uses SHA-256"
    )]
    #[diagnostic(code(gvbuild::remote::no_sha256))]
    NoSha256 { shown: String, offered: String },
    #[error("cannot read --remote-ca {}: {source}", path.display())]
    #[diagnostic(code(gvbuild::remote::read_ca))]
    ReadCa { path: PathBuf, source: std::io::Error },
    #[error("--remote-ca {} holds no PEM certificate", path.display())]
    #[diagnostic(code(gvbuild::remote::no_ca_certificate))]
    NoCaCertificate { path: PathBuf },
    #[error("--remote-client-key needs --remote-client-cert")]
    #[diagnostic(code(gvbuild::remote::key_without_cert))]
    KeyWithoutCert,
    #[error("cannot read {}: {source}", path.display())]
    #[diagnostic(code(gvbuild::remote::read_client_pem))]
    ReadClientPem { path: PathBuf, source: std::io::Error },
    #[error("--remote-client-cert {} holds no PEM certificate", path.display())]
    #[diagnostic(code(gvbuild::remote::no_client_certificate))]
    NoClientCertificate { path: PathBuf },
    #[error("no PEM private key for --remote-client-cert (give --remote-client-key FILE)")]
    #[diagnostic(code(gvbuild::remote::no_client_key))]
    NoClientKey,
}

/// Why the outputs or a log of an engine's result could not be downloaded.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("a blob the result names is not in the engine's CAS")]
    MissingBlob,
    #[error("the log blob {hash} is not in the engine's CAS")]
    MissingLog { hash: String },
    #[error("{0}")]
    Server(RemoteError),
    /// The server sent bytes that are not what their name says, or the local cache could not
    /// take them.
    #[error("{0}")]
    Unusable(String),
}

/// Why a download gave nothing.
enum Failed {
    /// 404: evicted, or never there.
    Missing,
    Server(RemoteError),
    /// The server sent bytes that are not what their name says.
    Bad(String),
    /// The local cache could not take it.
    Local(String),
}

/// A stored result waiting for upload.
pub struct Upload {
    pub key: Digest,
    pub outputs: Vec<String>,
    pub entry: ActionEntry,
    /// The step's platform properties, part of its action-cache keys.
    pub platform: Platform,
    /// For a step with discovered inputs: its first-level key and every list now known for it.
    pub deps: Option<(Digest, Vec<Vec<String>>)>,
}

struct Inner {
    store: Box<dyn Store>,
    shown: String,
    read_only: bool,
    failures: AtomicUsize,
    /// Set when the server failed its first question: nothing more is asked.
    halted: std::sync::atomic::AtomicBool,
    first_failure: Mutex<Option<String>>,
    first_local: Mutex<Option<String>>,
    hits: AtomicU64,
    misses: AtomicU64,
    bytes_down: AtomicU64,
    bytes_up: AtomicU64,
    pending: AtomicUsize,
    /// Set by Ctrl-C: the queued uploads are dropped, not sent.
    cancelled: std::sync::atomic::AtomicBool,
    /// What is owed to a written server from earlier builds, and what this one paid.
    backlog: Option<backlog::Backlog>,
}

pub struct Remote {
    inner: Arc<Inner>,
    queue: Mutex<Option<SyncSender<Upload>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// Queues the results earlier builds owe the server ([`backlog`]).
    feeder: Mutex<Option<JoinHandle<()>>>,
}

impl Remote {
    /// Connect to the cache the URL names (by its scheme) and start the uploaders, which read
    /// blobs from `cache`. `Err` is a usage error, and says what to fix.
    pub fn open(o: RemoteOptions, cache: &Cache) -> Result<Remote, RemoteSetupError> {
        let shown = shown_url(&o.url);
        // A server that could not be asked at all when opened: the build goes on without it.
        let mut unreachable = None;
        let store: Box<dyn Store> = if o.url.starts_with("http://") || o.url.starts_with("https://") {
            Box::new(http::HttpStore::new(http::HttpOptions {
                url: &o.url,
                headers: o.headers,
                ca_file: o.ca_file.as_deref(),
                client_cert: o.client_cert.as_deref(),
                client_key: o.client_key.as_deref(),
                timeout: o.timeout,
            })?)
        } else if o.url.starts_with("grpc://") || o.url.starts_with("grpcs://") {
            let mut store = grpc::GrpcStore::new(grpc::GrpcOptions {
                url: &o.url,
                headers: o.headers,
                ca_file: o.ca_file.as_deref(),
                client_cert: o.client_cert.as_deref(),
                client_key: o.client_key.as_deref(),
                timeout: o.timeout,
            })?;
            unreachable = store.check(&shown)?.err();
            Box::new(store)
        } else {
            return Err(RemoteSetupError::Scheme { shown });
        };
        let backlog = (!o.read_only).then(|| backlog::Backlog::of(cache.root(), &shown));
        let remote = Remote::build(store, shown, o.read_only, cache, backlog);
        if let Some(e) = unreachable {
            remote.inner.failed(&RemoteError::Transport(format!("asking its capabilities: {e}")));
            remote.inner.halted.store(true, Ordering::SeqCst);
        } else {
            remote.catch_up(cache);
        }
        Ok(remote)
    }

    /// A remote over any [`Store`].
    pub fn with_store(store: Box<dyn Store>, shown: String, read_only: bool, cache: &Cache) -> Remote {
        Remote::build(store, shown, read_only, cache, None)
    }

    /// Queue, from a thread of its own, the uploads earlier builds owe the server: it takes
    /// them as this build's own (they count as its pending uploads, and end up paid or owed).
    fn catch_up(&self, cache: &Cache) {
        let Some(tx) = self.queue.lock().ok().and_then(|q| q.clone()) else { return };
        let (inner, cache) = (self.inner.clone(), cache.clone());
        let spawned = std::thread::Builder::new().name("gvbuild-catch-up".into()).spawn(move || {
            let Some(backlog) = inner.backlog.as_ref() else { return };
            for job in backlog.owed(&cache) {
                if inner.stopped() || inner.cancelled.load(Ordering::SeqCst) {
                    return;
                }
                inner.pending.fetch_add(1, Ordering::SeqCst);
                if tx.send(job).is_err() {
                    inner.pending.fetch_sub(1, Ordering::SeqCst);
                    return;
                }
            }
        });
        if let (Ok(h), Ok(mut feeder)) = (spawned, self.feeder.lock()) {
            *feeder = Some(h);
        }
    }

    fn build(
        store: Box<dyn Store>,
        shown: String,
        read_only: bool,
        cache: &Cache,
        backlog: Option<backlog::Backlog>,
    ) -> Remote {
        let inner = Arc::new(Inner {
            store,
            shown,
            read_only,
            failures: AtomicUsize::new(0),
            halted: std::sync::atomic::AtomicBool::new(false),
            first_failure: Mutex::new(None),
            first_local: Mutex::new(None),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            cancelled: std::sync::atomic::AtomicBool::new(false),
            backlog,
        });
        let mut workers = Vec::new();
        let mut queue = None;
        if !read_only {
            let (tx, rx) = sync_channel::<Upload>(QUEUE);
            let rx = Arc::new(Mutex::new(rx));
            for i in 0..UPLOADERS {
                let (inner, rx, cache) = (inner.clone(), rx.clone(), cache.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("gvbuild-upload-{i}"))
                    .spawn(move || upload_loop(&inner, &rx, &cache));
                if let Ok(h) = spawned {
                    workers.push(h);
                }
            }
            if !workers.is_empty() {
                queue = Some(tx);
            }
        }
        Remote { inner, queue: Mutex::new(queue), workers: Mutex::new(workers), feeder: Mutex::new(None) }
    }

    /// Whether the remote is written to.
    pub fn writes(&self) -> bool {
        !self.inner.read_only
    }

    /// Look up the action entry of gvbuild key `key`, whose step declares `outputs`; on a hit,
    /// download what it names into the local cache (verified) and write the entry there too.
    pub fn fetch(&self, cache: &Cache, key: &Digest, platform: &Platform, outputs: &[String]) -> Fetched {
        let inner = &self.inner;
        if inner.stopped() {
            return Fetched::Miss;
        }
        let ak = action_key(key, platform);
        let bytes = match inner.store.get_action(&ak) {
            Ok(Some(b)) => b,
            Ok(None) => {
                inner.misses.fetch_add(1, Ordering::Relaxed);
                return Fetched::Miss;
            }
            Err(e) => {
                inner.failed(&e);
                return Fetched::Miss;
            }
        };
        let refused = |what: String| {
            Fetched::Refused(format!(
                "{what} (action entry {} in the remote cache {}); not used, running the step",
                ak.hash, inner.shown
            ))
        };
        let Ok(result) = reapi::ActionResult::decode(&bytes[..]) else {
            // Garbage for an entry (a proxy's error page served with 200) is the server failing,
            // counted like any other failure rather than warned about step by step.
            inner.failed(&RemoteError::Transport(format!("action entry {} is not an ActionResult", ak.hash)));
            return Fetched::Miss;
        };
        if result.exit_code != 0 {
            inner.misses.fetch_add(1, Ordering::Relaxed);
            return Fetched::Miss;
        }
        let got = inner.tree_of(cache, &result, outputs).and_then(|tree| {
            let log = inner.log_blob(cache, result.stdout_digest.as_ref(), &result.stdout_raw)?;
            Ok(ActionEntry::new(tree, log))
        });
        match got {
            Ok(entry) => {
                if let Err(e) = cache.put_entry(key, &entry) {
                    inner.local_problem(e.to_string());
                }
                inner.hits.fetch_add(1, Ordering::Relaxed);
                Fetched::Hit(entry)
            }
            Err(Failed::Missing) => {
                inner.misses.fetch_add(1, Ordering::Relaxed);
                Fetched::Miss
            }
            Err(Failed::Server(e)) => {
                inner.failed(&e);
                Fetched::Miss
            }
            Err(Failed::Bad(what)) => refused(what),
            Err(Failed::Local(e)) => {
                inner.local_problem(e);
                Fetched::Miss
            }
        }
    }

    /// The depfile lists the remote knows for first-level key `first` (empty on any trouble).
    pub fn dep_lists(&self, first: &Digest, platform: &Platform) -> Vec<Vec<String>> {
        let inner = &self.inner;
        if inner.stopped() {
            return Vec::new();
        }
        let bytes = match inner.store.get_action(&deps_key(first, platform)) {
            Ok(Some(b)) => b,
            Ok(None) => return Vec::new(),
            Err(e) => {
                inner.failed(&e);
                return Vec::new();
            }
        };
        let Ok(result) = reapi::ActionResult::decode(&bytes[..]) else { return Vec::new() };
        let Some(file) = result.output_files.iter().find(|f| f.path == DEPS_FILE) else {
            return Vec::new();
        };
        let Some(d) = file.digest.as_ref() else { return Vec::new() };
        match inner.inline_or_download(d, &file.contents) {
            Ok(json) => serde_json::from_slice::<Vec<Vec<String>>>(&json).unwrap_or_default(),
            Err(Failed::Server(e)) => {
                inner.failed(&e);
                Vec::new()
            }
            Err(_) => Vec::new(),
        }
    }

    /// The outputs an engine's `ActionResult` names, downloaded into the local cache (each blob
    /// verified), as a local tree; `Err` says what is wrong. Every one of `outputs` must be in
    /// the result (the caller checks, to say which is missing as a local run says it).
    pub fn outputs_of(
        &self,
        cache: &Cache,
        result: &reapi::ActionResult,
        outputs: &[String],
    ) -> Result<OutputTree, DownloadError> {
        self.inner.tree_of(cache, result, outputs).map_err(|e| match e {
            Failed::Missing => DownloadError::MissingBlob,
            Failed::Server(e) => DownloadError::Server(e),
            Failed::Bad(what) | Failed::Local(what) => DownloadError::Unusable(what),
        })
    }

    /// A log (stdout, stderr) into the local cache, verified, whatever its size (it streams
    /// to disk, never into memory): `raw` when the result inlined it. `Ok(None)` when the
    /// result names none.
    pub fn log_blob(
        &self,
        cache: &Cache,
        digest: Option<&reapi::Digest>,
        raw: &[u8],
    ) -> Result<Option<Digest>, DownloadError> {
        self.inner.log_blob(cache, digest, raw).map_err(|e| match e {
            Failed::Missing => {
                DownloadError::MissingLog { hash: digest.map_or("", |d| d.hash.as_str()).to_string() }
            }
            Failed::Server(e) => DownloadError::Server(e),
            Failed::Bad(what) | Failed::Local(what) => DownloadError::Unusable(what),
        })
    }

    /// Queue a stored result for upload (nothing for a read-only remote, or once the server
    /// has failed too often). Blocks while the queue is full.
    pub fn enqueue(&self, job: Upload) {
        if self.inner.read_only {
            return;
        }
        // Owed until an upload goes through: a later build pays it if this one cannot.
        if let Some(backlog) = &self.inner.backlog {
            backlog.owe(&job);
        }
        if self.inner.stopped() {
            return;
        }
        let Ok(queue) = self.queue.lock() else { return };
        if let Some(tx) = queue.as_ref() {
            self.inner.pending.fetch_add(1, Ordering::SeqCst);
            if tx.send(job).is_err() {
                self.inner.pending.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Drop the uploads still queued (an interrupted build does not wait for them).
    pub fn cancel_uploads(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
    }

    /// A line for the user when the server pushed back during the build.
    pub fn busy_note(&self) -> Option<String> {
        let (pushbacks, narrowest) = self.inner.store.pressure();
        backoff::busy_note(&format!("the remote cache {}", self.inner.shown), pushbacks, narrowest)
    }

    /// Wait for the uploads, save the counters, and return the warnings for the user: at most
    /// one for the server's failures, one for local trouble. `waiting` is told once, with a
    /// line to show, when uploads are still going.
    pub fn finish(&self, cache_root: &Path, waiting: &mut dyn FnMut(&str)) -> Vec<String> {
        let inner = &self.inner;
        let pending = inner.pending.load(Ordering::SeqCst);
        if pending > 0 && !inner.stopped() && !inner.cancelled.load(Ordering::SeqCst) {
            waiting(&format!(
                "gvbuild: waiting for {pending} upload(s) to the remote cache {}...",
                inner.shown
            ));
        }
        if let Some(feeder) = self.feeder.lock().ok().and_then(|mut f| f.take()) {
            let _ = feeder.join();
        }
        if let Ok(mut q) = self.queue.lock() {
            q.take();
        }
        if let Ok(mut workers) = self.workers.lock() {
            for w in workers.drain(..) {
                let _ = w.join();
            }
        }
        if let Some(backlog) = &inner.backlog {
            backlog.settle();
        }
        let failures = inner.failures.load(Ordering::SeqCst);
        let mut warnings = Vec::new();
        if failures > 0 {
            let first = inner.first_failure.lock().ok().and_then(|f| f.clone()).unwrap_or_default();
            let stopped = if failures >= GIVE_UP_AFTER {
                format!("; gvbuild stopped asking it after {GIVE_UP_AFTER} failures")
            } else if inner.halted.load(Ordering::SeqCst) {
                "; gvbuild did not ask it again".to_string()
            } else {
                String::new()
            };
            warnings.push(format!(
                "the remote cache {} failed {failures} time(s), first: {first}; the build went on without it{stopped}",
                inner.shown
            ));
        }
        if let Some(local) = inner.first_local.lock().ok().and_then(|l| l.clone()) {
            warnings.push(format!("the remote cache {}: {local}", inner.shown));
        }
        // Builds of other projects share the cache and add to the same file: one at a time.
        let _lock =
            super::lock::acquire(&cache_root.join("remote-stats.lock"), super::lock::Mode::Exclusive, |_| {});
        let mut stats = load_stats(cache_root);
        stats.hits += inner.hits.load(Ordering::SeqCst);
        stats.misses += inner.misses.load(Ordering::SeqCst);
        stats.bytes_down += inner.bytes_down.load(Ordering::SeqCst);
        stats.bytes_up += inner.bytes_up.load(Ordering::SeqCst);
        stats.failures += failures as u64;
        if let Ok(bytes) = serde_json::to_vec(&stats) {
            let _ = crate::fsutil::write_atomic(&cache_root.join(STATS_FILE), &bytes);
        }
        warnings
    }
}

impl Inner {
    fn stopped(&self) -> bool {
        self.failures.load(Ordering::SeqCst) >= GIVE_UP_AFTER || self.halted.load(Ordering::SeqCst)
    }

    fn failed(&self, e: &RemoteError) {
        self.failures.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut first) = self.first_failure.lock() {
            first.get_or_insert_with(|| e.to_string());
        }
    }

    fn local_problem(&self, what: String) {
        if let Ok(mut first) = self.first_local.lock() {
            first.get_or_insert(what);
        }
    }

    /// The entry's outputs as a local tree, in the order [`OutputTree::collect`] walks them
    /// (declared outputs in order, folders depth first by name), with every file's blob
    /// downloaded into the local cache.
    fn tree_of(
        &self,
        cache: &Cache,
        result: &reapi::ActionResult,
        outputs: &[String],
    ) -> Result<OutputTree, Failed> {
        let mut tree = OutputTree::default();
        for o in outputs {
            if let Some(f) = result.output_files.iter().find(|f| &f.path == o) {
                let d = f.digest.as_ref().ok_or_else(|| Failed::Bad(format!("output {o} has no digest")))?;
                let (digest, size) = if f.contents.is_empty() {
                    self.download(cache, d)?
                } else {
                    // Inlined by the writer: verified as a download is, one request saved.
                    let bytes = self.inline_or_download(d, &f.contents)?;
                    let b3 = cache.put_bytes(&bytes).map_err(|e| Failed::Local(e.to_string()))?;
                    (b3, bytes.len() as u64)
                };
                tree.files.push(OutFile { path: o.clone(), digest, size, exec: f.is_executable });
            } else if let Some(l) = result.output_symlinks.iter().find(|l| &l.path == o) {
                tree.symlinks.push(OutLink { path: o.clone(), target: l.target.clone() });
            } else if let Some(d) = result.output_directories.iter().find(|d| &d.path == o) {
                let td =
                    d.tree_digest.as_ref().ok_or_else(|| Failed::Bad(format!("folder {o} has no tree")))?;
                let raw = reapi::RawTree::decode(&self.download_small(td)?[..])
                    .map_err(|_| Failed::Bad(format!("the tree of folder {o} is not a Tree")))?;
                let children: HashMap<String, &[u8]> =
                    raw.children.iter().map(|c| (hex(&sha2::Sha256::digest(c).into()), &c[..])).collect();
                self.walk(cache, &raw.root, o, &children, &mut tree, 0)?;
            } else {
                // An entry of another step shape (a changed `outputs:` list): not this step's.
                return Err(Failed::Missing);
            }
        }
        Ok(tree)
    }

    fn walk(
        &self,
        cache: &Cache,
        raw: &[u8],
        path: &str,
        children: &HashMap<String, &[u8]>,
        tree: &mut OutputTree,
        depth: usize,
    ) -> Result<(), Failed> {
        let bad = |what: &str| Failed::Bad(format!("the tree of {path} {what}"));
        if depth > 512 {
            return Err(bad("is too deep"));
        }
        let dir = reapi::Directory::decode(raw).map_err(|_| bad("holds a folder that is not a Directory"))?;
        tree.dirs.push(path.to_string());
        enum Node<'a> {
            File(&'a reapi::FileNode),
            Dir(&'a reapi::DirectoryNode),
            Link(&'a reapi::SymlinkNode),
        }
        let mut nodes: Vec<(&str, Node<'_>)> = dir
            .files
            .iter()
            .map(|f| (f.name.as_str(), Node::File(f)))
            .chain(dir.directories.iter().map(|d| (d.name.as_str(), Node::Dir(d))))
            .chain(dir.symlinks.iter().map(|l| (l.name.as_str(), Node::Link(l))))
            .collect();
        nodes.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        for (name, node) in nodes {
            if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
                return Err(bad(&format!("names an entry `{name}`")));
            }
            let child = format!("{path}/{name}");
            match node {
                Node::File(f) => {
                    let d = f.digest.as_ref().ok_or_else(|| bad("has a file without a digest"))?;
                    let (digest, size) = self.download(cache, d)?;
                    tree.files.push(OutFile { path: child, digest, size, exec: f.is_executable });
                }
                Node::Dir(d) => {
                    let hash = d.digest.as_ref().map(|d| d.hash.as_str()).unwrap_or("");
                    let raw = children.get(hash).ok_or_else(|| bad("lacks one of its folders"))?;
                    self.walk(cache, raw, &child, children, tree, depth + 1)?;
                }
                Node::Link(l) => tree.symlinks.push(OutLink { path: child, target: l.target.clone() }),
            }
        }
        Ok(())
    }

    /// Download a blob into the local cache while hashing it both ways; returns its blake3 and
    /// size once its SHA-256 and size match the digest.
    fn download(&self, cache: &Cache, d: &reapi::Digest) -> Result<(Digest, u64), Failed> {
        let (sha, size) = parse_digest(d)?;
        if let Some((b3, n)) = cache.blob_by_sha256(&sha).filter(|&(_, n)| n == size) {
            return Ok((b3, n));
        }
        let tmp = cache.incoming_path();
        let result = self.download_to(&tmp, d, &sha, size);
        match result {
            // Adopting renames the file away, or removes it when it cannot.
            Ok(b3) => cache
                .adopt_blob(&tmp, &b3, &sha)
                .map(|()| (b3, size))
                .map_err(|e| Failed::Local(e.to_string())),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    fn download_to(
        &self,
        tmp: &Path,
        d: &reapi::Digest,
        sha: &[u8; 32],
        size: u64,
    ) -> Result<Digest, Failed> {
        let mut out =
            File::create(tmp).map_err(|e| Failed::Local(format!("cannot write {}: {e}", tmp.display())))?;
        let (b3, got_sha, n) = if size == 0 {
            // The empty blob need not be on the server at all.
            (*blake3::hash(b"").as_bytes(), sha2::Sha256::digest(b"").into(), 0)
        } else {
            // One byte more than the digest says is enough to tell a longer body.
            let mut body = self.blob_body(d, size)?.take(size + 1);
            let failed = |e: StreamError| match e {
                StreamError::Read(e) => {
                    Failed::Server(RemoteError::Transport(format!("reading blob {}: {e}", d.hash)))
                }
                StreamError::Write(e) => Failed::Local(format!("cannot write {}: {e}", tmp.display())),
            };
            receive(&mut body, &mut out, size).map_err(failed)?
        };
        if &got_sha != sha || n != size {
            return Err(Failed::Bad(format!(
                "blob {} from the remote cache does not match its digest ({n} bytes, SHA-256 {})",
                d.hash,
                hex(&got_sha)
            )));
        }
        self.bytes_down.fetch_add(size, Ordering::Relaxed);
        Ok(b3)
    }

    /// A blob's body. A server that announces another length than the digest's is failing
    /// (a lying `Content-Length`), which is counted, not warned about blob by blob.
    fn blob_body(&self, d: &reapi::Digest, size: u64) -> Result<Box<dyn Read + Send>, Failed> {
        let (announced, body) = self.store.get_blob(d).map_err(Failed::Server)?.ok_or(Failed::Missing)?;
        match announced {
            Some(n) if n != size => Err(Failed::Server(RemoteError::Transport(format!(
                "blob {}: the server announced {n} bytes where its digest says {size}",
                d.hash
            )))),
            _ => Ok(body),
        }
    }

    /// A log blob into the local cache: `inline` verified when the digest is given, else
    /// streamed from the server like an output file (no size limit: a log is data).
    fn log_blob(
        &self,
        cache: &Cache,
        d: Option<&reapi::Digest>,
        inline: &[u8],
    ) -> Result<Option<Digest>, Failed> {
        let bytes = match (d, inline.is_empty()) {
            (None, true) => return Ok(None),
            (Some(d), true) => return self.download(cache, d).map(|(b3, _)| Some(b3)),
            (Some(d), false) => self.inline_or_download(d, inline)?,
            (None, false) => inline.to_vec(),
        };
        cache.put_bytes(&bytes).map(Some).map_err(|e| Failed::Local(e.to_string()))
    }

    /// A small blob's bytes: `inline` (what an entry carries beside the digest) when it is
    /// there, verified against the digest like a download (a mismatch is refused, never used),
    /// else downloaded.
    fn inline_or_download(&self, d: &reapi::Digest, inline: &[u8]) -> Result<Vec<u8>, Failed> {
        if inline.is_empty() {
            return self.download_small(d);
        }
        let (sha, size) = parse_digest(d)?;
        let got: [u8; 32] = sha2::Sha256::digest(inline).into();
        if got != sha || inline.len() as u64 != size {
            return Err(Failed::Bad(format!(
                "the bytes inlined for blob {} do not match its digest",
                d.hash
            )));
        }
        // They came from the server, inside the entry: counted as a download's are.
        self.bytes_down.fetch_add(size, Ordering::Relaxed);
        Ok(inline.to_vec())
    }

    /// A small blob (a tree, a log, depfile lists) into memory, verified.
    fn download_small(&self, d: &reapi::Digest) -> Result<Vec<u8>, Failed> {
        let (sha, size) = parse_digest(d)?;
        if size > MAX_SMALL_BLOB {
            return Err(Failed::Bad(format!("blob {} is too big for what it holds", d.hash)));
        }
        if size == 0 {
            return Ok(Vec::new());
        }
        let body = self.blob_body(d, size)?;
        let mut bytes = Vec::new();
        body.take(size + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Failed::Server(RemoteError::Transport(format!("reading blob {}: {e}", d.hash))))?;
        let got: [u8; 32] = sha2::Sha256::digest(&bytes).into();
        if got != sha || bytes.len() as u64 != size {
            return Err(Failed::Bad(format!(
                "blob {} from the remote cache does not match its digest",
                d.hash
            )));
        }
        self.bytes_down.fetch_add(size, Ordering::Relaxed);
        Ok(bytes)
    }
}

/// Blobs from this size on are received in a pipeline: the receiving thread only reads and
/// writes, as `curl -o` does, while a second thread hashes the buffers already written (SHA-256
/// at about 1.8 GB/s with SHA-NI here, blake3 at 6 GB/s on one core): hashing on the receiving
/// thread made a 1 GiB download half again as slow as curl's.
const PIPELINE_FROM: u64 = 8 << 20;
/// The buffers that travel between the two threads, reused: memory stays at
/// `DOWN_BUFS * DOWN_BUF` whatever the blob's size.
const DOWN_BUF: usize = 1 << 20;
const DOWN_BUFS: usize = 4;

/// What a download gave: its blake3, its SHA-256 and its length.
type Received = (Digest, [u8; 32], u64);

/// Which side of a download failed.
enum StreamError {
    Read(std::io::Error),
    Write(std::io::Error),
}

/// Read `body` to its end into `out`, in one pass: its blake3, its SHA-256 and its length.
fn receive(body: &mut dyn Read, out: &mut File, size: u64) -> Result<Received, StreamError> {
    if size >= PIPELINE_FROM {
        if let Some(got) = receive_pipelined(body, out) {
            return got;
        }
    }
    // A small blob (most outputs) is not worth a thread, nor a buffer bigger than itself.
    let mut buf = vec![0u8; usize::try_from(size + 1).unwrap_or(DOWN_BUF).min(DOWN_BUF)];
    let (mut b3, mut sha, mut n) = (blake3::Hasher::new(), sha2::Sha256::new(), 0u64);
    loop {
        let k = fill(body, &mut buf).map_err(StreamError::Read)?;
        if k == 0 {
            return Ok((*b3.finalize().as_bytes(), sha.finalize().into(), n));
        }
        n += k as u64;
        b3.update(&buf[..k]);
        sha.update(&buf[..k]);
        out.write_all(&buf[..k]).map_err(StreamError::Write)?;
    }
}

/// [`receive`] with the hashing on a thread of its own; `None` when that thread cannot start
/// (nothing has been read then).
fn receive_pipelined(body: &mut dyn Read, out: &mut File) -> Option<Result<Received, StreamError>> {
    let (full_tx, full_rx) = sync_channel::<(Vec<u8>, usize)>(DOWN_BUFS);
    // Room for every buffer in both channels, so that neither side ever blocks on a send.
    let (free_tx, free_rx) = sync_channel::<Vec<u8>>(DOWN_BUFS);
    std::thread::scope(|s| {
        let hasher = std::thread::Builder::new()
            .name("gvbuild-hash".into())
            .spawn_scoped(s, move || {
                let (mut b3, mut sha) = (blake3::Hasher::new(), sha2::Sha256::new());
                for (buf, k) in full_rx {
                    b3.update(&buf[..k]);
                    sha.update(&buf[..k]);
                    let _ = free_tx.send(buf);
                }
                (*b3.finalize().as_bytes(), <[u8; 32]>::from(sha.finalize()))
            })
            .ok()?;
        let stopped = || StreamError::Write(std::io::Error::other("the hashing thread stopped"));
        let (mut n, mut made) = (0u64, 0);
        let got = loop {
            let mut buf = match free_rx.try_recv() {
                Ok(b) => b,
                Err(_) if made < DOWN_BUFS => {
                    made += 1;
                    vec![0u8; DOWN_BUF]
                }
                Err(_) => match free_rx.recv() {
                    Ok(b) => b,
                    Err(_) => break Err(stopped()),
                },
            };
            let k = match fill(body, &mut buf) {
                Ok(0) => break Ok(()),
                Ok(k) => k,
                Err(e) => break Err(StreamError::Read(e)),
            };
            n += k as u64;
            if let Err(e) = out.write_all(&buf[..k]) {
                break Err(StreamError::Write(e));
            }
            if full_tx.send((buf, k)).is_err() {
                break Err(stopped());
            }
        };
        drop(full_tx);
        let hashes = hasher.join().map_err(|_| stopped());
        Some(got.and(hashes).map(|(b3, sha)| (b3, sha, n)))
    })
}

/// Read until `buf` is full or the body ends (a body reader hands out what one network read
/// gave, often far less than a buffer); the count read.
fn fill(body: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut k = 0;
    while k < buf.len() {
        match body.read(&mut buf[k..]) {
            Ok(0) => break,
            Ok(n) => k += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(k)
}

fn parse_digest(d: &reapi::Digest) -> Result<([u8; 32], u64), Failed> {
    let mut sha = [0u8; 32];
    let ok = d.hash.len() == 64 && hex::decode_to_slice(&d.hash, &mut sha).is_ok() && d.size_bytes >= 0;
    if !ok {
        return Err(Failed::Bad(format!("`{}` is not a SHA-256 digest", d.hash.escape_debug())));
    }
    Ok((sha, d.size_bytes as u64))
}

fn digest_of(sha: &[u8; 32], size: u64) -> reapi::Digest {
    reapi::Digest { hash: hex(sha), size_bytes: size as i64 }
}

/// A blob to upload: from the local cache, or built here (a tree, the depfile lists).
enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
}

struct Blob {
    digest: reapi::Digest,
    source: Source,
}

fn bytes_blob(bytes: Vec<u8>) -> Blob {
    let sha: [u8; 32] = sha2::Sha256::digest(&bytes).into();
    Blob { digest: digest_of(&sha, bytes.len() as u64), source: Source::Bytes(bytes) }
}

fn upload_loop(inner: &Inner, rx: &Mutex<Receiver<Upload>>, cache: &Cache) {
    loop {
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        if !inner.stopped() && !inner.cancelled.load(Ordering::SeqCst) {
            match upload(inner, cache, &job) {
                Ok(()) => {
                    if let Some(backlog) = &inner.backlog {
                        backlog.paid(job.key);
                    }
                }
                Err(Failed::Server(e)) => inner.failed(&e),
                Err(Failed::Local(e)) | Err(Failed::Bad(e)) => {
                    // Trying again would not help: no longer owed.
                    if let Some(backlog) = &inner.backlog {
                        backlog.paid(job.key);
                    }
                    inner.local_problem(e)
                }
                Err(Failed::Missing) => {}
            }
        }
        inner.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Blobs first (only those the server lacks), then the entry that names them.
fn upload(inner: &Inner, cache: &Cache, job: &Upload) -> Result<(), Failed> {
    let (result, blobs) = to_action_result(cache, &job.entry, &job.outputs)?;
    send_blobs(inner, blobs)?;
    inner
        .store
        .put_action(&action_key(&job.key, &job.platform), &result.encode_to_vec())
        .map_err(Failed::Server)?;
    if let Some((first, lists)) = &job.deps {
        let json = serde_json::to_vec(lists).map_err(|e| Failed::Local(e.to_string()))?;
        let contents = if json.len() as u64 <= INLINE_MAX { json.clone() } else { Vec::new() };
        let blob = bytes_blob(json);
        let result = reapi::ActionResult {
            output_files: vec![reapi::OutputFile {
                path: DEPS_FILE.into(),
                digest: Some(blob.digest.clone()),
                contents,
                ..Default::default()
            }],
            ..Default::default()
        };
        send_blobs(inner, vec![blob])?;
        inner
            .store
            .put_action(&deps_key(first, &job.platform), &result.encode_to_vec())
            .map_err(Failed::Server)?;
    }
    Ok(())
}

fn send_blobs(inner: &Inner, blobs: Vec<Blob>) -> Result<(), Failed> {
    let mut seen = std::collections::HashSet::new();
    let blobs: Vec<Blob> = blobs.into_iter().filter(|b| seen.insert(b.digest.hash.clone())).collect();
    let digests: Vec<reapi::Digest> = blobs.iter().map(|b| b.digest.clone()).collect();
    let missing: std::collections::HashSet<String> =
        inner.store.find_missing(&digests).map_err(Failed::Server)?.into_iter().map(|d| d.hash).collect();
    for b in blobs.into_iter().filter(|b| missing.contains(&b.digest.hash)) {
        let size = b.digest.size_bytes as u64;
        match b.source {
            Source::Bytes(bytes) => inner.store.put_blob(&b.digest, Body::Bytes(&bytes)),
            Source::File(path) => inner.store.put_blob(&b.digest, Body::File(&path)),
        }
        .map_err(|e| match e {
            // A blob of the local cache that no longer has its digest is never shared.
            RemoteError::Changed(why) => Failed::Local(why),
            e => Failed::Server(e),
        })?;
        inner.bytes_up.fetch_add(size, Ordering::Relaxed);
    }
    Ok(())
}

/// The REAPI `ActionResult` of a local entry, and the blobs it names: each output file, a
/// `Tree` for each output folder, the log.
fn to_action_result(
    cache: &Cache,
    entry: &ActionEntry,
    outputs: &[String],
) -> Result<(reapi::ActionResult, Vec<Blob>), Failed> {
    let mut blobs = Vec::new();
    let mut file_blob = |d: &Digest, size: u64| -> Result<reapi::Digest, Failed> {
        let sha = cache.blob_sha256(d).map_err(|e| Failed::Local(e.to_string()))?;
        let digest = digest_of(&sha, size);
        blobs.push(Blob { digest: digest.clone(), source: Source::File(cache.blob_file(d)) });
        Ok(digest)
    };
    let tree = &entry.outputs;
    let mut result = reapi::ActionResult::default();
    let mut trees = Vec::new();
    for o in outputs {
        if let Some(f) = tree.files.iter().find(|f| &f.path == o) {
            let digest = file_blob(&f.digest, f.size)?;
            result.output_files.push(reapi::OutputFile {
                path: o.clone(),
                digest: Some(digest),
                is_executable: f.exec,
                contents: inline(cache, &f.digest, f.size)?,
                ..Default::default()
            });
        } else if let Some(l) = tree.symlinks.iter().find(|l| &l.path == o) {
            result.output_symlinks.push(reapi::OutputSymlink {
                path: o.clone(),
                target: l.target.clone(),
                ..Default::default()
            });
        } else if tree.dirs.iter().any(|d| d == o) {
            let (root, children) = folder_tree(tree, o, &mut file_blob)?;
            let blob = bytes_blob(reapi::Tree { root: Some(root), children }.encode_to_vec());
            result.output_directories.push(reapi::OutputDirectory {
                path: o.clone(),
                tree_digest: Some(blob.digest.clone()),
                ..Default::default()
            });
            trees.push(blob);
        }
    }
    if let Some(d) = entry.stdout_digest {
        let size = fs::metadata(cache.blob_file(&d)).map(|m| m.len()).unwrap_or(0);
        result.stdout_digest = Some(file_blob(&d, size)?);
        result.stdout_raw = inline(cache, &d, size)?;
    }
    blobs.extend(trees);
    Ok((result, blobs))
}

/// The bytes of a small blob to carry in the entry beside its digest (REAPI's `contents` and
/// `stdout_raw`), so that a restore needs no second request; the blob is uploaded as well, so
/// the entry still names only blobs in the CAS. Empty (not inlined) above [`INLINE_MAX`].
fn inline(cache: &Cache, d: &Digest, size: u64) -> Result<Vec<u8>, Failed> {
    if size == 0 || size > INLINE_MAX {
        return Ok(Vec::new());
    }
    cache.read_blob(d).map_err(|e| Failed::Local(e.to_string()))
}

/// The `Directory` of folder `dir` and every folder below it (children, deepest first is not
/// required; each appears once).
fn folder_tree(
    tree: &OutputTree,
    dir: &str,
    file_blob: &mut dyn FnMut(&Digest, u64) -> Result<reapi::Digest, Failed>,
) -> Result<(reapi::Directory, Vec<reapi::Directory>), Failed> {
    let parent = |p: &str| p.rsplit_once('/').map(|(a, _)| a.to_string());
    let name = |p: &str| p.rsplit_once('/').map_or(p.to_string(), |(_, b)| b.to_string());
    let prefix = format!("{dir}/");
    let mut dirs: Vec<&String> = tree.dirs.iter().filter(|d| d.starts_with(&prefix) || *d == dir).collect();
    // Deepest first, so that each folder's sub-folders are encoded before it.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    let mut built: HashMap<String, reapi::Directory> = HashMap::new();
    let mut children = Vec::new();
    for d in dirs {
        let mut node = reapi::Directory::default();
        for f in tree.files.iter().filter(|f| parent(&f.path).as_deref() == Some(d.as_str())) {
            node.files.push(reapi::FileNode {
                name: name(&f.path),
                digest: Some(file_blob(&f.digest, f.size)?),
                is_executable: f.exec,
                ..Default::default()
            });
        }
        for l in tree.symlinks.iter().filter(|l| parent(&l.path).as_deref() == Some(d.as_str())) {
            node.symlinks.push(reapi::SymlinkNode {
                name: name(&l.path),
                target: l.target.clone(),
                ..Default::default()
            });
        }
        let mut subs: Vec<(String, reapi::Directory)> = built
            .iter()
            .filter(|(p, _)| parent(p).as_deref() == Some(d.as_str()))
            .map(|(p, n)| (p.clone(), n.clone()))
            .collect();
        subs.sort_by(|a, b| a.0.cmp(&b.0));
        for (p, sub) in subs {
            let bytes = sub.encode_to_vec();
            let sha: [u8; 32] = sha2::Sha256::digest(&bytes).into();
            node.directories.push(reapi::DirectoryNode {
                name: name(&p),
                digest: Some(digest_of(&sha, bytes.len() as u64)),
            });
            built.remove(&p);
            children.push(sub);
        }
        node.files.sort_by(|a, b| a.name.cmp(&b.name));
        node.symlinks.sort_by(|a, b| a.name.cmp(&b.name));
        built.insert(d.clone(), node);
    }
    let root = built.remove(dir).ok_or_else(|| Failed::Local(format!("folder {dir} is not in the entry")))?;
    Ok((root, children))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn action_key_is_pinned() {
        // The key other machines look a step up by: changing it orphans every shared entry.
        let none = Platform::new();
        let key = action_key(&[7u8; 32], &none);
        assert_eq!(key.hash, "80348e3cb04598adf9ebcc436b0fa0a576ae6aa60b37fc30df89749c02663539");
        // The length of the bytes hashed: the prefix and the key.
        assert_eq!(key.size_bytes, 50);
        assert_eq!(deps_key(&[7u8; 32], &none).size_bytes, 57);
        let p = |pairs: &[(&str, &str)]| -> Platform {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let a = action_key(&[7u8; 32], &p(&[("os", "debian-12")]));
        assert_eq!(a.size_bytes, 50 + 8 + 2 + 8 + 9);
        assert_ne!(a, action_key(&[7u8; 32], &none));
        assert_ne!(a, action_key(&[7u8; 32], &p(&[("os", "debian-13")])));
        // Lengths keep names and values apart: `ab=c` is not `a=bc`.
        assert_ne!(action_key(&[7u8; 32], &p(&[("ab", "c")])), action_key(&[7u8; 32], &p(&[("a", "bc")])));
        assert_ne!(a.hash, deps_key(&[7u8; 32], &p(&[("os", "debian-12")])).hash);
    }

    /// A server in memory, counting blob downloads.
    #[derive(Default)]
    struct Mem(Mutex<HashMap<String, Vec<u8>>>, Arc<AtomicUsize>);

    impl Store for Mem {
        fn get_action(&self, key: &reapi::Digest) -> Result<Option<Vec<u8>>, RemoteError> {
            Ok(self.0.lock().unwrap().get(&format!("ac/{}", key.hash)).cloned())
        }
        fn put_action(&self, key: &reapi::Digest, body: &[u8]) -> Result<(), RemoteError> {
            self.0.lock().unwrap().insert(format!("ac/{}", key.hash), body.to_vec());
            Ok(())
        }
        fn has_blob(&self, blob: &reapi::Digest) -> Result<bool, RemoteError> {
            Ok(self.0.lock().unwrap().contains_key(&format!("cas/{}", blob.hash)))
        }
        fn get_blob(&self, blob: &reapi::Digest) -> Result<Option<BlobReader>, RemoteError> {
            self.1.fetch_add(1, Ordering::SeqCst);
            let body = self.0.lock().unwrap().get(&format!("cas/{}", blob.hash)).cloned();
            Ok(body
                .map(|b| (Some(b.len() as u64), Box::new(std::io::Cursor::new(b)) as Box<dyn Read + Send>)))
        }
        fn put_blob(&self, blob: &reapi::Digest, body: Body<'_>) -> Result<(), RemoteError> {
            let mut bytes = Vec::new();
            body.open(blob)?.read_to_end(&mut bytes).map_err(|e| read_error(blob, e))?;
            self.0.lock().unwrap().insert(format!("cas/{}", blob.hash), bytes);
            Ok(())
        }
    }

    /// An entry of every shape goes up as an ActionResult and comes back as the same tree, in
    /// the order `OutputTree::collect` gives (dependents key on its digest).
    #[test]
    fn entries_round_trip_through_action_results() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = Cache::open(&dir.path().join("c1")).unwrap();
        cache.keep_sha256();
        let root = dir.path().join("p");
        for (p, body) in
            [("out/b.txt", "b"), ("out/a/x", "x"), ("out/a/y/z", "z"), ("out/c", ""), ("one", "1")]
        {
            fs::create_dir_all(root.join(p).parent().unwrap()).unwrap();
            fs::write(root.join(p), body).unwrap();
        }
        fs::create_dir_all(root.join("out/empty")).unwrap();
        std::os::unix::fs::symlink("b.txt", root.join("out/a.link")).unwrap();
        std::os::unix::fs::symlink("one", root.join("top.link")).unwrap();
        let outputs: Vec<String> = ["one", "out", "top.link"].map(String::from).to_vec();
        let stat = crate::fingerprint::StatCache::default();
        let tree = OutputTree::collect(&root, &outputs, &stat).unwrap();
        for f in &tree.files {
            assert!(cache.put_file(&root.join(&f.path), &f.digest).unwrap());
        }
        let log = cache.put_bytes(b"the log").unwrap();
        let entry = ActionEntry::new(tree.clone(), Some(log));

        let key = [3u8; 32];
        let mem = Mem::default();
        let gets = mem.1.clone();
        let remote = Remote::with_store(Box::new(mem), "mem".into(), false, &cache);
        remote.enqueue(Upload {
            key,
            outputs: outputs.clone(),
            entry,
            platform: Platform::new(),
            deps: Some((key, vec![vec!["a.h".into()]])),
        });
        assert!(remote.finish(dir.path(), &mut |_| {}).is_empty());

        let other = Cache::open(&dir.path().join("c2")).unwrap();
        let store = Arc::try_unwrap(remote.inner).ok().unwrap().store;
        let again = Remote::with_store(store, "mem".into(), true, &other);
        let Fetched::Hit(back) = again.fetch(&other, &key, &Platform::new(), &outputs) else {
            panic!("no hit")
        };
        assert_eq!(back.outputs, tree);
        assert_eq!(back.outputs.digest(), tree.digest());
        assert_eq!(other.read_blob(&back.stdout_digest.unwrap()).unwrap(), b"the log");
        assert_eq!(other.get_entry(&key).unwrap().outputs, tree);
        assert_eq!(again.dep_lists(&key, &Platform::new()), vec![vec!["a.h".to_string()]]);

        // Blobs the local cache has are not downloaded again: only the tree and the log are.
        other.evict_entry(&key);
        let before = gets.load(Ordering::SeqCst);
        let Fetched::Hit(_) = again.fetch(&other, &key, &Platform::new(), &outputs) else { panic!("no hit") };
        // The log and `one` travel inside the entry: only the folder's tree is asked for.
        assert_eq!(gets.load(Ordering::SeqCst) - before, 1, "only the folder's tree");
    }

    /// A reader that hands out its bytes in uneven pieces, as a socket does, and can fail
    /// after `fail_at` bytes.
    struct Pieces {
        bytes: Vec<u8>,
        at: usize,
        fail_at: Option<usize>,
    }

    impl Read for Pieces {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.fail_at.is_some_and(|f| self.at >= f) {
                return Err(std::io::Error::other("connection reset"));
            }
            let k = buf.len().min(self.bytes.len() - self.at).min(1 + self.at % 70_000);
            buf[..k].copy_from_slice(&self.bytes[self.at..self.at + k]);
            self.at += k;
            Ok(k)
        }
    }

    #[test]
    fn big_blobs_are_received_in_one_pass_with_both_hashes() {
        let dir = tempfile::tempdir().unwrap();
        // Past the pipeline's threshold, and not a whole number of buffers.
        let size = PIPELINE_FROM as usize + 3 * DOWN_BUF + 12_345;
        let bytes: Vec<u8> = (0..size).map(|i| (i * 7 + i / 4093) as u8).collect();
        let path = dir.path().join("blob");
        let mut out = File::create(&path).unwrap();
        let mut body = Pieces { bytes: bytes.clone(), at: 0, fail_at: None };
        let Ok((b3, sha, n)) = receive(&mut body, &mut out, size as u64) else { panic!("receive failed") };
        assert_eq!(n, size as u64);
        assert_eq!(&b3, blake3::hash(&bytes).as_bytes());
        assert_eq!(sha, <[u8; 32]>::from(sha2::Sha256::digest(&bytes)));
        assert!(fs::read(&path).unwrap() == bytes);

        // A connection that breaks half way is a read error, and nothing waits forever.
        let mut out = File::create(&path).unwrap();
        let mut body = Pieces { bytes, at: 0, fail_at: Some(size / 2) };
        assert!(matches!(receive(&mut body, &mut out, size as u64), Err(StreamError::Read(_))));
    }

    #[test]
    fn shown_url_hides_credentials() {
        assert_eq!(
            shown_url("https://user:secret@cache.example:9090/team/?token=x"),
            "https://cache.example:9090/team"
        );
        assert_eq!(shown_url("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
    }
}
