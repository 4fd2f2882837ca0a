//! A tiny HTTP/1.1 server on 127.0.0.1 for the fetch tests: serves bytes by path, answers 404 for
//! unknown paths, can fail the first N requests to a path with a status (to test retries) or cut
//! a body short, and counts the requests to each path ("downloaded once", "downloaded nothing").
//! One thread accepts; each connection gets its own thread, one request, then `Connection: close`.
//! It stops when dropped.
//!
//! ```ignore
//! let s = Server::start();
//! s.serve("/pkg.tar.gz", bytes);
//! s.fail_first("/pkg.tar.gz", 500, 2);
//! let url = s.url("/pkg.tar.gz");
//! assert_eq!(s.requests("/pkg.tar.gz"), 1);
//! ```
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Default)]
struct State {
    files: HashMap<String, Vec<u8>>,
    /// Path -> (status, how many more requests get it).
    failures: HashMap<String, (u16, usize)>,
    /// Paths whose body is cut in half (the Content-Length still announces all of it).
    truncated: HashMap<String, bool>,
    requests: HashMap<String, usize>,
}

pub struct Server {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let state = state.clone();
                    std::thread::spawn(move || handle(conn, &state));
                }
            })
        };
        Server { addr, state, stop, thread: Some(thread) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serve these bytes at `path` (with or without its leading `/`), from now on.
    pub fn serve(&self, path: &str, body: impl Into<Vec<u8>>) -> &Self {
        self.state().files.insert(norm(path), body.into());
        self
    }

    /// Stop serving `path`: 404 from now on.
    pub fn remove(&self, path: &str) {
        self.state().files.remove(&norm(path));
    }

    /// The next `times` requests to `path` are answered with `status` (and a short body); the
    /// ones after that normally. `usize::MAX`: always.
    pub fn fail_first(&self, path: &str, status: u16, times: usize) -> &Self {
        self.state().failures.insert(norm(path), (status, times));
        self
    }

    /// Answer `path` with a body cut in half and the connection closed, while the
    /// `Content-Length` announces the whole of it.
    pub fn truncate(&self, path: &str) -> &Self {
        self.state().truncated.insert(norm(path), true);
        self
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, norm(path))
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests made to `path` so far, whatever their answer.
    pub fn requests(&self, path: &str) -> usize {
        self.state().requests.get(&norm(path)).copied().unwrap_or(0)
    }

    /// Requests made to any path so far.
    pub fn total_requests(&self) -> usize {
        self.state().requests.values().sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop, which then sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A URL on 127.0.0.1 where nothing listens: the port of a listener just closed.
pub fn refused_url(path: &str) -> String {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("http://127.0.0.1:{port}{}", norm(path))
}

fn norm(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Read the request head (GET and HEAD carry no body); None if the client sent nothing usable.
fn read_head(conn: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > 64 * 1024 {
            return None;
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

fn handle(mut conn: TcpStream, state: &Mutex<State>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
    let Some(head) = read_head(&mut conn) else { return };
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let method = words.next().unwrap_or("").to_string();
    let target = words.next().unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/").to_string();

    let (status, body, truncated) = {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        *st.requests.entry(path.clone()).or_insert(0) += 1;
        let failing = match st.failures.get_mut(&path) {
            Some((status, left)) if *left > 0 => {
                *left = left.saturating_sub(1);
                Some(*status)
            }
            _ => None,
        };
        match (failing, st.files.get(&path)) {
            (Some(status), _) => (status, format!("{status} {}\n", reason(status)).into_bytes(), false),
            (None, Some(body)) => (200, body.clone(), st.truncated.contains_key(&path)),
            (None, None) => (404, b"404 Not Found\n".to_vec(), false),
        }
    };

    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\
         Connection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    if method != "HEAD" {
        let sent = if truncated { &body[..body.len() / 2] } else { &body[..] };
        let _ = conn.write_all(sent);
    }
    let _ = conn.flush();
    let _ = conn.shutdown(Shutdown::Write);
    // Let the client read to the end before the socket closes (closing with unread input would
    // reset the connection).
    let mut rest = [0u8; 1024];
    while matches!(conn.read(&mut rest), Ok(n) if n > 0) {}
}
