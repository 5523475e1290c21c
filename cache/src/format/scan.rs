//! Scanning a segment's records: the verified prefix (what recovery keeps),
//! and the resynchronising scan that finds every damaged stretch and the
//! intact records after it (what verification reports, and how a cursor
//! skips damage).

use std::path::Path;

use super::{
    bytes_at, decode_record, IndexBuilder, IndexEntry, SegmentHeader, Stop, Trailer,
    FLAG_DISCONTINUITY, FLAG_RANDOM_ACCESS, KIND_RTCP, MAX_PAYLOAD, RECORD_HEADER_LEN,
};
use crate::CacheError;

/// Where a [`scan_records`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanStop {
    /// Reached the end of the range.
    End,
    /// Reached zero bytes (preallocated space never written).
    Zeroed,
    /// Reached a valid trailer at `records_end`.
    Trailer(Trailer),
    /// Reached torn or damaged bytes at `records_end`.
    Bad(&'static str),
}

/// What a scan over a run of records found: the verified prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Offset after the last verified record.
    pub records_end: u64,
    pub record_count: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    /// Highest track index of the verified records (0 when none).
    pub max_track: u8,
    pub index: Vec<IndexEntry>,
    pub stop: ScanStop,
}

/// Verifies records from `start` until `end`, the first bad record, zero
/// bytes or a trailer, and rebuilds the sparse index of the verified prefix.
pub fn scan_records(bytes: &[u8], start: u64, end: u64) -> Scan {
    let end = end.min(bytes.len() as u64);
    let mut at = start;
    let mut count = 0u64;
    let (mut min_ns, mut max_ns) = (u64::MAX, 0u64);
    let mut max_track = 0u8;
    let mut index = IndexBuilder::default();
    let stop = loop {
        if at >= end {
            break ScanStop::End;
        }
        match decode_record(bytes, at, end) {
            Ok((rec, next)) => {
                index.observe(rec.flags, rec.media_time.as_ns(), at);
                min_ns = min_ns.min(rec.media_time.as_ns());
                max_ns = max_ns.max(rec.media_time.as_ns());
                max_track = max_track.max(rec.track);
                count += 1;
                at = next;
            }
            Err(Stop::Zeroed) => break ScanStop::Zeroed,
            Err(Stop::TrailerTag) => match Trailer::decode_at(bytes, at) {
                Ok((trailer, _)) => break ScanStop::Trailer(trailer),
                Err(what) => break ScanStop::Bad(what),
            },
            Err(Stop::Corrupt(what)) => break ScanStop::Bad(what),
        }
    };
    if count == 0 {
        min_ns = 0;
    }
    Scan {
        records_end: at,
        record_count: count,
        min_ns,
        max_ns,
        max_track,
        index: index.into_entries(),
        stop,
    }
}

/// Whether the 20 bytes at `at` could be a record header: the cheap checks
/// of [`decode_record`] (length, kind, flags, reserved byte, not all zero),
/// done before its checksum so a resynchronising scan stays fast.
fn plausible_header(bytes: &[u8], at: u64, end: u64) -> bool {
    let Some(h) = bytes_at::<RECORD_HEADER_LEN>(bytes, at) else {
        return false;
    };
    let len = u64::from(u32::from_le_bytes([h[0], h[1], h[2], h[3]]));
    len <= MAX_PAYLOAD as u64
        && at + RECORD_HEADER_LEN as u64 + len <= end
        && h[5] <= KIND_RTCP
        && h[6] & !(FLAG_RANDOM_ACCESS | FLAG_DISCONTINUITY) == 0
        && h[7] == 0
        && h != [0; RECORD_HEADER_LEN]
}

/// The first offset after `from` and before `end` where a record that
/// verifies (length, checksum, kind and flag rules) starts: where reading
/// resumes after damage at `from`. Every offset is tried, so a damaged
/// length field loses nothing beyond its own record. `None` if no intact
/// record follows.
pub fn resync(bytes: &[u8], from: u64, end: u64) -> Option<u64> {
    let end = end.min(bytes.len() as u64);
    let mut at = from.checked_add(1)?;
    while at.checked_add(RECORD_HEADER_LEN as u64)? <= end {
        // A record header is never all zero: no record starts more than
        // 19 bytes before the next non-zero byte, so runs of zeros (a
        // preallocated tail) are skipped at once.
        let rest = bytes.get(usize::try_from(at).ok()?..usize::try_from(end).ok()?)?;
        let nonzero = rest.iter().position(|&b| b != 0)? as u64;
        at += nonzero.saturating_sub(RECORD_HEADER_LEN as u64 - 1);
        if plausible_header(bytes, at, end) && decode_record(bytes, at, end).is_ok() {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// One damaged stretch of a segment's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Where the damage starts (where a record was expected).
    pub offset: u64,
    pub what: &'static str,
    /// Where intact records resume; `None` if none follows.
    pub resumed: Option<u64>,
}

/// A resynchronising scan of a records area: its verified prefix, and what
/// lies after the first damage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullScan {
    /// The records up to the first damage (or to the end).
    pub prefix: Scan,
    /// Every damaged stretch, in order (only past `prefix.records_end`).
    pub damage: Vec<Damage>,
    /// Intact records after the first damage.
    pub intact_after: u64,
}

/// Scans the records from `start` to `end` as [`scan_records`] does, and
/// past the first bad record resynchronises at every intact record that
/// follows, noting each damaged stretch. Zero bytes or a trailer end the
/// scan only when `zeros_end` (an unsealed segment: its preallocated tail,
/// or a trailer a crash did not trim); in a sealed segment's records area
/// they are damage.
pub fn scan_full(bytes: &[u8], start: u64, end: u64, zeros_end: bool) -> FullScan {
    let end = end.min(bytes.len() as u64);
    let prefix = scan_records(bytes, start, end);
    let first = match &prefix.stop {
        ScanStop::End => None,
        ScanStop::Zeroed | ScanStop::Trailer(_) if zeros_end => None,
        ScanStop::Zeroed => Some(Stop::Zeroed.describe()),
        ScanStop::Trailer(_) => Some(Stop::TrailerTag.describe()),
        ScanStop::Bad(what) => Some(*what),
    };
    let mut full = FullScan {
        damage: Vec::new(),
        intact_after: 0,
        prefix,
    };
    let Some(what) = first else {
        return full;
    };
    let mut damage = Damage {
        offset: full.prefix.records_end,
        what,
        resumed: None,
    };
    loop {
        damage.resumed = resync(bytes, damage.offset, end);
        let Some(mut at) = damage.resumed else {
            full.damage.push(damage);
            return full;
        };
        full.damage.push(damage);
        // Intact records up to the next damage or the end.
        let stop = loop {
            if at >= end {
                return full;
            }
            match decode_record(bytes, at, end) {
                Ok((_, next)) => {
                    full.intact_after += 1;
                    at = next;
                }
                Err(Stop::Zeroed | Stop::TrailerTag) if zeros_end => return full,
                Err(stop) => break stop,
            }
        };
        damage = Damage {
            offset: at,
            what: stop.describe(),
            resumed: None,
        };
    }
}

/// Reads a whole segment file the way recovery does: checks the header, then
/// takes the trailer if the file is sealed, or else scans the verified prefix
/// of records. Used by the store and by the fuzz target.
pub fn inspect_segment(
    path: &Path,
    bytes: &[u8],
) -> Result<(SegmentHeader, Inspected), CacheError> {
    let header = SegmentHeader::decode(path, bytes)?;
    if let Some(trailer) = Trailer::decode_tail(bytes) {
        if trailer.records_end >= u64::from(header.header_len) {
            return Ok((header, Inspected::Sealed(trailer)));
        }
    }
    Ok((
        header,
        Inspected::Unsealed(scan_records(
            bytes,
            u64::from(header.header_len),
            bytes.len() as u64,
        )),
    ))
}

/// The state [`inspect_segment`] found a segment file in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspected {
    /// The file ends with a valid trailer (records not re-verified).
    Sealed(Trailer),
    /// Not sealed (a crash, or a writer still at work): the verified prefix.
    Unsealed(Scan),
}
