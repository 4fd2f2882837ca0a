//! The command line around the build: list, graph, help, verbose output, exit codes.
use crate::support::*;

fn project() -> Project {
    Project::new()
        .file(
            "gevulot.yaml",
            "default: all\ntargets:\n  gen:\n    description: Make a file\n    inputs: [a.txt]\n    outputs: [out/gen.txt]\n    run: echo generating; cat a.txt > out/gen.txt\n  use:\n    deps: [gen]\n    inputs: [out/gen.txt]\n    outputs: [out/use.txt]\n    run: cp out/gen.txt out/use.txt\n  all:\n    description: Everything\n    deps: [use]\n",
        )
        .file("a.txt", "a\n")
}

#[test]
fn list_shows_kinds_descriptions_and_the_default() {
    let out = project().gvbuild(&["list"]).success().stdout();
    assert_eq!(out, "gen  step   Make a file\nuse  step\nall  group  Everything (default)\n");
}

#[test]
fn graph_prints_dot_and_json() {
    let p = project();
    let dot = p.gvbuild(&["graph"]).success().stdout();
    assert!(dot.starts_with("digraph gvbuild {"), "{dot}");
    assert!(dot.contains("\"use\" -> \"gen\";"), "{dot}");
    assert!(dot.contains("\"all\" [shape=ellipse];"), "{dot}");
    let json: serde_json::Value =
        serde_json::from_str(&p.gvbuild(&["graph", "--format", "json"]).success().stdout()).unwrap();
    assert_eq!(json["default"], "all");
    assert_eq!(json["targets"][1]["deps"][0], "gen");
    assert_eq!(json["targets"][0]["outputs"][0], "out/gen.txt");
}

#[test]
fn help_shows_examples_and_exit_codes() {
    let out = project().gvbuild(&["--help"]).success().stdout();
    assert!(out.contains("Examples:"), "{out}");
    assert!(out.contains("gvbuild --target stage-libs"), "{out}");
    assert!(out.contains("Exit status: 0 success, 1 a step failed, 2 bad usage"), "{out}");
}

#[test]
fn verbose_shows_step_output_live_and_keeps_the_log() {
    let p = project();
    let r = p.gvbuild(&["-v", "gen"]).success();
    assert!(r.stderr().contains("[gen] generating"), "{}", r.stderr());
    assert_eq!(p.read(".gvbuild/logs/gen.log"), "generating\n");
    // Off a terminal, without -v: one plain line per step that did something, and a summary.
    p.write("a.txt", "b\n");
    let out = p.gvbuild(&[]).success().stdout();
    assert!(out.contains("ran       gen ("), "{out}");
    assert!(out.contains("gvbuild: 2 ran, 0 restored, 0 fresh, 0 failed, 0 skipped"), "{out}");
}

#[test]
fn a_quiet_step_leaves_no_stale_log() {
    let p = Project::new()
        .file("gevulot.yaml", "targets:\n  t:\n    inputs: [a.txt]\n    outputs: [o]\n    run: if grep -q loud a.txt; then echo LOUD; fi; cp a.txt o\n")
        .file("a.txt", "loud\n");
    p.build(&[]);
    assert_eq!(p.read(".gvbuild/logs/t.log"), "LOUD\n");
    p.write("a.txt", "quiet\n");
    p.build(&[]);
    assert!(!p.exists(".gvbuild/logs/t.log"), "the log of the last run, which printed nothing");
}

#[test]
fn inspect_of_a_missing_image_names_it() {
    let r = project().gvbuild(&["inspect", "build/app.img"]).exit(1);
    assert!(r.stderr().contains("error: build/app.img: cannot open build/app.img"), "{}", r.stderr());
}

#[test]
fn flags_before_and_after_build_combine() {
    let p = project();
    let b = Build::parse(&p.gvbuild(&["--json", "build", "-n", "gen"]).success());
    assert_eq!(b.ran(), names(&["gen"]));
    assert!(!p.exists("out/gen.txt"), "-n after `build` is a dry run too");
}

#[test]
fn libs_prints_the_closure_and_names_what_is_missing() {
    let p = project();
    let out = p.gvbuild(&["libs", "/bin/ls"]).success().stdout();
    assert!(out.starts_with("interpreter /lib64/ld-linux-x86-64.so.2\n"), "{out}");
    assert!(out.contains("libc.so.6 => "), "{out}");
    let r = p.gvbuild(&["libs", "a.txt"]).exit(1);
    assert!(r.stderr().contains("a.txt is not an ELF file"), "{}", r.stderr());
}

#[test]
fn gvbuild_timings_reports_each_phase_on_stderr() {
    let p = project();
    let r = p.command(&["gen"]).env("GVBUILD_TIMINGS", "1").output().unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    for phase in ["load graph", "load state", "build", "save state"] {
        assert!(err.contains(&format!("timing: {phase}")), "{phase}: {err}");
    }
    let quiet = p.gvbuild(&["gen"]).success();
    assert!(!quiet.stderr().contains("timing:"), "{}", quiet.stderr());
}
