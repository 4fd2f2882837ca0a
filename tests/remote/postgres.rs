//! A real PostgreSQL (Debian's, `/usr/lib/postgresql/N/bin`, or `GVBUILD_TEST_PG_BIN`) for
//! BuildGrid's execution scheduler: a cluster of its own in a temp folder, on a free port of
//! 127.0.0.1, one database `bgd` owned by the superuser `bgd` with trust authentication.
//! PostgreSQL refuses to run as root, so as root it runs as the unprivileged user `postgres`
//! (created if missing). Stopped when dropped.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use tempfile::TempDir;

const OS_USER: &str = "postgres";

/// PostgreSQL's programs: `GVBUILD_TEST_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("GVBUILD_TEST_PG_BIN").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|r| r.flatten().map(|e| e.path().join("bin")).filter(|b| b.join("initdb").is_file()).collect())
        .unwrap_or_default();
    found.sort_by_key(|p| {
        p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok())
    });
    found
        .pop()
        .expect("no PostgreSQL under /usr/lib/postgresql (.ci/run installs it), nor GVBUILD_TEST_PG_BIN")
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

pub struct Postgres {
    dir: TempDir,
    port: u16,
    root: bool,
}

impl Postgres {
    pub fn start() -> Postgres {
        let root = is_root();
        let dir = tempfile::Builder::new().prefix("gvbuild-pg").tempdir().unwrap();
        if root {
            let known = Command::new("id").arg(OS_USER).stdout(Stdio::null()).stderr(Stdio::null()).status();
            if !known.map(|s| s.success()).unwrap_or(false) {
                let made = Command::new("useradd")
                    .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OS_USER])
                    .status()
                    .unwrap();
                assert!(made.success(), "cannot create the user {OS_USER} for PostgreSQL");
            }
            let ok = Command::new("chown").arg(OS_USER).arg(dir.path()).status().unwrap();
            assert!(ok.success());
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let pg = Postgres { dir, port, root };
        pg.run("initdb", &["-D", &pg.data(), "-U", "bgd", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"]);
        let opts = format!(
            "-p {port} -h 127.0.0.1 -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
             -c shared_buffers=32MB -c max_connections=60",
            pg.dir.path().display()
        );
        let log = format!("{}/server.log", pg.dir.path().display());
        pg.run("pg_ctl", &["-D", &pg.data(), "-l", &log, "-w", "-t", "60", "-o", &opts, "start"]);
        pg.run("createdb", &["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "bgd", "bgd"]);
        pg
    }

    fn data(&self) -> String {
        format!("{}/data", self.dir.path().display())
    }

    /// A PostgreSQL program, as the `postgres` user when we are root.
    fn run(&self, program: &str, args: &[&str]) {
        let exe = bin_dir().join(program);
        let mut cmd = if self.root {
            let mut c = Command::new("runuser");
            c.args(["-u", OS_USER, "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd.args(args).current_dir(self.dir.path()).stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    /// The SQLAlchemy URL BuildGrid takes: `postgresql+psycopg2://` (a plain `postgresql://`
    /// picks psycopg 3, under which BuildGrid's LISTEN/NOTIFY wake-ups do not work).
    pub fn url(&self) -> String {
        format!("postgresql+psycopg2://bgd@127.0.0.1:{}/bgd", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let exe = bin_dir().join("pg_ctl");
        let data = self.data();
        let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
        let mut cmd = if self.root {
            let mut c = Command::new("runuser");
            c.args(["-u", OS_USER, "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let _ = cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}
