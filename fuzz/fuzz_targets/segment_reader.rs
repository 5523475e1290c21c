//! Fuzz the segment reader: any bytes, read the way recovery and cursors read
//! a segment file, must give errors, never a panic, and never a record that
//! runs outside the data.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use streamcache_cache::format::{decode_record, inspect_segment, Inspected, MAX_PAYLOAD};

fuzz_target!(|data: &[u8]| {
    let Ok((header, inspected)) = inspect_segment(Path::new("fuzz.seg"), data) else {
        return;
    };
    let end = match inspected {
        Inspected::Sealed(trailer) => trailer.records_end,
        Inspected::Unsealed(scan) => scan.records_end,
    };
    let mut at = u64::from(header.header_len);
    while at < end {
        let Ok((record, next)) = decode_record(data, at, end) else {
            break;
        };
        assert!(next > at && next <= end && next <= data.len() as u64);
        assert!(record.payload.len() <= MAX_PAYLOAD);
        at = next;
    }
});
