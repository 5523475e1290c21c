//! AAC in RFC 3640 `mpeg4-generic` (AAC-hbr, AAC-lbr): AU-headers, several
//! AUs per packet, an AU fragmented across packets. Interleaving (a
//! non-zero AU-Index-delta) is not supported: such packets are dropped and
//! counted.

use bytes::{Bytes, BytesMut};
use streamcache_types::Npt;

use super::audio_out::AudioOut;
use super::bits::Bits;
use super::rtp_in::RtpIn;
use super::{audio_config, fmtp, DepacketizeStats, Depacketizer};
use crate::frame::{Codec, Frame, TrackSpec};

/// The AU-header layout from the fmtp (RFC 3640 §4.1), in bits.
#[derive(Debug, Clone, Copy)]
struct Layout {
    size: u32,
    index: u32,
    index_delta: u32,
    cts_delta: u32,
    dts_delta: u32,
    random_access: u32,
    stream_state: u32,
    auxiliary: u32,
}

/// An AU arriving in pieces.
#[derive(Debug)]
struct Fragment {
    timestamp: u32,
    pts: Npt,
    size: usize,
    data: BytesMut,
}

pub(super) struct Aac {
    rtp: RtpIn,
    layout: Layout,
    codec: Codec,
    out: AudioOut,
    fragment: Option<Fragment>,
    /// The timestamp of the fragmented AU last dropped: its remaining
    /// fragments are skipped rather than taken for the start of another.
    skip: Option<u32>,
    stats: DepacketizeStats,
}

impl Aac {
    /// `None` without a usable `config=` or with an AU-header layout we do
    /// not read (no AU-size, fields wider than 32 bits).
    pub fn new(track: usize, spec: &TrackSpec) -> Option<Aac> {
        let f = spec.fmtp.as_deref();
        let n = |key| fmtp::number(f, key).unwrap_or(0);
        let layout = Layout {
            size: n("sizelength"),
            index: n("indexlength"),
            index_delta: n("indexdeltalength"),
            cts_delta: n("ctsdeltalength"),
            dts_delta: n("dtsdeltalength"),
            random_access: n("randomaccessindication").min(1),
            stream_state: n("streamstateindication"),
            auxiliary: n("auxiliarydatasizelength"),
        };
        let l = &layout;
        let widths = [l.size, l.index, l.index_delta, l.cts_delta, l.dts_delta];
        if l.size == 0
            || widths
                .iter()
                .chain([&l.stream_state, &l.auxiliary])
                .any(|&w| w > 32)
        {
            return None;
        }
        let config = fmtp::hex(fmtp::param(f, "config")?)?;
        let info = audio_config::read(&mut Bits::new(&config))?;
        Some(Aac {
            rtp: RtpIn::new(spec.payload_type),
            layout,
            codec: Codec::Aac {
                config: Bytes::from(config),
                sample_rate: info.sample_rate,
                channels: info.channels,
            },
            out: AudioOut::new(track, info.frame_length, info.sample_rate),
            fragment: None,
            skip: None,
            stats: DepacketizeStats::default(),
        })
    }

    /// Frames lost: the next one out does not follow the last.
    fn dropped(&mut self, frames: u64) {
        self.stats.dropped_frames += frames;
        self.out.mark_discontinuity();
    }

    fn drop_fragment(&mut self) {
        if let Some(f) = self.fragment.take() {
            self.dropped(1);
            self.skip = Some(f.timestamp);
        }
    }

    /// The AU sizes and where the AUs start in `payload`; `Err(true)` when
    /// malformed, `Err(false)` when interleaved.
    fn headers(&self, payload: &[u8]) -> Result<(Vec<usize>, usize), bool> {
        let l = &self.layout;
        let [hi, lo, rest @ ..] = payload else {
            return Err(true);
        };
        let header_bits = usize::from(u16::from_be_bytes([*hi, *lo]));
        let header_bytes = header_bits.div_ceil(8);
        let mut bits = Bits::new(rest.get(..header_bytes).ok_or(true)?);
        let mut sizes = Vec::new();
        while bits.position() < header_bits {
            let size = bits.read(l.size).ok_or(true)?;
            // The first AU-Index is a serial number; a non-zero delta
            // after it means interleaving.
            let index_bits = if sizes.is_empty() {
                l.index
            } else {
                l.index_delta
            };
            let index = bits.read(index_bits).ok_or(true)?;
            if !sizes.is_empty() && index != 0 {
                return Err(false);
            }
            for delta in [l.cts_delta, l.dts_delta] {
                if delta > 0 && bits.read(1).ok_or(true)? == 1 {
                    bits.read(delta).ok_or(true)?;
                }
            }
            bits.read(l.random_access).ok_or(true)?;
            bits.read(l.stream_state).ok_or(true)?;
            sizes.push(usize::try_from(size).map_err(|_| true)?);
        }
        if bits.position() != header_bits {
            return Err(true);
        }
        let mut start = 2 + header_bytes;
        if l.auxiliary > 0 {
            let mut aux = Bits::new(payload.get(start..).ok_or(true)?);
            let aux_bits = aux.read(l.auxiliary).ok_or(true)? as usize;
            start += (l.auxiliary as usize + aux_bits).div_ceil(8);
        }
        Ok((sizes, start))
    }
}

impl Depacketizer for Aac {
    fn push(&mut self, rtp: &[u8], media_time: Npt, discontinuity: bool) {
        let Some(p) = self.rtp.accept(rtp, discontinuity, &mut self.stats) else {
            return;
        };
        if p.gap {
            self.drop_fragment();
            self.out.mark_discontinuity();
        }
        match self.skip {
            Some(ts) if ts == p.timestamp => return,
            _ => self.skip = None,
        }
        let (sizes, start) = match self.headers(p.payload) {
            Ok(h) => h,
            Err(malformed) => {
                match malformed {
                    true => self.stats.malformed_packets += 1,
                    false => self.stats.unsupported_packets += 1,
                }
                // How many AUs it held is unknown: the next one out does
                // not follow the last.
                self.out.mark_discontinuity();
                self.drop_fragment();
                return;
            }
        };
        let data = p.payload.get(start..).unwrap_or(&[]);
        if let Some(mut f) = self.fragment.take() {
            // A continuation: the same AU (its whole size in the one
            // AU-header, RFC 3640 §3.2.3.1) at the same timestamp.
            if f.timestamp == p.timestamp && sizes == [f.size] {
                f.data.extend_from_slice(data);
                match f.data.len().cmp(&f.size) {
                    std::cmp::Ordering::Less => self.fragment = Some(f),
                    std::cmp::Ordering::Equal => self.out.push(f.pts, 0, f.data.freeze()),
                    std::cmp::Ordering::Greater => {
                        self.stats.malformed_packets += 1;
                        self.dropped(1);
                    }
                }
                return;
            }
            // Its end never came, or this is not its continuation.
            self.fragment = Some(f);
            self.drop_fragment();
            if self.skip == Some(p.timestamp) {
                self.stats.malformed_packets += 1;
                return;
            }
        }
        let mut offset = 0usize;
        for (i, &size) in sizes.iter().enumerate() {
            let Some(au) = offset
                .checked_add(size)
                .and_then(|end| data.get(offset..end))
            else {
                let rest = data.get(offset..).unwrap_or(&[]);
                if sizes.len() == 1 && !rest.is_empty() {
                    self.fragment = Some(Fragment {
                        timestamp: p.timestamp,
                        pts: media_time,
                        size,
                        data: BytesMut::from(rest),
                    });
                } else {
                    // Several AUs and one cut short: a malformed packet.
                    self.stats.malformed_packets += 1;
                    self.dropped((sizes.len() - i) as u64);
                }
                return;
            };
            offset += size;
            if au.is_empty() {
                self.dropped(1);
                continue;
            }
            self.out
                .push(media_time, i as u64, Bytes::copy_from_slice(au));
        }
    }

    fn pop(&mut self) -> Option<Frame> {
        self.out.pop()
    }

    fn finish(&mut self) {
        self.drop_fragment();
    }

    fn codec(&self) -> Option<Codec> {
        Some(self.codec.clone())
    }

    fn stats(&self) -> DepacketizeStats {
        self.stats
    }
}
