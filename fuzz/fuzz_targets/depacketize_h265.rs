//! Fuzz the H.265 (RFC 7798) depacketizer with
//! packets cut from the input (see `common/depacketize.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common/depacketize.rs"]
mod common;

use common::{feed, spec};

fuzz_target!(|data: &[u8]| {
    for spec in [spec("H265", "sprop-vps=QAEM;sprop-sps=QgEB;sprop-pps=RAHB")] {
        feed(&spec, data);
    }
});
