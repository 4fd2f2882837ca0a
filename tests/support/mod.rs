//! The test harness: temp projects, run with the real `gvbuild` binary.
//!
//! ```ignore
//! let p = Project::new().file("gevulot.yaml", "...").file("a.txt", "x");
//! let b = p.build(&[]);            // --json, asserts success, parses events
//! assert_eq!(b.ran(), ["gen"]);
//! p.gvbuild(&["list"]).success().stdout_has("gen");
//! ```
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_gvbuild")
}

/// A cache folder that several projects can share.
#[derive(Clone)]
pub struct SharedCache(Arc<TempDir>);

impl SharedCache {
    pub fn new() -> Self {
        SharedCache(Arc::new(tempfile::Builder::new().prefix("gvcache").tempdir().unwrap()))
    }
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

pub struct Project {
    dir: TempDir,
    pub cache: SharedCache,
}

impl Default for Project {
    fn default() -> Self {
        Self::new()
    }
}

impl Project {
    pub fn new() -> Self {
        Self::with_cache(&SharedCache::new())
    }

    pub fn with_cache(cache: &SharedCache) -> Self {
        let dir = tempfile::Builder::new().prefix("gvproj").tempdir().unwrap();
        Project { dir, cache: cache.clone() }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn file(self, rel: &str, contents: &str) -> Self {
        self.write(rel, contents);
        self
    }

    pub fn write(&self, rel: &str, contents: &str) {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, contents).unwrap();
    }

    pub fn executable(&self, rel: &str, contents: &str) {
        self.write(rel, contents);
        fs::set_permissions(self.path(rel), fs::Permissions::from_mode(0o755)).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }

    /// Copy every file of this project except `.gvbuild/` into a new project sharing the cache.
    pub fn clone_to_new_folder(&self) -> Project {
        let p = Project::with_cache(&self.cache);
        copy_tree(self.root(), p.root());
        p
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .current_dir(self.root())
            .env("GVBUILD_CACHE_DIR", self.cache.path())
            .env("NO_COLOR", "1")
            .env_remove("CLICOLOR_FORCE")
            .stdin(Stdio::null());
        c
    }

    pub fn gvbuild(&self, args: &[&str]) -> Run {
        let output = self.command(args).output().unwrap();
        Run { output, args: args.iter().map(|s| s.to_string()).collect() }
    }

    /// `gvbuild --json ARGS`, which must succeed; its events parsed.
    pub fn build(&self, args: &[&str]) -> Build {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let run = self.gvbuild(&all).success();
        Build::parse(&run)
    }

    /// `gvbuild --json ARGS` whatever its exit status.
    pub fn build_any(&self, args: &[&str]) -> (Run, Build) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let run = self.gvbuild(&all);
        let b = Build::parse(&run);
        (run, b)
    }
}

/// Remove a file, link or folder tree if it is there.
pub fn remove(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).unwrap(),
        Ok(_) => fs::remove_file(path).unwrap(),
        Err(_) => {}
    }
}

pub fn copy_tree(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from).into_iter().filter_entry(|e| e.file_name() != ".gvbuild") {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(from).unwrap();
        let dest = to.join(rel);
        let ft = entry.file_type();
        if ft.is_dir() {
            fs::create_dir_all(&dest).unwrap();
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path()).unwrap(), &dest).unwrap();
        } else {
            fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

pub struct Run {
    pub output: Output,
    pub args: Vec<String>,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }
    fn describe(&self) -> String {
        format!(
            "gvbuild {:?}\nexit: {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.args,
            self.output.status,
            self.stdout(),
            self.stderr()
        )
    }
    pub fn success(self) -> Self {
        assert!(self.output.status.success(), "expected success:\n{}", self.describe());
        self
    }
    pub fn failure(self) -> Self {
        assert!(!self.output.status.success(), "expected failure:\n{}", self.describe());
        self
    }
    pub fn exit(self, code: i32) -> Self {
        assert_eq!(self.code(), code, "wrong exit status:\n{}", self.describe());
        self
    }
    pub fn stdout_has(self, s: &str) -> Self {
        assert!(self.stdout().contains(s), "stdout lacks {s:?}:\n{}", self.describe());
        self
    }
    pub fn stderr_has(self, s: &str) -> Self {
        assert!(self.stderr().contains(s), "stderr lacks {s:?}:\n{}", self.describe());
        self
    }
}

/// The events of one `--json` build.
#[derive(Debug)]
pub struct Build {
    pub events: Vec<Value>,
    pub summary: Value,
}

impl Build {
    pub fn parse(run: &Run) -> Build {
        let mut events = Vec::new();
        let mut summary = Value::Null;
        for line in run.stdout().lines() {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line:?}\n{}", run.describe()));
            match v["event"].as_str() {
                Some("step") => events.push(v),
                Some("summary") => summary = v,
                other => panic!("unknown event {other:?}"),
            }
        }
        Build { events, summary }
    }

    /// Targets with this outcome, sorted.
    pub fn with(&self, outcome: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .events
            .iter()
            .filter(|e| e["outcome"] == outcome)
            .map(|e| e["target"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    }
    pub fn ran(&self) -> Vec<String> {
        self.with("ran")
    }
    pub fn restored(&self) -> Vec<String> {
        self.with("restored")
    }
    pub fn fresh(&self) -> Vec<String> {
        self.with("fresh")
    }
    pub fn outcomes(&self) -> BTreeMap<String, String> {
        self.events
            .iter()
            .map(|e| (e["target"].as_str().unwrap().to_string(), e["outcome"].as_str().unwrap().to_string()))
            .collect()
    }
    pub fn key(&self, target: &str) -> Option<String> {
        self.events.iter().find(|e| e["target"] == target).and_then(|e| e["key"].as_str().map(str::to_string))
    }
}

/// Sorted list of names, for comparing with `Build::ran()` and friends.
pub fn names(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// Strip the common leading indentation of a YAML text written inline in a test.
pub fn y(s: &str) -> String {
    let lines: Vec<&str> = s.lines().skip_while(|l| l.trim().is_empty()).collect();
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out = String::new();
    for l in lines {
        out.push_str(l.get(indent..).unwrap_or(""));
        out.push('\n');
    }
    out
}

/// A stand-in Nanos release of the real one's shape (a real release cannot be downloaded here):
/// `kernel.img` (an ELF header and filler), `boot.img` (a boot sector carrying the filesystem
/// region record that stage1 has, then 8 sectors of stage2), and `klibs/` with two klibs.
pub fn nanos_release_files() -> Vec<(&'static str, Vec<u8>)> {
    let mut kernel = b"\x7fELF\x02\x01\x01\0".to_vec();
    kernel.extend((0..300_000u32).map(|i| (i * 7 % 251) as u8));
    let stage2_len: u64 = 8 * 512;
    let mut boot = vec![0u8; 512];
    boot[..4].copy_from_slice(b"\xeb\x3cGV");
    boot[0x1aa..0x1b2].copy_from_slice(&0x8000u64.to_le_bytes());
    boot[0x1b2..0x1ba].copy_from_slice(&stage2_len.to_le_bytes());
    boot[0x1ba..0x1be].copy_from_slice(&12u32.to_le_bytes());
    boot[510] = 0x55;
    boot[511] = 0xaa;
    boot.extend((0..stage2_len).map(|i| b"stage2 "[(i % 7) as usize]));
    vec![
        ("kernel.img", kernel),
        ("boot.img", boot),
        ("klibs/ntp", b"ntp klib".to_vec()),
        ("klibs/gpu_nvidia", b"stand-in gpu klib".to_vec()),
    ]
}

/// The stand-in release as a tar.gz (as nanos-release-linux-<v>.tar.gz is) and its sha256.
pub fn nanos_release_tarball() -> (Vec<u8>, String) {
    let mut tar = crate::fetch::archives::Tar::new().dir("klibs");
    for (path, data) in nanos_release_files() {
        tar = tar.file(path, &data, 0o644);
    }
    let gz = crate::fetch::archives::gzip(&tar.finish());
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&gz))
    };
    (gz, sha)
}

/// Write the stand-in release into `dir` of a project.
pub fn write_nanos_release(p: &Project, dir: &str) {
    for (path, data) in nanos_release_files() {
        let dest = p.path(&format!("{dir}/{path}"));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::write(dest, data).unwrap();
    }
}

/// `gvbuild inspect --json IMAGE`, parsed.
pub fn inspect(p: &Project, image: &str) -> serde_json::Value {
    let run = p.gvbuild(&["inspect", "--json", image]).success();
    serde_json::from_str(&run.stdout()).unwrap()
}

/// The filesystem of `role` (`root` or `boot`) in an inspect result.
pub fn filesystem<'a>(d: &'a serde_json::Value, role: &str) -> &'a serde_json::Value {
    d["filesystems"].as_array().unwrap().iter().find(|f| f["role"] == role).unwrap()
}

/// An inspect tree as path -> (kind, size or target, exec).
pub fn tree_rows(fs_json: &serde_json::Value) -> BTreeMap<String, (String, String, bool)> {
    fs_json["tree"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let detail = match r["kind"].as_str().unwrap() {
                "file" => r["size"].to_string(),
                "symlink" => r["target"].as_str().unwrap().to_string(),
                _ => String::new(),
            };
            (
                r["path"].as_str().unwrap().to_string(),
                (r["kind"].as_str().unwrap().to_string(), detail, r["exec"].as_bool().unwrap_or(false)),
            )
        })
        .collect()
}

/// xorshift64*: a small deterministic generator for property tests, so that a failure can be
/// replayed from its seed, with no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// gevulot.yaml with one native `image` target: release `nanos/`, manifest `prover.json`, stage
/// root `root/`, into `prover.img`, plus `extra` (more fields, each line indented six spaces).
pub fn native_image_yaml(extra: &str) -> String {
    format!(
        "targets:\n  image:\n    image:\n      builder: native\n      release: nanos\n      manifest: prover.json\n      root: root\n      into: prover.img\n{extra}"
    )
}

/// A generous bound for anything the tests wait on; never a timing assertion.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Poll `cond` until it holds, or fail after [`PATIENCE`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait for a child to exit (bounded: a hung child is killed and the test fails).
pub fn wait_child(child: &mut Child, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if start.elapsed() > PATIENCE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run `gvbuild ARGS` with a bound on its time (a FIFO that blocked the build would hang the
/// test otherwise): its exit code and its stdout then stderr. Its output must be small.
pub fn gvbuild_in_time(p: &Project, args: &[&str]) -> (i32, String) {
    let mut child = p.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let status = wait_child(&mut child, "gvbuild");
    let mut text = String::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_string(&mut text).unwrap();
    }
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut text).unwrap();
    }
    (status.code().unwrap_or(-1), text)
}
