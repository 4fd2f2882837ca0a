//! The `run` step: a shell command in a clean environment, in its own process group.
//!
//! The environment holds only `env`, `pass_env` and a fixed pass-through set that shells and
//! toolchains need but that is not part of the key: PATH, HOME, USER, TERM, LANG, TMPDIR. Each
//! step runs as the leader of a new process group, recorded in `.gvbuild/jobs` while it runs
//! ([`crate::jobs`] kills what is left, however gvbuild ends).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;
use rustix::process::{pidfd_open, Pid, PidfdFlags};
use serde::{Deserialize, Serialize};

use crate::{fsutil, sys};

use crate::jobs::Jobs;
use crate::jobs::JOB_VAR;

/// Passed through from the caller, never keyed.
pub const PASS_THROUGH: &[&str] = &["PATH", "HOME", "USER", "TERM", "LANG", "TMPDIR"];
/// One shell command to run (a `run:` step's, or `ops build` for an image): `/bin/sh -c
/// command` in `root`, with exactly `env` (and the [`PASS_THROUGH`] variables).
pub struct Invocation<'a> {
    pub command: &'a str,
    pub root: &'a Path,
    pub env: &'a BTreeMap<String, String>,
    /// Where the step's output goes. Written only when the step prints something: most steps
    /// print nothing, and a file per step is a real cost on a large build.
    pub log: &'a Path,
    /// Print output live, each line prefixed with this.
    pub live: Option<&'a str>,
}

/// Output kept in memory up to this size, then streamed to the log file.
const LOG_MEMORY: usize = 1 << 20;

/// A step's combined stdout and stderr, in memory until it grows large.
struct LogSink<'a> {
    path: &'a Path,
    buf: Vec<u8>,
    file: Option<File>,
}

impl LogSink<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.file.is_none() && self.buf.len() + bytes.len() > LOG_MEMORY {
            let mut f = fsutil::with_parent(self.path, |p| File::create(p))?;
            f.write_all(&self.buf)?;
            self.buf = Vec::new();
            self.file = Some(f);
        }
        match &mut self.file {
            Some(f) => f.write_all(bytes),
            None => {
                self.buf.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    /// Leave the log file holding exactly this run's output (none when it printed nothing).
    fn finish(self) -> io::Result<()> {
        if self.file.is_some() {
            return Ok(());
        }
        if self.buf.is_empty() {
            return match fs::remove_file(self.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        fsutil::with_parent(self.path, |p| fs::write(p, &self.buf))
    }
}

/// Takes a step's output as it arrives: into the log, and with a live prefix also to our
/// stderr, a whole line at a time.
struct Pump<'a> {
    sink: LogSink<'a>,
    live: Option<&'a str>,
    /// With `live`: the part of the last line not yet ended by a newline.
    partial: Vec<u8>,
}

impl Pump<'_> {
    fn feed(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.sink.write(bytes)?;
        if let Some(prefix) = self.live {
            self.partial.extend_from_slice(bytes);
            if let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') {
                let mut err = io::stderr().lock();
                for line in self.partial[..end].split(|&b| b == b'\n') {
                    let _ = err.write_all(prefix.as_bytes());
                    let _ = err.write_all(line);
                    let _ = err.write_all(b"\n");
                }
                self.partial.drain(..=end);
            }
        }
        Ok(())
    }

    fn finish(self) -> io::Result<()> {
        if let (Some(prefix), false) = (self.live, self.partial.is_empty()) {
            let mut err = io::stderr().lock();
            let _ = err.write_all(prefix.as_bytes());
            let _ = err.write_all(&self.partial);
            let _ = err.write_all(b"\n");
        }
        self.sink.finish()
    }
}

/// Run a step's command; its stdout and stderr go to the log (and live to our stderr).
pub fn run(spec: &Invocation, jobs: &Jobs) -> io::Result<ExitStatus> {
    match run_in(spec, jobs, None) {
        Ok((status, _)) => Ok(status),
        Err(Failure::Io(e)) => Err(e),
        Err(Failure::Setup(e)) => Err(io::Error::other(e)),
    }
}

/// Why a command could not be run.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The sandbox could not be set up; the command did not start.
    #[error("the sandbox: {0}")]
    Setup(crate::sandbox::SetupError),
}

/// [`run`], in the sandbox `plan` when one is given: then also what the step wrote in its view
/// (its outputs are copied into the project by then).
pub fn run_in(
    spec: &Invocation,
    jobs: &Jobs,
    plan: Option<crate::sandbox::Plan>,
) -> Result<(ExitStatus, Option<crate::sandbox::Harvest>), Failure> {
    let mut pending = None;
    let status = run_keeping(spec, jobs, plan, &mut pending)?;
    let harvest = match pending {
        Some(p) => Some(p.finish(spec.root, status.success())?),
        None => None,
    };
    Ok((status, harvest))
}

/// [`run_in`] for a failed step's traced run: the view is left in `pending` for the caller to
/// read, nothing copied out of it.
pub fn run_traced(
    spec: &Invocation,
    jobs: &Jobs,
    plan: crate::sandbox::Plan,
    pending: &mut Option<crate::sandbox::Pending>,
) -> Result<ExitStatus, Failure> {
    run_keeping(spec, jobs, Some(plan), pending)
}

fn run_keeping(
    spec: &Invocation,
    jobs: &Jobs,
    plan: Option<crate::sandbox::Plan>,
    pending: &mut Option<crate::sandbox::Pending>,
) -> Result<ExitStatus, Failure> {
    let (reader, writer) = io::pipe()?;
    let mut child = match plan {
        None => {
            let mut cmd = Command::new("/bin/sh");
            cmd.arg("-ec").arg(spec.command).current_dir(spec.root).stdin(Stdio::null()).env_clear();
            cmd.envs(environment(spec, jobs));
            cmd.process_group(0);
            cmd.stdout(writer.try_clone()?).stderr(writer);
            jobs.arm();
            let child = cmd.spawn()?;
            // Recorded at once, so that a gvbuild killed from here on leaves no step behind.
            jobs.add(child.id());
            Child::Std(child)
        }
        Some(plan) => {
            let argv = ["/bin/sh".as_ref(), "-ec".as_ref(), spec.command.as_ref()];
            jobs.arm();
            let (p, mut child) = plan.spawn(&argv, environment(spec, jobs), spec.root, writer.into())?;
            jobs.add(child.id());
            let p = pending.insert(p);
            if let Some(e) = p.setup_error() {
                let _ = child.wait();
                jobs.remove(child.id());
                return Err(Failure::Setup(e));
            }
            if let Err(e) = p.spawned() {
                let _ = sys::killpg(child.id(), sys::SIGKILL);
                let _ = child.wait();
                jobs.remove(child.id());
                return Err(e.into());
            }
            Child::Sandboxed(child)
        }
    };
    let pgid = child.id();

    let mut pump = Pump {
        sink: LogSink { path: spec.log, buf: Vec::new(), file: None },
        live: spec.live,
        partial: Vec::new(),
    };
    // A pidfd lets this thread wait for the output and the exit together (Linux 5.3 and later);
    // without one, a second thread reads the output.
    let pid = Pid::from_raw(pgid as i32).ok_or_else(|| io::Error::other("pid 0"))?;
    let status = match pidfd_open(pid, PidfdFlags::empty()) {
        Ok(pidfd) => pump_polling(&mut child, &pidfd, reader, &mut pump),
        Err(_) => pump_threaded(&mut child, reader, &mut pump),
    };
    jobs.remove(pgid);
    let status = status?;
    pump.finish()?;
    Ok(status)
}

/// A step's environment: exactly [`PASS_THROUGH`] (where set), its `env`, and the build's job
/// token.
fn environment(spec: &Invocation, jobs: &Jobs) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    let mut env: BTreeMap<std::ffi::OsString, std::ffi::OsString> = BTreeMap::new();
    for var in PASS_THROUGH {
        if let Some(v) = std::env::var_os(var) {
            env.insert(var.into(), v);
        }
    }
    for (k, v) in spec.env {
        env.insert(k.into(), v.into());
    }
    env.insert(JOB_VAR.into(), jobs.token.clone().into());
    env.into_iter().collect()
}

/// A step's shell: started by std, or in the sandbox.
enum Child {
    Std(std::process::Child),
    Sandboxed(crate::sandbox::Child),
}

impl Child {
    fn id(&self) -> u32 {
        match self {
            Child::Std(c) => c.id(),
            Child::Sandboxed(c) => c.id(),
        }
    }

    fn wait(&mut self) -> io::Result<ExitStatus> {
        match self {
            Child::Std(c) => c.wait(),
            Child::Sandboxed(c) => c.wait(),
        }
    }
}

/// Wait for the shell to exit, then stop whatever it left running in its group: that would
/// write behind our back, and would hold the output pipe open.
fn reap(child: &mut Child) -> io::Result<ExitStatus> {
    let status = child.wait();
    let _ = sys::killpg(child.id(), sys::SIGKILL);
    status
}

/// Copy the output into `pump` until the pipe's end (every writer gone).
fn drain(reader: &mut io::PipeReader, pump: &mut Pump) -> io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match reader.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => pump.feed(&chunk[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Read the output on this thread, polling the pipe and the shell's pidfd together: the exit is
/// seen even while something the step left running holds the pipe open.
fn pump_polling(
    child: &mut Child,
    pidfd: &OwnedFd,
    mut reader: io::PipeReader,
    pump: &mut Pump,
) -> io::Result<ExitStatus> {
    let mut chunk = [0u8; 16 * 1024];
    let mut open = true;
    let pumped = loop {
        let mut fds = [PollFd::new(pidfd, PollFlags::IN), PollFd::new(&reader, PollFlags::IN)];
        let watched = if open { 2 } else { 1 };
        match poll(&mut fds[..watched], None) {
            Ok(_) => {}
            Err(Errno::INTR) => continue,
            Err(e) => break Err(io::Error::from(e)),
        }
        // The exit comes first: what the step left running may write faster than we read,
        // and must be stopped now, as it is when the shell is waited for (`reap`).
        if !fds[0].revents().is_empty() {
            break Ok(());
        }
        if open && !fds[1].revents().is_empty() {
            // Readable or hung up: either way this read does not block.
            match reader.read(&mut chunk) {
                Ok(0) => open = false,
                Ok(n) => {
                    if let Err(e) = pump.feed(&chunk[..n]) {
                        break Err(e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        }
    };
    if pumped.is_err() {
        // Nobody reads the pipe any more: a step still writing gets EPIPE rather than blocking.
        drop(reader);
        let status = reap(child);
        return pumped.and(status);
    }
    let status = reap(child);
    if open {
        drain(&mut reader, pump)?;
    }
    status
}

/// Read the output on a second thread, so that the wait cannot be blocked by a pipe held open
/// by something the step left running (used where there is no pidfd).
fn pump_threaded(child: &mut Child, mut reader: io::PipeReader, pump: &mut Pump) -> io::Result<ExitStatus> {
    std::thread::scope(|scope| {
        let reading = scope.spawn(move || drain(&mut reader, pump));
        let status = reap(child);
        let pumped = reading.join().unwrap_or_else(|_| Err(io::Error::other("log reader panicked")));
        status.and_then(|s| pumped.map(|()| s))
    })
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunSpec {
    pub command: String,
    /// Project-relative path of the Makefile-style depfile, if any.
    pub depfile: Option<String>,
    pub env: BTreeMap<String, String>,
    pub pass_env: Vec<String>,
    pub tools: Vec<String>,
    /// `sandbox:` (default `true`): run in the sandbox ([`crate::sandbox`]). Not keyed: a step
    /// that builds sandboxed gives the same result unsandboxed.
    pub sandbox: bool,
    /// `network:` (default `true`): `false` runs a sandboxed step with no network. Not keyed.
    pub network: bool,
    /// `scratch:` project folders (normalized, relative) the sandboxed step may write and keep
    /// between runs. Never keyed, cached or removed.
    pub scratch: Vec<String>,
}

impl RunSpec {
    /// The step's own environment: `env`, then the `pass_env` values that are set.
    pub fn env_with(&self, pass: &BTreeMap<String, Option<String>>) -> BTreeMap<String, String> {
        let mut env = self.env.clone();
        for (k, v) in pass {
            if let Some(v) = v {
                env.insert(k.clone(), v.clone());
            }
        }
        env
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// The reader used where there is no pidfd: the whole output is logged, and the wait ends
    /// with the shell although the `sleep` it left holds the pipe (the group is killed).
    #[test]
    fn the_threaded_reader_logs_everything_and_ends_with_the_shell() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("logs/t.log");
        let (reader, writer) = io::pipe().unwrap();
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg("echo one; sleep 300 & echo two")
            .stdout(writer.try_clone().unwrap())
            .stderr(writer)
            .process_group(0)
            .spawn()
            .unwrap();
        let mut pump = Pump {
            sink: LogSink { path: &log, buf: Vec::new(), file: None },
            live: None,
            partial: Vec::new(),
        };
        let status = pump_threaded(&mut Child::Std(child), reader, &mut pump).unwrap();
        assert!(status.success());
        pump.finish().unwrap();
        assert_eq!(fs::read_to_string(&log).unwrap(), "one\ntwo\n");
    }
}
