//! The `manifest` step: ops's JSON written canonically and checked against the stage root.
use crate::support::*;

/// A stage step making a root with a program, lib/ and nvidia/, and a klib folder; then `extra`.
fn project(manifest: &str) -> Project {
    Project::new().file(
        "gevulot.yaml",
        &format!(
            "{}{manifest}",
            y(r#"
            targets:
              stage:
                outputs: [build/root, build/klibs]
                run: >-
                  mkdir -p build/root/lib build/root/nvidia build/klibs &&
                  printf '#!/bin/sh\n' > build/root/prover && chmod +x build/root/prover &&
                  touch build/klibs/gpu_nvidia
            "#)
        ),
    )
}

const GPU: &str = r#"  manifest:
    deps: [stage]
    manifest:
      program: prover
      args: [--verbose]
      env: { RUST_BACKTRACE: "1", RUST_LOG: debug }
      dirs: [lib, nvidia]
      gpu: true
      cpus: 2
      memory: 2g
      workspace: { mount: "%1", path: /workspace }
      klib_dir: build/klibs
      root: build/root
      into: build/prover.json
"#;

#[test]
fn writes_the_gpu_manifest_canonically() {
    let p = project(GPU);
    assert_eq!(p.build(&[]).ran(), names(&["manifest", "stage"]));
    let json = p.read("build/prover.json");
    assert_eq!(
        json,
        r#"{
  "Args": [
    "--verbose"
  ],
  "Dirs": [
    "lib",
    "nvidia"
  ],
  "Env": {
    "RUST_BACKTRACE": "1",
    "RUST_LOG": "debug"
  },
  "KlibDir": "../klibs",
  "Klibs": [
    "gpu_nvidia"
  ],
  "Mounts": {
    "%1": "/workspace"
  },
  "Program": "prover",
  "RunConfig": {
    "CPUs": 2,
    "GPUs": 1,
    "Memory": "2g"
  }
}
"#
    );
    // Same inputs, same bytes: a clone writes (restores) the identical file.
    let c = p.clone_to_new_folder();
    std::fs::remove_dir_all(c.path("build")).unwrap();
    c.build(&[]);
    assert_eq!(c.read("build/prover.json"), json);
}

#[test]
fn a_cpu_program_gets_a_read_only_root_by_default() {
    let p = project(
        "  m:\n    deps: [stage]\n    manifest:\n      program: prover\n      workspace: { mount: \"%1\", path: /workspace }\n      root: build/root\n      into: build/m.json\n",
    );
    p.build(&[]);
    let json = p.read("build/m.json");
    assert!(json.contains("\"ManifestPassthrough\": {\n    \"readonly_rootfs\": \"true\"\n  }"), "{json}");
    assert!(!json.contains("Klibs"), "{json}");
}

#[test]
fn only_an_env_change_reruns_only_the_manifest_and_what_uses_it() {
    let image = "  image:\n    deps: [manifest]\n    inputs: [build/prover.json]\n    outputs: [build/image]\n    run: cp build/prover.json build/image\n";
    let p = project(&format!("{GPU}{image}"));
    p.build(&[]);
    p.write("gevulot.yaml", &p.read("gevulot.yaml").replace("RUST_LOG: debug", "RUST_LOG: info"));
    let b = p.build(&[]);
    assert_eq!(b.ran(), names(&["image", "manifest"]));
    assert_eq!(b.fresh(), names(&["stage"]));
    assert!(p.read("build/image").contains("\"RUST_LOG\": \"info\""));
}

#[test]
fn invalid_manifests_are_config_errors_pointing_into_the_yaml() {
    let cases = [
        ("gpu: true", "gpu: true\n      readonly_rootfs: true", "a GPU and a read-only root filesystem"),
        ("      workspace: { mount: \"%1\", path: /workspace }\n", "", "has no workspace mount"),
        ("memory: 2g", "memory: two gigs", "is not a size ops understands"),
        ("      klib_dir: build/klibs\n", "", "loads klibs but has no `klib_dir`"),
        ("    manifest:\n", "    inputs: [x]\n    manifest:\n", "`inputs` is not allowed next to `manifest`"),
    ];
    for (from, to, message) in cases {
        let p = project(&GPU.replace(from, to));
        let err = p.gvbuild(&[]).exit(2).stderr();
        assert!(err.contains(message), "{message}: {err}");
        assert!(err.contains("gevulot.yaml:"), "{err}");
    }
}

#[test]
fn what_is_missing_from_the_stage_root_fails_the_step_naming_the_yaml_line() {
    for (from, to, message) in [
        (
            "program: prover",
            "program: verifier",
            "gevulot.yaml:12:16: the program `verifier` is not in the stage root build/root",
        ),
        (
            "dirs: [lib, nvidia]",
            "dirs: [lib, firmware]",
            "`firmware` (in dirs) is not a folder in the stage root build/root",
        ),
        (
            "klib_dir: build/klibs",
            "klib_dir: build/root",
            "klib `gpu_nvidia` is not in the klib folder build/root",
        ),
    ] {
        let p = project(&GPU.replace(from, to));
        let r = p.gvbuild(&[]).exit(1);
        assert!(r.stderr().contains(message), "{message}: {}", r.stderr());
        assert!(!p.exists("build/prover.json"));
    }
}

#[test]
fn from_canonicalises_a_hand_written_manifest() {
    let m = "  m:\n    deps: [stage]\n    manifest:\n      from: prover.json\n      root: build/root\n      into: build/m.json\n";
    let p = project(m).file(
        "prover.json",
        r#"{"Program":"prover","Mounts":{"%1":"/workspace"},"ManifestPassthrough":{"readonly_rootfs":"true"},"Env":{"RUST_LOG":"debug","RUST_BACKTRACE":"1"}}"#,
    );
    p.build(&[]);
    assert_eq!(
        p.read("build/m.json"),
        "{\n  \"Env\": {\n    \"RUST_BACKTRACE\": \"1\",\n    \"RUST_LOG\": \"debug\"\n  },\n  \"ManifestPassthrough\": {\n    \"readonly_rootfs\": \"true\"\n  },\n  \"Mounts\": {\n    \"%1\": \"/workspace\"\n  },\n  \"Program\": \"prover\"\n}\n"
    );
    p.write("prover.json", r#"{"Program":"prover"}"#);
    let r = p.gvbuild(&[]).exit(1);
    assert!(r.stderr().contains("prover.json has no workspace mount"), "{}", r.stderr());
    p.write("prover.json", r#"{"Program":"prover","Mounts":{"%1":"/workspace"},"Bogus":1}"#);
    let r = p.gvbuild(&[]).exit(1);
    assert!(r.stderr().contains("unknown field `Bogus`"), "{}", r.stderr());
}

#[test]
fn the_manifest_depends_on_what_exists_in_the_stage_root_not_on_its_bytes() {
    let p = project(GPU);
    p.build(&[]);
    // New program bytes: the stage reruns, the manifest (which only checks presence) does not.
    p.write("gevulot.yaml", &p.read("gevulot.yaml").replace("#!/bin/sh", "#!/bin/sh -e"));
    let b = p.build(&[]);
    assert_eq!(b.ran(), names(&["stage"]));
    assert_eq!(b.fresh(), names(&["manifest"]));
    // A folder the manifest names disappears: it runs again, and fails saying so.
    p.write("gevulot.yaml", &p.read("gevulot.yaml").replace(" build/root/nvidia", ""));
    let r = p.gvbuild(&[]).exit(1);
    assert!(
        r.stderr().contains("`nvidia` (in dirs) is not a folder in the stage root build/root"),
        "{}",
        r.stderr()
    );
}

// Regression: the manifest step accepted an absolute program (ops reads it from the build
// machine's `/`) and a MapDirs key that ops, resolving it from the manifest's folder, reads
// outside the stage root.
#[test]
fn what_ops_would_read_outside_the_stage_root_fails_the_step() {
    let p = project(&GPU.replace("program: prover", "program: /prover"));
    let r = p.gvbuild(&[]).exit(1);
    assert!(r.stderr().contains("the program `/prover` is absolute: ops would read it"), "{}", r.stderr());
    let m = "  m:\n    deps: [stage]\n    manifest:\n      from: prover.json\n      root: build/root\n      into: build/m.json\n";
    let p = project(m)
        .file("prover.json", r#"{"Program":"prover","Mounts":{"%1":"/workspace"},"MapDirs":{"lib/*":"/l"}}"#);
    let r = p.gvbuild(&[]).exit(1);
    assert!(
        r.stderr().contains("MapDirs `lib/*` is read by ops from the manifest's folder build"),
        "{}",
        r.stderr()
    );
    p.write(
        "prover.json",
        r#"{"Program":"prover","Mounts":{"%1":"/workspace"},"MapDirs":{"root/lib/*":"/l"}}"#,
    );
    p.build(&[]);
}
