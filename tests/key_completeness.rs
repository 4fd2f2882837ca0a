//! Key completeness, end to end: every component of a step, changed one at a time on disk, in
//! gevulot.yaml or in the environment, changes the key the real binary reports (`--json`), and
//! nothing outside the documented list (mtimes, location, cache folder, target name) does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use sha2::Digest as _;

use crate::support::*;

/// Build `target` with `args` and extra environment; its reported key.
fn key(p: &Project, target: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut all = vec!["--json", target];
    all.extend_from_slice(args);
    let mut c = p.command(&all);
    c.env_remove("P");
    for (k, v) in env {
        c.env(k, v);
    }
    let run =
        Run { output: c.output().unwrap(), args: all.iter().map(|s| s.to_string()).collect() }.success();
    Build::parse(&run).key(target).unwrap_or_else(|| panic!("no key for {target}: {}", run.stdout()))
}

/// Each `(what, from, to)` edit of the YAML changes the key of `target`; the base YAML gives the
/// base key again afterwards.
fn each_edit_changes(p: &Project, base_yaml: &str, target: &str, edits: &[(&str, &str, &str)]) {
    p.write("gevulot.yaml", base_yaml);
    let base = key(p, target, &[], &[]);
    for (what, from, to) in edits {
        assert!(base_yaml.contains(from), "{what}: {from:?} is not in the YAML");
        p.write("gevulot.yaml", &base_yaml.replacen(from, to, 1));
        assert_ne!(key(p, target, &[], &[]), base, "changing {what} must change the key of {target}");
    }
    p.write("gevulot.yaml", base_yaml);
    assert_eq!(key(p, target, &[], &[]), base, "the base YAML gives the base key again");
}

fn run_project() -> Project {
    let p = Project::new()
        .file("d.txt", "dep\n")
        .file("in/a", "a\n")
        .file("h.h", "header\n")
        .file("tools/mytool", "#!/bin/sh\necho mytool 1.0\n");
    fs::set_permissions(p.path("tools/mytool"), fs::Permissions::from_mode(0o755)).unwrap();
    p.write("gevulot.yaml", RUN_YAML);
    p
}

const RUN_YAML: &str = r#"vars:
  flag: "-a"
  envval: "1"
targets:
  dep:
    inputs: [d.txt]
    outputs: [out/d]
    run: cp d.txt out/d
  t:
    deps: [dep]
    inputs: [in/]
    outputs: [out/t]
    run: "ls ${flag} in > /dev/null; cat in/* out/d h.h > out/t && echo 'out/t: h.h' | tee out/t2.d > out/t.d && touch out/u"
    depfile: out/t.d
    env: { E: "${envval}" }
    pass_env: [P]
    tools: [tools/mytool]
    # Unsandboxed: it writes out/u and out/t2.d, which only the edits below declare.
    sandbox: false
"#;

/// Every component of a `run:` step's key, changed on disk, in the YAML or in the environment.
#[test]
fn every_run_step_component_changes_the_key() {
    let p = run_project();
    let base = key(&p, "t", &[], &[]);
    let check = |what: &str, change: &dyn Fn(), revert: &dyn Fn(), args: &[&str], env: &[(&str, &str)]| {
        change();
        assert_ne!(key(&p, "t", args, env), base, "changing {what} must change the key");
        revert();
        assert_eq!(key(&p, "t", &[], &[]), base, "reverting {what} gives the base key");
    };
    let write = |rel: &'static str, s: &'static str| {
        let p = &p;
        move || p.write(rel, s)
    };
    let chmod = |mode: u32| {
        let p = &p;
        move || fs::set_permissions(p.path("in/a"), fs::Permissions::from_mode(mode)).unwrap()
    };
    let none = || {};
    check("an input's bytes", &write("in/a", "A\n"), &write("in/a", "a\n"), &[], &[]);
    check("an input's exec bit", &chmod(0o755), &chmod(0o644), &[], &[]);
    check(
        "a file added to an input folder",
        &write("in/b", "b\n"),
        &|| fs::remove_file(p.path("in/b")).unwrap(),
        &[],
        &[],
    );
    check("the command", &none, &none, &["--set", "flag=-l"], &[]);
    check("an env value", &none, &none, &["--set", "envval=2"], &[]);
    check("a pass_env value", &none, &none, &[], &[("P", "x")]);
    check("a pass_env value set but empty", &none, &none, &[], &[("P", "")]);
    check(
        "the tool",
        &write("tools/mytool", "#!/bin/sh\necho mytool 1.1\n"),
        &write("tools/mytool", "#!/bin/sh\necho mytool 1.0\n"),
        &[],
        &[],
    );
    check("a dependency's outputs", &write("d.txt", "dep2\n"), &write("d.txt", "dep\n"), &[], &[]);
    check("a discovered file", &write("h.h", "header 2\n"), &write("h.h", "header\n"), &[], &[]);

    each_edit_changes(
        &p,
        RUN_YAML,
        "t",
        &[
            ("the declared outputs", "outputs: [out/t]", "outputs: [out/t, out/u]"),
            ("the depfile", "depfile: out/t.d", "depfile: out/t2.d"),
            ("an env name", "env: { E:", "env: { E2:"),
            ("a pass_env name", "pass_env: [P]", "pass_env: [P, Q]"),
            ("a dependency", "deps: [dep]", "deps: []"),
        ],
    );
}

/// What is not in a key: mtimes, the project's location, the cache folder, the target's name.
#[test]
fn nothing_outside_the_documented_list_changes_the_key() {
    let p = run_project();
    let base = key(&p, "t", &[], &[]);
    let st = Command::new("touch")
        .args(["-d", "2001-01-01", "in/a", "h.h", "d.txt"])
        .current_dir(p.root())
        .status();
    assert!(st.unwrap().success());
    assert_eq!(key(&p, "t", &[], &[]), base, "mtimes are not keyed");

    let elsewhere = p.clone_to_new_folder();
    assert_eq!(key(&elsewhere, "t", &[], &[]), base, "the location is not keyed");

    let other_cache = Project::new();
    copy_tree(p.root(), other_cache.root());
    assert_eq!(key(&other_cache, "t", &[], &[]), base, "the cache folder is not keyed");

    p.write("gevulot.yaml", &RUN_YAML.replace("  t:\n", "  renamed:\n"));
    assert_eq!(key(&p, "renamed", &[], &[]), base, "the target's name is not keyed");
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Every field of a `fetch` step; its URL is not part of the key.
#[test]
fn every_fetch_field_changes_the_key() {
    let p = Project::new();
    fs::create_dir_all(p.path("srv/top")).unwrap();
    p.write("srv/top/a.txt", "a\n");
    p.write("srv/top/b.txt", "b\n");
    let st =
        Command::new("tar").args(["czf", "srv/one.tgz", "-C", "srv", "top"]).current_dir(p.root()).status();
    assert!(st.unwrap().success());
    fs::copy(p.path("srv/one.tgz"), p.path("srv/mirror.tgz")).unwrap();
    p.write("srv/top/b.txt", "b2\n");
    let st =
        Command::new("tar").args(["czf", "srv/two.tgz", "-C", "srv", "top"]).current_dir(p.root()).status();
    assert!(st.unwrap().success());
    let one = sha256_hex(&fs::read(p.path("srv/one.tgz")).unwrap());
    let two = sha256_hex(&fs::read(p.path("srv/two.tgz")).unwrap());
    let blake_one = blake3::hash(&fs::read(p.path("srv/one.tgz")).unwrap()).to_hex().to_string();
    let root = p.root().display().to_string();
    let yaml = format!(
        "targets:\n  assets:\n    fetch:\n      url: file://{root}/srv/one.tgz\n      sha256: {one}\n      extract: {{ strip_components: 0, max_size: 1G, max_entries: 1000 }}\n      into: build/assets\n"
    );
    each_edit_changes(
        &p,
        &yaml,
        "assets",
        &[
            ("the pin", &format!("one.tgz\n      sha256: {one}"), &format!("two.tgz\n      sha256: {two}")),
            ("the pin's algorithm", &format!("sha256: {one}"), &format!("blake3: {blake_one}")),
            ("strip_components", "strip_components: 0", "strip_components: 1"),
            ("max_size", "max_size: 1G", "max_size: 2G"),
            ("max_entries", "max_entries: 1000", "max_entries: 1001"),
            (
                "extract itself",
                "      extract: { strip_components: 0, max_size: 1G, max_entries: 1000 }\n",
                "",
            ),
            ("into", "into: build/assets", "into: build/assets2"),
        ],
    );
    // The key is the pin, not the URL: a mirror with the same bytes has the same key.
    p.write("gevulot.yaml", &yaml);
    let base = key(&p, "assets", &[], &[]);
    p.write("gevulot.yaml", &yaml.replace("srv/one.tgz", "srv/mirror.tgz"));
    assert_eq!(key(&p, "assets", &[], &[]), base, "the URL is not keyed");
}

/// Every field of a `stage` step, and what it copies.
#[test]
fn every_stage_field_changes_the_key() {
    let p = Project::new()
        .file("p.c", "int main(void) { return 0; }\n")
        .file("assets/libx.so.1", "x\n")
        .file("assets/fw/a.bin", "fw\n")
        .file("more/extra.txt", "extra\n");
    let yaml = y(r#"
        targets:
          prover:
            inputs: [p.c]
            outputs: [build/prover]
            run: cc -o build/prover p.c
          stage:
            deps: [prover]
            stage:
              into: build/root
              copy:
                - { from: "assets/lib*.so.*", to: lib/x86_64-linux-gnu/ }
                - { from: assets/fw, to: fw }
                - { from: build/prover, to: prover }
              libs_for: [build/prover]
              lib_dir: lib/x86_64-linux-gnu
              search: [assets]
        "#);
    each_edit_changes(
        &p,
        &yaml,
        "stage",
        &[
            ("a copy rule's from", "from: assets/fw,", "from: more,"),
            ("a copy rule's to", "to: fw }", "to: firmware }"),
            (
                "a copy rule added",
                "      libs_for:",
                "        - { from: more/extra.txt, to: extra.txt }\n      libs_for:",
            ),
            ("libs_for", "libs_for: [build/prover]", "libs_for: []"),
            ("lib_dir", "lib_dir: lib/x86_64-linux-gnu", "lib_dir: lib64"),
            ("search", "search: [assets]", "search: [assets, more]"),
            ("into", "into: build/root", "into: build/root2"),
        ],
    );
    p.write("gevulot.yaml", &yaml);
    let base = key(&p, "stage", &[], &[]);
    p.write("assets/fw/a.bin", "fw2\n");
    assert_ne!(key(&p, "stage", &[], &[]), base, "a copied file's bytes change the key");
}

/// Every field of a `manifest` step written from its fields.
#[test]
fn every_manifest_field_changes_the_key() {
    let p = Project::new();
    let yaml = y(r#"
        targets:
          stage:
            outputs: [build/root, build/root2, build/klibs, build/klibs2]
            run: >-
              mkdir -p build/root/lib build/root/nvidia build/klibs build/klibs2 &&
              printf '#!/bin/sh\n' > build/root/prover && chmod +x build/root/prover &&
              cp build/root/prover build/root/prover2 && cp -r build/root build/root2 &&
              touch build/klibs/gpu_nvidia build/klibs2/gpu_nvidia
          manifest:
            deps: [stage]
            manifest:
              program: prover
              args: [one]
              env: { RUST_LOG: debug }
              dirs: [lib]
              gpu: true
              cpus: 2
              memory: 2g
              workspace: { mount: "%1", path: /workspace }
              klib_dir: build/klibs
              root: build/root
              into: build/prover.json
        "#);
    each_edit_changes(
        &p,
        &yaml,
        "manifest",
        &[
            ("program", "program: prover", "program: prover2"),
            ("args", "args: [one]", "args: [two]"),
            ("an env value", "RUST_LOG: debug", "RUST_LOG: info"),
            ("dirs", "dirs: [lib]", "dirs: [lib, nvidia]"),
            ("gpu", "gpu: true", "gpu: false"),
            ("cpus", "cpus: 2", "cpus: 3"),
            ("memory", "memory: 2g", "memory: 3g"),
            ("the workspace path", "path: /workspace", "path: /ws"),
            ("klib_dir", "klib_dir: build/klibs", "klib_dir: build/klibs2"),
            ("root", "root: build/root\n", "root: build/root2\n"),
            ("into", "into: build/prover.json", "into: build/prover2.json"),
        ],
    );
}

/// Every field of a native `image` step, and what it reads.
#[test]
fn every_image_field_changes_the_key() {
    let p = Project::new();
    write_nanos_release(&p, "nanos");
    write_nanos_release(&p, "nanos2");
    let mut kernel = fs::read(p.path("nanos2/kernel.img")).unwrap();
    kernel.push(2);
    fs::write(p.path("nanos2/kernel.img"), kernel).unwrap();
    p.executable("root/prover", "prover");
    p.executable("root2/prover", "prover2");
    p.write("prover.json", "{\"Program\": \"prover\"}");
    p.write("prover2.json", "{\"Program\": \"prover\", \"Args\": [\"x\"]}");
    let yaml = native_image_yaml("      size: 64m\n");
    each_edit_changes(
        &p,
        &yaml,
        "image",
        &[
            ("the release", "release: nanos\n", "release: nanos2\n"),
            ("the manifest", "manifest: prover.json", "manifest: prover2.json"),
            ("the root", "root: root\n", "root: root2\n"),
            ("into", "into: prover.img", "into: prover2.img"),
            ("size", "size: 64m", "size: 65m"),
        ],
    );
    p.write("gevulot.yaml", &yaml);
    let base = key(&p, "image", &[], &[]);
    p.write("prover.json", "{\"Program\": \"prover\", \"Args\": [\"y\"]}");
    assert_ne!(key(&p, "image", &[], &[]), base, "the manifest's bytes change the key");
    p.write("prover.json", "{\"Program\": \"prover\"}");
    p.executable("root/prover", "prover, edited");
    assert_ne!(key(&p, "image", &[], &[]), base, "a root file's bytes change the key");
}
