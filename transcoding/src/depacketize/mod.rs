//! RTP packets of one track in, whole access units out.
//!
//! A depacketizer is fed the track's packets in stored order with each
//! one's media time, and hands out [`Frame`]s as they complete. Loss,
//! reordering and a fragment that never ends drop the access unit they
//! belong to (counted in [`DepacketizeStats`]); nothing in a packet can make
//! it panic.
//!
//! - `h264` (RFC 6184) and `h265` (RFC 7798), on the shared access-unit
//!   assembly of `video`;
//! - `aac`: RFC 3640 `mpeg4-generic`, and `latm`: RFC 3016/6416
//!   `MP4A-LATM`, both on the AudioSpecificConfig reading of `audio_config`;
//! - `simple`: G.711 and Opus, one packet one frame.

mod aac;
mod audio_config;
mod audio_out;
mod bits;
mod fmtp;
mod h264;
mod h265;
mod latm;
mod rtp_in;
mod simple;
mod video;

use streamcache_types::Npt;

use crate::frame::{Codec, Frame, TrackSpec, Unsupported};

/// What a depacketizer dropped, for the logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DepacketizeStats {
    /// Packets that could not be parsed (bad RTP header, bad payload).
    pub malformed_packets: u64,
    /// Access units dropped because part of them was lost or malformed.
    pub dropped_frames: u64,
    /// Well-formed packets of a kind this crate does not handle (H.264
    /// STAP-B/MTAP/FU-B, interleaved AAC, a payload type other than the
    /// track's), dropped.
    pub unsupported_packets: u64,
    /// Packets whose sequence number went backwards (late or duplicated),
    /// dropped: packets are taken in stored order, never reordered.
    pub reordered_packets: u64,
}

pub trait Depacketizer: Send {
    /// One RTP packet (header included, as stored) and its media time.
    /// `discontinuity`: the store says this packet does not follow the
    /// previous one (a new recording run).
    fn push(&mut self, rtp: &[u8], media_time: Npt, discontinuity: bool);

    /// The next complete access unit, if any.
    fn pop(&mut self) -> Option<Frame>;

    /// Ends the stream: whatever is pending and complete comes out of
    /// [`Depacketizer::pop`], the rest is dropped and counted.
    fn finish(&mut self);

    /// The track's codec, once known (from the SDP at once, or after the
    /// first in-band parameter sets).
    fn codec(&self) -> Option<Codec>;

    fn stats(&self) -> DepacketizeStats;
}

/// The depacketizer for track `index` of a title, chosen by the encoding
/// name (case-insensitive). `Unsupported` for other encodings and for
/// parameters these depacketizers do not handle (H.265 with DONL, AAC
/// without a usable config, LATM with the config in band).
pub fn for_track(index: usize, spec: &TrackSpec) -> Result<Box<dyn Depacketizer>, Unsupported> {
    let unsupported = || Unsupported {
        track: index,
        encoding: spec.encoding.clone(),
    };
    let depacketizer: Box<dyn Depacketizer> = match spec.encoding.to_ascii_uppercase().as_str() {
        "H264" => Box::new(h264::H264::new(index, spec)),
        "H265" => Box::new(h265::H265::new(index, spec).ok_or_else(unsupported)?),
        "MPEG4-GENERIC" => Box::new(aac::Aac::new(index, spec).ok_or_else(unsupported)?),
        "MP4A-LATM" => Box::new(latm::Latm::new(index, spec).ok_or_else(unsupported)?),
        "PCMU" | "PCMA" | "OPUS" => {
            Box::new(simple::Simple::new(index, spec).ok_or_else(unsupported)?)
        }
        _ => return Err(unsupported()),
    };
    Ok(depacketizer)
}

#[cfg(test)]
mod audio_tests;
#[cfg(test)]
mod robustness_tests;
#[cfg(test)]
mod test_util;
#[cfg(test)]
mod video_tests;
