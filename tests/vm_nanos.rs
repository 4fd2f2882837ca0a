//! Real Nanos: images built by gvbuild from a real Nanos release, booted with the node's QEMU
//! arguments. A release cannot be downloaded where the tests run and must not be built by the
//! project, so these run where `GVBUILD_TEST_NANOS` names an extracted release (kernel.img,
//! boot.img, klibs/), and are listed as ignored elsewhere.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

fn release() -> PathBuf {
    PathBuf::from(std::env::var_os("GVBUILD_TEST_NANOS").expect("GVBUILD_TEST_NANOS"))
}

/// Text with miette's wrapping undone (see `vm.rs`).
fn has(text: &str, want: &str) {
    let flat = |s: &str| {
        s.split(|c: char| c.is_whitespace() || c == '|')
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(flat(text).contains(&flat(want)), "want {want:?} in:\n{text}");
}

/// A test program: argv[1] (the manifest's Args) says what it does with its task.
const PROGRAM: &str = r#"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void result(const char *json) {
  FILE *r = fopen("/workspace/task_result.json", "wx");
  if (!r) { perror("task_result.json"); exit(2); }
  fputs(json, r);
  fclose(r);
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "ok";
  printf("prog: mode %s\n", mode);
  fflush(stdout);
  if (!strcmp(mode, "fail")) return 3;
  if (!strcmp(mode, "sleep")) for (;;) sleep(1);
  char task[4096] = "";
  FILE *t = NULL;
  for (int i = 0; i < 300 && !t; i++) if (!(t = fopen("/workspace/task.json", "r"))) usleep(100000);
  if (!t) { printf("prog: no /workspace/task.json\n"); return 0; }
  task[fread(task, 1, sizeof task - 1, t)] = 0;
  fclose(t);
  printf("prog: task %s\n", task);
  if (!strcmp(mode, "none")) return 0;
  if (!strcmp(mode, "err")) { result("{\"Err\":\"the witness does not satisfy the circuit\"}"); return 0; }
  char sample[256] = "";
  FILE *s = fopen("/workspace/sample.in", "r");
  if (s) { sample[fread(sample, 1, sizeof sample - 1, s)] = 0; fclose(s); }
  FILE *o = fopen("/workspace/out/proof.txt", "w");
  if (!o) { mkdir("/workspace/out", 0755); o = fopen("/workspace/out/proof.txt", "w"); }
  fprintf(o, "task %s\nsample %s", task, sample);
  fclose(o);
  if (!strcmp(mode, "rofs")) {
    FILE *x = fopen("/written-to-root", "w");
    char j[512];
    snprintf(j, sizeof j, "{\"Ok\":{\"id\":\"task01\",\"data\":[%s],\"files\":[\"/workspace/out/proof.txt\"]}}",
             x ? "119" : (errno == EROFS ? "114" : "63"));  /* 'w'ritable, 'r'ead-only, '?' */
    result(j);
    return 0;
  }
  result("{\"Ok\":{\"id\":\"task01\",\"data\":[112,114,111,118,101,100],\"files\":[\"/workspace/out/proof.txt\"]}}");
  return 0;
}
"#;

/// A project with the program staged, and one image per (name, manifest JSON).
fn project(images: &[(&str, &str)]) -> Project {
    let mut yaml = String::from(
        "targets:\n  prog:\n    inputs: [prog.c]\n    outputs: [build/prog]\n    run: mkdir -p build && cc -O1 -o build/prog prog.c\n  stage:\n    deps: [prog]\n    stage:\n      into: build/root\n      copy: [{ from: build/prog, to: prog }]\n      libs_for: [build/prog]\n",
    );
    let p = Project::new().file("prog.c", PROGRAM);
    for (name, manifest) in images {
        p.write(&format!("m/{name}.json"), manifest);
        yaml.push_str(&format!(
            "  {name}:\n    deps: [stage]\n    image:\n      builder: native\n      release: {}\n      manifest: m/{name}.json\n      root: build/root\n      into: build/{name}.img\n",
            release().display()
        ));
    }
    p.write("gevulot.yaml", &yaml);
    p.write("sample.in", "3 * 7 = 21");
    p
}

/// A manifest of the program in `mode` (its Args), with the workspace at `%1` as in the guide.
fn manifest(mode: &str, extra: &str) -> String {
    format!(
        r#"{{"Program": "prog", "Args": ["{mode}"], "Dirs": ["lib", "lib64"], "Mounts": {{"%1": "/workspace"}}{extra}}}"#
    )
}

#[test]
#[cfg_attr(
    gvbuild_no_nanos,
    ignore = "boots real Nanos: set GVBUILD_TEST_NANOS to an extracted Nanos release"
)]
fn run_hands_the_task_in_and_takes_the_result_and_files_out() {
    let p = project(&[("ok", &manifest("ok", ""))]);
    let run =
        p.gvbuild(&["run", "ok", "--input", "sample.in", "--", "--input", "/workspace/sample.in"]).success();
    assert_eq!(run.stdout(), "proved\n");
    let proof = p.read("build/ok.run/out/proof.txt");
    assert!(proof.contains(r#""args":["--input","/workspace/sample.in"],"files":["sample.in"]"#), "{proof}");
    assert!(proof.ends_with("sample 3 * 7 = 21"), "{proof}");
    let result: serde_json::Value = serde_json::from_str(&p.read("build/ok.run/task_result.json")).unwrap();
    assert_eq!(result["Ok"]["files"], serde_json::json!(["/workspace/out/proof.txt"]));
    assert!(p.read("build/ok.run/console.log").contains("prog: mode ok"));
}

#[test]
#[cfg_attr(
    gvbuild_no_nanos,
    ignore = "boots real Nanos: set GVBUILD_TEST_NANOS to an extracted Nanos release"
)]
fn a_program_s_err_an_exit_without_a_result_and_a_reset_are_diagnosed() {
    let p = project(&[
        ("err", &manifest("err", "")),
        ("none", &manifest("none", "")),
        ("fail", &manifest("fail", r#", "RebootOnExit": true"#)),
    ]);
    let run = p.gvbuild(&["run", "err"]).exit(1);
    has(&run.stderr(), "the program reported an error: the witness does not satisfy the circuit");
    let run = p.gvbuild(&["run", "none"]).exit(1);
    has(
        &run.stderr(),
        "the program exited without a result: the VM stopped (powered off, QEMU exit status 0)",
    );
    has(&run.stderr(), "prog: task {");
    let run = p.gvbuild(&["run", "fail", "--timeout", "120"]).exit(1);
    has(&run.stderr(), "the VM reset (guest-reset)");
    let console = p.read("build/fail.run/console.log");
    assert_eq!(console.matches("prog: mode fail").count(), 1, "stopped at the first reset: {console}");
}

#[test]
#[cfg_attr(
    gvbuild_no_nanos,
    ignore = "boots real Nanos: set GVBUILD_TEST_NANOS to an extracted Nanos release"
)]
fn the_root_is_read_only_and_the_workspace_is_written() {
    let ro = manifest("rofs", r#", "ManifestPassthrough": {"readonly_rootfs": "true"}"#);
    let p = project(&[("ro", &ro), ("rw", &manifest("rofs", ""))]);
    p.gvbuild(&["run", "ro"]).success().stdout_has("r\n");
    assert!(p.read("build/ro.run/out/proof.txt").starts_with("task {"));
    p.gvbuild(&["run", "rw"]).success().stdout_has("w\n");
}

#[test]
#[cfg_attr(
    gvbuild_no_nanos,
    ignore = "boots real Nanos: set GVBUILD_TEST_NANOS to an extracted Nanos release"
)]
fn two_mounts_are_numbered_as_ops_numbers_them() {
    // `%1` sorts first: /workspace is %0, the node's mount tag 0, and /data %1 (not attached).
    let seen = r#"{"Program": "prog", "Args": ["ok"], "Dirs": ["lib", "lib64"], "Mounts": {"%1": "/workspace", "%2": "/data"}}"#;
    // `%2` sorts after `%1`: /workspace is %1, which the node does not attach.
    let unseen = r#"{"Program": "prog", "Args": ["ok"], "Dirs": ["lib", "lib64"], "Mounts": {"%1": "/data", "%2": "/workspace"}}"#;
    let p = project(&[("seen", seen), ("unseen", unseen)]);
    p.gvbuild(&["run", "seen"]).success().stdout_has("proved\n");
    let run = p.gvbuild(&["run", "unseen"]).exit(1);
    has(&run.stderr(), "prog: no /workspace/task.json");
    has(&run.stderr(), "the workspace is mounted from `%1` (attach id 1), but the Gevulot node attaches the workspace as 9p mount tag 0: this image will not see it");
}

#[test]
#[cfg_attr(
    gvbuild_no_nanos,
    ignore = "boots real Nanos: set GVBUILD_TEST_NANOS to an extracted Nanos release"
)]
fn a_task_past_its_timeout_is_killed() {
    let p = project(&[("sleep", &manifest("sleep", ""))]);
    let (code, text) = gvbuild_in_time(&p, &["run", "sleep", "--timeout", "8"]);
    assert_eq!(code, 1, "{text}");
    has(&text, "the task ran past its 8 s limit and QEMU was killed");
    has(&text, "prog: mode sleep");
}

#[test]
#[cfg_attr(
    gvbuild_no_nanos,
    ignore = "boots real Nanos: set GVBUILD_TEST_NANOS to an extracted Nanos release"
)]
fn a_task_step_is_cached_like_any_step() {
    let p = project(&[("ok", &manifest("ok", ""))]);
    let yaml = p.read("gevulot.yaml")
        + "  prove:\n    task:\n      image: build/ok.img\n      args: [--input, /workspace/sample.in]\n      files: [sample.in]\n      into: build/prove\n";
    p.write("gevulot.yaml", &yaml);
    let b = p.build(&["prove"]);
    assert_eq!(b.ran(), names(&["ok", "prog", "prove", "stage"]));
    assert!(p.read("build/prove/out/proof.txt").ends_with("sample 3 * 7 = 21"));
    assert_eq!(p.build(&["prove"]).fresh(), names(&["ok", "prog", "prove", "stage"]));
    p.write("sample.in", "4 * 5 = 20");
    assert_eq!(p.build(&["prove"]).ran(), names(&["prove"]));
    assert!(p.read("build/prove/out/proof.txt").ends_with("sample 4 * 5 = 20"));
    p.write("sample.in", "3 * 7 = 21");
    assert_eq!(p.build(&["prove"]).restored(), names(&["prove"]));
    assert!(p.read("build/prove/out/proof.txt").ends_with("sample 3 * 7 = 21"));
    assert!(p.read("build/prove/console.log").contains("prog: mode ok"));
}

/// A task's result is shared like any step's: a clone with an empty local cache restores it
/// from the remote cache instead of booting the image.
#[test]
#[cfg_attr(
    gvbuild_no_nanos,
    ignore = "boots real Nanos: set GVBUILD_TEST_NANOS to an extracted Nanos release"
)]
#[cfg_attr(gvbuild_no_nginx, ignore = "needs nginx (CI installs it)")]
fn a_task_result_travels_through_the_shared_cache() {
    let server = crate::remote::nginx::Nginx::start();
    let url = server.url();
    let p = project(&[("ok", &manifest("ok", ""))]);
    let yaml = p.read("gevulot.yaml")
        + "  prove:\n    task:\n      image: build/ok.img\n      files: [sample.in]\n      into: build/prove\n";
    p.write("gevulot.yaml", &yaml);
    assert_eq!(p.build(&["--remote-cache", &url, "prove"]).ran(), names(&["ok", "prog", "prove", "stage"]));
    let c = Project::new();
    for f in ["gevulot.yaml", "prog.c", "sample.in", "m/ok.json"] {
        c.write(f, &p.read(f));
    }
    let b = c.build(&["--remote-cache", &url, "prove"]);
    assert!(b.ran().is_empty(), "{:?}", b.events);
    assert_eq!(b.restored(), names(&["ok", "prog", "prove", "stage"]));
    assert_eq!(c.read("build/prove/out/proof.txt"), p.read("build/prove/out/proof.txt"));
}

/// The release as its tarball, as the release bucket serves it, in `dir/0.1.51/`; its sha256.
fn release_mirror(dir: &Path) -> String {
    let at = dir.join("0.1.51");
    fs::create_dir_all(&at).unwrap();
    let tarball = at.join("nanos-release-linux-0.1.51.tar.gz");
    let ok =
        Command::new("tar").arg("-czf").arg(&tarball).arg("-C").arg(release()).arg(".").status().unwrap();
    assert!(ok.success());
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(fs::read(&tarball).unwrap()))
}

/// The cpu-prover example as shipped, its release from a file:// mirror of the real one.
#[test]
#[cfg_attr(
    gvbuild_no_nanos,
    ignore = "boots real Nanos: set GVBUILD_TEST_NANOS to an extracted Nanos release"
)]
fn cpu_prover_example_proves_its_sample_on_real_nanos() {
    let p = Project::new();
    copy_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cpu-prover"), p.root());
    for generated in ["build", "my_prover/target"] {
        let _ = fs::remove_dir_all(p.path(generated));
    }
    let mirror = tempfile::tempdir().unwrap();
    let sha = release_mirror(mirror.path());
    let sets = [
        "--set".to_string(),
        format!("nanos_mirror=file://{}", mirror.path().display()),
        "--set".to_string(),
        format!("nanos_sha256={sha}"),
    ];
    let mut args: Vec<&str> = sets.iter().map(String::as_str).collect();
    args.push("prove-sample");
    let b = p.build(&args);
    assert_eq!(b.ran(), names(&["image", "manifest", "my_prover", "nanos", "prove-sample", "stage"]));
    // The proof: the sample's length and FNV-1a checksum, as my_prover computes it.
    let sample = fs::read(p.path("sample/sample.in")).unwrap();
    let sum = sample
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    assert_eq!(p.read("build/prove-sample/sample.proof"), format!("{} {sum:016x}\n", sample.len()));
    let result: serde_json::Value =
        serde_json::from_str(&p.read("build/prove-sample/task_result.json")).unwrap();
    assert_eq!(result["Ok"]["files"], serde_json::json!(["/workspace/sample.proof"]));

    // The same image by hand, as README's quickstart runs it.
    args.pop();
    args.extend([
        "run",
        "image",
        "--input",
        "sample/sample.in",
        "--",
        "--input",
        "/workspace/sample.in",
        "--output",
        "/workspace/w.proof",
    ]);
    let run = p.gvbuild(&args).success();
    assert_eq!(run.stdout(), "proved /workspace/w.proof\n");
    assert_eq!(p.read("build/my_prover.run/w.proof"), format!("{} {sum:016x}\n", sample.len()));
}
