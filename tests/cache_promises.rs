//! The cache's promises: verified blobs, copies, hard links, nothing stored for failures, safety
//! against killed and interrupted builds, locks, and the cache subcommands.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::*;

fn signal(sig: &str, pid: u32) {
    let st = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap();
    assert!(st.success(), "kill -{sig} {pid} failed");
}

/// Whether a process is alive (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()).is_some_and(|s| s != "Z")
        }
    }
}

fn read_pid(p: &Project, rel: &str) -> Option<u32> {
    fs::read_to_string(p.path(rel)).ok()?.trim().parse().ok()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect()
}

fn cache_entries(c: &SharedCache) -> usize {
    files_under(&c.path().join("ac")).len()
}

/// The blob in the cache holding exactly these bytes.
fn blob_holding(c: &SharedCache, bytes: &[u8]) -> PathBuf {
    let found: Vec<PathBuf> =
        files_under(&c.path().join("blobs")).into_iter().filter(|b| fs::read(b).unwrap() == bytes).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one blob holding {:?}, found {found:?}",
        String::from_utf8_lossy(bytes)
    );
    found.into_iter().next().unwrap()
}

/// Overwrite a read-only file in place (same inode).
fn overwrite(path: &Path, bytes: &[u8]) {
    let mode = fs::metadata(path).unwrap().permissions().mode();
    fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o200)).unwrap();
    let mut f = fs::OpenOptions::new().write(true).truncate(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

/// A project clone with no outputs, as a fresh checkout would be.
fn checkout(p: &Project) -> Project {
    let c = p.clone_to_new_folder();
    if c.exists("out") {
        fs::remove_dir_all(c.path("out")).unwrap();
    }
    c
}

/// `gvbuild --json ARGS` started in the background, stdout and stderr piped.
fn spawn(p: &Project, args: &[&str]) -> Child {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    p.command(&all).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Collect what a finished child wrote.
fn finish(mut child: Child, what: &str) -> Run {
    let status = wait_child(&mut child, what);
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut stdout).unwrap();
    child.stderr.take().unwrap().read_to_end(&mut stderr).unwrap();
    Run { output: std::process::Output { status, stdout, stderr }, args: vec![what.to_string()] }
}

/// A shell loop that waits (bounded, about 15 s) for `release` to exist.
const WAIT_RELEASE: &str =
    "i=0; while [ ! -e ctl/release ] && [ $i -lt 300 ]; do sleep 0.05; i=$((i+1)); done";

const PRECIOUS: &str = "precious content\n";

fn one_step() -> Project {
    Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              gen:
                inputs: [a.txt]
                outputs: [out/gen]
                run: cp a.txt out/gen
            "#),
        )
        .file("a.txt", PRECIOUS)
}

#[test]
fn a_corrupted_blob_is_a_miss_and_the_step_reruns() {
    let p = one_step();
    assert_eq!(p.build(&[]).ran(), names(&["gen"]));
    // Same size, different bytes: only hashing can tell.
    let blob = blob_holding(&p.cache, PRECIOUS.as_bytes());
    overwrite(&blob, b"PRECIOUS CONTENT\n");

    // In the same project, with the output gone: not restored from the damaged blob.
    fs::remove_file(p.path("out/gen")).unwrap();
    let (r, b) = p.build_any(&[]);
    let r = r.success();
    assert_eq!(b.ran(), names(&["gen"]), "{b:?}\n{}", r.stderr());
    assert_eq!(p.read("out/gen"), PRECIOUS);
    assert!(r.stderr().contains("damaged"), "the miss is reported: {}", r.stderr());
    // The rerun stored a good blob again: a checkout restores it.
    let c = checkout(&p);
    let b = c.build(&[]);
    assert_eq!(b.restored(), names(&["gen"]));
    assert_eq!(c.read("out/gen"), PRECIOUS);

    // In a fresh checkout sharing the cache.
    let blob = blob_holding(&p.cache, PRECIOUS.as_bytes());
    overwrite(&blob, b"PRECIOUS CONTENT\n");
    let c = checkout(&p);
    let b = c.build(&[]);
    assert_eq!(b.ran(), names(&["gen"]), "{b:?}");
    assert_eq!(c.read("out/gen"), PRECIOUS);
}

/// The single action entry in the cache, parsed, and its path.
fn the_entry(c: &SharedCache) -> (PathBuf, serde_json::Value) {
    let entries = files_under(&c.path().join("ac"));
    assert_eq!(entries.len(), 1, "{entries:?}");
    let path = entries.into_iter().next().unwrap();
    let v = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    (path, v)
}

#[test]
fn a_missing_blob_or_an_unreadable_entry_is_a_miss() {
    let p = one_step();
    p.build(&[]);
    fs::remove_file(blob_holding(&p.cache, PRECIOUS.as_bytes())).unwrap();
    let c = checkout(&p);
    assert_eq!(c.build(&[]).ran(), names(&["gen"]), "blob gone: the step runs");
    assert_eq!(c.read("out/gen"), PRECIOUS);

    let (entry, _) = the_entry(&p.cache);
    overwrite(&entry, b"{ not json");
    let c = checkout(&p);
    assert_eq!(c.build(&[]).ran(), names(&["gen"]), "entry unreadable: the step runs");
    assert_eq!(c.read("out/gen"), PRECIOUS);
}

#[test]
fn a_tampered_entry_never_writes_outside_the_declared_outputs() {
    let p = one_step().file("victim.txt", "keep me\n");
    p.build(&[]);
    let (entry, mut v) = the_entry(&p.cache);
    v["outputs"]["files"][0]["path"] = "victim.txt".into();
    overwrite(&entry, v.to_string().as_bytes());
    let c = checkout(&p);
    let (r, b) = c.build_any(&[]);
    r.success();
    assert_eq!(b.ran(), names(&["gen"]));
    assert_eq!(c.read("victim.txt"), "keep me\n");
    assert_eq!(c.read("out/gen"), PRECIOUS);
}

/// Bug: an entry that lacks one of the declared outputs (a damaged or foreign entry) is
/// "restored", leaving that output missing, on every build.
#[test]
fn an_entry_lacking_a_declared_output_is_a_miss() {
    let p = Project::new().file(
        "gevulot.yaml",
        &y(r#"
        targets:
          two:
            outputs: [out/one, out/two]
            run: echo 1 > out/one; echo 2 > out/two
        "#),
    );
    p.build(&[]);
    let (entry, mut v) = the_entry(&p.cache);
    v["outputs"]["files"].as_array_mut().unwrap().retain(|f| f["path"] != "out/two");
    overwrite(&entry, v.to_string().as_bytes());
    let c = checkout(&p);
    let b = c.build(&[]);
    assert!(c.exists("out/two"), "a declared output is missing after the build: {b:?}");
    assert_eq!(c.read("out/two"), "2\n");
}

#[test]
fn cache_verify_reports_and_removes_damaged_blobs() {
    let p = one_step();
    p.build(&[]);
    p.gvbuild(&["cache", "verify"]).exit(0).stdout_has("0 damaged");

    let blob = blob_holding(&p.cache, PRECIOUS.as_bytes());
    let name = blob.file_name().unwrap().to_str().unwrap().to_string();
    overwrite(&blob, b"garbage");
    let r = p.gvbuild(&["cache", "verify"]).exit(1);
    assert!(r.stdout().contains("1 damaged"), "{}", r.stdout());
    assert!(r.stdout().contains(&format!("damaged: {name}")), "{}", r.stdout());
    assert!(!blob.exists(), "the damaged blob is removed");
    assert_eq!(cache_entries(&p.cache), 0, "the entry that referenced it is removed");
    p.gvbuild(&["cache", "verify"]).exit(0).stdout_has("0 damaged");

    // With the entry gone a checkout runs the step.
    let c = checkout(&p);
    assert_eq!(c.build(&[]).ran(), names(&["gen"]));
    assert_eq!(c.read("out/gen"), PRECIOUS);
}

#[test]
fn restored_outputs_are_copies() {
    let p = one_step();
    p.build(&[]);
    let c1 = checkout(&p);
    assert_eq!(c1.build(&[]).restored(), names(&["gen"]));
    let meta = fs::metadata(c1.path("out/gen")).unwrap();
    assert_eq!(meta.nlink(), 1, "a copy, not a link");
    assert_ne!(meta.permissions().mode() & 0o200, 0, "a copy is writable");

    // Editing the restored file in place touches only the copy.
    overwrite(&c1.path("out/gen"), b"edited in place\n");
    let c2 = checkout(&p);
    assert_eq!(c2.build(&[]).restored(), names(&["gen"]));
    assert_eq!(c2.read("out/gen"), PRECIOUS);
    // And the edited project gets its output back on the next build.
    let b = c1.build(&[]);
    assert_eq!(b.restored(), names(&["gen"]), "{b:?}");
    assert_eq!(c1.read("out/gen"), PRECIOUS);
    p.gvbuild(&["cache", "verify"]).exit(0);
}

#[test]
fn hardlink_restores_are_read_only_links_and_a_blob_damaged_through_one_is_never_restored() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              big:
                inputs: [a.txt]
                outputs: [out/big]
                restore: hardlink
                run: cat a.txt a.txt > out/big
              use:
                deps: [big]
                outputs: [out/use]
                run: cksum < out/big > out/use
            "#),
        )
        .file("a.txt", PRECIOUS);
    let good = PRECIOUS.repeat(2);
    assert_eq!(p.build(&[]).ran(), names(&["big", "use"]));

    let c1 = checkout(&p);
    let b = c1.build(&[]);
    assert_eq!(b.restored(), names(&["big", "use"]));
    let meta = fs::metadata(c1.path("out/big")).unwrap();
    assert!(meta.nlink() > 1, "a hard link into the cache: nlink {}", meta.nlink());
    assert_eq!(meta.permissions().mode() & 0o222, 0, "read-only: mode {:o}", meta.permissions().mode());
    assert_eq!(c1.read("out/big"), good);
    assert_eq!(fs::metadata(c1.path("out/use")).unwrap().nlink(), 1, "the other target restores copies");
    assert_eq!(c1.build(&[]).fresh(), names(&["big", "use"]));

    // Tamper with the blob through the link.
    overwrite(&c1.path("out/big"), b"tampered through the link\n");

    let c2 = checkout(&p);
    let (r, b) = c2.build_any(&[]);
    let r = r.success();
    assert_eq!(
        b.ran(),
        names(&["big"]),
        "the damaged blob is detected, the step reruns: {b:?}\n{}",
        r.stderr()
    );
    assert_eq!(b.restored(), names(&["use"]));
    assert_eq!(c2.read("out/big"), good);

    // The tampered project heals too, and the original project never shared the inode.
    let b = c1.build(&[]);
    assert_ne!(b.fresh(), names(&["big", "use"]), "{b:?}");
    assert_eq!(c1.read("out/big"), good);
    assert_eq!(p.read("out/big"), good);
    assert_eq!(p.build(&[]).fresh(), names(&["big", "use"]));
}

/// Bug: `restore: hardlink` sets the shared blob's mode, so two outputs with the same bytes but
/// different exec bits flip each other's mode: a restored script loses its exec bit, and the
/// two targets are restored again on every build.
#[test]
fn hardlinked_outputs_with_equal_bytes_keep_their_own_exec_bits() {
    let p = Project::new().file(
        "gevulot.yaml",
        &y(r#"
        targets:
          script:
            outputs: [out/run.sh]
            restore: hardlink
            run: printf 'echo hi\n' > out/run.sh; chmod +x out/run.sh
          text:
            deps: [script]
            outputs: [out/text]
            restore: hardlink
            run: printf 'echo hi\n' > out/text
        "#),
    );
    assert_eq!(p.build(&[]).ran(), names(&["script", "text"]));
    let c = checkout(&p);
    assert_eq!(c.build(&[]).restored(), names(&["script", "text"]));
    let mode = |rel: &str| fs::metadata(c.path(rel)).unwrap().permissions().mode();
    assert_ne!(
        mode("out/run.sh") & 0o100,
        0,
        "the restored script must stay executable: mode {:o}",
        mode("out/run.sh")
    );
    assert_eq!(
        mode("out/text") & 0o111,
        0,
        "the text must not become executable: mode {:o}",
        mode("out/text")
    );
    let b = c.build(&[]);
    assert_eq!(b.fresh(), names(&["script", "text"]), "{b:?}");
}

/// Bug: with the cache on another filesystem (a CI volume, ~/.cache on /home) a hard link is
/// impossible (EXDEV); gvbuild then evicts the good entry and reruns the step every time,
/// instead of falling back to a verified copy.
#[test]
fn hardlink_restore_across_filesystems_falls_back_to_a_copy() {
    let Ok(other) = tempfile::Builder::new().prefix("gvcache-shm").tempdir_in("/dev/shm") else { return };
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              big:
                inputs: [a.txt]
                outputs: [out/big]
                restore: hardlink
                run: cat a.txt > out/big
            "#),
        )
        .file("a.txt", PRECIOUS);
    if fs::metadata(other.path()).unwrap().dev() == fs::metadata(p.root()).unwrap().dev() {
        return; // /dev/shm is not a separate filesystem here.
    }
    let build = |proj: &Project| {
        let mut c = proj.command(&["--json"]);
        c.env("GVBUILD_CACHE_DIR", other.path());
        let run = Run { output: c.output().unwrap(), args: vec!["--json".into()] }.success();
        (Build::parse(&run), run.stderr())
    };
    assert_eq!(build(&p).0.ran(), names(&["big"]));
    let c = checkout(&p);
    let (b, err) = build(&c);
    assert_eq!(b.restored(), names(&["big"]), "{b:?}\n{err}");
    assert_eq!(c.read("out/big"), PRECIOUS);
}

#[test]
fn failed_steps_store_nothing() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              half:
                inputs: [a.txt]
                outputs: [out/half]
                run: cat a.txt > out/half; exit 1
              good:
                outputs: [out/good]
                run: echo good > out/good
            "#),
        )
        .file("a.txt", "a\n");
    let (r, b) = p.build_any(&["-k"]);
    r.exit(1);
    assert_eq!(b.with("failed"), names(&["half"]));
    assert_eq!(b.ran(), names(&["good"]));
    assert_eq!(cache_entries(&p.cache), 1, "only the successful step is stored");

    let c = checkout(&p);
    let (r, b) = c.build_any(&["-k"]);
    r.exit(1);
    assert_eq!(b.with("failed"), names(&["half"]), "not restored: {b:?}");
    assert_eq!(b.restored(), names(&["good"]));
}

#[test]
fn a_sigkilled_build_leaves_no_step_behind_and_the_next_build_is_correct() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              quick:
                inputs: [a.txt]
                outputs: [out/quick]
                run: cat a.txt > out/quick
              slow:
                deps: [quick]
                inputs: [a.txt]
                outputs: [out/slow]
                run: if [ -e ctl/hold ]; then sleep 120 & echo $! > ctl/sleeper.pid; wait; fi; cat out/quick a.txt > out/slow
                scratch: [ctl]
            "#),
        )
        .file("a.txt", "a\n")
        .file("ctl/hold", "");
    let mut child = spawn(&p, &[]);
    wait_until("the step to start its sleeper", || read_pid(&p, "ctl/sleeper.pid").is_some());
    let sleeper = read_pid(&p, "ctl/sleeper.pid").unwrap();
    signal("KILL", child.id());
    wait_child(&mut child, "the killed gvbuild");
    assert!(!p.exists("out/slow"));

    fs::remove_file(p.path("ctl/hold")).unwrap();
    let b = p.build(&[]);
    // What finished before the kill is kept; the killed step runs again.
    assert_eq!(b.fresh(), names(&["quick"]), "{b:?}");
    assert_eq!(b.ran(), names(&["slow"]));
    assert_eq!(p.read("out/slow"), "a\na\n");
    wait_until("the leftover step process to be gone", || !alive(sleeper));
    assert_eq!(p.build(&[]).fresh(), names(&["quick", "slow"]));
}

#[test]
fn sigkill_leftovers_are_killed_when_the_next_gvbuild_starts() {
    // The reaper is killed too, so only the next gvbuild's start can kill the leftover (and
    // that gvbuild has no step to run).
    let p = sigkill_project();
    let mut child = spawn(&p, &["slow"]);
    wait_until("the step to start its sleeper", || read_pid(&p, "ctl/sleeper.pid").is_some());
    let sleeper = read_pid(&p, "ctl/sleeper.pid").unwrap();
    let reapers = reapers_of(&p);
    assert_eq!(reapers.len(), 1, "one reaper per build: {reapers:?}");
    signal("KILL", reapers[0]);
    wait_until("the reaper to be gone", || !alive(reapers[0]));
    signal("KILL", child.id());
    wait_child(&mut child, "the killed gvbuild");
    assert!(alive(sleeper), "with its reaper killed first, nothing else stops the step");

    let r = p.gvbuild(&["--json", "other"]).success();
    wait_until("the leftover step process to be gone", || !alive(sleeper));
    assert!(r.stderr().contains("left running"), "the kill is reported: {}", r.stderr());
}

/// A gvbuild killed by SIGKILL takes its running steps with it: its reaper sees it go and kills
/// their process groups, without waiting for another gvbuild to start.
#[test]
fn sigkill_takes_the_running_steps_down_at_once() {
    let p = sigkill_project();
    let mut child = spawn(&p, &["slow"]);
    wait_until("the step to start its sleeper", || read_pid(&p, "ctl/sleeper.pid").is_some());
    let sleeper = read_pid(&p, "ctl/sleeper.pid").unwrap();
    signal("KILL", child.id());
    wait_child(&mut child, "the killed gvbuild");
    wait_until("the step's sleeper to be gone", || !alive(sleeper));
    wait_until("the reaper to exit", || reapers_of(&p).is_empty());
    // And the next build is correct.
    fs::remove_file(p.path("ctl/hold")).unwrap();
    let b = p.build(&["slow"]);
    assert_eq!(b.ran(), names(&["slow"]));
    assert_eq!(p.read("out/slow"), "done\n");
}

fn sigkill_project() -> Project {
    Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              slow:
                outputs: [out/slow]
                run: if [ -e ctl/hold ]; then sleep 120 & echo $! > ctl/sleeper.pid; wait; fi; echo done > out/slow
                scratch: [ctl]
              other:
                outputs: [out/other]
                run: echo other > out/other
            "#),
        )
        .file("ctl/hold", "")
}

/// The pids of reaper processes watching this project's jobs log.
fn reapers_of(p: &Project) -> Vec<u32> {
    let jobs = fs::canonicalize(p.root()).unwrap().join(".gvbuild").join("jobs");
    let needle = format!("__gvbuild_reaper\0{}\0", jobs.display());
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        if String::from_utf8_lossy(&cmdline).contains(&needle) && alive(pid) {
            out.push(pid);
        }
    }
    out
}

fn interrupt_kills_the_running_step_and_the_next_build_reruns_it(sig: &str) {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              slow:
                inputs: [a.txt]
                outputs: [out/slow]
                run: if [ -e ctl/hold ]; then sleep 120 & echo $! > ctl/sleeper.pid; echo $$$$ > ctl/shell.pid; wait; fi; cat a.txt > out/slow
                scratch: [ctl]
              after:
                deps: [slow]
                outputs: [out/after]
                run: cat out/slow > out/after
            "#),
        )
        .file("a.txt", "a\n")
        .file("ctl/hold", "");
    let child = spawn(&p, &[]);
    wait_until("the step to start", || {
        read_pid(&p, "ctl/sleeper.pid").is_some() && read_pid(&p, "ctl/shell.pid").is_some()
    });
    let sleeper = read_pid(&p, "ctl/sleeper.pid").unwrap();
    let shell = read_pid(&p, "ctl/shell.pid").unwrap();
    signal(sig, child.id());
    // Bounded by PATIENCE, far below the step's 120 s: the step must have been killed.
    let r = finish(child, "the interrupted gvbuild");
    assert_eq!(r.code(), 130, "SIG{sig}: stdout:\n{}\nstderr:\n{}", r.stdout(), r.stderr());
    // The step's whole process group is killed (the shell and what it started).
    wait_until("the step's shell to be gone", || !alive(shell));
    wait_until("the step's child to be gone", || !alive(sleeper));
    let b = Build::parse(&r);
    assert!(b.ran().is_empty(), "{b:?}");
    assert!(!b.fresh().contains(&"after".to_string()) && !b.ran().contains(&"after".to_string()), "{b:?}");
    assert_eq!(cache_entries(&p.cache), 0, "an interrupted step stores nothing");
    assert!(!p.exists("out/slow"));

    fs::remove_file(p.path("ctl/hold")).unwrap();
    let b = p.build(&[]);
    assert_eq!(b.ran(), names(&["after", "slow"]));
    assert_eq!(p.read("out/after"), "a\n");
}

#[test]
fn sigint_kills_the_running_step_exits_130_and_the_next_build_reruns_it() {
    interrupt_kills_the_running_step_and_the_next_build_reruns_it("INT");
}

#[test]
fn sigterm_kills_the_running_step_exits_130_and_the_next_build_reruns_it() {
    interrupt_kills_the_running_step_and_the_next_build_reruns_it("TERM");
}

#[test]
fn two_builds_of_one_project_wait_for_each_other() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &y(&format!(
                r#"
                targets:
                  slow:
                    inputs: [a.txt]
                    outputs: [out/slow]
                    run: touch ctl/started; {WAIT_RELEASE}; cat a.txt > out/slow
                    scratch: [ctl]
                "#
            )),
        )
        .file("a.txt", "a\n")
        // A longer text an older gvbuild left: the holder's pid is written over it, none of it left.
        .file(".gvbuild/lock", "pid 1234567890123456789012345678901234567890, an older writer\n");
    let first = spawn(&p, &[]);
    let first_pid = first.id();
    wait_until("the first build's step to start", || p.exists("ctl/started"));
    assert_eq!(p.read(".gvbuild/lock").trim(), format!("pid {first_pid}"));

    let mut second = spawn(&p, &[]);
    let stderr = second.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut err_lines = Vec::new();
    let start = Instant::now();
    while !err_lines.iter().any(|l: &String| l.contains("waiting")) {
        assert!(start.elapsed() < PATIENCE, "the second build never said it was waiting: {err_lines:?}");
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(50)) {
            err_lines.push(l);
        }
    }
    // The second build is blocked on the lock, not running the step.
    fs::write(p.path("ctl/release"), "").unwrap();
    let r1 = finish(first, "the first build").success();
    let status = wait_child(&mut second, "the second build");
    reader.join().unwrap();
    err_lines.extend(rx.try_iter());
    let mut stdout = Vec::new();
    second.stdout.take().unwrap().read_to_end(&mut stdout).unwrap();
    assert!(status.success(), "second build failed: {err_lines:?}");
    let waiting = format!("waiting for another gvbuild running in this project (pid {first_pid}) to finish");
    assert!(err_lines.iter().any(|l| l.contains(&waiting)), "no {waiting:?} in {err_lines:?}");
    let r2 = Run {
        output: std::process::Output { status, stdout, stderr: Vec::new() },
        args: vec!["second".into()],
    };
    assert_eq!(Build::parse(&r1).ran(), names(&["slow"]));
    assert_eq!(Build::parse(&r2).fresh(), names(&["slow"]), "the second build sees the first one's work");
    assert_eq!(p.read("out/slow"), "a\n");
}

#[test]
fn projects_sharing_a_cache_build_concurrently_without_waiting() {
    let p1 = Project::new().file(
        "gevulot.yaml",
        &y(&format!(
            r#"
                targets:
                  slow:
                    outputs: [out/slow]
                    run: touch ctl/started; {WAIT_RELEASE}; echo slow > out/slow
                    scratch: [ctl]
                "#
        )),
    );
    let p2 = Project::with_cache(&p1.cache).file(
        "gevulot.yaml",
        "targets:\n  quick:\n    outputs: [out/quick]\n    run: echo quick > out/quick\n",
    );
    let mut first = spawn(&p1, &[]);
    wait_until("the first project's step to start", || p1.exists("ctl/started"));

    let r = p2.gvbuild(&["--json"]).success();
    assert!(!r.stderr().contains("waiting"), "{}", r.stderr());
    assert_eq!(Build::parse(&r).ran(), names(&["quick"]));
    assert!(
        first.try_wait().unwrap().is_none(),
        "the other project's build is still running: neither waited for the other"
    );

    fs::write(p1.path("ctl/release"), "").unwrap();
    let r = finish(first, "the first project's build").success();
    assert_eq!(Build::parse(&r).ran(), names(&["slow"]));
}

fn stat_count(r: &Run, field: &str) -> u64 {
    let out = r.stdout();
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {out}"));
    line[field.len() + 1..].split_whitespace().next().unwrap().parse().unwrap()
}

fn two_steps() -> Project {
    Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              a:
                inputs: [a.txt]
                outputs: [out/a]
                run: cp a.txt out/a
              b:
                deps: [a]
                outputs: [out/b]
                run: cat out/a out/a > out/b
            "#),
        )
        .file("a.txt", "some bytes\n")
}

#[test]
fn cache_stats_and_gc_evict_so_a_clone_runs_again() {
    let p = two_steps();
    let r = p.gvbuild(&["cache", "stats"]).success();
    assert_eq!(stat_count(&r, "entries"), 0);

    p.build(&[]);
    let r = p.gvbuild(&["cache", "stats"]).success();
    assert_eq!(stat_count(&r, "entries"), 2);
    assert!(stat_count(&r, "blobs") >= 2, "{}", r.stdout());
    assert!(
        r.stdout().contains(&p.cache.path().display().to_string()),
        "names the cache folder: {}",
        r.stdout()
    );

    // A generous cap keeps everything.
    p.gvbuild(&["cache", "gc", "--max-size", "10M"]).success();
    assert_eq!(cache_entries(&p.cache), 2);
    assert_eq!(checkout(&p).build(&[]).restored(), names(&["a", "b"]));

    let r = p.gvbuild(&["cache", "gc", "--max-size", "1"]).success();
    assert!(r.stdout().contains("removed 2 entries"), "{}", r.stdout());
    let r = p.gvbuild(&["cache", "stats"]).success();
    assert_eq!(stat_count(&r, "entries"), 0);
    assert_eq!(stat_count(&r, "blobs"), 0);

    let c = checkout(&p);
    let b = c.build(&[]);
    assert_eq!(b.ran(), names(&["a", "b"]), "evicted: runs instead of restoring");
    assert_eq!(c.read("out/b"), "some bytes\nsome bytes\n");
    p.gvbuild(&["cache", "gc", "--max-size", "nonsense"]).exit(2);
}

#[test]
fn cache_gc_evicts_the_least_recently_used_entries_first() {
    let p = Project::new().file(
        "gevulot.yaml",
        &y(r#"
        targets:
          a:
            outputs: [out/a]
            run: head -c 1000 /dev/zero | tr '\0' a > out/a
          b:
            outputs: [out/b]
            run: head -c 1000 /dev/zero | tr '\0' b > out/b
        "#),
    );
    p.build(&[]);
    // Restoring `a` elsewhere marks its entry as used now.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(checkout(&p).build(&["a"]).restored(), names(&["a"]));
    let r = p.gvbuild(&["cache", "gc", "--max-size", "1500"]).success();
    assert!(r.stdout().contains("removed 1 entries"), "{}", r.stdout());
    let c = checkout(&p);
    let b = c.build(&[]);
    assert_eq!(b.restored(), names(&["a"]), "the recently used entry is kept: {b:?}");
    assert_eq!(b.ran(), names(&["b"]), "the least recently used one is evicted");
}

#[test]
fn clean_removes_declared_outputs() {
    let p = two_steps().file("keep.txt", "not an output\n");
    p.build(&[]);
    p.gvbuild(&["clean", "b"]).success().stdout_has("removed 1 output");
    assert!(p.exists("out/a") && !p.exists("out/b"));

    let r = p.gvbuild(&["clean"]).success();
    assert!(r.stdout().contains("removed 1 output"), "{}", r.stdout());
    assert!(!p.exists("out/a") && !p.exists("out/b"));
    assert!(p.exists("keep.txt") && p.exists("a.txt") && p.exists("gevulot.yaml"));

    let b = p.build(&[]);
    assert_eq!(b.restored(), names(&["a", "b"]), "the cache still has them");
    assert_eq!(p.read("out/b"), "some bytes\nsome bytes\n");
    p.gvbuild(&["clean", "nope"]).exit(2);
}

#[test]
fn an_input_edited_while_its_step_runs_is_not_cached() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &y(&format!(
                r#"
                targets:
                  slow:
                    inputs: [a.txt]
                    outputs: [out/slow]
                    run: cat a.txt > out/slow; touch ctl/started; {WAIT_RELEASE}
                    scratch: [ctl]
                "#
            )),
        )
        .file("a.txt", "before\n");
    let child = spawn(&p, &[]);
    wait_until("the step to start", || p.exists("ctl/started"));
    p.write("a.txt", "after!\n");
    fs::write(p.path("ctl/release"), "").unwrap();
    let r = finish(child, "the build").success();
    assert!(r.stderr().contains("changed while it ran"), "{}", r.stderr());
    assert_eq!(cache_entries(&p.cache), 0, "nothing stored");
    fs::remove_file(p.path("ctl/started")).unwrap();

    let b = p.build(&[]);
    assert_eq!(b.ran(), names(&["slow"]), "not fresh, not restored: {b:?}");
    assert_eq!(p.read("out/slow"), "after!\n");
    assert_eq!(p.build(&[]).fresh(), names(&["slow"]));

    // A checkout with the old input content does not find the mixed result either.
    let c = checkout(&p);
    c.write("a.txt", "before\n");
    fs::write(c.path("ctl/release"), "").unwrap();
    let b = c.build(&[]);
    assert_eq!(b.ran(), names(&["slow"]));
    assert_eq!(c.read("out/slow"), "before\n");
}
