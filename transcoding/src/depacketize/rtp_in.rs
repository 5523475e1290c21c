//! The RTP layer every depacketizer shares: header check (through
//! `streamcache_rtsp::rtp::RtpHeader`, built on `rtp-rs`), payload type and
//! sequence-number continuity.

use streamcache_rtsp::rtp::RtpHeader;

use super::DepacketizeStats;

/// How far back a sequence number may go and still count as a late or
/// duplicated packet (dropped) rather than a restart of the numbering
/// (taken, as a gap): RFC 3550 A.1's MAX_MISORDER.
const MAX_MISORDER: u16 = 100;

/// One accepted packet.
#[derive(Debug, Clone, Copy)]
pub(super) struct Packet<'a> {
    pub marker: bool,
    pub timestamp: u32,
    pub payload: &'a [u8],
    /// The packet does not follow the previous accepted one: packets were
    /// lost, the numbering or the source changed, or a new recording run
    /// began.
    pub gap: bool,
}

#[derive(Debug)]
pub(super) struct RtpIn {
    payload_type: u8,
    /// SSRC and sequence number of the last accepted packet.
    last: Option<(u32, u16)>,
}

impl RtpIn {
    pub fn new(payload_type: u8) -> RtpIn {
        RtpIn {
            payload_type,
            last: None,
        }
    }

    /// The packet, or `None` (counted in `stats`) when it is malformed,
    /// of another payload type, or late.
    pub fn accept<'a>(
        &mut self,
        rtp: &'a [u8],
        discontinuity: bool,
        stats: &mut DepacketizeStats,
    ) -> Option<Packet<'a>> {
        let Ok(header) = RtpHeader::parse(rtp) else {
            stats.malformed_packets += 1;
            return None;
        };
        if header.payload_type != self.payload_type {
            stats.unsupported_packets += 1;
            return None;
        }
        let gap = match self.last {
            // The first packet follows nothing, whatever the store says.
            None => false,
            Some(_) if discontinuity => true,
            Some((ssrc, _)) if ssrc != header.ssrc => true,
            Some((_, seq)) => {
                let ahead = header.sequence.wrapping_sub(seq);
                let behind = seq.wrapping_sub(header.sequence);
                if behind <= MAX_MISORDER {
                    // Late or duplicated (behind == 0): never reordered.
                    stats.reordered_packets += 1;
                    return None;
                }
                ahead != 1
            }
        };
        self.last = Some((header.ssrc, header.sequence));
        let payload = header.payload(rtp);
        if payload.is_empty() {
            stats.malformed_packets += 1;
            return None;
        }
        Some(Packet {
            marker: header.marker,
            timestamp: header.timestamp,
            payload,
            gap,
        })
    }
}

/// Builds an RTP packet (version 2, no CSRC, no extension), for the tests.
#[cfg(test)]
pub(super) fn packet(pt: u8, seq: u16, ts: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, (u8::from(marker) << 7) | pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_late_packets_and_restarts() {
        let mut r = RtpIn::new(96);
        let mut s = DepacketizeStats::default();
        let seqs = |r: &mut RtpIn, s: &mut DepacketizeStats, seq: u16| {
            r.accept(&packet(96, seq, 0, false, &[1]), false, s)
                .map(|p| p.gap)
        };
        assert_eq!(seqs(&mut r, &mut s, 65535), Some(false));
        assert_eq!(seqs(&mut r, &mut s, 0), Some(false), "wraps");
        assert_eq!(seqs(&mut r, &mut s, 0), None, "duplicate");
        assert_eq!(seqs(&mut r, &mut s, 65534), None, "late");
        assert_eq!(seqs(&mut r, &mut s, 3), Some(true), "lost 1 and 2");
        assert_eq!(seqs(&mut r, &mut s, 40_000), Some(true), "renumbered");
        assert_eq!(s.reordered_packets, 2);
        assert!(r
            .accept(&packet(97, 40_001, 0, false, &[1]), false, &mut s)
            .is_none());
        assert!(r
            .accept(&packet(96, 40_001, 0, false, &[]), false, &mut s)
            .is_none());
        assert!(r.accept(&[0x80, 96, 0], false, &mut s).is_none());
        assert_eq!((s.unsupported_packets, s.malformed_packets), (1, 2));
        let next = packet(96, 40_002, 0, false, &[1]);
        let p = r.accept(&next, true, &mut s);
        assert!(p.expect("taken").gap, "a new run is a gap");
    }
}
