//! Every way a gevulot.yaml or a command line can be wrong: exit status 2, nothing run, and a
//! diagnostic that names the file and `LINE:COL` with a labelled snippet. Each rendered diagnostic
//! (stderr, `NO_COLOR=1`) is snapshotted in `tests/snapshots/integration__errors__*.snap`; after a
//! deliberate change to a message, accept the new ones with
//! `INSTA_UPDATE=always cargo test --test integration errors` and read the diff.
//!
//! The tests at the end, under "Regressions", pin bugs that were found and fixed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;

/// A project holding only this gevulot.yaml.
fn project(yaml: &str) -> Project {
    Project::new().file("gevulot.yaml", yaml)
}

/// `gvbuild ARGS` in `p` must exit 2 with nothing on stdout. Returns stderr, with the project's
/// temp folder (should it appear) replaced by `[PROJECT]`.
fn rejected_in(p: &Project, args: &[&str]) -> String {
    let run = p.gvbuild(args).exit(2);
    assert_eq!(run.stdout(), "", "nothing on stdout when gvbuild {args:?} is rejected");
    let mut err = run.stderr();
    let canonical = std::fs::canonicalize(p.root()).unwrap();
    for root in [canonical.as_path(), p.root()] {
        err = err.replace(root.to_str().unwrap(), "[PROJECT]");
    }
    err
}

/// `gvbuild ARGS` on a project with this gevulot.yaml must exit 2. Returns stderr.
fn rejected(yaml: &str, args: &[&str]) -> String {
    rejected_in(&project(yaml), args)
}

/// Every `FILE:LINE:COL` that the snippets' headers (` ,-[FILE:LINE:COL]`) name, in order.
fn locations(stderr: &str) -> Vec<String> {
    stderr.split(",-[").skip(1).map(|rest| rest[..rest.find(']').unwrap()].to_string()).collect()
}

/// The build-file diagnostic reports exactly these errors, one snippet each, in this order, each
/// at `gevulot.yaml:LINE:COL` (`at`) and each snippet with at least one label under a source
/// line.
fn assert_errors_at(stderr: &str, at: &[&str]) {
    let n = at.len();
    let header = format!("gevulot.yaml: {n} error{} in the build file", if n == 1 { "" } else { "s" });
    assert!(stderr.contains(&header), "expected {header:?} in:\n{stderr}");
    let expected: Vec<String> = at.iter().map(|a| format!("gevulot.yaml:{a}")).collect();
    assert_eq!(locations(stderr), expected, "snippet locations in:\n{stderr}");
    assert_eq!(stderr.matches("Error: gvbuild::config::").count(), n, "error count in:\n{stderr}");
    for snippet in stderr.split(",-[").skip(1) {
        let snippet = &snippet[..snippet.find("`----\n").unwrap()];
        assert!(
            snippet.lines().any(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit())),
            "a snippet shows no source line in:\n{stderr}"
        );
        assert!(
            snippet.contains("`-- ") || snippet.contains("`---- "),
            "a snippet has no label in:\n{stderr}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// YAML: syntax, unknown keys, wrong types

#[test]
fn syntax_error_unclosed_quote() {
    let err = rejected("targets:\n  app:\n    run: \"echo hi\n", &[]);
    assert_errors_at(&err, &["3:10"]);
    assert!(err.contains("unclosed quote"), "{err}");
    insta::assert_snapshot!("syntax_unclosed_quote", err);
}

#[test]
fn syntax_error_bad_indentation() {
    let err = rejected("targets:\n  app:\n    run: echo\n   deps: [gen]\n", &[]);
    assert_errors_at(&err, &["4:4"]);
    insta::assert_snapshot!("syntax_bad_indentation", err);
}

#[test]
fn syntax_error_unclosed_flow_mapping() {
    let err = rejected("targets:\n  app: {run: echo\n", &[]);
    assert_errors_at(&err, &["2:8"]);
    assert!(err.contains("unclosed bracket"), "{err}");
    insta::assert_snapshot!("syntax_unclosed_flow_mapping", err);
}

#[test]
fn unknown_key_in_target() {
    let err = rejected("targets:\n  app:\n    run: echo hi\n    runn: echo typo\n", &[]);
    assert_errors_at(&err, &["4:5"]);
    assert!(err.contains("unknown field `runn`"), "{err}");
    insta::assert_snapshot!("unknown_key_in_target", err);
}

#[test]
fn unknown_top_level_key() {
    let err = rejected("target:\n  app:\n    run: echo\n", &[]);
    assert_errors_at(&err, &["1:1"]);
    assert!(err.contains("unknown field `target`"), "{err}");
    insta::assert_snapshot!("unknown_top_level_key", err);
}

#[test]
fn missing_targets() {
    let err = rejected("vars:\n  a: b\n", &[]);
    assert_errors_at(&err, &["1:1"]);
    assert!(err.contains("missing field `targets`"), "{err}");
    insta::assert_snapshot!("missing_targets", err);
}

#[test]
fn wrong_type_deps_not_a_list() {
    let err = rejected("targets:\n  gen:\n    run: echo\n  app:\n    run: echo\n    deps: gen\n", &[]);
    assert_errors_at(&err, &["6:11"]);
    insta::assert_snapshot!("wrong_type_deps_not_a_list", err);
}

#[test]
fn wrong_type_cache_not_a_bool() {
    let err = rejected("targets:\n  app:\n    run: echo\n    cache: 3\n", &[]);
    assert_errors_at(&err, &["4:12"]);
    insta::assert_snapshot!("wrong_type_cache_not_a_bool", err);
}

#[test]
fn wrong_type_env_not_a_map() {
    let err = rejected("targets:\n  app:\n    run: echo\n    env: [LC_ALL]\n", &[]);
    assert_errors_at(&err, &["4:10"]);
    insta::assert_snapshot!("wrong_type_env_not_a_map", err);
}

#[test]
fn wrong_value_restore_mode() {
    let err = rejected("targets:\n  app:\n    run: echo\n    restore: symlink\n", &[]);
    assert_errors_at(&err, &["4:14"]);
    assert!(err.contains("unknown variant `symlink`, expected one of copy, hardlink"), "{err}");
    insta::assert_snapshot!("wrong_value_restore_mode", err);
}

/// serde stops at the first error; gvbuild still reports one per target in one run.
#[test]
fn several_yaml_errors_reported_together() {
    let yaml = "\
targets:
  gen:
    runn: echo typo
  app:
    run: echo
    dpes: [gen]
  ok:
    run: echo
  last:
    run: echo
    cache: 3
default: ok
";
    let err = rejected(yaml, &[]);
    assert_errors_at(&err, &["3:5", "6:5", "11:12"]);
    assert!(err.contains("unknown field `runn`"), "{err}");
    assert!(err.contains("unknown field `dpes`"), "{err}");
    insta::assert_snapshot!("several_yaml_errors", err);
}

// ---------------------------------------------------------------------------------------------
// Names: deps, default, target names

#[test]
fn unknown_dep_with_did_you_mean() {
    let yaml = "\
targets:
  compile:
    run: echo
  app:
    deps: [compiel]
    run: echo
";
    let err = rejected(yaml, &[]);
    assert_errors_at(&err, &["5:12"]);
    assert!(err.contains("target `app` depends on unknown target `compiel`"), "{err}");
    assert!(err.contains("did you mean `compile`?"), "{err}");
    insta::assert_snapshot!("unknown_dep", err);
}

#[test]
fn unknown_dep_without_a_close_name() {
    let err = rejected("targets:\n  app:\n    deps: [zzz]\n    run: echo\n", &[]);
    assert_errors_at(&err, &["3:12"]);
    assert!(!err.contains("did you mean"), "{err}");
}

#[test]
fn unknown_default() {
    let err = rejected("default: ap\ntargets:\n  app:\n    run: echo\n", &[]);
    assert_errors_at(&err, &["1:10"]);
    assert!(err.contains("`default` names unknown target `ap`"), "{err}");
    assert!(err.contains("did you mean `app`?"), "{err}");
    insta::assert_snapshot!("unknown_default", err);
}

#[test]
fn reserved_target_names() {
    let err = rejected("targets:\n  list:\n    run: echo\n  cache:\n    run: echo\n", &[]);
    assert_errors_at(&err, &["2:3", "4:3"]);
    assert!(err.contains("target name `list` is reserved for the `gvbuild list` subcommand"), "{err}");
    assert!(err.contains("for example `cache-step`"), "{err}");
    insta::assert_snapshot!("reserved_target_names", err);
}

#[test]
fn invalid_target_names() {
    let err = rejected(
        "targets:\n  \"my app\":\n    run: echo\n  a/b:\n    run: echo\n  ok_1-2.x:\n    run: echo\n",
        &[],
    );
    assert_errors_at(&err, &["2:3", "4:3"]);
    assert!(err.contains("invalid target name `my app`"), "{err}");
    assert!(err.contains("invalid target name `a/b`"), "{err}");
    insta::assert_snapshot!("invalid_target_names", err);
}

// ---------------------------------------------------------------------------------------------
// The graph: cycles, groups, empty targets

#[test]
fn cycle_prints_the_whole_cycle() {
    let yaml = "\
targets:
  a:
    deps: [b]
    run: echo
  b:
    deps: [c]
    run: echo
  c:
    deps: [a]
    run: echo
";
    let err = rejected(yaml, &[]);
    assert_errors_at(&err, &["3:12"]);
    assert!(err.contains("dependency cycle: a -> b -> c -> a"), "{err}");
    assert_eq!(err.matches("part of the cycle").count(), 3, "every edge of the cycle is labelled:\n{err}");
    insta::assert_snapshot!("cycle", err);
}

#[test]
fn cycle_through_a_group() {
    let yaml = "\
targets:
  all:
    deps: [app]
  app:
    deps: [all]
    run: echo
";
    let err = rejected(yaml, &[]);
    assert_errors_at(&err, &["3:12"]);
    assert!(err.contains("dependency cycle: all -> app -> all"), "{err}");
}

#[test]
fn self_dependency() {
    let err = rejected("targets:\n  a:\n    deps: [a]\n    run: echo\n", &[]);
    assert_errors_at(&err, &["3:12"]);
    assert!(err.contains("dependency cycle: a -> a"), "{err}");
    insta::assert_snapshot!("self_dependency", err);
}

#[test]
fn group_with_step_fields() {
    let yaml = "\
targets:
  gen:
    run: echo
  all:
    deps: [gen]
    outputs: [out/all.txt]
";
    let err = rejected(yaml, &[]);
    assert_errors_at(&err, &["6:15"]);
    assert!(err.contains("`outputs` needs a step, but target `all` has none"), "{err}");
    insta::assert_snapshot!("group_with_outputs", err);
}

#[test]
fn target_with_neither_step_nor_deps() {
    let err = rejected("targets:\n  nothing:\n    description: does nothing\n", &[]);
    assert_errors_at(&err, &["2:3"]);
    assert!(err.contains("target `nothing` has no step and no deps"), "{err}");
    insta::assert_snapshot!("empty_target", err);
}

// ---------------------------------------------------------------------------------------------
// Outputs and inputs

#[test]
fn two_targets_claim_one_output() {
    let yaml = "\
targets:
  a:
    outputs: [out/x]
    run: echo
  b:
    outputs: [./out//x]
    run: echo
";
    let err = rejected(yaml, &[]);
    assert_errors_at(&err, &["3:15"]);
    assert!(err.contains("output `out/x` is claimed by both `a` and `b`"), "{err}");
    assert!(err.contains("claimed here by `a`") && err.contains("and here by `b`"), "{err}");
    insta::assert_snapshot!("output_claimed_twice", err);
}

#[test]
fn output_inside_another_targets_output() {
    let yaml = "\
targets:
  a:
    outputs: [out]
    run: echo
  b:
    outputs: [out/x]
    run: echo
";
    let err = rejected(yaml, &[]);
    assert_errors_at(&err, &["3:15"]);
    assert!(err.contains("output `out/x` of `b` lies inside output `out` of `a`"), "{err}");
    insta::assert_snapshot!("output_inside_output", err);
}

#[test]
fn output_outside_the_project() {
    let yaml = "\
targets:
  app:
    outputs: [../x, /tmp/x, build/../../y, build/../ok]
    depfile: ../app.d
    run: echo
";
    let err = rejected(yaml, &[]);
    assert_errors_at(&err, &["3:15", "3:21", "3:29", "4:14"]);
    for path in ["../x", "/tmp/x", "build/../../y", "../app.d"] {
        assert!(
            err.contains(&format!("output `{path}` of target `app` is outside the project folder")),
            "{path}: {err}"
        );
    }
    insta::assert_snapshot!("output_outside_project", err);
}

#[test]
fn output_is_the_project_folder() {
    let err = rejected("targets:\n  app:\n    outputs: [build/..]\n    run: echo\n", &[]);
    assert_errors_at(&err, &["3:15"]);
    assert!(err.contains("output `build/..` of target `app` is outside the project folder"), "{err}");
}

#[test]
fn glob_as_output() {
    let err = rejected("targets:\n  app:\n    outputs: [\"out/*.o\"]\n    run: echo\n", &[]);
    assert_errors_at(&err, &["3:15"]);
    assert!(err.contains("output `out/*.o` of target `app` is a glob"), "{err}");
    insta::assert_snapshot!("glob_output", err);
}

/// `..` climbing out is an error; system files by absolute path and `..` staying inside are not.
#[test]
fn input_climbing_out_of_the_project() {
    let yaml = "\
targets:
  app:
    inputs: [../x, src/../../y, /usr/include/stdio.h, src/../ok.c]
    outputs: [app]
    run: echo
";
    let err = rejected(yaml, &[]);
    assert_errors_at(&err, &["3:14", "3:20"]);
    assert!(err.contains("input `../x` of target `app` climbs out of the project folder"), "{err}");
    assert!(err.contains("input `src/../../y` of target `app` climbs out"), "{err}");
    insta::assert_snapshot!("input_outside_project", err);
}

#[test]
fn input_is_its_own_output() {
    let err =
        rejected("targets:\n  app:\n    inputs: [build/x.c]\n    outputs: [build]\n    run: echo\n", &[]);
    assert_errors_at(&err, &["3:14"]);
    assert!(err.contains("input `build/x.c` of target `app` overlaps its own output `build`"), "{err}");
    insta::assert_snapshot!("input_is_own_output", err);
}

#[test]
fn invalid_glob_input() {
    let err =
        rejected("targets:\n  app:\n    inputs: [\"src/[a\"]\n    outputs: [app]\n    run: echo\n", &[]);
    assert_errors_at(&err, &["3:14"]);
    assert!(err.contains("input `src/[a` of target `app` is not a valid glob"), "{err}");
    insta::assert_snapshot!("invalid_glob_input", err);
}

/// An input that reads another target's output makes its target depend on that target (the
/// dependency is inferred); where the producer already depends on the reader, that inferred
/// edge closes a cycle, and the error points at the input.
#[test]
fn inferred_dependency_closing_a_cycle_names_the_input() {
    let yaml = "\
targets:
  gen:
    deps: [app]
    outputs: [build/version.h]
    run: mkdir -p build && echo v > build/version.h
  app:
    inputs: [build/version.h]
    outputs: [app]
    run: cp build/version.h app
";
    let err = rejected(yaml, &[]);
    assert_errors_at(&err, &["7:14"]);
    assert!(
        err.contains("dependency cycle: app -> gen -> app, through the dependency of `app` on `gen`"),
        "{err}"
    );
    assert!(err.contains("reads `build/version.h`, an output of `gen`"), "{err}");
    assert!(err.contains("part of the cycle"), "the declared dep of the cycle is labelled too:\n{err}");
    insta::assert_snapshot!("inferred_edge_closes_a_cycle", err);
}

/// A cycle made only of inferred edges, from a glob and a folder: each input is labelled.
#[test]
fn inferred_dependencies_from_a_glob_and_a_folder_closing_a_cycle() {
    let yaml = "\
targets:
  gen:
    inputs: [\"docs/*.md\"]
    outputs: [build/version.h]
    run: echo
  docs:
    inputs: [build]
    outputs: [docs/api.md]
    run: echo
";
    let err = rejected(yaml, &[]);
    assert_errors_at(&err, &["3:14"]);
    assert!(err.contains("dependency cycle: gen -> docs -> gen"), "{err}");
    assert!(err.contains("reads `docs/api.md`, an output of `docs`"), "{err}");
    assert!(err.contains("reads `build/version.h`, an output of `gen`"), "{err}");
}

/// The same input is fine when a path of deps leads to its producer, through a step or a group.
#[test]
fn input_from_another_target_through_intermediate_deps_is_fine() {
    let yaml = "\
targets:
  gen:
    outputs: [build/version.h]
    run: mkdir -p build && echo v1 > build/version.h
  mid:
    deps: [gen]
    outputs: [mid.txt]
    run: echo mid > mid.txt
  app:
    deps: [mid]
    inputs: [build/version.h]
    outputs: [app.txt]
    run: cp build/version.h app.txt
  group:
    deps: [gen]
  viagroup:
    deps: [group]
    inputs: [build]
    outputs: [viagroup.txt]
    run: cat build/version.h > viagroup.txt
";
    let p = project(yaml);
    let b = p.build(&[]);
    assert_eq!(b.ran(), names(&["gen", "mid", "app", "viagroup"]));
    assert_eq!(p.read("app.txt"), "v1\n");
    assert_eq!(p.read("viagroup.txt"), "v1\n");
}

// ---------------------------------------------------------------------------------------------
// Vars

#[test]
fn undefined_var_with_did_you_mean() {
    let yaml = "\
vars:
  cuda_arch: sm_90
targets:
  app:
    outputs: [app]
    run: nvcc -arch=${cuda_ach} -o app app.cu
";
    let err = rejected(yaml, &[]);
    assert_errors_at(&err, &["6:21"]);
    assert!(err.contains("undefined var `cuda_ach`"), "{err}");
    assert!(err.contains("did you mean `cuda_arch`?"), "{err}");
    assert!(err.contains("write `$${cuda_ach}` to pass `${cuda_ach}`"), "{err}");
    insta::assert_snapshot!("undefined_var_did_you_mean", err);
}

#[test]
fn undefined_var_shows_the_dollar_dollar_hint() {
    let err = rejected("targets:\n  app:\n    outputs: [home.txt]\n    run: echo ${HOME} > home.txt\n", &[]);
    assert_errors_at(&err, &["4:15"]);
    assert!(err.contains("undefined var `HOME`"), "{err}");
    assert!(err.contains("--set HOME=VALUE"), "{err}");
    assert!(err.contains("write `$${HOME}` to pass `${HOME}`"), "{err}");
    insta::assert_snapshot!("undefined_var_dollar_hint", err);
}

/// Following the hint works: `$${X}` reaches the shell as `${X}`, and `--set` defines a var.
#[test]
fn dollar_dollar_and_set_make_the_same_file_valid() {
    let p = project(
        "vars:\n  Y: ~\ntargets:\n  app:\n    outputs: [o.txt]\n    run: printf '%s' '$${X} ${Y}' > o.txt\n",
    );
    rejected_in(&p, &[]);
    p.build(&["--set", "Y=why"]);
    assert_eq!(p.read("o.txt"), "${X} why");
}

#[test]
fn undefined_vars_in_every_field_of_a_step() {
    let yaml = "\
targets:
  app:
    inputs: [\"src/${a}.c\"]
    outputs: [\"out/${b}\"]
    depfile: out/${c}.d
    env: { K: \"${d}\" }
    tools: [\"${e}\"]
    run: echo ${f}
";
    let err = rejected(yaml, &[]);
    // Reported in the order gvbuild reads the fields (the command first), each at its `${...}`.
    assert_errors_at(&err, &["8:15", "5:18", "6:16", "7:14", "3:19", "4:20"]);
}

/// YAML itself forbids `{` in a plain scalar inside `[...]`: `${var}` there must be quoted.
#[test]
fn var_in_an_unquoted_flow_list_is_a_yaml_error() {
    let yaml = "vars:\n  v: x\ntargets:\n  app:\n    inputs: [src/${v}.c]\n    run: echo\n";
    let err = rejected(yaml, &[]);
    assert_errors_at(&err, &["5:19"]);
    insta::assert_snapshot!("var_in_unquoted_flow_list", err);
}

#[test]
fn unclosed_var() {
    let err = rejected("vars:\n  x: y\ntargets:\n  app:\n    run: echo ${x\n", &[]);
    assert_errors_at(&err, &["5:15"]);
    assert!(err.contains("`${` without a closing `}`"), "{err}");
    insta::assert_snapshot!("unclosed_var", err);
}

/// A var declared as `~` is an error only when a step being built uses it.
#[test]
fn unset_var_is_an_error_only_for_steps_being_built() {
    let yaml = "\
vars:
  pin: ~
targets:
  fetch:
    outputs: [fetched.txt]
    run: echo ${pin} > fetched.txt
  other:
    outputs: [other.txt]
    run: echo other > other.txt
  user:
    deps: [fetch]
    outputs: [user.txt]
    run: cp fetched.txt user.txt
";
    let p = project(yaml);
    // Not building `fetch`: fine (and `list` builds nothing).
    assert_eq!(p.build(&["other"]).ran(), names(&["other"]));
    p.gvbuild(&["list"]).success().stdout_has("fetch");

    // Building it (the graph now comes from the parse cache): an error, nothing run.
    let err = rejected_in(&p, &["fetch"]);
    assert_errors_at(&err, &["6:15"]);
    assert!(err.contains("var `pin` has no value, and target `fetch` uses it"), "{err}");
    assert!(err.contains("--set pin=VALUE"), "{err}");
    insta::assert_snapshot!("unset_var", err);
    assert!(!p.exists("fetched.txt"));

    // Also when it is built as a dependency, or as part of "everything", or in a dry run.
    assert_errors_at(&rejected_in(&p, &["user"]), &["6:15"]);
    assert_errors_at(&rejected_in(&p, &[]), &["6:15"]);
    assert_errors_at(&rejected_in(&p, &["-n", "fetch"]), &["6:15"]);

    // Pinned on the command line: it builds.
    assert_eq!(p.build(&["--set", "pin=abc", "user"]).ran(), names(&["fetch", "user"]));
    assert_eq!(p.read("user.txt"), "abc\n");
}

// ---------------------------------------------------------------------------------------------
// Several kinds of error in one file, one run

#[test]
fn several_validation_errors_reported_together() {
    let yaml = "\
targets:
  gen:
    outputs: [gen.txt]
    run: echo
  app:
    deps: [gen, gne_typo]
    outputs: [../app]
    run: cc -o app ${CC}
";
    let err = rejected(yaml, &[]);
    assert_errors_at(&err, &["6:17", "8:20", "7:15"]);
    assert!(err.contains("unknown target `gne_typo`"), "{err}");
    assert!(err.contains("undefined var `CC`"), "{err}");
    assert!(err.contains("output `../app` of target `app` is outside the project folder"), "{err}");
    insta::assert_snapshot!("several_validation_errors", err);
}

#[test]
fn several_graph_errors_reported_together() {
    let yaml = "\
targets:
  c:
    inputs: [out/a]
    outputs: [c]
    run: echo
  a:
    deps: [c]
    outputs: [out/a]
    run: echo
  b:
    outputs: [out/a]
    run: echo
";
    let err = rejected(yaml, &[]);
    assert_errors_at(&err, &["8:15", "3:14"]);
    assert!(err.contains("output `out/a` is claimed by both `a` and `b`"), "{err}");
    assert!(err.contains("dependency cycle: c -> a -> c"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Every command that reads the file rejects it; the parse cache never hides an error

#[test]
fn list_graph_and_clean_reject_an_invalid_file() {
    let p = project("targets:\n  app:\n    deps: [nope]\n    run: echo\n");
    for args in [&["list"][..], &["graph"], &["graph", "--format", "json"], &["clean"], &["build", "app"]] {
        assert_errors_at(&rejected_in(&p, args), &["3:12"]);
    }
}

#[test]
fn an_edit_that_breaks_a_cached_file_is_reported() {
    let p = project("targets:\n  app:\n    outputs: [app.txt]\n    run: echo hi > app.txt\n");
    assert_eq!(p.build(&[]).ran(), names(&["app"]));
    p.write("gevulot.yaml", "targets:\n  app:\n    outputs: [app.txt]\n    run: echo ${nope} > app.txt\n");
    assert_errors_at(&rejected_in(&p, &[]), &["4:15"]);
    // Twice: an invalid file is never cached as valid.
    assert_errors_at(&rejected_in(&p, &[]), &["4:15"]);
}

#[test]
fn diagnostics_name_the_file_as_given_with_f_and_c() {
    let yaml = "targets:\n  app:\n    deps: [nope]\n    run: echo\n";
    let p = Project::new().file("sub/gevulot.yaml", yaml).file("other.yaml", yaml);
    let err = rejected_in(&p, &["-C", "sub"]);
    assert_eq!(locations(&err), ["sub/gevulot.yaml:3:12"], "{err}");
    let err = rejected_in(&p, &["-f", "other.yaml"]);
    assert_eq!(locations(&err), ["other.yaml:3:12"], "{err}");
}

// ---------------------------------------------------------------------------------------------
// The command line

#[test]
fn missing_build_file() {
    let p = Project::new();
    let err = rejected_in(&p, &[]);
    assert!(err.contains("no gevulot.yaml in [PROJECT] or any parent folder"), "{err}");
    assert!(!err.contains("error in the build file"), "{err}");
    insta::assert_snapshot!("missing_build_file", err);

    let err = rejected_in(&p, &["-f", "nope.yaml"]);
    assert!(err.contains("cannot read the build file [PROJECT]/nope.yaml"), "{err}");
}

#[test]
fn set_without_equals() {
    let p = project("targets:\n  app:\n    run: echo\n");
    let err = rejected_in(&p, &["--set", "cuda_arch"]);
    assert!(err.contains("--set takes NAME=VALUE, got `cuda_arch`"), "{err}");
    insta::assert_snapshot!("set_without_equals", err);
    let err = rejected_in(&p, &["--set", "=sm_90"]);
    assert!(err.contains("--set takes NAME=VALUE, got `=sm_90`"), "{err}");
}

#[test]
fn unknown_target_on_the_command_line() {
    let p = project("targets:\n  gen:\n    run: echo\n  app:\n    run: echo\n");
    let err = rejected_in(&p, &["ap"]);
    assert!(err.contains("no target named `ap` in this project; did you mean `app`?"), "{err}");
    insta::assert_snapshot!("unknown_target_cli", err);

    let err = rejected_in(&p, &["--target", "ap"]);
    assert!(err.contains("did you mean `app`?"), "{err}");
    let err = rejected_in(&p, &["zzzz"]);
    assert!(
        err.contains("no target named `zzzz` in this project; `gvbuild list` shows the targets"),
        "{err}"
    );
    insta::assert_snapshot!("unknown_target_cli_no_suggestion", err);
    let err = rejected_in(&p, &["--rebuild", "zzzz"]);
    assert!(err.contains("--rebuild: no target named `zzzz` in this project"), "{err}");
    let err = rejected_in(&p, &["clean", "zzzz"]);
    assert!(err.contains("no target named `zzzz`"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Regressions: each pins a bug that was found and fixed.

/// Unknown keys once listed every field instead of saying "did you mean".
#[test]
fn regression_unknown_key_suggests_the_closest_key() {
    let err = rejected("targets:\n  app:\n    run: echo hi\n    runn: echo typo\n", &[]);
    assert!(err.contains("did you mean `run`?"), "{err}");
    let err = rejected("target:\n  app:\n    run: echo\n", &[]);
    assert!(err.contains("did you mean `targets`?"), "{err}");
}

/// Two swapped letters in a short name once got no suggestion (Jaro-Winkler alone scores `gne`
/// 0.56 against `gen`); an edit distance that counts a swap as one edit catches it.
#[test]
fn regression_swapped_letters_in_a_short_name_get_a_suggestion() {
    let err = rejected("targets:\n  gen:\n    run: echo\n  app:\n    deps: [gne]\n    run: echo\n", &[]);
    assert_errors_at(&err, &["5:12"]);
    assert!(err.contains("did you mean `gen`?"), "{err}");
}

/// An undefined var in a multi-line `run: |` script was once reported with the whole script as
/// its span; it must point at the `${...}` itself.
#[test]
fn regression_undefined_var_in_a_block_scalar_points_at_the_reference() {
    let yaml = "\
vars:
  cc: gcc
targets:
  app:
    outputs: [app]
    run: |
      set -e
      ${ccc} -o app main.c
      echo done
";
    let err = rejected(yaml, &[]);
    assert!(err.contains("did you mean `cc`?"), "{err}");
    assert_errors_at(&err, &["8:7"]);
}

/// Two targets with one name once got a message telling the user to configure serde-saphyr.
#[test]
fn regression_duplicate_target_message_speaks_of_the_yaml() {
    let err = rejected("targets:\n  app:\n    run: echo 1\n  app:\n    run: echo 2\n", &[]);
    assert_errors_at(&err, &["4:3"]);
    assert!(!err.contains("DuplicateKeyPolicy"), "{err}");
}

/// An empty gevulot.yaml once got "unexpected end of input" and an empty snippet.
#[test]
fn regression_empty_file_says_what_a_build_file_needs() {
    let err = rejected("", &[]);
    assert!(err.contains("targets"), "{err}");
}

/// `--set` for a var the file does not declare is an error with "did you mean", as in just.
#[test]
fn set_of_an_undeclared_var() {
    let yaml = "vars:\n  cflags: -O2\ntargets:\n  t:\n    outputs: [o]\n    run: echo ${cflags} > o\n";
    let err = rejected(yaml, &["--set", "cflag=-O0"]);
    assert!(err.contains("--set cflag=...: this gevulot.yaml declares no var `cflag`"), "{err}");
    assert!(err.contains("did you mean `cflags`?"), "{err}");
    insta::assert_snapshot!("set_of_an_undeclared_var", err);
}

/// Vars may use vars, `--set` applied first; a cycle is an error that prints the cycle.
#[test]
fn vars_use_vars_and_a_cycle_is_an_error() {
    let p = project(&y(r#"
        vars:
          version: "1"
          url: https://example.com/v${version}/x-${version}.tgz
          msg: "${url} $${HOME}"
        targets:
          t:
            outputs: [o]
            run: "echo '${msg}' > o"
        "#));
    p.build(&[]);
    assert_eq!(p.read("o"), "https://example.com/v1/x-1.tgz ${HOME}\n");
    p.build(&["--set", "version=2"]);
    assert_eq!(p.read("o"), "https://example.com/v2/x-2.tgz ${HOME}\n");

    let err = rejected(
        &y(r#"
        vars:
          a: x${b}
          b: y${c}
          c: z${a}
        targets:
          t:
            outputs: [o]
            run: echo ${a} > o
        "#),
        &[],
    );
    assert!(err.contains("vars use each other in a cycle: a -> b -> c -> a"), "{err}");
    assert_eq!(err.matches("cycle:").count(), 1, "reported once: {err}");
    insta::assert_snapshot!("var_cycle", err);
}

/// A var whose value uses an unset var is unset itself: an error only when a step uses it.
#[test]
fn a_var_using_an_unset_var_is_unset() {
    let yaml = "vars:\n  sha: ~\n  pin: sha256:${sha}\ntargets:\n  t:\n    outputs: [o]\n    run: echo ${pin} > o\n  u:\n    outputs: [u]\n    run: echo > u\n";
    let p = project(yaml);
    p.build(&["u"]);
    let err = rejected_in(&p, &["t"]);
    assert!(err.contains("var `pin` has no value, and target `t` uses it"), "{err}");
    p.build(&["t", "--set", "sha=abc"]);
    assert_eq!(p.read("o"), "sha256:abc\n");
}
