//! The `image` step: a bootable Nanos disk image of a stage root, from its manifest.
//!
//! Two builders share one spec. `native` ([`native`]) writes the disk image itself from the Nanos
//! release's kernel and boot loader: offline, and the same inputs give the same bytes. `ops`
//! ([`ops`]) runs `ops build`, which needs ops and, for an uncached Nanos version, the network.

pub mod native;
pub mod ops;

use std::collections::BTreeMap;
use std::path::Path;

use crate::yaml::Spanned;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Executed, KeyError, KindFailed, KindKey, StepEnv};
use crate::diag::Span;
use crate::fingerprint::FileId;
use crate::paths::PathSpec;
use crate::yaml::read::raw_struct;
use crate::yaml::Validator;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSpec {
    pub builder: Builder,
    /// The manifest JSON, project-relative.
    pub manifest: String,
    /// The stage root, project-relative.
    pub root: String,
    pub nanos_version: Option<String>,
    /// Where each field is in the build file, for errors found while building. Not part of
    /// the key (see [`ImageSpec::keyed`]).
    pub at: crate::diag::Positions,
}

impl ImageSpec {
    /// The spec as the step's key holds it: without source positions, so that editing other
    /// lines of gevulot.yaml does not rebuild the image.
    pub fn keyed(&self) -> ImageSpec {
        ImageSpec { at: crate::diag::Positions::default(), ..self.clone() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Builder {
    Native {
        /// The release folder (kernel.img, boot.img, klibs/), project-relative.
        release: String,
        /// The root filesystem's requested size in bytes.
        size: Option<u64>,
        extras: Vec<Extra>,
    },
    Ops {
        /// The program, project-relative (inside `root`).
        program: String,
        nanos_version: String,
    },
}

/// What ops adds to an image on its own, which the native builder adds only when asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Extra {
    /// USER, PWD, NANOS_VERSION, NANOS_ARCH and IMAGE_NAME in the environment.
    Env,
    /// /etc/passwd with a root user.
    Passwd,
    /// /etc/resolv.conf naming a public resolver.
    ResolvConf,
    /// /proc/sys/kernel/hostname.
    Hostname,
}

impl Extra {
    pub const NAMES: [&'static str; 4] = ["env", "passwd", "resolv_conf", "hostname"];

    pub fn parse(s: &str) -> Option<Extra> {
        Some(match s {
            "env" => Extra::Env,
            "passwd" => Extra::Passwd,
            "resolv_conf" => Extra::ResolvConf,
            "hostname" => Extra::Hostname,
            _ => return None,
        })
    }
}

/// The image's name (for ops's `-i` and IMAGE_NAME), from the output file name.
pub fn image_name(into: &str) -> String {
    let file =
        std::path::Path::new(into).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    file.strip_suffix(".img").unwrap_or(&file).to_string()
}

raw_struct! {
    /// `image:` the bootable Nanos image.
    #[derive(Debug, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct RawImage {
        /// `native` (gvbuild writes the disk image itself: offline and reproducible) or `ops`
        /// (runs `ops build`; ops must be installed).
        #[schemars(with = "String")]
        pub builder: Spanned<String> => "`native` or `ops`",
        /// The manifest JSON (a `manifest` step's `into`): the single source of the root tuple.
        #[schemars(with = "String")]
        pub manifest: Spanned<String> => "a path (the manifest JSON)",
        /// The stage root.
        #[schemars(with = "String")]
        pub root: Spanned<String> => "a path (the stage root)",
        /// The image file written.
        #[schemars(with = "String")]
        pub into: Spanned<String> => "a path (the image file written)",
        /// `native`: the folder of the Nanos release (a `fetch` of the release tarball), holding
        /// `kernel.img`, `boot.img` and `klibs/`.
        #[schemars(with = "Option<String>")]
        pub release: Option<Spanned<String>> => "a path (the Nanos release folder)",
        /// `native`: the root filesystem's size, e.g. `256m` (default: the contents plus 512 KiB).
        #[schemars(with = "Option<String>")]
        pub size: Option<Spanned<String>> => "a size such as `256m`",
        /// `native`: what ops adds on its own, opted into: `env` (USER, PWD, NANOS_VERSION,
        /// NANOS_ARCH, IMAGE_NAME), `passwd` (/etc/passwd), `resolv_conf` (/etc/resolv.conf),
        /// `hostname` (/proc/sys/kernel/hostname).
        #[schemars(with = "Option<Vec<String>>")]
        pub ops_extras: Option<Vec<Spanned<String>>> => "a list of ops extras",
        /// `ops`: the program, a path inside `root`.
        #[schemars(with = "Option<String>")]
        pub program: Option<Spanned<String>> => "a path (the program in the stage root)",
        /// `ops`: the Nanos version to build with, e.g. `0.1.51`; `native`: the version written to
        /// NANOS_VERSION with `ops_extras: [env]`.
        #[schemars(with = "Option<String>")]
        pub nanos_version: Option<Spanned<String>> => "a version such as `0.1.51`",
    }
}

/// Validate an `image:` step. Returns the spec, its inputs (manifest, stage root, and the
/// release or program) and its output. Errors are reported in file order.
pub(crate) fn validate(
    v: &mut Validator,
    n: &str,
    im: &RawImage,
    unset: &mut Vec<(String, Span)>,
) -> Option<(ImageSpec, Vec<PathSpec>, PathSpec)> {
    let mut ok = true;
    let manifest = v.input(&im.manifest, n, unset)?;
    let root = v.input(&im.root, n, unset)?;
    let mut inputs = vec![manifest.clone(), root.clone()];
    let nanos_version = im.nanos_version.as_ref().map(|s| v.expand(s, unset));
    let builder = match im.builder.value.as_str() {
        "native" => native_builder(v, n, im, &mut inputs, &mut ok, unset)?,
        "ops" => ops_builder(v, n, im, (&root, nanos_version.as_deref()), &mut inputs, &mut ok, unset)?,
        other => {
            v.invalid(
                format!("image `{n}` asks for builder `{other}`, which gvbuild does not have"),
                &im.builder.referenced,
                "unknown builder",
                "`builder: native` writes the image itself; `builder: ops` runs `ops build`",
            );
            return None;
        }
    };
    let into = v.output(&im.into, n, unset)?;
    let at = positions(v, im);
    let spec = ImageSpec { builder, manifest: manifest.path, root: root.path, nanos_version, at };
    ok.then_some((spec, inputs, into))
}

/// Report that image `n`'s builder needs `field` (e.g. `add `field: example``).
fn builder_needs(v: &mut Validator, n: &str, im: &RawImage, field: &str, builder: &str, example: &str) {
    v.invalid(
        format!("image `{n}` with `builder: {builder}` needs `{field}`"),
        &im.builder.referenced,
        &format!("`builder: {builder}` here"),
        &format!("add `{field}: {example}`"),
    );
}

/// Whether `field` (at `loc`, if given) is absent, as it must be unless the builder is
/// `builder`; reports it when it is there.
fn only_for(v: &mut Validator, n: &str, field: &str, loc: Option<&crate::diag::Span>, builder: &str) -> bool {
    let Some(loc) = loc else { return true };
    v.invalid(
        format!("`{field}` of image `{n}` applies only to `builder: {builder}`"),
        loc,
        "not used by this builder",
        &format!("remove `{field}`, or use `builder: {builder}`"),
    );
    false
}

/// `builder: native`: the release (an input), the root filesystem's size and the ops extras.
/// Clears `ok` for a field that is wrong; `None` when the release is missing or unreadable.
fn native_builder(
    v: &mut Validator,
    n: &str,
    im: &RawImage,
    inputs: &mut Vec<PathSpec>,
    ok: &mut bool,
    unset: &mut Vec<(String, Span)>,
) -> Option<Builder> {
    *ok &= only_for(v, n, "program", im.program.as_ref().map(|p| &p.referenced), "ops");
    let Some(rel) = &im.release else {
        builder_needs(v, n, im, "release", "native", "build/nanos  # a fetch of the Nanos release");
        return None;
    };
    let release = v.input(rel, n, unset)?;
    inputs.push(release.clone());
    let size = im.size.as_ref().and_then(|s| {
        let parse = |t: &str| crate::fsutil::parse_size(t).filter(|b| *b <= crate::disk::MAX_SIZE);
        let message = format!("`size` of image `{n}` is not a size up to 2 TiB");
        let help = "write a number with an optional k, m or g, e.g. `256m`";
        super::size_field(v, s, parse, (message, help), ok, unset)
    });
    let mut extras = Vec::new();
    for e in im.ops_extras.iter().flatten() {
        match Extra::parse(&e.value) {
            Some(x) => extras.push(x),
            None => {
                *ok = false;
                let names = Extra::NAMES.join(", ");
                v.invalid(
                    format!("image `{n}` asks for an unknown ops extra `{}`", e.value),
                    &e.referenced,
                    "unknown extra",
                    &format!("the extras are: {names}"),
                );
            }
        }
    }
    extras.sort();
    extras.dedup();
    Some(Builder::Native { release: release.path, size, extras })
}

/// `builder: ops`: the program (an input inside the stage `root`) and the Nanos version.
/// Clears `ok` for a field that is wrong; `None` when one is missing or unreadable.
fn ops_builder(
    v: &mut Validator,
    n: &str,
    im: &RawImage,
    (root, nanos_version): (&PathSpec, Option<&str>),
    inputs: &mut Vec<PathSpec>,
    ok: &mut bool,
    unset: &mut Vec<(String, Span)>,
) -> Option<Builder> {
    *ok &= only_for(v, n, "release", im.release.as_ref().map(|p| &p.referenced), "native");
    *ok &= only_for(v, n, "size", im.size.as_ref().map(|p| &p.referenced), "native");
    *ok &= only_for(
        v,
        n,
        "ops_extras",
        im.ops_extras.as_ref().and_then(|v| v.first()).map(|p| &p.referenced),
        "native",
    );
    let Some(program) = &im.program else {
        builder_needs(v, n, im, "program", "ops", &format!("{}/prover", root.path));
        return None;
    };
    let Some(version) = nanos_version else {
        builder_needs(v, n, im, "nanos_version", "ops", "0.1.51");
        return None;
    };
    let program_spec = v.input(program, n, unset)?;
    if !program_spec.path.starts_with(&format!("{}/", root.path)) {
        *ok = false;
        v.invalid(
            format!("the program of image `{n}` is not inside its root `{}`", root.path),
            &program.referenced,
            "outside the stage root",
            &format!("name the program inside the stage root, e.g. `{}/prover`", root.path),
        );
    }
    inputs.push(program_spec.clone());
    Some(Builder::Ops { program: program_spec.path, nanos_version: version.to_string() })
}

/// Where each field of the image is in the build file, for errors found while building.
fn positions(v: &Validator, im: &RawImage) -> crate::diag::Positions {
    let mut at = crate::diag::Positions::new(v.src);
    let fields = [
        ("manifest", Some(&im.manifest)),
        ("root", Some(&im.root)),
        ("release", im.release.as_ref()),
        ("size", im.size.as_ref()),
        ("into", Some(&im.into)),
    ];
    for (field, value) in fields {
        if let Some(x) = value {
            at.mark(v.src, field, x.referenced.offset);
        }
    }
    at
}

/// `image (native|ops build) ROOT + MANIFEST -> into`: the step in one line.
pub fn summary(im: &ImageSpec, into: &str) -> String {
    let how = match &im.builder {
        Builder::Native { .. } => "native",
        Builder::Ops { .. } => "ops build",
    };
    format!("image ({how}) {} + {} -> {into}", im.root, im.manifest)
}

/// An image's key: its spec without source positions and the native format's version (its
/// inputs are [`key_inputs`]), and for `builder: ops` the identity of ops (`ops version`).
pub fn key(im: &ImageSpec, env: &StepEnv) -> Result<KindKey, KeyError> {
    let mut tools = BTreeMap::new();
    if let Builder::Ops { .. } = im.builder {
        let id = env
            .tools
            .identify_with("ops", env.root, env.stat, &["version"])
            .map_err(|_| KeyError::OpsMissing)?;
        tools.insert("ops".to_string(), id);
    }
    Ok(KindKey {
        kind: "image",
        command: format!("{} format {}", serde_json::json!(im.keyed()), native::FORMAT),
        tools,
        keys_deps: true,
    })
}

impl super::Kind for ImageSpec {
    fn summary(&self, into: &str) -> String {
        summary(self, into)
    }
    fn key(&self, env: &StepEnv) -> Result<KindKey, KeyError> {
        key(self, env)
    }
    fn key_inputs(&self, env: &StepEnv) -> Result<BTreeMap<String, FileId>, KeyError> {
        key_inputs(self, env)
    }
    fn execute(&self, env: &StepEnv) -> Result<Executed, KindFailed> {
        execute(self, env)
    }
    fn image_run_config(&self, root: &Path) -> Option<super::manifest::RunConfig> {
        super::manifest::RunConfig::of_manifest(&root.join(&self.manifest))
    }
}

/// An image's input files, and for the native builder what the image holds beyond their
/// contents (see `native_image_facts`).
pub fn key_inputs(im: &ImageSpec, env: &StepEnv) -> Result<BTreeMap<String, FileId>, KeyError> {
    let mut ids = crate::fingerprint::inputs::resolve(env.root, env.inputs, env.stat)?;
    if let Builder::Native { .. } = im.builder {
        native_image_facts(im, env, &mut ids)?;
    }
    Ok(ids)
}

/// What a native image holds beyond its input files' contents: the stage root's folders (empty
/// ones too) and symlinks by their text, and each klib the manifest names, where the builder
/// looks for it (the klib folder first, then the release), present or not.
fn native_image_facts(
    im: &ImageSpec,
    env: &StepEnv,
    ids: &mut BTreeMap<String, FileId>,
) -> Result<(), KeyError> {
    let fact = |what: &[u8]| FileId { digest: *blake3::hash(what).as_bytes(), exec: false, size: 0 };
    let root = env.root.join(&im.root);
    let walker = walkdir::WalkDir::new(&root)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| !(e.file_type().is_dir() && crate::paths::is_skipped_dir(e.file_name())));
    for e in walker {
        let e = e.map_err(|source| KeyError::ImageRoot { root: im.root.clone(), source })?;
        let Ok(rel) = e.path().strip_prefix(env.root) else { continue };
        let rel = rel.to_str().ok_or_else(|| KeyError::ImageRootName { path: rel.to_path_buf() })?;
        if e.file_type().is_dir() {
            ids.insert(format!("{rel} (folder)"), crate::fingerprint::inputs::folder_id());
        } else if e.file_type().is_symlink() {
            let target = std::fs::read_link(e.path())
                .map_err(|source| KeyError::ImageRootSymlink { path: rel.to_string(), source })?;
            ids.insert(format!("{rel} (link)"), fact(target.as_os_str().as_encoded_bytes()));
        }
    }
    let Builder::Native { release, .. } = &im.builder else { return Ok(()) };
    // The builder itself reports a missing or malformed manifest, naming the YAML line.
    let Ok(text) = std::fs::read_to_string(env.root.join(&im.manifest)) else { return Ok(()) };
    let Ok(m) = serde_json::from_str::<crate::steps::manifest::Manifest>(&text) else { return Ok(()) };
    for k in &m.klibs {
        let dirs =
            m.klib_dir.iter().map(|d| Path::new(&im.root).join(d)).chain([Path::new(release).join("klibs")]);
        for dir in dirs {
            let rel = crate::paths::normalize_rel(&dir.join(k).to_string_lossy()).unwrap_or_default();
            let abs = env.root.join(&rel);
            let id = match std::fs::metadata(&abs) {
                Ok(meta) if meta.is_file() => env.stat.file_id_with_meta(&rel, &abs, &(&meta).into()).ok(),
                _ => None,
            };
            ids.insert(format!("{rel} (klib)"), id.unwrap_or_else(|| fact(b"absent")));
        }
    }
    Ok(())
}

/// Build the image into `env.into`: natively, or by running `ops build` with the cache's own
/// OPS_HOME and moving its image into place.
pub fn execute(im: &ImageSpec, env: &StepEnv) -> Result<Executed, KindFailed> {
    let root = env.root;
    let into = env.into;
    let Builder::Ops { program, nanos_version } = &im.builder else {
        let command = format!("image {into} (native)");
        let slot = env.slots.acquire();
        // Files of the declared inputs were hashed for the key: reuse their digests.
        let digest_of = |abs: &Path| {
            let rel = abs.strip_prefix(root).ok()?.to_str()?;
            env.stat.file_id(rel, abs).ok().map(|id| id.digest)
        };
        let built = native::build(root, im, into, &digest_of);
        drop(slot);
        let built = built.map_err(|e| KindFailed::new(&command, e))?;
        return Ok(Executed { command, warnings: built.warnings, ..Default::default() });
    };
    let name = image_name(into);
    let ops_home = env.cache_dir.join("ops-home");
    let Some(ops) = crate::fingerprint::tools::resolve("ops", root) else {
        return Err(KindFailed { command: None, message: ops::OPS_MISSING.into() });
    };
    let command = ops::ops_command(&ops, im, (program, nanos_version), root, &name);
    let failed = |message: String| KindFailed::new(&command, message);
    ops::prepare_ops_home(&ops_home, nanos_version).map_err(|e| failed(e.to_string()))?;
    // A stale image of the same name must not pass for this build's.
    for stale in [ops_home.join("images").join(&name), ops_home.join("images").join(format!("{name}.img"))] {
        let _ = std::fs::remove_file(stale);
    }
    let ops_env: BTreeMap<String, String> =
        [("OPS_HOME".to_string(), ops_home.to_string_lossy().into_owned())].into_iter().collect();
    let spec =
        crate::steps::run::Invocation { command: &command, root, env: &ops_env, log: env.log, live: None };
    let slot = env.slots.acquire();
    let status = crate::steps::run::run(&spec, env.jobs);
    drop(slot);
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => {
            return Err(failed(format!(
                "ops failed (exit status {}); its output is below",
                s.code().map_or("signal".to_string(), |c| c.to_string())
            )))
        }
        Err(e) => return Err(failed(format!("could not run ops: {e}"))),
    }
    let Some(built) = ops::built_image(&ops_home, &name) else {
        return Err(failed(format!(
            "ops succeeded but left no image `{name}` in {}/images",
            ops_home.display()
        )));
    };
    let dest = root.join(into);
    if std::fs::rename(&built, &dest).is_err() {
        if let Err(e) = std::fs::copy(&built, &dest).and_then(|_| std::fs::remove_file(&built)) {
            return Err(failed(format!("cannot move the image to {into}: {e}")));
        }
    }
    Ok(Executed { command, ..Default::default() })
}
