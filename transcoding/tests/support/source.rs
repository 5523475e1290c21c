//! A real MP4 (made by ffmpeg) read back into the crate's vocabulary with
//! mp4-atom: the codecs from the sample entries, and every sample as a
//! `Frame` with its presentation time, in file (decode, interleaved) order.

use std::path::Path;

use bytes::Bytes;
use mp4_atom::{Any, Decode as _, Moov};
use streamcache_transcoding::{Codec, Frame};
use streamcache_types::Npt;

pub struct Source {
    pub codecs: Vec<Codec>,
    pub frames: Vec<Frame>,
}

pub fn read(path: &Path) -> Source {
    let file = std::fs::read(path).expect("read the source file");
    let mut buf = std::io::Cursor::new(&file[..]);
    let mut moov = None;
    while (buf.position() as usize) < file.len() {
        if let Any::Moov(m) = Any::decode(&mut buf).expect("a box") {
            moov = Some(m);
        }
    }
    let moov: Moov = moov.expect("a moov");
    let mut codecs = Vec::new();
    let mut frames: Vec<(u64, Frame)> = Vec::new();
    for (track, trak) in moov.trak.iter().enumerate() {
        let stbl = &trak.mdia.minf.stbl;
        let timescale = u64::from(trak.mdia.mdhd.timescale);
        codecs.push(match &stbl.stsd.codecs[0] {
            mp4_atom::Codec::Avc1(avc1) => Codec::H264 {
                sps: avc1
                    .avcc
                    .sequence_parameter_sets
                    .iter()
                    .map(|s| Bytes::from(s.clone()))
                    .collect(),
                pps: avc1
                    .avcc
                    .picture_parameter_sets
                    .iter()
                    .map(|s| Bytes::from(s.clone()))
                    .collect(),
            },
            mp4_atom::Codec::Mp4a(mp4a) => {
                let dec = mp4a
                    .esds
                    .es_desc
                    .dec_config
                    .dec_specific
                    .as_ref()
                    .expect("an ASC");
                Codec::Aac {
                    config: Bytes::from(dec.raw.clone()),
                    sample_rate: u32::from(mp4a.audio.sample_rate.integer()),
                    channels: mp4a.audio.channel_count,
                }
            }
            other => panic!("unexpected sample entry {other:?}"),
        });
        let shift = trak
            .edts
            .as_ref()
            .and_then(|e| e.elst.as_ref())
            .and_then(|l| l.entries.iter().find_map(|e| e.media_time))
            .unwrap_or(0) as i64;
        let sizes = match &stbl.stsz.samples {
            mp4_atom::StszSamples::Different { sizes } => sizes.clone(),
            mp4_atom::StszSamples::Identical { count, size } => vec![*size; *count as usize],
        };
        let durations: Vec<u32> = stbl
            .stts
            .entries
            .iter()
            .flat_map(|e| std::iter::repeat_n(e.sample_delta, e.sample_count as usize))
            .collect();
        let offsets: Vec<i64> = match &stbl.ctts {
            Some(ctts) => ctts
                .entries
                .iter()
                .flat_map(|e| std::iter::repeat_n(e.sample_offset, e.sample_count as usize))
                .collect(),
            None => vec![0; sizes.len()],
        };
        let chunk_offsets: Vec<u64> = match (&stbl.stco, &stbl.co64) {
            (Some(stco), _) => stco.entries.iter().map(|&o| u64::from(o)).collect(),
            (_, Some(co64)) => co64.entries.clone(),
            _ => panic!("no chunk offsets"),
        };
        // Samples per chunk, expanded.
        let mut per_chunk = Vec::new();
        for (i, e) in stbl.stsc.entries.iter().enumerate() {
            let last = stbl
                .stsc
                .entries
                .get(i + 1)
                .map_or(chunk_offsets.len() as u32 + 1, |n| n.first_chunk);
            for _ in e.first_chunk..last {
                per_chunk.push(e.samples_per_chunk);
            }
        }
        let sync: Option<Vec<u32>> = stbl.stss.as_ref().map(|s| s.entries.clone());
        let mut sample = 0usize;
        let mut dts = 0i64;
        for (chunk, &n) in per_chunk.iter().enumerate() {
            let mut at = chunk_offsets[chunk];
            for _ in 0..n {
                let size = sizes[sample] as usize;
                // The edit list's shift makes the first video frame 0 and
                // AAC's priming frame negative: one second later for all.
                let pts = dts + offsets[sample] - shift + timescale as i64;
                let ns = (pts.max(0) as u128 * 1_000_000_000 / u128::from(timescale)) as u64;
                let keyframe = sync
                    .as_ref()
                    .is_none_or(|s| s.contains(&(sample as u32 + 1)));
                let data = Bytes::copy_from_slice(&file[at as usize..at as usize + size]);
                frames.push((
                    at,
                    Frame {
                        track,
                        pts: Npt::from_ns(ns),
                        keyframe,
                        discontinuity: false,
                        data,
                    },
                ));
                at += size as u64;
                dts += i64::from(durations[sample]);
                sample += 1;
            }
        }
    }
    // File order: how ffmpeg interleaved them, decode order per track.
    frames.sort_by_key(|(at, _)| *at);
    Source {
        codecs,
        frames: frames.into_iter().map(|(_, f)| f).collect(),
    }
}
