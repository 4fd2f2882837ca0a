//! The `fetch` step: download a pinned file (http, https, file://), verify it, and save or
//! extract it into the step's one output.
//!
//! - The key is the pinned hash (and the extract options), never the URL: moving a mirror
//!   changes nothing.
//! - Downloads stream into a temp file while being hashed, with a size cap, bounded retries with
//!   backoff on transient errors, and timeouts. A mismatch names the URL and both hashes and
//!   leaves nothing behind. Verified downloads are kept in the cache under `downloads/ALGO/HEX`,
//!   so once fetched a build works offline.
//! - Extraction fails closed into a staging folder, renamed into place only when complete.
//!   Refused, with the entry's name: `..` components, absolute paths, symlinks leaving the
//!   output, hard links to files outside the archive, device files and FIFOs, writes through a
//!   symlink. setuid/setgid/sticky and world-writable bits are stripped. The total size and
//!   the number of entries are capped.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::yaml::Spanned;
use schemars::JsonSchema;

use crate::diag::Span;
use crate::fsutil;
use crate::paths::PathSpec;
use crate::yaml::error::ConfigError;
use crate::yaml::read::raw_struct;
use crate::yaml::Validator;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algo {
    Sha256,
    Blake3,
    /// A git commit id: the `url` is a repository, checked out at that commit.
    GitCommit,
}

impl Algo {
    pub fn name(self) -> &'static str {
        match self {
            Algo::Sha256 => "sha256",
            Algo::Blake3 => "blake3",
            Algo::GitCommit => "commit",
        }
    }
}

/// A pinned hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    pub algo: Algo,
    /// Lowercase hex, 64 digits.
    pub hex: String,
}

/// Caps against decompression bombs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extract {
    pub strip_components: u32,
    pub max_size: u64,
    pub max_entries: u64,
}

pub const DEFAULT_MAX_SIZE: u64 = 16 << 30;
pub const DEFAULT_MAX_ENTRIES: u64 = 1_000_000;
/// The largest download accepted.
pub const MAX_DOWNLOAD: u64 = 16 << 30;
const TRIES: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("downloading {url} failed: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("downloading {url} failed after {tries} tries: {cause}")]
    Transport { url: String, tries: u32, cause: String },
    #[error(
        "{url} does not match its pinned hash\n  expected {algo}: {expected}\n  actual   {algo}: {actual}\nnothing was extracted or cached; if the new content is right, pin it with `gvbuild hash {url}`"
    )]
    Mismatch { url: String, algo: &'static str, expected: String, actual: String },
    #[error("{url} is larger than the download limit of {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("{what} {path}: {cause}")]
    Io { what: &'static str, path: PathBuf, cause: io::Error },
    #[error("archive entry `{entry}` {why}; nothing was extracted")]
    Hostile { entry: String, why: &'static str },
    #[error("the archive exceeds its limit of {limit} {what} (raise `extract: {{ {key}: ... }}` if it is genuine); nothing was extracted")]
    Bomb { what: &'static str, key: &'static str, limit: u64 },
    #[error("{url} is not an archive gvbuild can extract (tar, tar.gz, tar.xz, tar.zst or zip, recognised by content): {cause}")]
    NotArchive { url: String, cause: String },
    #[error("unsupported URL {url}: use http://, https:// or file:///ABSOLUTE/PATH")]
    Scheme { url: String },
    #[error("git could not check out {rev} from {url}: {cause}")]
    Git { url: String, rev: String, cause: String },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FetchError + 'a {
    move |cause| FetchError::Io { what, path: path.to_path_buf(), cause }
}

/// Both digests of a download, in hex.
#[derive(Debug, Clone)]
pub struct Hashes {
    pub sha256: String,
    pub blake3: String,
    pub size: u64,
}

impl Hashes {
    pub fn of(&self, algo: Algo) -> &str {
        match algo {
            Algo::Sha256 | Algo::GitCommit => &self.sha256,
            Algo::Blake3 => &self.blake3,
        }
    }
}

/// Stream `url` into `dest` (a new file), hashing as it goes.
/// A download's progress bar, added below the build's on a terminal.
fn bar(progress: Option<&MultiProgress>, url: &str, total: Option<u64>) -> Option<ProgressBar> {
    let multi = progress?;
    let pb = multi.add(match total {
        Some(t) => ProgressBar::new(t),
        None => ProgressBar::no_length(),
    });
    let template = "  {msg} {bytes}/{total_bytes} {bytes_per_sec} {wide_bar}";
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style);
    }
    let name = url.rsplit('/').next().unwrap_or(url).to_string();
    pb.set_message(name);
    Some(pb)
}

pub fn download(
    url: &str,
    dest: &Path,
    limit: u64,
    progress: Option<&MultiProgress>,
) -> Result<Hashes, FetchError> {
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(FetchError::Scheme { url: url.into() });
        }
        let mut f = File::open(path).map_err(io_err("cannot read", Path::new(path)))?;
        let total = f.metadata().ok().map(|m| m.len());
        return copy_hashing(url, &mut f, dest, limit, bar(progress, url, total));
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(FetchError::Scheme { url: url.into() });
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut last = String::new();
    for attempt in 1..=TRIES {
        if attempt > 1 {
            std::thread::sleep(Duration::from_millis(200 << (attempt - 2)));
        }
        match agent.get(url).call() {
            Ok(mut resp) => {
                let total = resp.body().content_length();
                let mut body = resp.body_mut().with_config().limit(limit.saturating_add(1)).reader();
                match copy_hashing(url, &mut body, dest, limit, bar(progress, url, total)) {
                    Ok(h) => return Ok(h),
                    // A connection dropped mid-body is worth another try.
                    Err(FetchError::Io { cause, .. }) if attempt < TRIES => last = cause.to_string(),
                    Err(e) => return Err(e),
                }
            }
            Err(ureq::Error::StatusCode(status)) => {
                let transient = status >= 500 || status == 429 || status == 408;
                if !transient || attempt == TRIES {
                    return Err(FetchError::Status { url: url.into(), status });
                }
                last = format!("HTTP status {status}");
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(FetchError::Transport { url: url.into(), tries: TRIES, cause: last })
}

fn copy_hashing(
    url: &str,
    input: &mut dyn Read,
    dest: &Path,
    limit: u64,
    bar: Option<ProgressBar>,
) -> Result<Hashes, FetchError> {
    let mut out = File::create(dest).map_err(io_err("cannot write", dest))?;
    let mut hashes = BothHashes::default();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = input.read(&mut buf).map_err(io_err("cannot read", Path::new(url)))?;
        if n == 0 {
            break;
        }
        if hashes.size + n as u64 > limit {
            return Err(FetchError::TooLarge { url: url.into(), limit });
        }
        let _ = hashes.write(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io_err("cannot write", dest))?;
        if let Some(pb) = &bar {
            pb.inc(n as u64);
        }
    }
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    Ok(hashes.finish())
}

/// Hash a file already on disk.
pub fn hash_file(path: &Path) -> io::Result<Hashes> {
    let mut h = BothHashes::default();
    io::copy(&mut File::open(path)?, &mut h)?;
    Ok(h.finish())
}

/// The sha256 and blake3 of one stream, fed as a writer.
#[derive(Default)]
struct BothHashes {
    sha: sha2::Sha256,
    b3: blake3::Hasher,
    size: u64,
}

impl Write for BothHashes {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sha.update(buf);
        self.b3.update(buf);
        self.size += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BothHashes {
    fn finish(self) -> Hashes {
        Hashes {
            sha256: hex::encode(self.sha.finalize()),
            blake3: self.b3.finalize().to_hex().to_string(),
            size: self.size,
        }
    }
}

/// The verified download for `pin`, from the downloads folder or the network.
pub fn obtain(
    url: &str,
    pin: &Pin,
    downloads: &Path,
    progress: Option<&MultiProgress>,
) -> Result<PathBuf, FetchError> {
    let path = downloads.join(pin.algo.name()).join(&pin.hex);
    if path.exists() {
        match hash_file(&path) {
            Ok(h) if h.of(pin.algo) == pin.hex => {
                // Last use, for `cache gc`.
                if let Ok(f) = File::open(&path) {
                    let _ = f.set_modified(std::time::SystemTime::now());
                }
                return Ok(path);
            }
            // Damaged: drop it and download again.
            _ => {
                let _ = fs::remove_file(&path);
            }
        }
    }
    let dir = path.parent().unwrap_or(downloads);
    fs::create_dir_all(dir).map_err(io_err("cannot create", dir))?;
    let tmp = fsutil::temp_beside(&path);
    let result = download(url, &tmp, MAX_DOWNLOAD, progress).and_then(|h| {
        let actual = h.of(pin.algo).to_string();
        if actual != pin.hex {
            return Err(FetchError::Mismatch {
                url: url.into(),
                algo: pin.algo.name(),
                expected: pin.hex.clone(),
                actual,
            });
        }
        let _ = fs::set_permissions(&tmp, fs::Permissions::from_mode(0o444));
        fs::rename(&tmp, &path).map_err(io_err("cannot store", &path))
    });
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(path)
}

/// Download `url` without a pin (for `gvbuild hash`) and keep it under both of its hashes.
pub fn download_and_keep(
    url: &str,
    downloads: &Path,
    progress: Option<&MultiProgress>,
) -> Result<Hashes, FetchError> {
    let tmp_dir = downloads.join("sha256");
    fs::create_dir_all(&tmp_dir).map_err(io_err("cannot create", &tmp_dir))?;
    let tmp = fsutil::temp_beside(&tmp_dir.join("unpinned"));
    let h = match download(url, &tmp, MAX_DOWNLOAD, progress) {
        Ok(h) => h,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let _ = fs::set_permissions(&tmp, fs::Permissions::from_mode(0o444));
    let by_sha = tmp_dir.join(&h.sha256);
    let b3_dir = downloads.join("blake3");
    let kept = fs::rename(&tmp, &by_sha).and_then(|()| fs::create_dir_all(&b3_dir));
    if kept.is_ok() {
        let _ = fs::hard_link(&by_sha, b3_dir.join(&h.blake3));
    } else {
        let _ = fs::remove_file(&tmp);
    }
    Ok(h)
}

/// Check out `rev` (a full commit id) of the repository at `url` into `into`, without `.git`.
fn git_checkout(url: &str, rev: &str, into: &Path) -> Result<(), FetchError> {
    let staging = fsutil::temp_beside(into);
    let fail = |cause: String| FetchError::Git { url: url.into(), rev: rev.into(), cause };
    let git = |args: &[&str]| -> Result<String, FetchError> {
        let out = std::process::Command::new("git")
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| fail(format!("cannot run git ({e}); is it installed?")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_string()))
        }
    };
    let result = (|| {
        let dir = staging.to_str().ok_or_else(|| fail("the output path is not UTF-8".into()))?;
        git(&["init", "-q", dir])?;
        // Fetch just that commit; a server that refuses a fetch by id gets a full fetch instead.
        if git(&["-C", dir, "fetch", "-q", "--depth", "1", url, rev]).is_err() {
            git(&[
                "-C",
                dir,
                "fetch",
                "-q",
                url,
                "+refs/heads/*:refs/remotes/origin/*",
                "+refs/tags/*:refs/tags/*",
            ])?;
        }
        git(&["-C", dir, "-c", "advice.detachedHead=false", "checkout", "-q", "--detach", rev])?;
        let head = git(&["-C", dir, "rev-parse", "HEAD"])?;
        if head != rev {
            return Err(fail(format!("HEAD is {head} after the checkout")));
        }
        fsutil::remove_path(&staging.join(".git")).map_err(io_err("cannot remove", &staging))?;
        let _ = fsutil::remove_path(into);
        fs::rename(&staging, into).map_err(io_err("cannot move into place", into))
    })();
    if result.is_err() {
        let _ = fsutil::remove_path(&staging);
    }
    result
}

/// Run a fetch step: obtain the download, then copy or extract it to `into` (or check out a
/// pinned git commit).
pub fn run(
    url: &str,
    pin: &Pin,
    extract: Option<&Extract>,
    into: &Path,
    downloads: &Path,
    progress: Option<&MultiProgress>,
) -> Result<(), FetchError> {
    if let Some(parent) = into.parent() {
        fs::create_dir_all(parent).map_err(io_err("cannot create", parent))?;
    }
    if pin.algo == Algo::GitCommit {
        return git_checkout(url, &pin.hex, into);
    }
    let file = obtain(url, pin, downloads, progress)?;
    match extract {
        None => {
            let tmp = fsutil::temp_beside(into);
            let copied = fs::copy(&file, &tmp)
                .and_then(|_| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)))
                .and_then(|()| fs::rename(&tmp, into));
            if let Err(e) = copied {
                let _ = fs::remove_file(&tmp);
                return Err(FetchError::Io { what: "cannot write", path: into.to_path_buf(), cause: e });
            }
            Ok(())
        }
        Some(x) => {
            let staging = fsutil::temp_beside(into);
            fs::create_dir(&staging).map_err(io_err("cannot create", &staging))?;
            let result = extract_archive(url, &file, &staging, x);
            if let Err(e) = result {
                let _ = fsutil::remove_path(&staging);
                return Err(e);
            }
            let _ = fsutil::remove_path(into);
            fs::rename(&staging, into).map_err(|e| {
                let _ = fsutil::remove_path(&staging);
                FetchError::Io { what: "cannot move into place", path: into.to_path_buf(), cause: e }
            })
        }
    }
}

enum Kind {
    Gzip,
    Xz,
    Zstd,
    Zip,
    Tar,
}

fn sniff(file: &Path) -> Result<Option<Kind>, io::Error> {
    let mut head = [0u8; 512];
    let mut f = File::open(file)?;
    let mut n = 0;
    while n < head.len() {
        let r = f.read(&mut head[n..])?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let h = &head[..n];
    Ok(if h.starts_with(&[0x1f, 0x8b]) {
        Some(Kind::Gzip)
    } else if h.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some(Kind::Xz)
    } else if h.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Kind::Zstd)
    } else if h.starts_with(b"PK\x03\x04") || h.starts_with(b"PK\x05\x06") {
        Some(Kind::Zip)
    } else if n >= 262 && &h[257..262] == b"ustar" {
        Some(Kind::Tar)
    } else {
        None
    })
}

/// The version of the extractor, in every extracting fetch's key: bump it whenever the same
/// archive could give another tree, so that no tree an older extractor made is restored.
/// 2: every member of a multi-member gzip and every frame of a multi-frame zstd stream.
pub const EXTRACTOR: u32 = 2;

fn extract_archive(url: &str, file: &Path, staging: &Path, x: &Extract) -> Result<(), FetchError> {
    let kind = sniff(file).map_err(io_err("cannot read", file))?;
    let open = || File::open(file).map_err(io_err("cannot read", file));
    let mut ex = Extractor { root: staging, x, entries: 0, bytes: 0 };
    let extracted = match kind {
        // Every gzip member, one after another, as gzip(1) and GNU tar read them (a file made
        // by `cat a.gz b.gz`, an eStargz layer): a single-member decoder stops after the first.
        Some(Kind::Gzip) => ex.tar(flate2::read::MultiGzDecoder::new(BufReader::new(open()?))),
        Some(Kind::Zstd) => {
            let frames = ZstdFrames::new(BufReader::new(open()?))
                .map_err(|e| FetchError::NotArchive { url: url.into(), cause: e.to_string() })?;
            ex.tar(frames)
        }
        Some(Kind::Xz) => {
            // lzma-rs decompresses into a writer: stage the tar stream in a capped temp file.
            let tar_tmp = fsutil::temp_beside(&staging.with_extension("tar"));
            let result = (|| {
                let mut out = Capped {
                    inner: File::options()
                        .read(true)
                        .write(true)
                        .create_new(true)
                        .open(&tar_tmp)
                        .map_err(io_err("cannot write", &tar_tmp))?,
                    left: x
                        .max_size
                        .saturating_add(x.max_entries.saturating_mul(1024))
                        .saturating_add(1 << 20),
                };
                lzma_rs::xz_decompress(&mut BufReader::new(open()?), &mut out).map_err(|e| match e {
                    lzma_rs::error::Error::IoError(io) if io.kind() == io::ErrorKind::FileTooLarge => {
                        FetchError::Bomb { what: "bytes", key: "max_size", limit: x.max_size }
                    }
                    e => FetchError::NotArchive { url: url.into(), cause: e.to_string() },
                })?;
                let mut f = out.inner;
                f.seek(io::SeekFrom::Start(0)).map_err(io_err("cannot read", &tar_tmp))?;
                ex.tar(BufReader::new(f))
            })();
            let _ = fs::remove_file(&tar_tmp);
            result
        }
        Some(Kind::Tar) => ex.tar(BufReader::new(open()?)),
        Some(Kind::Zip) => ex.zip(open()?, url),
        None => Err(FetchError::NotArchive { url: url.into(), cause: "unknown format".into() }),
    };
    extracted?;
    verify_links(staging)
}

/// A zstd stream of any number of frames, read as zstd(1) reads it: each frame's output after
/// the last one's, skippable frames skipped (RFC 8878, section 3: "a compressed file may
/// contain multiple frames"). ruzstd's `StreamingDecoder` reads one frame and stops; this
/// drives its [`FrameDecoder`](ruzstd::decoding::FrameDecoder) frame after frame.
struct ZstdFrames<R: BufRead> {
    source: R,
    frame: ruzstd::decoding::FrameDecoder,
    /// A frame's header was read and its data is not all collected yet.
    in_frame: bool,
}

impl<R: BufRead> ZstdFrames<R> {
    /// The reader; `Err` when the stream does not start with a zstd frame.
    fn new(source: R) -> io::Result<ZstdFrames<R>> {
        let mut z = ZstdFrames { source, frame: ruzstd::decoding::FrameDecoder::new(), in_frame: false };
        if !z.next_frame()? {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no zstd frame"));
        }
        Ok(z)
    }

    /// Read the next frame's header, skipping skippable frames; `false` at the stream's end.
    fn next_frame(&mut self) -> io::Result<bool> {
        use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
        loop {
            if self.source.fill_buf()?.is_empty() {
                return Ok(false);
            }
            match self.frame.init(&mut self.source) {
                Ok(()) => {
                    self.in_frame = true;
                    return Ok(true);
                }
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    let want = u64::from(length);
                    let skipped = io::copy(&mut (&mut self.source).take(want), &mut io::sink())?;
                    if skipped < want {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "a skippable zstd frame is cut short",
                        ));
                    }
                }
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
        }
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame && !self.next_frame()? {
                return Ok(0);
            }
            let d = &mut self.frame;
            while d.can_collect() < buf.len() && !d.is_finished() {
                let need = buf.len() - d.can_collect();
                d.decode_blocks(&mut self.source, ruzstd::decoding::BlockDecodingStrategy::UptoBytes(need))
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            }
            let n = d.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            // This frame is done: the next one, if the stream goes on.
            self.in_frame = false;
        }
    }
}

/// Each symlink is checked as it is extracted, but a chain of them (`a -> b/..` with `b` a
/// link made later) can only be judged once all exist: resolve every link, following links
/// inside the tree, and refuse any that leads out of it.
fn verify_links(root: &Path) -> Result<(), FetchError> {
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = entry.map_err(|e| FetchError::Io {
            what: "cannot read",
            path: root.to_path_buf(),
            cause: e.into(),
        })?;
        if !entry.file_type().is_symlink() {
            continue;
        }
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let parts: Vec<String> =
            rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        if !stays_inside(root, &parts) {
            return Err(FetchError::Hostile {
                entry: rel.display().to_string(),
                why: "is a symbolic link leading outside `into`",
            });
        }
    }
    Ok(())
}

/// Whether any folder on the way to `parts` (relative to `root`) is a symlink.
/// `Some` when a tar entry is a file in one of GNU's PAX sparse formats (its extended header
/// has `GNU.sparse.*` records), with the file's real name when the header gives it
/// (`GNU.sparse.name`): the entry's body is a sparse map and the pieces, not the file, and its
/// own name a stand-in (`GNUSparseFile.N/NAME`), so extracting it as is would write the wrong
/// bytes under the wrong name. GNU tar's manual documents the formats ("Storing Sparse Files").
fn pax_sparse_name<R: Read>(entry: &mut tar::Entry<'_, R>) -> Option<Option<String>> {
    let Ok(Some(extensions)) = entry.pax_extensions() else { return None };
    let mut sparse = false;
    let mut name = None;
    for e in extensions.flatten() {
        if e.key_bytes() == b"GNU.sparse.name" {
            name = Some(String::from_utf8_lossy(e.value_bytes()).into_owned());
        }
        sparse |= e.key_bytes().starts_with(b"GNU.sparse.");
    }
    sparse.then_some(name)
}

fn through_symlink(root: &Path, parts: &[String]) -> bool {
    let mut p = root.to_path_buf();
    for c in &parts[..parts.len().saturating_sub(1)] {
        p.push(c);
        if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            return true;
        }
    }
    false
}

/// Whether the path `parts` (relative to `root`) resolves inside `root`, following symlinks
/// found inside the tree (at most 40, as the kernel allows). Missing components are fine.
fn stays_inside(root: &Path, parts: &[String]) -> bool {
    let mut todo: std::collections::VecDeque<String> = parts.iter().cloned().collect();
    let mut at: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop_front() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                if at.pop().is_none() {
                    return false;
                }
                continue;
            }
            _ => {}
        }
        at.push(c);
        let here = root.join(at.join("/"));
        let Ok(meta) = fs::symlink_metadata(&here) else { continue };
        if !meta.file_type().is_symlink() {
            continue;
        }
        hops += 1;
        if hops > 40 {
            return false;
        }
        let Ok(target) = fs::read_link(&here) else { return false };
        let target = target.to_string_lossy().into_owned();
        if target.starts_with('/') {
            return false;
        }
        at.pop();
        for (i, t) in target.split('/').enumerate() {
            todo.insert(i, t.to_string());
        }
    }
    true
}

/// A writer that refuses to grow past a limit.
struct Capped<W> {
    inner: W,
    left: u64,
}

impl<W: Write> Write for Capped<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, "archive too large"));
        }
        let n = self.inner.write(buf)?;
        self.left -= n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct Extractor<'a> {
    root: &'a Path,
    x: &'a Extract,
    entries: u64,
    bytes: u64,
}

impl Extractor<'_> {
    /// The relative path an entry lands at (after strip_components), or None to skip it.
    fn target(&self, raw: &[u8]) -> Result<Option<Vec<String>>, FetchError> {
        let name = String::from_utf8_lossy(raw).into_owned();
        let Ok(text) = std::str::from_utf8(raw) else {
            return Err(FetchError::Hostile { entry: name, why: "has a name that is not UTF-8" });
        };
        if text.contains('\0') {
            return Err(FetchError::Hostile { entry: name, why: "has a NUL in its name" });
        }
        if text.starts_with('/') {
            return Err(FetchError::Hostile { entry: name, why: "has an absolute path" });
        }
        let mut parts: Vec<String> = Vec::new();
        for c in text.split('/') {
            match c {
                "" | "." => {}
                ".." => return Err(FetchError::Hostile { entry: name, why: "has a `..` component" }),
                c => parts.push(c.to_string()),
            }
        }
        let strip = self.x.strip_components as usize;
        if parts.len() <= strip {
            return Ok(None);
        }
        Ok(Some(parts.split_off(strip)))
    }

    fn count(&mut self, entry: &str) -> Result<(), FetchError> {
        self.entries += 1;
        if self.entries > self.x.max_entries {
            let _ = entry;
            return Err(FetchError::Bomb { what: "entries", key: "max_entries", limit: self.x.max_entries });
        }
        Ok(())
    }

    /// Create the parent folders of `parts`, refusing to go through a symlink.
    fn prepare(&self, parts: &[String], entry: &str) -> Result<PathBuf, FetchError> {
        let mut p = self.root.to_path_buf();
        for c in &parts[..parts.len() - 1] {
            p.push(c);
            match fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(FetchError::Hostile {
                        entry: entry.into(),
                        why: "is written through a symbolic link",
                    })
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(FetchError::Hostile { entry: entry.into(), why: "is written inside a file" })
                }
                Err(_) => fs::create_dir(&p).map_err(io_err("cannot create", &p))?,
            }
        }
        let dest = self.root.join(parts.join("/"));
        if let Ok(m) = fs::symlink_metadata(&dest) {
            if m.is_dir() && !m.file_type().is_symlink() {
                return Ok(dest);
            }
            let _ = fs::remove_file(&dest);
        }
        Ok(dest)
    }

    fn write_file(&mut self, reader: &mut dyn Read, dest: &Path, mode: u32) -> Result<(), FetchError> {
        let mut out = File::create(dest).map_err(io_err("cannot write", dest))?;
        let mut buf = vec![0u8; 128 * 1024];
        loop {
            let n = reader.read(&mut buf).map_err(io_err("cannot read the archive at", dest))?;
            if n == 0 {
                break;
            }
            self.bytes += n as u64;
            if self.bytes > self.x.max_size {
                return Err(FetchError::Bomb { what: "bytes", key: "max_size", limit: self.x.max_size });
            }
            out.write_all(&buf[..n]).map_err(io_err("cannot write", dest))?;
        }
        fs::set_permissions(dest, fs::Permissions::from_mode(safe_mode(mode)))
            .map_err(io_err("cannot set mode of", dest))
    }

    /// A symlink at `parts` pointing at `target` must stay inside the output.
    fn check_link(&self, parts: &[String], target: &str, entry: &str) -> Result<(), FetchError> {
        if target.starts_with('/') {
            return Err(FetchError::Hostile {
                entry: entry.into(),
                why: "is a symbolic link to an absolute path",
            });
        }
        let mut at: Vec<&str> = parts[..parts.len() - 1].iter().map(String::as_str).collect();
        for c in target.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    if at.pop().is_none() {
                        return Err(FetchError::Hostile {
                            entry: entry.into(),
                            why: "is a symbolic link leading outside `into`",
                        });
                    }
                }
                c => at.push(c),
            }
        }
        Ok(())
    }

    fn tar(&mut self, reader: impl Read) -> Result<(), FetchError> {
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(io_err("cannot read the archive in", self.root))?;
        for entry in entries {
            let mut entry = entry.map_err(io_err("cannot read the archive in", self.root))?;
            let raw = entry.path_bytes().into_owned();
            let name = String::from_utf8_lossy(&raw).into_owned();
            self.count(&name)?;
            let kind = entry.header().entry_type();
            let Some(parts) = self.target(&raw)? else { continue };
            match kind {
                tar::EntryType::Directory => {
                    let dest = self.prepare(&parts, &name)?;
                    fs::create_dir_all(&dest).map_err(io_err("cannot create", &dest))?;
                }
                // GNU's sparse entries (`S`, what `tar --sparse` writes in the gnu formats) read
                // back whole, holes as zeros, as the tar crate expands them.
                tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                    if let Some(real) = pax_sparse_name(&mut entry) {
                        return Err(FetchError::Hostile {
                            entry: real.unwrap_or(name),
                            why: "is a sparse file in GNU's PAX sparse format (`tar --format=posix --sparse`), \
                                  which gvbuild does not read back; make the archive without --sparse, or \
                                  in --format=gnu",
                        });
                    }
                    let dest = self.prepare(&parts, &name)?;
                    let mode = entry.header().mode().unwrap_or(0o644);
                    self.write_file(&mut entry, &dest, mode)?;
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name_bytes()
                        .map(|l| String::from_utf8_lossy(&l).into_owned())
                        .unwrap_or_default();
                    self.check_link(&parts, &target, &name)?;
                    let dest = self.prepare(&parts, &name)?;
                    std::os::unix::fs::symlink(&target, &dest).map_err(io_err("cannot create", &dest))?;
                }
                tar::EntryType::Link => {
                    let target = entry.link_name_bytes().map(|l| l.into_owned()).unwrap_or_default();
                    let linked = match self.target(&target) {
                        // The link's target must be a file extracted earlier, reached without
                        // going through a symlink (which could lead anywhere).
                        Ok(Some(t)) if !through_symlink(self.root, &t) => self.root.join(t.join("/")),
                        _ => {
                            return Err(FetchError::Hostile {
                                entry: name,
                                why: "is a hard link to a file outside the archive",
                            })
                        }
                    };
                    let inside = fs::symlink_metadata(&linked).is_ok_and(|m| m.is_file());
                    if !inside {
                        return Err(FetchError::Hostile {
                            entry: name,
                            why: "is a hard link to a file outside the archive",
                        });
                    }
                    let dest = self.prepare(&parts, &name)?;
                    fs::hard_link(&linked, &dest).map_err(io_err("cannot create", &dest))?;
                }
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                    return Err(FetchError::Hostile { entry: name, why: "is a device file or FIFO" });
                }
                tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink => {}
                _ => {
                    return Err(FetchError::Hostile {
                        entry: name,
                        why: "has an entry type gvbuild does not extract",
                    })
                }
            }
        }
        Ok(())
    }

    fn zip(&mut self, file: File, url: &str) -> Result<(), FetchError> {
        let mut archive = zip::ZipArchive::new(file)
            .map_err(|e| FetchError::NotArchive { url: url.into(), cause: e.to_string() })?;
        for i in 0..archive.len() {
            let mut f = archive
                .by_index(i)
                .map_err(|e| FetchError::NotArchive { url: url.into(), cause: e.to_string() })?;
            let name = f.name().to_string();
            self.count(&name)?;
            let Some(parts) = self.target(f.name_raw())? else { continue };
            let mode = f.unix_mode().unwrap_or(0o644);
            let file_type = mode & 0o170000;
            if f.is_dir() {
                let dest = self.prepare(&parts, &name)?;
                fs::create_dir_all(&dest).map_err(io_err("cannot create", &dest))?;
            } else if file_type == 0o120000 {
                let mut target = String::new();
                f.read_to_string(&mut target).map_err(io_err("cannot read the archive in", self.root))?;
                self.check_link(&parts, &target, &name)?;
                let dest = self.prepare(&parts, &name)?;
                std::os::unix::fs::symlink(&target, &dest).map_err(io_err("cannot create", &dest))?;
            } else if file_type == 0 || file_type == 0o100000 {
                let dest = self.prepare(&parts, &name)?;
                self.write_file(&mut f, &dest, mode)?;
            } else {
                return Err(FetchError::Hostile { entry: name, why: "is a device file or FIFO" });
            }
        }
        Ok(())
    }
}

/// Permission bits only, without setuid, setgid, sticky or world-write; always owner-readable.
fn safe_mode(mode: u32) -> u32 {
    (mode & 0o775) | 0o400
}

// The `fetch:` kind as gevulot.yaml writes it, and its validation.

/// `fetch:` after var expansion; its output is the target's one output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FetchSpec {
    pub url: String,
    pub pin: Pin,
    pub extract: Option<Extract>,
}

raw_struct! {
    /// `fetch:` a file pinned by its hash, from http(s) or file:// URLs.
    #[derive(Debug, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct RawFetch {
        /// http://, https:// or file:///absolute/path. Not part of the key: the hash is.
        #[schemars(with = "Option<String>")]
        pub url: Option<Spanned<String>> => "a URL",
        /// A git repository (any URL git can clone), checked out at `rev`, without `.git`.
        #[schemars(with = "Option<String>")]
        pub git: Option<Spanned<String>> => "a git URL",
        /// With `git`: the full commit id to check out. Branch and tag names are refused as unpinned.
        #[schemars(with = "Option<String>")]
        pub rev: Option<Spanned<String>> => "a full commit id",
        /// The sha256 of the download, 64 hex digits (`gvbuild hash URL` prints it).
        #[schemars(with = "Option<String>")]
        pub sha256: Option<Spanned<String>> => "64 hex digits",
        /// The blake3 of the download, 64 hex digits (`gvbuild hash --blake3 URL`).
        #[schemars(with = "Option<String>")]
        pub blake3: Option<Spanned<String>> => "64 hex digits",
        /// Extract the download (tar, tar.gz, tar.xz, tar.zst, zip; recognised by content) into
        /// `into`. Without it the download itself is saved as `into`.
        pub extract: Option<RawExtract> => "a map of extraction settings (`{}` for the defaults)",
        /// The step's output: a file, or the folder the archive is extracted into.
        #[schemars(with = "String")]
        pub into: Spanned<String> => "a path (the file or folder written)",
    }
}

raw_struct! {
    #[derive(Debug, Default, JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct RawExtract {
        /// Leading path components dropped from every entry (like tar's --strip-components).
        #[schemars(with = "Option<u32>")]
        pub strip_components: Option<Spanned<u32>> => "a whole number",
        /// The most bytes extraction may write (default 16G).
        #[schemars(with = "Option<String>")]
        pub max_size: Option<Spanned<String>> => "a size such as `16G`",
        /// The most entries the archive may hold (default 1000000).
        #[schemars(with = "Option<u64>")]
        pub max_entries: Option<Spanned<u64>> => "a whole number",
    }
}

/// Validate a `fetch:` step: a URL or a git repository, a well-formed pin, a valid `into`
/// (`config` checks that it stands alone). Returns the spec and its output.
pub(crate) fn validate(
    v: &mut Validator,
    n: &str,
    f: &RawFetch,
    unset: &mut Vec<(String, Span)>,
) -> Option<(FetchSpec, PathSpec)> {
    let (url, pin) = match (&f.url, &f.git) {
        (Some(url), None) => {
            let url_span = url.referenced;
            let (url, whole) = v.expand_checked(url, unset);
            let pin = download_pin(v, n, f, whole.then_some(url.as_str()), url_span, unset);
            (url, pin)
        }
        (None, Some(git)) => {
            let git_span = git.referenced;
            let url = v.expand(git, unset);
            let pin = git_pin(v, n, f, git_span, unset);
            (url, pin)
        }
        (Some(_), Some(git)) => {
            v.errors.push(ConfigError::Invalid {
                message: format!("fetch `{n}` has both `url` and `git`"),
                src: v.src.named(),
                span: git.referenced.into(),
                label: "one source per fetch".into(),
                help: Some("keep `url` for a download, or `git` with `rev` for a repository".into()),
            });
            return None;
        }
        (None, None) => {
            v.errors.push(ConfigError::Invalid {
                message: format!("fetch `{n}` names nothing to fetch"),
                src: v.src.named(),
                span: f.into.referenced.into(),
                label: "fetched from where?".into(),
                help: Some(
                    "add `url:` (with `sha256:`) for a download, or `git:` with `rev:` for a repository"
                        .into(),
                ),
            });
            return None;
        }
    };
    let extract = f.extract.as_ref().map(|x| {
        let max_size = match &x.max_size {
            None => DEFAULT_MAX_SIZE,
            Some(m) => crate::fsutil::parse_size(&m.value).unwrap_or_else(|| {
                v.errors.push(ConfigError::Invalid {
                    message: format!("`max_size` of fetch `{n}` is not a size"),
                    src: v.src.named(),
                    span: m.referenced.into(),
                    label: "not a size".into(),
                    help: Some("write a size such as 512M or 4G".into()),
                });
                0
            }),
        };
        Extract {
            strip_components: x.strip_components.as_ref().map_or(0, |s| s.value),
            max_size,
            max_entries: x.max_entries.as_ref().map_or(DEFAULT_MAX_ENTRIES, |m| m.value),
        }
    });
    let into = v.output(&f.into, n, unset)?;
    let pin = pin?;
    Some((FetchSpec { url, pin, extract }, into))
}

/// The `sha256:` or `blake3:` pin of a download.
fn download_pin(
    v: &mut Validator,
    n: &str,
    f: &RawFetch,
    url: Option<&str>,
    url_span: Span,
    unset: &mut Vec<(String, Span)>,
) -> Option<Pin> {
    // A URL with an undefined var in it is reported on its own; the hints name no URL then.
    let url = url.unwrap_or("URL");
    match (&f.sha256, &f.blake3) {
        (Some(_), Some(b)) => {
            v.errors.push(ConfigError::Invalid {
                message: format!("fetch `{n}` pins both `sha256` and `blake3`"),
                src: v.src.named(),
                span: b.referenced.into(),
                label: "one pin is enough".into(),
                help: Some("keep one of them".into()),
            });
            None
        }
        (None, None) => {
            v.errors.push(ConfigError::Invalid {
                message: format!("fetch `{n}` has no pinned hash"),
                src: v.src.named(),
                span: url_span.into(),
                label: "downloaded unverified".into(),
                help: Some(format!(
                    "run `gvbuild hash {url}` and paste the `sha256:` line it prints into this `fetch:` (or pin it with a var: `sha256: ${{name}}`)"
                )),
            });
            None
        }
        (Some(h), None) | (None, Some(h)) => {
            let algo = if f.sha256.is_some() { Algo::Sha256 } else { Algo::Blake3 };
            let before = unset.len();
            let (hex, whole) = v.expand_checked(h, unset);
            let hex = hex.trim().to_ascii_lowercase();
            // A var without a value is pinned later; an undefined one is its own error.
            let pinned_later = unset.len() > before;
            if !whole {
                None
            } else if !pinned_later && (hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit())) {
                v.errors.push(ConfigError::Invalid {
                    message: format!("the {} of fetch `{n}` is not 64 hex digits", algo.name()),
                    src: v.src.named(),
                    span: h.referenced.into(),
                    label: "not a hash".into(),
                    help: Some(format!("`gvbuild hash {url}` prints the line to paste")),
                });
                None
            } else {
                Some(Pin { algo, hex })
            }
        }
    }
}

/// The `rev:` of a git fetch: a full commit id, nothing else.
fn git_pin(
    v: &mut Validator,
    n: &str,
    f: &RawFetch,
    git_span: Span,
    unset: &mut Vec<(String, Span)>,
) -> Option<Pin> {
    for (field, loc) in [
        ("sha256", f.sha256.as_ref().map(|s| &s.referenced)),
        ("blake3", f.blake3.as_ref().map(|s| &s.referenced)),
    ] {
        if let Some(loc) = loc {
            v.errors.push(ConfigError::Invalid {
                message: format!("`{field}` does not apply to a git fetch (`{n}`)"),
                src: v.src.named(),
                span: (*loc).into(),
                label: "not for git".into(),
                help: Some("a git fetch is pinned by `rev:`, a full commit id".into()),
            });
        }
    }
    if f.extract.is_some() {
        v.errors.push(ConfigError::Invalid {
            message: format!("`extract` does not apply to a git fetch (`{n}`)"),
            src: v.src.named(),
            span: git_span.into(),
            label: "a git fetch is a checkout".into(),
            help: Some("the output is the tree at `rev`, without `.git`; remove `extract`".into()),
        });
    }
    let Some(rev) = &f.rev else {
        v.errors.push(ConfigError::Invalid {
            message: format!("git fetch `{n}` has no `rev`"),
            src: v.src.named(),
            span: git_span.into(),
            label: "checked out at which commit?".into(),
            help: Some("add `rev:` with the full commit id (`git rev-parse BRANCH` prints it)".into()),
        });
        return None;
    };
    let before = unset.len();
    let (hex, whole) = v.expand_checked(rev, unset);
    let hex = hex.trim().to_ascii_lowercase();
    let full = matches!(hex.len(), 40 | 64) && hex.bytes().all(|b| b.is_ascii_hexdigit());
    if !whole {
        return None;
    }
    if unset.len() == before && !full {
        v.errors.push(ConfigError::Invalid {
            message: format!("`rev` of git fetch `{n}` is not a full commit id"),
            src: v.src.named(),
            span: rev.referenced.into(),
            label: "a branch, tag or short id is not a pin".into(),
            help: Some(
                "a branch or tag can move: pin the full commit id (`git rev-parse REF` prints it)".into(),
            ),
        });
        return None;
    }
    Some(Pin { algo: Algo::GitCommit, hex })
}

/// `fetch URL -> into`: the step in one line.
pub fn summary(f: &FetchSpec, into: &str) -> String {
    format!("fetch {} -> {into}", f.url)
}

/// A fetch's key is what its pin says it is, and how it is unpacked: the URL is not part of it
/// (a mirror gives the same bytes).
pub fn key(f: &FetchSpec) -> super::KindKey {
    let extract = match &f.extract {
        None => "save".to_string(),
        Some(x) => format!(
            "extract v{EXTRACTOR} strip_components={} max_size={} max_entries={}",
            x.strip_components, x.max_size, x.max_entries
        ),
    };
    super::KindKey {
        kind: "fetch",
        command: format!("{}:{} {extract}", f.pin.algo.name(), f.pin.hex),
        tools: std::collections::BTreeMap::new(),
        keys_deps: true,
    }
}

impl super::Kind for FetchSpec {
    fn summary(&self, into: &str) -> String {
        summary(self, into)
    }
    fn key(&self, _env: &super::StepEnv) -> Result<super::KindKey, super::KeyError> {
        Ok(key(self))
    }
    /// None: a fetch reads nothing of the project.
    fn key_inputs(
        &self,
        _env: &super::StepEnv,
    ) -> Result<std::collections::BTreeMap<String, crate::fingerprint::FileId>, super::KeyError> {
        Ok(std::collections::BTreeMap::new())
    }
    fn execute(&self, env: &super::StepEnv) -> Result<super::Executed, super::KindFailed> {
        execute(self, env)
    }
}

/// Download (or reuse from the cache's `downloads/`), check the pin, and write `env.into`.
pub fn execute(f: &FetchSpec, env: &super::StepEnv) -> Result<super::Executed, super::KindFailed> {
    let command = format!("fetch {}", f.url);
    let into = env.root.join(env.into);
    let downloads = env.cache_dir.join("downloads");
    let slot = env.slots.acquire();
    let fetched = run(&f.url, &f.pin, f.extract.as_ref(), &into, &downloads, env.progress);
    drop(slot);
    fetched.map_err(|e| super::KindFailed::new(&command, e))?;
    Ok(super::Executed { command, ..Default::default() })
}
