//! Pushback: how a client slows down when a server asks it to, in one place for the shared
//! cache, remote execution and the worker.
//!
//! A server that is busy says so: gRPC's `RESOURCE_EXHAUSTED` (BuildGrid answers it with
//! "Concurrent RPC limit exceeded!" once the calls in flight pass its `thread-pool-size`) and
//! `UNAVAILABLE` (a server draining or not ready yet), HTTP's 429 and 503 (with `Retry-After`
//! when the server names a time). That is not a failure of the server but a request to come
//! back later, so two things happen:
//!
//! - **The call is made again** after a pause that doubles from [`FIRST`] up to [`MAX`], each
//!   one jittered by up to half either way so that many clients do not come back at once (the
//!   shape of gRPC's retry design, `A6-client-retries.md`, and Bazel's `RemoteRetrier`); a
//!   `Retry-After` of the server's is waited instead. A call counts as failed only when its
//!   budget (`--remote-timeout`, from its first try) would run out before the next try.
//! - **Fewer calls are kept in flight** ([`Window`]): the number a client may have open at
//!   once to one server is halved on a pushback (at most once per [`CUT_EVERY`]) and grows by
//!   one per window's worth of calls that go through (additive increase, multiplicative
//!   decrease, TCP's rule for a congested link). A server that never pushes back never sees
//!   the limit.
//!
//! A failure of the client's own connection (refused, reset: the server is not there) is not
//! retried here: a server that is down should not hold every call for its whole budget.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::RemoteError;

/// The first pause after a pushback.
pub const FIRST: Duration = Duration::from_millis(25);
/// The longest pause between two tries (a server's `Retry-After` may ask for more).
pub const MAX: Duration = Duration::from_secs(2);
/// The window is cut at most this often: one overload answers many calls at once.
pub const CUT_EVERY: Duration = Duration::from_millis(250);
/// Calls in flight to one server before any pushback: more than gvbuild ever makes.
pub const WIDEST: usize = 256;

/// Whether `e` is the server asking to slow down or come back later.
pub fn is_pushback(e: &RemoteError) -> bool {
    matches!(
        e,
        RemoteError::Grpc { code: "RESOURCE_EXHAUSTED" | "UNAVAILABLE", .. } | RemoteError::Busy { .. }
    )
}

/// The pause the server asked for (HTTP's `Retry-After`), if it named one.
fn asked_pause(e: &RemoteError) -> Option<Duration> {
    match e {
        RemoteError::Busy { after, .. } => *after,
        _ => None,
    }
}

/// The tries of one call within its budget.
pub struct Backoff {
    started: Instant,
    budget: Duration,
    pause: Duration,
}

impl Backoff {
    pub fn new(budget: Duration) -> Backoff {
        Backoff { started: Instant::now(), budget, pause: FIRST }
    }

    /// The pause before the next try (`asked`, the server's, else the next doubling one), or
    /// `None` when the budget would run out first.
    pub fn next_pause(&mut self, asked: Option<Duration>) -> Option<Duration> {
        let wait = asked.unwrap_or_else(|| jitter(self.pause));
        self.pause = (self.pause * 2).min(MAX);
        (self.started.elapsed() + wait < self.budget).then_some(wait)
    }
}

/// How many calls may be in flight to one server at once (see the module's text).
pub struct Window {
    state: Mutex<Limit>,
    freed: Condvar,
}

struct Limit {
    /// Calls allowed in flight; fractional so that it grows by one per window of successes.
    limit: f64,
    in_flight: usize,
    cut_at: Option<Instant>,
    /// The lowest `limit` has been.
    narrowest: f64,
}

/// A call's place in the window, given back when dropped.
pub struct Permit {
    window: Arc<Window>,
}

impl Window {
    pub fn new() -> Arc<Window> {
        Arc::new(Window {
            state: Mutex::new(Limit {
                limit: WIDEST as f64,
                in_flight: 0,
                cut_at: None,
                narrowest: WIDEST as f64,
            }),
            freed: Condvar::new(),
        })
    }

    /// Wait for a place (never for long unless the server pushed back), and hold it.
    pub fn acquire(self: &Arc<Window>) -> Permit {
        if let Ok(s) = self.state.lock() {
            let full = |s: &mut Limit| s.in_flight as f64 >= s.limit.floor().max(1.0);
            if let Ok(mut s) = self.freed.wait_while(s, full) {
                s.in_flight += 1;
            }
        }
        Permit { window: self.clone() }
    }

    /// The server pushed back: halve what is in flight (once per [`CUT_EVERY`]).
    pub fn pushed(&self) {
        if let Ok(mut s) = self.state.lock() {
            if s.cut_at.is_none_or(|at| at.elapsed() >= CUT_EVERY) {
                let half = (s.in_flight as f64 / 2.0).max(1.0);
                s.limit = s.limit.min(half);
                s.narrowest = s.narrowest.min(s.limit);
                s.cut_at = Some(Instant::now());
            }
        }
    }

    /// A call went through: widen by one per window's worth of them.
    pub fn eased(&self) {
        if let Ok(mut s) = self.state.lock() {
            if s.limit < WIDEST as f64 {
                s.limit = (s.limit + 1.0 / s.limit).min(WIDEST as f64);
                self.freed.notify_all();
            }
        }
    }

    /// The calls allowed in flight now.
    pub fn limit(&self) -> usize {
        self.state.lock().map(|s| s.limit.floor().max(1.0) as usize).unwrap_or(1)
    }

    /// The fewest calls it has allowed in flight.
    pub fn narrowest(&self) -> usize {
        self.state.lock().map(|s| s.narrowest.floor().max(1.0) as usize).unwrap_or(1)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Ok(mut s) = self.window.state.lock() {
            s.in_flight = s.in_flight.saturating_sub(1);
        }
        self.window.freed.notify_all();
    }
}

/// Run `call`, holding a place in `window`, until it succeeds, fails with something other than
/// a pushback, or its budget is spent; `pushed` counts the pushbacks waited out. The place is
/// given back during each pause, and the result comes with the place it was got in (a stream
/// holds it while it is read).
pub fn retry_holding<T>(
    budget: Duration,
    window: &Arc<Window>,
    pushed: &AtomicU64,
    mut call: impl FnMut() -> Result<T, RemoteError>,
) -> Result<(T, Permit), RemoteError> {
    let mut backoff: Option<Backoff> = None;
    loop {
        let permit = window.acquire();
        let backoff = backoff.get_or_insert_with(|| Backoff::new(budget));
        match call() {
            Err(e) if is_pushback(&e) => {
                drop(permit);
                window.pushed();
                match backoff.next_pause(asked_pause(&e)) {
                    Some(wait) => {
                        pushed.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(wait);
                    }
                    None => return Err(e),
                }
            }
            Ok(t) => {
                window.eased();
                return Ok((t, permit));
            }
            Err(e) => return Err(e),
        }
    }
}

/// [`retry_holding`] for a call that is over when it returns.
pub fn retry<T>(
    budget: Duration,
    window: &Arc<Window>,
    pushed: &AtomicU64,
    call: impl FnMut() -> Result<T, RemoteError>,
) -> Result<T, RemoteError> {
    retry_holding(budget, window, pushed, call).map(|(t, _)| t)
}

/// How busy a server was during a build: the calls it pushed back that were made again, and
/// the fewest calls the client then kept in flight.
pub fn busy_note(what: &str, pushbacks: u64, narrowest: usize) -> Option<String> {
    (pushbacks > 0).then(|| {
        format!(
            "gvbuild: {what} was busy: it asked {pushbacks} time(s) to slow down, and gvbuild waited \
             each out with fewer calls in flight (as few as {narrowest}); give it more threads to go faster"
        )
    })
}

/// `d` times a factor in [0.5, 1.5), from a cheap per-call source (not for anything secret).
fn jitter(d: Duration) -> Duration {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    let seed = format!("{n} {:?} {:?}", Instant::now(), std::thread::current().id());
    let bits = u64::from_le_bytes(blake3::hash(seed.as_bytes()).as_bytes()[..8].try_into().unwrap_or([0; 8]));
    let factor = 0.5 + (bits >> 11) as f64 / (1u64 << 53) as f64;
    d.mul_f64(factor)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pushbacks_are_waited_out_within_the_budget_and_other_failures_are_not() {
        let pushed = AtomicU64::new(0);
        let window = Window::new();
        let mut tries = 0;
        let got = retry(Duration::from_secs(10), &window, &pushed, || {
            tries += 1;
            if tries < 4 {
                Err(RemoteError::Grpc {
                    code: "RESOURCE_EXHAUSTED",
                    message: "Concurrent RPC limit exceeded!".into(),
                })
            } else {
                Ok(tries)
            }
        });
        assert_eq!(got.unwrap(), 4);
        assert_eq!(pushed.load(Ordering::Relaxed), 3);

        let mut tries = 0;
        let got: Result<(), _> = retry(Duration::from_secs(10), &window, &pushed, || {
            tries += 1;
            Err(RemoteError::Transport("tcp connect error: Connection refused".into()))
        });
        assert!(got.is_err());
        assert_eq!(tries, 1, "a server that is not there is not asked again here");

        // A budget that cannot fit another pause: the pushback is the answer.
        let busy = RemoteError::Busy { status: 429, after: None };
        let got: Result<(), _> = retry(Duration::from_millis(1), &window, &pushed, || Err(busy.clone()));
        assert_eq!(got.unwrap_err(), busy);
        // A `Retry-After` longer than the budget is not waited for.
        let busy = RemoteError::Busy { status: 503, after: Some(Duration::from_secs(60)) };
        let got: Result<(), _> = retry(Duration::from_secs(10), &window, &pushed, || Err(busy.clone()));
        assert_eq!(got.unwrap_err(), busy);
    }

    #[test]
    fn pauses_double_up_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_secs(3600));
        let pauses: Vec<Duration> = (0..10).map(|_| b.next_pause(None).unwrap()).collect();
        assert!(pauses[0] >= FIRST / 2 && pauses[0] < FIRST * 3 / 2, "{pauses:?}");
        assert!(pauses.iter().all(|p| *p < MAX * 3 / 2), "{pauses:?}");
        assert!(pauses[9] >= MAX / 2, "{pauses:?}");
    }

    #[test]
    fn the_window_halves_on_pushback_and_grows_back_by_one_per_window() {
        let w = Window::new();
        assert_eq!(w.limit(), WIDEST);
        let permits: Vec<Permit> = (0..20).map(|_| w.acquire()).collect();
        w.pushed();
        assert_eq!(w.limit(), 10, "half of the 20 in flight");
        w.pushed();
        assert_eq!(w.limit(), 10, "one overload cuts once");
        drop(permits);
        for _ in 0..9 {
            w.eased();
        }
        assert_eq!(w.limit(), 10, "nine calls through a window of ten do not widen it yet");
        w.eased();
        w.eased();
        assert_eq!(w.limit(), 11, "about ten calls through a window of ten widen it by one");
    }

    #[test]
    fn a_full_window_holds_a_call_until_a_place_is_given_back() {
        let w = Window::new();
        let permits: Vec<Permit> = (0..2).map(|_| w.acquire()).collect();
        w.pushed();
        assert_eq!(w.limit(), 1);
        let waiter = {
            let w = w.clone();
            std::thread::spawn(move || {
                let _p = w.acquire();
                Instant::now()
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        let released = Instant::now();
        drop(permits);
        assert!(waiter.join().unwrap() >= released, "the call went ahead while the window was full");
    }
}
