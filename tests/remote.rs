//! The shared cache over the Bazel HTTP protocol: against a real nginx with WebDAV, and against
//! a misbehaving server of our own for every fault the server may have. Over REAPI's gRPC
//! protocol: against a real BuildGrid.

#[path = "remote/bad_server.rs"]
mod bad_server;
#[path = "remote/buildgrid.rs"]
pub mod buildgrid;
#[path = "remote/nginx.rs"]
pub mod nginx;
#[path = "remote/postgres.rs"]
pub mod postgres;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{copy_tree, names, y, Build, Project, Run};
use bad_server::{BadServer, Mode};
use buildgrid::{BuildGrid, Version};
use nginx::Nginx;

/// A project of every output shape, with a depfile step among its steps: a C program (its
/// header found through the depfile), a folder with a sub-folder, an empty folder, a symlink and
/// an executable, a step that reads another's output and prints to its log, and an uncached step.
fn project() -> Project {
    Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              prog:
                inputs: [src/main.c]
                outputs: [build/main]
                depfile: build/main.d
                run: cc -Iinc -MD -MF build/main.d -o build/main src/main.c
              tree:
                outputs: [out]
                run: |
                  mkdir -p out/sub/empty
                  printf 'hello\n' > out/a.txt
                  printf 'x%.0s' $(seq 1 3000) > out/sub/big
                  ln -s a.txt out/link
                  printf '#!/bin/sh\necho run\n' > out/run.sh && chmod +x out/run.sh
                  : > out/empty-file
              use:
                deps: [tree]
                inputs: [out/a.txt]
                outputs: [use.txt]
                run: cat out/a.txt out/a.txt > use.txt && echo "a line in the log"
              stamp:
                cache: false
                outputs: [stamp.txt]
                run: date +%s%N > stamp.txt
            "#),
        )
        .file("src/main.c", "#include <stdio.h>\n#include \"config.h\"\nint main(void) { printf(\"%d\\n\", VALUE); return 0; }\n")
        .file("inc/config.h", "#define VALUE 7\n")
}

/// A second clone of the same project, in another folder, with an empty cache of its own.
fn clone_of(p: &Project) -> Project {
    let c = Project::new();
    copy_tree(p.root(), c.root());
    for o in ["build", "out", "use.txt", "stamp.txt"] {
        crate::support::remove(&c.path(o));
    }
    c
}

fn with_remote(p: &Project, url: &str, args: &[&str]) -> (Run, Build) {
    let mut all = vec!["--remote-cache", url];
    all.extend_from_slice(args);
    p.build_any(&all)
}

fn warnings(run: &Run) -> Vec<String> {
    run.stderr().lines().filter(|l| l.starts_with("warning:")).map(str::to_string).collect()
}

/// Every output file and link of the project: path -> bytes (a link: "-> target"; a folder: "/").
fn outputs(p: &Project) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    for o in ["build/main", "out", "use.txt"] {
        for e in walkdir::WalkDir::new(p.path(o)).sort_by_file_name() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(p.root()).unwrap().display().to_string();
            let ft = e.file_type();
            let v = if ft.is_symlink() {
                format!("-> {}", fs::read_link(e.path()).unwrap().display()).into_bytes()
            } else if ft.is_dir() {
                b"/".to_vec()
            } else {
                let mut v = fs::read(e.path()).unwrap();
                use std::os::unix::fs::PermissionsExt;
                if fs::metadata(e.path()).unwrap().permissions().mode() & 0o111 != 0 {
                    v.extend_from_slice(b" (exec)");
                }
                v
            };
            m.insert(rel, v);
        }
    }
    m
}

fn where_of(b: &Build) -> BTreeMap<String, String> {
    b.events
        .iter()
        .filter(|e| e["outcome"] == "restored")
        .map(|e| (e["target"].as_str().unwrap().to_string(), e["where"].as_str().unwrap_or("").to_string()))
        .collect()
}

const CACHED: [&str; 3] = ["prog", "tree", "use"];

#[test]
#[cfg_attr(gvbuild_no_nginx, ignore = "needs nginx (CI installs it)")]
fn two_clones_share_one_nginx_and_the_second_runs_nothing() {
    let server = Nginx::start();
    let a = project();
    let b = clone_of(&a);
    let (run, first) = with_remote(&a, &server.url(), &[]);
    let run = run.success();
    assert_eq!(first.ran(), names(&["prog", "tree", "use", "stamp"]));
    assert!(warnings(&run).is_empty(), "{}", run.stderr());

    let (run, second) = with_remote(&b, &server.url(), &[]);
    let run = run.success();
    assert!(warnings(&run).is_empty(), "{}", run.stderr());
    // `stamp` is `cache: false`: it always runs, and was never uploaded.
    assert_eq!(second.ran(), names(&["stamp"]));
    assert_eq!(second.restored(), names(&CACHED));
    assert!(where_of(&second).values().all(|w| w == "remote"), "{:?}", second.events);
    assert_eq!(second.summary["restored_remote"], 3);
    assert_eq!(outputs(&a), outputs(&b), "the second clone's outputs equal the first's byte for byte");
    assert_eq!(b.read(".gvbuild/logs/use.log"), "a line in the log\n");
    let prog = std::process::Command::new(b.path("build/main")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&prog.stdout), "7\n");

    // The remote hit is in the local cache now: a third build in a fresh folder on the same
    // local cache restores locally; the second folder itself is fresh.
    let (_, again) = with_remote(&b, &server.url(), &[]);
    assert_eq!(again.fresh(), names(&CACHED));
    let c = Project::with_cache(&b.cache);
    copy_tree(a.root(), c.root());
    for o in ["build", "out", "use.txt"] {
        crate::support::remove(&c.path(o));
    }
    let (_, local) = with_remote(&c, &server.url(), &[]);
    assert!(where_of(&local).values().all(|w| w == "local"), "{:?}", local.events);

    // The depfile list travelled too: a changed header in a third clone is a miss, run.
    let d = clone_of(&a);
    d.write("inc/config.h", "#define VALUE 8\n");
    let (run, third) = with_remote(&d, &server.url(), &[]);
    run.success();
    assert_eq!(third.ran(), names(&["prog", "stamp"]));

    // `cache stats` counts what came down.
    let stats = b.gvbuild(&["cache", "stats"]).success().stdout();
    assert!(stats.contains("remote hits: 3"), "{stats}");
    assert!(!stats.contains("remote bytes down: 0 B"), "{stats}");
    let stats = a.gvbuild(&["cache", "stats"]).success().stdout();
    assert!(!stats.contains("remote bytes up: 0 B"), "{stats}");
}

#[test]
#[cfg_attr(gvbuild_no_nginx, ignore = "needs nginx (CI installs it)")]
#[cfg_attr(
    gvbuild_no_reapi_python,
    ignore = "needs GVBUILD_TEST_REAPI_PYTHON, a Python with BuildGrid (CI sets it up)"
)]
fn what_lands_on_the_server_is_what_bazel_remote_accepts() {
    let server = Nginx::start();
    let a = project();
    with_remote(&a, &server.url(), &[]).0.success();
    // A second build of a changed project adds entries next to the first ones.
    a.write("inc/config.h", "#define VALUE 9\n");
    with_remote(&a, &server.url(), &[]).0.success();
    let python = std::env::var("GVBUILD_TEST_REAPI_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/reapi_check.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(server.root())
        .arg(server.access_log())
        .arg("/cache")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    // prog twice, tree, use, and prog's depfile lists: five entries.
    assert!(text.starts_with("ok: 5 entries"), "{text}");
}

#[test]
#[cfg_attr(gvbuild_no_nginx, ignore = "needs nginx (CI installs it)")]
fn a_blob_flipped_on_the_server_is_a_miss_and_a_warning_naming_it() {
    let server = Nginx::start();
    let a = project();
    with_remote(&a, &server.url(), &[]).0.success();
    // The blob of out/a.txt ("hello\n"), flipped on the server's disk.
    let hello = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b"hello\n"))
    };
    let path = server.root().join("cas").join(&hello);
    fs::write(&path, b"jello\n").unwrap();

    let b = clone_of(&a);
    let (run, second) = with_remote(&b, &server.url(), &[]);
    let run = run.success();
    assert_eq!(second.ran(), names(&["tree", "stamp"]), "{:?}", second.events);
    assert_eq!(b.read("out/a.txt"), "hello\n");
    let w = warnings(&run);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains(&hello) && w[0].contains("does not match its digest"), "{w:?}");
    assert_eq!(outputs(&a), outputs(&b));

    // Small outputs also travel inside their entry: bytes flipped there are refused alike.
    use prost::Message;
    let mut flipped = 0;
    for e in fs::read_dir(server.root().join("ac")).unwrap().flatten() {
        let bytes = fs::read(e.path()).unwrap();
        let mut r =
            bazel_remote_apis::build::bazel::remote::execution::v2::ActionResult::decode(&bytes[..]).unwrap();
        let Some(f) = r.output_files.iter_mut().find(|f| f.path == "use.txt") else { continue };
        assert_eq!(f.contents, b"hello\nhello\n", "use.txt is inlined");
        f.contents = b"jello\nhello\n".to_vec();
        fs::write(e.path(), r.encode_to_vec()).unwrap();
        flipped += 1;
    }
    assert_eq!(flipped, 1);
    let c = clone_of(&a);
    let (run, third) = with_remote(&c, &server.url(), &[]);
    let run = run.success();
    assert!(third.ran().contains(&"use".to_string()), "{:?}", third.events);
    assert_eq!(c.read("use.txt"), "hello\nhello\n");
    let w = warnings(&run);
    assert!(w.iter().any(|w| w.contains("inlined") && w.contains("do not match its digest")), "{w:?}");
}

#[test]
#[cfg_attr(gvbuild_no_nginx, ignore = "needs nginx (CI installs it)")]
fn an_evicted_blob_is_an_ordinary_miss_without_a_warning() {
    let server = Nginx::start();
    let a = project();
    with_remote(&a, &server.url(), &[]).0.success();
    let hello = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b"hello\n"))
    };
    fs::remove_file(server.root().join("cas").join(&hello)).unwrap();
    let b = clone_of(&a);
    let (run, second) = with_remote(&b, &server.url(), &[]);
    let run = run.success();
    assert_eq!(second.ran(), names(&["tree", "stamp"]));
    assert!(warnings(&run).is_empty(), "{}", run.stderr());
    assert_eq!(outputs(&a), outputs(&b));
}

#[test]
#[cfg_attr(gvbuild_no_nginx, ignore = "needs nginx (CI installs it)")]
fn read_only_writes_nothing_on_the_server() {
    let server = Nginx::start();
    let a = project();
    with_remote(&a, &server.url(), &["--remote-read-only"]).0.success();
    assert!(server.files().is_empty(), "{:?}", server.files().keys());

    // Filled by a writer, then read by a read-only build (by its environment variable).
    with_remote(&a, &server.url(), &["-B"]).0.success();
    let before = server.files();
    assert!(!before.is_empty());
    let b = clone_of(&a);
    b.write("inc/config.h", "#define VALUE 1\n");
    let run = b
        .command(&["--json", "--remote-cache", &server.url()])
        .env("GVBUILD_REMOTE_READ_ONLY", "1")
        .output()
        .unwrap();
    assert!(run.status.success());
    let events = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(events.contains(r#""target":"prog","outcome":"ran""#), "{events}");
    assert!(events.contains(r#""where":"remote""#), "{events}");
    assert_eq!(server.files(), before, "a read-only build changed the server's folder");
}

/// A build whose first step kills the server (`pid`), so the steps after it find none; it
/// must succeed with the right outputs.
fn build_that_kills(url: &str, pid: u32) -> Run {
    let b = Project::new().file(
        "gevulot.yaml",
        &y(&format!(
            r#"
            targets:
              kill:
                outputs: [killed.txt]
                run: kill -9 {pid} && echo done > killed.txt
              s1: {{ deps: [kill], outputs: [s1.txt], run: "echo 1 > s1.txt" }}
              s2: {{ deps: [kill], outputs: [s2.txt], run: "echo 2 > s2.txt" }}
              s3: {{ deps: [kill], outputs: [s3.txt], run: "echo 3 > s3.txt" }}
              s4: {{ deps: [kill], outputs: [s4.txt], run: "echo 4 > s4.txt" }}
              s5: {{ deps: [s1, s2, s3, s4], outputs: [s5.txt], run: "cat s1.txt s2.txt s3.txt s4.txt > s5.txt" }}
            "#
        )),
    );
    let (run, built) = with_remote(&b, url, &["-j2"]);
    let run = run.success();
    assert_eq!(built.ran().len(), 6);
    assert_eq!(b.read("s5.txt"), "1\n2\n3\n4\n");
    run
}

#[test]
#[cfg_attr(gvbuild_no_nginx, ignore = "needs nginx (CI installs it)")]
fn the_server_killed_in_the_middle_of_a_build_leaves_one_warning() {
    let mut server = Nginx::start();
    let a = project();
    with_remote(&a, &server.url(), &[]).0.success();
    let run = build_that_kills(&server.url(), server.pid());
    let w = warnings(&run);
    assert_eq!(w.len(), 1, "{}", run.stderr());
    assert!(w[0].contains("the build went on without it"), "{w:?}");
    server.stop();
}

/// A build against a misbehaving server: it succeeds with the outputs a build without a remote
/// gives, and one warning.
fn faulty(mode: Mode, args: &[&str]) -> (BadServer, Run, Build, usize) {
    let server = BadServer::start(Mode::Normal);
    let a = project();
    let (run, _) = with_remote(&a, &server.url(), &[]);
    run.success();
    assert!(!server.stored().is_empty());
    let before = server.requests().len();
    server.set_mode(mode);
    let b = clone_of(&a);
    let (run, built) = with_remote(&b, &server.url(), args);
    let run = run.success();
    assert_eq!(outputs(&a), outputs(&b), "the outputs differ from a build without a remote");
    let w = warnings(&run);
    assert_eq!(w.len(), 1, "one warning, not one per step:\n{}", run.stderr());
    (server, run, built, before)
}

#[test]
fn a_refused_connection_builds_locally_with_one_warning() {
    let p = project();
    let url = crate::fetch::http::refused_url("/cache");
    let (run, built) = with_remote(&p, &url, &[]);
    let run = run.success();
    assert_eq!(built.ran(), names(&["prog", "tree", "use", "stamp"]));
    let w = warnings(&run);
    assert_eq!(w.len(), 1, "{}", run.stderr());
    assert!(w[0].contains("stopped asking it"), "{w:?}");
}

#[test]
fn server_errors_build_locally_and_stop_the_asking() {
    let (server, run, built, before) = faulty(Mode::Status(500), &["-j1"]);
    assert_eq!(built.ran(), names(&["prog", "tree", "use", "stamp"]));
    assert!(warnings(&run)[0].contains("HTTP status 500"), "{}", run.stderr());
    // After three failures gvbuild asks no more (a request already in flight may still land).
    let second = &server.requests()[before..];
    // Unchecked, the second build would make 4 lookups and a dozen uploads.
    assert!(second.len() <= 5, "gvbuild kept asking a failing server: {second:?}");
}

// Issue 20: HTTP 429 and 503 are the server asking to come back later, not failing: each call
// turned away is made again (after `Retry-After` when given), the results are shared, and
// nothing is warned about.
#[test]
fn a_busy_http_server_is_waited_out() {
    for mode in [Mode::Busy(429, None), Mode::Busy(503, Some(0))] {
        let server = BadServer::start(mode);
        let a = project();
        let (run, first) = with_remote(&a, &server.url(), &["-j1"]);
        let run = run.success();
        assert_eq!(first.ran().len(), 4);
        assert!(warnings(&run).is_empty(), "{mode:?}: {}", run.stderr());
        assert!(run.stderr().contains("was busy: it asked"), "{mode:?}: {}", run.stderr());
        let b = clone_of(&a);
        let (run, second) = with_remote(&b, &server.url(), &["-j1"]);
        let run = run.success();
        assert!(warnings(&run).is_empty(), "{mode:?}: {}", run.stderr());
        assert_eq!(second.restored(), names(&CACHED), "{mode:?}: {:?}", second.events);
        assert_eq!(outputs(&a), outputs(&b));
    }
}

#[test]
fn a_slow_server_times_out_and_the_build_goes_on() {
    let start = Instant::now();
    let (_, _, built, _) = faulty(Mode::Slow(Duration::from_secs(60)), &["--remote-timeout", "1", "-j1"]);
    assert_eq!(built.ran(), names(&["prog", "tree", "use", "stamp"]));
    // Both builds, with three one-second timeouts; waiting on the server would take minutes.
    assert!(start.elapsed() < Duration::from_secs(30), "took {:?}", start.elapsed());
}

/// Small outputs and logs travel inside their entry as well (verified there); a step whose
/// outputs need a blob from `cas/` (a folder's files) is a miss when the blob comes back short.
#[test]
fn a_truncated_body_is_a_miss() {
    let (_, run, built, _) = faulty(Mode::Truncated, &["-j1"]);
    assert!(!built.restored().contains(&"tree".to_string()), "{}", run.stderr());
    assert!(built.ran().contains(&"tree".to_string()));
}

#[test]
fn a_lying_content_length_is_a_miss() {
    let (_, run, built, _) = faulty(Mode::LyingLength, &["-j1"]);
    assert!(!built.restored().contains(&"tree".to_string()), "{}", run.stderr());
    assert!(built.ran().contains(&"tree".to_string()));
}

#[test]
fn html_pages_for_entries_are_server_failures_not_outputs() {
    let (_, run, built, _) = faulty(Mode::HtmlPages, &["-j1"]);
    assert_eq!(built.ran(), names(&["prog", "tree", "use", "stamp"]), "{}", run.stderr());
}

#[test]
fn uploads_refused_with_413_leave_one_warning() {
    let server = BadServer::start(Mode::RefuseUploads);
    let p = project();
    let (run, built) = with_remote(&p, &server.url(), &[]);
    let run = run.success();
    assert_eq!(built.ran(), names(&["prog", "tree", "use", "stamp"]));
    let w = warnings(&run);
    assert_eq!(w.len(), 1, "{}", run.stderr());
    assert!(w[0].contains("413"), "{w:?}");
    assert!(server.stored().is_empty());
}

#[test]
fn headers_from_the_environment_are_sent_and_never_printed() {
    let server = BadServer::start(Mode::Normal);
    let p = project();
    let secret = "Bearer s3cr3t-t0ken";
    let mut all = Vec::new();
    for args in [&["--json", "--explain"][..], &["--explain", "-B"][..]] {
        let mut c = p.command(args);
        c.args(["--remote-cache", &server.url()])
            .env("GVBUILD_REMOTE_HEADER", format!("Authorization: {secret}"))
            .env("GVBUILD_REMOTE_HEADER_1", "X-Team: compilers");
        let out = c.output().unwrap();
        assert!(out.status.success());
        all.push(String::from_utf8_lossy(&out.stdout).into_owned());
        all.push(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    server.set_mode(Mode::Status(500));
    let mut c = p.command(&["-B", "--remote-cache", &server.url()]);
    c.env("GVBUILD_REMOTE_HEADER", format!("Authorization: {secret}"))
        .env("GVBUILD_REMOTE_HEADER_1", "X-Team: compilers");
    let out = c.output().unwrap();
    all.push(String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(all.last().unwrap().contains("warning:"), "{all:?}");
    for text in &all {
        assert!(!text.contains("s3cr3t"), "a header value was printed:\n{text}");
    }
    let reqs = server.requests();
    assert!(!reqs.is_empty());
    for r in &reqs {
        assert!(r.headers.iter().any(|(k, v)| k == "authorization" && v == secret), "{r:?}");
        assert!(r.headers.iter().any(|(k, v)| k == "x-team" && v == "compilers"), "{r:?}");
    }
    // A malformed header is a usage error that names the variable, not its value.
    let mut c = p.command(&["--remote-cache", &server.url()]);
    c.env("GVBUILD_REMOTE_HEADER", "s3cr3t-without-a-colon");
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("GVBUILD_REMOTE_HEADER") && !err.contains("s3cr3t"), "{err}");
}

// Regression (issue 20): results built while the server was down were never uploaded later
// (only `-B` sent them), so every other machine ran them again. They are owed now, and the next
// build that reaches the server uploads them, though all its steps are fresh.
#[test]
#[cfg_attr(gvbuild_no_nginx, ignore = "needs nginx (CI installs it)")]
fn results_built_while_the_server_was_down_are_uploaded_by_the_next_build() {
    let mut server = Nginx::start();
    server.stop();
    let a = project();
    let (run, first) = with_remote(&a, &server.url(), &[]);
    let run = run.success();
    assert_eq!(first.ran().len(), 4);
    assert_eq!(warnings(&run).len(), 1, "{}", run.stderr());
    server.restart();
    // Nothing to build (but `stamp`, which is `cache: false`); what was owed goes up.
    let (run, again) = with_remote(&a, &server.url(), &[]);
    let run = run.success();
    assert_eq!(again.ran(), names(&["stamp"]));
    assert!(warnings(&run).is_empty(), "{}", run.stderr());
    assert!(server.files().keys().any(|k| k.starts_with("ac/")), "nothing was uploaded");
    // A clone on another machine (an empty local cache) restores all that is cacheable.
    let b = clone_of(&a);
    let (run, second) = with_remote(&b, &server.url(), &[]);
    run.success();
    assert_eq!(second.restored(), names(&CACHED), "{:?}", second.events);
    // Paid: the next no-op build uploads nothing more.
    let before = fs::read_to_string(server.access_log()).unwrap().lines().count();
    let (run, _) = with_remote(&a, &server.url(), &[]);
    run.success();
    let log = fs::read_to_string(server.access_log()).unwrap();
    assert!(!log.lines().skip(before).any(|l| l.contains("PUT")), "uploaded again:\n{log}");
}

// Regression (issue 20): `cache stats` said 0 bytes down after remote hits whose outputs and
// logs were small enough to travel inside their entry: those bytes came from the server too.
#[test]
#[cfg_attr(gvbuild_no_nginx, ignore = "needs nginx (CI installs it)")]
fn small_outputs_restored_from_the_server_count_as_bytes_down() {
    let server = Nginx::start();
    let yaml = "targets:\n  small:\n    outputs: [s.txt]\n    run: echo small > s.txt; echo logged\n";
    let a = Project::new().file("gevulot.yaml", yaml);
    let b = Project::new().file("gevulot.yaml", yaml);
    with_remote(&a, &server.url(), &[]).0.success();
    let (run, second) = with_remote(&b, &server.url(), &[]);
    run.success();
    assert_eq!(second.restored(), names(&["small"]));
    let stats = b.gvbuild(&["cache", "stats"]).success().stdout();
    assert!(stats.contains("remote hits: 1"), "{stats}");
    // `small\n` and `logged\n`, inlined in the entry.
    assert!(stats.contains("remote bytes down: 13 B (13 bytes)"), "{stats}");
}

// Regression (issue 20): a step with `pass_env: [GVBUILD_REMOTE_HEADER]` was handed gvbuild's
// write token, which the CI recipe gives the main branch's builds. No step, and no other child
// process, ever sees gvbuild's credentials: `pass_env` naming one is an error pointing at it,
// and they are gone from the environment every child inherits.
#[test]
fn no_step_is_ever_handed_gvbuild_s_credentials() {
    let server = BadServer::start(Mode::Normal);
    let asks = Project::new().file(
        "gevulot.yaml",
        "targets:\n  leak:\n    outputs: [env.txt]\n    pass_env: [HOME, GVBUILD_REMOTE_HEADER_1]\n    run: env > env.txt\n",
    );
    let mut c = asks.command(&["--remote-cache", &server.url()]);
    c.env("GVBUILD_REMOTE_HEADER", "Authorization: Bearer s3cr3t")
        .env("GVBUILD_REMOTE_HEADER_1", "X-Team: s3cr3t");
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for part in
        ["gevulot.yaml:4", "`GVBUILD_REMOTE_HEADER_1` holds gvbuild's credentials", "no step may read"]
    {
        assert!(err.replace('\n', " ").contains(part) || err.contains(part), "{part:?} is not in:\n{err}");
    }
    assert!(!asks.exists("env.txt"));
    // A step that does not ask does not get them either, nor anything it starts.
    let plain = Project::new().file(
        "gevulot.yaml",
        "targets:\n  env:\n    outputs: [env.txt]\n    pass_env: [HOME]\n    run: env > env.txt; cat /proc/$$/environ | tr \"\\0\" \"\\n\" >> env.txt\n",
    );
    let mut c = plain.command(&["--remote-cache", &server.url()]);
    c.env("GVBUILD_REMOTE_HEADER", "Authorization: Bearer s3cr3t")
        .env("GVBUILD_REMOTE_HEADER_1", "X-Team: s3cr3t");
    assert!(c.output().unwrap().status.success());
    let env = plain.read("env.txt");
    assert!(env.contains("HOME="), "{env}");
    assert!(
        !env.contains("s3cr3t") && !env.contains("GVBUILD_REMOTE"),
        "a step saw gvbuild's credentials:\n{env}"
    );
    assert!(
        server.requests().iter().any(|r| r.headers.iter().any(|(k, _)| k == "x-team")),
        "gvbuild itself still sends them"
    );
}

/// `remote_cache:` in gevulot.yaml is read from, never written to, and never sent the
/// credentials of the environment: a pull request that edits the file cannot send CI's token
/// or outputs to a host of its choice.
#[test]
fn remote_cache_in_gevulot_yaml_is_read_only_and_gets_no_credentials() {
    let server = BadServer::start(Mode::Normal);
    let a = project();
    with_remote(&a, &server.url(), &[]).0.success();
    let filled = server.stored();
    assert!(!filled.is_empty());
    let seen = server.requests().len();

    let b = clone_of(&a);
    let yaml = b.read("gevulot.yaml");
    b.write("gevulot.yaml", &format!("remote_cache: {}\n{yaml}", server.url()));
    b.write("src/main.c", &a.read("src/main.c").replace("int main", "int  main"));
    let secret = "Bearer s3cr3t-t0ken";
    let mut c = b.command(&["--json"]);
    c.env("GVBUILD_REMOTE_HEADER", format!("Authorization: {secret}"));
    let run = crate::support::Run { output: c.output().unwrap(), args: vec!["--json".into()] }.success();
    let built = Build::parse(&run);
    // What the server has is restored; the changed program runs and is not uploaded.
    assert_eq!(built.restored(), names(&["tree", "use"]));
    assert!(where_of(&built).values().all(|w| w == "remote"), "{:?}", built.events);
    assert_eq!(built.ran(), names(&["prog", "stamp"]));
    assert_eq!(server.stored(), filled, "the file's remote cache was written to");
    let reqs = server.requests();
    assert!(reqs.len() > seen);
    for r in &reqs[seen..] {
        assert!(matches!(r.method.as_str(), "GET" | "HEAD"), "{r:?}");
        assert!(!r.headers.iter().any(|(k, _)| k == "authorization"), "credentials sent: {r:?}");
    }

    // The flag (or GVBUILD_REMOTE_CACHE) goes over the file's URL, and an empty one turns
    // the file's off: no request at all.
    let n = server.requests().len();
    let (run, _) = b.build_any(&["-B", "--remote-cache", ""]);
    run.success();
    assert_eq!(server.requests().len(), n);
    // A URL of no protocol gvbuild speaks is an error pointing into the file.
    b.write("gevulot.yaml", &format!("remote_cache: ftp://cache.example\n{yaml}"));
    b.gvbuild(&[]).exit(2).stderr_has("is not a remote cache URL").stderr_has("gevulot.yaml");
}

/// Platform properties are in every remote key: a result built for one platform is not
/// restored for another. `--platform` goes over gevulot.yaml's `platform:`, a target's own
/// over the top level's.
#[test]
fn platform_properties_are_in_every_remote_key() {
    let server = BadServer::start(Mode::Normal);
    let a = project();
    let (run, _) = with_remote(&a, &server.url(), &["--platform", "os=debian-12", "--platform", "gpu=h200"]);
    run.success();

    let b = clone_of(&a);
    let (run, other) =
        with_remote(&b, &server.url(), &["--platform", "os=debian-13", "--platform", "gpu=h200"]);
    run.success();
    assert_eq!(other.ran(), names(&["prog", "tree", "use", "stamp"]), "another platform restored nothing");

    // The same properties written in gevulot.yaml are the same keys.
    let c = clone_of(&a);
    let yaml = c.read("gevulot.yaml");
    c.write("gevulot.yaml", &format!("platform:\n  os: debian-12\n  gpu: h100\n{yaml}"));
    let (run, same) = with_remote(&c, &server.url(), &["--platform", "gpu=h200"]);
    run.success();
    assert_eq!(same.restored(), names(&CACHED), "{:?}", same.events);

    // A target's own `platform:` goes over the top level's: only `tree` (and what reads its
    // output) misses.
    let d = clone_of(&a);
    let yaml = yaml.replace("  tree:\n", "  tree:\n    platform: { os: debian-11 }\n");
    d.write("gevulot.yaml", &format!("platform:\n  os: debian-12\n  gpu: h200\n{yaml}"));
    let (run, one) = with_remote(&d, &server.url(), &[]);
    run.success();
    assert_eq!(one.restored(), names(&["prog", "use"]), "{:?}", one.events);
    assert_eq!(one.ran(), names(&["tree", "stamp"]));

    // Names are checked where they are written.
    d.gvbuild(&["--platform", "no-equals-sign"]).exit(2).stderr_has("NAME=VALUE");
    d.write("gevulot.yaml", &format!("platform:\n  \"bad name\": x\n{yaml}"));
    d.gvbuild(&[]).exit(2).stderr_has("is not a platform property name");
}

/// The CI recipe in examples/ci, run as GitHub would run it: each job's `run` steps,
/// unmodified, under `bash -e` with the workflow's, the job's and the step's `env` (secrets
/// resolved), `$GITHUB_ENV` and `$RUNNER_TEMP`, in a project with an `image` target (the steps
/// that install gvbuild and the `uses:` steps are GitHub's own and are skipped). Main writes with
/// its token; a pull request reads with the read-only one and writes nothing; the write token is
/// only in the main job, only in its gvbuild step's environment (issue 20).
#[test]
fn ci_recipe_writes_from_main_and_only_reads_on_pull_requests() {
    let text =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ci/github-actions.yml")).unwrap();
    let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let job = |name: &str| doc["jobs"][name].clone();
    let server = BadServer::start(Mode::Normal);
    let (write, read) = ("Bearer write-t0ken", "Bearer read-t0ken");

    // Where the write token may be: the main job, which only a push to main runs, in an
    // environment of its own, and there in one step's `env` alone.
    let main = job("main");
    assert!(main["if"].as_str().unwrap().contains("github.ref == 'refs/heads/main'"));
    assert!(main["if"].as_str().unwrap().contains("github.event_name == 'push'"));
    assert!(main["environment"].is_string());
    assert_eq!(job("pull-request")["if"], "github.event_name == 'pull_request'");
    for (name, j) in doc["jobs"].as_object().unwrap() {
        let body = serde_json::to_string(j).unwrap();
        assert_eq!(body.contains("GVBUILD_CACHE_WRITE_TOKEN"), name == "main", "{name}");
        assert!(j["env"].get("GVBUILD_REMOTE_HEADER").is_none(), "{name}: a token in the job's env");
    }
    assert!(doc["env"].get("GVBUILD_REMOTE_HEADER").is_none());

    let bin_dir = Path::new(crate::support::bin()).parent().unwrap().to_path_buf();
    let resolve = |v: &str| -> String {
        let v = v
            .replace("${{ secrets.GVBUILD_REMOTE_CACHE }}", &server.url())
            .replace("Bearer ${{ secrets.GVBUILD_CACHE_WRITE_TOKEN }}", write)
            .replace("${{ secrets.GVBUILD_CACHE_READ_TOKEN }}", read.trim_start_matches("Bearer "));
        assert!(!v.contains("${{"), "an expression this test does not know: {v}");
        v
    };
    let run_job = |p: &Project, name: &str| {
        let j = job(name);
        let temp = tempfile::tempdir().unwrap();
        let github_env = temp.path().join("github_env");
        fs::write(&github_env, "").unwrap();
        for step in j["steps"].as_array().unwrap() {
            let Some(script) = step["run"].as_str() else { continue };
            if step.get("if").is_some() {
                continue; // installing gvbuild
            }
            let mut c = std::process::Command::new("bash");
            c.arg("-e").arg("-c").arg(script).current_dir(p.root());
            c.env("PATH", format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap()));
            c.env("GVBUILD_CACHE_DIR", p.cache.path()).env("RUNNER_TEMP", temp.path());
            c.env("GITHUB_ENV", &github_env);
            for scope in [&doc["env"], &j["env"], &step["env"]] {
                for (k, v) in scope.as_object().into_iter().flatten() {
                    c.env(k, resolve(v.as_str().unwrap()));
                }
            }
            for line in fs::read_to_string(&github_env).unwrap().lines() {
                let (k, v) = line.split_once('=').unwrap();
                c.env(k, v);
            }
            let out = c.output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{name}: {script}: {err}");
            assert!(!err.contains("warning"), "{name}: {script}: {err}");
        }
    };
    let with_image = |p: &Project| {
        let yaml = p.read("gevulot.yaml");
        p.write("gevulot.yaml", &format!("{yaml}  image:\n    deps: [prog, tree, use]\n"));
    };
    let a = project();
    with_image(&a);
    let b = clone_of(&a);
    // A pull request first: it reads, with the read-only token, and writes nothing.
    run_job(&b, "pull-request");
    assert!(server.stored().is_empty(), "a pull request wrote {:?}", server.stored());
    let reqs = server.requests();
    assert!(!reqs.is_empty());
    assert!(reqs.iter().all(|r| r.headers.iter().any(|(k, v)| k == "authorization" && v == read)));
    // Main writes, with the write token; the next pull request restores what main built.
    run_job(&a, "main");
    assert!(!server.stored().is_empty());
    let mains = &server.requests()[reqs.len()..];
    assert!(mains.iter().all(|r| r.headers.iter().any(|(k, v)| k == "authorization" && v == write)));
    let filled = server.stored();
    let c = clone_of(&a);
    run_job(&c, "pull-request");
    assert_eq!(server.stored(), filled);
    assert_eq!(outputs(&a), outputs(&c));
    let (_, again) = c.build_any(&["image"]);
    assert_eq!(again.fresh(), names(&CACHED), "the pull request's build restored everything");

    // The recipe without a server: the cache folder its step sets, outside the checkout (a
    // cache inside the project would be walked as part of it).
    let d = clone_of(&a);
    run_job(&d, "local-cache");
    let cache_dir = job("local-cache")["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|s| s["run"].as_str().filter(|r| r.contains("GVBUILD_CACHE_DIR=")))
        .map(str::to_string)
        .unwrap();
    assert!(cache_dir.contains("$RUNNER_TEMP/"), "{cache_dir}");
}

/// The SHA-256 names the local cache keeps for the remote are checked: a damaged one never
/// restores another blob, and `cache verify` finds and removes it.
#[test]
fn damaged_sha256_names_restore_nothing_wrong_and_verify_finds_them() {
    use sha2::Digest as _;
    let server = BadServer::start(Mode::Normal);
    // Two outputs of one size, so that a damaged name could stand for the other.
    let a = Project::new().file(
        "gevulot.yaml",
        &y(r#"
        targets:
          x: { outputs: [x.txt], run: "printf 1111 > x.txt" }
          z: { outputs: [z.txt], run: "printf 2222 > z.txt" }
        "#),
    );
    with_remote(&a, &server.url(), &[]).0.success();
    let cache = a.cache.path().to_path_buf();
    let sha = |bytes: &[u8]| hex::encode(sha2::Sha256::digest(bytes));
    let name_of = |sha: &str| cache.join("blake3-of").join(&sha[..2]).join(sha);
    let (x_sha, z_sha) = (sha(b"1111"), sha(b"2222"));
    // x.txt's SHA-256 now names the blob of z.txt.
    let z_b3 = fs::read_to_string(name_of(&z_sha)).unwrap();
    fs::write(name_of(&x_sha), &z_b3).unwrap();
    // Without its entries, the local cache restores through the remote's entries.
    fs::remove_dir_all(cache.join("ac")).unwrap();
    let c = Project::with_cache(&a.cache);
    c.write("gevulot.yaml", &a.read("gevulot.yaml"));
    let (run, b) = with_remote(&c, &server.url(), &[]);
    run.success();
    assert_eq!(b.restored(), names(&["x", "z"]));
    assert!(where_of(&b).values().all(|w| w == "remote"), "{:?}", b.events);
    assert_eq!(c.read("x.txt"), "1111", "another blob was restored");

    // A wrong `sha256/` name would upload a blob under another's name: verify finds both.
    let x_b3 = blake3::hash(b"1111").to_hex().to_string();
    let forward = cache.join("sha256").join(&x_b3[..2]).join(&x_b3);
    fs::write(&forward, &z_sha).unwrap();
    let run = a.gvbuild(&["cache", "verify"]);
    assert_eq!(run.code(), 1, "{}", run.stdout());
    let out = run.stdout();
    assert!(out.contains("wrong SHA-256 name(s) (removed)"), "{out}");
    assert!(out.contains(&format!("sha256/{}/{x_b3}", &x_b3[..2])), "{out}");
    // Both names of the damaged file are gone (one file, two names: the other is orphaned).
    assert!(!forward.exists() && !name_of(&x_sha).exists());
    a.gvbuild(&["cache", "verify"]).success().stdout_has("verify: ");
}

#[test]
fn failed_steps_upload_nothing() {
    let server = BadServer::start(Mode::Normal);
    let p = Project::new().file(
        "gevulot.yaml",
        &y(r#"
        targets:
          bad: { outputs: [x.txt], run: "echo x > x.txt && exit 3" }
        "#),
    );
    let (run, _) = with_remote(&p, &server.url(), &[]);
    run.failure();
    assert!(server.stored().is_empty(), "{:?}", server.stored());
}

#[test]
#[cfg_attr(
    gvbuild_no_reapi_python,
    ignore = "needs GVBUILD_TEST_REAPI_PYTHON, a venv with BuildGrid (CI sets it up)"
)]
fn two_clones_share_one_buildgrid_and_the_second_runs_nothing() {
    let server = BuildGrid::start();
    let a = project();
    let b = clone_of(&a);
    let (run, first) = with_remote(&a, &server.url(), &[]);
    let run = run.success();
    assert_eq!(first.ran(), names(&["prog", "tree", "use", "stamp"]));
    assert!(warnings(&run).is_empty(), "{}", run.stderr());

    let (run, second) = with_remote(&b, &server.url(), &[]);
    let run = run.success();
    assert!(warnings(&run).is_empty(), "{}", run.stderr());
    // Nothing ran but `stamp`, which is `cache: false`; the depfile step came from BuildGrid too.
    assert_eq!(second.ran(), names(&["stamp"]));
    assert_eq!(second.restored(), names(&CACHED));
    assert!(where_of(&second).values().all(|w| w == "remote"), "{:?}", second.events);
    assert_eq!(second.summary["restored_remote"], 3);
    assert_eq!(outputs(&a), outputs(&b), "the second clone's outputs equal the first's byte for byte");
    assert_eq!(b.read(".gvbuild/logs/use.log"), "a line in the log\n");
    let prog = std::process::Command::new(b.path("build/main")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&prog.stdout), "7\n");

    // The depfile lists travelled: a changed header in a third clone is a miss, run.
    let d = clone_of(&a);
    d.write("inc/config.h", "#define VALUE 8\n");
    let (run, third) = with_remote(&d, &server.url(), &[]);
    run.success();
    assert_eq!(third.ran(), names(&["prog", "stamp"]));

    let stats = b.gvbuild(&["cache", "stats"]).success().stdout();
    assert!(stats.contains("remote hits: 3"), "{stats}");
    // Capabilities were asked once per build, and blobs were looked for many at a time.
    assert_eq!(server.calls("GetCapabilities"), 3, "{}", server.log());
    assert!(server.calls("FindMissingBlobs") >= 1, "{}", server.log());
    assert_eq!(server.calls("Write") + server.calls("Read"), 0, "small blobs go in batches");
}

// Regression (issue 20): against a BuildGrid with a small thread pool, the calls beyond it were
// answered RESOURCE_EXHAUSTED ("Concurrent RPC limit exceeded!"); gvbuild counted each as a
// failure, stopped asking after three, uploaded nothing, and the second clone ran everything.
// A pushback is now waited out with fewer calls in flight (cache::remote::backoff), so the
// build's result does not depend on how the server was sized. BuildGrid's smallest pool (5; it
// raises anything less to that) against 0.4.4 and 0.9.x.
fn a_busy_buildgrid_is_waited_out(version: Version) {
    let server = BuildGrid::start_pool(version, 5);
    let a = Project::new();
    let out = std::process::Command::new("python3")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/gen.py"))
        .args(["--layers", "10", "--width", "30"])
        .arg(a.root())
        .output()
        .unwrap();
    assert!(out.status.success(), "gen.py: {}", String::from_utf8_lossy(&out.stderr));
    let b = Project::new();
    copy_tree(a.root(), b.root());
    let (run, first) = with_remote(&a, &server.url(), &["-j2"]);
    let first_run = run.success();
    assert_eq!(first.ran().len(), 300);
    assert!(warnings(&first_run).is_empty(), "{}", first_run.stderr());
    let (run, second) = with_remote(&b, &server.url(), &["-j2"]);
    let run = run.success();
    assert!(warnings(&run).is_empty(), "{}", run.stderr());
    assert!(second.ran().is_empty(), "{:?}", second.ran());
    assert_eq!(second.restored().len(), 300);
    let busy = format!("the remote cache {} was busy: it asked", server.url());
    assert!(
        first_run.stderr().contains(&busy) || run.stderr().contains(&busy),
        "BuildGrid {version:?} never pushed back, so this shows nothing:\n{}{}",
        first_run.stderr(),
        run.stderr()
    );
}

#[test]
#[cfg_attr(
    gvbuild_no_reapi_python,
    ignore = "needs GVBUILD_TEST_REAPI_PYTHON, a venv with BuildGrid (CI sets it up)"
)]
fn a_busy_buildgrid_0_4_is_waited_out_and_the_second_clone_runs_nothing() {
    a_busy_buildgrid_is_waited_out(Version::V0_4);
}

#[test]
#[cfg_attr(
    gvbuild_no_buildgrid09,
    ignore = "needs GVBUILD_TEST_BUILDGRID09_PYTHON, a Python 3.13 venv with BuildGrid 0.9 (CI sets it up where pyenv has 3.13)"
)]
fn a_busy_buildgrid_0_9_is_waited_out_and_the_second_clone_runs_nothing() {
    a_busy_buildgrid_is_waited_out(Version::V0_9);
}

#[test]
#[cfg_attr(
    gvbuild_no_reapi_python,
    ignore = "needs GVBUILD_TEST_REAPI_PYTHON, a venv with BuildGrid (CI sets it up)"
)]
fn a_blob_above_the_batch_limit_goes_through_bytestream() {
    let server = BuildGrid::start();
    // BuildGrid's batch limit is 4 MiB less 1 KiB (max_batch_total_size_bytes): 5 MB is above.
    let yaml = "targets:\n  big:\n    outputs: [big.bin]\n    run: yes gvbuild-bytestream | head -c 5000000 > big.bin\n";
    let a = Project::new().file("gevulot.yaml", yaml);
    let b = Project::new().file("gevulot.yaml", yaml);
    let (run, first) = with_remote(&a, &server.url(), &[]);
    let run = run.success();
    assert_eq!(first.ran(), names(&["big"]));
    assert!(warnings(&run).is_empty(), "{}", run.stderr());
    let (run, second) = with_remote(&b, &server.url(), &[]);
    let run = run.success();
    assert!(warnings(&run).is_empty(), "{}", run.stderr());
    assert_eq!(where_of(&second).get("big").map(String::as_str), Some("remote"), "{:?}", second.events);
    let (x, y) = (fs::read(a.path("big.bin")).unwrap(), fs::read(b.path("big.bin")).unwrap());
    assert_eq!(x.len(), 5_000_000);
    assert!(x == y, "the blob came back different");
    let hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&x))
    };
    // The blob went up with one ByteStream Write and came down with one Read, under its name.
    let log = server.log();
    assert_eq!(server.calls("Write"), 1, "{log}");
    assert_eq!(server.calls("Read"), 1, "{log}");
    for what in ["Write", "Read"] {
        let line = format!("{what} request completed. digest=\"{hash}/5000000\"");
        assert!(log.contains(&line), "no `{line}` in BuildGrid's log:\n{log}");
    }
}

#[test]
#[cfg_attr(
    gvbuild_no_reapi_python,
    ignore = "needs GVBUILD_TEST_REAPI_PYTHON, a venv with BuildGrid (CI sets it up)"
)]
fn a_server_without_sha256_is_refused_with_a_usage_error() {
    let server = BuildGrid::start_sha1();
    let p = project();
    let run = p.gvbuild(&["--remote-cache", &server.url()]).exit(2);
    let err = run.stderr();
    assert!(err.contains(&server.url()), "the error names the server: {err}");
    assert!(err.contains("SHA1") && err.contains("not SHA256"), "the error says what it offers: {err}");
    assert!(!p.exists("build/main"), "nothing was built");
    assert_eq!(server.calls("GetCapabilities"), 1, "{}", server.log());
    assert_eq!(server.calls("GetActionResult"), 0, "{}", server.log());
}

#[test]
#[cfg_attr(
    gvbuild_no_reapi_python,
    ignore = "needs GVBUILD_TEST_REAPI_PYTHON, a venv with BuildGrid (CI sets it up)"
)]
fn buildgrid_killed_in_the_middle_of_a_build_leaves_one_warning() {
    let mut server = BuildGrid::start();
    let a = project();
    with_remote(&a, &server.url(), &[]).0.success();
    let run = build_that_kills(&server.url(), server.pid());
    let w = warnings(&run);
    assert_eq!(w.len(), 1, "{}", run.stderr());
    assert!(w[0].contains("the build went on without it") && w[0].contains("gRPC status"), "{w:?}");
    server.stop();
}

#[test]
fn an_unreachable_grpc_port_builds_locally_with_one_warning() {
    let p = project();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("grpc://127.0.0.1:{port}/main");
    let (run, built) = with_remote(&p, &url, &[]);
    let run = run.success();
    assert_eq!(built.ran(), names(&["prog", "tree", "use", "stamp"]));
    let w = warnings(&run);
    assert_eq!(w.len(), 1, "{}", run.stderr());
    assert!(
        w[0].contains(&url) && w[0].contains("UNAVAILABLE") && w[0].contains("went on without it"),
        "{w:?}"
    );
}

#[test]
fn a_malformed_grpc_url_is_a_usage_error() {
    let p = project();
    // The diagnostic is wrapped to the terminal's width: compare without spaces and margins.
    let squash = |s: &str| s.chars().filter(|c| !c.is_whitespace() && *c != '|').collect::<String>();
    for (url, why) in [
        ("grpc://127.0.0.1", "the port is missing"),
        ("grpc://127.0.0.1:port/x", "`port` is not a port"),
        ("grpcs://user:s3cr3t@host:443", "credentials go in GVBUILD_REMOTE_HEADER"),
        ("grpc://h:1/a/blobs", "REAPI reserves `blobs`"),
    ] {
        let run = p.gvbuild(&["--remote-cache", url]).exit(2);
        let err = squash(&run.stderr());
        assert!(
            err.contains(&squash(why)) && err.contains("grpc://HOST:PORT[/INSTANCE]"),
            "{}",
            run.stderr()
        );
        assert!(!err.contains("s3cr3t"), "{}", run.stderr());
    }
    assert!(!p.exists(".gvbuild/logs"), "nothing ran");
}

/// Peak RSS in KiB and wall time of `gvbuild ARGS` in `p`, measured by /usr/bin/time.
fn measured(p: &Project, args: &[&str]) -> (u64, Duration, String) {
    let c = p.command(args);
    let program = c.get_program().to_owned();
    let mut timed = std::process::Command::new("/usr/bin/time");
    timed.arg("-f").arg("peak-rss-kib %M").arg(program).args(c.get_args());
    timed.current_dir(p.root());
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    let start = Instant::now();
    let out = timed.output().unwrap();
    let took = start.elapsed();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    let kib = err
        .lines()
        .filter_map(|l| l.strip_prefix("peak-rss-kib "))
        .next_back()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (kib, took, format!("{}{err}", String::from_utf8_lossy(&out.stdout)))
}

/// A 1 GiB output goes up and comes down streaming: gvbuild's peak RSS stays far below the
/// blob's size. Run by hand (`cargo test --release -- --ignored one_gib`): it writes ~5 GiB.
#[test]
#[ignore = "writes ~5 GiB; run by hand to measure (needs nginx and /usr/bin/time)"]
fn one_gib_output_streams_up_and_down_with_bounded_memory() {
    let server = Nginx::start();
    let yaml =
        "targets:\n  big:\n    outputs: [big.bin]\n    run: head -c 1073741824 /dev/urandom > big.bin\n";
    let base = Project::new().file("gevulot.yaml", yaml);
    let a = Project::new().file("gevulot.yaml", yaml);
    let b = Project::new().file("gevulot.yaml", yaml);
    let url = server.url();
    // The same build without a remote: hashing the output with mmap maps its pages (file-backed,
    // reclaimable), which counts toward RSS whatever the remote does.
    let (base_kib, _, _) = measured(&base, &[]);
    drop(base);
    let (up_kib, up_time, _) = measured(&a, &["--remote-cache", &url]);
    let (down_kib, down_time, events) = measured(&b, &["--json", "--remote-cache", &url]);
    let restore_ms =
        events.split("\"ms\":").nth(1).and_then(|r| r.split([',', '}']).next()).unwrap_or("?").to_string();
    assert_eq!(fs::metadata(b.path("big.bin")).unwrap().len(), 1 << 30);
    let sha = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        std::io::copy(&mut fs::File::open(a.path("big.bin")).unwrap(), &mut h).unwrap();
        hex::encode(h.finalize())
    };
    let curl_start = Instant::now();
    let curl = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", &format!("{url}/cas/{sha}")])
        .status();
    let curl_time = curl_start.elapsed();
    println!(
        "1 GiB: build without remote peak RSS {} MiB; build+upload peak RSS {} MiB in {:.1} s; download+restore peak RSS {} MiB in {:.1} s (the step {restore_ms} ms); curl -o /dev/null {:.1} s ({:?})",
        base_kib / 1024,
        up_kib / 1024,
        up_time.as_secs_f64(),
        down_kib / 1024,
        down_time.as_secs_f64(),
        curl_time.as_secs_f64(),
        curl.map(|s| s.success())
    );
    assert!(up_kib < base_kib + 100 * 1024, "up {up_kib} KiB, without a remote {base_kib} KiB");
    assert!(down_kib < 200 * 1024, "down {down_kib} KiB");
}

#[test]
#[cfg_attr(gvbuild_no_nginx, ignore = "needs nginx and openssl (CI installs them)")]
fn https_with_a_ca_file_and_a_client_certificate() {
    let certs = nginx::Certs::new();
    let server = Nginx::start_tls(&certs);
    shares_only_with_the_ca_and_the_client_certificate(&server.url(), &certs, None);
}

#[test]
#[cfg_attr(gvbuild_no_reapi_python, ignore = "needs GVBUILD_TEST_REAPI_PYTHON and openssl (CI sets them up)")]
fn grpcs_with_a_ca_file_and_a_client_certificate() {
    let certs = nginx::Certs::new();
    let server = BuildGrid::start_tls(&certs);
    shares_only_with_the_ca_and_the_client_certificate(
        &server.url(),
        &certs,
        Some(["certificate", "gRPC status"]),
    );
}

/// Two clones share through the TLS server at `url` given the CA file and the client
/// certificate of `certs`. Without the CA file the server's certificate is not trusted; without
/// the client certificate the server refuses: each is one warning (saying `why`, in that
/// order, and that the build went on), and the build is still right.
fn shares_only_with_the_ca_and_the_client_certificate(
    url: &str,
    certs: &nginx::Certs,
    why: Option<[&str; 2]>,
) {
    let (ca, cert, key) = (certs.path("ca.pem"), certs.path("client.pem"), certs.path("client.key"));
    let tls: Vec<&str> = vec![
        "--remote-ca",
        ca.to_str().unwrap(),
        "--remote-client-cert",
        cert.to_str().unwrap(),
        "--remote-client-key",
        key.to_str().unwrap(),
    ];
    let a = project();
    let (run, _) = with_remote(&a, url, &tls);
    let run = run.success();
    assert!(warnings(&run).is_empty(), "{}", run.stderr());
    let b = clone_of(&a);
    let (run, second) = with_remote(&b, url, &tls);
    run.success();
    assert_eq!(second.restored(), names(&CACHED));
    assert_eq!(outputs(&a), outputs(&b));

    for (i, args) in [&tls[2..], &tls[..2]].into_iter().enumerate() {
        let c = clone_of(&a);
        let (run, built) = with_remote(&c, url, args);
        let run = run.success();
        assert_eq!(built.ran(), names(&["prog", "tree", "use", "stamp"]));
        let w = warnings(&run);
        assert_eq!(w.len(), 1, "{}", run.stderr());
        if let Some(why) = why {
            assert!(w[0].contains(why[i]) && w[0].contains("went on without it"), "{w:?}");
        }
        assert_eq!(outputs(&a), outputs(&c));
    }
}

#[test]
#[cfg_attr(
    gvbuild_no_reapi_python,
    ignore = "needs GVBUILD_TEST_REAPI_PYTHON, a venv with BuildGrid (CI sets it up)"
)]
fn grpc_headers_are_sent_as_metadata_and_never_printed() {
    // This BuildGrid refuses every call without a valid `authorization: Bearer JWT`.
    let server = BuildGrid::start_jwt();
    let token = server.token();
    let a = project();
    let build = |p: &Project, auth: Option<&str>, args: &[&str]| {
        let mut c = p.command(&["--json", "--explain", "--remote-cache", &server.url()]);
        c.args(args);
        if let Some(v) = auth {
            c.env("GVBUILD_REMOTE_HEADER", format!("Authorization: {v}"))
                .env("GVBUILD_REMOTE_HEADER_1", "X-Team: compilers");
        }
        let out = c.output().unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{text}");
        assert!(!text.contains(&token) && !text.contains("s3cr3t"), "a header value was printed:\n{text}");
        text
    };
    // Without the header, and with a wrong token: refused, one warning each, no value shown.
    let text = build(&a, None, &[]);
    assert!(text.contains("UNAUTHENTICATED") || text.contains("PERMISSION_DENIED"), "{text}");
    let text = build(&a, Some("Bearer s3cr3t-not-a-jwt"), &["-B"]);
    assert!(text.contains("went on without it"), "{text}");
    // With it, the first clone fills the cache and the second restores from it.
    build(&a, Some(&format!("Bearer {token}")), &["-B"]);
    let b = clone_of(&a);
    let text = build(&b, Some(&format!("Bearer {token}")), &[]);
    assert!(text.contains(r#""where":"remote""#), "{text}");
    assert_eq!(outputs(&a), outputs(&b));
}

#[test]
fn a_grpc_server_that_never_answers_times_out_and_the_build_goes_on() {
    // A port that accepts connections and then says nothing, not even HTTP/2's preface.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    let p = project();
    let start = Instant::now();
    let (run, built) = with_remote(&p, &format!("grpc://127.0.0.1:{port}"), &["--remote-timeout", "1"]);
    let run = run.success();
    assert_eq!(built.ran(), names(&["prog", "tree", "use", "stamp"]));
    let w = warnings(&run);
    assert_eq!(w.len(), 1, "{}", run.stderr());
    assert!(w[0].contains("no answer within 1 s"), "{w:?}");
    assert!(start.elapsed() < Duration::from_secs(20), "took {:?}", start.elapsed());
}

// Issue 20 (load): four clones build the 300-step graph at once against one cache-only
// BuildGrid with BuildGrid's smallest pool (5), and a fifth builds on a local cache that
// `gvbuild cache gc --max-size 0` empties over and over beside it. Every build is right (its
// outputs equal a local build's), warns of nothing, and a later clone with an empty local
// cache restores all 300 steps from the server.
#[test]
#[cfg_attr(
    gvbuild_no_reapi_python,
    ignore = "needs GVBUILD_TEST_REAPI_PYTHON, a venv with BuildGrid (CI sets it up)"
)]
fn four_clones_at_once_on_a_small_buildgrid_and_gc_beside_a_build_all_build_right() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let server = BuildGrid::start_pool(Version::V0_4, 5);
    let reference = Project::new();
    let out = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/gen.py"))
        .args(["--layers", "10", "--width", "30"])
        .arg(reference.root())
        .output()
        .unwrap();
    assert!(out.status.success(), "gen.py: {}", String::from_utf8_lossy(&out.stderr));
    let clone = || {
        let p = Project::new();
        copy_tree(reference.root(), p.root());
        p
    };
    let tree = |p: &Project| -> BTreeMap<String, Vec<u8>> {
        fs::read_dir(p.path("out"))
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), fs::read(e.path()).unwrap()))
            .collect()
    };
    let clones: Vec<Project> = (0..5).map(|_| clone()).collect();
    reference.build(&[]);
    let want = tree(&reference);
    assert_eq!(want.keys().filter(|k| k.ends_with(".txt")).count(), 300);
    let url = server.url();
    let stop_gc = AtomicBool::new(false);
    std::thread::scope(|s| {
        let builds: Vec<_> = clones.iter().map(|p| s.spawn(|| with_remote(p, &url, &["-j2"]))).collect();
        // The fifth clone's local cache, emptied while it builds.
        let gc_cache = clones[4].cache.path().to_path_buf();
        let stop_gc = &stop_gc;
        let gc = s.spawn(move || {
            let mut runs = 0;
            while !stop_gc.load(Ordering::SeqCst) {
                let st = std::process::Command::new(crate::support::bin())
                    .args(["cache", "gc", "--max-size", "0", "--cache-dir"])
                    .arg(&gc_cache)
                    .output()
                    .unwrap();
                assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
                runs += 1;
            }
            runs
        });
        let results: Vec<_> = builds.into_iter().map(|b| b.join()).collect();
        stop_gc.store(true, Ordering::SeqCst);
        assert!(gc.join().unwrap() > 0);
        for (i, r) in results.into_iter().enumerate() {
            let (run, built) = r.unwrap();
            let run = run.success();
            assert!(warnings(&run).is_empty(), "clone {i}: {}", run.stderr());
            assert_eq!(built.ran().len() + built.restored().len(), 300, "clone {i}");
        }
    });
    for (i, p) in clones.iter().enumerate() {
        assert!(tree(p) == want, "clone {i}'s outputs differ from a local build's");
    }
    let later = clone();
    let (run, built) = with_remote(&later, &url, &[]);
    run.success();
    assert!(built.ran().is_empty(), "{:?}", built.ran());
    assert_eq!(built.restored().len(), 300);
    assert!(tree(&later) == want);
}

// Regression (issue 20): `-q` still printed "waiting for N upload(s)" (and now the busy line);
// -q prints failures only.
#[test]
fn quiet_prints_nothing_about_uploads_or_a_busy_server() {
    let server = BadServer::start(Mode::Busy(429, None));
    let p = project();
    let (run, built) = with_remote(&p, &server.url(), &["-q", "-j1"]);
    let run = run.success();
    assert_eq!(built.ran().len(), 4);
    assert!(!server.stored().is_empty(), "the uploads happened");
    assert_eq!(run.stderr(), "", "-q printed something");
}
