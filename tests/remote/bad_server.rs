//! A Bazel HTTP cache on 127.0.0.1 that can misbehave: it keeps what is `PUT` in memory and
//! serves it back, until told to answer every request with a status, to wait before answering,
//! to cut blob bodies short, to announce a `Content-Length` that is not the body's, or to refuse
//! uploads with 413. It records each request's method, path and headers. Each connection gets a
//! thread, one request, then `Connection: close`. It stops when dropped.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Normal,
    /// Every request answered with this status.
    Status(u16),
    /// Every request waits this long before its answer.
    Slow(Duration),
    /// `GET /cas/...` sends half the body, then closes (the length announces all of it).
    Truncated,
    /// `GET /cas/...` announces one byte fewer than it sends.
    LyingLength,
    /// `PUT` is answered 413 Payload Too Large; reads work.
    RefuseUploads,
    /// Every `GET` and `HEAD` is answered 200 with an HTML page (a misrouted proxy).
    HtmlPages,
    /// The first request for each method and path is answered with this status (429 or 503),
    /// with `Retry-After: SECONDS` when given; asked again, it is served.
    Busy(u16, Option<u64>),
}

#[derive(Default)]
struct State {
    files: HashMap<String, Vec<u8>>,
    requests: Vec<Request>,
    /// Method and path of each request turned away in [`Mode::Busy`].
    turned_away: std::collections::HashSet<(String, String)>,
}

#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

pub struct BadServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    mode: Arc<Mutex<Mode>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BadServer {
    pub fn start(mode: Mode) -> BadServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let mode = Arc::new(Mutex::new(mode));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, mode, stop) = (state.clone(), mode.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (state, mode) = (state.clone(), mode.clone());
                    std::thread::spawn(move || handle(conn, &state, &mode));
                }
            })
        };
        BadServer { addr, state, mode, stop, thread: Some(thread) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner()) = mode;
    }

    pub fn url(&self) -> String {
        format!("http://{}/cache", self.addr)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state().requests.clone()
    }

    /// Paths stored so far (`/cache/ac/...`, `/cache/cas/...`).
    pub fn stored(&self) -> Vec<String> {
        let mut v: Vec<String> = self.state().files.keys().cloned().collect();
        v.sort();
        v
    }
}

impl Drop for BadServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_request(conn: &mut TcpStream) -> Option<(Request, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut words = lines.next().unwrap_or("").split_whitespace();
    let method = words.next().unwrap_or("").to_string();
    let path = words.next().unwrap_or("/").split('?').next().unwrap_or("/").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize =
        headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    Some((Request { method, path, headers }, body))
}

fn handle(mut conn: TcpStream, state: &Mutex<State>, mode: &Mutex<Mode>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
    let Some((req, body)) = read_request(&mut conn) else { return };
    let mode = *mode.lock().unwrap_or_else(|e| e.into_inner());
    let (status, payload) = {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        st.requests.push(req.clone());
        let first =
            matches!(mode, Mode::Busy(..)) && st.turned_away.insert((req.method.clone(), req.path.clone()));
        match (mode, req.method.as_str()) {
            (Mode::Status(s), _) => (s, Vec::new()),
            (Mode::Busy(s, _), _) if first => (s, Vec::new()),
            (Mode::RefuseUploads, "PUT") => (413, Vec::new()),
            (Mode::HtmlPages, "GET" | "HEAD") => (200, b"<html><body>Sign in</body></html>".to_vec()),
            (_, "PUT") => {
                st.files.insert(req.path.clone(), body);
                (201, Vec::new())
            }
            (_, _) => match st.files.get(&req.path) {
                Some(b) => (200, b.clone()),
                None => (404, Vec::new()),
            },
        }
    };
    if let Mode::Slow(d) = mode {
        std::thread::sleep(d);
    }
    let is_cas_get = req.method == "GET" && req.path.contains("/cas/") && status == 200;
    let announced = match mode {
        Mode::LyingLength if is_cas_get => payload.len().saturating_sub(1),
        _ => payload.len(),
    };
    let sent: &[u8] = match mode {
        Mode::Truncated if is_cas_get => &payload[..payload.len() / 2],
        _ => &payload,
    };
    let retry_after = match mode {
        Mode::Busy(s, Some(after)) if s == status => format!("Retry-After: {after}\r\n"),
        _ => String::new(),
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {announced}\r\nContent-Type: application/octet-stream\r\n\
         {retry_after}Connection: close\r\n\r\n"
    );
    let _ = conn.write_all(head.as_bytes());
    if req.method != "HEAD" {
        let _ = conn.write_all(sent);
    }
    let _ = conn.flush();
    let _ = conn.shutdown(Shutdown::Write);
    let mut rest = [0u8; 1024];
    while matches!(conn.read(&mut rest), Ok(n) if n > 0) {}
}
