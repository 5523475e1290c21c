//! On-demand verification (`streamcache cache verify`): every record checksum
//! of every segment, and each sealed segment's trailer against its records.
//!
//! Safe while writers and readers work: each segment is mapped afresh and read
//! only below the `committed` offset loaded before mapping; a sealed segment's
//! trailer is read only if it was sealed (and trimmed) before mapping.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::format::{self, ScanStop, SegmentHeader, Trailer};
use crate::presentation::Presentation;
use crate::segment::{map_file, Segment};
use crate::CacheError;

/// What verifying one presentation found.
#[derive(Debug)]
pub struct VerifyReport {
    pub key: String,
    pub segments: usize,
    /// Records whose checksum verified.
    pub records: u64,
    /// Bytes of verified records.
    pub bytes: u64,
    /// Each names the file and offset.
    pub problems: Vec<CacheError>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

pub(crate) fn verify_presentation(pres: &Presentation) -> VerifyReport {
    let segments: Vec<Arc<Segment>> = pres.lock().segments().cloned().collect();
    let mut report = VerifyReport {
        key: pres.key.clone(),
        segments: segments.len(),
        records: 0,
        bytes: 0,
        problems: Vec::new(),
    };
    for segment in &segments {
        if let Err(e) = verify_segment(segment, &mut report) {
            report.problems.push(e);
        }
    }
    report
}

fn verify_segment(segment: &Segment, report: &mut VerifyReport) -> Result<(), CacheError> {
    let path = &segment.path;
    let sealed = segment.sealed.load(Ordering::Acquire);
    let committed = segment.committed.load(Ordering::Acquire);
    let map = map_file(path)?;
    SegmentHeader::decode(path, &map)?;
    let scan = format::scan_records(&map, segment.header_len, committed);
    report.records += scan.record_count;
    report.bytes += scan.records_end - segment.header_len;
    if let ScanStop::Bad(what) = scan.stop {
        return Err(CacheError::corrupt(path, scan.records_end, what));
    }
    if scan.records_end != committed {
        return Err(CacheError::corrupt(
            path,
            scan.records_end,
            "records end before their recorded end",
        ));
    }
    if !sealed {
        return Ok(());
    }
    let Some(trailer) = Trailer::decode_tail(&map) else {
        return Err(CacheError::corrupt(
            path,
            committed,
            "sealed segment has no valid trailer",
        ));
    };
    let agrees = trailer.records_end == scan.records_end
        && trailer.record_count == scan.record_count
        && trailer.min_ns == scan.min_ns
        && trailer.max_ns == scan.max_ns
        && trailer.index == scan.index;
    if !agrees {
        return Err(CacheError::corrupt(
            path,
            committed,
            "trailer disagrees with the records",
        ));
    }
    Ok(())
}
