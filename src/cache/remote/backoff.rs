//! Pushback: how a client slows down when a server asks it to, in one place for the shared
//! cache, remote execution and the worker.
//!
//! A server that is busy says so: gRPC's `RESOURCE_EXHAUSTED` (BuildGrid answers it with
//! "Concurrent RPC limit exceeded!" once the calls in flight pass its `thread-pool-size`) and
//! HTTP's 429. That is not a failure of the server but a request to come back later, so the
//! call is made again after a pause that doubles from [`FIRST`] up to [`MAX`], each one
//! jittered by up to half either way so that many clients do not come back at once (the shape
//! of gRPC's retry design, `A6-client-retries.md`, and Bazel's `RemoteRetrier`). A call counts
//! as failed only when its budget (`--remote-timeout`, from its first try) would run out
//! before the next try. Other failures (a refused connection, `UNAVAILABLE`, a 5xx) are not
//! retried here: a server that is down should not hold every call for its whole budget.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::RemoteError;

/// The first pause after a pushback.
pub const FIRST: Duration = Duration::from_millis(25);
/// The longest pause between two tries.
pub const MAX: Duration = Duration::from_secs(2);

/// Whether `e` is the server asking to slow down.
pub fn is_pushback(e: &RemoteError) -> bool {
    matches!(e, RemoteError::Grpc { code: "RESOURCE_EXHAUSTED", .. } | RemoteError::Status(429))
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

    /// The pause before the next try, or `None` when the budget would run out first.
    pub fn next_pause(&mut self) -> Option<Duration> {
        let wait = jitter(self.pause);
        self.pause = (self.pause * 2).min(MAX);
        (self.started.elapsed() + wait < self.budget).then_some(wait)
    }
}

/// Run `call` until it succeeds, fails with something other than a pushback, or its budget is
/// spent; `pushed` is told of each pushback that is waited out.
pub fn retry<T>(
    budget: Duration,
    pushed: &AtomicU64,
    mut call: impl FnMut() -> Result<T, RemoteError>,
) -> Result<T, RemoteError> {
    let mut backoff = Backoff::new(budget);
    loop {
        match call() {
            Err(e) if is_pushback(&e) => match backoff.next_pause() {
                Some(wait) => {
                    pushed.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(wait);
                }
                None => return Err(e),
            },
            other => return other,
        }
    }
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
        let mut tries = 0;
        let got = retry(Duration::from_secs(10), &pushed, || {
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
        let got: Result<(), _> = retry(Duration::from_secs(10), &pushed, || {
            tries += 1;
            Err(RemoteError::Grpc { code: "UNAVAILABLE", message: "down".into() })
        });
        assert!(got.is_err());
        assert_eq!(tries, 1, "a server that is down is not asked again here");

        // A budget that cannot fit another pause: the pushback is the answer.
        let got: Result<(), _> = retry(Duration::from_millis(1), &pushed, || Err(RemoteError::Status(429)));
        assert_eq!(got.unwrap_err(), RemoteError::Status(429));
    }

    #[test]
    fn pauses_double_up_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_secs(3600));
        let pauses: Vec<Duration> = (0..10).map(|_| b.next_pause().unwrap()).collect();
        assert!(pauses[0] >= FIRST / 2 && pauses[0] < FIRST * 3 / 2, "{pauses:?}");
        assert!(pauses.iter().all(|p| *p < MAX * 3 / 2), "{pauses:?}");
        assert!(pauses[9] >= MAX / 2, "{pauses:?}");
    }
}
