//! Sample timing shared by the MP4 muxers: npt → track ticks, decode times
//! from presentation times, durations and composition offsets.
//!
//! Frames arrive in decode order with presentation times only. The decode
//! time of the i-th frame is the i-th smallest presentation time (made
//! strictly increasing): with no B-frames that is the frame's own pts (all
//! composition offsets zero); with B-frames the decode times are the
//! presentation times re-sorted, which keeps them monotonic and makes every
//! offset small. A decode time may then lie after its presentation time;
//! [`Timing::delay`] is the shift that makes every offset non-negative (the
//! MP4 writer shifts by it and compensates with an edit list; fragments keep
//! the decode times unshifted and write signed offsets, trun version 1).

use crate::frame::Codec;

/// Video tracks' timescale: the RTP clock of every video payload format.
pub const VIDEO_TIMESCALE: u32 = 90_000;

/// The track timescale for a codec: 90 kHz video, the sample rate audio.
pub fn timescale(codec: &Codec) -> u32 {
    match codec {
        Codec::H264 { .. } | Codec::H265 { .. } => VIDEO_TIMESCALE,
        Codec::Aac { sample_rate, .. }
        | Codec::Pcmu { sample_rate, .. }
        | Codec::Pcma { sample_rate, .. } => (*sample_rate).max(1),
        Codec::Opus { .. } => 48_000,
    }
}

/// A frame's duration when nothing follows it: one AAC frame, 20 ms of
/// Opus, 1/25 s of video; G.711 by its size (one byte a sample a channel).
pub fn default_duration(codec: &Codec, size: usize) -> u32 {
    match codec {
        Codec::H264 { .. } | Codec::H265 { .. } => VIDEO_TIMESCALE / 25,
        Codec::Aac { .. } => 1024,
        Codec::Opus { .. } => 960,
        Codec::Pcmu { channels, .. } | Codec::Pcma { channels, .. } => {
            u32::try_from(size / usize::from((*channels).max(1))).unwrap_or(u32::MAX)
        }
    }
}

/// `ns` nanoseconds in ticks of `timescale`, rounded to the nearest.
pub fn ticks(ns: u64, timescale: u32) -> i64 {
    let t = (u128::from(ns) * u128::from(timescale) + 500_000_000) / 1_000_000_000;
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// The timing of one track's samples (in decode order), in track ticks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// Decode times, strictly increasing, unshifted (see the module docs).
    pub dts: Vec<i64>,
    /// Durations: the next sample's decode time minus this one's; the last
    /// lasts until `end` if given and later, else as long as the one before
    /// (or the codec's default when alone).
    pub durations: Vec<u32>,
    /// The smallest shift of the decode times that makes every
    /// `pts - (dts - delay)` non-negative; 0 without B-frames.
    pub delay: i64,
}

impl Timing {
    /// `pts`: presentation times in decode order. `end`: where the last
    /// sample ends (the next fragment's start), if known.
    pub fn new(pts: &[i64], end: Option<i64>, default: u32) -> Timing {
        let mut dts = pts.to_vec();
        dts.sort_unstable();
        for i in 1..dts.len() {
            dts[i] = dts[i].max(dts[i - 1].saturating_add(1));
        }
        let delay = dts
            .iter()
            .zip(pts)
            .map(|(d, p)| d.saturating_sub(*p))
            .max()
            .unwrap_or(0)
            .max(0);
        let mut durations: Vec<u32> = dts.windows(2).map(|w| clamp(w[1] - w[0])).collect();
        if let Some(&last) = dts.last() {
            let fallback = durations.last().copied().unwrap_or(default).max(1);
            let to_end = end.map(|e| e - last).filter(|&d| d > 0);
            durations.push(to_end.map_or(fallback, clamp));
        }
        Timing {
            dts,
            durations,
            delay,
        }
    }

    /// Composition offsets `pts - dts + shift`, where `shift` is either
    /// [`Timing::delay`] (all non-negative) or 0 (signed).
    pub fn offsets(&self, pts: &[i64], shift: i64) -> Vec<i64> {
        pts.iter()
            .zip(&self.dts)
            .map(|(p, d)| p - d + shift)
            .collect()
    }

    /// From the first decode time to the end of the last sample.
    pub fn span(&self) -> u64 {
        self.durations.iter().map(|&d| u64::from(d)).sum()
    }
}

fn clamp(delta: i64) -> u32 {
    u32::try_from(delta.max(1)).unwrap_or(u32::MAX)
}

/// Runs of equal values: `(count, value)`, for stts/ctts.
pub fn runs<T: PartialEq + Copy>(values: impl IntoIterator<Item = T>) -> Vec<(u32, T)> {
    let mut out: Vec<(u32, T)> = Vec::new();
    for v in values {
        match out.last_mut() {
            Some((n, last)) if *last == v => *n += 1,
            _ => out.push((1, v)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ticks_round_to_nearest() {
        assert_eq!(ticks(1_000_000_000, 90_000), 90_000);
        assert_eq!(ticks(40_000_000, 90_000), 3600);
        assert_eq!(ticks(21_333_333, 48_000), 1024);
        assert_eq!(ticks(u64::MAX, 90_000), 1_660_206_966_633_860);
    }

    #[test]
    fn without_b_frames_offsets_are_zero() {
        let pts = [0, 3600, 7200, 10800];
        let t = Timing::new(&pts, None, 3600);
        assert_eq!(t.dts, pts);
        assert_eq!(t.delay, 0);
        assert_eq!(t.durations, [3600; 4]);
        assert!(t.offsets(&pts, t.delay).iter().all(|&o| o == 0));
    }

    #[test]
    fn b_frames_get_a_delay_and_positive_offsets() {
        // I P B B in decode order: presentation 0, 3, 1, 2 (×3600).
        let pts = [0, 10800, 3600, 7200];
        let t = Timing::new(&pts, Some(14400), 3600);
        assert_eq!(t.dts, [0, 3600, 7200, 10800]);
        assert_eq!(t.delay, 3600);
        assert_eq!(t.offsets(&pts, 0), [0, 7200, -3600, -3600]);
        assert_eq!(t.offsets(&pts, t.delay), [3600, 10800, 0, 0]);
        // Open GOP-like order where the first frame is not the earliest.
        let pts = [7200, 0, 3600];
        let t = Timing::new(&pts, None, 3600);
        assert_eq!(t.delay, 3600);
        assert_eq!(t.offsets(&pts, t.delay), [10800, 0, 0]);
    }

    #[test]
    fn a_gap_is_held_by_the_frame_before_it() {
        let pts = [0, 3600, 90_000 * 10];
        let t = Timing::new(&pts, None, 3600);
        assert_eq!(t.durations, [3600, 896_400, 896_400]);
    }

    #[test]
    fn equal_times_still_advance() {
        let t = Timing::new(&[5, 5, 5], None, 10);
        assert_eq!(t.dts, [5, 6, 7]);
        assert_eq!(t.durations, [1, 1, 1]);
    }

    #[test]
    fn runs_compress() {
        assert_eq!(runs([1, 1, 2, 1]), [(2, 1), (1, 2), (1, 1)]);
    }

    proptest! {
        #[test]
        fn timing_is_consistent(
            pts in proptest::collection::vec(0i64..10_000_000, 1..200),
            end in proptest::option::of(0i64..20_000_000),
        ) {
            let t = Timing::new(&pts, end, 3600);
            prop_assert_eq!(t.dts.len(), pts.len());
            prop_assert_eq!(t.durations.len(), pts.len());
            // Durations: positive, and they add up to the span.
            prop_assert!(t.durations.iter().all(|&d| d > 0));
            let last = *t.dts.last().unwrap();
            let first = t.dts[0];
            prop_assert_eq!(
                t.span(),
                (last - first) as u64 + u64::from(*t.durations.last().unwrap())
            );
            for (i, w) in t.dts.windows(2).enumerate() {
                prop_assert!(w[1] > w[0]);
                prop_assert_eq!((w[1] - w[0]) as u32, t.durations[i]);
            }
            // Offsets: non-negative with the delay, and they give back the pts.
            let offsets = t.offsets(&pts, t.delay);
            prop_assert!(offsets.iter().all(|&o| o >= 0));
            prop_assert!(offsets.contains(&0));
            for ((p, d), o) in pts.iter().zip(&t.dts).zip(&offsets) {
                prop_assert_eq!(d - t.delay + o, *p);
            }
            // Non-decreasing distinct pts: no reordering, no offsets.
            let mut sorted = pts.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted == pts {
                prop_assert_eq!(t.delay, 0);
                prop_assert!(offsets.iter().all(|&o| o == 0));
            }
        }
    }
}
