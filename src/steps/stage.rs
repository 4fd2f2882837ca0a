//! The `stage` step: build a stage root, the tree the image will contain.
//!
//! `copy` rules copy files and folders into it: a `to` ending in `/` is a folder that receives
//! every match under its own name; any other `to` is a rename, which must match exactly one
//! file. `libs_for` stages the whole shared-library closure of ELF files (see `elf.rs`): each
//! library under its soname in `lib_dir`, the interpreter at its own path. The libraries found
//! are returned as discovered inputs, so that a changed system library restages.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::elf;
use crate::yaml::Spanned;
use schemars::JsonSchema;

use crate::diag::Span;
use crate::fsutil;
use crate::paths::PathSpec;
use crate::yaml::error::ConfigError;
use crate::yaml::read::raw_struct;
use crate::yaml::Validator;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyRule {
    /// Project-relative path or glob.
    pub from: String,
    /// Path inside the stage root; a trailing `/` makes it a folder.
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageSpec {
    pub copy: Vec<CopyRule>,
    /// Project-relative ELF files whose library closure is staged.
    pub libs_for: Vec<String>,
    /// Where libraries go inside the stage root.
    pub lib_dir: String,
    /// Project-relative folders searched first (as LD_LIBRARY_PATH would be).
    pub search: Vec<String>,
    /// Where each rule is in the build file, for errors found while building.
    pub at: crate::diag::Positions,
}

/// What staging found: discovered inputs (the libraries, absolute or project-relative) and
/// warnings.
#[derive(Debug, Default)]
pub struct Staged {
    pub discovered: Vec<PathBuf>,
    /// The folders the library search consulted (see [`crate::steps::elf::Closure::searched`]).
    pub searched: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

/// Why a stage root could not be built. Each message names the file or rule it is about.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum StageError {
    /// Any of the others, after the gevulot.yaml line of the rule it is about.
    #[error("{at}{source}")]
    #[diagnostic(code(gvbuild::stage))]
    At { at: String, source: Box<StageError> },
    #[error("cannot create {}: {source}", path.display())]
    Create { path: PathBuf, source: std::io::Error },
    #[error("cannot move the stage root into place: {0}")]
    MoveIntoPlace(#[source] std::io::Error),
    #[error("`{from}` matches nothing")]
    MatchesNothing { from: String },
    #[error(
        "`{from}` renames to `{to}`, but {} files match:\n{}\nnarrow the glob, or end `to` with `/` to copy them all",
        matched.len(),
        matched.iter().map(|m| format!("  {}", m.display())).collect::<Vec<_>>().join("\n")
    )]
    RenamesMany { from: String, to: String, matched: Vec<PathBuf> },
    #[error(
        "{} needs the library `{soname}` by a path with a loader token; gvbuild cannot tell which path the loader in the image will open. Link it by soname (-Wl,-soname) or by a plain path",
        needed_by.display()
    )]
    LoaderToken { needed_by: PathBuf, soname: String },
    #[error(transparent)]
    Elf(#[from] elf::ElfError),
    #[error("`{from}` is not a valid glob: {source}")]
    Glob { from: String, source: globset::Error },
    #[error("{} is outside the project", path.display())]
    OutsideProject { path: PathBuf },
    #[error("{} is outside {}", path.display(), folder.display())]
    OutsideFolder { path: PathBuf, folder: PathBuf },
    #[error("{} is a symlink loop (back to {})", path.display(), to.display())]
    SymlinkLoop { path: PathBuf, to: PathBuf },
    #[error("{} is a symlink to nothing; a stage root cannot hold it", path.display())]
    DanglingSymlink { path: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// Shows the I/O error, as a read error does, when there is one.
    #[error(
        "cannot read {}: {}",
        path.display(),
        source.io_error().map_or_else(|| source.to_string(), ToString::to_string)
    )]
    Walk { path: PathBuf, source: walkdir::Error },
    #[error("`{}` would be written through a symlink", path.display())]
    ThroughSymlink { path: PathBuf },
    #[error("`{}` is outside the stage root", path.display())]
    OutsideStageRoot { path: PathBuf },
    #[error("a copy would replace the stage root itself")]
    ReplacesStageRoot,
    #[error(
        "{} is {kind}, not a file or folder; a stage root holds only files, folders and what symlinks point to",
        path.display()
    )]
    NotFileOrFolder { path: PathBuf, kind: &'static str },
    #[error("`{}` is staged twice: by `{previous}` and by `{rule}`", path.display())]
    StagedTwice { path: PathBuf, previous: String, rule: String },
    #[error("{} would be copied onto itself", path.display())]
    OntoItself { path: PathBuf },
    #[error("cannot copy {} to {}: {source}", from.display(), to.display())]
    Copy { from: PathBuf, to: PathBuf, source: std::io::Error },
    #[error("cannot set mode of {}: {source}", path.display())]
    SetMode { path: PathBuf, source: std::io::Error },
}

impl StageError {
    /// This error after `at`, the gevulot.yaml line of the rule it is about.
    fn at(self, at: &str) -> StageError {
        StageError::At { at: at.to_string(), source: Box::new(self) }
    }
}

/// Build the stage root at `into` (absolute), staging in a temp folder renamed into place.
pub fn run(root: &Path, spec: &StageSpec, into: &Path) -> Result<Staged, StageError> {
    let staging = fsutil::temp_beside(into);
    fs::create_dir_all(&staging).map_err(|source| StageError::Create { path: staging.clone(), source })?;
    let result = fill(root, spec, &staging);
    match result {
        Ok(staged) => {
            let _ = fsutil::remove_path(into);
            fs::rename(&staging, into).map_err(StageError::MoveIntoPlace)?;
            Ok(staged)
        }
        Err(e) => {
            let _ = fsutil::remove_path(&staging);
            Err(e)
        }
    }
}

/// Fill `staging`: the copy rules in order, then the library closure of `libs_for`.
fn fill(root: &Path, spec: &StageSpec, staging: &Path) -> Result<Staged, StageError> {
    let mut staged = Staged::default();
    // Destination (inside the stage root) -> the rule that wrote it.
    let mut written: BTreeMap<PathBuf, String> = BTreeMap::new();
    for (i, rule) in spec.copy.iter().enumerate() {
        let at = spec.at.prefix(&format!("copy{i}"));
        copy_rule(root, rule, staging, &mut written).map_err(|e| e.at(&at))?;
    }
    if !spec.libs_for.is_empty() {
        let at = spec.at.prefix("libs_for");
        stage_libs(root, spec, staging, &mut written, &mut staged).map_err(|e| e.at(&at))?;
    }
    Ok(staged)
}

/// Copy what one `copy` rule matches into `staging`.
fn copy_rule(
    root: &Path,
    rule: &CopyRule,
    staging: &Path,
    written: &mut BTreeMap<PathBuf, String>,
) -> Result<(), StageError> {
    let matches = matches(root, &rule.from)?;
    if matches.is_empty() {
        return Err(StageError::MatchesNothing { from: rule.from.clone() });
    }
    let into_folder = rule.to.ends_with('/');
    if !into_folder && matches.len() > 1 {
        return Err(StageError::RenamesMany {
            from: rule.from.clone(),
            to: rule.to.clone(),
            matched: matches.iter().map(|m| m.strip_prefix(root).unwrap_or(m).to_path_buf()).collect(),
        });
    }
    for m in matches {
        let rel_to = rule.to.trim_start_matches('/');
        let dest_rel = if into_folder {
            Path::new(rel_to).join(m.file_name().unwrap_or_default())
        } else {
            PathBuf::from(rel_to)
        };
        copy_into(&m, staging, &dest_rel, written, &rule.from)?;
    }
    Ok(())
}

/// Stage the shared-library closure of `libs_for` (each library under its soname in `lib_dir`,
/// the interpreters at their paths), recording what was found in `staged`.
fn stage_libs(
    root: &Path,
    spec: &StageSpec,
    staging: &Path,
    written: &mut BTreeMap<PathBuf, String>,
    staged: &mut Staged,
) -> Result<(), StageError> {
    let elfs: Vec<PathBuf> = spec.libs_for.iter().map(|e| root.join(e)).collect();
    let search: Vec<PathBuf> = spec.search.iter().map(|s| root.join(s)).collect();
    // A relative path in DT_NEEDED names a project file (steps run in the project folder).
    let closure = elf::closure(&elfs, &search, root)?;
    let lib_dir = Path::new(spec.lib_dir.trim_start_matches('/'));
    for lib in &closure.libs {
        let dest_rel = match lib.image_path() {
            // Linked by its path: the loader under Nanos opens exactly that path from `/`.
            Some(_) if lib.soname.contains('$') => {
                return Err(StageError::LoaderToken {
                    needed_by: lib.needed_by.clone(),
                    soname: lib.soname.clone(),
                })
            }
            Some(path) => path,
            None => lib_dir.join(&lib.soname),
        };
        if written.contains_key(&dest_rel) {
            // A copy rule staged this library already (an alias such as libcuda.so.1).
            continue;
        }
        copy_into(&lib.path, staging, &dest_rel, written, "libs_for")?;
        staged.discovered.push(lib.path.clone());
    }
    staged.searched = closure.searched.clone();
    for interp in &closure.interpreters {
        let dest_rel = PathBuf::from(interp.to_string_lossy().trim_start_matches('/'));
        if !written.contains_key(&dest_rel) {
            copy_into(interp, staging, &dest_rel, written, "libs_for")?;
            staged.discovered.push(interp.clone());
        }
    }
    let has_cudart = closure.libs.iter().any(|l| l.soname.starts_with("libcudart.so"));
    let has_cuda = written.keys().any(|k| k.file_name().is_some_and(|n| n == "libcuda.so.1"));
    if has_cudart && !has_cuda {
        let at = spec.at.prefix("libs_for");
        staged.warnings.push(format!(
            "{at}libcudart is in the closure but no libcuda.so.1 is staged: the CUDA runtime loads the driver with dlopen, which the closure cannot see. Add the copy rule the Gevulot guide uses: {{ from: \"build/assets/libcuda.so.*.*.*\", to: {}/libcuda.so.1 }}",
            spec.lib_dir.trim_end_matches('/')
        ));
    }
    Ok(())
}

/// The files and folders a `from` names (a path, or a glob over project files).
fn matches(root: &Path, from: &str) -> Result<Vec<PathBuf>, StageError> {
    if !crate::paths::is_glob(from) {
        let p = root.join(from);
        return Ok(if fs::symlink_metadata(&p).is_ok() { vec![p] } else { Vec::new() });
    }
    let glob = globset::GlobBuilder::new(from)
        .literal_separator(true)
        .build()
        .map_err(|source| StageError::Glob { from: from.to_string(), source })?
        .compile_matcher();
    let base: String =
        from.split('/').take_while(|c| !crate::paths::is_glob(c)).collect::<Vec<_>>().join("/");
    let base_abs = if base.is_empty() { root.to_path_buf() } else { root.join(&base) };
    let mut out = Vec::new();
    if fs::symlink_metadata(&base_abs).is_err() {
        return Ok(out);
    }
    for e in walk(&base_abs, false) {
        let e = e?;
        let rel = e
            .path()
            .strip_prefix(root)
            .map_err(|_| StageError::OutsideProject { path: e.path().to_path_buf() })?;
        if glob.is_match(rel) {
            out.push(e.path().to_path_buf());
        }
    }
    // A folder that matches takes its contents with it: drop matches inside matched folders.
    let folders: Vec<PathBuf> = out.iter().filter(|p| p.is_dir()).cloned().collect();
    out.retain(|p| !folders.iter().any(|f| p != f && p.starts_with(f)));
    Ok(out)
}

/// The entries below `dir` in name order, never `dir` itself. `.git` and `.gvbuild` folders are
/// left out, as they are of every step's key (docs/cache.md lists them). An entry that cannot be read
/// is an error naming it, never skipped. With `follow`, symlinks are followed (a loop or a
/// symlink to nothing is an error naming it).
fn walk(dir: &Path, follow: bool) -> impl Iterator<Item = Result<walkdir::DirEntry, StageError>> {
    walkdir::WalkDir::new(dir)
        .follow_links(follow)
        .sort_by_file_name()
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| !(e.file_type().is_dir() && crate::paths::is_skipped_dir(e.file_name())))
        .map(|e| e.map_err(walk_error))
}

/// What an entry [`walk`] could not read is, in the stage's words.
fn walk_error(err: walkdir::Error) -> StageError {
    let path = err.path().map(Path::to_path_buf).unwrap_or_default();
    match (err.loop_ancestor(), err.io_error().map(std::io::Error::kind)) {
        (Some(to), _) => StageError::SymlinkLoop { path, to: to.to_path_buf() },
        (None, Some(std::io::ErrorKind::NotFound)) => StageError::DanglingSymlink { path },
        _ => StageError::Walk { path, source: err },
    }
}

/// The path `rel` names under the stage root `staging`, refused unless every write through it
/// stays inside: only plain components (no absolute path, no `..`), and no symlink on the way.
fn dest_in(staging: &Path, rel: &Path) -> Result<PathBuf, StageError> {
    let mut dest = staging.to_path_buf();
    for c in rel.components() {
        match c {
            Component::Normal(part) => {
                if fs::symlink_metadata(&dest).is_ok_and(|m| m.file_type().is_symlink()) {
                    return Err(StageError::ThroughSymlink { path: rel.to_path_buf() });
                }
                dest.push(part);
            }
            Component::CurDir => {}
            _ => return Err(StageError::OutsideStageRoot { path: rel.to_path_buf() }),
        }
    }
    if dest == staging {
        return Err(StageError::ReplacesStageRoot);
    }
    if fs::symlink_metadata(&dest).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(StageError::ThroughSymlink { path: rel.to_path_buf() });
    }
    Ok(dest)
}

/// Copy a file (its content, following symlinks, keeping the executable bit) or a folder into
/// the stage root `staging` at `dest_rel`.
fn copy_into(
    src: &Path,
    staging: &Path,
    dest_rel: &Path,
    written: &mut BTreeMap<PathBuf, String>,
    rule: &str,
) -> Result<(), StageError> {
    let meta = fs::metadata(src).map_err(|source| match fs::symlink_metadata(src) {
        Ok(_) if source.kind() == std::io::ErrorKind::NotFound => {
            StageError::DanglingSymlink { path: src.to_path_buf() }
        }
        _ => StageError::Read { path: src.to_path_buf(), source },
    })?;
    let dest = dest_in(staging, dest_rel)?;
    if meta.is_dir() {
        fs::create_dir_all(&dest).map_err(|source| StageError::Create { path: dest.clone(), source })?;
        for e in walk(src, true) {
            let e = e?;
            let rel = e.path().strip_prefix(src).map_err(|_| StageError::OutsideFolder {
                path: e.path().to_path_buf(),
                folder: src.to_path_buf(),
            })?;
            if e.file_type().is_dir() {
                let d = dest_in(staging, &dest_rel.join(rel))?;
                fs::create_dir_all(&d).map_err(|source| StageError::Create { path: d.clone(), source })?;
            } else {
                copy_into(e.path(), staging, &dest_rel.join(rel), written, rule)?;
            }
        }
        return Ok(());
    }
    if !meta.is_file() {
        // Opening a FIFO would wait for a writer forever; a socket or device has no content.
        return Err(StageError::NotFileOrFolder {
            path: src.to_path_buf(),
            kind: kind_of(&meta.file_type()),
        });
    }
    if let Some(previous) = written.insert(dest_rel.to_path_buf(), rule.to_string()) {
        return Err(StageError::StagedTwice {
            path: dest_rel.to_path_buf(),
            previous,
            rule: rule.to_string(),
        });
    }
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)
            .map_err(|source| StageError::Create { path: parent.to_path_buf(), source })?;
    }
    if let Ok(there) = fs::metadata(&dest) {
        if (there.dev(), there.ino()) == (meta.dev(), meta.ino()) {
            return Err(StageError::OntoItself { path: src.to_path_buf() });
        }
    }
    fs::copy(src, &dest).map_err(|source| StageError::Copy {
        from: src.to_path_buf(),
        to: dest_rel.to_path_buf(),
        source,
    })?;
    let mode = if meta.permissions().mode() & 0o111 != 0 { 0o755 } else { 0o644 };
    fs::set_permissions(&dest, fs::Permissions::from_mode(mode))
        .map_err(|source| StageError::SetMode { path: dest.clone(), source })
}

/// What a file that is neither a regular file nor a folder is, in words.
pub fn kind_of(ft: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_symlink() {
        "a symlink"
    } else {
        "of an unknown file type"
    }
}

raw_struct! {
    /// `stage:` the tree the image will contain.
    #[derive(Debug, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct RawStage {
        /// The stage root (the step's one output).
        #[schemars(with = "String")]
        pub into: Spanned<String> => "a path (the stage root written)",
        /// Copy rules: `from` a path or glob of the project, `to` a path in the stage root. A `to`
        /// ending in `/` is a folder receiving every match; otherwise it renames exactly one file.
        pub copy: Option<Vec<RawCopy>> => "a list of copy rules (`{ from: PATH, to: PATH }`)",
        /// ELF files whose whole shared-library closure is staged (each library under its soname
        /// in `lib_dir`, the interpreter at its path).
        #[schemars(with = "Option<Vec<String>>")]
        pub libs_for: Option<Vec<Spanned<String>>> => "a list of paths",
        /// Where libraries go in the stage root (default `lib/x86_64-linux-gnu`).
        #[schemars(with = "Option<String>")]
        pub lib_dir: Option<Spanned<String>> => "a path in the stage root",
        /// Project folders searched for libraries first, as LD_LIBRARY_PATH would be.
        #[schemars(with = "Option<Vec<String>>")]
        pub search: Option<Vec<Spanned<String>>> => "a list of paths",
    }
}

raw_struct! {
    #[derive(Debug, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct RawCopy {
        #[schemars(with = "String")]
        pub from: Spanned<String> => "a path or glob of the project",
        #[schemars(with = "String")]
        pub to: Spanned<String> => "a path in the stage root",
    }
}

/// Validate a `stage:` step. Returns the spec, its inputs (what `copy` and `libs_for` name)
/// and its output.
pub(crate) fn validate(
    v: &mut Validator,
    n: &str,
    st: &RawStage,
    unset: &mut Vec<(String, Span)>,
) -> Option<(StageSpec, Vec<PathSpec>, PathSpec)> {
    let mut ok = true;
    let into = v.output(&st.into, n, unset)?;
    let mut inputs = Vec::new();
    let mut copy = Vec::new();
    let mut at = crate::diag::Positions::new(v.src);
    for (i, rule) in st.copy.iter().flatten().enumerate() {
        let (to, to_whole) = v.expand_checked(&rule.to, unset);
        at.mark(v.src, &format!("copy{i}"), rule.from.referenced.offset);
        if let Some(p) = v.input(&rule.from, n, unset) {
            inputs.push(p.clone());
            copy.push(CopyRule { from: p.path, to: to.clone() });
        }
        if to_whole && to.split('/').any(|c| c == "..") {
            ok = false;
            v.errors.push(ConfigError::Invalid {
                message: format!("`to` of a copy rule of stage `{n}` climbs out of the stage root"),
                src: v.src.named(),
                span: rule.to.referenced.into(),
                label: "`..` leaves the stage root".into(),
                help: Some("name a path inside the stage root, e.g. `lib/x86_64-linux-gnu/`".into()),
            });
        }
    }
    let mut libs_for = Vec::new();
    for e in st.libs_for.iter().flatten() {
        at.mark(v.src, "libs_for", e.referenced.offset);
        if let Some(p) = v.input(e, n, unset) {
            libs_for.push(p.path.clone());
            inputs.push(p);
        }
    }
    let search = st.search.iter().flatten().map(|s| v.expand(s, unset)).collect();
    let lib_dir =
        st.lib_dir.as_ref().map_or_else(|| "lib/x86_64-linux-gnu".to_string(), |l| v.expand(l, unset));
    let spec = StageSpec { copy, libs_for, lib_dir, search, at };
    ok.then_some((spec, inputs, into))
}

/// `stage N rule(s) [+ the libraries of ...] -> into`: the step in one line.
pub fn summary(st: &StageSpec, into: &str) -> String {
    let libs = if st.libs_for.is_empty() {
        String::new()
    } else {
        format!(" + the libraries of {}", st.libs_for.join(", "))
    };
    format!("stage {} rule(s){libs} -> {into}", st.copy.len())
}

/// A stage's key: its rules (its inputs are what they copy; the libraries `libs_for` resolves are
/// discovered inputs, keyed at the second level).
pub fn key(st: &StageSpec) -> super::KindKey {
    let rules = serde_json::json!({
        "copy": st.copy, "libs_for": st.libs_for, "lib_dir": st.lib_dir, "search": st.search,
    });
    super::KindKey { kind: "stage", command: rules.to_string(), tools: BTreeMap::new(), keys_deps: true }
}

impl super::Kind for StageSpec {
    fn summary(&self, into: &str) -> String {
        summary(self, into)
    }
    fn key(&self, _env: &super::StepEnv) -> Result<super::KindKey, super::KeyError> {
        Ok(key(self))
    }
    fn execute(&self, env: &super::StepEnv) -> Result<super::Executed, super::KindFailed> {
        execute(self, env)
    }
    /// The libraries `libs_for` resolves.
    fn discovers(&self) -> bool {
        !self.libs_for.is_empty()
    }
    fn search_dirs(&self) -> Vec<String> {
        self.search.clone()
    }
}

/// Fill the stage root `env.into`; the libraries found are the step's discovered inputs.
pub fn execute(st: &StageSpec, env: &super::StepEnv) -> Result<super::Executed, super::KindFailed> {
    let command = format!("stage {}", env.into);
    let staged =
        run(env.root, st, &env.root.join(env.into)).map_err(|e| super::KindFailed::new(&command, e))?;
    Ok(super::Executed {
        command,
        warnings: staged.warnings,
        discovered: staged.discovered,
        searched: staged.searched,
    })
}
