//! RTP packets of one track in, whole access units out.
//!
//! A depacketizer is fed the track's packets in stored order with each
//! one's media time, and hands out [`Frame`]s as they complete. Loss,
//! reordering and a fragment that never ends drop the access unit they
//! belong to (counted in [`DepacketizeStats`]); nothing in a packet can make
//! it panic.

use streamcache_types::Npt;

use crate::frame::{Codec, Frame, TrackSpec, Unsupported};

/// What a depacketizer dropped, for the logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DepacketizeStats {
    /// Packets that could not be parsed (bad RTP header, bad payload).
    pub malformed_packets: u64,
    /// Access units dropped because part of them was lost or malformed.
    pub dropped_frames: u64,
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

/// The depacketizer for track `index` of a title.
pub fn for_track(index: usize, spec: &TrackSpec) -> Result<Box<dyn Depacketizer>, Unsupported> {
    Err(Unsupported {
        track: index,
        encoding: spec.encoding.clone(),
    })
}
