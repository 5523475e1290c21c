//! Fuzz SDP parsing, control resolution and rewriting: never panic, and a
//! parsed description reproduces its text and survives a rewrite.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamcache_rtsp::rtsp_types::Url;
use streamcache_rtsp::sdp::Sdp;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(sdp) = Sdp::parse(text) else {
        return;
    };
    assert_eq!(sdp.text(), text);
    let Ok(base) = Url::parse("rtsp://origin.example:554/live/cam") else {
        return;
    };
    let _ = sdp.aggregate_url(&base);
    let _ = sdp.track_urls(&base);
    let _ = sdp.range();
    let tracks: Vec<String> = (0..sdp.media.len())
        .map(|i| format!("rtsp://proxy/x/track{i}"))
        .collect();
    let rewritten = sdp.rewrite_controls(Some("rtsp://proxy/x/"), &tracks);
    let again = Sdp::parse(&rewritten).expect("a rewritten SDP parses");
    assert_eq!(again.media.len(), sdp.media.len());
});
