//! The segment file format, version 1.0 (specified in `docs/FORMAT.md`):
//! constants, encoding, and checked decoding over plain byte slices.
//!
//! Nothing here touches files, so the same code serves the writer, the
//! readers, recovery, verification and the fuzz target. Decoding never
//! panics on any input: every length read from the bytes is checked against
//! the slice before it is used.
//!
//! ```text
//! segment  = header(64) record* [trailer index* tail(16)]
//! record   = len:u32 track:u8 kind:u8 flags:u8 0:u8 media_time_ns:u64 crc32c:u32 payload[len]
//! trailer  = 0xFFFFFFFF count:u32 records:u64 min_ns:u64 max_ns:u64 flags:u32 0:u32
//! index    = media_time_ns:u64 offset:u64
//! tail     = trailer_offset:u64 crc32c:u32 "SCND"
//! ```
//! All integers are little-endian.

use std::path::Path;

use crate::{CacheError, Npt, Record, RecordFlags, RecordIn, RecordKind};

/// First eight bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SCSEGMNT";
/// Format major version: a reader refuses any other.
pub const MAJOR: u16 = 1;
/// Format minor version: additions a 1.0 reader can ignore.
pub const MINOR: u16 = 0;
/// Length of the segment header written by this version.
pub const HEADER_LEN: usize = 64;
/// Length of a record header (the payload follows it).
pub const RECORD_HEADER_LEN: usize = 20;
/// Largest payload a record may carry (an RTP packet is at most 64 KiB).
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Value of a record's length field that marks the trailer instead.
pub const TRAILER_TAG: u32 = u32::MAX;
/// Length of the trailer's fixed part, before its index entries.
pub const TRAILER_FIXED_LEN: usize = 40;
/// Length of one sparse index entry.
pub const INDEX_ENTRY_LEN: usize = 16;
/// Length of the tail that ends a sealed segment file.
pub const TAIL_LEN: usize = 16;
/// Last four bytes of a sealed segment file.
pub const TAIL_MAGIC: [u8; 4] = *b"SCND";
/// A random-access record is indexed when it is at least this much later than
/// the segment's previous index entry (the first one always is).
pub const INDEX_MIN_GAP_NS: u64 = 100_000_000;
/// Trailer flag: the segment is sealed; it will never receive more records.
pub const TRAILER_FINAL: u32 = 1;
/// Trailer flag: the segment was sealed by crash recovery, not by its writer.
pub const TRAILER_RECOVERED: u32 = 2;

pub(crate) const FLAG_RANDOM_ACCESS: u8 = 1;
pub(crate) const FLAG_DISCONTINUITY: u8 = 2;
pub(crate) const KIND_RTP: u8 = 0;
pub(crate) const KIND_RTCP: u8 = 1;

/// `N` bytes at `at`, if the slice holds them.
pub(crate) fn bytes_at<const N: usize>(b: &[u8], at: u64) -> Option<[u8; N]> {
    let at = usize::try_from(at).ok()?;
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn u32_at(b: &[u8], at: u64) -> Option<u32> {
    bytes_at(b, at).map(u32::from_le_bytes)
}

fn u64_at(b: &[u8], at: u64) -> Option<u64> {
    bytes_at(b, at).map(u64::from_le_bytes)
}

/// The fixed header at the start of every segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub major: u16,
    pub minor: u16,
    /// Offset of the first record.
    pub header_len: u32,
    /// Recording run the segment belongs to.
    pub run: u32,
    /// Position of the segment within its run, from 0.
    pub seq: u32,
    /// Media time of the first record of the run; orders runs for playback.
    pub run_start_ns: u64,
    pub created_unix_ns: u64,
    /// Bytes preallocated when the segment was created.
    pub capacity: u64,
}

impl SegmentHeader {
    /// A header of the current format version.
    pub fn new(run: u32, seq: u32, run_start_ns: u64, created_unix_ns: u64, capacity: u64) -> Self {
        SegmentHeader {
            major: MAJOR,
            minor: MINOR,
            header_len: HEADER_LEN as u32,
            run,
            seq,
            run_start_ns,
            created_unix_ns,
            capacity,
        }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&SEGMENT_MAGIC);
        h[8..10].copy_from_slice(&self.major.to_le_bytes());
        h[10..12].copy_from_slice(&self.minor.to_le_bytes());
        h[12..16].copy_from_slice(&self.header_len.to_le_bytes());
        h[16..20].copy_from_slice(&self.run.to_le_bytes());
        h[20..24].copy_from_slice(&self.seq.to_le_bytes());
        h[24..32].copy_from_slice(&self.run_start_ns.to_le_bytes());
        h[32..40].copy_from_slice(&self.created_unix_ns.to_le_bytes());
        h[40..48].copy_from_slice(&self.capacity.to_le_bytes());
        // 48..60 reserved, zero.
        let crc = crc32c::crc32c(&h[..60]);
        h[60..64].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Decodes and checks the header of the segment `path` whose bytes are
    /// `bytes` (the whole file, or at least its header).
    pub fn decode(path: &Path, bytes: &[u8]) -> Result<Self, CacheError> {
        let Some(h) = bytes_at::<HEADER_LEN>(bytes, 0) else {
            return Err(CacheError::corrupt(
                path,
                bytes.len() as u64,
                "file ends inside the 64-byte segment header",
            ));
        };
        if h[0..8] != SEGMENT_MAGIC {
            return Err(CacheError::corrupt(
                path,
                0,
                "not a streamcache segment (bad magic)",
            ));
        }
        // The checksum first: a version field damaged on disk is damage,
        // not a newer format (every major version keeps the magic and this
        // checksum of the first 60 bytes, so a newer file still passes it).
        let stored = u32::from_le_bytes([h[60], h[61], h[62], h[63]]);
        if crc32c::crc32c(&h[..60]) != stored {
            return Err(CacheError::corrupt(
                path,
                60,
                "segment header checksum mismatch",
            ));
        }
        let major = u16::from_le_bytes([h[8], h[9]]);
        let minor = u16::from_le_bytes([h[10], h[11]]);
        if major != MAJOR {
            return Err(CacheError::UnsupportedVersion {
                path: path.to_path_buf(),
                major,
                minor,
            });
        }
        let field = |at: usize| {
            u64::from_le_bytes([
                h[at],
                h[at + 1],
                h[at + 2],
                h[at + 3],
                h[at + 4],
                h[at + 5],
                h[at + 6],
                h[at + 7],
            ])
        };
        let field32 = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        let header = SegmentHeader {
            major,
            minor,
            header_len: field32(12),
            run: field32(16),
            seq: field32(20),
            run_start_ns: field(24),
            created_unix_ns: field(32),
            capacity: field(40),
        };
        let header_len = header.header_len as usize;
        if header_len < HEADER_LEN || !header_len.is_multiple_of(8) || header_len > bytes.len() {
            return Err(CacheError::corrupt(
                path,
                12,
                format!("header length {header_len} is invalid"),
            ));
        }
        Ok(header)
    }
}

/// Bytes a record with `payload_len` bytes of payload takes in a segment.
pub fn record_len(payload_len: usize) -> usize {
    RECORD_HEADER_LEN + payload_len
}

/// Encodes `rec` into `out`, which must be exactly
/// [`record_len`]`(rec.payload.len())` bytes long.
pub fn encode_record(rec: &RecordIn, out: &mut [u8]) {
    let (head, body) = out.split_at_mut(RECORD_HEADER_LEN);
    body.copy_from_slice(rec.payload);
    let mut flags = 0;
    if rec.flags.random_access {
        flags |= FLAG_RANDOM_ACCESS;
    }
    if rec.flags.discontinuity {
        flags |= FLAG_DISCONTINUITY;
    }
    let kind = match rec.kind {
        RecordKind::Rtp => KIND_RTP,
        RecordKind::Rtcp => KIND_RTCP,
    };
    head[0..4].copy_from_slice(&(rec.payload.len() as u32).to_le_bytes());
    head[4] = rec.track;
    head[5] = kind;
    head[6] = flags;
    head[7] = 0;
    head[8..16].copy_from_slice(&rec.media_time.as_ns().to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&head[..16]), body);
    head[16..20].copy_from_slice(&crc.to_le_bytes());
}

/// Why [`decode_record`] found no record at an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// All-zero bytes: the preallocated space after the last record.
    Zeroed,
    /// The trailer tag: the records end here.
    TrailerTag,
    /// Torn or damaged bytes.
    Corrupt(&'static str),
}

impl Stop {
    pub fn describe(self) -> &'static str {
        match self {
            Stop::Zeroed => "zero bytes where a record was expected",
            Stop::TrailerTag => "trailer where a record was expected",
            Stop::Corrupt(what) => what,
        }
    }
}

/// Decodes and verifies the record at `offset`, reading no byte at or past
/// `end` (clamped to the slice). Returns the record and the offset after it.
pub fn decode_record(bytes: &[u8], offset: u64, end: u64) -> Result<(Record<'_>, u64), Stop> {
    decode(bytes, offset, end, Checksum::Verify)
}

/// As [`decode_record`], every check but the checksum: for a record whose
/// bytes were verified already (see `Segment::verified_to`).
pub fn decode_verified_record(
    bytes: &[u8],
    offset: u64,
    end: u64,
) -> Result<(Record<'_>, u64), Stop> {
    decode(bytes, offset, end, Checksum::Skip)
}

#[derive(PartialEq)]
enum Checksum {
    Verify,
    Skip,
}

fn decode(
    bytes: &[u8],
    offset: u64,
    end: u64,
    checksum: Checksum,
) -> Result<(Record<'_>, u64), Stop> {
    let end = end.min(bytes.len() as u64);
    let avail = end.saturating_sub(offset);
    let Some(head) =
        bytes_at::<RECORD_HEADER_LEN>(bytes, offset).filter(|_| avail >= RECORD_HEADER_LEN as u64)
    else {
        let rest = usize::try_from(offset)
            .ok()
            .and_then(|o| bytes.get(o..end as usize))
            .unwrap_or_default();
        return Err(match u32_at(rest, 0) {
            Some(TRAILER_TAG) => Stop::TrailerTag,
            _ if rest.iter().all(|&b| b == 0) => Stop::Zeroed,
            _ => Stop::Corrupt("data ends inside a record header"),
        });
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    if len == TRAILER_TAG {
        return Err(Stop::TrailerTag);
    }
    if head == [0; RECORD_HEADER_LEN] {
        return Err(Stop::Zeroed);
    }
    if len as usize > MAX_PAYLOAD {
        return Err(Stop::Corrupt("record length exceeds the 1 MiB maximum"));
    }
    let next = offset + RECORD_HEADER_LEN as u64 + u64::from(len);
    if next > end {
        return Err(Stop::Corrupt("record runs past the end of the data"));
    }
    // In bounds: offset + 20 + len <= end <= bytes.len().
    let payload = &bytes[(offset as usize + RECORD_HEADER_LEN)..next as usize];
    let stored = u32::from_le_bytes([head[16], head[17], head[18], head[19]]);
    if checksum == Checksum::Verify
        && crc32c::crc32c_append(crc32c::crc32c(&head[..16]), payload) != stored
    {
        return Err(Stop::Corrupt("record checksum mismatch"));
    }
    let kind = match head[5] {
        KIND_RTP => RecordKind::Rtp,
        KIND_RTCP => RecordKind::Rtcp,
        _ => return Err(Stop::Corrupt("unknown record kind")),
    };
    if head[6] & !(FLAG_RANDOM_ACCESS | FLAG_DISCONTINUITY) != 0 || head[7] != 0 {
        return Err(Stop::Corrupt("unknown record flags"));
    }
    let record = Record {
        track: head[4],
        kind,
        flags: RecordFlags {
            random_access: head[6] & FLAG_RANDOM_ACCESS != 0,
            discontinuity: head[6] & FLAG_DISCONTINUITY != 0,
        },
        media_time: Npt::from_ns(u64::from_le_bytes([
            head[8], head[9], head[10], head[11], head[12], head[13], head[14], head[15],
        ])),
        payload,
    };
    Ok((record, next))
}

/// One sparse index entry: a random-access record's media time and offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub media_time_ns: u64,
    pub offset: u64,
}

/// Builds a segment's sparse index as records are appended or scanned. Its
/// entries have strictly increasing media times, so they can be searched.
#[derive(Debug, Default, Clone)]
pub struct IndexBuilder {
    entries: Vec<IndexEntry>,
}

impl IndexBuilder {
    /// Takes note of a record; returns the new index entry if it gets one.
    pub fn observe(
        &mut self,
        flags: RecordFlags,
        media_time_ns: u64,
        offset: u64,
    ) -> Option<IndexEntry> {
        if !flags.random_access {
            return None;
        }
        if let Some(last) = self.entries.last() {
            if media_time_ns < last.media_time_ns.saturating_add(INDEX_MIN_GAP_NS) {
                return None;
            }
        }
        let entry = IndexEntry {
            media_time_ns,
            offset,
        };
        self.entries.push(entry);
        Some(entry)
    }

    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    pub fn into_entries(self) -> Vec<IndexEntry> {
        self.entries
    }
}

/// The trailer of a sealed segment: record summary and sparse index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Trailer {
    /// Offset of the trailer = end of the records.
    pub records_end: u64,
    pub record_count: u64,
    /// Smallest and largest media time of the records (0 when none).
    pub min_ns: u64,
    pub max_ns: u64,
    /// [`TRAILER_FINAL`], [`TRAILER_RECOVERED`].
    pub flags: u32,
    pub index: Vec<IndexEntry>,
}

impl Trailer {
    /// Bytes a trailer with `index_len` entries takes, tail included.
    pub fn encoded_len(index_len: usize) -> usize {
        TRAILER_FIXED_LEN + index_len * INDEX_ENTRY_LEN + TAIL_LEN
    }

    /// Encodes the trailer into `out`, exactly [`Trailer::encoded_len`] long.
    pub fn encode_into(&self, out: &mut [u8]) {
        let (fixed, rest) = out.split_at_mut(TRAILER_FIXED_LEN);
        fixed[0..4].copy_from_slice(&TRAILER_TAG.to_le_bytes());
        fixed[4..8].copy_from_slice(&(self.index.len() as u32).to_le_bytes());
        fixed[8..16].copy_from_slice(&self.record_count.to_le_bytes());
        fixed[16..24].copy_from_slice(&self.min_ns.to_le_bytes());
        fixed[24..32].copy_from_slice(&self.max_ns.to_le_bytes());
        fixed[32..36].copy_from_slice(&self.flags.to_le_bytes());
        fixed[36..40].fill(0);
        let (entries, tail) = rest.split_at_mut(self.index.len() * INDEX_ENTRY_LEN);
        for (e, out) in self
            .index
            .iter()
            .zip(entries.chunks_exact_mut(INDEX_ENTRY_LEN))
        {
            out[0..8].copy_from_slice(&e.media_time_ns.to_le_bytes());
            out[8..16].copy_from_slice(&e.offset.to_le_bytes());
        }
        tail[0..8].copy_from_slice(&self.records_end.to_le_bytes());
        let crc = crc32c::crc32c_append(
            crc32c::crc32c_append(crc32c::crc32c(fixed), entries),
            &tail[0..8],
        );
        tail[8..12].copy_from_slice(&crc.to_le_bytes());
        tail[12..16].copy_from_slice(&TAIL_MAGIC);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![0; Trailer::encoded_len(self.index.len())];
        self.encode_into(&mut out);
        out
    }

    /// Decodes and verifies the trailer starting at `offset`. Returns it and
    /// the offset just after its tail.
    pub fn decode_at(bytes: &[u8], offset: u64) -> Result<(Trailer, u64), &'static str> {
        if u32_at(bytes, offset) != Some(TRAILER_TAG) {
            return Err("no trailer tag");
        }
        let fixed =
            bytes_at::<TRAILER_FIXED_LEN>(bytes, offset).ok_or("data ends inside the trailer")?;
        let count = u32_at(&fixed, 4).ok_or("data ends inside the trailer")?;
        let entries_len = u64::from(count) * INDEX_ENTRY_LEN as u64;
        let tail_at = offset + TRAILER_FIXED_LEN as u64 + entries_len;
        let tail = bytes_at::<TAIL_LEN>(bytes, tail_at)
            .ok_or("data ends inside the trailer index or tail")?;
        if tail[12..16] != TAIL_MAGIC {
            return Err("trailer tail magic missing");
        }
        if u64_at(&tail, 0) != Some(offset) {
            return Err("trailer tail points elsewhere");
        }
        // In bounds: the tail was read at tail_at, after the entries.
        let entries = &bytes[(offset as usize + TRAILER_FIXED_LEN)..tail_at as usize];
        let crc = crc32c::crc32c_append(
            crc32c::crc32c_append(crc32c::crc32c(&fixed), entries),
            &tail[0..8],
        );
        if Some(crc) != u32_at(&tail, 8) {
            return Err("trailer checksum mismatch");
        }
        let mut index: Vec<IndexEntry> = Vec::with_capacity(count as usize);
        for chunk in entries.chunks_exact(INDEX_ENTRY_LEN) {
            let (Some(media_time_ns), Some(at)) = (u64_at(chunk, 0), u64_at(chunk, 8)) else {
                return Err("trailer index entry truncated");
            };
            let increasing = !matches!(index.last(), Some(e) if e.media_time_ns >= media_time_ns);
            if !increasing || at.saturating_add(RECORD_HEADER_LEN as u64) > offset {
                return Err("trailer index entry out of order or out of range");
            }
            index.push(IndexEntry {
                media_time_ns,
                offset: at,
            });
        }
        let trailer = Trailer {
            records_end: offset,
            record_count: u64_at(&fixed, 8).unwrap_or_default(),
            min_ns: u64_at(&fixed, 16).unwrap_or_default(),
            max_ns: u64_at(&fixed, 24).unwrap_or_default(),
            flags: u32_at(&fixed, 32).unwrap_or_default(),
            index,
        };
        Ok((trailer, tail_at + TAIL_LEN as u64))
    }

    /// The trailer of a sealed segment file (`bytes` is the whole file), or
    /// `None` if the file does not end with a valid one.
    pub fn decode_tail(bytes: &[u8]) -> Option<Trailer> {
        let tail_at = (bytes.len() as u64).checked_sub(TAIL_LEN as u64)?;
        let offset = u64_at(bytes, tail_at)?;
        match Trailer::decode_at(bytes, offset) {
            Ok((trailer, end))
                if end == bytes.len() as u64 && trailer.flags & TRAILER_FINAL != 0 =>
            {
                Some(trailer)
            }
            _ => None,
        }
    }
}

mod scan;
pub use scan::*;

#[cfg(test)]
mod tests;
