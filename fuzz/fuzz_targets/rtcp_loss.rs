//! Fuzz RTCP parsing and loss accounting: never panic, and however the
//! bytes are cut into packets, what one receiver can add stays within the
//! 24-bit cumulative field for each source it may report on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamcache_rtsp::loss::{LossTracker, MAX_SOURCES};
use streamcache_rtsp::rtp::parse_rtcp;

fuzz_target!(|data: &[u8]| {
    let _ = parse_rtcp(data);
    let mut tracker = LossTracker::new();
    let mut total = 0u64;
    // The first byte says where to cut the rest into two packets.
    let (cut, rest) = data.split_first().map_or((0, data), |(c, r)| (usize::from(*c), r));
    let (a, b) = rest.split_at(cut.min(rest.len()));
    for packet in [a, b, rest] {
        total += tracker.on_rtcp(packet).unwrap_or(0);
    }
    assert!(total <= MAX_SOURCES as u64 * 0x7f_ffff);
});
