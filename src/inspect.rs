//! `gvbuild inspect`: what a Nanos image holds (partition table, filesystems, root tuple, tree),
//! as text or JSON, and `--extract`, which copies the root filesystem's tree out.

use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value as Json};

use crate::disk::{self, Disk, DiskError};
use crate::tfs::{self, Kind, Tuple, Value};

/// Why `inspect` could not read an image or extract its tree.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum InspectError {
    #[error("cannot open {}: {source}", path.display())]
    #[diagnostic(code(gvbuild::inspect::open))]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot read {}: {source}", path.display())]
    #[diagnostic(code(gvbuild::inspect::read))]
    Read { path: PathBuf, source: io::Error },
    #[error(transparent)]
    #[diagnostic(code(gvbuild::inspect::disk))]
    Disk(#[from] DiskError),
    #[error(transparent)]
    #[diagnostic(code(gvbuild::inspect::volume))]
    Volume(#[from] tfs::ReadError),
    #[error("the image holds no TFS filesystem")]
    #[diagnostic(code(gvbuild::inspect::no_filesystem))]
    NoFilesystem,
    #[error("{} is not empty; extract into a new or empty folder", dir.display())]
    #[diagnostic(code(gvbuild::inspect::not_empty))]
    NotEmpty { dir: PathBuf },
    #[error("cannot create {}: {source}", dir.display())]
    #[diagnostic(code(gvbuild::inspect::create))]
    CreateDir { dir: PathBuf, source: io::Error },
    #[error("cannot use {}: {source}", dir.display())]
    #[diagnostic(code(gvbuild::inspect::use_dir))]
    UseDir { dir: PathBuf, source: io::Error },
    #[error("the image holds a name that cannot be extracted safely: {name:?}")]
    #[diagnostic(code(gvbuild::inspect::bad_name))]
    BadName { name: String },
    #[error("the image's files add up to {total} bytes, more than its filesystem's {limit} bytes")]
    #[diagnostic(code(gvbuild::inspect::too_big))]
    TooBig { total: u64, limit: u64 },
    #[error("cannot write {}: {source}", path.display())]
    #[diagnostic(code(gvbuild::inspect::write))]
    Write { path: PathBuf, source: io::Error },
    #[error("the image puts {path} under something that is not a folder")]
    #[diagnostic(code(gvbuild::inspect::not_a_folder))]
    NotUnderFolder { path: String },
}

/// A UUID as text.
pub fn uuid_text(u: &[u8; 16]) -> String {
    let h = hex::encode(u);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

fn to_json(v: &Value) -> Json {
    match v {
        Value::Str(b) | Value::Buffer(b) => Json::String(String::from_utf8_lossy(b).into_owned()),
        Value::Int(n) => json!(n),
        Value::Tuple(t) => Json::Object(t.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
        Value::Vector(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Null => Json::Null,
    }
}

fn role(disk: &Disk, vol: &tfs::Volume) -> &'static str {
    if vol.root.contains_key("program") || disk.volumes.len() == 1 {
        "root"
    } else if vol.root.get("children").and_then(Value::as_tuple).is_some_and(|c| c.contains_key("kernel")) {
        "boot"
    } else {
        "data"
    }
}

/// The tree of a volume as JSON rows.
fn tree_json(root: &Tuple) -> Vec<Json> {
    tfs::walk(root)
        .into_iter()
        .map(|(path, node)| match tfs::kind(node) {
            Kind::Dir => json!({ "path": path, "kind": "dir" }),
            Kind::File { len, exec } => json!({ "path": path, "kind": "file", "size": len, "exec": exec }),
            Kind::Symlink(target) => json!({ "path": path, "kind": "symlink", "target": target }),
            Kind::Other => json!({ "path": path, "kind": "other" }),
        })
        .collect()
}

/// One entry of the root tuple's `mounts`: the key, the 9p attach id it matches, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub key: String,
    /// For a `%N` key, N: Nanos matches it against a 9p device whose mount tag, read as a
    /// decimal number, is N (nanos `src/kernel/storage.c`, `volume_match`;
    /// `src/virtio/virtio_9p.c`). `None` for a key that names a volume by label or UUID.
    pub attach_id: Option<u64>,
    /// The mount point, with any `:ro` suffix.
    pub path: String,
}

impl Mount {
    /// The mount point without its options (`/workspace:ro` is `/workspace`).
    pub fn point(&self) -> &str {
        self.path.split(':').next().unwrap_or_default()
    }
}

/// The `mounts` of a root tuple, in key order.
pub fn mounts_of(root: &Tuple) -> Vec<Mount> {
    let Some(t) = root.get("mounts").and_then(Value::as_tuple) else {
        return Vec::new();
    };
    t.iter()
        .map(|(k, v)| {
            let digits: String =
                k.strip_prefix('%').unwrap_or("").chars().take_while(char::is_ascii_digit).collect();
            let attach_id = if k.len() > 1 && !digits.is_empty() { digits.parse().ok() } else { None };
            let path = match v {
                Value::Str(b) | Value::Buffer(b) => String::from_utf8_lossy(b).into_owned(),
                _ => String::new(),
            };
            Mount { key: k.clone(), attach_id, path }
        })
        .collect()
}

/// The Gevulot node attaches the workspace as 9p mount tag 0 (gevulotnetwork/gevulot
/// `crates/node/src/vmm/qemu.rs`), so a program image must mount `/workspace` from `%0`. The
/// warning for an image that does not, or `None`.
pub fn workspace_warning(mounts: &[Mount]) -> Option<String> {
    let ws: Vec<&Mount> = mounts.iter().filter(|m| m.point().trim_end_matches('/') == "/workspace").collect();
    match ws.as_slice() {
        [] => Some("this image mounts nothing at /workspace: the Gevulot node hands a program its task there (9p mount tag 0, mounted by a `%0` key)".into()),
        [m, ..] if m.attach_id == Some(0) => None,
        [m, ..] => Some(format!(
            "the workspace is mounted from `{}`{}, but the Gevulot node attaches the workspace as 9p mount tag 0: this image will not see it (ops numbers Mounts from %0; rebuild it with gvbuild or a current ops)",
            m.key,
            m.attach_id.map(|id| format!(" (attach id {id})")).unwrap_or_default()
        )),
    }
}

/// Everything `inspect` shows, as JSON.
pub fn describe(path: &Path) -> Result<Json, InspectError> {
    let file = File::open(path).map_err(|source| InspectError::Open { path: path.into(), source })?;
    let disk = disk::read_disk(&file)?;
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap_rayon(path).map_err(|source| InspectError::Read { path: path.into(), source })?;
    let partitions: Vec<Json> = disk
        .partitions
        .iter()
        .map(|p| {
            json!({
                "number": p.index + 1, "active": p.active, "type": format!("0x{:02x}", p.kind),
                "start_sector": p.start, "sectors": p.sectors,
            })
        })
        .collect();
    let filesystems: Vec<Json> = disk
        .volumes
        .iter()
        .map(|(part, vol)| {
            let mut attrs: Map<String, Json> = vol
                .root
                .iter()
                .filter(|(k, _)| k.as_str() != "children")
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect();
            attrs.sort_keys();
            json!({
                "partition": part.map(|i| i + 1),
                "role": role(&disk, vol),
                "tfs_version": vol.version,
                "uuid": uuid_text(&vol.uuid),
                "label": vol.label,
                "root_tuple": attrs,
                "tree": tree_json(&vol.root),
            })
        })
        .collect();
    let root = disk.volumes.iter().find(|(_, v)| role(&disk, v) == "root").map(|(_, v)| &v.root);
    let mounts = root.map(mounts_of).unwrap_or_default();
    let mut warnings = Vec::new();
    if root.is_some_and(|r| r.contains_key("program")) {
        warnings.extend(workspace_warning(&mounts));
    }
    let mounts: Vec<Json> =
        mounts.iter().map(|m| json!({ "key": m.key, "attach_id": m.attach_id, "path": m.path })).collect();
    Ok(json!({
        "image": path.display().to_string(),
        "mounts": mounts,
        "warnings": warnings,
        "size": disk.size,
        "blake3": hasher.finalize().to_hex().to_string(),
        "stage2_bytes": disk.boot_record.map(|r| r.stage2_len),
        "partitions": partitions,
        "filesystems": filesystems,
    }))
}

/// `describe` as text for a person.
pub fn render(d: &Json) -> String {
    let mut out = String::new();
    let s = |v: &Json| v.as_str().unwrap_or_default().to_string();
    let n = |v: &Json| v.as_u64().unwrap_or_default();
    out.push_str(&format!(
        "image {}: {} ({} bytes)\n  blake3 {} (the Gevulot program id)\n",
        s(&d["image"]),
        crate::fsutil::human_size(n(&d["size"])),
        n(&d["size"]),
        s(&d["blake3"])
    ));
    for m in d["mounts"].as_array().into_iter().flatten() {
        let id = match m["attach_id"].as_u64() {
            Some(id) => format!("9p attach id {id} (QEMU mount_tag={id})"),
            None => "a volume by label or UUID".into(),
        };
        out.push_str(&format!("  mount {} <- {}: {id}\n", s(&m["path"]), s(&m["key"])));
    }
    for w in d["warnings"].as_array().into_iter().flatten() {
        out.push_str(&format!("  warning: {}\n", s(w)));
    }
    let parts = d["partitions"].as_array().cloned().unwrap_or_default();
    if parts.is_empty() {
        out.push_str("no partition table: a bare TFS volume\n");
    } else {
        match d["stage2_bytes"].as_u64() {
            Some(s2) => out.push_str(&format!(
                "MBR partition table; Nanos boot loader with {s2} bytes of stage2, then a 4 KiB kernel log area\n"
            )),
            None => out.push_str("MBR partition table (no Nanos boot record)\n"),
        }
        for p in &parts {
            let (start, sectors) = (n(&p["start_sector"]), n(&p["sectors"]));
            out.push_str(&format!(
                "  #{} {} type {}  sectors {}..{}  {}\n",
                n(&p["number"]),
                if p["active"].as_bool() == Some(true) { "active  " } else { "inactive" },
                s(&p["type"]),
                start,
                start + sectors,
                crate::fsutil::human_size(sectors * 512)
            ));
        }
    }
    for fsys in d["filesystems"].as_array().into_iter().flatten() {
        let place = match fsys["partition"].as_u64() {
            Some(p) => format!("partition {p}"),
            None => "byte 0".into(),
        };
        out.push_str(&format!(
            "\n{} filesystem ({place}): TFS version {}, UUID {}, label {:?}\n",
            s(&fsys["role"]),
            n(&fsys["tfs_version"]),
            s(&fsys["uuid"]),
            s(&fsys["label"])
        ));
        if let Some(attrs) = fsys["root_tuple"].as_object().filter(|a| !a.is_empty()) {
            out.push_str("root tuple:\n");
            for (k, v) in attrs {
                out.push_str(&format!("  {k}: {}\n", show(v)));
            }
        }
        out.push_str("tree:\n");
        for row in fsys["tree"].as_array().into_iter().flatten() {
            let path = s(&row["path"]);
            let line = match row["kind"].as_str() {
                Some("dir") => format!("{path}/"),
                Some("file") => format!(
                    "{path}  {} bytes{}",
                    n(&row["size"]),
                    if row["exec"].as_bool() == Some(true) { "  exec" } else { "" }
                ),
                Some("symlink") => format!("{path} -> {}", s(&row["target"])),
                _ => format!("{path}  (neither file, folder nor symlink)"),
            };
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}

/// A root tuple value on one line: `a b c` vectors as `[a, b]`, tuples as `k=v, k=v`.
fn show(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Array(items) => format!("[{}]", items.iter().map(show).collect::<Vec<_>>().join(", ")),
        Json::Object(m) if m.is_empty() => "()".into(),
        Json::Object(m) => m.iter().map(|(k, v)| format!("{k}:{}", show(v))).collect::<Vec<_>>().join(" "),
        Json::Null => "<null>".into(),
        other => other.to_string(),
    }
}

/// Copy the root filesystem's tree into `dir`, which must be new or empty. Executables get mode
/// 0755, other files 0644. Returns the number of files written.
pub fn extract(image: &Path, dir: &Path) -> Result<u64, InspectError> {
    let file = File::open(image).map_err(|source| InspectError::Open { path: image.into(), source })?;
    let disk = disk::read_disk(&file)?;
    let vol = disk.root().ok_or(InspectError::NoFilesystem)?;
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(InspectError::NotEmpty { dir: dir.into() });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(|source| InspectError::CreateDir { dir: dir.into(), source })?
        }
        Err(source) => return Err(InspectError::UseDir { dir: dir.into(), source }),
    }
    if let Some(name) = tfs::bad_name(&vol.root) {
        return Err(InspectError::BadName { name });
    }
    // No two files share data in an image mkfs or gvbuild writes, so together they hold at most
    // the volume: a hostile image must not make an extraction fill the disk.
    let total = tfs::walk(&vol.root)
        .into_iter()
        .filter_map(|(_, node)| match tfs::kind(node) {
            Kind::File { len, .. } => Some(len),
            _ => None,
        })
        .fold(0u64, u64::saturating_add);
    if total > vol.limit {
        return Err(InspectError::TooBig { total, limit: vol.limit });
    }
    let mut files = 0;
    for (path, node) in tfs::walk(&vol.root) {
        let dest = dir.join(path.trim_start_matches('/'));
        let fail = |source| InspectError::Write { path: dest.clone(), source };
        // Every parent is a folder this extraction made: never write through a symlink.
        if let Some(parent) = dest.parent().filter(|p| *p != dir) {
            if !fs::symlink_metadata(parent).is_ok_and(|m| m.is_dir()) {
                return Err(InspectError::NotUnderFolder { path });
            }
        }
        match tfs::kind(node) {
            Kind::Dir => fs::create_dir(&dest).map_err(fail)?,
            Kind::Symlink(target) => std::os::unix::fs::symlink(&target, &dest).map_err(fail)?,
            Kind::File { exec, .. } => {
                let out = File::options().write(true).create_new(true).open(&dest).map_err(fail)?;
                let mut w = BufWriter::new(&out);
                vol.copy_file(&file, node, &mut w)?;
                std::io::Write::flush(&mut w).map_err(fail)?;
                drop(w);
                let mode = if exec { 0o755 } else { 0o644 };
                fs::set_permissions(&dest, fs::Permissions::from_mode(mode)).map_err(fail)?;
                files += 1;
            }
            Kind::Other => {}
        }
    }
    Ok(files)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tuple_with_mounts(pairs: &[(&str, &str)]) -> Tuple {
        let mut mounts = Tuple::new();
        for (k, v) in pairs {
            mounts.insert(k.to_string(), Value::str(v));
        }
        let mut root = Tuple::new();
        root.insert("mounts".into(), Value::Tuple(mounts));
        root
    }

    #[test]
    fn attach_ids_are_read_as_nanos_reads_them() {
        let got = mounts_of(&tuple_with_mounts(&[
            ("%0", "/workspace"),
            ("%12x", "/a:ro"),
            ("virtfs3", "/b"),
            ("%", "/c"),
        ]));
        let ids: Vec<_> = got.iter().map(|m| (m.key.as_str(), m.attach_id, m.point())).collect();
        assert_eq!(
            ids,
            [
                ("%", None, "/c"),
                ("%0", Some(0), "/workspace"),
                ("%12x", Some(12), "/a"),
                ("virtfs3", None, "/b")
            ]
        );
    }

    #[test]
    fn a_workspace_off_tag_zero_is_warned_about() {
        assert_eq!(workspace_warning(&mounts_of(&tuple_with_mounts(&[("%0", "/workspace")]))), None);
        let w = workspace_warning(&mounts_of(&tuple_with_mounts(&[("%1", "/workspace")]))).unwrap();
        assert!(w.contains("`%1` (attach id 1)") && w.contains("this image will not see it"), "{w}");
        assert!(workspace_warning(&[]).unwrap().contains("mounts nothing at /workspace"));
    }
}
