//! On-demand verification (`streamcache cache verify`): every segment file
//! of a presentation's directory, each checked from its bytes on disk (not
//! from what open decided), so every problem is reported with its file and
//! offset: a bad header, each damaged stretch of records (the scan
//! resynchronises past each one), a trailer that disagrees with its
//! records, a segment never sealed, a file a cut left behind.
//!
//! Safe while writers and readers work: each segment is mapped afresh; a
//! segment still being written is read only below the `committed` offset
//! loaded before mapping, and a sealed segment's trailer only if it was
//! sealed (and trimmed) before mapping.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::format::{self, SegmentHeader, Trailer};
use crate::presentation::{Presentation, SEGMENT_EXT};
use crate::recover::id_of;
use crate::segment::{map_file, Segment};
use crate::store::OrphanInfo;
use crate::CacheError;

/// What verifying one presentation (or orphan directory) found.
#[derive(Debug)]
pub struct VerifyReport {
    /// The directory's name (what `cache ls` shows as the id).
    pub id: String,
    /// The presentation key; empty for an orphan.
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

/// Verifies a presentation. `read_only`: the store was opened read-only,
/// so segment files it did not load (dropped by a cut, to be removed at
/// the next open) and unsealed ones no writer holds are problems.
pub(crate) fn verify_presentation(pres: &Presentation, read_only: bool) -> VerifyReport {
    let mut report = VerifyReport {
        id: id_of(&pres.dir),
        key: pres.key.clone(),
        segments: 0,
        records: 0,
        bytes: 0,
        problems: Vec::new(),
    };
    // Listed before the segments are taken: a segment a writer creates
    // meanwhile is then either in both or only in memory.
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&pres.dir) {
        Ok(entries) => entries
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.extension().is_some_and(|x| x == SEGMENT_EXT))
            .collect(),
        Err(e) => {
            report.problems.push(CacheError::io(&pres.dir, e));
            return report;
        }
    };
    files.sort();
    let loaded: HashMap<PathBuf, Arc<Segment>> = pres
        .lock()
        .segments()
        .map(|s| (s.path.clone(), s.clone()))
        .collect();
    let writing = pres.writing.load(Ordering::Acquire);
    for path in files {
        report.segments += 1;
        let checked = match loaded.get(&path) {
            Some(segment) => verify_segment(segment, read_only && !writing, &mut report),
            None => verify_unloaded(&path, read_only),
        };
        if let Err(e) = checked {
            report.problems.push(e);
        }
    }
    report
}

/// An orphan directory, as a report with its one problem.
pub(crate) fn verify_orphan(orphan: &OrphanInfo) -> VerifyReport {
    VerifyReport {
        id: orphan.id.clone(),
        key: String::new(),
        segments: orphan.segments,
        records: 0,
        bytes: 0,
        problems: vec![CacheError::Orphan {
            path: orphan.path.clone(),
            segments: orphan.segments,
            bytes: orphan.bytes,
            reason: orphan.reason.clone(),
            reclaimed: false,
        }],
    }
}

/// A segment file the store did not load: its header problem, or (read-only)
/// that a cut dropped it.
fn verify_unloaded(path: &std::path::Path, read_only: bool) -> Result<(), CacheError> {
    let map = map_file(path)?;
    SegmentHeader::decode(path, &map)?;
    if read_only {
        return Err(CacheError::corrupt(
            path,
            0,
            "not played: it follows damage in its recording run (removed at the next open, to be refetched)",
        ));
    }
    Ok(())
}

fn verify_segment(
    segment: &Segment,
    dead_writer: bool,
    report: &mut VerifyReport,
) -> Result<(), CacheError> {
    let path = &segment.path;
    let sealed = segment.sealed.load(Ordering::Acquire);
    let committed = segment.committed.load(Ordering::Acquire);
    let map = map_file(path)?;
    SegmentHeader::decode(path, &map)?;
    let trailer = Trailer::decode_tail(&map).filter(|t| t.records_end >= segment.header_len);
    let scan = match (&trailer, sealed) {
        (Some(t), _) => format::scan_full(&map, segment.header_len, t.records_end, false),
        // Sealed in memory but not on disk: a segment no writer sealed
        // (read-only; the next open seals it).
        (None, true) => format::scan_full(&map, segment.header_len, map.len() as u64, true),
        // Being written: every record below `committed` is whole.
        (None, false) => format::scan_full(&map, segment.header_len, committed, false),
    };
    report.records += scan.prefix.record_count + scan.intact_after;
    report.bytes += scan.prefix.records_end - segment.header_len;
    for damage in &scan.damage {
        let resumed = match damage.resumed {
            Some(at) => format!("intact records resume at offset {at}"),
            None => "no intact record follows".into(),
        };
        report.problems.push(CacheError::corrupt(
            path,
            damage.offset,
            format!("{}; {resumed}", damage.what),
        ));
    }
    match trailer {
        Some(t) if scan.damage.is_empty() => {
            let agrees = t.record_count == scan.prefix.record_count
                && t.min_ns == scan.prefix.min_ns
                && t.max_ns == scan.prefix.max_ns
                && t.index == scan.prefix.index;
            if !agrees {
                return Err(CacheError::corrupt(
                    path,
                    t.records_end,
                    "trailer disagrees with the records",
                ));
            }
        }
        None if sealed && dead_writer => {
            return Err(CacheError::corrupt(
                path,
                scan.prefix.records_end,
                "segment not sealed: its writer stopped without sealing it (recovered at the next open)",
            ));
        }
        _ => {}
    }
    Ok(())
}
