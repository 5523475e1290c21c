//! Fuzz the RTSP stream decoder: arbitrary bytes must never panic, and a
//! decoded frame must consume a non-empty prefix of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamcache_rtsp::framing::{cseq_hint, decode, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_message_bytes: 4096,
        max_headers: 32,
    };
    let mut rest = data;
    // Decode as a connection would: frame after frame until more is needed.
    while let Ok(Some((_, used))) = decode(rest, &limits) {
        assert!(used > 0 && used <= rest.len());
        rest = &rest[used..];
    }
    let _ = cseq_hint(rest);
});
