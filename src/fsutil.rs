//! Small filesystem helpers shared by the cache, the state folder and the steps.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temp path next to `path` (same filesystem, so a rename is atomic), unique in this process
/// and across processes.
pub fn temp_beside(path: &Path) -> PathBuf {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.gvtmp.{}.{n}", std::process::id()))
}

/// Write `bytes` to `path` atomically: a temp file renamed over it. A killed process leaves at
/// worst a stray temp file, never a half-written `path`.
/// Whether `path` is a write staged by [`temp_beside`] (`.NAME.gvtmp.PID.N`): a file that is
/// renamed into place or removed in a moment, and belongs to no step.
pub fn is_temp(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.') && n.contains(".gvtmp."))
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_beside(path);
    let result = (|| {
        let mut f = with_parent(&tmp, |p| fs::File::create(p))?;
        f.write_all(bytes)?;
        f.flush()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    // Name the file: "No space left on device" alone does not say where.
    result.map_err(|e| io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display())))
}

/// Run `create` on `path` (which makes a file there); if its folder is missing, make the folder
/// and its parents and run `create` once more. Nearly always the folder exists, and this costs
/// no `mkdir` and no `stat` then, where `create_dir_all` first costs both on every call.
pub fn with_parent<T>(path: &Path, mut create: impl FnMut(&Path) -> io::Result<T>) -> io::Result<T> {
    match create(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => {
                fs::create_dir_all(parent)?;
                create(path)
            }
            _ => Err(e),
        },
        other => other,
    }
}

/// Remove a file, symlink or folder tree; a missing path is fine. Read-only files (hard-linked
/// restores) are removed too: removal needs write permission on the folder, not the file.
pub fn remove_path(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => {
            make_tree_writable(path);
            fs::remove_dir_all(path)
        }
        Ok(_) => fs::remove_file(path),
    }
}

/// Folders made read-only by a step would stop `remove_dir_all`; give the owner write access.
fn make_tree_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for entry in walkdir::WalkDir::new(path).into_iter().flatten() {
        if entry.file_type().is_dir() {
            if let Ok(m) = entry.metadata() {
                let mode = m.permissions().mode();
                if mode & 0o200 == 0 {
                    let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(mode | 0o700));
                }
            }
        }
    }
}

/// Human-readable byte size: 1.5 GiB, 12.0 MiB, 512 B.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Parse a size such as `10G`, `512MiB`, `2gb`, `1000`.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    Some((num * mult as f64) as u64)
}

/// copy_file_range of `len` bytes from `from` at `off_in` to `to` at `off_out`. `Ok(false)` when
/// the file systems do not support it (before anything was copied).
pub fn copy_range(
    from: &std::fs::File,
    to: &std::fs::File,
    mut off_in: u64,
    mut off_out: u64,
    len: u64,
) -> io::Result<bool> {
    use rustix::io::Errno;
    let end = off_in + len;
    let start = off_in;
    while off_in < end {
        let want = usize::try_from(end - off_in).unwrap_or(usize::MAX).min(1 << 30);
        match rustix::fs::copy_file_range(from, Some(&mut off_in), to, Some(&mut off_out), want) {
            Ok(0) => return Err(io::Error::other(format!("the file ended {} bytes early", end - off_in))),
            Ok(_) => {}
            Err(Errno::XDEV | Errno::NOSYS | Errno::INVAL | Errno::OPNOTSUPP) if off_in == start => {
                return Ok(false)
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_trip() {
        assert_eq!(parse_size("10G"), Some(10 << 30));
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("1.5k"), Some(1536));
        assert_eq!(parse_size("ten"), None);
        assert_eq!(human_size(1536), "1.5 KiB");
    }
}
