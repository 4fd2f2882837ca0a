//! The file task protocol: `task.json` in, `task_result.json` out, both in the workspace.
//!
//! Source: the Gevulot shim's file-based task mode (gevulotnetwork/gevulot, branch
//! `optional-file-based-task-to-shim`, `crates/shim/src/lib.rs`) and gevulot-shim's
//! `shim-executor`, which drives it from the host. Before boot the runner writes
//!
//! ```json
//! {"id":"task01","args":["--input","/workspace/sample.in"],"files":["sample.in"]}
//! ```
//!
//! and copies each input file into the workspace under its name. The program (through the
//! shim) writes, with create-new, one of
//!
//! ```json
//! {"Ok":{"id":"task01","data":[104,105],"files":["/workspace/sample.proof"]}}
//! {"Err":"message"}
//! ```
//!
//! `data` is bytes as a JSON array; `files` are paths in the VM, which the node accepts only
//! under `/workspace` (the share's mount point), so `/workspace/x` is `WORKSPACE/x` on the host.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The task file's name in the workspace.
pub const TASK_FILE: &str = "task.json";
/// The result file's name in the workspace.
pub const RESULT_FILE: &str = "task_result.json";
/// Where the node's share is mounted in the VM.
pub const WORKSPACE_IN_VM: &str = "/workspace";
/// shim-executor's default task id.
pub const DEFAULT_ID: &str = "task01";

/// `task.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub args: Vec<String>,
    /// Input files, by their name in the workspace.
    pub files: Vec<String>,
}

/// The name a project file gets in the workspace: its last path component (`samples/a.in` is
/// `/workspace/a.in` in the VM).
pub fn workspace_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or_default()
}

/// `task_result.json`: serde's externally tagged enum, as the shim's `Result` serializes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskResult {
    Ok(TaskOk),
    Err(String),
}

/// The `Ok` side of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOk {
    pub id: String,
    pub data: Vec<u8>,
    /// Paths in the VM.
    pub files: Vec<String>,
}

/// Why a result cannot be read or used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResultError {
    #[error("{RESULT_FILE} is not the shim's result (`{{\"Ok\": {{\"id\", \"data\", \"files\"}}}}` or `{{\"Err\": \"...\"}}`): {0}")]
    Malformed(String),
    #[error("the result reports `{0}`, which is not under {WORKSPACE_IN_VM}: the node moves only files of the workspace")]
    OutsideWorkspace(String),
    #[error("the result is for task `{got}`, not `{want}`")]
    WrongTask { got: String, want: String },
}

/// Read a result file's bytes.
pub fn parse_result(bytes: &[u8]) -> Result<TaskResult, ResultError> {
    serde_json::from_slice(bytes).map_err(|e| ResultError::Malformed(e.to_string()))
}

/// The workspace-relative path of a file the VM reports (`/workspace/out/x` is `out/x`).
/// Refused: anything not below `/workspace`, and `..`.
pub fn in_workspace(vm_path: &str) -> Result<PathBuf, ResultError> {
    let outside = || ResultError::OutsideWorkspace(vm_path.to_string());
    let rest = Path::new(vm_path).strip_prefix(WORKSPACE_IN_VM).map_err(|_| outside())?;
    let mut out = PathBuf::new();
    for c in rest.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return Err(outside()),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(outside());
    }
    Ok(out)
}

/// The result's data as text when it is UTF-8, else as a hex dump line.
pub fn data_text(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(s) => s.to_string(),
        Err(_) => format!("({} bytes, not UTF-8) {}", data.len(), hex::encode(data)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn task_json_has_the_shims_shape() {
        let t = Task {
            id: "task01".into(),
            args: vec!["--input".into(), "/workspace/test.input".into()],
            files: vec!["test.input".into()],
        };
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"id":"task01","args":["--input","/workspace/test.input"],"files":["test.input"]}"#
        );
    }

    #[test]
    fn results_read_as_the_shim_writes_them() {
        let ok = parse_result(br#"{"Ok":{"id":"task01","data":[0,1,2],"files":["/workspace/test.output"]}}"#)
            .unwrap();
        assert_eq!(
            ok,
            TaskResult::Ok(TaskOk {
                id: "task01".into(),
                data: vec![0, 1, 2],
                files: vec!["/workspace/test.output".into()]
            })
        );
        assert_eq!(parse_result(br#"{"Err":"no input"}"#).unwrap(), TaskResult::Err("no input".into()));
        assert!(matches!(parse_result(br#"{"Ok":{"id":"t"}}"#), Err(ResultError::Malformed(_))));
        assert!(matches!(parse_result(b"{\"Ok\":"), Err(ResultError::Malformed(_))));
    }

    #[test]
    fn reported_files_map_into_the_workspace() {
        assert_eq!(in_workspace("/workspace/a.proof").unwrap(), PathBuf::from("a.proof"));
        assert_eq!(in_workspace("/workspace/out/./b").unwrap(), PathBuf::from("out/b"));
        for bad in ["/etc/passwd", "/workspace", "/workspace/../etc/passwd", "workspace/a", "/workspacex/a"] {
            assert_eq!(in_workspace(bad), Err(ResultError::OutsideWorkspace(bad.into())), "{bad}");
        }
    }

    #[test]
    fn data_is_text_when_it_can_be() {
        assert_eq!(data_text(b"proof ok"), "proof ok");
        assert_eq!(data_text(&[0xff, 0x00]), "(2 bytes, not UTF-8) ff00");
    }
}
