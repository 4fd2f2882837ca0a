//! A stand-in prover: reads every task file in /workspace (where the Gevulot node's 9p share is
//! mounted) and writes a "proof" next to each: the task's length and a checksum.
use std::fs;
use std::path::Path;

fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

fn main() {
    let workspace = std::env::args().nth(1).unwrap_or_else(|| "/workspace".to_string());
    let Ok(entries) = fs::read_dir(&workspace) else {
        eprintln!("my_prover: no workspace at {workspace}");
        std::process::exit(1);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "task") {
            let task = fs::read(&path).unwrap_or_default();
            let proof = format!("{} {:016x}\n", task.len(), checksum(&task));
            let out = Path::new(&workspace).join(path.with_extension("proof").file_name().unwrap_or_default());
            if let Err(e) = fs::write(&out, proof) {
                eprintln!("my_prover: cannot write {}: {e}", out.display());
                std::process::exit(1);
            }
        }
    }
}
