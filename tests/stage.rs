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
