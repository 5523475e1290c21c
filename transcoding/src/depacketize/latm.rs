//! AAC in RFC 3016/6416 `MP4A-LATM` with the StreamMuxConfig out of band
//! (`cpresent=0`, `config=`): audioMuxVersion 0, one program, one layer,
//! variable frame lengths (frameLengthType 0). A packet holds one or more
//! AudioMuxElements, each of one or more AUs (PayloadLengthInfo, then the
//! AU); an element may be cut across packets, the marker bit on its last.

use bytes::{Bytes, BytesMut};
use streamcache_types::Npt;

use super::audio_out::AudioOut;
use super::bits::Bits;
use super::rtp_in::RtpIn;
use super::{audio_config, fmtp, DepacketizeStats, Depacketizer};
use crate::frame::{Codec, Frame, TrackSpec};

/// More buffered than this without a marker bit: the sender is broken.
const MAX_PENDING: usize = 1 << 20;

/// What the StreamMuxConfig fixes for every AudioMuxElement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MuxConfig {
    /// AUs per AudioMuxElement.
    sub_frames: usize,
    /// Bits of other data after the AUs.
    other_data_bits: usize,
}

/// Elements cut across packets, until the marker bit.
#[derive(Debug)]
struct Pending {
    timestamp: u32,
    pts: Npt,
    data: BytesMut,
}

pub(super) struct Latm {
    rtp: RtpIn,
    mux: MuxConfig,
    codec: Codec,
    out: AudioOut,
    pending: Option<Pending>,
    stats: DepacketizeStats,
}

impl Latm {
    /// `None` unless `cpresent=0` and `config=` is a StreamMuxConfig we
    /// read.
    pub fn new(track: usize, spec: &TrackSpec) -> Option<Latm> {
        let f = spec.fmtp.as_deref();
        if fmtp::number(f, "cpresent") != Some(0) {
            return None;
        }
        let config = fmtp::hex(fmtp::param(f, "config")?)?;
        let (mux, asc) = stream_mux_config(&config)?;
        let info = audio_config::read(&mut Bits::new(&asc))?;
        Some(Latm {
            rtp: RtpIn::new(spec.payload_type),
            mux,
            codec: Codec::Aac {
                config: Bytes::from(asc),
                sample_rate: info.sample_rate,
                channels: info.channels,
            },
            out: AudioOut::new(track, info.frame_length, info.sample_rate),
            pending: None,
            stats: DepacketizeStats::default(),
        })
    }

    /// Frames lost: the next one out does not follow the last.
    fn dropped(&mut self, frames: u64) {
        self.stats.dropped_frames += frames;
        self.out.mark_discontinuity();
    }

    fn drop_pending(&mut self) {
        if self.pending.take().is_some() {
            self.dropped(1);
        }
    }

    /// Every AU of whole AudioMuxElements; a malformed element drops the
    /// rest of the buffer.
    fn elements(&mut self, data: &[u8], pts: Npt) {
        let mut rest = data;
        let mut index = 0;
        while !rest.is_empty() {
            for _ in 0..self.mux.sub_frames {
                let Some((au, after)) = payload_length_info(rest) else {
                    self.stats.malformed_packets += 1;
                    self.dropped(1);
                    return;
                };
                if au.is_empty() {
                    self.dropped(1);
                } else {
                    self.out.push(pts, index, Bytes::copy_from_slice(au));
                }
                index += 1;
                rest = after;
            }
            rest = rest
                .get(self.mux.other_data_bits.div_ceil(8)..)
                .unwrap_or(&[]);
        }
    }
}

/// An AU after its PayloadLengthInfo (a run of 0xFF bytes, each adding
/// 255, and a last byte), and what follows it.
fn payload_length_info(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut len = 0usize;
    let mut at = 0;
    loop {
        let b = *data.get(at)?;
        at += 1;
        len += usize::from(b);
        if b != 0xff {
            break;
        }
    }
    let end = at.checked_add(len)?;
    Some((data.get(at..end)?, data.get(end..)?))
}

/// StreamMuxConfig (ISO/IEC 14496-3 1.7.3.1), audioMuxVersion 0: the mux
/// layout and the AudioSpecificConfig in it, cut out to whole bytes.
fn stream_mux_config(config: &[u8]) -> Option<(MuxConfig, Vec<u8>)> {
    let mut bits = Bits::new(config);
    if bits.read(1)? != 0 {
        return None; // audioMuxVersion 1
    }
    bits.read(1)?; // allStreamsSameTimeFraming: one stream, either way
    let sub_frames = bits.read(6)? as usize + 1;
    if bits.read(4)? != 0 || bits.read(3)? != 0 {
        return None; // more than one program or layer
    }
    let start = bits.position();
    audio_config::read(&mut bits)?;
    let asc = bits.copy(start, bits.position())?;
    // Many senders cut the config right after the AudioSpecificConfig:
    // what is missing reads as frameLengthType 0 without other data.
    if bits.read(3).unwrap_or(0) != 0 {
        return None; // fixed frame lengths
    }
    bits.read(8); // latmBufferFullness
    let mut other_data_bits = 0usize;
    if bits.read(1) == Some(1) {
        loop {
            let escape = bits.read(1)?;
            other_data_bits = other_data_bits.checked_mul(256)? + bits.read(8)? as usize;
            if escape == 0 {
                break;
            }
        }
    }
    let mux = MuxConfig {
        sub_frames,
        other_data_bits,
    };
    Some((mux, asc))
}

impl Depacketizer for Latm {
    fn push(&mut self, rtp: &[u8], media_time: Npt, discontinuity: bool) {
        let Some(p) = self.rtp.accept(rtp, discontinuity, &mut self.stats) else {
            return;
        };
        if p.gap {
            self.drop_pending();
            self.out.mark_discontinuity();
        }
        if self
            .pending
            .as_ref()
            .is_some_and(|q| q.timestamp != p.timestamp)
        {
            self.drop_pending();
        }
        let pending = self.pending.get_or_insert_with(|| Pending {
            timestamp: p.timestamp,
            pts: media_time,
            data: BytesMut::new(),
        });
        pending.data.extend_from_slice(p.payload);
        if pending.data.len() > MAX_PENDING {
            self.stats.malformed_packets += 1;
            self.drop_pending();
        } else if p.marker {
            if let Some(done) = self.pending.take() {
                self.elements(&done.data, done.pts);
            }
        }
    }

    fn pop(&mut self) -> Option<Frame> {
        self.out.pop()
    }

    fn finish(&mut self) {
        self.drop_pending();
    }

    fn codec(&self) -> Option<Codec> {
        Some(self.codec.clone())
    }

    fn stats(&self) -> DepacketizeStats {
        self.stats
    }
}
