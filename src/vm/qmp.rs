//! The QMP client: just enough of QEMU's machine protocol to see the guest reset.
//!
//! QMP (QEMU's `docs/interop/qmp-spec.rst`) is JSON, one object per line, over a socket: QEMU
//! greets with `{"QMP": {...}}`, the client leaves negotiation with
//! `{"execute": "qmp_capabilities"}`, and from then on QEMU sends events such as
//! `{"event": "RESET", "data": {"guest": true, "reason": "guest-reset"}, ...}`. The node passes
//! no `-no-reboot`, so a guest that resets (Nanos with `reboot_on_exit`, on a non-zero exit)
//! boots again; the RESET event is how the runner sees that first reset and stops there.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

/// What the runner needs to hear of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The guest reset itself (`reason` as QMP gives it, e.g. `guest-reset`).
    Reset(String),
    /// The guest powered off or QEMU is shutting down (`reason`, e.g. `guest-shutdown`).
    Shutdown(String),
}

/// Connect to QEMU's QMP socket at `path`, waiting up to `patience` for QEMU to create it, and
/// leave negotiation. QEMU (with `server` and no `wait=off`) starts the guest once a client
/// connects. Events then go to `events` from a thread of their own until QEMU closes the socket.
pub fn attach(path: &Path, patience: Duration, events: Sender<Event>) -> std::io::Result<()> {
    let deadline = Instant::now() + patience;
    let stream = loop {
        match UnixStream::connect(path) {
            Ok(s) => break s,
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?; // the greeting
    writer.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
    reader.get_ref().set_read_timeout(None)?;
    std::thread::Builder::new().name("gvbuild-qmp".into()).spawn(move || {
        let _keep_open = writer;
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if let Some(e) = event_of(&line) {
                if events.send(e).is_err() {
                    return;
                }
            }
        }
    })?;
    Ok(())
}

/// The event a QMP line reports, if it is one the runner needs.
fn event_of(line: &str) -> Option<Event> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let reason = v.pointer("/data/reason").and_then(|r| r.as_str()).unwrap_or("").to_string();
    match v.get("event")?.as_str()? {
        "RESET" => Some(Event::Reset(reason)),
        "SHUTDOWN" => Some(Event::Shutdown(reason)),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_from_qmp_lines() {
        let reset = r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESET", "data": {"guest": true, "reason": "guest-reset"}}"#;
        assert_eq!(event_of(reset), Some(Event::Reset("guest-reset".into())));
        let off = r#"{"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}"#;
        assert_eq!(event_of(off), Some(Event::Shutdown("guest-shutdown".into())));
        assert_eq!(event_of(r#"{"return": {}}"#), None);
        assert_eq!(event_of(r#"{"event": "STOP"}"#), None);
        assert_eq!(event_of("not json"), None);
    }
}
