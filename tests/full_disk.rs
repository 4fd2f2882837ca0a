//! A full disk while storing, restoring and saving state: a small tmpfs in a private mount
//! namespace (`unshare -m`; the tests run as root). Each case gets a clear error or warning that
//! names the path, and leaves the cache and the project state consistent: `gvbuild cache
//! verify` is clean and the next build, with room again, is right.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use crate::support::*;

/// Run `script` under `sh -e` in a private mount namespace, with `$GV` the gvbuild binary and
/// `$CACHE` the cache folder. `None` where namespaces are not available (not root), which CI
/// never is.
fn in_namespace(p: &Project, script: &str) -> Option<(i32, String)> {
    let probe = Command::new("unshare").args(["-m", "true"]).status();
    if !probe.is_ok_and(|s| s.success()) {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root and must have unshare -m");
        eprintln!("skipped: unshare -m is not available here");
        return None;
    }
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &format!("mount --make-rprivate / 2>/dev/null; {script}")])
        .current_dir(p.root())
        .env("GV", bin())
        .env("GVBUILD_CACHE_DIR", p.cache.path())
        .env("CACHE", p.cache.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Some((out.status.code().unwrap_or(-1), text))
}

fn big_output_project() -> Project {
    Project::new().file(
        "gevulot.yaml",
        &y(r#"
        targets:
          big:
            outputs: [out/big.bin]
            run: head -c 1048576 /dev/urandom > out/big.bin
          small:
            deps: [big]
            outputs: [out/small.txt]
            run: wc -c < out/big.bin > out/small.txt
        "#),
    )
}

/// The cache's disk fills while a 1 MiB output is stored: one warning names the temp file it
/// was writing, the build's outputs are right, no partial blob is left, and the next build is
/// right.
#[test]
fn full_cache_disk_while_storing() {
    let p = big_output_project();
    let Some((code, out)) = in_namespace(
        &p,
        r#"mount -t tmpfs -o size=256k tmpfs "$CACHE"
        "$GV"; echo "first=$?"
        "$GV" cache verify; echo "verify=$?"
        find "$CACHE" -name '*.gvtmp*' | sed 's/^/stray /'
        "$GV"; echo "second=$?""#,
    ) else {
        return;
    };
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("first=0"), "{out}");
    assert!(
        out.contains("could not store `big` in the cache") && out.contains("No space left on device"),
        "{out}"
    );
    assert!(
        out.contains(&format!("{}/blobs/", p.cache.path().display())),
        "the warning names the path: {out}"
    );
    assert!(out.contains("verify=0") && !out.contains("stray "), "{out}");
    assert!(out.contains("second=0"), "{out}");
    assert_eq!(p.read("out/small.txt").trim(), "1048576");
}

/// The project's disk is too small for a restore: the step fails naming the file it was
/// writing, the cache entry is kept (it was not at fault), and with room again it restores.
#[test]
fn full_project_disk_while_restoring() {
    let built = big_output_project();
    built.build(&[]);
    let p = Project::with_cache(&built.cache);
    p.write("gevulot.yaml", &built.read("gevulot.yaml"));
    let Some((code, out)) = in_namespace(
        &p,
        r#"mkdir -p out && mount -t tmpfs -o size=256k tmpfs out
        "$GV"; echo "first=$?"
        "$GV" cache verify; echo "verify=$?"
        mount -o remount,size=4m out
        "$GV"; echo "second=$?"
        cat out/small.txt"#,
    ) else {
        return;
    };
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("first=1"), "{out}");
    assert!(
        out.contains("cannot restore `big` from the cache: cannot write") && out.contains("out/big.bin"),
        "{out}"
    );
    assert!(out.contains("No space left on device"), "{out}");
    assert!(out.contains("verify=0"), "{out}");
    assert!(out.contains("second=0") && out.contains("restored  big"), "kept entry restores: {out}");
    assert!(out.contains("1048576"), "{out}");
}

/// The state folder's disk is full: the build warns once, naming the file, and the next build
/// (with room again) is right.
#[test]
fn full_state_disk_while_saving() {
    let mut yaml = String::from("targets:\n");
    for i in 0..300 {
        yaml.push_str(&format!("  t{i}:\n    outputs: [out/t{i}]\n    run: echo {i} > out/t{i}\n"));
    }
    let p = Project::new().file("gevulot.yaml", &yaml);
    let Some((code, out)) = in_namespace(
        &p,
        r#"mkdir -p .gvbuild && mount -t tmpfs -o size=8k tmpfs .gvbuild
        "$GV"; echo "first=$?"
        "$GV" cache verify; echo "verify=$?"
        mount -o remount,size=4m .gvbuild
        "$GV"; echo "second=$?""#,
    ) else {
        return;
    };
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("first=0"), "{out}");
    assert!(out.contains("No space left on device") && out.contains("/.gvbuild/"), "{out}");
    assert_eq!(out.matches("could not write the build journal").count(), 1, "one warning: {out}");
    assert!(out.contains("verify=0") && out.contains("second=0"), "{out}");
    // With room again: everything is right (restored from the cache or fresh), nothing reruns.
    assert!(out.contains("0 ran"), "{out}");
    assert_eq!(p.read("out/t299"), "299\n");
}
