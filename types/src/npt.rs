//! Normal play time in nanoseconds.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A position in normal play time: nanoseconds from the start of the
/// presentation (RFC 2326 §3.6). Integer, so that positions written by
/// different recording runs of a title compare exactly; RTSP's text form
/// (`10.500`) is read and written without going through a float.
///
/// Stored as a plain number (`serde(transparent)`): the store's metadata
/// keeps its `*_ns` fields.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Npt(u64);

/// How close two stretches must be to count as one: the store merges spans
/// less than this apart, and a title counts as held from its start when its
/// first span starts within this of the start. Half a second covers an
/// origin snapping a Range PLAY back to a keyframe and the last access unit
/// a recording cut short did not keep.
pub const HELD_SLACK: Npt = Npt::from_millis(500);

impl Npt {
    /// The start of the presentation.
    pub const ZERO: Npt = Npt(0);
    /// The largest position (an open end).
    pub const MAX: Npt = Npt(u64::MAX);

    pub const fn from_ns(ns: u64) -> Npt {
        Npt(ns)
    }

    pub const fn from_millis(ms: u64) -> Npt {
        Npt(ms.saturating_mul(1_000_000))
    }

    pub const fn from_secs(secs: u64) -> Npt {
        Npt(secs.saturating_mul(1_000_000_000))
    }

    /// Seconds as a float (SDP arithmetic, human input); negative, NaN and
    /// huge values saturate to 0 and [`Npt::MAX`].
    pub fn from_secs_f64(secs: f64) -> Npt {
        // `as` saturates and maps NaN to 0.
        Npt((secs * 1e9) as u64)
    }

    pub const fn as_ns(self) -> u64 {
        self.0
    }

    /// Seconds as a float, for logs and JSON.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }

    pub fn as_duration(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    pub fn saturating_sub(self, other: Npt) -> Npt {
        Npt(self.0.saturating_sub(other.0))
    }

    pub fn saturating_add(self, other: Npt) -> Npt {
        Npt(self.0.saturating_add(other.0))
    }

    /// Parses RTSP's npt-time (RFC 2326 §3.6): `123.45` or `h:mm:ss(.frac)`.
    /// Digits and one dot only (no sign, exponent, `inf`); fractions beyond
    /// nanoseconds are cut. `None` when malformed or out of range.
    pub fn parse(s: &str) -> Option<Npt> {
        let parts: Vec<&str> = s.split(':').collect();
        match parts.as_slice() {
            [secs] => parse_secs(secs),
            [h, m, secs] => {
                let h: u64 = all_digits(h).then(|| h.parse().ok()).flatten()?;
                let m: u64 = all_digits(m).then(|| m.parse().ok()).flatten()?;
                let secs = parse_secs(secs)?;
                if m >= 60 || secs >= Npt::from_secs(60) {
                    return None;
                }
                let whole = h.checked_mul(3600)?.checked_add(m * 60)?;
                Npt::from_secs(whole).0.checked_add(secs.0).map(Npt)
            }
            _ => None,
        }
    }
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `123`, `123.`, `123.45`, `.5` into nanoseconds.
fn parse_secs(s: &str) -> Option<Npt> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    if !(whole.is_empty() || all_digits(whole)) || !(frac.is_empty() || all_digits(frac)) {
        return None;
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut frac_ns = 0u64;
    for (i, digit) in frac.bytes().take(9).enumerate() {
        frac_ns += u64::from(digit - b'0') * 10u64.pow(8 - i as u32);
    }
    whole
        .checked_mul(1_000_000_000)?
        .checked_add(frac_ns)
        .map(Npt)
}

impl fmt::Display for Npt {
    /// Seconds with millisecond precision, as RTSP headers write npt:
    /// `10.500`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0 / 1_000_000;
        write!(f, "{}.{:03}", ms / 1000, ms % 1000)
    }
}

impl Add<Duration> for Npt {
    type Output = Npt;
    fn add(self, d: Duration) -> Npt {
        Npt(self
            .0
            .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
    }
}

impl Sub for Npt {
    type Output = Duration;
    /// The time from `other` to `self`; zero when `other` is later.
    fn sub(self, other: Npt) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(other.0))
    }
}

/// A title's range: from `start` to `end`, `None` when open (live).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NptRange {
    #[serde(rename = "start_ns")]
    pub start: Npt,
    #[serde(rename = "end_ns")]
    pub end: Option<Npt>,
}

/// A stretch of npt that the store holds records for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NptSpan {
    #[serde(rename = "start_ns")]
    pub start: Npt,
    #[serde(rename = "end_ns")]
    pub end: Npt,
}

impl NptSpan {
    pub fn len(&self) -> Duration {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Whether the spans hold a title from `start` (within [`HELD_SLACK`])
    /// without a gap up to `to` (within [`HELD_SLACK`] too): the one rule
    /// for "held from the start", used to decide where a fill starts and
    /// whether a recording that reached the end completes the title.
    pub fn held_from_start(spans: &[NptSpan], start: Npt, to: Npt) -> bool {
        Self::held_to(spans, start) + HELD_SLACK.as_duration() >= to
    }

    /// How far the spans hold a title from `start` without a gap (spans
    /// within [`HELD_SLACK`] of each other count as continuous); `start`
    /// itself when its beginning is not held.
    pub fn held_to(spans: &[NptSpan], start: Npt) -> Npt {
        let mut sorted: Vec<NptSpan> = spans.to_vec();
        sorted.sort_unstable_by_key(|s| s.start);
        let mut reach = start;
        let mut held = false;
        for span in sorted {
            let gap_ok = if held {
                span.start <= reach.saturating_add(HELD_SLACK)
            } else {
                span.start <= start.saturating_add(HELD_SLACK)
            };
            if !gap_ok {
                break;
            }
            if span.end > reach {
                reach = span.end;
            }
            held = true;
        }
        reach
    }

    /// The npt the spans cover, overlaps counted once.
    pub fn total(spans: &[NptSpan]) -> Duration {
        let mut sorted: Vec<NptSpan> = spans.to_vec();
        sorted.sort_unstable_by_key(|s| s.start);
        let (mut total, mut reach) = (Duration::ZERO, Npt::ZERO);
        for span in sorted {
            let start = span.start.max(reach);
            if span.end > start {
                total += span.end - start;
                reach = span.end;
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_both_npt_forms_exactly() {
        assert_eq!(Npt::parse("10.5"), Some(Npt::from_millis(10_500)));
        assert_eq!(Npt::parse("0"), Some(Npt::ZERO));
        assert_eq!(Npt::parse("0:01:02.5"), Some(Npt::from_millis(62_500)));
        assert_eq!(Npt::parse(".25"), Some(Npt::from_millis(250)));
        assert_eq!(
            Npt::parse("1.0000000019"),
            Some(Npt::from_ns(1_000_000_001))
        );
        for bad in [
            "", ".", "-1", "1e3", "inf", "NaN", "1:60:00", "0:00:60", "1:2", "+1", "1..2",
        ] {
            assert_eq!(Npt::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn displays_milliseconds() {
        assert_eq!(Npt::from_ns(10_500_400_000).to_string(), "10.500");
        assert_eq!(Npt::ZERO.to_string(), "0.000");
    }

    #[test]
    fn metadata_keeps_its_ns_fields() {
        let span = NptSpan {
            start: Npt::from_secs(1),
            end: Npt::from_secs(2),
        };
        let json = serde_json::to_string(&span).unwrap();
        assert_eq!(json, r#"{"start_ns":1000000000,"end_ns":2000000000}"#);
        assert_eq!(serde_json::from_str::<NptSpan>(&json).unwrap(), span);
    }

    fn span(a: u64, b: u64) -> NptSpan {
        NptSpan {
            start: Npt::from_millis(a),
            end: Npt::from_millis(b),
        }
    }

    #[test]
    fn held_from_the_start_allows_the_slack_and_no_gap() {
        let spans = [span(300, 9_000), span(9_200, 20_000)];
        assert_eq!(
            NptSpan::held_to(&spans, Npt::ZERO),
            Npt::from_millis(20_000)
        );
        assert!(NptSpan::held_from_start(
            &spans,
            Npt::ZERO,
            Npt::from_millis(20_400)
        ));
        let gap = [span(0, 9_000), span(10_000, 20_000)];
        assert_eq!(NptSpan::held_to(&gap, Npt::ZERO), Npt::from_millis(9_000));
        assert!(!NptSpan::held_from_start(
            &gap,
            Npt::ZERO,
            Npt::from_millis(20_000)
        ));
        let late = [span(600, 9_000)];
        assert_eq!(NptSpan::held_to(&late, Npt::ZERO), Npt::ZERO);
    }

    #[test]
    fn total_counts_overlaps_once() {
        let spans = [span(0, 10_000), span(5_000, 12_000), span(20_000, 21_000)];
        assert_eq!(NptSpan::total(&spans), Duration::from_millis(13_000));
    }

    proptest! {
        #[test]
        fn display_parses_back_to_the_millisecond(ms in 0u64..1u64 << 40) {
            let npt = Npt::from_millis(ms);
            prop_assert_eq!(Npt::parse(&npt.to_string()), Some(npt));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,24}") {
            let _ = Npt::parse(&s);
        }
    }
}
