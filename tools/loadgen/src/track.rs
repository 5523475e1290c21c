//! What one player sees of one track: packet and byte counts, sequence
//! gaps, and the pacing of arrivals against the RTP timestamps.
//!
//! ## Loss
//! Sequence numbers are extended to 64 bits (a step of −32768..=32767 from
//! the highest seen so far, so wrap-around is followed). Lost packets are
//! counted as in RFC 3550 §6.4.1: `expected = highest − first + 1`,
//! `lost = expected − received` (never below zero). A *gap* is one forward
//! jump of more than one; a late (reordered) packet fills a hole and is not
//! counted twice.
//!
//! ## Pacing error at the player
//! For each RTP packet `i` of the track, with `a` its arrival time (the
//! instant the read that completed it returned) and `ts` its RTP timestamp
//! extended past wrap-around, the *transit offset* is
//!
//! ```text
//! d(i) = (a(i) − a(0)) − (ts(i) − ts(0)) / clock_rate
//! ```
//!
//! It is constant when packets arrive exactly on the schedule their
//! timestamps describe. The *baseline* is the running minimum `min(d(0..=i))`
//! — the schedule of the earliest packet seen so far — and the pacing error
//! recorded for packet `i` is `d(i) − baseline(i)`: how late the packet came
//! relative to that schedule, in microseconds, always ≥ 0. A burst sent
//! ahead of schedule (a proxy handing a joining player the current GOP at
//! once) lowers the baseline rather than counting as error; packets that
//! share a timestamp (the fragments of one video frame) measure how spread
//! out the frame's delivery was. Tracks whose clock rate is unknown are not
//! measured.

use crate::histogram::Histogram;
use std::time::Instant;
use streamcache_rtsp::rtp::RtpHeader;

/// Counters and pacing histogram of one track of one session.
#[derive(Debug, Clone, Default)]
pub struct TrackStats {
    /// RTP packets received (duplicates included).
    pub packets: u64,
    /// Bytes of those RTP packets, RTP header included, `$` framing not.
    pub bytes: u64,
    /// Interleaved frames on the RTP channel that were not valid RTP.
    pub malformed: u64,
    /// RTCP packets received on the track's RTCP channel.
    pub rtcp_packets: u64,
    sequence: Option<SequenceState>,
    pacing: Option<PacingState>,
    clock_rate: Option<u32>,
    /// Pacing error of each packet, µs (see the module doc).
    pub pacing_us: Histogram,
}

/// Extended sequence numbers seen so far.
#[derive(Debug, Clone, Copy)]
struct SequenceState {
    first: u64,
    highest: u64,
    received: u64,
    gaps: u64,
}

/// Reference points for the transit offset.
#[derive(Debug, Clone, Copy)]
struct PacingState {
    first_arrival: Instant,
    last_timestamp: u32,
    /// Timestamp ticks since the first packet, extended past wrap-around.
    ticks: i64,
    /// Running minimum of the transit offset, µs.
    baseline_us: i64,
}

impl TrackStats {
    /// Stats for a track with the given RTP clock rate (if known).
    pub fn new(clock_rate: Option<u32>) -> Self {
        TrackStats {
            clock_rate: clock_rate.filter(|&r| r > 0),
            ..Self::default()
        }
    }

    /// Accounts one RTP packet that arrived at `arrival`. Returns its header,
    /// or `None` (and counts it as malformed) if it is not RTP.
    pub fn on_rtp(&mut self, packet: &[u8], arrival: Instant) -> Option<RtpHeader> {
        let Ok(header) = RtpHeader::parse(packet) else {
            self.malformed += 1;
            return None;
        };
        self.packets += 1;
        self.bytes += packet.len() as u64;
        self.on_sequence(header.sequence);
        if let Some(rate) = self.clock_rate {
            let error = self.on_timestamp(header.timestamp, arrival, rate);
            self.pacing_us.record(error);
        }
        Some(header)
    }

    /// Packets missing from the sequence (RFC 3550 §6.4.1).
    pub fn lost(&self) -> u64 {
        self.sequence
            .map_or(0, |s| (s.highest - s.first + 1).saturating_sub(s.received))
    }

    /// Forward jumps of the sequence number by more than one.
    pub fn gaps(&self) -> u64 {
        self.sequence.map_or(0, |s| s.gaps)
    }

    fn on_sequence(&mut self, sequence: u16) {
        let Some(s) = &mut self.sequence else {
            // Start high enough that a reordered earlier packet cannot
            // take the extended number below zero.
            let start = (1 << 32) + u64::from(sequence);
            self.sequence = Some(SequenceState {
                first: start,
                highest: start,
                received: 1,
                gaps: 0,
            });
            return;
        };
        s.received += 1;
        let step = i64::from(sequence.wrapping_sub(s.highest as u16) as i16);
        if step > 1 {
            s.gaps += 1;
        }
        if step > 0 {
            s.highest += step as u64;
        } else if let Some(earlier) = s.highest.checked_add_signed(step) {
            // A reordered packet from before the first one seen widens the
            // expected range.
            s.first = s.first.min(earlier);
        }
    }

    /// Updates the baseline and returns this packet's pacing error in µs.
    fn on_timestamp(&mut self, timestamp: u32, arrival: Instant, rate: u32) -> u64 {
        let p = self.pacing.get_or_insert(PacingState {
            first_arrival: arrival,
            last_timestamp: timestamp,
            ticks: 0,
            baseline_us: 0,
        });
        p.ticks += i64::from(timestamp.wrapping_sub(p.last_timestamp) as i32);
        p.last_timestamp = timestamp;
        let arrival_us = arrival
            .saturating_duration_since(p.first_arrival)
            .as_micros() as i64;
        let media_us = p.ticks * 1_000_000 / i64::from(rate);
        let offset = arrival_us - media_us;
        p.baseline_us = p.baseline_us.min(offset);
        (offset - p.baseline_us) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rtp(sequence: u16, timestamp: u32) -> Vec<u8> {
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&sequence.to_be_bytes());
        p.extend_from_slice(&timestamp.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1]); // SSRC
        p.extend_from_slice(&[0x65, 0, 0]); // payload
        p
    }

    fn feed(stats: &mut TrackStats, sequences: &[u16]) {
        let now = Instant::now();
        for &s in sequences {
            stats.on_rtp(&rtp(s, 0), now);
        }
    }

    #[test]
    fn counts_packets_bytes_and_no_loss_in_order() {
        let mut t = TrackStats::new(None);
        feed(&mut t, &[10, 11, 12, 13]);
        assert_eq!((t.packets, t.bytes, t.lost(), t.gaps()), (4, 60, 0, 0));
    }

    #[test]
    fn counts_gaps_and_lost_packets_across_wrap() {
        let mut t = TrackStats::new(None);
        feed(&mut t, &[65534, 65535, 2, 3, 7]);
        // Missing: 0, 1 and 4, 5, 6.
        assert_eq!((t.lost(), t.gaps()), (5, 2));
    }

    #[test]
    fn reordered_packet_fills_its_hole() {
        let mut t = TrackStats::new(None);
        feed(&mut t, &[1, 3, 2, 4]);
        assert_eq!((t.lost(), t.gaps()), (0, 1));
        let mut t = TrackStats::new(None);
        feed(&mut t, &[5, 6, 4]);
        assert_eq!(t.lost(), 0);
    }

    #[test]
    fn malformed_packets_are_counted_apart() {
        let mut t = TrackStats::new(Some(90_000));
        assert!(t.on_rtp(&[1, 2, 3], Instant::now()).is_none());
        assert_eq!((t.packets, t.malformed, t.pacing_us.count()), (0, 1, 0));
    }

    #[test]
    fn pacing_error_is_lateness_against_the_earliest_schedule() {
        let mut t = TrackStats::new(Some(90_000));
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        // 40 ms frames: on time, on time, 5 ms late, on time.
        t.on_rtp(&rtp(1, 1000), ms(0));
        t.on_rtp(&rtp(2, 1000 + 3600), ms(40));
        t.on_rtp(&rtp(3, 1000 + 7200), ms(85));
        t.on_rtp(&rtp(4, 1000 + 10800), ms(120));
        assert_eq!(t.pacing_us.max(), 5000);
        assert_eq!(t.pacing_us.count(), 4);
        assert_eq!(t.pacing_us.quantile(0.5), Some(0));
    }

    #[test]
    fn early_burst_lowers_the_baseline() {
        let mut t = TrackStats::new(Some(1000));
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        // One second of media delivered in 10 ms, then real time.
        t.on_rtp(&rtp(1, 0), ms(0));
        t.on_rtp(&rtp(2, 1000), ms(10));
        t.on_rtp(&rtp(3, 1100), ms(110));
        t.on_rtp(&rtp(4, 1200), ms(212));
        assert_eq!(t.pacing_us.max(), 2000);
    }

    #[test]
    fn pacing_follows_timestamp_wrap() {
        let mut t = TrackStats::new(Some(1000));
        let t0 = Instant::now();
        t.on_rtp(&rtp(1, u32::MAX - 9), t0);
        t.on_rtp(&rtp(2, 10), t0 + Duration::from_millis(20));
        assert_eq!(t.pacing_us.max(), 0);
    }
}
