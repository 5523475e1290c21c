//! A small log-linear histogram of non-negative microsecond values.
//!
//! Values below 128 µs are counted exactly; above that every power of two is
//! split into 64 buckets, so a reported percentile is at most 1/64 (1.6 %)
//! above the true value. Buckets are allocated only up to the largest value
//! recorded, so a histogram of values under 100 ms takes about 6 KiB. Each
//! session keeps its own and [`Histogram::merge`] sums them at the end.

/// Counts of values in log-linear buckets, plus the exact maximum.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

/// Values below this are their own bucket.
const EXACT: u64 = 128;
/// Buckets per power of two above [`EXACT`].
const PER_OCTAVE: usize = 64;

/// The bucket of a value: exact below [`EXACT`], else the top 7 significant
/// bits (64..=127) with the shift that produced them.
fn bucket(value: u64) -> usize {
    if value < EXACT {
        return value as usize;
    }
    let msb = 63 - value.leading_zeros(); // >= 7
    let shift = msb - 6; // >= 1
    let mantissa = (value >> shift) as usize; // 64..=127
    shift as usize * PER_OCTAVE + mantissa
}

/// The largest value that falls in bucket `index`.
fn bucket_top(index: usize) -> u64 {
    if index < EXACT as usize {
        return index as u64;
    }
    let shift = index / PER_OCTAVE - 1;
    let mantissa = (index % PER_OCTAVE + PER_OCTAVE) as u64;
    ((mantissa + 1) << shift) - 1
}

impl Histogram {
    /// Counts one value.
    pub fn record(&mut self, value: u64) {
        let i = bucket(value);
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.total += 1;
        self.max = self.max.max(value);
    }

    /// Adds every count of `other` to this histogram.
    pub fn merge(&mut self, other: &Histogram) {
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest value recorded (0 if none).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0.0..=1.0): the top of the bucket holding
    /// the `ceil(q × count)`-th smallest value, never above the maximum.
    /// `None` when nothing was recorded.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(bucket_top(i).min(self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_their_values() {
        let mut previous_top = None;
        for i in 0..2000 {
            let top = bucket_top(i);
            if let Some(p) = previous_top {
                assert_eq!(bucket(p + 1), i, "value after bucket {} top", i - 1);
            }
            assert_eq!(bucket(top), i);
            previous_top = Some(top);
        }
        assert_eq!(bucket(u64::MAX), 57 * PER_OCTAVE + 127);
    }

    #[test]
    fn relative_error_is_bounded() {
        for v in [128u64, 1000, 12_345, 999_999, 123_456_789] {
            let top = bucket_top(bucket(v));
            assert!(top >= v);
            assert!((top - v) as f64 / v as f64 <= 1.0 / 64.0, "{v} -> {top}");
        }
    }

    #[test]
    fn exact_quantiles_for_small_values() {
        let mut h = Histogram::default();
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile(0.5), Some(50));
        assert_eq!(h.quantile(0.99), Some(99));
        assert_eq!(h.quantile(1.0), Some(100));
        assert_eq!(h.quantile(0.0), Some(1));
        assert_eq!(h.max(), 100);
    }

    #[test]
    fn quantile_never_exceeds_max() {
        let mut h = Histogram::default();
        h.record(1_000_001);
        assert_eq!(h.quantile(0.5), Some(1_000_001));
    }

    #[test]
    fn empty_has_no_quantile() {
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let (mut a, mut b, mut all) = (
            Histogram::default(),
            Histogram::default(),
            Histogram::default(),
        );
        for v in [3u64, 700, 40_000] {
            a.record(v);
            all.record(v);
        }
        for v in [5u64, 9_000_000] {
            b.record(v);
            all.record(v);
        }
        a.merge(&b);
        assert_eq!(a, all);
    }
}
