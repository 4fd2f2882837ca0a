//! `builder: native`: write the Nanos disk image without ops, offline and reproducibly.
//!
//! The manifest JSON is the single source of the root tuple, read the way ops reads it: the
//! image holds the program, `Dirs`, `Files` and `MapDirs` from the stage root; `Args`, `Env`,
//! `Mounts`, `Klibs`, `RebootOnExit` and `ManifestPassthrough` become the root tuple. 9p mount
//! labels (`%N`) are renumbered from `%0` in the order of N, because the Gevulot node attaches
//! the workspace as 9p mount tag 0; each mount point folder is created.
//! The boot partition holds the release's `kernel.img` and each klib as `/klib/<name>`.
//!
//! What ops adds on its own (environment variables, /etc/passwd, /etc/resolv.conf, the
//! hostname) is added only when `ops_extras` asks for it.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{Builder, Extra, ImageSpec};
use crate::steps::manifest::Manifest;
use crate::tfs::{FsNode, Tuple, Value};

/// What a native build made.
#[derive(Debug)]
pub struct Built {
    pub warnings: Vec<String>,
    pub size: u64,
}

type Tree = BTreeMap<String, FsNode>;

/// The version of what this builder writes, in every native image's key: bump it whenever the
/// same inputs would give different image bytes, so that no older image is restored.
pub const FORMAT: u32 = 1;

/// Root tuple keys the manifest's passthrough cannot replace.
const STRUCTURAL: [&str; 6] = ["children", "program", "arguments", "environment", "mounts", "klibs"];

/// The symlink hops Linux allows before ELOOP.
const MAX_HOPS: usize = 40;

/// A path of the image, as its components; `what` names it in errors.
fn components(path: &str, what: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(format!("{what} `{path}` climbs out of the image root with `..`")),
            c if c.contains('\0') => return Err(format!("{what} `{path}` contains NUL")),
            c => out.push(c.to_string()),
        }
    }
    Ok(out)
}

/// The blake3 of a file's content when the caller already knows it (from its stat cache).
pub type DigestOf<'a> = &'a (dyn Fn(&Path) -> Option<[u8; 32]> + Sync);

/// Read a host file, folder or symlink into a node.
fn host_node(path: &Path, digest_of: DigestOf) -> Result<FsNode, String> {
    let meta = fs::symlink_metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let target = target
            .to_str()
            .ok_or_else(|| format!("the symlink {} points to a name that is not UTF-8", path.display()))?;
        return Ok(FsNode::Symlink(target.to_string()));
    }
    if ft.is_file() {
        return Ok(FsNode::File {
            source: path.to_path_buf(),
            len: meta.len(),
            exec: meta.permissions().mode() & 0o111 != 0,
            digest: digest_of(path),
        });
    }
    if ft.is_dir() {
        let mut children = Tree::new();
        let entries = fs::read_dir(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        for e in entries {
            let e = e.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let name = e.file_name();
            if e.file_type().is_ok_and(|t| t.is_dir())
                && crate::fingerprint::inputs::SKIP_DIRS.iter().any(|s| name == *s)
            {
                // Left out of every step's key, so left out of the image too.
                continue;
            }
            let Some(name) = name.to_str() else {
                return Err(format!(
                    "{} has a name that is not UTF-8, which TFS cannot hold",
                    e.path().display()
                ));
            };
            children.insert(name.to_string(), host_node(&e.path(), digest_of)?);
        }
        return Ok(FsNode::Dir(children));
    }
    Err(format!("{} is not a file, folder or symlink; an image cannot hold it", path.display()))
}

/// A regular file of the release or a klib folder, following symlinks: stage2 and the kernel
/// load these by name, and a symlink in the boot filesystem would leave them nothing to load.
fn boot_file(path: &Path, digest_of: DigestOf) -> Result<FsNode, String> {
    let meta = fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    Ok(FsNode::File { source: path.to_path_buf(), len: meta.len(), exec: false, digest: digest_of(path) })
}

/// Put `node` at `path` in `tree`, merging folders; a file where a folder must go is an error.
fn insert(tree: &mut Tree, path: &[String], node: FsNode, shown: &str) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return match node {
            FsNode::Dir(children) => {
                for (k, v) in children {
                    insert(tree, &[k], v, shown)?;
                }
                Ok(())
            }
            _ => Err(format!("`{shown}` would replace the image root")),
        };
    };
    let mut dir = tree;
    for p in parents {
        let entry = dir.entry(p.clone()).or_insert_with(|| FsNode::Dir(Tree::new()));
        match entry {
            FsNode::Dir(children) => dir = children,
            _ => return Err(format!("`{shown}` needs `{p}` to be a folder, but the image has a file there")),
        }
    }
    match (dir.get_mut(last), node) {
        (Some(FsNode::Dir(existing)), FsNode::Dir(children)) => {
            for (k, v) in children {
                insert(existing, std::slice::from_ref(&k), v, shown)?;
            }
            Ok(())
        }
        (Some(existing), node) if *existing == node => Ok(()),
        (Some(_), _) => Err(format!("`{shown}` is put into the image twice, differently")),
        (None, node) => {
            dir.insert(last.clone(), node);
            Ok(())
        }
    }
}

fn lookup<'a>(tree: &'a Tree, path: &[String]) -> Option<&'a FsNode> {
    let (last, parents) = path.split_last()?;
    let mut dir = tree;
    for p in parents {
        match dir.get(p)? {
            FsNode::Dir(children) => dir = children,
            _ => return None,
        }
    }
    dir.get(last)
}

/// Follow symlinks inside the image from `path`; `Ok(None)` for a dangling link, `Err` for a
/// loop. Returns the final path.
fn resolve(tree: &Tree, path: &[String], shown: &str) -> Result<Option<Vec<String>>, String> {
    let mut current: Vec<String> = Vec::new();
    let mut pending: Vec<String> = path.iter().rev().cloned().collect();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        if c == ".." {
            current.pop();
            continue;
        }
        current.push(c);
        match lookup(tree, &current) {
            None => return Ok(None),
            Some(FsNode::Symlink(target)) => {
                hops += 1;
                if hops > MAX_HOPS {
                    return Err(format!("`{shown}` is in a symlink loop (more than {MAX_HOPS} links)"));
                }
                current.pop();
                if target.starts_with('/') {
                    current.clear();
                }
                for t in target.split('/').rev().filter(|t| !t.is_empty() && *t != ".") {
                    pending.push(t.to_string());
                }
            }
            Some(_) => {}
        }
    }
    Ok(Some(current))
}

/// Every symlink in the tree, as (path, components).
fn symlinks(tree: &Tree, prefix: &[String], out: &mut Vec<Vec<String>>) {
    for (name, node) in tree {
        let mut path = prefix.to_vec();
        path.push(name.clone());
        match node {
            FsNode::Dir(children) => symlinks(children, &path, out),
            FsNode::Symlink(_) => out.push(path),
            _ => {}
        }
    }
}

/// The root tuple of `m` (without `children`).
fn root_tuple(
    m: &Manifest,
    program: &str,
    extras: &[Extra],
    ids: (&str, Option<&str>),
) -> Result<Tuple, String> {
    // TFS has no empty string: a zero-length value reads back as "no such attribute".
    let empty = |what: String| {
        Err(format!("{what} is empty; TFS cannot store an empty string (Nanos would read it as absent)"))
    };
    if let Some(i) = m.args.iter().position(String::is_empty) {
        return empty(format!("argument {i} in the manifest's Args"));
    }
    for (what, map) in [("Env", &m.env), ("ManifestPassthrough", &m.passthrough), ("Mounts", &m.mounts)] {
        if let Some((k, _)) = map.iter().find(|(k, v)| k.is_empty() || v.is_empty()) {
            return empty(format!("`{k}` in the manifest's {what}, or its value,"));
        }
    }
    let mut t = Tuple::new();
    t.insert("program".into(), Value::str(program));
    // Nanos passes `arguments` as argv as it is; with no Args, argv[0] is the program's name,
    // which every program expects to find there.
    let args = if m.args.is_empty() {
        vec![Value::str(program.rsplit('/').next().unwrap_or(program))]
    } else {
        m.args.iter().map(|a| Value::str(a)).collect()
    };
    t.insert("arguments".into(), Value::Vector(args));
    let mut env = Tuple::new();
    if extras.contains(&Extra::Env) {
        let (image_name, nanos_version) = ids;
        env.insert("USER".into(), Value::str("root"));
        env.insert("PWD".into(), Value::str("/"));
        env.insert("NANOS_ARCH".into(), Value::str("x86_64"));
        env.insert("IMAGE_NAME".into(), Value::str(image_name));
        if let Some(v) = nanos_version {
            env.insert("NANOS_VERSION".into(), Value::str(v));
        }
    }
    for (k, v) in &m.env {
        env.insert(k.clone(), Value::str(v));
    }
    t.insert("environment".into(), Value::Tuple(env));
    if !m.mounts.is_empty() {
        let mounts = renumber_mounts(&m.mounts);
        t.insert(
            "mounts".into(),
            Value::Tuple(mounts.into_iter().map(|(k, v)| (k, Value::str(&v))).collect()),
        );
    }
    if !m.klibs.is_empty() {
        t.insert("klibs".into(), Value::str("bootfs"));
    }
    if m.reboot_on_exit {
        t.insert("reboot_on_exit".into(), Value::str("t"));
    }
    for (k, v) in &m.passthrough {
        if STRUCTURAL.contains(&k.as_str()) {
            return Err(format!(
                "the manifest's ManifestPassthrough sets `{k}`, which the image builder writes itself"
            ));
        }
        t.insert(k.clone(), Value::str(v));
    }
    Ok(t)
}

/// Mount labels for the Gevulot node: each 9p share label (`%N`) is renumbered from `%0`, in
/// the order of N, because the node attaches the workspace as 9p mount tag 0 and Nanos matches
/// `%N` to mount tag N. Other labels (a volume's label or UUID) are kept as they are.
pub fn renumber_mounts(mounts: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut shares: Vec<(u64, &String, &String)> = Vec::new();
    let mut out = BTreeMap::new();
    for (label, path) in mounts {
        match label.strip_prefix('%').and_then(|n| n.parse::<u64>().ok()) {
            Some(n) => shares.push((n, label, path)),
            None => {
                out.insert(label.clone(), path.clone());
            }
        }
    }
    shares.sort();
    for (i, (_, _, path)) in shares.into_iter().enumerate() {
        out.insert(format!("%{i}"), path.clone());
    }
    out
}

/// The release's files are at the top of the extracted tarball, or in its one subfolder.
fn release_folder(dir: &Path) -> PathBuf {
    if dir.join("kernel.img").exists() {
        return dir.to_path_buf();
    }
    let subs: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    match subs.as_slice() {
        [only] if only.join("kernel.img").exists() => only.clone(),
        _ => dir.to_path_buf(),
    }
}

fn read_manifest(path: &Path, shown: &str) -> Result<Manifest, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("cannot read the manifest {shown}: {e}"))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("the manifest {shown} is not one gvbuild understands: {e}"))
}

/// Build the image of `spec` into `into` (project-relative). An error starts with the
/// gevulot.yaml line of the field it is about: the manifest, the release, or the size.
pub fn build(project: &Path, spec: &ImageSpec, into: &str, digest_of: DigestOf) -> Result<Built, String> {
    let mut field = "manifest";
    build_in(project, spec, into, digest_of, &mut field).map_err(|e| format!("{}{e}", spec.at.prefix(field)))
}

/// `field` follows the build from section to section, naming what an error is about.
fn build_in(
    project: &Path,
    spec: &ImageSpec,
    into: &str,
    digest_of: DigestOf,
    field: &mut &'static str,
) -> Result<Built, String> {
    let Builder::Native { release, size, extras } = &spec.builder else {
        return Err("not a native image".into());
    };
    let m = read_manifest(&project.join(&spec.manifest), &spec.manifest)?;
    let base_volume = match m.base_volume_sz.as_deref() {
        None => None,
        Some(b) => match crate::fsutil::parse_size(b) {
            Some(n) if n <= crate::disk::MAX_SIZE => Some(n),
            _ => return Err(format!("the manifest's BaseVolumeSz `{b}` is not a size up to 2 TiB")),
        },
    };
    let root_dir = project.join(&spec.root);
    let release_dir = release_folder(&project.join(release));
    let mut warnings = Vec::new();

    // The root filesystem: what the manifest names from the stage root.
    let mut tree = Tree::new();
    let program = components(&m.program, "the program")?;
    if program.is_empty() {
        return Err("the manifest's Program is empty".into());
    }
    let program_shown = format!("/{}", program.join("/"));
    let add = |tree: &mut Tree, from: &str, to: &str, what: &str| -> Result<(), String> {
        let from_c = components(from, what)?;
        // A folder on the way that is a symlink would read from outside the stage root.
        for i in 1..from_c.len() {
            let parent = root_dir.join(from_c[..i].join("/"));
            if fs::symlink_metadata(&parent).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(format!(
                    "{what} `{from}` goes through the symlink `{}` in the stage root; name a path without symlinks on the way",
                    from_c[..i].join("/")
                ));
            }
        }
        let host = root_dir.join(from_c.join("/"));
        if fs::symlink_metadata(&host).is_err() {
            return Err(format!("{what} `{from}` is not in the stage root {}", spec.root));
        }
        insert(tree, &components(to, what)?, host_node(&host, digest_of)?, to)
    };
    add(&mut tree, &m.program, &m.program, "the program")?;
    for d in &m.dirs {
        add(&mut tree, d, d, "the folder (in Dirs)")?;
    }
    for f in &m.files {
        add(&mut tree, f, f, "the file (in Files)")?;
    }
    for (host, guest) in &m.map_dirs {
        if host.starts_with('/') {
            return Err(format!("MapDirs `{host}` is outside the stage root; name a folder inside it"));
        }
        add(&mut tree, host, guest, "the folder (in MapDirs)")?;
    }
    for value in m.mounts.values() {
        // `/data:ro`: the mount point is the part before the options, as ops reads it.
        let path = value.split(':').next().unwrap_or_default();
        let c = components(path, "the mount point")?;
        match lookup(&tree, &c) {
            Some(FsNode::Dir(_)) => {}
            None => insert(&mut tree, &c, FsNode::Dir(Tree::new()), path)?,
            Some(_) => return Err(format!("the mount point `{path}` is a file in the image, not a folder")),
        }
    }
    let text = |s: &str| FsNode::Bytes { data: s.as_bytes().to_vec(), exec: false };
    for x in extras {
        let (path, content) = match x {
            Extra::Env => continue,
            Extra::Passwd => ("etc/passwd", "root:x:0:0:root:/root:/bin/nobash"),
            Extra::ResolvConf => ("etc/resolv.conf", "nameserver 8.8.8.8\n"),
            Extra::Hostname => ("proc/sys/kernel/hostname", "uniboot"),
        };
        let c = components(path, "an extra")?;
        if lookup(&tree, &c).is_none() {
            insert(&mut tree, &c, text(content), path)?;
        }
    }
    match resolve(&tree, &program, &program_shown)? {
        Some(p) if matches!(lookup(&tree, &p), Some(FsNode::File { .. } | FsNode::Bytes { .. })) => {}
        _ => return Err(format!("the program `{program_shown}` is not a file in the image")),
    }
    let mut links = Vec::new();
    symlinks(&tree, &[], &mut links);
    for l in &links {
        resolve(&tree, l, &format!("/{}", l.join("/")))?;
    }
    // MapDirs sources land elsewhere in the image, so they are not left out.
    let map_from: Vec<String> = m
        .map_dirs
        .keys()
        .filter_map(|h| h.trim_start_matches("./").split('/').next())
        .map(String::from)
        .collect();
    if let Ok(entries) = fs::read_dir(&root_dir) {
        let mut left: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !tree.contains_key(n) && !map_from.contains(n))
            .collect();
        left.sort();
        if !left.is_empty() {
            warnings.push(format!(
                "the stage root {} has {} that the manifest leaves out of the image (add them to dirs or files): {}",
                spec.root,
                if left.len() == 1 { "an entry" } else { "entries" },
                left.join(", ")
            ));
        }
    }

    let name = super::image_name(into);
    let attrs = root_tuple(&m, &program_shown, extras, (&name, spec.nanos_version.as_deref()))?;

    // The boot filesystem: the kernel and the klibs.
    *field = "release";
    let kernel = release_dir.join("kernel.img");
    let boot_img = release_dir.join("boot.img");
    for (f, what) in [(&kernel, "kernel.img"), (&boot_img, "boot.img")] {
        if !f.is_file() {
            return Err(format!(
                "the Nanos release folder {release} has no {what}; `release:` must be the folder the release tarball (nanos-release-linux-<version>.tar.gz) was extracted into"
            ));
        }
    }
    let mut head = [0u8; 4];
    let is_elf =
        fs::File::open(&kernel).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head)).is_ok()
            && head == *b"\x7fELF";
    if !is_elf {
        return Err(format!("{release}/kernel.img is not an ELF file, so not a Nanos kernel"));
    }
    let mut boot_tree = Tree::new();
    boot_tree.insert("kernel".into(), boot_file(&kernel, digest_of)?);
    if !m.klibs.is_empty() {
        let mut klibs = Tree::new();
        if let Some(d) = &m.klib_dir {
            if crate::config::normalize_rel(&format!("{}/{d}", spec.root)).is_none() || d.starts_with('/') {
                return Err(format!(
                    "the manifest's KlibDir `{d}` is outside the project; name a project folder"
                ));
            }
        }
        let klib_dir = m.klib_dir.as_ref().map(|d| root_dir.join(d));
        for k in &m.klibs {
            components(k, "the klib")?;
            let candidates: Vec<PathBuf> =
                klib_dir.iter().map(|d| d.join(k)).chain([release_dir.join("klibs").join(k)]).collect();
            let Some(found) = candidates.iter().find(|p| p.is_file()) else {
                let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
                return Err(format!("klib `{k}` was not found; looked in {}", looked.join(" and ")));
            };
            klibs.insert(k.clone(), boot_file(found, digest_of)?);
        }
        boot_tree.insert("klib".into(), FsNode::Dir(klibs));
    }
    let boot = fs::read(&boot_img).map_err(|e| format!("cannot read {release}/boot.img: {e}"))?;
    let root_size = size.or(base_volume);

    *field = if size.is_some() { "size" } else { "into" };
    let dest = project.join(into);
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let tmp = crate::fsutil::temp_beside(&dest);
    let written = (|| {
        let out = fs::File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        let w = crate::disk::write_disk(&out, &boot, &boot_tree, &tree, &attrs, root_size)?;
        fs::rename(&tmp, &dest).map_err(|e| format!("cannot write {into}: {e}"))?;
        Ok::<_, String>(w)
    })();
    let written = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    Ok(Built { warnings, size: written.size })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn nine_p_mounts_are_renumbered_from_zero_and_volume_labels_kept() {
        let mut m = BTreeMap::new();
        m.insert("%1".to_string(), "/workspace".to_string());
        assert_eq!(renumber_mounts(&m), [("%0".to_string(), "/workspace".to_string())].into());
        m.insert("%10".to_string(), "/ten".to_string());
        m.insert("%2".to_string(), "/two".to_string());
        m.insert("data".to_string(), "/data".to_string());
        let r = renumber_mounts(&m);
        let want: BTreeMap<String, String> =
            [("%0", "/workspace"), ("%1", "/two"), ("%2", "/ten"), ("data", "/data")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        assert_eq!(r, want, "in the order of N, not of the text");
    }

    #[test]
    fn symlink_loops_are_found_and_dangling_links_are_not_loops() {
        let mut t = Tree::new();
        t.insert("a".into(), FsNode::Symlink("b".into()));
        t.insert("b".into(), FsNode::Symlink("/a".into()));
        t.insert("d".into(), FsNode::Symlink("nowhere".into()));
        t.insert("f".into(), FsNode::Bytes { data: vec![], exec: true });
        t.insert("g".into(), FsNode::Symlink("./f".into()));
        assert!(resolve(&t, &["a".into()], "/a").unwrap_err().contains("loop"));
        assert_eq!(resolve(&t, &["d".into()], "/d").unwrap(), None);
        assert_eq!(resolve(&t, &["g".into()], "/g").unwrap(), Some(vec!["f".to_string()]));
    }
}
