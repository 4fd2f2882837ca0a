//! A stand-in prover that speaks the Gevulot shim's file task protocol, as a real prover does
//! through the shim's `run` (gevulotnetwork/gevulot, branch `optional-file-based-task-to-shim`,
//! `crates/shim/src/lib.rs`): it waits for the node's workspace, reads
//! `/workspace/task.json` (`{"id", "args", "files"}`), proves, and writes
//! `/workspace/task_result.json` (`{"Ok": {"id", "data", "files"}}` or `{"Err": "..."}`).
//!
//! The "proof" of an input is its length and a checksum. With `--input PATH --output PATH` in
//! the task's args it proves that one file; without, it proves each of the task's files into
//! `/workspace/NAME.proof`. A first argument names another workspace folder, to try the
//! program outside a VM (`my_prover DIR`).
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Where the node's share is mounted in the VM.
const WORKSPACE: &str = "/workspace";

fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// The shim waits up to 30 s for the 9p share to appear before it reads the task.
fn wait_for_task(path: &Path) -> Result<Vec<u8>, String> {
    let start = Instant::now();
    loop {
        match fs::read(path) {
            Ok(b) => return Ok(b),
            Err(_) if start.elapsed() < Duration::from_secs(30) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(format!("no task at {} after 30 s: {e}", path.display())),
        }
    }
}

/// A task file's path: a relative name is joined onto the workspace, as the shim does.
fn in_workspace(workspace: &str, name: &str) -> String {
    if name.starts_with('/') { name.to_string() } else { format!("{workspace}/{name}") }
}

fn prove(input: &str, output: &str) -> Result<String, String> {
    let bytes = fs::read(input).map_err(|e| format!("cannot read {input}: {e}"))?;
    let proof = format!("{} {:016x}\n", bytes.len(), checksum(&bytes));
    fs::write(output, &proof).map_err(|e| format!("cannot write {output}: {e}"))?;
    Ok(output.to_string())
}

/// Run the task: the proven files (paths in the VM) and the data to return.
fn run(workspace: &str, task: &Value) -> Result<(Vec<String>, String), String> {
    let strings = |key: &str| -> Vec<String> {
        task[key].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect()
    };
    let (args, files) = (strings("args"), strings("files"));
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let mut proven = Vec::new();
    match (flag("--input"), flag("--output")) {
        (Some(input), Some(output)) => proven.push(prove(&input, &output)?),
        (None, None) if !files.is_empty() => {
            for f in &files {
                let input = in_workspace(workspace, f);
                proven.push(prove(&input, &format!("{input}.proof"))?);
            }
        }
        _ => return Err("give `--input PATH --output PATH`, or input files".into()),
    }
    Ok((proven.clone(), format!("proved {}", proven.join(", "))))
}

fn main() {
    let workspace = std::env::args().nth(1).unwrap_or_else(|| WORKSPACE.to_string());
    eprintln!("my_prover: waiting for {workspace}/task.json");
    let result = match wait_for_task(Path::new(&format!("{workspace}/task.json"))) {
        Err(e) => {
            // No task means no workspace: there is nowhere to write a result either.
            eprintln!("my_prover: {e}");
            std::process::exit(1);
        }
        Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
            Err(e) => json!({ "Err": format!("task.json is not JSON: {e}") }),
            Ok(task) => {
                let id = task["id"].as_str().unwrap_or_default().to_string();
                eprintln!("my_prover: task {id}: {task}");
                match run(&workspace, &task) {
                    Ok((files, data)) => json!({ "Ok": { "id": id, "data": data.into_bytes(), "files": files } }),
                    Err(e) => json!({ "Err": e }),
                }
            }
        },
    };
    // Created new, as the shim creates it: a result is never overwritten.
    let path = format!("{workspace}/task_result.json");
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .and_then(|mut f| f.write_all(result.to_string().as_bytes()));
    if let Err(e) = written {
        eprintln!("my_prover: cannot write {path}: {e}");
        std::process::exit(1);
    }
    eprintln!("my_prover: {result}");
}
