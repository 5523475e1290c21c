//! Refusals in the log, rate-limited.
//!
//! Every refusal (404 for a path under no mount, 401, 453, 503, 454 for
//! another player's session) is worth a line at info: it is how a typo in a
//! player's URL or a wrong password is diagnosed. A flood of them must not
//! fill the journal, so lines are limited per client address and reason:
//! the first refusal is logged at once, the next ones within [`INTERVAL`]
//! are only counted, and the count is told with the next line after the
//! interval, or by the periodic [`RefusalLog::flush`].
//!
//! Memory and lines are bounded even when the refusals come from many
//! addresses: at most [`MAX_KEYS`] (address, reason) pairs are tracked and at
//! most [`LINES_PER_INTERVAL`] first lines are written per interval; beyond
//! either, refusals are only counted in one overflow counter, told by the
//! flush.
//!
//! [`RefusalLog`] has no clock of its own (time is passed in) so that it is
//! tested on synthetic time; [`Refusals`] is the server's, on the real clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::info;

/// One line per client and reason per interval.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// (address, reason) pairs tracked at once.
const MAX_KEYS: usize = 256;
/// First lines (new pairs, or pairs whose interval passed) per interval.
const LINES_PER_INTERVAL: usize = 64;

/// Why a player was refused: the rate limit is per address and reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// 404: the path is under no mount.
    NoMount,
    /// 401: wrong or unknown credentials.
    AuthFailed,
    /// 454: a session id presented by a player other than its own.
    ForeignSession,
    /// 453: the address is at `max_sessions_per_ip`.
    SessionsPerAddress,
    /// 503: the server is at `max_sessions`.
    Sessions,
    /// 503: the server is at `max_connections`.
    Connections,
    /// Closed without an answer: at `max_connections` and already
    /// answering as many refused connections as it will at once.
    ConnectionDropped,
}

impl Refusal {
    /// The log line's message (tests and operators grep for these).
    pub fn message(self) -> &'static str {
        match self {
            Refusal::NoMount => "request refused: 404, no mount serves this path",
            Refusal::AuthFailed => "player authentication failed: 401",
            Refusal::ForeignSession => {
                "request refused: 454, the session belongs to another player"
            }
            Refusal::SessionsPerAddress => {
                "session refused: 453, this address is at max_sessions_per_ip"
            }
            Refusal::Sessions => "session refused: 503, the server is at max_sessions",
            Refusal::Connections => "connection refused: 503, the server is at max_connections",
            Refusal::ConnectionDropped => {
                "connection dropped: at max_connections and already refusing as many others as allowed"
            }
        }
    }

    /// The RTSP status the player got (0: none, the connection was closed).
    pub fn status(self) -> u16 {
        match self {
            Refusal::NoMount => 404,
            Refusal::AuthFailed => 401,
            Refusal::ForeignSession => 454,
            Refusal::SessionsPerAddress => 453,
            Refusal::Sessions | Refusal::Connections => 503,
            Refusal::ConnectionDropped => 0,
        }
    }
}

struct Entry {
    /// When this pair's last line was written.
    logged: Instant,
    /// Refusals counted, not logged, since.
    unlogged: u64,
}

/// What a flush has to tell.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    /// (address, reason, refusals not logged) of the pairs whose interval passed.
    pub counts: Vec<(IpAddr, Refusal, u64)>,
    /// Refusals not tracked at all (too many pairs, or too many lines).
    pub overflow: u64,
}

pub struct RefusalLog {
    interval: Duration,
    entries: HashMap<(IpAddr, Refusal), Entry>,
    /// Start of the interval whose first lines `lines_left` counts.
    window: Option<Instant>,
    lines_left: usize,
    overflow: u64,
}

impl RefusalLog {
    pub fn new(interval: Duration) -> RefusalLog {
        RefusalLog {
            interval,
            entries: HashMap::new(),
            window: None,
            lines_left: LINES_PER_INTERVAL,
            overflow: 0,
        }
    }

    /// Notes one refusal at `now`: `Some(n)` when it is to be logged now,
    /// `n` being the refusals of the same pair counted unlogged since its
    /// previous line; `None` when it was only counted.
    pub fn note(&mut self, ip: IpAddr, reason: Refusal, now: Instant) -> Option<u64> {
        if self
            .window
            .is_none_or(|start| now.saturating_duration_since(start) >= self.interval)
        {
            self.window = Some(now);
            self.lines_left = LINES_PER_INTERVAL;
        }
        if let Some(entry) = self.entries.get_mut(&(ip, reason)) {
            if now.saturating_duration_since(entry.logged) < self.interval || self.lines_left == 0 {
                entry.unlogged += 1;
                return None;
            }
            self.lines_left -= 1;
            entry.logged = now;
            return Some(std::mem::take(&mut entry.unlogged));
        }
        if self.entries.len() >= MAX_KEYS || self.lines_left == 0 {
            self.overflow += 1;
            return None;
        }
        self.lines_left -= 1;
        self.entries.insert(
            (ip, reason),
            Entry {
                logged: now,
                unlogged: 0,
            },
        );
        Some(0)
    }

    /// The counts to tell at `now`: pairs whose interval passed with
    /// refusals unlogged are told (and start a new interval); those with
    /// none are forgotten, which keeps the table small.
    pub fn flush(&mut self, now: Instant) -> Flushed {
        let interval = self.interval;
        let mut counts = Vec::new();
        self.entries.retain(|&(ip, reason), entry| {
            if now.saturating_duration_since(entry.logged) < interval {
                return true;
            }
            if entry.unlogged == 0 {
                return false;
            }
            counts.push((ip, reason, std::mem::take(&mut entry.unlogged)));
            entry.logged = now;
            true
        });
        counts.sort_by_key(|&(ip, reason, _)| (ip, reason.status()));
        Flushed {
            counts,
            overflow: std::mem::take(&mut self.overflow),
        }
    }
}

/// The server's refusal log, on the real clock.
pub struct Refusals(Mutex<RefusalLog>);

impl Refusals {
    pub fn new() -> Refusals {
        Refusals(Mutex::new(RefusalLog::new(INTERVAL)))
    }

    /// See [`RefusalLog::note`]: the caller logs its line (with the count
    /// as `repeated`) when this says so.
    pub fn note(&self, ip: IpAddr, reason: Refusal) -> Option<u64> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .note(ip, reason, Instant::now())
    }

    /// Logs the counts of refusals not logged yet whose interval passed.
    /// Run every second, so that a count is told soon after its interval.
    pub fn flush(&self) {
        let flushed = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .flush(Instant::now());
        for (ip, reason, repeated) in flushed.counts {
            info!(client = %ip, status = reason.status(), repeated, interval_secs = INTERVAL.as_secs(), "{} (repeated)", reason.message());
        }
        if flushed.overflow > 0 {
            info!(
                repeated = flushed.overflow,
                "refusals not logged: too many clients refused at once"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn one_line_per_client_and_reason_per_interval_with_the_count() {
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut log = RefusalLog::new(Duration::from_secs(10));
        assert_eq!(log.note(A, Refusal::NoMount, at(0)), Some(0));
        for _ in 0..999 {
            assert_eq!(log.note(A, Refusal::NoMount, at(1)), None);
        }
        // Another reason, or another address, has a line of its own.
        assert_eq!(log.note(A, Refusal::AuthFailed, at(1)), Some(0));
        assert_eq!(log.note(B, Refusal::NoMount, at(1)), Some(0));
        // After the interval, the next refusal's line carries the count.
        assert_eq!(log.note(A, Refusal::NoMount, at(10)), Some(999));
        assert_eq!(log.note(A, Refusal::NoMount, at(11)), None);
        // The flush tells the counts whose interval passed, forgets the
        // quiet pairs, and keeps the counted one quiet for another interval.
        let flushed = log.flush(at(20));
        assert_eq!(flushed.counts, vec![(A, Refusal::NoMount, 1)]);
        assert_eq!(flushed.overflow, 0);
        assert_eq!(log.entries.len(), 1);
        assert_eq!(log.note(A, Refusal::NoMount, at(25)), None);
        assert_eq!(log.flush(at(40)).counts, vec![(A, Refusal::NoMount, 1)]);
        assert!(log.flush(at(60)).counts.is_empty());
        assert!(log.entries.is_empty());
    }

    #[test]
    fn many_addresses_are_bounded_in_memory_and_lines() {
        let t0 = Instant::now();
        let mut log = RefusalLog::new(Duration::from_secs(10));
        let mut lines = 0;
        for i in 0..10_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            if log.note(ip, Refusal::Connections, t0).is_some() {
                lines += 1;
            }
        }
        assert_eq!(lines, LINES_PER_INTERVAL);
        assert!(log.entries.len() <= MAX_KEYS);
        let flushed = log.flush(t0 + Duration::from_secs(10));
        assert_eq!(flushed.overflow, 10_000 - LINES_PER_INTERVAL as u64);
        // A new interval lets new lines through again.
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(
            log.note(ip, Refusal::Connections, t0 + Duration::from_secs(10)),
            Some(0)
        );
    }
}
