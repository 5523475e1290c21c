//! When each recorded packet is due: npt mapped onto the wall clock.
//!
//! Playback from the store is paced on the schedule the packets were
//! recorded on: a packet of npt `t` leaves at `anchor_at + (t − anchor_npt)`.
//! PLAY (with or without a Range) sets the anchor; PAUSE clears it; resuming
//! anchors again at the npt where playback stopped, so the player sees time
//! continue where it left off. No timer is kept per packet: the playback task
//! asks for the due time of its next packet, sends every packet already due in
//! one batch, and sleeps until the next one.

use streamcache_types::Npt;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, Default)]
pub struct Schedule {
    anchor: Option<(Instant, Npt)>,
}

impl Schedule {
    /// Starts (or resumes) the clock: `npt` is due `at`.
    pub fn play(&mut self, at: Instant, npt: Npt) {
        self.anchor = Some((at, npt));
    }

    pub fn pause(&mut self) {
        self.anchor = None;
    }

    pub fn is_running(&self) -> bool {
        self.anchor.is_some()
    }

    /// When a packet of `npt` is due; `None` while paused. Packets from
    /// before the anchor (a seek lands on the keyframe before the target)
    /// are due at once.
    pub fn due(&self, npt: Npt) -> Option<Instant> {
        let (at, anchor_npt) = self.anchor?;
        Some(at + (npt - anchor_npt))
    }

    /// The npt the clock shows at `now` (for RTCP sender reports and for
    /// where to resume after a pause).
    pub fn npt_at(&self, now: Instant) -> Option<Npt> {
        let (at, anchor_npt) = self.anchor?;
        Some(anchor_npt + now.saturating_duration_since(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(ms: u64) -> Npt {
        Npt::from_millis(ms)
    }

    #[test]
    fn packets_are_due_on_their_recorded_schedule() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        assert_eq!(s.due(Npt::ZERO), None);
        s.play(t0, ms(10_000));
        assert_eq!(s.due(ms(10_000)), Some(t0));
        assert_eq!(s.due(ms(10_040)), Some(t0 + Duration::from_millis(40)));
        // The keyframe before a seek target goes at once.
        assert_eq!(s.due(ms(9_500)), Some(t0));
    }

    #[test]
    fn pause_and_resume_continue_media_time() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.play(t0, Npt::ZERO);
        let paused_at = s.npt_at(t0 + Duration::from_secs(3)).expect("running");
        assert_eq!(paused_at, ms(3_000));
        s.pause();
        assert!(!s.is_running());
        let t1 = t0 + Duration::from_secs(60);
        s.play(t1, paused_at);
        assert_eq!(s.due(ms(3_500)), Some(t1 + Duration::from_millis(500)));
    }
}
