//! G.711 (PCMU, PCMA; RFC 3551) and Opus (RFC 7587): every packet is one
//! frame, its payload as it is.

use std::collections::VecDeque;

use bytes::Bytes;
use streamcache_types::Npt;

use super::rtp_in::RtpIn;
use super::{fmtp, DepacketizeStats, Depacketizer};
use crate::frame::{Codec, Frame, TrackSpec};

pub(super) struct Simple {
    track: usize,
    rtp: RtpIn,
    codec: Codec,
    frames: VecDeque<Frame>,
    stats: DepacketizeStats,
}

impl Simple {
    /// `None` for an encoding other than PCMU, PCMA and Opus.
    pub fn new(track: usize, spec: &TrackSpec) -> Option<Simple> {
        let channels = spec.channels.unwrap_or(1).max(1);
        // G.711 at the track's clock rate: 8 kHz, the only rate RFC 3551
        // registers for it, unless the rtpmap says otherwise.
        let sample_rate = spec.clock_rate;
        let codec = match spec.encoding.to_ascii_uppercase().as_str() {
            "PCMU" => Codec::Pcmu {
                sample_rate,
                channels,
            },
            "PCMA" => Codec::Pcma {
                sample_rate,
                channels,
            },
            // The rtpmap always says 2 (RFC 7587 §7): `sprop-stereo`
            // tells what the sender actually sends, when given.
            "OPUS" => Codec::Opus {
                channels: match fmtp::number(spec.fmtp.as_deref(), "sprop-stereo") {
                    Some(0) => 1,
                    Some(_) => 2,
                    None => spec.channels.unwrap_or(2).clamp(1, 2),
                },
            },
            _ => return None,
        };
        Some(Simple {
            track,
            rtp: RtpIn::new(spec.payload_type),
            codec,
            frames: VecDeque::new(),
            stats: DepacketizeStats::default(),
        })
    }
}

impl Depacketizer for Simple {
    fn push(&mut self, rtp: &[u8], media_time: Npt, discontinuity: bool) {
        let Some(p) = self.rtp.accept(rtp, discontinuity, &mut self.stats) else {
            return;
        };
        self.frames.push_back(Frame {
            track: self.track,
            pts: media_time,
            keyframe: true,
            discontinuity: p.gap,
            data: Bytes::copy_from_slice(p.payload),
        });
    }

    fn pop(&mut self) -> Option<Frame> {
        self.frames.pop_front()
    }

    fn finish(&mut self) {}

    fn codec(&self) -> Option<Codec> {
        Some(self.codec.clone())
    }

    fn stats(&self) -> DepacketizeStats {
        self.stats
    }
}
