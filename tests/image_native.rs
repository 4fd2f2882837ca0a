//! `image: { builder: native }`: gvbuild writes the Nanos disk image itself from a (stand-in)
//! release fetched with a pinned hash. The image is read back with `gvbuild inspect`: the
//! partition table, the boot filesystem (kernel, klibs), the root tuple from the manifest with
//! its mounts as written, and the tree; the same inputs give the same bytes anywhere.
use std::fs;
use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use crate::support::*;

const YAML: &str = r#"vars:
  release_url: ~
  release_sha256: ~
targets:
  nanos:
    fetch:
      url: "${release_url}"
      sha256: "${release_sha256}"
      extract: {}
      into: build/nanos
  stage:
    inputs: [src/]
    outputs: [build/root]
    run: rm -rf build/root && mkdir -p build && cp -a src build/root
  manifest:
    deps: [stage]
    manifest:
      program: prover
      args: [--fast]
      env: { RUST_LOG: debug }
      dirs: [lib]
      files: [etc/prover.toml]
      workspace: { mount: "%1", path: /workspace }
      root: build/root
      into: build/prover.json
  image:
    deps: [stage, manifest, nanos]
    image:
      builder: native
      release: build/nanos
      manifest: build/prover.json
      root: build/root
      into: build/prover.img
"#;

/// A project with the stand-in release tarball beside it (kept alive by the returned dir).
fn project_with(yaml: &str) -> (Project, tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let (tarball, sha) = nanos_release_tarball();
    let tar_path = dir.path().join("nanos-release-linux-0.1.51.tar.gz");
    fs::write(&tar_path, tarball).unwrap();
    let p = Project::new().file("gevulot.yaml", yaml);
    write_stage_src(&p);
    let sets = vec![
        "--set".to_string(),
        format!("release_url=file://{}", tar_path.display()),
        "--set".to_string(),
        format!("release_sha256={sha}"),
    ];
    (p, dir, sets)
}

fn write_stage_src(p: &Project) {
    p.executable("src/prover", "#!prover v1\n");
    p.write("src/lib/x86_64-linux-gnu/libfoo.so.1", "libfoo");
    p.write("src/etc/prover.toml", "fast = true\n");
    fs::create_dir_all(p.path("src/lib/empty")).unwrap();
    std::os::unix::fs::symlink("x86_64-linux-gnu/libfoo.so.1", p.path("src/lib/libfoo.so")).unwrap();
    p.write("src/notes.txt", "not in the image");
}

fn build(p: &Project, sets: &[String]) -> (Run, Build) {
    let mut args: Vec<&str> = vec!["--json"];
    args.extend(sets.iter().map(String::as_str));
    let run = p.gvbuild(&args).success();
    let b = Build::parse(&run);
    (run, b)
}

#[test]
fn native_image_holds_what_the_manifest_says_and_inspect_shows_it() {
    let (p, _dir, sets) = project_with(YAML);
    let (run, b) = build(&p, &sets);
    assert_eq!(b.ran(), names(&["image", "manifest", "nanos", "stage"]));
    // The image's blake3, the Gevulot program id, is reported.
    let image = fs::read(p.path("build/prover.img")).unwrap();
    let id = blake3::hash(&image).to_hex().to_string();
    assert!(run.stdout().contains(&format!("\"blake3\":\"{id}\"")), "{}", run.stdout());
    // Outside the manifest's dirs and files, a staged entry is left out, with a warning.
    assert!(run.stderr().contains("notes.txt"), "{}", run.stderr());

    let d = inspect(&p, "build/prover.img");
    assert_eq!(d["blake3"], json!(id));
    let parts = d["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    let boot_record_len = 8 * 512;
    // Boot partition right after boot.img and the 4 KiB kernel log area; root right after it.
    assert_eq!(parts[0]["start_sector"], json!((512 + boot_record_len + 4096) / 512));
    assert_eq!(parts[0]["sectors"], json!(12 * 1024 * 1024 / 512));
    assert_eq!(parts[0]["type"], json!("0x83"));
    assert_eq!(parts[0]["active"], json!(true));
    let root_start = parts[0]["start_sector"].as_u64().unwrap() + parts[0]["sectors"].as_u64().unwrap();
    assert_eq!(parts[1]["start_sector"], json!(root_start));
    assert_eq!((root_start + parts[1]["sectors"].as_u64().unwrap()) * 512, image.len() as u64);
    // boot.img itself sits at the start, its partition table filled in.
    let release = nanos_release_files();
    let boot_img = &release.iter().find(|(n, _)| *n == "boot.img").unwrap().1;
    assert_eq!(&image[..0x1be], &boot_img[..0x1be]);
    assert_eq!(&image[512..boot_img.len()], &boot_img[512..]);

    let boot = filesystem(&d, "boot");
    assert_eq!(boot["tfs_version"], json!(5));
    let rows = tree_rows(boot);
    assert_eq!(rows["/kernel"].1, "300008");
    assert_eq!(rows.len(), 1, "no klibs asked for: {rows:?}");

    let root = filesystem(&d, "root");
    assert_eq!(
        root["root_tuple"],
        json!({
            "program": "/prover",
            "arguments": ["prover", "--fast"],
            "environment": { "RUST_LOG": "debug" },
            "mounts": { "%0": "/workspace" },
            "readonly_rootfs": "true",
        })
    );
    let rows = tree_rows(root);
    let want = [
        ("/etc", ("dir", "", false)),
        ("/etc/prover.toml", ("file", "12", false)),
        ("/lib", ("dir", "", false)),
        ("/lib/empty", ("dir", "", false)),
        ("/lib/libfoo.so", ("symlink", "x86_64-linux-gnu/libfoo.so.1", false)),
        ("/lib/x86_64-linux-gnu", ("dir", "", false)),
        ("/lib/x86_64-linux-gnu/libfoo.so.1", ("file", "6", false)),
        ("/prover", ("file", "12", true)),
        ("/workspace", ("dir", "", false)),
    ];
    let want: std::collections::BTreeMap<_, _> =
        want.into_iter().map(|(p, (k, d, x))| (p.to_string(), (k.to_string(), d.to_string(), x))).collect();
    assert_eq!(rows, want);

    // The text view, for a person: the mount and the exec attribute.
    p.gvbuild(&["inspect", "build/prover.img"])
        .success()
        .stdout_has("  mounts: %0:/workspace\n")
        .stdout_has("  /prover  12 bytes  exec\n")
        .stdout_has(&format!("blake3 {id}"));

    // --extract copies the root filesystem out, the same bytes and exec bits.
    p.gvbuild(&["inspect", "build/prover.img", "--extract", "out"]).success();
    assert_eq!(p.read("out/prover"), "#!prover v1\n");
    assert_eq!(fs::metadata(p.path("out/prover")).unwrap().permissions().mode() & 0o777, 0o755);
    assert_eq!(p.read("out/lib/x86_64-linux-gnu/libfoo.so.1"), "libfoo");
    assert!(p.path("out/workspace").is_dir() && p.path("out/lib/empty").is_dir());
    // Extraction never writes into a folder that has something in it.
    p.gvbuild(&["inspect", "build/prover.img", "--extract", "out"]).failure().stderr_has("not empty");

    // A no-op build is fresh and still names the program id.
    let (run, b) = build(&p, &sets);
    assert!(b.ran().is_empty(), "{b:?}");
    assert!(run.stdout().contains(&id));
}

#[test]
fn identical_inputs_in_two_folders_with_two_caches_give_identical_images() {
    let (a, _da, sets_a) = project_with(YAML);
    let (b, _db, sets_b) = project_with(YAML);
    // Different mtimes and inode order must not matter.
    std::thread::sleep(std::time::Duration::from_millis(20));
    b.write("src/etc/prover.toml", "fast = true\n");
    build(&a, &sets_a);
    build(&b, &sets_b);
    let (ia, ib) =
        (fs::read(a.path("build/prover.img")).unwrap(), fs::read(b.path("build/prover.img")).unwrap());
    assert!(ia == ib, "the two images differ");

    // Changing one staged file changes the image and its program id; only stage and image run.
    b.write("src/lib/x86_64-linux-gnu/libfoo.so.1", "libfoo2");
    let (_, bb) = build(&b, &sets_b);
    assert_eq!(bb.ran(), names(&["image", "stage"]));
    let ib2 = fs::read(b.path("build/prover.img")).unwrap();
    assert_ne!(blake3::hash(&ib), blake3::hash(&ib2));
    // Changing it back gives the first image again, restored from the cache.
    b.write("src/lib/x86_64-linux-gnu/libfoo.so.1", "libfoo");
    let (_, bb) = build(&b, &sets_b);
    assert!(bb.restored().contains(&"image".to_string()), "{bb:?}");
    assert!(fs::read(b.path("build/prover.img")).unwrap() == ia);
}

/// The image step alone on identical inputs: the same stage root and manifest in two folders,
/// built with separate caches, give the same bytes (no timestamps, no random UUID, no paths).
#[test]
fn the_image_step_is_deterministic_on_identical_inputs() {
    let make = || {
        let p = Project::new().file("gevulot.yaml", &native_image_yaml(""));
        write_nanos_release(&p, "nanos");
        p.executable("root/prover", "prover");
        p.write("root/lib/a.so", &"a".repeat(5000));
        p.write(
            "prover.json",
            "{\"Dirs\": [\"lib\"], \"Program\": \"prover\", \"Mounts\": {\"%1\": \"/workspace\"}}\n",
        );
        p
    };
    let (a, b) = (make(), make());
    a.build(&[]);
    b.build(&[]);
    assert!(fs::read(a.path("prover.img")).unwrap() == fs::read(b.path("prover.img")).unwrap());
}

#[test]
fn klibs_go_to_the_boot_filesystem_from_the_klib_folder_or_the_release() {
    let yaml = native_image_yaml(
        "      nanos_version: 0.1.51\n      ops_extras: [env, passwd, resolv_conf, hostname]\n",
    );
    let p = Project::new().file("gevulot.yaml", &yaml);
    write_nanos_release(&p, "nanos");
    p.executable("root/prover", "prover");
    p.write("assets/gpu_nvidia", "the assets' gpu klib");
    p.write("assets/ntp", "the assets' ntp klib");
    p.write(
        "prover.json",
        r#"{"Program": "prover", "Klibs": ["gpu_nvidia", "ntp"], "KlibDir": "../assets", "RebootOnExit": true,
            "Env": {"USER": "prover"}, "ManifestPassthrough": {"readonly_rootfs": "true"}}"#,
    );
    p.build(&[]);
    let d = inspect(&p, "prover.img");
    let boot = tree_rows(filesystem(&d, "boot"));
    assert_eq!(boot["/klib/gpu_nvidia"].1, "20", "from KlibDir, not the release's own");
    assert_eq!(boot["/klib/ntp"].1, "20", "from KlibDir too");
    let root = filesystem(&d, "root");
    assert_eq!(root["root_tuple"]["klibs"], json!("bootfs"));
    assert_eq!(root["root_tuple"]["reboot_on_exit"], json!("t"));
    assert_eq!(
        root["root_tuple"]["environment"],
        json!({ "USER": "prover", "PWD": "/", "NANOS_VERSION": "0.1.51", "NANOS_ARCH": "x86_64", "IMAGE_NAME": "prover" })
    );
    p.gvbuild(&["inspect", "prover.img", "--extract", "x"]).success();
    assert_eq!(p.read("x/etc/passwd"), "root:x:0:0:root:/root:/bin/nobash");
    assert_eq!(p.read("x/etc/resolv.conf"), "nameserver 8.8.8.8\n");
    assert_eq!(p.read("x/proc/sys/kernel/hostname"), "uniboot");

    // The klib from the klib folder is a discovered input: changing it rebuilds the image.
    p.write("assets/gpu_nvidia", "a newer gpu klib");
    let b = p.build(&[]);
    assert_eq!(b.ran(), names(&["image"]));

    // Without KlibDir, the klibs come from the release.
    p.write("prover.json", r#"{"Program": "prover", "Klibs": ["ntp"]}"#);
    p.build(&[]);
    let boot = tree_rows(filesystem(&inspect(&p, "prover.img"), "boot"));
    assert_eq!(boot["/klib/ntp"].1, "8", "from the release's klibs/");
}

/// Bad input is a clear error that names the cause, and leaves no image behind.
#[test]
fn bad_inputs_are_clear_errors() {
    let setup = |size: &str| {
        let p = Project::new().file("gevulot.yaml", &native_image_yaml(&format!("      size: {size}\n")));
        write_nanos_release(&p, "nanos");
        p.executable("root/prover", "prover");
        p.write("root/lib/a.so", "a");
        p.write("prover.json", "{\"Program\": \"prover\", \"Dirs\": [\"lib\"]}");
        p
    };
    let fails = |p: &Project, want: &str| {
        // An image of the last good build is not left standing for the failed one.
        fs::write(p.path("prover.img"), "an older image").unwrap();
        let (run, _) = p.build_any(&[]);
        assert_ne!(run.code(), 0, "want {want:?}");
        assert!(run.stderr().contains(want), "want {want:?} in: {}", run.stderr());
        assert!(!p.exists("prover.img"), "no image after a failure");
    };

    let p = setup("64m");
    fs::remove_file(p.path("nanos/kernel.img")).unwrap();
    // Errors found while building name the gevulot.yaml field they are about.
    fails(&p, "gevulot.yaml:5:16: the Nanos release folder nanos has no kernel.img");

    let p = setup("64m");
    fs::write(p.path("nanos/kernel.img"), "not an elf").unwrap();
    fails(&p, "kernel.img is not an ELF file");

    let p = setup("64m");
    fs::write(p.path("nanos/boot.img"), vec![0u8; 1024]).unwrap();
    fails(&p, "boot.img is not a Nanos boot loader");

    let p = setup("64m");
    fs::remove_file(p.path("root/prover")).unwrap();
    std::os::unix::fs::symlink("prover2", p.path("root/prover")).unwrap();
    std::os::unix::fs::symlink("prover", p.path("root/prover2")).unwrap();
    p.write("prover.json", "{\"Program\": \"prover\", \"Dirs\": [\"lib\"], \"Files\": [\"prover2\"]}");
    fails(&p, "symlink loop");

    let p = setup("64m");
    p.write("prover.json", "{\"Program\": \"prover3\", \"Dirs\": [\"lib\"]}");
    fails(&p, "gevulot.yaml:6:17: the program `prover3` is not in the stage root root");

    let p = setup("64m");
    std::os::unix::fs::symlink("a.so", p.path("root/lib/loop")).unwrap();
    fs::remove_file(p.path("root/lib/a.so")).unwrap();
    std::os::unix::fs::symlink("loop", p.path("root/lib/a.so")).unwrap();
    fails(&p, "/lib/a.so` is in a symlink loop");

    let p = setup("1m");
    p.write("root/lib/big.so", &"x".repeat(2 << 20));
    fails(
        &p,
        "gevulot.yaml:9:13: the root filesystem: the requested size 1.0 MiB is smaller than the contents",
    );

    let p = setup("64m");
    let bad = std::ffi::OsStr::from_bytes(b"bad\xffname");
    fs::write(p.path("root/lib").join(bad), "x").unwrap();
    fails(&p, "not UTF-8");

    let p = setup("64m");
    p.write(
        "prover.json",
        "{\"Program\": \"prover\", \"Dirs\": [\"lib\"], \"ManifestPassthrough\": {\"children\": \"x\"}}",
    );
    fails(&p, "ManifestPassthrough sets `children`");

    let p = setup("64m");
    p.write("prover.json", r#"{"Program": "prover", "Args": ["--x", ""]}"#);
    fails(&p, "argument 1 in the manifest's Args is empty");

    let p = setup("64m");
    p.write("prover.json", r#"{"Program": "prover", "Env": {"EMPTY": ""}}"#);
    fails(&p, "`EMPTY` in the manifest's Env, or its value, is empty");

    let p = setup("64m");
    fs::create_dir_all(p.path("elsewhere/x")).unwrap();
    p.write("elsewhere/x/lib.so", "outside");
    std::os::unix::fs::symlink("../elsewhere", p.path("root/out")).unwrap();
    p.write("prover.json", r#"{"Program": "prover", "Dirs": ["out/x"]}"#);
    fails(&p, "goes through the symlink `out`");

    let p = setup("64m");
    p.write("prover.json", r#"{"Program": "prover", "BaseVolumeSz": "lots"}"#);
    fails(&p, "BaseVolumeSz `lots` is not a size");

    let p = setup("64m");
    p.write("prover.json", r#"{"Program": "prover", "Klibs": ["ntp"], "KlibDir": "../../.."}"#);
    fails(&p, "KlibDir `../../..` is outside the project");
}

use std::os::unix::ffi::OsStrExt;

#[test]
fn config_errors_point_into_the_yaml() {
    let p = Project::new().file(
        "gevulot.yaml",
        "targets:\n  image:\n    image:\n      builder: native\n      program: root/prover\n      manifest: m.json\n      root: root\n      into: i.img\n",
    );
    p.gvbuild(&[]).exit(2).stderr_has("needs `release`");
    p.write(
        "gevulot.yaml",
        "targets:\n  image:\n    image:\n      builder: native\n      release: nanos\n      program: root/prover\n      size: huge\n      ops_extras: [certs]\n      manifest: m.json\n      root: root\n      into: i.img\n",
    );
    p.gvbuild(&[])
        .exit(2)
        .stderr_has("`program` of image `image` applies only to `builder: ops`")
        .stderr_has("`size` of image `image` is not a size")
        .stderr_has("unknown ops extra `certs`")
        .stderr_has("`size` of image `image` is not a size up to 2 TiB")
        .stderr_has("gevulot.yaml:");
}

/// The YAML positions kept for error messages are not part of the key: moving the image's
/// lines (a comment added above) leaves the image fresh.
#[test]
fn moving_the_image_in_the_yaml_does_not_rebuild_it() {
    let p = Project::new().file("gevulot.yaml", &native_image_yaml(""));
    write_nanos_release(&p, "nanos");
    p.executable("root/prover", "prover");
    p.write("prover.json", "{\"Program\": \"prover\"}");
    assert_eq!(p.build(&[]).ran(), names(&["image"]));
    p.write("gevulot.yaml", &format!("# a comment\n\n{}", native_image_yaml("")));
    assert_eq!(p.build(&[]).fresh(), names(&["image"]));
}

/// A crafted image whose names would make `--extract` write through a symlink it made (a name
/// holding '/', under a symlink of the same prefix) is refused; nothing lands outside.
#[test]
fn extract_never_writes_outside_its_folder() {
    let p = Project::new().file("gevulot.yaml", &native_image_yaml(""));
    write_nanos_release(&p, "nanos");
    p.executable("root/prover", "prover");
    let victim = tempfile::tempdir().unwrap();
    fs::create_dir_all(p.path("root/d")).unwrap();
    std::os::unix::fs::symlink(victim.path(), p.path("root/d/evil")).unwrap();
    p.write("root/d/evilXpayload", "planted");
    p.write("prover.json", "{\"Program\": \"prover\", \"Dirs\": [\"d\"]}");
    p.build(&[]);
    let mut img = fs::read(p.path("prover.img")).unwrap();
    let at = img.windows(12).position(|w| w == b"evilXpayload").expect("the name is in the log");
    img[at + 4] = b'/';
    fs::write(p.path("evil.img"), &img).unwrap();
    p.gvbuild(&["inspect", "evil.img", "--extract", "out"])
        .failure()
        .stderr_has("cannot be extracted safely");
    assert!(!victim.path().join("payload").exists());
}

/// What goes into the image beyond file contents is in the key: an empty folder, a symlink's
/// text, a klib changed in the klib folder, a mount's options.
#[test]
fn the_image_key_holds_everything_the_image_holds() {
    let p = Project::new().file("gevulot.yaml", &native_image_yaml(""));
    write_nanos_release(&p, "nanos");
    p.executable("root/prover", "prover");
    p.write("root/lib/a.so", "same bytes");
    p.write("root/lib/b.so", "same bytes");
    p.write("assets/ntp", "the project's own ntp klib");
    std::os::unix::fs::symlink("a.so", p.path("root/lib/link.so")).unwrap();
    p.write(
        "prover.json",
        r#"{"Program": "prover", "Dirs": ["lib"], "Klibs": ["ntp"], "KlibDir": "../assets", "Mounts": {"%1": "/data:ro"}}"#,
    );
    assert_eq!(p.build(&[]).ran(), names(&["image"]));
    let rows = tree_rows(filesystem(&inspect(&p, "prover.img"), "root"));
    assert_eq!(rows["/data"].0, "dir", "the mount point is the part before the options");
    let image = || fs::read(p.path("prover.img")).unwrap();
    let mut last = image();
    let mut changed = |what: &str| {
        let b = p.build(&[]);
        assert_eq!(b.ran(), names(&["image"]), "{what} rebuilds the image");
        let now = image();
        assert!(now != last, "{what} changes the image");
        last = now;
    };
    fs::create_dir_all(p.path("root/lib/empty")).unwrap();
    changed("a new empty folder");
    fs::remove_file(p.path("root/lib/link.so")).unwrap();
    std::os::unix::fs::symlink("b.so", p.path("root/lib/link.so")).unwrap();
    changed("a symlink pointed at a file with the same bytes");
    p.write("assets/ntp", "the project's newer ntp klib");
    changed("a klib changed in the klib folder");
    assert_eq!(tree_rows(filesystem(&inspect(&p, "prover.img"), "boot"))["/klib/ntp"].1, "28");
    // A .git folder in the stage root is in neither the key nor the image.
    p.write("root/lib/.git/HEAD", "ref");
    assert!(p.build(&[]).ran().is_empty());
}

/// A symlinked kernel or klib (common for assets) goes into the boot filesystem as the file
/// it points to: stage2 loads `/kernel` by name and cannot follow a link.
#[test]
fn symlinked_kernel_and_klibs_are_stored_as_files() {
    let p = Project::new().file("gevulot.yaml", &native_image_yaml(""));
    write_nanos_release(&p, "nanos");
    fs::rename(p.path("nanos/kernel.img"), p.path("nanos/kernel-0.1.51.img")).unwrap();
    std::os::unix::fs::symlink("kernel-0.1.51.img", p.path("nanos/kernel.img")).unwrap();
    fs::rename(p.path("nanos/klibs/ntp"), p.path("nanos/klibs/ntp.real")).unwrap();
    std::os::unix::fs::symlink("ntp.real", p.path("nanos/klibs/ntp")).unwrap();
    p.executable("root/prover", "prover");
    p.write("prover.json", r#"{"Program": "prover", "Klibs": ["ntp"]}"#);
    p.build(&[]);
    let boot = tree_rows(filesystem(&inspect(&p, "prover.img"), "boot"));
    assert_eq!(boot["/kernel"], ("file".to_string(), "300008".to_string(), false));
    assert_eq!(boot["/klib/ntp"].0, "file");
}

/// A native image project: the stand-in release, an executable `root/prover`, and `manifest`
/// as prover.json (beside gevulot.yaml, so MapDirs resolves from the project folder).
fn keyed(manifest: &str) -> Project {
    let p = Project::new().file("gevulot.yaml", &native_image_yaml(""));
    write_nanos_release(&p, "nanos");
    p.executable("root/prover", "prover");
    p.write("prover.json", manifest);
    p
}

fn root_of(p: &Project) -> serde_json::Value {
    filesystem(&inspect(p, "prover.img"), "root").clone()
}

fn refused(p: &Project, want: &str) {
    let (run, _) = p.build_any(&[]);
    assert_eq!(run.code(), 1, "{}", run.stderr());
    assert!(run.stderr().contains(want), "want {want:?} in: {}", run.stderr());
    assert!(!p.exists("prover.img"));
}

// Regression: Args was the whole argv, so the same manifest gave another program than ops's,
// which puts the Program (as written) in front of Args on every build.
#[test]
fn key_args_argv_is_the_program_then_args_as_ops_builds_it() {
    let p = keyed(r#"{"Program": "./prover", "Args": ["--fast", "x"]}"#);
    p.build(&[]);
    let root = root_of(&p);
    assert_eq!(root["root_tuple"]["program"], json!("/prover"));
    assert_eq!(root["root_tuple"]["arguments"], json!(["./prover", "--fast", "x"]));
    // ops copies the entry the first argument names in its working directory (the stage root).
    p.write("root/input.txt", "task");
    p.write("prover.json", r#"{"Program": "prover", "Args": ["input.txt"]}"#);
    p.build(&[]);
    let rows = tree_rows(&root_of(&p));
    assert_eq!(rows["/input.txt"].1, "4", "{rows:?}");
}

// Regression: a symlinked Program or Files entry stayed a symlink; ops stores the content.
#[test]
fn key_program_and_files_hold_content_and_absolute_program_is_refused() {
    let p = keyed(r#"{"Program": "bin/prover", "Files": ["/etc/conf"]}"#);
    p.write("root/real/prover", "the program");
    fs::create_dir_all(p.path("root/bin")).unwrap();
    std::os::unix::fs::symlink("../real/prover", p.path("root/bin/prover")).unwrap();
    p.write("root/etc/conf.real", "conf");
    std::os::unix::fs::symlink("conf.real", p.path("root/etc/conf")).unwrap();
    p.build(&[]);
    let rows = tree_rows(&root_of(&p));
    assert_eq!(rows["/bin/prover"].0, "file", "{rows:?}");
    assert_eq!(rows["/etc/conf"], ("file".to_string(), "4".to_string(), false));

    p.write("prover.json", r#"{"Program": "/prover"}"#);
    refused(&p, "ops reads an absolute Program from the build machine's own `/`");
}

// Regression: Dirs entries with `.`/`..` or an absolute path were read from the stage root,
// where ops puts them elsewhere or reads the build machine's own files.
#[test]
fn key_dirs_walks_the_stage_root_and_refuses_what_ops_reads_elsewhere() {
    let p = keyed(r#"{"Program": "prover", "Dirs": ["lib"]}"#);
    p.write("root/lib/a.so", "a");
    std::os::unix::fs::symlink("a.so", p.path("root/lib/b.so")).unwrap();
    std::os::unix::fs::symlink("/lib/x86_64-linux-gnu/nowhere.so", p.path("root/lib/abs.so")).unwrap();
    p.build(&[]);
    let rows = tree_rows(&root_of(&p));
    assert_eq!(rows["/lib/b.so"], ("symlink".to_string(), "a.so".to_string(), false));
    assert_eq!(rows["/lib/abs.so"].0, "symlink", "an absolute link names a path of the image");

    std::os::unix::fs::symlink("gone.so", p.path("root/lib/gone.so.1")).unwrap();
    refused(&p, "lib/gone.so.1 leads nowhere; ops would leave it out");
    fs::remove_file(p.path("root/lib/gone.so.1")).unwrap();
    p.write("prover.json", r#"{"Program": "prover", "Dirs": ["/lib"]}"#);
    refused(&p, "Dirs entry `/lib` is absolute: ops would copy `/lib` from the build machine");
    p.write("prover.json", r#"{"Program": "prover", "Dirs": ["./lib"]}"#);
    refused(&p, "has a `.` component: ops would put it in the image under a folder named `.`");
}

// Regression: MapDirs copied the named folder whole, from the stage root; ops matches the last
// component as a pattern at every depth and resolves against the manifest's folder.
#[test]
fn key_map_dirs_matches_its_pattern_from_the_manifest_s_folder() {
    let p = keyed(r#"{"Program": "prover", "MapDirs": {"root/data/*.bin": "/guest"}}"#);
    p.write("root/data/a.bin", "a");
    p.write("root/data/notes.txt", "left out");
    p.write("root/data/sub/b.bin", "b");
    p.build(&[]);
    let rows = tree_rows(&root_of(&p));
    assert!(rows.contains_key("/guest/a.bin") && rows.contains_key("/guest/sub/b.bin"), "{rows:?}");
    assert!(!rows.contains_key("/guest/notes.txt"), "{rows:?}");

    // Written from the stage root, it leaves it: ops reads MapDirs from the manifest's folder.
    p.write("prover.json", r#"{"Program": "prover", "MapDirs": {"data/*": "/guest"}}"#);
    refused(&p, "outside the stage root root; gvbuild reads the image only from the stage root: write it as `root/data/*`");
    p.write("prover.json", r#"{"Program": "prover", "MapDirs": {"root/data/*": "/prover"}}"#);
    refused(&p, "can't have directory with same name as binary");
}

// Regression (issue 19): Mounts were written as they are (`%1` stayed `%1`), so an image built
// from the Gevulot guide's manifest never saw the node's workspace, which QEMU attaches as 9p
// mount tag 0. `ops build` renumbers every share from `%0` in the sorted order of its host path
// (provider/onprem/onprem_volume.go, AddVirtfsShares).
#[test]
fn key_mounts_are_renumbered_from_zero_as_ops_build_renumbers_them() {
    let p = keyed(r#"{"Program": "prover", "Mounts": {"%1": "/workspace"}}"#);
    p.build(&[]);
    let root = root_of(&p);
    assert_eq!(root["root_tuple"]["mounts"], json!({ "%0": "/workspace" }));
    p.gvbuild(&["inspect", "prover.img"])
        .success()
        .stdout_has("  mount /workspace <- %0: 9p attach id 0 (QEMU mount_tag=0)\n");

    // Sorted as strings of the host paths (`%10` before `%2`), options kept with the mount point.
    p.write(
        "prover.json",
        r#"{"Program": "prover", "Mounts": {"%2": "/workspace", "%10": "/data:ro", "%3": "/scratch"}}"#,
    );
    p.build(&[]);
    let root = root_of(&p);
    assert_eq!(
        root["root_tuple"]["mounts"],
        json!({ "%0": "/data:ro", "%1": "/workspace", "%2": "/scratch" })
    );
    let rows = tree_rows(&root);
    assert_eq!(rows["/workspace"].0, "dir");
    assert_eq!(rows["/data"].0, "dir");
    let d = inspect(&p, "prover.img");
    assert!(
        d["warnings"][0].as_str().unwrap().contains(
            "the Gevulot node attaches the workspace as 9p mount tag 0: this image will not see it"
        ),
        "{d}"
    );

    // What would depend on the build machine is refused.
    p.write("prover.json", r#"{"Program": "prover", "Mounts": {"%1": "/workspace", "/srv/data": "/data"}}"#);
    refused(&p, "mixes absolute and relative keys");
    p.write("prover.json", r#"{"Program": "prover", "Mounts": {"../../%1": "/workspace"}}"#);
    refused(&p, "climbs out of the project");
}

// Regression: with KlibDir set, a klib missing there was taken from the release; ops looks
// only in KlibDir (and would leave the klib out).
#[test]
fn key_klib_dir_is_the_only_place_klibs_come_from_when_set() {
    let p = keyed(r#"{"Program": "prover", "Klibs": ["ntp"], "KlibDir": "../assets"}"#);
    fs::create_dir_all(p.path("assets")).unwrap();
    refused(&p, "klib `ntp` is not in");
    let p = keyed(r#"{"Program": "prover", "Klibs": ["ntp"], "ManifestPassthrough": {"firewall": "x"}}"#);
    refused(&p, "for which ops adds the `firewall` klib");
}

// Regression: an Env with RADAR_KEY made an image ops would give two more klibs.
#[test]
fn key_env_is_the_environment_and_radar_key_is_refused() {
    let p = keyed(r#"{"Program": "prover", "Env": {"A": "1"}}"#);
    p.build(&[]);
    assert_eq!(root_of(&p)["root_tuple"]["environment"], json!({ "A": "1" }));
    p.write("prover.json", r#"{"Program": "prover", "Env": {"RADAR_KEY": "k"}}"#);
    refused(&p, "ops would then add the `tls` and `radar` klibs");
}

// Regression: a non-string ManifestPassthrough value was refused with serde's words only.
#[test]
fn key_manifest_passthrough_takes_strings_and_says_what_ops_does_with_others() {
    let p = keyed(r#"{"Program": "prover", "ManifestPassthrough": {"exec_protection": "t"}}"#);
    p.build(&[]);
    assert_eq!(root_of(&p)["root_tuple"]["exec_protection"], json!("t"));
    p.write("prover.json", r#"{"Program": "prover", "ManifestPassthrough": {"en1": {"ipaddr": "x"}}}"#);
    refused(&p, "ManifestPassthrough `en1` is an object, which ops writes as a nested tuple");
    p.write("prover.json", r#"{"Program": "prover", "ManifestPassthrough": {"program": "/x"}}"#);
    refused(&p, "ops would replace what it built with it");
}

// Regression: BaseVolumeSz set the root filesystem's size; ops grows the whole image to it.
#[test]
fn key_base_volume_sz_is_the_whole_image_s_size() {
    let p = keyed(r#"{"Program": "prover", "BaseVolumeSz": "64m"}"#);
    p.build(&[]);
    assert_eq!(fs::metadata(p.path("prover.img")).unwrap().len(), 64 << 20);
    p.write("prover.json", r#"{"Program": "prover", "BaseVolumeSz": "64MB"}"#);
    refused(&p, "BaseVolumeSz `64MB` is not a size up to 2 TiB as ops reads it");
}

// Regression (walks): a FIFO named by the manifest hung or was mis-stored; it is refused by name.
#[test]
fn a_fifo_in_the_stage_root_is_refused_by_name_without_hanging() {
    let p = keyed(r#"{"Program": "prover", "Dirs": ["lib"]}"#);
    p.write("root/lib/a.so", "a");
    let outside = tempfile::tempdir().unwrap();
    let fifo = outside.path().join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    std::os::unix::fs::symlink(&fifo, p.path("root/prover.fifo")).unwrap();
    p.write("prover.json", r#"{"Program": "prover", "Files": ["prover.fifo"]}"#);
    // The key's walk of the root meets it first: `input `root/prover.fifo` is a FIFO`.
    refused(&p, "prover.fifo` is a FIFO");
}
