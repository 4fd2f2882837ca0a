//! The process groups a gvbuild starts (steps, VMs), and what kills them however gvbuild ends.
//!
//! Each group's leader is recorded in a jobs log (`+ PGID TOKEN` when it starts, `- PGID` when it
//! ends) and carries `GVBUILD_JOB=TOKEN` in its environment; the log names the build's token
//! (`t TOKEN`) before its first step starts. An interrupted gvbuild kills the groups itself; a
//! killed one is outlived by its reaper (see [`reaper_main`]), which kills them; and the next
//! start in the same place kills anything still left. Both also kill the group of every process
//! that carries a logged token, recorded or not: a gvbuild killed between starting a step and
//! recording its group leaves no step behind either. Below the steps and
//! the VM runner, which both use it.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::sys;

/// Marks every step process with this build's token, so leftovers can be found safely.
pub(crate) const JOB_VAR: &str = "GVBUILD_JOB";

/// The process groups of running steps, mirrored to a file for the next start.
pub struct Jobs {
    file: PathBuf,
    pub(crate) token: String,
    running: Mutex<HashMap<u32, ()>>,
    /// Whether the log names the token yet ([`Jobs::arm`]).
    armed: Mutex<bool>,
    /// `jobs` is append-only: `+ PGID TOKEN` when a step starts, `- PGID` when it ends. Cheap
    /// enough to keep on disk for every step; replayed by the reaper and by the next start.
    log: Mutex<Option<File>>,
    /// Our end of the reaper's stdin; it closes when this process ends.
    reaper: Mutex<Option<io::PipeWriter>>,
}

impl Jobs {
    pub fn new(state_dir: &Path) -> Jobs {
        let token = format!(
            "{}-{}",
            std::process::id(),
            blake3::hash(format!("{:?}", std::time::SystemTime::now()).as_bytes()).to_hex()
        );
        Jobs {
            file: state_dir.join("jobs"),
            token: token[..24.min(token.len())].to_string(),
            running: Mutex::new(HashMap::new()),
            armed: Mutex::new(false),
            log: Mutex::new(None),
            reaper: Mutex::new(None),
        }
    }

    /// Start the reaper if it is not running yet. Failing to start it is not fatal: the next
    /// gvbuild in this project still kills leftovers.
    fn ensure_reaper(&self) {
        let Ok(mut reaper) = self.reaper.lock() else { return };
        if reaper.is_some() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else { return };
        let Ok((r, w)) = io::pipe() else { return };
        let spawned = Command::new(exe)
            .arg(REAPER_ARG)
            .arg(&self.file)
            .arg(&self.token)
            .stdin(r)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        if let Ok(child) = spawned {
            // Nobody waits for it: it outlives us by design and is reaped by init.
            drop(child);
            *reaper = Some(w);
        }
    }

    fn append(&self, line: &str) {
        if let Ok(mut log) = self.log.lock() {
            if log.is_none() {
                *log = fs::OpenOptions::new().create(true).append(true).open(&self.file).ok();
            }
            if let Some(f) = log.as_mut() {
                let _ = f.write_all(line.as_bytes());
            }
        }
    }

    /// Before a step starts: the reaper runs and the log names this build's token, so that the
    /// step is found by its token should gvbuild die before [`Jobs::add`] records it.
    pub fn arm(&self) {
        self.ensure_reaper();
        if let Ok(mut armed) = self.armed.lock() {
            if !*armed {
                *armed = true;
                self.append(&format!("t {}\n", self.token));
            }
        }
    }

    /// Record a process group as running (its processes must carry [`Jobs::mark`]).
    pub fn add(&self, pgid: u32) {
        self.ensure_reaper();
        self.append(&format!("+ {pgid} {}\n", self.token));
        if let Ok(mut r) = self.running.lock() {
            r.insert(pgid, ());
        }
    }

    /// The group has ended.
    pub fn remove(&self, pgid: u32) {
        if let Ok(mut r) = self.running.lock() {
            r.remove(&pgid);
        }
        self.append(&format!("- {pgid}\n"));
    }

    /// Give a command this run's token (`GVBUILD_JOB`), by which its leftovers are found.
    pub fn mark(&self, cmd: &mut Command) {
        cmd.env(JOB_VAR, &self.token);
    }

    /// The build is over and no step runs: forget the log.
    pub fn finish(&self) {
        if let Ok(mut log) = self.log.lock() {
            *log = None;
        }
        let _ = fs::remove_file(&self.file);
    }

    /// Kill every running step's process group (on SIGINT/SIGTERM).
    pub fn kill_all(&self) {
        if let Ok(r) = self.running.lock() {
            for &pgid in r.keys() {
                let _ = sys::killpg(pgid, sys::SIGKILL);
            }
        }
    }

    /// Kill what a previous, killed gvbuild left running in this project: every process in a
    /// recorded group that still carries that build's token.
    pub fn kill_leftovers(&self) -> usize {
        let killed = kill_recorded(&self.file, None);
        let _ = fs::remove_file(&self.file);
        killed
    }
}

/// Kill every process group that the jobs log at `file` records as started and not ended, when
/// it still carries the recorded token (and, if `only` is given, that token is `only`).
fn kill_recorded(file: &Path, only: Option<&str>) -> usize {
    {
        let Ok(text) = fs::read_to_string(file) else {
            return 0;
        };
        let mut open: HashMap<u32, String> = HashMap::new();
        let mut tokens: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        for line in text.lines() {
            let mut parts = line.split(' ');
            let (kind, second, third) = (parts.next(), parts.next(), parts.next());
            match (kind, second.and_then(|p| p.parse::<u32>().ok()), third) {
                (Some("+"), Some(pgid), Some(token)) => {
                    open.insert(pgid, token.to_string());
                    tokens.insert(token.to_string());
                }
                (Some("-"), Some(pgid), _) => {
                    open.remove(&pgid);
                }
                (Some("t"), _, _) => {
                    tokens.extend(second.map(str::to_string));
                }
                _ => {}
            }
        }
        tokens.retain(|t| only.is_none_or(|o| o == t));
        let mut killed = 0;
        for (pgid, token) in open {
            if only.is_some_and(|t| t != token) {
                continue;
            }
            if group_has_token(pgid, &token) && sys::killpg(pgid, sys::SIGKILL).is_ok() {
                killed += 1;
            }
        }
        // Steps started but not yet recorded when gvbuild died: found by their token alone.
        for pgid in groups_with_tokens(&tokens) {
            if sys::killpg(pgid, sys::SIGKILL).is_ok() {
                killed += 1;
            }
        }
        killed
    }
}

/// The hidden first argument that turns the gvbuild binary into a build's reaper.
pub const REAPER_ARG: &str = "__gvbuild_reaper";

/// The reaper: a small process started with a build's first step, in a process group of its
/// own (so a Ctrl-C aimed at gvbuild does not reach it). Its stdin is a pipe whose other end
/// only gvbuild holds. When gvbuild exits, however it exits, even by SIGKILL, the pipe closes:
/// the reaper then kills every step group still recorded as running, and exits. This is what
/// a parent-death signal would do, for the whole group rather than just its shell, and without
/// the cost of forking gvbuild for every step.
pub fn reaper_main(args: &[std::ffi::OsString]) -> u8 {
    let (Some(file), Some(token)) = (args.first(), args.get(1).and_then(|t| t.to_str())) else {
        return 2;
    };
    let mut buf = [0u8; 64];
    let mut stdin = io::stdin().lock();
    while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
    kill_recorded(Path::new(file), Some(token));
    0
}

/// The process groups of every live process that has `GVBUILD_JOB=T` in its environment, for a
/// token `T` of `tokens`.
fn groups_with_tokens(tokens: &std::collections::BTreeSet<String>) -> std::collections::BTreeSet<u32> {
    let mut groups = std::collections::BTreeSet::new();
    if tokens.is_empty() {
        return groups;
    }
    let needles: Vec<String> = tokens.iter().map(|t| format!("{JOB_VAR}={t}")).collect();
    let Ok(dir) = fs::read_dir("/proc") else {
        return groups;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(env) = fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if !env.split(|&b| b == 0).any(|kv| needles.iter().any(|n| kv == n.as_bytes())) {
            continue;
        }
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let pgrp = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(2)?.parse::<u32>().ok());
        groups.extend(pgrp.filter(|&g| g > 1));
    }
    groups
}

/// Whether any live process in group `pgid` has `GVBUILD_JOB=token` in its environment.
fn group_has_token(pgid: u32, token: &str) -> bool {
    let needle = format!("{JOB_VAR}={token}");
    let Ok(dir) = fs::read_dir("/proc") else {
        return false;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state ppid pgrp ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let pgrp = rest.split_whitespace().nth(2).and_then(|s| s.parse::<u32>().ok());
        if pgrp != Some(pgid) {
            continue;
        }
        if let Ok(env) = fs::read(format!("/proc/{pid}/environ")) {
            if env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()) {
                return true;
            }
        }
    }
    false
}

/// A counting semaphore: how many commands (steps, VMs, remote actions) run at once (`-j`).
pub struct Slots {
    free: std::sync::Mutex<usize>,
    cv: std::sync::Condvar,
}

impl Slots {
    pub fn new(n: usize) -> Slots {
        Slots { free: std::sync::Mutex::new(n.max(1)), cv: std::sync::Condvar::new() }
    }

    /// Hold a slot while the returned guard lives. The time spent waiting for it is added to
    /// this thread's [`take_slot_wait`], so that a step's reported time is its own.
    pub fn acquire(&self) -> SlotGuard<'_> {
        let start = std::time::Instant::now();
        let guard = self.acquire_inner();
        SLOT_WAIT.with(|w| w.set(w.get() + start.elapsed()));
        guard
    }

    fn acquire_inner(&self) -> SlotGuard<'_> {
        if let Ok(mut free) = self.free.lock() {
            while *free == 0 {
                free = match self.cv.wait(free) {
                    Ok(f) => f,
                    Err(_) => return SlotGuard { slots: self },
                };
            }
            *free -= 1;
        }
        SlotGuard { slots: self }
    }
}

thread_local! {
    static SLOT_WAIT: std::cell::Cell<std::time::Duration> = const { std::cell::Cell::new(std::time::Duration::ZERO) };
}

/// The time this thread has waited for command slots since the last call (which resets it).
pub fn take_slot_wait() -> std::time::Duration {
    SLOT_WAIT.with(|w| w.replace(std::time::Duration::ZERO))
}

pub struct SlotGuard<'a> {
    slots: &'a Slots,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut free) = self.slots.free.lock() {
            *free += 1;
        }
        self.slots.cv.notify_one();
    }
}
