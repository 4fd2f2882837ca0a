//! `gvbuild worker` against a real BuildGrid execution server (its scheduler on a real
//! PostgreSQL), given actions built by hand by a client that is not gvbuild
//! (`tests/tools/reapi_execute.py`, on BuildGrid's own generated stubs).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::remote::buildgrid::{python, BuildGrid, INSTANCE};
use crate::support::bin;

/// A `gvbuild worker` process, its output kept in files; killed when dropped.
pub struct Worker {
    child: Option<Child>,
    dir: TempDir,
    bot_id: String,
}

impl Worker {
    pub fn start(grid: &BuildGrid, bot_id: &str, args: &[&str]) -> Worker {
        Worker::start_with_path(grid, bot_id, args, None)
    }

    pub fn start_with_path(grid: &BuildGrid, bot_id: &str, args: &[&str], path: Option<&str>) -> Worker {
        let dir = tempfile::Builder::new().prefix("gvbuild-worker-test").tempdir().unwrap();
        let mut cmd = Command::new(bin());
        cmd.args(["worker", "--server", &grid.url(), "--bot-id", bot_id, "--work-dir"])
            .arg(dir.path().join("work"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.path().join("stdout")).unwrap())
            .stderr(fs::File::create(dir.path().join("stderr")).unwrap());
        if let Some(p) = path {
            cmd.env("PATH", p);
        }
        let child = cmd.spawn().unwrap();
        let w = Worker { child: Some(child), dir, bot_id: bot_id.to_string() };
        w.wait_for("created", Duration::from_secs(60));
        w
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    fn wait_for(&self, needle: &str, limit: Duration) {
        let start = Instant::now();
        while !self.stderr().contains(needle) {
            assert!(start.elapsed() < limit, "worker never said `{needle}`; it said:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn work_dir(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// Whether an action's folder (`BOT/a-N` under the work folder) exists: one is running.
    pub fn busy(&self) -> bool {
        let action_dir = |bot: &Path| {
            fs::read_dir(bot)
                .is_ok_and(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("a-")))
        };
        fs::read_dir(self.work_dir()).is_ok_and(|d| d.flatten().any(|e| action_dir(&e.path())))
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/reapi_execute.py")
}

/// Execute the action `spec` describes (see reapi_execute.py) and return its ExecuteResponse
/// as JSON, with the bytes of stdout, stderr and the output files.
fn execute(grid: &BuildGrid, spec: &Value) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.json");
    fs::write(&path, spec.to_string()).unwrap();
    let out = Command::new(python())
        .arg(script())
        .arg(grid.url().trim_start_matches("grpc://").split('/').next().unwrap())
        .arg(INSTANCE)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "reapi_execute.py failed: {}\n{}\nBuildGrid's log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        grid.log()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn code(r: &Value) -> i64 {
    r["status"]["code"].as_i64().unwrap_or(0)
}

fn message(r: &Value) -> String {
    r["status"]["message"].as_str().unwrap_or("").to_string()
}

/// Whether process `pid` is gone (or a zombie nobody has reaped yet: it runs no more).
fn gone(pid: &str) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
#[cfg_attr(
    any(gvbuild_no_reapi_python, gvbuild_no_postgres),
    ignore = "needs GVBUILD_TEST_REAPI_PYTHON and PostgreSQL (CI sets them up)"
)]
fn a_hand_built_action_runs_on_the_worker_with_its_inputs_outputs_and_exit_code() {
    let grid = BuildGrid::start_exec(&[]);
    let w = Worker::start(&grid, "bot-one", &["--jobs", "2"]);
    let r = execute(
        &grid,
        &json!({
            "arguments": ["sh", "-c", "test -x sub/run.sh && test ! -x in.txt && test -d empty \
                && cat in.txt sub/run.sh > out/r.txt && mkdir -p dir/s/t && echo hi > dir/s/f \
                && printf '#!/bin/sh\\n' > dir/x && chmod +x dir/x && ln -s f dir/s/l \
                && ln -s r.txt out/l && env | sort > env.txt && echo to-stdout && echo to-stderr >&2"],
            "env": {"FOO": "bar baz"},
            "output_paths": ["out/r.txt", "dir", "out/l", "env.txt", "never-made"],
            "files": {"in.txt": ["hello\n", false], "sub/run.sh": ["#!/bin/sh\n", true]},
            "dirs": ["empty"],
        }),
    );
    assert_eq!(code(&r), 0, "{r:#}\n{}", w.stderr());
    assert_eq!(r["result"]["exit_code"].as_i64().unwrap_or(0), 0, "{r:#}");
    assert_eq!(r["stdout"], "to-stdout\n");
    assert_eq!(r["stderr"], "to-stderr\n");
    assert_eq!(r["files"]["out/r.txt"], "hello\n#!/bin/sh\n");
    assert_eq!(r["result"]["output_symlinks"], json!([{"path": "out/l", "target": "r.txt"}]));
    assert_eq!(
        r["trees"]["dir"]["contents"],
        json!({"x": "#!/bin/sh\n (exec)", "s/": "/", "s/f": "hi\n", "s/l": "-> f", "s/t/": "/"})
    );
    assert_eq!(r["result"]["execution_metadata"]["worker"], "bot-one");
    // Exactly the Command's environment, and the three the worker supplies (and its job token).
    let env = r["files"]["env.txt"].as_str().unwrap().to_string();
    let names: Vec<&str> = env.lines().filter_map(|l| l.split_once('=')).map(|(k, _)| k).collect();
    assert!(env.contains("FOO=bar baz\n"), "{env}");
    for n in &names {
        assert!(
            ["FOO", "PATH", "HOME", "TMPDIR", "GVBUILD_JOB", "PWD", "SHLVL", "_"].contains(n),
            "{n} in\n{env}"
        );
    }
    assert!(names.contains(&"PATH"), "{env}");
    let paths: Vec<&str> =
        r["result"]["output_files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["out/r.txt", "env.txt"], "a missing output is left out");

    // A failing command: its exit code and what it printed.
    let r = execute(&grid, &json!({"arguments": ["sh", "-c", "echo oops >&2; exit 7"]}));
    assert_eq!(code(&r), 0, "{r:#}");
    assert_eq!(r["result"]["exit_code"], 7);
    assert_eq!(r["stderr"], "oops\n");
    assert_eq!(r["stdout"], "");

    // A missing input blob: FAILED_PRECONDITION naming it, REAPI's way.
    let r = execute(
        &grid,
        &json!({"arguments": ["true"], "files": {"gone.txt": ["not uploaded", false]}, "skip_upload": ["gone.txt"]}),
    );
    assert_eq!(code(&r), 9, "{r:#}");
    let missing = r["skipped"][0].as_str().unwrap();
    assert_eq!(r["violations"], json!([[["MISSING", missing]]]), "{r:#}");

    // Every action's folder is gone afterwards; SIGTERM ends the worker cleanly.
    let folders: Vec<_> = fs::read_dir(w.work_dir().join("bot-one"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("a-"))
        .collect();
    assert!(folders.is_empty(), "{folders:?}");
    w.signal("-TERM");
    let mut w = w;
    let status = w.child.as_mut().unwrap().wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", w.stderr());
}

#[test]
#[cfg_attr(
    any(gvbuild_no_reapi_python, gvbuild_no_postgres),
    ignore = "needs GVBUILD_TEST_REAPI_PYTHON and PostgreSQL (CI sets them up)"
)]
fn a_worker_killed_mid_action_loses_it_to_another_worker() {
    let grid = BuildGrid::start_exec(&[]);
    let first = Worker::start(&grid, "bot-first", &["--jobs", "1"]);
    let spec = json!({
        "arguments": ["sh", "-c", "sleep 4; echo finished > out.txt; echo ran"],
        "output_paths": ["out.txt"],
    });
    let client = {
        let url = grid.url();
        let spec = spec.clone();
        std::thread::spawn(move || {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("spec.json");
            fs::write(&path, spec.to_string()).unwrap();
            let out = Command::new(python())
                .arg(script())
                .arg(url.trim_start_matches("grpc://").split('/').next().unwrap())
                .arg(INSTANCE)
                .arg(&path)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            serde_json::from_slice::<Value>(&out.stdout).unwrap()
        })
    };
    first.wait_for("started", Duration::from_secs(60));
    let second = Worker::start(&grid, "bot-second", &["--jobs", "1"]);
    let killed_at = Instant::now();
    first.signal("-KILL");
    let r = client.join().unwrap();
    assert_eq!(code(&r), 0, "{r:#}\n{}\n{}", first.stderr(), second.stderr());
    assert_eq!(r["files"]["out.txt"], "finished\n");
    assert_eq!(r["stdout"], "ran\n");
    assert_eq!(r["result"]["execution_metadata"]["worker"], "bot-second", "{r:#}");
    assert!(
        r["stages"].as_array().unwrap().iter().filter(|s| *s == "QUEUED").count() >= 2,
        "requeued: {r:#}"
    );
    // The keepalive (5 s) and a 4 s action: well under a minute.
    assert!(killed_at.elapsed() < Duration::from_secs(60));
    // The killed worker's reaper killed its command: nothing runs in its folder any more.
    let prefix = first.work_dir();
    let start = Instant::now();
    loop {
        let left: Vec<String> = fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| fs::read_link(e.path().join("cwd")).is_ok_and(|c| c.starts_with(&prefix)))
            .filter(|e| !gone(&e.file_name().to_string_lossy()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "left running: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[cfg_attr(
    any(gvbuild_no_reapi_python, gvbuild_no_postgres),
    ignore = "needs GVBUILD_TEST_REAPI_PYTHON and PostgreSQL (CI sets them up)"
)]
fn a_tool_changed_since_the_worker_started_is_refused_with_both_identities() {
    let grid = BuildGrid::start_exec(&["tool:mytool"]);
    let bin_dir = tempfile::tempdir().unwrap();
    let tool = bin_dir.path().join("mytool");
    fs::write(&tool, "#!/bin/sh\necho mytool 1.0\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin_dir.path().display(), std::env::var("PATH").unwrap_or_default());
    let w = Worker::start_with_path(&grid, "bot-tools", &["--tool", "mytool"], Some(&path));
    let line = w.stdout();
    let old =
        line.trim().strip_prefix("tool:mytool=").unwrap_or_else(|| panic!("printed {line:?}")).to_string();
    assert!(old.starts_with("b3:"), "{old}");

    // The tool changes under the running worker.
    fs::write(&tool, "#!/bin/sh\necho mytool 2.0\n").unwrap();
    let r = execute(&grid, &json!({"arguments": ["mytool"], "platform": {"tool:mytool": old}}));
    assert_eq!(code(&r), 3, "INVALID_ARGUMENT: {r:#}\n{}", w.stderr());
    let m = message(&r);
    assert!(m.contains("mytool") && m.contains(&old), "{m}");
    let new =
        m.split_whitespace().find(|w| w.starts_with("b3:") && !w.contains(&old)).unwrap_or("").to_string();
    assert!(new.len() > 10, "the new identity is named: {m}");

    // From then on the worker offers the tool it has, and runs what asks for it.
    let r = execute(&grid, &json!({"arguments": ["mytool"], "platform": {"tool:mytool": new}}));
    assert_eq!(code(&r), 0, "{r:#}\n{}", w.stderr());
    assert_eq!(r["stdout"], "mytool 2.0\n");
}

#[test]
#[cfg_attr(
    any(gvbuild_no_reapi_python, gvbuild_no_postgres),
    ignore = "needs GVBUILD_TEST_REAPI_PYTHON and PostgreSQL (CI sets them up)"
)]
fn action_timeout_kills_the_whole_process_group() {
    let grid = BuildGrid::start_exec(&[]);
    let w = Worker::start(&grid, "bot-timeout", &[]);
    let started = Instant::now();
    let r = execute(
        &grid,
        &json!({"arguments": ["sh", "-c", "sleep 300 & echo $!; echo $$; sleep 300"], "timeout": 2}),
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(code(&r), 4, "DEADLINE_EXCEEDED: {r:#}\n{}", w.stderr());

    // An output name REAPI cannot carry (not UTF-8) is refused, not renamed.
    let bad = execute(
        &grid,
        &json!({"arguments": ["sh", "-c", "mkdir d && printf x > \"d/$(printf '\\377')\""], "output_paths": ["d"]}),
    );
    assert_eq!(code(&bad), 3, "INVALID_ARGUMENT: {bad:#}");
    assert!(message(&bad).contains("not UTF-8"), "{bad:#}");
    assert!(message(&r).contains("timeout"), "{r:#}");
    let pids: Vec<String> = r["stdout"].as_str().unwrap().split_whitespace().map(String::from).collect();
    assert_eq!(pids.len(), 2, "{r:#}");
    let start = Instant::now();
    while !pids.iter().all(|p| gone(p)) {
        assert!(start.elapsed() < Duration::from_secs(10), "still running: {pids:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[cfg_attr(
    any(gvbuild_no_reapi_python, gvbuild_no_postgres),
    ignore = "needs GVBUILD_TEST_REAPI_PYTHON and PostgreSQL (CI sets them up)"
)]
fn an_input_name_that_climbs_out_is_refused_and_nothing_is_written_outside() {
    let grid = BuildGrid::start_exec(&[]);
    let w = Worker::start(&grid, "bot-names", &[]);
    for name in ["../../../escape.txt", "..", "a/b"] {
        let r = execute(&grid, &json!({"arguments": ["true"], "raw_root": [{"name": name, "text": "x"}]}));
        assert_eq!(code(&r), 3, "INVALID_ARGUMENT for {name}: {r:#}\n{}", w.stderr());
        assert!(message(&r).contains("plain file name"), "{r:#}");
    }
    let escaped: Vec<_> = walkdir::WalkDir::new(w.dir.path())
        .into_iter()
        .flatten()
        .filter(|e| e.file_name() == "escape.txt" || e.file_name() == "b")
        .collect();
    assert!(escaped.is_empty(), "{escaped:?}");
    // An output path that climbs out is refused too.
    let r = execute(&grid, &json!({"arguments": ["true"], "output_paths": ["../out.txt"]}));
    assert_eq!(code(&r), 3, "{r:#}");
    // And the worker goes on serving.
    let r = execute(&grid, &json!({"arguments": ["echo", "still here"]}));
    assert_eq!(r["stdout"], "still here\n", "{r:#}");
    assert_eq!(w.bot_id, "bot-names");
}
