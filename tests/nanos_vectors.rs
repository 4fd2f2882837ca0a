//! `gvbuild inspect` reads root filesystems made by Nanos's own mkfs (0.1.51): the header, the
//! tree with each node's kind, every file's bytes against the input tarball, and the root tuple's
//! keys with their exact values, as each vector's README (tests/data/nanos-vectors) lists them.
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::support::*;

fn vector(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/nanos-vectors").join(name)
}

/// Inspect a vector from a project folder (the harness runs gvbuild there).
fn inspect_vector(name: &str) -> serde_json::Value {
    let p = Project::new();
    let img = vector(name).join("root.img");
    inspect(&p, img.to_str().unwrap())
}

/// The regular files of a vector's tree.tar: path -> (bytes, executable).
fn tar_files(name: &str) -> BTreeMap<String, (Vec<u8>, bool)> {
    let mut out = BTreeMap::new();
    let mut ar = tar::Archive::new(fs::File::open(vector(name).join("tree.tar")).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_file() {
            let path = e.path().unwrap().to_string_lossy().trim_start_matches("./").to_string();
            let exec = e.header().mode().unwrap() & 0o111 != 0;
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.insert(path, (data, exec));
        }
    }
    out
}

/// Extract the vector and compare every regular file with tree.tar, byte for byte.
fn extracted_files_match_the_tar(name: &str) {
    let p = Project::new();
    let img = vector(name).join("root.img");
    p.gvbuild(&["inspect", img.to_str().unwrap(), "--extract", "out"]).success();
    let want = tar_files(name);
    let mut got = BTreeMap::new();
    for e in walkdir::WalkDir::new(p.path("out")) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let rel = e.path().strip_prefix(p.path("out")).unwrap().to_string_lossy().into_owned();
            got.insert(rel, fs::read(e.path()).unwrap());
        }
    }
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{name}: the same files");
    for (path, (data, _)) in &want {
        assert!(got[path] == *data, "{name}: {path} differs from tree.tar");
    }
}

fn header(d: &serde_json::Value) -> (u64, String, String) {
    let f = &d["filesystems"][0];
    (
        f["tfs_version"].as_u64().unwrap(),
        f["uuid"].as_str().unwrap().into(),
        f["label"].as_str().unwrap().into(),
    )
}

#[test]
fn vector_a_single_file() {
    let d = inspect_vector("a-single-file");
    assert!(d["partitions"].as_array().unwrap().is_empty(), "a bare TFS volume");
    assert_eq!(header(&d), (5, "96e914b7-67b3-8677-d13d-7d68eb89d097".into(), "".into()));
    let root = filesystem(&d, "root");
    assert_eq!(
        root["root_tuple"],
        json!({
            "program": "/hello",
            "arguments": ["hello", "two words", "--flag=1"],
            "environment": { "GREETING": "hello world", "PWD": "/", "USER": "nanos" },
        })
    );
    let rows = tree_rows(root);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows["/hello"], ("file".into(), "35".into(), false));
    extracted_files_match_the_tar("a-single-file");
    let p = Project::new();
    p.gvbuild(&["inspect", vector("a-single-file").join("root.img").to_str().unwrap(), "--extract", "x"])
        .success();
    assert_eq!(p.read("x/hello"), "hello from a nanos test vector (a)\n");
}

#[test]
fn vector_b_tree_kinds() {
    let d = inspect_vector("b-tree-kinds");
    assert_eq!(header(&d), (5, "7677db58-1a30-cc35-d1b0-0219740f8a36".into(), "".into()));
    let root = filesystem(&d, "root");
    assert_eq!(root["root_tuple"], json!({ "program": "/bin/tool" }));
    let want: BTreeMap<String, (String, String, bool)> = [
        ("/abs-link", ("symlink", "/etc/config.txt", false)),
        ("/bin", ("dir", "", false)),
        ("/bin/tool", ("file", "39", true)),
        ("/data", ("dir", "", false)),
        ("/data/big.bin", ("file", "1048577", false)),
        ("/data/zero.bin", ("file", "0", false)),
        ("/empty-dir", ("dir", "", false)),
        ("/etc", ("dir", "", false)),
        ("/etc/config.txt", ("file", "23", false)),
        ("/etc/nested", ("dir", "", false)),
        ("/etc/nested/deeper", ("dir", "", false)),
        ("/etc/nested/deeper/leaf.txt", ("file", "33", false)),
        ("/link-to-config", ("symlink", "etc/config.txt", false)),
    ]
    .into_iter()
    .map(|(p, (k, d, x))| (p.to_string(), (k.to_string(), d.to_string(), x)))
    .collect();
    assert_eq!(tree_rows(root), want);
    extracted_files_match_the_tar("b-tree-kinds");

    // big.bin is byte i = (7i + 3) mod 251 and must be cut at its length, not its last sector;
    // the extracted tree keeps the exec attribute as a mode, the symlinks as symlinks.
    let p = Project::new();
    p.gvbuild(&["inspect", vector("b-tree-kinds").join("root.img").to_str().unwrap(), "--extract", "x"])
        .success();
    let big = fs::read(p.path("x/data/big.bin")).unwrap();
    assert_eq!(big.len(), 1_048_577);
    assert!(big.iter().enumerate().all(|(i, &b)| b as usize == (7 * i + 3) % 251));
    assert_eq!(fs::metadata(p.path("x/bin/tool")).unwrap().permissions().mode() & 0o777, 0o755);
    assert_eq!(fs::metadata(p.path("x/etc/config.txt")).unwrap().permissions().mode() & 0o777, 0o644);
    assert_eq!(fs::read_link(p.path("x/link-to-config")).unwrap(), Path::new("etc/config.txt"));
    assert_eq!(fs::read_link(p.path("x/abs-link")).unwrap(), Path::new("/etc/config.txt"));
    assert!(p.path("x/empty-dir").is_dir());
    assert_eq!(fs::read(p.path("x/data/zero.bin")).unwrap().len(), 0);
}

#[test]
fn vector_c_manifest_keys() {
    let d = inspect_vector("c-manifest-keys");
    assert_eq!(header(&d), (5, "9a9a698e-a790-c514-f1dc-771b251e9061".into(), "gvtest".into()));
    let root = filesystem(&d, "root");
    assert_eq!(
        root["root_tuple"],
        json!({
            "program": "/prover",
            "arguments": ["prover", "--input", "/workspace/in.txt", "--output", "/workspace/out.txt"],
            "environment": { "RUST_BACKTRACE": "1", "RUST_LOG": "trace" },
            "mounts": { "%1": "/workspace" },
            "klibs": "bootfs",
            "reboot_on_exit": "t",
            "readonly_rootfs": "true",
        })
    );
    let rows = tree_rows(root);
    assert_eq!(rows["/prover"], ("file".into(), "31".into(), false));
    assert_eq!(rows["/workspace"], ("dir".into(), "".into(), false));
    assert_eq!(rows.len(), 2);
    extracted_files_match_the_tar("c-manifest-keys");
    // The text view shows the same, for a person.
    let p = Project::new();
    p.gvbuild(&["inspect", vector("c-manifest-keys").join("root.img").to_str().unwrap()])
        .success()
        .stdout_has("TFS version 5, UUID 9a9a698e-a790-c514-f1dc-771b251e9061, label \"gvtest\"")
        .stdout_has("  mounts: %1:/workspace\n")
        .stdout_has("  /workspace/\n");
}

/// Damaged images are errors naming the cause, never a panic or a read past the image.
#[test]
fn damaged_images_are_clear_errors() {
    let p = Project::new();
    let good = fs::read(vector("b-tree-kinds").join("root.img")).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.img", Vec::new(), "smaller than one sector"),
        ("zeros.img", vec![0u8; 4096], "neither a TFS volume"),
        (
            "v4.img",
            {
                let mut b = good.clone();
                b[6] = 4;
                b
            },
            "TFS version 4",
        ),
        // The link to the log extension points past the end of the image.
        (
            "link.img",
            {
                let mut b = good.clone();
                b[0x1b] = 0xff;
                b[0x1c] = 0x7f;
                b
            },
            "outside the volume",
        ),
        // The first record's length runs past its extension.
        (
            "record.img",
            {
                let mut b = good.clone();
                b[0x20a] = 0xff;
                b[0x20b] = 0x7f;
                b
            },
            "log",
        ),
        ("truncated.img", good[..1024].to_vec(), "outside the volume"),
    ];
    for (name, bytes, want) in cases {
        fs::write(p.path(name), bytes).unwrap();
        let run = p.gvbuild(&["inspect", name]).failure();
        assert!(run.stderr().contains(want), "{name}: {}", run.stderr());
        assert!(run.stderr().contains(name), "{name}: names the image: {}", run.stderr());
    }
}
