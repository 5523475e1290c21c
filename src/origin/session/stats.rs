//! Reception statistics for RTCP receiver reports.

use super::*;

/// Reception statistics of one track for RTCP receiver reports
/// (RFC 3550 appendix A.3, without the probation logic).
#[derive(Debug, Default)]
pub(super) struct RecvStats {
    ssrc: Option<u32>,
    base_seq: u32,
    max_seq: u16,
    cycles: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    /// Middle 32 bits of the last SR's NTP time, and when it arrived.
    last_sr: Option<(u32, Instant)>,
}

impl RecvStats {
    pub(super) fn on_rtp(&mut self, h: &RtpHeader) {
        if self.ssrc != Some(h.ssrc) {
            *self = RecvStats {
                ssrc: Some(h.ssrc),
                base_seq: u32::from(h.sequence),
                max_seq: h.sequence,
                last_sr: self.last_sr,
                ..RecvStats::default()
            };
        }
        let delta = h.sequence.wrapping_sub(self.max_seq);
        if delta != 0 && delta < 0x8000 {
            if h.sequence < self.max_seq {
                self.cycles = self.cycles.wrapping_add(1 << 16);
            }
            self.max_seq = h.sequence;
        }
        self.received = self.received.wrapping_add(1);
    }

    pub(super) fn on_sender_report(&mut self, ntp: u64) {
        self.last_sr = Some(((ntp >> 16) as u32, Instant::now()));
    }

    pub(super) fn report_block(&mut self) -> Option<ReportBlock> {
        let ssrc = self.ssrc?;
        let extended_max = self.cycles.wrapping_add(u32::from(self.max_seq));
        let expected = extended_max.wrapping_sub(self.base_seq).wrapping_add(1);
        let lost = i64::from(expected) - i64::from(self.received);
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
        };
        let (last_sr, delay_since_last_sr) = match self.last_sr {
            Some((lsr, at)) => (lsr, (at.elapsed().as_secs_f64() * 65536.0) as u32),
            None => (0, 0),
        };
        Some(ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: lost.clamp(-0x80_0000, 0x7f_ffff) as i32,
            highest_seq: extended_max,
            jitter: 0,
            last_sr,
            delay_since_last_sr,
        })
    }
}

#[cfg(test)]
mod stats_tests {
    use super::*;

    fn header(seq: u16) -> RtpHeader {
        RtpHeader {
            marker: false,
            payload_type: 96,
            sequence: seq,
            timestamp: 0,
            ssrc: 9,
            csrc_count: 0,
            extension: false,
            padding: 0,
            payload_offset: 12,
            payload_len: 0,
        }
    }

    #[test]
    fn counts_loss_across_wraparound() {
        let mut s = RecvStats::default();
        assert!(s.report_block().is_none());
        for seq in [65530u16, 65531, 65533, 65535, 0, 1, 3] {
            s.on_rtp(&header(seq));
        }
        let b = s.report_block().unwrap();
        assert_eq!(b.highest_seq, 65536 + 3);
        assert_eq!(b.cumulative_lost, 3); // 65532, 65534, 2
        assert_eq!(b.fraction_lost, (3 * 256 / 10) as u8);
        s.on_rtp(&header(4));
        assert_eq!(s.report_block().unwrap().fraction_lost, 0);
    }
}
