//! The documented server set-ups, run verbatim (issue 20): each block marked `<!-- tested: NAME -->`
//! in README.md or a page of docs/ (docs/shared-cache.md and docs/remote-execution.md hold them
//! today) is run by `bash -e` as written, in a fresh copy of `examples/` with `gvbuild` on PATH, the
//! block's defaulted variables (ports, folders) set to ones of the test's own. Then what the
//! block built is checked against the server it started, and the server is stopped.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::remote::buildgrid::Version;
use crate::support::{copy_tree, names, Project};

/// README.md and the pages of docs/, by their paths in the repository.
fn pages() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> =
        std::fs::read_dir(root.join("docs")).unwrap().map(|e| e.unwrap().path()).collect();
    docs.sort();
    paths.extend(docs.into_iter().filter(|p| p.extension().is_some_and(|e| e == "md")));
    paths
        .into_iter()
        .map(|p| (p.strip_prefix(root).unwrap().display().to_string(), std::fs::read_to_string(&p).unwrap()))
        .collect()
}

/// The shell block marked `<!-- tested: NAME -->`, with the page it is on. It must be on exactly
/// one page: a second copy would go stale untested.
fn block(name: &str) -> (String, String) {
    let marker = format!("<!-- tested: {name} -->\n```sh\n");
    let found: Vec<(String, String)> = pages()
        .into_iter()
        .filter_map(|(page, text)| {
            let start = text.find(&marker)? + marker.len();
            assert_eq!(text.matches(&marker).count(), 1, "{page} has block `{name}` twice");
            let end = text[start..].find("\n```\n").unwrap() + start;
            Some((page, text[start..=end].to_string()))
        })
        .collect();
    match found.as_slice() {
        [one] => one.clone(),
        [] => panic!("no page of README.md and docs/ has the block `{name}`"),
        _ => panic!(
            "the block `{name}` is on several pages: {:?}",
            found.iter().map(|f| &f.0).collect::<Vec<_>>()
        ),
    }
}

/// The blocks the tests below run.
const BLOCKS: [&str; 4] = ["nginx", "buildgrid-cache", "postgres", "buildgrid-exec"];

/// Every block marked as tested is one a test below runs, and each of those is on exactly one
/// page. This runs everywhere, also where the servers are not installed and the tests that
/// start them are ignored.
#[test]
fn every_block_marked_tested_is_run_by_a_test() {
    let mut marked = Vec::new();
    for (page, text) in pages() {
        for piece in text.split("<!-- tested: ").skip(1) {
            let name = piece.split(" -->").next().unwrap().to_string();
            assert!(BLOCKS.contains(&name.as_str()), "{page} marks `{name}` as tested, and no test runs it");
            marked.push(name);
        }
    }
    for name in BLOCKS {
        let (page, script) = block(name);
        assert!(page.starts_with("docs/") || page == "README.md", "{page}");
        assert!(!script.trim().is_empty(), "the block `{name}` on {page} is empty");
        assert!(marked.iter().any(|m| m == name), "`{name}` is not marked");
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A fresh copy of the repository's `examples/`, as a new user's clone has it.
struct Clone {
    dir: tempfile::TempDir,
    cache: tempfile::TempDir,
}

impl Clone {
    fn new() -> Clone {
        let dir = tempfile::Builder::new().prefix("gvreadme").tempdir().unwrap();
        // Servers started as root hand work to other users (nginx's workers, PostgreSQL).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        copy_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"), &dir.path().join("examples"));
        let _ = std::fs::remove_dir_all(dir.path().join("examples/hello/build"));
        let _ = std::fs::remove_dir_all(dir.path().join("examples/hello/.gvbuild"));
        Clone { dir, cache: tempfile::tempdir().unwrap() }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Run the documented block `name` here, as the leader of a process group of its own (what it
    /// starts in the background is in that group, and [`Ran::stop`] stops it), with `env` set
    /// and `path_first` ahead of the system's PATH. Its output goes to a file: a server left
    /// running must not hold a pipe open.
    fn run(&self, name: &str, env: &[(&str, String)], path_first: &[PathBuf]) -> Ran {
        let bin = Path::new(crate::support::bin()).parent().unwrap().to_path_buf();
        let mut path: Vec<PathBuf> = vec![bin];
        path.extend_from_slice(path_first);
        let system = std::env::var_os("PATH").unwrap_or_default();
        path.extend(std::env::split_paths(&system));
        path.extend(["/usr/sbin".into(), "/sbin".into()]);
        let log = self.path(&format!("{name}.out"));
        let file = std::fs::File::create(&log).unwrap();
        let (page, script) = block(name);
        let mut c = Command::new("bash");
        c.arg("-e").arg("-c").arg(script).current_dir(self.dir.path());
        c.env("PATH", std::env::join_paths(path).unwrap()).env("GVBUILD_CACHE_DIR", self.cache.path());
        for (k, v) in env {
            c.env(k, v);
        }
        c.stdin(Stdio::null()).stdout(file.try_clone().unwrap()).stderr(file).process_group(0);
        let mut child = c.spawn().unwrap();
        let status = child.wait().unwrap();
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        Ran { name: name.to_string(), page, status, text, pgid: child.id() }
    }
}

/// A block that ran.
struct Ran {
    name: String,
    page: String,
    status: std::process::ExitStatus,
    text: String,
    pgid: u32,
}

impl Ran {
    /// Stop what the block left running in its process group.
    fn stop(&self) {
        let _ = Command::new("kill").arg("--").arg(format!("-{}", self.pgid)).status();
    }

    fn ok(&self) {
        assert!(
            self.status.success(),
            "{}'s block `{}` failed ({:?}):\n{}",
            self.page,
            self.name,
            self.status,
            self.text
        );
    }
}

/// A second clone of `examples/hello`, on an empty cache of its own, builds against `flag URL`:
/// everything comes from the server.
fn second_clone_restores(flag: &str, url: &str) {
    let p = Project::new();
    copy_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello"), p.root());
    let _ = std::fs::remove_dir_all(p.path("build"));
    let _ = std::fs::remove_dir_all(p.path(".gvbuild"));
    let (run, built) = p.build_any(&[flag, url]);
    let run = run.success();
    assert!(!run.stderr().contains("warning"), "{}", run.stderr());
    assert_eq!(built.restored(), names(&["greeting", "hello", "version"]), "{:?}", built.events);
}

#[test]
#[cfg_attr(gvbuild_no_nginx, ignore = "needs nginx (CI installs it)")]
fn readme_nginx_block_serves_a_shared_cache() {
    let clone = Clone::new();
    let home = clone.path("nginx");
    let port = free_port();
    let ran = clone.run(
        "nginx",
        &[("CACHE_HOME", home.display().to_string()), ("CACHE_PORT", port.to_string())],
        &[],
    );
    // nginx leaves the block's group (it daemonizes): its pid file names it.
    let stop = || {
        if let Ok(pid) = std::fs::read_to_string(home.join("nginx.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    };
    if !ran.status.success() {
        stop();
    }
    ran.ok();
    assert!(clone.path("examples/hello/build/greeting.txt").is_file());
    second_clone_restores("--remote-cache", &format!("http://127.0.0.1:{port}/cache"));
    stop();
}

fn buildgrid_cache_block(version: Version) {
    let clone = Clone::new();
    let port = free_port();
    let cas = clone.path("cas");
    let bgd_dir = version.bgd().parent().unwrap().to_path_buf();
    let ran = clone.run(
        "buildgrid-cache",
        &[("BGD_PORT", port.to_string()), ("BGD_CAS", cas.display().to_string())],
        &[bgd_dir],
    );
    if ran.status.success() {
        second_clone_restores("--remote-cache", &format!("grpc://127.0.0.1:{port}/main"));
    }
    ran.stop();
    ran.ok();
}

#[test]
#[cfg_attr(gvbuild_no_reapi_python, ignore = "needs GVBUILD_TEST_REAPI_PYTHON (CI sets it up)")]
fn readme_buildgrid_cache_block_serves_a_shared_cache_on_0_4() {
    buildgrid_cache_block(Version::V0_4);
}

#[test]
#[cfg_attr(
    gvbuild_no_buildgrid09,
    ignore = "needs GVBUILD_TEST_BUILDGRID09_PYTHON (CI sets it up where pyenv has Python 3.13)"
)]
fn readme_buildgrid_cache_block_serves_a_shared_cache_on_0_9() {
    buildgrid_cache_block(Version::V0_9);
}

/// The PostgreSQL block, then the BuildGrid execution block (a worker and a remote build
/// of `examples/hello`), as root.
fn buildgrid_exec_blocks(version: Version) {
    let clone = Clone::new();
    let (pg_port, port) = (free_port(), free_port());
    let pgdata = clone.path("pg");
    let mut env = vec![
        ("PGPORT", pg_port.to_string()),
        ("BGD_PGDATA", pgdata.display().to_string()),
        ("BGD_PORT", port.to_string()),
    ];
    // 0.4 takes the driver's name in the URL, as docs/remote-execution.md says.
    if version == Version::V0_4 {
        env.push(("BGD_PG", format!("postgresql+psycopg2://bgd@127.0.0.1:{pg_port}/bgd")));
    }
    let bgd_dir = version.bgd().parent().unwrap().to_path_buf();
    let pg = clone.run("postgres", &env, &[]);
    let stop_pg = || {
        let pg_ctl = crate::remote::postgres::bin_dir().join("pg_ctl");
        let _ = Command::new("su")
            .args(["postgres", "-s", "/bin/sh", "-c"])
            .arg(format!("{} -D {} -m immediate stop", pg_ctl.display(), pgdata.display()))
            .output();
    };
    if !pg.status.success() {
        stop_pg();
    }
    pg.ok();
    env.push(("BGD_RUN", clone.path("run").display().to_string()));
    let ran = clone.run("buildgrid-exec", &env, &[bgd_dir]);
    let worker_log = std::fs::read_to_string(clone.path("run/worker.log")).unwrap_or_default();
    ran.stop();
    stop_pg();
    ran.ok();
    assert_eq!(
        std::fs::read_to_string(clone.path("examples/hello/build/greeting.txt")).unwrap(),
        "Hello from a gvbuild-built program, version 1.0.0\n"
    );
    assert!(worker_log.contains("lease"), "the worker ran nothing:\n{worker_log}");
}

#[test]
#[cfg_attr(
    any(gvbuild_no_reapi_python, gvbuild_no_postgres, gvbuild_not_root),
    ignore = "needs GVBUILD_TEST_REAPI_PYTHON, PostgreSQL and root (CI has them)"
)]
fn readme_buildgrid_exec_blocks_build_remotely_on_0_4() {
    buildgrid_exec_blocks(Version::V0_4);
}

#[test]
#[cfg_attr(
    any(gvbuild_no_buildgrid09, gvbuild_no_postgres, gvbuild_not_root),
    ignore = "needs GVBUILD_TEST_BUILDGRID09_PYTHON, PostgreSQL and root (CI has them where pyenv has Python 3.13)"
)]
fn readme_buildgrid_exec_blocks_build_remotely_on_0_9() {
    buildgrid_exec_blocks(Version::V0_9);
}
