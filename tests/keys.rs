//! Keys that never go stale: depfiles read as ninja reads them, discovered files that are gone,
//! headers that shadow recorded ones, symlinked folders, walks that skip nothing, generated
//! files read without a dependency, and old cache entries.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gvbuild::fingerprint::depfile;

use crate::support::*;

const SPECIAL: [&str; 4] = ["inc/sp ace.h", "inc/ha#sh.h", "inc/co:lon.h", "inc/dol$lar.h"];

fn inputs_of(bytes: &[u8]) -> Vec<String> {
    depfile::parse(bytes).unwrap().inputs.into_iter().map(|i| String::from_utf8(i.path).unwrap()).collect()
}

fn vector(name: &str) -> Vec<u8> {
    fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/depfiles").join(name)).unwrap()
}

/// Real gcc, g++ and clang depfiles for headers named with a space, `#`, `:` and `$` parse to
/// exactly those names.
#[test]
fn compiler_depfile_vectors_parse_to_the_real_names() {
    for name in ["gcc-12.d", "gxx-12.d", "clang-14.d"] {
        let ins = inputs_of(&vector(name));
        for want in SPECIAL {
            assert!(ins.iter().any(|i| i == want), "{name}: {want:?} missing from {ins:?}");
        }
    }
    // nvcc writes `#` and `$` unescaped: ninja's grammar splits those names (gvbuild then
    // refuses the missing halves, see `nvcc_unescaped_names_are_an_error`), the others parse.
    let ins = inputs_of(&vector("nvcc-13.5.d"));
    assert!(ins.contains(&"inc/sp ace.h".to_string()) && ins.contains(&"inc/co:lon.h".to_string()));
    assert!(ins.contains(&"inc/ha".to_string()) && ins.contains(&"inc/dol".to_string()));
    assert!(ins.contains(&"/opt/cuda/bin/../include/cuda_runtime.h".to_string()));
}

/// The escapes today's compilers no longer write (GCC 10.1's `\:`, `\\ `), CRLF continuations,
/// several targets and several rules.
#[test]
fn hand_written_depfile_vectors() {
    let d = b"out/a.o out/b.o: inc/co\\:lon.h \\\r\n  two\\\\\\ words.h \\\n cost$$.h\r\nout/a.o: more.h\nmore.h:\n";
    assert_eq!(inputs_of(d), vec!["inc/co:lon.h", "two\\ words.h", "cost$.h", "more.h"]);
    let parsed = depfile::parse(d).unwrap();
    // `more.h:` names an input as a target (as `-MP` does): not a new target.
    assert_eq!(parsed.targets, vec![b"out/a.o".to_vec(), b"out/b.o".to_vec()]);
    assert_eq!(parsed.inputs.iter().map(|i| i.line).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
}

fn special_headers(p: &Project) {
    for h in SPECIAL {
        p.write(h, &format!("/* {h} */\n"));
    }
    p.write("main.c", "#include \"sp ace.h\"\n#include \"ha#sh.h\"\n#include \"co:lon.h\"\n#include \"dol$lar.h\"\nint main(void) { return 0; }\n");
}

fn compile_project(cc: &str, src: &str) -> Project {
    let p = Project::new().file(
        "gevulot.yaml",
        &format!(
            "targets:\n  app:\n    inputs: [{src}]\n    outputs: [build/m.o]\n    run: {cc} -Iinc -MD -MF build/m.d -c {src} -o build/m.o\n    depfile: build/m.d\n"
        ),
    );
    special_headers(&p);
    if src != "main.c" {
        fs::copy(p.path("main.c"), p.path(src)).unwrap();
    }
    p
}

/// Each header with a special character in its name is a key input: editing it reruns the step.
fn edits_rerun(p: &Project) {
    assert_eq!(p.build(&[]).ran(), names(&["app"]));
    assert_eq!(p.build(&[]).fresh(), names(&["app"]));
    for h in SPECIAL {
        p.write(h, &format!("/* {h}, edited */\n"));
        assert_eq!(p.build(&[]).ran(), names(&["app"]), "editing {h} must rerun the compile");
    }
}

#[test]
fn gcc_headers_with_special_names_are_keyed() {
    edits_rerun(&compile_project("gcc", "main.c"));
}

#[test]
fn gxx_headers_with_special_names_are_keyed() {
    edits_rerun(&compile_project("g++", "main.cc"));
}

/// clang, where it is installed (CI installs it; elsewhere this test says it skipped).
#[test]
#[cfg_attr(gvbuild_no_clang, ignore = "needs clang on PATH (CI installs it)")]
fn clang_headers_with_special_names_are_keyed() {
    if Command::new("clang").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI must have clang");
        eprintln!("skipped: clang is not installed");
        return;
    }
    edits_rerun(&compile_project("clang", "main.c"));
}

fn nvcc() -> Option<String> {
    match std::env::var("GVBUILD_TEST_CUDA") {
        Ok(dir) => Some(format!("{dir}/bin/nvcc")),
        Err(_) => {
            assert!(std::env::var_os("CI").is_none(), "CI must set GVBUILD_TEST_CUDA");
            eprintln!("skipped: GVBUILD_TEST_CUDA is not set");
            None
        }
    }
}

/// nvcc writes `#` and `$` in names unescaped: the step stops with an error naming the depfile
/// line (old gvbuild dropped those headers and stayed fresh when they changed).
#[test]
#[cfg_attr(
    gvbuild_no_cuda,
    ignore = "needs nvcc: set GVBUILD_TEST_CUDA to a CUDA folder (bin/nvcc, lib/); .ci/run installs one from PyPI"
)]
fn nvcc_unescaped_names_are_an_error() {
    let Some(nvcc) = nvcc() else { return };
    let p = compile_project(&nvcc, "main.cu");
    let (run, _) = p.build_any(&[]);
    assert_ne!(run.code(), 0);
    let err = run.stdout() + &run.stderr();
    assert!(err.contains("depfile build/m.d line") && err.contains("names `inc/ha`"), "{err}");
}

/// nvcc headers with a space and a colon in their names are keyed.
#[test]
#[cfg_attr(
    gvbuild_no_cuda,
    ignore = "needs nvcc: set GVBUILD_TEST_CUDA to a CUDA folder (bin/nvcc, lib/); .ci/run installs one from PyPI"
)]
fn nvcc_headers_with_spaces_and_colons_are_keyed() {
    let Some(nvcc) = nvcc() else { return };
    let p = compile_project(&nvcc, "main.cu");
    p.write("main.cu", "#include \"sp ace.h\"\n#include \"co:lon.h\"\nint main(void) { return 0; }\n");
    assert_eq!(p.build(&[]).ran(), names(&["app"]));
    assert_eq!(p.build(&[]).fresh(), names(&["app"]));
    for h in ["inc/sp ace.h", "inc/co:lon.h"] {
        p.write(h, &format!("/* {h}, edited */\n"));
        assert_eq!(p.build(&[]).ran(), names(&["app"]), "editing {h} must rerun the compile");
    }
}

/// Regression: GCC 10.1 writes a colon in a name as `\:`. The old parser kept the backslash,
/// found no such file, dropped the header, and the step stayed fresh after it was edited.
#[test]
fn gcc10_escaped_colon_header_is_keyed() {
    let p = Project::new().file(
        "gevulot.yaml",
        &y(r#"
        targets:
          app:
            outputs: [out.txt]
            run: "true -Iinc && cat 'inc/co:lon.h' > out.txt && printf 'out.txt: inc/co\\\\:lon.h\\n' > out.d"
            depfile: out.d
        "#),
    );
    p.write("inc/co:lon.h", "one\n");
    assert_eq!(p.build(&[]).ran(), names(&["app"]));
    p.write("inc/co:lon.h", "two\n");
    assert_eq!(p.build(&[]).ran(), names(&["app"]));
    assert_eq!(p.read("out.txt"), "two\n");
}

/// Regression: a discovered file that does not exist after the step ran was dropped without a
/// word. Now the step fails, naming the depfile line.
#[test]
fn missing_discovered_file_is_an_error_naming_the_line() {
    let p = Project::new().file(
        "gevulot.yaml",
        &y(r#"
        targets:
          app:
            outputs: [out.txt]
            run: "echo hi > out.txt && printf 'out.txt: \\\\\\n  gone.h\\n' > out.d"
            depfile: out.d
        "#),
    );
    let run = p.gvbuild(&[]).failure();
    let err = run.stderr();
    assert!(err.contains("depfile out.d line 2 names `gone.h`"), "{err}");
    // Nothing was recorded or stored: it fails again rather than passing as fresh.
    p.gvbuild(&[]).failure();
}

/// A recorded discovered file that has since gone is keyed as absent: the step is not fresh,
/// and once it is back, the old result is restored.
#[test]
fn discovered_file_gone_is_keyed_as_absent() {
    let p = Project::new().file(
        "gevulot.yaml",
        &y(r#"
        targets:
          app:
            inputs: [src.c]
            outputs: [out.txt]
            run: cc -Ialt -E -P -MD -MF out.d src.c -o out.txt
            depfile: out.d
        "#),
    );
    p.write("src.c", "#include \"h.h\"\n");
    p.write("h.h", "int beside;\n");
    p.write("alt/h.h", "int alt;\n");
    assert_eq!(p.build(&[]).ran(), names(&["app"]));
    assert!(p.read("out.txt").contains("beside"));
    fs::rename(p.path("h.h"), p.path("h.away")).unwrap();
    assert_eq!(p.build(&[]).ran(), names(&["app"]));
    assert!(p.read("out.txt").contains("alt"));
    fs::rename(p.path("h.away"), p.path("h.h")).unwrap();
    assert_eq!(p.build(&[]).restored(), names(&["app"]));
    assert!(p.read("out.txt").contains("beside"));
}

fn shadow_project() -> Project {
    Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              version:
                outputs: [build/version.h]
                run: echo '#define V "generated"' > build/version.h
              app:
                deps: [version]
                inputs: [src/app.c]
                outputs: [build/app]
                run: cc -Iinclude -Ibuild -MD -MF build/app.d -o build/app src/app.c
                depfile: build/app.d
              out:
                deps: [app]
                outputs: [build/out.txt]
                run: ./build/app > build/out.txt
            "#),
        )
        .file(
            "src/app.c",
            "#include <stdio.h>\n#include \"version.h\"\nint main(void) { puts(V); return 0; }\n",
        )
        .file("include/other.h", "/* unrelated */\n")
}

/// Regression: a new `include/version.h`, earlier in the search path than the recorded
/// `build/version.h`, left the compile fresh, and a fresh clone restored the old result.
#[test]
fn new_header_earlier_in_search_path_reruns() {
    let p = shadow_project();
    p.build(&[]);
    assert_eq!(p.read("build/out.txt"), "generated\n");
    p.write("include/version.h", "#define V \"shadow\"\n");
    let b = p.build(&[]);
    assert!(b.ran().contains(&"app".to_string()), "{:?}", b.outcomes());
    assert_eq!(p.read("build/out.txt"), "shadow\n");

    // A fresh clone with the shadowing header: the cache holds both results, and the one for
    // `build/version.h` must not be restored.
    let q = p.clone_to_new_folder();
    fs::remove_dir_all(q.path("build")).ok();
    q.build(&[]);
    assert_eq!(q.read("build/out.txt"), "shadow\n");

    // Moved away: the first result again (from the cache); moved back: the second.
    fs::rename(p.path("include/version.h"), p.path("version.h.away")).unwrap();
    let b = p.build(&[]);
    assert_eq!(b.outcomes()["app"], "restored");
    assert_eq!(p.read("build/out.txt"), "generated\n");
    fs::rename(p.path("version.h.away"), p.path("include/version.h")).unwrap();
    let b = p.build(&[]);
    assert_eq!(b.outcomes()["app"], "restored");
    assert_eq!(p.read("build/out.txt"), "shadow\n");
}

/// The examples' own include folder is covered without listing it: a header added to
/// `examples/hello/include` that shadows the generated one reruns the compile.
#[test]
fn hello_example_include_folder_is_covered() {
    let p = Project::new();
    copy_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello"), p.root());
    fs::remove_dir_all(p.path("build")).ok();
    p.build(&[]);
    p.write("include/version.h", "#define VERSION \"shadowed\"\n");
    let b = p.build(&[]);
    assert!(b.ran().contains(&"hello".to_string()), "{:?}", b.outcomes());
    assert!(p.read("build/greeting.txt").contains("shadowed"), "{}", p.read("build/greeting.txt"));
}

/// When several recorded lists of discovered files all match, none is trusted: the step runs.
#[test]
fn several_matching_discovered_lists_run() {
    // Which header the command reads depends on a file outside its key, so two results end up
    // cached under one first-level key, and both of their lists still match.
    let p = Project::new().file(
        "gevulot.yaml",
        &y(r#"
        targets:
          app:
            outputs: [out.txt]
            run: 'if [ -e flag/on ]; then h=a.h; else h=b.h; fi; cat $$h > out.txt; echo "out.txt: $$h" > out.d'
            depfile: out.d
            # Unsandboxed: this step must read a file it does not declare (the sandbox hides it).
            sandbox: false
        "#),
    );
    p.write("a.h", "a\n");
    p.write("b.h", "b\n");
    assert_eq!(p.build(&[]).ran(), names(&["app"]));
    p.write("flag/on", "");
    p.build(&["--rebuild", "app"]);
    assert_eq!(p.read("out.txt"), "a\n");
    let q = p.clone_to_new_folder();
    fs::remove_file(q.path("out.txt")).unwrap();
    let (run, b) = q.build_any(&["--explain"]);
    assert_eq!(b.ran(), names(&["app"]), "{:?} {}", b.events, run.stderr());
    let reasons = b.events[0]["reasons"].to_string();
    assert!(reasons.contains("2 cached results match"), "{reasons}");
}

/// Regression: editing a file behind a symlinked folder inside an input folder left the step
/// fresh (only the link's text was keyed).
#[test]
fn symlinked_folder_inside_input_folder_is_followed() {
    let p = Project::new().file(
        "gevulot.yaml",
        &y(r#"
        targets:
          t:
            inputs: [assets/]
            outputs: [out.txt]
            run: cat assets/shared/x > out.txt
        "#),
    );
    p.write("ext/real/x", "one\n");
    p.write("assets/own", "own\n");
    std::os::unix::fs::symlink("../ext/real", p.path("assets/shared")).unwrap();
    assert_eq!(p.build(&[]).ran(), names(&["t"]));
    p.write("ext/real/x", "two\n");
    assert_eq!(p.build(&[]).ran(), names(&["t"]));
    assert_eq!(p.read("out.txt"), "two\n");
    // A new file behind the link is a new input too.
    p.write("ext/real/y", "new\n");
    assert_eq!(p.build(&[]).ran(), names(&["t"]));
}

/// A link that leads out of the project is keyed by what it leads to, like a system input.
#[test]
fn symlink_out_of_the_project_is_keyed_by_content() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("lib.txt"), "v1\n").unwrap();
    let p = Project::new().file(
        "gevulot.yaml",
        "targets:\n  t:\n    inputs: [assets/]\n    outputs: [out.txt]\n    run: cat assets/ext/lib.txt > out.txt\n",
    );
    fs::create_dir_all(p.path("assets")).unwrap();
    std::os::unix::fs::symlink(outside.path(), p.path("assets/ext")).unwrap();
    assert_eq!(p.build(&[]).ran(), names(&["t"]));
    fs::write(outside.path().join("lib.txt"), "v2\n").unwrap();
    assert_eq!(p.build(&[]).ran(), names(&["t"]));
    assert_eq!(p.read("out.txt"), "v2\n");
}

/// A step whose input is the folder `assets/`.
fn assets_project() -> Project {
    Project::new().file(
        "gevulot.yaml",
        "targets:\n  t:\n    inputs: [assets/]\n    outputs: [out.txt]\n    run: echo > out.txt\n",
    )
}

/// A symlink loop inside an input folder is an error naming the link and its ancestor.
#[test]
fn symlink_loop_in_input_folder_is_an_error() {
    let p = assets_project();
    p.write("assets/sub/x", "x");
    std::os::unix::fs::symlink("..", p.path("assets/sub/up")).unwrap();
    p.gvbuild(&[])
        .failure()
        .stderr_has("input `assets/sub/up` is a symlink that leads back to its own ancestor `assets`");
}

/// Regression: a FIFO in an input folder hung the build; a socket was hashed as if it were a
/// file. Both are now errors that name the entry.
#[test]
fn fifo_and_socket_in_input_folder_are_errors() {
    let p = assets_project();
    p.write("assets/a", "a");
    let st = Command::new("mkfifo").arg(p.path("assets/pipe")).status().unwrap();
    assert!(st.success());
    let (code, out) = gvbuild_in_time(&p, &[]);
    assert_ne!(code, 0);
    assert!(out.contains("input `assets/pipe` is a FIFO"), "{out}");
    fs::remove_file(p.path("assets/pipe")).unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(p.path("assets/sock")).unwrap();
    let (code, out) = gvbuild_in_time(&p, &[]);
    assert_ne!(code, 0);
    assert!(out.contains("input `assets/sock` is a socket"), "{out}");
}

/// Regression: names that are not UTF-8 were skipped by the input walk, so a change to such a
/// file left the step fresh. Now it is an error naming it.
#[test]
fn non_utf8_name_in_input_folder_is_an_error() {
    let p = assets_project();
    p.write("assets/a", "a");
    fs::write(p.path("assets").join(std::ffi::OsStr::from_bytes(b"caf\xe9")), "x").unwrap();
    p.gvbuild(&[]).failure().stderr_has("has a name that is not UTF-8");
}

/// A FIFO in an output folder is an error, not silently left out of the cached result.
#[test]
fn fifo_in_output_folder_is_an_error() {
    let p = Project::new().file(
        "gevulot.yaml",
        "targets:\n  t:\n    outputs: [out]\n    run: mkdir -p out && echo a > out/a && mkfifo out/pipe\n",
    );
    let (code, out) = gvbuild_in_time(&p, &[]);
    assert_ne!(code, 0);
    assert!(out.contains("output `out/pipe` is a FIFO"), "{out}");
}

/// Regression: a header generated by another target and found only through the depfile, with
/// no dependency path: gvbuild reran the generator, reported the reader fresh with the old
/// header and exited 0. Now it is an error naming both targets and the file.
#[test]
fn generated_header_read_without_dependency_is_an_error() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              gen:
                inputs: [ver.txt]
                outputs: [gen/ver.h]
                run: cp ver.txt gen/ver.h
              app:
                inputs: [app.c]
                outputs: [build/app]
                run: cc -Igen -MD -MF build/app.d -o build/app app.c
                depfile: build/app.d
              all:
                deps: [gen, app]
            "#),
        )
        .file("ver.txt", "#define V 1\n")
        .file("app.c", "#include \"ver.h\"\nint main(void) { return V; }\n");
    p.build(&["gen"]);
    // Sandboxed, the header is not there for `app`: the compile fails, and the failure names
    // the header and the key that would declare it.
    let run = p.gvbuild(&["all"]).failure();
    let err = run.stderr();
    assert!(
        err.contains(
            "read  gen (hidden by the sandbox; a folder target `gen` writes into: add `gen` to `deps:`)"
        ),
        "{err}"
    );
    // Unsandboxed the compile finds it, and the depfile check refuses the result.
    let run = p.gvbuild(&["--no-sandbox", "all"]).failure();
    let err = run.stderr();
    assert!(
        err.contains("`app` read `gen/ver.h` (found through its depfile), which target `gen` writes, but `app` does not depend on `gen`"),
        "{err}"
    );
    // Nothing stored or recorded: the next build fails the same way instead of passing.
    p.write("ver.txt", "#define V 2\n");
    p.gvbuild(&["--no-sandbox", "all"]).failure().stderr_has("does not depend on `gen`");
}

/// Regression: entries written by the landed gvbuild of key version 1 were recorded with the old
/// depfile parser, which dropped `inc/co\:lon.h`; restoring one would serve the fixed bug. The
/// key version moved on, so none of them is ever restored again.
#[test]
fn entries_of_key_version_1_are_never_restored() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/old-cache");
    let p = Project::new();
    copy_tree(&data.join("v1"), p.cache.path());
    fs::copy(data.join("gevulot.yaml"), p.path("gevulot.yaml")).unwrap();
    p.write("inc/co:lon.h", "two\n");
    let b = p.build(&[]);
    assert_eq!(b.ran(), names(&["app"]), "{:?}", b.outcomes());
    assert_eq!(p.read("out.txt"), "two\n");
    // With the header as it was when the old entry was written, still nothing is restored.
    let q = Project::new();
    copy_tree(&data.join("v1"), q.cache.path());
    fs::copy(data.join("gevulot.yaml"), q.path("gevulot.yaml")).unwrap();
    q.write("inc/co:lon.h", "one\n");
    assert_eq!(q.build(&[]).ran(), names(&["app"]));
}

/// Regression: a library that appeared in an RPATH folder (which held no staged library) left
/// the stage step fresh with the old library: the folders the library search consulted were not
/// keyed.
#[test]
fn library_appearing_in_an_rpath_folder_restages() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              stage:
                stage:
                  into: build/root
                  copy: [{ from: bin/app, to: bin/app }]
                  libs_for: [bin/app]
                  search: [libs]
            "#),
        )
        .file("foo.c", "const char *foo(void) { return \"libs\"; }\n")
        .file("foo2.c", "const char *foo(void) { return \"rpath\"; }\n")
        .file("main.c", "const char *foo(void);\nint main(void) { return foo()[0]; }\n");
    fs::create_dir_all(p.path("libs")).unwrap();
    fs::create_dir_all(p.path("rp")).unwrap();
    fs::create_dir_all(p.path("bin")).unwrap();
    let cc = |args: &[&str]| {
        let st = Command::new("cc").args(args).current_dir(p.root()).status().unwrap();
        assert!(st.success(), "cc {args:?}");
    };
    cc(&["-shared", "-fPIC", "-Wl,-soname,libfoo.so", "-o", "libs/libfoo.so", "foo.c"]);
    cc(&["-o", "bin/app", "main.c", "-Llibs", "-lfoo", "-Wl,--disable-new-dtags,-rpath,$ORIGIN/../rp"]);
    assert_eq!(p.build(&[]).ran(), names(&["stage"]));
    let staged = |p: &Project| fs::read(p.path("build/root/lib/x86_64-linux-gnu/libfoo.so")).unwrap();
    assert_eq!(staged(&p), fs::read(p.path("libs/libfoo.so")).unwrap());
    cc(&["-shared", "-fPIC", "-Wl,-soname,libfoo.so", "-o", "rp/libfoo.so", "foo2.c"]);
    assert_eq!(p.build(&[]).ran(), names(&["stage"]), "the RPATH folder is searched first");
    assert_eq!(staged(&p), fs::read(p.path("rp/libfoo.so")).unwrap());
}

/// Start `gvbuild --json` and wait until its step has touched `started`.
fn build_until_started(p: &Project) -> std::process::Child {
    let child = p.command(&["--json"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    wait_until("the step to start", || p.exists("ctl/started"));
    child
}

/// Regression: an input changed and changed back while its step ran (A, B, A) was read as B,
/// and the result was stored under A's key. Its stat changed: nothing is stored.
#[test]
fn input_changed_and_back_while_running_is_not_stored() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            "targets:\n  t:\n    inputs: [in.txt]\n    outputs: [out.txt]\n    run: touch ctl/started; sleep 1; cp in.txt out.txt; sleep 1\n    scratch: [ctl]\n",
        )
        .file("in.txt", "A\n");
    let child = build_until_started(&p);
    p.write("in.txt", "B\n");
    std::thread::sleep(Duration::from_millis(1500));
    p.write("in.txt", "A\n");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    // Not recorded, not stored: the next build runs it again and gets A.
    assert_eq!(p.build(&[]).ran(), names(&["t"]));
    assert_eq!(p.read("out.txt"), "A\n");
}

/// Regression: a discovered header replaced during the compile by a copy that keeps an old
/// mtime (`cp -p`) was stored under the new header's key. Its ctime tells. (`true -Iinc` names
/// the folder the step reads from, as a compiler's `-I` would: the sandbox shows it.)
#[test]
fn discovered_header_replaced_with_an_old_mtime_is_not_stored() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            "targets:\n  t:\n    outputs: [out.txt]\n    run: \"true -Iinc && touch ctl/started; cat inc/x.h > out.txt; sleep 2; echo 'out.txt: inc/x.h' > out.d\"\n    depfile: out.d\n    scratch: [ctl]\n",
        )
        .file("inc/x.h", "v1\n")
        .file("v2.h", "v2\n");
    let st = Command::new("touch").args(["-d", "2020-01-01", "v2.h"]).current_dir(p.root()).status().unwrap();
    assert!(st.success());
    let child = build_until_started(&p);
    std::thread::sleep(Duration::from_millis(300));
    let st = Command::new("cp").args(["-p", "v2.h", "inc/x.h"]).current_dir(p.root()).status().unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(p.build(&[]).ran(), names(&["t"]), "nothing was recorded for the torn run");
    assert_eq!(p.read("out.txt"), "v2\n");
}

/// Regression: `--include-directory=DIR` (gcc's and clang's long `-I`) was not a search folder,
/// so a header added there left the compile fresh.
#[test]
fn include_directory_long_form_is_a_search_folder() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            "targets:\n  t:\n    inputs: [main.c]\n    outputs: [out.txt]\n    run: cc --include-directory=inc1 -Iinc2 -E -P -MD -MF out.d main.c -o out.txt\n    depfile: out.d\n",
        )
        .file("main.c", "#include \"x.h\"\n")
        .file("inc2/x.h", "int two;\n");
    p.build(&[]);
    assert!(p.read("out.txt").contains("two"));
    p.write("inc1/x.h", "int one;\n");
    assert_eq!(p.build(&[]).ran(), names(&["t"]));
    assert!(p.read("out.txt").contains("one"));
}

/// Regression: a symlink to itself in an input folder was keyed as a dangling link and the
/// build went on; a loop through `..` named its ancestor by a garbled path.
#[test]
fn self_symlink_and_loop_paths_are_errors_naming_them() {
    let p = assets_project();
    p.write("assets/a", "a");
    std::os::unix::fs::symlink("self", p.path("assets/self")).unwrap();
    p.gvbuild(&[]).failure().stderr_has("input `assets/self` is in a symlink loop");
    fs::remove_file(p.path("assets/self")).unwrap();
    std::os::unix::fs::symlink("..", p.path("assets/up")).unwrap();
    let err = p.gvbuild(&[]).failure().stderr();
    assert!(err.contains("input `assets/up` is a symlink that leads back to its own ancestor"), "{err}");
    assert!(!err.contains("//"), "{err}");
}
