//! Packet loss as players report it in RTCP reception reports (RFC 3550
//! §6.4.1): each report block carries the cumulative number of packets lost
//! from one source since reception began. [`LossTracker`] turns those
//! running totals into increments that can be added to a counter.
//!
//! The cumulative field is a 24-bit signed number and may go down (duplicate
//! packets make it shrink, even negative). Only rises above the highest
//! total already counted are counted, so a report that goes down and up
//! again is not counted twice, and what one source can add is bounded by
//! the field's range.

use crate::rtp::{parse_rtcp, RtpError};

/// Sources tracked per receiver at most; reports about further sources are
/// ignored (a session sends a handful of tracks, and a peer must not make
/// the table grow).
pub const MAX_SOURCES: usize = 16;

/// The running loss totals one receiver reported, per source SSRC.
#[derive(Debug, Clone, Default)]
pub struct LossTracker {
    /// (source SSRC, highest cumulative loss counted so far).
    sources: Vec<(u32, u32)>,
}

impl LossTracker {
    pub fn new() -> LossTracker {
        LossTracker::default()
    }

    /// Reads a compound RTCP packet from the receiver and returns how many
    /// newly lost packets its report blocks add to what was counted before.
    pub fn on_rtcp(&mut self, data: &[u8]) -> Result<u64, RtpError> {
        let summary = parse_rtcp(data)?;
        Ok(summary
            .report_blocks
            .iter()
            .map(|(_, block)| self.on_report(block.ssrc, block.cumulative_lost))
            .sum())
    }

    /// Records that the receiver reports `cumulative_lost` packets lost
    /// from `source`; returns the increase over the highest total seen.
    pub fn on_report(&mut self, source: u32, cumulative_lost: i32) -> u64 {
        let total = u32::try_from(cumulative_lost).unwrap_or(0);
        if let Some((_, counted)) = self.sources.iter_mut().find(|(ssrc, _)| *ssrc == source) {
            let added = total.saturating_sub(*counted);
            *counted = (*counted).max(total);
            return u64::from(added);
        }
        if self.sources.len() >= MAX_SOURCES {
            return 0;
        }
        self.sources.push((source, total));
        u64::from(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::{build_bye, build_receiver_report, ReportBlock};
    use proptest::prelude::*;

    fn rr(blocks: &[(u32, i32)]) -> Vec<u8> {
        let blocks: Vec<ReportBlock> = blocks
            .iter()
            .map(|&(ssrc, cumulative_lost)| ReportBlock {
                ssrc,
                cumulative_lost,
                ..ReportBlock::default()
            })
            .collect();
        build_receiver_report(0xABCD, &blocks, "player")
    }

    #[test]
    fn counts_rises_of_the_cumulative_total_per_source() {
        let mut t = LossTracker::new();
        assert_eq!(t.on_rtcp(&rr(&[(1, 0), (2, 3)])).unwrap(), 3);
        assert_eq!(t.on_rtcp(&rr(&[(1, 5), (2, 3)])).unwrap(), 5);
        assert_eq!(t.on_rtcp(&rr(&[(1, 7), (2, 10)])).unwrap(), 9);
    }

    #[test]
    fn a_total_that_goes_down_is_not_counted_again() {
        let mut t = LossTracker::new();
        assert_eq!(t.on_report(1, 10), 10);
        // Duplicates arrived: the total shrinks, even below zero.
        assert_eq!(t.on_report(1, 4), 0);
        assert_eq!(t.on_report(1, -2), 0);
        // Back up to 10 is nothing new; beyond it is.
        assert_eq!(t.on_report(1, 10), 0);
        assert_eq!(t.on_report(1, 12), 2);
    }

    #[test]
    fn a_first_negative_report_counts_nothing() {
        let mut t = LossTracker::new();
        assert_eq!(t.on_report(9, -5), 0);
        assert_eq!(t.on_report(9, 1), 1);
    }

    #[test]
    fn the_number_of_sources_is_bounded() {
        let mut t = LossTracker::new();
        for ssrc in 0..MAX_SOURCES as u32 {
            assert_eq!(t.on_report(ssrc, 1), 1);
        }
        assert_eq!(t.on_report(1000, 50), 0);
        assert_eq!(t.on_report(0, 2), 1);
    }

    #[test]
    fn packets_without_report_blocks_count_nothing() {
        let mut t = LossTracker::new();
        assert_eq!(t.on_rtcp(&build_bye(7)).unwrap(), 0);
        assert_eq!(t.on_rtcp(&rr(&[])).unwrap(), 0);
    }

    #[test]
    fn malformed_rtcp_is_an_error_and_changes_nothing() {
        let mut t = LossTracker::new();
        assert_eq!(t.on_report(1, 3), 3);
        let good = rr(&[(1, 100)]);
        for bad in [
            &[][..],
            &[0x80, 201][..],
            // Version 1.
            &[0x41, 201, 0, 1, 0, 0, 0, 1][..],
            // Length running past the end.
            &good[..good.len() - 4],
            // An RR header too short for its reporter SSRC.
            &[0x81, 201, 0, 0][..],
        ] {
            assert!(t.on_rtcp(bad).is_err(), "{bad:?}");
        }
        // Nothing of the truncated report was taken.
        assert_eq!(t.on_report(1, 3), 0);
        assert_eq!(t.on_rtcp(&good).unwrap(), 97);
    }

    proptest! {
        #[test]
        fn never_panics_and_never_counts_more_than_the_field_allows(
            packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 0..8)
        ) {
            let mut t = LossTracker::new();
            let mut total = 0u64;
            for p in &packets {
                total += t.on_rtcp(p).unwrap_or(0);
            }
            prop_assert!(total <= MAX_SOURCES as u64 * 0x7f_ffff);
        }
    }
}
