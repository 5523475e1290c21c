//! The arithmetic of the load this node reports: byte counters into bit
//! rates, and sessions promised to the master but not started yet. Plain
//! values and times in, numbers out.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// How long an accepted Prepare counts as a session.
///
/// Between the master's Prepare and the player's SETUP here lie the 302,
/// the player's reconnection, OPTIONS and DESCRIBE: usually well under a
/// second, three allow for a slow player. The master counts the players it
/// sent only until this node's next report, so the report itself must
/// count them until their sessions exist, or the master would see the
/// room they take as free and send more players than fit. Each session
/// that starts consumes the oldest reservation (sessions cannot be matched
/// to the Prepare that announced them: the player comes on a connection of
/// its own), so a prepared player is not counted twice once it is here.
pub const PREPARE_HOLD: Duration = Duration::from_secs(3);

/// Rates over a shorter window are too noisy to report: a sample taken that
/// soon after the previous one (a Poll right after a report) repeats the
/// previous rates.
const MIN_WINDOW: Duration = Duration::from_millis(250);

/// Bit/s of a byte counter that went from `before` to `after` in
/// `elapsed`. A counter that went back (it cannot, but a new `Metrics`
/// would) or no time at all gives 0.
pub fn rate_bps(before: u64, after: u64, elapsed: Duration) -> u64 {
    let nanos = elapsed.as_nanos();
    if nanos == 0 {
        return 0;
    }
    let bits = u128::from(after.saturating_sub(before)) * 8;
    u64::try_from(bits * 1_000_000_000 / nanos).unwrap_or(u64::MAX)
}

/// Egress and ingress, bit/s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rates {
    pub egress_bps: u64,
    pub ingress_bps: u64,
}

/// The byte counters at the previous sample, and the rates then found.
#[derive(Debug)]
pub struct Meter {
    at: Instant,
    sent: u64,
    received: u64,
    rates: Rates,
}

impl Meter {
    /// A meter whose first window starts now, at these counter values.
    pub fn new(at: Instant, sent: u64, received: u64) -> Meter {
        Meter {
            at,
            sent,
            received,
            rates: Rates::default(),
        }
    }

    /// The rates since the previous sample, given the counters now: bytes
    /// sent to players and received from origins in all.
    pub fn sample(&mut self, at: Instant, sent: u64, received: u64) -> Rates {
        let elapsed = at.saturating_duration_since(self.at);
        if elapsed < MIN_WINDOW {
            return self.rates;
        }
        self.rates = Rates {
            egress_bps: rate_bps(self.sent, sent, elapsed),
            ingress_bps: rate_bps(self.received, received, elapsed),
        };
        self.at = at;
        self.sent = sent;
        self.received = received;
        self.rates
    }
}

/// A reservation, to be released if its Prepare fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

/// Sessions reserved by accepted Prepares, each for [`PREPARE_HOLD`].
#[derive(Debug, Default)]
pub struct Reservations {
    /// Oldest first.
    held: VecDeque<(Ticket, Instant)>,
    next: u64,
    /// The node's count of sessions started, when last seen.
    started_seen: u64,
}

impl Reservations {
    /// Reserves a session unless the `sessions` running and the sessions
    /// reserved already reach `max`.
    pub fn try_reserve(&mut self, now: Instant, sessions: usize, max: u32) -> Option<Ticket> {
        let used = sessions.saturating_add(self.count(now));
        if used >= usize::try_from(max).unwrap_or(usize::MAX) {
            return None;
        }
        self.next += 1;
        let ticket = Ticket(self.next);
        self.held.push_back((ticket, now));
        Some(ticket)
    }

    /// A failed Prepare brings no player: its session is free again.
    pub fn release(&mut self, ticket: Ticket) {
        self.held.retain(|(held, _)| *held != ticket);
    }

    /// Sessions started since the last call (`started`: the node's count
    /// of sessions started so far) take the place of as many reservations,
    /// oldest first.
    pub fn sessions_started(&mut self, started: u64) {
        let new = started.saturating_sub(self.started_seen);
        self.started_seen = started;
        for _ in 0..new.min(self.held.len() as u64) {
            self.held.pop_front();
        }
    }

    /// Reservations younger than [`PREPARE_HOLD`] (older ones are dropped).
    pub fn count(&mut self, now: Instant) -> usize {
        while let Some(&(_, at)) = self.held.front() {
            if now.saturating_duration_since(at) < PREPARE_HOLD {
                break;
            }
            self.held.pop_front();
        }
        self.held.len()
    }
}

/// The sessions reported: running ones and reserved ones.
pub fn reported_sessions(running: usize, reserved: usize) -> u32 {
    u32::try_from(running.saturating_add(reserved)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn counters_become_bit_rates() {
        assert_eq!(rate_bps(0, 125_000, SEC), 1_000_000);
        assert_eq!(rate_bps(1_000, 1_000 + 125_000, 2 * SEC), 500_000);
        assert_eq!(rate_bps(0, 1, Duration::from_millis(1)), 8_000);
        assert_eq!(rate_bps(10, 5, SEC), 0);
        assert_eq!(rate_bps(0, 100, Duration::ZERO), 0);
        assert_eq!(rate_bps(0, u64::MAX, Duration::from_nanos(1)), u64::MAX);
    }

    #[test]
    fn the_meter_measures_since_its_previous_sample() {
        let t0 = Instant::now();
        let mut meter = Meter::new(t0, 1_000, 0);
        let first = meter.sample(t0 + SEC, 1_000 + 250_000, 125_000);
        assert_eq!(
            first,
            Rates {
                egress_bps: 2_000_000,
                ingress_bps: 1_000_000
            }
        );
        // Too soon after: the same rates, and the window keeps its start.
        assert_eq!(
            meter.sample(t0 + SEC + Duration::from_millis(10), 999_999_999, 0),
            first
        );
        let second = meter.sample(t0 + 3 * SEC, 1_000 + 250_000 + 500_000, 125_000);
        assert_eq!(
            second,
            Rates {
                egress_bps: 2_000_000,
                ingress_bps: 0
            }
        );
    }

    #[test]
    fn prepares_hold_a_session_until_they_expire_or_fail() {
        let t0 = Instant::now();
        let mut r = Reservations::default();
        // Two of three sessions run: room for one.
        let Some(first) = r.try_reserve(t0, 2, 3) else {
            panic!("room for one");
        };
        assert_eq!(r.try_reserve(t0, 2, 3), None);
        assert_eq!(reported_sessions(2, r.count(t0)), 3);
        // A failed prepare frees its session at once.
        r.release(first);
        assert_eq!(r.count(t0), 0);
        assert!(r.try_reserve(t0, 2, 3).is_some());
        // A successful one holds it for PREPARE_HOLD.
        let later = t0 + PREPARE_HOLD - Duration::from_millis(1);
        assert_eq!(r.count(later), 1);
        assert_eq!(r.count(t0 + PREPARE_HOLD), 0);
        assert!(r.try_reserve(t0 + PREPARE_HOLD, 2, 3).is_some());
        // At the cap without reservations: none.
        assert_eq!(Reservations::default().try_reserve(t0, 3, 3), None);
        assert_eq!(reported_sessions(usize::MAX, 1), u32::MAX);
    }

    #[test]
    fn a_started_session_takes_the_place_of_the_oldest_reservation() {
        let t0 = Instant::now();
        let mut r = Reservations::default();
        // 40 sessions ran before any Prepare: they consume nothing.
        r.sessions_started(40);
        for _ in 0..3 {
            assert!(r.try_reserve(t0, 0, 10).is_some());
        }
        r.sessions_started(42);
        assert_eq!(r.count(t0), 1, "two prepared players arrived");
        r.sessions_started(50);
        assert_eq!(r.count(t0), 0, "never below none");
    }
}
