//! Fragmented MP4 (CMAF): an init segment, then one fragment (moof + mdat)
//! per segment of frames.
//!
//! Fragments are built independently of each other, from their frames
//! alone, so a server can make any segment on demand: a track's base
//! decode time (tfdt) is the fragment's earliest presentation time of that
//! track, in track ticks from `origin` (the title's start, the same for
//! every fragment). Decode times within a fragment are its presentation
//! times re-sorted (see [`super::timing`]) and composition offsets are
//! signed (trun version 1), so no edit list is needed and a fragment that
//! starts at a keyframe of a closed GOP has tfdt = that keyframe's pts. A
//! discontinuity is the gap between one fragment's end and the next one's
//! tfdt: [`Segmenter`] starts a new segment there.

use bytes::Bytes;
use mp4_atom::{self as atom, Encode as _};
use streamcache_types::Npt;

use super::entry::{self, entry, sample_flags};
use super::timing::{default_duration, ticks, Timing};
use super::{sample_size, MuxError};
use crate::frame::{Codec, Frame};

/// ftyp + moov (with mvex/trex, no samples) for `codecs`; track `i` of the
/// title is track id `i + 1`.
pub fn init_segment(codecs: &[Codec]) -> Result<Bytes, MuxError> {
    let mut traks = Vec::new();
    let mut trex = Vec::new();
    for (index, codec) in codecs.iter().enumerate() {
        let entry = entry(index, codec)?;
        let track_id = track_id(index);
        let stbl = atom::Stbl {
            stsd: atom::Stsd {
                codecs: vec![entry.sample_entry.clone()],
            },
            stco: Some(atom::Stco::default()),
            ..Default::default()
        };
        let times = entry::TrakTimes {
            media: 0,
            start: 0,
            media_time: None,
        };
        traks.push(entry::trak(track_id, &entry, stbl, &times));
        trex.push(atom::Trex {
            track_id,
            default_sample_description_index: 1,
            ..Default::default()
        });
    }
    let mut out = Vec::new();
    atom::Ftyp {
        major_brand: b"iso6".into(),
        minor_version: 0,
        compatible_brands: vec![b"iso6".into(), b"cmfc".into(), b"mp41".into()],
    }
    .encode(&mut out)?;
    atom::Moov {
        mvhd: entry::mvhd(0, traks.len()),
        mvex: Some(atom::Mvex { mehd: None, trex }),
        trak: traks,
        ..Default::default()
    }
    .encode(&mut out)?;
    Ok(Bytes::from(out))
}

fn track_id(index: usize) -> u32 {
    u32::try_from(index + 1).unwrap_or(u32::MAX)
}

/// One fragment: moof (mfhd `sequence`, a traf per track with frames) and
/// its mdat. `frames` in decode order, every track's timeline from
/// `origin`; `end`: where the fragment ends (the next one's start), which
/// gives each track's last frame its duration (else it lasts as long as the
/// one before it).
pub fn fragment(
    sequence: u32,
    codecs: &[Codec],
    origin: Npt,
    frames: &[Frame],
    end: Option<Npt>,
) -> Result<Bytes, MuxError> {
    let mut trafs = Vec::new();
    let mut data: Vec<&Frame> = Vec::with_capacity(frames.len());
    for (index, codec) in codecs.iter().enumerate() {
        let own: Vec<&Frame> = frames.iter().filter(|f| f.track == index).collect();
        if own.is_empty() {
            continue;
        }
        let timescale = super::timing::timescale(codec);
        let at = |t: Npt| ticks(t.saturating_sub(origin).as_ns(), timescale);
        let pts: Vec<i64> = own.iter().map(|f| at(f.pts)).collect();
        let last_size = own.last().map_or(0, |f| f.data.len());
        let timing = Timing::new(&pts, end.map(at), default_duration(codec, last_size));
        let offsets = timing.offsets(&pts, 0);
        let mut samples = Vec::with_capacity(own.len());
        for ((frame, duration), cts) in own.iter().zip(&timing.durations).zip(offsets) {
            samples.push(atom::TrunEntry {
                duration: Some(*duration),
                size: Some(sample_size(frame.data.len())?),
                flags: Some(sample_flags(frame.keyframe)),
                cts: Some(cts),
            });
        }
        trafs.push(atom::Traf {
            tfhd: atom::Tfhd {
                track_id: track_id(index),
                default_base_is_moof: true,
                ..Default::default()
            },
            tfdt: Some(atom::Tfdt {
                base_media_decode_time: u64::try_from(timing.dts[0]).unwrap_or(0),
            }),
            trun: vec![atom::Trun {
                data_offset: Some(0),
                samples: samples.into(),
            }],
            ..Default::default()
        });
        data.extend(own);
    }
    if let Some(f) = frames.iter().find(|f| f.track >= codecs.len()) {
        return Err(MuxError::UnknownTrack { track: f.track });
    }
    if data.is_empty() {
        return Err(MuxError::Empty);
    }
    let mut moof = atom::Moof {
        mfhd: atom::Mfhd {
            sequence_number: sequence,
        },
        traf: trafs,
    };
    // Data offsets are from the moof's start (default-base-is-moof); the
    // moof's size does not depend on their values.
    let mut probe = Vec::new();
    moof.clone().encode(&mut probe)?;
    let payload: usize = data.iter().map(|f| f.data.len()).sum();
    let mdat_header = if payload + 8 > u32::MAX as usize {
        16
    } else {
        8
    };
    let mut offset = probe.len() + mdat_header;
    for traf in &mut moof.traf {
        let trun = &mut traf.trun[0];
        trun.data_offset =
            Some(i32::try_from(offset).map_err(|_| MuxError::FrameTooLarge { size: offset })?);
        offset += trun
            .samples
            .iter()
            .map(|s| s.size.unwrap_or(0) as usize)
            .sum::<usize>();
    }
    let mut out = Vec::with_capacity(probe.len() + mdat_header + payload);
    moof.encode(&mut out)?;
    atom::Header {
        kind: b"mdat".into(),
        size: Some(payload),
    }
    .encode(&mut out)?;
    for frame in data {
        out.extend_from_slice(&frame.data);
    }
    Ok(Bytes::from(out))
}

/// Splits a title's frames (in decode order) into segments of at least
/// `min` that each start at a keyframe of `video` (any frame when the
/// title has no video), and at each discontinuity of that track.
pub struct Segmenter {
    video: Option<usize>,
    min: Npt,
    current: Vec<Frame>,
}

impl Segmenter {
    pub fn new(video: Option<usize>, min: Npt) -> Segmenter {
        Segmenter {
            video,
            min,
            current: Vec::new(),
        }
    }

    /// Takes the next frame; hands back the finished segment when this
    /// frame starts a new one.
    pub fn push(&mut self, frame: Frame) -> Option<Vec<Frame>> {
        let leads = self.video.is_none_or(|v| v == frame.track);
        let start = self.current.first().map(|f| f.pts);
        let cut = leads
            && frame.keyframe
            && start
                .is_some_and(|s| frame.discontinuity || frame.pts.saturating_sub(s) >= self.min);
        let done = cut.then(|| std::mem::take(&mut self.current));
        self.current.push(frame);
        done
    }

    /// The last segment.
    pub fn finish(self) -> Option<Vec<Frame>> {
        (!self.current.is_empty()).then_some(self.current)
    }
}
