//! The peer API's vocabulary, shared by the server (this node's stored
//! segments, [`super::PeerServer`]) and the client (copies,
//! `crate::node::copy`): JSON bodies, header names, the Range header.

use serde::{Deserialize, Serialize};
use streamcache_cache::{Metadata, NptRange, NptSpan, PresentationState, SegmentInfo, TitleInfo};

/// Every request carries `Authorization: Bearer <cluster token>`.
pub const TITLES_PATH: &str = "/peer/v1/titles";
/// Bytes of the segment that may be read now (a record boundary while it
/// grows; the whole file once sealed).
pub const SEGMENT_LENGTH: &str = "x-streamcache-segment-length";
/// `1` once the segment's trailer is written (the file will not change).
pub const SEGMENT_SEALED: &str = "x-streamcache-segment-sealed";
/// `1` once nothing will be added to the segment (sealed, or cut at damage).
pub const SEGMENT_FINAL: &str = "x-streamcache-segment-final";
/// A sealed segment's CRC-32C over the whole file, 8 lowercase hex digits.
pub const SEGMENT_CRC32C: &str = "x-streamcache-segment-crc32c";
/// Most bytes one segment response carries; the client asks again for more.
pub const MAX_CHUNK: u64 = 1 << 20;

/// `GET /peer/v1/titles`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TitleList {
    pub titles: Vec<Title>,
}

/// A stored presentation. `metadata` (and each segment's `index`) only in
/// `GET /peer/v1/titles/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Title {
    pub key: String,
    pub id: String,
    pub state: PresentationState,
    /// A writer is recording it now: more segments and bytes will come.
    pub writing: bool,
    pub spans: Vec<NptSpan>,
    pub range: Option<NptRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// In play order.
    pub segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub name: String,
    pub run: u32,
    pub seq: u32,
    pub run_start_ns: u64,
    pub header_len: u64,
    /// Where its records end now.
    pub records_end: u64,
    /// Bytes that may be read now ([`SEGMENT_LENGTH`]).
    pub bytes: u64,
    pub sealed: bool,
    #[serde(rename = "final")]
    pub is_final: bool,
    pub records: u64,
    pub first_ns: Option<u64>,
    pub last_ns: Option<u64>,
    /// Random-access records: `[npt_ns, offset]`, increasing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub index: Vec<[u64; 2]>,
}

impl Segment {
    /// Plays in this order within its title.
    pub fn play_order(&self) -> (u64, u32, u32) {
        (self.run_start_ns, self.run, self.seq)
    }
}

impl Title {
    /// `detail`: with the metadata and the segments' indexes.
    pub fn of(info: TitleInfo, detail: bool) -> Title {
        let segments = info
            .segments
            .into_iter()
            .map(|s| segment(s, detail))
            .collect();
        Title {
            key: info.meta.key.clone(),
            id: info.id,
            state: info.meta.state,
            writing: info.writing,
            spans: info.meta.spans.clone(),
            range: info.meta.range,
            metadata: detail.then_some(info.meta),
            segments,
        }
    }
}

fn segment(s: SegmentInfo, detail: bool) -> Segment {
    Segment {
        name: s.name,
        run: s.run,
        seq: s.seq,
        run_start_ns: s.run_start_ns,
        header_len: s.header_len,
        records_end: s.records_end,
        bytes: s.readable,
        sealed: s.sealed,
        is_final: s.is_final,
        records: s.records,
        first_ns: s.first_ns,
        last_ns: s.last_ns,
        index: if detail {
            s.index
                .iter()
                .map(|e| [e.media_time_ns, e.offset])
                .collect()
        } else {
            Vec::new()
        },
    }
}

/// The byte range a `Range` header asks for: `bytes=a-b` or `bytes=a-`
/// (one range; `b` inclusive), as `(a, b + 1)`; no header is the whole.
/// `None`: a form this API does not serve (suffix ranges, several ranges).
pub fn parse_range(header: Option<&str>) -> Option<(u64, Option<u64>)> {
    let Some(value) = header else {
        return Some((0, None));
    };
    let (first, last) = value.trim().strip_prefix("bytes=")?.split_once('-')?;
    let first: u64 = first.trim().parse().ok()?;
    let last = last.trim();
    if last.is_empty() {
        return Some((first, None));
    }
    let last: u64 = last.parse().ok()?;
    (last >= first).then(|| (first, Some(last.saturating_add(1))))
}

/// The `Range` header for bytes `from..to` (`to` exclusive, greater).
pub fn range_header(from: u64, to: u64) -> String {
    format!("bytes={from}-{}", to.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse() {
        assert_eq!(parse_range(None), Some((0, None)));
        assert_eq!(parse_range(Some("bytes=0-99")), Some((0, Some(100))));
        assert_eq!(parse_range(Some("bytes=100-")), Some((100, None)));
        assert_eq!(parse_range(Some(" bytes=5-5 ")), Some((5, Some(6))));
        assert_eq!(parse_range(Some("bytes=-100")), None);
        assert_eq!(parse_range(Some("bytes=9-3")), None);
        assert_eq!(parse_range(Some("bytes=0-1,4-5")), None);
        assert_eq!(parse_range(Some("items=0-1")), None);
        assert_eq!(
            parse_range(Some(&range_header(10, 20))),
            Some((10, Some(20)))
        );
    }
}
