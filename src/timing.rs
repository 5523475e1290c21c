//! Timer helpers shared by the hub, playback and the RTSP methods.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};

/// Sleeps until `deadline`, or forever without one (a `select!` branch that
/// is off until a deadline is set).
pub async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Merged writes (`[rtsp] merge_writes_ms`): a player's media leaves on
/// ticks `interval` apart, everything due by a tick in one write. The ticks
/// are the same for every player (counted from one process-wide origin), so
/// one pass of the timer wakes all the players due at a tick, and each
/// player pays one system call and one wake-up per tick instead of one per
/// due time (at 1 Mbit/s, 25 video frames and ~47 AAC frames a second).
/// The price: packets arrive up to `interval` after their due time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteTicks {
    interval: Duration,
}

impl WriteTicks {
    /// Every due time sent at once, unmerged.
    pub const OFF: WriteTicks = WriteTicks {
        interval: Duration::ZERO,
    };

    pub fn new(interval: Duration) -> WriteTicks {
        WriteTicks { interval }
    }

    /// When to wake to send what is due at `due`: at `due` itself when it
    /// has come already (a PLAY's first burst is not held back) or merging
    /// is off, else the first tick at or after it.
    pub fn wake_at(self, due: Instant, now: Instant) -> Instant {
        if self.interval.is_zero() || due <= now {
            return due;
        }
        tick_at_or_after(due, ticks_origin(), self.interval)
    }

    /// The tick to send at when something arrives at `now` (live: what the
    /// hub publishes until then joins the same write); `None` when off.
    pub fn next_tick(self, now: Instant) -> Option<Instant> {
        (!self.interval.is_zero()).then(|| tick_at_or_after(now, ticks_origin(), self.interval))
    }
}

/// Where the ticks are counted from: the first time anyone asks.
fn ticks_origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// The first instant `origin + k × interval` (k ≥ 0) at or after `at`.
fn tick_at_or_after(at: Instant, origin: Instant, interval: Duration) -> Instant {
    let since = at.saturating_duration_since(origin).as_nanos();
    let step = interval.as_nanos().max(1);
    let ticks = since.div_ceil(step);
    // ticks × step ≤ since + step: within the clock's range whenever `at` is.
    let offset = u64::try_from(ticks * step).unwrap_or(u64::MAX);
    origin + Duration::from_nanos(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_round_up_to_the_grid() {
        let origin = Instant::now();
        let ms = Duration::from_millis;
        let grid = ms(10);
        assert_eq!(tick_at_or_after(origin, origin, grid), origin);
        assert_eq!(
            tick_at_or_after(origin + ms(1), origin, grid),
            origin + ms(10)
        );
        assert_eq!(
            tick_at_or_after(origin + ms(10), origin, grid),
            origin + ms(10)
        );
        assert_eq!(
            tick_at_or_after(origin + Duration::from_nanos(10_000_001), origin, grid),
            origin + ms(20)
        );
        // Before the origin: the origin itself.
        assert_eq!(
            tick_at_or_after(origin, origin + ms(5), grid),
            origin + ms(5)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_due_time_already_come_is_not_held_back() {
        let ticks = WriteTicks::new(Duration::from_millis(20));
        let now = Instant::now();
        assert_eq!(ticks.wake_at(now, now), now);
        let later = ticks.wake_at(now + Duration::from_millis(1), now);
        assert!(later > now && later <= now + Duration::from_millis(21));
        assert_eq!(
            WriteTicks::OFF.wake_at(now + Duration::from_millis(1), now),
            now + Duration::from_millis(1)
        );
        assert_eq!(WriteTicks::OFF.next_tick(now), None);
        // Everyone shares the ticks.
        let tick = ticks.next_tick(now).unwrap();
        let a = ticks.next_tick(tick + Duration::from_millis(1)).unwrap();
        let b = ticks.next_tick(tick + Duration::from_millis(19)).unwrap();
        assert_eq!((a, b), (tick + Duration::from_millis(20), a));
    }
}
