//! streamcache-transcoding: a stored title's packets in, container bytes
//! out. No tokio, no sockets, no clock: plain values in, plain values out.
//!
//! The path of a title through the crate:
//!
//! 1. [`TrackSpec`] (from the title's SDP) → [`depacketize::for_track`]: a
//!    [`Depacketizer`] per track, which turns the track's RTP packets (in
//!    the order stored, each with its media time) into [`Frame`]s — whole
//!    access units — and learns the track's [`Codec`] (parameter sets from
//!    the SDP or in band);
//! 2. the muxers ([`mux`]) take the codecs and the frames: MP4 (moov at the
//!    front), fragmented MP4 (CMAF: an init segment and fragments) and
//!    MPEG-TS.
//!
//! Timing comes from the stored media time (npt), not from RTP timestamps
//! alone: a title spliced from several recording runs keeps its tracks in
//! sync.

pub mod depacketize;
pub mod frame;
pub mod mux;
mod sdp;
pub mod title;

pub use depacketize::Depacketizer;
pub use frame::{Codec, Frame, TrackSpec, Unsupported};
pub use sdp::TracksError;
