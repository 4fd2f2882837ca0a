//! The `manifest` step: the ops-compatible Nanos configuration (JSON) of a program, written
//! canonically (same inputs, same bytes) and checked against the stage root it describes.
//!
//! The JSON keys are ops's: Program, Args, Env, Dirs, Files, MapDirs, Mounts,
//! ManifestPassthrough, RunConfig {CPUs, Memory, GPUs}, KlibDir, Klibs, RebootOnExit,
//! BaseVolumeSz. `schema/nanos-manifest.schema.json` describes what is written.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::yaml::Spanned;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::diag::Span;
use crate::paths::{relative_to, PathSpec};
use crate::yaml::read::raw_struct;
use crate::yaml::Validator;

/// Why a manifest could not be written, or a machine size not read from one.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ManifestError {
    /// Any of the others, after the gevulot.yaml line of the field it is about.
    #[error("{at}{source}")]
    #[diagnostic(code(gvbuild::manifest))]
    At { at: String, source: Box<ManifestError> },
    #[error("the image's manifest gives RunConfig.Memory `{memory}`, which is not a size of 1 MiB or more")]
    RunConfigMemory { memory: String },
    #[error("cannot read {from}: {source}")]
    ReadFrom { from: String, source: io::Error },
    #[error("{from} is not a manifest gvbuild understands: {source}")]
    ParseFrom { from: String, source: serde_json::Error },
    #[error("{from} has no workspace mount: add \"Mounts\": {{\"%1\": \"/workspace\"}}")]
    NoWorkspace { from: String },
    #[error(
        "{from} loads the GPU klib with a read-only root filesystem; the klib creates /dev/nvidiactl at boot, which that prevents"
    )]
    GpuReadOnly { from: String },
    #[error("a manifest step with neither fields nor `from`")]
    NoContent,
    /// What is wrong against the stage root: one line each, after the gevulot.yaml line of the
    /// field it is about.
    #[error("{}", .0.join("\n"))]
    Problems(Vec<String>),
    #[error("cannot create {}: {source}", path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot write {into}: {source}")]
    Write { into: String, source: io::Error },
}

impl ManifestError {
    /// This error after `at`, the gevulot.yaml line of the field it is about.
    fn at(self, at: String) -> ManifestError {
        ManifestError::At { at, source: Box::new(self) }
    }
}

/// The JSON written for ops (and, later, read by the native image builder). Field order is the
/// serialization order: alphabetical, so the bytes are canonical.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(
    title = "Nanos manifest (ops configuration)",
    description = "What gvbuild's `manifest` step writes."
)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(rename = "Args", default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(rename = "BaseVolumeSz", default, skip_serializing_if = "Option::is_none")]
    pub base_volume_sz: Option<String>,
    #[serde(rename = "Dirs", default, skip_serializing_if = "Vec::is_empty")]
    pub dirs: Vec<String>,
    #[serde(rename = "Env", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(rename = "Files", default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    #[serde(rename = "KlibDir", default, skip_serializing_if = "Option::is_none")]
    pub klib_dir: Option<String>,
    #[serde(rename = "Klibs", default, skip_serializing_if = "Vec::is_empty")]
    pub klibs: Vec<String>,
    #[serde(
        rename = "ManifestPassthrough",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "string_values"
    )]
    pub passthrough: BTreeMap<String, String>,
    #[serde(rename = "MapDirs", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub map_dirs: BTreeMap<String, String>,
    #[serde(rename = "Mounts", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mounts: BTreeMap<String, String>,
    #[serde(rename = "Program")]
    pub program: String,
    #[serde(rename = "RebootOnExit", default, skip_serializing_if = "std::ops::Not::not")]
    pub reboot_on_exit: bool,
    #[serde(rename = "RunConfig", default, skip_serializing_if = "RunConfig::is_empty")]
    pub run_config: RunConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    #[serde(rename = "CPUs", default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    #[serde(rename = "GPUs", default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    #[serde(rename = "Memory", default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

impl RunConfig {
    fn is_empty(&self) -> bool {
        self.cpus.is_none() && self.gpus.is_none() && self.memory.is_none()
    }

    /// The RunConfig of the manifest JSON at `path`, or `None` when it cannot be read as one.
    pub fn of_manifest(path: &Path) -> Option<RunConfig> {
        let bytes = std::fs::read(path).ok()?;
        serde_json::from_slice::<Manifest>(&bytes).ok().map(|m| m.run_config)
    }
}

/// A VM's CPUs and memory (MiB) as `gvbuild run` and `task:` steps resolve them: what the user
/// gave (`cpus`, `memory_mb`), else the image's manifest's RunConfig, else the Gevulot node's
/// defaults ([`crate::vm::qemu::DEFAULT_CPUS`], [`crate::vm::qemu::DEFAULT_MEMORY_MB`]). `Err`
/// for a RunConfig memory that is not a size of 1 MiB or more.
pub fn machine_size(
    cpus: Option<u32>,
    memory_mb: Option<u64>,
    run_config: Option<&RunConfig>,
) -> Result<(u32, u64), ManifestError> {
    use crate::vm::qemu;
    let cpus = cpus.or(run_config.and_then(|c| c.cpus)).unwrap_or(qemu::DEFAULT_CPUS);
    let memory_mb = match (memory_mb, run_config.and_then(|c| c.memory.as_deref())) {
        (Some(mb), _) => mb,
        (None, Some(m)) => {
            qemu::memory_mb(m).ok_or_else(|| ManifestError::RunConfigMemory { memory: m.to_string() })?
        }
        (None, None) => qemu::DEFAULT_MEMORY_MB,
    };
    Ok((cpus.max(1), memory_mb))
}

/// ManifestPassthrough's values, which gvbuild takes as strings only. ops takes any JSON there:
/// it writes an object as a tuple and an array as a vector, and fails on a number, a boolean or
/// null (ops's fs/tfs.go, `encodeValue`); the error says so.
fn string_values<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    use serde::de::Error;
    let raw: BTreeMap<String, serde_json::Value> = BTreeMap::deserialize(d)?;
    let mut out = BTreeMap::new();
    for (k, v) in raw {
        let what = match v {
            serde_json::Value::String(s) => {
                out.insert(k, s);
                continue;
            }
            serde_json::Value::Object(_) => "an object, which ops writes as a nested tuple",
            serde_json::Value::Array(_) => "an array, which ops writes as a vector",
            _ => "a number, boolean or null, on which ops's image writer fails",
        };
        return Err(D::Error::custom(format!(
            "ManifestPassthrough `{k}` is {what}; gvbuild takes only string values there: write it as a string"
        )));
    }
    Ok(out)
}

/// The klib that makes NVIDIA GPUs usable under Nanos.
pub const GPU_KLIB: &str = "gpu_nvidia";

impl Manifest {
    /// Canonical bytes: keys in a fixed order, two-space indent, a final newline.
    pub fn to_canonical(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// Memory as ops takes it: a number with an optional unit k, m, g (either case), e.g. `2g`.
pub fn valid_memory(s: &str) -> bool {
    let digits = s.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G']);
    !digits.is_empty() && s.len() - digits.len() <= 1 && digits.bytes().all(|b| b.is_ascii_digit())
}

/// What is wrong with a manifest against its stage root, as (field, message) pairs.
/// `root` and `klib_dir` are (path, name shown in messages).
pub fn check_root(
    m: &Manifest,
    root: (&Path, &str),
    klib_dir: Option<(&Path, &str)>,
) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    let (root, name) = root;
    let program = root.join(m.program.trim_start_matches('/'));
    match std::fs::metadata(&program) {
        Ok(meta) if meta.is_file() => {}
        _ => {
            problems.push(("program", format!("the program `{}` is not in the stage root {name}", m.program)))
        }
    }
    for d in &m.dirs {
        if !root.join(d.trim_start_matches('/')).is_dir() {
            problems.push(("dirs", format!("`{d}` (in dirs) is not a folder in the stage root {name}")));
        }
    }
    for f in &m.files {
        if !root.join(f.trim_start_matches('/')).is_file() {
            problems.push(("files", format!("`{f}` (in files) is not a file in the stage root {name}")));
        }
    }
    if let Some((dir, dir_name)) = klib_dir {
        for k in &m.klibs {
            if !dir.join(k).is_file() {
                problems.push(("klibs", format!("klib `{k}` is not in the klib folder {dir_name}")));
            }
        }
    }
    problems
}

/// What ops would read differently from the stage root this manifest describes (`root` and
/// `into` project-relative): an absolute Program (ops reads it from the build machine's `/`),
/// and a MapDirs folder outside the stage root once resolved against the manifest's own folder,
/// as ops resolves MapDirs (ops's cmd/flags_config.go).
fn ops_meaning(m: &Manifest, root: &str, into: &str) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    if m.program.starts_with('/') {
        problems.push((
            "program",
            format!(
                "the program `{}` is absolute: ops would read it from the build machine's own `/`, not from the stage root {root}; write it relative to the stage root",
                m.program
            ),
        ));
    }
    let into_dir = Path::new(into).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    let root_prefix = format!("{}/", root.trim_end_matches('/'));
    for host in m.map_dirs.keys() {
        let joined = if into_dir.is_empty() { host.clone() } else { format!("{into_dir}/{host}") };
        let dir = crate::paths::normalize_rel(&joined)
            .map(|c| c.rsplit_once('/').map(|(d, _)| format!("{d}/")).unwrap_or_default());
        if host.starts_with('/') || !dir.is_some_and(|d| d.starts_with(&root_prefix)) {
            problems.push((
                "root",
                format!(
                    "MapDirs `{host}` is read by ops from the manifest's folder {into_dir}, which gives `{joined}`, outside the stage root {root}; name it from {into_dir}, inside the stage root"
                ),
            ));
        }
    }
    problems
}

/// Write the manifest of step `m` to `into` (project-relative), after checking it against the
/// stage root. `Err` says what is wrong, pointing into gevulot.yaml.
pub fn write(root: &Path, m: &ManifestSpec, into: &str) -> Result<(), ManifestError> {
    let at = |field: &str| m.at.prefix(field);
    let manifest = match (&m.manifest, &m.from) {
        (Some(json), _) => (**json).clone(),
        (None, Some(from)) => read_from(root, from).map_err(|e| e.at(at("from")))?,
        (None, None) => return Err(ManifestError::NoContent),
    };
    let klib_dir = m.klib_dir.as_ref().map(|k| (root.join(k), k.as_str()));
    let mut problems = ops_meaning(&manifest, &m.root, into);
    problems.extend(check_root(
        &manifest,
        (&root.join(&m.root), &m.root),
        klib_dir.as_ref().map(|(p, n)| (p.as_path(), *n)),
    ));
    if !problems.is_empty() {
        let lines: Vec<String> = problems.iter().map(|(field, msg)| format!("{}{msg}", at(field))).collect();
        return Err(ManifestError::Problems(lines));
    }
    let dest = root.join(into);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|source| ManifestError::Create { path: parent.to_path_buf(), source })?;
    }
    crate::fsutil::write_atomic(&dest, manifest.to_canonical().as_bytes())
        .map_err(|source| ManifestError::Write { into: into.to_string(), source })
}

/// The hand-written manifest `from` (project-relative), refused without a workspace mount or
/// with the GPU klib on a read-only root.
fn read_from(root: &Path, from: &str) -> Result<Manifest, ManifestError> {
    let text = std::fs::read_to_string(root.join(from))
        .map_err(|source| ManifestError::ReadFrom { from: from.to_string(), source })?;
    let parsed: Manifest = serde_json::from_str(&text)
        .map_err(|source| ManifestError::ParseFrom { from: from.to_string(), source })?;
    if !parsed.mounts.values().any(|p| p == "/workspace") {
        return Err(ManifestError::NoWorkspace { from: from.to_string() });
    }
    let gpu = parsed.klibs.iter().any(|k| k == GPU_KLIB);
    if gpu && parsed.passthrough.get("readonly_rootfs").is_some_and(|v| v == "true") {
        return Err(ManifestError::GpuReadOnly { from: from.to_string() });
    }
    Ok(parsed)
}

/// `manifest:` after validation: the JSON to write (or the file to canonicalise), and where it
/// will be checked against the stage root.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestSpec {
    /// In the parse cache as its JSON text: its serde form skips empty fields, which postcard
    /// cannot read back.
    #[serde(with = "manifest_as_json")]
    pub manifest: Option<Box<Manifest>>,
    /// A hand-written manifest to validate and canonicalise instead.
    pub from: Option<String>,
    pub root: String,
    pub klib_dir: Option<String>,
    /// Where each field is in the build file, for errors found while building.
    pub at: crate::diag::Positions,
}

/// Serde for [`ManifestSpec::manifest`]: the manifest as its JSON text.
mod manifest_as_json {
    use serde::de::Error as _;
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::steps::manifest::Manifest;

    pub fn serialize<S: Serializer>(m: &Option<Box<Manifest>>, s: S) -> Result<S::Ok, S::Error> {
        let text = m.as_ref().map(serde_json::to_string).transpose().map_err(S::Error::custom)?;
        text.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<Manifest>>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| serde_json::from_str(&t)).transpose().map_err(D::Error::custom)
    }
}

raw_struct! {
    /// `manifest:` the program's Nanos configuration, checked against the stage root.
    #[derive(Debug, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct RawManifest {
        /// The program to run, a path inside the stage root (e.g. `prover`).
        #[schemars(with = "Option<String>")]
        pub program: Option<Spanned<String>> => "a path in the stage root",
        /// The arguments after argv[0]: ops and the native builder put the program (as written) first.
        #[schemars(with = "Option<Vec<String>>")]
        pub args: Option<Vec<Spanned<String>>> => "a list of arguments",
        /// Environment variables of the program.
        #[schemars(with = "Option<std::collections::BTreeMap<String, String>>")]
        pub env: Option<IndexMap<Spanned<String>, Spanned<String>>> => "a map of variable names to values",
        /// Folders of the stage root to put in the image (e.g. `[lib, nvidia]`).
        #[schemars(with = "Option<Vec<String>>")]
        pub dirs: Option<Vec<Spanned<String>>> => "a list of folders of the stage root",
        /// Single files of the stage root to put in the image.
        #[schemars(with = "Option<Vec<String>>")]
        pub files: Option<Vec<Spanned<String>>> => "a list of files of the stage root",
        /// ops's MapDirs: host folder -> image folder.
        #[schemars(with = "Option<std::collections::BTreeMap<String, String>>")]
        pub map_dirs: Option<IndexMap<Spanned<String>, Spanned<String>>> => "a map of host folders to image folders",
        /// The Gevulot workspace: `{ mount: "%1", path: /workspace }`. Required.
        pub workspace: Option<RawWorkspace> => "a map `{ mount: \"%1\", path: /workspace }`",
        /// An NVIDIA GPU: adds the `gpu_nvidia` klib (from `klib_dir`) and one GPU to RunConfig.
        #[schemars(with = "Option<bool>")]
        pub gpu: Option<Spanned<bool>> => "`true` or `false`",
        /// RunConfig.CPUs.
        #[schemars(with = "Option<u32>")]
        pub cpus: Option<Spanned<u32>> => "a whole number",
        /// RunConfig.Memory, e.g. `2g`.
        #[schemars(with = "Option<String>")]
        pub memory: Option<Spanned<String>> => "a size such as `2g`",
        /// The root filesystem read-only (default: true for CPU programs; a GPU program cannot have
        /// it, since the GPU klib creates /dev/nvidiactl at boot).
        #[schemars(with = "Option<bool>")]
        pub readonly_rootfs: Option<Spanned<bool>> => "`true` or `false`",
        /// Reboot (exit the VM) when the program exits.
        #[schemars(with = "Option<bool>")]
        pub reboot_on_exit: Option<Spanned<bool>> => "`true` or `false`",
        /// More klibs to load, by name.
        #[schemars(with = "Option<Vec<String>>")]
        pub klibs: Option<Vec<Spanned<String>>> => "a list of klib names",
        /// The project folder holding the klibs (e.g. `build/assets/klibs`).
        #[schemars(with = "Option<String>")]
        pub klib_dir: Option<Spanned<String>> => "a path",
        /// More ManifestPassthrough keys.
        #[schemars(with = "Option<std::collections::BTreeMap<String, String>>")]
        pub passthrough: Option<IndexMap<Spanned<String>, Spanned<String>>> => "a map of manifest keys to values",
        /// BaseVolumeSz, e.g. `500m`.
        #[schemars(with = "Option<String>")]
        pub base_volume_size: Option<Spanned<String>> => "a size such as `500m`",
        /// Validate and canonicalise a hand-written manifest instead of writing one from fields.
        #[schemars(with = "Option<String>")]
        pub from: Option<Spanned<String>> => "a path (a hand-written manifest)",
        /// The stage root the manifest describes (checked: program, dirs, files).
        #[schemars(with = "String")]
        pub root: Spanned<String> => "a path (the stage root)",
        /// The JSON file written (ops reads it; it is not inside the image).
        #[schemars(with = "String")]
        pub into: Spanned<String> => "a path (the manifest JSON written)",
    }
}

raw_struct! {
    #[derive(Debug, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct RawWorkspace {
        /// The volume label, e.g. `%1`.
        #[schemars(with = "String")]
        pub mount: Spanned<String> => "a volume label such as `%1`",
        /// Where it is mounted, e.g. `/workspace`.
        #[schemars(with = "String")]
        pub path: Spanned<String> => "a path in the image such as `/workspace`",
    }
}

/// Validate a `manifest:` step. Returns the step, its inputs (stage root, klib folder,
/// `from` file) and its output. Errors are reported in file order.
pub(crate) fn validate(
    v: &mut Validator,
    n: &str,
    m: &RawManifest,
    unset: &mut Vec<(String, Span)>,
) -> Option<(ManifestSpec, Vec<PathSpec>, PathSpec)> {
    let root = v.input(&m.root, n, unset)?;
    let into = v.output(&m.into, n, unset)?;
    let mut inputs = vec![root.clone()];
    let mut at = crate::diag::Positions::new(v.src);
    locate(&mut at, v, "root", &m.root.referenced);
    let step = match &m.from {
        Some(from) => validate_from(v, n, m, from, (root, at), &mut inputs, unset)?,
        None => {
            let (manifest, klib_dir) = validate_fields(v, n, m, &root, &mut inputs, &mut at, unset)?;
            ManifestSpec { manifest: Some(Box::new(manifest)), from: None, root: root.path, klib_dir, at }
        }
    };
    Some((step, inputs, into))
}

/// Record where `field` is in the build file, for errors found while building.
fn locate(at: &mut crate::diag::Positions, v: &Validator, field: &str, loc: &crate::diag::Span) {
    at.mark(v.src, field, loc.offset);
}

/// A manifest step with `from:`: the hand-written file is the whole manifest, so no content
/// field may stand beside it. `root` is the stage root and where fields are; the file and the
/// klib folder join `inputs`.
fn validate_from(
    v: &mut Validator,
    n: &str,
    m: &RawManifest,
    from: &Spanned<String>,
    (root, mut at): (PathSpec, crate::diag::Positions),
    inputs: &mut Vec<PathSpec>,
    unset: &mut Vec<(String, Span)>,
) -> Option<ManifestSpec> {
    let content = [
        ("program", m.program.as_ref().map(|s| &s.referenced)),
        ("args", m.args.as_ref().and_then(|v| v.first()).map(|s| &s.referenced)),
        ("env", m.env.as_ref().and_then(|e| e.keys().next()).map(|s| &s.referenced)),
        ("dirs", m.dirs.as_ref().and_then(|v| v.first()).map(|s| &s.referenced)),
        ("files", m.files.as_ref().and_then(|v| v.first()).map(|s| &s.referenced)),
        ("workspace", m.workspace.as_ref().map(|w| &w.mount.referenced)),
        ("gpu", m.gpu.as_ref().map(|s| &s.referenced)),
        ("memory", m.memory.as_ref().map(|s| &s.referenced)),
    ];
    let mut ok = true;
    for (field, loc) in content {
        if let Some(loc) = loc {
            ok = false;
            v.invalid(
                format!("`{field}` next to `from` in manifest `{n}`"),
                loc,
                "from the file, or from here?",
                "`from` takes the whole manifest from the file: put this setting there",
            );
        }
    }
    let from_spec = v.input(from, n, unset)?;
    locate(&mut at, v, "from", &from.referenced);
    inputs.push(from_spec.clone());
    let klib_dir = m.klib_dir.as_ref().map(|k| v.expand(k, unset));
    if let (Some(k), Some(loc)) = (&klib_dir, m.klib_dir.as_ref()) {
        if let Some(p) = v.input_path(k, loc.referenced, n) {
            inputs.push(p);
        }
    }
    let step = ManifestSpec { manifest: None, from: Some(from_spec.path), root: root.path, klib_dir, at };
    ok.then_some(step)
}

/// A manifest step written from its fields: the manifest, and its klib folder (which joins
/// `inputs`). Every field is checked before `None` is returned, except where a missing one
/// (program, workspace, klib folder) leaves nothing to check against.
fn validate_fields(
    v: &mut Validator,
    n: &str,
    m: &RawManifest,
    root: &PathSpec,
    inputs: &mut Vec<PathSpec>,
    at: &mut crate::diag::Positions,
    unset: &mut Vec<(String, Span)>,
) -> Option<(Manifest, Option<String>)> {
    let Some(program) = &m.program else {
        v.invalid(
            format!("manifest `{n}` names no program"),
            &m.root.referenced,
            "which program?",
            "add `program:`, the program's path in the stage root",
        );
        return None;
    };
    locate(at, v, "program", &program.referenced);
    let gpu = m.gpu.as_ref().is_some_and(|g| g.value);
    let ok = check_machine(v, n, m, gpu);
    let Some(ws) = &m.workspace else {
        v.invalid(format!("manifest `{n}` has no workspace mount"), &m.root.referenced, "no `workspace:` in this manifest", "a Gevulot program reads its tasks from the workspace: add `workspace: { mount: \"%1\", path: /workspace }`");
        return None;
    };
    let klibs = klibs(v, m, gpu, at, unset);
    let klib_dir = klib_dir(v, n, m, !klibs.is_empty(), inputs, unset)?;
    for (field, list) in [("dirs", &m.dirs), ("files", &m.files)] {
        if let Some(first) = list.as_ref().and_then(|v| v.first()) {
            locate(at, v, field, &first.referenced);
        }
    }
    let mut passthrough: BTreeMap<String, String> =
        m.passthrough.iter().flatten().map(|(k, x)| (k.value.clone(), v.expand(x, unset))).collect();
    let readonly = m.readonly_rootfs.as_ref().map_or(!gpu, |r| r.value);
    if readonly {
        passthrough.insert("readonly_rootfs".into(), "true".into());
    }
    let program_s = v.expand(program, unset);
    let manifest = Manifest {
        args: m.args.iter().flatten().map(|a| v.expand(a, unset)).collect(),
        base_volume_sz: m.base_volume_size.as_ref().map(|b| v.expand(b, unset)),
        dirs: m.dirs.iter().flatten().map(|d| v.expand(d, unset)).collect(),
        env: m.env.iter().flatten().map(|(k, x)| (k.value.clone(), v.expand(x, unset))).collect(),
        files: m.files.iter().flatten().map(|f| v.expand(f, unset)).collect(),
        // ops runs in the stage root, so the klib folder is named relative to it.
        klib_dir: klib_dir.as_ref().map(|k| relative_to(k, &root.path)),
        klibs,
        passthrough,
        map_dirs: m.map_dirs.iter().flatten().map(|(k, x)| (k.value.clone(), v.expand(x, unset))).collect(),
        mounts: [(v.expand(&ws.mount, unset), v.expand(&ws.path, unset))].into_iter().collect(),
        program: program_s,
        reboot_on_exit: m.reboot_on_exit.as_ref().is_some_and(|r| r.value),
        run_config: RunConfig {
            cpus: m.cpus.as_ref().map(|c| c.value),
            gpus: gpu.then_some(1),
            memory: m.memory.as_ref().map(|m| m.value.clone()),
        },
    };
    ok.then_some((manifest, klib_dir))
}

/// Whether the machine a manifest asks for can be: no read-only root with a GPU, a memory ops
/// understands. Reports what is wrong.
fn check_machine(v: &mut Validator, n: &str, m: &RawManifest, gpu: bool) -> bool {
    let mut ok = true;
    if let (true, Some(ro)) = (gpu, m.readonly_rootfs.as_ref().filter(|r| r.value)) {
        ok = false;
        v.invalid(format!("manifest `{n}` asks for a GPU and a read-only root filesystem"), &ro.referenced, "cannot be read-only with `gpu: true`", "the GPU klib creates /dev/nvidiactl at boot, which a read-only root prevents: remove `readonly_rootfs`");
    }
    if let Some(mem) = &m.memory {
        if !valid_memory(&mem.value) {
            ok = false;
            v.invalid(
                format!("`memory` of manifest `{n}` is not a size ops understands"),
                &mem.referenced,
                "not a size",
                "write a number with an optional k, m or g, e.g. `2g` or `512m`",
            );
        }
    }
    ok
}

/// The klibs to load: those listed, with the GPU klib first when `gpu` asks for it and they do
/// not list it.
fn klibs(
    v: &mut Validator,
    m: &RawManifest,
    gpu: bool,
    at: &mut crate::diag::Positions,
    unset: &mut Vec<(String, Span)>,
) -> Vec<String> {
    let mut klibs: Vec<String> = m.klibs.iter().flatten().map(|k| v.expand(k, unset)).collect();
    if gpu && !klibs.iter().any(|k| k == GPU_KLIB) {
        klibs.insert(0, GPU_KLIB.to_string());
    }
    if let Some(k) = m.klibs.as_ref().and_then(|v| v.first()) {
        locate(at, v, "klibs", &k.referenced);
    } else if let Some(g) = &m.gpu {
        locate(at, v, "klibs", &g.referenced);
    }
    klibs
}

/// The klib folder (an input), required when the manifest `loads_klibs`. `None` when it is
/// missing but needed (reported) or cannot be read as an input; `Some(None)` when there is none.
fn klib_dir(
    v: &mut Validator,
    n: &str,
    m: &RawManifest,
    loads_klibs: bool,
    inputs: &mut Vec<PathSpec>,
    unset: &mut Vec<(String, Span)>,
) -> Option<Option<String>> {
    match &m.klib_dir {
        Some(k) => {
            let spec = v.input(k, n, unset)?;
            inputs.push(spec.clone());
            Some(Some(spec.path))
        }
        None if loads_klibs => {
            let loc = m.gpu.as_ref().map(|g| &g.referenced).unwrap_or(&m.root.referenced);
            v.invalid(
                format!("manifest `{n}` loads klibs but has no `klib_dir`"),
                loc,
                "klibs from where?",
                "add `klib_dir:`, the project folder holding the klibs (the GPU assets' klib folder)",
            );
            None
        }
        None => Some(None),
    }
}

/// A manifest's key: its JSON (or the `from` file it canonicalises, an input), and, written
/// from its fields, what it checks in the stage root ([`presence`]) instead of the stage
/// root's contents, so that it stays fresh when a staged file's content changes.
pub fn key(m: &ManifestSpec) -> super::KindKey {
    let command = match (&m.manifest, &m.from) {
        (Some(json), _) => json.to_canonical(),
        (None, from) => format!("from {}", from.as_deref().unwrap_or("")),
    };
    super::KindKey { kind: "manifest", command, tools: BTreeMap::new(), keys_deps: m.manifest.is_none() }
}

impl super::Kind for ManifestSpec {
    fn summary(&self, into: &str) -> String {
        format!("manifest -> {into}")
    }
    fn key(&self, _env: &super::StepEnv) -> Result<super::KindKey, super::KeyError> {
        Ok(key(self))
    }
    /// Written from its fields: what it checks in the stage root ([`presence`]); else the
    /// `from` file.
    fn key_inputs(
        &self,
        env: &super::StepEnv,
    ) -> Result<BTreeMap<String, crate::fingerprint::FileId>, super::KeyError> {
        match self.manifest {
            Some(_) => Ok(presence(env.root, self)),
            None => Ok(crate::fingerprint::inputs::resolve(env.root, env.inputs, env.stat)?),
        }
    }
    fn execute(&self, env: &super::StepEnv) -> Result<super::Executed, super::KindFailed> {
        execute(self, env)
    }
}

/// Write the manifest to `env.into`.
pub fn execute(m: &ManifestSpec, env: &super::StepEnv) -> Result<super::Executed, super::KindFailed> {
    let command = format!("manifest {}", env.into);
    write(env.root, m, env.into).map_err(|e| super::KindFailed::new(&command, e))?;
    Ok(super::Executed { command, ..Default::default() })
}

/// What a manifest checks in the stage root, as keyable facts: each checked path and whether
/// it is a file, a folder or absent.
pub fn presence(root: &Path, m: &ManifestSpec) -> BTreeMap<String, crate::fingerprint::FileId> {
    let mut out = BTreeMap::new();
    let Some(json) = &m.manifest else { return out };
    let mut check = |path: String| {
        let what: &[u8] = match std::fs::metadata(root.join(&path)) {
            Ok(meta) if meta.is_dir() => b"folder",
            Ok(_) => b"file",
            Err(_) => b"absent",
        };
        let digest = *blake3::hash(what).as_bytes();
        out.insert(format!("{path} (exists?)"), crate::fingerprint::FileId { digest, exec: false, size: 0 });
    };
    let in_root = |p: &str| format!("{}/{}", m.root, p.trim_start_matches('/'));
    check(in_root(&json.program));
    for p in json.dirs.iter().chain(&json.files) {
        check(in_root(p));
    }
    if let Some(dir) = &m.klib_dir {
        for k in &json.klibs {
            check(format!("{dir}/{k}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_bytes_do_not_depend_on_insertion_order() {
        let mut a = Manifest { program: "prover".into(), ..Default::default() };
        a.env.insert("B".into(), "2".into());
        a.env.insert("A".into(), "1".into());
        let mut b = Manifest { program: "prover".into(), ..Default::default() };
        b.env.insert("A".into(), "1".into());
        b.env.insert("B".into(), "2".into());
        assert_eq!(a.to_canonical(), b.to_canonical());
        assert_eq!(
            a.to_canonical(),
            "{\n  \"Env\": {\n    \"A\": \"1\",\n    \"B\": \"2\"\n  },\n  \"Program\": \"prover\"\n}\n"
        );
    }

    #[test]
    fn memory_syntax() {
        for ok in ["2g", "512m", "1024", "4G"] {
            assert!(valid_memory(ok), "{ok}");
        }
        for bad in ["", "g", "2gb", "two", "1.5g", "-1"] {
            assert!(!valid_memory(bad), "{bad}");
        }
    }
}
