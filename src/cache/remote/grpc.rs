//! REAPI v2 over gRPC: the remote-cache half of the Remote Execution API (`ActionCache`,
//! `ContentAddressableStorage`, `ByteStream`, `Capabilities`), as BuildGrid, Buildbarn,
//! bazel-remote and the other REAPI servers speak it, at `grpc://HOST:PORT[/INSTANCE]` (or
//! `grpcs://` for TLS). The URL's path is the REAPI instance name.
//!
//! # A store's life
//! [`GrpcStore::new`] parses the URL and builds the channel (no connection yet);
//! [`GrpcStore::check`] asks `GetCapabilities` before anything else: a server whose cache lacks
//! SHA-256 is refused (a usage error), and its `max_batch_total_size_bytes` says which blobs go
//! in one `BatchReadBlobs` / `BatchUpdateBlobs` call. Bigger blobs go through `ByteStream`,
//! in chunks, so memory stays bounded whatever a blob's size: an upload is read from its file
//! chunk by chunk as the server takes it, a download is handed to the caller as a reader that
//! asks for the next chunk when the last is used up.
//!
//! # Sync callers, async client
//! gvbuild is synchronous (rayon steps, two uploader threads); tonic is async. The store owns
//! a small multi-threaded tokio runtime (two workers, which drive the connection), and each
//! [`Store`] method blocks its calling thread on its call, so several threads may call at once
//! over the one HTTP/2 connection. `--remote-timeout` bounds each call and each wait for a
//! stream's next message, not a whole transfer.
//!
//! # Failures
//! `NOT_FOUND` is an ordinary miss (`Ok(None)`); every other status, and every transport error
//! or timeout, is a [`RemoteError`] for [`super::Remote`] to count. Header values
//! (`GVBUILD_REMOTE_HEADER*`, sent as gRPC metadata) never appear in an error.

use std::future::Future;
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::runtime::{Handle, Runtime};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

use super::backoff::{self, Permit, Window};
use super::{http, reapi, BlobReader, Body, RemoteError, RemoteSetupError, Store};

/// The batch limit when the server names none (0 means "no limit" in REAPI, but gRPC's
/// default message limit of 4 MiB still holds): 4 MiB less room for the message's framing.
const DEFAULT_BATCH: u64 = (4 << 20) - (1 << 10);
/// A server may say more; batches are kept below this whatever it says.
const MAX_BATCH: u64 = 32 << 20;
/// The largest message the client takes or sends: a batch and its framing.
const MAX_MESSAGE: usize = 40 << 20;
/// The data of one `ByteStream` message.
const CHUNK: usize = 1 << 20;
/// Digests per `FindMissingBlobs` call (BuildGrid takes up to 500 elements in a request).
const FIND_MANY: usize = 500;
/// Instance-name segments REAPI reserves for resource names.
const RESERVED: [&str; 7] =
    ["blobs", "uploads", "actions", "actionResults", "operations", "capabilities", "compressed-blobs"];

/// How to reach the server.
pub struct GrpcOptions<'a> {
    pub url: &'a str,
    /// Sent as gRPC metadata with every call (names lowercased), never shown.
    pub headers: Vec<(String, String)>,
    pub ca_file: Option<&'a Path>,
    pub client_cert: Option<&'a Path>,
    pub client_key: Option<&'a Path>,
    /// Each call, and each wait for a stream's next message, gives up after this long.
    pub timeout: Duration,
}

pub struct GrpcStore {
    /// Owned here, shut down on drop; `handle` is what the calls use.
    runtime: Option<Runtime>,
    handle: Handle,
    channel: Channel,
    instance: String,
    metadata: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
    /// The header values, blanked out of whatever the server says back.
    secrets: Secrets,
    timeout: Duration,
    /// Blobs up to this size travel in batch calls, bigger ones through `ByteStream`.
    batch_limit: u64,
    /// Numbers this process's uploads, for their resource names.
    uploads: AtomicU64,
    /// Calls the server pushed back on (`RESOURCE_EXHAUSTED`, `UNAVAILABLE`) and that were
    /// made again.
    pushbacks: AtomicU64,
    /// How many calls may be in flight at once; narrowed while the server pushes back.
    window: Arc<Window>,
}

/// The parts of a `grpc://` or `grpcs://` URL.
#[derive(Debug, PartialEq, Eq)]
pub struct GrpcUrl {
    /// `http://HOST:PORT` or `https://HOST:PORT`, what the channel connects to.
    pub endpoint: String,
    pub tls: bool,
    /// The REAPI instance name: the URL's path without its slashes at either end; may be empty.
    pub instance: String,
}

/// Parse `grpc[s]://HOST:PORT[/INSTANCE]`; `Err` says what is wrong, for a usage error.
pub fn parse_url(url: &str) -> Result<GrpcUrl, RemoteSetupError> {
    let shown = super::shown_url(url);
    let bad = |why: &str| RemoteSetupError::GrpcUrl { shown: shown.clone(), why: why.to_string() };
    let (tls, rest) = if let Some(r) = url.strip_prefix("grpcs://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("grpc://") {
        (false, r)
    } else {
        return Err(bad("not a grpc:// or grpcs:// URL"));
    };
    if rest.contains(['?', '#']) {
        return Err(bad("a query or fragment means nothing here"));
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.contains('@') {
        return Err(bad("credentials go in GVBUILD_REMOTE_HEADER, not in the URL"));
    }
    let (host, port) = authority.rsplit_once(':').ok_or_else(|| bad("the port is missing"))?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad("the host is missing"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad("an IPv6 address goes in brackets ([::1]:PORT)"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(bad(&format!("`{}` is not a port", port.escape_debug()))),
    }
    let instance = path.trim_matches('/').to_string();
    for segment in instance.split('/').filter(|_| !instance.is_empty()) {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(bad("the instance name has an empty, `.` or `..` segment"));
        }
        if RESERVED.contains(&segment) {
            return Err(bad(&format!(
                "REAPI reserves `{segment}`, which cannot be part of an instance name"
            )));
        }
    }
    let scheme = if tls { "https" } else { "http" };
    Ok(GrpcUrl { endpoint: format!("{scheme}://{authority}"), tls, instance })
}

impl GrpcStore {
    /// The store for the URL; nothing is sent yet. `Err` is a usage error.
    pub fn new(o: GrpcOptions<'_>) -> Result<GrpcStore, RemoteSetupError> {
        let url = parse_url(o.url)?;
        let shown = super::shown_url(o.url);
        let mut metadata = Vec::new();
        // Each value, and each long word of it (the token of `Bearer TOKEN`), longest first.
        let mut blank: Vec<String> = o.headers.iter().map(|(_, v)| v.trim().to_string()).collect();
        blank.extend(
            o.headers
                .iter()
                .flat_map(|(_, v)| v.split_whitespace().filter(|w| w.len() >= 8).map(String::from)),
        );
        blank.retain(|v| !v.is_empty());
        blank.sort_by_key(|v| std::cmp::Reverse(v.len()));
        let secrets = Secrets(blank.into());
        for (name, value) in o.headers {
            // Names are shown, values never.
            let key = AsciiMetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|_| RemoteSetupError::HeaderName { name: name.clone() })?;
            let value = AsciiMetadataValue::try_from(value.as_str())
                .map_err(|_| RemoteSetupError::HeaderValue { name: name.clone() })?;
            metadata.push((key, value));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("gvbuild-grpc")
            .enable_all()
            .build()
            .map_err(|source| RemoteSetupError::Runtime { shown: shown.clone(), source })?;
        let mut endpoint = Endpoint::from_shared(url.endpoint.clone())
            .map_err(|source| RemoteSetupError::Endpoint { shown: shown.clone(), source })?
            .connect_timeout(o.timeout)
            .tcp_nodelay(true)
            // A server that vanishes while an execution streams nothing for minutes is found
            // by HTTP/2 pings, not by a call's timeout.
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(o.timeout.min(Duration::from_secs(20)))
            .keep_alive_while_idle(true);
        if url.tls {
            let mut tls = ClientTlsConfig::new();
            tls = match http::ca_pem(o.ca_file)? {
                Some(pem) => tls.ca_certificate(Certificate::from_pem(pem)),
                None => tls.with_webpki_roots(),
            };
            if let Some(pems) = http::client_pems(o.client_cert, o.client_key)? {
                tls = tls.identity(Identity::from_pem(pems.cert, pems.key));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|source| RemoteSetupError::Tls { shown: shown.clone(), source })?;
        }
        let channel = {
            let _entered = runtime.enter();
            endpoint.connect_lazy()
        };
        Ok(GrpcStore {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            channel,
            instance: url.instance,
            metadata,
            secrets,
            timeout: o.timeout,
            batch_limit: DEFAULT_BATCH,
            uploads: AtomicU64::new(0),
            pushbacks: AtomicU64::new(0),
            window: Window::new(),
        })
    }

    /// Ask the server's capabilities, first of all. The outer `Err` is a usage error (a server
    /// gvbuild cannot use: no cache, or no SHA-256); the inner one, the server failing to
    /// answer, which the build survives.
    pub fn check(&mut self, shown: &str) -> Result<Result<(), RemoteError>, RemoteSetupError> {
        let caps = match self.capabilities() {
            Ok(caps) => caps,
            Err(e) => return Ok(Err(e)),
        };
        let Some(cache) = caps.cache_capabilities else {
            return Err(RemoteSetupError::NoCache { shown: shown.to_string() });
        };
        let sha256 = reapi::digest_function::Value::Sha256 as i32;
        if !cache.digest_functions.contains(&sha256) {
            let offered: Vec<&str> = cache
                .digest_functions
                .iter()
                .map(|f| reapi::digest_function::Value::try_from(*f).map_or("UNKNOWN", |v| v.as_str_name()))
                .collect();
            let offered = if offered.is_empty() { "none".to_string() } else { offered.join(", ") };
            return Err(RemoteSetupError::NoSha256 { shown: shown.to_string(), offered });
        }
        self.batch_limit = match cache.max_batch_total_size_bytes {
            n if n <= 0 => DEFAULT_BATCH,
            n => (n as u64).min(MAX_BATCH),
        };
        Ok(Ok(()))
    }

    /// `GetCapabilities`, waited out while the server pushes back.
    fn capabilities(&self) -> Result<reapi::ServerCapabilities, RemoteError> {
        let msg = reapi::GetCapabilitiesRequest { instance_name: self.instance.clone() };
        let client = reapi::CapabilitiesClient::new(self.channel.clone());
        self.call_pushed("GetCapabilities", || {
            let (mut c, req) = (client.clone(), self.request(msg.clone()));
            async move { c.get_capabilities(req).await }
        })
    }

    /// The REAPI instance name the URL named (may be empty).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// One unary call of a method that no generated client here covers (the Remote Workers
    /// API's `Bots` service, which `bazel-remote-apis` does not ship), by its full path. The
    /// `deadline` goes to the server as the call's gRPC deadline (a long-polling server reads
    /// it) and bounds the wait here. `Ok(None)` when `stop` was set meanwhile (it is looked at
    /// every 100 ms): the call is dropped, which cancels it on the server.
    pub fn unary<Q, R>(
        &self,
        path: &'static str,
        message: Q,
        deadline: Duration,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<Option<R>, RemoteError>
    where
        Q: Message + Send + Sync + 'static,
        R: Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let mut req = self.request(message);
        req.set_timeout(deadline);
        let call = async move {
            grpc.ready().await.map_err(|e| Status::unavailable(format!("the channel is not ready: {e}")))?;
            let codec = tonic_prost::ProstCodec::<Q, R>::default();
            grpc.unary(req, tonic::codegen::http::uri::PathAndQuery::from_static(path), codec).await
        };
        // A little beyond the deadline: the server's DEADLINE_EXCEEDED says more than ours.
        let limit = deadline + Duration::from_secs(2);
        let answer = self.handle.block_on(async move {
            let mut call = std::pin::pin!(call);
            let start = tokio::time::Instant::now();
            loop {
                match tokio::time::timeout(Duration::from_millis(100), &mut call).await {
                    Ok(r) => return Some(Some(r)),
                    Err(_) if stop.load(Ordering::SeqCst) => return Some(None),
                    Err(_) if start.elapsed() > limit => return None,
                    Err(_) => {}
                }
            }
        });
        match answer {
            Some(Some(Ok(r))) => Ok(Some(r.into_inner())),
            Some(Some(Err(s))) => Err(status_error(&s, &self.secrets)),
            Some(None) => Ok(None),
            None => Err(RemoteError::Transport(format!("{path}: no answer within {} s", limit.as_secs()))),
        }
    }

    /// A request carrying the headers as metadata.
    fn request<T>(&self, message: T) -> Request<T> {
        let mut r = Request::new(message);
        for (k, v) in &self.metadata {
            r.metadata_mut().append(k.clone(), v.clone());
        }
        r
    }

    /// Block this thread on one call, bounded by the timeout.
    fn call<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, RemoteError> {
        match bounded(&self.handle, self.timeout, call) {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(status_error(&s, &self.secrets)),
            Err(_) => Err(timed_out(what, self.timeout)),
        }
    }

    /// A unary call made again while the server pushes back ([`super::backoff`]), within the
    /// call's time budget and the window; `make` builds the call afresh for each try.
    fn call_pushed<T, F: Future<Output = Result<tonic::Response<T>, Status>>>(
        &self,
        what: &str,
        mut make: impl FnMut() -> F,
    ) -> Result<T, RemoteError> {
        self.retry(|| self.call(what, make()))
    }

    /// `attempt` made again while the server pushes back, within the budget and the window.
    fn retry<T>(&self, attempt: impl FnMut() -> Result<T, RemoteError>) -> Result<T, RemoteError> {
        backoff::retry(self.timeout, &self.window, &self.pushbacks, attempt)
    }

    /// The calls this client may have in flight now (narrowed while the server pushes back).
    pub fn window(&self) -> usize {
        self.window.limit()
    }

    /// A call whose `NOT_FOUND` is a miss.
    fn call_found<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<Option<T>, RemoteError> {
        match self.call(what, call) {
            Ok(t) => Ok(Some(t)),
            Err(RemoteError::Grpc { code: "NOT_FOUND", .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn cas(&self) -> reapi::ContentAddressableStorageClient<Channel> {
        reapi::ContentAddressableStorageClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    fn bytestream(&self) -> reapi::ByteStreamClient<Channel> {
        reapi::ByteStreamClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// A ByteStream resource name below the instance.
    fn resource(&self, rest: &str) -> String {
        if self.instance.is_empty() {
            rest.to_string()
        } else {
            format!("{}/{rest}", self.instance)
        }
    }

    /// A fresh UUID (version 4 in form) for an upload's resource name: unique per process,
    /// upload and moment, which is all REAPI asks of it.
    fn upload_id(&self) -> String {
        let n = self.uploads.fetch_add(1, Ordering::Relaxed);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let mut h = blake3::Hasher::new();
        h.update(&std::process::id().to_le_bytes());
        h.update(&now.as_nanos().to_le_bytes());
        h.update(&n.to_le_bytes());
        let mut b = [0u8; 16];
        b.copy_from_slice(&h.finalize().as_bytes()[..16]);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let x = hex::encode(b);
        format!("{}-{}-{}-{}-{}", &x[..8], &x[8..12], &x[12..16], &x[16..20], &x[20..])
    }

    /// A `ByteStream.Read`, its first message in hand; the reader holds its place in the
    /// window (the server serves the stream) until it is dropped.
    fn read_stream(&self, blob: &reapi::Digest) -> Result<Option<BlobReader>, RemoteError> {
        let size = blob.size_bytes.max(0) as u64;
        let msg = reapi::ReadRequest {
            resource_name: self.resource(&format!("blobs/{}/{size}", blob.hash)),
            read_offset: 0,
            read_limit: 0,
        };
        let client = self.bytestream();
        let started = backoff::retry_holding(self.timeout, &self.window, &self.pushbacks, || {
            let (mut c, req) = (client.clone(), self.request(msg.clone()));
            let Some(stream) = self.call_found("ByteStream.Read", async move { c.read(req).await })? else {
                return Ok(None);
            };
            let mut reader = StreamReader {
                handle: self.handle.clone(),
                stream,
                buf: Vec::new(),
                pos: 0,
                done: false,
                timeout: self.timeout,
                secrets: self.secrets.clone(),
                _permit: None,
            };
            // A server may answer the call and send NOT_FOUND (or a pushback) as the stream's
            // first message.
            match reader.next() {
                Ok(()) => Ok(Some(reader)),
                Err(RemoteError::Grpc { code: "NOT_FOUND", .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })?;
        match started {
            (Some(mut reader), permit) => {
                reader._permit = Some(permit);
                Ok(Some((Some(size), Box::new(reader))))
            }
            (None, _) => Ok(None),
        }
    }

    fn write_stream(&self, blob: &reapi::Digest, body: &mut dyn Read) -> Result<(), RemoteError> {
        let size = blob.size_bytes.max(0) as u64;
        let name = self.resource(&format!("uploads/{}/blobs/{}/{size}", self.upload_id(), blob.hash));
        let (tx, rx) = tokio::sync::mpsc::channel::<reapi::WriteRequest>(2);
        let req = self.request(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut client = self.bytestream();
        let mut call = self.handle.spawn(async move { client.write(req).await });
        let mut offset = 0u64;
        let mut sending = true;
        while sending && offset < size {
            let want = (size - offset).min(CHUNK as u64) as usize;
            let mut data = vec![0u8; want];
            if let Err(e) = body.read_exact(&mut data) {
                call.abort();
                return Err(super::read_error(blob, e));
            }
            let message = reapi::WriteRequest {
                resource_name: if offset == 0 { name.clone() } else { String::new() },
                write_offset: offset as i64,
                finish_write: offset + want as u64 == size,
                data,
            };
            offset += want as u64;
            match bounded(&self.handle, self.timeout, tx.send(message)) {
                Ok(Ok(())) => {}
                // The call ended early: the server has the blob already, or refused it.
                Ok(Err(_)) => sending = false,
                Err(_) => {
                    call.abort();
                    return Err(timed_out("ByteStream.Write", self.timeout));
                }
            }
        }
        drop(tx);
        let answer = match bounded(&self.handle, self.timeout, &mut call) {
            Ok(Ok(Ok(r))) => r.into_inner(),
            Ok(Ok(Err(s))) => return Err(status_error(&s, &self.secrets)),
            Ok(Err(e)) => return Err(RemoteError::Transport(format!("ByteStream.Write: {e}"))),
            Err(_) => {
                call.abort();
                return Err(timed_out("ByteStream.Write", self.timeout));
            }
        };
        // -1 or the full size: the blob is there (an upload that ended early says either).
        if answer.committed_size != size as i64 && answer.committed_size != -1 {
            return Err(RemoteError::Transport(format!(
                "ByteStream.Write of blob {}: the server committed {} of {size} bytes",
                blob.hash, answer.committed_size
            )));
        }
        Ok(())
    }
}

/// How long an execution waits before `waiting` is first told.
const WAIT_NOTE: Duration = Duration::from_secs(30);
/// The longest an execution's stream is held once the engine has pushed back (see
/// [`GrpcStore::execute`]).
const SLICE: Duration = Duration::from_secs(2);

/// How an execution ended without a result.
#[derive(Debug)]
pub enum ExecFailure {
    /// The engine, or the way to it, failed: another engine or the local machine could run it.
    Engine(RemoteError),
    /// The engine ran the action and said no (a status other than OK, with its message).
    Refused { code: &'static str, message: String },
    /// Ctrl-C: the operation was left to the engine.
    Interrupted,
    /// `FAILED_PRECONDITION` with `MISSING` violations: inputs the engine's CAS no longer has
    /// (evicted after they were uploaded). Uploading them again and retrying can work; empty
    /// when the engine named none.
    Missing(Vec<reapi::Digest>),
}

impl GrpcStore {
    /// Whether the engine executes (its capabilities' `execution_capabilities.exec_enabled`,
    /// and SHA-256 as its digest function). `Err` is the engine failing to answer.
    pub fn exec_enabled(&self) -> Result<bool, RemoteError> {
        let caps = self.capabilities()?;
        let sha256 = reapi::digest_function::Value::Sha256 as i32;
        Ok(caps.execution_capabilities.is_some_and(|e| e.exec_enabled && e.digest_function == sha256))
    }

    /// `Execution.Execute` of the action whose digest is `action` (it, its command and its input
    /// root are in the CAS already), following the operation until it is done; a stream that
    /// breaks is picked up again with `WaitExecution` (at most `RESUMES` times in a row).
    /// The wait for the next message has no time limit (an action runs as long as it runs; the
    /// engine repeats the operation now and then, and HTTP/2 pings find a vanished engine);
    /// `interrupted` is looked at every 200 ms. With `skip_cache_lookup` the engine runs the
    /// action even when its action cache has a result for it.
    pub fn execute(
        &self,
        action: &reapi::Digest,
        skip_cache_lookup: bool,
        interrupted: &std::sync::atomic::AtomicBool,
        waiting: &dyn Fn(Duration, bool),
    ) -> Result<reapi::ExecuteResponse, ExecFailure> {
        const RESUMES: usize = 3;
        let client = reapi::ExecutionClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let msg = reapi::ExecuteRequest {
            instance_name: self.instance.clone(),
            action_digest: Some(action.clone()),
            skip_cache_lookup,
            ..Default::default()
        };
        let engine = |e: RemoteError| ExecFailure::Engine(e);
        // A stream holds a place in the window while the action runs: an engine serves it with
        // one of its threads all along. Once the engine has pushed back, a stream is held for
        // [`SLICE`] at most, then dropped and taken up again with `WaitExecution` (the action
        // goes on meanwhile), so that the engine's threads turn over: streams held for good
        // could take every one of them and leave none for the workers' reports, which the
        // actions wait on (a deadlock BuildGrid's default pool reaches).
        let (mut stream, mut permit) =
            backoff::retry_holding(self.timeout, &self.window, &self.pushbacks, || {
                let (mut c, req) = (client.clone(), self.request(msg.clone()));
                self.call("Execute", async move { c.execute(req).await })
            })
            .map_err(engine)?;
        let mut held_since = std::time::Instant::now();
        let mut name = String::new();
        let mut resumes = 0;
        let started = std::time::Instant::now();
        let mut queued = true;
        let mut told = 0u32;
        loop {
            if interrupted.load(Ordering::SeqCst) {
                self.cancel(&name);
                return Err(ExecFailure::Interrupted);
            }
            // Said after 30 s, then every 5 minutes: an action no worker matches waits forever.
            let waited = started.elapsed();
            if waited >= WAIT_NOTE * (1 + told * 10) {
                told += 1;
                waiting(waited, queued);
            }
            let turn_over =
                !name.is_empty() && self.window.limit() < backoff::WIDEST && held_since.elapsed() >= SLICE;
            if !turn_over {
                let next = bounded(&self.handle, Duration::from_millis(200), stream.message());
                let broken = match next {
                    Err(_) => continue,
                    Ok(Ok(Some(op))) => {
                        resumes = 0;
                        name = op.name.clone();
                        if op.done {
                            return self.finished(op);
                        }
                        if let Some(m) = op.metadata.as_ref() {
                            if let Ok(meta) = reapi::ExecuteOperationMetadata::decode(&m.value[..]) {
                                queued = meta.stage <= reapi::execution_stage::Value::Queued as i32;
                            }
                        }
                        continue;
                    }
                    Ok(Ok(None)) => {
                        RemoteError::Transport("the Execute stream ended before the action was done".into())
                    }
                    Ok(Err(s)) => status_error(&s, &self.secrets),
                };
                resumes += 1;
                if name.is_empty() || resumes > RESUMES {
                    return Err(ExecFailure::Engine(broken));
                }
            }
            drop(stream);
            drop(permit);
            let wait = reapi::WaitExecutionRequest { name: name.clone() };
            (stream, permit) = backoff::retry_holding(self.timeout, &self.window, &self.pushbacks, || {
                let (mut c, req) = (client.clone(), self.request(wait.clone()));
                self.call("WaitExecution", async move { c.wait_execution(req).await })
            })
            .map_err(engine)?;
            held_since = std::time::Instant::now();
        }
    }

    /// Ask the engine to drop operation `name` (Ctrl-C): best effort, briefly.
    fn cancel(&self, name: &str) {
        if name.is_empty() {
            return;
        }
        let mut client = reapi::OperationsClient::new(self.channel.clone());
        let req = self.request(reapi::CancelOperationRequest { name: name.to_string() });
        let _ = bounded(&self.handle, Duration::from_secs(2), client.cancel_operation(req));
    }

    fn finished(&self, op: reapi::Operation) -> Result<reapi::ExecuteResponse, ExecFailure> {
        let response = match op.result {
            Some(reapi::operation::Result::Response(any)) => reapi::ExecuteResponse::decode(&any.value[..])
                .map_err(|e| {
                ExecFailure::Engine(RemoteError::Transport(format!(
                    "operation {} is done with a response that is not an ExecuteResponse: {e}",
                    op.name
                )))
            })?,
            Some(reapi::operation::Result::Error(s)) => {
                return Err(refused(s.code, &s.message, &self.secrets));
            }
            None => {
                return Err(ExecFailure::Engine(RemoteError::Transport(format!(
                    "operation {} is done without a result",
                    op.name
                ))))
            }
        };
        match &response.status {
            Some(s) if s.code == Code::FailedPrecondition as i32 && names_missing(&s.details).is_some() => {
                Err(ExecFailure::Missing(names_missing(&s.details).unwrap_or_default()))
            }
            Some(s) if s.code != 0 => Err(refused(s.code, &s.message, &self.secrets)),
            _ => Ok(response),
        }
    }

    /// Put blobs the engine lacks: `blobs` are (digest, where to read it). Those named in
    /// `again` (the engine said it lost them) are put whatever `FindMissingBlobs` says.
    pub fn upload_missing(
        &self,
        blobs: &[(reapi::Digest, BlobSource)],
        again: &[reapi::Digest],
    ) -> Result<u64, RemoteError> {
        let digests: Vec<reapi::Digest> = blobs.iter().map(|(d, _)| d.clone()).collect();
        let mut missing: std::collections::HashSet<String> =
            self.find_missing(&digests)?.into_iter().map(|d| d.hash).collect();
        missing.extend(again.iter().map(|d| d.hash.clone()));
        let mut sent = 0;
        let mut done = std::collections::HashSet::new();
        for (d, source) in blobs {
            if !missing.contains(&d.hash) || !done.insert(d.hash.clone()) {
                continue;
            }
            match source {
                BlobSource::Bytes(b) => self.put_blob(d, Body::Bytes(b))?,
                BlobSource::File(p) => self.put_blob(d, Body::File(p))?,
            }
            sent += d.size_bytes.max(0) as u64;
        }
        Ok(sent)
    }
}

/// The blobs a status's `PreconditionFailure` details name `MISSING` (`blobs/HASH/SIZE`, as
/// remote_execution.proto's `Execute` documents), or `None` when it names none.
fn names_missing(details: &[reapi::Any]) -> Option<Vec<reapi::Digest>> {
    let mut missing = Vec::new();
    for any in details.iter().filter(|a| a.type_url == reapi::PRECONDITION_FAILURE_TYPE) {
        let Ok(failure) = reapi::PreconditionFailure::decode(&any.value[..]) else { continue };
        for v in failure.violations.iter().filter(|v| v.r#type == "MISSING") {
            let digest = v.subject.strip_prefix("blobs/").and_then(|rest| rest.split_once('/')).and_then(
                |(hash, size)| Some(reapi::Digest { hash: hash.to_string(), size_bytes: size.parse().ok()? }),
            );
            missing.extend(digest);
        }
    }
    (!missing.is_empty()).then_some(missing)
}

/// Where an input blob's bytes are.
pub enum BlobSource {
    Bytes(Vec<u8>),
    File(std::path::PathBuf),
}

/// A non-OK status from the engine: an engine problem when another try could work
/// (UNAVAILABLE, RESOURCE_EXHAUSTED, INTERNAL, ...), else the engine's refusal.
fn refused(code: i32, message: &str, secrets: &Secrets) -> ExecFailure {
    let e = rpc_error(code, message, secrets);
    match e {
        RemoteError::Grpc { code, message }
            if !matches!(code, "UNAVAILABLE" | "RESOURCE_EXHAUSTED" | "INTERNAL" | "UNKNOWN" | "ABORTED") =>
        {
            ExecFailure::Refused { code, message }
        }
        other => ExecFailure::Engine(other),
    }
}

impl Drop for GrpcStore {
    fn drop(&mut self) {
        // Not waiting for the connection's tasks: the build is done with the server.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Store for GrpcStore {
    fn get_action(&self, key: &reapi::Digest) -> Result<Option<Vec<u8>>, RemoteError> {
        let msg = reapi::GetActionResultRequest {
            instance_name: self.instance.clone(),
            action_digest: Some(key.clone()),
            ..Default::default()
        };
        let client =
            reapi::ActionCacheClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE);
        let answer = self.call_pushed("GetActionResult", || {
            let (mut c, req) = (client.clone(), self.request(msg.clone()));
            async move { c.get_action_result(req).await }
        });
        match answer {
            Ok(r) => Ok(Some(r.encode_to_vec())),
            Err(RemoteError::Grpc { code: "NOT_FOUND", .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn put_action(&self, key: &reapi::Digest, body: &[u8]) -> Result<(), RemoteError> {
        let result = reapi::ActionResult::decode(body)
            .map_err(|e| RemoteError::Transport(format!("action entry {}: {e}", key.hash)))?;
        let msg = reapi::UpdateActionResultRequest {
            instance_name: self.instance.clone(),
            action_digest: Some(key.clone()),
            action_result: Some(result),
            ..Default::default()
        };
        let client =
            reapi::ActionCacheClient::new(self.channel.clone()).max_encoding_message_size(MAX_MESSAGE);
        self.call_pushed("UpdateActionResult", || {
            let (mut c, req) = (client.clone(), self.request(msg.clone()));
            async move { c.update_action_result(req).await }
        })
        .map(|_| ())
    }

    fn has_blob(&self, blob: &reapi::Digest) -> Result<bool, RemoteError> {
        Ok(self.find_missing(std::slice::from_ref(blob))?.is_empty())
    }

    fn find_missing(&self, blobs: &[reapi::Digest]) -> Result<Vec<reapi::Digest>, RemoteError> {
        let mut missing = Vec::new();
        for some in blobs.chunks(FIND_MANY) {
            let msg = reapi::FindMissingBlobsRequest {
                instance_name: self.instance.clone(),
                blob_digests: some.to_vec(),
                ..Default::default()
            };
            let cas = self.cas();
            let answer = self.call_pushed("FindMissingBlobs", || {
                let (mut c, req) = (cas.clone(), self.request(msg.clone()));
                async move { c.find_missing_blobs(req).await }
            })?;
            missing.extend(answer.missing_blob_digests);
        }
        Ok(missing)
    }

    fn get_blob(&self, blob: &reapi::Digest) -> Result<Option<BlobReader>, RemoteError> {
        if blob.size_bytes.max(0) as u64 > self.batch_limit {
            return self.read_stream(blob);
        }
        let msg = reapi::BatchReadBlobsRequest {
            instance_name: self.instance.clone(),
            digests: vec![blob.clone()],
            ..Default::default()
        };
        let cas = self.cas();
        // A blob's own status may push back too: it is part of the try.
        self.retry(|| {
            let (mut c, req) = (cas.clone(), self.request(msg.clone()));
            let answer = self.call("BatchReadBlobs", async move { c.batch_read_blobs(req).await })?;
            let Some(r) =
                answer.responses.into_iter().find(|r| r.digest.as_ref().is_some_and(|d| d.hash == blob.hash))
            else {
                return Err(RemoteError::Transport(format!(
                    "BatchReadBlobs answered without blob {}",
                    blob.hash
                )));
            };
            match r.status {
                Some(s) if s.code == Code::NotFound as i32 => Ok(None),
                Some(s) if s.code != Code::Ok as i32 => Err(rpc_error(s.code, &s.message, &self.secrets)),
                _ => Ok(Some((
                    Some(r.data.len() as u64),
                    Box::new(io::Cursor::new(r.data)) as Box<dyn Read + Send>,
                ))),
            }
        })
    }

    fn pressure(&self) -> (u64, usize) {
        (self.pushbacks.load(std::sync::atomic::Ordering::Relaxed), self.window.narrowest())
    }

    fn put_blob(&self, blob: &reapi::Digest, body: Body<'_>) -> Result<(), RemoteError> {
        let size = blob.size_bytes.max(0) as u64;
        if size > self.batch_limit {
            // Read afresh for each try.
            return self.retry(|| self.write_stream(blob, &mut body.open(blob)?));
        }
        let mut data = Vec::with_capacity(size as usize);
        body.open(blob)?.take(size).read_to_end(&mut data).map_err(|e| super::read_error(blob, e))?;
        let msg = reapi::BatchUpdateBlobsRequest {
            instance_name: self.instance.clone(),
            requests: vec![reapi::batch_update_blobs_request::Request {
                digest: Some(blob.clone()),
                data,
                ..Default::default()
            }],
            ..Default::default()
        };
        let cas = self.cas();
        self.retry(|| {
            let (mut c, req) = (cas.clone(), self.request(msg.clone()));
            let answer = self.call("BatchUpdateBlobs", async move { c.batch_update_blobs(req).await })?;
            match answer.responses.into_iter().find_map(|r| r.status).filter(|s| s.code != Code::Ok as i32) {
                Some(s) => Err(rpc_error(s.code, &s.message, &self.secrets)),
                None => Ok(()),
            }
        })
    }
}

/// A `ByteStream.Read` as a reader: each `read` past the chunk in hand waits (bounded) for the
/// next one.
struct StreamReader {
    handle: Handle,
    stream: tonic::Streaming<reapi::ReadResponse>,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
    timeout: Duration,
    secrets: Secrets,
    /// The stream's place in the client's window, given back when the reader is dropped.
    _permit: Option<Permit>,
}

impl StreamReader {
    /// The next chunk into `buf` (or `done` at the stream's end).
    fn next(&mut self) -> Result<(), RemoteError> {
        match bounded(&self.handle, self.timeout, self.stream.message()) {
            Ok(Ok(Some(m))) => {
                self.buf = m.data;
                self.pos = 0;
                Ok(())
            }
            Ok(Ok(None)) => {
                self.done = true;
                Ok(())
            }
            Ok(Err(s)) => Err(status_error(&s, &self.secrets)),
            Err(_) => Err(timed_out("ByteStream.Read", self.timeout)),
        }
    }
}

impl Read for StreamReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.buf.len() && !self.done {
            self.next().map_err(|e| io::Error::other(e.to_string()))?;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Block this thread on `f`, for at most `timeout`. The timer is made inside the runtime
/// (`block_on` enters it), which is where tokio's timers must be made.
fn bounded<F: Future>(
    handle: &Handle,
    timeout: Duration,
    f: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    handle.block_on(async move { tokio::time::timeout(timeout, f).await })
}

fn timed_out(what: &str, timeout: Duration) -> RemoteError {
    RemoteError::Transport(format!("{what}: no answer within {} s (--remote-timeout)", timeout.as_secs()))
}

/// A call's status as an error: its code's name and message, then the transport's cause (a
/// refused connection says so only there).
/// A call's failure: the server's status as [`RemoteError::Grpc`]; a failure of the client's
/// own connection (refused, reset: tonic gives it as `UNAVAILABLE` with the transport error as
/// its source) as [`RemoteError::Transport`], which is not a server asking to come back.
fn status_error(s: &Status, secrets: &Secrets) -> RemoteError {
    let mut message = s.message().to_string();
    let mut source = std::error::Error::source(s);
    let transport = source.is_some() && s.code() == Code::Unavailable;
    while let Some(e) = source {
        let text = e.to_string();
        if !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
        source = e.source();
    }
    if transport {
        return RemoteError::Transport(format!("gRPC status UNAVAILABLE: {}", secrets.blank(&message)));
    }
    RemoteError::Grpc { code: code_name(s.code()), message: secrets.blank(&message) }
}

/// A per-blob status of a batch call (a `google.rpc.Status`) as an error.
fn rpc_error(code: i32, message: &str, secrets: &Secrets) -> RemoteError {
    RemoteError::Grpc { code: code_name(Code::from_i32(code)), message: secrets.blank(message) }
}

/// Header values: a server that quotes the token it refused must not have it printed.
#[derive(Clone, Default)]
struct Secrets(std::sync::Arc<[String]>);

impl Secrets {
    fn blank(&self, text: &str) -> String {
        self.0.iter().fold(text.to_string(), |t, secret| t.replace(secret.as_str(), "<header value>"))
    }
}

/// The canonical name of a gRPC code, as servers and their logs write it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_endpoint_and_the_instance() {
        let u = parse_url("grpc://127.0.0.1:8980").unwrap();
        assert_eq!(
            u,
            GrpcUrl { endpoint: "http://127.0.0.1:8980".into(), tls: false, instance: String::new() }
        );
        let u = parse_url("grpcs://cache.example:443/team/main/").unwrap();
        assert_eq!(u.endpoint, "https://cache.example:443");
        assert!(u.tls);
        assert_eq!(u.instance, "team/main");
        assert_eq!(parse_url("grpc://[::1]:9092/x").unwrap().endpoint, "http://[::1]:9092");
    }

    #[test]
    fn malformed_urls_say_what_is_wrong() {
        for (url, why) in [
            ("grpc://host", "the port is missing"),
            ("grpc://:80", "the host is missing"),
            ("grpc://host:http", "not a port"),
            ("grpc://host:0", "not a port"),
            ("grpc://user:s3cr3t@host:80", "GVBUILD_REMOTE_HEADER"),
            ("grpc://host:80/a//b", "empty"),
            ("grpc://host:80/team/blobs", "reserves `blobs`"),
            ("grpc://host:80/?x=1", "query"),
            ("grpc://::1:80", "brackets"),
        ] {
            let e = parse_url(url).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("grpc://HOST:PORT[/INSTANCE]"), "{url}: {e}");
            assert!(!e.contains("s3cr3t"), "{e}");
        }
    }
}
