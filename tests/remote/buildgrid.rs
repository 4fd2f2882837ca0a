//! A real BuildGrid (the `bgd` of the Python venv that `GVBUILD_TEST_REAPI_PYTHON` names) on
//! 127.0.0.1, cache only: a disk CAS, an in-memory action cache over it, ByteStream, and no
//! scheduler or database. Its log (`-vv`: one line per call, with the method's name) is kept in
//! its folder for the tests to read. Stopped when dropped.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::nginx::Certs;
use super::postgres::Postgres;

/// The REAPI instance the tests use: a name with a slash, as a team might choose.
pub const INSTANCE: &str = "gvbuild/main";

/// BuildGrid hashes with `buildgrid.server.settings.HASH` and has no setting for it. This
/// launcher swaps in SHA-1 before BuildGrid's modules read it, so the server's capabilities
/// honestly offer SHA1 and nothing else.
const SHA1_LAUNCHER: &str = "
import hashlib, sys
import buildgrid.server.settings as settings
settings.HASH = hashlib.sha1
settings.HASH_LENGTH = 40
import buildgrid.server.utils.digests as digests
from buildgrid._protos.build.bazel.remote.execution.v2.remote_execution_pb2 import DigestFunction
digests.get_hash_type = lambda: DigestFunction.SHA1
from buildgrid.server.app import cli
sys.argv = ['bgd'] + sys.argv[1:]
cli()
";

/// The venv's Python: `GVBUILD_TEST_REAPI_PYTHON`, which CI sets (without it, the tests that
/// use BuildGrid are ignored outside CI, and fail in CI).
pub fn python() -> PathBuf {
    std::env::var_os("GVBUILD_TEST_REAPI_PYTHON")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .expect("GVBUILD_TEST_REAPI_PYTHON names no Python with BuildGrid (.ci/run sets it up)")
}

/// `bgd`, beside the venv's Python.
pub fn bgd() -> PathBuf {
    Version::V0_4.bgd()
}

/// Which BuildGrid serves: 0.4.4 (Python 3.11, `GVBUILD_TEST_REAPI_PYTHON`) or 0.9.x, the
/// current release (Python 3.13, `GVBUILD_TEST_BUILDGRID09_PYTHON`; .ci/run sets both up where
/// the machine has the Python).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V0_4,
    V0_9,
}

impl Version {
    pub fn python(self) -> PathBuf {
        match self {
            Version::V0_4 => python(),
            Version::V0_9 => std::env::var_os("GVBUILD_TEST_BUILDGRID09_PYTHON")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .expect(
                    "GVBUILD_TEST_BUILDGRID09_PYTHON names no Python with BuildGrid 0.9 (.ci/run sets it up)",
                ),
        }
    }

    pub fn bgd(self) -> PathBuf {
        let python = self.python();
        python.parent().map(|d| d.join("bgd")).unwrap_or_else(|| "bgd".into())
    }

    /// The database URL as this version takes it: 0.4 names the driver (psycopg2), 0.9 refuses
    /// that and takes a plain `postgresql://` URL.
    pub fn database_url(self, pg: &Postgres) -> String {
        match self {
            Version::V0_4 => pg.url(),
            Version::V0_9 => pg.url().replacen("postgresql+psycopg2://", "postgresql://", 1),
        }
    }
}

pub struct BuildGrid {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
    tls: bool,
    /// The execution server's database; dropped (stopped) after the server.
    pg: Option<Postgres>,
    pub version: Version,
}

/// What the server is like beyond the plain cache.
enum Kind<'a> {
    Plain,
    Sha1,
    Tls(&'a Certs),
    /// Every call needs `authorization: Bearer JWT`, signed (HS256) with `auth.secret`.
    Jwt,
    /// An execution server: Execution, Operations and Bots beside the cache, its SQL scheduler
    /// on this PostgreSQL, matching actions to bots by these platform keys (OSFamily and ISA
    /// always are).
    Exec(&'a Postgres, &'a [&'a str]),
    /// [`Kind::Exec`] with its CAS on disk (`!disk-storage`) instead of in memory, where a test
    /// can evict a blob as an operator's clean-up would.
    ExecOnDisk(&'a Postgres, &'a [&'a str]),
    /// A cache whose server serves at most this many calls at once (`thread-pool-size`;
    /// 0.4.4 accepts 5 and up), answering the rest `RESOURCE_EXHAUSTED`.
    Pool(usize),
}

impl BuildGrid {
    pub fn start() -> BuildGrid {
        BuildGrid::start_with(Kind::Plain, Version::V0_4)
    }

    /// A cache-only BuildGrid of `version`, with its defaults (the thread pool included).
    pub fn start_on(version: Version) -> BuildGrid {
        BuildGrid::start_with(Kind::Plain, version)
    }

    /// A BuildGrid whose CAS uses SHA-1 (see [`SHA1_LAUNCHER`]).
    pub fn start_sha1() -> BuildGrid {
        BuildGrid::start_with(Kind::Sha1, Version::V0_4)
    }

    /// TLS with the server certificate of `certs`, requiring a client certificate of its CA.
    pub fn start_tls(certs: &Certs) -> BuildGrid {
        BuildGrid::start_with(Kind::Tls(certs), Version::V0_4)
    }

    /// A cache-only BuildGrid with a small thread pool, as a user sizes it for a small machine.
    pub fn start_pool(version: Version, threads: usize) -> BuildGrid {
        BuildGrid::start_with(Kind::Pool(threads), version)
    }

    /// A BuildGrid that refuses calls without a JWT; [`BuildGrid::token`] makes one.
    pub fn start_jwt() -> BuildGrid {
        BuildGrid::start_with(Kind::Jwt, Version::V0_4)
    }

    /// An execution server with an in-memory CAS and action cache, its scheduler on a
    /// PostgreSQL of its own, and the short timeouts of a test: a bot session expires 5 s after
    /// its last call (what BuildGrid needs at least: a bot's long poll is 0.8 × that, and must
    /// be 3 s or more), expired sessions are reaped every second, and jobs are assigned every
    /// 0.2 s. `match_keys` are the platform keys actions may use.
    pub fn start_exec(match_keys: &[&str]) -> BuildGrid {
        BuildGrid::start_exec_with(match_keys, false, Version::V0_4)
    }

    /// [`BuildGrid::start_exec`] of `version`.
    pub fn start_exec_on(version: Version, match_keys: &[&str]) -> BuildGrid {
        BuildGrid::start_exec_with(match_keys, false, version)
    }

    /// [`BuildGrid::start_exec`] with the CAS on disk: [`BuildGrid::cas_object`] names a
    /// blob's file, which a test may remove.
    pub fn start_exec_on_disk(match_keys: &[&str]) -> BuildGrid {
        BuildGrid::start_exec_with(match_keys, true, Version::V0_4)
    }

    fn start_exec_with(match_keys: &[&str], on_disk: bool, version: Version) -> BuildGrid {
        let pg = Postgres::start();
        let out = Command::new(version.bgd())
            .args(["migrate", "apply"])
            .arg(version.database_url(&pg))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bgd migrate apply failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let kind = if on_disk { Kind::ExecOnDisk(&pg, match_keys) } else { Kind::Exec(&pg, match_keys) };
        let mut g = BuildGrid::start_with(kind, version);
        g.pg = Some(pg);
        g
    }

    fn start_with(kind: Kind<'_>, version: Version) -> BuildGrid {
        let dir = tempfile::Builder::new().prefix("gvbuildgrid").tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let d = dir.path().display();
        let channel = match &kind {
            Kind::Tls(c) => format!(
                "insecure-mode: false\n    credentials:\n      tls-server-key: {0}/server.key\n      \
                 tls-server-cert: {0}/server.pem\n      tls-client-certs: {0}/ca.pem",
                c.dir.path().display()
            ),
            _ => "insecure-mode: true".to_string(),
        };
        let auth = match kind {
            Kind::Jwt => {
                std::fs::write(dir.path().join("auth.secret"), "gvbuild-test-jwt-secret").unwrap();
                format!("method: jwt\n  secret: {d}/auth.secret\n  algorithm: hs256")
            }
            _ => "method: none".to_string(),
        };
        let pool = match kind {
            Kind::Pool(n) => format!("thread-pool-size: {n}\n"),
            _ => String::new(),
        };
        let conf = match kind {
            Kind::Exec(_, keys) => exec_config(keys),
            Kind::ExecOnDisk(_, keys) => {
                let memory = "  - !lru-storage &cas\n    size: 2GB\n";
                let text = exec_config(keys);
                assert!(text.contains(memory), "the example's CAS is no longer `{memory}`");
                text.replacen(memory, &format!("  - !disk-storage &cas\n    path: {d}/cas\n"), 1)
            }
            _ => format!(
                r#"server:
  - !channel
    address: "127.0.0.1:{port}"
    {channel}
authorization:
  {auth}
{pool}storages:
  - !disk-storage &cas
    path: {d}/cas
caches:
  - !lru-action-cache &ac
    storage: *cas
    max-cached-refs: 100000
    allow-updates: true
    cache-failed-actions: false
instances:
  - name: "{INSTANCE}"
    services:
      - !action-cache
        cache: *ac
      - !cas
        storage: *cas
      - !bytestream
        storage: *cas
"#
            ),
        };
        let conf_path = dir.path().join("buildgrid.yml");
        std::fs::write(&conf_path, conf).unwrap();
        let log = std::fs::File::create(dir.path().join("bgd.log")).unwrap();
        let mut cmd = if matches!(kind, Kind::Sha1) {
            let mut c = Command::new(python());
            c.arg("-c").arg(SHA1_LAUNCHER);
            c
        } else {
            Command::new(version.bgd())
        };
        if let Kind::Exec(pg, _) | Kind::ExecOnDisk(pg, _) = &kind {
            cmd.envs(exec_env(port, &version.database_url(pg)));
        }
        let child = cmd
            .args(["server", "start", "-vv"])
            .arg(&conf_path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start BuildGrid ({}): {e}", version.bgd().display()));
        let tls = matches!(kind, Kind::Tls(_));
        let mut g = BuildGrid { dir, port, child: Some(child), tls, pg: None, version };
        // BuildGrid imports a great deal of Python before it listens: seconds, more on a busy machine.
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = g.child.as_mut().and_then(|c| c.try_wait().unwrap());
            assert!(
                exited.is_none() && start.elapsed() < Duration::from_secs(90),
                "BuildGrid did not start listening ({exited:?}); its log:\n{}",
                g.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        g
    }

    /// The cache's URL, with the instance name as its path.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "grpcs" } else { "grpc" };
        format!("{scheme}://127.0.0.1:{}/{INSTANCE}", self.port)
    }

    /// A JWT the [`BuildGrid::start_jwt`] server accepts for the next hour (made with PyJWT,
    /// which BuildGrid uses to check it).
    pub fn token(&self) -> String {
        let out = Command::new(python())
            .arg("-c")
            .arg(
                "import jwt, sys, time; print(jwt.encode({'sub': 'gvbuild-test', 'exp': int(time.time()) + 3600}, \
                 open(sys.argv[1]).read().strip(), algorithm='HS256'))",
            )
            .arg(self.dir.path().join("auth.secret"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Where a disk CAS keeps the blob of SHA-256 `hash` (BuildGrid's `DiskStorage`:
    /// `PATH/cas/objects/HH/REST`).
    pub fn cas_object(&self, hash: &str) -> PathBuf {
        self.dir.path().join("cas/cas/objects").join(&hash[..2]).join(&hash[2..])
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bgd.log")).unwrap_or_default()
    }

    /// How many calls of gRPC method `name` (`Write`, `BatchReadBlobs`, ...) BuildGrid logged.
    pub fn calls(&self, name: &str) -> usize {
        let needle = format!("method=\"{name}\"");
        self.log().lines().filter(|l| l.contains("Received request") && l.contains(&needle)).count()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The execution server's config (see [`BuildGrid::start_exec`]); the keys and their meaning
/// are in BuildGrid 0.4.4's `!sql-scheduler` and `!priority-age-assigner`.
/// The execution server's config: `examples/remote-exec/buildgrid.yml`, the one
/// docs/remote-execution.md tells users to start, as it is; the port, database and instance go in through the environment
/// (see [`exec_env`]). Platform keys a test needs beyond the file's are added to its list.
fn exec_config(keys: &[&str]) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/remote-exec/buildgrid.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    // A key a test needs beyond the file's (a made-up tool) joins its list, as a user would add it.
    let extra: Vec<String> = keys
        .iter()
        .filter(|k| !text.contains(&format!("\"{k}\"")) && !text.contains(&format!(" {k},")))
        .map(|k| format!("{k:?}, "))
        .collect();
    let list = "match-property-keys: [";
    assert!(text.contains(list), "{} has no {list}", path.display());
    text.replacen(list, &format!("{list}{}", extra.concat()), 1)
}

/// The variables `examples/remote-exec/buildgrid.yml` expands.
fn exec_env(port: u16, db: &str) -> [(&'static str, String); 3] {
    [("BGD_PORT", port.to_string()), ("BGD_PG", db.to_string()), ("BGD_INSTANCE", INSTANCE.to_string())]
}

impl Drop for BuildGrid {
    fn drop(&mut self) {
        self.stop();
    }
}
