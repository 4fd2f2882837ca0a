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

/// The build-file diagnostic reports exactly these errors, one snippet each, in this order (the
/// order of their places in the file), each at `gevulot.yaml:LINE:COL` (`at`), each headed once
/// by its code, each snippet with at least one label under a source line, and then their count.
fn assert_errors_at(stderr: &str, at: &[&str]) {
    let n = at.len();
    let count = format!("gevulot.yaml: {n} error{} in the build file", if n == 1 { "" } else { "s" });
    assert_eq!(stderr.lines().last(), Some(count.as_str()), "the count comes last in:\n{stderr}");
    let expected: Vec<String> = at.iter().map(|a| format!("gevulot.yaml:{a}")).collect();
    assert_eq!(locations(stderr), expected, "snippet locations in:\n{stderr}");
    let headings = stderr.lines().filter(|l| l.starts_with("gvbuild::config::")).count();
    assert_eq!(headings, n, "one heading per error in:\n{stderr}");
    assert_eq!(stderr.matches("gvbuild::config").count(), n, "nothing else headed in:\n{stderr}");
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
    assert!(err.contains("unknown key `runn` in target `app`"), "{err}");
    assert!(err.contains("did you mean `run`?"), "{err}");
    insta::assert_snapshot!("unknown_key_in_target", err);
}

#[test]
fn unknown_top_level_key() {
    let err = rejected("target:\n  app:\n    run: echo\n", &[]);
    assert_errors_at(&err, &["1:1"]);
    assert!(err.contains("unknown top-level key `target`"), "{err}");
    assert!(err.contains("did you mean `targets`?"), "{err}");
    insta::assert_snapshot!("unknown_top_level_key", err);
}

#[test]
fn missing_targets() {
    let err = rejected("vars:\n  a: b\n", &[]);
    assert_errors_at(&err, &["1:1"]);
    assert!(err.contains("the build file has no `targets`"), "{err}");
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
    assert!(err.contains("`restore` of target `app` is `copy` or `hardlink`"), "{err}");
    insta::assert_snapshot!("wrong_value_restore_mode", err);
}

/// serde stops at the first error; gvbuild still reports every one in one run.
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
    assert!(err.contains("unknown key `runn` in target `gen`"), "{err}");
    assert!(err.contains("unknown key `dpes` in target `app`"), "{err}");
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

/// Targets may take subcommand names, those of today and those to come (`completions`, `man`,
/// `worker`), so that a project keeps loading when gvbuild gains a subcommand. `gvbuild build
/// NAME` and `gvbuild --target NAME` build such a target; a bare `gvbuild NAME` runs the
/// subcommand.
#[test]
fn targets_named_like_subcommands_load_and_build() {
    let mut yaml = String::from("targets:\n");
    let subcommands = [
        "build",
        "list",
        "graph",
        "clean",
        "cache",
        "hash",
        "libs",
        "inspect",
        "schema",
        "completions",
        "man",
        "worker",
    ];
    for name in subcommands {
        yaml.push_str(&format!("  {name}:\n    outputs: [{name}.txt]\n    run: echo {name} > {name}.txt\n"));
    }
    let p = project(&yaml);
    p.gvbuild(&["list"]).success().stdout_has("completions");
    assert_eq!(p.build(&["build", "list"]).ran(), names(&["list"]));
    assert_eq!(p.read("list.txt"), "list\n");
    assert_eq!(p.build(&["--target", "cache", "--target", "worker"]).ran(), names(&["cache", "worker"]));
    assert_eq!(p.build(&["build", "build", "man"]).ran(), names(&["build", "man"]));
    assert_eq!(p.read("build.txt"), "build\n");
    // Everything else, by default.
    assert_eq!(p.build(&[]).ran().len(), subcommands.len() - 5);
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
    // Reported in the order of the file, each at its `${...}`.
    assert_errors_at(&err, &["3:19", "4:20", "5:18", "6:16", "7:14", "8:15"]);
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
    assert_errors_at(&err, &["6:17", "7:15", "8:20"]);
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
    assert_errors_at(&err, &["3:14", "8:15"]);
    assert!(err.contains("output `out/a` is claimed by both `a` and `b`"), "{err}");
    assert!(err.contains("dependency cycle: c -> a -> c"), "{err}");
}

/// A file with six mistakes of six kinds gets all six in one run, each once, and nothing that
/// follows from another: the target with the misspelled `run` is not also "a group with
/// outputs", and the fetch whose `sha256` names an undefined var is not also "not 64 hex
/// digits" (nor a hint with a URL cut short).
#[test]
fn every_mistake_in_one_run_each_once() {
    let yaml = "\
vars:
  mirror: https://example.com
targets:
  gen:
    outputs: out/gen.txt
    run: echo gen > out/gen.txt
  app:
    deps: [gen, tol]
    outputs: [app]
    rnu: echo ${mirror}
  tool:
    outputs: [tool]
    run: cc -o tool ${CC}
  a:
    deps: [b]
    run: echo a
  b:
    deps: [a]
    run: echo b
  nanos:
    fetch:
      url: ${mirror}/nanos.tgz
      sha256: ${nanos_sha}
      into: build/nanos
";
    let p = project(yaml);
    let err = rejected_in(&p, &[]);
    assert_errors_at(&err, &["5:14", "8:17", "10:5", "13:21", "15:12", "23:15"]);
    assert!(err.contains("`outputs` of target `gen` is a list of paths"), "{err}");
    assert!(err.contains("write `[out/gen.txt]`"), "{err}");
    assert!(err.contains("target `app` depends on unknown target `tol`"), "{err}");
    assert!(err.contains("did you mean `tool`?"), "{err}");
    assert!(err.contains("unknown key `rnu` in target `app`"), "{err}");
    assert!(err.contains("did you mean `run`?"), "{err}");
    assert!(err.contains("undefined var `CC`"), "{err}");
    assert!(err.contains("dependency cycle: a -> b -> a"), "{err}");
    assert!(err.contains("undefined var `nanos_sha`"), "{err}");
    assert!(!err.contains("hex digits") && !err.contains("gvbuild hash"), "a follow-on error:\n{err}");
    insta::assert_snapshot!("every_mistake_in_one_run", err);

    // The same with --json: one object per error on stdout, and exit status 2.
    let run = p.gvbuild(&["--json"]).exit(2);
    assert_eq!(run.stderr(), "", "with --json, nothing on stderr");
    let errors: Vec<serde_json::Value> =
        run.stdout().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(errors.len(), 6, "{}", run.stdout());
    let places: Vec<(u64, u64)> =
        errors.iter().map(|e| (e["line"].as_u64().unwrap(), e["column"].as_u64().unwrap())).collect();
    assert_eq!(places, [(5, 14), (8, 17), (10, 5), (13, 21), (15, 12), (23, 15)]);
    for e in &errors {
        assert_eq!(e["event"], "error", "{e}");
        assert_eq!(e["file"], "gevulot.yaml", "{e}");
        assert!(e["code"].as_str().unwrap().starts_with("gvbuild::config::"), "{e}");
        assert!(!e["message"].as_str().unwrap().is_empty(), "{e}");
        assert!(e["help"].is_string(), "{e}");
    }
    assert_eq!(errors[0]["code"], "gvbuild::config::wrong_type");
    assert_eq!(errors[0]["message"], "`outputs` of target `gen` is a list of paths");
    assert_eq!(errors[0]["help"], "write `[out/gen.txt]`");
    assert_eq!(errors[5]["code"], "gvbuild::config::undefined_var");
    assert_eq!(errors[5]["message"], "undefined var `nanos_sha`");
    // `build --json` is the same.
    let again = p.gvbuild(&["build", "--json"]).exit(2);
    assert_eq!(again.stdout(), run.stdout());
}

/// `--json` config errors without a place in the file (a `--set` of an undeclared var) have
/// `null` line and column; an unset var found when building is an error object too.
#[test]
fn json_config_errors_without_a_place_and_at_build_time() {
    let p = project("vars:\n  pin: ~\ntargets:\n  t:\n    outputs: [o]\n    run: echo ${pin} > o\n");
    let run = p.gvbuild(&["--json", "--set", "pni=1"]).exit(2);
    let e: serde_json::Value = serde_json::from_str(run.stdout().trim()).unwrap();
    assert_eq!(e["code"], "gvbuild::config::unknown_set");
    assert!(e["line"].is_null() && e["column"].is_null(), "{e}");
    assert_eq!(e["help"], "did you mean `pin`?");
    let run = p.gvbuild(&["--json"]).exit(2);
    let e: serde_json::Value = serde_json::from_str(run.stdout().trim()).unwrap();
    assert_eq!(e["code"], "gvbuild::config::unset_var");
    assert_eq!((e["line"].as_u64(), e["column"].as_u64()), (Some(6), Some(15)));
}

/// A value of the wrong type is reported in gevulot.yaml's terms, for every list, map, string,
/// boolean and step field of a target, all in one run, each with what to write instead.
#[test]
fn wrong_types_in_gevulot_yaml_terms() {
    let cases: &[(&str, &str, &str, &str)] = &[
        ("description", "[a, b]", "`description` of target `t0` is one line of text", "write one string"),
        ("deps", "gen", "`deps` of target `t1` is a list of target names", "write `[gen]`"),
        ("inputs", "src/a.c", "`inputs` of target `t2` is a list of paths and globs", "write `[src/a.c]`"),
        ("outputs", "out/c", "`outputs` of target `t3` is a list of paths", "write `[out/c]`"),
        (
            "run",
            "[cc -c a.c]",
            "`run` of target `t4` is a shell command (a string)",
            "write `cc -c a.c`, without the brackets",
        ),
        ("depfile", "{a: b}", "`depfile` of target `t5` is a path", "quote the value"),
        (
            "env",
            "[LC_ALL=C]",
            "`env` of target `t6` is a map of variable names to values",
            "write `{ LC_ALL: C }`",
        ),
        ("pass_env", "HOME", "`pass_env` of target `t7` is a list of variable names", "write `[HOME]`"),
        ("tools", "nvcc", "`tools` of target `t8` is a list of programs", "write `[nvcc]`"),
        ("cache", "3", "`cache` of target `t9` is `true` or `false`", "write `true` or `false`"),
        (
            "restore",
            "hardlinks",
            "`restore` of target `t10` is `copy` or `hardlink`",
            "did you mean `hardlink`?",
        ),
        (
            "fetch",
            "https://example.com/x.tgz",
            "`fetch` of target `t11` is a map of the download's settings",
            "write a map of its keys: url, git",
        ),
        (
            "stage",
            "[build/root]",
            "`stage` of target `t12` is a map of the stage root's settings",
            "write a map of its keys: into, copy",
        ),
        (
            "env",
            "{ A: [x] }",
            "`env` of target `t13` is a map of variable names to values",
            "write one string",
        ),
        ("inputs", "[a, [b]]", "`inputs` of target `t14` is a list of paths and globs", "write one string"),
    ];
    let mut yaml = String::from("targets:\n  gen:\n    run: echo\n");
    for (i, (field, value, _, _)) in cases.iter().enumerate() {
        // Nothing else in the target: no follow-on error ("no step and no deps") may appear.
        yaml.push_str(&format!("  t{i}:\n    {field}: {value}\n"));
    }
    let err = rejected(&yaml, &[]);
    let at: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(i, (field, value, _, _))| {
            // The value's place; inside a list or map, the entry's.
            let inner = match *value {
                "{ A: [x] }" => 5,
                "[a, [b]]" => 4,
                _ => 0,
            };
            format!("{}:{}", 5 + 2 * i, 7 + field.len() + inner)
        })
        .collect();
    assert_errors_at(&err, &at.iter().map(String::as_str).collect::<Vec<_>>());
    for (_, _, message, help) in cases {
        assert!(err.contains(message), "{message}:\n{err}");
        assert!(err.contains(help), "{help}:\n{err}");
    }
    assert!(!err.contains("expected") && !err.contains("sequence"), "the parser's terms:\n{err}");
    insta::assert_snapshot!("wrong_types", err);
}

/// Inside a built-in step: the wrong type, a missing key and an undefined var are reported; the
/// checks of the step as a whole (its pin, its builder) are not, as they would follow from these.
#[test]
fn wrong_types_and_missing_keys_in_a_step() {
    let yaml = "\
targets:
  nanos:
    fetch:
      url: https://example.com/nanos.tgz
      sha256: ${nope}
      extract: { strip_components: one }
  root:
    stage:
      copy: [{ from: a }]
  user:
    deps: [nanos, root]
";
    let err = rejected(yaml, &[]);
    assert_errors_at(&err, &["3:5", "5:15", "6:36", "8:5", "9:14"]);
    assert!(err.contains("`fetch` of target `nanos` needs `into`"), "{err}");
    assert!(err.contains("`fetch.extract.strip_components` of target `nanos` is a whole number"), "{err}");
    assert!(err.contains("`stage` of target `root` needs `into`"), "{err}");
    assert!(err.contains("`stage.copy` of target `root` needs `to`"), "{err}");
    insta::assert_snapshot!("wrong_types_in_a_step", err);
}

/// A target whose body is not a map is one error; deps on it are not "unknown".
#[test]
fn a_target_that_is_not_a_map_still_exists() {
    let yaml = "targets:\n  gen: echo hi\n  app:\n    deps: [gen]\n    run: echo\n";
    let err = rejected(yaml, &[]);
    assert_errors_at(&err, &["2:8"]);
    assert!(err.contains("target `gen` is a map\n"), "{err}");
    assert!(err.contains("write a map of its keys: description, deps"), "{err}");
}

/// A key given twice in a target is reported with the rest; the first one is kept.
#[test]
fn a_key_given_twice_in_a_target() {
    let yaml = "targets:\n  app:\n    run: echo\n    deps: [nope]\n    run: echo 2\n";
    let err = rejected(yaml, &[]);
    assert_errors_at(&err, &["4:12", "5:5"]);
    assert!(err.contains("`run` is given twice in target `app`"), "{err}");
}

/// Top-level keys starting with `x-` are ignored, so YAML anchors can live there (as in Compose
/// files), and the JSON Schema allows them; any other unknown top-level key is still an error.
#[test]
fn x_keys_hold_anchors_and_other_unknown_top_level_keys_are_errors() {
    let yaml = "\
x-defaults: &defaults
  env: { GREETING: hello }
  pass_env: [HOME]
x-command: &command echo $GREETING > out.txt
x-anything: [1, {a: b}]
targets:
  app:
    <<: *defaults
    outputs: [out.txt]
    run: *command
";
    let p = project(yaml);
    assert_eq!(p.build(&[]).ran(), names(&["app"]));
    assert_eq!(p.read("out.txt"), "hello\n");

    let err = rejected(&format!("varz:\n  a: b\n{yaml}"), &[]);
    assert_errors_at(&err, &["1:1"]);
    assert!(err.contains("unknown top-level key `varz`"), "{err}");
    assert!(err.contains("did you mean `vars`?"), "{err}");
    // The help is wrapped to the terminal's width: read it as one line.
    let flat = err.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat.contains("keys starting with `x-` are ignored"), "{err}");

    let schema = p.gvbuild(&["schema"]).success().stdout();
    assert!(schema.contains("\"patternProperties\": {\n    \"^x-\": true"), "{schema}");
    assert!(schema.contains("\"additionalProperties\": false"), "{schema}");
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

/// Regression: a var cycle closed by a `--set` value pointed at the file's own (innocent) value
/// of that var. It now points at a value in the file that takes part, and names the `--set`.
#[test]
fn a_var_cycle_through_set_names_it() {
    let yaml =
        "vars:\n  v: \"1\"\n  x: ${w}\n  w: ${v}\ntargets:\n  t:\n    outputs: [o]\n    run: echo ${x} > o\n";
    let err = rejected(yaml, &["--set", "v=${x}"]);
    assert!(err.contains("(`v` given by --set)"), "{err}");
    assert!(!err.contains("2 |   v: \"1\"\n   :"), "the file's value of v is not the culprit: {err}");
    assert!(err.contains("${w}") || err.contains("${v}"), "{err}");
}

/// Regression (found by the loader's fuzzer): a declared dependency cycle together with an
/// input that reads another target's output sent the inference's level walk round the cycle
/// forever, allocating until memory ran out. Now the cycle is reported and the walk ends.
#[test]
fn a_declared_cycle_beside_an_inferred_read_is_reported() {
    let yaml = "targets:\n  a:\n    deps: [b]\n    outputs: [out/a]\n    run: echo > out/a\n  b:\n    deps: [a]\n    outputs: [out/b]\n    run: echo > out/b\n  c:\n    inputs: [out/a]\n    outputs: [out/c]\n    run: cp out/a out/c\n";
    let err = rejected(yaml, &["list"]);
    assert!(err.contains("cycle"), "{err}");
}

/// A big generated file loads (a fixed budget of 250,000 nodes, serde-saphyr's, would refuse a
/// 100,000-target file); the budget still stops what only aliases can do (a "billion laughs"
/// in a few hundred bytes) and absurd nesting, with an error in gevulot.yaml's terms.
#[test]
fn big_files_load_and_alias_bombs_and_deep_nesting_are_refused() {
    // 60,000 targets: 300,000+ YAML nodes.
    let mut yaml = String::from("targets:\n");
    for i in 0..60_000 {
        yaml.push_str(&format!("  t{i}:\n    outputs: [out/t{i}.txt]\n    run: echo {i} > out/t{i}.txt\n"));
    }
    let p = Project::new().file("gevulot.yaml", &yaml);
    p.gvbuild(&["list"]).success().stdout_has("t59999");

    let mut bomb = String::from("x-a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..9 {
        let prev = format!("*a{}", i - 1);
        bomb.push_str(&format!("x-a{i}: &a{i} [{}]\n", [prev.as_str(); 10].join(", ")));
    }
    bomb.push_str("targets:\n  t:\n    outputs: [t.txt]\n    run: echo > t.txt\n");
    let p = Project::new().file("gevulot.yaml", &bomb);
    let err = p.gvbuild(&[]).exit(2).stderr();
    assert!(err.contains("costs far more to read than its size"), "{err}");
    assert!(err.contains("gevulot.yaml"), "{err}");

    let deep = format!(
        "x-deep: {}{}\ntargets:\n  t:\n    outputs: [t.txt]\n    run: echo > t.txt\n",
        "[".repeat(300),
        "]".repeat(300)
    );
    let err = Project::new().file("gevulot.yaml", &deep).gvbuild(&[]).exit(2).stderr();
    assert!(err.contains("gevulot.yaml"), "{err}");
}

/// A big file is read in parts on every core (`config/pieces.rs`): what the checks after the
/// reading find is still reported at its line and column, as is a YAML error in the second
/// half (which sends the file back to the sequential reader).
#[test]
fn a_big_file_read_in_pieces_reports_errors_where_they_are() {
    let target = |i: usize| {
        format!(
            "  t{i}:\n    deps: [{}]\n    outputs: [out/t{i}.txt]\n    run: echo {i} > out/t{i}.txt\n",
            match i {
                0 => String::new(),
                _ => format!("t{}", i - 1),
            }
        )
    };
    // 9,000 targets of 4 lines after a 2-line head: target `i` starts on line 3 + 4i.
    let mut yaml = String::from("default: t8999\ntargets:\n");
    for i in 0..9000 {
        yaml.push_str(&target(i));
    }
    assert!(yaml.len() > 512 * 1024, "big enough to be cut");
    let p = project(&yaml);
    p.gvbuild(&["list"]).success().stdout_has("t8999");

    // Unknown deps near the start and near the end: found by validation after the reading.
    let bad = yaml.replace("deps: [t9]\n", "deps: [nine]\n").replace("deps: [t8990]\n", "deps: [t8990x]\n");
    let err = rejected(&bad, &["list"]);
    assert_errors_at(&err, &[&format!("{}:12", 4 + 4 * 10), &format!("{}:12", 4 + 4 * 8991)]);

    // A YAML syntax error in the last target.
    let broken = yaml.replace("run: echo 8998 > out/t8998.txt\n", "run: \"echo 8998 > out/t8998.txt\n");
    let err = rejected(&broken, &["list"]);
    assert!(err.contains(&format!("gevulot.yaml:{}:", 6 + 4 * 8998)), "{err}");
}
