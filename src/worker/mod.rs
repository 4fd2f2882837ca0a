//! `gvbuild worker`: a bot of the Remote Workers API (`google.devtools.remoteworkers.v1test2`,
//! bots.proto and worker.proto), the protocol by which REAPI engines such as BuildGrid hand
//! actions to the machines that run them. A program of its own inside the binary: it speaks to
//! the engine's `Bots` service and CAS, and runs commands in process groups of their own that
//! [`crate::jobs`] records (as a build's steps are); it never touches the scheduler, the local cache or a project.
//!
//! # A worker's life
//! At start it finds each `--tool NAME` on its PATH and prints its identity
//! ([`crate::fingerprint::tools::ToolId::identity`]) as the platform property a client copies
//! (`tool:nvcc=b3:...`), asks the server's capabilities, and creates a bot session whose
//! device properties are the `--platform` pairs and those tool properties (engines match an
//! action's platform against the first device's properties; BuildGrid builds the powerset of
//! them, so they should stay few), with `capacity` = `--jobs`.
//!
//! # The session loop
//! Each `UpdateBotSession` sends the whole session back: every lease it holds, `ACTIVE` while
//! it runs, `COMPLETED` with its `ActionResult` and status once done, and the `version` the
//! server last gave. Idle, the call long-polls (a deadline of [`LONG_POLL`]: the server waits
//! for work up to 0.8 × the deadline or its keepalive, whichever is less). While leases run it
//! does not long-poll (a deadline of [`SHORT_CALL`], under which BuildGrid answers at once) and
//! is repeated every quarter of the keepalive the server's `expire_time` reveals, or at once
//! when a lease finishes: a session not heard from within the keepalive is reaped and its
//! leases given to other bots. A lease the server gives is already `ACTIVE`, its `payload` the
//! REAPI `Action`; one that disappears from the server's answer was cancelled, and its
//! command's process group is killed. A session the server no longer knows (reaped, or
//! replaced by a newer one of the same bot id) loses its leases and is created anew. So does
//! one whose tools changed (see [`lease`]'s tool check), once it holds no lease: engines read
//! a session's properties when it begins.
//!
//! # Leaving
//! SIGINT or SIGTERM kill the running commands, report their leases `COMPLETED` with
//! `UNAVAILABLE` (which an engine retries on another bot at once, rather than after the
//! keepalive) and the session `BOT_TERMINATING`, and end the worker. A worker killed outright
//! is outlived by [`crate::jobs`]' reaper, which kills its commands; the next worker of
//! the same bot id and work folder removes what they left on disk.

mod failure;
mod inputs;
mod lease;
mod outputs;
pub mod rwapi;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use prost::Message;
use tonic::Code;

use crate::cache::remote::grpc::{GrpcOptions, GrpcStore};
use crate::cache::remote::reapi::{Action, ActionResult, Any, RpcStatus};
use crate::cache::remote::{RemoteError, RemoteSetupError};
use crate::fingerprint::tools::{tool_property, ToolCache, ToolError};
use crate::fingerprint::StatCache;
use crate::jobs::Jobs;
use lease::{Control, Shared};
use rwapi::{BotSession, BotStatus, CreateBotSessionRequest, Lease, LeaseState, UpdateBotSessionRequest};

pub use lease::SUPPLIED;

/// The deadline of an idle `UpdateBotSession`, which the server may hold open waiting for work.
pub const LONG_POLL: Duration = Duration::from_secs(30);
/// The deadline of a heartbeat: under BuildGrid's 3 s network allowance (0.8 × 3.5 s), so it
/// answers at once, yet room enough for a loaded server to answer.
pub const SHORT_CALL: Duration = Duration::from_millis(3500);

/// How the worker was asked to run.
pub struct Options {
    /// `grpc[s]://HOST:PORT[/INSTANCE]`.
    pub server: String,
    pub headers: Vec<(String, String)>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// For each CAS call.
    pub timeout: Duration,
    pub platform: Vec<(String, String)>,
    pub tools: Vec<String>,
    pub jobs: usize,
    pub work_dir: Option<PathBuf>,
    pub bot_id: Option<String>,
}

/// Why the worker cannot start: a usage error (a bad URL, a missing tool).
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum WorkerError {
    #[error("--tool {name}: {source}")]
    #[diagnostic(code(gvbuild::worker::tool))]
    Tool { name: String, source: ToolError },
    #[error("--work-dir: cannot create {}: {source}", dir.display())]
    #[diagnostic(code(gvbuild::worker::work_dir))]
    WorkDir { dir: PathBuf, source: std::io::Error },
    /// The server's URL or its answer, said of `--server`, the worker's flag for it.
    #[error("{}", .0.to_string().replacen("--remote-cache", "--server", 1))]
    #[diagnostic(code(gvbuild::worker::server))]
    Server(#[source] RemoteSetupError),
}

/// Where the worker's words go: `out` for what a user copies (the tool properties), `note` for
/// its log.
#[derive(Clone, Copy)]
pub struct Report {
    pub out: fn(&str),
    pub note: fn(&str),
}

/// A tool's identity as a client keys it: NAME found on this process's PATH (or a path).
pub fn identify(name: &str) -> Result<String, ToolError> {
    let root = std::env::current_dir().unwrap_or_default();
    ToolCache::default().identify(name, &root, &StatCache::default()).map(|id| id.identity())
}

/// A lease the worker holds.
struct Slot {
    serial: u64,
    /// As the server sent it; echoed `ACTIVE` while it runs.
    lease: Lease,
    control: Arc<Control>,
    /// The `COMPLETED` lease, once the command is done.
    done: Option<Lease>,
}

/// A job's end, from its thread.
struct Finished {
    serial: u64,
    id: String,
    status: RpcStatus,
    result: ActionResult,
}

/// Run the worker until SIGINT or SIGTERM. `Err` is a usage error (a bad URL, a missing tool).
pub fn run(o: Options, report: Report) -> Result<u8, WorkerError> {
    let bot_id = o.bot_id.clone().unwrap_or_else(|| {
        let host =
            fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        let host = if host.is_empty() { "localhost".to_string() } else { host };
        format!("{host}-{}", std::process::id())
    });
    let mut tools = BTreeMap::new();
    for name in &o.tools {
        let id = identify(name).map_err(|source| WorkerError::Tool { name: name.clone(), source })?;
        (report.out)(&format!("{}={id}\n", tool_property(name)));
        tools.insert(tool_property(name), (name.clone(), id));
    }

    // The worker's own folder: its jobs log (for the reaper) and one folder per action.
    let safe: String = bot_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' })
        .collect();
    let dir = o.work_dir.clone().unwrap_or_else(|| std::env::temp_dir().join("gvbuild-worker")).join(safe);
    fs::create_dir_all(&dir).map_err(|source| WorkerError::WorkDir { dir: dir.clone(), source })?;
    let jobs = Jobs::new(&dir);
    jobs.kill_leftovers();
    if let Ok(entries) = fs::read_dir(&dir) {
        for e in entries.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("a-")) {
            let _ = fs::remove_dir_all(e.path());
        }
    }

    let mut store = GrpcStore::new(GrpcOptions {
        url: &o.server,
        headers: o.headers.clone(),
        ca_file: o.ca_file.as_deref(),
        client_cert: o.client_cert.as_deref(),
        client_key: o.client_key.as_deref(),
        timeout: o.timeout,
    })
    .map_err(WorkerError::Server)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
    let shown = crate::cache::remote::shown_url(&o.server);
    loop {
        match store.check(&shown).map_err(WorkerError::Server)? {
            Ok(()) => break,
            Err(e) => (report.note)(&format!("worker: {shown} does not answer ({e}); trying again")),
        }
        if pause(&stop, Duration::from_secs(2)) {
            return Ok(130);
        }
    }
    let platform_props: Vec<rwapi::Property> =
        o.platform.iter().map(|(k, v)| rwapi::Property { key: k.clone(), value: v.clone() }).collect();
    let shared = Arc::new(Shared {
        store,
        jobs,
        tools: Mutex::new(tools),
        tools_changed: AtomicBool::new(false),
        bot_id: bot_id.clone(),
    });
    (report.note)(&format!(
        "worker {bot_id}: serving {shown} with {} job(s), in {}",
        o.jobs.max(1),
        dir.display()
    ));
    let mut w = Session {
        shared,
        report,
        stop,
        dir,
        capacity: o.jobs.max(1),
        platform: platform_props,
        slots: BTreeMap::new(),
        serial: 0,
        heartbeat: Duration::from_secs(1),
    };
    w.serve();
    w.shared.jobs.finish();
    Ok(0)
}

/// Sleep for `d` unless `stop` is set meanwhile (then `true`).
fn pause(stop: &AtomicBool, d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::SeqCst) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50).min(end.saturating_duration_since(Instant::now())));
    }
    stop.load(Ordering::SeqCst)
}

struct Session {
    shared: Arc<Shared>,
    report: Report,
    stop: Arc<AtomicBool>,
    dir: PathBuf,
    capacity: usize,
    platform: Vec<rwapi::Property>,
    slots: BTreeMap<String, Slot>,
    serial: u64,
    heartbeat: Duration,
}

fn code_of(e: &RemoteError) -> &'static str {
    match e {
        RemoteError::Grpc { code, .. } => code,
        _ => "",
    }
}

impl Session {
    fn note(&self, text: &str) {
        (self.report.note)(&format!("worker: {text}"))
    }

    /// What the worker is, as sent in every call.
    fn worker(&self) -> rwapi::Worker {
        let mut properties = self.platform.clone();
        if let Ok(tools) = self.shared.tools.lock() {
            properties.extend(
                tools.iter().map(|(k, (_, id))| rwapi::Property { key: k.clone(), value: id.clone() }),
            );
        }
        rwapi::Worker {
            devices: vec![rwapi::Device { handle: "gvbuild".into(), properties }],
            properties: Vec::new(),
            configs: vec![rwapi::Property { key: "capacity".into(), value: self.capacity.to_string() }],
        }
    }

    /// Serve leases until stopped: keep a bot session, report to the server every heartbeat (at
    /// once when a lease finishes), run what it gives; on the way out, kill what still runs.
    fn serve(&mut self) {
        let (tx, rx) = mpsc::channel::<Finished>();
        let mut session: Option<BotSession> = None;
        loop {
            while let Ok(f) = rx.try_recv() {
                self.finished(f);
            }
            let stopping = self.stop.load(Ordering::SeqCst);
            if stopping {
                self.abandon_running();
            }
            let Some(current) = session.as_ref() else {
                if stopping {
                    break;
                }
                session = self.create();
                if session.is_none() && pause(&self.stop, Duration::from_secs(2)) {
                    break;
                }
                continue;
            };
            let started = Instant::now();
            match self.update(current, stopping) {
                Ok(Some(back)) => {
                    self.synchronize(&back, &tx);
                    session = Some(back);
                    if self.slots.is_empty() && self.shared.tools_changed.swap(false, Ordering::SeqCst) {
                        // Same bot id: the server replaces the old session with the new one.
                        self.note(
                            "a tool changed since the session began; starting a new session to advertise it",
                        );
                        session = None;
                    }
                    if stopping {
                        break;
                    }
                }
                Ok(None) => {}
                Err(e) if matches!(code_of(&e), "INVALID_ARGUMENT" | "NOT_FOUND" | "DATA_LOSS") => {
                    // Reaped, or replaced by a newer session of this bot id: its leases are
                    // someone else's now.
                    self.note(&format!("the server dropped the session ({e}); starting a new one"));
                    for s in std::mem::take(&mut self.slots).into_values() {
                        s.control.cancel();
                    }
                    session = None;
                }
                Err(e) => {
                    self.note(&format!("UpdateBotSession failed ({e}); trying again"));
                    if stopping {
                        break;
                    }
                    pause(&self.stop, Duration::from_secs(1));
                    continue;
                }
            }
            self.wait_between_calls(&rx, started);
        }
        for s in self.slots.values() {
            s.control.cancel();
        }
        self.shared.jobs.kill_all();
    }

    /// One UpdateBotSession call from `current`: the worker, each lease's state or result, and
    /// whether the bot is `stopping`. A call that reports results is never interrupted.
    fn update(&self, current: &BotSession, stopping: bool) -> Result<Option<BotSession>, RemoteError> {
        let never = AtomicBool::new(false);
        let mut send = current.clone();
        send.status = if stopping { BotStatus::BotTerminating } else { BotStatus::Ok } as i32;
        send.worker = Some(self.worker());
        send.leases =
            self.slots.values().map(|s| s.done.clone().unwrap_or_else(|| s.lease.clone())).collect();
        let completing = self.slots.values().any(|s| s.done.is_some());
        let busy = !self.slots.is_empty() || stopping;
        let deadline = if busy { SHORT_CALL } else { LONG_POLL };
        // A call that reports results is not dropped halfway: they would be sent twice.
        let interrupt = if completing { &never } else { &*self.stop };
        let req =
            UpdateBotSessionRequest { name: send.name.clone(), bot_session: Some(send), update_mask: None };
        self.shared.store.unary::<_, BotSession>(rwapi::UPDATE_BOT_SESSION, req, deadline, interrupt)
    }

    /// Between two calls begun at `started`: with leases running, a heartbeat or until one
    /// finishes (or the bot stops); idle, a moment when the server answered at once.
    fn wait_between_calls(&mut self, rx: &mpsc::Receiver<Finished>, started: Instant) {
        if !self.slots.is_empty() {
            // Heartbeat: again after a while, or as soon as a lease finishes.
            let until = Instant::now() + self.heartbeat;
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                match rx.recv_timeout(left.min(Duration::from_millis(100))) {
                    Ok(f) => {
                        self.finished(f);
                        break;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) if self.stop.load(Ordering::SeqCst) => break,
                    Err(_) => {}
                }
            }
        } else if started.elapsed() < Duration::from_millis(200) {
            // A server that answers an idle bot at once is not asked in a tight loop.
            pause(&self.stop, Duration::from_millis(200));
        }
    }

    fn create(&mut self) -> Option<BotSession> {
        let session = BotSession {
            bot_id: self.shared.bot_id.clone(),
            status: BotStatus::Ok as i32,
            worker: Some(self.worker()),
            ..Default::default()
        };
        let req = CreateBotSessionRequest {
            parent: self.shared.store.instance().to_string(),
            bot_session: Some(session),
        };
        match self.shared.store.unary::<_, BotSession>(rwapi::CREATE_BOT_SESSION, req, SHORT_CALL, &self.stop)
        {
            Ok(Some(s)) => {
                self.note(&format!("session {} created", s.name));
                self.adjust_heartbeat(&s);
                // Leases given at creation (BuildGrid gives none) come again in the first update.
                Some(BotSession { leases: Vec::new(), version: String::new(), ..s })
            }
            Ok(None) => None,
            Err(e) => {
                self.note(&format!("CreateBotSession failed ({e}); trying again"));
                None
            }
        }
    }

    fn adjust_heartbeat(&mut self, s: &BotSession) {
        let Some(t) = s.expire_time.as_ref() else { return };
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let expire = Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32);
        if let Some(left) = expire.checked_sub(now) {
            self.heartbeat = (left / 4).clamp(Duration::from_millis(250), Duration::from_secs(5));
        }
    }

    /// The server's answer: results it has taken, leases it took back, leases it gives.
    fn synchronize(&mut self, back: &BotSession, tx: &mpsc::Sender<Finished>) {
        self.adjust_heartbeat(back);
        self.slots.retain(|_, s| s.done.is_none());
        let given: HashSet<&str> = back.leases.iter().map(|l| l.id.as_str()).collect();
        let gone: Vec<String> =
            self.slots.keys().filter(|id| !given.contains(id.as_str())).cloned().collect();
        for id in gone {
            if let Some(s) = self.slots.remove(&id) {
                s.control.cancel();
                self.note(&format!("lease {id} was cancelled by the server; its command is killed"));
            }
        }
        for l in &back.leases {
            let fresh = matches!(LeaseState::try_from(l.state), Ok(LeaseState::Active | LeaseState::Pending));
            if fresh && !self.slots.contains_key(&l.id) {
                self.start(l, tx);
            }
        }
    }

    fn start(&mut self, given: &Lease, tx: &mpsc::Sender<Finished>) {
        self.serial += 1;
        let serial = self.serial;
        // Accepting a PENDING lease is echoing it ACTIVE (bots.proto).
        let lease = Lease { state: LeaseState::Active as i32, ..given.clone() };
        let control = Arc::new(Control::default());
        let (shared, report, folder, tx) =
            (self.shared.clone(), self.report, self.dir.join(format!("a-{serial}")), tx.clone());
        let (id, payload, ctl) = (lease.id.clone(), lease.payload.clone(), control.clone());
        self.note(&format!("lease {id} started"));
        std::thread::spawn(move || {
            let started = Instant::now();
            let (status, result) = match decode_action(payload.as_ref()) {
                Ok(action) => lease::execute(&shared, &action, &folder, &ctl),
                Err(f) => (f.status(), ActionResult::default()),
            };
            if !ctl.cancelled() {
                let how = if status.code == 0 {
                    format!("exit code {}", result.exit_code)
                } else {
                    format!("{:?}: {}", Code::from_i32(status.code), status.message)
                };
                (report.note)(&format!(
                    "worker: lease {id} done in {:.1} s, {how}",
                    started.elapsed().as_secs_f64()
                ));
            }
            let _ = tx.send(Finished { serial, id, status, result });
        });
        self.slots.insert(lease.id.clone(), Slot { serial, lease, control, done: None });
    }

    fn finished(&mut self, f: Finished) {
        let Some(slot) = self.slots.get_mut(&f.id).filter(|s| s.serial == f.serial && s.done.is_none())
        else {
            return;
        };
        slot.done = Some(completed(&slot.lease.id, f.status, &f.result));
    }

    /// Kill what runs and hand its leases back as `UNAVAILABLE`, which engines retry elsewhere.
    fn abandon_running(&mut self) {
        for s in self.slots.values_mut().filter(|s| s.done.is_none()) {
            s.control.cancel();
            let status = RpcStatus {
                code: Code::Unavailable as i32,
                message: format!("worker {} is shutting down", self.shared.bot_id),
                details: Vec::new(),
            };
            s.done = Some(completed(&s.lease.id, status, &ActionResult::default()));
        }
    }
}

fn completed(id: &str, status: RpcStatus, result: &ActionResult) -> Lease {
    Lease {
        id: id.to_string(),
        state: LeaseState::Completed as i32,
        status: Some(status),
        result: Some(Any { type_url: rwapi::ACTION_RESULT_TYPE.into(), value: result.encode_to_vec() }),
        ..Default::default()
    }
}

fn decode_action(payload: Option<&Any>) -> Result<Action, lease::Failure> {
    let Some(p) = payload else { return Err(lease::Failure::invalid("the lease carries no payload".into())) };
    if p.type_url != rwapi::ACTION_TYPE {
        return Err(lease::Failure::invalid(format!(
            "the lease's payload is a `{}`, not an inline REAPI Action, which is all this worker takes",
            p.type_url
        )));
    }
    Action::decode(&p.value[..])
        .map_err(|e| lease::Failure::invalid(format!("the lease's Action does not decode: {e}")))
}
