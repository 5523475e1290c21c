//! Progressive MP4 with the moov at the front: it plays while it
//! downloads.
//!
//! The moov describes every sample (sizes, times, chunk offsets), so it can
//! only be written once every frame is known, yet it must come before the
//! media. The writer therefore takes two passes over the frames and never
//! holds the media:
//!
//! 1. [`Mp4Plan::new`] takes the codecs and every frame's header (track,
//!    pts, keyframe, size — no data) and builds the sample tables: memory is
//!    about 16 bytes a sample;
//! 2. [`Mp4Plan::writer`] writes ftyp + moov + the mdat header, and
//!    [`Mp4Writer::write_frame`] then streams the same frames again, in the
//!    same order, straight into the mdat; each is checked against the plan.
//!
//! The mdat holds the frames in the order given (the title's play order,
//! so tracks interleave as they were recorded); each run of consecutive
//! frames of one track is a chunk. Offsets are `co64` when the file passes
//! 4 GiB, `stco` otherwise.
//!
//! Timing: see [`super::timing`]. Without B-frames there is no ctts; with
//! them, decode times are the re-sorted presentation times shifted by the
//! reorder delay, offsets go in a ctts (version 0, non-negative), and the
//! edit list's media_time skips the delay. A track that starts after the
//! title's first frame gets an empty edit first. A discontinuity (a gap
//! between recording runs) is simply the real gap in stts: the frame
//! before it lasts until the frame after it, so every later frame keeps its
//! time and the tracks stay in sync (a player shows the last picture
//! through the gap).

use std::io::Write;

use bytes::Bytes;
use mp4_atom::{self as atom, Encode as _};

use super::entry::{self, entry, movie_ticks, Entry, TrakTimes};
use super::timing::{default_duration, runs, ticks, Timing};
use super::{sample_size, FrameHeader, MuxError};
use crate::frame::{Codec, Frame};

/// Sample tables of one track, gathered in the first pass.
#[derive(Default)]
struct Samples {
    pts_ns: Vec<u64>,
    sizes: Vec<u32>,
    /// 1-based numbers of the sync samples.
    sync: Vec<u32>,
}

/// The first pass: what the moov says, and what the second pass must write.
pub struct Mp4Plan {
    header: Bytes,
    /// Per track (index of the title), the planned sample sizes.
    sizes: Vec<Vec<u32>>,
    mdat_payload: u64,
}

impl Mp4Plan {
    /// `frames`: every frame's header, in the order the frames will be
    /// written. A track without frames is left out of the file.
    pub fn new(
        codecs: &[Codec],
        frames: impl IntoIterator<Item = FrameHeader>,
    ) -> Result<Mp4Plan, MuxError> {
        let mut samples: Vec<Samples> = codecs.iter().map(|_| Samples::default()).collect();
        // Chunks: (track, samples in it), in mdat order.
        let mut chunks: Vec<(usize, u32)> = Vec::new();
        let mut payload = 0u64;
        for f in frames {
            let s = samples
                .get_mut(f.track)
                .ok_or(MuxError::UnknownTrack { track: f.track })?;
            s.pts_ns.push(f.pts.as_ns());
            s.sizes.push(sample_size(f.size)?);
            if f.keyframe {
                s.sync
                    .push(u32::try_from(s.sizes.len()).unwrap_or(u32::MAX));
            }
            payload += f.size as u64;
            match chunks.last_mut() {
                Some((track, n)) if *track == f.track => *n += 1,
                _ => chunks.push((f.track, 1)),
            }
        }
        let origin = samples
            .iter()
            .filter_map(|s| s.pts_ns.iter().min())
            .min()
            .copied()
            .ok_or(MuxError::Empty)?;
        let mut tracks = Vec::new();
        for (index, codec) in codecs.iter().enumerate() {
            if !samples[index].sizes.is_empty() {
                tracks.push((index, entry(index, codec)?));
            }
        }

        let ftyp = atom::Ftyp {
            major_brand: b"isom".into(),
            minor_version: 512,
            compatible_brands: vec![
                b"isom".into(),
                b"iso2".into(),
                b"avc1".into(),
                b"mp41".into(),
            ],
        };
        let mut head = Vec::new();
        ftyp.encode(&mut head)?;
        // The moov's size does not depend on the offsets' values, only on
        // their width: build it once to learn it, then with the offsets.
        let layout = Layout {
            codecs,
            tracks: &tracks,
            samples: &samples,
            chunks: &chunks,
            origin,
        };
        let build = |base: u64, wide: bool| -> Result<Vec<u8>, MuxError> {
            let offsets = chunk_offsets(&chunks, &samples, base);
            let mut moov_bytes = Vec::new();
            moov(&layout, &offsets, wide).encode(&mut moov_bytes)?;
            Ok(moov_bytes)
        };
        let probe = build(0, false)?.len() as u64;
        let narrow_end = head.len() as u64 + probe + 8 + payload;
        let wide = narrow_end > u64::from(u32::MAX);
        let moov_len = if wide {
            build(0, true)?.len() as u64
        } else {
            probe
        };
        let mdat_header = if payload + 8 > u64::from(u32::MAX) {
            16
        } else {
            8
        };
        let base = head.len() as u64 + moov_len + mdat_header;
        head.extend(build(base, wide)?);
        atom::Header {
            kind: b"mdat".into(),
            size: Some(
                usize::try_from(payload)
                    .map_err(|_| MuxError::FrameTooLarge { size: usize::MAX })?,
            ),
        }
        .encode(&mut head)?;
        Ok(Mp4Plan {
            header: Bytes::from(head),
            sizes: samples.into_iter().map(|s| s.sizes).collect(),
            mdat_payload: payload,
        })
    }

    /// ftyp + moov + the mdat's header: what comes before the first frame.
    pub fn header(&self) -> &Bytes {
        &self.header
    }

    /// The whole file's size.
    pub fn total_size(&self) -> u64 {
        self.header.len() as u64 + self.mdat_payload
    }

    /// Writes the header to `out`; the frames follow through the writer.
    pub fn writer<W: Write>(self, mut out: W) -> Result<Mp4Writer<W>, MuxError> {
        out.write_all(&self.header)?;
        Ok(Mp4Writer {
            out,
            next: vec![0; self.sizes.len()],
            sizes: self.sizes,
        })
    }
}

/// The second pass: the frames again, in the planned order, into the mdat.
pub struct Mp4Writer<W> {
    out: W,
    sizes: Vec<Vec<u32>>,
    next: Vec<usize>,
}

impl<W: Write> Mp4Writer<W> {
    pub fn write_frame(&mut self, frame: &Frame) -> Result<(), MuxError> {
        let track = frame.track;
        let sample = self.next.get(track).copied().unwrap_or(0);
        let planned = self.sizes.get(track).and_then(|s| s.get(sample));
        if planned.map(|&s| s as usize) != Some(frame.data.len()) {
            return Err(MuxError::NotAsPlanned { track, sample });
        }
        self.out.write_all(&frame.data)?;
        self.next[track] += 1;
        Ok(())
    }

    /// Checks that every planned frame was written; gives the output back.
    pub fn finish(mut self) -> Result<W, MuxError> {
        for (track, (next, sizes)) in self.next.iter().zip(&self.sizes).enumerate() {
            if *next != sizes.len() {
                return Err(MuxError::NotAsPlanned {
                    track,
                    sample: *next,
                });
            }
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Per track, the offsets of its chunks.
fn chunk_offsets(chunks: &[(usize, u32)], samples: &[Samples], base: u64) -> Vec<Vec<u64>> {
    let mut offsets = vec![Vec::new(); samples.len()];
    let mut next_sample = vec![0usize; samples.len()];
    let mut at = base;
    for &(track, n) in chunks {
        offsets[track].push(at);
        let first = next_sample[track];
        next_sample[track] += n as usize;
        at += samples[track].sizes[first..next_sample[track]]
            .iter()
            .map(|&s| u64::from(s))
            .sum::<u64>();
    }
    offsets
}

/// Samples per chunk of one track, as stsc runs.
fn stsc(chunks: &[(usize, u32)], track: usize) -> atom::Stsc {
    let per_chunk = chunks.iter().filter(|c| c.0 == track).map(|c| c.1);
    let mut entries = Vec::new();
    let mut chunk = 1;
    for (count, samples_per_chunk) in runs(per_chunk) {
        entries.push(atom::StscEntry {
            first_chunk: chunk,
            samples_per_chunk,
            sample_description_index: 1,
        });
        chunk += count;
    }
    atom::Stsc { entries }
}

/// What the moov is built from.
struct Layout<'a> {
    codecs: &'a [Codec],
    tracks: &'a [(usize, Entry)],
    samples: &'a [Samples],
    chunks: &'a [(usize, u32)],
    /// The title's first presentation time: time 0 of the movie.
    origin: u64,
}

fn moov(layout: &Layout<'_>, offsets: &[Vec<u64>], wide: bool) -> atom::Moov {
    let Layout {
        codecs,
        tracks,
        samples,
        chunks,
        origin,
    } = *layout;
    let mut traks = Vec::new();
    let mut duration = 0;
    for (n, (index, entry)) in tracks.iter().enumerate() {
        let s = &samples[*index];
        let pts: Vec<i64> = s
            .pts_ns
            .iter()
            .map(|&p| ticks(p - origin, entry.timescale))
            .collect();
        let last_size = s.sizes.last().map_or(0, |&z| z as usize);
        let timing = Timing::new(&pts, None, default_duration(&codecs[*index], last_size));
        let offsets_ctts = timing.offsets(&pts, timing.delay);
        let first_pts = pts.iter().min().copied().unwrap_or(0);
        let times = TrakTimes {
            media: timing.span(),
            start: movie_ticks(u64::try_from(first_pts).unwrap_or(0), entry.timescale),
            media_time: (first_pts > 0 || timing.delay > 0)
                .then(|| u64::try_from(timing.delay).unwrap_or(0)),
        };
        let stbl = atom::Stbl {
            stsd: atom::Stsd {
                codecs: vec![entry.sample_entry.clone()],
            },
            stts: atom::Stts {
                entries: runs(timing.durations.iter().copied())
                    .into_iter()
                    .map(|(sample_count, sample_delta)| atom::SttsEntry {
                        sample_count,
                        sample_delta,
                    })
                    .collect(),
            },
            ctts: (timing.delay > 0 || offsets_ctts.iter().any(|&o| o != 0)).then(|| atom::Ctts {
                entries: runs(offsets_ctts.iter().copied())
                    .into_iter()
                    .map(|(sample_count, sample_offset)| atom::CttsEntry {
                        sample_count,
                        sample_offset,
                    })
                    .collect(),
            }),
            stss: (s.sync.len() < s.sizes.len()).then(|| atom::Stss {
                entries: s.sync.clone(),
            }),
            stsc: stsc(chunks, *index),
            stsz: atom::Stsz {
                samples: atom::StszSamples::Different {
                    sizes: s.sizes.clone(),
                },
            },
            stco: (!wide).then(|| atom::Stco {
                entries: offsets[*index]
                    .iter()
                    .map(|&o| u32::try_from(o).unwrap_or(u32::MAX))
                    .collect(),
            }),
            co64: wide.then(|| atom::Co64 {
                entries: offsets[*index].clone(),
            }),
            ..Default::default()
        };
        let track_id = u32::try_from(n + 1).unwrap_or(u32::MAX);
        let trak = entry::trak(track_id, entry, stbl, &times);
        duration = duration.max(trak.tkhd.duration);
        traks.push(trak);
    }
    atom::Moov {
        mvhd: entry::mvhd(duration, traks.len()),
        trak: traks,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mp4_atom::{Any, Decode as _};
    use streamcache_types::Npt;

    const SPS: [u8; 23] = [
        0x67, 0x64, 0x00, 0x0d, 0xac, 0xb2, 0x02, 0x83, 0xf6, 0x02, 0x20, 0x00, 0x00, 0x03, 0x00,
        0x20, 0x00, 0x00, 0x06, 0x41, 0xe2, 0x85, 0x49,
    ];

    fn frame(track: usize, ms: u64, keyframe: bool, size: usize) -> Frame {
        Frame {
            track,
            pts: Npt::from_millis(ms),
            keyframe,
            discontinuity: false,
            data: Bytes::from(vec![track as u8; size]),
        }
    }

    /// Muxes synthetic frames, parses the file back with mp4-atom and
    /// checks the sample tables against the frames.
    #[test]
    fn round_trip_sample_tables() {
        let codecs = [
            Codec::H264 {
                sps: vec![Bytes::from_static(&SPS)],
                pps: vec![Bytes::from_static(&[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0])],
            },
            Codec::Aac {
                config: Bytes::from_static(&[0x12, 0x10]),
                sample_rate: 44_100,
                channels: 2,
            },
        ];
        // Video I P B B (pts 0, 120, 40, 80 ms) then audio, interleaved.
        let frames = [
            frame(0, 1000, true, 100),
            frame(0, 1120, false, 50),
            frame(1, 1000, true, 10),
            frame(1, 1023, true, 11),
            frame(0, 1040, false, 20),
            frame(0, 1080, false, 21),
        ];
        let plan = Mp4Plan::new(&codecs, frames.iter().map(FrameHeader::from)).expect("plan");
        let mut writer = plan.writer(Vec::new()).expect("header");
        for f in &frames {
            writer.write_frame(f).expect("frame");
        }
        let file = writer.finish().expect("finish");

        let mut buf = std::io::Cursor::new(&file[..]);
        assert!(matches!(Any::decode(&mut buf), Ok(Any::Ftyp(_))));
        let Ok(Any::Moov(moov)) = Any::decode(&mut buf) else {
            panic!("moov second");
        };
        let mdat_start = buf.position() as usize;
        let video = &moov.trak[0].mdia.minf.stbl;
        assert_eq!(moov.trak[0].mdia.mdhd.timescale, 90_000);
        assert_eq!(
            video.stsz.samples,
            atom::StszSamples::Different {
                sizes: vec![100, 50, 20, 21]
            }
        );
        // Decode times 0, 40, 80, 120 ms; offsets shifted by one frame.
        assert_eq!(video.stts.entries.len(), 1);
        assert_eq!(video.stts.entries[0].sample_delta, 3600);
        let ctts: Vec<i64> = video
            .ctts
            .as_ref()
            .expect("ctts")
            .entries
            .iter()
            .flat_map(|e| std::iter::repeat_n(e.sample_offset, e.sample_count as usize))
            .collect();
        assert_eq!(ctts, [3600, 10800, 0, 0]);
        assert_eq!(video.stss.as_ref().expect("stss").entries, [1]);
        let elst = &moov.trak[0].edts.as_ref().expect("edts").elst;
        assert_eq!(
            elst.as_ref().expect("elst").entries[0].media_time,
            Some(3600)
        );
        // Chunks: video [0, 1], audio [0, 1], video [2, 3].
        let offsets = &video.stco.as_ref().expect("stco").entries;
        assert_eq!(offsets[0] as usize, mdat_start + 8);
        assert_eq!(offsets[1] as usize, mdat_start + 8 + 150 + 21);
        assert_eq!(video.stsc.entries.len(), 1);
        assert_eq!(video.stsc.entries[0].samples_per_chunk, 2);
        let audio = &moov.trak[1].mdia.minf.stbl;
        assert_eq!(moov.trak[1].mdia.mdhd.timescale, 44_100);
        assert!(audio.stss.is_none() && audio.ctts.is_none());
        assert_eq!(audio.stts.entries[0].sample_delta, 1014);
        assert_eq!(&file[offsets[1] as usize..][..20], &[0u8; 20]);
    }

    #[test]
    fn frames_other_than_planned_are_refused() {
        let codecs = [Codec::Opus { channels: 2 }];
        let frames = [frame(0, 0, true, 10), frame(0, 20, true, 10)];
        let plan = Mp4Plan::new(&codecs, frames.iter().map(FrameHeader::from)).expect("plan");
        let mut writer = plan.writer(Vec::new()).expect("header");
        writer.write_frame(&frames[0]).expect("first");
        assert!(matches!(
            writer.write_frame(&frame(0, 20, true, 11)),
            Err(MuxError::NotAsPlanned {
                track: 0,
                sample: 1
            })
        ));
        assert!(matches!(
            writer.finish(),
            Err(MuxError::NotAsPlanned {
                track: 0,
                sample: 1
            })
        ));
    }

    #[test]
    fn g711_is_refused_by_name() {
        let codecs = [Codec::Pcmu {
            sample_rate: 8000,
            channels: 1,
        }];
        let err = Mp4Plan::new(&codecs, [FrameHeader::from(&frame(0, 0, true, 160))])
            .err()
            .expect("refused");
        assert_eq!(err.to_string(), "G.711 µ-law cannot be muxed into MP4");
    }
}
