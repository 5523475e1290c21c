//! Helpers for the depacketizers' tests: track specs, packets, a run.

use streamcache_types::Npt;

pub(super) use super::rtp_in::packet;
use super::{for_track, DepacketizeStats, Depacketizer};
use crate::frame::{Frame, TrackSpec};

pub(super) fn spec(encoding: &str, pt: u8, clock_rate: u32, fmtp: &str) -> TrackSpec {
    TrackSpec {
        media: "x".into(),
        encoding: encoding.into(),
        payload_type: pt,
        clock_rate,
        channels: None,
        fmtp: (!fmtp.is_empty()).then(|| fmtp.to_owned()),
    }
}

pub(super) const AAC_HBR: &str =
    "streamtype=5;profile-level-id=2;mode=AAC-hbr;config=1188;sizelength=13;indexlength=3;indexdeltalength=3";

/// One stored packet: bytes, media time in ms, discontinuity.
pub(super) type Stored = (Vec<u8>, u64, bool);

/// Feeds every packet, finishes, and collects the frames.
pub(super) fn run_with(d: &mut dyn Depacketizer, packets: &[Stored]) -> Vec<Frame> {
    let mut frames = Vec::new();
    for (bytes, ms, discontinuity) in packets {
        d.push(bytes, Npt::from_millis(*ms), *discontinuity);
        frames.extend(std::iter::from_fn(|| d.pop()));
    }
    d.finish();
    frames.extend(std::iter::from_fn(|| d.pop()));
    frames
}

pub(super) fn run(spec: &TrackSpec, packets: &[Stored]) -> (Vec<Frame>, DepacketizeStats) {
    let mut d = for_track(0, spec).expect("supported");
    let frames = run_with(d.as_mut(), packets);
    (frames, d.stats())
}

/// Length-prefixed (AVCC) form of NAL units.
pub(super) fn avcc(nals: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for nal in nals {
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        out.extend_from_slice(nal);
    }
    out
}
