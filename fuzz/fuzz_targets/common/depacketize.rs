//! What the depacketizer fuzz targets share (included by each with
//! `#[path]`): a track description, and the feeding of one input, cut into
//! packets, to a depacketizer. Each packet is a control byte, a length byte,
//! then that many bytes: either raw bytes or a payload behind a valid RTP
//! header whose sequence number and timestamp advance by amounts the control
//! byte picks (loss, duplicates, fragments of one unit). Nothing may panic;
//! every frame out holds data.

use streamcache_transcoding::depacketize::for_track;
use streamcache_transcoding::TrackSpec;
use streamcache_types::Npt;

pub fn spec(encoding: &str, fmtp: &str) -> TrackSpec {
    TrackSpec {
        media: "x".into(),
        encoding: encoding.into(),
        payload_type: 96,
        clock_rate: 90000,
        channels: None,
        fmtp: Some(fmtp.into()),
    }
}

/// Feeds `data` to the depacketizer of `spec`.
pub fn feed(spec: &TrackSpec, data: &[u8]) {
    let mut d = for_track(0, spec).expect("supported");
    let (mut seq, mut ts) = (0u16, 0u32);
    let mut rest = data;
    // Each packet: a control byte, a length byte, then that many bytes.
    while let [control, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (payload, after) = tail.split_at(n);
        rest = after;
        seq = seq.wrapping_add(u16::from(control & 3));
        ts = ts.wrapping_add(u32::from((control >> 2) & 1) * 3000);
        let marker = control & 0x08 != 0;
        let packet = if control & 0x10 != 0 {
            payload.to_vec()
        } else {
            let mut p = vec![0x80, (u8::from(marker) << 7) | 96];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&ts.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 1]);
            p.extend_from_slice(payload);
            p
        };
        d.push(&packet, Npt::from_ns(u64::from(ts)), control & 0x20 != 0);
        while let Some(frame) = d.pop() {
            assert!(!frame.data.is_empty());
        }
    }
    d.finish();
    while let Some(frame) = d.pop() {
        assert!(!frame.data.is_empty());
    }
    let _ = (d.codec(), d.stats());
}
