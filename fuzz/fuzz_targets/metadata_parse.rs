//! Fuzz the metadata parser: any bytes give a `Metadata` or an error naming
//! the file and an offset inside the input, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use streamcache_cache::{parse_metadata, CacheError};

fuzz_target!(|data: &[u8]| {
    match parse_metadata(Path::new("meta.json"), data) {
        Ok(_) | Err(CacheError::UnsupportedVersion { .. }) => {}
        Err(CacheError::Corrupt { offset, .. }) => assert!(offset <= data.len() as u64),
        Err(other) => panic!("unexpected error kind: {other}"),
    }
});
