//! The fuzzers' saved corpus and every crash input they found, replayed on stable in every test
//! run: each input goes through the same harness function as under cargo-fuzz (`fuzz/src/lib.rs`)
//! and must return, without a panic, in a bounded time.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[path = "../fuzz/src/lib.rs"]
mod harness;

/// Far above what any input takes in a debug build; a hang is what this catches.
const PER_INPUT: Duration = Duration::from_secs(10);

fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut out = Vec::new();
    for kind in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(kind).join(target)) else { continue };
        out.extend(entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()));
    }
    out.sort();
    out
}

/// The stack gvbuild's own main thread has (Linux's default 8 MiB): test threads get 2 MiB,
/// which a debug build's YAML parser can outgrow on the deepest nesting the loader allows.
const MAIN_THREAD_STACK: usize = 8 << 20;

fn replay(target: &'static str, run: fn(&[u8])) {
    let thread = std::thread::Builder::new().stack_size(MAIN_THREAD_STACK);
    let replayed = thread.spawn(move || replay_here(target, run)).unwrap().join();
    if let Err(panic) = replayed {
        std::panic::resume_unwind(panic);
    }
}

fn replay_here(target: &str, run: fn(&[u8])) {
    let inputs = inputs(target);
    assert!(!inputs.is_empty(), "no saved inputs for fuzz target `{target}`");
    let mut failures = Vec::new();
    for path in &inputs {
        let data = std::fs::read(path).unwrap();
        let start = Instant::now();
        let result = std::panic::catch_unwind(|| run(&data));
        let took = start.elapsed();
        if result.is_err() {
            failures.push(format!("{} panicked", path.display()));
        } else if took > PER_INPUT {
            failures.push(format!("{} took {took:?}", path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} inputs failed:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
}

#[test]
fn config_corpus() {
    replay("config", harness::config);
}

#[test]
fn depfile_corpus() {
    replay("depfile", harness::depfile);
}

#[test]
fn state_corpus() {
    replay("state", harness::state);
}

#[test]
fn sealed_corpus() {
    replay("sealed", harness::sealed);
}

#[test]
fn image_corpus() {
    replay("image", harness::image);
}

/// Writes the seeds of the `state`, `sealed` and `image` corpora from files gvbuild itself writes
/// and from the Nanos vectors (the `config` and `depfile` seeds are the examples' build files,
/// the tests' YAML and `tests/data/depfiles`). Run once, then minimise (docs/fuzzing.md):
/// `cargo test --test integration fuzz_corpus::write_seeds -- --ignored`.
#[test]
#[ignore]
fn write_seeds() {
    use crate::support::{y, Project};
    use gvbuild::fingerprint::state::State;
    use gvbuild::tfs::{FsNode, Tuple, Value, VolumeSize};
    use std::collections::BTreeMap;

    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let save = |target: &str, name: &str, bytes: &[u8]| {
        std::fs::create_dir_all(corpus.join(target)).unwrap();
        std::fs::write(corpus.join(target).join(format!("seed-{name}")), bytes).unwrap();
    };

    // State files: a build with a depfile, then a second one with --explain.
    let p = Project::new()
        .file(
            "gevulot.yaml",
            &y(r#"
            vars: { greeting: hello }
            targets:
              gen:
                inputs: [a.txt]
                outputs: [build/gen.txt]
                run: "cp a.txt build/gen.txt && echo 'build/gen.txt: a.txt b.h' > build/gen.d"
                depfile: build/gen.d
                env: { G: "${greeting}" }
              use:
                inputs: [build/gen.txt]
                outputs: [build/use]
                run: mkdir -p build/use && cp build/gen.txt build/use/x && ln -s x build/use/y
              all:
                deps: [gen, use]
            "#),
        )
        .file("a.txt", "a\n")
        .file("b.h", "b\n");
    p.build(&[]);
    p.write("b.h", "b2\n");
    p.gvbuild(&["--explain"]).success();
    let state_dir = p.path(".gvbuild");
    let sealed_kinds = [("state.bin", 0u8), ("stat.bin", 1), ("graph.bin", 2), ("explain.bin", 3)];
    for (file, kind) in sealed_kinds {
        let bytes = std::fs::read(state_dir.join(file)).unwrap();
        save("state", file, &bytes);
        let mut payload = vec![kind];
        payload.extend_from_slice(&bytes[48..]);
        save("sealed", file, &payload);
    }
    // A journal as a killed build leaves it: every record appended again.
    let state = State::load(&state_dir);
    for t in ["gen", "use", "gone"] {
        state.append(t, state.get(t)).unwrap();
    }
    let journal = std::fs::read(state_dir.join("journal")).unwrap();
    save("state", "journal", &journal);
    let mut frames = vec![4u8];
    let mut rest = &journal[..];
    while rest.len() >= 12 {
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        frames.extend_from_slice(&u16::try_from(len).unwrap().to_le_bytes());
        frames.extend_from_slice(&rest[12..12 + len]);
        rest = &rest[12 + len..];
    }
    save("sealed", "journal", &frames);

    // Images: the first byte pads the file to n * 16 KiB (see the harness); the rest is the start
    // of the image, up to the end of its log.
    const PAD: u64 = 16 << 10;
    let seed = |bytes: &[u8], keep: usize| {
        let mut s = vec![u8::try_from((bytes.len() as u64).div_ceil(PAD)).unwrap()];
        s.extend_from_slice(&bytes[..keep]);
        s
    };
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/nanos-vectors");
    for v in ["a-single-file", "b-tree-kinds", "c-manifest-keys"] {
        let img = std::fs::read(vectors.join(v).join("root.img")).unwrap();
        // Nanos's mkfs writes the whole log into the first two sectors here; data starts at 1.5 MiB.
        assert!(img[1024..1_573_376].iter().all(|&b| b == 0), "{v}: log past 1 KiB");
        save("image", &format!("nanos-{v}"), &seed(&img, 1024));
    }
    let mut sub = BTreeMap::new();
    sub.insert("lib.so".to_string(), FsNode::Bytes { data: vec![7; 1500], exec: false });
    sub.insert("empty".to_string(), FsNode::Bytes { data: Vec::new(), exec: false });
    sub.insert("link".to_string(), FsNode::Symlink("lib.so".into()));
    let mut tree = BTreeMap::new();
    tree.insert("prover".to_string(), FsNode::Bytes { data: b"\x7fELF prover".to_vec(), exec: true });
    tree.insert("lib".to_string(), FsNode::Dir(sub));
    tree.insert("abs".to_string(), FsNode::Symlink("/lib/lib.so".into()));
    tree.insert("empty-dir".to_string(), FsNode::Dir(BTreeMap::new()));
    let mut attrs = Tuple::new();
    attrs.insert("program".into(), Value::str("/prover"));
    attrs.insert("arguments".into(), Value::Vector(vec![Value::str("prover"), Value::str("two words")]));
    let mut env = Tuple::new();
    env.insert("RUST_LOG".into(), Value::str("debug"));
    attrs.insert("environment".into(), Value::Tuple(env));
    let dir = tempfile::tempdir().unwrap();
    let volume = |name: &str, tree: &BTreeMap<String, FsNode>, attrs: &Tuple, label: &str| {
        let path = dir.path().join(name);
        let out = std::fs::File::options().read(true).write(true).create_new(true).open(&path).unwrap();
        gvbuild::tfs::write_volume(&out, 0, tree, attrs, label, VolumeSize::Auto).unwrap();
        std::fs::read(&path).unwrap()
    };
    let root = volume("root.img", &tree, &attrs, "gvtest");
    let mut kernel = BTreeMap::new();
    kernel.insert("kernel".to_string(), FsNode::Bytes { data: vec![1; 600], exec: false });
    let boot = volume("boot.img", &kernel, &Tuple::new(), "");
    for (name, img) in [("gvbuild-root", &root), ("gvbuild-boot", &boot)] {
        assert!(img[1536..1_573_376].iter().all(|&b| b == 0), "{name}: log past 1.5 KiB");
        save("image", name, &seed(img, 1536));
    }

    // A disk: an MBR with Nanos's region record, then two compact volumes (sector 0 linking to a
    // 2-sector extension) in partitions 1 and 2, and a partition of another type.
    let compact = |img: &[u8]| {
        let mut v = img[..24].to_vec(); // magic, version, length, UUID
        let label_end = 24 + img[24..].iter().position(|&b| b == 0).unwrap();
        v.extend_from_slice(&img[24..=label_end]);
        v.extend_from_slice(&[5, 1, 2, 1]); // a link to 2 sectors at sector 1, END_OF_LOG
        v.resize(512, 0);
        v.extend_from_slice(&img[512..1536]);
        v.resize(8 * 512, 0);
        v
    };
    let mut disk = vec![0u8; 512];
    disk[0x1aa + 8..0x1aa + 16].copy_from_slice(&0u64.to_le_bytes());
    disk[0x1aa + 16..0x1aa + 20].copy_from_slice(&12u32.to_le_bytes());
    for (i, (start, kind)) in [(1u32, 0x83u8), (9, 0x83), (17, 0x0c)].into_iter().enumerate() {
        let e = &mut disk[0x1be + 16 * i..0x1be + 16 * (i + 1)];
        e[0] = 0x80;
        e[4] = kind;
        e[8..12].copy_from_slice(&start.to_le_bytes());
        e[12..16].copy_from_slice(&8u32.to_le_bytes());
    }
    disk[510] = 0x55;
    disk[511] = 0xaa;
    disk.extend_from_slice(&compact(&boot));
    disk.extend_from_slice(&compact(&root));
    disk.resize(25 * 512, 0);
    let mut s = vec![0u8];
    s.extend_from_slice(&disk);
    save("image", "disk", &s);
    let mut s = vec![0u8];
    s.extend_from_slice(&compact(&root));
    save("image", "compact-root", &s);
}
