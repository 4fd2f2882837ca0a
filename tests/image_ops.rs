//! `image: { builder: ops }` against a stand-in `ops` that records what it receives: ops cannot
//! be installed here, so the test checks the arguments, working directory, environment and
//! manifest gvbuild gives it, and that its image ends up at `into`.
use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::support::*;

/// A stand-in `ops`: `ops version` prints a version; `ops build` checks its working directory
/// holds the program and the manifest's folders, logs what it got, and writes an image into
/// $OPS_HOME/images. Steps run in a clean environment, so the stand-in takes its settings from
/// its own folder: it logs to `__LOG__` and fails while `__BIN__/fail` exists.
const STAND_IN: &str = r#"#!/bin/sh
if [ "$1" = version ]; then echo "Ops version: 0.1.99-standin"; exit 0; fi
[ "$1" = build ] || { echo "unexpected: $*" >&2; exit 64; }
if [ -e __BIN__/fail ]; then echo "boom: cannot build" >&2; exit 3; fi
prog=$2; shift 2
while [ $# -gt 0 ]; do
  case $1 in
    -c) manifest=$2; shift 2 ;;
    --nanos-version) version=$2; shift 2 ;;
    -i) name=$2; shift 2 ;;
    *) echo "unexpected argument $1" >&2; exit 64 ;;
  esac
done
[ -f "$prog" ] || { echo "no program $prog in $(pwd)" >&2; exit 65; }
[ -d lib ] || { echo "no lib folder in $(pwd)" >&2; exit 65; }
{ echo "prog=$prog"; echo "version=$version"; echo "name=$name"; echo "pwd=$(pwd)"; echo "ops_home=$OPS_HOME";
  echo "kernel=$(cat "$OPS_HOME/$version/kernel.img" 2>/dev/null || echo none)"; cat "$manifest"; } > __LOG__
mkdir -p "$OPS_HOME/images"
{ echo "image of $prog"; cat "$manifest"; } > "$OPS_HOME/images/$name.img"
"#;

const YAML: &str = r#"targets:
  stage:
    outputs: [build/root]
    run: mkdir -p build/root/lib && printf 'prover v1\n' > build/root/prover && chmod +x build/root/prover
  manifest:
    deps: [stage]
    manifest:
      program: prover
      dirs: [lib]
      workspace: { mount: "%1", path: /workspace }
      root: build/root
      into: build/prover.json
  image:
    deps: [stage, manifest]
    image:
      builder: ops
      program: build/root/prover
      manifest: build/prover.json
      root: build/root
      nanos_version: 0.1.51
      into: build/prover.img
"#;

struct Env {
    p: Project,
    bin: tempfile::TempDir,
    home: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let bin = tempfile::tempdir().unwrap();
        let p = Project::new().file("gevulot.yaml", YAML);
        let e = Env { p, bin, home: tempfile::tempdir().unwrap() };
        e.write_ops(STAND_IN);
        e
    }

    fn write_ops(&self, script: &str) {
        let ops = self.bin.path().join("ops");
        let script = script
            .replace("__LOG__", &self.p.path("ops.log").display().to_string())
            .replace("__BIN__", &self.bin.path().display().to_string());
        fs::write(&ops, script).unwrap();
        fs::set_permissions(&ops, fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn run(&self, with_ops: bool) -> Run {
        let path = std::env::var("PATH").unwrap();
        let path = if with_ops { format!("{}:{path}", self.bin.path().display()) } else { path };
        let mut c = self.p.command(&["--json"]);
        c.env("PATH", path).env("HOME", self.home.path());
        Run { output: c.output().unwrap(), args: vec!["--json".into()] }
    }
}

#[test]
fn runs_ops_in_the_stage_root_with_a_managed_ops_home_and_keeps_the_image() {
    let e = Env::new();
    // The user's ~/.ops has the release: the managed OPS_HOME starts with a copy of it.
    fs::create_dir_all(e.home.path().join(".ops/0.1.51")).unwrap();
    fs::write(e.home.path().join(".ops/0.1.51/kernel.img"), "kernel 0.1.51\n").unwrap();
    let b = Build::parse(&e.run(true).success());
    assert_eq!(b.ran(), names(&["image", "manifest", "stage"]));
    let log = e.p.read("ops.log");
    assert!(log.contains("prog=prover\n"), "the program relative to the stage root: {log}");
    assert!(log.contains("version=0.1.51\n") && log.contains("name=prover\n"), "{log}");
    let root = fs::canonicalize(e.p.path("build/root")).unwrap();
    assert!(log.contains(&format!("pwd={}\n", root.display())), "runs in the stage root: {log}");
    assert!(log.contains(&format!("ops_home={}", e.p.cache.path().join("ops-home").display())), "{log}");
    assert!(log.contains("kernel=kernel 0.1.51\n"), "the user's release was copied in: {log}");
    assert!(log.contains("\"Program\": \"prover\""), "the manifest ops read: {log}");
    let image = e.p.read("build/prover.img");
    assert!(image.starts_with("image of prover\n"), "{image}");
    // The user's ~/.ops is never written into.
    let entries: Vec<_> =
        fs::read_dir(e.home.path().join(".ops")).unwrap().flatten().map(|d| d.file_name()).collect();
    assert_eq!(entries, vec!["0.1.51"]);

    // Fresh the next time (ops is identified, as part of the key, but not run).
    assert_eq!(Build::parse(&e.run(true).success()).fresh(), names(&["image", "manifest", "stage"]));
}

#[test]
fn a_new_ops_binary_rebuilds_the_image() {
    let e = Env::new();
    e.run(true).success();
    e.write_ops(&STAND_IN.replace("0.1.99-standin", "0.1.100-standin"));
    let b = Build::parse(&e.run(true).success());
    assert_eq!(b.ran(), names(&["image"]));
}

#[test]
fn without_ops_the_error_says_how_to_get_it_and_names_the_native_builder() {
    let e = Env::new();
    let r = e.run(false).exit(1);
    assert!(r.stderr().contains("`ops` was not found on PATH"), "{}", r.stderr());
    assert!(r.stderr().contains("ops.city") && r.stderr().contains("builder: native"), "{}", r.stderr());
    assert!(!e.p.exists("build/prover.img"));
}

#[test]
fn a_failing_ops_shows_its_output_and_exit_code() {
    let e = Env::new();
    fs::write(e.bin.path().join("fail"), "").unwrap();
    let r = e.run(true).exit(1);
    assert!(r.stderr().contains("ops failed (exit status 3)"), "{}", r.stderr());
    assert!(r.stderr().contains("boom: cannot build"), "{}", r.stderr());
    assert!(!e.p.exists("build/prover.img"));
}

#[test]
fn an_unknown_builder_is_refused_and_each_builder_names_what_it_needs() {
    let p = Project::new().file("gevulot.yaml", &YAML.replace("builder: ops", "builder: docker"));
    let err = p.gvbuild(&[]).exit(2).stderr();
    assert!(err.contains("builder `docker`, which gvbuild does not have"), "{err}");
    // The ops fields on a native image: `release` is missing, `program` does not apply.
    p.write("gevulot.yaml", &YAML.replace("builder: ops", "builder: native"));
    let err = p.gvbuild(&[]).exit(2).stderr();
    assert!(err.contains("needs `release`"), "{err}");
    p.write("gevulot.yaml", &YAML.replace("nanos_version: 0.1.51", "release: nanos"));
    let err = p.gvbuild(&[]).exit(2).stderr();
    assert!(err.contains("`release` of image `image` applies only to `builder: native`"), "{err}");
}
