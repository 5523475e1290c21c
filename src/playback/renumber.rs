//! Per-player RTP numbering for playback from the store.
//!
//! A recorded packet keeps the origin's SSRC, sequence number and timestamp,
//! which differ between recording runs (a partial fill is a second origin
//! session) and jump on seek. Each player instead gets its own SSRC, a
//! sequence number that goes up by one per packet across seek, pause and run
//! boundaries, and a timestamp derived from the record's npt, so that
//! timestamps stay consistent with npt whatever run a packet came from.
//!
//! npt ↔ RTP ticks: the hub stores `npt_ns = floor(ticks * 1e9 / rate)`;
//! `ceil(npt_ns * rate / 1e9)` gives back exactly `ticks` (rate < 1e9), so a
//! replay carries the very timestamps (relative to the start) the origin sent
//! and decoders see the same presentation times.

use rand::Rng;
use streamcache_types::Npt;

/// RTP numbering of one track toward one player.
#[derive(Debug, Clone)]
pub struct TrackNumbering {
    pub ssrc: u32,
    clock_rate: u32,
    /// The next sequence number to send.
    next_seq: u16,
    /// RTP timestamp that stands for npt 0.
    ts_origin: u32,
    pub packets: u32,
    pub octets: u32,
}

impl TrackNumbering {
    /// Random SSRC, initial sequence number and timestamp (RFC 3550 §5.1).
    pub fn new(clock_rate: u32) -> TrackNumbering {
        let mut rng = rand::thread_rng();
        TrackNumbering::with_start(clock_rate, rng.gen(), rng.gen(), rng.gen())
    }

    pub fn with_start(clock_rate: u32, ssrc: u32, seq: u16, ts_origin: u32) -> TrackNumbering {
        TrackNumbering {
            ssrc,
            clock_rate: clock_rate.max(1),
            next_seq: seq,
            ts_origin,
            packets: 0,
            octets: 0,
        }
    }

    /// The sequence number the next packet will carry (for `RTP-Info`).
    pub fn next_seq(&self) -> u16 {
        self.next_seq
    }

    /// The RTP timestamp of a media time.
    pub fn rtp_time(&self, npt: Npt) -> u32 {
        let rate = u128::from(self.clock_rate);
        let ticks = (u128::from(npt.as_ns()) * rate).div_ceil(1_000_000_000);
        self.ts_origin.wrapping_add(ticks as u32)
    }

    /// Rewrites a recorded RTP packet in place for this player. Packets too
    /// short to carry an RTP header are left alone (the caller drops them).
    pub fn rewrite(&mut self, packet: &mut [u8], npt: Npt) -> bool {
        if packet.len() < 12 || packet[0] >> 6 != 2 {
            return false;
        }
        let ts = self.rtp_time(npt);
        packet[2..4].copy_from_slice(&self.next_seq.to_be_bytes());
        packet[4..8].copy_from_slice(&ts.to_be_bytes());
        packet[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        self.next_seq = self.next_seq.wrapping_add(1);
        self.packets = self.packets.wrapping_add(1);
        let payload = u32::try_from(packet.len() - 12).unwrap_or(u32::MAX);
        self.octets = self.octets.wrapping_add(payload);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(b"payload");
        p
    }

    #[test]
    fn sequence_continues_across_any_input_numbering() {
        let mut n = TrackNumbering::with_start(90_000, 7, u16::MAX, 1000);
        let mut a = packet(500, 1, 1);
        let mut b = packet(3, 99, 2); // another run: other SSRC, seq, ts
        assert!(n.rewrite(&mut a, Npt::ZERO));
        assert!(n.rewrite(&mut b, Npt::from_millis(40)));
        assert_eq!(&a[2..4], &u16::MAX.to_be_bytes());
        assert_eq!(&b[2..4], &0u16.to_be_bytes());
        assert_eq!(&a[8..12], &7u32.to_be_bytes());
        assert_eq!(&b[8..12], &7u32.to_be_bytes());
        assert_eq!(&b[4..8], &(1000u32 + 3600).to_be_bytes());
        assert_eq!(&b[12..], b"payload");
        assert_eq!((n.packets, n.octets), (2, 14));
    }

    #[test]
    fn timestamps_round_trip_the_hubs_media_time() {
        for rate in [8_000u32, 44_100, 48_000, 90_000] {
            let n = TrackNumbering::with_start(rate, 1, 0, 0);
            for ticks in [0u64, 1, 2, 3, 1919, 44_099, 1_234_567, 4_000_000_000] {
                // What the hub stores for these ticks.
                let npt =
                    Npt::from_ns((u128::from(ticks) * 1_000_000_000 / u128::from(rate)) as u64);
                assert_eq!(n.rtp_time(npt), ticks as u32, "rate {rate} ticks {ticks}");
            }
        }
    }

    #[test]
    fn short_or_non_rtp_packets_are_refused() {
        let mut n = TrackNumbering::with_start(90_000, 1, 0, 0);
        assert!(!n.rewrite(&mut [0x80, 96, 0], Npt::ZERO));
        let mut v1 = packet(1, 1, 1);
        v1[0] = 0x40;
        assert!(!n.rewrite(&mut v1, Npt::ZERO));
        assert_eq!(n.next_seq(), 0);
    }
}
