//! MPEG-TS: PAT/PMT, one PES a frame with PTS (and DTS when it differs),
//! H.264/H.265 as Annex B with an access unit delimiter and the parameter
//! sets before each keyframe, AAC with ADTS headers, the PCR on the video
//! PID (the audio PID for audio-only titles). G.711 and Opus have no
//! MPEG-TS mapping that players read (ffmpeg's mpegts demuxer ignores
//! both), so they are refused by name.
//!
//! Hand-written rather than with a crate: TS is 188-byte packets, a
//! handful of header bits and a CRC, and the part where mistakes happen —
//! splitting a PES across packets with adaptation-field stuffing, PCR
//! placement, continuity counters — is exactly what the candidate crate
//! (`mpeg2ts`) leaves to the caller.
//!
//! Decode times: frames arrive in decode order with presentation times
//! only. The muxer holds back [`LOOKAHEAD`] video frames; a frame's decode
//! time is the smallest presentation time not yet used (the re-sorted pts,
//! exact for reordering up to that depth) minus a delay fixed from the
//! first window, so DTS ≤ PTS and DTS increases. All timestamps are offset
//! by [`OFFSET`] so that the first DTS is positive.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use streamcache_types::Npt;

use super::timing::{ticks, VIDEO_TIMESCALE};
use super::MuxError;
use crate::frame::{Codec, Frame};

const PACKET: usize = 188;
const PAT_PID: u16 = 0;
const PMT_PID: u16 = 0x1000;
/// Video frames held back to derive decode times.
pub const LOOKAHEAD: usize = 8;
/// Added to every PTS/DTS (90 kHz): 1.4 s, as ffmpeg does.
pub const OFFSET: i64 = 126_000;
/// How far (90 kHz) the PCR runs behind the DTS of the frame it comes with.
const PCR_LEAD: i64 = 9_000;

struct Stream {
    pid: u16,
    stream_type: u8,
    stream_id: u8,
    codec: Codec,
    cc: u8,
    /// Video: presentation times of the frames queued, for decode times.
    pts_heap: BinaryHeap<Reverse<i64>>,
    queued: usize,
    delay: Option<i64>,
    last_dts: Option<i64>,
}

/// Writes a title's frames as an MPEG-TS stream.
pub struct TsMuxer {
    streams: Vec<Stream>,
    pcr_track: usize,
    origin: Option<Npt>,
    pending: VecDeque<(Frame, i64)>,
    pat_cc: u8,
    pmt_cc: u8,
    psi_written: bool,
}

impl TsMuxer {
    /// Track `i` of the title is PID `0x100 + i`.
    pub fn new(codecs: &[Codec]) -> Result<TsMuxer, MuxError> {
        let mut streams = Vec::new();
        for (i, codec) in codecs.iter().enumerate() {
            let (stream_type, stream_id) = match codec {
                Codec::H264 { .. } => (0x1b, 0xe0),
                Codec::H265 { .. } => (0x24, 0xe0),
                Codec::Aac { config, .. } => {
                    adts_fields(config).ok_or(MuxError::BadParameterSets {
                        track: i,
                        codec: codec.name(),
                    })?;
                    (0x0f, 0xc0)
                }
                Codec::Pcmu { .. } | Codec::Pcma { .. } | Codec::Opus { .. } => {
                    return Err(MuxError::Unsupported {
                        codec: codec.name(),
                        container: "MPEG-TS",
                    })
                }
            };
            streams.push(Stream {
                pid: 0x100 + u16::try_from(i).unwrap_or(0xeff).min(0xeff),
                stream_type,
                stream_id,
                codec: codec.clone(),
                cc: 0,
                pts_heap: BinaryHeap::new(),
                queued: 0,
                delay: None,
                last_dts: None,
            });
        }
        let pcr_track = codecs.iter().position(Codec::is_video).unwrap_or(0);
        if streams.is_empty() {
            return Err(MuxError::Empty);
        }
        Ok(TsMuxer {
            streams,
            pcr_track,
            origin: None,
            pending: VecDeque::new(),
            pat_cc: 0,
            pmt_cc: 0,
            psi_written: false,
        })
    }

    /// Takes the next frame (decode order, tracks interleaved as played);
    /// appends whatever packets are ready to `out`. The first frame's pts
    /// is time 0.
    pub fn push(&mut self, frame: Frame, out: &mut Vec<u8>) -> Result<(), MuxError> {
        let stream = self
            .streams
            .get_mut(frame.track)
            .ok_or(MuxError::UnknownTrack { track: frame.track })?;
        let origin = *self.origin.get_or_insert(frame.pts);
        let pts = ticks(frame.pts.saturating_sub(origin).as_ns(), VIDEO_TIMESCALE);
        if stream.codec.is_video() {
            stream.pts_heap.push(Reverse(pts));
            stream.queued += 1;
        }
        self.pending.push_back((frame, pts));
        self.drain(out, false)
    }

    /// Writes what is held back.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), MuxError> {
        self.drain(out, true)
    }

    fn drain(&mut self, out: &mut Vec<u8>, all: bool) -> Result<(), MuxError> {
        while let Some((frame, _)) = self.pending.front() {
            let s = &self.streams[frame.track];
            if !all && s.codec.is_video() && s.queued <= LOOKAHEAD {
                return Ok(());
            }
            let Some((frame, pts)) = self.pending.pop_front() else {
                break;
            };
            self.write(&frame, pts, out)?;
        }
        Ok(())
    }

    fn write(&mut self, frame: &Frame, pts: i64, out: &mut Vec<u8>) -> Result<(), MuxError> {
        let stream = &mut self.streams[frame.track];
        let dts = if stream.codec.is_video() {
            stream.queued -= 1;
            let delay = *stream.delay.get_or_insert_with(|| {
                // The first window: how far re-sorting moves a decode time
                // past its presentation time.
                let mut window: Vec<i64> = stream.pts_heap.iter().map(|r| r.0).collect();
                window.sort_unstable();
                let firsts = self.pending.iter().filter(|(f, _)| f.track == frame.track);
                std::iter::once(pts)
                    .chain(firsts.map(|(_, p)| *p))
                    .zip(window)
                    .map(|(p, sorted)| sorted - p)
                    .max()
                    .unwrap_or(0)
                    .clamp(0, OFFSET - PCR_LEAD)
            });
            let next = stream.pts_heap.pop().map_or(pts, |r| r.0);
            let floor = stream.last_dts.map_or(i64::MIN, |d| d + 1);
            let dts = (next - delay).max(floor).min(pts);
            stream.last_dts = Some(dts);
            dts
        } else {
            pts
        };
        let keyframe = frame.keyframe && stream.codec.is_video();
        if !self.psi_written || keyframe {
            self.write_psi(out);
        }
        let stream = &mut self.streams[frame.track];
        let payload = match &stream.codec {
            Codec::H264 { .. } | Codec::H265 { .. } => annex_b(&stream.codec, frame),
            Codec::Aac { config, .. } => adts(config, &frame.data)?,
            _ => {
                return Err(MuxError::Unsupported {
                    codec: stream.codec.name(),
                    container: "MPEG-TS",
                })
            }
        };
        let pes = pes(stream.stream_id, pts + OFFSET, dts + OFFSET, &payload);
        let pcr = (frame.track == self.pcr_track).then_some(dts + OFFSET - PCR_LEAD);
        packetize(stream.pid, &mut stream.cc, &pes, pcr, keyframe, out);
        Ok(())
    }

    fn write_psi(&mut self, out: &mut Vec<u8>) {
        self.psi_written = true;
        let pat = section(
            0x00,
            1,
            &[0x00, 0x01, 0xe0 | (PMT_PID >> 8) as u8, PMT_PID as u8],
        );
        let pcr_pid = self.streams[self.pcr_track].pid;
        let mut body = vec![0xe0 | (pcr_pid >> 8) as u8, pcr_pid as u8, 0xf0, 0x00];
        for s in &self.streams {
            body.extend([
                s.stream_type,
                0xe0 | (s.pid >> 8) as u8,
                s.pid as u8,
                0xf0,
                0x00,
            ]);
        }
        let pmt = section(0x02, 1, &body);
        for (pid, cc, table) in [
            (PAT_PID, &mut self.pat_cc, pat),
            (PMT_PID, &mut self.pmt_cc, pmt),
        ] {
            let mut psi = vec![0u8]; // pointer_field
            psi.extend(table);
            packetize(pid, cc, &psi, None, false, out);
        }
    }
}

/// A PSI section (PAT or PMT) with its CRC.
fn section(table_id: u8, id: u16, body: &[u8]) -> Vec<u8> {
    let len = 5 + body.len() + 4;
    let mut s = vec![
        table_id,
        0xb0 | ((len >> 8) as u8 & 0x0f),
        len as u8,
        (id >> 8) as u8,
        id as u8,
        0xc1, // version 0, current
        0,
        0,
    ];
    s.extend_from_slice(body);
    let crc = crc32_mpeg2(&s);
    s.extend(crc.to_be_bytes());
    s
}

fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The frame as Annex B: an AUD, the codec's parameter sets before a
/// keyframe that does not carry its own, then the frame's NAL units.
fn annex_b(codec: &Codec, frame: &Frame) -> Vec<u8> {
    let h265 = matches!(codec, Codec::H265 { .. });
    let nal_type = |nal: &[u8]| match (h265, nal.first()) {
        (false, Some(b)) => b & 0x1f,
        (true, Some(b)) => (b >> 1) & 0x3f,
        (_, None) => 0xff,
    };
    let (aud, sps_type): (&[u8], u8) = if h265 {
        (&[0x46, 0x01, 0x50], 33)
    } else {
        (&[0x09, 0xf0], 7)
    };
    let nals = length_prefixed(&frame.data);
    let mut out = Vec::with_capacity(frame.data.len() + 64);
    let mut put = |nal: &[u8]| {
        out.extend([0, 0, 0, 1]);
        out.extend_from_slice(nal);
    };
    put(aud);
    let has_sps = nals.iter().any(|n| nal_type(n) == sps_type);
    if frame.keyframe && !has_sps {
        let sets: Vec<&bytes::Bytes> = match codec {
            Codec::H264 { sps, pps } => sps.iter().chain(pps).collect(),
            Codec::H265 { vps, sps, pps } => vps.iter().chain(sps).chain(pps).collect(),
            _ => Vec::new(),
        };
        for set in sets {
            put(set);
        }
    }
    let aud_type = if h265 { 35 } else { 9 };
    for nal in nals.into_iter().filter(|n| nal_type(n) != aud_type) {
        put(nal);
    }
    out
}

/// The NAL units of 4-byte length-prefixed data; a truncated tail is
/// dropped.
fn length_prefixed(mut data: &[u8]) -> Vec<&[u8]> {
    let mut nals = Vec::new();
    while data.len() >= 4 {
        let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let Some(nal) = data.get(4..4 + len) else {
            break;
        };
        if !nal.is_empty() {
            nals.push(nal);
        }
        data = &data[4 + len..];
    }
    nals
}

/// (profile, sampling frequency index, channel configuration) for ADTS
/// from an AudioSpecificConfig; `None` when ADTS cannot say it.
fn adts_fields(config: &[u8]) -> Option<(u8, u8, u8)> {
    let (a, b) = (*config.first()?, *config.get(1)?);
    let object_type = a >> 3;
    let freq = ((a & 7) << 1) | (b >> 7);
    let channels = (b >> 3) & 0xf;
    ((1..=4).contains(&object_type) && freq < 13 && channels < 8).then_some((
        object_type - 1,
        freq,
        channels,
    ))
}

fn adts(config: &[u8], raw: &[u8]) -> Result<Vec<u8>, MuxError> {
    let (profile, freq, channels) = adts_fields(config).ok_or(MuxError::Unsupported {
        codec: "AAC of this object type",
        container: "MPEG-TS (ADTS)",
    })?;
    let len = raw.len() + 7;
    if len >= 1 << 13 {
        return Err(MuxError::FrameTooLarge { size: raw.len() });
    }
    let mut out = vec![
        0xff,
        0xf1, // MPEG-4, layer 0, no CRC
        (profile << 6) | (freq << 2) | (channels >> 2),
        ((channels & 3) << 6) | (len >> 11) as u8,
        (len >> 3) as u8,
        ((len & 7) << 5) as u8 | 0x1f,
        0xfc,
    ];
    out.extend_from_slice(raw);
    Ok(out)
}

/// A PES packet: PTS always, DTS when it differs.
fn pes(stream_id: u8, pts: i64, dts: i64, payload: &[u8]) -> Vec<u8> {
    let with_dts = dts != pts;
    let header_len: usize = if with_dts { 10 } else { 5 };
    let len = 3 + header_len + payload.len();
    // Video may exceed the 16-bit length: 0 means unbounded.
    let field = if len > 0xffff { 0 } else { len as u16 };
    let mut out = vec![0, 0, 1, stream_id, (field >> 8) as u8, field as u8, 0x80];
    out.push(if with_dts { 0xc0 } else { 0x80 });
    out.push(header_len as u8);
    put_timestamp(&mut out, if with_dts { 0x3 } else { 0x2 }, pts);
    if with_dts {
        put_timestamp(&mut out, 0x1, dts);
    }
    out.extend_from_slice(payload);
    out
}

fn put_timestamp(out: &mut Vec<u8>, prefix: u8, t: i64) {
    let t = (t as u64) & ((1 << 33) - 1);
    out.push((prefix << 4) | (((t >> 30) as u8 & 7) << 1) | 1);
    out.push((t >> 22) as u8);
    out.push((((t >> 15) as u8) << 1) | 1);
    out.push((t >> 7) as u8);
    out.push(((t as u8) << 1) | 1);
}

/// Splits `data` into 188-byte packets of `pid`: the first with
/// payload_unit_start (and the PCR, random-access flag, if any), the last
/// padded with adaptation-field stuffing.
fn packetize(
    pid: u16,
    cc: &mut u8,
    data: &[u8],
    pcr: Option<i64>,
    random_access: bool,
    out: &mut Vec<u8>,
) {
    let mut rest = data;
    let mut first = true;
    while first || !rest.is_empty() {
        let mut adaptation = Vec::new();
        if first && (pcr.is_some() || random_access) {
            let mut flags = 0u8;
            if random_access {
                flags |= 0x40;
            }
            adaptation.push(flags);
            if let Some(pcr) = pcr {
                adaptation[0] |= 0x10;
                let base = (pcr.max(0) as u64) & ((1 << 33) - 1);
                adaptation.extend([
                    (base >> 25) as u8,
                    (base >> 17) as u8,
                    (base >> 9) as u8,
                    (base >> 1) as u8,
                    ((base as u8 & 1) << 7) | 0x7e,
                    0,
                ]);
            }
        }
        // The adaptation field's bytes, its length byte included.
        let mut field = if adaptation.is_empty() {
            0
        } else {
            1 + adaptation.len()
        };
        let room = PACKET - 4 - field;
        if rest.len() < room {
            // Stuffing: grow (or create) the adaptation field to fill the
            // packet; a one-byte field is just its length byte (0).
            let missing = room - rest.len();
            if field > 0 {
                adaptation.resize(adaptation.len() + missing, 0xff);
            } else if missing >= 2 {
                adaptation.push(0); // no flags
                adaptation.resize(missing - 1, 0xff);
            }
            field += missing;
        }
        let afc: u8 = if field == 0 { 0x10 } else { 0x30 };
        let start = out.len();
        out.extend([
            0x47,
            (if first { 0x40 } else { 0 }) | (pid >> 8) as u8 & 0x1f,
            pid as u8,
            afc | (*cc & 0x0f),
        ]);
        if field > 0 {
            out.push((field - 1) as u8);
            out.extend(&adaptation);
        }
        let take = rest.len().min(PACKET - (out.len() - start));
        out.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        *cc = (*cc + 1) & 0x0f;
        first = false;
    }
}
