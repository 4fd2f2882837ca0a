//! `builder: ops`: run `ops build` on the stage root and keep its image.
//!
//! ops resolves the manifest's Dirs and Files against its working directory, so it runs in the
//! stage root. Its state lives in a gvbuild-managed OPS_HOME (in the cache folder), never the
//! user's `~/.ops`: ops downloads a Nanos release and `common.tar.gz` into an empty OPS_HOME, so
//! the managed one starts with copies of the user's `~/.ops/<version>` and `~/.ops/common` when
//! they exist, and a machine that has them builds offline.

use std::fs;
use std::path::{Path, PathBuf};

use super::ImageSpec;

/// What ops needs and where it is.
pub const OPS_MISSING: &str = "`ops` was not found on PATH. Install it (https://ops.city: \
`curl https://ops.city/get.sh -sSfL | sh`), or use `builder: native`, which needs no ops";

/// Why the managed OPS_HOME could not be prepared.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum OpsHomeError {
    #[error("cannot create {}: {source}", path.display())]
    #[diagnostic(code(gvbuild::image::ops::create))]
    Create { path: PathBuf, source: std::io::Error },
    #[error("cannot copy {} into the managed OPS_HOME: {source}", from.display())]
    #[diagnostic(code(gvbuild::image::ops::copy))]
    Copy { from: PathBuf, source: std::io::Error },
}

/// Prepare the managed OPS_HOME for `version`: copy what the user's `~/.ops` has of it.
pub fn prepare_ops_home(ops_home: &Path, version: &str) -> Result<(), OpsHomeError> {
    fs::create_dir_all(ops_home.join("images"))
        .map_err(|source| OpsHomeError::Create { path: ops_home.to_path_buf(), source })?;
    let Some(home) = std::env::var_os("HOME") else { return Ok(()) };
    let user = PathBuf::from(home).join(".ops");
    for part in [version, "common"] {
        let (from, to) = (user.join(part), ops_home.join(part));
        if from.is_dir() && !to.exists() {
            copy_tree(&from, &to).map_err(|source| OpsHomeError::Copy { from: from.clone(), source })?;
        }
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let tmp = crate::fsutil::temp_beside(to);
    for e in walkdir::WalkDir::new(from) {
        let e = e.map_err(std::io::Error::from)?;
        let rel = e.path().strip_prefix(from).map_err(std::io::Error::other)?;
        let dest = tmp.join(rel);
        if e.file_type().is_dir() {
            fs::create_dir_all(&dest)?;
        } else if e.file_type().is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(e.path())?, &dest)?;
        } else {
            fs::copy(e.path(), &dest)?;
        }
    }
    fs::rename(&tmp, to)
}

/// The shell command that runs ops (through the step runner, for its logs, process group and
/// interruption), with every argument quoted.
pub fn ops_command(
    ops: &Path,
    spec: &ImageSpec,
    (program, nanos_version): (&str, &str),
    project: &Path,
    name: &str,
) -> String {
    let program = Path::new(program)
        .strip_prefix(&spec.root)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| program.to_string());
    let manifest = project.join(&spec.manifest);
    let args = [
        ops.to_string_lossy().into_owned(),
        "build".into(),
        program,
        "-c".into(),
        manifest.to_string_lossy().into_owned(),
        "--nanos-version".into(),
        nanos_version.to_string(),
        "-i".into(),
        name.into(),
    ];
    let quoted: Vec<String> = args.iter().map(|a| format!("'{}'", a.replace('\'', "'\\''"))).collect();
    format!(
        "cd '{}' && exec {}",
        project.join(&spec.root).to_string_lossy().replace('\'', "'\\''"),
        quoted.join(" ")
    )
}

/// Where ops left the image: `OPS_HOME/images/NAME` or `NAME.img`.
pub fn built_image(ops_home: &Path, name: &str) -> Option<PathBuf> {
    [ops_home.join("images").join(name), ops_home.join("images").join(format!("{name}.img"))]
        .into_iter()
        .find(|p| p.is_file())
}
