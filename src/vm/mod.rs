//! Running an image as a Gevulot node runs it: the QEMU invocation ([`qemu`]), the workspace and
//! its task files ([`task`]), the console, and the diagnosis of how the VM ended.
//!
//! `gvbuild run` and the `task` step kind both call [`run_task`]; this module knows nothing of
//! the graph or the cache. One task's journey:
//!
//! 1. **Workspace.** `task.json` is written into the workspace folder and each input file copied
//!    in under its name (a stale `task_result.json` is removed: the shim creates it with
//!    create-new and would fail).
//! 2. **Boot.** QEMU starts with the node's arguments ([`qemu::node_args`]) in a process group
//!    of its own, recorded in the build's jobs log, so Ctrl-C, SIGTERM and even a SIGKILL of
//!    gvbuild leave no QEMU behind (the reaper of [`crate::steps::run`]). The runner attaches
//!    to QEMU's QMP socket, which starts the guest, and watches for a reset ([`qmp`]).
//! 3. **Console.** QEMU's stdout is the serial console: every line goes to the console log,
//!    to the caller's live view when asked, and the last lines are kept for the diagnosis.
//! 4. **End.** The VM powers off (QEMU exits), resets (Nanos with `reboot_on_exit` after a
//!    non-zero exit: the node, which passes no `-no-reboot`, would boot it again; the runner
//!    stops at the first reset), or runs past the timeout (the node's task limit is 1,800 s)
//!    and is killed.
//! 5. **Result.** `task_result.json` is read: `Ok` gives the data and the files, each copied out
//!    of the workspace (only `/workspace/...` paths), `Err` is the program's own error, and no
//!    file at all is diagnosed: the console's last lines, and the image's mounts when its
//!    workspace is not at attach id 0.

pub mod qemu;
pub mod qmp;
pub mod task;

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use miette::Diagnostic;
use thiserror::Error;

pub use qemu::{Accel, MachineSpec};
pub use task::{Task, TaskOk, TaskResult};

use crate::jobs::Jobs;
use crate::sys;

/// The version of this runner, in every `task` step's key: bump it whenever the same image and
/// task could give another result through a change here (the QEMU arguments, the task files).
pub const RUNNER_VERSION: u32 = 1;
/// The node's limit for one task, from when it is handed out (`scheduler/mod.rs`).
pub const NODE_TASK_LIMIT: Duration = Duration::from_secs(1800);
/// How many of the console's last lines a diagnosis shows.
const TAIL_LINES: usize = 20;
/// The name of the console log beside a task's result files.
pub const CONSOLE_LOG: &str = "console.log";

/// One task to run.
pub struct TaskRun<'a> {
    pub qemu: PathBuf,
    pub machine: MachineSpec,
    pub task: Task,
    /// Input files: (name in the workspace, host file).
    pub inputs: Vec<(String, PathBuf)>,
    pub timeout: Duration,
    /// The console log written (QEMU's stdout and stderr).
    pub console: PathBuf,
    /// Each console line, as it comes, for a live view.
    pub live: Option<&'a (dyn Fn(&str) + Sync)>,
}

/// How a boot ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// QEMU exited (the guest powered off, or left through `isa-debug-exit`).
    Exited(Option<i32>),
    /// The guest reset (QMP's reason); the runner stopped it there.
    Reset(String),
    /// The time limit passed; the runner killed QEMU.
    TimedOut,
    /// The caller's stop flag was set (Ctrl-C, SIGTERM); the runner killed QEMU.
    Interrupted,
}

/// What a successful task gave.
#[derive(Debug, Clone)]
pub struct Finished {
    pub result: TaskOk,
    /// The reported files, workspace-relative.
    pub files: Vec<PathBuf>,
    /// From QEMU's start to its end.
    pub boot_time: Duration,
}

/// Why a task gave no result. Each message says what happened and shows the console's last
/// lines where they tell more.
#[derive(Debug, Error, Diagnostic)]
pub enum VmError {
    #[error("QEMU ({0}) was not found: install it (Debian and Ubuntu: `apt-get install qemu-system-x86`)")]
    #[diagnostic(
        code(gvbuild::vm::qemu_missing),
        help("`gvbuild run` also takes another QEMU with --qemu PATH or GVBUILD_QEMU")
    )]
    QemuMissing(String),
    #[error("{0}")]
    #[diagnostic(code(gvbuild::vm::workspace))]
    Workspace(String),
    #[error("could not start QEMU: {0}")]
    #[diagnostic(code(gvbuild::vm::start))]
    Start(String),
    #[error("QEMU failed (exit status {status}): {stderr}")]
    #[diagnostic(code(gvbuild::vm::qemu_failed))]
    QemuFailed { status: String, stderr: String },
    #[error("the program exited without a result: the VM stopped ({how}) and /workspace/{file} was not written{mounts}{console}", file = task::RESULT_FILE)]
    #[diagnostic(
        code(gvbuild::vm::no_result),
        help("a Gevulot program reads /workspace/task.json and writes /workspace/task_result.json before it exits (the shim's `run` does both)")
    )]
    NoResult { how: String, mounts: String, console: String },
    #[error("the VM reset{reason}: Nanos resets when the program exits with a non-zero status under `reboot_on_exit`. The node passes QEMU no -no-reboot, so it would boot the image again and the program would ask for another task; gvbuild stopped at the first reset{console}")]
    #[diagnostic(code(gvbuild::vm::reset), help("see why the program failed in the console above"))]
    Reset { reason: String, console: String },
    #[error("the task ran past its {secs} s limit and QEMU was killed (the node kills a task after 1,800 s){console}")]
    #[diagnostic(
        code(gvbuild::vm::timeout),
        help("raise the limit with --timeout (or `timeout:`) if the task needs longer")
    )]
    TimedOut { secs: u64, console: String },
    #[error("interrupted")]
    #[diagnostic(code(gvbuild::vm::interrupted))]
    Interrupted,
    #[error("the program reported an error: {0}")]
    #[diagnostic(code(gvbuild::vm::task_err))]
    TaskErr(String),
    #[error("{0}")]
    #[diagnostic(code(gvbuild::vm::bad_result))]
    BadResult(String),
}

/// Run one task and collect its result into `into` (the result file, each reported file at its
/// workspace-relative path, the console log stays where `run.console` says). `jobs` records
/// QEMU's process group; `stop` ends the run early (Ctrl-C).
pub fn run_task(run: &TaskRun, into: &Path, jobs: &Jobs, stop: &AtomicBool) -> Result<Finished, VmError> {
    let ws = &run.machine.workspace;
    prepare_workspace(ws, &run.task, &run.inputs)?;
    let started = Instant::now();
    let boot = boot(run, jobs, stop)?;
    let boot_time = started.elapsed();
    let console = || console_tail(&boot.tail);
    match boot.ended {
        Ended::Interrupted => return Err(VmError::Interrupted),
        Ended::TimedOut => return Err(VmError::TimedOut { secs: run.timeout.as_secs(), console: console() }),
        Ended::Reset(reason) => {
            let mut reason = if reason.is_empty() { String::new() } else { format!(" ({reason})") };
            if ws.join(task::RESULT_FILE).exists() {
                reason.push_str(" after the program wrote its result");
            }
            return Err(VmError::Reset { reason, console: console() });
        }
        Ended::Exited(_) => {}
    }
    let result_path = ws.join(task::RESULT_FILE);
    // Written by the guest: a symlink there is not read through.
    if fs::symlink_metadata(&result_path).is_ok_and(|m| !m.is_file()) {
        return Err(VmError::BadResult(format!("/workspace/{} is not a plain file", task::RESULT_FILE)));
    }
    let bytes = match fs::read(&result_path) {
        Ok(b) => b,
        Err(_) if qemu_failed(&boot) => {
            return Err(VmError::QemuFailed {
                status: status_text(&boot.ended),
                stderr: boot.stderr.trim().to_string(),
            })
        }
        Err(_) => {
            let mounts = match image_mount_problem(&run.machine.image) {
                Some(w) => format!("\n{w}"),
                None => String::new(),
            };
            return Err(VmError::NoResult { how: exit_text(&boot.ended), mounts, console: console() });
        }
    };
    let result = task::parse_result(&bytes).map_err(|e| VmError::BadResult(e.to_string()))?;
    fs::create_dir_all(into)
        .map_err(|e| VmError::Workspace(format!("cannot create {}: {e}", into.display())))?;
    fs::write(into.join(task::RESULT_FILE), &bytes).map_err(|e| {
        VmError::Workspace(format!("cannot write {}: {e}", into.join(task::RESULT_FILE).display()))
    })?;
    let ok = match result {
        TaskResult::Err(message) => return Err(VmError::TaskErr(message)),
        TaskResult::Ok(ok) => ok,
    };
    if ok.id != run.task.id {
        return Err(VmError::BadResult(
            task::ResultError::WrongTask { got: ok.id.clone(), want: run.task.id.clone() }.to_string(),
        ));
    }
    let files = copy_out(ws, into, &ok.files)?;
    Ok(Finished { result: ok, files, boot_time })
}

/// Copy each reported file (a path in the VM) from the workspace `ws` into `into`, at its path
/// below `/workspace`. Refused: a path outside `/workspace`, the runner's own file names, a
/// missing file, anything but a plain file, and a path through a symlink.
fn copy_out(ws: &Path, into: &Path, reported: &[String]) -> Result<Vec<PathBuf>, VmError> {
    let mut files = Vec::new();
    for vm_path in reported {
        let rel = task::in_workspace(vm_path).map_err(|e| VmError::BadResult(e.to_string()))?;
        if rel == Path::new(task::RESULT_FILE) || rel == Path::new(CONSOLE_LOG) {
            return Err(VmError::BadResult(format!(
                "the result reports `{vm_path}`, named like the runner's own record: name the file otherwise"
            )));
        }
        // The guest writes the workspace: a folder it made a symlink (`out -> /etc`) must not
        // lead the copy out of it. Every component is looked at without following links.
        let mut walked = ws.to_path_buf();
        for c in rel.parent().into_iter().flat_map(Path::components) {
            walked.push(c);
            if fs::symlink_metadata(&walked).is_ok_and(|m| !m.is_dir()) {
                return Err(VmError::BadResult(format!(
                    "the result reports `{vm_path}`, whose folder {} is not a folder of the workspace (a symlink?)",
                    walked.strip_prefix(ws).unwrap_or(&walked).display()
                )));
            }
        }
        let from = ws.join(&rel);
        let meta = fs::symlink_metadata(&from).map_err(|_| {
            VmError::BadResult(format!("the result reports `{vm_path}`, but the workspace has no such file"))
        })?;
        if !meta.is_file() {
            return Err(VmError::BadResult(format!(
                "the result reports `{vm_path}`, which is not a plain file"
            )));
        }
        let to = into.join(&rel);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| VmError::Workspace(format!("cannot create {}: {e}", parent.display())))?;
        }
        fs::copy(&from, &to).map_err(|e| VmError::Workspace(format!("cannot copy {vm_path} out: {e}")))?;
        files.push(rel);
    }
    Ok(files)
}

/// Write `task.json`, copy the inputs in, and remove a stale result.
fn prepare_workspace(ws: &Path, task: &Task, inputs: &[(String, PathBuf)]) -> Result<(), VmError> {
    let err = |what: &str, p: &Path, e: std::io::Error| {
        VmError::Workspace(format!("cannot {what} {}: {e}", p.display()))
    };
    fs::create_dir_all(ws).map_err(|e| err("create the workspace", ws, e))?;
    let stale = ws.join(task::RESULT_FILE);
    match fs::remove_file(&stale) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("remove the earlier result", &stale, e)),
    }
    for (name, from) in inputs {
        let plain = !name.is_empty() && !name.contains('/') && name != "." && name != "..";
        if !plain || name == task::TASK_FILE || name == task::RESULT_FILE {
            return Err(VmError::Workspace(format!(
                "the input file name `{name}` cannot be used in the workspace: it must be a plain name other than {} and {}",
                task::TASK_FILE,
                task::RESULT_FILE
            )));
        }
        let to = ws.join(name);
        replace_entry(&to).map_err(|e| err("replace", &to, e))?;
        fs::copy(from, &to).map_err(|e| err("copy the input file into the workspace:", from, e))?;
    }
    let json = serde_json::to_vec(task).map_err(|e| VmError::Workspace(e.to_string()))?;
    let path = ws.join(task::TASK_FILE);
    replace_entry(&path).map_err(|e| err("replace", &path, e))?;
    fs::write(&path, json).map_err(|e| err("write", &path, e))
}

/// Remove a file or symlink that an earlier run (or its guest) left where the runner writes, so
/// that writing there never follows a link out of the workspace. A folder is left, and the
/// write then fails with its own error.
fn replace_entry(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if !m.is_dir() => fs::remove_file(path),
        _ => Ok(()),
    }
}

/// What one boot left.
struct Boot {
    ended: Ended,
    tail: VecDeque<String>,
    stderr: String,
}

/// QEMU failed on its own (bad arguments, a missing file) rather than the guest ending: it
/// exited with an error status and said why on stderr.
fn qemu_failed(b: &Boot) -> bool {
    // An odd status is also a guest's `isa-debug-exit` (1 for code 0): only QEMU's own error
    // line (`qemu-system-x86_64: ...`, not a warning) makes status 1 QEMU's failure.
    let qemu_error = b
        .stderr
        .lines()
        .any(|l| l.starts_with("qemu-system") && !l.contains(": warning:") && !l.contains(": info:"));
    match b.ended {
        Ended::Exited(Some(c)) => c != 0 && c % 2 == 0 || c == 1 && qemu_error,
        Ended::Exited(None) => true,
        _ => false,
    }
}

fn status_text(e: &Ended) -> String {
    match e {
        Ended::Exited(Some(c)) => c.to_string(),
        _ => "a signal".into(),
    }
}

/// How QEMU ended, for a person: a power-off, or the code a guest wrote to `isa-debug-exit`
/// (QEMU exits with `(code << 1) | 1`; Nanos writes the program's exit code there when the
/// manifest sets `debug_exit`).
fn exit_text(e: &Ended) -> String {
    match e {
        Ended::Exited(Some(0)) => "powered off, QEMU exit status 0".into(),
        Ended::Exited(Some(c)) if c % 2 == 1 => {
            format!("QEMU exit status {c}: the guest wrote {} to isa-debug-exit", c >> 1)
        }
        Ended::Exited(Some(c)) => format!("QEMU exit status {c}"),
        _ => "QEMU was stopped".into(),
    }
}

/// The last console lines, as the message's last part.
fn console_tail(tail: &VecDeque<String>) -> String {
    if tail.is_empty() {
        return "\nthe console printed nothing".into();
    }
    let mut out = String::from("\nthe console's last lines:");
    for l in tail {
        out.push_str("\n  | ");
        out.push_str(l);
    }
    out
}

/// The image's workspace problem, if its mounts show one.
pub fn image_mount_problem(image: &Path) -> Option<String> {
    let file = File::open(image).ok()?;
    let disk = crate::disk::read_disk(&file).ok()?;
    let root = disk.volumes.iter().map(|(_, v)| &v.root).find(|r| r.contains_key("program"))?;
    crate::inspect::workspace_warning(&crate::inspect::mounts_of(root))
}

/// Boot the image and wait for its end.
fn boot(run: &TaskRun, jobs: &Jobs, stop: &AtomicBool) -> Result<Boot, VmError> {
    let private = tempfile::Builder::new()
        .prefix("gvbuild-vm-")
        .tempdir()
        .map_err(|e| VmError::Start(format!("cannot create a private folder for QMP: {e}")))?;
    let qmp_path = private.path().join("qmp.sock");
    let mut cmd = Command::new(&run.qemu);
    cmd.args(qemu::node_args(&run.machine, &qmp_path))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    jobs.mark(&mut cmd);
    if let Some(parent) = run.console.parent() {
        let _ = fs::create_dir_all(parent);
    }
    let log = File::create(&run.console).map_err(|e| {
        VmError::Start(format!("cannot create the console log {}: {e}", run.console.display()))
    })?;
    let log = Mutex::new(log);
    let mut child = cmd.spawn().map_err(|e| VmError::Start(format!("{}: {e}", run.qemu.display())))?;
    let pgid = child.id();
    jobs.add(pgid);
    let tail = Mutex::new(VecDeque::new());
    let stderr_text = Mutex::new(String::new());
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let ended = std::thread::scope(|s| {
        if let Some(out) = out {
            s.spawn(|| pump(out, &log, &tail, None, run.live));
        }
        if let Some(err) = err {
            s.spawn(|| pump(err, &log, &tail, Some(&stderr_text), run.live));
        }
        let ended = wait(&mut child, pgid, run, &qmp_path, stop);
        // QEMU's whole group is gone, so the pipes end and the pumps return.
        let _ = sys::killpg(pgid, sys::SIGKILL);
        ended
    });
    jobs.remove(pgid);
    let tail = tail.into_inner().unwrap_or_else(|e| e.into_inner());
    let stderr = stderr_text.into_inner().unwrap_or_else(|e| e.into_inner());
    Ok(Boot { ended, tail, stderr })
}

/// Wait for QEMU to end: its exit, a guest reset (QMP), the timeout or `stop`. QEMU waits for
/// the QMP client before it runs the guest, so the first thing is to attach.
fn wait(
    child: &mut std::process::Child,
    pgid: u32,
    run: &TaskRun,
    qmp_path: &Path,
    stop: &AtomicBool,
) -> Ended {
    let (tx, rx) = mpsc::channel();
    let deadline = Instant::now() + run.timeout;
    let kill = |child: &mut std::process::Child| {
        let _ = sys::killpg(pgid, sys::SIGKILL);
        let _ = child.kill();
        let _ = child.wait();
    };
    let mut attached = false;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Ended::Exited(status.code());
        }
        if stop.load(Ordering::SeqCst) {
            kill(child);
            return Ended::Interrupted;
        }
        if Instant::now() >= deadline {
            kill(child);
            return Ended::TimedOut;
        }
        if !attached {
            attached = qmp::attach(qmp_path, Duration::from_millis(20), tx.clone()).is_ok();
            continue;
        }
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(qmp::Event::Reset(reason)) => {
                kill(child);
                return Ended::Reset(reason);
            }
            Ok(qmp::Event::Shutdown(_)) | Err(_) => {}
        }
    }
}

/// Read one of QEMU's pipes line by line into the console log, the tail (and `keep`), and the
/// live view. Carriage returns (the serial console's line ends) are dropped.
fn pump(
    pipe: impl Read,
    log: &Mutex<File>,
    tail: &Mutex<VecDeque<String>>,
    keep: Option<&Mutex<String>>,
    live: Option<&(dyn Fn(&str) + Sync)>,
) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf);
        // QEMU's own note that it waits for the QMP client (the runner) is not the guest's.
        if keep.is_some() && line.contains("info: QEMU waiting for connection on") {
            continue;
        }
        if let Ok(mut f) = log.lock() {
            let _ = f.write_all(&buf);
        }
        let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
        if let Some(k) = keep {
            if let Ok(mut k) = k.lock() {
                k.push_str(&line);
                k.push('\n');
            }
        }
        if let Some(live) = live {
            live(&line);
        }
        if let Ok(mut t) = tail.lock() {
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The guest writes the workspace: a symlinked folder or file must not lead a copy out of it.
    #[test]
    fn reported_files_never_lead_out_of_the_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let (ws, into, outside) = (dir.path().join("ws"), dir.path().join("into"), dir.path().join("secret"));
        fs::create_dir_all(ws.join("out")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("key"), "secret").unwrap();
        fs::write(ws.join("out/proof"), "proof").unwrap();
        std::os::unix::fs::symlink(&outside, ws.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.join("key"), ws.join("key")).unwrap();
        let got = copy_out(&ws, &into, &["/workspace/out/proof".into()]).unwrap();
        assert_eq!(got, [PathBuf::from("out/proof")]);
        assert_eq!(fs::read_to_string(into.join("out/proof")).unwrap(), "proof");
        for bad in [
            "/workspace/link/key",
            "/workspace/key",
            "/workspace/none",
            "/etc/passwd",
            "/workspace/task_result.json",
        ] {
            assert!(copy_out(&ws, &into, &[bad.into()]).is_err(), "{bad}");
        }
        assert!(!into.join("link").exists() && !into.join("key").exists());
    }

    /// A named workspace may hold links an earlier guest made: writing the task never follows them.
    #[test]
    fn the_task_is_written_over_links_not_through_them() {
        let dir = tempfile::tempdir().unwrap();
        let (ws, victim, input) = (dir.path().join("ws"), dir.path().join("victim"), dir.path().join("a.in"));
        fs::create_dir_all(&ws).unwrap();
        fs::write(&victim, "keep me").unwrap();
        fs::write(&input, "input").unwrap();
        for name in ["a.in", task::TASK_FILE, task::RESULT_FILE] {
            std::os::unix::fs::symlink(&victim, ws.join(name)).unwrap();
        }
        let t = Task { id: "t".into(), args: vec![], files: vec!["a.in".into()] };
        prepare_workspace(&ws, &t, &[("a.in".into(), input)]).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep me");
        assert_eq!(fs::read_to_string(ws.join("a.in")).unwrap(), "input");
        assert!(fs::read_to_string(ws.join(task::TASK_FILE)).unwrap().starts_with("{\"id\":\"t\""));
        assert!(fs::symlink_metadata(ws.join(task::RESULT_FILE)).is_err());
    }
}
