//! The `stage` step: copy rules and the ELF library closure, staged into a stage root.
use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::support::*;

/// A project shaped like the GPU guide's: assets with versioned libraries and firmware, and a
/// C program standing in for the prover.
fn project(stage: &str) -> Project {
    let p = Project::new()
        .file("p.c", "int main(void) { return 0; }\n")
        .file("assets/libnvidia-ml.so.535.104.05", "nvml\n")
        .file("assets/libcuda.so.535.104.05", "cuda\n")
        .file("assets/nvidia/535/gsp.bin", "firmware\n");
    p.write(
        "gevulot.yaml",
        &format!(
            "{}{stage}",
            y(r#"
            targets:
              prover:
                inputs: [p.c]
                outputs: [build/prover]
                run: cc -o build/prover p.c
            "#)
        ),
    );
    p
}

const GUIDE: &str = r#"  stage-libs:
    deps: [prover]
    stage:
      into: build/root
      copy:
        - { from: "assets/lib*.so.*", to: lib/x86_64-linux-gnu/ }
        - { from: "assets/libcuda.so.*.*.*", to: lib/x86_64-linux-gnu/libcuda.so.1 }
        - { from: assets/nvidia, to: nvidia }
        - { from: build/prover, to: prover }
      libs_for: [build/prover]
"#;

#[test]
fn stages_copies_aliases_firmware_and_the_library_closure() {
    let p = project(GUIDE);
    assert_eq!(p.build(&[]).ran(), names(&["prover", "stage-libs"]));
    assert_eq!(p.read("build/root/lib/x86_64-linux-gnu/libcuda.so.1"), "cuda\n");
    assert_eq!(p.read("build/root/lib/x86_64-linux-gnu/libnvidia-ml.so.535.104.05"), "nvml\n");
    assert_eq!(p.read("build/root/nvidia/535/gsp.bin"), "firmware\n");
    let prover = fs::metadata(p.path("build/root/prover")).unwrap();
    assert!(prover.permissions().mode() & 0o111 != 0, "the program stays executable");
    // The closure: libc under its soname, the interpreter at its path, as real files.
    let libc = fs::symlink_metadata(p.path("build/root/lib/x86_64-linux-gnu/libc.so.6")).unwrap();
    assert!(libc.is_file() && libc.len() > 100_000);
    assert!(p.path("build/root/lib64/ld-linux-x86-64.so.2").is_file());
    assert_eq!(p.build(&[]).fresh(), names(&["prover", "stage-libs"]));
}

#[test]
fn a_changed_copied_file_restages_and_a_clone_restores() {
    let p = project(GUIDE);
    p.build(&[]);
    p.write("assets/nvidia/535/gsp.bin", "firmware v2\n");
    assert_eq!(p.build(&[]).ran(), names(&["stage-libs"]));
    assert_eq!(p.read("build/root/nvidia/535/gsp.bin"), "firmware v2\n");
    let c = p.clone_to_new_folder();
    fs::remove_dir_all(c.path("build")).unwrap();
    assert_eq!(c.build(&[]).restored(), names(&["prover", "stage-libs"]));
    assert_eq!(c.read("build/root/nvidia/535/gsp.bin"), "firmware v2\n");
}

#[test]
fn an_unmatched_glob_is_an_error_naming_it() {
    let p = project(&GUIDE.replace("assets/nvidia", "\"assets/firmware/*\""));
    let r = p.gvbuild(&[]).exit(1);
    assert!(r.stderr().contains("`assets/firmware/*` matches nothing"), "{}", r.stderr());
    assert!(r.stderr().contains("gevulot.yaml:"), "{}", r.stderr());
    assert!(!p.exists("build/root"), "nothing half-staged");
}

#[test]
fn an_ambiguous_rename_lists_every_match() {
    let p = project(&GUIDE.replace("\"assets/libcuda.so.*.*.*\"", "\"assets/lib*.so.*.*.*\""));
    let r = p.gvbuild(&[]).exit(1);
    let err = r.stderr();
    assert!(err.contains("renames to `lib/x86_64-linux-gnu/libcuda.so.1`, but 2 files match"), "{err}");
    assert!(
        err.contains("assets/libcuda.so.535.104.05") && err.contains("assets/libnvidia-ml.so.535.104.05"),
        "{err}"
    );
}

#[test]
fn an_unresolvable_library_names_it_and_the_elf_that_needs_it() {
    let p = project(GUIDE);
    let linked = "run: cc -shared -fPIC -Wl,-soname,libgone.so.1 -o build/libgone.so.1 p.c && \
                  cc -o build/prover p.c -Lbuild -Wl,--no-as-needed -l:libgone.so.1 && rm build/libgone.so.1";
    p.write("gevulot.yaml", &p.read("gevulot.yaml").replace("run: cc -o build/prover p.c", linked));
    let r = p.gvbuild(&[]).exit(1);
    let err = r.stderr();
    assert!(err.contains("libgone.so.1"), "{err}");
    assert!(err.contains("build/prover"), "{err}");
}

#[test]
fn libcudart_without_libcuda_warns_with_the_guide_s_rule() {
    // A stand-in libcudart in a search folder, linked by the program.
    let stage = GUIDE
        .replace(
            "        - { from: \"assets/libcuda.so.*.*.*\", to: lib/x86_64-linux-gnu/libcuda.so.1 }\n",
            "",
        )
        .replace("libs_for: [build/prover]", "libs_for: [build/prover]\n      search: [build/cuda]");
    let p = project(&stage);
    p.write(
        "gevulot.yaml",
        &p.read("gevulot.yaml").replace(
            "run: cc -o build/prover p.c",
            "run: mkdir -p build/cuda && cc -shared -fPIC -Wl,-soname,libcudart.so.12 -o build/cuda/libcudart.so.12 p.c && cc -o build/prover p.c -Lbuild/cuda -Wl,--no-as-needed -l:libcudart.so.12",
        ),
    );
    p.write(
        "gevulot.yaml",
        &p.read("gevulot.yaml").replace("outputs: [build/prover]", "outputs: [build/prover, build/cuda]"),
    );
    let r = p.gvbuild(&[]).success();
    assert!(r.stderr().contains("no libcuda.so.1 is staged"), "{}", r.stderr());
    assert!(r.stderr().contains("libcuda.so.1 }"), "names the copy rule: {}", r.stderr());
    assert!(p.path("build/root/lib/x86_64-linux-gnu/libcudart.so.12").is_file());
}

#[test]
fn inputs_next_to_stage_are_refused() {
    let p = project(&GUIDE.replace("    stage:\n", "    inputs: [p.c]\n    stage:\n"));
    let err = p.gvbuild(&[]).exit(2).stderr();
    assert!(err.contains("`inputs` is not allowed next to `stage`"), "{err}");
}

/// A project whose prover needs `build/libplain.so`, a library without a SONAME, linked by the
/// path `link` (which the shell expands), so that the path lands in DT_NEEDED.
fn linked_by_path(link: &str) -> Project {
    let p = Project::new()
        .file("p.c", "int plain(void); int main(void) { return plain(); }\n")
        .file("plain.c", "int plain(void) { return 0; }\n");
    p.write(
        "gevulot.yaml",
        &y(&format!(
            r#"
            targets:
              prover:
                inputs: [p.c, plain.c]
                outputs: [build/prover, build/libplain.so]
                run: mkdir -p build && cc -shared -fPIC -o build/libplain.so plain.c && cc -o build/prover p.c {link}
              stage:
                deps: [prover]
                stage:
                  into: build/root
                  copy:
                    - {{ from: build/prover, to: prover }}
                  libs_for: [build/prover]
            "#
        )),
    );
    p
}

// Regression: a library linked by its absolute path was copied onto itself (truncated to 0 bytes).
#[test]
fn a_library_linked_by_absolute_path_is_staged_at_that_path_and_left_intact() {
    let p = linked_by_path("\"$PWD/build/libplain.so\"");
    p.build(&[]);
    let lib = p.path("build/libplain.so");
    let len = fs::metadata(&lib).unwrap().len();
    assert!(len > 1000, "the library itself is untouched: {len} bytes");
    // The loader under Nanos opens the DT_NEEDED path from `/`.
    let staged = p.path("build/root").join(lib.strip_prefix("/").unwrap());
    assert_eq!(fs::metadata(&staged).unwrap().len(), len, "{}", staged.display());
    assert!(!p.exists("build/root/lib/x86_64-linux-gnu/libplain.so"));
}

// Regression: a library linked by a relative path was looked up from gvbuild's own folder and
// staged under lib_dir, where the loader (which opens the path from `/`) never looks.
#[test]
fn a_library_linked_by_relative_path_is_found_from_the_project_and_staged_from_the_root() {
    let p = linked_by_path("build/libplain.so");
    let elsewhere = tempfile::tempdir().unwrap();
    let root = p.root().to_str().unwrap().to_string();
    let out = p.command(&["--json", "-C", &root]).current_dir(elsewhere.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(p.path("build/root/build/libplain.so").is_file());
    assert!(!p.exists("build/root/lib/x86_64-linux-gnu/build"));
    assert!(fs::metadata(p.path("build/libplain.so")).unwrap().len() > 1000);
}

// Regression: a `lib_dir` climbing out with `..` made libs_for write beside the stage root.
#[test]
fn a_lib_dir_outside_the_stage_root_is_refused_and_nothing_is_written_there() {
    let p = project(&GUIDE.replace(
        "      libs_for: [build/prover]\n",
        "      libs_for: [build/prover]\n      lib_dir: ../outside\n",
    ));
    let r = p.gvbuild(&[]).exit(1);
    assert!(r.stderr().contains("is outside the stage root"), "{}", r.stderr());
    assert!(!p.exists("build/outside"), "nothing written outside the stage root");
    assert!(!p.exists("build/root"));
}

/// Runs `gvbuild` in `p`, which must fail within a minute; returns its stderr.
fn fails_in_time(p: &Project) -> String {
    let (code, out) = gvbuild_in_time(p, &[]);
    assert_ne!(code, 0, "expected a failure: {out}");
    out
}

// Regression: a FIFO in a copied folder hung the build (copying it waited for a writer forever).
// The FIFO and socket sit outside the project behind symlinks: the copy follows links, and the
// step's key holds a link's text, so this reaches the stage step itself.
#[test]
fn a_fifo_or_socket_in_a_copied_folder_is_an_error_naming_it() {
    let p = project(GUIDE);
    let outside = tempfile::tempdir().unwrap();
    let fifo = outside.path().join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    std::os::unix::fs::symlink(&fifo, p.path("assets/nvidia/535/pipe")).unwrap();
    let err = fails_in_time(&p);
    // The key's walk of the step's inputs meets it first; either way it is named.
    assert!(err.contains("535/pipe") && err.contains("is a FIFO"), "{err}");
    assert!(!p.exists("build/root"));

    fs::remove_file(p.path("assets/nvidia/535/pipe")).unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(outside.path().join("sock")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("sock"), p.path("assets/nvidia/535/sock")).unwrap();
    let err = fails_in_time(&p);
    assert!(err.contains("535/sock") && err.contains("is a socket"), "{err}");
}

// Regression: walk errors in a copied folder (a symlink loop, a symlink to nothing) were
// skipped silently, leaving entries out of the stage root.
#[test]
fn a_symlink_loop_or_dangling_symlink_in_a_copied_folder_is_an_error_naming_it() {
    let p = project(GUIDE);
    std::os::unix::fs::symlink("..", p.path("assets/nvidia/535/up")).unwrap();
    let err = fails_in_time(&p);
    assert!(err.contains("535/up") && err.contains("loop"), "{err}");

    fs::remove_file(p.path("assets/nvidia/535/up")).unwrap();
    std::os::unix::fs::symlink("missing.bin", p.path("assets/nvidia/535/gone.bin")).unwrap();
    let err = fails_in_time(&p);
    assert!(err.contains("535/gone.bin is a symlink to nothing"), "{err}");
}

/// What every folder copy leaves out is what docs/cache.md lists: `.git` and `.gvbuild`; any other
/// name is staged, and one that is not UTF-8 (which neither a key nor an image can hold) stops
/// the step, naming it.
#[test]
fn folder_copies_stage_every_name_but_git_and_gvbuild() {
    let p = project(GUIDE);
    p.write("assets/nvidia/.hidden", "h");
    p.write("assets/nvidia/.git/HEAD", "ref");
    p.build(&[]);
    assert_eq!(p.read("build/root/nvidia/.hidden"), "h");
    assert!(!p.exists("build/root/nvidia/.git"));
    let odd = std::ffi::OsStr::from_bytes(b"odd\xffname");
    fs::write(p.path("assets/nvidia").join(odd), "o").unwrap();
    let err = fails_in_time(&p);
    assert!(err.contains("assets/nvidia/odd") && err.contains("not UTF-8"), "{err}");
}

use std::os::unix::ffi::OsStrExt;

// Regression (issue 20, field report 3; ocaml/dune#11117): an empty folder added below a copied
// folder left the stage step fresh, so the stage root (and the image built from it) lacked the
// folder that a clean build has. Every folder an input walk finds is keyed now.
#[test]
fn an_empty_folder_added_below_a_copied_folder_restages() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              stage:
                stage:
                  into: build/root
                  copy: [{ from: assets, to: assets }]
            "#),
        )
        .file("assets/a.txt", "a\n");
    assert_eq!(p.build(&[]).ran(), names(&["stage"]));
    fs::create_dir_all(p.path("assets/empty/deeper")).unwrap();
    assert_eq!(p.build(&[]).ran(), names(&["stage"]), "the new empty folder restages");
    assert!(p.path("build/root/assets/empty/deeper").is_dir());
    // As a clean build of the same tree stages it.
    let clean = p.clone_to_new_folder();
    fs::create_dir_all(clean.path("assets/empty/deeper")).unwrap();
    clean.build(&[]);
    assert!(clean.path("build/root/assets/empty/deeper").is_dir());
    assert_eq!(p.build(&[]).fresh(), names(&["stage"]));
    fs::remove_dir(p.path("assets/empty/deeper")).unwrap();
    assert_eq!(p.build(&[]).ran(), names(&["stage"]), "the removed empty folder restages");
    assert!(!p.path("build/root/assets/empty/deeper").exists());
}
