//! Frames in, container bytes out: MP4 with the moov at the front (plays
//! while downloading), fragmented MP4 (CMAF: init segment + fragments),
//! MPEG-TS.
//!
//! The boxes are written with `mp4-atom` (typed boxes, encode and decode,
//! CMAF-era boxes included); MPEG-TS is a small packetizer of our own
//! ([`ts`] says why). What each container takes:
//!
//! | codec       | MP4 / fMP4        | MPEG-TS                  |
//! |-------------|-------------------|--------------------------|
//! | H.264       | avc1 + avcC       | stream type 0x1B, Annex B |
//! | H.265       | hvc1 + hvcC       | stream type 0x24, Annex B |
//! | AAC         | mp4a + esds       | stream type 0x0F, ADTS   |
//! | Opus        | Opus + dOps       | refused                  |
//! | G.711       | refused           | refused                  |
//!
//! A refused codec is a [`MuxError::Unsupported`] naming it (the daemon
//! answers 415).

mod entry;
pub mod fmp4;
pub mod mp4;
mod params;
pub mod timing;
pub mod ts;

use streamcache_types::Npt;

use crate::frame::Frame;

/// Why a title cannot be muxed.
#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    #[error("{codec} cannot be muxed into {container}")]
    Unsupported {
        codec: &'static str,
        container: &'static str,
    },
    #[error("track {track} ({codec}): parameter sets missing or unreadable")]
    BadParameterSets { track: usize, codec: &'static str },
    #[error("a frame of track {track}, which has no codec")]
    UnknownTrack { track: usize },
    #[error("no frames to mux")]
    Empty,
    #[error("a frame of {size} bytes is too large for the container")]
    FrameTooLarge { size: usize },
    #[error("the frames written differ from the frames planned (track {track}, sample {sample})")]
    NotAsPlanned { track: usize, sample: usize },
    #[error("encoding a box: {0}")]
    Encode(#[from] mp4_atom::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What the MP4 writer's first pass needs of a frame: everything but the
/// data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub track: usize,
    pub pts: Npt,
    pub keyframe: bool,
    pub size: usize,
}

impl From<&Frame> for FrameHeader {
    fn from(frame: &Frame) -> FrameHeader {
        FrameHeader {
            track: frame.track,
            pts: frame.pts,
            keyframe: frame.keyframe,
            size: frame.data.len(),
        }
    }
}

fn sample_size(size: usize) -> Result<u32, MuxError> {
    u32::try_from(size).map_err(|_| MuxError::FrameTooLarge { size })
}
