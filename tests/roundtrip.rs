//! Property test: any folder a step produces comes back identical from the cache.
//!
//! Random trees (seeded, so a failure is repeatable): nested and empty folders, relative
//! symlinks, executable bits, 0-byte, small and >1 MiB files. A step copies the tree into its
//! output folder; a clone of the project with the same cache must restore exactly that tree.
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::*;

fn random_tree(rng: &mut Rng, dir: &Path, depth: u32, budget: &mut u32) {
    fs::create_dir_all(dir).unwrap();
    let entries = rng.below(6);
    for i in 0..entries {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        let name = format!("e{i}-{}", rng.below(1000));
        let path = dir.join(&name);
        match rng.below(10) {
            0..=1 if depth < 4 => random_tree(rng, &path, depth + 1, budget),
            2 => fs::create_dir_all(&path).unwrap(),
            3 => std::os::unix::fs::symlink(format!("../{name}-target"), &path).unwrap(),
            _ => {
                let size = match rng.below(8) {
                    0 => 0,
                    1 => (1 << 20) + 1 + rng.below(4096) as usize,
                    _ => rng.below(5000) as usize,
                };
                let bytes: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
                fs::write(&path, bytes).unwrap();
                let mode = if rng.below(3) == 0 { 0o755 } else { 0o644 };
                fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            }
        }
    }
}

/// Every entry under `root` as (relative path, kind, content or link target, exec bit).
fn describe(root: &Path) -> Vec<(String, &'static str, Vec<u8>, bool)> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name().min_depth(1) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let ft = e.file_type();
        if ft.is_symlink() {
            out.push((
                rel,
                "link",
                fs::read_link(e.path()).unwrap().display().to_string().into_bytes(),
                false,
            ));
        } else if ft.is_dir() {
            out.push((rel, "dir", Vec::new(), false));
        } else {
            let exec = e.metadata().unwrap().permissions().mode() & 0o111 != 0;
            out.push((rel, "file", fs::read(e.path()).unwrap(), exec));
        }
    }
    out
}

#[test]
fn random_output_trees_round_trip_through_the_cache() {
    for seed in 1..=8u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let p = Project::new().file(
            "gevulot.yaml",
            "targets:\n  copy:\n    inputs: [tree]\n    outputs: [out]\n    run: cp -a tree out\n",
        );
        let mut budget = 40;
        random_tree(&mut rng, &p.path("tree"), 0, &mut budget);
        assert_eq!(p.build(&[]).ran(), names(&["copy"]), "seed {seed}");
        let want = describe(&p.path("out"));
        assert_eq!(want, describe(&p.path("tree")), "seed {seed}: cp -a itself");

        let c = p.clone_to_new_folder();
        fs::remove_dir_all(c.path("out")).unwrap();
        assert_eq!(c.build(&[]).restored(), names(&["copy"]), "seed {seed}");
        assert_eq!(describe(&c.path("out")), want, "seed {seed}: restored tree differs");
        // And the restored tree is fresh afterwards.
        assert_eq!(c.build(&[]).fresh(), names(&["copy"]), "seed {seed}");
    }
}
