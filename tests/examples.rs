//! The example projects build in the test suite.
use std::collections::BTreeMap;
use std::fs;
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

/// Where the stand-in release is served: the release bucket's layout under a mirror's URL.
const NANOS_PATH: &str = "/mirror/0.1.51/nanos-release-linux-0.1.51.tar.gz";

/// The stand-in Nanos release served on 127.0.0.1 (a real release cannot be downloaded
/// here), and the `--set`s that point an example's `nanos` fetch at it.
fn release_server() -> (crate::fetch::http::Server, Vec<String>) {
    let (tarball, sha) = nanos_release_tarball();
    let server = crate::fetch::http::Server::start();
    server.serve(NANOS_PATH, tarball);
    // Only what README documents: the hash pin and a mirror of the release bucket.
    let sets = vec![format!("nanos_mirror={}", server.url("/mirror")), format!("nanos_sha256={sha}")];
    (server, sets)
}

/// The image step alone, on identical inputs: copy the example's stage root, manifest and
/// release (and klib folder) into a new folder with a separate cache, build only the image
/// there, and compare.
fn image_step_again_elsewhere(p: &Project, image_yaml: &str, image: &str) {
    let q = Project::new().file("gevulot.yaml", image_yaml);
    for part in ["build/root", "build/nanos", "build/assets"] {
        if p.path(part).exists() {
            copy_tree(&p.path(part), &q.path(part));
        }
    }
    for f in fs::read_dir(p.path("build")).unwrap().flatten() {
        if f.path().extension().is_some_and(|e| e == "json") {
            fs::copy(f.path(), q.path("build").join(f.file_name())).unwrap();
        }
    }
    let b = q.build(&[]);
    assert_eq!(b.ran(), names(&["image"]));
    assert!(
        fs::read(p.path(image)).unwrap() == fs::read(q.path(image)).unwrap(),
        "the image step is deterministic"
    );
}

/// The guide's "Complete example": cargo builds the prover, the stage root gets it and its
/// libraries, the baseline manifest is written, and gvbuild writes the image natively from the
/// (stand-in) Nanos release.
#[test]
fn cpu_prover_example_builds_its_manifest_and_image() {
    let p = example("cpu-prover");
    let (server, sets) = release_server();
    let run = |args: &[&str]| {
        let mut all: Vec<String> = vec!["--json".into()];
        for s in &sets {
            all.push("--set".into());
            all.push(s.clone());
        }
        all.extend(args.iter().map(|s| s.to_string()));
        let output = p.command(&all.iter().map(String::as_str).collect::<Vec<_>>()).output().unwrap();
        Build::parse(&Run { output, args: all }.success())
    };
    let b = run(&[]);
    assert_eq!(b.ran(), names(&["image", "manifest", "my_prover", "nanos", "stage"]));
    assert_eq!(server.requests(NANOS_PATH), 1);
    let manifest = p.read("build/my_prover.json");
    assert!(manifest.contains("\"Program\": \"my_prover\""), "{manifest}");
    assert!(manifest.contains("\"readonly_rootfs\": \"true\""), "{manifest}");
    assert!(manifest.contains("\"%1\": \"/workspace\""), "{manifest}");
    assert!(p.path("build/root/lib/x86_64-linux-gnu/libc.so.6").is_file());

    // The image holds what gevulot.yaml asked for, with the workspace as 9p mount tag 0.
    let d = inspect(&p, "build/my_prover.img");
    let root = filesystem(&d, "root");
    assert_eq!(root["root_tuple"]["program"], "/my_prover");
    assert_eq!(
        root["root_tuple"]["arguments"],
        serde_json::json!(["my_prover"]),
        "argv[0] is the program as written, as ops makes it"
    );
    // ops renumbers the guide's `%1` to `%0` (AddVirtfsShares), the node's mount tag 0.
    assert_eq!(root["root_tuple"]["mounts"], serde_json::json!({ "%0": "/workspace" }));
    assert_eq!(root["root_tuple"]["environment"]["RUST_LOG"], "debug");
    let rows = tree_rows(root);
    assert!(rows["/my_prover"].2, "the program is marked exec");
    assert_eq!(rows["/workspace"].0, "dir");
    assert!(rows.contains_key("/lib/x86_64-linux-gnu/libc.so.6"), "{rows:?}");
    p.gvbuild(&["inspect", "build/my_prover.img"]).success().stdout_has("  mounts: %0:/workspace\n");
    // The sample task boots the image (a real Nanos does it in tests/vm_nanos.rs): here, what
    // it would do. Its key names QEMU, so a dry run needs it.
    let mut dry: Vec<String> = Vec::new();
    for s in &sets {
        dry.extend(["--set".to_string(), s.clone()]);
    }
    dry.extend(["-n".to_string(), "prove-sample".to_string()]);
    if !cfg!(gvbuild_no_qemu) {
        p.gvbuild(&dry.iter().map(String::as_str).collect::<Vec<_>>())
            .success()
            .stdout_has("task `task01`: boot build/my_prover.img with 1 file(s) -> build/prove-sample");
    }
    image_step_again_elsewhere(
        &p,
        "targets:\n  image:\n    image:\n      builder: native\n      release: build/nanos\n      manifest: build/my_prover.json\n      root: build/root\n      into: build/my_prover.img\n",
        "build/my_prover.img",
    );

    // The prover itself speaks the task protocol (outside a VM, on a workspace folder named
    // as its argument): it reads task.json, proves each file, writes task_result.json.
    fs::create_dir_all(p.path("ws")).unwrap();
    fs::write(p.path("ws/a.in"), "abc").unwrap();
    fs::write(p.path("ws/task.json"), r#"{"id":"t1","args":[],"files":["a.in"]}"#).unwrap();
    let st = std::process::Command::new(p.path("build/root/my_prover")).arg(p.path("ws")).status().unwrap();
    assert!(st.success());
    assert!(p.read("ws/a.in.proof").starts_with("3 "));
    let result: serde_json::Value = serde_json::from_str(&p.read("ws/task_result.json")).unwrap();
    assert_eq!(result["Ok"]["id"], "t1");
    assert_eq!(result["Ok"]["files"], serde_json::json!([p.path("ws/a.in.proof").to_str().unwrap()]));

    // Only the manifest's env changes: only manifest and image rerun, and the image (its
    // program id) changes with it.
    let before = blake3::hash(&fs::read(p.path("build/my_prover.img")).unwrap());
    p.write("gevulot.yaml", &p.read("gevulot.yaml").replace("RUST_LOG: debug", "RUST_LOG: info"));
    let b = run(&[]);
    assert_eq!(b.ran(), names(&["image", "manifest"]));
    assert_ne!(blake3::hash(&fs::read(p.path("build/my_prover.img")).unwrap()), before);
    assert_eq!(
        filesystem(&inspect(&p, "build/my_prover.img"), "root")["root_tuple"]["environment"]["RUST_LOG"],
        "info"
    );
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

/// The GPU example's surroundings: the assets (a tarball of the same shape) and the stand-in
/// Nanos release served on 127.0.0.1, and the `--set`s its instructions give for them and for
/// the PyPI CUDA toolkit.
struct GpuExample {
    assets: crate::fetch::http::Server,
    release: crate::fetch::http::Server,
    cudart: String,
    sets: Vec<String>,
}

impl GpuExample {
    fn new(cuda: &Path) -> GpuExample {
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
        server.serve("/assets-mirror/nanos-0.1.51-gpu.tar.gz", assets);
        let (release, release_sets) = release_server();
        let mut sets = vec![
            format!("assets_mirror={}", server.url("/assets-mirror")),
            format!("assets_sha256={sha}"),
            // The PyPI toolkit: CUDA 13, its libraries in lib/ rather than lib64/.
            format!("cuda={}", cuda.display()),
            format!("cuda_lib={}", cuda.join("lib").display()),
            format!("cudart={cudart}"),
            "cuda_arch=sm_90".to_string(),
        ];
        sets.extend(release_sets);
        GpuExample { assets: server, release, cudart, sets }
    }

    /// `gvbuild --json --set ... EXTRA` in `p`, which must succeed.
    fn build(&self, p: &Project, extra: &[&str]) -> Build {
        let mut args: Vec<String> = vec!["--json".into()];
        for s in &self.sets {
            args.push("--set".into());
            args.push(s.clone());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let output = p.command(&args.iter().map(String::as_str).collect::<Vec<_>>()).output().unwrap();
        Build::parse(&Run { output, args }.success())
    }

    fn asset_downloads(&self) -> usize {
        self.assets.requests("/assets-mirror/nanos-0.1.51-gpu.tar.gz")
    }
}

/// The GPU example through a shared cache (nginx): a second clone on an empty local cache runs
/// no step, and takes the assets and the Nanos release from the remote cache, not from their
/// origin.
#[test]
#[cfg_attr(
    gvbuild_no_cuda,
    ignore = "needs nvcc: set GVBUILD_TEST_CUDA to a CUDA folder (bin/nvcc, lib/); .ci/run installs one from PyPI"
)]
#[cfg_attr(gvbuild_no_nginx, ignore = "needs nginx (CI installs it)")]
fn gpu_prover_example_shares_through_a_remote_cache() {
    let Some(cuda) = cuda() else { return };
    let gpu = GpuExample::new(&cuda);
    let cache = crate::remote::nginx::Nginx::start();
    let url = cache.url();
    let p = example("gpu-prover");
    let _ = fs::remove_dir_all(p.path("shim/target"));
    let b = gpu.build(&p, &["--remote-cache", &url]);
    assert_eq!(b.ran(), names(&["assets", "image", "manifest", "nanos", "prover", "shim", "stage-libs"]));
    assert_eq!((gpu.asset_downloads(), gpu.release.requests(NANOS_PATH)), (1, 1));

    let c = Project::new();
    copy_tree(p.root(), c.root());
    for generated in ["build", "shim/target"] {
        let _ = fs::remove_dir_all(c.path(generated));
    }
    let b = gpu.build(&c, &["--remote-cache", &url]);
    assert!(b.ran().is_empty(), "{:?}", b.events);
    assert_eq!(b.restored().len(), 7);
    assert!(b.events.iter().filter(|e| e["outcome"] == "restored").all(|e| e["where"] == "remote"));
    assert_eq!(
        (gpu.asset_downloads(), gpu.release.requests(NANOS_PATH)),
        (1, 1),
        "the second clone downloaded from the origin"
    );
    for f in ["build/prover.img", "build/prover", "build/root/lib/x86_64-linux-gnu/libcuda.so.1"] {
        assert!(fs::read(p.path(f)).unwrap() == fs::read(c.path(f)).unwrap(), "{f} differs");
    }
}

/// The GPU example with `--remote-exec`: its `run:` steps (the shim's cargo, the CUDA program's
/// nvcc) execute on two workers whose PATH has the PyPI nvcc, while the client has none and
/// names the workers' nvcc by the identity a worker prints; the built-in steps (fetches, stage,
/// manifest, image) run on the client. The image equals the one a local image step makes from
/// that same remotely built program (nvcc itself is not byte-for-byte deterministic).
#[test]
#[cfg_attr(
    any(gvbuild_no_cuda, gvbuild_no_reapi_python, gvbuild_no_postgres),
    ignore = "needs nvcc (GVBUILD_TEST_CUDA), BuildGrid (GVBUILD_TEST_REAPI_PYTHON) and PostgreSQL; CI sets them up"
)]
fn gpu_prover_example_compiles_on_remote_workers() {
    let Some(cuda) = cuda() else { return };
    let gpu = GpuExample::new(&cuda);
    let grid = crate::remote::buildgrid::BuildGrid::start_exec(&["tool:nvcc", "tool:cargo"]);
    let path = format!("{}:{}", cuda.join("bin").display(), std::env::var("PATH").unwrap_or_default());
    let tools = ["--tool", "nvcc", "--tool", "cargo", "--jobs", "2"];
    let a = crate::worker::Worker::start_with_path(&grid, "gpu-a", &tools, Some(&path));
    let _b = crate::worker::Worker::start_with_path(&grid, "gpu-b", &tools, Some(&path));
    // The client has no nvcc: it names the workers' by the identity they print.
    let client_nvcc =
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("nvcc").is_file()));
    assert!(!client_nvcc, "the client must not have nvcc on its PATH");
    let nvcc_id = a
        .stdout()
        .lines()
        .find_map(|l| l.strip_prefix("tool:nvcc="))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("the worker printed no nvcc identity: {}", a.stdout()));
    let p = example("gpu-prover");
    let _ = fs::remove_dir_all(p.path("shim/target"));
    let url = grid.url();
    let platform = format!("tool:nvcc={nvcc_id}");
    let args = ["--remote-exec", url.as_str(), "--set", "nvcc=nvcc", "--platform", platform.as_str()];
    let b = gpu.build(&p, &args);
    assert_eq!(b.ran(), names(&["assets", "image", "manifest", "nanos", "prover", "shim", "stage-libs"]));
    let ran_where: BTreeMap<String, String> = b
        .events
        .iter()
        .filter(|e| e["outcome"] == "ran")
        .map(|e| (e["target"].as_str().unwrap().to_string(), e["where"].as_str().unwrap().to_string()))
        .collect();
    for (t, w) in &ran_where {
        let expected = if t == "prover" || t == "shim" { "remote" } else { "local" };
        assert_eq!(w, expected, "{t} ran {w}: {ran_where:?}");
    }
    // The program is a real CUDA executable linked to the shim, staged with its libraries.
    let elf = fs::read(p.path("build/prover")).unwrap();
    assert!(elf.starts_with(b"\x7fELF"));
    assert!(p.path("build/root/lib/x86_64-linux-gnu/libgevulot_shim.so").is_file());
    image_step_again_elsewhere(
        &p,
        "targets:\n  image:\n    image:\n      builder: native\n      release: build/nanos\n      manifest: build/prover.json\n      root: build/root\n      into: build/prover.img\n",
        "build/prover.img",
    );
    // Without the identity, the client says how to name the tool it lacks.
    let c = example("gpu-prover");
    let mut args: Vec<String> = vec!["--remote-exec".into(), url.clone(), "--set".into(), "nvcc=nvcc".into()];
    for s in &gpu.sets {
        args.push("--set".into());
        args.push(s.clone());
    }
    let run = c.gvbuild(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(run.stderr().contains("--platform tool:nvcc="), "{}", run.stderr());
}

/// The guide's GPU Containerfile as a graph, built for real: the shim (cargo), the assets
/// (a tarball of the same shape served on 127.0.0.1), the CUDA program (real nvcc), the stage
/// root with its libraries and aliases, the GPU manifest, and the image (a stand-in ops).
#[test]
#[cfg_attr(
    gvbuild_no_cuda,
    ignore = "needs nvcc: set GVBUILD_TEST_CUDA to a CUDA folder (bin/nvcc, lib/); .ci/run installs one from PyPI"
)]
fn gpu_prover_example_builds_with_real_nvcc() {
    let Some(cuda) = cuda() else { return };
    let gpu = GpuExample::new(&cuda);
    let (release, cudart) = (&gpu.release, gpu.cudart.as_str());
    let p = example("gpu-prover");
    let _ = fs::remove_dir_all(p.path("shim/target"));
    let build = |p: &Project| gpu.build(p, &[]);

    let b = build(&p);
    assert_eq!(b.ran(), names(&["assets", "image", "manifest", "nanos", "prover", "shim", "stage-libs"]));
    let lib = "build/root/lib/x86_64-linux-gnu";
    for staged in ["libcuda.so.1", "libnvidia-ml.so.1", "libgevulot_shim.so", "libc.so.6", cudart] {
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
    assert_eq!(gpu.asset_downloads(), 1);

    // The image: the GPU klib in the boot filesystem, the libraries, firmware and program in
    // the root, the workspace mount renumbered to `%0` as ops renumbers it.
    let d = inspect(&p, "build/prover.img");
    let boot = tree_rows(filesystem(&d, "boot"));
    assert_eq!(boot["/klib/gpu_nvidia"].1, "4", "the assets' klib: {boot:?}");
    let root = filesystem(&d, "root");
    assert_eq!(root["root_tuple"]["klibs"], "bootfs");
    assert_eq!(root["root_tuple"]["arguments"], serde_json::json!(["prover"]), "argv as ops makes it");
    assert_eq!(root["root_tuple"]["mounts"], serde_json::json!({ "%0": "/workspace" }));
    let rows = tree_rows(root);
    for path in [
        "/prover",
        "/lib/x86_64-linux-gnu/libcuda.so.1",
        "/lib/x86_64-linux-gnu/libgevulot_shim.so",
        "/nvidia/535.104.05/gsp_ga10x.bin",
    ] {
        assert_eq!(rows.get(path).map(|r| r.0.as_str()), Some("file"), "{path} in {rows:?}");
    }
    assert!(rows["/prover"].2);
    image_step_again_elsewhere(
        &p,
        "targets:\n  image:\n    image:\n      builder: native\n      release: build/nanos\n      manifest: build/prover.json\n      root: build/root\n      into: build/prover.img\n",
        "build/prover.img",
    );

    // Only the .cu file changes: prover, stage-libs and image rerun; shim and assets stay fresh.
    p.write("src/device_query.cu", &format!("{}\n// edited\n", p.read("src/device_query.cu")));
    // The manifest only checks that the program and folders exist, so it stays fresh too.
    let b = build(&p);
    assert_eq!(b.ran(), names(&["image", "prover", "stage-libs"]));
    assert_eq!(b.fresh(), names(&["assets", "manifest", "nanos", "shim"]));

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
    assert_eq!(b.restored().len(), 7);
    assert_eq!(gpu.asset_downloads(), 1);
    assert_eq!(release.requests(NANOS_PATH), 1);
}

/// The examples as shipped: a dry run with only the hash pins (no mirror) fetches from the
/// real release and asset buckets, with `${nanos}` expanded inside the URL vars.
#[test]
fn examples_fetch_the_real_urls_as_shipped() {
    let pin = |name: &str| format!("{name}={}", "ab".repeat(32));
    for (name, want) in [
        (
            "cpu-prover",
            vec!["fetch https://storage.googleapis.com/nanos/release/0.1.51/nanos-release-linux-0.1.51.tar.gz -> build/nanos"],
        ),
        (
            "gpu-prover",
            vec![
                "fetch https://storage.googleapis.com/nanos/release/0.1.51/nanos-release-linux-0.1.51.tar.gz -> build/nanos",
                "fetch https://storage.googleapis.com/gevulot-static-assets/nanos-0.1.51-gpu.tar.gz -> build/assets",
            ],
        ),
    ] {
        let p = example(name);
        let mut args = vec!["--json".to_string(), "-n".into(), "--set".into(), pin("nanos_sha256")];
        if name == "gpu-prover" {
            args.extend(["--set".into(), pin("assets_sha256")]);
        }
        let run = p.gvbuild(&args.iter().map(String::as_str).collect::<Vec<_>>()).success();
        let b = Build::parse(&run);
        let commands: Vec<String> =
            b.events.iter().filter_map(|e| e["command"].as_str().map(str::to_string)).collect();
        for w in want {
            assert!(commands.iter().any(|c| c == w), "{name}: {w:?} not in {commands:?}");
        }
        assert!(!p.exists(".gvbuild"), "{name}: a dry run writes nothing");
        // As shipped, the file loads: every var it uses is declared.
        p.gvbuild(&["list"]).success();
    }
}
