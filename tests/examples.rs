//! The example projects build in the test suite.
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::*;

fn example(name: &str) -> Project {
    let p = Project::new();
    copy_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name), p.root());
    for generated in ["build", "my_prover/target"] {
        let _ = fs::remove_dir_all(p.path(generated));
    }
    p
}

/// The guide's "Complete example": cargo builds the prover, the stage root gets it and its
/// libraries, the baseline manifest is written, and `ops build` (a stand-in here: ops cannot be
/// installed on this machine) makes the image.
#[test]
fn cpu_prover_example_builds_its_manifest_and_image() {
    let p = example("cpu-prover");
    let bin = tempfile::tempdir().unwrap();
    let ops = bin.path().join("ops");
    fs::write(
        &ops,
        "#!/bin/sh\n[ \"$1\" = version ] && { echo standin; exit 0; }\n[ -x \"$2\" ] || exit 9\nmkdir -p \"$OPS_HOME/images\" && cp \"$2\" \"$OPS_HOME/images/$8.img\"\n",
    )
    .unwrap();
    fs::set_permissions(&ops, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.path().display(), std::env::var("PATH").unwrap());
    let run = |args: &[&str]| {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let output = p.command(&all).env("PATH", &path).output().unwrap();
        Build::parse(&Run { output, args: all.iter().map(|s| s.to_string()).collect() }.success())
    };
    let b = run(&[]);
    assert_eq!(b.ran(), names(&["image", "manifest", "my_prover", "stage"]));
    let manifest = p.read("build/my_prover.json");
    assert!(manifest.contains("\"Program\": \"my_prover\""), "{manifest}");
    assert!(manifest.contains("\"readonly_rootfs\": \"true\""), "{manifest}");
    assert!(manifest.contains("\"%1\": \"/workspace\""), "{manifest}");
    assert!(p.path("build/root/lib/x86_64-linux-gnu/libc.so.6").is_file());
    assert!(p.path("build/my_prover.img").is_file());

    // The prover itself works: it proves every task in a workspace folder.
    fs::create_dir_all(p.path("ws")).unwrap();
    fs::write(p.path("ws/a.task"), "abc").unwrap();
    let st = std::process::Command::new(p.path("build/root/my_prover")).arg(p.path("ws")).status().unwrap();
    assert!(st.success());
    assert!(p.read("ws/a.proof").starts_with("3 "));

    // Only the manifest's env changes: only manifest and image rerun.
    p.write("gevulot.yaml", &p.read("gevulot.yaml").replace("RUST_LOG: debug", "RUST_LOG: info"));
    let b = run(&[]);
    assert_eq!(b.ran(), names(&["image", "manifest"]));
    // A source change: the depfile makes cargo's sources inputs.
    p.write("my_prover/src/main.rs", &format!("{}\n// edited\n", p.read("my_prover/src/main.rs")));
    let b = run(&["--explain"]);
    assert!(b.ran().contains(&"my_prover".to_string()), "{b:?}");
}
