//! What a copy does with the bytes it receives, without any I/O: which
//! records of the source belong to its span ([`SpanFilter`]), and the
//! verification of a segment's bytes as they arrive in chunks
//! ([`SegmentParse`]) with the store's own record decoder.

use bytes::{Bytes, BytesMut};
use streamcache_cache::format::{self, SegmentHeader, HEADER_LEN, RECORD_HEADER_LEN};
use streamcache_cache::{Npt, RecordFlags, RecordIn, RecordKind};
use streamcache_types::HELD_SLACK;

use crate::node::peer::api::Segment;

/// A verified record; its payload shares the chunk it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub track: u8,
    pub kind: RecordKind,
    pub flags: RecordFlags,
    pub media_time: Npt,
    pub payload: Bytes,
}

impl Received {
    pub fn as_input(&self) -> RecordIn<'_> {
        RecordIn {
            track: self.track,
            kind: self.kind,
            flags: self.flags,
            media_time: self.media_time,
            payload: &self.payload,
        }
    }
}

/// Which of the source's records, in play order, a copy of `[start, end)`
/// takes: from the title's first record when the span starts at the
/// title's start, else from the first random-access record at or after
/// `start`; up to (not with) the first random-access record at or after
/// `end` (`None`: to the title's end). Two copies whose spans meet so
/// split the title at one record, with nothing left out or taken twice,
/// and each part begins where a player can start.
///
/// A resumed copy ([`SpanFilter::resume`]) instead continues exactly after
/// the records the failed copy stored ([`Tail`]).
#[derive(Debug, Clone)]
pub struct SpanFilter {
    start_ns: u64,
    end_ns: Option<u64>,
    started: bool,
    ended: bool,
    /// A resumed copy: by track, what to skip before taking its records.
    resume: Option<Resume>,
}

/// What a copy stored last of each track, and the npt it reported as
/// stored to (its `held_to`): where a copy resuming it continues.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tail {
    pub held_to_ns: u64,
    /// By track: the npt and the RTP payload (the RTP header left out: two
    /// sources' recordings of a title number their packets each their own
    /// way) of the last RTP record stored.
    pub tracks: Vec<Option<(u64, Bytes)>>,
}

impl Tail {
    /// `record` was stored (in order).
    pub fn stored(&mut self, record: &Received) {
        if record.kind != RecordKind::Rtp {
            return;
        }
        let track = usize::from(record.track);
        if self.tracks.len() <= track {
            self.tracks.resize(track + 1, None);
        }
        self.tracks[track] = Some((
            record.media_time.as_ns(),
            record.payload.slice_ref(rtp_payload(&record.payload)),
        ));
    }
}

/// A resumed copy's skipping, by track.
#[derive(Debug, Clone)]
struct Resume {
    held_to_ns: u64,
    tracks: Vec<Skip>,
}

#[derive(Debug, Clone)]
enum Skip {
    /// Through the record with this npt and RTP payload (the last one
    /// stored of the track).
    Through(u64, Bytes),
    /// Nothing of the track stored: its records after this npt.
    After(u64),
    /// Every record from here on.
    Taking,
}

/// The RTP payload of `packet` (what follows its fixed header, CSRCs and
/// extension); the whole of it when it does not parse as RTP.
fn rtp_payload(packet: &[u8]) -> &[u8] {
    if packet.len() < 12 || packet[0] >> 6 != 2 {
        return packet;
    }
    let mut at = 12 + 4 * usize::from(packet[0] & 0x0f);
    if packet[0] & 0x10 != 0 {
        let Some(ext) = packet.get(at + 2..at + 4) else {
            return packet;
        };
        at += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    packet.get(at..).unwrap_or(packet)
}

impl SpanFilter {
    /// `title_start_ns`: where the title's range starts.
    pub fn new(start_ns: u64, end_ns: Option<u64>, title_start_ns: u64) -> SpanFilter {
        SpanFilter {
            start_ns,
            end_ns,
            started: start_ns <= title_start_ns,
            ended: false,
            resume: None,
        }
    }

    /// The rest of a failed copy, which stored `tail`, up to `end_ns`: per
    /// track, the records after the last one stored (a frame stored in
    /// part is completed, none of its stored packets taken again). A track
    /// whose stored record never comes (the sources disagree) is taken
    /// from its first RTP record clearly after it: a random-access one, or
    /// one [`HELD_SLACK`] later (packets in decoding order may go back in
    /// npt by less). Reading starts at the index entry at or before the
    /// earliest of the tracks' last records.
    pub fn resume(tail: &Tail, end_ns: Option<u64>) -> SpanFilter {
        let tracks = tail
            .tracks
            .iter()
            .map(|last| match last {
                Some((npt, payload)) => Skip::Through(*npt, payload.clone()),
                None => Skip::After(tail.held_to_ns),
            })
            .collect();
        let start_ns = tail
            .tracks
            .iter()
            .flatten()
            .map(|(npt, _)| *npt)
            .fold(tail.held_to_ns, u64::min);
        SpanFilter {
            start_ns,
            end_ns,
            started: false,
            ended: false,
            resume: Some(Resume {
                held_to_ns: tail.held_to_ns,
                tracks,
            }),
        }
    }

    /// Whether `record`, the next in play order, is taken.
    pub fn admit_record(&mut self, record: &Received) -> bool {
        let npt = record.media_time.as_ns();
        let Some(resume) = self.resume.as_mut() else {
            return self.admit(record.flags, npt);
        };
        if self.ended {
            return false;
        }
        if record.flags.random_access && self.end_ns.is_some_and(|end| npt >= end) {
            self.ended = true;
            return false;
        }
        let track = usize::from(record.track);
        if resume.tracks.len() <= track {
            resume
                .tracks
                .resize(track + 1, Skip::After(resume.held_to_ns));
        }
        let skip = &mut resume.tracks[track];
        let rtp = record.kind == RecordKind::Rtp;
        let take = match skip {
            Skip::Taking => true,
            Skip::After(after) => rtp && npt > *after,
            Skip::Through(last, payload) => {
                if rtp && npt == *last && rtp_payload(&record.payload) == &payload[..] {
                    // The last record stored: the ones after it are taken.
                    *skip = Skip::Taking;
                    return false;
                }
                rtp && npt > *last
                    && (record.flags.random_access
                        || npt >= last.saturating_add(HELD_SLACK.as_ns()))
            }
        };
        if take {
            *skip = Skip::Taking;
            self.started = true;
        }
        take
    }

    /// Whether the next record in play order is taken.
    pub fn admit(&mut self, flags: RecordFlags, npt_ns: u64) -> bool {
        if self.ended {
            return false;
        }
        let at_point = |bound: u64| flags.random_access && npt_ns >= bound;
        if self.started && self.end_ns.is_some_and(at_point) {
            self.ended = true;
            return false;
        }
        if !self.started && at_point(self.start_ns) {
            self.started = true;
            // A span as short as one GOP still ends at its end.
            if self.end_ns.is_some_and(at_point) {
                self.ended = true;
                return false;
            }
        }
        self.started
    }

    /// Reading stopped at a read limit ([`SpanFilter::read_limit`]): the
    /// record there ends the span.
    pub fn end(&mut self) {
        self.ended = true;
    }

    /// The span's last record has been seen.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Where reading `segment` starts, or `None` to skip it: it is final
    /// and its records all come before the span. Before the span has
    /// started: at the last indexed record at or before `start` (nothing
    /// the span takes lies before it, as random-access times increase).
    pub fn start_offset(&self, segment: &Segment) -> Option<u64> {
        if self.started {
            return Some(0);
        }
        if segment.is_final && segment.last_ns.is_some_and(|last| last < self.start_ns) {
            return None;
        }
        let before = segment
            .index
            .iter()
            .take_while(|[npt, _]| *npt <= self.start_ns)
            .last();
        Some(before.map_or(0, |[_, offset]| *offset))
    }

    /// Where reading `segment` may stop: at its first indexed record at or
    /// after `end`, which comes after the span's last record.
    pub fn read_limit(&self, segment: &Segment) -> Option<u64> {
        let end = self.end_ns?;
        segment
            .index
            .iter()
            .find(|[npt, _]| *npt >= end)
            .map(|[_, offset]| *offset)
    }
}

/// The bytes of one segment as they arrive, from an offset on: cut into
/// records, each verified by the store's decoder before it is handed out.
/// Read from the file's start, it also keeps the CRC-32C of the bytes
/// verified so far, to check against the sealed file's digest.
#[derive(Debug)]
pub struct SegmentParse {
    /// File offset of `pending`'s first byte: everything before it is
    /// verified (the offset a resumed read starts from).
    at: u64,
    pending: BytesMut,
    /// CRC-32C of the file's bytes before `at`, when read from 0.
    crc: Option<u32>,
    /// The segment header is read (or the read began past it).
    in_records: bool,
    /// The trailer was reached: no record follows.
    trailer: bool,
}

/// Why a segment's bytes were refused.
pub type Corrupt = String;

impl SegmentParse {
    /// Reading from `offset`: 0 (the header first), or a record boundary.
    pub fn new(offset: u64) -> SegmentParse {
        SegmentParse {
            at: offset,
            pending: BytesMut::new(),
            crc: (offset == 0).then_some(0),
            in_records: offset != 0,
            trailer: false,
        }
    }

    /// The offset of the next byte to ask for.
    pub fn next_offset(&self) -> u64 {
        self.at + self.pending.len() as u64
    }

    /// The offset after the last verified record: where to resume after a
    /// cut (what arrived after it is dropped).
    pub fn rewind(&mut self) -> u64 {
        self.pending.clear();
        self.at
    }

    /// Takes the bytes that follow; returns the records they complete.
    pub fn feed(&mut self, bytes: &[u8], name: &str) -> Result<Vec<Received>, Corrupt> {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        if !self.in_records {
            if self.pending.len() < HEADER_LEN {
                return Ok(out);
            }
            let len = u32::from_le_bytes([
                self.pending[12],
                self.pending[13],
                self.pending[14],
                self.pending[15],
            ]) as usize;
            if self.pending.len() < len.max(HEADER_LEN) {
                return Ok(out);
            }
            let header = SegmentHeader::decode(std::path::Path::new(name), &self.pending)
                .map_err(|e| e.to_string())?;
            self.consume(header.header_len as usize);
            self.in_records = true;
        }
        while !self.trailer {
            let Some(len) = self.complete_record() else {
                break;
            };
            let bytes = self.pending.split_to(len).freeze();
            let (record, _) = format::decode_record(&bytes, 0, len as u64).map_err(|stop| {
                format!(
                    "{name}: {} at offset {} (checksum verification failed)",
                    stop.describe(),
                    self.at
                )
            })?;
            let received = Received {
                track: record.track,
                kind: record.kind,
                flags: record.flags,
                media_time: record.media_time,
                payload: bytes.slice(RECORD_HEADER_LEN..),
            };
            self.crc = self.crc.map(|crc| crc32c::crc32c_append(crc, &bytes));
            self.at += len as u64;
            out.push(received);
        }
        Ok(out)
    }

    /// All `length` bytes of a segment that will not grow have arrived:
    /// nothing may be left half a record, and a sealed file read from its
    /// start must match its digest.
    pub fn finish(&self, name: &str, digest: Option<u32>) -> Result<(), Corrupt> {
        if !self.trailer && !self.pending.is_empty() {
            return Err(format!(
                "{name}: the segment ends inside a record at offset {}",
                self.at
            ));
        }
        match (self.crc, digest) {
            (Some(crc), Some(digest)) => {
                let whole = crc32c::crc32c_append(crc, &self.pending);
                if whole != digest {
                    return Err(format!(
                        "{name}: digest mismatch (crc32c {whole:08x}, the source says {digest:08x})"
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The length of the whole record `pending` starts with, if it has
    /// one (or damage the decoder will name); `None` for more bytes to
    /// come, or at the trailer.
    fn complete_record(&mut self) -> Option<usize> {
        let head = self.pending.get(..4)?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        if len == format::TRAILER_TAG {
            self.trailer = true;
            return None;
        }
        if self.pending.len() < RECORD_HEADER_LEN {
            return None;
        }
        let len = len as usize;
        if len > format::MAX_PAYLOAD {
            // Damage: handed to the decoder whole, which says so.
            return Some(self.pending.len());
        }
        let whole = RECORD_HEADER_LEN + len;
        (self.pending.len() >= whole).then_some(whole)
    }

    fn consume(&mut self, n: usize) {
        let head = self.pending.split_to(n);
        self.crc = self.crc.map(|crc| crc32c::crc32c_append(crc, &head));
        self.at += n as u64;
    }
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
