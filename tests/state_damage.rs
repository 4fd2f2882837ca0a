//! Damaged project state: a truncated or flipped `state.bin`, `stat.bin`, `graph.bin`,
//! `explain.bin` or journal reads as absent (everything is checked again), never as "fresh".
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;

use crate::support::*;

fn project() -> Project {
    Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              a:
                inputs: [a.txt]
                outputs: [out/a]
                run: cp a.txt out/a
              b:
                deps: [a]
                outputs: [out/b]
                run: cat out/a out/a > out/b
            "#),
        )
        .file("a.txt", "one\n")
}

/// The ways a state file can be damaged: cut short, emptied, one bit flipped in the middle, and
/// one bit flipped in the last byte.
fn damages(bytes: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut flipped = bytes.to_vec();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x10;
    let mut last = bytes.to_vec();
    let n = last.len() - 1;
    last[n] ^= 0x01;
    vec![
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ("emptied", Vec::new()),
        ("flipped in the middle", flipped),
        ("flipped at the end", last),
    ]
}

#[test]
fn damaged_state_files_read_as_absent() {
    for file in ["state.bin", "stat.bin", "graph.bin", "explain.bin"] {
        let p = project();
        p.build(&[]);
        p.build(&["--explain"]);
        let path = p.path(".gvbuild").join(file);
        let good = fs::read(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        for (how, bad) in damages(&good) {
            if file == "state.bin" {
                // Without its records no step is fresh: each is checked against the cache.
                fs::write(&path, &bad).unwrap();
                let b = p.build(&[]);
                assert_eq!(b.restored(), names(&["a", "b"]), "{file} {how}: {:?}", b.outcomes());
            }
            fs::write(&path, &bad).unwrap();
            // An edit the damaged file must not hide: same size, so only content tells.
            p.write("a.txt", "two\n");
            let b = p.build(&[]);
            assert_eq!(b.fresh(), Vec::<String>::new(), "{file} {how}: {:?}", b.outcomes());
            assert_eq!(p.read("out/b"), "two\ntwo\n", "{file} {how}");
            p.write("a.txt", "one\n");
            let b = p.build(&[]);
            assert!(b.fresh().is_empty(), "{file} {how}: {:?}", b.outcomes());
            assert_eq!(p.read("out/b"), "one\none\n", "{file} {how}");
            assert_eq!(p.build(&[]).fresh(), names(&["a", "b"]), "{file} {how}: then a no-op");
        }
    }
}

/// A journal whose last record is torn keeps the records before it and drops the rest: a build
/// killed after its first step finished, with a torn record appended, leaves that step fresh and
/// checks the other again.
#[test]
fn damaged_journal_records_are_dropped() {
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            targets:
              a:
                inputs: [a.txt]
                outputs: [out/a]
                run: cp a.txt out/a
              b:
                deps: [a]
                outputs: [out/b]
                run: if [ -e ctl/hold ]; then touch ctl/started; sleep 60; fi; cat out/a > out/b
                scratch: [ctl]
            "#),
        )
        .file("a.txt", "one\n")
        .file("ctl/hold", "");
    let mut child = p.command(&[]).stdout(std::process::Stdio::null()).spawn().unwrap();
    wait_until("step b to start", || p.exists("ctl/started"));
    let st = std::process::Command::new("kill").args(["-KILL", &child.id().to_string()]).status().unwrap();
    assert!(st.success());
    wait_child(&mut child, "the killed gvbuild");
    // What a kill while appending leaves: a frame announcing more bytes than follow.
    let journal = p.path(".gvbuild/journal");
    let mut bytes = fs::read(&journal).expect("the finished step `a` is journaled");
    assert!(!bytes.is_empty());
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    fs::write(&journal, bytes).unwrap();
    fs::remove_file(p.path("ctl/hold")).unwrap();
    let b = p.build(&[]);
    assert_eq!(b.fresh(), names(&["a"]), "the record before the torn one is kept: {:?}", b.outcomes());
    assert_eq!(b.ran(), names(&["b"]));
    assert_eq!(p.read("out/b"), "one\n");
}
