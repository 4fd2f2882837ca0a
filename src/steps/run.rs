//! The `run` step: a shell command in a clean environment, in its own process group.
//!
//! The environment holds only `env`, `pass_env` and a fixed pass-through set that shells and
//! toolchains need but that is not part of the key: PATH, HOME, USER, TERM, LANG, TMPDIR. Each
//! step runs as the leader of a new process group, with a parent-death signal, and its group is
//! recorded in `.gvbuild/jobs` while it runs, so an interrupted or killed gvbuild can always kill
//! everything a step started (now, or at the next start).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;

use crate::sys;

/// Passed through from the caller, never keyed.
pub const PASS_THROUGH: &[&str] = &["PATH", "HOME", "USER", "TERM", "LANG", "TMPDIR"];
/// Marks every step process with this build's token, so leftovers can be found safely.
const JOB_VAR: &str = "GVBUILD_JOB";

/// The process groups of running steps, mirrored to a file for the next start.
pub struct Jobs {
    file: PathBuf,
    token: String,
    running: Mutex<HashMap<u32, ()>>,
    /// `jobs` is append-only: `+ PGID TOKEN` when a step starts, `- PGID` when it ends. Cheap
    /// enough to keep on disk for every step; replayed by the next start.
    log: Mutex<Option<File>>,
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
            log: Mutex::new(None),
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

    fn add(&self, pgid: u32) {
        self.append(&format!("+ {pgid} {}\n", self.token));
        if let Ok(mut r) = self.running.lock() {
            r.insert(pgid, ());
        }
    }

    fn remove(&self, pgid: u32) {
        if let Ok(mut r) = self.running.lock() {
            r.remove(&pgid);
        }
        self.append(&format!("- {pgid}\n"));
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
        let Ok(text) = fs::read_to_string(&self.file) else {
            return 0;
        };
        let mut open: HashMap<u32, String> = HashMap::new();
        for line in text.lines() {
            let mut parts = line.split(' ');
            match (parts.next(), parts.next().and_then(|p| p.parse::<u32>().ok()), parts.next()) {
                (Some("+"), Some(pgid), Some(token)) => {
                    open.insert(pgid, token.to_string());
                }
                (Some("-"), Some(pgid), _) => {
                    open.remove(&pgid);
                }
                _ => {}
            }
        }
        let recorded: Vec<(u32, String)> = open.into_iter().collect();
        let mut killed = 0;
        if !recorded.is_empty() {
            for (pgid, token) in &recorded {
                if group_has_token(*pgid, token) && sys::killpg(*pgid, sys::SIGKILL).is_ok() {
                    killed += 1;
                }
            }
        }
        let _ = fs::remove_file(&self.file);
        killed
    }
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

pub struct RunSpec<'a> {
    pub command: &'a str,
    pub root: &'a Path,
    pub env: &'a BTreeMap<String, String>,
    pub log: &'a Path,
    /// Print output live, each line prefixed with this.
    pub live: Option<&'a str>,
}

/// Run a step's command; its stdout and stderr go to the log file (and live to our stderr).
pub fn run(spec: &RunSpec, jobs: &Jobs) -> io::Result<ExitStatus> {
    if let Some(parent) = spec.log.parent() {
        fs::create_dir_all(parent)?;
    }
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-ec").arg(spec.command).current_dir(spec.root).stdin(Stdio::null()).env_clear();
    for var in PASS_THROUGH {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd.envs(spec.env).env(JOB_VAR, &jobs.token);
    cmd.process_group(0);
    sys::kill_on_parent_death(&mut cmd);

    let mut log = File::create(spec.log)?;
    let reader = match spec.live {
        None => {
            cmd.stdout(log.try_clone()?).stderr(log.try_clone()?);
            None
        }
        Some(_) => {
            let (r, w) = io::pipe()?;
            cmd.stdout(w.try_clone()?).stderr(w);
            Some(r)
        }
    };
    let mut child = cmd.spawn()?;
    drop(cmd);
    let pgid = child.id();
    jobs.add(pgid);
    if let (Some(r), Some(prefix)) = (reader, spec.live) {
        for line in BufReader::new(r).split(b'\n') {
            let Ok(line) = line else { break };
            let _ = log.write_all(&line);
            let _ = log.write_all(b"\n");
            let mut err = io::stderr().lock();
            let _ = err.write_all(prefix.as_bytes());
            let _ = err.write_all(&line);
            let _ = err.write_all(b"\n");
        }
    }
    let status = child.wait();
    // Whatever the step left running in its group would write behind our back: stop it.
    let _ = sys::killpg(pgid, sys::SIGKILL);
    jobs.remove(pgid);
    status
}
