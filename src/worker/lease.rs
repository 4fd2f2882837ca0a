//! One lease: the REAPI `Action` it carries, run in a folder of its own, to the `ActionResult`
//! and `google.rpc.Status` the engine gets back.
//!
//! In order: read the `Command` from the CAS -> check the tools the action asks for -> write
//! the input root ([`super::inputs`]) -> make the output paths' parent folders -> run the
//! command -> collect the outputs ([`super::outputs`]) and upload them with stdout and stderr.
//!
//! The command runs as `Command.arguments` (no shell added) in `working_directory`, with
//! exactly `Command.environment_variables`, and only three variables of the worker's own
//! when the Command does not set them: `PATH`, `HOME` and `TMPDIR` (a client may leave these
//! to the worker, and gvbuild's does), plus `GVBUILD_JOB`, the token by which a killed
//! worker's reaper finds the processes it leaves behind. It leads a process group of its
//! own, which is killed whole when `Action.timeout` passes (the engine does not enforce it),
//! when the engine cancels the lease, and when the command ends (so nothing it started
//! outlives it).
//!
//! Statuses, as engines read them: missing inputs are `FAILED_PRECONDITION` with a
//! `PreconditionFailure` of `MISSING` violations (`blobs/HASH/SIZE`), REAPI's convention, which
//! makes a client upload them and retry; an action this worker must not run (a tool that is
//! not the one asked for, a name that would climb out of the folder, a program not found) is
//! `INVALID_ARGUMENT`; a fault of the CAS or of this machine is `UNAVAILABLE` or `INTERNAL`,
//! which an engine retries on another worker; a timeout is `DEADLINE_EXCEEDED`, with what
//! the command had printed.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, SystemTime};

use prost::Message;
use tonic::Code;

pub use super::failure::Failure;
use super::inputs::{self, check_relative, create_dirs};
use super::outputs::{self, Blobs};
use crate::cache::remote::grpc::GrpcStore;
use crate::cache::remote::reapi::{
    Action, ActionResult, Command, ExecutedActionMetadata, Platform, RpcStatus, Timestamp,
};
use crate::fingerprint::tools::tool_property;
use crate::jobs::Jobs;
use crate::sys;

/// Variables the worker supplies from its own environment when the Command does not set them.
pub const SUPPLIED: [&str; 3] = ["PATH", "HOME", "TMPDIR"];

/// What every lease of this worker shares.
pub struct Shared {
    pub store: GrpcStore,
    pub jobs: Jobs,
    /// The tools this worker offers: property (`tool:nvcc`) -> (name as given, identity). An
    /// identity found changed is updated here, and advertised from then on.
    pub tools: Mutex<BTreeMap<String, (String, String)>>,
    /// Set when an identity in `tools` changed: engines read a session's properties once, at
    /// its start (BuildGrid does), so the session loop starts a new one when it holds no lease.
    pub tools_changed: AtomicBool,
    pub bot_id: String,
}

/// How the session loop reaches a running lease.
#[derive(Default)]
pub struct Control {
    pgid: Mutex<Option<u32>>,
    cancelled: AtomicBool,
}

impl Control {
    /// Stop the lease: kill its command's group if it runs, and keep it from starting.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        if let Ok(pgid) = self.pgid.lock() {
            if let Some(pgid) = *pgid {
                let _ = sys::killpg(pgid, sys::SIGKILL);
            }
        }
    }

    pub fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
}

fn now() -> Option<Timestamp> {
    let t = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Some(Timestamp { seconds: t.as_secs() as i64, nanos: t.subsec_nanos() as i32 })
}

/// Run the lease's action in `folder` (made here, removed afterwards).
pub fn execute(
    shared: &Shared,
    action: &Action,
    folder: &Path,
    control: &Control,
) -> (RpcStatus, ActionResult) {
    let mut meta = ExecutedActionMetadata {
        worker: shared.bot_id.clone(),
        worker_start_timestamp: now(),
        ..Default::default()
    };
    let mut result = ActionResult::default();
    let status = match fs::create_dir_all(folder) {
        Ok(()) => match run(shared, action, folder, control, &mut meta, &mut result) {
            Ok(status) => status,
            Err(f) => f.status(),
        },
        Err(e) => Failure::local(format!("cannot create {}", folder.display()), e).status(),
    };
    let _ = fs::remove_dir_all(folder);
    meta.worker_completed_timestamp = now();
    result.execution_metadata = Some(meta);
    (status, result)
}

// Older clients still send `Command.platform` and the pre-v2.1 output lists; REAPI asks
// servers to honour them.
#[allow(deprecated)]
fn run(
    shared: &Shared,
    action: &Action,
    folder: &Path,
    control: &Control,
    meta: &mut ExecutedActionMetadata,
    result: &mut ActionResult,
) -> Result<RpcStatus, Failure> {
    meta.input_fetch_start_timestamp = now();
    let command_digest = action
        .command_digest
        .clone()
        .ok_or_else(|| Failure::invalid("the Action names no Command".into()))?;
    let bytes = inputs::read_small(&shared.store, &command_digest)?
        .ok_or_else(|| Failure::missing(std::slice::from_ref(&command_digest)))?;
    let cmd = Command::decode(&bytes[..])
        .map_err(|e| Failure::invalid(format!("the Command does not decode: {e}")))?;
    check_tools(shared, action.platform.as_ref().or(cmd.platform.as_ref()))?;
    if cmd.arguments.is_empty() {
        return Err(Failure::invalid("the Command has no arguments".into()));
    }
    let wd_rel = match cmd.working_directory.as_str() {
        "" | "." => PathBuf::new(),
        wd => check_relative("working_directory", wd)?,
    };
    let outputs: Vec<PathBuf> = cmd
        .output_paths
        .iter()
        .chain(&cmd.output_files)
        .chain(&cmd.output_directories)
        .map(|p| check_relative("output path", p))
        .collect::<Result<_, _>>()?;

    let root = folder.join("root");
    fs::create_dir(&root).map_err(|e| Failure::local(format!("cannot create {}", root.display()), e))?;
    let input_root = action.input_root_digest.clone().unwrap_or_else(|| outputs::digest_bytes(&[]));
    inputs::materialize(&shared.store, &input_root, &root)?;
    meta.input_fetch_completed_timestamp = now();
    create_dirs(&root, &wd_rel)?;
    let wd = root.join(&wd_rel);
    for o in &outputs {
        if let Some(parent) = o.parent() {
            create_dirs(&wd, parent)?;
        }
    }

    let stdout = folder.join("stdout");
    let stderr = folder.join("stderr");
    let timeout = action
        .timeout
        .as_ref()
        .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
        .filter(|d| !d.is_zero());
    meta.execution_start_timestamp = now();
    let ran = spawn_and_wait(shared, &cmd, &wd, &stdout, &stderr, timeout, control)?;
    meta.execution_completed_timestamp = now();

    meta.output_upload_start_timestamp = now();
    let mut blobs = Blobs::default();
    result.exit_code = ran.exit_code;
    result.stdout_digest = Some(blobs.file(&stdout)?);
    result.stderr_digest = Some(blobs.file(&stderr)?);
    let status = if ran.timed_out {
        // What it printed helps; what it half wrote does not.
        RpcStatus {
            code: Code::DeadlineExceeded as i32,
            message: format!(
                "the action ran past its timeout of {} s and was killed",
                timeout.unwrap_or_default().as_secs_f64()
            ),
            details: Vec::new(),
        }
    } else {
        outputs::collect(&cmd, &wd, result, &mut blobs)?;
        RpcStatus::default()
    };
    blobs.upload(&shared.store)?;
    meta.output_upload_completed_timestamp = now();
    Ok(status)
}

/// Each `tool:NAME` property the action asks for must name a tool this worker was started
/// with, whose identity, found again now on this worker's PATH, is the one asked for.
fn check_tools(shared: &Shared, platform: Option<&Platform>) -> Result<(), Failure> {
    let Some(platform) = platform else { return Ok(()) };
    for p in platform.properties.iter().filter(|p| p.name.starts_with("tool:")) {
        let known = shared.tools.lock().ok().and_then(|t| t.get(&p.name).cloned());
        let Some((name, started)) = known else {
            return Err(Failure::invalid(format!(
                "the action needs `{}={}`, and this worker offers no such tool (it was not started with \
                 `--tool {}`)",
                p.name,
                p.value,
                &p.name["tool:".len()..]
            )));
        };
        let now = match super::identify(&name) {
            Ok(id) => id,
            Err(e) => {
                return Err(Failure::invalid(format!(
                "the action needs `{}={}`, and this worker's tool `{name}` is gone: {e} (it was {started} \
                     when the worker started)",
                p.name, p.value
            )))
            }
        };
        if now != started {
            if let Ok(mut t) = shared.tools.lock() {
                t.insert(tool_property(&name), (name.clone(), now.clone()));
            }
            shared.tools_changed.store(true, Ordering::SeqCst);
        }
        if now != p.value {
            return Err(Failure::invalid(format!(
                "tool `{name}` differs: the action needs {}={}, and this worker's `{name}` is now {now} (it was \
                 {started} when the worker started)",
                p.name, p.value
            )));
        }
    }
    Ok(())
}

struct Ran {
    exit_code: i32,
    timed_out: bool,
}

fn spawn_and_wait(
    shared: &Shared,
    cmd: &Command,
    wd: &Path,
    stdout: &Path,
    stderr: &Path,
    timeout: Option<Duration>,
    control: &Control,
) -> Result<Ran, Failure> {
    let out =
        File::create(stdout).map_err(|e| Failure::local(format!("cannot create {}", stdout.display()), e))?;
    let err =
        File::create(stderr).map_err(|e| Failure::local(format!("cannot create {}", stderr.display()), e))?;
    let mut c = std::process::Command::new(&cmd.arguments[0]);
    c.args(&cmd.arguments[1..]).current_dir(wd).env_clear().stdin(Stdio::null()).stdout(out).stderr(err);
    let mut set: Vec<&str> = Vec::new();
    for v in &cmd.environment_variables {
        c.env(&v.name, &v.value);
        set.push(&v.name);
    }
    for name in SUPPLIED {
        if !set.contains(&name) {
            if let Some(v) = std::env::var_os(name) {
                c.env(name, v);
            }
        }
    }
    shared.jobs.mark(&mut c);
    c.process_group(0);

    // Holding the lock from spawn to record keeps a cancel from missing the group.
    let mut pgid_slot = control.pgid.lock().map_err(|_| Failure::invalid("poisoned".into()))?;
    if control.cancelled() {
        return Err(Failure { code: Code::Cancelled, message: "cancelled".into(), details: Vec::new() });
    }
    let mut child = match c.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Failure::invalid(format!(
                "cannot run `{}`: not found (in {} or on the PATH the action runs with)",
                cmd.arguments[0].escape_debug(),
                wd.display()
            )))
        }
        Err(e) => {
            return Err(Failure::invalid(format!("cannot run `{}`: {e}", cmd.arguments[0].escape_debug())))
        }
    };
    let pgid = child.id();
    *pgid_slot = Some(pgid);
    drop(pgid_slot);
    shared.jobs.add(pgid);

    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let mut timed_out = false;
    let status = match timeout {
        Some(t) => match rx.recv_timeout(t) {
            Ok(s) => Some(s),
            Err(_) => {
                timed_out = true;
                let _ = sys::killpg(pgid, sys::SIGKILL);
                rx.recv().ok()
            }
        },
        None => rx.recv().ok(),
    };
    // Whatever the command left running in its group would outlive it: stop it.
    let _ = sys::killpg(pgid, sys::SIGKILL);
    if let Ok(mut slot) = control.pgid.lock() {
        *slot = None;
    }
    shared.jobs.remove(pgid);
    let status = match status {
        Some(Ok(s)) => s,
        Some(Err(e)) => return Err(Failure::local("waiting for the command".into(), e)),
        None => return Err(Failure::invalid("the command's waiter vanished".into())),
    };
    if control.cancelled() {
        return Err(Failure { code: Code::Cancelled, message: "cancelled".into(), details: Vec::new() });
    }
    let exit_code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok(Ran { exit_code, timed_out })
}
