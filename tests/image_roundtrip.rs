//! Round trips of the native image writer through the reader, on random trees: nested and
//! empty folders, symlinks (relative, absolute, dangling), executable bits, 0-byte files, files
//! around sector boundaries and over 1 MiB, and one tree of thousands of files. Each tree is
//! staged, built into an image by `gvbuild`, and read back by `gvbuild inspect --extract`;
//! the extracted tree must equal the staged one. The seed of a failing case is in the message.
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::*;

#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>, bool),
    Link(String),
}

fn file_size(rng: &mut Rng) -> usize {
    match rng.below(8) {
        0 => 0,
        1 => 511 + rng.below(3) as usize,
        2 => (1 << 20) + 1 + rng.below(70_000) as usize,
        _ => rng.below(3000) as usize,
    }
}

/// The path of `to` relative to the folder `from` (both project-relative).
fn relative(from: &str, to: &str) -> String {
    let from: Vec<&str> = from.split('/').collect();
    let to: Vec<&str> = to.split('/').collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<&str> = vec![".."; from.len() - common];
    parts.extend(&to[common..]);
    parts.join("/")
}

/// Fill `dir` (project-relative) with a random subtree; returns the files made, for links.
fn fill(p: &Project, rng: &mut Rng, dir: &str, depth: u32, files: &mut Vec<String>) {
    fs::create_dir_all(p.path(dir)).unwrap();
    for i in 0..rng.below(6) {
        let name = format!("{}{i}", ["f", "data.", "lib", "x y", "ü"][rng.below(5) as usize]);
        let path = format!("{dir}/{name}");
        match rng.below(10) {
            0..=5 => {
                let size = file_size(rng);
                let seed = rng.next();
                let data: Vec<u8> =
                    (0..size).map(|j| (seed.wrapping_add(j as u64 * 31) >> 3) as u8).collect();
                fs::write(p.path(&path), data).unwrap();
                let mode = if rng.below(3) == 0 { 0o755 } else { 0o644 };
                fs::set_permissions(p.path(&path), fs::Permissions::from_mode(mode)).unwrap();
                files.push(path);
            }
            6 | 7 if depth < 4 => fill(p, rng, &path, depth + 1, files),
            6 | 7 => fs::create_dir_all(p.path(&path)).unwrap(),
            _ => {
                let target = match (files.last(), rng.below(3)) {
                    (Some(f), 0) => format!("/{}", f.trim_start_matches("root/")),
                    (Some(f), 1) => relative(dir, f),
                    // A relative link to nothing is refused (ops would drop it); an absolute
                    // one names a path of the image and is kept.
                    _ => "/missing/target".to_string(),
                };
                std::os::unix::fs::symlink(target, p.path(&path)).unwrap();
            }
        }
    }
}

/// A folder's tree: relative path -> node.
fn read_tree(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let node = if e.file_type().is_symlink() {
            Node::Link(fs::read_link(e.path()).unwrap().to_string_lossy().into_owned())
        } else if e.file_type().is_dir() {
            Node::Dir
        } else {
            let exec = e.metadata().unwrap().permissions().mode() & 0o111 != 0;
            Node::File(fs::read(e.path()).unwrap(), exec)
        };
        out.insert(rel, node);
    }
    out
}

fn round_trip(seed: u64, many: usize) {
    let mut rng = Rng(seed);
    let p = Project::new().file("gevulot.yaml", &native_image_yaml(""));
    write_nanos_release(&p, "nanos");
    p.executable("root/prover", "the program");
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for i in 0..1 + rng.below(3) {
        let d = format!("d{i}");
        fill(&p, &mut rng, &format!("root/{d}"), 0, &mut files);
        dirs.push(d);
    }
    if many > 0 {
        for i in 0..many {
            p.write(&format!("root/many/file-{i:05}"), &format!("{i}"));
        }
        dirs.push("many".into());
    }
    let manifest = serde_json::json!({ "Program": "prover", "Dirs": dirs });
    p.write("prover.json", &manifest.to_string());

    let run = p.gvbuild(&[]);
    assert_eq!(run.code(), 0, "seed {seed}: {}", run.stderr());
    let run = p.gvbuild(&["inspect", "prover.img", "--extract", "out"]);
    assert_eq!(run.code(), 0, "seed {seed}: {}", run.stderr());
    let want = read_tree(&p.path("root"));
    let got = read_tree(&p.path("out"));
    let diff: std::collections::BTreeSet<&String> =
        want.keys().chain(got.keys()).filter(|k| want.get(*k) != got.get(*k)).collect();
    assert!(diff.is_empty(), "seed {seed}: these differ after the round trip: {diff:?}");
}

#[test]
fn random_trees_round_trip_through_the_image() {
    for seed in [1, 2, 3, 0x5eed, 0xdead_beef, 42] {
        round_trip(seed, 0);
    }
}

#[test]
fn thousands_of_files_round_trip_through_the_image() {
    round_trip(7, 5000);
}

/// A file over 32 MiB is stored in several extents (Nanos's largest is 32 MiB).
#[test]
fn a_file_in_several_extents_round_trips() {
    let p = Project::new().file("gevulot.yaml", &native_image_yaml(""));
    write_nanos_release(&p, "nanos");
    p.executable("root/prover", "the program");
    let big: Vec<u8> =
        (0..(40u32 << 20) + 777).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    fs::create_dir_all(p.path("root/lib")).unwrap();
    fs::write(p.path("root/lib/big.so"), &big).unwrap();
    p.write("prover.json", r#"{"Program": "prover", "Dirs": ["lib"]}"#);
    p.build(&[]);
    p.gvbuild(&["inspect", "prover.img", "--extract", "out"]).success();
    assert!(fs::read(p.path("out/lib/big.so")).unwrap() == big);
}

/// The images are read back by a second, independent reader too (`tests/tools/tfs_decode.py`,
/// written from Nanos's tlog.c and tuple.c and sharing nothing with gvbuild's reader), so that a
/// mistake made alike in gvbuild's writer and reader cannot pass unseen.
#[test]
fn an_independent_reader_sees_the_staged_tree() {
    use sha2::Digest;
    for seed in [11, 12, 13] {
        let mut rng = Rng(seed);
        let p = Project::new().file("gevulot.yaml", &native_image_yaml(""));
        write_nanos_release(&p, "nanos");
        p.executable("root/prover", "the program");
        let mut files = Vec::new();
        fill(&p, &mut rng, "root/d0", 0, &mut files);
        p.write("prover.json", r#"{"Program": "prover", "Args": ["-v"], "Dirs": ["d0"]}"#);
        p.build(&[]);
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/tfs_decode.py");
        let out =
            std::process::Command::new("python3").arg(script).arg(p.path("prover.img")).output().unwrap();
        assert!(out.status.success(), "seed {seed}: {}", String::from_utf8_lossy(&out.stderr));
        let volumes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let root =
            volumes.as_array().unwrap().iter().find(|v| v["root_tuple"]["program"] == "/prover").unwrap();
        assert_eq!(root["version"], 5);
        assert_eq!(root["root_tuple"]["arguments"], serde_json::json!(["prover", "-v"]));
        let seen: BTreeMap<String, String> = root["tree"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let what = match r["kind"].as_str().unwrap() {
                    "file" => format!("file {} {}", r["sha256"].as_str().unwrap(), r["exec"]),
                    "symlink" => format!("symlink {}", r["target"].as_str().unwrap()),
                    k => k.to_string(),
                };
                (r["path"].as_str().unwrap().to_string(), what)
            })
            .collect();
        let want: BTreeMap<String, String> = read_tree(&p.path("root"))
            .into_iter()
            .map(|(path, node)| {
                let what = match node {
                    Node::Dir => "dir".to_string(),
                    Node::File(data, exec) => {
                        format!("file {} {exec}", hex::encode(sha2::Sha256::digest(&data)))
                    }
                    Node::Link(t) => format!("symlink {t}"),
                };
                (format!("/{path}"), what)
            })
            .collect();
        assert_eq!(seen, want, "seed {seed}");
    }
}
