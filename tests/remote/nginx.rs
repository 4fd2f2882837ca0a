//! A real nginx with WebDAV on 127.0.0.1, in a folder of its own: the shared cache the tests
//! build against. `PUT` writes under `www/`, `GET` and `HEAD` read it back; nginx checks
//! nothing, which is what the tests of gvbuild's own checks need. One process
//! (`master_process off`), stopped when dropped.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The nginx binary: `GVBUILD_TEST_NGINX`, else /usr/sbin/nginx, else `nginx` on PATH.
pub fn nginx_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("GVBUILD_TEST_NGINX").filter(|p| !p.is_empty()) {
        return p.into();
    }
    let sbin = Path::new("/usr/sbin/nginx");
    if sbin.exists() {
        return sbin.into();
    }
    "nginx".into()
}

pub struct Nginx {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
    tls: bool,
}

/// A test CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl.
pub struct Certs {
    pub dir: TempDir,
}

impl Certs {
    pub fn new() -> Certs {
        let dir = tempfile::Builder::new().prefix("gvcerts").tempdir().unwrap();
        let d = dir.path();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(d).output().expect("openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=gvbuild test CA"];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
        openssl(&ca);
        std::fs::write(d.join("server.ext"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
            .unwrap();
        std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for who in ["server", "client"] {
            let (key, csr, pem, ext) =
                (format!("{who}.key"), format!("{who}.csr"), format!("{who}.pem"), format!("{who}.ext"));
            let mut req = vec!["req", "-subj", "/CN=127.0.0.1"];
            req.extend(ec);
            req.extend(["-keyout", &key, "-out", &csr]);
            openssl(&req);
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &pem,
            ]);
        }
        Certs { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Nginx {
    pub fn start() -> Nginx {
        Nginx::start_with(None)
    }

    /// HTTPS with the server certificate of `certs`, requiring a client certificate of its CA.
    pub fn start_tls(certs: &Certs) -> Nginx {
        Nginx::start_with(Some(certs))
    }

    /// Start the stopped server again, on its port and folder, with what it held.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Some(spawn(self.dir.path()));
        self.wait_listening();
    }

    fn wait_listening(&self) {
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nginx did not start listening; its error log:\n{}",
                std::fs::read_to_string(self.dir.path().join("logs/error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn start_with(certs: Option<&Certs>) -> Nginx {
        let dir = tempfile::Builder::new().prefix("gvnginx").tempdir().unwrap();
        for sub in ["www/cache", "tmp", "logs"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let d = dir.path().display();
        // As root, nginx would switch its workers to `nobody`, who cannot write the folder.
        let root = std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1).map(|euid| euid == "0"))
            .unwrap_or(false);
        let user = if root { "user root;" } else { "" };
        let tls = match certs {
            Some(c) => format!(
                "ssl_certificate {0}/server.pem;\n    ssl_certificate_key {0}/server.key;\n    \
                 ssl_client_certificate {0}/ca.pem;\n    ssl_verify_client on;",
                c.dir.path().display()
            ),
            None => String::new(),
        };
        let ssl = if certs.is_some() { " ssl" } else { "" };
        let conf = format!(
            "{user}
daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/logs/error.log;
events {{ worker_connections 256; }}
http {{
  access_log {d}/logs/access.log;
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;
  server {{
    listen 127.0.0.1:{port}{ssl};
    {tls}
    root {d}/www;
    location / {{
      dav_methods PUT DELETE;
      create_full_put_path on;
      client_max_body_size 0;
    }}
  }}
}}
"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = spawn(dir.path());
        let n = Nginx { dir, port, child: Some(child), tls: certs.is_some() };
        n.wait_listening();
        n
    }

    /// The cache's URL: a path below the server's root, as a team would set it up.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/cache", self.port)
    }

    /// The folder nginx serves the cache from (`ac/` and `cas/` appear in it).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("www/cache")
    }

    pub fn access_log(&self) -> PathBuf {
        self.dir.path().join("logs/access.log")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Every file under the cache folder: relative path -> bytes.
    pub fn files(&self) -> std::collections::BTreeMap<String, Vec<u8>> {
        let root = self.root();
        walkdir::WalkDir::new(&root)
            .into_iter()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().is_file())
            .map(|e| {
                (
                    e.path().strip_prefix(&root).unwrap().display().to_string(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// nginx on the config in folder `dir`.
fn spawn(dir: &std::path::Path) -> std::process::Child {
    Command::new(nginx_bin())
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-p")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start nginx ({}): {e}", nginx_bin().display()))
}
