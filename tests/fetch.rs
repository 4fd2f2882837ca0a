//! `fetch` steps: download (http or file://), verify a pinned sha256/blake3, keep the download in the
//! cache by checksum, extract (tar, tar.gz, tar.xz, tar.zst, zip, sniffed from content) failing
//! closed on hostile entries, and `gvbuild hash URL` to pin. Archives are built in memory
//! (`fetch/archives.rs`) and served by a tiny HTTP server on 127.0.0.1 (`fetch/http.rs`) that
//! counts requests, so "downloaded once" and "downloaded nothing" are asserted, not assumed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod archives;
pub mod http;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use self::archives::*;
use self::http::*;
use crate::support::*;

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn blake3(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// `sha256: <hex of bytes>`, the line a fetch pins.
fn pin(bytes: &[u8]) -> String {
    format!("sha256: {}", sha256(bytes))
}

/// One fetch target, as YAML lines to put under `targets:`. `hash` is a whole line
/// (`sha256: ...`, `blake3: ...`, or "" for none); `extract` a flow mapping or None.
fn target(name: &str, url: &str, hash: &str, extract: Option<&str>, into: &str) -> String {
    let mut s = format!("  {name}:\n    fetch:\n      url: \"{url}\"\n");
    if !hash.is_empty() {
        s.push_str(&format!("      {hash}\n"));
    }
    if let Some(e) = extract {
        s.push_str(&format!("      extract: {e}\n"));
    }
    s.push_str(&format!("      into: {into}\n"));
    s
}

fn yaml(targets: &[String]) -> String {
    let mut s = String::from("targets:\n");
    for t in targets {
        s.push_str(t);
    }
    s
}

/// The usual project: target `assets` fetching `url`, `strip_components: 1`, into build/assets.
fn assets_project(url: &str, bytes: &[u8]) -> Project {
    Project::new().file(
        "gevulot.yaml",
        &yaml(&[target("assets", url, &pin(bytes), Some("{ strip_components: 1 }"), "build/assets")]),
    )
}

/// A clone of the project without its outputs (build/), sharing the cache: a fresh checkout.
fn checkout(p: &Project) -> Project {
    let c = p.clone_to_new_folder();
    if c.exists("build") {
        fs::remove_dir_all(c.path("build")).unwrap();
    }
    c
}

/// Names in the folder `rel` of the project, sorted; empty when it does not exist.
fn listing(p: &Project, rel: &str) -> Vec<String> {
    let Ok(rd) = fs::read_dir(p.path(rel)) else { return Vec::new() };
    let mut v: Vec<String> = rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn mode(p: &Project, rel: &str) -> u32 {
    fs::symlink_metadata(p.path(rel)).unwrap().permissions().mode() & 0o7777
}

/// The package's files under `dir` (already stripped of `pkg-1.0/`), the symlink as a symlink.
fn assert_pkg_at(p: &Project, dir: &str) {
    assert_eq!(p.read(&format!("{dir}/README")), PKG_README);
    assert_eq!(p.read(&format!("{dir}/bin/tool")), PKG_TOOL);
    assert_ne!(mode(p, &format!("{dir}/bin/tool")) & 0o111, 0, "bin/tool keeps its executable bit");
    assert_eq!(p.read(&format!("{dir}/bin/tool-again")), PKG_TOOL, "a hard link inside the archive");
    assert_eq!(p.read(&format!("{dir}/lib/libfoo.so.1")), PKG_LIB);
    let link = fs::read_link(p.path(&format!("{dir}/lib/libfoo.so")));
    assert_eq!(link.ok().as_deref(), Some(std::path::Path::new("libfoo.so.1")), "lib/libfoo.so is a symlink");
    assert_eq!(p.read(&format!("{dir}/lib/libfoo.so")), PKG_LIB);
}

/// A failed fetch left nothing at `into` and nothing (no staging folder, no temp file) beside it.
fn assert_nothing_left(p: &Project, into: &str) {
    assert!(!p.exists(into), "{into} exists after a failed fetch");
    let parent = into.rsplit_once('/').map_or(".", |(d, _)| d);
    if parent != "." {
        assert_eq!(listing(p, parent), Vec::<String>::new(), "leftovers beside {into}");
    }
}

// ---------------------------------------------------------------------------------------------
// Download, verify, extract

#[test]
fn fetch_downloads_verifies_and_extracts_with_strip_components() {
    let s = Server::start();
    let tgz = pkg_tar_gz();
    s.serve("/pkg.tar.gz", tgz.clone());
    let p = assets_project(&s.url("/pkg.tar.gz"), &tgz);

    let b = p.build(&[]);
    assert_eq!(b.ran(), names(&["assets"]), "{b:?}");
    assert_pkg_at(&p, "build/assets");
    assert_eq!(listing(&p, "build/assets"), ["README", "bin", "lib"]);
    assert_eq!(listing(&p, "build/assets/bin"), ["tool", "tool-again"]);
    assert_eq!(listing(&p, "build"), ["assets"], "no staging leftovers");
    assert_eq!(s.requests("/pkg.tar.gz"), 1);

    let b = p.build(&[]);
    assert_eq!(b.fresh(), names(&["assets"]));
    assert_eq!(s.requests("/pkg.tar.gz"), 1, "a fresh fetch downloads nothing");
}

#[test]
fn without_extract_the_download_itself_is_saved_at_into() {
    let s = Server::start();
    let bytes = b"a plain file, not an archive\n".to_vec();
    s.serve("/tool.bin", bytes.clone());
    let p = Project::new().file(
        "gevulot.yaml",
        &yaml(&[target("tool", &s.url("/tool.bin"), &pin(&bytes), None, "build/tool.bin")]),
    );
    assert_eq!(p.build(&[]).ran(), names(&["tool"]));
    assert_eq!(fs::read(p.path("build/tool.bin")).unwrap(), bytes);
    assert!(p.path("build/tool.bin").is_file());
    assert_eq!(listing(&p, "build"), ["tool.bin"]);

    // An archive without `extract` is saved as is, not unpacked.
    let tgz = pkg_tar_gz();
    s.serve("/pkg.tar.gz", tgz.clone());
    p.write(
        "gevulot.yaml",
        &yaml(&[target("raw", &s.url("/pkg.tar.gz"), &pin(&tgz), None, "build/pkg.tgz")]),
    );
    assert_eq!(p.build(&[]).ran(), names(&["raw"]));
    assert_eq!(fs::read(p.path("build/pkg.tgz")).unwrap(), tgz);
}

#[test]
fn a_blake3_pin_works_like_sha256() {
    let s = Server::start();
    let tgz = pkg_tar_gz();
    s.serve("/pkg.tar.gz", tgz.clone());
    let p = Project::new().file(
        "gevulot.yaml",
        &yaml(&[target(
            "assets",
            &s.url("/pkg.tar.gz"),
            &format!("blake3: {}", blake3(&tgz)),
            Some("{ strip_components: 1 }"),
            "build/assets",
        )]),
    );
    assert_eq!(p.build(&[]).ran(), names(&["assets"]));
    assert_pkg_at(&p, "build/assets");
    assert_eq!(p.build(&[]).fresh(), names(&["assets"]));
    assert_eq!(s.requests("/pkg.tar.gz"), 1);
}

#[test]
fn every_archive_format_is_sniffed_from_its_content_not_its_name() {
    let s = Server::start();
    let tar = pkg_tar();
    // Each served under a name that lies about it.
    let formats: [(&str, &str, Vec<u8>); 5] = [
        ("targz", "/looks-like.zip", gzip(&tar)),
        ("zip", "/looks-like.tar.gz", pkg_zip()),
        ("tarxz", "/looks-like.bin", xz(&tar)),
        ("tarzst", "/looks-like.tar", zstd(&tar)),
        ("tar", "/looks-like.tgz", tar.clone()),
    ];
    let mut targets = Vec::new();
    for (name, path, bytes) in &formats {
        s.serve(path, bytes.clone());
        targets.push(target(
            name,
            &s.url(path),
            &pin(bytes),
            Some("{ strip_components: 1 }"),
            &format!("build/{name}"),
        ));
    }
    let p = Project::new().file("gevulot.yaml", &yaml(&targets));
    let b = p.build(&[]);
    assert_eq!(b.ran(), names(&["tar", "targz", "tarxz", "tarzst", "zip"]), "{b:?}");
    for (name, path, _) in &formats {
        assert_eq!(s.requests(path), 1, "{name}");
        let dir = format!("build/{name}");
        if *name == "zip" {
            // A zip symlink may come out as a link or a copy; its bytes must be right either way.
            assert_eq!(p.read(&format!("{dir}/README")), PKG_README);
            assert_eq!(p.read(&format!("{dir}/bin/tool")), PKG_TOOL);
            assert_ne!(mode(&p, &format!("{dir}/bin/tool")) & 0o111, 0, "zip keeps the executable bit");
            assert_eq!(p.read(&format!("{dir}/lib/libfoo.so")), PKG_LIB);
        } else {
            assert_pkg_at(&p, &dir);
        }
    }
    assert_eq!(p.build(&[]).fresh(), names(&["tar", "targz", "tarxz", "tarzst", "zip"]));
}

#[test]
fn without_strip_components_the_top_folder_is_kept() {
    let s = Server::start();
    let tgz = pkg_tar_gz();
    s.serve("/pkg.tar.gz", tgz.clone());
    let p = Project::new().file(
        "gevulot.yaml",
        &yaml(&[target(
            "assets",
            &s.url("/pkg.tar.gz"),
            &pin(&tgz),
            Some("{ strip_components: 0 }"),
            "build/assets",
        )]),
    );
    p.build(&[]);
    assert_eq!(listing(&p, "build/assets"), [PKG_TOP]);
    assert_pkg_at(&p, "build/assets/pkg-1.0");
}

#[test]
fn a_run_step_can_use_what_a_fetch_extracted() {
    let s = Server::start();
    let tgz = pkg_tar_gz();
    s.serve("/pkg.tar.gz", tgz.clone());
    let fetch =
        target("assets", &s.url("/pkg.tar.gz"), &pin(&tgz), Some("{ strip_components: 1 }"), "build/assets");
    let run = "  use:\n    deps: [assets]\n    outputs: [out/readme]\n    run: cat build/assets/README > out/readme\n";
    let p = Project::new().file("gevulot.yaml", &yaml(&[fetch, run.to_string()]));
    assert_eq!(p.build(&[]).ran(), names(&["assets", "use"]));
    assert_eq!(p.read("out/readme"), PKG_README);

    // Only the URL changes (a mirror): nothing reruns, nothing is downloaded.
    let yaml_text = p.read("gevulot.yaml");
    p.write("gevulot.yaml", &yaml_text.replace(&s.url("/pkg.tar.gz"), &s.url("/mirror/pkg.tar.gz")));
    let b = p.build(&[]);
    assert_eq!(b.fresh(), names(&["assets", "use"]), "{b:?}");
    assert_eq!(s.total_requests(), 1);
}

#[test]
fn two_targets_pinning_the_same_download_both_succeed() {
    let s = Server::start();
    let tgz = pkg_tar_gz();
    s.serve("/pkg.tar.gz", tgz.clone());
    let url = s.url("/pkg.tar.gz");
    let p = Project::new().file(
        "gevulot.yaml",
        &yaml(&[
            target("one", &url, &pin(&tgz), Some("{ strip_components: 1 }"), "build/one"),
            target("two", &url, &pin(&tgz), Some("{ strip_components: 0 }"), "build/two"),
        ]),
    );
    let b = p.build(&["-j2"]);
    assert_eq!(b.ran(), names(&["one", "two"]));
    assert_pkg_at(&p, "build/one");
    assert_pkg_at(&p, "build/two/pkg-1.0");
    let n = s.requests("/pkg.tar.gz");
    assert!((1..=2).contains(&n), "{n} downloads");
}

// ---------------------------------------------------------------------------------------------
// The key is the hash, not the URL; downloads are cached by checksum

/// The GPU example's way: URL and hash are vars the user pins with `--set`.
#[test]
fn url_and_hash_can_come_from_vars_set_on_the_command_line() {
    let s = Server::start();
    let tgz = pkg_tar_gz();
    s.serve("/pkg.tar.gz", tgz.clone());
    s.serve("/mirror/pkg.tar.gz", tgz.clone());
    let p = Project::new().file(
        "gevulot.yaml",
        &y(r#"
        vars:
          assets_url: ~
          assets_sha256: ~
        targets:
          assets:
            fetch:
              url: "${assets_url}"
              sha256: "${assets_sha256}"
              extract: { strip_components: 1 }
              into: build/assets
          other:
            outputs: [out/other]
            run: echo other > out/other
        "#),
    );
    // Unset, and not built: fine.
    assert_eq!(p.build(&["other"]).ran(), names(&["other"]));
    // Unset and built: refused, pointing at --set.
    p.gvbuild(&[]).exit(2).stderr_has("--set assets_");

    let url = format!("assets_url={}", s.url("/pkg.tar.gz"));
    let hash = format!("assets_sha256={}", sha256(&tgz));
    assert_eq!(p.build(&["--set", &url, "--set", &hash]).ran(), names(&["assets"]));
    assert_pkg_at(&p, "build/assets");

    let mirror = format!("assets_url={}", s.url("/mirror/pkg.tar.gz"));
    assert_eq!(p.build(&["--set", &mirror, "--set", &hash]).fresh(), names(&["assets", "other"]));
    assert_eq!(s.total_requests(), 1);

    // A wrong pinned value is a malformed hash: refused before any download.
    p.gvbuild(&["--set", &url, "--set", "assets_sha256=0123"]).exit(2);
    assert_eq!(s.total_requests(), 1);
}

#[test]
fn two_builds_at_once_on_one_cache_fetching_the_same_archive_both_succeed() {
    let s = Server::start();
    let tgz = pkg_tar_gz();
    s.serve("/pkg.tar.gz", tgz.clone());
    let p = assets_project(&s.url("/pkg.tar.gz"), &tgz);
    let q = Project::with_cache(&p.cache).file("gevulot.yaml", &p.read("gevulot.yaml"));
    let children: Vec<_> = [&p, &q]
        .iter()
        .map(|x| {
            x.command(&["--json"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (child, x) in children.into_iter().zip([&p, &q]) {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_pkg_at(x, "build/assets");
    }
    let n = s.requests("/pkg.tar.gz");
    assert!((1..=2).contains(&n), "{n} downloads");
}

#[test]
fn changing_only_the_url_keeps_the_fetch_fresh_and_a_clone_restores_it_offline() {
    let s = Server::start();
    let tgz = pkg_tar_gz();
    s.serve("/pkg.tar.gz", tgz.clone());
    let p = assets_project(&s.url("/pkg.tar.gz"), &tgz);
    let b = p.build(&[]);
    let key = b.key("assets");
    assert!(key.is_some(), "a fetch step reports its key: {b:?}");

    // A URL where nothing listens: any download attempt would fail the build.
    let dead = refused_url("/pkg.tar.gz");
    let yaml_text = p.read("gevulot.yaml");
    p.write("gevulot.yaml", &yaml_text.replace(&s.url("/pkg.tar.gz"), &dead));
    let b = p.build(&[]);
    assert_eq!(b.fresh(), names(&["assets"]), "{b:?}");
    assert_eq!(b.key("assets"), key, "the URL is not part of the key");

    let c = checkout(&p);
    let b = c.build(&[]);
    assert_eq!(b.restored(), names(&["assets"]), "{b:?}");
    assert_eq!(b.key("assets"), key);
    assert_pkg_at(&c, "build/assets");
    assert_eq!(s.total_requests(), 1, "the clone downloaded nothing");
}

#[test]
fn a_deleted_or_edited_extraction_is_restored_without_downloading() {
    let s = Server::start();
    let tgz = pkg_tar_gz();
    s.serve("/pkg.tar.gz", tgz.clone());
    let p = assets_project(&s.url("/pkg.tar.gz"), &tgz);
    p.build(&[]);

    p.write("build/assets/README", "scribbled\n");
    let b = p.build(&[]);
    assert_eq!(b.restored(), names(&["assets"]), "{b:?}");
    assert_pkg_at(&p, "build/assets");

    fs::remove_dir_all(p.path("build/assets")).unwrap();
    let b = p.build(&[]);
    assert_eq!(b.restored(), names(&["assets"]), "{b:?}");
    assert_pkg_at(&p, "build/assets");
    assert_eq!(s.requests("/pkg.tar.gz"), 1);
}

#[test]
fn downloads_are_kept_by_checksum_so_new_extract_options_download_nothing() {
    let s = Server::start();
    let tgz = pkg_tar_gz();
    s.serve("/pkg.tar.gz", tgz.clone());
    let url = s.url("/pkg.tar.gz");
    let p = assets_project(&url, &tgz);
    p.build(&[]);
    assert_eq!(s.requests("/pkg.tar.gz"), 1);

    // Forget the project's state and outputs; change the extract options: a new key, so the step
    // runs, but the download comes from the cache.
    fs::remove_dir_all(p.path("build")).unwrap();
    fs::remove_dir_all(p.path(".gvbuild")).unwrap();
    p.write(
        "gevulot.yaml",
        &yaml(&[target("assets", &url, &pin(&tgz), Some("{ strip_components: 0 }"), "build/assets")]),
    );
    let b = p.build(&[]);
    assert_eq!(b.ran(), names(&["assets"]), "{b:?}");
    assert_pkg_at(&p, "build/assets/pkg-1.0");
    assert_eq!(s.requests("/pkg.tar.gz"), 1, "the archive was downloaded again");

    // A new `into` is a new key too; still no download, even with the server gone.
    drop(s);
    let dead = refused_url("/pkg.tar.gz");
    p.write(
        "gevulot.yaml",
        &yaml(&[target("assets", &dead, &pin(&tgz), Some("{ strip_components: 1 }"), "build/elsewhere")]),
    );
    let b = p.build(&[]);
    assert_eq!(b.ran(), names(&["assets"]), "{b:?}");
    assert_pkg_at(&p, "build/elsewhere");
}

#[test]
fn the_download_cache_is_shared_with_other_projects() {
    let s = Server::start();
    let tgz = pkg_tar_gz();
    s.serve("/pkg.tar.gz", tgz.clone());
    let p = assets_project(&s.url("/pkg.tar.gz"), &tgz);
    p.build(&[]);

    // Another project on the same cache, another URL (dead), other extract options and `into`.
    let q = Project::with_cache(&p.cache).file(
        "gevulot.yaml",
        &yaml(&[target(
            "vendor",
            &refused_url("/x.tgz"),
            &pin(&tgz),
            Some("{ strip_components: 1, max_entries: 100 }"),
            "third_party/pkg",
        )]),
    );
    let b = q.build(&[]);
    assert_eq!(b.ran(), names(&["vendor"]), "{b:?}");
    assert_pkg_at(&q, "third_party/pkg");
    assert_eq!(s.total_requests(), 1);
}

#[test]
fn a_new_hash_downloads_the_new_archive() {
    let s = Server::start();
    let v1 = pkg_tar_gz();
    let v2 = gzip(&Tar::new().dir("pkg-2.0/").file("pkg-2.0/README", b"version two\n", 0o644).finish());
    s.serve("/pkg-1.tar.gz", v1.clone());
    s.serve("/pkg-2.tar.gz", v2.clone());
    let p = assets_project(&s.url("/pkg-1.tar.gz"), &v1);
    let k1 = p.build(&[]).key("assets");

    p.write(
        "gevulot.yaml",
        &yaml(&[target(
            "assets",
            &s.url("/pkg-2.tar.gz"),
            &pin(&v2),
            Some("{ strip_components: 1 }"),
            "build/assets",
        )]),
    );
    let b = p.build(&[]);
    assert_eq!(b.ran(), names(&["assets"]));
    assert_ne!(b.key("assets"), k1);
    assert_eq!(listing(&p, "build/assets"), ["README"], "the old files are gone");
    assert_eq!(p.read("build/assets/README"), "version two\n");
    assert_eq!(s.requests("/pkg-2.tar.gz"), 1);

    // Back to v1: restored from the cache.
    p.write(
        "gevulot.yaml",
        &yaml(&[target(
            "assets",
            &s.url("/pkg-1.tar.gz"),
            &pin(&v1),
            Some("{ strip_components: 1 }"),
            "build/assets",
        )]),
    );
    assert_eq!(p.build(&[]).restored(), names(&["assets"]));
    assert_pkg_at(&p, "build/assets");
    assert_eq!(s.requests("/pkg-1.tar.gz"), 1);
}

// ---------------------------------------------------------------------------------------------
// Verification and network failures

#[test]
fn a_wrong_hash_fails_naming_url_expected_and_actual_and_caches_nothing() {
    let s = Server::start();
    let tgz = pkg_tar_gz();
    s.serve("/pkg.tar.gz", tgz.clone());
    let url = s.url("/pkg.tar.gz");
    let expected = sha256(b"some other archive");
    let actual = sha256(&tgz);
    let p = Project::new().file(
        "gevulot.yaml",
        &yaml(&[target(
            "assets",
            &url,
            &format!("sha256: {expected}"),
            Some("{ strip_components: 1 }"),
            "build/assets",
        )]),
    );

    let check = |p: &Project, requests: usize| {
        let (r, b) = p.build_any(&[]);
        let r = r.exit(1).stderr_has(&url).stderr_has(&expected).stderr_has(&actual);
        assert_eq!(b.with("failed"), names(&["assets"]), "{}", r.stderr());
        assert_nothing_left(p, "build/assets");
        assert_eq!(s.requests("/pkg.tar.gz"), requests, "nothing was cached, so it downloads again");
    };
    check(&p, 1);
    check(&p, 2);
    let c = checkout(&p);
    check(&c, 3);
}

#[test]
fn a_wrong_blake3_fails_naming_both_hashes_and_a_file_saved_as_is_is_not_written() {
    let s = Server::start();
    let bytes = b"payload\n".to_vec();
    s.serve("/payload", bytes.clone());
    let url = s.url("/payload");
    let expected = blake3(b"not the payload");
    let p = Project::new().file(
        "gevulot.yaml",
        &yaml(&[target("payload", &url, &format!("blake3: {expected}"), None, "build/payload")]),
    );
    let (r, _) = p.build_any(&[]);
    r.exit(1).stderr_has(&url).stderr_has(&expected).stderr_has(&blake3(&bytes));
    assert_nothing_left(&p, "build/payload");
}

#[test]
fn not_found_fails_naming_the_url_and_the_status() {
    let s = Server::start();
    let url = s.url("/missing.tar.gz");
    let p = assets_project(&url, b"whatever");
    let (r, b) = p.build_any(&[]);
    r.exit(1).stderr_has(&url).stderr_has("404");
    assert_eq!(b.with("failed"), names(&["assets"]));
    assert_nothing_left(&p, "build/assets");
    assert_eq!(s.requests("/missing.tar.gz"), 1, "a 404 is not transient: no retries");
}

#[test]
fn a_refused_connection_fails_clearly_and_quickly() {
    let url = refused_url("/pkg.tar.gz");
    let host_port = url.trim_start_matches("http://").trim_end_matches("/pkg.tar.gz").to_string();
    let p = assets_project(&url, b"whatever");
    let t = Instant::now();
    let (r, b) = p.build_any(&[]);
    let took = t.elapsed();
    r.exit(1).stderr_has(&host_port);
    assert_eq!(b.with("failed"), names(&["assets"]));
    assert!(took < Duration::from_secs(30), "took {took:?}, retries included");
    assert_nothing_left(&p, "build/assets");
}

#[test]
fn transient_server_errors_are_retried() {
    let s = Server::start();
    let tgz = pkg_tar_gz();
    s.serve("/pkg.tar.gz", tgz.clone());
    s.fail_first("/pkg.tar.gz", 500, 2);
    let p = assets_project(&s.url("/pkg.tar.gz"), &tgz);
    let t = Instant::now();
    let b = p.build(&[]);
    assert_eq!(b.ran(), names(&["assets"]));
    assert_pkg_at(&p, "build/assets");
    assert_eq!(s.requests("/pkg.tar.gz"), 3, "two 500s, then the download");
    assert!(t.elapsed() < Duration::from_secs(30), "took {:?}", t.elapsed());
}

#[test]
fn a_server_that_keeps_failing_is_given_up_on_after_bounded_retries() {
    let s = Server::start();
    let tgz = pkg_tar_gz();
    s.serve("/pkg.tar.gz", tgz.clone());
    s.fail_first("/pkg.tar.gz", 503, usize::MAX);
    let url = s.url("/pkg.tar.gz");
    let p = assets_project(&url, &tgz);
    let t = Instant::now();
    let (r, _) = p.build_any(&[]);
    let took = t.elapsed();
    r.exit(1).stderr_has(&url).stderr_has("503");
    let n = s.requests("/pkg.tar.gz");
    assert!((2..=10).contains(&n), "{n} requests: retried, but boundedly");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert_nothing_left(&p, "build/assets");
}

#[test]
fn a_truncated_download_fails_and_leaves_nothing() {
    let s = Server::start();
    let tgz = pkg_tar_gz();
    s.serve("/pkg.tar.gz", tgz.clone());
    s.truncate("/pkg.tar.gz");
    let url = s.url("/pkg.tar.gz");
    let p = assets_project(&url, &tgz);
    let t = Instant::now();
    let (r, _) = p.build_any(&[]);
    r.exit(1).stderr_has(&url);
    assert!(t.elapsed() < Duration::from_secs(30), "took {:?}", t.elapsed());
    assert_nothing_left(&p, "build/assets");
}

// ---------------------------------------------------------------------------------------------
// file:// URLs

#[test]
fn file_urls_work_like_http() {
    let dl = tempfile::tempdir().unwrap();
    let tgz = pkg_tar_gz();
    let archive = dl.path().join("pkg.tar.gz");
    fs::write(&archive, &tgz).unwrap();
    let url = format!("file://{}", archive.display());
    assert!(url.starts_with("file:///"));

    let p = assets_project(&url, &tgz);
    assert_eq!(p.build(&[]).ran(), names(&["assets"]));
    assert_pkg_at(&p, "build/assets");
    assert_eq!(p.build(&[]).fresh(), names(&["assets"]));

    // Kept in the cache by checksum: the file may go away.
    fs::remove_file(&archive).unwrap();
    let c = checkout(&p);
    assert_eq!(c.build(&[]).restored(), names(&["assets"]));
    assert_pkg_at(&c, "build/assets");
}

#[test]
fn a_missing_file_url_or_a_wrong_hash_on_one_fails() {
    let dl = tempfile::tempdir().unwrap();
    let missing = dl.path().join("missing.tar.gz");
    let p = assets_project(&format!("file://{}", missing.display()), b"whatever");
    let (r, _) = p.build_any(&[]);
    r.exit(1).stderr_has(missing.to_str().unwrap());
    assert_nothing_left(&p, "build/assets");

    let archive = dl.path().join("pkg.tar.gz");
    fs::write(&archive, pkg_tar_gz()).unwrap();
    let expected = sha256(b"nope");
    let p = Project::new().file(
        "gevulot.yaml",
        &yaml(&[target(
            "assets",
            &format!("file://{}", archive.display()),
            &format!("sha256: {expected}"),
            Some("{ strip_components: 1 }"),
            "build/assets",
        )]),
    );
    let (r, _) = p.build_any(&[]);
    r.exit(1).stderr_has(&expected).stderr_has(&sha256(&pkg_tar_gz()));
    assert_nothing_left(&p, "build/assets");
}

// ---------------------------------------------------------------------------------------------
// Hostile archives: refused with the entry's name, nothing extracted, nothing left beside `into`

/// Fetch `archive` into build/assets (no stripping): the build fails naming `entry`, and
/// nothing is extracted anywhere.
fn assert_refused(archive: Vec<u8>, entry: &str, p: Project) {
    let s = Server::start();
    s.serve("/evil", archive.clone());
    p.write(
        "gevulot.yaml",
        &yaml(&[target(
            "assets",
            &s.url("/evil"),
            &pin(&archive),
            Some("{ strip_components: 0 }"),
            "build/assets",
        )]),
    );
    let (r, b) = p.build_any(&[]);
    let r = r.exit(1).stderr_has(entry);
    assert_eq!(b.with("failed"), names(&["assets"]), "{}", r.stderr());
    assert_nothing_left(&p, "build/assets");
    // Nothing escaped either.
    let everything: Vec<String> = walkdir::WalkDir::new(p.root())
        .into_iter()
        .map(|e| e.unwrap().path().strip_prefix(p.root()).unwrap().to_string_lossy().into_owned())
        .filter(|e| !e.starts_with(".gvbuild"))
        .collect();
    assert!(
        everything.iter().all(|e| !e.contains("evil") && !e.contains("escaped") && !e.contains("ok.txt")),
        "files were written: {everything:?}"
    );
    // The same refusal from the cache, on a second build.
    p.build_any(&[]).0.exit(1).stderr_has(entry);
    assert_nothing_left(&p, "build/assets");
}

fn refuses_tar(kind: Hostile) {
    let p = Project::new();
    let abs = p.path("abs-evil");
    let (tar, entry) = hostile_tar(kind, abs.to_str().unwrap());
    let short = entry.rsplit('/').next().unwrap().to_string();
    assert_refused(gzip(&tar), &short, p);
    assert!(!abs.exists(), "{} was written", abs.display());
    let _ = fs::remove_file(&abs);
}

macro_rules! hostile_tar_tests {
    ($($name:ident: $kind:expr,)*) => {
        $(
            #[test]
            fn $name() {
                refuses_tar($kind);
            }
        )*
    };
}

hostile_tar_tests! {
    hostile_tar_entry_with_dotdot_is_refused: Hostile::DotDot,
    hostile_tar_entry_with_dotdot_inside_its_path_is_refused: Hostile::DotDotInside,
    hostile_tar_entry_with_an_absolute_path_is_refused: Hostile::Absolute,
    hostile_tar_symlink_pointing_outside_is_refused: Hostile::SymlinkOutside,
    hostile_tar_symlink_to_an_absolute_path_is_refused: Hostile::SymlinkAbsolute,
    hostile_tar_symlink_to_the_parent_with_a_file_written_through_it_is_refused: Hostile::ThroughSymlink,
    hostile_tar_symlink_leading_outside_through_another_symlink_is_refused: Hostile::SymlinkChain,
    hostile_tar_symlink_leading_outside_through_a_later_symlink_is_refused: Hostile::SymlinkChainReversed,
    hostile_tar_hard_link_to_an_absolute_path_is_refused: Hostile::HardlinkAbsolute,
    hostile_tar_hard_link_outside_the_archive_is_refused: Hostile::HardlinkOutside,
    hostile_tar_fifo_is_refused: Hostile::Fifo,
    hostile_tar_char_device_is_refused: Hostile::CharDevice,
    hostile_tar_block_device_is_refused: Hostile::BlockDevice,
}

#[test]
fn hostile_zip_entry_with_dotdot_is_refused() {
    assert_refused(zip_with_name("../evil-zip-dotdot"), "evil-zip-dotdot", Project::new());
}

#[test]
fn hostile_zip_entry_with_an_absolute_path_is_refused() {
    let p = Project::new();
    let abs = p.path("abs-evil-zip");
    assert_refused(zip_with_name(abs.to_str().unwrap()), "abs-evil-zip", p);
    assert!(!abs.exists(), "{} was written", abs.display());
}

#[test]
fn hostile_zip_symlink_pointing_outside_is_refused() {
    assert_refused(zip_with_symlink("evil-zip-link", "../../outside"), "evil-zip-link", Project::new());
}

#[test]
fn a_hostile_entry_in_a_plain_tar_is_refused_too() {
    let p = Project::new();
    let (tar, _) = hostile_tar(Hostile::DotDot, "");
    assert_refused(tar, "evil-dotdot", p);
}

#[test]
fn setuid_setgid_and_world_writable_bits_are_stripped() {
    let s = Server::start();
    let tgz = gzip(&modes_tar());
    s.serve("/modes.tar.gz", tgz.clone());
    let p = Project::new().file(
        "gevulot.yaml",
        &yaml(&[target(
            "m",
            &s.url("/modes.tar.gz"),
            &pin(&tgz),
            Some("{ strip_components: 0 }"),
            "build/m",
        )]),
    );
    let check = |p: &Project| {
        // (file, its mode in the archive)
        for (f, archived) in
            [("suid", 0o4755), ("sgid", 0o2755), ("world", 0o666), ("all", 0o6777), ("open", 0o777)]
        {
            let m = mode(p, &format!("build/m/{f}"));
            assert_eq!(m & 0o7000, 0, "{f}: setuid/setgid/sticky kept: {m:o}");
            assert_eq!(m & 0o002, 0, "{f}: world-writable: {m:o}");
            assert_eq!(m & 0o700, archived & 0o700, "{f}: owner bits changed: {m:o}");
        }
        assert_eq!(p.read("build/m/open/inside"), "inside\n");
    };
    p.build(&[]);
    check(&p);
    // And the same once restored from the cache.
    fs::remove_dir_all(p.path("build/m")).unwrap();
    assert_eq!(p.build(&[]).restored(), names(&["m"]));
    check(&p);
}

// ---------------------------------------------------------------------------------------------
// Caps: no decompression bombs

#[test]
fn max_size_caps_the_extracted_size() {
    let s = Server::start();
    let bomb = zeros_tar_gz(10 << 20);
    assert!(bomb.len() < 100 << 10, "10 MiB of zeros compress to {} bytes", bomb.len());
    s.serve("/bomb.tar.gz", bomb.clone());
    let url = s.url("/bomb.tar.gz");
    let p = Project::new().file(
        "gevulot.yaml",
        &yaml(&[target("bomb", &url, &pin(&bomb), Some("{ max_size: 1M }"), "build/bomb")]),
    );
    let (r, _) = p.build_any(&[]);
    let r = r.exit(1);
    assert!(
        r.stderr().contains("max_size") || r.stderr().contains("1M"),
        "the limit is not named:\n{}",
        r.stderr()
    );
    assert_nothing_left(&p, "build/bomb");

    // Under a cap that fits, it extracts.
    p.write(
        "gevulot.yaml",
        &yaml(&[target("bomb", &url, &pin(&bomb), Some("{ max_size: 20M }"), "build/bomb")]),
    );
    p.build(&[]);
    assert_eq!(fs::metadata(p.path("build/bomb/zeros")).unwrap().len(), 10 << 20);
}

#[test]
fn max_size_caps_a_zip_too() {
    let s = Server::start();
    let bomb = zeros_zip(10 << 20);
    assert!(bomb.len() < 100 << 10, "10 MiB of zeros compress to {} bytes", bomb.len());
    s.serve("/bomb.zip", bomb.clone());
    let p = Project::new().file(
        "gevulot.yaml",
        &yaml(&[target("bomb", &s.url("/bomb.zip"), &pin(&bomb), Some("{ max_size: 1M }"), "build/bomb")]),
    );
    let (r, _) = p.build_any(&[]);
    let r = r.exit(1);
    assert!(
        r.stderr().contains("max_size") || r.stderr().contains("1M"),
        "the limit is not named:\n{}",
        r.stderr()
    );
    assert_nothing_left(&p, "build/bomb");
}

#[test]
fn extracting_what_is_not_an_archive_fails() {
    let s = Server::start();
    let bytes = b"just some text, no archive\n".to_vec();
    s.serve("/notes.tar.gz", bytes.clone());
    let url = s.url("/notes.tar.gz");
    let p = Project::new().file(
        "gevulot.yaml",
        &yaml(&[target("notes", &url, &pin(&bytes), Some("{ strip_components: 0 }"), "build/notes")]),
    );
    let (r, _) = p.build_any(&[]);
    r.exit(1).stderr_has(&url).stderr_has("archive");
    assert_nothing_left(&p, "build/notes");
}

#[test]
fn max_entries_caps_the_entry_count() {
    let s = Server::start();
    let many = many_entries_tar_gz(150);
    s.serve("/many.tar.gz", many.clone());
    let url = s.url("/many.tar.gz");
    let p = Project::new().file(
        "gevulot.yaml",
        &yaml(&[target("many", &url, &pin(&many), Some("{ max_entries: 100 }"), "build/many")]),
    );
    let (r, _) = p.build_any(&[]);
    let r = r.exit(1);
    assert!(r.stderr().contains("max_entries"), "the limit is not named:\n{}", r.stderr());
    assert_nothing_left(&p, "build/many");

    p.write(
        "gevulot.yaml",
        &yaml(&[target("many", &url, &pin(&many), Some("{ max_entries: 1000 }"), "build/many")]),
    );
    p.build(&[]);
    assert_eq!(listing(&p, "build/many").len(), 150);
    assert_eq!(s.requests("/many.tar.gz"), 1, "the refused archive was still a good download");
}

// ---------------------------------------------------------------------------------------------
// Configuration errors: exit 2, nothing downloaded

/// gevulot.yaml must be refused (exit 2) before any download; returns stderr.
fn config_refused(s: &Server, yaml_text: &str) -> String {
    let p = Project::new().file("gevulot.yaml", yaml_text);
    let r = p.gvbuild(&[]).exit(2);
    assert_eq!(s.total_requests(), 0, "a refused build file downloads nothing");
    assert!(!p.exists("build"));
    r.stderr()
}

#[test]
fn inputs_outputs_or_run_next_to_fetch_are_config_errors() {
    let s = Server::start();
    let tgz = pkg_tar_gz();
    s.serve("/pkg.tar.gz", tgz.clone());
    let base = target("assets", &s.url("/pkg.tar.gz"), &pin(&tgz), None, "build/assets");
    for extra in ["    inputs: [a.txt]\n", "    outputs: [build/assets]\n", "    run: echo hi\n"] {
        let err = config_refused(&s, &yaml(&[format!("{base}{extra}")]));
        let key = extra.trim().split(':').next().unwrap();
        assert!(err.contains(key), "the error names `{key}`:\n{err}");
    }
}

#[test]
fn an_into_outside_the_project_or_bad_extract_options_are_config_errors() {
    let s = Server::start();
    let url = s.url("/pkg.tar.gz");
    let h = pin(b"x");
    for into in ["../outside", "/tmp/gvbuild-fetch-abs-into", "."] {
        config_refused(&s, &yaml(&[target("assets", &url, &h, None, into)]));
    }
    assert!(!std::path::Path::new("/tmp/gvbuild-fetch-abs-into").exists());
    for extract in
        ["{ strip_components: -1 }", "{ max_size: banana }", "{ strip: 1 }", "{ max_entries: many }"]
    {
        config_refused(&s, &yaml(&[target("assets", &url, &h, Some(extract), "build/assets")]));
    }
}

#[test]
fn a_fetch_without_a_hash_is_refused_naming_gvbuild_hash() {
    let s = Server::start();
    let err = config_refused(&s, &yaml(&[target("assets", &s.url("/pkg.tar.gz"), "", None, "build/assets")]));
    assert!(err.contains("gvbuild hash"), "the error names `gvbuild hash`:\n{err}");
}

#[test]
fn malformed_or_double_hashes_are_config_errors() {
    let s = Server::start();
    let good = sha256(b"x");
    let url = s.url("/pkg.tar.gz");
    for hash in [
        "sha256: abc".to_string(),
        format!("sha256: {}", &good[..63]),
        format!("sha256: {good}0"),
        format!("sha256: g{}", &good[1..]),
        format!("blake3: {}", &good[..62]),
        "sha256: ''".to_string(),
    ] {
        config_refused(&s, &yaml(&[target("assets", &url, &hash, None, "build/assets")]));
    }
    // Both at once: exactly one is required.
    let both = format!("sha256: {good}\n      blake3: {good}");
    config_refused(&s, &yaml(&[target("assets", &url, &both, None, "build/assets")]));
}

// ---------------------------------------------------------------------------------------------
// `gvbuild hash URL`

/// The hex after `prefix` on the first stdout line starting with it.
fn printed(stdout: &str, prefix: &str) -> Option<String> {
    stdout.lines().find_map(|l| l.trim().strip_prefix(prefix).map(|h| h.trim().to_string()))
}

#[test]
fn gvbuild_hash_prints_the_sha256_line_to_paste() {
    let s = Server::start();
    let tgz = pkg_tar_gz();
    s.serve("/pkg.tar.gz", tgz.clone());
    let url = s.url("/pkg.tar.gz");
    // No gevulot.yaml needed.
    let p = Project::new();
    let r = p.gvbuild(&["hash", &url]).exit(0);
    assert_eq!(printed(&r.stdout(), "sha256: "), Some(sha256(&tgz)), "stdout:\n{}", r.stdout());

    // The printed line pastes into a fetch as is.
    let line = r.stdout().lines().find(|l| l.trim().starts_with("sha256: ")).unwrap().trim().to_string();
    p.write(
        "gevulot.yaml",
        &yaml(&[target("assets", &url, &line, Some("{ strip_components: 1 }"), "build/assets")]),
    );
    p.build(&[]);
    assert_pkg_at(&p, "build/assets");
}

#[test]
fn gvbuild_hash_blake3_prints_the_blake3_line() {
    let s = Server::start();
    let bytes = b"some bytes to pin\n".to_vec();
    s.serve("/f", bytes.clone());
    let r = Project::new().gvbuild(&["hash", "--blake3", &s.url("/f")]).exit(0);
    assert_eq!(printed(&r.stdout(), "blake3: "), Some(blake3(&bytes)), "stdout:\n{}", r.stdout());
}

#[test]
fn gvbuild_hash_of_a_file_url() {
    let dl = tempfile::tempdir().unwrap();
    let f = dl.path().join("thing.bin");
    fs::write(&f, b"file bytes").unwrap();
    let r = Project::new().gvbuild(&["hash", &format!("file://{}", f.display())]).exit(0);
    assert_eq!(printed(&r.stdout(), "sha256: "), Some(sha256(b"file bytes")), "stdout:\n{}", r.stdout());
}

#[test]
fn gvbuild_hash_of_a_404_fails() {
    let s = Server::start();
    let url = s.url("/nope");
    Project::new().gvbuild(&["hash", &url]).exit(1).stderr_has(&url).stderr_has("404");
}

// ---------------------------------------------------------------------------------------------
// The harness itself (so a failure above is gvbuild's, not the test server's or the archives')

#[test]
fn harness_server_serves_counts_fails_and_truncates() {
    let s = Server::start();
    s.serve("/a", b"alpha".to_vec());
    s.serve("b", b"beta".to_vec());
    s.fail_first("/b", 500, 1);
    s.serve("/t", vec![7u8; 1000]);
    s.truncate("/t");
    let get = |path: &str| ureq::get(&s.url(path)).call();

    assert_eq!(get("/a").unwrap().body_mut().read_to_vec().unwrap(), b"alpha");
    assert!(matches!(get("/nope"), Err(ureq::Error::StatusCode(404))));
    assert!(matches!(get("/b"), Err(ureq::Error::StatusCode(500))));
    assert_eq!(get("/b").unwrap().body_mut().read_to_vec().unwrap(), b"beta");
    let cut = get("/t").map(|mut r| r.body_mut().read_to_vec());
    assert!(!matches!(cut, Ok(Ok(ref v)) if v.len() == 1000), "a truncated body reads whole");
    assert_eq!((s.requests("/a"), s.requests("/b"), s.requests("/nope")), (1, 2, 1));
    assert_eq!(s.total_requests(), 5);

    assert!(ureq::get(&refused_url("/x")).call().is_err());
}

#[test]
fn harness_archives_are_what_they_claim() {
    let tar = pkg_tar();
    assert_eq!(&tar[257..262], b"ustar");
    assert_eq!(&pkg_tar_gz()[..2], [0x1f, 0x8b]);
    let x = xz(&tar);
    assert_eq!(&x[..6], [0xfd, b'7', b'z', b'X', b'Z', 0]);
    let mut back = Vec::new();
    lzma_rs::xz_decompress(&mut std::io::Cursor::new(&x), &mut back).unwrap();
    assert_eq!(back, tar);
    let z = zstd(&tar);
    assert_eq!(&z[..4], [0x28, 0xb5, 0x2f, 0xfd]);
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut ruzstd::decoding::StreamingDecoder::new(&z[..]).unwrap(), &mut back)
        .unwrap();
    assert_eq!(back, tar);

    let zip_bytes = pkg_zip();
    assert_eq!(&zip_bytes[..4], b"PK\x03\x04");
    let mut zr = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).unwrap();
    let mut zip_names: Vec<String> = zr.file_names().map(str::to_string).collect();
    zip_names.sort();
    assert_eq!(
        zip_names,
        [
            "pkg-1.0/",
            "pkg-1.0/README",
            "pkg-1.0/bin/",
            "pkg-1.0/bin/tool",
            "pkg-1.0/lib/",
            "pkg-1.0/lib/libfoo.so",
            "pkg-1.0/lib/libfoo.so.1"
        ]
    );
    assert_eq!(zr.by_name("pkg-1.0/bin/tool").unwrap().unix_mode().map(|m| m & 0o777), Some(0o755));
    assert!(zr.by_name("pkg-1.0/lib/libfoo.so").unwrap().is_symlink());

    let entries = |bytes: &[u8]| -> Vec<(String, tar::EntryType, String, u32)> {
        tar::Archive::new(bytes)
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                let link =
                    h.link_name_bytes().map(|l| String::from_utf8_lossy(&l).into_owned()).unwrap_or_default();
                (
                    String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                    h.entry_type(),
                    link,
                    h.mode().unwrap(),
                )
            })
            .collect()
    };
    let pkg = entries(&tar);
    assert_eq!(pkg.len(), 8);
    assert!(pkg.contains(&(
        "pkg-1.0/bin/tool-again".into(),
        tar::EntryType::Link,
        "pkg-1.0/bin/tool".into(),
        0o755
    )));
    assert!(pkg.contains(&(
        "pkg-1.0/lib/libfoo.so".into(),
        tar::EntryType::Symlink,
        "libfoo.so.1".into(),
        0o777
    )));

    for kind in Hostile::ALL {
        let (t, name) = hostile_tar(kind, "/tmp/abs-evil");
        let es = entries(&t);
        assert_eq!(es[0].0, "ok.txt", "{kind:?}");
        assert!(es.iter().any(|e| e.0 == name), "{kind:?}: no entry {name:?} in {es:?}");
    }
    let (t, _) = hostile_tar(Hostile::SymlinkOutside, "");
    assert!(entries(&t).contains(&(
        "evil-link".into(),
        tar::EntryType::Symlink,
        "../../outside".into(),
        0o777
    )));
    let (t, _) = hostile_tar(Hostile::HardlinkAbsolute, "");
    assert!(entries(&t).contains(&(
        "evil-hardlink".into(),
        tar::EntryType::Link,
        "/etc/passwd".into(),
        0o644
    )));
    let (t, _) = hostile_tar(Hostile::CharDevice, "");
    assert!(entries(&t).iter().any(|e| e.0 == "evil-chardev" && e.1 == tar::EntryType::Char));

    let modes = entries(&modes_tar());
    assert!(modes.contains(&("suid".into(), tar::EntryType::Regular, String::new(), 0o4755)));
    assert!(modes.contains(&("all".into(), tar::EntryType::Regular, String::new(), 0o6777)));

    let zr = zip::ZipArchive::new(std::io::Cursor::new(zip_with_name("../evil-zip-dotdot"))).unwrap();
    assert!(zr.file_names().any(|n| n == "../evil-zip-dotdot"));
}

/// Every file below `dir` as (relative path, content), sorted.
fn tree_of(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| (e.path().strip_prefix(dir).unwrap().display().to_string(), fs::read(e.path()).unwrap()))
        .collect();
    out.sort();
    out
}

// Regression (issue 20, field report 1; bazelbuild/bazel#27002, libarchive#145): a tar.gz of
// several gzip members (`cat a.gz b.gz`, eStargz layers) and a tar.zst of several zstd frames
// were extracted up to the end of their first member, and the truncated tree was cached under
// the pin. GNU tar reads every member; so does gvbuild now, and the trees are compared.
#[test]
fn archives_of_several_compressed_members_are_extracted_whole_as_gnu_tar_extracts_them() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    for i in 0..40 {
        let dir = src.join(format!("pkg/d{}", i % 4));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("f{i}.txt")), format!("file {i}\n").repeat(100 + i * 37)).unwrap();
    }
    let run = |cmd: &str| {
        let ok =
            std::process::Command::new("sh").arg("-ec").arg(cmd).current_dir(work.path()).status().unwrap();
        assert!(ok.success(), "{cmd}");
    };
    // One tar stream (GNU tar), cut in three, each piece compressed on its own, concatenated;
    // the zstd one also carries a skippable frame between its frames.
    run("tar -cf pkg.tar -C src pkg && split -n 3 pkg.tar part.");
    run("for p in part.aa part.ab part.ac; do gzip -c $p; done > pkg.tar.gz");
    run("for p in part.aa part.ab part.ac; do zstd -q -c $p; done > frames.zst");
    let mut zst = fs::read(work.path().join("frames.zst")).unwrap();
    let mut skippable = vec![0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0];
    skippable.extend(b"skip");
    let first_frame_end = {
        run("zstd -q -c part.aa > first.zst");
        fs::metadata(work.path().join("first.zst")).unwrap().len() as usize
    };
    zst.splice(first_frame_end..first_frame_end, skippable);
    fs::write(work.path().join("pkg.tar.zst"), &zst).unwrap();

    let s = Server::start();
    let mut targets = Vec::new();
    for (name, file) in [("gz", "pkg.tar.gz"), ("zst", "pkg.tar.zst")] {
        let bytes = fs::read(work.path().join(file)).unwrap();
        s.serve(&format!("/{file}"), bytes.clone());
        targets.push(target(
            name,
            &s.url(&format!("/{file}")),
            &pin(&bytes),
            Some("{}"),
            &format!("build/{name}"),
        ));
        // What GNU tar makes of the same bytes.
        run(&format!("mkdir -p gnu-{name} && tar -xf {file} -C gnu-{name}"));
    }
    let p = Project::new().file("gevulot.yaml", &yaml(&targets));
    p.build(&[]);
    let whole = tree_of(&src);
    assert_eq!(whole.len(), 40);
    for name in ["gz", "zst"] {
        let gnu = tree_of(&work.path().join(format!("gnu-{name}")));
        assert_eq!(gnu, whole, "GNU tar reads every member of the {name} archive");
        assert_eq!(tree_of(&p.path(&format!("build/{name}"))), gnu, "{name}: as GNU tar extracts it");
    }
}

/// Every path below `dir`: what it is (folder, symlink and its text, or file with its bytes
/// and executable bit), as a comparison of extracted trees needs it.
fn shape_of(dir: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap())
        .map(|e| {
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            let meta = e.path().symlink_metadata().unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("symlink {}", fs::read_link(e.path()).unwrap().display())
            } else if meta.is_dir() {
                "folder".to_string()
            } else {
                let exec = meta.permissions().mode() & 0o100 != 0;
                format!(
                    "file exec={exec} sha256={}",
                    hex::encode(Sha256::digest(fs::read(e.path()).unwrap()))
                )
            };
            (rel, what)
        })
        .collect()
}

// Issue 20: extraction equals GNU tar's for every archive GNU tar extracts. A corpus made with
// the tools people use (GNU tar in its gnu, oldgnu, ustar and posix formats, sparse files
// included, each compressed as gvbuild reads; Python's tarfile in its three formats; `zip`
// storing symlinks as symlinks and following them), of one tree holding what archives carry
// (empty folders, symlinks to files and folders, a hard link, executable bits, names with
// spaces and non-ASCII letters, a name past ustar's 100 bytes, a sparse file): gvbuild's
// extraction of each is compared, path by path, with GNU tar's (`unzip`'s for zip).
#[test]
fn extraction_equals_gnu_tar_s_on_a_corpus_of_archives_made_by_the_usual_tools() {
    let work = tempfile::tempdir().unwrap();
    let run = |cmd: &str| {
        let out =
            std::process::Command::new("bash").arg("-ec").arg(cmd).current_dir(work.path()).output().unwrap();
        assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let long = "l".repeat(120);
    run(&format!(
        "mkdir -p pkg/empty/deeper pkg/nested/deep pkg/ustar-safe
         printf 'a\\n' > pkg/a.txt
         printf '#!/bin/sh\\necho hi\\n' > pkg/run.sh && chmod 755 pkg/run.sh
         printf 'deep\\n' > pkg/nested/deep/x.txt
         ln -s a.txt pkg/link && ln -s nested pkg/dirlink && ln pkg/a.txt pkg/hard
         printf 'u\\n' > 'pkg/ünïcödé.txt' && printf 's\\n' > 'pkg/with space.txt'
         printf 'long\\n' > pkg/{long}.txt
         truncate -s 3M pkg/sparse.bin && printf 'middle' | dd of=pkg/sparse.bin bs=1 seek=1500000 conv=notrunc 2>/dev/null"
    ));
    // (archive file, how it is made, how the reference extracts it)
    let tar_x = "tar -xf";
    let no_long = format!("--exclude=pkg/{long}.txt");
    let corpus: Vec<(String, String, &str)> = vec![
        ("gnu.tar".into(), "tar --format=gnu -cf gnu.tar pkg".into(), tar_x),
        ("oldgnu.tar.gz".into(), "tar --format=oldgnu -czf oldgnu.tar.gz pkg".into(), tar_x),
        ("pax.tar.xz".into(), "tar --format=posix -cJf pax.tar.xz pkg".into(), tar_x),
        ("ustar.tar.zst".into(), format!("tar --format=ustar {no_long} --zstd -cf ustar.tar.zst pkg"), tar_x),
        ("gnu-sparse.tar.gz".into(), "tar --format=gnu --sparse -czf gnu-sparse.tar.gz pkg".into(), tar_x),
        (
            "py-gnu.tar.gz".into(),
            "python3 -c 'import tarfile; t = tarfile.open(\"py-gnu.tar.gz\", \"w:gz\", format=tarfile.GNU_FORMAT); t.add(\"pkg\"); t.close()'".into(),
            tar_x,
        ),
        (
            "py-pax.tar".into(),
            "python3 -c 'import tarfile; t = tarfile.open(\"py-pax.tar\", \"w\", format=tarfile.PAX_FORMAT); t.add(\"pkg\"); t.close()'".into(),
            tar_x,
        ),
        (
            "py-ustar.tar.xz".into(),
            format!("python3 -c 'import tarfile; t = tarfile.open(\"py-ustar.tar.xz\", \"w:xz\", format=tarfile.USTAR_FORMAT); t.add(\"pkg\", filter=lambda i: None if i.name.endswith(\"{long}.txt\") else i); t.close()'"),
            tar_x,
        ),
        ("links.zip".into(), "zip -q -r -y links.zip pkg".into(), "unzip -q"),
        ("followed.zip".into(), "zip -q -r followed.zip pkg".into(), "unzip -q"),
    ];
    let s = Server::start();
    let mut targets = Vec::new();
    for (i, (file, make, _)) in corpus.iter().enumerate() {
        run(make);
        let bytes = fs::read(work.path().join(file)).unwrap();
        s.serve(&format!("/{file}"), bytes.clone());
        targets.push(target(
            &format!("a{i}"),
            &s.url(&format!("/{file}")),
            &pin(&bytes),
            Some("{}"),
            &format!("build/a{i}"),
        ));
    }
    let p = Project::new().file("gevulot.yaml", &yaml(&targets));
    p.build(&[]);
    for (i, (file, _, extract)) in corpus.iter().enumerate() {
        let reference = work.path().join(format!("ref-{i}"));
        fs::create_dir_all(&reference).unwrap();
        run(&format!("cd ref-{i} && {extract} ../{file}"));
        let want = shape_of(&reference);
        assert!(want.len() >= 12, "{file}: the reference extraction holds {want:?}");
        assert_eq!(
            shape_of(&p.path(&format!("build/a{i}"))),
            want,
            "{file}: as GNU tar (or unzip) extracts it"
        );
    }

    // GNU's PAX sparse format is refused on purpose (docs/gevulot-yaml.md's list), the file named: read as a
    // plain entry it would give the sparse map and the pieces under a stand-in name.
    run("tar --format=posix --sparse -cf pax-sparse.tar pkg");
    let bytes = fs::read(work.path().join("pax-sparse.tar")).unwrap();
    s.serve("/pax-sparse.tar", bytes.clone());
    let q = Project::new().file(
        "gevulot.yaml",
        &yaml(&[target("sparse", &s.url("/pax-sparse.tar"), &pin(&bytes), Some("{}"), "build/sparse")]),
    );
    let err = q.gvbuild(&[]).failure().stderr();
    assert!(err.contains("pkg/sparse.bin") && err.contains("PAX sparse format"), "{err}");
    assert!(!q.exists("build/sparse"));
}
