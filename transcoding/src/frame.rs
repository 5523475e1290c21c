//! The crate's vocabulary: what a track is (from the SDP), what its codec
//! turned out to be, and the access units that travel from depacketizers
//! to muxers.

use bytes::Bytes;
use streamcache_types::Npt;

/// One track as the title's SDP describes it (`m=` line, `a=rtpmap`,
/// `a=fmtp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackSpec {
    /// "video", "audio", ...
    pub media: String,
    /// Encoding name from the rtpmap, as written ("H264", "H265",
    /// "MPEG4-GENERIC", "MP4A-LATM", "PCMU", "PCMA", "opus"); static payload
    /// types 0 and 8 without an rtpmap are "PCMU" and "PCMA".
    pub encoding: String,
    pub payload_type: u8,
    pub clock_rate: u32,
    /// The rtpmap's encoding parameters (audio channels), if any.
    pub channels: Option<u16>,
    /// The `a=fmtp` parameters after the payload type, as written.
    pub fmtp: Option<String>,
}

/// A track's codec and what a container needs to describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Codec {
    /// Parameter sets without start codes or length prefixes.
    H264 {
        sps: Vec<Bytes>,
        pps: Vec<Bytes>,
    },
    H265 {
        vps: Vec<Bytes>,
        sps: Vec<Bytes>,
        pps: Vec<Bytes>,
    },
    /// AAC: the AudioSpecificConfig (from `config=` or the LATM
    /// StreamMuxConfig), sample rate and channels.
    Aac {
        config: Bytes,
        sample_rate: u32,
        channels: u16,
    },
    /// G.711 µ-law / A-law.
    Pcmu {
        sample_rate: u32,
        channels: u16,
    },
    Pcma {
        sample_rate: u32,
        channels: u16,
    },
    Opus {
        channels: u16,
    },
}

impl Codec {
    /// Its name in messages (a 415's body names the codec we cannot mux).
    pub fn name(&self) -> &'static str {
        match self {
            Codec::H264 { .. } => "H.264",
            Codec::H265 { .. } => "H.265",
            Codec::Aac { .. } => "AAC",
            Codec::Pcmu { .. } => "G.711 µ-law",
            Codec::Pcma { .. } => "G.711 A-law",
            Codec::Opus { .. } => "Opus",
        }
    }

    pub fn is_video(&self) -> bool {
        matches!(self, Codec::H264 { .. } | Codec::H265 { .. })
    }
}

/// One access unit of one track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Index of the track in the title.
    pub track: usize,
    /// Presentation time, in the title's media time (npt).
    pub pts: Npt,
    /// A random-access point (an IDR/IRAP picture; every audio frame).
    pub keyframe: bool,
    /// Not continuous with the previous frame of the track (a gap between
    /// recording runs, loss that dropped frames): a muxer starts a new
    /// timeline piece rather than stretching the previous frame.
    pub discontinuity: bool,
    /// Video: the NAL units, each with a 4-byte big-endian length prefix
    /// (AVCC/HVCC form, parameter sets included when in band). Audio: one
    /// raw frame (AAC raw_data_block without ADTS/LATM framing, G.711
    /// samples, one Opus packet).
    pub data: Bytes,
}

/// A track whose codec this crate cannot turn into frames or mux.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported codec {encoding} on track {track}")]
pub struct Unsupported {
    pub track: usize,
    /// The encoding name as the SDP gave it.
    pub encoding: String,
}
