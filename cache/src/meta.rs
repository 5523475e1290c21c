//! Presentation metadata and its file, `meta.json`.
//!
//! The file is JSON: `{"format": "streamcache-metadata", "version": {"major":
//! 1, "minor": 0}, "metadata": {...}}`. The envelope is read first, so a file
//! of an unknown major version is refused by version rather than by whatever
//! field it happens to lack. Unknown fields are ignored (minor versions may
//! add some).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{format, CacheError};
#[cfg(test)]
use streamcache_types::Npt;
use streamcache_types::HELD_SLACK;
pub use streamcache_types::{CacheHeaders, NptRange, NptSpan};

const FORMAT_NAME: &str = "streamcache-metadata";

/// Everything the store keeps about a presentation besides its records.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Metadata {
    /// The presentation key (the normalised origin URL).
    pub key: String,
    /// The origin's SDP, as received.
    pub sdp: String,
    pub cache_headers: CacheHeaders,
    pub tracks: Vec<TrackMeta>,
    /// The presentation range the origin announced.
    pub range: Option<NptRange>,
    /// Maintained by the store: `Recording` while a writer is open, then what
    /// [`crate::Writer::finish`] said (`Partial` after a crash).
    pub state: PresentationState,
    /// Maintained by the store: the npt spans the segments hold (one per
    /// recording run, from its first to its last record), sorted, with spans
    /// less than half a second apart merged.
    pub spans: Vec<NptSpan>,
    /// When the proxy last fetched the presentation's description from the
    /// origin or revalidated it there (Unix milliseconds): the base of the
    /// freshness rules. `None` when unknown (files written before the field
    /// existed), which makes the entry stale.
    #[serde(default)]
    pub validated_at_unix_ms: Option<u64>,
}

/// One track of the presentation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TrackMeta {
    /// The track's control URL.
    pub control: String,
    pub payload_type: u8,
    pub clock_rate: u32,
    /// Media kind: "video", "audio", ...
    pub media: String,
    /// Encoding name from the rtpmap: "H264", "MPEG4-GENERIC", ...
    pub encoding: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresentationState {
    /// A writer is (or was, until a crash) recording it.
    #[default]
    Recording,
    /// Recorded from start to end.
    Complete,
    /// Some of it is held.
    Partial,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Version {
    major: u16,
    minor: u16,
}

#[derive(Deserialize)]
struct Envelope {
    format: String,
    version: Version,
}

#[derive(Serialize)]
struct FileOut<'a> {
    format: &'static str,
    version: Version,
    metadata: &'a Metadata,
}

#[derive(Deserialize)]
struct FileIn {
    metadata: Metadata,
}

/// Parses the contents of a metadata file. `path` names it in errors.
pub fn parse_metadata(path: &Path, bytes: &[u8]) -> Result<Metadata, CacheError> {
    let parse_error = |e: serde_json::Error| {
        CacheError::corrupt(
            path,
            byte_offset(bytes, e.line(), e.column()),
            format!("metadata does not parse: {e}"),
        )
    };
    let envelope: Envelope = serde_json::from_slice(bytes).map_err(parse_error)?;
    if envelope.format != FORMAT_NAME {
        return Err(CacheError::corrupt(
            path,
            0,
            format!(
                "not a streamcache metadata file (format {:?})",
                envelope.format
            ),
        ));
    }
    if envelope.version.major != format::MAJOR {
        return Err(CacheError::UnsupportedVersion {
            path: path.to_path_buf(),
            major: envelope.version.major,
            minor: envelope.version.minor,
        });
    }
    let file: FileIn = serde_json::from_slice(bytes).map_err(parse_error)?;
    Ok(file.metadata)
}

/// The contents of a metadata file for `meta`.
pub(crate) fn encode_metadata(meta: &Metadata) -> Vec<u8> {
    let file = FileOut {
        format: FORMAT_NAME,
        version: Version {
            major: format::MAJOR,
            minor: format::MINOR,
        },
        metadata: meta,
    };
    // Serializing plain structs of strings and integers into memory cannot
    // fail; an empty file would be refused on reading, never misread.
    let mut out = serde_json::to_vec_pretty(&file).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Byte offset of serde_json's 1-based line and column.
fn byte_offset(bytes: &[u8], line: usize, column: usize) -> u64 {
    let line_start = bytes
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'\n')
        .nth(line.saturating_sub(2))
        .map_or(0, |(i, _)| i + 1);
    let offset = if line <= 1 { 0 } else { line_start };
    (offset + column.saturating_sub(1)).min(bytes.len()) as u64
}

/// Sorts spans and merges the ones that overlap or nearly touch.
pub(crate) fn merge_spans(mut spans: Vec<NptSpan>) -> Vec<NptSpan> {
    spans.sort_by_key(|s| (s.start, s.end));
    let mut merged: Vec<NptSpan> = Vec::with_capacity(spans.len());
    for span in spans {
        match merged.last_mut() {
            // Spans closer than the slack are one: a span runs from its
            // first to its last packet's time, and the last frame lasts
            // until the next run's first.
            Some(last) if span.start <= last.end.saturating_add(HELD_SLACK) => {
                last.end = last.end.max(span.end)
            }
            _ => merged.push(span),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Metadata {
        Metadata {
            key: "rtsp://origin/a".into(),
            sdp: "v=0\r\n".into(),
            cache_headers: CacheHeaders {
                etag: Some("\"x\"".into()),
                ..CacheHeaders::default()
            },
            tracks: vec![TrackMeta {
                control: "rtsp://origin/a/track1".into(),
                payload_type: 96,
                clock_rate: 90_000,
                media: "video".into(),
                encoding: "H264".into(),
            }],
            range: Some(NptRange {
                start: Npt::ZERO,
                end: Some(Npt::from_secs(20)),
            }),
            state: PresentationState::Partial,
            spans: vec![NptSpan {
                start: Npt::ZERO,
                end: Npt::from_secs(8),
            }],
            validated_at_unix_ms: Some(1_707_213_600_000),
        }
    }

    #[test]
    fn round_trips() {
        let meta = sample();
        let parsed = parse_metadata(Path::new("m"), &encode_metadata(&meta)).unwrap();
        assert_eq!(parsed, meta);
    }

    #[test]
    fn validation_time_is_optional() {
        let text = String::from_utf8(encode_metadata(&sample()))
            .unwrap()
            .replace("\"validated_at_unix_ms\": 1707213600000", "\"x\": 0");
        assert!(!text.contains("validated_at"), "{text}");
        let parsed = parse_metadata(Path::new("m"), text.as_bytes()).unwrap();
        assert_eq!(parsed.validated_at_unix_ms, None);
    }

    #[test]
    fn unknown_major_version_is_refused_by_version() {
        let text = String::from_utf8(encode_metadata(&sample()))
            .unwrap()
            .replace("\"major\": 1", "\"major\": 7");
        let err = parse_metadata(Path::new("/s/p/meta.json"), text.as_bytes()).unwrap_err();
        assert!(
            matches!(err, CacheError::UnsupportedVersion { major: 7, .. }),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            message.contains("/s/p/meta.json") && message.contains("7.0"),
            "{message}"
        );
    }

    #[test]
    fn parse_error_names_file_and_offset() {
        let text = b"{\"format\": \"streamcache-metadata\",\n  \"version\": {\"major\": 1, \"minor\": 0},\n  \"metadata\": {\"key\": 5}}";
        let err = parse_metadata(Path::new("m.json"), text).unwrap_err();
        let CacheError::Corrupt { offset, .. } = &err else {
            panic!("{err}");
        };
        // The offset is of the offending value.
        assert_eq!(text[*offset as usize], b'5', "{err}");
    }

    #[test]
    fn spans_merge() {
        let s = |a, b| NptSpan {
            start: Npt::from_ns(a),
            end: Npt::from_ns(b),
        };
        assert_eq!(
            merge_spans(vec![s(8, 20), s(0, 8), s(30, 40), s(35, 36)]),
            vec![s(0, 40)]
        );
        let sec = 1_000_000_000;
        assert_eq!(
            merge_spans(vec![
                s(0, 7 * sec + 960_000_000),
                s(8 * sec, 20 * sec),
                s(30 * sec, 40 * sec)
            ]),
            vec![s(0, 20 * sec), s(30 * sec, 40 * sec)]
        );
    }
}
