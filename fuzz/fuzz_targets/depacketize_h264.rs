//! Fuzz the H.264 (RFC 6184) depacketizer with
//! packets cut from the input (see `common/depacketize.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common/depacketize.rs"]
mod common;

use common::{feed, spec};

fuzz_target!(|data: &[u8]| {
    for spec in [spec(
        "H264",
        "packetization-mode=1;sprop-parameter-sets=Z01ADNoFBn58BEAAAAMAQAAADIPFCqg=,aO88gA==",
    )] {
        feed(&spec, data);
    }
});
