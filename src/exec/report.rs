//! What the user sees while building: JSON events, plain lines, or a progress bar.
//!
//! - `--json`: stdout carries one JSON object per line and nothing else (human text goes to
//!   stderr): a `step` event per step target, then a `summary`.
//! - On a terminal: a progress bar with the running steps; finished steps that did something are
//!   printed above it.
//! - Otherwise: one plain line per step that ran, was restored, failed or was skipped; fresh
//!   steps are counted in the closing summary line.

use std::io::{self, IsTerminal, Write};
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use super::runner::Done;
use super::{Ctx, Outcome, Summary};
use crate::fingerprint::hash::hex;
use crate::fingerprint::state::Explained;
use crate::fingerprint::Digest;

/// Lines of a failed step's log shown inline (the whole log stays in the log file).
const LOG_TAIL_LINES: usize = 60;

pub struct Reporter {
    json: bool,
    /// `-q`: only failures (and warnings) are printed.
    quiet: bool,
    explain: bool,
    dry_run: bool,
    progress: Option<ProgressBar>,
    running: Vec<String>,
    started: Instant,
    pub explained: Vec<(String, Explained)>,
    /// GVBUILD_TIMINGS=1: also print how long each step's phases took.
    timings: bool,
    /// Holds the build's bar and any download bars that steps add below it.
    multi: Option<MultiProgress>,
    /// `--json` lines of fresh steps not yet written: a no-op build writes them in a few large
    /// writes, not one per target.
    pending: std::cell::RefCell<String>,
    /// Human lines go to stderr even without `--json`: `gvbuild run` keeps stdout for the
    /// task's result, as `cargo run` keeps it for the program.
    human_to_stderr: bool,
}

impl Reporter {
    pub fn new(json: bool, explain: bool, dry_run: bool, verbose: bool, quiet: bool) -> Reporter {
        let multi = (!json && !verbose && !quiet && io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        let progress = multi.as_ref().map(|m| {
            let pb = m.add(ProgressBar::no_length());
            if let Ok(style) = ProgressStyle::with_template("{spinner} [{pos}/{len}] {wide_msg}") {
                pb.set_style(style);
            }
            pb
        });
        Reporter {
            human_to_stderr: false,
            pending: Default::default(),
            timings: std::env::var_os("GVBUILD_TIMINGS").is_some_and(|v| !v.is_empty() && v != "0"),
            json,
            quiet,
            explain,
            dry_run,
            progress,
            running: Vec::new(),
            started: Instant::now(),
            explained: Vec::new(),
            multi,
        }
    }

    /// Send human lines to stderr (see `human_to_stderr`).
    pub fn human_to_stderr(&mut self) {
        self.human_to_stderr = true;
    }

    /// Where steps may add bars of their own (downloads), on a terminal.
    pub fn multi(&self) -> Option<MultiProgress> {
        self.multi.clone()
    }

    /// A human line: above the progress bar, or on stdout (stderr under --json and for `run`).
    fn line(&self, text: &str) {
        if let Some(pb) = &self.progress {
            pb.println(text);
        } else if self.json || self.human_to_stderr {
            let _ = writeln!(io::stderr().lock(), "{text}");
        } else {
            let _ = writeln!(io::stdout().lock(), "{text}");
        }
    }

    pub fn warn(&self, text: &str) {
        self.warn_raw(&format!("warning: {text}"));
    }

    /// A line on stderr, above the progress bar when there is one.
    fn warn_raw(&self, line: &str) {
        if let Some(pb) = &self.progress {
            pb.println(line);
        } else {
            let _ = writeln!(io::stderr().lock(), "{line}");
        }
    }

    pub fn start(&mut self, total: usize) {
        self.started = Instant::now();
        if let Some(pb) = &self.progress {
            pb.set_length(total as u64);
            pb.enable_steady_tick(std::time::Duration::from_millis(120));
        }
    }

    pub fn started(&mut self, name: &str) {
        if self.progress.is_some() {
            self.running.push(name.to_string());
            self.refresh();
        }
    }

    fn refresh(&self) {
        if let Some(pb) = &self.progress {
            pb.set_message(self.running.join(", "));
        }
    }

    pub fn step(
        &mut self,
        ctx: &Ctx,
        name: &str,
        outcome: Outcome,
        done: Option<&Done>,
        ms: u64,
        key: Option<Digest>,
    ) {
        if let Some(pb) = &self.progress {
            self.running.retain(|r| r != name);
            pb.inc(1);
            self.refresh();
        }
        if outcome == Outcome::Fresh && self.plain_fresh_lines() && done.is_none_or(|d| d.image_id.is_none())
        {
            self.write_line(&fresh_line(name, key, ms));
        } else if self.json {
            self.flush_pending();
            let ev = self.json_event(ctx, name, outcome, done, ms, key);
            let mut out = io::stdout().lock();
            let _ = writeln!(out, "{ev}");
        }
        if let Some(d) = done.filter(|_| !self.quiet) {
            for w in &d.warnings {
                self.warn(w);
            }
            if self.timings && !d.phases.is_empty() {
                let parts: Vec<String> = d
                    .phases
                    .iter()
                    .map(|(what, t)| format!("{what} {:.2} ms", t.as_secs_f64() * 1000.0))
                    .collect();
                self.warn_raw(&format!("timing: step {name}: {}", parts.join(", ")));
            }
        }
        let reasons = done
            .map(|d| d.reasons.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("; "))
            .unwrap_or_default();
        if self.dry_run {
            return self.dry_run_line(name, outcome, done, reasons);
        }
        let human = human_line(name, outcome, done, ms);
        let failed = matches!(outcome, Outcome::Failed | Outcome::Interrupted);
        if self.quiet && !failed {
            if let Some(d) = done {
                for w in &d.warnings {
                    self.warn(w);
                }
            }
            return;
        }
        if let (Some(h), false) = (&human, self.json) {
            self.line(h);
        }
        if let (Some((path, id)), false) = (done.and_then(|d| d.image_id.as_ref()), self.json) {
            self.line(&format!("image     {path}: program id (blake3) {}", hex(id)));
        }
        if let (Some(_), false) = (&human, self.json) {
            if self.explain && matches!(outcome, Outcome::Ran | Outcome::Restored) && !reasons.is_empty() {
                self.line(&format!("          why: {reasons}"));
            }
        }
        if outcome == Outcome::Failed {
            if let Some(d) = done {
                self.failure(ctx, name, d);
            }
        }
    }

    /// A step's `--json` event: its outcome, key and time, where its result came from or where
    /// it ran, its image, and (failed, or in a dry run) its command, error and log.
    fn json_event(
        &self,
        ctx: &Ctx,
        name: &str,
        outcome: Outcome,
        done: Option<&Done>,
        ms: u64,
        key: Option<Digest>,
    ) -> serde_json::Value {
        let mut ev = json!({
            "event": "step",
            "target": name,
            "outcome": outcome.as_str(),
            "key": key.map(|k| hex(&k)),
            "ms": ms,
        });
        match (outcome, done.map(|d| d.from)) {
            // Where the result came from: the local or the remote cache.
            (Outcome::Restored, Some(Some(from))) => ev["where"] = from.into(),
            // Where the step ran: here, or on the remote-execution engine.
            (Outcome::Ran, Some(from)) => ev["where"] = from.unwrap_or("local").into(),
            _ => {}
        }
        if let Some((path, id)) = done.and_then(|d| d.image_id.as_ref()) {
            ev["image"] = json!({ "path": path, "blake3": hex(id) });
        }
        if let (true, Some(d)) = (self.explain || self.dry_run, done) {
            ev["reasons"] = d.reasons.iter().map(|r| r.to_string()).collect();
        }
        if self.dry_run {
            ev["dry_run"] = true.into();
        }
        if let Some(d) = done {
            if matches!(outcome, Outcome::Failed | Outcome::Interrupted) || self.dry_run {
                ev["command"] = d.command.clone().into();
            }
            if matches!(outcome, Outcome::Failed | Outcome::Interrupted) {
                ev["error"] = d.error.clone().into();
                if let Some(log) = d.log.as_ref().filter(|l| l.exists()) {
                    ev["log"] = log.strip_prefix(&ctx.root).unwrap_or(log).display().to_string().into();
                }
            }
        }
        ev
    }

    /// A dry run's line for a step: what would happen and why, and the command it would run.
    fn dry_run_line(&mut self, name: &str, outcome: Outcome, done: Option<&Done>, reasons: String) {
        let verb = match outcome {
            Outcome::Ran => "would run",
            Outcome::Restored => "would restore",
            Outcome::Failed => "cannot check",
            _ => return,
        };
        let why = match done.and_then(|d| d.error.clone()) {
            Some(e) => e,
            None => reasons,
        };
        if !self.json && !self.quiet {
            self.line(format!("{verb:<13} {name}: {why}").trim_end_matches([':', ' ']));
            if let Some(cmd) = done.and_then(|d| d.command.as_deref()).filter(|_| outcome == Outcome::Ran) {
                for (i, l) in cmd.lines().enumerate() {
                    self.line(&format!("{}{l}", if i == 0 { "  $ " } else { "    " }));
                }
            }
        }
    }

    fn failure(&self, ctx: &Ctx, name: &str, d: &Done) {
        let mut msg =
            format!("error: step `{name}` failed: {}\n", d.error.as_deref().unwrap_or("unknown error"));
        if let Some(cmd) = &d.command {
            msg.push_str(&format!("  command: {cmd}\n"));
        }
        if let Some(log) = d.log.as_ref().filter(|l| l.exists()) {
            let shown = log.strip_prefix(&ctx.root).unwrap_or(log);
            msg.push_str(&format!("  log: {}\n", shown.display()));
            if let Ok(text) = std::fs::read_to_string(log) {
                let lines: Vec<&str> = text.lines().collect();
                let from = lines.len().saturating_sub(LOG_TAIL_LINES);
                if from > 0 {
                    msg.push_str(&format!("  ... {from} earlier lines in the log\n"));
                }
                for l in &lines[from..] {
                    msg.push_str(&format!("  | {l}\n"));
                }
            }
        }
        if let Some(pb) = &self.progress {
            pb.suspend(|| {
                let _ = write!(io::stderr().lock(), "{msg}");
            });
        } else {
            let _ = write!(io::stderr().lock(), "{msg}");
        }
    }

    /// Whether a fresh step without an image is reported by [`fresh_line`]'s line alone, which
    /// the caller may then format on any thread and hand to [`Reporter::push_line`].
    pub fn plain_fresh_lines(&self) -> bool {
        self.json && !self.explain && !self.dry_run
    }

    /// Report a fresh step by the line [`fresh_line`] made for it (see
    /// [`Reporter::plain_fresh_lines`]; with `--json` there is no progress bar to move).
    pub fn push_line(&mut self, line: &str) {
        self.write_line(line);
    }

    /// Buffer a `--json` line: a no-op build writes its lines in a few 64 KiB writes, not one
    /// per target.
    fn write_line(&self, line: &str) {
        let mut pending = self.pending.borrow_mut();
        pending.push_str(line);
        if pending.len() >= 64 << 10 {
            let _ = io::stdout().lock().write_all(pending.as_bytes());
            pending.clear();
        }
    }

    /// Write the fresh steps' lines held back (before any other line on stdout).
    fn flush_pending(&self) {
        let mut pending = self.pending.borrow_mut();
        if !pending.is_empty() {
            let _ = io::stdout().lock().write_all(pending.as_bytes());
            pending.clear();
        }
    }

    pub fn finish(&self, summary: &Summary, interrupted: bool) {
        self.flush_pending();
        if let Some(pb) = &self.progress {
            pb.finish_and_clear();
        }
        if self.json {
            let ev = json!({
                "event": "summary",
                "ran": summary.ran,
                "restored": summary.restored,
                "fresh": summary.fresh,
                "failed": summary.failed,
                "skipped": summary.skipped,
                "interrupted": summary.interrupted,
                "restored_remote": summary.restored_remote,
                "undeclared": summary.undeclared,
                "dry_run": self.dry_run,
            });
            let _ = writeln!(io::stdout().lock(), "{ev}");
            return;
        }
        let secs = self.started.elapsed().as_secs_f64();
        if self.quiet && summary.failed == 0 && summary.interrupted == 0 {
            return;
        }
        let tail = if interrupted { ", interrupted" } else { "" };
        if self.dry_run {
            self.line(&format!(
                "gvbuild (dry run): {} would run, {} would restore, {} fresh, {} cannot be checked{tail}",
                summary.ran, summary.restored, summary.fresh, summary.failed
            ));
            return;
        }
        let stopped = if summary.interrupted > 0 {
            format!(", {} interrupted", summary.interrupted)
        } else {
            String::new()
        };
        let remote = if summary.restored_remote > 0 {
            format!(" ({} from the remote cache)", summary.restored_remote)
        } else {
            String::new()
        };
        self.line(&format!(
            "gvbuild: {} ran, {} restored{remote}, {} fresh, {} failed, {} skipped{stopped} in {secs:.2} s{tail}",
            summary.ran, summary.restored, summary.fresh, summary.failed, summary.skipped
        ));
    }
}

/// The `--json` line of a fresh step without an image: the commonest line of all, one per
/// target of a no-op build, formatted without building a JSON value. The bytes are those the
/// general path of [`Reporter::step`] writes for it.
pub fn fresh_line(name: &str, key: Option<Digest>, ms: u64) -> String {
    let mut line = String::with_capacity(name.len() + 136);
    line.push_str("{\"event\":\"step\",\"target\":");
    // JSON escapes only quotes, backslashes and control characters (RFC 8259, section 7).
    if name.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        line.push('"');
        line.push_str(name);
        line.push('"');
    } else {
        line.push_str(&serde_json::to_string(name).unwrap_or_default());
    }
    line.push_str(",\"outcome\":\"fresh\",\"key\":");
    match key {
        Some(k) => {
            let mut buf = [0u8; 64];
            let _ = hex::encode_to_slice(k, &mut buf);
            line.push('"');
            line.push_str(std::str::from_utf8(&buf).unwrap_or_default());
            line.push('"');
        }
        None => line.push_str("null"),
    }
    let _ = std::fmt::Write::write_fmt(&mut line, format_args!(",\"ms\":{ms}}}\n"));
    line
}

/// The human line for a step's outcome (none for a fresh step).
fn human_line(name: &str, outcome: Outcome, done: Option<&Done>, ms: u64) -> Option<String> {
    match outcome {
        Outcome::Fresh => None,
        Outcome::Ran => match done.and_then(|d| d.from) {
            Some("remote") => Some(format!("ran       {name} ({ms} ms, remotely)")),
            _ => Some(format!("ran       {name} ({ms} ms)")),
        },
        Outcome::Restored => match done.and_then(|d| d.from) {
            Some("remote") => Some(format!("restored  {name} ({ms} ms, from the remote cache)")),
            _ => Some(format!("restored  {name} ({ms} ms)")),
        },
        Outcome::Skipped => Some(format!("skipped   {name} (a dependency failed or the build stopped)")),
        Outcome::Failed => Some(format!("FAILED    {name}")),
        Outcome::Interrupted => Some(format!("INTERRUPTED {name}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The fast line is the general path's JSON, byte for byte, names needing escapes included.
    #[test]
    fn fresh_line_is_the_json_of_the_event() {
        for name in ["app", "stage-libs", "a b/c.d", "quo\"te", "back\\slash", "tab\there", "ünï", ""] {
            for key in [None, Some([0xab; 32])] {
                let general = serde_json::json!({
                    "event": "step",
                    "target": name,
                    "outcome": "fresh",
                    "key": key.map(|k| hex(&k)),
                    "ms": 42,
                });
                let line = fresh_line(name, key, 42);
                assert_eq!(line, format!("{general}\n"), "{name:?}");
                let back: serde_json::Value = serde_json::from_str(&line).unwrap();
                assert_eq!(back["target"], name);
            }
        }
    }
}
