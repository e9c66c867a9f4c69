//! Refusals cost the refused: wrong tokens slow their sender down, and refusals are logged
//! as one summary per address and interval, never one line per attempt.
//!
//! A guesser gets a few free tries (a person mistyping), then each further try from the
//! same address must wait, twice as long each time, up to a cap; meanwhile even the right
//! token gets 429, so guessing costs time whatever is guessed. The table is bounded: the
//! addresses seen longest ago are forgotten first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Wrong tokens an address may present before it has to wait.
const FREE_FAILURES: u32 = 5;
/// The first wait, doubled with each further failure.
const FIRST_DELAY: Duration = Duration::from_secs(1);
/// The longest wait.
const MAX_DELAY: Duration = Duration::from_secs(60);
/// An address without a refusal for this long starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// At most one log line per address in this interval.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// Addresses tracked at most (a few hundred bytes each).
const MAX_ADDRESSES: usize = 4096;

/// Per-address failure counts, shared by every request handler.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    addresses: Mutex<HashMap<IpAddr, Record>>,
}

#[derive(Debug)]
struct Record {
    /// Wrong tokens since the last success or since the record was made.
    failures: u32,
    /// No token is looked at from this address before then.
    blocked_until: Option<Instant>,
    /// When this address was last refused.
    last_refusal: Instant,
    /// When its last log line was written, and refusals since then not yet logged.
    last_logged: Option<Instant>,
    unlogged: u64,
}

/// What to log about a refusal: `None` to stay quiet (it is counted for the next line).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LogLine {
    /// Refusals of this address since its last line, this one included.
    pub(crate) refusals: u64,
}

impl Throttle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Record>> {
        // Nothing under this lock can panic halfway through an update; recover the guard.
        self.addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// How long `ip` must still wait before a token it presents is looked at, if at all.
    pub(crate) fn wait_for(&self, ip: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let addresses = self.lock();
        let until = addresses.get(&ip)?.blocked_until?;
        (until > now).then(|| until - now)
    }

    /// Counts a wrong token from `ip`; after the free tries it must wait. (The refusal is
    /// logged through [`Throttle::refused`], like any other.)
    pub(crate) fn wrong_token(&self, ip: IpAddr) {
        self.update(ip, |record, now| {
            record.failures = record.failures.saturating_add(1);
            if let Some(over) = record.failures.checked_sub(FREE_FAILURES + 1) {
                let delay = FIRST_DELAY
                    .saturating_mul(1u32.checked_shl(over.min(16)).unwrap_or(u32::MAX))
                    .min(MAX_DELAY);
                record.blocked_until = Some(now + delay);
            }
        });
    }

    /// Counts a refusal of `ip` of any kind (a wrong or missing token, an unknown Host, a
    /// forbidden Origin, a request made while it must wait) for the log; returns the line
    /// to write, if one is due.
    pub(crate) fn refused(&self, ip: IpAddr) -> Option<LogLine> {
        let mut line = None;
        self.update(ip, |record, now| {
            record.unlogged += 1;
            let due = record
                .last_logged
                .is_none_or(|at| now.duration_since(at) >= LOG_EVERY);
            if due {
                record.last_logged = Some(now);
                line = Some(LogLine {
                    refusals: std::mem::take(&mut record.unlogged),
                });
            }
        });
        line
    }

    /// The right token from `ip`: its failures are forgiven.
    pub(crate) fn succeeded(&self, ip: IpAddr) {
        let mut addresses = self.lock();
        if let Some(record) = addresses.get_mut(&ip) {
            record.failures = 0;
            record.blocked_until = None;
        }
    }

    fn update(&self, ip: IpAddr, update: impl FnOnce(&mut Record, Instant)) {
        let now = Instant::now();
        let mut addresses = self.lock();
        if !addresses.contains_key(&ip) && addresses.len() >= MAX_ADDRESSES {
            addresses.retain(|_, r| now.duration_since(r.last_refusal) < FORGET_AFTER);
            if addresses.len() >= MAX_ADDRESSES {
                let oldest = addresses
                    .iter()
                    .min_by_key(|(_, r)| r.last_refusal)
                    .map(|(ip, _)| *ip);
                if let Some(oldest) = oldest {
                    addresses.remove(&oldest);
                }
            }
        }
        let record = addresses.entry(ip).or_insert(Record {
            failures: 0,
            blocked_until: None,
            last_refusal: now,
            last_logged: None,
            unlogged: 0,
        });
        if now.duration_since(record.last_refusal) >= FORGET_AFTER {
            record.failures = 0;
            record.blocked_until = None;
        }
        record.last_refusal = now;
        update(record, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 1, 30));

    #[tokio::test(start_paused = true)]
    async fn a_few_mistakes_are_free_then_waits_double() {
        let t = Throttle::default();
        for _ in 0..FREE_FAILURES {
            t.wrong_token(IP);
            assert_eq!(t.wait_for(IP), None);
        }
        t.wrong_token(IP);
        assert_eq!(t.wait_for(IP), Some(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(t.wait_for(IP), None, "the wait is over");
        t.wrong_token(IP);
        assert_eq!(t.wait_for(IP), Some(Duration::from_secs(2)));
        for _ in 0..40 {
            t.wrong_token(IP);
        }
        assert_eq!(t.wait_for(IP), Some(MAX_DELAY));
        t.succeeded(IP);
        assert_eq!(t.wait_for(IP), None, "the right token forgives");
    }

    #[tokio::test(start_paused = true)]
    async fn one_log_line_per_address_and_interval() {
        let t = Throttle::default();
        assert_eq!(t.refused(IP), Some(LogLine { refusals: 1 }));
        for _ in 0..999 {
            t.wrong_token(IP);
            assert_eq!(t.refused(IP), None);
        }
        tokio::time::advance(LOG_EVERY).await;
        assert_eq!(t.refused(IP), Some(LogLine { refusals: 1000 }));
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_bounded() {
        let t = Throttle::default();
        for i in 0..(MAX_ADDRESSES as u32 + 100) {
            t.refused(IpAddr::V4(i.into()));
        }
        assert!(t.lock().len() <= MAX_ADDRESSES);
    }
}
