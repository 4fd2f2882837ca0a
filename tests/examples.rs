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

/// A stand-in `ops` (ops cannot be installed here) that "builds" an image by copying the
/// program, and the PATH that finds it. Keep the folder alive while it is used.
fn standin_ops() -> (tempfile::TempDir, String) {
    let bin = tempfile::tempdir().unwrap();
    let ops = bin.path().join("ops");
    fs::write(
        &ops,
        "#!/bin/sh\n[ \"$1\" = version ] && { echo standin; exit 0; }\n[ -x \"$2\" ] || exit 9\nmkdir -p \"$OPS_HOME/images\" && cp \"$2\" \"$OPS_HOME/images/$8.img\"\n",
    )
    .unwrap();
    fs::set_permissions(&ops, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.path().display(), std::env::var("PATH").unwrap());
    (bin, path)
}

/// The guide's "Complete example": cargo builds the prover, the stage root gets it and its
/// libraries, the baseline manifest is written, and `ops build` (a stand-in here: ops cannot be
/// installed on this machine) makes the image.
#[test]
fn cpu_prover_example_builds_its_manifest_and_image() {
    let p = example("cpu-prover");
    let (_bin, path) = standin_ops();
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

/// Where the CUDA toolkit for the GPU example is: `GVBUILD_TEST_CUDA` (a folder with bin/nvcc
/// and lib/libcudart.so.N, as .ci/run installs from PyPI). Without it the test is skipped
/// locally, and fails in CI, where it must run.
fn cuda() -> Option<std::path::PathBuf> {
    match std::env::var_os("GVBUILD_TEST_CUDA") {
        Some(dir) => Some(dir.into()),
        None if std::env::var_os("CI").is_some() => {
            panic!("GVBUILD_TEST_CUDA is not set: .ci/run installs nvcc from PyPI and sets it")
        }
        None => {
            eprintln!("skipping the GPU example: set GVBUILD_TEST_CUDA to a CUDA folder (bin/nvcc, lib/)");
            None
        }
    }
}

/// The guide's GPU Containerfile as a graph, built for real: the shim (cargo), the assets
/// (a tarball of the same shape served on 127.0.0.1), the CUDA program (real nvcc), the stage
/// root with its libraries and aliases, the GPU manifest, and the image (a stand-in ops).
#[test]
fn gpu_prover_example_builds_with_real_nvcc() {
    let Some(cuda) = cuda() else { return };
    let cudart = fs::read_dir(cuda.join("lib"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libcudart.so."))
        .expect("libcudart.so.N in the CUDA lib folder");
    let assets = crate::fetch::archives::Tar::new()
        .dir("nanos-gpu")
        .file("nanos-gpu/gpu_nvidia", b"klib", 0o644)
        .file("nanos-gpu/libcuda.so.535.104.05", b"driver", 0o644)
        .file("nanos-gpu/libnvidia-ml.so.535.104.05", b"nvml", 0o644)
        .file("nanos-gpu/libnvidia-ptxjitcompiler.so.535.104.05", b"ptxjit", 0o644)
        .file("nanos-gpu/nvidia/535.104.05/gsp_ga10x.bin", b"firmware", 0o644)
        .finish();
    let assets = crate::fetch::archives::gzip(&assets);
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&assets))
    };
    let server = crate::fetch::http::Server::start();
    server.serve("/nanos-0.1.51-gpu.tar.gz", assets);

    let p = example("gpu-prover");
    let _ = fs::remove_dir_all(p.path("shim/target"));
    let (_bin, path) = standin_ops();
    let sets = [
        format!("assets_url={}", server.url("/nanos-0.1.51-gpu.tar.gz")),
        format!("assets_sha256={sha}"),
        format!("nvcc={}", cuda.join("bin/nvcc").display()),
        format!("cuda_lib={}", cuda.join("lib").display()),
        format!("cudart={cudart}"),
        "cuda_arch=sm_90".to_string(),
    ];
    let build = |p: &Project| {
        let mut args: Vec<String> = vec!["--json".into()];
        for s in &sets {
            args.push("--set".into());
            args.push(s.clone());
        }
        let output = p
            .command(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .env("PATH", &path)
            .output()
            .unwrap();
        Build::parse(&Run { output, args }.success())
    };

    let b = build(&p);
    assert_eq!(b.ran(), names(&["assets", "image", "manifest", "prover", "shim", "stage-libs"]));
    let lib = "build/root/lib/x86_64-linux-gnu";
    for staged in ["libcuda.so.1", "libnvidia-ml.so.1", "libgevulot_shim.so", "libc.so.6", cudart.as_str()] {
        assert!(p.path(&format!("{lib}/{staged}")).is_file(), "{staged} is staged");
    }
    assert_eq!(p.read(&format!("{lib}/libcuda.so.1")), "driver");
    assert_eq!(p.read("build/root/nvidia/535.104.05/gsp_ga10x.bin"), "firmware");
    let manifest = p.read("build/prover.json");
    assert!(
        manifest.contains("\"Klibs\": [\n    \"gpu_nvidia\"\n  ]") && manifest.contains("\"GPUs\": 1"),
        "{manifest}"
    );
    assert!(!manifest.contains("readonly_rootfs"), "{manifest}");
    assert!(p.path("build/prover.img").is_file());
    assert_eq!(server.requests("/nanos-0.1.51-gpu.tar.gz"), 1);

    // Only the .cu file changes: prover, stage-libs and image rerun; shim and assets stay fresh.
    p.write("src/device_query.cu", &format!("{}\n// edited\n", p.read("src/device_query.cu")));
    // The manifest only checks that the program and folders exist, so it stays fresh too.
    let b = build(&p);
    assert_eq!(b.ran(), names(&["image", "prover", "stage-libs"]));
    assert_eq!(b.fresh(), names(&["assets", "manifest", "shim"]));

    // Only a manifest env value changes: only manifest and image rerun.
    p.write("gevulot.yaml", &p.read("gevulot.yaml").replace("RUST_LOG: debug", "RUST_LOG: info"));
    let b = build(&p);
    assert_eq!(b.ran(), names(&["image", "manifest"]));

    // A second clone with the same cache runs nothing and downloads nothing.
    let c = p.clone_to_new_folder();
    for generated in ["build", "shim/target"] {
        let _ = fs::remove_dir_all(c.path(generated));
    }
    let b = build(&c);
    assert!(b.ran().is_empty(), "{b:?}");
    assert_eq!(b.restored().len(), 6);
    assert_eq!(server.requests("/nanos-0.1.51-gpu.tar.gz"), 1);
}
