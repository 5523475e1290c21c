//! A stored title cut into HLS segments, and one segment built on demand.
//!
//! The cut needs no pass over the media: segments start at video keyframes,
//! and the store's sparse index has every keyframe's time
//! ([`Reader::random_access_points`]). A segment is then built alone: seek
//! the cursor to its keyframe, depacketize up to the next segment's, and mux
//! one fMP4 fragment whose decode times count from the title's npt 0, so
//! consecutive fragments join without a gap whichever was built first.

use std::hash::{Hash as _, Hasher as _};

use bytes::Bytes;
use hyper::StatusCode;
use streamcache_cache::{Metadata, Reader, RecordKind, Store};
use streamcache_transcoding::depacketize::DepacketizeStats;
use streamcache_transcoding::mux::{fmp4, MuxError};
use streamcache_transcoding::title::Frames;
use streamcache_transcoding::{Codec, Frame, TrackSpec};
use streamcache_types::{Npt, NptSpan};
use tracing::warn;

use super::Refusal;
use crate::cli::export::{check_held, known, track_specs, wanted};

/// Segments last at least this long (HLS's usual 2–6 s): a segment ends at
/// the first keyframe this far from its start.
pub const TARGET: Npt = Npt::from_secs(4);
/// Records stored just before a segment's keyframe may carry audio of the
/// segment (tracks interleave as they arrived): reading starts at the
/// keyframe at or before this much earlier.
const PREROLL: Npt = Npt::from_millis(500);
/// Past a segment's end by this much, no frame of it can still come (an
/// access unit's last packet, audio arriving late).
const OVERRUN: Npt = Npt::from_secs(1);

/// A stored title as HLS: its init segment and where each segment lies.
pub struct Plan {
    pub key: String,
    /// Changes when the stored title does (re-recorded, grown, repaired):
    /// segments are cached under it.
    pub fingerprint: u64,
    specs: Vec<TrackSpec>,
    codecs: Vec<Codec>,
    /// Each stored track's index among `codecs` (none: not muxed).
    index: Vec<Option<usize>>,
    pub init: Bytes,
    pub segments: Vec<NptSpan>,
}

/// What the depacketizers dropped while a segment was built.
pub type Dropped = DepacketizeStats;

/// A segment's frames, the codecs learnt reading them, what was dropped.
type Read = (Vec<Frame>, Vec<Option<Codec>>, Dropped);

impl Plan {
    /// Cuts the stored title `key`; also gives back segment 0, built to
    /// learn the codecs (parameter sets may come in band).
    pub fn open(store: &Store, key: &str) -> Result<(Plan, Bytes, Dropped), Refusal> {
        let reader = open(store, key)?;
        let meta = reader.metadata().clone();
        check_held(&meta.spans, wanted(&meta, None, None))
            .map_err(|e| Refusal::new(StatusCode::RANGE_NOT_SATISFIABLE, e.to_string()))?;
        let specs = track_specs(&meta)
            .map_err(|e| Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, format!("{key}: {e:#}")))?;
        let segments = cut(&reader.random_access_points(), title_end(&meta));
        let Some(first) = segments.first().copied() else {
            return Err(Refusal::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("{key}: the cache holds no keyframe of it"),
            ));
        };
        let (frames, codecs, dropped) = frames(&reader, &specs, first, segments.len() == 1)?;
        let (codecs, index) = known(codecs, &specs)
            .map_err(|e| Refusal::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string()))?;
        let init = fmp4::init_segment(&codecs).map_err(mux_refusal)?;
        let plan = Plan {
            key: key.to_owned(),
            fingerprint: fingerprint(&meta),
            specs,
            codecs,
            index,
            init,
            segments,
        };
        let zero = plan.fragment(0, frames)?;
        Ok((plan, zero, dropped))
    }

    /// Segment `n`, read from the store.
    pub fn segment(&self, store: &Store, n: usize) -> Result<(Bytes, Dropped), Refusal> {
        let span = *self.segments.get(n).ok_or_else(|| {
            Refusal::new(
                StatusCode::NOT_FOUND,
                format!("{}: no segment {n}", self.key),
            )
        })?;
        let reader = open(store, &self.key)?;
        let last = n + 1 == self.segments.len();
        let (frames, _, dropped) = frames(&reader, &self.specs, span, last)?;
        Ok((self.fragment(n, frames)?, dropped))
    }

    /// The longest segment, rounded up to whole seconds (EXT-X-TARGETDURATION).
    pub fn target_duration(&self) -> u64 {
        let longest = self
            .segments
            .iter()
            .map(|s| s.end.saturating_sub(s.start))
            .max();
        longest.map_or(1, |d| d.as_ns().div_ceil(1_000_000_000).max(1))
    }

    fn fragment(&self, n: usize, frames: Vec<Frame>) -> Result<Bytes, Refusal> {
        let frames: Vec<Frame> = frames
            .into_iter()
            .filter_map(|f| {
                let track = self.index.get(f.track).copied().flatten()?;
                Some(Frame { track, ..f })
            })
            .collect();
        let end = self.segments.get(n).map(|s| s.end);
        let sequence = u32::try_from(n + 1).unwrap_or(u32::MAX);
        fmp4::fragment(sequence, &self.codecs, Npt::ZERO, &frames, end).map_err(mux_refusal)
    }
}

fn open(store: &Store, key: &str) -> Result<Reader, Refusal> {
    let gone = || Refusal::new(StatusCode::NOT_FOUND, format!("{key} is not in the cache"));
    match store.open_reader(key) {
        Ok(Some(reader)) => Ok(reader),
        Ok(None) => Err(gone()),
        Err(e) => {
            warn!(key, error = %e, "cannot open a stored title for HTTP");
            Err(Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{key}: {e}"),
            ))
        }
    }
}

/// 415 naming the codec for what a container cannot hold.
pub fn mux_refusal(e: MuxError) -> Refusal {
    let status = match e {
        MuxError::Unsupported { .. } | MuxError::BadParameterSets { .. } => {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Refusal::new(status, e.to_string())
}

/// Where the title ends: its announced end, else the end of what is held.
fn title_end(meta: &Metadata) -> Npt {
    wanted(meta, None, None).end
}

/// Segments from the keyframe times: each starts at a keyframe and ends at
/// the first keyframe at least [`TARGET`] later (the last at `end`). Times
/// that do not go forward (runs recorded over each other) are skipped.
pub fn cut(keyframes: &[Npt], end: Npt) -> Vec<NptSpan> {
    let mut segments = Vec::new();
    let mut start: Option<Npt> = None;
    let mut last = None;
    for &t in keyframes {
        if last.is_some_and(|l| t <= l) || t >= end {
            continue;
        }
        last = Some(t);
        match start {
            None => start = Some(t),
            Some(s) if t.saturating_sub(s) >= TARGET => {
                segments.push(NptSpan { start: s, end: t });
                start = Some(t);
            }
            Some(_) => {}
        }
    }
    if let Some(s) = start {
        segments.push(NptSpan { start: s, end });
    }
    segments
}

/// The frames of `span` (the last segment takes everything from its start),
/// the codecs learnt, and what was dropped. A damaged record is skipped
/// (the store reports it); its frame is dropped and counted.
fn frames(
    reader: &Reader,
    specs: &[TrackSpec],
    span: NptSpan,
    last: bool,
) -> Result<Read, Refusal> {
    let mut frames = Frames::new(specs).map_err(|u| {
        Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("track {}'s codec {} cannot be muxed", u.track, u.encoding),
        )
    })?;
    let mut cursor = reader.cursor();
    if span.start > PREROLL {
        cursor
            .seek(span.start.saturating_sub(PREROLL))
            .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    }
    let mut out = Vec::new();
    let within = |f: &Frame| f.pts >= span.start && (last || f.pts < span.end);
    let stop = span.end.saturating_add(OVERRUN);
    let mut damaged = 0;
    while let Some(record) = cursor.next() {
        let Ok(record) = record else {
            damaged += 1;
            continue;
        };
        if !last && record.media_time > stop {
            break;
        }
        if record.kind == RecordKind::Rtp {
            frames.push(
                usize::from(record.track),
                record.payload,
                record.media_time,
                record.flags.discontinuity,
            );
            out.extend(std::iter::from_fn(|| frames.pop()).filter(within));
        }
    }
    frames.finish();
    out.extend(std::iter::from_fn(|| frames.pop()).filter(within));
    let mut dropped = frames
        .stats()
        .iter()
        .fold(Dropped::default(), |mut sum, s| {
            sum.malformed_packets += s.malformed_packets;
            sum.dropped_frames += s.dropped_frames;
            sum.unsupported_packets += s.unsupported_packets;
            sum.reordered_packets += s.reordered_packets;
            sum
        });
    dropped.malformed_packets += damaged;
    Ok((out, frames.codecs(), dropped))
}

/// A hash of what the store says of the title (spans, range, SDP, state).
fn fingerprint(meta: &Metadata) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.key.hash(&mut h);
    meta.sdp.hash(&mut h);
    for s in &meta.spans {
        (s.start.as_ns(), s.end.as_ns()).hash(&mut h);
    }
    format!("{:?}{:?}", meta.state, meta.range).hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod title_tests_cut {
    use super::*;

    fn s(secs: u64) -> Npt {
        Npt::from_secs(secs)
    }

    #[test]
    fn segments_start_at_keyframes_and_last_at_least_the_target() {
        let keys: Vec<Npt> = (0..10).map(s).collect();
        let spans = cut(&keys, Npt::from_millis(10_040));
        let bounds: Vec<(u64, u64)> = spans
            .iter()
            .map(|x| (x.start.as_ns() / 1_000_000, x.end.as_ns() / 1_000_000))
            .collect();
        assert_eq!(bounds, [(0, 4000), (4000, 8000), (8000, 10_040)]);
    }

    #[test]
    fn times_going_back_and_past_the_end_are_skipped() {
        let keys = [s(1), s(3), s(2), s(5), s(6), s(20)];
        let spans = cut(&keys, s(10));
        assert_eq!(spans.len(), 2);
        assert_eq!((spans[0].start, spans[0].end), (s(1), s(5)));
        assert_eq!((spans[1].start, spans[1].end), (s(5), s(10)));
        assert!(cut(&[], s(10)).is_empty());
    }
}

#[cfg(test)]
#[path = "title_tests.rs"]
mod title_tests;
