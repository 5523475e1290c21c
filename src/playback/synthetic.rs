//! Synthetic titles for the playback tests and the send-path bench: the
//! metadata of a two-track title and its RTP packets.

use streamcache_cache::{Metadata, TrackMeta};

/// A title with video (payload type 96, 90 kHz) as track 0 and audio (97,
/// 48 kHz) as track 1.
pub fn av_metadata(key: &str) -> Metadata {
    let track = |media: &str, pt, rate| TrackMeta {
        control: format!("track{pt}"),
        payload_type: pt,
        clock_rate: rate,
        media: media.into(),
        encoding: String::new(),
    };
    Metadata {
        key: key.into(),
        sdp: "v=0\r\n".into(),
        tracks: vec![track("video", 96, 90_000), track("audio", 97, 48_000)],
        ..Metadata::default()
    }
}

/// An RTP packet of `len` bytes (header included), SSRC 0x12345678.
pub fn rtp(pt: u8, seq: u16, ts: u32, len: usize) -> Vec<u8> {
    let mut p = vec![0x80, pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.resize(len, 0x5a);
    p
}
