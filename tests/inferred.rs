//! Inferred dependencies: an input that reads another target's declared output makes its target
//! depend on that target, as make and ninja do. Every test here but the last once failed:
//! gvbuild refused the file ("input ... is an output of `gen`, but `app` does not depend on
//! `gen`"). The cycles an inferred edge closes are in `errors.rs`.
use crate::support::*;

/// `app` comes first in the file and declares no deps, so only the inferred edge orders it after
/// `gen`; its command fails if `gen` has not run yet.
const FILE_INPUT: &str = "\
targets:
  app:
    inputs: [build/version.h]
    outputs: [app.txt]
    run: cp build/version.h app.txt
  gen:
    inputs: [VERSION]
    outputs: [build/version.h]
    run: mkdir -p build && cp VERSION build/version.h
";

fn file_input() -> Project {
    Project::new().file("gevulot.yaml", FILE_INPUT).file("VERSION", "v1\n")
}

/// An input file that is another target's output was refused; now it infers the dependency and
/// builds in order, from a clean tree too (inference reads the declared outputs, not the disk).
#[test]
fn an_input_file_that_is_another_targets_output_infers_the_dependency() {
    let p = file_input();
    assert!(!p.exists("build"), "a clean tree: the output the inference rests on does not exist");
    let b = p.build(&["-j", "2"]);
    assert_eq!(b.ran(), names(&["app", "gen"]));
    assert_eq!(p.read("app.txt"), "v1\n");
    // `gvbuild clean` leaves a clean tree again: both are restored from the cache, in order.
    p.gvbuild(&["clean"]).success();
    assert!(!p.exists("build/version.h") && !p.exists("app.txt"));
    let b = p.build(&[]);
    assert_eq!(b.restored(), names(&["app", "gen"]));
    assert_eq!(p.read("app.txt"), "v1\n");
    // A fresh clone (no .gvbuild/, no outputs) infers the same edge and restores everything.
    let clone = p.clone_to_new_folder();
    std::fs::remove_dir_all(clone.path("build")).unwrap();
    std::fs::remove_file(clone.path("app.txt")).unwrap();
    assert_eq!(clone.build(&[]).restored(), names(&["app", "gen"]));
}

/// An input folder that holds another target's output was refused; now it infers the edge.
#[test]
fn an_input_folder_holding_another_targets_output_infers_the_dependency() {
    let p = Project::new().file(
        "gevulot.yaml",
        "\
targets:
  pack:
    inputs: [build]
    outputs: [pack.txt]
    run: cat build/inc/version.h > pack.txt
  gen:
    outputs: [build/inc/version.h]
    run: mkdir -p build/inc && echo v1 > build/inc/version.h
",
    );
    assert_eq!(p.build(&[]).ran(), names(&["gen", "pack"]));
    assert_eq!(p.read("pack.txt"), "v1\n");
}

/// An input inside another target's output folder was refused; now it infers the edge.
#[test]
fn an_input_inside_another_targets_output_folder_infers_the_dependency() {
    let p = Project::new().file(
        "gevulot.yaml",
        "\
targets:
  use:
    inputs: [vendor/lib/readme.txt]
    outputs: [use.txt]
    run: cp vendor/lib/readme.txt use.txt
  vendor:
    outputs: [vendor/lib]
    run: mkdir -p vendor/lib && echo vendored > vendor/lib/readme.txt
",
    );
    assert_eq!(p.build(&[]).ran(), names(&["use", "vendor"]));
    assert_eq!(p.read("use.txt"), "vendored\n");
}

/// A glob that matches another target's output was refused; now it infers the edge. A glob that
/// can only match inside an output folder (`src/**/*.c` over `src/gen`) infers one too, and a
/// glob that cannot match an output (`*.md` beside `*.txt` outputs) infers nothing.
#[test]
fn a_glob_matching_another_targets_output_infers_the_dependency() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            "\
targets:
  headers:
    inputs: [\"build/*.h\"]
    outputs: [headers.txt]
    run: cat build/*.h > headers.txt
  sources:
    inputs: [\"src/**/*.c\", \"*.md\"]
    outputs: [sources.txt]
    run: cat src/main.c src/gen/made.c > sources.txt
  gen:
    outputs: [build/version.h]
    run: mkdir -p build && echo v1 > build/version.h
  codegen:
    outputs: [src/gen]
    run: mkdir -p src/gen && echo 'int made;' > src/gen/made.c
",
        )
        .file("src/main.c", "int main;\n")
        .file("notes.md", "n\n");
    let json: serde_json::Value =
        serde_json::from_str(&p.gvbuild(&["graph", "--format", "json"]).success().stdout()).unwrap();
    let inferred = |i: usize| json["targets"][i]["inferred_deps"].clone();
    assert_eq!(
        inferred(0),
        serde_json::json!([{"name": "gen", "input": "build/*.h", "output": "build/version.h"}])
    );
    assert_eq!(
        inferred(1),
        serde_json::json!([{"name": "codegen", "input": "src/**/*.c", "output": "src/gen"}])
    );
    let b = p.build(&["-j", "2"]);
    assert_eq!(b.ran(), names(&["codegen", "gen", "headers", "sources"]));
    assert_eq!(p.read("headers.txt"), "v1\n");
    assert_eq!(p.read("sources.txt"), "int main;\nint made;\n");
}

/// `gvbuild graph` drew no edge for an input read from another target (the file was refused);
/// now it draws the inferred edge dashed, labelled with the input, in DOT and in JSON, also
/// when the graph comes from the parse cache.
#[test]
fn graph_marks_inferred_edges() {
    let p = file_input();
    let dot = p.gvbuild(&["graph"]).success().stdout();
    assert!(
        dot.contains("  \"app\" -> \"gen\" [style=dashed, label=\"inferred from build/version.h\"];\n"),
        "{dot}"
    );
    assert_eq!(dot.matches("->").count(), 1, "one edge, drawn once:\n{dot}");
    let again = p.gvbuild(&["graph"]).success().stdout();
    assert_eq!(again, dot, "the cached graph keeps the inferred edge");
    let json: serde_json::Value =
        serde_json::from_str(&p.gvbuild(&["graph", "--format", "json"]).success().stdout()).unwrap();
    assert_eq!(json["targets"][0]["deps"], serde_json::json!([]));
    assert_eq!(
        json["targets"][0]["inferred_deps"],
        serde_json::json!([{"name": "gen", "input": "build/version.h", "output": "build/version.h"}])
    );
}

/// Selecting only the reader builds what it infers a dependency on, as for a declared dep.
#[test]
fn selecting_only_the_reader_builds_its_inferred_dependency() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &FILE_INPUT.replace("targets:\n", "targets:\n  other:\n    outputs: [o]\n    run: touch o\n"),
        )
        .file("VERSION", "v1\n");
    // `list` caches the graph, so the build below selects from the cached one.
    p.gvbuild(&["list"]).success();
    assert_eq!(p.build(&["app"]).ran(), names(&["app", "gen"]));
    assert_eq!(p.read("app.txt"), "v1\n");
    assert!(!p.exists("o"), "only what `app` needs was built");
}

/// Editing the producer's input reruns the reader, and `--explain` says the dependency is
/// inferred and from which input.
#[test]
fn editing_the_producers_input_reruns_the_reader_and_explain_names_the_input() {
    let p = file_input();
    p.build(&[]);
    p.write("VERSION", "v2\n");
    let r = p.gvbuild(&["--explain"]).success();
    let out = r.stdout();
    assert!(out.contains("ran       gen"), "{out}");
    assert!(out.contains("ran       app"), "{out}");
    assert!(
        out.contains("dependency gen (inferred from input build/version.h) produced new outputs"),
        "{out}"
    );
    assert_eq!(p.read("app.txt"), "v2\n");
    assert_eq!(p.build(&[]).fresh(), names(&["app", "gen"]));
}

/// The key does not depend on how an edge came to be: a project built with `deps: [gen]` stays
/// fresh when the dep is left to inference, and a clone keyed with the inferred edge restores.
#[test]
fn an_inferred_dependency_keys_the_reader_as_a_declared_one_does() {
    let declared = FILE_INPUT
        .replace("    inputs: [build/version.h]\n", "    deps: [gen]\n    inputs: [build/version.h]\n");
    let p = Project::new().file("gevulot.yaml", &declared).file("VERSION", "v1\n");
    let first = p.build(&[]);
    p.write("gevulot.yaml", FILE_INPUT);
    let b = p.build(&[]);
    assert_eq!(b.fresh(), names(&["app", "gen"]));
    assert_eq!(b.key("app"), first.key("app"));
}

/// Where a path of declared deps already leads to the producer, nothing is inferred, so the
/// keys of projects that declared their deps stay as they were.
#[test]
fn a_declared_path_to_the_producer_leaves_nothing_to_infer() {
    let p = Project::new().file(
        "gevulot.yaml",
        "\
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
",
    );
    let dot = p.gvbuild(&["graph"]).success().stdout();
    assert!(!dot.contains("dashed"), "{dot}");
    assert_eq!(p.build(&[]).ran(), names(&["app", "gen", "mid"]));
}
