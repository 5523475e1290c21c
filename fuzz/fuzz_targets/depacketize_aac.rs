//! Fuzz the AAC (RFC 3640 and MP4A-LATM) depacketizer with
//! packets cut from the input (see `common/depacketize.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common/depacketize.rs"]
mod common;

use common::{feed, spec};

fuzz_target!(|data: &[u8]| {
    for spec in [
        spec(
            "MPEG4-GENERIC",
            "config=1188;sizelength=13;indexlength=3;indexdeltalength=3",
        ),
        spec("MP4A-LATM", "cpresent=0;config=410023103fc0"),
    ] {
        feed(&spec, data);
    }
});
